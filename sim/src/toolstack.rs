//! An xl-like toolstack for the simulator: build guests from a
//! [`DomainSpec`] (xl's domain configuration, see [`crate::xl`]), give them
//! their vifs and disks, then start dom0's backends and let the guests run.
//!
//! ```no_run
//! use xenpal_sim::toolstack::Toolstack;
//! use xenpal_sim::xl::DomainSpec;
//! use xenpal_sim::{Mode, SimConfig};
//!
//! let spec = DomainSpec::from_file("apps/site.cfg").unwrap();
//! let mut ts = Toolstack::new(SimConfig {
//!     mode: Mode::FreeRunning { threads: 2 },
//!     echo_console: true,
//!     ..SimConfig::default()
//! });
//! let dom = ts
//!     .create(&spec, |p| async move { /* the guest's main, on its SimPlatform */ })
//!     .unwrap(); // built paused, with its vifs and disks
//! let running = ts.start().unwrap(); // dom0 serves netback and blkback; guests unpaused
//! println!("http://127.0.0.1:{}/", running.forwarded_port(dom, 80).unwrap());
//! ```
//!
//! What [`Toolstack::create`] does, as `xl create` does with libxl:
//!
//! 1. Checks the whole spec and prepares its disks before building
//!    anything: a disk whose target is a file is served from that raw image
//!    ([`Disk::file`]); a target that is a **directory** (xenpal's
//!    extension) is packed into FAT images with [`xenpal_fatimg`] of at most
//!    [`DEFAULT_IMAGE_MAX_BYTES`] each ([`Toolstack::fat_image_max_bytes`];
//!    a file too large for that gets an image of its own, as large as it
//!    needs, so any file FAT32 holds works), each attached as its own
//!    read-only disk: the first at the spec's `vdev`, the others at the
//!    next free ones (`xvdb`, `xvdc`, ...), so a large directory spans
//!    several disks. The images are written to files in the host's
//!    temporary directory (`$TMPDIR`, else `/tmp`; it needs room for the
//!    directory's contents), which are deleted as soon as they are open and
//!    served from the open files: a site is never held in memory, and
//!    nothing is left behind however the process ends.
//! 2. Sets up the network: the guest's address is its first vif with an
//!    `ip=`, written to `/local/domain/<domid>/data/ip` as `a.b.c.d/prefix`
//!    (what `apps/src/site.rs` reads). The first guest with an address
//!    also places dom0's gateway node on `xenbr0` in its subnet: at the
//!    vif's `gateway=` if given, else at host address 1 (`.1`), or the last
//!    one (`.254`) if `.1` is the guest's own. Every guest in that subnet
//!    gets `data/gateway`. Host port forwards (`xenpal_forward`) go through
//!    the gateway to the guest's address, and are bound now (port 0: any
//!    free one; [`Toolstack::forwarded_port`] says which).
//! 3. Builds the domain paused (`memory` × 256 pages), then writes its
//!    devices to xenstore: vif `N` with the spec's MAC (default
//!    `00:16:3e:00:<domid>:<N>`), bridge (default `xenbr0`) and MTU, and
//!    every disk through the one [`Blkback`].
//!
//! [`Toolstack::start`] then runs dom0 (one [`NetBackend`] and one
//! [`Blkback`] for every domain, in dom0's one task) and unpauses every
//! guest created, returning a [`Running`] handle: the [`Sim`] (to
//! [`run`](Sim::run) it in deterministic mode), domain status, forwarded
//! ports.
//!
//! # Limits
//!
//! - Disks are `xvda` to `xvdp` (blkback's 16 per guest).
//! - One gateway for the whole network, in the first addressed guest's
//!   subnet on `xenbr0`: a forward to a guest outside it, or whose vif is
//!   on another bridge, is refused.
//! - Memory is host memory, allocated when the domain is built: at most
//!   [`MAX_MEMORY_MIB`] per guest.
//! - A `create` that fails after building the domain (a xenstore error,
//!   which a well-formed spec does not cause) leaves it built and paused:
//!   the simulator has no way to destroy a domain from outside. One whose
//!   second or later forward cannot bind leaves the earlier forwards bound.

