//! cargo-fuzz target `http`: see `xenpal_fuzz::targets::http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::http::run(data));
