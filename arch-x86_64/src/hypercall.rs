//! Hypercalls on x86_64 PV: `call` into the hypercall page Xen filled in
//! (entry `op` at `op * 32`), arguments in `rdi, rsi, rdx, r10, r8`, the
//! result in `rax`. And the [`Hypervisor`] handle `xen_pv` reaches Xen
//! through, whose block hook is [`crate::irq::block`].
//!
//! Memory: with `VIRT_BASE` 0 a PV guest's virtual address equals its
//! pseudo-physical address, so guest frame `n` (a PFN) is at `n << 12` once
//! [`crate::mm`] has mapped it. Grant entries need machine frames; the p2m
//! list Xen gave us translates ([`Hypervisor::xen_frame`]).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use hal::mem::Gfn;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, Hypervisor, marshal};
use xen_pv::shm::RawMemory;

/// Entries in the hypercall page (32 bytes each).
pub const HYPERCALL_PAGE_ENTRIES: u32 = 128;

/// Issue hypercall `op` with raw arguments.
///
/// # Safety
/// Every argument Xen interprets as a guest address must point to memory
/// valid for what that hypercall reads or writes, for the duration of the
/// call.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub unsafe fn hypercall_raw(op: u32, args: [u64; 5]) -> isize {
    if op >= HYPERCALL_PAGE_ENTRIES {
        return Errno::ENOSYS.ret();
    }
    let ret: u64;
    // SAFETY: the hypercall page is filled by Xen at boot (ELF note
    // HYPERCALL_PAGE); its entry `op` issues the hypercall and returns.
    // Xen reads only the registers named here and the memory the caller
    // vouches for; it may clobber the argument registers, rcx and r11
    // (`syscall`), all declared.
    unsafe {
        core::arch::asm!(
            "lea {entry}, [rip + xenpal_hypercall_page]",
            "shl {op:r}, 5",
            "add {entry}, {op:r}",
            "call {entry}",
            entry = out(reg) _,
            op = inout(reg) u64::from(op) => _,
            inout("rdi") args[0] => _,
            inout("rsi") args[1] => _,
            inout("rdx") args[2] => _,
            inout("r10") args[3] => _,
            inout("r8") args[4] => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret as isize
}

/// Hypercalls on the host (where there is no Xen): always `-ENOSYS`.
///
/// # Safety
/// None needed; the signature matches the real one.
#[cfg(not(all(target_arch = "x86_64", target_os = "none")))]
pub unsafe fn hypercall_raw(_op: u32, _args: [u64; 5]) -> isize {
    Errno::ENOSYS.ret()
}

/// What the hypervisor handle knows about memory, set once by the boot.
struct Layout {
    /// The p2m list (`nr_pages` machine frames), or null before boot.
    p2m: AtomicPtr<u64>,
    nr_pages: AtomicU64,
    /// Frames `[1, ram_end)` are mapped RAM.
    ram_end: AtomicU64,
    /// Frames `[window_start, window_end)` are the window for Xen's pages
    /// and foreign grants (mapped as they are used).
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// PVH (auto-translated): a frame is its own number to Xen.
    auto: AtomicBool,
}

static LAYOUT: Layout = Layout {
    p2m: AtomicPtr::new(core::ptr::null_mut()),
    nr_pages: AtomicU64::new(0),
    ram_end: AtomicU64::new(0),
    window_start: AtomicU64::new(0),
    window_end: AtomicU64::new(0),
    auto: AtomicBool::new(false),
};

/// The hypervisor on x86_64 PV.
#[derive(Copy, Clone, Debug, Default)]
pub struct PvHypervisor;

impl PvHypervisor {
    /// Record the memory layout once the boot has mapped it: the p2m list
    /// at `p2m` (for `nr_pages` frames), RAM mapped up to `ram_end`, the
    /// window `[window.0, window.1)`.
    ///
    /// # Safety
    /// `p2m` must point to `nr_pages` readable `u64`s that stay valid and
    /// unmodified for the rest of the domain's life; frames `[1, ram_end)`
    /// must be mapped at their pseudo-physical addresses.
    pub unsafe fn set_layout(p2m: *const u64, nr_pages: u64, ram_end: u64, window: (u64, u64)) {
        LAYOUT.nr_pages.store(nr_pages, Ordering::Relaxed);
        LAYOUT.ram_end.store(ram_end, Ordering::Relaxed);
        LAYOUT.window_start.store(window.0, Ordering::Relaxed);
        LAYOUT.window_end.store(window.1, Ordering::Relaxed);
        LAYOUT.p2m.store(p2m.cast_mut(), Ordering::Release);
    }

    /// Record the layout of a PVH (auto-translated) guest: frames
    /// `[1, mapped_end)` are mapped one to one and are what Xen calls them;
    /// the window `[window.0, window.1)` is inside.
    ///
    /// # Safety
    /// Frames `[1, mapped_end)` must be mapped at their physical addresses
    /// for the rest of the domain's life.
    pub unsafe fn set_auto_layout(mapped_end: u64, window: (u64, u64)) {
        LAYOUT.ram_end.store(mapped_end, Ordering::Relaxed);
        LAYOUT.window_start.store(window.0, Ordering::Relaxed);
        LAYOUT.window_end.store(window.1, Ordering::Relaxed);
        LAYOUT.auto.store(true, Ordering::Release);
    }

    /// The machine frame of our frame `pfn`, from the p2m list.
    pub fn mfn(pfn: u64) -> Option<u64> {
        let p2m = LAYOUT.p2m.load(Ordering::Acquire);
        if p2m.is_null() || pfn >= LAYOUT.nr_pages.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: `set_layout`'s contract: `p2m` holds `nr_pages` entries
        // that stay valid; `pfn` is below that.
        Some(unsafe { p2m.add(pfn as usize).read() })
    }
}

impl Hypervisor for PvHypervisor {
    type Mem = RawMemory;

    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        // SAFETY: `marshal` passes addresses only of buffers it keeps alive
        // (and does not otherwise touch) until this call returns: the
        // caller's argument or its own stack copy. They are virtual
        // addresses, which is what a PV guest's hypercalls take.
        marshal(args, buf, |a| unsafe { hypercall_raw(op, a) })
    }

    /// The block hook: [`crate::irq::block`] around the bare
    /// `SCHEDOP_block`.
    fn block(&self) -> isize {
        #[cfg(all(target_arch = "x86_64", target_os = "none"))]
        if crate::pvh::active() {
            return crate::pvh::block();
        }
        crate::irq::block(|| {
            // SAFETY: SCHEDOP_block takes no pointer argument.
            unsafe {
                hypercall_raw(
                    xen_pv::abi::op::SCHED_OP,
                    [u64::from(xen_pv::abi::schedop::BLOCK), 0, 0, 0, 0],
                )
            }
        })
    }

    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<RawMemory, Errno> {
        let end = gfn.0.checked_add(count as u64).ok_or(Errno::EINVAL)?;
        let in_ram = gfn.0 >= 1 && end <= LAYOUT.ram_end.load(Ordering::Relaxed);
        let in_window = gfn.0 >= LAYOUT.window_start.load(Ordering::Relaxed)
            && end <= LAYOUT.window_end.load(Ordering::Relaxed);
        if count == 0 || !(in_ram || in_window) {
            return Err(Errno::EINVAL);
        }
        let len = count.checked_mul(hal::PAGE_SIZE).ok_or(Errno::EINVAL)?;
        let ptr = core::ptr::NonNull::new(gfn.addr() as *mut u8).ok_or(Errno::EINVAL)?;
        // SAFETY: `gfn..end` is inside RAM that `mm` mapped at its
        // pseudo-physical address (`set_layout`'s contract), or inside the
        // window, whose pages callers reach only once Xen's page or a grant
        // is mapped there (the `Hypervisor::map_frames` contract). All
        // access goes through `RawMemory`'s atomic accessors.
        Ok(unsafe { RawMemory::new(ptr, len) })
    }

    fn xen_frame(&self, gfn: Gfn) -> Result<u64, Errno> {
        if gfn.0 == 0 || gfn.0 >= LAYOUT.ram_end.load(Ordering::Relaxed) {
            return Err(Errno::EINVAL);
        }
        if LAYOUT.auto.load(Ordering::Acquire) {
            return Ok(gfn.0);
        }
        Self::mfn(gfn.0).ok_or(Errno::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_boot_nothing_is_mapped() {
        let h = PvHypervisor;
        assert_eq!(h.map_frames(Gfn(5), 1).err(), Some(Errno::EINVAL));
        assert_eq!(h.xen_frame(Gfn(5)), Err(Errno::EINVAL));
        assert_eq!(PvHypervisor::mfn(5), None);
        // SAFETY: no pointer argument.
        assert_eq!(unsafe { hypercall_raw(17, [0; 5]) }, Errno::ENOSYS.ret());
    }
}
