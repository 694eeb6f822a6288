//! PVH boot: the entry Xen uses for an HVM-container ("PVH") guest.
//!
//! Xen starts a PVH guest at the `XEN_ELFNOTE_PHYS32_ENTRY` address in
//! 32-bit protected mode, paging off, with `ebx` holding the physical
//! address of `hvm_start_info`. The entry code clears `.bss`, builds page
//! tables that map the first 8 GiB one to one with 2 MiB pages (the image
//! is linked where it is loaded, so virtual equals physical, as on PV),
//! enters long mode and calls [`xenpal_rust_start_pvh`].
//!
//! There, hypercalls are set up first: the Xen CPUID leaves name the MSR
//! that makes Xen write a hypercall page, and writing it with the address
//! of the image's own `xenpal_hypercall_page` keeps [`crate::hypercall`]
//! unchanged (Xen fills in `vmmcall` or `vmcall` for the CPU).
//!
//! Then [`boot`] brings the same platform up as an Arm guest's
//! (`XenPlatform::boot_auto`: `shared_info` and the grant table placed with
//! `add_to_physmap`, xenstore and the console from HVM parameters) on RAM
//! found in the memory map. Events arrive through the HVM callback vector:
//! the guest runs with interrupts off except while it waits (`sti; hlt`, so
//! an event that arrived after the executor chose to sleep wakes it at
//! once), and the vector's handler only clears `evtchn_upcall_pending`; the
//! executor dispatches, as on PV. Exceptions go through an IDT of our own
//! and are reported like PV's.

use core::sync::atomic::{AtomicBool, Ordering};
use hal::mem::PAGE_SIZE;
use xen_pv::abi::x86_64::{HVM_START_MAGIC, HvmMemmapTableEntry, HvmStartInfo, hvm_memmap_type};

/// Bytes of the identity map: 8 GiB of 2 MiB pages (one PML4, one PDPT,
/// eight page directories).
pub const IDENTITY_MAP_BYTES: u64 = 8 << 30;

/// The vector Xen raises for events (`HVM_PARAM_CALLBACK_IRQ`, vector
/// type), as Linux uses.
pub const CALLBACK_VECTOR: u8 = 0xf3;

/// Where `shared_info`, the grant table and the window for other domains'
/// grants go: from 4 GiB up, above any RAM a guest here has, inside the
/// identity map.
pub const WINDOW_BASE: u64 = 4 << 30;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether this domain booted through the PVH entry.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The free RAM for heap and page allocator: the largest RAM region of the
/// memory map, above `reserved_end` (everything the image and Xen's boot
/// data occupy) and below the identity map's end: `(start, end)` in bytes,
/// page-aligned.
pub fn free_ram(map: &[HvmMemmapTableEntry], reserved_end: u64) -> Option<(u64, u64)> {
    let page = PAGE_SIZE as u64;
    map.iter()
        .filter(|e| e.type_ == hvm_memmap_type::RAM)
        .filter_map(|e| {
            let start = e.addr.max(reserved_end).div_ceil(page) * page;
            let end = (e.addr.saturating_add(e.size)).min(WINDOW_BASE) / page * page;
            (end > start).then_some((start, end))
        })
        .max_by_key(|(s, e)| e - s)
}

/// The Xen CPUID leaves: the first of them with Xen's signature, searched
/// from `0x4000_0000` in steps of `0x100` (Xen moves them up when it also
/// presents another hypervisor's leaves).
pub fn xen_cpuid_base(cpuid: impl Fn(u32) -> [u32; 4]) -> Option<u32> {
    (0..0x100).map(|i| 0x4000_0000 + i * 0x100).find(|&leaf| {
        let [max, b, c, d] = cpuid(leaf);
        b == u32::from_le_bytes(*b"XenV")
            && c == u32::from_le_bytes(*b"MMXe")
            && d == u32::from_le_bytes(*b"nVMM")
            && max >= leaf + 2
    })
}

/// Why a `hvm_start_info` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// Fewer bytes than the structure.
    Truncated,
    /// `magic` is not `XEN_HVM_START_MAGIC_VALUE`.
    BadMagic(u32),
    /// A version this code does not know (it knows 0 and 1).
    UnknownVersion(u32),
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::Truncated => f.write_str("hvm_start_info is truncated"),
            StartInfoError::BadMagic(m) => write!(f, "hvm_start_info has magic {m:#x}"),
            StartInfoError::UnknownVersion(v) => write!(f, "hvm_start_info version {v}"),
        }
    }
}

