//! A storage that stages writes in memory over a read-only base: the fork a transaction runs
//! on, and the writer's view of the store while it builds a group. Reads see the staged writes
//! first, then the writes of the previous batch that may still be being applied (`Unapplied`),
//! then the base.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{KeyValue, Storage, WriteBatch};
use crate::error::Result;

/// A batch handed to the storage and maybe not applied yet, as the work after it reads it:
/// its ops sorted by key, each key once (as a transaction's staged writes or a group's
/// overlay produce them). Identical to the storage's values once applied.
#[derive(Clone)]
pub struct Unapplied(Arc<WriteBatch>);

impl Unapplied {
    /// `sorted`: ops in ascending key order, no key twice.
    pub fn new(sorted: WriteBatch) -> Unapplied {
        debug_assert!(sorted.ops.windows(2).all(|w| w[0].0 < w[1].0), "unapplied ops must be sorted and unique");
        Unapplied(Arc::new(sorted))
    }

    pub fn batch(&self) -> &WriteBatch {
        &self.0
    }

    fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        let ops = &self.0.ops;
        ops.binary_search_by(|(k, _)| k.as_slice().cmp(key)).ok().map(|i| &ops[i].1)
    }

    fn range(&self, start: &[u8], end: &[u8]) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        let ops = &self.0.ops;
        let from = ops.partition_point(|(k, _)| k.as_slice() < start);
        let to = ops.partition_point(|(k, _)| k.as_slice() < end).max(from);
        &ops[from..to]
    }
}

/// Point reads of the base as they stand after a batch: handed to the work after it, so a run
/// of batches reads the same bucket, collection and ACLs from the storage once.
pub type ReadCache = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// Brings remembered reads up to date with a batch's writes (only keys already remembered).
pub fn refresh_read_cache(cache: &mut ReadCache, batch: &WriteBatch) {
    for (key, value) in &batch.ops {
        if let Some(slot) = cache.get_mut(key) {
            slot.clone_from(value);
        }
    }
}

pub struct OverlayStorage {
    base: Arc<dyn Storage>,
    unapplied: Option<Unapplied>,
    staged: RwLock<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Point reads of the base, remembered: the base cannot change while a transaction holds
    /// the writer, and a batch reads the same bucket, collection and ACLs again and again.
    read_cache: RwLock<ReadCache>,
    /// Keys the caller checked absent before the lease and nobody else can have written since
    /// (server-generated ids nobody has seen yet).
    absent: HashSet<Vec<u8>>,
}

impl OverlayStorage {
    pub fn new(
        base: Arc<dyn Storage>,
        unapplied: Option<Unapplied>,
        warm: Option<&ReadCache>,
        absent: HashSet<Vec<u8>>,
    ) -> Self {
        OverlayStorage::with_cache(base, unapplied, warm.cloned().unwrap_or_default(), absent)
    }

    pub fn with_cache(
        base: Arc<dyn Storage>,
        unapplied: Option<Unapplied>,
        cache: ReadCache,
        absent: HashSet<Vec<u8>>,
    ) -> Self {
        OverlayStorage { base, unapplied, staged: RwLock::default(), read_cache: RwLock::new(cache), absent }
    }

    /// The remembered base reads, as they stand (the staged writes not applied to them).
    pub fn take_read_cache(&self) -> ReadCache {
        std::mem::take(&mut *self.read_cache.write())
    }

    /// The remembered base reads as they will stand once the staged writes are applied.
    pub fn read_cache_after(&self) -> ReadCache {
        let staged = self.staged.read();
        let mut cache = self.read_cache.read().clone();
        for (key, value) in cache.iter_mut() {
            if let Some(written) = staged.get(key) {
                value.clone_from(written);
            }
        }
        cache
    }

    /// Everything staged, as one batch for the base; the overlay is left empty.
    pub fn take_staged(&self) -> WriteBatch {
        WriteBatch { ops: std::mem::take(&mut *self.staged.write()).into_iter().collect() }
    }
}

impl Storage for OverlayStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut staged = self.staged.write();
        for (key, value) in batch.ops {
            staged.insert(key, value);
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.staged.read().get(key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.unapplied.as_ref().and_then(|layer| layer.get(key)) {
            return Ok(value.clone());
        }
        if self.absent.contains(key) {
            return Ok(None);
        }
        if let Some(value) = self.read_cache.read().get(key) {
            return Ok(value.clone());
        }
        let value = self.base.get(key)?;
        self.read_cache.write().insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let staged = self.staged.read();
        let bounds = || (Bound::Included(start.to_vec()), Bound::Excluded(end.to_vec()));
        let unapplied = self.unapplied.as_ref().map_or(&[][..], |layer| layer.range(start, end));
        // Deleted or replaced base entries may hide some: ask the base for enough extra.
        let overrides = unapplied.len() + staged.range(bounds()).count();
        let base_limit = limit.map(|l| l.saturating_add(overrides));
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            self.base.range(start, end, reverse, base_limit)?.into_iter().map(|(k, v)| (k, Some(v))).collect();
        // Oldest layer first: the staged writes win.
        for (k, v) in unapplied.iter().map(|(k, v)| (k, v)).chain(staged.range(bounds())) {
            merged.insert(k.clone(), v.clone());
        }
        let live = merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
        let take = limit.unwrap_or(usize::MAX);
        Ok(if reverse { live.rev().take(take).collect() } else { live.take(take).collect() })
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}
