//! blkfront over a faulty disk (seeded `DiskFaults` in blkback): I/O
//! errors reach the guest as errors and nothing else goes wrong; latency
//! with jitter delays and reorders responses and every result is still
//! right; crashes lose only what was not flushed and tear only the write
//! in flight; and the same seed replays the same faults.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::{BlockDevice, BlockError, Operation};
use xenpal_sim::backends::blk::{Blkback, Disk, DiskFaults, Vbd, VbdOptions, VbdStats};
use xenpal_sim::hal::{Clock, GrantTable, PageAlloc};
use xenpal_sim::{DomainConfig, Sim, SimConfig, SimPlatform};

const SECTOR: usize = 512;
/// Sectors per block the tests write: 16 KiB, four pages, one request.
const BLOCK_SECTORS: u64 = 32;
const BLOCK: usize = BLOCK_SECTORS as usize * SECTOR;

/// The contents of sector `j` of block `pos`: bytes no other sector of
/// the test has, and never all zero.
fn sector_data(pos: u64, j: u64) -> [u8; SECTOR] {
    let mut x = (pos << 16 | j) ^ 0x5eed_b10c;
    let mut out = [0u8; SECTOR];
    for chunk in out.chunks_exact_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31) | 1).to_le_bytes());
    }
    out
}

/// The contents of block `pos`.
fn block(pos: u64) -> Vec<u8> {
    (0..BLOCK_SECTORS)
        .flat_map(|j| sector_data(pos, j))
        .collect()
}

/// Run `futs` concurrently in the calling task; their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut done = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    out.into_iter().map(|o| o.expect("finished")).collect()
}

/// Run `f`, printing the seed if it panics.
fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("test failed with seed {seed:#x}; rerun with XENPAL_SEED={seed:#x}");
            std::panic::resume_unwind(e)
        }
    }
}

/// Start blkback, run to the end, and check every domain finished cleanly.
fn finish(sim: &mut Sim, blkback: &Blkback, label: &str) {
    blkback.clone().spawn(sim).expect("dom0 is free");
    let report = sim.run();
    if !report.all_clean() {
        let mut out = String::new();
        for d in report.exits.keys().chain(report.alive.iter()) {
            out.push_str(&format!("--- d{}:\n{}\n", d.0, sim.console_output(*d)));
        }
        panic!(
            "{label} (seed {:#x}): not clean: {report:?}\n{out}",
            sim.seed()
        );
    }
}

/// Grants and pages the guest holds.
fn usage(p: &SimPlatform) -> (usize, usize) {
    (p.grants().active_grants(), p.pages().outstanding())
}

/// A slot for the disk's [`Vbd`], filled once the guest's domain id is
/// known (it names the device).
type VbdSlot = Arc<Mutex<Option<Vbd>>>;

fn take(slot: &VbdSlot) -> Vbd {
    slot.lock().unwrap().clone().expect("filled before the run")
}

/// A simulation with one guest running `guest` on one faulty disk of
/// `bytes` bytes. The faults' seed derives from the run's.
fn run_guest<F, Fut>(
    seed: u64,
    bytes: usize,
    faults: DiskFaults,
    label: &str,
    guest: F,
) -> (Sim, Vbd)
where
    F: FnOnce(SimPlatform, Vbd) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    run_guest_with(seed, bytes, VbdOptions::default(), faults, label, guest)
}

/// [`run_guest`] on a disk offered with `options`.
fn run_guest_with<F, Fut>(
    seed: u64,
    bytes: usize,
    options: VbdOptions,
    faults: DiskFaults,
    label: &str,
    guest: F,
) -> (Sim, Vbd)
where
    F: FnOnce(SimPlatform, Vbd) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut sim = Sim::new(SimConfig::seeded(seed));
    let blkback = Blkback::new();
    let slot: VbdSlot = Default::default();
    let guest_slot = slot.clone();
    let d = sim
        .spawn(DomainConfig::new(label), move |p| async move {
            let vbd = take(&guest_slot);
            guest(p, vbd).await
        })
        .unwrap();
    let faults = DiskFaults {
        seed: sim.seed() ^ 0xd15c_fa17,
        ..faults
    };
    let vbd = blkback
        .add_vbd(&sim, d, 0, Disk::zeroed(bytes), options.faults(faults))
        .unwrap();
    *slot.lock().unwrap() = Some(vbd.clone());
    finish(&mut sim, &blkback, label);
    (sim, vbd)
}

