//! URL → endpoint, and the methods each endpoint allows.

use tidemark_protocol::ApiError;

use crate::resources::{Address, Node, ResourceKind, ACCOUNT, BUCKET, COLLECTION, GROUP, RECORD};

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
            Route::Permissions => "HEAD, GET, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        }
    }

    pub fn allows(&self, method: &str) -> bool {
        self.allowed().split(", ").any(|m| m == method)
    }
}

fn child_kind(parent: &ResourceKind, segment: &str) -> Option<&'static ResourceKind> {
    [&BUCKET, &COLLECTION, &GROUP, &RECORD]
        .into_iter()
        .find(|kind| kind.plural == segment && kind.parent.map(|p| p.name) == Some(parent.name))
}

/// Which optional endpoints (plugins) exist.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    pub flush: bool,
    pub accounts: bool,
    pub permissions: bool,
}

/// Parses the decoded segments under `/v1`. Ids are validated by the handlers: the target's
/// (after authorization for GETs), and a parent with an invalid id simply does not exist.
pub fn parse(segments: &[String], endpoints: Endpoints) -> Result<Route, ApiError> {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let flush_enabled = endpoints.flush;
    match parts.as_slice() {
        [] => return Ok(Route::Hello),
        ["__heartbeat__"] => return Ok(Route::Heartbeat),
        ["__lbheartbeat__"] => return Ok(Route::LbHeartbeat),
        ["__version__"] => return Ok(Route::Version),
        ["contribute.json"] => return Ok(Route::Contribute),
        ["batch"] => return Ok(Route::Batch),
        ["__flush__"] if flush_enabled => return Ok(Route::Flush),
        ["permissions"] if endpoints.permissions => return Ok(Route::Permissions),
        ["accounts"] if endpoints.accounts => {
            return Ok(Route::List(Address { kind: &ACCOUNT, parents: vec![], id: None }))
        }
        ["accounts", id] if endpoints.accounts => {
            return Ok(Route::Object(Address { kind: &ACCOUNT, parents: vec![], id: Some((*id).to_owned()) }))
        }
        _ => {}
    }
    let (first, rest) = parts.split_first().ok_or_else(ApiError::unknown_url)?;
    if *first != BUCKET.plural {
        return Err(ApiError::unknown_url());
    }
    let mut kind: &'static ResourceKind = &BUCKET;
    let mut parents: Vec<Node> = Vec::new();
    let mut rest = rest;
    loop {
        match rest {
            [] => return Ok(Route::List(Address { kind, parents, id: None })),
            [id] => return Ok(Route::Object(Address { kind, parents, id: Some((*id).to_owned()) })),
            [id, plural, tail @ ..] => {
                let child = child_kind(kind, plural).ok_or_else(ApiError::unknown_url)?;
                // A parent with an invalid id is one that does not exist: the handlers answer
                // as Kinto does for any missing parent (a denial to whoever may not know).
                let parent_uri = parents.last().map(|p| p.uri.as_str()).unwrap_or("");
                let uri = tidemark_engine::object_uri(parent_uri, kind.name, &uri_safe(id));
                parents.push(Node { kind, id: (*id).to_owned(), uri });
                kind = child;
                rest = tail;
            }
        }
    }
}

/// An id as it may stand in a URI the engine looks up: a `/` or NUL in an (invalid) id would
/// make it name another object's URI or key, so they are escaped. Valid ids are unchanged.
pub fn uri_safe(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains(['/', '\0', '%']) {
        std::borrow::Cow::Owned(id.replace('%', "%25").replace('/', "%2F").replace('\0', "%00"))
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn records_route_carries_its_parents() {
        let route = parse(&segs("/buckets/b/collections/c/records/r1"), Endpoints::default());
        let Ok(Route::Object(address)) = route else { panic!("not an object route") };
        assert_eq!(address.kind.name, "record");
        assert_eq!(address.parent_uri(), "/buckets/b/collections/c");
        assert_eq!(address.id.as_deref(), Some("r1"));
    }

    #[test]
    fn unknown_and_invalid_paths_are_404() {
        let none = Endpoints::default();
        assert!(matches!(parse(&segs("/nope"), none), Err(e) if e.errno as u16 == 111));
        assert!(matches!(parse(&segs("/buckets/b/records"), none), Err(e) if e.errno as u16 == 111));
        let decoded = ["buckets", "a/collections/x", "collections"].map(str::to_owned);
        let Ok(Route::List(address)) = parse(&decoded, none) else {
            panic!("an invalid parent id is a missing parent, not a routing error")
        };
        // Never the URI of collection x in bucket a.
        assert_eq!(address.parent_uri(), "/buckets/a%2Fcollections%2Fx");
        assert!(parse(&segs("/__flush__"), none).is_err());
        assert!(parse(&segs("/accounts/bob"), none).is_err());
    }
}
