//! The simulator's public face: build domains, run them, look at what they
//! did.

use crate::domain::{Domain, Exit, Service};
use crate::guest::SimPlatform;
use crate::guest::{MainFuture, StartFn};
use crate::hypervisor::{Core, Queues, TimeSource, Trace, WorkerQueue};
use crate::sched::{self, Inbox, LocalSched, Stop};
use crate::{event_channel, layout};
use hal::mem::PAGE_SIZE;
use hal::{DomId, Instant};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;
use xen_pv::abi::io::xs;
use xen_pv::abi::{Errno, hvm_param};

/// How the simulator runs domains.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One domain at a time on the calling thread, in an order drawn from the
    /// seed; virtual time jumps to the next deadline when all are blocked.
    /// Same seed, same trace.
    Deterministic,
    /// Domains on `threads` OS threads, truly in parallel, in real time.
    FreeRunning {
        /// Worker threads.
        threads: usize,
    },
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed for scheduling order (and anything else random).
    pub seed: u64,
    /// Deterministic or free-running.
    pub mode: Mode,
    /// Virtual nanoseconds each guest clock read costs (deterministic mode).
    pub clock_read_cost_ns: u64,
    /// Keep a readable log of every traced event (else only the hash).
    pub trace_log: bool,
    /// Print guests' console output on stdout as it arrives, line by line,
    /// prefixed with the domain's name.
    pub echo_console: bool,
    /// Also append every domain's console output, prefixed the same way,
    /// to this file (created or truncated).
    pub console_log: Option<std::path::PathBuf>,
    /// Enforce XSM's SILO policy: domUs may talk only to privileged domains
    /// (Xen's default on Debian's Arm build).
    pub xsm_silo: bool,
    /// Virtual nanoseconds each scheduling step costs (deterministic mode),
    /// so guests that only yield still move time forward.
    pub step_cost_ns: u64,
    /// Scheduling steps after which a run stops (deterministic mode), so a
    /// guest spinning on `yield_now` fails a test instead of hanging it.
    pub max_steps: u64,
    /// dom0's RAM in pages (backends use it for their buffers).
    pub dom0_memory_pages: usize,
    /// How late a guest's timer may fire: each one set with
    /// `set_timer_op` or as a `SCHEDOP_poll` timeout fires from 0 to this
    /// much after its deadline (drawn from the seed, so a deterministic run
    /// replays it), never before it. Xen's own slop (its `timer_slop`) is 50 µs; zero (the default)
    /// fires every timer on time.
    pub timer_slop: Duration,
    /// How late the simulator's xenstored may answer (deterministic mode):
    /// after a guest's notification, it runs from 0 to this much later,
    /// drawn from the seed. Zero (the default): at the scheduler's next
    /// pick, as before.
    pub xenstore_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            mode: Mode::Deterministic,
            clock_read_cost_ns: 100,
            trace_log: false,
            echo_console: false,
            console_log: None,
            xsm_silo: false,
            step_cost_ns: 1_000,
            max_steps: 10_000_000,
            dom0_memory_pages: 2048,
            timer_slop: Duration::ZERO,
            xenstore_delay: Duration::ZERO,
        }
    }
}

impl SimConfig {
    /// Deterministic mode with `seed`, unless the environment variable
    /// `XENPAL_SEED` (decimal or `0x` hex) overrides it — how a failing
    /// test's seed is replayed.
    pub fn seeded(seed: u64) -> Self {
        SimConfig {
            seed: seed_from_env().unwrap_or(seed),
            ..Default::default()
        }
    }
}

