//! Reads of a store that other processes write too (PostgreSQL), cached in this process and
//! kept coherent through the log. Everything cached reflects the log up to one seq, `known`:
//! - the store answers each miss with the log's head in the same snapshot; a head past `known`
//!   (another process appended, or this one's append is landing) forgets everything cached,
//!   so no later read answers older than an earlier one (a list's timestamp is never newer than
//!   its records, and `_since` polling misses nothing);
//! - [`Storage::refresh`] reads the head alone, with the same effect;
//! - this process's own batches update the cache as they are applied.
//!
//! Metadata (`M`: listeners' cursors, which servers write outside the log) is always read from
//! the store: no append tells of its changes.
//!
//! A request passes a refresh that began after it arrived (`ReadBarrier`), so it sees every
//! change committed, on any server, before it arrived — for one round trip that concurrent
//! requests share, instead of one per read.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{prefix_end, KeyValue, Storage, WriteBatch, WriterLock};
use crate::error::{EngineError, Result};
use crate::keys;

/// Whether reads of keys in `start..end` may be cached: not if the range meets the metadata.
fn cacheable(start: &[u8], end: &[u8]) -> bool {
    end <= &[keys::META][..] || start >= &[keys::META + 1][..]
}

/// What a cached entry costs beyond its bytes (map slots, vectors' headers), roughly.
const ENTRY_OVERHEAD: usize = 64;

pub struct CoherentStorage {
    inner: Arc<dyn Storage>,
    state: Mutex<State>,
    /// Cached bytes beyond which the cache starts over.
    budget: usize,
}

#[derive(Default)]
struct State {
    /// Every cached read reflects the log up to this seq.
    known: u64,
    /// Bumped by every write this cache learns of: a read fills the cache only if none came
    /// between its query and its fill, so a stale answer is never kept.
    generation: u64,
    points: HashMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: HashMap<RangeQuery, Vec<KeyValue>>,
    bytes: usize,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RangeQuery {
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    limit: Option<usize>,
}

impl State {
    /// Takes into account an answer the store gave at `head`; true if it may be cached. A head
    /// past `known` forgets everything cached (all of it may be older than the answer).
    fn settle(&mut self, head: Option<u64>, generation: u64) -> bool {
        match head {
            Some(head) if head > self.known => {
                self.generation += 1;
                self.forget();
                self.known = head;
                true
            }
            Some(head) => head == self.known && self.generation == generation,
            None => false,
        }
    }

    fn forget(&mut self) {
        self.points.clear();
        self.ranges.clear();
        self.bytes = 0;
    }

    /// Makes room for `bytes` more, starting over when the budget is spent (simple, bounded,
    /// and the store stays the truth).
    fn reserve(&mut self, bytes: usize, budget: usize) {
        if self.bytes + bytes > budget {
            self.forget();
        }
        self.bytes += bytes;
    }

