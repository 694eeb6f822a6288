//! The demo: two simulated Xen guests meet through xenstore, share a page
//! through a grant and signal each other through an event channel. Prints
//! what each guest does (its console, prefixed with its name), then a
//! summary from the simulator.
//!
//! ```text
//! cargo run --release --example two-domains [-- --seed N]
//! ```

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use xenpal_apps::exchange::{self, say};
use xenpal_sim::{DomainConfig, Sim, SimConfig};

fn main() -> ExitCode {
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--seed", Some(v)) => match v.parse() {
                Ok(s) => seed = s,
                Err(_) => {
                    eprintln!("--seed needs a number, got {v:?}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: two-domains [--seed N]");
                return ExitCode::from(2);
            }
        }
    }

    let mut sim = Sim::new(SimConfig {
        echo_console: true,
        ..SimConfig::seeded(seed)
    });
    println!(
        "xenpal simulator, seed {}: Xen's ABI in user space; two guests follow.\n",
        sim.seed()
    );

    let results: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = results.clone();
    let offerer = sim
        .spawn(DomainConfig::new("offerer"), move |p| async move {
            let xs = p
                .xenstore()
                .expect("the toolstack connects xenstore")
                .clone();
            match exchange::offerer(&p, &xs).await {
                Ok(reply) => r.lock().unwrap().push(format!("offerer got {reply:?}")),
                Err(e) => say(&p, format_args!("failed: {e}")),
            }
        })
        .expect("build offerer");
    let r = results.clone();
    let answerer = sim
        .spawn(DomainConfig::new("answerer"), move |p| async move {
            let xs = p
                .xenstore()
                .expect("the toolstack connects xenstore")
                .clone();
            match exchange::answerer(&p, &xs).await {
                Ok(msg) => r.lock().unwrap().push(format!("answerer got {msg:?}")),
                Err(e) => say(&p, format_args!("failed: {e}")),
            }
        })
        .expect("build answerer");
    // The toolstack tells each guest who its peer is.
    for (dom, peer) in [(offerer, answerer), (answerer, offerer)] {
        sim.xenstore_write(
            &format!("/local/domain/{}/data/peer", dom.0),
            &peer.0.to_string(),
        )
        .expect("toolstack write");
    }

    let report = sim.run();
    println!();
    for line in results.lock().unwrap().iter() {
        println!("{line}");
    }
    println!(
        "simulated {} in {} scheduling steps; {} traced events, trace hash {:#018x}",
        report.now,
        report.steps,
        sim.trace_events(),
        sim.trace_hash()
    );
    if report.all_clean() && results.lock().unwrap().len() == 2 {
        println!("both domains exited cleanly");
        ExitCode::SUCCESS
    } else {
        eprintln!("the exchange did not complete: {report:?}");
        ExitCode::FAILURE
    }
}
