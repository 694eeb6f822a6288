//! Grant table, version 1: granting our pages to other domains, mapping and
//! copying theirs.
//!
//! The table's frames are shared with Xen (not with the peer). The platform
//! maps them (`XENMEM_add_to_physmap` on auto-translated guests — see
//! [`map_frames_auto`] — or `GNTTABOP_setup_table` on x86 PV) and hands the
//! memory to [`Grants::new`].

use crate::abi::{self, Errno, GrantEntryV1, gntmap, gntst, gtf};
use crate::hypercall::{self, Hypervisor};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::mem::size_of;
use core::sync::atomic::Ordering;
use hal::grant::{CopyPtr, GrantCopy};
use hal::mem::{Gfn, PAGE_SIZE, SharedMemory};
use hal::{Access, DomId, GrantError, GrantRef, GrantTable};

/// Grant entries per 4 KiB frame.
pub const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / size_of::<GrantEntryV1>()) as u32;

const FLAGS: usize = 0;
const DOMID: usize = 2;
const FRAME: usize = 4;

/// Map a `GNTST_*` status to the HAL's error.
pub fn status_error(status: i16) -> GrantError {
    match status {
        gntst::BAD_DOMAIN => GrantError::BadDomain,
        gntst::BAD_GNTREF => GrantError::BadRef,
        gntst::BAD_HANDLE => GrantError::BadHandle,
        gntst::BAD_VIRT_ADDR | gntst::BAD_DEV_ADDR => GrantError::BadAddress,
        gntst::NO_DEVICE_SPACE | gntst::NO_SPACE => GrantError::NoSpace,
        gntst::PERMISSION_DENIED => GrantError::PermissionDenied,
        gntst::BAD_PAGE => GrantError::BadPage,
        gntst::BAD_COPY_ARG => GrantError::BadCopyArg,
        gntst::EAGAIN => GrantError::Again,
        _ => GrantError::General,
    }
}

fn hyp_error(e: Errno) -> GrantError {
    GrantError::Hypervisor(-e.0)
}

/// Map grant frames `0..count` at `base..base + count` with
/// `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)`, the way auto-translated
/// guests (Arm, the simulator) reach their grant table. Returns the memory.
pub fn map_frames_auto<H: Hypervisor>(h: &H, base: Gfn, count: usize) -> Result<H::Mem, Errno> {
    for i in 0..count {
        hypercall::add_to_physmap(
            h,
            abi::mapspace::GRANT_TABLE,
            i as u64,
            Gfn(base.0 + i as u64),
        )?;
    }
    h.map_frames(base, count)
}

/// Numbers from `start..end` handed out lowest first, and numbers given back
/// reused last in, first out: the order of a stack filled with the whole
/// range in reverse, without holding the range (a guest's map window is
/// thousands of frames; a simulator runs 100,000 guests).
#[derive(Debug)]
struct FreeList {
    /// The lowest number never handed out.
    next: Cell<u32>,
    end: u32,
    /// Numbers given back.
    back: RefCell<Vec<u32>>,
}

impl FreeList {
    fn new(start: u32, end: u32) -> Self {
        FreeList {
            next: Cell::new(start),
            end,
            back: RefCell::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<u32> {
        if let Some(n) = self.back.borrow_mut().pop() {
            return Some(n);
        }
        let n = self.next.get();
        (n < self.end).then(|| {
            self.next.set(n + 1);
            n
        })
    }

    fn give(&self, n: u32) {
        self.back.borrow_mut().push(n);
    }
}

/// A window of guest frames where foreign pages get mapped: frames the guest
/// does not use for RAM (on Arm, a region the device tree leaves free).
#[derive(Debug)]
pub struct MapWindow {
    base: Gfn,
    free: FreeList,
}

impl MapWindow {
    /// A window of `count` frames from `base`.
    pub fn new(base: Gfn, count: u32) -> Self {
        MapWindow {
            base,
            free: FreeList::new(0, count),
        }
    }

    /// An empty window: this guest maps no foreign pages.
    pub fn none() -> Self {
        MapWindow::new(Gfn(0), 0)
    }

    fn take(&self) -> Option<Gfn> {
        self.free.take().map(|i| Gfn(self.base.0 + u64::from(i)))
    }

    fn give(&self, gfn: Gfn) {
        self.free.give((gfn.0 - self.base.0) as u32);
    }
}

/// A foreign page mapped into our window; see [`GrantTable::map`].
#[derive(Clone, Debug)]
pub struct ForeignPage<M> {
    mem: M,
    gfn: Gfn,
    handle: u32,
    domid: DomId,
    gref: GrantRef,
}

impl<M> ForeignPage<M> {
    /// The frame it is mapped at.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }
    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }
    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }
    /// Xen's handle for the mapping (`GNTTABOP_unmap_grant_ref` takes it).
    #[doc(alias = "grant_handle_t")]
    pub fn handle(&self) -> u32 {
        self.handle
    }
}

impl<M: SharedMemory> SharedMemory for ForeignPage<M> {
    hal::forward_shared_memory!(mem);
}

