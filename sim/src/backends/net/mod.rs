//! The virtual network, run by dom0: netback for every vif, learning
//! Ethernet switches between them, pcap capture, and forwarding of host TCP
//! ports to guests.
//!
//! Everything here is **dom0 code**: it reaches guests only through dom0's
//! platform — xenstore and [`DeviceWatcher`] to find vifs, grant maps for
//! the two ring pages, grant copies for packet data, event channels — as a
//! backend in a real driver domain does. It never touches guest memory
//! directly.
//!
//! # Use
//! ```no_run
//! use xenpal_sim::backends::net::NetBackend;
//! use xenpal_sim::{DomainConfig, Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! let mut net = NetBackend::new();
//! net.capture_bridge("xenbr0", "/tmp/all.pcap").unwrap();
//! let d1 = sim.spawn(DomainConfig::new("a"), |p| async move { /* netfront */ }).unwrap();
//! let vif = net.add_vif(&sim, d1, 0, [0x00, 0x16, 0x3e, 0, 0, 1]).unwrap();
//! let status = net.spawn(&mut sim).unwrap(); // dom0 runs the network
//! sim.run();
//! println!("{:?}", status.snapshot());
//! ```
//!
//! - [`NetBackend::add_vif`] / [`NetBackend::add_vif_with`] give a guest a
//!   vif as a toolstack does (the frontend and backend directories, `mac`,
//!   `bridge`); the [`Vif`] it returns names the device.
//! - [`NetBackend`] configures dom0's side; [`NetBackend::spawn`] runs it as
//!   dom0's task, or [`NetBackend::serve`] inside a dom0 task shared with
//!   other backends (dom0 has one task). Both consume it, as
//!   [`Blkback`](crate::backends::blk::Blkback)'s do: add the vifs first.
//! - [`Vif::stop`] / [`Vif::start`] stop a vif's backend as if its driver were
//!   unloaded (state `Closing`, `Closed`, rings unmapped) and start it again;
//!   a frontend reconnects. They work through xenstore, so they wake dom0 and
//!   can be called between [`Sim::run_for`] slices.
//! - [`NetStatus`] shows what dom0 sees: each vif's state and counters,
//!   dom0's grant mappings, frames switched.
//! - [`NetBackend::link_faults`] makes a vif's link lossy, duplicating,
//!   reordering, corrupting, slow or partitioned ([`LinkFaults`]), with
//!   every fault drawn from a seed: a deterministic run replays exactly.
//!   A frame crossing two faulty links (vif to vif) meets both, separately
//!   for each destination of a flooded frame; delayed frames wait in dom0
//!   and go out when due.
//!
//! # Switches
//! A vif joins the switch named by its backend's `bridge` node (default
//! [`DEFAULT_BRIDGE`]) when it connects. A switch learns source MACs and
//! floods broadcast, multicast and unknown unicast frames.
//!
//! # Backend behaviour
//! Published: `feature-sg`, `feature-rx-copy`, `feature-rx-flip=0`,
//! `feature-rx-notify`, `feature-gso-tcpv4`. Required from the frontend: `request-rx-copy=1`,
//! one queue, one `event-channel`. Honoured: the frontend's `feature-sg`
//! (multi-slot packets are not sent to a frontend without it: they are
//! dropped) and `feature-rx-notify` (without it, dom0 polls every
//! millisecond while packets wait). Packets a frontend sends with
//! `NETTXF_csum_blank` get their TCP/UDP checksum filled in, so every
//! frontend receives complete checksums (what `feature-no-csum-offload`
//! asks for; no `NETRXF_*` checksum flags are ever set). A frontend
//! that breaks the protocol (runaway producer, slots crossing a page, more
//! than [`MAX_TX_SLOTS`] slots, inconsistent sizes) is disconnected with an
//! `error` node; other vifs are unaffected.
//!
//! A TCP/IPv4 packet sent with a GSO extra-info slot is cut by dom0 into
//! segments of the slot's size before it reaches the switch, as Linux does
//! before a large packet leaves for a device that cannot take it whole;
//! one addressed to the gateway stays whole (dom0's own stack takes it, as
//! Linux's does for dom0's addresses; should the switch flood it before
//! learning the gateway's port, guests get it whole too). A GSO slot of
//! size 0 or of an unknown protocol is fatal for the vif (as in Linux's
//! netback), and a GSO packet that is not TCP/IPv4 is answered with an
//! error. A vif capture shows a large packet whole, as the guest sent it;
//! a bridge capture shows what the switch carried.
//!
//! Limits: one queue per vif; GSO towards frontends is not offered (every
//! frame a frontend receives fits the link); other extra-info slots are
//! accepted and answered, their offloads ignored; a packet waits at the
//! head of a frontend's queue until that frontend posts enough receive
//! buffers for it, so a frontend that never posts 17 cannot receive 64 KiB
//! frames.

