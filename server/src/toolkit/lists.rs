//! Plural endpoints (`/buckets`, `…/records`): GET, HEAD, POST, DELETE, served from the
//! engine's views — the changes index gives `_since`/`_before` and the default newest-first
//! order without scanning every object, and counts are maintained, not computed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tidemark_engine::{Acl, AsOf, EngineError, Expect, ListOrder, ListRange, Op, StoredObject};
use tidemark_protocol::body::{self, Envelope};
use tidemark_protocol::filter::{self, Op as FilterOp};
use tidemark_protocol::headers::{Preconditions, Verdict};
use tidemark_protocol::query::{self, ListQuery, Pin, Token};
use tidemark_protocol::ApiError;

use crate::authz::Authz;
use crate::cache::{cache_error, Cache};
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::{ApiResponse, Body};
use crate::state::AppState;
use crate::toolkit::common::{self, require_parents};
use crate::toolkit::extract::ListCall;
use crate::toolkit::objects::{precondition_failed, prepare_write, written};
use crate::toolkit::write::{command, retrying, submit, submit_generated, submit_one, Attempt};
use crate::toolkit::Address;

/// The nonces of the `Next-Page` tokens plural DELETEs handed out: each may be used once, within
/// `pagination_token_validity_seconds` (§4.7), kept in the cache backend as Kinto keeps them (so
/// one server's token works on another when they share Redis).
pub struct DeleteTokens {
    validity: Duration,
    cache: Arc<dyn Cache>,
}

impl DeleteTokens {
    pub fn new(validity: Duration, cache: Arc<dyn Cache>) -> DeleteTokens {
        DeleteTokens { validity, cache }
    }

    /// `pagination_token_validity_seconds` from the settings (Kinto's 600 s by default).
    pub fn from_settings(settings: &crate::settings::Settings, cache: Arc<dyn Cache>) -> DeleteTokens {
        DeleteTokens::new(Duration::from_secs(settings.pagination_token_validity_seconds), cache)
    }

    fn key(nonce: &str) -> String {
        format!("delete-token:{nonce}")
    }

    fn issue(&self, nonce: &str) -> Result<(), ApiError> {
        self.cache.set(&DeleteTokens::key(nonce), b"1", self.validity).map_err(cache_error)
    }

    /// Uses up a nonce: true if it was issued, unused and unexpired.
    fn consume(&self, nonce: &str) -> Result<bool, ApiError> {
        Ok(self.cache.take(&DeleteTokens::key(nonce)).map_err(cache_error)?.is_some())
    }
}