struct Inner<H: Hypervisor> {
    h: H,
    table: Option<H::Mem>,
    nr_entries: u32,
    free: FreeList,
    active: Cell<usize>,
    mapped: Cell<usize>,
    window: MapWindow,
}

/// The running domain's grant table (v1). A cheap handle: clones share
/// state.
pub struct Grants<H: Hypervisor> {
    inner: Rc<Inner<H>>,
}

impl<H: Hypervisor> Clone for Grants<H> {
    fn clone(&self) -> Self {
        Grants {
            inner: self.inner.clone(),
        }
    }
}

impl<H: Hypervisor> Grants<H> {
    /// A grant table over `table` (its frames, mapped), mapping foreign pages
    /// into `window`. References below [`abi::GNTTAB_NR_RESERVED_ENTRIES`]
    /// are left to the toolstack.
    pub fn new(h: H, table: H::Mem, window: MapWindow) -> Self {
        Self::build(h, Some(table), window)
    }

    /// A domain without a grant table of its own (Xen gave it no region to
    /// map one, e.g. a dom0less guest on Xen 4.17): it cannot grant pages
    /// ([`GrantError::NoFreeRefs`]) but can still map and copy others'.
    pub fn without_table(h: H, window: MapWindow) -> Self {
        Self::build(h, None, window)
    }

    fn build(h: H, table: Option<H::Mem>, window: MapWindow) -> Self {
        let nr_entries = table
            .as_ref()
            .map_or(0, |t| (t.len() / size_of::<GrantEntryV1>()) as u32);
        let free = FreeList::new(abi::GNTTAB_NR_RESERVED_ENTRIES, nr_entries);
        Grants {
            inner: Rc::new(Inner {
                h,
                table,
                nr_entries,
                free,
                active: Cell::new(0),
                mapped: Cell::new(0),
                window,
            }),
        }
    }

    /// Number of entries in the table.
    pub fn capacity(&self) -> u32 {
        self.inner.nr_entries
    }

    /// The `GTF_*` flags of our entry for `gref` as Xen last left them
    /// (`GTF_reading`/`GTF_writing` while a peer maps or copies it).
    ///
    /// Errors: [`GrantError::BadRef`] if `gref` is not an active grant.
    #[doc(alias = "GTF_reading")]
    pub fn entry_flags(&self, gref: GrantRef) -> Result<u16, GrantError> {
        self.flags(gref)
    }

    fn entry(&self, gref: GrantRef) -> Result<usize, GrantError> {
        if gref.0 < abi::GNTTAB_NR_RESERVED_ENTRIES || gref.0 >= self.inner.nr_entries {
            return Err(GrantError::BadRef);
        }
        Ok(gref.0 as usize * size_of::<GrantEntryV1>())
    }

    fn table(&self) -> Result<&H::Mem, GrantError> {
        self.inner.table.as_ref().ok_or(GrantError::BadRef)
    }

    fn flags(&self, gref: GrantRef) -> Result<u16, GrantError> {
        let off = self.entry(gref)?;
        let flags = self.table()?.load_u16(off + FLAGS, Ordering::Acquire);
        if flags & gtf::TYPE_MASK != gtf::PERMIT_ACCESS {
            return Err(GrantError::BadRef);
        }
        Ok(flags)
    }
}

impl<H: Hypervisor> GrantTable for Grants<H> {
    type Mapping = ForeignPage<H::Mem>;

    fn grant_access(&self, domid: DomId, gfn: Gfn, access: Access) -> Result<GrantRef, GrantError> {
        let frame = self
            .inner
            .h
            .xen_frame(gfn)
            .ok()
            .and_then(|f| u32::try_from(f).ok())
            .ok_or(GrantError::BadPage)?;
        let t = self.inner.table.as_ref().ok_or(GrantError::NoFreeRefs)?;
        let gref = self.inner.free.take().ok_or(GrantError::NoFreeRefs)?;
        let off = gref as usize * size_of::<GrantEntryV1>();
        t.store_u16(off + DOMID, domid.0, Ordering::Relaxed);
        t.store_u32(off + FRAME, frame, Ordering::Relaxed);
        let ro = if access == Access::ReadOnly {
            gtf::READONLY
        } else {
            0
        };
        // domid and frame must be visible before the entry becomes valid.
        t.store_u16(off + FLAGS, gtf::PERMIT_ACCESS | ro, Ordering::Release);
        self.inner.active.set(self.inner.active.get() + 1);
        Ok(GrantRef(gref))
    }

    fn end_access(&self, gref: GrantRef) -> Result<(), GrantError> {
        let off = self.entry(gref)?;
        let mut flags = self.flags(gref)?;
        // Xen updates `flags` only to set or clear reading/writing; a few
        // retries cover that race. Bounded all the same.
        for _ in 0..64 {
            if flags & (gtf::READING | gtf::WRITING) != 0 {
                return Err(GrantError::InUse);
            }
            match self
                .table()?
                .compare_exchange_u16(off + FLAGS, flags, 0, Ordering::AcqRel)
            {
                Ok(_) => {
                    self.inner.free.give(gref.0);
                    self.inner.active.set(self.inner.active.get() - 1);
                    return Ok(());
                }
                Err(now) => flags = now,
            }
        }
        Err(GrantError::InUse)
    }

