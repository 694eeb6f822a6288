//! A whole guest platform assembled from this crate's parts, and the boot
//! sequence of an auto-translated guest (Arm, the simulator); an x86 PV
//! guest maps Xen's pages itself and calls [`XenPlatform::assemble`].
//!
//! [`XenPlatform`] bundles the `hal` parts (events, grants, timer, pages,
//! console) for any [`Hypervisor`], clock and one-shot timer; an arch crate or the simulator supplies those three and
//! a [`AutoLayout`] (what a device tree would say), calls
//! [`XenPlatform::boot_auto`], and hands the platform to the guest's `main`.
//! A [`Runner`] taken from the platform first drives `main`.

use crate::abi::{self, Errno, hvm_param, mapspace};
use crate::console::{EmergencyConsole, PvConsole};
use crate::event::{Events, layout};
use crate::executor::{self, Executor};
use crate::grant::{self, Grants, MapWindow};
use crate::hypercall::{self, Hypervisor};
use crate::pages::FramePool;
use crate::timer::{AlarmHw, QueueTimer};
use crate::xenstore::XenStore;
use alloc::rc::Rc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use core::time::Duration;
use hal::console::{Console, ConsoleError};
use hal::mem::Gfn;
use hal::time::Clock;
use hal::{DomId, EventChannel, EventPort, Virq};

/// Where an auto-translated guest's Xen pages go: the facts a device tree (on
/// Arm) or the simulator's domain builder provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoLayout {
    /// This domain's id, if known (else [`DomId::SELF`]).
    pub domid: DomId,
    /// Free RAM frames for the page allocator: `(first, count)`.
    pub ram: (Gfn, usize),
    /// Where to map `shared_info`.
    pub shared_info: Gfn,
    /// Where to map the grant table's frames.
    pub grant_table: Gfn,
    /// How many grant frames to map (0: none; the guest cannot grant).
    pub grant_frames: usize,
    /// Frames free for mapping other domains' grants: `(first, count)`.
    pub map_window: (Gfn, u32),
}

/// Xen's pages for [`XenPlatform::assemble`], mapped by the caller.
pub struct PlatformParts<H: Hypervisor> {
    /// This domain's id, if known (else [`DomId::SELF`]).
    pub domid: DomId,
    /// The mapped `shared_info` page.
    pub shared_info: H::Mem,
    /// The mapped grant-table frames, if the guest can grant.
    pub grant_table: Option<H::Mem>,
    /// Where foreign grants get mapped.
    pub map_window: MapWindow,
    /// Free RAM frames for the page allocator: `(first, count)`.
    pub ram: (Gfn, usize),
    /// The xenstore ring page and its (already bound) event channel.
    pub xenstore: Option<(H::Mem, EventPort)>,
    /// The PV console ring page and its (already bound) event channel.
    pub console: Option<(H::Mem, EventPort)>,
}

/// Why booting the platform failed. Each names the step.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BootError {
    /// Mapping `shared_info` failed.
    SharedInfo(Errno),
    /// Mapping the grant table failed.
    GrantTable(Errno),
    /// Binding `VIRQ_TIMER` failed.
    Timer(hal::EventError),
    /// Reading an HVM parameter failed.
    HvmParam(u32, Errno),
    /// Mapping the xenstore page failed.
    XenstorePage(Errno),
    /// Mapping the console page failed.
    ConsolePage(Errno),
    /// Taking over a pre-bound event channel failed.
    Port(hal::EventError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::SharedInfo(e) => write!(f, "mapping shared_info: {e}"),
            BootError::GrantTable(e) => write!(f, "mapping the grant table: {e}"),
            BootError::Timer(e) => write!(f, "binding VIRQ_TIMER: {e}"),
            BootError::HvmParam(p, e) => write!(f, "reading HVM param {p}: {e}"),
            BootError::XenstorePage(e) => write!(f, "mapping the xenstore page: {e}"),
            BootError::ConsolePage(e) => write!(f, "mapping the console page: {e}"),
            BootError::Port(e) => write!(f, "taking over an event channel: {e}"),
        }
    }
}

impl core::error::Error for BootError {}

/// The console a guest writes to: the PV console if the toolstack gave one,
/// else Xen's emergency console. Clones are handles to the same console.
#[derive(Clone)]
pub enum GuestConsole<H: Hypervisor> {
    /// The PV console ring.
    Pv(PvConsole<H>),
    /// `console_io`.
    Emergency(EmergencyConsole<H>),
}

