//! cargo-fuzz target `console`: see `xenpal_fuzz::targets::console`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::console::run(data));
