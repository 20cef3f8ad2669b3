//! What the fuzzers (`protocol/fuzz/`, cargo-fuzz) drive, and what CI replays from their corpus:
//! each entry point takes arbitrary bytes, runs one parser of the wire on them, and checks the
//! oracle: no panic, and every refusal a Kinto 400 with errno 107 (invalid parameters) in
//! Kinto's error shape. A broken oracle panics, which is what a fuzzer reports.

use serde_json::{Map, Value};

use crate::error::{ApiError, Errno};
use crate::{body, query, stream};

/// An entry point: arbitrary bytes in, a panic if the oracle breaks.
pub type Target = fn(&[u8]);

/// The entry points by name, as the corpus directories are named.
pub const TARGETS: [(&str, Target); 6] = [
    ("query", query_string),
    ("body", request_body),
    ("patch", patches),
    ("batch", batch_envelope),
    ("token", pagination_token),
    ("frame", stream_frame),
];

/// A refusal must be Kinto's 400 errno 107, rendered in Kinto's shape.
fn refused(err: &ApiError) {
    assert_eq!((err.status, err.errno), (400, Errno::InvalidParameters), "{err:?}");
    let rendered = err.body();
    assert_eq!(rendered["code"], 400, "{rendered}");
    assert!(rendered["error"].is_string() && rendered["errno"] == 107, "{rendered}");
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A query string: its pairs, then the list query they make.
pub fn query_string(data: &[u8]) {
    let raw = text(data);
    match query::parse_pairs(&raw) {
        Err(err) => refused(&err),
        Ok(pairs) => {
            if let Err(err) = query::parse_list_query(&pairs, 1_700_000_000_000, None) {
                refused(&err);
            }
            if let Err(err) = query::parse_list_query(&pairs, 1_700_000_000_000, Some(&["id", "last_modified"])) {
                refused(&err);
            }
        }
    }
}

/// A request body: JSON, then the `{data, permissions}` envelope.
pub fn request_body(data: &[u8]) {
    match body::parse_json(data) {
        Err(err) => refused(&err),
        Ok(value) => {
            if let Err(err) = body::parse_envelope(value, &["read", "write", "record:create"]) {
                refused(&err);
            }
        }
    }
}

/// The first line is a document (its `data`), the rest a patch: applied as a Kinto merge, an
/// RFC 7396 merge-patch and, if it is a list, an RFC 6902 JSON-Patch.
pub fn patches(data: &[u8]) {
    let raw = text(data);
    let (document, patch) = raw.split_once('\n').unwrap_or((&raw, "{}"));
    let object = |text: &str| match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let existing = object(document).unwrap_or_default();
    if let Some(changes) = object(patch) {
        let _ = body::merge_shallow(&existing, &changes);
        let merged = body::merge_patch(&existing, &changes);
        // Merge-patch is idempotent.
        assert_eq!(body::merge_patch(&merged, &changes), merged);
    }
    if let Ok(operations) = serde_json::from_str::<Value>(patch) {
        if let Err(err) = body::apply_json_patch(&existing, &Default::default(), operations) {
            refused(&err);
        }
    }
}

/// A batch request's envelope, read as the server reads it: an object whose `requests` is a
/// list of objects with a `method` and a `path`, each body an envelope.
pub fn batch_envelope(data: &[u8]) {
    let Ok(value) = body::parse_json(data) else { return };
    let Some(requests) = value.get("requests").and_then(Value::as_array) else { return };
    for request in requests {
        if let Some(sub) = request.get("body") {
            if let Err(err) = body::parse_envelope(sub.clone(), &["read", "write"]) {
                refused(&err);
            }
        }
        if let Some(path) = request.get("path").and_then(Value::as_str) {
            let query = path.split_once('?').map_or("", |(_, q)| q);
            query_string(query.as_bytes());
        }
    }
}

/// A `_token` against a sort, and the round trip of one we make.
pub fn pagination_token(data: &[u8]) {
    let raw = text(data);
    let sort = [query::SortKey::new("last_modified", true), query::SortKey::new("title", false)];
    if let Err(err) = query::Token::decode_at(&raw, &sort, 1_700_000_000_000) {
        refused(&err);
    }
    let mut last = Map::new();
    last.insert("last_modified".into(), Value::from(raw.len() as u64));
    last.insert("title".into(), Value::String(raw.clone()));
    let token = query::Token::for_last(&Value::Object(last.clone()), &sort, 3, raw);
    let decoded = query::Token::decode(&token.encode(), &sort).unwrap_or_else(|err| panic!("our own token: {err:?}"));
    assert_eq!(decoded.last_object, last);
}

/// A WebSocket frame from a client, and its `since`.
pub fn stream_frame(data: &[u8]) {
    if let Ok(stream::ClientFrame::Subscribe { since, .. }) = stream::ClientFrame::parse(&text(data)) {
        let _ = stream::parse_since(since.as_ref());
    }
    if let Some(seq) = stream::parse_cursor(&text(data)) {
        assert_eq!(stream::parse_cursor(&stream::cursor(seq)), Some(seq));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input of the fuzzers' corpus and of the regressions they found, replayed.
    #[test]
    fn corpus_and_regressions_replay_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in super::TARGETS {
            for kind in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).expect("corpus file");
                    target(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 40, "only {replayed} corpus inputs found under {}", root.display());
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use crate::{body, query, stream};

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-z\u{e9}\u{1f600} ]{0,6}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-c/~]{1,3}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
                ]
            })
        }

        proptest! {
            #[test]
            fn cursors_round_trip(seq in any::<u64>()) {
                prop_assert_eq!(stream::parse_cursor(&stream::cursor(seq)), Some(seq));
            }

            #[test]
            fn query_pairs_round_trip(pairs in prop::collection::vec(("[a-z_]{1,8}", "\\PC{0,8}"), 0..6)) {
                let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
                let decoded = query::parse_pairs(&encoded).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(decoded, pairs);
            }

            #[test]
            fn a_diff_applied_gives_the_after(before in json_value(), after in json_value()) {
                let patch: json_patch::Patch = serde_json::from_value(body::diff(&before, &after))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut doc = before.clone();
                json_patch::patch(&mut doc, &patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(doc, after);
            }

            #[test]
            fn tokens_round_trip(ts in 0u64..1_700_000_000_000, title in "\\PC{0,12}", offset in any::<u64>()) {
                let sort = [query::SortKey::new("last_modified", true), query::SortKey::new("title", false)];
                let mut last = Map::new();
                last.insert("last_modified".into(), Value::from(ts));
                last.insert("title".into(), Value::String(title));
                let token = query::Token::for_last(&Value::Object(last.clone()), &sort, offset, "n".into());
                let decoded = query::Token::decode(&token.encode(), &sort).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(decoded.last_object, last);
                prop_assert_eq!(decoded.offset, offset);
            }

            #[test]
            fn merge_patch_is_idempotent(before in json_value(), patch in json_value()) {
                if let (Value::Object(existing), Value::Object(changes)) = (before, patch) {
                    let once = body::merge_patch(&existing, &changes);
                    prop_assert_eq!(body::merge_patch(&once, &changes), once);
                }
            }
        }
    }
}
