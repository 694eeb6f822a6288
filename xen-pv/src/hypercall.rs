//! How a guest reaches Xen: the [`Hypervisor`] trait, which is all that differs
//! between real Xen and the simulator, and typed wrappers for the hypercalls
//! this crate uses.
//!
//! A hypercall's memory argument is handed over as a byte buffer
//! ([`ArgBuf`]) holding the `#[repr(C)]` structure(s) from [`crate::abi`],
//! exactly the bytes Xen reads. A platform on real Xen passes the buffer's
//! address in the named argument register; the simulator decodes the same
//! bytes. So the guest code above this trait is the same everywhere, and the
//! simulator never dereferences a guest pointer.

use crate::abi::{self, Errno, op};
use hal::mem::{Gfn, SharedMemory};
use hal::{DomId, EventPort};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The bytes a hypercall reads or writes.
#[derive(Debug)]
pub enum ArgData<'a> {
    /// Read by Xen only.
    In(&'a [u8]),
    /// Read and written back by Xen.
    InOut(&'a mut [u8]),
}

impl ArgData<'_> {
    /// The bytes, read-only.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ArgData::In(b) => b,
            ArgData::InOut(b) => b,
        }
    }
}

/// A guest handle inside an argument buffer: the 8 bytes at offset `at` must
/// hold the address of `bytes[target..]`. The platform writes the address;
/// the simulator resolves the handle by offset.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    /// Offset of the 8-byte handle field in the buffer.
    pub at: usize,
    /// Offset of the data it points to, in the same buffer.
    pub target: usize,
}

/// The memory argument of one hypercall.
#[derive(Debug)]
pub struct ArgBuf<'a> {
    /// Which argument (0-based) receives the buffer's address.
    pub slot: usize,
    /// The buffer.
    pub data: ArgData<'a>,
    /// Guest handles inside the buffer that point into it.
    pub handles: &'a [Handle],
}

/// A way to issue hypercalls and reach memory: implemented by each arch crate
/// (`hvc #0xEA1`, the x86 hypercall page) and by the simulator.
///
/// Implementations are cheap handles (`Clone`); guest code keeps copies in
/// each component.
pub trait Hypervisor: Clone {
    /// How this platform reaches guest frames.
    type Mem: SharedMemory + Clone;

