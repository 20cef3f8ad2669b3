//! Plural endpoints (`/buckets`, `…/records`): GET, HEAD, POST, DELETE, served from the
//! engine's views — the changes index gives `_since`/`_before` and the default newest-first
//! order without scanning every object, and counts are maintained, not computed.

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tidemark_engine::{Acl, Command, EngineError, Expect, ListOrder, ListRange, Op, StoredObject};
use tidemark_protocol::body;
use tidemark_protocol::filter::{self, Op as FilterOp};
use tidemark_protocol::headers::{Preconditions, Verdict};
use tidemark_protocol::query::{self, ListQuery, Token};
use tidemark_protocol::{ApiError, Location};

use crate::authz::Authz;
use crate::common::{self, check_content_type, require_parents};
use crate::error::{from_engine, RETRY_AFTER_SECONDS};
use crate::objects::precondition_failed;
use crate::request::ApiRequest;
use crate::resources::Address;
use crate::response::ApiResponse;
use crate::state::{now_ms, AppState};

const MAX_ATTEMPTS: usize = 16;

pub async fn handle(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    match req.method {
        Method::GET | Method::HEAD => read(state, req, addr),
        Method::POST => create(state, req, addr).await,
        Method::DELETE => delete(state, req, addr).await,
        _ => Err(ApiError::method_not_allowed(crate::routes::LIST_METHODS)),
    }
}

/// A timestamp query parameter (`?last_modified=` on DELETE): a non-negative integer.
pub fn query_timestamp(req: &ApiRequest, name: &str) -> Result<Option<u64>, ApiError> {
    let pairs = query::parse_pairs(&req.query)?;
    let Some((_, raw)) = pairs.iter().find(|(k, _)| k == name) else {
        return Ok(None);
    };
    let digits = raw.trim().trim_matches('"');
    digits
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::invalid_one(Location::Querystring, Some(name), format!("\"{raw}\" is not a number")))
}

/// Which objects of the list the caller may see (or delete).
enum Visibility {
    /// The list-level right: everything.
    All,
    /// Only these ids, shared with the caller through their own ACLs.
    Only(HashSet<String>),
}

impl Visibility {
    fn admits(&self, object: &StoredObject) -> bool {
        match self {
            Visibility::All => true,
            // Tombstones lose their ACL: sharees never see them (Kinto).
            Visibility::Only(ids) => !object.deleted && ids.contains(object.id()),
        }
    }
}

/// Kinto §8.6 step 4: the list-level right, else the shared ids, else (with the create right)
/// an empty list, else a denial.
fn visibility(state: &AppState, authz: &Authz<'_>, addr: &Address, perm: &str) -> Result<Visibility, ApiError> {
    if authz.allowed_on_list(&addr.parents, addr.kind.name, perm)? {
        return Ok(Visibility::All);
    }
    let prefix = format!("{}/", addr.list_path());
    let mut ids = HashSet::new();
    for principal in &authz.identity.principals {
        for (granted, uri) in state.engine.objects_of_principal(principal).map_err(from_engine)? {
            let grants = granted == "write" || (perm == "read" && granted == "read");
            if let Some(id) = uri.strip_prefix(&prefix).filter(|id| grants && !id.contains('/')) {
                ids.insert(id.to_owned());
            }
        }
    }
    if !ids.is_empty() || authz.may_create(&addr.parents, addr.kind.name)? {
        return Ok(Visibility::Only(ids));
    }
    Err(authz.deny())
}

/// The matching objects of a list, in the query's order, after the pagination token.
struct Selection {
    objects: Vec<StoredObject>,
    /// More objects match beyond `objects` (a next page exists).
    more: bool,
}

fn effective_limit(state: &AppState, q: &ListQuery) -> usize {
    q.effective_limit(state.settings.paginate_by, state.settings.storage_max_fetch_size) as usize
}

fn is_default_order(q: &ListQuery) -> bool {
    matches!(q.sort.as_slice(), [key] if key.field == "last_modified" && key.descending)
}

/// Narrows the walk of the changes index with the `last_modified` bounds the filters imply.
fn range_of(q: &ListQuery) -> ListRange {
    let mut range = ListRange::default();
    for f in q.filters.iter().filter(|f| f.field == "last_modified") {
        let Some(v) = f.value.as_u64() else { continue };
        match f.op {
            FilterOp::Gt => range.since = Some(range.since.map_or(v, |s| s.max(v))),
            FilterOp::Min => {
                range.since = Some(range.since.map_or(v.saturating_sub(1), |s| s.max(v.saturating_sub(1))))
            }
            FilterOp::Lt => range.before = Some(range.before.map_or(v, |b| b.min(v))),
            FilterOp::Max => range.before = Some(range.before.map_or(v + 1, |b| b.min(v + 1))),
            _ => {}
        }
    }
    range
}

