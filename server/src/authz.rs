//! Authorization: Kinto's permission inheritance (kinto-protocol.md §8.4–8.6).
//!
//! A principal has permission P on an object when it appears in one of the ACEs that grant P
//! (the object's own ACL or an ancestor's, per the registry's inheritance), or in the settings'
//! `<resource>_<perm>_principals`. Objects of per-user resources belong to their namespace's
//! user alone.

use std::collections::HashMap;

use tidemark_engine::Engine;
use tidemark_protocol::ApiError;

use crate::auth::Identity;
use crate::error::from_engine;
use crate::toolkit::{user_scope, Node, Registry, Resource};

/// Settings-granted principals, keyed `<resource>_<perm>` (`record_read`, `bucket_create`…).
#[derive(Debug, Clone, Default)]
pub struct SettingsGrants(pub HashMap<String, Vec<String>>);

impl SettingsGrants {
    fn grants(&self, key: &str, identity: &Identity) -> bool {
        self.0.get(key).is_some_and(|allowed| allowed.iter().any(|p| identity.principals.contains(p)))
    }
}

pub struct Authz<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Registry,
    pub grants: &'a SettingsGrants,
    pub identity: &'a Identity,
}

impl Authz<'_> {
    fn in_ace(&self, uri: &str, perm: &str) -> Result<bool, ApiError> {
        let acl = self.engine.acl(uri).map_err(from_engine)?;
        Ok(acl.get(perm).is_some_and(|principals| principals.iter().any(|p| self.identity.principals.contains(p))))
    }

    fn any_ace(&self, chain: &[Node], aces: &[(String, String)], skip_level: Option<&str>) -> Result<bool, ApiError> {
        for (level, perm) in aces {
            if Some(level.as_str()) == skip_level {
                continue;
            }
            if let Some(node) = chain.iter().find(|n| n.kind.name == *level) {
                if self.in_ace(&node.uri, perm)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// May the caller exercise `perm` on the last node of `chain`?
    pub fn allowed(&self, chain: &[Node], perm: &str) -> Result<bool, ApiError> {
        let Some(target) = chain.last() else {
            return Ok(false);
        };
        if target.kind.is_per_user() {
            return Ok(self.owns(&target.uri));
        }
        if self.grants.grants(&settings_key(&target.kind.name, perm), self.identity) {
            return Ok(true);
        }
        self.any_ace(chain, &self.registry.granting(&target.kind, perm), None)
    }

    /// Is `uri` in the caller's own namespace (per-user resources)?
    fn owns(&self, uri: &str) -> bool {
        self.identity.user_id.as_deref().is_some_and(|user| {
            let scope = format!("{}{}", self.identity.namespace, user_scope(user));
            uri.strip_prefix(scope.as_str()).is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// May the caller create a child of `kind` under the last node of `parents` (or at root)?
    pub fn may_create(&self, parents: &[Node], kind: &Resource) -> Result<bool, ApiError> {
        if kind.is_per_user() {
            return Ok(self.identity.is_authenticated());
        }
        let kind = kind.name.as_str();
        if self.grants.grants(&format!("{kind}_create"), self.identity) {
            return Ok(true);
        }
        if parents.is_empty() {
            return Ok(false);
        }
        self.allowed(parents, &format!("{kind}:create"))
    }

    /// May the caller exercise `perm` on every child of kind `kind` under `parents`, by
    /// inheritance alone (the list-level right)?
    pub fn allowed_on_list(&self, parents: &[Node], kind: &Resource, perm: &str) -> Result<bool, ApiError> {
        if kind.is_per_user() {
            // The list is the caller's own namespace.
            return Ok(self.identity.is_authenticated());
        }
        if self.grants.grants(&settings_key(&kind.name, perm), self.identity) {
            return Ok(true);
        }
        self.any_ace(parents, &self.registry.granting(kind, perm), Some(&kind.name))
    }

    /// A denial: 401 for anonymous callers, 403 otherwise.
    pub fn deny(&self) -> ApiError {
        deny(self.identity)
    }
}

pub fn deny(identity: &Identity) -> ApiError {
    if identity.is_authenticated() {
        ApiError::forbidden()
    } else {
        ApiError::unauthorized()
    }
}

/// `record:create` → `record_create`; `read` on a record → `record_read`.
fn settings_key(kind: &str, perm: &str) -> String {
    match perm.split_once(':') {
        Some((child, "create")) => format!("{child}_create"),
        _ => format!("{kind}_{perm}"),
    }
}
