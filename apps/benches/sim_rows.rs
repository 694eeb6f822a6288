//! The simulator's rows of `cargo xtask bench`, each against its baseline in
//! the same process, interleaved (ours, baseline, ours, ...):
//!
//! - `sim-tcp`: a TCP stream from one simulated guest to another (smoltcp
//!   on netfront in each, netback and the virtual switch in dom0), in bytes
//!   per second. Baseline: smoltcp to smoltcp over smoltcp's own
//!   [`Loopback`] device (one interface, both sockets, as smoltcp's
//!   `loopback` example), in one thread. Both use the same socket buffers
//!   ([`TCP_BUFFER`]) and check every byte they receive. A third figure,
//!   `baseline-mtu1500`, is the baseline again over a loopback that looks
//!   like netfront to smoltcp (1500-byte MTU, checksums computed and
//!   checked), to separate what the Xen path costs from what smaller
//!   packets cost.
//! - `sim-blk-read`: a guest reads one large file sequentially through
//!   blkfront, [`ReadAhead`] (as `apps/src/site.rs` sets it up) and
//!   `embedded-sdmmc`, from a FAT image file that blkback in dom0 serves,
//!   in bytes per second. Baseline: `pread` of the same bytes from the same
//!   image file on the host, in the same chunks ([`READ_CHUNK`]). Both
//!   check every byte.
//! - `sim-density`: `N` guests, each connected to xenstore and holding one
//!   end of an interdomain event channel (pairs: one allocates, the other
//!   binds and notifies, both write `data/ready` and stay blocked), built
//!   and brought up in a fresh process per measurement: resident memory
//!   (`VmRSS` delta) and wall time per guest. No baseline here: the goals
//!   are constants, applied by `cargo xtask bench`.
//!
//! Both simulated rows run the simulator in **deterministic** mode: every
//! domain (dom0 and the guests) runs on the calling thread, one at a time,
//! and virtual time jumps over idle waits. The figure is the wall-clock
//! time of the transfer, so it is the CPU cost of the whole path (guest
//! stack, driver, rings, grants, events, backend, switch), comparable with
//! a one-thread baseline, and not blurred by how a shared 2-core host
//! schedules threads. (Free-running mode runs domains on OS threads in
//! real time: what the demo does, but its throughput here would measure
//! the host's scheduler as much as our code.) The baselines skip idle
//! waits the same way: their smoltcp clock is real time plus any wait they
//! skipped.
//!
//! `cargo xtask bench` runs this (`cargo bench -p xenpal-apps --bench
//! sim_rows -- [--rounds N] [--tcp-mib M] [--blk-mib M] [--density
//! N,N,...] [sim-tcp] [sim-blk-read] [sim-density]`) and reads the lines it
//! prints, one per measurement:
//!
//! `sample NAME SIDE VALUE`
//!
//! with NAME `sim-tcp` or `sim-blk-read` (SIDE `ours`, `baseline`, or
//! `baseline-mtu1500`; VALUE in bytes per second), or
//! `sim-density-memory/N` (KiB per guest), `sim-density-create/N` (µs per
//! guest, building and bringing up) and `sim-density-build/N` (µs per
//! guest, building only), SIDE `ours`.

use embedded_sdmmc::{Mode as FileMode, VolumeIdx, VolumeManager};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xenpal::net::smol_now;
use xenpal_apps::site::FixedTime;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, ReadAhead, vbd_ids};
use xenpal_drivers::block_device::BlockError;
use xenpal_drivers::net::NetConfig;
use xenpal_fatimg::FatImage;
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::backends::net::NetBackend;
use xenpal_sim::hal::event::wait_event;
use xenpal_sim::hal::task::yield_now;
use xenpal_sim::hal::{Clock, DomId, EventChannel, EventPort};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{DomainConfig, Sim, SimConfig, SimPlatform};

/// Receive and transmit buffer of every TCP socket, ours and the
/// baseline's (as the simulator's TCP tests use).
const TCP_BUFFER: usize = 512 * 1024;

/// The TCP port the receiver listens on.
const TCP_PORT: u16 = 5001;

/// Bytes per read of the file, in the guest and in the baseline.
const READ_CHUNK: usize = 64 * 1024;

