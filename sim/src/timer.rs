//! Timers (Xen's `common/timer.c`, with the scheduler's use of them):
//! adding a deadline to the hypervisor's heap (virtual or real time),
//! firing what is due — each [`TimerKind`] says what happens — and the
//! seeded slop that makes a timer fire late, as a loaded Xen may.

use crate::hypervisor::{Core, Task, TimerKind};
use std::cmp::Reverse;
use std::sync::atomic::Ordering;

impl Core {
    /// When a guest timer due at `deadline` fires: up to the timer slop
    /// later, drawn from the seed.
    pub(crate) fn slack(&self, deadline: u64) -> u64 {
        if self.timer_slop == 0 {
            return deadline;
        }
        let late = self.timer_rng.lock().unwrap().next_u64() % (self.timer_slop + 1);
        deadline.saturating_add(late)
    }

    /// Add a timer.
    pub(crate) fn add_timer(&self, deadline: u64, kind: TimerKind) {
        let seq = self.timer_seq.fetch_add(1, Ordering::SeqCst);
        let mut timers = self.timers.lock().unwrap();
        let earliest = timers.peek().map(|Reverse((t, _, _))| *t);
        timers.push(Reverse((deadline, seq, kind)));
        drop(timers);
        // The free-running timer thread sleeps until the earliest deadline
        // it knew of; only an earlier one needs to wake it (a wake-up per
        // timer set was a context switch per guest poll).
        if earliest.is_none_or(|e| deadline < e) {
            self.timer_cv.notify_all();
        }
    }

    /// Fire every timer due at `now`. Returns how many fired.
    pub(crate) fn fire_timers(&self, now: u64) -> usize {
        let mut fired = 0;
        loop {
            let due = {
                let mut heap = self.timers.lock().unwrap();
                match heap.peek() {
                    Some(Reverse((t, _, _))) if *t <= now => heap.pop().map(|Reverse(e)| e),
                    _ => None,
                }
            };
            let Some((_, _, kind)) = due else { break };
            match kind {
                TimerKind::Virq { dom, generation } => {
                    if let Some(d) = self.domain(dom) {
                        let current = {
                            let mut st = d.st.lock().unwrap();
                            if st.timer_gen == generation && st.timer.is_some() {
                                st.timer = None;
                                true
                            } else {
                                false
                            }
                        };
                        if current {
                            fired += 1;
                            self.trace(&[2, u64::from(dom.0), now], || {
                                format!("{now} timer d{}", dom.0)
                            });
                            self.send_virq(&d, hal::Virq::TIMER.0);
                        }
                    }
                }
                TimerKind::Poll { dom, generation } => {
                    if let Some(d) = self.domain(dom) {
                        let current = {
                            let mut st = d.st.lock().unwrap();
                            if st.poll_gen == generation && st.poll.is_some() {
                                st.poll = None;
                                true
                            } else {
                                false
                            }
                        };
                        if current {
                            fired += 1;
                            self.kick(&d);
                        }
                    }
                }
                TimerKind::Service(svc) => {
                    fired += 1;
                    self.trace(&[7, svc as u64, now], || format!("{now} service {svc:?}"));
                    self.enqueue(Task::Service(svc), 0);
                }
            }
        }
        fired
    }

    /// The earliest pending timer deadline.
    pub(crate) fn next_timer(&self) -> Option<u64> {
        self.timers
            .lock()
            .unwrap()
            .peek()
            .map(|Reverse((t, _, _))| *t)
    }
}
