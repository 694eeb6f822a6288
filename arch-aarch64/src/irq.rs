//! How Xen's event interrupt (and the timer's) reaches us: the GIC (v2 and
//! v3), the IRQ handler, and [`block`], the block hook.
//!
//! What the handler does and counts, and the GICv2 registers, are
//! `xenpal_arm::gic`'s, shared with 32-bit Arm; GICv3's system-register
//! CPU interface and the `DAIF` masking are AArch64's own. IRQs are masked
//! at boot; Xen unmasks them (`PSTATE.I`) when `SCHEDOP_block` returns, so
//! the pending interrupt is taken and handled right there.
//!
//! This module issues no hypercall of its own: [`block`] is handed the
//! bare `SCHEDOP_block` by `hypercall.rs`, whose `Hypervisor::block` it is.

pub use xenpal_arm::gic::{counts, has_event_irq, take_activity};

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use crate::boot_info::Gic;
    use xenpal_arm::gic::mmio::{r32, w8, w32};
    use xenpal_arm::gic::{SPURIOUS, v2};

    /// The configured GIC (set once at boot).
    static mut GIC: Option<Gic> = None;

    fn gic() -> Option<Gic> {
        // SAFETY: written once by `init` before IRQs are ever unmasked,
        // read-only afterwards; `Gic` is `Copy`.
        unsafe { *core::ptr::addr_of!(GIC) }
    }

    /// Set up the GIC and enable the given PPIs (at a middle priority).
    pub fn init(gic: Gic, ppis: &[u32]) {
        // SAFETY: boot-time, single vCPU, IRQs masked: nothing reads GIC
        // concurrently.
        unsafe { *core::ptr::addr_of_mut!(GIC) = Some(gic) };
        match gic {
            // SAFETY: the frames the device tree named, which `mm` mapped
            // as Device memory before interrupts are set up.
            Gic::V2 { dist, cpu } => unsafe { v2::init(dist.base, cpu.base, ppis) },
            // SAFETY: as for V2: register offsets inside the distributor
            // and our redistributor frame; the `asm!` below only enables
            // the system-register CPU interface and group-1 interrupts at
            // EL1, with IRQs still masked in PSTATE.
            Gic::V3 { dist, redist } => unsafe {
                w32(dist.base, (1 << 4) | (1 << 1)); // GICD_CTLR: ARE_NS, EnableGrp1NS
                // Wake our redistributor (the first frame belongs to vCPU 0).
                let rd = redist.base;
                let waker = r32(rd + 0x14) & !(1 << 1);
                w32(rd + 0x14, waker);
                let mut spins = 0;
                while r32(rd + 0x14) & (1 << 2) != 0 && spins < 1_000_000 {
                    spins += 1;
                    core::hint::spin_loop();
                }
                let sgi = rd + 0x1_0000;
                for &id in ppis {
                    w32(sgi + 0x80, r32(sgi + 0x80) | (1 << id)); // GICR_IGROUPR0: group 1
                    w8(sgi + 0x400 + u64::from(id), 0xa0);
                    w32(sgi + 0x100, 1 << id); // GICR_ISENABLER0
                }
                {
                    core::arch::asm!(
                        "mrs {t}, S3_0_C12_C12_5",   // ICC_SRE_EL1
                        "orr {t}, {t}, #1",
                        "msr S3_0_C12_C12_5, {t}",
                        "isb",
                        "mov {t}, #0xff",
                        "msr S3_0_C4_C6_0, {t}",     // ICC_PMR_EL1
                        "mov {t}, #1",
                        "msr S3_0_C12_C12_7, {t}",   // ICC_IGRPEN1_EL1
                        "isb",
                        t = out(reg) _,
                        options(nostack),
                    );
                }
            },
        }
    }

    /// Acknowledge the highest-priority pending interrupt: its INTID
    /// ([`SPURIOUS`] and above: none).
    fn ack() -> u32 {
        match gic() {
            // SAFETY: the CPU interface `init` was given.
            Some(Gic::V2 { cpu, .. }) => unsafe { v2::ack(cpu.base) },
            Some(Gic::V3 { .. }) => {
                let v: u64;
                // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt;
                // we EOI it below.
                unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) v, options(nostack)) };
                (v & 0xff_ffff) as u32
            }
            None => SPURIOUS,
        }
    }

    fn eoi(intid: u32) {
        match gic() {
            // SAFETY: the CPU interface `init` was given.
            Some(Gic::V2 { cpu, .. }) => unsafe { v2::eoi(cpu.base, intid) },
            Some(Gic::V3 { .. }) => {
                // SAFETY: ends the interrupt we acknowledged.
                unsafe {
                    core::arch::asm!("msr S3_0_C12_C12_1, {}", in(reg) u64::from(intid), options(nostack))
                };
            }
            None => {}
        }
    }

    /// The IRQ handler (called from the vectors).
    pub fn handle_irq() {
        xenpal_arm::gic::handle(ack, eoi, crate::time::silence);
    }
}

/// Set up the GIC; `event_irq` (Xen's event PPI, if any) and `timer_irq`
/// (the virtual timer) are enabled.
pub fn init(gic: crate::boot_info::Gic, event_irq: Option<u32>, timer_irq: u32) {
    let (ppis, n) = xenpal_arm::gic::configure(event_irq, timer_irq);
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    hw::init(gic, &ppis[..n]);
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    let _ = (gic, ppis, n);
}

/// Handle an IRQ taken through the vectors.
pub fn handle_irq() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    hw::handle_irq();
}

/// The block hook (`Hypervisor::block` of `ArmHypervisor`): call
/// `sched_block`, the bare `SCHEDOP_block`, only if no interrupt came in
/// since the executor last looked, without losing a wake-up; returns what
/// it returned, or 0 (at once) if an interrupt came in.
///
/// The IRQ handler silences the (level-triggered) virtual timer when it
/// fires, so a timer that fired after the executor decided to sleep would
/// leave nothing pending to wake the vCPU. So: mask IRQs, and block only if
/// no interrupt was handled since ([`take_activity`]). An interrupt
/// arriving after the mask stays pending in the vGIC, and Xen does not
/// block a vCPU with a pending interrupt; Xen unmasks IRQs on return, and
/// the handler then runs.
pub fn block(sched_block: impl FnOnce() -> isize) -> isize {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        // SAFETY: masking IRQs on the only vCPU; undone below or by Xen.
        unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
        if take_activity() {
            // SAFETY: unmasks what we masked just above.
            unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
            return 0;
        }
        sched_block()
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    {
        let _ = sched_block;
        xen_pv::abi::Errno::ENOSYS.ret()
    }
}