mod error;
mod faults;
mod gateway;
mod gso;
mod netback;
pub mod pcap;
mod switch;

pub use error::{NetbackError, VifError};
pub use faults::{FaultCounters, LinkFaults};
pub use netback::{MAX_TX_SLOTS, RX_QUEUE_PACKETS, VifCounters, fill_checksum};
pub use switch::{PortId, Switch};

use crate::{Sim, SimError, SimPlatform, XenstoreWriteError};
use faults::FaultyLink;
use gateway::{Forward, Gateway};
use hal::{Clock, DomId, EventChannel, EventPort, GrantTable, Instant, Timer};
use netback::{Staging, VifBackend};
use pcap::PcapWriter;
use smoltcp::wire::IpEndpoint;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::future::poll_fn;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use xen_pv::xenstore::{TxId, XenStore};
use xenpal_drivers::xenbus::{DeviceChange, DeviceWatcher, XenbusDevice, XenbusState};

/// The switch a vif joins when its backend has no `bridge` node.
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// Where [`Vif::stop`] and [`Vif::start`] leave their commands:
/// `<root>/<domid>/<index>` = `stop` or `start`.
pub const CONTROL_ROOT: &str = "/local/domain/0/xenpal/netback";
const CONTROL_TOKEN: &str = "xenpal-netback-control";
/// How often dom0 polls host sockets and frontends without
/// `feature-rx-notify`.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How often dom0 polls host sockets while the gateway is busy: host
/// sockets raise no event in the simulator, so a request arriving from
/// the host waits for the next poll. At 1 ms, one client got about 1,300
/// requests/s; at 50 µs, 4,400.
const BUSY_POLL_INTERVAL: Duration = Duration::from_micros(50);
/// How long the gateway counts as busy after a host connection arrives or
/// a byte moves (nanoseconds); after that dom0 goes back to
/// [`POLL_INTERVAL`], so an idle demo costs little CPU.
const BUSY_WINDOW: u64 = 20_000_000;

/// A vif: the frontend domain and the device index (`vif<domid>.<index>`).
#[doc(alias = "vif")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VifId {
    /// The guest.
    pub domid: DomId,
    /// Its device index (`device/vif/<index>`).
    pub index: u32,
}

impl fmt::Display for VifId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vif{}.{}", self.domid.0, self.index)
    }
}

/// A MAC address as xenstore writes it: `00:16:3e:00:00:01`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a toolstack describes a vif.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifConfig {
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The switch to join.
    pub bridge: String,
    /// The IP MTU to suggest to the frontend (`mtu` node), if any.
    pub mtu: Option<usize>,
}

impl VifConfig {
    /// A vif with `mac` on [`DEFAULT_BRIDGE`].
    pub fn new(mac: [u8; 6]) -> Self {
        VifConfig {
            mac,
            bridge: DEFAULT_BRIDGE.into(),
            mtu: None,
        }
    }
}

/// A vif given to a guest with [`NetBackend::add_vif`]: where its xenstore
/// nodes are, and the toolstack's controls over its backend (as
/// [`Vbd`](crate::backends::blk::Vbd) is a disk's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vif {
    id: VifId,
    frontend: String,
    backend: String,
}

impl Vif {
    /// The guest and device index.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// The frontend's directory (`/local/domain/<domid>/device/vif/<index>`).
    pub fn frontend_path(&self) -> &str {
        &self.frontend
    }

    /// The backend's directory (`/local/domain/0/backend/vif/<domid>/<index>`).
    pub fn backend_path(&self) -> &str {
        &self.backend
    }

