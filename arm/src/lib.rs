//! # xenpal-arm
//!
//! What the two Arm arch crates (`xenpal-arch-aarch64`,
//! `xenpal-arch-arm32`) share, so neither writes it twice. A 32-bit Arm
//! guest with LPAE and an AArch64 guest see the same Xen: the same guest
//! memory layout in the device tree, the same long-descriptor translation
//! table format, the same memory-mapped GICv2. What differs — the entry
//! code, how a system register is reached, hypercall registers — stays in
//! each arch crate.
//!
//! - [`boot`]: the boot from the device tree to a running platform, the
//!   arch's register steps handed in;
//! - [`layout`]: the guest-physical layout planned from the device tree
//!   (free RAM, `shared_info`, grant frames, the window for foreign pages)
//!   and the regions to map;
//! - [`lpae`]: identity-map translation tables in the long-descriptor
//!   format (2 MiB blocks), with Normal and Device memory types;
//! - [`gic`]: which interrupt is Xen's event PPI and which the timer's,
//!   what the handler counts, and the GICv2 distributor and CPU interface;
//! - [`heap`]: the buddy allocator over `.bss` that makes `alloc` work from
//!   the first line of Rust.
//!
//! The planning and table code builds and is tested on the host; the
//! register accesses only for `aarch64-unknown-none` and
//! `armv7a-none-eabi`.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot;
pub mod gic;
pub mod heap;
pub mod layout;
pub mod lpae;