    /// This process's own write: cached points it touches take their new values, cached
    /// ranges it falls into are forgotten.
    fn write_through(&mut self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) {
        for (key, value) in ops {
            if let Some(slot) = self.points.get_mut(key) {
                let old = slot.as_ref().map_or(0, Vec::len);
                let new = value.as_ref().map_or(0, Vec::len);
                self.bytes = (self.bytes + new).saturating_sub(old);
                slot.clone_from(value);
            }
        }
        if self.ranges.is_empty() {
            return;
        }
        let written: BTreeSet<&[u8]> = ops.iter().map(|(key, _)| key.as_slice()).collect();
        let mut freed = 0;
        self.ranges.retain(|query, rows| {
            let bounds = (Bound::Included(query.start.as_slice()), Bound::Excluded(query.end.as_slice()));
            // (A range whose start is not below its end holds nothing, and `range` refuses it.)
            let touched = query.start < query.end && written.range::<&[u8], _>(bounds).next().is_some();
            if touched {
                freed += range_bytes(query, rows);
            }
            !touched
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

fn range_bytes(query: &RangeQuery, rows: &[KeyValue]) -> usize {
    query.start.len()
        + query.end.len()
        + ENTRY_OVERHEAD
        + rows.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>()
}

fn point_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// The seqs of the log entries a batch appends, lowest and highest.
fn appended(batch: &WriteBatch) -> Option<(u64, u64)> {
    batch.ops.iter().filter(|(_, value)| value.is_some()).filter_map(|(key, _)| keys::seq_of_log_key(key)).fold(
        None,
        |span, seq| match span {
            None => Some((seq, seq)),
            Some((low, high)) => Some((low.min(seq), high.max(seq))),
        },
    )
}

impl CoherentStorage {
    /// Caches reads of `inner` in up to about `budget` bytes.
    pub fn new(inner: Arc<dyn Storage>, budget: usize) -> CoherentStorage {
        CoherentStorage { inner, state: Mutex::new(State::default()), budget }
    }
}

impl Storage for CoherentStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let span = appended(&batch);
        let ops = batch.ops.clone();
        let result = self.inner.apply(batch);
        let mut state = self.state.lock();
        state.generation += 1;
        if result.is_err() {
            // Whether it landed is unknown.
            state.forget();
            return result;
        }
        match span {
            // Right after what the cache knows: nobody else's write came between.
            Some((first, last)) if first == state.known + 1 => {
                state.write_through(&ops);
                state.known = last;
            }
            Some((_, last)) => {
                state.forget();
                state.known = state.known.max(last);
            }
            // No append (a listener's cursor, a rebuild of the views).
            None => state.write_through(&ops),
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut values = self.get_many(std::slice::from_ref(&key.to_vec()))?;
        Ok(values.pop().flatten())
    }

    fn get_many(&self, wanted: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if wanted.iter().any(|key| key.first() == Some(&keys::META)) {
            return self.inner.get_many(wanted);
        }
        let mut values = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        let generation = {
            let state = self.state.lock();
            for key in wanted {
                match state.points.get(key) {
                    Some(value) => values.push(value.clone()),
                    None => {
                        missing.push(key.clone());
                        values.push(None);
                    }
                }
            }
            state.generation
        };
        if missing.is_empty() {
            return Ok(values);
        }
        let (fetched, head) = self.inner.get_many_with_head(&missing)?;
        let mut found: HashMap<Vec<u8>, Option<Vec<u8>>> = missing.into_iter().zip(fetched).collect();
        let mut state = self.state.lock();
        let keep = state.settle(head, generation);
        for (key, value) in wanted.iter().zip(values.iter_mut()) {
            if let Some(fetched) = found.remove(key) {
                if keep {
                    state.reserve(point_bytes(key, &fetched), self.budget);
                    state.points.insert(key.clone(), fetched.clone());
                }
                *value = fetched;
            }
        }
        Ok(values)
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        let head = reverse && limit == Some(1) && start == [keys::LOG] && end == [keys::LOG + 1];
        // The log's other ranges (events, read once each) and metadata are not kept.
        if !cacheable(start, end) || (keys::meets_log(start, end) && !head) {
            return self.inner.range(start, end, reverse, limit);
        }
        let query = RangeQuery { start: start.to_vec(), end: end.to_vec(), reverse, limit };
        let generation = {
            let state = self.state.lock();
            if let Some(rows) = state.ranges.get(&query) {
                return Ok(rows.clone());
            }
            state.generation
        };
        if head {
            return self.read_head(query, generation).map(|(rows, _)| rows);
        }
        let (rows, head) = self.inner.range_with_head(start, end, reverse, limit)?;
        let mut state = self.state.lock();
        if state.settle(head, generation) {
            state.reserve(range_bytes(&query, &rows), self.budget);
            state.ranges.insert(query, rows.clone());
        }
        Ok(rows)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn lock_writer(&self) -> Result<WriterLock> {
        self.inner.lock_writer()
    }

    fn try_lock_named(&self, name: &str) -> Result<Option<WriterLock>> {
        self.inner.try_lock_named(name)
    }

    fn follow(&self, wake: Box<dyn Fn() + Send>) -> Result<()> {
        self.inner.follow(wake)
    }

    fn refresh(&self) -> Result<bool> {
        let generation = self.state.lock().generation;
        self.read_head(head_query(), generation).map(|(_, moved)| moved)
    }
}

impl CoherentStorage {
    /// Reads the log's last entry from the store, and whether it is past what the cache knew.
    /// The writer reads the log's tail right after a refresh (the same query): answered from
    /// the cache.
    fn read_head(&self, query: RangeQuery, generation: u64) -> Result<(Vec<KeyValue>, bool)> {
        let rows = self.inner.range(&query.start, &query.end, query.reverse, query.limit)?;
        let head = match rows.first() {
            None => 0,
            Some((key, _)) => {
                keys::seq_of_log_key(key).ok_or_else(|| EngineError::Corrupt("malformed log key".into()))?
            }
        };
        let mut state = self.state.lock();
        let moved = head > state.known;
        if state.settle(Some(head), generation) {
            state.reserve(range_bytes(&query, &rows), self.budget);
            state.ranges.insert(query, rows.clone());
        }
        Ok((rows, moved))
    }
}

/// The query for the last log entry (as `replay::read_tail` asks it).
fn head_query() -> RangeQuery {
    RangeQuery { start: vec![keys::LOG], end: prefix_end(&[keys::LOG]), reverse: true, limit: Some(1) }
}

/// Lets a request through once a [`Storage::refresh`] that began after it arrived has ended;
/// the requests that arrive while one runs share the next.
#[derive(Default)]
pub struct ReadBarrier {
    /// How many refreshes have begun; each one's number is this count once it began.
    started: AtomicU64,
    /// The number of the last refresh that ended well.
    done: AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

impl ReadBarrier {
    /// Returns once a `check` that began after this call ended well (running it if none has
    /// begun since).
    pub async fn pass<F: std::future::Future<Output = Result<()>>>(&self, check: impl FnOnce() -> F) -> Result<()> {
        let arrived = self.started.load(Ordering::SeqCst);
        let _turn = self.turn.lock().await;
        if self.done.load(Ordering::SeqCst) > arrived {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        check().await?;
        self.done.store(number, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, ValuesAtHead};

    fn put(key: &[u8], value: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(key.to_vec(), value.to_vec());
        batch
    }

    fn append(seq: u64, key: &[u8], value: &[u8]) -> WriteBatch {
        let mut batch = put(key, value);
        batch.put(keys::log(seq), b"event".to_vec());
        batch
    }

    /// Two processes on one store: each sees the other's writes once it refreshes, and its own
    /// at once.
    #[test]
    fn reads_follow_own_writes_at_once_and_others_after_a_refresh() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let a = CoherentStorage::new(Arc::clone(&store), 1 << 20);
        let b = CoherentStorage::new(Arc::clone(&store), 1 << 20);
        a.apply(append(1, b"O/buckets/x", b"1")).expect("apply");
        assert_eq!(b.get(b"O/buckets/x").expect("get"), Some(b"1".to_vec()));
        assert_eq!(b.range(b"O", b"P", false, None).expect("range").len(), 1);

        a.apply(append(2, b"O/buckets/x", b"2")).expect("apply");
        a.apply(append(3, b"O/buckets/y", b"3")).expect("apply");
        assert_eq!(a.get(b"O/buckets/x").expect("get"), Some(b"2".to_vec()), "own writes are read at once");
        // b has not refreshed: it may answer from what it read (never anything older).
        assert_eq!(b.get(b"O/buckets/x").expect("get"), Some(b"1".to_vec()));
        b.refresh().expect("refresh");
        assert_eq!(b.get(b"O/buckets/x").expect("get"), Some(b"2".to_vec()));
        assert_eq!(b.range(b"O", b"P", false, None).expect("range").len(), 2);

        assert_eq!(a.get(b"O/buckets/y").expect("get"), Some(b"3".to_vec()));
        // b writes next: its cache knew seq 3, so its own append is written through...
        b.apply(append(4, b"O/buckets/y", b"4")).expect("apply");
        assert_eq!(b.get(b"O/buckets/y").expect("get"), Some(b"4".to_vec()));
        // ...and a, which knew seq 3 by its own writes, learns of b's on refresh.
        assert_eq!(a.range(b"O", b"P", false, None).expect("range").len(), 2);
        a.refresh().expect("refresh");
        assert_eq!(a.get(b"O/buckets/y").expect("get"), Some(b"4".to_vec()));
    }

    #[test]
    fn own_writes_update_cached_points_and_forget_the_ranges_they_fall_in() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let a = CoherentStorage::new(Arc::clone(&store), 1 << 20);
        a.apply(append(1, b"Ca", b"1")).expect("apply");
        assert_eq!(a.get(b"Cz").expect("get"), None);
        assert_eq!(a.range(b"Ca", b"Cb", false, None).expect("range").len(), 1);
        assert_eq!(a.range(b"Cx", b"Cy", false, None).expect("range").len(), 0);
        let mut batch = append(2, b"Cz", b"2");
        batch.delete(b"Ca".to_vec());
        a.apply(batch).expect("apply");
        assert_eq!(a.get(b"Cz").expect("get"), Some(b"2".to_vec()), "a cached absence is written through");
        assert!(a.range(b"Ca", b"Cb", false, None).expect("range").is_empty());
        // A write this process did not append (another's cursor, say) leaves unrelated reads.
        store.apply(put(b"Cx1", b"x")).expect("apply");
        assert!(a.range(b"Cx", b"Cy", false, None).expect("range").is_empty(), "untouched range kept");
    }

    /// A store whose reads let a write land between reading a value and returning it.
    struct Racing {
        store: MemoryStorage,
        write: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Storage for Racing {
        fn apply(&self, batch: WriteBatch) -> Result<()> {
            self.store.apply(batch)
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.store.get(key)
        }
        fn get_many_with_head(&self, keys: &[Vec<u8>]) -> Result<ValuesAtHead> {
            let answer = self.store.get_many_with_head(keys);
            if let Some(write) = self.write.lock().take() {
                write();
            }
            answer
        }
        fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
            self.store.range(start, end, reverse, limit)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_answered_but_not_kept() {
        let racing = Arc::new(Racing { store: MemoryStorage::new(), write: Mutex::new(None) });
        let a = Arc::new(CoherentStorage::new(racing.clone(), 1 << 20));
        a.apply(append(1, b"O/buckets/x", b"1")).expect("apply");
        let writer = Arc::clone(&a);
        *racing.write.lock() = Some(Box::new(move || writer.apply(append(2, b"O/buckets/x", b"2")).expect("apply")));
        assert_eq!(a.get(b"O/buckets/x").expect("get"), Some(b"1".to_vec()), "read before the write landed");
        assert_eq!(a.get(b"O/buckets/x").expect("get"), Some(b"2".to_vec()), "the stale answer was not cached");
    }

    /// A read the store answers past what the cache knows (another process appended) makes
    /// every later read at least as new: a list's timestamp read fresh is never followed by its
    /// records read stale.
    #[test]
    fn no_read_answers_older_than_an_earlier_one() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let a = CoherentStorage::new(Arc::clone(&store), 1 << 20);
        a.apply(append(1, b"O/buckets/x", b"1")).expect("apply");
        assert_eq!(a.range(b"O", b"P", false, None).expect("range").len(), 1);
        // Another process appends a record and the list's timestamp.
        let mut batch = append(2, b"O/buckets/y", b"2");
        batch.put(b"T/buckets".to_vec(), b"2".to_vec());
        store.apply(batch).expect("apply");
        assert_eq!(a.get(b"T/buckets").expect("get"), Some(b"2".to_vec()), "read from the store");
        assert_eq!(a.range(b"O", b"P", false, None).expect("range").len(), 2, "not the cached answer");
    }

    #[test]
    fn metadata_is_read_from_the_store_every_time() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let a = CoherentStorage::new(Arc::clone(&store), 1 << 20);
        let cursor = keys::listener_cursor("hook");
        assert_eq!(a.get(&cursor).expect("get"), None);
        assert!(a.range(b"A", b"Z", false, None).expect("range").is_empty());
        // Another server's listener moves the cursor: no append tells of it.
        store.apply(put(&cursor, b"7")).expect("apply");
        assert_eq!(a.get(&cursor).expect("get"), Some(b"7".to_vec()));
        assert_eq!(a.range(b"A", b"Z", false, None).expect("range").len(), 1);
    }

    #[test]
    fn the_budget_bounds_the_cache() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let small = CoherentStorage::new(Arc::clone(&store), 4 * ENTRY_OVERHEAD);
        for i in 0..100u32 {
            small.get(&i.to_be_bytes()).expect("get");
            assert!(small.state.lock().bytes <= 4 * ENTRY_OVERHEAD);
        }
    }

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Two processes, each with a writer (taking turns under one lock, as the writer lock does)
    /// and two readers: every "request" (a refresh, then reads) sees every write committed
    /// before it began, and no read in it answers older than what an earlier one showed.
    #[test]
    fn concurrent_requests_see_every_earlier_write_and_never_go_back() {
        const KEYS: u64 = 6;
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let head_query = head_query();
        let raw_head = |store: &dyn Storage| {
            let rows = store.range(&head_query.start, &head_query.end, true, Some(1)).expect("head");
            rows.first().and_then(|(key, _)| keys::seq_of_log_key(key)).unwrap_or(0)
        };
        let key = |k: u64| format!("O/k{k}").into_bytes();
        let seq_of = |value: Option<Vec<u8>>| value.map_or(0, |v| u64::from_be_bytes(v.try_into().expect("u64")));
        let turn = Arc::new(Mutex::new(()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // (key read, the seq its value came from, the newest seq the request knew of before).
        let observed = Arc::new(Mutex::new(Vec::<(u64, u64, u64)>::new()));
        std::thread::scope(|scope| {
            let mut writers = Vec::new();
            for process in 0..2u64 {
                // A small budget for one of them: the cache starts over now and then.
                let budget = if process == 0 { 1 << 20 } else { 2048 };
                let cache = Arc::new(CoherentStorage::new(Arc::clone(&store), budget));
                let (cache_w, turn) = (Arc::clone(&cache), Arc::clone(&turn));
                writers.push(scope.spawn(move || {
                    let mut rng = xorshift(process + 1);
                    for _ in 0..1000 {
                        let _turn = turn.lock();
                        cache_w.refresh().expect("refresh");
                        let tail = cache_w.range(&[keys::LOG], &prefix_end(&[keys::LOG]), true, Some(1)).expect("tail");
                        let head = tail.first().and_then(|(k, _)| keys::seq_of_log_key(k)).unwrap_or(0);
                        let k = rng() % KEYS;
                        let mut batch = WriteBatch::default();
                        batch.put(keys::log(head + 1), k.to_be_bytes().to_vec());
                        batch.put(key(k), (head + 1).to_be_bytes().to_vec());
                        cache_w.apply(batch).expect("apply");
                    }
                }));
                for reader in 0..2u64 {
                    let (cache, store, done, observed) =
                        (Arc::clone(&cache), Arc::clone(&store), Arc::clone(&done), Arc::clone(&observed));
                    scope.spawn(move || {
                        let mut rng = xorshift(10 + process * 2 + reader);
                        while !done.load(std::sync::atomic::Ordering::SeqCst) {
                            let mut newest = raw_head(store.as_ref());
                            cache.refresh().expect("refresh");
                            let mut seen = Vec::new();
                            for _ in 0..4 {
                                let reads: Vec<(u64, u64)> = if rng().is_multiple_of(2) {
                                    let k = rng() % KEYS;
                                    vec![(k, seq_of(cache.get(&key(k)).expect("get")))]
                                } else {
                                    let rows = cache.range(b"O/k", b"O/l", false, None).expect("range");
                                    (0..KEYS)
                                        .map(|k| {
                                            (
                                                k,
                                                seq_of(
                                                    rows.iter().find(|(rk, _)| *rk == key(k)).map(|(_, v)| v.clone()),
                                                ),
                                            )
                                        })
                                        .collect()
                                };
                                for (k, seq) in reads.iter().copied() {
                                    seen.push((k, seq, newest));
                                }
                                newest = reads.iter().map(|(_, seq)| *seq).fold(newest, u64::max);
                            }
                            observed.lock().extend(seen);
                        }
                    });
                }
            }
            for writer in writers {
                writer.join().expect("writer");
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Which key each seq wrote, from the log.
        let log = store.range(&[keys::LOG], &prefix_end(&[keys::LOG]), false, None).expect("log");
        assert_eq!(log.len(), 2000, "every append landed once");
        let wrote: Vec<u64> = log.iter().map(|(_, v)| u64::from_be_bytes(v.clone().try_into().expect("u64"))).collect();
        let observed = observed.lock();
        assert!(observed.len() > 100, "the readers read: {}", observed.len());
        for &(k, seq, newest) in observed.iter() {
            // No write of k after the one read, up to what the request already knew of.
            let missed = (seq + 1..=newest).find(|s| wrote[(*s - 1) as usize] == k);
            assert_eq!(missed, None, "key {k} read at seq {seq}, though the request knew of seq {newest}");
        }
    }
}
