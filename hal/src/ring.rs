//! Xen's shared ring protocol (`xen/include/public/io/ring.h`), for any
//! request and response types, any ring size, front and back halves.
//!
//! # Layout
//! A shared ring is one or more pages (`order` N: 2^N pages): a 64-byte header
//! (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`, then padding) followed by
//! slots. A slot holds a request or a response (a C union), so its size is the
//! larger of the two. The number of slots is the largest power of two that
//! fits. Indices are free-running `u32`s that wrap at 2^32.
//!
//! # Notification
//! A producer publishes entries by advancing its `*_prod` index (release), then
//! (after a full fence) compares with the consumer's `*_event` index: it
//! notifies only if the consumer asked to be woken at an index it just passed.
//! A consumer about to sleep sets `*_event` to one past what it consumed, then
//! (after a full fence) re-reads the producer index: the "final check". Together
//! these lose no wake-up; `tests/ring_loom.rs` model-checks that.
//!
//! # Hostile peer
//! The peer writes the shared page at any time. This code reads each entry
//! once, into a private copy, and checks every index the peer writes: a
//! producer index implying more entries than can exist is
//! [`RingError::Overrun`], never a hang, a panic or an out-of-bounds access.
//! The ring is then broken for good; the caller should disconnect the device.

use crate::mem::{PAGE_SIZE, SharedMemory};
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::Ordering;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A free-running ring index. Arithmetic wraps at 2^32, as in ring.h.
#[doc(alias = "RING_IDX")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct RingIdx(pub u32);

impl RingIdx {
    /// `self + n`, wrapping.
    pub const fn add(self, n: u32) -> RingIdx {
        RingIdx(self.0.wrapping_add(n))
    }

    /// Number of steps from `earlier` to `self`, wrapping.
    pub const fn since(self, earlier: RingIdx) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }
}

/// Types that can travel in a ring slot: plain data, any bit pattern valid.
pub trait RingEntry: FromBytes + IntoBytes + Immutable + Copy {}
impl<T: FromBytes + IntoBytes + Immutable + Copy> RingEntry for T {}

/// Byte offset of the header fields.
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
/// Size of the ring header; slots start here.
pub const HEADER_SIZE: usize = 64;

/// Why a ring operation failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The memory is too small for even one slot.
    TooSmall,
    /// No free slot: too many requests outstanding (front), or no consumed
    /// request left to answer (back).
    Full,
    /// The peer's producer index claims more entries than the protocol allows
    /// (`prod - cons` greater than the ring size, or than the number of
    /// requests outstanding). The peer is broken or hostile.
    Overrun {
        /// The peer's producer index as read.
        prod: RingIdx,
        /// Our consumer index.
        cons: RingIdx,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::TooSmall => f.write_str("ring memory too small"),
            RingError::Full => f.write_str("ring full"),
            RingError::Overrun { prod, cons } => write!(
                f,
                "peer overran the ring (producer {} consumer {})",
                prod.0, cons.0
            ),
        }
    }
}

impl core::error::Error for RingError {}

