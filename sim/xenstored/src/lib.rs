//! # xenpal-xenstored
//!
//! The simulator's xenstored: Xen's xenstore wire protocol
//! (`io/xs_wire.h`, docs/misc/xenstore.txt) served over each domain's ring
//! page, with the semantics of Xen's C xenstored (Xen 4.21,
//! `tools/xenstored/`): the same permission rules, the same error for each
//! bad request, the same quotas, transactions that conflict the way Xen's
//! do, and watches that fire for the same changes.
//!
//! The simulator attaches a domain's ring page with
//! [`Xenstored::introduce`], calls [`Xenstored::serve`] when the domain
//! notifies its store port, and notifies the domains that
//! [`Xenstored::take_notifications`] names. The toolstack (dom0 in the
//! simulator) and tests talk to it without a ring, through
//! [`Xenstored::request`].
//!
//! Built to scale: tree lookups are map lookups by path, a change is
//! matched only against the watches on its path and its ancestors (and,
//! for a removal, on the removed nodes), and quotas are counted as nodes
//! come and go. Nothing depends on hash-map iteration order.
//!
//! Departures from Xen are listed in [`Xenstored`]'s documentation.

#![forbid(unsafe_code)]

mod ops;
mod path;
mod ring;
mod store;
mod tx;
mod watch;

use crate::ops::{Caller, Fire, OK, View, onearg, strings};
use crate::ring::Ring;
use crate::store::{Children, Node, PERM_READ, Perm, Store};
use crate::tx::Tx;
use crate::watch::Watches;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use xenpal_hal::mem::SharedMemory;
use xenpal_xen_pv::abi::Errno;
use xenpal_xen_pv::abi::io::{XENSTORE_ERROR_PROTO, XENSTORE_PAYLOAD_MAX, XsdSockmsg, xs};
use zerocopy::{FromBytes, IntoBytes};

pub use xenpal_hal::DomId;

/// Size of a message header on the wire.
const HEADER: usize = core::mem::size_of::<XsdSockmsg>();

/// `DOMID_SELF`, which `IS_DOMAIN_INTRODUCED` always answers `T` for.
const DOMID_SELF: u32 = DomId::SELF.0 as u32;

/// The special nodes watches on `@introduceDomain` / `@releaseDomain` see.
const SPECIAL_NODES: [&str; 2] = ["@introduceDomain", "@releaseDomain"];

/// Limits. The `quota_*` fields are Xen's per-domain quotas, with Xen's
/// defaults (`tools/xenstored/domain.c`); like Xen, they apply to
/// unprivileged domains only, and are compared the way Xen compares them
/// (noted on each field).
#[derive(Clone, Debug)]
pub struct Config {
    /// Nodes a domain may own (Xen `-E`, default 1000). Creating a node
    /// fails with `ENOSPC` once the creator owns this many.
    pub quota_nodes_per_domain: usize,
    /// Watches per domain (Xen `-W`, default 128). `WATCH` fails with
    /// `E2BIG` once the domain has *more* than this many (Xen's check), so
    /// up to quota + 1 can be set.
    pub quota_watches_per_domain: usize,
    /// Open transactions per domain (Xen `-t`, default 10).
    /// `TRANSACTION_START` fails with `ENOSPC` once *more* than this many
    /// are open (Xen's check), so up to quota + 1 can be open.
    pub quota_transactions_per_domain: usize,
    /// Largest node (Xen `-S`, default 2048 bytes), counted as Xen counts:
    /// 16 + 8 per permission + value + child names with their NULs. A
    /// larger write fails with `ENOSPC`.
    pub quota_node_size: usize,
    /// Permission entries per node (Xen `-A`, default 5); more: `ENOSPC`.
    pub quota_perms_per_node: usize,
    /// Longest path below `/local/domain/<id>/` (Xen `-M`, default
    /// `XENSTORE_REL_PATH_MAX` = 2048); longer: `EINVAL`.
    pub quota_path_max: usize,
    /// Nodes one transaction may touch (Xen `-Q transaction-nodes`,
    /// default 1024); more: `ENOSPC`, and the commit then fails.
    pub quota_transaction_nodes: usize,
    /// Replies waiting for ring space before xenstored stops reading a
    /// domain's requests (Xen `-Q outstanding`, default 20).
    pub quota_outstanding_requests: usize,
    /// Watch events queued for one unprivileged domain before further ones
    /// are dropped. Xen bounds this with its per-domain memory quota
    /// (2.5 MB) and a 20 s event timeout instead; the simulator has no
    /// clock here, so it counts events.
    pub max_queued_watch_events: usize,
    /// Requests [`Xenstored::serve`] executes per call at most (a full
    /// ring holds 64 messages at most).
    pub max_requests_per_serve: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            quota_nodes_per_domain: 1000,
            quota_watches_per_domain: 128,
            quota_transactions_per_domain: 10,
            quota_node_size: 2048,
            quota_perms_per_node: 5,
            quota_path_max: xenpal_xen_pv::abi::io::XENSTORE_REL_PATH_MAX,
            quota_transaction_nodes: 1024,
            quota_outstanding_requests: 20,
            max_queued_watch_events: 4096,
            max_requests_per_serve: 64,
        }
    }
}

