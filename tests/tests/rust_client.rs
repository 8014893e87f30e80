//! The Rust client (`railyard-client`) against real in-process clusters: round trips with
//! keys, headers and timestamps, every codec both ways with librdkafka, a leader failure during
//! idempotent production, consumer groups, and bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use railyard_client::{
    Compression, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use railyard_node::broker::Broker;
use railyard_tests::profiles::{self, OnError};
use railyard_tests::Disks;
use railyard_tests::{java_partition, topic, InProcessCluster, Spec};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;

/// Waits for elections and acknowledgements in this suite.
const WAIT: Duration = Duration::from_secs(30);

const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "none"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

fn producer_config(bootstrap: &str) -> ProducerConfig {
    let mut c = ProducerConfig::new(bootstrap);
    c.client.default_api_timeout_ms = 20_000;
    c.delivery_timeout_ms = 20_000;
    c
}

/// [`producer_config`] with short timeouts, for tests that stop a node: a request to the
/// stopped node is given up on quickly and the partition's new leader found.
fn failover_producer_config(bootstrap: &str) -> ProducerConfig {
    let mut c = producer_config(bootstrap);
    c.client.request_timeout_ms = 2_000;
    c.client.connect_timeout_ms = 1_000;
    c.client.metadata_max_age_ms = 500;
    c.delivery_timeout_ms = 25_000;
    c
}

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(bootstrap);
    c.client.default_api_timeout_ms = 20_000;
    c.auto_offset_reset = OffsetReset::Earliest;
    c.fetch_max_wait_ms = 100;
    c
}

/// A consumer assigned partition 0 of `topic` (from its start) that has read `n` records;
/// returned with them, for checks of what comes after.
async fn read_partition_zero(
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> (Consumer, Vec<ConsumerRecord>) {
    let mut consumer = Consumer::new(consumer_config(bootstrap))
        .await
        .expect("consumer");
    consumer
        .assign(&[TopicPartition::new(topic, 0)])
        .await
        .expect("assign");
    let read = poll_until(&mut consumer, WAIT, |r| r.len() >= n).await;
    (consumer, read)
}

/// Polls until `done` holds for everything read so far; panics after `within`.
async fn poll_until(
    consumer: &mut Consumer,
    within: Duration,
    done: impl Fn(&[ConsumerRecord]) -> bool,
) -> Vec<ConsumerRecord> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !done(&out) {
        assert!(
            start.elapsed() < within,
            "polled {} records in {within:?} without reaching the goal",
            out.len()
        );
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

fn text(b: &Option<Bytes>) -> String {
    String::from_utf8(b.as_deref().unwrap_or_default().to_vec()).expect("UTF-8")
}

// Proves keyed records produced by the Rust client (idempotent, acks=all, the default) land in
// the partition Java's murmur2 picks, at dense offsets, and librdkafka reads each back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rust_producer_murmur2_placement_read_by_rdkafka() {
    const TOPIC: &str = "rc-place";
    const N: usize = 2_000;
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, 4, 3)]).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let producer = Producer::new(producer_config(&bootstrap))
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..N {
        let r = ProducerRecord::new(TOPIC, format!("v{i}")).key(format!("key-{i}"));
        deliveries.push(producer.send(r).await.expect("queued"));
    }
    let mut acked = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(
            md.partition,
            java_partition(format!("key-{i}").as_bytes(), 4)
        );
        assert!(
            acked.insert((md.partition, md.offset), i).is_none(),
            "offset reused"
        );
    }
    producer.close().await;
    for p in 0..4 {
        let offsets: Vec<i64> = acked.keys().filter(|k| k.0 == p).map(|k| k.1).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "dense offsets in {p}"
        );
    }
    let read = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = profiles::assign_consumer(&bootstrap)
            .create()
            .expect("consumer");
        profiles::read_from_start(&consumer, TOPIC, &[0, 1, 2, 3], WAIT, OnError::Fail, |r| {
            r.len() >= N
        })
    })
    .await
    .expect("reader");
    assert_eq!(read.len(), N);
    for r in read {
        let i = acked[&(r.partition, r.offset)];
        assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_str()));
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_str()));
    }
}

