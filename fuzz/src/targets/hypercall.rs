//! The simulator's hypercall decoder and the state behind it
//! (`xenpal_sim`: event channels, grant tables, memory, scheduling, HVM
//! parameters, vCPU and console operations), facing a hostile guest. The
//! guest issues arbitrary hypercalls (known and unknown operation numbers,
//! any command and integer arguments, argument buffers of any length at
//! any slot, read-only or written back, with guest handles pointing
//! anywhere), scribbles over the pages the simulator reads from it (its
//! grant-table frames, its xenstore and console rings, its RAM) and
//! notifies any port; a peer domain meanwhile maps, copies and binds what
//! the guest offers. Every call must return a value or an errno, and no
//! path of the simulator may panic on what a guest wrote.

use crate::input::Input;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenpal_sim::hal::grant::{CopyPtr, GrantCopy};
use xenpal_sim::hal::mem::{Gfn, Pages, SharedMemory};
use xenpal_sim::hal::{Access, DomId, EventChannel, EventPort, GrantRef, GrantTable, PageAlloc};
use xenpal_sim::layout::{GRANT_TABLE_GFN, console_gfn, store_gfn};
use xenpal_sim::xen_pv::Hypervisor;
use xenpal_sim::xen_pv::abi::op;
use xenpal_sim::xen_pv::hypercall::{ArgBuf, ArgData, Handle};
use xenpal_sim::{DomainConfig, Sim, SimConfig, SimPlatform};

/// The operation numbers the simulator implements, and a few it does not;
/// the selector byte picks one, or (past the list) a raw `u32`.
pub const OPS: [u32; 12] = [
    op::EVENT_CHANNEL_OP,
    op::GRANT_TABLE_OP,
    op::MEMORY_OP,
    op::SCHED_OP,
    op::SET_TIMER_OP,
    op::CONSOLE_IO,
    op::HVM_OP,
    op::XEN_VERSION,
    op::VCPU_OP,
    op::MMU_UPDATE,
    op::MULTICALL,
    op::PHYSDEV_OP,
];

/// What the script does next (the op byte modulo their number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// A hypercall; see [`script::call`] for its encoding.
    Call = 0,
    /// Write a short byte string into one of our pages: selector byte
    /// (console ring, xenstore ring, grant frame 0 or 1, a RAM frame),
    /// `u16` offset.
    Scribble = 1,
    /// Send an event on port `u8`.
    Notify = 2,
    /// Ask the peer domain to act: kind byte, then a `u32` argument.
    Peer = 3,
    /// Sleep `u8` microseconds of virtual time (others run).
    Sleep = 4,
    /// Offer the peer something: a grant of a fresh page (flag byte:
    /// read-only) or an unbound port.
    Offer = 5,
}

/// How many steps there are.
pub const STEPS: u8 = 6;

/// The fuzzing guest's domain id (the first domain spawned).
const GUEST: DomId = DomId(1);
/// The peer's domain id.
const PEER: DomId = DomId(2);

type Queue = Arc<Mutex<VecDeque<(u8, u32)>>>;

/// Run one input: a flag byte (bit 0: the guest is privileged), then a
/// script of [`Step`]s.
pub fn run(data: &[u8]) {
    let data = data.to_vec();
    let privileged = data.first().is_some_and(|b| b & 1 == 1);
    let mut sim = Sim::new(SimConfig {
        max_steps: 200_000,
        dom0_memory_pages: 16,
        ..SimConfig::seeded(1)
    });
    let queue: Queue = Arc::default();
    let done = Arc::new(Mutex::new(false));
    let mut cfg = DomainConfig::new("fuzzer").memory_pages(64);
    if privileged {
        cfg = cfg.privileged();
    }
    let ram_pages = cfg.memory_pages;
    let grant_frames = cfg.grant_frames as u64;
    let (q, d) = (queue.clone(), done.clone());
    let spawned = sim.spawn(cfg, move |p| async move {
        guest(&p, &data[1.min(data.len())..], ram_pages, grant_frames, &q).await;
        *d.lock().unwrap_or_else(|e| e.into_inner()) = true;
    });
    if !matches!(spawned, Ok(d) if d == GUEST) {
        return;
    }
    let _ = sim.spawn(DomainConfig::new("peer").memory_pages(32), move |p| {
        peer(p, queue, done)
    });
    let _ = sim.run();
}