impl<H: Hypervisor> GuestConsole<H> {
    /// Bytes written but not yet taken by the backend (always 0 for the
    /// emergency console, which Xen prints at once).
    pub fn unsent(&self) -> usize {
        match self {
            GuestConsole::Pv(c) => c.unsent(),
            GuestConsole::Emergency(_) => 0,
        }
    }

    /// Wait, up to `limit` by `clock`, until the backend has taken
    /// everything written: a guest about to shut down calls this so its
    /// last lines are not lost (a console daemon stops reading a domain
    /// once it is shut down). It polls the ring and yields the CPU to Xen
    /// between looks (`SCHEDOP_yield`), rather than sleeping on the alarm:
    /// the last step of a guest's life depends on no interrupt arriving.
    pub fn drain_polling<C: Clock + ?Sized>(&self, h: &H, clock: &C, limit: Duration) {
        let deadline = clock.now() + limit;
        while self.unsent() > 0 && clock.now() < deadline {
            let _ = hypercall::sched_yield(h);
        }
    }
}

impl<H: Hypervisor> Console for GuestConsole<H> {
    fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError> {
        match self {
            GuestConsole::Pv(c) => c.write(buf),
            GuestConsole::Emergency(c) => c.write(buf),
        }
    }
    fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        match self {
            GuestConsole::Pv(c) => c.read(buf),
            GuestConsole::Emergency(c) => c.read(buf),
        }
    }
    fn read_ready(&self) -> bool {
        match self {
            GuestConsole::Pv(c) => c.read_ready(),
            GuestConsole::Emergency(c) => c.read_ready(),
        }
    }
    fn write_ready(&self) -> bool {
        match self {
            GuestConsole::Pv(c) => c.write_ready(),
            GuestConsole::Emergency(c) => c.write_ready(),
        }
    }
}

/// A guest platform on Xen: event channels, grant table, alarm, page
/// allocator, console and (if present) xenstore.
pub struct XenPlatform<H: Hypervisor, C: Clock, A: AlarmHw> {
    h: H,
    events: Events<H>,
    grants: Grants<H>,
    timer: Rc<QueueTimer<C, A>>,
    pages: FramePool<H>,
    console: GuestConsole<H>,
    emergency: EmergencyConsole<H>,
    xenstore: Option<XenStore<H>>,
    domid: DomId,
}

impl<H: Hypervisor, C: Clock, A: AlarmHw> XenPlatform<H, C, A> {
    /// Boot an auto-translated guest: map `shared_info` and the grant table
    /// with `XENMEM_add_to_physmap`, bind `VIRQ_TIMER`, and connect xenstore
    /// and the PV console from the HVM parameters (a parameter of 0 means
    /// "none": no xenstore, or the emergency console).
    ///
    /// Errors: a [`BootError`] naming the step that failed.
    pub fn boot_auto(h: H, clock: C, alarm: A, layout: &AutoLayout) -> Result<Self, BootError> {
        hypercall::add_to_physmap(&h, mapspace::SHARED_INFO, 0, layout.shared_info)
            .map_err(BootError::SharedInfo)?;
        let shared_info = h
            .map_frames(layout.shared_info, 1)
            .map_err(BootError::SharedInfo)?;
        let grant_table = if layout.grant_frames == 0 {
            None
        } else {
            Some(
                grant::map_frames_auto(&h, layout.grant_table, layout.grant_frames)
                    .map_err(BootError::GrantTable)?,
            )
        };
        let param = |p| hypercall::hvm_get_param(&h, p).map_err(|e| BootError::HvmParam(p, e));
        let ring = |pfn_param, port_param, err: fn(Errno) -> BootError| {
            let pfn = param(pfn_param)?;
            if pfn == 0 {
                return Ok(None);
            }
            let port = EventPort(param(port_param)? as u32);
            let page = h.map_frames(Gfn(pfn), 1).map_err(err)?;
            Ok::<_, BootError>(Some((page, port)))
        };
        let xenstore = ring(
            hvm_param::STORE_PFN,
            hvm_param::STORE_EVTCHN,
            BootError::XenstorePage,
        )?;
        let console = ring(
            hvm_param::CONSOLE_PFN,
            hvm_param::CONSOLE_EVTCHN,
            BootError::ConsolePage,
        )?;
        let parts = PlatformParts {
            domid: layout.domid,
            shared_info,
            grant_table,
            map_window: MapWindow::new(layout.map_window.0, layout.map_window.1),
            ram: layout.ram,
            xenstore,
            console,
        };
        Self::assemble(h, clock, alarm, parts)
    }

