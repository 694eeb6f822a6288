//! `grant_table_op`: grant table v1 as Xen implements it — map, unmap,
//! copy, setup_table, query_size — with Xen's checks and status codes.
//!
//! A mapping or copy *pins* the granter's entry: Xen's active-entry counts
//! live on the granter's side, and `GTF_reading` / `GTF_writing` are set in
//! the shared entry (by compare-and-exchange, retried a bounded number of
//! times) while pins exist, so the granter's `end_access` fails meanwhile.

use crate::domain::{Domain, MapEntry, Pin};
use crate::guest_access::{Args, HResult};
use crate::hypervisor::Core;
use crate::xsm;
use hal::DomId;
use hal::mem::{Gfn, PAGE_SIZE, SharedMemory, WordMemory};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use xen_pv::abi::{self, Errno, gntcopy, gntmap, gntst, gnttabop, gtf};

/// Entries per grant frame.
const PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;
/// Largest number of mappings a domain may hold (maptrack entries).
pub(crate) const MAX_MAPTRACK: usize = 4096;
/// Largest batch in one call (Xen preempts long batches; we bound them).
const MAX_BATCH: u64 = 512;

fn entry_off(gref: u32) -> usize {
    gref as usize * 8
}

/// Pin `gref` of `granter` for `mapper`; returns the granted RAM page.
fn pin(granter: &Domain, mapper: DomId, gref: u32, readonly: bool) -> Result<WordMemory, i16> {
    let mut st = granter.st.lock().unwrap();
    if gref >= st.nr_grant_frames * PER_FRAME {
        return Err(gntst::BAD_GNTREF);
    }
    let table = &granter.grant_block;
    let off = entry_off(gref);
    let pinned = st.pins.get(&gref).copied().unwrap_or_default();
    let pinned_any = pinned.readers + pinned.writers > 0;
    if pinned_any && pinned.domid != mapper.0 {
        return Err(gntst::GENERAL_ERROR);
    }
    if !pinned_any || (!readonly && pinned.writers == 0) {
        // Xen's _set_status_v1: check type and domid, then set the access
        // flags with a bounded number of compare-and-exchange retries.
        let mut flags = table.load_u16(off, Ordering::Acquire);
        let mut ok = false;
        for _ in 0..5 {
            let domid = table.load_u16(off + 2, Ordering::Acquire);
            if !pinned_any
                && ((flags & (gtf::TYPE_MASK | gtf::SUB_PAGE)) != gtf::PERMIT_ACCESS
                    || domid != mapper.0)
            {
                return Err(gntst::GENERAL_ERROR);
            }
            let mut new = flags | gtf::READING;
            if !readonly {
                if flags & gtf::READONLY != 0 {
                    return Err(gntst::GENERAL_ERROR);
                }
                new |= gtf::WRITING;
            }
            match table.compare_exchange_u16(off, flags, new, Ordering::AcqRel) {
                Ok(_) => {
                    ok = true;
                    break;
                }
                Err(now) => flags = now,
            }
        }
        if !ok {
            return Err(gntst::GENERAL_ERROR);
        }
    }
    let frame = table.load_u32(off + 4, Ordering::Acquire);
    let Some(page) = granter.mem.ram_page(Gfn(u64::from(frame))) else {
        drop(st);
        unpin_flags(granter, gref, &pinned, readonly);
        return Err(gntst::GENERAL_ERROR);
    };
    let p = st.pins.entry(gref).or_default();
    p.domid = mapper.0;
    if readonly {
        p.readers += 1;
    } else {
        p.writers += 1;
    }
    Ok(page)
}

/// Undo the flag update of a failed pin: clear what no remaining pin needs.
fn unpin_flags(granter: &Domain, gref: u32, remaining: &Pin, _readonly: bool) {
    let mut clear = 0;
    if remaining.writers == 0 {
        clear |= gtf::WRITING;
    }
    if remaining.readers + remaining.writers == 0 {
        clear |= gtf::READING;
    }
    clear_flags(&granter.grant_block, gref, clear);
}

fn clear_flags(table: &WordMemory, gref: u32, clear: u16) {
    if clear == 0 {
        return;
    }
    let off = entry_off(gref);
    let mut flags = table.load_u16(off, Ordering::Acquire);
    // Bounded: the granter may race us, but it never holds the entry.
    for _ in 0..64 {
        match table.compare_exchange_u16(off, flags, flags & !clear, Ordering::AcqRel) {
            Ok(_) => return,
            Err(now) => flags = now,
        }
    }
}

/// Drop one pin of `gref`.
fn unpin(granter: &Domain, gref: u32, readonly: bool) {
    let mut st = granter.st.lock().unwrap();
    let Some(p) = st.pins.get_mut(&gref) else {
        return;
    };
    if readonly {
        p.readers = p.readers.saturating_sub(1);
    } else {
        p.writers = p.writers.saturating_sub(1);
    }
    let remaining = *p;
    if remaining.readers + remaining.writers == 0 {
        st.pins.remove(&gref);
    }
    drop(st);
    unpin_flags(granter, gref, &remaining, readonly);
}

