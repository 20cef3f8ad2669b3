//! kinto.plugins.history: `GET /v1/buckets/{bid}/history`, derived from the log.
//!
//! Nothing is stored twice: the engine keeps, per bucket, the seqs of the events under it (its
//! history index), and each entry is built from its event when read. Entries have Kinto's shape
//! (`id`, `last_modified`, `date`, `action`, `resource_name`, `uri`, `user_id`, the ids of the
//! object, `target {data, permissions}`) plus what the log knows beyond Kinto: `seq`, `before`
//! (the object's previous version), `patch` (the JSON-Patch from before to after) and the
//! request `context` (user, application, environment, session, request id). An entry's
//! `last_modified` is its object's, as clients expect (Kinto gives history its own clock).

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tidemark_engine::{Acl, Action, Command, EngineError, Event, Expect, HistoryEntry, Op};
use tidemark_protocol::filter;
use tidemark_protocol::query::{self, ListQuery, SortKey, Token};
use tidemark_protocol::ApiError;

use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::settings::HistorySettings;
use crate::state::{now_ms, AppState};
use crate::toolkit::{Node, Registry};

/// The fields history entries have: filters and sorts on others are refused, as in Kinto.
const FIELDS: [&str; 17] = [
    "uri",
    "action",
    "resource_name",
    "user_id",
    "date",
    "target",
    "bucket_id",
    "collection_id",
    "group_id",
    "record_id",
    "account_id",
    "seq",
    "before",
    "patch",
    "context",
    "id",
    "last_modified",
];

/// The fields of an entry that need nothing but the event: what most filters look at, so an
/// entry that fails them costs no before-image and no diff.
const SUMMARY_FIELDS: [&str; 11] = [
    "id",
    "last_modified",
    "action",
    "resource_name",
    "uri",
    "user_id",
    "bucket_id",
    "collection_id",
    "group_id",
    "record_id",
    "seq",
];

/// The summary fields an entry's history index record decides, its event unread.
const INDEX_FIELDS: [&str; 9] =
    ["last_modified", "action", "resource_name", "uri", "bucket_id", "collection_id", "group_id", "record_id", "seq"];

/// What an entry says of its object: see [`INDEX_FIELDS`].
fn address(registry: &Registry, entry: &HistoryEntry<'_>) -> Option<Map<String, Value>> {
    let chain = registry.chain_of(entry.uri)?;
    let mut fields = Map::new();
    fields.insert("last_modified".into(), json!(entry.timestamp));
    fields.insert("action".into(), json!(entry.action.as_str()));
    fields.insert("resource_name".into(), json!(entry.resource));
    fields.insert("uri".into(), json!(Registry::wire_uri(entry.uri)));
    // Kinto's ids: the object's own, and below the bucket the ids of the levels between.
    let ids: &[Node] = if chain.len() > 1 { &chain[1..] } else { &chain };
    for node in ids {
        fields.insert(format!("{}_id", node.kind.name), json!(node.id));
    }
    fields.insert("seq".into(), json!(entry.seq));
    Some(fields)
}

/// An entry's summary (see [`SUMMARY_FIELDS`]; `date` too).
fn summary(registry: &Registry, event: &Event) -> Option<Map<String, Value>> {
    let stored = event.uri();
    let entry = HistoryEntry {
        seq: event.seq,
        timestamp: event.timestamp,
        action: event.action,
        resource: &event.resource,
        uri: &stored,
    };
    let mut fields = address(registry, &entry)?;
    fields.insert("id".into(), json!(event.id.to_string()));
    fields.insert("date".into(), json!(iso_date(event.timestamp)));
    fields.insert("user_id".into(), json!(event.context.user_id));
    Some(fields)
}

/// The whole entry from its summary: `target`, and beyond Kinto `before` (the object's previous
/// data, if it had one), `patch` and `context`.
fn complete(mut entry: Map<String, Value>, ns: &str, event: &Event, before: Option<&Value>) -> Value {
    let permissions = crate::namespace::acl_to_wire(ns, &event.permissions);
    entry.insert("target".into(), json!({"data": event.data, "permissions": permissions}));
    entry.insert("before".into(), before.cloned().unwrap_or(Value::Null));
    let empty = Value::Object(Map::new());
    let patch = tidemark_protocol::body::diff(before.unwrap_or(&empty), &event.data);
    entry.insert("patch".into(), patch);
    let context = &event.context;
    entry.insert(
        "context".into(),
        json!({
            "user_id": context.user_id,
            "app_id": context.app_id,
            "app_env": context.app_env,
            "session_id": context.session_id,
            "request_id": context.request_id,
        }),
    );
    Value::Object(entry)
}

