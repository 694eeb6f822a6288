//! Loom model of the shared ring's notification protocol (`src/ring.rs`).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p xenpal-hal --test ring_loom --release`
//! (optionally with `LOOM_MAX_PREEMPTIONS=2`; the models are small enough to
//! be explored without a bound too).
//!
//! # What is proven
//! For both directions (front to back: requests; back to front: responses),
//! one producer thread publishes 1 or 2 entries, in one push or two, with
//! `push_*_and_check_notify`, while one consumer thread drains the ring, does
//! the final check (`final_check_for_*`), drains again while that returns
//! `true`, and "sleeps" once it returns `false`. For every execution loom
//! explores (every interleaving, and every value its model of C11 atomics
//! lets a load return; without LOOM_MAX_PREEMPTIONS the exploration is
//! exhaustive, a few thousand executions per scenario):
//!
//! - **No lost wake-up.** If the consumer goes to sleep with entries it has
//!   not consumed, having armed its event index at `cons + 1`, then the push
//!   that published index `cons + 1` returned "notify". That push saw the
//!   armed event index (no earlier armed value lies in its window), so the
//!   notification it sends is sent after the consumer armed, and wakes it.
//! - **Entries arrive intact and in order.** Every entry the consumer takes
//!   is the one the producer wrote to that slot (the producer's release store
//!   of the index and the consumer's acquire load publish the slot's
//!   contents), and after the wake-up the consumer gets all of them, once.
//!
//! Each scenario runs from a fresh ring (event index at 1, so the first push
//! always notifies), after a warm-up entry the consumer took without re-arming
//! (so the event index is stale and only a fresh arm makes the producer
//! notify: the interesting race), and at indices that wrap at 2^32 during the
//! model.
//!
//! The memory is made of loom `AtomicU32` words, one per header index, so
//! `req_prod`, `req_event`, `rsp_prod` and `rsp_event` are independent
//! locations (as in real memory) and nothing but the ring's own orderings and
//! fences relates them. [`LoomMemory::fence`] forwards to loom's fence.
//!
//! # Checking the checker
//! The models fail when the ring's orderings are weakened (checked by hand,
//! editing `src/ring.rs` and rerunning; a `Relaxed` fence does not exist, so
//! "no ordering" means `AcqRel`):
//! - the `SeqCst` fence in `publish` made `AcqRel`: loom finds, in every
//!   scenario except the cold single-push ones (whose one push always
//!   notifies, the event index still being at its initial value), a consumer
//!   asleep with an entry pending after a push that did not notify;
//! - the `SeqCst` fence in `final_check_for_requests` (or
//!   `final_check_for_responses`) made `AcqRel`: the request (response)
//!   model fails likewise;
//! - the producer index stored `Relaxed` instead of `Release`: the consumer
//!   reads a slot before its contents (it sees 0).
#![cfg(loom)]

use core::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::sync::atomic::AtomicU32;
use xenpal_hal::mem::{SharedMemory, check_access};
use xenpal_hal::ring::{self, BackRing, FrontRing, RingIdx};

/// Shared memory made of loom atomic `u32` words.
///
/// 8- and 16-bit accesses are read-modify-writes of their word; 64-bit ones
/// are two 32-bit halves (not atomic as a whole; the ring never uses them).
#[derive(Clone)]
struct LoomMemory {
    words: Arc<Vec<AtomicU32>>,
}

impl LoomMemory {
    fn new(len: usize) -> Self {
        assert!(len.is_multiple_of(4));
        LoomMemory {
            words: Arc::new((0..len / 4).map(|_| AtomicU32::new(0)).collect()),
        }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        &self.words[offset / 4]
    }

    /// Replace the bits of `mask` in the word holding `offset` by those of
    /// `value`, atomically.
    fn update(&self, offset: usize, mask: u32, value: u32, order: Ordering) {
        let w = self.word(offset);
        let mut old = w.load(Ordering::Relaxed);
        loop {
            let new = (old & !mask) | (value & mask);
            match w.compare_exchange(old, new, order, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => old = actual,
            }
        }
    }
}