use crate::backends::blk::{Blkback, Disk, Vbd, VbdError, VbdOptions};
use crate::backends::net::{DEFAULT_BRIDGE, NetBackend, NetStatus, VifConfig};
use crate::xl::DomainSpec;
use crate::{
    DomainConfig, DomainStatus, RunReport, Sim, SimConfig, SimError, SimPlatform,
    XenstoreWriteError,
};
use hal::DomId;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use xenpal_fatimg::{FatError, FatImage};

/// The largest FAT image a directory is packed into, by default: 64 MiB.
pub const DEFAULT_IMAGE_MAX_BYTES: u64 = 64 << 20;

/// The most RAM a guest may have, in MiB: the simulator allocates it on the
/// host when it builds the domain.
pub const MAX_MEMORY_MIB: u64 = 4096;

/// Pages of 4 KiB per MiB.
const PAGES_PER_MIB: u64 = 256;

/// Disks per guest: blkback's `xvda` to `xvdp`.
const MAX_DISKS: u32 = 16;

/// Why the toolstack could not do what it was asked. Each variant says
/// which step failed and names the path, device or port at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum ToolstackError {
    /// `memory` out of range.
    Memory {
        /// The spec's `memory`, in MiB.
        mib: u64,
        /// The most allowed ([`MAX_MEMORY_MIB`]).
        max: u64,
    },
    /// A `vdev` the simulator cannot give: only `xvda` to `xvdp`.
    BadVdev {
        /// The vdev.
        vdev: String,
    },
    /// Two disks with one `vdev`.
    DuplicateVdev {
        /// The vdev.
        vdev: String,
    },
    /// A directory needs more FAT images than there are free vdevs.
    TooManyDisks {
        /// The directory.
        path: PathBuf,
        /// The images it needs.
        images: usize,
    },
    /// A disk's target is missing or cannot be opened.
    DiskTarget {
        /// The target.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An image file whose size is not a non-zero multiple of 512 bytes
    /// (or that is not a regular file).
    DiskSize {
        /// The target.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A directory target with no files in it.
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A directory target could not be packed into FAT images (an
    /// unreadable entry, a name FAT cannot hold, a file too large for an
    /// image, ...).
    Pack {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: FatError,
    },
    /// A guest address already taken, by another guest or by dom0's
    /// gateway.
    AddressInUse {
        /// The address.
        ip: Ipv4Addr,
    },
    /// A port forward that cannot reach the guest (no `ip=` on any vif,
    /// outside the gateway's subnet, on another bridge than the gateway's).
    ForwardUnreachable {
        /// The guest's port.
        guest_port: u16,
        /// Why.
        why: UnreachableReason,
    },
    /// A forwarded host port could not be bound.
    Forward {
        /// The host port asked for.
        host_port: u16,
        /// The error.
        source: io::Error,
    },
    /// The simulator refused to build the domain.
    Spawn(SimError),
    /// Writing the domain's xenstore nodes (`data/ip`, `data/gateway`)
    /// failed; the error names the node.
    Xenstore(XenstoreWriteError),
    /// Adding a vif failed: writing its xenstore nodes.
    AddVif {
        /// The vif's index.
        index: u32,
        /// The failed write.
        source: XenstoreWriteError,
    },
    /// Adding a disk failed: blkback refused it.
    AddVbd {
        /// The disk's vdev.
        vdev: String,
        /// Why.
        source: VbdError,
    },
    /// dom0 could not be started (it already runs a task).
    Dom0(SimError),
    /// A guest could not be unpaused.
    Unpause {
        /// The guest.
        domid: DomId,
        /// Why.
        source: SimError,
    },
}

impl fmt::Display for ToolstackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolstackError::Memory { mib, max } => {
                write!(f, "memory = {mib}: a guest has 1 to {max} MiB")
            }
            ToolstackError::BadVdev { vdev } => write!(
                f,
                "disk vdev {vdev:?}: the simulator's blkback gives xvda to xvdp"
            ),
            ToolstackError::DuplicateVdev { vdev } => {
                write!(f, "disk vdev {vdev:?} given twice")
            }
            ToolstackError::TooManyDisks { path, images } => write!(
                f,
                "{}: packed into {images} FAT images, more than the free vdevs (up to xvdp)",
                path.display()
            ),
            ToolstackError::DiskTarget { path, source } => {
                write!(f, "disk target {}: {source}", path.display())
            }
            ToolstackError::DiskSize { path, bytes } => write!(
                f,
                "disk target {}: {bytes} bytes, not a non-zero multiple of 512",
                path.display()
            ),
            ToolstackError::EmptyDirectory { path } => {
                write!(
                    f,
                    "disk target {}: a directory with no files",
                    path.display()
                )
            }
            ToolstackError::Pack { path, source } => write!(
                f,
                "disk target {}: packing it into FAT images: {source}",
                path.display()
            ),
            ToolstackError::AddressInUse { ip } => write!(f, "address {ip} is already in use"),
            ToolstackError::ForwardUnreachable { guest_port, why } => {
                write!(f, "forward to guest port {guest_port}: {why}")
            }
            ToolstackError::Forward { host_port, source } => {
                write!(f, "cannot listen on 127.0.0.1:{host_port}: {source}")
            }
            ToolstackError::Spawn(e) => write!(f, "building the domain: {e}"),
            ToolstackError::Xenstore(e) => e.fmt(f),
            ToolstackError::AddVif { index, source } => write!(f, "adding vif {index}: {source}"),
            ToolstackError::AddVbd { vdev, source } => write!(f, "adding disk {vdev}: {source}"),
            ToolstackError::Dom0(e) => write!(f, "starting dom0's backends: {e}"),
            ToolstackError::Unpause { domid, source } => {
                write!(f, "unpausing d{}: {source}", domid.0)
            }
        }
    }
}

