//! Differential test of `xenpal_hal::ring` against Xen's own ring macros.
//!
//! `c/ring_shim.c` (built by `build.rs`) wraps `<xen/io/ring.h>`:
//! `XEN_FRONT_RING_INIT`, `FRONT_RING_ATTACH`, `BACK_RING_ATTACH`,
//! `RING_PUSH_*_AND_CHECK_NOTIFY`, `RING_FINAL_CHECK_FOR_*`,
//! `RING_HAS_UNCONSUMED_*`, `RING_FREE_REQUESTS`, `RING_FULL`,
//! `RING_COPY_*`, `__CONST_RING_SIZE`.
//!
//! Each run drives four rings, each on its own page(s), with the same random
//! sequence of operations (fixed-seed PRNG): C front and C back; Rust front
//! and Rust back (`FrontRing`/`BackRing` over `RawMemory`); C front and Rust
//! back; Rust front and C back. The last two exchange data across the two
//! implementations on the same page. After every step, all four pages must
//! be byte-for-byte identical, and every result must agree across the four:
//! each notify decision, each final check, each entry taken (which must also
//! be the next one sent: nothing lost, duplicated or reordered), each `Full`,
//! and the private indices and free/unconsumed counts.
//!
//! Runs cover two request/response pairs with different slot sizes (24 and
//! 12 bytes), rings of 1, 2 and 4 pages, and starting indices of 0 (a fresh
//! `init`), just below 2^32 (so the indices wrap during the run) and random.
//!
//! The `mixed_*` tests put one implementation's front end and the other's
//! back end on one page and run them as event-driven drivers do (each end
//! runs only when notified, drains, final-checks): every request must be
//! answered, in order, with no wake-up lost between the two.

use core::ffi::c_void;
use core::fmt::Debug;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::rc::Rc;
use xenpal_hal::mem::{PAGE_SIZE, SharedMemory};
use xenpal_hal::ring::{self, BackRing, FrontRing, RingEntry, RingIdx};
use xenpal_xen_pv::shm::RawMemory;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

#[link(name = "ring_shim", kind = "static")]
unsafe extern "C" {
    fn shim_slot_size(kind: i32) -> usize;
    fn shim_ring_size(kind: i32, bytes: usize) -> u32;
    fn shim_front_new(kind: i32, page: *mut u8, bytes: usize, start: u32) -> *mut c_void;
    fn shim_back_new(kind: i32, page: *mut u8, bytes: usize, start: u32) -> *mut c_void;
    fn shim_front_state(kind: i32, ring: *mut c_void, out: *mut [u32; 5]) -> i32;
    fn shim_back_state(kind: i32, ring: *mut c_void, out: *mut [u32; 5]) -> i32;
    fn shim_front_stage(kind: i32, ring: *mut c_void, req: *const c_void) -> i32;
    fn shim_front_push(kind: i32, ring: *mut c_void) -> i32;
    fn shim_front_take(kind: i32, ring: *mut c_void, rsp: *mut c_void) -> i32;
    fn shim_front_final_check(kind: i32, ring: *mut c_void) -> i32;
    fn shim_back_take(kind: i32, ring: *mut c_void, req: *mut c_void) -> i32;
    fn shim_back_stage(kind: i32, ring: *mut c_void, rsp: *const c_void) -> i32;
    fn shim_back_push(kind: i32, ring: *mut c_void) -> i32;
    fn shim_back_final_check(kind: i32, ring: *mut c_void) -> i32;
    fn shim_ring_free(ring: *mut c_void);
}

/// A request/response pair, defined identically in `c/ring_shim.c`.
trait Pair: 'static {
    /// The shim's `kind` for this pair.
    const KIND: i32;
    type Req: RingEntry + Debug + PartialEq;
    type Rsp: RingEntry + Debug + PartialEq;
    /// The `n`th request sent.
    fn request(n: u32) -> Self::Req;
    /// The response to `req`.
    fn response(req: &Self::Req) -> Self::Rsp;
}

/// 24-byte requests, 16-byte responses: 24-byte slots.
struct A;
#[derive(Copy, Clone, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ReqA {
    id: u64,
    data: [u32; 4],
}
#[derive(Copy, Clone, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RspA {
    id: u64,
    status: i32,
    pad: u32,
}

