//! `cargo xtask soak`: the simulator's long run with faults on, in the
//! style of TigerBeetle's VOPR and FoundationDB's simulation tests.
//!
//! ```text
//! cargo xtask soak [--seeds N] [--from S] [--jobs J]   N seeds from S
//! cargo xtask soak --seed S                              one, told in full
//! ```
//!
//! Each seed builds one simulated machine and draws everything from the
//! seed: the site's files, how they are split across FAT images, the
//! clients' requests, the faults on every link, when blkback crashes or
//! restarts. On it:
//! - the static site ([`xenpal_apps::site`]) serves its files from blkfront
//!   and FAT to two or three client guests over faulty links (loss,
//!   duplication, reordering, corruption, delay, partitions), each client
//!   making keep-alive connections with pipelined `GET`s and `HEAD`s;
//! - a writer guest writes numbered blocks through blkfront, flushing now
//!   and then, while dom0 crashes or restarts its backend at random times
//!   (a crash loses the writes not yet flushed); the writer reconnects and
//!   writes again what it had not seen flushed, as a journal would;
//! - every guest's timers fire up to 50 µs late (Xen's default timer
//!   slop), and xenstored answers up to 2 ms late, drawn from the seed;
//! - once the clients are done, dom0 asks the site to stop (through
//!   `control/shutdown`, as `xl shutdown` does) and it closes its devices.
//!
//! Invariants, checked on every seed:
//! - every response is exactly right (status and bytes), or cut short
//!   cleanly: what arrived is a prefix of the right bytes, never a wrong
//!   byte;
//! - no block the writer saw flushed is lost or changed on the disk;
//! - no leaks: each guest holds the grants, pages and event channels it
//!   held before opening its devices once it has closed them, the site's
//!   backends let go of its grants (it checks), and dom0 maps nothing;
//! - no panic in any domain, and no hang: every guest finishes within
//!   [`VIRTUAL_LIMIT`] of simulated time.
//!
//! A failure prints the seed, the reasons, the trace hash and the command
//! that replays it; `--seed S` replays it with the same trace hash.
//! The soak runs in the `soak` profile (optimised, with debug assertions
//! and overflow checks on): `cargo xtask` rebuilds itself in it.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpCidr, Ipv4Address};
use std::collections::BTreeMap;
use std::path::Path;
use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};
use xenpal_apps::site::{self, SiteConfig};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::{BlockDevice, BlockError};
use xenpal_drivers::net::{NetConfig, Netfront};
use xenpal_fatimg as fatimg;
use xenpal_sim::backends::blk::{Blkback, Disk, DiskFaultCounters, DiskFaults, VbdOptions};
use xenpal_sim::backends::net::{FaultCounters, LinkFaults, NetBackend};
use xenpal_sim::hal::task::select;
use xenpal_sim::hal::time::sleep;
use xenpal_sim::hal::{Clock, DomId};
use xenpal_sim::{DomainConfig, Exit, Holdings, Rng, Sim, SimConfig, SimPlatform};

/// Simulated time within which every guest must finish: longer than any
/// healthy run (a few simulated minutes at most, when TCP backs off), so
/// reaching it means something hangs.
pub const VIRTUAL_LIMIT: Duration = Duration::from_secs(2 * 3600);

/// The environment variable that tells the soak it runs in its profile.
const INNER: &str = "XENPAL_SOAK_INNER";

const USAGE: &str = "usage: cargo xtask soak [--seeds N] [--from S] [--jobs J] | --seed S";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    from: u64,
    seeds: u64,
    jobs: usize,
    /// `--seed`: one seed, told in full.
    one: bool,
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        from: 1,
        seeds: 100,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        one: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .and_then(|v| number(v))
                .ok_or_else(|| format!("{flag} needs {what}\n{USAGE}"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = value("a number of seeds")?,
            "--from" => a.from = value("a seed")?,
            "--seed" => {
                a.from = value("a seed")?;
                a.seeds = 1;
                a.one = true;
            }
            "--jobs" => a.jobs = value("a number of threads")?.clamp(1, 64) as usize,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.seeds == 0 {
        return Err(format!("--seeds must be at least 1\n{USAGE}"));
    }
    if a.from.checked_add(a.seeds).is_none() {
        return Err(format!("seeds from {:#x} overflow\n{USAGE}", a.from));
    }
    Ok(a)
}

/// `cargo xtask soak ARGS`: rebuild in the soak profile and run there.
/// Ok(false) if a seed failed.
pub fn run(args: &[String], root: &Path) -> Result<bool, String> {
    let a = parse(args)?;
    if std::env::var_os(INNER).is_none() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "run",
                "--quiet",
                "--profile",
                "soak",
                "-p",
                "xtask",
                "--",
                "soak",
            ])
            .args(args)
            .env(INNER, "1")
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        return Ok(status.success());
    }
    Ok(soak(&a))
}

