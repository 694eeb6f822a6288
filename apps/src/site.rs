//! A static website as a unikernel: files from FAT disks (blkfront and
//! `embedded-sdmmc`), served over HTTP (netfront and `smoltcp`).
//!
//! This is the example to copy when starting your own: it uses only the
//! platform (`xenpal::Platform`, whatever the target) and the
//! drivers, so it runs unchanged in the simulator and on Xen.
//!
//! - Every disk the toolstack gives the guest (`device/vbd/*`) is a FAT
//!   volume; together they hold the site (a site too large for one image is
//!   split across several). At start the guest walks them all and indexes
//!   every file by its long name, case-insensitively; the first disk wins
//!   if two hold the same path.
//! - The network is vif 0 with a static address: `data/ip` in xenstore
//!   (e.g. `10.0.0.2/24`, written by the toolstack), else [`SiteConfig`]'s.
//! - `GET` and `HEAD` of `/path` serve the file (`/dir/` serves
//!   `/dir/index.html`), `404` if there is none. Connections are HTTP/1.1:
//!   kept open for the next request unless the client says `close` (or
//!   speaks HTTP/1.0 without `keep-alive`), with pipelined requests
//!   answered in order. Requests are untrusted: heads are bounded, paths
//!   normalised ([`crate::http`]).
//! - A burst of clients is accepted up to [`ListenerConfig::max_connections`]
//!   at once ([`Listener`] grows smoltcp's listening sockets as SYNs
//!   arrive); each connection's buffers are bounded, and one that makes no
//!   progress for [`SiteConfig::timeout`] (a slow request, an unread
//!   response, an idle keep-alive) is closed.
//! - Files are streamed from the disk into each socket's transmit buffer,
//!   never held whole in memory; reads go through [`ReadAhead`], 64 KiB
//!   per blkfront request.

use crate::http;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use embedded_sdmmc::{
    BlockDevice as SdBlockDevice, Mode, RawFile, RawVolume, TimeSource, Timestamp, VolumeIdx,
    VolumeManager,
};
use hal::DomId;
use hal::task::{Either, select};
use hal::time::{Clock, Instant};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};
use xen_pv::xenstore::TxId;
use xenpal::Platform;
use xenpal::net::{Listener, ListenerConfig, parse_cidr, smol_now};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, ReadAhead, vbd_ids};
use xenpal_drivers::fat;
use xenpal_drivers::net::{NetConfig, Netfront};

/// Blocks read at a time from a disk (64 KiB: one blkfront request, where
/// `embedded-sdmmc` alone would make 128).
const READ_AHEAD_BLOCKS: u32 = 128;
/// Longest sleep of the site's loop while connections are open (their
/// idle timeouts are checked as it wakes).
const BUSY_WAKE: Duration = Duration::from_millis(100);
/// Longest sleep with no connection open.
const IDLE_WAKE: Duration = Duration::from_secs(10);

/// Fewest read-ahead windows kept per disk (512 KiB), so a few files read
/// in turn (concurrent downloads) do not evict each other's.
const READ_AHEAD_WINDOWS_MIN: usize = 8;
/// Most read-ahead windows kept, all disks together (8 MiB): files read
/// again are served from memory, as a page cache would, within a bound.
const READ_AHEAD_WINDOWS_MAX: usize = 128;

/// Heap left to sockets and requests before the read cache grows past
/// its minimum.
const READ_AHEAD_RESERVE: usize = 4 << 20;

/// Read-ahead windows for each of `disks` disks: half of the heap free now
/// beyond [`READ_AHEAD_RESERVE`], between [`READ_AHEAD_WINDOWS_MIN`] per
/// disk and [`READ_AHEAD_WINDOWS_MAX`] in all. Windows are allocated only
/// as they fill, and only while the heap has room (see [`ReadAhead`]); the
/// bound keeps the cache from taking what sockets and requests need later.
fn read_ahead_windows(disks: usize) -> usize {
    let window = READ_AHEAD_BLOCKS as usize * 512;
    // How many windows the heap could give now (taken one by one, as the
    // cache would, and given straight back), up to what the bound needs.
    let limit = READ_AHEAD_RESERVE / window + 2 * READ_AHEAD_WINDOWS_MAX;
    let mut taken: Vec<Vec<u8>> = Vec::new();
    if taken.try_reserve_exact(limit).is_ok() {
        while taken.len() < limit {
            let mut w = Vec::new();
            if w.try_reserve_exact(window).is_err() {
                break;
            }
            taken.push(w);
        }
    }
    let lo = taken.len();
    drop(taken);
    let spare = (lo * window).saturating_sub(READ_AHEAD_RESERVE) / 2;
    let disks = disks.max(1);
    (spare / window / disks).clamp(
        READ_AHEAD_WINDOWS_MIN,
        (READ_AHEAD_WINDOWS_MAX / disks).max(READ_AHEAD_WINDOWS_MIN),
    )
}

