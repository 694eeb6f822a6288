//! Transactions, as Xen's tools/xenstored/transaction.c keeps them.
//!
//! A transaction records every node it touches, the first time it touches
//! it: the node's generation count then (or "did not exist"), its
//! permissions then, and a private copy that later requests of the
//! transaction read and modify. Commit fails with `EAGAIN` if any recorded
//! node's generation changed meanwhile (reads count as much as writes), and
//! otherwise writes the modified copies back in the order they were first
//! touched, firing their watches.

use crate::store::{Node, Perm};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a transaction knows of one node.
pub(crate) struct Access {
    /// Generation when first touched; `None`: did not exist.
    pub orig_gen: Option<u64>,
    /// Permissions when first touched (for watch permission checks).
    pub orig_perms: Option<Vec<Perm>>,
    /// The transaction's view: `None` if absent (or removed).
    pub local: Option<Arc<Node>>,
    pub modified: bool,
    /// A watch event is due at commit: `Some(exact)`.
    pub fire: Option<bool>,
}

pub(crate) struct Tx {
    pub id: u32,
    pub accessed: BTreeMap<Box<str>, Access>,
    /// Paths of `accessed` in the order first touched.
    pub order: Vec<Box<str>>,
    /// Something failed half-way: the commit must not happen (`ENOMEM`, as
    /// Xen answers).
    pub fail: bool,
    /// A node was created (quota is checked again at commit).
    pub node_created: bool,
    /// Change of each owner's node count.
    pub deltas: BTreeMap<u32, i64>,
}

impl Tx {
    pub(crate) fn new(id: u32) -> Tx {
        Tx {
            id,
            accessed: BTreeMap::new(),
            order: Vec::new(),
            fail: false,
            node_created: false,
            deltas: BTreeMap::new(),
        }
    }
}
