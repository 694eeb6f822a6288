//! Bringing an x86_64 PV guest up (start_info, page tables, Xen's pages),
//! running the guest and bringing the domain down (the last two are
//! `xen_pv::platform`'s, the same on every architecture), and
//! `critical_section` by masking event delivery.

use crate::boot_info::{BootInfo, StartInfoError};
use crate::hypercall::PvHypervisor;
use crate::mm::{self, MmError, PvMmu};
use crate::time::PvClock;
use core::fmt;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
use core::future::Future;
use hal::mem::PAGE_SIZE;
use xen_pv::abi::Errno;
use xen_pv::abi::x86_64::MmuUpdate;
use xen_pv::hypercall;
use xen_pv::platform::XenPlatform;
use xen_pv::timer::XenAlarm;

/// The platform an x86_64 PV guest's `main` receives.
pub type PvPlatform = XenPlatform<PvHypervisor, PvClock, XenAlarm<PvHypervisor>>;

/// Grant frames set up at boot (2048 grant references).
pub const GRANT_FRAMES: usize = 4;
/// Pages of the window for mapping other domains' grants.
pub const MAP_WINDOW_PAGES: u64 = 1024;

const PAGE: u64 = PAGE_SIZE as u64;

/// Why the platform could not come up. Each is printed on the emergency
/// console before the domain crashes.
#[derive(Debug)]
pub enum BootError {
    /// `start_info` is unusable.
    StartInfo(StartInfoError),
    /// Building the page tables failed.
    Mm(MmError),
    /// Too little free RAM after the bootstrap area.
    NoRam,
    /// A Xen page could not be mapped: which, and Xen's error.
    Map(&'static str, Errno),
    /// A ring page `start_info` names is not one of our frames.
    ForeignRing(&'static str, u64),
    /// Assembling the platform failed.
    Xen(xen_pv::platform::BootError),
    /// `hvm_start_info` (a PVH boot) is unusable.
    Pvh(crate::pvh::StartInfoError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::StartInfo(e) => write!(f, "{e}"),
            BootError::Mm(e) => write!(f, "page tables: {e}"),
            BootError::NoRam => f.write_str("too little free RAM after the bootstrap area"),
            BootError::Map(what, e) => write!(f, "mapping {what}: {e}"),
            BootError::ForeignRing(what, mfn) => {
                write!(f, "the {what} page (machine frame {mfn:#x}) is not ours")
            }
            BootError::Xen(e) => write!(f, "{e}"),
            BootError::Pvh(e) => write!(f, "{e}"),
        }
    }
}

impl From<StartInfoError> for BootError {
    fn from(e: StartInfoError) -> Self {
        BootError::StartInfo(e)
    }
}

impl From<MmError> for BootError {
    fn from(e: MmError) -> Self {
        BootError::Mm(e)
    }
}

/// Where things go in the guest's frames, decided from `start_info` and
/// the image's extent before any page table changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The first frame free for tables, heap and pages (everything below is
    /// the image and what the builder put after it).
    pub first_free: u64,
    /// RAM frames (all get mapped).
    pub nr_pages: u64,
    /// The window above RAM: `shared_info`, then the grant frames, then the
    /// pages for foreign grants.
    pub window: (u64, u64),
}

impl Plan {
    /// The frame `shared_info` is mapped at.
    pub fn shared_info(&self) -> u64 {
        self.window.0
    }
    /// The first frame of the grant table.
    pub fn grant_table(&self) -> u64 {
        self.window.0 + 1
    }
    /// The frames for foreign grants: `(first, count)`.
    pub fn map_window(&self) -> (u64, u64) {
        let first = self.window.0 + 1 + GRANT_FRAMES as u64;
        (first, self.window.1 - first)
    }
}

/// Plan the layout for `info`, with the image ending at `image_end` (a
/// virtual = pseudo-physical address) and the ring pages at `rings`
/// (frames).
///
/// Errors: [`BootError::NoRam`] if fewer than 64 frames would be free.
pub fn plan(info: &BootInfo, image_end: u64, rings: &[u64]) -> Result<Plan, BootError> {
    let page_up = |a: u64| a.div_ceil(PAGE);
    let mut first_free = page_up(info.bootstrap_end())
        .max(page_up(image_end))
        .max(page_up(info.mfn_list + 8 * info.nr_pages));
    for &r in rings {
        first_free = first_free.max(r + 1);
    }
    if first_free + 64 > info.nr_pages {
        return Err(BootError::NoRam);
    }
    // The window starts on the next 2 MiB boundary above RAM.
    let start = info.nr_pages.div_ceil(512) * 512;
    let len = 1 + GRANT_FRAMES as u64 + MAP_WINDOW_PAGES;
    Ok(Plan {
        first_free,
        nr_pages: info.nr_pages,
        window: (start, start + len),
    })
}

