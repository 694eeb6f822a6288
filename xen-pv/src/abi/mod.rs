//! The Xen guest ABI: hypercall numbers, errno values, and the `#[repr(C)]`
//! structures hypercalls and shared pages use.
//!
//! Written from Xen's public headers (Xen 4.17, as in Debian 12's
//! `libxen-dev`; the guest ABI is unchanged in 4.20). Every structure here is
//! checked field by field against those headers, compiled for x86_64,
//! AArch64 and 32-bit Arm, by `tests/abi_layout.rs`.
//!
//! Layouts that differ between architectures (`shared_info`, `vcpu_info`,
//! `start_info`) live in [`x86_64`] and [`arm`] (both Arm architectures:
//! Xen's Arm ABI makes `xen_ulong_t` 64-bit on 32-bit Arm too); [`native`]
//! names the one for the target being built. Everything else is the same on
//! every architecture.
//!
//! Implicit C padding is spelled out as `_pad*` fields so that every structure
//! is plain bytes (`zerocopy::IntoBytes`) and can be handed to a hypercall or
//! a ring as a byte buffer.

pub mod arm;
pub mod io;
pub mod x86_64;

#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
pub use arm as native;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
pub use x86_64 as native;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod op {
    #![allow(missing_docs)]
    pub const SET_TRAP_TABLE: u32 = 0;
    pub const MMU_UPDATE: u32 = 1;
    pub const SET_CALLBACKS: u32 = 4;
    pub const MEMORY_OP: u32 = 12;
    pub const MULTICALL: u32 = 13;
    pub const UPDATE_VA_MAPPING: u32 = 14;
    pub const SET_TIMER_OP: u32 = 15;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const GRANT_TABLE_OP: u32 = 20;
    pub const VM_ASSIST: u32 = 21;
    pub const IRET: u32 = 23;
    pub const VCPU_OP: u32 = 24;
    pub const MMUEXT_OP: u32 = 26;
    pub const SCHED_OP: u32 = 29;
    pub const CALLBACK_OP: u32 = 30;
    pub const EVENT_CHANNEL_OP: u32 = 32;
    pub const PHYSDEV_OP: u32 = 33;
    pub const HVM_OP: u32 = 34;
}

/// A Xen errno value (positive; hypercalls return its negation).
#[doc(alias = "XEN_ERRNO")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

#[allow(missing_docs)]
impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const ENXIO: Errno = Errno(6);
    pub const E2BIG: Errno = Errno(7);
    pub const EBADF: Errno = Errno(9);
    pub const EAGAIN: Errno = Errno(11);
    pub const ENOMEM: Errno = Errno(12);
    pub const EACCES: Errno = Errno(13);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const EXDEV: Errno = Errno(18);
    pub const ENODEV: Errno = Errno(19);
    pub const ENOTDIR: Errno = Errno(20);
    pub const EISDIR: Errno = Errno(21);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const EROFS: Errno = Errno(30);
    pub const ERANGE: Errno = Errno(34);
    pub const ENAMETOOLONG: Errno = Errno(36);
    pub const ENOSYS: Errno = Errno(38);
    pub const ENOTEMPTY: Errno = Errno(39);
    pub const ENODATA: Errno = Errno(61);
    pub const ETIME: Errno = Errno(62);
    pub const EBADMSG: Errno = Errno(74);
    pub const EOVERFLOW: Errno = Errno(75);
    pub const EMSGSIZE: Errno = Errno(90);
    pub const EOPNOTSUPP: Errno = Errno(95);
    pub const EISCONN: Errno = Errno(106);
    pub const ENOTCONN: Errno = Errno(107);
    pub const ETIMEDOUT: Errno = Errno(110);

    /// The hypercall return value for this error.
    pub const fn ret(self) -> isize {
        -(self.0 as isize)
    }

    /// The name Xen (and xenstore's wire protocol) uses for this errno.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            18 => "EXDEV",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            28 => "ENOSPC",
            30 => "EROFS",
            34 => "ERANGE",
            36 => "ENAMETOOLONG",
            38 => "ENOSYS",
            39 => "ENOTEMPTY",
            61 => "ENODATA",
            62 => "ETIME",
            74 => "EBADMSG",
            75 => "EOVERFLOW",
            90 => "EMSGSIZE",
            95 => "EOPNOTSUPP",
            106 => "EISCONN",
            107 => "ENOTCONN",
            110 => "ETIMEDOUT",
            _ => "E?",
        }
    }

    /// The errno named `name`, for the names [`name`](Self::name) knows.
    pub fn from_name(name: &str) -> Option<Errno> {
        (1..=110)
            .map(Errno)
            .find(|e| e.name() != "E?" && e.name() == name)
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// `domid_t`.
pub type DomIdRaw = u16;
/// `evtchn_port_t`.
pub type PortRaw = u32;
/// `grant_ref_t`.
pub type GrantRefRaw = u32;
/// `grant_handle_t`.
pub type GrantHandleRaw = u32;

// ---------------------------------------------------------------------------
// vcpu_time_info (same on all architectures)

/// Per-vCPU system time, for the pvclock formula (`vcpu_time_info`).
#[doc(alias = "vcpu_time_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Odd while Xen updates the fields; read until even and unchanged.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time in ns at the last update.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point, after `tsc_shift`).
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}

