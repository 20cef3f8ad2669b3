//! Object endpoints (`/buckets/b`, `…/records/r`): GET, HEAD, PUT, PATCH, DELETE.
//!
//! Writes are optimistic: read the current object, decide (preconditions, permissions, the new
//! state), then submit a command that expects exactly that current version. If another writer
//! got there first the engine refuses it and the handler decides again on the new state.

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tidemark_engine::{Acl, AsOf, Expect, Op, StoredObject};
use tidemark_protocol::body::{self, Envelope};
use tidemark_protocol::headers::{Preconditions, ResponseBehavior, Verdict};
use tidemark_protocol::{ApiError, Location};

use crate::authz::Authz;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::state::AppState;
use crate::toolkit::common::{self, require_parents};
use crate::toolkit::extract::{ObjectCall, PatchBody};
use crate::toolkit::write::{command, retrying, submit_one, Attempt};
use crate::toolkit::{Address, Write};

pub async fn handle(state: &AppState, req: &ApiRequest, addr: &Address, id: &str) -> Result<ApiResponse, ApiError> {
    // Kinto builds a record's resource, which looks its collection up, to find the target of a
    // write before authorizing it: under a missing parent that is a 404 for anyone (a GET is
    // authorized first).
    if addr.kind.parents_checked_first && matches!(req.method, Method::PUT | Method::PATCH | Method::DELETE) {
        require_parents(&state.engine, &addr.parents)?;
    }
    match ObjectCall::extract(req, addr, id)? {
        ObjectCall::Read { conditions, fields, at } => get(state, req, addr, id, &conditions, fields, at),
        ObjectCall::Replace { conditions, envelope } => put(state, req, addr, id, &conditions, &envelope).await,
        ObjectCall::Patch { conditions, patch: body, behavior } => {
            patch(state, req, addr, id, &conditions, &body, behavior).await
        }
        ObjectCall::Delete { conditions, last_modified } => {
            delete(state, req, addr, id, &conditions, last_modified).await
        }
    }
}

fn invalid_id() -> ApiError {
    ApiError::invalid_one(Location::Path, None, "Invalid object id")
}

/// The live object at the address, if any.
fn current(state: &AppState, addr: &Address, id: &str) -> Result<Option<StoredObject>, ApiError> {
    let object = state.engine.get(addr.parent_uri(), &addr.kind.plural, id).map_err(from_engine)?;
    Ok(object.filter(|o| !o.deleted))
}

/// 412 carrying the current timestamp of the object, or of its list when there is no object
/// (Kinto sends it on every 412; kinto.js resolves conflicts with it).
pub(crate) fn precondition_failed(state: &AppState, addr: &Address, live: Option<&StoredObject>) -> ApiError {
    let err = ApiError::modified_meanwhile(live.map(|o| Value::Object(o.data.clone())));
    let ts = match live {
        Some(object) => Ok(object.last_modified),
        None => state.engine.list_timestamp(addr.parent_uri(), &addr.kind.plural),
    };
    match ts {
        Ok(ts) => {
            err.with_header("ETag", format!("\"{ts}\"")).with_header("Last-Modified", crate::response::http_date(ts))
        }
        Err(storage) => from_engine(storage),
    }
}

/// A missing object: 404 if the caller may read the parent (so it may know), else a denial.
/// A missing root object is always a denial (Kinto never confirms bucket ids to outsiders),
/// except in the caller's own per-user namespace.
fn missing(state: &AppState, authz: &Authz<'_>, addr: &Address, id: &str) -> Result<ApiError, ApiError> {
    // "Read on the parent" here is the right to list its children: create rights do not count.
    let may_know = (addr.kind.is_per_user() || !addr.parents.is_empty())
        && authz.allowed_on_list(&addr.parents, &addr.kind, "read")?;
    if !may_know {
        return Ok(authz.deny());
    }
    require_parents(&state.engine, &addr.parents)?;
    Ok(ApiError::object_not_found(&addr.kind.name, id))
}

fn get(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    conditions: &Preconditions,
    fields: Option<Vec<String>>,
    at: Option<AsOf>,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    let chain = addr.chain_with(id);
    if !authz.allowed(&chain, "read")? {
        // Without read on the object, one may still learn it is missing if one reads the parent.
        if current(state, addr, id)?.is_none() {
            return Err(missing(state, &authz, addr, id)?);
        }
        return Err(authz.deny());
    }
    if !addr.kind.is_valid_id(id) {
        return Err(invalid_id());
    }
    require_parents(&state.engine, &addr.parents)?;
    // Authorized on today's permissions, read as it was then.
    let version = match at {
        None => current(state, addr, id)?,
        Some(at) => state
            .engine
            .object_at(addr.parent_uri(), &addr.kind.plural, id, at)
            .map_err(from_engine)?
            .filter(|o| !o.deleted),
    };
    let Some(object) = version else {
        return Err(ApiError::object_not_found(&addr.kind.name, id));
    };
    match conditions.evaluate(Some(object.last_modified), true) {
        Verdict::NotModified => {
            return common::cache_headers(
                state,
                req,
                addr,
                ApiResponse::empty(StatusCode::NOT_MODIFIED).timestamp_headers(object.last_modified),
            )
        }
        Verdict::Failed => return Err(precondition_failed(state, addr, Some(&object))),
        Verdict::Proceed => {}
    }
    // With `_fields`, Kinto answers the projected data alone, without permissions.
    let body = match fields {
        Some(fields) => json!({"data": tidemark_protocol::filter::project(&Value::Object(object.data), &fields)}),
        None if addr.kind.is_per_user() => json!({"data": Value::Object(object.data)}),
        None => {
            let acl = state.engine.acl(&addr.object_uri(id)).map_err(from_engine)?;
            common::data_and_permissions(Value::Object(object.data), shown_permissions(addr, &acl, &req.identity))
        }
    };
    common::cache_headers(
        state,
        req,
        addr,
        ApiResponse::json(StatusCode::OK, body).timestamp_headers(object.last_modified),
    )
}

