//! netfront: the network frontend of `io/netif.h`, as a
//! [`smoltcp::phy::Device`].
//!
//! # What it speaks
//! - One transmit and one receive ring (one page each) and one event channel
//!   for both (`event-channel`; no split channels, no multi-queue).
//! - **rx-copy** (`request-rx-copy=1`): we grant the backend pages and it
//!   copies received packets into them. The backend must offer
//!   `feature-rx-copy`.
//! - **feature-sg**: a packet may span several slots in both directions, up
//!   to 65535 bytes (the limit of the first transmit slot's `size`). Used for
//!   transmit only if the backend offers it too.
//! - **feature-rx-notify**: we notify the backend when we post receive
//!   buffers (honouring its `req_event`).
//! - **feature-gso-tcpv4** (transmit only): if the backend offers it (and
//!   scatter-gather), smoltcp is let make TCP segments of up to 64 KiB,
//!   which go out with a GSO extra-info slot and are cut to the link's MTU
//!   by the backend ([`NetConfig::large_send`]). smoltcp knows nothing of
//!   segmentation offload, so the vif stands in for it: smoltcp is told the
//!   MTU is 65535, the MSS option of every SYN we send is lowered to the
//!   link's (peers see the truth), and the MSS option of a received SYN
//!   that is at least the link's is raised to what 64 KiB holds (checksum
//!   verified, then fixed). A peer that asked for less keeps it. Other
//!   frames longer than the link's are dropped, as smoltcp would have.
//! - **feature-gso-tcpv4** (receive) and receive checksum offload: with
//!   [`NetConfig::large_receive`] (and scatter-gather) we offer both, and
//!   the backend may hand us TCP segments of up to 64 KiB whole, with a
//!   GSO extra-info slot, rather than cut them (Linux's netback sends any
//!   only to frontends taking checksum offload). A packet whose checksum
//!   the backend left blank (`NETRXF_csum_blank`) has it computed here
//!   before smoltcp, which checks every checksum, sees it; one that is not
//!   TCP or UDP over IPv4 is dropped, as is one whose GSO slot has a zero
//!   size or an unknown type. Without `large_receive`:
//!   `feature-no-csum-offload=1`, and every packet comes link-sized with
//!   complete checksums.
//! - We send complete checksums (smoltcp computes them).
//! - Other extra-info slots in received packets are checked and skipped.
//!
//! # Driving it
//! A [`Netfront`] is a smoltcp `Device`: `Interface::poll` moves packets,
//! without blocking and without allocating (packets are copied between
//! preallocated private buffers and the granted pages; smoltcp never sees
//! shared memory). Everything that needs xenstore — connecting, noticing
//! that the backend went away, tearing down, reconnecting, reporting a
//! fatal error — happens in [`Netfront::wait`] (or [`wait_any`] for several
//! vifs), the one `await` point of an application's loop:
//!
//! ```
//! use core::time::Duration;
//! use smoltcp::iface::{Config, Interface, SocketSet};
//! use smoltcp::time::Instant as SmolInstant;
//! use smoltcp::wire::{IpCidr, Ipv4Address};
//! use xenpal_drivers::net::{NetConfig, Netfront};
//! use xenpal_sim::backends::net::NetBackend;
//! use xenpal_sim::hal::Clock;
//! use xenpal_sim::{DomainConfig, Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! let net = NetBackend::new(); // dom0: netback and a switch
//! let guest = sim
//!     .spawn(DomainConfig::new("guest"), |p| async move {
//!         let now = || SmolInstant::from_micros((p.timer().now().as_nanos() / 1000) as i64);
//!         let soon = |ms| p.timer().now() + Duration::from_millis(ms);
//!         let mut nic = Netfront::open(&p, "0", NetConfig::default()).await.unwrap();
//!         nic.wait_up(soon(5000)).await.unwrap();
//!         let mut iface = Interface::new(Config::new(nic.hardware_address()), &mut nic, now());
//!         iface.update_ip_addrs(|a| {
//!             a.push(IpCidr::new(Ipv4Address::new(10, 0, 0, 1).into(), 24)).unwrap();
//!         });
//!         let mut sockets = SocketSet::new(vec![]);
//!         for _ in 0..10 {
//!             iface.poll(now(), &mut nic, &mut sockets);
//!             // ... use the sockets ...
//!             let delay = iface.poll_delay(now(), &sockets).map_or(50, |d| d.total_millis());
//!             nic.wait(soon(delay.min(50))).await; // events, timeouts, xenbus work
//!         }
//!         nic.close(soon(5000)).await.unwrap();
//!     })
//!     .unwrap();
//! net.add_vif(&sim, guest, 0, [0x00, 0x16, 0x3e, 0, 0, 1]).unwrap(); // the toolstack's part
//! net.spawn(&mut sim).unwrap();
//! assert!(sim.run().all_clean());
//! ```
//!
//! `wait` returns when the backend signalled the event channel, when
//! `deadline` passed, or when the link changed state; in between it runs
//! the xenbus state machine. Several vifs in one guest are waited on
//! together with [`wait_any`], since a guest is one task and each `wait`
//! listens to its own channel only.
//!
//! # Link states
//! ```text
//! Initialising --backend InitWait--> Connecting --backend Connected--> Up
//!      ^                                  |                             |
//!      |            backend Closing/Closed/gone, or InitWait again      |
//!      +------ (grants ended, pages freed) <------ Draining <-----------+
//! any --hostile backend or setup error--> Failed (stays down)
//! any --close()--> Closed
//! ```
//! A backend that restarts is followed: rings, buffers and the channel are
//! given back (ending each grant, retried while the backend still maps or
//! copies it), and a fresh connection is made when the backend is back in
//! `InitWait`. TCP connections survive as long as their retransmissions do.
//!
//! # Hostile backends
//! Every response is copied out of the ring once and checked: an id we did
//! not send, a status or length impossible for the slot, a runaway producer
//! index. Any of these is a [`Violation`]: the vif goes to
//! [`LinkState::Failed`] with [`NetError::Backend`], logs it at `error`,
//! writes it to the frontend's `error` node, switches to `Closing` so that
//! the backend lets go, and gives everything back. The guest keeps running;
//! [`Netfront::error`] reports what happened. The vif stays down until the
//! application calls [`Netfront::restart`].

