//! Why netback gave up on a vif ([`VifError`]), or on the whole network
//! ([`NetbackError`]).

use super::netback::MAX_TX_SLOTS;
use hal::mem::AllocError;
use hal::{EventError, GrantError, RingError};
use std::fmt;
use xen_pv::xenstore::XsError;
use xenpal_drivers::xenbus::XenbusError;

/// Why netback gave up on a vif's frontend: connecting to it failed, or it
/// broke the `netif` protocol. The vif is disconnected, its backend writes
/// the message to its `error` node and goes `Closing`; other vifs are
/// unaffected. Shown in [`VifStatus::error`](super::VifStatus::error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VifError {
    /// A node the frontend must write to connect (`tx-ring-ref`,
    /// `rx-ring-ref`, `event-channel`) is absent.
    MissingNode {
        /// The node, relative to the frontend's directory.
        key: &'static str,
    },
    /// Such a node does not fit 32 bits.
    NodeOutOfRange {
        /// The node.
        key: &'static str,
        /// Its value.
        value: u64,
    },
    /// Such a node could not be read, or is not a number
    /// ([`XenbusError::BadNode`]).
    BadNode {
        /// The node.
        key: &'static str,
        /// Why.
        source: XenbusError,
    },
    /// Another xenstore request while connecting failed (reading
    /// `request-rx-copy` or a feature, writing our `Connected` state).
    Xenstore(XsError),
    /// The frontend does not set `request-rx-copy`: it wants page
    /// flipping, which netback does not offer.
    NoRxCopy,
    /// The frontend asks for more than the one queue netback offers.
    MultiQueue {
        /// `multi-queue-num-queues`.
        queues: u64,
    },
    /// The frontend's transmit ring page could not be mapped.
    MapTxRing {
        /// `tx-ring-ref`.
        gref: u32,
        /// The grant table's error.
        source: GrantError,
    },
    /// The frontend's receive ring page could not be mapped.
    MapRxRing {
        /// `rx-ring-ref`.
        gref: u32,
        /// The grant table's error.
        source: GrantError,
    },
    /// The frontend's event channel could not be bound.
    BindEventChannel {
        /// `event-channel`.
        port: u32,
        /// The event channel's error.
        source: EventError,
    },
    /// The mapped ring pages cannot hold a ring.
    RingTooSmall,
    /// The transmit ring broke (a runaway producer index).
    TxRing(RingError),
    /// The receive ring broke (a runaway producer index).
    RxRing(RingError),
    /// Receive requests the ring announced were not there to take.
    RxRequestsVanished,
    /// An extra-info slot could not be read.
    BadExtraInfo,
    /// An extra-info slot of a type `netif.h` does not define.
    UnknownExtraInfo {
        /// Its type.
        type_: u8,
    },
    /// A GSO extra-info slot with size 0 or a protocol other than TCPv4
    /// or TCPv6 (fatal in Linux's netback too).
    BadGso {
        /// Its segment size.
        size: u16,
        /// Its `XEN_NETIF_GSO_TYPE_*`.
        kind: u8,
    },
    /// A transmitted packet uses more than [`MAX_TX_SLOTS`] slots.
    TooManySlots,
    /// A packet's first transmit slot gives a smaller total size than its
    /// later slots hold.
    InconsistentSizes {
        /// The first slot's size (the packet's).
        total: usize,
        /// The sum of the later slots' sizes.
        rest: usize,
    },
    /// A transmit slot's data crosses the end of its page.
    SlotCrossesPage {
        /// The slot's length.
        len: usize,
        /// Its offset in the page.
        offset: u16,
    },
}

impl fmt::Display for VifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VifError::MissingNode { key } => write!(f, "frontend has no {key}"),
            VifError::NodeOutOfRange { key, value } => {
                write!(f, "frontend {key} out of range ({value})")
            }
            VifError::BadNode { key, source } => write!(f, "frontend {key}: {source}"),
            VifError::Xenstore(e) => write!(f, "xenstore: {e}"),
            VifError::NoRxCopy => {
                f.write_str("frontend does not request rx-copy (page flipping is not supported)")
            }
            VifError::MultiQueue { queues } => {
                write!(f, "frontend asks for {queues} queues; one is supported")
            }
            VifError::MapTxRing { gref, source } => {
                write!(f, "mapping tx-ring-ref {gref}: {source}")
            }
            VifError::MapRxRing { gref, source } => {
                write!(f, "mapping rx-ring-ref {gref}: {source}")
            }
            VifError::BindEventChannel { port, source } => {
                write!(f, "binding event-channel {port}: {source}")
            }
            VifError::RingTooSmall => f.write_str("ring pages too small"),
            VifError::TxRing(e) => write!(f, "tx ring: {e}"),
            VifError::RxRing(e) => write!(f, "rx ring: {e}"),
            VifError::RxRequestsVanished => f.write_str("rx ring: requests vanished"),
            VifError::BadExtraInfo => f.write_str("bad extra-info slot"),
            VifError::UnknownExtraInfo { type_ } => {
                write!(f, "extra-info slot of unknown type {type_}")
            }
            VifError::BadGso { size, kind } => {
                write!(f, "GSO extra-info slot with size {size} and type {kind}")
            }
            VifError::TooManySlots => {
                write!(f, "a packet spans more than {MAX_TX_SLOTS} slots")
            }
            VifError::InconsistentSizes { total, rest } => write!(
                f,
                "first tx slot says {total} bytes, later slots hold {rest}"
            ),
            VifError::SlotCrossesPage { len, offset } => write!(
                f,
                "tx slot of {len} bytes at offset {offset} crosses its page"
            ),
        }
    }
}

impl std::error::Error for VifError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VifError::BadNode { source, .. } => Some(source),
            VifError::Xenstore(e) => Some(e),
            VifError::MapTxRing { source, .. } | VifError::MapRxRing { source, .. } => Some(source),
            VifError::BindEventChannel { source, .. } => Some(source),
            VifError::TxRing(e) | VifError::RxRing(e) => Some(e),
            _ => None,
        }
    }
}

/// Why dom0 could not run the network at all (then no vif is served).
/// Shown in [`NetSnapshot::error`](super::NetSnapshot::error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetbackError {
    /// dom0 has no xenstore.
    NoXenstore,
    /// A xenstore request failed: watching for vifs or for toolstack
    /// commands, or taking their events.
    Xenstore(XsError),
    /// No dom0 memory for the pages copies go through.
    StagingPages(AllocError),
}

impl fmt::Display for NetbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetbackError::NoXenstore => f.write_str("dom0 has no xenstore"),
            NetbackError::Xenstore(e) => write!(f, "xenstore: {e}"),
            NetbackError::StagingPages(e) => write!(f, "dom0 staging pages: {e}"),
        }
    }
}

impl std::error::Error for NetbackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetbackError::NoXenstore => None,
            NetbackError::Xenstore(e) => Some(e),
            NetbackError::StagingPages(e) => Some(e),
        }
    }
}
