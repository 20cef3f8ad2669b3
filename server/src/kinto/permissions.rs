//! `GET /v1/permissions`: every object the caller holds an explicit permission on, served from
//! the engine's principal → objects index (no scan of the objects). With `_at`, as it stood
//! then (today's principals): the objects named today or written since, each read as of then.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tidemark_engine::AsOf;
use tidemark_protocol::filter;
use tidemark_protocol::query::{self, SortKey};
use tidemark_protocol::ApiError;

use crate::authz::deny;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::state::{now_ms, AppState};
use crate::toolkit::{Registry, Resource};

const FIELDS: [&str; 9] =
    ["uri", "resource_name", "permissions", "bucket_id", "collection_id", "group_id", "record_id", "account_id", "id"];

/// `{uri, resource_name, <kind>_id…, id}` for an object URI, as Kinto's route match gives it: an
/// id field per level of the chain (an account's is `account_id`).
fn describe(registry: &Registry, uri: &str) -> Option<Map<String, Value>> {
    let chain = registry.chain_of(uri)?;
    let target = chain.last()?;
    let mut entry = Map::new();
    entry.insert("uri".into(), json!(Registry::wire_uri(uri)));
    entry.insert("resource_name".into(), json!(target.kind.name));
    for node in &chain {
        entry.insert(format!("{}_id", node.kind.name), json!(node.id));
    }
    entry.insert("id".into(), json!(target.id));
    Some(entry)
}

/// What `perm` implies on the same object, as Kinto lists it: its inheritance restricted to the
/// object. `write` gives `read`; on a kind that has children (it carries create permissions) it
/// also gives `read:attributes` and those create permissions, and `read` gives
/// `read:attributes`; any create gives `read:attributes`.
fn implied(kind: &Resource, perm: &str) -> Vec<String> {
    let creates: Vec<String> = kind.permissions.iter().filter(|p| p.ends_with(":create")).cloned().collect();
    let has_children = !creates.is_empty();
    match perm {
        "write" if has_children => {
            let mut all = vec!["read".to_owned(), "read:attributes".to_owned()];
            all.extend(creates);
            all
        }
        "write" => vec!["read".to_owned()],
        "read" if has_children => vec!["read:attributes".to_owned()],
        create if create.ends_with(":create") => vec!["read:attributes".to_owned()],
        _ => Vec::new(),
    }
}

/// Today's grants of the caller's principals, from the principal index.
fn granted_now(state: &AppState, req: &ApiRequest) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for principal in &req.identity.principals {
        for (perm, uri) in state.engine.objects_of_principal(principal).map_err(from_engine)? {
            granted.entry(uri).or_default().insert(perm);
        }
    }
    Ok(granted)
}

/// The grants the caller's principals (today's, groups included) held at `at`: each object
/// that names them today or was written since, read as it was then.
fn granted_at(state: &AppState, req: &ApiRequest, at: AsOf) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let engine = &state.engine;
    let mut candidates: BTreeSet<String> = granted_now(state, req)?.into_keys().collect();
    candidates.extend(engine.written_after(at).map_err(from_engine)?);
    let principals = &req.identity.principals;
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for uri in candidates {
        let Some((parent, plural, id)) = tidemark_engine::split_uri(&uri) else { continue };
        let Some(event) = engine.event_of_version_at(parent, plural, id, at).map_err(from_engine)? else { continue };
        if event.action == tidemark_engine::Action::Delete {
            continue;
        }
        for (perm, named) in &event.permissions {
            if named.iter().any(|p| principals.contains(p)) {
                granted.entry(uri.clone()).or_default().insert(perm.clone());
            }
        }
    }
    Ok(granted)
}

pub fn list(state: &AppState, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let readers = state.settings.principals("permissions", "read");
    let allowed = readers.is_empty() && !state.settings.raw.contains_key("permissions_read_principals")
        || readers.iter().any(|p| req.identity.principals.contains(p));
    if !allowed {
        return Err(deny(&req.identity));
    }
    let pairs = query::parse_pairs(&req.query)?;
    // The token is read against the sort as it stands here, without the implicit timestamp.
    let without_token: Vec<(String, String)> = pairs.iter().filter(|(name, _)| name != "_token").cloned().collect();
    let mut q = query::parse_list_query(&without_token, now_ms(), Some(&FIELDS))?;
    // Sorted by URI (there are no timestamps here), newest-first tie-breaks do not apply.
    q.sort.retain(|k| k.field != "last_modified");
    if q.sort.is_empty() {
        q.sort.push(SortKey { field: "uri".into(), descending: true });
    }
    if let Some((_, token)) = pairs.iter().find(|(name, _)| name == "_token") {
        q.token = Some(query::Token::decode_at(token, &q.sort, now_ms())?);
    }

    let at = crate::toolkit::extract::point_in_time(&pairs)?;
    let mut granted = match at {
        None => granted_now(state, req)?,
        Some(at) => granted_at(state, req, at)?,
    };
    // Only the caller's application's objects.
    granted.retain(|uri, _| crate::namespace::contains(&req.identity.namespace, uri));
    let registry = &state.registry;
    let mut entries: Vec<Value> = granted
        .into_iter()
        .filter_map(|(uri, mut perms)| {
            let mut entry = describe(registry, &uri)?;
            let kind = registry.get(entry["resource_name"].as_str().unwrap_or_default())?;
            let extra: Vec<String> = perms.iter().flat_map(|p| implied(kind, p)).collect();
            perms.extend(extra);
            entry.insert("permissions".into(), json!(perms));
            Some(Value::Object(entry))
        })
        .collect();
    let root: Vec<&str> = registry
        .iter()
        .filter(|kind| kind.parent.is_none() && !kind.is_per_user())
        .map(|kind| kind.name.as_str())
        .filter(|kind| {
            state
                .grants
                .0
                .get(&format!("{kind}_create"))
                .is_some_and(|p| p.iter().any(|p| req.identity.principals.contains(p)))
        })
        .collect();
    if !root.is_empty() {
        let perms: Vec<String> = root.iter().map(|kind| format!("{kind}:create")).collect();
        entries.push(json!({"uri": "/", "resource_name": "root", "permissions": perms}));
    }
    entries.retain(|entry| q.filters.iter().all(|f| f.matches(entry)));
    entries.sort_by(|a, b| filter::compare_objects(a, b, &q.sort));
    let total = entries.len();
    // No timestamps here: the list changes with any write, so its ETag is the newest event's
    // (as of `_at`, the moment's).
    let last_seq = match at {
        Some(AsOf::Seq(seq)) => seq,
        _ => state.engine.last_seq().map_err(from_engine)?,
    };
    let etag = match at {
        Some(AsOf::Timestamp(ts)) => ts,
        _ => state.engine.event_at(last_seq).map_err(from_engine)?.map_or(0, |event| event.timestamp),
    };
    let response = if req.method == Method::HEAD {
        // Kinto's HEAD renders an empty page, whose length it announces.
        ApiResponse::json(StatusCode::OK, json!({"data": []}))
            .header("Total-Objects", total.to_string())
            .header("Total-Records", total.to_string())
    } else {
        if let Some(token) = &q.token {
            entries.retain(|entry| filter::is_after_token(entry, &token.last_object, &q.sort));
        }
        let limit = q.effective_limit(state.settings.paginate_by, state.settings.storage_max_fetch_size) as usize;
        crate::toolkit::common::page_of(req, &pairs, &q, entries, limit)
    };
    Ok(response.timestamp_headers(etag).header("Cache-Control", "no-cache, no-store"))
}