pub async fn handle(state: &AppState, req: &ApiRequest, addr: &Address) -> Result<ApiResponse, ApiError> {
    // A resource's own POST, and its refusal to be read, come before anything else.
    if let (&Method::POST, Some(on_post)) = (&req.method, addr.kind.on_post) {
        return on_post(state, req, addr).await;
    }
    if req.is_read() {
        addr.kind.hooks.check_list_read(req)?;
    }
    match ListCall::extract(req, addr)? {
        ListCall::Read { conditions, pairs, query, at } => read(state, req, addr, &conditions, &pairs, &query, at),
        ListCall::Create { conditions, envelope, given_id } => {
            create(state, req, addr, &conditions, &envelope, given_id).await
        }
        ListCall::Delete { conditions, pairs, query } => delete(state, req, addr, &conditions, &pairs, &query).await,
    }
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
    if authz.allowed_on_list(&addr.parents, &addr.kind, perm)? {
        return Ok(Visibility::All);
    }
    let prefix = format!("{}/", addr.list_path());
    let mut ids = HashSet::new();
    for principal in &authz.identity.principals {
        for (granted, uri) in state.engine.objects_of_principal(principal).map_err(from_engine)? {
            // Kinto lists an object to whoever holds any permission on it (`record:create` on a
            // collection included); deleting needs `write`.
            let grants = granted == "write" || perm == "read";
            if let Some(id) = uri.strip_prefix(&prefix).filter(|id| grants && !id.contains('/')) {
                ids.insert(id.to_owned());
            }
        }
    }
    if !ids.is_empty() || authz.may_create(&addr.parents, &addr.kind)? {
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

/// Newest first by `last_modified` only (`_sort=-last_modified` arrives with the implicit
/// tie-breaker repeated): the changes index already walks in that order.
fn is_default_order(q: &ListQuery) -> bool {
    !q.sort.is_empty() && q.sort.iter().all(|key| key.field == "last_modified" && key.descending)
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

/// Reads a list as it stood at a pin (§4.7 pagination, pinned: see README "Pagination while the
/// collection changes"): every page of one pagination shows the same snapshot, so objects
/// changed meanwhile are neither skipped nor repeated.
///
/// The changes index is split at `pin.list_ts`. At or below it, objects not changed since the
/// pin (`seq <= pin.seq`) are walked in order as usual; an object changed since is replaced by
/// its state as of the pin (walked back through the log: its old values at its old place, a
/// tombstone if it was deleted then, nothing if it did not exist yet) and sorted in. Above it
/// lies every object written since `pin.list_ts` was read — most of them after the pin — each
/// shown as of the pin the same way. When nothing changed, the walk above is an empty range
/// scan and no object needs a lookup: a pinned page costs what an unpinned one does.
///
/// Not covered: writes carrying an explicit `last_modified` older than the list timestamp
/// (Kinto honours them; normal clients do not send them) made after the pin can leave an
/// object's current entry where no page looks for it, and that object may then be skipped.
fn select(
    state: &AppState,
    addr: &Address,
    q: &ListQuery,
    visible: &Visibility,
    limit: Option<usize>,
    pin: Option<Pin>,
) -> Result<Selection, ApiError> {
    let (parent, resource) = (addr.parent_uri(), addr.kind.plural.as_str());
    let range = range_of(q);
    let default_order = is_default_order(q);
    let token = q.token.as_ref();
    let shown = |object: &StoredObject| shown(object, q, visible);
    let as_of = |object: StoredObject, pin: Pin| -> Result<Option<StoredObject>, EngineError> {
        if object.seq <= pin.seq {
            return Ok(Some(object));
        }
        state.engine.object_as_of(parent, resource, object.id(), pin.seq)
    };

    // In the default order the walk is already sorted: the token becomes a bound and the walk
    // stops as soon as one extra object proves there is a next page.
    let mut lower = range;
    let mut bound = |b: u64| lower.before = Some(lower.before.map_or(b, |before| before.min(b)));
    if let (true, Some(lm)) =
        (default_order, token.and_then(|t| t.last_object.get("last_modified")).and_then(Value::as_u64))
    {
        bound(lm);
    }
    if let Some(pin) = pin {
        bound(pin.list_ts.saturating_add(1));
    }
    let stop_at = if default_order { limit.map(|l| l + 1) } else { None };
    let mut in_order = Vec::new();
    // Objects at their pinned place rather than their current one; sorted in at the end.
    let mut moved = Vec::new();
    state
        .engine
        .walk_list(parent, resource, lower, ListOrder::Newest, |object| {
            if let Some(pin) = pin.filter(|p| object.seq > p.seq) {
                if let Some(old) = as_of(object, pin)?.filter(|o| shown(o)) {
                    moved.push(old);
                }
                return Ok(true);
            }
            if shown(&object) {
                in_order.push(object);
            }
            Ok(stop_at.is_none_or(|stop| in_order.len() < stop))
        })
        .map_err(from_engine)?;
    if let Some(pin) = pin {
        // Written after the pinned list timestamp: shown as of the pin wherever that falls, so
        // `before` (a bound on current timestamps) does not apply; `since` does, since an old
        // state is older than the current one.
        let since = range.since.map_or(pin.list_ts, |s| s.max(pin.list_ts));
        let upper = ListRange { since: Some(since), before: None };
        state
            .engine
            .walk_list(parent, resource, upper, ListOrder::Newest, |object| {
                if let Some(old) = as_of(object, pin)?.filter(|o| shown(o)) {
                    moved.push(old);
                }
                Ok(true)
            })
            .map_err(from_engine)?;
    }
    let mut objects = in_order;
    if !default_order || !moved.is_empty() {
        objects.extend(moved);
        objects = sorted(objects, &q.sort);
    }
    let more = limit.is_some_and(|l| objects.len() > l);
    if let Some(l) = limit {
        objects.truncate(l);
    }
    Ok(Selection { objects, more })
}

/// Does the object belong in the answer: visible, matching the filters, after the token?
fn shown(object: &StoredObject, q: &ListQuery, visible: &Visibility) -> bool {
    if (object.deleted && !q.with_tombstones) || !visible.admits(object) {
        return false;
    }
    let token = q.token.as_ref();
    if q.filters.is_empty() && token.is_none() {
        return true;
    }
    let doc = Value::Object(object.data.clone());
    q.filters.iter().all(|f| f.matches(&doc))
        && token.is_none_or(|t| filter::is_after_token(&doc, &t.last_object, &q.sort))
}

/// The list as it was at a point in the past (`_at`, Kinto's snapshots): each object's version
/// then, found by walking its event chain back from today's; objects created since are left
/// out. Costs a walk of the whole list plus one log read per version replaced.
fn select_at(
    state: &AppState,
    addr: &Address,
    q: &ListQuery,
    visible: &Visibility,
    limit: Option<usize>,
    at: AsOf,
) -> Result<Selection, ApiError> {
    let (parent, plural) = (addr.parent_uri(), addr.kind.plural.as_str());
    let engine = &state.engine;
    let mut objects = Vec::new();
    engine
        .walk_list(parent, plural, ListRange::default(), ListOrder::Newest, |object| {
            let version = if at.covers(object.seq, object.last_modified) {
                Some(object)
            } else {
                engine.object_at(parent, plural, object.id(), at)?
            };
            if let Some(version) = version.filter(|v| shown(v, q, visible)) {
                objects.push(version);
            }
            Ok(true)
        })
        .map_err(from_engine)?;
    let mut objects = sorted(objects, &q.sort);
    let more = limit.is_some_and(|l| objects.len() > l);
    if let Some(l) = limit {
        objects.truncate(l);
    }
    Ok(Selection { objects, more })
}

/// Every live object of the list as it was at `at`, newest first, unpaginated (Kinto's history
/// snapshots). The caller has authorized reading the whole list.
pub(crate) fn snapshot(state: &AppState, addr: &Address, at: AsOf) -> Result<Vec<Value>, ApiError> {
    let q = query::parse_list_query(&[], crate::state::now_ms(), None)?;
    let selection = select_at(state, addr, &q, &Visibility::All, None, at)?;
    Ok(selection.objects.into_iter().map(|o| Value::Object(o.data)).collect())
}

/// Sorts objects by `_sort` (the comparator reads JSON documents: each is built once).
fn sorted(objects: Vec<StoredObject>, sort: &[query::SortKey]) -> Vec<StoredObject> {
    let mut rows: Vec<(Value, StoredObject)> =
        objects.into_iter().map(|mut o| (Value::Object(std::mem::take(&mut o.data)), o)).collect();
    rows.sort_by(|(a, _), (b, _)| filter::compare_objects(a, b, sort));
    rows.into_iter()
        .map(|(doc, mut object)| {
            if let Value::Object(data) = doc {
                object.data = data;
            }
            object
        })
        .collect()
}

/// The `Next-Page` URL and its token's nonce, when more objects follow the selection.
fn next_page(
    req: &ApiRequest,
    pairs: &[(String, String)],
    q: &ListQuery,
    selection: &Selection,
    limit: usize,
    offset: u64,
    pin: Option<Pin>,
) -> Option<(String, String)> {
    if !selection.more {
        return None;
    }
    let last = selection.objects.last()?;
    let nonce = format!("pagination-token-{}", tidemark_protocol::ids::uuid4(rand::random()));
    let mut token = Token::for_last(&Value::Object(last.data.clone()), &q.sort, offset, nonce.clone());
    token.pin = pin;
    let base = format!("{}{}", req.base_url, req.path);
    Some((query::next_page_url(&base, pairs, limit as u64, &token.encode()), nonce))
}

/// The common first page — newest first, no filter, no projection, everything visible —
/// copied out of storage without decoding and re-encoding each object. `None` when the request
/// needs the general path (or something changed since the pin).
#[allow(clippy::too_many_arguments)]
fn plain_page(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    pairs: &[(String, String)],
    q: &ListQuery,
    visible: &Visibility,
    limit: usize,
    pin: Option<Pin>,
) -> Result<Option<ApiResponse>, ApiError> {
    let plain = q.filters.is_empty()
        && q.token.is_none()
        && q.fields.is_none()
        && !q.with_tombstones
        && !q.deprecated_to
        && is_default_order(q)
        && matches!(visible, Visibility::All);
    let Some(pin) = pin.filter(|_| plain) else { return Ok(None) };
    let (parent, resource) = (addr.parent_uri(), addr.kind.plural.as_str());
    let mut body = Vec::with_capacity(64 + limit * 256);
    body.extend_from_slice(b"{\"data\":[");
    let (mut count, mut more, mut changed) = (0usize, false, false);
    let mut last: Option<(String, u64)> = None;
    state
        .engine
        .walk_list_raw(parent, resource, ListRange::default(), ListOrder::Newest, |object| {
            if object.seq > pin.seq {
                changed = true;
                return Ok(false);
            }
            if object.deleted {
                return Ok(true);
            }
            if count == limit {
                more = true;
                return Ok(false);
            }
            if count > 0 {
                body.push(b',');
            }
            if object.json.is_ascii() {
                body.extend_from_slice(&object.json);
            } else {
                // Kinto escapes non-ASCII: re-render this one.
                let value: Value = serde_json::from_slice(&object.json)
                    .map_err(|e| EngineError::Corrupt(format!("stored object: {e}")))?;
                body.extend_from_slice(&tidemark_protocol::json::to_vec(&value));
            }
            count += 1;
            last = Some((object.id, object.last_modified));
            Ok(true)
        })
        .map_err(from_engine)?;
    if changed {
        return Ok(None);
    }
    body.extend_from_slice(b"]}");
    let mut response = ApiResponse { status: StatusCode::OK, headers: Default::default(), body: Body::RawJson(body) };
    if let (true, Some((id, last_modified))) = (more, last) {
        let mut data = serde_json::Map::new();
        data.insert("id".into(), json!(id));
        data.insert("last_modified".into(), json!(last_modified));
        let last = StoredObject { data, last_modified, deleted: false, seq: 0 };
        let selection = Selection { objects: vec![last], more: true };
        if let Some((url, _)) = next_page(req, pairs, q, &selection, limit, count as u64 + 1, Some(pin)) {
            response.set_header("Next-Page", url);
        }
    }
    Ok(Some(response))
}

fn read(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    conditions: &Preconditions,
    pairs: &[(String, String)],
    q: &ListQuery,
    at: Option<AsOf>,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    let visible = visibility(state, &authz, addr, "read")?;
    require_parents(&state.engine, &addr.parents)?;
    let list_ts = state.engine.list_timestamp(addr.parent_uri(), &addr.kind.plural).map_err(from_engine)?;
    match conditions.evaluate(Some(list_ts), true) {
        Verdict::NotModified => {
            return common::cache_headers(
                state,
                req,
                addr,
                ApiResponse::empty(StatusCode::NOT_MODIFIED).timestamp_headers(list_ts),
            )
        }
        Verdict::Failed => return Err(precondition_failed(state, addr, None)),
        Verdict::Proceed => {}
    }
    let mut response = if req.method == Method::HEAD {
        let total = if let Some(at) = at {
            let all = select_at(state, addr, &ListQuery { token: None, ..q.clone() }, &visible, None, at)?;
            all.objects.iter().filter(|o| !o.deleted).count() as u64
        } else if q.filters.is_empty() && matches!(visible, Visibility::All) {
            state.engine.count(addr.parent_uri(), &addr.kind.plural).map_err(from_engine)?
        } else {
            let all = select(state, addr, &ListQuery { token: None, ..q.clone() }, &visible, None, None)?;
            all.objects.iter().filter(|o| !o.deleted).count() as u64
        };
        // Kinto's HEAD renders an empty page, whose length it announces.
        ApiResponse::json(StatusCode::OK, json!({"data": []}))
            .header("Total-Objects", total.to_string())
            .header("Total-Records", total.to_string())
    } else {
        // Pages after the first read the list as the first one did (a Kinto token has no pin
        // and stays unpinned). The log position is read after `list_ts`, so the ETag never
        // covers a write the pages leave out: `_since=<ETag>` polling misses nothing.
        let pin = match &q.token {
            Some(token) => token.pin,
            None => Some(Pin { seq: state.engine.last_seq().map_err(from_engine)?, list_ts }),
        };
        let limit = effective_limit(state, q);
        if at.is_none() {
            if let Some(page) = plain_page(state, req, addr, pairs, q, &visible, limit, pin)? {
                return common::cache_headers(state, req, addr, page.timestamp_headers(list_ts));
            }
        }
        let selection = match at {
            // The past does not change: no pin needed.
            Some(at) => select_at(state, addr, q, &visible, Some(limit), at)?,
            None => select(state, addr, q, &visible, Some(limit), pin)?,
        };
        let pin = pin.filter(|_| at.is_none());
        let offset = q.token.as_ref().map_or(0, |t| t.offset) + selection.objects.len() as u64 + 1;
        let next = next_page(req, pairs, q, &selection, limit, offset, pin).map(|(url, _)| url);
        let data: Vec<Value> = selection
            .objects
            .into_iter()
            .map(|o| match &q.fields {
                Some(fields) => filter::project(&Value::Object(o.data), fields),
                None => Value::Object(o.data),
            })
            .collect();
        // Built by hand: `json!` would serialise every object into a copy.
        let mut body = serde_json::Map::new();
        body.insert("data".into(), Value::Array(data));
        let mut response = ApiResponse::json(StatusCode::OK, Value::Object(body));
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
    // A changeset (`_until` in the past) never changes: cacheable for good.
    let changeset = pairs.iter().any(|(k, _)| k == "_until");
    let until = match at {
        Some(AsOf::Timestamp(ts)) if changeset && ts <= list_ts => Some(ts),
        _ => None,
    };
    if let Some(until) = until {
        let scope = if req.identity.is_authenticated() { "private" } else { "public" };
        return Ok(response
            .timestamp_headers(until)
            .header("Cache-Control", format!("{scope}, max-age=31536000, immutable")));
    }
    common::cache_headers(state, req, addr, response.timestamp_headers(list_ts))
}

async fn create(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    conditions: &Preconditions,
    envelope: &Envelope,
    given_id: Option<String>,
) -> Result<ApiResponse, ApiError> {
    let sent = envelope.data.clone().unwrap_or_default();
    // Kinto looks a record's collection up before any permission check: 404 for anyone.
    if addr.kind.parents_checked_first {
        require_parents(&state.engine, &addr.parents)?;
    }
    let authz = state.authz(&req.identity);
    let id = given_id.clone().unwrap_or_else(|| addr.kind.generate_id());
    retrying!(
        async {
            // A freshly generated id exists nowhere: skip the lookup (the command expects absence).
            let existing = match given_id {
                Some(_) => state
                    .engine
                    .get(addr.parent_uri(), &addr.kind.plural, &id)
                    .map_err(from_engine)?
                    .filter(|o| !o.deleted),
                None => None,
            };
            if let Some(existing) = existing {
                // POST of an existing id returns it untouched, to readers only.
                if !authz.allowed(&addr.chain_with(&id), "read")? {
                    return Err(authz.deny());
                }
                if conditions.evaluate(Some(existing.last_modified), false) == Verdict::Failed {
                    return Err(precondition_failed(state, addr, Some(&existing)));
                }
                if addr.kind.is_per_user() {
                    let body = json!({"data": Value::Object(existing.data)});
                    return Ok(Attempt::Done(
                        ApiResponse::json(StatusCode::OK, body).timestamp_headers(existing.last_modified),
                    ));
                }
                let acl = state.engine.acl(&addr.object_uri(&id)).map_err(from_engine)?;
                return Ok(Attempt::Done(common::object_response(StatusCode::OK, &existing, &acl, &req.identity)));
            }
            if !authz.may_create(&addr.parents, &addr.kind)? {
                return Err(authz.deny());
            }
            if conditions.evaluate(None, false) == Verdict::Failed {
                return Err(precondition_failed(state, addr, None));
            }
            require_parents(&state.engine, &addr.parents)?;
            let mut data = sent.clone();
            let acl = body::replace_permissions(&Acl::new(), envelope.permissions.as_ref());
            let data_sent = envelope.data.is_some();
            let acl = prepare_write(state, req, addr, &id, &mut data, data_sent, None, true, acl).await?;
            let explicit = common::explicit_timestamp(&data);
            let op = Op::Put { data: common::strip_managed(data), permissions: acl };
            let command = command(req, addr, &id, op, Expect::Absent, explicit);
            let attempt = match given_id {
                Some(_) => submit_one(state, command).await?,
                None => submit_generated(state, command).await?,
            };
            Ok(match attempt {
                Attempt::Done(event) => Attempt::Done(written(req, addr, &event, StatusCode::CREATED)),
                Attempt::Lost => Attempt::Lost,
            })
        }
        .await
    )
}

async fn delete(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    conditions: &Preconditions,
    pairs: &[(String, String)],
    q: &ListQuery,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    // Nothing deletable but the create right: an empty result, as Kinto answers.
    let visible = visibility(state, &authz, addr, "write")?;
    require_parents(&state.engine, &addr.parents)?;
    let live_only = ListQuery { with_tombstones: false, ..q.clone() };
    let mut token_checked = false;
    retrying!(
        async {
            let list_ts = state.engine.list_timestamp(addr.parent_uri(), &addr.kind.plural).map_err(from_engine)?;
            if conditions.evaluate(Some(list_ts), false) == Verdict::Failed {
                return Err(precondition_failed(state, addr, None));
            }
            // After the precondition, as in Kinto; once, whatever retries follow.
            if let Some(token) = q.token.as_ref().filter(|_| !token_checked) {
                if !state.delete_tokens.consume(&token.nonce)? {
                    return Err(query::token_already_used());
                }
                token_checked = true;
            }
            let limit = effective_limit(state, q);
            // Deletions act on the current list: never pinned.
            let selection = select(state, addr, &live_only, &visible, Some(limit), None)?;
            if selection.objects.is_empty() {
                return Ok(Attempt::Done(
                    ApiResponse::json(StatusCode::OK, json!({"data": []})).timestamp_headers(list_ts),
                ));
            }
            let commands = selection
                .objects
                .iter()
                .map(|o| command(req, addr, o.id(), Op::Delete, Expect::Version(o.last_modified), None))
                .collect();
            let events = match submit(state, commands).await? {
                Attempt::Done(events) => events,
                Attempt::Lost => return Ok(Attempt::Lost),
            };
            // The list's own objects: what their deletion cascaded to is not listed (Kinto).
            let own: Vec<_> =
                events.iter().filter(|e| e.parent == addr.parent_uri() && e.plural == addr.kind.plural).collect();
            let newest = own.iter().map(|e| e.timestamp).max().unwrap_or(list_ts);
            let tombstones: Vec<Value> = own.iter().map(|e| e.data.clone()).collect();
            let mut response =
                ApiResponse::json(StatusCode::OK, json!({ "data": tombstones })).timestamp_headers(newest);
            // The next page is built from the deleted objects' old values, so it also works with
            // ascending sorts (Kinto builds it from the tombstone: §4.10 QUIRK).
            let offset = selection.objects.len() as u64 + 1;
            if let Some((next, nonce)) = next_page(req, pairs, q, &selection, limit, offset, None) {
                state.delete_tokens.issue(&nonce)?;
                response.set_header("Next-Page", next);
            }
            Ok(Attempt::Done(response))
        }
        .await
    )
}
