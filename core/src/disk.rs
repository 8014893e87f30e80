//! The `Disk` trait: the small synchronous file API that everything durable in core is written
//! against, plus [`MemDisk`], a fault-free in-memory implementation for unit tests.
//!
//! The simulator implements `Disk` with torn writes, bit flips, read errors, latency and a full
//! disk; the real node implements it over `std::fs` with `fdatasync`. Segment layout, indexes,
//! checksums, recovery and retention sit above this trait and are written once.
//!
//! ## Contract
//! - Paths are `/`-separated and relative to the disk's root, e.g. `orders-0/00000000000000000001.log`.
//!   Directories are implicit: creating a file creates its parent directories.
//! - Methods take `&self`: a node is single-threaded, and raft-rs's `Storage` reads through `&self`,
//!   so implementations use interior mutability.
//! - **Durability.** `append`, `write_at` and `truncate` change a file's contents at once for
//!   readers, but survive a crash only after `sync(path)` returns `Ok`. A crash may keep any prefix
//!   of the unsynced changes, and the last kept write may be torn at a sector boundary.
//!   `create`, `remove` and `rename` are durable when they return (the file implementation syncs
//!   the parent directory).
//! - Errors are typed; a full disk is [`DiskError::NoSpace`], and the failed write changed nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// Why a disk operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// The file does not exist.
    #[error("file not found: {0}")]
    NotFound(String),
    /// `create` or `rename` onto a file that already exists.
    #[error("file already exists: {0}")]
    AlreadyExists(String),
    /// The disk is full. The write that got this error changed nothing.
    #[error("no space left on device")]
    NoSpace,
    /// Any other IO failure (EIO, permissions, ...). May be transient.
    #[error("io error: {0}")]
    Io(String),
}

/// A small synchronous file API. See the module docs for the durability contract.
pub trait Disk {
    /// Creates an empty file. Fails with `AlreadyExists` if it exists.
    fn create(&self, path: &str) -> Result<(), DiskError>;
    /// Appends `data` to the end of the file and returns the offset it was written at.
    fn append(&self, path: &str, data: &[u8]) -> Result<u64, DiskError>;
    /// Writes `data` at `offset`, extending the file if needed (a gap reads as zeros).
    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (short only at EOF).
    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError>;
    /// The file's current length (including unsynced writes).
    fn len(&self, path: &str) -> Result<u64, DiskError>;
    /// Makes every change to the file so far durable.
    fn sync(&self, path: &str) -> Result<(), DiskError>;
    /// Cuts the file to `len` bytes (no-op if already shorter).
    fn truncate(&self, path: &str, len: u64) -> Result<(), DiskError>;
    /// Deletes a file.
    fn remove(&self, path: &str) -> Result<(), DiskError>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Names (not paths) of the files directly inside `dir`, sorted. Empty if `dir` has none.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
    /// Names of the sub-directories directly inside `dir`, sorted.
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DiskError>;

    /// Free space left for this disk's files, if known. Leaders refuse new produces when it
    /// runs below the node's reserve, so that a filling disk turns into clean errors for
    /// clients (reads keep working) instead of failed writes. `None`: unknown, never refuse.
    fn available_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether the file exists.
    fn exists(&self, path: &str) -> bool {
        self.len(path).is_ok()
    }

    /// Reads exactly `buf.len()` bytes or fails with `Io("short read")`.
    fn read_exact_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let n = self.read_at(path, offset, buf)?;
        if n != buf.len() {
            return Err(DiskError::Io(format!(
                "short read of {path} at {offset}: {n} of {}",
                buf.len()
            )));
        }
        Ok(())
    }
}

/// Splits `path` into (dir, name); a path with no `/` lives in the root dir `""`.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Names of the files directly inside `dir`, given every file path (for in-memory disks).
pub fn files_in<'a>(paths: impl Iterator<Item = &'a str>, dir: &str) -> Vec<String> {
    paths
        .filter_map(|p| {
            let (d, name) = split_path(p);
            (d == dir).then(|| name.to_string())
        })
        .collect()
}

