//! Durable async listeners: in-process consumers of the change log (webhooks, emails, cache
//! invalidation) that neither lose nor silently skip a committed event across restarts.
//!
//! Contract:
//! - A listener has a **name** and a **cursor**: the last seq it has fully handled. The cursor is
//!   kept under the metadata prefix (`M` + `listener/<name>`). Cursor writes are neither events
//!   nor views: they go straight to [`Storage::apply`](crate::Storage::apply) as a one-key batch
//!   followed by a flush, never touch a log or view key, survive `rebuild` (which only drops
//!   views and their `applied/` marks) and stay out of the views digest and the export.
//! - The driver ([`spawn_listener`]) reads the log after the cursor, flushes the store (so it
//!   never hands out an event a crash could take back), applies the [`Filter`], calls the
//!   handler with the batch, and only on success persists the new cursor. A failed batch is
//!   retried with exponential backoff (capped, 30 s by default) without advancing.
//! - Delivery is **at least once**: a crash between a successful handler call and the cursor
//!   write repeats that batch after restart. The event `id` (a ULID, unique per event) is the
//!   idempotency key handlers should deduplicate on.
//! - New events are noticed by polling the log every `poll_interval` (100 ms by default): the
//!   listener is decoupled from the writer and the bus; the log is the truth.
//! - One driver per name at a time: two drivers sharing a name would race on one cursor. On a
//!   store several servers share, each batch is handled under the listener's lock
//!   ([`Storage::try_lock_named`](crate::Storage::try_lock_named)) from the cursor as stored:
//!   whichever server holds it delivers, the others wait their turn.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};
use crate::event::{Action, Event};
use crate::keys;
use crate::storage::{scan_prefix, WriteBatch};
use crate::Engine;

/// What a handler returns: a boxed future, so the trait stays object-safe without a macro crate.
pub type HandleFuture<'a> = Pin<Box<dyn Future<Output = std::result::Result<(), ListenerError>> + Send + 'a>>;

/// An in-process consumer of committed events.
pub trait Listener: Send + Sync + 'static {
    /// Handles one batch (commit order, already filtered, never empty). `Ok` means every event
    /// is handled and the cursor may move past them. The same batch may be handed over again
    /// (after an error or a crash): deduplicate on [`Event::id`].
    fn handle<'a>(&'a self, events: &'a [Arc<Event>]) -> HandleFuture<'a>;
}

/// Why a handler failed, and whether trying the same batch again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerError {
    pub message: String,
    /// True when a retry cannot succeed (e.g. the receiver rejected the payload): the batch is
    /// logged and skipped instead of retried.
    pub permanent: bool,
}

impl ListenerError {
    /// A transient failure (connection refused, 5xx...): the batch will be retried.
    pub fn retry(message: impl Into<String>) -> Self {
        ListenerError { message: message.into(), permanent: false }
    }

    /// A failure no retry can fix: the batch is skipped.
    pub fn permanent(message: impl Into<String>) -> Self {
        ListenerError { message: message.into(), permanent: true }
    }
}

impl std::fmt::Display for ListenerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ListenerError {}

/// Kinto's listener filters (`event_listeners.<name>.actions` / `.resources`); `None` lets
/// everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub actions: Option<Vec<Action>>,
    /// Resource names: `bucket`, `collection`, `group`, `record`, `account`...
    pub resources: Option<Vec<String>>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        self.actions.as_ref().is_none_or(|actions| actions.contains(&event.action))
            && self.resources.as_ref().is_none_or(|resources| resources.contains(&event.resource))
    }
}

/// Where a listener with no stored cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// Only events committed after it was first started (Kinto's listeners see new changes).
    #[default]
    Now,
    /// The whole log.
    Beginning,
}

#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub filter: Filter,
    /// Most events read from the log per handler call.
    pub batch_size: usize,
    /// How often an idle listener looks for new events.
    pub poll_interval: Duration,
    /// First retry delay; doubled on every consecutive failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Failed attempts after which a batch is skipped (logged as an error); `None` retries
    /// forever, which is what makes delivery at-least-once.
    pub max_retries: Option<u32>,
    pub start: StartFrom,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            filter: Filter::default(),
            batch_size: 100,
            poll_interval: Duration::from_millis(100),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retries: None,
            start: StartFrom::Now,
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('\0') {
        return Err(EngineError::InvalidCommand(format!("bad listener name {name:?}")));
    }
    Ok(())
}