/// The seed in `XENPAL_SEED`, if set and valid.
pub fn seed_from_env() -> Option<u64> {
    let v = std::env::var("XENPAL_SEED").ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A domain to build.
#[derive(Clone, Debug)]
pub struct DomainConfig {
    /// Name (in xenstore and console output).
    pub name: String,
    /// RAM in 4 KiB pages (at least 8).
    pub memory_pages: usize,
    /// Grant frames (512 grant references each).
    pub grant_frames: u32,
    /// Connect the domain to xenstored.
    pub xenstore: bool,
    /// Give the domain a PV console (else it has only the emergency console).
    pub pv_console: bool,
    /// Privileged (like dom0): may act on other domains.
    pub privileged: bool,
    /// Build the domain paused: it does not run until
    /// [`Sim::unpause`], so the toolstack can add its devices first.
    pub paused: bool,
}

impl DomainConfig {
    /// A small domain: 1 MiB of RAM, 4 grant frames, xenstore and PV console.
    pub fn new(name: impl Into<String>) -> Self {
        DomainConfig {
            name: name.into(),
            memory_pages: 256,
            grant_frames: 4,
            xenstore: true,
            pv_console: true,
            privileged: false,
            paused: false,
        }
    }

    /// Build it paused (see [`DomainConfig::paused`]).
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// Set the RAM size in pages.
    pub fn memory_pages(mut self, pages: usize) -> Self {
        self.memory_pages = pages;
        self
    }

    /// Set the number of grant frames.
    pub fn grant_frames(mut self, frames: u32) -> Self {
        self.grant_frames = frames;
        self
    }

    /// Without xenstore (like a dom0less guest with `no-xenstore`).
    pub fn without_xenstore(mut self) -> Self {
        self.xenstore = false;
        self
    }

    /// Without a PV console.
    pub fn without_pv_console(mut self) -> Self {
        self.pv_console = false;
        self
    }

    /// Privileged.
    pub fn privileged(mut self) -> Self {
        self.privileged = true;
        self
    }
}

/// Why a domain could not be built, started or unpaused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// All domain ids are in use.
    NoDomainIds,
    /// [`DomainConfig::memory_pages`] below 8.
    TooLittleMemory {
        /// The pages asked for.
        pages: usize,
    },
    /// [`DomainConfig::grant_frames`] is 0 or above 64.
    GrantFrames {
        /// The frames asked for.
        frames: u32,
    },
    /// [`Sim::spawn_dom0`] when dom0 already runs a task.
    Dom0Busy,
    /// [`Sim::unpause`] of a domain that does not exist.
    NoSuchDomain(DomId),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::NoDomainIds => f.write_str("no free domain id"),
            SimError::TooLittleMemory { pages } => write!(
                f,
                "bad domain config: {pages} pages of RAM, at least 8 needed"
            ),
            SimError::GrantFrames { frames } => write!(
                f,
                "bad domain config: {frames} grant frames, 1 to 64 allowed"
            ),
            SimError::Dom0Busy => f.write_str("bad domain config: dom0 already runs a task"),
            SimError::NoSuchDomain(id) => write!(f, "bad domain config: no domain d{}", id.0),
        }
    }
}

impl std::error::Error for SimError {}

/// Why a toolstack xenstore update ([`Sim::xenstore_write`],
/// [`Sim::xenstore_set_perms`], [`Sim::add_device`], and the device helpers
/// built on them) failed: xenstored answered `XS_ERROR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XenstoreWriteError {
    /// xenstored refused to write `path` (`XS_WRITE`), e.g. `EINVAL` for a
    /// malformed path, `ENOSPC`/`E2BIG` past a quota or size limit.
    Write {
        /// The node.
        path: String,
        /// xenstored's error (`EINVAL` if it named one we do not know).
        errno: Errno,
    },
    /// xenstored refused to set the permissions of `path`
    /// (`XS_SET_PERMS`), e.g. `ENOENT` if the node does not exist,
    /// `EINVAL` for a malformed permission.
    SetPerms {
        /// The node.
        path: String,
        /// xenstored's error (`EINVAL` if it named one we do not know).
        errno: Errno,
    },
}

impl XenstoreWriteError {
    /// The node the failed request was about.
    pub fn path(&self) -> &str {
        match self {
            XenstoreWriteError::Write { path, .. } | XenstoreWriteError::SetPerms { path, .. } => {
                path
            }
        }
    }

