//! # xenpal-fuzz
//!
//! Fuzz harnesses for every parser of data that another domain, the
//! network or a hostile guest controls. Each target in `fuzz_targets/`
//! calls one `run` function here, so the same harness also replays a
//! corpus in an ordinary test (`cargo test` in this directory) and
//! `gen-corpus` writes seed inputs for it.
//!
//! Harnesses call the real code (the parsers, ring clients, drivers and
//! simulator of the main workspace), never a copy; a panic anywhere is a
//! finding. See `docs/RELIABILITY.md`.

pub mod input;
pub mod mock;
pub mod simkit;

/// The harnesses, one per fuzz target.
pub mod targets {
    pub mod blkfront;
    pub mod console;
    pub mod devicetree;
    pub mod fat;
    pub mod http;
    pub mod hypercall;
    pub mod netfront;
    pub mod start_info;
    pub mod xenstore_client;
    pub mod xenstored;
}

/// A harness: runs one fuzz input.
pub type Harness = fn(&[u8]);

/// Every target: its name (as in `fuzz_targets/<name>.rs` and
/// `corpus/<name>/`) and its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("http", targets::http::run),
    ("devicetree", targets::devicetree::run),
    ("start_info", targets::start_info::run),
    ("xenstore_client", targets::xenstore_client::run),
    ("xenstored", targets::xenstored::run),
    ("console", targets::console::run),
    ("hypercall", targets::hypercall::run),
    ("netfront", targets::netfront::run),
    ("blkfront", targets::blkfront::run),
    ("fat", targets::fat::run),
];
