//! The only mutator: one thread that turns commands into events, group-committed.
//!
//! Loop: take one submission, drain whatever else is waiting, apply each submission
//! all-or-nothing into an overlay (check expectations, stamp, append to the log, update the
//! views), and hand the whole group as one atomic batch to the applier, which writes it while
//! this thread builds the next group; a flush (per policy) then covers it, and every caller is
//! answered and the events published. A failed write or flush is never retried: the writer
//! answers `Unavailable` from then on (fail-stop) and a restart replays the log.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use ulid::Generator;

use crate::applier::Applier;
use crate::clock::Clock;
use crate::durable::Applied;
use crate::error::{EngineError, Result};
use crate::event::{self, Action, ChainHash, Context, Event};
use crate::keys;
use crate::object::{normalize_acl, Acl, StoredObject};
use crate::replay::LogTail;
use crate::storage::{refresh_read_cache, OverlayStorage, ReadCache, Storage, Unapplied, WriteBatch, WriterLock};
use crate::txn::{KvRead, Txn};
use crate::views;

/// What the caller expects of the object's current state; checked atomically in the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Any,
    /// No live object (a tombstone counts as absent).
    Absent,
    /// A live object, whatever its version.
    Live,
    /// A live object whose `last_modified` is exactly this.
    Version(u64),
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Create or replace: `data` is the full object (its `id`/`last_modified` are set here).
    Put {
        data: Map<String, Value>,
        permissions: Acl,
    },
    Delete,
}

/// One change of one object. The engine knows no resource by name: the caller says where the
/// object lives (its parent URI and the URL segment of its list, so its URI is
/// `{parent}/{plural}/{id}`) and which principals it makes members of it.
#[derive(Debug, Clone)]
pub struct Command {
    /// The kind's name, recorded in the event (Kinto's `resource_name`).
    pub resource: String,
    /// The URL segment of the object's list: with `parent`, the list's name in the views.
    pub plural: String,
    /// The parent object's URI, which must exist; or `""` (the root), or a one-segment
    /// namespace such as `/~alice` (a user's own objects), which always does.
    pub parent: String,
    pub id: String,
    /// For an object that is a principal source (a Kinto group): the principals that gain its
    /// URI as a principal. `None` for every other object.
    pub members: Option<Vec<String>>,
    pub op: Op,
    pub expect: Expect,
    /// A client-chosen `last_modified`, honoured as Kinto does (kinto-protocol.md §2.4).
    pub last_modified: Option<u64>,
    pub context: Context,
}

pub(crate) type Reply = oneshot::Sender<Result<Vec<Arc<Event>>>>;

pub(crate) struct Submission {
    pub commands: Vec<Command>,
    /// Object keys the caller found absent under ids only it knows (generated, never shown):
    /// the writer need not read them.
    pub fresh: Vec<Vec<u8>>,
    pub reply: Reply,
}

/// What a transaction sends back to a writer it holds: events prepared on a fork, or nothing.
pub(crate) enum LeaseOutcome {
    /// The fork's events, its staged writes (log entries and view changes), and the chain hash
    /// after its last event.
    Commit { events: Vec<Arc<Event>>, staged: WriteBatch, chain: ChainHash, warm: ReadCache, reply: Reply },
}

/// A request for the writer's exclusive lease (see `transaction.rs`).
pub(crate) struct LeaseRequest {
    /// Answered once everything before the lease is committed: the lease is held from then on.
    /// Taken when granted.
    pub granted: Option<oneshot::Sender<Grant>>,
    /// The holder's decision; dropping the sender aborts the lease.
    pub outcome: Receiver<LeaseOutcome>,
}

/// What a transaction starts from.
pub(crate) struct Grant {
    /// The previous transaction's writes when they may not have reached the storage yet (the
    /// fork reads through them).
    pub unapplied: Option<Unapplied>,
    /// Where the log ends, as the writer knows it (the storage may not show it yet).
    pub tail: LogTail,
    /// The previous transaction's base reads, still true (nothing else was written since).
    pub warm: Option<Arc<ReadCache>>,
}

pub(crate) enum Message {
    Submit(Submission),
    Lease(LeaseRequest),
    /// Another process may have appended to a shared store: read and publish its events, then
    /// answer (if asked to) once they are published.
    CatchUp(Option<tokio::sync::oneshot::Sender<()>>),
}

