//! Engine benchmarks: durable write throughput through the group-committing writer, the raw sled
//! 0.34.7 ceilings it is measured against (as in ../shared/perf/limits `sledbench`), and the cost
//! of opening and rebuilding a store of 100,000 record events.
//!
//! Run with `cargo bench --bench engine`. Everything is written under the system temp dir (a real
//! disk, so every flush is an fsync). Samples are few and short so the whole run stays within
//! minutes on a 2-core machine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use serde_json::{json, Map, Value};
use sled::Transactional;
use tidemark_engine::storage::{KeyValue, WriteBatch};
use tidemark_engine::{Acl, Command, Context, Engine, EngineConfig, Expect, FlushPolicy, Op, SledStorage, Storage};

/// The collection every benchmark record is written into.
const C: &str = "/buckets/b/collections/c";
/// Size of a benchmark record's JSON (and of a raw sled value), in bytes.
const RECORD_BYTES: usize = 300;
/// Record events in the store used by the restart and rebuild benchmarks.
const STORE_EVENTS: u64 = 100_000;
/// Commands per submission when building that store.
const BUILD_CHUNK: u64 = 100;
/// How many of the store's last events the views lack in the lagging-restart benchmark.
const LAG_EVENTS: u64 = 10_000;
/// Events written by `seed` (bucket `b`, collection `c`).
const SEED_EVENTS: u64 = 2;
/// Chunk size for raw key-range rewrites of the store.
const CHUNK: usize = 4096;

/// A ~300-byte record like the ones the HTTP workloads create.
fn record_data() -> Map<String, Value> {
    const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt \
        ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi \
        ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum.";
    let mut data = json!({"title": "Benchmark record", "x": 4242, "done": false, "tags": ["a", "b"], "text": ""});
    let base = data.to_string().len();
    data["text"] = json!(&LOREM[..RECORD_BYTES - base]);
    let data = data.as_object().cloned().expect("record data is a JSON object");
    assert_eq!(Value::Object(data.clone()).to_string().len(), RECORD_BYTES);
    data
}

fn put(parent: &str, resource: &str, id: &str, data: Map<String, Value>) -> Command {
    Command {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members: None,
        parent: parent.into(),
        id: id.into(),
        op: Op::Put { data, permissions: Acl::from([("write".into(), vec!["account:bench".into()])]) },
        expect: Expect::Any,
        last_modified: None,
        context: Context { user_id: Some("account:bench".into()), ..Context::default() },
    }
}

/// Creates bucket `b` and collection `c`.
fn seed(engine: &Engine) {
    engine
        .submit_blocking(vec![put("", "bucket", "b", Map::new()), put("/buckets/b", "collection", "c", Map::new())])
        .expect("seed bucket b and collection c");
}

fn always() -> EngineConfig {
    EngineConfig { flush: FlushPolicy::Always, ..EngineConfig::default() }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir for the benchmark store")
}

/// `iters` single-record submissions spread over `submitters` threads; returns the wall time
/// from the moment all threads are released until the last acknowledgement.
fn run_submitters(
    engine: &Engine,
    submitters: usize,
    iters: u64,
    next_id: &AtomicU64,
    data: &Map<String, Value>,
) -> Duration {
    let threads = (submitters as u64).min(iters).max(1);
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = iters / threads + u64::from(t < iters % threads);
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..share {
                        let id = format!("r{:09}", next_id.fetch_add(1, Ordering::Relaxed));
                        engine.submit_blocking(vec![put(C, "record", &id, data.clone())]).expect("durable submit");
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for handle in handles {
            handle.join().expect("submitter thread panicked");
        }
        start.elapsed()
    })
}

fn group_commit(c: &mut Criterion) {
    let data = record_data();
    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(1));
    for submitters in [1usize, 8, 64] {
        let dir = tempdir();
        let engine = Engine::open_sled(dir.path(), always()).expect("open the sled engine");
        seed(&engine);
        let next_id = AtomicU64::new(0);
        // Durable record creates/s (FlushPolicy::Always) with N threads each calling submit_blocking
        // with one Put; concurrent submissions share a flush through the writer's group commit.
        group.bench_function(format!("{submitters}_submitters"), |b| {
            b.iter_custom(|iters| run_submitters(&engine, submitters, iters, &next_id, &data))
        });
        engine.close();
    }
    group.finish();
}

/// A 300-byte value whose first 8 bytes are `i` (as in sledbench).
fn raw_value(i: u64) -> Vec<u8> {
    let mut v = vec![b'x'; RECORD_BYTES];
    v[..8].copy_from_slice(&i.to_be_bytes());
    v
}

