//! The data path of one connection: the two rings, the granted buffer
//! pages, and every check of what the backend writes.

use super::{MAX_FRAME, MAX_RX_FRAME, MAX_RX_SLOTS, RingKind, Violation, gso};
use alloc::vec::Vec;
use hal::mem::{PAGE_SIZE, PageAlloc, Pages};
use hal::{Access, Clock, DomId, EventChannel, EventPort, FrontRing, GrantRef, GrantTable};
use xen_pv::Hypervisor;
use xen_pv::abi::io::{
    NetifExtraInfo, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, netif_extra,
    netif_rsp, netrxf, nettxf,
};
use xen_pv::pages::{FrameBlock, FramePool};
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;
use zerocopy::{FromBytes, IntoBytes};

/// The page-block type of a platform with hypervisor `H`.
pub(crate) type Block<H> = FrameBlock<<H as Hypervisor>::Mem>;

/// Pages allocated in blocks of up to this many.
const CHUNK: usize = 16;

/// Grants and pages to give back, and the retry of grants the backend still
/// holds. A block is freed once every grant of its pages has ended.
pub(crate) struct Drain<B> {
    grants: Vec<GrantRef>,
    blocks: Vec<B>,
}

impl<B> Default for Drain<B> {
    fn default() -> Self {
        Drain {
            grants: Vec::new(),
            blocks: Vec::new(),
        }
    }
}

impl<B: Pages + Clone> Drain<B> {
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.blocks.is_empty()
    }

    /// Grants still to end.
    pub fn grants_left(&self) -> usize {
        self.grants.len()
    }

    /// End what can be ended and free what can be freed. Returns whether
    /// everything is given back.
    pub fn retry<H, C, A>(&mut self, p: &XenPlatform<H, C, A>) -> bool
    where
        H: Hypervisor,
        C: Clock,
        A: AlarmHw,
        FramePool<H>: PageAlloc<Block = B>,
    {
        self.grants.retain(|&g| match p.grants().end_access(g) {
            Ok(()) => false,
            Err(hal::GrantError::InUse) => true,
            Err(e) => {
                // Not ours any more (a bug): nothing to give back.
                log::warn!("netfront: ending {g}: {e}");
                false
            }
        });
        if self.grants.is_empty() {
            for b in self.blocks.drain(..) {
                p.pages().free(b);
            }
            true
        } else {
            false
        }
    }
}

/// Pages granted to the backend, addressed by buffer id.
pub(crate) struct Buffers<B> {
    blocks: Vec<B>,
    grefs: Vec<GrantRef>,
}

impl<B: Pages + Clone> Buffers<B> {
    /// Allocate and grant `n` pages to `peer`. On failure, what was done is
    /// in `drain`.
    fn new<H, C, A>(
        p: &XenPlatform<H, C, A>,
        peer: DomId,
        n: usize,
        access: Access,
        drain: &mut Drain<B>,
    ) -> Result<Self, super::NetError>
    where
        H: Hypervisor,
        C: Clock,
        A: AlarmHw,
        FramePool<H>: PageAlloc<Block = B>,
    {
        let mut bufs = Buffers {
            blocks: Vec::with_capacity(n.div_ceil(CHUNK)),
            grefs: Vec::with_capacity(n),
        };
        let result = (|| {
            while bufs.grefs.len() < n {
                let want = (n - bufs.grefs.len()).min(CHUNK);
                let block = p.pages().alloc(want)?;
                bufs.blocks.push(block.clone());
                drain.blocks.push(block.clone());
                for i in 0..want {
                    let g = p.grants().grant_access(peer, block.gfn(i), access)?;
                    bufs.grefs.push(g);
                    drain.grants.push(g);
                }
            }
            Ok(())
        })();
        result.map(|()| bufs)
    }

    fn locate(&self, id: usize) -> (&B, usize) {
        (&self.blocks[id / CHUNK], (id % CHUNK) * PAGE_SIZE)
    }

    fn write(&self, id: usize, offset: usize, data: &[u8]) {
        let (b, base) = self.locate(id);
        b.write(base + offset, data);
    }

    fn read(&self, id: usize, offset: usize, out: &mut [u8]) {
        let (b, base) = self.locate(id);
        b.read(base + offset, out);
    }
}