impl Pair for A {
    const KIND: i32 = 0;
    type Req = ReqA;
    type Rsp = RspA;
    fn request(n: u32) -> ReqA {
        ReqA {
            id: 0xa000_0000_0000 | u64::from(n),
            data: [n, !n, n.rotate_left(9), 0xa5a5_a5a5],
        }
    }
    fn response(req: &ReqA) -> RspA {
        RspA {
            id: req.id,
            status: (req.data[0] as i32).wrapping_neg(),
            pad: req.data[2],
        }
    }
}

/// 12-byte requests, 8-byte responses: 12-byte slots (4-byte aligned).
struct B;
#[derive(Copy, Clone, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct ReqB {
    id: u32,
    x: u32,
    y: u32,
}
#[derive(Copy, Clone, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct RspB {
    id: u32,
    status: i16,
    pad: u16,
}

impl Pair for B {
    const KIND: i32 = 1;
    type Req = ReqB;
    type Rsp = RspB;
    fn request(n: u32) -> ReqB {
        ReqB {
            id: n ^ 0xb000_0000,
            x: n.wrapping_mul(2_654_435_761),
            y: !n,
        }
    }
    fn response(req: &ReqB) -> RspB {
        RspB {
            id: req.id,
            status: req.x as i16,
            pad: (req.y >> 16) as u16,
        }
    }
}

// The sizes `c/ring_shim.c` asserts for its structs, which it copies in and
// out through our pointers.
const _: () = assert!(size_of::<ReqA>() == 24 && size_of::<RspA>() == 16);
const _: () = assert!(size_of::<ReqB>() == 12 && size_of::<RspB>() == 8);

/// Zeroed, 8-byte aligned memory for a ring, reached only through raw
/// pointers (by the C code) and `RawMemory` handles once created.
struct Page {
    ptr: NonNull<u8>,
    len: usize,
    /// Owns the memory; never accessed directly.
    _buf: Vec<u64>,
}

impl Page {
    fn new(order: u32) -> Rc<Page> {
        let len = PAGE_SIZE << order;
        let mut buf = vec![0u64; len / 8];
        let ptr = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        Rc::new(Page {
            ptr,
            len,
            _buf: buf,
        })
    }

    fn memory(&self) -> RawMemory {
        // SAFETY: `ptr..ptr + len` is the heap block of `_buf`: valid for
        // reads and writes, 8-aligned (`u64`s), and alive as long as `self`,
        // which every holder of a handle keeps alive (`Rc<Page>`). In this
        // program it is accessed only through `RawMemory` handles and by the
        // C shim, which stands in for the peer domain; everything runs on one
        // thread, so the C code's plain accesses never overlap ours.
        unsafe { RawMemory::new(self.ptr, self.len) }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.memory().read(0, &mut v);
        v
    }
}

/// The private state and counts of a front end, for comparison.
#[derive(Debug, PartialEq, Eq)]
struct FrontState {
    req_prod_pvt: u32,
    rsp_cons: u32,
    free_requests: u32,
    full: bool,
    unconsumed_responses: u32,
}

/// Likewise for a back end.
#[derive(Debug, PartialEq, Eq)]
struct BackState {
    rsp_prod_pvt: u32,
    req_cons: u32,
    size: u32,
    unconsumed_requests: u32,
}

/// A front end: Xen's or ours.
trait Front<P: Pair> {
    /// Stage `req`; false if the ring is full.
    fn stage(&mut self, req: &P::Req) -> bool;
    fn push(&mut self) -> bool;
    fn take(&mut self) -> Option<P::Rsp>;
    fn final_check(&mut self) -> bool;
    fn state(&self) -> FrontState;
}

/// A back end: Xen's or ours.
trait Back<P: Pair> {
    fn take(&mut self) -> Option<P::Req>;
    /// Stage `rsp`; false if every taken request is answered.
    fn stage(&mut self, rsp: &P::Rsp) -> bool;
    fn push(&mut self) -> bool;
    fn final_check(&mut self) -> bool;
    fn state(&self) -> BackState;
}

