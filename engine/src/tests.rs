//! Engine tests, run on both backends (sled and memory) where the backend matters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::storage::{KeyValue, Storage, WriteBatch};
use crate::*;

fn data(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn put(parent: &str, resource: &str, id: &str, v: Value) -> Command {
    // Groups are the principal source here, as in Kinto: their members come from `members`.
    let members = (resource == "group").then(|| {
        v.get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(String::from))
            .collect()
    });
    Command {
        resource: resource.into(),
        plural: format!("{resource}s"),
        members,
        parent: parent.into(),
        id: id.into(),
        op: Op::Put { data: data(v), permissions: Acl::from([("write".into(), vec!["u".into()])]) },
        expect: Expect::Any,
        last_modified: None,
        context: Context { user_id: Some("u".into()), ..Context::default() },
    }
}

fn delete(parent: &str, resource: &str, id: &str) -> Command {
    Command { op: Op::Delete, ..put(parent, resource, id, json!({})) }
}

const C: &str = "/buckets/b/collections/c";

fn seed(engine: &Engine) {
    engine
        .submit_blocking(vec![put("", "bucket", "b", json!({})), put("/buckets/b", "collection", "c", json!({}))])
        .expect("seed");
}

enum Backend {
    Memory,
    Sled(tempfile::TempDir),
    /// A database of its own (`TM_TEST_BACKEND=postgresql`, server at `TM_TEST_PG_URL`),
    /// dropped with the backend.
    Postgres {
        server: String,
        database: String,
    },
}

impl Backend {
    /// Memory and sled, and PostgreSQL when the environment asks for it.
    fn all() -> Vec<Backend> {
        let mut all = vec![Backend::Memory, Backend::Sled(tempfile::tempdir().expect("tempdir"))];
        if std::env::var("TM_TEST_BACKEND").is_ok_and(|b| b == "postgresql") {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let server =
                std::env::var("TM_TEST_PG_URL").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432".into());
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let database = format!("tm_engine_{}_{n}", std::process::id());
            all.push(Backend::Postgres { server: server.trim_end_matches('/').to_owned(), database });
        }
        all
    }

    /// The raw store, without an engine.
    fn storage(&self) -> Arc<dyn crate::Storage> {
        match self {
            Backend::Memory => Arc::new(crate::MemoryStorage::new()),
            Backend::Sled(dir) => Arc::new(crate::SledStorage::open(dir.path(), 1 << 20).expect("open sled")),
            Backend::Postgres { server, database } => {
                Arc::new(crate::PostgresStorage::open(&format!("{server}/{database}")).expect("open postgres"))
            }
        }
    }

    fn open(&self, config: EngineConfig) -> Engine {
        match self {
            Backend::Memory => Engine::open_memory(config).expect("open memory"),
            Backend::Sled(dir) => Engine::open_sled(dir.path(), config).expect("open sled"),
            Backend::Postgres { server, database } => {
                Engine::open_postgres(&format!("{server}/{database}"), config).expect("open postgres")
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { server, database } = self {
            let url = format!("{server}/postgres");
            let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
            let _ = std::thread::spawn(move || {
                postgres::Client::connect(&url, postgres::NoTls).and_then(|mut c| c.batch_execute(&sql))
            })
            .join();
        }
    }
}

#[test]
fn writes_become_gap_free_events_and_views() {
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        let events = engine.submit_blocking(vec![put(C, "record", "r1", json!({"x": 1}))]).expect("write");
        assert_eq!(events[0].seq, 3);
        assert_eq!(events[0].action, Action::Create);
        assert_eq!(events[0].prev_seq, None);
        let updated = engine.submit_blocking(vec![put(C, "record", "r1", json!({"x": 2}))]).expect("update");
        assert_eq!(updated[0].action, Action::Update);
        assert_eq!(updated[0].prev_seq, Some(3));
        let stored = engine.get(C, "records", "r1").expect("get").expect("present");
        assert_eq!(stored.data["x"], 2);
        assert_eq!(stored.data["id"], "r1");
        assert_eq!(stored.last_modified, updated[0].timestamp);
        assert_eq!(engine.list_timestamp(C, "records").expect("ts"), updated[0].timestamp);
        assert_eq!(engine.count(C, "records").expect("count"), 1);
        assert_eq!(engine.acl("/buckets/b/collections/c/records/r1").expect("acl")["write"], vec!["u".to_string()]);
        assert_eq!(engine.objects_of_principal("u").expect("index").len(), 3);
        let log = engine.events_from(1, 100).expect("log");
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let deleted = engine.submit_blocking(vec![delete(C, "record", "r1")]).expect("delete");
        assert_eq!(deleted[0].data, json!({"id": "r1", "last_modified": deleted[0].timestamp, "deleted": true}));
        assert_eq!(engine.count(C, "records").expect("count"), 0);
        assert!(engine.acl("/buckets/b/collections/c/records/r1").expect("acl").is_empty());
        assert!(engine.verify(&mut |_| {}).expect("verify").ok());
    }
}

#[test]
fn a_submission_commits_all_or_nothing() {
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        let before = engine.digest().expect("digest");
        let last = engine.last_seq().expect("seq");
        let mut failing = put(C, "record", "r2", json!({}));
        failing.expect = Expect::Live;
        let result = engine.submit_blocking(vec![put(C, "record", "r1", json!({})), failing]);
        assert!(matches!(result, Err(EngineError::PreconditionFailed { current: None })));
        assert_eq!(engine.digest().expect("digest"), before);
        assert_eq!(engine.last_seq().expect("seq"), last);
        // The next submission reuses the seq the failed one would have taken: no gap.
        let ok = engine.submit_blocking(vec![put(C, "record", "r1", json!({}))]).expect("write");
        assert_eq!(ok[0].seq, last + 1);
    }
}

