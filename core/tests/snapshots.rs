//! State machine snapshots bound the metadata log: 100k records (a broker re-registering on
//! every heartbeat, as weeks of restarts would write) leave a log of a few segments, and a
//! restart rebuilds the image from the snapshot plus the tail only. A snapshot file that fails
//! its checksum is never applied: the older one and the log rebuild the same image.

use std::rc::Rc;

use railyard_core::disk::{join_path, Disk, MemDisk};
use railyard_core::log::LogConfig;
use railyard_core::metadata::{metadata_tp, RegisterBroker};
use railyard_core::network::{BrokerHeartbeat, Envelope, Outbox};
use railyard_core::node::{BrokerEndpoint, Node, NodeConfig, PUMP_STEPS_MAX};
use railyard_core::replica::ReplicaConfig;

/// Records a snapshot covers before the next is taken.
const SNAPSHOT_ENTRIES: u64 = 2_000;
const RECORDS: u64 = 100_000;

fn config(incarnation: u64) -> NodeConfig {
    NodeConfig {
        id: 1,
        seed: 7 + incarnation,
        replica: ReplicaConfig {
            snapshot_entries: SNAPSHOT_ENTRIES,
            ..ReplicaConfig::default()
        },
        log: LogConfig {
            segment_bytes: 64 * 1024,
            ..LogConfig::default()
        },
        partitions: vec![],
        retention_check_ms: 1_000,
        // One voter (this node); broker 2 follows as a learner that never answers.
        metadata_voters: vec![1],
        brokers: vec![1, 2],
        endpoint: Some(BrokerEndpoint {
            host: "broker-1".into(),
            port: 9092,
            rack: None,
            raft: None,
        }),
        heartbeat_ms: 100,
        session_timeout_ms: 1 << 40,
        preferred_leader_check_ms: None,
        min_free_bytes: 0,
        offsets_partitions: 0,
        producer_expiration_ms: railyard_core::producers::PRODUCER_EXPIRATION_MS_DEFAULT,
        topic_defaults: Default::default(),
        group: Default::default(),
        join: false,
    }
}

fn pump(node: &mut Node) {
    let mut out = Outbox::default();
    while node.pump(&mut out, PUMP_STEPS_MAX).unwrap().more {}
}

/// Broker 2's heartbeat from its `incarnation`-th start: one RegisterBroker record each.
fn heartbeat(incarnation: u64) -> Envelope {
    Envelope {
        from: 2,
        to: 1,
        messages: vec![],
        heartbeat: Some(BrokerHeartbeat {
            registration: Some(RegisterBroker {
                id: 2,
                host: "broker-2".into(),
                port: 9093,
                rack: None,
                incarnation,
                ..RegisterBroker::default()
            }),
            leaders: vec![],
            create_topics: vec![],
            producer_ids: None,
            moves_done: vec![],
        }),
        ..Envelope::default()
    }
}

fn open(disk: &Rc<MemDisk>, incarnation: u64) -> Node {
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let d: Rc<dyn Disk> = disk.clone();
    Node::open(config(incarnation), d, &logger).unwrap()
}

fn become_controller(node: &mut Node, now: &mut i64) {
    for _ in 0..100 {
        *now += 100;
        node.tick(*now, *now).unwrap();
        pump(node);
        if node.controller() == Some(1) {
            return;
        }
    }
    panic!("a single voter elects itself");
}

/// 100k metadata records with snapshots on: the log stays bounded, and a restart replays only
/// the snapshot plus the tail; a corrupt newest snapshot falls back to the older one.
#[test]
fn test_metadata_log_stays_bounded_and_restart_replays_the_tail() {
    let disk = Rc::new(MemDisk::new());
    let mut node = open(&disk, 0);
    let mut now = 0;
    become_controller(&mut node, &mut now);
    let meta = metadata_tp();
    let mut max_segments = 0;
    for batch in 0..RECORDS / 100 {
        for i in 0..100 {
            node.handle_envelope(heartbeat(1 + batch * 100 + i));
        }
        pump(&mut node);
        now += 10;
        node.tick(now, now).unwrap();
        pump(&mut node);
        let log = node.replica(&meta).unwrap().storage().log();
        max_segments = max_segments.max(log.segment_count());
    }
    let applied_records = node.metadata().records_applied;
    assert!(
        applied_records >= RECORDS,
        "every heartbeat wrote a record: {applied_records}"
    );
    assert_eq!(node.metadata().brokers[&2].incarnation, RECORDS);
    let r = node.replica(&meta).unwrap();
    let log = r.storage().log();
    let kept = log.last_index() - log.first_index() + 1;
    // The log holds at most two snapshot intervals plus the segment being compacted.
    let entries_per_segment = 64 * 1024 / 100;
    assert!(
        kept <= 2 * SNAPSHOT_ENTRIES + 2 * entries_per_segment,
        "metadata log kept {kept} entries of {}",
        log.last_index()
    );
    assert!(
        max_segments <= 10,
        "at most {max_segments} segments at once"
    );
    println!(
        "metadata log after {} records: entries {}..={} ({kept} kept, {} bytes, {} segments; \
         at most {max_segments} at once)",
        applied_records,
        log.first_index(),
        log.last_index(),
        log.size_bytes(),
        log.segment_count()
    );
    let snaps: Vec<String> = disk
        .list(&meta.dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert_eq!(snaps.len(), 2, "two snapshot generations: {snaps:?}");
    let image = node.metadata().clone();
    drop(node);

    // A restart restores the snapshot and replays only the entries after it.
    let node = open(&disk, 1);
    assert_eq!(*node.metadata(), image);
    let r = node.replica(&meta).unwrap();
    assert!(r.snapshot_index() > RECORDS - 2 * SNAPSHOT_ENTRIES);
    println!(
        "restart: snapshot at {}, replayed {} entries after it",
        r.snapshot_index(),
        r.replayed_at_open()
    );
    assert!(
        r.replayed_at_open() <= SNAPSHOT_ENTRIES + 100,
        "replayed {} entries",
        r.replayed_at_open()
    );
    drop(node);

    // The newest snapshot file corrupted on disk: detected, never applied; the older one plus
    // the log give the same image.
    let newest = join_path(&meta.dir(), snaps.iter().max().unwrap());
    disk.with_file(&newest, |bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
    })
    .unwrap();
    let node = open(&disk, 2);
    assert_eq!(node.open_reports()[&meta].corrupt_snapshots, 1);
    assert_eq!(*node.metadata(), image);
    let r = node.replica(&meta).unwrap();
    assert!(
        r.replayed_at_open() >= SNAPSHOT_ENTRIES,
        "fell back to the older snapshot: replayed {}",
        r.replayed_at_open()
    );
}