/// How the site runs.
#[derive(Clone, Debug)]
pub struct SiteConfig {
    /// Address and prefix, unless `data/ip` in xenstore says otherwise.
    pub address: Ipv4Cidr,
    /// Default route, unless `data/gateway` says otherwise (`None`: only
    /// the local network).
    pub gateway: Option<Ipv4Address>,
    /// TCP port.
    pub port: u16,
    /// Connections at once and their buffers (a burst of clients is
    /// accepted up to `max_connections`: see [`Listener`]).
    pub listener: ListenerConfig,
    /// How long a connection may go without progress: a client that takes
    /// longer to send a request (slowloris), to read its response, or that
    /// keeps an idle connection open, is closed.
    pub timeout: Duration,
    /// Stop after this many responses (`None`: serve forever).
    pub max_requests: Option<u64>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 2), 24),
            gateway: Some(Ipv4Address::new(10, 0, 0, 1)),
            port: 80,
            listener: ListenerConfig::default(),
            timeout: Duration::from_secs(10),
            max_requests: None,
        }
    }
}

/// Why the site could not start.
#[derive(Debug)]
pub enum SiteError {
    /// The guest has no xenstore (no devices without it).
    NoXenstore,
    /// A disk could not be connected (which, why).
    Disk(String, String),
    /// A FAT volume could not be read (which disk, why).
    Fat(usize, String),
    /// The network could not come up.
    Net(String),
    /// `data/ip` or `data/gateway` is malformed.
    BadConfig(String),
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteError::NoXenstore => f.write_str("no xenstore: the site needs its vif and disks"),
            SiteError::Disk(id, why) => write!(f, "disk {id}: {why}"),
            SiteError::Fat(i, why) => write!(f, "FAT volume on disk {i}: {why}"),
            SiteError::Net(why) => write!(f, "network: {why}"),
            SiteError::BadConfig(why) => write!(f, "configuration: {why}"),
        }
    }
}

/// Timestamps for `embedded-sdmmc` (the site is read-only; any will do).
#[derive(Copy, Clone, Debug, Default)]
pub struct FixedTime;

impl TimeSource for FixedTime {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 56,
            zero_indexed_month: 0,
            zero_indexed_day: 0,
            hours: 0,
            minutes: 0,
            seconds: 0,
        }
    }
}

/// Where a file is: its disk, the short names of the path to it, its size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Located {
    disk: usize,
    shorts: Vec<String>,
    size: u32,
}

/// Largest number of files indexed, and directory depth walked: a disk is
/// input, and must not exhaust memory or stack.
const MAX_FILES: usize = 20_000;
const MAX_DEPTH: usize = 12;

fn fat_err<E: fmt::Debug>(disk: usize) -> impl Fn(E) -> SiteError {
    move |e| SiteError::Fat(disk, format!("{e:?}"))
}

/// Files open at once per disk: each streamed response holds one.
const OPEN_FILES: usize = 32;

/// The FAT layer over one disk.
type Vm<D> = VolumeManager<D, FixedTime, 4, OPEN_FILES, 1>;
type Dir<'a, D> = embedded_sdmmc::Directory<'a, D, FixedTime, 4, OPEN_FILES, 1>;

/// One disk's volume, open for the guest's life.
struct Volume<D: SdBlockDevice> {
    vm: Vm<D>,
    raw: RawVolume,
    checked: fat::Volume,
}

