//! The 32-bit Arm exception probe: reads an address no guest has, so Xen
//! injects a data abort; the vector table must report it and crash the
//! domain (`cargo xtask qemu --arch arm32 --xen 4.17 --gic 2 --expect crash
//! fault`).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod guest {
    use xenpal_arch_arm32 as arch;

    fn main(_device_tree: usize) -> ! {
        arch::eprintln!("xenpal arm32: reading 0x10000000, outside guest RAM");
        // SAFETY: none, on purpose: the read faults, and the vector table
        // reports it and crashes the domain. Volatile, so it is not
        // optimised away.
        let v = unsafe { core::ptr::read_volatile(0x1000_0000 as *const u32) };
        arch::eprintln!("xenpal: exit: crash: reading outside RAM returned {v:#x}");
        arch::platform::crash()
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
    eprintln!("this probe is built for 32-bit Arm: cargo xtask qemu --arch arm32 fault");
}