impl std::error::Error for ToolstackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ToolstackError::DiskTarget { source, .. } | ToolstackError::Forward { source, .. } => {
                Some(source)
            }
            ToolstackError::Pack { source, .. } => Some(source),
            ToolstackError::Spawn(e) | ToolstackError::Dom0(e) => Some(e),
            ToolstackError::Unpause { source, .. } => Some(source),
            ToolstackError::Xenstore(e) | ToolstackError::AddVif { source: e, .. } => Some(e),
            ToolstackError::AddVbd { source, .. } => Some(source),
            ToolstackError::ForwardUnreachable { why, .. } => Some(why),
            _ => None,
        }
    }
}

/// Why a port forward cannot reach its guest
/// ([`ToolstackError::ForwardUnreachable`]): dom0's gateway must be able to
/// route to the guest's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnreachableReason {
    /// No vif of the guest has an `ip=`.
    NoAddress,
    /// The guest's address is outside the subnet of dom0's gateway.
    OutsideSubnet {
        /// The guest's address.
        addr: Ipv4Addr,
        /// dom0's gateway.
        gateway: Ipv4Addr,
        /// The gateway's prefix length.
        prefix: u8,
    },
    /// dom0 runs no gateway yet and the guest's subnet has no address
    /// left for one.
    NoRoomForGateway {
        /// The guest's address.
        addr: Ipv4Addr,
    },
    /// The guest's vif is on another bridge than dom0's gateway (which is
    /// on [`DEFAULT_BRIDGE`]).
    OtherBridge {
        /// The vif's bridge.
        bridge: String,
    },
}

impl fmt::Display for UnreachableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnreachableReason::NoAddress => f.write_str("the guest has no vif with an ip="),
            UnreachableReason::OutsideSubnet {
                addr,
                gateway,
                prefix,
            } => write!(
                f,
                "{addr} is outside dom0's gateway's subnet {gateway}/{prefix}"
            ),
            UnreachableReason::NoRoomForGateway { addr } => write!(
                f,
                "no room for dom0's gateway in the guest's subnet of {addr}"
            ),
            UnreachableReason::OtherBridge { bridge } => write!(
                f,
                "the guest's vif is on bridge {bridge}, dom0's gateway on {DEFAULT_BRIDGE}"
            ),
        }
    }
}

