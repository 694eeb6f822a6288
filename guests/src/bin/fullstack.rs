//! The full-stack guest: blkfront and netfront against the toolstack's
//! backends (`xenpal_examples::fullstack`). Needs a dom0 with a toolstack:
//! `cargo xtask qemu --arch aarch64|x86_64 --xen 4.17 --dom0 linux fullstack`.
//! Ends with a `selftest verdict:` line and shuts down (poweroff if every
//! check passed, crash otherwise).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod guest {
    use xenpal_arch_aarch64 as arch;
    use xenpal_examples::fullstack::{self, FullstackConfig};

    fn main(dtb: usize) -> ! {
        arch::eprintln!("xenpal fullstack starting (device tree at {dtb:#x})");
        arch::platform::run(dtb, |b| async move {
            let report = fullstack::run(&b.platform, FullstackConfig::default()).await;
            report.passed()
        })
    }

    arch::entry!(main);

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        arch::eprintln!("panic: {info}");
        arch::platform::crash()
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod guest {
    use xenpal_arch_x86_64 as arch;
    use xenpal_examples::fullstack::{self, FullstackConfig};

    fn main(start_info: usize) -> ! {
        arch::eprintln!("xenpal fullstack starting (start_info at {start_info:#x})");
        arch::platform::run(start_info, |b| async move {
            let report = fullstack::run(&b.platform, FullstackConfig::default()).await;
            report.passed()
        })
    }

    arch::entry!(main);

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        arch::eprintln!("panic: {info}");
        arch::platform::crash()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "this guest is built for bare metal: cargo xtask qemu --arch aarch64 --xen 4.17 --dom0 linux fullstack"
    );
}
