//! The producer: [`Producer::send`] places a record in a partition's batch and returns a
//! [`Delivery`], a future of where the record was written.
//!
//! `send` itself waits only when the records not yet acknowledged would exceed
//! `buffer_memory_bytes` (backpressure), or for the topic's metadata on first use. Batches go
//! out from one sender task ([`sender`]) that drives the sans-IO [`accumulator`]: per broker at
//! most `max_in_flight` produce requests at once, one batch per partition per request, each
//! batch compressed with the configured codec. Idempotence is on by default: the producer gets
//! an id from InitProducerId, numbers every batch per partition, resends after a leader change
//! in sequence order, and bumps its epoch (KIP-360) when a numbered batch fails for good.

pub mod accumulator;
pub mod partitioner;
mod sender;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::cluster::{ClientConfig, Cluster};
use crate::codec::Compression;
use crate::conn::lock;
use crate::error::{Error, Result};
use accumulator::{Accumulator, AccumulatorConfig, QueuedRecord, TopicPartition};
use partitioner::{key_partition, StickyPartitioner};

/// Which replicas must have a record before the producer counts it as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// None: the broker does not answer, and the offset is unknown (`-1`).
    None,
    /// The leader.
    Leader,
    /// Every in-sync replica (the default).
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings. [`ProducerConfig::new`] gives the Java client's defaults.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Connection, retry and metadata settings.
    pub client: ClientConfig,
    /// Acknowledgement level (default [`Acks::All`]).
    pub acks: Acks,
    /// Idempotent delivery (default on; needs [`Acks::All`]).
    pub idempotence: bool,
    /// How long a batch that is not full waits for more records (default 5 ms).
    pub linger_ms: u64,
    /// A batch is sent once its records reach this size (default 16 KiB).
    pub batch_size_bytes: usize,
    /// Produce requests in flight at once per broker connection (default 5; at most 5 with
    /// idempotence, the window the broker checks sequences in).
    pub max_in_flight: usize,
    /// Records accepted and not yet acknowledged, in bytes, before `send` waits (default
    /// 32 MiB).
    pub buffer_memory_bytes: usize,
    /// The largest record the producer accepts, and the size at which a request is cut
    /// (default 1 MiB).
    pub max_request_size_bytes: usize,
    /// Batch compression (default none).
    pub compression: Compression,
    /// How long a record may take from `send` to its acknowledgement, retries included
    /// (default 120 s).
    pub delivery_timeout_ms: u64,
    /// How many times a batch that failed with a retriable error is sent again before its
    /// records fail (Kafka's `retries`; default `u32::MAX`, so `delivery_timeout_ms` is the
    /// bound). Without idempotence a retry after an indeterminate failure (a timeout, a lost
    /// connection) may write the records twice; `retries = 0` gives at-most-once delivery.
    pub retries: u32,
}

