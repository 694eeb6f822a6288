//! Device protocols (`xen/include/public/io/`): xenstore's wire format, the PV
//! console page, netif and blkif.

use super::GrantRefRaw;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------
// xs_wire.h

/// xenstore message types (`enum xsd_sockmsg_type`).
pub mod xs {
    #![allow(missing_docs)]
    pub const CONTROL: u32 = 0;
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const GET_PERMS: u32 = 3;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const INTRODUCE: u32 = 8;
    pub const RELEASE: u32 = 9;
    pub const GET_DOMAIN_PATH: u32 = 10;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const SET_PERMS: u32 = 14;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    pub const RESUME: u32 = 18;
    pub const SET_TARGET: u32 = 19;
    pub const RESET_WATCHES: u32 = 21;
    pub const DIRECTORY_PART: u32 = 22;
    pub const TYPE_COUNT: u32 = 23;
    pub const INVALID: u32 = 0xffff;
}

/// Header of every xenstore message (`xsd_sockmsg`), followed by `len` bytes.
#[doc(alias = "xsd_sockmsg")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct XsdSockmsg {
    /// `XS_*`.
    pub type_: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0: none).
    pub tx_id: u32,
    /// Bytes of payload following.
    pub len: u32,
}

/// Size of each xenstore ring (`XENSTORE_RING_SIZE`).
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// `server_features` bit: the ring may be reconnected.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features` bit: the `error` field is used.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `connection`: steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: reconnection in progress.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// The xenstore page shared by a domain and xenstored
/// (`xenstore_domain_interface`).
#[doc(alias = "xenstore_domain_interface")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to xenstored.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Request consumer (xenstored).
    pub req_cons: u32,
    /// Request producer (guest).
    pub req_prod: u32,
    /// Reply consumer (guest).
    pub rsp_cons: u32,
    /// Reply producer (xenstored).
    pub rsp_prod: u32,
    /// `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
}

// ---------------------------------------------------------------------------
// console.h

/// The PV console page (`xencons_interface`).
#[doc(alias = "xencons_interface")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenconsInterface {
    /// Input ring (backend to guest).
    pub in_: [u8; 1024],
    /// Output ring (guest to backend).
    pub out: [u8; 2048],
    /// Input consumer (guest).
    pub in_cons: u32,
    /// Input producer (backend).
    pub in_prod: u32,
    /// Output consumer (backend).
    pub out_cons: u32,
    /// Output producer (guest).
    pub out_prod: u32,
}

// ---------------------------------------------------------------------------
// netif.h

/// Flags of a transmit request (`NETTXF_*`).
pub mod nettxf {
    #![allow(missing_docs)]
    pub const CSUM_BLANK: u16 = 1 << 0;
    pub const DATA_VALIDATED: u16 = 1 << 1;
    pub const MORE_DATA: u16 = 1 << 2;
    pub const EXTRA_INFO: u16 = 1 << 3;
}

/// Flags of a receive response (`NETRXF_*`).
pub mod netrxf {
    #![allow(missing_docs)]
    pub const DATA_VALIDATED: u16 = 1 << 0;
    pub const CSUM_BLANK: u16 = 1 << 1;
    pub const MORE_DATA: u16 = 1 << 2;
    pub const EXTRA_INFO: u16 = 1 << 3;
    pub const GSO_PREFIX: u16 = 1 << 4;
}

/// Status of a netif response (`NETIF_RSP_*`).
pub mod netif_rsp {
    #![allow(missing_docs)]
    pub const DROPPED: i16 = -2;
    pub const ERROR: i16 = -1;
    pub const OKAY: i16 = 0;
    pub const NULL: i16 = 1;
}

/// Types of extra-info slots (`XEN_NETIF_EXTRA_TYPE_*`).
pub mod netif_extra {
    #![allow(missing_docs)]
    pub const TYPE_NONE: u8 = 0;
    pub const TYPE_GSO: u8 = 1;
    pub const TYPE_MCAST_ADD: u8 = 2;
    pub const TYPE_MCAST_DEL: u8 = 3;
    pub const TYPE_HASH: u8 = 4;
    pub const TYPE_MAX: u8 = 5;
    /// Another extra-info slot follows.
    pub const FLAG_MORE: u8 = 1 << 0;
    /// GSO of no protocol (`XEN_NETIF_GSO_TYPE_NONE`).
    pub const GSO_TYPE_NONE: u8 = 0;
    /// GSO of TCP in IPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`).
    pub const GSO_TYPE_TCPV4: u8 = 1;
    /// GSO of TCP in IPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`).
    pub const GSO_TYPE_TCPV6: u8 = 2;
}

/// Minimum slots a packet may use before a backend may consider the
/// frontend malicious (`XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// Largest packet on the transmit side (`XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;

/// A transmit request (`netif_tx_request`), 12 bytes.
#[doc(alias = "netif_tx_request")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Grant of the page holding the data.
    pub gref: GrantRefRaw,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot of a packet: the whole packet's size; others: this slot's.
    pub size: u16,
}