impl core::error::Error for StartInfoError {}

/// Check a `hvm_start_info` read from memory.
///
/// Errors: [`StartInfoError`] saying what is wrong.
pub fn parse_start_info(bytes: &[u8]) -> Result<HvmStartInfo, StartInfoError> {
    use zerocopy::FromBytes;
    let (info, _) = HvmStartInfo::read_from_prefix(bytes).map_err(|_| StartInfoError::Truncated)?;
    if info.magic != HVM_START_MAGIC {
        return Err(StartInfoError::BadMagic(info.magic));
    }
    if info.version > 1 {
        return Err(StartInfoError::UnknownVersion(info.version));
    }
    Ok(info)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, {phys32_entry}
    .asciz "Xen"
    .long _start32

    .section .text.start32, "ax"
    .code32
    .global _start32
_start32:
    cld
    mov     esi, ebx
    mov     esp, offset __stack_top
    mov     edi, offset __bss_start
    mov     ecx, offset __bss_end
    sub     ecx, edi
    xor     eax, eax
    rep stosb
    mov     eax, offset xenpal_pvh_pdpt
    or      eax, 3
    mov     dword ptr [xenpal_pvh_pml4], eax
    xor     ecx, ecx
1:  mov     eax, ecx
    shl     eax, 12
    add     eax, offset xenpal_pvh_pd
    or      eax, 3
    mov     dword ptr [xenpal_pvh_pdpt + ecx * 8], eax
    inc     ecx
    cmp     ecx, 8
    jb      1b
    xor     ecx, ecx
2:  mov     eax, ecx
    shl     eax, 21
    or      eax, 0x83
    mov     edx, ecx
    shr     edx, 11
    mov     dword ptr [xenpal_pvh_pd + ecx * 8], eax
    mov     dword ptr [xenpal_pvh_pd + ecx * 8 + 4], edx
    inc     ecx
    cmp     ecx, 4096
    jb      2b
    mov     eax, cr4
    or      eax, 1 << 5
    mov     cr4, eax
    mov     eax, offset xenpal_pvh_pml4
    mov     cr3, eax
    mov     ecx, 0xC0000080
    rdmsr
    or      eax, 1 << 8
    wrmsr
    mov     eax, cr0
    or      eax, 0x80000001
    mov     cr0, eax
    lgdt    [xenpal_pvh_gdt_ptr]
    // ljmp 0x08:xenpal_pvh_long_mode (ptr16:32, spelled out: the
    // assemblers disagree on the far-jump syntax).
    .byte   0xea
    .long   xenpal_pvh_long_mode
    .word   0x08
    .code64
xenpal_pvh_long_mode:
    mov     eax, 0x10
    mov     ds, eax
    mov     es, eax
    mov     ss, eax
    xor     eax, eax
    mov     fs, eax
    mov     gs, eax
    lea     rsp, [rip + __stack_top]
    xor     ebp, ebp
    mov     edi, esi
    call    xenpal_rust_start_pvh
4:  hlt
    jmp     4b

    .section .rodata.pvh_gdt, "a"
    .balign 16
xenpal_pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
xenpal_pvh_gdt_ptr:
    .word 3 * 8 - 1
    .long xenpal_pvh_gdt

    .section .bss.pvh_tables, "aw", @nobits
    .balign 4096
xenpal_pvh_pml4:
    .skip 4096
xenpal_pvh_pdpt:
    .skip 4096
xenpal_pvh_pd:
    .skip 8 * 4096
"#,
    phys32_entry = const xen_pv::abi::x86_64::elfnote::PHYS32_ENTRY,
);

