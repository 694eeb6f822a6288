//! Property tests of the shared ring (`src/ring.rs`) against a simple model.
//!
//! - [`ring_matches_model`]: random sequences of front- and back-end
//!   operations, on rings of order 0 to 2, starting at random indices (mostly
//!   just below 2^32, so the indices wrap during the run). A model made of
//!   counters and the event-index rule predicts every result: the entries
//!   taken, in order, none lost or duplicated; every `Full`; the free and
//!   unconsumed counts; the shared header after each step; and every notify
//!   and final-check decision (a push notifies iff the consumer's event index
//!   lies in `(old_prod, new_prod]`).
//! - [`hostile_indices_are_rejected_or_valid`]: the same operations mixed
//!   with a hostile peer writing any value into any header index. Nothing
//!   panics; a producer index is accepted exactly when the protocol allows it
//!   (and then the counts follow from it) and is otherwise
//!   [`RingError::Overrun`] with no state changed; no end ever holds more
//!   than the ring size in entries.

use core::sync::atomic::Ordering;
use proptest::prelude::*;
use xenpal_hal::mem::{PAGE_SIZE, SharedMemory, WordMemory};
use xenpal_hal::ring::{self, BackRing, FrontRing, RingError, RingIdx};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Req {
    id: u64,
    data: [u32; 4],
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Rsp {
    id: u64,
    status: i32,
    pad: u32,
}

type Front = FrontRing<WordMemory, Req, Rsp>;
type Back = BackRing<WordMemory, Req, Rsp>;

/// Byte offsets of the shared header's indices (ring.h's `struct *_sring`).
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// The `n`th request a run sends.
fn request(n: u32) -> Req {
    Req {
        id: 0x5eed_0000_0000 | u64::from(n),
        data: [n, !n, n.rotate_left(7), 0xfeed],
    }
}

/// The response to request `req`.
fn response(req: &Req) -> Rsp {
    Rsp {
        id: req.id,
        status: (req.id as i32).wrapping_neg(),
        pad: 0,
    }
}

/// How many times to repeat an operation.
#[derive(Copy, Clone, Debug)]
enum Count {
    /// A few.
    Few(u8),
    /// Up to a little more than the ring holds (fills it, hits `Full`).
    Many(u16),
}

impl Count {
    fn get(self, size: u32) -> u32 {
        match self {
            Count::Few(n) => u32::from(n),
            Count::Many(n) => u32::from(n) % (size + 3),
        }
    }
}

/// One header index, as the hostile peer sees it.
#[derive(Copy, Clone, Debug)]
enum Field {
    ReqProd,
    ReqEvent,
    RspProd,
    RspEvent,
}

impl Field {
    fn offset(self) -> usize {
        match self {
            Field::ReqProd => REQ_PROD,
            Field::ReqEvent => REQ_EVENT,
            Field::RspProd => RSP_PROD,
            Field::RspEvent => RSP_EVENT,
        }
    }
}

/// What the hostile peer writes.
#[derive(Copy, Clone, Debug)]
enum Value {
    /// Any value.
    Any(u32),
    /// The current value plus a small (wrapping) delta: near the edge of
    /// what is valid.
    Near(i16),
}

#[derive(Copy, Clone, Debug)]
enum Op {
    FrontStage(Count),
    FrontPush,
    FrontTake(Count),
    FrontFinalCheck,
    BackTake(Count),
    BackStage(Count),
    BackPush,
    BackFinalCheck,
    /// Only in the hostile test.
    Peer(Field, Value),
}

fn count() -> impl Strategy<Value = Count> {
    prop_oneof![
        4 => (1u8..=4).prop_map(Count::Few),
        1 => any::<u16>().prop_map(Count::Many),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => count().prop_map(Op::FrontStage),
        2 => Just(Op::FrontPush),
        3 => count().prop_map(Op::FrontTake),
        1 => Just(Op::FrontFinalCheck),
        3 => count().prop_map(Op::BackTake),
        3 => count().prop_map(Op::BackStage),
        2 => Just(Op::BackPush),
        1 => Just(Op::BackFinalCheck),
    ]
}

fn hostile_op() -> impl Strategy<Value = Op> {
    let field = prop_oneof![
        Just(Field::ReqProd),
        Just(Field::ReqEvent),
        Just(Field::RspProd),
        Just(Field::RspEvent),
    ];
    let value = prop_oneof![
        any::<u32>().prop_map(Value::Any),
        (-600i16..=600).prop_map(Value::Near),
    ];
    prop_oneof![4 => op(), 1 => (field, value).prop_map(|(f, v)| Op::Peer(f, v))]
}

/// Starting index: mostly within a few ring-fulls below 2^32, so that the
/// indices wrap during the run; sometimes 0 (a fresh `init`) or anywhere.
fn start() -> impl Strategy<Value = u32> {
    prop_oneof![
        5 => (0u32..100).prop_map(|d| u32::MAX - d),
        1 => (0u32..2000).prop_map(|d| u32::MAX - d),
        1 => Just(0u32),
        1 => any::<u32>(),
    ]
}

/// A front and back end over one ring of `2^order` pages, all indices at
/// `start` (through `init` when `start` is 0, as a fresh ring).
fn rings(order: u32, start: u32) -> (Front, Back, WordMemory) {
    let mem = WordMemory::new(PAGE_SIZE << order);
    let front = if start == 0 {
        FrontRing::init(mem.clone()).unwrap()
    } else {
        ring::init_shared(&mem);
        mem.store_u32(REQ_PROD, start, Ordering::Relaxed);
        mem.store_u32(RSP_PROD, start, Ordering::Relaxed);
        mem.store_u32(REQ_EVENT, start.wrapping_add(1), Ordering::Relaxed);
        mem.store_u32(RSP_EVENT, start.wrapping_add(1), Ordering::Relaxed);
        FrontRing::attach_at(mem.clone(), RingIdx(start)).unwrap()
    };
    let back = BackRing::attach_at(mem.clone(), RingIdx(start)).unwrap();
    assert_eq!(front.size(), ring::ring_size_for_order::<Req, Rsp>(order));
    assert_eq!(back.size(), front.size());
    (front, back, mem)
}

/// The model: counts of entries in each state since the start, the shared
/// event indices, and the event-index rule.
#[derive(Debug)]
struct Model {
    start: u32,
    size: u32,
    req_staged: u32,
    req_published: u32,
    req_taken: u32,
    rsp_staged: u32,
    rsp_published: u32,
    rsp_taken: u32,
    req_event: u32,
    rsp_event: u32,
    /// Requests taken by the back end and not yet answered, in order.
    answering: std::collections::VecDeque<Req>,
}

impl Model {
    fn idx(&self, n: u32) -> u32 {
        self.start.wrapping_add(n)
    }

    fn outstanding(&self) -> u32 {
        self.req_staged - self.rsp_taken
    }

    fn unconsumed_requests(&self) -> u32 {
        let published = self.req_published - self.req_taken;
        let room = self.size - (self.req_taken - self.rsp_staged);
        published.min(room)
    }

    fn unconsumed_responses(&self) -> u32 {
        self.rsp_published - self.rsp_taken
    }

    /// Whether a push from `old` to `new` must notify a consumer whose event
    /// index is `event`: whether `event` lies in `(old, new]`, wrapping.
    fn notify(old: u32, new: u32, event: u32) -> bool {
        let d = event.wrapping_sub(old);
        d >= 1 && d <= new.wrapping_sub(old)
    }
}

/// Compare everything observable of the two ends and the header with the
/// model.
fn check_state(m: &Model, f: &Front, b: &Back, mem: &WordMemory) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.req_prod_pvt(), RingIdx(m.idx(m.req_staged)));
    prop_assert_eq!(f.rsp_cons(), RingIdx(m.idx(m.rsp_taken)));
    prop_assert_eq!(b.req_cons(), RingIdx(m.idx(m.req_taken)));
    prop_assert_eq!(b.rsp_prod_pvt(), RingIdx(m.idx(m.rsp_staged)));
    prop_assert_eq!(f.outstanding(), m.outstanding());
    prop_assert_eq!(f.free_requests(), m.size - m.outstanding());
    prop_assert_eq!(f.is_full(), m.outstanding() == m.size);
    prop_assert_eq!(b.unanswered(), m.req_taken - m.rsp_staged);
    prop_assert_eq!(b.unconsumed_requests(), Ok(m.unconsumed_requests()));
    prop_assert_eq!(f.unconsumed_responses(), Ok(m.unconsumed_responses()));
    prop_assert_eq!(
        mem.load_u32(REQ_PROD, Ordering::Relaxed),
        m.idx(m.req_published)
    );
    prop_assert_eq!(
        mem.load_u32(RSP_PROD, Ordering::Relaxed),
        m.idx(m.rsp_published)
    );
    prop_assert_eq!(mem.load_u32(REQ_EVENT, Ordering::Relaxed), m.req_event);
    prop_assert_eq!(mem.load_u32(RSP_EVENT, Ordering::Relaxed), m.rsp_event);
    Ok(())
}