fn select(
    state: &AppState,
    addr: &Address,
    q: &ListQuery,
    visible: &Visibility,
    limit: Option<usize>,
) -> Result<Selection, ApiError> {
    let mut range = range_of(q);
    let default_order = is_default_order(q);
    let token = q.token.as_ref();
    if let (true, Some(lm)) =
        (default_order, token.and_then(|t| t.last_object.get("last_modified")).and_then(Value::as_u64))
    {
        range.before = Some(range.before.map_or(lm, |b| b.min(lm)));
    }
    let mut objects = Vec::new();
    // In the default order the walk is already sorted: stop as soon as one extra object proves
    // there is a next page.
    let stop_at = if default_order { limit.map(|l| l + 1) } else { None };
    state
        .engine
        .walk_list(addr.parent_uri(), addr.kind.name, range, ListOrder::Newest, |object| {
            if (object.deleted && !q.with_tombstones) || !visible.admits(&object) {
                return Ok(true);
            }
            let doc = Value::Object(object.data.clone());
            if !q.filters.iter().all(|f| f.matches(&doc)) {
                return Ok(true);
            }
            if let Some(token) = token {
                if !default_order && !filter::is_after_token(&doc, &token.last_object, &q.sort) {
                    return Ok(true);
                }
            }
            objects.push(object);
            Ok(stop_at.is_none_or(|stop| objects.len() < stop))
        })
        .map_err(from_engine)?;
    if !default_order {
        objects.sort_by(|a, b| {
            filter::compare_objects(&Value::Object(a.data.clone()), &Value::Object(b.data.clone()), &q.sort)
        });
    }
    let more = limit.is_some_and(|l| objects.len() > l);
    if let Some(l) = limit {
        objects.truncate(l);
    }
    Ok(Selection { objects, more })
}

fn parse_query(req: &ApiRequest) -> Result<(Vec<(String, String)>, ListQuery), ApiError> {
    let pairs = query::parse_pairs(&req.query)?;
    let q = query::parse_list_query(&pairs, now_ms(), None)?;
    Ok((pairs, q))
}

fn next_page(
    req: &ApiRequest,
    pairs: &[(String, String)],
    q: &ListQuery,
    selection: &Selection,
    limit: usize,
    offset: u64,
) -> Option<String> {
    if !selection.more {
        return None;
    }
    let last = selection.objects.last()?;
    let nonce = format!("pagination-token-{}", tidemark_protocol::ids::uuid4(rand::random()));
    let token = Token::for_last(&Value::Object(last.data.clone()), &q.sort, offset, nonce);
    let base = format!("{}{}", req.base_url, req.path);
    Some(query::next_page_url(&base, pairs, limit as u64, &token.encode()))
}

fn read(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    common::check_accept(req)?;
    let (pairs, q) = parse_query(req)?;
    let conditions = Preconditions::parse(req.header("if-match"), req.header("if-none-match"))?;
    let authz = state.authz(&req.identity);
    let visible = visibility(state, &authz, addr, "read")?;
    require_parents(&state.engine, &addr.parents)?;
    let list_ts = state.engine.list_timestamp(addr.parent_uri(), addr.kind.name).map_err(from_engine)?;
    match conditions.evaluate(Some(list_ts), true) {
        Verdict::NotModified => {
            return Ok(common::cache_headers(ApiResponse::empty(StatusCode::NOT_MODIFIED).timestamp_headers(list_ts)))
        }
        Verdict::Failed => return Err(precondition_failed(None, Some(list_ts))),
        Verdict::Proceed => {}
    }
    let mut response = if req.method == Method::HEAD {
        let total = if q.filters.is_empty() && matches!(visible, Visibility::All) {
            state.engine.count(addr.parent_uri(), addr.kind.name).map_err(from_engine)?
        } else {
            let all = select(state, addr, &ListQuery { token: None, ..q.clone() }, &visible, None)?;
            all.objects.iter().filter(|o| !o.deleted).count() as u64
        };
        ApiResponse::empty(StatusCode::OK)
            .header("Total-Objects", total.to_string())
            .header("Total-Records", total.to_string())
    } else {
        let limit = effective_limit(state, &q);
        let selection = select(state, addr, &q, &visible, Some(limit))?;
        let offset = q.token.as_ref().map_or(0, |t| t.offset) + selection.objects.len() as u64 + 1;
        let next = next_page(req, &pairs, &q, &selection, limit, offset);
        let data: Vec<Value> = selection
            .objects
            .iter()
            .map(|o| match &q.fields {
                Some(fields) => filter::project(&Value::Object(o.data.clone()), fields),
                None => Value::Object(o.data.clone()),
            })
            .collect();
        let mut response = ApiResponse::json(StatusCode::OK, json!({ "data": data }));
        if let Some(next) = next {
            response.set_header("Next-Page", next);
        }
        response
    };
    if q.deprecated_to {
        response.set_header(
            "Alert",
            json!({"code": "soft-eol", "message": query::TO_DEPRECATION_MESSAGE, "url": query::TO_DEPRECATION_URL})
                .to_string(),
        );
    }
    Ok(common::cache_headers(response.timestamp_headers(list_ts)))
}

