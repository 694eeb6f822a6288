//! Bringing the platform up, and bringing it down.

use crate::hypercall::ArmHypervisor;
use xen_pv::abi::shutdown;
use xen_pv::hypercall;

/// Shut the domain down with `reason` (`SHUTDOWN_*`). Never returns.
pub fn shutdown(reason: u32) -> ! {
    loop {
        let _ = hypercall::sched_shutdown(&ArmHypervisor, reason);
        core::hint::spin_loop();
    }
}

/// Crash the domain (after a fatal error has been reported). Never returns.
pub fn crash() -> ! {
    shutdown(shutdown::CRASH)
}