fn run_model(order: u32, start: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut f, mut b, mem) = rings(order, start);
    let size = f.size();
    let mut m = Model {
        start,
        size,
        req_staged: 0,
        req_published: 0,
        req_taken: 0,
        rsp_staged: 0,
        rsp_published: 0,
        rsp_taken: 0,
        req_event: start.wrapping_add(1),
        rsp_event: start.wrapping_add(1),
        answering: Default::default(),
    };
    check_state(&m, &f, &b, &mem)?;
    for (step, &op) in ops.iter().enumerate() {
        match op {
            Op::FrontStage(k) => {
                for _ in 0..k.get(size) {
                    let r = f.stage_request(&request(m.req_staged));
                    if m.outstanding() < size {
                        prop_assert_eq!(r, Ok(RingIdx(m.idx(m.req_staged))), "step {}", step);
                        m.req_staged += 1;
                    } else {
                        prop_assert_eq!(r, Err(RingError::Full), "step {}", step);
                    }
                }
            }
            Op::FrontPush => {
                let notify = f.push_requests_and_check_notify();
                let (old, new) = (m.idx(m.req_published), m.idx(m.req_staged));
                prop_assert_eq!(
                    notify,
                    Model::notify(old, new, m.req_event),
                    "step {}",
                    step
                );
                m.req_published = m.req_staged;
            }
            Op::BackTake(k) => {
                for _ in 0..k.get(size) {
                    let r = b.take_request();
                    if m.unconsumed_requests() > 0 {
                        let want = request(m.req_taken);
                        prop_assert_eq!(r, Ok(Some(want)), "step {}", step);
                        m.answering.push_back(want);
                        m.req_taken += 1;
                    } else {
                        prop_assert_eq!(r, Ok(None), "step {}", step);
                    }
                }
            }
            Op::BackStage(k) => {
                for _ in 0..k.get(size) {
                    match m.answering.front() {
                        Some(req) => {
                            let r = b.stage_response(&response(req));
                            prop_assert_eq!(r, Ok(RingIdx(m.idx(m.rsp_staged))), "step {}", step);
                            m.answering.pop_front();
                            m.rsp_staged += 1;
                        }
                        None => {
                            let r = b.stage_response(&response(&request(0)));
                            prop_assert_eq!(r, Err(RingError::Full), "step {}", step);
                        }
                    }
                }
            }
            Op::BackPush => {
                let notify = b.push_responses_and_check_notify();
                let (old, new) = (m.idx(m.rsp_published), m.idx(m.rsp_staged));
                prop_assert_eq!(
                    notify,
                    Model::notify(old, new, m.rsp_event),
                    "step {}",
                    step
                );
                m.rsp_published = m.rsp_staged;
            }
            Op::FrontTake(k) => {
                for _ in 0..k.get(size) {
                    let r = f.take_response();
                    if m.unconsumed_responses() > 0 {
                        let want = response(&request(m.rsp_taken));
                        prop_assert_eq!(r, Ok(Some(want)), "step {}", step);
                        m.rsp_taken += 1;
                    } else {
                        prop_assert_eq!(r, Ok(None), "step {}", step);
                    }
                }
            }
            Op::BackFinalCheck => {
                let work = b.final_check_for_requests();
                if m.unconsumed_requests() == 0 {
                    m.req_event = m.idx(m.req_taken + 1);
                }
                // Single-threaded: nothing can arrive between the two checks.
                prop_assert_eq!(work, Ok(m.unconsumed_requests() > 0), "step {}", step);
            }
            Op::FrontFinalCheck => {
                let work = f.final_check_for_responses();
                if m.unconsumed_responses() == 0 {
                    m.rsp_event = m.idx(m.rsp_taken + 1);
                }
                prop_assert_eq!(work, Ok(m.unconsumed_responses() > 0), "step {}", step);
            }
            Op::Peer(..) => unreachable!("not generated for the model test"),
        }
        check_state(&m, &f, &b, &mem)?;
    }
    // Drain: everything sent comes back, once, in order.
    f.push_requests_and_check_notify();
    while let Some(req) = b.take_request().unwrap() {
        m.answering.push_back(req);
    }
    while let Some(req) = m.answering.pop_front() {
        b.stage_response(&response(&req)).unwrap();
    }
    b.push_responses_and_check_notify();
    let mut n = m.rsp_taken;
    while let Some(rsp) = f.take_response().unwrap() {
        prop_assert_eq!(rsp, response(&request(n)));
        n += 1;
    }
    prop_assert_eq!(n, m.req_staged, "every request answered once");
    prop_assert_eq!(f.free_requests(), size);
    Ok(())
}

