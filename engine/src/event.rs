//! The event: one committed change of one object, and its on-disk envelope.
//!
//! Envelope: `[format u8][crc32 u32 BE][prev_hash 16 bytes][rmp-serde named payload]`. The crc
//! covers everything after it; `prev_hash` chains each event to the one before it
//! (`hash_n = sha256(prev_hash_n ‖ payload_n)[..16]`), so a lost, altered or reordered event is
//! detectable by `verify` and on open.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::error::{EngineError, Result};
use crate::object::Acl;

pub const FORMAT_V1: u8 = 1;
pub type ChainHash = [u8; 16];
const HEADER_LEN: usize = 1 + 4 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    /// The action as one byte, in the history index.
    pub fn code(self) -> u8 {
        match self {
            Action::Create => 0,
            Action::Update => 1,
            Action::Delete => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Action> {
        match code {
            0 => Some(Action::Create),
            1 => Some(Action::Update),
            2 => Some(Action::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// Who made a change and through which application context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub app_env: Option<String>,
    pub session_id: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Gap-free commit order, from 1.
    pub seq: u64,
    pub id: Ulid,
    /// The `last_modified` given to the object (Kinto epoch ms).
    pub timestamp: u64,
    /// The kind's name (Kinto's `resource_name`).
    pub resource: String,
    /// The URL segment of the object's list. Events written before it was recorded have it
    /// empty on disk; [`Event::upgrade_legacy`] fills it in.
    #[serde(default)]
    pub plural: String,
    /// Parent URI: `""` for buckets, `/buckets/b` for collections and groups,
    /// `/buckets/b/collections/c` for records.
    pub parent: String,
    pub object_id: String,
    pub action: Action,
    /// The principals that gain this object's URI as a principal (a Kinto group's members);
    /// `None` for objects that are no principal source, and on delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// The full object after the change; the tombstone on delete.
    pub data: Value,
    /// The ACL after the change (empty on delete).
    pub permissions: Acl,
    /// The seq of this object's previous event, if any: before-images are derived from it.
    pub prev_seq: Option<u64>,
    pub context: Context,
}

impl Event {
    pub fn uri(&self) -> String {
        crate::object::object_uri(&self.parent, &self.plural, &self.object_id)
    }

    /// Completes an event written before the log recorded URL segments and members. Those
    /// events all came from Kinto's resources, whose segment is the name plus `s` and whose
    /// only principal source was the group (its `members` field).
    pub fn upgrade_legacy(&mut self) {
        if !self.plural.is_empty() {
            return;
        }
        self.plural = format!("{}s", self.resource);
        if self.resource == "group" && self.action != Action::Delete && self.members.is_none() {
            let members = self
                .data
                .get("members")
                .and_then(Value::as_array)
                .map(|members| members.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect::<Vec<_>>());
            self.members = Some(members.unwrap_or_default());
        }
    }
}

pub fn chain_next(prev: &ChainHash, payload: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(payload);
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Encodes an event chained to `prev`; returns the bytes and the event's own chain hash.
pub fn encode(event: &Event, prev: &ChainHash) -> Result<(Vec<u8>, ChainHash)> {
    let payload =
        rmp_serde::to_vec_named(event).map_err(|e| EngineError::InvalidCommand(format!("event encoding: {e}")))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(prev);
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_be_bytes());
    Ok((out, chain_next(prev, &payload)))
}

/// A decoded envelope: the event, the hash it claims for its predecessor, and its own hash.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub event: Event,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
}

pub fn decode(bytes: &[u8]) -> Result<Decoded> {
    let (event, prev_hash) = decode_checked(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    Ok(Decoded { hash: chain_next(&prev_hash, payload), event, prev_hash })
}

/// The event alone, its checksum verified: what reads need. The chain hash (a SHA-256 of the
/// payload) is computed only where the chain is checked (open, verify, replay).
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    decode_checked(bytes).map(|(event, _)| event)
}

fn decode_checked(bytes: &[u8]) -> Result<(Event, ChainHash)> {
    if bytes.len() < HEADER_LEN {
        return Err(EngineError::Corrupt("log entry shorter than its header".into()));
    }
    if bytes[0] != FORMAT_V1 {
        return Err(EngineError::Corrupt(format!("unknown log format {}", bytes[0])));
    }
    let stored_crc = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    if crc32fast::hash(&bytes[5..]) != stored_crc {
        return Err(EngineError::Corrupt("log entry checksum mismatch".into()));
    }
    let mut prev_hash = [0u8; 16];
    prev_hash.copy_from_slice(&bytes[5..HEADER_LEN]);
    let payload = &bytes[HEADER_LEN..];
    let mut event: Event =
        rmp_serde::from_slice(payload).map_err(|e| EngineError::Corrupt(format!("log entry payload: {e}")))?;
    event.upgrade_legacy();
    Ok((event, prev_hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        Event {
            seq: 7,
            id: Ulid::new(),
            timestamp: 1_700_000_000_000,
            resource: "record".into(),
            plural: "records".into(),
            parent: "/buckets/b/collections/c".into(),
            object_id: "r1".into(),
            action: Action::Update,
            members: None,
            data: json!({"id": "r1", "last_modified": 1_700_000_000_000u64, "n": 1.5, "big": u64::MAX, "s": "é"}),
            permissions: Acl::from([("write".to_string(), vec!["account:bob".to_string()])]),
            prev_seq: Some(3),
            context: Context { user_id: Some("account:bob".into()), ..Context::default() },
        }
    }

    #[test]
    fn envelope_round_trips_and_chains() {
        let event = sample();
        let (bytes, hash) = encode(&event, &[1; 16]).expect("encode");
        let decoded = decode(&bytes).expect("decode");
        assert_eq!(decoded.event, event);
        assert_eq!(decoded.prev_hash, [1; 16]);
        assert_eq!(decoded.hash, hash);
    }

    #[test]
    fn flipped_bit_is_detected() {
        let (mut bytes, _) = encode(&sample(), &[0; 16]).expect("encode");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(decode(&bytes), Err(EngineError::Corrupt(_))));
    }
}