/// A ring half made by the C shim, on `page`.
struct CRing<P> {
    ring: *mut c_void,
    _page: Rc<Page>,
    _pair: core::marker::PhantomData<P>,
}

impl<P: Pair> CRing<P> {
    fn front(page: &Rc<Page>, start: u32) -> Self {
        // SAFETY: the page is `len` valid, writable, 8-aligned bytes that
        // outlive the ring (we hold an `Rc`); the shim initialises its header
        // and returns a heap-allocated `front_ring` of our `KIND`. No access
        // through a `RawMemory` handle runs concurrently (one thread).
        let ring = unsafe { shim_front_new(P::KIND, page.ptr.as_ptr(), page.len, start) };
        CRing {
            ring,
            _page: page.clone(),
            _pair: core::marker::PhantomData,
        }
    }

    fn back(page: &Rc<Page>, start: u32) -> Self {
        // SAFETY: as for `front`; `BACK_RING_ATTACH` only records the page.
        let ring = unsafe { shim_back_new(P::KIND, page.ptr.as_ptr(), page.len, start) };
        CRing {
            ring,
            _page: page.clone(),
            _pair: core::marker::PhantomData,
        }
    }
}

impl<P> Drop for CRing<P> {
    fn drop(&mut self) {
        // SAFETY: `ring` came from the shim's `malloc` and is freed once.
        unsafe { shim_ring_free(self.ring) }
    }
}

// Every call below passes a ring made by `CRing::front`/`back` for the same
// `KIND`, whose page is alive (held by `_page`), on the only thread that
// touches that page; entry pointers point to live values of the pair's types,
// which have the C structs' layout (the shim checks the sizes; the results
// are compared with the Rust side's).
impl<P: Pair> Front<P> for CRing<P> {
    fn stage(&mut self, req: &P::Req) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls); `req` is a live `P::Req`.
        unsafe { shim_front_stage(P::KIND, self.ring, (req as *const P::Req).cast()) != 0 }
    }
    fn push(&mut self) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls).
        unsafe { shim_front_push(P::KIND, self.ring) != 0 }
    }
    fn take(&mut self) -> Option<P::Rsp> {
        let mut rsp = P::Rsp::new_zeroed();
        // SAFETY: valid ring and page (see the comment above these impls); `rsp` is a writable `P::Rsp`, and any bit
        // pattern is a valid one (`FromBytes`).
        let took = unsafe { shim_front_take(P::KIND, self.ring, (&mut rsp as *mut P::Rsp).cast()) };
        (took != 0).then_some(rsp)
    }
    fn final_check(&mut self) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls).
        unsafe { shim_front_final_check(P::KIND, self.ring) != 0 }
    }
    fn state(&self) -> FrontState {
        let mut s = [0u32; 5];
        // SAFETY: valid ring and page (see the comment above these impls); `s` has room for the five values written.
        unsafe { shim_front_state(P::KIND, self.ring, &mut s) };
        FrontState {
            req_prod_pvt: s[0],
            rsp_cons: s[1],
            free_requests: s[2],
            full: s[3] != 0,
            unconsumed_responses: s[4],
        }
    }
}

impl<P: Pair> Back<P> for CRing<P> {
    fn take(&mut self) -> Option<P::Req> {
        let mut req = P::Req::new_zeroed();
        // SAFETY: valid ring and page (see the comment above these impls); `req` is a writable `P::Req` (`FromBytes`).
        let took = unsafe { shim_back_take(P::KIND, self.ring, (&mut req as *mut P::Req).cast()) };
        (took != 0).then_some(req)
    }
    fn stage(&mut self, rsp: &P::Rsp) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls); `rsp` is a live `P::Rsp`.
        unsafe { shim_back_stage(P::KIND, self.ring, (rsp as *const P::Rsp).cast()) != 0 }
    }
    fn push(&mut self) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls).
        unsafe { shim_back_push(P::KIND, self.ring) != 0 }
    }
    fn final_check(&mut self) -> bool {
        // SAFETY: valid ring and page (see the comment above these impls).
        unsafe { shim_back_final_check(P::KIND, self.ring) != 0 }
    }
    fn state(&self) -> BackState {
        let mut s = [0u32; 5];
        // SAFETY: valid ring and page (see the comment above these impls); `s` has room for the five values written.
        unsafe { shim_back_state(P::KIND, self.ring, &mut s) };
        BackState {
            rsp_prod_pvt: s[0],
            req_cons: s[1],
            size: s[2],
            unconsumed_requests: s[4],
        }
    }
}

