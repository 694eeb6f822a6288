//! Time: a monotonic clock, a timer that wakes tasks, and adapters to the
//! ecosystem's delay trait.
//!
//! Protocol code never reads a global clock: it takes `now` as an argument or a
//! `&impl Clock`. The simulator's clock is an instance (virtual time), so tests
//! run in parallel and are deterministic.

use core::fmt;
use core::future::Future;
use core::ops::{Add, Sub};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

/// A point in time: nanoseconds since the platform's clock started (for Xen,
/// the domain's system time).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(0);
    /// The last representable instant; "never" for deadlines.
    pub const MAX: Instant = Instant(u64::MAX);

    /// The instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: a deadline past the end of time is "never".
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating at zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Nanoseconds for `ticks` of a counter running at `freq` Hz (exact, no
/// overflow for any 64-bit tick count; 0 for a counter of 0 Hz). For the
/// clocks built on a hardware counter, such as Arm's generic timer.
pub fn ticks_to_ns(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000_000 / u128::from(freq)).min(u128::from(u64::MAX)) as u64
}

/// Counter ticks at or after `ns` nanoseconds (rounded up, so an alarm
/// never fires early; saturating).
pub fn ns_to_ticks(ns: u64, freq: u64) -> u64 {
    (u128::from(ns) * u128::from(freq))
        .div_ceil(1_000_000_000)
        .min(u128::from(u64::MAX)) as u64
}

/// A monotonic clock.
///
/// `now()` MUST never go backwards between two calls on the same clock, and
/// never fails. It MAY be called from any context, including while handling an
/// event.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// An alarm: wakes tasks at a deadline.
///
/// The embassy-time driver shape: a clock plus "wake this waker at or after
/// that instant".
pub trait Timer: Clock {
    /// Arrange for `waker` to be woken once `now() >= at`.
    ///
    /// If `at` is already past, the waker MUST be woken promptly (it MAY be
    /// woken from inside this call). Several wake-ups may be outstanding at
    /// once; an implementation MAY merge wake-ups for wakers that
    /// [`will_wake`](Waker::will_wake) each other into the earliest deadline.
    /// Spurious early wake-ups are allowed: callers re-check the time.
    fn schedule_wake(&self, at: Instant, waker: &Waker);
}

impl<T: Timer + ?Sized> Timer for &T {
    fn schedule_wake(&self, at: Instant, waker: &Waker) {
        (**self).schedule_wake(at, waker)
    }
}

/// A future that completes at or after a deadline. See [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Sleep<'a, T: ?Sized> {
    timer: &'a T,
    deadline: Instant,
}

impl<T: Timer + ?Sized> Future for Sleep<'_, T> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.now() >= self.deadline {
            Poll::Ready(())
        } else {
            self.timer.schedule_wake(self.deadline, cx.waker());
            Poll::Pending
        }
    }
}

/// Sleep until `deadline`.
pub fn sleep_until<T: Timer + ?Sized>(timer: &T, deadline: Instant) -> Sleep<'_, T> {
    Sleep { timer, deadline }
}

/// Sleep for `d` from now.
pub fn sleep<T: Timer + ?Sized>(timer: &T, d: Duration) -> Sleep<'_, T> {
    let deadline = timer.now() + d;
    Sleep { timer, deadline }
}

/// What [`with_timeout`] returns when the deadline passes first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out")
    }
}

impl core::error::Error for TimedOut {}

/// Future for [`with_timeout`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Timeout<'a, T: ?Sized, F> {
    timer: &'a T,
    deadline: Instant,
    inner: F,
}

impl<T: Timer + ?Sized, F: Future + Unpin> Future for Timeout<'_, T, F> {
    type Output = Result<F::Output, TimedOut>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = Pin::new(&mut self.inner).poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if self.timer.now() >= self.deadline {
            return Poll::Ready(Err(TimedOut));
        }
        self.timer.schedule_wake(self.deadline, cx.waker());
        Poll::Pending
    }
}

/// Run `fut` until it completes or `deadline` passes, whichever is first.
/// `fut` must be `Unpin`; pin it first (`core::pin::pin!`) if it is not.
pub fn with_timeout<T: Timer + ?Sized, F: Future + Unpin>(
    timer: &T,
    deadline: Instant,
    fut: F,
) -> Timeout<'_, T, F> {
    Timeout {
        timer,
        deadline,
        inner: fut,
    }
}

/// [`embedded_hal::delay::DelayNs`] on top of any [`Clock`], by spinning.
///
/// This blocks the CPU; async code should use [`sleep`] instead. On the
/// simulator each clock read costs a little virtual time, so spinning ends.
#[derive(Debug, Clone)]
pub struct Delay<C>(pub C);

impl<C: Clock> embedded_hal::delay::DelayNs for Delay<C> {
    fn delay_ns(&mut self, ns: u32) {
        let end = self.0.now() + Duration::from_nanos(u64::from(ns));
        while self.0.now() < end {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_tick_conversions_round_trip() {
        let f = 62_500_000; // QEMU's counter
        assert_eq!(ticks_to_ns(f, f), 1_000_000_000);
        assert_eq!(ns_to_ticks(1_000_000_000, f), f);
        assert_eq!(
            ns_to_ticks(1, f),
            1,
            "rounds up so an alarm never fires early"
        );
        assert!(ticks_to_ns(ns_to_ticks(123_456_789, f), f) >= 123_456_789);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_ns(5, 0), 0);
    }

    use super::*;
    use core::cell::Cell;
    use embedded_hal::delay::DelayNs;

    /// A clock that advances by 1 µs per read.
    struct Ticking(Cell<u64>);
    impl Clock for Ticking {
        fn now(&self) -> Instant {
            let t = self.0.get();
            self.0.set(t + 1_000);
            Instant::from_nanos(t)
        }
    }

    #[test]
    fn delay_waits_at_least_the_requested_time() {
        let clock = Ticking(Cell::new(0));
        let mut d = Delay(&clock);
        d.delay_us(50);
        assert!(clock.0.get() >= 50_000);
        assert!(clock.0.get() <= 53_000);
    }

    #[test]
    fn instant_arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(
            Instant::from_nanos(5) - Instant::from_nanos(9),
            Duration::ZERO
        );
        assert_eq!(
            format!("{:?}", Instant::from_nanos(1_500_000_000)),
            "1.500000000s"
        );
    }
}
