//! # xenpal-apps
//!
//! Example guests ("unikernels") for xenpal. Each takes `xenpal::Platform`
//! and nothing else a user's crate could not have — the same code runs in
//! the simulator and on real Xen; the files under `examples/` boot them in the simulator.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(not(target_os = "none"))]
extern crate std;

pub mod conformance;
pub mod exchange;
pub mod fullstack;
pub mod http;
pub mod selftest;
pub mod site;
#[cfg(not(target_os = "none"))]
pub mod site_client;
