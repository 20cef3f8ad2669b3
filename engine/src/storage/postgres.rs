//! The store in two PostgreSQL tables:
//! - `tidemark_log (seq bigint primary key, event bytea)`: the change log, append-only;
//! - `tidemark_kv (k bytea primary key, v bytea)`: the views, keyed as in sled (bytea compares
//!   bytewise, so its primary key's btree serves every `_since`, listing and permissions scan).
//!
//! A batch is one call of `tidemark_apply`, one transaction. Its append is a compare-and-set on
//! the log's head: it lands only if the log ends right before the batch's first seq, and the
//! primary key refuses a seq taken meanwhile. So no two writers ever both write seq N, no reader
//! sees N+1 before N, and a writer that lost the race stops writing (fail-stop) rather than
//! fork the log.
//!
//! Several servers may share the database: their writers take turns under a PostgreSQL
//! advisory lock (`lock_writer`), each append notifies `tidemark_log`, and every server
//! listens (`follow`) so that it learns of the others' appends and reads them from the log.
//!
//! The engine reads synchronously, and the `postgres` client cannot run inside a tokio runtime:
//! each connection lives on a thread of its own, and callers hand it their query and wait for
//! the answer. A commit is durable when PostgreSQL acknowledges it (`synchronous_commit`), so
//! `flush` has nothing left to do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Statement};

use super::{KeyValue, Storage, ValuesAtHead, WriteBatch, WriterLock};
use crate::error::{EngineError, Result};
use crate::keys;

/// Connections for reads and batches, so readers do not queue behind the writer's batches (the
/// writer lock has one more of its own).
const CONNECTIONS: usize = 4;

/// Run at every start, under a lock, by one server at a time. A database written before the
/// log had a table of its own holds its entries among the views: they move to the log.
const SCHEMA: &str = r"
SELECT pg_advisory_xact_lock(7235);
CREATE TABLE IF NOT EXISTS tidemark_kv (k bytea PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE IF NOT EXISTS tidemark_log (seq bigint PRIMARY KEY, event bytea NOT NULL);
INSERT INTO tidemark_log (seq, event)
    SELECT ('x' || encode(substring(k FROM 2 FOR 8), 'hex'))::bit(64)::bigint, v
    FROM tidemark_kv WHERE k >= '\x4c' AND k < '\x4d' AND length(k) = 9;
DELETE FROM tidemark_kv WHERE k >= '\x4c' AND k < '\x4d';
CREATE OR REPLACE FUNCTION tidemark_apply(
    deletes bytea[], ks bytea[], vs bytea[], seqs bigint[], events bytea[], head bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(seqs) > 0 THEN
        IF (SELECT coalesce(max(seq), 0) FROM tidemark_log) <> head THEN
            RAISE EXCEPTION 'the log does not end at %', head USING ERRCODE = 'TM409';
        END IF;
        INSERT INTO tidemark_log (seq, event) SELECT * FROM unnest(seqs, events);
        PERFORM pg_notify('tidemark_log', '');
    END IF;
    DELETE FROM tidemark_kv WHERE k = ANY(deletes);
    INSERT INTO tidemark_kv (k, v) SELECT * FROM unnest(ks, vs) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;
END $$;
";

/// The batch: see `tidemark_apply` in [`SCHEMA`].
const APPLY: &str = "SELECT tidemark_apply($1, $2, $3, $4, $5, $6)";
const GET: &str = "SELECT v FROM tidemark_kv WHERE k = $1";
const GET_MANY: &str = "SELECT k, v FROM tidemark_kv WHERE k = ANY($1)";
const RANGE_ASC: &str = "SELECT k, v FROM tidemark_kv WHERE k >= $1 AND k < $2 ORDER BY k ASC LIMIT $3";
const RANGE_DESC: &str = "SELECT k, v FROM tidemark_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3";
const LOG_GET: &str = "SELECT event FROM tidemark_log WHERE seq = $1";
const LOG_GET_MANY: &str = "SELECT seq, event FROM tidemark_log WHERE seq = ANY($1)";
const LOG_RANGE_ASC: &str =
    "SELECT seq, event FROM tidemark_log WHERE seq >= $1 AND seq < $2 ORDER BY seq ASC LIMIT $3";
const LOG_RANGE_DESC: &str =
    "SELECT seq, event FROM tidemark_log WHERE seq >= $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
/// The reads a cache keeps, each with the log's head in the same snapshot (one statement).
const GET_MANY_AT: &str = "WITH h AS (SELECT coalesce(max(seq), 0) AS head FROM tidemark_log) \
     SELECT h.head, t.k, t.v FROM h LEFT JOIN tidemark_kv t ON t.k = ANY($1)";
const RANGE_AT_ASC: &str = "WITH h AS (SELECT coalesce(max(seq), 0) AS head FROM tidemark_log) \
     SELECT h.head, r.k, r.v FROM h LEFT JOIN LATERAL \
     (SELECT k, v FROM tidemark_kv WHERE k >= $1 AND k < $2 ORDER BY k ASC LIMIT $3) r ON true ORDER BY r.k ASC";
const RANGE_AT_DESC: &str = "WITH h AS (SELECT coalesce(max(seq), 0) AS head FROM tidemark_log) \
     SELECT h.head, r.k, r.v FROM h LEFT JOIN LATERAL \
     (SELECT k, v FROM tidemark_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3) r ON true ORDER BY r.k DESC";
/// The error `tidemark_apply` raises when the log does not end where the batch expects.
const HEAD_MOVED: &str = "TM409";

/// The advisory lock the writers of one database take turns under ("tidemark" in ASCII).
const WRITER_LOCK: i64 = 0x7469_6465_6d61_726b;
/// The channel every append notifies (`tidemark_apply` names it too).
const CHANNEL: &str = "tidemark_log";
/// A follower wakes its engine at least this often, notified or not (a missed notification
/// costs at most this much delay).
const FOLLOW_POLL: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A connection and the statements prepared on it: each query is prepared once per connection,
/// not once per call (which would cost a round trip of its own every time).
struct Conn {
    client: Client,
    prepared: std::collections::HashMap<&'static str, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(pg_error)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

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

/// Runs jobs on `client`, on a thread of its own, until `queue` closes. A connection the
/// server closed (a restart, a failover) is opened again before the next job: the job that met
/// the closing failed, the ones after it need not.
fn serve_jobs(name: String, client: Client, config: Config, queue: Receiver<Job>) -> Result<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut conn = Conn { client, prepared: Default::default() };
            for job in queue {
                if conn.client.is_closed() {
                    match config.connect(NoTls) {
                        Ok(client) => conn = Conn { client, prepared: Default::default() },
                        Err(err) => tracing::warn!(error = %err, "reconnecting to PostgreSQL failed"),
                    }
                }
                job(&mut conn);
            }
        })
        .map(|_| ())
        .map_err(|e| EngineError::Storage(format!("cannot start a PostgreSQL thread: {e}")))
}

