//! blkback: the block backend, as dom0 code, over image files or memory.
//!
//! It runs in dom0 of the simulator on the same interfaces as any guest:
//! it finds its devices with a [`DeviceWatcher`] on `backend/vbd`, maps the
//! frontend's ring pages and binds its event channel, and moves data with
//! grant copies between the frontend's granted pages and dom0's own pages.
//! It never reaches into a guest's memory directly.
//!
//! # Using it
//!
//! ```
//! use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
//! use xenpal_drivers::block_device::BlockDevice;
//! use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
//! use xenpal_sim::{DomainConfig, Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! let blkback = Blkback::new();
//! let guest = sim
//!     .spawn(DomainConfig::new("guest"), |p| async move {
//!         let ids = vbd_ids(&p).await.unwrap();
//!         let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
//!             .await
//!             .unwrap();
//!         disk.write(8, &[0x5a; 4096]).await.unwrap();
//!         disk.flush().await.unwrap();
//!         disk.close().await.unwrap();
//!     })
//!     .unwrap();
//! let vbd = blkback
//!     .add_vbd(&sim, guest, 0, Disk::zeroed(1 << 20), VbdOptions::default())
//!     .unwrap();
//! blkback.spawn(&mut sim).unwrap(); // or run `blkback.serve(&p)` in your own dom0 task
//! assert!(sim.run().all_clean());
//! assert_eq!(vbd.read_durable(8 * 512, 4096).unwrap(), vec![0x5a; 4096]);
//! assert_eq!(vbd.stats().flushes, 1);
//! ```
//!
//! - [`Blkback::add_vbd`] writes the device's xenstore nodes as a toolstack
//!   does (`device/vbd/<devid>` for the frontend, `backend/vbd/<domid>/<devid>`
//!   for the backend, with `virtual-device`, `params`, `mode`, ...) and
//!   returns a [`Vbd`] handle.
//! - [`Blkback::serve`] is the dom0 task (it never returns);
//!   [`Blkback::spawn`] runs it as dom0's main task. Compose `serve` with
//!   other backends' futures if dom0 must run several.
//! - A [`Vbd`] handle reads statistics, reads the durable contents, and
//!   **crashes** or **restarts** the backend of that disk.
//!
//! # Protocol
//!
//! Per `io/blkif.h`: before `InitWait` the backend publishes
//! `feature-flush-cache`, `feature-barrier`, `feature-discard` (with
//! `discard-granularity`, `discard-alignment`, `discard-secure`),
//! `feature-max-indirect-segments` and `max-ring-page-order`, as configured
//! in [`VbdOptions`]. It maps `ring-ref` or `ring-ref0..N`
//! (`ring-page-order`), binds `event-channel`, checks `protocol`, publishes
//! `sectors` (in units of `sector-size`), `info`, `sector-size` and
//! `physical-sector-size`, and connects. Sector numbers on the ring are in
//! 512-byte units; on a disk with larger logical sectors, requests that are
//! not aligned to them get `BLKIF_RSP_ERROR`. (blkif asks backends to
//! publish a `sector-size` other than 512 only to frontends that set
//! `feature-large-sector-size`; this backend publishes what it is
//! configured with, as Linux's blkback does.)
//!
//! Requests are checked as coming from a hostile frontend: a bad segment,
//! an out-of-range sector, a failed grant copy or a write to a read-only
//! disk is answered with `BLKIF_RSP_ERROR`, an unknown operation with
//! `BLKIF_RSP_EOPNOTSUPP`, and a runaway request producer disconnects the
//! device. Nothing panics.
//!
//! # Cache, flush and crashes
//!
//! If the disk offers flush or barrier, completed writes sit in a volatile
//! cache (see the `store` module): `BLKIF_OP_FLUSH_DISKCACHE` writes it
//! back; `BLKIF_OP_WRITE_BARRIER` writes it back, then performs its write
//! (if any) durably. A clean stop of the connection (the frontend closes,
//! or [`Vbd::restart`]) writes the cache back too. [`Vbd::crash`] drops it:
//! writes that completed but were not flushed are lost, exactly what a
//! frontend must expect.
//!
//! # Crash and restart
//!
//! [`Vbd::crash`] and [`Vbd::restart`] take effect the next time the
//! backend handles the device: when the frontend notifies it (sends a
//! request) or changes state. The backend then stops answering, unmaps the
//! ring, closes its channel, goes `Closing` and `Closed` (as a backend that
//! died and was reset by the toolstack), and offers the device again
//! (`InitWait`) once the frontend is `Closed` or `Initialising`.
//!
//! # Seeded faults
//!
//! [`VbdOptions::faults`] gives a disk [`DiskFaults`], drawn from the
//! disk's own seed as blkback handles its requests, in ring order, so a
//! deterministic run replays them exactly:
//!
//! - **I/O errors**: a read or write is answered `BLKIF_RSP_ERROR` without
//!   touching the disk or the frontend's pages.
//! - **Latency and jitter**: each response is held back by simulated time
//!   (dom0 sleeps on its timer), so responses may complete out of order,
//!   as blkif allows. The request itself is carried out when it is taken.
//! - **Crashes**: while carrying out a write, the backend crashes: the
//!   cache is lost as with [`Vbd::crash`], a random prefix of the write's
//!   sectors (none to all, in whole logical sectors) reaches durable
//!   storage and the rest does not,
//!   nothing more is answered (delayed responses neither), and the device
//!   is reset and offered again by the same path as [`Vbd::crash`].
//! - **Restarts**: as it takes a request the backend restarts cleanly, as
//!   with [`Vbd::restart`]: responses held back are sent at once, the
//!   cache is written back, and that request is never answered.
//!
//! [`VbdStats::faults`] counts what happened ([`DiskFaultCounters`]).
//! A frontend sees errors as errors and a crash or restart as a backend
//! that left `Connected`; what it wrote and flushed before survives.
//!
//! ```
//! use std::time::Duration;
//! use xenpal_sim::backends::blk::{DiskFaults, VbdOptions};
//!
//! let seed = 7; // derive it from the run's seed
//! let options = VbdOptions::default().faults(DiskFaults {
//!     io_error: 0.01,
//!     latency: Duration::from_micros(200),
//!     jitter: Duration::from_micros(100),
//!     crash: 0.001,
//!     ..DiskFaults::seeded(seed)
//! });
//! assert!(options.faults.any());
//! ```

