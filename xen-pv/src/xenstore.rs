//! xenstore client: the wire protocol (`io/xs_wire.h`) over the domain's
//! xenstore page and event channel.
//!
//! Requests and replies are `xsd_sockmsg` headers followed by a payload,
//! streamed through two 1 KiB byte rings. Replies are matched to requests by
//! `req_id`; watch events, which arrive interleaved with replies, are queued
//! until [`XenStore::next_watch_event`] takes them.
//!
//! xenstored is trusted more than a device backend, but its page is still
//! shared memory: indices are checked (`prod - cons <= 1024`) and message
//! lengths bounded (`XENSTORE_PAYLOAD_MAX`). A violation breaks the
//! connection ([`XsError::Protocol`]) instead of hanging or panicking.

use crate::abi::Errno;
use crate::abi::io::{XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XsdSockmsg, xs};
use crate::event::Events;
use crate::hypercall::Hypervisor;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::future::poll_fn;
use core::sync::atomic::Ordering;
use core::task::{Poll, Waker};
use hal::mem::SharedMemory;
use hal::{DomId, EventChannel, EventPort};
use zerocopy::{FromBytes, IntoBytes};

const REQ: usize = 0;
const RSP: usize = XENSTORE_RING_SIZE;
const REQ_CONS: usize = 2 * XENSTORE_RING_SIZE;
const REQ_PROD: usize = REQ_CONS + 4;
const RSP_CONS: usize = REQ_CONS + 8;
const RSP_PROD: usize = REQ_CONS + 12;
const HEADER: usize = core::mem::size_of::<XsdSockmsg>();
const RING: u32 = XENSTORE_RING_SIZE as u32;

/// Why a xenstore request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored answered with this error (`XS_ERROR`), e.g. `ENOENT` for a
    /// missing node, `EACCES` for a permission failure, `EAGAIN` for a
    /// transaction that must be retried.
    Errno(Errno),
    /// The request is larger than `XENSTORE_PAYLOAD_MAX`.
    TooLong,
    /// xenstored broke the protocol (bad ring index, oversized or malformed
    /// message). The connection is unusable.
    Protocol(&'static str),
    /// The event channel failed.
    Event(hal::EventError),
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Errno(e) => write!(f, "xenstore: {e}"),
            XsError::TooLong => f.write_str("xenstore: request too long"),
            XsError::Protocol(why) => write!(f, "xenstore protocol error: {why}"),
            XsError::Event(e) => write!(f, "xenstore event channel: {e}"),
        }
    }
}

impl core::error::Error for XsError {}

impl XsError {
    /// Whether this is xenstored's `ENOENT` (no such node).
    pub fn is_enoent(&self) -> bool {
        *self == XsError::Errno(Errno::ENOENT)
    }
}

/// A transaction id; [`TxId::NONE`] for requests outside a transaction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// One access right in a node's permission list.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PermAccess {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

/// One entry of a node's permission list: the first names the owner and the
/// access of everyone not listed; later ones grant access to one domain.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub access: PermAccess,
}

impl Perm {
    /// Parse the wire form, e.g. `b0`, `r5`.
    pub fn parse(s: &str) -> Option<Perm> {
        let mut chars = s.chars();
        let access = match chars.next()? {
            'n' => PermAccess::None,
            'r' => PermAccess::Read,
            'w' => PermAccess::Write,
            'b' => PermAccess::Both,
            _ => return None,
        };
        let rest = chars.as_str();
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let domid: u16 = rest.parse().ok()?;
        Some(Perm {
            domid: DomId(domid),
            access,
        })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.access {
            PermAccess::None => 'n',
            PermAccess::Read => 'r',
            PermAccess::Write => 'w',
            PermAccess::Both => 'b',
        };
        write!(f, "{c}{}", self.domid.0)
    }
}

/// A watch firing: `path` changed (or a node under it); `token` is what the
/// watch was registered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed.
    pub path: String,
    /// The watch's token.
    pub token: String,
}

#[derive(Default)]
struct State {
    next_req_id: u32,
    rx: Vec<u8>,
    replies: Vec<(u32, u32, Vec<u8>)>,
    watch_events: VecDeque<WatchEvent>,
    waiters: Vec<Waker>,
    writer_busy: bool,
    broken: Option<XsError>,
}

struct Inner<H: Hypervisor> {
    events: Events<H>,
    ring: H::Mem,
    port: EventPort,
    state: RefCell<State>,
}