#[test]
fn bad_commands_are_typed_errors() {
    let engine = Engine::open_memory(EngineConfig { max_object_bytes: 64, ..EngineConfig::default() }).expect("open");
    seed(&engine);
    let unknown = engine.submit_blocking(vec![put("/buckets/b/collections/zz", "record", "r", json!({}))]);
    assert!(matches!(unknown, Err(EngineError::UnknownParent(p)) if p == "/buckets/b/collections/zz"));
    let big = engine.submit_blocking(vec![put(C, "record", "r", json!({"s": "x".repeat(100)}))]);
    assert!(matches!(big, Err(EngineError::TooLarge { .. })));
    let bad = engine.submit_blocking(vec![put(C, "record", "a/b", json!({}))]);
    assert!(matches!(bad, Err(EngineError::InvalidCommand(_))));
    let missing = engine.submit_blocking(vec![delete(C, "record", "nope")]);
    assert!(matches!(missing, Err(EngineError::PreconditionFailed { .. })));
}

#[test]
fn deleting_a_collection_purges_everything_below_it() {
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        engine
            .submit_blocking(vec![put(C, "record", "r1", json!({})), put(C, "record", "r2", json!({}))])
            .expect("write");
        engine.submit_blocking(vec![delete(C, "record", "r2")]).expect("delete");
        engine.submit_blocking(vec![delete("/buckets/b", "collection", "c")]).expect("delete collection");
        assert!(engine.get(C, "records", "r1").expect("get").is_none());
        assert!(engine.get(C, "records", "r2").expect("get").is_none(), "child tombstones are purged too");
        assert!(engine.acl("/buckets/b/collections/c/records/r1").expect("acl").is_empty());
        assert_eq!(engine.count(C, "records").expect("count"), 0);
        engine.submit_blocking(vec![put("/buckets/b", "group", "g", json!({"members": ["m"]}))]).expect("group");
        assert_eq!(engine.groups_of("m").expect("groups").len(), 1);
        engine.submit_blocking(vec![delete("", "bucket", "b")]).expect("delete bucket");
        assert!(engine.groups_of("m").expect("groups").is_empty(), "a purged group grants nothing");
        assert!(engine.get("/buckets/b", "collections", "c").expect("get").is_none(), "purged with its bucket");
        assert!(engine.verify(&mut |_| {}).expect("verify").ok());
    }
}

#[test]
fn timestamps_strictly_increase_under_concurrent_submitters() {
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig { clock: Arc::new(ManualClock::new(1_000)), ..EngineConfig::default() });
        seed(&engine);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .map(|i| {
                            engine
                                .submit_blocking(vec![put(C, "record", &format!("t{t}-{i}"), json!({}))])
                                .expect("write")[0]
                                .clone()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut events: Vec<Arc<Event>> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        events.sort_by_key(|e| e.seq);
        let stamps: Vec<u64> = events.iter().map(|e| e.timestamp).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "timestamps follow commit order strictly");
        assert_eq!(events.len(), 800);
    }
}

#[test]
fn timestamps_never_go_back_across_a_restart_with_a_clock_stepped_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000);
    let config = || EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() };
    let last = {
        let engine = Engine::open_sled(dir.path(), config()).expect("open");
        seed(&engine);
        let e = engine.submit_blocking(vec![put(C, "record", "r1", json!({}))]).expect("write");
        engine.close();
        e[0].timestamp
    };
    clock.set(1_700_000_000_000 - 5_000);
    let engine = Engine::open_sled(dir.path(), config()).expect("reopen");
    let next = engine.submit_blocking(vec![put(C, "record", "r2", json!({}))]).expect("write");
    assert_eq!(next[0].timestamp, last + 1);
    assert_eq!(next[0].seq, 4);
}

#[test]
fn rebuild_is_byte_identical_and_export_import_round_trips() {
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        for i in 0..50 {
            engine.submit_blocking(vec![put(C, "record", &format!("r{}", i % 17), json!({"i": i}))]).expect("write");
            if i % 7 == 0 {
                let _ = engine.submit_blocking(vec![delete(C, "record", &format!("r{}", i % 5))]);
            }
        }
        engine.submit_blocking(vec![put("/buckets/b", "group", "g", json!({"members": ["u"]}))]).expect("group");
        assert_eq!(engine.groups_of("u").expect("groups"), vec!["/buckets/b/groups/g".to_string()]);
        let before = engine.digest().expect("digest");
        let replayed = engine.rebuild(&mut |_| {}).expect("rebuild");
        assert_eq!(replayed, engine.last_seq().expect("seq"));
        assert_eq!(engine.digest().expect("digest"), before);

        let mut exported = Vec::new();
        let count = engine.export(&mut exported, &mut |_| {}).expect("export");
        assert_eq!(count, replayed);
        let copy = Engine::open_memory(EngineConfig::default()).expect("open");
        assert_eq!(copy.import(&mut exported.as_slice(), &mut |_| {}).expect("import"), count);
        assert_eq!(copy.digest().expect("digest"), before);
        assert!(copy.verify(&mut |_| {}).expect("verify").ok());
        // A damaged line is refused.
        let text = String::from_utf8_lossy(&exported).replace("\"i\":3", "\"i\":4");
        let damaged = Engine::open_memory(EngineConfig::default()).expect("open");
        assert!(damaged.import(&mut text.as_bytes(), &mut |_| {}).is_err());
    }
}

