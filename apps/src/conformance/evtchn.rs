//! Event channels (`event_channel_op`, 2-level ABI): every `EVTCHNOP_*` a
//! guest uses, valid and invalid, and the pending/mask semantics of the
//! bitmaps in `shared_info`. Expected outcomes from Xen's
//! `xen/common/event_channel.c` and `event_2l.c`.

use super::{Ctx, errno};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use hal::DomId;
use hal::mem::SharedMemory;
use xen_pv::abi::{self, Errno, evtchnop, evtchnstat, op};
use xen_pv::event::layout;
use xen_pv::hypercall;

/// A port no domain has: beyond the 2-level ABI's 4096.
const BEYOND_ABI: u32 = 5000;
/// A port inside the 2-level ABI, beyond the buckets Xen has allocated for
/// a domain with a handful of ports (Xen validates ports by bucket).
const UNALLOCATED: u32 = 4095;
/// A domain id nobody has (below `DOMID_FIRST_RESERVED`).
pub(crate) const NO_SUCH_DOMAIN: DomId = DomId(0x7fe0);
/// `VIRQ_DEBUG`: a per-vCPU VIRQ nothing else binds.
const VIRQ_DEBUG: u32 = 1;
/// `VIRQ_DOM_EXC`: a global VIRQ.
const VIRQ_DOM_EXC: u32 = 3;
/// `NR_VIRQS`.
const NR_VIRQS: u32 = 24;
use evtchnop::{BIND_IPI, BIND_VCPU, EXPAND_ARRAY, SET_PRIORITY};

pub(crate) fn call<H: hypercall::Hypervisor, T>(
    h: &H,
    cmd: u32,
    arg: &mut T,
) -> Result<usize, Errno>
where
    T: zerocopy::IntoBytes + zerocopy::FromBytes,
{
    hypercall::call_with(
        h,
        op::EVENT_CHANNEL_OP,
        [u64::from(cmd), 0, 0, 0, 0],
        1,
        arg,
    )
}

pub(crate) fn alloc_unbound<H: hypercall::Hypervisor>(
    h: &H,
    dom: DomId,
    remote: DomId,
) -> Result<u32, Errno> {
    let mut a = abi::EvtchnAllocUnbound {
        dom: dom.0,
        remote_dom: remote.0,
        port: 0,
    };
    call(h, evtchnop::ALLOC_UNBOUND, &mut a).map(|_| a.port)
}

pub(crate) fn bind_interdomain<H: hypercall::Hypervisor>(
    h: &H,
    remote: DomId,
    port: u32,
) -> Result<u32, Errno> {
    let mut a = abi::EvtchnBindInterdomain {
        remote_dom: remote.0,
        remote_port: port,
        ..Default::default()
    };
    call(h, evtchnop::BIND_INTERDOMAIN, &mut a).map(|_| a.local_port)
}

fn bind_virq<H: hypercall::Hypervisor>(h: &H, virq: u32, vcpu: u32) -> Result<u32, Errno> {
    let mut a = abi::EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    call(h, evtchnop::BIND_VIRQ, &mut a).map(|_| a.port)
}

fn bind_ipi<H: hypercall::Hypervisor>(h: &H, vcpu: u32) -> Result<u32, Errno> {
    // struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; }
    let mut a = [vcpu, 0u32];
    call(h, BIND_IPI, &mut a).map(|_| a[1])
}

fn bind_vcpu<H: hypercall::Hypervisor>(h: &H, port: u32, vcpu: u32) -> Result<usize, Errno> {
    // struct evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; }
    let mut a = [port, vcpu];
    call(h, BIND_VCPU, &mut a)
}

pub(crate) fn port_op<H: hypercall::Hypervisor>(
    h: &H,
    cmd: u32,
    port: u32,
) -> Result<usize, Errno> {
    let mut a = abi::EvtchnPort { port };
    call(h, cmd, &mut a)
}

pub(crate) fn close<H: hypercall::Hypervisor>(h: &H, port: u32) -> Result<usize, Errno> {
    port_op(h, evtchnop::CLOSE, port)
}