/// Whether a response producer index `prod` is one the protocol allows the
/// front end `f` to see: between its consumer and its requests.
fn valid_rsp_prod(f: &Front, prod: u32) -> bool {
    RingIdx(prod).since(f.rsp_cons()) <= f.outstanding()
}

/// Whether a request producer index `prod` is one the protocol allows the
/// back end `b` to see: not behind its consumer, and at most a ring-full
/// ahead of its answers.
fn valid_req_prod(b: &Back, prod: u32) -> bool {
    let ahead = RingIdx(prod).since(b.rsp_prod_pvt());
    ahead <= b.size() && RingIdx(prod).since(b.req_cons()) <= ahead
}

/// Check the result of a call that read producer index `prod`, which was
/// `valid` for the caller's state before the call, whose consumer index was
/// `cons`: accepted iff valid, else `Overrun` naming both. Returns `valid`.
fn check_result<T: core::fmt::Debug>(
    valid: bool,
    prod: u32,
    cons: RingIdx,
    r: &Result<T, RingError>,
) -> Result<bool, TestCaseError> {
    if valid {
        prop_assert!(r.is_ok(), "valid producer index {} rejected: {:?}", prod, r);
    } else {
        let overrun = RingError::Overrun {
            prod: RingIdx(prod),
            cons,
        };
        prop_assert_eq!(r.as_ref().err(), Some(&overrun));
    }
    Ok(valid)
}

