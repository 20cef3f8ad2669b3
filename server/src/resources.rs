//! The resource types served, declared once: name, URL segment, parent, permissions, ids.
//!
//! This table is the seam of the toolkit: the generic object and list handlers serve any
//! resource declared here with the same listing, preconditions, errors and permissions.

use tidemark_protocol::ids;

/// Kinto sets no limit (300-character ids pass); a bound keeps keys and URLs sane.
pub const MAX_ID_LENGTH: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStyle {
    /// 8 characters (buckets, collections, groups).
    Short,
    /// UUID4 (records).
    Uuid,
    /// Chosen by the client, e-mail addresses allowed (accounts).
    Account,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResourceKind {
    pub name: &'static str,
    /// The URL segment of the plural endpoint.
    pub plural: &'static str,
    pub parent: Option<&'static ResourceKind>,
    /// Permission names an object of this kind may carry.
    pub permissions: &'static [&'static str],
    pub id_style: IdStyle,
}

pub static BUCKET: ResourceKind = ResourceKind {
    name: "bucket",
    plural: "buckets",
    parent: None,
    permissions: &["read", "write", "collection:create", "group:create"],
    id_style: IdStyle::Short,
};

pub static COLLECTION: ResourceKind = ResourceKind {
    name: "collection",
    plural: "collections",
    parent: Some(&BUCKET),
    permissions: &["read", "write", "record:create"],
    id_style: IdStyle::Short,
};

pub static GROUP: ResourceKind = ResourceKind {
    name: "group",
    plural: "groups",
    parent: Some(&BUCKET),
    permissions: &["read", "write"],
    id_style: IdStyle::Short,
};

pub static RECORD: ResourceKind = ResourceKind {
    name: "record",
    plural: "records",
    parent: Some(&COLLECTION),
    permissions: &["read", "write"],
    id_style: IdStyle::Uuid,
};

/// Accounts (kinto.plugins.accounts): stored at root, each the only writer of itself.
pub static ACCOUNT: ResourceKind = ResourceKind {
    name: "account",
    plural: "accounts",
    parent: None,
    permissions: &["read", "write"],
    id_style: IdStyle::Account,
};

impl ResourceKind {
    pub fn is_valid_id(&self, id: &str) -> bool {
        let valid = match self.id_style {
            IdStyle::Account => ids::is_valid_account_id(id),
            IdStyle::Short | IdStyle::Uuid => ids::is_valid_id(id),
        };
        id.len() <= MAX_ID_LENGTH && valid
    }

    /// A fresh id; accounts have none (their id is mandatory), they get a UUID that
    /// validation then refuses upstream.
    pub fn generate_id(&self) -> String {
        match self.id_style {
            IdStyle::Short => ids::short_id(rand::random()),
            IdStyle::Uuid | IdStyle::Account => ids::uuid4(rand::random()),
        }
    }

    pub fn is_account(&self) -> bool {
        self.id_style == IdStyle::Account
    }

    /// The `<name>:create` permission checked on the parent.
    pub fn create_permission(&self) -> String {
        format!("{}:create", self.name)
    }
}

/// One object (or a list's parent) in the resource tree: its kind, id and URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static ResourceKind,
    pub id: String,
    pub uri: String,
}

/// Where a request points: a list (`id` = None) or an object, under its chain of parents.
#[derive(Debug, Clone)]
pub struct Address {
    pub kind: &'static ResourceKind,
    /// Ancestors from the top (bucket first).
    pub parents: Vec<Node>,
    pub id: Option<String>,
}

impl Address {
    /// The parent URI used as the engine's list key (`""` for buckets).
    pub fn parent_uri(&self) -> &str {
        self.parents.last().map(|p| p.uri.as_str()).unwrap_or("")
    }

    pub fn object_uri(&self, id: &str) -> String {
        tidemark_engine::object_uri(self.parent_uri(), self.kind.name, &crate::routes::uri_safe(id))
    }

    /// The path of the list under the API root, e.g. `/buckets/b/collections`.
    pub fn list_path(&self) -> String {
        format!("{}/{}", self.parent_uri(), self.kind.plural)
    }

    /// Ancestors plus the object itself.
    pub fn chain_with(&self, id: &str) -> Vec<Node> {
        let mut chain = self.parents.clone();
        chain.push(Node { kind: self.kind, id: id.to_owned(), uri: self.object_uri(id) });
        chain
    }
}
