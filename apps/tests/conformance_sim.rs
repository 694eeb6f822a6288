//! The conformance suite (`xenpal_apps::conformance`) on the simulator:
//! every case must give what Xen gives. Run with `--nocapture` to see the
//! lines `cargo xtask report` sets beside real Xen's.

use xenpal_apps::conformance::{Observed, on_simulator};

#[test]
fn the_simulator_does_what_xen_does() {
    for silo in [false, true] {
        check(silo);
    }
}

/// With the dummy XSM policy (x86's), and with SILO (Arm's default).
fn check(silo: bool) {
    let (r, console) = on_simulator(1, silo);
    for c in &r.cases {
        println!("[sim{}] {}", if silo { ", silo" } else { "" }, c.line());
    }
    println!("[sim{}] {}", if silo { ", silo" } else { "" }, r.verdict());
    let bad: Vec<String> = r
        .cases
        .iter()
        .filter(|c| !c.as_expected())
        .map(|c| c.line())
        .collect();
    assert!(
        bad.is_empty(),
        "{} unexpected:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Nothing is skipped on the simulator: it has xenstore, grants and a
    // second guest; the two-domain cases ran. Under SILO only what needs
    // two guests to talk is skipped, as on Arm.
    let skipped: Vec<&str> = r
        .cases
        .iter()
        .filter(|c| matches!(c.observed, Observed::NotApplicable(_)))
        .map(|c| c.name.as_str())
        .collect();
    if silo {
        assert!(
            skipped
                .iter()
                .all(|n| n.starts_with("pair.") || n.contains("unbound")),
            "{skipped:?}"
        );
    } else {
        assert!(skipped.is_empty(), "{skipped:?}\n{console}");
    }
    assert!(console.contains(&r.verdict()));
    assert!(
        r.cases
            .iter()
            .filter(|c| c.name.starts_with("pair."))
            .count()
            >= 26
    );
}