/// Runs `work` on the connection behind `jobs` and waits for its answer.
fn run_on<T: Send + 'static>(
    jobs: &Sender<Job>,
    work: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move |client| {
        let _ = tx.send(work(client));
    });
    jobs.send(job).map_err(|_| EngineError::Storage("the PostgreSQL connections are closed".into()))?;
    let answer = move || rx.recv().map_err(|_| EngineError::Storage("a PostgreSQL connection went away".into()));
    // On a worker of the server's runtime, its other tasks move to another thread meanwhile:
    // a read the cache cannot answer does not hold up the requests it can.
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(answer)?
        }
        _ => answer()?,
    }
}

/// Releases a named lock when dropped, on the connection that took it.
struct UnlockNamed(Sender<Job>, String);

impl Drop for UnlockNamed {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.1);
        let unlock: Job = Box::new(move |conn| {
            if let Err(err) = conn.client.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", &[&key]) {
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
        let unlock: Job = Box::new(|conn| {
            if let Err(err) = conn.client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK]) {
                tracing::error!(error = %err, "releasing the PostgreSQL writer lock failed");
            }
        });
        let _ = self.0.send(unlock);
    }
}

fn pg_error(err: postgres::Error) -> EngineError {
    // The error's own text is only "db error": the server's message says what went wrong.
    match err.as_db_error() {
        Some(db) => EngineError::Storage(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
        None => EngineError::Storage(format!("PostgreSQL: {err}")),
    }
}

impl PostgresStorage {
    /// Connects to `url` (`postgresql://user@host:port/database`), creating the database if it
    /// does not exist yet and the table if it is missing.
    pub fn open(url: &str) -> Result<PostgresStorage> {
        let mut config: Config = url.parse().map_err(|e| EngineError::Storage(format!("storage_url: {e}")))?;
        with_session_limits(&mut config);
        // Off the caller's thread: the client runs a runtime of its own, which cannot start
        // inside the caller's (an async server's).
        let setup = config.clone();
        let mut clients = std::thread::spawn(move || -> Result<Vec<Client>> {
            let mut first = connect_creating(&setup)?;
            first.batch_execute(SCHEMA).map_err(pg_error)?;
            warn_if_not_durable(&mut first)?;
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
            serve_jobs("tidemark-pg-lock".into(), client, config.clone(), lock_queue)?;
        }
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for (i, client) in clients.into_iter().enumerate() {
            serve_jobs(format!("tidemark-pg-{i}"), client, config.clone(), queue.clone())?;
        }
        Ok(PostgresStorage { jobs, lock, config, stop: Arc::new(AtomicBool::new(false)) })
    }

    /// Runs `work` on a connection and waits for its answer.
    fn run<T: Send + 'static>(&self, work: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static) -> Result<T> {
        run_on(&self.jobs, work)
    }
}

/// A 2xx is durable when PostgreSQL's commit is: that needs the server's `fsync` and
/// `full_page_writes` on (server-wide; said loudly when off) and `synchronous_commit` not
/// `off` (asked for in every session, see [`with_session_limits`]).
fn warn_if_not_durable(client: &mut Client) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('full_page_writes'), current_setting('synchronous_commit')",
            &[],
        )
        .map_err(pg_error)?;
    let (fsync, full_pages, synchronous): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    for (name, value) in [("fsync", &fsync), ("full_page_writes", &full_pages)] {
        if value != "on" {
            tracing::error!(setting = name, value = %value, "PostgreSQL runs without it: acknowledged writes can be lost or the database damaged in a power cut");
        }
    }
    if synchronous == "off" {
        tracing::warn!("PostgreSQL's synchronous_commit is off for this session: the last acknowledged writes can be lost in a power cut");
    }
    Ok(())
}