/// What one seed's run saw.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The simulator's trace hash at the end (the same for a replay).
    pub trace_hash: u64,
    /// Invariants broken, with what broke them (empty: the seed passed).
    pub failures: Vec<String>,
    /// Responses received whole and right.
    pub responses: u64,
    /// Connections cut short cleanly (a prefix of the right bytes).
    pub cut_short: u64,
    /// The site did not start because its disk failed a read (a clean
    /// error, on seeds whose site disks fail).
    pub site_failed_cleanly: bool,
    /// Blocks the writer saw flushed.
    pub flushed_blocks: u64,
    /// Backend crashes and restarts dom0 caused.
    pub crashes: u64,
    /// What the faulty links did, all links together.
    pub faults: FaultCounters,
    /// What the faulty disks did, all disks together.
    pub disk_faults: DiskFaultCounters,
    /// Simulated time the run took.
    pub virtual_time: Duration,
}

fn soak(a: &Args) -> bool {
    let started = WallInstant::now();
    let next = AtomicU64::new(a.from);
    let end = a.from + a.seeds;
    let reports: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..a.jobs.min(a.seeds as usize) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r = run_seed(seed);
                    if !r.failures.is_empty() || a.one {
                        print_report(&r, a.one);
                    }
                    let mut all = reports.lock().unwrap();
                    all.push(r);
                    // Progress on long runs, every 1,000 seeds.
                    if all.len().is_multiple_of(1000) && a.seeds > 1000 {
                        let failed = all.iter().filter(|r| !r.failures.is_empty()).count();
                        eprintln!(
                            "soak: {}/{} seeds, {failed} failed, {:.0} s",
                            all.len(),
                            a.seeds,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let reports = reports.into_inner().unwrap();
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.failures.is_empty())
        .map(|r| r.seed)
        .collect();
    let sum = |f: fn(&SeedReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut faults = FaultCounters::default();
    let mut disk = DiskFaultCounters::default();
    for r in &reports {
        add_faults(&mut faults, &r.faults);
        add_disk_faults(&mut disk, &r.disk_faults);
    }
    println!(
        "soak: {} seeds from {:#x}: {} passed, {} failed; {} responses, {} connections cut short, \
         {} sites stopped cleanly by a disk error at start, \
         {} blocks flushed, {} backend crashes/restarts by dom0; link faults: {} frames lost, \
         {} duplicated, {} reordered, {} corrupted, {} dropped in partitions; disk faults: {} I/O \
         errors, {} delayed, {} crashes ({} torn writes), {} restarts; {:.1} s",
        reports.len(),
        a.from,
        reports.len() - failed.len(),
        failed.len(),
        sum(|r| r.responses),
        sum(|r| r.cut_short),
        sum(|r| u64::from(r.site_failed_cleanly)),
        sum(|r| r.flushed_blocks),
        sum(|r| r.crashes),
        faults.lost,
        faults.duplicated,
        faults.reordered,
        faults.corrupted,
        faults.partitioned,
        disk.io_errors,
        disk.delayed,
        disk.crashes,
        disk.torn_writes,
        disk.restarts,
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|s| format!("{s:#x}")).collect();
        println!("soak: FAILED seeds: {}", list.join(" "));
    }
    failed.is_empty()
}

fn add_faults(to: &mut FaultCounters, f: &FaultCounters) {
    to.lost += f.lost;
    to.duplicated += f.duplicated;
    to.reordered += f.reordered;
    to.corrupted += f.corrupted;
    to.partitioned += f.partitioned;
    to.partitions += f.partitions;
}

fn add_disk_faults(to: &mut DiskFaultCounters, f: &DiskFaultCounters) {
    to.io_errors += f.io_errors;
    to.delayed += f.delayed;
    to.crashes += f.crashes;
    to.torn_writes += f.torn_writes;
    to.torn_sectors += f.torn_sectors;
    to.restarts += f.restarts;
}

fn print_report(r: &SeedReport, full: bool) {
    if r.failures.is_empty() {
        println!(
            "soak: seed {:#x} passed (trace {:#018x}): {} responses, {} cut short, {} blocks \
             flushed, {} crashes/restarts by dom0, {:?} simulated; {:?}; {:?}",
            r.seed,
            r.trace_hash,
            r.responses,
            r.cut_short,
            r.flushed_blocks,
            r.crashes,
            r.virtual_time,
            r.faults,
            r.disk_faults
        );
        return;
    }
    println!(
        "soak: seed {:#x} FAILED (trace {:#018x}); replay: cargo xtask soak --seed {:#x}",
        r.seed, r.trace_hash, r.seed
    );
    for f in &r.failures {
        if full {
            println!("soak:   {f}");
        } else {
            // The first lines: --seed tells the rest.
            let short: Vec<&str> = f.lines().take(3).collect();
            println!("soak:   {}", short.join(" / "));
        }
    }
}

/// The site's address and port; clients are 10.0.0.3 and up.
const SITE: (Ipv4Address, u16) = (Ipv4Address::new(10, 0, 0, 2), 80);

/// The writer's disk: blocks of 4 KiB.
const BLOCK: usize = 4096;
const BLOCKS: u64 = 256;

/// Everything one seed's workload is made of, drawn from the seed.
struct Plan {
    files: Vec<(String, Vec<u8>)>,
    image_max: u64,
    /// Per client, per connection, the requests: (HEAD?, path).
    clients: Vec<Vec<Vec<(bool, String)>>>,
    link: LinkFaults,
    /// Writes the writer makes, and after how many it flushes.
    writes: u64,
    flush_every: u64,
    /// When dom0 crashes (true) or restarts (false) the writer's backend.
    disk_events: Vec<(Duration, bool)>,
    /// The writer's disk's faults (seed set per run).
    writer_disk: DiskFaults,
    /// The site's disks' faults: latency always, I/O errors on some seeds
    /// (then a `500`, or a response cut short, is a clean error).
    site_disk: DiskFaults,
}

fn bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(n);
    v
}

