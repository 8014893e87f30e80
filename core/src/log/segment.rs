//! On-disk entry frames and the in-memory view of one segment file.
//!
//! A segment is a file of back-to-back frames, one per raft entry. Frame layout (little-endian):
//!
//! ```text
//! 0  len u32            total frame bytes, header included (>= 48)
//! 4  crc u32            CRC-32C of bytes 0..4 followed by bytes 8..len
//! 8  index u64          raft index
//! 16 term u64           raft term (= partitionLeaderEpoch of the batch)
//! 24 base_offset i64    Kafka offset of the first record (next offset if record_count = 0)
//! 32 max_timestamp i64  the batch's maxTimestamp, -1 if the entry has no records
//! 40 record_count u32   offsets the entry occupies
//! 44 kind u8            EntryKind
//! 45 version u8         FRAME_VERSION
//! 46 reserved u16       zero
//! 48 data               the stamped batch, or raft's opaque payload for conf changes
//! ```
//!
//! Why a torn or zeroed tail is always detected: a zeroed header has `len` 0 < 48; a torn frame
//! either claims more bytes than the file holds or fails the CRC, which covers the length too;
//! a frame that passes the CRC is also checked for internal consistency (version, kind, the
//! batch header agreeing with the frame's offset, count, epoch and timestamp).
//!
//! The in-memory [`Segment`] keeps a dense per-entry table (40 bytes per entry: position, length,
//! term, offsets, timestamp) which serves raft's index lookups and Kafka's offset lookups by
//! binary search, plus a sparse time index (running max timestamp every `index_interval_bytes`)
//! that bounds the scan of `offset_for_timestamp`. Both are rebuilt by recovery.

use crate::batch::BatchHeader;
use crate::disk::Disk;

use super::{EntryKind, LogError};

/// Bytes of frame header before the entry data.
pub const FRAME_HEADER_LEN: usize = 48;
/// Frame format version written into every frame.
const FRAME_VERSION: u8 = 1;
/// Bytes recovery reads at a time while scanning a segment.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The metadata carried by a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub index: u64,
    pub term: u64,
    pub base_offset: i64,
    pub max_timestamp: i64,
    pub record_count: u32,
    pub kind: EntryKind,
}

/// Appends one encoded frame for `h` and `data` to `out`. `h.len` must equal the frame length.
/// A record-bearing entry's batch is stamped in the frame buffer with the frame's base offset and
/// term (as leader epoch): outside the batch CRC, so the client's CRC stays valid, and with no
/// extra copy of the batch.
pub fn encode_frame(out: &mut Vec<u8>, h: &FrameHeader, data: &[u8]) {
    assert_eq!(h.len as usize, FRAME_HEADER_LEN + data.len());
    let start = out.len();
    out.extend_from_slice(&h.len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&h.index.to_le_bytes());
    out.extend_from_slice(&h.term.to_le_bytes());
    out.extend_from_slice(&h.base_offset.to_le_bytes());
    out.extend_from_slice(&h.max_timestamp.to_le_bytes());
    out.extend_from_slice(&h.record_count.to_le_bytes());
    out.push(h.kind as u8);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(data);
    if h.record_count > 0 {
        let epoch = i32::try_from(h.term).expect("term fits a leader epoch");
        crate::batch::stamp(&mut out[start + FRAME_HEADER_LEN..], h.base_offset, epoch);
    }
    // Pair of the checks on read: what we write must be self-consistent. The CRC itself is
    // checked on every read; recomputing it here would double the write path's hashing.
    assert_eq!(check_data(h, &out[start + FRAME_HEADER_LEN..]), Ok(()));
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The declared length of the frame whose header starts `buf`, if `buf` holds a header.
pub fn frame_len(buf: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?))
}

/// Checks that `frame` is exactly one intact, self-consistent frame and returns its header.
/// The error names what is wrong; it never panics on any input.
pub fn decode_frame(frame: &[u8]) -> Result<FrameHeader, &'static str> {
    if frame.len() < FRAME_HEADER_LEN {
        return Err("frame shorter than its header");
    }
    let u64_at = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
    let len = u32_at(0);
    if len as usize != frame.len() {
        return Err("frame length mismatch");
    }
    if u32_at(4) != frame_crc(frame) {
        return Err("frame crc mismatch");
    }
    if frame[45] != FRAME_VERSION || frame[46] != 0 || frame[47] != 0 {
        return Err("unknown frame version");
    }
    let kind = EntryKind::from_u8(frame[44]).ok_or("unknown entry kind")?;
    let h = FrameHeader {
        len,
        index: u64_at(8),
        term: u64_at(16),
        base_offset: u64_at(24) as i64,
        max_timestamp: u64_at(32) as i64,
        record_count: u32_at(40),
        kind,
    };
    check_data(&h, &frame[FRAME_HEADER_LEN..])?;
    Ok(h)
}

