//! [`FileDisk`]: the core's [`Disk`] trait over `std::fs`, for the real node.
//!
//! Every trait path is relative to a root directory (the node's data directory). Paths are
//! checked lexically before any syscall: absolute paths and empty, `.` or `..` components are
//! refused with [`DiskError::Io`], so nothing the core asks for can name a file outside the root.
//! (Symlinks planted *inside* the root by an operator are followed; the data directory is the
//! node's own.)
//!
//! ## Durability model
//! This implements the contract in `railyard_core::disk` literally:
//! - `append`, `write_at` and `truncate` are plain positional writes / `ftruncate` into the page
//!   cache. They are visible to readers at once and durable only after `sync(path)`, which is
//!   `fdatasync`. `fdatasync` also flushes the metadata needed to read the data back (the file
//!   size), which is all a log append needs; it skips mtime, which nobody reads.
//! - `create`, `remove` and `rename` fsync the parent directory before returning, since a new or
//!   removed directory entry is otherwise not durable even when the file's data is. `create`
//!   also creates missing parent directories, fsyncing each new directory's own parent, top-down,
//!   so the whole chain of entries is durable.
//! - A failed `fdatasync` poisons the file: every later `sync` of it fails too. After a failed
//!   writeback Linux may mark the dirty pages clean, so a retry could "succeed" without the data
//!   ever reaching the disk (the PostgreSQL fsyncgate lesson). Only the node's restart, which
//!   re-reads what is really on disk, clears it.
//! - A failed `append` (e.g. ENOSPC) truncates the file back to its previous length, so the
//!   partial write is not visible and [`DiskError::NoSpace`] means "nothing changed". `write_at`
//!   cuts back any extension the same way, but cannot restore bytes it overwrote inside the old
//!   length; the core only overwrites in place in `SlotFile`, whose slots are CRC-checked.
//! - What a restarted node reads is durable. A crashed *process* (unlike a crashed machine)
//!   leaves its unsynced writes in the page cache, where log recovery would read them and raft
//!   would vote and ack on them, yet a later power cut could still drop them. So the first time
//!   this instance opens a file it did not create, it `fdatasync`s it (and fsyncs its directory
//!   once): one sync per file per process lifetime, paid mostly during recovery at startup. This
//!   matches the simulator, whose crash drops unsynced data outright.
//!
//! ## File handles
//! Open files live in a bounded cache so appends and reads do not reopen files. When it is full
//! the least recently used handle *without unsynced writes* is closed. Handles with unsynced
//! writes are never closed: a writeback error is reported to the descriptors open when it
//! happens, so closing one before its `fdatasync` could let a lost write go unnoticed. The cap
//! is therefore soft, exceeded only while more files than the cap have unsynced writes (the core
//! keeps a handful dirty between syncs).
//!
//! The node is single-threaded, and the trait takes `&self`, so state is behind a `RefCell`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use railyard_core::disk::{split_path, Disk, DiskError};

/// Default bound on cached idle file handles: enough for hundreds of partitions' active segments
/// and meta files, while leaving the process's descriptor budget to sockets.
pub const DEFAULT_MAX_OPEN_FILES: usize = 1024;

/// Raw `ENOSPC`. `io::ErrorKind::StorageFull` covers it on current std; the raw check keeps the
/// mapping right if std ever classifies it differently.
const ENOSPC: i32 = 28;
/// Raw `EDQUOT` on Linux: a filesystem quota is, to the broker, the same as a full disk.
#[cfg(target_os = "linux")]
const EDQUOT: i32 = 122;

/// Why [`FileDisk::open`] refused a data directory. Each variant names the path, so the node's
/// startup error tells the operator exactly what to fix.
#[derive(Debug, thiserror::Error)]
pub enum FileDiskError {
    /// The directory (or one of its parents) could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    /// The path exists but is not a directory.
    #[error("data directory {} exists but is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// The directory cannot be listed.
    #[error("data directory {} is not readable: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    /// A file cannot be created, written, synced or removed in the directory.
    #[error("data directory {} is not writable: {source}", path.display())]
    Unwritable { path: PathBuf, source: io::Error },
}

/// One cached open file.
#[derive(Debug)]
struct Handle {
    file: File,
    /// The file's length as this process made it (appends write here, no `fstat` per append).
    len: u64,
    /// Written or truncated since the last successful `fdatasync`; such handles are not evicted.
    unsynced: bool,
    /// The error of a failed `fdatasync`; sticky (see the module docs).
    poisoned: Option<String>,
    /// LRU stamp from `Handles::tick`.
    last_used: u64,
}

#[derive(Debug)]
struct Handles {
    open: BTreeMap<String, Handle>,
    tick: u64,
    max_open: usize,
    /// Files whose contents from before this `FileDisk` was opened are known durable (synced at
    /// first open, or created by this instance; renames carry it along).
    settled: BTreeSet<String>,
    /// Directories whose entries are known durable in the same sense (`""` = root).
    settled_dirs: BTreeSet<String>,
    /// How many first-open syncs were issued (observability for tests).
    settle_syncs: u64,
}

