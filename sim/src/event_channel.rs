//! `event_channel_op`: Xen's event-channel operations, 2-level ABI
//! (Xen's `xen/common/event_channel.c`), one function per operation.

use crate::domain::{Chan, Domain, NR_PORTS, NR_VIRQS, Service};
use crate::guest_access::{Args, HResult};
use crate::hypervisor::Core;
use crate::xsm;
use hal::DomId;
use std::sync::Arc;
use xen_pv::abi::{self, Errno, evtchnop, evtchnstat};

/// Lowest free port of `dom`, growing the table; `ENOSPC` when full.
fn get_free_port(ports: &mut Vec<Chan>) -> Result<u32, Errno> {
    if let Some(p) = ports.iter().position(|c| *c == Chan::Free) {
        return Ok(p as u32);
    }
    if ports.len() as u32 >= NR_PORTS {
        return Err(Errno::ENOSPC);
    }
    ports.push(Chan::Free);
    Ok(ports.len() as u32 - 1)
}

fn valid(ports: &[Chan], port: u32) -> bool {
    (port as usize) < ports.len() && port != 0
}

/// Ports Xen allocates its `struct evtchn`s for at a time: a port beyond
/// the last bucket is invalid (`EINVAL`), one inside it merely free.
const BUCKET: usize = 64;

/// Xen's `port_is_valid`: inside an allocated bucket (port 0 included).
fn in_bucket(ports: &[Chan], port: u32) -> bool {
    port < NR_PORTS && (port as usize) < ports.len().next_multiple_of(BUCKET)
}

/// Whether `virq` is global (bound on vCPU 0 only), as Xen's
/// `virq_is_global` says: all but `VIRQ_TIMER`, `VIRQ_DEBUG`,
/// `VIRQ_XENOPROF` and `VIRQ_XENPMU` (the arch VIRQs are global on Arm and
/// x86 alike).
fn virq_is_global(virq: u32) -> bool {
    !matches!(virq, 0 | 1 | 7 | 13)
}

/// Allocate a port of `dom` connected to a simulator service (the
/// toolstack's xenstore and console channels).
pub(crate) fn alloc_service_port(dom: &Domain, svc: Service) -> Result<u32, Errno> {
    let mut st = dom.st.lock().unwrap();
    let port = get_free_port(&mut st.ports)?;
    st.ports[port as usize] = Chan::Service(svc);
    Ok(port)
}

/// Allocate an unbound port of `dom` for `remote` (toolstack helper).
pub(crate) fn alloc_unbound_for(dom: &Domain, remote: DomId) -> Result<u32, Errno> {
    let mut st = dom.st.lock().unwrap();
    let port = get_free_port(&mut st.ports)?;
    st.ports[port as usize] = Chan::Unbound { remote };
    Ok(port)
}

/// Close `port` of `dom`: the peer of an interdomain channel becomes
/// unbound; the port's pending bit is cleared.
pub(crate) fn close_port(core: &Core, dom: &Domain, port: u32) -> Result<(), Errno> {
    let chan = {
        let mut st = dom.st.lock().unwrap();
        if !valid(&st.ports, port) {
            return Err(Errno::EINVAL);
        }
        let chan = st.ports[port as usize];
        match chan {
            Chan::Free | Chan::Reserved => return Err(Errno::EINVAL),
            Chan::Virq(v) => st.virqs[v as usize] = 0,
            _ => {}
        }
        st.ports[port as usize] = Chan::Free;
        chan
    };
    if let Chan::Interdomain {
        remote,
        port: rport,
    } = chan
        && let Some(rd) = core.domain(remote)
    {
        let mut rst = rd.st.lock().unwrap();
        if rst.ports.get(rport as usize)
            == Some(&Chan::Interdomain {
                remote: dom.id,
                port,
            })
        {
            rst.ports[rport as usize] = Chan::Unbound { remote: dom.id };
        }
    }
    core.clear_pending(dom, port);
    Ok(())
}