mod device;
mod faults;
mod store;

pub use faults::{DiskFaultCounters, DiskFaults, DiskFaultsError};
pub use store::Disk;

use crate::{Sim, SimError, SimPlatform, XenstoreWriteError};
use faults::FaultyDisk;
use hal::DomId;
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use store::CachedDisk;
use xenpal_drivers::xenbus::{DeviceChange, DeviceWatcher};

/// Misbehaviour to inject, for testing a frontend against a hostile
/// backend: on the `at_request`-th request the device receives (counting
/// from 1, across connections), once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What to do.
    pub kind: FaultKind,
    /// Which request triggers it.
    pub at_request: u64,
}

/// A kind of backend misbehaviour.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with an id that was never sent.
    UnknownId,
    /// Answer with a status blkif does not define.
    ImpossibleStatus,
    /// Answer with another operation than the request's.
    WrongOperation,
    /// Answer correctly, then move the response producer far beyond the
    /// requests outstanding.
    RunawayProducer,
}

/// How a virtual disk is offered. Builder methods set each field.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct VbdOptions {
    /// Logical sector size (`sector-size`): a power of two, 512 to 4096.
    pub sector_size: u32,
    /// Physical sector size (`physical-sector-size`): a multiple of
    /// `sector_size`; `None` for the same.
    pub physical_sector_size: Option<u32>,
    /// Read-only (`mode` `r`, `info` `VDISK_READONLY`).
    pub read_only: bool,
    /// Offer `feature-flush-cache`.
    pub flush: bool,
    /// Offer `feature-barrier`.
    pub barrier: bool,
    /// Offer `feature-discard`.
    pub discard: bool,
    /// `discard-granularity` in bytes (`None`: the sector size).
    pub discard_granularity: Option<u32>,
    /// Offer `discard-secure`.
    pub discard_secure: bool,
    /// `feature-max-indirect-segments` (0 or up to 11: not offered; at most
    /// 4096).
    pub max_indirect_segments: u32,
    /// `max-ring-page-order` (0: single-page rings only; at most 4).
    pub max_ring_page_order: u32,
    /// Misbehaviour to inject.
    pub fault: Option<Fault>,
    /// Seeded faults of the disk (default: none).
    pub faults: DiskFaults,
}

