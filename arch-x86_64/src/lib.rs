//! # xenpal-arch-x86_64
//!
//! xenpal on real Xen for x86_64 PV guests: a static ELF with Xen's notes,
//! started with `start_info`; PV page tables changed only through
//! `mmu_update`/`update_va_mapping`; events through the registered callback;
//! Xen system time from `vcpu_time_info` and the TSC; hypercalls through
//! the hypercall page. The Xen protocols themselves are `xenpal-xen-pv`'s;
//! this crate supplies the [`xen_pv::Hypervisor`], the clock, and boots an
//! `xen_pv::platform::XenPlatform`.
//!
//! The data structures (start_info checks, the page-table walk, the pvclock
//! formula) build and test on the host; the assembly and hypercalls only
//! for `x86_64-unknown-none`.

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
pub mod pvh;
pub mod start;
pub mod time;

pub use hypercall::PvHypervisor;

#[doc(hidden)]
pub use hal;
#[doc(hidden)]
pub use xen_pv;
