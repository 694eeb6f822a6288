//! Running guests: the per-thread scheduler, one guest step, nested waits,
//! domain destruction, and the free-running worker and timer threads.
//!
//! Each thread that runs guests (the caller of `Sim::run` in deterministic
//! mode, each worker in free-running mode) owns a [`LocalSched`] in a
//! thread-local: the guests' tasks and, in deterministic mode, the RNG that
//! picks the next one. Keeping it thread-local lets a hypercall that must
//! *wait* (`SCHEDOP_poll`, `SCHEDOP_yield`) run other domains from inside the
//! call, as Xen runs other vCPUs while one is blocked, so synchronous guest
//! code (a blocking `BlockDevice::read`, say) works in the simulator too.

use crate::domain::{Domain, Exit};
use crate::guest_access::{Args, HResult};
use crate::hypervisor::{Core, Queues, Rng, Task, TimerKind};
use crate::{event_channel, gnttab, services};
use hal::DomId;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use xen_pv::abi::io::xs;
use xen_pv::abi::{self, Errno, hvm_param, schedop};

/// A guest as the scheduler runs it. `guest.rs` makes it (the scheduler
/// knows nothing of platforms): booted on its first step, then stepped
/// until its main future is done. Panics propagate to the scheduler, which
/// catches them and tears the domain down.
pub(crate) trait GuestTask {
    /// Boot the guest's platform in `dom` and start its main future.
    ///
    /// Errors: why the platform could not boot (the domain is destroyed
    /// with `Exit::BootFailed`).
    fn boot(&mut self, core: &Arc<Core>, dom: &Arc<Domain>) -> Result<(), String>;

    /// One step of the booted guest: `Ready` once its main returned.
    fn step(&mut self) -> Poll<()>;
}

/// A guest not yet started, as handed to the thread that will run it:
/// called there, it makes the guest's task (which need not be `Send`).
pub(crate) type NewGuest = Box<dyn FnOnce() -> Box<dyn GuestTask> + Send>;

/// The guests each free-running worker thread is to start.
pub(crate) type Inbox = Arc<Vec<std::sync::Mutex<Vec<(DomId, NewGuest)>>>>;

/// A guest's task on its thread, and whether it has booted.
pub(crate) struct GuestSlot {
    task: Option<Box<dyn GuestTask>>,
    booted: bool,
}

impl From<NewGuest> for GuestSlot {
    fn from(g: NewGuest) -> Self {
        GuestSlot {
            task: Some(g()),
            booted: false,
        }
    }
}

/// Largest depth of nested waits (a guest waiting in a hypercall while
/// another, run from inside that wait, waits too).
const MAX_NESTING: u32 = 16;

/// How long an idle free-running worker spins for work before sleeping.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(100);

/// How recent a hand-over to another worker makes spinning worth it.
const HANDOFF_RECENT: Duration = Duration::from_millis(1);

/// The scheduler state of one thread.
pub(crate) struct LocalSched {
    pub slots: BTreeMap<DomId, GuestSlot>,
    /// Deterministic mode's choice of the next task.
    pub rng: Rng,
    /// Free-running mode: this thread's worker queue.
    pub worker: Option<usize>,
    pub steps: Arc<AtomicU64>,
    pub step_cost_ns: u64,
    /// The step count at which runs stop.
    pub step_limit: u64,
    depth: u32,
}