/// The reply to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's type, or `xs::ERROR`.
    pub type_: u32,
    /// The payload: `OK\0` for acknowledgements, the error's name and a NUL
    /// (`ENOENT\0`) for errors, else the type's reply format.
    pub payload: Vec<u8>,
}

impl Reply {
    /// The error, for an `xs::ERROR` reply.
    pub fn errno(&self) -> Option<Errno> {
        if self.type_ != xs::ERROR {
            return None;
        }
        let name = self.payload.split(|&b| b == 0).next()?;
        Errno::from_name(core::str::from_utf8(name).ok()?)
    }
}

/// One message waiting to be written to a ring (or taken by
/// [`Xenstored::take_watch_events`]).
struct OutMsg {
    /// Header and payload.
    bytes: Vec<u8>,
    /// Bytes already in the ring.
    sent: usize,
    event: bool,
}

/// A domain's connection.
#[derive(Default)]
struct Conn {
    /// Introduced (by [`Xenstored::introduce`] or `INTRODUCE`).
    introduced: bool,
    ring: Option<Ring>,
    /// Why the ring stopped being served (`XENSTORE_ERROR_*`).
    broken: Option<u32>,
    /// `SET_TARGET`.
    target: Option<u16>,
    transactions: BTreeMap<u32, Tx>,
    next_tx_id: u32,
    watch_count: usize,
    out: VecDeque<OutMsg>,
    replies_queued: usize,
    events_queued: usize,
    /// Payloads of queued events, to drop duplicates as Xen does.
    pending_events: BTreeMap<Vec<u8>, usize>,
    /// A request being received.
    input: Vec<u8>,
}

impl Conn {
    fn push(&mut self, type_: u32, req_id: u32, tx_id: u32, payload: &[u8], event: bool) {
        let hdr = XsdSockmsg {
            type_,
            req_id,
            tx_id,
            len: payload.len() as u32,
        };
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(hdr.as_bytes());
        bytes.extend_from_slice(payload);
        if event {
            self.events_queued += 1;
            *self.pending_events.entry(payload.to_vec()).or_insert(0) += 1;
        } else {
            self.replies_queued += 1;
        }
        self.out.push_back(OutMsg {
            bytes,
            sent: 0,
            event,
        });
    }

    fn pop_front(&mut self) -> Option<OutMsg> {
        let m = self.out.pop_front()?;
        if m.event {
            self.events_queued -= 1;
            let key = &m.bytes[HEADER..];
            if let Some(n) = self.pending_events.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.pending_events.remove(key);
                }
            }
        } else {
            self.replies_queued -= 1;
        }
        Some(m)
    }

    /// Forget transactions, queued output and partial input (Xen's
    /// `domain_conn_reset()` / `ignore_connection()`; watches are the
    /// caller's business).
    fn reset(&mut self) {
        self.transactions.clear();
        self.watch_count = 0;
        self.out.clear();
        self.replies_queued = 0;
        self.events_queued = 0;
        self.pending_events.clear();
        self.input.clear();
    }

    /// Receive from the ring: whether anything was consumed, and a complete
    /// request if there is one, or the `XENSTORE_ERROR_*` that breaks the
    /// connection.
    fn receive(&mut self) -> (bool, Received) {
        let Some(ring) = &self.ring else {
            return (false, Ok(None));
        };
        let mut consumed = false;
        let mut chunk = [0u8; xenpal_xen_pv::abi::io::XENSTORE_RING_SIZE];
        loop {
            let want = match header(&self.input) {
                None => HEADER - self.input.len(),
                Some(h) => HEADER + h.len as usize - self.input.len(),
            };
            if want == 0 {
                let h = header(&self.input).unwrap_or_default();
                let payload = self.input.split_off(HEADER);
                self.input.clear();
                return (consumed, Ok(Some((h, payload))));
            }
            let n = match ring
                .read(&mut chunk[..want.min(xenpal_xen_pv::abi::io::XENSTORE_RING_SIZE)])
            {
                Ok(n) => n,
                Err(code) => return (consumed, Err(code)),
            };
            if n == 0 {
                return (consumed, Ok(None));
            }
            consumed = true;
            self.input.extend_from_slice(&chunk[..n]);
            if let Some(h) = header(&self.input)
                && h.len as usize > XENSTORE_PAYLOAD_MAX
            {
                return (consumed, Err(XENSTORE_ERROR_PROTO));
            }
        }
    }
}

