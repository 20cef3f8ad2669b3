//! The embedded default backend: one sled tree holding the log and every view.
//!
//! sled 0.34.7 ends a flush with `sync_file_range`, which writes the pages but neither the
//! file's new size nor the drive's write cache, and it never syncs the blob files it creates,
//! its `conf` file or any directory entry: under power loss its "flushed" data is not on disk.
//! So every flush here is followed by the fsyncs that make it durable (see [`SledFiles`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::{KeyValue, Storage, WriteBatch};
use crate::disk;
use crate::error::{EngineError, Result};

/// Where interrupted sled snapshots are moved, inside the store directory.
pub const SET_ASIDE_DIR: &str = "set-aside";

pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    files: SledFiles,
}

/// Whether `dir` holds a sled store (its data file), without creating anything.
pub fn sled_store_exists(dir: &Path) -> bool {
    dir.join("db").is_file()
}

impl SledStorage {
    /// Opens (or creates) the store in `dir`; `cache_bytes`: sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        disk::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, &e))?;
        set_aside_interrupted_snapshots(dir)?;
        let config = sled::Config::new().path(dir).flush_every_ms(None).cache_capacity(cache_bytes);
        // A store closed moments ago in this process may still be locked by sled's background
        // threads for a short while: wait for it rather than fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match config.open() {
                // sled reports the lock as an I/O error of kind Other naming the lock.
                Err(sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let tree = db.open_tree("tidemark")?;
        // sled wrote its `conf`, data file and `blobs` directory without syncing any of them.
        let files = SledFiles::open(dir)?;
        files.sync()?;
        Ok(SledStorage { db, tree, files })
    }
}

/// sled 0.34.7 writes a snapshot of its page table while it opens a store. One it was writing
/// when the process died (`snap.<lsn>.generating`) was never committed (sled fsyncs it, then
/// renames it), but sled 0.34.7 lists it with the real ones on
/// open, picks the highest name, finds it truncated and refuses to open the store (sled issues
/// 1527 and 1533). Such files are moved aside, so sled opens from its last committed snapshot.
fn set_aside_interrupted_snapshots(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot list", dir, &e)),
    };
    let mut moved = false;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let aside = dir.join(SET_ASIDE_DIR);
        disk::create_dir_all(&aside).map_err(|e| io_error("cannot create", &aside, &e))?;
        let to = aside.join(&name);
        std::fs::rename(entry.path(), &to).map_err(|e| io_error("cannot move aside", &entry.path(), &e))?;
        tracing::warn!(
            file = %entry.path().display(),
            moved_to = %to.display(),
            "set aside an interrupted sled snapshot (never committed; sled would refuse to open the store with it)"
        );
        moved = true;
    }
    if moved {
        disk::sync_dir(dir).map_err(|e| io_error("cannot sync", dir, &e))?;
    }
    Ok(())
}

fn io_error(what: &str, path: &Path, err: &std::io::Error) -> EngineError {
    EngineError::Storage(format!("{what} {}: {err}", path.display()))
}

/// The files of a sled store and what makes them durable after one of sled's flushes.
struct SledFiles {
    /// The store directory: its entries change when sled creates its files or renames a
    /// snapshot into place.
    dir: File,
    /// sled's data file (`db`), where its log and pages are written.
    data: File,
    blobs_path: PathBuf,
    /// Values too large for a segment go to files of their own in `blobs/`.
    blobs_dir: File,
    /// The blob files synced, with the length they had then (sled appends to a new blob in
    /// several writes, so one listed mid-write is synced again once it grew).
    synced_blobs: Mutex<HashMap<OsString, u64>>,
}

impl SledFiles {
    fn open(dir: &Path) -> Result<SledFiles> {
        let open = |path: PathBuf| File::open(&path).map_err(|e| io_error("cannot open", &path, &e));
        let files = SledFiles {
            dir: open(dir.to_path_buf())?,
            data: open(dir.join("db"))?,
            blobs_path: dir.join("blobs"),
            blobs_dir: open(dir.join("blobs"))?,
            synced_blobs: Mutex::new(HashMap::new()),
        };
        File::open(dir.join("conf"))
            .and_then(|conf| conf.sync_all())
            .map_err(|e| io_error("cannot sync", &dir.join("conf"), &e))?;
        Ok(files)
    }

    /// Makes everything sled has written durable: new blob files first (a log entry must never
    /// outlive the blob it points to), then the data file with its size, then the directory.
    /// One caller at a time: a flush covers all writes made before it began.
    fn sync(&self) -> Result<()> {
        let mut synced = self.synced_blobs.lock();
        let entries = std::fs::read_dir(&self.blobs_path).map_err(|e| io_error("cannot list", &self.blobs_path, &e))?;
        let mut present = Vec::new();
        let mut grew = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list", &self.blobs_path, &e))?;
            let name = entry.file_name();
            let Ok(meta) = entry.metadata() else { continue }; // removed meanwhile (sled's GC)
            if synced.get(&name) != Some(&meta.len()) {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("cannot sync", &entry.path(), &e)),
                }
                synced.insert(name.clone(), meta.len());
                grew = true;
            }
            present.push(name);
        }
        if grew || synced.len() != present.len() {
            synced.retain(|name, _| present.contains(name));
            self.blobs_dir.sync_all().map_err(|e| io_error("cannot sync", &self.blobs_path, &e))?;
        }
        self.data.sync_data().map_err(|e| EngineError::Storage(format!("cannot sync sled's data file: {e}")))?;
        self.dir.sync_all().map_err(|e| EngineError::Storage(format!("cannot sync the store directory: {e}")))?;
        Ok(())
    }
}

impl Storage for SledStorage {
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: &[u8], reverse: bool, limit: Option<usize>) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let iter = self.tree.range(start..end);
        let take = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut push = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<()> {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        };
        if reverse {
            for item in iter.rev().take(take) {
                push(item)?;
            }
        } else {
            for item in iter.take(take) {
                push(item)?;
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.files.sync()
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
