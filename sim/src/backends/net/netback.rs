//! netback for one vif: the backend half of `io/netif.h`, as dom0 code.
//!
//! Both directions use grant copy (rx-copy; no page flipping, no mapping
//! of data pages): transmitted slots are copied from the frontend's granted
//! pages into dom0 staging pages, received packets from staging pages into
//! the pages the frontend posted. Only the two ring pages are mapped.

use super::VifId;
use super::error::{NetbackError, VifError};
use super::pcap::PcapWriter;
use crate::{SimHypervisor, SimPlatform};
use hal::grant::{CopyPtr, GrantCopy};
use hal::mem::{PAGE_SIZE, Pages, SharedMemory, WordMemory};
use hal::{Access, BackRing, DomId, EventChannel, EventPort, GrantError, GrantRef, GrantTable};
use std::collections::VecDeque;
use xen_pv::abi::io::{
    NetifExtraInfo, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, netif_extra,
    netif_rsp, netrxf, nettxf,
};
use xen_pv::grant::ForeignPage;
use xen_pv::pages::FrameBlock;
use xen_pv::xenstore::{TxId, XsError};
use xenpal_drivers::net::parse_mac;
use xenpal_drivers::xenbus::{XenbusDevice, XenbusError, XenbusState};
use zerocopy::{FromBytes, IntoBytes};

type Mapping = ForeignPage<WordMemory>;

/// IP MTU of every vif's link: what dom0 cuts large segments to, and above
/// which a frame for a frontend taking large segments goes with a GSO slot.
const LINK_MTU: usize = 1500;

/// Most slots one transmitted packet may use (data and extra-info slots);
/// netif.h asks backends to accept at least 18. More is fatal for the vif.
pub const MAX_TX_SLOTS: usize = 32;
/// Most packets queued towards one frontend; more are dropped.
pub const RX_QUEUE_PACKETS: usize = 1024;
/// Pages of a received packet (65535 bytes).
const RX_STAGING_PAGES: usize = 16;

/// dom0 pages that copies go through, and the copy batch, shared by every
/// vif (dom0 serves them one at a time).
pub(super) struct Staging {
    tx: FrameBlock<WordMemory>,
    rx: FrameBlock<WordMemory>,
    ops: Vec<GrantCopy>,
    status: Vec<Result<(), GrantError>>,
}

impl Staging {
    pub fn new(p: &SimPlatform) -> Result<Self, NetbackError> {
        use hal::PageAlloc;
        let tx = p
            .pages()
            .alloc(MAX_TX_SLOTS)
            .map_err(NetbackError::StagingPages)?;
        let rx = p
            .pages()
            .alloc(RX_STAGING_PAGES)
            .map_err(NetbackError::StagingPages)?;
        Ok(Staging {
            tx,
            rx,
            ops: Vec::with_capacity(MAX_TX_SLOTS),
            status: Vec::with_capacity(MAX_TX_SLOTS),
        })
    }

    fn run(&mut self, p: &SimPlatform) -> Result<(), GrantError> {
        self.status.clear();
        self.status.resize(self.ops.len(), Ok(()));
        p.grants().copy(&self.ops, &mut self.status)
    }
}

/// Counters of one vif, as dom0 sees it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// Packets the guest sent.
    pub from_guest: u64,
    /// Bytes the guest sent.
    pub from_guest_bytes: u64,
    /// Large TCP segments the guest sent with a GSO slot, which dom0 cut
    /// into link-sized frames (each counted once in `from_guest`) unless
    /// they went to a port taking them whole.
    pub from_guest_large: u64,
    /// Large TCP segments delivered to the guest whole, with a GSO slot
    /// (each counted once in `to_guest`).
    pub to_guest_large: u64,
    /// Packets delivered to the guest.
    pub to_guest: u64,
    /// Bytes delivered to the guest.
    pub to_guest_bytes: u64,
    /// Packets for the guest dropped (queue full, too long, copy failed).
    pub to_guest_dropped: u64,
    /// Packets from the guest answered with an error (malformed, copy
    /// failed, a GSO packet that is not TCP/IPv4).
    pub from_guest_errors: u64,
    /// Times the frontend connected.
    pub connects: u64,
}

