//! # xenpal-hal
//!
//! The traits the rest of a Xen guest's stack is written against: time and
//! alarms ([`time`]), event channels ([`event`]), grant tables ([`grant`]),
//! memory shared with other domains and the page allocator ([`mem`]), Xen's
//! shared-ring protocol ([`ring`]), and consoles ([`console`]).
//!
//! The arch crates (`xenpal-arch-x86_64`, `xenpal-arch-aarch64`) implement them
//! on real Xen, and `xenpal-sim` on a simulated Xen in user space. Drivers take
//! `xen_pv`'s concrete platform, which is built from these parts, so the same
//! driver code runs on all three.
//!
//! Trait documentation is normative: MUST and MAY bind implementations, and
//! every error a method can return is listed on the method.
//!
//! This crate is `no_std` (with `alloc`) and contains no `unsafe` code.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod console;
pub mod event;
pub mod grant;
pub mod mem;
pub mod ring;
pub mod task;
pub mod time;

pub use console::{Console, ConsoleError};
pub use event::{DomId, EventChannel, EventError, EventPort, Virq};
pub use grant::{Access, GrantError, GrantRef, GrantTable};
pub use mem::{AllocError, Gfn, PAGE_SIZE, PageAlloc, Pages, SharedMemory};
pub use ring::{BackRing, FrontRing, RingError, RingIdx};
pub use time::{Clock, Instant, Timer};
