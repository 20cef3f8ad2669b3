//! Request bodies: JSON parsing, the `{data, permissions}` envelope, and the three PATCH
//! flavours (Kinto merge, RFC 7396 merge-patch, RFC 6902 JSON-Patch) — kinto-protocol.md §1.6, §5.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{ApiError, Invalid, Location};
use crate::pyrepr::{pyrepr, pystr};

/// Permission name → principals, as stored.
pub type Permissions = BTreeMap<String, Vec<String>>;
/// Permission name → principals or `null`, as sent.
pub type PermissionsInput = BTreeMap<String, Option<Vec<String>>>;

/// Parses a request body as JSON; an empty body is `{}`.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        ApiError::invalid(vec![
            Invalid::new(Location::Body, Some(""), format!("Invalid JSON: {err}")),
            Invalid::new(Location::Body, Some(""), "Required"),
        ])
    })?;
    if !(value.is_object() || value.is_array()) {
        // Kinto reads only objects and arrays as bodies.
        return Err(ApiError::invalid(vec![
            Invalid::new(Location::Body, Some(""), "Should be a JSON object or an array"),
            Invalid::new(Location::Body, Some(""), "Required"),
        ]));
    }
    Ok(value)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub data: Option<Map<String, Value>>,
    pub permissions: Option<PermissionsInput>,
}

pub fn not_a_mapping(name: &str, value: &Value) -> ApiError {
    ApiError::invalid_one(
        Location::Body,
        Some(name),
        format!("\"{}\" is not a mapping type: Does not implement dict-like functionality.", pystr(value)),
    )
}

/// Validates the envelope: an object with only `data` (object) and `permissions` (object of
/// arrays of strings, or null values) whose names are in `allowed_permissions`.
pub fn parse_envelope(body: Value, allowed_permissions: &[&str]) -> Result<Envelope, ApiError> {
    let Value::Object(mut map) = body else {
        return Err(not_a_mapping("", &body));
    };
    let data = match map.remove("data") {
        None => None,
        Some(Value::Object(data)) => Some(data),
        Some(other) => return Err(not_a_mapping("data", &other)),
    };
    let permissions = match map.remove("permissions") {
        None => None,
        Some(value) => Some(parse_permissions(value, allowed_permissions)?),
    };
    if !map.is_empty() {
        let rest = Value::Object(map);
        return Err(ApiError::invalid_one(
            Location::Body,
            Some(""),
            format!("Unrecognized keys in mapping: \"{}\"", pyrepr(&rest)),
        ));
    }
    Ok(Envelope { data, permissions })
}

