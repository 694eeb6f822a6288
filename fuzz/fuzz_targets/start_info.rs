//! cargo-fuzz target `start_info`: see `xenpal_fuzz::targets::start_info`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::start_info::run(data));