/// [`ReadAhead`] as `apps/src/site.rs` sets it up: 128 blocks (64 KiB)
/// per request, 8 windows kept.
const READ_AHEAD_BLOCKS: u32 = 128;
/// See [`READ_AHEAD_BLOCKS`].
const READ_AHEAD_WINDOWS: usize = 8;

/// The file's name in the FAT image.
const FILE_NAME: &str = "BIG.BIN";

/// Most guests in one simulator: Xen's domain ids stop below
/// `DOMID_FIRST_RESERVED` (0x7ff0), so a larger count is split across
/// several simulators in the one process, in equal even shards.
const MAX_GUESTS_PER_SIM: usize = 32_000;

/// How long (simulated) a guest waits for its peer or device before it
/// gives up: a broken run fails instead of hanging.
const STUCK: Duration = Duration::from_secs(60);

/// A repeating byte stream: byte `i` is `bytes[i % period]`, the period a
/// prime so that bytes delivered at the wrong offset do not match.
struct Pattern {
    /// One period, followed by enough of the next ones for any slice.
    bytes: Vec<u8>,
    /// The period.
    period: usize,
}

impl Pattern {
    /// A pattern whose slices can be up to `max_len` long.
    fn new(max_len: usize) -> Pattern {
        let period = 65_521;
        let one = noise(period);
        Pattern {
            bytes: one.iter().cycle().take(period + max_len).copied().collect(),
            period,
        }
    }

    /// Stream bytes `offset..offset + len`.
    fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % self.period as u64) as usize;
        &self.bytes[start..start + len]
    }
}

/// `len` random-looking bytes (xorshift), the same every run.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TCP socket with [`TCP_BUFFER`] each way.
fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    )
}

/// The sender's side of a stream: queue as much of the `total` bytes as
/// `sock` takes; returns the new count sent.
fn send_some(sock: &mut tcp::Socket<'_>, pat: &Pattern, mut sent: u64, total: u64) -> u64 {
    while sent < total && sock.can_send() {
        let n = sock
            .send(|buf| {
                let n = buf.len().min((total - sent) as usize);
                buf[..n].copy_from_slice(pat.at(sent, n));
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        sent += n as u64;
    }
    sent
}

/// The receiver's side: take what `sock` has, checking each byte against
/// the pattern; returns the new count received.
///
/// Errors: a message naming the offset of bytes that differ.
fn receive_some(sock: &mut tcp::Socket<'_>, pat: &Pattern, mut got: u64) -> Result<u64, String> {
    while sock.can_recv() {
        let at = got;
        let (n, ok) = sock
            .recv(|buf| (buf.len(), (buf.len(), buf == pat.at(at, buf.len()))))
            .map_err(|e| format!("recv: {e}"))?;
        if !ok {
            return Err(format!("stream corrupted in {n} bytes from offset {at}"));
        }
        got += n as u64;
    }
    Ok(got)
}

// ---------------------------------------------------------------- sim-tcp

/// One vif with its smoltcp interface and sockets, as a guest sets it up
/// (what `apps/src/site.rs` does, with a fixed address).
struct Net<'p> {
    /// The guest's platform.
    p: &'p SimPlatform,
    /// netfront on vif 0.
    nic: xenpal::Netfront<'p>,
    /// smoltcp's interface over it.
    iface: Interface,
    /// The guest's sockets.
    sockets: SocketSet<'static>,
}

impl<'p> Net<'p> {
    /// Open vif 0, wait for the backend, and give it `ip`/24.
    ///
    /// Errors: netfront's, as a message.
    async fn up(p: &'p SimPlatform, ip: Ipv4Address) -> Result<Net<'p>, String> {
        let deadline = p.timer().now() + STUCK;
        let mut nic = xenpal::Netfront::open(p, "0", NetConfig::default())
            .await
            .map_err(|e| format!("netfront: {e}"))?;
        nic.wait_up(deadline)
            .await
            .map_err(|e| format!("netfront: {e}"))?;
        let mut config = Config::new(nic.hardware_address());
        config.random_seed = u64::from(p.domid().0) * 0x9e37_79b9 + 7;
        let mut iface = Interface::new(config, &mut nic, smol_now(p.timer()));
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(ip.into(), 24));
        });
        Ok(Net {
            p,
            nic,
            iface,
            sockets: SocketSet::new(Vec::new()),
        })
    }

    /// Move packets between the vif and the sockets.
    fn poll(&mut self) {
        self.iface
            .poll(smol_now(self.p.timer()), &mut self.nic, &mut self.sockets);
    }

    /// Sleep until a packet arrives or smoltcp's next timer (at most
    /// 50 ms).
    async fn wait(&mut self) {
        let cap = Duration::from_millis(50);
        let delay = self
            .iface
            .poll_delay(smol_now(self.p.timer()), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(cap)
            .min(cap);
        let at = self.p.timer().now() + delay;
        self.nic.wait(at).await;
    }

    /// Keep polling for `d` (a last ACK or FIN), then close the vif.
    async fn finish(mut self, d: Duration) -> Result<(), String> {
        let end = self.p.timer().now() + d;
        while self.p.timer().now() < end {
            self.poll();
            let at = (self.p.timer().now() + Duration::from_millis(1)).min(end);
            self.nic.wait(at).await;
        }
        let deadline = self.p.timer().now() + Duration::from_secs(5);
        self.nic
            .close(deadline)
            .await
            .map_err(|e| format!("closing the vif: {e}"))
    }
}