#[test]
fn verify_detects_a_damaged_or_missing_event() {
    let engine = Engine::open_memory(EngineConfig::default()).expect("open");
    seed(&engine);
    engine.submit_blocking(vec![put(C, "record", "r1", json!({}))]).expect("write");
    let storage = engine.storage();
    let key = crate::keys::log(2);
    let mut value = storage.get(&key).expect("get").expect("present");
    let last = value.len() - 1;
    value[last] ^= 0x01;
    let mut batch = WriteBatch::default();
    batch.put(key.clone(), value);
    storage.apply(batch).expect("apply");
    let report = engine.verify(&mut |_| {}).expect("verify");
    assert!(!report.ok());
    let mut batch = WriteBatch::default();
    batch.delete(key);
    storage.apply(batch).expect("apply");
    let report = engine.verify(&mut |_| {}).expect("verify");
    assert!(report.problems.iter().any(|p| p.contains("gap")), "{:?}", report.problems);
}

/// A storage whose flush can be made to fail (fail-stop tests) and whose writes can be slowed.
struct FailingStorage {
    inner: Arc<dyn Storage>,
    fail_flush: AtomicBool,
    apply_delay_ms: std::sync::atomic::AtomicU64,
}

impl Storage for FailingStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(self.apply_delay_ms.load(Ordering::SeqCst)));
        self.inner.apply(batch)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        self.inner.range(start, end, reverse, limit)
    }
    fn flush(&self) -> Result<()> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(EngineError::Storage("injected flush failure".into()));
        }
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }
}

#[test]
fn a_failed_flush_is_never_acknowledged_and_stops_writes() {
    let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let failing = Arc::new(FailingStorage {
        inner: Arc::clone(&inner),
        fail_flush: AtomicBool::new(false),
        apply_delay_ms: Default::default(),
    });
    let engine = Engine::open(failing.clone(), EngineConfig::default()).expect("open");
    seed(&engine);
    failing.fail_flush.store(true, Ordering::SeqCst);
    let result = engine.submit_blocking(vec![put(C, "record", "r1", json!({"x": 1}))]);
    assert!(matches!(result, Err(EngineError::Unavailable(_))), "{result:?}");
    failing.fail_flush.store(false, Ordering::SeqCst);
    let refused = engine.submit_blocking(vec![put(C, "record", "r2", json!({}))]);
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "fail-stop: no write after a failure");
    assert!(engine.failure().is_some());
    engine.close();
    // Restart on what the disk holds: the write is wholly present or wholly absent.
    let reopened = Engine::open(inner, EngineConfig::default()).expect("reopen");
    let record = reopened.get(C, "records", "r1").expect("get");
    let logged = reopened.events_from(1, 100).expect("log").iter().any(|e| e.object_id == "r1");
    assert_eq!(record.is_some(), logged);
    assert!(reopened.verify(&mut |_| {}).expect("verify").ok());
    assert!(reopened.submit_blocking(vec![put(C, "record", "r3", json!({}))]).is_ok());
}

#[test]
fn open_replays_a_log_tail_the_views_lack() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let engine = Engine::open(Arc::clone(&storage), EngineConfig::default()).expect("open");
    seed(&engine);
    // The views as they stood at seq 2.
    let not_log = |storage: &dyn Storage| -> Vec<KeyValue> {
        storage
            .range(&[0], &[0xff], false, None)
            .expect("scan")
            .into_iter()
            .filter(|(k, _)| k[0] != crate::keys::LOG)
            .collect()
    };
    let views_at_2 = not_log(storage.as_ref());
    engine.submit_blocking(vec![put(C, "record", "r1", json!({}))]).expect("write");
    let digest = engine.digest().expect("digest");
    engine.close();
    drop(engine);
    // Simulate views that lag the log by one event.
    let mut batch = WriteBatch::default();
    for (key, _) in not_log(storage.as_ref()) {
        batch.delete(key);
    }
    for (key, value) in views_at_2 {
        batch.put(key, value);
    }
    storage.apply(batch).expect("apply");
    let reopened = Engine::open(storage, EngineConfig::default()).expect("reopen");
    assert_eq!(reopened.opened().replayed, 1);
    assert_eq!(reopened.digest().expect("digest"), digest);
}

#[test]
fn the_bus_gets_every_committed_event_and_reports_lag() {
    let engine = Engine::open_memory(EngineConfig { bus_capacity: 8, ..EngineConfig::default() }).expect("open");
    let mut fast = engine.bus().subscribe();
    let mut slow = engine.bus().subscribe();
    seed(&engine);
    // Publishing follows the answers: after each write, wait briefly for its event.
    let mut seqs = Vec::new();
    let mut drain = |until: u64, seqs: &mut Vec<u64>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while seqs.last().copied().unwrap_or(0) < until && std::time::Instant::now() < deadline {
            match fast.try_recv() {
                Ok(event) => seqs.push(event.seq),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        }
    };
    drain(2, &mut seqs);
    for i in 0..10 {
        let events = engine.submit_blocking(vec![put(C, "record", &format!("r{i}"), json!({}))]).expect("write");
        drain(events[0].seq, &mut seqs);
    }
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "every committed event, in commit order");
    assert!(matches!(slow.try_recv(), Err(tokio::sync::broadcast::error::TryRecvError::Lagged(4))));
    assert_eq!(slow.try_recv().map(|e| e.seq).ok(), Some(5), "then the newest 8 events remain");
}

