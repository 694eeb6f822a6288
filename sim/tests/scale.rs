//! 10,000 small guests in one process, each a cooperative task (no OS thread
//! of its own), each talking to xenstored and to a neighbour over an event
//! channel. Checks that everything finishes and that the work done per guest
//! does not depend on how many guests there are.

use std::sync::{Arc, Mutex};
use xenpal_sim::hal::{DomId, EventChannel, EventPort, event::wait_event, task::yield_now};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{DomainConfig, Sim, SimConfig};

const GUESTS: u16 = 10_000;

#[test]
fn ten_thousand_guests_in_one_process() {
    let mut sim = Sim::new(SimConfig::seeded(10_000));
    // Pairs (2k+1, 2k+2): the odd one offers a port, the even one binds and
    // pings it; both write their result to xenstore.
    let ports: Arc<Mutex<Vec<Option<EventPort>>>> =
        Arc::new(Mutex::new(vec![None; GUESTS as usize + 1]));
    for i in 1..=GUESTS {
        let ports = ports.clone();
        let cfg = DomainConfig::new(format!("g{i}"))
            .memory_pages(8)
            .grant_frames(1)
            .without_pv_console();
        sim.spawn(cfg, move |p| async move {
            let xs = p.xenstore().expect("xenstore");
            let me = i as usize;
            if i % 2 == 1 {
                let port = p.events().alloc_unbound(DomId(i + 1)).unwrap();
                ports.lock().unwrap()[me] = Some(port);
                wait_event(p.events(), port).await;
            } else {
                let remote = loop {
                    if let Some(port) = ports.lock().unwrap()[me - 1] {
                        break port;
                    }
                    yield_now().await;
                };
                let port = p.events().bind_interdomain(DomId(i - 1), remote).unwrap();
                p.events().notify(port).unwrap();
            }
            xs.write(TxId::NONE, "data/done", b"1").await.unwrap();
        })
        .unwrap();
    }
    let report = sim.run();
    assert!(
        report.all_clean(),
        "alive {:?}",
        &report.alive[..report.alive.len().min(10)]
    );
    assert_eq!(report.exits.len(), GUESTS as usize);
    // Steps per guest stay small and constant: no guest waits on all others.
    let per_guest = report.steps as f64 / f64::from(GUESTS);
    assert!(per_guest < 20.0, "{per_guest} steps per guest");
    // Every guest's home was removed by the toolstack when it exited.
    assert!(
        sim.xenstore_nodes() < 50,
        "{} nodes left",
        sim.xenstore_nodes()
    );
}