    /// Issue hypercall `op` with integer arguments `args` (unused ones 0) and
    /// at most one memory argument, whose address replaces `args[buf.slot]`.
    /// Returns what Xen returns: `>= 0` on success, `-errno` on failure.
    ///
    /// A platform MUST NOT fail in any other way: a buffer it cannot pass is
    /// `-EFAULT`, an unknown `op` is `-ENOSYS`.
    fn hypercall(&self, op: u32, args: [u64; 5], buf: Option<ArgBuf<'_>>) -> isize;

    /// Reach `count` consecutive guest frames starting at `gfn`, already
    /// populated (RAM, or a page Xen put there with `add_to_physmap` or a
    /// grant map).
    ///
    /// Errors: `EINVAL` if the range is not populated or (in the simulator)
    /// not backed by one contiguous block.
    fn map_frames(&self, gfn: Gfn, count: usize) -> Result<Self::Mem, Errno>;

    /// The address Xen expects for byte `offset` of frame `gfn` when a
    /// hypercall registers guest memory Xen keeps writing after the call
    /// (a runstate area, say). Auto-translated guests with an identity map
    /// (Arm, the simulator) use the guest-physical address, the default;
    /// x86 PV uses the virtual address it mapped the frame at.
    fn guest_address(&self, gfn: Gfn, offset: usize) -> u64 {
        gfn.addr() + offset as u64
    }

    /// The block hook: sleep in Xen (`SCHEDOP_block`) until an event is
    /// pending, without losing a wake-up, and return what Xen returned
    /// (`>= 0` on success, `-errno` on failure). It may return at once, and
    /// must, if an event or interrupt arrived since the caller last looked.
    ///
    /// This is the only way guest code blocks: [`sched_block`] (and so the
    /// executor, when its task is idle) calls it, never `SCHEDOP_block`
    /// through [`Hypervisor::hypercall`]. The default issues the bare
    /// hypercall, which is right where Xen's own check for pending events
    /// is enough (the simulator). An arch crate on real Xen overrides it with
    /// its `irq::block`, which closes the window between the executor's
    /// decision to sleep and the hypercall: on Arm it masks IRQs and blocks
    /// only if no interrupt was handled since; on x86 PV it keeps event
    /// delivery masked, which `SCHEDOP_block` clears atomically with its
    /// check for pending events.
    #[doc(alias = "SCHEDOP_block")]
    fn block(&self) -> isize {
        self.hypercall(
            op::SCHED_OP,
            [u64::from(abi::schedop::BLOCK), 0, 0, 0, 0],
            None,
        )
    }

    /// The frame number Xen and other domains know our frame `gfn` by, for
    /// grant entries and grant copies. Auto-translated guests (Arm, the
    /// simulator) use `gfn` itself, the default; an x86 PV guest's frames
    /// are pseudo-physical and this is the machine frame from its p2m map.
    ///
    /// Errors: `EINVAL` if `gfn` is not one of this domain's RAM frames.
    #[doc(alias = "pfn_to_mfn")]
    fn xen_frame(&self, gfn: Gfn) -> Result<u64, Errno> {
        Ok(gfn.0)
    }
}

/// Largest argument buffer [`marshal`] copies to patch guest handles.
pub const MAX_MARSHALLED: usize = 1024;

/// Turn a hypercall with a byte-buffer argument into raw register
/// arguments for a platform whose hypercalls take guest addresses (real Xen
/// on any architecture), and issue it with `raw`.
///
/// Without guest handles the caller's buffer is passed in place; with
/// handles it is copied to an 8-byte aligned stack buffer whose handle
/// fields are set to addresses inside the copy, and what Xen wrote is
/// copied back for [`ArgData::InOut`]. `raw` receives the arguments with the
/// buffer's address in `args[buf.slot]`; every address it receives points to
/// memory that stays valid and unaliased until `raw` returns.
///
/// Returns `raw`'s result, or `-EFAULT` (bad slot or handle offsets) or
/// `-E2BIG` (a buffer with handles over [`MAX_MARSHALLED`] bytes) without
/// calling `raw`.
pub fn marshal(
    mut args: [u64; 5],
    buf: Option<ArgBuf<'_>>,
    raw: impl FnOnce([u64; 5]) -> isize,
) -> isize {
    let Some(mut buf) = buf else {
        return raw(args);
    };
    if buf.slot >= 5 {
        return Errno::EFAULT.ret();
    }
    let len = buf.data.bytes().len();
    // Xen reaches the buffer through the address alone, so its provenance
    // is exposed; and Xen writes an `InOut` buffer, so that address must
    // come from a mutable borrow (a pointer from `as_ptr` is read-only).
    if buf.handles.is_empty() {
        args[buf.slot] = match &mut buf.data {
            ArgData::In(b) => b.as_ptr().expose_provenance() as u64,
            ArgData::InOut(b) => b.as_mut_ptr().expose_provenance() as u64,
        };
        return raw(args);
    }
    if len > MAX_MARSHALLED {
        return Errno::E2BIG.ret();
    }
    let mut words = [0u64; MAX_MARSHALLED / 8];
    let bytes = words.as_mut_bytes();
    bytes[..len].copy_from_slice(buf.data.bytes());
    let base = bytes.as_ptr().addr() as u64;
    for h in buf.handles {
        if h.at.checked_add(8).is_none_or(|end| end > len) || h.target > len {
            return Errno::EFAULT.ret();
        }
        bytes[h.at..h.at + 8].copy_from_slice(&(base + h.target as u64).to_le_bytes());
    }
    // The pointer Xen writes through is taken after the last write through
    // `bytes` (which would invalidate an earlier one), at the same address.
    args[buf.slot] = bytes.as_mut_ptr().expose_provenance() as u64;
    let ret = raw(args);
    if let ArgData::InOut(out) = buf.data {
        out.copy_from_slice(&words.as_bytes()[..len]);
    }
    ret
}

fn check(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno(i32::try_from(-ret).unwrap_or(i32::MAX)))
    } else {
        Ok(ret as usize)
    }
}

