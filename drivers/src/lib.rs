//! # xenpal-drivers
//!
//! PV drivers for Xen guests, taking `xen_pv`'s `XenPlatform` (over any
//! hypervisor, clock and alarm) and written once for every platform: the xenbus frontend building blocks
//! ([`xenbus`]), console logging ([`console`]), the network and block
//! frontends, and checks of a FAT volume before it is read ([`fat`]).
//!
//! Backends are hostile (see `docs/ARCHITECTURE.md`): a driver copies each
//! response out of the shared ring once, validates it, and on any
//! impossibility (an unknown id, an impossible length, a runaway producer)
//! disconnects that device with an error while the guest keeps running.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blk;
pub mod block_device;
pub mod console;
pub mod fat;
pub mod net;
pub mod xenbus;