mod device;
mod front;
mod gso;
mod rings;

pub use device::{NetRxToken, NetTxToken};
pub use front::{Netfront, vif_ids, wait_any};

use crate::xenbus::XenbusError;
use alloc::string::String;
use core::fmt;
use hal::{AllocError, EventError, GrantError, RingError};
use xen_pv::xenstore::XsError;

/// Largest Ethernet frame, header included: what the first transmit slot's
/// 16-bit `size` can describe (`XEN_NETIF_MAX_TX_SIZE`).
#[doc(alias = "XEN_NETIF_MAX_TX_SIZE")]
pub const MAX_FRAME: usize = xen_pv::abi::io::XEN_NETIF_MAX_TX_SIZE;

/// Largest Ethernet frame we take from the backend: a whole IPv4 packet
/// (65535 bytes at most) behind its Ethernet header. A large segment that
/// Linux's netback hands on whole may be a little longer than
/// [`MAX_FRAME`].
pub const MAX_RX_FRAME: usize = 65535 + ETHERNET_HEADER;

/// Length of an Ethernet header.
pub const ETHERNET_HEADER: usize = 14;

/// Largest number of slots one received packet may use (data and
/// extra-info slots together). A 64 KiB packet needs 17; more is a broken
/// backend.
pub const MAX_RX_SLOTS: usize = 32;

