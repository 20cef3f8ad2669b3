//! Kinto's error vocabulary: HTTP status + errno + reason, and the validation-detail rules.
//!
//! Every layer turns its failures into an [`ApiError`]; the server renders it in one place as
//! `{code, errno, error, message, details}`.

use serde_json::{json, Map, Value};

/// Kinto's stable application error numbers (kinto-protocol.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    MissingAuthToken = 104,
    InvalidAuthToken = 105,
    BadJson = 106,
    InvalidParameters = 107,
    MissingParameters = 108,
    InvalidPostedData = 109,
    InvalidResourceId = 110,
    MissingResource = 111,
    MissingContentLength = 112,
    RequestTooLarge = 113,
    ModifiedMeanwhile = 114,
    MethodNotAllowed = 115,
    VersionNotAvailable = 116,
    ClientReachedCapacity = 117,
    Forbidden = 121,
    ConstraintViolated = 122,
    Backend = 201,
    ServiceDeprecated = 202,
    Undefined = 999,
}

/// Where a validation problem was found, as Kinto names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Body,
    Querystring,
    Header,
    Path,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Body => "body",
            Location::Querystring => "querystring",
            Location::Header => "header",
            Location::Path => "path",
        }
    }
}

/// One `{location, name, description}` entry of a 400's `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub location: Location,
    /// `None` renders as JSON `null`; `Some("")` as the empty string.
    pub name: Option<String>,
    pub description: String,
}

impl Invalid {
    pub fn new(location: Location, name: Option<&str>, description: impl Into<String>) -> Self {
        Invalid { location, name: name.map(str::to_owned), description: description.into() }
    }

    fn to_json(&self) -> Value {
        json!({
            "location": self.location.as_str(),
            "name": self.name,
            "description": self.description,
        })
    }
}