fn index_dir<D: SdBlockDevice, C: SdBlockDevice>(
    dir: &Dir<'_, D>,
    check: (&fat::Volume, &C),
    prefix: &str,
    shorts: &[String],
    disk: usize,
    depth: usize,
    out: &mut BTreeMap<String, Located>,
) -> Result<(), SiteError>
where
    D::Error: fmt::Debug,
    C::Error: fmt::Debug,
{
    // Only entries whose clusters embedded-sdmmc can follow (xenpal_drivers::fat).
    let (listed, refused, why) =
        fat::list_dir(dir, check.0, check.1, usize::MAX).map_err(fat_err(disk))?;
    if let Some(why) = why {
        log::warn!("site: disk {disk}: {refused} entries under {prefix}/ left out: {why}");
    }
    for l in listed {
        let short = l.entry.name.to_string();
        let name = l.long_name.unwrap_or_else(|| short.to_ascii_lowercase());
        let (is_dir, size) = (l.entry.attributes.is_directory(), l.entry.size);
        let path = format!("{prefix}/{}", name.to_lowercase());
        let mut here = shorts.to_vec();
        here.push(short.clone());
        if is_dir {
            if depth < MAX_DEPTH {
                let sub = dir.open_dir(short.as_str()).map_err(fat_err(disk))?;
                index_dir(&sub, check, &path, &here, disk, depth + 1, out)?;
            }
        } else if out.len() < MAX_FILES {
            out.entry(path).or_insert(Located {
                disk,
                shorts: here,
                size,
            });
        }
    }
    Ok(())
}

/// Why a file could not be served.
enum OpenError {
    /// Every file handle of its disk is in use by other responses: worth a
    /// retry later.
    Busy,
    /// The volume or the file could not be read.
    Fat(String),
}

/// Open a file for streaming. The directories on the way are closed again.
fn open_file<D: SdBlockDevice>(v: &Volume<D>, loc: &Located) -> Result<RawFile, OpenError>
where
    D::Error: fmt::Debug,
{
    let fat = |e: embedded_sdmmc::Error<D::Error>| match e {
        embedded_sdmmc::Error::TooManyOpenFiles | embedded_sdmmc::Error::TooManyOpenDirs => {
            OpenError::Busy
        }
        e => OpenError::Fat(format!("{e:?}")),
    };
    let mut dir = v.vm.open_root_dir(v.raw).map_err(fat)?.to_directory(&v.vm);
    let (name, dirs) = loc
        .shorts
        .split_last()
        .ok_or(OpenError::Fat("empty path".into()))?;
    for d in dirs {
        dir = dir.open_dir(d.as_str()).map_err(fat)?;
    }
    let file = dir
        .open_file_in_dir(name.as_str(), Mode::ReadOnly)
        .map_err(fat)?;
    Ok(file.to_raw_file())
}

/// A file being sent: which disk, its (shared) handle, where this
/// response is in it and the bytes still to send.
#[derive(Clone, Copy, Debug)]
struct Body {
    disk: usize,
    file: RawFile,
    offset: u64,
    left: u64,
}

/// A file open for one or more responses.
struct OpenFile {
    disk: usize,
    /// Its short-name path on the disk: which file it is.
    shorts: Vec<String>,
    file: RawFile,
    /// Where the handle's position is (each response keeps its own offset:
    /// the handle seeks when another response read last).
    pos: u64,
    /// Held by a connection in this pass.
    held: bool,
}

/// Every file open for a response. `embedded-sdmmc` opens a file once, so
/// responses sending the same file at once (two clients downloading it)
/// share its handle. A file is closed once no connection held it during a
/// whole pass over the connections: its responses ended, or their
/// connections vanished (reset, timed out, reused by the listener).
#[derive(Default)]
struct OpenFiles {
    files: Vec<OpenFile>,
}

impl OpenFiles {
    /// The handle of `loc`'s file, shared if a response has it open.
    fn open<D: SdBlockDevice>(&mut self, v: &Volume<D>, loc: &Located) -> Result<RawFile, OpenError>
    where
        D::Error: fmt::Debug,
    {
        if let Some(f) = self
            .files
            .iter_mut()
            .find(|f| f.disk == loc.disk && f.shorts == loc.shorts)
        {
            f.held = true;
            return Ok(f.file);
        }
        let file = open_file(v, loc)?;
        self.files.push(OpenFile {
            disk: loc.disk,
            shorts: loc.shorts.clone(),
            file,
            pos: 0,
            held: true,
        });
        Ok(file)
    }

    fn find(&mut self, b: &Body) -> Option<&mut OpenFile> {
        self.files
            .iter_mut()
            .find(|f| f.file == b.file && f.disk == b.disk)
    }

