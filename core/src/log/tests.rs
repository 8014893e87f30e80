//! Tests of the partition log over `MemDisk`: raft and Kafka views of the same entries, segment
//! rolling, truncation, retention, snapshots, failed appends and crash recovery.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::batch::{decode_records, validate, BatchBuilder};
use crate::disk::MemDisk;

const DIR: &str = "t-0";

/// A batch of `n` records with timestamps `ts, ts+1, ...` and `value_len`-byte values.
fn batch(n: usize, ts: i64, value_len: usize) -> Bytes {
    let mut b = BatchBuilder::new(ts);
    for i in 0..n {
        let v = vec![(i % 251) as u8; value_len];
        b.push(
            Some(format!("k{i}").as_bytes()),
            Some(&v),
            &[],
            ts + i as i64,
        );
    }
    b.build()
}

fn normal(index: u64, term: u64, data: Bytes) -> NewEntry {
    NewEntry {
        index,
        term,
        kind: EntryKind::Normal,
        data,
    }
}

fn empty(index: u64, term: u64) -> NewEntry {
    normal(index, term, Bytes::new())
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: i64::MAX,
        index_interval_bytes: 256,
        retention_bytes: None,
        retention_ms: None,
        max_entry_bytes: 64 * 1024,
    }
}

fn open(disk: &Rc<MemDisk>, config: LogConfig) -> (PartitionLog, RecoveryReport) {
    PartitionLog::open(disk.clone(), DIR, config).unwrap()
}

/// Checks that `stored` is `appended` as the log must store it: same raft fields and, for batches,
/// the same bytes except the stamped base offset and epoch.
fn assert_stored(stored: &StoredEntry, appended: &NewEntry) {
    assert_eq!(
        (stored.index, stored.term, stored.kind),
        (appended.index, appended.term, appended.kind)
    );
    if stored.record_count == 0 {
        assert_eq!(stored.data, appended.data);
        return;
    }
    let mut expect = appended.data.to_vec();
    batch::stamp(&mut expect, stored.base_offset, stored.term as i32);
    assert_eq!(&stored.data[..], &expect[..]);
    let h = validate(&stored.data).unwrap();
    assert_eq!(h.base_offset, stored.base_offset);
    assert_eq!(h.partition_leader_epoch as u64, stored.term);
}

#[test]
fn test_fresh_log_is_empty() {
    // A fresh directory is an empty log starting after meta (0, 0, 0).
    let disk = Rc::new(MemDisk::new());
    let (log, report) = open(&disk, LogConfig::default());
    assert_eq!((log.first_index(), log.last_index()), (1, 0));
    assert_eq!((log.start_offset(), log.next_offset()), (0, 0));
    assert_eq!(log.term(0), Ok(0));
    assert_eq!(log.term(1), Err(LogError::Unavailable { index: 1 }));
    assert_eq!(log.snapshot_meta(), SnapshotMeta::default());
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(log.entries(1, 1, None), Ok(vec![]));
    assert_eq!(log.read(0, 0, 100).unwrap().batches.len(), 0);
    assert_eq!(log.end_offset_for_epoch(5), None);
}

#[test]
fn test_append_read_term_entries_across_segment_rolls() {
    // Entries spread over several segments read back identically, by index and by offset, before
    // and after reopening.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let appended: Vec<NewEntry> = (1..=30)
        .map(|i| normal(i, 1 + i / 10, batch(3, 1000 + i as i64 * 10, 50)))
        .collect();
    for chunk in appended.chunks(4) {
        log.append(chunk).unwrap();
    }
    assert!(log.is_dirty());
    log.sync().unwrap();
    assert!(!log.is_dirty());
    assert!(
        log.segment_count() > 3,
        "segments rolled: {}",
        log.segment_count()
    );
    for round in 0..2 {
        assert_eq!((log.first_index(), log.last_index()), (1, 30));
        assert_eq!(log.next_offset(), 90);
        for e in &appended {
            assert_eq!(log.term(e.index), Ok(e.term));
            assert_eq!(log.end_offset_at(e.index), Ok(e.index as i64 * 3));
        }
        let got = log.entries(1, 31, None).unwrap();
        assert_eq!(got.len(), 30);
        for (g, a) in got.iter().zip(&appended) {
            assert_stored(g, a);
            assert_eq!(g.base_offset, (a.index as i64 - 1) * 3);
        }
        // A fetch from the middle of a batch starts with that batch.
        let r = log.read(7, 90, u64::MAX).unwrap();
        assert_eq!(r.batches.len(), 28);
        assert_eq!(r.next_offset, 90);
        assert_eq!(validate(&r.batches[0]).unwrap().base_offset, 6);
        let offsets: Vec<i64> = r
            .batches
            .iter()
            .flat_map(|b| decode_records(b).unwrap())
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (6..90).collect::<Vec<_>>());
        if round == 0 {
            let (reopened, report) = open(&disk, small_config());
            assert_eq!(report.entries, 30);
            assert_eq!(report.truncated_from_index, None);
            log = reopened;
        }
    }
}

