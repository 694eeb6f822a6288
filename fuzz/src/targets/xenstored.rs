//! The simulator's xenstored (`xenpal_xenstored::Xenstored`), the daemon
//! every simulated guest talks to, against hostile guests: two domains
//! write arbitrary requests (any type, id, transaction, length field and
//! payload) into their ring pages, corrupt ring indices, leave replies
//! unread and come and go, while the toolstack (dom0) makes requests of
//! its own. xenstored must answer with errors or break only the offending
//! connection; it must never panic.

use crate::input::Input;
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use std::collections::VecDeque;
use xenpal_hal::mem::{SharedMemory, WordMemory};
use xenpal_xen_pv::abi::io::{XENSTORE_RING_SIZE, XenstoreDomainInterface as Intf, XsdSockmsg};
use xenpal_xenstored::{Config, DomId, Xenstored};
use zerocopy::IntoBytes;

const REQ: usize = offset_of!(Intf, req);
const REQ_CONS: usize = offset_of!(Intf, req_cons);
const REQ_PROD: usize = offset_of!(Intf, req_prod);
const RSP_CONS: usize = offset_of!(Intf, rsp_cons);
const RSP_PROD: usize = offset_of!(Intf, rsp_prod);
const RING: u32 = XENSTORE_RING_SIZE as u32;

/// The operations of a script (the op byte modulo their number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Guest `u8 % 2` queues a message: type (`u8`), tx id (`u8`), payload
    /// (`u16` length), then a flag byte: odd means a `u32` length field
    /// that disagrees with the payload follows.
    Message = 0,
    /// Guest `u8 % 2` queues raw bytes (short string).
    Raw = 1,
    /// The guest notifies: its queued bytes go into the ring as far as they
    /// fit, and xenstored serves it.
    Serve = 2,
    /// Guest `u8 % 2` consumes every reply in its ring.
    TakeReplies = 3,
    /// Guest `u8 % 2` writes ring index `u8 % 4` with a `u32`.
    Index = 4,
    /// dom0 makes a request without a ring: type, tx id, payload.
    Toolstack = 5,
    /// Guest `u8 % 2` is released, or introduced again (flag byte).
    Cycle = 6,
}

/// How many operations there are.
pub const OPS: u8 = 7;

struct Guest {
    id: DomId,
    page: WordMemory,
    out: VecDeque<u8>,
}

impl Guest {
    fn push(&mut self) {
        let p = &self.page;
        let cons = p.load_u32(REQ_CONS, Ordering::Acquire);
        let prod = p.load_u32(REQ_PROD, Ordering::Relaxed);
        let room = RING.saturating_sub(prod.wrapping_sub(cons));
        let n = room.min(self.out.len() as u32);
        for k in 0..n {
            let b = self.out.pop_front().unwrap_or(0);
            p.write(REQ + (prod.wrapping_add(k) % RING) as usize, &[b]);
        }
        p.store_u32(REQ_PROD, prod.wrapping_add(n), Ordering::Release);
    }
}

fn config(small: bool) -> Config {
    if small {
        // Quotas a fuzzer can run into in a few requests.
        Config {
            quota_nodes_per_domain: 8,
            quota_watches_per_domain: 2,
            quota_transactions_per_domain: 1,
            quota_node_size: 64,
            quota_perms_per_node: 2,
            quota_path_max: 40,
            quota_transaction_nodes: 4,
            quota_outstanding_requests: 2,
            max_queued_watch_events: 4,
            max_requests_per_serve: 4,
        }
    } else {
        Config::default()
    }
}

/// Run one input: a quota choice byte, then a script of [`Op`]s.
pub fn run(data: &[u8]) {
    let mut i = Input::new(data);
    let mut xs = Xenstored::new(config(i.u8() & 1 == 1));
    let mut guests: Vec<Guest> = (1..=2)
        .map(|id| Guest {
            id: DomId(id),
            page: WordMemory::new(4096),
            out: VecDeque::new(),
        })
        .collect();
    for g in &guests {
        xs.introduce(g.id, Box::new(g.page.clone()));
        let home = format!("/local/domain/{}\0", g.id.0);
        xs.request(
            DomId(0),
            xenpal_xen_pv::abi::io::xs::MKDIR,
            0,
            home.as_bytes(),
        );
        let perms = format!("/local/domain/{0}\0n{0}\0", g.id.0);
        xs.request(
            DomId(0),
            xenpal_xen_pv::abi::io::xs::SET_PERMS,
            0,
            perms.as_bytes(),
        );
    }
    xs.take_notifications();
    let mut steps = 0;
    while !i.is_empty() && steps < 4096 {
        steps += 1;
        let op = i.u8() % OPS;
        let g = &mut guests[i.u8() as usize % 2];
        match op {
            0 => {
                let type_ = u32::from(i.u8());
                let tx_id = u32::from(i.u8());
                let payload = i.long(8192);
                let len = if i.u8() & 1 == 1 {
                    i.u32()
                } else {
                    payload.len() as u32
                };
                let h = XsdSockmsg {
                    type_,
                    req_id: steps,
                    tx_id,
                    len,
                };
                g.out.extend(h.as_bytes());
                g.out.extend(payload);
            }
            1 => g.out.extend(i.short()),
            2 => {
                g.push();
                xs.serve(g.id);
                let _ = xs.connection_error(g.id);
            }
            3 => {
                let prod = g.page.load_u32(RSP_PROD, Ordering::Acquire);
                g.page.store_u32(RSP_CONS, prod, Ordering::Release);
            }
            4 => {
                let at = [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD][i.u8() as usize % 4];
                g.page.store_u32(at, i.u32(), Ordering::Release);
            }
            5 => {
                let type_ = u32::from(i.u8());
                let tx_id = u32::from(i.u8());
                let payload = i.long(8192);
                let r = xs.request(DomId(0), type_, tx_id, payload);
                let _ = r.errno();
                let _ = xs.take_watch_events(DomId(0));
            }
            _ => {
                if i.u8() & 1 == 0 {
                    xs.release(g.id);
                    assert!(!xs.is_introduced(g.id));
                } else {
                    xs.introduce(g.id, Box::new(g.page.clone()));
                    assert!(xs.is_introduced(g.id));
                }
            }
        }
        let _ = xs.take_notifications();
    }
    let _ = xs.node_count();
}

/// Script writers for the seed corpus.
pub mod script {
    use super::Op;
    use crate::input::Script;

    /// Guest `guest` (0 or 1) sends a request and xenstored serves it; the
    /// guest takes the reply.
    pub fn request(s: &mut Script, guest: u8, type_: u32, tx_id: u8, payload: &[u8]) {
        s.u8(Op::Message as u8)
            .u8(guest)
            .u8(type_ as u8)
            .u8(tx_id)
            .long(payload)
            .u8(0)
            .u8(Op::Serve as u8)
            .u8(guest)
            .u8(Op::TakeReplies as u8)
            .u8(guest);
    }

    /// dom0 makes a request.
    pub fn toolstack(s: &mut Script, type_: u32, payload: &[u8]) {
        s.u8(Op::Toolstack as u8)
            .u8(0)
            .u8(type_ as u8)
            .u8(0)
            .long(payload);
    }
}