impl Default for VbdOptions {
    /// 512-byte sectors, writable, flush and discard offered, 256 indirect
    /// segments, rings up to order 4.
    fn default() -> Self {
        VbdOptions {
            sector_size: 512,
            physical_sector_size: None,
            read_only: false,
            flush: true,
            barrier: false,
            discard: true,
            discard_granularity: None,
            discard_secure: false,
            max_indirect_segments: 256,
            max_ring_page_order: 4,
            fault: None,
            faults: DiskFaults::default(),
        }
    }
}

impl VbdOptions {
    /// Set the logical (and, unless set separately, physical) sector size.
    pub fn sector_size(mut self, bytes: u32) -> Self {
        self.sector_size = bytes;
        self
    }

    /// Set the physical sector size.
    pub fn physical_sector_size(mut self, bytes: u32) -> Self {
        self.physical_sector_size = Some(bytes);
        self
    }

    /// Make the disk read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Offer (or not) cache flushes.
    pub fn flush(mut self, on: bool) -> Self {
        self.flush = on;
        self
    }

    /// Offer (or not) write barriers.
    pub fn barrier(mut self, on: bool) -> Self {
        self.barrier = on;
        self
    }

    /// Offer (or not) discard.
    pub fn discard(mut self, on: bool) -> Self {
        self.discard = on;
        self
    }

    /// Set `feature-max-indirect-segments` (0: no indirect requests).
    pub fn max_indirect_segments(mut self, n: u32) -> Self {
        self.max_indirect_segments = n;
        self
    }

    /// Set `max-ring-page-order`.
    pub fn max_ring_page_order(mut self, order: u32) -> Self {
        self.max_ring_page_order = order;
        self
    }

    /// Inject a fault.
    pub fn fault(mut self, kind: FaultKind, at_request: u64) -> Self {
        self.fault = Some(Fault { kind, at_request });
        self
    }

    /// Give the disk seeded faults: I/O errors, latency, crashes, restarts.
    pub fn faults(mut self, faults: DiskFaults) -> Self {
        self.faults = faults;
        self
    }

    fn physical(&self) -> u32 {
        self.physical_sector_size.unwrap_or(self.sector_size)
    }

    fn check(&self, bytes: u64) -> Result<(), VbdError> {
        let ss = self.sector_size;
        if !ss.is_power_of_two() || !(512..=4096).contains(&ss) {
            return Err(VbdError::SectorSize { sector_size: ss });
        }
        let ps = self.physical();
        if ps < ss || !ps.is_multiple_of(ss) {
            return Err(VbdError::PhysicalSectorSize {
                physical: ps,
                sector_size: ss,
            });
        }
        if bytes == 0 || !bytes.is_multiple_of(u64::from(ps)) {
            return Err(VbdError::DiskSize {
                bytes,
                physical: ps,
            });
        }
        if self.max_ring_page_order > 4 {
            return Err(VbdError::RingPageOrder {
                order: self.max_ring_page_order,
            });
        }
        if self.max_indirect_segments > 4096 {
            return Err(VbdError::IndirectSegments {
                segments: self.max_indirect_segments,
            });
        }
        self.faults.check().map_err(VbdError::Faults)
    }
}

