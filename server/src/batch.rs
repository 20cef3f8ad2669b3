//! `POST /v1/batch`: several requests in one, answered in order (kinto-protocol.md §9.7).
//!
//! Subrequests run sequentially through the same dispatcher as HTTP requests, with the batch's
//! own headers (Authorization included) overridden by each subrequest's. A 5xx answer aborts
//! the batch with that error, as Kinto does.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tidemark_protocol::body::not_a_mapping;
use tidemark_protocol::pyrepr::pyrepr;
use tidemark_protocol::{ApiError, Location};

use crate::auth::Identity;
use crate::dispatch::dispatch;
use crate::error::from_engine;
use crate::request::{decode_segments, ApiRequest};
use crate::response::{ApiResponse, Body};
use crate::routes::{self, Route};
use crate::state::AppState;
use crate::toolkit::extract::{check_content_type, json_body};

const METHODS: [&str; 7] = ["GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH"];

fn invalid(name: &str, description: impl Into<String>) -> ApiError {
    ApiError::invalid_one(Location::Body, Some(name), description)
}

/// Deep-merges `defaults` under `request` (keys of the request win).
fn merge_defaults(request: &mut Map<String, Value>, defaults: &Map<String, Value>) {
    for (key, default) in defaults {
        match (request.get_mut(key), default) {
            (Some(Value::Object(target)), Value::Object(default)) => merge_defaults(target, default),
            (Some(_), _) => {}
            (None, _) => {
                request.insert(key.clone(), default.clone());
            }
        }
    }
}

struct SubRequest {
    method: Method,
    path: String,
    headers: Map<String, Value>,
    body: Option<Value>,
}

fn parse(state: &AppState, body: Value) -> Result<Vec<SubRequest>, ApiError> {
    let Value::Object(mut body) = body else {
        return Err(not_a_mapping("", &body));
    };
    let defaults = match body.remove("defaults") {
        None => Map::new(),
        Some(Value::Object(defaults)) => defaults,
        Some(other) => return Err(not_a_mapping("defaults", &other)),
    };
    let requests = match body.remove("requests") {
        Some(Value::Array(requests)) => requests,
        Some(other) => {
            return Err(invalid(
                "requests",
                format!("\"{}\" is not iterable", tidemark_protocol::pyrepr::pystr(&other)),
            ))
        }
        None => return Err(invalid("requests", "Required")),
    };
    if !body.is_empty() {
        return Err(invalid("", format!("Unrecognized keys in mapping: \"{}\"", pyrepr(&Value::Object(body)))));
    }
    let max = state.settings.batch_max_requests as usize;
    if max > 0 && requests.len() > max {
        return Err(invalid("requests", format!("Number of requests is limited to {max}")));
    }
    let mut parsed = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let name = format!("requests.{i}");
        let Value::Object(mut request) = request else {
            return Err(not_a_mapping(&name, &request));
        };
        merge_defaults(&mut request, &defaults);
        let unknown: Map<String, Value> = request
            .iter()
            .filter(|(k, _)| !["path", "method", "headers", "body"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(
                &name,
                format!("Unrecognized keys in mapping: \"{}\"", pyrepr(&Value::Object(unknown))),
            ));
        }
        let path = match request.get("path") {
            Some(Value::String(path)) if path.starts_with('/') => path.clone(),
            Some(Value::String(_)) => {
                return Err(invalid(&format!("{name}.path"), "String does not match expected pattern"))
            }
            Some(_) => return Err(invalid(&format!("{name}.path"), "is not a string")),
            None => return Err(invalid(&format!("{name}.path"), "Required")),
        };
        if path.contains("/batch") {
            return Err(invalid("requests", "Recursive call on /batch endpoint is forbidden."));
        }
        let method = match request.get("method") {
            None => Method::GET,
            Some(Value::String(m)) if METHODS.contains(&m.to_ascii_uppercase().as_str()) => {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET)
            }
            Some(other) => {
                let shown = other.as_str().map_or_else(|| other.to_string(), |s| format!("\"{s}\""));
                return Err(invalid(
                    &format!("{name}.method"),
                    format!("{shown} is not one of {}", METHODS.join(", ")),
                ));
            }
        };
        let headers = match request.get("headers") {
            None => Map::new(),
            Some(Value::Object(h)) if h.values().all(Value::is_string) => h.clone(),
            Some(other) => {
                return Err(invalid(&format!("{name}.headers"), format!("{} contains non string value", pyrepr(other))))
            }
        };
        let body = match request.get("body") {
            None => None,
            Some(Value::Object(b)) => Some(Value::Object(b.clone())),
            Some(other) => return Err(not_a_mapping(&format!("{name}.body"), other)),
        };
        parsed.push(SubRequest { method, path, headers, body });
    }
    Ok(parsed)
}

