//! Queries over the views. Reads never go through the writer; a group commit is one atomic
//! batch, so a read sees a whole group or none of it.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::event::{self, Action, Event};
use crate::keys;
use crate::object::{Acl, RawObject, StoredObject};
use crate::storage::prefix_end;
use crate::views;
use crate::Engine;

/// A point in the past: a log position, or a Kinto timestamp (the versions whose
/// `last_modified` is at or before it, as Kinto's history snapshots read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Seq(u64),
    Timestamp(u64),
}

impl AsOf {
    /// Is a version written by event `seq` with timestamp `ts` visible at this point?
    pub fn covers(self, seq: u64, ts: u64) -> bool {
        match self {
            AsOf::Seq(at) => seq <= at,
            AsOf::Timestamp(at) => ts <= at,
        }
    }
}

/// An object's version: today's state, or the event of a past one.
enum Version {
    Current(StoredObject),
    Past(Box<Event>),
}

/// Order of a list walk over the changes index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Oldest first (ascending `last_modified`).
    Oldest,
    /// Newest first: Kinto's default order.
    Newest,
}

/// A slice of a list by timestamp, both bounds exclusive (`_since` / `_before`).
/// One entry of a root's history index: an event, by what it names.
#[derive(Debug, Clone, Copy)]
pub struct HistoryEntry<'a> {
    pub seq: u64,
    pub timestamp: u64,
    pub action: Action,
    /// The kind's name (Kinto's `resource_name`).
    pub resource: &'a str,
    /// The object's URI, as stored.
    pub uri: &'a str,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ListRange {
    pub since: Option<u64>,
    pub before: Option<u64>,
}

impl Engine {
    /// The object at (parent, plural, id), tombstones included.
    pub fn get(&self, parent: &str, plural: &str, id: &str) -> Result<Option<StoredObject>> {
        views::read_object(self.storage(), parent, plural, id)
    }

    /// The live object a URI names.
    pub fn get_uri(&self, uri: &str) -> Result<Option<StoredObject>> {
        views::read_live_uri(self.storage(), uri)
    }

    /// Whether a URI names a live object (cheaper than [`Engine::get_uri`]).
    pub fn exists_uri(&self, uri: &str) -> Result<bool> {
        views::live_uri_exists(self.storage(), uri)
    }

    /// The list timestamp (list ETag).
    pub fn list_timestamp(&self, parent: &str, plural: &str) -> Result<u64> {
        views::list_timestamp(self.storage(), parent, plural)
    }

    /// Live objects in the list (a maintained count, not a scan).
    pub fn count(&self, parent: &str, plural: &str) -> Result<u64> {
        views::live_count(self.storage(), parent, plural)
    }

    pub fn acl(&self, uri: &str) -> Result<Acl> {
        views::read_acl(self.storage(), uri)
    }

    /// Walks a list through the changes index in timestamp order, within `range`, calling
    /// `visit` for each object (tombstones included) until it returns false.
    pub fn walk_list(
        &self,
        parent: &str,
        plural: &str,
        range: ListRange,
        order: ListOrder,
        mut visit: impl FnMut(StoredObject) -> Result<bool>,
    ) -> Result<()> {
        self.walk_objects(parent, plural, range, order, |_, bytes| visit(StoredObject::decode(&bytes)?))
    }

    /// [`Engine::walk_list`] without decoding the objects: their stored compact JSON as is.
    pub fn walk_list_raw(
        &self,
        parent: &str,
        plural: &str,
        range: ListRange,
        order: ListOrder,
        mut visit: impl FnMut(RawObject) -> Result<bool>,
    ) -> Result<()> {
        self.walk_objects(parent, plural, range, order, |id, bytes| visit(RawObject::split(id, bytes)?))
    }