fn status<H: hypercall::Hypervisor>(
    h: &H,
    dom: DomId,
    port: u32,
) -> Result<abi::EvtchnStatus, Errno> {
    let mut a = abi::EvtchnStatus {
        dom: dom.0,
        port,
        ..Default::default()
    };
    call(h, evtchnop::STATUS, &mut a).map(|_| a)
}

/// `EVTCHNOP_status` of `port` of `dom`, as [`describe`] writes it.
pub(crate) fn describe_status(cx: &Ctx<'_>, dom: DomId, port: u32) -> String {
    describe(cx, status(cx.p.hypervisor(), dom, port), None)
}

/// A port's status as the suite writes it: no port numbers or domain ids.
fn describe(cx: &Ctx<'_>, r: Result<abi::EvtchnStatus, Errno>, peer: Option<u32>) -> String {
    let st = match r {
        Ok(st) => st,
        Err(e) => return format!("-{}", e.name()),
    };
    let who = |d: u32| {
        if d == u32::from(cx.me.0) {
            "self"
        } else {
            "another domain"
        }
    };
    let what = match st.status {
        evtchnstat::CLOSED => "closed".into(),
        evtchnstat::UNBOUND => format!("unbound to {}", who(st.u[0] & 0xffff)),
        evtchnstat::INTERDOMAIN => {
            let port = if Some(st.u[1]) == peer {
                "the peer port"
            } else {
                "another port"
            };
            format!("interdomain to {}, {port}", who(st.u[0] & 0xffff))
        }
        evtchnstat::VIRQ => format!("virq {}", st.u[0]),
        evtchnstat::IPI => "ipi".into(),
        evtchnstat::PIRQ => "pirq".into(),
        n => format!("status {n}"),
    };
    format!("{what}, vcpu {}", st.vcpu)
}

/// Whether `port`'s bit is set in the bitmap at `base` of `shared_info`.
fn bit(cx: &Ctx<'_>, base: usize, port: u32) -> bool {
    let w =
        cx.p.events()
            .shared_info()
            .load_u64(base + 8 * (port as usize / 64), Ordering::Acquire);
    w & (1 << (port % 64)) != 0
}

/// Clear `port`'s pending bit (as a guest's dispatcher does).
pub(crate) fn clear_pending(cx: &Ctx<'_>, port: u32) {
    let off = layout::PENDING + 8 * (port as usize / 64);
    cx.p.events()
        .shared_info()
        .fetch_and_u64(off, !(1 << (port % 64)), Ordering::AcqRel);
}

/// Set `port`'s mask bit (masking is the guest's own business in 2-level).
fn mask(cx: &Ctx<'_>, port: u32) {
    let off = layout::MASK + 8 * (port as usize / 64);
    cx.p.events()
        .shared_info()
        .fetch_or_u64(off, 1 << (port % 64), Ordering::AcqRel);
}

