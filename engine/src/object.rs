//! What the objects view holds for one object, and the ACL attached to it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// An ACL: permission name → principals (sets, kept sorted so digests are stable).
pub type Acl = BTreeMap<String, Vec<String>>;

/// The current state of one object as the objects view stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    /// The full object, `id` and `last_modified` included; for a tombstone
    /// `{"id", "last_modified", "deleted": true}`.
    pub data: Map<String, Value>,
    pub last_modified: u64,
    pub deleted: bool,
    /// The seq of the event that produced this state.
    pub seq: u64,
}

impl StoredObject {
    pub fn id(&self) -> &str {
        self.data.get("id").and_then(Value::as_str).unwrap_or("")
    }

    // Layout: [deleted u8][seq u64 BE][last_modified u64 BE][compact JSON of data].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let json = Value::Object(self.data.clone()).to_string();
        let mut out = Vec::with_capacity(17 + json.len());
        out.push(u8::from(self.deleted));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.last_modified.to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredObject> {
        let corrupt = || EngineError::Corrupt("object view entry too short".into());
        let deleted = *bytes.first().ok_or_else(corrupt)? != 0;
        let seq = crate::keys::read_u64(bytes.get(1..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let last_modified = crate::keys::read_u64(bytes.get(9..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let data: Map<String, Value> = serde_json::from_slice(bytes.get(17..).ok_or_else(corrupt)?)
            .map_err(|e| EngineError::Corrupt(format!("object view entry: {e}")))?;
        Ok(StoredObject { data, last_modified, deleted, seq })
    }
}

/// An object as stored, its JSON left undecoded (for responses that only copy it out).
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub id: String,
    pub deleted: bool,
    pub seq: u64,
    pub last_modified: u64,
    /// The compact JSON of the object's data.
    pub json: Vec<u8>,
}

impl RawObject {
    pub(crate) fn split(id: &str, mut bytes: Vec<u8>) -> Result<RawObject> {
        let corrupt = || EngineError::Corrupt("object view entry too short".into());
        let deleted = *bytes.first().ok_or_else(corrupt)? != 0;
        let seq = crate::keys::read_u64(bytes.get(1..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let last_modified = crate::keys::read_u64(bytes.get(9..).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        if bytes.len() < 17 {
            return Err(corrupt());
        }
        let json = bytes.split_off(17);
        Ok(RawObject { id: id.to_owned(), deleted, seq, last_modified, json })
    }
}

pub(crate) fn encode_acl(acl: &Acl) -> Result<Vec<u8>> {
    rmp_serde::to_vec(acl).map_err(|e| EngineError::Corrupt(format!("acl encoding: {e}")))
}

pub(crate) fn decode_acl(bytes: &[u8]) -> Result<Acl> {
    rmp_serde::from_slice(bytes).map_err(|e| EngineError::Corrupt(format!("acl decoding: {e}")))
}

/// Sorts and dedups each ACE and drops empty ones, so equal ACLs encode equally.
pub fn normalize_acl(acl: Acl) -> Acl {
    acl.into_iter()
        .filter_map(|(perm, mut principals)| {
            principals.sort();
            principals.dedup();
            (!principals.is_empty()).then_some((perm, principals))
        })
        .collect()
}

/// `/buckets/b` + `collections` + `c` → `/buckets/b/collections/c`.
pub fn object_uri(parent: &str, plural: &str, id: &str) -> String {
    format!("{parent}/{plural}/{id}")
}

/// The inverse of [`object_uri`]: `(parent, plural, id)`.
pub fn split_uri(uri: &str) -> Option<(&str, &str, &str)> {
    let (rest, id) = uri.rsplit_once('/')?;
    let (parent, plural) = rest.rsplit_once('/')?;
    (!id.is_empty() && !plural.is_empty()).then_some((parent, plural, id))
}