    /// Stop the backend, as if its driver were unloaded: it disconnects
    /// (state `Closing`, then `Closed`) and stays so until
    /// [`start`](Self::start).
    ///
    /// Errors: [`XenstoreWriteError::Write`] of the command node under
    /// [`CONTROL_ROOT`].
    pub fn stop(&self, sim: &Sim) -> Result<(), XenstoreWriteError> {
        self.command(sim, "stop")
    }

    /// Start a backend stopped with [`stop`](Self::stop); it serves the
    /// frontend again once the frontend is back in `Initialising`.
    ///
    /// Errors: as [`stop`](Self::stop).
    pub fn start(&self, sim: &Sim) -> Result<(), XenstoreWriteError> {
        self.command(sim, "start")
    }

    fn command(&self, sim: &Sim, what: &str) -> Result<(), XenstoreWriteError> {
        let VifId { domid, index } = self.id;
        sim.xenstore_write(&format!("{CONTROL_ROOT}/{}/{index}", domid.0), what)
    }
}

/// What dom0 sees of one vif.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifStatus {
    /// The backend's xenbus state.
    pub state: XenbusState,
    /// Stopped with [`Vif::stop`].
    pub stopped: bool,
    /// The switch it is on.
    pub bridge: String,
    /// Counters.
    pub counters: VifCounters,
    /// What the link's faults did (all zero on a perfect link).
    pub faults: FaultCounters,
    /// Why the backend gave up on the frontend, if it did (the text of its
    /// `error` node).
    pub error: Option<VifError>,
}

/// A snapshot of the network, taken at the end of each of dom0's rounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    /// Every vif dom0 knows.
    pub vifs: BTreeMap<VifId, VifStatus>,
    /// Foreign pages dom0 has mapped (two per connected vif; 0 when all are
    /// disconnected).
    pub grant_mappings: usize,
    /// Frames the switches forwarded.
    pub frames_switched: u64,
    /// Host connections the gateway accepted.
    pub forwarded_connections: u64,
    /// Why the network stopped, if it did (dom0 could not run it at all).
    pub error: Option<NetbackError>,
    /// dom0's rounds so far.
    pub rounds: u64,
}

/// A handle on the network's state, for tests and demos; cheap to clone,
/// `Send`.
#[derive(Clone, Debug, Default)]
pub struct NetStatus(Arc<Mutex<NetSnapshot>>);

impl NetStatus {
    /// The latest snapshot.
    pub fn snapshot(&self) -> NetSnapshot {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One vif's status.
    pub fn vif(&self, domid: DomId, index: u32) -> Option<VifStatus> {
        self.0
            .lock()
            .ok()?
            .vifs
            .get(&VifId { domid, index })
            .cloned()
    }
}

struct GatewayConfig {
    mac: [u8; 6],
    ip: Ipv4Addr,
    prefix: u8,
    bridge: String,
}

/// dom0's side of the virtual network, configured before it runs. See the
/// [module documentation](self).
#[doc(alias = "netback")]
pub struct NetBackend {
    vif_captures: BTreeMap<VifId, PcapWriter>,
    bridge_captures: BTreeMap<String, PcapWriter>,
    gateway: Option<GatewayConfig>,
    forwards: Vec<Forward>,
    faults: BTreeMap<VifId, LinkFaults>,
    status: NetStatus,
}

impl Default for NetBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for NetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetBackend")
            .field("vif_captures", &self.vif_captures.keys())
            .field("bridge_captures", &self.bridge_captures.keys())
            .field("forwards", &self.forwards)
            .finish()
    }
}

impl NetBackend {
    /// Give guest `domid` vif `index` with `mac` on [`DEFAULT_BRIDGE`], as
    /// a toolstack does: the frontend and backend xenstore nodes, which
    /// the backend finds once it runs (before or after this call).
    ///
    /// Errors: the first [`XenstoreWriteError`] (a vif is only xenstore
    /// nodes until dom0 sees it).
    pub fn add_vif(
        &self,
        sim: &Sim,
        domid: DomId,
        index: u32,
        mac: [u8; 6],
    ) -> Result<Vif, XenstoreWriteError> {
        self.add_vif_with(sim, domid, index, &VifConfig::new(mac))
    }