/// How the boot used memory, for the guest to report.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    /// Page-table pages the boot added.
    pub tables: usize,
    /// Bytes given to the heap.
    pub heap: u64,
    /// Frames given to the page allocator.
    pub pool: u64,
}

/// What Xen handed the guest at boot, checked.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A PV boot: `start_info` (boxed: it is large, with its command line).
    Pv(alloc::boxed::Box<BootInfo>),
    /// A PVH boot: `hvm_start_info`.
    Pvh(xen_pv::abi::x86_64::HvmStartInfo),
}

impl Boot {
    /// Whether this is the control domain.
    pub fn is_dom0(&self) -> bool {
        match self {
            Boot::Pv(i) => i.is_dom0(),
            Boot::Pvh(i) => i.flags & xen_pv::abi::x86_64::sif::INITDOMAIN != 0,
        }
    }
}

/// The platform and what Xen handed the guest.
pub struct Booted {
    /// The platform.
    pub platform: PvPlatform,
    /// The checked `start_info` or `hvm_start_info`.
    pub boot: Boot,
    /// How memory was laid out.
    pub memory: MemoryReport,
}

/// The page-table operations on real Xen: the p2m list from `start_info`,
/// Xen's read-only m2p table, and hypercalls.
pub struct XenMmu {
    p2m: &'static [u64],
}

impl PvMmu for XenMmu {
    fn mfn(&self, pfn: u64) -> Option<u64> {
        self.p2m.get(pfn as usize).copied()
    }

    fn pfn(&self, mfn: u64) -> Option<u64> {
        let pfn = m2p(mfn)?;
        (self.mfn(pfn) == Some(mfn)).then_some(pfn)
    }