impl LocalSched {
    pub(crate) fn new(
        seed: u64,
        worker: Option<usize>,
        steps: Arc<AtomicU64>,
        step_cost_ns: u64,
    ) -> Self {
        LocalSched {
            slots: BTreeMap::new(),
            rng: Rng::new(seed),
            worker,
            steps,
            step_cost_ns,
            step_limit: u64::MAX,
            depth: 0,
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<LocalSched>> = const { RefCell::new(None) };
}

/// Make `s` this thread's scheduler; returns the previous one.
pub(crate) fn install(s: Option<LocalSched>) -> Option<LocalSched> {
    LOCAL.with(|l| std::mem::replace(&mut *l.borrow_mut(), s))
}

fn with_local<R>(f: impl FnOnce(&mut LocalSched) -> R) -> Option<R> {
    LOCAL.with(|l| l.borrow_mut().as_mut().map(f))
}

/// A hypervisor-initiated crash of the running domain (Xen's
/// `domain_crash`): unwinds out of the guest's code to its step.
pub(crate) struct DomainCrash(pub String);

/// Stop the running guest immediately. Callers hold no locks.
pub(crate) fn crash_current(reason: String) -> ! {
    std::panic::resume_unwind(Box::new(DomainCrash(reason)))
}

/// Why a run loop returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The caller's condition became true.
    Done,
    /// The deadline passed.
    Deadline,
    /// Nothing runnable and no timer pending (deterministic mode).
    Idle,
    /// The step limit was reached.
    StepLimit,
}

/// Pick the next task, or `None` if nothing is runnable now. In
/// free-running mode this waits briefly for work.
fn pick(core: &Core) -> Option<Task> {
    match &core.queues {
        Queues::Det(set) => {
            let mut set = set.lock().unwrap();
            if set.is_empty() {
                return None;
            }
            let n = set.len();
            let i = with_local(|l| l.rng.below(n)).unwrap_or(0);
            Some(set.swap_remove(i))
        }
        Queues::Free(queues) => {
            let me = with_local(|l| l.worker).flatten().unwrap_or(0);
            let q = &queues[me];
            // Having just handed work to another worker, spin a little
            // before sleeping: its answer (a packet, a disk reply) usually
            // follows within microseconds, and waking a sleeping thread
            // costs more (a 100 MB download from the demo site, interleaved
            // runs: 450-545 MB/s without this, 650-790 with it). A worker
            // that handed nothing over lately (an idle one) sleeps at once:
            // the idle demo uses no more CPU than without spinning.
            let handed_over = crate::hypervisor::HANDED_OVER
                .with(|h| h.get().is_some_and(|t| t.elapsed() < HANDOFF_RECENT));
            if handed_over {
                let spin_until = Instant::now() + SPIN_BEFORE_SLEEP;
                while q.len.load(Ordering::SeqCst) == 0 && Instant::now() < spin_until {
                    std::hint::spin_loop();
                }
            }
            // `sleeping` is set before the queue is looked at under the
            // lock, and `enqueue` reads it after pushing under the lock: a
            // task queued after this look finds it set and wakes us.
            q.sleeping.store(true, Ordering::SeqCst);
            let mut g = q.q.lock().unwrap();
            if g.is_empty() {
                g = q.cv.wait_timeout(g, Duration::from_millis(2)).unwrap().0;
            }
            q.sleeping.store(false, Ordering::SeqCst);
            let task = g.pop_front();
            if task.is_some() {
                q.len.fetch_sub(1, Ordering::SeqCst);
            }
            task
        }
    }
}

/// Run one task. Returns whether something ran.
fn run_task(core: &Arc<Core>, task: Task) -> bool {
    match task {
        Task::Service(svc) => {
            let now = core.time.peek();
            core.trace(&[5, svc as u64], || format!("{now} run {svc:?}"));
            services::run(core, svc);
            true
        }
        Task::Domain(id) => {
            let Some(dom) = core.domain(id) else {
                return false;
            };
            dom.queued.store(false, Ordering::SeqCst);
            // A domain waiting further up this thread's stack has no slot
            // here; its wait loop notices the wake-up itself.
            let Some(mut slot) = with_local(|l| l.slots.remove(&id)).flatten() else {
                return false;
            };
            let now = core.time.peek();
            core.trace(&[4, u64::from(id.0)], || format!("{now} run d{}", id.0));
            let cost = with_local(|l| {
                l.steps.fetch_add(1, Ordering::Relaxed);
                l.step_cost_ns
            })
            .unwrap_or(0);
            dom.set_runstate(xen_pv::abi::runstate::RUNNING, now);
            let alive = step_guest(core, &dom, &mut slot);
            let after = if dom.blocked.load(Ordering::SeqCst) {
                xen_pv::abi::runstate::BLOCKED
            } else {
                xen_pv::abi::runstate::RUNNABLE
            };
            dom.set_runstate(after, core.time.peek().saturating_add(cost));
            if alive {
                with_local(|l| l.slots.insert(id, slot));
            }
            core.time.charge(cost);
            true
        }
    }
}

/// Run tasks until `done()`, the deadline, idleness or the step limit.
pub(crate) fn run_loop(core: &Arc<Core>, deadline: u64, done: &dyn Fn() -> bool) -> Stop {
    let det = matches!(core.queues, Queues::Det(_));
    loop {
        if done() {
            return Stop::Done;
        }
        let now = core.time.peek();
        if now >= deadline {
            return Stop::Deadline;
        }
        if with_local(|l| l.steps.load(Ordering::Relaxed) >= l.step_limit).unwrap_or(false) {
            return Stop::StepLimit;
        }
        core.fire_timers(now);
        match pick(core) {
            Some(task) => {
                run_task(core, task);
            }
            None if det => match core.next_timer() {
                Some(t) if t <= deadline => core.time.advance_to(t),
                Some(_) => {
                    core.time.advance_to(deadline);
                    return Stop::Deadline;
                }
                None => return Stop::Idle,
            },
            None => {}
        }
    }
}

/// Wait, inside a hypercall of `dom`, until `cond()`: run other domains
/// meanwhile. `dom` is marked blocked so that a wake-up enqueues it, which
/// ends the wait. Returns `false` if there is no scheduler on this thread
/// (the caller then falls back to "block after this step").
///
/// Crashes the domain (unwinding, holding no locks) if the wait can never
/// end: nothing runnable and no timer in deterministic mode, nesting too
/// deep, or the step limit.
pub(crate) fn nested_wait(
    core: &Arc<Core>,
    dom: &Arc<Domain>,
    deadline: u64,
    cond: &dyn Fn() -> bool,
) -> bool {
    let depth = match with_local(|l| {
        l.depth += 1;
        l.depth
    }) {
        Some(d) => d,
        None => return false,
    };
    let stop = if depth > MAX_NESTING {
        Stop::StepLimit
    } else {
        // Marked blocked, a wake-up (kick) enqueues the domain, which makes
        // a free-running worker notice at once; re-armed each round.
        let done = || {
            if cond() || dom.dead.load(Ordering::SeqCst) {
                return true;
            }
            dom.blocked.store(true, Ordering::SeqCst);
            false
        };
        let s = run_loop(core, deadline, &done);
        dom.blocked.store(false, Ordering::SeqCst);
        s
    };
    with_local(|l| l.depth -= 1);
    match stop {
        Stop::Done | Stop::Deadline => true,
        Stop::Idle => crash_current(format!(
            "d{} waits in SCHEDOP_poll but nothing can wake it (deadlock)",
            dom.id.0
        )),
        Stop::StepLimit => crash_current(format!(
            "d{} waited in a hypercall past the step limit or nesting depth",
            dom.id.0
        )),
    }
}

/// Run one other task, if any, from inside `dom`'s `SCHEDOP_yield`.
pub(crate) fn yield_once(core: &Arc<Core>, dom: &Domain) {
    if with_local(|l| l.depth < MAX_NESTING) != Some(true) {
        return;
    }
    with_local(|l| l.depth += 1);
    let det = matches!(core.queues, Queues::Det(_));
    core.fire_timers(core.time.peek());
    let task = if det {
        pick(core)
    } else {
        // Do not sleep in a yield.
        match &core.queues {
            Queues::Free(q) => {
                let me = with_local(|l| l.worker).flatten().unwrap_or(0);
                let task = q[me].q.lock().unwrap().pop_front();
                if task.is_some() {
                    q[me].len.fetch_sub(1, Ordering::SeqCst);
                }
                task
            }
            Queues::Det(_) => None,
        }
    };
    if let Some(t) = task {
        if t == Task::Domain(dom.id) {
            dom.queued.store(false, Ordering::SeqCst);
        } else {
            run_task(core, t);
        }
    }
    with_local(|l| l.depth -= 1);
}

/// Run one scheduling step of a guest. Returns whether it is still alive.
fn step_guest(core: &Arc<Core>, dom: &Arc<Domain>, slot: &mut GuestSlot) -> bool {
    if dom.dead.load(Ordering::SeqCst) {
        let reason = dom.st.lock().unwrap().shutdown.unwrap_or(0);
        destroy(core, dom, Exit::Shutdown(reason));
        return false;
    }
    let _current = crate::guest_log::enter(dom);
    let Some(task) = slot.task.as_mut() else {
        return false;
    };
    if !slot.booted {
        match catch_unwind(AssertUnwindSafe(|| task.boot(core, dom))) {
            Ok(Ok(())) => slot.booted = true,
            Ok(Err(why)) => {
                destroy(core, dom, Exit::BootFailed(why));
                return false;
            }
            Err(panic) => {
                let exit = unwound(core, dom, panic);
                destroy(core, dom, exit);
                return false;
            }
        }
    }
    let stepped = catch_unwind(AssertUnwindSafe(|| task.step()));
    let exit = match stepped {
        Ok(Poll::Ready(())) => match dom.st.lock().unwrap().shutdown {
            Some(r) => Exit::Shutdown(r),
            None => Exit::Returned,
        },
        Ok(Poll::Pending) if dom.dead.load(Ordering::SeqCst) => {
            Exit::Shutdown(dom.st.lock().unwrap().shutdown.unwrap_or(0))
        }
        Ok(Poll::Pending) => {
            if !dom.blocked.load(Ordering::SeqCst) {
                core.make_runnable(dom);
            }
            return true;
        }
        Err(panic) => unwound(core, dom, panic),
    };
    // Drop the guest's objects before tearing the domain down.
    slot.task = None;
    destroy(core, dom, exit);
    false
}

fn unwound(core: &Core, dom: &Domain, panic: Box<dyn std::any::Any + Send>) -> Exit {
    if let Some(DomainCrash(reason)) = panic.downcast_ref::<DomainCrash>() {
        eprintln!(
            "xenpal-sim: d{} ({}) crashed: {reason} [seed {:#x}; rerun with XENPAL_SEED={:#x}]",
            dom.id.0, dom.name, core.seed, core.seed
        );
        return Exit::Crashed(reason.clone());
    }
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    eprintln!(
        "xenpal-sim: d{} ({}) panicked: {msg} [seed {:#x}; rerun with XENPAL_SEED={:#x}]",
        dom.id.0, dom.name, core.seed, core.seed
    );
    Exit::Panicked(msg)
}

pub(crate) fn notify_store(core: &Core, d: DomId) {
    if let Some(dom) = core.domain(d) {
        let port = dom.st.lock().unwrap().hvm_params[hvm_param::STORE_EVTCHN as usize] as u32;
        if port != 0 {
            core.set_pending(&dom, port);
        }
    }
}

/// Tear a domain down as the toolstack does after it stops: flush its
/// console, close its channels, drop its grant mappings and memory, cancel
/// its timers, and remove it from xenstore.
pub(crate) fn destroy(core: &Arc<Core>, dom: &Arc<Domain>, exit: Exit) {
    {
        let mut e = dom.exit.lock().unwrap();
        if e.is_some() {
            return;
        }
        *e = Some(exit.clone());
    }
    dom.dead.store(true, Ordering::SeqCst);
    services::flush_console(core, dom);
    core.flush_console_line(dom);
    let (ports, handles) = {
        let mut st = dom.st.lock().unwrap();
        st.timer_gen += 1;
        st.timer = None;
        st.poll = None;
        let ports: Vec<u32> = (1..st.ports.len() as u32)
            .filter(|&p| !matches!(st.ports[p as usize], crate::domain::Chan::Free))
            .collect();
        let handles: Vec<u32> = (0..st.maptrack.len() as u32)
            .filter(|&h| st.maptrack[h as usize].is_some())
            .collect();
        (ports, handles)
    };
    for p in ports {
        let _ = event_channel::close_port(core, dom, p);
    }
    for h in handles {
        gnttab::unmap_handle(core, dom, h, None);
    }
    dom.mem.release();
    crate::guest_log::detach(dom);
    let notes = {
        let mut x = core.xenstored.lock().unwrap();
        x.release(dom.id);
        let path = format!("/local/domain/{}\0", dom.id.0);
        x.request(DomId::DOM0, xs::RM, 0, path.as_bytes());
        x.take_notifications()
    };
    for d in notes {
        notify_store(core, d);
    }
    core.trace(&[6, u64::from(dom.id.0)], || {
        format!("destroy d{} {exit:?}", dom.id.0)
    });
    if dom.id != DomId::DOM0 {
        core.live.fetch_sub(1, Ordering::SeqCst);
    }
    let _g = core.exit_lock.lock().unwrap();
    core.exit_cv.notify_all();
}

/// A free-running worker thread: owns its guests, runs its queue.
pub(crate) fn worker(
    core: Arc<Core>,
    me: usize,
    stop: Arc<AtomicBool>,
    inbox: Inbox,
    steps: Arc<AtomicU64>,
) {
    install(Some(LocalSched::new(0, Some(me), steps, 0)));
    let take_new = || {
        let new: Vec<_> = inbox[me].lock().unwrap().drain(..).collect();
        with_local(|l| {
            for (id, g) in new {
                l.slots.insert(id, g.into());
            }
        });
    };
    while !stop.load(Ordering::SeqCst) {
        take_new();
        if let Some(task) = pick(&core) {
            take_new();
            run_task(&core, task);
        }
    }
    install(None);
}

/// The free-running timer thread: fires deadlines in real time.
pub(crate) fn timer_thread(core: Arc<Core>, stop: Arc<AtomicBool>) {
    let mut guard = core.timers.lock().unwrap();
    while !stop.load(Ordering::SeqCst) {
        let now = core.time.peek();
        let next = guard.peek().map(|std::cmp::Reverse((t, _, _))| *t);
        match next {
            Some(t) if t <= now => {
                drop(guard);
                core.fire_timers(now);
                guard = core.timers.lock().unwrap();
            }
            Some(t) => {
                let wait = Duration::from_nanos((t - now).min(10_000_000));
                guard = core.timer_cv.wait_timeout(guard, wait).unwrap().0;
            }
            None => {
                guard = core
                    .timer_cv
                    .wait_timeout(guard, Duration::from_millis(10))
                    .unwrap()
                    .0;
            }
        }
    }
}

pub(crate) fn sched_op(core: &Arc<Core>, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        schedop::YIELD => {
            // Let one other domain run, as Xen would deschedule us.
            crate::sched::yield_once(core, dom);
            Ok(0)
        }
        schedop::BLOCK => {
            // Xen unmasks upcalls and blocks unless events are pending; the
            // order below (blocked flag, then the check) pairs with `kick`.
            dom.blocked.store(true, Ordering::SeqCst);
            if dom.upcall_pending() {
                dom.blocked.store(false, Ordering::SeqCst);
            }
            Ok(0)
        }
        schedop::SHUTDOWN => {
            let x: abi::SchedShutdown = a.read(1)?;
            if x.reason > abi::shutdown::SOFT_RESET {
                return Err(Errno::EINVAL);
            }
            dom.st.lock().unwrap().shutdown = Some(x.reason);
            dom.dead.store(true, Ordering::SeqCst);
            Ok(0)
        }
        schedop::POLL => {
            let x: abi::SchedPoll = a.read(1)?;
            if x.nr_ports > 128 {
                return Err(Errno::EINVAL);
            }
            let at = a.handle(1, core::mem::offset_of!(abi::SchedPoll, ports))?;
            let mut ports = Vec::with_capacity(x.nr_ports as usize);
            for i in 0..x.nr_ports as usize {
                let p: u32 = a.read_at(1, at + 4 * i)?;
                ports.push(p);
            }
            {
                let st = dom.st.lock().unwrap();
                if ports.iter().any(|&p| p as usize >= st.ports.len()) {
                    return Err(Errno::EINVAL);
                }
            }
            let pending = |ports: &[u32]| {
                ports.iter().any(|&p| {
                    let (w, b) = ((p / 64) as usize, 1u64 << (p % 64));
                    hal::SharedMemory::load_u64(
                        &dom.shared_info,
                        xen_pv::event::layout::PENDING + 8 * w,
                        Ordering::SeqCst,
                    ) & b
                        != 0
                })
            };
            if pending(&ports) {
                return Ok(0);
            }
            let generation = {
                let mut st = dom.st.lock().unwrap();
                st.poll = Some(ports.clone());
                st.poll_gen += 1;
                st.poll_gen
            };
            // An s_time_t: a deadline negative as a signed time is past.
            let timeout = if x.timeout != 0 {
                core.slack(x.timeout.min(i64::MAX as u64))
            } else {
                0
            };
            if timeout != 0 {
                core.add_timer(
                    timeout,
                    TimerKind::Poll {
                        dom: dom.id,
                        generation,
                    },
                );
            }
            // Xen blocks the vCPU until a polled port is pending (masked or
            // not) or the timeout. Run other domains meanwhile.
            let done = || pending(&ports) || (timeout != 0 && core.time.peek() >= timeout);
            if crate::sched::nested_wait(core, dom, u64::MAX, &done) {
                dom.st.lock().unwrap().poll = None;
            } else {
                // No scheduler on this thread: sleep after this step.
                dom.blocked.store(true, Ordering::SeqCst);
            }
            Ok(0)
        }
        schedop::REMOTE_SHUTDOWN => {
            let x: abi::SchedRemoteShutdown = a.read(1)?;
            // Xen looks the domain up before asking XSM.
            let target = core.domain(DomId(x.domain_id)).ok_or(Errno::ESRCH)?;
            if !dom.privileged {
                return Err(Errno::EPERM);
            }
            target.st.lock().unwrap().shutdown = Some(x.reason);
            target.dead.store(true, Ordering::SeqCst);
            core.make_runnable(&target);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Where Xen's `do_set_timer_op` puts a guest's deadline (system time in
/// ns, an `s_time_t`), seen at `now`: `None` to stop the timer (0), `now`
/// for a deadline already past (or negative as a signed time), and 100 ms
/// from now for one more than 2^50 ns (about 13 days) ahead, which Xen
/// treats as a wrapped time rather than waiting for it.
pub(crate) fn xen_timer_deadline(deadline: u64, now: u64) -> Option<u64> {
    const HUGE_SHIFT: u32 = 50;
    const HUGE_DELAY_NS: u64 = 100_000_000;
    if deadline == 0 {
        return None;
    }
    let signed = deadline as i64;
    let offset = signed.saturating_sub(now as i64);
    Some(if signed < 0 || offset <= 0 {
        now
    } else if (offset >> HUGE_SHIFT) != 0 {
        now.saturating_add(HUGE_DELAY_NS)
    } else {
        deadline
    })
}

/// `set_timer_op`: one deadline per domain, raising `VIRQ_TIMER`, with
/// Xen's handling of past and far-off times ([`xen_timer_deadline`]).
pub(crate) fn set_timer_op(core: &Core, dom: &Arc<Domain>, deadline: u64) -> HResult {
    let now = core.time.peek();
    let deadline = xen_timer_deadline(deadline, now);
    let generation = {
        let mut st = dom.st.lock().unwrap();
        st.timer_gen += 1;
        st.timer = deadline;
        st.timer_gen
    };
    match deadline {
        None => {}
        Some(d) if d <= now => {
            // Already past: Xen raises the timer at once.
            dom.st.lock().unwrap().timer = None;
            core.send_virq(dom, hal::Virq::TIMER.0);
        }
        Some(d) => core.add_timer(
            core.slack(d),
            TimerKind::Virq {
                dom: dom.id,
                generation,
            },
        ),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::xen_timer_deadline;

    #[test]
    fn timer_deadlines_as_xen_takes_them() {
        let now = 5_000_000_000;
        assert_eq!(xen_timer_deadline(0, now), None, "0 stops the timer");
        assert_eq!(xen_timer_deadline(now + 10, now), Some(now + 10));
        assert_eq!(xen_timer_deadline(now - 1, now), Some(now), "past: now");
        // Negative as an s_time_t: past.
        assert_eq!(xen_timer_deadline(u64::MAX, now), Some(now));
        assert_eq!(xen_timer_deadline(1 << 63, now), Some(now));
        // More than 2^50 ns ahead: Xen fires in 100 ms instead.
        assert_eq!(
            xen_timer_deadline(now + (1 << 50), now),
            Some(now + 100_000_000)
        );
        assert_eq!(
            xen_timer_deadline(now + (1 << 50) - 1, now),
            Some(now + (1 << 50) - 1)
        );
    }
}
