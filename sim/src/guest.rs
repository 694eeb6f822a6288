//! What a guest sees of the simulator: a [`Hypervisor`] handle and a clock.
//! Everything else a guest uses is `xenpal-xen-pv`'s real code.

use crate::hypervisor::{Core, Domain};
use hal::mem::{Gfn, WordMemory};
use hal::time::{Clock, Instant};
use std::sync::Arc;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, Hypervisor};
use xen_pv::platform::XenPlatform;
use xen_pv::timer::XenAlarm;

/// The simulator's hypercall entry point for one domain: what `hvc #0xEA1`
/// or the hypercall page is on real Xen.
#[derive(Clone)]
pub struct SimHypervisor {
    pub(crate) core: Arc<Core>,
    pub(crate) dom: Arc<Domain>,
}

impl core::fmt::Debug for SimHypervisor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SimHypervisor(d{})", self.dom.id.0)
    }
}

impl Hypervisor for SimHypervisor {
    type Mem = WordMemory;

    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize {
        crate::hypercall::dispatch(&self.core, &self.dom, op, args, buf)
    }

    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<WordMemory, Errno> {
        self.dom.mem.map_frames(gfn, count)
    }
}

/// The simulator's clock: virtual time in deterministic mode (each read
/// costs a little, so a guest spinning on the clock makes progress), real
/// monotonic time in free-running mode.
#[derive(Clone)]
pub struct SimClock(pub(crate) Arc<Core>);

impl core::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SimClock")
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.0.time.read())
    }
}

/// The platform a simulated guest's `main` receives: `xenpal-xen-pv`'s
/// [`XenPlatform`] over the simulator's hypervisor and clock, with Xen's
/// `set_timer_op` as the alarm.
pub type SimPlatform = XenPlatform<SimHypervisor, SimClock, XenAlarm<SimHypervisor>>;

/// What a guest holds of its platform's resources: grant entries in use,
/// pages allocated from its pool, and its lowest free event-channel port.
/// Taken before a guest opens its devices and again once it has closed
/// them, the two must be equal: a difference is a leak.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Holdings {
    /// Grant entries in use (`GrantTable::active_grants`).
    pub grants: usize,
    /// Pages allocated and not freed (`PageAlloc::outstanding`).
    pub pages: usize,
    /// The port a new unbound channel would get (`None`: none free), so a
    /// channel left open shows.
    pub free_port: Option<u32>,
}

impl Holdings {
    /// What `p`'s guest holds now.
    pub fn of(p: &SimPlatform) -> Holdings {
        use hal::{EventChannel, GrantTable, PageAlloc};
        let free_port = p.events().alloc_unbound(hal::DomId::DOM0).ok().map(|port| {
            let _ = p.events().close(port);
            port.0
        });
        Holdings {
            grants: p.grants().active_grants(),
            pages: p.pages().outstanding(),
            free_port,
        }
    }
}
