//! The full-stack guest: blkfront and netfront against the toolstack's
//! backends (`xenpal_apps::fullstack`). Needs a dom0 with a toolstack:
//! `cargo xtask qemu --arch aarch64|x86_64 --xen 4.17 --dom0 linux fullstack`.
//! Ends with a `selftest verdict:` line and shuts down (poweroff if every
//! check passed, crash otherwise).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use xenpal::arch;
    use xenpal_apps::fullstack::{self, FullstackConfig};

    /// `boot`: the device tree (Arm) or `start_info` (x86) Xen passed.
    fn main(boot: usize) -> ! {
        arch::eprintln!("xenpal fullstack starting (boot information at {boot:#x})");
        arch::platform::run(boot, |b| async move {
            let report = fullstack::run(&b.platform, FullstackConfig::default()).await;
            report.passed()
        })
    }

    arch::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "this guest is built for bare metal: cargo xtask qemu --arch aarch64 --xen 4.17 --dom0 linux fullstack"
    );
}