/// A live connection to a frontend.
struct Link {
    fe: DomId,
    tx: BackRing<Mapping, NetifTxRequest, NetifTxResponse>,
    rx: BackRing<Mapping, NetifRxRequest, NetifRxResponse>,
    port: EventPort,
    rx_notify: bool,
    sg: bool,
    /// The frontend takes large TCP segments whole (`feature-gso-tcpv4`,
    /// with scatter-gather and checksum offload, as Linux's netback
    /// requires before it sends any).
    gso_rx: bool,
    /// Slots of a packet being collected.
    pending: Vec<NetifTxRequest>,
    /// Extra-info slots among them (answered with `NETIF_RSP_NULL`).
    pending_extra: Vec<bool>,
    /// The next slot is extra info.
    extra: bool,
    /// The packet continues in the next data slot.
    more: bool,
    /// The packet being collected is a large TCP segment to cut into
    /// segments of this payload size (its GSO extra-info slot).
    gso: Option<u16>,
}

/// Where the backend is.
enum Phase {
    /// Features published, waiting for the frontend to connect.
    InitWait,
    Connected(Box<Link>),
    /// Wrote `Closing`: waiting for the frontend to close.
    Closing,
    /// Wrote `Closed`: a frontend back in `Initialising` is served again.
    Closed,
    /// Stopped by the toolstack ([`super::Vif::stop`]); `Closed` until
    /// started.
    Stopped,
}

/// One vif's backend.
pub(super) struct VifBackend {
    pub id: VifId,
    pub dev: XenbusDevice<SimHypervisor>,
    pub bridge: String,
    phase: Phase,
    pub peer_dirty: bool,
    pub rxq: VecDeque<Vec<u8>>,
    pub counters: VifCounters,
    pub capture: Option<PcapWriter>,
    pub error: Option<VifError>,
    /// The frontend's MAC (its `mac` node), read when it connects.
    mac: Option<[u8; 6]>,
}

impl VifBackend {
    pub fn new(id: VifId, dev: XenbusDevice<SimHypervisor>, bridge: String) -> Self {
        VifBackend {
            id,
            dev,
            bridge,
            phase: Phase::Closed,
            peer_dirty: true,
            rxq: VecDeque::new(),
            counters: VifCounters::default(),
            capture: None,
            error: None,
            mac: None,
        }
    }

    /// The MAC of a connected frontend that takes large TCP segments whole.
    pub fn takes_large(&self) -> Option<[u8; 6]> {
        match &self.phase {
            Phase::Connected(l) if l.gso_rx => self.mac,
            _ => None,
        }
    }

