//! cargo-fuzz target `netfront`: see `xenpal_fuzz::targets::netfront`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::netfront::run(data));
