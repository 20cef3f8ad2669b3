//! The checks an object's data passes before it is written: Kinto's typed metadata fields (group
//! `members`, collection `cache_expires`, schema documents, always) and, with
//! `experimental_collection_schema_validation`, JSON-Schema validation of records, collections
//! and groups against their collection's and bucket's schemas (kinto-protocol.md §6).
//!
//! The `jsonschema` crate is built without its resolvers: a `$ref` to a URL or a file is never
//! fetched, it is unresolvable (as Kinto's is on a machine without network).

use std::collections::HashMap;
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tidemark_engine::StoredObject;
use tidemark_protocol::pyrepr::{pyrepr, pystr};
use tidemark_protocol::{ApiError, Invalid, Location};

use crate::error::from_engine;
use crate::state::AppState;
use crate::toolkit::{Address, Node};

/// Compiled schemas kept at most; beyond it the cache starts afresh (schemas are few).
const MAX_CACHED_VALIDATORS: usize = 512;

/// The field of a record that names the version (collection timestamp) of its schema.
const SCHEMA_FIELD: &str = "schema";

/// (schema holder's URI, its `last_modified`, field): a holder's change gives a new key, so no
/// cached validator is ever stale.
type SchemaKey = (String, u64, &'static str);

/// Compiled validators by the schema they were compiled from.
#[derive(Default)]
pub struct ValidatorCache {
    compiled: Mutex<HashMap<SchemaKey, Arc<Validator>>>,
}

/// Checks and normalises `data` (the whole object about to be written, `id` included) for the
/// object `id` at `addr`. `data_sent`: the request carried `data` (defaults apply then).
pub fn check(
    state: &AppState,
    addr: &Address,
    id: &str,
    data: &mut Map<String, Value>,
    data_sent: bool,
) -> Result<(), ApiError> {
    match addr.kind.name.as_str() {
        "group" => check_members(data, data_sent)?,
        "collection" => {
            check_cache_expires(data)?;
            check_schema_documents(data, &["schema"])?;
        }
        "bucket" => check_schema_documents(data, &["collection:schema", "group:schema", "record:schema"])?,
        _ => {}
    }
    if !state.settings.experimental_collection_schema_validation {
        return Ok(());
    }
    let Some(bucket) = addr.parents.first() else { return Ok(()) };
    match (addr.kind.name.as_str(), addr.parents.as_slice()) {
        ("record", [_, collection]) => {
            if let Some(collection_object) = live(state, collection)? {
                if let Some(schema) = collection_object.data.get("schema") {
                    let validator =
                        state.validators.get(&collection.uri, collection_object.last_modified, schema, "schema")?;
                    validate(&validator, schema, id, data, &["last_modified", SCHEMA_FIELD])?;
                    data.insert(SCHEMA_FIELD.into(), json!(collection_object.last_modified));
                }
            }
            check_against_bucket(state, bucket, "record:schema", id, data, &["last_modified", SCHEMA_FIELD])
        }
        ("collection", _) => check_against_bucket(state, bucket, "collection:schema", id, data, &["last_modified"]),
        ("group", _) => check_against_bucket(state, bucket, "group:schema", id, data, &["last_modified"]),
        _ => Ok(()),
    }
}

fn live(state: &AppState, node: &Node) -> Result<Option<StoredObject>, ApiError> {
    Ok(state.engine.get_uri(&node.uri).map_err(from_engine)?.filter(|o| !o.deleted))
}

fn check_against_bucket(
    state: &AppState,
    bucket: &Node,
    field: &'static str,
    id: &str,
    data: &Map<String, Value>,
    ignored: &[&str],
) -> Result<(), ApiError> {
    let Some(bucket_object) = live(state, bucket)? else { return Ok(()) };
    let Some(schema) = bucket_object.data.get(field) else { return Ok(()) };
    let validator = state.validators.get(&bucket.uri, bucket_object.last_modified, schema, field)?;
    validate(&validator, schema, id, data, ignored)
}

impl ValidatorCache {
    /// The validator of the schema `field` of the object at `uri`, whose `last_modified` is
    /// `version` (so a changed schema is compiled again).
    fn get(&self, uri: &str, version: u64, schema: &Value, field: &'static str) -> Result<Arc<Validator>, ApiError> {
        let key = (uri.to_owned(), version, field);
        if let Some(validator) = self.compiled.lock().get(&key) {
            return Ok(Arc::clone(validator));
        }
        let validator = Arc::new(compile(schema)?);
        let mut compiled = self.compiled.lock();
        if compiled.len() >= MAX_CACHED_VALIDATORS {
            compiled.clear();
        }
        compiled.insert(key, Arc::clone(&validator));
        Ok(validator)
    }
}

fn compile(schema: &Value) -> Result<Validator, ApiError> {
    jsonschema::options().build(schema).map_err(|err| match err.kind() {
        ValidationErrorKind::Referencing(referencing) => {
            ApiError::invalid_one(Location::Body, Some("schema"), unresolvable(referencing))
        }
        _ => ApiError::invalid_one(Location::Body, Some("schema"), python_message(&err, schema)),
    })
}

fn unresolvable(err: &jsonschema::ReferencingError) -> String {
    match err {
        jsonschema::ReferencingError::Unretrievable { uri, .. }
        | jsonschema::ReferencingError::PointerToNowhere { pointer: uri } => {
            format!("Unresolvable: {uri}")
        }
        other => format!("Unresolvable: {other}"),
    }
}

/// Validates `data` minus the ignored fields (and `id`, unless the schema's `properties` names
/// it); the first error becomes Kinto's 400.
fn validate(
    validator: &Validator,
    schema: &Value,
    id: &str,
    data: &Map<String, Value>,
    ignored: &[&str],
) -> Result<(), ApiError> {
    let mentions_id = schema.get("properties").and_then(Value::as_object).is_some_and(|p| p.contains_key("id"));
    let mut instance = Map::new();
    for (key, value) in data {
        if ignored.contains(&key.as_str()) || (key == "id" && !mentions_id) {
            continue;
        }
        instance.insert(key.clone(), value.clone());
    }
    if mentions_id {
        instance.insert("id".into(), json!(id));
    }
    // Kinto strips the ignored fields from the schema's top-level `required`.
    let required_ignored = |name: &str| ignored.contains(&name) || (name == "id" && !mentions_id);
    let instance = Value::Object(instance);
    let Some(error) = validator.iter_errors(&instance).find(|error| match error.kind() {
        ValidationErrorKind::Required { property } if error.instance_path().to_string().is_empty() => {
            !property.as_str().is_some_and(required_ignored)
        }
        _ => true,
    }) else {
        return Ok(());
    };
    let field = field_of(&error, schema);
    Err(ApiError::invalid_one(Location::Body, Some(&field), python_message(&error, schema)))
}

/// Kinto's field for an error: the failing instance's last path element; else the keyword's
/// value's last element (a `required` property); else the keyword.
fn field_of(error: &ValidationError<'_>, schema: &Value) -> String {
    if let Some(last) = last_segment(&error.instance_path().to_string()) {
        return last;
    }
    if let ValidationErrorKind::Required { property } = error.kind() {
        return pystr(property);
    }
    let keyword_value = schema.pointer(&error.schema_path().to_string());
    match keyword_value {
        Some(Value::Array(items)) if !items.is_empty() => items.last().map(pystr).unwrap_or_default(),
        Some(Value::String(s)) if !s.is_empty() => s.chars().last().map(String::from).unwrap_or_default(),
        _ => last_segment(&error.schema_path().to_string()).unwrap_or_default(),
    }
}

/// The last segment of a JSON pointer, unescaped.
fn last_segment(pointer: &str) -> Option<String> {
    let last = pointer.rsplit('/').next().filter(|_| !pointer.is_empty())?;
    Some(last.replace("~1", "/").replace("~0", "~"))
}

/// The message Python's `jsonschema` gives for an error, for the kinds Kinto users meet;
/// the crate's own message for the others.
fn python_message(error: &ValidationError<'_>, schema: &Value) -> String {
    let instance = pyrepr(error.instance());
    let keyword_value = || schema.pointer(&error.schema_path().to_string()).cloned().unwrap_or(Value::Null);
    match error.kind() {
        ValidationErrorKind::Type { .. } => {
            let types = match keyword_value() {
                Value::Array(types) => types.iter().map(pyrepr).collect::<Vec<_>>().join(", "),
                other => pyrepr(&other),
            };
            format!("{instance} is not of type {types}")
        }
        ValidationErrorKind::Required { property } => format!("{} is a required property", pyrepr(property)),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let names = unexpected.iter().map(|n| pyrepr(&json!(n))).collect::<Vec<_>>().join(", ");
            let verb = if unexpected.len() == 1 { "was" } else { "were" };
            format!("Additional properties are not allowed ({names} {verb} unexpected)")
        }
        ValidationErrorKind::Enum { options } => format!("{instance} is not one of {}", pyrepr(options)),
        ValidationErrorKind::Constant { expected_value } => format!("{} was expected", pyrepr(expected_value)),
        ValidationErrorKind::MinLength { .. } | ValidationErrorKind::MinItems { .. } => {
            format!("{instance} is too short")
        }
        ValidationErrorKind::MaxLength { .. } | ValidationErrorKind::MaxItems { .. } => {
            format!("{instance} is too long")
        }
        ValidationErrorKind::Minimum { limit } => format!("{instance} is less than the minimum of {}", pyrepr(limit)),
        ValidationErrorKind::Maximum { limit } => {
            format!("{instance} is greater than the maximum of {}", pyrepr(limit))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("{instance} is less than or equal to the minimum of {}", pyrepr(limit))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("{instance} is greater than or equal to the maximum of {}", pyrepr(limit))
        }
        ValidationErrorKind::Pattern { pattern } => format!("{instance} does not match {}", pyrepr(&json!(pattern))),
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            format!("{instance} is not valid under any of the given schemas")
        }
        ValidationErrorKind::MultipleOf { .. } => {
            format!("{instance} is not a multiple of {}", pyrepr(&keyword_value()))
        }
        ValidationErrorKind::UniqueItems => format!("{instance} has non-unique elements"),
        _ => error.to_string(),
    }
}

