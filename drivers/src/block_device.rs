//! The block-device interface our drivers implement, and the error type that
//! goes with it.
//!
//! A [`BlockDevice`] is a linear array of `info().sectors` *logical
//! sectors* of `info().sector_size` bytes each. The interface is `async`:
//! a guest is one cooperative task, and an operation lets other work run
//! while it waits for the device. (Drivers may also offer a synchronous
//! interface, such as `embedded_sdmmc::BlockDevice` for blkfront.)
//!
//! This documentation is normative: MUST and MAY bind implementations, and
//! every error an operation can return is listed with the condition that
//! causes it.
//!
//! # Units, buffers and alignment
//!
//! - Positions (`sector`) and counts are in **logical sectors** of
//!   [`BlockInfo::sector_size`] bytes — not necessarily 512.
//! - A data buffer's **length** MUST be a non-zero multiple of the sector
//!   size, else [`BlockError::BadLength`] and nothing is sent.
//! - A buffer's **address** needs no alignment. Implementations copy
//!   through memory of their own; they never lend the caller's buffer to
//!   another domain, and never hand out memory that another domain can
//!   write.
//! - An operation MUST NOT extend past the last sector, else
//!   [`BlockError::OutOfRange`] and nothing is sent.
//! - [`BlockInfo::physical_sector_size`] is a hint: writes aligned to it
//!   (and a multiple of it long) avoid read-modify-write cycles inside the
//!   device, and are the unit the device is likely to write atomically.
//!   Nothing is refused for not honouring it.
//!
//! # Durability
//!
//! A completed [`write`](BlockDevice::write) may sit in a volatile cache of
//! the device. It is durable (survives a crash of the device or of the
//! domain serving it) once a later [`flush`](BlockDevice::flush) has
//! completed. A device with neither [`BlockInfo::flush`] nor
//! [`BlockInfo::barrier`] has no volatile cache: its writes are durable
//! when they complete, and `flush` does nothing.
//!
//! # Failures
//!
//! If an operation fails, the data of a read is unspecified, and a write
//! may have reached none, some or all of its sectors. Nothing is retried
//! behind the caller's back.

use core::fmt;

/// What a block device is: its geometry and the operations it offers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes per logical sector: the unit of addressing and of transfers.
    /// A power of two, at least 512 (and, for blkfront, at most 4096).
    #[doc(alias = "sector-size")]
    pub sector_size: u32,
    /// Bytes per physical sector: a multiple of `sector_size`.
    #[doc(alias = "physical-sector-size")]
    pub physical_sector_size: u32,
    /// Number of logical sectors.
    pub sectors: u64,
    /// Writes and discards are refused ([`BlockError::ReadOnly`]).
    #[doc(alias = "VDISK_READONLY")]
    pub read_only: bool,
    /// The device offers a cache flush (`feature-flush-cache`).
    #[doc(alias = "feature-flush-cache")]
    pub flush: bool,
    /// The device offers write barriers (`feature-barrier`), which also
    /// flush its cache.
    #[doc(alias = "feature-barrier")]
    pub barrier: bool,
    /// The device offers discard (`feature-discard`), and how.
    #[doc(alias = "feature-discard")]
    pub discard: Option<DiscardInfo>,
}

impl BlockInfo {
    /// Size of the device in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors.saturating_mul(u64::from(self.sector_size))
    }

    /// Whether the device may hold completed writes in a volatile cache, so
    /// that [`BlockDevice::flush`] matters.
    pub fn has_volatile_cache(&self) -> bool {
        self.flush || self.barrier
    }
}

/// How a device discards.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DiscardInfo {
    /// Bytes per discard extent: the device may discard only whole extents
    /// and leave the rest of a range as it was.
    #[doc(alias = "discard-granularity")]
    pub granularity: u32,
    /// Offset in bytes of the first whole extent from the start of the
    /// device.
    #[doc(alias = "discard-alignment")]
    pub alignment: u32,
    /// Whether secure discard (destroying every copy) is offered.
    #[doc(alias = "discard-secure")]
    pub secure: bool,
}

/// An operation, as named in errors.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Reading sectors.
    Read,
    /// Writing sectors.
    Write,
    /// Flushing the volatile cache.
    Flush,
    /// Discarding sectors.
    Discard,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Flush => "flush",
            Operation::Discard => "discard",
        })
    }
}

/// Why a device is (or went) out of service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The driver was closed by its user.
    Closed,
    /// The backend left the connected state (its xenbus state, e.g.
    /// `Closing`, `Closed`, or `Unknown` if its directory is gone).
    BackendGone(xen_pv::xenbus::XenbusState),
    /// The backend broke the protocol: how (an unknown response id, an
    /// impossible status, a runaway producer index...). The driver
    /// disconnected the device.
    ProtocolViolation(crate::blk::ResponseError),
    /// Setting up, watching or closing the connection failed: a xenstore
    /// error, a malformed node, or no grant, page or port left; the
    /// [`SetupError`](crate::blk::SetupError) says which step and why.
    Setup(crate::blk::SetupError),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Closed => f.write_str("closed by its user"),
            DisconnectReason::BackendGone(s) => write!(f, "the backend went away (state {s})"),
            DisconnectReason::ProtocolViolation(why) => {
                write!(f, "the backend broke the protocol: {why}")
            }
            DisconnectReason::Setup(why) => write!(f, "connection setup failed: {why}"),
        }
    }
}

