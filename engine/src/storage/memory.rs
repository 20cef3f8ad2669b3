//! An in-memory backend for tests and ephemeral servers (`kinto.core.storage.memory`).

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{KeyValue, Storage, WriteBatch};
use crate::error::Result;

#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut map = self.map.write();
        for (key, value) in batch.ops {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().get(key).cloned())
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.map.read();
        let iter = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
        let take = limit.unwrap_or(usize::MAX);
        let out = if reverse {
            iter.rev().take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            iter.take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}
