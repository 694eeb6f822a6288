//! Shared by the `net_*` tests: a guest's network stack (smoltcp on a
//! netfront), a deterministic byte stream with a checksum, and resource
//! baselines.

#![allow(dead_code)]

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{IpCidr, Ipv4Address};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_drivers::net::{NetConfig, Netfront};
use xenpal_sim::backends::net::{NetBackend, Vif};
use xenpal_sim::hal::{Clock, DomId, Instant};
use xenpal_sim::xen_pv::timer::XenAlarm;
use xenpal_sim::{DomainConfig, Sim};
use xenpal_sim::{SimClock, SimHypervisor, SimPlatform};

pub type Nic<'p> = Netfront<'p, SimHypervisor, SimClock, XenAlarm<SimHypervisor>>;

/// A guest's MAC address: `00:16:3e:00:<domid>:<index>`.
pub fn mac(domid: DomId, index: u32) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x00, domid.0 as u8, index as u8]
}

pub fn smol_now(p: &SimPlatform) -> SmolInstant {
    SmolInstant::from_micros((p.timer().now().as_nanos() / 1000) as i64)
}

/// What a guest holds (grants, pages, free port): equal before and after
/// its devices, or something leaked.
pub type Baseline = xenpal_sim::Holdings;

/// One vif with its smoltcp interface.
pub struct Stack<'p> {
    pub p: &'p SimPlatform,
    pub nic: Nic<'p>,
    pub iface: Interface,
}

impl<'p> Stack<'p> {
    /// Open vif `vif`, wait for the link, and give it `ip`/24.
    pub async fn up(p: &'p SimPlatform, vif: &str, ip: Ipv4Address, cfg: NetConfig) -> Stack<'p> {
        let deadline = p.timer().now() + Duration::from_secs(5);
        // In free-running mode the guest may boot before its vif exists.
        Nic::wait_for_device(p, vif, deadline).await.unwrap();
        let mut nic = Netfront::open(p, vif, cfg).await.unwrap();
        nic.wait_up(deadline).await.unwrap();
        let mut config = Config::new(nic.hardware_address());
        config.random_seed = u64::from(p.domid().0) * 7919 + 1;
        let mut iface = Interface::new(config, &mut nic, smol_now(p));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(ip.into(), 24)).unwrap();
        });
        Stack { p, nic, iface }
    }

    pub fn poll(&mut self, sockets: &mut SocketSet<'_>) {
        self.iface.poll(smol_now(self.p), &mut self.nic, sockets);
    }

    /// When smoltcp next wants to run, capped at `cap` from now.
    pub fn deadline(&mut self, sockets: &SocketSet<'_>, cap: Duration) -> Instant {
        let now = self.p.timer().now();
        let d = self
            .iface
            .poll_delay(smol_now(self.p), sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(cap)
            .min(cap);
        now + d
    }

    /// Poll, then wait for the network or smoltcp's next timer.
    pub async fn turn(&mut self, sockets: &mut SocketSet<'_>) {
        self.poll(sockets);
        let at = self.deadline(sockets, Duration::from_millis(50));
        self.nic.wait(at).await;
    }

    /// Keep the stack running for `d` (a last ACK, an echo, still to go).
    pub async fn linger(&mut self, sockets: &mut SocketSet<'_>, d: Duration) {
        let end = self.p.timer().now() + d;
        while self.p.timer().now() < end {
            self.poll(sockets);
            let at = self.deadline(sockets, d).min(end);
            self.nic.wait(at).await;
        }
    }

    /// Close the vif and check that everything came back.
    pub async fn close(mut self, base: &Baseline) {
        let deadline = self.p.timer().now() + Duration::from_secs(5);
        self.nic.close(deadline).await.unwrap();
        assert_eq!(&Baseline::of(self.p), base, "resources leaked");
    }
}