    /// [`add_vif`](Self::add_vif) with every setting.
    ///
    /// Errors: as [`add_vif`](Self::add_vif).
    pub fn add_vif_with(
        &self,
        sim: &Sim,
        domid: DomId,
        index: u32,
        cfg: &VifConfig,
    ) -> Result<Vif, XenstoreWriteError> {
        let mac = mac_string(cfg.mac);
        let handle = index.to_string();
        let mtu = cfg.mtu.map(|m| m.to_string());
        let mut fe: Vec<(&str, &str)> = vec![("mac", &mac), ("handle", &handle)];
        if let Some(m) = &mtu {
            fe.push(("mtu", m));
        }
        let be = [
            ("mac", mac.as_str()),
            ("handle", handle.as_str()),
            ("bridge", cfg.bridge.as_str()),
            ("type", "vif"),
        ];
        let (frontend, backend) = sim.add_device(domid, "vif", index, &fe, &be)?;
        Ok(Vif {
            id: VifId { domid, index },
            frontend,
            backend,
        })
    }

    /// A network with no captures and no gateway.
    pub fn new() -> Self {
        NetBackend {
            vif_captures: BTreeMap::new(),
            bridge_captures: BTreeMap::new(),
            gateway: None,
            forwards: Vec::new(),
            faults: BTreeMap::new(),
            status: NetStatus::default(),
        }
    }

    /// Put `faults` on the link of vif `index` of `domid` (both
    /// directions), from the start. Seed them from the run's seed (and the
    /// vif, so links differ) and a deterministic run replays them exactly.
    pub fn link_faults(&mut self, domid: DomId, index: u32, faults: LinkFaults) {
        self.faults.insert(VifId { domid, index }, faults);
    }

    /// Capture the link of vif `index` of `domid` (both directions, as the
    /// guest sees it) to a pcap file at `path`, created now.
    ///
    /// Errors: creating the file.
    pub fn capture_vif(
        &mut self,
        domid: DomId,
        index: u32,
        path: impl AsRef<Path>,
    ) -> std::io::Result<()> {
        self.vif_captures
            .insert(VifId { domid, index }, PcapWriter::create(path)?);
        Ok(())
    }

    /// Capture every frame entering switch `bridge` to a pcap file at
    /// `path`, created now.
    ///
    /// Errors: creating the file.
    pub fn capture_bridge(&mut self, bridge: &str, path: impl AsRef<Path>) -> std::io::Result<()> {
        self.bridge_captures
            .insert(bridge.into(), PcapWriter::create(path)?);
        Ok(())
    }

    /// Put dom0's gateway node on [`DEFAULT_BRIDGE`] with address
    /// `ip/prefix` (MAC `02:00:00:00:00:01`). Needed by
    /// [`forward`](Self::forward).
    pub fn gateway(&mut self, ip: Ipv4Addr, prefix: u8) {
        self.gateway = Some(GatewayConfig {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            ip,
            prefix,
            bridge: DEFAULT_BRIDGE.into(),
        });
    }