#[test]
fn test_entries_max_bytes_returns_at_least_one() {
    // raft's size limit: stop before exceeding max_bytes, but never return nothing.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let es: Vec<NewEntry> = (1..=5).map(|i| normal(i, 1, batch(1, 0, 100))).collect();
    log.append(&es).unwrap();
    let one = es[0].data.len() as u64;
    assert_eq!(log.entries(1, 6, Some(0)).unwrap().len(), 1);
    assert_eq!(log.entries(1, 6, Some(2 * one)).unwrap().len(), 2);
    assert_eq!(log.entries(2, 6, Some(2 * one + 1)).unwrap().len(), 2);
    assert_eq!(log.entries(1, 6, None).unwrap().len(), 5);
    assert_eq!(
        log.entries(0, 2, None),
        Err(LogError::Compacted { index: 0 })
    );
    assert_eq!(
        log.entries(1, 7, None),
        Err(LogError::Unavailable { index: 6 })
    );
}

#[test]
fn test_truncate_suffix_then_reappend() {
    // A raft overwrite replaces the suffix, in memory and on disk, and offsets are reassigned.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let es: Vec<NewEntry> = (1..=20).map(|i| normal(i, 1, batch(2, 0, 60))).collect();
    log.append(&es).unwrap();
    let segs = log.segment_count();
    log.truncate_suffix(8).unwrap();
    assert_eq!((log.last_index(), log.next_offset()), (7, 14));
    assert!(log.segment_count() < segs);
    // Append overlapping: entries 6.. of term 2 replace 6 and 7 as well.
    let new: Vec<NewEntry> = (6..=12).map(|i| normal(i, 2, batch(1, 5, 10))).collect();
    log.append(&new).unwrap();
    assert_eq!((log.last_index(), log.next_offset()), (12, 10 + 7));
    assert_eq!(log.term(5), Ok(1));
    assert_eq!(log.term(6), Ok(2));
    log.sync().unwrap();
    let (log2, report) = open(&disk, small_config());
    assert_eq!(report.truncated_from_index, None);
    let got = log2.entries(1, 13, None).unwrap();
    for (g, a) in got.iter().zip(es[..5].iter().chain(&new)) {
        assert_stored(g, a);
    }
    assert_eq!(log2.end_offset_for_epoch(1), Some((1, 10)));
    assert_eq!(log2.end_offset_for_epoch(2), Some((2, 17)));
    // Truncating at the first entry of the log empties it.
    let mut log2 = log2;
    log2.truncate_suffix(1).unwrap();
    assert_eq!(
        (log2.last_index(), log2.next_offset(), log2.segment_count()),
        (0, 0, 0)
    );
    log2.append(&[normal(1, 3, batch(1, 0, 1))]).unwrap();
    assert_eq!(log2.end_offset_at(1), Ok(1));
}

