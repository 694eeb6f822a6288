//! Bare-metal guests link with their arch crate's linker script as
//! position-independent executables; host builds get nothing special.

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
}
