//! Broken peers on both sides of a vif.
//!
//! A deliberately broken backend in dom0 writes garbage into a vif's rings:
//! unknown ids, impossible statuses, lengths and offsets, bad extra-info
//! slots, endless packets, runaway producer indices. Each time the vif
//! fails with the matching error (logged, in its state, in xenstore), the
//! guest keeps running, and once the backend lets go every grant, page and
//! event channel is back. Packets that are legal but must not reach the
//! stack (a blank checksum on a packet that is not TCP or UDP, a GSO slot of
//! size 0) are dropped without failing the vif, and blank checksums on good
//! packets are completed.
//!
//! And a hand-written rogue frontend breaks the protocol towards netback,
//! which gives up on that vif (error node, `Closing`, rings unmapped)
//! without panicking.

mod net_support;

use net_support::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_drivers::net::{LinkState, NetConfig, NetError, Netfront, RingKind, Violation};
use xenpal_drivers::xenbus::{DeviceChange, DeviceWatcher, XenbusDevice, XenbusState};
use xenpal_sim::backends::net::{NetBackend, VifError};
use xenpal_sim::hal::{
    Access, BackRing, Clock, DomId, EventChannel, EventPort, GrantRef, GrantTable, RingError,
    SharedMemory, event::wait_event,
};
use xenpal_sim::xen_pv::abi::io::{
    NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, netif_extra, netif_rsp,
    netrxf, nettxf,
};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{Sim, SimConfig, SimPlatform};
use zerocopy::FromBytes;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Attack {
    /// Answer the transmitted packet with the id of a buffer not in flight.
    TxIdNotInFlight,
    /// Answer it with `NETIF_RSP_NULL`, which only extra-info slots get.
    TxStatusNull,
    /// Claim 500 transmit responses for one request.
    TxRunawayProducer,
    /// A receive response whose data runs past the end of its page.
    RxDataOutsidePage,
    /// A receive response carrying another slot's id.
    RxWrongId,
    /// A receive response with a status no backend sends.
    RxImpossibleStatus,
    /// An extra-info slot of an unknown type.
    RxBadExtraInfo,
    /// A packet whose `more_data` never ends (33 slots).
    RxEndlessPacket,
    /// Claim 1000 receive responses for the 64 buffers posted.
    RxRunawayProducer,
}

const RSP_PROD: usize = 8;

fn expected(a: Attack) -> Violation {
    match a {
        Attack::TxIdNotInFlight => Violation::UnknownTxId(1),
        Attack::TxStatusNull => Violation::BadTxStatus {
            id: 0,
            status: netif_rsp::NULL,
        },
        Attack::TxRunawayProducer => Violation::Overrun(
            RingKind::Tx,
            xenpal_sim::hal::RingError::Overrun {
                prod: xenpal_sim::hal::RingIdx(500),
                cons: xenpal_sim::hal::RingIdx(0),
            },
        ),
        Attack::RxDataOutsidePage => Violation::RxOutsidePage {
            offset: 4000,
            len: 200,
        },
        Attack::RxWrongId => Violation::UnknownRxId { slot: 0, id: 7 },
        Attack::RxImpossibleStatus => Violation::BadRxStatus(-7),
        Attack::RxBadExtraInfo => Violation::BadExtraInfo(0xee),
        Attack::RxEndlessPacket => Violation::RxTooManySlots,
        Attack::RxRunawayProducer => Violation::Overrun(
            RingKind::Rx,
            xenpal_sim::hal::RingError::Overrun {
                prod: xenpal_sim::hal::RingIdx(1000),
                cons: xenpal_sim::hal::RingIdx(0),
            },
        ),
    }
}

/// A backend that connects properly, then attacks; it lets go when the
/// frontend closes.
type TxBack = BackRing<
    xenpal_sim::xen_pv::grant::ForeignPage<xenpal_sim::hal::mem::WordMemory>,
    NetifTxRequest,
    NetifTxResponse,
>;
type RxBack = BackRing<
    xenpal_sim::xen_pv::grant::ForeignPage<xenpal_sim::hal::mem::WordMemory>,
    NetifRxRequest,
    NetifRxResponse,
>;

/// A hand-written backend's connection to the guest's vif.
struct Conn {
    dev: XenbusDevice<xenpal_sim::SimHypervisor>,
    tx: TxBack,
    rx: RxBack,
    port: EventPort,
}

