//! Scheduler ops, timers, `xen_version`, `vcpu_op`, `memory_op` and the
//! hypercall table itself. Expected outcomes from Xen's
//! `xen/common/sched/core.c`, `kernel.c`, `domain.c`, `memory.c` and
//! `xen/arch/arm/domain.c`.

use super::evtchn::{NO_SUCH_DOMAIN, alloc_unbound, clear_pending, close, port_op};
use super::{Ctx, errno};
use alloc::format;
use core::time::Duration;
use hal::DomId;
use hal::EventPort;
use hal::time::{Clock, Instant, sleep_until};
use xen_pv::abi::{self, Errno, evtchnop, op, schedop};
use xen_pv::hypercall::{self, Hypervisor};

/// A hypercall number no Xen has.
const NO_SUCH_HYPERCALL: u32 = 60;

fn raw<H: Hypervisor>(h: &H, nr: u32, args: [u64; 5]) -> Result<usize, Errno> {
    let r = h.hypercall(nr, args, None);
    if r < 0 {
        Err(Errno(i32::try_from(-r).unwrap_or(i32::MAX)))
    } else {
        Ok(r as usize)
    }
}

fn poll_raw<H: Hypervisor>(h: &H, nr_ports: u32) -> Result<usize, Errno> {
    let mut p = abi::SchedPoll {
        ports: 0,
        nr_ports,
        _pad0: 0,
        timeout: 0,
    };
    hypercall::call_with(
        h,
        op::SCHED_OP,
        [u64::from(schedop::POLL), 0, 0, 0, 0],
        1,
        &mut p,
    )
}

/// Whether we run on Arm, where Xen limits `vcpu_op` to two operations.
const ARM: bool = cfg!(any(target_arch = "aarch64", target_arch = "arm"));

