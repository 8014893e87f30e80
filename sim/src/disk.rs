//! The simulated disk: an in-memory [`Disk`] with a page cache, crashes, torn writes, bit flips,
//! read errors, a full disk and latency.
//!
//! Each file is a *durable image* (what the platter holds) plus the list of *unsynced operations*
//! since its last `sync` (writes and truncates, in order), and a *volatile image* (what the page
//! cache holds: the durable image with every unsynced operation applied) that all reads see.
//!
//! ## Fault model
//! - **Crash** ([`SimDisk::crash`]): for every file the new content is its durable image plus a
//!   random prefix of its unsynced operations, applied in order; the last applied write may be
//!   torn: only its first `k` 512-byte sectors (counted on file-offset sector boundaries) land,
//!   and the sector after them may hold zeros or garbage. With torn writes off (or faults
//!   disabled), a crash loses every unsynced operation cleanly. `create`, `remove` and `rename`
//!   are durable when they return, as the [`Disk`] contract says.
//! - **Bit flips** ([`SimDisk::flip_random_bit`]): one bit of the *durable* image of a random
//!   file flips. The running process keeps reading its cached volatile image, so the flip shows
//!   only after a crash (restart), like a latent sector error under a page cache; a later `sync`
//!   rewrites only the bytes its operations touched, so an untouched flip survives it. Nothing
//!   else flips bits: the simulator calls this method and is responsible for aiming flips at a
//!   minority of the replicas of any one record (otherwise no protocol could recover the record).
//! - **Read errors**: each `read_at` fails with `DiskError::Io("injected read error")` with
//!   probability `read_error_p`. Transient: the next try may succeed.
//! - **Disk full** ([`SimDisk::set_capacity`]): a cap on the total bytes of all files (volatile
//!   lengths); a write that would exceed it fails with `DiskError::NoSpace` and changes nothing.
//! - **Latency**: each write, sync and read adds a latency drawn from the config to a busy
//!   counter that [`SimDisk::take_busy_us`] drains; the simulator delays the node's outputs by it.
//!
//! [`SimDisk::set_faults_enabled`]`(false)` turns off read errors, torn writes and bit flips for
//! the liveness phase; latency and an explicit capacity stay. All randomness comes from a
//! `ChaCha8Rng` seeded by the caller, and files are kept in a `BTreeMap`, so one seed gives one
//! history.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use railyard_core::disk::{files_in, subdirs_in, Disk, DiskError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::faults::{FaultConfig, RangeUs};

/// The unit a crash tears writes at: a write lands whole sectors, in order, until the crash.
pub const SECTOR_BYTES: u64 = 512;

/// Counters for the end-of-run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiskStats {
    /// `append` and `write_at` calls that succeeded.
    pub writes: u64,
    /// Bytes those writes carried.
    pub bytes_written: u64,
    /// `sync` calls that succeeded.
    pub syncs: u64,
    /// `read_at` calls, including the failed ones.
    pub reads: u64,
    /// Read errors injected.
    pub read_errors: u64,
    /// Writes refused with `NoSpace`.
    pub no_space: u64,
    /// Crashes.
    pub crashes: u64,
    /// Unsynced operations a crash discarded.
    pub ops_lost: u64,
    /// Writes a crash tore.
    pub torn_writes: u64,
    /// Bits flipped.
    pub flips: u64,
}

impl fmt::Display for DiskStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writes={} bytes={} syncs={} reads={} read_errors={} no_space={} crashes={} \
             ops_lost={} torn={} flips={}",
            self.writes,
            self.bytes_written,
            self.syncs,
            self.reads,
            self.read_errors,
            self.no_space,
            self.crashes,
            self.ops_lost,
            self.torn_writes,
            self.flips
        )
    }
}

/// A simulated disk for one node. See the module docs for the fault model.
pub struct SimDisk {
    faults: DiskFaults,
    state: RefCell<State>,
}

impl SimDisk {
    /// An empty disk with faults from `config` and randomness from `seed`.
    pub fn new(config: &FaultConfig, seed: u64) -> Self {
        config.assert_valid();
        Self {
            faults: DiskFaults {
                write_latency_us: config.disk_write_latency_us,
                sync_latency_us: config.disk_sync_latency_us,
                read_latency_us: config.disk_read_latency_us,
                torn_writes: config.torn_writes,
                read_error_p: config.read_error_p,
            },
            state: RefCell::new(State {
                files: BTreeMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults_enabled: true,
                capacity: None,
                used: 0,
                busy_us: 0,
                stats: DiskStats::default(),
                kill_after_ops: None,
            }),
        }
    }

