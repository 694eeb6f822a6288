//! One connection to a backend: the shared ring, its grants and event
//! channel, the data pages the backend copies to and from, and the table of
//! requests in flight.
//!
//! Everything here belongs to the guest. The backend is granted the ring
//! pages, the data pages (read-write) and the indirect-segment pages
//! (read-only); nothing else. Data is copied between the caller's buffers
//! and the data pages by the guest (see [`super::io`]), so the backend never
//! sees the caller's memory, and the caller never sees shared memory.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use hal::mem::AllocError;
use hal::mem::{PAGE_SIZE, PageAlloc, Pages, SharedMemory};
use hal::ring::ring_size_for_order;
use hal::{
    Access, DomId, EventChannel, EventError, EventPort, FrontRing, GrantError, GrantRef,
    GrantTable, RingError,
};
use xen_pv::Hypervisor;
use xen_pv::abi::io::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_SEGS_PER_INDIRECT_FRAME, BlkifRequest,
    BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse, blkif_op,
    blkif_rsp,
};
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;
use zerocopy::{FromZeros, IntoBytes};

/// A page of ours.
pub(super) type Page<H> = xen_pv::pages::FrameBlock<<H as Hypervisor>::Mem>;

/// A page granted to the backend.
pub(super) struct Granted<H: Hypervisor> {
    pub page: Page<H>,
    pub gref: GrantRef,
}

/// A block of pages (a ring, or one data page) whose grants could not all
/// be ended because the backend still uses them. The page must not be
/// freed or reused until every grant is ended.
pub(super) struct Held<H: Hypervisor> {
    pub page: Page<H>,
    pub grefs: Vec<GrantRef>,
}

impl<H: Hypervisor> Held<H> {
    /// Pages in the block.
    pub fn page_count(&self) -> usize {
        self.page.count()
    }

    /// End what can be ended now. Returns whether nothing is left, in which
    /// case the caller frees the page.
    pub fn try_end<G: GrantTable>(&mut self, grants: &G) -> bool {
        self.grefs.retain(|&g| match grants.end_access(g) {
            Ok(()) | Err(GrantError::BadRef) => false,
            Err(_) => true,
        });
        self.grefs.is_empty()
    }
}

/// A request in flight, as the guest remembers it (the ring slot itself is
/// the backend's to read; we never read our requests back).
pub(super) struct Shadow {
    /// The operation the response must carry (for an indirect request: the
    /// inner read or write).
    pub op: u8,
    /// Data pages used, in order.
    pub pages: Vec<u16>,
    /// The indirect-segment page used, if any.
    pub indirect: Option<u16>,
    /// The response's status, once it arrived.
    pub status: Option<i16>,
    /// The caller gave up on it (its future was dropped): release it as
    /// soon as the response arrives.
    pub orphan: bool,
}

/// Transport parameters of a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Pages of the shared ring (`2^ring-page-order`).
    #[doc(alias = "ring-page-order")]
    pub ring_pages: u32,
    /// Request slots in the ring.
    pub ring_slots: u32,
    /// Largest number of data pages (segments) in one request: 11 for
    /// direct requests, more with indirect requests.
    #[doc(alias = "feature-max-indirect-segments")]
    pub max_segments: u32,
    /// Whether requests with more than 11 segments go out as indirect
    /// requests.
    pub indirect: bool,
    /// Data pages the driver owns for this connection (its bounce buffer).
    pub data_pages: u32,
    /// The event channel.
    #[doc(alias = "event-channel")]
    pub port: EventPort,
}