/// (a) I/O errors: every failure is `BlockError::Io` of the operation, a
/// failed write leaves the disk as it was, reads that succeed see exactly
/// what was written, the connection never drops, and nothing leaks.
#[test]
fn io_errors_reach_the_guest_as_errors_and_nothing_else_goes_wrong() {
    const BLOCKS: u64 = 64;
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xe770);
    with_seed(seed, || {
        let faults = DiskFaults {
            io_error: 0.25,
            ..DiskFaults::default()
        };
        // Per block: whether its write succeeded; and the errors the guest
        // saw.
        type Seen = (Vec<bool>, u64);
        let seen: Arc<Mutex<Option<Seen>>> = Default::default();
        let out = seen.clone();
        let strict = xenpal_sim::seed_from_env().is_none();
        let (_sim, vbd) = run_guest(seed, 4 << 20, faults, "io-errors", move |p, vbd| {
            async move {
                let before = usage(&p);
                let ids = vbd_ids(&p).await.unwrap();
                let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let mut errors = 0u64;
                let mut written = Vec::new();
                for pos in 0..BLOCKS {
                    match disk.write(pos * BLOCK_SECTORS, &block(pos)).await {
                        Ok(()) => written.push(true),
                        Err(BlockError::Io(Operation::Write)) => {
                            errors += 1;
                            written.push(false);
                        }
                        Err(e) => panic!("write {pos}: {e:?}"),
                    }
                }
                // Flushes are not subject to I/O errors.
                disk.flush().await.unwrap();
                let expect = |pos: u64| {
                    if written[pos as usize] {
                        block(pos)
                    } else {
                        vec![0; BLOCK]
                    }
                };
                // Each block read until a read succeeds: a failed read is an
                // I/O error and leaves the caller's buffer alone (blkfront
                // copies nothing out of a failed request).
                let mut read_errors = 0u64;
                for pos in 0..BLOCKS {
                    let mut tries = 0;
                    loop {
                        let mut buf = vec![0xee; BLOCK];
                        match disk.read(pos * BLOCK_SECTORS, &mut buf).await {
                            Ok(()) => {
                                assert!(buf == expect(pos), "block {pos} reads wrong");
                                break;
                            }
                            Err(BlockError::Io(Operation::Read)) => {
                                assert!(buf.iter().all(|&b| b == 0xee));
                                read_errors += 1;
                            }
                            Err(e) => panic!("read {pos}: {e:?}"),
                        }
                        tries += 1;
                        assert!(tries < 30, "block {pos}: 30 failed reads in a row");
                    }
                }
                assert!(read_errors > 0, "some reads failed");
                errors += read_errors;
                // Each request failed is one error the guest saw, and no
                // more.
                assert_eq!(vbd.stats().faults.io_errors, errors);
                // Reads of 512 KiB, four requests at once: an error in one
                // fails the whole, and the others still come back (their
                // slots and pages too: the next read has them all).
                let (mut big_ok, mut big_errors) = (0, 0);
                for _ in 0..16 {
                    let mut buf = vec![0u8; 32 * BLOCK];
                    match disk.read(0, &mut buf).await {
                        Ok(()) => {
                            for pos in 0..32 {
                                let at = pos as usize * BLOCK;
                                assert!(buf[at..at + BLOCK] == expect(pos)[..]);
                            }
                            big_ok += 1;
                        }
                        Err(BlockError::Io(Operation::Read)) => big_errors += 1,
                        Err(e) => panic!("big read: {e:?}"),
                    }
                }
                if strict {
                    assert!(big_ok > 0 && big_errors > 0, "{big_ok} {big_errors}");
                }
                let more = vbd.stats().faults.io_errors - errors;
                assert!(big_errors <= more && more <= 4 * big_errors);
                errors += more;
                assert!(disk.is_connected());
                disk.close().await.unwrap();
                assert_eq!(usage(&p), before, "every grant and page back");
                *out.lock().unwrap() = Some((written, errors));
            }
        });
        let (written, errors) = seen.lock().unwrap().take().expect("the guest finished");
        let st = vbd.stats();
        eprintln!("{st:?}");
        let failed_writes = written.iter().filter(|w| !**w).count() as u64;
        assert!(
            (4..40).contains(&failed_writes),
            "about a quarter of {BLOCKS} writes fail: {failed_writes}"
        );
        assert_eq!(errors, st.faults.io_errors, "{st:?}");
        assert_eq!(st.faults.io_errors, st.errors, "no other errors: {st:?}");
        assert_eq!(st.connections, 1);
        assert_eq!((st.crashes, st.faults.restarts), (0, 0));
        assert_eq!(st.faults.delayed, 0);
        // A failed write wrote nothing.
        for (pos, ok) in written.iter().enumerate() {
            let got = vbd.read_durable(pos as u64 * BLOCK as u64, BLOCK).unwrap();
            let want = if *ok {
                block(pos as u64)
            } else {
                vec![0; BLOCK]
            };
            assert!(got == want, "block {pos} (written: {ok})");
        }
    });
}