fn open_raw_sled(path: &Path) -> sled::Db {
    sled::Config::new().path(path).cache_capacity(512 * 1024 * 1024).open().expect("open raw sled")
}

fn sled_ceiling(c: &mut Criterion) {
    let dir = tempdir();
    let mut group = c.benchmark_group("sled_ceiling");

    let db = open_raw_sled(&dir.path().join("tx3_flush"));
    let log = db.open_tree("log").expect("open tree log");
    let records = db.open_tree("records").expect("open tree records");
    let meta = db.open_tree("meta").expect("open tree meta");
    let mut next = 0u64;
    group.throughput(Throughput::Elements(1));
    // Events/s when each event is one sled transaction over 3 trees (log, record, collection
    // timestamp) followed by a flush: one durable commit per event, no grouping.
    group.bench_function("tx3_flush", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let i = next;
                next += 1;
                (&log, &records, &meta)
                    .transaction(|(log, records, meta)| {
                        log.insert(&i.to_be_bytes(), raw_value(i))?;
                        let key = format!("b/c/r{:08}", i % 10_000);
                        records.insert(key.as_bytes(), raw_value(i))?;
                        meta.insert(b"b/c", &i.to_be_bytes())?;
                        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                    })
                    .expect("sled transaction");
                db.flush().expect("sled flush");
            }
            start.elapsed()
        })
    });
    drop((log, records, meta, db));

    let db = open_raw_sled(&dir.path().join("batch25_flush"));
    let mut next = 0u64;
    group.throughput(Throughput::Elements(25));
    // Events/s when 25 300-byte inserts go into one tree as a single sled::Batch followed by one
    // flush (batches/s = events/s / 25): the shape of the engine's one-tree group commit.
    group.bench_function("batch25_flush", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut batch = sled::Batch::default();
                for _ in 0..25 {
                    batch.insert(&next.to_be_bytes(), raw_value(next));
                    next += 1;
                }
                db.apply_batch(batch).expect("sled apply_batch");
                db.flush().expect("sled flush");
            }
            start.elapsed()
        })
    });
    drop(db);
    group.finish();
}

/// Every key of the store except the log's, in chunks, so views can be snapshotted and reset.
fn non_log_entries(storage: &dyn Storage, mut visit: impl FnMut(Vec<KeyValue>)) {
    for (mut start, end) in [(vec![0u8], vec![b'L']), (vec![b'L' + 1], vec![0xffu8])] {
        loop {
            let chunk = storage.range(&start, &end, false, Some(CHUNK)).expect("scan the store");
            let Some((last, _)) = chunk.last() else { break };
            start = last.clone();
            start.push(0);
            visit(chunk);
        }
    }
}

/// Writes `STORE_EVENTS` record creates (in submissions of `BUILD_CHUNK`) into a new store in
/// `dir`, and returns every view entry as it stood `LAG_EVENTS` events before the end.
fn build_store(dir: &Path) -> Vec<KeyValue> {
    let data = record_data();
    let engine = Engine::open_sled(dir, always()).expect("open the sled engine to build the store");
    seed(&engine);
    let mut snapshot = Vec::new();
    let started = Instant::now();
    for chunk in 0..STORE_EVENTS / BUILD_CHUNK {
        if chunk * BUILD_CHUNK == STORE_EVENTS - LAG_EVENTS {
            non_log_entries(engine.storage(), |entries| snapshot.extend(entries));
        }
        let commands = (0..BUILD_CHUNK)
            .map(|i| put(C, "record", &format!("r{:06}", chunk * BUILD_CHUNK + i), data.clone()))
            .collect();
        engine.submit_blocking(commands).expect("build submission");
    }
    let events = STORE_EVENTS + SEED_EVENTS;
    let bytes = engine.storage().size_on_disk().expect("size on disk");
    eprintln!(
        "store: {events} events built in {:.1}s; {bytes} bytes on disk = {:.0} bytes/event",
        started.elapsed().as_secs_f64(),
        bytes as f64 / events as f64
    );
    engine.close();
    snapshot
}