// Proves a Rust-to-Rust round trip keeps keys, values, headers and timestamps, returns each
// partition in offset order, and that seek, seek_to_end, position and offsets_for_times agree
// with what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_round_trip_keys_headers_timestamps_and_seeks() {
    const TOPIC: &str = "rc-round";
    const N: i64 = 300;
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, 3, 3)]).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let producer = Producer::new(producer_config(&bootstrap))
        .await
        .expect("producer");
    // Recent timestamps: records older than the topic's retention.ms would be deleted.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let base_ts = now_ms - 60_000;
    let mut sent = BTreeMap::new();
    for i in 0..N {
        let r = ProducerRecord::new(TOPIC, format!("value-{i}"))
            .key(format!("k{i}"))
            .header("idx", i.to_string())
            .header("kind", "test")
            .timestamp_ms(base_ts + i * 10);
        let md = producer.send_and_wait(r).await.expect("acknowledged");
        assert_eq!(md.timestamp_ms, base_ts + i * 10);
        sent.insert((md.partition, md.offset), i);
    }
    let mut consumer = Consumer::new(consumer_config(&bootstrap))
        .await
        .expect("consumer");
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new(TOPIC, p)).collect();
    consumer.assign(&tps).await.expect("assign");
    let read = poll_until(&mut consumer, WAIT, |r| r.len() >= N as usize).await;
    assert_eq!(read.len(), N as usize, "nothing twice");
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &read {
        let i = sent[&(r.partition, r.offset)];
        assert!(
            last.insert(r.partition, r.offset)
                .is_none_or(|prev| prev < r.offset),
            "offset order"
        );
        assert_eq!(text(&r.key), format!("k{i}"));
        assert_eq!(text(&r.value), format!("value-{i}"));
        assert_eq!(r.timestamp_ms, base_ts + i * 10);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(
            (r.headers[0].0.as_str(), text(&r.headers[0].1)),
            ("idx", i.to_string())
        );
        assert_eq!(
            (r.headers[1].0.as_str(), text(&r.headers[1].1)),
            ("kind", "test".to_string())
        );
    }
    // Position is the log end of each partition now; offsets_for_times finds record 150.
    let tp0 = tps[0].clone();
    let end0 = sent.keys().filter(|k| k.0 == 0).count() as i64;
    assert_eq!(consumer.position(&tp0).await.expect("position"), end0);
    let (&(p150, o150), _) = sent.iter().find(|(_, &i)| i == 150).expect("record 150");
    let tp150 = TopicPartition::new(TOPIC, p150);
    let times = BTreeMap::from([(tp150.clone(), base_ts + 150 * 10)]);
    let found = consumer
        .offsets_for_times(&times)
        .await
        .expect("offsets_for_times");
    assert_eq!(found[&tp150], Some((o150, base_ts + 1500)));
    // Replay from there: the first record back is 150.
    consumer.seek(&tp150, o150).expect("seek");
    let again = poll_until(&mut consumer, WAIT, |r| !r.is_empty()).await;
    assert_eq!((again[0].partition, again[0].offset), (p150, o150));
    consumer.seek_to_end(&tps).await.expect("seek_to_end");
    assert_eq!(consumer.position(&tp0).await.expect("position"), end0);
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    // Re-assigning keeps the position of a partition that stays assigned, as the Java client
    // does: no rewind by auto_offset_reset (the Jepsen harness caught this as a
    // nonmonotonic poll).
    consumer.seek(&tp0, 1).expect("seek");
    consumer.assign(&tps[..1]).await.expect("re-assign");
    assert_eq!(consumer.position(&tp0).await.expect("position"), 1);
    let resumed = poll_until(&mut consumer, WAIT, |r| !r.is_empty()).await;
    assert_eq!((resumed[0].partition, resumed[0].offset), (0, 1));
    producer.close().await;
}

