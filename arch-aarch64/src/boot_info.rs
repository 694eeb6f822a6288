//! The boot information: the device tree Xen hands the guest in `x0`,
//! parsed by `xen_pv::devicetree`, which 32-bit Arm shares.

pub use xen_pv::devicetree::*;