fn map_one(core: &Core, dom: &Arc<Domain>, op: &mut abi::GnttabMapGrantRef) {
    op.status = match map_inner(core, dom, op) {
        Ok(()) => gntst::OKAY,
        Err(s) => s,
    };
}

fn map_inner(core: &Core, dom: &Arc<Domain>, op: &mut abi::GnttabMapGrantRef) -> Result<(), i16> {
    if op.flags & (gntmap::HOST_MAP | gntmap::DEVICE_MAP) == 0 {
        return Err(gntst::BAD_GNTREF);
    }
    // Auto-translated guests have no device or application maps.
    if op.flags & (gntmap::DEVICE_MAP | gntmap::APPLICATION_MAP | gntmap::CONTAINS_PTE) != 0 {
        return Err(gntst::GENERAL_ERROR);
    }
    let granter = core.domain(DomId(op.dom)).ok_or(gntst::BAD_DOMAIN)?;
    if xsm::silo_denies(core, dom, &granter) {
        return Err(gntst::PERMISSION_DENIED);
    }
    if !op.host_addr.is_multiple_of(PAGE_SIZE as u64) {
        return Err(gntst::BAD_VIRT_ADDR);
    }
    let gfn = Gfn(op.host_addr / PAGE_SIZE as u64);
    if dom.mem.is_ram(gfn) || dom.mem.has_special(gfn) {
        // We map into unpopulated frames only (a guest's map window).
        return Err(gntst::BAD_VIRT_ADDR);
    }
    let readonly = op.flags & gntmap::READONLY != 0;
    let handle = {
        let mut st = dom.st.lock().unwrap();
        let free = st.maptrack.iter().position(Option::is_none);
        match free {
            Some(h) => h,
            None if st.maptrack.len() < MAX_MAPTRACK => {
                st.maptrack.push(None);
                st.maptrack.len() - 1
            }
            None => return Err(gntst::NO_SPACE),
        }
    };
    let page = pin(&granter, dom.id, op.ref_, readonly)?;
    dom.mem.map_special(gfn, &page, 0);
    dom.st.lock().unwrap().maptrack[handle] = Some(MapEntry {
        granter: granter.id,
        gref: op.ref_,
        gfn: gfn.0,
        readonly,
    });
    op.handle = handle as u32;
    op.dev_bus_addr = 0;
    Ok(())
}

/// Undo mapping `handle` of `dom` (also used when a domain dies).
pub(crate) fn unmap_handle(core: &Core, dom: &Domain, handle: u32, host_addr: Option<u64>) -> i16 {
    let entry = {
        let mut st = dom.st.lock().unwrap();
        let Some(slot) = st.maptrack.get_mut(handle as usize) else {
            return gntst::BAD_HANDLE;
        };
        let Some(e) = *slot else {
            return gntst::BAD_HANDLE;
        };
        if let Some(addr) = host_addr
            && addr != 0
            && addr != e.gfn * PAGE_SIZE as u64
        {
            return gntst::GENERAL_ERROR;
        }
        *slot = None;
        e
    };
    dom.mem.unmap_special(Gfn(entry.gfn));
    if let Some(granter) = core.domain(entry.granter) {
        unpin(&granter, entry.gref, entry.readonly);
    }
    gntst::OKAY
}

/// One end of a copy: the page and, for a grant, what to unpin afterwards.
struct CopyEnd {
    page: WordMemory,
    pinned: Option<(Arc<Domain>, u32, bool)>,
}

/// The domain one end of a copy names, as Xen's
/// `gnttab_copy_lock_domain` checks it: a frame only through `DOMID_SELF`.
fn copy_domain(
    core: &Core,
    dom: &Arc<Domain>,
    p: &abi::GnttabCopyPtr,
    is_gref: bool,
) -> Result<Arc<Domain>, i16> {
    if !is_gref && p.domid != DomId::SELF.0 {
        return Err(gntst::PERMISSION_DENIED);
    }
    let d = core.resolve(dom, DomId(p.domid)).ok_or(gntst::BAD_DOMAIN)?;
    if is_gref && xsm::silo_denies(core, dom, &d) {
        return Err(gntst::PERMISSION_DENIED);
    }
    Ok(d)
}

/// Claim one end's page (Xen's `gnttab_copy_claim_buf`): pin the grant, or
/// look the frame up.
fn copy_end(
    dom: &Arc<Domain>,
    owner: Arc<Domain>,
    p: &abi::GnttabCopyPtr,
    is_gref: bool,
    readonly: bool,
) -> Result<CopyEnd, i16> {
    if !is_gref {
        let page = dom.mem.ram_page(Gfn(p.u)).ok_or(gntst::BAD_PAGE)?;
        return Ok(CopyEnd { page, pinned: None });
    }
    let gref = p.u as u32;
    let page = pin(&owner, dom.id, gref, readonly)?;
    Ok(CopyEnd {
        page,
        pinned: Some((owner, gref, readonly)),
    })
}

fn release(end: CopyEnd) {
    if let Some((granter, gref, ro)) = end.pinned {
        unpin(&granter, gref, ro);
    }
}