    /// A connection still holds `b`.
    fn held(&mut self, b: &Body) {
        if let Some(f) = self.find(b) {
            f.held = true;
        }
    }

    /// Close what no connection held since the last sweep.
    fn sweep<D: SdBlockDevice>(&mut self, vols: &[Volume<D>]) {
        self.files.retain_mut(|f| {
            if !f.held {
                let _ = vols[f.disk].vm.close_file(f.file);
                return false;
            }
            f.held = false;
            true
        });
    }
}

/// One connection's progress: requests received and not yet answered
/// (pipelining), the response being sent, and when it last moved.
#[derive(Default)]
struct Conn {
    /// Bytes received and not yet parsed: the rest of the current head and
    /// any requests pipelined behind it (at most [`http::MAX_HEAD`] + 1 are
    /// read ahead).
    inbuf: Vec<u8>,
    /// The response head (or whole response) being sent, and how much of
    /// it went out.
    reply: Vec<u8>,
    sent: usize,
    /// The file to stream after `reply`, if any.
    body: Option<Body>,
    /// Close once `reply` is out (the client asked, or the request was bad).
    close_after: bool,
    /// When the connection last made progress (a request or response byte
    /// moved); `None` until first seen.
    since: Option<Instant>,
}

impl Conn {
    /// Whether a response is still going out.
    fn busy(&self) -> bool {
        self.sent < self.reply.len() || self.body.is_some()
    }
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Files in the index.
    pub files: usize,
    /// Disks read.
    pub disks: usize,
    /// Responses sent (any status).
    pub responses: u64,
    /// Of which `404`.
    pub not_found: u64,
}

/// Serve the site until [`SiteConfig::max_requests`] responses went out (or
/// forever), then close the vif and the disks. Logs what it does.
///
/// Errors: [`SiteError`] if the disks, the volumes or the network cannot
/// be set up, or if a backend still holds grants or pages after closing.
pub async fn run(p: &Platform, cfg: SiteConfig) -> Result<SiteStats, SiteError> {
    serve_until(p, cfg, core::future::pending()).await
}