/// Makes the views of the closed store in `dir` exactly `snapshot` (the log is left alone).
fn reset_views(dir: &Path, snapshot: &[KeyValue]) {
    let storage =
        SledStorage::open(dir, EngineConfig::default().cache_bytes).expect("open the store to reset its views");
    let mut stale = Vec::new();
    non_log_entries(&storage, |entries| stale.extend(entries.into_iter().map(|(k, _)| k)));
    for keys in stale.chunks(CHUNK) {
        let mut batch = WriteBatch::default();
        keys.iter().for_each(|k| batch.delete(k.clone()));
        storage.apply(batch).expect("delete views");
    }
    for entries in snapshot.chunks(CHUNK) {
        let mut batch = WriteBatch::default();
        entries.iter().for_each(|(k, v)| batch.put(k.clone(), v.clone()));
        storage.apply(batch).expect("restore views");
    }
    storage.flush().expect("flush the lagging store");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's dir");
    for entry in std::fs::read_dir(from).expect("read the store dir") {
        let entry = entry.expect("read a store dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("store entry type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a store file");
            // Durable before any timed open, so the kernel's writeback of the copy does not slow
            // the fsyncs that open performs.
            std::fs::File::open(&target).and_then(|f| f.sync_all()).expect("fsync the copied file");
        }
    }
}

/// Times `Engine::open_sled` on a fresh copy of `template` per iteration (the copy is untimed);
/// the engine is dropped untimed too. Checks how many events open replayed.
fn time_open_of_copies(template: &Path, scratch: &Path, iters: u64, replayed: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if scratch.exists() {
            std::fs::remove_dir_all(scratch).expect("remove the previous scratch store");
        }
        copy_dir(template, scratch);
        let start = Instant::now();
        let engine = Engine::open_sled(scratch, always()).expect("open a copy of the store");
        total += start.elapsed();
        assert_eq!(engine.opened().replayed, replayed, "events replayed on open");
        drop(engine);
    }
    total
}

/// Opens and closes the sled store in `dir` once, so sled folds its log into a fresh snapshot.
fn sled_recover_once(dir: &Path) {
    let storage =
        SledStorage::open(dir, EngineConfig::default().cache_bytes).expect("open the store for sled recovery");
    storage.flush().expect("flush after sled recovery");
}

fn store_100k(c: &mut Criterion) {
    let root = tempdir();
    let store: PathBuf = root.path().join("store");
    let snapshot = build_store(&store);
    // The store exactly as the writer left it: sled has not yet been reopened on it.
    let never_reopened = root.path().join("never_reopened");
    copy_dir(&store, &never_reopened);
    let lagging = root.path().join("lagging");
    copy_dir(&store, &lagging);
    reset_views(&lagging, &snapshot);
    drop(snapshot);
    sled_recover_once(&lagging);
    sled_recover_once(&store);
    let scratch = root.path().join("scratch");

    let mut group = c.benchmark_group("restart_to_ready_100k");
    group.sampling_mode(SamplingMode::Flat);
    // Time for Engine::open_sled on a 100k-event store with complete views (no replay) that sled
    // has already recovered once: sled's open plus the log-tail and applied-seq checks.
    group.bench_function("views_complete", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = Engine::open_sled(&store, always()).expect("reopen the store");
                total += start.elapsed();
                assert_eq!(engine.opened().replayed, 0, "complete views must not be replayed");
                drop(engine);
            }
            total
        })
    });
    // Time for the first Engine::open_sled after the 100k events were written (complete views, no
    // replay): sled 0.34 scans its whole log since its last snapshot, which it only takes on open.
    group.bench_function("first_open_after_writes", |b| {
        b.iter_custom(|iters| time_open_of_copies(&never_reopened, &scratch, iters, 0))
    });
    // Time for Engine::open_sled when the views lack the store's last 10k events (sled already
    // recovered): open replays them onto the views and flushes before the writer starts.
    group.bench_function("views_lag_10k", |b| {
        b.iter_custom(|iters| time_open_of_copies(&lagging, &scratch, iters, LAG_EVENTS))
    });
    group.finish();

    let engine = Engine::open_sled(&store, always()).expect("reopen the store for rebuild");
    let events = engine.opened().last_seq;
    let mut group = c.benchmark_group("rebuild_100k");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(events));
    // Events/s of Engine::rebuild: drop every view, replay the whole 100k-event log, flush.
    group.bench_function("replay_all", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                assert_eq!(engine.rebuild(&mut |_| {}).expect("rebuild"), events);
            }
            start.elapsed()
        })
    });
    group.finish();
    let bytes = engine.storage().size_on_disk().expect("size on disk");
    eprintln!("store after rebuilds: {bytes} bytes on disk = {:.0} bytes/event", bytes as f64 / events as f64);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = group_commit, sled_ceiling, store_100k
}
criterion_main!(benches);
