//! Bare-metal guests link with their arch crate's linker script: on
//! AArch64 as position-independent executables (they relocate themselves),
//! on x86_64 as static images at their link address. Host builds get
//! nothing special.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if target == "aarch64-unknown-none" {
        println!("cargo::rustc-link-arg-bins=-T{dir}/../arch-aarch64/link.ld");
        println!("cargo::rustc-link-arg-bins=-pie");
        println!("cargo::rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo::rustc-link-arg-bins=-znotext");
        println!("cargo::rerun-if-changed=../arch-aarch64/link.ld");
    }
    if target == "x86_64-unknown-none" {
        // A static image at its link address: Xen loads PV kernels where
        // their program headers say, so no relocation is needed.
        println!("cargo::rustc-link-arg-bins=-T{dir}/../arch-x86_64/link.ld");
        println!("cargo::rustc-link-arg-bins=--no-pie");
        println!("cargo::rerun-if-changed=../arch-x86_64/link.ld");
    }
}
