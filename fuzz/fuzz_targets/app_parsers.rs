//! Every registered app parser fed arbitrary bytes in both directions, split at a
//! fuzzer-chosen point: probing and parsing never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_dp::app::engine::exercise_all(data);
});