fn plan(seed: u64) -> Plan {
    let mut rng = Rng::new(seed ^ 0x50a4_50a4_50a4_50a4);
    let mut files = vec![("/index.html".to_string(), b"<h1>soak</h1>".to_vec())];
    for i in 0..2 + rng.below(6) {
        let len = match rng.below(4) {
            0 => rng.below(100),
            1 => rng.below(8192),
            2 => 8192 + rng.below(120_000),
            _ => 128 * 1024 + rng.below(600_000),
        };
        let dir = ["", "/d", "/d/e f"][rng.below(3)];
        files.push((format!("{dir}/file{i}.bin"), bytes(&mut rng, len)));
    }
    // Small images, so a site often spans two or more.
    let image_max = [3u64 << 20, 8 << 20][rng.below(2)];
    let mut clients = Vec::new();
    for _ in 0..2 + rng.below(2) {
        let mut conns = Vec::new();
        for _ in 0..2 + rng.below(5) {
            let mut reqs = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let head = rng.chance(0.15);
                let path = if rng.chance(0.1) {
                    format!("/missing{}.html", rng.below(10))
                } else {
                    files[rng.below(files.len())].0.clone()
                };
                reqs.push((head, path));
            }
            conns.push(reqs);
        }
        clients.push(conns);
    }
    let link = LinkFaults {
        loss: 0.002,
        duplicate: 0.01,
        reorder: 0.01,
        reorder_window: Duration::from_micros(300),
        corrupt: 0.002,
        delay: Duration::from_micros(100),
        jitter: Duration::from_micros(50),
        partition_every: Duration::from_millis(50),
        partition_length: Duration::from_millis(2),
        ..LinkFaults::default()
    };
    let writes = 40 + rng.below(160) as u64;
    let flush_every = 1 + rng.below(16) as u64;
    // The writer spends about a millisecond per write (see `writer`).
    let mut disk_events = Vec::new();
    for _ in 0..rng.below(4) {
        let at = Duration::from_micros(rng.below(writes as usize * 1000) as u64);
        disk_events.push((at, rng.chance(0.7)));
    }
    disk_events.sort();
    let writer_disk = DiskFaults {
        io_error: 0.02,
        latency: Duration::from_micros(100),
        jitter: Duration::from_micros(400),
        crash: 0.01,
        restart: 0.005,
        ..DiskFaults::default()
    };
    let site_disk = DiskFaults {
        io_error: if rng.chance(0.3) { 0.002 } else { 0.0 },
        latency: Duration::from_micros(50),
        jitter: Duration::from_micros(200),
        ..DiskFaults::default()
    };
    Plan {
        files,
        image_max,
        clients,
        link,
        writes,
        flush_every,
        disk_events,
        writer_disk,
        site_disk,
    }
}

