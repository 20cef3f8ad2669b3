//! An in-memory backend for tests and ephemeral servers (`kinto.core.storage.memory`).

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{prefix_end, KeyValue, Storage, ValuesAtHead, WriteBatch};
use crate::error::Result;
use crate::keys;

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

    fn get_many_with_head(&self, keys: &[Vec<u8>]) -> Result<ValuesAtHead> {
        let map = self.map.read();
        Ok((keys.iter().map(|key| map.get(key).cloned()).collect(), Some(head(&map))))
    }

    fn range_with_head(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Option<u64>)> {
        let map = self.map.read();
        Ok((range_of(&map, start, end, reverse, limit), Some(head(&map))))
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        Ok(range_of(&self.map.read(), start, end, reverse, limit))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}

/// The seq of the map's last log entry (0 when none).
fn head(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    let log = [keys::LOG];
    map.range::<[u8], _>((Bound::Included(&log[..]), Bound::Excluded(&prefix_end(&log)[..])))
        .next_back()
        .and_then(|(key, _)| keys::seq_of_log_key(key))
        .unwrap_or(0)
}

fn range_of(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: Option<usize>,
) -> Vec<KeyValue> {
    if start >= end {
        return Vec::new();
    }
    let iter = map.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
    let take = limit.unwrap_or(usize::MAX);
    if reverse {
        iter.rev().take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        iter.take(take).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