/// Point Xen's hypercall page at the image's `xenpal_hypercall_page`.
/// Returns false if this is not Xen.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
fn set_up_hypercalls() -> bool {
    let cpuid = |leaf: u32| {
        let r = core::arch::x86_64::__cpuid(leaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let Some(base) = xen_cpuid_base(cpuid) else {
        return false;
    };
    let msr = cpuid(base + 2)[1];
    unsafe extern "C" {
        static xenpal_hypercall_page: u8;
    }
    // Physical = virtual: the identity map.
    let page = (&raw const xenpal_hypercall_page) as u64;
    // SAFETY: `msr` is the MSR Xen's CPUID leaf names for this purpose;
    // writing it makes Xen fill the page at `page`, which is the image's
    // page reserved for hypercalls and nothing else.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") page as u32,
            in("edx") (page >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
    true
}

/// Rust entry of a PVH boot, with `hvm_start_info`'s physical address:
/// hypercalls, the IDT, then the guest's `main` (which boots the platform
/// through `platform::run`, which sees [`active`]).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[unsafe(no_mangle)]
extern "C" fn xenpal_rust_start_pvh(start_info: usize) -> ! {
    if !set_up_hypercalls() {
        // Without hypercalls there is no console to say so on.
        loop {
            // SAFETY: halting with interrupts as Xen left them (off).
            unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        }
    }
    ACTIVE.store(true, Ordering::Relaxed);
    idt::install();
    unsafe extern "Rust" {
        fn xenpal_app_main(start_info: usize) -> !;
    }
    // SAFETY: the guest binary defines `xenpal_app_main` with this exact
    // signature through `entry!`; the link fails otherwise.
    unsafe { xenpal_app_main(start_info) }
}

/// The block hook of a PVH guest: wait for an interrupt with interrupts
/// enabled only for the wait itself (`sti` takes effect after the next
/// instruction, so an interrupt already pending wakes the `hlt` at once).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn block() -> isize {
    // SAFETY: interrupts are off everywhere else in a PVH guest; here they
    // are let in for the `hlt` and turned off again. The handlers (the IDT
    // below) save every register they use.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    0
}

/// The IDT: the 32 exception vectors, reported and fatal as on PV, and the
/// event callback vector.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod idt {
    use super::CALLBACK_VECTOR;
    use core::sync::atomic::{AtomicU8, Ordering};

    core::arch::global_asm!(
        r#"
        .section .text.xenpal_pvh_idt, "ax"
        .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    xenpal_pvh_vec\v:
        push    0
        push    \v
        jmp     xenpal_pvh_trap_common
        .endr
        .irp v, 8,10,11,12,13,14,17,21,29,30
    xenpal_pvh_vec\v:
        push    \v
        jmp     xenpal_pvh_trap_common
        .endr
    xenpal_pvh_trap_common:
        mov     rdi, [rsp]
        lea     rsi, [rsp + 8]
        and     rsp, ~15
        call    xenpal_pvh_trap
    1:  hlt
        jmp     1b

        // The event callback: save what a call may clobber, note the
        // upcall, return.
    xenpal_pvh_callback:
        push    rax
        push    rcx
        push    rdx
        push    rsi
        push    rdi
        push    r8
        push    r9
        push    r10
        push    r11
        mov     rax, rsp
        and     rsp, ~15
        push    rax
        sub     rsp, 8
        call    xenpal_pvh_upcall
        add     rsp, 8
        pop     rsp
        pop     r11
        pop     r10
        pop     r9
        pop     r8
        pop     rdi
        pop     rsi
        pop     rdx
        pop     rcx
        pop     rax
        iretq

        .section .rodata.xenpal_pvh_idt, "a"
        .balign 8
        .global xenpal_pvh_vectors
    xenpal_pvh_vectors:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad xenpal_pvh_vec\v
        .endr
        .global xenpal_pvh_callback_entry
    xenpal_pvh_callback_entry:
        .quad xenpal_pvh_callback
        "#
    );

    unsafe extern "C" {
        static xenpal_pvh_vectors: [u64; 32];
        static xenpal_pvh_callback_entry: u64;
    }

    /// 256 gates of 16 bytes.
    #[repr(C, align(16))]
    struct Idt([u64; 512]);
    static mut IDT: Idt = Idt([0; 512]);

    /// An interrupt gate to `handler` in our code segment (0x08).
    fn gate(handler: u64) -> [u64; 2] {
        let low =
            (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | (((handler >> 16) & 0xffff) << 48);
        [low, handler >> 32]
    }

    pub(super) fn install() {
        // SAFETY: the tables the assembly above defines, read-only.
        let (vectors, callback) = unsafe { (xenpal_pvh_vectors, xenpal_pvh_callback_entry) };
        // SAFETY: written once at boot, before interrupts can be enabled,
        // from this one vCPU; the CPU reads it through `lidt` only.
        unsafe {
            let idt = (&raw mut IDT).cast::<[u64; 2]>();
            for (v, h) in vectors.iter().enumerate() {
                idt.add(v).write(gate(*h));
            }
            idt.add(usize::from(CALLBACK_VECTOR)).write(gate(callback));
            let base = (&raw const IDT) as u64;
            let ptr: [u16; 5] = [
                (256 * 16 - 1) as u16,
                base as u16,
                (base >> 16) as u16,
                (base >> 32) as u16,
                (base >> 48) as u16,
            ];
            core::arch::asm!("lidt [{}]", in(reg) ptr.as_ptr(), options(readonly, nostack));
        }
    }

    /// `vcpu_info.evtchn_upcall_pending`, once `shared_info` is mapped.
    pub(super) static UPCALL_PENDING: core::sync::atomic::AtomicPtr<AtomicU8> =
        core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_pvh_upcall() {
        // Xen raises the vector for as long as `evtchn_upcall_pending` is
        // set: clear it; the executor finds the events in the bitmaps.
        let p = UPCALL_PENDING.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: set once to the byte inside the mapped shared_info,
            // which stays mapped.
            unsafe { &*p }.store(0, Ordering::SeqCst);
        }
        crate::irq::note_upcall();
    }

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_pvh_trap(vector: u64, frame: *const [u64; 4]) -> ! {
        let vector = vector as u8;
        // SAFETY: the stub passes the frame the CPU pushed: error code,
        // rip, cs, rflags, rsp (the first four read here).
        let f = unsafe { frame.read() };
        let cr2: u64;
        // SAFETY: reading cr2 has no side effect.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        if vector == 14 {
            crate::eprintln!(
                "xenpal: unexpected exception: {} (vector {vector}), error {:#x}, rip {:#x}, address {cr2:#x}",
                crate::exceptions::name(vector),
                f[0],
                f[1]
            );
        } else {
            crate::eprintln!(
                "xenpal: unexpected exception: {} (vector {vector}), error {:#x}, rip {:#x}",
                crate::exceptions::name(vector),
                f[0],
                f[1]
            );
        }
        crate::platform::crash()
    }
}