impl Engine {
    /// The last seq listener `name` has handled (0 if it never stored a cursor).
    pub fn listener_cursor(&self, name: &str) -> Result<u64> {
        Ok(self.stored_listener_cursor(name)?.unwrap_or(0))
    }

    fn stored_listener_cursor(&self, name: &str) -> Result<Option<u64>> {
        check_name(name)?;
        match self.storage().get(&keys::listener_cursor(name))? {
            None => Ok(None),
            Some(bytes) => keys::read_u64(&bytes)
                .map(Some)
                .ok_or_else(|| EngineError::Corrupt(format!("cursor of listener {name:?}"))),
        }
    }

    /// Durably stores listener `name`'s cursor: one-key batch, then a flush. Not an event, not
    /// a view: it bypasses the writer and never touches the log or the views.
    pub fn set_listener_cursor(&self, name: &str, seq: u64) -> Result<()> {
        check_name(name)?;
        let last = self.last_seq()?;
        if seq > last {
            return Err(EngineError::InvalidCommand(format!("cursor {seq} is past the end of the log ({last})")));
        }
        let mut batch = WriteBatch::default();
        batch.put(keys::listener_cursor(name), keys::u64_value(seq));
        self.storage().apply(batch)?;
        self.storage().flush()
    }

    /// Forgets listener `name`: a driver started later under that name begins afresh.
    pub fn remove_listener_cursor(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut batch = WriteBatch::default();
        batch.delete(keys::listener_cursor(name));
        self.storage().apply(batch)?;
        self.storage().flush()
    }

    /// Every stored listener cursor, by name.
    pub fn listener_cursors(&self) -> Result<Vec<(String, u64)>> {
        let prefix = keys::listener_cursor_prefix();
        scan_prefix(self.storage(), &prefix)?
            .into_iter()
            .map(|(key, value)| {
                let name = String::from_utf8(key[prefix.len()..].to_vec())
                    .map_err(|_| EngineError::Corrupt("listener name is not UTF-8".into()))?;
                let seq = keys::read_u64(&value).ok_or_else(|| EngineError::Corrupt(format!("cursor of {name:?}")))?;
                Ok((name, seq))
            })
            .collect()
    }

    /// The cursor a starting driver uses: the stored one, else per `start` (stored at once, so
    /// a crash before the first batch does not move the starting point).
    fn initial_listener_cursor(&self, name: &str, start: StartFrom) -> Result<u64> {
        let last = self.last_seq()?;
        match self.stored_listener_cursor(name)? {
            Some(seq) if seq <= last => Ok(seq),
            Some(seq) => {
                // Only a log that lost its tail (restored from an older copy) gets here: the
                // seqs after `last` will name new events, which must not be skipped.
                tracing::warn!(
                    listener = name,
                    cursor = seq,
                    last_seq = last,
                    "listener cursor is past the log; rewinding"
                );
                self.set_listener_cursor(name, last)?;
                Ok(last)
            }
            None => {
                let seq = match start {
                    StartFrom::Now => last,
                    StartFrom::Beginning => 0,
                };
                self.set_listener_cursor(name, seq)?;
                Ok(seq)
            }
        }
    }
}

/// What a running driver has done so far.
#[derive(Debug, Default)]
struct Progress {
    cursor: AtomicU64,
    failures: AtomicU64,
}

/// A running listener. Dropping it stops the driver too (after its current step).
pub struct ListenerHandle {
    name: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

impl ListenerHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cursor as last persisted by the driver.
    pub fn cursor(&self) -> u64 {
        self.progress.cursor.load(Ordering::Acquire)
    }

    /// Failed handler calls so far (each retry counts).
    pub fn failures(&self) -> u64 {
        self.progress.failures.load(Ordering::Acquire)
    }

