//! The hypercall entry point: decode the operation and its argument bytes,
//! exactly as Xen would read them from guest memory, and dispatch.
//!
//! Nothing here trusts the guest: every structure is read with a length
//! check (`EFAULT` if the buffer is missing, at the wrong argument or too
//! short), every value is validated, and unknown operations are `ENOSYS`.

use crate::hypervisor::{Core, Domain, HVM_NR_PARAMS, TimerKind};
use hal::DomId;
use hal::mem::Gfn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use xen_pv::abi::{self, Errno, op, schedop};
use xen_pv::hypercall::{ArgBuf, ArgData};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A hypercall's outcome before encoding: a value or a Xen errno.
pub(crate) type HResult = Result<isize, Errno>;

/// A hypercall's arguments.
pub(crate) struct Args<'a> {
    pub raw: [u64; 5],
    buf: Option<ArgBuf<'a>>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(raw: [u64; 5], buf: Option<ArgBuf<'a>>) -> Self {
        Args { raw, buf }
    }

    fn buf(&self, slot: usize) -> Result<&ArgBuf<'a>, Errno> {
        match &self.buf {
            Some(b) if b.slot == slot => Ok(b),
            _ => Err(Errno::EFAULT),
        }
    }

    /// The bytes passed at argument `slot`.
    pub(crate) fn bytes(&self, slot: usize) -> Result<&[u8], Errno> {
        Ok(self.buf(slot)?.data.bytes())
    }

    /// Read a `T` at byte `offset` of the buffer at `slot`.
    pub(crate) fn read_at<T: FromBytes>(&self, slot: usize, offset: usize) -> Result<T, Errno> {
        let bytes = self.bytes(slot)?;
        let tail = bytes.get(offset..).ok_or(Errno::EFAULT)?;
        T::read_from_prefix(tail)
            .map(|(v, _)| v)
            .map_err(|_| Errno::EFAULT)
    }

    /// Read a `T` at the start of the buffer at `slot`.
    pub(crate) fn read<T: FromBytes>(&self, slot: usize) -> Result<T, Errno> {
        self.read_at(slot, 0)
    }

    /// Write `v` back at byte `offset` of the buffer at `slot`.
    pub(crate) fn write_at<T: IntoBytes + Immutable>(
        &mut self,
        slot: usize,
        offset: usize,
        v: &T,
    ) -> Result<(), Errno> {
        match &mut self.buf {
            Some(ArgBuf {
                slot: s,
                data: ArgData::InOut(bytes),
                ..
            }) if *s == slot => {
                let src = v.as_bytes();
                let dst = bytes
                    .get_mut(offset..offset.checked_add(src.len()).ok_or(Errno::EFAULT)?)
                    .ok_or(Errno::EFAULT)?;
                dst.copy_from_slice(src);
                Ok(())
            }
            _ => Err(Errno::EFAULT),
        }
    }

    /// Write `v` back at the start of the buffer at `slot`.
    pub(crate) fn write<T: IntoBytes + Immutable>(
        &mut self,
        slot: usize,
        v: &T,
    ) -> Result<(), Errno> {
        self.write_at(slot, 0, v)
    }

    /// Where the guest handle stored at byte `at` of the buffer at `slot`
    /// points, as an offset into the same buffer.
    pub(crate) fn handle(&self, slot: usize, at: usize) -> Result<usize, Errno> {
        let b = self.buf(slot)?;
        b.handles
            .iter()
            .find(|h| h.at == at)
            .map(|h| h.target)
            .ok_or(Errno::EFAULT)
    }
}

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
        op::MEMORY_OP => memory_op(core, dom, raw[0] as u32, &mut a),
        op::SCHED_OP => sched_op(core, dom, raw[0] as u32, &mut a),
        op::SET_TIMER_OP => set_timer_op(core, dom, raw[0]),
        op::CONSOLE_IO => console_io(core, dom, raw[0] as u32, &a),
        op::HVM_OP => hvm_op(core, dom, raw[0] as u32, &mut a),
        op::XEN_VERSION => xen_version(raw[0] as u32, &mut a),
        op::VCPU_OP => vcpu_op(dom, raw[0] as u32, raw[1], &mut a),
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