/// What the two guests of a stream share with the host.
#[derive(Default)]
struct TcpShared {
    /// The receiver listens.
    listening: AtomicBool,
    /// When the sender connected (host clock).
    start: Mutex<Option<Instant>>,
    /// When the receiver had every byte (host clock).
    end: Mutex<Option<Instant>>,
    /// Bytes the receiver got.
    received: Mutex<u64>,
    /// What went wrong, in either guest.
    error: Arc<Mutex<Option<String>>>,
}

/// The sender guest (10.0.0.1): connect to the receiver and send `total`
/// bytes of the pattern, then close.
async fn tcp_sender(
    p: SimPlatform,
    total: u64,
    pat: Arc<Pattern>,
    sh: Arc<TcpShared>,
) -> Result<(), String> {
    let mut net = Net::up(&p, Ipv4Address::new(10, 0, 0, 1)).await?;
    let give_up = p.timer().now() + STUCK;
    while !sh.listening.load(Ordering::SeqCst) {
        if p.timer().now() > give_up {
            return Err("the receiver never listened".into());
        }
        xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(1)).await;
    }
    let h = net.sockets.add(tcp_socket());
    *sh.start.lock().unwrap() = Some(Instant::now());
    net.sockets
        .get_mut::<tcp::Socket>(h)
        .connect(
            net.iface.context(),
            (Ipv4Address::new(10, 0, 0, 2), TCP_PORT),
            40000,
        )
        .map_err(|e| format!("connect: {e}"))?;
    let mut sent = 0;
    let give_up = p.timer().now() + STUCK;
    loop {
        if p.timer().now() > give_up {
            return Err(format!("sender stuck after {sent} bytes"));
        }
        net.poll();
        let sock = net.sockets.get_mut::<tcp::Socket>(h);
        sent = send_some(sock, &pat, sent, total);
        if sent == total && sock.state() == tcp::State::Established {
            sock.close();
        }
        if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
            if sent != total {
                return Err(format!("connection lost after {sent} bytes"));
            }
            break;
        }
        net.wait().await;
    }
    net.finish(Duration::from_millis(10)).await
}

/// The receiver guest (10.0.0.2): listen, take the stream, check it.
async fn tcp_receiver(
    p: SimPlatform,
    total: u64,
    pat: Arc<Pattern>,
    sh: Arc<TcpShared>,
) -> Result<(), String> {
    let mut net = Net::up(&p, Ipv4Address::new(10, 0, 0, 2)).await?;
    let h = net.sockets.add(tcp_socket());
    net.sockets
        .get_mut::<tcp::Socket>(h)
        .listen(TCP_PORT)
        .map_err(|e| format!("listen: {e}"))?;
    sh.listening.store(true, Ordering::SeqCst);
    let mut got = 0;
    let give_up = p.timer().now() + STUCK;
    loop {
        if p.timer().now() > give_up {
            return Err(format!("receiver stuck after {got} bytes"));
        }
        net.poll();
        let sock = net.sockets.get_mut::<tcp::Socket>(h);
        let before = got;
        got = receive_some(sock, &pat, got)?;
        if got == total && before < total {
            *sh.end.lock().unwrap() = Some(Instant::now());
        }
        if sock.state() == tcp::State::CloseWait {
            sock.close();
        }
        if sock.state() == tcp::State::Closed && got > 0 {
            break;
        }
        if !sock.is_open() && got == 0 {
            return Err("the connection was reset".into());
        }
        net.wait().await;
    }
    *sh.received.lock().unwrap() = got;
    net.finish(Duration::from_millis(10)).await
}

