//! A resource definition: everything the generic handlers need to serve one kind of object.
//!
//! A definition names the kind, its URL segment and its parent kind, says how ids are made and
//! checked, which permissions its objects carry and how they inherit, whether objects are
//! shared through ACLs or private to each user, and which checks run before a write (a JSON
//! Schema for `data`, hooks). The handlers in `objects.rs` and `lists.rs` read nothing else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tidemark_engine::Acl;
use tidemark_protocol::{ids, ApiError, Location};

use crate::request::ApiRequest;
use crate::response::ApiResponse;
use crate::state::AppState;
use crate::toolkit::registry::Address;

/// Kinto sets no limit (300-character ids pass); a bound keeps keys and URLs sane.
pub const MAX_ID_LENGTH: usize = 512;

/// A boxed future, for the async hooks a definition may carry.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who sees and changes a resource's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Objects carry ACLs that can be granted to other principals; permissions inherit down
    /// the parent chain (Kinto's buckets, collections, groups, records).
    Shareable,
    /// Each authenticated user has a namespace of their own: they see and write only their
    /// objects, which carry no ACL (Kinto-Core's per-user resources). Anonymous callers get 401.
    PerUser,
}

/// How ids are generated and which ids a client may choose.
#[derive(Clone)]
pub struct Ids {
    pub generate: fn() -> String,
    pub valid: fn(&str) -> bool,
}

impl Ids {
    /// UUID4 ids, any Kinto-valid id accepted (records).
    pub fn uuid() -> Ids {
        Ids { generate: || ids::uuid4(rand::random()), valid: ids::is_valid_id }
    }

    /// 8-character ids (buckets, collections, groups).
    pub fn short() -> Ids {
        Ids { generate: || ids::short_id(rand::random()), valid: ids::is_valid_id }
    }
}

/// A check of an object's `data` (without `id` and `last_modified`).
pub type DataCheck = Arc<dyn Fn(&Value) -> Result<(), ApiError> + Send + Sync>;

/// What a write hook sees and may change: the object about to be written.
pub struct Write<'a> {
    pub state: &'a AppState,
    pub req: &'a ApiRequest,
    pub addr: &'a Address,
    pub id: &'a str,
    /// The whole object about to be written, `id` included.
    pub data: &'a mut Map<String, Value>,
    /// The request carried `data` (Kinto applies schema defaults then).
    pub data_sent: bool,
    /// The object as it is now (`None` on creation).
    pub previous: Option<&'a Map<String, Value>>,
    /// A PUT or a creation (the whole object is given) rather than a PATCH.
    pub replaces: bool,
}

/// A handler that takes over `POST` on a resource's list (accounts create by id).
pub type PostHandler =
    for<'a> fn(&'a AppState, &'a ApiRequest, &'a Address) -> BoxFuture<'a, Result<ApiResponse, ApiError>>;

/// Checks and transformations a resource adds to the generic behaviour.
pub trait Hooks: Send + Sync {
    /// Checks and normalises the data of a write (after the JSON Schema, before the hook below).
    fn validate(&self, _write: &mut Write<'_>) -> Result<(), ApiError> {
        Ok(())
    }

    /// Last step before the command is submitted; may replace the object's ACL (return it).
    fn before_write<'a>(&'a self, _write: Write<'a>) -> BoxFuture<'a, Result<Option<Acl>, ApiError>> {
        Box::pin(async { Ok(None) })
    }

    /// Refuses reading the list before anything else (accounts' anonymous listing).
    fn check_list_read(&self, _req: &ApiRequest) -> Result<(), ApiError> {
        Ok(())
    }
}

struct NoHooks;
impl Hooks for NoHooks {}

/// One kind of object served by the generic handlers.
#[derive(Clone)]
pub struct Resource {
    /// The singular name (`record`): Kinto's `resource_name`, the engine's list name, the
    /// prefix of settings such as `record_read_principals`.
    pub name: String,
    /// The URL segment of the plural endpoint (`records`).
    pub plural: String,
    /// The parent kind's name; `None` at the root.
    pub parent: Option<String>,
    /// Permission names an object may carry (`read`, `write`, `record:create`…).
    pub permissions: Vec<String>,
    pub ids: Ids,
    pub sharing: Sharing,
    /// Checks every object's `data` must pass (a JSON Schema, a serde type), in order.
    pub data_checks: Vec<DataCheck>,
    /// `_sort` used when a list request gives none (Kinto's default: `-last_modified`).
    pub default_sort: Option<String>,
    /// The `data` field whose principals become members of this object (Kinto's group
    /// `members`): each member gains the object's URI as a principal.
    pub members_field: Option<String>,
    /// A write looks the parents up before authorizing (Kinto's records: a missing
    /// collection is a 404 for anyone).
    pub parents_checked_first: bool,
    /// The ACL a response shows goes to whoever may reach the object, not only its writers
    /// (accounts).
    pub acl_shown_to_all: bool,
    /// Anonymous reads take their expiry from the parent's `cache_expires` and the
    /// parent-specific `<ids>.<name>_cache_expires_seconds` settings (Kinto's records).
    pub cache_expires_from_parent: bool,
    pub hooks: Arc<dyn Hooks>,
    pub on_post: Option<PostHandler>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource").field("name", &self.name).field("plural", &self.plural).finish_non_exhaustive()
    }
}

