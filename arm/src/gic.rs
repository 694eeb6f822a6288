//! Interrupts on an Arm guest: which INTID is Xen's event PPI and which the
//! virtual timer's, what the handler does with each and counts, and the
//! GICv2 distributor and CPU interface (memory-mapped, the same for a
//! 32-bit and a 64-bit guest). How an interrupt is acknowledged on GICv3
//! (system registers) and how IRQs are masked stay in each arch crate.
//!
//! Interrupts only wake the vCPU: the handler acknowledges, silences the
//! virtual timer if that is what fired (its output is level-triggered), and
//! signals end of interrupt. Event dispatch and timer expiry happen in the
//! executor's step, in task context (see `docs/ARCHITECTURE.md`).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// INTID of the Xen event-channel PPI, once configured (0: none).
static EVENT_IRQ: AtomicU32 = AtomicU32::new(0);
/// INTID of the virtual-timer PPI, once configured (0: none).
static TIMER_IRQ: AtomicU32 = AtomicU32::new(0);
/// Set by the handler on every interrupt; cleared by the idle path
/// ([`take_activity`]) with IRQs masked.
static ACTIVITY: AtomicBool = AtomicBool::new(false);
/// Interrupts handled, per kind: events, timer, other.
static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The first INTID that means "no interrupt pending" (1020..=1023).
pub const SPURIOUS: u32 = 1020;

/// Record the event PPI (`None`: the device tree had no `/hypervisor`
/// node) and the timer PPI; returns the PPIs to enable (one or two).
pub fn configure(event_irq: Option<u32>, timer_irq: u32) -> ([u32; 2], usize) {
    EVENT_IRQ.store(event_irq.unwrap_or(0), Ordering::Relaxed);
    TIMER_IRQ.store(timer_irq, Ordering::Relaxed);
    match event_irq {
        Some(e) => ([timer_irq, e], 2),
        None => ([timer_irq, 0], 1),
    }
}

/// Whether any interrupt was handled since the last call (and clear the
/// record). Call with IRQs masked to make check-then-block atomic.
pub fn take_activity() -> bool {
    ACTIVITY.swap(false, Ordering::AcqRel)
}

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

/// The IRQ handler's body: acknowledge (`ack` returns the INTID, or
/// [`SPURIOUS`] and above when none is pending), count, silence the timer
/// (`silence`) if it fired, and end each interrupt (`eoi`). Bounded: at most
/// a few interrupts can be pending at once.
pub fn handle(mut ack: impl FnMut() -> u32, mut eoi: impl FnMut(u32), silence: impl Fn()) {
    for _ in 0..16 {
        let id = ack();
        if id >= SPURIOUS {
            break;
        }
        let kind = if id == EVENT_IRQ.load(Ordering::Relaxed) {
            0
        } else if id == TIMER_IRQ.load(Ordering::Relaxed) {
            // Level-triggered: mask the timer output until the executor
            // programs the next deadline.
            silence();
            1
        } else {
            2
        };
        COUNTS[kind].fetch_add(1, Ordering::Relaxed);
        ACTIVITY.store(true, Ordering::Release);
        eoi(id);
    }
}

/// Register access to the GIC's memory-mapped frames (GICv2's distributor
/// and CPU interface, GICv3's distributor and redistributors).
///
/// # Safety (every function)
/// `addr` must be a register inside a GIC frame the device tree named,
/// identity-mapped as Device memory by the arch's `mm`.
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub mod mmio {
    use core::ptr::{read_volatile, write_volatile};

    /// Write the 32-bit register at `addr`.
    ///
    /// # Safety
    /// See the module: a mapped GIC register.
    pub unsafe fn w32(addr: u64, v: u32) {
        // SAFETY: the caller's contract.
        unsafe { write_volatile(addr as usize as *mut u32, v) }
    }

    /// Read the 32-bit register at `addr`.
    ///
    /// # Safety
    /// See the module: a mapped GIC register.
    pub unsafe fn r32(addr: u64) -> u32 {
        // SAFETY: the caller's contract.
        unsafe { read_volatile(addr as usize as *const u32) }
    }

    /// Write the byte-wide register at `addr` (priorities).
    ///
    /// # Safety
    /// See the module: a mapped, byte-accessible GIC register.
    pub unsafe fn w8(addr: u64, v: u8) {
        // SAFETY: the caller's contract.
        unsafe { write_volatile(addr as usize as *mut u8, v) }
    }
}

/// GICv2: the distributor and the CPU interface, at the addresses the
/// device tree names.
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub mod v2 {
    use super::mmio::{r32, w8, w32};

    /// Enable `ppis` (below 32) at a middle priority, then the
    /// distributor and the CPU interface (letting every priority through).
    ///
    /// # Safety
    /// `dist` and `cpu` are the bases of the GICv2 frames the device tree
    /// named, identity-mapped as Device memory.
    pub unsafe fn init(dist: u64, cpu: u64, ppis: &[u32]) {
        // SAFETY: register offsets inside the frames the caller vouches for.
        unsafe {
            for &id in ppis.iter().filter(|&&id| id < 32) {
                w8(dist + 0x400 + u64::from(id), 0xa0); // GICD_IPRIORITYR
                w32(dist + 0x100, 1 << id); // GICD_ISENABLER0
            }
            w32(dist, 1); // GICD_CTLR: enable
            w32(cpu + 0x4, 0xff); // GICC_PMR
            w32(cpu, 1); // GICC_CTLR: enable
        }
    }

    /// Acknowledge the highest-priority pending interrupt (`GICC_IAR`).
    ///
    /// # Safety
    /// As for [`init`]'s `cpu`.
    pub unsafe fn ack(cpu: u64) -> u32 {
        // SAFETY: GICC_IAR inside the caller's frame.
        unsafe { r32(cpu + 0xc) & 0x3ff }
    }

    /// End interrupt `intid` (`GICC_EOIR`).
    ///
    /// # Safety
    /// As for [`init`]'s `cpu`.
    pub unsafe fn eoi(cpu: u64, intid: u32) {
        // SAFETY: GICC_EOIR inside the caller's frame.
        unsafe { w32(cpu + 0x10, intid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_counts_by_kind_and_silences_only_the_timer() {
        let (ppis, n) = configure(Some(31), 27);
        assert_eq!(&ppis[..n], &[27, 31]);
        assert!(has_event_irq());
        let before = counts();
        let mut pending = alloc::vec![SPURIOUS, 99, 27, 31];
        let mut ended = alloc::vec::Vec::new();
        let silenced = core::cell::Cell::new(0);
        handle(
            || pending.pop().unwrap_or(SPURIOUS),
            |id| ended.push(id),
            || silenced.set(silenced.get() + 1),
        );
        assert_eq!(ended, [31, 27, 99]);
        assert_eq!(silenced.get(), 1);
        let after = counts();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1, after.2 - before.2),
            (1, 1, 1)
        );
        assert!(take_activity());
        assert!(!take_activity());
    }
}
