//! PV page tables: mapping the rest of RAM and a window for Xen's pages.
//!
//! Xen builds the initial page tables for the bootstrap area only (the
//! image, the p2m list, `start_info`, the tables themselves, a boot stack
//! and at least 512 KiB of padding) and keeps every page-table page
//! read-only to us: changes go through `mmu_update`, which checks each new
//! entry. This module maps every other RAM frame at its pseudo-physical
//! address (virtual = pseudo-physical, as `VIRT_BASE` is 0) and makes empty
//! L1 tables for a window above RAM, where `shared_info`, the grant table
//! and foreign grants get mapped with `update_va_mapping`.
//!
//! A new table page is taken from free RAM that is already mapped, zeroed
//! through that mapping, remapped read-only (Xen refuses a table that is
//! writable anywhere), then linked into its parent with `mmu_update`. The
//! walk itself is generic over [`PvMmu`], so it is tested on the host
//! against a model of Xen's checks.

use core::fmt;
use hal::mem::PAGE_SIZE;
use x86_64::structures::paging::PageTableFlags as F;
use xen_pv::abi::Errno;
use xen_pv::abi::x86_64::{MmuUpdate, mmu};

/// Flags of an entry that maps data we read and write.
pub const DATA: F = F::PRESENT
    .union(F::WRITABLE)
    .union(F::USER_ACCESSIBLE)
    .union(F::ACCESSED)
    .union(F::DIRTY);
/// Flags of an entry that points to a lower-level table.
pub const TABLE: F = DATA;
/// Flags of the (read-only) mapping of a page-table page.
pub const READ_ONLY: F = F::PRESENT.union(F::USER_ACCESSIBLE).union(F::ACCESSED);

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes one L1 table maps.
pub const L1_SPAN: u64 = 512 * PAGE;

/// Why mapping failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MmError {
    /// Xen refused a page-table update.
    Xen(Errno),
    /// No free mapped frame was left for a new table.
    OutOfTables,
    /// A page-table entry points to a frame that is not ours.
    ForeignTable(u64),
    /// A virtual address is already mapped to something else: the address
    /// and the entry found.
    AlreadyMapped(u64, u64),
    /// A large-page entry where a table was expected (Xen never builds
    /// those for a PV guest).
    LargePage(u64),
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmError::Xen(e) => write!(f, "Xen refused a page-table update: {e}"),
            MmError::OutOfTables => f.write_str("no free mapped frame left for a page table"),
            MmError::ForeignTable(m) => {
                write!(
                    f,
                    "a page-table entry points to machine frame {m:#x}, not ours"
                )
            }
            MmError::AlreadyMapped(va, e) => {
                write!(f, "{va:#x} is already mapped (entry {e:#x})")
            }
            MmError::LargePage(va) => write!(f, "a large page maps {va:#x}"),
        }
    }
}

/// What the walk needs from the platform (Xen on x86, a model in tests).
pub trait PvMmu {
    /// The machine frame of our frame `pfn` (the p2m list).
    fn mfn(&self, pfn: u64) -> Option<u64>;
    /// Our frame for machine frame `mfn` (the m2p table), checked against
    /// the p2m list.
    fn pfn(&self, mfn: u64) -> Option<u64>;
    /// Entry `index` of the table at our frame `pfn` (mapped read-only).
    fn read_entry(&self, pfn: u64, index: usize) -> u64;
    /// Zero the mapped, writable frame `pfn` and remap it read-only, so it
    /// can become a page table.
    fn prepare_table(&self, pfn: u64) -> Result<(), Errno>;
    /// `mmu_update`.
    fn update(&self, reqs: &[MmuUpdate]) -> Result<(), Errno>;
}

/// Walks and extends the page tables rooted at the L4 in frame `l4`,
/// taking new table pages from `[next_free, free_end)`.
pub struct Mapper<'a, M: PvMmu> {
    mmu: &'a M,
    l4: u64,
    /// The next frame to use for a table; everything below it is taken.
    pub next_free: u64,
    /// Frames up to here are mapped (and so usable as tables).
    pub free_end: u64,
    /// Table pages made so far.
    pub tables: usize,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

impl<'a, M: PvMmu> Mapper<'a, M> {
    /// A mapper for the tables whose L4 is our frame `l4`.
    pub fn new(mmu: &'a M, l4: u64, next_free: u64, free_end: u64) -> Self {
        Mapper {
            mmu,
            l4,
            next_free,
            free_end,
            tables: 0,
        }
    }

