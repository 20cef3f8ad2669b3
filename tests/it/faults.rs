//! Storage faults: a write or flush of the suite's backend (memory, sled or PostgreSQL, per
//! `TM_TEST_BACKEND`) fails at a random point under concurrent writers — refused outright, or
//! committed with its answer lost (a connection dropped after PostgreSQL's commit). The failed
//! write gets no 2xx (503), every later write is refused until a restart, reads go on; after the
//! restart the log verifies, every acknowledged write is there, and each refused one is wholly
//! present or wholly absent. (Faults inside the file system — failed, torn writes and failed
//! fsyncs under sled — are the crash test's, `tests/crash.rs`.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tidemark_engine::storage::{CoherentStorage, KeyValue, ValuesAtHead, WriteBatch, WriterLock};
use tidemark_engine::{Engine, EngineConfig, EngineError, MemoryStorage, PostgresStorage, SledStorage, Storage};

use crate::common::{backend, backend_settings, test_settings, Server, ALICE};

const R: &str = "/buckets/b/collections/c/records";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// The batch is refused before anything of it lands.
    Apply,
    /// The batch lands, but its caller is told it failed (the answer was lost).
    ApplyLost,
    /// The batch landed but the flush that should make it durable fails.
    Flush,
}

/// The backend's storage, shared across "restarts", failing the `countdown`-th apply or flush
/// once armed; everything else passes through.
struct FaultyDisk {
    inner: Arc<dyn Storage>,
    fault: Fault,
    countdown: AtomicI64,
    armed: AtomicBool,
}

