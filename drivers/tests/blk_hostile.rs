//! blkfront against a misbehaving or disappearing backend: protocol
//! violations disconnect only that disk, the guest carries on, requests in
//! flight fail, reconnecting works, and every grant, page and event channel
//! comes back. Also blkback against a hostile frontend.

mod blk_support;

use blk_support::{finish, join_all, pattern, port_closed, sim, usage};
use std::sync::{Arc, Mutex};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, ResponseError, vbd_ids};
use xenpal_drivers::block_device::{BlockDevice, BlockError, DisconnectReason};
use xenpal_sim::DomainConfig;
use xenpal_sim::backends::blk::{Disk, FaultKind, Vbd, VbdOptions};
use xenpal_sim::hal::RingError;

const MIB: usize = 1 << 20;

/// A slot for a [`Vbd`] handle the guest needs, filled in after the guest
/// is spawned (its domain id names the device).
type VbdSlot = Arc<Mutex<Option<Vbd>>>;

fn take(slot: &VbdSlot) -> Vbd {
    slot.lock().unwrap().clone().expect("filled before the run")
}

#[test]
fn protocol_violations_disconnect_only_that_disk() {
    type Is = fn(&ResponseError) -> bool;
    for (seed, kind, expect, is) in [
        (
            0,
            FaultKind::UnknownId,
            "unknown id",
            (|e| matches!(e, ResponseError::UnknownId { .. })) as Is,
        ),
        (1, FaultKind::ImpossibleStatus, "impossible status 7", |e| {
            matches!(e, ResponseError::ImpossibleStatus { status: 7, .. })
        }),
        (2, FaultKind::WrongOperation, "carries operation", |e| {
            matches!(e, ResponseError::WrongOperation { .. })
        }),
        (3, FaultKind::RunawayProducer, "overran the ring", |e| {
            matches!(e, ResponseError::Ring(RingError::Overrun { .. }))
        }),
    ] {
        let (mut sim, blkback) = sim(seed);
        let d = sim
            .spawn(DomainConfig::new("victim"), move |p| async move {
                let before = usage(&p);
                let ids = vbd_ids(&p).await.unwrap();
                let bad = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let good = Blkfront::open(&p, &ids[1], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let connected = usage(&p);
                let old_port = bad.transport().unwrap().port;
                let data = pattern(50, 4096);
                // Requests 1 and 2 are fine; the backend misbehaves on 3.
                bad.write(0, &data).await.unwrap();
                bad.write(8, &data).await.unwrap();
                let r = bad.write(16, &data).await;
                match &r {
                    Err(BlockError::Disconnected(DisconnectReason::ProtocolViolation(why))) => {
                        assert!(is(why), "{why:?}");
                        assert!(why.to_string().contains(expect), "{why}")
                    }
                    other => panic!("expected a protocol violation, got {other:?}"),
                }
                assert!(port_closed(&p, old_port), "channel closed at once");
                // Out of service until reconnected...
                let mut buf = vec![0u8; 4096];
                assert!(matches!(
                    bad.read(0, &mut buf).await,
                    Err(BlockError::Disconnected(_))
                ));
                // ...while the other disk works on.
                good.write(0, &data).await.unwrap();
                good.read(0, &mut buf).await.unwrap();
                assert!(buf == data);
                // Reconnect (the fault fires once) and read what was
                // written before the violation.
                bad.reconnect().await.unwrap();
                assert_eq!(usage(&p), connected, "nothing leaked in between");
                bad.read(8, &mut buf).await.unwrap();
                assert!(buf == data);
                bad.close().await.unwrap();
                good.close().await.unwrap();
                assert_eq!(usage(&p), before, "everything given back");
            })
            .unwrap();
        let faulty = blkback
            .add_vbd(
                &sim,
                d,
                0,
                Disk::zeroed(MIB),
                VbdOptions::default().fault(kind, 3),
            )
            .unwrap();
        blkback
            .add_vbd(&sim, d, 1, Disk::zeroed(MIB), VbdOptions::default())
            .unwrap();
        finish(&mut sim, &blkback, &format!("{kind:?}"));
        let st = faulty.stats();
        assert_eq!(st.faults_injected, 1);
        assert_eq!(st.connections, 2);
        let console = sim.console_output(d);
        assert!(
            console.contains("broke the protocol"),
            "the guest says why: {console}"
        );
    }
}

#[test]
fn restart_and_reconnect_give_everything_back() {
    for seed in 0..3 {
        let (mut sim, blkback) = sim(seed);
        let slot: VbdSlot = Default::default();
        let guest_slot = slot.clone();
        let d = sim
            .spawn(DomainConfig::new("restarts"), move |p| async move {
                let vbd = take(&guest_slot);
                let before = usage(&p);
                let ids = vbd_ids(&p).await.unwrap();
                let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let connected = usage(&p);
                assert!(connected.grants > before.grants);
                let data = pattern(60 + seed, 64 * 1024);
                disk.write(0, &data).await.unwrap();
                for round in 0..3 {
                    let port = disk.transport().unwrap().port;
                    vbd.restart();
                    let mut buf = vec![0u8; data.len()];
                    let r = disk.read(0, &mut buf).await;
                    assert!(
                        matches!(
                            r,
                            Err(BlockError::Disconnected(DisconnectReason::BackendGone(_)))
                        ),
                        "round {round}: {r:?}"
                    );
                    assert!(port_closed(&p, port));
                    disk.reconnect().await.unwrap();
                    assert_eq!(usage(&p), connected, "round {round}: no leak");
                    // A clean restart wrote the cache back: nothing lost.
                    disk.read(0, &mut buf).await.unwrap();
                    assert!(buf == data, "round {round}");
                }
                let port = disk.transport().unwrap().port;
                disk.close().await.unwrap();
                assert_eq!(usage(&p), before);
                assert!(port_closed(&p, port));
                assert_eq!(disk.held_pages(), 0);
                assert_eq!(disk.disconnect_reason(), Some(DisconnectReason::Closed));
            })
            .unwrap();
        let vbd = blkback
            .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
            .unwrap();
        *slot.lock().unwrap() = Some(vbd.clone());
        finish(&mut sim, &blkback, "restarts");
        assert_eq!(vbd.stats().connections, 4);
        assert_eq!(vbd.stats().crashes, 0);
    }
}

#[test]
fn requests_in_flight_fail_when_the_backend_crashes() {
    let (mut sim, blkback) = sim(11);
    let slot: VbdSlot = Default::default();
    let guest_slot = slot.clone();
    let d = sim
        .spawn(DomainConfig::new("in-flight"), move |p| async move {
            let vbd = take(&guest_slot);
            let before = usage(&p);
            let ids = vbd_ids(&p).await.unwrap();
            let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                .await
                .unwrap();
            let data = pattern(70, 4096);
            vbd.crash();
            let disk = &disk;
            let writes = (0..16u64)
                .map(|i| {
                    let data = &data;
                    async move { disk.write(i * 8, data).await }
                })
                .collect();
            for r in join_all(writes).await {
                assert!(
                    matches!(r, Err(BlockError::Disconnected(_))),
                    "in flight at the crash: {r:?}"
                );
            }
            disk.reconnect().await.unwrap();
            disk.write(0, &data).await.unwrap();
            disk.close().await.unwrap();
            assert_eq!(usage(&p), before);
        })
        .unwrap();
    let vbd = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    *slot.lock().unwrap() = Some(vbd.clone());
    finish(&mut sim, &blkback, "in flight");
    let st = vbd.stats();
    assert_eq!(st.crashes, 1);
    assert_eq!(st.writes, 1, "only the write after reconnecting was served");
}

#[test]
fn an_abandoned_request_gives_its_pages_back() {
    let (mut sim, blkback) = sim(12);
    let d = sim
        .spawn(DomainConfig::new("abandon"), move |p| async move {
            let before = usage(&p);
            let ids = vbd_ids(&p).await.unwrap();
            let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                .await
                .unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            {
                // Poll a read once (it is sent), then drop it.
                let read = std::pin::pin!(disk.read(0, &mut buf));
                let now = std::pin::pin!(std::future::ready(()));
                let won = xenpal_sim::hal::task::select(read, now).await;
                assert!(matches!(won, xenpal_sim::hal::task::Either::Second(())));
            }
            // Its slot and pages come back when the answer arrives; a full
            // buffer's worth of I/O proves they did.
            let data = pattern(80, 256 * 1024);
            disk.write(0, &data).await.unwrap();
            let mut got = vec![0u8; data.len()];
            disk.read(0, &mut got).await.unwrap();
            assert!(got == data);
            disk.close().await.unwrap();
            assert_eq!(usage(&p), before);
        })
        .unwrap();
    blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    finish(&mut sim, &blkback, "abandon");
}

mod raw {
    //! A frontend written by hand, to send blkback what no blkfront would.

    use super::*;
    use xenpal_drivers::xenbus::{XenbusDevice, XenbusState, peer_gone};
    use xenpal_sim::SimPlatform;
    use xenpal_sim::hal::event::wait_event;
    use xenpal_sim::hal::mem::{PageAlloc, Pages, SharedMemory};
    use xenpal_sim::hal::{Access, EventChannel, EventPort, FrontRing, GrantTable};
    use xenpal_sim::xen_pv::abi::io::{
        BLKIF_DISCARD_SECURE, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect,
        BlkifRequestSegment, BlkifResponse, blkif_op, blkif_rsp,
    };
    use xenpal_sim::xen_pv::xenstore::TxId;
    use zerocopy::{FromZeros, IntoBytes};

    type Ring<M> = FrontRing<M, BlkifRequest, BlkifResponse>;

    async fn ask<M: SharedMemory>(
        p: &SimPlatform,
        ring: &mut Ring<M>,
        port: EventPort,
        req: &BlkifRequest,
    ) -> BlkifResponse {
        ring.stage_request(req).unwrap();
        if ring.push_requests_and_check_notify() {
            p.events().notify(port).unwrap();
        }
        loop {
            if let Some(r) = ring.take_response().unwrap() {
                return r;
            }
            if !ring.final_check_for_responses().unwrap() {
                wait_event(p.events(), port).await;
            }
        }
    }

    fn rw(op: u8, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
        let mut r = BlkifRequest {
            operation: op,
            nr_segments: segs.len() as u8,
            sector_number: sector,
            ..Default::default()
        };
        r.seg[..segs.len().min(11)].copy_from_slice(&segs[..segs.len().min(11)]);
        r
    }

    fn as_request(bytes: &[u8]) -> BlkifRequest {
        let mut r = BlkifRequest::new_zeroed();
        r.as_mut_bytes()[..bytes.len()].copy_from_slice(bytes);
        r
    }

    /// Connect by hand, send malformed requests, check each is refused,
    /// then overrun the ring; give everything back. Returns how many
    /// requests were refused.
    pub async fn hostile_frontend(p: &SimPlatform, id: &str) -> u64 {
        let before = usage(p);
        let xs = p.xenstore().unwrap().clone();
        let dev = XenbusDevice::open_frontend(&xs, "vbd", id).await.unwrap();
        dev.watch_peer().await.unwrap();
        dev.wait_peer(|s| s == XenbusState::InitWait, |_| false)
            .await
            .unwrap();
        let be = dev.peer_id();
        let ring_page = p.pages().alloc(1).unwrap();
        let ring_ref = p
            .grants()
            .grant_access(be, ring_page.gfn(0), Access::ReadWrite)
            .unwrap();
        let data = p.pages().alloc(1).unwrap();
        let rw_ref = p
            .grants()
            .grant_access(be, data.gfn(0), Access::ReadWrite)
            .unwrap();
        let ro_page = p.pages().alloc(1).unwrap();
        let ro_ref = p
            .grants()
            .grant_access(be, ro_page.gfn(0), Access::ReadOnly)
            .unwrap();
        let port = p.events().alloc_unbound(be).unwrap();
        let mut ring: Ring<_> = FrontRing::init(ring_page.clone()).unwrap();
        dev.write_own(TxId::NONE, "ring-ref", &ring_ref.0.to_string())
            .await
            .unwrap();
        dev.write_own(TxId::NONE, "event-channel", &port.0.to_string())
            .await
            .unwrap();
        dev.switch_state(XenbusState::Initialised).await.unwrap();
        dev.wait_peer(|s| s == XenbusState::Connected, peer_gone)
            .await
            .unwrap();
        let sectors: u64 = dev.peer_u64("sectors").await.unwrap().unwrap();
        let seg = |gref: u32, first: u8, last: u8| BlkifRequestSegment {
            gref,
            first_sect: first,
            last_sect: last,
            _pad0: 0,
        };
        let good = seg(rw_ref.0, 0, 7);
        let indirect = |op: u8, n: u16, gref: u32| {
            let mut r = BlkifRequestIndirect {
                operation: blkif_op::INDIRECT,
                indirect_op: op,
                nr_segments: n,
                ..Default::default()
            };
            r.indirect_grefs[0] = gref;
            as_request(r.as_bytes())
        };
        let discard = |sector: u64, n: u64, flag: u8| {
            as_request(
                BlkifRequestDiscard {
                    operation: blkif_op::DISCARD,
                    flag,
                    sector_number: sector,
                    nr_sectors: n,
                    ..Default::default()
                }
                .as_bytes(),
            )
        };
        let cases: Vec<(&str, BlkifRequest, i16)> = vec![
            ("no segments", rw(blkif_op::READ, 0, &[]), blkif_rsp::ERROR),
            (
                "12 segments",
                {
                    let mut r = rw(blkif_op::READ, 0, &[good; 11]);
                    r.nr_segments = 12;
                    r
                },
                blkif_rsp::ERROR,
            ),
            (
                "last_sect beyond the page",
                rw(blkif_op::READ, 0, &[seg(rw_ref.0, 0, 9)]),
                blkif_rsp::ERROR,
            ),
            (
                "first_sect after last_sect",
                rw(blkif_op::READ, 0, &[seg(rw_ref.0, 5, 2)]),
                blkif_rsp::ERROR,
            ),
            (
                "a grant that does not exist",
                rw(blkif_op::READ, 0, &[seg(4000, 0, 7)]),
                blkif_rsp::ERROR,
            ),
            (
                "reading into a read-only grant",
                rw(blkif_op::READ, 0, &[seg(ro_ref.0, 0, 7)]),
                blkif_rsp::ERROR,
            ),
            (
                "past the end",
                rw(blkif_op::WRITE, sectors - 4, &[good]),
                blkif_rsp::ERROR,
            ),
            (
                "sector arithmetic overflowing",
                rw(blkif_op::WRITE, u64::MAX - 2, &[good]),
                blkif_rsp::ERROR,
            ),
            (
                "an unknown operation",
                {
                    let mut r = rw(blkif_op::READ, 0, &[good]);
                    r.operation = 99;
                    r
                },
                blkif_rsp::EOPNOTSUPP,
            ),
            (
                "indirect without segments",
                indirect(blkif_op::READ, 0, rw_ref.0),
                blkif_rsp::ERROR,
            ),
            (
                "indirect with too many segments",
                indirect(blkif_op::READ, 5000, rw_ref.0),
                blkif_rsp::ERROR,
            ),
            (
                "indirect flush",
                indirect(blkif_op::FLUSH_DISKCACHE, 1, rw_ref.0),
                blkif_rsp::ERROR,
            ),
            (
                "indirect with a bad segment page",
                indirect(blkif_op::READ, 3, 4001),
                blkif_rsp::ERROR,
            ),
            (
                "discard past the end",
                discard(sectors - 1, 2, 0),
                blkif_rsp::ERROR,
            ),
            (
                "secure discard not offered",
                discard(0, 8, BLKIF_DISCARD_SECURE),
                blkif_rsp::EOPNOTSUPP,
            ),
            (
                "barrier not offered",
                {
                    let mut r = rw(blkif_op::WRITE_BARRIER, 0, &[]);
                    r.nr_segments = 0;
                    r
                },
                blkif_rsp::EOPNOTSUPP,
            ),
            // A sane write from a read-only grant is fine.
            (
                "a good write",
                rw(blkif_op::WRITE, 0, &[seg(ro_ref.0, 0, 7)]),
                blkif_rsp::OKAY,
            ),
        ];
        let mut refused = 0;
        for (i, (what, mut req, want)) in cases.into_iter().enumerate() {
            let id = 0x1000 + i as u64;
            // The id sits at the same place in every request layout.
            req.id = id;
            let rsp = ask(p, &mut ring, port, &req).await;
            assert_eq!(rsp.id, id, "{what}: id echoed");
            assert_eq!(rsp.status, want, "{what}");
            if want != blkif_rsp::OKAY {
                refused += 1;
            }
        }
        // A runaway producer: the backend must give up on this ring.
        let prod = ring.req_prod_pvt().add(1000);
        ring.memory()
            .store_u32(0, prod.0, std::sync::atomic::Ordering::Release);
        p.events().notify(port).unwrap();
        dev.wait_peer(|s| s == XenbusState::Closed, |_| false)
            .await
            .unwrap();
        // It unmapped the ring on its way out: everything can be ended.
        for g in [ring_ref, rw_ref, ro_ref] {
            p.grants().end_access(g).unwrap();
        }
        p.events().close(port).unwrap();
        for page in [ring_page, data, ro_page] {
            p.pages().free(page);
        }
        dev.switch_state(XenbusState::Closed).await.unwrap();
        assert_eq!(usage(p), before);
        refused
    }
}

#[test]
fn blkback_refuses_a_hostile_frontend_and_serves_the_others() {
    let (mut sim, blkback) = sim(13);
    let refused = Arc::new(Mutex::new(0));
    let r = refused.clone();
    let d = sim
        .spawn(DomainConfig::new("hostile-front"), move |p| async move {
            let ids = vbd_ids(&p).await.unwrap();
            *r.lock().unwrap() = raw::hostile_frontend(&p, &ids[0]).await;
            // dom0 is fine and serves the guest's other disk.
            let disk = Blkfront::open(&p, &ids[1], BlkfrontConfig::default())
                .await
                .unwrap();
            let data = pattern(90, 8192);
            disk.write(0, &data).await.unwrap();
            let mut got = vec![0u8; data.len()];
            disk.read(0, &mut got).await.unwrap();
            assert!(got == data);
            disk.close().await.unwrap();
        })
        .unwrap();
    let attacked = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    blkback
        .add_vbd(&sim, d, 1, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    finish(&mut sim, &blkback, "hostile frontend");
    let refused = *refused.lock().unwrap();
    assert_eq!(refused, 16);
    assert_eq!(attacked.stats().errors, refused);
    assert!(
        sim.console_output(xenpal_sim::hal::DomId::DOM0)
            .contains("peer overran the ring"),
        "blkback says why it dropped the ring"
    );
}

#[test]
fn the_blocking_interface_notices_a_crash() {
    // embedded_sdmmc's calls block in SCHEDOP_poll; a backend that dies
    // meanwhile must end them with an error, not hang them.
    use embedded_sdmmc::{Block, BlockDevice as Sd, BlockIdx};
    for seed in 0..3 {
        let (mut sim, blkback) = sim(20 + seed);
        let slot: VbdSlot = Default::default();
        let guest_slot = slot.clone();
        let d = sim
            .spawn(DomainConfig::new("blocking"), move |p| async move {
                let vbd = take(&guest_slot);
                let before = usage(&p);
                let ids = vbd_ids(&p).await.unwrap();
                let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let mut blocks = vec![Block::new(); 4];
                blocks[1].contents.fill(7);
                Sd::write(&disk, &blocks, BlockIdx(2)).unwrap();
                disk.flush_blocking().unwrap();
                vbd.crash();
                let r = Sd::read(&disk, &mut blocks, BlockIdx(0));
                assert!(
                    matches!(
                        r,
                        Err(BlockError::Disconnected(DisconnectReason::BackendGone(_)))
                    ),
                    "{r:?}"
                );
                assert!(matches!(
                    Sd::write(&disk, &blocks, BlockIdx(0)),
                    Err(BlockError::Disconnected(_))
                ));
                disk.reconnect().await.unwrap();
                let mut got = vec![Block::new(); 4];
                Sd::read(&disk, &mut got, BlockIdx(2)).unwrap();
                assert!(got[1].contents == [7; 512], "flushed before the crash");
                disk.close().await.unwrap();
                assert_eq!(usage(&p), before);
            })
            .unwrap();
        let vbd = blkback
            .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
            .unwrap();
        *slot.lock().unwrap() = Some(vbd);
        finish(&mut sim, &blkback, "blocking");
    }
}

#[test]
fn a_missing_disk_is_a_typed_setup_error() {
    use std::error::Error as _;
    use xenpal_drivers::blk::SetupError;
    use xenpal_drivers::xenbus::XenbusError;
    let (mut sim, blkback) = sim(13);
    sim.spawn(DomainConfig::new("no-disk"), move |p| async move {
        let before = usage(&p);
        let e = Blkfront::open(&p, "51712", BlkfrontConfig::default())
            .await
            .unwrap_err();
        match &e {
            DisconnectReason::Setup(SetupError::OpenDevice(XenbusError::BadNode(
                path,
                "missing",
            ))) => {
                assert_eq!(path, "device/vbd/51712/backend")
            }
            e => panic!("not a missing backend node: {e:?}"),
        }
        assert!(
            e.to_string()
                .contains("opening the device: xenstore node device/vbd/51712/backend: missing"),
            "{e}"
        );
        let setup = e.source().expect("the setup error");
        assert!(setup.source().is_some_and(|s| s.is::<XenbusError>()));
        assert_eq!(usage(&p), before);
    })
    .unwrap();
    finish(&mut sim, &blkback, "missing disk");
}