/// Our front end, holding its page alive.
struct RustFront<P: Pair> {
    ring: FrontRing<RawMemory, P::Req, P::Rsp>,
    _page: Rc<Page>,
}

impl<P: Pair> RustFront<P> {
    fn new(page: &Rc<Page>, start: u32) -> Self {
        let mem = page.memory();
        let ring = if start == 0 {
            FrontRing::init(mem).unwrap()
        } else {
            // What the shim does: SHARED_RING_INIT, then the indices as if
            // the ring had been used up to `start`, then attach.
            ring::init_shared(&mem);
            for off in [0, 8] {
                mem.store_u32(off, start, Ordering::Relaxed);
            }
            for off in [4, 12] {
                mem.store_u32(off, start.wrapping_add(1), Ordering::Relaxed);
            }
            FrontRing::attach_at(mem, RingIdx(start)).unwrap()
        };
        RustFront {
            ring,
            _page: page.clone(),
        }
    }
}

impl<P: Pair> Front<P> for RustFront<P> {
    fn stage(&mut self, req: &P::Req) -> bool {
        match self.ring.stage_request(req) {
            Ok(_) => true,
            Err(ring::RingError::Full) => false,
            Err(e) => panic!("stage_request: {e}"),
        }
    }
    fn push(&mut self) -> bool {
        self.ring.push_requests_and_check_notify()
    }
    fn take(&mut self) -> Option<P::Rsp> {
        self.ring.take_response().unwrap()
    }
    fn final_check(&mut self) -> bool {
        self.ring.final_check_for_responses().unwrap()
    }
    fn state(&self) -> FrontState {
        FrontState {
            req_prod_pvt: self.ring.req_prod_pvt().0,
            rsp_cons: self.ring.rsp_cons().0,
            free_requests: self.ring.free_requests(),
            full: self.ring.is_full(),
            unconsumed_responses: self.ring.unconsumed_responses().unwrap(),
        }
    }
}

/// Our back end, holding its page alive.
struct RustBack<P: Pair> {
    ring: BackRing<RawMemory, P::Req, P::Rsp>,
    _page: Rc<Page>,
}

impl<P: Pair> RustBack<P> {
    fn new(page: &Rc<Page>, start: u32) -> Self {
        RustBack {
            ring: BackRing::attach_at(page.memory(), RingIdx(start)).unwrap(),
            _page: page.clone(),
        }
    }
}

impl<P: Pair> Back<P> for RustBack<P> {
    fn take(&mut self) -> Option<P::Req> {
        self.ring.take_request().unwrap()
    }
    fn stage(&mut self, rsp: &P::Rsp) -> bool {
        match self.ring.stage_response(rsp) {
            Ok(_) => true,
            Err(ring::RingError::Full) => false,
            Err(e) => panic!("stage_response: {e}"),
        }
    }
    fn push(&mut self) -> bool {
        self.ring.push_responses_and_check_notify()
    }
    fn final_check(&mut self) -> bool {
        self.ring.final_check_for_requests().unwrap()
    }
    fn state(&self) -> BackState {
        BackState {
            rsp_prod_pvt: self.ring.rsp_prod_pvt().0,
            req_cons: self.ring.req_cons().0,
            size: self.ring.size(),
            unconsumed_requests: self.ring.unconsumed_requests().unwrap(),
        }
    }
}

/// One ring: a front end and a back end on one page.
struct Lane<P: Pair> {
    name: &'static str,
    front: Box<dyn Front<P>>,
    back: Box<dyn Back<P>>,
    page: Rc<Page>,
}

