//! A write overlay over the storage: what the writer has staged but not yet committed.
//!
//! Two layers: `group` (everything staged for the current group commit) and `pending` (the
//! submission being applied now). A submission that fails is rolled back alone; one that succeeds
//! is folded into the group. Reads see pending, then group, then the storage — so every command
//! observes the effect of the commands before it, committed or not.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::Result;
use crate::storage::{prefix_end, KeyValue, Storage, WriteBatch};

type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Point reads shared by the writer's overlay and the plain storage.
pub(crate) trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>>;
}

impl KvRead for dyn Storage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Storage::get(self, key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        crate::storage::scan_prefix(self, prefix)
    }
}

pub(crate) struct Txn<'a> {
    storage: &'a dyn Storage,
    group: Overlay,
    pending: Overlay,
}

impl<'a> Txn<'a> {
    pub fn new(storage: &'a dyn Storage) -> Self {
        Txn { storage, group: Overlay::new(), pending: Overlay::new() }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Keeps the current submission's writes in the group.
    pub fn commit_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.group.extend(pending);
    }

    /// Forgets the current submission's writes.
    pub fn rollback_pending(&mut self) {
        self.pending.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_empty() && self.pending.is_empty()
    }

    /// The group's writes as one atomic batch (pending writes must be committed first).
    pub fn into_batch(mut self) -> WriteBatch {
        self.commit_pending();
        WriteBatch { ops: self.group.into_iter().collect() }
    }
}

impl KvRead for Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.group.get(key) {
            return Ok(v.clone());
        }
        self.storage.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let end = prefix_end(prefix);
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            self.storage.range(prefix, &end, false, None)?.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for layer in [&self.group, &self.pending] {
            let bounds = (Bound::Included(prefix.to_vec()), Bound::Excluded(end.clone()));
            for (k, v) in layer.range(bounds) {
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }
}