fn parse_permissions(value: Value, allowed: &[&str]) -> Result<PermissionsInput, ApiError> {
    let Value::Object(map) = value else {
        return Err(not_a_mapping("permissions", &value));
    };
    let mut out = PermissionsInput::new();
    for (name, principals) in map {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid_one(
                Location::Body,
                Some("permissions"),
                format!("\"{name}\" is not one of {}", allowed.join(", ")),
            ));
        }
        let field = format!("permissions.{name}");
        let list = match principals {
            Value::Null => None,
            Value::Array(items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) if s.is_empty() => {
                            Err(ApiError::invalid_one(Location::Body, Some(&format!("{field}.{i}")), "Required"))
                        }
                        Value::String(s) => Ok(s),
                        other => Err(ApiError::invalid_one(
                            Location::Body,
                            Some(&format!("{field}.{i}")),
                            format!("{other} is not a string"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            other => {
                return Err(ApiError::invalid_one(
                    Location::Body,
                    Some(&field),
                    format!("\"{}\" is not iterable", pystr(&other)),
                ))
            }
        };
        out.insert(name, list);
    }
    Ok(out)
}

/// Kinto's default PATCH: a shallow merge, `null` stored as a value.
pub fn merge_shallow(existing: &Map<String, Value>, changes: &Map<String, Value>) -> Map<String, Value> {
    let mut out = existing.clone();
    for (k, v) in changes {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// RFC 7396 merge-patch: recursive, `null` removes the key.
pub fn merge_patch(existing: &Map<String, Value>, changes: &Map<String, Value>) -> Map<String, Value> {
    let mut doc = Value::Object(existing.clone());
    json_patch::merge(&mut doc, &Value::Object(changes.clone()));
    match doc {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// PUT's ACL rule: a non-empty `permissions` replaces the whole ACL (`null` = cleared);
/// absent or all-null leaves it unchanged.
pub fn replace_permissions(existing: &Permissions, input: Option<&PermissionsInput>) -> Permissions {
    match input {
        Some(input) if input.values().any(Option::is_some) => {
            input.iter().filter_map(|(name, list)| list.clone().map(|l| (name.clone(), l))).collect()
        }
        _ => existing.clone(),
    }
}

/// PATCH (Kinto merge): mentioned permissions are replaced, `null` ignored.
pub fn patch_permissions(existing: &Permissions, input: Option<&PermissionsInput>) -> Permissions {
    let mut out = existing.clone();
    for (name, list) in input.into_iter().flatten() {
        if let Some(list) = list {
            out.insert(name.clone(), list.clone());
        }
    }
    out
}

/// PATCH (merge-patch): mentioned permissions are replaced, `null` clears one.
pub fn merge_patch_permissions(existing: &Permissions, input: Option<&PermissionsInput>) -> Permissions {
    let mut out = existing.clone();
    for (name, list) in input.into_iter().flatten() {
        match list {
            Some(list) => out.insert(name.clone(), list.clone()),
            None => out.remove(name),
        };
    }
    out
}

const PATCH_OPS: [&str; 6] = ["test", "add", "remove", "replace", "move", "copy"];

/// Why Python's jsonpatch would refuse `operation` on `doc`, in its words; `None` if it applies.
fn json_patch_failure(doc: &Value, operation: &Value) -> Option<String> {
    let text = |key: &str| operation.get(key).and_then(Value::as_str);
    let op = text("op")?;
    let path = text("path")?;
    let (parent, last) = match locate(doc, path) {
        Ok(found) => found,
        Err(why) => return Some(why),
    };
    let last_shown = last.clone().unwrap_or_default();
    let target = last.as_deref().and_then(|key| child(parent, key));
    match op {
        "remove" if last.is_some() && target.is_none() => {
            Some(format!("can't remove a non-existent object '{last_shown}'"))
        }
        "replace" if last.is_some() && target.is_none() => Some(if parent.is_array() {
            "can't replace outside of list".to_owned()
        } else {
            format!("can't replace a non-existent object '{last_shown}'")
        }),
        "add"
            if parent.as_array().is_some_and(|items| {
                last.as_deref().and_then(|k| k.parse::<usize>().ok()).is_some_and(|index| index > items.len())
            }) =>
        {
            Some("can't insert outside of list".to_owned())
        }
        "test" => {
            let expected = operation.get("value").cloned().unwrap_or(Value::Null);
            let actual = if last.is_some() { target } else { Some(parent) };
            match actual {
                None => Some(format!("member '{last_shown}' not found in {}", pyrepr(parent))),
                Some(actual) if *actual != expected => Some(format!(
                    "{} ({}) is not equal to tested value {} ({})",
                    pystr(actual),
                    python_type(actual),
                    pystr(&expected),
                    python_type(&expected)
                )),
                Some(_) => None,
            }
        }
        "move" | "copy" => {
            let from = text("from")?;
            match locate(doc, from) {
                Err(why) => Some(why),
                Ok((from_parent, Some(key))) if child(from_parent, &key).is_none() => Some(format!("'{key}'")),
                Ok(_) if op == "move" && path.starts_with(&format!("{from}/")) => {
                    Some("Cannot move values into their own children".to_owned())
                }
                Ok(_) => None,
            }
        }
        _ => None,
    }
}

/// The container a JSON pointer's last token is in, and that token (`None` for the whole
/// document); the messages of Python's jsonpointer when the way there is missing.
fn locate<'a>(doc: &'a Value, pointer: &str) -> Result<(&'a Value, Option<String>), String> {
    if pointer.is_empty() {
        return Ok((doc, None));
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("Location must start with /".to_owned());
    };
    let tokens: Vec<String> = rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let mut current = doc;
    for token in &tokens[..tokens.len() - 1] {
        current = match child(current, token) {
            Some(next) => next,
            None if current.is_object() => return Err(format!("member '{token}' not found in {}", pyrepr(current))),
            None => return Err(format!("index '{token}' is out of bounds")),
        };
    }
    Ok((current, tokens.last().cloned()))
}

fn child<'a>(container: &'a Value, token: &str) -> Option<&'a Value> {
    match container {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "<class 'NoneType'>",
        Value::Bool(_) => "<class 'bool'>",
        Value::Number(n) if n.is_f64() => "<class 'float'>",
        Value::Number(_) => "<class 'int'>",
        Value::String(_) => "<class 'str'>",
        Value::Array(_) => "<class 'list'>",
        Value::Object(_) => "<class 'dict'>",
    }
}

/// RFC 6902 on the virtual document `{"data": …, "permissions": {perm: {principal: principal}}}`
/// (kinto-protocol.md §5.3): returns the patched data and ACL.
pub fn apply_json_patch(
    data: &Map<String, Value>,
    permissions: &Permissions,
    operations: Value,
) -> Result<(Map<String, Value>, Permissions), ApiError> {
    let Value::Array(mut operations) = operations else {
        return Err(ApiError::invalid_one(
            Location::Body,
            Some(""),
            format!("\"{}\" is not iterable", pystr(&operations)),
        ));
    };
    let mut missing = Vec::new();
    for (i, op) in operations.iter_mut().enumerate() {
        let Value::Object(op) = op else {
            return Err(not_a_mapping(&i.to_string(), op));
        };
        let name = match op.get("op") {
            None => {
                missing.push(Invalid::new(Location::Body, Some(&format!("{i}.op")), "Required"));
                continue;
            }
            Some(Value::String(name)) if PATCH_OPS.contains(&name.as_str()) => name.clone(),
            Some(other) => {
                missing.push(Invalid::new(
                    Location::Body,
                    Some(&format!("{i}.op")),
                    format!("\"{}\" is not one of {}", pystr(other), PATCH_OPS.join(", ")),
                ));
                continue;
            }
        };
        let Some(path) = op.get("path").and_then(Value::as_str).map(str::to_owned) else {
            missing.push(Invalid::new(Location::Body, Some(&format!("{i}.path")), "Required"));
            continue;
        };
        // Kinto's pattern for pointers: `(/\w*)+` matched at the start.
        for (key, pointer) in [("path", Some(path.as_str())), ("from", op.get("from").and_then(Value::as_str))] {
            if pointer.is_some_and(|p| !p.starts_with('/')) {
                let name = format!("{i}.{key}");
                missing.push(Invalid::new(Location::Body, Some(&name), "String does not match expected pattern"));
            }
        }
        // Permission entries are principal→principal maps: the value may be omitted.
        if path.starts_with("/permissions/")
            && !op.contains_key("value")
            && matches!(name.as_str(), "add" | "replace" | "test")
        {
            let principal = path.rsplit('/').next().unwrap_or_default();
            op.insert("value".into(), Value::String(principal.replace("~1", "/").replace("~0", "~")));
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::invalid(missing));
    }
    let mut perms_doc = Map::new();
    for name in ["read", "write"] {
        perms_doc.insert(name.into(), Value::Object(Map::new()));
    }
    for (name, principals) in permissions {
        let entries = principals.iter().map(|p| (p.clone(), Value::String(p.clone()))).collect();
        perms_doc.insert(name.clone(), Value::Object(entries));
    }
    let mut doc = serde_json::json!({"data": data, "permissions": perms_doc});
    let failed =
        |why: String| ApiError::invalid_one(Location::Body, None, format!("JSON Patch operation failed: {why}"));
    // One operation at a time, each checked first the way Python's jsonpatch checks it, so a
    // failure reads as Kinto's does.
    for operation in operations {
        if let Some(why) = json_patch_failure(&doc, &operation) {
            return Err(failed(why));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(vec![operation])).map_err(|e| failed(e.to_string()))?;
        json_patch::patch(&mut doc, &patch).map_err(|e| failed(e.to_string()))?;
    }
    let new_data = match doc.get("data") {
        Some(Value::Object(map)) => map.clone(),
        _ => return Err(failed("data must remain an object".into())),
    };
    let mut new_perms = Permissions::new();
    if let Some(Value::Object(perms)) = doc.get("permissions") {
        for (name, entries) in perms {
            if let Value::Object(entries) = entries {
                let principals: Vec<String> = entries.keys().cloned().collect();
                if !principals.is_empty() {
                    new_perms.insert(name.clone(), principals);
                }
            }
        }
    }
    Ok((new_data, new_perms))
}

/// The JSON Patch (RFC 6902) that turns `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Value {
    serde_json::to_value(json_patch::diff(before, after)).unwrap_or(Value::Array(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn envelope_rejects_unknown_keys_and_bad_shapes() {
        let err = parse_envelope(json!({"data": {}, "foo": 1}), &["read", "write"]).err();
        assert!(err.and_then(|e| e.message).is_some_and(|m| m.starts_with("Unrecognized keys in mapping")));
        assert!(parse_envelope(json!([1, 2]), &["read"]).is_err());
        assert!(parse_envelope(json!({"data": null}), &["read"]).is_err());
        let err = parse_envelope(json!({"permissions": {"bogus": []}}), &["read", "write", "record:create"]).err();
        assert_eq!(
            err.and_then(|e| e.message),
            Some("permissions in body: \"bogus\" is not one of read, write, record:create".into())
        );
        let ok = parse_envelope(json!({"data": {"a": 1}, "permissions": {"read": null}}), &["read"]);
        assert!(ok.is_ok_and(|e| e.permissions == Some(PermissionsInput::from([("read".into(), None)]))));
    }

    #[test]
    fn invalid_json_is_a_400_with_invalid_json_message() {
        for bad in [&b"{bad"[..], b"{\"a\":1} trailing", b"\xff\xfe"] {
            let err = parse_json(bad).err();
            assert!(err.as_ref().is_some_and(|e| e.status == 400), "{bad:?}");
            assert!(err.and_then(|e| e.message).is_some_and(|m| m.contains("Invalid JSON")));
        }
        let deep = "[".repeat(10_000);
        assert!(parse_json(deep.as_bytes()).is_err());
        assert_eq!(parse_json(b"").ok(), Some(json!({})));
    }

    #[test]
    fn three_patch_flavours_merge_as_kinto() {
        let existing = obj(json!({"a": "b", "sub": {"p": 1, "q": 2}}));
        let changes = obj(json!({"a": null, "sub": {"z": 3}}));
        assert_eq!(Value::Object(merge_shallow(&existing, &changes)), json!({"a": null, "sub": {"z": 3}}));
        assert_eq!(Value::Object(merge_patch(&existing, &changes)), json!({"sub": {"p": 1, "q": 2, "z": 3}}));
    }

    #[test]
    fn json_patch_edits_data_and_principals() {
        let data = obj(json!({"n": 1}));
        let perms = Permissions::from([("write".into(), vec!["bob".into()])]);
        let ops = json!([
            {"op": "add", "path": "/data/m", "value": 2},
            {"op": "add", "path": "/permissions/read/system.Everyone"},
            {"op": "remove", "path": "/permissions/write/bob"}
        ]);
        let (data, perms) = apply_json_patch(&data, &perms, ops).unwrap_or_default();
        assert_eq!(Value::Object(data), json!({"n": 1, "m": 2}));
        assert_eq!(perms, Permissions::from([("read".into(), vec!["system.Everyone".into()])]));
        let err = apply_json_patch(
            &obj(json!({"n": 1})),
            &Permissions::new(),
            json!([{"op": "test", "path": "/data/n", "value": 2}]),
        );
        assert!(err.err().and_then(|e| e.message).is_some_and(|m| m.starts_with("body: JSON Patch operation failed")));
        let err = apply_json_patch(&Map::new(), &Permissions::new(), json!([{"op": "bogus", "path": "/data/n"}]));
        assert!(err.is_err());
    }
}