async fn guest(p: &SimPlatform, data: &[u8], ram_pages: usize, grant_frames: u64, q: &Queue) {
    let mut i = Input::new(data);
    let h = p.hypervisor().clone();
    let mut offered = Vec::new();
    let mut steps = 0;
    while !i.is_empty() && steps < 512 {
        steps += 1;
        match i.u8() % STEPS {
            0 => {
                call(&h, &mut i);
            }
            1 => {
                let gfn = match i.u8() % 5 {
                    0 => console_gfn(ram_pages),
                    1 => store_gfn(ram_pages),
                    2 => Gfn(GRANT_TABLE_GFN),
                    3 => Gfn(GRANT_TABLE_GFN + 1.min(grant_frames.saturating_sub(1))),
                    _ => Gfn(1 + u64::from(i.u8())),
                };
                let at = i.u16() as usize % 4096;
                let bytes = i.short();
                if let Ok(page) = h.map_frames(gfn, 1) {
                    let n = bytes.len().min(4096 - at);
                    page.write(at, &bytes[..n]);
                }
            }
            2 => {
                let _ = p.events().notify(EventPort(u32::from(i.u8())));
            }
            3 => {
                let kind = i.u8();
                let arg = i.u32();
                q.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((kind, arg));
                xenpal_sim::hal::time::sleep(p.timer(), Duration::from_micros(20)).await;
            }
            4 => {
                let us = u64::from(i.u8());
                xenpal_sim::hal::time::sleep(p.timer(), Duration::from_micros(us)).await;
            }
            _ => {
                if i.u8() & 1 == 0 {
                    let access = if i.u8() & 1 == 0 {
                        Access::ReadWrite
                    } else {
                        Access::ReadOnly
                    };
                    if let Ok(page) = p.pages().alloc(1) {
                        let _ = p.grants().grant_access(PEER, page.gfn(0), access);
                        // Kept (never freed) while the peer may map it.
                        offered.push(page);
                    }
                } else {
                    let _ = p.events().alloc_unbound(PEER);
                }
            }
        }
    }
}

/// One hypercall from the script.
fn call<H: Hypervisor>(h: &H, i: &mut Input<'_>) -> isize {
    let sel = i.u8() as usize;
    let op = match OPS.get(sel % 16) {
        Some(&op) => op,
        None => i.u32(),
    };
    // Bit k of `wide`: argument k is a full u64 (else one byte).
    let wide = i.u8();
    let mut args = [0u64; 5];
    for (k, a) in args.iter_mut().enumerate() {
        *a = if wide & (1 << k) != 0 {
            i.u64()
        } else {
            u64::from(i.u8())
        };
    }
    let kind = i.u8();
    let slot = (kind >> 2) as usize % 6;
    let mut bytes = i.long(2048).to_vec();
    let handles: Vec<Handle> = (0..kind >> 5)
        .map(|_| Handle {
            at: i.u16() as usize % 2100,
            target: i.u16() as usize % 2100,
        })
        .collect();
    let ret = match kind & 3 {
        0 => h.hypercall(op, args, None),
        1 => h.hypercall(
            op,
            args,
            Some(ArgBuf {
                slot,
                data: ArgData::In(&bytes),
                handles: &handles,
            }),
        ),
        _ => h.hypercall(
            op,
            args,
            Some(ArgBuf {
                slot,
                data: ArgData::InOut(&mut bytes),
                handles: &handles,
            }),
        ),
    };
    // Xen's errnos are small: anything else is a decoding bug.
    assert!(ret >= -4096, "op {op} cmd {}: returned {ret}", args[0]);
    ret
}

