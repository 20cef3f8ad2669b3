//! Server-sent events: `GET /v1/buckets/{bid}[/collections/{cid}]/changes/stream`, the same
//! change frames as the WebSocket for clients that cannot hold one; resume with
//! `Last-Event-ID` (or `?since=`).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tidemark_protocol::stream::{self, Filter, Since};
use tidemark_protocol::ApiError;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::{Outgoing, Session};
use crate::auth::Identity;
use crate::error::render;
use crate::state::AppState;

/// Is this an SSE stream path? Returns (bucket, collection).
pub fn parse_path(segments: &[String]) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["buckets", b, "changes", "stream"] => Some(((*b).to_owned(), None)),
        ["buckets", b, "collections", c, "changes", "stream"] => Some(((*b).to_owned(), Some((*c).to_owned()))),
        _ => None,
    }
}

pub async fn serve(
    state: AppState,
    identity: Identity,
    bucket: String,
    collection: Option<String>,
    query: &str,
    last_event_id: Option<&str>,
) -> Response {
    match open(state, identity, bucket, collection, query, last_event_id) {
        Ok(response) => response,
        Err(err) => render(&err).into_response(),
    }
}

fn open(
    state: AppState,
    identity: Identity,
    bucket: String,
    collection: Option<String>,
    query: &str,
    last_event_id: Option<&str>,
) -> Result<Response, ApiError> {
    // The caller must be able to read the stream's target as a whole.
    let authz = state.authz(&identity);
    let mut segments = vec!["buckets", bucket.as_str()];
    if let Some(c) = &collection {
        segments.extend(["collections", c.as_str()]);
    }
    let chain =
        state.registry.require(&segments)?.in_namespace(&identity.namespace).chain_with(segments[segments.len() - 1]);
    let allowed = authz.allowed(&chain, "read")?;
    if !allowed {
        return Err(authz.deny());
    }
    let pairs = tidemark_protocol::query::parse_pairs(query)?;
    let mut since = Since::Now;
    let mut filters = Vec::new();
    for (key, value) in &pairs {
        match key.as_str() {
            "since" | "_since" => {
                since = stream::parse_since(Some(&serde_json::Value::String(value.clone()))).map_err(|why| {
                    ApiError::invalid_one(tidemark_protocol::Location::Querystring, Some("since"), why)
                })?;
            }
            _ => filters.push(format!("{key}={value}")),
        }
    }
    if let Some(seq) = last_event_id.and_then(stream::parse_cursor) {
        since = Since::Cursor(seq);
    }
    let filter = Filter {
        bucket: Some(bucket),
        collection: collection.clone(),
        resource_name: collection.as_ref().map(|_| "record".to_owned()),
        query: (!filters.is_empty()).then(|| filters.join("&")),
        ..Filter::default()
    };
    let hub = state.hub();
    let mut changes = hub.subscribe();
    let mut session = Session::new(state, identity);
    let first = session.subscribe("sse".into(), filter, since, false)?;
    let (tx, rx) = mpsc::channel::<Outgoing>(256);
    super::spawn(async move {
        let _connection = crate::metrics::StreamConnection::open(&session.state.stream_connections);
        // Skip the `subscribed` frame: SSE has no use for it.
        for frame in first.into_iter().skip(1) {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
        let mut stopping = session.state.shutdown.subscribe();
        loop {
            let received = tokio::select! {
                received = changes.recv() => received,
                // The server is going away: the client resumes elsewhere from Last-Event-ID.
                _ = stopping.changed() => return,
            };
            let frames = match received {
                Ok(change) => match session.on_change(&change) {
                    Ok(frames) => frames,
                    Err(_) => return,
                },
                // The next change fills the gap from the log.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            for frame in frames {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        let event = SseEvent::default().id(stream::cursor(frame.cursor)).event("change").data(frame.text);
        Some((Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
