//! Event channels: Xen's virtual interrupts between domains, from Xen itself
//! (VIRQs) and to oneself.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

/// A domain identifier.
#[doc(alias = "domid_t")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

impl DomId {
    /// The control domain.
    pub const DOM0: DomId = DomId(0);
    /// "The calling domain", accepted by most hypercalls in place of one's own
    /// id.
    #[doc(alias = "DOMID_SELF")]
    pub const SELF: DomId = DomId(0x7FF0);
    /// Xen itself, as the peer of some channels and grants.
    #[doc(alias = "DOMID_XEN")]
    pub const XEN: DomId = DomId(0x7FF2);
    /// The first reserved id: real domains are numbered below it.
    #[doc(alias = "DOMID_FIRST_RESERVED")]
    pub const FIRST_RESERVED: DomId = DomId(0x7FF0);

    /// Whether this names a real domain (not a reserved id).
    pub const fn is_real(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// A local event-channel port number.
#[doc(alias = "evtchn_port_t")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPort(pub u32);

impl fmt::Display for EventPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// A virtual interrupt raised by Xen.
#[doc(alias = "virq")]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Virq(pub u32);

impl Virq {
    /// The timer set with `set_timer_op` (and periodic time updates).
    #[doc(alias = "VIRQ_TIMER")]
    pub const TIMER: Virq = Virq(0);
    /// Request to dump debug information.
    #[doc(alias = "VIRQ_DEBUG")]
    pub const DEBUG: Virq = Virq(1);
    /// Input on the emergency console (dom0 only).
    #[doc(alias = "VIRQ_CONSOLE")]
    pub const CONSOLE: Virq = Virq(2);
    /// A domain was destroyed or crashed (dom0 only).
    #[doc(alias = "VIRQ_DOM_EXC")]
    pub const DOM_EXC: Virq = Virq(3);
}

/// Why an event-channel operation failed. Each method of [`EventChannel`]
/// lists the errors it may return.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventError {
    /// No free local port (Xen: `ENOSPC`).
    NoFreePort,
    /// The port is out of range, closed, or of the wrong kind for the operation
    /// (Xen: `EINVAL`).
    InvalidPort,
    /// The named remote domain does not exist (Xen: `ESRCH`).
    NoSuchDomain,
    /// The remote port is not an unbound port offered to this domain (Xen:
    /// `EINVAL` from bind_interdomain).
    NotOffered,
    /// The VIRQ is already bound on this vCPU (Xen: `EEXIST`).
    AlreadyBound,
    /// Not allowed by Xen's policy (Xen: `EPERM` or `EACCES`).
    PermissionDenied,
    /// Any other error the hypervisor returned, as a negative Xen errno.
    Hypervisor(i32),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::NoFreePort => f.write_str("no free event-channel port"),
            EventError::InvalidPort => f.write_str("invalid event-channel port"),
            EventError::NoSuchDomain => f.write_str("no such domain"),
            EventError::NotOffered => f.write_str("remote port is not offered to this domain"),
            EventError::AlreadyBound => f.write_str("VIRQ already bound"),
            EventError::PermissionDenied => f.write_str("permission denied"),
            EventError::Hypervisor(e) => write!(f, "hypervisor error {e}"),
        }
    }
}

impl core::error::Error for EventError {}

/// Event channels of the running domain.
///
/// Delivery is edge-triggered and coalescing: several notifications on a port
/// before the guest looks may be seen as one. Implementations record
/// deliveries per port; [`take_pending`](Self::take_pending) consumes them.
///
/// Methods MAY be called from task context only (not from an interrupt
/// handler); implementations are single-vCPU and not `Sync`.
pub trait EventChannel {
    /// Allocate a port that domain `remote` may bind to (an "unbound" port).
    ///
    /// Xen does not check that `remote` exists yet; binding checks.
    ///
    /// Errors: [`EventError::NoFreePort`]; [`EventError::PermissionDenied`]
    /// if policy forbids talking to `remote`.
    #[doc(alias = "EVTCHNOP_alloc_unbound")]
    fn alloc_unbound(&self, remote: DomId) -> Result<EventPort, EventError>;

