//! librdkafka (the `rdkafka` crate) against an in-process 3-node cluster on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use railyard_tests::profiles::{self, OnError};
use railyard_tests::{java_partition, topic, InProcessCluster};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

const TOPIC: &str = "interop";
const PARTITIONS: i32 = 4;
const RECORDS: usize = 100_000;

fn key(i: usize) -> String {
    format!("key-{i:06}")
}

fn value(i: usize) -> String {
    format!("v{i}")
}

// Proves a stock librdkafka producer (acks=all, Java murmur2 partitioner, batching) gets every
// one of 100k keyed records acknowledged by a 3-node RF=3 cluster, and a librdkafka consumer
// reading by assign from offset 0 gets each back exactly once, in the partition Java's murmur2
// picks, at the acknowledged offset, with dense offsets from 0 in every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rdkafka_100k_keyed_acks_all_roundtrip_with_murmur2_placement() {
    let started = Instant::now();
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, PARTITIONS as u32, 3)]).await;
    let view = cluster.wait_for_leaders(Duration::from_secs(30)).await;
    assert_eq!(view.topics()[0].partitions.len(), PARTITIONS as usize);
    let bootstrap = cluster.bootstrap();
    let elected = started.elapsed();

    // Produce: all records enqueued at once (the queue holds them), then every delivery awaited.
    let producer: FutureProducer = profiles::producer(&bootstrap)
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("creating the producer");
    let produce_start = Instant::now();
    let records: Vec<(String, String)> = (0..RECORDS).map(|i| (key(i), value(i))).collect();
    // key index -> (partition, offset) as acknowledged.
    let acked = profiles::produce_all(&producer, TOPIC, &records).await;
    let produce_time = produce_start.elapsed();

    // Consume by assign, no group: each partition from offset 0 until all records are read.
    let consume_start = Instant::now();
    let bootstrap2 = bootstrap.clone();
    let read = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = profiles::assign_consumer(&bootstrap2)
            .create()
            .expect("creating the consumer");
        let all: Vec<i32> = (0..PARTITIONS).collect();
        let within = Duration::from_secs(60);
        let out = profiles::read_from_start(&consumer, TOPIC, &all, within, OnError::Fail, |r| {
            r.len() >= RECORDS
        });
        // Nothing beyond what was produced.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(300)) {
            panic!(
                "unexpected extra record at {}/{}",
                m.partition(),
                m.offset()
            );
        }
        out
    })
    .await
    .expect("consumer thread panicked");
    let consume_time = consume_start.elapsed();

    // Every key exactly once, where murmur2 and the acknowledgement put it.
    let mut seen: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &read {
        let (partition, offset) = (&r.partition, &r.offset);
        let k = r.key.as_ref().expect("every record has a key");
        let v = r.value.as_ref().expect("every record has a value");
        let i: usize = k["key-".len()..].parse().expect("a key we produced");
        assert_eq!(v, &value(i), "value of {k}");
        assert!(
            seen.insert(k.clone(), (*partition, *offset)).is_none(),
            "{k} read twice"
        );
        assert_eq!(
            *partition,
            java_partition(k.as_bytes(), PARTITIONS),
            "{k} is not in the partition Java's murmur2 picks"
        );
        assert_eq!(
            (*partition, *offset),
            acked[i],
            "{k} read at a different place than acknowledged"
        );
        per_partition.entry(*partition).or_default().push(*offset);
    }
    assert_eq!(seen.len(), RECORDS);
    for (p, mut offsets) in per_partition {
        offsets.sort_unstable();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert!(
            offsets == dense,
            "partition {p} offsets are not dense from 0"
        );
    }
    eprintln!(
        "rdkafka interop: leaders after {elected:?}, produced {RECORDS} in {produce_time:?}, \
         consumed in {consume_time:?}, total {:?}",
        started.elapsed()
    );
}
