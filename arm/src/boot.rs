//! An Arm guest's boot from its device tree to a running platform: the same
//! steps on AArch64 and 32-bit Arm, with the two that touch the arch's
//! registers (turning the identity map on, setting up the GIC) handed in.
//!
//! The steps: parse the device tree; plan the layout ([`crate::layout`]);
//! add the pages a toolstack-built domain's xenstore and console rings lie
//! in (named by HVM parameters, outside RAM) to what is mapped; map it all;
//! grow the heap by half the free RAM (up to 16 MiB); set up the GIC for
//! Xen's event PPI and the virtual timer; and start the platform
//! (`XenPlatform::boot_auto`: `shared_info`, grant table, xenstore,
//! console).

use crate::layout::{LayoutError, plan};
use crate::lpae::{MemKind, MmError};
use alloc::vec::Vec;
use core::fmt;
use hal::mem::{Gfn, PAGE_SIZE};
use hal::time::Clock;
use xen_pv::devicetree::{BootInfo, DtError, Gic, Region};
use xen_pv::hypercall::Hypervisor;
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;

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

impl core::error::Error for BootError {}

impl From<DtError> for BootError {
    fn from(e: DtError) -> Self {
        BootError::Dt(e)
    }
}

impl From<LayoutError> for BootError {
    fn from(e: LayoutError) -> Self {
        match e {
            LayoutError::NoRam => BootError::NoRam,
            LayoutError::Dt(e) => BootError::Dt(e),
        }
    }
}

/// The device tree Xen left at `addr`: its header's magic and size are
/// checked before the size is trusted.
///
/// # Safety
/// `addr` must be where Xen put the device tree (`x0` on AArch64, `r2` on
/// 32-bit Arm): at least its first 8 bytes readable, and the whole blob,
/// once its header checks out, in RAM nothing else writes while the
/// returned slice lives.
///
/// Errors: [`DtError::BadBlob`] for a bad magic or an implausible size.
pub unsafe fn device_tree_at(addr: usize) -> Result<&'static [u8], DtError> {
    // SAFETY: the caller's contract: the first 8 bytes are readable.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = xen_pv::devicetree::blob_size(header)?;
    // SAFETY: `blob_size` checked the magic and a plausible size; the
    // caller vouches for the blob being in RAM no one else writes.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size) })
}

/// What the boot needs from the arch: where the image lies, how far its
/// addresses reach, and the two steps that need its registers.
pub struct Arch<M, I> {
    /// The running image's range (code, data, `.bss` and stack).
    pub image: Region,
    /// Highest address (exclusive) the guest's identity map can reach.
    pub limit: u64,
    /// Turn on the identity map of these regions (the image's range given
    /// too, for cache maintenance).
    pub enable_mm: M,
    /// Set up the GIC: the controller, Xen's event PPI (if the device tree
    /// has one) and the virtual timer's PPI.
    pub init_irq: I,
}

/// Boot from the device tree `blob` (found at `dtb`).
///
/// Errors: [`BootError`], naming the step that failed.
pub fn boot<H, C, A, M, I>(
    h: H,
    clock: C,
    alarm: A,
    blob: &[u8],
    dtb: u64,
    arch: Arch<M, I>,
) -> Result<(XenPlatform<H, C, A>, BootInfo), BootError>
where
    H: Hypervisor,
    C: Clock,
    A: AlarmHw,
    M: FnOnce(&[(Region, MemKind)], Region) -> Result<(), MmError>,
    I: FnOnce(Gic, Option<u32>, u32),
{
    let info = xen_pv::devicetree::parse(blob, dtb)?;
    let (mut layout, mut regions): (_, Vec<(Region, MemKind)>) =
        plan(&info, arch.image, arch.limit)?;
    // A toolstack-built domain (xl) has its xenstore and console rings in
    // pages outside RAM, named by HVM parameters: map those too (the
    // hypercalls need nothing mapped yet).
    let page = PAGE_SIZE as u64;
    for p in [
        xen_pv::abi::hvm_param::STORE_PFN,
        xen_pv::abi::hvm_param::CONSOLE_PFN,
    ] {
        if let Ok(pfn) = xen_pv::hypercall::hvm_get_param(&h, p)
            && pfn != 0
        {
            regions.push((
                Region {
                    base: pfn.saturating_mul(page),
                    size: page,
                },
                MemKind::Normal,
            ));
        }
    }
    (arch.enable_mm)(&regions, arch.image).map_err(BootError::Mm)?;
    // More heap than `.bss` holds: half the free RAM, up to 16 MiB, taken
    // from the start of what the page allocator would get.
    let heap_pages = (layout.ram.1 / 2).min((16 << 20) / PAGE_SIZE);
    let heap_start = usize::try_from(layout.ram.0.addr()).map_err(|_| BootError::NoRam)?;
    // SAFETY: these frames are free RAM (after the image, before the device
    // tree), identity-mapped Normal by `enable_mm` just above, and removed
    // from the page allocator's range just below, so nothing else will use
    // them.
    unsafe { crate::heap::grow(heap_start, heap_pages * PAGE_SIZE) };
    layout.ram = (
        Gfn(layout.ram.0.0 + heap_pages as u64),
        layout.ram.1 - heap_pages,
    );
    (arch.init_irq)(
        info.gic,
        info.hypervisor.as_ref().map(|x| x.event_irq),
        info.virt_timer_irq,
    );
    let platform = XenPlatform::boot_auto(h, clock, alarm, &layout).map_err(BootError::Xen)?;
    Ok((platform, info))
}
