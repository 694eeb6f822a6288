//! The 32-bit Arm boot probe: entered by Xen as a zImage, it says where it
//! runs, asks Xen its version through a hypercall, checks the MMU and
//! caches are on and the generic timer's clock moves forward, and powers off — or crashes, which the
//! runner reports, if the clock does not (`cargo xtask qemu --arch arm32
//! boot`).

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
        if !arch::mm::enabled() {
            arch::eprintln!("xenpal: exit: crash: the MMU or a cache is off (SCTLR)");
            arch::platform::crash();
        }
        arch::eprintln!("xenpal arm32: MMU (LPAE, identity map) and caches on");
        use arch::hal::time::Clock;
        let t = arch::time::GenericTimer;
        let (first, mut last) = (t.now(), t.now());
        let mut reads = 0u32;
        while last.as_nanos() - first.as_nanos() < 1_000_000 && reads < 10_000_000 {
            let now = t.now();
            if now < last {
                arch::eprintln!("xenpal: exit: crash: the clock went back from {last} to {now}");
                arch::platform::crash();
            }
            last = now;
            reads += 1;
        }
        if last.as_nanos() - first.as_nanos() < 1_000_000 {
            arch::eprintln!("xenpal: exit: crash: the clock did not advance 1 ms in {reads} reads");
            arch::platform::crash();
        }
        arch::eprintln!(
            "xenpal arm32: generic timer at {} Hz; 1 ms passed in {reads} reads, never backwards",
            arch::time::frequency()
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
