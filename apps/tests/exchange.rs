//! The demo's exchange (grant + event + xenstore between two guests) under
//! several scheduling orders.

use std::sync::{Arc, Mutex};
use xenpal_apps::exchange;
use xenpal_sim::{DomainConfig, Sim, SimConfig};

fn run(seed: u64) -> (Vec<String>, u64) {
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let out: Arc<Mutex<Vec<String>>> = Arc::default();
    let o = out.clone();
    let a = sim
        .spawn(DomainConfig::new("offerer"), move |p| async move {
            let xs = p.xenstore().unwrap().clone();
            let reply = exchange::offerer(&p, &xs).await.unwrap();
            o.lock().unwrap().push(reply);
        })
        .unwrap();
    let o = out.clone();
    let b = sim
        .spawn(DomainConfig::new("answerer"), move |p| async move {
            let xs = p.xenstore().unwrap().clone();
            let msg = exchange::answerer(&p, &xs).await.unwrap();
            o.lock().unwrap().push(msg);
        })
        .unwrap();
    sim.xenstore_write("/local/domain/1/data/peer", &b.0.to_string())
        .unwrap();
    sim.xenstore_write("/local/domain/2/data/peer", &a.0.to_string())
        .unwrap();
    let report = sim.run();
    assert!(report.all_clean(), "seed {seed}: {report:?}");
    let mut v = out.lock().unwrap().clone();
    v.sort();
    (v, sim.trace_hash())
}

#[test]
fn exchange_completes_under_many_schedules() {
    let mut hashes = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let (msgs, hash) = run(seed);
        assert_eq!(msgs, ["hello back from d2", "hello from d1"], "seed {seed}");
        hashes.insert(hash);
    }
    assert!(
        hashes.len() > 4,
        "seeds explore different interleavings: {}",
        hashes.len()
    );
}
