//! Memory shared with another domain or with Xen, and the page allocator.
//!
//! Memory that another domain can write is *hostile*: it may change between two
//! reads, hold any bit pattern, and be written concurrently. Code in this
//! project therefore never holds a `&` or `&mut` to plain data in such memory.
//! It goes through [`SharedMemory`], whose accessors are atomic (with an
//! explicit [`Ordering`]) or copy bytes out or in, once.
//!
//! Two implementations ship with the project:
//! - [`WordMemory`] (here): memory made of `AtomicU64` words on the heap. The
//!   simulator builds every guest's RAM from it, and tests use it as a mock.
//! - `xenpal_xen_pv::shm::RawMemory`: a raw pointer to memory reached by the
//!   platform (identity-mapped RAM, a grant mapping, the shared-info page). Its
//!   constructor is the one `unsafe` step; every access after that is safe.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Size of a Xen page, in bytes. Xen's guest ABI uses 4 KiB pages on x86_64 and
/// on AArch64 alike, whatever page size the guest itself uses.
pub const PAGE_SIZE: usize = 4096;

/// A guest frame number: a guest-physical address divided by [`PAGE_SIZE`].
///
/// On auto-translated guests (AArch64, the simulator) this is what Xen calls a
/// GFN; on x86 PV it is a pseudo-physical frame (PFN), which the platform
/// translates to a machine frame where Xen wants one.
#[doc(alias = "xen_pfn_t")]
#[doc(alias = "gfn")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

impl Gfn {
    /// The guest-physical address of the first byte of this frame.
    pub const fn addr(self) -> u64 {
        self.0 * PAGE_SIZE as u64
    }

    /// The frame holding guest-physical address `addr`.
    pub const fn containing(addr: u64) -> Self {
        Gfn(addr / PAGE_SIZE as u64)
    }
}

/// Byte-addressed access to memory that another party may write concurrently.
///
/// Offsets are in bytes from the start of the region. Calling an accessor with
/// an offset outside `0..len()`, or an atomic accessor with an offset that is
/// not a multiple of the access size, is a bug in the caller: implementations
/// MUST panic rather than touch memory outside the region. Peer-controlled
/// values never reach these offsets unchecked (see [`crate::ring`]).
///
/// Byte copies ([`read`](Self::read), [`write`](Self::write)) are not atomic
/// as a whole: a concurrent writer may be seen half-done. Callers copy a value
/// out once and validate the copy.
pub trait SharedMemory {
    /// Length of the region in bytes.
    fn len(&self) -> usize;

    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Atomically load the byte at `offset`.
    fn load_u8(&self, offset: usize, order: Ordering) -> u8;
    /// Atomically store the byte at `offset`.
    fn store_u8(&self, offset: usize, value: u8, order: Ordering);
    /// Atomically load the `u16` at `offset` (2-aligned).
    fn load_u16(&self, offset: usize, order: Ordering) -> u16;
    /// Atomically store the `u16` at `offset` (2-aligned).
    fn store_u16(&self, offset: usize, value: u16, order: Ordering);
    /// Atomic compare-and-exchange of the `u16` at `offset` (2-aligned).
    /// Returns `Ok(previous)` if it was `current` and is now `new`, else
    /// `Err(actual)`.
    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        order: Ordering,
    ) -> Result<u16, u16>;
    /// Atomically load the `u32` at `offset` (4-aligned).
    fn load_u32(&self, offset: usize, order: Ordering) -> u32;
    /// Atomically store the `u32` at `offset` (4-aligned).
    fn store_u32(&self, offset: usize, value: u32, order: Ordering);
    /// Atomically load the `u64` at `offset` (8-aligned).
    fn load_u64(&self, offset: usize, order: Ordering) -> u64;
    /// Atomically store the `u64` at `offset` (8-aligned).
    fn store_u64(&self, offset: usize, value: u64, order: Ordering);
    /// Atomically OR `bits` into the `u64` at `offset`; returns the old value.
    fn fetch_or_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64;
    /// Atomically AND `bits` into the `u64` at `offset`; returns the old value.
    fn fetch_and_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64;
    /// Atomically replace the `u64` at `offset`; returns the old value.
    fn swap_u64(&self, offset: usize, value: u64, order: Ordering) -> u64;

    /// Copy `buf.len()` bytes starting at `offset` out of the region.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copy `buf` into the region starting at `offset`.
    fn write(&self, offset: usize, buf: &[u8]);

    /// Fill `len` bytes starting at `offset` with `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) {
        let chunk = [byte; 64];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(offset + done, &chunk[..n]);
            done += n;
        }
    }

    /// A memory fence. Protocol code calls this rather than
    /// `core::sync::atomic::fence` so that model checkers (loom) can see it.
    fn fence(&self, order: Ordering) {
        core::sync::atomic::fence(order);
    }
}

