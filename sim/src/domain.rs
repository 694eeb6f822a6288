//! A domain (Xen's `struct domain`, `xen/common/domain.c`): its memory,
//! `shared_info`, grant frames, event-channel ports, pins and maptrack,
//! timers' generations, HVM parameters, console and runstate; and
//! `vcpu_op`, the runstate area and information of its one vCPU.

use crate::guest_access::{Args, HResult};
use crate::p2m::DomainMemory;
use hal::DomId;
use hal::mem::{PAGE_SIZE, SharedMemory, WordMemory};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use xen_pv::abi::{self, Errno};
use xen_pv::event::layout;

/// Number of 2-level event-channel ports per domain.
pub(crate) const NR_PORTS: u32 = xen_pv::abi::EVTCHN_2L_NR_CHANNELS;
/// Number of VIRQs (`NR_VIRQS`).
pub(crate) const NR_VIRQS: usize = 24;
/// Number of HVM parameters (`HVM_NR_PARAMS`).
pub(crate) const HVM_NR_PARAMS: usize = 39;

/// Who is at the other end of a Xen-internal channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Service {
    /// xenstored.
    Xenstore,
    /// The console daemon (xenconsoled).
    Console,
}

/// One event-channel port's state (Xen's `ECS_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Chan {
    Free,
    Reserved,
    Unbound {
        remote: DomId,
    },
    Interdomain {
        remote: DomId,
        port: u32,
    },
    Virq(u32),
    /// Bound to one of our vCPUs (`EVTCHNOP_bind_ipi`): a send marks the
    /// port itself pending.
    Ipi,
    /// Connected to a service of the simulator standing in for dom0's daemon;
    /// shows as interdomain with dom0.
    Service(Service),
}

/// A foreign page this domain mapped (its maptrack entry).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapEntry {
    pub granter: DomId,
    pub gref: u32,
    pub gfn: u64,
    pub readonly: bool,
}

/// Pins on one of this domain's grant entries (Xen's active entry).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pin {
    pub domid: u16,
    pub readers: u32,
    pub writers: u32,
}

/// Mutable per-domain hypervisor state.
pub(crate) struct DomState {
    pub ports: Vec<Chan>,
    pub virqs: [u32; NR_VIRQS],
    pub nr_grant_frames: u32,
    pub pins: std::collections::BTreeMap<u32, Pin>,
    pub maptrack: Vec<Option<MapEntry>>,
    pub timer_gen: u64,
    pub timer: Option<u64>,
    pub poll: Option<Vec<u32>>,
    pub poll_gen: u64,
    pub hvm_params: [u64; HVM_NR_PARAMS],
    pub shutdown: Option<u32>,
}

/// Why a domain stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `SCHEDOP_shutdown` with this `SHUTDOWN_*` reason.
    Shutdown(u32),
    /// The guest's main task returned.
    Returned,
    /// The guest's code panicked; the message.
    Panicked(String),
    /// The guest could not boot.
    BootFailed(String),
    /// The hypervisor crashed the domain (Xen's `domain_crash`): the reason.
    Crashed(String),
}

/// A simulated domain.
pub(crate) struct Domain {
    pub id: DomId,
    pub name: String,
    pub privileged: bool,
    pub mem: DomainMemory,
    pub shared_info: WordMemory,
    pub grant_block: WordMemory,
    pub max_grant_frames: u32,
    pub st: Mutex<DomState>,
    pub blocked: AtomicBool,
    pub queued: AtomicBool,
    pub dead: AtomicBool,
    pub worker: usize,
    pub console: Mutex<Vec<u8>>,
    pub exit: Mutex<Option<Exit>>,
    /// Console output not yet ended by a newline (for prefixed echo).
    pub echo_line: Mutex<Vec<u8>>,
    /// Xen's runstate accounting: current state, when it began, time per
    /// state.
    pub runstate: Mutex<xen_pv::abi::VcpuRunstateInfo>,
    /// Where the guest asked Xen to keep its runstate (frame, offset).
    pub runstate_area: Mutex<Option<(hal::mem::Gfn, usize)>>,
}

/// Bytes of console output kept per domain (oldest dropped beyond this).
pub(crate) const CONSOLE_KEEP: usize = 1 << 20;