    fn new_table(&mut self) -> Result<(u64, u64), MmError> {
        if self.next_free >= self.free_end {
            return Err(MmError::OutOfTables);
        }
        let pfn = self.next_free;
        let mfn = self.mmu.mfn(pfn).ok_or(MmError::OutOfTables)?;
        self.mmu.prepare_table(pfn).map_err(MmError::Xen)?;
        self.next_free += 1;
        self.tables += 1;
        Ok((pfn, mfn))
    }

    /// Our frame of the L1 table covering `va`, making the L3, L2 and L1
    /// tables that are missing.
    ///
    /// Errors: [`MmError`].
    pub fn l1_for(&mut self, va: u64) -> Result<u64, MmError> {
        let mut table = self.l4;
        for level in [4, 3, 2] {
            let i = index(va, level);
            let e = self.mmu.read_entry(table, i);
            table = if e & F::PRESENT.bits() == 0 {
                let (pfn, mfn) = self.new_table()?;
                let parent = self.mmu.mfn(table).ok_or(MmError::ForeignTable(table))?;
                self.mmu
                    .update(&[MmuUpdate {
                        ptr: (parent * PAGE + 8 * i as u64) | mmu::NORMAL_PT_UPDATE,
                        val: (mfn * PAGE) | TABLE.bits(),
                    }])
                    .map_err(MmError::Xen)?;
                pfn
            } else if e & F::HUGE_PAGE.bits() != 0 {
                return Err(MmError::LargePage(va));
            } else {
                let mfn = (e & ADDR_MASK) / PAGE;
                self.mmu.pfn(mfn).ok_or(MmError::ForeignTable(mfn))?
            };
        }
        Ok(table)
    }

    /// Map frames `[first, end)` at their pseudo-physical addresses, in
    /// order (so each 2 MiB mapped adds frames usable for later tables).
    /// Entries already mapping the right frame are kept.
    ///
    /// Errors: [`MmError`]; what was mapped before the error stays mapped.
    pub fn map_ram(&mut self, first: u64, end: u64) -> Result<(), MmError> {
        let mut pfn = first;
        let mut batch = [MmuUpdate::default(); 512];
        while pfn < end {
            let va = pfn * PAGE;
            let chunk_end = end.min((va / L1_SPAN + 1) * L1_SPAN / PAGE);
            let l1 = self.l1_for(va)?;
            let l1_mfn = self.mmu.mfn(l1).ok_or(MmError::ForeignTable(l1))?;
            let mut n = 0;
            for p in pfn..chunk_end {
                let i = index(p * PAGE, 1);
                let mfn = self.mmu.mfn(p).ok_or(MmError::ForeignTable(p))?;
                let want = (mfn * PAGE) | DATA.bits();
                let e = self.mmu.read_entry(l1, i);
                if e & F::PRESENT.bits() != 0 {
                    if e & ADDR_MASK != mfn * PAGE {
                        return Err(MmError::AlreadyMapped(p * PAGE, e));
                    }
                    continue;
                }
                batch[n] = MmuUpdate {
                    ptr: (l1_mfn * PAGE + 8 * i as u64) | mmu::NORMAL_PT_UPDATE,
                    val: want,
                };
                n += 1;
            }
            if n > 0 {
                self.mmu.update(&batch[..n]).map_err(MmError::Xen)?;
            }
            if chunk_end > self.free_end && pfn <= self.free_end {
                self.free_end = chunk_end;
            }
            pfn = chunk_end;
        }
        Ok(())
    }

    /// Make sure L1 tables exist for `[va, va + len)` (nothing mapped).
    ///
    /// Errors: [`MmError`].
    pub fn reserve(&mut self, va: u64, len: u64) -> Result<(), MmError> {
        let mut a = va;
        while a < va + len {
            self.l1_for(a)?;
            a = (a / L1_SPAN + 1) * L1_SPAN;
        }
        Ok(())
    }
}