/// Why the driver could not set up a connection's resources: what ran out.
/// Whatever was allocated before is given back. Reported to users in
/// [`SetupError::Conn`](super::SetupError::Conn) (inside
/// [`DisconnectReason::Setup`](crate::block_device::DisconnectReason::Setup)),
/// from [`Blkfront::open`](super::Blkfront::open) and
/// [`Blkfront::reconnect`](super::Blkfront::reconnect).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// No memory for the shared ring.
    RingPages {
        /// Pages asked for (`2^ring-page-order`).
        pages: usize,
        /// The allocator's error.
        source: AllocError,
    },
    /// A ring page could not be granted to the backend (no grant left).
    RingGrant(GrantError),
    /// The ring could not be laid out in its pages.
    Ring(RingError),
    /// No event channel could be allocated for the backend.
    EventChannel(EventError),
    /// No memory for the data pages (the bounce buffer).
    DataPages(AllocError),
    /// A data page could not be granted to the backend.
    DataGrant(GrantError),
    /// No memory for the indirect-segment pages.
    IndirectPages(AllocError),
    /// An indirect-segment page could not be granted to the backend.
    IndirectGrant(GrantError),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::RingPages { pages, source } => {
                write!(f, "allocating a {pages}-page ring: {source}")
            }
            ConnError::RingGrant(e) => write!(f, "granting the ring: {e}"),
            ConnError::Ring(e) => write!(f, "ring: {e}"),
            ConnError::EventChannel(e) => write!(f, "allocating an event channel: {e}"),
            ConnError::DataPages(e) => write!(f, "allocating data pages: {e}"),
            ConnError::DataGrant(e) => write!(f, "granting data pages: {e}"),
            ConnError::IndirectPages(e) => write!(f, "allocating indirect pages: {e}"),
            ConnError::IndirectGrant(e) => write!(f, "granting indirect pages: {e}"),
        }
    }
}

impl core::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ConnError::RingPages { source: e, .. }
            | ConnError::DataPages(e)
            | ConnError::IndirectPages(e) => Some(e),
            ConnError::RingGrant(e) | ConnError::DataGrant(e) | ConnError::IndirectGrant(e) => {
                Some(e)
            }
            ConnError::Ring(e) => Some(e),
            ConnError::EventChannel(e) => Some(e),
        }
    }
}

/// How a backend broke the blkif protocol in its responses, found when
/// taking them off the ring; reported in
/// [`DisconnectReason::ProtocolViolation`](crate::block_device::DisconnectReason::ProtocolViolation).
/// The driver drops the connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The backend's response producer index is impossible (it claims more
    /// responses than requests outstanding): a runaway producer.
    Ring(RingError),
    /// A response whose id is not a slot of the ring.
    UnknownId {
        /// The id, as the backend wrote it.
        id: u64,
    },
    /// A response for a slot with no request in flight (never sent, or
    /// already answered).
    NotInFlight {
        /// The id.
        id: u64,
    },
    /// A response carrying another operation than its request's.
    WrongOperation {
        /// The request's id.
        id: u64,
        /// The request's operation (`BLKIF_OP_*`).
        expected: u8,
        /// The response's.
        got: u8,
    },
    /// A response status blkif does not define (not `BLKIF_RSP_OKAY`,
    /// `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`).
    ImpossibleStatus {
        /// The request's id.
        id: u64,
        /// The status.
        status: i16,
    },
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Ring(e) => e.fmt(f),
            ResponseError::UnknownId { id } => write!(f, "response with unknown id {id:#x}"),
            ResponseError::NotInFlight { id } => {
                write!(f, "response for id {id}, which is not in flight")
            }
            ResponseError::WrongOperation { id, expected, got } => write!(
                f,
                "response to request {id} (operation {expected}) carries operation {got}"
            ),
            ResponseError::ImpossibleStatus { id, status } => {
                write!(f, "response to request {id} has impossible status {status}")
            }
        }
    }
}

impl core::error::Error for ResponseError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ResponseError::Ring(e) => Some(e),
            _ => None,
        }
    }
}

/// One connection's resources and requests in flight.
pub(super) struct Conn<H: Hypervisor> {
    pub ring: Option<FrontRing<Page<H>, BlkifRequest, BlkifResponse>>,
    ring_block: Option<Page<H>>,
    pub ring_grefs: Vec<GrantRef>,
    pub port: Option<EventPort>,
    data: Vec<Granted<H>>,
    free_data: Vec<u16>,
    indirect: Vec<Granted<H>>,
    free_indirect: Vec<u16>,
    shadow: Vec<Option<Shadow>>,
    free_ids: Vec<u32>,
    max_segments: usize,
    order: u32,
    handle: u16,
}

impl<H: Hypervisor> Conn<H> {
    /// Allocate and grant everything a connection to `backend` needs: a
    /// ring of `2^order` pages, an unbound event channel, `data_pages` data
    /// pages and, if `max_segments` exceeds 11, pages for indirect segment
    /// lists. On failure everything allocated so far is given back (pages
    /// whose grants could not be ended go to `held`).
    ///
    /// Errors: a [`ConnError`] naming what ran out.
    pub fn new<C: hal::Clock, A: AlarmHw>(
        p: &XenPlatform<H, C, A>,
        backend: DomId,
        order: u32,
        max_segments: usize,
        data_pages: usize,
        handle: u16,
        held: &mut Vec<Held<H>>,
    ) -> Result<Self, ConnError> {
        let mut c = Conn {
            ring: None,
            ring_block: None,
            ring_grefs: Vec::new(),
            port: None,
            data: Vec::new(),
            free_data: Vec::new(),
            indirect: Vec::new(),
            free_indirect: Vec::new(),
            shadow: Vec::new(),
            free_ids: Vec::new(),
            max_segments,
            order,
            handle,
        };
        match c.build(p, backend, data_pages) {
            Ok(()) => Ok(c),
            Err(e) => {
                held.extend(c.dismantle(p));
                Err(e)
            }
        }
    }

