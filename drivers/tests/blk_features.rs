//! blkfront against blkback, feature by feature: flush durability across a
//! backend crash, read-only disks, discard, indirect requests, multi-page
//! rings, 512- and 4096-byte sectors, several disks.

mod blk_support;

use blk_support::{finish, join_all, pattern, sim, usage};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::{BlockDevice, BlockError, DisconnectReason, Operation};
use xenpal_sim::backends::blk::{Disk, VbdOptions};
use xenpal_sim::{DomainConfig, SimPlatform};

const MIB: usize = 1 << 20;

async fn open_all<'p>(
    p: &'p SimPlatform,
    config: BlkfrontConfig,
) -> Vec<Blkfront<'p, xenpal_sim::SimHypervisor, xenpal_sim::SimClock, XenAlarm>> {
    let mut disks = Vec::new();
    for id in vbd_ids(p).await.unwrap() {
        disks.push(Blkfront::open(p, &id, config).await.unwrap());
    }
    disks
}

type XenAlarm = xenpal_sim::xen_pv::timer::XenAlarm<xenpal_sim::SimHypervisor>;

#[test]
fn flushed_writes_survive_a_backend_crash_and_unflushed_ones_do_not() {
    // Once with a backend offering a cache flush, once with one offering
    // only write barriers (blkfront then flushes with an empty barrier).
    for (seed, options) in [
        (0, VbdOptions::default()),
        (1, VbdOptions::default().flush(false).barrier(true)),
        (2, VbdOptions::default()),
    ] {
        let (mut sim, blkback) = sim(seed);
        let durable = pattern(20 + seed, 16 * 1024);
        let volatile = pattern(30 + seed, 8 * 1024);
        let (a, b) = (durable.clone(), volatile.clone());
        let handle = std::sync::Arc::new(std::sync::Mutex::new(None));
        let vbd_for_guest = handle.clone();
        let d = sim
            .spawn(DomainConfig::new("crash"), move |p| async move {
                let vbd: xenpal_sim::backends::blk::Vbd =
                    vbd_for_guest.lock().unwrap().clone().unwrap();
                let disks = open_all(&p, BlkfrontConfig::default()).await;
                let disk = &disks[0];
                assert!(disk.info().has_volatile_cache());
                disk.write(0, &a).await.unwrap();
                disk.flush().await.unwrap();
                disk.write(64, &b).await.unwrap();
                assert_eq!(vbd.dirty_sectors(), b.len() / 512, "cached, not durable");
                // The backend dies; it notices at our next request, which
                // it never answers.
                vbd.crash();
                let mut buf = vec![0u8; 512];
                let r = disk.read(0, &mut buf).await;
                assert!(
                    matches!(
                        r,
                        Err(BlockError::Disconnected(DisconnectReason::BackendGone(_)))
                    ),
                    "{r:?}"
                );
                assert!(!disk.is_connected());
                disk.reconnect().await.unwrap();
                let mut got = vec![0u8; a.len()];
                disk.read(0, &mut got).await.unwrap();
                assert!(got == a, "flushed data lost in the crash");
                let mut got = vec![0u8; b.len()];
                disk.read(64, &mut got).await.unwrap();
                assert!(
                    got.iter().all(|&x| x == 0),
                    "unflushed data survived the crash"
                );
                disk.close().await.unwrap();
            })
            .unwrap();
        let vbd = blkback
            .add_vbd(&sim, d, 0, Disk::zeroed(MIB), options)
            .unwrap();
        *handle.lock().unwrap() = Some(vbd.clone());
        finish(&mut sim, &blkback, "crash");
        let st = vbd.stats();
        assert_eq!(st.crashes, 1);
        assert_eq!(st.sectors_lost, (volatile.len() / 512) as u64);
        assert_eq!(st.connections, 2);
        if options.flush {
            assert_eq!((st.flushes, st.barriers), (1, 0));
        } else {
            assert_eq!((st.flushes, st.barriers), (0, 1));
        }
        assert_eq!(vbd.read_durable(0, durable.len()).unwrap(), durable);
    }
}