/// Wait for the vif, offer `features`, and connect as a backend must.
async fn connect_backend(p: &SimPlatform, features: &[&str]) -> Conn {
    let xs = p.xenstore().unwrap().clone();
    let mut watcher = DeviceWatcher::new(&xs, "/local/domain/0", "vif")
        .await
        .unwrap();
    let DeviceChange::Added(dir) = watcher.next().await.unwrap() else {
        panic!("no vif")
    };
    let dev = XenbusDevice::open_backend(&xs, &dir).await.unwrap();
    dev.watch_peer().await.unwrap();
    for k in features {
        dev.write_own(TxId::NONE, k, "1").await.unwrap();
    }
    dev.switch_state(XenbusState::InitWait).await.unwrap();
    dev.wait_peer(|s| s == XenbusState::Connected, |_| false)
        .await
        .unwrap();
    let fe = dev.peer_id();
    let num = |v: Option<u64>| v.unwrap() as u32;
    let tx_ref = GrantRef(num(dev.peer_u64("tx-ring-ref").await.unwrap()));
    let rx_ref = GrantRef(num(dev.peer_u64("rx-ring-ref").await.unwrap()));
    let evtchn = EventPort(num(dev.peer_u64("event-channel").await.unwrap()));
    let tx_page = p.grants().map(fe, tx_ref, Access::ReadWrite).unwrap();
    let rx_page = p.grants().map(fe, rx_ref, Access::ReadWrite).unwrap();
    let port = p.events().bind_interdomain(fe, evtchn).unwrap();
    let tx = BackRing::attach(tx_page).unwrap();
    let rx = BackRing::attach(rx_page).unwrap();
    dev.switch_state(XenbusState::Connected).await.unwrap();
    Conn { dev, tx, rx, port }
}

/// Once the frontend closes: the `error` node it left, after letting go of
/// everything.
async fn disconnect_backend(p: &SimPlatform, c: Conn) -> Option<String> {
    let Conn { dev, tx, rx, port } = c;
    dev.wait_peer(
        |s| matches!(s, XenbusState::Closing | XenbusState::Closed),
        |_| false,
    )
    .await
    .unwrap();
    let why = dev.read_peer("error").await.unwrap();
    for ring in [tx.into_memory(), rx.into_memory()] {
        p.grants().unmap(ring).map_err(|(_, e)| e).unwrap();
    }
    p.events().close(port).unwrap();
    dev.switch_state(XenbusState::Closing).await.unwrap();
    dev.switch_state(XenbusState::Closed).await.unwrap();
    assert_eq!(p.grants().active_mappings(), 0);
    why
}

async fn hostile_backend(p: SimPlatform, attack: Attack, log: Arc<Mutex<Vec<String>>>) {
    let mut c = connect_backend(&p, &["feature-rx-copy", "feature-sg"]).await;
    let (tx, rx, port) = (&mut c.tx, &mut c.rx, c.port);

    let tx_attack = matches!(
        attack,
        Attack::TxIdNotInFlight | Attack::TxStatusNull | Attack::TxRunawayProducer
    );
    if tx_attack {
        // Wait for the guest's packet.
        let req = loop {
            if let Some(r) = tx.take_request().unwrap() {
                break r;
            }
            if !tx.final_check_for_requests().unwrap() {
                wait_event(p.events(), port).await;
            }
        };
        match attack {
            Attack::TxIdNotInFlight => {
                tx.stage_response(&NetifTxResponse {
                    id: req.id + 1,
                    status: netif_rsp::OKAY,
                })
                .unwrap();
                tx.push_responses_and_check_notify();
            }
            Attack::TxStatusNull => {
                tx.stage_response(&NetifTxResponse {
                    id: req.id,
                    status: netif_rsp::NULL,
                })
                .unwrap();
                tx.push_responses_and_check_notify();
            }
            _ => tx
                .memory()
                .store_u32(RSP_PROD, 500, std::sync::atomic::Ordering::Release),
        }
    } else {
        // The guest posted its receive buffers at connect time.
        let mut reqs = Vec::new();
        while let Some(r) = rx.take_request().unwrap() {
            reqs.push(r);
        }
        assert!(reqs.len() >= 33, "only {} rx buffers posted", reqs.len());
        let ok = |id: u16, flags: u16| NetifRxResponse {
            id,
            offset: 0,
            flags,
            status: 100,
        };
        let rsps: Vec<NetifRxResponse> = match attack {
            Attack::RxDataOutsidePage => vec![NetifRxResponse {
                id: reqs[0].id,
                offset: 4000,
                flags: 0,
                status: 200,
            }],
            Attack::RxWrongId => vec![ok(7, 0)],
            Attack::RxImpossibleStatus => vec![NetifRxResponse {
                status: -7,
                ..ok(reqs[0].id, 0)
            }],
            Attack::RxBadExtraInfo => {
                // The extra-info slot overlays a response.
                let mut extra = [0u8; 8];
                extra[0] = 0xee;
                vec![
                    ok(reqs[0].id, netrxf::EXTRA_INFO),
                    NetifRxResponse::read_from_bytes(&extra).unwrap(),
                ]
            }
            Attack::RxEndlessPacket => (0..33).map(|i| ok(reqs[i].id, netrxf::MORE_DATA)).collect(),
            _ => Vec::new(),
        };
        for r in &rsps {
            rx.stage_response(r).unwrap();
        }
        rx.push_responses_and_check_notify();
        if attack == Attack::RxRunawayProducer {
            rx.memory()
                .store_u32(RSP_PROD, 1000, std::sync::atomic::Ordering::Release);
        }
    }
    p.events().notify(port).unwrap();

    // The frontend gives up: it says why and closes.
    let why = disconnect_backend(&p, c).await.unwrap_or_default();
    log.lock().unwrap().push(why);
}

