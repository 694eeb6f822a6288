//! cargo-fuzz target `hypercall`: see `xenpal_fuzz::targets::hypercall`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::hypercall::run(data));
