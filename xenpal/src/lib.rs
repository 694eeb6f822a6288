//! # xenpal
//!
//! The one dependency a Xen unikernel needs. Write the guest once:
//!
//! ```no_run
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//!
//! #[xenpal::main]
//! async fn main(p: xenpal::Platform) -> Result<(), xenpal::net::NetError> {
//!     let net = xenpal::net::Stack::open(&p, "0").await?;
//!     xenpal::log::info!("up at {}", net.address());
//!     Ok(())
//! }
//! ```
//!
//! and it builds three ways, picked by `cfg`:
//! - `aarch64-unknown-none`: an Arm Xen guest (`xenpal-arch-aarch64`);
//! - `armv7a-none-eabi`: a 32-bit Arm Xen guest (`xenpal-arch-arm32`);
//! - `x86_64-unknown-none`: an x86_64 PV Xen guest (`xenpal-arch-x86_64`);
//! - the host: a domain of the simulator (`xenpal-sim`), so `cargo run`
//!   and `cargo test` work on any Linux machine.
//!
//! The framework owns the edges ([`rt`]): the entry point, the panic handler
//! (report, then crash the domain), the heap (the arch crate's), the logger
//! (`log` to the PV console, or Xen's emergency console before it is up),
//! and the exit status (`()` or `Ok` powers the domain off; `Err` or a panic
//! crashes it, with the reason on the console).
//!
//! User code names one platform type, [`Platform`], and no generics.

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

#[cfg(all(
    target_os = "none",
    not(any(target_arch = "aarch64", target_arch = "arm", target_arch = "x86_64"))
))]
compile_error!(
    "xenpal runs on aarch64-unknown-none, armv7a-none-eabi, x86_64-unknown-none, or the host (the simulator)"
);

pub mod control;
pub mod net;
pub mod rt;

#[cfg(target_os = "none")]
mod logger;

pub use xenpal_macros::main;

pub use hal;
pub use log;
pub use smoltcp;
pub use xen_pv;
pub use xenpal_drivers as drivers;

/// The arch crate of this target: AArch64.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use xenpal_arch_aarch64 as arch;
/// The arch crate of this target: 32-bit Arm.
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub use xenpal_arch_arm32 as arch;
/// The arch crate of this target: x86_64 PV.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use xenpal_arch_x86_64 as arch;
/// The simulator, on the host: for tests that start domains themselves
/// (`sim::toolstack`) and for `cargo run` of a guest.
#[cfg(not(target_os = "none"))]
pub use xenpal_sim as sim;

/// The platform a guest's `main` receives: Xen's event channels, grant
/// table, timer, page allocator, console and xenstore, reached through the
/// hypervisor of this target.
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub type Platform = arch::platform::ArmPlatform;
/// The hypervisor handle of this target (how hypercalls are issued).
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub type Hypervisor = arch::ArmHypervisor;

/// The platform a guest's `main` receives: Xen's event channels, grant
/// table, timer, page allocator, console and xenstore, reached through the
/// hypervisor of this target.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub type Platform = arch::platform::PvPlatform;
/// The hypervisor handle of this target (how hypercalls are issued).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub type Hypervisor = arch::PvHypervisor;

/// The platform a guest's `main` receives: Xen's event channels, grant
/// table, timer, page allocator, console and xenstore, reached through the
/// hypervisor of this target (here: the simulator).
#[cfg(not(target_os = "none"))]
pub type Platform = xenpal_sim::SimPlatform;
/// The hypervisor handle of this target (how hypercalls are issued).
#[cfg(not(target_os = "none"))]
pub type Hypervisor = xenpal_sim::SimHypervisor;

/// The clock of this target.
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub type Clock = arch::time::GenericTimer;
/// The one-shot alarm of this target.
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), target_os = "none"))]
pub type Alarm = arch::time::GenericTimer;
/// The clock of this target.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub type Clock = arch::time::PvClock;
/// The one-shot alarm of this target.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub type Alarm = xen_pv::timer::XenAlarm<Hypervisor>;
/// The clock of this target.
#[cfg(not(target_os = "none"))]
pub type Clock = xenpal_sim::SimClock;
/// The one-shot alarm of this target.
#[cfg(not(target_os = "none"))]
pub type Alarm = xen_pv::timer::XenAlarm<Hypervisor>;

/// A vif's frontend on this target's platform (see [`drivers::net`]).
#[doc(alias = "netfront")]
pub type Netfront<'p> = drivers::net::Netfront<'p, Hypervisor, Clock, Alarm>;
/// A disk's frontend on this target's platform (see [`drivers::blk`]).
#[doc(alias = "blkfront")]
pub type Blkfront<'p> = drivers::blk::Blkfront<'p, Hypervisor, Clock, Alarm>;

// `Platform` is `XenPlatform<Hypervisor, Clock, Alarm>` on every target.
const _: fn(Platform) -> xen_pv::platform::XenPlatform<Hypervisor, Clock, Alarm> = |p| p;

/// Expands to the bare-metal entry point for the user's `main` (used by
/// `#[xenpal::main]`; not for direct use).
#[doc(hidden)]
#[macro_export]
macro_rules! __bare_metal_entry {
    ($main:ident) => {
        fn __xenpal_entry(boot: usize) -> ! {
            $crate::rt::bare_metal_main(boot, $main)
        }
        $crate::arch::entry!(__xenpal_entry);
    };
}
