//! The conformance suite (`xenpal_apps::conformance`) on the simulator:
//! every case must give what Xen gives. Run with `--nocapture` to see the
//! lines `cargo xtask report` sets beside real Xen's.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_apps::conformance::{self, Report, Setup};
use xenpal_sim::{DomainConfig, Sim, SimConfig};

/// Run the suite in one domain, with an idle second domain beside it.
pub fn run_on_sim(seed: u64) -> (Report, String) {
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let peer = sim
        .spawn(DomainConfig::new("peer"), |p| async move {
            hal::time::sleep(p.timer(), Duration::from_secs(3600)).await;
        })
        .unwrap();
    let out: Arc<Mutex<Option<Report>>> = Arc::default();
    let o = out.clone();
    let d = sim
        .spawn(DomainConfig::new("conformance"), move |p| async move {
            let r = conformance::run(&p, Setup { other: Some(peer) }).await;
            *o.lock().unwrap() = Some(r);
        })
        .unwrap();
    let report = sim.run();
    let console = sim.console_output(d);
    assert!(report.all_clean(), "{report:?}\n{console}");
    let r = out.lock().unwrap().take().expect("the suite finished");
    (r, console)
}

#[test]
fn the_simulator_does_what_xen_does() {
    let (r, console) = run_on_sim(1);
    for c in &r.cases {
        println!("[sim] {}", c.line());
    }
    println!("[sim] {}", r.verdict());
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
    // Nothing is skipped on the simulator: it has xenstore, grants and a peer.
    let (_, na, _) = r.counts();
    assert_eq!(na, 0, "{console}");
    assert!(console.contains(&r.verdict()));
}
