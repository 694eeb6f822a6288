//! netfront (`xenpal_drivers::net::Netfront`) against a hostile netback,
//! in the simulator. The fuzz input is the backend, in dom0: it publishes
//! features (honest or garbage), connects as far as the script lets it,
//! then answers the guest's transmit and receive requests with whatever
//! the script says (ids, statuses, offsets, flags, extra-info slots),
//! writes packet bytes into the guest's receive buffers, moves producer
//! indices anywhere, notifies, and changes its xenbus state. The guest
//! runs netfront under smoltcp (ARP, IPv4, ICMP, UDP; large sends offered,
//! so received frames go through its TCP SYN rewriting): it opens the vif,
//! sends datagrams, receives what comes, and closes. A broken backend must
//! fail the vif (`NetError`), never panic the guest.

use crate::input::Input;
use crate::simkit::{after, set_state, sim, sleep_us, state_from, value, wait_peer, within};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use std::time::Duration;
use xenpal_drivers::net::{LinkState, NetConfig, Netfront};
use xenpal_drivers::xenbus::{XenbusDevice, XenbusState};
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::hal::mem::SharedMemory;
use xenpal_sim::hal::{
    Access, BackRing, Clock, DomId, EventChannel, EventPort, GrantRef, GrantTable,
};
use xenpal_sim::xen_pv::abi::io::{
    NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, netif_rsp,
};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{DomainConfig, SimPlatform};
use zerocopy::FromBytes;

/// The guest's domain id.
const GUEST: DomId = DomId(1);
/// Where the vif's backend directory is.
const BACKEND_DIR: &str = "/local/domain/0/backend/vif/1/0";
/// `rsp_prod` in a ring page.
const RSP_PROD: usize = 8;

/// What the backend does next, once connected (the op byte modulo their
/// number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Answer a transmit request: flag byte (odd: a raw `u16` id follows;
    /// else the oldest request's id), status selector byte (then a raw
    /// `i16` past the four real statuses).
    Tx = 0,
    /// Answer a receive request: flag byte (odd: raw `u16` id), `u16`
    /// offset, `u16` flags, `i16` status, then a short string of packet
    /// bytes (`u16` length) written into that buffer at the offset.
    Rx = 1,
    /// A raw 8-byte receive slot (an extra-info slot, or anything).
    RxRaw = 2,
    /// Set `rsp_prod` of ring `u8 % 2` (tx, rx) to a `u32`.
    Prod = 3,
    /// Notify the guest.
    Notify = 4,
    /// Sleep `u8` * 10 microseconds.
    Sleep = 5,
    /// Switch to state byte (see `simkit::state_from`).
    State = 6,
    /// Write a node: key selector byte, value string.
    Node = 7,
}

/// How many operations there are.
pub const OPS: u8 = 8;

/// Run one input: the hostile backend's script.
pub fn run(data: &[u8]) {
    let script = data.to_vec();
    let mut sim = sim();
    if sim.spawn_dom0(move |p| backend(p, script)).is_err() {
        return;
    }
    let Ok(d) = sim.spawn(DomainConfig::new("victim").memory_pages(512), victim) else {
        return;
    };
    debug_assert_eq!(d, GUEST);
    // The toolstack's description of the vif; the hostile backend serves it.
    if NetBackend::new()
        .add_vif(&sim, d, 0, [0x00, 0x16, 0x3e, 0, 1, 0])
        .is_err()
    {
        return;
    }
    let report = sim.run();
    crate::simkit::show(&sim, &report);
}

fn smol_now(p: &SimPlatform) -> SmolInstant {
    SmolInstant::from_micros((p.timer().now().as_nanos() / 1000) as i64)
}