fn smol_now(p: &SimPlatform) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((p.timer().now().as_nanos() / 1000) as i64)
}

/// What a client must get for a request.
fn expected(files: &[(String, Vec<u8>)], head: bool, path: &str) -> (u16, usize, Vec<u8>) {
    match files.iter().find(|(p, _)| p == path) {
        Some((_, data)) if head => (200, data.len(), Vec::new()),
        Some((_, data)) => (200, data.len(), data.clone()),
        None => (404, usize::MAX, Vec::new()),
    }
}

/// Check `raw`, what one connection received, against its requests.
/// Returns the responses that were whole and right, and whether the
/// connection was cut short; Err names the first wrong byte.
fn check_connection(
    files: &[(String, Vec<u8>)],
    reqs: &[(bool, String)],
    mut raw: &[u8],
    disk_errors: bool,
) -> Result<(u64, bool), String> {
    let mut whole = 0;
    for (i, (head, path)) in reqs.iter().enumerate() {
        let what = format!(
            "response {i} ({} {path})",
            if *head { "HEAD" } else { "GET" }
        );
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            // Cut short within (or before) the head: what came must start
            // like a response.
            let start = &b"HTTP/1.1 "[..raw.len().min(9)];
            if !raw.starts_with(start) {
                return Err(format!("{what}: {:?} is not a response", lossy(raw)));
            }
            return Ok((whole, true));
        };
        let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what}: bad status line in {headers:?}"))?;
        let len: usize = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| format!("{what}: no Content-Length in {headers:?}"))?;
        let (want_status, want_len, want_body) = expected(files, *head, path);
        if status == 500 && want_status == 200 && disk_errors {
            // The site could not read the file: a clean error (it closes
            // the connection after it).
            return Ok((whole, true));
        }
        if status != want_status {
            return Err(format!("{what}: status {status}, expected {want_status}"));
        }
        if want_len != usize::MAX && len != want_len {
            return Err(format!("{what}: Content-Length {len}, expected {want_len}"));
        }
        let body_len = if *head { 0 } else { len };
        let body = &raw[split + 4..];
        let got = &body[..body.len().min(body_len)];
        if want_status == 200 && !*head && got != &want_body[..got.len()] {
            let at = got.iter().zip(&want_body).position(|(a, b)| a != b);
            return Err(format!("{what}: wrong byte at {at:?}"));
        }
        if body.len() < body_len {
            return Ok((whole, true));
        }
        whole += 1;
        raw = &body[body_len..];
    }
    if !raw.is_empty() {
        return Err(format!("{} bytes after the last response", raw.len()));
    }
    Ok((whole, false))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned()
}

