//! Any byte string as an Ethernet frame: decoding never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = warden_dp::wire::decode(data);
});
