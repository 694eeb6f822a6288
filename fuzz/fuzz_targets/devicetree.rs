//! cargo-fuzz target `devicetree`: see `xenpal_fuzz::targets::devicetree`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenpal_fuzz::targets::devicetree::run(data));
