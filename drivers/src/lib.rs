//! # xenpal-drivers
//!
//! PV drivers (console, netfront, blkfront) and the xenbus frontend state
//! machine, generic over `xenpal_hal::Platform`. Not yet written: see the
//! drivers issue.

#![no_std]
#![forbid(unsafe_code)]