/// The length of an object's compact JSON, counted without building the string.
fn json_size(data: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, data);
    count.0
}

/// Grants a lease (once); false when its requester is gone.
fn grant(lease: &mut LeaseRequest, state: &WriterState, unapplied: Option<Unapplied>) -> bool {
    let tail = LogTail { last_seq: state.next_seq - 1, chain: state.chain };
    let warm = state.warm.clone();
    match lease.granted.take() {
        Some(granted) => granted.send(Grant { unapplied, tail, warm }).is_ok(),
        None => true,
    }
}

/// How long a transaction may hold the writer before it is aborted and writes resume.
const LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds one group so a flood of submitters still gets answered in slices.
const MAX_GROUP_SUBMISSIONS: usize = 512;

pub(crate) struct WriterState {
    pub next_seq: u64,
    pub chain: ChainHash,
    /// The last transaction's base reads after its writes; dropped by any other write.
    pub warm: Option<Arc<ReadCache>>,
}

/// A carried read cache larger than this is dropped rather than copied into every fork: a run
/// of batches rereads a few dozen keys (bucket, collection, ACLs, counters); batches writing
/// many distinct objects would otherwise carry ever more of them.
const MAX_WARM_ENTRIES: usize = 256;

/// The writer's remembered base reads (bucket, collection, counters, ACLs) are dropped past
/// this many: a flood of distinct objects would otherwise grow them without end.
const MAX_CACHE_ENTRIES: usize = 4096;

pub(crate) struct Writer {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub applier: Applier,
    pub max_object_bytes: usize,
    pub state: WriterState,
    pub failed: Arc<parking_lot::Mutex<Option<String>>>,
    pub ulids: Generator,
    /// The last batch handed to the applier, which may not be in the storage yet.
    pub unapplied: Option<Unapplied>,
    /// Base reads as they stand after every batch handed over: only this thread writes, so
    /// they stay true as long as each batch's writes are folded in (and other processes' appends
    /// to a shared store drop them).
    pub cache: ReadCache,
    /// Whether other processes append to the store too (see [`Storage::shared`]).
    pub shared: bool,
}