/// The four combinations, each on a fresh page of `2^order` pages, all
/// indices at `start`.
fn lanes<P: Pair>(order: u32, start: u32) -> Vec<Lane<P>> {
    let mut v = Vec::new();
    for (name, c_front, c_back) in [
        ("C/C", true, true),
        ("Rust/Rust", false, false),
        ("C front/Rust back", true, false),
        ("Rust front/C back", false, true),
    ] {
        let page = Page::new(order);
        let front: Box<dyn Front<P>> = if c_front {
            Box::new(CRing::<P>::front(&page, start))
        } else {
            Box::new(RustFront::<P>::new(&page, start))
        };
        let back: Box<dyn Back<P>> = if c_back {
            Box::new(CRing::<P>::back(&page, start))
        } else {
            Box::new(RustBack::<P>::new(&page, start))
        };
        v.push(Lane {
            name,
            front,
            back,
            page,
        });
    }
    v
}

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Apply `op` to every lane; all must give the same result.
fn same<P: Pair, T: PartialEq + Debug>(
    lanes: &mut [Lane<P>],
    what: &str,
    mut op: impl FnMut(&mut Lane<P>) -> T,
) -> T {
    let mut results: Vec<(&str, T)> = Vec::new();
    for lane in lanes.iter_mut() {
        let r = op(lane);
        results.push((lane.name, r));
    }
    let (first_name, first) = &results[0];
    for (name, r) in &results[1..] {
        assert_eq!(r, first, "{what}: {name} disagrees with {first_name}");
    }
    results.swap_remove(0).1
}

/// All pages must hold the same bytes; on a difference, say where.
fn same_pages<P: Pair>(lanes: &[Lane<P>], what: &str) {
    let first = lanes[0].page.bytes();
    for lane in &lanes[1..] {
        let other = lane.page.bytes();
        if let Some(at) = (0..first.len()).find(|&i| first[i] != other[i]) {
            let end = (at + 16).min(first.len());
            panic!(
                "{what}: page of {} differs from {} at byte {at:#x} ({}): {:02x?} vs {:02x?}",
                lane.name,
                lanes[0].name,
                if at < ring::HEADER_SIZE {
                    "header"
                } else {
                    "slots"
                },
                &other[at..end],
                &first[at..end],
            );
        }
    }
}

/// Counters of one run, for the summary and the final checks.
#[derive(Default, Debug)]
struct Stats {
    notify: [u32; 2],
    final_check: [u32; 2],
    full: u32,
    /// Runs whose responses crossed index 2^32.
    wrapped: u32,
}

