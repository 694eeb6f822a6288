//! Hypercalls on Arm: `hvc #0xEA1` with the call number in `x16` and up to
//! five arguments in `x0`..`x4`; the result comes back in `x0`.

use hal::mem::Gfn;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, ArgData, Hypervisor};
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

/// Largest argument buffer passed by value through [`ArmHypervisor`]: the
/// buffer is copied to an 8-byte aligned stack area so guest handles inside
/// it can be patched.
const MAX_ARG: usize = 1024;

impl Hypervisor for ArmHypervisor {
    type Mem = RawMemory;

    fn hypercall(&self, op: u32, mut args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        if op == xen_pv::abi::op::SCHED_OP && args[0] == u64::from(xen_pv::abi::schedop::BLOCK) {
            return block();
        }
        let Some(buf) = buf else {
            // SAFETY: no argument is a pointer (the caller passed no buffer).
            return unsafe { hypercall_raw(u64::from(op), args) };
        };
        if buf.slot >= 5 {
            return Errno::EFAULT.ret();
        }
        let len = buf.data.bytes().len();
        if buf.handles.is_empty() {
            // No handles to patch: pass the caller's buffer itself.
            let ptr = match &buf.data {
                ArgData::In(b) => b.as_ptr(),
                ArgData::InOut(b) => b.as_ptr(),
            };
            args[buf.slot] = ptr as u64;
            // SAFETY: `ptr` addresses `len` live bytes the caller lent us
            // for this call (mutable for InOut, which Xen may write); Xen
            // accesses only the structure the ABI defines at that address.
            return unsafe { hypercall_raw(u64::from(op), args) };
        }
        if len > MAX_ARG {
            return Errno::E2BIG.ret();
        }
        let mut copy = [0u64; MAX_ARG / 8];
        let bytes = copy_bytes_mut(&mut copy);
        bytes[..len].copy_from_slice(buf.data.bytes());
        let base = bytes.as_ptr() as u64;
        for h in buf.handles {
            if h.at + 8 > len || h.target > len {
                return Errno::EFAULT.ret();
            }
            bytes[h.at..h.at + 8].copy_from_slice(&(base + h.target as u64).to_le_bytes());
        }
        args[buf.slot] = base;
        // SAFETY: `copy` is a live stack buffer holding the argument with
        // its guest handles pointing inside it; it outlives the call.
        let ret = unsafe { hypercall_raw(u64::from(op), args) };
        if let ArgData::InOut(out) = buf.data {
            let bytes = copy_bytes_mut(&mut copy);
            out.copy_from_slice(&bytes[..len]);
        }
        ret
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

/// `SCHEDOP_block` without losing a wake-up. The IRQ handler silences the
/// (level-triggered) virtual timer when it fires, so a timer that fired
/// after the executor decided to sleep would leave nothing pending to wake
/// the vCPU. So: mask IRQs, and block only if no interrupt was handled
/// since the executor last looked. An interrupt arriving after the mask
/// stays pending in the vGIC, and Xen does not block a vCPU with a pending
/// interrupt; Xen unmasks IRQs on return, and the handler then runs.
fn block() -> isize {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    {
        // SAFETY: masking IRQs on the only vCPU; undone below or by Xen.
        unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
        if crate::irq::take_activity() {
            // SAFETY: unmasks what we masked just above.
            unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
            return 0;
        }
        // SAFETY: SCHEDOP_block takes no pointer argument.
        unsafe {
            hypercall_raw(
                u64::from(xen_pv::abi::op::SCHED_OP),
                [u64::from(xen_pv::abi::schedop::BLOCK), 0, 0, 0, 0],
            )
        }
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    Errno::ENOSYS.ret()
}

fn copy_bytes_mut(words: &mut [u64; MAX_ARG / 8]) -> &mut [u8] {
    zerocopy::IntoBytes::as_mut_bytes(words)
}