/// (b) Latency and jitter: every response comes late by at least the
/// latency and at most latency + jitter, responses overtake each other,
/// requests in flight together overlap their waits, and every result is
/// right.
#[test]
fn latency_delays_and_reorders_responses_and_results_stay_right() {
    const N: u64 = 24;
    let latency = Duration::from_micros(500);
    let jitter = Duration::from_millis(2);
    let seed = xenpal_sim::seed_from_env().unwrap_or(0x1a7e);
    with_seed(seed, || {
        let faults = DiskFaults {
            latency,
            jitter,
            ..DiskFaults::default()
        };
        let (sim, vbd) = run_guest(seed, 4 << 20, faults, "latency", move |p, _| {
            async move {
                let ids = vbd_ids(&p).await.unwrap();
                let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let now = || p.timer().now().as_nanos();
                let lat = latency.as_nanos() as u64;
                let most = lat + jitter.as_nanos() as u64;
                // N blocks of one page each (all in flight together: 32
                // data pages), writes then reads; each future records
                // when it completed.
                let disk = &disk;
                let order = RefCell::new(Vec::new());
                let order = &order;
                let start = now();
                let writes = (0..N)
                    .map(|i| async move {
                        let data = &block(i)[..4096];
                        disk.write(i * 8, data).await.unwrap();
                        order.borrow_mut().push(i);
                        now()
                    })
                    .collect();
                let done = join_all(writes).await;
                for (i, &t) in done.iter().enumerate() {
                    let waited = t - start;
                    // Guests and dom0 spend a little simulated time too.
                    assert!(
                        (lat..most + 200_000).contains(&waited),
                        "write {i} took {waited} ns"
                    );
                }
                let writes_order = order.replace(Vec::new());
                assert!(
                    !writes_order.is_sorted(),
                    "responses overtook each other: {writes_order:?}"
                );
                assert!(
                    done.iter().max().unwrap() - start < 2 * most,
                    "waits overlap"
                );
                let start = now();
                let reads = (0..N)
                    .map(|i| async move {
                        let mut buf = vec![0u8; 4096];
                        disk.read(i * 8, &mut buf).await.unwrap();
                        assert!(buf[..] == block(i)[..4096], "block {i} reads wrong");
                        order.borrow_mut().push(i);
                    })
                    .collect();
                join_all(reads).await;
                assert!(now() - start >= lat);
                assert!(!order.borrow().is_sorted(), "{:?}", order.borrow());
                // One after another, each waits its turn.
                let start = now();
                let mut buf = vec![0u8; 4096];
                for i in 0..10 {
                    disk.read(i * 8, &mut buf).await.unwrap();
                    assert!(buf[..] == block(i)[..4096]);
                }
                assert!(now() - start >= 10 * lat);
                disk.flush().await.unwrap();
                disk.close().await.unwrap();
            }
        });
        let st = vbd.stats();
        eprintln!("{st:?}, {} simulated", sim.now());
        assert_eq!(
            st.faults.delayed, st.requests,
            "every response was late: {st:?}"
        );
        assert_eq!(st.errors, 0);
        assert_eq!(st.connections, 1);
        assert!(sim.now().as_nanos() >= 12 * latency.as_nanos() as u64);
        for i in 0..N {
            assert!(vbd.read_durable(i * 4096, 4096).unwrap()[..] == block(i)[..4096]);
        }
    });
}

