//! `memory_op` (Xen's `xen/common/memory.c`): `XENMEM_add_to_physmap`,
//! placing `shared_info` and grant-table frames in an auto-translated
//! guest's physical address space (its [`crate::p2m`]).

use crate::domain::Domain;
use crate::guest_access::{Args, HResult};
use crate::hypervisor::Core;
use hal::DomId;
use hal::mem::Gfn;
use std::sync::Arc;
use xen_pv::abi::{self, Errno};

pub(crate) fn memory_op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    if cmd != abi::XENMEM_ADD_TO_PHYSMAP {
        return Err(Errno::ENOSYS);
    }
    let x: abi::XenAddToPhysmap = a.read(1)?;
    let target = core.resolve(dom, DomId(x.domid)).ok_or(Errno::ESRCH)?;
    if target.id != dom.id && !dom.privileged {
        return Err(Errno::EPERM);
    }
    let gpfn = Gfn(x.gpfn);
    match x.space {
        abi::mapspace::SHARED_INFO => {
            if x.idx != 0 {
                return Err(Errno::EINVAL);
            }
            target.mem.map_special(gpfn, &target.shared_info, 0);
            Ok(0)
        }
        abi::mapspace::GRANT_TABLE => {
            if x.idx & 0x8000_0000 != 0 {
                // Status frames exist only in grant table v2.
                return Err(Errno::EINVAL);
            }
            let idx = u32::try_from(x.idx).map_err(|_| Errno::EINVAL)?;
            if idx >= target.max_grant_frames {
                return Err(Errno::EINVAL);
            }
            {
                let mut st = target.st.lock().unwrap();
                st.nr_grant_frames = st.nr_grant_frames.max(idx + 1);
            }
            target
                .mem
                .map_special(gpfn, &target.grant_block, idx as usize);
            Ok(0)
        }
        _ => Err(Errno::EOPNOTSUPP),
    }
}
