//! Time on x86_64 PV: the clock is Xen's system time, computed from
//! `vcpu_time_info` and the TSC with the pvclock formula; the alarm is
//! `set_timer_op`, delivered as `VIRQ_TIMER` (`xen_pv::timer::XenAlarm`).

use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use hal::time::{Clock, Instant};
use xen_pv::abi::VcpuTimeInfo;

/// Nanoseconds of Xen system time at TSC value `tsc`, from the snapshot
/// `t`: `system_time + ((tsc - tsc_timestamp) shifted by tsc_shift) *
/// tsc_to_system_mul / 2^32`. A TSC behind the snapshot counts as no time.
#[doc(alias = "pvclock")]
pub fn system_time(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    let mut delta = tsc.saturating_sub(t.tsc_timestamp);
    if t.tsc_shift >= 0 {
        delta = delta.checked_shl(t.tsc_shift as u32).unwrap_or(0);
    } else {
        delta = delta
            .checked_shr(u32::from(t.tsc_shift.unsigned_abs()))
            .unwrap_or(0);
    }
    let scaled = ((u128::from(delta) * u128::from(t.tsc_to_system_mul)) >> 32) as u64;
    t.system_time.wrapping_add(scaled)
}

/// Read a consistent snapshot of the `vcpu_time_info` at `p`: retry while
/// Xen is updating it (odd version) or updated it during the read.
/// Bounded; after that the last read is used.
///
/// # Safety
/// `p` must point to a mapped `vcpu_time_info` Xen keeps updating.
unsafe fn snapshot(p: *const VcpuTimeInfo) -> VcpuTimeInfo {
    let version = |p: *const VcpuTimeInfo| {
        // SAFETY: `p` is valid (the caller's contract); `version` is a
        // naturally aligned u32 Xen writes concurrently: read atomically.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(p.cast::<u32>().cast_mut()) }
            .load(Ordering::Acquire)
    };
    let mut t = VcpuTimeInfo::default();
    for _ in 0..1000 {
        let v1 = version(p);
        // SAFETY: as above; a torn read is detected by the version check
        // and thrown away. Volatile: the compiler must re-read each time.
        t = unsafe { core::ptr::read_volatile(p) };
        core::sync::atomic::fence(Ordering::Acquire);
        if v1 % 2 == 0 && version(p) == v1 {
            break;
        }
    }
    t
}

/// The time-stamp counter.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `lfence; rdtsc` reads the TSC (ordered after earlier loads);
    // no memory access, no other effect.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
fn rdtsc() -> u64 {
    0
}

static TIME_INFO: AtomicPtr<VcpuTimeInfo> = AtomicPtr::new(core::ptr::null_mut());
static LAST: AtomicU64 = AtomicU64::new(0);

/// Xen system time as a [`Clock`]. Before `shared_info` is mapped it reads
/// 0. Readings never go backwards, even if Xen's per-update corrections
/// would briefly make the formula do so.
#[derive(Copy, Clone, Debug, Default)]
pub struct PvClock;

impl PvClock {
    /// Start reading `vcpu_info[0].time` at `p`.
    ///
    /// # Safety
    /// `p` must stay mapped for the rest of the domain's life.
    pub unsafe fn set_time_info(p: *const VcpuTimeInfo) {
        TIME_INFO.store(p.cast_mut(), Ordering::Release);
    }
}

impl Clock for PvClock {
    fn now(&self) -> Instant {
        let p = TIME_INFO.load(Ordering::Acquire);
        if p.is_null() {
            return Instant::from_nanos(0);
        }
        // SAFETY: `set_time_info`'s contract.
        let t = unsafe { snapshot(p) };
        let ns = system_time(&t, rdtsc());
        let prev = LAST.fetch_max(ns, Ordering::AcqRel);
        Instant::from_nanos(ns.max(prev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shift: i8, mul: u32) -> VcpuTimeInfo {
        VcpuTimeInfo {
            tsc_timestamp: 1_000,
            system_time: 5_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            ..Default::default()
        }
    }

    #[test]
    fn the_pvclock_formula() {
        // A 2 GHz TSC: 0.5 ns per tick = mul 2^31 with no shift.
        let t = info(0, 1 << 31);
        assert_eq!(system_time(&t, 1_000), 5_000_000);
        assert_eq!(system_time(&t, 3_000), 5_001_000);
        // The same rate as shift -1 and mul 2^32 - 1 (just under 1.0).
        let t = info(-1, u32::MAX);
        assert_eq!(system_time(&t, 3_001), 5_000_000 + 999);
        // A 500 MHz TSC: 2 ns per tick = shift 1 and mul 2^32 - 1.
        let t = info(1, u32::MAX);
        assert_eq!(system_time(&t, 1_500), 5_000_000 + 999);
        // A TSC behind the snapshot adds nothing.
        assert_eq!(system_time(&t, 10), 5_000_000);
        // No overflow for a huge delta: the product is done in 128 bits.
        let t = info(0, u32::MAX);
        assert!(system_time(&t, u64::MAX) > 5_000_000);
    }

    #[test]
    fn before_shared_info_the_clock_reads_zero() {
        assert_eq!(PvClock.now(), Instant::from_nanos(0));
    }
}