/// What a guest writing numbered blocks through faults learnt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Journal {
    /// Blocks written and then covered by a completed flush: durable.
    flushed: Vec<u64>,
    /// Blocks whose write failed with an I/O error: never written.
    failed: Vec<u64>,
    /// Blocks whose write completed but was not flushed before a
    /// disconnect: a crash loses them, a clean restart keeps them.
    lost: Vec<u64>,
    /// Blocks whose write was in flight at a disconnect: none, some or all
    /// of their sectors may be written.
    unknown: Vec<u64>,
    /// Disconnects met (and reconnections made).
    reconnects: u64,
}

/// Check what is durable against `journal`: flushed blocks exact, failed
/// ones untouched, and every sector of the others either untouched or
/// exactly what was written (never garbage).
fn check_durable(vbd: &Vbd, journal: &Journal) {
    for &pos in &journal.flushed {
        let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
        assert!(got == block(pos), "flushed block {pos} is not durable");
    }
    for &pos in &journal.failed {
        let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
        assert!(got.iter().all(|&b| b == 0), "failed write {pos} wrote");
    }
    for &pos in journal.lost.iter().chain(&journal.unknown) {
        let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
        for (j, s) in got.chunks_exact(SECTOR).enumerate() {
            assert!(
                s.iter().all(|&b| b == 0) || *s == sector_data(pos, j as u64),
                "block {pos} sector {j} holds garbage"
            );
        }
    }
}

/// The guest of the crash tests: write `total` numbered blocks, each to a
/// fresh place, `batch` at a time in flight, flushing after every third
/// batch and at the end; on a disconnect, check what is durable, reconnect
/// and go on with the next blocks.
async fn journal_guest(p: SimPlatform, vbd: Vbd, total: u64, batch: u64) -> Journal {
    let ids = vbd_ids(&p).await.unwrap();
    let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
        .await
        .unwrap();
    // Blocks are addressed in the disk's own sectors.
    let per_block = BLOCK as u64 / u64::from(disk.info().sector_size);
    let mut j = Journal::default();
    let mut completed = Vec::new();
    let mut pos = 0;
    let mut batches = 0u64;
    while pos < total {
        let these: Vec<u64> = (pos..(pos + batch).min(total)).collect();
        pos += these.len() as u64;
        batches += 1;
        let disk = &disk;
        let writes = these
            .iter()
            .map(|&q| async move { disk.write(q * per_block, &block(q)).await })
            .collect();
        let mut down = false;
        for (&q, r) in these.iter().zip(join_all(writes).await) {
            match r {
                Ok(()) => completed.push(q),
                Err(BlockError::Io(Operation::Write)) => j.failed.push(q),
                Err(BlockError::Disconnected(_)) => {
                    j.unknown.push(q);
                    down = true;
                }
                Err(e) => panic!("write {q}: {e:?}"),
            }
        }
        if !down && (batches.is_multiple_of(3) || pos == total) {
            match disk.flush().await {
                Ok(()) => j.flushed.append(&mut completed),
                Err(BlockError::Disconnected(_)) => down = true,
                Err(e) => panic!("flush: {e:?}"),
            }
        }
        if down {
            j.lost.append(&mut completed);
            // Right after the backend went: what was flushed is there.
            check_durable(&vbd, &j);
            disk.reconnect().await.unwrap();
            j.reconnects += 1;
        }
    }
    assert!(completed.is_empty());
    disk.close().await.unwrap();
    j
}