/// Run `f` as a guest's main, recording its error in `error`.
async fn record(error: Arc<Mutex<Option<String>>>, f: impl Future<Output = Result<(), String>>) {
    if let Err(e) = f.await {
        error.lock().unwrap().get_or_insert(e);
    }
}

/// A deterministic simulator that does not stop a long run at its step
/// limit.
fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        max_steps: u64::MAX,
        ..SimConfig::seeded(seed)
    }
}

/// Ours: `total` bytes from one simulated guest to another; bytes per
/// second of the stream (the sender's connect to the receiver's last
/// byte, host clock).
///
/// Errors: a message if a guest fails, the stream is short or corrupted.
fn tcp_ours(total: u64, pat: &Arc<Pattern>) -> Result<f64, String> {
    let mut sim = Sim::new(sim_config(0x7c9));
    let net = NetBackend::new();
    let sh = Arc::new(TcpShared::default());
    let mut doms = Vec::new();
    for (name, sender) in [("sender", true), ("receiver", false)] {
        let (pat, sh) = (pat.clone(), sh.clone());
        let err = sh.error.clone();
        let cfg = DomainConfig::new(name).memory_pages(1024);
        let dom = sim
            .spawn(cfg, move |p| async move {
                if sender {
                    record(err, tcp_sender(p, total, pat, sh)).await
                } else {
                    record(err, tcp_receiver(p, total, pat, sh)).await
                }
            })
            .map_err(|e| format!("spawn: {e}"))?;
        let mac = [0x00, 0x16, 0x3e, 0x00, dom.0 as u8, 0];
        net.add_vif(&sim, dom, 0, mac)
            .map_err(|e| format!("vif: {e}"))?;
        doms.push(dom);
    }
    net.spawn(&mut sim).map_err(|e| format!("netback: {e}"))?;
    let report = sim.run();
    if let Some(e) = sh.error.lock().unwrap().take() {
        return Err(format!("sim-tcp: {e}"));
    }
    if !report.all_clean() {
        return Err(format!(
            "sim-tcp: {report:?}\n{}",
            consoles(&sim, &[doms[0], doms[1], DomId::DOM0])
        ));
    }
    let got = *sh.received.lock().unwrap();
    let (start, end) = (*sh.start.lock().unwrap(), *sh.end.lock().unwrap());
    match (start, end) {
        (Some(s), Some(e)) if got == total => Ok(total as f64 / (e - s).as_secs_f64()),
        _ => Err(format!("sim-tcp: {got} of {total} bytes arrived")),
    }
}

/// The consoles of `doms`, for an error message.
fn consoles(sim: &Sim, doms: &[DomId]) -> String {
    doms.iter()
        .map(|d| format!("--- d{}\n{}", d.0, sim.console_output(*d)))
        .collect()
}

/// smoltcp's [`Loopback`], but with netfront's capabilities: a 1500-byte
/// MTU (1514-byte frames) and checksums computed and checked in software.
struct LikeNetfront(Loopback);

impl Device for LikeNetfront {
    /// The loopback's.
    type RxToken<'a>
        = <Loopback as Device>::RxToken<'a>
    where
        Self: 'a;
    /// The loopback's.
    type TxToken<'a>
        = <Loopback as Device>::TxToken<'a>
    where
        Self: 'a;

    /// The loopback's next packet.
    fn receive(
        &mut self,
        timestamp: SmolInstant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.0.receive(timestamp)
    }

