//! Tidemark's event-sourced store. No HTTP.
//!
//! Contract:
//! - The **change log** is the source of truth: every write is an [`Event`] appended under a
//!   gap-free `seq`, checksummed and hash-chained, never rewritten.
//! - The **views** (objects, list timestamps, changes index, counts, ACLs and the principal
//!   index) are derived from the log by one function (`views::apply_event`), written in the same
//!   atomic batch as the events they reflect, and can be rebuilt from the log alone.
//! - The **writer** thread is the only mutator; it group-commits and flushes per
//!   [`FlushPolicy`] before answering. Reads never go through it: they read the views directly.
//! - After a commit, events are offered to the [`bus::Bus`] without ever waiting on a subscriber.
//! - The engine knows no resource by name: a command says where its object lives (parent URI and
//!   list segment, so its URI is `{parent}/{plural}/{id}`) and, for a principal source such as a
//!   Kinto group, whom it makes members. Every event records both, so the log alone rebuilds
//!   the views.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod applier;
pub mod bus;
pub mod clock;
pub mod disk;
mod durable;
pub mod error;
pub mod event;
mod keys;
pub mod listeners;
pub mod object;
pub mod observe;
mod read;
mod replay;
pub mod storage;
mod txn;
mod views;
mod writer;

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{EngineError, Result};
pub use event::{Action, Context, Event};
pub use object::{object_uri, split_uri, Acl, RawObject, StoredObject};
pub use observe::{Health, Observer};
pub use read::{AsOf, HistoryEntry, ListOrder, ListRange};
pub use replay::{digest, VerifyReport};
pub use storage::{sled_store_exists, MemoryStorage, PostgresStorage, SledStorage, Storage};
pub use writer::{Command, Expect, Op};

use writer::{Grant, LeaseOutcome, LeaseRequest, Message, Submission, Writer, WriterState};

/// How a transaction's fork starts: where the log ends, and where its events are kept.
struct Fork {
    tail: replay::LogTail,
    journal: Arc<Mutex<Vec<Arc<Event>>>>,
}

/// When an acknowledged write reaches the disk ("durable": fsynced, so it survives a power cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Durable before every acknowledgement (group commit). The default.
    Always,
    /// Made durable in the background every N ms: a power cut may lose what was acknowledged
    /// in the last N ms (plus the duration of one flush).
    IntervalMs(u64),
    /// Never made durable explicitly (only at a clean close, and when sled fsyncs for its
    /// own reasons): a power cut may lose any acknowledged write since then.
    None,
}

#[derive(Clone)]
pub struct EngineConfig {
    pub flush: FlushPolicy,
    pub clock: Arc<dyn Clock>,
    /// Largest object (compact JSON of its data) the engine accepts.
    pub max_object_bytes: usize,
    /// Events the bus keeps for subscribers that read late.
    pub bus_capacity: usize,
    /// The on-disk store's page cache (sled's `cache_capacity`), in bytes.
    pub cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            flush: FlushPolicy::Always,
            clock: Arc::new(SystemClock),
            max_object_bytes: 8 * 1024 * 1024,
            bus_capacity: 4096,
            cache_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Work staged on a fork of the store while holding the writer (see [`Engine::begin`]).
pub struct Transaction {
    fork: Engine,
    overlay: Arc<storage::OverlayStorage>,
    /// The events committed on the fork, in order.
    journal: Arc<Mutex<Vec<Arc<Event>>>>,
    outcome: crossbeam_channel::Sender<LeaseOutcome>,
}

impl Transaction {
    /// The fork: reads see the transaction's own writes; writes stay staged until commit.
    pub fn engine(&self) -> &Engine {
        &self.fork
    }