#[test]
fn test_offsets_skip_entries_without_records() {
    // Empty leader entries and conf changes take a raft index but no Kafka offset.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let cc = NewEntry {
        index: 3,
        term: 1,
        kind: EntryKind::ConfChange,
        data: Bytes::from_static(b"opaque raft conf change"),
    };
    log.append(&[empty(1, 1), normal(2, 1, batch(4, 0, 8)), cc.clone()])
        .unwrap();
    log.append(&[normal(4, 1, batch(2, 0, 8)), empty(5, 2)])
        .unwrap();
    assert_eq!(log.end_offset_at(0), Ok(0));
    assert_eq!(log.end_offset_at(1), Ok(0));
    assert_eq!(log.end_offset_at(2), Ok(4));
    assert_eq!(log.end_offset_at(3), Ok(4));
    assert_eq!(log.end_offset_at(4), Ok(6));
    assert_eq!(log.end_offset_at(5), Ok(6));
    let got = log.entries(1, 6, None).unwrap();
    assert_eq!(got[2].data, cc.data);
    assert_eq!(got[2].kind, EntryKind::ConfChange);
    assert_eq!((got[2].base_offset, got[2].record_count), (4, 0));
    assert_eq!(got[4].max_timestamp, -1);
    // Fetch returns only record batches.
    let r = log.read(0, 6, u64::MAX).unwrap();
    assert_eq!(r.batches.len(), 2);
    assert_eq!(r.next_offset, 6);
    // Epoch 2 starts at offset 6 with an empty entry.
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 6)));
}

#[test]
fn test_read_respects_limit_max_bytes_and_first_batch_rule() {
    // Fetch never crosses the high watermark, stops at max_bytes, but returns a whole first batch.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let es: Vec<NewEntry> = (1..=10).map(|i| normal(i, 1, batch(2, 0, 40))).collect();
    log.append(&es).unwrap();
    let len = es[0].data.len() as u64;
    let hw = log.end_offset_at(6).unwrap();
    assert_eq!(hw, 12);
    let r = log.read(0, hw, u64::MAX).unwrap();
    assert_eq!((r.batches.len(), r.next_offset), (6, 12));
    let r = log.read(3, hw, 1).unwrap();
    assert_eq!((r.batches.len(), r.next_offset), (1, 4));
    assert_eq!(r.bytes(), len);
    let r = log.read(3, hw, 3 * len).unwrap();
    assert_eq!((r.batches.len(), r.next_offset), (3, 8));
    assert_eq!(log.read(12, hw, 100).unwrap().batches.len(), 0);
    assert!(matches!(
        log.read(13, hw, 100),
        Err(LogError::OffsetOutOfRange { offset: 13, .. })
    ));
    assert!(matches!(
        log.read(-1, hw, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn test_offset_for_timestamp() {
    // The earliest record at or after a timestamp, found through the time index, below the limit.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    // Entry i holds 4 records with timestamps 100*i .. 100*i+3.
    let es: Vec<NewEntry> = (1..=20)
        .map(|i| normal(i, 1, batch(4, 100 * i as i64, 20)))
        .collect();
    log.append(&es).unwrap();
    let end = log.next_offset();
    assert_eq!(log.offset_for_timestamp(0, end), Ok(Some((0, 100))));
    assert_eq!(log.offset_for_timestamp(502, end), Ok(Some((18, 502))));
    assert_eq!(log.offset_for_timestamp(504, end), Ok(Some((20, 600))));
    assert_eq!(log.offset_for_timestamp(2003, end), Ok(Some((79, 2003))));
    assert_eq!(log.offset_for_timestamp(2004, end), Ok(None));
    // Below the high watermark only.
    assert_eq!(log.offset_for_timestamp(502, 16), Ok(None));
    assert_eq!(log.offset_for_timestamp(502, 20), Ok(Some((18, 502))));
}

#[test]
fn test_max_timestamp_offset() {
    // KIP-734: the first record with the largest timestamp, whatever the order of timestamps,
    // among batches below the limit; none in an empty log.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    assert_eq!(log.max_timestamp_offset(0), Ok(None));
    // Entry i holds 4 records from timestamp t_i; entry 7 holds the largest, 9_000..9_003.
    let starts = |i: u64| if i == 7 { 9_000 } else { 100 * i as i64 };
    let es: Vec<NewEntry> = (1..=20)
        .map(|i| normal(i, 1, batch(4, starts(i), 20)))
        .collect();
    log.append(&es).unwrap();
    assert!(log.segment_count() > 2, "the scan crosses segments");
    let end = log.next_offset();
    assert_eq!(log.max_timestamp_offset(end), Ok(Some((27, 9_003))));
    // The limit cuts entry 7 off: the largest before it is entry 6's last record.
    assert_eq!(log.max_timestamp_offset(24), Ok(Some((23, 603))));
}

#[test]
fn test_end_offset_for_epoch() {
    // OffsetForLeaderEpoch from term changes; fixed by truncation and rebuilt on reopen.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    log.append(&[normal(1, 1, batch(2, 0, 1)), normal(2, 1, batch(2, 0, 1))])
        .unwrap();
    log.append(&[normal(3, 3, batch(3, 0, 1)), normal(4, 5, batch(1, 0, 1))])
        .unwrap();
    assert_eq!(log.end_offset_for_epoch(0), None);
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 4)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 4)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 7)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 8)));
    assert_eq!(log.end_offset_for_epoch(9), Some((5, 8)));
    log.truncate_suffix(4).unwrap();
    assert_eq!(log.end_offset_for_epoch(9), Some((3, 7)));
    log.sync().unwrap();
    let (log, _) = open(&disk, small_config());
    assert_eq!(log.end_offset_for_epoch(9), Some((3, 7)));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 4)));
}