impl ProducerConfig {
    /// Defaults for the comma-separated bootstrap list.
    pub fn new(bootstrap: &str) -> ProducerConfig {
        ProducerConfig {
            client: ClientConfig::new(bootstrap),
            acks: Acks::All,
            idempotence: true,
            linger_ms: 5,
            batch_size_bytes: 16 * 1024,
            max_in_flight: 5,
            buffer_memory_bytes: 32 * 1024 * 1024,
            max_request_size_bytes: 1024 * 1024,
            compression: Compression::None,
            delivery_timeout_ms: 120_000,
            retries: u32::MAX,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.idempotence && self.acks != Acks::All {
            return Err(Error::Config(
                "idempotence needs acks=all (set idempotence = false for acks 0 or 1)".into(),
            ));
        }
        if self.idempotence && self.retries == 0 {
            // As the Java client: the idempotent producer's guarantees rest on resending.
            return Err(Error::Config(
                "idempotence needs retries > 0 (set idempotence = false for retries = 0)".into(),
            ));
        }
        if self.idempotence && !(1..=5).contains(&self.max_in_flight) {
            return Err(Error::Config(
                "with idempotence, max_in_flight must be 1..=5".into(),
            ));
        }
        if self.max_in_flight == 0 || self.batch_size_bytes == 0 {
            return Err(Error::Config(
                "max_in_flight and batch_size_bytes must be positive".into(),
            ));
        }
        if self.buffer_memory_bytes < self.max_request_size_bytes.min(u32::MAX as usize) {
            return Err(Error::Config(
                "buffer_memory_bytes must hold at least one record of max_request_size_bytes"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// The partition; `None` lets the partitioner choose (murmur2 of the key, else sticky).
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Bytes>,
    /// The value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order, with distinct keys.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The timestamp (ms since the epoch); `None` means now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with this value for `topic`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// With this key.
    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    /// To this partition.
    pub fn partition(mut self, partition: i32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    /// With this header added.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// With this timestamp (ms since the epoch).
    pub fn timestamp_ms(mut self, ts: i64) -> ProducerRecord {
        self.timestamp_ms = Some(ts);
        self
    }

    /// Bytes the record counts for (memory bound, batch size): its payloads and headers plus
    /// a per-record overhead like the Java client's estimate.
    fn size_bytes(&self) -> usize {
        const RECORD_OVERHEAD_BYTES: usize = 21;
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len());
        RECORD_OVERHEAD_BYTES
            + len(&self.key)
            + len(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + len(v) + 2)
                .sum::<usize>()
    }
}

/// Where a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: i32,
    /// Its offset (`-1` with [`Acks::None`]).
    pub offset: i64,
    /// The timestamp the broker stored: the record's own, or the broker's with LogAppendTime.
    pub timestamp_ms: i64,
}

/// What the producer has put on the wire so far: batches (retries included), their encoded
/// bytes (after compression) and their records. A benchmark divides bytes by batches to know
/// the size of the appends the brokers fsync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Record batches encoded into produce requests.
    pub batches: u64,
    /// Their encoded size in bytes.
    pub bytes: u64,
    /// The records they held.
    pub records: u64,
}

impl BatchStats {
    /// Average encoded batch size in bytes (`None` before the first batch).
    pub fn avg_batch_bytes(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.bytes as f64 / self.batches as f64)
    }
}

/// The outcome of one [`Producer::send`]: resolves when the record is acknowledged or has
/// failed for good.
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// What a queued record carries to its completion: the caller's channel and its share of
/// the memory bound (released when the record completes).
#[derive(Debug)]
pub(crate) struct Completion {
    tx: oneshot::Sender<Result<RecordMetadata>>,
    _memory: OwnedSemaphorePermit,
}

impl Completion {
    fn finish(self, result: Result<RecordMetadata>) {
        let _ = self.tx.send(result);
    }
}

/// State the producer handle and the sender task share.
pub(crate) struct Shared {
    pub(crate) config: ProducerConfig,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) acc: Mutex<Accumulator<Completion>>,
    pub(crate) wake: Notify,
    /// Records sent and not yet completed.
    pub(crate) outstanding: AtomicUsize,
    pub(crate) idle: Notify,
    /// Flushes in progress (each makes every batch ready regardless of linger).
    pub(crate) flushing: AtomicUsize,
    pub(crate) closing: AtomicBool,
    /// Batches encoded for a produce request, retries included, and their bytes on the wire
    /// (after compression): what [`Producer::batch_stats`] reports.
    pub(crate) batches_sent: AtomicU64,
    pub(crate) batch_bytes_sent: AtomicU64,
    pub(crate) batch_records_sent: AtomicU64,
}

impl Shared {
    pub(crate) fn record_done(&self, n: usize) {
        let before = self.outstanding.fetch_sub(n, Ordering::AcqRel);
        assert!(before >= n, "more records completed than were sent");
        if before == n {
            self.idle.notify_waiters();
        }
    }
}

/// An async producer; see the module docs. Cheap to share by reference across tasks.
pub struct Producer {
    shared: Arc<Shared>,
    memory: Arc<Semaphore>,
    sticky: Mutex<StickyPartitioner>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Producer {
    /// Connects, obtains a producer id when idempotence is on, and starts the sender task.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone()).await?;
        Producer::with_cluster(config, cluster).await
    }

    /// A producer on an existing [`Cluster`] (shared with a consumer or admin client).
    pub async fn with_cluster(config: ProducerConfig, cluster: Arc<Cluster>) -> Result<Producer> {
        config.validate()?;
        let identity = if config.idempotence {
            sender::init_producer_id(&cluster, None).await?
        } else {
            sender::Identity::none()
        };
        let acc = Accumulator::new(AccumulatorConfig {
            batch_size_bytes: config.batch_size_bytes,
            linger: Duration::from_millis(config.linger_ms),
            idempotent: config.idempotence,
            in_flight_per_partition_max: config.max_in_flight,
        });
        let memory = Arc::new(Semaphore::new(
            config.buffer_memory_bytes.min(Semaphore::MAX_PERMITS),
        ));
        let shared = Arc::new(Shared {
            config,
            cluster,
            acc: Mutex::new(acc),
            wake: Notify::new(),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            flushing: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            batches_sent: AtomicU64::new(0),
            batch_bytes_sent: AtomicU64::new(0),
            batch_records_sent: AtomicU64::new(0),
        });
        let task = tokio::spawn(sender::run(shared.clone(), identity));
        Ok(Producer {
            shared,
            memory,
            sticky: Mutex::new(StickyPartitioner::default()),
            sender: Mutex::new(Some(task)),
        })
    }

