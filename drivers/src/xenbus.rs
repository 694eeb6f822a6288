//! The frontend side of xenbus (`io/xenbus.h`): finding devices, reading the
//! backend's details, moving through the device states.
//!
//! A device `<class>/<id>` has its frontend directory at `device/<class>/<id>`
//! under the guest's home; its `backend` node names the backend directory and
//! `backend-id` the backend domain. The handshake, as Linux's frontends do it:
//!
//! ```text
//! frontend                         backend
//! Initialising                     Initialising
//!                                  InitWait      (features published)
//! read features, allocate rings,
//! write ring-ref/event-channel...
//! Initialised (blkfront) or
//! Connected (netfront)
//!                                  Connected
//! Connected (blkfront)
//! ...
//! Closing                          Closing → Closed
//! Closed
//! ```
//!
//! A backend that goes away (state `Closing`/`Closed`, or its directory
//! removed) is followed by a disconnect: the frontend gives back its grants
//! and channels, and can connect again when the backend returns to
//! `InitWait`. The drivers in this crate drive their own state machines with
//! these building blocks.
//!
//! The same [`XenbusDevice`] serves either end: a frontend opens it from its
//! `device/<class>/<id>` directory ([`XenbusDevice::open_frontend`]), a
//! backend from its `backend/<class>/<frontend-id>/<id>` directory
//! ([`XenbusDevice::open_backend`]), found with a [`DeviceWatcher`]. "Own"
//! methods act on one's own directory, "peer" methods on the other end's.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use hal::DomId;
use xen_pv::Hypervisor;
use xen_pv::abi::Errno;
pub use xen_pv::xenbus::XenbusState;
use xen_pv::xenbus::{join, read_state, write_state};
use xen_pv::xenstore::{TxId, XenStore, XsError};

/// Why a xenbus operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XenbusError {
    /// A xenstore request failed.
    Xenstore(XsError),
    /// A node the protocol requires is missing or malformed: the path and
    /// what is wrong with it.
    BadNode(String, &'static str),
    /// The other end went away (state `Closing`, `Closed` or gone) while we
    /// waited for it.
    PeerGone(XenbusState),
}

impl fmt::Display for XenbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XenbusError::Xenstore(e) => write!(f, "{e}"),
            XenbusError::BadNode(path, why) => write!(f, "xenstore node {path}: {why}"),
            XenbusError::PeerGone(s) => write!(f, "the other end went away (state {s})"),
        }
    }
}

impl core::error::Error for XenbusError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            XenbusError::Xenstore(e) => Some(e),
            XenbusError::BadNode(..) | XenbusError::PeerGone(_) => None,
        }
    }
}

impl From<XsError> for XenbusError {
    fn from(e: XsError) -> Self {
        XenbusError::Xenstore(e)
    }
}

/// Which end of a split device this is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The guest's driver (netfront, blkfront).
    Frontend,
    /// The driver domain's side (netback, blkback).
    Backend,
}

/// One end of a split device on xenbus.
pub struct XenbusDevice<H: Hypervisor> {
    xs: XenStore<H>,
    role: Role,
    own: String,
    peer: String,
    peer_id: DomId,
    token: String,
}

impl<H: Hypervisor> Clone for XenbusDevice<H> {
    fn clone(&self) -> Self {
        XenbusDevice {
            xs: self.xs.clone(),
            role: self.role,
            own: self.own.clone(),
            peer: self.peer.clone(),
            peer_id: self.peer_id,
            token: self.token.clone(),
        }
    }
}

impl<H: Hypervisor> fmt::Debug for XenbusDevice<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XenbusDevice")
            .field("role", &self.role)
            .field("own", &self.own)
            .field("peer", &self.peer)
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

/// The ids of this guest's devices of `class` (e.g. `vif`, `vbd`),
/// numerically sorted. None is an empty list, not an error.
///
/// Errors: a xenstore failure other than `ENOENT`.
pub async fn list_devices<H: Hypervisor>(
    xs: &XenStore<H>,
    class: &str,
) -> Result<Vec<String>, XsError> {
    let mut ids = match xs.directory(TxId::NONE, &format!("device/{class}")).await {
        Ok(ids) => ids,
        Err(e) if e.is_enoent() => Vec::new(),
        Err(e) => return Err(e),
    };
    ids.sort_by_key(|s| (s.parse::<u64>().unwrap_or(u64::MAX), s.clone()));
    Ok(ids)
}

impl<H: Hypervisor> XenbusDevice<H> {
    /// Open this guest's device `class`/`id` as its frontend: read and check
    /// the `backend` and `backend-id` nodes.
    ///
    /// Errors: [`XenbusError::BadNode`] if either is missing or malformed
    /// (the backend path must be absolute); xenstore failures.
    pub async fn open_frontend(
        xs: &XenStore<H>,
        class: &str,
        id: &str,
    ) -> Result<Self, XenbusError> {
        Self::open(
            xs,
            Role::Frontend,
            format!("device/{class}/{id}"),
            "backend",
            "backend-id",
        )
        .await
    }