/// Names of the sub-directories directly inside `dir`, sorted and unique, given every file path
/// (directories are implicit in file paths).
pub fn subdirs_in<'a>(paths: impl Iterator<Item = &'a str>, dir: &str) -> Vec<String> {
    let dirs: std::collections::BTreeSet<String> = paths
        .filter_map(|p| {
            let rest = if dir.is_empty() {
                p
            } else {
                p.strip_prefix(dir)?.strip_prefix('/')?
            };
            rest.find('/').map(|i| rest[..i].to_string())
        })
        .collect();
    dirs.into_iter().collect()
}

/// Joins a directory and a name.
pub fn join_path(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A fault-free in-memory disk for unit tests and benchmarks: every write is immediately durable.
#[derive(Default)]
pub struct MemDisk {
    files: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Direct access for tests that corrupt or tear files on purpose.
    pub fn with_file<R>(&self, path: &str, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        self.files.borrow_mut().get_mut(path).map(f)
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.files.borrow().keys().cloned().collect()
    }
}

impl Disk for MemDisk {
    fn create(&self, path: &str) -> Result<(), DiskError> {
        let mut files = self.files.borrow_mut();
        if files.contains_key(path) {
            return Err(DiskError::AlreadyExists(path.to_string()));
        }
        files.insert(path.to_string(), Vec::new());
        Ok(())
    }

    fn append(&self, path: &str, data: &[u8]) -> Result<u64, DiskError> {
        let mut files = self.files.borrow_mut();
        let f = files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        let at = f.len() as u64;
        f.extend_from_slice(data);
        Ok(at)
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let mut files = self.files.borrow_mut();
        let f = files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        let end = offset as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        let files = self.files.borrow();
        let f = files
            .get(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        let start = (offset as usize).min(f.len());
        let n = buf.len().min(f.len() - start);
        buf[..n].copy_from_slice(&f[start..start + n]);
        Ok(n)
    }

    fn len(&self, path: &str) -> Result<u64, DiskError> {
        let files = self.files.borrow();
        files
            .get(path)
            .map(|f| f.len() as u64)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))
    }

    fn sync(&self, path: &str) -> Result<(), DiskError> {
        self.len(path).map(|_| ())
    }

    fn truncate(&self, path: &str, len: u64) -> Result<(), DiskError> {
        let mut files = self.files.borrow_mut();
        let f = files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        f.truncate(len as usize);
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        self.files
            .borrow_mut()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| DiskError::NotFound(path.to_string()))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut files = self.files.borrow_mut();
        let data = files
            .remove(from)
            .ok_or_else(|| DiskError::NotFound(from.to_string()))?;
        files.insert(to.to_string(), data);
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let files = self.files.borrow();
        Ok(files_in(files.keys().map(String::as_str), dir))
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let files = self.files.borrow();
        Ok(subdirs_in(files.keys().map(String::as_str), dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_memdisk_basic_file_ops() {
        let d = MemDisk::new();
        d.create("a/b/x.log").unwrap();
        assert_eq!(d.append("a/b/x.log", b"hello").unwrap(), 0);
        assert_eq!(d.append("a/b/x.log", b"!").unwrap(), 5);
        let mut buf = [0u8; 10];
        assert_eq!(d.read_at("a/b/x.log", 3, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"lo!");
        d.truncate("a/b/x.log", 2).unwrap();
        assert_eq!(d.len("a/b/x.log").unwrap(), 2);
        assert_eq!(d.list("a/b").unwrap(), vec!["x.log"]);
        assert_eq!(d.list_dirs("a").unwrap(), vec!["b"]);
        assert_eq!(d.list_dirs("").unwrap(), vec!["a"]);
        d.rename("a/b/x.log", "a/b/y.log").unwrap();
        assert!(!d.exists("a/b/x.log"));
        assert_eq!(
            d.create("a/b/y.log"),
            Err(DiskError::AlreadyExists("a/b/y.log".into()))
        );
        d.remove("a/b/y.log").unwrap();
        assert!(d.list("a/b").unwrap().is_empty());
    }
}