impl<M: SharedMemory + ?Sized> SharedMemory for &M {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u8(&self, o: usize, ord: Ordering) -> u8 {
        (**self).load_u8(o, ord)
    }
    fn store_u8(&self, o: usize, v: u8, ord: Ordering) {
        (**self).store_u8(o, v, ord)
    }
    fn load_u16(&self, o: usize, ord: Ordering) -> u16 {
        (**self).load_u16(o, ord)
    }
    fn store_u16(&self, o: usize, v: u16, ord: Ordering) {
        (**self).store_u16(o, v, ord)
    }
    fn compare_exchange_u16(&self, o: usize, c: u16, n: u16, ord: Ordering) -> Result<u16, u16> {
        (**self).compare_exchange_u16(o, c, n, ord)
    }
    fn load_u32(&self, o: usize, ord: Ordering) -> u32 {
        (**self).load_u32(o, ord)
    }
    fn store_u32(&self, o: usize, v: u32, ord: Ordering) {
        (**self).store_u32(o, v, ord)
    }
    fn load_u64(&self, o: usize, ord: Ordering) -> u64 {
        (**self).load_u64(o, ord)
    }
    fn store_u64(&self, o: usize, v: u64, ord: Ordering) {
        (**self).store_u64(o, v, ord)
    }
    fn fetch_or_u64(&self, o: usize, b: u64, ord: Ordering) -> u64 {
        (**self).fetch_or_u64(o, b, ord)
    }
    fn fetch_and_u64(&self, o: usize, b: u64, ord: Ordering) -> u64 {
        (**self).fetch_and_u64(o, b, ord)
    }
    fn swap_u64(&self, o: usize, v: u64, ord: Ordering) -> u64 {
        (**self).swap_u64(o, v, ord)
    }
    fn read(&self, o: usize, buf: &mut [u8]) {
        (**self).read(o, buf)
    }
    fn write(&self, o: usize, buf: &[u8]) {
        (**self).write(o, buf)
    }
    fn fence(&self, order: Ordering) {
        (**self).fence(order)
    }
}

