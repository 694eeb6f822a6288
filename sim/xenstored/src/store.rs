//! The node database: permissions, nodes, and the global map of them.

use crate::path;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Read access (`XS_PERM_READ`).
pub(crate) const PERM_READ: u8 = 1;
/// Write access (`XS_PERM_WRITE`).
pub(crate) const PERM_WRITE: u8 = 2;
/// Owner rights (`XS_PERM_OWNER`): never stored, only computed.
pub(crate) const PERM_OWNER: u8 = 8;

/// One permission entry: the first of a node's list names its owner and the
/// access of every domain not listed; later ones grant access to one domain.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Perm {
    /// The domain (Xen keeps an `unsigned int`).
    pub id: u32,
    /// `PERM_READ | PERM_WRITE` bits.
    pub access: u8,
}

impl Perm {
    /// Parse the wire form (`r5`, `b0`, `n0x10`), as Xen's
    /// `xenstore_strings_to_perms()`: a letter, then a whole `strtol(.., 0)`
    /// number, truncated to `unsigned int`.
    pub(crate) fn parse(s: &[u8]) -> Option<Perm> {
        let (&letter, rest) = s.split_first()?;
        let access = match letter {
            b'r' => PERM_READ,
            b'w' => PERM_WRITE,
            b'b' => PERM_READ | PERM_WRITE,
            b'n' => 0,
            _ => return None,
        };
        let id = path::strtol_whole(rest)?;
        Some(Perm {
            // C's assignment of a long to an unsigned int.
            id: id as u32,
            access,
        })
    }

    /// Append the wire form and its NUL (Xen prints the id with `%i`).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        let letter = match self.access & (PERM_READ | PERM_WRITE) {
            PERM_READ => 'r',
            PERM_WRITE => 'w',
            0 => 'n',
            _ => 'b',
        };
        out.extend_from_slice(format!("{letter}{}", self.id as i32).as_bytes());
        out.push(0);
    }
}

/// A node's children in creation order, removable by key in O(log n).
#[derive(Clone, Debug, Default)]
pub(crate) struct Children {
    by_key: BTreeMap<u64, Box<str>>,
    /// Bytes of the wire list: each name plus its NUL (Xen's `childlen`).
    bytes: usize,
}

impl Children {
    pub(crate) fn insert(&mut self, key: u64, name: &str) {
        self.bytes += name.len() + 1;
        self.by_key.insert(key, name.into());
    }

    pub(crate) fn remove(&mut self, key: u64) {
        if let Some(name) = self.by_key.remove(&key) {
            self.bytes -= name.len() + 1;
        }
    }

    /// Bytes of the wire list.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn names(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.by_key.values().map(|n| &**n)
    }

    /// The wire list: each name followed by a NUL.
    pub(crate) fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        for n in self.by_key.values() {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        out
    }
}

/// A node.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub data: Vec<u8>,
    /// Never empty.
    pub perms: Vec<Perm>,
    pub children: Children,
    /// Changes whenever the node is written (Xen's generation count).
    pub generation: u64,
    /// This node's key in its parent's [`Children`].
    pub key: u64,
}

impl Node {
    /// The size Xen charges against the node-size quota: its record header
    /// (16 bytes), 8 bytes per permission, the data and the child list.
    pub(crate) fn size(&self) -> usize {
        node_size(self.perms.len(), self.data.len(), self.children.bytes())
    }
}

/// Xen's `calc_node_acc_size()` (4.18 and later): `struct node_hdr`, the
/// `struct xs_permissions` array, data and children.
pub(crate) fn node_size(perms: usize, data: usize, children: usize) -> usize {
    16 + 8 * perms + data + children
}

/// All committed nodes, by absolute path (special `@...` nodes included).
///
/// Hashed, not ordered: nothing walks the store in order (children are
/// listed by their parent), and with a simulator's worth of domains a
/// sorted map compared long shared prefixes (`/local/domain/…`) at every
/// level of every lookup.
#[derive(Default)]
pub(crate) struct Store {
    nodes: HashMap<Box<str>, Arc<Node>>,
    generation: u64,
    next_key: u64,
}

impl Store {
    pub(crate) fn get(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    pub(crate) fn get_mut(&mut self, path: &str) -> Option<&mut Arc<Node>> {
        self.nodes.get_mut(path)
    }

    pub(crate) fn insert(&mut self, path: &str, node: Arc<Node>) {
        self.nodes.insert(path.into(), node);
    }

    pub(crate) fn remove(&mut self, path: &str) -> Option<Arc<Node>> {
        self.nodes.remove(path)
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A new generation count.
    pub(crate) fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// A new key for a child list: keys grow, so lists keep creation order.
    pub(crate) fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }
}
