//! Guest memory: each domain's RAM is made of `AtomicU64` words
//! ([`WordMemory`]), and a small p2m of "special" frames overlays it: pages
//! Xen placed with `add_to_physmap` (shared_info, grant frames) and foreign
//! pages mapped with grant maps.
//!
//! RAM is two blocks: the last few frames (the toolstack's magic pages,
//! which it fills at once) in one, allocated with the domain, and the rest
//! in another, allocated when first reached. A guest that never uses its
//! RAM (a domain with xenstore and an event channel only) costs no RAM on
//! the host: the allocator clears a small block it hands out, touching
//! every page of it, so even untouched RAM would otherwise count.
//!
//! Because every access goes through `WordMemory`, guests, xenstored and
//! backends share memory without `unsafe`, even in free-running mode.

use hal::mem::{Gfn, PAGE_SIZE, WordMemory};
use std::collections::BTreeMap;
use std::sync::Mutex;
use xen_pv::abi::Errno;

/// A frame the p2m points at outside the domain's RAM: `page` of `block`.
#[derive(Clone, Debug)]
struct Special {
    block: WordMemory,
    page: usize,
}

/// The main block of RAM: not yet reached, in use, or dropped with the
/// domain.
enum Ram {
    /// Never reached: allocated on first use.
    Untouched,
    /// Allocated.
    Live(WordMemory),
    /// The domain is gone.
    Released,
}

/// One domain's guest-physical memory.
pub(crate) struct DomainMemory {
    /// Frames `0..low_pages`.
    low: Mutex<Ram>,
    /// Frames `low_pages..ram_pages`, or `None` once released.
    tail: Mutex<Option<WordMemory>>,
    low_pages: u64,
    ram_pages: u64,
    special: Mutex<BTreeMap<u64, Special>>,
}

