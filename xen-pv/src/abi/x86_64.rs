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

/// One page-table write for `HYPERVISOR_mmu_update`: the machine address of
/// the entry (its low 2 bits select the kind of update, [`mmu`]) and the
/// value to store, which Xen checks before writing.
#[doc(alias = "mmu_update")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the entry, ORed with an [`mmu`] kind.
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}

/// Kinds of [`MmuUpdate`] (`MMU_*`), in the low bits of `ptr`.
pub mod mmu {
    #![allow(missing_docs)]
    #[doc(alias = "MMU_NORMAL_PT_UPDATE")]
    pub const NORMAL_PT_UPDATE: u64 = 0;
    #[doc(alias = "MMU_MACHPHYS_UPDATE")]
    pub const MACHPHYS_UPDATE: u64 = 1;
}

/// Flush flags of `HYPERVISOR_update_va_mapping` (`UVMF_*`).
pub mod uvmf {
    #![allow(missing_docs)]
    pub const NONE: u64 = 0;
    pub const TLB_FLUSH: u64 = 1;
    pub const INVLPG: u64 = 2;
    pub const LOCAL: u64 = 0;
    pub const ALL: u64 = 1 << 2;
}

/// One entry of the virtual IDT given to `HYPERVISOR_set_trap_table`; the
/// array ends with an entry whose `address` is 0.
#[doc(alias = "trap_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception vector.
    pub vector: u8,
    /// Bits 0-1: the privilege level that may raise it with `int`; bit 2:
    /// mask events on entry.
    pub flags: u8,
    /// Code selector ([`FLAT_KERNEL_CS`]).
    pub cs: u16,
    /// Padding.
    pub _pad0: u32,
    /// Handler address.
    pub address: u64,
}

/// The argument of `CALLBACKOP_register`.
#[doc(alias = "callback_register")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CallbackRegister {
    /// Which callback ([`callback`]).
    #[doc(alias = "type")]
    pub kind: u16,
    /// `CALLBACKF_*` flags.
    pub flags: u16,
    /// Padding.
    pub _pad0: u32,
    /// Handler address.
    pub address: u64,
}

/// Callback types, operations and flags (`CALLBACKTYPE_*`, `CALLBACKOP_*`,
/// `CALLBACKF_*`).
pub mod callback {
    #![allow(missing_docs)]
    #[doc(alias = "CALLBACKTYPE_event")]
    pub const EVENT: u16 = 0;
    #[doc(alias = "CALLBACKTYPE_failsafe")]
    pub const FAILSAFE: u16 = 1;
    #[doc(alias = "CALLBACKTYPE_syscall")]
    pub const SYSCALL: u16 = 2;
    #[doc(alias = "CALLBACKTYPE_nmi")]
    pub const NMI: u16 = 4;
    #[doc(alias = "CALLBACKOP_register")]
    pub const OP_REGISTER: u64 = 0;
    #[doc(alias = "CALLBACKOP_unregister")]
    pub const OP_UNREGISTER: u64 = 1;
    #[doc(alias = "CALLBACKF_mask_events")]
    pub const F_MASK_EVENTS: u16 = 1;
}

/// The code selector of a 64-bit PV kernel (ring 3, as Xen runs it).
#[doc(alias = "FLAT_KERNEL_CS64")]
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// The stack selector of a 64-bit PV kernel.
#[doc(alias = "FLAT_KERNEL_SS64")]
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
/// Where Xen maps the read-only machine-to-physical table into every 64-bit
/// PV guest: `u64` entries indexed by machine frame.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;

/// Types of the `Xen` ELF notes a PV kernel carries (`XEN_ELFNOTE_*`).
pub mod elfnote {
    #![allow(missing_docs)]
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const GUEST_VERSION: u32 = 7;
    pub const LOADER: u32 = 8;
    pub const FEATURES: u32 = 10;
    pub const SUPPORTED_FEATURES: u32 = 17;
    /// The 32-bit physical entry point of a PVH kernel.
    #[doc(alias = "XEN_ELFNOTE_PHYS32_ENTRY")]
    pub const PHYS32_ENTRY: u32 = 18;
}

// ---------------------------------------------------------------------------
// PVH boot (arch-x86/hvm/start_info.h): what Xen hands a PVH guest in `ebx`.

/// `hvm_start_info.magic`: `"xEn3"` with the top bit of the `E` set.
#[doc(alias = "XEN_HVM_START_MAGIC_VALUE")]
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Types of [`HvmMemmapTableEntry`] (`XEN_HVM_MEMMAP_TYPE_*`).
pub mod hvm_memmap_type {
    #![allow(missing_docs)]
    pub const RAM: u32 = 1;
    pub const RESERVED: u32 = 2;
    pub const ACPI: u32 = 3;
    pub const NVS: u32 = 4;
    pub const UNUSABLE: u32 = 5;
    pub const DISABLED: u32 = 6;
    pub const PMEM: u32 = 7;
}

/// What Xen tells a PVH guest at boot (`hvm_start_info`), at the physical
/// address in `ebx`. Version 1 adds the memory map.
#[doc(alias = "hvm_start_info")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Version of this structure (0 or 1).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Entries at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of the [`HvmModlistEntry`] array.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Version 1: physical address of the [`HvmMemmapTableEntry`] array.
    pub memmap_paddr: u64,
    /// Version 1: entries at `memmap_paddr` (0: no map given).
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// A module handed to a PVH guest (`hvm_modlist_entry`).
#[doc(alias = "hvm_modlist_entry")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Physical address of its command line (0: none).
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

/// One region of a PVH guest's physical memory map
/// (`hvm_memmap_table_entry`).
#[doc(alias = "hvm_memmap_table_entry")]
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HvmMemmapTableEntry {
    /// Base address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`hvm_memmap_type`].
    #[doc(alias = "XEN_HVM_MEMMAP_TYPE_RAM")]
    pub type_: u32,
    /// Must be zero (version 1).
    pub reserved: u32,
}