async fn victim(p: SimPlatform, errors: Arc<Mutex<Vec<NetError>>>) {
    let base = Baseline::of(&p);
    let xs = p.xenstore().unwrap().clone();
    let deadline = p.timer().now() + Duration::from_secs(5);
    let mut nic: Nic<'_> = Netfront::open(&p, "0", NetConfig::default()).await.unwrap();
    nic.wait_up(deadline).await.unwrap();
    {
        use smoltcp::phy::{Device, TxToken};
        let tok = nic.transmit(smol_now(&p)).unwrap();
        tok.consume(60, |b| b.fill(0xab));
    }
    while nic.state() != LinkState::Failed {
        assert!(p.timer().now() < deadline, "the attack went unnoticed");
        {
            use smoltcp::phy::{Device, RxToken};
            if let Some((rx, _tx)) = nic.receive(smol_now(&p)) {
                rx.consume(|_| {});
            }
        }
        nic.wait(p.timer().now() + Duration::from_millis(10)).await;
    }
    let err = nic.error().cloned().unwrap();
    // The vif stays down; the guest carries on.
    assert!(!nic.is_up());
    {
        use smoltcp::phy::Device;
        assert!(nic.transmit(smol_now(&p)).is_none());
    }
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(5)).await;
    nic.close(deadline).await.unwrap();
    assert_eq!(nic.state(), LinkState::Closed);
    let state = xs
        .read_string(TxId::NONE, "device/vif/0/state")
        .await
        .unwrap();
    assert_eq!(state, "6", "frontend ends Closed");
    assert_eq!(Baseline::of(&p), base, "resources leaked");
    log::info!("victim: still running after \"{err}\"");
    errors.lock().unwrap().push(err);
}

fn run(seed: u64, attack: Attack) {
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let errors: Arc<Mutex<Vec<NetError>>> = Arc::default();
    let l = log.clone();
    sim.spawn_dom0(move |p| hostile_backend(p, attack, l))
        .unwrap();
    let e = errors.clone();
    let d = sim
        .spawn(guest_config("victim"), move |p| victim(p, e))
        .unwrap();
    // The toolstack's description of the vif; the hostile backend above
    // serves it, not this (never spawned) NetBackend.
    NetBackend::new().add_vif(&sim, d, 0, mac(d, 0)).unwrap();
    let report = sim.run();
    let console = sim.console_output(d);
    assert!(
        report.all_clean(),
        "{attack:?}: {report:?}\n--- victim\n{console}\n--- dom0\n{}",
        sim.console_output(DomId::DOM0)
    );
    let errors = errors.lock().unwrap();
    assert_eq!(
        errors.as_slice(),
        [NetError::Backend(expected(attack))],
        "{attack:?}"
    );
    let shown = errors[0].to_string();
    // Logged at error level on the guest's console...
    assert!(
        console.contains("ERROR") && console.contains(&shown),
        "{attack:?}: {console}"
    );
    assert!(console.contains("victim: still running after"), "{console}");
    // ... and told to the backend in xenstore.
    assert_eq!(log.lock().unwrap().as_slice(), [shown], "{attack:?}");
}

