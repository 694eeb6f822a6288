//! Layouts specific to Arm (AArch64) guests.

use super::VcpuTimeInfo;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// vCPUs with a `vcpu_info` slot in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
#[doc(alias = "XEN_LEGACY_MAX_VCPUS")]
pub const LEGACY_MAX_VCPUS: usize = 1;

/// Per-vCPU event and time state (`vcpu_info`), 48 bytes on Arm: the
/// architecture part is empty.
#[doc(alias = "vcpu_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an event is pending for this vCPU.
    pub evtchn_upcall_pending: u8,
    /// Padding (Arm has no PV upcall mask).
    pub pad0: u8,
    /// Padding.
    pub _pad1: [u8; 6],
    /// Which words of `evtchn_pending` may have bits set.
    pub evtchn_pending_sel: u64,
    /// System time (Arm guests use the generic timer instead).
    pub time: VcpuTimeInfo,
}

/// The page Xen shares with every domain (`shared_info`).
#[doc(alias = "shared_info")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU state.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// Pending bit per port (2-level ABI).
    pub evtchn_pending: [u64; 64],
    /// Mask bit per port.
    pub evtchn_mask: [u64; 64],
    /// Wallclock version (odd while updating).
    pub wc_version: u32,
    /// Wallclock seconds (low 32 bits) at system time 0.
    pub wc_sec: u32,
    /// Wallclock nanoseconds.
    pub wc_nsec: u32,
    /// Wallclock seconds, high 32 bits.
    pub wc_sec_hi: u32,
}
