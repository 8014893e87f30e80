//! The partition log: raft entries stored once, in segment files, over the [`Disk`] trait.
//!
//! The raft log *is* the Kafka partition log. Each raft entry is one frame in a segment file
//! `<dir>/<20-digit first raft index>.log` (frame format in [`segment`]); a normal entry's data is
//! a Kafka v2 batch whose `baseOffset` and `partitionLeaderEpoch` were stamped at append. Entries
//! without records (empty leader entries, conf changes) take a raft index but no Kafka offset, so
//! the log keeps both numberings: [`PartitionLog::term`] and [`PartitionLog::entries`] speak raft
//! indexes, [`PartitionLog::read`] and [`PartitionLog::offset_for_timestamp`] speak offsets, and
//! [`PartitionLog::end_offset_at`] maps one to the other (high watermark = end offset of the commit
//! index).
//!
//! The log's start point ([`SnapshotMeta`]: entries up to `index` are gone, the next offset is
//! `next_offset`) lives in `<dir>/log.meta`, a [`SlotFile`]. Retention and snapshot installation
//! write and sync it *before* removing any segment file, so it is the commit point: after a
//! crash, segments at or below `meta.index` are leftovers and are deleted.
//!
//! Kafka's log start offset can be ahead of that physical start: DeleteRecords moves it to any
//! offset up to the high watermark, possibly inside a segment or a batch
//! ([`PartitionLog::advance_start`]). The log does not persist it: the replica re-derives it at
//! open from the committed [`EntryKind::Command`] entries still in the log, and a segment
//! deleted for lying wholly below it moves the physical start at least as far.
//!
//! ## Recovery
//! [`PartitionLog::open`] scans **every** segment, verifying each frame's CRC and that raft
//! indexes, Kafka offsets and terms continue the previous frame, starting from the meta. At the
//! first bad or torn frame it truncates that segment there and deletes all later segments. The cost
//! is proportional to the log size; a periodically persisted recovery point (scan only the
//! segments after it, as Kafka does) is future work.
//!
//! ## Durability
//! `append` and `truncate_suffix` do not sync; they record which files are dirty and
//! [`PartitionLog::sync`] syncs each once (group commit). A failed append (for example
//! [`DiskError::NoSpace`]) leaves the in-memory log as it was before the append's writes (after
//! the raft overwrite truncation, if the append began with one) and truncates any partial bytes.
//!
//! ## Memory
//! Each segment keeps a dense 40-byte row per entry in memory (see [`segment`]); a sparse
//! on-disk offset index would bound memory for very long logs and is future work.

pub mod segment;
pub mod slot;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{self, BatchError, BatchHeader, Compression};
use crate::disk::{join_path, Disk, DiskError};
pub use segment::FRAME_HEADER_LEN;
use segment::{decode_frame, encode_frame, EntryMeta, Expect, FrameHeader, Segment};
pub use slot::SlotFile;

/// File name of the log's start-point slot file inside the partition directory.
pub const META_FILE: &str = "log.meta";
/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";

/// Tunables of a partition log, named after Kafka's topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before a segment would exceed this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll when an entry's max timestamp is this much newer than the segment's first (`segment.ms`).
    pub segment_ms: i64,
    /// Add a time index entry every this many bytes (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Delete old segments while the log stays at least this big without them (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest timestamp is older than this (`retention.ms`).
    pub retention_ms: Option<i64>,
    /// Largest entry data accepted (`max.message.bytes`).
    pub max_entry_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            max_entry_bytes: 1_048_588,
        }
    }
}

/// The kind of a raft entry; mirrors raft-rs's `EntryType` numbering.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    Normal = 0,
    ConfChange = 1,
    ConfChangeV2 = 2,
    /// A command to the partition itself (DeleteRecords; see `crate::partition_command`):
    /// raft's `EntryNormal` with a marker in the entry context. Takes no Kafka offset.
    Command = 3,
}

impl EntryKind {
    /// The kind with this discriminant, if any.
    pub fn from_u8(v: u8) -> Option<EntryKind> {
        match v {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            2 => Some(EntryKind::ConfChangeV2),
            3 => Some(EntryKind::Command),
            _ => None,
        }
    }
}

/// An entry to append, as raft hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// A v2 batch for normal entries (empty for raft's empty leader entry), raft's payload for
    /// conf changes.
    pub data: Bytes,
}

/// An entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// Offset of the first record; for an entry without records, the next offset at its append.
    pub base_offset: i64,
    /// Offsets the entry occupies (0 for entries without records).
    pub record_count: u32,
    /// The batch's max timestamp, -1 for entries without records.
    pub max_timestamp: i64,
    /// The stored data: the batch with `baseOffset` and `partitionLeaderEpoch` stamped.
    pub data: Bytes,
}

/// The log's start point: entries up to `index` (of term `term`) are gone, by retention or a
/// snapshot, and the first remaining record has offset `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub next_offset: i64,
}

/// What [`PartitionLog::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Raft index of the first entry dropped because of a bad or torn frame or a broken chain.
    pub truncated_from_index: Option<u64>,
    /// Bytes of segment files dropped by that truncation.
    pub bytes_dropped: u64,
    /// Segments in the recovered log.
    pub segments: usize,
    /// Entries in the recovered log.
    pub entries: u64,
    /// Leftover segments at or below the meta's index that were deleted.
    pub stale_segments_removed: usize,
    /// The bad frame was followed by a valid frame (in the same segment or a later one), so it
    /// was corruption of data that had been durable, not a torn tail of unsynced writes. Segment
    /// rolls sync the previous segment, so a torn tail never precedes durable data.
    pub corruption: bool,
}

