//! Time from the Arm generic timer: `CNTVCT_EL0` for the clock, the virtual
//! timer (`CNTV_CVAL_EL0`, its PPI from the device tree) for the alarm.
//! Xen does not offer `set_timer_op` to Arm guests; this is how they wait.

use hal::time::{Clock, Instant};
use xen_pv::timer::AlarmHw;

pub use hal::time::{ns_to_ticks, ticks_to_ns};

/// The generic timer as a [`Clock`] and a one-shot [`AlarmHw`].
#[derive(Copy, Clone, Debug, Default)]
pub struct GenericTimer;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    /// The counter frequency in Hz.
    pub fn freq() -> u64 {
        let f: u64;
        // SAFETY: reading CNTFRQ_EL0 has no side effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack)) };
        f
    }

    /// The virtual counter.
    pub fn count() -> u64 {
        let c: u64;
        // SAFETY: the ISB orders the read after earlier instructions;
        // reading CNTVCT_EL0 has no side effects.
        unsafe {
            core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) c, options(nomem, nostack))
        };
        c
    }

    /// Program the virtual timer to fire at `ticks`, unmasked.
    pub fn arm(ticks: u64) {
        // SAFETY: programming our own EL1 virtual timer.
        unsafe {
            core::arch::asm!(
                "msr cntv_cval_el0, {cval}",
                "msr cntv_ctl_el0, {ctl}",
                "isb",
                cval = in(reg) ticks,
                ctl = in(reg) 1u64,
                options(nomem, nostack),
            )
        };
    }

    /// Turn the virtual timer off.
    pub fn disarm() {
        // SAFETY: as for `arm`.
        unsafe {
            core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 0u64, options(nomem, nostack))
        };
    }

    /// Keep the timer enabled but mask its output (after it fired).
    pub fn silence() {
        // SAFETY: as for `arm`; ENABLE|IMASK.
        unsafe {
            core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 3u64, options(nomem, nostack))
        };
    }
}

/// Mask the timer's interrupt output (the IRQ handler calls this when the
/// timer fired; the next `program` unmasks it).
pub fn silence() {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    hw::silence();
}

/// The counter frequency in Hz (0 on the host).
pub fn frequency() -> u64 {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    return hw::freq();
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    0
}

impl Clock for GenericTimer {
    fn now(&self) -> Instant {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        return Instant::from_nanos(ticks_to_ns(hw::count(), hw::freq()));
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        Instant::ZERO
    }
}

impl AlarmHw for GenericTimer {
    fn program(&self, deadline: Option<Instant>) {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        match deadline {
            Some(d) => hw::arm(ns_to_ticks(d.as_nanos(), hw::freq())),
            None => hw::disarm(),
        }
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        let _ = deadline;
    }
}