/// Inside an `impl SharedMemory for T` block, forward every method to the
/// field `$field` of `T` (which must implement [`SharedMemory`]). For
/// wrappers that carry a region plus bookkeeping (a grant mapping, a page
/// block).
#[macro_export]
macro_rules! forward_shared_memory {
    ($field:ident) => {
        fn len(&self) -> usize {
            self.$field.len()
        }
        fn load_u8(&self, o: usize, ord: core::sync::atomic::Ordering) -> u8 {
            self.$field.load_u8(o, ord)
        }
        fn store_u8(&self, o: usize, v: u8, ord: core::sync::atomic::Ordering) {
            self.$field.store_u8(o, v, ord)
        }
        fn load_u16(&self, o: usize, ord: core::sync::atomic::Ordering) -> u16 {
            self.$field.load_u16(o, ord)
        }
        fn store_u16(&self, o: usize, v: u16, ord: core::sync::atomic::Ordering) {
            self.$field.store_u16(o, v, ord)
        }
        fn compare_exchange_u16(
            &self,
            o: usize,
            c: u16,
            n: u16,
            ord: core::sync::atomic::Ordering,
        ) -> Result<u16, u16> {
            self.$field.compare_exchange_u16(o, c, n, ord)
        }
        fn load_u32(&self, o: usize, ord: core::sync::atomic::Ordering) -> u32 {
            self.$field.load_u32(o, ord)
        }
        fn store_u32(&self, o: usize, v: u32, ord: core::sync::atomic::Ordering) {
            self.$field.store_u32(o, v, ord)
        }
        fn load_u64(&self, o: usize, ord: core::sync::atomic::Ordering) -> u64 {
            self.$field.load_u64(o, ord)
        }
        fn store_u64(&self, o: usize, v: u64, ord: core::sync::atomic::Ordering) {
            self.$field.store_u64(o, v, ord)
        }
        fn fetch_or_u64(&self, o: usize, b: u64, ord: core::sync::atomic::Ordering) -> u64 {
            self.$field.fetch_or_u64(o, b, ord)
        }
        fn fetch_and_u64(&self, o: usize, b: u64, ord: core::sync::atomic::Ordering) -> u64 {
            self.$field.fetch_and_u64(o, b, ord)
        }
        fn swap_u64(&self, o: usize, v: u64, ord: core::sync::atomic::Ordering) -> u64 {
            self.$field.swap_u64(o, v, ord)
        }
        fn read(&self, o: usize, buf: &mut [u8]) {
            self.$field.read(o, buf)
        }
        fn write(&self, o: usize, buf: &[u8]) {
            self.$field.write(o, buf)
        }
        fn fill(&self, o: usize, len: usize, byte: u8) {
            self.$field.fill(o, len, byte)
        }
        fn fence(&self, order: core::sync::atomic::Ordering) {
            self.$field.fence(order)
        }
    };
}

/// Panics unless `[offset, offset + len)` lies in a region of `region_len`
/// bytes and `offset` is a multiple of `align`. Implementations of
/// [`SharedMemory`] share this check.
#[inline]
#[track_caller]
pub fn check_access(region_len: usize, offset: usize, len: usize, align: usize) {
    let end = offset.checked_add(len);
    assert!(
        matches!(end, Some(e) if e <= region_len) && offset.is_multiple_of(align),
        "shared memory access out of bounds or misaligned: offset {offset:#x}, len {len}, align {align}, region {region_len:#x}"
    );
}

/// Memory made of `AtomicU64` words on the heap, shared by cloning.
///
/// A `WordMemory` is a view (`offset`, `len`) onto a reference-counted block of
/// words; [`slice`](Self::slice) makes narrower views of the same block. All
/// access is atomic at word level, so several threads (or simulated domains)
/// may use the same block without `unsafe`. Multi-byte values are stored
/// little-endian, as on every platform Xen supports for this project.
#[derive(Clone)]
pub struct WordMemory {
    /// Boxed, not `Arc<[_]>`: an `Arc` of a slice is filled word by word
    /// (every page touched at once), while the box comes zeroed from the
    /// allocator (`calloc`), which takes a large block fresh from the
    /// system, whose pages cost memory only once used: a simulated
    /// domain's 32 MiB of RAM costs what its guest touches.
    words: Arc<Box<[AtomicU64]>>,
    offset: usize,
    len: usize,
}

