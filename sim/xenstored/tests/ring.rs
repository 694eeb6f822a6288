//! The ring: a guest's side of the xenstore page, written byte by byte as
//! a guest would, against `serve`.

use core::mem::offset_of;
use core::sync::atomic::Ordering;
use xenpal_hal::mem::{SharedMemory, WordMemory};
use xenpal_xen_pv::abi::io::{
    XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX, XENSTORE_RING_SIZE,
    XENSTORE_SERVER_FEATURE_ERROR, XenstoreDomainInterface as Intf, XsdSockmsg, xs,
};
use xenpal_xenstored::{Config, DomId, Xenstored};
use zerocopy::{FromBytes, IntoBytes};

const REQ: usize = offset_of!(Intf, req);
const RSP: usize = offset_of!(Intf, rsp);
const REQ_CONS: usize = offset_of!(Intf, req_cons);
const REQ_PROD: usize = offset_of!(Intf, req_prod);
const RSP_CONS: usize = offset_of!(Intf, rsp_cons);
const RSP_PROD: usize = offset_of!(Intf, rsp_prod);
const FEATURES: usize = offset_of!(Intf, server_features);
const ERROR: usize = offset_of!(Intf, error);
const SIZE: u32 = XENSTORE_RING_SIZE as u32;
const HDR: usize = core::mem::size_of::<XsdSockmsg>();

/// A guest's view of its ring page.
struct Guest {
    page: WordMemory,
    next_req: u32,
    /// Reply bytes received, not yet parsed.
    rx: Vec<u8>,
}

impl Guest {
    fn new() -> Guest {
        Guest {
            page: WordMemory::new(4096),
            next_req: 1,
            rx: Vec::new(),
        }
    }

    /// Put as much of `bytes` in the request ring as fits.
    fn send_raw(&self, bytes: &[u8]) -> usize {
        let p = &self.page;
        let cons = p.load_u32(REQ_CONS, Ordering::Acquire);
        let prod = p.load_u32(REQ_PROD, Ordering::Relaxed);
        let free = (SIZE - prod.wrapping_sub(cons)) as usize;
        let n = free.min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let at = (prod.wrapping_add(i as u32) % SIZE) as usize;
            p.write(REQ + at, &[b]);
        }
        p.store_u32(REQ_PROD, prod.wrapping_add(n as u32), Ordering::Release);
        n
    }

    fn message(&mut self, type_: u32, tx_id: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let req_id = self.next_req;
        self.next_req += 1;
        let hdr = XsdSockmsg {
            type_,
            req_id,
            tx_id,
            len: payload.len() as u32,
        };
        let mut m = hdr.as_bytes().to_vec();
        m.extend_from_slice(payload);
        (req_id, m)
    }

    /// Send one whole request; returns its id.
    fn send(&mut self, type_: u32, tx_id: u32, payload: &[u8]) -> u32 {
        let (id, m) = self.message(type_, tx_id, payload);
        assert_eq!(self.send_raw(&m), m.len(), "request ring full");
        id
    }

    /// Consume up to `max` reply bytes.
    fn recv_some(&mut self, max: usize) -> usize {
        let p = &self.page;
        let cons = p.load_u32(RSP_CONS, Ordering::Relaxed);
        let prod = p.load_u32(RSP_PROD, Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        assert!(avail <= SIZE, "xenstored broke the reply ring");
        let n = (avail as usize).min(max);
        for i in 0..n {
            let at = (cons.wrapping_add(i as u32) % SIZE) as usize;
            let mut b = [0u8];
            p.read(RSP + at, &mut b);
            self.rx.push(b[0]);
        }
        p.store_u32(RSP_CONS, cons.wrapping_add(n as u32), Ordering::Release);
        n
    }

    /// Complete messages received so far: (header, payload).
    fn messages(&mut self) -> Vec<(XsdSockmsg, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx.len() >= HDR {
            let h = XsdSockmsg::read_from_bytes(&self.rx[..HDR]).unwrap();
            let end = HDR + h.len as usize;
            if self.rx.len() < end {
                break;
            }
            out.push((h, self.rx[HDR..end].to_vec()));
            self.rx.drain(..end);
        }
        out
    }

    fn u32_at(&self, off: usize) -> u32 {
        self.page.load_u32(off, Ordering::Acquire)
    }
}

