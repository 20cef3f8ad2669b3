//! What makes bytes and names survive a power cut: fsync of files, and of the directories
//! that name them.
//!
//! A file's data is durable after `fsync`/`fdatasync` of the file; its name (created or
//! renamed) only after `fsync` of its directory. Both are needed for a new file, and a new
//! directory needs its parent synced too.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Fsyncs the directory `dir` (its entries: files created, renamed or removed in it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, with every directory it creates made durable (each parent synced).
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_dir(&parent_of(created))?;
    }
    Ok(())
}

/// Writes `contents` to `path` so that, after a power cut, the file is either absent or
/// whole: a temporary file synced, renamed into place, and its directory synced.
pub fn write_atomic(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_dir(&parent_of(path))
}

/// Fsyncs a file written by other means (a copy, an export), then its directory.
pub fn sync_file_and_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()?;
    sync_dir(&parent_of(path))
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_makes_nested_directories_and_write_atomic_replaces_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all(&deep).expect("again: nothing to do");
        let file = deep.join("secret");
        write_atomic(&file, b"one", true).expect("write");
        write_atomic(&file, b"two", true).expect("replace");
        assert_eq!(std::fs::read(&file).expect("read"), b"two");
        let left: Vec<_> = std::fs::read_dir(&deep).expect("list").filter_map(|e| e.ok()).collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
