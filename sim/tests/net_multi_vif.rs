//! A guest with two vifs on two switches talks to a peer on each, waiting
//! on both vifs at once; the switches keep the two networks apart.

mod net_support;

use net_support::*;
use smoltcp::iface::SocketSet;
use smoltcp::socket::udp;
use smoltcp::wire::Ipv4Address;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_drivers::net::{NetConfig, vif_ids, wait_any};
use xenpal_sim::backends::net::{NetBackend, VifConfig};
use xenpal_sim::hal::{Clock, DomId};
use xenpal_sim::{Sim, SimConfig, SimPlatform};

const ROUTER: [Ipv4Address; 2] = [Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 1, 0, 1)];
const PEER: [Ipv4Address; 2] = [Ipv4Address::new(10, 0, 0, 2), Ipv4Address::new(10, 1, 0, 2)];
const ROUNDS: usize = 20;

/// The guest with two vifs: a UDP ping-pong with each peer, on each vif,
/// interleaved.
async fn two_homed(p: SimPlatform, log: Arc<Mutex<Vec<String>>>) {
    let base = Baseline::of(&p);
    let xs = p.xenstore().unwrap().clone();
    assert_eq!(vif_ids(&xs).await.unwrap(), ["0", "1"]);
    let mut s0 = Stack::up(&p, "0", ROUTER[0], NetConfig::default()).await;
    let mut s1 = Stack::up(&p, "1", ROUTER[1], NetConfig::default()).await;
    assert_ne!(s0.nic.mac(), s1.nic.mac());
    let mut sockets: [SocketSet<'static>; 2] = [SocketSet::new(vec![]), SocketSet::new(vec![])];
    let h = [
        sockets[0].add(udp_socket(8, 16 * 1024)),
        sockets[1].add(udp_socket(8, 16 * 1024)),
    ];
    for i in 0..2 {
        sockets[i].get_mut::<udp::Socket>(h[i]).bind(PORT).unwrap();
    }
    let mut got = [0usize; 2];
    let mut sent_at = [None; 2];
    let deadline = p.timer().now() + Duration::from_secs(30);
    let mut buf = [0u8; 64];
    while got.iter().any(|&g| g < ROUNDS) {
        assert!(p.timer().now() < deadline, "stuck at {got:?}");
        s0.poll(&mut sockets[0]);
        s1.poll(&mut sockets[1]);
        for i in 0..2 {
            let sock = sockets[i].get_mut::<udp::Socket>(h[i]);
            while let Ok((n, meta)) = sock.recv_slice(&mut buf) {
                assert_eq!(meta.endpoint.addr, PEER[i].into(), "crossed networks");
                assert_eq!(&buf[..n], format!("vif{i} round {}", got[i]).as_bytes());
                got[i] += 1;
                sent_at[i] = None;
            }
            let now = p.timer().now();
            let late = sent_at[i].is_some_and(|t| now >= t + Duration::from_millis(20));
            if got[i] < ROUNDS && (sent_at[i].is_none() || late) {
                let msg = format!("vif{i} round {}", got[i]);
                if sock.send_slice(msg.as_bytes(), (PEER[i], PORT)).is_ok() {
                    sent_at[i] = Some(now);
                }
            }
        }
        s0.poll(&mut sockets[0]);
        s1.poll(&mut sockets[1]);
        let at = s0
            .deadline(&sockets[0], Duration::from_millis(5))
            .min(s1.deadline(&sockets[1], Duration::from_millis(5)));
        wait_any(&mut [&mut s0.nic, &mut s1.nic], at).await;
    }
    log.lock().unwrap().push(format!(
        "two-homed: {got:?}; vif0 {:?}; vif1 {:?}",
        s0.nic.stats(),
        s1.nic.stats()
    ));
    // Let the peers see the last answers' ARP and so on settle.
    for _ in 0..5 {
        s0.poll(&mut sockets[0]);
        s1.poll(&mut sockets[1]);
        let at = p.timer().now() + Duration::from_millis(2);
        wait_any(&mut [&mut s0.nic, &mut s1.nic], at).await;
    }
    let deadline = p.timer().now() + Duration::from_secs(5);
    s0.nic.close(deadline).await.unwrap();
    s1.nic.close(deadline).await.unwrap();
    assert_eq!(Baseline::of(&p), base, "resources leaked");
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(20)).await;
}

/// Echo datagrams until `rounds` were echoed.
async fn echo(p: SimPlatform, ip: Ipv4Address, rounds: usize) {
    let base = Baseline::of(&p);
    let mut s = Stack::up(&p, "0", ip, NetConfig::default()).await;
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(udp_socket(8, 16 * 1024));
    sockets.get_mut::<udp::Socket>(h).bind(PORT).unwrap();
    let mut echoed = std::collections::BTreeSet::new();
    let mut buf = [0u8; 64];
    while echoed.len() < rounds {
        s.poll(&mut sockets);
        let sock = sockets.get_mut::<udp::Socket>(h);
        while let Ok((n, meta)) = sock.recv_slice(&mut buf) {
            sock.send_slice(&buf[..n], meta.endpoint).unwrap();
            echoed.insert(buf[..n].to_vec());
        }
        s.turn(&mut sockets).await;
    }
    s.linger(&mut sockets, Duration::from_millis(30)).await;
    s.close(&base).await;
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(20)).await;
}

#[test]
fn two_vifs_on_two_switches() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0x2f);
    with_seed(seed, || {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let net = NetBackend::new();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = log.clone();
        let r = sim
            .spawn(guest_config("two-homed"), move |p| two_homed(p, l))
            .unwrap();
        let a = sim
            .spawn(guest_config("peer-a"), move |p| echo(p, PEER[0], ROUNDS))
            .unwrap();
        let b = sim
            .spawn(guest_config("peer-b"), move |p| echo(p, PEER[1], ROUNDS))
            .unwrap();
        let on = |mac, bridge: &str| VifConfig {
            bridge: bridge.into(),
            ..VifConfig::new(mac)
        };
        net.add_vif_with(&sim, r, 0, &on(mac(r, 0), "br0")).unwrap();
        net.add_vif_with(&sim, r, 1, &on(mac(r, 1), "br1")).unwrap();
        net.add_vif_with(&sim, a, 0, &on(mac(a, 0), "br0")).unwrap();
        net.add_vif_with(&sim, b, 0, &on(mac(b, 0), "br1")).unwrap();
        let status = net.spawn(&mut sim).unwrap();
        let report = sim.run();
        assert!(
            report.all_clean(),
            "{report:?}\n--- two-homed\n{}\n--- a\n{}\n--- b\n{}\n--- dom0\n{}",
            sim.console_output(r),
            sim.console_output(a),
            sim.console_output(b),
            sim.console_output(DomId::DOM0)
        );
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].starts_with("two-homed: [20, 20]"), "{log:?}");
        let snap = status.snapshot();
        assert_eq!(snap.grant_mappings, 0);
        assert_eq!(snap.vifs.len(), 4);
        for (d, i, bridge) in [(r, 0, "br0"), (r, 1, "br1"), (a, 0, "br0"), (b, 0, "br1")] {
            let v = status.vif(d, i).unwrap();
            assert_eq!(v.bridge, bridge);
            assert!(v.counters.to_guest >= ROUNDS as u64, "{v:?}");
        }
    });
}
