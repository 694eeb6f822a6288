//! `xen_version` (Xen's `xen/common/kernel.c`): which Xen this is — the
//! simulator models 4.20 (docs/FIDELITY.md) — and its features.

use crate::guest_access::{Args, HResult};
use xen_pv::abi::{self, Errno};

pub(crate) fn xen_version(cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        abi::XENVER_GET_FEATURES => {
            // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
            let mut x: [u32; 2] = a.read(1)?;
            if x[0] != 0 {
                return Err(Errno::EINVAL);
            }
            // An auto-translated guest, as on Arm.
            x[1] = 1 << abi::XENFEAT_AUTO_TRANSLATED_PHYSMAP;
            a.write(1, &x)?;
            Ok(0)
        }
        // The page size, asked with a null handle.
        abi::XENVER_PAGESIZE if a.raw[1] == 0 => Ok(hal::PAGE_SIZE as isize),
        abi::XENVER_PAGESIZE => Err(Errno::EINVAL),
        // The hypervisor the simulator models (docs/FIDELITY.md).
        abi::XENVER_VERSION => Ok((4 << 16) | 20),
        abi::XENVER_EXTRAVERSION => {
            let mut v = [0u8; 16];
            v[..4].copy_from_slice(b"-sim");
            a.write(1, &v)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