async fn create(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    check_content_type(req, &["application/json"])?;
    common::check_accept(req)?;
    let conditions = Preconditions::parse(req.header("if-match"), req.header("if-none-match"))?;
    let envelope = body::parse_envelope(common::json_body(req)?, addr.kind.permissions)?;
    let mut data = envelope.data.clone().unwrap_or_default();
    let given_id = match data.get("id") {
        None => None,
        Some(Value::String(id)) if addr.kind.is_valid_id(id) => Some(id.clone()),
        Some(_) => return Err(ApiError::invalid_one(Location::Path, None, "Invalid object id")),
    };
    let authz = state.authz(&req.identity);
    let id = given_id.clone().unwrap_or_else(|| addr.kind.generate_id());
    for _ in 0..MAX_ATTEMPTS {
        let existing =
            state.engine.get(addr.parent_uri(), addr.kind.name, &id).map_err(from_engine)?.filter(|o| !o.deleted);
        if let Some(existing) = existing {
            // POST of an existing id returns it untouched, to readers only.
            if !authz.allowed(&addr.chain_with(&id), "read")? {
                return Err(authz.deny());
            }
            if conditions.evaluate(Some(existing.last_modified), false) == Verdict::Failed {
                return Err(precondition_failed(Some(&existing), None));
            }
            let acl = state.engine.acl(&addr.object_uri(&id)).map_err(from_engine)?;
            return Ok(common::object_response(StatusCode::OK, &existing, &acl, &req.identity));
        }
        if !authz.may_create(&addr.parents, addr.kind.name)? {
            return Err(authz.deny());
        }
        if conditions.evaluate(None, false) == Verdict::Failed {
            return Err(precondition_failed(None, None));
        }
        require_parents(&state.engine, &addr.parents)?;
        common::validate_data(addr.kind.name, &mut data)?;
        let explicit = common::explicit_timestamp(&data);
        let mut acl = body::replace_permissions(&Acl::new(), envelope.permissions.as_ref());
        if state.explicit_permissions {
            acl.entry("write".into()).or_default().push(req.identity.writer_principal().to_owned());
        }
        let cmd = Command {
            resource: addr.kind.name.to_owned(),
            parent: addr.parent_uri().to_owned(),
            id: id.clone(),
            op: Op::Put { data: common::strip_managed(data.clone()), permissions: acl },
            expect: Expect::Absent,
            last_modified: explicit,
            context: crate::state::context(req),
        };
        match state.submit(cmd).await {
            Ok(event) => {
                let body = json!({"data": event.data, "permissions": common::visible_permissions(&event.permissions, &req.identity)});
                return Ok(ApiResponse::json(StatusCode::CREATED, body).timestamp_headers(event.timestamp));
            }
            Err(EngineError::PreconditionFailed { .. }) => continue,
            Err(err) => return Err(from_engine(err)),
        }
    }
    Err(ApiError::conflict(RETRY_AFTER_SECONDS))
}

async fn delete(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    common::check_accept(req)?;
    let (pairs, q) = parse_query(req)?;
    let conditions = Preconditions::parse(req.header("if-match"), req.header("if-none-match"))?;
    let authz = state.authz(&req.identity);
    let visible = match visibility(state, &authz, addr, "write")? {
        Visibility::Only(ids) if ids.is_empty() => return Err(authz.deny()),
        other => other,
    };
    require_parents(&state.engine, &addr.parents)?;
    let live_only = ListQuery { with_tombstones: false, ..q.clone() };
    for _ in 0..MAX_ATTEMPTS {
        let list_ts = state.engine.list_timestamp(addr.parent_uri(), addr.kind.name).map_err(from_engine)?;
        if conditions.evaluate(Some(list_ts), false) == Verdict::Failed {
            return Err(precondition_failed(None, Some(list_ts)));
        }
        let limit = effective_limit(state, &q);
        let selection = select(state, addr, &live_only, &visible, Some(limit))?;
        if selection.objects.is_empty() {
            return Ok(ApiResponse::json(StatusCode::OK, json!({"data": []})).timestamp_headers(list_ts));
        }
        let commands = selection
            .objects
            .iter()
            .map(|o| Command {
                resource: addr.kind.name.to_owned(),
                parent: addr.parent_uri().to_owned(),
                id: o.id().to_owned(),
                op: Op::Delete,
                expect: Expect::Version(o.last_modified),
                last_modified: None,
                context: crate::state::context(req),
            })
            .collect();
        let events = match state.engine.submit(commands).await {
            Ok(events) => events,
            Err(EngineError::PreconditionFailed { .. }) => continue,
            Err(err) => return Err(from_engine(err)),
        };
        let newest = events.iter().map(|e| e.timestamp).max().unwrap_or(list_ts);
        let tombstones: Vec<Value> = events.iter().map(|e| e.data.clone()).collect();
        let mut response = ApiResponse::json(StatusCode::OK, json!({ "data": tombstones })).timestamp_headers(newest);
        // The next page is built from the deleted objects' old values, so it also works with
        // ascending sorts (Kinto builds it from the tombstone: §4.10 QUIRK).
        let offset = selection.objects.len() as u64 + 1;
        if let Some(next) = next_page(req, &pairs, &q, &selection, limit, offset) {
            response.set_header("Next-Page", next);
        }
        return Ok(response);
    }
    Err(ApiError::conflict(RETRY_AFTER_SECONDS))
}
