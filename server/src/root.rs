//! The utility endpoints: hello, heartbeats, version, contribute.json, and the flush plugin.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use tidemark_engine::{Context, Expect, ListOrder, ListRange, Op};
use tidemark_protocol::ApiError;

use crate::error::from_engine;
use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::settings::Plugin;
use crate::state::AppState;
use crate::toolkit::write::command_as;

pub const HTTP_API_VERSION: &str = "1.23";

pub fn hello(state: &AppState, req: &ApiRequest) -> ApiResponse {
    let settings = &state.settings;
    let mut capabilities = Map::new();
    for (name, capability) in state.authenticator.policies().iter().filter_map(|p| p.capability()) {
        // Several OpenID providers share one capability, listing them all.
        match (capabilities.get_mut(&name), capability.get("providers")) {
            (Some(Value::Object(existing)), Some(Value::Array(more))) => {
                if let Some(Value::Array(providers)) = existing.get_mut("providers") {
                    providers.extend(more.iter().cloned());
                }
            }
            _ => {
                capabilities.insert(name, capability);
            }
        }
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
    if state.plugin(Plugin::History) {
        capabilities.insert(
            "history".into(),
            json!({"description": "Track changes on data.", "url": "http://kinto.readthedocs.io/en/latest/api/1.x/history.html"}),
        );
    }
    if let Some(admin) = &state.admin {
        capabilities.insert("admin".into(), admin.capability());
    }
    if state.plugin(Plugin::DefaultBucket) {
        capabilities.insert(
            "default_bucket".into(),
            json!({"description": "The default bucket is an alias for a personal bucket where collections are created implicitly.", "url": "https://kinto.readthedocs.io/en/latest/api/1.x/buckets.html#personal-bucket-default"}),
        );
    }
    if settings.experimental_collection_schema_validation {
        capabilities.insert(
            "schema".into(),
            json!({"description": "Validates collection records with JSON schemas.", "url": "https://kinto.readthedocs.io/en/latest/api/1.x/collections.html#collection-json-schema"}),
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
        "config": config_info(),
    });
    let Value::Object(map) = &mut body else { return ApiResponse::json(StatusCode::OK, body) };
    // Kinto's key order: eos, settings, user, capabilities.
    if let Some(eos) = &settings.eos {
        map.insert("eos".into(), json!(eos));
    }
    map.insert(
        "settings".into(),
        json!({
            "batch_max_requests": settings.batch_max_requests,
            "readonly": settings.readonly,
            "explicit_permissions": settings.explicit_permissions,
        }),
    );
    if let Some(user_id) = &req.identity.user_id {
        let ns = &req.identity.namespace;
        // The groups of the caller's application, as its clients name them.
        let principals: Vec<String> = req
            .identity
            .principals
            .iter()
            .filter(|p| !p.starts_with('/') || crate::namespace::contains(ns, p))
            .map(|p| crate::namespace::to_wire(ns, p).to_owned())
            .collect();
        let mut user = json!({"id": user_id, "principals": kinto_principal_order(&principals)});
        if state.plugin(Plugin::DefaultBucket) {
            user["bucket"] =
                json!(crate::kinto::default_bucket::bucket_id(&settings.default_bucket_hmac_secret, user_id));
        }
        if let Some(profile) = &req.identity.profile {
            user["profile"] = profile.clone();
        }
        map.insert("user".into(), user);
    }
    map.insert("capabilities".into(), Value::Object(capabilities));
    ApiResponse::json(StatusCode::OK, body)
}

/// `config` in hello (API 1.23), by Kinto's rule: the file `KINTO_INI` names (else
/// `./config/kinto.ini`, as Kinto's WSGI entry point), if it exists — not the file the server was
/// started with, whose path no anonymous client need learn.
fn config_info() -> Value {
    let path = std::env::var_os("KINTO_INI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(".").join("config").join("kinto.ini"));
    let (Ok(bytes), Ok(modified)) = (std::fs::read(&path), std::fs::metadata(&path).and_then(|m| m.modified())) else {
        return Value::Null;
    };
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    json!({"path": path.display().to_string(), "hash": hash, "modified": iso_datetime(modified)})
}

/// Python's `datetime.isoformat()` of a naive UTC time: microseconds only when not zero.
fn iso_datetime(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let date = tidemark_protocol::dates::civil_date(days as i64);
    let clock = format!("{:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
    match since.subsec_micros() {
        0 => format!("{date}T{clock}"),
        micros => format!("{date}T{clock}.{micros:06}"),
    }
}

/// The user id, `system.Authenticated`, the groups, then `system.Everyone`, as Kinto lists them.
fn kinto_principal_order(principals: &[String]) -> Vec<&str> {
    let rank = |p: &str| match p {
        crate::auth::AUTHENTICATED => 1,
        crate::auth::EVERYONE => 3,
        group if group.starts_with("/buckets/") => 2,
        _ => 0,
    };
    let mut ordered: Vec<&str> = principals.iter().map(String::as_str).collect();
    ordered.sort_by_key(|p| rank(p));
    ordered
}

/// `/__heartbeat__`: Kinto's three checks (storage and permission both live in the engine here,
/// so they stand or fall together; the cache is its backend's ping), and the engine's own
/// report. A check that takes longer than `heartbeat_timeout_seconds` fails, as in Kinto.
pub async fn heartbeat(state: &AppState) -> ApiResponse {
    let engine = state.engine.clone();
    let timeout = std::time::Duration::from_secs(state.settings.heartbeat_timeout_seconds);
    let probe = tokio::task::spawn_blocking(move || engine.health());
    let health = match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(Ok(health))) => Some(health),
        Ok(Ok(Err(err))) => {
            tracing::error!(error = %err, "heartbeat: storage unreadable");
            None
        }
        Ok(Err(_)) | Err(_) => {
            tracing::error!(timeout_seconds = timeout.as_secs(), "heartbeat: storage check timed out");
            None
        }
    };
    let writable = health.as_ref().is_some_and(|h| h.failure.is_none());
    let engine = health.map(|h| {
        json!({
            "writable": h.failure.is_none(),
            "failure": h.failure,
            "head_seq": h.last_seq,
            "view_lag": h.last_seq.saturating_sub(h.views_seq),
            "last_flush_ms": h.last_flush.map(|d| d.as_secs_f64() * 1000.0),
        })
    });
    let cache = std::sync::Arc::clone(&state.cache);
    let cache_ok = match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || cache.ping())).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(err))) => {
            tracing::error!(error = %err, "heartbeat: cache unreachable");
            false
        }
        Ok(Err(_)) | Err(_) => false,
    };
    let body = json!({"storage": writable, "permission": writable, "cache": cache_ok, "engine": engine});
    let status = if writable && cache_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    ApiResponse::json(status, body)
}