/// Run [`journal_guest`] on a disk offered with `options` and `faults`;
/// the journal, the disk's statistics and the simulation.
fn run_journal(
    seed: u64,
    options: VbdOptions,
    faults: DiskFaults,
    total: u64,
) -> (Journal, VbdStats, Sim, Vbd) {
    let journal: Arc<Mutex<Option<Journal>>> = Default::default();
    let out = journal.clone();
    let bytes = (total as usize * BLOCK).next_power_of_two();
    let guest = move |p, vbd| async move {
        let j = journal_guest(p, vbd, total, 4).await;
        *out.lock().unwrap() = Some(j);
    };
    let (sim, vbd) = run_guest_with(seed, bytes, options, faults, "journal", guest);
    let j = journal.lock().unwrap().take().expect("the guest finished");
    check_durable(&vbd, &j);
    let st = vbd.stats();
    eprintln!(
        "seed {seed:#x}: {} flushed, {} failed, {} lost, {} unknown, {} reconnects; {st:?}",
        j.flushed.len(),
        j.failed.len(),
        j.lost.len(),
        j.unknown.len(),
        j.reconnects
    );
    (j, st, sim, vbd)
}

/// (c) Crashes: what was flushed survives every crash exactly; a crash
/// loses the writes completed since the last flush; the write in flight
/// leaves a prefix of its sectors, and such torn writes are only ever in
/// blocks not yet flushed.
#[test]
fn crashes_lose_only_unflushed_writes_and_tear_only_the_write_in_flight() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xc4a5);
    crash_journal(seed, VbdOptions::default(), 1);
}

/// (c) on a disk of 4096-byte sectors: a write tears between them only.
#[test]
fn a_write_torn_by_a_crash_keeps_whole_logical_sectors() {
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xc4a6);
    let options = VbdOptions::default()
        .sector_size(4096)
        .flush(false)
        .barrier(true);
    crash_journal(seed, options, 8);
}

/// The guest of (c) on a disk offered with `options`, whose writes tear in
/// units of `unit` 512-byte sectors.
fn crash_journal(seed: u64, options: VbdOptions, unit: usize) {
    const TOTAL: u64 = 240;
    with_seed(seed, || {
        let faults = DiskFaults {
            crash: 0.05,
            latency: Duration::from_micros(50),
            jitter: Duration::from_micros(200),
            ..DiskFaults::default()
        };
        let (j, st, _sim, vbd) = run_journal(seed, options, faults, TOTAL);
        let c = st.faults;
        assert!(c.crashes > 0, "{c:?}");
        assert_eq!(c.crashes, st.crashes, "no other crashes");
        assert_eq!(j.reconnects, c.crashes, "each crash seen once");
        assert_eq!(st.connections, c.crashes + 1);
        assert!(j.failed.is_empty());
        let unflushed = j.lost.len() + j.unknown.len();
        assert_eq!(j.flushed.len() + unflushed, TOTAL as usize);
        assert!(!j.flushed.is_empty(), "some batches got through");
        // Writes completed and not flushed are lost.
        for &pos in &j.lost {
            let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
            assert!(got.iter().all(|&b| b == 0), "lost block {pos} survived");
        }
        if xenpal_sim::seed_from_env().is_none() {
            assert!(!j.lost.is_empty(), "{j:?}");
        }
        // Of the blocks in flight, what reached the disk is exactly the
        // torn writes: for each, a prefix of its sectors, and the sectors
        // in all are those the crashes let through.
        let (mut touched, mut torn, mut sectors) = (0, 0, 0);
        for &pos in &j.unknown {
            let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
            let kept = got
                .chunks_exact(SECTOR)
                .take_while(|s| s.iter().any(|&b| b != 0))
                .count();
            assert!(
                got[kept * SECTOR..].iter().all(|&b| b == 0),
                "block {pos}: not a prefix"
            );
            assert!(kept.is_multiple_of(unit), "block {pos}: {kept} sectors");
            if kept > 0 {
                touched += 1;
            }
            if kept > 0 && kept < BLOCK_SECTORS as usize {
                torn += 1;
            }
            sectors += kept as u64;
        }
        assert!(touched <= c.crashes, "one write in flight per crash");
        assert_eq!(torn, c.torn_writes, "{c:?}");
        assert_eq!(sectors, c.torn_sectors, "{c:?}");
        if xenpal_sim::seed_from_env().is_none() {
            assert!(c.torn_writes > 0, "{c:?}");
            assert!(st.sectors_lost > 0, "crashes lost cached writes: {st:?}");
        }
    });
}