    /// Build the platform from Xen's pages, already mapped by the arch
    /// crate (an x86 PV guest finds them through `start_info` and maps them
    /// with its own page tables): start event dispatch on `shared_info`,
    /// bind `VIRQ_TIMER`, and take over the xenstore and console channels
    /// the toolstack bound for us (without a console ring, Xen's emergency
    /// console is used).
    ///
    /// Errors: [`BootError::Timer`], [`BootError::Port`].
    pub fn assemble(h: H, clock: C, alarm: A, parts: PlatformParts<H>) -> Result<Self, BootError> {
        let events = Events::new(h.clone(), parts.shared_info);
        let grants = match parts.grant_table {
            Some(table) => Grants::new(h.clone(), table, parts.map_window),
            None => Grants::without_table(h.clone(), parts.map_window),
        };
        events.bind_virq(Virq::TIMER).map_err(BootError::Timer)?;
        let timer = Rc::new(QueueTimer::new(clock, alarm));
        let pages = FramePool::new(h.clone(), parts.ram.0, parts.ram.1);
        let xenstore = match parts.xenstore {
            Some((ring, port)) => {
                events.adopt(port).map_err(BootError::Port)?;
                Some(XenStore::new(events.clone(), ring, port))
            }
            None => None,
        };
        let emergency = EmergencyConsole(h.clone());
        let console = match parts.console {
            Some((ring, port)) => {
                events.adopt(port).map_err(BootError::Port)?;
                GuestConsole::Pv(PvConsole::new(events.clone(), ring, port))
            }
            None => GuestConsole::Emergency(emergency.clone()),
        };
        Ok(XenPlatform {
            h,
            events,
            grants,
            timer,
            pages,
            console,
            emergency,
            xenstore,
            domid: parts.domid,
        })
    }

    /// A runner for this platform's main task.
    pub fn runner(&self) -> Runner<H, C, A> {
        Runner {
            events: self.events.clone(),
            timer: self.timer.clone(),
            console: self.console.clone(),
            exec: Executor::new(),
        }
    }

    /// The hypervisor handle.
    pub fn hypervisor(&self) -> &H {
        &self.h
    }

    /// The xenstore connection, if the toolstack provided one.
    pub fn xenstore(&self) -> Option<&XenStore<H>> {
        self.xenstore.as_ref()
    }

    /// Xen's emergency console (always available).
    pub fn emergency_console(&self) -> &EmergencyConsole<H> {
        &self.emergency
    }

    /// Event channels.
    pub fn events(&self) -> &Events<H> {
        &self.events
    }

    /// The grant table.
    pub fn grants(&self) -> &Grants<H> {
        &self.grants
    }

    /// The clock and alarm ([`hal::Timer`]).
    pub fn timer(&self) -> &QueueTimer<C, A> {
        &self.timer
    }

    /// The page allocator for memory shared with other domains.
    pub fn pages(&self) -> &FramePool<H> {
        &self.pages
    }

    /// The console for output: the PV console if connected, else the
    /// emergency console.
    pub fn console(&self) -> &GuestConsole<H> {
        &self.console
    }

    /// This domain's id, if known (else [`DomId::SELF`]).
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Wallclock time at system time zero, from `shared_info`:
    /// `(seconds, nanoseconds)` since the Unix epoch. Retries while Xen is
    /// updating it (bounded).
    pub fn wallclock_base(&self) -> (u64, u32) {
        use core::sync::atomic::Ordering::Acquire;
        use hal::mem::SharedMemory;
        let s = self.events.shared_info();
        let mut last = (0, 0);
        for _ in 0..1000 {
            let v1 = s.load_u32(layout::WC_VERSION, Acquire);
            let sec = u64::from(s.load_u32(layout::WC_SEC, Acquire))
                | (u64::from(s.load_u32(layout::WC_SEC_HI, Acquire)) << 32);
            let nsec = s.load_u32(layout::WC_NSEC, Acquire);
            let v2 = s.load_u32(layout::WC_VERSION, Acquire);
            last = (sec, nsec);
            if v1 == v2 && v1.is_multiple_of(2) {
                break;
            }
        }
        last
    }