impl Handles {
    /// Makes room for one more handle: closes least recently used clean handles until below the
    /// cap, or until only unsynced handles are left (see the module docs).
    fn make_room(&mut self) {
        while self.open.len() >= self.max_open {
            let victim = self
                .open
                .iter()
                .filter(|(_, h)| !h.unsynced && h.poisoned.is_none())
                .min_by_key(|(_, h)| h.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    self.open.remove(&k);
                }
                None => break,
            }
        }
    }

    fn insert(&mut self, path: &str, mut h: Handle) -> &mut Handle {
        self.make_room();
        self.tick += 1;
        h.last_used = self.tick;
        self.open.insert(path.to_string(), h);
        self.open.get_mut(path).expect("just inserted")
    }
}

/// The core's [`Disk`] over a directory of real files. See the module docs.
#[derive(Debug)]
pub struct FileDisk {
    root: PathBuf,
    handles: RefCell<Handles>,
    /// Where fdatasync latencies go (the node's metrics), if anywhere.
    fsync_observer: Option<FsyncObserver>,
}

/// A callback receiving each fdatasync's latency.
struct FsyncObserver(Box<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncObserver")
    }
}

/// What [`FileDisk::fsync_probe`] measured: `write` + `fdatasync` of `block_bytes` appended to a
/// fresh file, `iters` times. This is the machine's floor for a synced append of that size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    pub block_bytes: usize,
    pub iters: usize,
    /// Median latency of one write + fdatasync, in microseconds.
    pub median_us: f64,
    /// 99th percentile (nearest rank) latency, in microseconds.
    pub p99_us: f64,
    /// Slowest iteration, in microseconds.
    pub max_us: f64,
    /// Bytes written over total time, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write+fdatasync {} B x {}: median {:.1} us, p99 {:.1} us, max {:.1} us, {:.2} MB/s",
            self.block_bytes, self.iters, self.median_us, self.p99_us, self.max_us, self.mb_per_s
        )
    }
}

impl FileDisk {
    /// Opens `root` as a data directory with [`DEFAULT_MAX_OPEN_FILES`]. See
    /// [`FileDisk::with_max_open_files`].
    pub fn open(root: impl Into<PathBuf>) -> Result<FileDisk, FileDiskError> {
        Self::with_max_open_files(root, DEFAULT_MAX_OPEN_FILES)
    }