// ---------------------------------------------------------------------------
// event_channel.h

/// Event-channel operation numbers (`EVTCHNOP_*`).
pub mod evtchnop {
    #![allow(missing_docs)]
    pub const BIND_INTERDOMAIN: u32 = 0;
    pub const BIND_VIRQ: u32 = 1;
    pub const CLOSE: u32 = 3;
    pub const SEND: u32 = 4;
    pub const STATUS: u32 = 5;
    pub const ALLOC_UNBOUND: u32 = 6;
    pub const BIND_IPI: u32 = 7;
    pub const BIND_VCPU: u32 = 8;
    pub const UNMASK: u32 = 9;
    pub const EXPAND_ARRAY: u32 = 12;
    pub const SET_PRIORITY: u32 = 13;
}

/// Ports of the 2-level ABI: `sizeof(xen_ulong_t) * sizeof(xen_ulong_t) * 64`.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 8 * 8 * 64;

/// `EVTCHNOP_alloc_unbound`: allocate a port for `remote_dom` to bind.
#[doc(alias = "evtchn_alloc_unbound")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// IN: the allocating domain (`DOMID_SELF`).
    pub dom: DomIdRaw,
    /// IN: the domain allowed to bind.
    pub remote_dom: DomIdRaw,
    /// OUT: the new port.
    pub port: PortRaw,
}

/// `EVTCHNOP_bind_interdomain`.
#[doc(alias = "evtchn_bind_interdomain")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain.
    pub remote_dom: DomIdRaw,
    /// Padding.
    pub _pad0: u16,
    /// IN: its unbound port.
    pub remote_port: PortRaw,
    /// OUT: our new port.
    pub local_port: PortRaw,
}

/// `EVTCHNOP_bind_virq`.
#[doc(alias = "evtchn_bind_virq")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// IN: the VIRQ.
    pub virq: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: PortRaw,
}

/// `EVTCHNOP_close`, `EVTCHNOP_send` and `EVTCHNOP_unmask` all take just a
/// port.
#[doc(alias = "evtchn_close")]
#[doc(alias = "evtchn_send")]
#[doc(alias = "evtchn_unmask")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnPort {
    /// IN: the port.
    pub port: PortRaw,
}

/// `EVTCHNOP_status` result values (`EVTCHNSTAT_*`).
pub mod evtchnstat {
    #![allow(missing_docs)]
    pub const CLOSED: u32 = 0;
    pub const UNBOUND: u32 = 1;
    pub const INTERDOMAIN: u32 = 2;
    pub const PIRQ: u32 = 3;
    pub const VIRQ: u32 = 4;
    pub const IPI: u32 = 5;
}