/// Every session of ours: PostgreSQL notices a vanished server (power cut, partition) within
/// about 25 s rather than the system's two hours, and so frees the writer lock it held; a
/// writer waits at most 30 s for that lock (its requests then get 503) rather than forever;
/// and a commit is acknowledged once its WAL is flushed (a server configured with
/// `synchronous_commit = off` would acknowledge earlier).
/// Options given in `storage_url` come after ours, so theirs win.
fn with_session_limits(config: &mut Config) {
    let ours = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 -c lock_timeout=30s \
                -c synchronous_commit=on";
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{ours} {given}"),
        _ => ours.to_owned(),
    };
    config.options(&options);
    // And this side notices a vanished database as soon.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
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

/// The seq a log key names, as the log table stores it.
fn log_seq(key: &[u8]) -> Option<i64> {
    keys::seq_of_log_key(key).and_then(|seq| i64::try_from(seq).ok())
}

/// The lowest seq whose log key is not below `bound`, a key that starts with `L`.
fn seq_bound(bound: &[u8]) -> i64 {
    let tail = bound.get(1..).unwrap_or_default();
    let mut bytes = [0u8; 8];
    let n = tail.len().min(8);
    bytes[..n].copy_from_slice(&tail[..n]);
    let seq = u64::from_be_bytes(bytes);
    // A longer bound is past the log key it starts with.
    let seq = if tail.len() > 8 { seq.saturating_add(1) } else { seq };
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn log_row(row: &postgres::Row) -> KeyValue {
    let seq: i64 = row.get(0);
    (keys::log(u64::try_from(seq).unwrap_or_default()), row.get(1))
}

/// The entries and the head of rows `(head, k, v)`; `k` and `v` are null on the one row of an
/// answer that found nothing.
fn with_head(rows: Vec<postgres::Row>) -> (Vec<KeyValue>, Option<u64>) {
    let head = rows.first().map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or_default());
    let entries = rows
        .into_iter()
        .filter_map(|row| Some((row.get::<_, Option<Vec<u8>>>(1)?, row.get::<_, Option<Vec<u8>>>(2)?)))
        .collect();
    (entries, head)
}

/// Entries with `start <= key < end` as `Storage::range` gives them: the views below the log's
/// prefix, the log, and the views above it, each part read only if the range meets it.
fn range_on(conn: &mut Conn, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
    let (log_start, log_end) = ([keys::LOG], [keys::LOG + 1]);
    let below = (start, end.min(&log_start[..]));
    let log = (start.max(&log_start[..]), end.min(&log_end[..]));
    let above = (start.max(&log_end[..]), end);
    let parts = if reverse { [above, log, below] } else { [below, log, above] };
    let mut rows = Vec::new();
    for (from, to) in parts {
        let left = limit.map(|l| l.saturating_sub(rows.len()));
        if from >= to || left == Some(0) {
            continue;
        }
        let left = left.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        if from >= &log_start[..] && to <= &log_end[..] {
            let low = if from <= &log_start[..] { 0 } else { seq_bound(from) };
            let high = if to >= &log_end[..] { i64::MAX } else { seq_bound(to) };
            let statement = conn.statement(if reverse { LOG_RANGE_DESC } else { LOG_RANGE_ASC })?;
            let found = conn.client.query(&statement, &[&low, &high, &left]).map_err(pg_error)?;
            rows.extend(found.iter().map(log_row));
        } else {
            let statement = conn.statement(if reverse { RANGE_DESC } else { RANGE_ASC })?;
            let found = conn.client.query(&statement, &[&from, &to, &left]).map_err(pg_error)?;
            rows.extend(found.into_iter().map(|row| (row.get(0), row.get(1))));
        }
    }
    Ok(rows)
}