#[test]
fn test_retention_by_bytes_advances_start_and_persists() {
    // Size retention deletes whole old segments, keeps at least retention_bytes, never the active
    // segment or anything above up_to_index, and the new start survives a reopen.
    let disk = Rc::new(MemDisk::new());
    let mut config = small_config();
    config.retention_bytes = Some(2048);
    let (mut log, _) = open(&disk, config.clone());
    let es: Vec<NewEntry> = (1..=40).map(|i| normal(i, 1, batch(1, 0, 100))).collect();
    log.append(&es).unwrap();
    log.sync().unwrap();
    let segs = log.segment_count();
    // Nothing is committed: nothing goes.
    assert_eq!(log.apply_retention(0, 0), Ok(None));
    let meta = log.apply_retention(0, 40).unwrap().expect("retention ran");
    assert!(log.size_bytes() >= 2048);
    assert!(log.segment_count() < segs);
    assert_eq!(log.first_index(), meta.index + 1);
    assert_eq!(log.start_offset(), meta.next_offset);
    assert_eq!(meta.next_offset, meta.index as i64);
    assert_eq!(log.term(meta.index), Ok(1));
    assert!(matches!(
        log.term(meta.index - 1),
        Err(LogError::Compacted { .. })
    ));
    assert!(matches!(
        log.read(0, 40, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 40)));
    let (log2, report) = open(&disk, config);
    assert_eq!(report.stale_segments_removed, 0);
    assert_eq!(log2.snapshot_meta(), meta);
    assert_eq!(log2.first_index(), meta.index + 1);
    let got = log2.entries(log2.first_index(), 41, None).unwrap();
    for g in &got {
        assert_stored(g, &es[g.index as usize - 1]);
    }
}

#[test]
fn test_advance_start_reads_lookups_and_retention() {
    // DeleteRecords' log start: never back, never past the end, inside a batch if asked; reads
    // below it are out of range, lookups answer at or above it, retention drops the segments
    // wholly below it, and a command entry is stored with its kind and takes no offset.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let mut es: Vec<NewEntry> = (1..=20)
        .map(|i| normal(i, 1, batch(2, 10 * i as i64, 100)))
        .collect();
    es.push(NewEntry {
        index: 21,
        term: 1,
        kind: EntryKind::Command,
        data: Bytes::from_static(b"cmd"),
    });
    log.append(&es).unwrap();
    assert_eq!(log.next_offset(), 40, "the command took no offset");
    assert_eq!(log.recordless_indexes(1, 21), vec![21]);
    assert_eq!(
        log.entries(21, 22, None).unwrap()[0].kind,
        EntryKind::Command
    );
    assert!(log.advance_start(15));
    assert!(!log.advance_start(9), "the start never goes back");
    assert_eq!(log.start_offset(), 15);
    assert!(matches!(
        log.read(14, 40, 1 << 20),
        Err(LogError::OffsetOutOfRange { start: 15, .. })
    ));
    // Offset 15 is the second record of the batch at 14: the batch comes whole.
    let r = log.read(15, 40, 1).unwrap();
    assert_eq!(r.next_offset, 16);
    // Entry 8 (offsets 14, 15) has timestamps 80, 81: a lookup by time never answers 14.
    assert_eq!(log.offset_for_timestamp(0, 40), Ok(Some((15, 81))));
    let segs = log.segment_count();
    assert_eq!(
        log.apply_retention(0, 21)
            .unwrap()
            .map(|m| m.next_offset <= 15),
        Some(true)
    );
    assert!(log.segment_count() < segs);
    assert_eq!(log.start_offset(), 15, "retention keeps the logical start");
    assert!(
        !log.advance_start(1_000) || log.start_offset() == 40,
        "clamped to the end"
    );
    assert_eq!(log.start_offset(), 40);
    // Not persisted by the log: a reopen starts at the physical start (the replica replays).
    log.sync().unwrap();
    let (reopened, _) = open(&disk, small_config());
    assert!(reopened.start_offset() <= 15);
}