/// Issue a hypercall whose memory argument is the structure `arg` at
/// argument `slot`, written back on return.
pub fn call_with<H: Hypervisor, T: IntoBytes + FromBytes>(
    h: &H,
    op: u32,
    mut args: [u64; 5],
    slot: usize,
    arg: &mut T,
) -> Result<usize, Errno> {
    args[slot] = 0;
    check(h.hypercall(
        op,
        args,
        Some(ArgBuf {
            slot,
            data: ArgData::InOut(arg.as_mut_bytes()),
            handles: &[],
        }),
    ))
}

fn call_in<H: Hypervisor, T: IntoBytes + Immutable>(
    h: &H,
    op: u32,
    args: [u64; 5],
    slot: usize,
    arg: &T,
) -> Result<usize, Errno> {
    check(h.hypercall(
        op,
        args,
        Some(ArgBuf {
            slot,
            data: ArgData::In(arg.as_bytes()),
            handles: &[],
        }),
    ))
}

/// `EVTCHNOP_alloc_unbound` for `remote`.
pub fn evtchn_alloc_unbound<H: Hypervisor>(h: &H, remote: DomId) -> Result<EventPort, Errno> {
    let mut a = abi::EvtchnAllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: remote.0,
        port: 0,
    };
    call_with(
        h,
        op::EVENT_CHANNEL_OP,
        [u64::from(abi::evtchnop::ALLOC_UNBOUND), 0, 0, 0, 0],
        1,
        &mut a,
    )?;
    Ok(EventPort(a.port))
}

/// `EVTCHNOP_bind_interdomain` to `remote`'s `port`.
pub fn evtchn_bind_interdomain<H: Hypervisor>(
    h: &H,
    remote: DomId,
    port: EventPort,
) -> Result<EventPort, Errno> {
    let mut a = abi::EvtchnBindInterdomain {
        remote_dom: remote.0,
        remote_port: port.0,
        ..Default::default()
    };
    call_with(
        h,
        op::EVENT_CHANNEL_OP,
        [u64::from(abi::evtchnop::BIND_INTERDOMAIN), 0, 0, 0, 0],
        1,
        &mut a,
    )?;
    Ok(EventPort(a.local_port))
}

/// `EVTCHNOP_bind_virq` on vCPU 0.
pub fn evtchn_bind_virq<H: Hypervisor>(h: &H, virq: u32) -> Result<EventPort, Errno> {
    let mut a = abi::EvtchnBindVirq {
        virq,
        vcpu: 0,
        port: 0,
    };
    call_with(
        h,
        op::EVENT_CHANNEL_OP,
        [u64::from(abi::evtchnop::BIND_VIRQ), 0, 0, 0, 0],
        1,
        &mut a,
    )?;
    Ok(EventPort(a.port))
}

/// `EVTCHNOP_send`, `EVTCHNOP_close` or `EVTCHNOP_unmask` (`cmd`) on `port`.
pub fn evtchn_port_op<H: Hypervisor>(h: &H, cmd: u32, port: EventPort) -> Result<(), Errno> {
    let a = abi::EvtchnPort { port: port.0 };
    call_in(h, op::EVENT_CHANNEL_OP, [u64::from(cmd), 0, 0, 0, 0], 1, &a).map(drop)
}

/// `EVTCHNOP_status` of our `port`.
pub fn evtchn_status<H: Hypervisor>(h: &H, port: EventPort) -> Result<abi::EvtchnStatus, Errno> {
    let mut a = abi::EvtchnStatus {
        dom: DomId::SELF.0,
        port: port.0,
        ..Default::default()
    };
    call_with(
        h,
        op::EVENT_CHANNEL_OP,
        [u64::from(abi::evtchnop::STATUS), 0, 0, 0, 0],
        1,
        &mut a,
    )?;
    Ok(a)
}