    /// The stored objects of a list in the changes index's order. On a store across the network
    /// they are fetched a few dozen per round trip; locally one by one, so a walk that stops
    /// early reads nothing it does not show.
    fn walk_objects(
        &self,
        parent: &str,
        plural: &str,
        range: ListRange,
        order: ListOrder,
        mut visit: impl FnMut(&str, Vec<u8>) -> Result<bool>,
    ) -> Result<()> {
        let storage = self.storage();
        if !storage.shared() {
            return self.walk_ids(parent, plural, range, order, |id| {
                match storage.get(&keys::object(parent, plural, id))? {
                    // The index and the objects view are written in one batch, so the object exists.
                    Some(bytes) => visit(id, bytes),
                    None => Ok(true),
                }
            });
        }
        let batch = 32;
        let mut ids: Vec<String> = Vec::with_capacity(batch);
        let mut stopped = false;
        // Fetches and visits the ids waiting; false once the visitor has had enough.
        let mut drain = |ids: &mut Vec<String>| -> Result<bool> {
            let keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::object(parent, plural, id)).collect();
            let values = storage.get_many(&keys)?;
            for (id, value) in ids.drain(..).zip(values) {
                if let Some(bytes) = value {
                    if !visit(&id, bytes)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        };
        self.walk_ids(parent, plural, range, order, |id| {
            ids.push(id.to_owned());
            if ids.len() < batch {
                return Ok(true);
            }
            let more = drain(&mut ids)?;
            stopped = !more;
            Ok(more)
        })?;
        if !stopped && !ids.is_empty() {
            drain(&mut ids)?;
        }
        Ok(())
    }

    /// Walks the ids of a list through the changes index.
    fn walk_ids(
        &self,
        parent: &str,
        plural: &str,
        range: ListRange,
        order: ListOrder,
        mut visit: impl FnMut(&str) -> Result<bool>,
    ) -> Result<()> {
        let prefix = keys::change_list_prefix(parent, plural);
        // Keys hold inverted timestamps: newer entries sort first.
        let start = match range.before {
            Some(before) => prefix_end(&keys::change_at(parent, plural, before)),
            None => prefix.clone(),
        };
        let end = match range.since {
            Some(since) => keys::change_at(parent, plural, since),
            None => prefix_end(&prefix),
        };
        let storage = self.storage();
        // Pages of index keys keep memory flat on large lists; they start small because most
        // walks stop early (a page of a listing, a `_since` poll).
        let mut page = 64;
        let (mut lo, mut hi) = (start, end);
        loop {
            let chunk = storage.range(&lo, &hi, order == ListOrder::Oldest, Some(page))?;
            let Some((last_key, _)) = chunk.last().cloned() else { return Ok(()) };
            for (key, _) in &chunk {
                let (_, id) = keys::split_change(key, prefix.len())
                    .ok_or_else(|| EngineError::Corrupt("malformed changes index key".into()))?;
                if !visit(&id)? {
                    return Ok(());
                }
            }
            if chunk.len() < page {
                return Ok(());
            }
            page = (page * 2).min(1024);
            match order {
                ListOrder::Newest => {
                    lo = last_key;
                    lo.push(0);
                }
                ListOrder::Oldest => hi = last_key,
            }
        }
    }

    /// The URIs of the groups that list `principal` among their members.
    pub fn groups_of(&self, principal: &str) -> Result<Vec<String>> {
        let prefix = keys::member_prefix(principal);
        crate::storage::scan_prefix(self.storage(), &prefix)?
            .into_iter()
            .map(|(key, _)| {
                String::from_utf8(key[prefix.len()..].to_vec())
                    .map_err(|_| EngineError::Corrupt("member index key is not UTF-8".into()))
            })
            .collect()
    }

    /// The highest committed seq.
    pub fn last_seq(&self) -> Result<u64> {
        // Only the key is needed: no decoding (this runs on every listing to pin its pages).
        let last = self.storage().range(&[keys::LOG], &prefix_end(&[keys::LOG]), true, Some(1))?;
        match last.first() {
            None => Ok(0),
            Some((key, _)) => keys::seq_of_log_key(key).ok_or_else(|| EngineError::Corrupt("malformed log key".into())),
        }
    }

    /// The event committed under `seq`, if any.
    pub fn event_at(&self, seq: u64) -> Result<Option<Event>> {
        match self.storage().get(&keys::log(seq))? {
            Some(bytes) => {
                let event = event::decode_event(&bytes)?;
                if event.seq != seq {
                    return Err(EngineError::Corrupt(format!("log key {seq} holds event {}", event.seq)));
                }
                Ok(Some(event))
            }
            None => Ok(None),
        }
    }

    /// The object at (parent, plural, id) as it was once event `seq` was committed, tombstones
    /// included: the current state if it has not changed since, else the state its event chain
    /// (`prev_seq`) held then. `None` if it did not exist at `seq`, or no longer exists at all
    /// (purged with its parent).
    pub fn object_as_of(&self, parent: &str, plural: &str, id: &str, seq: u64) -> Result<Option<StoredObject>> {
        self.object_at(parent, plural, id, AsOf::Seq(seq))
    }

    /// The object's version at a point in the past (see [`AsOf`]), tombstones included; `None`
    /// if it did not exist yet then (or was purged with its parent since).
    pub fn object_at(&self, parent: &str, plural: &str, id: &str, at: AsOf) -> Result<Option<StoredObject>> {
        match self.version_at(parent, plural, id, at)? {
            Some(Version::Current(object)) => Ok(Some(object)),
            Some(Version::Past(event)) => Ok(Some(stored_state(&event)?)),
            None => Ok(None),
        }
    }

    /// The event that made the object's version at `at` (see [`Engine::object_at`]).
    pub fn event_of_version_at(&self, parent: &str, plural: &str, id: &str, at: AsOf) -> Result<Option<Event>> {
        match self.version_at(parent, plural, id, at)? {
            Some(Version::Current(object)) => self.event_at(object.seq),
            Some(Version::Past(event)) => Ok(Some(*event)),
            None => Ok(None),
        }
    }

    /// Today's state if it is already the version at `at`, else the event that made that
    /// version: the newest (by seq) whose position or timestamp `at` covers, found in the
    /// versions index (one seek for a timestamp, a scan of small keys for a seq).
    fn version_at(&self, parent: &str, plural: &str, id: &str, at: AsOf) -> Result<Option<Version>> {
        let Some(current) = self.get(parent, plural, id)? else {
            return Ok(None);
        };
        if at.covers(current.seq, current.last_modified) {
            return Ok(Some(Version::Current(current)));
        }
        let prefix = keys::versions_prefix(parent, plural, id);
        let end = prefix_end(&prefix);
        let newest = self.storage().range(&prefix, &end, true, Some(1))?;
        if newest.first().and_then(|(key, _)| keys::version_of_key(key)).is_some_and(|(ts, _)| ts == u64::MAX) {
            return self.version_by_chain(current, id, at);
        }
        let seq = match at {
            AsOf::Timestamp(ts) => {
                // Keys below `ts + 1` in time: the last of them is the version then.
                let mut bound = prefix.clone();
                bound.extend_from_slice(&ts.saturating_add(1).to_be_bytes());
                let found = self.storage().range(&prefix, &bound, true, Some(1))?;
                found.first().and_then(|(key, _)| keys::version_of_key(key)).map(|(_, seq)| seq)
            }
            AsOf::Seq(at_seq) => self.version_seq_before(&prefix, &end, at_seq)?,
        };
        let Some(seq) = seq else { return Ok(None) };
        let event =
            self.event_at(seq)?.ok_or_else(|| EngineError::Corrupt(format!("version {seq} of {id} is missing")))?;
        Ok(Some(Version::Past(Box::new(event))))
    }

    /// The newest version of an object at or before `at_seq`, walking its versions newest first.
    fn version_seq_before(&self, prefix: &[u8], end: &[u8], at_seq: u64) -> Result<Option<u64>> {
        let mut hi = end.to_vec();
        let mut page = 64;
        loop {
            let rows = self.storage().range(prefix, &hi, true, Some(page))?;
            for (key, _) in &rows {
                match keys::version_of_key(key) {
                    Some((_, seq)) if seq <= at_seq => return Ok(Some(seq)),
                    Some(_) => {}
                    None => return Err(EngineError::Corrupt("version key too short".into())),
                }
            }
            match rows.last() {
                Some((last, _)) if rows.len() == page => hi = last.clone(),
                _ => return Ok(None),
            }
            page = (page * 4).min(4096);
        }
    }

    /// [`Engine::version_at`] by the object's event chain (`prev_seq`), for an object whose
    /// timestamps do not follow its seqs.
    fn version_by_chain(&self, current: StoredObject, id: &str, at: AsOf) -> Result<Option<Version>> {
        let mut newer = current.seq;
        loop {
            let event = self
                .event_at(newer)?
                .ok_or_else(|| EngineError::Corrupt(format!("object {id} names missing event {newer}")))?;
            let Some(prev) = event.prev_seq else {
                // Created (or re-created after a purge) after that point.
                return Ok(None);
            };
            if prev >= newer {
                return Err(EngineError::Corrupt(format!("event {newer} points forward to {prev}")));
            }
            let old = self
                .event_at(prev)?
                .ok_or_else(|| EngineError::Corrupt(format!("event {newer} names missing event {prev}")))?;
            if at.covers(old.seq, old.timestamp) {
                return Ok(Some(Version::Past(Box::new(old))));
            }
            newer = prev;
        }
    }

    /// Up to `limit` events from `from_seq` on, in commit order.
    pub fn events_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Arc<Event>>> {
        let rows = self.storage().range(&keys::log(from_seq), &prefix_end(&[keys::LOG]), false, Some(limit))?;
        rows.into_iter().map(|(_, v)| Ok(Arc::new(event::decode_event(&v)?))).collect()
    }

    /// Walks the events of everything under the root object `root_uri` (a Kinto bucket), since
    /// the root was last created, newest first, calling `visit` until it returns false.
    pub fn walk_history(&self, root_uri: &str, mut visit: impl FnMut(Arc<Event>) -> Result<bool>) -> Result<()> {
        self.walk_history_index(root_uri, |entry| {
            let event = self
                .event_at(entry.seq)?
                .ok_or_else(|| EngineError::Corrupt(format!("history names missing event {}", entry.seq)))?;
            visit(Arc::new(event))
        })
    }

    /// The history index of `root_uri`, newest first, until `visit` returns false: what each
    /// entry names, without reading its event (`event_at` does, for the entries wanted).
    pub fn walk_history_index(
        &self,
        root_uri: &str,
        mut visit: impl FnMut(HistoryEntry<'_>) -> Result<bool>,
    ) -> Result<()> {
        let prefix = keys::history_prefix(root_uri);
        let mut hi = prefix_end(&prefix);
        // Pages of index entries: most walks stop after a page.
        let mut page = 64;
        loop {
            let rows = self.storage().range(&prefix, &hi, true, Some(page))?;
            let Some((last, _)) = rows.last() else { return Ok(()) };
            hi = last.clone();
            for (key, value) in &rows {
                let corrupt = || EngineError::Corrupt("malformed history index entry".into());
                let seq = keys::read_u64(&key[prefix.len()..]).ok_or_else(corrupt)?;
                let (timestamp, action, resource, uri) = keys::split_history_value(value).ok_or_else(corrupt)?;
                let action = Action::from_code(action).ok_or_else(corrupt)?;
                if !visit(HistoryEntry { seq, timestamp, action, resource, uri })? {
                    return Ok(());
                }
            }
            if rows.len() < page {
                return Ok(());
            }
            page = (page * 4).min(4096);
        }
    }

    /// The URIs of the objects written after `at`, each once, newest first: read back from the
    /// log's head. For a timestamp the walk goes on until events are a minute older than it, as
    /// timestamps follow the log's order within a list and across lists up to the clock's
    /// drift. Costs one log read per event since `at`.
    pub fn written_after(&self, at: AsOf) -> Result<Vec<String>> {
        const DRIFT_MS: u64 = 60_000;
        let mut seen = std::collections::HashSet::new();
        let mut uris = Vec::new();
        let start = keys::log(1);
        let mut hi = prefix_end(&[keys::LOG]);
        loop {
            let rows = self.storage().range(&start, &hi, true, Some(256))?;
            let Some((last, _)) = rows.last() else { return Ok(uris) };
            hi = last.clone();
            for (_, bytes) in &rows {
                let event = event::decode_event(bytes)?;
                let past = match at {
                    AsOf::Seq(seq) => event.seq <= seq,
                    AsOf::Timestamp(ts) => event.timestamp.saturating_add(DRIFT_MS) <= ts,
                };
                if past {
                    return Ok(uris);
                }
                if !at.covers(event.seq, event.timestamp) && seen.insert(event.uri()) {
                    uris.push(event.uri());
                }
            }
            if rows.len() < 256 {
                return Ok(uris);
            }
        }
    }

    /// Every (permission, object URI) the principal is named in, from the principal index.
    pub fn objects_of_principal(&self, principal: &str) -> Result<Vec<(String, String)>> {
        let prefix = keys::principal_prefix(principal);
        let rows = crate::storage::scan_prefix(self.storage(), &prefix)?;
        rows.into_iter()
            .map(|(key, _)| {
                let rest = std::str::from_utf8(&key[prefix.len()..])
                    .map_err(|_| EngineError::Corrupt("principal index key is not UTF-8".into()))?;
                let (perm, uri) = rest
                    .split_once('\0')
                    .ok_or_else(|| EngineError::Corrupt("malformed principal index key".into()))?;
                Ok((perm.to_owned(), uri.to_owned()))
            })
            .collect()
    }
}

/// The object state an event produced (what the objects view held right after it).
fn stored_state(event: &Event) -> Result<StoredObject> {
    let data = event
        .data
        .as_object()
        .cloned()
        .ok_or_else(|| EngineError::Corrupt(format!("event {} carries non-object data", event.seq)))?;
    Ok(StoredObject {
        data,
        last_modified: event.timestamp,
        deleted: event.action == event::Action::Delete,
        seq: event.seq,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use crate::{Acl, Command, Context, Engine, EngineConfig, Expect, Op};

    const C: &str = "/buckets/b/collections/c";

    fn put(parent: &str, resource: &str, id: &str, data: serde_json::Value) -> Command {
        Command {
            resource: resource.into(),
            plural: format!("{resource}s"),
            members: None,
            parent: parent.into(),
            id: id.into(),
            op: Op::Put { data: data.as_object().cloned().unwrap_or_default(), permissions: Acl::new() },
            expect: Expect::Any,
            last_modified: None,
            context: Context::default(),
        }
    }

    #[test]
    fn object_as_of_walks_the_event_chain_back() {
        let engine = Engine::open_memory(EngineConfig::default()).unwrap();
        engine
            .submit_blocking(vec![put("", "bucket", "b", json!({})), put("/buckets/b", "collection", "c", json!({}))])
            .unwrap();
        let v1 = engine.submit_blocking(vec![put(C, "record", "r", json!({"v": 1}))]).unwrap()[0].seq;
        let other = engine.submit_blocking(vec![put(C, "record", "o", json!({}))]).unwrap()[0].seq;
        let v2 = engine.submit_blocking(vec![put(C, "record", "r", json!({"v": 2}))]).unwrap()[0].seq;
        let gone =
            engine.submit_blocking(vec![Command { op: Op::Delete, ..put(C, "record", "r", json!({})) }]).unwrap();
        let v3 = engine.submit_blocking(vec![put(C, "record", "r", json!({"v": 3}))]).unwrap()[0].seq;

        let at = |seq| engine.object_as_of(C, "records", "r", seq).unwrap();
        assert_eq!(at(v1 - 1), None, "not created yet");
        let first = at(v1).unwrap();
        assert_eq!((first.data["v"].clone(), first.seq, first.deleted), (json!(1), v1, false));
        assert_eq!(at(other).unwrap().data["v"], 1, "unchanged by another object's event");
        assert_eq!(at(v2).unwrap().data["v"], 2);
        let tombstone = at(gone[0].seq).unwrap();
        assert!(tombstone.deleted);
        assert_eq!(tombstone.last_modified, gone[0].timestamp);
        assert_eq!(at(v3).unwrap(), engine.get(C, "records", "r").unwrap().unwrap(), "current state");
        assert_eq!(engine.object_as_of(C, "records", "missing", v3).unwrap(), None);
        assert_eq!(engine.last_seq().unwrap(), v3);
        assert_eq!(engine.event_at(v2).unwrap().unwrap().seq, v2);
        assert!(engine.event_at(v3 + 1).unwrap().is_none());
    }
}
