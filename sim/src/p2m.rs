//! Guest memory: each domain's RAM is one block of `AtomicU64` words
//! ([`WordMemory`]), and a small p2m of "special" frames overlays it: pages
//! Xen placed with `add_to_physmap` (shared_info, grant frames) and foreign
//! pages mapped with grant maps.
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

/// One domain's guest-physical memory.
pub(crate) struct DomainMemory {
    ram: Mutex<Option<WordMemory>>,
    ram_pages: u64,
    special: Mutex<BTreeMap<u64, Special>>,
}

impl DomainMemory {
    pub(crate) fn new(ram_pages: usize) -> Self {
        DomainMemory {
            ram: Mutex::new(Some(WordMemory::new(ram_pages * PAGE_SIZE))),
            ram_pages: ram_pages as u64,
            special: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether `gfn` is plain RAM (not overlaid).
    pub(crate) fn is_ram(&self, gfn: Gfn) -> bool {
        gfn.0 < self.ram_pages && !self.special.lock().unwrap().contains_key(&gfn.0)
    }

    /// A RAM page by frame number (for grants and grant copies), or `None`.
    pub(crate) fn ram_page(&self, gfn: Gfn) -> Option<WordMemory> {
        if !self.is_ram(gfn) {
            return None;
        }
        let ram = self.ram.lock().unwrap();
        Some(ram.as_ref()?.slice(gfn.0 as usize * PAGE_SIZE, PAGE_SIZE))
    }

    /// The domain is gone: drop our references to its memory. Pages other
    /// domains still map stay alive through their own references, as Xen's
    /// page reference counts keep them.
    pub(crate) fn release(&self) {
        *self.ram.lock().unwrap() = None;
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
        let ram = self.ram.lock().unwrap();
        let ram = ram.as_ref().ok_or(Errno::EINVAL)?;
        Ok(ram.slice(gfn.0 as usize * PAGE_SIZE, count * PAGE_SIZE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::SharedMemory;
    use std::sync::atomic::Ordering;

    #[test]
    fn ram_overlays_and_contiguity() {
        let m = DomainMemory::new(8);
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
}