    fn build<C: hal::Clock, A: AlarmHw>(
        &mut self,
        p: &XenPlatform<H, C, A>,
        backend: DomId,
        data_pages: usize,
    ) -> Result<(), ConnError> {
        let pages = p.pages();
        let grants = p.grants();
        let ring_pages = 1usize << self.order;
        let block = pages
            .alloc(ring_pages)
            .map_err(|source| ConnError::RingPages {
                pages: ring_pages,
                source,
            })?;
        self.ring_block = Some(block.clone());
        for i in 0..ring_pages {
            let gref = grants
                .grant_access(backend, block.gfn(i), Access::ReadWrite)
                .map_err(ConnError::RingGrant)?;
            self.ring_grefs.push(gref);
        }
        let ring = FrontRing::init(block).map_err(ConnError::Ring)?;
        let slots = ring.size() as usize;
        debug_assert_eq!(
            slots as u32,
            ring_size_for_order::<BlkifRequest, BlkifResponse>(self.order)
        );
        self.ring = Some(ring);
        self.shadow = (0..slots).map(|_| None).collect();
        self.free_ids = (0..slots as u32).rev().collect();
        self.port = Some(
            p.events()
                .alloc_unbound(backend)
                .map_err(ConnError::EventChannel)?,
        );
        for _ in 0..data_pages {
            let page = pages.alloc(1).map_err(ConnError::DataPages)?;
            let gref = match grants.grant_access(backend, page.gfn(0), Access::ReadWrite) {
                Ok(g) => g,
                Err(e) => {
                    pages.free(page);
                    return Err(ConnError::DataGrant(e));
                }
            };
            self.data.push(Granted { page, gref });
        }
        self.free_data = (0..self.data.len() as u16).rev().collect();
        if self.max_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            // An indirect request uses at least 12 data pages, so no more
            // than this many can be in flight at once.
            let n = (data_pages / (BLKIF_MAX_SEGMENTS_PER_REQUEST + 1)).clamp(1, slots);
            for _ in 0..n {
                let page = pages.alloc(1).map_err(ConnError::IndirectPages)?;
                let gref = match grants.grant_access(backend, page.gfn(0), Access::ReadOnly) {
                    Ok(g) => g,
                    Err(e) => {
                        pages.free(page);
                        return Err(ConnError::IndirectGrant(e));
                    }
                };
                self.indirect.push(Granted { page, gref });
            }
            self.free_indirect = (0..self.indirect.len() as u16).rev().collect();
        }
        Ok(())
    }

    /// Close the channel and end every grant. Pages whose grants ended are
    /// freed; the others (the backend still maps or copies them) are
    /// returned, to be retried later. Requests in flight are forgotten.
    pub fn dismantle<C: hal::Clock, A: AlarmHw>(self, p: &XenPlatform<H, C, A>) -> Vec<Held<H>> {
        if let Some(port) = self.port {
            let _ = p.events().close(port);
        }
        let grants = p.grants();
        let mut held = Vec::new();
        drop(self.ring);
        if let Some(block) = self.ring_block {
            held.push(Held {
                page: block,
                grefs: self.ring_grefs,
            });
        }
        for g in self.data.into_iter().chain(self.indirect) {
            held.push(Held {
                page: g.page,
                grefs: vec![g.gref],
            });
        }
        let mut left = Vec::new();
        for mut h in held {
            if h.try_end(grants) {
                p.pages().free(h.page);
            } else {
                left.push(h);
            }
        }
        left
    }

    /// Transport parameters.
    pub fn transport(&self) -> Transport {
        Transport {
            ring_pages: 1 << self.order,
            ring_slots: self.shadow.len() as u32,
            max_segments: self.max_segments as u32,
            indirect: self.max_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST,
            data_pages: self.data.len() as u32,
            port: self.port.unwrap_or(EventPort(0)),
        }
    }

    /// How many data pages the next read or write request could carry now
    /// (0: no slot, page or indirect page free).
    pub fn room_for_pages(&self) -> usize {
        if self.free_ids.is_empty() {
            return 0;
        }
        let direct = BLKIF_MAX_SEGMENTS_PER_REQUEST.min(self.free_data.len());
        if self.max_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST && !self.free_indirect.is_empty() {
            self.max_segments.min(self.free_data.len()).max(direct)
        } else {
            direct
        }
    }

    /// Whether a request without data could be staged now.
    pub fn room_for_request(&self) -> bool {
        !self.free_ids.is_empty()
    }

    fn take_id(&mut self) -> Option<u32> {
        self.free_ids.pop()
    }

    fn stage(&mut self, id: u32, req: &BlkifRequest, shadow: Shadow) {
        let ring = self.ring.as_mut().expect("a live connection has a ring");
        // Cannot be full: ids are no more than slots.
        let staged = ring.stage_request(req);
        debug_assert!(staged.is_ok());
        self.shadow[id as usize] = Some(shadow);
    }

    /// Stage a read or write of `len` bytes (a multiple of 512, at most
    /// [`room_for_pages`](Self::room_for_pages) pages) at 512-byte sector
    /// `sector`. For a write, `fill(page, index, bytes)` copies the data of
    /// the request's `index`-th page into `page`. Returns the request id.
    pub fn stage_rw(
        &mut self,
        op: u8,
        sector: u64,
        len: usize,
        mut fill: impl FnMut(&Page<H>, usize, usize),
    ) -> Option<u32> {
        let npages = len.div_ceil(PAGE_SIZE);
        if npages == 0 || npages > self.room_for_pages() {
            return None;
        }
        let indirect = npages > BLKIF_MAX_SEGMENTS_PER_REQUEST;
        let id = self.take_id()?;
        let mut pages = Vec::with_capacity(npages);
        let mut segs = Vec::with_capacity(npages);
        for i in 0..npages {
            let p = self.free_data.pop().expect("room_for_pages checked");
            let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
            if op == blkif_op::WRITE {
                fill(&self.data[p as usize].page, i, bytes);
            }
            segs.push(BlkifRequestSegment {
                gref: self.data[p as usize].gref.0,
                first_sect: 0,
                last_sect: (bytes / 512 - 1) as u8,
                _pad0: 0,
            });
            pages.push(p);
        }
        let mut req = BlkifRequest::new_zeroed();
        let mut indirect_page = None;
        if indirect {
            let ip = self.free_indirect.pop().expect("room_for_pages checked");
            let page = &self.indirect[ip as usize];
            debug_assert!(npages <= BLKIF_SEGS_PER_INDIRECT_FRAME);
            for (i, s) in segs.iter().enumerate() {
                page.page.write(
                    i * core::mem::size_of::<BlkifRequestSegment>(),
                    s.as_bytes(),
                );
            }
            let mut ind = BlkifRequestIndirect {
                operation: blkif_op::INDIRECT,
                indirect_op: op,
                nr_segments: npages as u16,
                id: u64::from(id),
                sector_number: sector,
                handle: self.handle,
                ..Default::default()
            };
            ind.indirect_grefs[0] = page.gref.0;
            let n = core::mem::size_of::<BlkifRequestIndirect>();
            req.as_mut_bytes()[..n].copy_from_slice(ind.as_bytes());
            indirect_page = Some(ip);
        } else {
            req.operation = op;
            req.nr_segments = npages as u8;
            req.handle = self.handle;
            req.id = u64::from(id);
            req.sector_number = sector;
            req.seg[..npages].copy_from_slice(&segs);
        }
        self.stage(
            id,
            &req,
            Shadow {
                op,
                pages,
                indirect: indirect_page,
                status: None,
                orphan: false,
            },
        );
        Some(id)
    }

    /// Stage a request without data (`BLKIF_OP_FLUSH_DISKCACHE` or an empty
    /// `BLKIF_OP_WRITE_BARRIER`).
    pub fn stage_empty(&mut self, op: u8) -> Option<u32> {
        let id = self.take_id()?;
        let req = BlkifRequest {
            operation: op,
            handle: self.handle,
            id: u64::from(id),
            ..Default::default()
        };
        self.stage(id, &req, Shadow::bare(op));
        Some(id)
    }

    /// Stage a discard of `count` 512-byte sectors at `sector`.
    pub fn stage_discard(&mut self, sector: u64, count: u64) -> Option<u32> {
        let id = self.take_id()?;
        let d = BlkifRequestDiscard {
            operation: blkif_op::DISCARD,
            flag: 0,
            handle: self.handle,
            id: u64::from(id),
            sector_number: sector,
            nr_sectors: count,
            ..Default::default()
        };
        let mut req = BlkifRequest::new_zeroed();
        let n = core::mem::size_of::<BlkifRequestDiscard>();
        req.as_mut_bytes()[..n].copy_from_slice(d.as_bytes());
        self.stage(id, &req, Shadow::bare(blkif_op::DISCARD));
        Some(id)
    }

    /// Publish staged requests and notify the backend if it asked to be.
    pub fn push<E: EventChannel>(&mut self, events: &E) {
        let ring = self.ring.as_mut().expect("a live connection has a ring");
        if ring.push_requests_and_check_notify()
            && let Some(port) = self.port
        {
            let _ = events.notify(port);
        }
    }

    /// Take every published response, check it, and record its status.
    /// Returns how many completed.
    ///
    /// Errors: the backend's protocol violation, a [`ResponseError`] (a
    /// runaway producer, an id that is not in flight, a response to another
    /// operation, an impossible status). The connection must be dropped.
    pub fn take_responses(&mut self) -> Result<usize, ResponseError> {
        let mut done = 0;
        loop {
            let ring = self.ring.as_mut().expect("a live connection has a ring");
            let rsp = match ring.take_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(done),
                Err(e) => return Err(ResponseError::Ring(e)),
            };
            let id = rsp.id;
            let Some(slot) = usize::try_from(id)
                .ok()
                .and_then(|i| self.shadow.get_mut(i))
            else {
                return Err(ResponseError::UnknownId { id });
            };
            let Some(sh) = slot.as_mut().filter(|s| s.status.is_none()) else {
                return Err(ResponseError::NotInFlight { id });
            };
            let op_ok = rsp.operation == sh.op
                || (sh.indirect.is_some() && rsp.operation == blkif_op::INDIRECT);
            if !op_ok {
                return Err(ResponseError::WrongOperation {
                    id,
                    expected: sh.op,
                    got: rsp.operation,
                });
            }
            let status = rsp.status;
            if !matches!(
                status,
                blkif_rsp::OKAY | blkif_rsp::ERROR | blkif_rsp::EOPNOTSUPP
            ) {
                return Err(ResponseError::ImpossibleStatus { id, status });
            }
            sh.status = Some(status);
            if sh.orphan {
                self.release(id as u32);
            }
            done += 1;
        }
    }

    /// Whether responses wait to be taken; else ask the backend to notify
    /// at the next one. `Err` if the backend's producer index is
    /// impossible (taking responses will report it).
    pub fn final_check(&mut self) -> Result<bool, ()> {
        let ring = self.ring.as_mut().expect("a live connection has a ring");
        ring.final_check_for_responses().map_err(drop)
    }

    /// The status of request `id`, if its response arrived.
    pub fn status(&self, id: u32) -> Option<i16> {
        self.shadow
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.status)
    }

    /// The data pages of request `id`, in order.
    pub fn pages_of(&self, id: u32) -> impl Iterator<Item = &Page<H>> + '_ {
        self.shadow
            .get(id as usize)
            .and_then(|s| s.as_ref())
            .into_iter()
            .flat_map(|s| s.pages.iter())
            .map(|&p| &self.data[p as usize].page)
    }

    /// Free request `id`'s slot and pages.
    pub fn release(&mut self, id: u32) {
        if let Some(sh) = self.shadow.get_mut(id as usize).and_then(Option::take) {
            self.free_data.extend(sh.pages);
            if let Some(ip) = sh.indirect {
                self.free_indirect.push(ip);
            }
            self.free_ids.push(id);
        }
    }

    /// The caller of request `id` gave up: release it now if answered,
    /// else when its response arrives.
    pub fn abandon(&mut self, id: u32) {
        match self.shadow.get_mut(id as usize) {
            Some(Some(sh)) if sh.status.is_none() => sh.orphan = true,
            Some(Some(_)) => self.release(id),
            _ => {}
        }
    }
}

impl Shadow {
    fn bare(op: u8) -> Self {
        Shadow {
            op,
            pages: Vec::new(),
            indirect: None,
            status: None,
            orphan: false,
        }
    }
}
