//! The guest self-test (the same source the QEMU guests run) on the
//! simulator, deterministic mode. Prints its lines, so `cargo test -- --nocapture`
//! shows them beside the QEMU runner's.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_apps::selftest::{self, Outcome, Report, Tolerances};
use xenpal_sim::{DomainConfig, Sim, SimConfig};

fn run_on_sim(seed: u64, pv_console: bool) -> (Report, String) {
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let out: Arc<Mutex<Option<Report>>> = Arc::default();
    let o = out.clone();
    let mut cfg = DomainConfig::new("selftest").without_xenstore();
    if !pv_console {
        cfg = cfg.without_pv_console();
    }
    let d = sim
        .spawn(cfg, move |p| async move {
            // Virtual time is exact: hold the simulator to tight tolerances.
            let tol = Tolerances {
                alarm_late: Duration::from_micros(100),
                rate: 0.001,
            };
            let r = selftest::run(&p, tol, &[]).await;
            *o.lock().unwrap() = Some(r);
        })
        .unwrap();
    let report = sim.run();
    assert!(report.all_clean(), "{report:?}");
    let r = out.lock().unwrap().take().unwrap();
    (r, sim.console_output(d))
}

#[test]
fn selftest_passes_on_the_simulator() {
    for (seed, pv) in [(1, true), (2, false), (3, true)] {
        let (r, console) = run_on_sim(seed, pv);
        for i in 0..r.results.len() {
            println!("[sim seed {seed}] {}", r.line(i));
        }
        println!("[sim seed {seed}] {}", r.verdict());
        assert!(r.passed(), "seed {seed}:\n{console}");
        // Every test ran for real: nothing skipped on the simulator.
        assert!(
            r.results.iter().all(|(_, o)| matches!(o, Outcome::Pass(_))),
            "{:?}",
            r.results
        );
        // What the guest printed is what it reported.
        assert!(console.contains(&r.verdict()), "console:\n{console}");
    }
}
