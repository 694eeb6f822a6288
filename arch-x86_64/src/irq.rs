//! How Xen's event upcall reaches us on x86_64 PV: the event callback Xen
//! enters when an event is pending and delivery is unmasked, the delivery
//! mask (which `critical_section`, in `platform.rs`, sets), and [`block`],
//! the block hook, which blocks without losing a wake-up.
//!
//! Delivery stays masked (`vcpu_info.evtchn_upcall_mask` = 1, as Xen starts
//! us) except inside `SCHEDOP_block`, which unmasks it atomically with the
//! check for pending events. So the executor decides to sleep with delivery
//! masked; an event arriving after that decision keeps `upcall_pending` set
//! and Xen does not block; on wake-up Xen enters the callback, which counts
//! the upcall and returns with delivery masked again. The events themselves
//! are dispatched by `xen_pv::event::Events` from the bitmaps, in the
//! executor, never in the callback.
//!
//! This module never names the arch's hypervisor handle: the hypercalls it
//! needs are handed in ([`block`] gets the bare `SCHEDOP_block` from
//! `hypercall.rs`, whose `Hypervisor::block` it is).

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use xen_pv::abi::x86_64::VcpuInfo;
use xen_pv::hypercall::Hypervisor;

/// `vcpu_info[0]` inside the mapped `shared_info`, or null before boot.
static VCPU_INFO: AtomicPtr<VcpuInfo> = AtomicPtr::new(core::ptr::null_mut());
static UPCALLS: AtomicUsize = AtomicUsize::new(0);

const MASK: usize = core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask);
const PENDING: usize = core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending);

/// Count an upcall (the PVH callback vector's handler does).
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub(crate) fn note_upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
}

/// Event upcalls delivered through the callback so far.
pub fn upcalls() -> usize {
    UPCALLS.load(Ordering::Relaxed)
}

/// Record where `vcpu_info[0]` is mapped, once `shared_info` is.
///
/// # Safety
/// `vcpu_info` must stay mapped for the rest of the domain's life.
pub unsafe fn set_vcpu_info(vcpu_info: *mut VcpuInfo) {
    VCPU_INFO.store(vcpu_info, Ordering::Release);
}

fn byte(offset: usize) -> Option<&'static core::sync::atomic::AtomicU8> {
    let v = VCPU_INFO.load(Ordering::Acquire);
    if v.is_null() {
        return None;
    }
    // SAFETY: `set_vcpu_info`'s contract keeps the page mapped; the byte is
    // shared with Xen, so it is only touched atomically.
    Some(unsafe { core::sync::atomic::AtomicU8::from_ptr(v.cast::<u8>().add(offset)) })
}

/// The faulting address of the last page fault (`vcpu_info.arch.cr2`,
/// where Xen puts it for a PV guest); `None` before `shared_info` is
/// mapped.
pub fn fault_address() -> Option<u64> {
    const CR2: usize = core::mem::offset_of!(VcpuInfo, arch.cr2);
    let v = VCPU_INFO.load(Ordering::Acquire);
    if v.is_null() {
        return None;
    }
    // SAFETY: `set_vcpu_info`'s contract keeps the page mapped; Xen writes
    // `cr2` before entering the page-fault handler, which is the reader.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(v.cast::<u8>().add(CR2).cast::<u64>()) }
        .load(Ordering::Acquire)
        .into()
}

/// Mask event delivery; returns the previous mask (1 masked, 0 not).
pub fn mask() -> u8 {
    byte(MASK).map_or(1, |m| m.swap(1, Ordering::SeqCst))
}

/// Restore the mask `previous` from [`mask`]. Unmasking with an event
/// pending makes Xen deliver it now: this makes a hypercall on `h` (any
/// hypercall returns through the delivery check).
pub fn restore<H: Hypervisor>(previous: u8, h: &H) {
    let Some(m) = byte(MASK) else { return };
    m.store(previous, Ordering::SeqCst);
    if previous == 0 && byte(PENDING).is_some_and(|p| p.load(Ordering::SeqCst) != 0) {
        let _ = xen_pv::hypercall::xen_version(h);
    }
}