    /// Makes the owning process die in the middle of its work: after `n` more mutating
    /// operations (syncs not counted) every mutating call fails with `Io`, as if the process
    /// had been killed right after a write it had not synced yet. The caller then crashes the disk, so the writes of the interrupted step are
    /// unsynced and may be lost or torn. `crash` disarms it.
    pub fn kill_after_ops(&self, n: Option<u64>) {
        self.state.borrow_mut().kill_after_ops = n;
    }

    /// Simulates a power loss or kill -9: every file keeps its durable image plus a random prefix
    /// of its unsynced operations, the last write possibly torn (see the module docs). Afterwards
    /// every file is fully durable and has no unsynced operations.
    pub fn crash(&self) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        st.kill_after_ops = None;
        st.assert_invariants();
        let tear = self.faults.torn_writes && st.faults_enabled;
        for file in st.files.values_mut() {
            let ops = std::mem::take(&mut file.unsynced);
            let (kept, torn) = if tear {
                crash_file(&mut file.durable, &ops, &mut st.rng)
            } else {
                (0, false)
            };
            assert!(kept <= ops.len());
            st.stats.ops_lost += (ops.len() - kept) as u64;
            st.stats.torn_writes += u64::from(torn);
            file.volatile = file.durable.clone();
        }
        st.stats.crashes += 1;
        st.used = st.files.values().map(|f| f.volatile.len() as u64).sum();
        st.assert_invariants();
    }

    /// Flips one random bit in the durable image of a random non-empty file whose path passes
    /// `path_filter`, and returns the path and the byte offset of the flip. `None` if no file
    /// matches or faults are disabled. Invisible to reads until the next [`Self::crash`].
    pub fn flip_random_bit(&self, path_filter: impl Fn(&str) -> bool) -> Option<(String, u64)> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        if !st.faults_enabled {
            return None;
        }
        let candidates: Vec<&String> = st
            .files
            .iter()
            .filter(|(p, f)| !f.durable.is_empty() && path_filter(p))
            .map(|(p, _)| p)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let path = candidates[st.rng.gen_range(0..candidates.len())].clone();
        let file = st.files.get_mut(&path).expect("candidate paths exist");
        let offset = st.rng.gen_range(0..file.durable.len());
        let bit = st.rng.gen_range(0..8u32);
        let before = file.durable[offset];
        file.durable[offset] ^= 1 << bit;
        assert_ne!(before, file.durable[offset]);
        st.stats.flips += 1;
        Some((path, offset as u64))
    }

    /// Caps the total bytes of all files (`None`: unlimited). Lowering it below the current usage
    /// makes every growing write fail; nothing already written is lost.
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.state.borrow_mut().capacity = capacity;
    }

    /// Total bytes of all files, as writes see them (volatile lengths). Use it to fill the disk:
    /// `set_capacity(Some(used_bytes() + headroom))`.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used
    }

    /// Returns and resets the simulated time the disk has been busy since the last call.
    pub fn take_busy_us(&self) -> u64 {
        std::mem::take(&mut self.state.borrow_mut().busy_us)
    }

    /// Turns read errors, torn writes and bit flips on or off. Latency and capacity stay.
    pub fn set_faults_enabled(&self, enabled: bool) {
        self.state.borrow_mut().faults_enabled = enabled;
    }

    /// Counters for the summary.
    pub fn stats(&self) -> DiskStats {
        self.state.borrow().stats
    }

    /// Every file's durable image, for debugging and for checking what a crash would keep.
    pub fn snapshot_durable(&self) -> BTreeMap<String, Vec<u8>> {
        let st = self.state.borrow();
        st.files
            .iter()
            .map(|(p, f)| (p.clone(), f.durable.clone()))
            .collect()
    }

    /// How many unsynced operations `path` has (0 for a missing file).
    pub fn unsynced_ops(&self, path: &str) -> usize {
        let st = self.state.borrow();
        st.files.get(path).map_or(0, |f| f.unsynced.len())
    }

    /// Writes `data` at `offset` of `path` (an `append` when `offset` is the current length).
    fn write(&self, path: &str, offset: Option<u64>, data: &[u8]) -> Result<u64, DiskError> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        st.alive(true)?;
        let file = st
            .files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        let len = file.volatile.len() as u64;
        let offset = offset.unwrap_or(len);
        let end = offset + data.len() as u64;
        let growth = end.saturating_sub(len);
        if let Some(cap) = st.capacity {
            if st.used + growth > cap {
                st.stats.no_space += 1;
                return Err(DiskError::NoSpace);
            }
        }
        let op = Op::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut file.volatile, &op);
        file.unsynced.push(op);
        assert_eq!(file.volatile.len() as u64, len.max(end));
        st.used += growth;
        st.stats.writes += 1;
        st.stats.bytes_written += data.len() as u64;
        st.busy_us += self.faults.write_latency_us.draw(&mut st.rng);
        Ok(offset)
    }
}

