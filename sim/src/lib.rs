//! # xenpal-sim
//!
//! Xen in user space. The simulator emulates Xen at its ABI — hypercalls with
//! the same `#[repr(C)]` argument bytes, `shared_info` with the same 2-level
//! event bitmaps, grant tables with the same entries and flags, xenstored
//! speaking the same wire protocol over the same ring page — so a guest in
//! the simulator runs the real `xenpal-xen-pv` and driver code, the code that
//! runs on real Xen. Only two things differ: how a hypercall is issued
//! ([`SimHypervisor`]) and how time and memory are reached ([`SimClock`],
//! memory made of atomic words).
//!
//! A guest is an `async fn main(platform)`: a cooperative task, not a thread,
//! so one process runs thousands of them. In [`Mode::Deterministic`] one
//! domain runs at a time, in an order drawn from the seed, and virtual time
//! jumps to the next deadline when all domains are blocked: the same seed
//! gives the same trace ([`Sim::trace_hash`]). In [`Mode::FreeRunning`]
//! domains run on several OS threads in parallel, in real time.
//!
//! ```
//! use xenpal_sim::{DomainConfig, Sim, SimConfig};
//! use xenpal_sim::hal::Console;
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! let d = sim
//!     .spawn(DomainConfig::new("hello"), |p| async move {
//!         p.console().write_lossy(b"hello from a simulated guest\n");
//!     })
//!     .unwrap();
//! let report = sim.run();
//! assert!(report.all_clean());
//! assert!(sim.console_output(d).contains("hello from a simulated guest"));
//! ```
//!
//! Nothing in the simulator panics on guest input: bad hypercall arguments
//! get Xen's errno, a hostile ring breaks only that connection, and a guest
//! that panics is reported with its domain id and the seed, then destroyed
//! like a crashed domain.

#![forbid(unsafe_code)]

pub mod backends;
mod console;
mod domain;
mod event_2l;
mod event_channel;
mod gnttab;
mod guest;
mod guest_access;
mod guest_log;
mod hvm;
mod hypercall;
mod hypervisor;
mod kernel;
pub mod layout;
mod memory;
mod p2m;
mod sched;
mod services;
mod sim;
mod timer;
pub mod toolstack;
pub mod xl;
mod xsm;

pub use crate::domain::Exit;
pub use crate::hypervisor::Rng;
pub use guest::{Holdings, SimClock, SimHypervisor, SimPlatform};
pub use sim::{
    DomainConfig, DomainStatus, Mode, RunReport, Sim, SimConfig, SimError, XenstoreWriteError,
    seed_from_env,
};
pub use toolstack::{Running, Toolstack, ToolstackError, UnreachableReason};
pub use xen_pv;
pub use xen_pv::hal;
pub use xl::{DomainSpec, XlError};