    /// Our xenbus state, as we last wrote it.
    pub fn state(&self) -> XenbusState {
        match self.phase {
            Phase::InitWait => XenbusState::InitWait,
            Phase::Connected(_) => XenbusState::Connected,
            Phase::Closing => XenbusState::Closing,
            Phase::Closed | Phase::Stopped => XenbusState::Closed,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// The local end of the event channel, when connected.
    pub fn port(&self) -> Option<EventPort> {
        match &self.phase {
            Phase::Connected(l) => Some(l.port),
            _ => None,
        }
    }

    /// Packets wait for a frontend that will not tell us when it posts
    /// buffers (no `feature-rx-notify`): poll.
    pub fn needs_polling(&self) -> bool {
        matches!(&self.phase, Phase::Connected(l) if !l.rx_notify) && !self.rxq.is_empty()
    }

    /// Publish our features and wait for the frontend (`InitWait`).
    pub async fn publish(&mut self) -> Result<(), XsError> {
        for (k, v) in [
            ("feature-sg", "1"),
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-rx-notify", "1"),
            ("feature-gso-tcpv4", "1"),
        ] {
            self.dev.write_own(TxId::NONE, k, v).await?;
        }
        self.dev.remove_own(TxId::NONE, "error").await?;
        self.error = None;
        self.dev.switch_state(XenbusState::InitWait).await?;
        self.phase = Phase::InitWait;
        Ok(())
    }

    /// Follow the frontend's state.
    pub async fn handle_peer(&mut self, p: &SimPlatform) -> Result<(), XsError> {
        self.peer_dirty = false;
        let fs = self.dev.peer_state().await?;
        match (&self.phase, fs) {
            (Phase::Stopped, _) => {}
            (Phase::InitWait, XenbusState::Connected | XenbusState::Initialised) => {
                if let Err(msg) = self.connect(p).await {
                    self.fail(p, msg).await?;
                }
            }
            (Phase::InitWait, XenbusState::Closing) => {
                self.dev.switch_state(XenbusState::Closing).await?;
                self.phase = Phase::Closing;
            }
            (Phase::InitWait, _) => {}
            (Phase::Connected(_), XenbusState::Connected) => {}
            (Phase::Connected(_), s) => {
                log::info!("netback {}: frontend went to {s}; disconnecting", self.id);
                self.disconnect(p);
                self.dev.switch_state(XenbusState::Closing).await?;
                self.phase = Phase::Closing;
                self.after_closing(s).await?;
            }
            (Phase::Closing, s) => self.after_closing(s).await?,
            (Phase::Closed, XenbusState::Initialising) => self.publish().await?,
            (Phase::Closed, _) => {}
        }
        Ok(())
    }

    async fn after_closing(&mut self, fs: XenbusState) -> Result<(), XsError> {
        match fs {
            XenbusState::Closed | XenbusState::Unknown => {
                self.dev.switch_state(XenbusState::Closed).await?;
                self.phase = Phase::Closed;
            }
            XenbusState::Initialising => {
                self.dev.switch_state(XenbusState::Closed).await?;
                self.phase = Phase::Closed;
                self.publish().await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Stop serving (as a backend driver unloaded): disconnect, `Closing`,
    /// `Closed`, and stay so until [`start`](Self::start).
    pub async fn stop(&mut self, p: &SimPlatform) -> Result<(), XsError> {
        if self.is_stopped() {
            return Ok(());
        }
        log::info!("netback {}: stopped", self.id);
        self.disconnect(p);
        self.dev.switch_state(XenbusState::Closing).await?;
        self.dev.switch_state(XenbusState::Closed).await?;
        self.phase = Phase::Stopped;
        Ok(())
    }

    /// Serve again after [`stop`](Self::stop): as soon as the frontend is
    /// back in `Initialising`.
    pub fn start(&mut self) {
        if self.is_stopped() {
            log::info!("netback {}: started", self.id);
            self.phase = Phase::Closed;
            self.peer_dirty = true;
        }
    }

    /// Give up on the frontend: disconnect, write `error`, `Closing`.
    pub async fn fail(&mut self, p: &SimPlatform, why: VifError) -> Result<(), XsError> {
        log::error!("netback {}: {why}", self.id);
        self.disconnect(p);
        self.dev
            .write_own(TxId::NONE, "error", &why.to_string())
            .await?;
        self.error = Some(why);
        self.dev.switch_state(XenbusState::Closing).await?;
        self.phase = Phase::Closing;
        Ok(())
    }

    /// Unmap the rings and close the channel (no xenstore work: also used
    /// when the device is removed).
    pub fn disconnect(&mut self, p: &SimPlatform) {
        let Phase::Connected(link) = std::mem::replace(&mut self.phase, Phase::Closing) else {
            return;
        };
        let link = *link;
        for ring in [link.tx.into_memory(), link.rx.into_memory()] {
            if let Err((_, e)) = p.grants().unmap(ring) {
                log::warn!("netback {}: unmapping a ring: {e}", self.id);
            }
        }
        if let Err(e) = p.events().close(link.port) {
            log::warn!("netback {}: closing {}: {e}", self.id, link.port);
        }
        self.rxq.clear();
    }

    async fn connect(&mut self, p: &SimPlatform) -> Result<(), VifError> {
        let dev = &self.dev;
        let need = |v: Result<Option<u64>, XenbusError>, key: &'static str| match v {
            Ok(Some(value)) => {
                u32::try_from(value).map_err(|_| VifError::NodeOutOfRange { key, value })
            }
            Ok(None) => Err(VifError::MissingNode { key }),
            Err(source) => Err(VifError::BadNode { key, source }),
        };
        let xs = VifError::Xenstore;
        let tx_ref = need(dev.peer_u64("tx-ring-ref").await, "tx-ring-ref")?;
        let rx_ref = need(dev.peer_u64("rx-ring-ref").await, "rx-ring-ref")?;
        let evtchn = need(dev.peer_u64("event-channel").await, "event-channel")?;
        if dev
            .read_peer("request-rx-copy")
            .await
            .map_err(xs)?
            .as_deref()
            != Some("1")
        {
            return Err(VifError::NoRxCopy);
        }
        if let Ok(Some(n)) = dev.peer_u64("multi-queue-num-queues").await
            && n > 1
        {
            return Err(VifError::MultiQueue { queues: n });
        }
        let rx_notify = dev.peer_feature("feature-rx-notify").await.map_err(xs)?;
        let sg = dev.peer_feature("feature-sg").await.map_err(xs)?;
        // Linux's netback sends large segments only to a frontend taking
        // checksum offload (on unless `feature-no-csum-offload=1`).
        let gso_rx = sg
            && dev.peer_feature("feature-gso-tcpv4").await.map_err(xs)?
            && !dev
                .peer_feature("feature-no-csum-offload")
                .await
                .map_err(xs)?;
        self.mac = dev
            .read_peer("mac")
            .await
            .map_err(xs)?
            .as_deref()
            .and_then(parse_mac);
        let fe = dev.peer_id();
        let tx_map = p
            .grants()
            .map(fe, GrantRef(tx_ref), Access::ReadWrite)
            .map_err(|source| VifError::MapTxRing {
                gref: tx_ref,
                source,
            })?;
        let rx_map = match p.grants().map(fe, GrantRef(rx_ref), Access::ReadWrite) {
            Ok(m) => m,
            Err(e) => {
                let _ = p.grants().unmap(tx_map);
                return Err(VifError::MapRxRing {
                    gref: rx_ref,
                    source: e,
                });
            }
        };
        let port = match p.events().bind_interdomain(fe, EventPort(evtchn)) {
            Ok(port) => port,
            Err(e) => {
                let _ = p.grants().unmap(tx_map);
                let _ = p.grants().unmap(rx_map);
                return Err(VifError::BindEventChannel {
                    port: evtchn,
                    source: e,
                });
            }
        };
        let (tx, rx) = match (BackRing::attach(tx_map), BackRing::attach(rx_map)) {
            (Ok(tx), Ok(rx)) => (tx, rx),
            _ => return Err(VifError::RingTooSmall),
        };
        self.phase = Phase::Connected(Box::new(Link {
            fe,
            tx,
            rx,
            port,
            rx_notify,
            sg,
            gso_rx,
            pending: Vec::with_capacity(MAX_TX_SLOTS),
            pending_extra: Vec::with_capacity(MAX_TX_SLOTS),
            extra: false,
            more: false,
            gso: None,
        }));
        if let Err(e) = self.dev.switch_state(XenbusState::Connected).await {
            self.disconnect(p);
            return Err(VifError::Xenstore(e));
        }
        self.counters.connects += 1;
        log::info!(
            "netback {}: connected (sg {sg}, rx-notify {rx_notify}, large rx {gso_rx}, bridge {})",
            self.id,
            self.bridge
        );
        Ok(())
    }

    /// Take the packets the guest sent; each complete one goes to `out`
    /// (a large TCP segment cut to the link's size, unless it is for one of
    /// the MACs of `whole_to`: dom0's own stack, which takes it whole as
    /// Linux's does, and frontends that take large segments).
    /// Returns whether anything was done.
    ///
    /// Errors: the frontend broke the protocol (the caller fails the vif).
    pub fn process_tx(
        &mut self,
        p: &SimPlatform,
        staging: &mut Staging,
        now: u64,
        out: &mut Vec<Vec<u8>>,
        whole_to: &[[u8; 6]],
    ) -> Result<bool, VifError> {
        let Phase::Connected(link) = &mut self.phase else {
            return Ok(false);
        };
        let mut progress = false;
        loop {
            while let Some(req) = link.tx.take_request().map_err(VifError::TxRing)? {
                progress = true;
                if link.extra {
                    let info = NetifExtraInfo::read_from_bytes(&req.as_bytes()[..8])
                        .map_err(|_| VifError::BadExtraInfo)?;
                    if info.type_ == netif_extra::TYPE_NONE || info.type_ >= netif_extra::TYPE_MAX {
                        return Err(VifError::UnknownExtraInfo { type_: info.type_ });
                    }
                    if info.type_ == netif_extra::TYPE_GSO {
                        // As Linux's netback: a zero size or an unknown
                        // protocol is fatal; TCPv6 (not offered) is taken
                        // and, being no TCPv4, dropped when cut.
                        let size = u16::from_le_bytes([info.u[0], info.u[1]]);
                        let kind = info.u[2];
                        let known = matches!(
                            kind,
                            netif_extra::GSO_TYPE_TCPV4 | netif_extra::GSO_TYPE_TCPV6
                        );
                        if size == 0 || !known {
                            return Err(VifError::BadGso { size, kind });
                        }
                        link.gso = Some(size);
                    }
                    link.extra = info.flags & netif_extra::FLAG_MORE != 0;
                    link.pending.push(req);
                    link.pending_extra.push(true);
                } else {
                    if link.pending.is_empty() {
                        link.extra = req.flags & nettxf::EXTRA_INFO != 0;
                    }
                    link.more = req.flags & nettxf::MORE_DATA != 0;
                    link.pending.push(req);
                    link.pending_extra.push(false);
                }
                if link.pending.len() > MAX_TX_SLOTS {
                    return Err(VifError::TooManySlots);
                }
                if link.more || link.extra {
                    continue;
                }
                let taken = take_packet(p, link, staging, out)?;
                if let (Some(_), Some(cap), Some(pkt)) = (taken, self.capture.as_mut(), out.last())
                {
                    // As the guest sent it: a large segment whole, as
                    // tcpdump on Linux's vif shows it.
                    let _ = cap.write_packet(now, pkt);
                }
                let taken = match (taken, link.gso.take()) {
                    (Some(len), Some(size)) => {
                        self.counters.from_guest_large += 1;
                        let whole = out.pop().unwrap_or_default();
                        if whole_to.iter().any(|mac| whole.starts_with(mac)) {
                            out.push(whole);
                            Some(len)
                        } else {
                            // Cut it here: guests take link-sized frames.
                            super::gso::segment(&whole, size, out).then_some(len)
                        }
                    }
                    (taken, _) => taken,
                };
                let ok = match taken {
                    Some(len) => {
                        self.counters.from_guest += 1;
                        self.counters.from_guest_bytes += len as u64;
                        true
                    }
                    None => {
                        self.counters.from_guest_errors += 1;
                        false
                    }
                };
                for (req, extra) in link.pending.iter().zip(&link.pending_extra) {
                    let status = match (extra, ok) {
                        (true, _) => netif_rsp::NULL,
                        (false, true) => netif_rsp::OKAY,
                        (false, false) => netif_rsp::ERROR,
                    };
                    link.tx
                        .stage_response(&NetifTxResponse { id: req.id, status })
                        .map_err(VifError::TxRing)?;
                }
                link.pending.clear();
                link.pending_extra.clear();
            }
            if link.tx.push_responses_and_check_notify() {
                let _ = p.events().notify(link.port);
            }
            if !link
                .tx
                .final_check_for_requests()
                .map_err(VifError::TxRing)?
            {
                return Ok(progress);
            }
        }
    }

    /// Deliver queued packets into the buffers the guest posted. Returns
    /// whether anything was done.
    ///
    /// Errors: the frontend broke the protocol.
    pub fn deliver_rx(
        &mut self,
        p: &SimPlatform,
        staging: &mut Staging,
        now: u64,
    ) -> Result<bool, VifError> {
        let Phase::Connected(link) = &mut self.phase else {
            return Ok(false);
        };
        let ring = VifError::RxRing;
        let mut progress = false;
        while let Some(pkt) = self.rxq.front_mut() {
            let need = pkt.len().div_ceil(PAGE_SIZE).max(1);
            if need > 1 && !link.sg {
                self.rxq.pop_front();
                self.counters.to_guest_dropped += 1;
                continue;
            }
            // A large TCP segment for a frontend that takes them goes whole,
            // its checksum left blank, with a GSO slot after the first slot
            // (which takes a request too).
            let maybe_large = link.gso_rx && pkt.len() > LINK_MTU + 14;
            let slots = need + usize::from(maybe_large);
            if (link.rx.unconsumed_requests().map_err(ring)? as usize) < slots {
                if !link.rx_notify {
                    break;
                }
                // Ask to be told when buffers are posted, then look again.
                link.rx.final_check_for_requests().map_err(ring)?;
                if (link.rx.unconsumed_requests().map_err(ring)? as usize) < slots {
                    break;
                }
            }
            progress = true;
            let gso = if maybe_large {
                super::gso::offload_to_frontend(pkt, LINK_MTU)
            } else {
                None
            };
            staging.ops.clear();
            let mut ids = [0u16; RX_STAGING_PAGES];
            for (k, chunk) in pkt.chunks(PAGE_SIZE).enumerate() {
                let Some(req) = link.rx.take_request().map_err(ring)? else {
                    return Err(VifError::RxRequestsVanished);
                };
                ids[k] = req.id;
                staging.rx.write(k * PAGE_SIZE, chunk);
                staging.ops.push(GrantCopy {
                    src: CopyPtr::Local {
                        gfn: staging.rx.gfn(k),
                        offset: 0,
                    },
                    dst: CopyPtr::Foreign {
                        domid: link.fe,
                        gref: GrantRef(req.gref),
                        offset: 0,
                    },
                    len: chunk.len() as u16,
                });
                if k == 0 && gso.is_some() {
                    // The extra-info slot's request: no data goes there.
                    link.rx
                        .take_request()
                        .map_err(ring)?
                        .ok_or(VifError::RxRequestsVanished)?;
                }
            }
            let copied = staging.run(p).is_ok();
            let mut all_ok = copied;
            for (k, chunk) in pkt.chunks(PAGE_SIZE).enumerate() {
                let ok = copied && staging.status[k].is_ok();
                all_ok &= ok;
                let mut flags = if k + 1 < need { netrxf::MORE_DATA } else { 0 };
                if k == 0 && gso.is_some() {
                    flags |= netrxf::EXTRA_INFO | netrxf::CSUM_BLANK | netrxf::DATA_VALIDATED;
                }
                let rsp = NetifRxResponse {
                    id: ids[k],
                    offset: 0,
                    flags,
                    status: if ok {
                        chunk.len() as i16
                    } else {
                        netif_rsp::ERROR
                    },
                };
                link.rx.stage_response(&rsp).map_err(ring)?;
                if let (0, Some(size)) = (k, gso) {
                    let mut info = NetifExtraInfo {
                        type_: netif_extra::TYPE_GSO,
                        flags: 0,
                        u: [0; 6],
                    };
                    info.u[..2].copy_from_slice(&size.to_le_bytes());
                    info.u[2] = netif_extra::GSO_TYPE_TCPV4;
                    let slot = NetifRxResponse::read_from_bytes(info.as_bytes())
                        .map_err(|_| VifError::BadExtraInfo)?;
                    link.rx.stage_response(&slot).map_err(ring)?;
                }
            }
            if all_ok {
                self.counters.to_guest += 1;
                self.counters.to_guest_large += u64::from(gso.is_some());
                self.counters.to_guest_bytes += pkt.len() as u64;
                if let Some(cap) = self.capture.as_mut() {
                    let _ = cap.write_packet(now, pkt);
                }
            } else {
                self.counters.to_guest_dropped += 1;
            }
            self.rxq.pop_front();
        }
        if link.rx.push_responses_and_check_notify() {
            let _ = p.events().notify(link.port);
        }
        Ok(progress)
    }

    /// Queue a packet for the guest (dropped if the queue is full or the
    /// vif is not connected).
    pub fn enqueue(&mut self, pkt: Vec<u8>) {
        if self.is_connected() && self.rxq.len() < RX_QUEUE_PACKETS {
            self.rxq.push_back(pkt);
        } else {
            self.counters.to_guest_dropped += 1;
        }
    }
}

/// Copy the packet in `link.pending` out of the guest; its bytes go to
/// `out`. `Ok(None)`: malformed in a way that is the packet's problem (too
/// short, a failed copy); answered with `NETIF_RSP_ERROR`.
fn take_packet(
    p: &SimPlatform,
    link: &Link,
    staging: &mut Staging,
    out: &mut Vec<Vec<u8>>,
) -> Result<Option<usize>, VifError> {
    let data: Vec<&NetifTxRequest> = link
        .pending
        .iter()
        .zip(&link.pending_extra)
        .filter(|(_, e)| !**e)
        .map(|(r, _)| r)
        .collect();
    let Some(first) = data.first() else {
        return Ok(None);
    };
    let total = usize::from(first.size);
    let rest: usize = data[1..].iter().map(|r| usize::from(r.size)).sum();
    if rest > total {
        return Err(VifError::InconsistentSizes { total, rest });
    }
    staging.ops.clear();
    let mut lens = [0usize; MAX_TX_SLOTS];
    for (k, req) in data.iter().enumerate() {
        let len = if k == 0 {
            total - rest
        } else {
            usize::from(req.size)
        };
        if usize::from(req.offset) + len > PAGE_SIZE {
            return Err(VifError::SlotCrossesPage {
                len,
                offset: req.offset,
            });
        }
        lens[k] = len;
        if len > 0 {
            staging.ops.push(GrantCopy {
                src: CopyPtr::Foreign {
                    domid: link.fe,
                    gref: GrantRef(req.gref),
                    offset: req.offset,
                },
                dst: CopyPtr::Local {
                    gfn: staging.tx.gfn(k),
                    offset: 0,
                },
                len: len as u16,
            });
        }
    }
    if total < 14 {
        return Ok(None);
    }
    if staging.run(p).is_err() || staging.status.iter().any(|s| s.is_err()) {
        return Ok(None);
    }
    let mut pkt = vec![0u8; total];
    let mut at = 0;
    for (k, &len) in lens.iter().enumerate().take(data.len()) {
        staging.tx.read(k * PAGE_SIZE, &mut pkt[at..at + len]);
        at += len;
    }
    if first.flags & nettxf::CSUM_BLANK != 0 {
        fill_checksum(&mut pkt);
    }
    out.push(pkt);
    Ok(Some(total))
}

/// Complete the TCP or UDP checksum of an IPv4 frame whose sender left it to
/// the device (`NETTXF_csum_blank`). Other frames are left alone.
pub fn fill_checksum(frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || 14 + total > frame.len() {
        return;
    }
    let proto = ip[9];
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let l4 = 14 + ihl;
    let l4_len = total - ihl;
    if l4_len < field + 2 {
        return;
    }
    frame[l4 + field] = 0;
    frame[l4 + field + 1] = 0;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&frame[14 + 12..14 + 20]);
    add(&[0, proto]);
    add(&(l4_len as u16).to_be_bytes());
    add(&frame[l4..l4 + l4_len]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_matches_a_known_packet() {
        // Ethernet + IPv4 10.0.0.1 -> 10.0.0.2, UDP 1000 -> 2000, "hi".
        let mut f = vec![0u8; 14];
        f[12] = 8;
        f.extend_from_slice(&[
            0x45, 0, 0, 30, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 10, 0xab, 0xcd, b'h', b'i']);
        fill_checksum(&mut f);
        // Verify: the one's-complement sum over pseudo-header and segment
        // is 0xffff.
        let mut sum: u32 = 0;
        for c in f[26..34].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        sum += 17 + 10;
        for c in f[34..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