/// Tuning of a [`Netfront`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Pages posted for receiving (at most the ring size, 256). Each holds
    /// one slot of a packet; 64 KiB packets use 17.
    pub rx_buffers: u16,
    /// Pages for transmitting (at least 17, so that a 64 KiB packet fits).
    pub tx_buffers: u16,
    /// IP MTU. `None`: the toolstack's `mtu` node, else 1500. At most
    /// [`MAX_FRAME`] − 14; without scatter-gather, at most one page − 14.
    pub mtu: Option<usize>,
    /// Offer and use scatter-gather (`feature-sg`).
    #[doc(alias = "feature-sg")]
    pub scatter_gather: bool,
    /// Send TCP segments of up to 64 KiB for the backend to cut to the
    /// link's MTU, if it offers `feature-gso-tcpv4` (needs
    /// scatter-gather). See the module documentation.
    #[doc(alias = "feature-gso-tcpv4")]
    pub large_send: bool,
    /// Offer to receive TCP segments of up to 64 KiB (`feature-gso-tcpv4`
    /// on our side, with receive checksum offload, which Linux's netback
    /// needs before it sends any; needs scatter-gather). Off: every packet
    /// comes link-sized with its checksums complete
    /// (`feature-no-csum-offload=1`).
    #[doc(alias = "feature-no-csum-offload")]
    pub large_receive: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            rx_buffers: 64,
            tx_buffers: 64,
            mtu: None,
            scatter_gather: true,
            large_send: true,
            large_receive: true,
        }
    }
}

/// Where a vif is in its life; see the [module documentation](self).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting for the backend to publish its features (`InitWait`).
    Initialising,
    /// Rings and channel offered (our state `Connected`); waiting for the
    /// backend to connect.
    Connecting,
    /// Both ends connected: packets flow.
    Up,
    /// The backend went away; giving back grants and pages before
    /// reconnecting.
    Draining,
    /// A fatal error (see [`Netfront::error`]); down until
    /// [`Netfront::restart`].
    Failed,
    /// Closed by [`Netfront::close`].
    Closed,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which ring a [`Violation`] happened on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// The transmit ring.
    Tx,
    /// The receive ring.
    Rx,
}

/// Something a correct backend never does. Any of these disconnects the vif
/// ([`NetError::Backend`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The producer index ran past what we asked for
    /// ([`RingError::Overrun`]).
    Overrun(RingKind, RingError),
    /// A transmit response names an id that is not in flight (never sent,
    /// or already answered).
    UnknownTxId(u16),
    /// A transmit response has a status other than `NETIF_RSP_OKAY`,
    /// `_ERROR` or `_DROPPED`, or `_NULL` with no extra-info slot of ours
    /// unanswered.
    BadTxStatus {
        /// The request id.
        id: u16,
        /// The status.
        status: i16,
    },
    /// A receive response's id is not the id of the request in its slot
    /// (netif.h requires responses in the slots of their requests).
    UnknownRxId {
        /// The ring slot.
        slot: u16,
        /// The id found.
        id: u16,
    },
    /// A receive response's status is negative but not `NETIF_RSP_ERROR` or
    /// `_DROPPED`.
    BadRxStatus(i16),
    /// A receive response's data (`offset` + `status` bytes) does not fit in
    /// its page.
    RxOutsidePage {
        /// The offset.
        offset: u16,
        /// The length.
        len: u16,
    },
    /// A received packet is longer than [`MAX_RX_FRAME`].
    RxTooLong(usize),
    /// A received packet spans more than [`MAX_RX_SLOTS`] slots.
    RxTooManySlots,
    /// An extra-info slot of an unknown type, or extra info announced on a
    /// slot other than a packet's first.
    BadExtraInfo(u8),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Overrun(ring, e) => write!(f, "{ring:?} ring: {e}"),
            Violation::UnknownTxId(id) => write!(f, "tx response for id {id}, not in flight"),
            Violation::BadTxStatus { id, status } => {
                write!(f, "tx response for id {id} with impossible status {status}")
            }
            Violation::UnknownRxId { slot, id } => {
                write!(f, "rx response in slot {slot} carries unknown id {id}")
            }
            Violation::BadRxStatus(s) => write!(f, "rx response with impossible status {s}"),
            Violation::RxOutsidePage { offset, len } => {
                write!(
                    f,
                    "rx response of {len} bytes at offset {offset} overruns its page"
                )
            }
            Violation::RxTooLong(n) => write!(f, "rx packet of {n} bytes exceeds 65535"),
            Violation::RxTooManySlots => {
                write!(f, "rx packet spans more than {MAX_RX_SLOTS} slots")
            }
            Violation::BadExtraInfo(t) => write!(f, "bad rx extra-info slot (type {t})"),
        }
    }
}