/// Python's `datetime.isoformat()` of an aware UTC time: microseconds and `+00:00`.
fn iso_date(ts_ms: u64) -> String {
    let (date_time, millis) = tidemark_protocol::dates::date_time(ts_ms);
    format!("{date_time}.{:06}+00:00", millis * 1000)
}

/// Who may see which entries: a bucket reader sees them all; others see the entries of the
/// objects they could read or write when they were written, and those under collections whose
/// own ACL names them for read or write (Kinto's entry ACL).
struct Visibility<'a> {
    all: bool,
    principals: &'a [String],
    collections: HashMap<String, bool>,
}

impl Visibility<'_> {
    fn admits(&mut self, state: &AppState, event: &Event) -> Result<bool, ApiError> {
        if self.all {
            return Ok(true);
        }
        let named = ["read", "write"]
            .iter()
            .filter_map(|perm| event.permissions.get(*perm))
            .flatten()
            .any(|principal| self.principals.contains(principal));
        if named {
            return Ok(true);
        }
        let Some(chain) = state.registry.chain_of(&event.uri()) else { return Ok(false) };
        // A record's collection, or the collection itself: its own `read` and `write` (not the
        // rights they inherit, nor `record:create`), as Kinto's entry ACL lists them.
        let Some(collection) = chain.iter().find(|n| n.kind.name == "collection") else { return Ok(false) };
        let uri = collection.uri.clone();
        if let Some(known) = self.collections.get(&uri) {
            return Ok(*known);
        }
        let acl = state.engine.acl(&uri).map_err(from_engine)?;
        let readable = ["read", "write"]
            .iter()
            .filter_map(|perm| acl.get(*perm))
            .flatten()
            .any(|principal| self.principals.contains(principal));
        self.collections.insert(uri, readable);
        Ok(readable)
    }
}

/// The resource of history's own events: a `DELETE` of entries is an object under the bucket
/// listing the seqs of the entries it hides. No route reaches it; cascades delete it with the
/// bucket like anything else below it.
const PURGE_RESOURCE: &str = "history-purge";
const PURGE_PLURAL: &str = "history-purges";

/// What hides an entry, besides the reader's rights: the `history.*` settings and the purges
/// met so far (entries are walked newest first, so every purge comes before what it hides).
struct Rules<'a> {
    settings: &'a HistorySettings,
    purged: HashSet<u64>,
    /// Entries shown so far per (`resource_name`, user trimmed separately), for auto-trim.
    kept: HashMap<(String, Option<String>), u64>,
}

impl<'a> Rules<'a> {
    fn new(settings: &'a HistorySettings) -> Self {
        Rules { settings, purged: HashSet::new(), kept: HashMap::new() }
    }

    /// Notes a purge (history's own event, never an entry): the seqs it hides.
    fn purge(&mut self, event: &Event) {
        let seqs = event.data.get("purged").and_then(Value::as_array).into_iter().flatten();
        self.purged.extend(seqs.filter_map(Value::as_u64));
    }

    /// Whether the rules can be decided without an entry's event: no rule on users or counts.
    fn need_no_event(&self) -> bool {
        self.settings.exclude_user_ids.is_empty() && self.settings.auto_trim_max_count == 0
    }

