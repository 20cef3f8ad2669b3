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

/// Left in the store directory when a flush failed (see [`rewrite_after_failed_flush`]).
pub const FAILED_FLUSH_MARKER: &str = "flush-failed";

pub struct SledStorage {
    db: sled::Db,
    tree: sled::Tree,
    files: SledFiles,
    dir: PathBuf,
}

/// Whether `dir` holds a sled store (its data file), without creating anything.
pub fn sled_store_exists(dir: &Path) -> bool {
    dir.join("db").is_file()
}

impl SledStorage {
    /// Opens (or creates) the store in `dir`; `cache_bytes`: sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        disk::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, &e))?;
        forget_unfinished_creation(dir)?;
        set_aside_interrupted_snapshots(dir)?;
        rewrite_after_failed_flush(dir)?;
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
        Ok(SledStorage { db, tree, files, dir: dir.to_path_buf() })
    }

    /// After a failed flush or write: leaves the marker that has the next open rewrite the store's files.
    /// Best effort: the disk is failing, and the engine has stopped writing anyway.
    fn mark_failed_flush(&self) {
        let marker = self.dir.join(FAILED_FLUSH_MARKER);
        if let Err(e) = disk::write_atomic(&marker, b"a flush failed; the next open rewrites the data files\n", false) {
            tracing::error!(error = %e, path = %marker.display(), "cannot leave the failed-flush marker");
        }
    }
}

/// A failed fsync does not keep the data it could not write dirty: Linux marks those pages
/// clean (the error is reported once), so they stay readable from the page cache — sled's next
/// open recovers them and writes a snapshot that counts them — yet no later fsync writes them,
/// and a power cut then leaves the store torn below its own snapshot, unopenable. So after a
/// failed flush, before sled opens again, every data file is read and written back whole and
/// synced: what the process can read is then what the disk holds.
fn rewrite_after_failed_flush(dir: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let marker = dir.join(FAILED_FLUSH_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    let mut files = vec![dir.join("db")];
    if let Ok(blobs) = std::fs::read_dir(dir.join("blobs")) {
        files.extend(blobs.filter_map(|entry| entry.ok()).map(|entry| entry.path()));
    }
    let mut buffer = vec![0u8; 1 << 20];
    for path in files.iter().filter(|path| path.is_file()) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error("cannot open", path, &e))?;
        let mut offset = 0u64;
        loop {
            let read = file.read_at(&mut buffer, offset).map_err(|e| io_error("cannot read", path, &e))?;
            if read == 0 {
                break;
            }
            file.write_all_at(&buffer[..read], offset).map_err(|e| io_error("cannot rewrite", path, &e))?;
            offset += read as u64;
        }
        file.sync_all().map_err(|e| io_error("cannot sync", path, &e))?;
    }
    for directory in [dir.join("blobs"), dir.to_path_buf()] {
        if directory.is_dir() {
            disk::sync_dir(&directory).map_err(|e| io_error("cannot sync", &directory, &e))?;
        }
    }
    std::fs::remove_file(&marker).map_err(|e| io_error("cannot remove", &marker, &e))?;
    disk::sync_dir(dir).map_err(|e| io_error("cannot sync", dir, &e))?;
    tracing::warn!(store = %dir.display(), files = files.len(), "a flush failed before this start: rewrote and synced the store's data files, so that what is read is what is on disk");
    Ok(())
}

/// sled creates a store by writing `conf`, then the data file `db`. A creation cut short
/// between the two (a failed write, a kill) leaves a `conf` that may be torn — which sled then
/// refuses — and no data: with no data file the store holds nothing, so it starts afresh.
fn forget_unfinished_creation(dir: &Path) -> Result<()> {
    let conf = dir.join("conf");
    if dir.join("db").exists() || !conf.exists() {
        return Ok(());
    }
    std::fs::remove_file(&conf).map_err(|e| io_error("cannot remove", &conf, &e))?;
    disk::sync_dir(dir).map_err(|e| io_error("cannot sync", dir, &e))?;
    tracing::warn!(store = %dir.display(), "the store's creation was cut short before it held any data: creating it afresh");
    Ok(())
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
        // The listing as it is now, with each blob synced at its present length.
        let mut listed = HashMap::with_capacity(synced.len());
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot list", &self.blobs_path, &e))?;
            let Ok(meta) = entry.metadata() else { continue }; // removed meanwhile (sled's GC)
            if synced.get(&entry.file_name()) != Some(&meta.len()) {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("cannot sync", &entry.path(), &e)),
                }
            }
            listed.insert(entry.file_name(), meta.len());
        }
        // A name created or removed since the last sync: the directory's entries changed.
        if listed != *synced {
            self.blobs_dir.sync_all().map_err(|e| io_error("cannot sync", &self.blobs_path, &e))?;
            *synced = listed;
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
        // sled reports a failed write of its buffers on a later operation: this may be it.
        self.tree.apply_batch(sled_batch).inspect_err(|_| self.mark_failed_flush())?;
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
        let flushed = self.db.flush().map(drop).map_err(EngineError::from).and_then(|()| self.files.sync());
        if flushed.is_err() {
            self.mark_failed_flush();
        }
        flushed
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