impl Storage for PostgresStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.run(move |conn| {
            let statement = conn.statement(APPLY)?;
            let mut log: (Vec<i64>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
            let mut puts = (Vec::new(), Vec::new());
            let mut deletes = Vec::new();
            // A batch may name a key twice (replay's batches do): the last op wins, as in sled.
            let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = std::collections::BTreeMap::new();
            for (key, value) in batch.ops {
                last.insert(key, value);
            }
            for (key, value) in last {
                match (value, log_seq(&key)) {
                    (Some(value), Some(seq)) => {
                        log.0.push(seq);
                        log.1.push(value);
                    }
                    (Some(value), None) => {
                        puts.0.push(key);
                        puts.1.push(value);
                    }
                    (None, _) => deletes.push(key),
                }
            }
            // Ascending (the map's order): the log must end right before the first.
            let head = log.0.first().map_or(0, |first| first - 1);
            match conn.client.execute(&statement, &[&deletes, &puts.0, &puts.1, &log.0, &log.1, &head]) {
                Ok(_) => Ok(()),
                Err(e)
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        || e.code().map(SqlState::code) == Some(HEAD_MOVED) =>
                {
                    Err(EngineError::Storage(format!(
                        "another process appended to the log first (it no longer ends at {head}): \
                         refusing to fork the log"
                    )))
                }
                Err(e) => Err(pg_error(e)),
            }
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.run(move |conn| {
            let row = match log_seq(&key) {
                Some(seq) => {
                    let statement = conn.statement(LOG_GET)?;
                    conn.client.query_opt(&statement, &[&seq])
                }
                None => {
                    let statement = conn.statement(GET)?;
                    conn.client.query_opt(&statement, &[&key])
                }
            };
            Ok(row.map_err(pg_error)?.map(|row| row.get(0)))
        })
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let (mut seqs, mut views) = (Vec::new(), Vec::new());
        for key in keys {
            match log_seq(key) {
                Some(seq) => seqs.push(seq),
                None => views.push(key.clone()),
            }
        }
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = self.run(move |conn| {
            let mut found = std::collections::HashMap::new();
            if !views.is_empty() {
                let statement = conn.statement(GET_MANY)?;
                let rows = conn.client.query(&statement, &[&views]).map_err(pg_error)?;
                found.extend(rows.into_iter().map(|row| (row.get(0), row.get(1))));
            }
            if !seqs.is_empty() {
                let statement = conn.statement(LOG_GET_MANY)?;
                let rows = conn.client.query(&statement, &[&seqs]).map_err(pg_error)?;
                found.extend(rows.iter().map(log_row));
            }
            Ok(found)
        })?;
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        self.run(move |conn| range_on(conn, &start, &end, reverse, limit))
    }

    fn get_many_with_head(&self, keys: &[Vec<u8>]) -> Result<ValuesAtHead> {
        if keys.iter().any(|key| log_seq(key).is_some()) {
            return Ok((self.get_many(keys)?, None));
        }
        let wanted = keys.to_vec();
        let (found, head) = self.run(move |conn| {
            let statement = conn.statement(GET_MANY_AT)?;
            let rows = conn.client.query(&statement, &[&wanted]).map_err(pg_error)?;
            Ok(with_head(rows))
        })?;
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = found.into_iter().collect();
        Ok((keys.iter().map(|key| found.get(key).cloned()).collect(), head))
    }

    fn range_with_head(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Option<u64>)> {
        if start >= end || keys::meets_log(start, end) {
            return Ok((self.range(start, end, reverse, limit)?, None));
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        self.run(move |conn| {
            let statement = conn.statement(if reverse { RANGE_AT_DESC } else { RANGE_AT_ASC })?;
            let rows = conn.client.query(&statement, &[&start, &end, &limit]).map_err(pg_error)?;
            Ok(with_head(rows))
        })
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    fn lock_writer(&self) -> Result<WriterLock> {
        run_on(&self.lock, |conn| {
            conn.client.execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK]).map(|_| ()).map_err(pg_error)
        })?;
        Ok(WriterLock(Some(Box::new(Unlock(self.lock.clone())))))
    }

    fn try_lock_named(&self, name: &str) -> Result<Option<WriterLock>> {
        let key = format!("tidemark:{name}");
        let taken = run_on(&self.lock, move |conn| {
            let row = conn
                .client
                .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key])
                .map_err(pg_error)?;
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
        self.run(|conn| {
            let row = conn
                .client
                .query_one(
                    "SELECT (pg_total_relation_size('tidemark_kv') + pg_total_relation_size('tidemark_log'))::bigint",
                    &[],
                )
                .map_err(pg_error)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }
}