    /// A packet into the loopback.
    fn transmit(&mut self, timestamp: SmolInstant) -> Option<Self::TxToken<'_>> {
        self.0.transmit(timestamp)
    }

    /// netfront's: Ethernet, 1514-byte frames, checksums in software.
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// The baseline: `total` bytes between two sockets of one smoltcp
/// interface over `dev`, in this thread; bytes per second from connect to
/// the last byte. smoltcp's clock is real time plus the waits skipped: when
/// a poll moves nothing, the clock jumps to smoltcp's next timer, as
/// virtual time does in the simulator.
///
/// Errors: a message if the stream is corrupted or stalls.
fn tcp_baseline<D: Device>(mut dev: D, total: u64, pat: &Pattern) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut skipped = Duration::ZERO;
    let now =
        |skipped: Duration| SmolInstant::from_micros((t0.elapsed() + skipped).as_micros() as i64);
    let mut config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
    config.random_seed = 7;
    let mut iface = Interface::new(config, &mut dev, now(skipped));
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
    });
    let mut sockets = SocketSet::new(Vec::new());
    let server = sockets.add(tcp_socket());
    let client = sockets.add(tcp_socket());
    sockets
        .get_mut::<tcp::Socket>(server)
        .listen(TCP_PORT)
        .map_err(|e| format!("listen: {e}"))?;
    let start = Instant::now();
    sockets
        .get_mut::<tcp::Socket>(client)
        .connect(
            iface.context(),
            (IpAddress::v4(127, 0, 0, 1), TCP_PORT),
            40000,
        )
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sent, mut got) = (0, 0);
    while got < total {
        if start.elapsed() > STUCK {
            return Err(format!("baseline stuck after {got} bytes"));
        }
        let polled = iface.poll(now(skipped), &mut dev, &mut sockets);
        let before = (sent, got);
        sent = send_some(sockets.get_mut(client), pat, sent, total);
        got = receive_some(sockets.get_mut(server), pat, got)?;
        if polled == smoltcp::iface::PollResult::None && before == (sent, got) {
            let at = now(skipped);
            if let Some(d) = iface.poll_delay(at, &sockets) {
                skipped += Duration::from_micros(d.total_micros());
            }
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// `sim-tcp`: `rounds` of ours, the baseline and the baseline like
/// netfront, `total` bytes each.
fn sim_tcp(rounds: usize, total: u64) -> Result<(), String> {
    let pat = Arc::new(Pattern::new(TCP_BUFFER));
    for _ in 0..rounds {
        let ours = tcp_ours(total, &pat)?;
        println!("sample sim-tcp ours {ours:.0}");
        let base = tcp_baseline(Loopback::new(Medium::Ethernet), total, &pat)?;
        println!("sample sim-tcp baseline {base:.0}");
        let like = tcp_baseline(LikeNetfront(Loopback::new(Medium::Ethernet)), total, &pat)?;
        println!("sample sim-tcp baseline-mtu1500 {like:.0}");
    }
    Ok(())
}

// ----------------------------------------------------------- sim-blk-read

/// A FAT image holding one file, in the host's temporary directory;
/// removed when dropped.
struct Image {
    /// The image file.
    path: PathBuf,
    /// The file's contents.
    data: Arc<Vec<u8>>,
    /// Where the file's bytes start in the image.
    offset: u64,
}

impl Image {
    /// Write an image holding [`FILE_NAME`] of `bytes` random-looking
    /// bytes.
    ///
    /// Errors: a message if the image cannot be built or written.
    fn new(bytes: usize) -> Result<Image, String> {
        let data = Arc::new(noise(bytes));
        let mut img = FatImage::new();
        img.add_file(FILE_NAME, data.to_vec())
            .map_err(|e| format!("{FILE_NAME}: {e}"))?;
        let path =
            std::env::temp_dir().join(format!("xenpal-bench-blk-{}.img", std::process::id()));
        let layout = img
            .write_file(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The only file of a fresh image starts at the first data cluster
        // and is contiguous; the baseline checks every byte, so an image
        // laid out otherwise fails the run rather than skewing it.
        Ok(Image {
            path,
            data,
            offset: layout.data_offset,
        })
    }
}

impl Drop for Image {
    /// Remove the image file.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The reader guest: open the disk and its FAT volume, then read the file
/// from start to end in [`READ_CHUNK`]s, checking each; the time from
/// opening the file to its last byte goes to `out`.
async fn blk_reader(
    p: SimPlatform,
    data: Arc<Vec<u8>>,
    out: Arc<Mutex<Option<Duration>>>,
) -> Result<(), String> {
    let ids = vbd_ids(&p).await.map_err(|e| format!("vbd_ids: {e}"))?;
    let id = ids.first().ok_or("no disk")?;
    let disk = Blkfront::open(&p, id, BlkfrontConfig::default())
        .await
        .map_err(|e| format!("blkfront: {e}"))?;
    let result = (|| {
        let vm: VolumeManager<_, FixedTime, 4, 4, 1> = VolumeManager::new_with_limits(
            ReadAhead::new(&disk, READ_AHEAD_BLOCKS, READ_AHEAD_WINDOWS),
            FixedTime,
            5000,
        );
        let fat = |e: embedded_sdmmc::Error<BlockError>| format!("FAT: {e:?}");
        let vol = vm.open_raw_volume(VolumeIdx(0)).map_err(fat)?;
        let root = vm.open_root_dir(vol).map_err(fat)?;
        let start = Instant::now();
        let file = vm
            .open_file_in_dir(root, FILE_NAME, FileMode::ReadOnly)
            .map_err(fat)?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut at = 0;
        loop {
            let n = vm.read(file, &mut buf).map_err(fat)?;
            if n == 0 {
                break;
            }
            if data.get(at..at + n) != Some(&buf[..n]) {
                return Err(format!("the file differs in {n} bytes from offset {at}"));
            }
            at += n;
        }
        let took = start.elapsed();
        if at != data.len() {
            return Err(format!("read {at} of {} bytes", data.len()));
        }
        *out.lock().unwrap() = Some(took);
        vm.close_file(file).map_err(fat)?;
        vm.close_dir(root).map_err(fat)?;
        vm.close_volume(vol).map_err(fat)
    })();
    disk.close()
        .await
        .map_err(|e| format!("closing the disk: {e}"))?;
    result
}

/// Ours: the guest reads the image's file; bytes per second.
///
/// Errors: a message if the guest fails.
fn blk_ours(img: &Image) -> Result<f64, String> {
    let mut sim = Sim::new(sim_config(0xb1c));
    let blkback = Blkback::new();
    let took: Arc<Mutex<Option<Duration>>> = Arc::default();
    let error: Arc<Mutex<Option<String>>> = Arc::default();
    let (data, t, err) = (img.data.clone(), took.clone(), error.clone());
    let dom = sim
        .spawn(DomainConfig::new("reader").memory_pages(1024), move |p| {
            record(err, blk_reader(p, data, t))
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let disk = Disk::file(&img.path).map_err(|e| format!("{}: {e}", img.path.display()))?;
    blkback
        .add_vbd(&sim, dom, 0, disk, VbdOptions::default().read_only())
        .map_err(|e| format!("vbd: {e}"))?;
    blkback
        .spawn(&mut sim)
        .map_err(|e| format!("blkback: {e}"))?;
    let report = sim.run();
    if let Some(e) = error.lock().unwrap().take() {
        return Err(format!("sim-blk-read: {e}"));
    }
    if !report.all_clean() {
        return Err(format!(
            "sim-blk-read: {report:?}\n{}",
            consoles(&sim, &[dom, DomId::DOM0])
        ));
    }
    let took = took.lock().unwrap().ok_or("sim-blk-read: no time")?;
    Ok(img.data.len() as f64 / took.as_secs_f64())
}

/// The baseline: `pread` of the file's bytes from the image in
/// [`READ_CHUNK`]s, checking each; bytes per second from opening the
/// image to the last byte.
///
/// Errors: a message if the image cannot be read or its bytes differ.
fn blk_baseline(img: &Image) -> Result<f64, String> {
    let start = Instant::now();
    let f = std::fs::File::open(&img.path).map_err(|e| format!("{}: {e}", img.path.display()))?;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = 0;
    while at < img.data.len() {
        let n = READ_CHUNK.min(img.data.len() - at);
        f.read_exact_at(&mut buf[..n], img.offset + at as u64)
            .map_err(|e| format!("{}: {e}", img.path.display()))?;
        if img.data[at..at + n] != buf[..n] {
            return Err(format!(
                "the image differs from the file in {n} bytes from offset {at}"
            ));
        }
        at += n;
    }
    Ok(img.data.len() as f64 / start.elapsed().as_secs_f64())
}

/// `sim-blk-read`: `rounds` of ours and the baseline on one image holding
/// a file of `bytes` bytes.
fn sim_blk_read(rounds: usize, bytes: usize) -> Result<(), String> {
    let img = Image::new(bytes)?;
    for _ in 0..rounds {
        let ours = blk_ours(&img)?;
        println!("sample sim-blk-read ours {ours:.0}");
        let base = blk_baseline(&img)?;
        println!("sample sim-blk-read baseline {base:.0}");
    }
    Ok(())
}

// ------------------------------------------------------------ sim-density

/// This process's resident memory, in KiB (`VmRSS`).
fn rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// The smallest guest the simulator builds (as `sim/tests/scale.rs`): 8
/// pages of RAM, one grant frame, xenstore, no PV console.
fn small_guest(i: usize) -> DomainConfig {
    DomainConfig::new(format!("g{i}"))
        .memory_pages(8)
        .grant_frames(1)
        .without_pv_console()
}

/// The ports the odd guests of a simulator allocated, by domain id, for
/// their even neighbours to bind.
type Ports = Arc<Mutex<Vec<Option<EventPort>>>>;

/// One guest of a density pair (domain ids `2k+1`, `2k+2` in their
/// simulator): the odd one allocates a port for the even one and waits for
/// its event; the even one binds it and notifies. Each then writes
/// `data/ready`, counts itself in `ready`, and waits for events forever,
/// so that all are alive at once.
async fn density_guest(p: SimPlatform, id: u16, ports: Ports, ready: Arc<AtomicUsize>) {
    let xs = p.xenstore().expect("the guest has xenstore").clone();
    let me = usize::from(id);
    let port = if id % 2 == 1 {
        let port = p
            .events()
            .alloc_unbound(DomId(id + 1))
            .expect("alloc_unbound");
        ports.lock().unwrap()[me] = Some(port);
        wait_event(p.events(), port).await;
        port
    } else {
        let remote = loop {
            if let Some(port) = ports.lock().unwrap()[me - 1] {
                break port;
            }
            yield_now().await;
        };
        let port = p
            .events()
            .bind_interdomain(DomId(id - 1), remote)
            .expect("bind_interdomain");
        p.events().notify(port).expect("notify");
        port
    };
    xs.write(TxId::NONE, "data/ready", b"1")
        .await
        .expect("xenstore write");
    ready.fetch_add(1, Ordering::SeqCst);
    // Xen marks a port pending when it is bound: take such events too.
    loop {
        wait_event(p.events(), port).await;
    }
}

/// The child process of a density measurement: build `n` guests, bring
/// them up, and print `density N RSS_KIB CREATE_NS BUILD_NS`: the resident
/// memory they added, the wall time to build and bring them all up, and
/// the part of it spent building (`Sim::spawn`).
///
/// Errors: a message if a guest fails or does not come up.
fn density_child(n: usize) -> Result<(), String> {
    let shards = n.div_ceil(MAX_GUESTS_PER_SIM);
    let per = n / shards;
    if per * shards != n || !per.is_multiple_of(2) {
        return Err(format!(
            "{n} guests do not split into {shards} equal even shards"
        ));
    }
    // The simulators (with their dom0s, kept small) exist before the
    // measurement starts: it counts guests only.
    let mut sims: Vec<Sim> = (0..shards)
        .map(|s| {
            Sim::new(SimConfig {
                max_steps: u64::MAX,
                dom0_memory_pages: 64,
                ..SimConfig::seeded(0xd0 + s as u64)
            })
        })
        .collect();
    let ready = Arc::new(AtomicUsize::new(0));
    let rss0 = rss_kib()?;
    let start = Instant::now();
    let mut building = Duration::ZERO;
    for sim in &mut sims {
        let ports: Ports = Arc::new(Mutex::new(vec![None; per + 1]));
        let b = Instant::now();
        for i in 1..=per {
            let (ports, ready) = (ports.clone(), ready.clone());
            let id = u16::try_from(i).map_err(|_| "too many guests in a shard")?;
            let dom = sim
                .spawn(small_guest(i), move |p| density_guest(p, id, ports, ready))
                .map_err(|e| format!("guest {i}: {e}"))?;
            if dom != DomId(id) {
                return Err(format!("guest {i} got domain id {}", dom.0));
            }
        }
        building += b.elapsed();
        let report = sim.run();
        if !report.exits.is_empty() {
            return Err(format!("guests exited: {:?}", report.exits));
        }
    }
    let took = start.elapsed();
    let rss1 = rss_kib()?;
    let up = ready.load(Ordering::SeqCst);
    if up != n {
        return Err(format!("{up} of {n} guests came up"));
    }
    println!(
        "density {n} {} {} {}",
        rss1.saturating_sub(rss0),
        took.as_nanos(),
        building.as_nanos()
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Tearing down is not measured: leave without dropping the simulators.
    std::process::exit(0);
}

/// `sim-density`: `rounds` of each size in `sizes`, each in a fresh
/// process (this program, `--density-child N`).
fn sim_density(rounds: usize, sizes: &[usize]) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    for _ in 0..rounds {
        for &n in sizes {
            let (kib, create_ns, build_ns) = density_in_child(&me, n)?;
            let per = n as f64;
            println!("sample sim-density-memory/{n} ours {:.3}", kib as f64 / per);
            println!(
                "sample sim-density-create/{n} ours {:.3}",
                create_ns as f64 / 1e3 / per
            );
            println!(
                "sample sim-density-build/{n} ours {:.3}",
                build_ns as f64 / 1e3 / per
            );
        }
    }
    Ok(())
}

/// Run `exe --density-child n`; returns its KiB, and its create and build
/// nanoseconds.
///
/// Errors: a message if the child fails or prints no result.
fn density_in_child(exe: &Path, n: usize) -> Result<(u64, u64, u64), String> {
    let out = Command::new(exe)
        .args(["--density-child", &n.to_string()])
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields = stdout.lines().find_map(|l| {
        let f: Vec<u64> = l
            .strip_prefix("density ")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        (f.len() == 4 && f[0] == n as u64).then_some((f[1], f[2], f[3]))
    });
    match fields {
        Some(v) if out.status.success() => Ok(v),
        _ => Err(format!(
            "density child for {n} guests: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

// -------------------------------------------------------------------- main

/// The command line: which rows, how many rounds, how large.
struct Args {
    /// Rounds of each measurement.
    rounds: usize,
    /// MiB streamed per `sim-tcp` measurement.
    tcp_mib: u64,
    /// MiB of the file `sim-blk-read` reads.
    blk_mib: usize,
    /// Guest counts of `sim-density`.
    density: Vec<usize>,
    /// The rows asked for (all if none).
    which: Vec<String>,
    /// Run as the child of a density measurement, with this many guests.
    child: Option<usize>,
}

/// Parse the command line.
///
/// Errors: a usage message.
fn args() -> Result<Args, String> {
    let usage = "sim_rows [--rounds N] [--tcp-mib M] [--blk-mib M] [--density N,N,...] \
                 [sim-tcp] [sim-blk-read] [sim-density]";
    let mut a = Args {
        rounds: 5,
        tcp_mib: 64,
        blk_mib: 64,
        density: vec![1_000, 10_000, 100_000],
        which: Vec::new(),
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value: {usage}"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("not a number: {v:?}: {usage}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to a harness-less bench.
            "--bench" => {}
            "--rounds" => a.rounds = num(value()?)?,
            "--tcp-mib" => a.tcp_mib = num(value()?)? as u64,
            "--blk-mib" => a.blk_mib = num(value()?)?,
            "--density" => {
                a.density = value()?
                    .split(',')
                    .map(|v| num(v.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--density-child" => a.child = Some(num(value()?)?),
            "sim-tcp" | "sim-blk-read" | "sim-density" => a.which.push(arg),
            _ => return Err(format!("unknown argument {arg:?}: {usage}")),
        }
    }
    if a.which.is_empty() {
        a.which = ["sim-tcp", "sim-blk-read", "sim-density"]
            .map(String::from)
            .to_vec();
    }
    Ok(a)
}

/// Run the rows asked for; on an error, say it and exit with status 1.
fn main() {
    let result = args().and_then(|a| {
        if let Some(n) = a.child {
            return density_child(n);
        }
        for name in &a.which {
            match name.as_str() {
                "sim-tcp" => sim_tcp(a.rounds, a.tcp_mib << 20)?,
                "sim-blk-read" => sim_blk_read(a.rounds, a.blk_mib << 20)?,
                _ => sim_density(a.rounds, &a.density)?,
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("sim_rows: {e}");
        std::process::exit(1);
    }
}
