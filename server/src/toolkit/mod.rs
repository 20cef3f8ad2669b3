//! The toolkit: declare a resource, get Kinto's well-behaved HTTP endpoints for it.
//!
//! A [`Resource`] says what a kind of object is (name, URL segment, parent, ids, permissions,
//! sharing, data checks, hooks); a [`Registry`] holds a service's resources and turns URLs and
//! object URIs into [`Address`]es; the generic object and list handlers serve every registered
//! resource with the same listing, filters, sort, pagination, timestamps, preconditions,
//! permissions, batch, errors, change streams and listeners. Kinto's own resources are declared
//! this way (`crate::kinto`). A [`Service`] bundles a registry with settings into a server.

pub(crate) mod common;
pub(crate) mod extract;
pub(crate) mod lists;
pub(crate) mod objects;
mod registry;
mod resource;
mod service;
pub(crate) mod write;

pub use registry::{object_uri, uri_safe, user_scope, Address, Node, Registry};
pub use resource::{BoxFuture, DataCheck, Hooks, Ids, PostHandler, Resource, Sharing, Write, MAX_ID_LENGTH};
pub use service::Service;