/// One `gnttab_copy`, its checks in Xen's order: nothing for zero bytes;
/// both domains; the source, then the destination; the lengths last.
fn copy_one(core: &Core, dom: &Arc<Domain>, op: &abi::GnttabCopy) -> i16 {
    if op.len == 0 {
        return gntst::OKAY;
    }
    let src_gref = op.flags & gntcopy::SOURCE_GREF != 0;
    let dst_gref = op.flags & gntcopy::DEST_GREF != 0;
    let owners = copy_domain(core, dom, &op.source, src_gref)
        .and_then(|s| Ok((s, copy_domain(core, dom, &op.dest, dst_gref)?)));
    let (src_dom, dst_dom) = match owners {
        Ok(o) => o,
        Err(s) => return s,
    };
    let src = match copy_end(dom, src_dom, &op.source, src_gref, true) {
        Ok(e) => e,
        Err(s) => return s,
    };
    let dst = match copy_end(dom, dst_dom, &op.dest, dst_gref, false) {
        Ok(e) => e,
        Err(s) => {
            release(src);
            return s;
        }
    };
    let n = usize::from(op.len);
    let status = if usize::from(op.source.offset) + n > PAGE_SIZE
        || usize::from(op.dest.offset) + n > PAGE_SIZE
    {
        gntst::BAD_COPY_ARG
    } else {
        let mut buf = [0u8; PAGE_SIZE];
        src.page.read(usize::from(op.source.offset), &mut buf[..n]);
        dst.page.write(usize::from(op.dest.offset), &buf[..n]);
        gntst::OKAY
    };
    release(src);
    release(dst);
    status
}

pub(crate) fn op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    let count = a.raw[2];
    if count > MAX_BATCH {
        return Err(Errno::EINVAL);
    }
    let count = count as usize;
    match cmd {
        gnttabop::MAP_GRANT_REF => {
            let size = core::mem::size_of::<abi::GnttabMapGrantRef>();
            for i in 0..count {
                let mut x: abi::GnttabMapGrantRef = a.read_at(1, i * size)?;
                map_one(core, dom, &mut x);
                a.write_at(1, i * size, &x)?;
            }
            Ok(0)
        }
        gnttabop::UNMAP_GRANT_REF => {
            let size = core::mem::size_of::<abi::GnttabUnmapGrantRef>();
            for i in 0..count {
                let mut x: abi::GnttabUnmapGrantRef = a.read_at(1, i * size)?;
                x.status = unmap_handle(core, dom, x.handle, Some(x.host_addr));
                a.write_at(1, i * size, &x)?;
            }
            Ok(0)
        }
        gnttabop::COPY => {
            let size = core::mem::size_of::<abi::GnttabCopy>();
            for i in 0..count {
                let mut x: abi::GnttabCopy = a.read_at(1, i * size)?;
                x.status = copy_one(core, dom, &x);
                a.write_at(1, i * size, &x)?;
            }
            Ok(0)
        }
        gnttabop::QUERY_SIZE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut x: abi::GnttabQuerySize = a.read(1)?;
            match core.resolve(dom, DomId(x.dom)) {
                None => x.status = gntst::BAD_DOMAIN,
                Some(t) if t.id != dom.id && !dom.privileged => x.status = gntst::PERMISSION_DENIED,
                Some(t) => {
                    x.nr_frames = t.st.lock().unwrap().nr_grant_frames;
                    x.max_nr_frames = t.max_grant_frames;
                    x.status = gntst::OKAY;
                }
            }
            a.write(1, &x)?;
            Ok(0)
        }
        gnttabop::GET_VERSION => {
            // struct gnttab_get_version { domid_t dom; uint16_t pad; uint32_t version; }
            let mut x: [u32; 2] = a.read(1)?;
            let target = core.resolve(dom, DomId(x[0] as u16)).ok_or(Errno::ESRCH)?;
            if target.id != dom.id && !dom.privileged {
                return Err(Errno::EPERM);
            }
            x[1] = 1;
            a.write(1, &x)?;
            Ok(0)
        }
        gnttabop::SETUP_TABLE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let mut x: abi::GnttabSetupTable = a.read(1)?;
            let target = core.resolve(dom, DomId(x.dom));
            x.status = match target {
                None => gntst::BAD_DOMAIN,
                Some(t) if t.id != dom.id && !dom.privileged => gntst::PERMISSION_DENIED,
                Some(t) if x.nr_frames > t.max_grant_frames => gntst::GENERAL_ERROR,
                Some(t) => {
                    let at =
                        a.handle(1, core::mem::offset_of!(abi::GnttabSetupTable, frame_list))?;
                    {
                        let mut st = t.st.lock().unwrap();
                        st.nr_grant_frames = st.nr_grant_frames.max(x.nr_frames);
                    }
                    // There are no machine frames in the simulator; report
                    // the frame numbers at which `add_to_physmap` would put
                    // the table in a guest that maps it at frame 0x80010.
                    for i in 0..x.nr_frames as usize {
                        a.write_at(1, at + 8 * i, &(crate::layout::GRANT_TABLE_GFN + i as u64))?;
                    }
                    gntst::OKAY
                }
            };
            a.write(1, &x)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