/// Notify the other end of `port` of `dom` (EVTCHNOP_send).
pub(crate) fn send(core: &Core, dom: &Arc<Domain>, port: u32) -> Result<(), Errno> {
    let chan = {
        let st = dom.st.lock().unwrap();
        if !valid(&st.ports, port) {
            return Err(Errno::EINVAL);
        }
        st.ports[port as usize]
    };
    match chan {
        Chan::Interdomain {
            remote,
            port: rport,
        } => {
            if let Some(rd) = core.domain(remote) {
                core.set_pending(&rd, rport);
            }
            Ok(())
        }
        Chan::Service(svc) => {
            crate::services::notify(core, svc, dom.id);
            Ok(())
        }
        Chan::Ipi => {
            core.set_pending(dom, port);
            Ok(())
        }
        // Xen drops notifications on an unbound port silently.
        Chan::Unbound { .. } => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// `event_channel_op`: one function per `EVTCHNOP_*`, as Xen's
/// `do_event_channel_op` dispatches.
pub(crate) fn op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        evtchnop::ALLOC_UNBOUND => evtchn_alloc_unbound(core, dom, a),
        evtchnop::BIND_INTERDOMAIN => evtchn_bind_interdomain(core, dom, a),
        evtchnop::BIND_VIRQ => evtchn_bind_virq(dom, a),
        evtchnop::CLOSE => evtchn_close(core, dom, a),
        evtchnop::SEND => evtchn_send(core, dom, a),
        evtchnop::UNMASK => evtchn_unmask(core, dom, a),
        evtchnop::STATUS => evtchn_status(core, dom, a),
        evtchnop::BIND_IPI => evtchn_bind_ipi(dom, a),
        evtchnop::BIND_VCPU => evtchn_bind_vcpu(dom, a),
        evtchnop::SET_PRIORITY => evtchn_set_priority(dom, a),
        // FIFO-only: the domain uses the 2-level ABI.
        evtchnop::EXPAND_ARRAY => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::ENOSYS),
    }
}

/// `EVTCHNOP_alloc_unbound`: a port of `dom` (or, for a privileged caller, of another domain) for a remote domain to bind.
fn evtchn_alloc_unbound(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let mut x: abi::EvtchnAllocUnbound = a.read(1)?;
    let target = core.resolve(dom, hal::DomId(x.dom)).ok_or(Errno::ESRCH)?;
    if target.id != dom.id && !dom.privileged {
        return Err(Errno::EPERM);
    }
    let remote = if x.remote_dom == DomId::SELF.0 {
        dom.id
    } else {
        DomId(x.remote_dom)
    };
    // SILO looks the remote domain up (the dummy policy does not).
    match core.domain(remote) {
        None if core.xsm_silo => return Err(Errno::ESRCH),
        Some(rd) if xsm::silo_denies(core, &target, &rd) => return Err(Errno::EPERM),
        _ => {}
    }
    x.port = alloc_unbound_for(&target, remote)?;
    a.write(1, &x)?;
    Ok(0)
}

/// `EVTCHNOP_bind_interdomain`: a local port connected to a remote port left unbound for us; the new port starts pending.
fn evtchn_bind_interdomain(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let mut x: abi::EvtchnBindInterdomain = a.read(1)?;
    let rd = core.resolve(dom, DomId(x.remote_dom)).ok_or(Errno::ESRCH)?;
    let lport = if rd.id == dom.id {
        let mut st = dom.st.lock().unwrap();
        match st.ports.get(x.remote_port as usize) {
            Some(Chan::Unbound { remote }) if *remote == dom.id && x.remote_port != 0 => {}
            _ => return Err(Errno::EINVAL),
        }
        let lport = get_free_port(&mut st.ports)?;
        st.ports[lport as usize] = Chan::Interdomain {
            remote: dom.id,
            port: x.remote_port,
        };
        st.ports[x.remote_port as usize] = Chan::Interdomain {
            remote: dom.id,
            port: lport,
        };
        lport
    } else {
        // Lock the lower domain id first, as Xen does.
        let (mut lst, mut rst);
        if dom.id < rd.id {
            lst = dom.st.lock().unwrap();
            rst = rd.st.lock().unwrap();
        } else {
            rst = rd.st.lock().unwrap();
            lst = dom.st.lock().unwrap();
        }
        match rst.ports.get(x.remote_port as usize) {
            Some(Chan::Unbound { remote }) if *remote == dom.id && x.remote_port != 0 => {}
            _ => return Err(Errno::EINVAL),
        }
        // XSM is asked after the ports are checked.
        if xsm::silo_denies(core, dom, &rd) {
            return Err(Errno::EPERM);
        }
        let lport = get_free_port(&mut lst.ports)?;
        lst.ports[lport as usize] = Chan::Interdomain {
            remote: rd.id,
            port: x.remote_port,
        };
        rst.ports[x.remote_port as usize] = Chan::Interdomain {
            remote: dom.id,
            port: lport,
        };
        lport
    };
    // Notifications sent to the unbound remote port were lost: Xen
    // conservatively marks the new local port pending.
    core.set_pending(dom, lport);
    x.local_port = lport;
    a.write(1, &x)?;
    Ok(0)
}

