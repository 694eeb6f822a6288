//! Bringing the platform up (device tree, MMU, GIC, timer, Xen's pages),
//! running the guest and bringing the domain down (the last two are
//! `xen_pv::platform`'s, the same on every architecture), and
//! `critical_section` by masking interrupts.

use crate::boot_info::{BootInfo, DtError, Gic, Region};
use crate::hypercall::ArmHypervisor;
use crate::mm::{MemKind, MmError};
use crate::time::GenericTimer;
use alloc::vec::Vec;
use core::fmt;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use core::future::Future;
use hal::DomId;
use hal::mem::{Gfn, PAGE_SIZE};
use xen_pv::platform::{AutoLayout, XenPlatform};

/// The platform an Arm guest's `main` receives.
pub type ArmPlatform = XenPlatform<ArmHypervisor, GenericTimer, GenericTimer>;

/// Grant frames mapped at boot (2048 grant references).
pub const GRANT_FRAMES: usize = 4;
/// Room kept for grant frames at the start of the grant region, so the
/// table can grow to Xen's default maximum without moving.
pub const GRANT_RESERVE: u64 = 64;
/// Pages of the window for mapping other domains' grants.
pub const MAP_WINDOW_PAGES: u64 = 4096;

/// Why the platform could not come up. Each is printed on the emergency
/// console before the domain crashes.
#[derive(Debug)]
pub enum BootError {
    /// The device tree is unusable.
    Dt(DtError),
    /// The identity map could not be built.
    Mm(MmError),
    /// The image is not inside a RAM bank the device tree lists.
    NoRam,
    /// Setting up Xen's pages failed.
    Xen(xen_pv::platform::BootError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Dt(e) => write!(f, "{e}"),
            BootError::Mm(e) => write!(f, "memory map: {e}"),
            BootError::NoRam => {
                f.write_str("the image is not inside any RAM bank of the device tree")
            }
            BootError::Xen(e) => write!(f, "{e}"),
        }
    }
}

impl From<DtError> for BootError {
    fn from(e: DtError) -> Self {
        BootError::Dt(e)
    }
}

/// The platform and what the device tree said.
pub struct Booted {
    /// The platform.
    pub platform: ArmPlatform,
    /// The parsed device tree.
    pub info: BootInfo,
}

/// Where the running image lies: `[_start, __image_end)`.
pub fn image_range() -> Region {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        unsafe extern "C" {
            static _start: u8;
            static __image_end: u8;
        }
        let start = (&raw const _start) as u64;
        let end = (&raw const __image_end) as u64;
        Region {
            base: start,
            size: end - start,
        }
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    Region { base: 0, size: 0 }
}

/// `a` rounded up to a page boundary; `None` past the address space's end.
fn page_up(a: u64) -> Option<u64> {
    a.div_ceil(PAGE_SIZE as u64).checked_mul(PAGE_SIZE as u64)
}

/// The whole pages of `r`, at most `MAP_WINDOW_PAGES` of them, as a window
/// for foreign mappings; `None` if `r` holds no whole page.
fn window_in(r: Region) -> Option<Region> {
    let page = PAGE_SIZE as u64;
    let base = page_up(r.base)?;
    let end = r.end() & !(page - 1);
    (end > base).then(|| Region {
        base,
        size: (end - base).min(MAP_WINDOW_PAGES * page),
    })
}

/// Plan the guest-physical layout and the regions to map, from the device
/// tree and where the image lies.
///
/// Errors: [`BootError::NoRam`]; [`BootError::Dt`] if the grant region lies
/// so close to the address space's end that the window after it wraps.
pub fn plan(
    info: &BootInfo,
    image: Region,
) -> Result<(AutoLayout, Vec<(Region, MemKind)>), BootError> {
    let page = PAGE_SIZE as u64;
    let bank = *info
        .memory
        .iter()
        .find(|b| b.base <= image.base && image.end() <= b.end())
        .ok_or(BootError::NoRam)?;
    // Free RAM: after the image, up to the device tree (if it is in this
    // bank above the image) or the bank's end. The last page becomes the
    // shared_info frame.
    let free_start = page_up(image.end()).ok_or(BootError::NoRam)?;
    let mut free_end = bank.end() & !(page - 1);
    if info.dtb.base >= free_start && info.dtb.base < free_end {
        free_end = info.dtb.base & !(page - 1);
    }
    if free_end < free_start + 2 * page {
        return Err(BootError::NoRam);
    }
    let shared_info = Gfn::containing(free_end - page);
    let ram = (
        Gfn::containing(free_start),
        ((free_end - page - free_start) / page) as usize,
    );

    let mut regions: Vec<(Region, MemKind)> =
        info.memory.iter().map(|r| (*r, MemKind::Normal)).collect();
    match info.gic {
        Gic::V2 { dist, cpu } => regions.extend([(dist, MemKind::Device), (cpu, MemKind::Device)]),
        Gic::V3 { dist, redist } => {
            regions.extend([(dist, MemKind::Device), (redist, MemKind::Device)])
        }
    }
    if let Some(u) = info.pl011 {
        regions.push((u, MemKind::Device));
    }
    let (grant_table, grant_frames, map_window) = match &info.hypervisor {
        Some(h) => {
            let gt = h.grant_table;
            let frames = GRANT_FRAMES.min((gt.size / page) as usize);
            regions.push((
                Region {
                    base: gt.base,
                    size: GRANT_RESERVE * page,
                },
                MemKind::Normal,
            ));
            // Foreign pages go in the first extended region that holds a
            // whole page, else in the grant region after the room kept for
            // the table.
            let window = match h.extended.iter().find_map(|e| window_in(*e)) {
                Some(w) => w,
                None => Region {
                    base: gt.base.checked_add(GRANT_RESERVE * page).ok_or_else(|| {
                        DtError::Malformed(
                            "/hypervisor".into(),
                            "reg",
                            "leaves no room for the grant table below the address space's end",
                        )
                    })?,
                    size: gt
                        .size
                        .saturating_sub(GRANT_RESERVE * page)
                        .min(MAP_WINDOW_PAGES * page),
                },
            };
            regions.push((window, MemKind::Normal));
            (
                Gfn::containing(gt.base),
                frames,
                (Gfn::containing(window.base), (window.size / page) as u32),
            )
        }
        None => (Gfn(0), 0, (Gfn(0), 0)),
    };
    Ok((
        AutoLayout {
            domid: DomId::SELF,
            ram,
            shared_info,
            grant_table,
            grant_frames,
            map_window,
        },
        regions,
    ))
}