mod model {
    //! Random command sequences with reopen points against an in-memory oracle of Kinto's
    //! semantics: current state, per-list timestamps, and changes since T.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Put { list: usize, id: usize, n: i64 },
        Delete { list: usize, id: usize },
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..2usize, 0..6usize, any::<i64>()).prop_map(|(list, id, n)| Step::Put { list, id, n }),
            3 => (0..2usize, 0..6usize).prop_map(|(list, id)| Step::Delete { list, id }),
            1 => Just(Step::Reopen),
        ]
    }

    const LISTS: [&str; 2] = ["/buckets/b/collections/c", "/buckets/b/collections/d"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn engine_matches_the_oracle(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let clock = ManualClock::new(1_000_000);
            let config = || EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() };
            let mut engine = Engine::open_sled(dir.path(), config()).expect("open");
            engine.submit_blocking(vec![
                put("", "bucket", "b", json!({})),
                put("/buckets/b", "collection", "c", json!({})),
                put("/buckets/b", "collection", "d", json!({})),
            ]).expect("seed");
            // oracle: (list, id) -> (n or deleted, last_modified)
            let mut state: BTreeMap<(usize, String), (Option<i64>, u64)> = BTreeMap::new();
            let mut list_ts: BTreeMap<usize, u64> = BTreeMap::new();
            for step in steps {
                // The clock sometimes stands still, sometimes steps back: order must hold anyway.
                clock.advance(1);
                match step {
                    Step::Put { list, id, n } => {
                        let id = format!("r{id}");
                        let events = engine.submit_blocking(vec![put(LISTS[list], "record", &id, json!({"n": n}))]).expect("put");
                        let ts = events[0].timestamp;
                        prop_assert!(ts > list_ts.get(&list).copied().unwrap_or(0));
                        list_ts.insert(list, ts);
                        state.insert((list, id), (Some(n), ts));
                    }
                    Step::Delete { list, id } => {
                        let id = format!("r{id}");
                        let live = matches!(state.get(&(list, id.clone())), Some((Some(_), _)));
                        let result = engine.submit_blocking(vec![delete(LISTS[list], "record", &id)]);
                        prop_assert_eq!(result.is_ok(), live);
                        if let Ok(events) = result {
                            let ts = events[0].timestamp;
                            prop_assert!(ts > list_ts.get(&list).copied().unwrap_or(0));
                            list_ts.insert(list, ts);
                            state.insert((list, id), (None, ts));
                        }
                    }
                    Step::Reopen => {
                        engine.close();
                        drop(engine);
                        clock.set(clock.now_ms() - 3);
                        engine = Engine::open_sled(dir.path(), config()).expect("reopen");
                    }
                }
            }
            for ((list, id), (n, ts)) in &state {
                let stored = engine.get(LISTS[*list], "records", id).expect("get").expect("present");
                prop_assert_eq!(stored.deleted, n.is_none());
                prop_assert_eq!(stored.last_modified, *ts);
                if let Some(n) = n {
                    prop_assert_eq!(&stored.data["n"], &json!(n));
                }
            }
            for (list, ts) in &list_ts {
                prop_assert_eq!(engine.list_timestamp(LISTS[*list], "records").expect("ts"), *ts);
                // changes since T: every id whose last change is after T, newest first.
                let mid = ts.saturating_sub(3);
                let mut expected: Vec<(u64, String)> = state
                    .iter()
                    .filter(|((l, _), (_, t))| l == list && *t > mid)
                    .map(|((_, id), (_, t))| (*t, id.clone()))
                    .collect();
                expected.sort();
                expected.reverse();
                let mut got = Vec::new();
                engine.walk_list(LISTS[*list], "records", ListRange { since: Some(mid), before: None }, ListOrder::Newest, |o| {
                    got.push((o.last_modified, o.id().to_owned()));
                    Ok(true)
                }).expect("walk");
                prop_assert_eq!(got, expected);
            }
            let report = engine.verify(&mut |_| {}).expect("verify");
            prop_assert!(report.ok());
        }
    }
}

#[test]
fn a_transaction_commits_its_fork_atomically_or_not_at_all() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        runtime.block_on(async {
            let tx = engine.begin().await.expect("begin");
            tx.engine().submit(vec![put(C, "record", "r1", json!({"v": 1}))]).await.expect("staged write");
            tx.engine().submit(vec![put(C, "record", "r1", json!({"v": 2}))]).await.expect("staged update");
            assert_eq!(tx.engine().get(C, "records", "r1").expect("get").expect("staged").data["v"], 2);
            assert!(engine.get(C, "records", "r1").expect("get").is_none(), "invisible before commit");
            // A writer arriving meanwhile waits for the lease.
            let waiting = {
                let engine = engine.clone();
                std::thread::spawn(move || engine.submit_blocking(vec![put(C, "record", "r2", json!({}))]))
            };
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiting.is_finished());
            let events = tx.commit().await.expect("commit");
            assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
            let other = waiting.join().expect("thread").expect("write after the lease");
            assert_eq!(other[0].seq, 5);
            assert_eq!(engine.get(C, "records", "r1").expect("get").expect("committed").data["v"], 2);

            let aborted = engine.begin().await.expect("begin");
            aborted.engine().submit(vec![put(C, "record", "r3", json!({}))]).await.expect("staged");
            drop(aborted);
            assert!(engine.get(C, "records", "r3").expect("get").is_none(), "dropped means discarded");
            engine.submit(vec![put(C, "record", "r4", json!({}))]).await.expect("writes resume");
        });
        assert!(engine.verify(&mut |_| {}).expect("verify").ok());
    }
}