impl std::error::Error for UnreachableReason {}

/// What the toolstack gave one domain.
#[derive(Clone, Debug)]
pub struct DomainInfo {
    /// Its name.
    pub name: String,
    /// Its address (`data/ip`), if a vif has one.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Its router (`data/gateway`): dom0's gateway, if in its subnet.
    pub gateway: Option<Ipv4Addr>,
    /// Its disks, in the order attached.
    pub disks: Vec<AttachedDisk>,
    /// Its port forwards, with the host ports actually bound.
    pub forwards: Vec<Forwarded>,
}

/// A host port forwarded to a guest.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The host port bound on 127.0.0.1.
    pub host_port: u16,
    /// The guest's port.
    pub guest_port: u16,
}

/// One disk given to a guest.
#[derive(Clone, Debug)]
pub struct AttachedDisk {
    /// Its vdev (`xvda` ...).
    pub vdev: String,
    /// The spec's target: an image file, or the directory packed.
    pub target: PathBuf,
    /// Read-only (always, for a packed directory).
    pub read_only: bool,
    /// For a packed directory: which of its images this is.
    pub packed: Option<PackedImage>,
    /// blkback's handle on the disk (statistics, durable contents).
    pub vbd: Vbd,
}

/// One FAT image of a packed directory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PackedImage {
    /// Which image (from 0).
    pub index: usize,
    /// How many the directory needed.
    pub count: usize,
    /// Files in this image.
    pub files: u64,
    /// Bytes of file contents in this image.
    pub payload_bytes: u64,
}

/// The toolstack before its guests run: create domains, then
/// [`start`](Self::start). See the [module documentation](self).
pub struct Toolstack {
    sim: Sim,
    net: NetBackend,
    blk: Blkback,
    image_max_bytes: u64,
    /// dom0's gateway node: address and prefix.
    gateway: Option<(Ipv4Addr, u8)>,
    /// Guests' addresses.
    addresses: BTreeSet<Ipv4Addr>,
    domains: BTreeMap<DomId, DomainInfo>,
}

impl fmt::Debug for Toolstack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Toolstack")
            .field("gateway", &self.gateway)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

/// A disk ready to attach.
struct Prepared {
    index: u32,
    disk: Disk,
    target: PathBuf,
    read_only: bool,
    packed: Option<PackedImage>,
}

impl Toolstack {
    /// A toolstack over a new simulator with `config`.
    pub fn new(config: SimConfig) -> Self {
        Self::from_sim(Sim::new(config))
    }

    /// A toolstack over `sim`, whose dom0 must not run a task yet (the
    /// toolstack's backends run there).
    pub fn from_sim(sim: Sim) -> Self {
        Toolstack {
            sim,
            net: NetBackend::new(),
            blk: Blkback::new(),
            image_max_bytes: DEFAULT_IMAGE_MAX_BYTES,
            gateway: None,
            addresses: BTreeSet::new(),
            domains: BTreeMap::new(),
        }
    }

    /// Pack directories into FAT images of at most `bytes` each (at least
    /// about 2.1 MiB are needed for any image; see [`xenpal_fatimg::split`]),
    /// for domains created from now on. A file too large for such an image
    /// gets one of its own, as large as it needs.
    pub fn fat_image_max_bytes(&mut self, bytes: u64) -> &mut Self {
        self.image_max_bytes = bytes;
        self
    }

    /// The simulator, e.g. to spawn other domains by hand.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The simulator, mutably.
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// What the toolstack gave domain `dom`, if it created it.
    pub fn domain(&self, dom: DomId) -> Option<&DomainInfo> {
        self.domains.get(&dom)
    }

    /// The host port forwarded to `guest_port` of `dom` (the port actually
    /// bound, when the spec asked for 0).
    pub fn forwarded_port(&self, dom: DomId, guest_port: u16) -> Option<u16> {
        forwarded_port(&self.domains, dom, guest_port)
    }