/// The block hook (`Hypervisor::block` of `PvHypervisor`): call
/// `sched_block`, the bare `SCHEDOP_block`, with event delivery masked, and
/// return what it returned. Xen unmasks delivery as it blocks, atomically
/// with its check for pending events, so an event that arrived after the
/// executor decided to sleep keeps `upcall_pending` set and Xen does not
/// block. The callback on wake-up masks delivery again, and so does this
/// function in case Xen returned without delivering.
pub fn block(sched_block: impl FnOnce() -> isize) -> isize {
    let _ = mask();
    let ret = sched_block();
    let _ = mask();
    ret
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod entry {
    // Xen enters the event callback with delivery masked and this frame on
    // our stack: rcx, r11 (which `sysret` clobbered), then rip, cs, rflags,
    // rsp, ss for the return. The callback saves what the Rust ABI lets a
    // call clobber, counts the upcall, and returns with `HYPERVISOR_iret`,
    // whose stub in the hypercall page pushes rcx, r11 and rax above our
    // flags word and the frame, as Xen expects. Xen restores the event mask
    // from the frame's IF, which the callback clears, so delivery is masked
    // again on return whatever it was before: see the module docs.
    core::arch::global_asm!(
        r#"
        .section .text.xenpal_events, "ax"
        .global xenpal_event_callback
    xenpal_event_callback:
        pop     rcx
        pop     r11
        and     qword ptr [rsp + 16], ~0x200    // saved IF clear: stay masked
        push    rax
        push    rcx
        push    rdx
        push    rsi
        push    rdi
        push    r8
        push    r9
        push    r10
        push    r11
        push    rbx
        mov     rbx, rsp
        and     rsp, -16
        cld
        call    xenpal_event_upcall
        mov     rsp, rbx
        pop     rbx
        pop     r11
        pop     r10
        pop     r9
        pop     r8
        pop     rdi
        pop     rsi
        pop     rdx
        pop     rcx
        pop     rax
        push    0                       // flags: not returning from syscall
        jmp     xenpal_hypercall_page + {iret} * 32
    "#,
        iret = const xen_pv::abi::op::IRET,
    );

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_event_upcall() {
        super::UPCALLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    unsafe extern "C" {
        fn xenpal_event_callback();
    }

    /// The event callback's address.
    pub fn callback() -> u64 {
        xenpal_event_callback as *const () as u64
    }
}

/// Register the event callback with Xen, through `h`.
///
/// Errors: what `CALLBACKOP_register` returns.
pub fn register<H: Hypervisor>(h: &H) -> Result<(), xen_pv::abi::Errno> {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    return xen_pv::hypercall::callback_register(
        h,
        xen_pv::abi::x86_64::callback::EVENT,
        entry::callback(),
        0,
    );
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    {
        let _ = h;
        Err(xen_pv::abi::Errno::ENOSYS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::mem::Gfn;
    use xen_pv::abi::Errno;
    use xen_pv::hypercall::ArgBuf;
    use xen_pv::shm::RawMemory;

    /// A hypervisor that must not be called.
    #[derive(Clone)]
    struct Unused;

    impl Hypervisor for Unused {
        type Mem = RawMemory;
        fn hypercall(&self, _op: u32, _args: [u64; 5], _buf: Option<ArgBuf<'_>>) -> isize {
            panic!("no hypercall expected")
        }
        fn map_frames(&self, _gfn: Gfn, _count: usize) -> Result<RawMemory, Errno> {
            Err(Errno::EINVAL)
        }
    }

    #[test]
    fn before_shared_info_is_mapped_delivery_counts_as_masked() {
        assert_eq!(mask(), 1);
        restore(0, &Unused);
        assert_eq!(upcalls(), 0);
        assert_eq!(register(&Unused), Err(Errno::ENOSYS));
        assert_eq!(block(|| 7), 7);
    }
}