/// What [`Conn::teardown`] hands over: every grant and page to give back.
pub(crate) fn hand_over<B: Pages + Clone>(bufs: Buffers<B>, drain: &mut Drain<B>) {
    drain.grants.extend(bufs.grefs);
    drain.blocks.extend(bufs.blocks);
}

/// The transmit half.
pub(crate) struct TxSide<B> {
    ring: FrontRing<B, NetifTxRequest, NetifTxResponse>,
    bufs: Buffers<B>,
    free: Vec<u16>,
    busy: Vec<bool>,
    /// The backend takes packets spanning several slots.
    pub sg: bool,
    /// The backend takes large TCP segments (`feature-gso-tcpv4`) and we
    /// send them (only with `sg`: the caller checks).
    pub gso: bool,
    /// Extra-info slots sent and not yet answered (with `NETIF_RSP_NULL`).
    nulls_due: usize,
    pub port: EventPort,
    /// Responses with an error status, for the statistics.
    pub errors: u64,
}

/// The receive half.
pub(crate) struct RxSide<B> {
    ring: FrontRing<B, NetifRxRequest, NetifRxResponse>,
    bufs: Buffers<B>,
    /// Buffer posted in each ring slot (`NONE` if none).
    slot_buf: Vec<u16>,
    /// Buffers not posted.
    idle: Vec<u16>,
    port: EventPort,
    // Packet being assembled.
    len: usize,
    slots: usize,
    more: bool,
    extra: bool,
    bad: bool,
    /// The backend left the packet's TCP/UDP checksum for us to complete
    /// (`NETRXF_csum_blank`).
    csum_blank: bool,
    /// The packet came with a GSO extra-info slot (a large TCP segment).
    large: bool,
    /// Packets dropped: marked as errors by the backend, a checksum left
    /// blank in a packet that is not TCP or UDP over IPv4, or a GSO slot
    /// with a zero size or an unknown type (as Linux's netfront drops them).
    pub dropped: u64,
    /// Packets that came as large TCP segments, for the statistics.
    pub large_packets: u64,
}

const NONE: u16 = u16::MAX;

/// A live connection.
pub(crate) struct Conn<B> {
    pub tx: TxSide<B>,
    pub rx: RxSide<B>,
    pub port: EventPort,
    ring_grants: [GrantRef; 2],
    ring_blocks: [B; 2],
}

/// What the xenbus code writes to xenstore for a new connection.
pub(crate) struct Offer {
    pub tx_ring_ref: GrantRef,
    pub rx_ring_ref: GrantRef,
    pub port: EventPort,
}