    /// Build a domain from `spec`, paused, with its vifs and disks (see the
    /// [module documentation](self)); `main` is its guest code, as for
    /// [`Sim::spawn`]. It runs once [`start`](Self::start) is called.
    ///
    /// Errors, before anything is built: [`ToolstackError::Memory`],
    /// [`BadVdev`](ToolstackError::BadVdev),
    /// [`DuplicateVdev`](ToolstackError::DuplicateVdev),
    /// [`DiskTarget`](ToolstackError::DiskTarget) (a missing or unreadable
    /// target), [`DiskSize`](ToolstackError::DiskSize),
    /// [`EmptyDirectory`](ToolstackError::EmptyDirectory),
    /// [`Pack`](ToolstackError::Pack),
    /// [`TooManyDisks`](ToolstackError::TooManyDisks),
    /// [`AddressInUse`](ToolstackError::AddressInUse),
    /// [`ForwardUnreachable`](ToolstackError::ForwardUnreachable),
    /// [`Forward`](ToolstackError::Forward) (the port cannot be bound),
    /// [`Spawn`](ToolstackError::Spawn); after: [`Xenstore`](ToolstackError::Xenstore),
    /// [`AddVif`](ToolstackError::AddVif), [`AddVbd`](ToolstackError::AddVbd).
    pub fn create<F, Fut>(&mut self, spec: &DomainSpec, main: F) -> Result<DomId, ToolstackError>
    where
        F: FnOnce(SimPlatform) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if spec.memory_mib == 0 || spec.memory_mib > MAX_MEMORY_MIB {
            return Err(ToolstackError::Memory {
                mib: spec.memory_mib,
                max: MAX_MEMORY_MIB,
            });
        }
        let pages = usize::try_from(spec.memory_mib * PAGES_PER_MIB).unwrap_or(usize::MAX);

        // The network's plan.
        let addressed = spec.vifs.iter().find(|v| v.ip.is_some());
        let ip = addressed.and_then(|v| v.ip);
        if let Some((addr, _)) = ip
            && self.addresses.contains(&addr)
        {
            return Err(ToolstackError::AddressInUse { ip: addr });
        }
        let gateway = match (self.gateway, ip) {
            (Some(gw), Some((addr, _))) if gw.0 == addr => {
                return Err(ToolstackError::AddressInUse { ip: addr });
            }
            (Some(gw), _) => Some(gw),
            (None, Some((addr, prefix))) => {
                let wanted = addressed.and_then(|v| v.gateway);
                if wanted == Some(addr) {
                    return Err(ToolstackError::AddressInUse { ip: addr });
                }
                wanted
                    .or_else(|| default_gateway(addr, prefix))
                    .map(|gw| (gw, prefix))
            }
            (None, None) => None,
        };
        let my_gateway = match (gateway, ip) {
            (Some((gw, prefix)), Some((addr, _))) if same_subnet(gw, addr, prefix) => Some(gw),
            _ => None,
        };
        for f in &spec.forwards {
            let unreachable = |why| ToolstackError::ForwardUnreachable {
                guest_port: f.guest_port,
                why,
            };
            let Some((addr, _)) = ip else {
                return Err(unreachable(UnreachableReason::NoAddress));
            };
            if my_gateway.is_none() {
                return Err(unreachable(match gateway {
                    Some((gateway, prefix)) => UnreachableReason::OutsideSubnet {
                        addr,
                        gateway,
                        prefix,
                    },
                    None => UnreachableReason::NoRoomForGateway { addr },
                }));
            }
            let bridge = addressed
                .and_then(|v| v.bridge.as_deref())
                .unwrap_or(DEFAULT_BRIDGE);
            if bridge != DEFAULT_BRIDGE {
                return Err(unreachable(UnreachableReason::OtherBridge {
                    bridge: bridge.to_string(),
                }));
            }
        }

        // The disks, ready to attach.
        let prepared = self.prepare_disks(spec)?;