    fn read_entry(&self, pfn: u64, index: usize) -> u64 {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        {
            let p = (pfn * PAGE) as *const u64;
            // SAFETY: `pfn` is a page-table frame the walk found through
            // the tables (so mapped, read-only, at its pseudo-physical
            // address); `index` < 512. Xen may update A/D bits: volatile.
            unsafe { p.add(index % 512).read_volatile() }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
        {
            let _ = (pfn, index);
            0
        }
    }

    fn prepare_table(&self, pfn: u64) -> Result<(), Errno> {
        let mfn = self.mfn(pfn).ok_or(Errno::EINVAL)?;
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        // SAFETY: `pfn` is a free RAM frame below the mapper's `free_end`,
        // so mapped writable at its pseudo-physical address and used by
        // nothing else.
        unsafe {
            core::ptr::write_bytes((pfn * PAGE) as *mut u8, 0, PAGE_SIZE)
        };
        hypercall::update_va_mapping(
            &PvHypervisor,
            pfn * PAGE,
            (mfn * PAGE) | mm::READ_ONLY.bits(),
            xen_pv::abi::x86_64::uvmf::INVLPG,
        )
    }

    fn update(&self, reqs: &[MmuUpdate]) -> Result<(), Errno> {
        hypercall::mmu_update(&PvHypervisor, reqs)
    }
}

/// Our frame for machine frame `mfn`, from Xen's machine-to-physical table.
fn m2p(mfn: u64) -> Option<u64> {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        use xen_pv::abi::x86_64::MACH2PHYS_VIRT_START;
        // The table covers 256 GiB of entries (2^35 frames).
        if mfn >= 1 << 35 {
            return None;
        }
        let p = (MACH2PHYS_VIRT_START + mfn * 8) as *const u64;
        // SAFETY: Xen maps the m2p table read-only into every 64-bit PV
        // guest at this address; entries of frames that are not ours may
        // hold anything, which the caller checks against the p2m list.
        Some(unsafe { p.read_volatile() })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    {
        let _ = mfn;
        None
    }
}

/// Where the running image ends (its `.bss` and stack included).
pub fn image_end() -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    {
        unsafe extern "C" {
            static __image_end: u8;
        }
        (&raw const __image_end) as u64
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    0
}

/// Bring the platform up from the `start_info` at `start_info`: check it,
/// map all RAM and the window, unmap page 0, start the heap, map
/// `shared_info` and the grant table, and assemble the platform.
///
/// Errors: [`BootError`].
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn boot(start_info: usize) -> Result<Booted, BootError> {
    use hal::{DomId, Gfn};
    use xen_pv::abi::x86_64::uvmf;
    use xen_pv::hypercall::Hypervisor;
    let size = core::mem::size_of::<xen_pv::abi::x86_64::StartInfo>();
    // SAFETY: Xen passes start_info's address in rsi; the page is in the
    // bootstrap area, mapped and ours. It is only read here.
    let bytes = unsafe { core::slice::from_raw_parts(start_info as *const u8, size) };
    let info = crate::boot_info::parse(bytes)?;
    // SAFETY: `parse` checked that the p2m list lies inside RAM; Xen
    // mapped it in the bootstrap area, and nothing writes it after boot.
    let p2m: &'static [u64] =
        unsafe { core::slice::from_raw_parts(info.mfn_list as *const u64, info.nr_pages as usize) };
    let mmu = XenMmu { p2m };
    let mut rings = [0u64; 2];
    for (slot, (what, ring)) in rings
        .iter_mut()
        .zip([("xenstore", info.xenstore), ("console", info.console)])
    {
        if let Some(r) = ring {
            *slot = mmu.pfn(r.mfn).ok_or(BootError::ForeignRing(what, r.mfn))?;
        }
    }
    let plan = plan(&info, image_end(), &rings)?;
    let l4 = info.pt_base / PAGE;

    // Map RAM, starting the table allocator in the padding Xen mapped.
    let mapped = mm::first_unmapped(&mmu, l4, plan.first_free, plan.nr_pages);
    let mut mapper = mm::Mapper::new(&mmu, l4, plan.first_free, mapped);
    mapper.map_ram(mapped, plan.nr_pages)?;
    mapper.reserve(plan.window.0 * PAGE, (plan.window.1 - plan.window.0) * PAGE)?;
    let free = mapper.next_free;
    let tables = mapper.tables;
    // Page 0: unmapped, so a null pointer faults.
    hypercall::update_va_mapping(&PvHypervisor, 0, 0, uvmf::INVLPG)
        .map_err(|e| BootError::Map("page 0 (to unmap it)", e))?;
    // SAFETY: the p2m list is valid for the domain's life; RAM frames
    // `[1, nr_pages)` are now mapped at their pseudo-physical addresses.
    unsafe { PvHypervisor::set_layout(p2m.as_ptr(), info.nr_pages, info.nr_pages, plan.window) };

    // The heap gets half the free RAM (at most `MAX_HEAP`), the page
    // allocator the rest.
    let free_pages = plan.nr_pages - free;
    let heap_pages = (free_pages / 2).min(crate::heap::MAX_HEAP / PAGE);
    // SAFETY: `[free, free + heap_pages)` is mapped RAM that the tables,
    // the image and the page allocator (which starts after it) do not use.
    unsafe { crate::heap::init((free * PAGE) as usize, (heap_pages * PAGE) as usize) };
    let pool = (Gfn(free + heap_pages), (free_pages - heap_pages) as usize);

    let h = PvHypervisor;
    let data = |mfn: u64| (mfn * PAGE) | mm::DATA.bits();
    hypercall::update_va_mapping(
        &h,
        plan.shared_info() * PAGE,
        data(info.shared_info / PAGE),
        uvmf::INVLPG,
    )
    .map_err(|e| BootError::Map("shared_info", e))?;
    let shared_info = h
        .map_frames(Gfn(plan.shared_info()), 1)
        .map_err(|e| BootError::Map("shared_info", e))?;
    {
        let base = (plan.shared_info() * PAGE) as *mut u8;
        // SAFETY: shared_info is now mapped at `base` for good; vcpu_info[0]
        // is at its start and its time info inside it.
        unsafe {
            crate::irq::set_vcpu_info(base.cast());
            PvClock::set_time_info(
                base.add(core::mem::offset_of!(xen_pv::abi::x86_64::VcpuInfo, time))
                    .cast(),
            );
        }
        // Xen may start us with delivery unmasked; from here on it is
        // masked except inside SCHEDOP_block (see `irq`).
        let _ = crate::irq::mask();
    }
    let mut frames = [0u64; GRANT_FRAMES];
    hypercall::gnttab_setup_table(&h, &mut frames).map_err(|e| BootError::Map("grant table", e))?;
    for (i, f) in frames.iter().enumerate() {
        hypercall::update_va_mapping(
            &h,
            (plan.grant_table() + i as u64) * PAGE,
            data(*f),
            uvmf::INVLPG,
        )
        .map_err(|e| BootError::Map("grant table", e))?;
    }
    let grant_table = h
        .map_frames(Gfn(plan.grant_table()), GRANT_FRAMES)
        .map_err(|e| BootError::Map("grant table", e))?;
    let ring = |pfn: u64, what| {
        h.map_frames(Gfn(pfn), 1)
            .map_err(|e| BootError::Map(what, e))
    };
    let xenstore = match info.xenstore {
        Some(r) => Some((ring(rings[0], "xenstore")?, hal::EventPort(r.evtchn))),
        None => None,
    };
    let console = match info.console {
        Some(r) => Some((ring(rings[1], "console")?, hal::EventPort(r.evtchn))),
        None => None,
    };
    let (mw, mw_len) = plan.map_window();
    let parts = xen_pv::platform::PlatformParts {
        domid: if info.is_dom0() {
            DomId(0)
        } else {
            DomId::SELF
        },
        shared_info,
        grant_table: Some(grant_table),
        map_window: xen_pv::grant::MapWindow::new(Gfn(mw), mw_len as u32),
        ram: pool,
        xenstore,
        console,
    };
    let platform = XenPlatform::assemble(h, PvClock, XenAlarm(h), parts).map_err(BootError::Xen)?;
    Ok(Booted {
        platform,
        boot: Boot::Pv(alloc::boxed::Box::new(info)),
        memory: MemoryReport {
            tables,
            heap: heap_pages * PAGE,
            pool: pool.1 as u64,
        },
    })
}

/// Boot (PV or PVH, as Xen entered us), then run `app` to completion and shut down for the reason its
/// result gives (`true`: poweroff, `false`: crash, or a `SHUTDOWN_*` code). A boot failure is printed and crashes
/// the domain. (All but the boot is [`xen_pv::platform::run`].)
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn run<F, Fut>(start_info: usize, app: F) -> !
where
    F: FnOnce(Booted) -> Fut,
    Fut: Future<Output: xen_pv::platform::ShutdownReason>,
{
    let booted = if crate::pvh::active() {
        crate::pvh::boot(start_info)
    } else {
        boot(start_info)
    };
    xen_pv::platform::run(PvHypervisor, booted, |b| &b.platform, app)
}

/// Shut the domain down with `reason` (`SHUTDOWN_*`). Never returns.
pub fn shutdown(reason: u32) -> ! {
    xen_pv::platform::shutdown(&PvHypervisor, reason)
}

/// Crash the domain (after a fatal error has been reported). Never returns.
pub fn crash() -> ! {
    xen_pv::platform::crash(&PvHypervisor)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod cs {
    struct EventMask;
    critical_section::set_impl!(EventMask);

    // SAFETY: one vCPU; masking event delivery in `vcpu_info` keeps the
    // event callback (the only code that can interrupt us) from running
    // until the previous mask is restored.
    unsafe impl critical_section::Impl for EventMask {
        unsafe fn acquire() -> u8 {
            crate::irq::mask()
        }
        unsafe fn release(previous: u8) {
            crate::irq::restore(previous, &crate::PvHypervisor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot_info::parse;
    use xen_pv::abi::x86_64::{StartInfo, sif};
    use zerocopy::{FromZeros, IntoBytes};

    fn info() -> BootInfo {
        let mut si = StartInfo::new_zeroed();
        si.magic[..14].copy_from_slice(b"xen-3.0-x86_64");
        si.nr_pages = 16384;
        si.shared_info = 0x3_1234_5000;
        si.flags = sif::INITDOMAIN;
        si.mfn_list = 0x2a000;
        si.pt_base = 0x4b000;
        si.nr_pt_frames = 4;
        parse(si.as_bytes()).unwrap()
    }

    #[test]
    fn plans_free_frames_after_everything_the_builder_placed() {
        let i = info();
        // Tables end at 0x4f000, the boot stack at 0x50000.
        let p = plan(&i, 0x26000, &[]).unwrap();
        assert_eq!(p.first_free, 0x50);
        assert_eq!(p.window, (16384, 16384 + 1 + 4 + 1024));
        assert_eq!(p.shared_info(), 16384);
        assert_eq!(p.grant_table(), 16385);
        assert_eq!(p.map_window(), (16389, 1024));
        // A ring page or a big image beyond the tables moves the start.
        assert_eq!(plan(&i, 0x26000, &[0x60]).unwrap().first_free, 0x61);
        assert_eq!(plan(&i, 0x70_0000, &[]).unwrap().first_free, 0x700);
        // RAM not a multiple of 2 MiB: the window starts on the boundary.
        let mut small = i.clone();
        small.nr_pages = 1000;
        assert_eq!(plan(&small, 0x26000, &[]).unwrap().window.0, 1024);
        small.nr_pages = 0x60;
        assert!(matches!(plan(&small, 0x26000, &[]), Err(BootError::NoRam)));
    }
}
