//! Time from the Arm generic timer, reached through `cp15` on 32-bit Arm:
//! `CNTVCT` (64-bit, `mrrc`) for the clock, at `CNTFRQ` Hz. The virtual
//! timer's alarm (`CNTV_CVAL`, `CNTV_CTL`) comes with the GIC that carries
//! its interrupt (docs/ARM32.md).

use hal::time::{Clock, Instant, ticks_to_ns};

/// The generic timer as a [`Clock`].
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
        Instant::from_nanos(ticks_to_ns(0, 1))
    }
}