/// The frame's metadata must agree with its data: a record-bearing entry is a normal entry whose
/// batch header carries the same offset, count, epoch, timestamp and length.
fn check_data(h: &FrameHeader, data: &[u8]) -> Result<(), &'static str> {
    if h.record_count == 0 {
        if h.max_timestamp != -1 || (h.kind == EntryKind::Normal && !data.is_empty()) {
            return Err("record-less frame with records");
        }
        return Ok(());
    }
    if h.kind != EntryKind::Normal {
        return Err("records in a non-normal entry");
    }
    let b = BatchHeader::parse(data).map_err(|_| "bad batch header in frame")?;
    let consistent = b.total_len() == data.len()
        && b.base_offset == h.base_offset
        && b.record_count() == h.record_count
        && b.partition_leader_epoch as i64 == h.term as i64
        && b.max_timestamp == h.max_timestamp;
    if !consistent {
        return Err("batch header disagrees with frame");
    }
    Ok(())
}

fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

/// What the log keeps in memory about one stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Byte position of the frame in its segment file.
    pub pos: u64,
    /// Frame length in bytes.
    pub len: u32,
    pub record_count: u32,
    pub term: u64,
    pub base_offset: i64,
    pub max_timestamp: i64,
}

impl EntryMeta {
    /// The Kafka offset just after this entry.
    pub fn end_offset(&self) -> i64 {
        self.base_offset + self.record_count as i64
    }

    /// Bytes of entry data (the frame minus its header).
    pub fn data_len(&self) -> u64 {
        self.len as u64 - FRAME_HEADER_LEN as u64
    }
}

/// One segment file and its in-memory indexes.
#[derive(Debug)]
pub struct Segment {
    /// Raft index of the first entry (also the file name).
    pub base_index: u64,
    pub path: String,
    /// Bytes of valid frames (the file may be longer only transiently during a failed write).
    pub size: u64,
    /// One row per entry, in index order.
    pub entries: Vec<EntryMeta>,
    /// Timestamp of the first record-bearing entry: segment age for `segment_ms` rolling.
    pub first_timestamp: Option<i64>,
    /// Largest timestamp in the segment (-1 if none): time retention and time lookups.
    pub max_timestamp: i64,
    /// Sparse (running max timestamp, entry slot) pairs, one per `index_interval_bytes`.
    pub time_index: Vec<(i64, u32)>,
    bytes_since_time_entry: u64,
}

impl Segment {
    pub fn new(path: String, base_index: u64) -> Segment {
        Segment {
            base_index,
            path,
            size: 0,
            entries: Vec::new(),
            first_timestamp: None,
            max_timestamp: -1,
            time_index: Vec::new(),
            bytes_since_time_entry: 0,
        }
    }

    /// Adds the next entry's row and updates the indexes.
    pub fn push(&mut self, e: EntryMeta, index_interval_bytes: u64) {
        assert_eq!(e.pos, self.size, "entries are contiguous in the file");
        if let Some(prev) = self.entries.last() {
            assert_eq!(prev.end_offset(), e.base_offset, "offsets are contiguous");
            assert!(prev.term <= e.term, "terms never decrease");
        }
        self.size += e.len as u64;
        if e.record_count > 0 && e.max_timestamp >= 0 && self.first_timestamp.is_none() {
            self.first_timestamp = Some(e.max_timestamp);
        }
        self.max_timestamp = self.max_timestamp.max(e.max_timestamp);
        self.entries.push(e);
        self.bytes_since_time_entry += e.len as u64;
        if e.record_count > 0 && self.bytes_since_time_entry >= index_interval_bytes {
            let slot = u32::try_from(self.entries.len() - 1).expect("segment over 4G entries");
            self.time_index.push((self.max_timestamp, slot));
            self.bytes_since_time_entry = 0;
        }
    }

    /// Drops the rows from `slot` on and rebuilds the indexes (truncation is rare, so a replay of
    /// the remaining rows is simpler than undoing index entries).
    pub fn truncate_to(&mut self, slot: usize, index_interval_bytes: u64) {
        assert!(slot <= self.entries.len());
        let keep: Vec<EntryMeta> = self.entries[..slot].to_vec();
        *self = Segment::new(std::mem::take(&mut self.path), self.base_index);
        for e in keep {
            self.push(e, index_interval_bytes);
        }
    }

