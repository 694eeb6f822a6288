//! Event delivery on x86_64 PV: the event callback Xen enters when an event
//! is pending and delivery is unmasked, the failsafe callback, blocking
//! without losing a wake-up, and `critical_section` by masking delivery.
//!
//! Delivery stays masked (`vcpu_info.evtchn_upcall_mask` = 1, as Xen starts
//! us) except inside `SCHEDOP_block`, which unmasks it atomically with the
//! check for pending events. So the executor decides to sleep with delivery
//! masked; an event arriving after that decision keeps `upcall_pending` set
//! and Xen does not block; on wake-up Xen enters the callback, which counts
//! the upcall and returns with delivery masked again. The events themselves
//! are dispatched by `xen_pv::event::Events` from the bitmaps, in the
//! executor, never in the callback.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use xen_pv::abi::x86_64::VcpuInfo;

/// `vcpu_info[0]` inside the mapped `shared_info`, or null before boot.
static VCPU_INFO: AtomicPtr<VcpuInfo> = AtomicPtr::new(core::ptr::null_mut());
static UPCALLS: AtomicUsize = AtomicUsize::new(0);

const MASK: usize = core::mem::offset_of!(VcpuInfo, evtchn_upcall_mask);
const PENDING: usize = core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending);

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
/// pending makes Xen deliver it now (any hypercall returns through the
/// delivery check).
pub fn restore(previous: u8) {
    let Some(m) = byte(MASK) else { return };
    m.store(previous, Ordering::SeqCst);
    if previous == 0 && byte(PENDING).is_some_and(|p| p.load(Ordering::SeqCst) != 0) {
        let _ = xen_pv::hypercall::xen_version(&crate::PvHypervisor);
    }
}

/// `SCHEDOP_block`: sleep until an event is pending. Xen unmasks delivery
/// as it blocks; the callback on wake-up masks it again, and so does this
/// function in case Xen returned without delivering.
pub fn block() -> isize {
    let _ = mask();
    // SAFETY: SCHEDOP_block takes no pointer argument.
    let ret = unsafe {
        crate::hypercall::hypercall_raw(
            xen_pv::abi::op::SCHED_OP,
            [u64::from(xen_pv::abi::schedop::BLOCK), 0, 0, 0, 0],
        )
    };
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

        // Xen could not load our segment registers on a return: frame
        // rcx, r11, ds, es, fs, gs, rip, cs, rflags, rsp, ss. Report it.
        .global xenpal_failsafe_callback
    xenpal_failsafe_callback:
        mov     rdi, rsp
        and     rsp, -16
        call    xenpal_failsafe
    2:  jmp     2b
    "#,
        iret = const xen_pv::abi::op::IRET,
    );

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_event_upcall() {
        super::UPCALLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    #[unsafe(no_mangle)]
    extern "C" fn xenpal_failsafe(frame: *const [u64; 11]) -> ! {
        // SAFETY: the entry code passes the frame Xen pushed on our stack.
        let f = unsafe { frame.read() };
        crate::eprintln!(
            "xenpal: unexpected exception: failsafe callback (Xen could not restore segments: ds {:#x} es {:#x} fs {:#x} gs {:#x}) at rip {:#x}",
            f[2],
            f[3],
            f[4],
            f[5],
            f[6]
        );
        crate::platform::crash()
    }

    unsafe extern "C" {
        fn xenpal_event_callback();
        fn xenpal_failsafe_callback();
    }

    /// Register the event and failsafe callbacks.
    pub fn register() -> Result<(), xen_pv::abi::Errno> {
        use xen_pv::abi::x86_64::callback;
        let h = crate::PvHypervisor;
        xen_pv::hypercall::callback_register(
            &h,
            callback::EVENT,
            xenpal_event_callback as *const () as u64,
            0,
        )?;
        xen_pv::hypercall::callback_register(
            &h,
            callback::FAILSAFE,
            xenpal_failsafe_callback as *const () as u64,
            callback::F_MASK_EVENTS,
        )
    }
}

/// Register the event and failsafe callbacks with Xen.
///
/// Errors: what `CALLBACKOP_register` returns.
pub fn register() -> Result<(), xen_pv::abi::Errno> {
    #[cfg(all(target_arch = "x86_64", target_os = "none"))]
    return entry::register();
    #[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
    Err(xen_pv::abi::Errno::ENOSYS)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod cs {
    struct EventMask;
    critical_section::set_impl!(EventMask);

    // SAFETY: one vCPU; masking event delivery in `vcpu_info` keeps the
    // event callback (the only code that can interrupt us) from running
    // until the previous mask is restored.
    unsafe impl critical_section::Impl for EventMask {
        unsafe fn acquire() -> u8 {
            super::mask()
        }
        unsafe fn release(previous: u8) {
            super::restore(previous)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_shared_info_is_mapped_delivery_counts_as_masked() {
        assert_eq!(mask(), 1);
        restore(0);
        assert_eq!(upcalls(), 0);
        assert_eq!(register(), Err(xen_pv::abi::Errno::ENOSYS));
    }
}