/// `EVTCHNOP_bind_virq`: a port for a virtual IRQ.
fn evtchn_bind_virq(dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let mut x: abi::EvtchnBindVirq = a.read(1)?;
    if x.virq as usize >= NR_VIRQS {
        return Err(Errno::EINVAL);
    }
    if virq_is_global(x.virq) && x.vcpu != 0 {
        return Err(Errno::EINVAL);
    }
    if x.vcpu != 0 {
        return Err(Errno::ENOENT);
    }
    let mut st = dom.st.lock().unwrap();
    if st.virqs[x.virq as usize] != 0 {
        return Err(Errno::EEXIST);
    }
    let port = get_free_port(&mut st.ports)?;
    st.ports[port as usize] = Chan::Virq(x.virq);
    st.virqs[x.virq as usize] = port;
    drop(st);
    x.port = port;
    a.write(1, &x)?;
    Ok(0)
}

/// `EVTCHNOP_close`.
fn evtchn_close(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let x: abi::EvtchnPort = a.read(1)?;
    close_port(core, dom, x.port)?;
    Ok(0)
}

/// `EVTCHNOP_send`.
fn evtchn_send(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let x: abi::EvtchnPort = a.read(1)?;
    send(core, dom, x.port)?;
    Ok(0)
}

/// `EVTCHNOP_unmask`: clear the mask bit; a pending port raises the upcall.
fn evtchn_unmask(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let x: abi::EvtchnPort = a.read(1)?;
    {
        let st = dom.st.lock().unwrap();
        if !in_bucket(&st.ports, x.port) {
            return Err(Errno::EINVAL);
        }
    }
    core.unmask(dom, x.port);
    Ok(0)
}

/// `EVTCHNOP_status`: what a port of ours (or, for a privileged caller, of another domain) is bound to. Xen checks the port before the permission.
fn evtchn_status(core: &Core, dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    let mut x: abi::EvtchnStatus = a.read(1)?;
    let target = core.resolve(dom, DomId(x.dom)).ok_or(Errno::ESRCH)?;
    let st = target.st.lock().unwrap();
    // Xen checks the port before the permission.
    if !in_bucket(&st.ports, x.port) {
        return Err(Errno::EINVAL);
    }
    if target.id != dom.id && !dom.privileged {
        return Err(Errno::EPERM);
    }
    let chan = st.ports.get(x.port as usize).copied().unwrap_or(Chan::Free);
    x.vcpu = 0;
    x.u = [0, 0];
    x.status = match chan {
        Chan::Free | Chan::Reserved => evtchnstat::CLOSED,
        Chan::Unbound { remote } => {
            x.u[0] = u32::from(remote.0);
            evtchnstat::UNBOUND
        }
        Chan::Interdomain { remote, port } => {
            x.u = [u32::from(remote.0), port];
            evtchnstat::INTERDOMAIN
        }
        Chan::Service(_) => {
            x.u = [0, 0];
            evtchnstat::INTERDOMAIN
        }
        Chan::Virq(v) => {
            x.u[0] = v;
            evtchnstat::VIRQ
        }
        Chan::Ipi => evtchnstat::IPI,
    };
    drop(st);
    a.write(1, &x)?;
    Ok(0)
}

/// `EVTCHNOP_bind_ipi`: a port a vCPU notifies itself through.
fn evtchn_bind_ipi(dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    // struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; }
    let mut x: [u32; 2] = a.read(1)?;
    if x[0] != 0 {
        return Err(Errno::ENOENT);
    }
    let mut st = dom.st.lock().unwrap();
    let port = get_free_port(&mut st.ports)?;
    st.ports[port as usize] = Chan::Ipi;
    drop(st);
    x[1] = port;
    a.write(1, &x)?;
    Ok(0)
}

/// `EVTCHNOP_bind_vcpu`: which vCPU a port notifies (the simulator has one: only the checks remain).
fn evtchn_bind_vcpu(dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    // struct evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; }
    // One vCPU: only the checks remain.
    let [port, vcpu]: [u32; 2] = a.read(1)?;
    if vcpu != 0 {
        return Err(Errno::ENOENT);
    }
    let st = dom.st.lock().unwrap();
    if !in_bucket(&st.ports, port) {
        return Err(Errno::EINVAL);
    }
    match st.ports.get(port as usize) {
        Some(Chan::Unbound { .. } | Chan::Interdomain { .. }) => Ok(0),
        Some(Chan::Virq(v)) if virq_is_global(*v) => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

/// `EVTCHNOP_set_priority`: the 2-level ABI has no priorities, once the port is valid.
fn evtchn_set_priority(dom: &Arc<Domain>, a: &mut Args<'_>) -> HResult {
    // The 2-level ABI has no priorities, once the port is valid.
    let [port, _priority]: [u32; 2] = a.read(1)?;
    if !in_bucket(&dom.st.lock().unwrap().ports, port) {
        return Err(Errno::EINVAL);
    }
    Err(Errno::ENOSYS)
}
