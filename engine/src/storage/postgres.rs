//! The keyspace in a PostgreSQL table: `tidemark_kv (k bytea primary key, v bytea)`, ordered
//! as sled orders it (bytea compares bytewise), one transaction per batch.
//!
//! Log entries are inserted, never upserted: a batch carrying a log key that exists already —
//! another process appended that seq first — fails whole, so no two writers can both write
//! seq N, and the engine stops writing (fail-stop) rather than fork the log.
//!
//! Several servers may share the database: their writers take turns under a PostgreSQL
//! advisory lock (`lock_writer`), each commit notifies `tidemark_log`, and every server
//! listens (`follow`) so that it learns of the others' appends and reads them from the log.
//!
//! The engine reads synchronously from async tasks, and the `postgres` client cannot run inside
//! a tokio runtime: each connection lives on a thread of its own, and callers hand it their
//! query and wait for the answer. A commit is durable when PostgreSQL acknowledges it
//! (`synchronous_commit`), so `flush` has nothing left to do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

use super::{KeyValue, Storage, WriteBatch, WriterLock};
use crate::error::{EngineError, Result};
use crate::keys;

/// Connections for reads and batches, so readers do not queue behind the writer's batches (the
/// writer lock has one more of its own).
const CONNECTIONS: usize = 4;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tidemark_kv (k bytea PRIMARY KEY, v bytea NOT NULL)";

/// The advisory lock the writers of one database take turns under ("tidemark" in ASCII).
const WRITER_LOCK: i64 = 0x7469_6465_6d61_726b;
/// The channel every commit that appends notifies.
const CHANNEL: &str = "tidemark_log";
/// A follower wakes its engine at least this often, notified or not (a missed notification
/// costs at most this much delay).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// The connection threads end when the storage is dropped (their queues close).
pub struct PostgresStorage {
    jobs: Sender<Job>,
    /// The connection that holds the writer lock (a session lock: one connection takes and
    /// releases it).
    lock: Sender<Job>,
    config: Config,
    /// Tells the follower thread to end.
    stop: Arc<AtomicBool>,
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs jobs on `client`, on a thread of its own, until `queue` closes.
fn serve_jobs(name: String, client: Client, queue: Receiver<Job>) -> Result<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut client = client;
            for job in queue {
                job(&mut client);
            }
        })
        .map(|_| ())
        .map_err(|e| EngineError::Storage(format!("cannot start a PostgreSQL thread: {e}")))
}

/// Runs `work` on the connection behind `jobs` and waits for its answer.
fn run_on<T: Send + 'static>(
    jobs: &Sender<Job>,
    work: impl FnOnce(&mut Client) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move |client| {
        let _ = tx.send(work(client));
    });
    jobs.send(job).map_err(|_| EngineError::Storage("the PostgreSQL connections are closed".into()))?;
    rx.recv().map_err(|_| EngineError::Storage("a PostgreSQL connection went away".into()))?
}

/// Releases a named lock when dropped, on the connection that took it.
struct UnlockNamed(Sender<Job>, String);

impl Drop for UnlockNamed {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.1);
        let unlock: Job = Box::new(move |client| {
            if let Err(err) = client.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", &[&key]) {
                tracing::error!(error = %err, "releasing a PostgreSQL lock failed");
            }
        });
        let _ = self.0.send(unlock);
    }
}

/// Releases the writer lock when dropped, on the connection that took it.
struct Unlock(Sender<Job>);

impl Drop for Unlock {
    fn drop(&mut self) {
        let unlock: Job = Box::new(|client| {
            if let Err(err) = client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK]) {
                tracing::error!(error = %err, "releasing the PostgreSQL writer lock failed");
            }
        });
        let _ = self.0.send(unlock);
    }
}

fn pg_error(err: postgres::Error) -> EngineError {
    EngineError::Storage(format!("PostgreSQL: {err}"))
}

impl PostgresStorage {
    /// Connects to `url` (`postgresql://user@host:port/database`), creating the database if it
    /// does not exist yet and the table if it is missing.
    pub fn open(url: &str) -> Result<PostgresStorage> {
        let config: Config = url.parse().map_err(|e| EngineError::Storage(format!("storage_url: {e}")))?;
        // Off the caller's thread: the client runs a runtime of its own, which cannot start
        // inside the caller's (an async server's).
        let setup = config.clone();
        let mut clients = std::thread::spawn(move || -> Result<Vec<Client>> {
            let mut first = connect_creating(&setup)?;
            first.batch_execute(SCHEMA).map_err(pg_error)?;
            let mut clients = vec![first];
            for _ in 0..CONNECTIONS {
                clients.push(setup.connect(NoTls).map_err(pg_error)?);
            }
            Ok(clients)
        })
        .join()
        .map_err(|_| EngineError::Storage("connecting to PostgreSQL panicked".into()))??;
        let (lock, lock_queue) = crossbeam_channel::unbounded::<Job>();
        if let Some(client) = clients.pop() {
            serve_jobs("tidemark-pg-lock".into(), client, lock_queue)?;
        }
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for (i, client) in clients.into_iter().enumerate() {
            serve_jobs(format!("tidemark-pg-{i}"), client, queue.clone())?;
        }
        Ok(PostgresStorage { jobs, lock, config, stop: Arc::new(AtomicBool::new(false)) })
    }

    /// Runs `work` on a connection and waits for its answer.
    fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut Client) -> Result<T> + Send + 'static) -> Result<T> {
        run_on(&self.jobs, work)
    }
}

