//! The utility endpoints: hello, heartbeats, version, contribute.json, and the flush plugin.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use tidemark_engine::{Command, Context, Expect, ListOrder, ListRange, Op};
use tidemark_protocol::ApiError;

use crate::auth::Policy;
use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::settings::Plugin;
use crate::state::AppState;

pub const HTTP_API_VERSION: &str = "1.23";

pub fn hello(state: &AppState, req: &ApiRequest) -> ApiResponse {
    let settings = &state.settings;
    let mut capabilities = Map::new();
    if state.authenticator.has(Policy::Basic) {
        capabilities.insert(
            "basicauth".into(),
            json!({"description": "Very basic authentication sessions. Not for production use.", "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html"}),
        );
    }
    if state.plugin(Plugin::Flush) {
        capabilities.insert(
            "flush_endpoint".into(),
            json!({"description": "The __flush__ endpoint can be used to remove all data from all backends.", "url": "https://kinto.readthedocs.io/en/latest/api/1.x/flush.html"}),
        );
    }
    if state.plugin(Plugin::Accounts) {
        capabilities.insert(
            "accounts".into(),
            json!({"description": "Manage user accounts.", "url": "https://kinto.readthedocs.io/en/latest/api/1.x/accounts.html", "validation_enabled": false}),
        );
    }
    if state.plugin(Plugin::DefaultBucket) {
        capabilities.insert(
            "default_bucket".into(),
            json!({"description": "The default bucket is an alias for a personal bucket where collections are created implicitly.", "url": "https://kinto.readthedocs.io/en/latest/api/1.x/buckets.html#personal-bucket-default"}),
        );
    }
    if state.endpoints().permissions {
        capabilities.insert(
            "permissions_endpoint".into(),
            json!({"description": "The permissions endpoint can be used to list all user objects permissions.", "url": "https://kinto.readthedocs.io/en/latest/configuration/settings.html#activating-the-permissions-endpoint"}),
        );
    }
    let mut body = json!({
        "project_name": settings.project_name,
        "project_version": settings.project_version,
        "http_api_version": HTTP_API_VERSION,
        "project_docs": settings.project_docs,
        "url": format!("{}/", req.base_url),
        "config": config_info(state),
        "settings": {
            "batch_max_requests": settings.batch_max_requests,
            "readonly": settings.readonly,
            "explicit_permissions": settings.explicit_permissions,
        },
        "capabilities": capabilities,
    });
    if let (Some(eos), Value::Object(map)) = (&settings.eos, &mut body) {
        map.insert("eos".into(), json!(eos));
    }
    if let (Some(user_id), Value::Object(map)) = (&req.identity.user_id, &mut body) {
        let mut user = json!({"id": user_id, "principals": req.identity.principals});
        if state.plugin(Plugin::DefaultBucket) {
            user["bucket"] = json!(crate::default_bucket::bucket_id(&settings.default_bucket_hmac_secret, user_id));
        }
        map.insert("user".into(), user);
    }
    ApiResponse::json(StatusCode::OK, body)
}

/// `config` in hello (API 1.23): the settings file's path, sha256 and modification time.
fn config_info(state: &AppState) -> Value {
    let Some(path) = &state.settings.ini_path else {
        return Value::Null;
    };
    let Ok(bytes) = std::fs::read(path) else {
        return Value::Null;
    };
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).map(httpdate::fmt_http_date).unwrap_or_default();
    json!({"path": path.display().to_string(), "hash": hash, "modified": modified})
}

pub fn heartbeat(state: &AppState) -> ApiResponse {
    let storage = state.engine.failure().is_none() && state.engine.last_seq().is_ok();
    let body = json!({"storage": storage, "permission": storage, "cache": true});
    let status = if storage { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    ApiResponse::json(status, body)
}

pub fn lbheartbeat() -> ApiResponse {
    ApiResponse::json(StatusCode::OK, json!({}))
}

pub fn version() -> ApiResponse {
    ApiResponse::json(
        StatusCode::OK,
        json!({
            "name": "tidemark",
            "version": env!("CARGO_PKG_VERSION"),
            "source": "https://github.com/tidemark/tidemark",
            "commit": option_env!("TIDEMARK_COMMIT").unwrap_or("unknown"),
        }),
    )
}

pub fn contribute() -> ApiResponse {
    ApiResponse::json(
        StatusCode::OK,
        json!({
            "name": "Tidemark",
            "description": "A Kinto-compatible, event-sourced JSON store and sync server.",
            "repository": {"url": "https://github.com/tidemark/tidemark", "license": "Apache-2.0", "tests": ""},
            "participate": {"home": "https://github.com/tidemark/tidemark", "docs": "https://kinto.readthedocs.io/"},
            "bugs": {"list": "https://github.com/tidemark/tidemark/issues", "report": "https://github.com/tidemark/tidemark/issues/new"},
            "keywords": ["kinto", "sync", "json", "event-sourcing", "rust"],
        }),
    )
}

/// `POST /__flush__` (kinto.plugins.flush, test servers only): deletes every bucket, which
/// cascades to everything below. Recorded in the log like any other delete.
pub async fn flush(state: &AppState) -> Result<ApiResponse, ApiError> {
    let mut ids = Vec::new();
    state
        .engine
        .walk_list("", "bucket", ListRange::default(), ListOrder::Oldest, |object| {
            if !object.deleted {
                ids.push(object.id().to_owned());
            }
            Ok(true)
        })
        .map_err(from_engine)?;
    if !ids.is_empty() {
        let commands = ids
            .into_iter()
            .map(|id| Command {
                resource: "bucket".into(),
                parent: String::new(),
                id,
                op: Op::Delete,
                expect: Expect::Live,
                last_modified: None,
                context: Context::default(),
            })
            .collect();
        state.engine.submit(commands).await.map_err(from_engine)?;
    }
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({})))
}