pub(crate) async fn run(cx: &mut Ctx<'_>) {
    let p = cx.p;
    let h = p.hypervisor();
    let t = cx.p.timer();

    // --- sched_op -----------------------------------------------------------
    cx.check("sched.yield", "ok", errno(hypercall::sched_yield(h)));
    cx.check(
        "sched.poll.too-many-ports",
        "-EINVAL",
        errno(poll_raw(h, 129)),
    );
    cx.check(
        "sched.unknown-op",
        "-ENOSYS",
        errno(raw(h, op::SCHED_OP, [99, 0, 0, 0, 0])),
    );
    // struct sched_remote_shutdown { domid_t domain_id; unsigned int reason; }
    let mut rs = [u32::from(NO_SUCH_DOMAIN.0), abi::shutdown::POWEROFF];
    let r = hypercall::call_with(
        h,
        op::SCHED_OP,
        [u64::from(schedop::REMOTE_SHUTDOWN), 0, 0, 0, 0],
        1,
        &mut rs,
    );
    cx.check("sched.remote-shutdown.dom-missing", "-ESRCH", errno(r));

    // Poll on a port of our own: an interdomain pair bound to ourselves,
    // masked (the dispatcher never sees it).
    if let Ok(a) = alloc_unbound(h, DomId::SELF, DomId::SELF)
        && let Ok(b) = super::evtchn::bind_interdomain(h, DomId::SELF, a)
    {
        // The bind left `b` pending: polling it returns at once.
        let start = t.now();
        let far = (start + Duration::from_secs(5)).as_nanos();
        let r = hypercall::sched_poll(h, &[EventPort(b)], far);
        let quick = t.now() - start < Duration::from_secs(2);
        cx.check(
            "sched.poll.pending-port",
            "ok, at once",
            format!(
                "{}, {}",
                errno(r),
                if quick {
                    "at once"
                } else {
                    "after the timeout"
                }
            ),
        );
        clear_pending(cx, b);
        let soon = (t.now() + Duration::from_millis(2)).as_nanos();
        let r = hypercall::sched_poll(h, &[EventPort(b)], soon);
        cx.check("sched.poll.timeout", "ok", errno(r));
        let soon = (t.now() + Duration::from_millis(2)).as_nanos();
        let r = hypercall::sched_poll(h, &[], soon);
        cx.check("sched.poll.no-ports-timeout", "ok", errno(r));
        let _ = port_op(h, evtchnop::SEND, a);
        let r = hypercall::sched_poll(h, &[EventPort(a), EventPort(b)], far);
        cx.check("sched.poll.second-port-pending", "ok", errno(r));
        clear_pending(cx, b);
        let _ = close(h, b);
        let _ = close(h, a);
    }

    // --- timers -----------------------------------------------------------------
    let start = t.now();
    sleep_until(
        t,
        Instant::from_nanos(start.as_nanos().saturating_sub(1_000_000)),
    )
    .await;
    let late = t.now() - start;
    cx.check(
        "timer.deadline-in-the-past",
        "fires at once",
        if late < Duration::from_secs(1) {
            "fires at once"
        } else {
            "fires late"
        },
    );

    // --- xen_version ------------------------------------------------------------
    cx.check(
        "xen-version.version",
        "ok",
        errno(hypercall::xen_version(h)),
    );
    let mut extra = [0u8; 16];
    let r = hypercall::call_with(
        h,
        op::XEN_VERSION,
        [u64::from(abi::XENVER_EXTRAVERSION), 0, 0, 0, 0],
        1,
        &mut extra,
    );
    cx.check("xen-version.extraversion", "ok", errno(r));
    let r = raw(
        h,
        op::XEN_VERSION,
        [u64::from(abi::XENVER_PAGESIZE), 0, 0, 0, 0],
    );
    cx.check(
        "xen-version.pagesize",
        "4096",
        match r {
            Ok(n) => format!("{n}"),
            Err(e) => format!("-{}", e.name()),
        },
    );
    // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
    let mut fi = [0u32, 0];
    let r = hypercall::call_with(
        h,
        op::XEN_VERSION,
        [u64::from(abi::XENVER_GET_FEATURES), 0, 0, 0, 0],
        1,
        &mut fi,
    );
    cx.check("xen-version.get-features", "ok", errno(r));
    let mut fi = [99u32, 0];
    let r = hypercall::call_with(
        h,
        op::XEN_VERSION,
        [u64::from(abi::XENVER_GET_FEATURES), 0, 0, 0, 0],
        1,
        &mut fi,
    );
    cx.check("xen-version.get-features-bad-submap", "-EINVAL", errno(r));
    cx.check(
        "xen-version.unknown",
        "-ENOSYS",
        errno(raw(h, op::XEN_VERSION, [99, 0, 0, 0, 0])),
    );

    // --- vcpu_op ----------------------------------------------------------------
    let mut area = [0u64];
    let r = hypercall::call_with(
        h,
        op::VCPU_OP,
        [
            u64::from(abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA),
            1,
            0,
            0,
            0,
        ],
        2,
        &mut area,
    );
    cx.check("vcpu-op.missing-vcpu", "-ENOENT", errno(r));
    let r = raw(
        h,
        op::VCPU_OP,
        [
            abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA as u64,
            4096,
            0,
            0,
            0,
        ],
    );
    cx.check("vcpu-op.huge-vcpu", "-ENOENT", errno(r));
    let want = if ARM { "-EINVAL" } else { "-ENOSYS" };
    cx.check(
        "vcpu-op.unknown",
        want,
        errno(raw(h, op::VCPU_OP, [99, 0, 0, 0, 0])),
    );

    // --- memory_op and the hypercall table ----------------------------------------
    cx.check(
        "memory-op.unknown",
        "-ENOSYS",
        errno(raw(h, op::MEMORY_OP, [99, 0, 0, 0, 0])),
    );
    cx.check(
        "hypercall.unknown",
        "-ENOSYS",
        errno(raw(h, NO_SUCH_HYPERCALL, [0; 5])),
    );
}
