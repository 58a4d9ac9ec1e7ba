//! A sequence of frames (length-prefixed) through the whole inspection pipeline.
#![no_main]
use warden_dp::app::engine::EngineConfig;
use warden_dp::inspect::{FrameMeta, Inspector, MalformedPolicy};
use warden_dp::session::Timeouts;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let engine = EngineConfig { max_sessions: 16, stream_core_cap: 1 << 20, ..EngineConfig::default() };
    let mut insp = Inspector::with_engine(64, Timeouts::default(), MalformedPolicy::Drop, engine);
    let mut rest = data;
    let mut now = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, tail) = rest[2..].split_at(len);
        now += 1_000_000;
        insp.process(frame, FrameMeta { zone: 0, iface: (len & 1) as u16, now_ns: now });
        rest = tail;
    }
    let mut out = Vec::new();
    insp.drain_reports(&mut out);
});