/// The guest: netfront under smoltcp, sending datagrams to the backend's
/// side of the link, for 100 ms of virtual time.
async fn victim(p: SimPlatform) {
    let deadline = after(&p, Duration::from_millis(100));
    let Ok(mut nic) = Netfront::open(&p, "0", NetConfig::default()).await else {
        return;
    };
    if nic.wait_up(deadline).await.is_ok() {
        let mut config = Config::new(nic.hardware_address());
        config.random_seed = 1;
        let mut iface = Interface::new(config, &mut nic, smol_now(&p));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(Ipv4Address::new(10, 0, 0, 2).into(), 24));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]),
        );
        let _ = sock.bind(7);
        let h = sockets.add(sock);
        let peer = IpEndpoint::new(IpAddress::v4(10, 0, 0, 1), 7);
        let mut round = 0u32;
        while p.timer().now() < deadline && nic.state() != LinkState::Failed {
            round += 1;
            let s = sockets.get_mut::<udp::Socket>(h);
            // Echo what arrives; send something now and then.
            let mut buf = [0u8; 2048];
            while let Ok((n, meta)) = s.recv_slice(&mut buf) {
                let _ = s.send_slice(&buf[..n], meta.endpoint);
            }
            if round % 4 == 1 {
                let size = (round as usize * 397) % 1400;
                let _ = s.send_slice(&vec![round as u8; size], peer);
            }
            iface.poll(smol_now(&p), &mut nic, &mut sockets);
            let at = after(&p, Duration::from_millis(2)).min(deadline);
            nic.wait(at).await;
        }
    }
    if crate::simkit::debug() {
        eprintln!(
            "victim: {:?} {:?} {:?}",
            nic.state(),
            nic.error(),
            nic.stats()
        );
    }
    let _ = nic.close(after(&p, Duration::from_millis(20))).await;
}