/// `SCHEDOP_yield`.
pub fn sched_yield<H: Hypervisor>(h: &H) -> Result<(), Errno> {
    check(h.hypercall(
        op::SCHED_OP,
        [u64::from(abi::schedop::YIELD), 0, 0, 0, 0],
        None,
    ))
    .map(drop)
}

/// `SCHEDOP_block`: sleep until an event is pending. Returns at once if one
/// already is. (In the simulator it always returns at once; the domain is
/// then not scheduled again until an event is pending.) Goes through the
/// platform's block hook, [`Hypervisor::block`].
pub fn sched_block<H: Hypervisor>(h: &H) -> Result<(), Errno> {
    check(h.block()).map(drop)
}

/// `SCHEDOP_shutdown` with `reason` (`SHUTDOWN_*`). Does not return on
/// success on real Xen.
pub fn sched_shutdown<H: Hypervisor>(h: &H, reason: u32) -> Result<(), Errno> {
    let a = abi::SchedShutdown { reason };
    call_in(
        h,
        op::SCHED_OP,
        [u64::from(abi::schedop::SHUTDOWN), 0, 0, 0, 0],
        1,
        &a,
    )
    .map(drop)
}

/// `SCHEDOP_poll`: wait until one of `ports` is pending, or system time
/// `timeout_ns` (0: none). At most 8 ports.
pub fn sched_poll<H: Hypervisor>(h: &H, ports: &[EventPort], timeout_ns: u64) -> Result<(), Errno> {
    const MAX: usize = 8;
    if ports.len() > MAX {
        return Err(Errno::EINVAL);
    }
    let head = core::mem::size_of::<abi::SchedPoll>();
    let mut buf = [0u8; core::mem::size_of::<abi::SchedPoll>() + 4 * MAX];
    let poll = abi::SchedPoll {
        ports: 0,
        nr_ports: ports.len() as u32,
        _pad0: 0,
        timeout: timeout_ns,
    };
    buf[..head].copy_from_slice(poll.as_bytes());
    for (i, p) in ports.iter().enumerate() {
        buf[head + 4 * i..head + 4 * i + 4].copy_from_slice(&p.0.to_ne_bytes());
    }
    let handles = [Handle {
        at: 0,
        target: head,
    }];
    check(h.hypercall(
        op::SCHED_OP,
        [u64::from(abi::schedop::POLL), 0, 0, 0, 0],
        Some(ArgBuf {
            slot: 1,
            data: ArgData::InOut(&mut buf[..head + 4 * ports.len()]),
            handles: &handles,
        }),
    ))
    .map(drop)
}

/// `set_timer_op`: raise `VIRQ_TIMER` at system time `deadline_ns` (0:
/// cancel).
pub fn set_timer_op<H: Hypervisor>(h: &H, deadline_ns: u64) -> Result<(), Errno> {
    check(h.hypercall(op::SET_TIMER_OP, [deadline_ns, 0, 0, 0, 0], None)).map(drop)
}

/// `console_io` `CONSOLEIO_write` of `bytes`.
pub fn console_write<H: Hypervisor>(h: &H, bytes: &[u8]) -> Result<usize, Errno> {
    check(h.hypercall(
        op::CONSOLE_IO,
        [u64::from(abi::CONSOLEIO_WRITE), bytes.len() as u64, 0, 0, 0],
        Some(ArgBuf {
            slot: 2,
            data: ArgData::In(bytes),
            handles: &[],
        }),
    ))
}

/// `HVMOP_get_param` of our domain.
pub fn hvm_get_param<H: Hypervisor>(h: &H, index: u32) -> Result<u64, Errno> {
    let mut a = abi::XenHvmParam {
        domid: DomId::SELF.0,
        pad: 0,
        index,
        value: 0,
    };
    call_with(
        h,
        op::HVM_OP,
        [u64::from(abi::HVMOP_GET_PARAM), 0, 0, 0, 0],
        1,
        &mut a,
    )?;
    Ok(a.value)
}

