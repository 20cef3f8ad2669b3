//! The one extraction step: a request to a resource endpoint becomes a typed call, with every
//! header, query and body check done here, in Kinto's order, before any handler reads storage.

use serde_json::{Map, Value};
use tidemark_engine::AsOf;
use tidemark_protocol::body::{self, Envelope, PermissionsInput};
use tidemark_protocol::headers::{parse_response_behavior, Preconditions, ResponseBehavior};
use tidemark_protocol::query::{self, ListQuery};
use tidemark_protocol::{ApiError, Invalid, Location};

use crate::request::ApiRequest;
use crate::state::now_ms;
use crate::toolkit::Address;

/// A call on one object (`/buckets/b`, `…/records/r`).
pub enum ObjectCall {
    /// GET or HEAD; `fields` is `_fields` (then the data alone is answered); `at` is `_at`.
    Read {
        conditions: Preconditions,
        fields: Option<Vec<String>>,
        at: Option<AsOf>,
    },
    Replace {
        conditions: Preconditions,
        envelope: Envelope,
    },
    Patch {
        conditions: Preconditions,
        patch: PatchBody,
        behavior: ResponseBehavior,
    },
    /// DELETE; `last_modified` is the client-chosen timestamp of the tombstone.
    Delete {
        conditions: Preconditions,
        last_modified: Option<u64>,
    },
}

/// A call on a list (`/buckets`, `…/records`).
pub enum ListCall {
    /// GET or HEAD: the query as given (`pairs`, for `Next-Page`) and parsed; `at` is `_at`.
    Read {
        conditions: Preconditions,
        pairs: Vec<(String, String)>,
        at: Option<AsOf>,
        query: ListQuery,
    },
    /// POST; `given_id` is a valid `data.id` sent by the client.
    Create {
        conditions: Preconditions,
        envelope: Envelope,
        given_id: Option<String>,
    },
    Delete {
        conditions: Preconditions,
        pairs: Vec<(String, String)>,
        query: ListQuery,
    },
}

/// The three bodies a PATCH may carry.
pub enum PatchBody {
    Kinto { data: Option<Map<String, Value>>, permissions: Option<PermissionsInput> },
    MergePatch { data: Option<Map<String, Value>>, permissions: Option<PermissionsInput> },
    JsonPatch(Value),
}

impl PatchBody {
    /// Whether the PATCH carries data (Kinto then validates it with the resource's defaults).
    pub fn sends_data(&self) -> bool {
        match self {
            PatchBody::Kinto { data, .. } | PatchBody::MergePatch { data, .. } => data.is_some(),
            PatchBody::JsonPatch(_) => true,
        }
    }
}

fn invalid_id() -> ApiError {
    ApiError::invalid_one(Location::Path, None, "Invalid object id")
}

fn preconditions(req: &ApiRequest) -> Result<Preconditions, ApiError> {
    Preconditions::parse(req.header("if-match"), req.header("if-none-match"))
}

impl ObjectCall {
    /// Extracts the call on object `id` at `addr`. A read's id is checked later, after
    /// authorization, as Kinto does.
    pub fn extract(req: &ApiRequest, addr: &Address, id: &str) -> Result<ObjectCall, ApiError> {
        match req.method.as_str() {
            "GET" | "HEAD" => {
                check_accept(req)?;
                let conditions = preconditions(req)?;
                let pairs = query::parse_pairs(&req.query)?;
                let fields = query::object_fields(&pairs);
                Ok(ObjectCall::Read { conditions, fields, at: point_in_time(&pairs)? })
            }
            "PUT" => {
                if !addr.kind.is_valid_id(id) {
                    return Err(invalid_id());
                }
                check_content_type(req, &["application/json"])?;
                check_accept(req)?;
                let conditions = preconditions(req)?;
                let envelope = parse_envelope(req, addr)?;
                if envelope.data.as_ref().and_then(|d| d.get("id")).is_some_and(|body_id| body_id.as_str() != Some(id))
                {
                    return Err(ApiError::invalid_one(
                        Location::Body,
                        Some("id"),
                        "Object id does not match existing object",
                    ));
                }
                Ok(ObjectCall::Replace { conditions, envelope })
            }
            "PATCH" => {
                let patch = parse_patch(req, addr)?;
                check_accept(req)?;
                let behavior = parse_response_behavior(req.header("response-behavior"))?;
                Ok(ObjectCall::Patch { conditions: preconditions(req)?, patch, behavior })
            }
            "DELETE" => {
                check_accept(req)?;
                let conditions = preconditions(req)?;
                Ok(ObjectCall::Delete { conditions, last_modified: query_timestamp(req, "last_modified")? })
            }
            _ => Err(ApiError::method_not_allowed(crate::routes::OBJECT_METHODS)),
        }
    }
}

