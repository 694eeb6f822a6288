//! How Xen's event interrupt (and the timer's) reaches us: GICv2 (what
//! Xen offers a 32-bit guest on the boards we target), the IRQ handler,
//! and [`block`], the block hook — as on AArch64, whose handler logic and
//! GICv2 registers (`xenpal_arm::gic`) this shares. IRQs are masked
//! (`CPSR.I`) at boot; Xen unmasks them when `SCHEDOP_block` returns, so
//! the pending interrupt is taken and handled right there.

pub use xenpal_arm::gic::{counts, has_event_irq, take_activity};

/// The GICv2 CPU interface's base, once set up (0: none).
#[cfg(all(target_arch = "arm", target_os = "none"))]
static CPU_IF: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Set up the GIC; `event_irq` (Xen's event PPI, if any) and `timer_irq`
/// (the virtual timer) are enabled. Only GICv2 is driven here: Xen builds
/// its GICv3 support for arm64 only, so a 32-bit guest is never given a
/// GICv3 (one would be left unconfigured, and no interrupt would come).
pub fn init(gic: crate::boot_info::Gic, event_irq: Option<u32>, timer_irq: u32) {
    let (ppis, n) = xenpal_arm::gic::configure(event_irq, timer_irq);
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    if let crate::boot_info::Gic::V2 { dist, cpu } = gic {
        // SAFETY: the frames the device tree named, which `mm` mapped as
        // Device memory before interrupts are set up.
        unsafe { xenpal_arm::gic::v2::init(dist.base, cpu.base, &ppis[..n]) };
        CPU_IF.store(cpu.base, core::sync::atomic::Ordering::Relaxed);
    }
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    let _ = (gic, ppis, n);
}

/// Handle an IRQ taken through the vectors.
pub fn handle_irq() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    {
        let cpu = CPU_IF.load(core::sync::atomic::Ordering::Relaxed);
        if cpu == 0 {
            return;
        }
        xenpal_arm::gic::handle(
            // SAFETY: the CPU interface `init` set up.
            || unsafe { xenpal_arm::gic::v2::ack(cpu) },
            // SAFETY: as above.
            |id| unsafe { xenpal_arm::gic::v2::eoi(cpu, id) },
            crate::time::silence,
        );
    }
}

/// The block hook (`Hypervisor::block` of `ArmHypervisor`): call
/// `sched_block`, the bare `SCHEDOP_block`, only if no interrupt came in
/// since the executor last looked, without losing a wake-up; returns what
/// it returned, or 0 (at once) if an interrupt came in. The reasoning is
/// AArch64's (`xenpal_arch_aarch64::irq::block`): mask IRQs, check, block;
/// an interrupt after the mask stays pending in the vGIC, Xen does not
/// block a vCPU with one pending, and it unmasks IRQs on return.
pub fn block(sched_block: impl FnOnce() -> isize) -> isize {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    {
        // SAFETY: masking IRQs on the only vCPU; undone below or by Xen.
        unsafe { core::arch::asm!("cpsid i", options(nomem, nostack)) };
        if take_activity() {
            // SAFETY: unmasks what we masked just above.
            unsafe { core::arch::asm!("cpsie i", options(nomem, nostack)) };
            return 0;
        }
        sched_block()
    }
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    {
        let _ = sched_block;
        xen_pv::abi::Errno::ENOSYS.ret()
    }
}
