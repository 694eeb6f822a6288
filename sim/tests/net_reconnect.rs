//! A vif's backend is stopped and restarted in the middle of a TCP stream,
//! once on each side: the frontends tear down and reconnect, the connection
//! survives by retransmission, the stream arrives intact, and every grant,
//! page, event channel and dom0 mapping comes back.

mod net_support;

use net_support::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xenpal_drivers::net::NetConfig;
use xenpal_sim::backends::net::{NetBackend, NetStatus};
use xenpal_sim::hal::DomId;
use xenpal_sim::xen_pv::xenbus::XenbusState;
use xenpal_sim::{Sim, SimConfig};

/// Run in 1 ms slices until the receiver has `bytes`.
fn run_until_received(sim: &mut Sim, pair: &TcpPair, bytes: u64) {
    for _ in 0..100_000 {
        if pair.progress.load(Ordering::SeqCst) >= bytes {
            return;
        }
        let report = sim.run_for(Duration::from_millis(1));
        assert!(
            !report.alive.is_empty() && report.exits.is_empty() && !report.step_limit_hit,
            "the transfer ended early: {report:?}\n{}",
            pair.consoles(sim)
        );
    }
    panic!("no progress\n{}", pair.consoles(sim));
}

/// Stop `domid`'s vif, check that dom0 let go of it and that nothing flows
/// for `outage`, then start it again.
fn bounce(sim: &mut Sim, status: &NetStatus, pair: &TcpPair, domid: DomId, outage: Duration) {
    let vif = pair.vifs.iter().find(|v| v.id().domid == domid).unwrap();
    vif.stop(sim).unwrap();
    for _ in 0..1000 {
        if status.vif(domid, 0).unwrap().stopped {
            break;
        }
        let report = sim.run_for(Duration::from_micros(100));
        assert!(
            report.exits.is_empty(),
            "{report:?}\n{}",
            pair.consoles(sim)
        );
    }
    let v = status.vif(domid, 0).unwrap();
    assert!(v.stopped, "{v:?}");
    assert_eq!(v.state, XenbusState::Closed);
    // Only the other vif's two rings are still mapped.
    assert_eq!(status.snapshot().grant_mappings, 2);
    // Let what was in flight land, then nothing may get through.
    sim.run_for(Duration::from_millis(1));
    let before = pair.progress.load(Ordering::SeqCst);
    let report = sim.run_for(outage);
    assert!(
        report.exits.is_empty(),
        "{report:?}\n{}",
        pair.consoles(sim)
    );
    let after = pair.progress.load(Ordering::SeqCst);
    assert_eq!(before, after, "data flowed through a stopped backend");
    let total = pair.total;
    assert!(
        after < total,
        "the stream ended before the outage; nothing tested"
    );
    vif.start(sim).unwrap();
}

#[test]
fn backend_restart_mid_stream_keeps_the_tcp_connection() {
    let seeds = match xenpal_sim::seed_from_env() {
        Some(s) => vec![s],
        None => vec![0x4ec0, 1, 2],
    };
    for seed in seeds {
        with_seed(seed, || restart_mid_stream(seed));
    }
}

fn restart_mid_stream(seed: u64) {
    // Long enough to be still flowing after a stop: with large segments
    // both ways, 16 MiB passed while the first stop was under way.
    const TOTAL: u64 = 64 << 20;
    {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let net = NetBackend::new();
        let pair = spawn_tcp_pair(&mut sim, &net, TOTAL, NetConfig::default());
        let status = net.spawn(&mut sim).unwrap();

        run_until_received(&mut sim, &pair, 2 << 20);
        bounce(
            &mut sim,
            &status,
            &pair,
            pair.sender,
            Duration::from_millis(30),
        );
        run_until_received(&mut sim, &pair, 8 << 20);
        bounce(
            &mut sim,
            &status,
            &pair,
            pair.receiver,
            Duration::from_millis(30),
        );

        let report = sim.run();
        assert!(report.all_clean(), "{report:?}\n{}", pair.consoles(&sim));
        let o = pair.outcome.lock().unwrap().clone();
        assert_eq!(o.received, TOTAL);
        assert_eq!(
            o.received_sum,
            Some(stream_checksum(TOTAL)),
            "stream corrupted"
        );
        // Each frontend connected twice: at start and after its restart.
        assert_eq!((o.sender_connects, o.receiver_connects), (2, 2));
        // dom0 let go of everything; the guests checked their own baselines
        // when they closed their vifs.
        let snap = status.snapshot();
        assert_eq!(snap.grant_mappings, 0, "{snap:?}");
        for id in [pair.sender, pair.receiver] {
            let v = status.vif(id, 0).unwrap();
            assert_eq!(v.counters.connects, 2, "{v:?}");
            assert_eq!(v.error, None);
        }
        let consoles = pair.consoles(&sim);
        assert_eq!(
            consoles.matches("backend went away").count(),
            2,
            "{consoles}"
        );
    }
}
