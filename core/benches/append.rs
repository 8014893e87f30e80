//! Throughput of `PartitionLog::append` + `sync` on `MemDisk`, next to a `memcpy` of the same byte
//! volume, so the log's overhead (validation, CRCs, framing, indexing) can be read as a ratio
//! against the machine's own copy bandwidth.
//!
//! Each raft entry carries one v2 batch of 16 records of 1 KiB; one iteration appends a step of
//! 16 entries and syncs once, as the driver does per raft `Ready`. Run quickly with
//! `cargo bench -p railyard-core --bench append -- --quick`.

use std::hint::black_box;
use std::rc::Rc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use railyard_core::batch::BatchBuilder;
use railyard_core::disk::MemDisk;
use railyard_core::log::{EntryKind, LogConfig, NewEntry, PartitionLog};

const RECORDS_PER_BATCH: usize = 16;
const RECORD_BYTES: usize = 1024;
const ENTRIES_PER_STEP: usize = 16;

fn make_batch() -> Bytes {
    let value = vec![0xabu8; RECORD_BYTES];
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..RECORDS_PER_BATCH {
        b.push(None, Some(&value), &[], 1_700_000_000_000 + i as i64);
    }
    b.build()
}

fn bench_append(c: &mut Criterion) {
    let batch = make_batch();
    let step_bytes = (batch.len() * ENTRIES_PER_STEP) as u64;
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(step_bytes));

    group.bench_function("log_append_sync", |b| {
        // Small segments keep MemDisk's files (and the rolls) realistic without unbounded memory:
        // retention deletes old segments as the benchmark runs.
        let config = LogConfig {
            segment_bytes: 64 << 20,
            retention_bytes: Some(128 << 20),
            retention_ms: None,
            ..LogConfig::default()
        };
        let disk = Rc::new(MemDisk::new());
        let (mut log, _) = PartitionLog::open(disk, "bench-0", config).expect("open");
        let mut index = 0u64;
        b.iter(|| {
            let entries: Vec<NewEntry> = (0..ENTRIES_PER_STEP)
                .map(|_| {
                    index += 1;
                    NewEntry {
                        index,
                        term: 1,
                        kind: EntryKind::Normal,
                        data: batch.clone(),
                    }
                })
                .collect();
            log.append(&entries).expect("append");
            log.sync().expect("sync");
            if index.is_multiple_of(4096) {
                log.apply_retention(0, index).expect("retention");
            }
        });
    });

    group.bench_function("memcpy_baseline", |b| {
        let src = vec![0xabu8; step_bytes as usize];
        let mut dst = vec![0u8; step_bytes as usize];
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