#[test]
fn test_retention_by_time_and_leftover_segments() {
    // Time retention removes segments whose newest record is too old; a crash after the meta
    // write but before file removal leaves leftovers that reopen deletes.
    let disk = Rc::new(MemDisk::new());
    let mut config = small_config();
    config.retention_ms = Some(1000);
    let (mut log, _) = open(&disk, config.clone());
    let es: Vec<NewEntry> = (1..=30)
        .map(|i| normal(i, 1, batch(1, i as i64 * 100, 100)))
        .collect();
    log.append(&es).unwrap();
    let before = disk.paths();
    let meta = log
        .apply_retention(2500, 30)
        .unwrap()
        .expect("some are old");
    // Entry i has timestamp 100 * i: the deleted segments all ended before 1500, and the
    // oldest remaining one holds a newer record, so running retention again removes nothing.
    assert!((meta.index as i64) * 100 < 1500);
    assert!(meta.index >= 4);
    assert_eq!(log.apply_retention(2500, 30), Ok(None));
    assert_eq!(log.first_index(), meta.index + 1);
    // Restore the removed files as if the removals had been lost to a crash.
    for p in before {
        if !disk.exists(&p) {
            disk.create(&p).unwrap();
        }
    }
    let (log2, report) = open(&disk, config);
    assert!(report.stale_segments_removed > 0);
    assert_eq!(log2.snapshot_meta(), meta);
    assert_eq!(log2.last_index(), 30);
}

#[test]
fn test_install_snapshot_then_reopen() {
    // A metadata-only snapshot replaces the log; appends continue after it, across a reopen.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    let es: Vec<NewEntry> = (1..=10).map(|i| normal(i, 1, batch(1, 0, 100))).collect();
    log.append(&es).unwrap();
    let meta = SnapshotMeta {
        index: 50,
        term: 4,
        next_offset: 1000,
    };
    log.install_snapshot(meta).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (51, 50));
    assert_eq!((log.start_offset(), log.next_offset()), (1000, 1000));
    assert_eq!(log.term(50), Ok(4));
    assert_eq!(log.end_offset_at(50), Ok(1000));
    assert_eq!(log.end_offset_for_epoch(7), Some((4, 1000)));
    assert_eq!(log.segment_count(), 0);
    log.append(&[normal(51, 5, batch(3, 0, 1))]).unwrap();
    log.sync().unwrap();
    let (log, report) = open(&disk, small_config());
    assert_eq!(report.entries, 1);
    assert_eq!(log.snapshot_meta(), meta);
    assert_eq!(log.end_offset_at(51), Ok(1003));
    assert_eq!(log.read(1000, 1003, 1).unwrap().next_offset, 1003);
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 1000)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 1003)));
}

