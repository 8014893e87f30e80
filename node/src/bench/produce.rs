//! The producing side of every mode: `--producers` clients, each on its own task, send
//! records of `--record-size` bytes on a [`Plan`] (unpaced, or open-loop at a rate) and count
//! each acknowledgement as it arrives.
//!
//! Acknowledgements are awaited all at once (a `FuturesUnordered` fed by the send loop), so a
//! record acknowledged before an earlier one is counted when it is, not when the earlier one
//! is. With a rate, each record's latency counts from the instant it was *meant* to be sent:
//! a send loop that falls behind (backpressure, a stall) shows its lateness in the latency
//! instead of hiding it (coordinated omission).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use railyard_client::{
    BatchStats, ClientConfig, Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
use tokio::sync::mpsc;

use super::args::{BenchConfig, STAMP_BYTES};
use super::tally::Tally;

/// How long the first contact with the brokers may take before the run gives up: long enough
/// for a cluster that is still electing, short enough that a wrong address fails promptly.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// When each producer sends what.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// When sending starts (the warm-up's start).
    pub start: Instant,
    /// The measurement window's start: records meant for earlier are not counted.
    pub warmup_end: Instant,
    /// No record is sent from this instant on.
    pub stop_at: Option<Instant>,
    /// Records each producer sends after the warm-up.
    pub records: Option<u64>,
    /// The gap between two records of one producer (open loop); `None` is unpaced.
    pub interval: Option<Duration>,
    /// e2e: the first 8 bytes of each value are the intended send time, µs since this instant.
    pub stamp_base: Option<Instant>,
}

impl Plan {
    /// The plan of `cfg`, starting now.
    pub fn of(cfg: &BenchConfig, stamp_base: Option<Instant>) -> Plan {
        let start = Instant::now();
        let warmup_end = start + Duration::from_secs_f64(cfg.warmup_s);
        let per_producer_rate = cfg.rate_rec_s / cfg.producers as f64;
        Plan {
            start,
            warmup_end,
            stop_at: cfg
                .duration_s
                .map(|d| warmup_end + Duration::from_secs_f64(d)),
            records: cfg.records_per_producer(),
            interval: (per_producer_rate > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / per_producer_rate)),
            stamp_base,
        }
    }
}

/// What the producers of one run measured.
#[derive(Debug)]
pub struct ProduceOutcome {
    /// Measured acknowledgements, send → ack latency.
    pub tally: Tally,
    /// Every record acknowledged, warm-up included (what e2e consumers must receive).
    pub acked_total: u64,
    /// The batches the producers put on the wire (summed over producers).
    pub batches: BatchStats,
}

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// No broker of the bootstrap list answered.
    #[error("cannot reach the brokers {brokers}: {source}")]
    Connect {
        brokers: String,
        source: railyard_client::Error,
    },
    /// `send` refused a record (a closed producer, an unknown topic, a record too large).
    #[error("sending to {topic}: {source}")]
    Send {
        topic: String,
        source: railyard_client::Error,
    },
    /// Records were sent but none was acknowledged.
    #[error("none of the {failed} records sent was acknowledged; the first error: {first}")]
    NothingAcknowledged { failed: u64, first: String },
    /// A producer task panicked or was cancelled (a bug in the bench).
    #[error("a producer task ended abnormally: {0}")]
    Task(String),
}

/// Client settings for every client of a run: the bootstrap list, and a short first contact.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new(brokers);
    c.client_id = "railyard-bench".into();
    c.connect_timeout_ms = CONNECT_TIMEOUT_MS.min(c.connect_timeout_ms);
    c.default_api_timeout_ms = CONNECT_TIMEOUT_MS;
    c
}

/// The producer settings `cfg` asks for.
pub fn producer_config(cfg: &BenchConfig) -> ProducerConfig {
    let mut p = ProducerConfig::new(&cfg.brokers);
    p.client = client_config(&cfg.brokers);
    p.acks = cfg.acks;
    p.idempotence = cfg.idempotence;
    p.linger_ms = cfg.linger_ms;
    p.batch_size_bytes = cfg.batch_size_bytes;
    p.compression = cfg.compression;
    p
}

