//! Ships this crate's linker script to the final link, as the other arch
//! crates do: copied into `OUT_DIR` as `xenpal-arm32.ld`, which is put on the
//! linker's search path of every crate that depends on this one.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = std::fs::read("link.ld").expect("link.ld is part of this crate");
    std::fs::write(out.join("xenpal-arm32.ld"), script).expect("OUT_DIR is writable");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=link.ld");
    println!("cargo::rerun-if-changed=build.rs");
}
