//! A sequence of frames (length-prefixed) through the whole inspection pipeline, IP
//! reassembly included (small limits, so eviction and timeouts are reached).
#![no_main]
use warden_dp::app::engine::EngineConfig;
use warden_dp::defrag::DefragConfig;
use warden_dp::inspect::{FrameMeta, Inspector, MalformedPolicy};
use warden_dp::normalize::{ChecksumPolicy, InvalidAction, Normalization, UrgentPolicy};
use warden_dp::session::Timeouts;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let engine = EngineConfig { max_sessions: 16, stream_core_cap: 1 << 20, ..EngineConfig::default() };
    let mut insp = Inspector::with_engine(64, Timeouts::default(), MalformedPolicy::Drop, engine);
    let defrag = DefragConfig { max_datagrams: 8, max_fragments: 8, max_frames: 16, max_bytes: 0, timeout_ns: 20_000_000 };
    insp.set_defrag(defrag);
    // Checksums verified or not (the fuzzer rarely gets them right, so most inputs reach the
    // streams and parsers only with verification off), urgent data out of band or inline.
    let Some((&knobs, mut rest)) = data.split_first() else { return };
    insp.set_normalization(Normalization {
        checksums: if knobs & 1 == 0 { ChecksumPolicy::Ignore } else { ChecksumPolicy::Verify },
        invalid: if knobs & 2 == 0 { InvalidAction::Drop } else { InvalidAction::Forward },
        urgent: if knobs & 4 == 0 { UrgentPolicy::Oob } else { UrgentPolicy::Inline },
    });
    let mut now = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, tail) = rest[2..].split_at(len);
        now += 1_000_000;
        insp.process(frame, FrameMeta::new(0, (len & 1) as u16, now));
        insp.expire_fragments(now);
        rest = tail;
    }
    let mut out = Vec::new();
    insp.drain_reports(&mut out);
});