/// Why [`Blkback::add_vbd`] refused a disk. Nothing is left behind but,
/// for [`VbdError::Xenstore`], the nodes written before the failure.
#[derive(Clone, Debug, PartialEq)]
pub enum VbdError {
    /// The disk index is above 15 (blkback gives `xvda` to `xvdp`).
    Index {
        /// The index asked for.
        index: u32,
    },
    /// [`VbdOptions::sector_size`] is not a power of two from 512 to 4096.
    SectorSize {
        /// The logical sector size.
        sector_size: u32,
    },
    /// The physical sector size is below the logical one or not a multiple
    /// of it.
    PhysicalSectorSize {
        /// The physical sector size.
        physical: u32,
        /// The logical sector size.
        sector_size: u32,
    },
    /// The disk is empty or not a whole number of physical sectors.
    DiskSize {
        /// The disk's size in bytes.
        bytes: u64,
        /// The physical sector size.
        physical: u32,
    },
    /// [`VbdOptions::max_ring_page_order`] above 4.
    RingPageOrder {
        /// The order asked for.
        order: u32,
    },
    /// [`VbdOptions::max_indirect_segments`] above 4096.
    IndirectSegments {
        /// The number asked for.
        segments: u32,
    },
    /// A fault probability outside 0 to 1 ([`DiskFaults::check`]).
    Faults(DiskFaultsError),
    /// Writing the device's xenstore nodes failed.
    Xenstore(XenstoreWriteError),
}

impl std::fmt::Display for VbdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VbdError::Index { index } => write!(f, "disk index {index} above 15"),
            VbdError::SectorSize { sector_size } => write!(
                f,
                "sector size {sector_size} is not a power of two from 512 to 4096"
            ),
            VbdError::PhysicalSectorSize {
                physical,
                sector_size,
            } => write!(
                f,
                "physical sector size {physical} is not a multiple of {sector_size}"
            ),
            VbdError::DiskSize { bytes, physical } => write!(
                f,
                "disk size {bytes} is not a non-zero multiple of {physical}"
            ),
            VbdError::RingPageOrder { order } => {
                write!(f, "max ring page order {order} above 4")
            }
            VbdError::IndirectSegments { segments } => {
                write!(f, "{segments} indirect segments: more than 4096")
            }
            VbdError::Faults(e) => e.fmt(f),
            VbdError::Xenstore(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for VbdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VbdError::Faults(e) => Some(e),
            VbdError::Xenstore(e) => Some(e),
            _ => None,
        }
    }
}

/// What a device did, for tests and demos.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VbdStats {
    /// Connections made.
    pub connections: u64,
    /// Requests received (any operation).
    pub requests: u64,
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Indirect requests (among the reads and writes).
    pub indirect_requests: u64,
    /// Most segments in one request.
    pub max_segments: u32,
    /// Cache flushes (`BLKIF_OP_FLUSH_DISKCACHE`).
    pub flushes: u64,
    /// Write barriers.
    pub barriers: u64,
    /// Discards.
    pub discards: u64,
    /// Responses other than `BLKIF_RSP_OKAY`.
    pub errors: u64,
    /// Most requests found waiting on the ring at once.
    pub max_in_flight: u32,
    /// Ring pages of the last connection.
    pub ring_pages: u32,
    /// Crashes simulated, and sectors of cache they lost.
    pub crashes: u64,
    /// Sectors (512 bytes) of cached writes lost in crashes.
    pub sectors_lost: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// What the seeded faults ([`VbdOptions::faults`]) did.
    pub faults: DiskFaultCounters,
}

/// A control command for a device's backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Command {
    Crash,
    Restart,
}

/// One virtual disk's backend state that outlives its connections.
pub(super) struct VbdShared {
    frontend: DomId,
    devid: u32,
    frontend_path: String,
    backend_path: String,
    options: VbdOptions,
    disk: Mutex<CachedDisk>,
    commands: Mutex<VecDeque<Command>>,
    stats: Mutex<VbdStats>,
    fault_fired: Mutex<bool>,
    faults: Mutex<FaultyDisk>,
}

/// A handle on one virtual disk's backend. Cheap to clone; `Send`, so a
/// guest's code may hold one to trigger crashes at a chosen point.
#[derive(Clone)]
pub struct Vbd {
    shared: Arc<VbdShared>,
}