impl DomainMemory {
    /// `ram_pages` frames of RAM, of which the last `tail_pages` are
    /// allocated now and the rest when first reached.
    pub(crate) fn new(ram_pages: usize, tail_pages: usize) -> Self {
        let tail_pages = tail_pages.min(ram_pages);
        DomainMemory {
            low: Mutex::new(Ram::Untouched),
            tail: Mutex::new(Some(WordMemory::new(tail_pages * PAGE_SIZE))),
            low_pages: (ram_pages - tail_pages) as u64,
            ram_pages: ram_pages as u64,
            special: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `gfn` is plain RAM (not overlaid).
    pub(crate) fn is_ram(&self, gfn: Gfn) -> bool {
        gfn.0 < self.ram_pages && !self.special.lock().unwrap().contains_key(&gfn.0)
    }

    /// `count` frames of RAM from `gfn`, which the caller has checked are
    /// RAM and not overlaid; `None` if they straddle the two blocks or the
    /// domain is gone.
    fn ram_frames(&self, gfn: u64, count: u64) -> Option<WordMemory> {
        let end = gfn + count;
        if end <= self.low_pages {
            let mut low = self.low.lock().unwrap();
            if let Ram::Untouched = *low {
                *low = Ram::Live(WordMemory::new(self.low_pages as usize * PAGE_SIZE));
            }
            let Ram::Live(block) = &*low else {
                return None;
            };
            Some(block.slice(gfn as usize * PAGE_SIZE, count as usize * PAGE_SIZE))
        } else if gfn >= self.low_pages {
            let tail = self.tail.lock().unwrap();
            let at = (gfn - self.low_pages) as usize * PAGE_SIZE;
            Some(tail.as_ref()?.slice(at, count as usize * PAGE_SIZE))
        } else {
            None
        }
    }

    /// A RAM page by frame number (for grants and grant copies), or `None`.
    pub(crate) fn ram_page(&self, gfn: Gfn) -> Option<WordMemory> {
        if !self.is_ram(gfn) {
            return None;
        }
        self.ram_frames(gfn.0, 1)
    }

    /// Whether the main block of RAM has been allocated (for tests).
    #[cfg(test)]
    fn low_allocated(&self) -> bool {
        matches!(*self.low.lock().unwrap(), Ram::Live(_))
    }

    /// The domain is gone: drop our references to its memory. Pages other
    /// domains still map stay alive through their own references, as Xen's
    /// page reference counts keep them.
    pub(crate) fn release(&self) {
        *self.low.lock().unwrap() = Ram::Released;
        *self.tail.lock().unwrap() = None;
        self.special.lock().unwrap().clear();
    }

    /// Put page `page` of `block` at `gfn`, replacing whatever was there.
    pub(crate) fn map_special(&self, gfn: Gfn, block: &WordMemory, page: usize) {
        self.special.lock().unwrap().insert(
            gfn.0,
            Special {
                block: block.clone(),
                page,
            },
        );
    }

    /// Remove an overlay; returns whether there was one.
    pub(crate) fn unmap_special(&self, gfn: Gfn) -> bool {
        self.special.lock().unwrap().remove(&gfn.0).is_some()
    }

    /// Whether `gfn` holds an overlay.
    pub(crate) fn has_special(&self, gfn: Gfn) -> bool {
        self.special.lock().unwrap().contains_key(&gfn.0)
    }

    /// Reach `count` frames from `gfn`: RAM, or overlays that are consecutive
    /// pages of one block. `EINVAL` otherwise.
    pub(crate) fn map_frames(&self, gfn: Gfn, count: usize) -> Result<WordMemory, Errno> {
        if count == 0 {
            return Err(Errno::EINVAL);
        }
        let special = self.special.lock().unwrap();
        if let Some(first) = special.get(&gfn.0) {
            for i in 1..count {
                match special.get(&(gfn.0 + i as u64)) {
                    Some(s) if s.block.same_block(&first.block) && s.page == first.page + i => {}
                    _ => return Err(Errno::EINVAL),
                }
            }
            return Ok(first.block.slice(first.page * PAGE_SIZE, count * PAGE_SIZE));
        }
        let end = gfn.0.checked_add(count as u64).ok_or(Errno::EINVAL)?;
        if end > self.ram_pages || special.range(gfn.0..end).next().is_some() {
            return Err(Errno::EINVAL);
        }
        self.ram_frames(gfn.0, count as u64).ok_or(Errno::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::SharedMemory;
    use std::sync::atomic::Ordering;

    #[test]
    fn ram_overlays_and_contiguity() {
        let m = DomainMemory::new(8, 0);
        assert!(m.map_frames(Gfn(6), 2).is_ok());
        assert_eq!(m.map_frames(Gfn(7), 2).unwrap_err(), Errno::EINVAL);
        let block = WordMemory::new(2 * PAGE_SIZE);
        m.map_special(Gfn(100), &block, 0);
        m.map_special(Gfn(101), &block, 1);
        let two = m.map_frames(Gfn(100), 2).unwrap();
        two.store_u32(PAGE_SIZE, 7, Ordering::Relaxed);
        assert_eq!(block.load_u32(PAGE_SIZE, Ordering::Relaxed), 7);
        // Overlay on RAM hides the RAM page.
        m.map_special(Gfn(3), &block, 0);
        assert!(m.ram_page(Gfn(3)).is_none());
        assert_eq!(m.map_frames(Gfn(2), 2).unwrap_err(), Errno::EINVAL);
        assert!(m.unmap_special(Gfn(3)));
        assert!(m.ram_page(Gfn(3)).is_some());
    }

    #[test]
    fn ram_is_allocated_when_first_reached() {
        let m = DomainMemory::new(8, 2);
        // The tail (magic pages) exists from the start, the rest does not.
        let store = m.map_frames(Gfn(7), 1).unwrap();
        store.store_u32(0, 5, Ordering::Relaxed);
        assert!(!m.low_allocated());
        assert_eq!(
            m.map_frames(Gfn(6), 2)
                .unwrap()
                .load_u32(PAGE_SIZE, Ordering::Relaxed),
            5
        );
        assert!(!m.low_allocated());
        // A range across the two blocks is not one block.
        assert_eq!(m.map_frames(Gfn(5), 2).unwrap_err(), Errno::EINVAL);
        let low = m.ram_page(Gfn(1)).unwrap();
        assert!(m.low_allocated());
        low.store_u32(8, 9, Ordering::Relaxed);
        assert_eq!(
            m.map_frames(Gfn(0), 6)
                .unwrap()
                .load_u32(PAGE_SIZE + 8, Ordering::Relaxed),
            9
        );
        // Once released, nothing is reached, and nothing is allocated again.
        m.release();
        assert!(m.ram_page(Gfn(1)).is_none());
        assert!(m.ram_page(Gfn(7)).is_none());
        assert_eq!(m.map_frames(Gfn(0), 1).unwrap_err(), Errno::EINVAL);
        assert!(!m.low_allocated());
        // Still readable through a view taken before.
        assert_eq!(low.load_u32(8, Ordering::Relaxed), 9);
    }
}