/// Clean restarts: the requests taken before are carried out and what
/// completed is written back, flushed or not; nothing is torn.
#[test]
fn a_clean_restart_keeps_every_completed_write() {
    const TOTAL: u64 = 200;
    let seed = xenpal_sim::seed_from_env().unwrap_or(0x2e57);
    with_seed(seed, || {
        let faults = DiskFaults {
            restart: 0.04,
            latency: Duration::from_micros(50),
            jitter: Duration::from_micros(200),
            ..DiskFaults::default()
        };
        let (j, st, _sim, vbd) = run_journal(seed, VbdOptions::default(), faults, TOTAL);
        let c = st.faults;
        assert!(c.restarts > 0, "{c:?}");
        assert_eq!((st.crashes, st.sectors_lost), (0, 0));
        assert_eq!(j.reconnects, c.restarts);
        assert_eq!(st.connections, c.restarts + 1);
        if xenpal_sim::seed_from_env().is_none() {
            assert!(!j.lost.is_empty(), "{j:?}");
        }
        for &pos in &j.lost {
            let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
            assert!(got == block(pos), "completed block {pos} lost in a restart");
        }
        for &pos in &j.unknown {
            let got = vbd.read_durable(pos * BLOCK as u64, BLOCK).unwrap();
            assert!(
                got == block(pos) || got.iter().all(|&b| b == 0),
                "block {pos} written in part"
            );
        }
    });
}

/// (d) Every fault at once, twice with the same seed: the same statistics,
/// journal, disk and trace; with another seed, other faults. Flushed data
/// survives throughout.
#[test]
fn the_same_seed_replays_the_same_faults() {
    const TOTAL: u64 = 160;
    let seed = xenpal_sim::seed_from_env().unwrap_or(0xd0d0);
    let faults = DiskFaults {
        io_error: 0.05,
        latency: Duration::from_micros(100),
        jitter: Duration::from_micros(300),
        crash: 0.03,
        restart: 0.01,
        ..DiskFaults::default()
    };
    with_seed(seed, || {
        let run = |seed| {
            let (j, st, sim, vbd) = run_journal(seed, VbdOptions::default(), faults, TOTAL);
            let image = vbd.read_durable(0, (TOTAL as usize * BLOCK).next_power_of_two());
            (j, st, sim.trace_hash(), sim.now(), image.unwrap())
        };
        let first = run(seed);
        let (j, st, ..) = &first;
        let c = st.faults;
        if xenpal_sim::seed_from_env().is_none() {
            assert!(
                c.io_errors > 0 && c.delayed > 0 && c.crashes > 0 && c.restarts > 0,
                "every kind of fault happened: {c:?}"
            );
            assert!(!j.failed.is_empty());
        }
        assert_eq!(j.reconnects, c.crashes + c.restarts);
        assert_eq!(st.crashes, c.crashes);
        let second = run(seed);
        assert_eq!(second.1, first.1, "the same statistics");
        assert_eq!(second.0, first.0, "the same journal");
        assert!(second.4 == first.4, "the same disk");
        assert_eq!(second.2, first.2, "the same trace");
        assert_eq!(second.3, first.3, "the same time");
        if xenpal_sim::seed_from_env().is_none() {
            let other = run(seed ^ 1);
            assert_ne!(other.1.faults, first.1.faults, "another seed, other faults");
        }
    });
}