#[test]
fn a_transaction_granted_before_the_previous_one_is_written_reads_through_it() {
    // Slow storage writes: each lease is granted while the previous transaction's writes are
    // still being applied, so every fork must read the counter through them.
    let slow = Arc::new(FailingStorage {
        inner: Arc::new(MemoryStorage::new()),
        fail_flush: AtomicBool::new(false),
        apply_delay_ms: Default::default(),
    });
    let engine = Engine::open(slow.clone(), EngineConfig::default()).expect("open");
    seed(&engine);
    engine.submit_blocking(vec![put(C, "record", "counter", json!({"v": 0}))]).expect("counter");
    slow.apply_delay_ms.store(3, Ordering::SeqCst);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let workers = (0..4).map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let tx = engine.begin().await.expect("begin");
                    let counter = tx.engine().get(C, "records", "counter").expect("get").expect("counter");
                    let v = counter.data["v"].as_u64().expect("v");
                    tx.engine().submit(vec![put(C, "record", "counter", json!({"v": v + 1}))]).await.expect("stage");
                    tx.commit().await.expect("commit");
                }
            })
        });
        for worker in workers.collect::<Vec<_>>() {
            worker.await.expect("worker");
        }
    });
    assert_eq!(engine.get(C, "records", "counter").expect("get").expect("counter").data["v"], 40);
    assert_eq!(engine.last_seq().expect("seq"), 3 + 40);
    assert!(engine.verify(&mut |_| {}).expect("verify").ok());
}

#[test]
fn what_a_transaction_read_is_carried_to_the_next_only_while_nothing_else_wrote() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for backend in Backend::all() {
        let engine = backend.open(EngineConfig::default());
        seed(&engine);
        runtime.block_on(async {
            let read = |tx: &Transaction| {
                tx.engine().get(C, "records", "r").expect("get").map(|o| o.data["v"].clone()).unwrap_or_default()
            };
            let tx = engine.begin().await.expect("begin");
            assert_eq!(read(&tx), Value::Null, "absent, and remembered as such");
            tx.engine().submit(vec![put(C, "record", "r", json!({"v": 1}))]).await.expect("stage");
            tx.commit().await.expect("commit");
            let tx = engine.begin().await.expect("begin");
            assert_eq!(read(&tx), json!(1), "the carried read includes the transaction's own write");
            drop(tx);
            engine.submit(vec![put(C, "record", "r", json!({"v": 2}))]).await.expect("plain write");
            let tx = engine.begin().await.expect("begin");
            assert_eq!(read(&tx), json!(2), "a write outside transactions drops what was carried");
            drop(tx);
            // A "fresh" id that exists after all is read, not assumed absent.
            let tx = engine.begin_with_fresh(&[(C, "records", "r"), (C, "records", "new")]).await.expect("begin");
            assert_eq!(read(&tx), json!(2));
            assert!(tx.engine().get(C, "records", "new").expect("get").is_none());
        });
        assert!(engine.verify(&mut |_| {}).expect("verify").ok());
    }
}

#[test]
fn reopening_a_store_waits_for_the_previous_handle_to_let_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first =
        crate::storage::SledStorage::open(dir.path(), crate::EngineConfig::default().cache_bytes).expect("first open");
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
    });
    let second = crate::storage::SledStorage::open(dir.path(), crate::EngineConfig::default().cache_bytes);
    assert!(second.is_ok(), "{:?}", second.err());
    holder.join().expect("holder");
}

/// sled 0.34.7 lists an interrupted snapshot (`snap.<lsn>.generating`, left by a kill between
/// its fsync and its rename) with the committed ones, picks the highest name and refuses to
/// open the store. Opening through the engine sets it aside and opens the store as it was.
#[test]
fn an_interrupted_sled_snapshot_is_set_aside_and_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open_sled(dir.path(), EngineConfig::default()).expect("open");
    seed(&engine);
    engine.submit_blocking(vec![put(C, "record", "r", json!({"n": 1}))]).expect("write");
    engine.close();
    drop(engine);
    let interrupted = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&interrupted, b"torn").expect("plant the interrupted snapshot");

    // The failure this guards against: sled itself will not open the store now.
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
    }
    std::fs::create_dir_all(copy.path().join("blobs")).expect("blobs");
    assert!(sled::Config::new().path(copy.path()).open().is_err(), "sled opens a store with a torn snapshot");

    let engine = Engine::open_sled(dir.path(), EngineConfig::default()).expect("reopen with the torn snapshot");
    let record = engine.get(C, "records", "r").expect("read").expect("the record is there");
    assert_eq!(record.data.get("n"), Some(&json!(1)));
    assert!(engine.verify(&mut |_| {}).expect("verify").ok());
    assert!(!interrupted.exists(), "the interrupted snapshot was moved");
    assert!(dir.path().join(crate::storage::SET_ASIDE_DIR).join("snap.FFFFFFFFFFFFFFFF.generating").exists());
}