// Proves every codec the Rust producer writes (none, gzip, snappy, lz4, zstd) is read back by
// librdkafka, and every codec librdkafka writes is read back (decompressed) by the Rust
// consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_every_codec_both_ways_with_rdkafka() {
    const N: usize = 200;
    let topics: Vec<_> = CODECS
        .iter()
        .flat_map(|(_, name)| {
            [
                topic(&format!("rc-rs-{name}"), 1, 3),
                topic(&format!("rc-rd-{name}"), 1, 3),
            ]
        })
        .collect();
    let cluster = InProcessCluster::start(3, topics).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    for (codec, name) in CODECS {
        // Rust writes, librdkafka reads.
        let rs_topic = format!("rc-rs-{name}");
        let mut config = producer_config(&bootstrap);
        config.compression = codec;
        config.linger_ms = 20;
        let producer = Producer::new(config).await.expect("producer");
        let mut ds = Vec::new();
        for i in 0..N {
            ds.push(
                producer
                    .send(
                        ProducerRecord::new(&rs_topic, format!("{name}-{i}")).key(format!("k{i}")),
                    )
                    .await
                    .expect("queued"),
            );
        }
        for d in ds {
            d.await.expect("acknowledged");
        }
        producer.close().await;
        let (b, t) = (bootstrap.clone(), rs_topic.clone());
        let read = tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = profiles::assign_consumer(&b).create().expect("consumer");
            profiles::read_from_start(&c, &t, &[0], WAIT, OnError::Fail, |r| r.len() >= N)
        })
        .await
        .expect("reader");
        let values: Vec<String> = read
            .iter()
            .map(|r| r.value.clone().unwrap_or_default())
            .collect();
        let want: Vec<String> = (0..N).map(|i| format!("{name}-{i}")).collect();
        assert_eq!(values, want, "librdkafka reading the Rust client's {name}");

        // librdkafka writes, Rust reads.
        let rd_topic = format!("rc-rd-{name}");
        let rd: FutureProducer = profiles::producer(&bootstrap)
            .set("compression.type", name)
            .create()
            .expect("rdkafka producer");
        let records: Vec<(String, String)> = (0..N)
            .map(|i| (format!("k{i}"), format!("rd-{name}-{i}")))
            .collect();
        profiles::produce_all(&rd, &rd_topic, &records).await;
        let (_, read) = read_partition_zero(&bootstrap, &rd_topic, N).await;
        let values: Vec<String> = read.iter().map(|r| text(&r.value)).collect();
        let want: Vec<String> = (0..N).map(|i| format!("rd-{name}-{i}")).collect();
        assert_eq!(values, want, "the Rust client reading librdkafka's {name}");
        let offsets: Vec<i64> = read.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    }
}

/// A group member polling in its own task until `stop`: everything it read, and its current
/// assignment as it changes.
struct Member {
    stop: Arc<AtomicBool>,
    assignment: Arc<Mutex<Vec<TopicPartition>>>,
    task: tokio::task::JoinHandle<Vec<ConsumerRecord>>,
}

fn group_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    let mut c = consumer_config(bootstrap).group(group);
    c.session_timeout_ms = 10_000;
    c.heartbeat_interval_ms = 300;
    c.max_poll_interval_ms = 10_000;
    c.auto_commit_interval_ms = 200;
    c
}

async fn spawn_member(config: ConsumerConfig, topic: &'static str) -> Member {
    let stop = Arc::new(AtomicBool::new(false));
    let assignment = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = Consumer::new(config).await.expect("consumer");
    consumer.subscribe(&[topic]).await.expect("subscribe");
    let (s, a) = (stop.clone(), assignment.clone());
    let task = tokio::spawn(async move {
        let mut read = Vec::new();
        while !s.load(Ordering::Acquire) {
            read.extend(
                consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll"),
            );
            *a.lock().expect("lock") = consumer.assignment();
        }
        consumer.close().await.expect("close");
        read
    });
    Member {
        stop,
        assignment,
        task,
    }
}

fn assigned(m: &Member) -> BTreeSet<i32> {
    m.assignment
        .lock()
        .expect("lock")
        .iter()
        .map(|tp| tp.partition)
        .collect()
}

async fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Proves two Rust consumers of one group (the default eager range protocol) share a 6-partition
// topic disjointly and completely; that when one leaves (LeaveGroup on close) while a producer
// keeps writing, the other takes every partition; and that no record written is missed by the
// group, with the group's committed offsets at the log end after the survivor closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_group_of_two_shares_disjointly_and_rebalances_under_load() {
    const TOPIC: &str = "rc-group";
    const GROUP: &str = "rc-g";
    let spec = Spec::new(3, vec![topic(TOPIC, 6, 3)]).with_groups();
    let cluster = InProcessCluster::start_spec(&spec, Disks::Files).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let producer = Arc::new(
        Producer::new(producer_config(&bootstrap))
            .await
            .expect("producer"),
    );

    let a = spawn_member(group_config(&bootstrap, GROUP), TOPIC).await;
    let b = spawn_member(group_config(&bootstrap, GROUP), TOPIC).await;
    wait_for("a disjoint split of all 6 partitions", WAIT, || {
        let (x, y) = (assigned(&a), assigned(&b));
        !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == 6
    })
    .await;

    // Load: records keep coming while b leaves.
    let stop_load = Arc::new(AtomicBool::new(false));
    let (p, s) = (producer.clone(), stop_load.clone());
    let load = tokio::spawn(async move {
        let mut sent = 0u64;
        while !s.load(Ordering::Acquire) {
            let r = ProducerRecord::new(TOPIC, format!("load-{sent}")).key(format!("k{sent}"));
            p.send(r).await.expect("queued");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        p.flush().await;
        sent
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.stop.store(true, Ordering::Release);
    let read_b = b.task.await.expect("member b");
    wait_for("a to own all 6 partitions", WAIT, || {
        assigned(&a).len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_load.store(true, Ordering::Release);
    let sent = load.await.expect("load");
    assert!(sent > 100, "the load produced only {sent} records");
    // a reads to the end, then closes (committing).
    let all: BTreeSet<String> = (0..sent).map(|i| format!("load-{i}")).collect();
    let seen_by_b: BTreeSet<String> = read_b.iter().map(|r| text(&r.value)).collect();
    let a_reads = a.task;
    let stop_a = a.stop.clone();
    let admin = railyard_client::Admin::new(railyard_client::ClientConfig::new(&bootstrap))
        .await
        .expect("admin");
    wait_for("the group's lag to reach 0", WAIT, || {
        futures_lag_zero(&admin, GROUP, TOPIC)
    })
    .await;
    stop_a.store(true, Ordering::Release);
    let read_a = a_reads.await.expect("member a");
    let seen: BTreeSet<String> = read_a
        .iter()
        .map(|r| text(&r.value))
        .chain(seen_by_b)
        .collect();
    let missed: Vec<&String> = all.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "{} records never consumed, e.g. {:?}",
        missed.len(),
        missed.first()
    );
    let lag = admin.consumer_lag(GROUP, TOPIC).await.expect("lag");
    assert!(
        lag.iter()
            .all(|l| l.lag == 0 && l.committed == Some(l.log_end)),
        "{lag:?}"
    );
    producer.close().await;
}

/// Whether the group's committed offsets are at the log end (blocking on the admin calls).
fn futures_lag_zero(admin: &railyard_client::Admin, group: &str, topic: &str) -> bool {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            let ends = admin.end_offsets(topic).await.expect("end offsets");
            let lag = admin.consumer_lag(group, topic).await.expect("lag");
            ends.values().sum::<i64>() > 0 && lag.iter().all(|l| l.lag == 0)
        })
    })
}

