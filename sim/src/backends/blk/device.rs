//! One virtual disk's backend: its xenbus state machine, the connection
//! (mapped ring, bound channel, dom0 pages for grant copies), and the
//! handling of each request, checked as coming from a hostile frontend.

use super::store::{CachedDisk, SECTOR};
use super::{Command, FaultKind, VbdShared};
use crate::SimPlatform;
use hal::event::wait_event;
use hal::grant::{CopyPtr, GrantCopy};
use hal::mem::AllocError;
use hal::mem::{MultiPage, PAGE_SIZE, PageAlloc, Pages, SharedMemory};
use hal::task::{Either, select};
use hal::time::sleep_until;
use hal::{
    Access, BackRing, Clock, DomId, EventChannel, EventError, EventPort, GrantError, GrantRef,
    GrantTable, Instant, RingError,
};
use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use xen_pv::abi::io::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_SEGS_PER_INDIRECT_FRAME, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect,
    BlkifRequestSegment, BlkifResponse, blkif_op, blkif_rsp, vdisk,
};
use xen_pv::xenbus::{XenbusState, join};
use xen_pv::xenstore::{TxId, XenStore, XsError};
use xenpal_drivers::xenbus::{XenbusDevice, XenbusError};
use zerocopy::{FromBytes, IntoBytes};

type H = crate::SimHypervisor;
type Mapping = <xen_pv::grant::Grants<H> as GrantTable>::Mapping;
type Ring = BackRing<MultiPage<Mapping>, BlkifRequest, BlkifResponse>;
type Bounce = <xen_pv::pages::FramePool<H> as PageAlloc>::Block;

/// Why blkback could not connect to a frontend: logged and written to the
/// backend's `error` node, then the backend closes and offers the device
/// again. (Not public: nothing but the node and the log shows it.)
#[derive(Clone, Debug, PartialEq, Eq)]
enum ConnectError {
    /// A numeric frontend node could not be read, or is not a number.
    BadNode {
        /// The node.
        key: String,
        /// Why.
        source: XenbusError,
    },
    /// A numeric frontend node does not fit 32 bits.
    OutOfRange {
        /// The node.
        key: String,
        /// Its value.
        value: u64,
    },
    /// A node the frontend must write (`ring-ref`, `ring-ref<i>`,
    /// `event-channel`) is absent.
    MissingNode {
        /// The node.
        key: String,
    },
    /// The frontend's `ring-page-order` is above the one we offered.
    RingPageOrder {
        /// The frontend's.
        order: u32,
        /// Ours (`max-ring-page-order`).
        max: u32,
    },
    /// Reading the frontend's `protocol` failed.
    ReadProtocol(XsError),
    /// The frontend's `protocol` is not the native one.
    Protocol {
        /// The node's value.
        protocol: String,
    },
    /// A ring page could not be mapped.
    MapRing {
        /// Its grant reference.
        gref: u32,
        /// The grant table's error.
        source: GrantError,
    },
    /// The mapped pages cannot hold a ring.
    RingUnusable {
        /// Pages mapped.
        pages: usize,
    },
    /// The frontend's event channel could not be bound.
    BindEventChannel {
        /// `event-channel`.
        port: u32,
        /// The event channel's error.
        source: EventError,
    },
    /// No dom0 pages for the copies.
    CopyPages(AllocError),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::BadNode { source, .. } => source.fmt(f),
            ConnectError::OutOfRange { key, value } => {
                write!(f, "frontend `{key}` out of range ({value})")
            }
            ConnectError::MissingNode { key } => write!(f, "no {key} from the frontend"),
            ConnectError::RingPageOrder { order, max } => write!(
                f,
                "ring-page-order {order} above our max-ring-page-order {max}"
            ),
            ConnectError::ReadProtocol(e) => e.fmt(f),
            ConnectError::Protocol { protocol } => {
                write!(f, "unsupported protocol {protocol:?}")
            }
            ConnectError::MapRing { gref, source } => {
                write!(f, "mapping ring-ref {gref}: {source}")
            }
            ConnectError::RingUnusable { pages } => {
                write!(f, "a ring of {pages} pages is unusable")
            }
            ConnectError::BindEventChannel { port, source } => {
                write!(f, "binding event-channel {port}: {source}")
            }
            ConnectError::CopyPages(e) => write!(f, "dom0 pages for copies: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::BadNode { source, .. } => Some(source),
            ConnectError::ReadProtocol(e) => Some(e),
            ConnectError::MapRing { source, .. } => Some(source),
            ConnectError::BindEventChannel { source, .. } => Some(source),
            ConnectError::CopyPages(e) => Some(e),
            ConnectError::OutOfRange { .. }
            | ConnectError::MissingNode { .. }
            | ConnectError::RingPageOrder { .. }
            | ConnectError::Protocol { .. }
            | ConnectError::RingUnusable { .. } => None,
        }
    }
}

