//! Any byte string as an Ethernet frame: decoding, and decapsulating whatever tunnel it
//! carries (down to `max_depth` levels), never panics.
#![no_main]
use warden_dp::tunnel::{decap, Decap, Ports};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ports = Ports::default();
    let Ok(mut f) = warden_dp::wire::decode(data) else { return };
    for _ in 0..8 {
        let Some(ip) = f.ip else { return };
        match decap(&f, &ip, &ports) {
            Decap::Inner(_, inner) => f = inner,
            Decap::No | Decap::Malformed(..) => return,
        }
    }
});
