//! The node operations (READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART,
//! GET_PERMS, SET_PERMS) over a [`View`]: the committed store, or a
//! transaction's view of it.
//!
//! Each follows the C xenstored's `do_*` function of the same name
//! (tools/xenstored/core.c, Xen 4.21): the same checks in the same order,
//! hence the same error for each bad request.

use crate::Config;
use crate::path;
use crate::store::{Children, Node, PERM_OWNER, PERM_READ, PERM_WRITE, Perm, Store, node_size};
use crate::tx::{Access, Tx};
use std::collections::BTreeMap;
use std::sync::Arc;
use xenpal_xen_pv::abi::Errno;
use xenpal_xen_pv::abi::io::XENSTORE_PAYLOAD_MAX;

/// The payload of every acknowledgement.
pub(crate) const OK: &[u8] = b"OK\0";

/// Who is asking: a domain and the domain it targets (`SET_TARGET`), whose
/// permissions it shares.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Caller {
    pub id: u16,
    pub target: Option<u16>,
}

impl Caller {
    /// Domain 0 bypasses every permission check and quota.
    pub(crate) fn privileged(&self) -> bool {
        self.id == 0
    }

    fn is(&self, domid: u32) -> bool {
        domid == u32::from(self.id) || self.target.is_some_and(|t| domid == u32::from(t))
    }

    /// Xen's `perm_for_conn()`: everything for the privileged domain and
    /// the owner; else the first entry naming us; else the default (entry 0).
    pub(crate) fn perm(&self, perms: &[Perm]) -> u8 {
        const ALL: u8 = PERM_READ | PERM_WRITE | PERM_OWNER;
        let Some(first) = perms.first() else {
            return 0;
        };
        if self.privileged() || self.is(first.id) {
            return ALL;
        }
        perms[1..]
            .iter()
            .find(|p| self.is(p.id))
            .unwrap_or(first)
            .access
    }
}

/// A watch firing, with what its permission check needs captured at the
/// time of the change (Xen checks then, not later).
pub(crate) struct Fire {
    pub path: String,
    /// Only watches on exactly `path` (not its ancestors) fire.
    pub exact: bool,
    /// Permissions before the change (SET_PERMS, transaction commit).
    pub old: Option<Vec<Perm>>,
    /// Permissions of the node; `None` if it does not exist.
    pub node: Option<Vec<Perm>>,
    /// Permissions of its parent, if that exists.
    pub parent: Option<Vec<Perm>>,
}

/// The data as one request sees it.
pub(crate) struct View<'a> {
    pub store: &'a mut Store,
    pub counts: &'a mut BTreeMap<u32, usize>,
    pub cfg: &'a Config,
    pub caller: Caller,
    pub tx: Option<&'a mut Tx>,
    /// Watch firings to dispatch once the request is done.
    pub fires: Vec<Fire>,
}

/// A node whose children are being removed: its permissions and key.
type Visited = (Vec<Perm>, u64);

/// A failed lookup: the error, and the canonical path if it got that far.
type GetError = (Errno, Option<String>);