/// Runs `cfg.producers` producers on `plan`; `progress` counts measured acknowledgements.
pub async fn run(
    cfg: &BenchConfig,
    plan: Plan,
    progress: Arc<AtomicU64>,
) -> Result<ProduceOutcome, ProduceError> {
    let payload = payload(cfg.record_size_bytes);
    let mut tasks = Vec::with_capacity(cfg.producers);
    for _ in 0..cfg.producers {
        let producer = Producer::new(producer_config(cfg))
            .await
            .map_err(|source| ProduceError::Connect {
                brokers: cfg.brokers.clone(),
                source,
            })?;
        let (topic, payload, progress) = (cfg.topic.clone(), payload.clone(), progress.clone());
        tasks.push(tokio::spawn(drive(
            producer, topic, plan, payload, progress,
        )));
    }
    let mut out = ProduceOutcome {
        tally: Tally::new(plan.warmup_end),
        acked_total: 0,
        batches: BatchStats::default(),
    };
    for t in tasks {
        let (tally, acked, batches) = t.await.map_err(|e| ProduceError::Task(e.to_string()))??;
        out.tally.merge(&tally);
        out.acked_total += acked;
        out.batches.batches += batches.batches;
        out.batches.bytes += batches.bytes;
        out.batches.records += batches.records;
    }
    if out.acked_total == 0 && out.tally.failed > 0 {
        return Err(ProduceError::NothingAcknowledged {
            failed: out.tally.failed,
            first: out.tally.first_error.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The value every record carries: non-zero, varying bytes (no codec or disk layer can
/// shortcut them the way it could zeros).
pub fn payload(size_bytes: usize) -> Bytes {
    (0..size_bytes).map(|i| (i % 251) as u8 + 1).collect()
}

/// `payload` with its first 8 bytes replaced by `intended`, µs since `base` (little endian).
pub fn stamped(payload: &Bytes, base: Instant, intended: Instant) -> Bytes {
    let us = intended.saturating_duration_since(base).as_micros() as u64;
    let mut v = payload.to_vec();
    v[..STAMP_BYTES].copy_from_slice(&us.to_le_bytes());
    Bytes::from(v)
}

/// The instant a [`stamped`] value was meant to be sent, if it carries a stamp.
pub fn read_stamp(value: &[u8], base: Instant) -> Option<Instant> {
    let raw: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    base.checked_add(Duration::from_micros(u64::from_le_bytes(raw)))
}

/// One producer: the send loop here, the acknowledgements in a collector task.
async fn drive(
    producer: Producer,
    topic: String,
    plan: Plan,
    payload: Bytes,
    progress: Arc<AtomicU64>,
) -> Result<(Tally, u64, BatchStats), ProduceError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(rx, plan.warmup_end, payload.len(), progress));
    let sent = send_loop(&producer, &topic, &plan, &payload, &tx).await;
    drop(tx);
    producer.close().await;
    let (tally, acked) = collector
        .await
        .map_err(|e| ProduceError::Task(e.to_string()))?;
    sent?;
    Ok((tally, acked, producer.batch_stats()))
}

/// Sends until the plan's end; each record's delivery goes to the collector.
async fn send_loop(
    producer: &Producer,
    topic: &str,
    plan: &Plan,
    payload: &Bytes,
    tx: &mpsc::UnboundedSender<Tracked>,
) -> Result<(), ProduceError> {
    let mut measured = 0u64;
    for i in 0u64.. {
        let intended = match plan.interval {
            Some(gap) => {
                let due = plan.start + gap.mul_f64(i as f64);
                // madsim's tokio Instant is std's, so the conversion is one only outside it.
                #[cfg_attr(madsim, allow(clippy::useless_conversion))]
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        if plan.stop_at.is_some_and(|s| intended >= s) {
            break;
        }
        let counted = intended >= plan.warmup_end;
        if counted && plan.records.is_some_and(|n| measured >= n) {
            break;
        }
        measured += u64::from(counted);
        let value = match plan.stamp_base {
            Some(base) => stamped(payload, base, intended),
            None => payload.clone(),
        };
        let record = ProducerRecord {
            topic: topic.to_string(),
            value: Some(value),
            ..ProducerRecord::default()
        };
        let delivery = producer
            .send(record)
            .await
            .map_err(|source| ProduceError::Send {
                topic: topic.to_string(),
                source,
            })?;
        // The collector lives until this sender is dropped, so the send cannot fail.
        let _ = tx.send(Tracked {
            delivery,
            intended,
            counted,
        });
    }
    Ok(())
}

/// Awaits every delivery at once and counts each when it completes; returns the tally and
/// every acknowledgement counted or not.
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Tracked>,
    window_start: Instant,
    bytes: usize,
    progress: Arc<AtomicU64>,
) -> (Tally, u64) {
    let mut tally = Tally::new(window_start);
    let mut acked = 0u64;
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            Some((result, intended, counted)) = pending.next(), if !pending.is_empty() => {
                let (intended, counted): (Instant, bool) = (intended, counted);
                let now = Instant::now();
                match result {
                    Ok(_) => {
                        acked += 1;
                        // Throughput counts every acknowledgement in the window, as
                        // kafka-producer-perf-test does; latency only records sent in it.
                        // Records queued during the warm-up (up to the client's 32 MiB buffer)
                        // are acknowledged in the window: leaving them out of the count but
                        // not of the time understated MB/s by about half.
                        if now >= window_start {
                            let latency: Option<Duration> =
                                counted.then(|| now.saturating_duration_since(intended));
                            tally.record(now, bytes, latency);
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => tally.fail(&e),
                }
            }
            item = rx.recv(), if open => match item {
                Some(t) => pending.push(t),
                None => open = false,
            },
            else => break,
        }
    }
    (tally, acked)
}

/// A delivery with what the collector needs to count it.
struct Tracked {
    delivery: Delivery,
    intended: Instant,
    counted: bool,
}

impl Future for Tracked {
    type Output = (railyard_client::Result<RecordMetadata>, Instant, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (intended, counted) = (self.intended, self.counted);
        Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|r| (r, intended, counted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::Mode;

    // Proves a stamp reads back as the instant written, to the microsecond.
    #[test]
    fn test_stamp_round_trip() {
        let base = Instant::now();
        let intended = base + Duration::from_micros(1_234_567);
        let v = stamped(&payload(16), base, intended);
        assert_eq!(v.len(), 16);
        assert_eq!(read_stamp(&v, base), Some(intended));
        assert_eq!(read_stamp(&v[..4], base), None, "too short for a stamp");
    }

    // Proves a rate is split over producers and a duration ends after the warm-up.
    #[test]
    fn test_plan_of_a_paced_run() {
        let mut cfg = BenchConfig::defaults(Mode::Produce, "127.0.0.1:9092");
        (cfg.rate_rec_s, cfg.producers, cfg.warmup_s) = (1000.0, 4, 1.0);
        let p = Plan::of(&cfg, None);
        assert_eq!(p.interval, Some(Duration::from_millis(4)));
        assert_eq!(p.warmup_end - p.start, Duration::from_secs(1));
        assert_eq!(
            p.stop_at.map(|s| s - p.warmup_end),
            Some(Duration::from_secs(10))
        );
    }
}
