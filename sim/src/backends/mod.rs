//! Backends that run in dom0 of the simulator, written as dom0 code on the
//! same interfaces as any guest (`xenpal-xen-pv`, `xenpal-drivers::xenbus`):
//! they map or copy grants and bind event channels; they never reach into a
//! guest's memory directly.
//!
//! Every backend has one shape:
//!
//! - `new()`, then configuration on `&mut self` (captures, faults, ...);
//! - `add_*(&self, sim, domid, index, ...)` gives a guest a device as a
//!   toolstack does (its xenstore nodes, and what the backend needs to
//!   serve it) and returns a handle on it ([`net::Vif`], [`blk::Vbd`]:
//!   its paths, its controls: stop/start, crash/restart);
//! - `spawn(self, &mut Sim)` runs the backend as dom0's task, or
//!   `serve(self, &SimPlatform)` inside a dom0 task shared with other
//!   backends; both consume it, so add devices first (a [`blk::Blkback`]
//!   is a cheap handle on its registry: a clone kept before `spawn` adds
//!   disks later);
//! - errors are typed ([`XenstoreWriteError`](crate::XenstoreWriteError),
//!   [`blk::VbdError`], [`SimError`](crate::SimError)).

pub mod blk;
pub mod net;