impl std::fmt::Debug for Vbd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vbd")
            .field("backend", &self.shared.backend_path)
            .field("frontend", &self.shared.frontend_path)
            .finish()
    }
}

impl Vbd {
    /// The frontend's domain.
    pub fn frontend(&self) -> DomId {
        self.shared.frontend
    }

    /// The device id (`virtual-device`, and the last component of both
    /// directories): 51712 + 16 × index, Linux's `xvda`, `xvdb`, ...
    pub fn devid(&self) -> u32 {
        self.shared.devid
    }

    /// The frontend directory.
    pub fn frontend_path(&self) -> &str {
        &self.shared.frontend_path
    }

    /// The backend directory.
    pub fn backend_path(&self) -> &str {
        &self.shared.backend_path
    }

    /// Statistics so far.
    pub fn stats(&self) -> VbdStats {
        let mut st = self.shared.stats.lock().unwrap().clone();
        st.faults = self.shared.faults.lock().unwrap().counters;
        st
    }

    /// Crash the backend of this disk (see the module documentation): the
    /// volatile cache is lost, requests in flight are never answered, and
    /// the device is reset and offered again.
    pub fn crash(&self) {
        self.shared
            .commands
            .lock()
            .unwrap()
            .push_back(Command::Crash);
    }

    /// Restart the backend of this disk cleanly: the cache is written back,
    /// requests not yet taken are never answered, and the device is reset
    /// and offered again.
    pub fn restart(&self) {
        self.shared
            .commands
            .lock()
            .unwrap()
            .push_back(Command::Restart);
    }

    /// Sectors (512 bytes) written and not yet durable.
    pub fn dirty_sectors(&self) -> usize {
        self.shared.disk.lock().unwrap().dirty_sectors()
    }

    /// Read `len` bytes at `offset` of what is durable (what a crash would
    /// leave), ignoring the cache.
    ///
    /// Errors: out of range (`InvalidInput`), or the image file's error.
    pub fn read_durable(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let d = self.shared.disk.lock().unwrap();
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > d.disk.bytes)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "beyond the end of the disk",
            ));
        }
        let mut buf = vec![0; len];
        d.read_durable(offset, &mut buf)?;
        Ok(buf)
    }

    /// Write the cache back to the disk, as a backend does when it is
    /// stopped cleanly (say, after the simulation ended).
    ///
    /// Errors: the image file's error.
    pub fn write_back(&self) -> std::io::Result<()> {
        self.shared.disk.lock().unwrap().write_back()
    }
}

/// The block backend: a registry of virtual disks and the dom0 task that
/// serves them. Cheap to clone; clones share the registry.
#[derive(Clone, Default)]
pub struct Blkback {
    vbds: Arc<Mutex<BTreeMap<String, Arc<VbdShared>>>>,
}