    /// Open a device as its backend, from its backend directory (absolute):
    /// read and check the `frontend` and `frontend-id` nodes.
    ///
    /// Errors: as [`open_frontend`](Self::open_frontend).
    pub async fn open_backend(xs: &XenStore<H>, dir: &str) -> Result<Self, XenbusError> {
        Self::open(
            xs,
            Role::Backend,
            dir.to_string(),
            "frontend",
            "frontend-id",
        )
        .await
    }

    async fn open(
        xs: &XenStore<H>,
        role: Role,
        own: String,
        link: &str,
        link_id: &str,
    ) -> Result<Self, XenbusError> {
        let ppath = join(&own, link);
        let peer = match xs.read_string(TxId::NONE, &ppath).await {
            Ok(b) => b,
            Err(e) if e.is_enoent() => return Err(XenbusError::BadNode(ppath, "missing")),
            Err(e) => return Err(e.into()),
        };
        if !peer.starts_with('/') || peer.len() < 2 {
            return Err(XenbusError::BadNode(ppath, "not an absolute path"));
        }
        let idpath = join(&own, link_id);
        let peer_id = match xs.read_u64(TxId::NONE, &idpath).await {
            Ok(v) => u16::try_from(v)
                .map_err(|_| XenbusError::BadNode(idpath.clone(), "out of range"))?,
            Err(e) if e.is_enoent() => return Err(XenbusError::BadNode(idpath, "missing")),
            Err(XsError::Errno(Errno::EINVAL)) => {
                return Err(XenbusError::BadNode(idpath, "not a number"));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(XenbusDevice {
            xs: xs.clone(),
            role,
            token: format!("xenbus:{own}"),
            own,
            peer,
            peer_id: DomId(peer_id),
        })
    }

    /// The xenstore connection.
    pub fn xenstore(&self) -> &XenStore<H> {
        &self.xs
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our directory (`device/<class>/<id>`, relative, for a frontend; the
    /// absolute backend directory for a backend).
    pub fn own_dir(&self) -> &str {
        &self.own
    }

    /// The other end's directory (absolute).
    pub fn peer_dir(&self) -> &str {
        &self.peer
    }

    /// The other end's domain.
    pub fn peer_id(&self) -> DomId {
        self.peer_id
    }

    /// Our state.
    ///
    /// Errors: xenstore failures.
    pub async fn state(&self) -> Result<XenbusState, XsError> {
        read_state(&self.xs, &self.own).await
    }

    /// Set our state.
    ///
    /// Errors: xenstore failures.
    pub async fn switch_state(&self, state: XenbusState) -> Result<(), XsError> {
        log::debug!("{}: {:?} -> {state}", self.own, self.role);
        write_state(&self.xs, TxId::NONE, &self.own, state).await
    }

    /// The other end's state; [`XenbusState::Unknown`] if it has none (gone,
    /// or not yet created).
    ///
    /// Errors: xenstore failures.
    pub async fn peer_state(&self) -> Result<XenbusState, XsError> {
        read_state(&self.xs, &self.peer).await
    }

    async fn read_opt(&self, path: String) -> Result<Option<String>, XsError> {
        match self.xs.read_string(TxId::NONE, &path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A node of the other end, or `None` if absent.
    ///
    /// Errors: xenstore failures other than `ENOENT`.
    pub async fn read_peer(&self, key: &str) -> Result<Option<String>, XsError> {
        self.read_opt(join(&self.peer, key)).await
    }

    /// A numeric node of the other end, or `None` if absent.
    ///
    /// Errors: [`XenbusError::BadNode`] if present but not a number;
    /// xenstore failures.
    pub async fn peer_u64(&self, key: &str) -> Result<Option<u64>, XenbusError> {
        match self.read_peer(key).await? {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| XenbusError::BadNode(join(&self.peer, key), "not a number")),
        }
    }

    /// Whether the other end advertises `feature` (a node whose value is
    /// `1`). Absent or any other value is `false`.
    ///
    /// Errors: xenstore failures.
    pub async fn peer_feature(&self, feature: &str) -> Result<bool, XsError> {
        Ok(self
            .read_peer(feature)
            .await?
            .is_some_and(|v| v.trim() == "1"))
    }

    /// A node of our own directory, or `None` if absent.
    ///
    /// Errors: xenstore failures other than `ENOENT`.
    pub async fn read_own(&self, key: &str) -> Result<Option<String>, XsError> {
        self.read_opt(join(&self.own, key)).await
    }

    /// Write a node of our own directory (in transaction `tx`).
    ///
    /// Errors: xenstore failures.
    pub async fn write_own(&self, tx: TxId, key: &str, value: &str) -> Result<(), XsError> {
        self.xs
            .write(tx, &join(&self.own, key), value.as_bytes())
            .await
    }

    /// Remove a node of our own directory, if present.
    ///
    /// Errors: xenstore failures.
    pub async fn remove_own(&self, tx: TxId, key: &str) -> Result<(), XsError> {
        match self.xs.rm(tx, &join(&self.own, key)).await {
            Err(e) if e.is_enoent() => Ok(()),
            other => other,
        }
    }

    /// Start watching the other end's `state` node. Its events carry this
    /// device's own token, so several devices share one connection.
    ///
    /// Errors: xenstore failures.
    pub async fn watch_peer(&self) -> Result<(), XsError> {
        match self.xs.watch(&join(&self.peer, "state"), &self.token).await {
            Err(XsError::Errno(Errno::EEXIST)) => Ok(()),
            other => other,
        }
    }

    /// Stop watching the other end.
    ///
    /// Errors: xenstore failures other than "not watched".
    pub async fn unwatch_peer(&self) -> Result<(), XsError> {
        match self
            .xs
            .unwatch(&join(&self.peer, "state"), &self.token)
            .await
        {
            Err(e) if e.is_enoent() => Ok(()),
            other => other,
        }
    }

    /// Whether a peer-state watch event is queued (consuming them all).
    /// Non-blocking, for a driver's poll loop.
    ///
    /// Errors: xenstore failures.
    pub fn peer_changed(&self) -> Result<bool, XsError> {
        let mut any = false;
        while self.xs.try_watch_event_for(&self.token)?.is_some() {
            any = true;
        }
        Ok(any)
    }

    /// Wait until the other end's state satisfies `want`, and return it.
    /// Needs [`watch_peer`](Self::watch_peer) first.
    ///
    /// Errors: [`XenbusError::PeerGone`] if, before that, the other end
    /// reaches a state in `gone`; xenstore failures.
    pub async fn wait_peer(
        &self,
        want: impl Fn(XenbusState) -> bool,
        gone: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState, XenbusError> {
        loop {
            let s = self.peer_state().await?;
            if want(s) {
                return Ok(s);
            }
            if gone(s) {
                return Err(XenbusError::PeerGone(s));
            }
            self.xs.next_watch_event_for(&self.token).await?;
        }
    }
}

/// States that mean the other end is gone: shutting down, shut down, or no
/// state node at all.
pub fn peer_gone(s: XenbusState) -> bool {
    matches!(
        s,
        XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
    )
}

/// A change in the set of devices a backend serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceChange {
    /// A new device directory (absolute backend path).
    Added(String),
    /// A device directory disappeared.
    Removed(String),
}

/// Finds a backend's devices of one class as the toolstack adds and
/// removes them: the directories `<home>/backend/<class>/<frontend>/<id>`.
pub struct DeviceWatcher<H: Hypervisor> {
    xs: XenStore<H>,
    root: String,
    token: String,
    known: BTreeSet<String>,
    pending: alloc::collections::VecDeque<DeviceChange>,
}

impl<H: Hypervisor> DeviceWatcher<H> {
    /// Watch `backend/<class>` under the home of the backend domain `home`
    /// (e.g. `/local/domain/0`).
    ///
    /// Errors: xenstore failures.
    pub async fn new(xs: &XenStore<H>, home: &str, class: &str) -> Result<Self, XsError> {
        let root = format!("{}/backend/{class}", home.trim_end_matches('/'));
        let token = format!("devices:{root}");
        match xs.watch(&root, &token).await {
            Err(XsError::Errno(Errno::EEXIST)) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        Ok(DeviceWatcher {
            xs: xs.clone(),
            root,
            token,
            known: BTreeSet::new(),
            pending: Default::default(),
        })
    }

    async fn scan(&mut self) -> Result<(), XsError> {
        let mut now = BTreeSet::new();
        let fes = match self.xs.directory(TxId::NONE, &self.root).await {
            Ok(v) => v,
            Err(e) if e.is_enoent() => Vec::new(),
            Err(e) => return Err(e),
        };
        for fe in fes {
            let dir = join(&self.root, &fe);
            let ids = match self.xs.directory(TxId::NONE, &dir).await {
                Ok(v) => v,
                Err(e) if e.is_enoent() => continue,
                Err(e) => return Err(e),
            };
            for id in ids {
                now.insert(join(&dir, &id));
            }
        }
        for gone in self.known.difference(&now) {
            self.pending.push_back(DeviceChange::Removed(gone.clone()));
        }
        for new in now.difference(&self.known) {
            self.pending.push_back(DeviceChange::Added(new.clone()));
        }
        self.known = now;
        Ok(())
    }

    /// The next change, waiting for one.
    ///
    /// Errors: xenstore failures.
    pub async fn next(&mut self) -> Result<DeviceChange, XsError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            self.xs.next_watch_event_for(&self.token).await?;
            self.scan().await?;
        }
    }

    /// The next change if one is known or visible now, without waiting for
    /// a watch event.
    ///
    /// Errors: xenstore failures.
    pub async fn try_next(&mut self) -> Result<Option<DeviceChange>, XsError> {
        if self.pending.is_empty() && self.xs.try_watch_event_for(&self.token)?.is_some() {
            while self.xs.try_watch_event_for(&self.token)?.is_some() {}
            self.scan().await?;
        }
        Ok(self.pending.pop_front())
    }
}
