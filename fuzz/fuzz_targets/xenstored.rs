//! cargo-fuzz target `xenstored`: see `xenpal_fuzz::targets::xenstored`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::xenstored::run(data));