#[test]
fn a_read_only_disk_refuses_writes_locally() {
    let (mut sim, blkback) = sim(4);
    let contents = pattern(5, 256 * 1024);
    let want = contents.clone();
    let d = sim
        .spawn(DomainConfig::new("ro"), move |p| async move {
            let disks = open_all(&p, BlkfrontConfig::default()).await;
            let disk = &disks[0];
            assert!(disk.info().read_only);
            assert_eq!(disk.write(0, &[1; 512]).await, Err(BlockError::ReadOnly));
            assert_eq!(disk.discard(0, 8).await, Err(BlockError::ReadOnly));
            let blocks = [embedded_sdmmc::Block::new()];
            assert_eq!(
                embedded_sdmmc::BlockDevice::write(disk, &blocks, embedded_sdmmc::BlockIdx(0)),
                Err(BlockError::ReadOnly)
            );
            let mut got = vec![0u8; want.len()];
            disk.read(0, &mut got).await.unwrap();
            assert!(got == want);
            // Flushing a read-only disk is harmless.
            disk.flush().await.unwrap();
            disk.close().await.unwrap();
        })
        .unwrap();
    let vbd = blkback
        .add_vbd(
            &sim,
            d,
            0,
            Disk::memory(contents.clone()),
            VbdOptions::default().read_only(),
        )
        .unwrap();
    finish(&mut sim, &blkback, "read-only");
    let st = vbd.stats();
    assert_eq!(st.writes, 0, "no write reached the backend");
    assert_eq!(st.discards, 0);
    assert!(st.reads > 0);
    assert_eq!(vbd.read_durable(0, contents.len()).unwrap(), contents);
}

#[test]
fn discard_where_offered_and_local_errors() {
    let (mut sim, blkback) = sim(5);
    let d = sim
        .spawn(DomainConfig::new("discard"), move |p| async move {
            let disks = open_all(&p, BlkfrontConfig::default()).await;
            let (with, without) = (&disks[0], &disks[1]);
            let data = pattern(6, 64 * 1024);
            for disk in [with, without] {
                disk.write(0, &data).await.unwrap();
            }
            let info = with.info().discard.expect("discard offered");
            assert_eq!(info.granularity, 512);
            assert!(without.info().discard.is_none());
            with.discard(8, 16).await.unwrap();
            let mut got = vec![0u8; data.len()];
            with.read(0, &mut got).await.unwrap();
            assert!(got[..8 * 512] == data[..8 * 512]);
            assert!(got[8 * 512..24 * 512].iter().all(|&b| b == 0));
            assert!(got[24 * 512..] == data[24 * 512..]);
            assert_eq!(
                without.discard(8, 16).await,
                Err(BlockError::Unsupported(Operation::Discard))
            );
            // Checked locally, nothing sent.
            let sectors = with.info().sectors;
            assert_eq!(
                with.discard(0, 0).await,
                Err(BlockError::BadLength {
                    len: 0,
                    sector_size: 512
                })
            );
            assert_eq!(
                with.discard(sectors - 1, 2).await,
                Err(BlockError::OutOfRange {
                    sector: sectors - 1,
                    count: 2,
                    sectors
                })
            );
            assert_eq!(
                with.write(0, &[0; 100]).await,
                Err(BlockError::BadLength {
                    len: 100,
                    sector_size: 512
                })
            );
            assert_eq!(
                with.read(u64::MAX, &mut [0; 512]).await,
                Err(BlockError::OutOfRange {
                    sector: u64::MAX,
                    count: 1,
                    sectors
                })
            );
            for disk in &disks {
                disk.close().await.unwrap();
            }
        })
        .unwrap();
    let with = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    let without = blkback
        .add_vbd(
            &sim,
            d,
            1,
            Disk::zeroed(MIB),
            VbdOptions::default().discard(false),
        )
        .unwrap();
    finish(&mut sim, &blkback, "discard");
    assert_eq!(with.stats().discards, 1);
    assert_eq!(with.stats().errors, 0);
    assert_eq!(without.stats().discards, 0);
    assert_eq!(without.stats().requests, without.stats().writes);
}

#[test]
fn indirect_requests_carry_more_than_11_segments() {
    let (mut sim, blkback) = sim(6);
    let d = sim
        .spawn(
            DomainConfig::new("indirect").memory_pages(512),
            move |p| async move {
                let config = BlkfrontConfig {
                    max_indirect_segments: 64,
                    data_pages: 64,
                    ..Default::default()
                };
                let disks = open_all(&p, config).await;
                let t0 = disks[0].transport().unwrap();
                assert!(t0.indirect);
                assert_eq!(t0.max_segments, 64);
                let t1 = disks[1].transport().unwrap();
                assert!(!t1.indirect, "the backend offers no indirect requests");
                assert_eq!(t1.max_segments, 11);
                // 1 MiB: beyond the data pages, so it goes out in rounds;
                // the buffer is deliberately misaligned in memory.
                let data = pattern(7, MIB + 1);
                for disk in &disks {
                    disk.write(16, &data[1..]).await.unwrap();
                    let mut got = vec![0u8; MIB + 3];
                    disk.read(16, &mut got[3..]).await.unwrap();
                    assert!(got[3..] == data[1..], "data differs");
                    disk.close().await.unwrap();
                }
            },
        )
        .unwrap();
    let indirect = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(4 * MIB), VbdOptions::default())
        .unwrap();
    let direct = blkback
        .add_vbd(
            &sim,
            d,
            1,
            Disk::zeroed(4 * MIB),
            VbdOptions::default().max_indirect_segments(0),
        )
        .unwrap();
    finish(&mut sim, &blkback, "indirect");
    let st = indirect.stats();
    // 1 MiB = 256 pages = 4 rounds of 64-segment requests each way.
    assert_eq!(st.indirect_requests, 8, "{st:?}");
    assert_eq!(st.max_segments, 64);
    let st = direct.stats();
    assert_eq!(st.indirect_requests, 0);
    assert_eq!(st.max_segments, 11);
}

