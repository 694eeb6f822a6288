//! Hypercalls on Arm: `hvc #0xEA1` with the call number in `x16` and up to
//! five arguments in `x0`..`x4`; the result comes back in `x0`. And the
//! [`Hypervisor`] handle `xen_pv` reaches Xen through, whose block hook is
//! [`crate::irq::block`].

use hal::mem::Gfn;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, Hypervisor, marshal};
use xen_pv::shm::RawMemory;

/// Issue hypercall `op` with raw arguments.
///
/// # Safety
/// Every argument Xen interprets as a guest address must point to memory
/// valid for what that hypercall reads or writes, for the duration of the
/// call.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub unsafe fn hypercall_raw(op: u64, args: [u64; 5]) -> isize {
    let ret: u64;
    // SAFETY: `hvc #0xEA1` traps to Xen, which reads only the registers
    // named here and the memory the caller vouches for; it preserves all
    // other registers except x0 (result) and the listed clobbers.
    unsafe {
        core::arch::asm!(
            "hvc #0xEA1",
            in("x16") op,
            inout("x0") args[0] => ret,
            inout("x1") args[1] => _,
            inout("x2") args[2] => _,
            inout("x3") args[3] => _,
            inout("x4") args[4] => _,
            options(nostack),
        );
    }
    ret as isize
}

/// Hypercalls on the host (where there is no Xen): always `-ENOSYS`. Lets
/// the crate's data structures build and test on the host.
///
/// # Safety
/// None needed; the signature matches the real one.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub unsafe fn hypercall_raw(_op: u64, _args: [u64; 5]) -> isize {
    Errno::ENOSYS.ret()
}

/// The hypervisor on Arm. Memory is identity-mapped (virtual address =
/// guest-physical address), so reaching a frame is a pointer computation.
#[derive(Copy, Clone, Debug, Default)]
pub struct ArmHypervisor;

impl Hypervisor for ArmHypervisor {
    type Mem = RawMemory;

    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        // SAFETY: `marshal` passes addresses only of buffers it keeps alive
        // (and does not otherwise touch) until this call returns: the
        // caller's argument or its own stack copy; Xen accesses only the
        // structure the ABI defines at that address.
        marshal(args, buf, |a| unsafe { hypercall_raw(u64::from(op), a) })
    }

    /// The block hook: [`crate::irq::block`] around the bare
    /// `SCHEDOP_block`.
    fn block(&self) -> isize {
        crate::irq::block(|| {
            // SAFETY: SCHEDOP_block takes no pointer argument.
            unsafe {
                hypercall_raw(
                    u64::from(xen_pv::abi::op::SCHED_OP),
                    [u64::from(xen_pv::abi::schedop::BLOCK), 0, 0, 0, 0],
                )
            }
        })
    }

    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<RawMemory, Errno> {
        let addr = gfn.addr();
        let len = count.checked_mul(hal::PAGE_SIZE).ok_or(Errno::EINVAL)?;
        let ptr = core::ptr::NonNull::new(addr as *mut u8).ok_or(Errno::EINVAL)?;
        // SAFETY: the identity map (`mm`) covers every frame Xen can place
        // for us (RAM, the grant/extended regions) as Normal write-back
        // memory, so `addr..addr+len` is mapped; callers reach only frames
        // that are populated (the `Hypervisor::map_frames` contract), and
        // all access goes through `RawMemory`'s atomic accessors.
        Ok(unsafe { RawMemory::new(ptr, len) })
    }
}
