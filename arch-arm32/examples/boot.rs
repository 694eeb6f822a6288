//! The 32-bit Arm boot probe: entered by Xen as a zImage, it says where it
//! runs, asks Xen its version through a hypercall, and powers off
//! (`cargo xtask qemu --arch arm32 boot`).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod guest {
    use xenpal_arch_arm32 as arch;

    fn main(device_tree: usize) -> ! {
        let (major, minor) =
            arch::xen_pv::hypercall::xen_version(&arch::ArmHypervisor).unwrap_or((0, 0));
        arch::eprintln!(
            "xenpal arm32: booted at {:#x}, device tree at {device_tree:#x}, Xen {major}.{minor}",
            main as fn(usize) -> ! as usize
        );
        arch::eprintln!("xenpal: exit: poweroff");
        arch::platform::shutdown(arch::xen_pv::abi::shutdown::POWEROFF)
    }

    arch::entry!(main);

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        arch::eprintln!("panic: {info}");
        arch::platform::crash()
    }
}

#[cfg(not(all(target_arch = "arm", target_os = "none")))]
fn main() {
    eprintln!("this probe is built for 32-bit Arm: cargo xtask qemu --arch arm32 boot");
}
