//! The key layout of the single keyspace: one prefix byte per view, then the view's own key.
//!
//! Lists are named by `(parent URI, URL segment)`, so an object's key follows from its URI alone;
//! parent URIs never contain `\0`, so `\0` separates components and every list's keys form one
//! contiguous range. Keeping the layout in
//! this one module is what lets `rebuild` drop "all views" by prefix.

/// The change log: `L` + seq (u64 big-endian) → event envelope. Never rewritten.
pub const LOG: u8 = b'L';
/// Objects: `O` + parent `\0` plural `\0` id → current state (tombstones flagged).
pub const OBJECT: u8 = b'O';
/// List timestamps: `T` + parent `\0` plural → u64 (the list ETag).
pub const LIST_TS: u8 = b'T';
/// Live-object counts: `N` + parent `\0` plural → u64 (`Total-Objects` without a scan).
pub const COUNT: u8 = b'N';
/// Changes: `C` + parent `\0` plural `\0` !ts (u64 BE, bits inverted) id → empty. One entry
/// per id, at its latest timestamp: `_since`, `_before` and the default order without a scan of
/// the list. Inverted so that newest-first — Kinto's default order — is a forward scan, which
/// sled does much faster than a reverse one.
pub const CHANGE: u8 = b'C';
/// ACLs: `A` + object URI → ACL.
pub const ACL: u8 = b'A';
/// Principal index: `P` + principal `\0` permission `\0` object URI → empty.
pub const PRINCIPAL: u8 = b'P';
/// Membership: `G` + member principal `\0` source URI → empty (a user's group principals).
pub const MEMBER: u8 = b'G';
/// Membership by source: `R` + source URI `\0` member principal → empty (a group's members, to
/// undo them when it changes or is purged).
pub const MEMBER_OF_SOURCE: u8 = b'R';
/// History: `H` + root URI `\0` seq (u64 BE) → the event's timestamp (u64 BE), action (one
/// byte), resource name `\0` object URI. Every event of an object under a root object (a Kinto
/// bucket), by commit order: a root's history without a scan of the log, and filters on what
/// the entry names decided without reading the event.
pub const HISTORY: u8 = b'H';
/// Versions: `V` + parent `\0` plural `\0` id `\0` ts (u64 BE) seq (u64 BE) → empty. Every
/// version of every object, by time: the version at a past moment is one seek, however long the
/// history since (`_at`, snapshots). An object's timestamps rise with its seqs but in one case
/// (re-created with a client's past `last_modified`); such an object is flagged by a key with
/// ts `u64::MAX` and its readers walk its event chain instead.
pub const VERSION: u8 = b'V';
/// Engine metadata (applied seq per view, format version).
pub const META: u8 = b'M';

/// Every view prefix, in the order the digest walks them.
pub const VIEW_PREFIXES: [u8; 10] =
    [OBJECT, LIST_TS, COUNT, CHANGE, ACL, PRINCIPAL, MEMBER, MEMBER_OF_SOURCE, HISTORY, VERSION];
/// The views record together the seq they have applied: one event updates all of them in one
/// batch, so one marker says how far they all are.
pub const VIEW_NAMES: [&str; 1] = ["views"];

pub fn log(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(LOG);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The seq a log key names; None for any other key (every key has a 9th byte somewhere).
pub fn seq_of_log_key(key: &[u8]) -> Option<u64> {
    let (&LOG, seq) = key.split_first()? else { return None };
    Some(u64::from_be_bytes(seq.try_into().ok()?))
}

/// Whether some key in `start..end` lies in the log.
pub fn meets_log(start: &[u8], end: &[u8]) -> bool {
    start < &[LOG + 1][..] && end > &[LOG][..]
}

fn list_part(prefix: u8, parent: &str, plural: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + parent.len() + plural.len());
    k.push(prefix);
    k.extend_from_slice(parent.as_bytes());
    k.push(0);
    k.extend_from_slice(plural.as_bytes());
    k
}

