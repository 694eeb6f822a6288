//! Layouts specific to x86_64 guests.

use super::VcpuTimeInfo;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// vCPUs with a `vcpu_info` slot in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
#[doc(alias = "XEN_LEGACY_MAX_VCPUS")]
pub const LEGACY_MAX_VCPUS: usize = 32;

/// x86_64 part of `vcpu_info` (`arch_vcpu_info`).
#[doc(alias = "arch_vcpu_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault (PV).
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}

/// Per-vCPU event and time state (`vcpu_info`), 64 bytes on x86_64.
#[doc(alias = "vcpu_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an event is pending for this vCPU.
    pub evtchn_upcall_pending: u8,
    /// Set by the guest to hold off upcalls.
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub _pad0: [u8; 6],
    /// Which words of `evtchn_pending` may have bits set.
    pub evtchn_pending_sel: u64,
    /// Architecture part.
    pub arch: ArchVcpuInfo,
    /// System time.
    pub time: VcpuTimeInfo,
}

/// x86_64 part of `shared_info` (`arch_shared_info`).
#[doc(alias = "arch_shared_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Valid entries in the p2m.
    pub max_pfn: u64,
    /// Frame of the p2m frame-list list.
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason.
    pub nmi_reason: u64,
    /// Root of the address space holding the linear p2m.
    pub p2m_cr3: u64,
    /// Virtual address of the linear p2m.
    pub p2m_vaddr: u64,
    /// p2m generation count.
    pub p2m_generation: u64,
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
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

/// Console part of `start_info` (the union `console`, domU view).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StartInfoConsole {
    /// domU: machine frame of the console page. dom0: `info_off` in the low
    /// 32 bits and `info_size` in the high 32 bits.
    pub mfn: u64,
    /// domU: console event channel.
    pub evtchn: u32,
    /// Padding.
    pub _pad0: u32,
}

/// What Xen tells an x86 PV guest at boot (`start_info`), passed in `rsi`.
#[doc(alias = "start_info")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StartInfo {
    /// `"xen-<version>-<platform>"`, NUL-padded.
    pub magic: [u8; 32],
    /// Pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of `shared_info`.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Padding.
    pub _pad0: u32,
    /// Machine frame of the xenstore page.
    pub store_mfn: u64,
    /// xenstore event channel.
    pub store_evtchn: u32,
    /// Padding.
    pub _pad1: u32,
    /// Console page and event channel.
    pub console: StartInfoConsole,
    /// Virtual address of the initial page directory.
    pub pt_base: u64,
    /// Frames of bootstrap page tables.
    pub nr_pt_frames: u64,
    /// Virtual address of the page-frame (p2m) list.
    pub mfn_list: u64,
    /// Virtual address (or PFN) of the first module.
    pub mod_start: u64,
    /// Length of the module in bytes.
    pub mod_len: u64,
    /// Command line, NUL-terminated.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First PFN of the initial p2m table.
    pub first_p2m_pfn: u64,
    /// Frames of the initial p2m table.
    pub nr_p2m_frames: u64,
}

/// Length of `start_info.cmd_line`.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `start_info.flags` bits (`SIF_*`).
pub mod sif {
    #![allow(missing_docs)]
    pub const PRIVILEGED: u32 = 1 << 0;
    pub const INITDOMAIN: u32 = 1 << 1;
    pub const MULTIBOOT_MOD: u32 = 1 << 2;
    pub const MOD_START_PFN: u32 = 1 << 3;
}
