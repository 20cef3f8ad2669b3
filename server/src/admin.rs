//! kinto.plugins.admin: the Kinto Admin single-page app at `/v1/admin/`, as Kinto serves it:
//! `index.html` with the admin's own Content-Security-Policy, the other files by extension,
//! `/v1/admin` redirected to `/v1/admin/`. The build comes from `admin_assets_path` (no copy
//! is bundled: `tests/clients/admin/fetch.sh DIR` extracts the one Kinto 25.0.0 ships); without
//! it, a page says how to get one.

use std::path::{Component, Path, PathBuf};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Kinto's CSP for the admin page: its own scripts and styles only.
const ADMIN_CSP: &str =
    "default-src 'self'; img-src data: *; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'";

const MISSING: &str = "<html>\n<body>\n<h1>Kinto Admin</h1>\n<p>No build of the Kinto Admin is configured. \
    Extract one with <code>tests/clients/admin/fetch.sh DIR</code> (from the Tidemark repository) and set \
    <code>kinto.admin_assets_path = DIR</code>, then restart.</p>\n</body>\n</html>\n";

pub struct Admin {
    dir: Option<PathBuf>,
    version: String,
}

impl Admin {
    pub fn new(dir: Option<PathBuf>) -> Admin {
        let version = dir
            .as_deref()
            .and_then(|dir| std::fs::read_to_string(dir.join("VERSION")).ok())
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Admin { dir, version }
    }

    /// The `admin` capability of `GET /v1/`.
    pub fn capability(&self) -> Value {
        json!({
            "version": self.version,
            "description": "Serves the admin console.",
            "url": "https://github.com/Kinto/kinto-admin/",
        })
    }

    /// A file below `/admin/` (`""` is the page itself).
    pub fn serve(&self, subpath: &str) -> Response {
        let Some(dir) = &self.dir else { return page(MISSING.as_bytes().to_vec()) };
        if subpath.is_empty() || subpath == "index.html" {
            return match std::fs::read(dir.join("index.html")) {
                Ok(bytes) => page(bytes),
                Err(err) => {
                    tracing::error!(path = %dir.display(), error = %err, "admin_assets_path has no index.html");
                    page(MISSING.as_bytes().to_vec())
                }
            };
        }
        let relative = Path::new(subpath);
        // Only plain names below the directory: no `..`, no absolute paths.
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return not_found();
        }
        match std::fs::read(dir.join(relative)) {
            Ok(bytes) => {
                let mut response = (StatusCode::OK, bytes).into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type(relative)));
                // Vite names each asset after its content: the same name never changes.
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000"));
                response
            }
            Err(_) => not_found(),
        }
    }
}

fn page(bytes: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ADMIN_CSP));
    response
}

fn not_found() -> Response {
    crate::error::render(&tidemark_protocol::ApiError::unknown_url()).into_response()
}

fn media_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=UTF-8",
        "js" | "mjs" => "text/javascript; charset=UTF-8",
        "css" => "text/css; charset=UTF-8",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" | "" => "text/plain; charset=UTF-8",
        _ => "application/octet-stream",
    }
}
