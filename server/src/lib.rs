//! Tidemark's HTTP layer: Kinto's HTTP API v1 over the engine.
//!
//! Handlers only parse (protocol), authorize (against the engine's ACL views), submit commands
//! to the engine's single writer, and build responses from the committed events. No handler
//! mutates storage directly. Every error becomes Kinto JSON in one place (`error::render`).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// ApiError is large (it carries the whole Kinto error body) but only travels on failure paths.
#![allow(clippy::result_large_err)]

mod admin;
pub mod auth;
mod authz;
mod batch;
pub mod cache;
mod dispatch;
pub mod error;
mod http;
pub mod kinto;
mod limits;
mod listeners;
pub mod metrics;
pub mod namespace;
mod openapi;
pub mod request;
pub mod response;
mod root;
mod routes;
pub mod settings;
pub mod state;
mod stream;
mod summary;
pub mod toolkit;

use std::sync::Arc;

pub use http::app;
pub use settings::Settings;
pub use state::AppState;

use tidemark_engine::{Engine, EngineConfig, FlushPolicy};

/// Opens the engine the settings name (sled in `data_dir`, or memory), creating the store if
/// there is none yet (`serve`, `import`).
pub fn open_engine(settings: &Settings) -> Result<Engine, String> {
    open_engine_with(settings, true)
}

/// Opens the store the settings name only if it exists: a maintenance command (`verify`,
/// `log`, `export`, `rebuild`, `replay`) pointed at a mistyped path must say so, not report on
/// an empty store it just created there.
pub fn open_existing_engine(settings: &Settings) -> Result<Engine, String> {
    open_engine_with(settings, false)
}

fn open_engine_with(settings: &Settings, create: bool) -> Result<Engine, String> {
    let flush = match settings.flush_policy {
        settings::FlushPolicy::Always => FlushPolicy::Always,
        settings::FlushPolicy::IntervalMs(ms) => FlushPolicy::IntervalMs(ms),
        settings::FlushPolicy::None => FlushPolicy::None,
    };
    let config = EngineConfig {
        flush,
        max_object_bytes: settings.max_body_bytes.max(1024),
        cache_bytes: settings.storage_cache_mb.saturating_mul(1024 * 1024),
        ..EngineConfig::default()
    };
    match settings.storage_backend {
        settings::Backend::Sled => {
            let store = settings.data_dir.join("store");
            if !create && !tidemark_engine::sled_store_exists(&store) {
                return Err(format!(
                    "no Tidemark store in {} (there is no {}): check --data or data_dir",
                    settings.data_dir.display(),
                    store.join("db").display()
                ));
            }
            tidemark_engine::disk::create_dir_all(&settings.data_dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", settings.data_dir.display()))?;
            Engine::open_sled(&store, config).map_err(|e| e.to_string())
        }
        settings::Backend::Memory if !create => {
            Err("storage_backend is memory: there is no stored data to work on (set data_dir or storage_url)".into())
        }
        settings::Backend::Memory => Engine::open_memory(config).map_err(|e| e.to_string()),
        settings::Backend::Postgresql => {
            let url = settings.storage_url.as_deref().ok_or("storage_backend postgresql needs storage_url")?;
            Engine::open_postgres(url, config).map_err(|e| e.to_string())
        }
    }
}

/// `userid_hmac_secret`, or one generated on first start and kept in the data directory.
pub fn hmac_secret(settings: &Settings) -> Result<String, String> {
    if let Some(secret) = &settings.userid_hmac_secret {
        return Ok(secret.clone());
    }
    let path = settings.data_dir.join("userid_hmac_secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim();
        // Written atomically now; an empty one is a copy or an older version's torn write, and
        // would silently give every user another id.
        if secret.is_empty() {
            return Err(format!(
                "{} is empty: restore it from a backup, or remove it to generate a new secret (user ids change)",
                path.display()
            ));
        }
        return Ok(secret.to_owned());
    }
    if settings.storage_backend == settings::Backend::Memory {
        tracing::warn!("userid_hmac_secret is not set: using a random secret for this process");
        return Ok(hex::encode(rand::random::<[u8; 32]>()));
    }
    tidemark_engine::disk::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", settings.data_dir.display()))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    tidemark_engine::disk::write_atomic(&path, secret.as_bytes(), true)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::warn!(path = %path.display(), "userid_hmac_secret is not set: generated one and kept it in the data directory");
    Ok(secret)
}

/// Serves until `shutdown` resolves, then stops the writer after it has committed.
///
/// Each connection is served by hyper with a header-read timeout (a client that sends no
/// complete request head in `header_read_timeout_seconds` is cut off) and WebSocket upgrades.
/// Once told to stop: no new connections, streams closed with their cursors (so clients resume
/// elsewhere with no gap), in-flight requests finished; then the writer commits and flushes
/// what it was given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let engine = state.engine.clone();
    // Started before the first request, so their cursors predate every write they must see.
    let listeners = listeners::start(&engine, &state.settings, &state.registry);
    let header_timeout = state.settings.header_read_timeout;
    // Only rate limiting and the accounts' failed-login limits read the peer's address.
    let wants_peer = state.settings.rate_limit_per_second > 0.0
        || state.settings.auth_policies.iter().any(|p| p.kind == settings::AuthPolicyKind::Account);
    let streams = Arc::clone(&state.shutdown);
    let open_streams = Arc::clone(&state.stream_connections);
    let router = app(state);
    // Connections hold a receiver: all gone means all served.
    let (stop_connections, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small writes (stream frames, short responses) go out at once instead of waiting for the
        // previous segment's ACK (Nagle), as WebSocket servers do.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if wants_peer {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            }
            router.clone().oneshot(request)
        });
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            // WebSockets over HTTP/2 (RFC 8441).
            builder.http2().enable_connect_protocol();
            let mut connection = std::pin::pin!(builder.serve_connection_with_upgrades(TokioIo::new(tcp), service));
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(err) = served {
                            tracing::trace!(error = %err, "connection ended");
                        }
                        break;
                    }
                    Ok(()) = stopping.changed() => connection.as_mut().graceful_shutdown(),
                }
            }
        });
    }
    drop(listener);
    drop(stopping);
    let _ = streams.send(true);
    // Streams say goodbye (a close frame with their cursor) before the process may end.
    let goodbyes = async {
        while open_streams.load(std::sync::atomic::Ordering::Acquire) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), goodbyes).await;
    let _ = stop_connections.send(true);
    // Every connection task holds a receiver until it is done.
    stop_connections.closed().await;
    for handle in listeners {
        handle.stop().await;
    }
    engine.close();
    Ok(())
}