/// The live object a PATCH or DELETE may change: it exists (else 404 or a denial), the caller
/// may write it, its id is valid, and the preconditions hold.
fn writable(
    state: &AppState,
    authz: &Authz<'_>,
    addr: &Address,
    id: &str,
    conditions: &Preconditions,
) -> Result<StoredObject, ApiError> {
    let Some(live) = current(state, addr, id)? else {
        return Err(missing(state, authz, addr, id)?);
    };
    if !authz.allowed(&addr.chain_with(id), "write")? {
        return Err(authz.deny());
    }
    if !addr.kind.is_valid_id(id) {
        return Err(invalid_id());
    }
    if conditions.evaluate(Some(live.last_modified), false) == Verdict::Failed {
        return Err(precondition_failed(state, addr, Some(&live)));
    }
    Ok(live)
}

/// The caller's principal always ends up in `write` (explicit_permissions). Objects of per-user
/// resources carry no ACL: their namespace is their permission.
pub(crate) fn with_writer(mut acl: Acl, state: &AppState, req: &ApiRequest, addr: &Address) -> Acl {
    if addr.kind.is_per_user() {
        return Acl::new();
    }
    if state.explicit_permissions {
        acl.entry("write".into()).or_default().push(req.identity.writer_principal().to_owned());
    }
    acl
}

/// Runs the resource's checks on the object about to be written: its data checks (JSON Schema,
/// serde type), its validation hook, then its last hook, which may replace the ACL.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn prepare_write(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    data: &mut Map<String, Value>,
    data_sent: bool,
    previous: Option<&Map<String, Value>>,
    replaces: bool,
    acl: Acl,
) -> Result<Acl, ApiError> {
    // Principals naming objects (groups) live in the caller's application namespace.
    let acl = crate::namespace::acl_to_storage(&req.identity.namespace, acl);
    addr.kind.check_data(data)?;
    let hooks = std::sync::Arc::clone(&addr.kind.hooks);
    hooks.validate(&mut Write { state, req, addr, id, data: &mut *data, data_sent, previous, replaces })?;
    let replaced =
        hooks.before_write(Write { state, req, addr, id, data: &mut *data, data_sent, previous, replaces }).await?;
    Ok(match replaced {
        Some(acl) => acl,
        None => with_writer(acl, state, req, addr),
    })
}

fn expect_of(live: Option<&StoredObject>) -> Expect {
    live.map_or(Expect::Absent, |o| Expect::Version(o.last_modified))
}

async fn put(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    conditions: &Preconditions,
    envelope: &Envelope,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    retrying!(
        async {
            let live = current(state, addr, id)?;
            let creating = live.is_none() || conditions.if_none_match_any();
            let permitted = if creating {
                authz.may_create(&addr.parents, &addr.kind)?
            } else {
                authz.allowed(&addr.chain_with(id), "write")?
            };
            if !permitted {
                return Err(authz.deny());
            }
            if conditions.evaluate(live.as_ref().map(|o| o.last_modified), false) == Verdict::Failed {
                return Err(precondition_failed(state, addr, live.as_ref()));
            }
            require_parents(&state.engine, &addr.parents)?;
            let mut data = match (&envelope.data, &live) {
                (Some(data), _) => data.clone(),
                (None, Some(live)) => live.data.clone(),
                (None, None) => Map::new(),
            };
            let explicit = envelope.data.as_ref().and_then(common::explicit_timestamp);
            let acl = match &live {
                Some(_) => body::replace_permissions(
                    &state.engine.acl(&addr.object_uri(id)).map_err(from_engine)?,
                    envelope.permissions.as_ref(),
                ),
                None => body::replace_permissions(&Acl::new(), envelope.permissions.as_ref()),
            };
            let previous = live.as_ref().map(|o| &o.data);
            let data_sent = envelope.data.is_some();
            let acl = prepare_write(state, req, addr, id, &mut data, data_sent, previous, true, acl).await?;
            let op = Op::Put { data: common::strip_managed(data), permissions: acl };
            let cmd = command(req, addr, id, op, expect_of(live.as_ref()), explicit);
            Ok(match submit_one(state, cmd).await? {
                Attempt::Done(event) => {
                    let status = if live.is_some() { StatusCode::OK } else { StatusCode::CREATED };
                    Attempt::Done(written(req, addr, &event, status))
                }
                Attempt::Lost => Attempt::Lost,
            })
        }
        .await
    )
}