/// A client guest: each connection in turn, its requests pipelined in one
/// write, the last asking to close. Returns (whole responses, connections
/// cut short); panics (a failure) on a wrong byte or a leak.
async fn client(
    p: SimPlatform,
    index: usize,
    files: Arc<Vec<(String, Vec<u8>)>>,
    conns: Vec<Vec<(bool, String)>>,
    disk_errors: bool,
) -> (u64, u64) {
    let base = Holdings::of(&p);
    let deadline = p.timer().now() + Duration::from_secs(30);
    let mut nic = Netfront::open(&p, "0", NetConfig::default()).await.unwrap();
    nic.wait_up(deadline).await.unwrap();
    let mut config = Config::new(nic.hardware_address());
    config.random_seed = 0x5eed + index as u64;
    let mut iface = Interface::new(config, &mut nic, smol_now(&p));
    let me = Ipv4Address::new(10, 0, 0, 3 + index as u8);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(me.into(), 24)).unwrap());
    let (mut whole, mut cut) = (0, 0);
    for (n, reqs) in conns.iter().enumerate() {
        let mut sockets = SocketSet::new(vec![]);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        // Long enough for smoltcp's backoff on a faulty link.
        sock.set_timeout(Some(smoltcp::time::Duration::from_secs(150)));
        let h = sockets.add(sock);
        sockets
            .get_mut::<tcp::Socket>(h)
            .connect(iface.context(), SITE, 40000 + n as u16)
            .unwrap();
        let mut request = String::new();
        for (i, (head, path)) in reqs.iter().enumerate() {
            let method = if *head { "HEAD" } else { "GET" };
            let close = if i + 1 == reqs.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            let path = path.replace(' ', "%20");
            request += &format!("{method} {path} HTTP/1.1\r\nHost: soak\r\n{close}\r\n");
        }
        let mut sent = 0;
        let mut raw = Vec::new();
        let give_up = p.timer().now() + Duration::from_secs(600);
        loop {
            iface.poll(smol_now(&p), &mut nic, &mut sockets);
            let s = sockets.get_mut::<tcp::Socket>(h);
            if sent < request.len() && s.can_send() {
                sent += s.send_slice(&request.as_bytes()[sent..]).unwrap();
            }
            while s.can_recv() {
                s.recv(|b| {
                    raw.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if !s.may_recv() && s.state() != tcp::State::SynSent {
                s.close();
            }
            if !s.is_open() {
                break;
            }
            if p.timer().now() >= give_up {
                s.abort();
                iface.poll(smol_now(&p), &mut nic, &mut sockets);
                break;
            }
            let at = p.timer().now() + Duration::from_millis(20);
            nic.wait(at).await;
        }
        match check_connection(&files, reqs, &raw, disk_errors) {
            Ok((w, c)) => {
                whole += w;
                cut += u64::from(c);
            }
            Err(e) => panic!("client {index}, connection {n}: {e}"),
        }
    }
    nic.close(p.timer().now() + Duration::from_secs(30))
        .await
        .unwrap();
    let after = Holdings::of(&p);
    assert_eq!(after, base, "client {index} leaked");
    (whole, cut)
}

/// The writer's block `k` of generation `g`.
fn block(seed: u64, k: u64, g: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ (k << 32) ^ g.wrapping_mul(0x9e37_79b9));
    bytes(&mut rng, BLOCK)
}

/// What the writer knows: per block, the generation it saw flushed.
type Flushed = Arc<Mutex<BTreeMap<u64, u64>>>;

/// The writer guest: `writes` writes of random blocks, a flush after every
/// `flush_every`. As a journal would, it keeps what it wrote since its
/// last flush: an I/O error makes it try again, a lost connection makes it
/// reconnect and write all of that again. Panics (a failure) if a flushed
/// block reads back wrong after a reconnection, if the disk never
/// recovers, or on a leak.
async fn writer(p: SimPlatform, seed: u64, writes: u64, flush_every: u64, flushed: Flushed) {
    let base = Holdings::of(&p);
    let ids = vbd_ids(&p).await.unwrap();
    // Errors survived; a bound on them all.
    let mut errors = 0;
    // The backend may crash or restart while we first connect, too.
    let disk = loop {
        match Blkfront::open(&p, &ids[0], BlkfrontConfig::default()).await {
            Ok(d) => break d,
            Err(e) => log::warn!("writer: opening the disk: {e}"),
        }
        errors += 1;
        assert!(errors < 1000, "the disk never connects");
    };
    let mut rng = Rng::new(seed ^ 0x3717e);
    let spb = (BLOCK / 512) as u64;
    // Written since the last flush: block -> generation; and those of them
    // not (yet, or since a reconnection) known written.
    let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
    let mut unwritten: Vec<u64> = Vec::new();
    let mut generation = 0;
    for i in 0..writes {
        sleep(p.timer(), Duration::from_micros(900)).await;
        let k = rng.below(BLOCKS as usize) as u64;
        generation += 1;
        pending.insert(k, generation);
        unwritten.retain(|&u| u != k);
        unwritten.push(k);
        let flush = (i + 1) % flush_every == 0 || i + 1 == writes;
        loop {
            let r = async {
                while let Some(&k) = unwritten.first() {
                    disk.write(k * spb, &block(seed, k, pending[&k])).await?;
                    unwritten.remove(0);
                }
                if flush {
                    disk.flush().await?;
                }
                Ok::<(), BlockError>(())
            }
            .await;
            match r {
                Ok(()) => {
                    if flush {
                        flushed.lock().unwrap().append(&mut pending);
                    }
                    break;
                }
                // Nothing was done, or not made durable: again.
                Err(BlockError::Io(_)) => {}
                Err(BlockError::Disconnected(_)) => {
                    // Reconnect (the backend may go away again meanwhile);
                    // what was flushed must be there; what was not may or
                    // may not be: write it all again.
                    while let Err(e) = disk.reconnect().await {
                        log::warn!("writer: reconnecting: {e}");
                        errors += 1;
                        assert!(errors < 1000, "the disk never recovers");
                    }
                    let seen: Vec<(u64, u64)> = flushed
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(k, g)| (*k, *g))
                        .collect();
                    for (k, g) in seen.into_iter().filter(|(k, _)| !pending.contains_key(k)) {
                        let mut got = vec![0; BLOCK];
                        if disk.read(k * spb, &mut got).await.is_ok() {
                            assert!(got == block(seed, k, g), "flushed block {k} lost");
                        }
                    }
                    unwritten = pending.keys().copied().collect();
                }
                Err(e) => panic!("writer: {e}"),
            }
            errors += 1;
            assert!(errors < 1000, "the disk never recovers");
        }
    }
    // The backend may go away as we close: then closing still lets go of
    // everything (the leak check says whether it did).
    if let Err(e) = disk.close().await {
        log::warn!("writer: closing the disk: {e}");
    }
    let after = Holdings::of(&p);
    assert_eq!(after, base, "the writer leaked");
}