    /// Forward `127.0.0.1:<host_port>` of the host (0: any free port) to
    /// `guest_ip:guest_port` in the virtual network, through the gateway.
    /// The port is bound now; returns it. Meant for
    /// [`crate::Mode::FreeRunning`].
    ///
    /// Errors: binding the port; `InvalidInput` without a
    /// [`gateway`](Self::gateway).
    pub fn forward(
        &mut self,
        host_port: u16,
        guest_ip: Ipv4Addr,
        guest_port: u16,
    ) -> std::io::Result<u16> {
        if self.gateway.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "port forwarding needs a gateway (NetBackend::gateway)",
            ));
        }
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        self.forwards.push(Forward {
            listener,
            to: IpEndpoint::new(guest_ip.into(), guest_port),
        });
        Ok(port)
    }

    /// A handle on the network's state.
    pub fn status(&self) -> NetStatus {
        self.status.clone()
    }

    /// Run the network as dom0's task.
    ///
    /// Errors: [`SimError::Dom0Busy`] if dom0 already runs a task (then
    /// call [`serve`](Self::serve) from that task instead).
    pub fn spawn(self, sim: &mut Sim) -> Result<NetStatus, SimError> {
        let status = self.status();
        sim.spawn_dom0(move |p| async move { self.serve(&p).await })?;
        Ok(status)
    }

    /// Run the network in dom0 (`p` is dom0's platform); never returns
    /// unless dom0 cannot run it at all (no xenstore, no memory for staging
    /// pages), which is logged and shown in [`NetSnapshot::error`].
    pub async fn serve(self, p: &SimPlatform) {
        let status = self.status.clone();
        if let Err(e) = self.serve_inner(p).await {
            log::error!("netback: {e}");
            if let Ok(mut s) = status.0.lock() {
                s.error = Some(e);
            }
        }
    }

    async fn serve_inner(self, p: &SimPlatform) -> Result<(), NetbackError> {
        let xs = p.xenstore().ok_or(NetbackError::NoXenstore)?.clone();
        let xe = NetbackError::Xenstore;
        let mut watcher = DeviceWatcher::new(&xs, "/local/domain/0", "vif")
            .await
            .map_err(xe)?;
        xs.watch(CONTROL_ROOT, CONTROL_TOKEN).await.map_err(xe)?;
        let mut staging = Staging::new(p)?;
        let gateway_mac = self.gateway.as_ref().map(|g| g.mac);
        let gateway = self.gateway.map(|g| {
            let gw = Gateway::new(
                g.mac,
                g.ip,
                g.prefix,
                self.forwards,
                p.timer().now().as_nanos(),
            );
            (gw, g.bridge)
        });
        let mut net = Net {
            vifs: BTreeMap::new(),
            incomplete: BTreeSet::new(),
            by_dir: BTreeMap::new(),
            switches: BTreeMap::new(),
            vif_captures: self.vif_captures,
            bridge_captures: self.bridge_captures,
            gateway,
            gateway_mac,
            gateway_due: 0,
            links: self
                .faults
                .into_iter()
                .filter(|(_, f)| f.any())
                .map(|(id, f)| (id, FaultyLink::new(f)))
                .collect(),
            held: BinaryHeap::new(),
            held_seq: 0,
            status: self.status,
            rounds: 0,
        };
        if let Some((_, bridge)) = &net.gateway {
            net.switches
                .entry(bridge.clone())
                .or_default()
                .attach(PortId::Gateway);
        }
        loop {
            while let Some(change) = watcher.try_next().await.map_err(xe)? {
                match change {
                    DeviceChange::Added(dir) => net.add(p, &xs, dir).await,
                    DeviceChange::Removed(dir) => net.remove(p, &dir),
                }
            }
            for dir in std::mem::take(&mut net.incomplete) {
                net.add(p, &xs, dir).await;
            }
            let mut control = false;
            while xs.try_watch_event_for(CONTROL_TOKEN).map_err(xe)?.is_some() {
                control = true;
            }
            if control {
                let ids: Vec<VifId> = net.vifs.keys().copied().collect();
                for id in ids {
                    net.apply_control(p, &xs, id).await;
                }
            }
            // Packets before state changes: what a frontend sent just
            // before closing still goes out.
            net.move_packets(p, &mut staging).await;
            for vif in net.vifs.values_mut() {
                if vif.dev.peer_changed().map_err(xe)? {
                    vif.peer_dirty = true;
                }
                if vif.peer_dirty
                    && let Err(e) = vif.handle_peer(p).await
                {
                    log::warn!("netback {}: {e}", vif.id);
                }
            }
            net.sync_switches();
            net.publish_status(p);
            net.idle(p, &xs).await;
        }
    }
}

type Xs = XenStore<crate::SimHypervisor>;

/// dom0's running network.
/// A frame a faulty link delayed: when it is due (nanoseconds), the order
/// it was held in (so frames due together leave in order), where it goes,
/// and the frame.
type HeldFrame = (u64, u64, PortId, Vec<u8>);