/// A TCP socket that gives up on a silent peer after 150 s (simulated).
///
/// Not less: smoltcp's retransmission timeout is 1 s at least and backs
/// off to 60 s (RFC 6298), it has no SACK, fast-retransmits once per
/// window and ignores a FIN that arrives out of order, so on a faulty link
/// a healthy recovery can wait out 1 + 2 + 4 + ... + 60 s. A 5 s timeout
/// aborted such recoveries (`tcp_stream_survives_faulty_links`).
pub fn tcp_socket(buf: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buf]),
        tcp::SocketBuffer::new(vec![0; buf]),
    );
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(150)));
    s
}

pub fn udp_socket(packets: usize, bytes: usize) -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]),
    )
}

/// The test stream: byte `i` is a hash of `i`, so lost, duplicated or
/// reordered bytes change the checksum.
pub fn stream_fill(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        *b = (x >> 56) as u8;
    }
}

/// FNV-1a, 64 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The checksum of the first `len` bytes of the test stream.
pub fn stream_checksum(len: u64) -> Fnv {
    let mut h = Fnv::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        stream_fill(at, &mut buf[..n]);
        h.update(&buf[..n]);
        at += n as u64;
    }
    h
}

/// Run `f` with the seed printed if it panics (the simulator prints seeds
/// of guest panics; this covers assertions in the test body).
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("test failed with seed {seed:#x}; rerun with XENPAL_SEED={seed:#x}");
            std::panic::resume_unwind(e)
        }
    }
}

pub const A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
pub const B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
pub const PORT: u16 = 5001;
/// Simulated time after which a TCP test guest gives up (a failure, not a
/// timing assertion: a healthy 16 MiB transfer takes well under a second,
/// but a faulty link's recovery can take minutes of simulated time, which
/// pass in a fraction of a second when every guest waits).
pub const STUCK: Duration = Duration::from_secs(600);

pub fn guest_config(name: &str) -> DomainConfig {
    DomainConfig::new(name).memory_pages(512)
}

/// A sender (d1, 10.0.0.1) and a receiver (d2, 10.0.0.2) of a TCP stream
/// of `total` bytes, with their vifs.
pub struct TcpPair {
    pub sender: DomId,
    pub receiver: DomId,
    /// The sender's vif, then the receiver's.
    pub vifs: [Vif; 2],
    pub outcome: Arc<Mutex<Outcome>>,
    /// Bytes the receiver has so far.
    pub progress: Arc<AtomicU64>,
    /// Bytes to send.
    pub total: u64,
}

impl TcpPair {
    pub fn consoles(&self, sim: &Sim) -> String {
        format!(
            "--- sender\n{}\n--- receiver\n{}\n--- dom0\n{}",
            sim.console_output(self.sender),
            sim.console_output(self.receiver),
            sim.console_output(DomId::DOM0)
        )
    }
}

/// Two guests streaming `total` bytes, each with a vif on `net` (not yet
/// spawned, so the caller can add more before it does).
pub fn spawn_tcp_pair(sim: &mut Sim, net: &NetBackend, total: u64, cfg: NetConfig) -> TcpPair {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let progress = Arc::new(AtomicU64::new(0));
    let (o, c) = (outcome.clone(), cfg.clone());
    let sender = sim
        .spawn(guest_config("sender"), move |p| tcp_sender(p, total, c, o))
        .unwrap();
    let (o, c, g) = (outcome.clone(), cfg, progress.clone());
    let receiver = sim
        .spawn(guest_config("receiver"), move |p| tcp_receiver(p, c, o, g))
        .unwrap();
    let vifs = [
        net.add_vif(sim, sender, 0, mac(sender, 0)).unwrap(),
        net.add_vif(sim, receiver, 0, mac(receiver, 0)).unwrap(),
    ];
    TcpPair {
        sender,
        receiver,
        vifs,
        outcome,
        progress,
        total,
    }
}

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub sent: u64,
    pub sent_sum: Option<Fnv>,
    pub received: u64,
    pub received_sum: Option<Fnv>,
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub sender_connects: u64,
    pub receiver_connects: u64,
}