impl Writer {
    pub fn run(mut self, rx: Receiver<Message>) {
        // A lease met while draining a group waits for that group.
        let mut pending: Option<Message> = None;
        loop {
            let first = match pending.take() {
                Some(taken) => taken,
                None => match rx.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            let first = match first {
                Message::Submit(submission) => submission,
                Message::Lease(lease) => {
                    self.serve_lease(lease);
                    continue;
                }
                Message::CatchUp(reply) => {
                    if let Err(err) = self.catch_up() {
                        tracing::warn!(error = %err, "reading other servers' appends failed");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                    continue;
                }
            };
            let mut group = vec![first];
            let mut caught_up = Vec::new();
            while group.len() < MAX_GROUP_SUBMISSIONS {
                match rx.try_recv() {
                    Ok(Message::Submit(next)) => group.push(next),
                    Ok(lease @ Message::Lease(_)) => {
                        pending = Some(lease);
                        break;
                    }
                    // The group catches up anyway, under the writer lock.
                    Ok(Message::CatchUp(reply)) => caught_up.extend(reply),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
            for reply in caught_up {
                let _ = reply.send(());
            }
        }
        // Channel closed: the engine is shutting down; make everything durable.
        self.applier.stop();
        if let Err(err) = self.storage.flush() {
            tracing::error!(error = %err, "final flush failed");
        }
    }

    /// Holds the writer for a transaction: nothing else commits until it commits its fork's
    /// events (appended verbatim: they were built on exactly this state) or gives up. The
    /// fork reads through the batch the applier may still be writing, so its work overlaps
    /// that write.
    fn serve_lease(&mut self, mut lease: LeaseRequest) {
        // On a shared store the lease holds the writer lock too, and starts from every append.
        let _turn = match self.take_turn() {
            Ok(turn) => turn,
            Err(err) => {
                tracing::warn!(error = %err, "a transaction could not take the writer lock");
                return;
            }
        };
        if !grant(&mut lease, &self.state, self.unapplied.clone()) {
            return;
        }
        let Ok(LeaseOutcome::Commit { events, staged, chain, warm, reply }) = lease.outcome.recv_timeout(LEASE_TIMEOUT)
        else {
            return;
        };
        if let Err(err) = self.accept_staged(&events) {
            let _ = reply.send(Err(err));
            return;
        }
        if events.is_empty() {
            let _ = reply.send(Ok(events));
            return;
        }
        self.state.next_seq += events.len() as u64;
        self.state.chain = chain;
        self.state.warm = (warm.len() <= MAX_WARM_ENTRIES).then(|| Arc::new(warm));
        refresh_read_cache(&mut self.cache, &staged);
        let count = events.len();
        self.hand(staged, count, Applied { answers: vec![(reply, Ok(events.clone()))], published: events });
    }

    /// On a shared store: takes the writer lock (other processes' writers wait) and catches up
    /// with what they appended. Nothing on a store of this process's own.
    fn take_turn(&mut self) -> Result<Option<WriterLock>> {
        if !self.shared {
            return Ok(None);
        }
        let lock = self.storage.lock_writer()?;
        self.catch_up()?;
        Ok(Some(lock))
    }

    /// Reads the events other processes appended since this writer's last, hands them to be
    /// published in order (after this process's own, before its next), and forgets every read
    /// their writes may have made stale.
    fn catch_up(&mut self) -> Result<()> {
        self.storage.refresh()?;
        let tail = crate::replay::read_tail(self.storage.as_ref())?;
        if tail.last_seq < self.state.next_seq {
            return Ok(());
        }
        let mut events = Vec::new();
        let mut from = self.state.next_seq;
        while from <= tail.last_seq {
            let rows = self.storage.range(&keys::log(from), &keys::log(tail.last_seq + 1), false, Some(1024))?;
            if rows.is_empty() {
                return Err(EngineError::Corrupt(format!("the log has a gap after event {}", from - 1)));
            }
            for (_, bytes) in rows {
                let event = event::decode_event(&bytes)?;
                if event.seq != from {
                    return Err(EngineError::Corrupt(format!("expected event {from} in the log, found {}", event.seq)));
                }
                from += 1;
                events.push(Arc::new(event));
            }
        }
        self.state.next_seq = tail.last_seq + 1;
        self.state.chain = tail.chain;
        self.state.warm = None;
        self.cache.clear();
        self.unapplied = None;
        self.applier.hand(WriteBatch::default(), 0, Applied { answers: Vec::new(), published: events });
        Ok(())
    }

    /// Gives a built batch to the applier, keeping it readable until it is surely applied.
    fn hand(&mut self, batch: WriteBatch, events: usize, applied: Applied) {
        if self.applier.pipelined() && !batch.is_empty() {
            self.unapplied = Some(Unapplied::new(batch.clone()));
        }
        self.applier.hand(batch, events, applied);
    }

    /// Checks a transaction's events before they are written: they were built on exactly the
    /// state the lease has held, so only their place in the log needs checking.
    fn accept_staged(&self, events: &[Arc<Event>]) -> Result<()> {
        if let Some(reason) = self.failed.lock().clone() {
            return Err(EngineError::Unavailable(reason));
        }
        let follows = events.iter().enumerate().all(|(offset, e)| e.seq == self.state.next_seq + offset as u64);
        if !follows {
            return Err(EngineError::InvalidCommand("transaction events do not follow the log".into()));
        }
        Ok(())
    }

    pub(crate) fn commit_group(&mut self, group: Vec<Submission>) {
        if let Some(reason) = self.failed.lock().clone() {
            for submission in group {
                let _ = submission.reply.send(Err(EngineError::Unavailable(reason.clone())));
            }
            return;
        }
        let _turn = match self.take_turn() {
            Ok(turn) => turn,
            Err(err) => {
                for submission in group {
                    let _ = submission.reply.send(Err(EngineError::Unavailable(err.to_string())));
                }
                return;
            }
        };
        let fresh = group.iter().flat_map(|s| s.fresh.iter().cloned()).collect();
        let cache = std::mem::take(&mut self.cache);
        let view = OverlayStorage::with_cache(Arc::clone(&self.storage), self.unapplied.clone(), cache, fresh);
        let mut txn = Txn::new(&view);
        let mut outcomes = Vec::with_capacity(group.len());
        for submission in &group {
            let (seq, chain) = (self.state.next_seq, self.state.chain);
            match self.apply_submission(&mut txn, &submission.commands) {
                Ok(events) => {
                    txn.commit_pending();
                    outcomes.push(Ok(events));
                }
                Err(err) => {
                    txn.rollback_pending();
                    self.state.next_seq = seq;
                    self.state.chain = chain;
                    outcomes.push(Err(err));
                }
            }
        }
        let batch = txn.into_batch();
        let mut cache = view.take_read_cache();
        refresh_read_cache(&mut cache, &batch);
        self.cache = if cache.len() <= MAX_CACHE_ENTRIES { cache } else { ReadCache::new() };
        if !batch.is_empty() {
            // Written outside any transaction: what the last one read may be stale now.
            self.state.warm = None;
        }
        let events = outcomes.iter().filter_map(|o| o.as_ref().ok()).map(Vec::len).sum();
        let published =
            outcomes.iter().filter_map(|o| o.as_ref().ok()).flat_map(|events| events.iter().cloned()).collect();
        let answers = group.into_iter().map(|submission| submission.reply).zip(outcomes).collect();
        self.hand(batch, events, Applied { answers, published });
    }

    fn apply_submission(&mut self, txn: &mut Txn<'_>, commands: &[Command]) -> Result<Vec<Arc<Event>>> {
        let mut events = Vec::with_capacity(commands.len());
        for command in commands {
            if matches!(command.op, Op::Delete) {
                // Checked before the cascade, so a refused delete deletes nothing below it.
                Self::check(txn, command)?;
                for child in Self::cascade(txn, command)? {
                    self.append(txn, &child, &mut events)?;
                }
            }
            self.append(txn, command, &mut events)?;
        }
        Ok(events)
    }

    /// Applies one command: its event goes into the log and onto the views.
    fn append(&mut self, txn: &mut Txn<'_>, command: &Command, events: &mut Vec<Arc<Event>>) -> Result<()> {
        let event = self.apply_command(txn, command)?;
        let (bytes, chain) = event::encode(&event, &self.state.chain)?;
        txn.put(keys::log(event.seq), bytes);
        views::apply_event(txn, &event)?;
        self.state.chain = chain;
        self.state.next_seq += 1;
        events.push(Arc::new(event));
        Ok(())
    }

    /// Checks a command's address, expectation and parent against the current state; returns the
    /// object's prior state (tombstones included).
    fn check(txn: &Txn<'_>, command: &Command) -> Result<Option<StoredObject>> {
        let Command { resource, plural, parent, id, .. } = command;
        let bad = |s: &str| s.is_empty() || s.contains(['/', '\0']);
        if bad(id) || bad(plural) || resource.is_empty() || parent.contains('\0') {
            return Err(EngineError::InvalidCommand(format!("bad object address {parent:?} {plural:?} {id:?}")));
        }
        let prior = views::read_object(txn, parent, plural, id)?;
        let live = prior.as_ref().filter(|o| !o.deleted);
        let holds = match command.expect {
            Expect::Any => true,
            Expect::Absent => live.is_none(),
            Expect::Live => live.is_some(),
            Expect::Version(v) => live.is_some_and(|o| o.last_modified == v),
        };
        let must_exist = matches!(command.op, Op::Delete);
        if !holds || (must_exist && live.is_none()) {
            return Err(EngineError::PreconditionFailed { current: live.cloned().map(Box::new) });
        }
        // A parent URI of one segment (`/~alice`, a per-user namespace) names no object: only
        // object parents must exist.
        let object_parent = crate::object::split_uri(parent).is_some();
        if object_parent && !views::live_uri_exists(txn, parent)? {
            return Err(EngineError::UnknownParent(parent.clone()));
        }
        Ok(prior)
    }

    /// Kinto's cascade, one event per object: deleting an object deletes every live object below
    /// it, deepest first, each as a delete of its own (so history, streams and listeners see each),
    /// before the object itself.
    fn cascade(txn: &Txn<'_>, command: &Command) -> Result<Vec<Command>> {
        let uri = crate::object::object_uri(&command.parent, &command.plural, &command.id);
        let mut below: Vec<(String, String, String, u64)> = Vec::new();
        for scan in keys::descendant_prefixes(keys::OBJECT, &uri) {
            for (key, value) in txn.scan_prefix(&scan)? {
                let object = StoredObject::decode(&value)?;
                if object.deleted {
                    continue;
                }
                let text = String::from_utf8_lossy(&key[1..]).into_owned();
                let mut parts = text.splitn(3, '\0');
                if let (Some(parent), Some(plural), Some(id)) = (parts.next(), parts.next(), parts.next()) {
                    below.push((parent.to_owned(), plural.to_owned(), id.to_owned(), object.seq));
                }
            }
        }
        // Deepest first: records before their collection.
        below.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)).then_with(|| a.2.cmp(&b.2)));
        let mut commands = Vec::with_capacity(below.len());
        for (parent, plural, id, seq) in below {
            // The engine knows kinds by the events that made them: the object's last one names it.
            let last = txn
                .get(&keys::log(seq))?
                .ok_or_else(|| EngineError::Corrupt(format!("object names missing event {seq}")))?;
            let resource = event::decode_event(&last)?.resource;
            commands.push(Command {
                resource,
                plural,
                parent,
                id,
                members: None,
                op: Op::Delete,
                expect: Expect::Live,
                last_modified: None,
                context: command.context.clone(),
            });
        }
        Ok(commands)
    }

    /// Checks one command against the current state and builds its event (not yet applied).
    fn apply_command(&mut self, txn: &Txn<'_>, command: &Command) -> Result<Event> {
        let Command { resource, plural, parent, id, .. } = command;
        let prior = Self::check(txn, command)?;
        let live = prior.as_ref().filter(|o| !o.deleted);

        let timestamp = self.stamp(txn, command, live.map(|o| o.last_modified))?;
        let (action, data, permissions) = match &command.op {
            Op::Put { data, permissions } => {
                let mut data = data.clone();
                data.insert("id".into(), json!(id));
                data.insert("last_modified".into(), json!(timestamp));
                let size = json_size(&data);
                if size > self.max_object_bytes {
                    return Err(EngineError::TooLarge { size, limit: self.max_object_bytes });
                }
                let action = if live.is_some() { Action::Update } else { Action::Create };
                (action, Value::Object(data), normalize_acl(permissions.clone()))
            }
            Op::Delete => (Action::Delete, json!({"id": id, "last_modified": timestamp, "deleted": true}), Acl::new()),
        };
        let ulid =
            self.ulids.generate().map_err(|e| EngineError::InvalidCommand(format!("ulid generator exhausted: {e}")))?;
        Ok(Event {
            seq: self.state.next_seq,
            id: ulid,
            timestamp,
            resource: resource.clone(),
            plural: plural.clone(),
            parent: parent.clone(),
            object_id: id.clone(),
            action,
            members: command.members.clone().filter(|_| action != Action::Delete),
            data,
            permissions,
            prev_seq: prior.map(|o| o.seq),
            context: command.context.clone(),
        })
    }

    /// Kinto's timestamp rule: `max(now, list + 1)`, or a client-chosen value where Kinto
    /// honours one (create: any value other than the list's; update/delete: only a newer one).
    fn stamp(&self, txn: &Txn<'_>, command: &Command, current: Option<u64>) -> Result<u64> {
        let (parent, resource) = (command.parent.as_str(), command.plural.as_str());
        let prev = views::list_timestamp(txn, parent, resource)?;
        let now = self.clock.now_ms();
        let next = if prev >= now { prev + 1 } else { now };
        let Some(wanted) = command.last_modified else {
            return Ok(next);
        };
        let honoured = wanted != prev && current.is_none_or(|cur| wanted > cur);
        if !honoured {
            return Ok(next);
        }
        if wanted < prev {
            // A past timestamp must stay unique within its list.
            let taken = txn.scan_prefix(&keys::change_at(parent, resource, wanted))?;
            let prefix_len = keys::change_list_prefix(parent, resource).len();
            if taken.iter().filter_map(|(k, _)| keys::split_change(k, prefix_len)).any(|(_, other)| other != command.id)
            {
                return Err(EngineError::TimestampTaken(wanted));
            }
        }
        Ok(wanted)
    }
}