/// One run: `steps` random operations on four lanes; returns what happened.
fn run<P: Pair>(seed: u64, order: u32, start: u32, steps: usize) -> Stats {
    let mut rng = Rng(seed | 1);
    let mut lanes = lanes::<P>(order, start);
    // SAFETY: the shim's functions take plain values; `KIND` is valid.
    let (c_size, c_slot) = unsafe {
        (
            shim_ring_size(P::KIND, PAGE_SIZE << order),
            shim_slot_size(P::KIND),
        )
    };
    assert_eq!(c_slot, ring::slot_size::<P::Req, P::Rsp>(), "slot size");
    assert_eq!(
        c_size,
        ring::ring_size_for_order::<P::Req, P::Rsp>(order),
        "ring size"
    );
    let size = c_size;
    let ctx = format!(
        "seed {seed} kind {} order {order} start {start:#x}",
        P::KIND
    );

    let mut sent = 0u32; // requests staged
    let mut answered = 0u32; // responses received
    let mut received = 0u32; // requests taken by the back end
    let mut taken: std::collections::VecDeque<P::Req> = Default::default();
    let mut stats = Stats::default();
    for step in 0..steps {
        let what = format!("{ctx} step {step}");
        // Often a few entries, sometimes up to a little over a ring-full.
        let k = if rng.below(5) == 0 {
            rng.below(u64::from(size) + 3) as u32
        } else {
            1 + rng.below(4) as u32
        };
        match rng.below(10) {
            0 | 1 => {
                for _ in 0..k {
                    let req = P::request(sent);
                    if same(&mut lanes, &what, |l| l.front.stage(&req)) {
                        sent += 1;
                    } else {
                        stats.full += 1;
                    }
                }
            }
            2 => {
                let n = same(&mut lanes, &what, |l| l.front.push());
                stats.notify[usize::from(n)] += 1;
            }
            3 | 4 => {
                for _ in 0..k {
                    if let Some(req) = same(&mut lanes, &what, |l| l.back.take()) {
                        assert_eq!(req, P::request(received), "{what}: request");
                        received += 1;
                        taken.push_back(req);
                    }
                }
            }
            5 => {
                for _ in 0..k {
                    let rsp = taken
                        .front()
                        .map_or_else(|| P::response(&P::request(0)), P::response);
                    let staged = same(&mut lanes, &what, |l| l.back.stage(&rsp));
                    assert_eq!(staged, !taken.is_empty(), "{what}: back stage");
                    taken.pop_front();
                }
            }
            6 => {
                let n = same(&mut lanes, &what, |l| l.back.push());
                stats.notify[usize::from(n)] += 1;
            }
            7 => {
                for _ in 0..k {
                    if let Some(rsp) = same(&mut lanes, &what, |l| l.front.take()) {
                        assert_eq!(rsp, P::response(&P::request(answered)), "{what}: response");
                        answered += 1;
                    }
                }
            }
            8 => {
                let w = same(&mut lanes, &what, |l| l.back.final_check());
                stats.final_check[usize::from(w)] += 1;
            }
            _ => {
                let w = same(&mut lanes, &what, |l| l.front.final_check());
                stats.final_check[usize::from(w)] += 1;
            }
        }
        same(&mut lanes, &what, |l| l.front.state());
        same(&mut lanes, &what, |l| l.back.state());
        same_pages(&lanes, &what);
    }

    // Drain: every request sent is answered once, in order, on every lane.
    let what = format!("{ctx} drain");
    same(&mut lanes, &what, |l| l.front.push());
    while let Some(req) = same(&mut lanes, &what, |l| l.back.take()) {
        assert_eq!(req, P::request(received), "{what}: request");
        received += 1;
        taken.push_back(req);
    }
    assert_eq!(received, sent, "{what}: all received");
    while let Some(req) = taken.pop_front() {
        let rsp = P::response(&req);
        assert!(same(&mut lanes, &what, |l| l.back.stage(&rsp)));
    }
    same(&mut lanes, &what, |l| l.back.push());
    while let Some(rsp) = same(&mut lanes, &what, |l| l.front.take()) {
        assert_eq!(rsp, P::response(&P::request(answered)), "{what}");
        answered += 1;
    }
    assert_eq!(answered, sent, "{what}: all answered");
    let st = same(&mut lanes, &what, |l| l.front.state());
    assert_eq!(st.free_requests, size, "{what}");
    assert_eq!(st.req_prod_pvt, start.wrapping_add(sent), "{what}");
    same_pages(&lanes, &what);
    stats.wrapped = u32::from(start.checked_add(answered).is_none());
    stats
}

fn many_runs<P: Pair>() {
    let starts = |rng: &mut Rng| -> [u32; 4] {
        [
            0,
            u32::MAX,
            u32::MAX - rng.below(300) as u32,
            rng.next() as u32,
        ]
    };
    let mut rng = Rng(0x5eed ^ P::KIND as u64);
    let mut total = Stats::default();
    for order in 0..=2 {
        for start in starts(&mut rng) {
            let seed = rng.next();
            let s = run::<P>(seed, order, start, 400);
            for i in 0..2 {
                total.notify[i] += s.notify[i];
                total.final_check[i] += s.final_check[i];
            }
            total.full += s.full;
            total.wrapped += s.wrapped;
        }
    }
    eprintln!("kind {}: {total:?}", P::KIND);
    // The runs exercised both outcomes of every decision, and the wrap.
    assert!(total.notify.iter().all(|&n| n > 0), "{total:?}");
    assert!(total.final_check.iter().all(|&n| n > 0), "{total:?}");
    assert!(total.full > 0, "{total:?}");
    assert!(total.wrapped >= 6, "{total:?}");
}

#[test]
fn rust_ring_matches_xen_macros_24_byte_slots() {
    many_runs::<A>();
}

