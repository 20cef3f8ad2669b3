//! Queries over the views. Reads never go through the writer; a group commit is one atomic
//! batch, so a read sees a whole group or none of it.

use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::event::{self, Event};
use crate::keys;
use crate::object::{Acl, StoredObject};
use crate::replay;
use crate::storage::prefix_end;
use crate::views;
use crate::Engine;

/// Order of a list walk over the changes index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Oldest first (ascending `last_modified`).
    Oldest,
    /// Newest first: Kinto's default order.
    Newest,
}

/// A slice of a list by timestamp, both bounds exclusive (`_since` / `_before`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListRange {
    pub since: Option<u64>,
    pub before: Option<u64>,
}

impl Engine {
    /// The object at (parent, resource, id), tombstones included.
    pub fn get(&self, parent: &str, resource: &str, id: &str) -> Result<Option<StoredObject>> {
        views::read_object(self.storage(), parent, resource, id)
    }

    /// The live object a URI names.
    pub fn get_uri(&self, uri: &str) -> Result<Option<StoredObject>> {
        views::read_live_uri(self.storage(), uri)
    }

    /// The list timestamp (list ETag).
    pub fn list_timestamp(&self, parent: &str, resource: &str) -> Result<u64> {
        views::list_timestamp(self.storage(), parent, resource)
    }

    /// Live objects in the list (a maintained count, not a scan).
    pub fn count(&self, parent: &str, resource: &str) -> Result<u64> {
        views::live_count(self.storage(), parent, resource)
    }

    pub fn acl(&self, uri: &str) -> Result<Acl> {
        views::read_acl(self.storage(), uri)
    }

    /// Walks a list through the changes index in timestamp order, within `range`, calling
    /// `visit` for each object (tombstones included) until it returns false.
    pub fn walk_list(
        &self,
        parent: &str,
        resource: &str,
        range: ListRange,
        order: ListOrder,
        mut visit: impl FnMut(StoredObject) -> Result<bool>,
    ) -> Result<()> {
        let prefix = keys::change_list_prefix(parent, resource);
        let start = match range.since {
            Some(since) => keys::change_at(parent, resource, since.saturating_add(1)),
            None => prefix.clone(),
        };
        let end = match range.before {
            Some(before) => keys::change_at(parent, resource, before),
            None => prefix_end(&prefix),
        };
        let storage = self.storage();
        // Pages of index keys keep memory flat on large lists.
        const PAGE: usize = 512;
        let (mut lo, mut hi) = (start, end);
        loop {
            let chunk = storage.range(&lo, &hi, order == ListOrder::Newest, Some(PAGE))?;
            let Some((last_key, _)) = chunk.last().cloned() else { return Ok(()) };
            for (key, _) in &chunk {
                let (_, id) = keys::split_change(key, prefix.len())
                    .ok_or_else(|| EngineError::Corrupt("malformed changes index key".into()))?;
                // The index and the objects view are written in one batch, so the object exists.
                let Some(object) = views::read_object(storage, parent, resource, &id)? else {
                    continue;
                };
                if !visit(object)? {
                    return Ok(());
                }
            }
            if chunk.len() < PAGE {
                return Ok(());
            }
            match order {
                ListOrder::Oldest => {
                    lo = last_key;
                    lo.push(0);
                }
                ListOrder::Newest => hi = last_key,
            }
        }
    }

    /// The highest committed seq.
    pub fn last_seq(&self) -> Result<u64> {
        Ok(replay::read_tail(self.storage())?.last_seq)
    }

    /// Up to `limit` events from `from_seq` on, in commit order.
    pub fn events_from(&self, from_seq: u64, limit: usize) -> Result<Vec<Arc<Event>>> {
        let rows = self.storage().range(&keys::log(from_seq), &prefix_end(&[keys::LOG]), false, Some(limit))?;
        rows.into_iter().map(|(_, v)| Ok(Arc::new(event::decode(&v)?.event))).collect()
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
