//! Live change streams (WebSocket `/v1/ws` and SSE `…/changes/stream`).
//!
//! The [`Hub`] turns each committed event into a [`Change`] once — before-image looked up,
//! frame tail encoded — and broadcasts it to every connection. A [`Session`] holds one
//! connection's subscriptions; each subscription remembers the seq of the last change it has
//! considered, so any gap (a late subscriber, a lagging connection, a resume from a cursor) is
//! filled from the log and nothing is delivered twice. The publisher never waits on a
//! connection: a slow one falls behind the broadcast ring and catches up from the log.

pub mod sse;
pub mod ws;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tidemark_engine::{Action, Engine, Event, ListOrder, ListRange};
use tidemark_protocol::filter::Filter as QueryFilter;
use tidemark_protocol::stream::{self, change_frame, Filter, ServerFrame, Since};
use tidemark_protocol::{json, query, ApiError};
use tokio::sync::broadcast;

use crate::auth::Identity;
use crate::state::{now_ms, AppState};
use crate::toolkit::Registry;

/// The runtime streams run on: its own threads (one per core, up to 4), so fan-out work queues
/// behind itself rather than in front of request handling (writers' responses), and a change
/// reaches many sockets on every core at once. `None` if it cannot be built (then the caller's
/// runtime serves streams).
pub fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores.clamp(1, 4))
                .thread_name("tidemark-streams")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}

/// Spawns stream work on the streams runtime.
pub fn spawn<F>(future: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match runtime() {
        Some(runtime) => {
            runtime.spawn(future);
        }
        None => {
            tokio::spawn(future);
        }
    }
}

/// One committed event as streams deliver it, encoded once for every subscriber.
#[derive(Debug)]
pub struct Change {
    pub event: Arc<Event>,
    /// The object before the change (its previous event's data), if it existed.
    pub old: Option<Value>,
    /// Whether the object is of a declared resource (only those are streamed).
    pub declared: bool,
    pub bucket_id: Option<String>,
    pub collection_id: Option<String>,
    /// The object's URI in storage (namespaces included), built once for every subscriber.
    pub uri: String,
    /// The `change` frame after its `subscription` field, from `"cursor"` to the closing brace.
    pub tail: String,
}

/// A stream's failed read of the log: logged and counted (`tidemark_stream_errors_total`), never
/// silent. The subscriber recovers from the log on its next change.
fn stream_error(what: &str, err: &tidemark_engine::EngineError) {
    crate::metrics::STREAM_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(error = %err, "stream {what} could not be read from the log");
}

/// The bucket and collection an event's object belongs to (or is): the ids of the chain's
/// `bucket` and `collection` levels, the kinds streams filter on. `None` for an object of no
/// declared resource (history's purges), which no stream carries.
fn location(registry: &Registry, uri: &str) -> Option<(Option<String>, Option<String>)> {
    let chain = registry.chain_of(uri)?;
    let id_of = |name: &str| chain.iter().find(|node| node.kind.name == name).map(|node| node.id.clone());
    Some((id_of("bucket"), id_of("collection")))
}

impl Change {
    pub fn build(registry: &Registry, engine: &Engine, event: Arc<Event>) -> Change {
        let old = event
            .prev_seq
            .and_then(|seq| engine.events_from(seq, 1).map_err(|err| stream_error("before-image", &err)).ok())
            .and_then(|events| events.into_iter().next())
            .filter(|e| e.action != Action::Delete)
            .map(|e| e.data.clone());
        let action = event_action(&event);
        Change::with_old(registry, event, old, action)
    }

    fn with_old(registry: &Registry, event: Arc<Event>, old: Option<Value>, action: &str) -> Change {
        let uri = event.uri();
        let placed = location(registry, &uri);
        let declared = placed.is_some();
        let (bucket_id, collection_id) = placed.unwrap_or_default();
        let mut body = Map::new();
        body.insert("cursor".into(), json!(stream::cursor(event.seq)));
        body.insert("action".into(), json!(action));
        body.insert("resource_name".into(), json!(event.resource));
        body.insert("uri".into(), json!(Registry::wire_uri(&uri)));
        if let Some(b) = &bucket_id {
            body.insert("bucket_id".into(), json!(b));
        }
        if let Some(c) = &collection_id {
            body.insert("collection_id".into(), json!(c));
        }
        body.insert("id".into(), json!(event.object_id));
        body.insert("timestamp".into(), json!(event.timestamp));
        body.insert("user_id".into(), json!(event.context.user_id));
        body.insert("data".into(), event.data.clone());
        body.insert("old".into(), old.clone().unwrap_or(Value::Null));
        let encoded = String::from_utf8(json::to_vec(&Value::Object(body))).unwrap_or_default();
        let tail = encoded.strip_prefix('{').unwrap_or(&encoded).to_owned();
        Change { event, old, declared, bucket_id, collection_id, uri, tail }
    }
}