fn memory_op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    if cmd != abi::XENMEM_ADD_TO_PHYSMAP {
        return Err(Errno::ENOSYS);
    }
    let x: abi::XenAddToPhysmap = a.read(1)?;
    let target = core.resolve(dom, DomId(x.domid)).ok_or(Errno::ESRCH)?;
    if target.id != dom.id && !dom.privileged {
        return Err(Errno::EPERM);
    }
    let gpfn = Gfn(x.gpfn);
    match x.space {
        abi::mapspace::SHARED_INFO => {
            if x.idx != 0 {
                return Err(Errno::EINVAL);
            }
            target.mem.map_special(gpfn, &target.shared_info, 0);
            Ok(0)
        }
        abi::mapspace::GRANT_TABLE => {
            if x.idx & 0x8000_0000 != 0 {
                // Status frames exist only in grant table v2.
                return Err(Errno::EINVAL);
            }
            let idx = u32::try_from(x.idx).map_err(|_| Errno::EINVAL)?;
            if idx >= target.max_grant_frames {
                return Err(Errno::EINVAL);
            }
            {
                let mut st = target.st.lock().unwrap();
                st.nr_grant_frames = st.nr_grant_frames.max(idx + 1);
            }
            target
                .mem
                .map_special(gpfn, &target.grant_block, idx as usize);
            Ok(0)
        }
        _ => Err(Errno::EOPNOTSUPP),
    }
}

