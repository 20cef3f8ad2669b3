//! Application contexts: one service, many apps. A request's `Kinto-App-Id` (and
//! `Kinto-App-Env`, `production` by default) selects a namespace of buckets of its own, isolated
//! in storage, permissions, streams and history; without the header, requests use the default
//! namespace, exactly as plain Kinto.
//!
//! A namespace is a URI prefix of one segment (`/@notes~production`) in front of every object
//! URI of the app, so the engine keeps apps apart by their keys alone. Clients never see it:
//! URIs and principals that name objects (`/buckets/b/groups/g` in an ACL) are translated on the
//! way in and out.

use axum::http::HeaderMap;
use tidemark_engine::Acl;
use tidemark_protocol::{ApiError, Location};

use crate::settings::Settings;

pub const DEFAULT_ENV: &str = "production";

/// The namespace prefix of a request (`""` for the default namespace).
pub fn of(headers: &HeaderMap, settings: &Settings) -> Result<String, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let Some(app) = header("kinto-app-id") else {
        if settings.app_id_required {
            return Err(invalid("Kinto-App-Id", "This service serves applications: Kinto-App-Id is required"));
        }
        return Ok(String::new());
    };
    let env = header("kinto-app-env").unwrap_or(DEFAULT_ENV);
    for (name, value) in [("Kinto-App-Id", app), ("Kinto-App-Env", env)] {
        let valid = value.len() <= 64 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(invalid(name, "Expected 1 to 64 letters, digits, '-' or '_'"));
        }
    }
    if !settings.app_ids.is_empty() && !settings.app_ids.iter().any(|allowed| allowed == app) {
        return Err(invalid("Kinto-App-Id", &format!("Unknown application '{app}'")));
    }
    Ok(format!("/@{app}~{env}"))
}

fn invalid(header: &str, why: &str) -> ApiError {
    ApiError::invalid_one(Location::Header, Some(header), why.to_owned())
}

/// Does `uri` (an object URI in storage) belong to namespace `ns`?
pub fn contains(ns: &str, uri: &str) -> bool {
    if ns.is_empty() {
        return !uri.starts_with("/@");
    }
    uri.strip_prefix(ns).is_some_and(|rest| rest.starts_with('/'))
}

/// A principal as a client of namespace `ns` wrote it, as stored: object URIs get the prefix.
pub fn to_storage(ns: &str, principal: &str) -> String {
    if !ns.is_empty() && principal.starts_with('/') && !principal.starts_with("/@") {
        format!("{ns}{principal}")
    } else {
        principal.to_owned()
    }
}

/// A stored URI or principal as a client of namespace `ns` reads it.
pub fn to_wire<'a>(ns: &str, stored: &'a str) -> &'a str {
    if ns.is_empty() {
        return stored;
    }
    stored.strip_prefix(ns).filter(|rest| rest.starts_with('/')).unwrap_or(stored)
}

pub fn acl_to_storage(ns: &str, acl: Acl) -> Acl {
    if ns.is_empty() {
        return acl;
    }
    acl.into_iter().map(|(perm, principals)| (perm, principals.iter().map(|p| to_storage(ns, p)).collect())).collect()
}

pub fn acl_to_wire(ns: &str, acl: &Acl) -> Acl {
    acl.iter()
        .map(|(perm, principals)| (perm.clone(), principals.iter().map(|p| to_wire(ns, p).to_owned()).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_translate_object_principals_only() {
        let ns = "/@notes~production";
        assert_eq!(to_storage(ns, "/buckets/b/groups/g"), "/@notes~production/buckets/b/groups/g");
        assert_eq!(to_storage(ns, "account:bob"), "account:bob");
        assert_eq!(to_storage("", "/buckets/b/groups/g"), "/buckets/b/groups/g");
        assert_eq!(to_wire(ns, "/@notes~production/buckets/b"), "/buckets/b");
        assert_eq!(to_wire(ns, "/@other~production/buckets/b"), "/@other~production/buckets/b");
        assert!(contains(ns, "/@notes~production/buckets/b"));
        assert!(!contains(ns, "/@notes~productionx/buckets/b"));
        assert!(!contains("", "/@notes~production/buckets/b"));
        assert!(contains("", "/buckets/b"));
    }
}