impl fmt::Debug for WordMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WordMemory")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl WordMemory {
    /// A new zero-filled block of `len` bytes (rounded up to whole words).
    pub fn new(len: usize) -> Self {
        let n = len.div_ceil(8);
        let words = <[AtomicU64] as zerocopy::FromZeros>::new_box_zeroed_with_elems(n)
            .unwrap_or_else(|_| {
                let layout = core::alloc::Layout::array::<u64>(n)
                    .unwrap_or(core::alloc::Layout::new::<u64>());
                alloc::alloc::handle_alloc_error(layout)
            });
        WordMemory {
            words: Arc::new(words),
            offset: 0,
            len,
        }
    }

    /// A view of `len` bytes of this view starting at `offset`, sharing memory.
    /// `offset` must be a multiple of 8. Panics if out of range.
    pub fn slice(&self, offset: usize, len: usize) -> Self {
        check_access(self.len, offset, len, 8);
        WordMemory {
            words: self.words.clone(),
            offset: self.offset + offset,
            len,
        }
    }

    /// Whether two views share the same underlying block.
    pub fn same_block(&self, other: &WordMemory) -> bool {
        Arc::ptr_eq(&self.words, &other.words)
    }

    /// Offset of this view from the start of its block, in bytes.
    pub fn block_offset(&self) -> usize {
        self.offset
    }

    #[inline]
    fn word(&self, byte: usize) -> (&AtomicU64, u32) {
        let abs = self.offset + byte;
        (&self.words[abs / 8], ((abs % 8) * 8) as u32)
    }

    /// Atomically update the bits selected by `mask` (within one word) to
    /// `value & mask`, returning the previous word.
    #[inline]
    fn update_bits(&self, byte: usize, mask: u64, value: u64, order: Ordering) -> u64 {
        let (w, _) = self.word(byte);
        let mut old = w.load(Ordering::Relaxed);
        loop {
            let new = (old & !mask) | (value & mask);
            match w.compare_exchange_weak(old, new, order, Ordering::Relaxed) {
                Ok(prev) => return prev,
                Err(actual) => old = actual,
            }
        }
    }
}

/// The ordering to use for the load part of an access requested with
/// `order` (a load cannot be `Release`).
pub fn load_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Release => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

/// The ordering to use for the store part of an access requested with
/// `order` (a store cannot be `Acquire`).
pub fn store_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Acquire => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Release,
        o => o,
    }
}

impl SharedMemory for WordMemory {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> u8 {
        check_access(self.len, offset, 1, 1);
        let (w, shift) = self.word(offset);
        (w.load(load_order(order)) >> shift) as u8
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) {
        check_access(self.len, offset, 1, 1);
        let (_, shift) = self.word(offset);
        self.update_bits(offset, 0xff << shift, u64::from(value) << shift, order);
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> u16 {
        check_access(self.len, offset, 2, 2);
        let (w, shift) = self.word(offset);
        (w.load(load_order(order)) >> shift) as u16
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) {
        check_access(self.len, offset, 2, 2);
        let (_, shift) = self.word(offset);
        self.update_bits(offset, 0xffff << shift, u64::from(value) << shift, order);
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
        order: Ordering,
    ) -> Result<u16, u16> {
        check_access(self.len, offset, 2, 2);
        let (w, shift) = self.word(offset);
        let mask = 0xffffu64 << shift;
        let mut old = w.load(Ordering::Relaxed);
        loop {
            let cur = (old >> shift) as u16;
            if cur != current {
                return Err(cur);
            }
            let next = (old & !mask) | (u64::from(new) << shift);
            match w.compare_exchange_weak(old, next, order, load_order(order)) {
                Ok(_) => return Ok(cur),
                Err(actual) => old = actual,
            }
        }
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        check_access(self.len, offset, 4, 4);
        let (w, shift) = self.word(offset);
        (w.load(load_order(order)) >> shift) as u32
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        check_access(self.len, offset, 4, 4);
        let (_, shift) = self.word(offset);
        self.update_bits(
            offset,
            0xffff_ffff << shift,
            u64::from(value) << shift,
            order,
        );
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        check_access(self.len, offset, 8, 8);
        self.word(offset).0.load(load_order(order))
    }

    fn store_u64(&self, offset: usize, value: u64, order: Ordering) {
        check_access(self.len, offset, 8, 8);
        self.word(offset).0.store(value, store_order(order));
    }

    fn fetch_or_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        check_access(self.len, offset, 8, 8);
        self.word(offset).0.fetch_or(bits, order)
    }

    fn fetch_and_u64(&self, offset: usize, bits: u64, order: Ordering) -> u64 {
        check_access(self.len, offset, 8, 8);
        self.word(offset).0.fetch_and(bits, order)
    }

    fn swap_u64(&self, offset: usize, value: u64, order: Ordering) -> u64 {
        check_access(self.len, offset, 8, 8);
        self.word(offset).0.swap(value, order)
    }

