//! Kinto's request summary line (`request.summary`, off unless asked for): method, path, code,
//! time, user id, errno, agent, language, and beyond Kinto the seq of the last event the request
//! wrote, gathered while the request runs.

use std::cell::Cell;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use tidemark_engine::Event;

tokio::task_local! {
    /// The seq of the newest event the current request committed.
    static WRITTEN: Cell<Option<u64>>;
}

/// Whether summary lines are wanted (they cost a few copies per request).
pub fn wanted() -> bool {
    tracing::enabled!(target: "request.summary", tracing::Level::INFO)
}

/// Who made the request, put on the response by the router for the summary line.
#[derive(Clone)]
pub struct Caller(pub Option<String>);

/// Notes committed events for the summary line of the request that wrote them (nothing
/// outside a summarised request).
pub fn written(events: &[Arc<Event>]) {
    if let Some(seq) = events.iter().map(|e| e.seq).max() {
        let _ = WRITTEN.try_with(|cell| cell.set(cell.get().max(Some(seq))));
    }
}

/// What the summary needs from the request, taken before it is handed on.
pub struct Summary {
    method: String,
    path: String,
    agent: String,
    lang: String,
}

impl Summary {
    pub fn of(request: &axum::extract::Request) -> Summary {
        let header = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).unwrap_or("");
        Summary {
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            agent: header(header::USER_AGENT).to_owned(),
            lang: header(header::ACCEPT_LANGUAGE).to_owned(),
        }
    }

    /// Runs the request, noting what it wrote, then logs the line.
    pub async fn run(self, answer: impl std::future::Future<Output = Response>) -> Response {
        let started = std::time::Instant::now();
        let (response, written) = WRITTEN
            .scope(Cell::new(None), async {
                let response = answer.await;
                (response, WRITTEN.with(Cell::get))
            })
            .await;
        let (response, errno) = errno_of(response).await;
        let uid = response.extensions().get::<Caller>().and_then(|c| c.0.clone());
        tracing::info!(
            target: "request.summary",
            method = %self.method,
            path = %self.path,
            code = response.status().as_u16(),
            t = started.elapsed().as_secs_f64() * 1000.0,
            uid = uid.as_deref().unwrap_or(""),
            errno = errno,
            agent = %self.agent,
            lang = %self.lang,
            seq = written,
        );
        response
    }
}

/// The errno of an error answer (its JSON body is small and already whole).
async fn errno_of(response: Response) -> (Response, Option<u64>) {
    if response.status().as_u16() < 400 {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (Response::from_parts(parts, axum::body::Body::empty()), None);
    };
    let errno = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["errno"].as_u64());
    (Response::from_parts(parts, axum::body::Body::from(bytes)), errno)
}
