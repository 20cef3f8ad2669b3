//! The narrow storage contract the engine needs: an ordered byte keyspace with atomic batches.
//!
//! Every view and the log live in one keyspace (prefixes laid out in `keys.rs`), so one commit is
//! one atomic batch — the fast path measured for sled 0.34.7 (a single-tree `Batch` + flush is
//! an order of magnitude faster than a multi-tree transaction).

mod coherent;
mod memory;
mod overlay;
mod postgres;
mod sled_store;

pub use coherent::{CoherentStorage, ReadBarrier};
pub use memory::MemoryStorage;
pub use overlay::{refresh_read_cache, OverlayStorage, ReadCache, Unapplied};
pub use postgres::PostgresStorage;
pub use sled_store::{sled_store_exists, SledStorage, SET_ASIDE_DIR};

use crate::error::Result;

/// One atomic write: every put and delete lands, or none does.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

pub type KeyValue = (Vec<u8>, Vec<u8>);
/// Values read, and the log's head they reflect (None from a store that cannot tell).
pub type ValuesAtHead = (Vec<Option<Vec<u8>>>, Option<u64>);

pub trait Storage: Send + Sync + 'static {
    /// Applies the batch atomically (readers see all of it or none of it).
    fn apply(&self, batch: WriteBatch) -> Result<()>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The values of `keys`, in their order: one round trip on a store across the network.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// [`Storage::get_many`], with the log's head as of the same read (one snapshot) on a store
    /// that can tell: the seq the answer reflects.
    fn get_many_with_head(&self, keys: &[Vec<u8>]) -> Result<ValuesAtHead> {
        Ok((self.get_many(keys)?, None))
    }
    /// [`Storage::range`] of the views (not the log), with the log's head as of the same read.
    fn range_with_head(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Option<u64>)> {
        Ok((self.range(start, end, reverse, limit)?, None))
    }
    /// Entries with `start <= key < end`, ascending, or descending when `reverse`; stops after
    /// `limit` entries when given. Errors are returned, never skipped.
    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>>;
    /// Makes every applied batch durable.
    fn flush(&self) -> Result<()>;
    /// Approximate bytes used on disk (0 for memory).
    fn size_on_disk(&self) -> Result<u64>;

    /// Whether other processes may append to this store (several nodes on one database): the
    /// writer then holds [`Storage::lock_writer`] while it builds and applies a commit, and
    /// catches up with their appends first.
    fn shared(&self) -> bool {
        false
    }

    /// Holds the store's writer lock, across processes, until the guard is dropped.
    fn lock_writer(&self) -> Result<WriterLock> {
        Ok(WriterLock(None))
    }

    /// Takes the lock `name` across processes if nobody holds it (None if someone does),
    /// until the guard is dropped: one driver of a durable listener among several servers.
    fn try_lock_named(&self, name: &str) -> Result<Option<WriterLock>> {
        let _ = name;
        Ok(Some(WriterLock(None)))
    }

    /// Learns of every append committed so far, by any process, before the reads that follow:
    /// a store that caches reads forgets those another process's appends may have made stale.
    /// Nothing to do on a store only this process writes. True if the log grew by appends this
    /// process had not learnt of (another's, or its own not yet accounted for).
    fn refresh(&self) -> Result<bool> {
        Ok(false)
    }

    /// Calls `wake` whenever another process may have appended to the log: a hint (the log
    /// stays the truth), for stores other processes write.
    fn follow(&self, wake: Box<dyn Fn() + Send>) -> Result<()> {
        drop(wake);
        Ok(())
    }
}

/// A held writer lock; released when dropped.
pub struct WriterLock(pub Option<Box<dyn Send>>);

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: no finite upper bound; a key of 0xff bytes longer than any real key works.
    vec![0xff; prefix.len() + 64]
}

/// All entries under `prefix`, ascending.
pub fn scan_prefix(storage: &dyn Storage, prefix: &[u8]) -> Result<Vec<KeyValue>> {
    storage.range(prefix, &prefix_end(prefix), false, None)
}
