//! blkfront (`xenpal_drivers::blk::Blkfront`) against a hostile blkback,
//! in the simulator. The fuzz input is the backend, in dom0: it publishes
//! its limits and the disk's geometry (honest values or any text), maps
//! the guest's ring (one to four pages), then answers requests with
//! whatever the script says (ids, operations, statuses), moves the
//! response producer anywhere, notifies, and changes its xenbus state.
//! The guest reads, writes (direct and indirect requests, several in
//! flight), flushes, discards, gives up on slow requests, reconnects and
//! closes. A broken backend must end as a `BlockError` or a
//! `DisconnectReason`, never a panic in the guest.

use crate::input::Input;
use crate::simkit::{set_state, sim, sleep_us, state_from, value, wait_peer, within};
use core::sync::atomic::Ordering;
use std::time::Duration;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::BlockDevice;
use xenpal_drivers::xenbus::{XenbusDevice, XenbusState};
use xenpal_sim::hal::mem::{MultiPage, PAGE_SIZE, SharedMemory};
use xenpal_sim::hal::{Access, BackRing, EventChannel, EventPort, GrantRef, GrantTable};
use xenpal_sim::xen_pv::abi::io::{BlkifRequest, BlkifResponse, blkif_rsp};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{DomainConfig, SimPlatform};

/// The disk's device id (`xvda`).
const DEVID: u32 = 51712;
/// Where the disk's backend directory is.
const BACKEND_DIR: &str = "/local/domain/0/backend/vbd/1/51712";
/// `rsp_prod` in the ring's first page.
const RSP_PROD: usize = 8;

/// What the backend does next, once connected (the op byte modulo their
/// number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Answer the oldest request: flag byte (bit 0: raw `u64` id follows;
    /// bit 1: raw `u8` operation follows), status selector byte (then a
    /// raw `i16` past the three real statuses).
    Answer = 0,
    /// Set `rsp_prod` to a `u32`.
    Prod = 1,
    /// Notify the guest.
    Notify = 2,
    /// Sleep `u8` * 10 microseconds.
    Sleep = 3,
    /// Switch to state byte (see `simkit::state_from`).
    State = 4,
    /// Write a node: key selector byte, value string.
    Node = 5,
    /// Answer every request taken so far with `OKAY`.
    AnswerAll = 6,
}

/// How many operations there are.
pub const OPS: u8 = 7;

/// The nodes the backend publishes at connection, with honest values.
const PROPERTIES: [(&str, &str); 10] = [
    ("sectors", "2048"),
    ("info", "0"),
    ("sector-size", "512"),
    ("physical-sector-size", "512"),
    ("feature-flush-cache", "1"),
    ("feature-barrier", "0"),
    ("feature-discard", "1"),
    ("discard-granularity", "4096"),
    ("discard-alignment", "0"),
    ("discard-secure", "0"),
];

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
    let devid = DEVID.to_string();
    if sim
        .add_device(
            d,
            "vbd",
            DEVID,
            &[("virtual-device", &devid), ("device-type", "disk")],
            &[("device-type", "disk"), ("mode", "w"), ("dev", "xvda")],
        )
        .is_err()
    {
        return;
    }
    let report = sim.run();
    crate::simkit::show(&sim, &report);
}

/// Run `op` for at most 20 ms of virtual time (a request given up on is
/// dropped in flight).
async fn bounded<F: core::future::Future>(p: &SimPlatform, op: F) -> Option<F::Output> {
    within(p, Duration::from_millis(20), op).await
}