/// dom0 pages per connection for grant copies: segments move this many at
/// a time (enough for the 8 pages of an indirect request's segment list).
const BATCH: usize = 16;

const _: () = assert!(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST <= BATCH);

/// Offset of `rsp_prod` in a shared ring's header (ring.h).
const RSP_PROD: usize = 8;

/// Why a connection ended.
enum End {
    /// The frontend left `Connected` (closing, closed, gone).
    FrontendLeft(XenbusState),
    /// A crash or restart was asked for.
    Command(Command),
    /// A seeded crash happened while writing (its cache is already lost
    /// and its write torn).
    Crashed,
    /// The frontend broke the ring protocol.
    RingBroken(RingError),
    /// xenstore failed.
    Xenstore(XsError),
}

/// Why serving stops at a seeded fault met while handling a request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// The backend crashed while writing: carried out already (the cache
    /// is lost and the write torn).
    Crashed,
    /// A clean restart, to carry out.
    Restart,
}

struct Conn {
    ring: Ring,
    port: EventPort,
    bounce: Bounce,
    /// Responses held back by seeded latency, by when they are due
    /// (nanoseconds) and the order they were made in.
    delayed: BTreeMap<(u64, u64), BlkifResponse>,
    /// Responses delayed so far (orders those due at the same time).
    delayed_seq: u64,
    /// Set while handling a request that met a seeded crash or restart.
    stop: Option<Stop>,
}

struct Backend<'a> {
    p: &'a SimPlatform,
    xs: XenStore<H>,
    dev: XenbusDevice<H>,
    token: String,
    vbd: Arc<VbdShared>,
}

/// Serve the device whose backend directory is `dir` until its frontend
/// domain is gone.
pub(super) async fn serve(p: &SimPlatform, dir: String, vbd: Arc<VbdShared>) {
    let Some(xs) = p.xenstore().cloned() else {
        return;
    };
    let dev = match XenbusDevice::open_backend(&xs, &dir).await {
        Ok(d) => d,
        Err(e) => {
            log::warn!("blkback {dir}: {e}");
            return;
        }
    };
    let token = format!("blkback:{dir}");
    match xs.watch(&join(dev.peer_dir(), "state"), &token).await {
        Ok(()) | Err(XsError::Errno(xen_pv::abi::Errno::EEXIST)) => {}
        Err(e) => {
            log::warn!("blkback {dir}: watching the frontend: {e}");
            return;
        }
    }
    Backend {
        p,
        xs,
        dev,
        token,
        vbd,
    }
    .run()
    .await
}

fn ok_or_log<T, E: std::fmt::Display>(dir: &str, what: &str, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log::warn!("blkback {dir}: {what}: {e}");
            None
        }
    }
}

