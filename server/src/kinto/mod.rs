//! Kinto's own resources, declared through the toolkit: buckets, collections, groups, records
//! and (with `kinto.plugins.accounts`) accounts, plus the plugins that are more than a resource
//! (default bucket, permissions endpoint).

pub mod accounts;
pub mod default_bucket;
pub mod history;
pub mod permissions;
pub mod validation;

use tidemark_protocol::ids;

use crate::toolkit::{Hooks, Ids, Registry, Resource, Write};

/// Kinto's typed metadata (group members, collection `cache_expires`, schema documents) and,
/// when enabled, JSON-Schema validation against collection and bucket schemas.
struct KintoData;

impl Hooks for KintoData {
    fn validate(&self, write: &mut Write<'_>) -> Result<(), tidemark_protocol::ApiError> {
        validation::check(write.state, write.addr, write.id, write.data, write.data_sent)
    }
}

/// The resource tree Kinto serves; accounts only when their plugin is included.
pub fn registry(accounts: bool) -> Registry {
    let resources = [
        Resource::shareable("bucket", "buckets")
            .ids(Ids::short())
            .permission("collection:create")
            .permission("group:create")
            .hooks(KintoData),
        Resource::shareable("collection", "collections")
            .under("bucket")
            .ids(Ids::short())
            .permission("record:create")
            .hooks(KintoData),
        Resource::shareable("group", "groups")
            .under("bucket")
            .ids(Ids::short())
            .members_field("members")
            .hooks(KintoData),
        // Kinto builds a record's resource, which looks its collection up, before authorizing a
        // write: under a missing collection that is a 404 for anyone.
        Resource::shareable("record", "records")
            .under("collection")
            .parents_checked_first()
            .cache_expires_from_parent()
            .hooks(KintoData),
    ];
    let mut registry = Registry::default();
    for resource in resources {
        // The declarations above are static and consistent; a failure here is a programming error
        // caught by every test.
        if let Err(err) = registry.register(resource) {
            tracing::error!(error = %err, "Kinto resource not registered");
        }
    }
    if accounts {
        let account = Resource::shareable("account", accounts::ACCOUNTS)
            .ids(Ids { generate: || ids::uuid4(rand::random()), valid: ids::is_valid_account_id })
            .acl_shown_to_all()
            .hooks(accounts::AccountHooks)
            .on_post(accounts::create);
        if let Err(err) = registry.register(account) {
            tracing::error!(error = %err, "accounts not registered");
        }
    }
    registry
}