/// A schema document (`schema`, `record:schema`…) must be an object and a valid Draft 7
/// schema, validation on or off (Kinto's `JSONSchemaMapping`). `null` drops the field.
fn check_schema_documents(data: &mut Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    for field in fields {
        let name = format!("data.{field}");
        match data.get(*field) {
            None => {}
            Some(Value::Null) => {
                data.remove(*field);
            }
            Some(Value::Object(_)) => {
                let document = &data[*field];
                if let Err(error) = jsonschema::draft7::meta::validate(document) {
                    let at = last_segment(&error.instance_path().to_string()).unwrap_or_default();
                    let description = format!("{at}{}", python_message(&error, &referencing::meta::DRAFT7));
                    return Err(ApiError::invalid_one(Location::Body, Some(&name), description));
                }
            }
            Some(other) => {
                let description =
                    format!("\"{}\" is not a mapping type: Does not implement dict-like functionality.", pystr(other));
                return Err(ApiError::invalid_one(Location::Body, Some(&name), description));
            }
        }
    }
    Ok(())
}

/// Collection `cache_expires`: an integer as colander reads one (numeric strings and floats are
/// converted, falsy values dropped).
fn check_cache_expires(data: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(value) = data.get("cache_expires") else { return Ok(()) };
    let converted = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.trunc() as i64)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return Err(not_a_number(value)),
        },
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Object(map) if map.is_empty() => None,
        other => return Err(not_a_number(other)),
    };
    match converted {
        Some(n) => data.insert("cache_expires".into(), json!(n)),
        None if value.as_f64().is_some() => return Err(not_a_number(value)),
        None => data.remove("cache_expires"),
    };
    Ok(())
}

fn not_a_number(value: &Value) -> ApiError {
    ApiError::invalid_one(Location::Body, Some("data.cache_expires"), format!("\"{}\" is not a number", pystr(value)))
}

/// Group `members`: a list of user ids, `[]` by default when the request sent `data` (Kinto's
/// schema default); every bad item is reported.
fn check_members(data: &mut Map<String, Value>, data_sent: bool) -> Result<(), ApiError> {
    let members = match data.get("members") {
        Some(members) => members,
        None if data_sent => data.entry("members").or_insert_with(|| json!([])),
        None => return Ok(()),
    };
    let Value::Array(items) = members else {
        return Err(ApiError::invalid_one(
            Location::Body,
            Some("data.members"),
            format!("\"{}\" is not iterable", pystr(members)),
        ));
    };
    let invalid: Vec<Invalid> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let description = match item {
                Value::String(s) if s == "system.Everyone" || s.starts_with("/buckets/") => {
                    format!("'{s}' is not a valid user ID.")
                }
                Value::String(_) => return None,
                other => format!("{} is not a string: {{'': ''}}", pyrepr(other)),
            };
            Some(Invalid::new(Location::Body, Some(&format!("data.members.{i}")), description))
        })
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(invalid))
    }
}