struct Net {
    vifs: BTreeMap<VifId, VifBackend>,
    /// Backend directories the toolstack is still writing.
    incomplete: BTreeSet<String>,
    by_dir: BTreeMap<String, VifId>,
    switches: BTreeMap<String, Switch>,
    vif_captures: BTreeMap<VifId, PcapWriter>,
    bridge_captures: BTreeMap<String, PcapWriter>,
    gateway: Option<(Gateway, String)>,
    /// The gateway's MAC: large TCP segments for it are not cut.
    gateway_mac: Option<[u8; 6]>,
    /// When the gateway's smoltcp wants to run (nanoseconds).
    gateway_due: u64,
    /// Faulty links, by vif.
    links: BTreeMap<VifId, FaultyLink>,
    /// Frames a faulty link delayed, soonest due first.
    held: BinaryHeap<Reverse<HeldFrame>>,
    held_seq: u64,
    status: NetStatus,
    rounds: u64,
}

/// `.../backend/vif/<domid>/<index>` → the vif.
fn parse_dir(dir: &str) -> Option<VifId> {
    let mut it = dir.rsplit('/');
    let index = it.next()?.parse().ok()?;
    let domid = it.next()?.parse().ok()?;
    Some(VifId {
        domid: DomId(domid),
        index,
    })
}

impl Net {
    /// Serve a new backend directory, once the toolstack has finished it
    /// (its `state` node, written last, exists); until then it is retried
    /// at every wake-up.
    async fn add(&mut self, p: &SimPlatform, xs: &Xs, dir: String) {
        let Some(id) = parse_dir(&dir) else {
            log::warn!("netback: ignoring {dir}");
            return;
        };
        self.incomplete.remove(&dir);
        match xs.read(TxId::NONE, &format!("{dir}/state")).await {
            Ok(_) => {}
            Err(e) if e.is_enoent() => {
                self.incomplete.insert(dir);
                return;
            }
            Err(e) => {
                log::warn!("netback {id}: {e}");
                return;
            }
        }
        let dev = match XenbusDevice::open_backend(xs, &dir).await {
            Ok(d) => d,
            Err(e) => {
                log::warn!("netback {id}: {e}");
                return;
            }
        };
        let bridge = match dev.read_own("bridge").await {
            Ok(Some(b)) if !b.is_empty() => b,
            _ => DEFAULT_BRIDGE.into(),
        };
        if let Err(e) = dev.watch_peer().await {
            log::warn!("netback {id}: {e}");
            return;
        }
        log::info!("netback {id}: new vif on {bridge}");
        let mut vif = VifBackend::new(id, dev, bridge);
        vif.capture = self.vif_captures.remove(&id);
        self.vifs.insert(id, vif);
        self.by_dir.insert(dir, id);
        self.apply_control(p, xs, id).await;
        if let Some(vif) = self.vifs.get_mut(&id)
            && !vif.is_stopped()
            && let Err(e) = vif.publish().await
        {
            log::warn!("netback {id}: {e}");
        }
    }

    fn remove(&mut self, p: &SimPlatform, dir: &str) {
        self.incomplete.remove(dir);
        let Some(id) = self.by_dir.remove(dir) else {
            return;
        };
        if let Some(mut vif) = self.vifs.remove(&id) {
            log::info!("netback {id}: vif removed");
            vif.disconnect(p);
            if let Some(sw) = self.switches.get_mut(&vif.bridge) {
                sw.detach(PortId::Vif(id));
            }
            if let Some(cap) = vif.capture.take() {
                self.vif_captures.insert(id, cap);
            }
        }
    }

    async fn apply_control(&mut self, p: &SimPlatform, xs: &Xs, id: VifId) {
        let path = format!("{CONTROL_ROOT}/{}/{}", id.domid.0, id.index);
        let cmd = match xs.read_string(TxId::NONE, &path).await {
            Ok(c) => c,
            Err(e) if e.is_enoent() => return,
            Err(e) => {
                log::warn!("netback {id}: reading {path}: {e}");
                return;
            }
        };
        let Some(vif) = self.vifs.get_mut(&id) else {
            return;
        };
        let r = match cmd.trim() {
            "stop" => vif.stop(p).await,
            "start" => {
                vif.start();
                Ok(())
            }
            other => {
                log::warn!("netback {id}: unknown command {other:?}");
                Ok(())
            }
        };
        if let Err(e) = r {
            log::warn!("netback {id}: {e}");
        }
    }

