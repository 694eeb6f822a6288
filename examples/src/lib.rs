//! # xenpal-examples
//!
//! Example guests ("unikernels") for xenpal. Each is written against the
//! platform traits only — the same code runs in the simulator and on real
//! Xen; the files under `examples/` boot them in the simulator.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod exchange;
pub mod fullstack;
pub mod http;
pub mod selftest;
pub mod site;