impl Disk for SimDisk {
    fn available_bytes(&self) -> Option<u64> {
        let st = self.state.borrow();
        st.capacity.map(|c| c.saturating_sub(st.used))
    }

    fn create(&self, path: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive(true)?;
        if st.files.contains_key(path) {
            return Err(DiskError::AlreadyExists(path.to_string()));
        }
        st.files.insert(path.to_string(), File::default());
        st.add_latency(self.faults.sync_latency_us);
        Ok(())
    }

    fn append(&self, path: &str, data: &[u8]) -> Result<u64, DiskError> {
        self.write(path, None, data)
    }

    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.write(path, Some(offset), data).map(|at| {
            assert_eq!(at, offset);
        })
    }

    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive(false)?;
        let st = &mut *st;
        let file = st
            .files
            .get(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        st.stats.reads += 1;
        st.busy_us += self.faults.read_latency_us.draw(&mut st.rng);
        let p = self.faults.read_error_p;
        if st.faults_enabled && p > 0.0 && st.rng.gen_bool(p) {
            st.stats.read_errors += 1;
            return Err(DiskError::Io("injected read error".to_string()));
        }
        let img = &file.volatile;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(img.len());
        let n = buf.len().min(img.len() - start);
        buf[..n].copy_from_slice(&img[start..start + n]);
        assert!(
            n == buf.len() || start + n == img.len(),
            "short only at EOF"
        );
        Ok(n)
    }

    fn len(&self, path: &str) -> Result<u64, DiskError> {
        let st = self.state.borrow();
        st.files
            .get(path)
            .map(|f| f.volatile.len() as u64)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))
    }

    fn sync(&self, path: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive_to_sync()?;
        let st = &mut *st;
        let file = st
            .files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        // Apply the operations rather than copy the volatile image: only the bytes they touch
        // are rewritten, so a bit flip elsewhere in the durable image survives a sync.
        for op in file.unsynced.drain(..) {
            apply(&mut file.durable, &op);
        }
        assert_eq!(file.durable.len(), file.volatile.len());
        st.stats.syncs += 1;
        st.busy_us += self.faults.sync_latency_us.draw(&mut st.rng);
        Ok(())
    }

    fn truncate(&self, path: &str, len: u64) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive(true)?;
        let st = &mut *st;
        let file = st
            .files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        let cur = file.volatile.len() as u64;
        if len >= cur {
            return Ok(());
        }
        let op = Op::Truncate { len };
        apply(&mut file.volatile, &op);
        file.unsynced.push(op);
        assert_eq!(file.volatile.len() as u64, len);
        st.used -= cur - len;
        st.busy_us += self.faults.write_latency_us.draw(&mut st.rng);
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive(true)?;
        let file = st
            .files
            .remove(path)
            .ok_or_else(|| DiskError::NotFound(path.to_string()))?;
        st.used -= file.volatile.len() as u64;
        st.add_latency(self.faults.sync_latency_us);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.alive(true)?;
        let file = st
            .files
            .remove(from)
            .ok_or_else(|| DiskError::NotFound(from.to_string()))?;
        // The inode moves with its unsynced operations; the replaced file's bytes are freed.
        if let Some(old) = st.files.insert(to.to_string(), file) {
            st.used -= old.volatile.len() as u64;
        }
        st.add_latency(self.faults.sync_latency_us);
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let st = self.state.borrow();
        Ok(files_in(st.files.keys().map(String::as_str), dir))
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let st = self.state.borrow();
        Ok(subdirs_in(st.files.keys().map(String::as_str), dir))
    }
}

