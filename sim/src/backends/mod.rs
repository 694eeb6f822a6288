//! Backends that run in dom0 of the simulator, written as dom0 code on the
//! same interfaces as any guest (`xenpal-xen-pv`, `xenpal-drivers::xenbus`):
//! they map or copy grants and bind event channels; they never reach into a
//! guest's memory directly.

pub mod blk;
pub mod net;