/// The guest: a fixed workload over the disk.
async fn victim(p: SimPlatform) {
    let ids = vbd_ids(&p).await;
    if crate::simkit::debug() {
        eprintln!("victim: disks {ids:?}");
    }
    let Ok(ids) = ids else { return };
    let Some(id) = ids.first() else { return };
    let Some(Ok(disk)) = within(
        &p,
        Duration::from_millis(50),
        Blkfront::open(&p, id, BlkfrontConfig::default()),
    )
    .await
    else {
        return;
    };
    let mut page = vec![0u8; 4096];
    let mut big = vec![0u8; 64 * 1024];
    for round in 0..2 {
        let info = disk.info();
        let r = [
            bounded(&p, disk.read(0, &mut page)).await,
            bounded(&p, disk.write(8, &page)).await,
            // 16 pages: an indirect request.
            bounded(&p, disk.read(16, &mut big)).await,
            bounded(&p, disk.flush()).await,
            bounded(&p, disk.discard(0, 8)).await,
        ];
        // Two at once.
        let (a, b) = page.split_at_mut(2048);
        let two = bounded(
            &p,
            join(disk.read(1, &mut a[..512]), disk.read(2, &mut b[..512])),
        )
        .await;
        if crate::simkit::debug() {
            eprintln!("victim: round {round}: {info:?}: {r:?}, {two:?}");
        }
        let _ = disk.transport();
        if !disk.is_connected() && round == 0 {
            let _ = within(&p, Duration::from_millis(30), disk.reconnect()).await;
        }
    }
    let _ = disk.disconnect_reason();
    let _ = within(&p, Duration::from_millis(30), disk.close()).await;
    let _ = disk.held_pages();
}

/// Both futures, polled together.
async fn join<A: core::future::Future, B: core::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = core::pin::pin!(a);
    let mut b = core::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    core::future::poll_fn(|cx| {
        if ra.is_none()
            && let core::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let core::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            core::task::Poll::Ready(())
        } else {
            core::task::Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("both are ready"),
    }
}

type Ring = BackRing<
    MultiPage<xenpal_sim::xen_pv::grant::ForeignPage<xenpal_sim::hal::mem::WordMemory>>,
    BlkifRequest,
    BlkifResponse,
>;

