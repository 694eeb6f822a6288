//! Bringing the platform up (device tree, MMU, GIC, timer, Xen's pages),
//! running the guest and bringing the domain down, and `critical_section`
//! by masking interrupts. The boot's steps are `xenpal_arm::boot`'s, shared
//! with AArch64; the running and the shutdown `xen_pv::platform`'s, the
//! same on every architecture.

use crate::boot_info::{BootInfo, Region};
use crate::hypercall::ArmHypervisor;
use crate::mm::MemKind;
use crate::time::GenericTimer;
use alloc::vec::Vec;
#[cfg(all(target_arch = "arm", target_os = "none"))]
use core::future::Future;
use xen_pv::platform::{AutoLayout, XenPlatform};

/// The platform a 32-bit Arm guest's `main` receives.
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

/// Where the running image lies: from its load address to the end of
/// `.bss` (which holds the heap's first part and the stack).
pub fn image_range() -> Region {
    #[cfg(all(target_arch = "arm", target_os = "none"))]
    {
        unsafe extern "C" {
            static _image_start: u8;
            static __bss_end: u8;
        }
        let start = (&raw const _image_start) as usize as u64;
        let end = (&raw const __bss_end) as usize as u64;
        Region {
            base: start,
            size: end - start,
        }
    }
    #[cfg(not(all(target_arch = "arm", target_os = "none")))]
    Region { base: 0, size: 0 }
}

/// Plan the guest-physical layout and the regions to map, from the device
/// tree and where the image lies (`xenpal_arm::layout::plan`, below the
/// 4 GiB a 32-bit address reaches).
///
/// Errors: [`BootError::NoRam`]; [`BootError::Dt`] if the grant region lies
/// so close to the address space's end that the window after it wraps.
pub fn plan(
    info: &BootInfo,
    image: Region,
) -> Result<(AutoLayout, Vec<(Region, MemKind)>), BootError> {
    Ok(xenpal_arm::layout::plan(
        info,
        image,
        crate::mm::VA_LIMIT_32,
    )?)
}

/// Bring the platform up from the device tree at `dtb`: parse it, switch
/// to the map it asks for, set up the GIC and the timer, and map Xen's
/// pages.
///
/// Errors: [`BootError`].
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub fn boot(dtb: usize) -> Result<Booted, BootError> {
    // SAFETY: Xen passes the device tree's address in r2; the blob lies in
    // our RAM, written by Xen before we started and not shared.
    let blob = unsafe { xenpal_arm::boot::device_tree_at(dtb) }?;
    let arch = xenpal_arm::boot::Arch {
        image: image_range(),
        limit: crate::mm::VA_LIMIT_32,
        enable_mm: |regions: &[(Region, MemKind)], _image| crate::mm::enable(regions),
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
/// result gives (`true`: poweroff, `false`: crash, or a `SHUTDOWN_*` code).
/// A boot failure is printed and crashes the domain. (All but the boot is
/// [`xen_pv::platform::run`].)
#[cfg(all(target_arch = "arm", target_os = "none"))]
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

#[cfg(all(target_arch = "arm", target_os = "none"))]
mod cs {
    struct MaskIrqs;
    critical_section::set_impl!(MaskIrqs);

    // SAFETY: masking IRQs (and FIQs) on the only vCPU excludes every other
    // context that could run: the IRQ handler. `release` restores exactly
    // the I and F bits `acquire` saw, so nesting works.
    unsafe impl critical_section::Impl for MaskIrqs {
        unsafe fn acquire() -> u32 {
            let cpsr: u32;
            // SAFETY: reading CPSR and masking IRQs and FIQs only.
            unsafe {
                core::arch::asm!("mrs {}, cpsr", "cpsid if", out(reg) cpsr, options(nomem, nostack));
            }
            cpsr
        }

        unsafe fn release(cpsr: u32) {
            // SAFETY: restores the control bits (I, F, mode) `acquire` saved;
            // the mode is the one we run in.
            unsafe { core::arch::asm!("msr cpsr_c, {}", in(reg) cpsr, options(nomem, nostack)) };
        }
    }
}