/// Bring the platform up from the device tree at `dtb`: parse it, turn the
/// MMU and caches on, set up the GIC and the timer, and map Xen's pages.
///
/// Errors: [`BootError`].
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn boot(dtb: usize) -> Result<Booted, BootError> {
    // SAFETY: Xen passes the device tree's address in x0; its first 8 bytes
    // (magic, size) are readable RAM. We read them before trusting the size.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    let size = crate::boot_info::blob_size(header)?;
    // SAFETY: `blob_size` checked the magic and a plausible size; the blob
    // lies in our RAM, written by Xen before we started and not shared.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
    let info = crate::boot_info::parse(blob, dtb as u64)?;
    let image = image_range();
    let (layout, mut regions) = plan(&info, image)?;
    // A toolstack-built domain (xl) has its xenstore and console rings in
    // pages outside RAM, named by HVM parameters: map those too (the MMU
    // is still off, so the hypercalls need nothing mapped yet).
    for p in [
        xen_pv::abi::hvm_param::STORE_PFN,
        xen_pv::abi::hvm_param::CONSOLE_PFN,
    ] {
        if let Ok(pfn) = xen_pv::hypercall::hvm_get_param(&ArmHypervisor, p)
            && pfn != 0
        {
            let page = PAGE_SIZE as u64;
            regions.push((
                Region {
                    base: pfn.saturating_mul(page),
                    size: page,
                },
                MemKind::Normal,
            ));
        }
    }
    crate::mm::enable(&regions, image).map_err(BootError::Mm)?;
    // More heap than `.bss` holds: half the free RAM, up to 16 MiB, taken
    // from the start of what the page allocator would get.
    let mut layout = layout;
    let heap_pages = (layout.ram.1 / 2).min((16 << 20) / PAGE_SIZE);
    // SAFETY: these frames are free RAM (after the image, before the device
    // tree), identity-mapped Normal by `mm::enable`, and removed from the
    // page allocator's range just below, so nothing else will use them.
    unsafe { crate::heap::grow(layout.ram.0.addr() as usize, heap_pages * PAGE_SIZE) };
    layout.ram = (
        Gfn(layout.ram.0.0 + heap_pages as u64),
        layout.ram.1 - heap_pages,
    );
    crate::irq::init(
        info.gic,
        info.hypervisor.as_ref().map(|h| h.event_irq),
        info.virt_timer_irq,
    );
    let platform = XenPlatform::boot_auto(ArmHypervisor, GenericTimer, GenericTimer, &layout)
        .map_err(BootError::Xen)?;
    Ok(Booted { platform, info })
}

/// Boot, then run `app` to completion and shut down for the reason its
/// result gives (`true`: poweroff, `false`: crash, or a `SHUTDOWN_*` code). A boot failure is printed and crashes
/// the domain. (All but the boot is [`xen_pv::platform::run`].)
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn run<F, Fut>(dtb: usize, app: F) -> !
where
    F: FnOnce(Booted) -> Fut,
    Fut: Future<Output: xen_pv::platform::ShutdownReason>,
{
    xen_pv::platform::run(ArmHypervisor, boot(dtb), |b| &b.platform, app)
}

/// Shut the domain down with `reason` (`SHUTDOWN_*`). Never returns.
pub fn shutdown(reason: u32) -> ! {
    xen_pv::platform::shutdown(&ArmHypervisor, reason)
}