/// An extra-info slot (`netif_extra_info`), 8 bytes; the union `u` as bytes.
///
/// Aligned to 2 like the C type, whose union has `uint16_t` members.
#[doc(alias = "netif_extra_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(2))]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union: for GSO, `size` (u16 LE), `type`, `pad`, `features` (u16).
    pub u: [u8; 6],
}

/// A transmit response (`netif_tx_response`), 4 bytes.
#[doc(alias = "netif_tx_response")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// A receive request (`netif_rx_request`): a page offered for one slot.
#[doc(alias = "netif_rx_request")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// Grant of the page to receive into.
    pub gref: GrantRefRaw,
}

/// A receive response (`netif_rx_response`).
#[doc(alias = "netif_rx_response")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's id.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received (> 0), or `NETIF_RSP_*` (< 0).
    pub status: i16,
}

// ---------------------------------------------------------------------------
// blkif.h

/// Block operations (`BLKIF_OP_*`).
pub mod blkif_op {
    #![allow(missing_docs)]
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const WRITE_BARRIER: u8 = 2;
    pub const FLUSH_DISKCACHE: u8 = 3;
    pub const DISCARD: u8 = 5;
    pub const INDIRECT: u8 = 6;
}

/// Status of a block response (`BLKIF_RSP_*`).
pub mod blkif_rsp {
    #![allow(missing_docs)]
    pub const EOPNOTSUPP: i16 = -2;
    pub const ERROR: i16 = -1;
    pub const OKAY: i16 = 0;
}

/// Segments in a direct request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Indirect pages in an indirect request
/// (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segment descriptors per indirect page (4096 / 8).
pub const BLKIF_SEGS_PER_INDIRECT_FRAME: usize = 4096 / core::mem::size_of::<BlkifRequestSegment>();
/// `discard` flag: securely erase.
pub const BLKIF_DISCARD_SECURE: u8 = 1;
/// `info` bits in xenstore (`VDISK_*`).
pub mod vdisk {
    #![allow(missing_docs)]
    pub const CDROM: u32 = 0x1;
    pub const REMOVABLE: u32 = 0x2;
    pub const READONLY: u32 = 0x4;
}

/// One segment: sectors `first_sect..=last_sect` of a granted page
/// (`blkif_request_segment`). Sectors here are always 512 bytes.
#[doc(alias = "blkif_request_segment")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// Grant of the data page.
    pub gref: GrantRefRaw,
    /// First 512-byte sector in the page.
    pub first_sect: u8,
    /// Last 512-byte sector in the page (inclusive).
    pub last_sect: u8,
    /// Padding.
    pub _pad0: u16,
}

/// A read/write/flush/barrier request (`blkif_request`), 112 bytes.
#[doc(alias = "blkif_request")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Segments used.
    pub nr_segments: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding.
    pub _pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector (512 bytes) on the disk.
    pub sector_number: u64,
    /// The segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// A discard request (`blkif_request_discard`), sharing a slot with
/// [`BlkifRequest`].
#[doc(alias = "blkif_request_discard")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_SECURE` or 0.
    pub flag: u8,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding.
    pub _pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// First sector.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// An indirect request (`blkif_request_indirect`): segments live in granted
/// pages of [`BlkifRequestSegment`]s.
#[doc(alias = "blkif_request_indirect")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Segments in all indirect pages.
    pub nr_segments: u16,
    /// Padding.
    pub _pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Start sector.
    pub sector_number: u64,
    /// Virtual device handle.
    pub handle: u16,
    /// Padding.
    pub _pad1: u16,
    /// Grants of the pages holding segment descriptors.
    pub indirect_grefs: [GrantRefRaw; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Padding.
    pub _pad2: u32,
}

/// A block response (`blkif_response`), 16 bytes.
#[doc(alias = "blkif_response")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: u32,
}

/// xenbus device states (`enum xenbus_state`, `io/xenbus.h`).
pub mod xenbus_state {
    #![allow(missing_docs)]
    pub const UNKNOWN: u32 = 0;
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
    pub const RECONFIGURING: u32 = 7;
    pub const RECONFIGURED: u32 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes() {
        assert_eq!(size_of::<BlkifRequest>(), 112);
        assert_eq!(size_of::<BlkifRequestIndirect>(), 64);
        assert_eq!(size_of::<BlkifRequestDiscard>(), 32);
        assert_eq!(size_of::<BlkifResponse>(), 16);
        assert_eq!(size_of::<NetifTxRequest>(), 12);
        assert_eq!(size_of::<NetifExtraInfo>(), 8);
        assert_eq!(size_of::<XenstoreDomainInterface>(), 2076);
        assert_eq!(size_of::<XenconsInterface>(), 3088);
        assert_eq!(BLKIF_SEGS_PER_INDIRECT_FRAME, 512);
    }
}