// Proves an idempotent producer rides out the loss of a partition's leader mid-stream: the
// leader node is stopped while records are in flight, every record is still acknowledged, and
// the partition then holds each record exactly once (no loss, no duplicates), in send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_leader_stop_during_idempotent_produce_no_loss_no_duplicates() {
    const TOPIC: &str = "rc-kill";
    const N: usize = 3_000;
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, 1, 3)]).await;
    let view = cluster.wait_for_leaders(WAIT).await;
    let leader = view
        .partition(TOPIC, 0)
        .and_then(|p| p.leader)
        .expect("a leader");
    let bootstrap = cluster.bootstrap();
    let producer = Producer::new(failover_producer_config(&bootstrap))
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..N {
        if i == N / 3 {
            cluster.node(leader).handle.shutdown();
        }
        let r = ProducerRecord::new(TOPIC, format!("v{i}")).partition(0);
        deliveries.push(producer.send(r).await.expect("queued"));
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut offsets = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap_or_else(|e| panic!("record {i} lost: {e}"));
        assert!(
            offsets.insert(md.offset, i).is_none(),
            "two records acknowledged at {}",
            md.offset
        );
    }
    producer.close().await;
    // Read it all back from the survivors.
    let survivors: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.handle.node_id() != leader)
        .map(|n| n.kafka_addr.to_string())
        .collect();
    let (mut consumer, read) = read_partition_zero(&survivors.join(","), TOPIC, N).await;
    let values: Vec<String> = read.iter().map(|r| text(&r.value)).collect();
    let want: Vec<String> = (0..N).map(|i| format!("v{i}")).collect();
    assert_eq!(values.len(), N, "duplicates or losses");
    assert_eq!(values, want, "each record once, in send order");
    assert!(
        consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
            .is_empty(),
        "nothing beyond"
    );
}

// Proves an idempotent producer flooding one partition (every batch full, five requests in
// flight on a multi-threaded runtime) gets every record acknowledged, in send order. Before
// the request tasks took turns at the socket, a later sequence could overtake the first and
// be refused with UNKNOWN_PRODUCER_ID (`railyard bench produce` lost a batch in most runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_idempotent_flood_keeps_sequence_order_on_the_wire() {
    const TOPIC: &str = "rc-flood";
    const N: usize = 20_000;
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, 1, 3)]).await;
    cluster.wait_for_leaders(WAIT).await;
    let producer = Producer::new(producer_config(&cluster.bootstrap()))
        .await
        .expect("producer");
    let value = Bytes::from(vec![7u8; 1024]);
    let mut deliveries = Vec::with_capacity(N);
    for _ in 0..N {
        let r = ProducerRecord::new(TOPIC, value.clone()).partition(0);
        deliveries.push(producer.send(r).await.expect("queued"));
    }
    let mut last = -1;
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
        assert!(md.offset > last, "record {i} at {} after {last}", md.offset);
        last = md.offset;
    }
    producer.close().await;
}