/// Run one seed and check every invariant.
pub fn run_seed(seed: u64) -> SeedReport {
    let mut report = SeedReport {
        seed,
        ..SeedReport::default()
    };
    let plan = plan(seed);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_plan(seed, &plan, &mut report)
    }));
    if let Err(e) = result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        report
            .failures
            .push(format!("the soak itself panicked: {msg}"));
    }
    report
}

fn run_plan(seed: u64, plan: &Plan, report: &mut SeedReport) {
    // The seed as given (not XENPAL_SEED's), timers as late as Xen's
    // default slop lets them be, and xenstored up to 2 ms late.
    let mut sim = Sim::new(SimConfig {
        seed,
        timer_slop: Duration::from_micros(50),
        xenstore_delay: Duration::from_millis(2),
        ..SimConfig::default()
    });
    let files = Arc::new(plan.files.clone());
    let mut all = fatimg::FatImage::new();
    for (path, data) in &plan.files {
        all.add_file(path, data.clone()).expect("a site file");
    }
    let images: Vec<Vec<u8>> = all
        .split_growing(plan.image_max)
        .and_then(|imgs| imgs.iter().map(|i| i.build()).collect())
        .expect("the site's images");

    let site_result: Arc<Mutex<Option<Result<site::SiteStats, site::SiteError>>>> = Arc::default();
    let r = site_result.clone();
    let site_dom = sim
        .spawn(
            DomainConfig::new("site").memory_pages(4096).paused(),
            move |p| async move {
                let xs = p.xenstore().unwrap().clone();
                let stop = async move {
                    if let Err(e) = xenpal::control::shutdown_request(&xs).await {
                        log::error!("site: control/shutdown: {e}");
                        core::future::pending::<()>().await;
                    }
                };
                let cfg = SiteConfig::default();
                let out = site::serve_until(&p, cfg, stop).await;
                *r.lock().unwrap() = Some(out);
            },
        )
        .unwrap();

    let clients_done = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut client_doms = Vec::new();
    for (i, conns) in plan.clients.iter().enumerate() {
        let (files, conns) = (files.clone(), conns.clone());
        let (done, out) = (clients_done.clone(), outcomes.clone());
        let disk_errors = plan.site_disk.io_error > 0.0;
        let d = sim
            .spawn(
                DomainConfig::new(format!("client{i}"))
                    .memory_pages(1024)
                    .paused(),
                move |p| async move {
                    // Let the site index its disks first.
                    sleep(p.timer(), Duration::from_millis(50)).await;
                    let got = client(p, i, files, conns, disk_errors).await;
                    out.lock().unwrap().push(got);
                    done.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap();
        client_doms.push(d);
    }

    let flushed: Flushed = Arc::default();
    let f = flushed.clone();
    let (writes, every) = (plan.writes, plan.flush_every);
    let writer_dom = sim
        .spawn(
            DomainConfig::new("writer").memory_pages(512).paused(),
            move |p| writer(p, seed, writes, every, f),
        )
        .unwrap();

    // Devices, as a toolstack adds them.
    let mut net = NetBackend::new();
    net.add_vif(&sim, site_dom, 0, [0, 0x16, 0x3e, 0, 0, 2])
        .unwrap();
    for (i, d) in client_doms.iter().enumerate() {
        net.add_vif(&sim, *d, 0, [0, 0x16, 0x3e, 0, 1, i as u8])
            .unwrap();
        let link_seed = seed ^ (u64::from(d.0) << 40) ^ 0x11;
        net.link_faults(
            *d,
            0,
            LinkFaults {
                seed: link_seed,
                ..plan.link
            },
        );
    }
    let status = net.status();
    let blk = Blkback::new();
    let mut vbds = Vec::new();
    for (i, img) in images.into_iter().enumerate() {
        let faults = DiskFaults {
            seed: seed ^ 0xd15c ^ ((i as u64) << 48),
            ..plan.site_disk
        };
        let options = VbdOptions::default().faults(faults);
        vbds.push(
            blk.add_vbd(&sim, site_dom, i as u32, Disk::memory(img), options)
                .unwrap(),
        );
    }
    let wdisk = blk
        .add_vbd(
            &sim,
            writer_dom,
            0,
            Disk::zeroed((BLOCKS as usize) * BLOCK),
            VbdOptions::default().faults(DiskFaults {
                seed: seed ^ 0x0003_717e_d15c,
                ..plan.writer_disk
            }),
        )
        .unwrap();

    // dom0: the backends, and the controller: crash the writer's disk when
    // planned, and stop the site once the clients are done.
    let events = plan.disk_events.clone();
    let crashes = Arc::new(AtomicU64::new(0));
    let (c, v, done) = (crashes.clone(), wdisk.clone(), clients_done.clone());
    let n_clients = client_doms.len();
    sim.spawn_dom0(move |p| async move {
        let controller = async {
            let start = p.timer().now();
            for (at, crash) in events {
                xenpal_sim::hal::time::sleep_until(p.timer(), start + at).await;
                if crash {
                    v.crash();
                } else {
                    v.restart();
                }
                c.fetch_add(1, Ordering::SeqCst);
            }
            while done.load(Ordering::SeqCst) < n_clients {
                sleep(p.timer(), Duration::from_millis(10)).await;
            }
            let path = format!("/local/domain/{}/control/shutdown", site_dom.0);
            let xs = p.xenstore().unwrap();
            xs.write(xenpal_sim::xen_pv::xenstore::TxId::NONE, &path, b"poweroff")
                .await
                .unwrap();
            core::future::pending::<()>().await;
        };
        let (n, b) = (pin!(net.serve(&p)), pin!(blk.serve(&p)));
        let _ = select(pin!(select(n, b)), pin!(controller)).await;
    })
    .unwrap();
    for d in [site_dom, writer_dom].iter().chain(&client_doms) {
        sim.unpause(*d).unwrap();
    }

    let run = sim.run_for(VIRTUAL_LIMIT);
    report.trace_hash = sim.trace_hash();
    report.virtual_time = Duration::from_nanos(run.now.as_nanos());
    report.crashes = crashes.load(Ordering::SeqCst);

    // No panic, no hang.
    for (d, exit) in &run.exits {
        if !matches!(exit, Exit::Returned | Exit::Shutdown(0)) {
            report.failures.push(format!(
                "domain {} ended with {exit:?}; its console:\n{}",
                d.0,
                sim.console_output(*d)
            ));
        }
    }
    let guests: Vec<DomId> = [site_dom, writer_dom]
        .into_iter()
        .chain(client_doms.iter().copied())
        .collect();
    for d in &guests {
        if run.alive.contains(d) {
            report.failures.push(format!(
                "domain {} still running after {VIRTUAL_LIMIT:?} simulated (a hang); its console:\n{}",
                d.0,
                sim.console_output(*d)
            ));
        }
    }
    // The site closed cleanly, its backends holding none of its grants.
    match site_result.lock().unwrap().take() {
        Some(Ok(_)) => {}
        // A disk that fails reads may fail the site's start (it gives up
        // on its first failed read of a volume): a clean error, there.
        Some(Err(site::SiteError::Fat(..) | site::SiteError::Disk(..)))
            if plan.site_disk.io_error > 0.0 =>
        {
            report.site_failed_cleanly = true;
        }
        Some(Err(e)) => report.failures.push(format!("the site failed: {e}")),
        None if report.failures.is_empty() => {
            report.failures.push("the site never finished".into());
        }
        None => {}
    }
    for (w, c) in outcomes.lock().unwrap().iter() {
        report.responses += w;
        report.cut_short += c;
    }
    // Flushed blocks are on the disk.
    let flushed = flushed.lock().unwrap();
    report.flushed_blocks = flushed.len() as u64;
    for (k, g) in flushed.iter() {
        match wdisk.read_durable(k * BLOCK as u64, BLOCK) {
            Ok(got) if got == block(seed, *k, *g) => {}
            Ok(_) => report.failures.push(format!(
                "block {k} (generation {g}) was flushed and is not on the disk"
            )),
            Err(e) => report.failures.push(format!("reading block {k} back: {e}")),
        }
    }
    // dom0 maps nothing once every guest is gone.
    let maps = sim.grant_mappings(DomId::DOM0).unwrap_or(0);
    if maps != 0 && run.alive.is_empty() {
        report
            .failures
            .push(format!("dom0 still maps {maps} grants"));
    }
    let snap = status.snapshot();
    for v in snap.vifs.values() {
        add_faults(&mut report.faults, &v.faults);
    }
    vbds.push(wdisk);
    for v in &vbds {
        add_disk_faults(&mut report.disk_faults, &v.stats().faults);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_bad_ones_are_refused() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = parse(&s(&["--seeds", "300", "--from", "0x10", "--jobs", "2"])).unwrap();
        assert_eq!((a.seeds, a.from, a.jobs, a.one), (300, 16, 2, false));
        let a = parse(&s(&["--seed", "0xfa17"])).unwrap();
        assert_eq!((a.seeds, a.from, a.one), (1, 0xfa17, true));
        assert!(parse(&s(&["--seeds"])).is_err());
        assert!(parse(&s(&["--seeds", "0"])).is_err());
        assert!(parse(&s(&["--seeds", "x"])).is_err());
        assert!(parse(&s(&["--bogus"])).is_err());
        assert!(parse(&s(&["--from", "0xffffffffffffffff", "--seeds", "2"])).is_err());
    }

    #[test]
    fn a_response_check_tells_right_cut_short_and_wrong() {
        let files = vec![("/a".to_string(), b"hello".to_vec())];
        let reqs = [(false, "/a".to_string()), (true, "/a".to_string())];
        let check = |raw: &[u8], n: usize| check_connection(&files, &reqs[..n], raw, false);
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(check(ok, 2), Ok((2, false)));
        assert_eq!(check(&ok[..40], 2), Ok((0, true)));
        assert_eq!(check(&ok[..50], 2), Ok((1, true)));
        assert_eq!(check(b"", 2), Ok((0, true)));
        assert!(check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhellp", 1).is_err());
        assert!(check(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 1).is_err());
        assert!(check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloX", 1).is_err());
        assert!(check(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhell", 1).is_err());
        assert!(check(b"garbage", 1).is_err());
        let missing = [(false, "/b".to_string())];
        let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
        assert_eq!(
            check_connection(&files, &missing, nf, false),
            Ok((1, false))
        );
        // A 500 is a clean error only where the site's disks fail.
        let err = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        assert!(check(err, 1).is_err());
        assert_eq!(
            check_connection(&files, &reqs[..1], err, true),
            Ok((0, true))
        );
    }

    /// A few seeds end to end, and one replayed: the same trace hash.
    #[test]
    fn seeds_pass_and_replay() {
        for seed in 1..=2 {
            let r = run_seed(seed);
            assert!(r.failures.is_empty(), "seed {seed}: {:#?}", r.failures);
            assert!(r.responses > 0 && r.flushed_blocks > 0, "{r:?}");
            if seed == 1 {
                let again = run_seed(seed);
                assert_eq!(
                    again.trace_hash, r.trace_hash,
                    "seed {seed} does not replay"
                );
            }
        }
    }
}