/// The hostile backend.
async fn backend(p: SimPlatform, script: Vec<u8>) {
    let mut i = Input::new(&script);
    let Some(xs) = p.xenstore().cloned() else {
        return;
    };
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
    let order = i.u8() % 3;
    let order = value(&mut i, &order.to_string());
    let _ = dev
        .write_own(TxId::NONE, "max-ring-page-order", &order)
        .await;
    let segs = value(&mut i, "32");
    let _ = dev
        .write_own(TxId::NONE, "feature-max-indirect-segments", &segs)
        .await;
    set_state(&dev, Ok(XenbusState::InitWait)).await;
    if wait_peer(&p, &dev, Duration::from_millis(50), |s| {
        matches!(s, XenbusState::Initialised | XenbusState::Connected)
    })
    .await
    .is_none()
    {
        return;
    }
    let fe = dev.peer_id();
    let num = |v: Result<Option<u64>, _>| v.ok().flatten().map(|v| v as u32);
    let order = num(dev.peer_u64("ring-page-order").await)
        .unwrap_or(0)
        .min(4);
    let mut refs = Vec::new();
    if order == 0 {
        refs.extend(num(dev.peer_u64("ring-ref").await));
    } else {
        for k in 0..1u32 << order {
            refs.extend(num(dev.peer_u64(&format!("ring-ref{k}")).await));
        }
    }
    let Some(evtchn) = num(dev.peer_u64("event-channel").await) else {
        return;
    };
    let grants = p.grants();
    let mut maps = Vec::new();
    for r in refs {
        match grants.map(fe, GrantRef(r), Access::ReadWrite) {
            Ok(m) => maps.push(m),
            Err(_) => break,
        }
    }
    let ring: Option<Ring> = match MultiPage::new(maps, PAGE_SIZE) {
        Some(m) => BackRing::attach(m).ok(),
        None => None,
    };
    let Some(mut ring) = ring else { return };
    let port = p.events().bind_interdomain(fe, EventPort(evtchn)).ok();
    for (key, good) in PROPERTIES {
        let v = value(&mut i, good);
        let _ = dev.write_own(TxId::NONE, key, &v).await;
    }
    set_state(&dev, Ok(XenbusState::Connected)).await;
    let notify = |port: Option<EventPort>| {
        if let Some(port) = port {
            let _ = p.events().notify(port);
        }
    };
    let mut reqs: Vec<BlkifRequest> = Vec::new();
    let answer = |ring: &mut Ring, id: u64, operation: u8, status: i16| {
        let _ = ring.stage_response(&BlkifResponse {
            id,
            operation,
            status,
            ..Default::default()
        });
        ring.push_responses_and_check_notify();
    };
    let mut steps = 0;
    while !i.is_empty() && steps < 256 {
        steps += 1;
        while let Ok(Some(r)) = ring.take_request() {
            reqs.push(r);
        }
        match i.u8() % OPS {
            0 => {
                let flags = i.u8();
                let req = if reqs.is_empty() {
                    BlkifRequest::default()
                } else {
                    reqs.remove(0)
                };
                let id = if flags & 1 == 1 { i.u64() } else { req.id };
                let operation = if flags & 2 == 2 {
                    i.u8()
                } else {
                    req.operation
                };
                let status = match i.u8() % 4 {
                    0 => blkif_rsp::OKAY,
                    1 => blkif_rsp::ERROR,
                    2 => blkif_rsp::EOPNOTSUPP,
                    _ => i.u16() as i16,
                };
                answer(&mut ring, id, operation, status);
                notify(port);
            }
            1 => {
                ring.memory()
                    .store_u32(RSP_PROD, i.u32(), Ordering::Release);
                notify(port);
            }
            2 => notify(port),
            3 => sleep_us(&p, u64::from(i.u8()) * 10).await,
            4 => set_state(&dev, state_from(i.u8())).await,
            5 => {
                let key = PROPERTIES[i.u8() as usize % PROPERTIES.len()].0;
                let v = i.string();
                let _ = dev.write_own(TxId::NONE, key, &v).await;
            }
            _ => {
                for r in reqs.drain(..) {
                    answer(&mut ring, r.id, r.operation, blkif_rsp::OKAY);
                }
                notify(port);
            }
        }
    }
    // The script is over: serve honestly until the guest closes.
    let _ = within(&p, Duration::from_millis(200), async {
        loop {
            while let Ok(Some(r)) = ring.take_request() {
                answer(&mut ring, r.id, r.operation, blkif_rsp::OKAY);
                notify(port);
            }
            if let Ok(s) = dev.peer_state().await
                && matches!(s, XenbusState::Closing | XenbusState::Closed)
            {
                break;
            }
            sleep_us(&p, 50).await;
        }
    })
    .await;
    for m in ring.into_memory().into_pages() {
        let _ = grants.unmap(m);
    }
    if let Some(port) = port {
        let _ = p.events().close(port);
    }
    set_state(&dev, Ok(XenbusState::Closing)).await;
    set_state(&dev, Ok(XenbusState::Closed)).await;
    // A frontend that reconnects finds the backend gone for good.
}

/// Script writers for the seed corpus.
pub mod script {
    use super::{Op, PROPERTIES};
    use crate::input::Script;

    /// The honest handshake: ring order `order`, 32 indirect segments, and
    /// the disk's honest properties.
    pub fn connect(s: &mut Script, order: u8) {
        // max-ring-page-order: the order byte, then the honest flag.
        s.u8(order).u8(0);
        s.u8(0);
        for _ in PROPERTIES {
            s.u8(0);
        }
    }

    /// Answer the oldest request with `OKAY`.
    pub fn ok(s: &mut Script) {
        s.u8(Op::Answer as u8).u8(0).u8(0);
    }

    /// Answer the oldest request with status selector `sel`.
    pub fn status(s: &mut Script, sel: u8) {
        s.u8(Op::Answer as u8).u8(0).u8(sel);
    }

    /// Sleep `n` * 10 µs.
    pub fn sleep(s: &mut Script, n: u8) {
        s.u8(Op::Sleep as u8).u8(n);
    }

    /// Answer everything taken so far.
    pub fn all(s: &mut Script) {
        s.u8(Op::AnswerAll as u8);
    }
}