        // Forwards: bound now, so their ports are known.
        let mut forwards = Vec::new();
        if let (Some((addr, _)), Some((gw, prefix))) = (ip, gateway)
            && !spec.forwards.is_empty()
        {
            self.net.gateway(gw, prefix);
            for f in &spec.forwards {
                let host_port =
                    self.net
                        .forward(f.host_port, addr, f.guest_port)
                        .map_err(|source| ToolstackError::Forward {
                            host_port: f.host_port,
                            source,
                        })?;
                forwards.push(Forwarded {
                    host_port,
                    guest_port: f.guest_port,
                });
            }
        }

        // Build it, paused, and give it its devices.
        let cfg = DomainConfig::new(spec.name.clone())
            .memory_pages(pages)
            .paused();
        let dom = self.sim.spawn(cfg, main).map_err(ToolstackError::Spawn)?;
        let write = |node: &str, value: String| {
            let path = format!("/local/domain/{}/data/{node}", dom.0);
            self.sim
                .xenstore_write(&path, &value)
                .map_err(ToolstackError::Xenstore)
        };
        if let Some((addr, prefix)) = ip {
            write("ip", format!("{addr}/{prefix}"))?;
        }
        if let Some(gw) = my_gateway {
            write("gateway", gw.to_string())?;
        }
        for (index, vif) in (0u32..).zip(&spec.vifs) {
            let cfg = VifConfig {
                mac: vif.mac.unwrap_or([
                    0x00,
                    0x16,
                    0x3e,
                    (dom.0 >> 8) as u8 & 0x7f,
                    dom.0 as u8,
                    index as u8,
                ]),
                bridge: vif.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into()),
                mtu: vif.mtu.map(usize::from),
            };
            self.net
                .add_vif_with(&self.sim, dom, index, &cfg)
                .map_err(|source| ToolstackError::AddVif { index, source })?;
        }
        let mut disks = Vec::new();
        for p in prepared {
            let vdev = vdev_name(p.index);
            let mut options = VbdOptions::default();
            if p.read_only {
                options = options.read_only();
            }
            let vbd = self
                .blk
                .add_vbd(&self.sim, dom, p.index, p.disk, options)
                .map_err(|source| ToolstackError::AddVbd {
                    vdev: vdev.clone(),
                    source,
                })?;
            disks.push(AttachedDisk {
                vdev,
                target: p.target,
                read_only: p.read_only,
                packed: p.packed,
                vbd,
            });
        }

        if let Some((addr, _)) = ip {
            self.addresses.insert(addr);
        }
        if let Some((gw, prefix)) = gateway
            && self.gateway.is_none()
        {
            self.net.gateway(gw, prefix);
            self.gateway = Some((gw, prefix));
        }
        self.domains.insert(
            dom,
            DomainInfo {
                name: spec.name.clone(),
                ip,
                gateway: my_gateway,
                disks,
                forwards,
            },
        );
        Ok(dom)
    }

    /// Open or pack every disk of `spec`, giving each its blkback index.
    fn prepare_disks(&self, spec: &DomainSpec) -> Result<Vec<Prepared>, ToolstackError> {
        let mut used = BTreeSet::new();
        for d in &spec.disks {
            let index = vdev_index(&d.vdev).ok_or_else(|| ToolstackError::BadVdev {
                vdev: d.vdev.clone(),
            })?;
            if !used.insert(index) {
                return Err(ToolstackError::DuplicateVdev {
                    vdev: d.vdev.clone(),
                });
            }
        }
        let mut out = Vec::new();
        for d in &spec.disks {
            let path = &d.target;
            // Checked above.
            let first = vdev_index(&d.vdev).unwrap_or(0);
            let meta = std::fs::metadata(path).map_err(|source| ToolstackError::DiskTarget {
                path: path.clone(),
                source,
            })?;
            if !meta.is_dir() {
                out.push(Prepared {
                    index: first,
                    disk: open_image(path, d.read_only, meta.is_file())?,
                    target: path.clone(),
                    read_only: d.read_only,
                    packed: None,
                });
                continue;
            }
            let images = pack(path, self.image_max_bytes)?;
            let count = images.len();
            let mut index = first;
            for (n, (disk, packed)) in images.into_iter().enumerate() {
                if n > 0 {
                    index = (index + 1..MAX_DISKS)
                        .find(|i| !used.contains(i))
                        .ok_or_else(|| ToolstackError::TooManyDisks {
                            path: path.clone(),
                            images: count,
                        })?;
                    used.insert(index);
                }
                out.push(Prepared {
                    index,
                    disk,
                    target: path.clone(),
                    read_only: true,
                    packed: Some(packed),
                });
            }
        }
        Ok(out)
    }

    /// Start dom0, serving netback (with the gateway and its forwards) and
    /// blkback for every domain, and unpause every domain created.
    ///
    /// Errors: [`ToolstackError::Dom0`] if dom0 already runs a task (one
    /// spawned by hand on [`sim_mut`](Self::sim_mut));
    /// [`ToolstackError::Unpause`].
    pub fn start(self) -> Result<Running, ToolstackError> {
        let Toolstack {
            mut sim,
            net,
            blk,
            domains,
            ..
        } = self;
        let net_status = net.status();
        let backend = blk.clone();
        sim.spawn_dom0(move |p| async move {
            let n = std::pin::pin!(net.serve(&p));
            let b = std::pin::pin!(backend.serve(&p));
            let _ = hal::task::select(n, b).await;
        })
        .map_err(ToolstackError::Dom0)?;
        for &domid in domains.keys() {
            sim.unpause(domid)
                .map_err(|source| ToolstackError::Unpause { domid, source })?;
        }
        Ok(Running {
            sim,
            net: net_status,
            blk,
            domains,
        })
    }
}