/// `XENMEM_add_to_physmap` into our own physmap.
pub fn add_to_physmap<H: Hypervisor>(h: &H, space: u32, idx: u64, gpfn: Gfn) -> Result<(), Errno> {
    let a = abi::XenAddToPhysmap {
        domid: DomId::SELF.0,
        size: 0,
        space,
        idx,
        gpfn: gpfn.0,
    };
    call_in(
        h,
        op::MEMORY_OP,
        [u64::from(abi::XENMEM_ADD_TO_PHYSMAP), 0, 0, 0, 0],
        1,
        &a,
    )
    .map(drop)
}

/// `XENVER_version`: `(major, minor)`.
pub fn xen_version<H: Hypervisor>(h: &H) -> Result<(u16, u16), Errno> {
    let v = check(h.hypercall(
        op::XEN_VERSION,
        [u64::from(abi::XENVER_VERSION), 0, 0, 0, 0],
        None,
    ))?;
    Ok(((v >> 16) as u16, v as u16))
}

/// `VCPUOP_get_runstate_info` for vCPU 0.
pub fn vcpu_runstate<H: Hypervisor>(h: &H) -> Result<abi::VcpuRunstateInfo, Errno> {
    let mut a = abi::VcpuRunstateInfo::default();
    call_with(
        h,
        op::VCPU_OP,
        [u64::from(abi::VCPUOP_GET_RUNSTATE_INFO), 0, 0, 0, 0],
        2,
        &mut a,
    )?;
    Ok(a)
}

/// `VCPUOP_register_runstate_memory_area` for vCPU 0: Xen keeps a
/// `vcpu_runstate_info` at byte `offset` of frame `gfn` up to date (`None`:
/// stop). The area must stay valid while registered.
pub fn register_runstate_area<H: Hypervisor>(
    h: &H,
    area: Option<(Gfn, usize)>,
) -> Result<(), Errno> {
    let addr = area.map_or(0, |(gfn, off)| h.guest_address(gfn, off));
    let a = abi::VcpuRegisterRunstateMemoryArea { addr };
    call_in(
        h,
        op::VCPU_OP,
        [
            u64::from(abi::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA),
            0,
            0,
            0,
            0,
        ],
        2,
        &a,
    )
    .map(drop)
}

/// `GNTTABOP_*` (`cmd`) on `count` structures of type `T` in `ops`.
pub fn grant_table_op<H: Hypervisor, T: IntoBytes + FromBytes>(
    h: &H,
    cmd: u32,
    ops: &mut [T],
) -> Result<(), Errno> {
    if ops.is_empty() {
        return Ok(());
    }
    let count = ops.len() as u64;
    check(h.hypercall(
        op::GRANT_TABLE_OP,
        [u64::from(cmd), 0, count, 0, 0],
        Some(ArgBuf {
            slot: 1,
            data: ArgData::InOut(ops.as_mut_bytes()),
            handles: &[],
        }),
    ))
    .map(drop)
}

/// `GNTTABOP_query_size`: `(nr_frames, max_nr_frames)`.
pub fn gnttab_query_size<H: Hypervisor>(h: &H) -> Result<(u32, u32), Errno> {
    let mut q = [abi::GnttabQuerySize {
        dom: DomId::SELF.0,
        ..Default::default()
    }];
    grant_table_op(h, abi::gnttabop::QUERY_SIZE, &mut q)?;
    if q[0].status != abi::gntst::OKAY {
        return Err(Errno::EINVAL);
    }
    Ok((q[0].nr_frames, q[0].max_nr_frames))
}