impl Resource {
    /// A shareable resource: `read` and `write` permissions, UUID ids, at the root.
    pub fn shareable(name: &str, plural: &str) -> Resource {
        Resource::new(name, plural, Sharing::Shareable)
    }

    /// A per-user resource: every user sees and writes only their own objects.
    pub fn per_user(name: &str, plural: &str) -> Resource {
        Resource::new(name, plural, Sharing::PerUser)
    }

    fn new(name: &str, plural: &str, sharing: Sharing) -> Resource {
        Resource {
            name: name.to_owned(),
            plural: plural.to_owned(),
            parent: None,
            permissions: vec!["read".into(), "write".into()],
            ids: Ids::uuid(),
            sharing,
            data_checks: Vec::new(),
            default_sort: None,
            members_field: None,
            parents_checked_first: false,
            acl_shown_to_all: false,
            cache_expires_from_parent: false,
            hooks: Arc::new(NoHooks),
            on_post: None,
        }
    }

    /// Nests the resource under objects of `parent` (which must be registered first).
    pub fn under(mut self, parent: &str) -> Resource {
        self.parent = Some(parent.to_owned());
        self
    }

    /// Adds a permission name objects may carry (e.g. `record:create` on collections).
    pub fn permission(mut self, name: &str) -> Resource {
        if !self.permissions.iter().any(|p| p == name) {
            self.permissions.push(name.to_owned());
        }
        self
    }

    pub fn ids(mut self, ids: Ids) -> Resource {
        self.ids = ids;
        self
    }

    /// Validates every object's `data` against a JSON Schema (Draft 7 and later). `$ref`s to
    /// URLs or files are never fetched.
    pub fn schema(mut self, schema: &Value) -> Result<Resource, String> {
        let validator = jsonschema::options().build(schema).map_err(|e| format!("invalid schema: {e}"))?;
        self.data_checks.push(Arc::new(move |data: &Value| {
            let Some(error) = validator.iter_errors(data).next() else { return Ok(()) };
            let path = error.instance_path().to_string();
            let field = match (last_segment(&path), error.kind()) {
                (Some(field), _) => format!("data.{field}"),
                (None, jsonschema::error::ValidationErrorKind::Required { property }) => {
                    format!("data.{}", property.as_str().unwrap_or_default())
                }
                (None, _) => "data".to_owned(),
            };
            Err(ApiError::invalid_one(Location::Body, Some(&field), error.to_string()))
        }));
        Ok(self)
    }

    /// Validates every object's `data` by deserialising it into `T` (a serde struct).
    pub fn typed<T: serde::de::DeserializeOwned + 'static>(mut self) -> Resource {
        self.data_checks.push(Arc::new(|data: &Value| {
            serde_json::from_value::<T>(data.clone())
                .map(|_| ())
                .map_err(|err| ApiError::invalid_one(Location::Body, Some("data"), err.to_string()))
        }));
        self
    }

    pub fn default_sort(mut self, sort: &str) -> Resource {
        self.default_sort = Some(sort.to_owned());
        self
    }

    pub fn members_field(mut self, field: &str) -> Resource {
        self.members_field = Some(field.to_owned());
        self
    }

    pub fn parents_checked_first(mut self) -> Resource {
        self.parents_checked_first = true;
        self
    }

    pub fn cache_expires_from_parent(mut self) -> Resource {
        self.cache_expires_from_parent = true;
        self
    }

    pub fn acl_shown_to_all(mut self) -> Resource {
        self.acl_shown_to_all = true;
        self
    }

    pub fn hooks(mut self, hooks: impl Hooks + 'static) -> Resource {
        self.hooks = Arc::new(hooks);
        self
    }

    pub fn on_post(mut self, handler: PostHandler) -> Resource {
        self.on_post = Some(handler);
        self
    }

    pub fn is_valid_id(&self, id: &str) -> bool {
        id.len() <= MAX_ID_LENGTH && (self.ids.valid)(id)
    }

    pub fn generate_id(&self) -> String {
        (self.ids.generate)()
    }

    /// The permissions a request body may set: none on per-user objects.
    pub fn permission_names(&self) -> Vec<&str> {
        match self.sharing {
            Sharing::Shareable => self.permissions.iter().map(String::as_str).collect(),
            Sharing::PerUser => Vec::new(),
        }
    }

    pub fn is_per_user(&self) -> bool {
        self.sharing == Sharing::PerUser
    }

    /// Runs the declared data checks on `data` (without `id` and `last_modified`).
    pub fn check_data(&self, data: &Map<String, Value>) -> Result<(), ApiError> {
        if self.data_checks.is_empty() {
            return Ok(());
        }
        let instance: Map<String, Value> = data
            .iter()
            .filter(|(k, _)| *k != "id" && *k != "last_modified")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let instance = Value::Object(instance);
        self.data_checks.iter().try_for_each(|check| check(&instance))
    }
}

fn last_segment(pointer: &str) -> Option<String> {
    pointer.rsplit('/').next().filter(|s| !s.is_empty()).map(|s| s.replace("~1", "/").replace("~0", "~"))
}