    /// xenstored's error.
    pub fn errno(&self) -> Errno {
        match self {
            XenstoreWriteError::Write { errno, .. }
            | XenstoreWriteError::SetPerms { errno, .. } => *errno,
        }
    }
}

impl std::fmt::Display for XenstoreWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XenstoreWriteError::Write { path, errno } => {
                write!(f, "writing xenstore node {path}: {errno}")
            }
            XenstoreWriteError::SetPerms { path, errno } => {
                write!(f, "setting permissions of xenstore node {path}: {errno}")
            }
        }
    }
}

impl std::error::Error for XenstoreWriteError {}

/// The errno of an `XS_ERROR` reply (`EINVAL` for a name we do not know, as
/// the guest's client does), or `None` for any other reply.
fn reply_errno(r: &xenpal_xenstored::Reply) -> Option<Errno> {
    (r.type_ == xs::ERROR).then(|| r.errno().unwrap_or(Errno::EINVAL))
}

/// A domain's state as the simulator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainStatus {
    /// Runnable or running.
    Running,
    /// Waiting for an event.
    Blocked,
    /// Gone, and why.
    Exited(Exit),
}

/// What a run ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// Domains that exited during or before this run, and why.
    pub exits: BTreeMap<DomId, Exit>,
    /// Domains still alive, all blocked with no timer to wake them
    /// (deterministic mode only): a deadlock, unless they wait for input.
    pub stalled: Vec<DomId>,
    /// Domains still alive when the run ended, for whatever reason.
    pub alive: Vec<DomId>,
    /// Whether the run stopped at [`SimConfig::max_steps`].
    pub step_limit_hit: bool,
    /// Time when the run ended.
    pub now: Instant,
    /// Scheduling steps taken so far.
    pub steps: u64,
}

impl RunReport {
    /// Whether every domain has exited, and cleanly (shutdown with poweroff,
    /// or its main returned).
    pub fn all_clean(&self) -> bool {
        self.alive.is_empty()
            && self
                .exits
                .values()
                .all(|e| matches!(e, Exit::Returned | Exit::Shutdown(0)))
    }
}

/// Shared state of free-running workers.
struct Workers {
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    inbox: Inbox,
}

/// Xen in user space. See the crate documentation.
///
/// Guest futures are not `Send`: in deterministic mode they live in the
/// `Sim` (on the thread that owns it), in free-running mode on worker
/// threads, created there from `Send` start closures.
pub struct Sim {
    core: Arc<Core>,
    mode: Mode,
    /// Deterministic mode: the guests and the RNG, installed as the
    /// thread's scheduler while running.
    local: Option<LocalSched>,
    steps: Arc<AtomicU64>,
    next_domid: u16,
    workers: Option<Workers>,
    max_steps: u64,
    dom0: DomainConfig,
    dom0_started: bool,
}

