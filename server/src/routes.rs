//! URL → endpoint, and the methods each endpoint allows.

use tidemark_protocol::ApiError;

use crate::toolkit::{Address, Registry};

#[derive(Debug, Clone)]
pub enum Route {
    Hello,
    Heartbeat,
    LbHeartbeat,
    Version,
    Contribute,
    Batch,
    Flush,
    /// `GET /v1/permissions`.
    Permissions,
    /// `GET /v1/__metrics__` (kinto.plugins.prometheus).
    Metrics,
    /// `GET /v1/__api__`: the OpenAPI description.
    Api,
    /// `GET /v1/buckets/<bid>/history` (kinto.plugins.history).
    History(String),
    /// `GET /v1/buckets/<bid>/snapshot/collections/<cid>@<timestamp>` (kinto.plugins.history).
    Snapshot {
        bucket: String,
        at: String,
    },
    /// `GET /v1/openid/<provider>/login` (`token: false`) or `…/token`.
    OpenId {
        provider: String,
        token: bool,
    },
    List(Address),
    Object(Address),
}

pub const OBJECT_METHODS: &str = "GET, HEAD, PUT, PATCH, DELETE, OPTIONS";
pub const LIST_METHODS: &str = "HEAD, GET, POST, DELETE, OPTIONS";

impl Route {
    /// The `Allow` header value for this endpoint.
    pub fn allowed(&self) -> &'static str {
        match self {
            Route::List(_) => LIST_METHODS,
            Route::Object(_) => OBJECT_METHODS,
            Route::Batch => "POST, OPTIONS",
            Route::Flush => "POST, OPTIONS",
            Route::History(_) => "GET, HEAD, DELETE, OPTIONS",
            Route::Permissions | Route::Snapshot { .. } => "HEAD, GET, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        }
    }

    pub fn allows(&self, method: &str) -> bool {
        self.allowed().split(", ").any(|m| m == method)
    }
}

/// Which optional endpoints (plugins) exist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    pub flush: bool,
    pub metrics: bool,
    pub history: bool,
    pub openid: bool,
    pub permissions: bool,
}

/// Parses the decoded segments under the version prefix: the utility endpoints, then the
/// registry's resources.
pub fn parse(segments: &[String], endpoints: Endpoints, registry: &Registry) -> Result<Route, ApiError> {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [] => Ok(Route::Hello),
        ["__heartbeat__"] => Ok(Route::Heartbeat),
        ["__lbheartbeat__"] => Ok(Route::LbHeartbeat),
        ["__version__"] => Ok(Route::Version),
        ["__api__"] => Ok(Route::Api),
        ["contribute.json"] => Ok(Route::Contribute),
        ["batch"] => Ok(Route::Batch),
        ["__flush__"] if endpoints.flush => Ok(Route::Flush),
        ["__metrics__"] if endpoints.metrics => Ok(Route::Metrics),
        ["permissions"] if endpoints.permissions => Ok(Route::Permissions),
        ["buckets", bucket, "history"] if endpoints.history => Ok(Route::History((*bucket).to_owned())),
        ["buckets", bucket, "snapshot", "collections", at] if endpoints.history => {
            Ok(Route::Snapshot { bucket: (*bucket).to_owned(), at: (*at).to_owned() })
        }
        ["openid", provider, step @ ("login" | "token")] if endpoints.openid => {
            Ok(Route::OpenId { provider: (*provider).to_owned(), token: *step == "token" })
        }
        _ => {
            let address = registry.require(&parts)?;
            Ok(if address.id.is_some() { Route::Object(address) } else { Route::List(address) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn unknown_and_disabled_paths_are_404() {
        let none = Endpoints::default();
        let registry = crate::kinto::registry(false);
        assert!(matches!(parse(&segs("/nope"), none, &registry), Err(e) if e.errno as u16 == 111));
        assert!(matches!(parse(&segs("/buckets/b/records"), none, &registry), Err(e) if e.errno as u16 == 111));
        assert!(parse(&segs("/__flush__"), none, &registry).is_err());
        assert!(parse(&segs("/accounts/bob"), none, &registry).is_err(), "accounts are a plugin");
        let with_accounts = crate::kinto::registry(true);
        assert!(matches!(parse(&segs("/accounts/bob"), none, &with_accounts), Ok(Route::Object(_))));
    }
}
