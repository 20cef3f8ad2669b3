//! The embedded default backend: one sled tree holding the log and every view.

use std::path::Path;

use super::{KeyValue, Storage, WriteBatch};
use crate::error::Result;

pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledStorage {
    /// Opens (or creates) the store in `dir`. `flush_every_ms` is sled's own background flush,
    /// used by the `interval` flush policy; `None` disables it. `cache_bytes`: sled's page cache.
    pub fn open(dir: &Path, flush_every_ms: Option<u64>, cache_bytes: u64) -> Result<Self> {
        // A store closed moments ago in this process may still be locked by sled's background
        // flusher thread for a short while: wait for it rather than fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match sled::Config::new().path(dir).flush_every_ms(flush_every_ms).cache_capacity(cache_bytes).open() {
                // sled reports the lock as an I/O error of kind Other naming the lock.
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let tree = db.open_tree("tidemark")?;
        Ok(SledStorage { db, tree })
    }
}

impl Storage for SledStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let iter = self.tree.range(start..end);
        let take = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<()> {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        };
        if reverse {
            for item in iter.rev().take(take) {
                push(item)?;
            }
        } else {
            for item in iter.take(take) {
                push(item)?;
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