/// The latency and fault settings the disk reads from [`FaultConfig`].
struct DiskFaults {
    write_latency_us: RangeUs,
    sync_latency_us: RangeUs,
    read_latency_us: RangeUs,
    torn_writes: bool,
    read_error_p: f64,
}

struct State {
    files: BTreeMap<String, File>,
    rng: ChaCha8Rng,
    faults_enabled: bool,
    capacity: Option<u64>,
    /// Sum of the volatile lengths of all files, kept in step with every change.
    used: u64,
    busy_us: u64,
    stats: DiskStats,
    /// Mutating operations other than syncs left before the owning process "dies" mid-step
    /// (see [`SimDisk::kill_after_ops`]); `Some(0)` means dead: every mutating call fails.
    /// Syncs pass without counting, so the process always dies with its last counted operation
    /// unsynced (a kill that only ever hit synced state would test nothing).
    kill_after_ops: Option<u64>,
}

impl State {
    /// Counts one operation against the kill switch; fails once the process is dead.
    fn alive(&mut self, mutating: bool) -> Result<(), DiskError> {
        match self.kill_after_ops {
            // Reads still succeed: nothing a dead process reads is observable, and raft-rs
            // treats a failed read as fatal, which would hide the interesting part (the torn
            // writes) behind a panic.
            Some(0) if mutating => Err(DiskError::Io("process killed mid-step".to_string())),
            Some(n) if mutating => {
                self.kill_after_ops = Some(n - 1);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A sync: fails once the process is dead, never counts towards its death.
    fn alive_to_sync(&mut self) -> Result<(), DiskError> {
        match self.kill_after_ops {
            Some(0) => Err(DiskError::Io("process killed mid-step".to_string())),
            _ => Ok(()),
        }
    }

    fn add_latency(&mut self, range: RangeUs) {
        self.busy_us += range.draw(&mut self.rng);
    }

    fn assert_invariants(&self) {
        let used: u64 = self.files.values().map(|f| f.volatile.len() as u64).sum();
        assert_eq!(used, self.used, "used bytes out of step");
        for f in self.files.values() {
            if f.unsynced.is_empty() {
                // A flip may make the images differ in content, never in length.
                assert_eq!(f.durable.len(), f.volatile.len());
            }
        }
    }
}

#[derive(Default)]
struct File {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see: `durable` with `unsynced` applied (except for bit flips in `durable`).
    volatile: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<Op>,
}

/// One unsynced change to a file.
enum Op {
    /// Bytes at an offset; extends the file with zeros if the offset is past the end.
    Write { offset: u64, data: Vec<u8> },
    /// Cut the file to `len` bytes (only recorded when it shortens the file).
    Truncate { len: u64 },
}

/// Applies one operation to an image.
fn apply(img: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => write_bytes(img, *offset, data),
        Op::Truncate { len } => img.truncate(*len as usize),
    }
}

fn write_bytes(img: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).expect("simulated files fit in memory");
    let end = start + data.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[start..end].copy_from_slice(data);
}

/// Applies a random prefix of `ops` to `durable`, tearing the last write of the prefix at a
/// sector boundary half the time. Returns how many operations were (at least partly) kept and
/// whether the last one was torn.
fn crash_file(durable: &mut Vec<u8>, ops: &[Op], rng: &mut ChaCha8Rng) -> (usize, bool) {
    // Half the time everything up to the write in flight reached the platter (the classic
    // torn tail); otherwise any prefix did.
    let kept = if rng.gen_bool(0.5) {
        ops.len()
    } else {
        rng.gen_range(0..=ops.len())
    };
    if kept == 0 {
        return (0, false);
    }
    for op in &ops[..kept - 1] {
        apply(durable, op);
    }
    let last = &ops[kept - 1];
    let Op::Write { offset, data } = last else {
        apply(durable, last);
        return (kept, false);
    };
    if data.is_empty() || rng.gen_bool(0.5) {
        apply(durable, last);
        return (kept, false);
    }
    tear_write(durable, *offset, data, rng);
    (kept, true)
}

/// Lands the first `k` sector pieces of a write and then, in the next piece, nothing, zeros or
/// garbage. A piece is the part of the write inside one 512-byte sector of the file, so the
/// first piece is short when the write starts mid-sector.
fn tear_write(durable: &mut Vec<u8>, offset: u64, data: &[u8], rng: &mut ChaCha8Rng) {
    let pieces = sector_pieces(offset, data.len() as u64);
    assert!(!pieces.is_empty());
    // Fewer than all pieces land whole, or the write would not be torn.
    let whole = rng.gen_range(0..pieces.len());
    let (t_lo, t_hi) = pieces[whole];
    assert!(offset <= t_lo && t_lo < t_hi && t_hi <= offset + data.len() as u64);
    assert_eq!(
        t_lo / SECTOR_BYTES,
        (t_hi - 1) / SECTOR_BYTES,
        "a piece is in one sector"
    );
    if whole > 0 {
        write_bytes(durable, offset, &data[..(t_lo - offset) as usize]);
    }
    let torn_len = (t_hi - t_lo) as usize;
    match rng.gen_range(0..3) {
        0 => {} // The torn sector never reached the platter.
        1 => write_bytes(durable, t_lo, &vec![0; torn_len]),
        _ => {
            let garbage: Vec<u8> = (0..torn_len).map(|_| rng.gen()).collect();
            write_bytes(durable, t_lo, &garbage);
        }
    }
}

/// Splits the byte range `[offset, offset + len)` at 512-byte file-offset boundaries.
fn sector_pieces(offset: u64, len: u64) -> Vec<(u64, u64)> {
    let end = offset + len;
    let mut out = Vec::new();
    let mut lo = offset;
    while lo < end {
        let hi = ((lo / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        out.push((lo, hi));
        lo = hi;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn faulty(torn: bool, read_error_p: f64) -> FaultConfig {
        let mut c = FaultConfig::none();
        c.torn_writes = torn;
        c.read_error_p = read_error_p;
        c
    }

    fn read_all(d: &SimDisk, path: &str) -> Vec<u8> {
        let mut buf = vec![0; d.len(path).unwrap() as usize];
        d.read_exact_at(path, 0, &mut buf).unwrap();
        buf
    }

    #[test]
    fn test_synced_data_survives_crash() {
        // Proves synced bytes survive a crash byte for byte, with or without torn writes.
        for torn in [false, true] {
            let d = SimDisk::new(&faulty(torn, 0.0), 1);
            d.create("p/a.log").unwrap();
            let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
            d.append("p/a.log", &data).unwrap();
            d.write_at("p/a.log", 100, b"xyz").unwrap();
            d.sync("p/a.log").unwrap();
            let before = read_all(&d, "p/a.log");
            d.crash();
            assert_eq!(read_all(&d, "p/a.log"), before);
            assert_eq!(d.snapshot_durable()["p/a.log"], before);
            assert_eq!(d.unsynced_ops("p/a.log"), 0);
        }
    }

    #[test]
    fn test_unsynced_appends_lost_without_torn_writes() {
        // Proves a crash with torn writes off drops every unsynced op, cleanly.
        let d = SimDisk::new(&faulty(false, 0.0), 2);
        d.create("a").unwrap();
        d.append("a", b"synced").unwrap();
        d.sync("a").unwrap();
        d.append("a", &[9; 2000]).unwrap();
        d.crash();
        assert_eq!(read_all(&d, "a"), b"synced");
        assert_eq!(d.used_bytes(), 6);
        assert_eq!(d.stats().ops_lost, 1);
    }

    #[test]
    fn test_unsynced_appends_keep_a_prefix_torn_at_a_sector() {
        // Proves a crash keeps a prefix of unsynced appends, torn only at a 512-byte boundary:
        // every byte is either the written byte or (inside one torn sector) zero or garbage.
        let mut seen_torn = 0;
        let mut seen_lengths = BTreeSet::new();
        for seed in 0..300 {
            let d = SimDisk::new(&faulty(true, 0.0), seed);
            d.create("a").unwrap();
            d.append("a", &[1; 300]).unwrap();
            d.sync("a").unwrap();
            // Three unsynced appends, starting mid-sector at offset 300.
            let writes: [(u8, usize); 3] = [(2, 1000), (3, 700), (4, 1500)];
            let mut expected = vec![1u8; 300];
            for (byte, len) in writes {
                d.append("a", &vec![byte; len]).unwrap();
                expected.extend(std::iter::repeat_n(byte, len));
            }
            d.crash();
            let got = read_all(&d, "a");
            assert!(got.len() >= 300 && got.len() <= expected.len());
            seen_lengths.insert(got.len());
            // Bytes that differ from the intended content lie within one sector.
            let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != expected[i]).collect();
            if let (Some(&first), Some(&last)) = (bad.first(), bad.last()) {
                assert_eq!(first / 512, last / 512, "seed {seed}: damage spans sectors");
                assert!(first >= 300, "synced data damaged");
            }
            // Lengths: each landed piece ends at a write end or a sector boundary.
            let ends = [300, 1300, 2000, 3500];
            assert!(
                got.len() / 512 * 512 == got.len() || ends.contains(&got.len()),
                "seed {seed}: length {} not at a sector or write boundary",
                got.len()
            );
            seen_torn += d.stats().torn_writes;
        }
        assert!(seen_torn > 30, "{seen_torn}");
        for len in [300, 1300, 2000, 3500] {
            assert!(seen_lengths.contains(&len), "{len} never seen");
        }
    }

    #[test]
    fn test_unsynced_truncate_then_crash_restores_old_length() {
        // Proves an unsynced truncate is undone by a crash that loses it.
        let d = SimDisk::new(&faulty(false, 0.0), 3);
        d.create("a").unwrap();
        d.append("a", &[5; 1000]).unwrap();
        d.sync("a").unwrap();
        d.truncate("a", 10).unwrap();
        assert_eq!(d.len("a").unwrap(), 10);
        d.crash();
        assert_eq!(read_all(&d, "a"), vec![5; 1000]);
        // Synced, the truncate sticks.
        d.truncate("a", 10).unwrap();
        d.sync("a").unwrap();
        d.crash();
        assert_eq!(d.len("a").unwrap(), 10);
    }

    #[test]
    fn test_no_space_changes_nothing() {
        // Proves a write refused for space leaves content, length, usage and durability as they were.
        let d = SimDisk::new(&faulty(true, 0.0), 4);
        d.create("a").unwrap();
        d.append("a", &[1; 100]).unwrap();
        d.set_capacity(Some(d.used_bytes() + 50));
        assert_eq!(d.append("a", &[2; 51]), Err(DiskError::NoSpace));
        assert_eq!(d.write_at("a", 90, &[2; 61]), Err(DiskError::NoSpace));
        assert_eq!(read_all(&d, "a"), vec![1; 100]);
        assert_eq!(d.used_bytes(), 100);
        assert_eq!(d.unsynced_ops("a"), 1);
        // Overwrites that do not grow the file still work, and so does filling it exactly.
        d.write_at("a", 0, &[3; 100]).unwrap();
        d.append("a", &[4; 50]).unwrap();
        assert_eq!(d.stats().no_space, 2);
        // Truncating frees space.
        d.truncate("a", 0).unwrap();
        d.set_capacity(None);
        assert_eq!(d.used_bytes(), 0);
    }

    #[test]
    fn test_flipped_bit_invisible_until_crash() {
        // Proves a flip hits the durable image only: reads see the cache until a crash.
        let d = SimDisk::new(&faulty(false, 0.0), 5);
        d.create("p/a.log").unwrap();
        d.create("q/b.log").unwrap();
        d.append("p/a.log", &[0; 4096]).unwrap();
        d.append("q/b.log", &[0; 4096]).unwrap();
        d.sync("p/a.log").unwrap();
        d.sync("q/b.log").unwrap();
        let (path, offset) = d.flip_random_bit(|p| p.starts_with("p/")).unwrap();
        assert_eq!(path, "p/a.log");
        assert_eq!(read_all(&d, "p/a.log"), vec![0; 4096]);
        // A sync of unrelated bytes does not repair the flip.
        let other = if offset == 0 { 4000 } else { 0 };
        d.write_at("p/a.log", other, &[0]).unwrap();
        d.sync("p/a.log").unwrap();
        d.crash();
        let got = read_all(&d, "p/a.log");
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != 0).collect();
        assert_eq!(bad, vec![offset as usize]);
        assert_eq!(got[offset as usize].count_ones(), 1);
        assert_eq!(read_all(&d, "q/b.log"), vec![0; 4096]);
        assert!(d.flip_random_bit(|p| p.starts_with("r/")).is_none());
        d.set_faults_enabled(false);
        assert!(d.flip_random_bit(|_| true).is_none());
    }

    #[test]
    fn test_read_errors_at_configured_rate() {
        // Proves injected read errors are transient and near the configured rate.
        let d = SimDisk::new(&faulty(false, 0.1), 6);
        d.create("a").unwrap();
        d.append("a", b"data").unwrap();
        let mut errors = 0;
        let mut buf = [0u8; 4];
        for _ in 0..20_000 {
            match d.read_at("a", 0, &mut buf) {
                Ok(n) => assert_eq!(&buf[..n], b"data"),
                Err(DiskError::Io(m)) => {
                    assert_eq!(m, "injected read error");
                    errors += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!((1_800..=2_200).contains(&errors), "{errors}");
        assert_eq!(d.stats().read_errors, errors);
        d.set_faults_enabled(false);
        for _ in 0..1_000 {
            d.read_at("a", 0, &mut buf).unwrap();
        }
    }

    #[test]
    fn test_latency_accumulates_and_drains() {
        // Proves writes, syncs and reads add latency in their ranges and take_busy_us resets it.
        let d = SimDisk::new(&FaultConfig::none(), 7);
        d.create("a").unwrap();
        let create = d.take_busy_us();
        assert!((100..=500).contains(&create));
        d.append("a", b"x").unwrap();
        d.sync("a").unwrap();
        let mut buf = [0u8; 1];
        d.read_at("a", 0, &mut buf).unwrap();
        let busy = d.take_busy_us();
        assert!((5 + 100 + 5..=20 + 500 + 20).contains(&busy), "{busy}");
        assert_eq!(d.take_busy_us(), 0);
    }

    #[test]
    fn test_namespace_ops_are_durable_and_listed() {
        // Proves create/remove/rename survive a crash and listing matches MemDisk's contract.
        let d = SimDisk::new(&faulty(true, 0.0), 8);
        d.create("t-0/1.log").unwrap();
        d.create("t-0/2.log").unwrap();
        d.create("t-1/1.log").unwrap();
        d.append("t-0/2.log", b"abc").unwrap();
        d.sync("t-0/2.log").unwrap();
        d.rename("t-0/2.log", "t-0/1.log").unwrap();
        d.remove("t-1/1.log").unwrap();
        d.crash();
        assert_eq!(d.list("t-0").unwrap(), vec!["1.log"]);
        assert_eq!(d.list_dirs("").unwrap(), vec!["t-0"]);
        assert_eq!(read_all(&d, "t-0/1.log"), b"abc");
        assert_eq!(d.used_bytes(), 3);
        assert_eq!(
            d.create("t-0/1.log"),
            Err(DiskError::AlreadyExists("t-0/1.log".into()))
        );
        assert_eq!(d.sync("nope"), Err(DiskError::NotFound("nope".into())));
    }

    #[test]
    fn test_same_seed_same_history() {
        // Proves determinism: the same seed and calls give the same images, stats and latency.
        let run = |seed: u64| {
            let config = FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut config = config;
            config.torn_writes = true;
            config.read_error_p = 0.05;
            let d = SimDisk::new(&config, seed);
            let mut trace = Vec::new();
            for f in 0..4u64 {
                d.create(&format!("d/{f}")).unwrap();
            }
            for i in 0..400u64 {
                let path = format!("d/{}", i % 4);
                d.append(&path, &vec![i as u8; (i * 37 % 1500) as usize])
                    .unwrap();
                if i % 7 == 0 {
                    d.sync(&path).unwrap();
                }
                let mut buf = [0u8; 16];
                trace.push(format!("{:?}", d.read_at(&path, 3, &mut buf)));
                if i % 50 == 49 {
                    trace.push(format!("{:?}", d.flip_random_bit(|_| true)));
                    d.crash();
                }
                trace.push(d.take_busy_us().to_string());
            }
            (d.snapshot_durable(), d.stats(), trace)
        };
        assert!(run(11) == run(11));
        assert!(run(11) != run(12));
    }

    #[test]
    fn test_sector_pieces_split_at_file_offset_boundaries() {
        // Proves writes split at absolute 512-byte boundaries, not relative to the write start.
        assert_eq!(sector_pieces(0, 512), vec![(0, 512)]);
        assert_eq!(
            sector_pieces(300, 1000),
            vec![(300, 512), (512, 1024), (1024, 1300)]
        );
        assert_eq!(sector_pieces(1024, 1), vec![(1024, 1025)]);
        assert!(sector_pieces(7, 0).is_empty());
    }
}