    fn read(&self, offset: usize, buf: &mut [u8]) {
        check_access(self.len, offset, buf.len(), 1);
        let abs = self.offset + offset;
        // A partial first word, whole words (fixed-size copies the compiler
        // turns into plain moves: this is every grant copy's inner loop in
        // the simulator), a partial last word.
        let head = ((8 - abs % 8) % 8).min(buf.len());
        let (first, rest) = buf.split_at_mut(head);
        if !first.is_empty() {
            let word = self.words[abs / 8].load(Ordering::Relaxed).to_le_bytes();
            first.copy_from_slice(&word[abs % 8..abs % 8 + head]);
        }
        let base = (abs + head) / 8;
        let whole = rest.len() / 8;
        let mut chunks = rest.chunks_exact_mut(8);
        // Zipped with the words' slice: no bounds check per word.
        for (chunk, w) in (&mut chunks).zip(&self.words[base..base + whole]) {
            let chunk: &mut [u8; 8] = chunk.try_into().expect("chunks of 8");
            *chunk = w.load(Ordering::Relaxed).to_le_bytes();
        }
        let last = chunks.into_remainder();
        if !last.is_empty() {
            let word = self.words[base + whole]
                .load(Ordering::Relaxed)
                .to_le_bytes();
            last.copy_from_slice(&word[..last.len()]);
        }
    }

    fn write(&self, offset: usize, buf: &[u8]) {
        check_access(self.len, offset, buf.len(), 1);
        let abs = self.offset + offset;
        // Partial words keep their other bytes (another party may own them);
        // whole words are plain stores.
        let partial = |at: usize, bytes: &[u8]| {
            let start = at % 8;
            let mut word = [0u8; 8];
            word[start..start + bytes.len()].copy_from_slice(bytes);
            let mask = (u64::MAX >> (64 - bytes.len() * 8)) << (start * 8);
            let w = &self.words[at / 8];
            let _ = w.fetch_and(!mask, Ordering::Relaxed);
            let _ = w.fetch_or(u64::from_le_bytes(word), Ordering::Relaxed);
        };
        let head = ((8 - abs % 8) % 8).min(buf.len());
        let (first, rest) = buf.split_at(head);
        if !first.is_empty() {
            partial(abs, first);
        }
        let base = (abs + head) / 8;
        let mut chunks = rest.chunks_exact(8);
        for (chunk, w) in (&mut chunks).zip(&self.words[base..base + rest.len() / 8]) {
            let bytes: [u8; 8] = chunk.try_into().expect("chunks of 8");
            w.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        let last = chunks.remainder();
        if !last.is_empty() {
            partial((base + rest.len() / 8) * 8, last);
        }
    }
}

/// Several equally sized regions seen as one, in order.
///
/// A backend maps the pages of a multi-page ring one grant at a time; they need
/// not be adjacent in its address space. `MultiPage` presents them as one
/// region. Atomic accesses never straddle a page; byte copies may.
#[derive(Clone, Debug)]
pub struct MultiPage<M> {
    pages: alloc::vec::Vec<M>,
    page_len: usize,
}

impl<M: SharedMemory> MultiPage<M> {
    /// Join `pages`; each must be `page_len` bytes long (normally
    /// [`PAGE_SIZE`]). Returns `None` if a page has another length or there are
    /// no pages.
    pub fn new(pages: alloc::vec::Vec<M>, page_len: usize) -> Option<Self> {
        if pages.is_empty() || page_len == 0 || pages.iter().any(|p| p.len() != page_len) {
            return None;
        }
        Some(MultiPage { pages, page_len })
    }

    /// The pages, in order; to unmap them, for example.
    pub fn into_pages(self) -> alloc::vec::Vec<M> {
        self.pages
    }