/// The subrequest, and whether it carries an `Authorization` of its own, other than the
/// batch's (then it must be identified; the batch's own, as kinto-http.js repeats it in the
/// batch's `defaults`, keeps the batch's identity: one authentication per batch).
fn sub_request(outer: &ApiRequest, sub: SubRequest, prefix: &str) -> Result<(ApiRequest, bool), ApiError> {
    let (path, query) = split_path(&sub.path, prefix);
    let segments = decode_segments(path).ok_or_else(|| invalid("path", "Invalid URL path."))?;
    let mut headers: HeaderMap = outer.headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in &sub.headers {
        if let (Ok(name), Some(Ok(value))) =
            (HeaderName::try_from(name.as_str()), value.as_str().map(HeaderValue::from_str))
        {
            headers.insert(name, value);
        }
    }
    let outer_authorization = outer.headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let reauthenticate = sub
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.as_str().map(str::as_bytes) != outer_authorization);
    let body = match &sub.body {
        Some(body) => {
            headers
                .insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            Bytes::from(serde_json::to_vec(body).unwrap_or_default())
        }
        None => Bytes::new(),
    };
    Ok(ApiRequest {
        method: sub.method,
        path: path.to_owned(),
        segments,
        query: query.to_owned(),
        headers,
        body,
        base_url: outer.base_url.clone(),
        identity: outer.identity.clone(),
        client: outer.client,
    })
    .map(|mut req| {
        if reauthenticate {
            req.identity = crate::auth::Identity::anonymous();
        }
        (req, reauthenticate)
    })
}

/// Gives each creating `POST` without an id a generated one, as the handler would, and returns
/// their (parent, kind, id): nobody else knows these ids yet, so the transaction may take their
/// absence as checked before it starts (it reads no storage for them while holding the writer).
fn pregenerate_ids(state: &AppState, requests: &mut [SubRequest]) -> Vec<(String, String, String)> {
    let mut fresh = Vec::new();
    for sub in requests.iter_mut().filter(|r| r.method == Method::POST) {
        let Some(segments) = decode_segments(split_path(&sub.path, &state.prefix).0) else { continue };
        let Ok(Route::List(addr)) = routes::parse(&segments, state.endpoints(), &state.registry) else { continue };
        // A per-user namespace, and the default bucket's real id, are only known once the
        // request is authenticated; a resource with its own POST makes its own ids.
        let default_bucket = addr.parents.first().is_some_and(|bucket| bucket.id == "default");
        if addr.kind.is_per_user() || addr.kind.on_post.is_some() || default_bucket {
            continue;
        }
        let Some(Value::Object(data)) = sub.body.as_mut().and_then(|body| body.get_mut("data")) else { continue };
        if data.contains_key("id") {
            continue;
        }
        let id = addr.kind.generate_id();
        data.insert("id".into(), Value::String(id.clone()));
        fresh.push((addr.parent_uri().to_owned(), addr.kind.plural.clone(), id));
    }
    fresh
}

/// A subrequest's path without the optional version prefix (`/v1`), and its query string.
fn split_path<'a>(path: &'a str, prefix: &str) -> (&'a str, &'a str) {
    let path = path.strip_prefix(prefix).filter(|p| p.is_empty() || p.starts_with('/')).unwrap_or(path);
    path.split_once('?').unwrap_or((path, ""))
}

