//! # xenpal-xen-pv
//!
//! Xen's protocols, written once and used on every platform: the guest ABI
//! ([`abi`]), hypercall wrappers over a per-platform [`Hypervisor`]
//! ([`hypercall`]), 2-level event channels ([`event`]), grant tables
//! ([`grant`]), the xenstore client ([`xenstore`]) and xenbus helpers
//! ([`xenbus`]), the PV and emergency consoles ([`console`]), alarms
//! ([`timer`]) and the guest executor ([`executor`]).
//!
//! Everything is generic over [`Hypervisor`]: the arch crates implement it for
//! real Xen, `xenpal-sim` for the simulator. Only [`shm`] contains `unsafe`.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod console;
pub mod devicetree;
pub mod event;
pub mod executor;
pub mod grant;
pub mod hypercall;
pub mod pages;
pub mod platform;
#[allow(unsafe_code)]
pub mod shm;
pub mod timer;
pub mod xenbus;
pub mod xenstore;

pub use hal;
pub use hypercall::Hypervisor;
