//! xenstored's end of a domain's ring page (`xenstore_domain_interface`).
//!
//! The guest produces requests into `req` and consumes replies from `rsp`.
//! We read the peer's index with `Acquire` before touching data and publish
//! ours with `Release` after, as the guest client does. The page is hostile:
//! an index pair more than a ring apart is reported as
//! `XENSTORE_ERROR_RINGIDX` and nothing is copied.

use core::mem::offset_of;
use core::sync::atomic::Ordering;
use xenpal_hal::mem::SharedMemory;
use xenpal_xen_pv::abi::io::{
    XENSTORE_CONNECTED, XENSTORE_ERROR_RINGIDX, XENSTORE_RECONNECT, XENSTORE_RING_SIZE,
    XENSTORE_SERVER_FEATURE_ERROR, XenstoreDomainInterface as Intf,
};

const REQ: usize = offset_of!(Intf, req);
const RSP: usize = offset_of!(Intf, rsp);
const REQ_CONS: usize = offset_of!(Intf, req_cons);
const REQ_PROD: usize = offset_of!(Intf, req_prod);
const RSP_CONS: usize = offset_of!(Intf, rsp_cons);
const RSP_PROD: usize = offset_of!(Intf, rsp_prod);
const FEATURES: usize = offset_of!(Intf, server_features);
const CONNECTION: usize = offset_of!(Intf, connection);
const ERROR: usize = offset_of!(Intf, error);
const SIZE: u32 = XENSTORE_RING_SIZE as u32;

/// Bytes of the interface; a ring page must be at least this long.
pub(crate) const INTERFACE_LEN: usize = core::mem::size_of::<Intf>();

/// The features this xenstored offers (`server_features`).
pub(crate) const FEATURES_OFFERED: u32 = XENSTORE_SERVER_FEATURE_ERROR;

pub(crate) struct Ring {
    mem: Box<dyn SharedMemory + Send>,
}

impl Ring {
    /// Panics if `mem` is shorter than the interface.
    pub(crate) fn new(mem: Box<dyn SharedMemory + Send>) -> Ring {
        assert!(
            mem.len() >= INTERFACE_LEN,
            "xenstore ring page too small: {} bytes",
            mem.len()
        );
        Ring { mem }
    }

    /// What Xen's `introduce_domain()`/`domain_conn_reset()` do to the page:
    /// empty both rings, advertise our features, and complete a reconnection
    /// the guest asked for.
    pub(crate) fn reset(&self) {
        let m = &self.mem;
        m.store_u32(FEATURES, FEATURES_OFFERED, Ordering::Relaxed);
        m.store_u32(REQ_CONS, 0, Ordering::Relaxed);
        m.store_u32(REQ_PROD, 0, Ordering::Relaxed);
        m.store_u32(RSP_CONS, 0, Ordering::Relaxed);
        m.store_u32(RSP_PROD, 0, Ordering::Release);
        if m.load_u32(CONNECTION, Ordering::Acquire) == XENSTORE_RECONNECT {
            m.store_u32(CONNECTION, XENSTORE_CONNECTED, Ordering::Release);
        }
    }

    /// Report why we stopped serving the connection (`XENSTORE_ERROR_*`).
    pub(crate) fn set_error(&self, code: u32) {
        self.mem.store_u32(ERROR, code, Ordering::Release);
    }

    /// Consume up to `out.len()` request bytes; returns how many.
    pub(crate) fn read(&self, out: &mut [u8]) -> Result<usize, u32> {
        let m = &self.mem;
        let cons = m.load_u32(REQ_CONS, Ordering::Relaxed);
        let prod = m.load_u32(REQ_PROD, Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        if avail > SIZE {
            return Err(XENSTORE_ERROR_RINGIDX);
        }
        let n = (avail as usize).min(out.len());
        if n == 0 {
            return Ok(0);
        }
        let at = (cons % SIZE) as usize;
        let first = (XENSTORE_RING_SIZE - at).min(n);
        m.read(REQ + at, &mut out[..first]);
        m.read(REQ, &mut out[first..n]);
        m.store_u32(REQ_CONS, cons.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// Produce as much of `data` as fits in the reply ring; returns how much.
    pub(crate) fn write(&self, data: &[u8]) -> Result<usize, u32> {
        let m = &self.mem;
        let cons = m.load_u32(RSP_CONS, Ordering::Acquire);
        let prod = m.load_u32(RSP_PROD, Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > SIZE {
            return Err(XENSTORE_ERROR_RINGIDX);
        }
        let n = ((SIZE - used) as usize).min(data.len());
        if n == 0 {
            return Ok(0);
        }
        let at = (prod % SIZE) as usize;
        let first = (XENSTORE_RING_SIZE - at).min(n);
        m.write(RSP + at, &data[..first]);
        m.write(RSP, &data[first..n]);
        m.store_u32(RSP_PROD, prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }
}
