//! The smallest guest, written as a user's crate writes one: log a line and
//! power off. `cargo run -p xenpal-guests --bin hello` runs it on the
//! simulator; `cargo xtask qemu --arch aarch64|arm32|x86_64 hello` under Xen.

#![cfg_attr(target_os = "none", no_std, no_main)]

/// Where the guest runs.
const WORLD: &str = if cfg!(not(target_os = "none")) {
    "the simulator"
} else if cfg!(target_arch = "aarch64") {
    "Xen/arm64"
} else if cfg!(target_arch = "arm") {
    "Xen/arm32"
} else {
    "Xen/x86_64"
};

#[xenpal::main]
async fn main(_p: xenpal::Platform) {
    xenpal::log::info!("hello from xenpal on {WORLD}");
}