    /// Opens `root` as a data directory, creating it (and its parents) if missing, and checks
    /// that it is a directory this process can list and create, write, sync and remove files in,
    /// so a bad data directory stops the node at startup with the path in the error rather than
    /// at its first write. Keeps at most `max_open_files` idle file handles open (at least 1).
    /// Reports the latency of every `fdatasync` to `observe` (the node's metrics).
    pub fn with_fsync_observer(
        mut self,
        observe: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> FileDisk {
        self.fsync_observer = Some(FsyncObserver(Box::new(observe)));
        self
    }

    pub fn with_max_open_files(
        root: impl Into<PathBuf>,
        max_open_files: usize,
    ) -> Result<FileDisk, FileDiskError> {
        let root = root.into();
        // Stat first: `create_dir_all` on an existing regular file reports a bare "File exists",
        // which would hide the real problem.
        let existed = match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => return Err(FileDiskError::NotADirectory { path: root }),
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // A parent is a regular file: no directory can be created there.
            Err(source) if source.kind() == io::ErrorKind::NotADirectory => {
                return Err(FileDiskError::Create { path: root, source })
            }
            Err(source) => return Err(FileDiskError::Unreadable { path: root, source }),
        };
        if !existed {
            fs::create_dir_all(&root).map_err(|source| FileDiskError::Create {
                path: root.clone(),
                source,
            })?;
        }
        // Listing needs read and search permission; iterate once so a lazily failing readdir
        // is caught too.
        let unreadable = |source| FileDiskError::Unreadable {
            path: root.clone(),
            source,
        };
        for entry in fs::read_dir(&root).map_err(unreadable)? {
            entry.map_err(unreadable)?;
        }
        check_writable(&root).map_err(|source| FileDiskError::Unwritable {
            path: root.clone(),
            source,
        })?;
        if !existed {
            // Make the new root's own directory entry durable, as `create` does for files.
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| FileDiskError::Create {
                        path: root.clone(),
                        source,
                    })?;
            }
        }
        Ok(FileDisk {
            root,
            handles: RefCell::new(Handles {
                open: BTreeMap::new(),
                tick: 0,
                max_open: max_open_files.max(1),
                settled: BTreeSet::new(),
                settled_dirs: BTreeSet::new(),
                settle_syncs: 0,
            }),
            fsync_observer: None,
        })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many file handles are cached open right now.
    pub fn open_files(&self) -> usize {
        self.handles.borrow().open.len()
    }

    /// Measures `write` + `fdatasync` of `block_bytes`-byte appends, `iters` times, in a
    /// temporary file under the root, which is removed afterwards (also on failure). Appending
    /// (rather than rewriting one block) makes each sync also persist the new file size, exactly
    /// like a log append, so the figure is the machine's limit for a synced produce.
    pub fn fsync_probe(&self, block_bytes: usize, iters: usize) -> Result<ProbeResult, DiskError> {
        if block_bytes == 0 || iters == 0 {
            return Err(DiskError::Io(format!(
                "fsync probe needs a non-empty block and at least one iteration \
                 (got {block_bytes} bytes x {iters})"
            )));
        }
        let name = format!(".fsync-probe-{}.tmp", std::process::id());
        let path = self.root.join(&name);
        // Removes the probe file however this function returns.
        struct Cleanup<'a>(&'a Path);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = fs::remove_file(self.0);
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| map_io_err("create probe file", &name, e))?;
        let _cleanup = Cleanup(&path);
        // Non-zero, varying bytes so no layer can shortcut an all-zero block.
        let block: Vec<u8> = (0..block_bytes).map(|i| (i % 251) as u8 + 1).collect();
        let mut lat_us = Vec::with_capacity(iters);
        let start = Instant::now();
        for i in 0..iters {
            let t = Instant::now();
            file.write_all_at(&block, (i * block_bytes) as u64)
                .map_err(|e| map_io_err("probe write", &name, e))?;
            file.sync_data()
                .map_err(|e| map_io_err("probe fdatasync", &name, e))?;
            lat_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let total_s = start.elapsed().as_secs_f64();
        lat_us.sort_by(f64::total_cmp);
        Ok(ProbeResult {
            block_bytes,
            iters,
            median_us: nearest_rank(&lat_us, 0.50),
            p99_us: nearest_rank(&lat_us, 0.99),
            max_us: lat_us[lat_us.len() - 1],
            mb_per_s: (block_bytes * iters) as f64 / total_s.max(f64::MIN_POSITIVE) / 1e6,
        })
    }

    /// The absolute path of a checked relative path (`""` is the root, allowed only for dirs).
    fn full_path(&self, path: &str, is_dir: bool) -> Result<PathBuf, DiskError> {
        check_rel_path(path, is_dir)?;
        Ok(if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        })
    }

    /// Runs `f` on the cached handle of `path`, opening (and caching) the file if needed.
    fn with_handle<R>(
        &self,
        path: &str,
        f: impl FnOnce(&mut Handle) -> Result<R, DiskError>,
    ) -> Result<R, DiskError> {
        let full = self.full_path(path, false)?;
        let mut handles = self.handles.borrow_mut();
        handles.tick += 1;
        let tick = handles.tick;
        if let Some(h) = handles.open.get_mut(path) {
            h.last_used = tick;
            return f(h);
        }
        // Opened read-write even for reads, so one handle serves everything.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| map_io_err("open", path, e))?;
        let meta = file.metadata().map_err(|e| map_io_err("stat", path, e))?;
        let len = meta.len();
        // Only regular files have page-cache contents to settle (tests point a name at a device).
        if meta.is_file() && !handles.settled.contains(path) {
            // Make a previous run's unsynced leftovers durable before anyone reads them (see
            // "What a restarted node reads is durable" in the module docs).
            file.sync_data()
                .map_err(|e| map_io_err("fdatasync at first open", path, e))?;
            let dir = split_path(path).0;
            if !handles.settled_dirs.contains(dir) {
                self.sync_dir(dir)?;
                handles.settled_dirs.insert(dir.to_string());
            }
            handles.settled.insert(path.to_string());
            handles.settle_syncs += 1;
        }
        let h = handles.insert(
            path,
            Handle {
                file,
                len,
                unsynced: false,
                poisoned: None,
                last_used: 0,
            },
        );
        f(h)
    }

    /// Creates the missing directories of `dir` top-down, fsyncing each new one's parent.
    fn ensure_dirs(&self, dir: &str) -> Result<(), DiskError> {
        if dir.is_empty() || self.root.join(dir).is_dir() {
            return Ok(());
        }
        let mut prefix = String::new();
        for comp in dir.split('/') {
            let parent = prefix.clone();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match fs::create_dir(self.root.join(&prefix)) {
                Ok(()) => self.sync_dir(&parent)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(map_io_err("mkdir", &prefix, e)),
            }
        }
        Ok(())
    }

    /// fsyncs the directory `dir` (relative, `""` = root) so its entries are durable.
    fn sync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let full = if dir.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir)
        };
        File::open(&full)
            .and_then(|d| d.sync_all())
            .map_err(|e| map_io_err("fsync dir", if dir.is_empty() { "." } else { dir }, e))
    }

    /// Entries of `dir` whose type passes `keep`, sorted; empty if `dir` does not exist.
    fn list_by(
        &self,
        dir: &str,
        keep: fn(&fs::FileType) -> bool,
    ) -> Result<Vec<String>, DiskError> {
        let full = self.full_path(dir, true)?;
        let rd = match fs::read_dir(&full) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(map_io_err("list", dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| map_io_err("list", dir, e))?;
            // `file_type` does not follow symlinks: only real files and directories count.
            let ty = entry.file_type().map_err(|e| map_io_err("list", dir, e))?;
            // A name that is not UTF-8 cannot be addressed through the trait; not ours.
            if let (true, Ok(name)) = (keep(&ty), entry.file_name().into_string()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Disk for FileDisk {
    fn available_bytes(&self) -> Option<u64> {
        // Space an unprivileged writer may still use (f_bavail), as `df` reports it.
        let st = rustix::fs::statvfs(&self.root).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn create(&self, path: &str) -> Result<(), DiskError> {
        let full = self.full_path(path, false)?;
        let (dir, _) = split_path(path);
        self.ensure_dirs(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| map_io_err("create", path, e))?;
        // The new inode, then the entry naming it.
        file.sync_all()
            .map_err(|e| map_io_err("fsync new file", path, e))?;
        self.sync_dir(dir)?;
        let mut handles = self.handles.borrow_mut();
        handles.settled.insert(path.to_string());
        handles.settled_dirs.insert(dir.to_string());
        handles.insert(
            path,
            Handle {
                file,
                len: 0,
                unsynced: false,
                poisoned: None,
                last_used: 0,
            },
        );
        Ok(())
    }

    fn append(&self, path: &str, data: &[u8]) -> Result<u64, DiskError> {
        self.with_handle(path, |h| {
            let at = h.len;
            if data.is_empty() {
                return Ok(at);
            }
            h.unsynced = true;
            match h.file.write_all_at(data, at) {
                Ok(()) => {
                    h.len = at + data.len() as u64;
                    Ok(at)
                }
                Err(e) => {
                    // Hide any partial write so "failed" means "changed nothing".
                    rollback_len(h, at);
                    Err(map_io_err("append", path, e))
                }
            }
        })
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.with_handle(path, |h| {
            let prev = h.len;
            let end = offset + data.len() as u64;
            h.unsynced = true;
            if data.is_empty() {
                // As `MemDisk`: writing nothing past the end still extends with zeros.
                if end > prev {
                    h.file
                        .set_len(end)
                        .map_err(|e| map_io_err("extend", path, e))?;
                    h.len = end;
                }
                return Ok(());
            }
            match h.file.write_all_at(data, offset) {
                Ok(()) => {
                    h.len = prev.max(end);
                    Ok(())
                }
                Err(e) => {
                    if end > prev {
                        rollback_len(h, prev);
                    }
                    Err(map_io_err("write", path, e))
                }
            }
        })
    }

    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        self.with_handle(path, |h| {
            // `pread` may return short before EOF (signals, large reads); only 0 means EOF.
            let mut n = 0;
            while n < buf.len() {
                match h.file.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(map_io_err("read", path, e)),
                }
            }
            Ok(n)
        })
    }

    fn len(&self, path: &str) -> Result<u64, DiskError> {
        self.with_handle(path, |h| Ok(h.len))
    }

    fn sync(&self, path: &str) -> Result<(), DiskError> {
        self.with_handle(path, |h| {
            if let Some(why) = &h.poisoned {
                return Err(DiskError::Io(format!(
                    "{path} is poisoned by an earlier failed fdatasync: {why}"
                )));
            }
            // Issued even with nothing written through this handle: cheap when clean, and the
            // dirty flag only tracks this handle, not writes made before an eviction reopened it.
            let started = std::time::Instant::now();
            let synced = h.file.sync_data();
            if let Some(observe) = &self.fsync_observer {
                (observe.0)(started.elapsed());
            }
            match synced {
                Ok(()) => {
                    h.unsynced = false;
                    Ok(())
                }
                Err(e) => {
                    let why = e.to_string();
                    h.poisoned = Some(why.clone());
                    // Never `NoSpace` here: that promises "nothing changed", but a failed
                    // writeback may have lost data that readers already saw.
                    Err(DiskError::Io(format!("fdatasync {path}: {why}")))
                }
            }
        })
    }

    fn truncate(&self, path: &str, len: u64) -> Result<(), DiskError> {
        self.with_handle(path, |h| {
            if len >= h.len {
                return Ok(());
            }
            h.unsynced = true;
            h.file
                .set_len(len)
                .map_err(|e| map_io_err("truncate", path, e))?;
            h.len = len;
            Ok(())
        })
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let full = self.full_path(path, false)?;
        // Close first: the handle (and any poison) belongs to the file being deleted.
        {
            let mut handles = self.handles.borrow_mut();
            handles.open.remove(path);
            handles.settled.remove(path);
        }
        fs::remove_file(&full).map_err(|e| map_io_err("remove", path, e))?;
        let dir = split_path(path).0;
        self.sync_dir(dir)?;
        self.handles
            .borrow_mut()
            .settled_dirs
            .insert(dir.to_string());
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let full_from = self.full_path(from, false)?;
        let full_to = self.full_path(to, false)?;
        // Check the source before creating directories for the destination.
        fs::symlink_metadata(&full_from).map_err(|e| map_io_err("rename", from, e))?;
        let (from_dir, _) = split_path(from);
        let (to_dir, _) = split_path(to);
        self.ensure_dirs(to_dir)?;
        fs::rename(&full_from, &full_to)
            .map_err(|e| map_io_err(&format!("rename to {to} from"), from, e))?;
        {
            // The open descriptor follows the inode to its new name; the replaced file's closes.
            let mut handles = self.handles.borrow_mut();
            let moved = handles.open.remove(from);
            handles.open.remove(to);
            if let Some(h) = moved {
                handles.open.insert(to.to_string(), h);
            }
            // The contents' durability travels with the inode.
            let was_settled = handles.settled.remove(from);
            handles.settled.remove(to);
            if was_settled {
                handles.settled.insert(to.to_string());
            }
        }
        // The new name first, then the old name's removal, each in its own directory.
        self.sync_dir(to_dir)?;
        if from_dir != to_dir {
            self.sync_dir(from_dir)?;
        }
        let mut handles = self.handles.borrow_mut();
        handles.settled_dirs.insert(to_dir.to_string());
        handles.settled_dirs.insert(from_dir.to_string());
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.list_by(dir, fs::FileType::is_file)
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.list_by(dir, fs::FileType::is_dir)
    }
}

/// Best-effort cut back to `len` after a failed write. If even that fails, re-read the real
/// length so later appends go to the true end of the file.
fn rollback_len(h: &mut Handle, len: u64) {
    if h.file.set_len(len).is_ok() {
        h.len = len;
    } else if let Ok(m) = h.file.metadata() {
        h.len = m.len();
    }
}

/// Creates, writes, syncs and removes a small file in `root`.
fn check_writable(root: &Path) -> io::Result<()> {
    let path = root.join(format!(".write-check-{}.tmp", std::process::id()));
    let res = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|f| {
            f.write_all_at(b"railyard", 0)?;
            f.sync_data()
        });
    let removed = fs::remove_file(&path);
    res.and(removed)
}

/// Refuses paths that could leave the root or alias another path: absolute paths, and empty,
/// `.` or `..` components (so every file has exactly one spelling, the cache key). `""` names the
/// root and is allowed only where a directory is meant.
fn check_rel_path(path: &str, is_dir: bool) -> Result<(), DiskError> {
    if path.is_empty() {
        return if is_dir {
            Ok(())
        } else {
            Err(DiskError::Io("empty file path".into()))
        };
    }
    if path.starts_with('/') {
        return Err(DiskError::Io(format!(
            "absolute path {path:?} refused: paths are relative to the data directory"
        )));
    }
    if path.contains('\0') {
        return Err(DiskError::Io(format!("path {path:?} contains a NUL byte")));
    }
    if let Some(bad) = path
        .split('/')
        .find(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(DiskError::Io(format!(
            "path {path:?} refused: component {bad:?} is not allowed"
        )));
    }
    Ok(())
}

/// Maps an `io::Error` of operation `op` on `path` to the trait's typed errors.
fn map_io_err(op: &str, path: &str, e: io::Error) -> DiskError {
    let raw = e.raw_os_error();
    #[cfg(target_os = "linux")]
    let quota = raw == Some(EDQUOT);
    #[cfg(not(target_os = "linux"))]
    let quota = false;
    if e.kind() == io::ErrorKind::StorageFull || raw == Some(ENOSPC) || quota {
        return DiskError::NoSpace;
    }
    match e.kind() {
        io::ErrorKind::NotFound => DiskError::NotFound(path.to_string()),
        io::ErrorKind::AlreadyExists => DiskError::AlreadyExists(path.to_string()),
        // io::Error's Display ends with "(os error N)", i.e. the errno.
        _ => DiskError::Io(format!("{op} {path}: {e}")),
    }
}

/// The nearest-rank `q` quantile of sorted, non-empty `v`.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::rc::Rc;

    use railyard_core::batch::{decode_records, BatchBuilder};
    use railyard_core::log::{EntryKind, LogConfig, NewEntry, PartitionLog};

    use super::*;

    fn disk() -> (tempfile::TempDir, FileDisk) {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDisk::open(dir.path()).unwrap();
        (dir, d)
    }

    #[test]
    fn test_file_ops_match_the_trait() {
        let (tmp, d) = disk();
        d.create("a/b/x.log").unwrap();
        assert!(tmp.path().join("a/b/x.log").is_file(), "parents created");
        assert_eq!(
            d.create("a/b/x.log"),
            Err(DiskError::AlreadyExists("a/b/x.log".into()))
        );
        assert_eq!(d.append("a/b/x.log", b"hello").unwrap(), 0);
        assert_eq!(d.append("a/b/x.log", b"!").unwrap(), 5);
        assert_eq!(d.append("a/b/x.log", b"").unwrap(), 6);
        assert_eq!(d.len("a/b/x.log").unwrap(), 6);
        let mut buf = [0u8; 10];
        assert_eq!(
            d.read_at("a/b/x.log", 3, &mut buf).unwrap(),
            3,
            "short at EOF"
        );
        assert_eq!(&buf[..3], b"lo!");
        assert_eq!(d.read_at("a/b/x.log", 100, &mut buf).unwrap(), 0);
        let mut exact = [0u8; 5];
        d.read_exact_at("a/b/x.log", 0, &mut exact).unwrap();
        assert_eq!(&exact, b"hello");
        assert!(d.read_exact_at("a/b/x.log", 2, &mut exact).is_err());

        // write_at overwrites in place and extends with a zero gap.
        d.write_at("a/b/x.log", 1, b"EL").unwrap();
        d.write_at("a/b/x.log", 8, b"Z").unwrap();
        assert_eq!(d.len("a/b/x.log").unwrap(), 9);
        assert_eq!(
            fs::read(tmp.path().join("a/b/x.log")).unwrap(),
            b"hELlo!\0\0Z"
        );
        d.write_at("a/b/x.log", 12, b"").unwrap();
        assert_eq!(
            d.len("a/b/x.log").unwrap(),
            12,
            "empty write past the end extends"
        );

        // truncate cuts, and is a no-op when already shorter.
        d.truncate("a/b/x.log", 2).unwrap();
        d.truncate("a/b/x.log", 50).unwrap();
        assert_eq!(d.len("a/b/x.log").unwrap(), 2);
        assert_eq!(d.append("a/b/x.log", b"y").unwrap(), 2);
        d.sync("a/b/x.log").unwrap();
        assert_eq!(fs::read(tmp.path().join("a/b/x.log")).unwrap(), b"hEy");

        // list: sorted regular files only; list_dirs: sorted directories only.
        d.create("a/b/w.log").unwrap();
        d.create("a/c/z.log").unwrap();
        d.create("top").unwrap();
        std::os::unix::fs::symlink("x.log", tmp.path().join("a/b/link")).unwrap();
        assert_eq!(d.list("a/b").unwrap(), vec!["w.log", "x.log"]);
        assert_eq!(d.list("a").unwrap(), Vec::<String>::new());
        assert_eq!(d.list("").unwrap(), vec!["top"]);
        assert_eq!(d.list("nope/nothing").unwrap(), Vec::<String>::new());
        assert_eq!(d.list_dirs("a").unwrap(), vec!["b", "c"]);
        assert_eq!(d.list_dirs("").unwrap(), vec!["a"]);
        assert_eq!(d.list_dirs("nope").unwrap(), Vec::<String>::new());

        // rename replaces the target, carries the open handle, and creates parent dirs.
        d.rename("a/b/x.log", "a/b/w.log").unwrap();
        assert!(!d.exists("a/b/x.log"));
        assert_eq!(d.len("a/b/w.log").unwrap(), 3);
        assert_eq!(d.append("a/b/w.log", b"!").unwrap(), 3);
        d.rename("a/b/w.log", "d/e/moved.log").unwrap();
        let mut four = [0u8; 4];
        d.read_exact_at("d/e/moved.log", 0, &mut four).unwrap();
        assert_eq!(&four, b"hEy!");
        assert_eq!(
            d.rename("a/b/gone.log", "a/b/q.log"),
            Err(DiskError::NotFound("a/b/gone.log".into()))
        );
        assert!(!tmp.path().join("a/b/q.log").exists());

        // remove, and NotFound everywhere for a missing file.
        d.remove("d/e/moved.log").unwrap();
        assert!(!d.exists("d/e/moved.log"));
        let nf = || DiskError::NotFound("d/e/moved.log".into());
        assert_eq!(d.remove("d/e/moved.log"), Err(nf()));
        assert_eq!(d.len("d/e/moved.log"), Err(nf()));
        assert_eq!(d.append("d/e/moved.log", b"x"), Err(nf()));
        assert_eq!(d.sync("d/e/moved.log"), Err(nf()));
        assert_eq!(d.truncate("d/e/moved.log", 0), Err(nf()));
        assert_eq!(d.read_at("d/e/moved.log", 0, &mut buf), Err(nf()));
        assert_eq!(d.write_at("d/e/moved.log", 0, b"x"), Err(nf()));
        assert!(!d.exists("a"), "a directory is not a file");
    }

    #[test]
    fn test_first_open_syncs_leftovers_of_a_previous_run_once() {
        let (tmp, d) = disk();
        d.create("p/a").unwrap();
        d.append("p/a", b"x").unwrap();
        // Files this instance created are not re-synced when reopened after eviction.
        d.handles.borrow_mut().open.clear();
        d.len("p/a").unwrap();
        assert_eq!(d.handles.borrow().settle_syncs, 0);
        // A previous run's files (possibly with unsynced page-cache data) are synced at first
        // open, once each, also across eviction and rename.
        fs::write(tmp.path().join("p/b"), b"left over").unwrap();
        fs::write(tmp.path().join("p/c"), b"left over").unwrap();
        drop(d);
        let d = FileDisk::open(tmp.path()).unwrap();
        for p in ["p/a", "p/b", "p/a", "p/c"] {
            assert_eq!(d.len(p).unwrap(), if p == "p/a" { 1 } else { 9 });
        }
        assert_eq!(d.handles.borrow().settle_syncs, 3);
        d.handles.borrow_mut().open.clear();
        d.rename("p/b", "q/b").unwrap();
        d.len("q/b").unwrap();
        d.len("p/c").unwrap();
        assert_eq!(d.handles.borrow().settle_syncs, 3);
    }

    #[test]
    fn test_writes_go_to_disk_and_survive_reopen() {
        let (tmp, d) = disk();
        d.create("p/f").unwrap();
        d.append("p/f", b"abc").unwrap();
        // Visible to other readers before sync (page cache), durable after it.
        assert_eq!(fs::read(tmp.path().join("p/f")).unwrap(), b"abc");
        d.sync("p/f").unwrap();
        drop(d);
        let d = FileDisk::open(tmp.path()).unwrap();
        assert_eq!(d.len("p/f").unwrap(), 3);
        assert_eq!(d.append("p/f", b"d").unwrap(), 3);
        d.sync("p/f").unwrap();
        assert_eq!(fs::read(tmp.path().join("p/f")).unwrap(), b"abcd");
    }

    #[test]
    fn test_paths_escaping_the_root_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let d = FileDisk::open(&root).unwrap();
        fs::write(outer.path().join("secret"), b"x").unwrap();
        for bad in [
            "../secret",
            "a/../../secret",
            "/etc/passwd",
            "a//b",
            "./x",
            "a/./x",
            "a/",
            "",
            "a\0b",
        ] {
            let is_io = |r: Result<(), DiskError>| matches!(r, Err(DiskError::Io(_)));
            assert!(is_io(d.create(bad)), "create {bad:?}");
            assert!(matches!(d.len(bad), Err(DiskError::Io(_))), "len {bad:?}");
            assert!(
                matches!(d.append(bad, b"x"), Err(DiskError::Io(_))),
                "{bad:?}"
            );
            assert!(is_io(d.remove(bad)), "remove {bad:?}");
            assert!(is_io(d.rename(bad, "ok")), "rename from {bad:?}");
            assert!(is_io(d.rename("ok", bad)), "rename to {bad:?}");
            if !bad.is_empty() {
                assert!(matches!(d.list(bad), Err(DiskError::Io(_))), "{bad:?}");
                assert!(matches!(d.list_dirs(bad), Err(DiskError::Io(_))), "{bad:?}");
            }
        }
        assert_eq!(fs::read(outer.path().join("secret")).unwrap(), b"x");
        assert_eq!(
            fs::read_dir(outer.path()).unwrap().count(),
            2,
            "nothing created"
        );
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "nothing created");
    }

    #[test]
    fn test_open_refuses_bad_roots_with_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        // Missing root (and parents) is created.
        let nested = tmp.path().join("x/y/data");
        FileDisk::open(&nested).unwrap();
        assert!(nested.is_dir());

        let file = tmp.path().join("plain");
        fs::write(&file, b"").unwrap();
        let err = FileDisk::open(&file).unwrap_err();
        assert!(matches!(err, FileDiskError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");

        let under_file = file.join("data");
        let err = FileDisk::open(&under_file).unwrap_err();
        assert!(matches!(err, FileDiskError::Create { .. }), "{err}");
        assert!(err.to_string().contains(&*under_file.to_string_lossy()));

        let locked = tmp.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        // Root (CAP_DAC_OVERRIDE) ignores permission bits, so the check is only meaningful when
        // the chmod actually locks this process out.
        let effective = fs::read_dir(&locked).is_err();
        let res = FileDisk::open(&locked);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        if effective {
            let err = res.unwrap_err();
            assert!(matches!(err, FileDiskError::Unreadable { .. }), "{err}");
            assert!(err.to_string().contains(&*locked.to_string_lossy()));
        }

        let readonly = tmp.path().join("readonly");
        fs::create_dir(&readonly).unwrap();
        fs::set_permissions(&readonly, fs::Permissions::from_mode(0o555)).unwrap();
        let effective = fs::write(readonly.join("probe"), b"").is_err();
        let res = FileDisk::open(&readonly);
        fs::set_permissions(&readonly, fs::Permissions::from_mode(0o755)).unwrap();
        if effective {
            let err = res.unwrap_err();
            assert!(matches!(err, FileDiskError::Unwritable { .. }), "{err}");
        }
    }

    #[test]
    fn test_handle_cache_is_bounded_but_keeps_unsynced_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = FileDisk::with_max_open_files(tmp.path(), 3).unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("t/f{i}")).collect();
        for n in &names {
            d.create(n).unwrap();
        }
        assert!(d.open_files() <= 3, "clean handles are evicted");
        for n in &names {
            d.append(n, n.as_bytes()).unwrap();
        }
        // Unsynced handles are never closed, so the soft cap is exceeded.
        assert_eq!(d.open_files(), names.len());
        for n in &names {
            d.sync(n).unwrap();
        }
        d.create("t/after").unwrap();
        assert!(d.open_files() <= 3, "{}", d.open_files());
        // Evicted files reopen transparently with the right length.
        for n in &names {
            assert_eq!(d.len(n).unwrap(), n.len() as u64);
            assert_eq!(d.append(n, b"+").unwrap(), n.len() as u64);
        }
    }

    #[test]
    fn test_error_mapping() {
        let e = |raw| map_io_err("append", "p", io::Error::from_raw_os_error(raw));
        assert_eq!(e(ENOSPC), DiskError::NoSpace);
        assert_eq!(e(2), DiskError::NotFound("p".into())); // ENOENT
        assert_eq!(e(17), DiskError::AlreadyExists("p".into())); // EEXIST
        let DiskError::Io(msg) = e(5) else {
            panic!("EIO is Io")
        };
        assert!(
            msg.contains("append p") && msg.contains("os error 5"),
            "{msg}"
        );
    }

    /// A symlink to `/dev/full` makes every write fail with ENOSPC, end to end.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_full_disk_append_is_no_space_and_changes_nothing() {
        if !Path::new("/dev/full").exists() {
            return; // minimal containers may lack it
        }
        let (tmp, d) = disk();
        std::os::unix::fs::symlink("/dev/full", tmp.path().join("full")).unwrap();
        assert_eq!(d.append("full", b"data"), Err(DiskError::NoSpace));
        assert_eq!(d.len("full").unwrap(), 0);
        assert_eq!(d.append("full", b"data"), Err(DiskError::NoSpace));
    }

    #[test]
    fn test_fsync_probe_measures_and_cleans_up() {
        let (tmp, d) = disk();
        let r = d.fsync_probe(4096, 5).unwrap();
        assert_eq!((r.block_bytes, r.iters), (4096, 5));
        assert!(r.median_us > 0.0 && r.median_us <= r.p99_us && r.p99_us <= r.max_us);
        assert!(r.mb_per_s > 0.0);
        assert!(r.to_string().contains("median"));
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "temp file removed"
        );
        assert!(d.fsync_probe(0, 5).is_err());
        assert!(d.fsync_probe(4096, 0).is_err());
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }

    // ---- the core's PartitionLog, unchanged, over FileDisk ----

    const DIR: &str = "orders-0";

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            segment_ms: i64::MAX,
            index_interval_bytes: 256,
            retention_bytes: None,
            retention_ms: None,
            max_entry_bytes: 64 * 1024,
        }
    }

    fn entry(index: u64, term: u64, records: usize) -> NewEntry {
        let mut b = BatchBuilder::new(1_000 + index as i64);
        for r in 0..records {
            let value = format!("value-{index}-{r}").repeat(8);
            b.push(
                Some(format!("key-{r}").as_bytes()),
                Some(value.as_bytes()),
                &[],
                1_000 + index as i64,
            );
        }
        NewEntry {
            index,
            term,
            kind: EntryKind::Normal,
            data: b.build(),
        }
    }

    fn open_log(root: &Path) -> (PartitionLog, railyard_core::log::RecoveryReport) {
        let disk: Rc<dyn Disk> = Rc::new(FileDisk::open(root).unwrap());
        PartitionLog::open(disk, DIR, config()).unwrap()
    }

    /// Asserts the log holds exactly `expected`, with records intact and offsets chained.
    fn assert_log_holds(log: &PartitionLog, expected: &[NewEntry]) {
        let n = expected.len() as u64;
        assert_eq!((log.first_index(), log.last_index()), (1, n));
        let got = log.entries(1, n + 1, None).unwrap();
        assert_eq!(got.len(), expected.len());
        let mut offset = 0i64;
        for (g, e) in got.iter().zip(expected) {
            assert_eq!((g.index, g.term, g.kind), (e.index, e.term, e.kind));
            assert_eq!(g.base_offset, offset);
            let want = decode_records(&e.data).unwrap();
            let have = decode_records(&g.data).unwrap();
            assert_eq!(have.len(), want.len());
            for (h, w) in have.iter().zip(&want) {
                assert_eq!((&h.key, &h.value), (&w.key, &w.value));
                assert_eq!(h.offset, offset + w.offset);
            }
            offset += g.record_count as i64;
        }
        assert_eq!(log.next_offset(), offset);
        if offset > 0 {
            let r = log.read(0, offset, u64::MAX).unwrap();
            assert_eq!(r.next_offset, offset);
            assert_eq!(r.batches.len(), expected.len());
        }
    }

    #[test]
    fn test_partition_log_survives_reopen_on_file_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let written: Vec<NewEntry> = (1..=40).map(|i| entry(i, 1 + i / 15, 3)).collect();
        {
            let (mut log, report) = open_log(tmp.path());
            assert_eq!(report.entries, 0);
            for chunk in written.chunks(5) {
                log.append(chunk).unwrap();
            }
            log.sync().unwrap();
            assert!(log.segment_count() > 3, "{}", log.segment_count());
            assert_log_holds(&log, &written);
        }
        let (log, report) = open_log(tmp.path());
        assert_eq!(report.truncated_from_index, None);
        assert_eq!(report.entries, 40);
        assert!(!report.corruption);
        assert_log_holds(&log, &written);
        // The files are really there, named as the core names them.
        let segs = fs::read_dir(tmp.path().join(DIR)).unwrap().count();
        assert_eq!(segs, log.segment_count() + 1, "segments + log.meta");
    }

    #[test]
    fn test_partition_log_recovers_prefix_after_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let written: Vec<NewEntry> = (1..=20).map(|i| entry(i, 1, 2)).collect();
        {
            let (mut log, _) = open_log(tmp.path());
            log.append(&written).unwrap();
            log.sync().unwrap();
        }
        // Tear the last segment in the middle of its last frame, as a crash might.
        let dir = tmp.path().join(DIR);
        let mut segs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segs.sort();
        let last = segs.last().unwrap();
        let len = fs::metadata(last).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(len - 7)
            .unwrap();

        let (mut log, report) = open_log(tmp.path());
        let kept = log.last_index();
        assert!(kept < 20 && kept > 0, "kept {kept}");
        assert_eq!(report.truncated_from_index, Some(kept + 1));
        assert!(report.bytes_dropped > 0);
        assert_log_holds(&log, &written[..kept as usize]);
        // The repaired log takes the lost suffix again and keeps it across another reopen.
        log.append(&written[kept as usize..]).unwrap();
        log.sync().unwrap();
        drop(log);
        let (log, report) = open_log(tmp.path());
        assert_eq!(report.truncated_from_index, None);
        assert_log_holds(&log, &written);
    }

    #[test]
    fn test_partition_log_truncate_suffix_on_file_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let written: Vec<NewEntry> = (1..=30).map(|i| entry(i, 1, 2)).collect();
        {
            let (mut log, _) = open_log(tmp.path());
            log.append(&written).unwrap();
            log.truncate_suffix(12).unwrap();
            log.sync().unwrap();
            assert_log_holds(&log, &written[..11]);
        }
        let (log, _) = open_log(tmp.path());
        assert_log_holds(&log, &written[..11]);
    }
}