/// A xenstored with domain `id` introduced and owning its home.
fn setup(ids: &[u16]) -> (Xenstored, Vec<Guest>) {
    let mut xs = Xenstored::new(Config::default());
    let mut guests = Vec::new();
    for &id in ids {
        let g = Guest::new();
        xs.introduce(DomId(id), Box::new(g.page.clone()));
        let req = format!("/local/domain/{id}\0");
        assert_eq!(
            xs.request(DomId(0), xs::MKDIR, 0, req.as_bytes()).payload,
            b"OK\0"
        );
        let req = format!("/local/domain/{id}\0n{id}\0");
        assert_eq!(
            xs.request(DomId(0), xs::SET_PERMS, 0, req.as_bytes())
                .payload,
            b"OK\0"
        );
        guests.push(g);
    }
    xs.take_notifications();
    (xs, guests)
}

#[test]
fn request_and_reply_over_the_ring() {
    let (mut xs, mut g) = setup(&[1]);
    let g = &mut g[0];
    assert_eq!(g.u32_at(FEATURES), XENSTORE_SERVER_FEATURE_ERROR);
    let w = g.send(xs::WRITE, 0, b"name\0guest");
    let r = g.send(xs::READ, 0, b"name\0");
    let e = g.send(xs::READ, 0, b"missing\0");
    xs.serve(DomId(1));
    assert_eq!(xs.take_notifications(), [DomId(1)]);
    assert_eq!(xs.take_notifications(), []);
    g.recv_some(usize::MAX);
    let msgs = g.messages();
    let got: Vec<(u32, u32, &[u8])> = msgs
        .iter()
        .map(|(h, p)| (h.req_id, h.type_, p.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            (w, xs::WRITE, &b"OK\0"[..]),
            (r, xs::READ, &b"guest"[..]),
            (e, xs::ERROR, &b"ENOENT\0"[..]),
        ]
    );
    // The transaction id is echoed.
    let t = g.send(xs::TRANSACTION_START, 0, b"\0");
    xs.serve(DomId(1));
    g.recv_some(usize::MAX);
    let (h, p) = g.messages().remove(0);
    assert_eq!((h.req_id, p.as_slice()), (t, &b"1\0"[..]));
    let c = g.send(xs::WRITE, 1, b"intx\0v");
    xs.serve(DomId(1));
    g.recv_some(usize::MAX);
    let (h, _) = g.messages().remove(0);
    assert_eq!((h.req_id, h.tx_id, h.type_), (c, 1, xs::WRITE));
}

#[test]
fn request_split_across_two_serves() {
    let (mut xs, mut g) = setup(&[1]);
    let g = &mut g[0];
    let (id, m) = g.message(xs::WRITE, 0, b"split\0value");
    g.send_raw(&m[..10]);
    xs.serve(DomId(1));
    // Consumed, not answered yet.
    assert_eq!(g.u32_at(REQ_CONS), 10);
    assert_eq!(g.u32_at(RSP_PROD), 0);
    assert_eq!(xs.take_notifications(), [DomId(1)]);
    g.send_raw(&m[10..]);
    xs.serve(DomId(1));
    g.recv_some(usize::MAX);
    let msgs = g.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].0.req_id, msgs[0].1.as_slice()), (id, &b"OK\0"[..]));
    let r = xs.request(DomId(0), xs::READ, 0, b"/local/domain/1/split\0");
    assert_eq!(r.payload, b"value");
}