/// [`run`], and stop when `stop` completes too (say, on the toolstack's
/// request: [`xenpal::control::shutdown_request`]): connections finish the
/// requests they are in (for at most [`SiteConfig::timeout`]), then the
/// vif and the disks are closed as after the last of
/// [`SiteConfig::max_requests`].
///
/// Errors: as [`run`].
pub async fn serve_until<S>(p: &Platform, cfg: SiteConfig, stop: S) -> Result<SiteStats, SiteError>
where
    S: core::future::Future<Output = ()>,
{
    let xs = p.xenstore().ok_or(SiteError::NoXenstore)?.clone();
    let mut address = cfg.address;
    let mut gateway = cfg.gateway;
    if let Ok(v) = xs.read_string(TxId::NONE, "data/ip").await {
        address =
            parse_cidr(&v, 24).ok_or_else(|| SiteError::BadConfig(format!("data/ip {v:?}")))?;
    }
    if let Ok(v) = xs.read_string(TxId::NONE, "data/gateway").await {
        let ip: core::net::Ipv4Addr = v
            .trim()
            .parse()
            .map_err(|_| SiteError::BadConfig(format!("data/gateway {v:?}")))?;
        gateway = Some(ip);
    }

    // Disks and the index.
    let ids = vbd_ids(p)
        .await
        .map_err(|e| SiteError::Disk("*".into(), e.to_string()))?;
    let mut disks = Vec::new();
    for id in &ids {
        let d = Blkfront::open(p, id, BlkfrontConfig::default())
            .await
            .map_err(|e| SiteError::Disk(id.clone(), e.to_string()))?;
        disks.push(d);
    }
    let mut vols = Vec::new();
    let windows = read_ahead_windows(disks.len());
    for (i, d) in disks.iter().enumerate() {
        // The disk is another domain's: check what embedded-sdmmc trusts.
        let checked = fat::check_volume(d, 0).map_err(fat_err(i))?;
        let vm: Vm<_> = VolumeManager::new_with_limits(
            ReadAhead::new(d, READ_AHEAD_BLOCKS, windows),
            FixedTime,
            5000,
        );
        let raw = vm.open_raw_volume(VolumeIdx(0)).map_err(fat_err(i))?;
        vols.push(Volume { vm, raw, checked });
    }
    let mut index = BTreeMap::new();
    for (i, v) in vols.iter().enumerate() {
        let root =
            v.vm.open_root_dir(v.raw)
                .map_err(fat_err(i))?
                .to_directory(&v.vm);
        index_dir(&root, (&v.checked, &disks[i]), "", &[], i, 0, &mut index)?;
    }
    let stats = SiteStats {
        files: index.len(),
        disks: disks.len(),
        ..Default::default()
    };
    log::info!(
        "site: {} files on {} disk(s), read cache up to {} KiB each",
        stats.files,
        stats.disks,
        windows * READ_AHEAD_BLOCKS as usize / 2
    );

    // Network.
    let deadline = p.timer().now() + Duration::from_secs(30);
    Netfront::wait_for_device(p, "0", deadline)
        .await
        .map_err(|e| SiteError::Net(e.to_string()))?;
    let mut nic = Netfront::open(p, "0", NetConfig::default())
        .await
        .map_err(|e| SiteError::Net(e.to_string()))?;
    nic.wait_up(deadline)
        .await
        .map_err(|e| SiteError::Net(e.to_string()))?;
    let mut config = Config::new(nic.hardware_address());
    config.random_seed = u64::from(p.domid().0.max(1)) * 0x9e37_79b9 + 7;
    let mut iface = Interface::new(config, &mut nic, smol_now(p.timer()));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::Ipv4(address));
    });
    if let Some(gw) = gateway {
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
    let mut sockets = SocketSet::new(Vec::new());
    let mut listener: Listener<Conn> = Listener::new(cfg.port, cfg.listener, &mut sockets);
    log::info!("site: listening on {}:{}", address.address(), cfg.port);
    // Clients that asked for our address while we booted hear it now.
    xenpal::net::announce(&mut nic, smol_now(p.timer()), address.address());
    let mut site = Site {
        index: &index,
        vols: &vols,
        open: OpenFiles::default(),
        stats,
        me: p.domid(),
    };

    let mut stop = core::pin::pin!(stop);
    // When `stop` completed, if it did.
    let mut stopped: Option<Instant> = None;
    loop {
        listener.poll(&mut iface, smol_now(p.timer()), &mut nic, &mut sockets);
        let mut connections = 0usize;
        listener.for_each(&mut sockets, |sock, conn| {
            connections += 1;
            // Each connection's own time: a pass over many connections
            // must not make the last ones look idle.
            serve(sock, conn, p.timer().now(), cfg.timeout, &mut site);
        });
        // Files of connections that are gone.
        site.open.sweep(&vols);
        let done = cfg.max_requests.is_some_and(|m| site.stats.responses >= m) || stopped.is_some();
        let late = stopped.is_some_and(|t| p.timer().now() >= t + cfg.timeout);
        if done && (late || listener.all(&sockets, |c| !c.busy())) {
            // Let the last bytes and FINs go out.
            let end = p.timer().now() + Duration::from_millis(200);
            while p.timer().now() < end {
                listener.poll(&mut iface, smol_now(p.timer()), &mut nic, &mut sockets);
                nic.wait(p.timer().now() + Duration::from_millis(10)).await;
            }
            // Close everything; a backend still holding our grants (or
            // pages) after closing is an error the caller should see.
            nic.close(p.timer().now() + Duration::from_secs(5))
                .await
                .map_err(|e| SiteError::Net(format!("closing the vif: {e}")))?;
            for (d, id) in disks.iter().zip(&ids) {
                d.close()
                    .await
                    .map_err(|e| SiteError::Disk(id.clone(), format!("closing: {e}")))?;
            }
            return Ok(site.stats);
        }
        let now = smol_now(p.timer());
        // Connections are looked at every 100 ms for their idle timeout;
        // with none, only a packet, the backend or `stop` has anything for
        // us, and each wakes us: an idle site sleeps (a host of 100 idle
        // guests would otherwise take 1,000 wake-ups a second).
        let most = if connections > 0 || stopped.is_some() {
            BUSY_WAKE
        } else {
            IDLE_WAKE
        };
        let delay = iface
            .poll_delay(now, &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(most)
            .min(most);
        let at: Instant = p.timer().now() + delay;
        if stopped.is_some() {
            nic.wait(at).await;
        } else if let Either::Second(()) =
            select(core::pin::pin!(nic.wait(at)), stop.as_mut()).await
        {
            log::info!("site: stopping");
            stopped = Some(p.timer().now());
        }
    }
}

/// Move one connection along: read what the client sent (up to one head
/// ahead), answer complete requests in order, send the head and stream the
/// file straight from the disk into the socket's buffer, and close when
/// the client asked, the request was bad, the client closed its side, or
/// nothing moved for `timeout`.
fn serve<D: SdBlockDevice>(
    sock: &mut tcp::Socket<'static>,
    conn: &mut Conn,
    now: Instant,
    timeout: Duration,
    site: &mut Site<'_, D>,
) where
    D::Error: fmt::Debug,
{
    if let Some(b) = &conn.body {
        site.open.held(b);
    }
    if !sock.is_open() {
        return;
    }
    conn.since.get_or_insert(now);
    // A few rounds, so small pipelined responses share one poll.
    for _ in 0..8 {
        let mut moved = false;
        while sock.can_recv() && conn.inbuf.len() <= http::MAX_HEAD {
            let room = http::MAX_HEAD + 1 - conn.inbuf.len();
            if let Ok(n) = sock.recv(|b| {
                let n = b.len().min(room);
                conn.inbuf.extend_from_slice(&b[..n]);
                (n, n)
            }) {
                moved |= n > 0;
                if n == 0 {
                    break;
                }
            } else {
                break;
            }
        }
        if !conn.busy() && !conn.close_after {
            conn.reply.clear();
            conn.sent = 0;
            if let Some(n) = http::head_end(&conn.inbuf) {
                let r = site.answer(&conn.inbuf[..n]);
                conn.inbuf.drain(..n);
                conn.reply = r.head;
                conn.body = r.body;
                conn.close_after = !r.keep;
                moved = true;
            } else if conn.inbuf.len() > http::MAX_HEAD {
                let r = site.answer(&conn.inbuf);
                conn.inbuf.clear();
                conn.reply = r.head;
                conn.close_after = true;
                moved = true;
            }
        }
        if conn.sent < conn.reply.len()
            && sock.can_send()
            && let Ok(n) = sock.send_slice(&conn.reply[conn.sent..])
        {
            conn.sent += n;
            moved |= n > 0;
        }
        if conn.sent == conn.reply.len()
            && let Some(b) = &mut conn.body
            && sock.can_send()
        {
            let r = sock
                .send(|buf| match site.read(b, buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                })
                .unwrap_or_else(|e| Err(format!("socket: {e:?}")));
            match r {
                Ok(n) => {
                    b.left -= n as u64;
                    b.offset += n as u64;
                    moved |= n > 0;
                }
                Err(why) => {
                    // Too late for an error status: cut the response short,
                    // which the client sees against Content-Length.
                    log::error!("site: reading from disk {}: {why}; resetting", b.disk);
                    b.left = 0;
                    sock.abort();
                }
            }
            if b.left == 0 {
                // The next sweep closes the file if no other response
                // holds it.
                conn.body = None;
            }
        }
        if moved {
            conn.since = Some(now);
        } else {
            break;
        }
    }
    let idle = !conn.busy();
    let stalled = conn
        .since
        .is_some_and(|t| now.saturating_since(t) >= timeout);
    if idle && (conn.close_after || !sock.may_recv()) {
        // Done: the client asked to close, sent a bad request, or closed
        // its side with nothing left to answer. A client that does not
        // finish closing within `timeout` is reset.
        if sock.may_send() {
            sock.close();
            conn.close_after = true;
            conn.since = Some(now);
        } else if stalled {
            sock.abort();
        }
    } else if stalled {
        if idle {
            // A slow or idle client (slowloris, or a kept-alive connection
            // left open): say goodbye, with a 408 if it was partway
            // through a request.
            if !conn.inbuf.is_empty() {
                conn.inbuf.clear();
                conn.reply = http::error_page((408, "Request Timeout"), false, false);
                conn.sent = sock.send_slice(&conn.reply).unwrap_or(0);
            }
            sock.close();
            conn.close_after = true;
            conn.since = Some(now);
        } else {
            // A client that does not read its response.
            sock.abort();
        }
    }
}

/// A response: its head (or the whole of it), the file to stream after,
/// and whether the connection stays open.
struct Response {
    head: Vec<u8>,
    body: Option<Body>,
    keep: bool,
}

impl Response {
    fn whole(bytes: Vec<u8>, keep: bool) -> Self {
        Response {
            head: bytes,
            body: None,
            keep,
        }
    }
}

/// What the connections share: the index, the disks, the open files and
/// the counters.
struct Site<'a, D: SdBlockDevice> {
    index: &'a BTreeMap<String, Located>,
    vols: &'a [Volume<D>],
    open: OpenFiles,
    stats: SiteStats,
    me: DomId,
}

