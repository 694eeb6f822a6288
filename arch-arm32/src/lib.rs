//! # xenpal-arch-arm32
//!
//! xenpal on real Xen for 32-bit Arm guests (ARMv7-A: Cubieboard2, Banana
//! Pi and the like), built for `armv7a-none-eabi`. Today: the zImage entry
//! Xen uses for a domU (`r2` = device tree), hypercalls (`hvc #0xEA1`, the
//! number in `r12`), the generic timer's clock, the vector table (an
//! unexpected exception is reported and the domain crashed), Xen's
//! emergency console and shutdown — enough for a
//! guest to boot, talk and stop (`examples/boot.rs`, which CI boots under
//! QEMU-emulated Xen). The MMU, GIC, timer and the platform follow the
//! shape of `xenpal-arch-aarch64`, file for file (docs/ARM32.md).

#![cfg_attr(not(test), no_std)]

pub mod boot_info;
pub mod console;
pub mod exceptions;
pub mod heap;
pub mod hypercall;
pub mod mm;
pub mod platform;
pub mod start;
pub mod time;

pub use hypercall::ArmHypervisor;

#[doc(hidden)]
pub use hal;
#[doc(hidden)]
pub use xen_pv;
