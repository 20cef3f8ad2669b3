//! The derived views and the one function that maps an event onto them.
//!
//! `apply_event` is used by the writer (live) and by replay/rebuild alike, so the views are, by
//! construction, a function of the log. It reads the views as they stand before the event (the
//! prior state of the object, the old ACL) and stages the changes in a [`Txn`].

use crate::error::{EngineError, Result};
use crate::event::{Action, Event};
use crate::keys;
use crate::object::{decode_acl, encode_acl, object_uri, split_uri, Acl, StoredObject};
use crate::txn::{KvRead, Txn};

pub(crate) fn read_object<R: KvRead + ?Sized>(
    r: &R,
    parent: &str,
    plural: &str,
    id: &str,
) -> Result<Option<StoredObject>> {
    match r.get(&keys::object(parent, plural, id))? {
        Some(bytes) => Ok(Some(StoredObject::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The object a URI names, if it is live.
pub(crate) fn read_live_uri<R: KvRead + ?Sized>(r: &R, uri: &str) -> Result<Option<StoredObject>> {
    let Some((parent, plural, id)) = split_uri(uri) else {
        return Ok(None);
    };
    Ok(read_object(r, parent, plural, id)?.filter(|o| !o.deleted))
}

/// An object's state without its data (`data` left empty): for callers that need only
/// `deleted`, `seq` and `last_modified`.
fn read_header<R: KvRead + ?Sized>(r: &R, parent: &str, plural: &str, id: &str) -> Result<Option<StoredObject>> {
    match r.get(&keys::object(parent, plural, id))? {
        Some(bytes) => {
            let raw = crate::object::RawObject::split(id, bytes)?;
            Ok(Some(StoredObject {
                data: serde_json::Map::new(),
                last_modified: raw.last_modified,
                deleted: raw.deleted,
                seq: raw.seq,
            }))
        }
        None => Ok(None),
    }
}

/// Whether a URI names a live object, without decoding it.
pub(crate) fn live_uri_exists<R: KvRead + ?Sized>(r: &R, uri: &str) -> Result<bool> {
    let Some((parent, plural, id)) = split_uri(uri) else {
        return Ok(false);
    };
    // The first byte of an object entry is its tombstone flag.
    Ok(r.get(&keys::object(parent, plural, id))?.is_some_and(|bytes| bytes.first() == Some(&0)))
}

fn read_u64<R: KvRead + ?Sized>(r: &R, key: &[u8]) -> Result<Option<u64>> {
    match r.get(key)? {
        Some(bytes) => {
            keys::read_u64(&bytes).map(Some).ok_or_else(|| EngineError::Corrupt("u64 view entry too short".into()))
        }
        None => Ok(None),
    }
}

/// The list timestamp (list ETag): the max `last_modified` of the list's objects and tombstones.
/// A list never written yet takes its parent's `last_modified` (0 under the root), so it is
/// stable, derived, and never goes backwards once the first child is written.
pub(crate) fn list_timestamp<R: KvRead + ?Sized>(r: &R, parent: &str, plural: &str) -> Result<u64> {
    if let Some(ts) = read_u64(r, &keys::list_ts(parent, plural))? {
        return Ok(ts);
    }
    Ok(read_live_uri(r, parent)?.map(|p| p.last_modified).unwrap_or(0))
}

pub(crate) fn live_count<R: KvRead + ?Sized>(r: &R, parent: &str, plural: &str) -> Result<u64> {
    Ok(read_u64(r, &keys::count(parent, plural))?.unwrap_or(0))
}

pub(crate) fn read_acl<R: KvRead + ?Sized>(r: &R, uri: &str) -> Result<Acl> {
    match r.get(&keys::acl(uri))? {
        Some(bytes) => decode_acl(&bytes),
        None => Ok(Acl::new()),
    }
}

/// Stages every view change that `event` implies.
pub(crate) fn apply_event(txn: &mut Txn<'_>, event: &Event) -> Result<()> {
    let (parent, plural, id) = (event.parent.as_str(), event.plural.as_str(), event.object_id.as_str());
    let deleted = event.action == Action::Delete;
    let prior = read_header(txn, parent, plural, id)?;

    // changes: one entry per id, at its latest timestamp
    if let Some(prior) = &prior {
        txn.delete(keys::change(parent, plural, prior.last_modified, id));
    }
    txn.put(keys::change(parent, plural, event.timestamp, id), Vec::new());

    // objects
    let data = event
        .data
        .as_object()
        .cloned()
        .ok_or_else(|| EngineError::Corrupt(format!("event {} carries non-object data", event.seq)))?;
    let stored = StoredObject { data, last_modified: event.timestamp, deleted, seq: event.seq };
    txn.put(keys::object(parent, plural, id), stored.encode());
    txn.put(keys::version(parent, plural, id, event.timestamp, event.seq), Vec::new());
    if prior.as_ref().is_some_and(|p| p.last_modified > event.timestamp) {
        txn.put(keys::versions_unordered(parent, plural, id), Vec::new());
    }

    // list timestamp: never decreases (a past client-chosen timestamp leaves it alone)
    let current = list_timestamp(txn, parent, plural)?;
    txn.put(keys::list_ts(parent, plural), keys::u64_value(current.max(event.timestamp)));

    // live count
    let was_live = prior.as_ref().is_some_and(|p| !p.deleted);
    if was_live == deleted {
        let count_key = keys::count(parent, plural);
        let count = read_u64(txn, &count_key)?.unwrap_or(0);
        let count = if deleted { count.saturating_sub(1) } else { count + 1 };
        txn.put(count_key, keys::u64_value(count));
    }

    // ACL, principal index and memberships
    let uri = object_uri(parent, plural, id);
    if event.members.is_some() || deleted {
        set_members(txn, &uri, event.members.as_deref().unwrap_or_default())?;
    }
    set_acl(txn, &uri, if deleted { None } else { Some(&event.permissions) }, was_live)?;

    // History: every event under its root object. Deleting the root wipes it, as Kinto's
    // history plugin does (the log keeps every event for audits).
    if let Some(root) = keys::root_of(&uri) {
        if deleted && root == uri {
            for (key, _) in txn.scan_prefix(&keys::history_prefix(root))? {
                txn.delete(key);
            }
        } else {
            let value = keys::history_value(event.timestamp, event.action.code(), &event.resource, &uri);
            txn.put(keys::history(root, event.seq), value);
        }
    }

    if deleted {
        purge_descendants(txn, &uri)?;
    }

    for view in keys::VIEW_NAMES {
        txn.put(keys::applied(view), keys::u64_value(event.seq));
    }
    Ok(())
}

/// Replaces an object's ACL and its principal-index entries. `had_acl`: whether an ACL may
/// exist (a missing object or a tombstone has none: deletes drop it).
fn set_acl(txn: &mut Txn<'_>, uri: &str, acl: Option<&Acl>, had_acl: bool) -> Result<()> {
    let old = if had_acl { read_acl(txn, uri)? } else { Acl::new() };
    // Most updates keep the ACL: nothing to rewrite (the principal index included).
    if acl.map_or(old.is_empty(), |acl| *acl == old) {
        return Ok(());
    }
    for (perm, principals) in &old {
        for principal in principals {
            txn.delete(keys::principal(principal, perm, uri));
        }
    }
    match acl.filter(|acl| !acl.is_empty()) {
        Some(acl) => {
            for (perm, principals) in acl {
                for principal in principals {
                    txn.put(keys::principal(principal, perm, uri), Vec::new());
                }
            }
            txn.put(keys::acl(uri), encode_acl(acl)?);
        }
        None => txn.delete(keys::acl(uri)),
    }
    Ok(())
}

/// Replaces the members of the principal source at `source_uri` (none: it is deleted or no
/// source any more).
fn set_members(txn: &mut Txn<'_>, source_uri: &str, new: &[String]) -> Result<()> {
    for (key, _) in txn.scan_prefix(&keys::member_of_source_prefix(source_uri))? {
        forget_member(txn, &key);
    }
    for member in new {
        txn.put(keys::member(member, source_uri), Vec::new());
        txn.put(keys::member_of_source(source_uri, member), Vec::new());
    }
    Ok(())
}

/// Drops one membership, given its `R` key (source URI `\0` member).
fn forget_member(txn: &mut Txn<'_>, key: &[u8]) {
    if let Some(split) = key.iter().position(|b| *b == 0) {
        let source = String::from_utf8_lossy(&key[1..split]);
        let member = String::from_utf8_lossy(&key[split + 1..]);
        txn.delete(keys::member(&member, &source));
    }
    txn.delete(key.to_vec());
}

/// Kinto's cascade: deleting a bucket or collection hard-deletes everything below it, their
/// tombstones, list timestamps and ACLs included (no child tombstones remain).
fn purge_descendants(txn: &mut Txn<'_>, uri: &str) -> Result<()> {
    for prefix in [keys::OBJECT, keys::LIST_TS, keys::COUNT, keys::CHANGE, keys::VERSION] {
        for scan in keys::descendant_prefixes(prefix, uri) {
            for (key, _) in txn.scan_prefix(&scan)? {
                txn.delete(key);
            }
        }
    }
    for (key, _) in txn.scan_prefix(&keys::member_of_source_descendants(uri))? {
        forget_member(txn, &key);
    }
    for (key, _) in txn.scan_prefix(&keys::acl_descendants(uri))? {
        let child_uri = String::from_utf8_lossy(&key[1..]).into_owned();
        set_acl(txn, &child_uri, None, true)?;
    }
    Ok(())
}