// Proves bad input gets a clear, typed error and no panic: an unreachable bootstrap fails
// within the configured timeout naming the address; an unknown topic is UnknownTopic; a record
// over the topic's max.message.bytes is the broker's MESSAGE_TOO_LARGE (code 10), naming the
// broker; a record over the client's own limit is refused before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_bad_input_gets_typed_errors() {
    // Unreachable: nothing listens on port 1.
    let mut config = ProducerConfig::new("127.0.0.1:1");
    config.client.default_api_timeout_ms = 1_500;
    config.client.connect_timeout_ms = 500;
    let start = Instant::now();
    let err = Producer::new(config)
        .await
        .err()
        .expect("no producer without a broker");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, railyard_client::Error::NoBrokerAvailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let cluster = InProcessCluster::start(1, vec![topic("rc-small", 1, 1)]).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let admin = railyard_client::Admin::new(railyard_client::ClientConfig::new(&bootstrap))
        .await
        .expect("admin");
    admin
        .alter_topic_config("rc-small", &[("max.message.bytes", Some("1024"))])
        .await
        .expect("alter config");
    // The alter is answered once the controller has it; each broker applies it when its copy
    // of the metadata log does, so wait for the described value.
    let start = Instant::now();
    loop {
        let described = admin.describe_topic("rc-small").await.expect("describe");
        let value = described.configs["max.message.bytes"].value.clone();
        if value.as_deref() == Some("1024") {
            break;
        }
        assert!(start.elapsed() < WAIT, "max.message.bytes still {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer = Producer::new(producer_config(&bootstrap))
        .await
        .expect("producer");
    let err = producer
        .send(ProducerRecord::new("no-such-topic", "x"))
        .await
        .err()
        .expect("unknown topic");
    assert!(
        matches!(&err, railyard_client::Error::UnknownTopic(t) if t == "no-such-topic"),
        "{err}"
    );

    let big = vec![b'x'; 10_000];
    let err = producer
        .send_and_wait(ProducerRecord::new("rc-small", big))
        .await
        .expect_err("over max.message.bytes");
    assert_eq!(
        err.kafka_code(),
        Some(railyard_client::ResponseError::MessageTooLarge),
        "{err}"
    );
    assert!(!err.is_retriable());
    let text = err.to_string();
    assert!(
        text.contains("code 10") && text.contains("broker 1"),
        "{text}"
    );
    // The producer still works after a fatal batch error (the epoch is bumped).
    let md = producer
        .send_and_wait(ProducerRecord::new("rc-small", "ok"))
        .await
        .expect("small record");
    assert_eq!(md.partition, 0);

    let huge = vec![b'x'; 2 * 1024 * 1024];
    let err = producer
        .send(ProducerRecord::new("rc-small", huge))
        .await
        .err()
        .expect("over the client limit");
    assert!(
        matches!(err, railyard_client::Error::RecordTooLarge { .. }),
        "{err}"
    );
    producer.close().await;
}

// Proves the admin client's topic and group operations against a cluster: create with
// configs, list, describe (partitions and configs), describe the cluster, reset a group's
// offsets, read its lag, list, describe and delete the group, and delete the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_topics_configs_groups_and_lag() {
    let spec = Spec::new(3, vec![]).with_groups();
    let cluster = InProcessCluster::start_spec(&spec, Disks::Files).await;
    cluster.wait_for_settled(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let admin = railyard_client::Admin::new(railyard_client::ClientConfig::new(&bootstrap))
        .await
        .expect("admin");
    let new = railyard_client::NewTopic::new("rc-admin", 3, 3).config("retention.ms", "3600000");
    admin.create_topic(new).await.expect("create");
    assert!(admin
        .list_topics()
        .await
        .expect("list")
        .contains(&"rc-admin".to_string()));
    // Each broker learns the new leaders from its own copy of the metadata log, and describe
    // asks any broker, so wait until the one asked has them all.
    let start = Instant::now();
    let d = loop {
        let d = admin.describe_topic("rc-admin").await.expect("describe");
        let led = d
            .meta
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 3 && p.leader.is_some());
        if d.meta.partitions.len() == 3 && led {
            break d;
        }
        assert!(
            start.elapsed() < WAIT,
            "partitions still without leaders: {:?}",
            d.meta
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d.configs["retention.ms"].value.as_deref(), Some("3600000"));
    assert!(!d.configs["retention.ms"].is_default);
    let c = admin.describe_cluster().await.expect("cluster");
    assert_eq!(c.brokers.len(), 3);
    assert!(c.controller.is_some());

    // 30 records, then a group that read 10 of partition 0 (a reset with no members).
    let producer = Producer::new(producer_config(&bootstrap))
        .await
        .expect("producer");
    for i in 0..30 {
        producer
            .send_and_wait(ProducerRecord::new("rc-admin", format!("{i}")).partition(i % 3))
            .await
            .expect("ack");
    }
    let offsets = BTreeMap::from([(TopicPartition::new("rc-admin", 0), 4)]);
    admin
        .reset_offsets("rc-admin-g", &offsets)
        .await
        .expect("reset");
    let lag = admin
        .consumer_lag("rc-admin-g", "rc-admin")
        .await
        .expect("lag");
    assert_eq!(lag.len(), 3);
    assert_eq!(
        (lag[0].committed, lag[0].log_end, lag[0].lag),
        (Some(4), 10, 6)
    );
    assert_eq!((lag[1].committed, lag[1].lag), (None, 10));
    let groups = admin.list_groups().await.expect("groups");
    assert!(
        groups.iter().any(|g| g.group_id == "rc-admin-g"),
        "{groups:?}"
    );
    let g = admin
        .describe_group("rc-admin-g")
        .await
        .expect("describe group");
    assert!(g.members.is_empty(), "{g:?}");
    admin
        .delete_group("rc-admin-g")
        .await
        .expect("delete group");
    assert!(!admin
        .list_groups()
        .await
        .expect("groups")
        .iter()
        .any(|g| g.group_id == "rc-admin-g"));
    admin.delete_topic("rc-admin").await.expect("delete");
    // DeleteTopics answers once the deletion committed; the broker the listing asks may
    // publish its view a moment later, as a Kafka broker's metadata cache does.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let topics = admin.list_topics().await.expect("list");
        if !topics.contains(&"rc-admin".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rc-admin still listed 10 s after its deletion: {topics:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer.close().await;
}

// Proves a group survives its coordinator moving: a member reads and commits, the node that
// coordinates the group is stopped, and the member (following NOT_COORDINATOR or the lost
// connection to FindCoordinator again) keeps reading new records and committing through the
// new coordinator, which loaded the group's offsets from `__consumer_offsets`; a later member
// resumes at the last commit, with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_group_follows_a_coordinator_that_moves() {
    const TOPIC: &str = "rc-coord";
    const GROUP: &str = "rc-moving";
    const N: usize = 200;
    let spec = Spec::new(3, vec![topic(TOPIC, 2, 3)]).with_groups();
    let cluster = InProcessCluster::start_spec(&spec, Disks::Memory).await;
    cluster.wait_for_settled(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let send = |producer: Arc<Producer>, from: usize| async move {
        for i in from..from + N {
            let r = ProducerRecord::new(TOPIC, format!("m{i}")).key(format!("k{i}"));
            producer.send_and_wait(r).await.expect("acknowledged");
        }
    };
    let producer = Arc::new(
        Producer::new(producer_config(&bootstrap))
            .await
            .expect("producer"),
    );
    send(producer.clone(), 0).await;
    let mut config = group_config(&bootstrap, GROUP);
    config.enable_auto_commit = false;
    config.client.request_timeout_ms = 2_000;
    config.client.connect_timeout_ms = 1_000;
    let mut member = Consumer::new(config.clone()).await.expect("consumer");
    member.subscribe(&[TOPIC]).await.expect("subscribe");
    let mut read = poll_until(&mut member, WAIT, |r| r.len() >= N).await;
    member.commit_sync().await.expect("commit before the move");

    let (coordinator, _) = member
        .cluster()
        .find_coordinator(GROUP, 0)
        .await
        .expect("coordinator");
    cluster.node(coordinator as u64).handle.shutdown();
    // Records keep coming through the survivors.
    let survivors: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.handle.node_id() != coordinator as u64)
        .map(|n| n.kafka_addr.to_string())
        .collect();
    let survivors = survivors.join(",");
    let late = Arc::new(
        Producer::new(failover_producer_config(&survivors))
            .await
            .expect("producer"),
    );
    send(late.clone(), N).await;
    read.extend(poll_until(&mut member, WAIT, |r| r.len() >= N).await);
    member
        .commit_sync()
        .await
        .expect("commit through the new coordinator");
    let (moved_to, _) = member
        .cluster()
        .find_coordinator(GROUP, 0)
        .await
        .expect("coordinator");
    assert_ne!(
        moved_to, coordinator,
        "the coordinator moved off the stopped node"
    );
    member.close().await.expect("close");

    let values: BTreeSet<String> = read.iter().map(|r| text(&r.value)).collect();
    assert_eq!(values.len(), 2 * N, "each record once: {} read", read.len());
    // A new member starts at the commits: there is nothing left to read.
    config.client.bootstrap = survivors.split(',').map(String::from).collect();
    let mut next = Consumer::new(config).await.expect("consumer");
    next.subscribe(&[TOPIC]).await.expect("subscribe");
    let admin = railyard_client::Admin::new(railyard_client::ClientConfig::new(&survivors))
        .await
        .expect("admin");
    let lag = admin.consumer_lag(GROUP, TOPIC).await.expect("lag");
    assert!(
        lag.iter().all(|l| l.lag == 0)
            && lag.iter().map(|l| l.log_end).sum::<i64>() == 2 * N as i64,
        "{lag:?}"
    );
    let mut extra = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        extra.extend(next.poll(Duration::from_millis(200)).await.expect("poll"));
    }
    assert!(
        extra.is_empty(),
        "a new member re-read {} records",
        extra.len()
    );
    next.close().await.expect("close");
    producer.close().await;
    late.close().await;
}

// Proves the idempotent producer rides out a broker that forgot it: with the brokers'
// producer_id_expiration_ms at 1 s, a producer idle for longer sends its next batch with a
// sequence the partition has no state for, the broker answers UNKNOWN_PRODUCER_ID, and the
// producer bumps its epoch (KIP-360, as the Java client does) and resends from sequence 0: every
// record is acknowledged once, at dense offsets. Also, records with CreateTime two years ago do
// not make the broker forget a producer that is writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_producer_forgotten_by_the_broker_bumps_its_epoch_and_resends() {
    const TOPIC: &str = "rc-forgotten";
    let mut spec = Spec::new(3, vec![topic(TOPIC, 1, 3)]);
    spec.extra_toml = "producer_id_expiration_ms = 1000\n".into();
    let cluster = InProcessCluster::start_spec(&spec, Disks::Memory).await;
    cluster.wait_for_leaders(WAIT).await;
    let producer = Producer::new(producer_config(&cluster.bootstrap()))
        .await
        .expect("producer");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let old_ms = now_ms - 2 * 365 * 86_400_000;
    let mut offsets = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            let r = ProducerRecord::new(TOPIC, format!("r{round}-{i}"))
                .partition(0)
                .timestamp_ms(old_ms);
            let md = producer.send_and_wait(r).await.unwrap_or_else(|e| {
                panic!("round {round} record {i} failed: {e}");
            });
            offsets.push(md.offset);
        }
        // Idle past the brokers' expiration.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert_eq!(
        offsets,
        (0..15).collect::<Vec<i64>>(),
        "each record once, in order"
    );
    producer.close().await;
}

