//! cargo-fuzz target `blkfront`: see `xenpal_fuzz::targets::blkfront`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::blkfront::run(data));