/// A connection to xenstored. A cheap handle: clones share the connection.
///
/// Several requests may be in flight from different futures; replies are
/// matched by id. Wake-ups go through the xenstore port's single waker (see
/// [`hal::EventChannel::register_waker`]), which is exact for this crate's
/// one-task-per-guest executor.
pub struct XenStore<H: Hypervisor> {
    inner: Rc<Inner<H>>,
}

impl<H: Hypervisor> Clone for XenStore<H> {
    fn clone(&self) -> Self {
        XenStore {
            inner: self.inner.clone(),
        }
    }
}

/// Largest number of watch events kept before the oldest are dropped; a
/// guest that never reads its watches must not grow without bound.
pub const MAX_QUEUED_WATCH_EVENTS: usize = 1024;

impl<H: Hypervisor> XenStore<H> {
    /// A connection over the mapped xenstore page `ring` and the bound event
    /// channel `port`.
    pub fn new(events: Events<H>, ring: H::Mem, port: EventPort) -> Self {
        XenStore {
            inner: Rc::new(Inner {
                events,
                ring,
                port,
                state: RefCell::new(State {
                    next_req_id: 1,
                    ..Default::default()
                }),
            }),
        }
    }

    /// The event channel.
    pub fn port(&self) -> EventPort {
        self.inner.port
    }

    fn fail(&self, e: XsError) -> XsError {
        let mut st = self.inner.state.borrow_mut();
        if st.broken.is_none() {
            st.broken = Some(e.clone());
        }
        for w in st.waiters.drain(..) {
            w.wake();
        }
        e
    }

    fn notify(&self) -> Result<(), XsError> {
        self.inner
            .events
            .notify(self.inner.port)
            .map_err(XsError::Event)
    }

    /// Read whatever xenstored produced; parse complete messages. Returns
    /// whether anything arrived.
    fn pump(&self) -> Result<bool, XsError> {
        if let Some(e) = &self.inner.state.borrow().broken {
            return Err(e.clone());
        }
        let ring = &self.inner.ring;
        let cons = ring.load_u32(RSP_CONS, Ordering::Relaxed);
        let prod = ring.load_u32(RSP_PROD, Ordering::Acquire);
        let avail = prod.wrapping_sub(cons);
        if avail > RING {
            return Err(self.fail(XsError::Protocol("reply ring index out of range")));
        }
        if avail == 0 {
            return Ok(false);
        }
        {
            let mut st = self.inner.state.borrow_mut();
            let start = st.rx.len();
            st.rx.resize(start + avail as usize, 0);
            let first = (RING - (cons % RING)).min(avail) as usize;
            ring.read(
                RSP + (cons % RING) as usize,
                &mut st.rx[start..start + first],
            );
            ring.read(RSP, &mut st.rx[start + first..]);
        }
        ring.store_u32(RSP_CONS, prod, Ordering::Release);
        ring.fence(Ordering::SeqCst);
        self.notify()?;
        self.parse()?;
        let mut st = self.inner.state.borrow_mut();
        for w in st.waiters.drain(..) {
            w.wake();
        }
        Ok(true)
    }

    fn parse(&self) -> Result<(), XsError> {
        loop {
            let mut st = self.inner.state.borrow_mut();
            if st.rx.len() < HEADER {
                return Ok(());
            }
            let hdr = XsdSockmsg::read_from_bytes(&st.rx[..HEADER])
                .map_err(|_| XsError::Protocol("header"))?;
            let len = hdr.len as usize;
            if len > XENSTORE_PAYLOAD_MAX {
                drop(st);
                return Err(self.fail(XsError::Protocol("reply longer than XENSTORE_PAYLOAD_MAX")));
            }
            if st.rx.len() < HEADER + len {
                return Ok(());
            }
            let payload: Vec<u8> = st.rx[HEADER..HEADER + len].to_vec();
            st.rx.drain(..HEADER + len);
            if hdr.type_ == xs::WATCH_EVENT {
                let mut parts = payload.split(|&b| b == 0);
                let path = parts.next().and_then(|p| core::str::from_utf8(p).ok());
                let token = parts.next().and_then(|p| core::str::from_utf8(p).ok());
                match (path, token) {
                    (Some(path), Some(token)) => {
                        if st.watch_events.len() >= MAX_QUEUED_WATCH_EVENTS {
                            st.watch_events.pop_front();
                        }
                        st.watch_events.push_back(WatchEvent {
                            path: path.into(),
                            token: token.into(),
                        });
                    }
                    _ => {
                        drop(st);
                        return Err(self.fail(XsError::Protocol("malformed watch event")));
                    }
                }
            } else {
                st.replies.push((hdr.req_id, hdr.type_, payload));
            }
        }
    }