    /// Connect a new local port to `remote_port` of domain `remote`, which
    /// must be an unbound port offered to this domain.
    ///
    /// Errors: [`EventError::NoFreePort`]; [`EventError::NoSuchDomain`];
    /// [`EventError::NotOffered`] if the remote port is not unbound or is
    /// offered to another domain; [`EventError::PermissionDenied`].
    #[doc(alias = "EVTCHNOP_bind_interdomain")]
    fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EventPort,
    ) -> Result<EventPort, EventError>;

    /// Bind a new local port to a VIRQ of vCPU 0.
    ///
    /// Errors: [`EventError::NoFreePort`]; [`EventError::AlreadyBound`];
    /// [`EventError::InvalidPort`] if the VIRQ number is invalid.
    #[doc(alias = "EVTCHNOP_bind_virq")]
    fn bind_virq(&self, virq: Virq) -> Result<EventPort, EventError>;

    /// Notify the other end of `port` (for an interdomain or loopback
    /// channel). Sending on an unbound port is a no-op, as in Xen.
    ///
    /// Errors: [`EventError::InvalidPort`] if `port` is closed or a VIRQ port.
    #[doc(alias = "EVTCHNOP_send")]
    fn notify(&self, port: EventPort) -> Result<(), EventError>;

    /// Stop delivery on `port`: events still become pending but wake nobody
    /// until [`unmask`](Self::unmask). Never fails; masking an invalid port
    /// does nothing.
    fn mask(&self, port: EventPort);

    /// Resume delivery on `port`. An event that arrived while masked is
    /// delivered now.
    ///
    /// Errors: [`EventError::InvalidPort`].
    #[doc(alias = "EVTCHNOP_unmask")]
    fn unmask(&self, port: EventPort) -> Result<(), EventError>;

    /// Close `port`. An interdomain peer's end becomes unbound. Deliveries
    /// recorded for it are discarded.
    ///
    /// Errors: [`EventError::InvalidPort`].
    #[doc(alias = "EVTCHNOP_close")]
    fn close(&self, port: EventPort) -> Result<(), EventError>;

    /// Whether an event was delivered on `port` since the last call; clears
    /// the record. Returns `false` for invalid ports.
    fn take_pending(&self, port: EventPort) -> bool;

    /// Wake `waker` at the next delivery on `port` (once). Registering again
    /// replaces the previous waker for that port.
    fn register_waker(&self, port: EventPort, waker: &Waker);
}

impl<E: EventChannel + ?Sized> EventChannel for &E {
    fn alloc_unbound(&self, remote: DomId) -> Result<EventPort, EventError> {
        (**self).alloc_unbound(remote)
    }
    fn bind_interdomain(&self, r: DomId, p: EventPort) -> Result<EventPort, EventError> {
        (**self).bind_interdomain(r, p)
    }
    fn bind_virq(&self, virq: Virq) -> Result<EventPort, EventError> {
        (**self).bind_virq(virq)
    }
    fn notify(&self, port: EventPort) -> Result<(), EventError> {
        (**self).notify(port)
    }
    fn mask(&self, port: EventPort) {
        (**self).mask(port)
    }
    fn unmask(&self, port: EventPort) -> Result<(), EventError> {
        (**self).unmask(port)
    }
    fn close(&self, port: EventPort) -> Result<(), EventError> {
        (**self).close(port)
    }
    fn take_pending(&self, port: EventPort) -> bool {
        (**self).take_pending(port)
    }
    fn register_waker(&self, port: EventPort, waker: &Waker) {
        (**self).register_waker(port, waker)
    }
}

/// Future for [`wait_event`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct WaitEvent<'a, E: ?Sized> {
    events: &'a E,
    port: EventPort,
}

impl<E: EventChannel + ?Sized> Future for WaitEvent<'_, E> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.events.take_pending(self.port) {
            return Poll::Ready(());
        }
        self.events.register_waker(self.port, cx.waker());
        // An event may have landed between the check and the registration.
        if self.events.take_pending(self.port) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Wait for the next delivery on `port` (consuming it).
pub fn wait_event<E: EventChannel + ?Sized>(events: &E, port: EventPort) -> WaitEvent<'_, E> {
    WaitEvent { events, port }
}