/// The simulator with dom0's backends running and the guests unpaused,
/// from [`Toolstack::start`].
pub struct Running {
    sim: Sim,
    net: NetStatus,
    blk: Blkback,
    domains: BTreeMap<DomId, DomainInfo>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The simulator.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The simulator, mutably: to [`run`](Sim::run) it in deterministic
    /// mode, for one.
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// Run until every guest has exited or nothing can run
    /// ([`Sim::run`]).
    pub fn run(&mut self) -> RunReport {
        self.sim.run()
    }

    /// Domain `dom`'s state, as [`Sim::status`].
    pub fn status(&self, dom: DomId) -> Option<DomainStatus> {
        self.sim.status(dom)
    }

    /// The host port forwarded to `guest_port` of `dom`.
    pub fn forwarded_port(&self, dom: DomId, guest_port: u16) -> Option<u16> {
        forwarded_port(&self.domains, dom, guest_port)
    }

    /// What the toolstack gave domain `dom`.
    pub fn domain(&self, dom: DomId) -> Option<&DomainInfo> {
        self.domains.get(&dom)
    }

    /// The domains the toolstack created.
    pub fn domains(&self) -> impl Iterator<Item = DomId> + '_ {
        self.domains.keys().copied()
    }

    /// What dom0's network sees.
    pub fn net_status(&self) -> NetStatus {
        self.net.clone()
    }

    /// dom0's block backend (its disks' handles are in [`domain`](Self::domain)).
    pub fn blkback(&self) -> &Blkback {
        &self.blk
    }
}

fn forwarded_port(
    domains: &BTreeMap<DomId, DomainInfo>,
    dom: DomId,
    guest_port: u16,
) -> Option<u16> {
    domains
        .get(&dom)?
        .forwards
        .iter()
        .find(|f| f.guest_port == guest_port)
        .map(|f| f.host_port)
}

/// `xvda`..`xvdp` → 0..15.
fn vdev_index(vdev: &str) -> Option<u32> {
    match vdev.strip_prefix("xvd")?.as_bytes() {
        [c @ b'a'..=b'p'] => Some(u32::from(c - b'a')),
        _ => None,
    }
}

fn vdev_name(index: u32) -> String {
    format!("xvd{}", char::from(b'a' + (index % MAX_DISKS) as u8))
}