fn event_action(event: &Event) -> &'static str {
    event.action.as_str()
}

/// Encodes each committed event once and fans it out to every connection.
pub struct Hub {
    tx: broadcast::Sender<Arc<Change>>,
}

/// Changes the hub keeps for sockets that have not taken them yet, at least. Sockets take them
/// once per coalescing window: the ring holds many windows' worth, so a busy writer does not
/// send sleeping sockets back to the log.
const HUB_RING: usize = 4096;

impl Hub {
    /// Starts the hub's task (within the runtime): it follows the engine's bus and, when it
    /// falls behind it, the log. Its ring holds at least a socket queue's worth of changes.
    pub fn start(engine: Engine, registry: Arc<Registry>, queue: usize) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(queue.max(HUB_RING));
        let hub = Arc::new(Hub { tx: tx.clone() });
        let mut bus = engine.bus().subscribe();
        let mut last = engine.last_seq().unwrap_or_else(|err| {
            stream_error("log head", &err);
            0
        });
        // The task holds the engine weakly: a server that stops drops its engine, whose bus then
        // closes, and the task ends with it.
        let weak = engine.downgrade();
        drop(engine);
        spawn(async move {
            loop {
                let received = bus.recv().await;
                let Some(engine) = weak.upgrade() else { return };
                let events = match received {
                    Ok(event) if event.seq <= last => continue,
                    Ok(event) if event.seq == last + 1 => vec![event],
                    // A gap (lag, or an event published before we subscribed): read the log.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        crate::metrics::STREAM_HUB_LAGGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // On a failed read the next change tries again from the same place.
                        engine.events_from(last + 1, 4096).unwrap_or_else(|err| {
                            stream_error("catch-up", &err);
                            Vec::new()
                        })
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for event in events {
                    last = event.seq;
                    let change = Arc::new(Change::build(&registry, &engine, event));
                    // No receiver is fine: nobody is subscribed.
                    let _ = tx.send(change);
                }
            }
        });
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}

/// One subscription of a connection: what it wants, and how far it has got.
pub struct Subscription {
    pub id: String,
    filter: Filter,
    query: Vec<QueryFilter>,
    /// The seq of the last change considered (delivered or filtered out).
    pub delivered: u64,
    /// Resuming from a Kinto timestamp: changes at or before it are skipped.
    after_timestamp: Option<u64>,
    /// Per parent URI: may the subscriber read every child (list-level right)?
    readable: HashMap<String, bool>,
}

impl Subscription {
    pub fn new(id: String, filter: Filter) -> Result<Subscription, ApiError> {
        let query = match &filter.query {
            Some(q) if !q.is_empty() => {
                let pairs = query::parse_pairs(q)?;
                query::parse_list_query(&pairs, now_ms(), None)?.filters
            }
            _ => Vec::new(),
        };
        Ok(Subscription { id, filter, query, delivered: 0, after_timestamp: None, readable: HashMap::new() })
    }

    /// What the filter decides from the event's address and action alone, before any frame
    /// is built for it (false: certainly not for this subscription).
    fn may_match(&self, registry: &Registry, event: &Event) -> bool {
        let Some((bucket_id, collection_id)) = location(registry, &event.uri()) else { return false };
        self.addressed(event, bucket_id.as_deref(), collection_id.as_deref())
    }

    /// The filter's bucket, collection, resource, id and actions.
    fn addressed(&self, event: &Event, bucket_id: Option<&str>, collection_id: Option<&str>) -> bool {
        let f = &self.filter;
        let eq = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        eq(&f.bucket, bucket_id)
            && eq(&f.collection, collection_id)
            && eq(&f.resource_name, Some(event.resource.as_str()))
            && eq(&f.id, Some(event.object_id.as_str()))
            && f.actions.as_ref().is_none_or(|a| a.iter().any(|a| a == event.action.as_str()))
    }

    fn matches(&self, change: &Change) -> bool {
        let event = &change.event;
        change.declared
            && self.addressed(event, change.bucket_id.as_deref(), change.collection_id.as_deref())
            && self.after_timestamp.is_none_or(|ts| event.timestamp > ts)
            // An object entering or leaving the query's result both concern the subscriber.
            && (self.query.is_empty()
                || self.query.iter().all(|q| q.matches(&event.data))
                || change.old.as_ref().is_some_and(|old| self.query.iter().all(|q| q.matches(old))))
    }

