//! The guest's xenstore client (`xenpal_xen_pv::xenstore::XenStore`)
//! against a hostile xenstored: the fuzz input plays xenstored on the
//! shared ring page. It reads the guest's requests (to learn their ids, as
//! a real daemon would), answers them with arbitrary headers and payloads
//! (replies, errors, watch events, wrong ids, wrong lengths), and writes
//! arbitrary ring indices. Meanwhile the guest issues typed requests
//! (read, directory, get_perms, read_u64, domain_path...) whose replies
//! are decoded, and takes watch events. Every malformed reply must end as
//! an `XsError`, never a panic or a hang.

use crate::input::Input;
use crate::mock::{Task, events_with, poll_once};
use core::sync::atomic::Ordering;
use std::collections::VecDeque;
use xenpal_hal::mem::{SharedMemory, WordMemory};
use xenpal_hal::{DomId, EventPort};
use xenpal_xen_pv::abi::io::{XENSTORE_RING_SIZE, XsdSockmsg, xs};
use xenpal_xen_pv::xenstore::{Perm, PermAccess, TxId, XenStore};
use zerocopy::{FromBytes, IntoBytes};

use crate::mock::NullHypervisor;

const REQ: usize = 0;
const RSP: usize = XENSTORE_RING_SIZE;
const REQ_CONS: usize = 2 * XENSTORE_RING_SIZE;
const REQ_PROD: usize = REQ_CONS + 4;
const RSP_CONS: usize = REQ_CONS + 8;
const RSP_PROD: usize = REQ_CONS + 12;
const RING: u32 = XENSTORE_RING_SIZE as u32;
const HDR: usize = core::mem::size_of::<XsdSockmsg>();

/// Most requests in flight at once.
const MAX_TASKS: usize = 4;

/// The operations of a script (the op byte modulo their number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Start a typed request: kind byte, path string, value string.
    Request = 0,
    /// Poll request `u8 % n` once.
    Poll = 1,
    /// The daemon consumes what the guest wrote in the request ring.
    Consume = 2,
    /// Reply to the oldest request: type selector byte, payload (`u16`
    /// length), then a header length override flag byte (and `u32`).
    Reply = 3,
    /// A watch event: path and token strings.
    WatchEvent = 4,
    /// Write ring index `u8 % 4` (req_cons, req_prod, rsp_cons, rsp_prod)
    /// with a `u32`.
    Index = 5,
    /// Take a watch event (`try_watch_event`, or `_for` a token string).
    TakeEvent = 6,
    /// Drop request `u8 % n` unfinished.
    Cancel = 7,
    /// Raw bytes into the reply ring at the producer index, published.
    Raw = 8,
}

/// How many operations there are.
pub const OPS: u8 = 9;

/// The hostile daemon's view of the page.
struct Daemon {
    page: WordMemory,
    /// Request bytes read, not yet split into messages.
    rx: Vec<u8>,
    /// Requests read and not answered: (req_id, type, tx_id).
    pending: VecDeque<(u32, u32, u32)>,
    /// Reply bytes not yet written (the ring was full).
    out: VecDeque<u8>,
}