impl Sim {
    /// A simulator with dom0 (privileged, no guest task) and nothing else.
    pub fn new(config: SimConfig) -> Self {
        crate::guest_log::install();
        let queues = match config.mode {
            Mode::Deterministic => Queues::Det(Mutex::new(Vec::new())),
            Mode::FreeRunning { threads } => Queues::Free(
                (0..threads.max(1))
                    .map(|_| WorkerQueue::default())
                    .collect(),
            ),
        };
        let time = match config.mode {
            Mode::Deterministic => TimeSource::Virtual {
                now: AtomicU64::new(1_000_000),
                read_cost: config.clock_read_cost_ns,
            },
            Mode::FreeRunning { .. } => TimeSource::Real {
                start: std::time::Instant::now(),
            },
        };
        let core = Arc::new(Core {
            domains: RwLock::new(Vec::new()),
            time,
            timers: Mutex::new(Default::default()),
            timer_seq: AtomicU64::new(0),
            timer_cv: Condvar::new(),
            queues,
            trace: Mutex::new(Trace {
                log: config.trace_log.then(Vec::new),
                ..Default::default()
            }),
            xenstored: Mutex::new(xenpal_xenstored::Xenstored::new(Default::default())),
            svc_pending: Mutex::new(BTreeSet::new()),
            xsm_silo: config.xsm_silo,
            seed: config.seed,
            timer_slop: u64::try_from(config.timer_slop.as_nanos()).unwrap_or(u64::MAX),
            timer_rng: Mutex::new(crate::Rng::new(config.seed ^ 0x7133_5109)),
            xenstore_delay: u64::try_from(config.xenstore_delay.as_nanos()).unwrap_or(u64::MAX),
            xenstore_rng: Mutex::new(crate::Rng::new(config.seed ^ 0x0005_70de_1a15)),
            echo_console: config.echo_console,
            console_file: config.console_log.as_ref().and_then(|p| {
                match std::fs::File::create(p) {
                    Ok(f) => Some(Mutex::new(f)),
                    Err(e) => {
                        eprintln!("xenpal-sim: cannot create console log {}: {e}", p.display());
                        None
                    }
                }
            }),
            live: AtomicUsize::new(0),
            exit_lock: Mutex::new(()),
            exit_cv: Condvar::new(),
        });
        let dom0_cfg = DomainConfig::new("Domain-0")
            .memory_pages(config.dom0_memory_pages.max(64))
            .grant_frames(16)
            .privileged();
        let dom0 = Arc::new(Domain::new(
            DomId::DOM0,
            dom0_cfg.name.clone(),
            true,
            dom0_cfg.memory_pages,
            dom0_cfg.grant_frames,
            0,
        ));
        core.domains.write().unwrap().push(Some(dom0.clone()));
        let steps = Arc::new(AtomicU64::new(0));
        let local = matches!(config.mode, Mode::Deterministic)
            .then(|| LocalSched::new(config.seed, None, steps.clone(), config.step_cost_ns));
        let mut sim = Sim {
            core,
            mode: config.mode,
            local,
            steps,
            next_domid: 1,
            workers: None,
            max_steps: config.max_steps,
            dom0: dom0_cfg,
            dom0_started: false,
        };
        let cfg = sim.dom0.clone();
        sim.build(&dom0, &cfg);
        if let Mode::FreeRunning { threads } = config.mode {
            sim.start_workers(threads.max(1));
        }
        sim
    }

    /// The seed this simulator runs with.
    pub fn seed(&self) -> u64 {
        self.core.seed
    }

    /// Current simulated time.
    pub fn now(&self) -> Instant {
        self.core.now()
    }