pub fn lbheartbeat() -> ApiResponse {
    ApiResponse::json(StatusCode::OK, json!({}))
}

/// `/__version__`: the `version.json` of the deployment, as Kinto serves it. With
/// `version_json_path` set, that file or a 500 when it is missing (Kinto); otherwise
/// `./version.json` if there is one, else the version this binary was built as.
pub fn version(state: &AppState) -> Result<ApiResponse, ApiError> {
    let configured = state.settings.version_json_path.as_deref();
    let path = std::path::Path::new(configured.unwrap_or("version.json"));
    match std::fs::read(path) {
        Ok(bytes) => {
            let value: Value = serde_json::from_slice(&bytes).map_err(|err| {
                tracing::error!(path = %path.display(), error = %err, "version file is not JSON");
                ApiError::internal(&state.settings.error_info_link)
            })?;
            Ok(ApiResponse::json(StatusCode::OK, value))
        }
        Err(err) if configured.is_some() || err.kind() != std::io::ErrorKind::NotFound => {
            tracing::error!(path = %path.display(), error = %err, "version file missing");
            Err(ApiError::internal(&state.settings.error_info_link))
        }
        Err(_) => Ok(ApiResponse::json(
            StatusCode::OK,
            json!({
                "name": "tidemark",
                "version": env!("CARGO_PKG_VERSION"),
                "source": env!("CARGO_PKG_REPOSITORY"),
                "commit": option_env!("TIDEMARK_COMMIT").unwrap_or("unknown"),
            }),
        )),
    }
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

/// `POST /__flush__` (kinto.plugins.flush, test servers only): deletes every object at the root
/// (buckets, accounts), which cascades to everything below. Recorded in the log like any other
/// delete.
pub async fn flush(state: &AppState) -> Result<ApiResponse, ApiError> {
    let mut commands = Vec::new();
    for kind in state.registry.iter().filter(|kind| kind.parent.is_none() && !kind.is_per_user()) {
        let Some(addr) = state.registry.address_of(&[kind.plural.as_str()]) else { continue };
        state
            .engine
            .walk_list("", &kind.plural, ListRange::default(), ListOrder::Oldest, |object| {
                if !object.deleted {
                    let id = object.id();
                    commands.push(command_as(Context::default(), &addr, id, Op::Delete, Expect::Live, None));
                }
                Ok(true)
            })
            .map_err(from_engine)?;
    }
    if !commands.is_empty() {
        let events = state.engine.submit(commands).await.map_err(from_engine)?;
        crate::summary::written(&events);
    }
    Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({})))
}
