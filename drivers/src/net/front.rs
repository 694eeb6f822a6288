//! The vif's xenbus side: opening, connecting, following the backend
//! through restarts, failing, closing; and the waits an application's loop
//! is built on.

use super::rings::{Block, Conn, Drain, Offer};
use super::{
    ETHERNET_HEADER, LinkState, MAX_FRAME, MAX_RX_FRAME, NetConfig, NetError, NetStats, Violation,
    parse_mac,
};
use crate::xenbus::{XenbusDevice, XenbusState, list_devices};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;
use core::time::Duration;
use hal::mem::PAGE_SIZE;
use hal::time::Timer;
use hal::{Clock, EventChannel, Instant};
use xen_pv::Hypervisor;
use xen_pv::abi::Errno;
use xen_pv::platform::XenPlatform;
use xen_pv::timer::AlarmHw;
use xen_pv::xenstore::{TxId, XenStore, XsError};

/// First delay between attempts to end grants the backend still holds;
/// doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(1);
const MAX_RETRY: Duration = Duration::from_millis(200);
/// Attempts at the xenstore transaction that publishes a connection.
const TRANSACTION_ATTEMPTS: u32 = 32;
/// How long [`wait_any`] sleeps, at most, when smoltcp wants to send but no
/// vif can.
const STALL_WAIT: Duration = Duration::from_millis(5);

/// This guest's vifs: the ids under `device/vif`, numerically sorted (none
/// is an empty list).
///
/// Errors: xenstore failures.
pub async fn vif_ids<H: Hypervisor>(xs: &XenStore<H>) -> Result<Vec<String>, NetError> {
    Ok(list_devices(xs, "vif").await?)
}

/// A network frontend: one vif (`device/vif/<id>`). See the
/// [module documentation](super) for how to drive it.
///
/// It borrows the platform for its lifetime: grants, pages, event channels
/// and the timer come from there.
#[doc(alias = "netfront")]
pub struct Netfront<'p, H: Hypervisor, C: Clock, A: AlarmHw> {
    pub(super) p: &'p XenPlatform<H, C, A>,
    dev: XenbusDevice<H>,
    cfg: NetConfig,
    mac: [u8; 6],
    mtu: usize,
    pub(super) state: LinkState,
    pub(super) conn: Option<Conn<Block<H>>>,
    drain: Drain<Block<H>>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    error: Option<NetError>,
    /// A failure not yet written to xenstore (`error` node, `Closing`).
    report_pending: bool,
    /// Our `Closed` state is written (Failed and Closed only).
    closed_written: bool,
    peer_dirty: bool,
    pub(super) stats: NetStats,
    /// A received packet, copied out of the shared pages.
    pub(super) rx_pkt: Vec<u8>,
    /// Where smoltcp builds a packet before it is copied into granted pages.
    pub(super) tx_buf: Vec<u8>,
}