    /// Index one past the last entry.
    pub fn next_index(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    /// Raft index of the last entry; the segment must not be empty.
    pub fn last_index(&self) -> u64 {
        assert!(!self.entries.is_empty());
        self.next_index() - 1
    }

    /// The Kafka offset after the last entry, if any.
    pub fn end_offset(&self) -> Option<i64> {
        self.entries.last().map(EntryMeta::end_offset)
    }

    /// The first slot that may hold a record with timestamp >= `ts`: every entry before it has a
    /// smaller max timestamp, by the time index's running max.
    pub fn time_lookup(&self, ts: i64) -> usize {
        let k = self.time_index.partition_point(|&(max, _)| max < ts);
        if k == 0 {
            0
        } else {
            self.time_index[k - 1].1 as usize + 1
        }
    }
}

/// Why a recovery scan stopped before the end of a segment file.
#[derive(Debug)]
pub struct ScanStop {
    /// Byte position of the first frame not accepted.
    pub pos: u64,
    pub reason: &'static str,
}

/// What recovery expects the next frame to continue.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub index: u64,
    pub offset: i64,
    pub term: u64,
}

/// Reads every frame of the segment file at `path`, verifying each, and returns the rows of the
/// valid prefix plus, if the scan stopped early, where and why. `expect` is advanced past the
/// accepted entries.
pub fn scan_segment(
    disk: &dyn Disk,
    path: &str,
    base_index: u64,
    expect: &mut Expect,
    index_interval_bytes: u64,
) -> Result<(Segment, Option<ScanStop>), LogError> {
    let mut seg = Segment::new(path.to_string(), base_index);
    let stop = scan_frames(disk, &mut seg, expect, index_interval_bytes)?;
    Ok((seg, stop))
}

/// The scan loop of [`scan_segment`]: pushes accepted frames into `seg` and returns where it
/// stopped early, if it did.
fn scan_frames(
    disk: &dyn Disk,
    seg: &mut Segment,
    expect: &mut Expect,
    index_interval_bytes: u64,
) -> Result<Option<ScanStop>, LogError> {
    let path = seg.path.clone();
    let file_len = disk.len(&path)?;
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_start = 0u64;
    let mut pos = 0u64;
    while pos < file_len {
        let stop = |reason| Ok(Some(ScanStop { pos, reason }));
        let remaining = file_len - pos;
        if remaining < FRAME_HEADER_LEN as u64 {
            return stop("torn frame header");
        }
        let header = read_span(
            disk,
            &path,
            &mut chunk,
            &mut chunk_start,
            pos,
            FRAME_HEADER_LEN,
        )?;
        let len = frame_len(header).expect("span holds a header");
        if (len as usize) < FRAME_HEADER_LEN || len as u64 > remaining {
            return stop("frame length out of bounds");
        }
        let frame = read_span(disk, &path, &mut chunk, &mut chunk_start, pos, len as usize)?;
        let h = match decode_frame(frame) {
            Ok(h) => h,
            Err(reason) => return stop(reason),
        };
        if h.index != expect.index {
            return stop("raft index not contiguous");
        }
        if h.base_offset != expect.offset {
            return stop("kafka offset not contiguous");
        }
        if h.term < expect.term {
            return stop("term decreased");
        }
        let e = EntryMeta {
            pos,
            len,
            record_count: h.record_count,
            term: h.term,
            base_offset: h.base_offset,
            max_timestamp: h.max_timestamp,
        };
        seg.push(e, index_interval_bytes);
        *expect = Expect {
            index: h.index + 1,
            offset: e.end_offset(),
            term: h.term,
        };
        pos += len as u64;
    }
    Ok(None)
}

/// Returns the bytes `[pos, pos+n)` of the file, served from `chunk` when it covers them and
/// otherwise by reading a new chunk starting at `pos` (the caller checked they exist).
fn read_span<'a>(
    disk: &dyn Disk,
    path: &str,
    chunk: &'a mut Vec<u8>,
    chunk_start: &mut u64,
    pos: u64,
    n: usize,
) -> Result<&'a [u8], LogError> {
    let covered = pos >= *chunk_start && pos + n as u64 <= *chunk_start + chunk.len() as u64;
    if !covered {
        let want = n.max(SCAN_CHUNK_BYTES) as u64;
        let avail = disk.len(path)?.saturating_sub(pos);
        chunk.resize(want.min(avail) as usize, 0);
        disk.read_exact_at(path, pos, chunk)?;
        *chunk_start = pos;
    }
    let at = (pos - *chunk_start) as usize;
    Ok(&chunk[at..at + n])
}
