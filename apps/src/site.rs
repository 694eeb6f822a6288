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

use crate::http;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};

use alloc::vec::Vec;
use core::fmt;
use core::ops::ControlFlow;
use core::time::Duration;
use embedded_sdmmc::{
    BlockDevice as SdBlockDevice, LfnBuffer, Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager,
};
use hal::DomId;
use hal::time::{Clock, Instant};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};
use xen_pv::xenstore::TxId;
use xenpal::Platform;
use xenpal::net::{Listener, ListenerConfig, parse_cidr, smol_now};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::net::{NetConfig, Netfront};

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

type Dir<'a, D> = embedded_sdmmc::Directory<'a, D, FixedTime, 4, 4, 1>;

fn index_dir<D: SdBlockDevice>(
    dir: &Dir<'_, D>,
    prefix: &str,
    shorts: &[String],
    disk: usize,
    depth: usize,
    out: &mut BTreeMap<String, Located>,
) -> Result<(), SiteError>
where
    D::Error: fmt::Debug,
{
    let mut storage = [0u8; 256];
    let mut lfn = LfnBuffer::new(&mut storage);
    let mut entries = Vec::new();
    dir.iterate_dir_lfn(&mut lfn, |e, long| {
        let short = e.name.to_string();
        if !e.attributes.is_volume() && short != "." && short != ".." {
            let name = long
                .map(String::from)
                .unwrap_or_else(|| short.to_ascii_lowercase());
            entries.push((short, name, e.attributes.is_directory(), e.size));
        }
        ControlFlow::Continue(())
    })
    .map_err(fat_err(disk))?;
    for (short, name, is_dir, size) in entries {
        let path = format!("{prefix}/{}", name.to_lowercase());
        let mut here = shorts.to_vec();
        here.push(short.clone());
        if is_dir {
            if depth < MAX_DEPTH {
                let sub = dir.open_dir(short.as_str()).map_err(fat_err(disk))?;
                index_dir(&sub, &path, &here, disk, depth + 1, out)?;
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
enum ReadError {
    /// Not enough memory for it now (other responses hold it): worth a
    /// retry later.
    NoMemory,
    /// The volume or the file could not be read.
    Fat(String),
}

/// Append a whole file to `out`. The memory is reserved first, fallibly:
/// a burst of clients asking for large files gets [`ReadError::NoMemory`]
/// (and a 503), not a guest that aborts.
fn read_file_into<D: SdBlockDevice>(
    vm: &VolumeManager<D, FixedTime, 4, 4, 1>,
    loc: &Located,
    out: &mut Vec<u8>,
) -> Result<(), ReadError>
where
    D::Error: fmt::Debug,
{
    let fat = |e: &dyn fmt::Debug| ReadError::Fat(format!("{e:?}"));
    let volume = vm.open_volume(VolumeIdx(0)).map_err(|e| fat(&e))?;
    let mut dir = volume.open_root_dir().map_err(|e| fat(&e))?;
    let (name, dirs) = loc
        .shorts
        .split_last()
        .ok_or(ReadError::Fat("empty path".into()))?;
    for d in dirs {
        dir = dir.open_dir(d.as_str()).map_err(|e| fat(&e))?;
    }
    let file = dir
        .open_file_in_dir(name.as_str(), Mode::ReadOnly)
        .map_err(|e| fat(&e))?;
    let size = usize::try_from(loc.size).map_err(|_| ReadError::NoMemory)?;
    out.try_reserve_exact(size)
        .map_err(|_| ReadError::NoMemory)?;
    let start = out.len();
    out.resize(start + size, 0);
    let mut at = start;
    while at < out.len() {
        let n = file.read(&mut out[at..]).map_err(|e| fat(&e))?;
        if n == 0 {
            break;
        }
        at += n;
    }
    if at != out.len() {
        return Err(ReadError::Fat(format!(
            "{} bytes where the directory says {size}",
            at - start
        )));
    }
    Ok(())
}

/// One connection's progress: requests received and not yet answered
/// (pipelining), the response being sent, and when it last moved.
#[derive(Default)]
struct Conn {
    /// Bytes received and not yet parsed: the rest of the current head and
    /// any requests pipelined behind it (at most [`http::MAX_HEAD`] + 1 are
    /// read ahead).
    inbuf: Vec<u8>,
    /// The response being sent, and how much of it went out.
    reply: Vec<u8>,
    sent: usize,
    /// Close once `reply` is out (the client asked, or the request was bad).
    close_after: bool,
    /// When the connection last made progress (a request or response byte
    /// moved); `None` until first seen.
    since: Option<Instant>,
}

impl Conn {
    /// Whether a response is still going out.
    fn busy(&self) -> bool {
        self.sent < self.reply.len()
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
    let vms: Vec<_> = disks
        .iter()
        .map(|d| VolumeManager::<_, _, 4, 4, 1>::new(d, FixedTime))
        .collect();
    let mut index = BTreeMap::new();
    for (i, vm) in vms.iter().enumerate() {
        let volume = vm.open_volume(VolumeIdx(0)).map_err(fat_err(i))?;
        let root = volume.open_root_dir().map_err(fat_err(i))?;
        index_dir(&root, "", &[], i, 0, &mut index)?;
    }
    let mut stats = SiteStats {
        files: index.len(),
        disks: disks.len(),
        ..Default::default()
    };
    log::info!("site: {} files on {} disk(s)", stats.files, stats.disks);

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
    let me = p.domid();

    loop {
        let now = p.timer().now();
        listener.poll(&mut iface, smol_now(p.timer()), &mut nic, &mut sockets);
        listener.for_each(&mut sockets, |sock, conn| {
            serve(sock, conn, now, cfg.timeout, |head| {
                answer(head, &index, &vms, &mut stats, me)
            });
        });
        if cfg.max_requests.is_some_and(|m| stats.responses >= m)
            && listener.all(&sockets, |c| !c.busy())
        {
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
            return Ok(stats);
        }
        let now = smol_now(p.timer());
        let delay = iface
            .poll_delay(now, &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let at: Instant = p.timer().now() + delay;
        nic.wait(at).await;
    }
}

/// Move one connection along: read what the client sent (up to one head
/// ahead), answer complete requests in order with `answer` (which returns
/// the response and whether the connection stays open), send, and close
/// when the client asked, the request was bad, the client closed its side,
/// or nothing moved for `timeout`.
fn serve(
    sock: &mut tcp::Socket<'static>,
    conn: &mut Conn,
    now: Instant,
    timeout: Duration,
    mut answer: impl FnMut(&[u8]) -> (Vec<u8>, bool),
) {
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
                let (reply, keep) = answer(&conn.inbuf[..n]);
                conn.inbuf.drain(..n);
                conn.reply = reply;
                conn.close_after = !keep;
                moved = true;
            } else if conn.inbuf.len() > http::MAX_HEAD {
                let (reply, _) = answer(&conn.inbuf);
                conn.inbuf.clear();
                conn.reply = reply;
                conn.close_after = true;
                moved = true;
            }
        }
        if conn.busy()
            && sock.can_send()
            && let Ok(n) = sock.send_slice(&conn.reply[conn.sent..])
        {
            conn.sent += n;
            moved |= n > 0;
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

/// The response to one request head, and whether the connection stays
/// open after it.
fn answer<D: SdBlockDevice>(
    head: &[u8],
    index: &BTreeMap<String, Located>,
    vms: &[VolumeManager<D, FixedTime, 4, 4, 1>],
    stats: &mut SiteStats,
    me: DomId,
) -> (Vec<u8>, bool)
where
    D::Error: fmt::Debug,
{
    stats.responses += 1;
    let req = match http::parse(head) {
        Ok(r) => r,
        Err(e) => {
            let s = e.status();
            log::info!("site: {} {} for a bad request", s.0, s.1);
            return (http::error_page(s, false, false), false);
        }
    };
    let mut path = req.path.to_lowercase();
    if path.ends_with('/') {
        path.push_str("index.html");
    }
    let found = index
        .get(&path)
        .or_else(|| index.get(&format!("{path}/index.html")));
    match found {
        Some(loc) => {
            let keep = req.keep_alive;
            let mut reply = http::head(
                (200, "OK"),
                http::content_type(&path),
                u64::from(loc.size),
                keep,
            );
            if req.head_only {
                return (reply, keep);
            }
            match read_file_into(&vms[loc.disk], loc, &mut reply) {
                Ok(()) => {
                    log::info!(
                        "site: 200 {} ({} bytes, disk {}) for {me}",
                        req.path,
                        loc.size,
                        loc.disk
                    );
                    (reply, keep)
                }
                Err(ReadError::NoMemory) => {
                    drop(reply);
                    log::warn!(
                        "site: 503 {} ({} bytes): no memory for it now",
                        req.path,
                        loc.size
                    );
                    (
                        http::error_page((503, "Service Unavailable"), false, keep),
                        keep,
                    )
                }
                Err(ReadError::Fat(why)) => {
                    log::error!("site: reading {}: {why}", req.path);
                    (
                        http::error_page((500, "Internal Server Error"), false, false),
                        false,
                    )
                }
            }
        }
        None => {
            stats.not_found += 1;
            log::info!("site: 404 {}", req.path);
            (
                http::error_page((404, "Not Found"), req.head_only, req.keep_alive),
                req.keep_alive,
            )
        }
    }
}