/// A store written before the views followed URIs: its log is rewritten here as the old writer
/// wrote it (no URL segment, no members), and its views are stale. Opening rebuilds them.
#[test]
fn views_of_an_older_format_are_rebuilt_from_a_legacy_log() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let engine = Engine::open(Arc::clone(&storage), EngineConfig::default()).expect("open");
    seed(&engine);
    engine.submit_blocking(vec![put("/buckets/b", "group", "g", json!({"members": ["m"]}))]).expect("group");
    engine.submit_blocking(vec![put(C, "record", "r1", json!({"v": 1}))]).expect("record");
    let expected = engine.digest().expect("digest");
    engine.close();
    drop(engine);

    // Strip what the old format did not record, re-chain, and forget the views' format.
    let mut batch = WriteBatch::default();
    let mut chain = [0u8; 16];
    for (key, value) in storage.range(&[keys::LOG], &[keys::LOG + 1], false, None).expect("log") {
        let mut old = event::decode(&value).expect("decode").event;
        old.plural.clear();
        old.members = None;
        let (bytes, next) = event::encode(&old, &chain).expect("encode");
        chain = next;
        batch.put(key, bytes);
    }
    batch.delete(keys::views_format());
    batch.put(keys::member("m", "/buckets/b/groups/g"), Vec::new());
    batch.delete(keys::member_of_source("/buckets/b/groups/g", "m"));
    storage.apply(batch).expect("rewrite");

    let reopened = Engine::open(Arc::clone(&storage), EngineConfig::default()).expect("reopen");
    assert!(reopened.opened().replayed > 0, "the views were rebuilt");
    assert_eq!(reopened.digest().expect("digest"), expected, "legacy events derive the same views");
    let event = reopened.events_from(1, 100).expect("log").into_iter().find(|e| e.resource == "group").expect("group");
    assert_eq!(event.plural, "groups");
    assert_eq!(event.members, Some(vec!["m".to_owned()]), "a legacy group's members come from its data");
    assert_eq!(reopened.groups_of("m").expect("groups"), vec!["/buckets/b/groups/g".to_owned()]);
    assert!(reopened.verify(&mut |_| {}).expect("verify").ok());
}

/// The engine knows no resource by name: a kind with an irregular URL segment lives at its
/// segment, and any kind may be a principal source.
#[test]
fn objects_live_at_the_segment_they_are_given_and_any_kind_may_grant_membership() {
    let engine = Engine::open_memory(EngineConfig::default()).expect("open");
    let policy = Command {
        resource: "policy".into(),
        plural: "policies".into(),
        members: Some(vec!["alice".into()]),
        ..put("", "policy", "p1", json!({}))
    };
    let event = engine.submit_blocking(vec![policy.clone()]).expect("policy").remove(0);
    assert_eq!(event.uri(), "/policies/p1");
    assert_eq!(engine.acl("/policies/p1").expect("acl").get("write"), Some(&vec!["u".to_owned()]));
    assert_eq!(engine.groups_of("alice").expect("groups"), vec!["/policies/p1".to_owned()]);
    let rule = Command { parent: "/policies/p1".into(), ..put("/policies/p1", "rule", "r", json!({})) };
    engine.submit_blocking(vec![rule]).expect("a child of an irregular parent");
    let moved = Command { members: Some(vec!["bob".into()]), expect: Expect::Live, ..policy };
    engine.submit_blocking(vec![moved]).expect("members change");
    assert!(engine.groups_of("alice").expect("groups").is_empty());
    engine
        .submit_blocking(vec![Command { op: Op::Delete, ..put("", "policy", "p1", json!({})) }])
        .expect_err("wrong segment");
    let delete = Command { plural: "policies".into(), op: Op::Delete, ..put("", "policy", "p1", json!({})) };
    engine.submit_blocking(vec![delete]).expect("delete");
    assert!(engine.groups_of("bob").expect("groups").is_empty(), "a deleted source grants nothing");
    assert!(engine.get("/policies/p1", "rules", "r").expect("get").is_none(), "children purged");
    assert!(engine.verify(&mut |_| {}).expect("verify").ok());
}

/// Deleting an object deletes everything below it, each by an event of its own, deepest first,
/// in the same atomic commit; the views end as a purge leaves them.
#[test]
fn a_delete_cascades_as_one_event_per_object_below() {
    let engine = Engine::open_memory(EngineConfig::default()).expect("open");
    seed(&engine);
    engine.submit_blocking(vec![put("/buckets/b", "group", "g", json!({"members": ["m"]}))]).expect("group");
    engine
        .submit_blocking(vec![put(C, "record", "r1", json!({})), put(C, "record", "r2", json!({}))])
        .expect("records");
    engine.submit_blocking(vec![delete(C, "record", "r2")]).expect("a tombstone stays quiet");
    let events = engine.submit_blocking(vec![delete("", "bucket", "b")]).expect("delete bucket");
    let deleted: Vec<(String, String)> = events.iter().map(|e| (e.resource.clone(), e.uri())).collect();
    assert_eq!(
        deleted,
        [
            ("record".to_owned(), format!("{C}/records/r1")),
            ("collection".to_owned(), C.to_owned()),
            ("group".to_owned(), "/buckets/b/groups/g".to_owned()),
            ("bucket".to_owned(), "/buckets/b".to_owned()),
        ]
    );
    assert!(events.iter().all(|e| e.action == Action::Delete && e.context.user_id.as_deref() == Some("u")));
    assert!(engine.groups_of("m").expect("groups").is_empty());
    assert_eq!(engine.count(C, "records").expect("count"), 0);
    assert!(engine.get(C, "records", "r2").expect("get").is_none(), "tombstones purged too");
    // A refused delete deletes nothing below.
    seed(&engine);
    engine.submit_blocking(vec![put(C, "record", "r3", json!({}))]).expect("record");
    let refused = Command { expect: Expect::Version(1), ..delete("", "bucket", "b") };
    assert!(engine.submit_blocking(vec![refused]).is_err());
    assert!(engine.get(C, "records", "r3").expect("get").is_some_and(|o| !o.deleted));
    assert!(engine.verify(&mut |_| {}).expect("verify").ok());
}