    /// Ports join their switch while connected.
    fn sync_switches(&mut self) {
        for (id, vif) in &self.vifs {
            let sw = self.switches.entry(vif.bridge.clone()).or_default();
            let port = PortId::Vif(*id);
            match (vif.is_connected(), sw.has(port)) {
                (true, false) => sw.attach(port),
                (false, true) => sw.detach(port),
                _ => {}
            }
        }
    }

    /// Move packets until nothing moves: from guests and the gateway,
    /// through the switches, into guests and the gateway.
    async fn move_packets(&mut self, p: &SimPlatform, staging: &mut Staging) {
        let now = p.timer().now().as_nanos();
        let mut frames: Vec<(PortId, Vec<u8>)> = Vec::new();
        let mut out = Vec::new();
        let mut dests = Vec::new();
        let mut fatal: Vec<(VifId, VifError)> = Vec::new();
        let mut staged: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut passed: Vec<(u64, Vec<u8>)> = Vec::new();
        // Who takes large TCP segments whole: dom0's own stack, and
        // frontends that offered to (connections change only between calls).
        let whole_to: Vec<[u8; 6]> = self
            .gateway_mac
            .into_iter()
            .chain(self.vifs.values().filter_map(|v| v.takes_large()))
            .collect();
        for _ in 0..64 {
            let mut progress = false;
            // Frames a faulty link held back, now due.
            while self.held.peek().is_some_and(|Reverse(h)| h.0 <= now) {
                let Some(Reverse((_, _, to, frame))) = self.held.pop() else {
                    break;
                };
                self.deliver(to, frame);
                progress = true;
            }
            for (id, vif) in self.vifs.iter_mut() {
                match vif.process_tx(p, staging, now, &mut out, &whole_to) {
                    Ok(moved) => progress |= moved,
                    Err(msg) => fatal.push((*id, msg)),
                }
                frames.extend(out.drain(..).map(|f| (PortId::Vif(*id), f)));
            }
            if let Some((gw, _)) = &mut self.gateway
                && (!gw.queues.rx.is_empty() || gw.has_forwards() || now >= self.gateway_due)
            {
                self.gateway_due = gw.poll(now).unwrap_or(u64::MAX);
                frames.extend(gw.queues.tx.drain(..).map(|f| (PortId::Gateway, f)));
            }
            for (from, frame) in frames.drain(..) {
                let bridge = match from {
                    PortId::Vif(id) => self.vifs.get(&id).map(|v| v.bridge.clone()),
                    PortId::Gateway => self.gateway.as_ref().map(|(_, b)| b.clone()),
                };
                let Some(bridge) = bridge else { continue };
                if let Some(cap) = self.bridge_captures.get_mut(&bridge) {
                    let _ = cap.write_packet(now, &frame);
                }
                let Some(sw) = self.switches.get_mut(&bridge) else {
                    continue;
                };
                dests.clear();
                sw.forward(from, &frame, &mut dests);
                progress |= !dests.is_empty();
                let n = dests.len();
                let mut frame = Some(frame);
                for (i, d) in dests.iter().enumerate() {
                    let f = if i + 1 == n {
                        frame.take().unwrap_or_default()
                    } else {
                        frame.clone().unwrap_or_default()
                    };
                    if self.links.is_empty() {
                        self.deliver(*d, f);
                        continue;
                    }
                    // The sender's link, then the receiver's.
                    staged.clear();
                    staged.push((now, f));
                    for end in [from, *d] {
                        let PortId::Vif(id) = end else { continue };
                        let Some(link) = self.links.get_mut(&id) else {
                            continue;
                        };
                        passed.clear();
                        for (t, f) in staged.drain(..) {
                            link.pass(t, f, &mut passed);
                        }
                        std::mem::swap(&mut staged, &mut passed);
                    }
                    for (t, f) in staged.drain(..) {
                        if t <= now {
                            self.deliver(*d, f);
                        } else {
                            self.held_seq += 1;
                            self.held.push(Reverse((t, self.held_seq, *d, f)));
                        }
                    }
                }
            }
            for (id, vif) in self.vifs.iter_mut() {
                match vif.deliver_rx(p, staging, now) {
                    Ok(moved) => progress |= moved,
                    Err(msg) => fatal.push((*id, msg)),
                }
            }
            if !fatal.is_empty() {
                break;
            }
            let gateway_waits = self
                .gateway
                .as_ref()
                .is_some_and(|(gw, _)| !gw.queues.rx.is_empty());
            if !progress && !gateway_waits {
                break;
            }
        }
        for (id, msg) in fatal {
            if let Some(vif) = self.vifs.get_mut(&id)
                && let Err(e) = vif.fail(p, msg).await
            {
                log::warn!("netback {id}: {e}");
            }
        }
        self.sync_switches();
    }

