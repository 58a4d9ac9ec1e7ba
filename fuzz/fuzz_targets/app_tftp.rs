//! The tftp parser (probe and feed, both directions, fuzzer-chosen split): never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_dp::app::engine::exercise(warden_dp::app::App::Tftp, data);
});