/// Bytes per slot for a ring carrying `Req` and `Rsp`: the size of their C
/// union.
pub const fn slot_size<Req, Rsp>() -> usize {
    let size = max(core::mem::size_of::<Req>(), core::mem::size_of::<Rsp>());
    let align = max(core::mem::align_of::<Req>(), core::mem::align_of::<Rsp>());
    size.div_ceil(align) * align
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Number of slots in a ring of `bytes` bytes with `slot` bytes per slot: the
/// largest power of two that fits after the header (ring.h's
/// `__CONST_RING_SIZE`). Zero if not even one fits.
#[doc(alias = "__CONST_RING_SIZE")]
#[doc(alias = "__RING_SIZE")]
pub const fn ring_size(bytes: usize, slot: usize) -> u32 {
    if bytes <= HEADER_SIZE || slot == 0 {
        return 0;
    }
    let n = (bytes - HEADER_SIZE) / slot;
    if n == 0 {
        return 0;
    }
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    1u32 << (31 - n.leading_zeros())
}

/// Number of slots of a ring of `2^order` pages carrying `Req`/`Rsp`.
pub const fn ring_size_for_order<Req, Rsp>(order: u32) -> u32 {
    ring_size(PAGE_SIZE << order, slot_size::<Req, Rsp>())
}

/// Initialise the shared header: both producers at 0, both event indices at
/// 1, padding zeroed (ring.h's `SHARED_RING_INIT`). Only the front end does
/// this, before advertising the ring.
#[doc(alias = "SHARED_RING_INIT")]
pub fn init_shared<M: SharedMemory>(mem: &M) {
    mem.fill(0, HEADER_SIZE, 0);
    mem.store_u32(REQ_PROD, 0, Ordering::Relaxed);
    mem.store_u32(RSP_PROD, 0, Ordering::Relaxed);
    mem.store_u32(REQ_EVENT, 1, Ordering::Relaxed);
    mem.store_u32(RSP_EVENT, 1, Ordering::Relaxed);
    mem.fence(Ordering::Release);
}

fn slot_offset(idx: RingIdx, size: u32, slot: usize) -> usize {
    HEADER_SIZE + (idx.0 & (size - 1)) as usize * slot
}

fn read_entry<M: SharedMemory, T: RingEntry>(mem: &M, idx: RingIdx, size: u32, slot: usize) -> T {
    let mut v = T::new_zeroed();
    mem.read(slot_offset(idx, size, slot), v.as_mut_bytes());
    v
}

fn write_entry<M: SharedMemory, T: RingEntry>(
    mem: &M,
    idx: RingIdx,
    size: u32,
    slot: usize,
    v: &T,
) {
    mem.write(slot_offset(idx, size, slot), v.as_bytes());
}

/// Publish `new` as the producer index at `prod_off` and decide whether the
/// consumer must be notified (ring.h's `RING_PUSH_*_AND_CHECK_NOTIFY`).
fn publish<M: SharedMemory>(mem: &M, prod_off: usize, event_off: usize, new: RingIdx) -> bool {
    let old = RingIdx(mem.load_u32(prod_off, Ordering::Relaxed));
    // Entries before index (write barrier), then the index.
    mem.store_u32(prod_off, new.0, Ordering::Release);
    // The index must be visible before we read the consumer's event index.
    mem.fence(Ordering::SeqCst);
    let event = RingIdx(mem.load_u32(event_off, Ordering::Relaxed));
    new.since(event) < new.since(old)
}

/// The front end of a ring: sends requests, receives responses.
#[doc(alias = "front_ring")]
pub struct FrontRing<M, Req, Rsp> {
    mem: M,
    req_prod_pvt: RingIdx,
    rsp_cons: RingIdx,
    size: u32,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M: fmt::Debug, Req, Rsp> fmt::Debug for FrontRing<M, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontRing")
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .field("size", &self.size)
            .finish()
    }
}

impl<M: SharedMemory, Req: RingEntry, Rsp: RingEntry> FrontRing<M, Req, Rsp> {
    /// Initialise the shared page (`SHARED_RING_INIT`) and a front end over it
    /// (`FRONT_RING_INIT`). The ring size comes from `mem.len()`.
    ///
    /// Errors: [`RingError::TooSmall`].
    #[doc(alias = "FRONT_RING_INIT")]
    pub fn init(mem: M) -> Result<Self, RingError> {
        let ring = Self::attach_at(mem, RingIdx(0))?;
        init_shared(&ring.mem);
        Ok(ring)
    }

    /// A front end over a shared ring that is already set up, with its
    /// private request producer and response consumer at `idx`
    /// (`FRONT_RING_ATTACH`). The shared page is not touched; its indices
    /// should be consistent with `idx`.
    ///
    /// Errors: [`RingError::TooSmall`].
    #[doc(alias = "FRONT_RING_ATTACH")]
    pub fn attach_at(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        let size = ring_size(mem.len(), slot_size::<Req, Rsp>());
        if size == 0 {
            return Err(RingError::TooSmall);
        }
        Ok(FrontRing {
            mem,
            req_prod_pvt: idx,
            rsp_cons: idx,
            size,
            _types: PhantomData,
        })
    }