impl<D: SdBlockDevice> Site<'_, D>
where
    D::Error: fmt::Debug,
{
    /// The response to one request head.
    fn answer(&mut self, head: &[u8]) -> Response {
        self.stats.responses += 1;
        let req = match http::parse(head) {
            Ok(r) => r,
            Err(e) => {
                let s = e.status();
                log::info!("site: {} {} for a bad request", s.0, s.1);
                return Response::whole(http::error_page(s, false, false), false);
            }
        };
        let mut path = req.path.to_lowercase();
        if path.ends_with('/') {
            path.push_str("index.html");
        }
        let found = self
            .index
            .get(&path)
            .or_else(|| self.index.get(&format!("{path}/index.html")));
        let keep = req.keep_alive;
        let Some(loc) = found else {
            self.stats.not_found += 1;
            log::info!("site: 404 {}", req.path);
            return Response::whole(
                http::error_page((404, "Not Found"), req.head_only, keep),
                keep,
            );
        };
        let head = http::head(
            (200, "OK"),
            http::content_type(&path),
            u64::from(loc.size),
            keep,
        );
        if req.head_only || loc.size == 0 {
            return Response::whole(head, keep);
        }
        match self.open.open(&self.vols[loc.disk], loc) {
            Ok(file) => {
                log::info!(
                    "site: 200 {} ({} bytes, disk {}) for {}",
                    req.path,
                    loc.size,
                    loc.disk,
                    self.me
                );
                Response {
                    head,
                    body: Some(Body {
                        disk: loc.disk,
                        file,
                        offset: 0,
                        left: u64::from(loc.size),
                    }),
                    keep,
                }
            }
            Err(OpenError::Busy) => {
                log::warn!(
                    "site: 503 {}: all {OPEN_FILES} files of disk {} are being sent",
                    req.path,
                    loc.disk
                );
                Response::whole(
                    http::error_page((503, "Service Unavailable"), false, keep),
                    keep,
                )
            }
            Err(OpenError::Fat(why)) => {
                log::error!("site: opening {}: {why}", req.path);
                Response::whole(
                    http::error_page((500, "Internal Server Error"), false, false),
                    false,
                )
            }
        }
    }

    /// Read the next bytes of `b` into `buf` (at most what is left).
    ///
    /// Errors: the FAT layer's, or a file shorter than its directory
    /// entry said (as a message).
    fn read(&mut self, b: &Body, buf: &mut [u8]) -> Result<usize, String> {
        let want = buf.len().min(usize::try_from(b.left).unwrap_or(usize::MAX));
        let vm = &self.vols[b.disk].vm;
        let f = self
            .open
            .find(b)
            .ok_or_else(|| "the file was closed under its response".to_string())?;
        if f.pos != b.offset {
            let to = u32::try_from(b.offset).map_err(|_| "offset beyond FAT's 4 GiB")?;
            vm.file_seek_from_start(b.file, to)
                .map_err(|e| format!("{e:?}"))?;
            f.pos = b.offset;
        }
        let n = vm
            .read(b.file, &mut buf[..want])
            .map_err(|e| format!("{e:?}"))?;
        f.pos += n as u64;
        if n == 0 && want > 0 {
            return Err(format!("the file ends {} bytes early", b.left));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_cache_is_bounded_in_all_and_never_below_the_minimum() {
        // The host's heap has room for the bound many times over.
        assert_eq!(read_ahead_windows(1), READ_AHEAD_WINDOWS_MAX);
        assert_eq!(read_ahead_windows(2), READ_AHEAD_WINDOWS_MAX / 2);
        assert_eq!(read_ahead_windows(0), READ_AHEAD_WINDOWS_MAX);
        assert_eq!(read_ahead_windows(1000), READ_AHEAD_WINDOWS_MIN);
    }
}