/// The response of a write: the committed object as the client sees it (per-user objects have
/// no permissions to show).
pub(crate) fn written(
    req: &ApiRequest,
    addr: &Address,
    event: &tidemark_engine::Event,
    status: StatusCode,
) -> ApiResponse {
    let body = if addr.kind.is_per_user() {
        json!({"data": event.data})
    } else {
        common::data_and_permissions(event.data.clone(), shown_permissions(addr, &event.permissions, &req.identity))
    };
    ApiResponse::json(status, body).timestamp_headers(event.timestamp)
}

/// The ACL a response shows: the object's own, to its explicit writers only (§8.8). Kinto acts
/// on an account as that account, for an admin or an anonymous sign-up too: an account's ACL is
/// shown to whoever may reach it.
fn shown_permissions(addr: &Address, acl: &Acl, identity: &crate::auth::Identity) -> Value {
    if addr.kind.acl_shown_to_all {
        json!(crate::namespace::acl_to_wire(&identity.namespace, acl))
    } else {
        common::visible_permissions(acl, identity)
    }
}

async fn patch(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    conditions: &Preconditions,
    patch: &PatchBody,
    behavior: ResponseBehavior,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    let uri = addr.object_uri(id);
    retrying!(
        async {
            let live = writable(state, &authz, addr, id, conditions)?;
            let acl = state.engine.acl(&uri).map_err(from_engine)?;
            let (mut data, acl, sent_keys): (Map<String, Value>, Acl, Vec<String>) = match &patch {
                PatchBody::Kinto { data, permissions } => {
                    let changes = data.clone().unwrap_or_default();
                    let keys = changes.keys().cloned().collect();
                    (
                        body::merge_shallow(&live.data, &changes),
                        body::patch_permissions(&acl, permissions.as_ref()),
                        keys,
                    )
                }
                PatchBody::MergePatch { data, permissions } => {
                    let changes = data.clone().unwrap_or_default();
                    let keys = changes.keys().cloned().collect();
                    (
                        body::merge_patch(&live.data, &changes),
                        body::merge_patch_permissions(&acl, permissions.as_ref()),
                        keys,
                    )
                }
                PatchBody::JsonPatch(ops) => {
                    let (data, acl) = body::apply_json_patch(&live.data, &acl, ops.clone())?;
                    let keys = data.keys().cloned().collect();
                    (data, acl, keys)
                }
            };
            if data.get("id").and_then(Value::as_str) != Some(id) {
                return Err(ApiError::invalid_one(
                    Location::Body,
                    Some("id"),
                    "Object id does not match existing object",
                ));
            }
            let explicit = common::explicit_timestamp(&data);
            let sends = patch.sends_data();
            let acl = prepare_write(state, req, addr, id, &mut data, sends, Some(&live.data), false, acl).await?;
            let op = Op::Put { data: common::strip_managed(data), permissions: acl };
            let cmd = command(req, addr, id, op, Expect::Version(live.last_modified), explicit);
            let event = match submit_one(state, cmd).await? {
                Attempt::Done(event) => event,
                Attempt::Lost => return Ok(Attempt::Lost),
            };
            let response = match behavior {
                ResponseBehavior::Full => written(req, addr, &event, StatusCode::OK),
                ResponseBehavior::Light | ResponseBehavior::Diff => {
                    let new = event.data.as_object().cloned().unwrap_or_default();
                    let sent = match &patch {
                        PatchBody::Kinto { data, .. } | PatchBody::MergePatch { data, .. } => {
                            data.clone().unwrap_or_default()
                        }
                        PatchBody::JsonPatch(_) => new.clone(),
                    };
                    let mut out = Map::new();
                    for key in sent_keys {
                        let (old, now) = (live.data.get(&key), new.get(&key));
                        let changed = old != now;
                        let differs_from_sent = behavior == ResponseBehavior::Light || sent.get(&key) != now;
                        if changed && differs_from_sent {
                            if let Some(value) = now {
                                out.insert(key, value.clone());
                            }
                        }
                    }
                    ApiResponse::json(StatusCode::OK, json!({"data": out})).timestamp_headers(event.timestamp)
                }
            };
            Ok(Attempt::Done(response))
        }
        .await
    )
}

async fn delete(
    state: &AppState,
    req: &ApiRequest,
    addr: &Address,
    id: &str,
    conditions: &Preconditions,
    explicit: Option<u64>,
) -> Result<ApiResponse, ApiError> {
    let authz = state.authz(&req.identity);
    retrying!(
        async {
            let live = writable(state, &authz, addr, id, conditions)?;
            let cmd = command(req, addr, id, Op::Delete, Expect::Version(live.last_modified), explicit);
            Ok(match submit_one(state, cmd).await? {
                Attempt::Done(event) => Attempt::Done(
                    ApiResponse::json(StatusCode::OK, json!({"data": event.data})).timestamp_headers(event.timestamp),
                ),
                Attempt::Lost => Attempt::Lost,
            })
        }
        .await
    )
}