impl<B: Pages + Clone> Conn<B> {
    /// Allocate and grant the rings and buffers, and allocate the channel.
    /// On failure, everything already done is handed to `drain` (and the
    /// channel closed).
    pub fn new<H, C, A>(
        p: &XenPlatform<H, C, A>,
        peer: DomId,
        tx_buffers: usize,
        rx_buffers: usize,
        backend_sg: bool,
        gso: bool,
        drain: &mut Drain<B>,
    ) -> Result<(Self, Offer), super::NetError>
    where
        H: Hypervisor,
        C: Clock,
        A: AlarmHw,
        FramePool<H>: PageAlloc<Block = B>,
    {
        let ring_page = |drain: &mut Drain<B>| -> Result<(B, GrantRef), super::NetError> {
            let b = p.pages().alloc(1)?;
            drain.blocks.push(b.clone());
            let g = p.grants().grant_access(peer, b.gfn(0), Access::ReadWrite)?;
            drain.grants.push(g);
            Ok((b, g))
        };
        // Everything goes into `drain` as it is made; on success we take it
        // back out (the connection owns it until teardown).
        let mark = (drain.grants.len(), drain.blocks.len());
        let made = (|| {
            let (txb, txg) = ring_page(drain)?;
            let (rxb, rxg) = ring_page(drain)?;
            let tx_bufs = Buffers::new(p, peer, tx_buffers, Access::ReadOnly, drain)?;
            let rx_bufs = Buffers::new(p, peer, rx_buffers, Access::ReadWrite, drain)?;
            // One page always holds these rings (256 slots each).
            let bad_size = |_| super::NetError::Alloc(hal::AllocError::BadSize);
            let tx_ring = FrontRing::init(txb.clone()).map_err(bad_size)?;
            let rx_ring = FrontRing::init(rxb.clone()).map_err(bad_size)?;
            let port = p.events().alloc_unbound(peer)?;
            Ok::<_, super::NetError>((txb, txg, rxb, rxg, tx_bufs, rx_bufs, tx_ring, rx_ring, port))
        })();
        let (txb, txg, rxb, rxg, tx_bufs, rx_bufs, tx_ring, rx_ring, port) = made?;
        drain.grants.truncate(mark.0);
        drain.blocks.truncate(mark.1);
        let rx_ring: FrontRing<B, NetifRxRequest, NetifRxResponse> = rx_ring;
        let size = rx_ring.size() as usize;
        let n_rx = rx_bufs.grefs.len().min(size);
        let n_tx = tx_bufs.grefs.len();
        let conn = Conn {
            tx: TxSide {
                ring: tx_ring,
                bufs: tx_bufs,
                free: (0..n_tx as u16).rev().collect(),
                busy: alloc::vec![false; n_tx],
                sg: backend_sg,
                gso,
                nulls_due: 0,
                port,
                errors: 0,
            },
            rx: RxSide {
                ring: rx_ring,
                bufs: rx_bufs,
                slot_buf: alloc::vec![NONE; size],
                idle: (0..n_rx as u16).rev().collect(),
                port,
                len: 0,
                slots: 0,
                more: false,
                extra: false,
                bad: false,
                csum_blank: false,
                large: false,
                dropped: 0,
                large_packets: 0,
            },
            port,
            ring_grants: [txg, rxg],
            ring_blocks: [txb, rxb],
        };
        Ok((
            conn,
            Offer {
                tx_ring_ref: txg,
                rx_ring_ref: rxg,
                port,
            },
        ))
    }

    /// Close the channel and hand every grant and page to `drain`.
    pub fn teardown<H, C, A>(self, p: &XenPlatform<H, C, A>, drain: &mut Drain<B>)
    where
        H: Hypervisor,
        C: Clock,
        A: AlarmHw,
        FramePool<H>: PageAlloc<Block = B>,
    {
        if let Err(e) = p.events().close(self.port) {
            log::warn!("netfront: closing {}: {e}", self.port);
        }
        drain.grants.extend(self.ring_grants);
        drain.blocks.extend(self.ring_blocks);
        hand_over(self.tx.bufs, drain);
        hand_over(self.rx.bufs, drain);
    }
}

/// A transmit-ring slot holding a GSO extra-info for TCPv4 segments of
/// `size` bytes.
fn gso_slot(size: u16) -> NetifTxRequest {
    let mut u = [0u8; 6];
    u[..2].copy_from_slice(&size.to_le_bytes());
    u[2] = netif_extra::GSO_TYPE_TCPV4;
    let info = NetifExtraInfo {
        type_: netif_extra::TYPE_GSO,
        flags: 0,
        u,
    };
    let mut slot = [0u8; core::mem::size_of::<NetifTxRequest>()];
    slot[..core::mem::size_of::<NetifExtraInfo>()].copy_from_slice(info.as_bytes());
    // Any 12 bytes are a request.
    NetifTxRequest::read_from_bytes(&slot).unwrap_or_default()
}

fn notify<H: Hypervisor, C: Clock, A: AlarmHw>(p: &XenPlatform<H, C, A>, port: EventPort) {
    if let Err(e) = p.events().notify(port) {
        log::warn!("netfront: notify {port}: {e}");
    }
}