impl FaultyDisk {
    fn trips(&self, at: &[Fault]) -> bool {
        at.contains(&self.fault)
            && self.armed.load(Ordering::SeqCst)
            && self.countdown.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

impl Storage for FaultyDisk {
    fn apply(&self, batch: WriteBatch) -> Result<(), EngineError> {
        if self.trips(&[Fault::Apply, Fault::ApplyLost]) {
            if self.fault == Fault::ApplyLost {
                self.inner.apply(batch)?;
            }
            return Err(EngineError::Storage("injected write failure".into()));
        }
        self.inner.apply(batch)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        self.inner.get_many(keys)
    }
    fn get_many_with_head(&self, keys: &[Vec<u8>]) -> Result<ValuesAtHead, EngineError> {
        self.inner.get_many_with_head(keys)
    }
    fn range_with_head(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Option<u64>), EngineError> {
        self.inner.range_with_head(start, end, reverse, limit)
    }
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.inner.range(start, end, reverse, limit)
    }
    fn flush(&self) -> Result<(), EngineError> {
        if self.trips(&[Fault::Flush]) {
            return Err(EngineError::Storage("injected flush failure".into()));
        }
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.inner.size_on_disk()
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn lock_writer(&self) -> Result<WriterLock, EngineError> {
        self.inner.lock_writer()
    }
    fn try_lock_named(&self, name: &str) -> Result<Option<WriterLock>, EngineError> {
        self.inner.try_lock_named(name)
    }
    fn refresh(&self) -> Result<bool, EngineError> {
        self.inner.refresh()
    }
    fn follow(&self, wake: Box<dyn Fn() + Send>) -> Result<(), EngineError> {
        self.inner.follow(wake)
    }
}

/// The suite backend's store, bare (the fault goes between it and the engine), and the engine's
/// view of a store: on PostgreSQL, the per-server cache over it.
fn backend_store(dir: &std::path::Path) -> Arc<dyn Storage> {
    match backend().as_str() {
        "memory" => Arc::new(MemoryStorage::new()),
        "postgresql" => {
            let url = backend_settings()
                .into_iter()
                .find(|(key, _)| key == "storage_url")
                .map(|(_, url)| url)
                .expect("storage_url");
            Arc::new(PostgresStorage::open(&url).expect("open postgresql"))
        }
        _ => Arc::new(SledStorage::open(&dir.join("faulty-store"), 1 << 24).expect("open sled")),
    }
}

fn as_engine_sees(store: Arc<dyn Storage>) -> Arc<dyn Storage> {
    if store.shared() {
        Arc::new(CoherentStorage::new(store, 1 << 24))
    } else {
        store
    }
}

/// What one writer saw: acknowledged ids with their data, and the ids whose write failed.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, Value>,
    refused: BTreeMap<String, Value>,
    statuses: Vec<u16>,
}

async fn one_run(fault: Fault, point: i64) {
    let (settings, dir) = test_settings(&[]);
    // The store outlives the server (its directory goes with it): the restart reopens it.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let inner = backend_store(store_dir.path());
    let disk = Arc::new(FaultyDisk {
        inner: Arc::clone(&inner),
        fault,
        countdown: AtomicI64::new(point),
        armed: AtomicBool::new(false),
    });
    let engine =
        Engine::open(as_engine_sees(Arc::clone(&disk) as Arc<dyn Storage>), EngineConfig::default()).expect("engine");
    let s = Arc::new(Server::start_engine(engine, settings, dir).await);
    s.seed().await;
    disk.armed.store(true, Ordering::SeqCst);

    let mut writers = Vec::new();
    for w in 0..4 {
        let s = Arc::clone(&s);
        writers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            for i in 0..40 {
                let id = format!("w{w}-{i}");
                let data = json!({"writer": w, "i": i});
                let r = s.put(&format!("{R}/{id}"), Some(ALICE), json!({ "data": data })).await;
                seen.statuses.push(r.status.as_u16());
                if r.status.is_success() {
                    seen.acked.insert(id, data);
                } else {
                    assert_eq!((r.status.as_u16(), r.errno()), (503, 201), "{}", r.body);
                    seen.refused.insert(id, data);
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for writer in writers {
        let seen = writer.await.expect("writer");
        all.acked.extend(seen.acked);
        all.refused.extend(seen.refused);
        all.statuses.extend(seen.statuses);
    }
    assert!(!all.refused.is_empty(), "{fault:?} at {point}: the fault tripped");
    // Once refused, always refused: no 2xx after a writer's first 503 until the restart.
    let refused_after = s.put(&format!("{R}/late"), Some(ALICE), json!({})).await;
    assert_eq!(refused_after.status, 503, "writes stay refused");
    assert_eq!(s.get("/buckets/b", Some(ALICE)).await.status, 200, "reads go on");
    let heartbeat = s.get("/__heartbeat__", None).await;
    assert_eq!((heartbeat.status.as_u16(), heartbeat.body["engine"]["writable"].clone()), (503, json!(false)));
    match Arc::try_unwrap(s) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("server still shared"),
    }

    // The restart: a new engine over what the disk holds.
    let engine = Engine::open(as_engine_sees(inner), EngineConfig::default()).expect("reopen");
    let report = engine.verify(&mut |_| {}).expect("verify");
    assert!(report.ok(), "{fault:?} at {point}: {:?}", report.problems);
    let stored = |id: &str| {
        engine.get("/buckets/b/collections/c", "records", id).expect("read").filter(|o| !o.deleted).map(|o| {
            let mut data = o.data;
            data.remove("id");
            data.remove("last_modified");
            Value::Object(data)
        })
    };
    for (id, data) in &all.acked {
        assert_eq!(stored(id).as_ref(), Some(data), "{fault:?} at {point}: acknowledged {id}");
    }
    for (id, data) in &all.refused {
        if let Some(found) = stored(id) {
            assert_eq!(&found, data, "{fault:?} at {point}: refused {id} is there, then wholly");
        }
    }
    assert!(stored("late").is_none(), "a write refused after the failure never lands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_or_flush_is_never_acknowledged_and_stops_writes_until_restart() {
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
            | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Each kind at a random point among the first writes of 4 concurrent writers (a group commit
    // applies once and flushes once for several of them).
    for fault in [Fault::Apply, Fault::ApplyLost, Fault::Flush, Fault::Apply, Fault::ApplyLost, Fault::Flush] {
        let point = 1 + (next() % 24) as i64;
        eprintln!("storage fault on {}: {fault:?} at operation {point}", backend());
        one_run(fault, point).await;
    }
}