// Proves a batch over the topic's max.message.bytes is split and resent, as the Java client
// does, rather than failing records that each fit: 40 records of 300 B lingering into one
// batch of about 12 KB, on a topic that takes 2,000 B, are all acknowledged once, at dense
// offsets in send order, by the idempotent producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_batch_too_large_for_the_topic_is_split() {
    const TOPIC: &str = "rc-split";
    const N: usize = 40;
    let cluster = InProcessCluster::start_spec(&Spec::new(3, vec![]), Disks::Memory).await;
    cluster.wait_for_settled(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let admin = railyard_client::Admin::new(railyard_client::ClientConfig::new(&bootstrap))
        .await
        .expect("admin");
    admin
        .create_topic(
            railyard_client::NewTopic::new(TOPIC, 1, 3).config("max.message.bytes", "2000"),
        )
        .await
        .expect("create");
    let mut config = producer_config(&bootstrap);
    config.linger_ms = 200;
    config.batch_size_bytes = 64 * 1024;
    let producer = Producer::new(config).await.expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..N {
        let r = ProducerRecord::new(TOPIC, format!("{i:03}-{}", "x".repeat(296))).partition(0);
        deliveries.push(producer.send(r).await.expect("queued"));
    }
    let mut offsets = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        offsets.push(d.await.unwrap_or_else(|e| panic!("record {i}: {e}")).offset);
    }
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    producer.close().await;
    let (_, read) = read_partition_zero(&bootstrap, TOPIC, N).await;
    let firsts: Vec<String> = read
        .iter()
        .map(|r| text(&r.value)[..3].to_string())
        .collect();
    assert_eq!(
        firsts,
        (0..N).map(|i| format!("{i:03}")).collect::<Vec<_>>()
    );
}
