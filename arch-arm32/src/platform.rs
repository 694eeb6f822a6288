//! Bringing the domain down: shutdown and crash through `SCHEDOP_shutdown`
//! (`xen_pv::platform`'s, the same on every architecture).

use crate::hypercall::ArmHypervisor;

/// Shut the domain down with `reason` (`SHUTDOWN_*`). Never returns.
pub fn shutdown(reason: u32) -> ! {
    xen_pv::platform::shutdown(&ArmHypervisor, reason)
}

/// Crash the domain (after a fatal error has been reported). Never returns.
pub fn crash() -> ! {
    xen_pv::platform::crash(&ArmHypervisor)
}