    #[inline]
    #[track_caller]
    fn locate(&self, offset: usize, len: usize) -> (&M, usize) {
        check_access(self.len(), offset, len, 1);
        let page = offset / self.page_len;
        let within = offset % self.page_len;
        assert!(
            within + len <= self.page_len,
            "atomic access straddles a page"
        );
        (&self.pages[page], within)
    }
}

impl<M: SharedMemory> SharedMemory for MultiPage<M> {
    fn len(&self) -> usize {
        self.pages.len() * self.page_len
    }
    fn load_u8(&self, o: usize, ord: Ordering) -> u8 {
        let (p, o) = self.locate(o, 1);
        p.load_u8(o, ord)
    }
    fn store_u8(&self, o: usize, v: u8, ord: Ordering) {
        let (p, o) = self.locate(o, 1);
        p.store_u8(o, v, ord)
    }
    fn load_u16(&self, o: usize, ord: Ordering) -> u16 {
        let (p, o) = self.locate(o, 2);
        p.load_u16(o, ord)
    }
    fn store_u16(&self, o: usize, v: u16, ord: Ordering) {
        let (p, o) = self.locate(o, 2);
        p.store_u16(o, v, ord)
    }
    fn compare_exchange_u16(&self, o: usize, c: u16, n: u16, ord: Ordering) -> Result<u16, u16> {
        let (p, o) = self.locate(o, 2);
        p.compare_exchange_u16(o, c, n, ord)
    }
    fn load_u32(&self, o: usize, ord: Ordering) -> u32 {
        let (p, o) = self.locate(o, 4);
        p.load_u32(o, ord)
    }
    fn store_u32(&self, o: usize, v: u32, ord: Ordering) {
        let (p, o) = self.locate(o, 4);
        p.store_u32(o, v, ord)
    }
    fn load_u64(&self, o: usize, ord: Ordering) -> u64 {
        let (p, o) = self.locate(o, 8);
        p.load_u64(o, ord)
    }
    fn store_u64(&self, o: usize, v: u64, ord: Ordering) {
        let (p, o) = self.locate(o, 8);
        p.store_u64(o, v, ord)
    }
    fn fetch_or_u64(&self, o: usize, b: u64, ord: Ordering) -> u64 {
        let (p, o) = self.locate(o, 8);
        p.fetch_or_u64(o, b, ord)
    }
    fn fetch_and_u64(&self, o: usize, b: u64, ord: Ordering) -> u64 {
        let (p, o) = self.locate(o, 8);
        p.fetch_and_u64(o, b, ord)
    }
    fn swap_u64(&self, o: usize, v: u64, ord: Ordering) -> u64 {
        let (p, o) = self.locate(o, 8);
        p.swap_u64(o, v, ord)
    }
    fn read(&self, offset: usize, buf: &mut [u8]) {
        check_access(self.len(), offset, buf.len(), 1);
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done;
            let within = at % self.page_len;
            let n = (self.page_len - within).min(buf.len() - done);
            self.pages[at / self.page_len].read(within, &mut buf[done..done + n]);
            done += n;
        }
    }
    fn write(&self, offset: usize, buf: &[u8]) {
        check_access(self.len(), offset, buf.len(), 1);
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done;
            let within = at % self.page_len;
            let n = (self.page_len - within).min(buf.len() - done);
            self.pages[at / self.page_len].write(within, &buf[done..done + n]);
            done += n;
        }
    }
    fn fence(&self, order: Ordering) {
        self.pages[0].fence(order)
    }
}

/// A block of guest pages: shared memory that also knows its frame numbers, so
/// it can be granted to another domain page by page.
pub trait Pages: SharedMemory {
    /// Number of pages in the block; `len()` is this times [`PAGE_SIZE`].
    fn count(&self) -> usize;
    /// Frame number of page `index` (`index < count()`, else panics).
    fn gfn(&self, index: usize) -> Gfn;
}

/// Why a page allocation failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// Not enough free memory for the request.
    OutOfMemory,
    /// A request for zero pages, or for more than the allocator ever hands out
    /// at once.
    BadSize,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfMemory => f.write_str("out of guest memory"),
            AllocError::BadSize => f.write_str("unsupported allocation size"),
        }
    }
}

impl core::error::Error for AllocError {}

/// Allocates guest pages: memory that can be granted to other domains.
///
/// Allocated pages are zero-filled. Pages must be given back with
/// [`free`](Self::free); an allocator MAY count outstanding pages so tests can
/// check that nothing leaks ([`outstanding`](Self::outstanding)).
pub trait PageAlloc {
    /// The block type handed out.
    type Block: Pages + Clone;