pub async fn tcp_sender(p: SimPlatform, total: u64, cfg: NetConfig, out: Arc<Mutex<Outcome>>) {
    let base = Baseline::of(&p);
    let mut s = Stack::up(&p, "0", A, cfg).await;
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(tcp_socket(512 * 1024));
    sockets
        .get_mut::<tcp::Socket>(h)
        .connect(s.iface.context(), (B, PORT), 40000)
        .unwrap();
    let mut sent = 0u64;
    let mut sum = Fnv::default();
    let give_up = p.timer().now() + STUCK;
    loop {
        s.poll(&mut sockets);
        assert!(
            p.timer().now() < give_up,
            "sender stuck after {sent} bytes in {}",
            sockets.get_mut::<tcp::Socket>(h).state()
        );
        let sock = sockets.get_mut::<tcp::Socket>(h);
        while sent < total && sock.can_send() {
            let n = sock
                .send(|buf| {
                    let n = buf.len().min((total - sent) as usize);
                    stream_fill(sent, &mut buf[..n]);
                    sum.update(&buf[..n]);
                    (n, n)
                })
                .unwrap();
            sent += n as u64;
        }
        if sent == total && sock.state() == tcp::State::Established {
            sock.close();
        }
        if matches!(sock.state(), tcp::State::Closed | tcp::State::TimeWait) {
            log::info!("sender: {} after {sent} bytes", sock.state());
            assert_eq!(sent, total, "the connection failed");
            break;
        }
        let at = s.deadline(&sockets, Duration::from_millis(50));
        s.nic.wait(at).await;
    }
    {
        let mut o = out.lock().unwrap();
        o.sent = sent;
        o.sent_sum = Some(sum);
        o.tx_packets = s.nic.stats().tx_packets;
        o.sender_connects = s.nic.stats().connects;
    }
    s.linger(&mut sockets, Duration::from_millis(10)).await;
    s.close(&base).await;
    // Let dom0 finish its round before the last guest exits.
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(20)).await;
}

pub async fn tcp_receiver(
    p: SimPlatform,
    cfg: NetConfig,
    out: Arc<Mutex<Outcome>>,
    progress: Arc<AtomicU64>,
) {
    let base = Baseline::of(&p);
    let mut s = Stack::up(&p, "0", B, cfg).await;
    let mut sockets = SocketSet::new(vec![]);
    let h = sockets.add(tcp_socket(512 * 1024));
    sockets.get_mut::<tcp::Socket>(h).listen(PORT).unwrap();
    let mut received = 0u64;
    let mut sum = Fnv::default();
    let give_up = p.timer().now() + STUCK;
    loop {
        s.poll(&mut sockets);
        assert!(
            p.timer().now() < give_up,
            "receiver stuck after {received} bytes in {}",
            sockets.get_mut::<tcp::Socket>(h).state()
        );
        let sock = sockets.get_mut::<tcp::Socket>(h);
        while sock.can_recv() {
            received += sock
                .recv(|buf| {
                    sum.update(buf);
                    (buf.len(), buf.len() as u64)
                })
                .unwrap();
            progress.store(received, Ordering::SeqCst);
        }
        if sock.state() == tcp::State::CloseWait {
            sock.close();
        }
        if sock.state() == tcp::State::Closed && received > 0 {
            log::info!("receiver: {} after {received} bytes", sock.state());
            break;
        }
        assert!(sock.is_open() || received == 0, "connection reset");
        let at = s.deadline(&sockets, Duration::from_millis(50));
        s.nic.wait(at).await;
    }
    {
        let mut o = out.lock().unwrap();
        o.received = received;
        o.received_sum = Some(sum);
        o.rx_packets = s.nic.stats().rx_packets;
        o.receiver_connects = s.nic.stats().connects;
    }
    s.linger(&mut sockets, Duration::from_millis(10)).await;
    s.close(&base).await;
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_millis(20)).await;
}
