//! A storage that stages writes in memory over a read-only base: the fork a transaction runs
//! on. Reads see the staged writes first, then the writes of the previous transaction that the
//! writer may still be applying (`Unapplied`), then the base.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{KeyValue, Storage, WriteBatch};
use crate::error::Result;

/// A committed transaction's writes, sorted, as the next transaction sees them while the writer
/// is still applying them to the storage (identical values once applied).
pub type Unapplied = Arc<BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// Point reads of the base as they stand after a transaction: handed to the next one, so a run
/// of batches reads the same bucket, collection and ACLs from the storage once.
pub type ReadCache = HashMap<Vec<u8>, Option<Vec<u8>>>;

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
        let read_cache = RwLock::new(warm.cloned().unwrap_or_default());
        OverlayStorage { base, unapplied, staged: RwLock::default(), read_cache, absent }
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
        let layers = [self.unapplied.as_deref(), Some(&*staged)];
        // Deleted or replaced base entries may hide some: ask the base for enough extra.
        let overrides: usize = layers.iter().flatten().map(|layer| layer.range(bounds()).count()).sum();
        let base_limit = limit.map(|l| l.saturating_add(overrides));
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            self.base.range(start, end, reverse, base_limit)?.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for layer in layers.iter().flatten() {
            for (k, v) in layer.range(bounds()) {
                merged.insert(k.clone(), v.clone());
            }
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
