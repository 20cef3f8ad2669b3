//! The registry of a service's resources, and the one parser from URL segments or object URIs
//! to addresses in the resource tree.

use std::collections::HashMap;
use std::sync::Arc;

use tidemark_protocol::ApiError;

use crate::toolkit::resource::{Resource, Sharing};

/// One object (or a list's parent) in the resource tree: its kind, id and URI.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Arc<Resource>,
    pub id: String,
    pub uri: String,
}

/// Where a request points: a list (`id` = None) or an object, under its chain of parents.
#[derive(Debug, Clone)]
pub struct Address {
    pub kind: Arc<Resource>,
    /// Ancestors from the top (bucket first).
    pub parents: Vec<Node>,
    pub id: Option<String>,
    /// A per-user resource's namespace (the engine parent of the caller's objects); set once
    /// the caller is known (see [`Address::scoped_to`]).
    pub scope: Option<String>,
    /// The application namespace (`/@app~env`, `""` by default) every URI starts with.
    pub namespace: String,
}

impl Address {
    /// The parent URI used as the engine's list key (`""` at the root).
    pub fn parent_uri(&self) -> &str {
        if let Some(scope) = &self.scope {
            return scope;
        }
        self.parents.last().map(|p| p.uri.as_str()).unwrap_or(&self.namespace)
    }

    pub fn object_uri(&self, id: &str) -> String {
        object_uri(self.parent_uri(), &self.kind, id)
    }

    /// The path of the list under the API root, e.g. `/buckets/b/collections`.
    pub fn list_path(&self) -> String {
        format!("{}/{}", self.parent_uri(), self.kind.plural)
    }

    /// Ancestors plus the object itself.
    pub fn chain_with(&self, id: &str) -> Vec<Node> {
        let mut chain = self.parents.clone();
        chain.push(Node { kind: Arc::clone(&self.kind), id: id.to_owned(), uri: self.object_uri(id) });
        chain
    }

    /// Places a per-user resource's address in the namespace of `user_id`.
    pub fn scoped_to(mut self, user_id: &str) -> Address {
        if self.kind.sharing == Sharing::PerUser {
            self.scope = Some(format!("{}{}", self.namespace, user_scope(user_id)));
        }
        self
    }

    /// Places the address in an application namespace (see `crate::namespace`).
    pub fn in_namespace(mut self, namespace: &str) -> Address {
        if namespace.is_empty() || self.namespace == namespace {
            return self;
        }
        for node in &mut self.parents {
            node.uri = format!("{namespace}{}", node.uri);
        }
        self.namespace = namespace.to_owned();
        self
    }
}

/// The engine parent under which a user's objects of per-user resources live.
pub fn user_scope(user_id: &str) -> String {
    format!("/~{}", uri_safe(user_id))
}

/// `/buckets/b` + records kind + `r` → `/buckets/b/collections/c/records/r`.
pub fn object_uri(parent: &str, kind: &Resource, id: &str) -> String {
    format!("{parent}/{}/{}", kind.plural, uri_safe(id))
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

/// Every resource a service serves, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<Arc<Resource>>,
    /// (kind, permission) → the ACEs granting it, derived once per registration: every
    /// authorization reads it.
    inheritance: HashMap<(String, String), Vec<(String, String)>>,
}