/// Why a vif failed or an operation on it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The guest has no xenstore, so no vif.
    NoXenstore,
    /// xenbus: a required node missing or malformed, or the backend gone
    /// while we waited for it.
    Xenbus(XenbusError),
    /// xenstore failed.
    Xenstore(XsError),
    /// Granting or ending a grant failed (e.g. the grant table is full).
    Grant(GrantError),
    /// An event-channel operation failed.
    Event(EventError),
    /// No guest memory for rings or buffers.
    Alloc(AllocError),
    /// The backend lacks something we require (the feature's name), such as
    /// `feature-rx-copy`.
    Unsupported(&'static str),
    /// The `mac` node is missing or not six hex bytes (its value).
    BadMac(String),
    /// The backend broke the protocol.
    Backend(Violation),
    /// A deadline passed first (in [`Netfront::wait_up`] or
    /// [`Netfront::close`]).
    Timeout,
    /// The vif failed earlier ([`LinkState::Failed`]) or was closed.
    Down(LinkState),
    /// Grants the backend still holds at [`Netfront::close`]'s deadline;
    /// their pages stay allocated.
    GrantsInUse(usize),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoXenstore => f.write_str("this guest has no xenstore"),
            NetError::Xenbus(e) => write!(f, "{e}"),
            NetError::Xenstore(e) => write!(f, "{e}"),
            NetError::Grant(e) => write!(f, "grant: {e}"),
            NetError::Event(e) => write!(f, "event channel: {e}"),
            NetError::Alloc(e) => write!(f, "allocating pages: {e}"),
            NetError::Unsupported(what) => write!(f, "backend lacks {what}"),
            NetError::BadMac(v) => write!(f, "bad mac node {v:?}"),
            NetError::Backend(v) => write!(f, "hostile or broken backend: {v}"),
            NetError::Timeout => f.write_str("timed out"),
            NetError::Down(s) => write!(f, "vif is down ({s})"),
            NetError::GrantsInUse(n) => write!(f, "backend still holds {n} grants"),
        }
    }
}

impl core::error::Error for NetError {}

impl From<XenbusError> for NetError {
    fn from(e: XenbusError) -> Self {
        NetError::Xenbus(e)
    }
}
impl From<XsError> for NetError {
    fn from(e: XsError) -> Self {
        NetError::Xenstore(e)
    }
}
impl From<GrantError> for NetError {
    fn from(e: GrantError) -> Self {
        NetError::Grant(e)
    }
}
impl From<EventError> for NetError {
    fn from(e: EventError) -> Self {
        NetError::Event(e)
    }
}
impl From<AllocError> for NetError {
    fn from(e: AllocError) -> Self {
        NetError::Alloc(e)
    }
}

/// Counters of one vif (since [`Netfront::open`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets handed to smoltcp.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Received packets dropped: the backend marked them as errors, or
    /// left the checksum of a packet that is not TCP or UDP over IPv4 for
    /// us to fill in, or described a large segment with a zero size or an
    /// unknown type.
    pub rx_dropped: u64,
    /// Of the packets handed to smoltcp, TCP segments that came whole with
    /// a GSO extra-info slot ([`NetConfig::large_receive`]).
    pub rx_large: u64,
    /// Packets given to the backend.
    pub tx_packets: u64,
    /// Of those, TCP segments longer than the link's MTU, for the backend
    /// to cut (GSO).
    pub tx_large: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets not sent: no buffer or ring space, too long, or link down.
    pub tx_dropped: u64,
    /// Transmit responses with `NETIF_RSP_ERROR` or `_DROPPED`.
    pub tx_errors: u64,
    /// Times the link came up.
    pub connects: u64,
    /// Times the link went down (backend gone, failure, close).
    pub disconnects: u64,
}

/// Parse a MAC address written as six `:`-separated hex bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("00:16:3e:0a:Bc:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff])
        );
        assert_eq!(parse_mac("00:16:3e:0a:bc"), None);
        assert_eq!(parse_mac("00:16:3e:0a:bc:ff:00"), None);
        assert_eq!(parse_mac("00:16:3e:0a:bc:fff"), None);
        assert_eq!(parse_mac("00:16:3e:0a:bc:zz"), None);
    }
}
