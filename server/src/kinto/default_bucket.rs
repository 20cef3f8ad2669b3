//! kinto.plugins.default_bucket: `/buckets/default/…` is the caller's own bucket, whose id is
//! derived from their user id, created (with the named collection) on first use.

use serde_json::{Map, Value};
use tidemark_engine::{Expect, Op};
use tidemark_protocol::{ApiError, Location};

use crate::auth::hmac_hex;
use crate::authz::deny;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::state::AppState;
use crate::toolkit::write::{command, submit_one};

/// Kinto's id: the first 32 hex digits of HMAC-SHA256(default_bucket_hmac_secret, user id),
/// formatted 8-4-4-4-12 (no UUID version bits forced).
pub fn bucket_id(secret: &str, user_id: &str) -> String {
    let hex = hmac_hex(secret, user_id);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Creates the object at `segments` if it does not exist, with the caller as writer. A
/// concurrent creation is fine: the object exists either way.
async fn ensure(state: &AppState, req: &ApiRequest, segments: &[&str]) -> Result<(), ApiError> {
    let addr = state.registry.require(segments)?.in_namespace(&req.identity.namespace);
    let id = addr.id.clone().unwrap_or_default();
    if state.engine.get(addr.parent_uri(), &addr.kind.plural, &id).map_err(from_engine)?.is_some_and(|o| !o.deleted) {
        return Ok(());
    }
    let writer = req.identity.writer_principal().to_owned();
    let op = Op::Put { data: Map::new(), permissions: [("write".to_owned(), vec![writer])].into() };
    // Lost to a concurrent creation: the object exists.
    submit_one(state, command(req, &addr, &id, op, Expect::Absent, None)).await.map(|_| ())
}

/// Rewrites a request addressed through `/buckets/default` to the caller's bucket, creating
/// the bucket (and collection) first as Kinto does. Other requests pass unchanged.
pub async fn resolve(state: &AppState, req: &mut ApiRequest) -> Result<(), ApiError> {
    if req.segments.len() < 2 || req.segments[0] != "buckets" || req.segments[1] != "default" {
        return Ok(());
    }
    let Some(user_id) = req.identity.user_id.clone() else {
        return Err(deny(&req.identity));
    };
    if state.settings.readonly {
        return Err(ApiError::method_not_allowed(""));
    }
    let bid = bucket_id(&state.settings.default_bucket_hmac_secret, &user_id);
    let is_put = req.method == axum::http::Method::PUT;
    if !(is_put && req.segments.len() == 2) {
        ensure(state, req, &["buckets", &bid]).await?;
    }
    if req.segments.len() >= 4 && req.segments[2] == "collections" {
        let cid = req.segments[3].clone();
        if !tidemark_protocol::ids::is_valid_id(&cid) {
            return Err(ApiError::invalid_one(Location::Path, None, "Invalid collection id"));
        }
        if !(is_put && req.segments.len() == 4) {
            ensure(state, req, &["buckets", &bid, "collections", &cid]).await?;
        }
    }
    req.segments[1] = bid.clone();
    if let Some(rest) = req.path.strip_prefix("/buckets/default") {
        req.path = format!("/buckets/{bid}{rest}");
    }
    // Kinto replaces "default" in a string `data.id` too (a substring replace, kept as is).
    if let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&req.body) {
        if let Some(Value::Object(data)) = body.get_mut("data") {
            if let Some(Value::String(id)) = data.get_mut("id") {
                *id = id.replace("default", &bid);
                req.body = serde_json::to_vec(&body).unwrap_or_default().into();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_id_matches_kinto() {
        let uid = "basicauth:2381f1d3ad5dc94b906b5bbcdb1fba17c37cd7f3947bf9451be8cd3f071bf0b7";
        assert_eq!(super::bucket_id("", uid), "6231008d-d80d-3a2a-b9c0-7928db8e0c9d");
    }
}
