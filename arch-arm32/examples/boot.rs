//! The 32-bit Arm boot probe: entered by Xen as a zImage, it says where it
//! runs, parses its device tree, asks Xen its version through a hypercall,
//! checks the MMU and
//! caches are on and the generic timer's clock moves forward, and powers off — or crashes, which the
//! runner reports, if the clock does not (`cargo xtask qemu --arch arm32
//! boot`).

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod guest {
    extern crate alloc;
    use xenpal_arch_arm32 as arch;

    fn main(device_tree: usize) -> ! {
        let (major, minor) =
            arch::xen_pv::hypercall::xen_version(&arch::ArmHypervisor).unwrap_or((0, 0));
        arch::eprintln!(
            "xenpal arm32: booted at {:#x}, device tree at {device_tree:#x}, Xen {major}.{minor}",
            main as fn(usize) -> ! as usize
        );
        // The device tree, parsed as on AArch64.
        // SAFETY: Xen put the device tree at `device_tree` in our RAM; its
        // first 8 bytes (magic, size) are read before the size is trusted.
        let header = unsafe { core::slice::from_raw_parts(device_tree as *const u8, 8) };
        let info = arch::boot_info::blob_size(header).and_then(|size| {
            // SAFETY: `blob_size` checked the magic and a plausible size.
            let blob = unsafe { core::slice::from_raw_parts(device_tree as *const u8, size) };
            arch::boot_info::parse(blob, device_tree as u64)
        });
        match info {
            Ok(i) => {
                let gic = match i.gic {
                    arch::boot_info::Gic::V2 { dist, cpu } => {
                        alloc::format!("GICv2 at {:#x}/{:#x}", dist.base, cpu.base)
                    }
                    arch::boot_info::Gic::V3 { dist, .. } => {
                        alloc::format!("GICv3 at {:#x}", dist.base)
                    }
                };
                arch::eprintln!(
                    "xenpal arm32: device tree: RAM from {:#x}, {gic}, timer PPI {}, /hypervisor {}",
                    i.memory.first().map_or(0, |m| m.base),
                    i.virt_timer_irq,
                    if i.hypervisor.is_some() {
                        "present"
                    } else {
                        "absent"
                    }
                );
            }
            Err(e) => {
                arch::eprintln!("xenpal: boot failed: device tree: {e}");
                arch::platform::crash();
            }
        }
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