/// The answer to a Kafka fetch: whole stored batches, zero-copy slices of one disk read per
/// segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadResult {
    /// Stamped v2 batches in offset order.
    pub batches: Vec<Bytes>,
    /// The offset just after the last returned batch (the fetch offset if none).
    pub next_offset: i64,
}

impl ReadResult {
    /// Total bytes of the returned batches.
    pub fn bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.len() as u64).sum()
    }
}

/// Why a log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The disk failed; [`DiskError::NoSpace`] on append leaves the log as it was.
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    /// An appended normal entry's data is not a valid v2 batch; nothing was written.
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    /// Stored bytes failed verification on read; they are never served.
    #[error("corrupt log data in {path} at {position}: {reason}")]
    Corrupt {
        path: String,
        position: u64,
        reason: String,
    },
    /// The index is at or below the log start (removed by retention or a snapshot).
    #[error("raft index {index} is compacted")]
    Compacted { index: u64 },
    /// The index is beyond the last entry.
    #[error("raft index {index} is unavailable")]
    Unavailable { index: u64 },
    /// A fetch offset outside `[start, end]`.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// An appended entry is larger than `max_entry_bytes`; nothing was written.
    #[error("entry {index} has {bytes} bytes, more than the maximum {max}")]
    EntryTooLarge { index: u64, bytes: u64, max: u64 },
}

/// One partition's log. Single-threaded; reads take `&self` and go through the [`Disk`].
pub struct PartitionLog {
    disk: Rc<dyn Disk>,
    dir: String,
    config: LogConfig,
    meta: SnapshotMeta,
    meta_file: SlotFile,
    /// Non-empty segments in index order, except that the last one may be empty right after a
    /// failed append created it.
    segments: Vec<Segment>,
    /// term -> (first raft index, start offset) of every epoch present, plus the meta's term.
    epochs: BTreeMap<u64, (u64, i64)>,
    /// Segment files written or truncated since the last sync.
    dirty: BTreeSet<String>,
    /// Kafka's log start offset when DeleteRecords moved it past `meta.next_offset` (module
    /// docs); never above the log end.
    start_floor: i64,
}

impl PartitionLog {
    /// Opens the log in `dir`, recovering it (see the module docs). A fresh directory gives an
    /// empty log with meta `(0, 0, 0)`: first index 1, last index 0.
    pub fn open(
        disk: Rc<dyn Disk>,
        dir: &str,
        config: LogConfig,
    ) -> Result<(PartitionLog, RecoveryReport), LogError> {
        assert!(config.segment_bytes > 0 && config.index_interval_bytes > 0);
        assert!(config.max_entry_bytes > 0);
        assert!(config.max_entry_bytes <= (u32::MAX as u64) - FRAME_HEADER_LEN as u64);
        let meta_path = join_path(dir, META_FILE);
        let (meta_file, payload) = SlotFile::open(disk.clone(), &meta_path)?;
        let meta = match payload {
            None => SnapshotMeta::default(),
            Some(p) => decode_meta(&p).ok_or_else(|| LogError::Corrupt {
                path: meta_path.clone(),
                position: 0,
                reason: "bad log meta payload".into(),
            })?,
        };
        let mut log = PartitionLog {
            disk,
            dir: dir.to_string(),
            config,
            meta,
            meta_file,
            segments: Vec::new(),
            epochs: BTreeMap::new(),
            dirty: BTreeSet::new(),
            start_floor: 0,
        };
        let report = log.recover()?;
        log.rebuild_epochs();
        log.check_invariants();
        Ok((log, report))
    }

    /// First raft index in the log (`meta.index + 1`, also when the log is empty).
    pub fn first_index(&self) -> u64 {
        self.meta.index + 1
    }

    /// Last raft index in the log (`meta.index` when the log is empty).
    pub fn last_index(&self) -> u64 {
        match self.segments.last() {
            Some(s) if !s.entries.is_empty() => s.last_index(),
            _ => self.meta.index,
        }
    }

    /// The term of entry `index`, valid for `meta.index..=last_index`.
    pub fn term(&self, index: u64) -> Result<u64, LogError> {
        if index == self.meta.index {
            return Ok(self.meta.term);
        }
        Ok(self.entry_meta(index)?.term)
    }

    /// Entries `[lo, hi)`, stopping before `max_bytes` of data would be exceeded but always
    /// returning at least one entry when `lo < hi`. Every frame's CRC is checked.
    pub fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<StoredEntry>, LogError> {
        if lo <= self.meta.index {
            return Err(LogError::Compacted { index: lo });
        }
        if hi > self.last_index() + 1 {
            return Err(LogError::Unavailable { index: hi - 1 });
        }
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        let budget = max_bytes.unwrap_or(u64::MAX);
        let mut total = 0u64;
        let mut end = lo;
        while end < hi {
            let size = self.entry_meta(end)?.data_len();
            if end > lo && total.saturating_add(size) > budget {
                break;
            }
            total += size;
            end += 1;
        }
        // One read per segment covering the chosen run.
        let mut index = lo;
        while index < end {
            let (si, slot) = self.locate(index);
            let seg = &self.segments[si];
            let last_slot = ((end - seg.base_index) as usize).min(seg.entries.len());
            let run = self.read_run(si, slot, last_slot)?;
            for s in slot..last_slot {
                out.push(self.check_entry(si, s, &run)?);
            }
            index = seg.base_index + last_slot as u64;
        }
        assert_eq!(out.len() as u64, end - lo);
        Ok(out)
    }