/// Runs the subrequests in order. When any of them writes, they all run on one engine
/// transaction: their writes commit together in one atomic, flushed batch, or not at all.
pub async fn handle(state: &AppState, req: &ApiRequest) -> Result<ApiResponse, ApiError> {
    check_content_type(req, &["application/json"])?;
    let mut requests = parse(state, json_body(req)?)?;
    let writes = requests.iter().any(|r| !matches!(r.method, Method::GET | Method::HEAD));
    let transaction = if writes {
        let fresh = pregenerate_ids(state, &mut requests);
        let fresh: Vec<(&str, &str, &str)> =
            fresh.iter().map(|(parent, kind, id)| (parent.as_str(), kind.as_str(), id.as_str())).collect();
        Some(state.engine.begin_with_fresh(&fresh).await.map_err(from_engine)?)
    } else {
        None
    };
    let scoped = match &transaction {
        Some(tx) => state.with_engine(tx.engine().clone()),
        None => state.clone(),
    };
    let origin = req.headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok());
    let mut responses = Vec::with_capacity(requests.len());
    // Each other credential is identified once per batch, however many subrequests carry it.
    let mut identified: HashMap<Vec<u8>, Identity> = HashMap::new();
    for sub in requests {
        let prefix: &str = &state.prefix;
        let path = format!("{prefix}{}", sub.path.strip_prefix(prefix).unwrap_or(&sub.path));
        let path = path.split('?').next().unwrap_or_default().to_owned();
        let path = decode_segments(&path).map(|s| format!("/{}", s.join("/"))).unwrap_or(path);
        let is_head = sub.method == Method::HEAD;
        let (mut sub_req, reauthenticate) = sub_request(req, sub, prefix)?;
        if reauthenticate {
            let authorization = sub_req
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            sub_req.identity = match identified.get(&authorization) {
                Some(identity) => {
                    let mut identity = identity.clone();
                    identity.namespace = crate::namespace::of(&sub_req.headers, &state.settings)?;
                    identity
                }
                None => {
                    let identity = state.identify_request(&sub_req.headers, sub_req.client).await?;
                    identified.insert(authorization, identity.clone());
                    identity
                }
            };
        } else {
            // A subrequest may name another application than the batch.
            sub_req.identity.namespace = crate::namespace::of(&sub_req.headers, &state.settings)?;
        }
        let response = dispatch(&scoped, sub_req).await;
        // A server error or a write conflict aborts the whole batch: nothing it wrote lands.
        if response.status.is_server_error() || response.status == StatusCode::CONFLICT {
            return Ok(response);
        }
        let mut headers: Map<String, Value> = response
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (canonical(k.as_str()), json!(v))))
            .collect();
        if matches!(response.body, Body::Json(_) | Body::RawJson(_)) {
            headers.insert("Content-Type".into(), json!("application/json"));
        }
        let status = response.status.as_u16();
        // As Kinto's subresponses: the body's length (a HEAD's is the GET's, its body empty),
        // and the security headers on successes.
        let (body, length) = match response.body {
            Body::Json(value) => {
                let length = tidemark_protocol::json::to_vec(&value).len();
                (value, length)
            }
            Body::RawJson(bytes) => (serde_json::from_slice(&bytes).unwrap_or(Value::Null), bytes.len()),
            _ => (json!(""), 2),
        };
        headers.insert("Content-Length".into(), json!(length.to_string()));
        let body = if is_head { json!("") } else { body };
        if status < 400 {
            headers.insert("Content-Security-Policy".into(), json!(crate::http::CSP));
            headers.insert("X-Content-Type-Options".into(), json!("nosniff"));
        }
        // A browser's batch: each subresponse says the origin may read it, as Kinto's do.
        let cors = &state.settings.cors_origins;
        if let Some(origin) = origin.filter(|o| crate::http::origin_allowed(cors, o)) {
            let allowed = if cors.iter().any(|c| c == "*") { "*" } else { origin };
            headers.insert("Access-Control-Allow-Origin".into(), json!(allowed));
        }
        let mut entry = Map::new();
        entry.insert("status".into(), json!(status));
        entry.insert("path".into(), Value::String(path));
        entry.insert("headers".into(), Value::Object(headers));
        entry.insert("body".into(), body);
        responses.push(Value::Object(entry));
    }
    if let Some(tx) = transaction {
        let events = tx.commit().await.map_err(from_engine)?;
        crate::summary::written(&events);
    }
    let mut out = Map::new();
    out.insert("responses".into(), Value::Array(responses));
    Ok(ApiResponse::json(StatusCode::OK, Value::Object(out)))
}

/// `etag` → `ETag`-like display casing, as Kinto's subresponse headers read.
fn canonical(name: &str) -> String {
    match name {
        "etag" => "ETag".into(),
        _ => name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}