/// The first frame at or after `from` (below `limit`) that the page tables
/// rooted at `l4` do not map: where the padding Xen mapped after the
/// bootstrap area ends.
pub fn first_unmapped<M: PvMmu>(mmu: &M, l4: u64, from: u64, limit: u64) -> u64 {
    let mut pfn = from;
    'frames: while pfn < limit {
        let va = pfn * PAGE;
        let mut table = l4;
        for level in [4, 3, 2, 1] {
            let e = mmu.read_entry(table, index(va, level));
            if e & F::PRESENT.bits() == 0 || (level > 1 && e & F::HUGE_PAGE.bits() != 0) {
                break 'frames;
            }
            if level > 1 {
                match mmu.pfn((e & ADDR_MASK) / PAGE) {
                    Some(p) => table = p,
                    None => break 'frames,
                }
            }
        }
        pfn += 1;
    }
    pfn
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    /// A model of a PV domain's memory as Xen checks it: frames (by MFN),
    /// the level of each page-table frame, and the rules `mmu_update`
    /// enforces.
    struct Model {
        p2m: Vec<u64>,
        frames: RefCell<BTreeMap<u64, [u64; 512]>>,
        /// Page-table frames by MFN, with their level (0: prepared, not
        /// linked yet).
        tables: RefCell<BTreeMap<u64, u32>>,
        updates: RefCell<usize>,
    }

    impl Model {
        /// `nr` frames with scattered MFNs; an L4 at pfn 1 mapping pfns
        /// `[0, boot)` through one L3 (pfn 2), one L2 (pfn 3) and L1s from
        /// pfn 4. Returns the model and the first free pfn.
        fn new(nr: u64, boot: u64) -> (Self, u64) {
            let p2m: Vec<u64> = (0..nr).map(|p| 0x10_0000 + p * 7).collect();
            let m = Model {
                p2m,
                frames: RefCell::new(BTreeMap::new()),
                tables: RefCell::new(BTreeMap::new()),
                updates: RefCell::new(0),
            };
            let l1s = boot.div_ceil(512);
            let mfn = |p: u64| m.p2m[p as usize];
            m.set(mfn(1), 0, (mfn(2) * PAGE) | TABLE.bits());
            m.set(mfn(2), 0, (mfn(3) * PAGE) | TABLE.bits());
            for (p, level) in [(1, 4), (2, 3), (3, 2)] {
                m.tables.borrow_mut().insert(mfn(p), level);
            }
            for k in 0..l1s {
                let l1 = 4 + k;
                m.tables.borrow_mut().insert(mfn(l1), 1);
                m.set(mfn(3), k as usize, (mfn(l1) * PAGE) | TABLE.bits());
                for i in 0..512 {
                    let p = k * 512 + i;
                    if p < boot {
                        m.set(mfn(l1), i as usize, (mfn(p) * PAGE) | DATA.bits());
                    }
                }
            }
            (m, 4 + l1s)
        }

        fn set(&self, mfn: u64, i: usize, v: u64) {
            self.frames.borrow_mut().entry(mfn).or_insert([0; 512])[i] = v;
        }

        fn get(&self, mfn: u64, i: usize) -> u64 {
            self.frames.borrow().get(&mfn).map_or(0, |f| f[i])
        }

        /// Translate `va` as the MMU would: the data MFN, if mapped.
        fn translate(&self, va: u64) -> Option<u64> {
            let mut t = self.p2m[1];
            for level in [4, 3, 2, 1] {
                let e = self.get(t, index(va, level));
                if e & 1 == 0 {
                    return None;
                }
                t = (e & ADDR_MASK) / PAGE;
            }
            Some(t)
        }
    }

    impl PvMmu for Model {
        fn mfn(&self, pfn: u64) -> Option<u64> {
            self.p2m.get(pfn as usize).copied()
        }
        fn pfn(&self, mfn: u64) -> Option<u64> {
            self.p2m.iter().position(|&m| m == mfn).map(|p| p as u64)
        }
        fn read_entry(&self, pfn: u64, index: usize) -> u64 {
            self.get(self.p2m[pfn as usize], index)
        }
        fn prepare_table(&self, pfn: u64) -> Result<(), Errno> {
            let mfn = self.p2m[pfn as usize];
            if self.tables.borrow().contains_key(&mfn) {
                return Err(Errno::EINVAL);
            }
            self.frames.borrow_mut().insert(mfn, [0; 512]);
            self.tables.borrow_mut().insert(mfn, 0);
            Ok(())
        }
        fn update(&self, reqs: &[MmuUpdate]) -> Result<(), Errno> {
            *self.updates.borrow_mut() += 1;
            for r in reqs {
                assert_eq!(r.ptr & 3, mmu::NORMAL_PT_UPDATE);
                let (mfn, i) = (r.ptr / PAGE, (r.ptr % PAGE / 8) as usize);
                // Xen's checks: the entry is in one of our linked tables...
                let level = match self.tables.borrow().get(&mfn) {
                    Some(&l) if l > 0 => l,
                    _ => return Err(Errno::EINVAL),
                };
                // ...it points to one of our frames...
                let target = (r.val & ADDR_MASK) / PAGE;
                if self.pfn(target).is_none() {
                    return Err(Errno::EPERM);
                }
                let target_level = self.tables.borrow().get(&target).copied();
                if level == 1 {
                    // ...an L1 never maps a page table writable...
                    if target_level.is_some() && r.val & F::WRITABLE.bits() != 0 {
                        return Err(Errno::EPERM);
                    }
                } else {
                    // ...and an upper level points to a fresh table, or
                    // one of the level below.
                    match target_level {
                        Some(0) => {
                            self.tables.borrow_mut().insert(target, level - 1);
                        }
                        Some(l) if l == level - 1 => {}
                        _ => return Err(Errno::EPERM),
                    }
                }
                self.set(mfn, i, r.val);
            }
            Ok(())
        }
    }

    #[test]
    fn maps_all_ram_with_new_tables_from_free_frames() {
        // 20 MiB of RAM; the bootstrap area maps the first 4 MiB.
        let nr = 5 * 1024;
        let (m, first_free) = Model::new(nr, 1024);
        let mut mapper = Mapper::new(&m, 1, first_free, 1024);
        mapper.map_ram(first_free, nr).unwrap();
        // Every frame maps to its own MFN at its pseudo-physical address.
        for p in [first_free, 1023, 1024, 2047, 2048, nr - 1] {
            assert_eq!(m.translate(p * PAGE), Some(m.p2m[p as usize]), "pfn {p}");
        }
        assert_eq!(m.translate(nr * PAGE), None);
        // 16 new MiB = 8 L1 tables, taken from the lowest free frames.
        assert_eq!(mapper.tables, 8);
        assert_eq!(mapper.next_free, first_free + 8);
        assert_eq!(mapper.free_end, nr);
        // One hypercall per new table plus one batch per 2 MiB.
        assert_eq!(*m.updates.borrow(), 8 + 8);
    }

    #[test]
    fn a_window_above_ram_gets_empty_tables_at_every_level() {
        let (m, first_free) = Model::new(2048, 1024);
        let mut mapper = Mapper::new(&m, 1, first_free, 1024);
        // 1 GiB up: a new L2 (and L1s); 512 GiB up: a new L3 too.
        mapper.reserve(1 << 30, 2 * L1_SPAN).unwrap();
        assert_eq!(mapper.tables, 1 + 2);
        mapper.reserve(1 << 39, PAGE).unwrap();
        assert_eq!(mapper.tables, 3 + 3);
        assert_eq!(m.translate(1 << 30), None, "reserved, not mapped");
        // The L1 is there: its frame is what l1_for returns again.
        let l1 = mapper.l1_for(1 << 30).unwrap();
        assert_eq!(mapper.l1_for((1 << 30) + 4096).unwrap(), l1);
        assert_eq!(mapper.tables, 6, "no new tables the second time");
    }

    #[test]
    fn finds_where_the_bootstrap_mapping_ends() {
        let (m, first_free) = Model::new(4096, 1000);
        assert_eq!(first_unmapped(&m, 1, first_free, 4096), 1000);
        assert_eq!(first_unmapped(&m, 1, first_free, 500), 500, "bounded");
        assert_eq!(first_unmapped(&m, 1, 2000, 4096), 2000);
    }

    #[test]
    fn running_out_of_free_frames_is_an_error() {
        let (m, first_free) = Model::new(4096, 1024);
        let mut mapper = Mapper::new(&m, 1, first_free, first_free);
        assert_eq!(mapper.map_ram(1024, 4096), Err(MmError::OutOfTables));
    }

    #[test]
    fn a_conflicting_entry_is_reported_not_overwritten() {
        let (m, first_free) = Model::new(2048, 1024);
        // Point pfn 10's entry at pfn 11's frame.
        let l1 = m.p2m[4];
        let wrong = (m.p2m[11] * PAGE) | DATA.bits();
        m.set(l1, 10, wrong);
        let mut mapper = Mapper::new(&m, 1, first_free, 1024);
        assert_eq!(
            mapper.map_ram(5, 20),
            Err(MmError::AlreadyMapped(10 * PAGE, wrong))
        );
        assert_eq!(m.get(l1, 10), wrong);
    }

    #[test]
    fn xen_refusing_an_update_stops_the_walk() {
        struct Refuse(Model);
        impl PvMmu for Refuse {
            fn mfn(&self, p: u64) -> Option<u64> {
                self.0.mfn(p)
            }
            fn pfn(&self, m: u64) -> Option<u64> {
                self.0.pfn(m)
            }
            fn read_entry(&self, p: u64, i: usize) -> u64 {
                self.0.read_entry(p, i)
            }
            fn prepare_table(&self, p: u64) -> Result<(), Errno> {
                self.0.prepare_table(p)
            }
            fn update(&self, _: &[MmuUpdate]) -> Result<(), Errno> {
                Err(Errno::ENOMEM)
            }
        }
        let (m, first_free) = Model::new(2048, 1024);
        let r = Refuse(m);
        let mut mapper = Mapper::new(&r, 1, first_free, 1024);
        assert_eq!(mapper.map_ram(1024, 2048), Err(MmError::Xen(Errno::ENOMEM)));
    }
}