    /// Hand `frame` to its destination's queue.
    fn deliver(&mut self, to: PortId, frame: Vec<u8>) {
        match to {
            PortId::Vif(id) => {
                if let Some(v) = self.vifs.get_mut(&id) {
                    v.enqueue(frame);
                }
            }
            PortId::Gateway => {
                if let Some((gw, _)) = &mut self.gateway {
                    gw.queues.rx.push_back(frame);
                }
            }
        }
    }

    fn publish_status(&mut self, p: &SimPlatform) {
        self.rounds += 1;
        let Ok(mut s) = self.status.0.lock() else {
            return;
        };
        s.rounds = self.rounds;
        s.grant_mappings = p.grants().active_mappings();
        s.frames_switched = self.switches.values().map(|sw| sw.frames).sum();
        s.forwarded_connections = self.gateway.as_ref().map_or(0, |(g, _)| g.accepted);
        s.vifs.retain(|id, _| self.vifs.contains_key(id));
        for (id, vif) in &self.vifs {
            let v = VifStatus {
                state: vif.state(),
                stopped: vif.is_stopped(),
                bridge: vif.bridge.clone(),
                counters: vif.counters,
                faults: self.links.get(id).map(|l| l.counters).unwrap_or_default(),
                error: vif.error.clone(),
            };
            if s.vifs.get(id) != Some(&v) {
                s.vifs.insert(*id, v);
            }
        }
    }

    /// Sleep until a vif's channel or xenstore fires, or until polling is
    /// due (host sockets, frontends without `feature-rx-notify`, the
    /// gateway's timers).
    async fn idle(&mut self, p: &SimPlatform, xs: &Xs) {
        let now = p.timer().now();
        let mut wake = Instant::MAX;
        let poll_soon = self.vifs.values().any(|v| v.needs_polling())
            || self.gateway.as_ref().is_some_and(|(g, _)| g.has_forwards());
        if poll_soon {
            let busy = self
                .gateway
                .as_ref()
                .is_some_and(|(g, _)| now.as_nanos() < g.last_active.saturating_add(BUSY_WINDOW));
            wake = now
                + if busy {
                    BUSY_POLL_INTERVAL
                } else {
                    POLL_INTERVAL
                };
        }
        if self.gateway.is_some() && self.gateway_due != u64::MAX {
            wake = wake.min(Instant::from_nanos(self.gateway_due));
        }
        if let Some(Reverse((due, ..))) = self.held.peek() {
            wake = wake.min(Instant::from_nanos(*due));
        }
        let ports: Vec<EventPort> = self
            .vifs
            .values()
            .filter_map(|v| v.port())
            .chain([xs.port()])
            .collect();
        let events = p.events();
        let timer = p.timer();
        poll_fn(|cx| {
            let fired = |ports: &[EventPort]| {
                ports
                    .iter()
                    .fold(false, |any, &port| events.take_pending(port) | any)
            };
            if fired(&ports) || timer.now() >= wake {
                return Poll::Ready(());
            }
            for &port in &ports {
                events.register_waker(port, cx.waker());
            }
            if wake != Instant::MAX {
                timer.schedule_wake(wake, cx.waker());
            }
            if fired(&ports) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_and_macs() {
        assert_eq!(
            parse_dir("/local/domain/0/backend/vif/7/1"),
            Some(VifId {
                domid: DomId(7),
                index: 1
            })
        );
        assert_eq!(parse_dir("/local/domain/0/backend/vif/x/1"), None);
        assert_eq!(
            mac_string([0, 0x16, 0x3e, 1, 0xab, 0xff]),
            "00:16:3e:01:ab:ff"
        );
        assert_eq!(
            VifId {
                domid: DomId(3),
                index: 0
            }
            .to_string(),
            "vif3.0"
        );
    }
}