    /// May the subscriber read this change's object now? Tombstones only to list readers
    /// (the object's own ACL is gone), as Kinto shows them.
    fn allowed(&mut self, state: &AppState, identity: &Identity, change: &Change) -> bool {
        let event = &change.event;
        let registry = &state.registry;
        let kind = registry.get(&event.resource);
        if kind.is_none_or(|kind| kind.members_field.is_some() || registry.is_parent(&kind.name)) {
            // A parent's ACL or a membership may have changed: forget what was cached.
            self.readable.clear();
        }
        // The hot path (a list the subscriber reads as a whole) allocates nothing.
        if self.readable.get(&event.parent) == Some(&true) {
            return true;
        }
        let Some(chain) = registry.chain_of(&change.uri) else { return false };
        let authz = state.authz(identity);
        if kind.is_some_and(|kind| kind.is_per_user()) {
            // Only the namespace's owner, deletions included.
            return authz.allowed(&chain, "read").unwrap_or(false);
        }
        if !self.readable.contains_key(&event.parent) {
            let (parents, object) = chain.split_at(chain.len() - 1);
            let list_level = authz.allowed_on_list(parents, &object[0].kind, "read").unwrap_or(false);
            self.readable.insert(event.parent.clone(), list_level);
            if list_level {
                return true;
            }
        }
        event.action != Action::Delete && authz.allowed(&chain, "read").unwrap_or(false)
    }
}

/// A frame to send, and the cursor a client would resume from after it.
pub struct Outgoing {
    pub text: String,
    pub cursor: u64,
    /// The subscription a `change` frame belongs to (to rewind it if the frame is dropped).
    pub subscription: Option<usize>,
}

impl Outgoing {
    pub fn control(text: String, cursor: u64) -> Outgoing {
        Outgoing { text, cursor, subscription: None }
    }
}

/// How many log events one catch-up read takes.
const CATCH_UP_CHUNK: usize = 512;

/// One connection's subscriptions and identity.
pub struct Session {
    pub state: AppState,
    pub identity: Identity,
    pub subscriptions: Vec<Subscription>,
}

impl Session {
    pub fn new(state: AppState, identity: Identity) -> Session {
        Session { state, identity, subscriptions: Vec::new() }
    }

    /// The cursor to resume the whole connection from: the least advanced subscription.
    pub fn cursor(&self) -> u64 {
        self.subscriptions.iter().map(|s| s.delivered).min().unwrap_or(0)
    }

    fn deliver(&mut self, index: usize, change: &Change, out: &mut Vec<Outgoing>) {
        let Session { state, identity, subscriptions } = self;
        let sub = &mut subscriptions[index];
        if change.event.seq <= sub.delivered {
            return;
        }
        sub.delivered = change.event.seq;
        let in_namespace = crate::namespace::contains(&identity.namespace, &change.uri);
        if in_namespace && sub.matches(change) && sub.allowed(state, identity, change) {
            out.push(Outgoing {
                text: change_frame(&sub.id, &change.tail),
                cursor: change.event.seq,
                subscription: Some(index),
            });
        }
    }

    /// Reads the log from the subscription's position up to `until` (inclusive), adding at most
    /// `budget` frames to `out`; true once `until` is reached.
    fn catch_up(&mut self, index: usize, until: u64, budget: usize, out: &mut Vec<Outgoing>) -> Result<bool, ApiError> {
        let start = out.len();
        while self.subscriptions[index].delivered < until {
            let room = budget.saturating_sub(out.len() - start);
            if room == 0 {
                return Ok(false);
            }
            let from = self.subscriptions[index].delivered + 1;
            let chunk = room.clamp(16, CATCH_UP_CHUNK);
            let events = self.state.engine.events_from(from, chunk).map_err(crate::error::from_engine)?;
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.seq > until {
                    return Ok(true);
                }
                if out.len() - start >= budget {
                    return Ok(false);
                }
                let sub = &mut self.subscriptions[index];
                if !sub.may_match(&self.state.registry, &event) {
                    // Passed over without building its frame (and reading its old version).
                    sub.delivered = sub.delivered.max(event.seq);
                    continue;
                }
                let change = Change::build(&self.state.registry, &self.state.engine, event);
                self.deliver(index, &change, out);
            }
        }
        Ok(true)
    }

    /// Handles one change from the hub for every subscription, filling any gap from the log.
    pub fn on_change(&mut self, change: &Change) -> Result<Vec<Outgoing>, ApiError> {
        let mut out = Vec::new();
        for index in 0..self.subscriptions.len() {
            let seq = change.event.seq;
            if seq > self.subscriptions[index].delivered + 1 {
                self.catch_up(index, seq - 1, usize::MAX, &mut out)?;
            }
            self.deliver(index, change, &mut out);
        }
        Ok(out)
    }