    /// Number of slots.
    #[doc(alias = "RING_SIZE")]
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Give the shared memory back (to unmap or free it).
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Requests staged or published and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.since(self.rsp_cons)
    }

    /// Slots free for new requests.
    #[doc(alias = "RING_FREE_REQUESTS")]
    pub fn free_requests(&self) -> u32 {
        self.size - self.outstanding()
    }

    /// Whether no request can be staged now.
    #[doc(alias = "RING_FULL")]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// The private request producer: the index the next request goes to.
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// The response consumer index.
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// Stage `req` in the next slot. The backend sees it after
    /// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify).
    ///
    /// Errors: [`RingError::Full`].
    #[doc(alias = "RING_GET_REQUEST")]
    pub fn stage_request(&mut self, req: &Req) -> Result<RingIdx, RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        let idx = self.req_prod_pvt;
        write_entry(&self.mem, idx, self.size, slot_size::<Req, Rsp>(), req);
        self.req_prod_pvt = idx.add(1);
        Ok(idx)
    }

    /// Publish staged requests; returns whether the backend must be notified.
    #[doc(alias = "RING_PUSH_REQUESTS_AND_CHECK_NOTIFY")]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        publish(&self.mem, REQ_PROD, REQ_EVENT, self.req_prod_pvt)
    }

    /// Check the backend's response producer.
    fn rsp_prod(&self) -> Result<RingIdx, RingError> {
        let prod = RingIdx(self.mem.load_u32(RSP_PROD, Ordering::Acquire));
        // Responses can only answer requests we staged; anything beyond is a
        // broken or hostile backend (this also rejects a producer that moved
        // backwards, which wraps to a huge distance).
        if prod.since(self.rsp_cons) > self.outstanding() {
            return Err(RingError::Overrun {
                prod,
                cons: self.rsp_cons,
            });
        }
        Ok(prod)
    }

    /// Number of responses published and not yet taken.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_HAS_UNCONSUMED_RESPONSES")]
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        Ok(self.rsp_prod()?.since(self.rsp_cons))
    }

    /// Copy out the next response, if one is published.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_GET_RESPONSE")]
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        let prod = self.rsp_prod()?;
        if prod == self.rsp_cons {
            return Ok(None);
        }
        let rsp = read_entry(&self.mem, self.rsp_cons, self.size, slot_size::<Req, Rsp>());
        self.rsp_cons = self.rsp_cons.add(1);
        Ok(Some(rsp))
    }

    /// Copy out up to `out.len()` published responses into `out`, reading
    /// the backend's producer once (as ring.h consumers loop from
    /// `rsp_cons` to one snapshot of `rsp_prod`); returns how many.
    /// [`take_response`](Self::take_response) in a loop reads it once per
    /// entry, and every read contends with the writer's cache line.
    ///
    /// Errors: [`RingError::Overrun`] (nothing is taken).
    #[doc(alias = "RING_GET_RESPONSE")]
    pub fn take_responses(&mut self, out: &mut [Rsp]) -> Result<usize, RingError> {
        let ready = self.rsp_prod()?.since(self.rsp_cons) as usize;
        let n = ready.min(out.len());
        for rsp in &mut out[..n] {
            *rsp = read_entry(&self.mem, self.rsp_cons, self.size, slot_size::<Req, Rsp>());
            self.rsp_cons = self.rsp_cons.add(1);
        }
        Ok(n)
    }

    /// Ask to be notified at the next response, then check once more for
    /// responses that raced with the request. Returns whether there are
    /// responses to take; if `false`, the backend will notify.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_FINAL_CHECK_FOR_RESPONSES")]
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(RSP_EVENT, self.rsp_cons.add(1).0, Ordering::Relaxed);
        self.mem.fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }
}

/// The back end of a ring: receives requests, sends responses.
#[doc(alias = "back_ring")]
pub struct BackRing<M, Req, Rsp> {
    mem: M,
    rsp_prod_pvt: RingIdx,
    req_cons: RingIdx,
    size: u32,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<M: fmt::Debug, Req, Rsp> fmt::Debug for BackRing<M, Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackRing")
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("req_cons", &self.req_cons)
            .field("size", &self.size)
            .finish()
    }
}

impl<M: SharedMemory, Req: RingEntry, Rsp: RingEntry> BackRing<M, Req, Rsp> {
    /// A back end over a ring the front end initialised (`BACK_RING_INIT`).
    /// The ring size comes from `mem.len()`, which must match the front
    /// end's.
    ///
    /// Errors: [`RingError::TooSmall`].
    #[doc(alias = "BACK_RING_INIT")]
    pub fn attach(mem: M) -> Result<Self, RingError> {
        Self::attach_at(mem, RingIdx(0))
    }