impl Backend<'_> {
    fn dir(&self) -> &str {
        self.dev.own_dir()
    }

    async fn wait_frontend(
        &self,
        want: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState, XsError> {
        loop {
            let s = self.dev.peer_state().await?;
            if want(s) {
                return Ok(s);
            }
            self.xs.next_watch_event_for(&self.token).await?;
        }
    }

    async fn switch(&self, s: XenbusState) -> bool {
        ok_or_log(
            self.dir(),
            "switching state",
            self.dev.switch_state(s).await,
        )
        .is_some()
    }

    async fn write(&self, key: &str, value: &str) -> Result<(), XsError> {
        self.dev.write_own(TxId::NONE, key, value).await
    }

    async fn run(&self) {
        let mut first = true;
        loop {
            if !first {
                // After a reset, offer the device again once the frontend
                // has seen it go (as Linux's blkback waits for the
                // frontend to close).
                let s = self
                    .wait_frontend(|s| {
                        matches!(
                            s,
                            XenbusState::Closed | XenbusState::Initialising | XenbusState::Unknown
                        )
                    })
                    .await;
                match ok_or_log(self.dir(), "waiting for the frontend", s) {
                    Some(XenbusState::Unknown) | None => return,
                    Some(_) => {}
                }
            }
            first = false;
            // A crash while nothing is connected loses nothing but the
            // cache (empty after a clean stop).
            while let Some(cmd) = self.vbd.take_command() {
                self.apply(cmd);
            }
            if ok_or_log(
                self.dir(),
                "publishing features",
                self.publish_features().await,
            )
            .is_none()
                || !self.switch(XenbusState::InitWait).await
            {
                return;
            }
            let s = self
                .wait_frontend(|s| {
                    matches!(
                        s,
                        XenbusState::Initialised | XenbusState::Connected | XenbusState::Unknown
                    )
                })
                .await;
            match ok_or_log(self.dir(), "waiting for the frontend", s) {
                Some(XenbusState::Unknown) | None => return,
                Some(_) => {}
            }
            let mut conn = match self.connect().await {
                Ok(c) => c,
                Err(why) => {
                    log::warn!("blkback {}: cannot connect: {why}", self.dir());
                    let _ = self.write("error", &why.to_string()).await;
                    self.switch(XenbusState::Closing).await;
                    self.switch(XenbusState::Closed).await;
                    continue;
                }
            };
            let connected = async {
                self.publish_properties().await?;
                self.dev.switch_state(XenbusState::Connected).await
            }
            .await;
            let end = match connected {
                Ok(()) => {
                    self.vbd.stats.lock().unwrap().connections += 1;
                    self.serve_ring(&mut conn).await
                }
                Err(e) => End::Xenstore(e),
            };
            match end {
                End::Command(cmd) => {
                    if cmd == Command::Restart {
                        // A clean stop: what was carried out is answered.
                        self.answer_delayed(&mut conn, u64::MAX);
                    }
                    self.apply(cmd)
                }
                End::Crashed => {}
                End::FrontendLeft(s) => {
                    log::info!("blkback {}: the frontend left ({s})", self.dir());
                    self.write_back();
                    if s == XenbusState::Closing {
                        // As Linux's blkback: answer Closing with Closing,
                        // and unmap and go Closed only once the frontend
                        // is Closed (a frontend waiting for our Closed
                        // first would wait for ever, as on Linux).
                        self.switch(XenbusState::Closing).await;
                        let s = self
                            .wait_frontend(|s| {
                                matches!(
                                    s,
                                    XenbusState::Closed
                                        | XenbusState::Initialising
                                        | XenbusState::Unknown
                                )
                            })
                            .await;
                        ok_or_log(self.dir(), "waiting for the frontend to close", s);
                    }
                }
                End::RingBroken(e) => {
                    log::warn!("blkback {}: {e}; disconnecting", self.dir());
                    self.write_back();
                }
                End::Xenstore(e) => {
                    log::warn!("blkback {}: xenstore: {e}", self.dir());
                    self.write_back();
                }
            }
            self.disconnect(conn);
            self.switch(XenbusState::Closing).await;
            self.switch(XenbusState::Closed).await;
        }
    }

    fn write_back(&self) {
        let r = self.vbd.disk.lock().unwrap().write_back();
        ok_or_log(self.dir(), "writing the cache back", r);
    }

    fn apply(&self, cmd: Command) {
        match cmd {
            Command::Crash => self.lose_cache(&mut self.vbd.disk.lock().unwrap()),
            Command::Restart => {
                log::info!("blkback {}: restarting", self.dir());
                self.write_back();
            }
        }
    }

    /// A crash: the cache of `disk` is lost.
    fn lose_cache(&self, disk: &mut CachedDisk) {
        let lost = disk.drop_cache();
        let mut st = self.vbd.stats.lock().unwrap();
        st.crashes += 1;
        st.sectors_lost += lost as u64;
        log::info!(
            "blkback {}: crashed, losing {lost} cached sectors",
            self.dir()
        );
    }

    async fn publish_features(&self) -> Result<(), XsError> {
        let o = &self.vbd.options;
        let flag = |b: bool| if b { "1" } else { "0" };
        self.write("feature-flush-cache", flag(o.flush)).await?;
        self.write("feature-barrier", flag(o.barrier)).await?;
        self.write("feature-discard", flag(o.discard)).await?;
        if o.discard {
            let g = o.discard_granularity.unwrap_or(o.sector_size);
            self.write("discard-granularity", &g.to_string()).await?;
            self.write("discard-alignment", "0").await?;
            self.write("discard-secure", flag(o.discard_secure)).await?;
        }
        if o.max_indirect_segments as usize > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            self.write(
                "feature-max-indirect-segments",
                &o.max_indirect_segments.to_string(),
            )
            .await?;
        } else {
            self.dev
                .remove_own(TxId::NONE, "feature-max-indirect-segments")
                .await?;
        }
        self.write("max-ring-page-order", &o.max_ring_page_order.to_string())
            .await?;
        self.write("feature-persistent", "0").await
    }

    async fn publish_properties(&self) -> Result<(), XsError> {
        let o = &self.vbd.options;
        let bytes = self.vbd.disk.lock().unwrap().disk.bytes;
        let info = if o.read_only { vdisk::READONLY } else { 0 };
        self.write("sectors", &(bytes / u64::from(o.sector_size)).to_string())
            .await?;
        self.write("info", &info.to_string()).await?;
        self.write("sector-size", &o.sector_size.to_string())
            .await?;
        self.write("physical-sector-size", &o.physical().to_string())
            .await
    }

    async fn peer_number(&self, key: &str) -> Result<Option<u32>, ConnectError> {
        match self.dev.peer_u64(key).await {
            Ok(None) => Ok(None),
            Ok(Some(value)) => {
                u32::try_from(value)
                    .map(Some)
                    .map_err(|_| ConnectError::OutOfRange {
                        key: key.into(),
                        value,
                    })
            }
            Err(source) => Err(ConnectError::BadNode {
                key: key.into(),
                source,
            }),
        }
    }

    /// A node the frontend must have written.
    async fn required(&self, key: &str) -> Result<u32, ConnectError> {
        self.peer_number(key)
            .await?
            .ok_or_else(|| ConnectError::MissingNode { key: key.into() })
    }

    /// Map the frontend's ring, bind its channel, take dom0 pages.
    async fn connect(&self) -> Result<Conn, ConnectError> {
        let fe = self.dev.peer_id();
        let order = self.peer_number("ring-page-order").await?.unwrap_or(0);
        if order > self.vbd.options.max_ring_page_order {
            return Err(ConnectError::RingPageOrder {
                order,
                max: self.vbd.options.max_ring_page_order,
            });
        }
        let mut refs = Vec::new();
        if order == 0 {
            refs.push(self.required("ring-ref").await?);
        } else {
            for i in 0..1u32 << order {
                refs.push(self.required(&format!("ring-ref{i}")).await?);
            }
        }
        let port = self.required("event-channel").await?;
        if let Some(proto) = self
            .dev
            .read_peer("protocol")
            .await
            .map_err(ConnectError::ReadProtocol)?
            && proto != xenpal_drivers::blk::PROTOCOL_NATIVE
        {
            return Err(ConnectError::Protocol { protocol: proto });
        }
        let grants = self.p.grants();
        let mut maps = Vec::new();
        for r in refs {
            match grants.map(fe, GrantRef(r), Access::ReadWrite) {
                Ok(m) => maps.push(m),
                Err(e) => {
                    self.unmap_all(maps);
                    return Err(ConnectError::MapRing { gref: r, source: e });
                }
            }
        }
        let pages = maps.len();
        let ring = match MultiPage::new(maps, PAGE_SIZE).map(BackRing::attach) {
            Some(Ok(r)) => r,
            _ => return Err(ConnectError::RingUnusable { pages }),
        };
        let port = match self.p.events().bind_interdomain(fe, EventPort(port)) {
            Ok(p) => p,
            Err(e) => {
                self.unmap_all(ring.into_memory().into_pages());
                return Err(ConnectError::BindEventChannel { port, source: e });
            }
        };
        let bounce = match self.p.pages().alloc(BATCH) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.p.events().close(port);
                self.unmap_all(ring.into_memory().into_pages());
                return Err(ConnectError::CopyPages(e));
            }
        };
        self.vbd.stats.lock().unwrap().ring_pages = pages as u32;
        log::info!(
            "blkback {}: connected to d{} (ring of {pages} pages, {} slots)",
            self.dir(),
            fe.0,
            ring.size()
        );
        Ok(Conn {
            ring,
            port,
            bounce,
            delayed: BTreeMap::new(),
            delayed_seq: 0,
            stop: None,
        })
    }

    fn unmap_all(&self, maps: Vec<Mapping>) {
        for m in maps {
            if let Err((_, e)) = self.p.grants().unmap(m) {
                log::warn!("blkback {}: unmapping the ring: {e}", self.dir());
            }
        }
    }

    fn disconnect(&self, conn: Conn) {
        let _ = self.p.events().close(conn.port);
        self.unmap_all(conn.ring.into_memory().into_pages());
        self.p.pages().free(conn.bounce);
    }

    async fn serve_ring(&self, c: &mut Conn) -> End {
        let mut changed = false;
        loop {
            if let Some(cmd) = self.vbd.take_command() {
                return End::Command(cmd);
            }
            loop {
                match self.xs.try_watch_event_for(&self.token) {
                    Ok(Some(_)) => changed = true,
                    Ok(None) => break,
                    Err(e) => return End::Xenstore(e),
                }
            }
            if std::mem::take(&mut changed) {
                match self.dev.peer_state().await {
                    Ok(XenbusState::Initialised | XenbusState::Connected) => {}
                    Ok(s) => return End::FrontendLeft(s),
                    Err(e) => return End::Xenstore(e),
                }
            }
            // Again after the await above: a crash asked for meanwhile
            // takes effect before anything more is served.
            if let Some(cmd) = self.vbd.take_command() {
                return End::Command(cmd);
            }
            match self.drain(c) {
                Ok(None) => {}
                Ok(Some(Stop::Crashed)) => return End::Crashed,
                Ok(Some(Stop::Restart)) => return End::Command(Command::Restart),
                Err(e) => return End::RingBroken(e),
            }
            match c.ring.final_check_for_requests() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return End::RingBroken(e),
            }
            // Wait for a request, a state change, or the next delayed
            // response to fall due.
            let due = c.delayed.keys().next().map(|&(due, _)| due);
            let timer = self.p.timer();
            let event = pin!(wait_event(self.p.events(), c.port));
            let watch = pin!(self.xs.next_watch_event_for(&self.token));
            let sleep = pin!(async move {
                match due {
                    Some(due) => sleep_until(timer, Instant::from_nanos(due)).await,
                    None => std::future::pending().await,
                }
            });
            match select(select(event, sleep), watch).await {
                Either::First(_) => {}
                Either::Second(Ok(_)) => changed = true,
                Either::Second(Err(e)) => return End::Xenstore(e),
            }
        }
    }

    /// Answer the requests on the ring (at most a ring's worth per call),
    /// and send the delayed responses now due. Returns why serving must
    /// stop, if a seeded fault says so: after a crash nothing more is
    /// answered; before a restart what was answered is sent.
    fn drain(&self, c: &mut Conn) -> Result<Option<Stop>, RingError> {
        let waiting = c.ring.unconsumed_requests()?;
        {
            let mut st = self.vbd.stats.lock().unwrap();
            st.max_in_flight = st.max_in_flight.max(waiting);
        }
        let now = self.p.timer().now().as_nanos();
        let mut runaway = false;
        let mut stop = None;
        for _ in 0..c.ring.size() {
            let Some(req) = c.ring.take_request()? else {
                break;
            };
            let mut rsp = self.handle(c, &req);
            if let Some(s) = c.stop.take() {
                // The request is never answered.
                stop = Some(s);
                break;
            }
            if rsp.status != blkif_rsp::OKAY {
                self.vbd.stats.lock().unwrap().errors += 1;
            }
            match self.fault_now() {
                Some(FaultKind::UnknownId) => rsp.id = rsp.id.wrapping_add(0x5eed_0000_0000),
                Some(FaultKind::ImpossibleStatus) => rsp.status = 7,
                Some(FaultKind::WrongOperation) => {
                    rsp.operation = if rsp.operation == blkif_op::DISCARD {
                        blkif_op::READ
                    } else {
                        blkif_op::DISCARD
                    }
                }
                Some(FaultKind::RunawayProducer) => runaway = true,
                None => {}
            }
            let delay = self.vbd.faults.lock().unwrap().delay();
            if delay == 0 {
                // Cannot fail: this answers the request just taken.
                let _ = c.ring.stage_response(&rsp);
            } else {
                c.delayed
                    .insert((now.saturating_add(delay), c.delayed_seq), rsp);
                c.delayed_seq += 1;
            }
        }
        if stop == Some(Stop::Crashed) {
            return Ok(stop);
        }
        self.answer_delayed(c, now);
        if runaway {
            let claimed = c.ring.rsp_prod_pvt().add(1000);
            c.ring
                .memory()
                .store_u32(RSP_PROD, claimed.0, Ordering::Release);
            let _ = self.p.events().notify(c.port);
        }
        Ok(stop)
    }

    /// Stage the delayed responses due by `now` (nanoseconds), soonest
    /// first, and push every staged response.
    fn answer_delayed(&self, c: &mut Conn, now: u64) {
        while let Some(entry) = c.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            // Cannot fail: each answers a request taken and unanswered.
            let _ = c.ring.stage_response(&entry.remove());
        }
        if c.ring.push_responses_and_check_notify() {
            let _ = self.p.events().notify(c.port);
        }
    }

    /// Whether the configured fault fires at the request just counted.
    fn fault_now(&self) -> Option<FaultKind> {
        let f = self.vbd.options.fault?;
        let n = self.vbd.stats.lock().unwrap().requests;
        let mut fired = self.vbd.fault_fired.lock().unwrap();
        if *fired || n != f.at_request {
            return None;
        }
        *fired = true;
        self.vbd.stats.lock().unwrap().faults_injected += 1;
        log::info!(
            "blkback {}: injecting {:?} at request {n}",
            self.dir(),
            f.kind
        );
        Some(f.kind)
    }

    /// Carry out one request; returns its response.
    fn handle(&self, c: &mut Conn, req: &BlkifRequest) -> BlkifResponse {
        self.vbd.stats.lock().unwrap().requests += 1;
        if self.vbd.faults.lock().unwrap().restart_now() {
            log::info!(
                "blkback {}: restarting (seeded) at request {:#x}",
                self.dir(),
                req.id
            );
            c.stop = Some(Stop::Restart);
            return BlkifResponse::default();
        }
        let (operation, status) = match req.operation {
            blkif_op::READ | blkif_op::WRITE => {
                let n = usize::from(req.nr_segments);
                let status = if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                    blkif_rsp::ERROR
                } else {
                    self.rw(c, req.operation, req.sector_number, &req.seg[..n], false)
                };
                (req.operation, status)
            }
            blkif_op::INDIRECT => self.indirect(c, req),
            blkif_op::FLUSH_DISKCACHE => {
                let status = if self.vbd.options.flush {
                    self.vbd.stats.lock().unwrap().flushes += 1;
                    self.flush()
                } else {
                    blkif_rsp::EOPNOTSUPP
                };
                (req.operation, status)
            }
            blkif_op::WRITE_BARRIER => (req.operation, self.barrier(c, req)),
            blkif_op::DISCARD => (req.operation, self.discard(req)),
            other => (other, blkif_rsp::EOPNOTSUPP),
        };
        BlkifResponse {
            id: req.id,
            operation,
            status,
            ..Default::default()
        }
    }

    fn flush(&self) -> i16 {
        match self.vbd.disk.lock().unwrap().write_back() {
            Ok(()) => blkif_rsp::OKAY,
            Err(e) => {
                log::warn!("blkback {}: flush: {e}", self.dir());
                blkif_rsp::ERROR
            }
        }
    }

    fn barrier(&self, c: &mut Conn, req: &BlkifRequest) -> i16 {
        if !self.vbd.options.barrier {
            return blkif_rsp::EOPNOTSUPP;
        }
        self.vbd.stats.lock().unwrap().barriers += 1;
        // Everything before the barrier is durable before it runs...
        let status = self.flush();
        let n = usize::from(req.nr_segments);
        if status != blkif_rsp::OKAY || n == 0 {
            return status;
        }
        if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return blkif_rsp::ERROR;
        }
        // ...and so is its own write when it completes.
        match self.rw(c, blkif_op::WRITE, req.sector_number, &req.seg[..n], false) {
            blkif_rsp::OKAY => self.flush(),
            s => s,
        }
    }

    fn discard(&self, req: &BlkifRequest) -> i16 {
        let o = &self.vbd.options;
        if !o.discard {
            return blkif_rsp::EOPNOTSUPP;
        }
        let Ok((d, _)) = BlkifRequestDiscard::read_from_prefix(req.as_bytes()) else {
            return blkif_rsp::ERROR;
        };
        if d.flag & BLKIF_DISCARD_SECURE != 0 && !o.discard_secure {
            return blkif_rsp::EOPNOTSUPP;
        }
        if o.read_only {
            return blkif_rsp::ERROR;
        }
        let k = u64::from(o.sector_size) / SECTOR as u64;
        let mut disk = self.vbd.disk.lock().unwrap();
        let in_range = d
            .sector_number
            .checked_add(d.nr_sectors)
            .and_then(|end| end.checked_mul(SECTOR as u64))
            .is_some_and(|end| end <= disk.disk.bytes);
        if !in_range || !d.sector_number.is_multiple_of(k) || !d.nr_sectors.is_multiple_of(k) {
            return blkif_rsp::ERROR;
        }
        self.vbd.stats.lock().unwrap().discards += 1;
        match disk.discard(
            d.sector_number * SECTOR as u64,
            d.nr_sectors * SECTOR as u64,
        ) {
            Ok(()) => blkif_rsp::OKAY,
            Err(e) => {
                log::warn!("blkback {}: discard: {e}", self.dir());
                blkif_rsp::ERROR
            }
        }
    }

    /// An indirect read or write: fetch its segment list, then carry it
    /// out. Returns the operation to answer with (the inner one) and the
    /// status.
    fn indirect(&self, c: &mut Conn, req: &BlkifRequest) -> (u8, i16) {
        let max = self.vbd.options.max_indirect_segments as usize;
        let Ok((ind, _)) = BlkifRequestIndirect::read_from_prefix(req.as_bytes()) else {
            return (req.operation, blkif_rsp::ERROR);
        };
        if max <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            // Not offered: as if unknown.
            return (req.operation, blkif_rsp::EOPNOTSUPP);
        }
        let op = ind.indirect_op;
        if op != blkif_op::READ && op != blkif_op::WRITE {
            return (req.operation, blkif_rsp::ERROR);
        }
        let n = usize::from(ind.nr_segments);
        if n == 0 || n > max {
            return (op, blkif_rsp::ERROR);
        }
        let frames = n.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
        // At most 4096 segments are offered: 8 pages.
        debug_assert!(frames <= BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
        let fe = self.dev.peer_id();
        let ops: Vec<GrantCopy> = (0..frames)
            .map(|j| GrantCopy {
                src: CopyPtr::Foreign {
                    domid: fe,
                    gref: GrantRef(ind.indirect_grefs[j]),
                    offset: 0,
                },
                dst: CopyPtr::Local {
                    gfn: c.bounce.gfn(j),
                    offset: 0,
                },
                len: PAGE_SIZE as u16,
            })
            .collect();
        if !self.copy(&ops) {
            return (op, blkif_rsp::ERROR);
        }
        let size = core::mem::size_of::<BlkifRequestSegment>();
        let mut segs = Vec::with_capacity(n);
        for i in 0..n {
            let mut raw = [0u8; 8];
            let frame = i / BLKIF_SEGS_PER_INDIRECT_FRAME;
            let at = frame * PAGE_SIZE + (i % BLKIF_SEGS_PER_INDIRECT_FRAME) * size;
            c.bounce.read(at, &mut raw[..size]);
            match BlkifRequestSegment::read_from_bytes(&raw[..size]) {
                Ok(s) => segs.push(s),
                Err(_) => return (op, blkif_rsp::ERROR),
            }
        }
        (op, self.rw(c, op, ind.sector_number, &segs, true))
    }

    /// Grant copies; whether all succeeded.
    fn copy(&self, ops: &[GrantCopy]) -> bool {
        let mut status = vec![Ok(()); ops.len()];
        match self.p.grants().copy(ops, &mut status) {
            Ok(()) => status.iter().all(Result::is_ok),
            Err(_) => false,
        }
    }

    /// A read or write of `segs` from 512-byte sector `sector`.
    fn rw(
        &self,
        c: &mut Conn,
        op: u8,
        sector: u64,
        segs: &[BlkifRequestSegment],
        indirect: bool,
    ) -> i16 {
        let o = &self.vbd.options;
        if op == blkif_op::WRITE && o.read_only {
            return blkif_rsp::ERROR;
        }
        let k = (o.sector_size as usize / SECTOR) as u64;
        if !sector.is_multiple_of(k) {
            return blkif_rsp::ERROR;
        }
        let per_page = (PAGE_SIZE / SECTOR) as u8;
        let mut total = 0u64;
        for s in segs {
            if s.first_sect > s.last_sect
                || s.last_sect >= per_page
                || !u64::from(s.first_sect).is_multiple_of(k)
                || !(u64::from(s.last_sect) + 1).is_multiple_of(k)
            {
                return blkif_rsp::ERROR;
            }
            total += u64::from(s.last_sect - s.first_sect) + 1;
        }
        let mut disk = self.vbd.disk.lock().unwrap();
        let in_range = sector
            .checked_add(total)
            .and_then(|end| end.checked_mul(SECTOR as u64))
            .is_some_and(|end| end <= disk.disk.bytes);
        if !in_range {
            return blkif_rsp::ERROR;
        }
        {
            let mut st = self.vbd.stats.lock().unwrap();
            if op == blkif_op::READ {
                st.reads += 1;
            } else {
                st.writes += 1;
            }
            if indirect {
                st.indirect_requests += 1;
            }
            st.max_segments = st.max_segments.max(segs.len() as u32);
        }
        // Seeded faults: an error touches nothing; a crash loses the cache
        // and lets only the first `tear` sectors of this write through.
        let mut tear = {
            let mut faults = self.vbd.faults.lock().unwrap();
            if faults.io_error_now() {
                return blkif_rsp::ERROR;
            }
            if op == blkif_op::WRITE {
                faults.crash_now(total, k)
            } else {
                None
            }
        };
        if let Some(kept) = tear {
            self.lose_cache(&mut disk);
            log::info!(
                "blkback {}: crashed writing {total} sectors at {sector}; {kept} reach the disk",
                self.dir()
            );
            c.stop = Some(Stop::Crashed);
        }
        let fe: DomId = self.dev.peer_id();
        let mut off = sector * SECTOR as u64;
        let mut buf = vec![0u8; PAGE_SIZE];
        for chunk in segs.chunks(BATCH) {
            let mut ops = Vec::with_capacity(chunk.len());
            let mut spans = Vec::with_capacity(chunk.len());
            for (i, s) in chunk.iter().enumerate() {
                let at = usize::from(s.first_sect) * SECTOR;
                let len = (usize::from(s.last_sect - s.first_sect) + 1) * SECTOR;
                let foreign = CopyPtr::Foreign {
                    domid: fe,
                    gref: GrantRef(s.gref),
                    offset: at as u16,
                };
                let local = CopyPtr::Local {
                    gfn: c.bounce.gfn(i),
                    offset: at as u16,
                };
                let (src, dst) = if op == blkif_op::READ {
                    (local, foreign)
                } else {
                    (foreign, local)
                };
                ops.push(GrantCopy {
                    src,
                    dst,
                    len: len as u16,
                });
                spans.push((i * PAGE_SIZE + at, len, off));
                off += len as u64;
            }
            if op == blkif_op::READ {
                for &(at, len, disk_off) in &spans {
                    if disk.read(disk_off, &mut buf[..len]).is_err() {
                        return blkif_rsp::ERROR;
                    }
                    c.bounce.write(at, &buf[..len]);
                }
                if !self.copy(&ops) {
                    return blkif_rsp::ERROR;
                }
            } else {
                if tear == Some(0) {
                    break;
                }
                if !self.copy(&ops) {
                    return blkif_rsp::ERROR;
                }
                for &(at, len, disk_off) in &spans {
                    c.bounce.read(at, &mut buf[..len]);
                    let written = match &mut tear {
                        None => disk.write(disk_off, &buf[..len]),
                        Some(left) => {
                            let n = len.min(*left as usize * SECTOR);
                            *left -= (n / SECTOR) as u64;
                            disk.write_durable(disk_off, &buf[..n])
                        }
                    };
                    if written.is_err() {
                        return blkif_rsp::ERROR;
                    }
                }
            }
        }
        blkif_rsp::OKAY
    }
}

impl VbdShared {
    fn take_command(&self) -> Option<Command> {
        self.commands.lock().unwrap().pop_front()
    }
}
