//! The watch index: every watch of every connection, found by path.
//!
//! A change of one path is matched against the watches on that path and its
//! ancestors (a handful of map lookups), never by scanning all watches.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// One registered watch.
pub(crate) struct Watch {
    pub owner: u16,
    /// Absolute path (or special `@...` name) watched.
    pub path: Box<str>,
    pub token: Box<[u8]>,
    /// Bytes to strip from event paths: the home prefix and its `/` for
    /// watches registered with a relative path, else 0.
    pub prefix_len: usize,
}

type OwnerKey = (u16, Box<str>, Box<[u8]>);

#[derive(Default)]
pub(crate) struct Watches {
    next_id: u64,
    by_id: BTreeMap<u64, Watch>,
    /// Path -> ids of the watches on it. Ids grow, so ascending order is
    /// registration order.
    by_path: BTreeMap<Box<str>, BTreeSet<u64>>,
    by_owner: BTreeMap<OwnerKey, u64>,
}

impl Watches {
    pub(crate) fn contains(&self, owner: u16, path: &str, token: &[u8]) -> bool {
        self.by_owner
            .contains_key(&(owner, Box::from(path), Box::from(token)))
    }

    /// Register a watch (the caller checked it is not a duplicate).
    pub(crate) fn add(&mut self, owner: u16, path: &str, token: &[u8], prefix_len: usize) {
        self.next_id += 1;
        let id = self.next_id;
        self.by_path.entry(path.into()).or_default().insert(id);
        self.by_owner.insert((owner, path.into(), token.into()), id);
        self.by_id.insert(
            id,
            Watch {
                owner,
                path: path.into(),
                token: token.into(),
                prefix_len,
            },
        );
    }

    fn unindex(&mut self, id: u64) {
        if let Some(w) = self.by_id.remove(&id)
            && let Some(set) = self.by_path.get_mut(&w.path)
        {
            set.remove(&id);
            if set.is_empty() {
                self.by_path.remove(&w.path);
            }
        }
    }

    /// Remove one watch; whether it existed.
    pub(crate) fn remove(&mut self, owner: u16, path: &str, token: &[u8]) -> bool {
        match self
            .by_owner
            .remove(&(owner, Box::from(path), Box::from(token)))
        {
            Some(id) => {
                self.unindex(id);
                true
            }
            None => false,
        }
    }

    /// Remove every watch of `owner`.
    pub(crate) fn remove_all(&mut self, owner: u16) {
        let from: OwnerKey = (owner, Box::from(""), Box::from(&[][..]));
        let keys: Vec<OwnerKey> = self
            .by_owner
            .range((Bound::Included(from), Bound::Unbounded))
            .take_while(|(k, _)| k.0 == owner)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(id) = self.by_owner.remove(&k) {
                self.unindex(id);
            }
        }
    }

    /// Ids of the watches on exactly `path`, in registration order.
    pub(crate) fn on(&self, path: &str) -> impl Iterator<Item = u64> + '_ {
        self.by_path.get(path).into_iter().flatten().copied()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Watch> {
        self.by_id.get(&id)
    }
}