/// `EVTCHNOP_status`.
#[doc(alias = "evtchn_status")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomIdRaw,
    /// Padding.
    pub _pad0: u16,
    /// IN: the port.
    pub port: PortRaw,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU it is bound to.
    pub vcpu: u32,
    /// OUT: the union `u`. Unbound: the remote `dom` in the low 16 bits of
    /// word 0. Interdomain: the remote `dom` likewise, its `port` in word 1.
    /// VIRQ: the VIRQ in word 0.
    pub u: [u32; 2],
}

// ---------------------------------------------------------------------------
// grant_table.h

/// Grant-table operation numbers (`GNTTABOP_*`).
pub mod gnttabop {
    #![allow(missing_docs)]
    pub const MAP_GRANT_REF: u32 = 0;
    pub const UNMAP_GRANT_REF: u32 = 1;
    pub const SETUP_TABLE: u32 = 2;
    pub const COPY: u32 = 5;
    pub const QUERY_SIZE: u32 = 6;
    pub const SET_VERSION: u32 = 8;
    pub const GET_VERSION: u32 = 10;
}

/// Grant entry flags (`GTF_*`).
pub mod gtf {
    #![allow(missing_docs)]
    pub const INVALID: u16 = 0;
    pub const PERMIT_ACCESS: u16 = 1;
    pub const ACCEPT_TRANSFER: u16 = 2;
    pub const TRANSITIVE: u16 = 3;
    pub const TYPE_MASK: u16 = 3;
    pub const READONLY: u16 = 1 << 2;
    pub const READING: u16 = 1 << 3;
    pub const WRITING: u16 = 1 << 4;
    pub const SUB_PAGE: u16 = 1 << 8;
}

/// Grant-map flags (`GNTMAP_*`).
pub mod gntmap {
    #![allow(missing_docs)]
    pub const DEVICE_MAP: u32 = 1 << 0;
    pub const HOST_MAP: u32 = 1 << 1;
    pub const READONLY: u32 = 1 << 2;
    pub const APPLICATION_MAP: u32 = 1 << 3;
    pub const CONTAINS_PTE: u32 = 1 << 4;
}

/// Grant-copy flags (`GNTCOPY_*`).
pub mod gntcopy {
    #![allow(missing_docs)]
    pub const SOURCE_GREF: u16 = 1 << 0;
    pub const DEST_GREF: u16 = 1 << 1;
}

/// Grant operation status codes (`GNTST_*`).
pub mod gntst {
    #![allow(missing_docs)]
    pub const OKAY: i16 = 0;
    pub const GENERAL_ERROR: i16 = -1;
    pub const BAD_DOMAIN: i16 = -2;
    pub const BAD_GNTREF: i16 = -3;
    pub const BAD_HANDLE: i16 = -4;
    pub const BAD_VIRT_ADDR: i16 = -5;
    pub const BAD_DEV_ADDR: i16 = -6;
    pub const NO_DEVICE_SPACE: i16 = -7;
    pub const PERMISSION_DENIED: i16 = -8;
    pub const BAD_PAGE: i16 = -9;
    pub const BAD_COPY_ARG: i16 = -10;
    pub const ADDRESS_TOO_BIG: i16 = -11;
    pub const EAGAIN: i16 = -12;
    pub const NO_SPACE: i16 = -13;
}

/// Grant references Xen's toolstack reserves (console, xenstore, ...).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// The reserved reference for the PV console page.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// The reserved reference for the xenstore page.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

/// A version-1 grant entry (`grant_entry_v1`), 8 bytes.
#[doc(alias = "grant_entry_v1")]
#[doc(alias = "grant_entry_t")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*`; written last by the granter, read and updated by Xen.
    pub flags: u16,
    /// The domain granted access.
    pub domid: DomIdRaw,
    /// The granted frame.
    pub frame: u32,
}

/// `GNTTABOP_map_grant_ref`.
#[doc(alias = "gnttab_map_grant_ref")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: where to map (a guest-physical address on auto-translated guests).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: the grant reference.
    pub ref_: GrantRefRaw,
    /// IN: the granting domain.
    pub dom: DomIdRaw,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: GrantHandleRaw,
    /// OUT: bus address (device maps).
    pub dev_bus_addr: u64,
}

