//! kinto.plugins.history: `GET /v1/buckets/{bid}/history`, derived from the log.
//!
//! Nothing is stored twice: the engine keeps, per bucket, the seqs of the events under it (its
//! history index), and each entry is built from its event when read. Entries have Kinto's shape
//! (`id`, `last_modified`, `date`, `action`, `resource_name`, `uri`, `user_id`, the ids of the
//! object, `target {data, permissions}`) plus what the log knows beyond Kinto: `seq`, `before`
//! (the object's previous version), `patch` (the JSON-Patch from before to after) and the
//! request `context` (user, application, environment, session, request id). An entry's
//! `last_modified` is its object's, as clients expect (Kinto gives history its own clock).

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tidemark_engine::{Action, Event};
use tidemark_protocol::filter;
use tidemark_protocol::query::{self, ListQuery, SortKey, Token};
use tidemark_protocol::ApiError;

use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
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

/// The history entry of one event. `before` is the object's previous data, if it had one.
pub fn entry(registry: &Registry, ns: &str, event: &Event, before: Option<&Value>) -> Option<Value> {
    let stored = event.uri();
    let chain = registry.chain_of(&stored)?;
    let uri = Registry::wire_uri(&stored);
    let mut entry = Map::new();
    entry.insert("id".into(), json!(event.id.to_string()));
    entry.insert("last_modified".into(), json!(event.timestamp));
    entry.insert("date".into(), json!(iso_date(event.timestamp)));
    entry.insert("action".into(), json!(event.action.as_str()));
    entry.insert("resource_name".into(), json!(event.resource));
    entry.insert("uri".into(), json!(uri));
    entry.insert("user_id".into(), json!(event.context.user_id));
    // Kinto's ids: the object's own, and below the bucket the ids of the levels between.
    let ids: &[Node] = if chain.len() > 1 { &chain[1..] } else { &chain };
    for node in ids {
        entry.insert(format!("{}_id", node.kind.name), json!(node.id));
    }
    let permissions = crate::namespace::acl_to_wire(ns, &event.permissions);
    entry.insert("target".into(), json!({"data": event.data, "permissions": permissions}));
    entry.insert("seq".into(), json!(event.seq));
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
    Some(Value::Object(entry))
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

pub fn list(state: &AppState, req: &ApiRequest, bucket: &str) -> Result<ApiResponse, ApiError> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD, OPTIONS"));
    }
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

    let authz = state.authz(&req.identity);
    let ns = &req.identity.namespace;
    let chain = state.registry.require(&["buckets", bucket])?.in_namespace(ns).chain_with(bucket);
    let exists = state.engine.exists_uri(&chain[0].uri).map_err(from_engine)?;
    let all = exists && authz.allowed(&chain, "read")?;
    if !exists {
        return Err(authz.deny());
    }
    let mut visible = Visibility { all, principals: &req.identity.principals, collections: HashMap::new() };

    // Newest first is the walk's own order: stop one entry past the page. Other sorts need all.
    let default_order = q.sort.iter().all(|k| k.field == "last_modified" && k.descending);
    let limit = q.effective_limit(state.settings.paginate_by, state.settings.storage_max_fetch_size) as usize;
    let stop_at = default_order.then_some(limit + 1);
    let mut entries: Vec<Value> = Vec::new();
    let mut seen_any = false;
    let mut newest: Option<u64> = None;
    let mut failure = None;
    state
        .engine
        .walk_history(&chain[0].uri, |event| {
            newest.get_or_insert(event.timestamp);
            match visible.admits(state, &event) {
                Ok(true) => {}
                Ok(false) => return Ok(true),
                Err(err) => {
                    failure = Some(err);
                    return Ok(false);
                }
            }
            seen_any = true;
            let before = match event.prev_seq {
                Some(prev) if event.action != Action::Create => {
                    state.engine.event_at(prev)?.filter(|e| e.action != Action::Delete).map(|e| e.data)
                }
                _ => None,
            };
            let Some(entry) = entry(&state.registry, ns, &event, before.as_ref()) else { return Ok(true) };
            let matches = q.filters.iter().all(|f| f.matches(&entry))
                && q.token.as_ref().is_none_or(|t| filter::is_after_token(&entry, &t.last_object, &q.sort));
            if matches {
                entries.push(entry);
            }
            Ok(stop_at.is_none_or(|stop| entries.len() < stop))
        })
        .map_err(from_engine)?;
    if let Some(err) = failure {
        return Err(err);
    }
    // Someone with no right on the bucket and nothing of theirs in it may not look (Kinto).
    if !all && !seen_any {
        return Err(authz.deny());
    }
    if !default_order {
        entries.sort_by(|a, b| filter::compare_objects(a, b, &q.sort));
    }
    let response = crate::toolkit::common::page_of(req, &pairs, &q, entries, limit);
    let etag = newest.unwrap_or(0);
    Ok(response.timestamp_headers(etag).header("Cache-Control", "no-cache, no-store"))
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