fn sched_op(core: &Arc<Core>, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        schedop::YIELD => {
            // Let one other domain run, as Xen would deschedule us.
            crate::sched::yield_once(core, dom);
            Ok(0)
        }
        schedop::BLOCK => {
            // Xen unmasks upcalls and blocks unless events are pending; the
            // order below (blocked flag, then the check) pairs with `kick`.
            dom.blocked.store(true, Ordering::SeqCst);
            if dom.upcall_pending() {
                dom.blocked.store(false, Ordering::SeqCst);
            }
            Ok(0)
        }
        schedop::SHUTDOWN => {
            let x: abi::SchedShutdown = a.read(1)?;
            if x.reason > abi::shutdown::SOFT_RESET {
                return Err(Errno::EINVAL);
            }
            dom.st.lock().unwrap().shutdown = Some(x.reason);
            dom.dead.store(true, Ordering::SeqCst);
            Ok(0)
        }
        schedop::POLL => {
            let x: abi::SchedPoll = a.read(1)?;
            if x.nr_ports > 128 {
                return Err(Errno::EINVAL);
            }
            let at = a.handle(1, core::mem::offset_of!(abi::SchedPoll, ports))?;
            let mut ports = Vec::with_capacity(x.nr_ports as usize);
            for i in 0..x.nr_ports as usize {
                let p: u32 = a.read_at(1, at + 4 * i)?;
                ports.push(p);
            }
            {
                let st = dom.st.lock().unwrap();
                if ports.iter().any(|&p| p as usize >= st.ports.len()) {
                    return Err(Errno::EINVAL);
                }
            }
            let pending = |ports: &[u32]| {
                ports.iter().any(|&p| {
                    let (w, b) = ((p / 64) as usize, 1u64 << (p % 64));
                    hal::SharedMemory::load_u64(
                        &dom.shared_info,
                        xen_pv::event::layout::PENDING + 8 * w,
                        Ordering::SeqCst,
                    ) & b
                        != 0
                })
            };
            if pending(&ports) {
                return Ok(0);
            }
            let generation = {
                let mut st = dom.st.lock().unwrap();
                st.poll = Some(ports.clone());
                st.poll_gen += 1;
                st.poll_gen
            };
            let timeout = if x.timeout != 0 {
                core.slack(x.timeout)
            } else {
                0
            };
            if timeout != 0 {
                core.add_timer(
                    timeout,
                    TimerKind::Poll {
                        dom: dom.id,
                        generation,
                    },
                );
            }
            // Xen blocks the vCPU until a polled port is pending (masked or
            // not) or the timeout. Run other domains meanwhile.
            let done = || pending(&ports) || (timeout != 0 && core.time.peek() >= timeout);
            if crate::sched::nested_wait(core, dom, u64::MAX, &done) {
                dom.st.lock().unwrap().poll = None;
            } else {
                // No scheduler on this thread: sleep after this step.
                dom.blocked.store(true, Ordering::SeqCst);
            }
            Ok(0)
        }
        schedop::REMOTE_SHUTDOWN => {
            let x: abi::SchedRemoteShutdown = a.read(1)?;
            // Xen looks the domain up before asking XSM.
            let target = core.domain(DomId(x.domain_id)).ok_or(Errno::ESRCH)?;
            if !dom.privileged {
                return Err(Errno::EPERM);
            }
            target.st.lock().unwrap().shutdown = Some(x.reason);
            target.dead.store(true, Ordering::SeqCst);
            core.make_runnable(&target);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn set_timer_op(core: &Core, dom: &Arc<Domain>, deadline: u64) -> HResult {
    let generation = {
        let mut st = dom.st.lock().unwrap();
        st.timer_gen += 1;
        st.timer = (deadline != 0).then_some(deadline);
        st.timer_gen
    };
    if deadline != 0 {
        if deadline <= core.time.peek() {
            // Already past: Xen raises the timer at once.
            dom.st.lock().unwrap().timer = None;
            core.send_virq(dom, hal::Virq::TIMER.0);
        } else {
            core.add_timer(
                core.slack(deadline),
                TimerKind::Virq {
                    dom: dom.id,
                    generation,
                },
            );
        }
    }
    Ok(0)
}

fn console_io(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &Args<'_>) -> HResult {
    match cmd {
        abi::CONSOLEIO_WRITE => {
            let bytes = a.bytes(2)?;
            let n = a.raw[1] as usize;
            let bytes = bytes.get(..n).ok_or(Errno::EFAULT)?;
            core.console_out(dom, bytes);
            Ok(0)
        }
        abi::CONSOLEIO_READ => {
            if !dom.privileged {
                return Err(Errno::EPERM);
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

fn hvm_op(core: &Core, dom: &Arc<Domain>, cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        abi::HVMOP_GET_PARAM | abi::HVMOP_SET_PARAM => {
            let mut x: abi::XenHvmParam = a.read(1)?;
            let target = core.resolve(dom, DomId(x.domid)).ok_or(Errno::ESRCH)?;
            if target.id != dom.id && !dom.privileged {
                return Err(Errno::EPERM);
            }
            if x.index as usize >= HVM_NR_PARAMS {
                return Err(Errno::EINVAL);
            }
            if cmd == abi::HVMOP_SET_PARAM {
                if !dom.privileged {
                    return Err(Errno::EPERM);
                }
                target.st.lock().unwrap().hvm_params[x.index as usize] = x.value;
                return Ok(0);
            }
            x.value = target.st.lock().unwrap().hvm_params[x.index as usize];
            a.write(1, &x)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

fn vcpu_op(dom: &Arc<Domain>, cmd: u32, vcpu: u64, a: &mut Args<'_>) -> HResult {
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

fn xen_version(cmd: u32, a: &mut Args<'_>) -> HResult {
    match cmd {
        abi::XENVER_GET_FEATURES => {
            // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
            let mut x: [u32; 2] = a.read(1)?;
            if x[0] != 0 {
                return Err(Errno::EINVAL);
            }
            // An auto-translated guest, as on Arm.
            x[1] = 1 << abi::XENFEAT_AUTO_TRANSLATED_PHYSMAP;
            a.write(1, &x)?;
            Ok(0)
        }
        // The page size, asked with a null handle.
        abi::XENVER_PAGESIZE if a.raw[1] == 0 => Ok(hal::PAGE_SIZE as isize),
        abi::XENVER_PAGESIZE => Err(Errno::EINVAL),
        // The hypervisor the simulator models (docs/FIDELITY.md).
        abi::XENVER_VERSION => Ok((4 << 16) | 20),
        abi::XENVER_EXTRAVERSION => {
            let mut v = [0u8; 16];
            v[..4].copy_from_slice(b"-sim");
            a.write(1, &v)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
