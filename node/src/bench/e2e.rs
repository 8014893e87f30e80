//! `railyard bench e2e`: end-to-end latency. The consumers are assigned the topic's partitions
//! at their end before the first record is sent; the producers then stamp each value's first
//! 8 bytes with its intended send time (µs since one `Instant` of this process, so both ends
//! read the same monotonic clock), and each consumer counts now − stamp per record received.
//! Throughput here is what the consumers received in the window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::args::BenchConfig;
use super::consume::{self, ConsumeError, Reading};
use super::produce::{self, Plan, ProduceError, ProduceOutcome};
use super::tally::Tally;

/// How long the consumers keep reading after the producers are done, for records still in
/// flight: past it, what has not arrived is reported as missing.
const DRAIN_S: f64 = 10.0;

/// Why an e2e run failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The consumer task panicked or was cancelled (a bug in the bench).
    #[error("the consumer side ended abnormally: {0}")]
    Task(String),
}

/// What an e2e run measured: the consumers' tally (send → receive) and the producers'.
#[derive(Debug)]
pub struct E2eOutcome {
    pub received: Tally,
    pub produced: ProduceOutcome,
}

/// Runs consumers from the end and producers with stamped values; `progress` counts the
/// producers' measured acknowledgements.
pub async fn run(
    cfg: &BenchConfig,
    partitions: i32,
    progress: Arc<AtomicU64>,
) -> Result<E2eOutcome, E2eError> {
    let base = Instant::now();
    let consumers = consume::connect(cfg, partitions, false).await?;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let plan = Plan::of(cfg, Some(base));
    let reading = Reading::Stamped {
        base,
        expected: expected.clone(),
        drain_s: DRAIN_S,
    };
    let topic = cfg.topic.clone();
    let unused = Arc::new(AtomicU64::new(0));
    let consuming = tokio::spawn(async move {
        consume::run(consumers, &topic, reading, plan.warmup_end, unused).await
    });
    let produced = produce::run(cfg, plan, progress).await;
    // Tell the consumers how many to wait for even if producing failed, so they stop.
    let acked = produced.as_ref().map_or(0, |p| p.acked_total);
    expected.store(acked, Ordering::Release);
    let received = consuming
        .await
        .map_err(|e| E2eError::Task(e.to_string()))??;
    Ok(E2eOutcome {
        received,
        produced: produced?,
    })
}
