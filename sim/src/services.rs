//! Daemons of dom0 that the simulator provides itself: xenstored and the
//! console daemon. Their event channels are Xen-internal consumers (as Xen
//! does for its own services), so one simulator can serve 10,000 domains
//! without dom0 running out of 2-level ports.

use crate::domain::{Domain, Service};
use crate::hypervisor::{Core, Queues, Task, TimerKind};
use hal::DomId;
use hal::mem::{Gfn, SharedMemory};
use std::sync::atomic::Ordering;
use xen_pv::abi::hvm_param;
use xen_pv::abi::io::XenconsInterface;

/// A domain notified the service on its channel.
pub(crate) fn notify(core: &Core, svc: Service, from: DomId) {
    match &core.queues {
        Queues::Det(_) => {
            // Deterministic mode: the service runs as a task of its own, at
            // a point the scheduler picks, so guests see replies arrive late.
            let first = {
                let mut p = core.svc_pending.lock().unwrap();
                let first = p
                    .range((svc, DomId(0))..=(svc, DomId(u16::MAX)))
                    .next()
                    .is_none();
                p.insert((svc, from));
                first
            };
            if first {
                // xenstored may answer late, if so configured: from now to
                // the most delay, drawn from the seed.
                let delay = match svc {
                    Service::Xenstore if core.xenstore_delay > 0 => {
                        core.xenstore_rng.lock().unwrap().next_u64() % (core.xenstore_delay + 1)
                    }
                    _ => 0,
                };
                if delay == 0 {
                    core.enqueue(Task::Service(svc), 0);
                } else {
                    let at = core.time.peek().saturating_add(delay);
                    core.add_timer(at, TimerKind::Service(svc));
                }
            }
        }
        Queues::Free(_) => serve(core, svc, from),
    }
}

/// Run a service over every domain that notified it.
pub(crate) fn run(core: &Core, svc: Service) {
    let doms: Vec<DomId> = {
        let mut p = core.svc_pending.lock().unwrap();
        let mine: Vec<_> = p
            .range((svc, DomId(0))..=(svc, DomId(u16::MAX)))
            .copied()
            .collect();
        for e in &mine {
            p.remove(e);
        }
        mine.into_iter().map(|(_, d)| d).collect()
    };
    for d in doms {
        serve(core, svc, d);
    }
}

fn serve(core: &Core, svc: Service, dom: DomId) {
    match svc {
        Service::Xenstore => {
            let notes = {
                let mut xs = core.xenstored.lock().unwrap();
                xs.serve(dom);
                xs.take_notifications()
            };
            for d in notes {
                notify_guest(core, d, hvm_param::STORE_EVTCHN);
            }
        }
        Service::Console => {
            if let Some(d) = core.domain(dom)
                && drain_console(core, &d)
            {
                notify_guest(core, dom, hvm_param::CONSOLE_EVTCHN);
            }
        }
    }
}

/// Raise the guest's end of the channel named by HVM param `param`.
fn notify_guest(core: &Core, dom: DomId, param: u32) {
    if let Some(d) = core.domain(dom) {
        let port = d.st.lock().unwrap().hvm_params[param as usize] as u32;
        if port != 0 {
            core.set_pending(&d, port);
        }
    }
}

const OUT: usize = core::mem::offset_of!(XenconsInterface, out);
const OUT_CONS: usize = core::mem::offset_of!(XenconsInterface, out_cons);
const OUT_PROD: usize = core::mem::offset_of!(XenconsInterface, out_prod);
const OUT_SIZE: u32 = 2048;

/// Collect what is left in a dying domain's console ring.
pub(crate) fn flush_console(core: &Core, d: &Domain) {
    drain_console(core, d);
}

/// Move the guest's console output into its capture. Returns whether
/// anything was consumed. A hostile producer index stops the console.
fn drain_console(core: &Core, d: &Domain) -> bool {
    let gfn = d.st.lock().unwrap().hvm_params[hvm_param::CONSOLE_PFN as usize];
    let Ok(page) = d.mem.map_frames(Gfn(gfn), 1) else {
        return false;
    };
    let cons = page.load_u32(OUT_CONS, Ordering::Relaxed);
    let prod = page.load_u32(OUT_PROD, Ordering::Acquire);
    let n = prod.wrapping_sub(cons);
    if n == 0 || n > OUT_SIZE {
        return false;
    }
    let mut buf = vec![0u8; n as usize];
    let at = (cons % OUT_SIZE) as usize;
    let first = (OUT_SIZE as usize - at).min(n as usize);
    page.read(OUT + at, &mut buf[..first]);
    page.read(OUT, &mut buf[first..]);
    page.store_u32(OUT_CONS, prod, Ordering::Release);
    core.console_out(d, &buf);
    true
}
