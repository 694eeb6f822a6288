//! # xenpal-arch-arm32
//!
//! xenpal on real Xen for 32-bit Arm guests (ARMv7-A with LPAE and the
//! virtualization extensions: Cubieboard2, Banana Pi and the like), built
//! for `armv7a-none-eabi`, in the shape of `xenpal-arch-aarch64`, file for
//! file: the zImage entry Xen uses for a domU (`r2` = device tree),
//! hypercalls (`hvc #0xEA1`, the number in `r12`), the MMU (LPAE), GICv2,
//! the generic timer's clock and alarm, the vector table (interrupts
//! handled, any other exception reported and the domain crashed), Xen's
//! emergency console, and the platform (`XenPlatform`, booted from the
//! device tree). What the two Arm crates share is `xenpal-arm`'s. See
//! docs/ARM32.md.
//!
//! Soft-float (`armv7a-none-eabi`, not `-eabihf`): the IRQ entry then has
//! no VFP registers to save, and nothing here computes in floating point.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot_info;
pub mod console;
pub mod exceptions;
pub mod heap;
pub mod hypercall;
pub mod irq;
pub mod mm;
pub mod platform;
pub mod start;
pub mod time;

pub use hypercall::ArmHypervisor;

#[doc(hidden)]
pub use hal;
#[doc(hidden)]
pub use xen_pv;
