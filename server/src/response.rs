//! A response as handlers build it, and its rendering to HTTP.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tidemark_protocol::json;

#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    /// JSON already rendered the way Kinto renders it.
    RawJson(Vec<u8>),
    /// Another media type (the metrics' text format).
    Other {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
    Empty,
}

#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

impl ApiResponse {
    pub fn json(status: StatusCode, body: Value) -> Self {
        ApiResponse { status, headers: HeaderMap::new(), body: Body::Json(body) }
    }

    pub fn empty(status: StatusCode) -> Self {
        ApiResponse { status, headers: HeaderMap::new(), body: Body::Empty }
    }

    /// Adds a header; values that are not valid header text are skipped (they come from our
    /// own formatting, never from a client).
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.set_header(name, value);
        self
    }

    pub fn set_header(&mut self, name: &str, value: impl AsRef<str>) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value.as_ref())) {
            self.headers.insert(name, value);
        }
    }

    /// `ETag` and `Last-Modified` for a timestamp.
    pub fn timestamp_headers(self, ts: u64) -> Self {
        self.header("ETag", format!("\"{ts}\"")).header("Last-Modified", http_date(ts))
    }

    /// The body as bytes (Kinto's JSON rendering).
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Json(value) => json::to_vec(value),
            Body::RawJson(bytes) => bytes.clone(),
            Body::Other { bytes, .. } => bytes.clone(),
            Body::Empty => Vec::new(),
        }
    }
}

/// IMF-fixdate of an epoch-ms timestamp, truncated to the second.
pub fn http_date(ts_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts_ms - ts_ms % 1000);
    httpdate::fmt_http_date(time)
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        let (bytes, content_type) = match self.body {
            Body::Json(value) => (json::to_vec(&value), Some("application/json")),
            Body::RawJson(bytes) => (bytes, Some("application/json")),
            Body::Other { bytes, content_type } => (bytes, Some(content_type)),
            Body::Empty => (Vec::new(), None),
        };
        let mut response = (self.status, bytes).into_response();
        if let Some(content_type) = content_type {
            response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        response.headers_mut().extend(self.headers);
        response
    }
}