#[test]
fn test_malformed_batch_is_rejected_and_nothing_written() {
    // Bad magic, bad CRC, length mismatch and oversize each give a typed error and write nothing,
    // even when valid entries precede the bad one in the same append.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    log.append(&[normal(1, 1, batch(1, 0, 10))]).unwrap();
    log.sync().unwrap();
    let files = disk.paths();
    let sizes: Vec<u64> = files.iter().map(|p| disk.len(p).unwrap()).collect();
    let good = batch(2, 0, 10);
    let mut bad_magic = good.to_vec();
    bad_magic[16] = 1;
    let mut bad_crc = good.to_vec();
    *bad_crc.last_mut().unwrap() ^= 0xff;
    let mut bad_len = good.to_vec();
    bad_len.push(0);
    let cases: Vec<(Vec<u8>, ErrorCheck)> = vec![
        (bad_magic, |e| {
            matches!(e, LogError::Batch(BatchError::BadMagic(1)))
        }),
        (bad_crc, |e| {
            matches!(e, LogError::Batch(BatchError::CrcMismatch { .. }))
        }),
        (bad_len, |e| {
            matches!(e, LogError::Batch(BatchError::LengthMismatch { .. }))
        }),
        (vec![7u8; 70_000], |e| {
            matches!(e, LogError::EntryTooLarge { index: 3, .. })
        }),
    ];
    for (data, is_expected) in cases {
        // The overwrite of index 2 must not happen either: validation precedes truncation.
        let err = log
            .append(&[normal(2, 1, good.clone()), normal(3, 1, Bytes::from(data))])
            .unwrap_err();
        assert!(is_expected(&err), "{err:?}");
        assert_eq!(log.last_index(), 1);
        assert_eq!(disk.paths(), files);
        let now: Vec<u64> = files.iter().map(|p| disk.len(p).unwrap()).collect();
        assert_eq!(now, sizes);
    }
}

/// Recognises the expected error of a malformed-append case.
type ErrorCheck = fn(&LogError) -> bool;

/// A MemDisk that runs out of space after `budget` more bytes of writes.
struct FullDisk {
    inner: MemDisk,
    budget: Cell<u64>,
}

impl Disk for FullDisk {
    fn create(&self, path: &str) -> Result<(), DiskError> {
        self.inner.create(path)
    }
    fn append(&self, path: &str, data: &[u8]) -> Result<u64, DiskError> {
        self.spend(data.len())?;
        self.inner.append(path, data)
    }
    fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.spend(data.len())?;
        self.inner.write_at(path, offset, data)
    }
    fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        self.inner.read_at(path, offset, buf)
    }
    fn len(&self, path: &str) -> Result<u64, DiskError> {
        self.inner.len(path)
    }
    fn sync(&self, path: &str) -> Result<(), DiskError> {
        self.inner.sync(path)
    }
    fn truncate(&self, path: &str, len: u64) -> Result<(), DiskError> {
        self.inner.truncate(path, len)
    }
    fn remove(&self, path: &str) -> Result<(), DiskError> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list(dir)
    }
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list_dirs(dir)
    }
}

impl FullDisk {
    fn spend(&self, n: usize) -> Result<(), DiskError> {
        let left = self.budget.get();
        if (n as u64) > left {
            return Err(DiskError::NoSpace);
        }
        self.budget.set(left - n as u64);
        Ok(())
    }
}

#[test]
fn test_disk_full_leaves_log_consistent() {
    // NoSpace mid-append (after a segment roll) returns the error and leaves the log, in memory
    // and on disk, exactly as before; a later append with space succeeds.
    let disk = Rc::new(FullDisk {
        inner: MemDisk::new(),
        budget: Cell::new(u64::MAX),
    });
    let (mut log, _) = PartitionLog::open(disk.clone(), DIR, small_config()).unwrap();
    let es: Vec<NewEntry> = (1..=5).map(|i| normal(i, 1, batch(1, 0, 100))).collect();
    log.append(&es).unwrap();
    let paths = disk.inner.paths();
    let (last, next, segs) = (log.last_index(), log.next_offset(), log.segment_count());
    disk.budget.set(1500);
    let more: Vec<NewEntry> = (6..=20).map(|i| normal(i, 1, batch(1, 0, 100))).collect();
    assert_eq!(log.append(&more), Err(LogError::Disk(DiskError::NoSpace)));
    assert_eq!(
        (log.last_index(), log.next_offset(), log.segment_count()),
        (last, next, segs)
    );
    assert_eq!(disk.inner.paths(), paths);
    disk.budget.set(u64::MAX);
    log.append(&more).unwrap();
    log.sync().unwrap();
    let (log2, report) = PartitionLog::open(disk.clone(), DIR, small_config()).unwrap();
    assert_eq!(report.truncated_from_index, None);
    let got = log2.entries(1, 21, None).unwrap();
    for (g, a) in got.iter().zip(es.iter().chain(&more)) {
        assert_stored(g, a);
    }
}

