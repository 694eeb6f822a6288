//! Alarms: a small queue of (deadline, waker) pairs over one hardware or
//! hypervisor one-shot timer.
//!
//! [`TimerQueue`] is the platform-neutral part; the one-shot timer is an
//! [`AlarmHw`]: Xen's `set_timer_op` with `VIRQ_TIMER` ([`XenAlarm`], on x86
//! PV and in the simulator), or the Arm generic timer (in the arch crate).

use crate::abi::Errno;
use crate::hypercall::{self, Hypervisor};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::task::Waker;
use hal::time::{Clock, Instant, Timer};

/// A one-shot timer that makes the guest runnable at a deadline.
pub trait AlarmHw {
    /// Fire at `deadline` (replacing any earlier setting), or never if `None`.
    /// Firing only has to wake the vCPU: the executor then calls
    /// [`TimerQueue::service`].
    fn program(&self, deadline: Option<Instant>);
}

/// Pending wake-ups, earliest first served.
#[derive(Default)]
pub struct TimerQueue {
    entries: RefCell<Vec<(Instant, Waker)>>,
    programmed: Cell<Option<Instant>>,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pending wake-ups.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether no wake-up is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.borrow().iter().map(|(t, _)| *t).min()
    }

    /// Wake `waker` at `at`. A waker already queued keeps the earlier of its
    /// two deadlines, so a task polling a sleep repeatedly adds nothing.
    pub fn schedule(&self, at: Instant, waker: &Waker, now: Instant, hw: &impl AlarmHw) {
        if at <= now {
            waker.wake_by_ref();
            return;
        }
        {
            let mut entries = self.entries.borrow_mut();
            match entries.iter_mut().find(|(_, w)| w.will_wake(waker)) {
                Some(e) => e.0 = e.0.min(at),
                None => entries.push((at, waker.clone())),
            }
        }
        self.reprogram(hw);
    }

    /// Wake everything due at `now`, then program the next deadline (again,
    /// even if unchanged: see the body). Returns the number woken.
    pub fn service(&self, now: Instant, hw: &impl AlarmHw) -> usize {
        let due: Vec<Waker> = {
            let mut entries = self.entries.borrow_mut();
            let mut due = Vec::new();
            entries.retain(|(t, w)| {
                if *t <= now {
                    due.push(w.clone());
                    false
                } else {
                    true
                }
            });
            due
        };
        let n = due.len();
        for w in due {
            w.wake();
        }
        // Re-arm whatever is armed. The one-shot timer fires by the
        // hypervisor's clock, which can be a little ahead of ours: then it
        // fired, we woke, and by our clock nothing was due yet. Left as it
        // was, that deadline would never fire again and the guest would
        // sleep for ever (seen on x86 PV under a Linux dom0, where Xen's
        // timer fires on another CPU's time record). Setting it again
        // costs a hypercall per wake-up while a deadline is pending.
        self.programmed.set(None);
        self.reprogram(hw);
        n
    }

    fn reprogram(&self, hw: &impl AlarmHw) {
        let next = self.next_deadline();
        if next != self.programmed.get() {
            self.programmed.set(next);
            hw.program(next);
        }
    }
}

/// Xen's one-shot timer: `set_timer_op`, delivered as `VIRQ_TIMER`.
#[derive(Clone, Debug)]
pub struct XenAlarm<H>(pub H);

impl<H: Hypervisor> AlarmHw for XenAlarm<H> {
    fn program(&self, deadline: Option<Instant>) {
        // Deadline 0 cancels; an instant of 0 is "now", so use 1.
        let ns = deadline.map_or(0, |d| d.as_nanos().max(1));
        // set_timer_op cannot fail for a valid deadline; if it did, the
        // guest would still be woken by its next event.
        let _: Result<(), Errno> = hypercall::set_timer_op(&self.0, ns);
    }
}

/// A [`Timer`] from a clock, a queue and a one-shot timer.
pub struct QueueTimer<C, A> {
    clock: C,
    alarm: A,
    queue: TimerQueue,
}

impl<C: Clock, A: AlarmHw> QueueTimer<C, A> {
    /// A timer over `clock` and `alarm`.
    pub fn new(clock: C, alarm: A) -> Self {
        QueueTimer {
            clock,
            alarm,
            queue: TimerQueue::new(),
        }
    }

    /// Wake what is due. The executor calls this before each poll.
    pub fn service(&self) -> usize {
        self.queue.service(self.clock.now(), &self.alarm)
    }

    /// The queue.
    pub fn queue(&self) -> &TimerQueue {
        &self.queue
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<C: Clock, A: AlarmHw> Clock for QueueTimer<C, A> {
    fn now(&self) -> Instant {
        self.clock.now()
    }
}

impl<C: Clock, A: AlarmHw> Timer for QueueTimer<C, A> {
    fn schedule_wake(&self, at: Instant, waker: &Waker) {
        self.queue
            .schedule(at, waker, self.clock.now(), &self.alarm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use core::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Default)]
    struct Hw(RefCell<Vec<Option<Instant>>>);
    impl AlarmHw for Hw {
        fn program(&self, d: Option<Instant>) {
            self.0.borrow_mut().push(d);
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri gives a vtable one of several addresses at each use, so Waker::will_wake (best-effort: it compares vtable addresses) is false for a clone and the queue keeps a duplicate entry"
    )]
    fn queue_programs_earliest_and_wakes_due() {
        let hw = Hw::default();
        let q = TimerQueue::new();
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let b = Arc::new(Count(AtomicUsize::new(0)));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let t = Instant::from_nanos;
        q.schedule(t(100), &wa, t(0), &hw);
        q.schedule(t(50), &wb, t(0), &hw);
        q.schedule(t(80), &wa, t(0), &hw); // same waker: keeps 80
        assert_eq!(q.len(), 2);
        assert_eq!(hw.0.borrow().last(), Some(&Some(t(50))));
        assert_eq!(q.service(t(60), &hw), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert_eq!(hw.0.borrow().last(), Some(&Some(t(80))));
        assert_eq!(q.service(t(80), &hw), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        // The one-shot already fired; nothing left to program.
        assert_eq!(q.next_deadline(), None);
        assert_eq!(hw.0.borrow().len(), 3);
        // Past deadline wakes at once.
        q.schedule(t(10), &wa, t(80), &hw);
        assert_eq!(a.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_timer_that_fires_before_our_clock_reaches_its_deadline_is_rearmed() {
        // The hypervisor's clock is a little ahead of ours: its one-shot
        // fires at 100 by its clock, when ours reads 99.
        let hw = Hw::default();
        let q = TimerQueue::new();
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let w = Waker::from(a.clone());
        let t = Instant::from_nanos;
        q.schedule(t(100), &w, t(0), &hw);
        assert_eq!(*hw.0.borrow(), [Some(t(100))]);
        assert_eq!(q.service(t(99), &hw), 0);
        // Not due by our clock, so armed again: otherwise nothing would
        // ever wake the guest.
        assert_eq!(*hw.0.borrow(), [Some(t(100)), Some(t(100))]);
        assert_eq!(q.service(t(100), &hw), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        // Nothing left: no more programming.
        let n = hw.0.borrow().len();
        q.service(t(200), &hw);
        assert_eq!(hw.0.borrow().len(), n);
    }
}
