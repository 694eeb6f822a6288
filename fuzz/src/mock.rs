//! A hypervisor that accepts every hypercall, for driving the guest's
//! ring clients (xenstore, console) against a hostile peer without a
//! simulator: the peer is the fuzz harness, which writes the shared page
//! directly. The client code under test is the real one; only the
//! hypercalls it makes (event-channel sends and unmasks) go nowhere.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use xenpal_hal::EventPort;
use xenpal_hal::mem::{Gfn, WordMemory};
use xenpal_xen_pv::abi::Errno;
use xenpal_xen_pv::event::Events;
use xenpal_xen_pv::hypercall::{ArgBuf, Hypervisor};

/// A hypervisor whose hypercalls all succeed (return 0) and are counted.
#[derive(Clone, Debug, Default)]
pub struct NullHypervisor {
    calls: Arc<AtomicU64>,
}

impl NullHypervisor {
    /// Hypercalls issued so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Hypervisor for NullHypervisor {
    type Mem = WordMemory;

    fn hypercall(&self, _op: u32, _args: [u64; 5], _buf: Option<ArgBuf<'_>>) -> isize {
        self.calls.fetch_add(1, Ordering::Relaxed);
        0
    }

    fn map_frames(&self, _gfn: Gfn, _count: usize) -> Result<WordMemory, Errno> {
        Err(Errno::EINVAL)
    }
}

/// Event channels over a private `shared_info` page, with `port` adopted
/// (tracked and unmasked), as a booted guest has its xenstore and console
/// ports.
pub fn events_with(port: EventPort) -> Events<NullHypervisor> {
    let events = Events::new(NullHypervisor::default(), WordMemory::new(4096));
    // Ports below 4096 are always adoptable; the harness picks a small one.
    let _ = events.adopt(port);
    events
}

/// A boxed future the harness keeps alive across operations.
pub type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Poll `task` once with a waker that does nothing (the harness decides
/// when to poll again). Returns whether it finished.
pub fn poll_once(task: &mut Task<'_>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(task.as_mut().poll(&mut cx), Poll::Ready(()))
}
