//! Pieces every resource handler shares: parent checks, envelopes, negotiation, caching.

use serde_json::{json, Map, Value};
use tidemark_engine::{Acl, Engine, StoredObject};
use tidemark_protocol::ApiError;

use crate::auth::Identity;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::state::AppState;
use crate::toolkit::{Address, Node};

/// A missing parent answers 404 errno 111, naming the innermost one (as Kinto).
pub fn require_parents(engine: &Engine, parents: &[Node]) -> Result<(), ApiError> {
    // No object outlives its parent: the innermost one existing vouches for the rest, and is
    // the one Kinto names when it is missing (a record's collection, even without a bucket).
    match parents.last() {
        Some(node) if !engine.exists_uri(&node.uri).map_err(from_engine)? => {
            Err(ApiError::parent_not_found(&node.kind.name, &node.id))
        }
        _ => Ok(()),
    }
}

/// The object's own ACL, shown only to its explicit writers (§2.1).
pub fn visible_permissions(acl: &Acl, identity: &Identity) -> Value {
    let is_writer = acl.get("write").is_some_and(|writers| writers.iter().any(|w| identity.principals.contains(w)));
    if is_writer {
        json!(crate::namespace::acl_to_wire(&identity.namespace, acl))
    } else {
        json!({})
    }
}

pub fn envelope(data: &Map<String, Value>, acl: &Acl, identity: &Identity) -> Value {
    data_and_permissions(Value::Object(data.clone()), visible_permissions(acl, identity))
}

/// `{"data": …, "permissions": …}` without `json!`'s serialise-into-a-copy.
pub fn data_and_permissions(data: Value, permissions: Value) -> Value {
    let mut body = Map::new();
    // Kinto's order: permissions first.
    body.insert("permissions".into(), permissions);
    body.insert("data".into(), data);
    Value::Object(body)
}

pub fn object_response(
    status: axum::http::StatusCode,
    object: &StoredObject,
    acl: &Acl,
    identity: &Identity,
) -> ApiResponse {
    ApiResponse::json(status, envelope(&object.data, acl, identity)).timestamp_headers(object.last_modified)
}

/// Kinto's cache headers on reads of objects and lists (§3.1): authenticated callers get
/// `no-cache, no-store`; anonymous ones the expiry the settings give, and for records the
/// collection's `cache_expires` if it is longer.
pub fn cache_headers(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    response: ApiResponse,
) -> Result<ApiResponse, ApiError> {
    let expiry = if req.identity.is_authenticated() { None } else { anonymous_expiry(state, addr)? };
    Ok(match expiry {
        Some(seconds) => expiry_headers(seconds).into_iter().fold(response, |r, (name, value)| r.header(name, value)),
        None => response.header("Cache-Control", "no-cache, no-store"),
    })
}

fn anonymous_expiry(state: &AppState, addr: &Address) -> Result<Option<i64>, ApiError> {
    // Every `*_cache_expires_seconds` value was checked to be an integer when settings loaded.
    let setting = |key: String| state.settings.raw.get(&key).and_then(|v| v.trim().parse::<i64>().ok());
    let kind = addr.kind.name.as_str();
    let general = setting(format!("{kind}_cache_expires_seconds"));
    let [bucket, collection] = match addr.parents.as_slice() {
        [bucket, collection] if addr.kind.cache_expires_from_parent => [bucket, collection],
        _ => return Ok(general),
    };
    let (bid, cid) = (&bucket.id, &collection.id);
    let by_settings = [
        format!("{bid}.{cid}.record_cache_expires_seconds"),
        format!("{bid}.record_cache_expires_seconds"),
        "record_cache_expires_seconds".to_owned(),
        format!("{bid}_{cid}_record_cache_expires_seconds"),
        format!("{bid}_record_cache_expires_seconds"),
    ]
    .into_iter()
    .find_map(setting);
    let metadata =
        engine_collection(&state.engine, collection)?.and_then(|c| c.data.get("cache_expires").and_then(Value::as_i64));
    Ok(match metadata {
        Some(own) => Some(by_settings.unwrap_or(-1).max(own)),
        None => by_settings.or(general),
    })
}

fn engine_collection(engine: &Engine, collection: &Node) -> Result<Option<StoredObject>, ApiError> {
    Ok(engine.get_uri(&collection.uri).map_err(from_engine)?.filter(|o| !o.deleted))
}

/// `Cache-Control`, `Expires` (and `Pragma`) for an expiry in seconds, as Pyramid's
/// `cache_expires` sets them: 0 means "do not cache".
pub fn expiry_headers(seconds: i64) -> Vec<(&'static str, String)> {
    let expires = std::time::SystemTime::now()
        .checked_add(std::time::Duration::from_secs(seconds.max(0) as u64))
        .unwrap_or_else(std::time::SystemTime::now);
    let expires = ("Expires", httpdate::fmt_http_date(expires));
    if seconds == 0 {
        vec![
            ("Cache-Control", "max-age=0, must-revalidate, no-cache, no-store".to_owned()),
            expires,
            ("Pragma", "no-cache".to_owned()),
        ]
    } else {
        vec![("Cache-Control", format!("max-age={seconds}")), expires]
    }
}

/// A client-chosen `last_modified`: honoured only when it is a JSON integer.
pub fn explicit_timestamp(data: &Map<String, Value>) -> Option<u64> {
    data.get("last_modified").and_then(Value::as_u64)
}

/// Strips the server-managed fields before a command carries the data to the engine.
pub fn strip_managed(mut data: Map<String, Value>) -> Map<String, Value> {
    data.remove("id");
    data.remove("last_modified");
    data
}

/// A page of documents filtered and sorted in memory (history, permissions): cut to `limit`,
/// projected to `_fields`, with `Next-Page` when more follow.
pub fn page_of(
    req: &ApiRequest,
    pairs: &[(String, String)],
    q: &tidemark_protocol::query::ListQuery,
    mut entries: Vec<Value>,
    limit: usize,
) -> ApiResponse {
    use tidemark_protocol::{filter, query};
    let next = (entries.len() > limit).then(|| {
        entries.truncate(limit);
        let offset = q.token.as_ref().map_or(0, |t| t.offset) + limit as u64 + 1;
        let nonce = format!("pagination-token-{}", tidemark_protocol::ids::uuid4(rand::random()));
        let last = entries.last().cloned().unwrap_or(Value::Null);
        let token = query::Token::for_last(&last, &q.sort, offset, nonce);
        query::next_page_url(&format!("{}{}", req.base_url, req.path), pairs, limit as u64, &token.encode())
    });
    if let Some(fields) = &q.fields {
        entries = entries.iter().map(|e| filter::project(e, fields)).collect();
    }
    let mut response = ApiResponse::json(axum::http::StatusCode::OK, json!({ "data": entries }));
    if let Some(next) = next {
        response.set_header("Next-Page", next);
    }
    response
}
