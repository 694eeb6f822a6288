//! `hvm_op`: the HVM parameters an auto-translated guest finds its
//! xenstore and console through (Xen's `xen/arch/*/hvm.c`).

use crate::domain::{Domain, HVM_NR_PARAMS};
use crate::guest_access::{Args, HResult};
use crate::hypervisor::Core;
use hal::DomId;
use std::sync::Arc;
use xen_pv::abi::{self, Errno};

pub(crate) fn hvm_op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        abi::HVMOP_GET_PARAM | abi::HVMOP_SET_PARAM => {
            let mut x: abi::XenHvmParam = a.read(1)?;
            let target = core.resolve(dom, DomId(x.domid)).ok_or(Errno::ESRCH)?;
            if target.id != dom.id && !dom.privileged {
                return Err(Errno::EPERM);
            }
            if x.index as usize >= HVM_NR_PARAMS {
                return Err(Errno::EINVAL);
            }
            if cmd == abi::HVMOP_SET_PARAM {
                if !dom.privileged {
                    return Err(Errno::EPERM);
                }
                target.st.lock().unwrap().hvm_params[x.index as usize] = x.value;
                return Ok(0);
            }
            x.value = target.st.lock().unwrap().hvm_params[x.index as usize];
            a.write(1, &x)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