#[test]
fn hostile_backend_fails_the_vif_not_the_guest() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xbad);
    for attack in [
        Attack::TxIdNotInFlight,
        Attack::TxStatusNull,
        Attack::TxRunawayProducer,
        Attack::RxDataOutsidePage,
        Attack::RxWrongId,
        Attack::RxImpossibleStatus,
        Attack::RxBadExtraInfo,
        Attack::RxEndlessPacket,
        Attack::RxRunawayProducer,
    ] {
        with_seed(seed, || run(seed, attack));
    }
}

/// A TCP/IPv4 frame (payload `len` bytes) with a correct checksum.
fn tcp_frame(len: usize) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let (a, b) = (Ipv4Address::new(10, 0, 0, 9), Ipv4Address::new(10, 0, 0, 1));
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let tcp = TcpRepr {
        src_port: 80,
        dst_port: 4000,
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(1),
        ack_number: Some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &payload,
    };
    let ip = Ipv4Repr {
        src_addr: a,
        dst_addr: b,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut f = vec![0u8; 14 + ip.buffer_len() + tcp.buffer_len()];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let caps = ChecksumCapabilities::default();
    let mut pkt = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.emit(&mut pkt, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(pkt.payload_mut()),
        &a.into(),
        &b.into(),
        &caps,
    );
    f
}

/// Whether `frame` is TCP/IPv4 with a correct checksum.
fn tcp_checksum_ok(frame: &[u8]) -> bool {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else {
        return false;
    };
    let (a, b): (IpAddress, IpAddress) = (ip.src_addr().into(), ip.dst_addr().into());
    TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.verify_checksum(&a, &b))
}

