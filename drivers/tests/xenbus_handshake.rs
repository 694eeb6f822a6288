//! The xenbus handshake end to end in the simulator, with a toy split
//! device: a frontend in a guest and a backend in dom0 connect over a shared
//! ring, exchange requests, survive the backend going away and coming back,
//! and give back every grant, page and port.

use std::sync::{Arc, Mutex};
use xenpal_drivers::xenbus::{
    DeviceChange, DeviceWatcher, XenbusDevice, XenbusState, list_devices, peer_gone,
};
use xenpal_sim::hal::mem::{PageAlloc, Pages};
use xenpal_sim::hal::{
    Access, BackRing, EventChannel, EventPort, FrontRing, GrantRef, GrantTable, event::wait_event,
};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{DomainConfig, Sim, SimConfig};

type Req = [u32; 2];
type Rsp = [u32; 2];
const S: XenbusState = XenbusState::Initialising;

/// The backend: serve each device until the frontend closes it; `rounds`
/// times (a restart in between, like a backend driver reloaded).
async fn backend(p: &xenpal_sim::SimPlatform, rounds: u32, log: Arc<Mutex<Vec<String>>>) {
    let xs = p.xenstore().unwrap().clone();
    let mut watcher = DeviceWatcher::new(&xs, "/local/domain/0", "echo")
        .await
        .unwrap();
    let DeviceChange::Added(dir) = watcher.next().await.unwrap() else {
        panic!()
    };
    let dev = XenbusDevice::open_backend(&xs, &dir).await.unwrap();
    dev.watch_peer().await.unwrap();
    for round in 0..rounds {
        dev.write_own(TxId::NONE, "feature-echo", "1")
            .await
            .unwrap();
        dev.switch_state(XenbusState::InitWait).await.unwrap();
        dev.wait_peer(|s| s == XenbusState::Initialised, |_| false)
            .await
            .unwrap();
        let gref = GrantRef(dev.peer_u64("ring-ref").await.unwrap().unwrap() as u32);
        let port = EventPort(dev.peer_u64("event-channel").await.unwrap().unwrap() as u32);
        let page = p
            .grants()
            .map(dev.peer_id(), gref, Access::ReadWrite)
            .unwrap();
        let local = p.events().bind_interdomain(dev.peer_id(), port).unwrap();
        let mut ring: BackRing<_, Req, Rsp> = BackRing::attach(page).unwrap();
        dev.switch_state(XenbusState::Connected).await.unwrap();
        // Serve 3 requests.
        let mut served = 0;
        while served < 3 {
            while let Some(req) = ring.take_request().unwrap() {
                ring.stage_response(&[req[0], req[1] * 2]).unwrap();
                served += 1;
            }
            if ring.push_responses_and_check_notify() {
                p.events().notify(local).unwrap();
            }
            if served < 3 && !ring.final_check_for_requests().unwrap() {
                wait_event(p.events(), local).await;
            }
        }
        log.lock()
            .unwrap()
            .push(format!("backend round {round} served {served}"));
        // Go away: as a backend that is stopped.
        dev.switch_state(XenbusState::Closing).await.unwrap();
        p.grants()
            .unmap(ring.into_memory())
            .map_err(|(_, e)| e)
            .unwrap();
        p.events().close(local).unwrap();
        dev.switch_state(XenbusState::Closed).await.unwrap();
        dev.wait_peer(|s| s == XenbusState::Closed || s == S, |_| false)
            .await
            .unwrap();
    }
    assert_eq!(p.grants().active_mappings(), 0);
}

async fn frontend(p: &xenpal_sim::SimPlatform, rounds: u32, log: Arc<Mutex<Vec<String>>>) {
    let xs = p.xenstore().unwrap().clone();
    let ids = list_devices(&xs, "echo").await.unwrap();
    assert_eq!(ids, ["0"]);
    let dev = XenbusDevice::open_frontend(&xs, "echo", "0").await.unwrap();
    dev.watch_peer().await.unwrap();
    for round in 0..rounds {
        dev.switch_state(XenbusState::Initialising).await.unwrap();
        dev.wait_peer(|s| s == XenbusState::InitWait, |_| false)
            .await
            .unwrap();
        assert!(dev.peer_feature("feature-echo").await.unwrap());
        let page = p.pages().alloc(1).unwrap();
        let gref = p
            .grants()
            .grant_access(dev.peer_id(), page.gfn(0), Access::ReadWrite)
            .unwrap();
        let port = p.events().alloc_unbound(dev.peer_id()).unwrap();
        let mut ring: FrontRing<_, Req, Rsp> = FrontRing::init(page.clone()).unwrap();
        dev.write_own(TxId::NONE, "ring-ref", &gref.0.to_string())
            .await
            .unwrap();
        dev.write_own(TxId::NONE, "event-channel", &port.0.to_string())
            .await
            .unwrap();
        dev.switch_state(XenbusState::Initialised).await.unwrap();
        dev.wait_peer(|s| s == XenbusState::Connected, peer_gone)
            .await
            .unwrap();
        dev.switch_state(XenbusState::Connected).await.unwrap();
        for i in 0..3u32 {
            ring.stage_request(&[i, 10 + i]).unwrap();
        }
        if ring.push_requests_and_check_notify() {
            p.events().notify(port).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            while let Some(r) = ring.take_response().unwrap() {
                got.push(r);
            }
            if got.len() < 3 && !ring.final_check_for_responses().unwrap() {
                wait_event(p.events(), port).await;
            }
        }
        assert_eq!(got, [[0, 20], [1, 22], [2, 24]]);
        // The backend goes away; tear down and give everything back.
        let gone = dev
            .wait_peer(|s| s == XenbusState::Closed, |_| false)
            .await
            .unwrap();
        assert_eq!(gone, XenbusState::Closed);
        let mut tries = 0;
        while p.grants().end_access(gref).is_err() {
            tries += 1;
            assert!(tries < 100, "the backend never unmapped");
            xenpal_sim::hal::task::yield_now().await;
        }
        p.events().close(port).unwrap();
        p.pages().free(page);
        dev.switch_state(XenbusState::Closed).await.unwrap();
        log.lock()
            .unwrap()
            .push(format!("frontend round {round} ok"));
    }
    assert_eq!(p.grants().active_grants(), 0);
    assert_eq!(p.pages().outstanding(), 0);
}

#[test]
fn handshake_exchange_backend_restart_and_reconnect() {
    for seed in 0..8 {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = log.clone();
        sim.spawn_dom0(move |p| async move { backend(&p, 2, l).await })
            .unwrap();
        let l = log.clone();
        let d = sim
            .spawn(DomainConfig::new("echo-front"), move |p| async move {
                frontend(&p, 2, l).await
            })
            .unwrap();
        sim.add_device(d, "echo", 0, &[], &[]).unwrap();
        let report = sim.run();
        assert!(
            report.all_clean(),
            "seed {seed}: {report:?}\n{}",
            sim.console_output(d)
        );
        let log = log.lock().unwrap();
        assert_eq!(
            log.iter().filter(|l| l.starts_with("frontend")).count(),
            2,
            "seed {seed}: {log:?}"
        );
        assert_eq!(
            log.iter().filter(|l| l.starts_with("backend")).count(),
            2,
            "seed {seed}: {log:?}"
        );
    }
}
