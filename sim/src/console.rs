//! `console_io`: a guest writing to Xen's own console (Xen's
//! `xen/drivers/char/console.c`). Reading it is dom0's.

use crate::domain::Domain;
use crate::guest_access::{Args, HResult};
use crate::hypervisor::Core;
use std::sync::Arc;
use xen_pv::abi::{self, Errno};

pub(crate) fn console_io(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &Args<'_>) -> HResult {
    match cmd {
        abi::CONSOLEIO_WRITE => {
            let bytes = a.bytes(2)?;
            let n = a.raw[1] as usize;
            let bytes = bytes.get(..n).ok_or(Errno::EFAULT)?;
            core.console_out(dom, bytes);
            Ok(0)
        }
        abi::CONSOLEIO_READ => {
            if !dom.privileged {
                return Err(Errno::EPERM);
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}