    /// Shut the domain down (`SCHEDOP_shutdown`). On real Xen this does not
    /// return; in the simulator it returns and the domain is not run again.
    pub fn shutdown(&self, reason: u32) -> Result<(), Errno> {
        hypercall::sched_shutdown(&self.h, reason)
    }
}

/// Drives a guest's main task: see [`executor::step`].
pub struct Runner<H: Hypervisor, C: Clock, A: AlarmHw> {
    events: Events<H>,
    timer: Rc<QueueTimer<C, A>>,
    console: GuestConsole<H>,
    exec: Executor,
}

impl<H: Hypervisor, C: Clock, A: AlarmHw> Runner<H, C, A> {
    /// One scheduling step (dispatch, timers, poll if woken, block if idle).
    pub fn step<F: Future + ?Sized>(&self, fut: Pin<&mut F>) -> Poll<F::Output> {
        executor::step(&self.events, &self.timer, &self.exec, fut)
    }

    /// Run to completion (real Xen: the block hypercall sleeps).
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = core::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = self.step(fut.as_mut()) {
                return v;
            }
        }
    }

    /// Run a guest's main task to completion, let the console backend take
    /// what is left to print (up to a second), then shut the domain down
    /// for the reason its result gives (see [`ShutdownReason`]).
    pub fn run_then_shutdown<F: Future<Output: ShutdownReason>>(&self, fut: F) -> ! {
        let reason = self.run(fut).shutdown_reason();
        let h = self.events.hypervisor();
        self.console
            .drain_polling(h, &*self.timer, Duration::from_secs(1));
        shutdown(self.events.hypervisor(), reason)
    }
}

/// How a guest's main task ended, as the `SHUTDOWN_*` reason Xen is given:
/// `true` is a poweroff and `false` a crash; a `u32` is the reason itself
/// (`abi::shutdown::REBOOT` after the toolstack asked for a reboot).
pub trait ShutdownReason {
    /// The `SHUTDOWN_*` reason.
    fn shutdown_reason(self) -> u32;
}

impl ShutdownReason for bool {
    fn shutdown_reason(self) -> u32 {
        if self {
            abi::shutdown::POWEROFF
        } else {
            abi::shutdown::CRASH
        }
    }
}

impl ShutdownReason for u32 {
    fn shutdown_reason(self) -> u32 {
        self
    }
}

/// A guest's life on real Xen once its arch crate has tried to boot, the
/// same on every architecture: if `booted` is an error, print
/// `xenpal: boot failed: {error}` on the emergency console and crash the
/// domain; else run `app` on what booted (its [`XenPlatform`] reached
/// through `platform`) with [`Runner::run_then_shutdown`], which shuts the
/// domain down for the reason `app`'s result gives. Never returns.
///
/// Each arch crate's `platform::run(boot, app)` is this with its own
/// hypervisor handle and boot function.
pub fn run<H, C, A, B, E, F, Fut>(
    h: H,
    booted: Result<B, E>,
    platform: impl FnOnce(&B) -> &XenPlatform<H, C, A>,
    app: F,
) -> !
where
    H: Hypervisor,
    C: Clock,
    A: AlarmHw,
    E: fmt::Display,
    F: FnOnce(B) -> Fut,
    Fut: Future<Output: ShutdownReason>,
{
    match booted {
        Ok(b) => {
            let runner = platform(&b).runner();
            runner.run_then_shutdown(app(b))
        }
        Err(e) => {
            let mut out = hal::console::Io(EmergencyConsole(h.clone()));
            let _ = fmt::Write::write_fmt(&mut out, format_args!("xenpal: boot failed: {e}\n"));
            crash(&h)
        }
    }
}

/// Shut the domain down with `reason` (`SHUTDOWN_*`). Never returns: if Xen
/// does not stop the domain at once, it asks again.
#[doc(alias = "SCHEDOP_shutdown")]
pub fn shutdown<H: Hypervisor>(h: &H, reason: u32) -> ! {
    loop {
        let _ = hypercall::sched_shutdown(h, reason);
        core::hint::spin_loop();
    }
}

/// Crash the domain (`SHUTDOWN_crash`), after a fatal error has been
/// reported. Never returns.
pub fn crash<H: Hypervisor>(h: &H) -> ! {
    shutdown(h, abi::shutdown::CRASH)
}
