//! # xenpal-arch-aarch64
//!
//! xenpal on real Xen for AArch64 guests: boots as a Linux arm64 `Image`
//! (position-independent, relocating itself), reads the device tree, turns
//! the MMU on, drives GICv2 or GICv3 and the generic timer, and issues
//! hypercalls with `hvc #0xEA1`. The Xen protocols themselves are
//! `xenpal-xen-pv`'s; this crate supplies the [`xen_pv::Hypervisor`], the
//! clock and the alarm, and boots an `xen_pv::platform::XenPlatform`.
//!
//! The data structures (device-tree parsing, page tables) build and test on
//! the host; the assembly and register accesses only for
//! `aarch64-unknown-none`.

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