fn load_order(o: Ordering) -> Ordering {
    xenpal_hal::mem::load_order(o)
}

fn store_order(o: Ordering) -> Ordering {
    xenpal_hal::mem::store_order(o)
}

impl SharedMemory for LoomMemory {
    fn len(&self) -> usize {
        self.words.len() * 4
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> u8 {
        check_access(self.len(), offset, 1, 1);
        (self.word(offset).load(load_order(order)) >> ((offset % 4) * 8)) as u8
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) {
        check_access(self.len(), offset, 1, 1);
        let shift = (offset % 4) * 8;
        self.update(offset, 0xff << shift, u32::from(value) << shift, order);
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> u16 {
        check_access(self.len(), offset, 2, 2);
        (self.word(offset).load(load_order(order)) >> ((offset % 4) * 8)) as u16
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) {
        check_access(self.len(), offset, 2, 2);
        let shift = (offset % 4) * 8;
        self.update(offset, 0xffff << shift, u32::from(value) << shift, order);
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        order: Ordering,
    ) -> Result<u16, u16> {
        check_access(self.len(), offset, 2, 2);
        let shift = (offset % 4) * 8;
        let w = self.word(offset);
        let mut old = w.load(Ordering::Relaxed);
        loop {
            let cur = (old >> shift) as u16;
            if cur != current {
                return Err(cur);
            }
            let next = (old & !(0xffff << shift)) | (u32::from(new) << shift);
            match w.compare_exchange(old, next, order, load_order(order)) {
                Ok(_) => return Ok(cur),
                Err(actual) => old = actual,
            }
        }
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        check_access(self.len(), offset, 4, 4);
        self.word(offset).load(load_order(order))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        check_access(self.len(), offset, 4, 4);
        self.word(offset).store(value, store_order(order));
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        check_access(self.len(), offset, 8, 8);
        let lo = self.word(offset).load(load_order(order));
        let hi = self.word(offset + 4).load(load_order(order));
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn store_u64(&self, offset: usize, value: u64, order: Ordering) {
        check_access(self.len(), offset, 8, 8);
        self.word(offset).store(value as u32, store_order(order));
        self.word(offset + 4)
            .store((value >> 32) as u32, store_order(order));
    }

    fn fetch_or_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        check_access(self.len(), offset, 8, 8);
        let lo = self.word(offset).fetch_or(bits as u32, order);
        let hi = self.word(offset + 4).fetch_or((bits >> 32) as u32, order);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn fetch_and_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        check_access(self.len(), offset, 8, 8);
        let lo = self.word(offset).fetch_and(bits as u32, order);
        let hi = self.word(offset + 4).fetch_and((bits >> 32) as u32, order);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn swap_u64(&self, offset: usize, value: u64, order: Ordering) -> u64 {
        check_access(self.len(), offset, 8, 8);
        let lo = self.word(offset).swap(value as u32, order);
        let hi = self.word(offset + 4).swap((value >> 32) as u32, order);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        check_access(self.len(), offset, buf.len(), 1);
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i;
            // Whole aligned words are one load; the ring's 4-byte slots are.
            *b = (self.word(at).load(Ordering::Relaxed) >> ((at % 4) * 8)) as u8;
        }
    }

    fn write(&self, offset: usize, buf: &[u8]) {
        check_access(self.len(), offset, buf.len(), 1);
        let mut pos = 0;
        while pos < buf.len() {
            let at = offset + pos;
            if at.is_multiple_of(4) && buf.len() - pos >= 4 {
                let v = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap());
                self.word(at).store(v, Ordering::Relaxed);
                pos += 4;
            } else {
                self.store_u8(at, buf[pos], Ordering::Relaxed);
                pos += 1;
            }
        }
    }

    fn fence(&self, order: Ordering) {
        loom::sync::atomic::fence(order);
    }
}

/// Byte offsets of the shared header's indices (ring.h's `struct *_sring`).
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// Requests and responses are single `u32`s: one atomic word per slot.
type Entry = u32;
/// Two slots: room for the two entries a model publishes.
const RING_BYTES: usize = ring::HEADER_SIZE + 2 * 4;

/// Where a scenario starts.
#[derive(Copy, Clone, Debug)]
struct Scenario {
    /// Index all four shared indices and the private ones start at.
    start: u32,
    /// Pass one entry through the ring first, consumed without re-arming, so
    /// the consumer's event index is stale when the model starts.
    warm_up: bool,
    /// Entries per push; 1 to 2 entries in all.
    batches: &'static [u32],
}

/// The value the producer writes for the `n`th entry of a model.
fn payload(n: u32) -> Entry {
    0xa000 + n
}

/// A ring (both halves over the same loom memory) set up as `s` says, with
/// the header consistent with a ring initialised and used up to `s.start`.
fn rings(
    s: Scenario,
) -> (
    FrontRing<LoomMemory, Entry, Entry>,
    BackRing<LoomMemory, Entry, Entry>,
) {
    let mem = LoomMemory::new(RING_BYTES);
    let front = if s.start == 0 {
        FrontRing::init(mem.clone()).unwrap()
    } else {
        ring::init_shared(&mem);
        for off in [REQ_PROD, RSP_PROD] {
            mem.store_u32(off, s.start, Ordering::Relaxed);
        }
        for off in [REQ_EVENT, RSP_EVENT] {
            mem.store_u32(off, s.start.wrapping_add(1), Ordering::Relaxed);
        }
        FrontRing::attach_at(mem.clone(), RingIdx(s.start)).unwrap()
    };
    let back = BackRing::attach_at(mem, RingIdx(s.start)).unwrap();
    assert_eq!(front.size(), 2);
    (front, back)
}

/// One push as the producer saw it: the producer index before and after,
/// and whether it decided to notify.
#[derive(Copy, Clone, Debug)]
struct Push {
    old: RingIdx,
    new: RingIdx,
    notify: bool,
}

/// What the consumer did before sleeping.
#[derive(Debug)]
struct Sleep {
    got: Vec<Entry>,
    /// The event index it armed in its last (sleep-deciding) final check.
    armed: RingIdx,
}

/// The no-lost-wake-up check shared by both directions.
///
/// `cons` is the consumer's index when it went to sleep, `published` the
/// producer's final index.
fn check_wake_up(s: Scenario, pushes: &[Push], sleep: &Sleep, cons: RingIdx, published: RingIdx) {
    assert_eq!(sleep.armed, cons.add(1), "{s:?}: armed at cons + 1");
    if published == cons {
        return; // Nothing pending: sleeping is fine, no wake-up needed.
    }
    // The push whose window (old, new] holds the armed index must notify.
    let crossing = pushes
        .iter()
        .find(|p| {
            let d = sleep.armed.since(p.old);
            d >= 1 && d <= p.new.since(p.old)
        })
        .unwrap_or_else(|| panic!("{s:?}: no push published the armed index; {pushes:?}"));
    assert!(
        crossing.notify,
        "{s:?}: lost wake-up: consumer sleeps at {cons:?} (armed {:?}) with entries up \
         to {published:?} pending, but the push {crossing:?} did not notify; pushes {pushes:?}",
        sleep.armed
    );
}

/// Front end pushes requests; back end drains, final-checks, sleeps.
fn requests(s: Scenario) {
    let (mut front, mut back) = rings(s);
    let mut next = 0;
    if s.warm_up {
        front.stage_request(&payload(99)).unwrap();
        front.push_requests_and_check_notify();
        assert_eq!(back.take_request().unwrap(), Some(payload(99)));
        back.stage_response(&0).unwrap();
        back.push_responses_and_check_notify();
        assert_eq!(front.take_response().unwrap(), Some(0));
    }
    let total: u32 = s.batches.iter().sum();

    let producer = loom::thread::spawn(move || {
        let mut pushes = Vec::new();
        for &n in s.batches {
            let old = front.req_prod_pvt();
            for _ in 0..n {
                front.stage_request(&payload(next)).unwrap();
                next += 1;
            }
            let notify = front.push_requests_and_check_notify();
            pushes.push(Push {
                old,
                new: front.req_prod_pvt(),
                notify,
            });
        }
        (front, pushes)
    });
    let consumer = loom::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            while let Some(r) = back.take_request().unwrap() {
                assert_eq!(r, payload(got.len() as u32), "{s:?}: request contents");
                got.push(r);
            }
            if !back.final_check_for_requests().unwrap() {
                let armed = back.req_cons().add(1);
                return (back, Sleep { got, armed });
            }
        }
    });
    let (front, pushes) = producer.join().unwrap();
    let (mut back, sleep) = consumer.join().unwrap();

    check_wake_up(s, &pushes, &sleep, back.req_cons(), front.req_prod_pvt());
    // The notification wakes the back end, which finds the rest.
    let mut got = sleep.got;
    while let Some(r) = back.take_request().unwrap() {
        got.push(r);
    }
    assert_eq!(got, (0..total).map(payload).collect::<Vec<_>>(), "{s:?}");
}

