//! Guest images for real Xen. The binaries under `src/bin` are built by
//! `cargo xtask qemu` for `aarch64-unknown-none` (and later
//! `x86_64-unknown-none`); on the host they are empty stubs.

#![no_std]