#[test]
fn reply_larger_than_the_ring_arrives_in_parts() {
    let (mut xs, mut g) = setup(&[1]);
    let g = &mut g[0];
    let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = b"/local/domain/1/big\0".to_vec();
    req.extend_from_slice(&big);
    assert_eq!(xs.request(DomId(0), xs::WRITE, 0, &req).payload, b"OK\0");
    // Two reads in flight: 2 * 3016 bytes of replies through a 1024 ring.
    let r1 = g.send(xs::READ, 0, b"big\0");
    let r2 = g.send(xs::READ, 0, b"big\0");
    xs.serve(DomId(1));
    assert_eq!(g.u32_at(RSP_PROD), SIZE, "ring filled");
    let mut rounds = 0;
    loop {
        // Consume a little at a time, then tell xenstored (as the guest's
        // notification would).
        let n = g.recv_some(300);
        if n == 0 {
            break;
        }
        xs.serve(DomId(1));
        rounds += 1;
        assert!(rounds < 100);
    }
    let msgs = g.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].0.req_id, &msgs[0].1), (r1, &big));
    assert_eq!((msgs[1].0.req_id, &msgs[1].1), (r2, &big));
    assert!(rounds > 10);
}

#[test]
fn watch_events_are_written_to_the_ring() {
    let (mut xs, mut g) = setup(&[1, 2]);
    let w = g[0].send(xs::WATCH, 0, b"data\0tok\0");
    xs.serve(DomId(1));
    g[0].recv_some(usize::MAX);
    let msgs = g[0].messages();
    // The reply first, then the first event.
    assert_eq!((msgs[0].0.req_id, msgs[0].0.type_), (w, xs::WATCH));
    assert_eq!(
        (msgs[1].0.type_, msgs[1].0.req_id, msgs[1].1.as_slice()),
        (xs::WATCH_EVENT, 0, &b"data\0tok\0"[..])
    );
    xs.take_notifications();
    // A change by someone else reaches the ring without a serve of dom1.
    xs.request(DomId(0), xs::WRITE, 0, b"/local/domain/1/data/x\0v");
    assert_eq!(xs.take_notifications(), [DomId(1)]);
    g[0].recv_some(usize::MAX);
    let msgs = g[0].messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1, b"data/x\0tok\0");
    assert_eq!(g[1].u32_at(RSP_PROD), 0);
    // A guest's own change: the event comes before the reply, as in Xen.
    let w = g[0].send(xs::WRITE, 0, b"data/y\0v");
    xs.serve(DomId(1));
    g[0].recv_some(usize::MAX);
    let msgs = g[0].messages();
    assert_eq!(msgs[0].0.type_, xs::WATCH_EVENT);
    assert_eq!((msgs[1].0.req_id, msgs[1].0.type_), (w, xs::WRITE));
    // No ring-less queue for a domain with a ring.
    assert!(xs.take_watch_events(DomId(1)).is_empty());
}

#[test]
fn unconsumed_replies_stop_reading_requests() {
    let (mut xs, mut g) = setup(&[1]);
    let g = &mut g[0];
    let mut req = b"/local/domain/1/big\0".to_vec();
    req.extend_from_slice(&[b'z'; 2000]);
    xs.request(DomId(0), xs::WRITE, 0, &req);
    // 30 reads of 20 bytes each: 600 bytes, all in the ring at once.
    let ids: Vec<u32> = (0..30).map(|_| g.send(xs::READ, 0, b"big\0")).collect();
    xs.serve(DomId(1));
    // 20 replies outstanding (Xen's default quota): reading stopped.
    assert_eq!(g.u32_at(REQ_CONS), 20 * 20);
    let mut got = Vec::new();
    for _ in 0..1000 {
        let n = g.recv_some(usize::MAX);
        xs.serve(DomId(1));
        got.extend(g.messages());
        if n == 0 && got.len() == ids.len() {
            break;
        }
    }
    assert_eq!(got.len(), 30);
    for (m, id) in got.iter().zip(&ids) {
        assert_eq!(m.0.req_id, *id);
        assert_eq!(m.1.len(), 2000);
    }
}