    /// Put as much of `bytes` in the request ring as fits; returns how much.
    fn write_some(&self, bytes: &[u8]) -> Result<usize, XsError> {
        let ring = &self.inner.ring;
        let cons = ring.load_u32(REQ_CONS, Ordering::Acquire);
        let prod = ring.load_u32(REQ_PROD, Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > RING {
            return Err(self.fail(XsError::Protocol("request ring index out of range")));
        }
        let n = ((RING - used) as usize).min(bytes.len());
        let at = (prod % RING) as usize;
        let first = (XENSTORE_RING_SIZE - at).min(n);
        ring.write(REQ + at, &bytes[..first]);
        ring.write(REQ, &bytes[first..n]);
        ring.store_u32(REQ_PROD, prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    fn park(&self, waker: &Waker) {
        let mut st = self.inner.state.borrow_mut();
        if !st.waiters.iter().any(|w| w.will_wake(waker)) {
            st.waiters.push(waker.clone());
        }
        drop(st);
        self.inner.events.register_waker(self.inner.port, waker);
    }

    /// Send one request and wait for its reply. `payload` parts are sent
    /// back to back.
    ///
    /// Errors: [`XsError::TooLong`]; [`XsError::Errno`] from an `XS_ERROR`
    /// reply; [`XsError::Protocol`]; [`XsError::Event`].
    pub async fn request(
        &self,
        type_: u32,
        tx: TxId,
        payload: &[&[u8]],
    ) -> Result<Vec<u8>, XsError> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooLong);
        }
        // Take the writer role: messages must not interleave in the ring.
        poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if let Some(e) = &st.broken {
                return Poll::Ready(Err(e.clone()));
            }
            if st.writer_busy {
                if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    st.waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            st.writer_busy = true;
            Poll::Ready(Ok(()))
        })
        .await?;
        let req_id = {
            let mut st = self.inner.state.borrow_mut();
            let id = st.next_req_id;
            st.next_req_id = id.wrapping_add(1).max(1);
            id
        };
        let mut msg = Vec::with_capacity(HEADER + len);
        msg.extend_from_slice(
            XsdSockmsg {
                type_,
                req_id,
                tx_id: tx.0,
                len: len as u32,
            }
            .as_bytes(),
        );
        for p in payload {
            msg.extend_from_slice(p);
        }
        let mut guard = WriterGuard {
            xs: self,
            sent: 0,
            total: msg.len(),
        };
        let written = poll_fn(|cx| {
            loop {
                let sent = guard.sent;
                let n = match self.write_some(&msg[sent..]) {
                    Ok(n) => n,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                guard.sent += n;
                if n > 0
                    && let Err(e) = self.notify()
                {
                    return Poll::Ready(Err(e));
                }
                if guard.sent == msg.len() {
                    return Poll::Ready(Ok(()));
                }
                if n == 0 {
                    // Ring full: wait for xenstored to consume. Replies may
                    // be what it waits on us to read.
                    if let Err(e) = self.pump() {
                        return Poll::Ready(Err(e));
                    }
                    self.park(cx.waker());
                    // Re-check after registering, to not miss a wake-up.
                    let ring = &self.inner.ring;
                    let used = ring
                        .load_u32(REQ_PROD, Ordering::Relaxed)
                        .wrapping_sub(ring.load_u32(REQ_CONS, Ordering::Acquire));
                    if used >= RING {
                        return Poll::Pending;
                    }
                }
            }
        })
        .await;
        drop(guard);
        written?;
        let (type_, payload) = poll_fn(|cx| {
            if let Err(e) = self.pump() {
                return Poll::Ready(Err(e));
            }
            let mut st = self.inner.state.borrow_mut();
            if let Some(i) = st.replies.iter().position(|r| r.0 == req_id) {
                let (_, t, p) = st.replies.swap_remove(i);
                return Poll::Ready(Ok((t, p)));
            }
            drop(st);
            self.park(cx.waker());
            // Anything that landed between the pump and the park?
            match self.pump() {
                Ok(true) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Ok(false) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await?;
        if type_ == xs::ERROR {
            let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
            let name = core::str::from_utf8(name).map_err(|_| XsError::Protocol("error reply"))?;
            return Err(XsError::Errno(
                Errno::from_name(name).unwrap_or(Errno::EINVAL),
            ));
        }
        Ok(payload)
    }

    /// Read the value of `path`.
    ///
    /// Errors: as [`request`](Self::request); `ENOENT` if the node does not
    /// exist, `EACCES` without read permission.
    pub async fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(xs::READ, tx, &[path.as_bytes(), b"\0"]).await
    }

    /// Read the value of `path` as UTF-8 text.
    ///
    /// Errors: as [`read`](Self::read); [`XsError::Protocol`] if not UTF-8.
    pub async fn read_string(&self, tx: TxId, path: &str) -> Result<String, XsError> {
        let v = self.read(tx, path).await?;
        String::from_utf8(v).map_err(|_| XsError::Protocol("value is not UTF-8"))
    }

    /// Read the value of `path` as a decimal integer.
    ///
    /// Errors: as [`read`](Self::read); `EINVAL` if it is not a number.
    pub async fn read_u64(&self, tx: TxId, path: &str) -> Result<u64, XsError> {
        let s = self.read_string(tx, path).await?;
        s.trim().parse().map_err(|_| XsError::Errno(Errno::EINVAL))
    }

    /// Write `value` to `path`, creating it (and missing parents).
    ///
    /// Errors: as [`request`](Self::request); `EACCES` without write
    /// permission.
    pub async fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.request(xs::WRITE, tx, &[path.as_bytes(), b"\0", value])
            .await
            .map(drop)
    }

    /// Create `path` with an empty value if it does not exist.
    ///
    /// Errors: as [`write`](Self::write).
    pub async fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.request(xs::MKDIR, tx, &[path.as_bytes(), b"\0"])
            .await
            .map(drop)
    }

