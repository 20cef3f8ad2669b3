//! Pieces every resource handler shares: parent checks, envelopes, negotiation, caching.

use serde_json::{json, Map, Value};
use tidemark_engine::{Acl, Engine, StoredObject};
use tidemark_protocol::{body, ApiError, Invalid, Location};

use crate::auth::Identity;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::resources::Node;
use crate::response::ApiResponse;

/// The first missing ancestor (top-down) answers 404 errno 111.
pub fn require_parents(engine: &Engine, parents: &[Node]) -> Result<(), ApiError> {
    for node in parents {
        if !engine.exists_uri(&node.uri).map_err(from_engine)? {
            return Err(ApiError::parent_not_found(node.kind.name, &node.id));
        }
    }
    Ok(())
}

/// The object's own ACL, shown only to its explicit writers (§2.1).
pub fn visible_permissions(acl: &Acl, identity: &Identity) -> Value {
    let is_writer = acl.get("write").is_some_and(|writers| writers.iter().any(|w| identity.principals.contains(w)));
    if is_writer {
        json!(acl)
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
    body.insert("data".into(), data);
    body.insert("permissions".into(), permissions);
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

/// Resource reads are never cached by intermediaries unless settings say so (anonymous only).
pub fn cache_headers(response: ApiResponse) -> ApiResponse {
    response.header("Cache-Control", "no-cache, no-store")
}

/// The JSON body of the request, `{}` when empty.
pub fn json_body(req: &ApiRequest) -> Result<Value, ApiError> {
    body::parse_json(&req.body)
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

/// Kind-specific validation of object data (groups' `members`).
pub fn validate_data(kind: &str, data: &mut Map<String, Value>) -> Result<(), ApiError> {
    if kind != "group" {
        return Ok(());
    }
    let members = data.entry("members").or_insert_with(|| json!([]));
    let Value::Array(items) = members else {
        let shown = tidemark_protocol::pyrepr::pystr(members);
        return Err(ApiError::invalid_one(
            Location::Body,
            Some("data.members"),
            format!("\"{shown}\" is not iterable"),
        ));
    };
    for (i, item) in items.iter().enumerate() {
        let name = format!("data.members.{i}");
        match item {
            Value::String(s) if s == "system.Everyone" || s.starts_with("/buckets/") => {
                return Err(ApiError::invalid_one(
                    Location::Body,
                    Some(&name),
                    format!("'{s}' is not a valid user ID."),
                ));
            }
            Value::String(_) => {}
            other => {
                let shown = tidemark_protocol::pyrepr::pyrepr(other);
                return Err(ApiError::invalid_one(
                    Location::Body,
                    Some(&name),
                    format!("{shown} is not a string: {{'': ''}}"),
                ));
            }
        }
    }
    Ok(())
}
