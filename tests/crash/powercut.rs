//! A disk that loses power: a FUSE file system held in memory that keeps, for every file and
//! directory, what it holds now and what was last made durable (by `fsync`/`fdatasync` of the
//! file, `fsync` of the directory for its entries). A power cut unmounts it, throws away
//! everything not made durable, and mounts what is left — as a disk without power-loss
//! protection comes back after the page cache is gone (the method of LazyFS).
//!
//! What it models, strictly: a write reaches the disk only through an fsync of its file;
//! a created, renamed or removed name only through an fsync of its directory; a file whose
//! name survived but whose data was never synced comes back empty. `sync_file_range` never
//! reaches a FUSE file system, so it makes nothing durable here, as on a disk that lies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: usize = 4096;
const TTL: Duration = Duration::from_secs(1);

enum Content {
    File {
        data: Vec<u8>,
        /// What the last fsync made durable.
        synced: Vec<u8>,
        /// Pages written since.
        dirty: BTreeSet<usize>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        synced: BTreeMap<OsString, u64>,
    },
}

struct Node {
    content: Content,
    perm: u16,
    mtime: SystemTime,
    /// The name it was last given (for the slow snapshot sync).
    name: OsString,
}

impl Node {
    fn file(perm: u16) -> Node {
        Node {
            content: Content::File { data: Vec::new(), synced: Vec::new(), dirty: BTreeSet::new() },
            perm,
            mtime: SystemTime::now(),
            name: OsString::new(),
        }
    }

    fn dir(perm: u16) -> Node {
        Node {
            content: Content::Dir { entries: BTreeMap::new(), synced: BTreeMap::new() },
            perm,
            mtime: SystemTime::now(),
            name: OsString::new(),
        }
    }
}

/// A fault the disk injects once, at the `countdown`-th operation of its kind after arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A write fails with EIO, nothing of it written.
    Write,
    /// A write lands halfway, then fails with EIO (a torn write).
    TornWrite,
    /// An fsync fails with EIO, and the pages it should have written are dropped from the
    /// cache as Linux does (a later fsync succeeds without them: retrying is no cure).
    Fsync,
}

/// What a power cut threw away.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cut {
    /// Bytes of file content that differed from their durable state (counted by page).
    pub pages_lost: usize,
    /// Names created, removed or renamed but never synced in their directory.
    pub names_lost: usize,
}

/// Counts of what made data durable, since the mount.
#[derive(Debug, Default, Clone, Copy)]
pub struct Syncs {
    pub files: u64,
    pub dirs: u64,
}

struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    next_fh: u64,
    syncs: Syncs,
    /// When set, an fsync of a file named `*.generating` (a sled snapshot being written) takes
    /// this long, so a kill can be aimed inside it.
    slow_snapshot_sync: Option<Duration>,
    /// How many such slow fsyncs have begun.
    slow_syncs_begun: u64,
    /// The armed fault and how many operations of its kind remain before it strikes.
    fault: Option<(Fault, u64)>,
    /// Faults injected since the mount.
    faults_injected: u64,
}

const ROOT: u64 = 1;

