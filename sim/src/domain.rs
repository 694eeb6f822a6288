//! `vcpu_op` (Xen's `xen/common/domain.c`): the runstate area and
//! information of the domain's one vCPU.

use crate::guest_access::{Args, HResult};
use crate::hypervisor::Domain;
use std::sync::Arc;
use xen_pv::abi::{self, Errno};

pub(crate) fn vcpu_op(dom: &Arc<Domain>, cmd: u32, vcpu: u64, a: &mut Args<'_>) -> HResult {
    if vcpu != 0 {
        return Err(Errno::ENOENT);
    }
    match cmd {
        abi::VCPUOP_GET_RUNSTATE_INFO => {
            let r = *dom.runstate.lock().unwrap();
            a.write(2, &r)?;
            Ok(0)
        }
        abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let x: abi::VcpuRegisterRunstateMemoryArea = a.read(2)?;
            if x.addr == 0 {
                *dom.runstate_area.lock().unwrap() = None;
                return Ok(0);
            }
            // An identity-mapped guest passes the guest-physical address.
            let size = core::mem::size_of::<abi::VcpuRunstateInfo>() as u64;
            let off = x.addr % hal::PAGE_SIZE as u64;
            if !x.addr.is_multiple_of(8) || off + size > hal::PAGE_SIZE as u64 {
                return Err(Errno::EINVAL);
            }
            let gfn = hal::mem::Gfn::containing(x.addr);
            dom.mem.map_frames(gfn, 1).map_err(|_| Errno::EFAULT)?;
            *dom.runstate_area.lock().unwrap() = Some((gfn, off as usize));
            let r = *dom.runstate.lock().unwrap();
            dom.publish_runstate(&r);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