/// The version at a moment is the newest (by seq) that the moment covers: found by one seek in
/// the versions index, or by the event chain for an object re-created with a past timestamp.
#[test]
fn versions_at_past_moments_by_index_and_by_chain() {
    for backend in Backend::all() {
        let clock = ManualClock::new(1_000);
        let engine = backend.open(EngineConfig { clock: Arc::new(clock.clone()), ..EngineConfig::default() });
        seed(&engine);
        let write = |command: Command| engine.submit_blocking(vec![command]).expect("write").remove(0);
        let mut versions = Vec::new();
        for n in 0..5 {
            clock.advance(10);
            versions.push(write(put(C, "record", "r", json!({ "n": n }))));
        }
        for (n, event) in versions.iter().enumerate() {
            let at_ts = engine.object_at(C, "records", "r", AsOf::Timestamp(event.timestamp)).expect("read");
            assert_eq!(at_ts.map(|o| o.data["n"].clone()), Some(json!(n)));
            let between = engine.object_at(C, "records", "r", AsOf::Timestamp(event.timestamp + 5)).expect("read");
            assert_eq!(between.map(|o| o.data["n"].clone()), Some(json!(n)));
            let at_seq = engine.object_at(C, "records", "r", AsOf::Seq(event.seq)).expect("read");
            assert_eq!(at_seq.map(|o| o.data["n"].clone()), Some(json!(n)));
        }
        let first = versions[0].timestamp;
        assert!(engine.object_at(C, "records", "r", AsOf::Timestamp(first - 1)).expect("read").is_none());

        // Deleted, then re-created with a client's timestamp from before the tombstone, then
        // updated: the tombstone is newer in time than the re-creation but older in the log.
        clock.advance(10);
        let tombstone = write(delete(C, "record", "r"));
        clock.advance(10);
        let past = tombstone.timestamp - 5;
        let recreated = write(Command { last_modified: Some(past), ..put(C, "record", "r", json!({"n": "again"})) });
        assert_eq!(recreated.timestamp, past);
        clock.advance(10);
        write(put(C, "record", "r", json!({"n": "last"})));
        let at =
            |ts| engine.object_at(C, "records", "r", AsOf::Timestamp(ts)).expect("read").map(|o| o.data["n"].clone());
        assert_eq!(at(tombstone.timestamp), Some(json!("again")), "the newest version by seq with ts <= T");
        assert_eq!(at(past - 1), Some(json!(4)));
        assert_eq!(at(versions[4].timestamp), Some(json!(4)));
    }
}

/// Every backend orders the keyspace as memory does, the log's entries among the views (on
/// PostgreSQL they are two tables): ranges within, across and around the log, either way, with
/// and without a limit, from bounds that are no whole key.
#[test]
fn every_backend_ranges_over_views_and_log_alike() {
    use crate::storage::{prefix_end, WriteBatch};
    let reference = crate::MemoryStorage::new();
    let mut batch = WriteBatch::default();
    for seq in 1..=5u64 {
        batch.put(keys::log(seq), format!("event {seq}").into_bytes());
    }
    for key in ["A/x", "K", "Kz", "M", "M/a", "O/buckets/b"] {
        batch.put(key.as_bytes().to_vec(), key.as_bytes().to_vec());
    }
    reference.apply(batch.clone()).expect("apply");
    let mut log_3_and_more = keys::log(3);
    log_3_and_more.push(0);
    let bounds: Vec<Vec<u8>> = vec![
        vec![],
        b"K".to_vec(),
        vec![keys::LOG],
        vec![keys::LOG, 0, 0, 0, 0, 0, 0, 0],
        keys::log(2),
        log_3_and_more,
        keys::log(5),
        prefix_end(&[keys::LOG]),
        b"M/".to_vec(),
        vec![0xff; 4],
    ];
    for backend in Backend::all() {
        let store = backend.storage();
        store.apply(batch.clone()).expect("apply");
        for start in &bounds {
            for end in &bounds {
                for reverse in [false, true] {
                    for limit in [None, Some(1), Some(3)] {
                        assert_eq!(
                            store.range(start, end, reverse, limit).expect("range"),
                            reference.range(start, end, reverse, limit).expect("range"),
                            "{start:?}..{end:?} reverse {reverse} limit {limit:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(store.get(&keys::log(4)).expect("get"), Some(b"event 4".to_vec()));
        let wanted = vec![keys::log(2), b"K".to_vec(), keys::log(9), b"M".to_vec()];
        assert_eq!(store.get_many(&wanted).expect("get"), reference.get_many(&wanted).expect("get"));
    }
}

/// On PostgreSQL an append is a compare-and-set on the log's head: a batch whose first entry
/// does not follow the log, or takes a seq already taken, is refused whole.
#[test]
fn an_append_that_does_not_follow_the_log_is_refused_whole() {
    use crate::storage::WriteBatch;
    let Some(backend) = Backend::all().into_iter().find(|b| matches!(b, Backend::Postgres { .. })) else {
        return; // TM_TEST_BACKEND=postgresql runs it
    };
    let store = backend.storage();
    let batch = |seqs: &[u64], view: &str| {
        let mut batch = WriteBatch::default();
        for seq in seqs {
            batch.put(keys::log(*seq), b"event".to_vec());
        }
        batch.put(view.as_bytes().to_vec(), b"v".to_vec());
        batch
    };
    store.apply(batch(&[1, 2], "O/one")).expect("the first entries");
    for (seqs, view) in [(&[4u64][..], "O/gap"), (&[2][..], "O/taken"), (&[1, 2, 3][..], "O/overlap")] {
        let refused = store.apply(batch(seqs, view)).expect_err("refused");
        assert!(refused.to_string().contains("refusing to fork the log"), "{refused}");
        assert_eq!(store.get(view.as_bytes()).expect("get"), None, "nothing of a refused batch lands");
    }
    store.apply(batch(&[3], "O/three")).expect("the next entry");
    assert_eq!(store.range(&[keys::LOG], &[keys::LOG + 1], false, None).expect("log").len(), 3);
}

/// A database written when the log's entries lived among the views: they move to the log's
/// table when a server opens it.
#[test]
fn log_entries_stored_among_the_views_move_to_the_log_table() {
    let Some(backend) = Backend::all().into_iter().find(|b| matches!(b, Backend::Postgres { .. })) else {
        return; // TM_TEST_BACKEND=postgresql runs it
    };
    let Backend::Postgres { server, database } = &backend else { return };
    let url = format!("{server}/{database}");
    drop(backend.storage()); // creates the database
    let (old_url, entries) = (url.clone(), vec![keys::log(1), keys::log(2)]);
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&old_url, postgres::NoTls).expect("connect");
        client.batch_execute("DROP TABLE tidemark_log").expect("drop");
        for key in entries {
            client.execute("INSERT INTO tidemark_kv (k, v) VALUES ($1, 'e')", &[&key]).expect("insert");
        }
    })
    .join()
    .expect("old layout");
    let store = backend.storage();
    let log = store.range(&[keys::LOG], &[keys::LOG + 1], false, None).expect("log");
    assert_eq!(log.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![keys::log(1), keys::log(2)]);
    let left = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let row = client
            .query_one("SELECT count(*) FROM tidemark_kv WHERE k >= '\\x4c' AND k < '\\x4d'", &[])
            .expect("count");
        row.get::<_, i64>(0)
    })
    .join()
    .expect("count");
    assert_eq!(left, 0, "no log entry left among the views");
}