    /// A back end over a live ring, with its private response producer and
    /// request consumer at `idx` (`BACK_RING_ATTACH`), e.g. the `rsp_prod`
    /// a restarted back end finds on the shared page.
    ///
    /// Errors: [`RingError::TooSmall`].
    #[doc(alias = "BACK_RING_ATTACH")]
    pub fn attach_at(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        let size = ring_size(mem.len(), slot_size::<Req, Rsp>());
        if size == 0 {
            return Err(RingError::TooSmall);
        }
        Ok(BackRing {
            mem,
            rsp_prod_pvt: idx,
            req_cons: idx,
            size,
            _types: PhantomData,
        })
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Give the shared memory back (to unmap it).
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// The private response producer.
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// The request consumer index.
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// Requests taken and not yet answered.
    pub fn unanswered(&self) -> u32 {
        self.req_cons.since(self.rsp_prod_pvt)
    }

    fn req_prod(&self) -> Result<RingIdx, RingError> {
        let prod = RingIdx(self.mem.load_u32(REQ_PROD, Ordering::Acquire));
        // A well-behaved front end never has more than `size` requests
        // unanswered, so `prod - rsp_prod_pvt <= size`; and `prod` cannot be
        // behind what we already consumed.
        let ahead_of_answers = prod.since(self.rsp_prod_pvt);
        if ahead_of_answers > self.size || prod.since(self.req_cons) > ahead_of_answers {
            return Err(RingError::Overrun {
                prod,
                cons: self.req_cons,
            });
        }
        Ok(prod)
    }

    /// Number of requests published and not yet taken, limited by the slots
    /// free for their responses.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_HAS_UNCONSUMED_REQUESTS")]
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        let prod = self.req_prod()?;
        let reqs = prod.since(self.req_cons);
        let room = self.size - self.unanswered();
        Ok(reqs.min(room))
    }

