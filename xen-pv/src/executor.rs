//! The guest's executor: one cooperative task (an `async` main), polled when
//! something woke it, blocking in the hypervisor (`SCHEDOP_block`) when idle.
//!
//! The same [`step`] runs on real Xen and in the simulator. On real Xen the
//! block hypercall returns when an event is pending, so [`run`] just loops.
//! In the simulator the block hypercall returns at once and marks the domain
//! blocked; the simulator calls `step` again when an event is pending. See
//! `docs/ARCHITECTURE.md` for why a guest is a task and not a thread.

use crate::event::Events;
use crate::hypercall::{self, Hypervisor};
use crate::timer::{AlarmHw, QueueTimer};
use alloc::sync::Arc;
use alloc::task::Wake;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use hal::time::Clock;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls one future when its waker was called.
pub struct Executor {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// A new executor; the first [`poll`](Self::poll) always runs.
    pub fn new() -> Self {
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        Executor {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Whether the task was woken since it was last polled.
    pub fn woken(&self) -> bool {
        self.flag.0.load(Ordering::Acquire)
    }

    /// The task's waker.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Poll `fut` once (clearing the woken flag first).
    pub fn poll<F: Future + ?Sized>(&self, fut: Pin<&mut F>) -> Poll<F::Output> {
        self.flag.0.store(false, Ordering::Release);
        fut.poll(&mut Context::from_waker(&self.waker))
    }
}

/// One scheduling step: dispatch events, serve due timers, poll the task if
/// it was woken, and if it is idle with nothing pending, block in the
/// hypervisor until an event arrives.
pub fn step<H, C, A, F>(
    events: &Events<H>,
    timer: &QueueTimer<C, A>,
    exec: &Executor,
    fut: Pin<&mut F>,
) -> Poll<F::Output>
where
    H: Hypervisor,
    C: Clock,
    A: AlarmHw,
    F: Future + ?Sized,
{
    events.dispatch();
    timer.service();
    if exec.woken()
        && let Poll::Ready(v) = exec.poll(fut)
    {
        return Poll::Ready(v);
    }
    if !exec.woken() && !events.upcall_pending() {
        // Returns at once if an event became pending after the check above.
        let _ = hypercall::sched_block(events.hypervisor());
    }
    Poll::Pending
}

/// Run `fut` to completion on real Xen: [`step`] in a loop.
pub fn run<H, C, A, F>(events: &Events<H>, timer: &QueueTimer<C, A>, fut: F) -> F::Output
where
    H: Hypervisor,
    C: Clock,
    A: AlarmHw,
    F: Future,
{
    let exec = Executor::new();
    let mut fut = core::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = step(events, timer, &exec, fut.as_mut()) {
            return v;
        }
    }
}