impl Registry {
    /// Adds a definition. Its parent must already be registered, and no sibling may use its
    /// name or URL segment.
    pub fn register(&mut self, resource: Resource) -> Result<(), String> {
        if self.get(&resource.name).is_some() {
            return Err(format!("resource {:?} is registered twice", resource.name));
        }
        if let Some(parent) = &resource.parent {
            let Some(parent_kind) = self.get(parent) else {
                return Err(format!("resource {:?}: unknown parent {parent:?}", resource.name));
            };
            if parent_kind.sharing == Sharing::PerUser || resource.sharing == Sharing::PerUser {
                return Err(format!("resource {:?}: per-user resources are only served at the root", resource.name));
            }
        }
        if self.resources.iter().any(|r| r.parent == resource.parent && r.plural == resource.plural) {
            return Err(format!("resource {:?}: URL segment {:?} is taken", resource.name, resource.plural));
        }
        if resource.plural.is_empty() || resource.plural.contains('/') {
            return Err(format!("resource {:?}: bad URL segment {:?}", resource.name, resource.plural));
        }
        self.resources.push(Arc::new(resource));
        self.inheritance = self
            .resources
            .iter()
            .flat_map(|kind| {
                let perms = kind.permissions.iter().map(String::as_str).chain(["read", "write"]);
                perms
                    .map(|perm| ((kind.name.clone(), perm.to_owned()), self.derive_granting(kind, perm)))
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| r.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.iter()
    }

    /// Does any registered kind live under objects of kind `name`?
    pub fn is_parent(&self, name: &str) -> bool {
        self.resources.iter().any(|r| r.parent.as_deref() == Some(name))
    }

    fn child(&self, parent: Option<&str>, segment: &str) -> Option<&Arc<Resource>> {
        self.resources.iter().find(|r| r.plural == segment && r.parent.as_deref() == parent)
    }

    /// The ancestors of `kind`, from the top.
    pub fn lineage(&self, kind: &Resource) -> Vec<Arc<Resource>> {
        let mut chain = Vec::new();
        let mut parent = kind.parent.clone();
        while let Some(name) = parent {
            let Some(found) = self.get(&name) else { break };
            parent = found.parent.clone();
            chain.insert(0, Arc::clone(found));
        }
        chain
    }

    /// The address of decoded path segments (`["buckets", "b", "collections"]`), or `None`
    /// when they name no registered resource. Ids are not validated here: the handlers check
    /// the target's (after authorization for reads), and a parent with an invalid id is simply
    /// one that does not exist.
    pub fn address_of(&self, segments: &[&str]) -> Option<Address> {
        let mut parents: Vec<Node> = Vec::new();
        let (first, mut rest) = segments.split_first()?;
        let mut kind = Arc::clone(self.child(None, first)?);
        loop {
            match rest {
                [] => return Some(Address { kind, parents, id: None, scope: None, namespace: String::new() }),
                [id] => {
                    let id = Some((*id).to_owned());
                    return Some(Address { kind, parents, id, scope: None, namespace: String::new() });
                }
                [id, plural, tail @ ..] => {
                    let child = Arc::clone(self.child(Some(&kind.name), plural)?);
                    let parent_uri = parents.last().map(|p| p.uri.as_str()).unwrap_or("");
                    let uri = object_uri(parent_uri, &kind, id);
                    parents.push(Node { kind, id: (*id).to_owned(), uri });
                    kind = child;
                    rest = tail;
                }
            }
        }
    }

    /// The chain of nodes (top first) an object URI names, application and per-user namespaces
    /// included (`/@app~env/buckets/b`, `/~user/food/x`). `None` if it names no registered
    /// resource.
    pub fn chain_of(&self, uri: &str) -> Option<Vec<Node>> {
        let (app, uri) = match uri.strip_prefix("/@") {
            Some(rest) => {
                let at = rest.find('/')?;
                (&uri[..at + 2], &rest[at..])
            }
            None => ("", uri),
        };
        let path = uri.strip_prefix('/')?;
        let (scope, path) = match path.strip_prefix('~') {
            Some(scoped) => {
                let (user, rest) = scoped.split_once('/')?;
                (Some(format!("{app}/~{user}")), rest)
            }
            None => (None, path),
        };
        let segments: Vec<&str> = path.split('/').collect();
        let mut addr = self.address_of(&segments)?.in_namespace(app);
        let id = addr.id.take()?;
        if addr.kind.sharing == Sharing::PerUser {
            addr.scope = Some(scope?);
        } else if scope.is_some() {
            return None;
        }
        Some(addr.chain_with(&id))
    }

    /// The URI a client sees for an object URI: a per-user object's without its namespace (its
    /// owner reads it at `/food/x`, not `/~owner/food/x`).
    pub fn wire_uri(uri: &str) -> &str {
        let mut uri = uri;
        // Application namespace first, then a per-user one.
        for marker in ["/@", "/~"] {
            if let Some(path) = uri.strip_prefix(marker).and_then(|rest| rest.find('/').map(|at| &rest[at..])) {
                uri = path;
            }
        }
        uri
    }

    /// The ACEs, as (level kind, permission), that grant `perm` on an object of `kind`: Kinto's
    /// inheritance (kinto-protocol.md §8.4). `write` on an object or any ancestor grants
    /// everything below; `read` on an ancestor grants `read`; `<child>:create` grants itself and,
    /// on the object that carries it, `read`.
    pub fn granting(&self, kind: &Resource, perm: &str) -> std::borrow::Cow<'_, [(String, String)]> {
        match self.inheritance.get(&(kind.name.clone(), perm.to_owned())) {
            Some(aces) => std::borrow::Cow::Borrowed(aces),
            // Creating children no permission was declared for (rare): derived on the spot.
            None => std::borrow::Cow::Owned(self.derive_granting(kind, perm)),
        }
    }

    fn derive_granting(&self, kind: &Resource, perm: &str) -> Vec<(String, String)> {
        let lineage = self.lineage(kind);
        let mut aces: Vec<(String, String)> = lineage.iter().map(|a| (a.name.clone(), "write".to_owned())).collect();
        if perm == "read" {
            aces.extend(lineage.iter().map(|a| (a.name.clone(), "read".to_owned())));
        }
        aces.push((kind.name.clone(), "write".to_owned()));
        match perm {
            "write" => {}
            "read" => {
                aces.push((kind.name.clone(), "read".to_owned()));
                for creatable in kind.permissions.iter().filter(|p| p.ends_with(":create")) {
                    aces.push((kind.name.clone(), creatable.clone()));
                }
            }
            other if kind.permissions.iter().any(|p| p == other) => aces.push((kind.name.clone(), other.to_owned())),
            // Creating children no permission was declared for: writers only.
            other if other.ends_with(":create") => {}
            _ => return Vec::new(),
        }
        aces
    }

    /// `unknown_url` unless the segments name a resource.
    pub fn require(&self, segments: &[&str]) -> Result<Address, ApiError> {
        self.address_of(segments).ok_or_else(ApiError::unknown_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinto() -> Registry {
        crate::kinto::registry(true)
    }

    fn pairs(aces: std::borrow::Cow<'_, [(String, String)]>) -> Vec<String> {
        aces.iter().map(|(level, perm)| format!("{level}:{perm}")).collect()
    }

    #[test]
    fn records_address_carries_its_parents() {
        let address = kinto().address_of(&["buckets", "b", "collections", "c", "records", "r1"]).expect("address");
        assert_eq!(address.kind.name, "record");
        assert_eq!(address.parent_uri(), "/buckets/b/collections/c");
        assert_eq!(address.id.as_deref(), Some("r1"));
    }

    #[test]
    fn unknown_paths_have_no_address_and_invalid_parent_ids_are_escaped() {
        let registry = kinto();
        assert!(registry.address_of(&["nope"]).is_none());
        assert!(registry.address_of(&["buckets", "b", "records"]).is_none());
        let address = registry.address_of(&["buckets", "a/collections/x", "collections"]).expect("address");
        assert_eq!(address.parent_uri(), "/buckets/a%2Fcollections%2Fx");
    }

    #[test]
    fn chain_of_inverts_object_uris() {
        let registry = kinto();
        let app = registry.chain_of("/@notes~production/buckets/b/collections/c").expect("chain");
        assert_eq!(app[0].uri, "/@notes~production/buckets/b");
        assert_eq!(app[1].uri, "/@notes~production/buckets/b/collections/c");
        let chain = registry.chain_of("/buckets/b/collections/c/records/r").expect("chain");
        let names: Vec<&str> = chain.iter().map(|n| n.kind.name.as_str()).collect();
        assert_eq!(names, ["bucket", "collection", "record"]);
        assert_eq!(chain[1].uri, "/buckets/b/collections/c");
        assert!(registry.chain_of("/buckets/b/nothing/c").is_none());
    }

    #[test]
    fn derived_inheritance_is_kintos_table() {
        let registry = kinto();
        let get = |name: &str| Arc::clone(registry.get(name).expect("kind"));
        let record = get("record");
        assert_eq!(
            pairs(registry.granting(&record, "read")),
            ["bucket:write", "collection:write", "bucket:read", "collection:read", "record:write", "record:read"]
        );
        assert_eq!(pairs(registry.granting(&record, "write")), ["bucket:write", "collection:write", "record:write"]);
        let collection = get("collection");
        assert_eq!(
            pairs(registry.granting(&collection, "read")),
            ["bucket:write", "bucket:read", "collection:write", "collection:read", "collection:record:create"]
        );
        assert_eq!(
            pairs(registry.granting(&collection, "record:create")),
            ["bucket:write", "collection:write", "collection:record:create"]
        );
        let bucket = get("bucket");
        assert_eq!(
            pairs(registry.granting(&bucket, "read")),
            ["bucket:write", "bucket:read", "bucket:collection:create", "bucket:group:create"]
        );
        assert!(registry.granting(&bucket, "nonsense").is_empty());
    }

    #[test]
    fn per_user_uris_carry_the_namespace() {
        let mut registry = Registry::default();
        registry.register(Resource::per_user("food", "food")).expect("register");
        let chain = registry.chain_of("/~basicauth:abc/food/x").expect("chain");
        assert_eq!(chain[0].uri, "/~basicauth:abc/food/x");
        assert_eq!(Registry::wire_uri(&chain[0].uri), "/food/x");
        assert_eq!(Registry::wire_uri("/buckets/b"), "/buckets/b");
        assert_eq!(Registry::wire_uri("/@notes~production/~u/food/x"), "/food/x");
        let scoped = registry.chain_of("/@notes~production/~u/food/x").expect("chain");
        assert_eq!(scoped[0].uri, "/@notes~production/~u/food/x");
        assert!(registry.chain_of("/food/x").is_none(), "a per-user object always has a namespace");
        assert!(registry.register(Resource::shareable("food", "other")).is_err());
        assert!(registry.register(Resource::shareable("meal", "food")).is_err());
    }
}