    /// Whether an entry is hidden by what its index record says: a purge or an excluded URI.
    fn hides(&self, seq: u64, wire_uri: &str) -> bool {
        self.purged.contains(&seq)
            || self.settings.exclude_resources.iter().any(|excluded| {
                wire_uri.strip_prefix(excluded.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// Whether an event's entry exists for readers: not excluded, purged or trimmed away.
    fn keeps(&mut self, event: &Event, wire_uri: &str) -> bool {
        let user = event.context.user_id.as_deref();
        let excluded_user = user.is_some_and(|u| self.settings.exclude_user_ids.iter().any(|x| x == u));
        if excluded_user || self.hides(event.seq, wire_uri) {
            return false;
        }
        let max = self.settings.auto_trim_max_count;
        if max == 0 {
            return true;
        }
        let per_user = &self.settings.auto_trim_user_ids;
        let key = match user {
            Some(u) if per_user.iter().any(|x| x == u) => (event.resource.clone(), Some(u.to_owned())),
            _ if !per_user.is_empty() => return true,
            _ => (event.resource.clone(), None),
        };
        let kept = self.kept.entry(key).or_insert(0);
        *kept += 1;
        *kept <= max
    }
}

/// A history request, read: its query, and the bucket's chain in the caller's namespace.
struct HistoryCall {
    pairs: Vec<(String, String)>,
    q: ListQuery,
    chain: Vec<Node>,
}

impl HistoryCall {
    fn read(state: &AppState, req: &ApiRequest, bucket: &str) -> Result<HistoryCall, ApiError> {
        crate::toolkit::extract::check_accept(req)?;
        let pairs = query::parse_pairs(&req.query)?;
        // The token is read against the sort as it stands, as on every list.
        let without_token: Vec<(String, String)> = pairs.iter().filter(|(name, _)| name != "_token").cloned().collect();
        let mut q: ListQuery = query::parse_list_query(&without_token, now_ms(), Some(&FIELDS))?;
        if q.sort.is_empty() {
            q.sort.push(SortKey { field: "last_modified".into(), descending: true });
        }
        if let Some((_, token)) = pairs.iter().find(|(name, _)| name == "_token") {
            q.token = Some(Token::decode_at(token, &q.sort, now_ms())?);
        }
        let ns = &req.identity.namespace;
        let chain = state.registry.require(&["buckets", bucket])?.in_namespace(ns).chain_with(bucket);
        Ok(HistoryCall { pairs, q, chain })
    }

    /// The entries the caller may see that match the query, newest first, stopping one past
    /// `limit` when the sort allows it; and the newest event's timestamp (the list's ETag).
    fn entries(
        &self,
        state: &AppState,
        req: &ApiRequest,
        visible: &mut Visibility<'_>,
        limit: usize,
    ) -> Result<Found, ApiError> {
        let q = &self.q;
        let ns = &req.identity.namespace;
        let root = &self.chain[0].uri;
        // Newest first is the walk's own order: stop one entry past the page. Other sorts need all.
        let default_order = q.sort.iter().all(|k| k.field == "last_modified" && k.descending);
        let stop_at = default_order.then_some(limit + 1);
        let mut rules = Rules::new(&state.settings.history);
        let on_summary = |f: &&filter::Filter| SUMMARY_FIELDS.contains(&f.field.as_str());
        let early_filters: Vec<&filter::Filter> = q.filters.iter().filter(on_summary).collect();
        let late_filters: Vec<&filter::Filter> = q.filters.iter().filter(|f| !on_summary(f)).collect();
        // A bucket reader under rules that ignore users and counts: an entry whose object fails
        // the filters is skipped on its index record alone (`?record_id=` reads only its own).
        let index_filters: Vec<&filter::Filter> =
            q.filters.iter().filter(|f| INDEX_FIELDS.contains(&f.field.as_str())).collect();
        let by_index = visible.all && rules.need_no_event() && !index_filters.is_empty();
        // Most of them look at the object alone (its kind, ids, URI): decided once per object.
        let per_event = ["last_modified", "action", "seq"];
        let (event_filters, object_filters): (Vec<&filter::Filter>, Vec<&filter::Filter>) =
            index_filters.iter().partition(|f| per_event.contains(&f.field.as_str()));
        let mut object_verdicts: HashMap<String, bool> = HashMap::new();
        let mut entries: Vec<(u64, Value)> = Vec::new();
        let mut seen_any = false;
        let mut newest: Option<u64> = None;
        let mut failure = None;
        let missing = |seq: u64| EngineError::Corrupt(format!("history names missing event {seq}"));
        state
            .engine
            .walk_history_index(root, |index| {
                newest.get_or_insert(index.timestamp);
                // The bucket's deletion ends the history of the bucket of that name (Kinto wipes
                // it): a bucket created again starts afresh.
                if index.action == Action::Delete && index.uri == root {
                    return Ok(false);
                }
                if index.resource == PURGE_RESOURCE {
                    let event = state.engine.event_at(index.seq)?.ok_or_else(|| missing(index.seq))?;
                    rules.purge(&event);
                    return Ok(true);
                }
                if by_index {
                    if rules.hides(index.seq, Registry::wire_uri(index.uri)) {
                        return Ok(true);
                    }
                    let known = object_verdicts.get(index.uri).copied();
                    let object_passes = match known {
                        Some(verdict) => verdict,
                        None => {
                            let fields = address(&state.registry, &index).map(Value::Object);
                            let verdict =
                                fields.is_some_and(|f| object_filters.iter().all(|filter| filter.matches(&f)));
                            object_verdicts.insert(index.uri.to_owned(), verdict);
                            verdict
                        }
                    };
                    if !object_passes {
                        return Ok(true);
                    }
                    if !event_filters.is_empty() {
                        let fields = json!({
                            "last_modified": index.timestamp,
                            "action": index.action.as_str(),
                            "seq": index.seq,
                        });
                        if !event_filters.iter().all(|f| f.matches(&fields)) {
                            return Ok(true);
                        }
                    }
                }
                let event = state.engine.event_at(index.seq)?.ok_or_else(|| missing(index.seq))?;
                let stored = event.uri();
                if !rules.keeps(&event, Registry::wire_uri(&stored)) {
                    return Ok(true);
                }
                match visible.admits(state, &event) {
                    Ok(true) => {}
                    Ok(false) => return Ok(true),
                    Err(err) => {
                        failure = Some(err);
                        return Ok(false);
                    }
                }
                seen_any = true;
                let Some(summary) = summary(&state.registry, &event) else { return Ok(true) };
                // Filters on the summary's fields are decided before the costly part.
                let early = Value::Object(summary);
                if !early_filters.iter().all(|f| f.matches(&early)) {
                    return Ok(true);
                }
                let Value::Object(summary) = early else { return Ok(true) };
                let before = match event.prev_seq {
                    Some(prev) if event.action != Action::Create => {
                        state.engine.event_at(prev)?.filter(|e| e.action != Action::Delete).map(|e| e.data)
                    }
                    _ => None,
                };
                let entry = complete(summary, ns, &event, before.as_ref());
                let matches = late_filters.iter().all(|f| f.matches(&entry))
                    && q.token.as_ref().is_none_or(|t| filter::is_after_token(&entry, &t.last_object, &q.sort));
                if matches {
                    entries.push((event.seq, entry));
                }
                Ok(stop_at.is_none_or(|stop| entries.len() < stop))
            })
            .map_err(from_engine)?;
        if let Some(err) = failure {
            return Err(err);
        }
        if !default_order {
            entries.sort_by(|a, b| filter::compare_objects(&a.1, &b.1, &q.sort));
        }
        Ok(Found { entries, newest, seen_any })
    }
}

/// What a history walk found.
struct Found {
    /// (seq, entry) in the query's order.
    entries: Vec<(u64, Value)>,
    /// The newest event's timestamp (the list's ETag).
    newest: Option<u64>,
    /// Whether the caller could see any entry at all.
    seen_any: bool,
}

/// `GET`, `HEAD` and `DELETE /v1/buckets/{bid}/history`.
pub async fn handle(state: &AppState, req: &ApiRequest, bucket: &str) -> Result<ApiResponse, ApiError> {
    match req.method {
        Method::GET | Method::HEAD => list(state, req, bucket),
        Method::DELETE => purge(state, req, bucket).await,
        _ => Err(ApiError::method_not_allowed("GET, HEAD, DELETE, OPTIONS")),
    }
}

fn list(state: &AppState, req: &ApiRequest, bucket: &str) -> Result<ApiResponse, ApiError> {
    let call = HistoryCall::read(state, req, bucket)?;
    let authz = state.authz(&req.identity);
    let exists = state.engine.exists_uri(&call.chain[0].uri).map_err(from_engine)?;
    if !exists {
        return Err(authz.deny());
    }
    let all = authz.allowed(&call.chain, "read")?;
    let mut visible = Visibility { all, principals: &req.identity.principals, collections: HashMap::new() };
    let limit = call.q.effective_limit(state.settings.paginate_by, state.settings.storage_max_fetch_size) as usize;
    let Found { entries, newest, seen_any } = call.entries(state, req, &mut visible, limit)?;
    // Someone with no right on the bucket and nothing of theirs in it may not look (Kinto).
    if !all && !seen_any {
        return Err(authz.deny());
    }
    let entries = entries.into_iter().map(|(_, entry)| entry).collect();
    let response = crate::toolkit::common::page_of(req, &call.pairs, &call.q, entries, limit);
    Ok(response.timestamp_headers(newest.unwrap_or(0)).header("Cache-Control", "no-cache, no-store"))
}

/// Kinto's `DELETE` of history entries (bucket writers; filters, sort and `_limit` as on a GET;
/// `Next-Page` when more match): recorded in the log as a purge event naming the entries'
/// seqs, which every later read skips. The log itself keeps every event.
async fn purge(state: &AppState, req: &ApiRequest, bucket: &str) -> Result<ApiResponse, ApiError> {
    if state.settings.readonly {
        return Err(ApiError::method_not_allowed("GET, HEAD, OPTIONS"));
    }
    let call = HistoryCall::read(state, req, bucket)?;
    let authz = state.authz(&req.identity);
    let exists = state.engine.exists_uri(&call.chain[0].uri).map_err(from_engine)?;
    if !exists || !authz.allowed(&call.chain, "write")? {
        return Err(authz.deny());
    }
    let mut visible = Visibility { all: true, principals: &req.identity.principals, collections: HashMap::new() };
    let limit = call.q.effective_limit(state.settings.paginate_by, state.settings.storage_max_fetch_size) as usize;
    let Found { mut entries, newest, .. } = call.entries(state, req, &mut visible, limit)?;
    entries.truncate(limit + 1);
    let purged: Vec<u64> = entries.iter().take(limit).map(|(seq, _)| *seq).collect();
    let timestamp = if purged.is_empty() {
        newest.unwrap_or(0)
    } else {
        let command = Command {
            resource: PURGE_RESOURCE.into(),
            plural: PURGE_PLURAL.into(),
            parent: call.chain[0].uri.clone(),
            id: tidemark_protocol::ids::uuid4(rand::random()),
            members: None,
            op: Op::Put {
                data: json!({ "purged": purged }).as_object().cloned().unwrap_or_default(),
                permissions: Acl::new(),
            },
            expect: Expect::Absent,
            last_modified: None,
            context: crate::state::context(req),
        };
        state.submit(command).await.map_err(from_engine)?.timestamp
    };
    let ids: Vec<Value> = entries.iter().take(limit).map(|(_, entry)| entry["id"].clone()).collect();
    let entries = entries.into_iter().map(|(_, entry)| entry).collect();
    let mut response = crate::toolkit::common::page_of(req, &call.pairs, &call.q, entries, limit);
    let tombstones: Vec<Value> =
        ids.into_iter().map(|id| json!({"id": id, "last_modified": timestamp, "deleted": true})).collect();
    response.body = crate::response::Body::Json(json!({ "data": tombstones }));
    Ok(response.timestamp_headers(timestamp))
}

/// `GET /v1/buckets/{bid}/snapshot/collections/{cid}@{timestamp}`: the collection's records as
/// they were then (Kinto's history snapshot), newest first, unpaginated.
pub fn snapshot(state: &AppState, req: &ApiRequest, bucket: &str, at: &str) -> Result<ApiResponse, ApiError> {
    let invalid = || {
        ApiError::invalid_one(tidemark_protocol::Location::Path, Some("timestamp"), "Expected a non-negative integer")
    };
    let (collection, ts) = at.rsplit_once('@').ok_or_else(invalid)?;
    let ts: u64 = ts.parse().map_err(|_| invalid())?;
    let authz = state.authz(&req.identity);
    let list = state
        .registry
        .require(&["buckets", bucket, "collections", collection, "records"])?
        .in_namespace(&req.identity.namespace);
    let collection_chain = list.parents.clone();
    if !authz.allowed(&collection_chain, "read")? {
        return Err(authz.deny());
    }
    crate::toolkit::common::require_parents(&state.engine, &list.parents)?;
    let records = crate::toolkit::lists::snapshot(state, &list, tidemark_engine::AsOf::Timestamp(ts))?;
    Ok(ApiResponse::json(StatusCode::OK, json!({ "data": records })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_pythons_isoformat() {
        assert_eq!(super::iso_date(1_796_612_746_477), "2026-12-07T03:05:46.477000+00:00");
        assert_eq!(super::iso_date(0), "1970-01-01T00:00:00.000000+00:00");
    }
}
