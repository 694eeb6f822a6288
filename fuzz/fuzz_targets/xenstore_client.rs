//! cargo-fuzz target `xenstore_client`: see `xenpal_fuzz::targets::xenstore_client`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::xenstore_client::run(data));
