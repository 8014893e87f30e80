//! Client profiles: the librdkafka (`rdkafka` crate) configurations the tests start from, and
//! the read-back loop they all use.
//!
//! Each profile is a [`ClientConfig`] a test may still `.set(...)` on before `.create()`, so
//! that what a test tunes (timeouts, batching) stands next to the test and what they share is
//! written once:
//! - [`client`]: the bootstrap list only (admin clients, watermark probes).
//! - [`producer`]: acks=all, idempotence off, the Java client's murmur2 partitioner (what
//!   [`crate::java_partition`] computes), 5 ms linger.
//! - [`assign_consumer`]: a consumer for `assign` (no group membership, nothing committed), with
//!   a short fetch wait so tests do not idle.
//!
//! [`produce_all`] and [`read_from_start`] are the two halves of a round trip: every record
//! enqueued at once and every acknowledgement awaited, then everything read back by assign.
//! [`produce_until`] is the background load of a fault test: records sent at a steady pace
//! until told to stop, each acknowledgement kept with when it came.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use crate::eventually::Deadline;

/// How long a producer profile lets a record wait for its acknowledgement.
pub const MESSAGE_TIMEOUT_MS: &str = "30000";

/// A runtime for the librdkafka futures of a synchronous test (two workers: these machines
/// have two cores, and the nodes need them too).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A client of the cluster at `bootstrap` (`host:port,...`) with librdkafka's defaults.
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A producer that waits for every in-sync replica (acks=all), without idempotence (the broker
/// has no producer ids), partitioning keys as the Java client does.
pub fn producer(bootstrap: &str) -> ClientConfig {
    let mut c = client(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "false")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    c
}

/// A consumer for reading by `assign`: it joins no group (the group id is never used) and
/// commits and stores no offsets.
pub fn assign_consumer(bootstrap: &str) -> ClientConfig {
    let mut c = client(bootstrap);
    c.set("group.id", "railyard-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

/// Enqueues every `(key, value)` of `records` to `topic` at once (librdkafka's queue holds
/// them and batches), then awaits each acknowledgement; returns where each record was
/// acknowledged, `(partition, offset)`, in the order of `records`. Panics naming the first
/// record that could not be enqueued or was not acknowledged.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Vec<(i32, i64)> {
    let mut pending = Vec::with_capacity(records.len());
    for (i, (k, v)) in records.iter().enumerate() {
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(k).payload(v))
            .unwrap_or_else(|(e, _)| panic!("enqueueing record {i} ({k}): {e}"));
        pending.push(delivery);
    }
    let mut acked = Vec::with_capacity(records.len());
    for (i, delivery) in pending.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(at)) => acked.push(at),
            Ok(Err((e, _))) => panic!("record {i} ({}) was not acknowledged: {e}", records[i].0),
            Err(_) => panic!("record {i}: delivery future cancelled"),
        }
    }
    acked
}

/// Most records [`produce_until`] has in flight at once.
pub const IN_FLIGHT_MAX: u32 = 64;

/// One acknowledged record of [`produce_until`].
#[derive(Clone, Debug)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
    /// When the producer saw the acknowledgement.
    pub at: Instant,
}

/// The acknowledgements of a running [`produce_until`], shared with the test.
pub type Acks = Arc<Mutex<Vec<Ack>>>;

/// How many records [`produce_until`] sent, and how many of them failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    pub failed: u64,
}

/// Sends `value-<n>` records to `partitions` of `topic` in turn, one every 2 ms with at most
/// [`IN_FLIGHT_MAX`] in flight, until `stop` is set; pushes every acknowledgement to `acks` as
/// it comes. Returns once every record sent has been acknowledged or has failed (within the
/// producer's `message.timeout.ms`).
pub async fn produce_until(
    producer: FutureProducer,
    topic: &'static str,
    partitions: &'static [i32],
    stop: Arc<AtomicBool>,
    acks: Acks,
) -> Sent {
    assert!(!partitions.is_empty(), "produce_until needs a partition");
    let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_MAX as usize));
    let failed = Arc::new(AtomicU64::new(0));
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (producer, acks, failed) = (producer.clone(), acks.clone(), failed.clone());
        let partition = partitions[(sent % partitions.len() as u64) as usize];
        let value = format!("value-{sent}");
        sent += 1;
        tokio::spawn(async move {
            let record = FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&value);
            match producer.send(record, Timeout::Never).await {
                Ok((p, offset)) => {
                    assert_eq!(p, partition, "acknowledged on another partition");
                    let at = Instant::now();
                    let ack = Ack {
                        partition,
                        offset,
                        value,
                        at,
                    };
                    acks.lock().expect("acks lock").push(ack);
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _all = window
        .acquire_many(IN_FLIGHT_MAX)
        .await
        .expect("the semaphore is never closed");
    Sent {
        sent,
        failed: failed.load(Ordering::Relaxed),
    }
}

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
}

/// What [`read_from_start`] does with an error the consumer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Fail the test.
    Fail,
    /// Log it and keep polling (a broker of the bootstrap list may be down on purpose).
    Retry,
}

/// Assigns `partitions` of `topic` to `consumer` from offset 0 and polls until `done` holds for
/// the records read so far (in arrival order); panics if that takes longer than `within`.
/// Keys and values must be UTF-8.
pub fn read_from_start(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    within: Duration,
    on_error: OnError,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .expect("adding a partition");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Deadline::new(format!("reading {topic} {partitions:?}"), within);
    let mut out = Vec::new();
    while !done(&out) {
        match consumer.poll(Duration::from_millis(200)) {
            None => deadline.pause_blocking(format!("{} records", out.len())),
            Some(Err(e)) if on_error == OnError::Retry => {
                eprintln!("consumer: {e}");
                deadline.pause_blocking(format!("{} records, then {e}", out.len()));
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => {
                let text = |b: Option<&[u8]>| {
                    b.map(|b| String::from_utf8(b.to_vec()).expect("a UTF-8 key or value"))
                };
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: text(m.key()),
                    value: text(m.payload()),
                });
            }
        }
    }
    out
}