impl ListCall {
    pub fn extract(req: &ApiRequest, addr: &Address) -> Result<ListCall, ApiError> {
        match req.method.as_str() {
            "GET" | "HEAD" => {
                check_accept(req)?;
                let (pairs, query) = parse_query(req, addr)?;
                let at = point_in_time(&pairs)?;
                Ok(ListCall::Read { conditions: preconditions(req)?, pairs, query, at })
            }
            "POST" => {
                check_content_type(req, &["application/json"])?;
                check_accept(req)?;
                let conditions = preconditions(req)?;
                let envelope = parse_envelope(req, addr)?;
                let given_id = match envelope.data.as_ref().and_then(|d| d.get("id")) {
                    None => None,
                    Some(Value::String(id)) if addr.kind.is_valid_id(id) => Some(id.clone()),
                    Some(_) => return Err(invalid_id()),
                };
                Ok(ListCall::Create { conditions, envelope, given_id })
            }
            "DELETE" => {
                check_accept(req)?;
                let (pairs, query) = parse_query(req, addr)?;
                Ok(ListCall::Delete { conditions: preconditions(req)?, pairs, query })
            }
            _ => Err(ApiError::method_not_allowed(crate::routes::LIST_METHODS)),
        }
    }
}

/// `_at`: a Kinto timestamp (the versions whose `last_modified` is at or before it) or a stream
/// cursor (the state once that event was committed).
/// `_until` (a changeset's end, with `_since` its start) reads as `_at` does.
pub fn point_in_time(pairs: &[(String, String)]) -> Result<Option<AsOf>, ApiError> {
    let Some((name, raw)) = pairs.iter().find(|(k, _)| k == "_at" || k == "_until") else { return Ok(None) };
    if name == "_until" {
        let ts = raw.trim().trim_matches('"').parse::<u64>().map_err(|_| {
            ApiError::invalid_one(Location::Querystring, Some("_until"), format!("\"{raw}\" is not a timestamp"))
        })?;
        return Ok(Some(AsOf::Timestamp(ts)));
    }
    let raw = raw.trim().trim_matches('"');
    if let Ok(ts) = raw.parse::<u64>() {
        return Ok(Some(AsOf::Timestamp(ts)));
    }
    match tidemark_protocol::stream::parse_cursor(raw) {
        Some(seq) => Ok(Some(AsOf::Seq(seq))),
        None => Err(ApiError::invalid_one(
            Location::Querystring,
            Some("_at"),
            format!("\"{raw}\" is neither a timestamp nor a cursor"),
        )),
    }
}

/// The list query, with the resource's default sort when the request gives none.
fn parse_query(req: &ApiRequest, addr: &Address) -> Result<(Vec<(String, String)>, ListQuery), ApiError> {
    let pairs = query::parse_pairs(&req.query)?;
    let mut effective = pairs.clone();
    if let Some(sort) = addr.kind.default_sort.as_ref().filter(|_| !pairs.iter().any(|(k, _)| k == "_sort")) {
        effective.push(("_sort".into(), sort.clone()));
    }
    let q = query::parse_list_query(&effective, now_ms(), None)?;
    Ok((pairs, q))
}

fn parse_patch(req: &ApiRequest, addr: &Address) -> Result<PatchBody, ApiError> {
    let media =
        check_content_type(req, &["application/merge-patch+json", "application/json-patch+json", "application/json"])?;
    let value = json_body(req)?;
    if media == "application/json-patch+json" {
        return Ok(PatchBody::JsonPatch(value));
    }
    let envelope = body::parse_envelope(value, &addr.kind.permission_names())?;
    if envelope.data.is_none() && envelope.permissions.is_none() {
        return Err(ApiError::invalid_one(Location::Body, Some("data"), "Provide at least one of data or permissions"));
    }
    Ok(if media == "application/merge-patch+json" {
        PatchBody::MergePatch { data: envelope.data, permissions: envelope.permissions }
    } else {
        PatchBody::Kinto { data: envelope.data, permissions: envelope.permissions }
    })
}

/// A timestamp query parameter (`?last_modified=` on DELETE): a non-negative integer.
fn query_timestamp(req: &ApiRequest, name: &str) -> Result<Option<u64>, ApiError> {
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

/// The request's `{"data", "permissions"}` envelope, with the permissions the resource knows.
pub fn parse_envelope(req: &ApiRequest, addr: &Address) -> Result<Envelope, ApiError> {
    body::parse_envelope(json_body(req)?, &addr.kind.permission_names())
}

/// The JSON body of the request, `{}` when empty.
pub fn json_body(req: &ApiRequest) -> Result<Value, ApiError> {
    body::parse_json(&req.body)
}

/// 415 unless the body's media type is one of `allowed` (a missing header is accepted).
pub fn check_content_type(req: &ApiRequest, allowed: &[&str]) -> Result<String, ApiError> {
    let Some(value) = req.header("content-type") else {
        return Ok("application/json".into());
    };
    let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if allowed.contains(&media.as_str()) {
        return Ok(media);
    }
    let list = allowed.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ");
    let description = format!("Content-Type header should be one of [{list}]");
    Err(ApiError::invalid_with_status(415, vec![Invalid::new(Location::Header, Some("Content-Type"), description)]))
}

/// 406 unless `Accept` admits JSON (a missing header is fine).
pub fn check_accept(req: &ApiRequest) -> Result<(), ApiError> {
    let Some(accept) = req.header("accept") else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim();
        let refused = parts
            .any(|p| matches!(p.trim().strip_prefix("q="), Some(q) if q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
        !refused && matches!(media, "*/*" | "application/*" | "application/json" | "")
    });
    if acceptable {
        Ok(())
    } else {
        let description = "Accept header should be one of ['application/json']";
        Err(ApiError::invalid_with_status(406, vec![Invalid::new(Location::Header, Some("Accept"), description)]))
    }
}