    /// Appends everything written on the fork to the real log, atomically, and returns the
    /// committed events.
    pub async fn commit(self) -> Result<Vec<Arc<Event>>> {
        let events = std::mem::take(&mut *self.journal.lock());
        let chain = match &self.fork.inner.inline {
            Some(writer) => writer.lock().state.chain,
            None => return Err(EngineError::InvalidCommand("a transaction runs on a fork".into())),
        };
        self.fork.close();
        // The fork's staged writes are exactly the log entries and view changes the writer
        // would make (same state, same function): they go in as they are.
        let warm = self.overlay.read_cache_after();
        let staged = self.overlay.take_staged();
        let (reply, rx) = tokio::sync::oneshot::channel();
        let commit = LeaseOutcome::Commit { events, staged, chain, warm, reply };
        self.outcome.send(commit).map_err(|_| EngineError::Closed)?;
        rx.await.map_err(|_| EngineError::Closed)?
    }
}

/// What opening found and did.
#[derive(Debug, Clone, Copy)]
pub struct OpenReport {
    pub last_seq: u64,
    /// Events replayed onto the views because they lagged the log.
    pub replayed: u64,
}

/// The way to the writer thread; taken (closed) to stop it. Shared with the follower of a
/// shared store, which must not keep the writer alive on its own.
type Submit = Arc<Mutex<Option<crossbeam_channel::Sender<Message>>>>;

struct Inner {
    storage: Arc<dyn Storage>,
    submit: Submit,
    /// A fork's writer, run by its callers (see `Engine::open_with`).
    inline: Option<Mutex<Writer>>,
    config: EngineConfig,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    bus: Arc<bus::Bus>,
    failed: Arc<Mutex<Option<String>>>,
    memberships: Arc<std::sync::atomic::AtomicU64>,
    opened: OpenReport,
    probe: observe::Probe,
    /// Requests' refreshes of a shared store, one at a time for all who wait.
    barrier: storage::ReadBarrier,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.submit.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

/// `FlushPolicy::IntervalMs`: a thread that makes everything applied durable every `every`,
/// until the engine is gone. A failed flush stops writes (fail-stop), as under `Always`.
fn start_interval_flush(inner: &Arc<Inner>, every: std::time::Duration) -> Result<()> {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("tidemark-interval-flush".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(inner) = weak.upgrade() else { return };
            if inner.failed.lock().is_some() {
                return;
            }
            if let Err(err) = inner.probe.flush(|| inner.storage.flush()) {
                durable::fail(&inner.failed, &err);
                return;
            }
        })
        .map(drop)
        .map_err(|e| EngineError::Storage(format!("cannot start the interval flush thread: {e}")))
}

/// A handle on the store; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A handle that does not keep the engine open (for tasks that should end with it).
#[derive(Clone)]
pub struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

impl Engine {
    /// Opens the sled store in `dir` (created if missing) and recovers it.
    pub fn open_sled(dir: &Path, config: EngineConfig) -> Result<Engine> {
        let storage = SledStorage::open(dir, config.cache_bytes)?;
        Engine::open(Arc::new(storage), config)
    }

    /// Opens the store in the PostgreSQL database at `url` (created if missing) and recovers it.
    pub fn open_postgres(url: &str, config: EngineConfig) -> Result<Engine> {
        let store: Arc<dyn Storage> = Arc::new(storage::PostgresStorage::open(url)?);
        let cached = storage::CoherentStorage::new(store, usize::try_from(config.cache_bytes).unwrap_or(usize::MAX));
        Engine::open(Arc::new(cached), config)
    }

    pub fn open_memory(config: EngineConfig) -> Result<Engine> {
        Engine::open(Arc::new(MemoryStorage::new()), config)
    }

    /// Checks the log tail, replays what the views lack, and starts the writer.
    pub fn open(storage: Arc<dyn Storage>, config: EngineConfig) -> Result<Engine> {
        Engine::open_with(storage, config, None)
    }