#[test]
fn rust_ring_matches_xen_macros_12_byte_slots() {
    many_runs::<B>();
}

/// Event-driven exchange between one implementation's front end and the
/// other's back end on the same page, across the 2^32 wrap.
///
/// Each end runs only when it has been notified (a pending flag per
/// direction, set when a push says "notify", cleared when the handler runs),
/// and its handler drains the ring and then final-checks until that says
/// there is nothing more, as real drivers do. The front end sends random
/// batches. At the end, running the pending handlers until none is pending
/// must leave every request answered: a lost wake-up across the two
/// implementations would leave entries behind with no handler pending.
fn event_driven<P: Pair>(seed: u64, order: u32, start: u32, c_front: bool) {
    let page = Page::new(order);
    let mut front: Box<dyn Front<P>> = if c_front {
        Box::new(CRing::<P>::front(&page, start))
    } else {
        Box::new(RustFront::<P>::new(&page, start))
    };
    let mut back: Box<dyn Back<P>> = if c_front {
        Box::new(RustBack::<P>::new(&page, start))
    } else {
        Box::new(CRing::<P>::back(&page, start))
    };
    let what = format!(
        "seed {seed} kind {} order {order} start {start:#x} c_front {c_front}",
        P::KIND
    );
    let mut rng = Rng(seed | 1);
    let (mut sent, mut received, mut answered) = (0u32, 0u32, 0u32);
    let (mut back_pending, mut front_pending) = (false, false);
    let (mut notifications, mut handler_runs) = (0u32, 0u32);

    let run_back = |back: &mut dyn Back<P>, received: &mut u32, front_pending: &mut bool| loop {
        while let Some(req) = back.take() {
            assert_eq!(req, P::request(*received), "{what}: request");
            *received += 1;
            assert!(back.stage(&P::response(&req)), "{what}: answer");
        }
        *front_pending |= back.push();
        if !back.final_check() {
            break;
        }
    };
    let run_front = |front: &mut dyn Front<P>, answered: &mut u32| loop {
        while let Some(rsp) = front.take() {
            assert_eq!(rsp, P::response(&P::request(*answered)), "{what}: response");
            *answered += 1;
        }
        if !front.final_check() {
            break;
        }
    };

    for _ in 0..300 {
        match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(6) {
                    if front.stage(&P::request(sent)) {
                        sent += 1;
                    }
                }
                if front.push() {
                    back_pending = true;
                    notifications += 1;
                }
            }
            1 if back_pending => {
                back_pending = false;
                handler_runs += 1;
                run_back(&mut *back, &mut received, &mut front_pending);
            }
            2 if front_pending => {
                front_pending = false;
                handler_runs += 1;
                run_front(&mut *front, &mut answered);
            }
            _ => {}
        }
    }
    while back_pending || front_pending {
        if back_pending {
            back_pending = false;
            run_back(&mut *back, &mut received, &mut front_pending);
        }
        if front_pending {
            front_pending = false;
            run_front(&mut *front, &mut answered);
        }
    }
    assert_eq!(received, sent, "{what}: a request was left with no wake-up");
    assert_eq!(
        answered, sent,
        "{what}: a response was left with no wake-up"
    );
    assert!(
        sent > 100 && notifications > 1 && handler_runs > 1,
        "{what}: {sent} sent"
    );
    assert_eq!(front.state().unconsumed_responses, 0);
    assert_eq!(back.state().unconsumed_requests, 0);
}

fn event_driven_runs<P: Pair>(c_front: bool) {
    let mut rng = Rng(0xe7e7 ^ P::KIND as u64);
    for order in 0..=2 {
        for start in [0, u32::MAX - 40, u32::MAX - rng.below(200) as u32] {
            event_driven::<P>(rng.next(), order, start, c_front);
        }
    }
}

#[test]
fn mixed_c_front_rust_back_event_driven() {
    event_driven_runs::<A>(true);
    event_driven_runs::<B>(true);
}

#[test]
fn mixed_rust_front_c_back_event_driven() {
    event_driven_runs::<A>(false);
    event_driven_runs::<B>(false);
}