    fn in_use(&self, gref: GrantRef) -> Result<bool, GrantError> {
        Ok(self.flags(gref)? & (gtf::READING | gtf::WRITING) != 0)
    }

    fn map(
        &self,
        domid: DomId,
        gref: GrantRef,
        access: Access,
    ) -> Result<Self::Mapping, GrantError> {
        let gfn = self.inner.window.take().ok_or(GrantError::NoSpace)?;
        let ro = if access == Access::ReadOnly {
            gntmap::READONLY
        } else {
            0
        };
        let mut op = [abi::GnttabMapGrantRef {
            host_addr: gfn.addr(),
            flags: gntmap::HOST_MAP | ro,
            ref_: gref.0,
            dom: domid.0,
            ..Default::default()
        }];
        if let Err(e) =
            hypercall::grant_table_op(&self.inner.h, abi::gnttabop::MAP_GRANT_REF, &mut op)
        {
            self.inner.window.give(gfn);
            return Err(hyp_error(e));
        }
        if op[0].status != gntst::OKAY {
            self.inner.window.give(gfn);
            return Err(status_error(op[0].status));
        }
        let page = ForeignPage {
            mem: match self.inner.h.map_frames(gfn, 1) {
                Ok(m) => m,
                Err(e) => {
                    let mut un = [abi::GnttabUnmapGrantRef {
                        host_addr: gfn.addr(),
                        handle: op[0].handle,
                        ..Default::default()
                    }];
                    let _ = hypercall::grant_table_op(
                        &self.inner.h,
                        abi::gnttabop::UNMAP_GRANT_REF,
                        &mut un,
                    );
                    self.inner.window.give(gfn);
                    return Err(hyp_error(e));
                }
            },
            gfn,
            handle: op[0].handle,
            domid,
            gref,
        };
        self.inner.mapped.set(self.inner.mapped.get() + 1);
        Ok(page)
    }

    fn unmap(&self, mapping: Self::Mapping) -> Result<(), (Self::Mapping, GrantError)> {
        let mut op = [abi::GnttabUnmapGrantRef {
            host_addr: mapping.gfn.addr(),
            handle: mapping.handle,
            ..Default::default()
        }];
        if let Err(e) =
            hypercall::grant_table_op(&self.inner.h, abi::gnttabop::UNMAP_GRANT_REF, &mut op)
        {
            return Err((mapping, hyp_error(e)));
        }
        if op[0].status != gntst::OKAY {
            return Err((mapping, status_error(op[0].status)));
        }
        self.inner.window.give(mapping.gfn);
        self.inner.mapped.set(self.inner.mapped.get() - 1);
        Ok(())
    }

    fn copy(
        &self,
        ops: &[GrantCopy],
        status: &mut [Result<(), GrantError>],
    ) -> Result<(), GrantError> {
        if ops.len() != status.len() {
            return Err(GrantError::General);
        }
        const BATCH: usize = 16;
        let mut raw = [abi::GnttabCopy::default(); BATCH];
        for (chunk, st) in ops.chunks(BATCH).zip(status.chunks_mut(BATCH)) {
            for (r, op) in raw.iter_mut().zip(chunk) {
                let mut flags = 0;
                r.source = copy_ptr(&self.inner.h, op.src, &mut flags, abi::gntcopy::SOURCE_GREF)?;
                r.dest = copy_ptr(&self.inner.h, op.dst, &mut flags, abi::gntcopy::DEST_GREF)?;
                r.len = op.len;
                r.flags = flags;
                r.status = 0;
            }
            let raw = &mut raw[..chunk.len()];
            hypercall::grant_table_op(&self.inner.h, abi::gnttabop::COPY, raw)
                .map_err(hyp_error)?;
            for (s, r) in st.iter_mut().zip(raw.iter()) {
                *s = if r.status == gntst::OKAY {
                    Ok(())
                } else {
                    Err(status_error(r.status))
                };
            }
        }
        Ok(())
    }

    fn active_grants(&self) -> usize {
        self.inner.active.get()
    }

    fn active_mappings(&self) -> usize {
        self.inner.mapped.get()
    }
}

fn copy_ptr<H: Hypervisor>(
    h: &H,
    p: CopyPtr,
    flags: &mut u16,
    gref_flag: u16,
) -> Result<abi::GnttabCopyPtr, GrantError> {
    Ok(match p {
        CopyPtr::Foreign {
            domid,
            gref,
            offset,
        } => {
            *flags |= gref_flag;
            abi::GnttabCopyPtr {
                u: u64::from(gref.0),
                domid: domid.0,
                offset,
                _pad0: 0,
            }
        }
        CopyPtr::Local { gfn, offset } => abi::GnttabCopyPtr {
            u: h.xen_frame(gfn).map_err(|_| GrantError::BadPage)?,
            domid: DomId::SELF.0,
            offset,
            _pad0: 0,
        },
    })
}