    /// With `fork`: no recovery (the writer handed over its tail) and no writer thread: each
    /// submission is applied by its caller under a lock, and its events are kept in the
    /// journal. Only for a transaction's fork, whose writes are in memory and which has one
    /// user at a time.
    fn open_with(storage: Arc<dyn Storage>, config: EngineConfig, fork: Option<Fork>) -> Result<Engine> {
        let inline = fork.is_some();
        let (tail, replayed, journal) = match fork {
            Some(Fork { tail, journal }) => (tail, 0, Some(journal)),
            None => {
                let (tail, replayed) = replay::recover(storage.as_ref())?;
                (tail, replayed, None)
            }
        };
        let bus = Arc::new(bus::Bus::new(config.bus_capacity));
        let failed = Arc::new(Mutex::new(None));
        let memberships = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let announcer = durable::Announcer { bus: Arc::clone(&bus), memberships: Arc::clone(&memberships), journal };
        // A fork's applies go to memory and are committed by the real writer: never observed.
        let probe = observe::Probe::default();
        let flusher = match (config.flush, inline) {
            (FlushPolicy::Always, false) => Some(durable::Flusher::start(
                Arc::clone(&storage),
                Arc::clone(&failed),
                announcer.clone(),
                probe.clone(),
            )?),
            _ => None,
        };
        let finisher = applier::Finisher {
            storage: Arc::clone(&storage),
            announcer,
            flusher,
            flush: config.flush,
            failed: Arc::clone(&failed),
            probe: probe.clone(),
        };
        let writer = Writer {
            storage: Arc::clone(&storage),
            clock: Arc::clone(&config.clock),
            // On a shared store each commit is applied before the writer lock is released.
            applier: applier::Applier::start(finisher, inline || storage.shared())?,
            max_object_bytes: config.max_object_bytes,
            state: WriterState { next_seq: tail.last_seq + 1, chain: tail.chain, warm: None },
            failed: Arc::clone(&failed),
            ulids: ulid::Generator::new(),
            unapplied: None,
            cache: storage::ReadCache::new(),
            shared: storage.shared() && !inline,
        };
        let opened = OpenReport { last_seq: tail.last_seq, replayed };
        let (submit, handle, inline) = if inline {
            (Submit::default(), None, Some(Mutex::new(writer)))
        } else {
            let (tx, rx) = crossbeam_channel::unbounded();
            let handle = std::thread::Builder::new()
                .name("tidemark-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| EngineError::Storage(format!("cannot start the writer thread: {e}")))?;
            let submit: Submit = Arc::new(Mutex::new(Some(tx)));
            // Other processes' appends are read and published as they are learnt of.
            let wake = Arc::clone(&submit);
            storage.follow(Box::new(move || {
                if let Some(tx) = wake.lock().as_ref() {
                    let _ = tx.send(Message::CatchUp(None));
                }
            }))?;
            (submit, Some(handle), None)
        };
        let interval = match config.flush {
            FlushPolicy::IntervalMs(ms) if inline.is_none() => Some(std::time::Duration::from_millis(ms.max(1))),
            _ => None,
        };
        let inner = Arc::new(Inner {
            config,
            storage,
            inline,
            submit,
            writer: Mutex::new(handle),
            bus,
            failed,
            memberships,
            opened,
            probe,
            barrier: storage::ReadBarrier::default(),
        });
        if let Some(every) = interval {
            start_interval_flush(&inner, every)?;
        }
        Ok(Engine { inner })
    }

    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    pub fn opened(&self) -> OpenReport {
        self.inner.opened
    }

    fn send(
        &self,
        commands: Vec<Command>,
        fresh: Vec<Vec<u8>>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<Arc<Event>>>>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let submission = Submission { commands, fresh, reply };
        if let Some(writer) = &self.inner.inline {
            writer.lock().commit_group(vec![submission]);
            return Ok(rx);
        }
        let guard = self.inner.submit.lock();
        let tx = guard.as_ref().ok_or(EngineError::Closed)?;
        tx.send(Message::Submit(submission)).map_err(|_| EngineError::Closed)?;
        Ok(rx)
    }

    /// Commits `commands` atomically (all or none) and returns their events in order.
    pub async fn submit(&self, commands: Vec<Command>) -> Result<Vec<Arc<Event>>> {
        let rx = self.send(commands, Vec::new())?;
        rx.await.map_err(|_| EngineError::Closed)?
    }

    /// [`Engine::submit`] for commands creating objects under ids only the caller knows
    /// (generated, not yet shown to anyone), given as `(parent, plural, id)`: their absence is
    /// checked here, so the writer need not read the storage for them.
    pub async fn submit_fresh(&self, commands: Vec<Command>, fresh: &[(&str, &str, &str)]) -> Result<Vec<Arc<Event>>> {
        let rx = self.send(commands, self.absent_keys(fresh)?.into_iter().collect())?;
        rx.await.map_err(|_| EngineError::Closed)?
    }

    /// [`Engine::submit`] for callers outside an async runtime.
    pub fn submit_blocking(&self, commands: Vec<Command>) -> Result<Vec<Arc<Event>>> {
        let rx = self.send(commands, Vec::new())?;
        rx.blocking_recv().map_err(|_| EngineError::Closed)?
    }

    /// The object keys of `fresh` that the storage does not hold.
    fn absent_keys(&self, fresh: &[(&str, &str, &str)]) -> Result<std::collections::HashSet<Vec<u8>>> {
        let mut absent = std::collections::HashSet::new();
        for (parent, plural, id) in fresh {
            let key = keys::object(parent, plural, id);
            if self.storage().get(&key)?.is_none() {
                absent.insert(key);
            }
        }
        Ok(absent)
    }

    /// Starts a transaction: takes the writer's exclusive lease (other writes wait) and opens a
    /// fork of the store on which the caller runs any number of commands and reads. Committing
    /// appends the fork's events to the log in one atomic, flushed batch; dropping the
    /// transaction discards them. Meant for short work (a batch request): the lease expires
    /// after 10 s.
    pub async fn begin(&self) -> Result<Transaction> {
        self.begin_with_fresh(&[]).await
    }

    /// [`Engine::begin`] for a transaction that will create objects under ids only the caller
    /// knows (generated, not yet shown to anyone): their absence is checked here, before the
    /// lease, so the transaction need not read the storage for them while holding it.
    pub async fn begin_with_fresh(&self, fresh: &[(&str, &str, &str)]) -> Result<Transaction> {
        let absent = self.absent_keys(fresh)?;
        let (granted_tx, granted_rx) = tokio::sync::oneshot::channel();
        let (outcome_tx, outcome_rx) = crossbeam_channel::bounded(1);
        {
            let guard = self.inner.submit.lock();
            let tx = guard.as_ref().ok_or(EngineError::Closed)?;
            tx.send(Message::Lease(LeaseRequest { granted: Some(granted_tx), outcome: outcome_rx }))
                .map_err(|_| EngineError::Closed)?;
        }
        let Grant { unapplied, tail, warm } = granted_rx.await.map_err(|_| EngineError::Closed)?;
        if let Some(reason) = self.failure() {
            return Err(EngineError::Unavailable(reason));
        }
        let base = Arc::clone(&self.inner.storage);
        let overlay = Arc::new(storage::OverlayStorage::new(base, unapplied, warm.as_deref(), absent));
        // Nobody subscribes to a fork's bus.
        let config = EngineConfig { flush: FlushPolicy::None, bus_capacity: 1, ..self.inner.config.clone() };
        let journal = Arc::new(Mutex::new(Vec::new()));
        let fork = Fork { tail, journal: Arc::clone(&journal) };
        let fork = Engine::open_with(Arc::clone(&overlay) as Arc<dyn Storage>, config, Some(fork))?;
        Ok(Transaction { fork, overlay, journal, outcome: outcome_tx })
    }

    /// On a store other processes write too: returns once everything committed before the call,
    /// by any process, is read (cached reads forgotten where stale) and published on this
    /// engine's bus. At once otherwise.
    pub async fn sync_reads(&self) -> Result<()> {
        if !self.inner.storage.shared() || self.inner.inline.is_some() {
            return Ok(());
        }
        let inner = &self.inner;
        inner
            .barrier
            .pass(|| async {
                let storage = Arc::clone(&inner.storage);
                let moved = tokio::task::spawn_blocking(move || storage.refresh())
                    .await
                    .map_err(|e| EngineError::Storage(format!("reading the log's head failed: {e}")))??;
                if moved {
                    // Their events published (and group memberships counted) before any read.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let sent = inner.submit.lock().as_ref().map(|submit| submit.send(Message::CatchUp(Some(tx))));
                    if let Some(Ok(())) = sent {
                        let _ = rx.await;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Changes whenever group memberships may have changed: caches of `groups_of` key on it.
    pub fn membership_version(&self) -> u64 {
        self.inner.memberships.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why writes are refused, if the engine has failed a write (fail-stop).
    pub fn failure(&self) -> Option<String> {
        self.inner.failed.lock().clone()
    }

    /// Tells `observer` of every group commit and flush from now on (metrics); false if an
    /// observer was set already.
    pub fn observe(&self, observer: Arc<dyn Observer>) -> bool {
        self.inner.probe.observe(observer)
    }

    /// Whether writes are accepted, the log head and the latest flush time.
    pub fn health(&self) -> Result<Health> {
        Ok(Health {
            failure: self.failure(),
            last_seq: self.last_seq()?,
            views_seq: replay::applied_seq(self.inner.storage.as_ref())?,
            last_flush: self.inner.probe.last_flush(),
        })
    }

    pub fn bus(&self) -> &bus::Bus {
        &self.inner.bus
    }

    pub fn storage(&self) -> &dyn Storage {
        self.inner.storage.as_ref()
    }

    /// Stops the writer after it has committed what it was given, and flushes.
    pub fn close(&self) {
        self.inner.submit.lock().take();
        if let Some(handle) = self.inner.writer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Drops every view and replays the whole log. The engine must not be serving writes.
    /// `progress` hears the count of events replayed every few thousand (as for the others).
    pub fn rebuild(&self, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        replay::rebuild(self.storage(), progress)
    }

    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
        replay::verify(self.storage(), progress)
    }

    pub fn digest(&self) -> Result<String> {
        replay::digest(self.storage())
    }

    pub fn export(&self, out: &mut dyn std::io::Write, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        replay::export(self.storage(), out, progress)
    }

    /// Materialises the store as it stood at `until` into `target` (empty, not serving): the
    /// log's prefix up to there, and views derived from it. Returns the events copied.
    pub fn replay_into(&self, target: &Engine, until: AsOf, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        replay::copy_prefix(self.storage(), target.storage(), until, progress)
    }

    /// Restores an export into this (empty) store. Call before serving.
    pub fn import(&self, input: &mut dyn std::io::BufRead, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        replay::import(self.storage(), input, progress)
    }
}

#[cfg(test)]
mod tests;