    /// Remove `path` and everything under it.
    ///
    /// Errors: as [`write`](Self::write); `ENOENT` if neither it nor its
    /// parent exists.
    pub async fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.request(xs::RM, tx, &[path.as_bytes(), b"\0"])
            .await
            .map(drop)
    }

    /// The names of the children of `path`.
    ///
    /// Errors: as [`read`](Self::read).
    pub async fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        let v = self
            .request(xs::DIRECTORY, tx, &[path.as_bytes(), b"\0"])
            .await?;
        split_strings(&v)
    }

    /// The permissions of `path`.
    ///
    /// Errors: as [`read`](Self::read); [`XsError::Protocol`] if malformed.
    pub async fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, XsError> {
        let v = self
            .request(xs::GET_PERMS, tx, &[path.as_bytes(), b"\0"])
            .await?;
        split_strings(&v)?
            .iter()
            .map(|s| Perm::parse(s).ok_or(XsError::Protocol("bad permission")))
            .collect()
    }

    /// Set the permissions of `path`: `perms[0]` is the owner and the default
    /// access.
    ///
    /// Errors: as [`write`](Self::write); `EACCES` unless we own the node;
    /// `EPERM` if an unprivileged owner tries to give the node away.
    pub async fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        let mut buf = Vec::new();
        buf.extend_from_slice(path.as_bytes());
        buf.push(0);
        for p in perms {
            use core::fmt::Write;
            let mut s = String::new();
            let _ = write!(s, "{p}");
            buf.extend_from_slice(s.as_bytes());
            buf.push(0);
        }
        self.request(xs::SET_PERMS, tx, &[&buf]).await.map(drop)
    }

    /// Watch `path` (and everything under it); events carry `token`.
    /// xenstored fires the watch once right away.
    ///
    /// Errors: as [`request`](Self::request); `EEXIST` if the same path and
    /// token are already watched.
    pub async fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.request(
            xs::WATCH,
            TxId::NONE,
            &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
        )
        .await
        .map(drop)
    }

    /// Remove a watch.
    ///
    /// Errors: as [`request`](Self::request); `ENOENT` if not watched.
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.request(
            xs::UNWATCH,
            TxId::NONE,
            &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"],
        )
        .await
        .map(drop)
    }

    /// Start a transaction.
    ///
    /// Errors: as [`request`](Self::request).
    pub async fn transaction_start(&self) -> Result<TxId, XsError> {
        let v = self
            .request(xs::TRANSACTION_START, TxId::NONE, &[b"\0"])
            .await?;
        let s = split_strings(&v)?;
        s.first()
            .and_then(|s| s.parse().ok())
            .map(TxId)
            .ok_or(XsError::Protocol("bad transaction id"))
    }

    /// End a transaction, committing it if `commit`.
    ///
    /// Errors: as [`request`](Self::request); `EAGAIN` if a conflicting change
    /// was committed meanwhile (nothing was applied: retry the transaction).
    pub async fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request(xs::TRANSACTION_END, tx, &[arg])
            .await
            .map(drop)
    }

    /// Our domain's home path, e.g. `/local/domain/5`.
    ///
    /// Errors: as [`request`](Self::request).
    pub async fn domain_path(&self, domid: DomId) -> Result<String, XsError> {
        use core::fmt::Write;
        let mut s = String::new();
        let _ = write!(s, "{}", domid.0);
        let v = self
            .request(xs::GET_DOMAIN_PATH, TxId::NONE, &[s.as_bytes(), b"\0"])
            .await?;
        split_strings(&v)?
            .into_iter()
            .next()
            .ok_or(XsError::Protocol("empty domain path"))
    }

    /// Take the oldest queued watch event with `token`, if any, without
    /// waiting. Events with other tokens stay queued for their owners.
    ///
    /// Errors: [`XsError::Protocol`] if the connection is broken.
    pub fn try_watch_event_for(&self, token: &str) -> Result<Option<WatchEvent>, XsError> {
        self.pump()?;
        let mut st = self.inner.state.borrow_mut();
        let pos = st.watch_events.iter().position(|e| e.token == token);
        Ok(pos.and_then(|i| st.watch_events.remove(i)))
    }

    /// Wait for the next watch event with `token` (see
    /// [`try_watch_event_for`](Self::try_watch_event_for)).
    ///
    /// Errors: [`XsError::Protocol`] if the connection breaks.
    pub async fn next_watch_event_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        poll_fn(|cx| {
            match self.try_watch_event_for(token) {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Some(ev)) => return Poll::Ready(Ok(ev)),
                Ok(None) => {}
            }
            self.park(cx.waker());
            match self.try_watch_event_for(token) {
                Err(e) => Poll::Ready(Err(e)),
                Ok(Some(ev)) => Poll::Ready(Ok(ev)),
                Ok(None) => Poll::Pending,
            }
        })
        .await
    }

    /// Take a queued watch event, if any, without waiting.
    ///
    /// Errors: [`XsError::Protocol`] if the connection is broken.
    pub fn try_watch_event(&self) -> Result<Option<WatchEvent>, XsError> {
        self.pump()?;
        Ok(self.inner.state.borrow_mut().watch_events.pop_front())
    }

    /// Wait for the next watch event.
    ///
    /// Errors: [`XsError::Protocol`] if the connection breaks.
    pub async fn next_watch_event(&self) -> Result<WatchEvent, XsError> {
        poll_fn(|cx| {
            if let Err(e) = self.pump() {
                return Poll::Ready(Err(e));
            }
            if let Some(ev) = self.inner.state.borrow_mut().watch_events.pop_front() {
                return Poll::Ready(Ok(ev));
            }
            self.park(cx.waker());
            match self.pump() {
                Ok(true) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Ok(false) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }
}

/// Holds the request ring's writer role; gives it back when dropped, and
/// marks the connection broken if a message was cut off half-written (the
/// request future was dropped mid-write), since xenstored would then read
/// garbage.
struct WriterGuard<'a, H: Hypervisor> {
    xs: &'a XenStore<H>,
    sent: usize,
    total: usize,
}

impl<H: Hypervisor> Drop for WriterGuard<'_, H> {
    fn drop(&mut self) {
        let mut st = self.xs.inner.state.borrow_mut();
        st.writer_busy = false;
        if self.sent > 0 && self.sent < self.total && st.broken.is_none() {
            st.broken = Some(XsError::Protocol("request abandoned half-written"));
        }
        for w in st.waiters.drain(..) {
            w.wake();
        }
    }
}

/// Split a payload of NUL-terminated strings.
fn split_strings(v: &[u8]) -> Result<Vec<String>, XsError> {
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    if v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(|&b| b == 0)
        .map(|s| {
            core::str::from_utf8(s)
                .map(String::from)
                .map_err(|_| XsError::Protocol("not UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_parse_and_print() {
        let p = Perm::parse("b12").unwrap();
        assert_eq!(p.domid, DomId(12));
        assert_eq!(p.access, PermAccess::Both);
        assert_eq!(std::format!("{p}"), "b12");
        assert!(Perm::parse("x1").is_none());
        assert!(Perm::parse("r").is_none());
        assert!(Perm::parse("r-1").is_none());
    }

    #[test]
    fn split() {
        assert_eq!(split_strings(b"a\0bc\0").unwrap(), ["a", "bc"]);
        assert!(split_strings(b"").unwrap().is_empty());
    }
}
