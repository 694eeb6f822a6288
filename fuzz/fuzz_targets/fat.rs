//! cargo-fuzz target `fat`: see `xenpal_fuzz::targets::fat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::fat::run(data));