#[test]
fn test_corruption_after_open_is_never_served() {
    // A bit flip under a running log turns reads of that entry into Corrupt errors.
    let disk = Rc::new(MemDisk::new());
    let (mut log, _) = open(&disk, small_config());
    log.append(&[normal(1, 1, batch(2, 0, 30)), normal(2, 1, batch(2, 0, 30))])
        .unwrap();
    let seg = disk
        .paths()
        .into_iter()
        .find(|p| p.ends_with(".log"))
        .unwrap();
    disk.with_file(&seg, |b| {
        let n = b.len();
        b[n - 5] ^= 0x10;
    });
    assert!(log.entries(1, 2, None).is_ok());
    assert!(matches!(
        log.entries(1, 3, None),
        Err(LogError::Corrupt { .. })
    ));
    assert!(matches!(
        log.read(0, 4, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
    assert_eq!(log.read(0, 2, 1 << 20).unwrap().batches.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After tearing the last segment or corrupting any byte of any segment, recovery returns a
    /// contiguous prefix of what was written, every entry byte-identical to its append, and
    /// reads of the recovered log never fail or return other data.
    #[test]
    fn prop_recovery_yields_a_prefix_of_what_was_written(
        sizes in proptest::collection::vec((0usize..4, 1u64..3), 1..25),
        damage in 0u8..3,
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let disk = Rc::new(MemDisk::new());
        let (mut log, _) = open(&disk, small_config());
        let mut written = Vec::new();
        let mut term = 1;
        for (i, (n, dt)) in sizes.iter().enumerate() {
            term += dt - 1;
            let e = if *n == 0 { empty(i as u64 + 1, term) }
                else { normal(i as u64 + 1, term, batch(*n, i as i64 * 10, 40)) };
            log.append(std::slice::from_ref(&e)).unwrap();
            written.push(e);
        }
        log.sync().unwrap();
        let segs: Vec<String> =
            disk.paths().into_iter().filter(|p| p.ends_with(".log")).collect();
        match damage {
            0 => {
                let last = segs.last().unwrap();
                disk.with_file(last, |b| { let n = at.index(b.len() + 1); b.truncate(n); });
            }
            1 => {
                let p = pick.get(&segs);
                disk.with_file(p, |b| { if !b.is_empty() { let i = at.index(b.len()); b[i] ^= xor; } });
            }
            _ => {
                // Zero a tail, as a crash that lost the last sector's contents would.
                let last = segs.last().unwrap();
                disk.with_file(last, |b| {
                    let from = at.index(b.len() + 1);
                    for x in &mut b[from..] { *x = 0; }
                });
            }
        }
        let (log, report) = open(&disk, small_config());
        let last = log.last_index();
        prop_assert!(last <= written.len() as u64);
        prop_assert_eq!(report.entries, last);
        if last < written.len() as u64 {
            // A cut exactly at a frame boundary (the end of an entry, or byte 0 of the last
            // segment) leaves a clean, shorter log: nothing is left to detect, so nothing is
            // reported, as for a crash before those writes. Any other damage is reported at the
            // first entry it took.
            let clean_cut = damage == 0 && report.bytes_dropped == 0;
            if !clean_cut {
                prop_assert_eq!(report.truncated_from_index, Some(last + 1));
            }
        }
        let got = log.entries(1, last + 1, None).unwrap();
        prop_assert_eq!(got.len() as u64, last);
        let mut offset = 0;
        for g in &got {
            assert_stored(g, &written[g.index as usize - 1]);
            prop_assert_eq!(g.base_offset, offset);
            offset += g.record_count as i64;
        }
        prop_assert_eq!(log.next_offset(), offset);
        if offset > 0 {
            let r = log.read(0, offset, u64::MAX).unwrap();
            prop_assert_eq!(r.next_offset, offset);
        }
        // The recovered log accepts the lost suffix again.
        let mut log = log;
        log.append(&written[last as usize..]).unwrap();
        prop_assert_eq!(log.last_index(), written.len() as u64);
    }
}