impl std::fmt::Debug for Blkback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blkback")
            .field(
                "vbds",
                &self.vbds.lock().unwrap().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Blkback {
    /// A backend with no disks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give domain `frontend` the virtual disk `disk` as its `index`-th
    /// disk (device id 51712 + 16 × `index`, `xvda` for 0), writing the
    /// xenstore nodes as a toolstack does.
    ///
    /// Errors: [`VbdError::Index`] for `index` above 15; the other
    /// [`VbdError`] variants for options that do not fit the disk (see
    /// [`VbdOptions`]) or fault probabilities outside 0 to 1
    /// ([`DiskFaults::check`]); [`VbdError::Xenstore`] if writing the
    /// device's nodes failed (the disk is then not registered).
    pub fn add_vbd(
        &self,
        sim: &Sim,
        frontend: DomId,
        index: u32,
        disk: Disk,
        options: VbdOptions,
    ) -> Result<Vbd, VbdError> {
        if index > 15 {
            return Err(VbdError::Index { index });
        }
        options.check(disk.bytes)?;
        let devid = (202 << 8) + 16 * index;
        let frontend_path = format!("/local/domain/{}/device/vbd/{devid}", frontend.0);
        let backend_path = format!("/local/domain/0/backend/vbd/{}/{devid}", frontend.0);
        let kind = match disk.store {
            store::Store::Memory(_) => "memory",
            store::Store::File(_) => "file",
        };
        let params = disk.description.clone();
        let shared = Arc::new(VbdShared {
            frontend,
            devid,
            frontend_path,
            backend_path: backend_path.clone(),
            options,
            disk: Mutex::new(CachedDisk::new(disk, options.flush || options.barrier)),
            commands: Mutex::new(VecDeque::new()),
            stats: Mutex::new(VbdStats::default()),
            fault_fired: Mutex::new(false),
            faults: Mutex::new(FaultyDisk::new(options.faults)),
        });
        // Registered before the backend directory appears, so the watcher
        // finds it.
        self.vbds
            .lock()
            .unwrap()
            .insert(backend_path.clone(), shared.clone());
        let devid_s = devid.to_string();
        let name = format!("xvd{}", (b'a' + index as u8) as char);
        let mode = if options.read_only { "r" } else { "w" };
        let added = sim.add_device(
            frontend,
            "vbd",
            devid,
            &[("virtual-device", &devid_s), ("device-type", "disk")],
            &[
                ("params", &params),
                ("type", kind),
                ("mode", mode),
                ("device-type", "disk"),
                ("dev", &name),
                ("removable", "0"),
            ],
        );
        match added {
            Ok((fe, be)) => {
                debug_assert_eq!(be, backend_path);
                debug_assert_eq!(fe, shared.frontend_path);
                Ok(Vbd { shared })
            }
            Err(e) => {
                self.vbds.lock().unwrap().remove(&backend_path);
                Err(VbdError::Xenstore(e))
            }
        }
    }

    /// Run [`serve`](Self::serve) as dom0's main task. Disks can still be
    /// added afterwards, through a clone kept before.
    ///
    /// Errors: [`SimError::Dom0Busy`] if dom0 already runs a task (then
    /// call [`serve`](Self::serve) from that task instead).
    pub fn spawn(self, sim: &mut Sim) -> Result<(), SimError> {
        sim.spawn_dom0(move |p| async move { self.serve(&p).await })
    }

    /// The backend's dom0 task: watch `backend/vbd` and serve every device
    /// registered with [`add_vbd`](Self::add_vbd), each on its own state
    /// machine. Never returns unless dom0 has no xenstore.
    pub async fn serve(self, p: &SimPlatform) {
        let Some(xs) = p.xenstore() else {
            log::error!("blkback: dom0 has no xenstore");
            return;
        };
        let mut watcher = match DeviceWatcher::new(xs, "/local/domain/0", "vbd").await {
            Ok(w) => w,
            Err(e) => {
                log::error!("blkback: watching backend/vbd: {e}");
                return;
            }
        };
        type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
        let new: std::cell::RefCell<Vec<Task<'_>>> = Default::default();
        let watch = async {
            loop {
                match watcher.next().await {
                    Ok(DeviceChange::Added(dir)) => {
                        let vbd = self.vbds.lock().unwrap().get(&dir).cloned();
                        match vbd {
                            Some(vbd) => {
                                new.borrow_mut().push(Box::pin(device::serve(p, dir, vbd)))
                            }
                            None => log::warn!("blkback: {dir} has no disk registered; ignored"),
                        }
                    }
                    // The device's own task notices its frontend leaving.
                    Ok(DeviceChange::Removed(_)) => {}
                    Err(e) => {
                        log::error!("blkback: watching backend/vbd: {e}");
                        return;
                    }
                }
            }
        };
        let mut watch = pin!(watch);
        let mut watching = true;
        let mut running: Vec<Task<'_>> = Vec::new();
        poll_fn(|cx| {
            if watching && watch.as_mut().poll(cx).is_ready() {
                watching = false;
            }
            running.append(&mut new.borrow_mut());
            running.retain_mut(|t| t.as_mut().poll(cx).is_pending());
            if !watching && running.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
