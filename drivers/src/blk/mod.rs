//! blkfront: the block frontend of `xen/include/public/io/blkif.h`.
//!
//! A [`Blkfront`] drives one virtual disk, `device/vbd/<id>` in the guest's
//! xenstore home; a guest opens one per disk ([`vbd_ids`] lists them). It
//! implements this crate's async [`BlockDevice`] and the synchronous
//! [`embedded_sdmmc::BlockDevice`], so a FAT file system can sit on it.
//!
//! # What it speaks
//!
//! - Reads and writes of any length (a multiple of the sector size), split
//!   into as many ring requests as the ring and the driver's data pages
//!   allow, all in flight at once.
//! - **Indirect requests** (`feature-max-indirect-segments`): requests of
//!   more than 11 pages carry their segment list in a granted page.
//! - **Multi-page rings** (`max-ring-page-order` / `ring-page-order`,
//!   `ring-ref%u`): up to [`MAX_RING_PAGE_ORDER`].
//! - `sector-size` (512 to 4096) and `physical-sector-size` from the
//!   backend. All sector numbers on the ring are in 512-byte units, as
//!   blkif requires of frontends that do not write
//!   `feature-large-sector-size` (we do not).
//! - Cache flushes (`BLKIF_OP_FLUSH_DISKCACHE`, or an empty
//!   `BLKIF_OP_WRITE_BARRIER` if only `feature-barrier` is offered), and
//!   discard (`feature-discard`).
//! - Read-only disks (`info` has `VDISK_READONLY`): writes and discards are
//!   refused locally with [`BlockError::ReadOnly`].
//!
//! # Memory
//!
//! Data goes through pages the driver owns: [`BlkfrontConfig::data_pages`]
//! pages granted to the backend for the life of a connection. A write copies
//! the caller's bytes into them; a read copies out of them once the response
//! is in. The backend never sees the caller's memory, and the caller never
//! gets a view of shared memory. Requests with more than 11 pages also use a
//! page holding their segment list, granted read-only.
//!
//! # Hostile backends
//!
//! Each response is copied out of the ring once and checked: its id must
//! name a request in flight, its operation must match that request, its
//! status must be one blkif defines, and the backend's producer index must
//! not claim more responses than requests outstanding
//! ([`hal::RingError::Overrun`]). Any violation disconnects that disk with
//! [`DisconnectReason::ProtocolViolation`] carrying a [`ResponseError`]
//! (and the frontend tells the backend `Closing`); other disks and the
//! guest carry on. Nothing here panics on backend input.
//!
//! # Disconnects and reconnecting
//!
//! When the backend leaves `Connected` (it closes, crashes and restarts,
//! or its directory vanishes), or breaks the protocol, the disk goes out of
//! service:
//!
//! - **Requests in flight fail** with [`BlockError::Disconnected`] and are
//!   **not retried**: a write that failed so may have reached none, some or
//!   all of its sectors. New requests fail the same way until
//!   [`reconnect`](Blkfront::reconnect) succeeds.
//! - The event channel is closed at once and every grant the backend no
//!   longer uses is ended and its page freed. Pages the backend still maps
//!   (normally the ring, until the backend finishes closing) are kept aside
//!   and freed by [`reconnect`](Blkfront::reconnect) or
//!   [`close`](Blkfront::close), which first wait for the backend to let go
//!   of them. After `close`, every grant, page and port of the disk is back.
//!
//! # Synchronous use
//!
//! The `embedded_sdmmc::BlockDevice` methods (and
//! [`flush_blocking`](Blkfront::flush_blocking)) run the same async code to
//! completion without returning to the executor: between polls they sleep in
//! `SCHEDOP_poll` on the disk's event channel and the xenstore channel, so
//! a backend going away is noticed there too. In the simulator other
//! domains, such as the backend in dom0, run meanwhile. The waker they poll
//! with is the one of the task that last awaited one of this disk's async
//! methods, so nothing that task waits for is lost. Like Linux's blkfront,
//! a request has no timeout: a backend that stays connected and never
//! answers blocks it.

mod conn;
mod io;
mod read_ahead;
mod setup;

pub use conn::{ConnError, ResponseError, Transport};
pub use read_ahead::ReadAhead;
pub use setup::SetupError;

use crate::block_device::{
    BlockDevice, BlockError, BlockInfo, DiscardInfo, DisconnectReason, Operation,
};
use crate::xenbus::{XenbusDevice, list_devices, peer_gone};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use conn::{Conn, Held};
use core::cell::RefCell;
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use embedded_sdmmc::{Block, BlockCount, BlockIdx};
use hal::EventChannel;
use hal::mem::PageAlloc;
use io::{Buffer, Job, Part, Single, SingleJob, Transfer};
use xen_pv::Hypervisor;
use xen_pv::abi::Errno;
use xen_pv::abi::io::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_SEGS_PER_INDIRECT_FRAME, blkif_op, vdisk,
};
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;
use xen_pv::xenbus::XenbusState;
use xen_pv::xenstore::{XenStore, XsError};

/// The xenbus device class of virtual block devices.
pub const CLASS: &str = "vbd";

/// The ring ABI this build speaks, written to the frontend's `protocol`
/// node (`XEN_IO_PROTO_ABI_NATIVE`).
#[doc(alias = "XEN_IO_PROTO_ABI_NATIVE")]
pub const PROTOCOL_NATIVE: &str = if cfg!(target_arch = "x86_64") {
    "x86_64-abi"
} else if cfg!(target_arch = "x86") {
    "x86_32-abi"
} else {
    "arm-abi"
};