    /// Stops the driver and waits for it. A batch being handled is abandoned: it is delivered
    /// again by the next driver of that name, since its cursor was not advanced.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Starts listener `name` on a tokio task with the default options (see [`ListenerOptions`]).
pub fn spawn_listener(engine: Engine, name: &str, handler: Arc<dyn Listener>) -> Result<ListenerHandle> {
    spawn_listener_with(engine, name, handler, ListenerOptions::default())
}

/// Starts listener `name` on a tokio task. Must be called inside a tokio runtime. The starting
/// cursor is read (or first stored) before this returns, so a write committed after it is
/// never missed.
pub fn spawn_listener_with(
    engine: Engine,
    name: &str,
    handler: Arc<dyn Listener>,
    options: ListenerOptions,
) -> Result<ListenerHandle> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| EngineError::InvalidCommand("listeners run inside a tokio runtime".into()))?;
    let cursor = engine.initial_listener_cursor(name, options.start)?;
    let progress = Arc::new(Progress { cursor: AtomicU64::new(cursor), failures: AtomicU64::new(0) });
    let (stop, stopped) = watch::channel(false);
    let driver = Driver {
        engine,
        name: name.to_owned(),
        handler,
        options: ListenerOptions { batch_size: options.batch_size.max(1), ..options },
        progress: Arc::clone(&progress),
        stopped,
    };
    let task = runtime.spawn(driver.run(cursor));
    Ok(ListenerHandle { name: name.to_owned(), stop, task: Some(task), progress })
}

struct Driver {
    engine: Engine,
    name: String,
    handler: Arc<dyn Listener>,
    options: ListenerOptions,
    progress: Arc<Progress>,
    stopped: watch::Receiver<bool>,
}

/// How one batch ended.
enum Outcome {
    Handled,
    Skipped,
    Stopped,
}