/// Back end pushes responses; front end drains, final-checks, sleeps.
fn responses(s: Scenario) {
    let (mut front, mut back) = rings(s);
    if s.warm_up {
        front.stage_request(&99).unwrap();
        front.push_requests_and_check_notify();
        assert_eq!(back.take_request().unwrap(), Some(99));
        back.stage_response(&payload(99)).unwrap();
        back.push_responses_and_check_notify();
        assert_eq!(front.take_response().unwrap(), Some(payload(99)));
    }
    let total: u32 = s.batches.iter().sum();
    // The requests being answered, outstanding before the model starts.
    for i in 0..total {
        front.stage_request(&i).unwrap();
    }
    front.push_requests_and_check_notify();
    for i in 0..total {
        assert_eq!(back.take_request().unwrap(), Some(i));
    }

    let producer = loom::thread::spawn(move || {
        let mut pushes = Vec::new();
        let mut next = 0;
        for &n in s.batches {
            let old = back.rsp_prod_pvt();
            for _ in 0..n {
                back.stage_response(&payload(next)).unwrap();
                next += 1;
            }
            let notify = back.push_responses_and_check_notify();
            pushes.push(Push {
                old,
                new: back.rsp_prod_pvt(),
                notify,
            });
        }
        (back, pushes)
    });
    let consumer = loom::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            while let Some(r) = front.take_response().unwrap() {
                assert_eq!(r, payload(got.len() as u32), "{s:?}: response contents");
                got.push(r);
            }
            if !front.final_check_for_responses().unwrap() {
                let armed = front.rsp_cons().add(1);
                return (front, Sleep { got, armed });
            }
        }
    });
    let (back, pushes) = producer.join().unwrap();
    let (mut front, sleep) = consumer.join().unwrap();

    check_wake_up(s, &pushes, &sleep, front.rsp_cons(), back.rsp_prod_pvt());
    let mut got = sleep.got;
    while let Some(r) = front.take_response().unwrap() {
        got.push(r);
    }
    assert_eq!(got, (0..total).map(payload).collect::<Vec<_>>(), "{s:?}");
    assert_eq!(front.free_requests(), front.size());
}

/// Every scenario: both batchings of two entries and a single entry, cold
/// and warm, at index 0 and across the 2^32 wrap.
fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    for start in [0, u32::MAX] {
        for warm_up in [false, true] {
            for batches in [&[1][..], &[2], &[1, 1]] {
                v.push(Scenario {
                    start,
                    warm_up,
                    batches,
                });
            }
        }
    }
    v
}

/// Explore every execution of `f` (within LOOM_MAX_PREEMPTIONS, if set) and
/// return how many there were.
fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    // `Builder::new` honours LOOM_MAX_PREEMPTIONS and the other LOOM_* knobs.
    loom::model::Builder::new().check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    runs.load(Ordering::Relaxed)
}

fn check_all(name: &str, f: fn(Scenario)) {
    for s in scenarios() {
        let runs = model(move || f(s));
        eprintln!("{name}: {s:?}: {runs} executions");
        assert!(runs > 1, "a model with two threads has several executions");
    }
}

#[test]
fn requests_never_lose_a_wake_up() {
    check_all("requests", requests);
}

#[test]
fn responses_never_lose_a_wake_up() {
    check_all("responses", responses);
}