    /// Copy out the next request, if one is published and there is room to
    /// answer it.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_GET_REQUEST")]
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let req = read_entry(&self.mem, self.req_cons, self.size, slot_size::<Req, Rsp>());
        self.req_cons = self.req_cons.add(1);
        Ok(Some(req))
    }

    /// Copy out up to `out.len()` published requests into `out`, reading
    /// the front end's producer once, and no more than there are slots free
    /// for their responses (as [`take_request`](Self::take_request));
    /// returns how many.
    ///
    /// Errors: [`RingError::Overrun`] (nothing is taken).
    #[doc(alias = "RING_GET_REQUEST")]
    pub fn take_requests(&mut self, out: &mut [Req]) -> Result<usize, RingError> {
        let n = (self.unconsumed_requests()? as usize).min(out.len());
        for req in &mut out[..n] {
            *req = read_entry(&self.mem, self.req_cons, self.size, slot_size::<Req, Rsp>());
            self.req_cons = self.req_cons.add(1);
        }
        Ok(n)
    }

    /// Stage a response to a taken request; the front end sees it after
    /// [`push_responses_and_check_notify`](Self::push_responses_and_check_notify).
    ///
    /// Errors: [`RingError::Full`] if every taken request is already answered.
    #[doc(alias = "RING_GET_RESPONSE")]
    pub fn stage_response(&mut self, rsp: &Rsp) -> Result<RingIdx, RingError> {
        if self.unanswered() == 0 {
            return Err(RingError::Full);
        }
        let idx = self.rsp_prod_pvt;
        write_entry(&self.mem, idx, self.size, slot_size::<Req, Rsp>(), rsp);
        self.rsp_prod_pvt = idx.add(1);
        Ok(idx)
    }

    /// Publish staged responses; returns whether the front end must be
    /// notified.
    #[doc(alias = "RING_PUSH_RESPONSES_AND_CHECK_NOTIFY")]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        publish(&self.mem, RSP_PROD, RSP_EVENT, self.rsp_prod_pvt)
    }

    /// Ask to be notified at the next request, then check once more. Returns
    /// whether there are requests to take; if `false`, the front end will
    /// notify.
    ///
    /// Errors: [`RingError::Overrun`].
    #[doc(alias = "RING_FINAL_CHECK_FOR_REQUESTS")]
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.mem
            .store_u32(REQ_EVENT, self.req_cons.add(1).0, Ordering::Relaxed);
        self.mem.fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests()? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::WordMemory;
    use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

    #[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Req {
        id: u64,
        payload: [u32; 2],
    }
    #[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Rsp {
        id: u64,
        status: i32,
        _pad: u32,
    }

    fn pair(
        bytes: usize,
    ) -> (
        FrontRing<WordMemory, Req, Rsp>,
        BackRing<WordMemory, Req, Rsp>,
    ) {
        let mem = WordMemory::new(bytes);
        let front = FrontRing::init(mem.clone()).unwrap();
        let back = BackRing::attach(mem).unwrap();
        (front, back)
    }

    #[test]
    fn sizes_match_ring_h() {
        // blkif: 112-byte requests in one page -> 32 slots.
        assert_eq!(ring_size(4096, 112), 32);
        // netif tx: 12-byte slots -> 256; rx: 8-byte slots -> 256.
        assert_eq!(ring_size(4096, 12), 256);
        assert_eq!(ring_size(4096, 8), 256);
        // Order-2 blkif ring.
        assert_eq!(ring_size(4096 << 2, 112), 128);
        assert_eq!(ring_size(64, 8), 0);
        assert_eq!(slot_size::<Req, Rsp>(), 16);
    }

    #[test]
    fn request_response_round_trip_with_notifications() {
        let (mut f, mut b) = pair(4096);
        // (4096 - 64) / 16 = 252 slots fit; rounded down to a power of two.
        assert_eq!(f.size(), 128);
        // Back end is idle and asked to be woken at index 1.
        assert!(!b.final_check_for_requests().unwrap());
        f.stage_request(&Req {
            id: 7,
            payload: [1, 2],
        })
        .unwrap();
        assert!(
            f.push_requests_and_check_notify(),
            "idle backend must be notified"
        );
        // A second push without the backend re-arming needs no notification.
        f.stage_request(&Req {
            id: 8,
            payload: [3, 4],
        })
        .unwrap();
        assert!(!f.push_requests_and_check_notify());
        assert_eq!(b.take_request().unwrap().unwrap().id, 7);
        assert_eq!(b.take_request().unwrap().unwrap().id, 8);
        assert_eq!(b.take_request().unwrap(), None);
        assert!(!f.final_check_for_responses().unwrap());
        b.stage_response(&Rsp {
            id: 7,
            status: 0,
            _pad: 0,
        })
        .unwrap();
        b.stage_response(&Rsp {
            id: 8,
            status: -5,
            _pad: 0,
        })
        .unwrap();
        assert!(
            b.stage_response(&Rsp {
                id: 9,
                status: 0,
                _pad: 0
            })
            .is_err()
        );
        assert!(b.push_responses_and_check_notify());
        assert_eq!(f.take_response().unwrap().unwrap().status, 0);
        assert_eq!(f.take_response().unwrap().unwrap().status, -5);
        assert_eq!(f.take_response().unwrap(), None);
        assert_eq!(f.free_requests(), 128);
    }

    #[test]
    fn front_rejects_responses_it_never_asked_for() {
        let (mut f, _b) = pair(4096);
        f.stage_request(&Req {
            id: 1,
            payload: [0; 2],
        })
        .unwrap();
        f.push_requests_and_check_notify();
        // Hostile backend claims 2 responses for 1 request.
        f.memory().store_u32(RSP_PROD, 2, Ordering::Release);
        assert!(matches!(f.take_response(), Err(RingError::Overrun { .. })));
        // And a producer index that went backwards.
        f.memory().store_u32(RSP_PROD, u32::MAX, Ordering::Release);
        assert!(matches!(
            f.final_check_for_responses(),
            Err(RingError::Overrun { .. })
        ));
    }

    #[test]
    fn back_rejects_runaway_request_producer() {
        let (_f, mut b) = pair(4096);
        let mem = b.memory().clone();
        mem.store_u32(REQ_PROD, 129, Ordering::Release);
        assert!(matches!(b.take_request(), Err(RingError::Overrun { .. })));
        mem.store_u32(REQ_PROD, 128, Ordering::Release);
        for _ in 0..128 {
            assert!(b.take_request().unwrap().is_some());
        }
        // No room to answer more until we respond.
        assert_eq!(b.unconsumed_requests().unwrap(), 0);
        // Producer moving backwards is an overrun too.
        mem.store_u32(REQ_PROD, 10, Ordering::Release);
        assert!(b.take_request().is_err());
    }

    /// The batch takes see what the single ones see: at most what is
    /// published (and, on the back end, what can still be answered), in
    /// order, across the wrap of the slots; a hostile producer is an
    /// overrun that takes nothing.
    #[test]
    fn batch_takes_match_single_takes() {
        let (mut f, mut b) = pair(4096);
        let mut reqs = [Req::new_zeroed(); 200];
        let mut rsps = [Rsp::new_zeroed(); 200];
        let mut next = 0u64;
        let mut answered = 0u64;
        for round in 0..40u64 {
            let n = (round * 7 % 50 + 1) as usize;
            for _ in 0..n.min(f.free_requests() as usize) {
                f.stage_request(&Req {
                    id: next,
                    payload: [0; 2],
                })
                .unwrap();
                next += 1;
            }
            f.push_requests_and_check_notify();
            let want = (round % 3 * 20 + 5) as usize;
            let got = b.take_requests(&mut reqs[..want]).unwrap();
            assert_eq!(got, want.min((next - answered) as usize), "round {round}");
            for (i, r) in reqs[..got].iter().enumerate() {
                assert_eq!(r.id, answered + i as u64);
                b.stage_response(&Rsp {
                    id: r.id,
                    status: 0,
                    _pad: 0,
                })
                .unwrap();
            }
            b.push_responses_and_check_notify();
            let back = f.take_responses(&mut rsps).unwrap();
            assert_eq!(back, got);
            for (i, r) in rsps[..back].iter().enumerate() {
                assert_eq!(r.id, answered + i as u64);
            }
            answered += got as u64;
        }
        assert!(next > 128, "the slots wrapped");
        // Nothing more published: nothing taken.
        assert_eq!(f.take_responses(&mut rsps).unwrap(), 0);
        // A backend claiming more than was asked: overrun, nothing taken.
        let outstanding = f.outstanding();
        f.memory().store_u32(
            RSP_PROD,
            f.rsp_cons().0.wrapping_add(outstanding + 1),
            Ordering::Release,
        );
        assert!(matches!(
            f.take_responses(&mut rsps),
            Err(RingError::Overrun { .. })
        ));
        assert_eq!(f.outstanding(), outstanding);
        // A front end running away: overrun on the back end too.
        let (_f, mut b) = pair(4096);
        b.memory().store_u32(REQ_PROD, 129, Ordering::Release);
        assert!(matches!(
            b.take_requests(&mut reqs),
            Err(RingError::Overrun { .. })
        ));
        // Published, but only as many as can be answered.
        b.memory().store_u32(REQ_PROD, 128, Ordering::Release);
        assert_eq!(b.take_requests(&mut reqs[..100]).unwrap(), 100);
        assert_eq!(b.take_requests(&mut reqs).unwrap(), 28);
        assert_eq!(b.take_requests(&mut reqs).unwrap(), 0);
    }

    #[test]
    fn indices_wrap_at_2_pow_32() {
        let (mut f, mut b) = pair(4096);
        let start = u32::MAX - 3;
        // Start all four indices near the wrap, as if after 4 billion requests.
        f.req_prod_pvt = RingIdx(start);
        f.rsp_cons = RingIdx(start);
        b.req_cons = RingIdx(start);
        b.rsp_prod_pvt = RingIdx(start);
        let mem = f.memory().clone();
        mem.store_u32(REQ_PROD, start, Ordering::Relaxed);
        mem.store_u32(RSP_PROD, start, Ordering::Relaxed);
        mem.store_u32(REQ_EVENT, start.wrapping_add(1), Ordering::Relaxed);
        mem.store_u32(RSP_EVENT, start.wrapping_add(1), Ordering::Relaxed);
        for round in 0..4u64 {
            for i in 0..5u64 {
                f.stage_request(&Req {
                    id: round * 10 + i,
                    payload: [0; 2],
                })
                .unwrap();
            }
            f.push_requests_and_check_notify();
            for i in 0..5u64 {
                let r = b.take_request().unwrap().unwrap();
                assert_eq!(r.id, round * 10 + i);
                b.stage_response(&Rsp {
                    id: r.id,
                    status: 0,
                    _pad: 0,
                })
                .unwrap();
            }
            b.push_responses_and_check_notify();
            for i in 0..5u64 {
                assert_eq!(f.take_response().unwrap().unwrap().id, round * 10 + i);
            }
        }
        assert!(f.req_prod_pvt().0 < 100, "index wrapped");
    }

    #[test]
    fn multi_page_ring() {
        let (f, _b) = pair(4096 << 3);
        assert_eq!(f.size(), 1024);
        assert_eq!(ring_size_for_order::<Req, Rsp>(3), 1024);
    }
}
