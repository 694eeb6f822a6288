//! dom0 has one task: the network and the block backend share it, each as
//! a future. A guest uses a vif and a disk at once: what it receives over
//! UDP it writes to its disk.

mod net_support;

use net_support::*;
use smoltcp::iface::SocketSet;
use smoltcp::socket::udp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::BlockDevice;
use xenpal_drivers::net::NetConfig;
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::hal::task::select;
use xenpal_sim::hal::{Clock, DomId};
use xenpal_sim::{Sim, SimConfig, SimPlatform};

const MESSAGE: &[u8] = b"from the network to the disk";

/// Receive one datagram, write it to sector 8, read it back.
async fn recorder(p: SimPlatform, log: Arc<Mutex<Vec<String>>>) {
    let ids = vbd_ids(&p).await.unwrap();
    let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
        .await
        .unwrap();
    let mut s = Stack::up(&p, "0", B, NetConfig::default()).await;
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(udp_socket(4, 4096));
    sockets.get_mut::<udp::Socket>(h).bind(PORT).unwrap();
    let deadline = p.timer().now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    let n = loop {
        assert!(p.timer().now() < deadline, "nothing arrived");
        s.poll(&mut sockets);
        if let Ok((n, meta)) = sockets.get_mut::<udp::Socket>(h).recv_slice(&mut buf) {
            // Tell the sender it arrived.
            let _ = sockets
                .get_mut::<udp::Socket>(h)
                .send_slice(b"ok", meta.endpoint);
            break n;
        }
        s.turn(&mut sockets).await;
    };
    disk.write(8, &buf).await.unwrap();
    disk.flush().await.unwrap();
    let mut back = [0u8; 512];
    disk.read(8, &mut back).await.unwrap();
    assert_eq!(&back[..n], MESSAGE);
    log.lock().unwrap().push("recorded".into());
    s.linger(&mut sockets, Duration::from_millis(10)).await;
    let deadline = p.timer().now() + Duration::from_secs(5);
    s.nic.close(deadline).await.unwrap();
    disk.close().await.unwrap();
}

/// Send the message until it is acknowledged.
async fn sender(p: SimPlatform) {
    let mut s = Stack::up(&p, "0", A, NetConfig::default()).await;
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(udp_socket(4, 4096));
    sockets.get_mut::<udp::Socket>(h).bind(PORT).unwrap();
    let mut buf = [0u8; 16];
    let mut next = p.timer().now();
    loop {
        s.poll(&mut sockets);
        let sock = sockets.get_mut::<udp::Socket>(h);
        if sock.recv_slice(&mut buf).is_ok() {
            break;
        }
        if p.timer().now() >= next {
            let _ = sock.send_slice(MESSAGE, (B, PORT));
            next = p.timer().now() + Duration::from_millis(20);
        }
        s.turn(&mut sockets).await;
    }
    let deadline = p.timer().now() + Duration::from_secs(5);
    s.nic.close(deadline).await.unwrap();
}

#[test]
fn network_and_disk_backends_share_dom0() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xb10c);
    with_seed(seed, || {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l = log.clone();
        let r = sim
            .spawn(guest_config("recorder"), move |p| recorder(p, l))
            .unwrap();
        let s = sim.spawn(guest_config("sender"), sender).unwrap();
        let net = NetBackend::new();
        net.add_vif(&sim, r, 0, mac(r, 0)).unwrap();
        net.add_vif(&sim, s, 0, mac(s, 0)).unwrap();
        let blkback = Blkback::new();
        let vbd = blkback
            .add_vbd(&sim, r, 0, Disk::zeroed(1 << 20), VbdOptions::default())
            .unwrap();
        sim.spawn_dom0(move |p| async move {
            let net = core::pin::pin!(net.serve(&p));
            let blk = core::pin::pin!(blkback.serve(&p));
            // Neither ends: run both.
            let _ = select(net, blk).await;
        })
        .unwrap();
        let report = sim.run();
        assert!(
            report.all_clean(),
            "{report:?}\n--- recorder\n{}\n--- sender\n{}\n--- dom0\n{}",
            sim.console_output(r),
            sim.console_output(s),
            sim.console_output(DomId::DOM0)
        );
        assert_eq!(log.lock().unwrap().as_slice(), ["recorded"]);
        assert_eq!(&vbd.read_durable(8 * 512, MESSAGE.len()).unwrap(), MESSAGE);
        // Both backends let go of every ring. (Asked of the hypervisor: the
        // network backend's status is as of its last round, which may have
        // ended before the disk backend let go of its ring.)
        assert_eq!(
            sim.grant_mappings(DomId::DOM0),
            Some(0),
            "--- dom0\n{}",
            sim.console_output(DomId::DOM0)
        );
    });
}
