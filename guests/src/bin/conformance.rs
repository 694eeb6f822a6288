//! The conformance suite (`xenpal_apps::conformance`) as a guest: what Xen
//! answers at each interface, one line per case, then a
//! `conformance verdict:` line (`cargo xtask qemu ... conformance`; the
//! simulator runs the same code in `apps/tests/conformance_sim.rs`).
//! `cargo xtask report` sets the platforms' answers side by side.

#![cfg_attr(target_os = "none", no_std, no_main)]

use xenpal::hal::DomId;
use xenpal_apps::conformance::{self, Setup};

/// Why the suite failed: some case did not do what Xen does.
#[derive(Debug)]
struct Unexpected;

impl core::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("some conformance cases did not do what Xen does")
    }
}

impl core::error::Error for Unexpected {}

#[xenpal::main]
async fn main(p: xenpal::Platform) -> Result<(), Unexpected> {
    // With xenstore, a dom0 runs xenstored: that is the other domain. A
    // dom0less guest or an x86 dom0 is alone.
    let me = xenpal_apps::selftest::discover_domid(&p).unwrap_or(p.domid());
    let other = (p.xenstore().is_some() && me != DomId(0)).then_some(DomId(0));
    // Xen's Arm builds default to XSM SILO; x86 builds to the dummy policy.
    let xsm_silo = cfg!(any(target_arch = "aarch64", target_arch = "arm"));
    // An x86 PVH guest must not map its own grants (docs/PVH.md).
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    let self_map = !xenpal::arch::pvh::active();
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    let self_map = true;
    let setup = Setup {
        other,
        xsm_silo,
        self_map,
    };
    let report = conformance::run(&p, setup).await;
    if report.passed() {
        Ok(())
    } else {
        Err(Unexpected)
    }
}