fn pending(cx: &Ctx<'_>, port: u32) -> &'static str {
    if bit(cx, layout::PENDING, port) {
        "pending"
    } else {
        "not pending"
    }
}

pub(crate) fn run(cx: &mut Ctx<'_>) {
    let p = cx.p;
    let h = p.hypervisor();
    let me = cx.me;

    // --- alloc_unbound ---------------------------------------------------
    let a = alloc_unbound(h, DomId::SELF, DomId::SELF);
    cx.check("evtchn.alloc-unbound.self", "ok", errno(a));
    let a = a.unwrap_or(0);
    let d = describe(cx, status(h, DomId::SELF, a), None);
    cx.check(
        "evtchn.status.unbound-to-self",
        "unbound to self, vcpu 0",
        d,
    );
    let r = alloc_unbound(h, me, DomId::SELF);
    cx.check("evtchn.alloc-unbound.own-id-as-dom", "ok", errno(r));
    if let Ok(p) = r {
        let _ = close(h, p);
    }
    // Xen's dummy XSM policy does not look at the remote domain; SILO (the
    // default of Arm builds) does.
    let r = alloc_unbound(h, DomId::SELF, NO_SUCH_DOMAIN);
    let want = if cx.setup.xsm_silo { "-ESRCH" } else { "ok" };
    cx.check("evtchn.alloc-unbound.remote-missing", want, errno(r));
    match r {
        Ok(p) => {
            let d = describe(cx, status(h, DomId::SELF, p), None);
            cx.check(
                "evtchn.status.unbound-to-missing",
                "unbound to another domain, vcpu 0",
                d,
            );
            let _ = close(h, p);
        }
        Err(_) => cx.not_applicable(
            "evtchn.status.unbound-to-missing",
            "unbound to another domain, vcpu 0",
            "no such port: XSM SILO refused it",
        ),
    }
    let r = alloc_unbound(h, NO_SUCH_DOMAIN, DomId::SELF);
    cx.check("evtchn.alloc-unbound.dom-missing", "-ESRCH", errno(r));
    match cx.setup.other {
        Some(other) if !cx.privileged => {
            let r = alloc_unbound(h, other, DomId::SELF);
            cx.check("evtchn.alloc-unbound.other-dom", "-EPERM", errno(r));
        }
        _ => cx.not_applicable(
            "evtchn.alloc-unbound.other-dom",
            "-EPERM",
            "needs another domain and an unprivileged guest",
        ),
    }

    // --- bind_interdomain, to ourselves ----------------------------------
    let b = bind_interdomain(h, DomId::SELF, a);
    cx.check("evtchn.bind-interdomain.self", "ok", errno(b));
    let b = b.unwrap_or(0);
    cx.check(
        "evtchn.bind-interdomain.new-port-pending",
        "pending",
        pending(cx, b),
    );
    let d = describe(cx, status(h, DomId::SELF, a), Some(b));
    cx.check(
        "evtchn.status.interdomain",
        "interdomain to self, the peer port, vcpu 0",
        d,
    );
    let d = describe(cx, status(h, me, b), Some(a));
    cx.check(
        "evtchn.status.own-id-as-dom",
        "interdomain to self, the peer port, vcpu 0",
        d,
    );
    let r = bind_interdomain(h, DomId::SELF, a);
    cx.check("evtchn.bind-interdomain.already-bound", "-EINVAL", errno(r));
    let r = bind_interdomain(h, DomId::SELF, 0);
    cx.check("evtchn.bind-interdomain.port-0", "-EINVAL", errno(r));
    let r = bind_interdomain(h, DomId::SELF, UNALLOCATED);
    cx.check(
        "evtchn.bind-interdomain.unallocated-port",
        "-EINVAL",
        errno(r),
    );
    let r = bind_interdomain(h, DomId::SELF, BEYOND_ABI);
    cx.check("evtchn.bind-interdomain.beyond-abi", "-EINVAL", errno(r));
    let r = bind_interdomain(h, NO_SUCH_DOMAIN, 1);
    cx.check("evtchn.bind-interdomain.dom-missing", "-ESRCH", errno(r));
    // A port unbound for a domain other than us: under SILO only one that
    // exists (dom0, which SILO lets every guest talk to), which a guest
    // alone does not have.
    let remote = if cx.setup.xsm_silo {
        cx.setup.other
    } else {
        Some(NO_SUCH_DOMAIN)
    };
    match remote.map(|r| alloc_unbound(h, DomId::SELF, r)) {
        Some(Ok(f)) => {
            let r = bind_interdomain(h, DomId::SELF, f);
            cx.check(
                "evtchn.bind-interdomain.unbound-for-another",
                "-EINVAL",
                errno(r),
            );
            let _ = close(h, f);
        }
        _ => cx.not_applicable(
            "evtchn.bind-interdomain.unbound-for-another",
            "-EINVAL",
            "XSM SILO allows an unbound port only for an existing domain, and there is none to use",
        ),
    }
    if let Ok(f) = alloc_unbound(h, DomId::SELF, DomId::SELF) {
        let _ = close(h, f);
        let r = bind_interdomain(h, DomId::SELF, f);
        cx.check("evtchn.bind-interdomain.free-port", "-EINVAL", errno(r));
    }
    match cx.setup.other {
        Some(other) => {
            // Port 1 of another domain is not unbound for us.
            let r = bind_interdomain(h, other, UNALLOCATED);
            cx.check(
                "evtchn.bind-interdomain.other-unallocated",
                "-EINVAL",
                errno(r),
            );
        }
        None => cx.not_applicable(
            "evtchn.bind-interdomain.other-unallocated",
            "-EINVAL",
            "needs another domain",
        ),
    }

    // --- send, pending and mask ------------------------------------------
    clear_pending(cx, a);
    clear_pending(cx, b);
    let r = port_op(h, evtchnop::SEND, a);
    cx.check("evtchn.send.interdomain", "ok", errno(r));
    let masked = bit(cx, layout::MASK, b);
    cx.check(
        "evtchn.send.masked-peer",
        "pending, masked",
        format!(
            "{}, {}",
            pending(cx, b),
            if masked { "masked" } else { "unmasked" }
        ),
    );
    cx.check(
        "evtchn.send.sender-untouched",
        "not pending",
        pending(cx, a),
    );
    let r = port_op(h, evtchnop::UNMASK, b);
    cx.check("evtchn.unmask.pending-port", "ok", errno(r));
    let unmasked = !bit(cx, layout::MASK, b);
    let sel =
        cx.p.events()
            .shared_info()
            .load_u64(layout::PENDING_SEL, Ordering::Acquire);
    let sel_bit = sel & (1 << (b / 64)) != 0;
    cx.check(
        "evtchn.unmask.sets-selector",
        "unmasked, pending, selector set",
        format!(
            "{}, {}, selector {}",
            if unmasked { "unmasked" } else { "masked" },
            pending(cx, b),
            if sel_bit { "set" } else { "clear" }
        ),
    );
    // Back as the dispatcher expects an untracked port: masked, idle.
    mask(cx, b);
    clear_pending(cx, b);
    let r = port_op(h, evtchnop::UNMASK, a);
    cx.check("evtchn.unmask.idle-port", "ok", errno(r));
    mask(cx, a);
    cx.check(
        "evtchn.unmask.idle-stays-idle",
        "not pending",
        pending(cx, a),
    );
    let r = port_op(h, evtchnop::UNMASK, UNALLOCATED);
    cx.check("evtchn.unmask.unallocated-port", "-EINVAL", errno(r));
    let r = port_op(h, evtchnop::UNMASK, BEYOND_ABI);
    cx.check("evtchn.unmask.beyond-abi", "-EINVAL", errno(r));

    // --- close: the peer becomes unbound; notifications to it are dropped
    let r = close(h, b);
    cx.check("evtchn.close.interdomain", "ok", errno(r));
    let d = describe(cx, status(h, DomId::SELF, a), None);
    cx.check(
        "evtchn.close.peer-becomes-unbound",
        "unbound to self, vcpu 0",
        d,
    );
    let d = describe(cx, status(h, DomId::SELF, b), None);
    cx.check("evtchn.status.closed-port", "closed, vcpu 0", d);
    let r = port_op(h, evtchnop::SEND, a);
    cx.check("evtchn.send.peer-closed", "ok", errno(r));
    cx.check(
        "evtchn.send.peer-closed-nothing-pending",
        "not pending",
        pending(cx, b),
    );
    let r = port_op(h, evtchnop::SEND, b);
    cx.check("evtchn.send.free-port", "-EINVAL", errno(r));
    let r = close(h, b);
    cx.check("evtchn.close.twice", "-EINVAL", errno(r));
    let r = close(h, a);
    cx.check("evtchn.close.unbound", "ok", errno(r));
    let r = close(h, 0);
    cx.check("evtchn.close.port-0", "-EINVAL", errno(r));
    let r = close(h, UNALLOCATED);
    cx.check("evtchn.close.unallocated-port", "-EINVAL", errno(r));
    let r = close(h, BEYOND_ABI);
    cx.check("evtchn.close.beyond-abi", "-EINVAL", errno(r));
    let r = port_op(h, evtchnop::SEND, 0);
    cx.check("evtchn.send.port-0", "-EINVAL", errno(r));
    let r = port_op(h, evtchnop::SEND, BEYOND_ABI);
    cx.check("evtchn.send.beyond-abi", "-EINVAL", errno(r));
    let r = port_op(h, evtchnop::SEND, UNALLOCATED);
    cx.check("evtchn.send.unallocated-port", "-EINVAL", errno(r));

    // --- status --------------------------------------------------------------
    let d = describe(cx, status(h, DomId::SELF, 0), None);
    cx.check("evtchn.status.port-0", "closed, vcpu 0", d);
    let d = describe(cx, status(h, DomId::SELF, UNALLOCATED), None);
    cx.check("evtchn.status.unallocated-port", "-EINVAL", d);
    let d = describe(cx, status(h, DomId::SELF, BEYOND_ABI), None);
    cx.check("evtchn.status.beyond-abi", "-EINVAL", d);
    let d = describe(cx, status(h, NO_SUCH_DOMAIN, 1), None);
    cx.check("evtchn.status.dom-missing", "-ESRCH", d);
    match cx.setup.other {
        Some(other) if !cx.privileged => {
            let r = status(h, other, 1).map(|_| ());
            cx.check("evtchn.status.other-dom", "-EPERM", errno(r));
            // The port is checked before the permission.
            let r = status(h, other, UNALLOCATED).map(|_| ());
            cx.check("evtchn.status.other-dom-bad-port", "-EINVAL", errno(r));
        }
        _ => {
            for n in [
                "evtchn.status.other-dom",
                "evtchn.status.other-dom-bad-port",
            ] {
                cx.not_applicable(
                    n,
                    "-EPERM",
                    "needs another domain and an unprivileged guest",
                );
            }
        }
    }

    // --- bind_virq -------------------------------------------------------
    let v = bind_virq(h, VIRQ_DEBUG, 0);
    cx.check("evtchn.bind-virq.per-vcpu", "ok", errno(v));
    if let Ok(v) = v {
        let d = describe(cx, status(h, DomId::SELF, v), None);
        cx.check("evtchn.status.virq", "virq 1, vcpu 0", d);
        let r = bind_virq(h, VIRQ_DEBUG, 0);
        cx.check("evtchn.bind-virq.twice", "-EEXIST", errno(r));
        let r = port_op(h, evtchnop::SEND, v);
        cx.check("evtchn.send.virq-port", "-EINVAL", errno(r));
        let r = bind_vcpu(h, v, 0);
        cx.check("evtchn.bind-vcpu.per-vcpu-virq", "-EINVAL", errno(r));
        let r = close(h, v);
        cx.check("evtchn.close.virq", "ok", errno(r));
        let r = bind_virq(h, VIRQ_DEBUG, 0);
        cx.check("evtchn.bind-virq.after-close", "ok", errno(r));
        if let Ok(v) = r {
            let _ = close(h, v);
        }
    }
    let r = bind_virq(h, VIRQ_DEBUG, 1);
    cx.check(
        "evtchn.bind-virq.per-vcpu-missing-vcpu",
        "-ENOENT",
        errno(r),
    );
    let r = bind_virq(h, VIRQ_DEBUG, 0xffff);
    cx.check("evtchn.bind-virq.huge-vcpu", "-ENOENT", errno(r));
    let r = bind_virq(h, VIRQ_DOM_EXC, 1);
    cx.check("evtchn.bind-virq.global-vcpu-1", "-EINVAL", errno(r));
    let r = bind_virq(h, NR_VIRQS, 0);
    cx.check("evtchn.bind-virq.nr-virqs", "-EINVAL", errno(r));
    let r = bind_virq(h, u32::MAX, 0);
    cx.check("evtchn.bind-virq.negative", "-EINVAL", errno(r));
    let g = bind_virq(h, VIRQ_DOM_EXC, 0);
    cx.check("evtchn.bind-virq.global", "ok", errno(g));
    if let Ok(g) = g {
        let r = bind_vcpu(h, g, 0);
        cx.check("evtchn.bind-vcpu.global-virq", "ok", errno(r));
        let _ = close(h, g);
    }

    // --- bind_ipi ----------------------------------------------------------
    let i = bind_ipi(h, 0);
    cx.check("evtchn.bind-ipi.vcpu-0", "ok", errno(i));
    if let Ok(i) = i {
        let d = describe(cx, status(h, DomId::SELF, i), None);
        cx.check("evtchn.status.ipi", "ipi, vcpu 0", d);
        clear_pending(cx, i);
        let r = port_op(h, evtchnop::SEND, i);
        cx.check("evtchn.send.ipi", "ok", errno(r));
        cx.check("evtchn.send.ipi-pending", "pending", pending(cx, i));
        clear_pending(cx, i);
        let r = bind_vcpu(h, i, 0);
        cx.check("evtchn.bind-vcpu.ipi", "-EINVAL", errno(r));
        let r = close(h, i);
        cx.check("evtchn.close.ipi", "ok", errno(r));
    }
    let r = bind_ipi(h, 1);
    cx.check("evtchn.bind-ipi.missing-vcpu", "-ENOENT", errno(r));

    // --- bind_vcpu, set_priority, expand_array ------------------------------
    if let Ok(u) = alloc_unbound(h, DomId::SELF, DomId::SELF) {
        let r = bind_vcpu(h, u, 0);
        cx.check("evtchn.bind-vcpu.unbound", "ok", errno(r));
        let r = bind_vcpu(h, u, 1);
        cx.check("evtchn.bind-vcpu.missing-vcpu", "-ENOENT", errno(r));
        // struct evtchn_set_priority { evtchn_port_t port; uint32_t priority; }
        let r = call(h, SET_PRIORITY, &mut [u, 7u32]);
        cx.check("evtchn.set-priority.2-level", "-ENOSYS", errno(r));
        let _ = close(h, u);
        let r = bind_vcpu(h, u, 0);
        cx.check("evtchn.bind-vcpu.free-port", "-EINVAL", errno(r));
    }
    let r = bind_vcpu(h, UNALLOCATED, 0);
    cx.check("evtchn.bind-vcpu.unallocated-port", "-EINVAL", errno(r));
    let r = call(h, SET_PRIORITY, &mut [UNALLOCATED, 7u32]);
    cx.check("evtchn.set-priority.unallocated-port", "-EINVAL", errno(r));
    // struct evtchn_expand_array { uint64_t array_gfn; }
    let r = call(h, EXPAND_ARRAY, &mut [0u64]);
    cx.check("evtchn.expand-array.without-fifo", "-EOPNOTSUPP", errno(r));
    let r = call(h, 99, &mut [0u64; 2]);
    cx.check("evtchn.unknown-op", "-ENOSYS", errno(r));

    // --- exhausting the ports ----------------------------------------------
    let mut taken = Vec::new();
    let mut end = Ok(0);
    for _ in 0..abi::EVTCHN_2L_NR_CHANNELS + 8 {
        match alloc_unbound(h, DomId::SELF, DomId::SELF) {
            Ok(p) => taken.push(p),
            Err(e) => {
                end = Err(e);
                break;
            }
        }
    }
    let highest = taken.iter().copied().max().unwrap_or(0);
    let mut closed_all = true;
    for p in taken {
        closed_all &= close(h, p).is_ok();
    }
    cx.check("evtchn.alloc-unbound.exhausted", "-ENOSPC", errno(end));
    cx.check(
        "evtchn.alloc-unbound.exhausted-below-abi-limit",
        "yes",
        if highest < abi::EVTCHN_2L_NR_CHANNELS {
            "yes"
        } else {
            "no"
        },
    );
    cx.check(
        "evtchn.close.all-after-exhaustion",
        "ok",
        if closed_all { "ok" } else { "failed" },
    );
    let r = alloc_unbound(h, DomId::SELF, DomId::SELF);
    cx.check("evtchn.alloc-unbound.after-exhaustion", "ok", errno(r));
    if let Ok(p) = r {
        let _ = close(h, p);
    }
}