impl<B: Pages + Clone> TxSide<B> {
    /// Take the backend's transmit responses, freeing their buffers; ask to
    /// be notified of the next if buffers run short.
    pub fn reap(&mut self, reserve: usize) -> Result<(), Violation> {
        let over = |e| Violation::Overrun(RingKind::Tx, e);
        loop {
            while let Some(rsp) = self.ring.take_response().map_err(over)? {
                if rsp.status == netif_rsp::NULL && self.nulls_due > 0 {
                    // The answer to an extra-info slot; its id means nothing.
                    self.nulls_due -= 1;
                    continue;
                }
                let id = rsp.id;
                match self.busy.get_mut(usize::from(id)) {
                    Some(b) if *b => *b = false,
                    _ => return Err(Violation::UnknownTxId(id)),
                }
                match rsp.status {
                    netif_rsp::OKAY => {}
                    netif_rsp::ERROR | netif_rsp::DROPPED => self.errors += 1,
                    status => return Err(Violation::BadTxStatus { id, status }),
                }
                self.free.push(id);
            }
            // Completions matter only when buffers are short: then ask for
            // a notification at the next one.
            if self.free.len() >= reserve || self.ring.outstanding() == 0 {
                return Ok(());
            }
            if !self.ring.final_check_for_responses().map_err(over)? {
                return Ok(());
            }
        }
    }

    /// Whether a packet of `len` bytes can be queued now (with a GSO slot
    /// if `large`).
    pub fn room_for(&self, len: usize, large: bool) -> bool {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let slots = pages + usize::from(large);
        self.free.len() >= pages && self.ring.free_requests() as usize >= slots
    }

    /// Most bytes one packet may have.
    pub fn max_len(&self) -> usize {
        if self.sg { MAX_FRAME } else { PAGE_SIZE }
    }

    /// Copy `data` into buffers and queue it, with a GSO extra-info slot
    /// of segment size `gso` if given; returns `false` (nothing queued) if
    /// it is too long or there is no room.
    pub fn send<H: Hypervisor, C: Clock, A: AlarmHw>(
        &mut self,
        p: &XenPlatform<H, C, A>,
        data: &[u8],
        gso: Option<u16>,
    ) -> bool {
        if data.is_empty()
            || data.len() > self.max_len()
            || (gso.is_some() && !self.gso)
            || !self.room_for(data.len(), gso.is_some())
        {
            return false;
        }
        let mut chunks = data.chunks(PAGE_SIZE).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let Some(id) = self.free.pop() else {
                // room_for checked; unreachable in practice.
                return false;
            };
            self.busy[usize::from(id)] = true;
            self.bufs.write(usize::from(id), 0, chunk);
            let req = NetifTxRequest {
                gref: self.bufs.grefs[usize::from(id)].0,
                offset: 0,
                flags: if chunks.peek().is_some() {
                    nettxf::MORE_DATA
                } else {
                    0
                } | if first && gso.is_some() {
                    nettxf::EXTRA_INFO
                } else {
                    0
                },
                id,
                // The first slot carries the whole packet's size.
                size: if first { data.len() } else { chunk.len() } as u16,
            };
            if self.ring.stage_request(&req).is_err() {
                return false;
            }
            if let (true, Some(size)) = (first, gso) {
                // The extra-info slot follows the first.
                if self.ring.stage_request(&gso_slot(size)).is_err() {
                    return false;
                }
                self.nulls_due += 1;
            }
            first = false;
        }
        if self.ring.push_requests_and_check_notify() {
            notify(p, self.port);
        }
        true
    }
}

impl<B: Pages + Clone> RxSide<B> {
    /// Post every idle buffer; notify the backend if it asked.
    pub fn refill<H: Hypervisor, C: Clock, A: AlarmHw>(&mut self, p: &XenPlatform<H, C, A>) {
        let mut posted = false;
        while !self.ring.is_full() {
            let Some(buf) = self.idle.pop() else { break };
            let idx = self.ring.req_prod_pvt();
            let slot = (idx.0 & (self.ring.size() - 1)) as u16;
            let req = NetifRxRequest {
                id: slot,
                pad: 0,
                gref: self.bufs.grefs[usize::from(buf)].0,
            };
            if self.ring.stage_request(&req).is_err() {
                self.idle.push(buf);
                break;
            }
            self.slot_buf[usize::from(slot)] = buf;
            posted = true;
        }
        if posted && self.ring.push_requests_and_check_notify() {
            notify(p, self.port);
        }
    }

    /// Whether responses wait in the ring (or it is broken: the next
    /// [`next_packet`](Self::next_packet) will say how).
    pub fn has_responses(&self) -> bool {
        !matches!(self.ring.unconsumed_responses(), Ok(0))
    }