/// Two engines on one PostgreSQL database (two servers): their writers take turns under the
/// database's writer lock, each catching up with the other's appends first, so the log stays
/// one gap-free chain; each engine's bus carries every event of both, once, in seq order.
#[test]
fn two_engines_on_one_database_take_turns_and_publish_each_others_events() {
    let Some(backend) = Backend::all().into_iter().find(|b| matches!(b, Backend::Postgres { .. })) else {
        return; // TM_TEST_BACKEND=postgresql runs it
    };
    let a = backend.open(EngineConfig::default());
    seed(&a);
    let b = backend.open(EngineConfig::default());
    let (mut bus_a, mut bus_b) = (a.bus().subscribe(), b.bus().subscribe());
    let writers: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, engine)| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("w{w}-{i}");
                    engine.submit_blocking(vec![put(C, "record", &id, json!({"w": w}))]).expect("write");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    // Reads see the other's writes once synced, as a request does first.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for engine in [&a, &b] {
        runtime.block_on(engine.sync_reads()).expect("sync");
    }
    let last = a.last_seq().expect("seq");
    assert_eq!(last, 102, "2 seeds and 100 writes, each seq taken once");
    assert_eq!(b.last_seq().expect("seq"), last);
    // Each bus: every event after the subscription, in order, once.
    for (name, bus) in [("a", &mut bus_a), ("b", &mut bus_b)] {
        let mut seqs = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seqs.last().copied().unwrap_or(0) < last && std::time::Instant::now() < deadline {
            match bus.try_recv() {
                Ok(event) => seqs.push(event.seq),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let first = seqs.first().copied().unwrap_or(0);
        assert!(first <= 3, "bus {name} starts at the first write: {first}");
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "bus {name}");
    }
    for engine in [&a, &b] {
        assert_eq!(engine.get(C, "records", "w1-24").expect("read").map(|o| o.data["w"].clone()), Some(json!(1)));
    }
    drop(b);
    let report = a.verify(&mut |_| {}).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// One durable listener run by two engines sharing a PostgreSQL database (two servers with the
/// same webhook): each batch is handled under the listener's lock from the stored cursor, so
/// every event is handled once, by one of them.
#[test]
fn a_listener_on_two_engines_sharing_a_database_handles_each_event_once() {
    use crate::listeners::{spawn_listener_with, HandleFuture, Listener, ListenerOptions};
    let Some(backend) = Backend::all().into_iter().find(|b| matches!(b, Backend::Postgres { .. })) else {
        return; // TM_TEST_BACKEND=postgresql runs it
    };
    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>);
    impl Listener for Seen {
        fn handle<'a>(&'a self, events: &'a [Arc<Event>]) -> HandleFuture<'a> {
            Box::pin(async move {
                self.0.lock().extend(events.iter().map(|e| e.seq));
                Ok(())
            })
        }
    }
    let a = backend.open(EngineConfig::default());
    seed(&a);
    let b = backend.open(EngineConfig::default());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    runtime.block_on(async {
        let options =
            || ListenerOptions { poll_interval: std::time::Duration::from_millis(5), ..ListenerOptions::default() };
        let ha = spawn_listener_with(a.clone(), "hook", seen_a.clone(), options()).expect("listener a");
        let hb = spawn_listener_with(b.clone(), "hook", seen_b.clone(), options()).expect("listener b");
        for i in 0..60 {
            let engine = if i % 2 == 0 { &a } else { &b };
            engine.submit(vec![put(C, "record", &format!("r{i}"), json!({}))]).await.expect("write");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while seen_a.0.lock().len() + seen_b.0.lock().len() < 60 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A moment more: a duplicate would show up now.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ha.stop().await;
        hb.stop().await;
    });
    let mut all: Vec<u64> = seen_a.0.lock().iter().chain(seen_b.0.lock().iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (3..=62).collect::<Vec<_>>(), "each event once, by one engine or the other");
    assert_eq!(a.listener_cursor("hook").expect("cursor"), 62);
}