/// The hostile backend.
async fn backend(p: SimPlatform, script: Vec<u8>) {
    let mut i = Input::new(&script);
    let Some(xs) = p.xenstore().cloned() else {
        return;
    };
    // Wait for the toolstack to add the vif.
    let mut dev = None;
    for _ in 0..100 {
        if let Ok(d) = XenbusDevice::open_backend(&xs, BACKEND_DIR).await {
            dev = Some(d);
            break;
        }
        sleep_us(&p, 10).await;
    }
    let Some(dev) = dev else { return };
    if dev.watch_peer().await.is_err() {
        return;
    }
    for key in ["feature-rx-copy", "feature-sg"] {
        let v = value(&mut i, "1");
        let _ = dev.write_own(TxId::NONE, key, &v).await;
    }
    // Always offered (taking no input, so the corpus keeps its meaning):
    // with scatter-gather, netfront then rewrites the MSS of every TCP SYN
    // it receives, parsing whatever bytes the script delivers.
    let _ = dev
        .write_own(TxId::NONE, "feature-gso-tcpv4", "1")
        .await;
    set_state(&dev, state_from(i.u8() % 2 * 5)).await;
    // InitWait (0) mostly; the script may say otherwise.
    if wait_peer(&p, &dev, Duration::from_millis(50), |s| {
        s == XenbusState::Connected
    })
    .await
    .is_none()
    {
        return;
    }
    let fe = dev.peer_id();
    let num = |v: Result<Option<u64>, _>| v.ok().flatten().map(|v| v as u32);
    let (Some(tx_ref), Some(rx_ref), Some(evtchn)) = (
        num(dev.peer_u64("tx-ring-ref").await),
        num(dev.peer_u64("rx-ring-ref").await),
        num(dev.peer_u64("event-channel").await),
    ) else {
        return;
    };
    let grants = p.grants();
    let Ok(tx_page) = grants.map(fe, GrantRef(tx_ref), Access::ReadWrite) else {
        return;
    };
    let Ok(rx_page) = grants.map(fe, GrantRef(rx_ref), Access::ReadWrite) else {
        let _ = grants.unmap(tx_page);
        return;
    };
    let port = p.events().bind_interdomain(fe, EventPort(evtchn)).ok();
    let (Ok(mut tx), Ok(mut rx)) = (
        BackRing::<_, NetifTxRequest, NetifTxResponse>::attach(tx_page),
        BackRing::<_, NetifRxRequest, NetifRxResponse>::attach(rx_page),
    ) else {
        return;
    };
    set_state(&dev, Ok(XenbusState::Connected)).await;
    let notify = |port: Option<EventPort>| {
        if let Some(port) = port {
            let _ = p.events().notify(port);
        }
    };
    let mut tx_reqs: Vec<NetifTxRequest> = Vec::new();
    let mut rx_reqs: Vec<NetifRxRequest> = Vec::new();
    let mut steps = 0;
    while !i.is_empty() && steps < 256 {
        steps += 1;
        // Take what the guest posted.
        while let Ok(Some(r)) = tx.take_request() {
            tx_reqs.push(r);
        }
        while let Ok(Some(r)) = rx.take_request() {
            rx_reqs.push(r);
        }
        match i.u8() % OPS {
            0 => {
                let id = if i.u8() & 1 == 1 {
                    i.u16()
                } else {
                    tx_reqs.first().map_or(0, |r| r.id)
                };
                if !tx_reqs.is_empty() {
                    tx_reqs.remove(0);
                }
                let status = match i.u8() % 5 {
                    0 => netif_rsp::OKAY,
                    1 => netif_rsp::ERROR,
                    2 => netif_rsp::DROPPED,
                    3 => netif_rsp::NULL,
                    _ => i.u16() as i16,
                };
                let _ = tx.stage_response(&NetifTxResponse { id, status });
                tx.push_responses_and_check_notify();
                notify(port);
            }
            1 => {
                let raw = i.u8() & 1 == 1;
                let req = if rx_reqs.is_empty() {
                    None
                } else {
                    Some(rx_reqs.remove(0))
                };
                let id = if raw {
                    i.u16()
                } else {
                    req.map_or(0, |r| r.id)
                };
                let offset = i.u16();
                let flags = i.u16();
                let status = i.u16() as i16;
                let bytes = i.long(4096);
                if let Some(r) = req
                    && let Ok(m) = grants.map(fe, GrantRef(r.gref), Access::ReadWrite)
                {
                    let at = offset as usize % 4096;
                    let n = bytes.len().min(4096 - at);
                    m.write(at, &bytes[..n]);
                    let _ = grants.unmap(m);
                }
                let _ = rx.stage_response(&NetifRxResponse {
                    id,
                    offset,
                    flags,
                    status,
                });
                rx.push_responses_and_check_notify();
                notify(port);
            }
            2 => {
                let bytes: [u8; 8] = core::array::from_fn(|_| i.u8());
                if let Ok(r) = NetifRxResponse::read_from_bytes(&bytes) {
                    let _ = rx.stage_response(&r);
                }
                rx.push_responses_and_check_notify();
                notify(port);
            }
            3 => {
                let v = i.u32();
                let mem = if i.u8() & 1 == 0 {
                    tx.memory()
                } else {
                    rx.memory()
                };
                mem.store_u32(RSP_PROD, v, core::sync::atomic::Ordering::Release);
                notify(port);
            }
            4 => notify(port),
            5 => sleep_us(&p, u64::from(i.u8()) * 10).await,
            6 => set_state(&dev, state_from(i.u8())).await,
            _ => {
                let key = [
                    "feature-rx-copy",
                    "feature-sg",
                    "state",
                    "feature-gso-tcpv4",
                    "mac",
                ][i.u8() as usize % 5];
                let v = i.string();
                let _ = dev.write_own(TxId::NONE, key, &v).await;
            }
        }
    }
    // Let the guest notice and close; then let go of everything.
    let _ = within(&p, Duration::from_millis(30), async {
        let _ = dev
            .wait_peer(
                |s| matches!(s, XenbusState::Closing | XenbusState::Closed),
                |_| false,
            )
            .await;
    })
    .await;
    let _ = grants.unmap(tx.into_memory());
    let _ = grants.unmap(rx.into_memory());
    if let Some(port) = port {
        let _ = p.events().close(port);
    }
    set_state(&dev, Ok(XenbusState::Closed)).await;
}

/// Script writers for the seed corpus.
pub mod script {
    use super::Op;
    use crate::input::Script;

    /// The honest start: both features offered, then `InitWait`.
    pub fn connect(s: &mut Script) {
        s.u8(0).u8(0).u8(0);
    }

    /// Answer the oldest transmit request with `OKAY`.
    pub fn tx_ok(s: &mut Script) {
        s.u8(Op::Tx as u8).u8(0).u8(0);
    }

    /// Answer the oldest receive request with `frame` at offset 0.
    pub fn rx_frame(s: &mut Script, frame: &[u8], flags: u16) {
        s.u8(Op::Rx as u8)
            .u8(0)
            .u16(0)
            .u16(flags)
            .u16(frame.len() as u16)
            .long(frame);
    }

    /// Sleep `n` * 10 µs.
    pub fn sleep(s: &mut Script, n: u8) {
        s.u8(Op::Sleep as u8).u8(n);
    }
}