fn run_hostile(order: u32, start: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut f, mut b, mem) = rings(order, start);
    let size = f.size();
    let mut sent = 0u32;
    for &op in ops {
        let req_prod = mem.load_u32(REQ_PROD, Ordering::Relaxed);
        let rsp_prod = mem.load_u32(RSP_PROD, Ordering::Relaxed);
        match op {
            Op::Peer(field, value) => {
                let old = mem.load_u32(field.offset(), Ordering::Relaxed);
                let new = match value {
                    Value::Any(v) => v,
                    Value::Near(d) => old.wrapping_add(d as u32),
                };
                mem.store_u32(field.offset(), new, Ordering::Relaxed);
            }
            Op::FrontStage(k) => {
                for _ in 0..k.get(size) {
                    let full = f.is_full();
                    let r = f.stage_request(&request(sent));
                    prop_assert_eq!(r.is_err(), full);
                    sent += 1;
                }
            }
            Op::FrontPush => {
                // Any event index the peer wrote: a decision, no panic.
                f.push_requests_and_check_notify();
            }
            Op::BackPush => {
                b.push_responses_and_check_notify();
            }
            Op::FrontTake(k) => {
                for _ in 0..k.get(size) {
                    let (cons, outstanding) = (f.rsp_cons(), f.outstanding());
                    let valid = valid_rsp_prod(&f, rsp_prod);
                    let r = f.take_response();
                    if check_result(valid, rsp_prod, cons, &r)? {
                        let took = r.unwrap().is_some();
                        prop_assert_eq!(took, RingIdx(rsp_prod) != cons);
                        prop_assert_eq!(f.rsp_cons(), cons.add(u32::from(took)));
                    } else {
                        prop_assert_eq!(f.rsp_cons(), cons);
                        prop_assert_eq!(f.outstanding(), outstanding);
                    }
                }
            }
            Op::FrontFinalCheck => {
                let event = mem.load_u32(RSP_EVENT, Ordering::Relaxed);
                let valid = valid_rsp_prod(&f, rsp_prod);
                let r = f.final_check_for_responses();
                if check_result(valid, rsp_prod, f.rsp_cons(), &r)? {
                    let pending = RingIdx(rsp_prod).since(f.rsp_cons());
                    prop_assert_eq!(r, Ok(pending > 0));
                    let armed = if pending > 0 {
                        event
                    } else {
                        f.rsp_cons().add(1).0
                    };
                    prop_assert_eq!(mem.load_u32(RSP_EVENT, Ordering::Relaxed), armed);
                } else {
                    prop_assert_eq!(mem.load_u32(RSP_EVENT, Ordering::Relaxed), event);
                }
            }
            Op::BackTake(k) => {
                for _ in 0..k.get(size) {
                    let (cons, unanswered) = (b.req_cons(), b.unanswered());
                    let valid = valid_req_prod(&b, req_prod);
                    let n = b.unconsumed_requests();
                    if check_result(valid, req_prod, cons, &n)? {
                        let n = n.unwrap();
                        let published = RingIdx(req_prod).since(cons);
                        prop_assert_eq!(n, published.min(size - unanswered));
                    }
                    let r = b.take_request();
                    if check_result(valid, req_prod, cons, &r)? {
                        let took = r.unwrap().is_some();
                        prop_assert_eq!(took, n.unwrap() > 0);
                        prop_assert_eq!(b.req_cons(), cons.add(u32::from(took)));
                    } else {
                        prop_assert_eq!(b.req_cons(), cons);
                    }
                }
            }
            Op::BackStage(k) => {
                for _ in 0..k.get(size) {
                    let unanswered = b.unanswered();
                    let r = b.stage_response(&response(&request(0)));
                    prop_assert_eq!(r.is_err(), unanswered == 0);
                }
            }
            Op::BackFinalCheck => {
                let event = mem.load_u32(REQ_EVENT, Ordering::Relaxed);
                let valid = valid_req_prod(&b, req_prod);
                let r = b.final_check_for_requests();
                if check_result(valid, req_prod, b.req_cons(), &r)? {
                    let room = size - b.unanswered();
                    let pending = RingIdx(req_prod).since(b.req_cons()).min(room);
                    prop_assert_eq!(r, Ok(pending > 0));
                    let armed = if pending > 0 {
                        event
                    } else {
                        b.req_cons().add(1).0
                    };
                    prop_assert_eq!(mem.load_u32(REQ_EVENT, Ordering::Relaxed), armed);
                } else {
                    prop_assert_eq!(mem.load_u32(REQ_EVENT, Ordering::Relaxed), event);
                }
            }
        }
        // Never more than a ring-full held by either end.
        prop_assert!(f.outstanding() <= size);
        prop_assert!(b.unanswered() <= size);
        if let Ok(n) = f.unconsumed_responses() {
            prop_assert!(n <= f.outstanding());
        }
        if let Ok(n) = b.unconsumed_requests() {
            prop_assert!(n <= size - b.unanswered());
        }
    }
    // Draining either end against whatever the peer left ends within a
    // ring-full.
    let mut took = 0;
    while let Ok(Some(_)) = b.take_request() {
        took += 1;
        prop_assert!(took <= size);
    }
    took = 0;
    while let Ok(Some(_)) = f.take_response() {
        took += 1;
        prop_assert!(took <= size);
    }
    Ok(())
}

