//! The smallest guest: print a line on Xen's emergency console and shut
//! down.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod guest {
    use xenpal_arch_aarch64 as arch;

    fn main(dtb: usize) -> ! {
        arch::eprintln!("hello from xenpal on Xen/arm64 (device tree at {dtb:#x})");
        arch::platform::shutdown(xen_pv::abi::shutdown::POWEROFF)
    }

    arch::entry!(main);

    xenpal_guests::panic_crashes!(arch);
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod guest {
    use xenpal_arch_x86_64 as arch;

    fn main(start_info: usize) -> ! {
        arch::eprintln!("hello from xenpal on Xen/x86_64 PV (start_info at {start_info:#x})");
        arch::platform::shutdown(xen_pv::abi::shutdown::POWEROFF)
    }

    arch::entry!(main);

    xenpal_guests::panic_crashes!(arch);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this guest is built for bare metal: cargo xtask qemu");
}