#[test]
fn a_multi_page_ring_holds_more_than_32_requests() {
    let (mut sim, blkback) = sim(8);
    let d = sim
        .spawn(
            DomainConfig::new("rings").memory_pages(512),
            move |p| async move {
                let config = BlkfrontConfig {
                    max_ring_page_order: 2,
                    data_pages: 64,
                    ..Default::default()
                };
                let disks = open_all(&p, config).await;
                let big = disks[0].transport().unwrap();
                assert_eq!((big.ring_pages, big.ring_slots), (4, 128));
                let small = disks[1].transport().unwrap();
                assert_eq!((small.ring_pages, small.ring_slots), (1, 32));
                let data = pattern(9, 48 * 4096);
                for disk in &disks {
                    disk.write(0, &data).await.unwrap();
                    // 48 page-sized reads at once, from one task.
                    let reads = (0..48u64)
                        .map(|i| async move {
                            let mut buf = vec![0u8; 4096];
                            disk.read(i * 8, &mut buf).await.map(|()| buf)
                        })
                        .collect();
                    for (i, r) in join_all(reads).await.into_iter().enumerate() {
                        let got = r.unwrap();
                        assert!(got[..] == data[i * 4096..(i + 1) * 4096], "page {i}");
                    }
                    disk.close().await.unwrap();
                }
            },
        )
        .unwrap();
    let order2 = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(MIB), VbdOptions::default())
        .unwrap();
    let order0 = blkback
        .add_vbd(
            &sim,
            d,
            1,
            Disk::zeroed(MIB),
            VbdOptions::default().max_ring_page_order(0),
        )
        .unwrap();
    finish(&mut sim, &blkback, "multi-page ring");
    let st = order2.stats();
    assert_eq!(st.ring_pages, 4);
    assert_eq!(st.max_in_flight, 48, "{st:?}");
    let st = order0.stats();
    assert_eq!(st.ring_pages, 1);
    assert_eq!(st.max_in_flight, 32, "{st:?}");
}

#[test]
fn sector_sizes_of_512_and_4096_bytes() {
    let (mut sim, blkback) = sim(9);
    let d = sim
        .spawn(DomainConfig::new("sectors"), move |p| async move {
            let disks = open_all(&p, BlkfrontConfig::default()).await;
            let (small, large) = (&disks[0], &disks[1]);
            let i = small.info();
            assert_eq!(
                (i.sector_size, i.physical_sector_size, i.sectors),
                (512, 4096, 2048)
            );
            let i = large.info();
            assert_eq!(
                (i.sector_size, i.physical_sector_size, i.sectors),
                (4096, 4096, 256)
            );
            assert_eq!(
                embedded_sdmmc::BlockDevice::num_blocks(large),
                Ok(embedded_sdmmc::BlockCount(2048))
            );
            // A 512-byte write fits the first disk only.
            small.write(1, &[0xa5; 512]).await.unwrap();
            assert_eq!(
                large.write(1, &[0xa5; 512]).await,
                Err(BlockError::BadLength {
                    len: 512,
                    sector_size: 4096
                })
            );
            let data = pattern(12, 2 * 4096);
            large.write(3, &data).await.unwrap();
            let mut got = vec![0u8; 3 * 4096];
            large.read(2, &mut got).await.unwrap();
            assert!(got[..4096].iter().all(|&b| b == 0));
            assert!(got[4096..] == data[..]);
            // 512-byte blocks through embedded_sdmmc: read-modify-write.
            let mut blocks = [embedded_sdmmc::Block::new(), embedded_sdmmc::Block::new()];
            blocks[0].contents.fill(1);
            blocks[1].contents.fill(2);
            embedded_sdmmc::BlockDevice::write(large, &blocks, embedded_sdmmc::BlockIdx(25))
                .unwrap();
            let mut sector3 = vec![0u8; 4096];
            large.read(3, &mut sector3).await.unwrap();
            assert!(sector3[..512] == data[..512], "neighbours kept");
            assert!(sector3[512..1024].iter().all(|&b| b == 1));
            assert!(sector3[1024..1536].iter().all(|&b| b == 2));
            assert!(sector3[1536..] == data[1536..4096]);
            for disk in &disks {
                disk.flush().await.unwrap();
                disk.close().await.unwrap();
            }
        })
        .unwrap();
    let small = blkback
        .add_vbd(
            &sim,
            d,
            0,
            Disk::zeroed(MIB),
            VbdOptions::default().physical_sector_size(4096),
        )
        .unwrap();
    let large = blkback
        .add_vbd(
            &sim,
            d,
            1,
            Disk::zeroed(MIB),
            VbdOptions::default().sector_size(4096),
        )
        .unwrap();
    finish(&mut sim, &blkback, "sector sizes");
    assert_eq!(small.read_durable(512, 512).unwrap(), vec![0xa5; 512]);
    let durable = large.read_durable(3 * 4096 + 512, 512).unwrap();
    assert_eq!(durable, vec![1; 512]);
    assert_eq!(large.stats().errors, 0, "no misaligned request was sent");
}

