//! XSM, the policy of which domains may act on which: Xen's dummy policy
//! (a guest acts on itself; the control domain on anyone), and, with
//! `SimConfig::xsm_silo`, SILO (Xen's `xen/xsm/silo.c`, the default of Arm
//! builds): unprivileged guests may talk to privileged ones only. The dummy
//! policy's checks sit where Xen makes them, in each operation; this module
//! holds SILO's.

use crate::domain::Domain;
use crate::hypervisor::Core;

/// Whether SILO forbids `a` and `b` to talk: it is on, they differ, and
/// neither is privileged.
#[doc(alias = "silo_mode_dom_check")]
pub(crate) fn silo_denies(core: &Core, a: &Domain, b: &Domain) -> bool {
    core.xsm_silo && a.id != b.id && !a.privileged && !b.privileged
}