/// Host address 1 of the subnet, or the last one if that is the guest's;
/// `None` for a subnet with no room (a prefix over 30).
fn default_gateway(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    if prefix > 30 {
        return None;
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let network = u32::from(addr) & mask;
    let first = Ipv4Addr::from(network + 1);
    let last = Ipv4Addr::from((network | !mask) - 1);
    Some(if first == addr { last } else { first })
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// An image file as a disk. [`Disk::file`] opens it for writing too; a
/// read-only disk whose file cannot be written is read into memory.
fn open_image(path: &Path, read_only: bool, regular: bool) -> Result<Disk, ToolstackError> {
    let target_err = |source| ToolstackError::DiskTarget {
        path: path.to_path_buf(),
        source,
    };
    let disk = match Disk::file(path) {
        Ok(d) => d,
        Err(e)
            if read_only
                && matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            Disk::memory(std::fs::read(path).map_err(target_err)?)
        }
        Err(e) => return Err(target_err(e)),
    };
    if !regular || disk.is_empty() || !disk.len().is_multiple_of(512) {
        return Err(ToolstackError::DiskSize {
            path: path.to_path_buf(),
            bytes: disk.len(),
        });
    }
    Ok(disk)
}

/// A directory packed into FAT images of at most `max_bytes` (or larger,
/// for a file that needs it): each image as a disk, and what it holds.
/// Each image is written to a file in the temporary directory, opened, and
/// deleted: the disk reads the open file.
fn pack(dir: &Path, max_bytes: u64) -> Result<Vec<(Disk, PackedImage)>, ToolstackError> {
    static IMAGES: AtomicU64 = AtomicU64::new(0);
    let pack_err = |source| ToolstackError::Pack {
        path: dir.to_path_buf(),
        source,
    };
    let mut all = FatImage::new();
    for link in all.add_dir_tree(dir).map_err(pack_err)? {
        log::warn!("toolstack: {}: {link}", dir.display());
    }
    if all.file_count() == 0 {
        return Err(ToolstackError::EmptyDirectory {
            path: dir.to_path_buf(),
        });
    }
    let parts = all.split_growing(max_bytes).map_err(pack_err)?;
    let count = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(index, img)| {
            let n = IMAGES.fetch_add(1, Ordering::Relaxed);
            let file =
                std::env::temp_dir().join(format!("xenpal-{}-{n}-{index}.img", std::process::id()));
            let written = img.write_file(&file).and_then(|_| {
                Disk::file(&file).map_err(|source| FatError::Io {
                    path: file.clone(),
                    source,
                })
            });
            // Whatever happened, leave nothing behind: an open disk keeps
            // its file's data until it is dropped.
            let _ = std::fs::remove_file(&file);
            Ok((
                written.map_err(pack_err)?,
                PackedImage {
                    index,
                    count,
                    files: img.file_count(),
                    payload_bytes: img.total_bytes(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdevs() {
        assert_eq!(vdev_index("xvda"), Some(0));
        assert_eq!(vdev_index("xvdp"), Some(15));
        for bad in ["xvdq", "hda", "xvd", "xvdaa", "sda", "xvdA", "51712"] {
            assert_eq!(vdev_index(bad), None, "{bad}");
        }
        assert_eq!(vdev_name(2), "xvdc");
    }

    #[test]
    fn gateways() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(default_gateway(ip("10.0.0.2"), 24), Some(ip("10.0.0.1")));
        assert_eq!(default_gateway(ip("10.0.0.1"), 24), Some(ip("10.0.0.254")));
        assert_eq!(default_gateway(ip("10.1.2.3"), 16), Some(ip("10.1.0.1")));
        assert_eq!(default_gateway(ip("10.0.0.1"), 30), Some(ip("10.0.0.2")));
        assert_eq!(default_gateway(ip("10.0.0.1"), 31), None);
        assert_eq!(default_gateway(ip("10.0.0.2"), 0), Some(ip("0.0.0.1")));
        assert!(same_subnet(ip("10.0.0.1"), ip("10.0.0.200"), 24));
        assert!(!same_subnet(ip("10.0.1.1"), ip("10.0.0.200"), 24));
        assert!(same_subnet(ip("1.2.3.4"), ip("5.6.7.8"), 0));
    }
}