/// `GNTTABOP_unmap_grant_ref`.
#[doc(alias = "gnttab_unmap_grant_ref")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: the address it was mapped at.
    pub host_addr: u64,
    /// IN: the bus address (device maps).
    pub dev_bus_addr: u64,
    /// IN: the handle from the map.
    pub handle: GrantHandleRaw,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

/// `GNTTABOP_setup_table`.
#[doc(alias = "gnttab_setup_table")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomIdRaw,
    /// Padding.
    pub _pad0: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: [u8; 6],
    /// IN: guest handle of an array of `nr_frames` `xen_pfn_t` (OUT: the
    /// frames).
    pub frame_list: u64,
}

/// `GNTTABOP_query_size`.
#[doc(alias = "gnttab_query_size")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomIdRaw,
    /// Padding.
    pub _pad0: u16,
    /// OUT: current number of frames.
    pub nr_frames: u32,
    /// OUT: maximum number of frames.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: u16,
}

/// One end of a `gnttab_copy` (`struct gnttab_copy_ptr`).
#[doc(alias = "gnttab_copy_ptr")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// The union `u`: a grant reference (low 32 bits) if the matching
    /// `GNTCOPY_*_gref` flag is set, else a frame number (`gmfn`).
    pub u: u64,
    /// The domain owning the page.
    pub domid: DomIdRaw,
    /// Byte offset in the page.
    pub offset: u16,
    /// Padding.
    pub _pad0: u32,
}

/// `GNTTABOP_copy`.
#[doc(alias = "gnttab_copy")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: the source.
    pub source: GnttabCopyPtr,
    /// IN: the destination.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy.
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub _pad0: u16,
}

// ---------------------------------------------------------------------------
// memory.h, hvm

/// `XENMEM_add_to_physmap`.
#[doc(alias = "XENMEM_add_to_physmap")]
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;

/// Spaces for `XENMEM_add_to_physmap` (`XENMAPSPACE_*`).
pub mod mapspace {
    #![allow(missing_docs)]
    pub const SHARED_INFO: u32 = 0;
    pub const GRANT_TABLE: u32 = 1;
    pub const GMFN: u32 = 2;
    pub const GMFN_RANGE: u32 = 3;
    pub const GMFN_FOREIGN: u32 = 4;
    pub const DEV_MMIO: u32 = 5;
}

/// `XENMEM_add_to_physmap`: make a Xen-owned page appear at `gpfn`.
#[doc(alias = "xen_add_to_physmap")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// The domain (`DOMID_SELF`).
    pub domid: DomIdRaw,
    /// Pages for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index in the space (grant frame number for the grant-table space).
    pub idx: u64,
    /// Where the page should appear.
    pub gpfn: u64,
}