    /// Assemble the next complete packet into `pkt`; returns its length, or
    /// `None` when the ring holds no complete packet (a partial one stays
    /// assembled for later). Buffers are reposted as they are emptied.
    pub fn next_packet<H: Hypervisor, C: Clock, A: AlarmHw>(
        &mut self,
        p: &XenPlatform<H, C, A>,
        pkt: &mut [u8],
    ) -> Result<Option<usize>, Violation> {
        let over = |e| Violation::Overrun(RingKind::Rx, e);
        let mask = self.ring.size() - 1;
        loop {
            let idx = self.ring.rsp_cons();
            let Some(rsp) = self.ring.take_response().map_err(over)? else {
                self.refill(p);
                if self.ring.final_check_for_responses().map_err(over)? {
                    continue;
                }
                return Ok(None);
            };
            let slot = (idx.0 & mask) as u16;
            let buf = core::mem::replace(&mut self.slot_buf[usize::from(slot)], NONE);
            if buf == NONE {
                // A response can only answer a request we posted, which the
                // ring's producer check guarantees; keep the check anyway.
                return Err(Violation::UnknownRxId { slot, id: rsp.id });
            }
            self.idle.push(buf);
            self.slots += 1;
            if self.slots > MAX_RX_SLOTS {
                return Err(Violation::RxTooManySlots);
            }
            if self.extra {
                // This slot holds extra info, overlaying the response.
                let info = NetifExtraInfo::read_from_bytes(rsp.as_bytes())
                    .map_err(|_| Violation::BadExtraInfo(0))?;
                if info.type_ == netif_extra::TYPE_NONE || info.type_ >= netif_extra::TYPE_MAX {
                    return Err(Violation::BadExtraInfo(info.type_));
                }
                if info.type_ == netif_extra::TYPE_GSO {
                    // The packet is good; its GSO description must be too.
                    let size = u16::from_le_bytes([info.u[0], info.u[1]]);
                    let known = matches!(
                        info.u[2],
                        netif_extra::GSO_TYPE_TCPV4 | netif_extra::GSO_TYPE_TCPV6
                    );
                    if size == 0 || !known {
                        self.bad = true;
                    }
                    self.large = true;
                }
                self.extra = info.flags & netif_extra::FLAG_MORE != 0;
            } else {
                if rsp.id != slot {
                    return Err(Violation::UnknownRxId { slot, id: rsp.id });
                }
                if rsp.status < 0 {
                    match rsp.status {
                        netif_rsp::ERROR | netif_rsp::DROPPED => self.bad = true,
                        s => return Err(Violation::BadRxStatus(s)),
                    }
                } else {
                    let (off, n) = (usize::from(rsp.offset), rsp.status as usize);
                    if off + n > PAGE_SIZE {
                        return Err(Violation::RxOutsidePage {
                            offset: rsp.offset,
                            len: rsp.status as u16,
                        });
                    }
                    if self.len + n > MAX_RX_FRAME || self.len + n > pkt.len() {
                        return Err(Violation::RxTooLong(self.len + n));
                    }
                    self.bufs
                        .read(usize::from(buf), off, &mut pkt[self.len..self.len + n]);
                    self.len += n;
                }
                if rsp.flags & netrxf::EXTRA_INFO != 0 {
                    if self.slots != 1 {
                        return Err(Violation::BadExtraInfo(0));
                    }
                    self.extra = true;
                }
                if self.slots == 1 {
                    self.csum_blank = rsp.flags & netrxf::CSUM_BLANK != 0;
                }
                self.more = rsp.flags & netrxf::MORE_DATA != 0;
            }
            if !self.more && !self.extra {
                let (len, bad) = (self.len, self.bad);
                let (csum_blank, large) = (self.csum_blank, self.large);
                self.len = 0;
                self.slots = 0;
                self.bad = false;
                self.csum_blank = false;
                self.large = false;
                // smoltcp checks every checksum: complete a blank one (its
                // field holds the pseudo-header's sum, or anything).
                if bad || len == 0 || (csum_blank && !gso::complete_checksum(&mut pkt[..len])) {
                    self.dropped += 1;
                    continue;
                }
                self.large_packets += u64::from(large);
                // Repost now rather than on the next call: the backend may be
                // waiting for room.
                self.refill(p);
                return Ok(Some(len));
            }
        }
    }
}