    /// Queues `record` and returns the [`Delivery`] of its outcome. Waits while the memory
    /// bound is full. Fails at once for an unknown topic or partition, a record over
    /// `max_request_size_bytes`, or a closed producer.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let size = record.size_bytes();
        if size > self.shared.config.max_request_size_bytes {
            return Err(Error::RecordTooLarge {
                size_bytes: size,
                limit: format!(
                    "max_request_size_bytes = {}",
                    self.shared.config.max_request_size_bytes
                ),
            });
        }
        let partition = self.choose_partition(&record, size).await?;
        let permits = u32::try_from(size).expect("bounded by max_request_size_bytes");
        let memory = self
            .memory
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        let (tx, rx) = oneshot::channel();
        let queued = QueuedRecord {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            size_bytes: size,
            completion: Completion {
                tx,
                _memory: memory,
            },
        };
        let tp = TopicPartition::new(record.topic, partition);
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        lock(&self.shared.acc).append(tp, queued, std::time::Instant::now());
        self.shared.wake.notify_one();
        Ok(Delivery { rx })
    }

    /// [`Producer::send`] and wait for the acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends every queued record now (ignoring linger) and waits until each has been
    /// acknowledged or has failed.
    pub async fn flush(&self) {
        self.shared.flushing.fetch_add(1, Ordering::AcqRel);
        self.shared.wake.notify_one();
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            // `notify_waiters` wakes only registered waiters; re-check every 100 ms in case the
            // last record completed between the load and the wait.
            let _ = tokio::time::timeout(Duration::from_millis(100), idle).await;
        }
        self.shared.flushing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Refuses new records, delivers everything queued (as [`Producer::flush`]) and stops the
    /// sender task.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.flush().await;
        let task = lock(&self.sender).take();
        if let Some(task) = task {
            self.shared.wake.notify_one();
            let _ = task.await;
        }
    }

    /// Batches, bytes and records put on the wire so far (see [`BatchStats`]).
    pub fn batch_stats(&self) -> BatchStats {
        BatchStats {
            batches: self.shared.batches_sent.load(Ordering::Relaxed),
            bytes: self.shared.batch_bytes_sent.load(Ordering::Relaxed),
            records: self.shared.batch_records_sent.load(Ordering::Relaxed),
        }
    }

    /// The cluster this producer talks to (to share it with an admin client or consumer).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    async fn choose_partition(&self, record: &ProducerRecord, size: usize) -> Result<i32> {
        let topic = self.shared.cluster.topic(&record.topic).await?;
        let count = topic.partitions.len() as i32;
        if let Some(p) = record.partition {
            if !(0..count).contains(&p) {
                return Err(Error::UnknownPartition {
                    topic: record.topic.clone(),
                    partition: p,
                });
            }
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok(key_partition(key, count));
        }
        let batch = self.shared.config.batch_size_bytes;
        Ok(lock(&self.sticky).partition(&record.topic, count, size, batch))
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Without `close`, whatever is still queued fails with `Error::Closed` (its channel
        // drops with the task).
        if let Some(task) = lock(&self.sender).take() {
            task.abort();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_refuses_what_cannot_keep_its_promise() {
        let ok = ProducerConfig::new("b:9092");
        assert!(ok.validate().is_ok());
        let mut no_retries = ok.clone();
        no_retries.retries = 0;
        assert!(matches!(no_retries.validate(), Err(Error::Config(_))));
        no_retries.idempotence = false;
        assert!(
            no_retries.validate().is_ok(),
            "a plain producer may not retry"
        );
        let mut weak = ok.clone();
        weak.acks = Acks::Leader;
        assert!(matches!(weak.validate(), Err(Error::Config(_))));
        let mut wide = ok;
        wide.max_in_flight = 6;
        assert!(matches!(wide.validate(), Err(Error::Config(_))));
    }
}
