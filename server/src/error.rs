//! The one place a failure becomes a Kinto error response.

use axum::http::StatusCode;
use tidemark_engine::EngineError;
use tidemark_protocol::{ApiError, Errno};

use crate::response::ApiResponse;

/// Retry-After for 409/503, Kinto's default.
pub const RETRY_AFTER_SECONDS: u64 = 3;

pub fn render(err: &ApiError) -> ApiResponse {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = crate::response::Body::RawJson(tidemark_protocol::json::error_to_vec(&err.body()));
    let mut response = ApiResponse { status, headers: Default::default(), body };
    for (name, value) in &err.headers {
        response.set_header(name, value);
    }
    response
}

/// Engine failures that reach a client. Expectation failures are handled by the handlers
/// (they retry or answer 412) and only land here if they escape a retry loop.
pub fn from_engine(err: EngineError) -> ApiError {
    match err {
        EngineError::PreconditionFailed { .. } | EngineError::TimestampTaken(_) => {
            ApiError::conflict(RETRY_AFTER_SECONDS)
        }
        EngineError::UnknownParent(uri) => {
            let (resource, id) = tidemark_engine::split_uri(&uri)
                .map(|(_, resource, id)| (resource.to_owned(), id.to_owned()))
                .unwrap_or_else(|| ("bucket".into(), uri.clone()));
            ApiError::parent_not_found(&resource, &id)
        }
        EngineError::TooLarge { limit, .. } => ApiError::too_large(limit),
        EngineError::InvalidCommand(message) => {
            ApiError::new(400, Errno::InvalidParameters, Some(message)).with_error("Invalid parameters")
        }
        EngineError::Storage(_) | EngineError::Corrupt(_) | EngineError::Unavailable(_) | EngineError::Closed => {
            tracing::error!(error = %err, "storage failure");
            ApiError::backend_unavailable(RETRY_AFTER_SECONDS)
        }
    }
}

trait WithError {
    fn with_error(self, error: &str) -> Self;
}

impl WithError for ApiError {
    fn with_error(mut self, error: &str) -> Self {
        self.error = error.to_owned();
        self
    }
}