/// What [`Conn::receive`] got: a complete request (header and payload), or
/// nothing yet, or the `XENSTORE_ERROR_*` that breaks the connection.
type Received = Result<Option<(XsdSockmsg, Vec<u8>)>, u32>;

/// The header at the start of `input`, once it is complete.
fn header(input: &[u8]) -> Option<XsdSockmsg> {
    XsdSockmsg::read_from_bytes(input.get(..HEADER)?).ok()
}

/// xenstored: the store, the watches, and a connection per domain.
///
/// Domain 0 is privileged: it bypasses permission checks and quotas and may
/// `INTRODUCE`, `RELEASE`, `RESUME`, `SET_TARGET` and ask
/// `IS_DOMAIN_INTRODUCED`. Other domains get `EACCES` for those.
///
/// # Departures from Xen's xenstored
/// - The initial tree is `/`, `/local`, `/local/domain` and `/tool`, all
///   owned by dom0 with no access for others (`n0`), plus the special nodes
///   `@introduceDomain` and `@releaseDomain` (`n0`). Xen creates
///   `/tool/xenstored` instead of the `/local` pair (the toolstack makes
///   those).
/// - [`release`](Self::release) (and `RELEASE`) keep the domain's nodes;
///   Xen deletes the nodes the domain owns. The toolstack removes them.
/// - `INTRODUCE` cannot map a page: it marks the domain introduced (firing
///   `@introduceDomain`), and the ring comes from
///   [`introduce`](Self::introduce).
/// - Permission entries naming domains that do not exist are kept (Xen
///   marks them ignored), as the simulator's xenstored does not know which
///   domains exist.
/// - `CONTROL`, `GET_FEATURE`/`SET_FEATURE`, `GET_QUOTA`/`SET_QUOTA` and
///   watch depths are not implemented (`ENOSYS`; Xen 4.21 answers dom0 and
///   refuses others with `EACCES`). Ring reconnection is not offered; the
///   error indicator is (`server_features` = `XENSTORE_SERVER_FEATURE_ERROR`).
/// - Watch events are not timed out (Xen drops them after 20 s); queued
///   events are bounded by [`Config::max_queued_watch_events`].
/// - No per-domain memory quota and no write rate limiting.
pub struct Xenstored {
    cfg: Config,
    store: Store,
    /// Nodes owned per domain.
    counts: BTreeMap<u32, usize>,
    watches: Watches,
    conns: BTreeMap<u16, Conn>,
    /// Domains to notify.
    notify: BTreeSet<u16>,
    /// Connections with new output for their ring.
    dirty: BTreeSet<u16>,
    /// A `WATCH`'s first event, queued after its reply.
    deferred: Option<(u16, String, Vec<u8>)>,
}

impl Xenstored {
    /// A xenstored with the initial tree.
    pub fn new(config: Config) -> Self {
        let mut xs = Xenstored {
            cfg: config,
            store: Store::default(),
            counts: BTreeMap::new(),
            watches: Watches::default(),
            conns: BTreeMap::new(),
            notify: BTreeSet::new(),
            dirty: BTreeSet::new(),
            deferred: None,
        };
        for p in ["/", "/local", "/local/domain", "/tool"]
            .into_iter()
            .chain(SPECIAL_NODES)
        {
            xs.add_initial_node(p);
        }
        xs
    }