impl Disk {
    fn new() -> Disk {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::dir(0o755));
        Disk {
            nodes,
            next_ino: 2,
            next_fh: 1,
            syncs: Syncs::default(),
            slow_snapshot_sync: None,
            slow_syncs_begun: 0,
            fault: None,
            faults_injected: 0,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &node.content {
            Content::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Content::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn entries(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::Dir { entries, .. }) => Ok(entries),
            Some(Content::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn add(&mut self, parent: u64, name: &OsStr, mut node: Node) -> Result<FileAttr, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        node.name = name.to_owned();
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries(parent)?.insert(name.to_owned(), ino);
        self.attr(ino).ok_or(Errno::EIO)
    }

    fn is_empty_dir(&self, ino: u64) -> bool {
        matches!(self.nodes.get(&ino).map(|n| &n.content), Some(Content::Dir { entries, .. }) if entries.is_empty())
    }

    /// Whether the armed fault strikes this operation (of one of `kinds`); it strikes once.
    fn strikes(&mut self, kinds: &[Fault]) -> Option<Fault> {
        let (fault, left) = self.fault.as_mut()?;
        if !kinds.contains(fault) {
            return None;
        }
        *left = left.saturating_sub(1);
        if *left > 0 {
            return None;
        }
        let fault = *fault;
        self.fault = None;
        self.faults_injected += 1;
        Some(fault)
    }

    fn write(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        match self.strikes(&[Fault::Write, Fault::TornWrite]) {
            Some(Fault::TornWrite) => {
                self.write_through(ino, offset, &bytes[..bytes.len() / 2])?;
                return Err(Errno::EIO);
            }
            Some(_) => return Err(Errno::EIO),
            None => {}
        }
        self.write_through(ino, offset, bytes)
    }

    fn write_through(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let Content::File { data, dirty, .. } = &mut node.content else { return Err(Errno::EISDIR) };
        let end = offset + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset..end].copy_from_slice(bytes);
        dirty.extend(offset / PAGE..end.div_ceil(PAGE));
        node.mtime = SystemTime::now();
        Ok(())
    }

    fn resize(&mut self, ino: u64, size: usize) -> Result<(), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let Content::File { data, dirty, .. } = &mut node.content else { return Err(Errno::EISDIR) };
        let (low, high) = (data.len().min(size), data.len().max(size));
        data.resize(size, 0);
        dirty.extend(low / PAGE..high.div_ceil(PAGE));
        node.mtime = SystemTime::now();
        Ok(())
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let struck = self.strikes(&[Fault::Fsync]).is_some();
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if struck {
            // The pages are "written" as far as the cache knows, but not on the disk.
            if let Content::File { dirty, .. } = &mut node.content {
                dirty.clear();
            }
            return Err(Errno::EIO);
        }
        match &mut node.content {
            Content::File { data, synced, dirty } => {
                synced.resize(data.len(), 0);
                for page in std::mem::take(dirty) {
                    let (start, end) = (page * PAGE, ((page + 1) * PAGE).min(data.len()));
                    if start < end {
                        synced[start..end].copy_from_slice(&data[start..end]);
                    }
                }
                self.syncs.files += 1;
            }
            Content::Dir { entries, synced } => {
                synced.clone_from(entries);
                self.syncs.dirs += 1;
            }
        }
        Ok(())
    }

    /// Everything not made durable is gone; only what the durable directories reach is left.
    fn power_cut(&mut self) -> Cut {
        let mut cut = Cut::default();
        let mut kept = HashMap::new();
        let mut reach = vec![ROOT];
        while let Some(ino) = reach.pop() {
            let Some(mut node) = self.nodes.remove(&ino) else { continue };
            match &mut node.content {
                Content::File { data, synced, dirty } => {
                    let differing = (0..data.len().max(synced.len()).div_ceil(PAGE))
                        .filter(|page| {
                            let range = |v: &Vec<u8>| {
                                let start = (page * PAGE).min(v.len());
                                v[start..((page + 1) * PAGE).min(v.len())].to_vec()
                            };
                            range(data) != range(synced)
                        })
                        .count();
                    cut.pages_lost += differing;
                    data.clone_from(synced);
                    dirty.clear();
                }
                Content::Dir { entries, synced } => {
                    let changed = entries.iter().filter(|(name, ino)| synced.get(*name) != Some(ino)).count()
                        + synced.keys().filter(|name| !entries.contains_key(*name)).count();
                    cut.names_lost += changed;
                    entries.clone_from(synced);
                    reach.extend(entries.values().copied());
                }
            }
            kept.insert(ino, node);
        }
        self.nodes = kept;
        cut
    }
}

/// The FUSE face of a [`Disk`] shared with the harness.
struct Fs(Arc<Mutex<Disk>>);

