//! Bringing the platform up (device tree, MMU, GIC, timer, Xen's pages),
//! running the guest and bringing the domain down (the last two are
//! `xen_pv::platform`'s, the same on every architecture), and
//! `critical_section` by masking interrupts.

use crate::boot_info::{BootInfo, Region};
use crate::hypercall::ArmHypervisor;
use crate::mm::MemKind;
use crate::time::GenericTimer;
use alloc::vec::Vec;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use core::future::Future;
use xen_pv::platform::{AutoLayout, XenPlatform};

/// The platform an Arm guest's `main` receives.
pub type ArmPlatform = XenPlatform<ArmHypervisor, GenericTimer, GenericTimer>;

pub use xenpal_arm::boot::BootError;
pub use xenpal_arm::layout::{GRANT_FRAMES, GRANT_RESERVE, MAP_WINDOW_PAGES};

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

/// Plan the guest-physical layout and the regions to map, from the device
/// tree and where the image lies (`xenpal_arm::layout::plan`, reaching
/// what 39-bit addresses reach).
///
/// Errors: [`BootError::NoRam`]; [`BootError::Dt`] if the grant region lies
/// so close to the address space's end that the window after it wraps.
pub fn plan(
    info: &BootInfo,
    image: Region,
) -> Result<(AutoLayout, Vec<(Region, MemKind)>), BootError> {
    Ok(xenpal_arm::layout::plan(info, image, crate::mm::VA_LIMIT)?)
}

/// Bring the platform up from the device tree at `dtb`: parse it, turn the
/// MMU and caches on, set up the GIC and the timer, and map Xen's pages.
///
/// Errors: [`BootError`].
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn boot(dtb: usize) -> Result<Booted, BootError> {
    // SAFETY: Xen passes the device tree's address in x0; the blob lies in
    // our RAM, written by Xen before we started and not shared.
    let blob = unsafe { xenpal_arm::boot::device_tree_at(dtb) }?;
    let arch = xenpal_arm::boot::Arch {
        image: image_range(),
        limit: crate::mm::VA_LIMIT,
        enable_mm: crate::mm::enable,
        init_irq: crate::irq::init,
    };
    let (platform, info) = xenpal_arm::boot::boot(
        ArmHypervisor,
        GenericTimer,
        GenericTimer,
        blob,
        dtb as u64,
        arch,
    )?;
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