/// The largest ring this driver sets up: 2^4 = 16 pages, 512 slots.
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// How a [`Blkfront`] sets up its connections. The backend's limits apply
/// on top.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlkfrontConfig {
    /// Largest ring to use, as a page order (0: one page, 32 requests);
    /// capped at [`MAX_RING_PAGE_ORDER`] and at the backend's
    /// `max-ring-page-order`.
    pub max_ring_page_order: u32,
    /// Most segments (pages) per request. Above 11 the driver uses indirect
    /// requests when the backend offers them; capped at the backend's
    /// `feature-max-indirect-segments`, at 512 (one page of segments) and
    /// at `data_pages`. 11 or less: direct requests only.
    pub max_indirect_segments: u32,
    /// Data pages owned (and granted to the backend) per connection: the
    /// most data in flight at once, in 4 KiB pages. At least 1.
    pub data_pages: usize,
}

impl Default for BlkfrontConfig {
    /// Ring order 2 (128 slots), indirect requests of up to 32 segments,
    /// 32 data pages (128 KiB in flight).
    fn default() -> Self {
        BlkfrontConfig {
            max_ring_page_order: 2,
            max_indirect_segments: 32,
            data_pages: 32,
        }
    }
}

/// The ids of this guest's virtual disks (`device/vbd/<id>`), numerically
/// sorted.
///
/// Errors: [`DisconnectReason::Setup`] if the guest has no xenstore or a
/// xenstore request fails.
pub async fn vbd_ids<H: Hypervisor, C: hal::Clock, A: AlarmHw>(
    p: &XenPlatform<H, C, A>,
) -> Result<Vec<String>, DisconnectReason> {
    let xs = p
        .xenstore()
        .ok_or(DisconnectReason::Setup(SetupError::NoXenstore))?;
    list_devices(xs, CLASS)
        .await
        .map_err(|e| DisconnectReason::Setup(SetupError::ListDevices(e)))
}

enum Link<H: Hypervisor> {
    Up(alloc::boxed::Box<Conn<H>>),
    Down(DisconnectReason),
}

struct State<H: Hypervisor> {
    link: Link<H>,
    /// Bumped at every connect and disconnect, so a request knows whether
    /// the connection it was sent on still exists.
    generation: u64,
    info: BlockInfo,
    transport: Option<Transport>,
    /// The waker of the task that last awaited us (for synchronous use).
    task_waker: Option<Waker>,
    /// Pages whose grants the backend still used when we dropped them.
    held: Vec<Held<H>>,
    /// Operations waiting for a ring slot or data page.
    waiters: Vec<Waker>,
    /// A watch event on the backend's state was taken and not yet looked at.
    peer_event: bool,
}

/// The block frontend for one virtual disk. See the [module
/// documentation](self).
///
/// Call [`close`](Self::close) before dropping a connected disk: dropping
/// it leaves its pages granted to the backend.
pub struct Blkfront<'p, H: Hypervisor, C: hal::Clock, A: AlarmHw> {
    p: &'p XenPlatform<H, C, A>,
    xs: XenStore<H>,
    dev: XenbusDevice<H>,
    handle: u16,
    token: String,
    config: BlkfrontConfig,
    st: RefCell<State<H>>,
}

impl<H: Hypervisor, C: hal::Clock, A: AlarmHw> core::fmt::Debug for Blkfront<'_, H, C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = self.st.borrow();
        f.debug_struct("Blkfront")
            .field("device", &self.dev.own_dir())
            .field("backend", &self.dev.peer_dir())
            .field("info", &st.info)
            .field("transport", &st.transport)
            .finish()
    }
}

fn setup_error<E>(step: impl FnOnce(E) -> SetupError) -> impl FnOnce(E) -> DisconnectReason {
    |e| DisconnectReason::Setup(step(e))
}

impl<'p, H: Hypervisor, C: hal::Clock, A: AlarmHw> Blkfront<'p, H, C, A> {
    /// Open disk `device/vbd/<id>` and connect it to its backend: wait for
    /// the backend to offer it (`InitWait`), set up the ring, and wait for
    /// the backend to connect.
    ///
    /// Errors: [`DisconnectReason::Setup`] (no xenstore, a missing or
    /// malformed node, no grant, page or port left, nonsensical geometry
    /// from the backend); [`DisconnectReason::BackendGone`] if the backend
    /// closes instead of connecting.
    pub async fn open(
        p: &'p XenPlatform<H, C, A>,
        id: &str,
        config: BlkfrontConfig,
    ) -> Result<Self, DisconnectReason> {
        let xs = p
            .xenstore()
            .ok_or(DisconnectReason::Setup(SetupError::NoXenstore))?
            .clone();
        let dev = XenbusDevice::open_frontend(&xs, CLASS, id)
            .await
            .map_err(setup_error(SetupError::OpenDevice))?;
        let token = format!("blkfront:{}", dev.own_dir());
        match xs
            .watch(&xen_pv::xenbus::join(dev.peer_dir(), "state"), &token)
            .await
        {
            Ok(()) | Err(XsError::Errno(Errno::EEXIST)) => {}
            Err(e) => return Err(DisconnectReason::Setup(SetupError::WatchBackend(e))),
        }
        let front = Blkfront {
            p,
            handle: id.parse().unwrap_or(0),
            xs,
            dev,
            token,
            config,
            st: RefCell::new(State {
                link: Link::Down(DisconnectReason::Setup(SetupError::NotConnectedYet)),
                generation: 0,
                info: BlockInfo {
                    sector_size: 512,
                    physical_sector_size: 512,
                    sectors: 0,
                    read_only: true,
                    flush: false,
                    barrier: false,
                    discard: None,
                },
                transport: None,
                task_waker: None,
                held: Vec::new(),
                waiters: Vec::new(),
                peer_event: false,
            }),
        };
        front.remember_waker().await;
        if let Err(e) = front.connect().await {
            let _ = front.settle().await;
            let _ = front
                .xs
                .unwatch(&front.peer_state_path(), &front.token)
                .await;
            return Err(e);
        }
        Ok(front)
    }

