//! Ships this crate's linker script to the final link, the way cortex-m-rt
//! ships `link.x`: it is copied into `OUT_DIR` as `xenpal-aarch64.ld`, and that
//! folder is put on the linker's search path of every crate that depends on
//! this one. A guest's `.cargo/config.toml` then names it with
//! `-Txenpal-aarch64.ld` (`cargo xtask new` writes it); the guest needs no build
//! script of its own.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = std::fs::read("link.ld").expect("link.ld is part of this crate");
    std::fs::write(out.join("xenpal-aarch64.ld"), script).expect("OUT_DIR is writable");
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=link.ld");
    println!("cargo::rerun-if-changed=build.rs");
}