#[test]
fn hostile_request_ring_indices() {
    let (mut xs, mut g) = setup(&[1, 2]);
    // Producer more than a ring ahead of the consumer.
    g[0].page.store_u32(REQ_PROD, 5000, Ordering::Release);
    xs.serve(DomId(1));
    assert_eq!(xs.connection_error(DomId(1)), Some(XENSTORE_ERROR_RINGIDX));
    assert_eq!(g[0].u32_at(ERROR), XENSTORE_ERROR_RINGIDX);
    assert_eq!(g[0].u32_at(REQ_CONS), 0);
    // Not served again, even if the indices become sane.
    g[0].page.store_u32(REQ_PROD, 0, Ordering::Release);
    g[0].send(xs::READ, 0, b"x\0");
    xs.serve(DomId(1));
    assert_eq!(g[0].u32_at(REQ_CONS), 0);
    // Others are unaffected.
    let id = g[1].send(xs::WRITE, 0, b"x\0y");
    xs.serve(DomId(2));
    g[1].recv_some(usize::MAX);
    assert_eq!(g[1].messages()[0].0.req_id, id);
    assert_eq!(xs.connection_error(DomId(2)), None);
    // Re-introduction attaches a fresh ring.
    let fresh = Guest::new();
    xs.introduce(DomId(1), Box::new(fresh.page.clone()));
    assert_eq!(xs.connection_error(DomId(1)), None);
}

#[test]
fn hostile_message_length() {
    let (mut xs, mut g) = setup(&[1, 2]);
    let hdr = XsdSockmsg {
        type_: xs::WRITE,
        req_id: 1,
        tx_id: 0,
        len: 5000,
    };
    g[0].send_raw(hdr.as_bytes());
    g[0].send_raw(&[0u8; 100]);
    xs.serve(DomId(1));
    assert_eq!(xs.connection_error(DomId(1)), Some(XENSTORE_ERROR_PROTO));
    assert_eq!(g[0].u32_at(ERROR), XENSTORE_ERROR_PROTO);
    assert_eq!(g[0].u32_at(RSP_PROD), 0);
    let id = g[1].send(xs::READ, 0, b"/local/domain/2\0");
    xs.serve(DomId(2));
    g[1].recv_some(usize::MAX);
    assert_eq!(g[1].messages()[0].0.req_id, id);
}

#[test]
fn hostile_reply_ring_indices() {
    let (mut xs, mut g) = setup(&[1, 2]);
    // The guest claims to have consumed replies that were never produced.
    g[0].page
        .store_u32(RSP_CONS, 0x8000_0000, Ordering::Release);
    g[0].send(xs::READ, 0, b"/local/domain/1\0");
    xs.serve(DomId(1));
    assert_eq!(xs.connection_error(DomId(1)), Some(XENSTORE_ERROR_RINGIDX));
    // Its watches are gone with the connection: a change fires nothing.
    xs.request(DomId(0), xs::WRITE, 0, b"/local/domain/1/x\0");
    assert_eq!(g[0].u32_at(RSP_PROD), 0);
    // Garbage in every index and data byte: no panic, no loop.
    let (mut xs, mut g) = setup(&[3, 4]);
    for off in (0..2080).step_by(4) {
        g[0].page
            .store_u32(off, 0xdead_beef ^ off as u32, Ordering::Relaxed);
    }
    xs.serve(DomId(3));
    xs.serve(DomId(3));
    assert!(xs.connection_error(DomId(3)).is_some());
    let id = g[1].send(xs::READ, 0, b"/local/domain/4\0");
    xs.serve(DomId(4));
    g[1].recv_some(usize::MAX);
    assert_eq!(g[1].messages()[0].0.req_id, id);
}

#[test]
fn indices_wrap_around() {
    let (mut xs, mut g) = setup(&[1]);
    let g = &mut g[0];
    // Start all four indices just below 2^32.
    let start = u32::MAX - 40;
    for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
        g.page.store_u32(off, start, Ordering::Release);
    }
    for i in 0..200 {
        let v = format!("v{i}");
        let id = g.send(xs::WRITE, 0, format!("k\0{v}").as_bytes());
        let id2 = g.send(xs::READ, 0, b"k\0");
        xs.serve(DomId(1));
        g.recv_some(usize::MAX);
        let msgs = g.messages();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].0.req_id, msgs[1].0.req_id), (id, id2));
        assert_eq!(msgs[1].1, v.as_bytes());
    }
    assert!(g.u32_at(REQ_PROD) < start);
}