impl Daemon {
    fn consume(&mut self) {
        let p = &self.page;
        let cons = p.load_u32(REQ_CONS, Ordering::Relaxed);
        let prod = p.load_u32(REQ_PROD, Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(RING);
        for i in 0..n {
            let mut b = [0u8];
            p.read(REQ + (cons.wrapping_add(i) % RING) as usize, &mut b);
            self.rx.push(b[0]);
        }
        p.store_u32(REQ_CONS, cons.wrapping_add(n), Ordering::Release);
        while self.rx.len() >= HDR {
            let Ok(h) = XsdSockmsg::read_from_bytes(&self.rx[..HDR]) else {
                break;
            };
            let len = HDR + (h.len as usize).min(4096);
            if self.rx.len() < len {
                break;
            }
            self.rx.drain(..len);
            self.pending.push_back((h.req_id, h.type_, h.tx_id));
        }
    }

    /// Write as much queued output as the reply ring has room for.
    fn flush(&mut self) {
        let p = &self.page;
        let cons = p.load_u32(RSP_CONS, Ordering::Acquire);
        let prod = p.load_u32(RSP_PROD, Ordering::Relaxed);
        let room = RING.saturating_sub(prod.wrapping_sub(cons));
        let n = room.min(self.out.len() as u32);
        for i in 0..n {
            let b = self.out.pop_front().unwrap_or(0);
            p.write(RSP + (prod.wrapping_add(i) % RING) as usize, &[b]);
        }
        p.store_u32(RSP_PROD, prod.wrapping_add(n), Ordering::Release);
    }

    fn send(&mut self, type_: u32, req_id: u32, tx_id: u32, len: u32, payload: &[u8]) {
        let h = XsdSockmsg {
            type_,
            req_id,
            tx_id,
            len,
        };
        self.out.extend(h.as_bytes());
        self.out.extend(payload);
        self.flush();
    }
}

fn path(i: &mut Input<'_>) -> String {
    i.string()
}

/// A typed request, as drivers make them; its result is dropped (any
/// `Result` is fine, a panic is not).
fn request(xs: &XenStore<NullHypervisor>, i: &mut Input<'_>) -> Task<'static> {
    let xs = xs.clone();
    let kind = i.u8() % 16;
    let p = path(i);
    let v = i.string();
    let tx = TxId(u32::from(i.u8() % 3));
    Box::pin(async move {
        match kind {
            0 => drop(xs.read(tx, &p).await),
            1 => drop(xs.read_string(tx, &p).await),
            2 => drop(xs.read_u64(tx, &p).await),
            3 => drop(xs.write(tx, &p, v.as_bytes()).await),
            4 => drop(xs.mkdir(tx, &p).await),
            5 => drop(xs.rm(tx, &p).await),
            6 => drop(xs.directory(tx, &p).await),
            7 => drop(xs.get_perms(tx, &p).await),
            8 => {
                let perms = [
                    Perm {
                        domid: DomId(0),
                        access: PermAccess::None,
                    },
                    Perm {
                        domid: DomId(1),
                        access: PermAccess::Both,
                    },
                ];
                drop(xs.set_perms(tx, &p, &perms).await)
            }
            9 => drop(xs.watch(&p, &v).await),
            10 => drop(xs.unwatch(&p, &v).await),
            11 => drop(xs.transaction_start().await),
            12 => drop(xs.transaction_end(tx, v.is_empty()).await),
            13 => drop(xs.domain_path(DomId(p.len() as u16)).await),
            14 => drop(xs.next_watch_event_for(&v).await),
            _ => drop(xs.next_watch_event().await),
        }
    })
}

/// Run one input: a script of [`Op`]s.
pub fn run(data: &[u8]) {
    let mut i = Input::new(data);
    let port = EventPort(3);
    let page = WordMemory::new(4096);
    let events = events_with(port);
    let xs = XenStore::new(events, page.clone(), port);
    let mut d = Daemon {
        page,
        rx: Vec::new(),
        pending: VecDeque::new(),
        out: VecDeque::new(),
    };
    let mut tasks: Vec<Task<'static>> = Vec::new();
    let mut steps = 0;
    while !i.is_empty() && steps < 4096 {
        steps += 1;
        match i.u8() % OPS {
            0 => {
                if tasks.len() < MAX_TASKS {
                    let mut t = request(&xs, &mut i);
                    if !poll_once(&mut t) {
                        tasks.push(t);
                    }
                }
            }
            1 => {
                if !tasks.is_empty() {
                    let k = i.u8() as usize % tasks.len();
                    if poll_once(&mut tasks[k]) {
                        drop(tasks.swap_remove(k));
                    }
                }
            }
            2 => d.consume(),
            3 => {
                let sel = i.u8();
                let payload = i.long(5000);
                let (id, type_, tx) = d.pending.pop_front().unwrap_or_else(|| (i.u32(), 0, 0));
                let type_ = match sel % 4 {
                    0 => type_,
                    1 => xs::ERROR,
                    2 => xs::WATCH_EVENT,
                    _ => u32::from(sel),
                };
                let len = if i.u8() & 1 == 0 {
                    payload.len() as u32
                } else {
                    i.u32()
                };
                d.send(type_, id, tx, len, payload);
            }
            4 => {
                let mut payload = i.short().to_vec();
                payload.push(0);
                payload.extend_from_slice(i.short());
                payload.push(0);
                d.send(xs::WATCH_EVENT, 0, 0, payload.len() as u32, &payload);
            }
            5 => {
                let at = [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD][i.u8() as usize % 4];
                d.page.store_u32(at, i.u32(), Ordering::Release);
            }
            6 => {
                let token = i.string();
                let _ = if token.is_empty() {
                    xs.try_watch_event().map(drop)
                } else {
                    xs.try_watch_event_for(&token).map(drop)
                };
            }
            7 => {
                if !tasks.is_empty() {
                    let k = i.u8() as usize % tasks.len();
                    drop(tasks.swap_remove(k));
                }
            }
            _ => {
                let bytes = i.short().to_vec();
                d.out.extend(bytes);
                d.flush();
            }
        }
    }
    // Whatever is left runs a little more, then is dropped unfinished.
    for t in &mut tasks {
        d.consume();
        d.flush();
        poll_once(t);
    }
}

/// Script writers for the seed corpus.
pub mod script {
    use super::Op;
    use crate::input::Script;

    /// Start a typed request of `kind` on `path` with `value`.
    pub fn request(s: &mut Script, kind: u8, path: &str, value: &str) {
        s.u8(Op::Request as u8)
            .u8(kind)
            .short(path.as_bytes())
            .short(value.as_bytes())
            .u8(0);
    }

    /// The daemon reads the requests, answers the oldest with `payload` of
    /// type `sel` (0: the request's own type, 1: `XS_ERROR`), and the
    /// guest polls its oldest request.
    pub fn answer(s: &mut Script, sel: u8, payload: &[u8]) {
        s.u8(Op::Consume as u8)
            .u8(Op::Reply as u8)
            .u8(sel)
            .long(payload)
            .u8(0)
            .u8(Op::Poll as u8)
            .u8(0);
    }

    /// A watch event, then the guest takes it.
    pub fn watch_event(s: &mut Script, path: &str, token: &str) {
        s.u8(Op::WatchEvent as u8)
            .short(path.as_bytes())
            .short(token.as_bytes())
            .u8(Op::TakeEvent as u8)
            .short(token.as_bytes());
    }
}