    /// Allocate `count` pages, contiguous in the guest's view of memory.
    ///
    /// Errors: [`AllocError::BadSize`] if `count` is 0 or larger than the
    /// allocator supports; [`AllocError::OutOfMemory`] if there is not enough
    /// free memory.
    fn alloc(&self, count: usize) -> Result<Self::Block, AllocError>;

    /// Give a block back. The caller MUST have ended every grant of its pages
    /// first. Never fails.
    fn free(&self, block: Self::Block);

    /// Number of pages currently allocated and not freed.
    fn outstanding(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_memory_byte_and_atomic_views_agree() {
        let m = WordMemory::new(64);
        m.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let mut out = [0u8; 11];
        m.read(3, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(m.load_u8(3, Ordering::Relaxed), 1);
        assert_eq!(
            m.load_u32(4, Ordering::Relaxed),
            u32::from_le_bytes([2, 3, 4, 5])
        );
        m.store_u16(8, 0xbeef, Ordering::Relaxed);
        let mut b = [0u8; 2];
        m.read(8, &mut b);
        assert_eq!(b, 0xbeefu16.to_le_bytes());
        // Neighbouring bytes untouched.
        assert_eq!(m.load_u8(7, Ordering::Relaxed), 5);
        assert_eq!(m.load_u8(10, Ordering::Relaxed), 8);
        assert_eq!(
            m.compare_exchange_u16(8, 1, 2, Ordering::SeqCst),
            Err(0xbeef)
        );
        assert_eq!(
            m.compare_exchange_u16(8, 0xbeef, 2, Ordering::SeqCst),
            Ok(0xbeef)
        );
        assert_eq!(m.load_u16(8, Ordering::Relaxed), 2);
    }

    #[test]
    fn byte_copies_match_a_model_at_every_offset_and_length() {
        // 40 bytes through a view starting at word 1: every alignment of
        // start and end, and lengths 0 to 40, against a plain byte array.
        let block = WordMemory::new(48);
        let m = block.slice(8, 40);
        let mut model = [0u8; 40];
        let mut stamp = 0u8;
        for off in 0..=40 {
            for len in 0..=40 - off {
                stamp = stamp.wrapping_add(1);
                let data: alloc::vec::Vec<u8> =
                    (0..len).map(|i| stamp.wrapping_mul(31) ^ i as u8).collect();
                m.write(off, &data);
                model[off..off + len].copy_from_slice(&data);
                let mut all = [0u8; 40];
                m.read(0, &mut all);
                assert_eq!(all, model, "after writing {len} bytes at {off}");
                let mut part = alloc::vec![0u8; len];
                m.read(off, &mut part);
                assert_eq!(part[..], model[off..off + len]);
            }
        }
        // The word before the view was never touched.
        assert_eq!(block.load_u64(0, Ordering::Relaxed), 0);
    }

    #[test]
    fn slices_share_memory() {
        let m = WordMemory::new(4096 * 2);
        let page1 = m.slice(4096, 4096);
        page1.store_u64(0, 42, Ordering::Relaxed);
        assert_eq!(m.load_u64(4096, Ordering::Relaxed), 42);
        assert!(page1.same_block(&m));
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_panics() {
        let m = WordMemory::new(16);
        m.load_u32(16, Ordering::Relaxed);
    }

    #[test]
    fn multipage_reads_across_pages() {
        let a = WordMemory::new(16);
        let b = WordMemory::new(16);
        let mp = MultiPage::new(alloc::vec![a.clone(), b.clone()], 16).unwrap();
        mp.write(12, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            a.load_u32(12, Ordering::Relaxed),
            u32::from_le_bytes([1, 2, 3, 4])
        );
        assert_eq!(
            b.load_u32(0, Ordering::Relaxed),
            u32::from_le_bytes([5, 6, 7, 8])
        );
        let mut out = [0u8; 8];
        mp.read(12, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        mp.store_u32(16, 7, Ordering::Relaxed);
        assert_eq!(b.load_u32(0, Ordering::Relaxed), 7);
    }
}