    /// A request to xenstored as dom0 (the toolstack); payload parts are
    /// joined with NULs as the wire format wants (a NUL after each part but
    /// the last value of a write).
    fn xs(&self, type_: u32, parts: &[&str]) -> xenpal_xenstored::Reply {
        let mut payload = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            payload.extend_from_slice(p.as_bytes());
            if !(type_ == xs::WRITE && i == parts.len() - 1) {
                payload.push(0);
            }
        }
        let (reply, notes) = {
            let mut x = self.core.xenstored.lock().unwrap();
            let r = x.request(DomId::DOM0, type_, 0, &payload);
            (r, x.take_notifications())
        };
        for d in notes {
            sched::notify_store(&self.core, d);
        }
        reply
    }

    /// Read a xenstore node as the toolstack. `None` if it does not exist.
    pub fn xenstore_read(&self, path: &str) -> Option<Vec<u8>> {
        let r = self.xs(xs::READ, &[path]);
        (r.type_ == xs::READ).then_some(r.payload)
    }

    /// Write a xenstore node as the toolstack (creating parents).
    ///
    /// Errors: [`XenstoreWriteError::Write`] with xenstored's errno.
    pub fn xenstore_write(&self, path: &str, value: &str) -> Result<(), XenstoreWriteError> {
        let r = self.xs(xs::WRITE, &[path, value]);
        match reply_errno(&r) {
            Some(errno) => Err(XenstoreWriteError::Write {
                path: path.into(),
                errno,
            }),
            None => Ok(()),
        }
    }

    /// Set a node's permissions as the toolstack, e.g. `["n0", "r5"]`.
    ///
    /// Errors: [`XenstoreWriteError::SetPerms`] with xenstored's errno.
    pub fn xenstore_set_perms(&self, path: &str, perms: &[&str]) -> Result<(), XenstoreWriteError> {
        let mut parts = vec![path];
        parts.extend_from_slice(perms);
        let r = self.xs(xs::SET_PERMS, &parts);
        match reply_errno(&r) {
            Some(errno) => Err(XenstoreWriteError::SetPerms {
                path: path.into(),
                errno,
            }),
            None => Ok(()),
        }
    }

    /// Build a domain and start `main` in it once it is scheduled. `main`
    /// receives the guest's platform; the domain exits when `main` returns,
    /// when it shuts down, or if it panics.
    ///
    /// Errors: [`SimError::NoDomainIds`]; [`SimError::TooLittleMemory`] for
    /// fewer than 8 pages of RAM; [`SimError::GrantFrames`] for 0 or more
    /// than 64 grant frames.
    pub fn spawn<F, Fut>(&mut self, cfg: DomainConfig, main: F) -> Result<DomId, SimError>
    where
        F: FnOnce(SimPlatform) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if cfg.memory_pages < 8 {
            return Err(SimError::TooLittleMemory {
                pages: cfg.memory_pages,
            });
        }
        if cfg.grant_frames == 0 || cfg.grant_frames > 64 {
            return Err(SimError::GrantFrames {
                frames: cfg.grant_frames,
            });
        }
        if self.next_domid >= DomId::FIRST_RESERVED.0 {
            return Err(SimError::NoDomainIds);
        }
        let id = DomId(self.next_domid);
        self.next_domid += 1;
        let nworkers = match self.mode {
            Mode::Deterministic => 1,
            Mode::FreeRunning { threads } => threads.max(1),
        };
        let dom = Arc::new(Domain::new(
            id,
            cfg.name.clone(),
            cfg.privileged,
            cfg.memory_pages,
            cfg.grant_frames,
            id.0 as usize % nworkers,
        ));
        {
            let mut doms = self.core.domains.write().unwrap();
            if doms.len() <= id.0 as usize {
                doms.resize(id.0 as usize + 1, None);
            }
            doms[id.0 as usize] = Some(dom.clone());
        }
        self.build(&dom, &cfg);
        self.core.live.fetch_add(1, Ordering::SeqCst);
        self.start(
            &dom,
            &cfg,
            Box::new(move |p| Box::pin(main(p)) as MainFuture),
        );
        Ok(id)
    }

    /// Run `main` in dom0, the privileged domain that exists from the start
    /// (with xenstore and a PV console). Backends run there. dom0 does not
    /// count as a guest: [`run`](Self::run) ends when every other domain has
    /// exited.
    ///
    /// Errors: [`SimError::Dom0Busy`] if dom0 already runs something.
    pub fn spawn_dom0<F, Fut>(&mut self, main: F) -> Result<(), SimError>
    where
        F: FnOnce(SimPlatform) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if self.dom0_started {
            return Err(SimError::Dom0Busy);
        }
        self.dom0_started = true;
        let dom = self.core.domain(DomId::DOM0).expect("dom0 exists");
        let cfg = self.dom0.clone();
        self.start(
            &dom,
            &cfg,
            Box::new(move |p| Box::pin(main(p)) as MainFuture),
        );
        Ok(())
    }

    fn start(&mut self, dom: &Arc<Domain>, cfg: &DomainConfig, start: StartFn) {
        let id = dom.id;
        let new = crate::guest::new_guest(start, cfg.memory_pages, cfg.grant_frames as usize);
        match (&self.workers, &mut self.local) {
            (Some(w), _) => w.inbox[dom.worker].lock().unwrap().push((id, new)),
            (None, Some(local)) => {
                local.slots.insert(id, new.into());
            }
            (None, None) => unreachable!("deterministic mode keeps a local scheduler"),
        }
        self.core.trace(&[3, u64::from(id.0)], || {
            format!("create d{} {}", id.0, cfg.name)
        });
        if !cfg.paused {
            self.core.make_runnable(dom);
        }
    }

    /// Let a domain built [paused](DomainConfig::paused) run.
    ///
    /// Errors: [`SimError::NoSuchDomain`] if there is no such domain.
    pub fn unpause(&self, id: DomId) -> Result<(), SimError> {
        let dom = self.core.domain(id).ok_or(SimError::NoSuchDomain(id))?;
        self.core.make_runnable(&dom);
        Ok(())
    }

    /// Add a split device as a toolstack does (libxl's layout): the frontend
    /// directory `/local/domain/<frontend>/device/<class>/<id>` (owned by the
    /// frontend, readable by dom0) and the backend directory
    /// `/local/domain/0/backend/<class>/<frontend>/<id>` (owned by dom0,
    /// readable by the frontend), each with `state` 1, the links between
    /// them, and the extra nodes given. Returns `(frontend, backend)` paths.
    ///
    /// Errors: the first [`XenstoreWriteError`] (the node it names says how
    /// far the device got; nodes already written stay).
    pub fn add_device(
        &self,
        frontend: DomId,
        class: &str,
        id: u32,
        frontend_nodes: &[(&str, &str)],
        backend_nodes: &[(&str, &str)],
    ) -> Result<(String, String), XenstoreWriteError> {
        let fe = format!("/local/domain/{}/device/{class}/{id}", frontend.0);
        let be = format!("/local/domain/0/backend/{class}/{}/{id}", frontend.0);
        let fe_owner = format!("n{}", frontend.0);
        let fe_reader = format!("r{}", frontend.0);
        // Backend first: when the frontend sees its device, the backend
        // directory it names must already exist.
        self.xenstore_write(&be, "")?;
        self.xenstore_set_perms(&be, &["n0", &fe_reader])?;
        let fid = frontend.0.to_string();
        for (k, v) in [
            ("frontend", fe.as_str()),
            ("frontend-id", fid.as_str()),
            ("online", "1"),
        ]
        .into_iter()
        .chain(backend_nodes.iter().copied())
        {
            self.xenstore_write(&format!("{be}/{k}"), v)?;
        }
        self.xenstore_write(&fe, "")?;
        self.xenstore_set_perms(&fe, &[&fe_owner, "r0"])?;
        for (k, v) in [("backend", be.as_str()), ("backend-id", "0")]
            .into_iter()
            .chain(frontend_nodes.iter().copied())
        {
            self.xenstore_write(&format!("{fe}/{k}"), v)?;
        }
        // The states last, frontend first, so watchers see complete devices.
        self.xenstore_write(&format!("{fe}/state"), "1")?;
        self.xenstore_write(&format!("{be}/state"), "1")?;
        Ok((fe, be))
    }

    /// The toolstack's part of building a domain: magic pages, channels,
    /// HVM parameters, xenstore entries.
    fn build(&self, dom: &Arc<Domain>, cfg: &DomainConfig) {
        let id = dom.id.0;
        let home = format!("/local/domain/{id}");
        if cfg.xenstore {
            let gfn = layout::store_gfn(cfg.memory_pages);
            let port = event_channel::alloc_service_port(dom, Service::Xenstore)
                .expect("fresh domain has ports");
            {
                let mut st = dom.st.lock().unwrap();
                st.hvm_params[hvm_param::STORE_PFN as usize] = gfn.0;
                st.hvm_params[hvm_param::STORE_EVTCHN as usize] = u64::from(port);
            }
            let ring = dom.mem.map_frames(gfn, 1).expect("magic page is RAM");
            self.core
                .xenstored
                .lock()
                .unwrap()
                .introduce(dom.id, Box::new(ring));
        }
        if cfg.pv_console {
            let gfn = layout::console_gfn(cfg.memory_pages);
            let port = event_channel::alloc_service_port(dom, Service::Console)
                .expect("fresh domain has ports");
            let mut st = dom.st.lock().unwrap();
            st.hvm_params[hvm_param::CONSOLE_PFN as usize] = gfn.0;
            st.hvm_params[hvm_param::CONSOLE_EVTCHN as usize] = u64::from(port);
        }
        // As libxl does: the home directory is the toolstack's, readable by
        // the guest; `data` and `device` belong to the guest.
        let read = format!("r{id}");
        let own = format!("b{id}");
        let _ = self.xenstore_write(&home, "");
        let _ = self.xenstore_set_perms(&home, &["n0", &read]);
        let _ = self.xenstore_write(&format!("{home}/name"), &cfg.name);
        let _ = self.xenstore_write(&format!("{home}/domid"), &id.to_string());
        for sub in ["data", "device"] {
            let p = format!("{home}/{sub}");
            let _ = self.xenstore_write(&p, "");
            let _ = self.xenstore_set_perms(&p, &[&format!("n{id}"), "r0"]);
        }
        // `control`: the toolstack's, readable by the guest, with the nodes
        // the guest answers in (and, for `feature-*`, advertises in)
        // writable by it, as libxl makes them.
        let control = format!("{home}/control");
        let _ = self.xenstore_write(&control, "");
        let _ = self.xenstore_set_perms(&control, &["n0", &read]);
        for node in ["shutdown", "feature-poweroff", "feature-reboot"] {
            let p = format!("{control}/{node}");
            let _ = self.xenstore_write(&p, "");
            let _ = self.xenstore_set_perms(&p, &["n0", &own]);
        }
        let _ = self.xenstore_write(
            &format!("{home}/memory/target"),
            &(cfg.memory_pages * PAGE_SIZE / 1024).to_string(),
        );
    }

    /// Run until every guest has exited, or nothing can run (deterministic
    /// mode: all blocked with no timer pending).
    pub fn run(&mut self) -> RunReport {
        self.run_until(Instant::MAX)
    }

    /// Run for `d` of simulated time (deterministic) or real time
    /// (free-running), or until every guest exited.
    pub fn run_for(&mut self, d: Duration) -> RunReport {
        let until = self.now() + d;
        self.run_until(until)
    }

    /// Run until `deadline`, or until every guest exited, or (deterministic)
    /// nothing can run.
    pub fn run_until(&mut self, deadline: Instant) -> RunReport {
        let mut stalled = Vec::new();
        let mut step_limit_hit = false;
        match self.mode {
            Mode::Deterministic => (stalled, step_limit_hit) = self.run_det(deadline),
            Mode::FreeRunning { .. } => self.wait_free(deadline),
        }
        let exits = self.exits();
        let alive = {
            let doms = self.core.domains.read().unwrap();
            doms.iter()
                .flatten()
                .filter(|d| d.id != DomId::DOM0 && !exits.contains_key(&d.id))
                .map(|d| d.id)
                .collect()
        };
        RunReport {
            exits,
            stalled,
            alive,
            step_limit_hit,
            now: self.now(),
            steps: self.steps.load(Ordering::SeqCst),
        }
    }

    fn run_det(&mut self, deadline: Instant) -> (Vec<DomId>, bool) {
        let mut local = self
            .local
            .take()
            .expect("deterministic mode keeps a local scheduler");
        local.step_limit = self
            .steps
            .load(Ordering::SeqCst)
            .saturating_add(self.max_steps);
        let previous = sched::install(Some(local));
        let core = self.core.clone();
        let stop = sched::run_loop(&core, deadline.as_nanos(), &|| {
            core.live.load(Ordering::SeqCst) == 0
        });
        self.local = sched::install(previous);
        let stalled = match stop {
            Stop::Idle => self
                .local
                .as_ref()
                .map(|l| l.slots.keys().copied().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        (stalled, stop == Stop::StepLimit)
    }

    fn start_workers(&mut self, threads: usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let inbox: Inbox = Arc::new((0..threads).map(|_| Mutex::new(Vec::new())).collect());
        let mut handles = Vec::new();
        for w in 0..threads {
            let core = self.core.clone();
            let stop = stop.clone();
            let inbox = inbox.clone();
            let steps = self.steps.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("xenpal-sim-{w}"))
                    .spawn(move || sched::worker(core, w, stop, inbox, steps))
                    .expect("spawn simulator worker"),
            );
        }
        {
            let core = self.core.clone();
            let stop = stop.clone();
            handles.push(
                std::thread::Builder::new()
                    .name("xenpal-sim-timer".into())
                    .spawn(move || sched::timer_thread(core, stop))
                    .expect("spawn simulator timer"),
            );
        }
        self.workers = Some(Workers {
            handles,
            stop,
            inbox,
        });
    }

    fn wait_free(&mut self, deadline: Instant) {
        let mut guard = self.core.exit_lock.lock().unwrap();
        loop {
            if self.core.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            let now = self.core.time.peek();
            if now >= deadline.as_nanos() {
                return;
            }
            let wait = Duration::from_nanos((deadline.as_nanos() - now).min(50_000_000));
            guard = self.core.exit_cv.wait_timeout(guard, wait).unwrap().0;
        }
    }

    fn exits(&self) -> BTreeMap<DomId, Exit> {
        let doms = self.core.domains.read().unwrap();
        doms.iter()
            .flatten()
            .filter_map(|d| d.exit.lock().unwrap().clone().map(|e| (d.id, e)))
            .collect()
    }

    /// A domain's state, or `None` if there is no such domain.
    pub fn status(&self, id: DomId) -> Option<DomainStatus> {
        let d = self.core.domain(id)?;
        if let Some(e) = d.exit.lock().unwrap().clone() {
            return Some(DomainStatus::Exited(e));
        }
        Some(if d.blocked.load(Ordering::SeqCst) {
            DomainStatus::Blocked
        } else {
            DomainStatus::Running
        })
    }

    /// Everything domain `id` wrote to its consoles (PV and emergency).
    pub fn console_output(&self, id: DomId) -> String {
        self.core
            .domain(id)
            .map(|d| String::from_utf8_lossy(&d.console.lock().unwrap()).into_owned())
            .unwrap_or_default()
    }

    /// The trace hash: equal for two runs iff they did the same things in the
    /// same order at the same simulated times.
    pub fn trace_hash(&self) -> u64 {
        self.core.trace.lock().unwrap().hash
    }

    /// Number of traced events.
    pub fn trace_events(&self) -> u64 {
        self.core.trace.lock().unwrap().events
    }

    /// The trace log, if [`SimConfig::trace_log`] was set.
    pub fn trace_log(&self) -> Option<Vec<String>> {
        self.core.trace.lock().unwrap().log.clone()
    }

    /// How many foreign pages domain `id` maps now (its maptrack entries
    /// in use), or `None` if there is no such domain. After a run, dom0's
    /// count is what its backends forgot to unmap.
    #[doc(alias = "maptrack")]
    pub fn grant_mappings(&self, id: DomId) -> Option<usize> {
        let d = self.core.domain(id)?;
        let st = d.st.lock().unwrap();
        Some(st.maptrack.iter().filter(|m| m.is_some()).count())
    }

    /// Number of xenstore nodes.
    pub fn xenstore_nodes(&self) -> usize {
        self.core.xenstored.lock().unwrap().node_count()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.stop.store(true, Ordering::SeqCst);
            if let Queues::Free(qs) = &self.core.queues {
                for q in qs {
                    q.cv.notify_all();
                }
            }
            self.core.timer_cv.notify_all();
            for h in w.handles {
                let _ = h.join();
            }
        }
    }
}