    fn add_initial_node(&mut self, p: &str) {
        let key = self.store.next_key();
        let generation = self.store.next_generation();
        self.store.insert(
            p,
            Arc::new(Node {
                data: Vec::new(),
                perms: vec![Perm { id: 0, access: 0 }],
                children: Children::default(),
                generation,
                key,
            }),
        );
        *self.counts.entry(0).or_insert(0) += 1;
        if p.starts_with('/')
            && p != "/"
            && let Some(parent) = self.store.get_mut(path::parent(p))
        {
            Arc::make_mut(parent)
                .children
                .insert(key, path::basename(p));
        }
    }

    /// Attach domain `domid`'s xenstore ring page (at least the 2076 bytes
    /// of `xenstore_domain_interface`; panics if shorter) and mark the
    /// domain introduced. As Xen's `INTRODUCE`: the connection is reset
    /// (watches, transactions, queued output dropped; ring indices zeroed),
    /// `server_features` is set, and `@introduceDomain` watches fire if the
    /// domain was not introduced before.
    pub fn introduce(&mut self, domid: DomId, ring: Box<dyn SharedMemory + Send>) {
        self.introduce_conn(domid.0, Some(Ring::new(ring)));
        self.flush_dirty();
    }

    /// Domain `domid` is gone: drop its connection, watches, transactions
    /// and queued output, and fire `@releaseDomain` watches if it had been
    /// introduced. Its nodes stay (the toolstack removes them).
    pub fn release(&mut self, domid: DomId) {
        self.release_conn(domid.0);
        self.flush_dirty();
    }

    /// Serve the ring of `domid` (called when it notifies its store port):
    /// write queued output as space allows, consume complete requests,
    /// execute them and queue their replies, and write again. At most
    /// [`Config::max_requests_per_serve`] requests per call; none while an
    /// unprivileged domain has [`Config::quota_outstanding_requests`]
    /// replies waiting for ring space (it notifies again when it consumes
    /// them). A ring with bad indices or a message longer than
    /// `XENSTORE_PAYLOAD_MAX` breaks the connection: its `error` field is
    /// set and it is not served again until re-introduced.
    pub fn serve(&mut self, domid: DomId) {
        let id = domid.0;
        self.flush(id);
        for _ in 0..self.cfg.max_requests_per_serve {
            let outstanding = self.cfg.quota_outstanding_requests;
            let Some(conn) = self.conns.get_mut(&id) else {
                break;
            };
            if conn.broken.is_some() || (id != 0 && conn.replies_queued >= outstanding) {
                break;
            }
            let (consumed, received) = conn.receive();
            if consumed {
                self.notify.insert(id);
            }
            let (hdr, payload) = match received {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(code) => {
                    self.break_conn(id, code);
                    break;
                }
            };
            let (type_, reply) = self.execute(id, hdr.type_, hdr.tx_id, &payload);
            if let Some(conn) = self.conns.get_mut(&id)
                && conn.broken.is_none()
            {
                conn.push(type_, hdr.req_id, hdr.tx_id, &reply, false);
                self.dirty.insert(id);
            }
            self.queue_deferred();
            self.flush_dirty();
        }
        self.flush(id);
        self.flush_dirty();
    }

    /// Execute one request as `domid` without a ring (the toolstack,
    /// tests). Watch events it causes are queued to their connections
    /// (written to rings at once as space allows).
    pub fn request(&mut self, domid: DomId, type_: u32, tx_id: u32, payload: &[u8]) -> Reply {
        let (type_, payload) = self.execute(domid.0, type_, tx_id, payload);
        self.queue_deferred();
        self.flush_dirty();
        Reply { type_, payload }
    }

    /// Domains whose ring received output (or had input consumed) since the
    /// last call, which must therefore be notified; sorted, and the set is
    /// drained.
    pub fn take_notifications(&mut self) -> Vec<DomId> {
        std::mem::take(&mut self.notify)
            .into_iter()
            .map(DomId)
            .collect()
    }

    /// Watch events queued for a domain with no ring (e.g. dom0 used via
    /// [`request`](Self::request)), drained, oldest first, as
    /// `(path, token)` (bytes that are not UTF-8 are replaced). Empty for a
    /// domain with a ring: its events go to the ring.
    pub fn take_watch_events(&mut self, domid: DomId) -> Vec<(String, String)> {
        let Some(conn) = self.conns.get_mut(&domid.0) else {
            return Vec::new();
        };
        if conn.ring.is_some() {
            return Vec::new();
        }
        let mut events = Vec::new();
        while let Some(m) = conn.pop_front() {
            if !m.event {
                continue;
            }
            let mut parts = m.bytes[HEADER..].split(|&b| b == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            events.push((path, token));
        }
        events
    }

    /// Number of nodes in the tree under `/` (the special `@...` nodes are
    /// not counted).
    pub fn node_count(&self) -> usize {
        self.store.len() - SPECIAL_NODES.len()
    }

    /// Whether `domid` is introduced (dom0 always is).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        domid.0 == 0 || self.conns.get(&domid.0).is_some_and(|c| c.introduced)
    }