impl core::error::Error for DisconnectReason {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DisconnectReason::ProtocolViolation(e) => Some(e),
            DisconnectReason::Setup(e) => Some(e),
            DisconnectReason::Closed | DisconnectReason::BackendGone(_) => None,
        }
    }
}

/// Why a block operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The buffer length (or sector count) is zero or not a multiple of the
    /// sector size. Nothing was sent.
    BadLength {
        /// The length given, in bytes.
        len: usize,
        /// The device's sector size.
        sector_size: u32,
    },
    /// The operation extends past the end of the device (or its sector
    /// arithmetic overflows). Nothing was sent.
    OutOfRange {
        /// First sector of the operation.
        sector: u64,
        /// Sectors in the operation.
        count: u64,
        /// Sectors on the device.
        sectors: u64,
    },
    /// A write or discard on a read-only device. Refused locally: nothing
    /// was sent.
    ReadOnly,
    /// The device does not offer this operation ([`BlockInfo`] says so, and
    /// nothing was sent), or the backend answered that it does not support
    /// it.
    Unsupported(Operation),
    /// The device reported an I/O error for (part of) the operation.
    Io(Operation),
    /// The device is not connected, or its connection was lost while the
    /// operation was in flight: the reason. Requests in flight fail this
    /// way and are not retried.
    Disconnected(DisconnectReason),
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::BadLength { len, sector_size } => write!(
                f,
                "length {len} is not a non-zero multiple of the sector size {sector_size}"
            ),
            BlockError::OutOfRange {
                sector,
                count,
                sectors,
            } => write!(
                f,
                "sectors {sector}+{count} are beyond the end of the device ({sectors} sectors)"
            ),
            BlockError::ReadOnly => f.write_str("the device is read-only"),
            BlockError::Unsupported(op) => write!(f, "the device does not support {op}"),
            BlockError::Io(op) => write!(f, "the device reported an I/O error on {op}"),
            BlockError::Disconnected(why) => write!(f, "the device is disconnected: {why}"),
        }
    }
}

impl core::error::Error for BlockError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            BlockError::Disconnected(why) => Some(why),
            _ => None,
        }
    }
}

/// A block device: see the [module documentation](self) for units,
/// alignment and durability.
///
/// Operations take `&self`: several may be in flight at once (from futures
/// joined in one task), and each completes independently.
///
/// The futures are not `Send`: a guest is one task on one vCPU, and drivers
/// keep their state in `Rc`/`RefCell`.
#[allow(async_fn_in_trait)]
pub trait BlockDevice {
    /// The device's geometry and features, as of its current (or last)
    /// connection. Never fails.
    fn info(&self) -> BlockInfo;

    /// Read `buf.len()` bytes from sector `sector` on.
    ///
    /// Errors: [`BlockError::BadLength`]; [`BlockError::OutOfRange`];
    /// [`BlockError::Io`] if the device failed (`buf` is then unspecified);
    /// [`BlockError::Disconnected`].
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Write `buf` from sector `sector` on. Durable after a later
    /// [`flush`](Self::flush) completes (see the module documentation).
    ///
    /// Errors: [`BlockError::BadLength`]; [`BlockError::OutOfRange`];
    /// [`BlockError::ReadOnly`]; [`BlockError::Io`] if the device failed
    /// (some sectors may have been written); [`BlockError::Disconnected`].
    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;

    /// Make every write that completed before this call durable. Does
    /// nothing (and succeeds) on a device without a volatile cache.
    ///
    /// Errors: [`BlockError::Unsupported`] if the backend answered that it
    /// cannot flush after all; [`BlockError::Io`];
    /// [`BlockError::Disconnected`].
    async fn flush(&self) -> Result<(), BlockError>;

    /// Tell the device that `count` sectors from `sector` on are no longer
    /// in use. Their contents are unspecified until written again: reads
    /// may return the old data or zeros (the device may discard only whole
    /// extents, see [`DiscardInfo`]).
    ///
    /// Errors: [`BlockError::BadLength`] if `count` is 0;
    /// [`BlockError::OutOfRange`]; [`BlockError::ReadOnly`];
    /// [`BlockError::Unsupported`] if the device does not offer discard (or
    /// answered that it does not support it); [`BlockError::Io`];
    /// [`BlockError::Disconnected`].
    async fn discard(&self, sector: u64, count: u64) -> Result<(), BlockError>;
}