impl<H: Hypervisor, C: Clock, A: AlarmHw> core::fmt::Debug for Netfront<'_, H, C, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Netfront")
            .field("dir", &self.dev.own_dir())
            .field("state", &self.state)
            .field("error", &self.error)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<'p, H: Hypervisor, C: Clock, A: AlarmHw> Netfront<'p, H, C, A> {
    /// Wait until the toolstack has created vif `id` (its `state` node,
    /// which toolstacks write last, exists): for a vif added after boot.
    /// Returns at once if it is there.
    ///
    /// Errors: [`NetError::Timeout`] at `deadline`; xenstore failures.
    pub async fn wait_for_device(
        platform: &XenPlatform<H, C, A>,
        id: &str,
        deadline: Instant,
    ) -> Result<(), NetError> {
        let xs = platform.xenstore().ok_or(NetError::NoXenstore)?;
        let path = format!("device/vif/{id}/state");
        let token = format!("netfront:appear:{id}");
        let present = || async {
            match xs.read(TxId::NONE, &path).await {
                Ok(_) => Ok(true),
                Err(e) if e.is_enoent() => Ok(false),
                Err(e) => Err(NetError::from(e)),
            }
        };
        if present().await? {
            return Ok(());
        }
        xs.watch(&path, &token).await?;
        let result = loop {
            if present().await? {
                break Ok(());
            }
            let next = core::pin::pin!(xs.next_watch_event_for(&token));
            match hal::time::with_timeout(platform.timer(), deadline, next).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Err(e.into()),
                Err(hal::time::TimedOut) => break Err(NetError::Timeout),
            }
        };
        let _ = xs.unwatch(&path, &token).await;
        result
    }

    /// Open vif `id`: read its `mac` (and `mtu`), watch the backend, and
    /// start the handshake (state `Initialising`). The link comes up in
    /// later [`wait`](Self::wait)s; [`wait_up`](Self::wait_up) waits for it.
    ///
    /// Errors: [`NetError::Xenbus`] if the device is missing or its
    /// `backend` nodes are bad; [`NetError::BadMac`]; xenstore failures.
    pub async fn open(
        platform: &'p XenPlatform<H, C, A>,
        id: &str,
        cfg: NetConfig,
    ) -> Result<Self, NetError> {
        let xs = platform.xenstore().ok_or(NetError::NoXenstore)?;
        let dev = XenbusDevice::open_frontend(xs, "vif", id).await?;
        let mac_node = dev.read_own("mac").await?;
        let mac = mac_node
            .as_deref()
            .and_then(parse_mac)
            .ok_or_else(|| NetError::BadMac(mac_node.clone().unwrap_or_default()))?;
        let node_mtu = match dev.read_own("mtu").await? {
            Some(v) => v.trim().parse().ok(),
            None => None,
        };
        let limit = if cfg.scatter_gather {
            MAX_FRAME
        } else {
            PAGE_SIZE
        } - ETHERNET_HEADER;
        let mtu = cfg.mtu.or(node_mtu).unwrap_or(1500).clamp(68, limit);
        dev.watch_peer().await?;
        dev.remove_own(TxId::NONE, "error").await?;
        dev.switch_state(XenbusState::Initialising).await?;
        Ok(Netfront {
            p: platform,
            dev,
            cfg,
            mac,
            mtu,
            state: LinkState::Initialising,
            conn: None,
            drain: Drain::default(),
            retry_at: None,
            retry_delay: FIRST_RETRY,
            error: None,
            report_pending: false,
            closed_written: false,
            peer_dirty: true,
            stats: NetStats::default(),
            rx_pkt: vec![0; MAX_RX_FRAME],
            tx_buf: vec![0; MAX_FRAME],
        })
    }

    /// The MAC address (from the `mac` node).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The MAC address as smoltcp's hardware address, for
    /// `smoltcp::iface::Config::new`.
    pub fn hardware_address(&self) -> smoltcp::wire::HardwareAddress {
        smoltcp::wire::HardwareAddress::Ethernet(smoltcp::wire::EthernetAddress(self.mac))
    }

    /// The IP MTU reported to smoltcp: the configured one, or less than a
    /// page while connected to a backend without scatter-gather.
    pub fn mtu(&self) -> usize {
        match &self.conn {
            Some(c) if !c.tx.sg => self.mtu.min(PAGE_SIZE - ETHERNET_HEADER),
            _ => self.mtu,
        }
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Whether packets flow.
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }

    /// Why the vif failed, if it did ([`LinkState::Failed`]).
    pub fn error(&self) -> Option<&NetError> {
        self.error.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        let mut s = self.stats;
        if let Some(c) = &self.conn {
            s.tx_errors += c.tx.errors;
            s.rx_dropped += c.rx.dropped;
            s.rx_large += c.rx.large_packets;
        }
        s
    }

    /// Our xenstore directory (`device/vif/<id>`).
    pub fn dir(&self) -> &str {
        self.dev.own_dir()
    }

    /// Grants and pages not yet given back after a disconnect (the backend
    /// still holds them).
    pub fn draining(&self) -> usize {
        self.drain.grants_left()
    }

    /// Wait until the link is up, running the handshake.
    ///
    /// Errors: [`NetError::Timeout`] if `deadline` passes first; the
    /// failure ([`Netfront::error`]) if the vif fails; [`NetError::Down`]
    /// if it is closed.
    pub async fn wait_up(&mut self, deadline: Instant) -> Result<(), NetError> {
        loop {
            match self.state {
                LinkState::Up => return Ok(()),
                LinkState::Failed => {
                    return Err(self.error.clone().unwrap_or(NetError::Down(self.state)));
                }
                LinkState::Closed => return Err(NetError::Down(self.state)),
                _ => {}
            }
            if self.p.timer().now() >= deadline {
                return Err(NetError::Timeout);
            }
            self.wait(deadline).await;
        }
    }

    /// Idle until something happens: the backend signals the event
    /// channel, `deadline` passes, or the link changes state. Meanwhile run
    /// the xenbus side: connect when the backend is ready, follow it when it
    /// goes away and comes back, report failures, give back grants.
    ///
    /// This is the only place the vif does xenstore work; call it in the
    /// application's loop after `Interface::poll`. For several vifs, use
    /// [`wait_any`].
    pub async fn wait(&mut self, deadline: Instant) {
        wait_any(&mut [self], deadline).await
    }

    /// Close the vif as a frontend does on shutdown: state `Closing`, wait
    /// for the backend to let go, give back every grant, page and the event
    /// channel, state `Closed`.
    ///
    /// Errors: [`NetError::GrantsInUse`] if the backend still holds grants
    /// at `deadline` (their pages stay allocated); xenstore failures.
    pub async fn close(&mut self, deadline: Instant) -> Result<(), NetError> {
        let had_conn = self.conn.is_some();
        self.report_failure().await;
        self.dev.switch_state(XenbusState::Closing).await?;
        if had_conn {
            // Wait for the backend to notice (it then unmaps our rings).
            loop {
                let _ = self.dev.peer_changed()?;
                let s = self.dev.peer_state().await?;
                if matches!(
                    s,
                    XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
                ) {
                    break;
                }
                if !self.idle_until(deadline, true).await {
                    break;
                }
            }
        }
        if let Some(c) = self.conn.take() {
            c.teardown(self.p, &mut self.drain);
            self.stats.disconnects += 1;
        }
        self.state = LinkState::Closed;
        let mut delay = FIRST_RETRY;
        while !self.drain.retry(self.p) {
            let at = self.p.timer().now() + delay;
            if at > deadline {
                break;
            }
            hal::time::sleep_until(self.p.timer(), at).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
        self.dev.switch_state(XenbusState::Closed).await?;
        self.closed_written = true;
        self.dev.unwatch_peer().await?;
        match self.drain.grants_left() {
            0 => Ok(()),
            n => Err(NetError::GrantsInUse(n)),
        }
    }

    /// Bring a failed vif back: forget the error and start the handshake
    /// again (once every grant is back). Does nothing unless
    /// [`LinkState::Failed`].
    ///
    /// Errors: xenstore failures.
    pub async fn restart(&mut self) -> Result<(), NetError> {
        if self.state != LinkState::Failed {
            return Ok(());
        }
        self.dev.remove_own(TxId::NONE, "error").await?;
        self.error = None;
        self.report_pending = false;
        self.closed_written = false;
        self.state = LinkState::Draining;
        self.retry_at = None;
        Ok(())
    }

    /// Sleep until an xenstore event or `deadline` (when `xs_only`), or
    /// also our channel. Returns `false` at the deadline.
    async fn idle_until(&self, deadline: Instant, xs_only: bool) -> bool {
        let events = self.p.events();
        let xs_port = self.dev.xenstore().port();
        let port = self.conn.as_ref().map(|c| c.port).filter(|_| !xs_only);
        poll_fn(|cx| {
            let hit = |events: &xen_pv::event::Events<H>| {
                events.take_pending(xs_port) | port.is_some_and(|p| events.take_pending(p))
            };
            if hit(events) {
                return Poll::Ready(true);
            }
            if self.p.timer().now() >= deadline {
                return Poll::Ready(false);
            }
            events.register_waker(xs_port, cx.waker());
            if let Some(p) = port {
                events.register_waker(p, cx.waker());
            }
            self.p.timer().schedule_wake(deadline, cx.waker());
            if hit(events) {
                Poll::Ready(true)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// No room to send a full-sized frame (or no link).
    fn tx_stalled(&self) -> bool {
        let max = self.frame_max();
        let link = self.mtu() + ETHERNET_HEADER;
        self.conn.as_ref().is_none_or(|c| {
            let len = max.min(c.tx.max_len());
            !c.tx.room_for(len, len > link)
        })
    }

    /// Data waiting for `Interface::poll`, or a failure to report.
    fn has_work(&self) -> bool {
        self.report_pending || self.conn.as_ref().is_some_and(|c| c.rx.has_responses())
    }

    /// The data path found a violation: disconnect now (synchronously); the
    /// next `wait` reports it in xenstore.
    pub(super) fn violated(&mut self, v: Violation) {
        self.fail(NetError::Backend(v));
    }

    fn fail(&mut self, e: NetError) {
        log::error!("netfront {}: {e}; disconnecting", self.dev.own_dir());
        self.error = Some(e);
        self.disconnect();
        self.state = LinkState::Failed;
        self.report_pending = true;
        self.closed_written = false;
    }

    fn disconnect(&mut self) {
        if let Some(c) = self.conn.take() {
            c.teardown(self.p, &mut self.drain);
            self.stats.disconnects += 1;
        }
        self.retry_at = None;
        self.retry_delay = FIRST_RETRY;
    }

    /// Run the xenbus side once; returns whether the link state changed.
    async fn maintain(&mut self) -> bool {
        let before = self.state;
        if let Err(e) = self.step().await {
            if matches!(self.state, LinkState::Failed | LinkState::Closed) {
                log::warn!("netfront {}: {e}", self.dev.own_dir());
            } else {
                self.fail(e);
            }
        }
        self.report_failure().await;
        self.state != before
    }

    /// Tell the backend why we gave up (`error` node) and that we are
    /// closing, once per failure.
    async fn report_failure(&mut self) {
        if !self.report_pending {
            return;
        }
        self.report_pending = false;
        let msg = self
            .error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let r = async {
            self.dev.write_own(TxId::NONE, "error", &msg).await?;
            self.dev.switch_state(XenbusState::Closing).await
        }
        .await;
        if let Err(e) = r {
            log::warn!("netfront {}: reporting failure: {e}", self.dev.own_dir());
        }
    }

    fn retry_drain(&mut self) {
        if self.drain.is_empty() {
            return;
        }
        let now = self.p.timer().now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        if self.drain.retry(self.p) {
            self.retry_at = None;
            self.retry_delay = FIRST_RETRY;
        } else {
            self.retry_at = Some(now + self.retry_delay);
            self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
        }
    }

    async fn step(&mut self) -> Result<(), NetError> {
        if self.dev.peer_changed()? {
            self.peer_dirty = true;
        }
        self.retry_drain();
        match self.state {
            LinkState::Failed | LinkState::Closed => {
                if self.drain.is_empty() && !self.closed_written && !self.report_pending {
                    self.closed_written = true;
                    self.dev.switch_state(XenbusState::Closed).await?;
                }
                return Ok(());
            }
            LinkState::Draining => {
                if !self.drain.is_empty() {
                    return Ok(());
                }
                // Everything is back: start over.
                self.dev.switch_state(XenbusState::Closed).await?;
                self.dev.switch_state(XenbusState::Initialising).await?;
                self.state = LinkState::Initialising;
                self.peer_dirty = true;
            }
            _ => {}
        }
        if !self.peer_dirty {
            return Ok(());
        }
        self.peer_dirty = false;
        let s = self.dev.peer_state().await?;
        match (self.state, s) {
            (LinkState::Initialising, XenbusState::InitWait) => self.connect().await?,
            (LinkState::Connecting, XenbusState::Connected) => {
                log::info!(
                    "netfront {}: link up (mac {}, mtu {}, sg {}, large send {})",
                    self.dev.own_dir(),
                    MacDisplay(self.mac),
                    self.mtu(),
                    self.conn.as_ref().is_some_and(|c| c.tx.sg),
                    self.conn.as_ref().is_some_and(|c| c.tx.gso)
                );
                self.state = LinkState::Up;
                self.stats.connects += 1;
            }
            (LinkState::Connecting, XenbusState::InitWait | XenbusState::Initialised) => {}
            (LinkState::Connecting, s) | (LinkState::Up, s) if s != XenbusState::Connected => {
                log::info!(
                    "netfront {}: backend went away (state {s}); reconnecting when it is back",
                    self.dev.own_dir()
                );
                self.disconnect();
                self.state = LinkState::Draining;
                self.retry_drain();
                // Come back at once if nothing is held.
                self.peer_dirty = true;
            }
            _ => {}
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), NetError> {
        if !self.dev.peer_feature("feature-rx-copy").await? {
            return Err(NetError::Unsupported("feature-rx-copy"));
        }
        let sg = self.cfg.scatter_gather && self.dev.peer_feature("feature-sg").await?;
        let gso = sg && self.cfg.large_send && self.dev.peer_feature("feature-gso-tcpv4").await?;
        let rx = usize::from(self.cfg.rx_buffers).clamp(1, 256);
        let frame = if gso {
            MAX_FRAME
        } else {
            self.mtu + ETHERNET_HEADER
        };
        let tx = usize::from(self.cfg.tx_buffers).max(frame.div_ceil(PAGE_SIZE));
        let (mut conn, offer) =
            Conn::new(self.p, self.dev.peer_id(), tx, rx, sg, gso, &mut self.drain)?;
        if let Err(e) = self.publish(&offer).await {
            conn.teardown(self.p, &mut self.drain);
            return Err(e);
        }
        conn.rx.refill(self.p);
        self.conn = Some(conn);
        self.dev.switch_state(XenbusState::Connected).await?;
        self.state = LinkState::Connecting;
        Ok(())
    }

    /// Write the connection's nodes in one transaction, retrying on
    /// conflicts.
    async fn publish(&self, offer: &Offer) -> Result<(), NetError> {
        let xs = self.dev.xenstore();
        let large_rx = self.cfg.large_receive && self.cfg.scatter_gather;
        let nodes = [
            ("tx-ring-ref", offer.tx_ring_ref.0.to_string()),
            ("rx-ring-ref", offer.rx_ring_ref.0.to_string()),
            ("event-channel", offer.port.0.to_string()),
            ("request-rx-copy", "1".into()),
            ("feature-rx-notify", "1".into()),
            (
                "feature-sg",
                if self.cfg.scatter_gather { "1" } else { "0" }.into(),
            ),
            ("feature-gso-tcpv4", if large_rx { "1" } else { "0" }.into()),
            (
                "feature-no-csum-offload",
                if large_rx { "0" } else { "1" }.into(),
            ),
        ];
        for _ in 0..TRANSACTION_ATTEMPTS {
            let t = xs.transaction_start().await?;
            let mut written = Ok(());
            for (k, v) in &nodes {
                written = self.dev.write_own(t, k, v).await;
                if written.is_err() {
                    break;
                }
            }
            if let Err(e) = written {
                let _ = xs.transaction_end(t, false).await;
                return Err(e.into());
            }
            match xs.transaction_end(t, true).await {
                Ok(()) => return Ok(()),
                Err(XsError::Errno(Errno::EAGAIN)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(XsError::Errno(Errno::EAGAIN).into())
    }
}

struct MacDisplay([u8; 6]);

impl core::fmt::Display for MacDisplay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// [`Netfront::wait`] for several vifs at once: returns when any of them
/// has something for `Interface::poll` or changed state, or at `deadline`.
/// Each vif's xenbus side runs meanwhile.
///
/// A guest is one task, and a vif's `wait` listens only to its own event
/// channel; a guest with several vifs must wait on all of them here.
pub async fn wait_any<H: Hypervisor, C: Clock, A: AlarmHw>(
    nics: &mut [&mut Netfront<'_, H, C, A>],
    deadline: Instant,
) {
    let Some(timer_of) = nics.first().map(|n| n.p) else {
        return;
    };
    let timer = timer_of.timer();
    loop {
        let mut changed = false;
        for n in nics.iter_mut() {
            changed |= n.maintain().await;
        }
        if changed || nics.iter().any(|n| n.has_work()) {
            // Let other domains run even if the caller loops at once.
            hal::task::yield_now().await;
            return;
        }
        let now = timer.now();
        let retry = nics
            .iter()
            .filter_map(|n| n.retry_at)
            .fold(Instant::MAX, Instant::min);
        let mut wake_at = deadline.min(retry);
        let mut stalled = false;
        if deadline <= now {
            // smoltcp wants to run now, which is about sending. If no vif
            // can send (link down, or every buffer in flight), running now
            // would spin: wait for a completion or the link instead.
            for n in nics.iter_mut() {
                n.reap_now();
            }
            if !nics.iter().all(|n| n.tx_stalled()) {
                hal::task::yield_now().await;
                return;
            }
            stalled = true;
            wake_at = retry.min(now + STALL_WAIT);
        }
        let data = poll_fn(|cx| {
            let mut data = false;
            let mut xs = false;
            let check = |data: &mut bool, xs: &mut bool| {
                for n in nics.iter() {
                    let events = n.p.events();
                    *xs |= events.take_pending(n.dev.xenstore().port());
                    if let Some(c) = &n.conn {
                        *data |= events.take_pending(c.port);
                    }
                }
            };
            check(&mut data, &mut xs);
            if data || xs {
                return Poll::Ready(data);
            }
            if timer.now() >= wake_at {
                return Poll::Ready(false);
            }
            for n in nics.iter() {
                let events = n.p.events();
                events.register_waker(n.dev.xenstore().port(), cx.waker());
                if let Some(c) = &n.conn {
                    events.register_waker(c.port, cx.waker());
                }
            }
            timer.schedule_wake(wake_at, cx.waker());
            check(&mut data, &mut xs);
            if data || xs {
                Poll::Ready(data)
            } else {
                Poll::Pending
            }
        })
        .await;
        let now = timer.now();
        if data || now >= deadline && !stalled || stalled && now >= wake_at {
            return;
        }
    }
}
