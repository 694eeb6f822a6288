//! Why a disk could not be connected, watched or closed: the error
//! [`DisconnectReason::Setup`](crate::block_device::DisconnectReason::Setup)
//! carries.

use super::conn::ConnError;
use crate::xenbus::XenbusError;
use alloc::string::String;
use core::fmt;
use xen_pv::xenstore::XsError;

/// Why setting up, watching or closing a disk's connection failed: which
/// step, and the xenstore error, malformed backend node or exhausted
/// resource behind it. Carried by
/// [`DisconnectReason::Setup`](crate::block_device::DisconnectReason::Setup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The guest has no xenstore (its platform was built without one).
    NoXenstore,
    /// Listing `device/vbd` failed ([`vbd_ids`](super::vbd_ids)).
    ListDevices(XsError),
    /// Opening `device/vbd/<id>` failed: its `backend` or `backend-id`
    /// node is missing or malformed, or xenstore failed.
    OpenDevice(XenbusError),
    /// Setting up or taking the watch on the backend's state failed.
    WatchBackend(XsError),
    /// Reading the backend's xenbus state failed.
    ReadBackendState(XsError),
    /// Reading our own xenbus state failed.
    ReadOwnState(XsError),
    /// Writing our xenbus state failed.
    SwitchState(XsError),
    /// A numeric backend node (`max-ring-page-order`, `sectors`,
    /// `sector-size`, ...) could not be read, or is not a number
    /// ([`XenbusError::BadNode`], which names its path).
    BackendNode {
        /// The node, relative to the backend's directory.
        key: String,
        /// Why.
        source: XenbusError,
    },
    /// A backend feature node (`feature-flush-cache`, ...) could not be
    /// read.
    BackendFeature {
        /// The node, relative to the backend's directory.
        key: String,
        /// The xenstore error.
        source: XsError,
    },
    /// Starting the transaction that advertises the ring failed.
    StartTransaction(XsError),
    /// Writing the ring's nodes (`ring-ref`, `event-channel`, ...) failed.
    WriteRingDetails(XsError),
    /// Committing the ring's nodes failed (otherwise than by a conflict).
    CommitRingDetails(XsError),
    /// The transaction advertising the ring conflicted with other writers
    /// at every one of its attempts.
    TransactionConflicts {
        /// Attempts made.
        attempts: u32,
    },
    /// The connection's ring, event channel, data or indirect pages could
    /// not be set up: what ran out.
    Conn(ConnError),
    /// The connected backend has no `sectors` node.
    NoSectors {
        /// The backend's directory.
        backend: String,
    },
    /// The backend's `sector-size` is not a power of two from 512 to 4096.
    SectorSize {
        /// The backend's directory.
        backend: String,
        /// The node's value.
        value: u64,
    },
    /// The backend's `physical-sector-size` is below `sector-size`, not a
    /// multiple of it, or above `u32::MAX`.
    PhysicalSectorSize {
        /// The backend's directory.
        backend: String,
        /// The node's value.
        value: u64,
        /// The (valid) `sector-size`.
        sector_size: u64,
    },
    /// The backend's `sectors` times `sector-size` overflows 64 bits.
    SizeOverflow {
        /// The backend's directory.
        backend: String,
        /// The `sectors` node's value.
        sectors: u64,
        /// The `sector-size` node's value.
        sector_size: u64,
    },
    /// The backend's `discard-granularity` does not fit 32 bits.
    DiscardGranularity {
        /// The backend's directory.
        backend: String,
        /// The node's value.
        value: u64,
    },
    /// The backend's `discard-alignment` does not fit 32 bits.
    DiscardAlignment {
        /// The backend's directory.
        backend: String,
        /// The node's value.
        value: u64,
    },
    /// [`close`](super::Blkfront::close): the backend still maps pages of
    /// ours after closing; they stay granted (see
    /// [`held_pages`](super::Blkfront::held_pages)).
    PagesHeld {
        /// Pages still mapped.
        pages: usize,
    },
    /// The disk was opened but has not connected yet (the reason a
    /// [`Blkfront`](super::Blkfront) reports before its first connection).
    NotConnectedYet,
    /// The disk reconnected while a request was in flight on the old
    /// connection; the request failed and was not retried.
    ConnectionReplaced,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::NoXenstore => f.write_str("this guest has no xenstore"),
            SetupError::ListDevices(e) => write!(f, "listing device/vbd: {e}"),
            SetupError::OpenDevice(e) => write!(f, "opening the device: {e}"),
            SetupError::WatchBackend(e) => write!(f, "watching the backend: {e}"),
            SetupError::ReadBackendState(e) => write!(f, "reading the backend's state: {e}"),
            SetupError::ReadOwnState(e) => write!(f, "reading our state: {e}"),
            SetupError::SwitchState(e) => write!(f, "switching state: {e}"),
            // A bad node's error names its path already.
            SetupError::BackendNode {
                source: source @ XenbusError::BadNode(..),
                ..
            } => source.fmt(f),
            SetupError::BackendNode { key, source } => write!(f, "{key}: {source}"),
            SetupError::BackendFeature { key, source } => write!(f, "{key}: {source}"),
            SetupError::StartTransaction(e) => write!(f, "starting a transaction: {e}"),
            SetupError::WriteRingDetails(e) => write!(f, "writing the ring details: {e}"),
            SetupError::CommitRingDetails(e) => write!(f, "committing the ring details: {e}"),
            SetupError::TransactionConflicts { attempts } => write!(
                f,
                "writing the ring details: the transaction kept conflicting ({attempts} attempts)"
            ),
            SetupError::Conn(e) => e.fmt(f),
            SetupError::NoSectors { backend } => {
                write!(f, "backend {backend}: no `sectors` node")
            }
            SetupError::SectorSize { backend, value } => write!(
                f,
                "backend {backend}: `sector-size` {value} is not a power of two from 512 to 4096"
            ),
            SetupError::PhysicalSectorSize {
                backend,
                value,
                sector_size,
            } => write!(
                f,
                "backend {backend}: `physical-sector-size` {value} is not a multiple of `sector-size` {sector_size}"
            ),
            SetupError::SizeOverflow {
                backend,
                sectors,
                sector_size,
            } => write!(
                f,
                "backend {backend}: `sectors` {sectors} times `sector-size` {sector_size} overflows"
            ),
            SetupError::DiscardGranularity { backend, value } => write!(
                f,
                "backend {backend}: `discard-granularity` {value} is out of range"
            ),
            SetupError::DiscardAlignment { backend, value } => write!(
                f,
                "backend {backend}: `discard-alignment` {value} is out of range"
            ),
            SetupError::PagesHeld { pages } => write!(
                f,
                "the backend still maps {pages} of our pages after closing"
            ),
            SetupError::NotConnectedYet => f.write_str("not connected yet"),
            SetupError::ConnectionReplaced => {
                f.write_str("the connection was replaced while the request was in flight")
            }
        }
    }
}

impl core::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SetupError::ListDevices(e)
            | SetupError::WatchBackend(e)
            | SetupError::ReadBackendState(e)
            | SetupError::ReadOwnState(e)
            | SetupError::SwitchState(e)
            | SetupError::BackendFeature { source: e, .. }
            | SetupError::StartTransaction(e)
            | SetupError::WriteRingDetails(e)
            | SetupError::CommitRingDetails(e) => Some(e),
            SetupError::OpenDevice(e) | SetupError::BackendNode { source: e, .. } => Some(e),
            SetupError::Conn(e) => Some(e),
            SetupError::NoXenstore
            | SetupError::TransactionConflicts { .. }
            | SetupError::NoSectors { .. }
            | SetupError::SectorSize { .. }
            | SetupError::PhysicalSectorSize { .. }
            | SetupError::SizeOverflow { .. }
            | SetupError::DiscardGranularity { .. }
            | SetupError::DiscardAlignment { .. }
            | SetupError::PagesHeld { .. }
            | SetupError::NotConnectedYet
            | SetupError::ConnectionReplaced => None,
        }
    }
}
