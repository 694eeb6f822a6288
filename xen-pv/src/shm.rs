//! Shared-memory access through raw pointers: the only `unsafe` in this
//! crate.
//!
//! [`RawMemory`] turns a pointer to memory the platform reached (RAM the guest
//! owns, a page another domain granted, the shared-info page) into a
//! [`SharedMemory`]. Its constructor carries the whole safety contract; after
//! that every access is bounds-checked and atomic (or a copy made of atomic
//! word and byte loads/stores), so memory another domain writes concurrently
//! is never read through a plain reference.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use hal::mem::{SharedMemory, check_access, load_order, store_order};

/// A region of memory reached through a raw pointer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RawMemory {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: every access through a `RawMemory` is atomic (see the
// `SharedMemory` impl), so sharing or sending the handle between threads
// cannot cause a data race through it.
unsafe impl Send for RawMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for RawMemory {}

impl RawMemory {
    /// A handle to `len` bytes at `base`.
    ///
    /// # Safety
    /// For as long as this handle or any copy or slice of it is used:
    /// - `base..base + len` must be valid for reads and writes, and `base`
    ///   8-byte aligned;
    /// - this program must access that memory only through `RawMemory`
    ///   handles or other atomic operations (other domains and Xen may
    ///   access it in any way).
    pub const unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        RawMemory { base, len }
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// A handle to `len` bytes starting at `offset` of this region. Panics
    /// unless the range lies inside the region and `offset` is a multiple of
    /// 8.
    pub fn slice(&self, offset: usize, len: usize) -> RawMemory {
        check_access(self.len, offset, len, 8);
        // SAFETY: `offset <= self.len`, so the result stays inside (or one
        // past) the region `new`'s contract covers.
        let base = unsafe { self.base.add(offset) };
        RawMemory { base, len }
    }

    /// Pointer to byte `offset`, after the bounds and alignment check.
    #[inline]
    #[track_caller]
    fn at(&self, offset: usize, size: usize) -> *mut u8 {
        check_access(self.len, offset, size, size);
        // SAFETY: `check_access` proved `offset + size <= len`, so the
        // pointer is inside the region.
        unsafe { self.base.as_ptr().add(offset) }
    }
}

macro_rules! atomic_at {
    ($self:ident, $ty:ty, $offset:expr, $size:expr) => {{
        let p = $self.at($offset, $size);
        // SAFETY: `p` is in bounds and aligned to `$size` (checked by `at`;
        // `base` is 8-aligned), valid for the handle's lifetime, and only
        // accessed atomically by this program (the contract of `new`).
        unsafe { <$ty>::from_ptr(p.cast()) }
    }};
}

impl SharedMemory for RawMemory {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> u8 {
        atomic_at!(self, AtomicU8, offset, 1).load(load_order(order))
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) {
        atomic_at!(self, AtomicU8, offset, 1).store(value, store_order(order))
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> u16 {
        atomic_at!(self, AtomicU16, offset, 2).load(load_order(order))
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) {
        atomic_at!(self, AtomicU16, offset, 2).store(value, store_order(order))
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        order: Ordering,
    ) -> Result<u16, u16> {
        atomic_at!(self, AtomicU16, offset, 2).compare_exchange(
            current,
            new,
            order,
            load_order(order),
        )
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        atomic_at!(self, AtomicU32, offset, 4).load(load_order(order))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        atomic_at!(self, AtomicU32, offset, 4).store(value, store_order(order))
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        atomic_at!(self, AtomicU64, offset, 8).load(load_order(order))
    }

    fn store_u64(&self, offset: usize, value: u64, order: Ordering) {
        atomic_at!(self, AtomicU64, offset, 8).store(value, store_order(order))
    }

    fn fetch_or_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        atomic_at!(self, AtomicU64, offset, 8).fetch_or(bits, order)
    }