/// Crash the domain (after a fatal error has been reported). Never returns.
pub fn crash() -> ! {
    xen_pv::platform::crash(&ArmHypervisor)
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod cs {
    struct MaskIrqs;
    critical_section::set_impl!(MaskIrqs);

    // SAFETY: masking IRQs (and FIQs) on the only vCPU excludes every other
    // context that could run: the IRQ handler. `release` restores exactly
    // the state `acquire` saw, so nesting works.
    unsafe impl critical_section::Impl for MaskIrqs {
        unsafe fn acquire() -> u64 {
            let daif: u64;
            // SAFETY: reading DAIF and setting its I and F bits only masks
            // interrupts.
            unsafe {
                core::arch::asm!("mrs {}, daif", "msr daifset, #3", out(reg) daif, options(nomem, nostack));
            }
            daif
        }

        unsafe fn release(daif: u64) {
            // SAFETY: restores the interrupt mask `acquire` saved.
            unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nomem, nostack)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot_info::XenNode;

    fn info(hyp: bool) -> BootInfo {
        BootInfo {
            memory: alloc::vec![Region {
                base: 0x4000_0000,
                size: 0x800_0000
            }],
            hypervisor: hyp.then(|| XenNode {
                compatible: "xen,xen-4.20".into(),
                grant_table: Region {
                    base: 0x3800_0000,
                    size: 0x100_0000,
                },
                extended: alloc::vec![Region {
                    base: 0x4800_0000,
                    size: 0xb800_0000
                }],
                event_irq: 31,
            }),
            gic: Gic::V2 {
                dist: Region {
                    base: 0x0800_0000,
                    size: 0x1000,
                },
                cpu: Region {
                    base: 0x0801_0000,
                    size: 0x2000,
                },
            },
            virt_timer_irq: 27,
            pl011: None,
            dtb: Region {
                base: 0x47e0_0000,
                size: 0x600,
            },
        }
    }

    #[test]
    fn plans_ram_grants_and_window() {
        let image = Region {
            base: 0x4008_0000,
            size: 0x22_6000,
        };
        let (l, regions) = plan(&info(true), image).unwrap();
        assert_eq!(l.ram.0, Gfn(0x402a6));
        // Free RAM ends below the DTB; its last page is shared_info.
        assert_eq!(l.shared_info, Gfn(0x47dff));
        assert_eq!(l.ram.0.0 + l.ram.1 as u64, l.shared_info.0);
        assert_eq!(l.grant_table, Gfn(0x38000));
        assert_eq!(l.grant_frames, GRANT_FRAMES);
        assert_eq!(l.map_window, (Gfn(0x48000), 4096));
        assert!(
            regions
                .iter()
                .any(|(r, k)| r.base == 0x4800_0000 && *k == MemKind::Normal)
        );
        assert!(
            regions
                .iter()
                .any(|(r, k)| r.base == 0x0800_0000 && *k == MemKind::Device)
        );
    }

    #[test]
    fn without_a_hypervisor_node_there_are_no_grants() {
        let (l, _) = plan(
            &info(false),
            Region {
                base: 0x4008_0000,
                size: 0x1000,
            },
        )
        .unwrap();
        assert_eq!(l.grant_frames, 0);
        assert_eq!(l.map_window.1, 0);
    }

    #[test]
    fn an_image_outside_ram_is_an_error() {
        assert!(matches!(
            plan(
                &info(true),
                Region {
                    base: 0x1000,
                    size: 0x1000
                }
            ),
            Err(BootError::NoRam)
        ));
    }

    /// Found by the device-tree fuzzer: an extended region at the very top
    /// of the address space made rounding its base up to a page overflow.
    /// Such a region holds no whole page, so the next one is used (or the
    /// grant region's tail when none is usable).
    #[test]
    fn extended_regions_at_the_address_space_end_are_passed_over() {
        let image = Region {
            base: 0x4008_0000,
            size: 0x1000,
        };
        let mut i = info(true);
        let h = i.hypervisor.as_mut().unwrap();
        h.extended = alloc::vec![
            Region {
                base: 0xffff_ffff_ffff_ff7a,
                size: 0x10,
            },
            Region {
                base: 0x5000_0800,
                size: 0x3000,
            },
        ];
        let (l, _) = plan(&i, image).unwrap();
        // The second region's whole pages: 0x5000_1000..0x5000_3000.
        assert_eq!(l.map_window, (Gfn(0x50001), 2));
        i.hypervisor.as_mut().unwrap().extended.truncate(1);
        let (l, _) = plan(&i, image).unwrap();
        assert_eq!(l.map_window.0, Gfn(0x38000 + GRANT_RESERVE));
    }

    #[test]
    fn a_grant_region_at_the_address_space_end_is_an_error() {
        let mut i = info(true);
        let h = i.hypervisor.as_mut().unwrap();
        h.extended.clear();
        h.grant_table.base = u64::MAX - 0x1000;
        h.grant_table.size = 0x1000;
        let image = Region {
            base: 0x4008_0000,
            size: 0x1000,
        };
        assert!(matches!(plan(&i, image), Err(BootError::Dt(_))));
    }
}
