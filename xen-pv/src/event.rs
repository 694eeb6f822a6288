//! 2-level event channels: binding ports through hypercalls, and dispatching
//! deliveries from the pending/mask bitmaps and selector word in
//! `shared_info`.
//!
//! Dispatch runs in task context (the executor calls [`Events::dispatch`]
//! before polling), not in an interrupt handler: on real Xen the upcall or
//! the event PPI only wakes the vCPU. So no state here needs a critical
//! section; the bitmaps Xen writes concurrently are accessed atomically.

use crate::abi::{self, Errno, native};
use crate::hypercall::{self, Hypervisor};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use core::task::Waker;
use hal::mem::SharedMemory;
use hal::{DomId, EventChannel, EventError, EventPort, Virq};

/// Byte offsets into `shared_info` for vCPU 0 and the 2-level bitmaps.
pub mod layout {
    use super::*;
    /// `vcpu_info[0].evtchn_upcall_pending`.
    pub const UPCALL_PENDING: usize = offset_of!(native::VcpuInfo, evtchn_upcall_pending);
    /// `vcpu_info[0].evtchn_pending_sel`.
    pub const PENDING_SEL: usize = offset_of!(native::VcpuInfo, evtchn_pending_sel);
    /// `vcpu_info[0].time`.
    pub const VCPU_TIME: usize = offset_of!(native::VcpuInfo, time);
    /// `evtchn_pending[0]`.
    pub const PENDING: usize = offset_of!(native::SharedInfo, evtchn_pending);
    /// `evtchn_mask[0]`.
    pub const MASK: usize = offset_of!(native::SharedInfo, evtchn_mask);
    /// `wc_version`.
    pub const WC_VERSION: usize = offset_of!(native::SharedInfo, wc_version);
    /// `wc_sec`.
    pub const WC_SEC: usize = offset_of!(native::SharedInfo, wc_sec);
    /// `wc_nsec`.
    pub const WC_NSEC: usize = offset_of!(native::SharedInfo, wc_nsec);
    /// `wc_sec_hi`.
    pub const WC_SEC_HI: usize = offset_of!(native::SharedInfo, wc_sec_hi);
    /// Size of `shared_info`.
    pub const SIZE: usize = core::mem::size_of::<native::SharedInfo>();
}

/// Map a Xen errno from an event-channel hypercall to the HAL's error.
pub fn event_error(e: Errno) -> EventError {
    match e {
        Errno::ENOSPC => EventError::NoFreePort,
        Errno::EINVAL => EventError::InvalidPort,
        Errno::ESRCH => EventError::NoSuchDomain,
        Errno::EEXIST => EventError::AlreadyBound,
        Errno::EPERM | Errno::EACCES => EventError::PermissionDenied,
        Errno(n) => EventError::Hypervisor(-n),
    }
}

#[derive(Default)]
struct PortState {
    fired: bool,
    waker: Option<Waker>,
}

struct Inner<H: Hypervisor> {
    h: H,
    shinfo: H::Mem,
    ports: RefCell<Vec<PortState>>,
}

/// The running domain's event channels. A cheap handle: clones share state.
pub struct Events<H: Hypervisor> {
    inner: Rc<Inner<H>>,
}

impl<H: Hypervisor> Clone for Events<H> {
    fn clone(&self) -> Self {
        Events {
            inner: self.inner.clone(),
        }
    }
}