    /// Why `domid`'s ring is no longer served, as the `XENSTORE_ERROR_*`
    /// value also written to the page's `error` field; `None` if it is.
    pub fn connection_error(&self, domid: DomId) -> Option<u32> {
        self.conns.get(&domid.0).and_then(|c| c.broken)
    }

    // -----------------------------------------------------------------
    // Connections

    fn introduce_conn(&mut self, id: u16, ring: Option<Ring>) {
        let conn = self.conns.entry(id).or_default();
        let was_introduced = conn.introduced || id == 0;
        if let Some(ring) = ring {
            conn.ring = Some(ring);
            conn.broken = None;
        }
        conn.reset();
        conn.introduced = true;
        if let Some(ring) = &conn.ring {
            ring.reset();
        }
        self.watches.remove_all(id);
        self.dirty.remove(&id);
        if !was_introduced {
            self.fire_special("@introduceDomain");
        }
    }

    fn release_conn(&mut self, id: u16) {
        // Watches first, so the domain sees no events of its own release.
        self.watches.remove_all(id);
        self.dirty.remove(&id);
        self.notify.remove(&id);
        if let Some(conn) = self.conns.remove(&id)
            && conn.introduced
            && id != 0
        {
            self.fire_special("@releaseDomain");
        }
    }

    /// Stop serving a hostile ring (Xen's `ignore_connection()`).
    fn break_conn(&mut self, id: u16, code: u32) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.broken = Some(code);
            conn.reset();
            if let Some(ring) = &conn.ring {
                ring.set_error(code);
            }
        }
        self.watches.remove_all(id);
        self.dirty.remove(&id);
    }

    /// Write `id`'s queued output into its ring as space allows.
    fn flush(&mut self, id: u16) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.broken.is_some() {
            return;
        }
        let mut wrote = false;
        let mut error = None;
        // Out of the connection for the loop, which pops from it.
        let ring = conn.ring.take();
        if let Some(ring) = &ring {
            while let Some(front) = conn.out.front_mut() {
                match ring.write(&front.bytes[front.sent..]) {
                    Err(code) => {
                        error = Some(code);
                        break;
                    }
                    Ok(0) => break,
                    Ok(n) => {
                        wrote = true;
                        front.sent += n;
                        if front.sent == front.bytes.len() {
                            conn.pop_front();
                        }
                    }
                }
            }
        }
        conn.ring = ring;
        if wrote {
            self.notify.insert(id);
        }
        if let Some(code) = error {
            self.break_conn(id, code);
        }
    }

    fn flush_dirty(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            self.flush(id);
        }
    }

    fn queue_deferred(&mut self) {
        if let Some((owner, path, token)) = self.deferred.take() {
            self.queue_event(owner, &path, &token);
        }
    }

    /// Queue a watch event for `id` (Xen's `send_event()`): dropped if too
    /// long, or identical to one still queued (except special paths), or
    /// if the domain has too many queued.
    fn queue_event(&mut self, id: u16, path: &str, token: &[u8]) {
        let max = self.cfg.max_queued_watch_events;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.broken.is_some() {
            return;
        }
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        if payload.len() > XENSTORE_PAYLOAD_MAX
            || (!path.starts_with('@') && conn.pending_events.contains_key(&payload))
            || (id != 0 && conn.events_queued >= max)
        {
            return;
        }
        conn.push(xs::WATCH_EVENT, 0, 0, &payload, true);
        self.dirty.insert(id);
    }

    // -----------------------------------------------------------------
    // Watches

    fn caller(&self, id: u16) -> Caller {
        Caller {
            id,
            target: self.conns.get(&id).and_then(|c| c.target),
        }
    }

    /// Xen's `watch_permitted()`: the watcher may read the node (before or
    /// after the change) or its parent.
    fn watch_permitted(&self, watcher: u16, f: &Fire) -> bool {
        let c = self.caller(watcher);
        let readable =
            |p: &Option<Vec<Perm>>| p.as_deref().is_some_and(|p| c.perm(p) & PERM_READ != 0);
        readable(&f.old) || (f.node.is_some() && (readable(&f.node) || readable(&f.parent)))
    }

    fn fire_all(&mut self, fires: Vec<Fire>) {
        for f in &fires {
            self.fire_one(f);
        }
    }

    fn fire_one(&mut self, f: &Fire) {
        let mut ids: Vec<u64> = if f.exact {
            self.watches.on(&f.path).collect()
        } else {
            path::watch_candidates(&f.path)
                .flat_map(|p| self.watches.on(p))
                .collect()
        };
        if ids.is_empty() {
            return;
        }
        // Registration order, as Xen walks each connection's watch list.
        ids.sort_unstable();
        let mut permitted: BTreeMap<u16, bool> = BTreeMap::new();
        let mut events = Vec::new();
        for id in ids {
            let Some(w) = self.watches.get(id) else {
                continue;
            };
            let ok = *permitted
                .entry(w.owner)
                .or_insert_with(|| self.watch_permitted(w.owner, f));
            if ok {
                let path = f.path.get(w.prefix_len..).unwrap_or_default();
                events.push((w.owner, path.to_owned(), w.token.to_vec()));
            }
        }
        for (owner, path, token) in events {
            self.queue_event(owner, &path, &token);
        }
    }

    fn fire_special(&mut self, name: &str) {
        let f = Fire {
            path: name.to_owned(),
            exact: true,
            old: None,
            node: self.store.get(name).map(|n| n.perms.clone()),
            parent: self.store.get("/").map(|n| n.perms.clone()),
        };
        self.fire_one(&f);
    }

    // -----------------------------------------------------------------
    // Requests

    /// Execute a request; the reply's type and payload.
    fn execute(&mut self, id: u16, type_: u32, tx_id: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        self.deferred = None;
        let error = |e: Errno| {
            let mut p = e.name().as_bytes().to_vec();
            p.push(0);
            (xs::ERROR, p)
        };
        match self.dispatch(id, type_, tx_id, payload) {
            Ok(p) if p.len() > XENSTORE_PAYLOAD_MAX => error(Errno::E2BIG),
            Ok(p) => (type_, p),
            Err(e) => error(e),
        }
    }

    fn dispatch(&mut self, id: u16, type_: u32, tx_id: u32, p: &[u8]) -> Result<Vec<u8>, Errno> {
        use xs::*;
        let supported = matches!(
            type_,
            DIRECTORY
                | READ
                | GET_PERMS
                | WATCH
                | UNWATCH
                | TRANSACTION_START
                | TRANSACTION_END
                | INTRODUCE
                | RELEASE
                | GET_DOMAIN_PATH
                | WRITE
                | MKDIR
                | RM
                | SET_PERMS
                | IS_DOMAIN_INTRODUCED
                | RESUME
                | SET_TARGET
                | RESET_WATCHES
                | DIRECTORY_PART
        );
        if !supported {
            return Err(Errno::ENOSYS);
        }
        let privileged_only = matches!(
            type_,
            INTRODUCE | RELEASE | IS_DOMAIN_INTRODUCED | RESUME | SET_TARGET
        );
        if privileged_only && id != 0 {
            return Err(Errno::EACCES);
        }
        let conn = self.conns.entry(id).or_default();
        // WATCH and UNWATCH ignore the transaction id; others must name an
        // open transaction of this connection, or none.
        let mut tx = None;
        if !matches!(type_, WATCH | UNWATCH) && tx_id != 0 {
            tx = Some(conn.transactions.remove(&tx_id).ok_or(Errno::ENOENT)?);
        }
        let caller = self.caller(id);
        let result = match type_ {
            READ | DIRECTORY | DIRECTORY_PART | GET_PERMS | WRITE | MKDIR | RM | SET_PERMS => {
                self.node_op(type_, caller, tx.as_mut(), p)
            }
            WATCH => self.watch(id, p),
            UNWATCH => self.unwatch(id, p),
            RESET_WATCHES => {
                tx = None;
                self.reset_watches(id)
            }
            TRANSACTION_START if tx.is_some() => Err(Errno::EBUSY),
            TRANSACTION_START => self.transaction_start(id),
            TRANSACTION_END => self.transaction_end(caller, &mut tx, p),
            INTRODUCE => self.do_introduce(p),
            RELEASE => self.do_release(p),
            GET_DOMAIN_PATH => {
                let d = onearg(p).ok_or(Errno::EINVAL)?;
                Ok(format!("/local/domain/{}\0", path::atoi(d) as u32).into_bytes())
            }
            IS_DOMAIN_INTRODUCED => {
                let d = path::atoi(onearg(p).ok_or(Errno::EINVAL)?) as u32;
                let yes =
                    d == DOMID_SELF || u16::try_from(d).is_ok_and(|d| self.is_introduced(DomId(d)));
                Ok(if yes { b"T\0" } else { b"F\0" }.to_vec())
            }
            RESUME => self.onearg_domain(p).map(|_| OK.to_vec()),
            SET_TARGET => self.set_target(p),
            _ => Err(Errno::ENOSYS),
        };
        if let Some(t) = tx
            && let Some(conn) = self.conns.get_mut(&id)
        {
            conn.transactions.insert(t.id, t);
        }
        result
    }

    fn node_op(
        &mut self,
        type_: u32,
        caller: Caller,
        tx: Option<&mut Tx>,
        p: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let mut v = View {
            store: &mut self.store,
            counts: &mut self.counts,
            cfg: &self.cfg,
            caller,
            tx,
            fires: Vec::new(),
        };
        let result = match type_ {
            xs::READ => ops::read(&mut v, p),
            xs::DIRECTORY => ops::directory(&mut v, p),
            xs::DIRECTORY_PART => ops::directory_part(&mut v, p),
            xs::GET_PERMS => ops::get_perms(&mut v, p),
            xs::WRITE => ops::write(&mut v, p),
            xs::MKDIR => ops::mkdir(&mut v, p),
            xs::RM => ops::rm(&mut v, p),
            xs::SET_PERMS => ops::set_perms(&mut v, p),
            _ => Err(Errno::ENOSYS),
        };
        let fires = std::mem::take(&mut v.fires);
        self.fire_all(fires);
        result
    }

    /// `<path>|<token>|`: register a watch; it fires once right away.
    fn watch(&mut self, id: u16, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let args = strings(p);
        let [raw, token] = args[..] else {
            return Err(Errno::EINVAL);
        };
        let relative = !raw.starts_with(b"/") && !raw.starts_with(b"@");
        let watched = path::canonicalize(raw, id, id != 0, self.cfg.quota_path_max, true)?;
        if self.watches.contains(id, &watched, token) {
            return Err(Errno::EEXIST);
        }
        let quota = self.cfg.quota_watches_per_domain;
        let conn = self.conns.entry(id).or_default();
        if id != 0 && conn.watch_count > quota {
            return Err(Errno::E2BIG);
        }
        conn.watch_count += 1;
        let prefix_len = if relative {
            path::home(id).len() + 1
        } else {
            0
        };
        self.watches.add(id, &watched, token, prefix_len);
        let first = watched.get(prefix_len..).unwrap_or_default().to_owned();
        self.deferred = Some((id, first, token.to_vec()));
        Ok(OK.to_vec())
    }

    fn unwatch(&mut self, id: u16, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let args = strings(p);
        let [raw, token] = args[..] else {
            return Err(Errno::EINVAL);
        };
        let watched = path::canonicalize(raw, id, id != 0, self.cfg.quota_path_max, true)?;
        if !self.watches.remove(id, &watched, token) {
            return Err(Errno::ENOENT);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.watch_count = conn.watch_count.saturating_sub(1);
        }
        Ok(OK.to_vec())
    }

    fn reset_watches(&mut self, id: u16) -> Result<Vec<u8>, Errno> {
        self.watches.remove_all(id);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.watch_count = 0;
            conn.transactions.clear();
        }
        Ok(OK.to_vec())
    }

    fn transaction_start(&mut self, id: u16) -> Result<Vec<u8>, Errno> {
        let quota = self.cfg.quota_transactions_per_domain;
        self.store.next_generation();
        let conn = self.conns.entry(id).or_default();
        if id != 0 && conn.transactions.len() > quota {
            return Err(Errno::ENOSPC);
        }
        // Ids count up per connection, skipping 0 and ids in use.
        let tid = loop {
            let t = conn.next_tx_id;
            conn.next_tx_id = t.wrapping_add(1);
            if t != 0 && !conn.transactions.contains_key(&t) {
                break t;
            }
        };
        conn.transactions.insert(tid, Tx::new(tid));
        Ok(format!("{tid}\0").into_bytes())
    }

    fn transaction_end(
        &mut self,
        caller: Caller,
        tx: &mut Option<Tx>,
        p: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let commit = match onearg(p) {
            Some(b"T") => true,
            Some(b"F") => false,
            _ => return Err(Errno::EINVAL),
        };
        let t = tx.take().ok_or(Errno::ENOENT)?;
        if commit {
            self.commit(caller, t)?;
        }
        Ok(OK.to_vec())
    }

    /// Xen's `do_transaction_end()` for `T`: quota, then conflicts, then
    /// write back in first-touched order, firing watches as it goes.
    fn commit(&mut self, caller: Caller, mut t: Tx) -> Result<(), Errno> {
        if t.fail {
            return Err(Errno::ENOMEM);
        }
        // Xen's acc_fix_domains(): each changed owner's resulting count.
        let check_quota = t.node_created && !caller.privileged();
        let quota = self.cfg.quota_nodes_per_domain as i64;
        for (&d, &delta) in &t.deltas {
            if d == 0 {
                continue;
            }
            let count = self.counts.get(&d).copied().unwrap_or(0) as i64 + delta;
            if check_quota && count >= quota {
                return Err(Errno::ENOSPC);
            }
            if count < 0 {
                return Err(Errno::ENOMEM);
            }
        }
        for (p, a) in &t.accessed {
            if self.store.get(p).map(|n| n.generation) != a.orig_gen {
                return Err(Errno::EAGAIN);
            }
        }
        let mut fires = Vec::new();
        for p in std::mem::take(&mut t.order) {
            let Some(a) = t.accessed.remove(&p) else {
                continue;
            };
            if !a.modified {
                continue;
            }
            match a.local {
                Some(mut node) => {
                    Arc::make_mut(&mut node).generation = self.store.next_generation();
                    self.store.insert(&p, node);
                }
                None => {
                    if a.orig_gen.is_some() {
                        self.store.remove(&p);
                    }
                }
            }
            if let Some(exact) = a.fire {
                fires.push(Fire {
                    path: p.to_string(),
                    exact,
                    old: a.orig_perms,
                    node: self.store.get(&p).map(|n| n.perms.clone()),
                    parent: self.store.get(path::parent(&p)).map(|n| n.perms.clone()),
                });
            }
        }
        for (d, delta) in t.deltas {
            let c = self.counts.entry(d).or_insert(0);
            *c = (*c as i64 + delta).max(0) as usize;
        }
        self.fire_all(fires);
        Ok(())
    }

    /// `<domid>|<gfn>|<port>|`: mark the domain introduced (the ring page
    /// itself comes from [`introduce`](Self::introduce)).
    fn do_introduce(&mut self, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let args = strings(p);
        if args.len() < 3 {
            return Err(Errno::EINVAL);
        }
        let domid = path::atoi(args[0]);
        if path::atoi(args[2]) <= 0 {
            return Err(Errno::EINVAL);
        }
        let domid = u16::try_from(domid)
            .ok()
            .filter(|&d| DomId(d).is_real())
            .ok_or(Errno::EINVAL)?;
        self.introduce_conn(domid, None);
        Ok(OK.to_vec())
    }

    /// The introduced domain a one-argument request names: `EINVAL` for a
    /// missing argument or dom0, `ENOENT` if not introduced.
    fn onearg_domain(&self, p: &[u8]) -> Result<u16, Errno> {
        let d = path::atoi(onearg(p).ok_or(Errno::EINVAL)?);
        if d == 0 {
            return Err(Errno::EINVAL);
        }
        u16::try_from(d)
            .ok()
            .filter(|&d| self.is_introduced(DomId(d)))
            .ok_or(Errno::ENOENT)
    }

    fn do_release(&mut self, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let d = self.onearg_domain(p)?;
        self.release_conn(d);
        Ok(OK.to_vec())
    }

    /// `<domid>|<target>|`: `domid` gets `target`'s permissions.
    fn set_target(&mut self, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let args = strings(p);
        if args.len() < 2 {
            return Err(Errno::EINVAL);
        }
        let introduced = |x: &Self, s: &[u8]| {
            u16::try_from(path::atoi(s))
                .ok()
                .filter(|&d| x.is_introduced(DomId(d)))
                .ok_or(Errno::ENOENT)
        };
        let d = introduced(self, args[0])?;
        let t = introduced(self, args[1])?;
        self.conns.entry(d).or_default().target = Some(t);
        Ok(OK.to_vec())
    }
}
