//! The boot information: the device tree Xen hands the guest in `r2`,
//! parsed by `xen_pv::devicetree`, as on AArch64.

pub use xen_pv::devicetree::*;