impl Fs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn done(reply: ReplyEmpty, outcome: Result<(), Errno>) {
    match outcome {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        match disk.lookup(parent.0, name).and_then(|ino| disk.attr(ino).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let Some(size) = size {
            if let Err(errno) = disk.resize(ino.0, size as usize) {
                return reply.error(errno);
            }
        }
        if let (Some(mode), Some(node)) = (mode, disk.nodes.get_mut(&ino.0)) {
            node.perm = (mode & 0o7777) as u16;
        }
        match disk.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.disk().add(parent.0, name, Node::dir((mode & !umask & 0o7777) as u16)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        let outcome = disk.entries(parent.0).and_then(|e| e.remove(name).map(drop).ok_or(Errno::ENOENT));
        done(reply, outcome);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut disk = self.disk();
        let outcome = disk.lookup(parent.0, name).and_then(|ino| {
            if !disk.is_empty_dir(ino) {
                return Err(Errno::ENOTEMPTY);
            }
            disk.entries(parent.0).map(|e| {
                e.remove(name);
            })
        });
        done(reply, outcome);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let outcome = (|| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            let ino = disk.lookup(parent.0, name)?;
            if let Ok(existing) = disk.lookup(newparent.0, newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if matches!(disk.nodes.get(&existing).map(|n| &n.content), Some(Content::Dir { .. }))
                    && !disk.is_empty_dir(existing)
                {
                    return Err(Errno::ENOTEMPTY);
                }
            }
            disk.entries(parent.0)?.remove(name);
            disk.entries(newparent.0)?.insert(newname.to_owned(), ino);
            if let Some(node) = disk.nodes.get_mut(&ino) {
                node.name = newname.to_owned();
            }
            Ok(())
        })();
        done(reply, outcome);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk();
        if !disk.nodes.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        disk.next_fh += 1;
        reply.opened(FileHandle(disk.next_fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let disk = self.disk();
        match disk.nodes.get(&ino.0).map(|n| &n.content) {
            Some(Content::File { data, .. }) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(Content::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk().write(ino.0, offset as usize, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let slow = {
            let mut disk = self.disk();
            let snapshot = disk.nodes.get(&ino.0).is_some_and(|n| n.name.to_string_lossy().ends_with(".generating"));
            let slow = disk.slow_snapshot_sync.filter(|_| snapshot);
            if slow.is_some() {
                disk.slow_syncs_begun += 1;
            }
            slow
        };
        if let Some(pause) = slow {
            std::thread::sleep(pause);
        }
        let outcome = self.disk().sync(ino.0);
        done(reply, outcome);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut disk = self.disk();
        let listed: Vec<(u64, OsString)> = match disk.entries(ino.0) {
            Ok(entries) => entries.iter().map(|(name, ino)| (*ino, name.clone())).collect(),
            Err(errno) => return reply.error(errno),
        };
        let dots = [(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))];
        for (index, (child, name)) in dots.into_iter().chain(listed).enumerate().skip(offset as usize) {
            let kind = match disk.nodes.get(&child).map(|n| &n.content) {
                Some(Content::File { .. }) => FileType::RegularFile,
                _ => FileType::Directory,
            };
            if reply.add(INodeNo(child), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let outcome = self.disk().sync(ino.0);
        done(reply, outcome);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, PAGE as u32, 255, PAGE as u32);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        match disk.add(parent.0, name, Node::file((mode & !umask & 0o7777) as u16)) {
            Ok(attr) => {
                disk.next_fh += 1;
                reply.created(&TTL, &attr, Generation(0), FileHandle(disk.next_fh), FopenFlags::empty());
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut disk = self.disk();
        let end = (offset + length) as usize;
        let outcome = match disk.nodes.get(&ino.0).map(|n| &n.content) {
            Some(Content::File { data, .. }) if data.len() < end => disk.resize(ino.0, end),
            Some(Content::File { .. }) => Ok(()),
            Some(Content::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        };
        done(reply, outcome);
    }
}

/// A mounted [`Disk`] at a temporary mount point; unmounted when dropped.
pub struct PowerDisk {
    disk: Arc<Mutex<Disk>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl PowerDisk {
    /// Mounts an empty disk, or says why it cannot be done here (no `/dev/fuse`, no right to
    /// mount).
    pub fn mount() -> Result<PowerDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mountpoint = dir.path().join("disk");
        std::fs::create_dir(&mountpoint).map_err(|e| format!("mount point: {e}"))?;
        let mut disk = PowerDisk { disk: Arc::new(Mutex::new(Disk::new())), session: None, mountpoint, _dir: dir };
        disk.attach()?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn attach(&mut self) -> Result<(), String> {
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("tidemark-powercut".into()), MountOption::RW];
        let fs = Fs(Arc::clone(&self.disk));
        let session = fuser::spawn_mount(fs, &self.mountpoint, &config)
            .map_err(|e| format!("cannot mount the power-cut file system: {e}"))?;
        self.session = Some(session);
        Ok(())
    }

    fn detach(&mut self) -> Result<(), String> {
        let Some(session) = self.session.take() else { return Ok(()) };
        // Lazy unmount: the session ends once the last open file is closed; a process still
        // holding one would stall the cut, so it is bounded.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.umount_and_join());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("unmount: {e}")),
            Err(_) => Err("unmount: a file on the power-cut disk is still open after 20 s".into()),
        }
    }

    /// Cuts the power: unmounts (every process using the disk must be dead or done), drops
    /// whatever was not made durable, and mounts what is left.
    pub fn power_cut(&mut self) -> Result<Cut, String> {
        self.detach()?;
        let cut = self.disk.lock().unwrap_or_else(|p| p.into_inner()).power_cut();
        self.attach()?;
        Ok(cut)
    }

    /// Makes every fsync of a sled snapshot being written (`*.generating`) take `pause`
    /// (None: as fast as the others).
    pub fn slow_snapshot_syncs(&self, pause: Option<Duration>) {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).slow_snapshot_sync = pause;
    }

    /// Arms `fault` to strike the `after`-th operation of its kind from now (None: disarm).
    pub fn arm(&self, fault: Option<(Fault, u64)>) {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).fault = fault.map(|(f, n)| (f, n.max(1)));
    }

    /// Faults injected since the mount.
    pub fn faults_injected(&self) -> u64 {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).faults_injected
    }

    /// How many slow snapshot fsyncs have begun since the mount.
    pub fn slow_syncs_begun(&self) -> u64 {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).slow_syncs_begun
    }

    pub fn syncs(&self) -> Syncs {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).syncs
    }
}

impl Drop for PowerDisk {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// The disk's own check: what is fsynced survives a cut, what is not does not.
pub fn self_test() -> Result<(), String> {
    let mut disk = PowerDisk::mount()?;
    let root = disk.path().to_path_buf();
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::write(root.join("unsynced"), b"gone").map_err(|e| io("write", e))?;
    let mut synced = std::fs::File::create(root.join("synced")).map_err(|e| io("create", e))?;
    std::io::Write::write_all(&mut synced, b"kept").map_err(|e| io("write", e))?;
    synced.sync_data().map_err(|e| io("fdatasync", e))?;
    std::io::Write::write_all(&mut synced, b" and lost").map_err(|e| io("write", e))?;
    drop(synced);
    std::fs::File::open(&root).and_then(|d| d.sync_all()).map_err(|e| io("fsync dir", e))?;
    std::fs::write(root.join("late"), b"name never synced").map_err(|e| io("write", e))?;
    std::fs::File::open(root.join("late")).and_then(|f| f.sync_all()).map_err(|e| io("fsync", e))?;
    disk.power_cut()?;
    let kept = std::fs::read(root.join("synced")).map_err(|e| io("read synced", e))?;
    let unsynced = std::fs::read(root.join("unsynced")).map_err(|e| io("read unsynced", e))?;
    let late = root.join("late").exists();
    if kept != b"kept" || !unsynced.is_empty() || late {
        return Err(format!(
            "the power-cut disk is wrong: synced {:?}, unsynced {:?}, late name present {late}",
            String::from_utf8_lossy(&kept),
            String::from_utf8_lossy(&unsynced)
        ));
    }
    Ok(())
}