/// A backend that hands over packets which are legal but must not reach
/// the stack, between two good ones with their checksums left blank (one
/// of them described as a large segment): the frontend drops the bad ones,
/// completes the good ones' checksums, and stays up.
async fn odd_packets_backend(p: SimPlatform) {
    let mut c = connect_backend(&p, &["feature-rx-copy", "feature-sg", "feature-gso-tcpv4"]).await;
    let (dev, rx, port) = (&c.dev, &mut c.rx, c.port);
    // The frontend offered to take large segments and blank checksums.
    assert_eq!(
        dev.read_peer("feature-gso-tcpv4").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        dev.read_peer("feature-no-csum-offload")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    let fe = dev.peer_id();
    let mut reqs = Vec::new();
    while let Some(r) = rx.take_request().unwrap() {
        reqs.push(r);
    }
    let mut next = reqs.into_iter();
    let blank = |frame: &[u8]| {
        let mut f = frame.to_vec();
        f[14 + 20 + 16] ^= 0xa5;
        f
    };
    let good = tcp_frame(300);
    let mut icmp = tcp_frame(300);
    icmp[14 + 9] = 1;
    // (frame, flags, GSO size if any): each one slot, plus one for GSO.
    let packets: [(Vec<u8>, u16, Option<u16>); 4] = [
        (
            blank(&good),
            netrxf::CSUM_BLANK | netrxf::DATA_VALIDATED,
            None,
        ),
        (blank(&icmp), netrxf::CSUM_BLANK, None),
        (good.clone(), 0, Some(0)),
        (blank(&good), netrxf::CSUM_BLANK, Some(1448)),
    ];
    for (frame, flags, gso) in &packets {
        let req = next.next().unwrap();
        let page = p
            .grants()
            .map(fe, GrantRef(req.gref), Access::ReadWrite)
            .unwrap();
        page.write(0, frame);
        p.grants().unmap(page).map_err(|(_, e)| e).unwrap();
        let extra = if gso.is_some() { netrxf::EXTRA_INFO } else { 0 };
        rx.stage_response(&NetifRxResponse {
            id: req.id,
            offset: 0,
            flags: flags | extra,
            status: frame.len() as i16,
        })
        .unwrap();
        if let Some(size) = gso {
            next.next().unwrap();
            let mut info = [0u8; 8];
            info[0] = netif_extra::TYPE_GSO;
            info[2..4].copy_from_slice(&size.to_le_bytes());
            info[4] = netif_extra::GSO_TYPE_TCPV4;
            rx.stage_response(&NetifRxResponse::read_from_bytes(&info).unwrap())
                .unwrap();
        }
    }
    rx.push_responses_and_check_notify();
    p.events().notify(port).unwrap();
    assert_eq!(disconnect_backend(&p, c).await, None, "the vif failed");
}

/// The frontend's side of [`odd_packets_backend`]: what smoltcp would be
/// handed, and the counters.
async fn odd_packets_victim(p: SimPlatform, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let deadline = p.timer().now() + Duration::from_secs(5);
    let mut nic: Nic<'_> = Netfront::open(&p, "0", NetConfig::default()).await.unwrap();
    nic.wait_up(deadline).await.unwrap();
    // Everything the backend sends comes at once; look a while longer for
    // anything that should not have got through.
    let settle = p.timer().now() + Duration::from_millis(200);
    while seen.lock().unwrap().len() < 2 || p.timer().now() < settle {
        assert!(p.timer().now() < deadline, "the packets did not come");
        {
            use smoltcp::phy::{Device, RxToken};
            if let Some((rx, _tx)) = nic.receive(smol_now(&p)) {
                rx.consume(|b| seen.lock().unwrap().push(b.to_vec()));
            }
        }
        nic.wait(p.timer().now() + Duration::from_millis(10)).await;
    }
    assert!(nic.is_up(), "{:?}", nic.error());
    let stats = nic.stats();
    assert_eq!(
        (stats.rx_packets, stats.rx_dropped, stats.rx_large),
        (2, 2, 1),
        "{stats:?}"
    );
    nic.close(deadline).await.unwrap();
}

#[test]
fn blank_checksums_are_completed_and_odd_packets_dropped() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xb1a);
    with_seed(seed, || {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        sim.spawn_dom0(odd_packets_backend).unwrap();
        let s = seen.clone();
        let d = sim
            .spawn(guest_config("victim"), move |p| odd_packets_victim(p, s))
            .unwrap();
        NetBackend::new().add_vif(&sim, d, 0, mac(d, 0)).unwrap();
        let report = sim.run();
        assert!(
            report.all_clean(),
            "{report:?}\n--- victim\n{}\n--- dom0\n{}",
            sim.console_output(d),
            sim.console_output(DomId::DOM0)
        );
        let seen = seen.lock().unwrap();
        let good = tcp_frame(300);
        assert_eq!(seen.as_slice(), [good.clone(), good], "completed as sent");
        assert!(seen.iter().all(|f| tcp_checksum_ok(f)));
    });
}

/// What a rogue frontend does once connected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Rogue {
    /// Publish 1000 transmit requests on a 256-slot ring.
    RunawayProducer,
    /// A transmit slot whose data crosses the end of its page.
    SlotCrossesPage,
    /// A GSO extra-info slot with a segment size of 0.
    GsoSizeZero,
}

