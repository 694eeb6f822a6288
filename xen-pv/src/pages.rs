//! A page allocator over a range of guest frames.

use crate::hypercall::Hypervisor;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use hal::mem::{AllocError, Gfn, PAGE_SIZE, PageAlloc, Pages, SharedMemory};

/// A block of consecutive frames handed out by [`FramePool`].
#[derive(Clone, Debug)]
pub struct FrameBlock<M> {
    mem: M,
    first: Gfn,
    count: usize,
}

impl<M> FrameBlock<M> {
    /// The memory of the whole block.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}

impl<M: SharedMemory> SharedMemory for FrameBlock<M> {
    hal::forward_shared_memory!(mem);
}

impl<M: SharedMemory> Pages for FrameBlock<M> {
    fn count(&self) -> usize {
        self.count
    }
    fn gfn(&self, index: usize) -> Gfn {
        assert!(
            index < self.count,
            "page index {index} out of {}",
            self.count
        );
        Gfn(self.first.0 + index as u64)
    }
}

/// First-fit allocator of consecutive frames in `[base, base + count)`,
/// reached through [`Hypervisor::map_frames`]. Counts outstanding pages.
pub struct FramePool<H: Hypervisor> {
    h: H,
    base: Gfn,
    count: usize,
    used: RefCell<Vec<u64>>,
    outstanding: Cell<usize>,
    hint: Cell<usize>,
}

/// The largest block [`FramePool`] hands out at once.
pub const MAX_BLOCK_PAGES: usize = 64;

impl<H: Hypervisor> FramePool<H> {
    /// A pool of the `count` frames from `base`, all free.
    pub fn new(h: H, base: Gfn, count: usize) -> Self {
        FramePool {
            h,
            base,
            count,
            used: RefCell::new(vec![0; count.div_ceil(64)]),
            outstanding: Cell::new(0),
            hint: Cell::new(0),
        }
    }

    /// Frames in the pool.
    pub fn capacity(&self) -> usize {
        self.count
    }

    fn is_used(used: &[u64], i: usize) -> bool {
        used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(used: &mut [u64], i: usize, on: bool) {
        if on {
            used[i / 64] |= 1 << (i % 64);
        } else {
            used[i / 64] &= !(1 << (i % 64));
        }
    }

    fn find(&self, used: &[u64], want: usize) -> Option<usize> {
        let start = self.hint.get().min(self.count);
        for (from, to) in [(start, self.count), (0, start)] {
            let mut run = 0;
            let mut i = from;
            while i < to {
                if Self::is_used(used, i) {
                    run = 0;
                } else {
                    run += 1;
                    if run == want {
                        return Some(i + 1 - want);
                    }
                }
                i += 1;
            }
        }
        None
    }
}

impl<H: Hypervisor> PageAlloc for FramePool<H> {
    type Block = FrameBlock<H::Mem>;

    fn alloc(&self, count: usize) -> Result<Self::Block, AllocError> {
        if count == 0 || count > MAX_BLOCK_PAGES {
            return Err(AllocError::BadSize);
        }
        let mut used = self.used.borrow_mut();
        let at = self.find(&used, count).ok_or(AllocError::OutOfMemory)?;
        let first = Gfn(self.base.0 + at as u64);
        let mem = self
            .h
            .map_frames(first, count)
            .map_err(|_| AllocError::OutOfMemory)?;
        for i in at..at + count {
            Self::set(&mut used, i, true);
        }
        self.hint.set(at + count);
        self.outstanding.set(self.outstanding.get() + count);
        drop(used);
        mem.fill(0, count * PAGE_SIZE, 0);
        Ok(FrameBlock { mem, first, count })
    }

    fn free(&self, block: Self::Block) {
        let at = (block.first.0 - self.base.0) as usize;
        let mut used = self.used.borrow_mut();
        for i in at..at + block.count {
            debug_assert!(Self::is_used(&used, i), "double free of frame {i}");
            Self::set(&mut used, i, false);
        }
        self.outstanding.set(self.outstanding.get() - block.count);
        if at < self.hint.get() {
            self.hint.set(at);
        }
    }

    fn outstanding(&self) -> usize {
        self.outstanding.get()
    }
}
