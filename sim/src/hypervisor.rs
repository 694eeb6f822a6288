//! The hypervisor's state: its domains (each a `domain.rs` [`Domain`]),
//! virtual time, the run queues, and the trace that makes runs comparable. The 2-level event bitmaps are
//! `event_2l.rs`'s and the timers `timer.rs`'s, as in Xen's `common/`.

use crate::domain::{Domain, Service};
use hal::{DomId, Instant};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Something the scheduler can run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Task {
    Domain(DomId),
    Service(Service),
}

/// What a timer does when it expires.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// `set_timer_op` deadline: raise VIRQ_TIMER (if still current).
    Virq { dom: DomId, generation: u64 },
    /// `SCHEDOP_poll` timeout: wake the domain (if still polling).
    Poll { dom: DomId, generation: u64 },
    /// A service's run, delayed (`SimConfig::xenstore_delay`): queue it.
    Service(Service),
}

/// Virtual or real time.
pub(crate) enum TimeSource {
    /// Deterministic mode: time moves only when the scheduler jumps it, plus
    /// `read_cost` per guest clock read (so spinning on the clock ends).
    Virtual { now: AtomicU64, read_cost: u64 },
    /// Free-running mode: nanoseconds since the simulator started.
    Real { start: std::time::Instant },
}

/// Add `by` to `t`, stopping at `u64::MAX`; returns the value before.
fn saturating_fetch_add(t: &AtomicU64, by: u64) -> u64 {
    let mut cur = t.load(Ordering::SeqCst);
    loop {
        match t.compare_exchange_weak(
            cur,
            cur.saturating_add(by),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(before) => return before,
            Err(now) => cur = now,
        }
    }
}

impl TimeSource {
    /// Current time, as the scheduler sees it (no read cost).
    pub(crate) fn peek(&self) -> u64 {
        match self {
            TimeSource::Virtual { now, .. } => now.load(Ordering::SeqCst),
            TimeSource::Real { start } => start.elapsed().as_nanos() as u64,
        }
    }

    /// Current time as a guest reads it.
    pub(crate) fn read(&self) -> u64 {
        match self {
            TimeSource::Virtual { now, read_cost } => saturating_fetch_add(now, *read_cost),
            TimeSource::Real { start } => start.elapsed().as_nanos() as u64,
        }
    }

    /// Let `ns` of virtual time pass (deterministic mode). Saturating:
    /// time never wraps to the past.
    pub(crate) fn charge(&self, ns: u64) {
        if let TimeSource::Virtual { now, .. } = self {
            saturating_fetch_add(now, ns);
        }
    }

    /// Jump virtual time forward to `t` (never backwards).
    pub(crate) fn advance_to(&self, t: u64) {
        if let TimeSource::Virtual { now, .. } = self {
            now.fetch_max(t, Ordering::SeqCst);
        }
    }
}

