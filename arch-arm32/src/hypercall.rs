//! Hypercalls on 32-bit Arm: `hvc #0xEA1` with the call number in `r12`
//! and up to five 32-bit arguments in `r0`..`r4`; the result comes back in
//! `r0`. Xen's arm32 ABI passes every argument as one register, so a value
//! that does not fit 32 bits is refused (`EINVAL`) rather than truncated.

use hal::mem::Gfn;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, Hypervisor, marshal};
use xen_pv::shm::RawMemory;

/// Issue hypercall `op` with raw 32-bit arguments.
///
/// # Safety
/// Every argument Xen interprets as a guest address must point to memory
/// valid for what that hypercall reads or writes, for the duration of the
/// call.
#[cfg(all(target_arch = "arm", target_os = "none"))]
pub unsafe fn hypercall_raw(op: u32, args: [u32; 5]) -> i32 {
    let ret: u32;
    // SAFETY: `hvc #0xEA1` traps to Xen, which reads only the registers
    // named here and the memory the caller vouches for, and preserves all
    // other registers but r0 (the result).
    unsafe {
        core::arch::asm!(
            // hvc #0xEA1, spelled out: it needs the virtualization
            // extension the assembler does not assume for armv7a.
            ".inst 0xe140ea71",
            in("r12") op,
            inout("r0") args[0] => ret,
            inout("r1") args[1] => _,
            inout("r2") args[2] => _,
            inout("r3") args[3] => _,
            inout("r4") args[4] => _,
            options(nostack),
        );
    }
    ret as i32
}

/// Hypercalls off target (the host, where there is no Xen): `-ENOSYS`.
///
/// # Safety
/// None needed; the signature matches the real one.
#[cfg(not(all(target_arch = "arm", target_os = "none")))]
pub unsafe fn hypercall_raw(_op: u32, _args: [u32; 5]) -> i32 {
    Errno::ENOSYS.ret() as i32
}

/// The arguments as 32-bit registers, or `None` if one does not fit.
pub fn narrow(args: [u64; 5]) -> Option<[u32; 5]> {
    let mut out = [0u32; 5];
    for (o, a) in out.iter_mut().zip(args) {
        *o = u32::try_from(a).ok()?;
    }
    Some(out)
}

/// The hypervisor on 32-bit Arm. Memory is identity-mapped below 4 GiB
/// (virtual address = guest-physical address), so reaching a frame is a
/// pointer computation.
#[derive(Copy, Clone, Debug, Default)]
pub struct ArmHypervisor;

impl Hypervisor for ArmHypervisor {
    type Mem = RawMemory;

    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        marshal(args, buf, |a| match narrow(a) {
            // SAFETY: `marshal` passes addresses only of buffers it keeps
            // alive until this call returns.
            Some(a) => (unsafe { hypercall_raw(op, a) }) as isize,
            None => Errno::EINVAL.ret(),
        })
    }

    /// The block hook: [`crate::irq::block`] around the bare
    /// `SCHEDOP_block`.
    fn block(&self) -> isize {
        crate::irq::block(|| {
            // SAFETY: SCHEDOP_block takes no pointer argument.
            (unsafe {
                hypercall_raw(
                    xen_pv::abi::op::SCHED_OP,
                    [xen_pv::abi::schedop::BLOCK, 0, 0, 0, 0],
                )
            }) as isize
        })
    }

    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<RawMemory, Errno> {
        let len = count.checked_mul(hal::PAGE_SIZE).ok_or(Errno::EINVAL)?;
        // Only what a 32-bit address reaches is mapped.
        let addr = usize::try_from(gfn.addr()).map_err(|_| Errno::EINVAL)?;
        addr.checked_add(len).ok_or(Errno::EINVAL)?;
        let ptr = core::ptr::NonNull::new(addr as *mut u8).ok_or(Errno::EINVAL)?;
        // SAFETY: the identity map (`mm`) covers every frame Xen can place
        // for us below 4 GiB (RAM, the grant region and the foreign-page
        // window) as Normal write-back memory, so `addr..addr+len` is
        // mapped; callers reach only frames that are populated (the
        // `Hypervisor::map_frames` contract), and all access goes through
        // `RawMemory`'s atomic accessors.
        Ok(unsafe { RawMemory::new(ptr, len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_that_do_not_fit_a_register_are_refused() {
        assert_eq!(narrow([1, 2, 3, 4, 5]), Some([1, 2, 3, 4, 5]));
        assert_eq!(narrow([1 << 32, 0, 0, 0, 0]), None);
        assert_eq!(
            ArmHypervisor.hypercall(18, [0, 1 << 40, 0, 0, 0], None),
            Errno::EINVAL.ret()
        );
    }

    #[test]
    fn frames_past_what_the_address_space_holds_are_refused() {
        assert_eq!(
            ArmHypervisor.map_frames(Gfn(u64::MAX >> 12), 2).err(),
            Some(Errno::EINVAL)
        );
    }
}
