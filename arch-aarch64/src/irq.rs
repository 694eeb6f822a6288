//! How Xen's event interrupt (and the timer's) reaches us: the GIC (v2 and
//! v3), the IRQ handler, and [`block`], the block hook.
//!
//! Interrupts only wake the vCPU: the handler acknowledges, silences the
//! virtual timer if that is what fired (its output is level-triggered), and
//! signals end of interrupt. Event dispatch and timer expiry happen in the
//! executor's step, in task context (see `docs/ARCHITECTURE.md`). IRQs are
//! masked at boot; Xen unmasks them (`PSTATE.I`) when `SCHEDOP_block`
//! returns, so the pending interrupt is taken and handled right there.
//!
//! This module issues no hypercall of its own: [`block`] is handed the
//! bare `SCHEDOP_block` by `hypercall.rs`, whose `Hypervisor::block` it is.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// INTID of the Xen event-channel PPI, once configured (0: none).
static EVENT_IRQ: AtomicU32 = AtomicU32::new(0);
/// INTID of the virtual-timer PPI, once configured (0: none).
static TIMER_IRQ: AtomicU32 = AtomicU32::new(0);
/// Set by the handler on every interrupt; cleared by the idle path
/// ([`take_activity`]) with IRQs masked.
static ACTIVITY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether any interrupt was handled since the last call (and clear the
/// record). Call with IRQs masked to make check-then-block atomic.
pub fn take_activity() -> bool {
    ACTIVITY.swap(false, Ordering::AcqRel)
}

/// Interrupts handled, per kind: events, timer, other.
static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Whether an event-channel interrupt was configured (the device tree had
/// a `/hypervisor` node).
pub fn has_event_irq() -> bool {
    EVENT_IRQ.load(Ordering::Relaxed) != 0
}

/// How many interrupts were handled: `(event, timer, other)`.
pub fn counts() -> (u64, u64, u64) {
    (
        COUNTS[0].load(Ordering::Relaxed),
        COUNTS[1].load(Ordering::Relaxed),
        COUNTS[2].load(Ordering::Relaxed),
    )
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use super::*;
    use crate::boot_info::Gic;
    use core::ptr::{read_volatile, write_volatile};

    /// The configured GIC (set once at boot).
    static mut GIC: Option<Gic> = None;

    fn gic() -> Option<Gic> {
        // SAFETY: written once by `init` before IRQs are ever unmasked,
        // read-only afterwards; `Gic` is `Copy`.
        unsafe { *core::ptr::addr_of!(GIC) }
    }

    fn w32(addr: u64, v: u32) {
        // SAFETY: `addr` is a register of the GIC frames the device tree
        // named, identity-mapped as Device memory by `mm`.
        unsafe { write_volatile(addr as *mut u32, v) }
    }

    fn r32(addr: u64) -> u32 {
        // SAFETY: as for `w32`.
        unsafe { read_volatile(addr as *const u32) }
    }

    fn w8(addr: u64, v: u8) {
        // SAFETY: as for `w32`; priority registers are byte-accessible.
        unsafe { write_volatile(addr as *mut u8, v) }
    }

    /// Set up the GIC and enable the given PPIs (at a middle priority).
    pub fn init(gic: Gic, ppis: &[u32]) {
        // SAFETY: boot-time, single vCPU, IRQs masked: nothing reads GIC
        // concurrently.
        unsafe { *core::ptr::addr_of_mut!(GIC) = Some(gic) };
        match gic {
            Gic::V2 { dist, cpu } => {
                for &id in ppis {
                    w8(dist.base + 0x400 + u64::from(id), 0xa0);
                    w32(dist.base + 0x100, 1 << id);
                }
                w32(dist.base, 1); // GICD_CTLR: enable
                w32(cpu.base + 0x4, 0xff); // GICC_PMR: let all priorities through
                w32(cpu.base, 1); // GICC_CTLR: enable
            }
            Gic::V3 { dist, redist } => {
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
                // SAFETY: enabling the system-register CPU interface and
                // group-1 interrupts at EL1; IRQs are still masked in PSTATE.
                unsafe {
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
            }
        }
    }

    /// Acknowledge the highest-priority pending interrupt: its INTID
    /// (1020..1023: none).
    fn ack() -> u32 {
        match gic() {
            Some(Gic::V2 { cpu, .. }) => r32(cpu.base + 0xc) & 0x3ff,
            Some(Gic::V3 { .. }) => {
                let v: u64;
                // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt;
                // we EOI it below.
                unsafe { core::arch::asm!("mrs {}, S3_0_C12_C12_0", out(reg) v, options(nostack)) };
                (v & 0xff_ffff) as u32
            }
            None => 1023,
        }
    }

    fn eoi(intid: u32) {
        match gic() {
            Some(Gic::V2 { cpu, .. }) => w32(cpu.base + 0x10, intid),
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
        // Bounded: at most a few interrupts can be pending at once.
        for _ in 0..16 {
            let id = ack();
            if id >= 1020 {
                break;
            }
            let kind = if id == EVENT_IRQ.load(Ordering::Relaxed) {
                0
            } else if id == TIMER_IRQ.load(Ordering::Relaxed) {
                // Level-triggered: mask the timer output until the executor
                // programs the next deadline.
                crate::time::silence();
                1
            } else {
                2
            };
            COUNTS[kind].fetch_add(1, Ordering::Relaxed);
            ACTIVITY.store(true, Ordering::Release);
            eoi(id);
        }
    }
}

/// Set up the GIC; `event_irq` (Xen's event PPI, if any) and `timer_irq`
/// (the virtual timer) are enabled.
pub fn init(gic: crate::boot_info::Gic, event_irq: Option<u32>, timer_irq: u32) {
    EVENT_IRQ.store(event_irq.unwrap_or(0), Ordering::Relaxed);
    TIMER_IRQ.store(timer_irq, Ordering::Relaxed);
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        let mut ppis = [timer_irq, 0];
        let n = match event_irq {
            Some(e) => {
                ppis[1] = e;
                2
            }
            None => 1,
        };
        hw::init(gic, &ppis[..n]);
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    let _ = gic;
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