impl<H: Hypervisor> Events<H> {
    /// Event channels over the mapped `shared_info` page. Masks every port,
    /// as ports are unmasked one by one when bound here.
    pub fn new(h: H, shinfo: H::Mem) -> Self {
        for w in 0..64 {
            shinfo.store_u64(layout::MASK + 8 * w, u64::MAX, Ordering::Relaxed);
        }
        shinfo.fence(Ordering::SeqCst);
        Events {
            inner: Rc::new(Inner {
                h,
                shinfo,
                ports: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The hypervisor handle.
    pub fn hypervisor(&self) -> &H {
        &self.inner.h
    }

    /// The `shared_info` page.
    pub fn shared_info(&self) -> &H::Mem {
        &self.inner.shinfo
    }

    /// Whether Xen has flagged pending events not yet dispatched.
    pub fn upcall_pending(&self) -> bool {
        self.inner
            .shinfo
            .load_u8(layout::UPCALL_PENDING, Ordering::Acquire)
            != 0
    }

    fn track(&self, port: EventPort) -> Result<EventPort, EventError> {
        if port.0 >= abi::EVTCHN_2L_NR_CHANNELS {
            return Err(EventError::InvalidPort);
        }
        let mut ports = self.inner.ports.borrow_mut();
        let i = port.0 as usize;
        if ports.len() <= i {
            ports.resize_with(i + 1, PortState::default);
        }
        ports[i] = PortState::default();
        drop(ports);
        hypercall::evtchn_port_op(&self.inner.h, abi::evtchnop::UNMASK, port)
            .map_err(event_error)?;
        Ok(port)
    }

    /// Take over `port`, already bound for us by the toolstack (the xenstore
    /// and console channels of an HVM or Arm guest): track and unmask it.
    ///
    /// Errors: [`EventError::InvalidPort`].
    pub fn adopt(&self, port: EventPort) -> Result<EventPort, EventError> {
        self.track(port)
    }

    /// Wait for a delivery on `port` from code that cannot `.await` (a
    /// blocking `embedded_sdmmc::BlockDevice`, say): dispatch, and if
    /// nothing arrived on `port`, sleep in `SCHEDOP_poll` until something
    /// does. In the simulator other domains run meanwhile.
    ///
    /// Errors: [`EventError::InvalidPort`] if `port` is not valid.
    pub fn block_on(&self, port: EventPort) -> Result<(), EventError> {
        loop {
            self.dispatch();
            if self.take_pending(port) {
                return Ok(());
            }
            hypercall::sched_poll(&self.inner.h, &[port], 0).map_err(event_error)?;
        }
    }

    /// Handle deliveries: for every port pending and not masked, clear its
    /// pending bit, record the delivery and wake its waker. Returns the number
    /// of deliveries. Does one bounded pass over the 64 selector bits; events
    /// arriving meanwhile set `upcall_pending` again.
    pub fn dispatch(&self) -> usize {
        let shinfo = &self.inner.shinfo;
        shinfo.store_u8(layout::UPCALL_PENDING, 0, Ordering::Relaxed);
        // Clearing upcall_pending must be ordered before reading the selector
        // (as Xen documents for vcpu_info).
        shinfo.fence(Ordering::SeqCst);
        let mut sel = shinfo.swap_u64(layout::PENDING_SEL, 0, Ordering::AcqRel);
        let mut n = 0;
        let mut to_wake: [Option<Waker>; 8] = Default::default();
        let mut woken = 0;
        while sel != 0 {
            let word = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let pending = shinfo.load_u64(layout::PENDING + 8 * word, Ordering::Acquire);
            let mask = shinfo.load_u64(layout::MASK + 8 * word, Ordering::Relaxed);
            let mut bits = pending & !mask;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                shinfo.fetch_and_u64(layout::PENDING + 8 * word, !(1u64 << bit), Ordering::AcqRel);
                let port = word * 64 + bit;
                n += 1;
                let mut ports = self.inner.ports.borrow_mut();
                if let Some(st) = ports.get_mut(port) {
                    st.fired = true;
                    if let Some(w) = st.waker.take() {
                        // Wake outside the borrow; a waker may re-enter.
                        if woken < to_wake.len() {
                            to_wake[woken] = Some(w);
                            woken += 1;
                        } else {
                            drop(ports);
                            w.wake();
                        }
                    }
                }
            }
        }
        for w in to_wake.iter_mut().take(woken) {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        n
    }
}

impl<H: Hypervisor> EventChannel for Events<H> {
    fn alloc_unbound(&self, remote: DomId) -> Result<EventPort, EventError> {
        let port = hypercall::evtchn_alloc_unbound(&self.inner.h, remote).map_err(event_error)?;
        self.track(port)
    }

    fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EventPort,
    ) -> Result<EventPort, EventError> {
        let port = hypercall::evtchn_bind_interdomain(&self.inner.h, remote, remote_port).map_err(
            |e| {
                if e == Errno::EINVAL {
                    EventError::NotOffered
                } else {
                    event_error(e)
                }
            },
        )?;
        self.track(port)
    }

    fn bind_virq(&self, virq: Virq) -> Result<EventPort, EventError> {
        let port = hypercall::evtchn_bind_virq(&self.inner.h, virq.0).map_err(event_error)?;
        self.track(port)
    }

    fn notify(&self, port: EventPort) -> Result<(), EventError> {
        hypercall::evtchn_port_op(&self.inner.h, abi::evtchnop::SEND, port).map_err(event_error)
    }

    fn mask(&self, port: EventPort) {
        if port.0 < abi::EVTCHN_2L_NR_CHANNELS {
            let (word, bit) = (port.0 as usize / 64, port.0 % 64);
            self.inner
                .shinfo
                .fetch_or_u64(layout::MASK + 8 * word, 1 << bit, Ordering::AcqRel);
        }
    }

    fn unmask(&self, port: EventPort) -> Result<(), EventError> {
        hypercall::evtchn_port_op(&self.inner.h, abi::evtchnop::UNMASK, port).map_err(event_error)
    }

    fn close(&self, port: EventPort) -> Result<(), EventError> {
        hypercall::evtchn_port_op(&self.inner.h, abi::evtchnop::CLOSE, port)
            .map_err(event_error)?;
        self.mask(port);
        if let Some(st) = self.inner.ports.borrow_mut().get_mut(port.0 as usize) {
            *st = PortState::default();
        }
        Ok(())
    }

    fn take_pending(&self, port: EventPort) -> bool {
        match self.inner.ports.borrow_mut().get_mut(port.0 as usize) {
            Some(st) => core::mem::take(&mut st.fired),
            None => false,
        }
    }

    fn register_waker(&self, port: EventPort, waker: &Waker) {
        if let Some(st) = self.inner.ports.borrow_mut().get_mut(port.0 as usize) {
            match &mut st.waker {
                Some(w) if w.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }
}