/// 256 cases per property, each up to 400 operations. Under Miri, which
/// runs every ring operation thousands of times slower, a handful of
/// shorter cases, so that `.ci/miri` stays within its time budget; and no
/// regression file, which Miri's isolation cannot open.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    if cfg!(miri) {
        config.cases = 6;
        config.failure_persistence = None;
    }
    config
}

/// The most operations in one case (see [`config`]).
const MAX_OPS: usize = if cfg!(miri) { 40 } else { 400 };

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ring_matches_model(
        order in 0u32..=2,
        start in start(),
        ops in proptest::collection::vec(op(), 1..MAX_OPS),
    ) {
        run_model(order, start, &ops)?;
    }

    #[test]
    fn hostile_indices_are_rejected_or_valid(
        order in 0u32..=2,
        start in start(),
        ops in proptest::collection::vec(hostile_op(), 1..MAX_OPS),
    ) {
        run_hostile(order, start, &ops)?;
    }
}

/// The model's notification rule is ring.h's, written differently: check
/// the two against each other across the wrap.
#[test]
fn notify_rule_is_ring_h_rule() {
    let edge = [0u32, 1, 2, 3, u32::MAX, u32::MAX - 1, u32::MAX - 2, 1 << 31];
    for &old in &edge {
        for dn in 0u32..5 {
            let new = old.wrapping_add(dn);
            for de in 0u32..8 {
                for event in [old.wrapping_add(de), old.wrapping_sub(de)] {
                    let ring_h = new.wrapping_sub(event) < new.wrapping_sub(old);
                    assert_eq!(
                        Model::notify(old, new, event),
                        ring_h,
                        "{old} {new} {event}"
                    );
                }
            }
        }
    }
}