/// The peer: does what the guest asks of it, until the guest is done.
async fn peer(p: SimPlatform, q: Queue, done: Arc<Mutex<bool>>) {
    let mut maps = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if *done.lock().unwrap_or_else(|e| e.into_inner()) {
            break;
        }
        let next = q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some((kind, arg)) = next else {
            xenpal_sim::hal::time::sleep(p.timer(), Duration::from_micros(5)).await;
            continue;
        };
        match kind % 6 {
            0 | 1 => {
                let access = if kind % 6 == 0 {
                    Access::ReadOnly
                } else {
                    Access::ReadWrite
                };
                if let Ok(m) = p.grants().map(GUEST, GrantRef(arg % 64), access) {
                    let mut b = [0u8; 8];
                    m.read(0, &mut b);
                    if access == Access::ReadWrite {
                        m.write(8, &b);
                    }
                    maps.push(m);
                }
            }
            2 => {
                if let Some(m) = maps.pop() {
                    let _ = p.grants().unmap(m);
                }
            }
            3 => {
                if let Ok(mine) = p.pages().alloc(1) {
                    let at = ((arg >> 8) % 4096) as u16;
                    let ops = [GrantCopy {
                        src: CopyPtr::Foreign {
                            domid: GUEST,
                            gref: GrantRef(arg % 64),
                            offset: at,
                        },
                        dst: CopyPtr::Local {
                            gfn: mine.gfn(0),
                            offset: 0,
                        },
                        len: ((arg >> 20) % 4097) as u16,
                    }];
                    let mut status = [Ok(())];
                    let _ = p.grants().copy(&ops, &mut status);
                    p.pages().free(mine);
                }
            }
            4 => {
                if let Ok(port) = p.events().bind_interdomain(GUEST, EventPort(arg % 64)) {
                    let _ = p.events().notify(port);
                    ports.push(port);
                }
            }
            _ => {
                if let Some(port) = ports.pop() {
                    let _ = p.events().close(port);
                }
            }
        }
    }
    for m in maps {
        let _ = p.grants().unmap(m);
    }
}

/// Script writers for the seed corpus.
pub mod script {
    use super::{OPS, Step};
    use crate::input::Script;

    /// A hypercall: `op` (one of [`OPS`] or raw), integer arguments (each
    /// written as a full `u64`), and an optional buffer at `slot`
    /// (read-only or written back) with guest handles.
    pub fn call(
        s: &mut Script,
        op: u32,
        args: [u64; 5],
        buf: Option<(usize, bool, &[u8])>,
        handles: &[(u16, u16)],
    ) {
        s.u8(Step::Call as u8);
        match OPS.iter().position(|&o| o == op) {
            Some(k) => s.u8(k as u8),
            None => s.u8(15).u32(op),
        };
        s.u8(0x1f);
        for a in args {
            s.u64(a);
        }
        let handles = &handles[..handles.len().min(7)];
        let (slot, inout, bytes) = buf.unwrap_or((0, false, &[]));
        let mode = match buf {
            None => 0,
            Some(_) if inout => 2,
            Some(_) => 1,
        };
        s.u8(mode | ((slot as u8) << 2) | ((handles.len() as u8) << 5));
        s.long(bytes);
        for &(at, target) in handles {
            s.u16(at).u16(target);
        }
    }

    /// Sleep `us` microseconds.
    pub fn sleep(s: &mut Script, us: u8) {
        s.u8(Step::Sleep as u8).u8(us);
    }

    /// Offer the peer a grant (`grant`) or an unbound port.
    pub fn offer(s: &mut Script, grant: bool) {
        s.u8(Step::Offer as u8).u8(u8::from(!grant)).u8(0);
    }

    /// Ask the peer to act.
    pub fn peer(s: &mut Script, kind: u8, arg: u32) {
        s.u8(Step::Peer as u8).u8(kind).u32(arg);
    }

    /// Write `bytes` at `at` of page `which` and notify `port`.
    pub fn scribble(s: &mut Script, which: u8, at: u16, bytes: &[u8], port: u8) {
        s.u8(Step::Scribble as u8)
            .u8(which)
            .u16(at)
            .short(bytes)
            .u8(Step::Notify as u8)
            .u8(port);
    }
}