/// The memory map: `hvm_start_info`'s (a domU's, version 1), else Xen's
/// `XENMEM_memory_map` (dom0's), else RAM from 1 MiB as large as the
/// domain's reservation. Fills `out`, returns how many entries.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
fn memory_map(info: &HvmStartInfo, out: &mut [HvmMemmapTableEntry]) -> usize {
    use hal::DomId;
    if info.version >= 1 && info.memmap_entries > 0 && info.memmap_paddr != 0 {
        let n = (info.memmap_entries as usize).min(out.len());
        for (i, e) in out.iter_mut().enumerate().take(n) {
            // SAFETY: Xen put `memmap_entries` entries at `memmap_paddr`,
            // inside the identity map; read by value.
            *e = unsafe {
                (info.memmap_paddr as *const HvmMemmapTableEntry)
                    .add(i)
                    .read_unaligned()
            };
        }
        return n;
    }
    // struct e820entry { uint64_t addr, size; uint32_t type; } __packed
    let mut raw = [[0u8; 20]; 32];
    // struct xen_memory_map { unsigned int nr_entries; XEN_GUEST_HANDLE(void) buffer; }
    let mut map: [u64; 2] = [raw.len() as u64, raw.as_mut_ptr() as u64];
    // SAFETY: XENMEM_memory_map writes at most `nr_entries` 20-byte entries
    // into `raw` and the count back into `map`, both on our stack (virtual
    // = physical, which is what Xen reads a PVH guest's pointers as).
    let r = unsafe {
        crate::hypercall::hypercall_raw(
            xen_pv::abi::op::MEMORY_OP,
            [XENMEM_MEMORY_MAP, map.as_mut_ptr() as u64, 0, 0, 0],
        )
    };
    if r < 0 {
        // Xen 4.17 answers a PVH dom0 ENOSYS here. Its RAM is the host's
        // from 1 MiB up, `XENMEM_current_reservation` pages of it: claim
        // that much above 1 MiB less the 256 frames below it, which may be
        // counted.
        let mut dom: u16 = DomId::SELF.0;
        // SAFETY: the argument is a domid_t on our stack, read by Xen.
        let pages = unsafe {
            crate::hypercall::hypercall_raw(
                xen_pv::abi::op::MEMORY_OP,
                [XENMEM_CURRENT_RESERVATION, (&raw mut dom) as u64, 0, 0, 0],
            )
        };
        if pages <= 256 || out.is_empty() {
            return 0;
        }
        out[0] = HvmMemmapTableEntry {
            addr: 1 << 20,
            size: (pages as u64 - 256) * PAGE_SIZE as u64,
            type_: hvm_memmap_type::RAM,
            reserved: 0,
        };
        return 1;
    }
    let n = (map[0] as u32 as usize).min(raw.len()).min(out.len());
    for (e, r) in out.iter_mut().zip(&raw).take(n) {
        let u64_at = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or([0; 8]));
        *e = HvmMemmapTableEntry {
            addr: u64_at(0),
            size: u64_at(8),
            type_: u32::from_le_bytes(r[16..20].try_into().unwrap_or([0; 4])),
            reserved: 0,
        };
    }
    n
}