    fn fetch_and_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        atomic_at!(self, AtomicU64, offset, 8).fetch_and(bits, order)
    }

    fn swap_u64(&self, offset: usize, value: u64, order: Ordering) -> u64 {
        atomic_at!(self, AtomicU64, offset, 8).swap(value, order)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        check_access(self.len, offset, buf.len(), 1);
        let mut pos = 0;
        while pos < buf.len() {
            let at = offset + pos;
            if at.is_multiple_of(8) && buf.len() - pos >= 8 {
                let w = self.load_u64(at, Ordering::Relaxed);
                buf[pos..pos + 8].copy_from_slice(&w.to_ne_bytes());
                pos += 8;
            } else {
                buf[pos] = self.load_u8(at, Ordering::Relaxed);
                pos += 1;
            }
        }
    }

    fn write(&self, offset: usize, buf: &[u8]) {
        check_access(self.len, offset, buf.len(), 1);
        let mut pos = 0;
        while pos < buf.len() {
            let at = offset + pos;
            if at.is_multiple_of(8) && buf.len() - pos >= 8 {
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[pos..pos + 8]);
                self.store_u64(at, u64::from_ne_bytes(w), Ordering::Relaxed);
                pos += 8;
            } else {
                self.store_u8(at, buf[pos], Ordering::Relaxed);
                pos += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicBool;
    use hal::mem::MultiPage;
    use hal::ring::{self, BackRing, FrontRing};
    use std::vec;
    use std::vec::Vec;
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    /// `words` zeroed 8-byte words on the heap, and a handle to all of them.
    /// The caller keeps the `Vec` alive while it uses the handle (or copies
    /// or slices of it) and touches the memory only through them.
    fn backing(words: usize) -> (Vec<u64>, RawMemory) {
        let mut buf = vec![0u64; words];
        let ptr = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the heap block of `buf` is valid for reads and writes of
        // `words * 8` bytes and 8-aligned (`u64`s); moving the `Vec` out does
        // not move the block, and the caller keeps it alive and otherwise
        // untouched while it uses the handle (see above).
        let m = unsafe { RawMemory::new(ptr, words * 8) };
        (buf, m)
    }

    #[test]
    fn raw_memory_round_trips_and_checks_bounds() {
        let mut backing = vec![0u64; 8];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `backing` outlives `m` and is only used through `m` below.
        let m = unsafe { RawMemory::new(ptr, 64) };
        m.write(3, b"hello shared world");
        let mut out = [0u8; 18];
        m.read(3, &mut out);
        assert_eq!(&out, b"hello shared world");
        m.store_u32(60, 0xdead_beef, Ordering::Release);
        assert_eq!(m.load_u32(60, Ordering::Acquire), 0xdead_beef);
        assert_eq!(m.slice(56, 8).load_u32(4, Ordering::Relaxed), 0xdead_beef);
        let r = std::panic::catch_unwind(|| m.load_u32(62, Ordering::Relaxed));
        assert!(r.is_err(), "misaligned access must panic");
        drop(backing);
    }

    #[test]
    fn every_atomic_accessor_touches_only_its_bytes() {
        let (buf, m) = backing(4);
        m.fill(0, 32, 0x11);
        m.store_u8(1, 0xab, Ordering::Relaxed);
        assert_eq!(m.load_u8(1, Ordering::Acquire), 0xab);
        m.store_u16(2, 0xbeef, Ordering::Release);
        assert_eq!(m.load_u16(2, Ordering::Acquire), 0xbeef);
        assert_eq!(
            m.compare_exchange_u16(2, 1, 2, Ordering::SeqCst),
            Err(0xbeef)
        );
        assert_eq!(
            m.compare_exchange_u16(2, 0xbeef, 0xcafe, Ordering::AcqRel),
            Ok(0xbeef)
        );
        m.store_u32(4, 0x0102_0304, Ordering::SeqCst);
        let mut first = [0u8; 8];
        m.read(0, &mut first);
        let mut want = [0x11, 0xab, 0, 0, 0, 0, 0, 0];
        want[2..4].copy_from_slice(&0xcafeu16.to_ne_bytes());
        want[4..8].copy_from_slice(&0x0102_0304u32.to_ne_bytes());
        assert_eq!(first, want, "byte copies see the atomic stores");
        assert_eq!(m.load_u64(0, Ordering::Relaxed), u64::from_ne_bytes(want));
        m.store_u64(8, 0xf0, Ordering::Release);
        assert_eq!(m.fetch_or_u64(8, 0x0f, Ordering::AcqRel), 0xf0);
        assert_eq!(m.fetch_and_u64(8, 0x3c, Ordering::AcqRel), 0xff);
        assert_eq!(m.swap_u64(8, u64::MAX, Ordering::SeqCst), 0x3c);
        assert_eq!(m.load_u64(8, Ordering::Relaxed), u64::MAX);
        // The words around those untouched.
        assert_eq!(m.load_u64(16, Ordering::Relaxed), 0x1111_1111_1111_1111);
        assert_eq!(m.load_u64(24, Ordering::Relaxed), 0x1111_1111_1111_1111);
        drop(buf);
    }

    #[test]
    fn byte_copies_match_a_model_at_every_offset_and_length() {
        // 40 bytes through a view starting at the second word: every
        // alignment of start and end, and lengths 0 to 40, against a plain
        // byte array (the u64 and u8 paths of `read` and `write`).
        let (buf, block) = backing(7);
        let m = block.slice(8, 40);
        let mut model = [0u8; 40];
        let mut stamp = 0u8;
        for off in 0..=40 {
            for len in 0..=40 - off {
                stamp = stamp.wrapping_add(1);
                let data: Vec<u8> = (0..len).map(|i| stamp.wrapping_mul(31) ^ i as u8).collect();
                m.write(off, &data);
                model[off..off + len].copy_from_slice(&data);
                let mut all = [0u8; 40];
                m.read(0, &mut all);
                assert_eq!(all, model, "after writing {len} bytes at {off}");
                let mut part = vec![0u8; len];
                m.read(off, &mut part);
                assert_eq!(part[..], model[off..off + len]);
            }
        }
        // The words before and after the view were never touched.
        assert_eq!(block.load_u64(0, Ordering::Relaxed), 0);
        assert_eq!(block.load_u64(48, Ordering::Relaxed), 0);
        drop(buf);
    }

    #[test]
    fn accesses_outside_the_region_panic_before_touching_memory() {
        let (buf, block) = backing(4);
        // An empty slice at the very end is allowed (one past the end).
        let end = block.slice(32, 0);
        assert!(end.is_empty());
        end.write(0, &[]);
        let m = block.slice(8, 16);
        type Access = fn(&RawMemory);
        let cases: [(&str, Access); 7] = [
            ("read past the end", |m| m.read(12, &mut [0; 5])),
            ("write past the end", |m| m.write(16, &[1])),
            ("u64 at the end", |m| {
                m.load_u64(16, Ordering::Relaxed);
            }),
            ("misaligned u16", |m| m.store_u16(1, 1, Ordering::Relaxed)),
            ("huge offset", |m| m.read(usize::MAX, &mut [0; 2])),
            ("slice past the end", |m| {
                m.slice(8, 16);
            }),
            ("misaligned slice", |m| {
                m.slice(4, 4);
            }),
        ];
        for (what, access) in cases {
            let r = std::panic::catch_unwind(|| access(&m));
            assert!(r.is_err(), "{what} must panic");
        }
        for w in 0..4 {
            assert_eq!(block.load_u64(w * 8, Ordering::Relaxed), 0, "word {w}");
        }
        drop(buf);
    }

    #[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Req {
        id: u32,
        data: [u32; 2],
    }

    #[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Rsp {
        id: u32,
        sum: u32,
    }

    fn request(n: u32) -> Req {
        Req {
            id: n,
            data: [n.wrapping_mul(0x9e37_79b9), !n],
        }
    }

    /// A multi-page ring whose pages are two separate allocations, joined
    /// by `MultiPage` as a back end maps a ring's grants: entries straddle
    /// the page boundary.
    #[test]
    fn ring_over_raw_pages_joined_by_multipage() {
        let (buf_a, a) = backing(hal::PAGE_SIZE / 8);
        let (buf_b, b) = backing(hal::PAGE_SIZE / 8);
        let pages = MultiPage::new(vec![a, b], hal::PAGE_SIZE).unwrap();
        let mut front = FrontRing::<_, Req, Rsp>::init(pages.clone()).unwrap();
        let mut back = BackRing::<_, Req, Rsp>::attach(pages).unwrap();
        assert_eq!(front.size(), ring::ring_size_for_order::<Req, Rsp>(1));
        for n in 0..front.size() + 100 {
            front.stage_request(&request(n)).unwrap();
            front.push_requests_and_check_notify();
            let req = back.take_request().unwrap().unwrap();
            assert_eq!(req, request(n));
            let sum = req.data[0] ^ req.data[1];
            back.stage_response(&Rsp { id: req.id, sum }).unwrap();
            back.push_responses_and_check_notify();
            assert_eq!(front.take_response().unwrap(), Some(Rsp { id: n, sum }));
        }
        drop((buf_a, buf_b));
    }

    /// Sets its flag if dropped while its thread unwinds from a panic, so
    /// that the other end of a ring stops waiting for it.
    struct OnPanic<'a>(&'a AtomicBool);

    impl Drop for OnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A front end and a back end on two threads over one small ring in
    /// `RawMemory`, each with its own handle, as two domains share a page:
    /// every request is answered once, in order, intact. Under Miri this
    /// checks the handles' accesses for data races and the ring's orderings
    /// under its weak-memory emulation (with fewer requests: it is slow).
    /// An end that fails stops the other, so a failure is not a hang.
    #[test]
    fn ring_over_raw_memory_between_threads() {
        let total: u32 = if cfg!(miri) { 150 } else { 20_000 };
        let (buf, block) = backing(32);
        // 12-byte slots (so entries are copied partly by bytes, partly by
        // words) and 8 of them (so the ring wraps many times).
        let m = block.slice(0, ring::HEADER_SIZE + 8 * 12);
        let mut front = FrontRing::<_, Req, Rsp>::init(m).unwrap();
        assert_eq!(front.size(), 8);
        // Relaxed: it orders nothing, so it cannot hide a missing ordering
        // in the ring.
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _stop_front = OnPanic(&failed);
                let mut back = BackRing::<_, Req, Rsp>::attach(m).unwrap();
                let mut answered = 0;
                while answered < total && !failed.load(Ordering::Relaxed) {
                    match back.take_request().unwrap() {
                        Some(req) => {
                            assert_eq!(req, request(answered));
                            let sum = req.data[0] ^ req.data[1];
                            back.stage_response(&Rsp { id: req.id, sum }).unwrap();
                            back.push_responses_and_check_notify();
                            answered += 1;
                        }
                        None => {
                            if !back.final_check_for_requests().unwrap() {
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            });
            let _stop_back = OnPanic(&failed);
            let (mut sent, mut received) = (0, 0);
            while received < total && !failed.load(Ordering::Relaxed) {
                while sent < total && !front.is_full() {
                    front.stage_request(&request(sent)).unwrap();
                    sent += 1;
                }
                front.push_requests_and_check_notify();
                match front.take_response().unwrap() {
                    Some(rsp) => {
                        let want = request(received);
                        let sum = want.data[0] ^ want.data[1];
                        assert_eq!(rsp, Rsp { id: received, sum });
                        received += 1;
                    }
                    None => {
                        if !front.final_check_for_responses().unwrap() {
                            std::thread::yield_now();
                        }
                    }
                }
            }
        });
        drop(buf);
    }
}