std::thread_local! {
    /// When this thread last queued a task for a free-running worker (see
    /// `sched::pick`, which spins for an answer after handing work over).
    pub(crate) static HANDED_OVER: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// One worker's queue in free-running mode.
#[derive(Default)]
pub(crate) struct WorkerQueue {
    pub q: Mutex<VecDeque<Task>>,
    pub cv: Condvar,
    /// Tasks queued (read without the lock by a worker spinning for work).
    pub len: AtomicUsize,
    /// The worker is (about to be) asleep on `cv`: only then does queueing
    /// a task wake it (see `sched::pick`).
    pub sleeping: AtomicBool,
}

/// Run queues.
pub(crate) enum Queues {
    /// Deterministic mode: one set, picked from at random.
    Det(Mutex<Vec<Task>>),
    /// Free-running mode: one queue per worker thread.
    Free(Vec<WorkerQueue>),
}

/// A small, fast, seedable PRNG (SplitMix64), so runs are reproducible
/// without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `true` with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The trace: a running hash of everything observable that happened, and
/// optionally the events themselves.
#[derive(Default)]
pub(crate) struct Trace {
    pub hash: u64,
    pub events: u64,
    pub log: Option<Vec<String>>,
}

impl Trace {
    pub(crate) fn record(&mut self, words: &[u64], text: impl FnOnce() -> String) {
        // FNV-1a over the words: stable across runs and platforms.
        let mut h = if self.events == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.hash
        };
        for w in words {
            for b in w.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        self.hash = h;
        self.events += 1;
        if let Some(log) = &mut self.log {
            log.push(text());
        }
    }
}

/// The hypervisor.
pub(crate) struct Core {
    pub domains: RwLock<Vec<Option<Arc<Domain>>>>,
    pub time: TimeSource,
    pub timers: Mutex<BinaryHeap<Reverse<(u64, u64, TimerKind)>>>,
    pub timer_seq: AtomicU64,
    pub timer_cv: Condvar,
    pub queues: Queues,
    pub trace: Mutex<Trace>,
    pub xenstored: Mutex<xenpal_xenstored::Xenstored>,
    pub svc_pending: Mutex<std::collections::BTreeSet<(Service, DomId)>>,
    pub xsm_silo: bool,
    pub seed: u64,
    /// See `SimConfig::timer_slop` (nanoseconds), and its generator.
    pub timer_slop: u64,
    pub timer_rng: Mutex<Rng>,
    /// See `SimConfig::xenstore_delay` (nanoseconds), and its generator.
    pub xenstore_delay: u64,
    pub xenstore_rng: Mutex<Rng>,
    pub echo_console: bool,
    /// Where console output is also written, prefixed, if anywhere.
    pub console_file: Option<Mutex<std::fs::File>>,
    /// Guests not yet exited.
    pub live: std::sync::atomic::AtomicUsize,
    pub exit_lock: Mutex<()>,
    pub exit_cv: Condvar,
}

impl Core {
    pub(crate) fn domain(&self, id: DomId) -> Option<Arc<Domain>> {
        self.domains
            .read()
            .unwrap()
            .get(id.0 as usize)
            .and_then(|d| d.clone())
    }

    /// Resolve `DOMID_SELF` to `me`.
    pub(crate) fn resolve(&self, me: &Arc<Domain>, id: DomId) -> Option<Arc<Domain>> {
        if id == DomId::SELF || id == me.id {
            Some(me.clone())
        } else {
            self.domain(id)
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(self.time.peek())
    }

    pub(crate) fn trace(&self, words: &[u64], text: impl FnOnce() -> String) {
        self.trace.lock().unwrap().record(words, text);
    }

    /// A domain's console output (from `console_io` or its PV console):
    /// kept in its capture, and, if asked, written line by line, prefixed
    /// with its name, to stdout and/or the console file.
    pub(crate) fn console_out(&self, dom: &Domain, bytes: &[u8]) {
        dom.append_console(bytes);
        if !self.echo_console && self.console_file.is_none() {
            return;
        }
        let mut lines = Vec::new();
        {
            let mut pending = dom.echo_line.lock().unwrap();
            pending.extend_from_slice(bytes);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                lines.push(pending.drain(..=i).collect::<Vec<u8>>());
            }
            // A guest that never ends its line must not grow this forever.
            if pending.len() > 4096 {
                let mut l = std::mem::take(&mut *pending);
                l.push(b'\n');
                lines.push(l);
            }
        }
        for l in lines {
            self.emit_console_line(&dom.name, &l);
        }
    }

    /// Emit what is left of a dying domain's last line.
    pub(crate) fn flush_console_line(&self, dom: &Domain) {
        let mut l = std::mem::take(&mut *dom.echo_line.lock().unwrap());
        if !l.is_empty() {
            l.push(b'\n');
            self.emit_console_line(&dom.name, &l);
        }
    }

    fn emit_console_line(&self, name: &str, line: &[u8]) {
        use std::io::Write;
        let text = format!("[{name}] {}", String::from_utf8_lossy(line));
        if self.echo_console {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        if let Some(f) = &self.console_file {
            let _ = f.lock().unwrap().write_all(text.as_bytes());
        }
    }

    /// Put `task` on a run queue.
    pub(crate) fn enqueue(&self, task: Task, worker: usize) {
        match &self.queues {
            Queues::Det(set) => set.lock().unwrap().push(task),
            Queues::Free(workers) => {
                let w = &workers[worker % workers.len()];
                w.q.lock().unwrap().push_back(task);
                w.len.fetch_add(1, Ordering::SeqCst);
                if w.sleeping.load(Ordering::SeqCst) {
                    w.cv.notify_one();
                }
                HANDED_OVER.with(|h| h.set(Some(std::time::Instant::now())));
            }
        }
    }

    /// Queue `dom` unless it is queued already or dead.
    pub(crate) fn make_runnable(&self, dom: &Domain) {
        if dom.dead.load(Ordering::SeqCst) {
            return;
        }
        if !dom.queued.swap(true, Ordering::SeqCst) {
            self.enqueue(Task::Domain(dom.id), dom.worker);
        }
    }

    /// Wake `dom` if it is blocked (Xen's `vcpu_kick` / unblock).
    pub(crate) fn kick(&self, dom: &Domain) {
        if dom.blocked.swap(false, Ordering::SeqCst) {
            self.make_runnable(dom);
        }
    }

    /// Raise `virq` on `dom` if bound.
    pub(crate) fn send_virq(&self, dom: &Domain, virq: u32) {
        let port = dom
            .st
            .lock()
            .unwrap()
            .virqs
            .get(virq as usize)
            .copied()
            .unwrap_or(0);
        if port != 0 {
            self.set_pending(dom, port);
        }
    }
}