    fn peer_state_path(&self) -> String {
        xen_pv::xenbus::join(self.dev.peer_dir(), "state")
    }

    /// The xenbus device (frontend directory, backend path and domain).
    pub fn device(&self) -> &XenbusDevice<H> {
        &self.dev
    }

    /// Whether the disk is connected (as far as the driver knows: a
    /// backend that left is noticed at the next operation).
    pub fn is_connected(&self) -> bool {
        matches!(self.st.borrow().link, Link::Up(_))
    }

    /// Why the disk is out of service, if it is.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match &self.st.borrow().link {
            Link::Up(_) => None,
            Link::Down(r) => Some(r.clone()),
        }
    }

    /// The current connection's transport parameters (`None` when not
    /// connected).
    pub fn transport(&self) -> Option<Transport> {
        match &self.st.borrow().link {
            Link::Up(_) => self.st.borrow().transport,
            Link::Down(_) => None,
        }
    }

    /// Pages of old connections the backend still uses (their grants could
    /// not be ended yet); given back by [`reconnect`](Self::reconnect) and
    /// [`close`](Self::close).
    pub fn held_pages(&self) -> usize {
        self.st.borrow().held.iter().map(|h| h.page_count()).sum()
    }

    /// Connect again after a disconnect: wait for the backend to let go of
    /// the old connection (`Closed`) and give back what it held, then
    /// offer a new one and wait for the backend to come back (`InitWait`)
    /// and connect. Does nothing if the disk is connected.
    ///
    /// Errors: as [`open`](Self::open).
    pub async fn reconnect(&self) -> Result<(), DisconnectReason> {
        self.remember_waker().await;
        self.poll_backend().await;
        if self.is_connected() {
            return Ok(());
        }
        self.settle().await?;
        self.connect().await
    }

    /// Disconnect for good: requests in flight fail, the backend is told
    /// (`Closing`), and once it has let go (`Closed`) every grant, page and
    /// port of the disk is given back and the frontend is `Closed`.
    /// [`reconnect`](Self::reconnect) may connect it again later.
    ///
    /// Errors: [`DisconnectReason::Setup`] if xenstore fails, or if the
    /// backend still maps pages after closing (they stay granted; see
    /// [`held_pages`](Self::held_pages)).
    pub async fn close(&self) -> Result<(), DisconnectReason> {
        self.remember_waker().await;
        let generation = self.st.borrow().generation;
        self.fail(generation, DisconnectReason::Closed);
        if let Link::Down(r) = &mut self.st.borrow_mut().link {
            *r = DisconnectReason::Closed;
        }
        self.settle().await?;
        let held = self.held_pages();
        if held > 0 {
            return Err(DisconnectReason::Setup(SetupError::PagesHeld {
                pages: held,
            }));
        }
        Ok(())
    }

    /// Flush the backend's cache from synchronous code (see
    /// [`BlockDevice::flush`]), as a file system on
    /// `embedded_sdmmc::BlockDevice` needs before the guest stops.
    ///
    /// Errors: as [`BlockDevice::flush`].
    pub fn flush_blocking(&self) -> Result<(), BlockError> {
        self.block_on(BlockDevice::flush(self))
    }

    // ---------------------------------------------------------------------
    // Connection set-up and tear-down.

    async fn remember_waker(&self) {
        poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if !st
                .task_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                st.task_waker = Some(cx.waker().clone());
            }
            Poll::Ready(())
        })
        .await
    }

    /// Wait until the backend's state satisfies `want`.
    async fn wait_backend(
        &self,
        want: impl Fn(XenbusState) -> bool,
        gone: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState, DisconnectReason> {
        loop {
            let s = self
                .dev
                .peer_state()
                .await
                .map_err(setup_error(SetupError::ReadBackendState))?;
            if want(s) {
                return Ok(s);
            }
            if gone(s) {
                return Err(DisconnectReason::BackendGone(s));
            }
            self.xs
                .next_watch_event_for(&self.token)
                .await
                .map_err(setup_error(SetupError::WatchBackend))?;
        }
    }

    async fn switch(&self, s: XenbusState) -> Result<(), DisconnectReason> {
        self.dev
            .switch_state(s)
            .await
            .map_err(setup_error(SetupError::SwitchState))
    }

    async fn peer_u64(&self, key: &str) -> Result<Option<u64>, DisconnectReason> {
        self.dev.peer_u64(key).await.map_err(|source| {
            DisconnectReason::Setup(SetupError::BackendNode {
                key: key.into(),
                source,
            })
        })
    }

    async fn peer_feature(&self, key: &str) -> Result<bool, DisconnectReason> {
        self.dev.peer_feature(key).await.map_err(|source| {
            DisconnectReason::Setup(SetupError::BackendFeature {
                key: key.into(),
                source,
            })
        })
    }

    /// The handshake, from `Initialising` to `Connected`.
    async fn connect(&self) -> Result<(), DisconnectReason> {
        self.switch(XenbusState::Initialising).await?;
        self.wait_backend(
            |s| matches!(s, XenbusState::InitWait | XenbusState::Initialised),
            |_| false,
        )
        .await?;
        let max_order = match self.peer_u64("max-ring-page-order").await? {
            Some(o) => o,
            // The older, deprecated node: a page count.
            None => self
                .peer_u64("max-ring-pages")
                .await?
                .map_or(0, |n| u64::from(n.max(1).ilog2())),
        };
        let order = (max_order.min(u64::from(MAX_RING_PAGE_ORDER)) as u32)
            .min(self.config.max_ring_page_order);
        let data_pages = self.config.data_pages.max(1);
        let backend_segments = self
            .peer_u64("feature-max-indirect-segments")
            .await?
            .unwrap_or(0);
        let wanted = self.config.max_indirect_segments as usize;
        let max_segments = if backend_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST as u64
            && wanted > BLKIF_MAX_SEGMENTS_PER_REQUEST
        {
            (backend_segments.min(BLKIF_SEGS_PER_INDIRECT_FRAME as u64) as usize)
                .min(wanted)
                .min(data_pages)
                .max(BLKIF_MAX_SEGMENTS_PER_REQUEST.min(data_pages))
        } else {
            BLKIF_MAX_SEGMENTS_PER_REQUEST.min(data_pages)
        };
        let conn = {
            let mut held = Vec::new();
            let r = Conn::new(
                self.p,
                self.dev.peer_id(),
                order,
                max_segments,
                data_pages,
                self.handle,
                &mut held,
            );
            self.st.borrow_mut().held.extend(held);
            r.map_err(|e| DisconnectReason::Setup(SetupError::Conn(e)))?
        };
        let transport = conn.transport();
        let result = async {
            self.advertise(&conn, order).await?;
            self.switch(XenbusState::Initialised).await?;
            self.wait_backend(|s| s == XenbusState::Connected, peer_gone)
                .await?;
            let info = self.read_info().await?;
            self.switch(XenbusState::Connected).await?;
            Ok(info)
        }
        .await;
        match result {
            Ok(info) => {
                log::info!(
                    "blkfront {}: connected: {} sectors of {} bytes (physical {}){}{}{}{}; ring of {} pages, up to {} segments per request",
                    self.dev.own_dir(),
                    info.sectors,
                    info.sector_size,
                    info.physical_sector_size,
                    if info.read_only { ", read-only" } else { "" },
                    if info.flush { ", flush" } else { "" },
                    if info.barrier { ", barrier" } else { "" },
                    if info.discard.is_some() {
                        ", discard"
                    } else {
                        ""
                    },
                    transport.ring_pages,
                    transport.max_segments,
                );
                let mut st = self.st.borrow_mut();
                st.link = Link::Up(alloc::boxed::Box::new(conn));
                st.info = info;
                st.transport = Some(transport);
                st.generation += 1;
                Ok(())
            }
            Err(e) => {
                log::warn!("blkfront {}: connecting failed: {e}", self.dev.own_dir());
                let held = conn.dismantle(self.p);
                self.st.borrow_mut().held.extend(held);
                if matches!(e, DisconnectReason::Setup(_)) {
                    let _ = self.switch(XenbusState::Closing).await;
                }
                Err(e)
            }
        }
    }

    /// Write the transport nodes in one transaction.
    async fn advertise(&self, conn: &Conn<H>, order: u32) -> Result<(), DisconnectReason> {
        const ATTEMPTS: u32 = 16;
        let port = conn.port.map_or(0, |p| p.0);
        for _ in 0..ATTEMPTS {
            let tx = self
                .xs
                .transaction_start()
                .await
                .map_err(setup_error(SetupError::StartTransaction))?;
            let writes = async {
                if order == 0 {
                    self.dev
                        .write_own(tx, "ring-ref", &conn.ring_grefs[0].0.to_string())
                        .await?;
                    self.dev.remove_own(tx, "ring-page-order").await?;
                } else {
                    self.dev
                        .write_own(tx, "ring-page-order", &order.to_string())
                        .await?;
                    for (i, g) in conn.ring_grefs.iter().enumerate() {
                        self.dev
                            .write_own(tx, &format!("ring-ref{i}"), &g.0.to_string())
                            .await?;
                    }
                    self.dev.remove_own(tx, "ring-ref").await?;
                }
                self.dev
                    .write_own(tx, "event-channel", &port.to_string())
                    .await?;
                self.dev.write_own(tx, "protocol", PROTOCOL_NATIVE).await
            }
            .await;
            if let Err(e) = writes {
                let _ = self.xs.transaction_end(tx, false).await;
                return Err(DisconnectReason::Setup(SetupError::WriteRingDetails(e)));
            }
            match self.xs.transaction_end(tx, true).await {
                Ok(()) => return Ok(()),
                Err(XsError::Errno(Errno::EAGAIN)) => continue,
                Err(e) => return Err(DisconnectReason::Setup(SetupError::CommitRingDetails(e))),
            }
        }
        Err(DisconnectReason::Setup(SetupError::TransactionConflicts {
            attempts: ATTEMPTS,
        }))
    }

    /// Read and check the disk's properties once the backend is connected.
    async fn read_info(&self) -> Result<BlockInfo, DisconnectReason> {
        let backend = || String::from(self.dev.peer_dir());
        let bad = DisconnectReason::Setup;
        let sectors = self
            .peer_u64("sectors")
            .await?
            .ok_or_else(|| bad(SetupError::NoSectors { backend: backend() }))?;
        let info = self.peer_u64("info").await?.unwrap_or(0);
        let sector_size = self.peer_u64("sector-size").await?.unwrap_or(512);
        if !sector_size.is_power_of_two() || !(512..=4096).contains(&sector_size) {
            return Err(bad(SetupError::SectorSize {
                backend: backend(),
                value: sector_size,
            }));
        }
        let physical = self
            .peer_u64("physical-sector-size")
            .await?
            .unwrap_or(sector_size);
        if physical < sector_size
            || !physical.is_multiple_of(sector_size)
            || physical > u64::from(u32::MAX)
        {
            return Err(bad(SetupError::PhysicalSectorSize {
                backend: backend(),
                value: physical,
                sector_size,
            }));
        }
        if sectors.checked_mul(sector_size).is_none() {
            return Err(bad(SetupError::SizeOverflow {
                backend: backend(),
                sectors,
                sector_size,
            }));
        }
        let discard = if self.peer_feature("feature-discard").await? {
            let granularity = self
                .peer_u64("discard-granularity")
                .await?
                .unwrap_or(sector_size);
            let alignment = self.peer_u64("discard-alignment").await?.unwrap_or(0);
            Some(DiscardInfo {
                granularity: u32::try_from(granularity).map_err(|_| {
                    bad(SetupError::DiscardGranularity {
                        backend: backend(),
                        value: granularity,
                    })
                })?,
                alignment: u32::try_from(alignment).map_err(|_| {
                    bad(SetupError::DiscardAlignment {
                        backend: backend(),
                        value: alignment,
                    })
                })?,
                secure: self.peer_feature("discard-secure").await?,
            })
        } else {
            None
        };
        Ok(BlockInfo {
            sector_size: sector_size as u32,
            physical_sector_size: physical as u32,
            sectors,
            read_only: info & u64::from(vdisk::READONLY) != 0,
            flush: self.peer_feature("feature-flush-cache").await?,
            barrier: self.peer_feature("feature-barrier").await?,
            discard,
        })
    }

    /// Take the connection down (if it is still the one of `generation`):
    /// requests in flight fail, the channel is closed, and grants the
    /// backend does not use are ended and their pages freed.
    fn fail(&self, generation: u64, reason: DisconnectReason) {
        let waiters = {
            let mut st = self.st.borrow_mut();
            if st.generation != generation || !matches!(st.link, Link::Up(_)) {
                return;
            }
            if reason != DisconnectReason::Closed {
                log::warn!("blkfront {}: disconnected: {reason}", self.dev.own_dir());
            }
            let Link::Up(conn) = core::mem::replace(&mut st.link, Link::Down(reason)) else {
                unreachable!("checked above")
            };
            st.generation += 1;
            st.transport = None;
            let held = (*conn).dismantle(self.p);
            st.held.extend(held);
            core::mem::take(&mut st.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Give back the pages the backend has let go of.
    fn release_held(&self) {
        let mut st = self.st.borrow_mut();
        let held = core::mem::take(&mut st.held);
        for mut h in held {
            if h.try_end(self.p.grants()) {
                self.p.pages().free(h.page);
            } else {
                st.held.push(h);
            }
        }
    }

    /// After a disconnect: make sure the backend has let go of the old
    /// connection, give back what it held, and end up `Closed`.
    async fn settle(&self) -> Result<(), DisconnectReason> {
        let own = self
            .dev
            .state()
            .await
            .map_err(setup_error(SetupError::ReadOwnState))?;
        let must_wait = !self.st.borrow().held.is_empty()
            || matches!(own, XenbusState::Initialised | XenbusState::Connected);
        // A backend that is gone or back at the start has let go.
        let let_go = |s| {
            matches!(
                s,
                XenbusState::Closed
                    | XenbusState::InitWait
                    | XenbusState::Initialising
                    | XenbusState::Unknown
            )
        };
        if must_wait {
            // The handshake Linux's blkback expects: it answers our
            // Closing with Closing, and only unmaps our ring and pages and
            // goes Closed once we are Closed.
            if !matches!(own, XenbusState::Closing | XenbusState::Closed) {
                self.switch(XenbusState::Closing).await?;
            }
            self.wait_backend(|s| s == XenbusState::Closing || let_go(s), |_| false)
                .await?;
            self.switch(XenbusState::Closed).await?;
            self.wait_backend(let_go, |_| false).await?;
        }
        self.release_held();
        let held = self.held_pages();
        if held > 0 {
            log::warn!(
                "blkfront {}: the backend still maps {held} pages; they stay granted",
                self.dev.own_dir()
            );
        }
        self.switch(XenbusState::Closed).await
    }

    // ---------------------------------------------------------------------
    // The data path.

    /// Look at what the backend did: its state (if a watch fired) and its
    /// responses. Disconnects on a state other than `Connected` or on a
    /// protocol violation.
    async fn poll_backend(&self) {
        let generation = self.st.borrow().generation;
        let mut changed = core::mem::take(&mut self.st.borrow_mut().peer_event);
        loop {
            match self.xs.try_watch_event_for(&self.token) {
                Ok(Some(_)) => changed = true,
                Ok(None) => break,
                Err(e) => {
                    self.fail(
                        generation,
                        DisconnectReason::Setup(SetupError::WatchBackend(e)),
                    );
                    return;
                }
            }
        }
        if changed && self.is_connected() {
            match self.dev.peer_state().await {
                Ok(XenbusState::Connected) => {}
                Ok(s) => self.fail(generation, DisconnectReason::BackendGone(s)),
                Err(e) => self.fail(
                    generation,
                    DisconnectReason::Setup(SetupError::ReadBackendState(e)),
                ),
            }
        }
        let taken = {
            let mut st = self.st.borrow_mut();
            if st.generation != generation {
                return;
            }
            match &mut st.link {
                Link::Up(conn) => conn.take_responses(),
                Link::Down(_) => return,
            }
        };
        match taken {
            Ok(0) => {}
            Ok(_) => {
                // Responses taken here may answer other operations of this
                // task, polled before us and now waiting: wake them.
                let (waiters, task) = {
                    let mut st = self.st.borrow_mut();
                    (core::mem::take(&mut st.waiters), st.task_waker.clone())
                };
                for w in waiters.into_iter().chain(task) {
                    w.wake();
                }
            }
            Err(why) => {
                self.fail(generation, DisconnectReason::ProtocolViolation(why));
                // Tell the backend to stop; it unmaps our ring and closes.
                let _ = self.switch(XenbusState::Closing).await;
            }
        }
    }

    /// Wait until one of `parts` is answered, a response or a backend state
    /// change may have arrived, or (if `parts` is empty: the operation waits
    /// for room) `room(conn)` says a request can be staged.
    async fn wait_progress(
        &self,
        generation: u64,
        parts: &[Part],
        room: impl Fn(&Conn<H>) -> bool,
    ) {
        let starving = parts.is_empty();
        let watch = self.xs.next_watch_event_for(&self.token);
        let mut watch = pin!(watch);
        poll_fn(|cx| {
            if watch.as_mut().poll(cx).is_ready() {
                self.st.borrow_mut().peer_event = true;
                return Poll::Ready(());
            }
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            if st.generation != generation {
                return Poll::Ready(());
            }
            let Link::Up(conn) = &mut st.link else {
                return Poll::Ready(());
            };
            // Another operation may have taken our responses, or freed
            // what we wait for.
            if parts.iter().any(|p| conn.status(p.id).is_some()) || (starving && room(conn)) {
                return Poll::Ready(());
            }
            if conn.final_check() != Ok(false) {
                return Poll::Ready(());
            }
            if let Some(port) = conn.port {
                self.p.events().register_waker(port, cx.waker());
            }
            if starving && !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            // A response may have landed before the registration.
            if conn.final_check() != Ok(false) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }

    /// Run `job` to completion on the current connection.
    async fn run<J: Job<H>>(&self, job: &mut J) -> Result<(), BlockError> {
        self.remember_waker().await;
        self.poll_backend().await;
        let generation = {
            let st = self.st.borrow();
            match &st.link {
                Link::Up(_) => st.generation,
                Link::Down(r) => return Err(BlockError::Disconnected(r.clone())),
            }
        };
        let mut flight = InFlight {
            front: self,
            generation,
            parts: Vec::new(),
        };
        let mut failure: Option<BlockError> = None;
        loop {
            let waiters = {
                let mut guard = self.st.borrow_mut();
                let st = &mut *guard;
                let conn = match &mut st.link {
                    Link::Up(conn) if st.generation == generation => conn,
                    Link::Up(_) => {
                        flight.parts.clear();
                        return Err(BlockError::Disconnected(DisconnectReason::Setup(
                            SetupError::ConnectionReplaced,
                        )));
                    }
                    Link::Down(r) => {
                        flight.parts.clear();
                        return Err(BlockError::Disconnected(r.clone()));
                    }
                };
                let mut freed = false;
                let mut i = 0;
                while i < flight.parts.len() {
                    let part = &flight.parts[i];
                    match conn.status(part.id) {
                        Some(status) => {
                            let r = job.finish(conn, part, status);
                            if failure.is_none() {
                                failure = r.err();
                            }
                            conn.release(part.id);
                            flight.parts.swap_remove(i);
                            freed = true;
                        }
                        None => i += 1,
                    }
                }
                if failure.is_none() {
                    let mut staged = false;
                    while let Some(part) = job.next(conn) {
                        flight.parts.push(part);
                        staged = true;
                    }
                    if staged {
                        conn.push(self.p.events());
                    }
                }
                if flight.parts.is_empty() && (failure.is_some() || job.all_staged()) {
                    let waiters = core::mem::take(&mut st.waiters);
                    drop(guard);
                    for w in waiters {
                        w.wake();
                    }
                    return failure.map_or(Ok(()), Err);
                }
                if freed {
                    core::mem::take(&mut st.waiters)
                } else {
                    Vec::new()
                }
            };
            for w in waiters {
                w.wake();
            }
            self.wait_progress(generation, &flight.parts, |c| job.has_room(c))
                .await;
            self.poll_backend().await;
        }
    }

    /// Check a read or write of `len` bytes at logical sector `sector`;
    /// returns the 512-byte sector to put on the ring.
    fn check_rw(&self, sector: u64, len: usize, write: bool) -> Result<u64, BlockError> {
        let info = self.info();
        let ss = u64::from(info.sector_size);
        if len == 0 || !(len as u64).is_multiple_of(ss) {
            return Err(BlockError::BadLength {
                len,
                sector_size: info.sector_size,
            });
        }
        if write && info.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(&info, sector, len as u64 / ss)?;
        Ok(sector * (ss / 512))
    }

    /// Run `fut` to completion from synchronous code: poll it, and between
    /// polls sleep in `SCHEDOP_poll` on this disk's channel and the xenstore
    /// channel.
    fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        let waker = self
            .st
            .borrow()
            .task_waker
            .clone()
            .unwrap_or_else(|| Waker::noop().clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let events = self.p.events();
        loop {
            // Events handled here happened before the poll below, which
            // sees their effect; later ones stay pending and end the sleep.
            events.dispatch();
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            let mut ports = vec![self.xs.port()];
            if let Link::Up(conn) = &self.st.borrow().link
                && let Some(port) = conn.port
            {
                ports.push(port);
            }
            let _ = xen_pv::hypercall::sched_poll(events.hypervisor(), &ports, 0);
        }
    }

    /// Read 512-byte blocks at block `start`, whatever the sector size.
    async fn read_blocks(&self, blocks: &mut [Block], start: u64) -> Result<(), BlockError> {
        let info = self.info();
        let ss = info.sector_size as usize;
        if ss == Block::LEN {
            let sector = self.check_rw(start, blocks.len() * Block::LEN, false)?;
            return self
                .run(&mut Transfer::new(sector, Buffer::BlocksMut(blocks)))
                .await;
        }
        let (first, span, skip) = span(start, blocks.len(), ss);
        let mut tmp = vec![0u8; span];
        BlockDevice::read(self, first, &mut tmp).await?;
        for (i, b) in blocks.iter_mut().enumerate() {
            let at = skip + i * Block::LEN;
            b.contents.copy_from_slice(&tmp[at..at + Block::LEN]);
        }
        Ok(())
    }

    /// Write 512-byte blocks at block `start`. On a disk with larger
    /// sectors, partly covered sectors are read, patched and written back
    /// (not atomically).
    async fn write_blocks(&self, blocks: &[Block], start: u64) -> Result<(), BlockError> {
        let info = self.info();
        let ss = info.sector_size as usize;
        if ss == Block::LEN {
            let sector = self.check_rw(start, blocks.len() * Block::LEN, true)?;
            return self
                .run(&mut Transfer::new(sector, Buffer::Blocks(blocks)))
                .await;
        }
        if info.read_only {
            return Err(BlockError::ReadOnly);
        }
        let (first, span, skip) = span(start, blocks.len(), ss);
        let mut tmp = vec![0u8; span];
        if skip != 0 || blocks.len() * Block::LEN != span {
            BlockDevice::read(self, first, &mut tmp).await?;
        }
        for (i, b) in blocks.iter().enumerate() {
            let at = skip + i * Block::LEN;
            tmp[at..at + Block::LEN].copy_from_slice(&b.contents);
        }
        BlockDevice::write(self, first, &tmp).await
    }
}

/// The logical sectors covering `count` 512-byte blocks from block `start`
/// on a disk of `ss`-byte sectors: `(first sector, bytes, offset of block
/// start in them)`. Saturates on absurd input (which then fails the range
/// check).
fn span(start: u64, count: usize, ss: usize) -> (u64, usize, usize) {
    let per = (ss / Block::LEN) as u64;
    let first = start / per;
    let end = start.saturating_add(count as u64).div_ceil(per);
    let bytes = (end - first).saturating_mul(ss as u64);
    (
        first,
        usize::try_from(bytes).unwrap_or(usize::MAX),
        ((start % per) as usize) * Block::LEN,
    )
}

fn check_range(info: &BlockInfo, sector: u64, count: u64) -> Result<(), BlockError> {
    match sector.checked_add(count) {
        Some(end) if end <= info.sectors => Ok(()),
        _ => Err(BlockError::OutOfRange {
            sector,
            count,
            sectors: info.sectors,
        }),
    }
}

/// The ring requests of one operation; if the operation's future is dropped
/// before they complete, their slots and pages are released when their
/// responses arrive.
struct InFlight<'a, 'p, H: Hypervisor, C: hal::Clock, A: AlarmHw> {
    front: &'a Blkfront<'p, H, C, A>,
    generation: u64,
    parts: Vec<Part>,
}

impl<H: Hypervisor, C: hal::Clock, A: AlarmHw> Drop for InFlight<'_, '_, H, C, A> {
    fn drop(&mut self) {
        if self.parts.is_empty() {
            return;
        }
        if let Ok(mut st) = self.front.st.try_borrow_mut()
            && st.generation == self.generation
            && let Link::Up(conn) = &mut st.link
        {
            for p in &self.parts {
                conn.abandon(p.id);
            }
        }
    }
}

impl<H: Hypervisor, C: hal::Clock, A: AlarmHw> BlockDevice for Blkfront<'_, H, C, A> {
    fn info(&self) -> BlockInfo {
        self.st.borrow().info
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let sector = self.check_rw(sector, buf.len(), false)?;
        self.run(&mut Transfer::new(sector, Buffer::BytesMut(buf)))
            .await
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let sector = self.check_rw(sector, buf.len(), true)?;
        self.run(&mut Transfer::new(sector, Buffer::Bytes(buf)))
            .await
    }

    async fn flush(&self) -> Result<(), BlockError> {
        let info = self.info();
        let op = if info.flush {
            blkif_op::FLUSH_DISKCACHE
        } else if info.barrier {
            blkif_op::WRITE_BARRIER
        } else {
            // No volatile cache: completed writes are already durable.
            return Ok(());
        };
        let r = self.run(&mut SingleJob::new(Single::Empty(op))).await;
        if r == Err(BlockError::Unsupported(Operation::Flush)) {
            // The backend refused after all (blkif allows that): stop
            // offering what it refused.
            let mut st = self.st.borrow_mut();
            if op == blkif_op::FLUSH_DISKCACHE {
                st.info.flush = false;
            } else {
                st.info.barrier = false;
            }
        }
        r
    }

    async fn discard(&self, sector: u64, count: u64) -> Result<(), BlockError> {
        let info = self.info();
        if count == 0 {
            return Err(BlockError::BadLength {
                len: 0,
                sector_size: info.sector_size,
            });
        }
        if info.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(&info, sector, count)?;
        if info.discard.is_none() {
            return Err(BlockError::Unsupported(Operation::Discard));
        }
        let per = u64::from(info.sector_size / 512);
        let r = self
            .run(&mut SingleJob::new(Single::Discard(
                sector * per,
                count * per,
            )))
            .await;
        if r == Err(BlockError::Unsupported(Operation::Discard)) {
            self.st.borrow_mut().info.discard = None;
        }
        r
    }
}

/// How many times the `embedded_sdmmc` interface tries a read or write
/// that fails with [`BlockError::Io`]. `embedded_sdmmc` has no retry of
/// its own, so one transient error would fail a file or a whole volume
/// (the simulator's soak showed a site refusing to start); rewriting the
/// same blocks is harmless. Other errors are returned at once.
pub const SDMMC_TRIES: u32 = 3;

/// Run `op` until it does not fail with an I/O error, at most
/// [`SDMMC_TRIES`] times.
fn retry_io(mut op: impl FnMut() -> Result<(), BlockError>) -> Result<(), BlockError> {
    let mut tries = 1;
    loop {
        match op() {
            Err(BlockError::Io(what)) if tries < SDMMC_TRIES => {
                log::warn!("blkfront: {what:?} failed with an I/O error; trying again");
                tries += 1;
            }
            r => return r,
        }
    }
}

impl<H: Hypervisor, C: hal::Clock, A: AlarmHw> embedded_sdmmc::BlockDevice
    for Blkfront<'_, H, C, A>
{
    type Error = BlockError;

    /// Read 512-byte blocks (on a disk with larger sectors, the covering
    /// sectors are read), blocking until done. One that fails with an I/O
    /// error is tried again, [`SDMMC_TRIES`] times in all.
    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), BlockError> {
        retry_io(|| self.block_on(self.read_blocks(blocks, u64::from(start.0))))
    }

    /// Write 512-byte blocks, blocking until done (tried again on an I/O
    /// error, as reads are). Durable after
    /// [`flush_blocking`](Blkfront::flush_blocking).
    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), BlockError> {
        retry_io(|| self.block_on(self.write_blocks(blocks, u64::from(start.0))))
    }

    /// The size in 512-byte blocks.
    ///
    /// Errors: [`BlockError::OutOfRange`] if that exceeds `u32::MAX`
    /// (2 TiB), which `embedded_sdmmc` cannot address.
    fn num_blocks(&self) -> Result<BlockCount, BlockError> {
        let info = self.info();
        let blocks = info.bytes() / Block::LEN as u64;
        u32::try_from(blocks)
            .map(BlockCount)
            .map_err(|_| BlockError::OutOfRange {
                sector: 0,
                count: info.sectors,
                sectors: info.sectors,
            })
    }
}

impl<H: Hypervisor, C: hal::Clock, A: AlarmHw> embedded_sdmmc::BlockDevice
    for &Blkfront<'_, H, C, A>
{
    type Error = BlockError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), BlockError> {
        embedded_sdmmc::BlockDevice::read(*self, blocks, start)
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), BlockError> {
        embedded_sdmmc::BlockDevice::write(*self, blocks, start)
    }

    fn num_blocks(&self) -> Result<BlockCount, BlockError> {
        embedded_sdmmc::BlockDevice::num_blocks(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_tried_again_and_other_errors_are_not() {
        let mut calls = 0;
        let r = retry_io(|| {
            calls += 1;
            if calls < SDMMC_TRIES {
                Err(BlockError::Io(Operation::Read))
            } else {
                Ok(())
            }
        });
        assert_eq!((r, calls), (Ok(()), SDMMC_TRIES));
        let mut calls = 0;
        let r = retry_io(|| {
            calls += 1;
            Err(BlockError::Io(Operation::Write))
        });
        assert_eq!(
            (r, calls),
            (Err(BlockError::Io(Operation::Write)), SDMMC_TRIES)
        );
        let mut calls = 0;
        let r = retry_io(|| {
            calls += 1;
            Err(BlockError::ReadOnly)
        });
        assert_eq!((r, calls), (Err(BlockError::ReadOnly), 1));
    }

    #[test]
    fn spans_cover_blocks_with_large_sectors() {
        // Blocks 3..5 on a 4096-byte-sector disk: sector 0, at byte 1536.
        assert_eq!(span(3, 2, 4096), (0, 4096, 1536));
        // Blocks 7..9 straddle sectors 0 and 1.
        assert_eq!(span(7, 2, 4096), (0, 8192, 3584));
        assert_eq!(span(8, 8, 4096), (1, 4096, 0));
        assert_eq!(span(0, 1, 512), (0, 512, 0));
    }
}
