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
    use std::vec;

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
}