    /// Adds a subscription: `subscribed`, then (snapshot or resume) everything up to the head.
    pub fn subscribe(
        &mut self,
        id: String,
        filter: Filter,
        since: Since,
        snapshot: bool,
    ) -> Result<Vec<Outgoing>, ApiError> {
        if self.subscriptions.iter().any(|s| s.id == id) {
            return Err(ApiError::invalid_one(
                tidemark_protocol::Location::Body,
                Some("id"),
                "Subscription id already in use",
            ));
        }
        let most = self.state.settings.streams.max_subscriptions;
        if self.subscriptions.len() >= most {
            return Err(ApiError::invalid_one(
                tidemark_protocol::Location::Body,
                Some("id"),
                format!("A connection holds at most {most} subscriptions"),
            ));
        }
        let mut sub = Subscription::new(id.clone(), filter)?;
        let head = self.state.engine.last_seq().map_err(crate::error::from_engine)?;
        let mut out = Vec::new();
        let (start, timestamp) = match since {
            Since::Now => (head, None),
            Since::Cursor(seq) => (seq.min(head), None),
            Since::Timestamp(ts) => (0, Some(ts)),
        };
        sub.after_timestamp = timestamp;
        if snapshot {
            sub.delivered = head;
            out.push(Outgoing::control(ServerFrame::subscribed(&id, &stream::cursor(head)).to_string(), head));
            self.snapshot(&mut sub, head, &mut out)?;
            out.push(Outgoing::control(ServerFrame::snapshot_done(&id, &stream::cursor(head)).to_string(), head));
            self.subscriptions.push(sub);
            return Ok(out);
        }
        sub.delivered = start;
        out.push(Outgoing::control(ServerFrame::subscribed(&id, &stream::cursor(start)).to_string(), start));
        self.subscriptions.push(sub);
        let index = self.subscriptions.len() - 1;
        self.catch_up(index, head, usize::MAX, &mut out)?;
        Ok(out)
    }

    /// A frame for `index` could not be queued: the subscription will get it again from the log.
    pub fn rewind(&mut self, index: usize, cursor: u64) {
        if let Some(sub) = self.subscriptions.get_mut(index) {
            sub.delivered = sub.delivered.min(cursor.saturating_sub(1));
        }
    }

    /// Brings every subscription towards `head` from the log (after a lag), with at most
    /// `budget` frames; true once all of them are there.
    pub fn catch_up_all(&mut self, head: u64, budget: usize) -> Result<(Vec<Outgoing>, bool), ApiError> {
        let (mut out, mut done) = (Vec::new(), true);
        for index in 0..self.subscriptions.len() {
            let room = budget.saturating_sub(out.len());
            done &= self.catch_up(index, head, room, &mut out)?;
        }
        Ok((out, done))
    }

    pub fn unsubscribe(&mut self, id: &str) -> bool {
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| s.id != id);
        before != self.subscriptions.len()
    }

    /// The objects matching the subscription as of seq `at`: current ones unchanged since,
    /// and for the others their state at `at`, found by walking their event chain back.
    fn snapshot(&self, sub: &mut Subscription, at: u64, out: &mut Vec<Outgoing>) -> Result<(), ApiError> {
        let Some(bucket) = sub.filter.bucket.clone() else {
            return Err(ApiError::invalid_one(
                tidemark_protocol::Location::Body,
                Some("filter.bucket"),
                "A snapshot needs a bucket",
            ));
        };
        // A collection's records, or a bucket's groups or (by default) collections.
        let segments: Vec<&str> = match (&sub.filter.collection, sub.filter.resource_name.as_deref()) {
            (Some(c), _) => vec!["buckets", &bucket, "collections", c, "records"],
            (None, Some("group")) => vec!["buckets", &bucket, "groups"],
            (None, _) => vec!["buckets", &bucket, "collections"],
        };
        let list = self.state.registry.require(&segments)?.in_namespace(&self.identity.namespace);
        let engine = &self.state.engine;
        let mut objects = Vec::new();
        engine
            .walk_list(list.parent_uri(), &list.kind.plural, ListRange::default(), ListOrder::Newest, |o| {
                objects.push(o);
                Ok(true)
            })
            .map_err(crate::error::from_engine)?;
        for object in objects {
            let event = engine
                .event_of_version_at(list.parent_uri(), &list.kind.plural, object.id(), tidemark_engine::AsOf::Seq(at))
                .map_err(crate::error::from_engine)?
                .map(Arc::new);
            let Some(event) = event.filter(|e| e.action != Action::Delete) else { continue };
            let change = Change::with_old(&self.state.registry, event, None, "create");
            if sub.matches(&change) && sub.allowed(&self.state, &self.identity, &change) {
                out.push(Outgoing::control(change_frame(&sub.id, &change.tail), at));
            }
        }
        Ok(())
    }
}
