//! A guest that waits for its toolstack: it says so and then does nothing
//! until `xl shutdown` (poweroff) or `xl reboot` ends it, through
//! `#[xenpal::main]`'s watch on `control/shutdown`. The Linux dom0 rig
//! drives it: `cargo xtask qemu --arch aarch64|x86_64 --xen 4.17 --dom0
//! linux control`.

#![cfg_attr(target_os = "none", no_std, no_main)]

/// What the guest prints once it is up; dom0's script waits for it.
const READY: &str = "waiting for xl shutdown or xl reboot";

#[xenpal::main]
async fn main(_p: xenpal::Platform) {
    xenpal::log::info!("{READY}");
    core::future::pending::<()>().await;
}
