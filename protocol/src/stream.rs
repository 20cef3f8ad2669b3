//! The live-stream wire (WebSocket `/v1/ws` and SSE): client frames, server frames, cursors.
//!
//! Client → server (JSON text frames):
//! `{"type":"auth","authorization":"Basic …"}` (browsers; before any subscribe),
//! `{"type":"subscribe","id":"s1","filter":{"bucket":"b","collection":"c","resource_name":"record",
//! "id":"r1","actions":["create","update","delete"],"query":"status=done"},"since":"<cursor>"|"now"|<timestamp>,
//! "snapshot":false}`, `{"type":"unsubscribe","id":"s1"}`, `{"type":"ping","id":"p1"}`.
//!
//! Server → client: `subscribed`, `change`, `snapshot_done`, `lagged`, `error`, `pong` (see
//! [`ServerFrame`]). Every `change` carries the cursor to resume from.

use serde::Deserialize;
use serde_json::{json, Value};

/// A cursor is the log seq of the last change delivered, as an opaque string.
pub fn cursor(seq: u64) -> String {
    format!("{seq:016x}")
}

/// The seq a cursor names; `None` when it is not one of ours.
pub fn parse_cursor(cursor: &str) -> Option<u64> {
    (cursor.len() == 16).then(|| u64::from_str_radix(cursor, 16).ok()).flatten()
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub bucket: Option<String>,
    pub collection: Option<String>,
    pub resource_name: Option<String>,
    pub id: Option<String>,
    pub actions: Option<Vec<String>>,
    /// Kinto's filter grammar, as in a listing query string.
    pub query: Option<String>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// Only changes committed after the subscription.
    Now,
    /// After this cursor (resume).
    Cursor(u64),
    /// After this Kinto timestamp (`_since` semantics).
    Timestamp(u64),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    Auth {
        authorization: String,
    },
    Subscribe {
        id: String,
        #[serde(default)]
        filter: Box<Filter>,
        #[serde(default)]
        since: Option<Value>,
        #[serde(default)]
        snapshot: bool,
    },
    Unsubscribe {
        id: String,
    },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<ClientFrame, String> {
        serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))
    }
}

/// `since` as sent: `"now"` or absent, a cursor string, or a Kinto timestamp (number or digits).
pub fn parse_since(since: Option<&Value>) -> Result<Since, String> {
    match since {
        None | Some(Value::Null) => Ok(Since::Now),
        Some(Value::String(s)) if s == "now" => Ok(Since::Now),
        Some(Value::String(s)) => match parse_cursor(s) {
            Some(seq) => Ok(Since::Cursor(seq)),
            None => s.trim_matches('"').parse().map(Since::Timestamp).map_err(|_| format!("invalid since: {s}")),
        },
        Some(Value::Number(n)) => n.as_u64().map(Since::Timestamp).ok_or_else(|| format!("invalid since: {n}")),
        Some(other) => Err(format!("invalid since: {other}")),
    }
}

/// Frames the server sends, built as JSON values (`change` frames are spliced from a shared,
/// pre-encoded tail instead: see the server's stream hub).
pub struct ServerFrame;

impl ServerFrame {
    pub fn subscribed(id: &str, cursor: &str) -> Value {
        json!({"type": "subscribed", "id": id, "cursor": cursor})
    }

    pub fn snapshot_done(subscription: &str, cursor: &str) -> Value {
        json!({"type": "snapshot_done", "subscription": subscription, "cursor": cursor})
    }

    pub fn lagged(subscription: &str, cursor: &str) -> Value {
        json!({"type": "lagged", "subscription": subscription, "cursor": cursor})
    }

    pub fn error(id: Option<&str>, code: u16, errno: u16, message: &str) -> Value {
        json!({"type": "error", "id": id, "code": code, "errno": errno, "message": message})
    }

    pub fn pong(id: Option<&str>, cursor: &str) -> Value {
        json!({"type": "pong", "id": id, "cursor": cursor})
    }
}

/// Splices a `change` frame: `{"type":"change","subscription":<id>,` + the shared tail.
pub fn change_frame(subscription: &str, tail: &str) -> String {
    let id = Value::String(subscription.to_owned()).to_string();
    let mut frame = String::with_capacity(40 + id.len() + tail.len());
    frame.push_str("{\"type\":\"change\",\"subscription\":");
    frame.push_str(&id);
    frame.push(',');
    frame.push_str(tail);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_since_accepts_three_forms() {
        assert_eq!(parse_cursor(&cursor(42)), Some(42));
        assert_eq!(parse_since(Some(&json!(cursor(7)))), Ok(Since::Cursor(7)));
        assert_eq!(parse_since(Some(&json!("now"))), Ok(Since::Now));
        assert_eq!(parse_since(Some(&json!(1_700_000_000_000u64))), Ok(Since::Timestamp(1_700_000_000_000)));
        assert!(parse_since(Some(&json!("bogus"))).is_err());
    }

    #[test]
    fn frames_parse_and_splice() {
        let frame = ClientFrame::parse(r#"{"type":"subscribe","id":"s1","filter":{"bucket":"b"},"since":"now"}"#);
        assert!(matches!(frame, Ok(ClientFrame::Subscribe { ref id, .. }) if id == "s1"));
        assert!(ClientFrame::parse(r#"{"type":"subscribe","id":"s1","filter":{"bogus":1}}"#).is_err());
        let spliced = change_frame("s\"1", r#""cursor":"x"}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&spliced).ok(),
            Some(json!({"type":"change","subscription":"s\"1","cursor":"x"}))
        );
    }
}