/// `GNTTABOP_setup_table`: ask for `frames.len()` grant frames; Xen writes
/// their frame numbers into `frames` (machine frames on x86 PV).
pub fn gnttab_setup_table<H: Hypervisor>(h: &H, frames: &mut [u64]) -> Result<(), Errno> {
    const MAX: usize = 64;
    if frames.len() > MAX {
        return Err(Errno::EINVAL);
    }
    let head = core::mem::size_of::<abi::GnttabSetupTable>();
    let mut buf = [0u8; core::mem::size_of::<abi::GnttabSetupTable>() + 8 * MAX];
    let st = abi::GnttabSetupTable {
        dom: DomId::SELF.0,
        nr_frames: frames.len() as u32,
        ..Default::default()
    };
    buf[..head].copy_from_slice(st.as_bytes());
    let handles = [Handle {
        at: core::mem::offset_of!(abi::GnttabSetupTable, frame_list),
        target: head,
    }];
    let len = head + 8 * frames.len();
    check(h.hypercall(
        op::GRANT_TABLE_OP,
        [u64::from(abi::gnttabop::SETUP_TABLE), 0, 1, 0, 0],
        Some(ArgBuf {
            slot: 1,
            data: ArgData::InOut(&mut buf[..len]),
            handles: &handles,
        }),
    ))?;
    let st = abi::GnttabSetupTable::read_from_prefix(&buf[..head])
        .map(|(s, _)| s)
        .map_err(|_| Errno::EFAULT)?;
    if st.status != abi::gntst::OKAY {
        return Err(Errno::EINVAL);
    }
    for (i, f) in frames.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[head + 8 * i..head + 8 * i + 8]);
        *f = u64::from_ne_bytes(b);
    }
    Ok(())
}

/// `HYPERVISOR_mmu_update` (x86 PV): apply `reqs` to our own page tables,
/// in order. Xen stops at the first it refuses and returns that one's
/// error; the ones before it stay applied.
pub fn mmu_update<H: Hypervisor>(h: &H, reqs: &[abi::x86_64::MmuUpdate]) -> Result<(), Errno> {
    let bytes = reqs.as_bytes();
    check(h.hypercall(
        op::MMU_UPDATE,
        [0, reqs.len() as u64, 0, u64::from(DomId::SELF.0), 0],
        Some(ArgBuf {
            slot: 0,
            data: ArgData::In(bytes),
            handles: &[],
        }),
    ))
    .map(drop)
}

/// `HYPERVISOR_update_va_mapping` (x86 PV): set the page-table entry that
/// maps virtual address `va` to `pte` (0 unmaps), flushing as `flags`
/// (`UVMF_*`) says. The page tables covering `va` must exist.
pub fn update_va_mapping<H: Hypervisor>(h: &H, va: u64, pte: u64, flags: u64) -> Result<(), Errno> {
    check(h.hypercall(op::UPDATE_VA_MAPPING, [va, pte, flags, 0, 0], None)).map(drop)
}

/// `CALLBACKOP_register` (x86 PV): where Xen enters us for `kind`
/// (`CALLBACKTYPE_*`).
pub fn callback_register<H: Hypervisor>(
    h: &H,
    kind: u16,
    address: u64,
    flags: u16,
) -> Result<(), Errno> {
    let arg = abi::x86_64::CallbackRegister {
        kind,
        flags,
        _pad0: 0,
        address,
    };
    call_in(
        h,
        op::CALLBACK_OP,
        [abi::x86_64::callback::OP_REGISTER, 0, 0, 0, 0],
        1,
        &arg,
    )
    .map(drop)
}

/// `HYPERVISOR_set_trap_table` (x86 PV): install the virtual IDT `traps`,
/// which must end with an entry whose `address` is 0.
///
/// Errors: `EINVAL` without that terminator (checked here, before Xen
/// would read past the slice).
pub fn set_trap_table<H: Hypervisor>(h: &H, traps: &[abi::x86_64::TrapInfo]) -> Result<(), Errno> {
    if traps.last().is_none_or(|t| t.address != 0) {
        return Err(Errno::EINVAL);
    }
    check(h.hypercall(
        op::SET_TRAP_TABLE,
        [0; 5],
        Some(ArgBuf {
            slot: 0,
            data: ArgData::In(traps.as_bytes()),
            handles: &[],
        }),
    ))
    .map(drop)
}
