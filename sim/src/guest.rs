//! What a guest sees of the simulator: a [`Hypervisor`] handle and a clock.
//! Everything else a guest uses is `xenpal-xen-pv`'s real code.

use crate::domain::Domain;
use crate::hypervisor::Core;
use crate::sched::{GuestTask, NewGuest};
use hal::Console;
use hal::mem::{Gfn, WordMemory};
use hal::time::{Clock, Instant};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, Hypervisor};
use xen_pv::platform::{Runner, XenPlatform};
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

/// A guest's `main`, started on its platform.
pub(crate) type MainFuture = Pin<Box<dyn Future<Output = ()>>>;
/// What starts a guest's `main` once its platform is up.
pub(crate) type StartFn = Box<dyn FnOnce(SimPlatform) -> MainFuture + Send>;
type SimRunner = Runner<SimHypervisor, SimClock, XenAlarm<SimHypervisor>>;

/// A simulated guest as the scheduler runs it: boots its platform as a
/// domain built with `ram_pages` and `grant_frames` (the toolstack's
/// layout), attaches the logger to its console, starts `main`, then steps
/// the executor.
///
/// Fields drop in order: the main future before the runner, as the guest's
/// objects go before the executor that ran them.
struct SimGuest {
    start: Option<StartFn>,
    fut: Option<MainFuture>,
    runner: Option<SimRunner>,
    ram_pages: usize,
    grant_frames: usize,
}

impl GuestTask for SimGuest {
    fn boot(&mut self, core: &Arc<Core>, dom: &Arc<Domain>) -> Result<(), String> {
        let h = SimHypervisor {
            core: core.clone(),
            dom: dom.clone(),
        };
        let layout = crate::layout::guest_layout(dom.id, self.ram_pages, self.grant_frames);
        let platform =
            XenPlatform::boot_auto(h.clone(), SimClock(core.clone()), XenAlarm(h), &layout)
                .map_err(|e| e.to_string())?;
        let console = platform.console().clone();
        crate::guest_log::attach(dom, move |bytes: &[u8]| {
            console.write_lossy(bytes);
        });
        self.runner = Some(platform.runner());
        let start = self.start.take().expect("a guest boots once");
        self.fut = Some(start(platform));
        Ok(())
    }

    fn step(&mut self) -> Poll<()> {
        match (&self.runner, &mut self.fut) {
            (Some(runner), Some(fut)) => runner.step(fut.as_mut()),
            _ => Poll::Ready(()),
        }
    }
}

/// A guest for the scheduler to start on the thread that will run it.
pub(crate) fn new_guest(start: StartFn, ram_pages: usize, grant_frames: usize) -> NewGuest {
    Box::new(move || {
        Box::new(SimGuest {
            start: Some(start),
            fut: None,
            runner: None,
            ram_pages,
            grant_frames,
        }) as Box<dyn GuestTask>
    })
}