/// Listens on the commit channel, calling `wake` for each burst of notifications and every
/// `FOLLOW_POLL` regardless; reconnects after a lost connection.
fn follow(config: &Config, stop: &AtomicBool, wake: &dyn Fn()) {
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(NoTls) {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for other servers' commits; retrying");
                std::thread::sleep(FOLLOW_POLL);
                continue;
            }
        };
        if let Err(err) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            std::thread::sleep(FOLLOW_POLL);
            continue;
        }
        // Whatever was appended while this connection was not listening.
        wake();
        while !stop.load(Ordering::Relaxed) {
            let mut notifications = client.notifications();
            if let Err(err) = notifications.timeout_iter(FOLLOW_POLL).next() {
                tracing::warn!(error = %err, "lost the commit notifications; reconnecting");
                break;
            }
            // One wake for a burst: the engine reads the log from where it is.
            let mut pending = notifications.iter();
            while let Ok(Some(_)) = pending.next() {}
            wake();
        }
    }
}

/// Connects; a database that does not exist is created first (as sled creates its directory),
/// through the server's `postgres` database.
fn connect_creating(config: &Config) -> Result<Client> {
    match config.connect(NoTls) {
        Ok(client) => Ok(client),
        Err(err) if err.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let name = config.get_dbname().unwrap_or_default().to_owned();
            let mut admin_config = config.clone();
            admin_config.dbname("postgres");
            let mut admin = admin_config.connect(NoTls).map_err(pg_error)?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match admin.batch_execute(&format!("CREATE DATABASE {quoted}")) {
                Ok(()) => {}
                // Another process created it meanwhile.
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(pg_error(e)),
            }
            config.connect(NoTls).map_err(pg_error)
        }
        Err(err) => Err(pg_error(err)),
    }
}

impl Storage for PostgresStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.run(move |client| {
            let mut log = (Vec::new(), Vec::new());
            let mut puts = (Vec::new(), Vec::new());
            let mut deletes = Vec::new();
            // A batch may name a key twice (replay's batches do): the last op wins, as in sled.
            let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = std::collections::BTreeMap::new();
            for (key, value) in batch.ops {
                last.insert(key, value);
            }
            for (key, value) in last {
                match value {
                    Some(value) if key.first() == Some(&keys::LOG) => {
                        log.0.push(key);
                        log.1.push(value);
                    }
                    Some(value) => {
                        puts.0.push(key);
                        puts.1.push(value);
                    }
                    None => deletes.push(key),
                }
            }
            let mut tx = client.transaction().map_err(pg_error)?;
            if !deletes.is_empty() {
                tx.execute("DELETE FROM tidemark_kv WHERE k = ANY($1)", &[&deletes]).map_err(pg_error)?;
            }
            if !puts.0.is_empty() {
                tx.execute(
                    "INSERT INTO tidemark_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    &[&puts.0, &puts.1],
                )
                .map_err(pg_error)?;
            }
            if !log.0.is_empty() {
                // Delivered at commit, to every server following the log.
                tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map_err(pg_error)?;
                let appended = tx.execute(
                    "INSERT INTO tidemark_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
                    &[&log.0, &log.1],
                );
                match appended {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        return Err(EngineError::Storage(
                            "another process appended to the log first (the same seq): refusing to fork the log".into(),
                        ))
                    }
                    Err(e) => return Err(pg_error(e)),
                }
            }
            tx.commit().map_err(pg_error)
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.run(move |client| {
            let row = client.query_opt("SELECT v FROM tidemark_kv WHERE k = $1", &[&key]).map_err(pg_error)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let wanted = keys.to_vec();
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = self.run(move |client| {
            let rows = client.query("SELECT k, v FROM tidemark_kv WHERE k = ANY($1)", &[&wanted]).map_err(pg_error)?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })?;
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        self.run(move |client| {
            let order = if reverse { "DESC" } else { "ASC" };
            let sql = format!("SELECT k, v FROM tidemark_kv WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3");
            let rows = client.query(&sql, &[&start, &end, &limit]).map_err(pg_error)?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn lock_writer(&self) -> Result<WriterLock> {
        run_on(&self.lock, |client| {
            client.execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK]).map(|_| ()).map_err(pg_error)
        })?;
        Ok(WriterLock(Some(Box::new(Unlock(self.lock.clone())))))
    }

    fn try_lock_named(&self, name: &str) -> Result<Option<WriterLock>> {
        let key = format!("tidemark:{name}");
        let taken = run_on(&self.lock, move |client| {
            let row =
                client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key]).map_err(pg_error)?;
            Ok(row.get::<_, bool>(0))
        })?;
        if !taken {
            return Ok(None);
        }
        let release = format!("tidemark:{name}");
        Ok(Some(WriterLock(Some(Box::new(UnlockNamed(self.lock.clone(), release))))))
    }

    fn follow(&self, wake: Box<dyn Fn() + Send>) -> Result<()> {
        let (config, stop) = (self.config.clone(), Arc::clone(&self.stop));
        std::thread::Builder::new()
            .name("tidemark-pg-follow".into())
            .spawn(move || follow(&config, &stop, wake.as_ref()))
            .map(|_| ())
            .map_err(|e| EngineError::Storage(format!("cannot start the PostgreSQL follower: {e}")))
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.run(|client| {
            let row =
                client.query_one("SELECT pg_total_relation_size('tidemark_kv')::bigint", &[]).map_err(pg_error)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }
}