#[test]
fn several_disks_in_one_guest() {
    let (mut sim, blkback) = sim(10);
    let contents: Vec<Vec<u8>> = (0..4).map(|i| pattern(40 + i, 128 * 1024)).collect();
    let want = contents.clone();
    let d = sim
        .spawn(
            DomainConfig::new("four-disks").memory_pages(512),
            move |p| async move {
                let before = usage(&p);
                let disks = open_all(&p, BlkfrontConfig::default()).await;
                assert_eq!(disks.len(), 4);
                let reads = disks
                    .iter()
                    .map(|disk| async move {
                        let mut buf = vec![0u8; 128 * 1024];
                        disk.read(0, &mut buf).await.map(|()| buf)
                    })
                    .collect();
                for (i, r) in join_all(reads).await.into_iter().enumerate() {
                    assert!(r.unwrap() == want[i], "disk {i}");
                }
                for disk in &disks {
                    disk.close().await.unwrap();
                }
                assert_eq!(usage(&p), before);
            },
        )
        .unwrap();
    for (i, c) in contents.into_iter().enumerate() {
        blkback
            .add_vbd(&sim, d, i as u32, Disk::memory(c), VbdOptions::default())
            .unwrap();
    }
    finish(&mut sim, &blkback, "several disks");
}

#[test]
fn free_running_guests_and_backend_on_several_threads() {
    // Real threads and real time: the guests, xenstored and dom0's
    // backend run in parallel, so orderings the deterministic scheduler
    // cannot produce occur. No timing is asserted; `run_for` only bounds
    // a hang.
    use embedded_sdmmc::{Block, BlockIdx};
    use xenpal_sim::{Mode, Sim, SimConfig};
    for round in 0..5 {
        let mut sim = Sim::new(SimConfig {
            mode: Mode::FreeRunning { threads: 2 },
            ..SimConfig::default()
        });
        let blkback = xenpal_sim::backends::blk::Blkback::new();
        let mut guests = Vec::new();
        for g in 0..3u64 {
            let d = sim
                .spawn(
                    DomainConfig::new(format!("free-{g}")).memory_pages(512),
                    move |p| async move {
                        let before = usage(&p);
                        // Guests start at once here: wait for the toolstack.
                        while vbd_ids(&p).await.unwrap().len() < 2 {
                            xenpal_sim::hal::time::sleep(
                                p.timer(),
                                core::time::Duration::from_millis(1),
                            )
                            .await;
                        }
                        let disks = open_all(&p, BlkfrontConfig::default()).await;
                        let data = pattern(100 + g, 256 * 1024);
                        for d in &disks {
                            d.write(0, &data).await.unwrap();
                        }
                        let reads = disks
                            .iter()
                            .map(|d| async move {
                                let mut b = vec![0u8; 256 * 1024];
                                d.read(0, &mut b).await.map(|()| b)
                            })
                            .collect();
                        for r in join_all(reads).await {
                            assert!(r.unwrap() == data);
                        }
                        let mut blocks = vec![Block::new(); 8];
                        embedded_sdmmc::BlockDevice::read(&disks[1], &mut blocks, BlockIdx(8))
                            .unwrap();
                        assert!(blocks[0].contents[..] == data[4096..4096 + 512]);
                        for d in &disks {
                            d.flush_blocking().unwrap();
                            d.close().await.unwrap();
                        }
                        assert_eq!(usage(&p), before);
                    },
                )
                .unwrap();
            guests.push(d);
        }
        for d in &guests {
            for i in 0..2 {
                blkback
                    .add_vbd(&sim, *d, i, Disk::zeroed(MIB), VbdOptions::default())
                    .unwrap();
            }
        }
        blkback.spawn(&mut sim).unwrap();
        let report = sim.run_for(std::time::Duration::from_secs(60));
        assert!(
            report.all_clean(),
            "round {round}: {report:?}\n{}",
            guests
                .iter()
                .map(|d| sim.console_output(*d))
                .collect::<String>()
        );
    }
}