impl View<'_> {
    fn unprivileged(&self) -> bool {
        !self.caller.privileged()
    }

    fn fail_tx(&mut self) {
        if let Some(tx) = self.tx.as_deref_mut() {
            tx.fail = true;
        }
    }

    /// In a transaction, record `path` as accessed if it is not yet (Xen's
    /// `access_node()`), charging the transaction-nodes quota.
    fn touch(&mut self, path: &str) -> Result<(), Errno> {
        let over_quota = self.unprivileged();
        let quota = self.cfg.quota_transaction_nodes;
        let Some(tx) = self.tx.as_deref_mut() else {
            return Ok(());
        };
        if tx.accessed.contains_key(path) {
            return Ok(());
        }
        if over_quota && tx.order.len() + 1 > quota {
            tx.fail = true;
            return Err(Errno::ENOSPC);
        }
        let global = self.store.get(path).cloned();
        tx.accessed.insert(
            path.into(),
            Access {
                orig_gen: global.as_ref().map(|n| n.generation),
                orig_perms: global.as_ref().map(|n| n.perms.clone()),
                local: global,
                modified: false,
                fire: None,
            },
        );
        tx.order.push(path.into());
        Ok(())
    }

    fn access_mut(&mut self, path: &str) -> Result<&mut Access, Errno> {
        self.touch(path)?;
        self.tx
            .as_deref_mut()
            .and_then(|t| t.accessed.get_mut(path))
            .ok_or(Errno::EIO)
    }

    /// The node at `path`, if it exists (no permission check).
    pub(crate) fn read(&mut self, path: &str) -> Result<Option<Arc<Node>>, Errno> {
        if self.tx.is_none() {
            return Ok(self.store.get(path).cloned());
        }
        Ok(self.access_mut(path)?.local.clone())
    }

    /// Change the existing node at `path` in place. Callers drop the `Arc`s
    /// they read first, so that the node is not copied.
    fn modify(&mut self, path: &str, f: impl FnOnce(&mut Node)) -> Result<(), Errno> {
        if self.tx.is_none() {
            let generation = self.store.next_generation();
            let node = Arc::make_mut(self.store.get_mut(path).ok_or(Errno::EIO)?);
            f(node);
            node.generation = generation;
            return Ok(());
        }
        let a = self.access_mut(path)?;
        let local = a.local.as_mut().ok_or(Errno::EIO)?;
        f(Arc::make_mut(local));
        a.modified = true;
        Ok(())
    }

    fn insert(&mut self, path: &str, mut node: Node) -> Result<(), Errno> {
        if self.tx.is_none() {
            node.generation = self.store.next_generation();
            self.store.insert(path, Arc::new(node));
            return Ok(());
        }
        let a = self.access_mut(path)?;
        a.local = Some(Arc::new(node));
        a.modified = true;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), Errno> {
        if self.tx.is_none() {
            self.store.next_generation();
            self.store.remove(path);
            return Ok(());
        }
        let a = self.access_mut(path)?;
        a.local = None;
        a.modified = true;
        Ok(())
    }

    /// The node-size quota, checked where Xen's `write_node()` checks it.
    /// A failure inside a transaction dooms the transaction, as in Xen.
    fn check_size(&mut self, size: usize) -> Result<(), Errno> {
        if self.unprivileged() && size > self.cfg.quota_node_size {
            self.fail_tx();
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// Nodes the caller owns, including this transaction's changes; 0 for
    /// the privileged domain (no quota).
    fn own_count(&self) -> usize {
        if !self.unprivileged() {
            return 0;
        }
        let id = u32::from(self.caller.id);
        let global = self.counts.get(&id).copied().unwrap_or(0) as i64;
        let delta = self
            .tx
            .as_deref()
            .and_then(|t| t.deltas.get(&id))
            .copied()
            .unwrap_or(0);
        (global + delta).max(0) as usize
    }

    fn adjust_count(&mut self, owner: u32, delta: i64) {
        match self.tx.as_deref_mut() {
            Some(tx) => *tx.deltas.entry(owner).or_insert(0) += delta,
            None => {
                let c = self.counts.entry(owner).or_insert(0);
                *c = (*c as i64 + delta).max(0) as usize;
            }
        }
    }

    /// A change to `path` fires watches: now, or at commit (Xen's
    /// `fire_watches()` / `queue_watches()`). `node` is the node's
    /// permissions as of the change.
    fn fire(&mut self, path: &str, exact: bool, node: &[Perm], old: Option<&[Perm]>) {
        if let Some(tx) = self.tx.as_deref_mut() {
            match tx.accessed.get_mut(path) {
                // A subtree match replaces an exact one, not the reverse.
                Some(a) => a.fire = Some(a.fire.unwrap_or(true) && exact),
                None => tx.fail = true,
            }
            return;
        }
        let parent = self.store.get(path::parent(path)).map(|n| n.perms.clone());
        self.fires.push(Fire {
            path: path.to_owned(),
            exact,
            old: old.map(<[Perm]>::to_vec),
            node: Some(node.to_vec()),
            parent,
        });
    }

    /// Xen's `get_node()`: canonicalize, read, check `perm`; and if that
    /// fails, hide whether the node exists from a caller that may not know
    /// (`errno_from_parents()`).
    fn get_node(
        &mut self,
        raw: Option<&[u8]>,
        perm: u8,
        allow_special: bool,
    ) -> Result<(String, Arc<Node>), GetError> {
        let raw = raw.ok_or((Errno::EINVAL, None))?;
        let name = path::canonicalize(
            raw,
            self.caller.id,
            self.unprivileged(),
            self.cfg.quota_path_max,
            allow_special,
        )
        .map_err(|e| (e, None))?;
        let errnum = match self.read(&name) {
            Err(e) => return Err((e, Some(name))),
            Ok(Some(node)) if self.caller.perm(&node.perms) & perm == perm => {
                return Ok((name, node));
            }
            Ok(Some(_)) => Errno::EACCES,
            Ok(None) => Errno::ENOENT,
        };
        let e = self.errno_from_parents(&name, errnum, perm);
        Err((e, Some(name)))
    }

    /// The error to report for `name`: `errnum` if the caller has any of
    /// `perm` on the nearest existing ancestor, else `EACCES`.
    fn errno_from_parents(&mut self, name: &str, errnum: Errno, perm: u8) -> Errno {
        let mut p = name;
        loop {
            p = path::parent(p);
            match self.read(p) {
                Err(e) => return e,
                Ok(Some(node)) => {
                    return if self.caller.perm(&node.perms) & perm != 0 {
                        errnum
                    } else {
                        Errno::EACCES
                    };
                }
                Ok(None) if p == "/" => return Errno::EACCES,
                Ok(None) => {}
            }
        }
    }

    /// Xen's `create_node()`: create `name` and its missing ancestors, each
    /// inheriting its parent's permissions with an unprivileged creator as
    /// owner. Returns the new node's permissions.
    fn create_node(&mut self, name: &str, data: &[u8]) -> Result<Vec<Perm>, Errno> {
        // `missing[0]` is `name`, then its missing ancestors upwards.
        let mut missing: Vec<String> = vec![name.to_owned()];
        let (parent_name, parent) = loop {
            let p = path::parent(missing.last().map_or("/", String::as_str)).to_owned();
            match self.read(&p)? {
                Some(node) => break (p, node),
                None if p == "/" => return Err(Errno::ENOENT),
                None => missing.push(p),
            }
        };
        if let Some(tx) = self.tx.as_deref_mut() {
            tx.node_created = true;
        }
        let mut perms = parent.perms.clone();
        if self.unprivileged() {
            perms[0].id = u32::from(self.caller.id);
        }

        // Quota checks in Xen's order: bottom up, each new node against the
        // caller's node count, then its size; then the existing parent's
        // size with the new child. A failure after the first node has been
        // written dooms a transaction.
        let count = self.own_count();
        for j in 0..missing.len() {
            if self.unprivileged() && count + j >= self.cfg.quota_nodes_per_domain {
                if j > 0 {
                    self.fail_tx();
                }
                return Err(Errno::ENOSPC);
            }
            let size = match j {
                0 => node_size(perms.len(), data.len(), 0),
                _ => node_size(perms.len(), 0, path::basename(&missing[j - 1]).len() + 1),
            };
            self.check_size(size)?;
        }
        let top = missing.last().map_or("", |s| path::basename(s));
        let parent_size = parent.size() + top.len() + 1;
        drop(parent);
        self.check_size(parent_size)?;

        // Build top down, linking each new node into its parent.
        let keys: Vec<u64> = missing.iter().map(|_| self.store.next_key()).collect();
        for j in (0..missing.len()).rev() {
            let mut children = Children::default();
            if j > 0 {
                children.insert(keys[j - 1], path::basename(&missing[j - 1]));
            }
            let node = Node {
                data: if j == 0 { data.to_vec() } else { Vec::new() },
                perms: perms.clone(),
                children,
                generation: 0,
                key: keys[j],
            };
            self.insert(&missing[j], node)?;
            self.adjust_count(perms[0].id, 1);
        }
        let top_key = keys[missing.len() - 1];
        let top = top.to_owned();
        self.modify(&parent_name, |p| p.children.insert(top_key, &top))?;
        Ok(perms)
    }

    /// Xen's `rm_node()`: remove `name` and everything below it, firing
    /// watches children first: exact matches for the nodes below, subtree
    /// matches for `name` itself.
    fn rm_node(&mut self, name: &str) -> Result<(), Errno> {
        let parent_name = path::parent(name).to_owned();
        if self.read(&parent_name)?.is_none() {
            return Err(Errno::EINVAL);
        }
        // Walk the subtree (reads in pre-order, as Xen's walk does), then
        // delete in post-order. A stack entry carries the node's
        // permissions and key once its children have been pushed.
        let mut post: Vec<(String, Vec<Perm>, u64)> = Vec::new();
        let mut stack: Vec<(String, Option<Visited>)> = vec![(name.to_owned(), None)];
        while let Some((p, seen)) = stack.pop() {
            if let Some((perms, key)) = seen {
                post.push((p, perms, key));
                continue;
            }
            let Some(node) = self.read(&p)? else {
                continue;
            };
            let children: Vec<String> = node.children.names().map(|c| path::child(&p, c)).collect();
            stack.push((p, Some((node.perms.clone(), node.key))));
            stack.extend(children.into_iter().rev().map(|c| (c, None)));
        }
        let mut root_key = None;
        for (p, perms, key) in post {
            self.remove(&p)?;
            self.adjust_count(perms[0].id, -1);
            let is_root = p == name;
            self.fire(&p, !is_root, &perms, None);
            if is_root {
                root_key = Some(key);
            }
        }
        if let Some(key) = root_key {
            self.modify(&parent_name, |n| n.children.remove(key))?;
        }
        Ok(())
    }
}

/// The single NUL-terminated string a request must consist of (Xen's
/// `onearg()`).
pub(crate) fn onearg(p: &[u8]) -> Option<&[u8]> {
    let (&last, body) = p.split_last()?;
    (last == 0 && !body.contains(&0)).then_some(body)
}

/// The complete NUL-terminated strings of a payload (Xen's
/// `get_strings()`); bytes after the last NUL are ignored.
pub(crate) fn strings(p: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = p.split(|&b| b == 0).collect();
    v.pop();
    v
}

/// Number of NULs (Xen's `xenstore_count_strings()`).
fn count_nuls(p: &[u8]) -> usize {
    p.iter().filter(|&&b| b == 0).count()
}

pub(crate) fn read(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    let (_, node) = v.get_node(onearg(p), PERM_READ, false).map_err(|e| e.0)?;
    Ok(node.data.clone())
}

pub(crate) fn directory(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    let (_, node) = v.get_node(onearg(p), PERM_READ, false).map_err(|e| e.0)?;
    Ok(node.children.wire())
}

/// `<path>|<offset>` -> `<generation>|<children from offset>...`, at most a
/// payload's worth, with an extra NUL once the list is complete.
pub(crate) fn directory_part(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    if count_nuls(p) != 2 {
        return Err(Errno::EINVAL);
    }
    let args = strings(p);
    let (_, node) = v
        .get_node(Some(args[0]), PERM_READ, false)
        .map_err(|e| e.0)?;
    // C: `unsigned int off = atoi(...)`.
    let off = path::atoi(args[1]) as u32 as usize;
    let mut out = node.generation.to_string().into_bytes();
    out.push(0);
    let list = node.children.wire();
    if off >= list.len() {
        out.push(0);
        return Ok(out);
    }
    let maxlen = XENSTORE_PAYLOAD_MAX - out.len() - 1;
    let mut len = 0;
    loop {
        let at = off + len;
        let name_len = list[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(list.len() - at);
        if len + name_len >= maxlen {
            break;
        }
        len += name_len + 1;
        if off + len >= list.len() {
            break;
        }
    }
    out.extend_from_slice(&list[off..off + len]);
    if off + len == list.len() {
        out.push(0);
    }
    Ok(out)
}

pub(crate) fn write(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    let Some(&raw) = strings(p).first() else {
        return Err(Errno::EINVAL);
    };
    let value = &p[raw.len() + 1..];
    let (name, perms) = match v.get_node(Some(raw), PERM_WRITE, false) {
        Ok((name, node)) => {
            let size = node.size() - node.data.len() + value.len();
            let perms = node.perms.clone();
            drop(node);
            v.check_size(size)?;
            v.modify(&name, |n| n.data = value.to_vec())?;
            (name, perms)
        }
        Err((Errno::ENOENT, Some(name))) => {
            let perms = v.create_node(&name, value)?;
            (name, perms)
        }
        Err((e, _)) => return Err(e),
    };
    v.fire(&name, false, &perms, None);
    Ok(OK.to_vec())
}

pub(crate) fn mkdir(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    match v.get_node(onearg(p), PERM_WRITE, false) {
        Ok(_) => {}
        Err((Errno::ENOENT, Some(name))) => {
            let perms = v.create_node(&name, &[])?;
            v.fire(&name, false, &perms, None);
        }
        Err((e, _)) => return Err(e),
    }
    Ok(OK.to_vec())
}

pub(crate) fn rm(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    match v.get_node(onearg(p), PERM_WRITE, false) {
        Ok((name, node)) => {
            drop(node);
            if name == "/" {
                return Err(Errno::EINVAL);
            }
            v.rm_node(&name)?;
        }
        // Removing what is not there is fine, if its parent is.
        Err((Errno::ENOENT, Some(name))) => {
            if v.read(path::parent(&name))?.is_none() {
                return Err(Errno::ENOENT);
            }
        }
        Err((e, _)) => return Err(e),
    }
    Ok(OK.to_vec())
}

pub(crate) fn get_perms(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    let (_, node) = v.get_node(onearg(p), PERM_READ, true).map_err(|e| e.0)?;
    let mut out = Vec::new();
    for perm in &node.perms {
        perm.write_to(&mut out);
    }
    Ok(out)
}

/// `<path>|<perm>|+`: only the owner (or dom0) may, and only dom0 may give
/// the node a new owner.
pub(crate) fn set_perms(v: &mut View<'_>, p: &[u8]) -> Result<Vec<u8>, Errno> {
    let nuls = count_nuls(p);
    if nuls < 2 {
        return Err(Errno::EINVAL);
    }
    let num = nuls - 1;
    if v.unprivileged() && num > v.cfg.quota_perms_per_node {
        return Err(Errno::ENOSPC);
    }
    let args = strings(p);
    let perms: Vec<Perm> = args[1..=num]
        .iter()
        .map(|s| Perm::parse(s).ok_or(Errno::EINVAL))
        .collect::<Result<_, _>>()?;
    let (name, node) = v
        .get_node(Some(args[0]), PERM_WRITE | PERM_OWNER, true)
        .map_err(|e| e.0)?;
    let old = node.perms.clone();
    if v.unprivileged() && perms[0].id != old[0].id {
        return Err(Errno::EPERM);
    }
    let size = node_size(perms.len(), node.data.len(), node.children.bytes());
    drop(node);
    v.check_size(size)?;
    let new = perms.clone();
    v.modify(&name, |n| n.perms = new)?;
    v.adjust_count(old[0].id, -1);
    v.adjust_count(perms[0].id, 1);
    v.fire(&name, false, &perms, Some(&old));
    Ok(OK.to_vec())
}