impl Domain {
    pub(crate) fn new(
        id: DomId,
        name: String,
        privileged: bool,
        ram_pages: usize,
        max_grant_frames: u32,
        worker: usize,
    ) -> Self {
        let mut ports = vec![Chan::Free; 1];
        ports[0] = Chan::Reserved;
        Domain {
            id,
            name,
            privileged,
            mem: DomainMemory::new(ram_pages, crate::layout::MAGIC_PAGES),
            shared_info: WordMemory::new(PAGE_SIZE),
            grant_block: WordMemory::new(max_grant_frames as usize * PAGE_SIZE),
            max_grant_frames,
            st: Mutex::new(DomState {
                ports,
                virqs: [0; NR_VIRQS],
                nr_grant_frames: 1,
                pins: Default::default(),
                maptrack: Vec::new(),
                timer_gen: 0,
                timer: None,
                poll: None,
                poll_gen: 0,
                hvm_params: [0; HVM_NR_PARAMS],
                shutdown: None,
            }),
            blocked: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            worker,
            console: Mutex::new(Vec::new()),
            exit: Mutex::new(None),
            echo_line: Mutex::new(Vec::new()),
            runstate: Mutex::new(xen_pv::abi::VcpuRunstateInfo {
                state: xen_pv::abi::runstate::RUNNABLE,
                ..Default::default()
            }),
            runstate_area: Mutex::new(None),
        }
    }

    /// Account a runstate change at time `now`.
    pub(crate) fn set_runstate(&self, state: i32, now: u64) {
        let mut r = self.runstate.lock().unwrap();
        let spent = now.saturating_sub(r.state_entry_time);
        let prev = r.state as usize;
        if let Some(t) = r.time.get_mut(prev) {
            *t += spent;
        }
        r.state = state;
        r.state_entry_time = now;
        let copy = *r;
        drop(r);
        self.publish_runstate(&copy);
    }

    /// Write the runstate into the guest's registered area, if any, as Xen
    /// does at each context switch.
    pub(crate) fn publish_runstate(&self, r: &xen_pv::abi::VcpuRunstateInfo) {
        let Some((gfn, off)) = *self.runstate_area.lock().unwrap() else {
            return;
        };
        if let Ok(page) = self.mem.map_frames(gfn, 1) {
            hal::SharedMemory::write(&page, off, zerocopy::IntoBytes::as_bytes(r));
        }
    }

    /// Whether Xen has flagged an upcall for vCPU 0.
    pub(crate) fn upcall_pending(&self) -> bool {
        self.shared_info
            .load_u8(layout::UPCALL_PENDING, Ordering::SeqCst)
            != 0
    }

    pub(crate) fn append_console(&self, bytes: &[u8]) {
        let mut c = self.console.lock().unwrap();
        c.extend_from_slice(bytes);
        if c.len() > CONSOLE_KEEP {
            let drop = c.len() - CONSOLE_KEEP;
            c.drain(..drop);
        }
    }
}

pub(crate) fn vcpu_op(dom: &Arc<Domain>, cmd: u32, vcpu: u64, a: &mut Args<'_>) -> HResult {
    if vcpu != 0 {
        return Err(Errno::ENOENT);
    }
    match cmd {
        abi::VCPUOP_GET_RUNSTATE_INFO => {
            let r = *dom.runstate.lock().unwrap();
            a.write(2, &r)?;
            Ok(0)
        }
        abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let x: abi::VcpuRegisterRunstateMemoryArea = a.read(2)?;
            if x.addr == 0 {
                *dom.runstate_area.lock().unwrap() = None;
                return Ok(0);
            }
            // An identity-mapped guest passes the guest-physical address.
            let size = core::mem::size_of::<abi::VcpuRunstateInfo>() as u64;
            let off = x.addr % hal::PAGE_SIZE as u64;
            if !x.addr.is_multiple_of(8) || off + size > hal::PAGE_SIZE as u64 {
                return Err(Errno::EINVAL);
            }
            let gfn = hal::mem::Gfn::containing(x.addr);
            dom.mem.map_frames(gfn, 1).map_err(|_| Errno::EFAULT)?;
            *dom.runstate_area.lock().unwrap() = Some((gfn, off as usize));
            let r = *dom.runstate.lock().unwrap();
            dom.publish_runstate(&r);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