pub fn object(parent: &str, plural: &str, id: &str) -> Vec<u8> {
    let mut k = object_list_prefix(parent, plural);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of every object of one list.
pub fn object_list_prefix(parent: &str, plural: &str) -> Vec<u8> {
    let mut k = list_part(OBJECT, parent, plural);
    k.push(0);
    k
}

/// Prefix of every version of one object.
pub fn versions_prefix(parent: &str, plural: &str, id: &str) -> Vec<u8> {
    let mut k = list_part(VERSION, parent, plural);
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

pub fn version(parent: &str, plural: &str, id: &str, ts: u64, seq: u64) -> Vec<u8> {
    let mut k = versions_prefix(parent, plural, id);
    k.extend_from_slice(&ts.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Flags an object whose versions' timestamps do not rise with their seqs.
pub fn versions_unordered(parent: &str, plural: &str, id: &str) -> Vec<u8> {
    version(parent, plural, id, u64::MAX, 0)
}

/// The (timestamp, seq) a version key ends with.
pub fn version_of_key(key: &[u8]) -> Option<(u64, u64)> {
    let tail = key.len().checked_sub(16).and_then(|start| key.get(start..))?;
    let ts = u64::from_be_bytes(tail[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(tail[8..].try_into().ok()?);
    Some((ts, seq))
}

pub fn list_ts(parent: &str, plural: &str) -> Vec<u8> {
    list_part(LIST_TS, parent, plural)
}

pub fn count(parent: &str, plural: &str) -> Vec<u8> {
    list_part(COUNT, parent, plural)
}

pub fn change_list_prefix(parent: &str, plural: &str) -> Vec<u8> {
    let mut k = list_part(CHANGE, parent, plural);
    k.push(0);
    k
}

pub fn change(parent: &str, plural: &str, ts: u64, id: &str) -> Vec<u8> {
    let mut k = change_at(parent, plural, ts);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of the change entries of one list at exactly `ts`.
pub fn change_at(parent: &str, plural: &str, ts: u64) -> Vec<u8> {
    let mut k = change_list_prefix(parent, plural);
    k.extend_from_slice(&(!ts).to_be_bytes());
    k
}

/// Splits a change key of a list (given the list prefix length) into (ts, id).
pub fn split_change(key: &[u8], prefix_len: usize) -> Option<(u64, String)> {
    let ts_bytes: [u8; 8] = key.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
    let id = std::str::from_utf8(key.get(prefix_len + 8..)?).ok()?;
    Some((!u64::from_be_bytes(ts_bytes), id.to_owned()))
}

pub fn acl(uri: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + uri.len());
    k.push(ACL);
    k.extend_from_slice(uri.as_bytes());
    k
}

pub fn principal(principal: &str, perm: &str, uri: &str) -> Vec<u8> {
    let mut k = principal_prefix(principal);
    k.extend_from_slice(perm.as_bytes());
    k.push(0);
    k.extend_from_slice(uri.as_bytes());
    k
}

pub fn principal_prefix(principal: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + principal.len());
    k.push(PRINCIPAL);
    k.extend_from_slice(principal.as_bytes());
    k.push(0);
    k
}

pub fn member(principal: &str, group_uri: &str) -> Vec<u8> {
    let mut k = member_prefix(principal);
    k.extend_from_slice(group_uri.as_bytes());
    k
}

pub fn member_of_source(source_uri: &str, principal: &str) -> Vec<u8> {
    let mut k = member_of_source_prefix(source_uri);
    k.extend_from_slice(principal.as_bytes());
    k
}

/// The members of the source at `source_uri`.
pub fn member_of_source_prefix(source_uri: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + source_uri.len());
    k.push(MEMBER_OF_SOURCE);
    k.extend_from_slice(source_uri.as_bytes());
    k.push(0);
    k
}

/// The members of every source strictly below `uri`.
pub fn member_of_source_descendants(uri: &str) -> Vec<u8> {
    let mut k = vec![MEMBER_OF_SOURCE];
    k.extend_from_slice(uri.as_bytes());
    k.push(b'/');
    k
}

/// The root object of a URI: its first two segments (`/buckets/b` for anything in bucket b),
/// after any application namespace (`/@app~env/buckets/b`).
pub fn root_of(uri: &str) -> Option<&str> {
    let mut start = 0;
    while uri[start..].starts_with("/@") {
        start += 1 + uri[start + 1..].find('/')?;
    }
    let rest = uri[start..].strip_prefix('/')?;
    let first = rest.find('/')?;
    let end = rest[first + 1..].find('/').map_or(uri.len(), |second| start + first + 1 + second + 1);
    Some(&uri[..end])
}

pub fn history_prefix(root_uri: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + root_uri.len());
    k.push(HISTORY);
    k.extend_from_slice(root_uri.as_bytes());
    k.push(0);
    k
}

pub fn history(root_uri: &str, seq: u64) -> Vec<u8> {
    let mut k = history_prefix(root_uri);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The value of a history index entry (see [`HISTORY`]).
pub fn history_value(timestamp: u64, action: u8, resource: &str, uri: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + resource.len() + uri.len());
    v.extend_from_slice(&timestamp.to_be_bytes());
    v.push(action);
    v.extend_from_slice(resource.as_bytes());
    v.push(0);
    v.extend_from_slice(uri.as_bytes());
    v
}

/// A history index value's parts: timestamp, action byte, resource name, object URI.
pub fn split_history_value(value: &[u8]) -> Option<(u64, u8, &str, &str)> {
    let timestamp = read_u64(value.get(..8)?)?;
    let action = *value.get(8)?;
    let rest = value.get(9..)?;
    let split = rest.iter().position(|b| *b == 0)?;
    let resource = std::str::from_utf8(&rest[..split]).ok()?;
    let uri = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((timestamp, action, resource, uri))
}

/// Where the format of the views is recorded: views of another format are rebuilt on open.
pub fn views_format() -> Vec<u8> {
    meta("views_format")
}

pub fn member_prefix(principal: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + principal.len());
    k.push(MEMBER);
    k.extend_from_slice(principal.as_bytes());
    k.push(0);
    k
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn applied(view: &str) -> Vec<u8> {
    meta(&format!("applied/{view}"))
}

/// A listener's durable cursor (the last seq it has fully handled): metadata, not a view.
pub fn listener_cursor(name: &str) -> Vec<u8> {
    meta(&format!("listener/{name}"))
}

/// Prefix of every listener cursor.
pub fn listener_cursor_prefix() -> Vec<u8> {
    meta("listener/")
}

/// Key prefixes (for `prefix` in O, T, N, C) under which lists whose parent is `uri` itself or
/// lies below it are stored: the children purged when `uri` is deleted.
pub fn descendant_prefixes(prefix: u8, uri: &str) -> [Vec<u8>; 2] {
    let mut exact = vec![prefix];
    exact.extend_from_slice(uri.as_bytes());
    exact.push(0);
    let mut below = vec![prefix];
    below.extend_from_slice(uri.as_bytes());
    below.push(b'/');
    [exact, below]
}

/// Prefix of the ACLs of objects strictly below `uri`.
pub fn acl_descendants(uri: &str) -> Vec<u8> {
    let mut k = acl(uri);
    k.push(b'/');
    k
}

pub fn u64_value(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn read_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_of_a_uri_is_its_first_object() {
        assert_eq!(super::root_of("/buckets/b"), Some("/buckets/b"));
        assert_eq!(super::root_of("/buckets/b/collections/c/records/r"), Some("/buckets/b"));
        assert_eq!(super::root_of("/~alice/food/x"), Some("/~alice/food"));
        assert_eq!(super::root_of("/@notes~prod/buckets/b/collections/c"), Some("/@notes~prod/buckets/b"));
        assert_eq!(super::root_of("/@notes~prod/buckets/b"), Some("/@notes~prod/buckets/b"));
        assert_eq!(super::root_of("/buckets"), None);
        assert_eq!(super::root_of(""), None);
    }
}