    /// Appends raft entries. If `entries[0].index <= last_index` the suffix from there is
    /// truncated first (raft overwrite). Normal entries with data must be valid v2 batches; the
    /// stored copy gets `baseOffset` = the log's next offset and `partitionLeaderEpoch` = the
    /// entry's term. Validation happens before anything is written. Not synced.
    pub fn append(&mut self, entries: &[NewEntry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(first.index > self.meta.index, "append below the log start");
        assert!(first.index <= self.last_index() + 1, "append leaves a gap");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                first.index + i as u64,
                "appended entries not contiguous"
            );
            assert!(i == 0 || entries[i - 1].term <= e.term, "terms decrease");
            assert!(
                e.term <= i32::MAX as u64,
                "term does not fit a leader epoch"
            );
        }
        let headers = self.validate_entries(entries)?;
        if first.index <= self.last_index() {
            self.truncate_suffix(first.index)?;
        }
        let prev_term = self.term(first.index - 1).expect("previous entry exists");
        assert!(
            prev_term <= first.term,
            "appended term below the previous entry's"
        );
        let mark = (
            self.segments.len(),
            self.segments.last().map_or(0, |s| s.entries.len()),
        );
        if let Err(e) = self.write_entries(entries, &headers) {
            self.rollback(mark);
            return Err(e);
        }
        for e in entries {
            let base_offset = self.entry_meta(e.index).expect("just appended").base_offset;
            self.note_epoch(e.term, e.index, base_offset);
        }
        self.check_invariants();
        Ok(())
    }

    /// Syncs every file written or truncated since the last sync, once each.
    pub fn sync(&mut self) -> Result<(), LogError> {
        while let Some(path) = self.dirty.first().cloned() {
            self.disk.sync(&path)?;
            self.dirty.remove(&path);
        }
        Ok(())
    }

    /// Whether there are unsynced writes.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Removes the entries from `from_index` on. Not synced (whole-segment removals are durable
    /// at once; a lost truncation only brings back entries raft had already persisted).
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<(), LogError> {
        assert!(
            from_index > self.meta.index,
            "truncation below the log start"
        );
        if from_index > self.last_index() {
            return Ok(());
        }
        // Newest first, so a failure part-way leaves a log that is still a prefix.
        while let Some(seg) = self.segments.last() {
            if seg.base_index < from_index {
                break;
            }
            self.disk.remove(&seg.path)?;
            self.dirty.remove(&seg.path);
            self.segments.pop();
        }
        if let Some(seg) = self.segments.last_mut() {
            let slot = (from_index - seg.base_index) as usize;
            if slot < seg.entries.len() {
                let pos = seg.entries[slot].pos;
                self.disk.truncate(&seg.path, pos)?;
                self.dirty.insert(seg.path.clone());
                seg.truncate_to(slot, self.config.index_interval_bytes);
                assert_eq!(seg.size, pos);
            }
        }
        self.epochs.retain(|_, &mut (first, _)| first < from_index);
        // Only a repair truncates below the commit point, and it re-fetches what it drops.
        self.start_floor = self.start_floor.min(self.next_offset());
        assert_eq!(self.last_index(), from_index - 1);
        self.check_invariants();
        Ok(())
    }

    /// Replaces the tunables (a topic's configs changed): later rolls and retention runs use
    /// them; nothing already written changes.
    pub fn set_config(&mut self, config: LogConfig) {
        assert!(config.segment_bytes > 0 && config.index_interval_bytes > 0);
        self.config = config;
    }

    /// The tunables in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The log end offset (Kafka LEO): the offset the next record will get.
    pub fn next_offset(&self) -> i64 {
        self.segments
            .iter()
            .rev()
            .find_map(Segment::end_offset)
            .unwrap_or(self.meta.next_offset)
    }

    /// The log start offset (Kafka's logStartOffset): the physical start, or where
    /// DeleteRecords moved it, whichever is later.
    pub fn start_offset(&self) -> i64 {
        self.meta.next_offset.max(self.start_floor)
    }

    /// Moves the log start offset to `offset` (DeleteRecords, once its command committed).
    /// Never moves it back; `offset` past the log end is clamped to it. Returns whether it
    /// moved. Nothing is deleted here: retention removes the segments wholly below it.
    pub fn advance_start(&mut self, offset: i64) -> bool {
        let offset = offset.min(self.next_offset());
        if offset <= self.start_offset() {
            return false;
        }
        self.start_floor = offset;
        true
    }

    /// Raft indexes of the entries from `from_index` through `to_index` that carry no records
    /// (empty leader entries, configuration changes and commands): what a replica scans at
    /// open for the commands it must apply again. Reads no disk.
    pub fn recordless_indexes(&self, from_index: u64, to_index: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for seg in &self.segments {
            for (slot, e) in seg.entries.iter().enumerate() {
                let index = seg.base_index + slot as u64;
                if e.record_count == 0 && index >= from_index && index <= to_index {
                    out.push(index);
                }
            }
        }
        out
    }

    /// The offset just after entry `index` (`index` may be `meta.index`). The high watermark is
    /// `end_offset_at(commit_index)`.
    pub fn end_offset_at(&self, index: u64) -> Result<i64, LogError> {
        if index == self.meta.index {
            return Ok(self.meta.next_offset);
        }
        Ok(self.entry_meta(index)?.end_offset())
    }

    /// Kafka fetch: whole stored batches from the one containing `offset`, only batches ending at
    /// or below `limit_offset` (the high watermark, an entry boundary), up to `max_bytes` except
    /// that the first batch is always returned whole.
    pub fn read(
        &self,
        offset: i64,
        limit_offset: i64,
        max_bytes: u64,
    ) -> Result<ReadResult, LogError> {
        let start = self.start_offset();
        let limit = limit_offset.min(self.next_offset());
        if offset < start || offset > limit {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: limit,
            });
        }
        let mut result = ReadResult {
            batches: Vec::new(),
            next_offset: offset,
        };
        if offset == limit {
            return Ok(result);
        }
        let (mut si, mut slot) = self.locate_offset(offset);
        let mut total = 0u64;
        'segments: while si < self.segments.len() {
            let seg = &self.segments[si];
            let mut chosen = Vec::new();
            while slot < seg.entries.len() {
                let e = &seg.entries[slot];
                if e.record_count > 0 {
                    let first = result.batches.is_empty() && chosen.is_empty();
                    let fits = total.saturating_add(e.data_len()) <= max_bytes;
                    if e.end_offset() > limit || (!first && !fits) {
                        self.read_chosen(si, &chosen, &mut result)?;
                        break 'segments;
                    }
                    total += e.data_len();
                    chosen.push(slot);
                }
                slot += 1;
            }
            self.read_chosen(si, &chosen, &mut result)?;
            si += 1;
            slot = 0;
        }
        assert!(
            !result.batches.is_empty(),
            "a fetch below the limit returns a batch"
        );
        assert!(result.next_offset > offset && result.next_offset <= limit);
        Ok(result)
    }

    /// The earliest record with timestamp >= `ts` in a batch ending at or below `limit_offset`,
    /// as (offset, timestamp), Kafka's ListOffsets by time. For a compressed batch the answer is
    /// the batch's base offset and max timestamp (the broker never decompresses).
    pub fn offset_for_timestamp(
        &self,
        ts: i64,
        limit_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let start = self.start_offset();
        for (si, seg) in self.segments.iter().enumerate() {
            if seg.max_timestamp < ts || seg.end_offset().is_some_and(|end| end <= start) {
                continue;
            }
            for slot in seg.time_lookup(ts)..seg.entries.len() {
                let e = &seg.entries[slot];
                if e.record_count == 0 || e.end_offset() <= start {
                    continue;
                }
                if e.end_offset() > limit_offset {
                    return Ok(None);
                }
                if e.max_timestamp < ts {
                    continue;
                }
                let run = self.read_run(si, slot, slot + 1)?;
                let entry = self.check_entry(si, slot, &run)?;
                let header = BatchHeader::parse(&entry.data)?;
                if header.compression() != Compression::None {
                    // Records below the start (DeleteRecords inside this batch) are gone.
                    return Ok(Some((entry.base_offset.max(start), entry.max_timestamp)));
                }
                let found = batch::decode_records(&entry.data)?
                    .into_iter()
                    .find(|r| r.timestamp >= ts && r.offset >= start);
                if let Some(r) = found {
                    return Ok(Some((r.offset, r.timestamp)));
                }
                // A client's maxTimestamp can exceed every record's; keep looking.
            }
        }
        Ok(None)
    }

    /// The largest record timestamp among batches ending at or below `limit_offset`, and the
    /// first record carrying it, as (offset, timestamp): Kafka's ListOffsets max timestamp
    /// (KIP-734). `None` when no such batch holds a record. A segment that ends at or below the
    /// limit is judged by its running maximum; only the segments the limit or the log start
    /// offset cut are scanned.
    pub fn max_timestamp_offset(&self, limit_offset: i64) -> Result<Option<(i64, i64)>, LogError> {
        let start = self.start_offset();
        let mut max_ts: Option<i64> = None;
        for seg in &self.segments {
            if seg.end_offset().is_some_and(|end| end <= start) {
                continue;
            }
            let below_start = seg.entries.first().is_some_and(|e| e.base_offset < start);
            let whole = !below_start && seg.end_offset().is_some_and(|end| end <= limit_offset);
            let seg_max = if whole {
                seg.entries
                    .iter()
                    .any(|e| e.record_count > 0)
                    .then_some(seg.max_timestamp)
            } else {
                seg.entries
                    .iter()
                    .filter(|e| e.record_count > 0 && e.end_offset() <= limit_offset)
                    .filter(|e| e.end_offset() > start)
                    .map(|e| e.max_timestamp)
                    .max()
            };
            max_ts = max_ts.max(seg_max);
            if seg.end_offset().is_some_and(|end| end > limit_offset) {
                break;
            }
        }
        match max_ts {
            Some(ts) => self.offset_for_timestamp(ts, limit_offset),
            None => Ok(None),
        }
    }

    /// Kafka OffsetForLeaderEpoch: the largest epoch <= `epoch` present in the log and its end
    /// offset (the start offset of the next epoch, or the LEO for the latest one).
    pub fn end_offset_for_epoch(&self, epoch: u64) -> Option<(u64, i64)> {
        let (&found, _) = self.epochs.range(..=epoch).next_back()?;
        let end = self
            .epochs
            .range((Bound::Excluded(found), Bound::Unbounded))
            .next()
            .map_or_else(|| self.next_offset(), |(_, &(_, start))| start);
        Some((found, end))
    }

    /// The log's start point.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.meta
    }

    /// Whether retention at `now_ms` would delete the oldest segment if everything were
    /// applied: a cheap test that lets a replica skip the work retention needs first (a
    /// machine snapshot) when there is nothing to delete, as on most partitions most of the
    /// time. Retention deletes oldest first, so the oldest segment decides.
    pub fn retention_due(&self, now_ms: i64) -> bool {
        let [seg, _, ..] = self.segments.as_slice() else {
            return false; // the active segment always stays
        };
        self.past_retention(seg, self.size_bytes(), now_ms)
    }

    /// Whether retention deletes `seg`, the oldest segment left, from a log of `size` bytes.
    fn past_retention(&self, seg: &Segment, size: u64, now_ms: i64) -> bool {
        let by_size = self
            .config
            .retention_bytes
            .is_some_and(|r| size - seg.size >= r);
        let by_time = self
            .config
            .retention_ms
            .is_some_and(|r| seg.max_timestamp < now_ms.saturating_sub(r));
        let by_start = seg.end_offset().is_some_and(|end| end <= self.start_floor);
        by_size || by_time || by_start
    }

    /// Deletes the oldest whole segments while the log would still hold at least
    /// `retention_bytes` without them, while their newest timestamp is older than
    /// `now_ms - retention_ms`, or while they lie wholly below the log start offset
    /// (DeleteRecords; Kafka deletes those segments the same way). Never deletes the active
    /// (last) segment or a segment holding an entry above `up_to_index` (the caller's applied and committed index). Returns the new
    /// start point if it moved; it is durable before any file is removed.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        up_to_index: u64,
    ) -> Result<Option<SnapshotMeta>, LogError> {
        let mut size = self.size_bytes();
        let mut k = 0;
        while k + 1 < self.segments.len() {
            let seg = &self.segments[k];
            assert!(
                !seg.entries.is_empty(),
                "only the active segment may be empty"
            );
            if seg.last_index() > up_to_index {
                break;
            }
            if !self.past_retention(seg, size, now_ms) {
                break;
            }
            size -= seg.size;
            k += 1;
        }
        self.drop_segments(k)
    }

    /// Deletes the oldest whole segments whose entries are all at or below `up_to_index` (a
    /// state machine snapshot covers them), never the active one. Returns the new start point if
    /// it moved; it is durable before any file is removed.
    pub fn compact(&mut self, up_to_index: u64) -> Result<Option<SnapshotMeta>, LogError> {
        let k = self.segments[..self.segments.len().saturating_sub(1)]
            .iter()
            .take_while(|seg| seg.last_index() <= up_to_index)
            .count();
        self.drop_segments(k)
    }

    /// Drops the first `k` segments, sealed ones only (shared by retention and compaction).
    fn drop_segments(&mut self, k: usize) -> Result<Option<SnapshotMeta>, LogError> {
        assert!(k < self.segments.len().max(1), "the active segment stays");
        if k == 0 {
            return Ok(None);
        }
        let last = &self.segments[k - 1];
        let row = last.entries.last().expect("non-empty");
        let meta = SnapshotMeta {
            index: last.last_index(),
            term: row.term,
            next_offset: row.end_offset(),
        };
        self.write_meta(meta)?;
        for seg in self.segments.drain(..k) {
            // A file that fails to go is a leftover at or below meta.index: open deletes it.
            let _ = self.disk.remove(&seg.path);
            self.dirty.remove(&seg.path);
        }
        self.meta = meta;
        self.rebuild_epochs();
        self.check_invariants();
        Ok(Some(meta))
    }

    /// Replaces the whole log by an empty log starting after `meta` (a metadata-only raft
    /// snapshot). The synced meta write is the commit point; segment files are removed after it.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), LogError> {
        assert!(
            meta.index >= self.meta.index,
            "snapshot older than the log start"
        );
        assert!(
            meta.next_offset >= self.meta.next_offset,
            "snapshot moves offsets back"
        );
        self.restart_at(meta)
    }

    /// Empties the log back to index 0: the start record first (the commit point), then every
    /// segment. Only for a replica about to re-fetch everything from its leader (its state
    /// machine lost every snapshot the log needed); raft must not be running over it yet.
    pub fn discard_all(&mut self) -> Result<(), LogError> {
        self.restart_at(SnapshotMeta {
            index: 0,
            term: 0,
            next_offset: 0,
        })
    }

    /// Replaces the whole log by an empty one starting after `meta`: the synced start record
    /// is the commit point, and the segment files go after it.
    fn restart_at(&mut self, meta: SnapshotMeta) -> Result<(), LogError> {
        self.write_meta(meta)?;
        for seg in self.segments.drain(..) {
            // As in retention: a leftover is at or below meta.index, or fails the chain check.
            let _ = self.disk.remove(&seg.path);
        }
        self.dirty.clear();
        // The empty log ends at meta.next_offset; a floor past it belonged to entries the
        // replica no longer has, and comes back with them (their commands apply again).
        self.start_floor = self.start_floor.min(meta.next_offset);
        self.meta = meta;
        self.rebuild_epochs();
        self.check_invariants();
        Ok(())
    }

    /// Bytes in segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    // -----------------------------------------------------------------------------------------
    // Private helpers.

    /// Scans all segments (see the module docs) and fills `self.segments`.
    fn recover(&mut self) -> Result<RecoveryReport, LogError> {
        let mut report = RecoveryReport::default();
        let mut names: Vec<(u64, String)> = self
            .disk
            .list(&self.dir)?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|b| (b, join_path(&self.dir, &n))))
            .collect();
        names.sort();
        let mut expect = Expect {
            index: self.meta.index + 1,
            offset: self.meta.next_offset,
            term: self.meta.term,
        };
        let mut broken = false;
        for (base, path) in names {
            if base <= self.meta.index {
                self.disk.remove(&path)?;
                report.stale_segments_removed += 1;
                continue;
            }
            if broken || base != expect.index {
                report.truncated_from_index.get_or_insert(expect.index);
                report.bytes_dropped += self.disk.len(&path)?;
                self.disk.remove(&path)?;
                broken = true;
                continue;
            }
            let ii = self.config.index_interval_bytes;
            let (seg, stop) = segment::scan_segment(&*self.disk, &path, base, &mut expect, ii)?;
            if let Some(stop) = stop {
                let file_len = self.disk.len(&path)?;
                report.corruption = self.valid_data_after(&path, stop.pos, expect.index);
                report.truncated_from_index = Some(expect.index);
                report.bytes_dropped += file_len - stop.pos;
                self.disk.truncate(&path, stop.pos)?;
                self.disk.sync(&path)?;
                broken = true;
            }
            if seg.entries.is_empty() {
                self.disk.remove(&path)?;
            } else {
                report.entries += seg.entries.len() as u64;
                self.segments.push(seg);
            }
        }
        report.segments = self.segments.len();
        Ok(report)
    }

    /// Whether a valid frame follows the bad frame at `pos` of `path`: the frame right after it
    /// (when its length field is plausible) or the first frame of any later segment.
    fn valid_data_after(&self, path: &str, pos: u64, bad_index: u64) -> bool {
        let disk = &*self.disk;
        let frame_at = |path: &str, pos: u64| -> Option<FrameHeader> {
            let mut head = [0u8; FRAME_HEADER_LEN];
            disk.read_exact_at(path, pos, &mut head).ok()?;
            let len = segment::frame_len(&head)? as usize;
            if len < FRAME_HEADER_LEN || pos + len as u64 > disk.len(path).ok()? {
                return None;
            }
            let mut frame = vec![0u8; len];
            disk.read_exact_at(path, pos, &mut frame).ok()?;
            decode_frame(&frame).ok()
        };
        let mut head = [0u8; FRAME_HEADER_LEN];
        if disk.read_exact_at(path, pos, &mut head).is_ok() {
            if let Some(len) = segment::frame_len(&head) {
                if let Some(h) = frame_at(path, pos + len as u64) {
                    if h.index == bad_index + 1 {
                        return true;
                    }
                }
            }
        }
        let Ok(names) = disk.list(&self.dir) else {
            return false;
        };
        let this_base = split_base(path);
        names
            .iter()
            .filter_map(|n| parse_segment_name(n).map(|b| (b, join_path(&self.dir, n))))
            .filter(|(b, _)| Some(*b) > this_base)
            .any(|(_, p)| frame_at(&p, 0).is_some_and(|h| h.index > bad_index))
    }

    /// Checks the entries to append before anything is written; returns each one's batch header
    /// (None for entries without records).
    fn validate_entries(&self, entries: &[NewEntry]) -> Result<Vec<Option<BatchHeader>>, LogError> {
        entries
            .iter()
            .map(|e| {
                if e.data.len() as u64 > self.config.max_entry_bytes {
                    return Err(LogError::EntryTooLarge {
                        index: e.index,
                        bytes: e.data.len() as u64,
                        max: self.config.max_entry_bytes,
                    });
                }
                if e.kind == EntryKind::Normal && !e.data.is_empty() {
                    Ok(Some(batch::validate(&e.data)?))
                } else {
                    Ok(None)
                }
            })
            .collect()
    }

    /// Encodes and writes validated entries, rolling segments as needed; one write per segment.
    fn write_entries(
        &mut self,
        entries: &[NewEntry],
        headers: &[Option<BatchHeader>],
    ) -> Result<(), LogError> {
        let mut next_offset = self.next_offset();
        let total: usize = entries
            .iter()
            .map(|e| FRAME_HEADER_LEN + e.data.len())
            .sum();
        let mut buf: Vec<u8> = Vec::with_capacity(total);
        let mut buf_pos = self.segments.last().map_or(0, |s| s.size);
        for (e, h) in entries.iter().zip(headers) {
            let record_count = h.map_or(0, |h| h.record_count());
            let max_timestamp = h.map_or(-1, |h| h.max_timestamp);
            let len = (FRAME_HEADER_LEN + e.data.len()) as u32;
            if self.needs_roll(len, record_count, max_timestamp) {
                self.flush(&mut buf, buf_pos)?;
                self.create_segment(e.index)?;
                buf_pos = 0;
            }
            let fh = FrameHeader {
                len,
                index: e.index,
                term: e.term,
                base_offset: next_offset,
                max_timestamp,
                record_count,
                kind: e.kind,
            };
            // Stamps the batch's base offset and epoch in the frame buffer.
            encode_frame(&mut buf, &fh, &e.data);
            let seg = self.segments.last_mut().expect("a segment was created");
            seg.push(
                EntryMeta {
                    pos: seg.size,
                    len,
                    record_count,
                    term: e.term,
                    base_offset: next_offset,
                    max_timestamp,
                },
                self.config.index_interval_bytes,
            );
            next_offset += record_count as i64;
        }
        self.flush(&mut buf, buf_pos)
    }

    /// Whether the next entry must start a new segment.
    fn needs_roll(&self, len: u32, record_count: u32, max_timestamp: i64) -> bool {
        let Some(seg) = self.segments.last() else {
            return true;
        };
        if seg.entries.is_empty() {
            return false;
        }
        let too_big = seg.size + len as u64 > self.config.segment_bytes;
        let too_old = record_count > 0
            && max_timestamp >= 0
            && seg
                .first_timestamp
                .is_some_and(|f| max_timestamp.saturating_sub(f) > self.config.segment_ms);
        too_big || too_old
    }

    /// Writes the buffered frames of the active segment at `pos`. Positional writes keep frame
    /// positions exact even if an earlier failed write left stray bytes past the end.
    fn flush(&mut self, buf: &mut Vec<u8>, pos: u64) -> Result<(), LogError> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = self.segments.last().expect("frames belong to a segment");
        assert_eq!(
            pos + buf.len() as u64,
            seg.size,
            "buffer ends at the segment end"
        );
        self.dirty.insert(seg.path.clone());
        self.disk.write_at(&seg.path, pos, buf)?;
        buf.clear();
        Ok(())
    }

    /// Starts a new, empty segment whose first entry will be `base_index`.
    fn create_segment(&mut self, base_index: u64) -> Result<(), LogError> {
        // Sync the segment being sealed first, so that after a crash a torn (unsynced) tail can
        // only be the tail of the newest segment; recovery tells corruption from tears by this.
        if let Some(prev) = self.segments.last() {
            if self.dirty.contains(&prev.path) {
                self.disk.sync(&prev.path)?;
                self.dirty.remove(&prev.path.clone());
            }
        }
        let path = join_path(&self.dir, &segment_name(base_index));
        match self.disk.create(&path) {
            Ok(()) => {}
            // A leftover from a failed removal: it holds nothing we keep.
            Err(DiskError::AlreadyExists(_)) => {
                self.disk.truncate(&path, 0)?;
                self.dirty.insert(path.clone());
            }
            Err(e) => return Err(e.into()),
        }
        self.segments.push(Segment::new(path, base_index));
        Ok(())
    }

    /// Undoes a failed `write_entries`: drops rows and segments added after `mark` and cuts the
    /// files back. Cleanup failures are ignored: the caller returns the original error, and stray
    /// bytes past a segment's end are overwritten by the next positional write or, after a crash,
    /// dropped by recovery unless they are whole valid frames of entries raft gave us.
    fn rollback(&mut self, (seg_count, rows): (usize, usize)) {
        while self.segments.len() > seg_count {
            let seg = self.segments.pop().expect("len > seg_count");
            let _ = self.disk.remove(&seg.path);
            self.dirty.remove(&seg.path);
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.truncate_to(rows, self.config.index_interval_bytes);
            let _ = self.disk.truncate(&seg.path, seg.size);
        }
        if self.segments.last().is_some_and(|s| s.entries.is_empty()) {
            let seg = self.segments.pop().expect("checked");
            let _ = self.disk.remove(&seg.path);
            self.dirty.remove(&seg.path);
        }
    }

    /// Writes and syncs the start point.
    fn write_meta(&mut self, meta: SnapshotMeta) -> Result<(), LogError> {
        self.meta_file.write(&encode_meta(&meta))?;
        self.meta_file.sync()
    }

    /// (segment, slot) of entry `index`, which must be in the log.
    fn locate(&self, index: u64) -> (usize, usize) {
        assert!(index > self.meta.index && index <= self.last_index());
        let si = self.segments.partition_point(|s| s.base_index <= index) - 1;
        let slot = (index - self.segments[si].base_index) as usize;
        assert!(slot < self.segments[si].entries.len());
        (si, slot)
    }

    /// (segment, slot) of the entry holding `offset`, which must be in `[start, next_offset)`.
    fn locate_offset(&self, offset: i64) -> (usize, usize) {
        assert!(offset >= self.start_offset() && offset < self.next_offset());
        let si = self
            .segments
            .partition_point(|s| s.end_offset().is_none_or(|end| end <= offset));
        let seg = &self.segments[si];
        let slot = seg.entries.partition_point(|e| e.end_offset() <= offset);
        let e = &seg.entries[slot];
        assert!(e.base_offset <= offset && offset < e.end_offset());
        (si, slot)
    }

    /// The row of entry `index`, or the error raft expects for an index outside the log.
    fn entry_meta(&self, index: u64) -> Result<&EntryMeta, LogError> {
        if index <= self.meta.index {
            return Err(LogError::Compacted { index });
        }
        if index > self.last_index() {
            return Err(LogError::Unavailable { index });
        }
        let (si, slot) = self.locate(index);
        Ok(&self.segments[si].entries[slot])
    }

    /// Reads the frames of slots `[from, to)` of segment `si` in one disk read.
    fn read_run(&self, si: usize, from: usize, to: usize) -> Result<Run, LogError> {
        let seg = &self.segments[si];
        assert!(from < to && to <= seg.entries.len());
        let start = seg.entries[from].pos;
        let last = &seg.entries[to - 1];
        let mut buf = vec![0u8; (last.pos + last.len as u64 - start) as usize];
        self.disk.read_exact_at(&seg.path, start, &mut buf)?;
        Ok(Run {
            bytes: Bytes::from(buf),
            start,
        })
    }

    /// Verifies the frame of slot `slot` inside `run` against the in-memory row, pairing the
    /// checks made at write, and returns it as an entry whose data is a slice of the run.
    fn check_entry(&self, si: usize, slot: usize, run: &Run) -> Result<StoredEntry, LogError> {
        let seg = &self.segments[si];
        let row = &seg.entries[slot];
        assert!(row.pos >= run.start);
        let rel = (row.pos - run.start) as usize;
        let run = &run.bytes;
        let corrupt = |reason: &str| LogError::Corrupt {
            path: seg.path.clone(),
            position: row.pos,
            reason: reason.to_string(),
        };
        let frame = run
            .get(rel..rel + row.len as usize)
            .ok_or_else(|| corrupt("frame outside the read"))?;
        let h = decode_frame(frame).map_err(corrupt)?;
        let index = seg.base_index + slot as u64;
        let matches = h.index == index
            && h.term == row.term
            && h.base_offset == row.base_offset
            && h.record_count == row.record_count
            && h.max_timestamp == row.max_timestamp;
        if !matches {
            return Err(corrupt("frame disagrees with the index"));
        }
        Ok(StoredEntry {
            index,
            term: h.term,
            kind: h.kind,
            base_offset: h.base_offset,
            record_count: h.record_count,
            max_timestamp: h.max_timestamp,
            data: run.slice(rel + FRAME_HEADER_LEN..rel + row.len as usize),
        })
    }

    /// Appends the chosen record-bearing slots of segment `si` to `result`, with one disk read.
    fn read_chosen(
        &self,
        si: usize,
        chosen: &[usize],
        result: &mut ReadResult,
    ) -> Result<(), LogError> {
        let (Some(&from), Some(&to)) = (chosen.first(), chosen.last()) else {
            return Ok(());
        };
        let run = self.read_run(si, from, to + 1)?;
        for &slot in chosen {
            let entry = self.check_entry(si, slot, &run)?;
            result.next_offset = entry.base_offset + entry.record_count as i64;
            result.batches.push(entry.data);
        }
        Ok(())
    }

    fn note_epoch(&mut self, term: u64, index: u64, base_offset: i64) {
        if self.epochs.last_key_value().is_none_or(|(&t, _)| t < term) {
            self.epochs.insert(term, (index, base_offset));
        }
    }

    /// Recomputes the epoch map from the meta and the in-memory rows.
    fn rebuild_epochs(&mut self) {
        self.epochs.clear();
        if self.meta.index > 0 {
            self.epochs
                .insert(self.meta.term, (self.meta.index, self.meta.next_offset));
        }
        let rows: Vec<(u64, u64, i64)> = self
            .segments
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.term, s.base_index + i as u64, e.base_offset))
            })
            .collect();
        for (term, index, base_offset) in rows {
            self.note_epoch(term, index, base_offset);
        }
    }

    /// Structural invariants that must hold between operations.
    fn check_invariants(&self) {
        let mut index = self.meta.index + 1;
        let mut offset = self.meta.next_offset;
        for (i, seg) in self.segments.iter().enumerate() {
            assert!(!seg.entries.is_empty() || i + 1 == self.segments.len());
            assert_eq!(seg.base_index, index, "segments chain by index");
            if let Some(first) = seg.entries.first() {
                assert_eq!(first.base_offset, offset, "segments chain by offset");
            }
            index = seg.next_index();
            offset = seg.end_offset().unwrap_or(offset);
        }
        assert_eq!(self.last_index() + 1, index);
        assert_eq!(self.next_offset(), offset);
        assert!(
            self.start_offset() <= offset,
            "log start offset past the log end"
        );
    }
}

/// Frames of consecutive slots read with one disk read, and the file position they start at.
struct Run {
    bytes: Bytes,
    start: u64,
}

/// `<20-digit base index>.log`.
fn segment_name(base_index: u64) -> String {
    format!("{base_index:020}{SEGMENT_SUFFIX}")
}

/// The base index of a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

const META_PAYLOAD_LEN: usize = 24;

fn encode_meta(m: &SnapshotMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_PAYLOAD_LEN);
    out.extend_from_slice(&m.index.to_le_bytes());
    out.extend_from_slice(&m.term.to_le_bytes());
    out.extend_from_slice(&m.next_offset.to_le_bytes());
    out
}

fn decode_meta(p: &[u8]) -> Option<SnapshotMeta> {
    if p.len() != META_PAYLOAD_LEN {
        return None;
    }
    Some(SnapshotMeta {
        index: u64::from_le_bytes(p[0..8].try_into().ok()?),
        term: u64::from_le_bytes(p[8..16].try_into().ok()?),
        next_offset: i64::from_le_bytes(p[16..24].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests;

/// The base index of a segment path, from its file name.
fn split_base(path: &str) -> Option<u64> {
    parse_segment_name(crate::disk::split_path(path).1)
}