/// A frontend written by hand that connects properly, then breaks the
/// protocol; the backend must give up on it (error node, `Closing`) and let
/// go of its rings.
async fn rogue_frontend(p: SimPlatform, rogue: Rogue, log: Arc<Mutex<Vec<String>>>) {
    use xenpal_sim::hal::{FrontRing, PageAlloc, Pages};
    let xs = p.xenstore().unwrap().clone();
    let dev = XenbusDevice::open_frontend(&xs, "vif", "0").await.unwrap();
    dev.watch_peer().await.unwrap();
    dev.wait_peer(|s| s == XenbusState::InitWait, |_| false)
        .await
        .unwrap();
    let be = dev.peer_id();
    let tx_page = p.pages().alloc(1).unwrap();
    let rx_page = p.pages().alloc(1).unwrap();
    let data = p.pages().alloc(1).unwrap();
    let grants: Vec<GrantRef> = [&tx_page, &rx_page, &data]
        .iter()
        .map(|b| {
            p.grants()
                .grant_access(be, b.gfn(0), Access::ReadWrite)
                .unwrap()
        })
        .collect();
    let port = p.events().alloc_unbound(be).unwrap();
    let mut tx: FrontRing<_, NetifTxRequest, NetifTxResponse> =
        FrontRing::init(tx_page.clone()).unwrap();
    let _rx: FrontRing<_, NetifRxRequest, NetifRxResponse> =
        FrontRing::init(rx_page.clone()).unwrap();
    for (k, v) in [
        ("tx-ring-ref", grants[0].0.to_string()),
        ("rx-ring-ref", grants[1].0.to_string()),
        ("event-channel", port.0.to_string()),
        ("request-rx-copy", "1".into()),
    ] {
        dev.write_own(TxId::NONE, k, &v).await.unwrap();
    }
    dev.switch_state(XenbusState::Connected).await.unwrap();
    dev.wait_peer(|s| s == XenbusState::Connected, |_| false)
        .await
        .unwrap();
    match rogue {
        Rogue::RunawayProducer => {
            tx.memory()
                .store_u32(0, 1000, std::sync::atomic::Ordering::Release);
        }
        Rogue::SlotCrossesPage => {
            tx.stage_request(&NetifTxRequest {
                gref: grants[2].0,
                offset: 4000,
                flags: 0,
                id: 0,
                size: 200,
            })
            .unwrap();
            tx.push_requests_and_check_notify();
        }
        Rogue::GsoSizeZero => {
            tx.stage_request(&NetifTxRequest {
                gref: grants[2].0,
                offset: 0,
                flags: nettxf::EXTRA_INFO,
                id: 0,
                size: 60,
            })
            .unwrap();
            // type GSO, no flags, size 0, type TCPv4.
            let mut extra = [0u8; 12];
            extra[..5].copy_from_slice(&[netif_extra::TYPE_GSO, 0, 0, 0, 1]);
            tx.stage_request(&NetifTxRequest::read_from_bytes(&extra).unwrap())
                .unwrap();
            tx.push_requests_and_check_notify();
        }
    }
    p.events().notify(port).unwrap();
    dev.wait_peer(|s| s == XenbusState::Closing, |_| false)
        .await
        .unwrap();
    let why = dev.read_peer("error").await.unwrap().unwrap_or_default();
    log.lock().unwrap().push(why);
    // The backend unmapped the rings before saying Closing: everything
    // comes back at once.
    for g in grants {
        p.grants().end_access(g).unwrap();
    }
    p.events().close(port).unwrap();
    for b in [tx_page, rx_page, data] {
        p.pages().free(b);
    }
    dev.switch_state(XenbusState::Closed).await.unwrap();
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(10)).await;
}

#[test]
fn hostile_frontend_is_cut_off_by_netback() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xf0e);
    type Is = fn(&VifError) -> bool;
    for (rogue, why, is) in [
        (
            Rogue::RunawayProducer,
            "tx ring: peer overran the ring",
            (|e| matches!(e, VifError::TxRing(RingError::Overrun { .. }))) as Is,
        ),
        (Rogue::SlotCrossesPage, "crosses its page", |e| {
            matches!(e, VifError::SlotCrossesPage { offset: 4000, .. })
        }),
        (Rogue::GsoSizeZero, "GSO extra-info slot with size 0", |e| {
            matches!(e, VifError::BadGso { size: 0, kind: 1 })
        }),
    ] {
        with_seed(seed, || {
            let mut sim = Sim::new(SimConfig::seeded(seed));
            let net = NetBackend::new();
            let log: Arc<Mutex<Vec<String>>> = Arc::default();
            let l = log.clone();
            let d = sim
                .spawn(guest_config("rogue"), move |p| rogue_frontend(p, rogue, l))
                .unwrap();
            net.add_vif(&sim, d, 0, mac(d, 0)).unwrap();
            let status = net.spawn(&mut sim).unwrap();
            let report = sim.run();
            assert!(
                report.all_clean(),
                "{rogue:?}: {report:?}\n--- rogue\n{}\n--- dom0\n{}",
                sim.console_output(d),
                sim.console_output(DomId::DOM0)
            );
            let log = log.lock().unwrap();
            assert!(log.len() == 1 && log[0].contains(why), "{rogue:?}: {log:?}");
            let v = status.vif(d, 0).unwrap();
            let e = v.error.as_ref().expect("the vif's error");
            assert!(is(e) && e.to_string() == log[0], "{rogue:?}: {v:?}");
            assert_eq!(status.snapshot().grant_mappings, 0);
            assert!(sim.console_output(DomId::DOM0).contains("ERROR"));
        });
    }
}
