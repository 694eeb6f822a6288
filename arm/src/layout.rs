//! The guest-physical layout of an Arm domain, planned from its device
//! tree and where the image lies: which RAM the page allocator gets, the
//! frame for `shared_info`, where the grant table goes, the window for
//! other domains' pages, and every region the identity map must cover with
//! its memory type. The same on AArch64 and 32-bit Arm; a 32-bit guest
//! passes the 4 GiB its addresses reach, and what lies above is left out.

use crate::lpae::MemKind;
use alloc::vec::Vec;
use core::fmt;
use hal::DomId;
use hal::mem::{Gfn, PAGE_SIZE};
use xen_pv::devicetree::{BootInfo, DtError, Gic, Region};
use xen_pv::platform::AutoLayout;

/// Grant frames mapped at boot (2048 grant references).
pub const GRANT_FRAMES: usize = 4;
/// Room kept for grant frames at the start of the grant region, so the
/// table can grow to Xen's default maximum without moving.
pub const GRANT_RESERVE: u64 = 64;
/// Pages of the window for mapping other domains' grants.
pub const MAP_WINDOW_PAGES: u64 = 4096;

/// Why no layout could be planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image is not inside a RAM bank the device tree lists (below the
    /// limit), or that bank leaves no free pages after it.
    NoRam,
    /// The device tree's `/hypervisor` node is unusable (its grant region
    /// lies where the window after it would wrap the address space).
    Dt(DtError),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::NoRam => {
                f.write_str("the image is not inside any RAM bank of the device tree")
            }
            LayoutError::Dt(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for LayoutError {}

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
/// tree and where the image lies. Nothing at or above `limit` (what the
/// guest's addresses reach) is planned or mapped: RAM banks are cut there,
/// and extended regions beyond it are passed over.
///
/// Errors: [`LayoutError::NoRam`]; [`LayoutError::Dt`] if the grant region
/// lies so close to the address space's end that the window after it wraps.
pub fn plan(
    info: &BootInfo,
    image: Region,
    limit: u64,
) -> Result<(AutoLayout, Vec<(Region, MemKind)>), LayoutError> {
    let below = |r: &Region| -> Option<Region> {
        (r.base < limit).then(|| Region {
            base: r.base,
            size: r.end().min(limit) - r.base,
        })
    };
    let page = PAGE_SIZE as u64;
    let bank = info
        .memory
        .iter()
        .filter_map(below)
        .find(|b| b.base <= image.base && image.end() <= b.end())
        .ok_or(LayoutError::NoRam)?;
    // Free RAM: after the image, up to the device tree (if it is in this
    // bank above the image) or the bank's end. The last page becomes the
    // shared_info frame.
    let free_start = page_up(image.end()).ok_or(LayoutError::NoRam)?;
    let mut free_end = bank.end() & !(page - 1);
    if info.dtb.base >= free_start && info.dtb.base < free_end {
        free_end = info.dtb.base & !(page - 1);
    }
    if free_end < free_start + 2 * page {
        return Err(LayoutError::NoRam);
    }
    let shared_info = Gfn::containing(free_end - page);
    let ram = (
        Gfn::containing(free_start),
        ((free_end - page - free_start) / page) as usize,
    );

    let mut regions: Vec<(Region, MemKind)> = info
        .memory
        .iter()
        .filter_map(below)
        .map(|r| (r, MemKind::Normal))
        .collect();
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
            let window = match h.extended.iter().filter_map(below).find_map(window_in) {
                Some(w) => w,
                None => Region {
                    base: gt.base.checked_add(GRANT_RESERVE * page).ok_or_else(|| {
                        LayoutError::Dt(DtError::Malformed(
                            "/hypervisor".into(),
                            "reg",
                            "leaves no room for the grant table below the address space's end",
                        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use xen_pv::devicetree::XenNode;

    const L: u64 = crate::lpae::VA_LIMIT_39;

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
        let (l, regions) = plan(&info(true), image, L).unwrap();
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
            L,
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
                },
                L
            ),
            Err(LayoutError::NoRam)
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
        let (l, _) = plan(&i, image, L).unwrap();
        // The second region's whole pages: 0x5000_1000..0x5000_3000.
        assert_eq!(l.map_window, (Gfn(0x50001), 2));
        i.hypervisor.as_mut().unwrap().extended.truncate(1);
        let (l, _) = plan(&i, image, L).unwrap();
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
        assert!(matches!(plan(&i, image, L), Err(LayoutError::Dt(_))));
    }

    /// A 32-bit guest: RAM above 4 GiB is cut off, and an extended region
    /// there is passed over for the grant region's tail.
    #[test]
    fn a_32_bit_guest_plans_below_4_gib() {
        let mut i = info(true);
        i.memory.push(Region {
            base: 0x2_0000_0000,
            size: 0x1000_0000,
        });
        i.hypervisor.as_mut().unwrap().extended = alloc::vec![Region {
            base: 0x3_0000_0000,
            size: 0x1000_0000,
        }];
        let image = Region {
            base: 0x4008_0000,
            size: 0x1000,
        };
        let (l, regions) = plan(&i, image, crate::lpae::VA_LIMIT_32).unwrap();
        assert_eq!(l.map_window.0, Gfn(0x38000 + GRANT_RESERVE));
        assert!(regions.iter().all(|(r, _)| r.end() <= 1 << 32));
    }
}