impl Driver {
    async fn run(mut self, mut cursor: u64) {
        tracing::info!(listener = %self.name, cursor, "listener started");
        let mut storage_failures = 0u32;
        loop {
            if *self.stopped.borrow() {
                break;
            }
            // On a shared store: this server's turn, from the cursor as stored (another server
            // may have moved it).
            let shared = self.engine.storage().shared();
            let lease = if shared {
                match self.engine.storage().try_lock_named(&format!("listener/{}", self.name)) {
                    Ok(Some(lease)) => match self.engine.listener_cursor(&self.name) {
                        Ok(stored) => {
                            cursor = stored;
                            Some(lease)
                        }
                        Err(err) => {
                            tracing::warn!(listener = %self.name, error = %err, "cannot read the cursor; retrying");
                            drop(lease);
                            if self.pause(self.options.poll_interval).await {
                                break;
                            }
                            continue;
                        }
                    },
                    Ok(None) | Err(_) => {
                        // Another server's turn (or the lock is unreachable): later.
                        if self.pause(self.options.poll_interval).await {
                            break;
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            let batch = match self.read_after(cursor).await {
                Ok(batch) => {
                    storage_failures = 0;
                    batch
                }
                Err(err) => {
                    storage_failures = storage_failures.saturating_add(1);
                    let delay = self.backoff(storage_failures);
                    tracing::warn!(listener = %self.name, error = %err, ?delay, "cannot read the log; retrying");
                    if self.pause(delay).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(last) = batch.last().map(|event| event.seq) else {
                // Nothing new: the turn passes while this one waits.
                drop(lease);
                if self.pause(self.options.poll_interval).await {
                    break;
                }
                continue;
            };
            let selected: Vec<Arc<Event>> = batch.into_iter().filter(|e| self.options.filter.matches(e)).collect();
            if !selected.is_empty() {
                match self.deliver(&selected).await {
                    Outcome::Handled | Outcome::Skipped => {}
                    Outcome::Stopped => break,
                }
            }
            if !self.persist(last).await {
                break;
            }
            cursor = last;
            self.progress.cursor.store(cursor, Ordering::Release);
        }
        tracing::info!(listener = %self.name, cursor, "listener stopped");
    }

    /// Up to a batch of events after `cursor`, made durable first: a delivered event is never
    /// one a crash could take back (with `FlushPolicy::Always` the flush has nothing to do).
    async fn read_after(&self, cursor: u64) -> Result<Vec<Arc<Event>>> {
        let engine = self.engine.clone();
        let limit = self.options.batch_size;
        blocking(move || {
            let events = engine.events_from(cursor.saturating_add(1), limit)?;
            if !events.is_empty() {
                engine.storage().flush()?;
            }
            Ok(events)
        })
        .await
    }

    async fn deliver(&mut self, events: &[Arc<Event>]) -> Outcome {
        let mut attempts = 0u32;
        loop {
            let handler = Arc::clone(&self.handler);
            let result = tokio::select! {
                result = handler.handle(events) => result,
                _ = self.stopped.wait_for(|stop| *stop) => return Outcome::Stopped,
            };
            let Err(err) = result else { return Outcome::Handled };
            self.progress.failures.fetch_add(1, Ordering::AcqRel);
            attempts = attempts.saturating_add(1);
            let (first, last) = (events[0].seq, events[events.len() - 1].seq);
            if err.permanent || self.options.max_retries.is_some_and(|max| attempts > max) {
                // Giving up is a choice made in configuration (or by the receiver): say so loudly.
                tracing::error!(listener = %self.name, error = %err, first, last, attempts, "listener skips a batch");
                return Outcome::Skipped;
            }
            let delay = self.backoff(attempts);
            tracing::warn!(listener = %self.name, error = %err, first, last, attempts, ?delay, "listener failed; retrying");
            if self.pause(delay).await {
                return Outcome::Stopped;
            }
        }
    }

    /// Stores the cursor, retrying until it sticks; false if stopped first.
    async fn persist(&mut self, seq: u64) -> bool {
        let mut attempts = 0u32;
        loop {
            let (engine, name) = (self.engine.clone(), self.name.clone());
            match blocking(move || engine.set_listener_cursor(&name, seq)).await {
                Ok(()) => return true,
                Err(err) => {
                    attempts = attempts.saturating_add(1);
                    let delay = self.backoff(attempts);
                    tracing::warn!(listener = %self.name, error = %err, seq, ?delay, "cannot store the cursor; retrying");
                    if self.pause(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
        self.options.initial_backoff.saturating_mul(factor).min(self.options.max_backoff)
    }

    /// Sleeps for `delay`; true if asked to stop meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        let woken = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            // Also resolves when the handle is gone, which means stop as well.
            _ = self.stopped.wait_for(|stop| *stop) => true,
        };
        woken || *self.stopped.borrow()
    }
}

/// Runs storage work (reads, fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Storage(format!("listener storage task failed: {e}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicU32;

    use parking_lot::Mutex;
    use serde_json::json;

    use super::*;
    use crate::{Acl, Command, Context, EngineConfig, Expect, Op};

    const C: &str = "/buckets/b/collections/c";

    fn put(parent: &str, resource: &str, id: &str) -> Command {
        Command {
            resource: resource.into(),
            plural: format!("{resource}s"),
            members: None,
            parent: parent.into(),
            id: id.into(),
            op: Op::Put { data: json!({"x": 1}).as_object().cloned().unwrap_or_default(), permissions: Acl::new() },
            expect: Expect::Any,
            last_modified: None,
            context: Context::default(),
        }
    }

    fn delete(parent: &str, resource: &str, id: &str) -> Command {
        Command { op: Op::Delete, ..put(parent, resource, id) }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    async fn seed(engine: &Engine) {
        engine.submit(vec![put("", "bucket", "b"), put("/buckets/b", "collection", "c")]).await.expect("seed");
    }

    async fn records(engine: &Engine, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            engine.submit(vec![put(C, "record", &id)]).await.expect("write");
        }
    }

    fn fast() -> ListenerOptions {
        ListenerOptions {
            poll_interval: Duration::from_millis(5),
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            ..ListenerOptions::default()
        }
    }

    /// Records every batch it is handed; fails the first `fail_first` calls.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<Arc<Event>>>>,
        calls: AtomicU32,
        fail_first: u32,
        permanent: bool,
    }

    impl Recorder {
        fn failing(fail_first: u32, permanent: bool) -> Self {
            Recorder { fail_first, permanent, ..Recorder::default() }
        }

        fn seqs(&self) -> Vec<u64> {
            self.batches.lock().iter().flatten().map(|e| e.seq).collect()
        }
    }

    impl Listener for Recorder {
        fn handle<'a>(&'a self, events: &'a [Arc<Event>]) -> HandleFuture<'a> {
            Box::pin(async move {
                self.batches.lock().push(events.to_vec());
                let call = self.calls.fetch_add(1, Ordering::AcqRel);
                if call < self.fail_first {
                    return Err(if self.permanent {
                        ListenerError::permanent("rejected")
                    } else {
                        ListenerError::retry("try later")
                    });
                }
                Ok(())
            })
        }
    }

    async fn wait_for_cursor(handle: &ListenerHandle, seq: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while handle.cursor() < seq {
            assert!(tokio::time::Instant::now() < deadline, "cursor stuck at {} (want {seq})", handle.cursor());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn cursor_persists_across_reopen_on_sled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        rt.block_on(async {
            let engine = Engine::open_sled(dir.path(), EngineConfig::default()).expect("open");
            seed(&engine).await;
            records(&engine, (0..3).map(|i| format!("r{i}"))).await;
            let digest = engine.digest().expect("digest");
            assert_eq!(engine.listener_cursor("hook").expect("cursor"), 0, "never stored");
            engine.set_listener_cursor("hook", 4).expect("set");
            engine.set_listener_cursor("other", 5).expect("set");
            assert!(engine.set_listener_cursor("hook", 6).is_err(), "past the log");
            assert!(engine.set_listener_cursor("", 1).is_err());
            assert_eq!(engine.digest().expect("digest"), digest, "cursors are not views");
            assert_eq!(engine.last_seq().expect("last"), 5, "cursors are not events");
            engine.close();
        });
        let engine = Engine::open_sled(dir.path(), EngineConfig::default()).expect("reopen");
        assert_eq!(engine.listener_cursor("hook").expect("cursor"), 4);
        assert_eq!(engine.listener_cursors().expect("all"), vec![("hook".into(), 4), ("other".into(), 5)]);
        assert!(engine.verify(&mut |_| {}).expect("verify").ok());
        engine.rebuild(&mut |_| {}).expect("rebuild");
        assert_eq!(engine.listener_cursor("hook").expect("cursor"), 4, "rebuild keeps cursors");
        engine.remove_listener_cursor("other").expect("remove");
        assert_eq!(engine.listener_cursors().expect("all").len(), 1);
    }

    #[test]
    fn driver_delivers_everything_once_and_resumes_from_the_stored_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = runtime();
        rt.block_on(async {
            let engine = Engine::open_sled(dir.path(), EngineConfig::default()).expect("open");
            seed(&engine).await;
            let first = Arc::new(Recorder::default());
            let options = ListenerOptions { start: StartFrom::Beginning, batch_size: 4, ..fast() };
            let handle = spawn_listener_with(engine.clone(), "hook", first.clone(), options.clone()).expect("spawn");
            records(&engine, (0..10).map(|i| format!("r{i}"))).await;
            wait_for_cursor(&handle, 12).await;
            handle.stop().await;
            assert_eq!(first.seqs(), (1..=12).collect::<Vec<_>>(), "every event once, in order");
            assert!(first.batches.lock().iter().all(|b| b.len() <= 4));
            assert_eq!(engine.listener_cursor("hook").expect("cursor"), 12);

            // Written while no driver runs: the next one starts from the stored cursor.
            records(&engine, (10..13).map(|i| format!("r{i}"))).await;
            let second = Arc::new(Recorder::default());
            let handle = spawn_listener_with(engine.clone(), "hook", second.clone(), options).expect("spawn");
            wait_for_cursor(&handle, 15).await;
            handle.stop().await;
            assert_eq!(second.seqs(), vec![13, 14, 15]);

            // A new name with the default start hears only what comes next.
            let fresh = Arc::new(Recorder::default());
            let handle = spawn_listener_with(engine.clone(), "late", fresh.clone(), fast()).expect("spawn");
            assert_eq!(engine.listener_cursor("late").expect("cursor"), 15, "stored before spawn returns");
            records(&engine, ["r99".to_owned()]).await;
            wait_for_cursor(&handle, 16).await;
            handle.stop().await;
            assert_eq!(fresh.seqs(), vec![16]);
            engine.close();
        });
    }

    #[test]
    fn handler_errors_retry_the_same_batch_without_advancing() {
        let rt = runtime();
        rt.block_on(async {
            let engine = Engine::open_memory(EngineConfig::default()).expect("open");
            seed(&engine).await;
            let recorder = Arc::new(Recorder::failing(4, false));
            let options = ListenerOptions { start: StartFrom::Beginning, batch_size: 100, ..fast() };
            let handle = spawn_listener_with(engine.clone(), "flaky", recorder.clone(), options).expect("spawn");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                // Cursor first: if it had moved, the successful (5th) call was made before.
                let cursor = engine.listener_cursor("flaky").expect("cursor");
                if recorder.calls.load(Ordering::Acquire) >= 5 {
                    break;
                }
                assert_eq!(cursor, 0, "no advance while failing");
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            wait_for_cursor(&handle, 2).await;
            assert_eq!(handle.failures(), 4);
            let batches = recorder.batches.lock().clone();
            assert_eq!(batches.len(), 5, "four failures, then success");
            let ids: BTreeSet<_> = batches.iter().map(|b| b.iter().map(|e| e.id).collect::<Vec<_>>()).collect();
            assert_eq!(ids.len(), 1, "the very same events (same ULIDs) every time");
            handle.stop().await;
            assert_eq!(engine.listener_cursor("flaky").expect("cursor"), 2);
        });
    }

    #[test]
    fn permanent_errors_and_max_retries_skip_the_batch() {
        let rt = runtime();
        rt.block_on(async {
            let engine = Engine::open_memory(EngineConfig::default()).expect("open");
            seed(&engine).await;
            let rejecting = Arc::new(Recorder::failing(1, true));
            let options = ListenerOptions { start: StartFrom::Beginning, ..fast() };
            let handle = spawn_listener_with(engine.clone(), "strict", rejecting.clone(), options).expect("spawn");
            wait_for_cursor(&handle, 2).await;
            assert_eq!(rejecting.calls.load(Ordering::Acquire), 1, "a permanent error is not retried");
            handle.stop().await;

            let flaky = Arc::new(Recorder::failing(u32::MAX, false));
            let options = ListenerOptions { start: StartFrom::Beginning, max_retries: Some(2), ..fast() };
            let handle = spawn_listener_with(engine.clone(), "bounded", flaky.clone(), options).expect("spawn");
            wait_for_cursor(&handle, 2).await;
            assert_eq!(flaky.calls.load(Ordering::Acquire), 3, "one try and two retries");
            handle.stop().await;
        });
    }

    #[test]
    fn filters_apply_before_the_handler_and_filtered_events_still_advance() {
        let rt = runtime();
        rt.block_on(async {
            let engine = Engine::open_memory(EngineConfig::default()).expect("open");
            seed(&engine).await;
            let filter =
                Filter { actions: Some(vec![Action::Create, Action::Delete]), resources: Some(vec!["record".into()]) };
            let recorder = Arc::new(Recorder::default());
            let options = ListenerOptions { filter, start: StartFrom::Beginning, ..fast() };
            let handle = spawn_listener_with(engine.clone(), "records", recorder.clone(), options).expect("spawn");
            records(&engine, ["a".to_owned(), "a".to_owned()]).await; // create, update
            engine.submit(vec![delete(C, "record", "a")]).await.expect("delete");
            engine.submit(vec![put("/buckets/b", "group", "g")]).await.expect("group");
            wait_for_cursor(&handle, 6).await;
            handle.stop().await;
            let seen: Vec<(u64, Action)> =
                recorder.batches.lock().iter().flatten().map(|e| (e.seq, e.action)).collect();
            assert_eq!(seen, vec![(3, Action::Create), (5, Action::Delete)]);
            assert_eq!(engine.listener_cursor("records").expect("cursor"), 6, "past the filtered-out group");
            assert!(recorder.batches.lock().iter().all(|b| !b.is_empty()), "never an empty batch");
        });

        let event = |resource: &str, action| Event {
            seq: 1,
            id: ulid::Ulid::new(),
            timestamp: 1,
            resource: resource.into(),
            plural: format!("{resource}s"),
            members: None,
            parent: String::new(),
            object_id: "x".into(),
            action,
            data: json!({}),
            permissions: Acl::new(),
            prev_seq: None,
            context: Context::default(),
        };
        assert!(Filter::default().matches(&event("bucket", Action::Update)));
        let only_buckets = Filter { resources: Some(vec!["bucket".into()]), ..Filter::default() };
        assert!(only_buckets.matches(&event("bucket", Action::Delete)));
        assert!(!only_buckets.matches(&event("record", Action::Delete)));
        let nothing = Filter { actions: Some(Vec::new()), ..Filter::default() };
        assert!(!nothing.matches(&event("bucket", Action::Create)));
    }

    #[test]
    fn dropping_the_handle_stops_the_driver_and_no_runtime_is_an_error() {
        let engine = Engine::open_memory(EngineConfig::default()).expect("open");
        assert!(spawn_listener(engine.clone(), "x", Arc::new(Recorder::default())).is_err(), "outside a runtime");
        let rt = runtime();
        rt.block_on(async {
            let recorder = Arc::new(Recorder::default());
            let handle = spawn_listener_with(engine.clone(), "x", recorder.clone(), fast()).expect("spawn");
            drop(handle);
            tokio::time::sleep(Duration::from_millis(50)).await;
            seed(&engine).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(recorder.batches.lock().is_empty());
            assert_eq!(engine.listener_cursor("x").expect("cursor"), 0);
        });
    }
}
