//! The hypercall table: each operation to the module Xen keeps it in
//! (`event_channel`, `gnttab`, `memory`, `sched`, `console`, `hvm`,
//! `kernel`, `domain`), with its argument bytes read as Xen reads guest
//! memory (`guest_access`), and every call traced. Unknown operations are
//! `ENOSYS`.

use crate::domain::Domain;
use crate::guest_access::Args;
use crate::hypervisor::Core;
use std::sync::Arc;
use xen_pv::abi::{Errno, op};
use xen_pv::hypercall::ArgBuf;

fn opname(op: u32) -> &'static str {
    match op {
        op::MEMORY_OP => "memory_op",
        op::SET_TIMER_OP => "set_timer_op",
        op::XEN_VERSION => "xen_version",
        op::CONSOLE_IO => "console_io",
        op::GRANT_TABLE_OP => "grant_table_op",
        op::SCHED_OP => "sched_op",
        op::EVENT_CHANNEL_OP => "event_channel_op",
        op::HVM_OP => "hvm_op",
        op::VCPU_OP => "vcpu_op",
        _ => "unknown",
    }
}

/// Execute hypercall `op` for `dom`.
pub(crate) fn dispatch(
    core: &Arc<Core>,
    dom: &Arc<Domain>,
    op: u32,
    raw: [u64; 5],
    buf: Option<ArgBuf<'_>>,
) -> isize {
    let mut a = Args::new(raw, buf);
    let r = match op {
        op::EVENT_CHANNEL_OP => crate::event_channel::op(core, dom, raw[0] as u32, &mut a),
        op::GRANT_TABLE_OP => crate::gnttab::op(core, dom, raw[0] as u32, &mut a),
        op::MEMORY_OP => crate::memory::memory_op(core, dom, raw[0] as u32, &mut a),
        op::SCHED_OP => crate::sched::sched_op(core, dom, raw[0] as u32, &mut a),
        op::SET_TIMER_OP => crate::sched::set_timer_op(core, dom, raw[0]),
        op::CONSOLE_IO => crate::console::console_io(core, dom, raw[0] as u32, &a),
        op::HVM_OP => crate::hvm::hvm_op(core, dom, raw[0] as u32, &mut a),
        op::XEN_VERSION => crate::kernel::xen_version(raw[0] as u32, &mut a),
        op::VCPU_OP => crate::domain::vcpu_op(dom, raw[0] as u32, raw[1], &mut a),
        _ => Err(Errno::ENOSYS),
    };
    let ret = match r {
        Ok(v) => v,
        Err(e) => e.ret(),
    };
    let now = core.time.peek();
    core.trace(
        &[1, u64::from(dom.id.0), u64::from(op), raw[0], ret as u64],
        || format!("{now} d{} {}({}) = {ret}", dom.id.0, opname(op), raw[0]),
    );
    ret
}