/// An error as the client will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub errno: Errno,
    /// The `error` field: the reason phrase, or "Invalid parameters" for validation errors.
    pub error: String,
    pub message: Option<String>,
    pub details: Option<Value>,
    /// The `info` link, only on 500s.
    pub info: Option<String>,
    /// Extra response headers (`WWW-Authenticate`, `Allow`, `Retry-After`, `ETag`...).
    pub headers: Vec<(String, String)>,
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl ApiError {
    pub fn new(status: u16, errno: Errno, message: Option<String>) -> Self {
        ApiError {
            status,
            errno,
            error: reason_phrase(status).to_owned(),
            message,
            details: None,
            info: None,
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// A 400 errno 107 built from validation entries, with Kinto's message rule (§7.3).
    pub fn invalid(entries: Vec<Invalid>) -> Self {
        Self::invalid_with_status(400, entries)
    }

    /// One validation entry.
    pub fn invalid_one(location: Location, name: Option<&str>, description: impl Into<String>) -> Self {
        Self::invalid(vec![Invalid::new(location, name, description)])
    }

    /// Validation error with another status (406 for Accept, 415 for Content-Type).
    pub fn invalid_with_status(status: u16, mut entries: Vec<Invalid>) -> Self {
        entries.sort_by_key(|entry| name_key(&entry.name));
        let message = entries.first().map(|first| match &first.name {
            Some(name) if first.description.contains(name.as_str()) => first.description.clone(),
            Some(name) => format!("{} in {}: {}", name, first.location.as_str(), first.description),
            None => format!("{}: {}", first.location.as_str(), first.description),
        });
        let details = Value::Array(entries.iter().map(Invalid::to_json).collect());
        ApiError {
            status,
            errno: Errno::InvalidParameters,
            error: "Invalid parameters".to_owned(),
            message,
            details: Some(details),
            info: None,
            headers: Vec::new(),
        }
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, Errno::MissingAuthToken, Some("Please authenticate yourself to use this endpoint.".into()))
            .with_header("WWW-Authenticate", "Basic realm=\"Realm\"")
    }

    pub fn forbidden() -> Self {
        ApiError::new(403, Errno::Forbidden, Some("This user cannot access this resource.".into()))
    }

    /// The targeted object does not exist (errno 110, no message).
    pub fn object_not_found(resource_name: &str, id: &str) -> Self {
        ApiError::new(404, Errno::InvalidResourceId, None)
            .with_details(json!({"id": id, "resource_name": resource_name}))
    }

    /// A parent (e.g. the collection of records) does not exist (errno 111, no message).
    pub fn parent_not_found(resource_name: &str, id: &str) -> Self {
        ApiError::new(404, Errno::MissingResource, None).with_details(json!({"id": id, "resource_name": resource_name}))
    }

    pub fn unknown_url() -> Self {
        ApiError::new(404, Errno::MissingResource, Some("The resource you are looking for could not be found.".into()))
    }

    pub fn version_not_available() -> Self {
        ApiError::new(
            404,
            Errno::VersionNotAvailable,
            Some("The requested API version is not available on this server.".into()),
        )
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        let err = ApiError::new(405, Errno::MethodNotAllowed, Some("Method not allowed on this endpoint.".into()));
        if allow.is_empty() {
            err
        } else {
            err.with_header("Allow", allow)
        }
    }

    /// 412 with the current object (without permissions) when there is one.
    pub fn modified_meanwhile(existing: Option<Value>) -> Self {
        let err = ApiError::new(412, Errno::ModifiedMeanwhile, Some("Resource was modified meanwhile".into()));
        match existing {
            Some(obj) => err.with_details(json!({ "existing": obj })),
            None => err,
        }
    }

    pub fn conflict(retry_after: u64) -> Self {
        ApiError::new(409, Errno::ConstraintViolated, Some("Integrity constraint violated, please retry.".into()))
            .with_header("Retry-After", retry_after.to_string())
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            Errno::RequestTooLarge,
            Some(format!("Request body is larger than the limit of {limit} bytes.")),
        )
    }

    pub fn backend_unavailable(retry_after: u64) -> Self {
        ApiError::new(
            503,
            Errno::Backend,
            Some("Service temporary unavailable due to overloading or maintenance, please retry later.".into()),
        )
        .with_header("Retry-After", retry_after.to_string())
    }

    pub fn internal(info_link: &str) -> Self {
        let mut err = ApiError::new(
            500,
            Errno::Undefined,
            Some("A programmatic error occurred, developers have been informed.".into()),
        );
        err.info = Some(info_link.to_owned());
        err
    }

    /// The JSON body Kinto sends: `message` and `details` omitted when absent.
    pub fn body(&self) -> Value {
        let mut map = Map::new();
        map.insert("code".into(), json!(self.status));
        map.insert("errno".into(), json!(self.errno as u16));
        map.insert("error".into(), json!(self.error));
        if let Some(message) = &self.message {
            map.insert("message".into(), json!(message));
        }
        if let Some(info) = &self.info {
            map.insert("info".into(), json!(info));
        }
        if let Some(details) = &self.details {
            map.insert("details".into(), details.clone());
        }
        Value::Object(map)
    }
}

fn name_key(name: &Option<String>) -> String {
    // Kinto sorts entries by str(name): None renders as "None".
    name.clone().unwrap_or_else(|| "None".to_owned())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message.as_deref().unwrap_or(&self.error))
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_prefixes_name_and_location_unless_contained() {
        let err = ApiError::invalid_one(Location::Querystring, Some("_limit"), "\"abc\" is not a number");
        assert_eq!(err.message.as_deref(), Some("_limit in querystring: \"abc\" is not a number"));
        let err = ApiError::invalid_one(Location::Path, None, "Invalid object id");
        assert_eq!(err.message.as_deref(), Some("path: Invalid object id"));
        let err = ApiError::invalid_one(Location::Body, Some("data"), "Provide at least one of data or permissions");
        assert_eq!(err.message.as_deref(), Some("Provide at least one of data or permissions"));
    }

    #[test]
    fn body_omits_absent_message_and_details() {
        let body = ApiError::object_not_found("record", "r1").body();
        assert_eq!(
            body,
            json!({"code":404,"errno":110,"error":"Not Found","details":{"id":"r1","resource_name":"record"}})
        );
    }
}