/// `XENMEM_memory_map`.
#[doc(alias = "XENMEM_memory_map")]
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
const XENMEM_MEMORY_MAP: u64 = 10;
/// `XENMEM_current_reservation`: pages a domain has.
#[doc(alias = "XENMEM_current_reservation")]
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
const XENMEM_CURRENT_RESERVATION: u64 = 3;

/// Bring the platform up on a PVH boot: check `hvm_start_info`, find RAM,
/// start the heap, ask for events on [`CALLBACK_VECTOR`] and boot the
/// platform the way an Arm guest does.
///
/// Errors: [`crate::platform::BootError`].
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn boot(start_info: usize) -> Result<crate::platform::Booted, crate::platform::BootError> {
    use crate::PvHypervisor;
    use crate::platform::{Boot, BootError, Booted, GRANT_FRAMES, MAP_WINDOW_PAGES, MemoryReport};
    use crate::time::PvClock;
    use hal::{DomId, Gfn};
    use xen_pv::platform::{AutoLayout, XenPlatform};
    use xen_pv::timer::XenAlarm;
    let page = PAGE_SIZE as u64;
    // SAFETY: Xen placed hvm_start_info at this physical address, inside
    // the identity map; read by value.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            start_info as *const u8,
            core::mem::size_of::<HvmStartInfo>(),
        )
    };
    let info = parse_start_info(bytes).map_err(BootError::Pvh)?;
    let mut map = [HvmMemmapTableEntry::default(); 32];
    let n = memory_map(&info, &mut map);
    // Everything up to 2 MiB, and the image, is taken: Xen puts the start
    // info, memory map and command line just after the image, or at 1 MiB.
    let reserved_end = crate::platform::image_end().max(2 << 20);
    let (start, end) = free_ram(&map[..n], reserved_end).ok_or(BootError::NoRam)?;
    let free_pages = (end - start) / page;
    if free_pages < 64 {
        return Err(BootError::NoRam);
    }
    let heap_pages = (free_pages / 2).min(crate::heap::MAX_HEAP / page);
    // SAFETY: `[start, start + heap)` is RAM from the memory map, above the
    // image and Xen's boot data, identity-mapped, used by nothing else.
    unsafe { crate::heap::init(start as usize, (heap_pages * page) as usize) };
    let pool = (
        Gfn(start / page + heap_pages),
        (free_pages - heap_pages) as usize,
    );
    let window = WINDOW_BASE / page;
    let window_end = window + 1 + GRANT_FRAMES as u64 + MAP_WINDOW_PAGES;
    // SAFETY: the identity map covers every frame below 8 GiB, RAM and the
    // window alike.
    unsafe { PvHypervisor::set_auto_layout(IDENTITY_MAP_BYTES / page, (window, window_end)) };
    let h = PvHypervisor;
    // Events on our vector: HVM_PARAM_CALLBACK_IRQ, type 2 (vector).
    let mut p = xen_pv::abi::XenHvmParam {
        domid: DomId::SELF.0,
        pad: 0,
        index: xen_pv::abi::hvm_param::CALLBACK_IRQ,
        value: (2 << 56) | u64::from(CALLBACK_VECTOR),
    };
    xen_pv::hypercall::call_with(
        &h,
        xen_pv::abi::op::HVM_OP,
        [u64::from(xen_pv::abi::HVMOP_SET_PARAM), 0, 0, 0, 0],
        1,
        &mut p,
    )
    .map_err(|e| BootError::Map("the event callback vector", e))?;
    let dom0 = info.flags & xen_pv::abi::x86_64::sif::INITDOMAIN != 0;
    let layout = AutoLayout {
        domid: if dom0 { DomId(0) } else { DomId::SELF },
        ram: pool,
        shared_info: Gfn(window),
        grant_table: Gfn(window + 1),
        grant_frames: GRANT_FRAMES,
        map_window: (
            Gfn(window + 1 + GRANT_FRAMES as u64),
            MAP_WINDOW_PAGES as u32,
        ),
    };
    let platform =
        XenPlatform::boot_auto(h, PvClock, XenAlarm(h), &layout).map_err(BootError::Xen)?;
    {
        let base = (window * page) as *mut u8;
        // SAFETY: shared_info is mapped at `base` for good (boot_auto put
        // it there); vcpu_info[0] is at its start.
        unsafe {
            crate::irq::set_vcpu_info(base.cast());
            PvClock::set_time_info(
                base.add(core::mem::offset_of!(xen_pv::abi::x86_64::VcpuInfo, time))
                    .cast(),
            );
            idt::UPCALL_PENDING.store(
                base.add(core::mem::offset_of!(
                    xen_pv::abi::x86_64::VcpuInfo,
                    evtchn_upcall_pending
                ))
                .cast(),
                Ordering::Release,
            );
        }
    }
    Ok(Booted {
        platform,
        boot: Boot::Pvh(info),
        memory: MemoryReport {
            // One PML4, one PDPT, a page directory per GiB.
            tables: 2 + (IDENTITY_MAP_BYTES >> 30) as usize,
            heap: heap_pages * page,
            pool: pool.1 as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn finds_xen_leaves_where_they_are() {
        let xen = |at: u32| {
            move |leaf: u32| {
                if leaf == at {
                    [
                        at + 5,
                        u32::from_le_bytes(*b"XenV"),
                        u32::from_le_bytes(*b"MMXe"),
                        u32::from_le_bytes(*b"nVMM"),
                    ]
                } else {
                    [0; 4]
                }
            }
        };
        assert_eq!(xen_cpuid_base(xen(0x4000_0000)), Some(0x4000_0000));
        assert_eq!(xen_cpuid_base(xen(0x4000_0100)), Some(0x4000_0100));
        assert_eq!(xen_cpuid_base(|_| [0; 4]), None);
    }

    #[test]
    fn free_ram_is_the_largest_ram_region_above_what_is_taken() {
        let e = |addr: u64, size: u64, type_| HvmMemmapTableEntry {
            addr,
            size,
            type_,
            reserved: 0,
        };
        let map = [
            e(0, 0x9f000, hvm_memmap_type::RAM),
            e(0xa0000, 0x60000, hvm_memmap_type::RESERVED),
            e(0x100000, 0x3f00000, hvm_memmap_type::RAM),
            e(0xfee0_0000, 0x1000, hvm_memmap_type::RESERVED),
        ];
        assert_eq!(free_ram(&map, 0x200000), Some((0x200000, 0x4000000)));
        // An unaligned end is rounded down, a start up.
        let odd = [e(0x100000, 0x3f00800, hvm_memmap_type::RAM)];
        assert_eq!(free_ram(&odd, 0x200123), Some((0x201000, 0x4000000)));
        // RAM above the window's base is left alone.
        let high = [e(0x1_0000_0000, 1 << 30, hvm_memmap_type::RAM)];
        assert_eq!(free_ram(&high, 0x200000), None);
        assert_eq!(free_ram(&[], 0), None);
    }

    #[test]
    fn start_info_checks() {
        let good = HvmStartInfo {
            magic: HVM_START_MAGIC,
            version: 1,
            ..Default::default()
        };
        assert_eq!(parse_start_info(good.as_bytes()), Ok(good));
        assert_eq!(
            parse_start_info(&good.as_bytes()[..20]),
            Err(StartInfoError::Truncated)
        );
        let bad = HvmStartInfo { magic: 1, ..good };
        assert_eq!(
            parse_start_info(bad.as_bytes()),
            Err(StartInfoError::BadMagic(1))
        );
        let later = HvmStartInfo { version: 2, ..good };
        assert_eq!(
            parse_start_info(later.as_bytes()),
            Err(StartInfoError::UnknownVersion(2))
        );
    }
}