/// `HVMOP_set_param`.
#[doc(alias = "HVMOP_set_param")]
pub const HVMOP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param`.
#[doc(alias = "HVMOP_get_param")]
pub const HVMOP_GET_PARAM: u32 = 1;

/// HVM parameter indices (`HVM_PARAM_*`).
pub mod hvm_param {
    #![allow(missing_docs)]
    pub const CALLBACK_IRQ: u32 = 0;
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
}

/// `HVMOP_get_param` / `HVMOP_set_param`.
#[doc(alias = "xen_hvm_param")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct XenHvmParam {
    /// IN: the domain (`DOMID_SELF`).
    pub domid: DomIdRaw,
    /// Padding.
    pub pad: u16,
    /// IN: `HVM_PARAM_*`.
    pub index: u32,
    /// IN/OUT: the value.
    pub value: u64,
}

// ---------------------------------------------------------------------------
// sched.h, console_io, xen_version, vcpu_op

/// Scheduler operation numbers (`SCHEDOP_*`).
pub mod schedop {
    #![allow(missing_docs)]
    pub const YIELD: u32 = 0;
    pub const BLOCK: u32 = 1;
    pub const SHUTDOWN: u32 = 2;
    pub const POLL: u32 = 3;
    pub const REMOTE_SHUTDOWN: u32 = 4;
}

/// Shutdown reasons (`SHUTDOWN_*`).
pub mod shutdown {
    #![allow(missing_docs)]
    pub const POWEROFF: u32 = 0;
    pub const REBOOT: u32 = 1;
    pub const SUSPEND: u32 = 2;
    pub const CRASH: u32 = 3;
    pub const WATCHDOG: u32 = 4;
    pub const SOFT_RESET: u32 = 5;
}

/// `SCHEDOP_shutdown`.
#[doc(alias = "sched_shutdown")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `SCHEDOP_poll`: block until one of the ports is pending or the timeout.
#[doc(alias = "sched_poll")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest handle of an array of `nr_ports` ports.
    pub ports: u64,
    /// Number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub _pad0: u32,
    /// Absolute system time at which to give up (0: no timeout).
    pub timeout: u64,
}

/// `SCHEDOP_remote_shutdown`.
#[doc(alias = "sched_remote_shutdown")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// The domain to shut down.
    pub domain_id: DomIdRaw,
    /// Padding.
    pub _pad0: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `CONSOLEIO_write`.
#[doc(alias = "CONSOLEIO_write")]
pub const CONSOLEIO_WRITE: u32 = 0;
/// `CONSOLEIO_read`.
#[doc(alias = "CONSOLEIO_read")]
pub const CONSOLEIO_READ: u32 = 1;

/// `XENVER_version`: returns `major << 16 | minor`.
#[doc(alias = "XENVER_version")]
pub const XENVER_VERSION: u32 = 0;
/// `XENVER_extraversion`: fills a 16-byte string.
#[doc(alias = "XENVER_extraversion")]
pub const XENVER_EXTRAVERSION: u32 = 1;
/// `XENVER_get_features`: one 32-bit word of `XENFEAT_*` bits.
#[doc(alias = "XENVER_get_features")]
pub const XENVER_GET_FEATURES: u32 = 6;
/// `XENVER_pagesize`: returns the page size (the argument must be null).
#[doc(alias = "XENVER_pagesize")]
pub const XENVER_PAGESIZE: u32 = 7;
/// `XENFEAT_auto_translated_physmap`: the guest sees guest-physical frames.
#[doc(alias = "XENFEAT_auto_translated_physmap")]
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;

/// `VCPUOP_register_vcpu_info`.
#[doc(alias = "VCPUOP_register_vcpu_info")]
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;

/// `VCPUOP_get_runstate_info`: where a vCPU has spent its time.
#[doc(alias = "VCPUOP_get_runstate_info")]
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;

/// `VCPUOP_register_runstate_memory_area`: Xen keeps a
/// [`VcpuRunstateInfo`] at a guest address up to date.
#[doc(alias = "VCPUOP_register_runstate_memory_area")]
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;

/// `VCPUOP_register_runstate_memory_area` argument: the guest address of
/// the area (0 to stop).
#[doc(alias = "vcpu_register_runstate_memory_area")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// The union `addr` (a guest handle, pointer or `uint64_t p`).
    pub addr: u64,
}

/// Set in `state_entry_time` while Xen updates a runstate area.
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// vCPU run states (`RUNSTATE_*`).
pub mod runstate {
    #![allow(missing_docs)]
    pub const RUNNING: i32 = 0;
    pub const RUNNABLE: i32 = 1;
    pub const BLOCKED: i32 = 2;
    pub const OFFLINE: i32 = 3;
}

/// `VCPUOP_get_runstate_info` result: the current state, Xen's system time
/// when it was entered, and the time spent in each state.
#[doc(alias = "vcpu_runstate_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: i32,
    /// Padding.
    pub _pad0: u32,
    /// Xen system time (ns) when `state` was entered.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each state (index `RUNSTATE_*`).
    pub time: [u64; 4],
}

/// `VCPUOP_register_vcpu_info` argument.
#[doc(alias = "vcpu_register_vcpu_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame to place `vcpu_info` in.
    pub mfn: u64,
    /// Offset within the frame.
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}
