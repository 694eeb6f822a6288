//! Time from the Arm generic timer, reached through `cp15` on 32-bit Arm:
//! `CNTVCT` (64-bit, `mrrc`) for the clock, at `CNTFRQ` Hz, and the
//! virtual timer (`CNTV_CVAL`, `CNTV_CTL`, its PPI from the device tree)
//! for the alarm, as on AArch64. Xen does not offer `set_timer_op` to Arm
//! guests; this is how they wait.

use hal::time::{Clock, Instant};
use xen_pv::timer::AlarmHw;

pub use hal::time::{ns_to_ticks, ticks_to_ns};

/// The generic timer as a [`Clock`] and a one-shot [`AlarmHw`].
#[derive(Copy, Clone, Debug, Default)]
pub struct GenericTimer;

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod hw {
    /// The counter frequency in Hz (`CNTFRQ`).
    pub fn freq() -> u64 {
        let f: u32;
        // SAFETY: reading CNTFRQ has no side effect.
        unsafe {
            core::arch::asm!("mrc p15, 0, {}, c14, c0, 0", out(reg) f, options(nomem, nostack))
        };
        u64::from(f)
    }

    /// The virtual count (`CNTVCT`), after an `isb` so it is not read early.
    pub fn count() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: reading CNTVCT has no side effect.
        unsafe {
            core::arch::asm!(
                "isb",
                "mrrc p15, 1, {lo}, {hi}, c14",
                lo = out(reg) lo,
                hi = out(reg) hi,
                options(nomem, nostack),
            )
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// Write `CNTV_CTL` (bit 0 ENABLE, bit 1 IMASK).
    fn set_ctl(ctl: u32) {
        // SAFETY: programming our own PL1 virtual timer.
        unsafe {
            core::arch::asm!("mcr p15, 0, {}, c14, c3, 1", "isb", in(reg) ctl, options(nomem, nostack))
        };
    }

    /// Program the virtual timer to fire at `ticks`, unmasked.
    pub fn arm(ticks: u64) {
        // SAFETY: programming our own PL1 virtual timer's compare value
        // (`CNTV_CVAL`, 64-bit, `mcrr`).
        unsafe {
            core::arch::asm!(
                "mcrr p15, 3, {lo}, {hi}, c14",
                lo = in(reg) ticks as u32,
                hi = in(reg) (ticks >> 32) as u32,
                options(nomem, nostack),
            )
        };
        set_ctl(1);
    }

    /// Turn the virtual timer off.
    pub fn disarm() {
        set_ctl(0);
    }

    /// Keep the timer enabled but mask its output (after it fired).
    pub fn silence() {
        set_ctl(3);
    }
}

/// Mask the timer's interrupt output (the IRQ handler calls this when the
/// timer fired; the next `program` unmasks it).
pub fn silence() {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    hw::silence();
}

/// The counter frequency in Hz (0 off target).
pub fn frequency() -> u64 {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    return hw::freq();
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    0
}

impl Clock for GenericTimer {
    fn now(&self) -> Instant {
        #[cfg(all(target_arch = "arm", target_os = "none"))]
        return Instant::from_nanos(ticks_to_ns(hw::count(), hw::freq()));
        #[cfg(not(all(target_arch = "arm", target_os = "none")))]
        Instant::ZERO
    }
}

impl AlarmHw for GenericTimer {
    fn program(&self, deadline: Option<Instant>) {
        #[cfg(all(target_arch = "arm", target_os = "none"))]
        match deadline {
            Some(d) => hw::arm(ns_to_ticks(d.as_nanos(), hw::freq())),
            None => hw::disarm(),
        }
        #[cfg(not(all(target_arch = "arm", target_os = "none")))]
        let _ = deadline;
    }
}
