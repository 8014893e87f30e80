//! The consuming side: `--consumers` clients share the topic's partitions (by `assign`, round
//! robin, no group) and read them, each on its own task.
//!
//! Two uses: `railyard bench consume` reads the topic from its start up to the end offsets
//! seen when it began (topping the topic up first if `--records` asks for more than it
//! holds), and `railyard bench e2e` reads from the end while the producers run, turning each
//! record's stamp into a send → receive latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_client::{Admin, Consumer, ConsumerConfig, OffsetReset, TopicPartition};

use super::args::BenchConfig;
use super::produce::{client_config, read_stamp};
use super::tally::Tally;

/// How long one `poll` waits before the loop checks whether it should stop.
const POLL_MS: u64 = 100;

/// Why consuming failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// No broker of the bootstrap list answered.
    #[error("cannot reach the brokers {brokers}: {source}")]
    Connect {
        brokers: String,
        source: railyard_client::Error,
    },
    /// Assigning, seeking or reading failed.
    #[error("reading {topic}: {source}")]
    Read {
        topic: String,
        source: railyard_client::Error,
    },
    /// A consumer task panicked or was cancelled (a bug in the bench).
    #[error("a consumer task ended abnormally: {0}")]
    Task(String),
}

/// Where the consumers start and when they stop.
#[derive(Clone, Debug)]
pub enum Reading {
    /// From offset 0 to these end offsets, at most `records` in all, until `stop_at`.
    FromStart {
        ends: BTreeMap<TopicPartition, i64>,
        records: Option<u64>,
        stop_at: Option<Instant>,
    },
    /// From the end, measuring stamps against `base`; records stamped before `window_start`
    /// are not counted. Stops once `expected` (set when the producers are done) records have
    /// arrived, or `drain_s` after that.
    Stamped {
        base: Instant,
        expected: Arc<AtomicU64>,
        drain_s: f64,
    },
}

/// Every consumer, connected and assigned its share of the partitions.
pub async fn connect(
    cfg: &BenchConfig,
    partitions: i32,
    from_start: bool,
) -> Result<Vec<Consumer>, ConsumeError> {
    let parts: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(cfg.topic.as_str(), p))
        .collect();
    let count = cfg.consumers.min(parts.len()).max(1);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mine: Vec<TopicPartition> = parts.iter().skip(i).step_by(count).cloned().collect();
        let mut config = ConsumerConfig::new(&cfg.brokers);
        config.client = client_config(&cfg.brokers);
        config.enable_auto_commit = false;
        config.auto_offset_reset = OffsetReset::Earliest;
        let mut c = Consumer::new(config)
            .await
            .map_err(|source| ConsumeError::Connect {
                brokers: cfg.brokers.clone(),
                source,
            })?;
        let read = |source| ConsumeError::Read {
            topic: cfg.topic.clone(),
            source,
        };
        c.assign(&mine).await.map_err(read)?;
        if from_start {
            c.seek_to_beginning(&mine).await.map_err(read)?;
        } else {
            c.seek_to_end(&mine).await.map_err(read)?;
        }
        out.push(c);
    }
    Ok(out)
}

/// The end offset of every partition of the topic, and their sum.
pub async fn end_offsets(
    cfg: &BenchConfig,
) -> Result<(BTreeMap<TopicPartition, i64>, u64), ConsumeError> {
    let admin = Admin::new(client_config(&cfg.brokers))
        .await
        .map_err(|source| ConsumeError::Connect {
            brokers: cfg.brokers.clone(),
            source,
        })?;
    let ends = admin
        .end_offsets(&cfg.topic)
        .await
        .map_err(|source| ConsumeError::Read {
            topic: cfg.topic.clone(),
            source,
        })?;
    let total = ends.values().map(|&o| o.max(0) as u64).sum();
    Ok((ends, total))
}

/// Runs every consumer on its own task until `reading` says stop; the merged tally.
pub async fn run(
    consumers: Vec<Consumer>,
    topic: &str,
    reading: Reading,
    window_start: Instant,
    progress: Arc<AtomicU64>,
) -> Result<Tally, ConsumeError> {
    let received = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|c| {
            let (reading, received, progress) =
                (reading.clone(), received.clone(), progress.clone());
            let topic = topic.to_string();
            tokio::spawn(read(c, topic, reading, window_start, received, progress))
        })
        .collect();
    let mut tally = Tally::new(window_start);
    for t in tasks {
        let one = t.await.map_err(|e| ConsumeError::Task(e.to_string()))??;
        tally.merge(&one);
    }
    Ok(tally)
}

/// One consumer's loop; `received` counts every record read by any consumer.
async fn read(
    mut c: Consumer,
    topic: String,
    reading: Reading,
    window_start: Instant,
    received: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
) -> Result<Tally, ConsumeError> {
    let mut tally = Tally::new(window_start);
    let mut done: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut drain_until = None;
    loop {
        if should_stop(&c, &reading, &done, &received, &mut drain_until) {
            break;
        }
        let records = c
            .poll(Duration::from_millis(POLL_MS))
            .await
            .map_err(|source| ConsumeError::Read {
                topic: topic.clone(),
                source,
            })?;
        let now = Instant::now();
        for r in records {
            let len = r.value.as_ref().map_or(0, |v| v.len());
            let seen = received.fetch_add(1, Ordering::Relaxed) + 1;
            done.insert(
                TopicPartition::new(r.topic.as_str(), r.partition),
                r.offset + 1,
            );
            match &reading {
                Reading::FromStart { records, .. } => {
                    if records.is_some_and(|n| seen > n) {
                        continue;
                    }
                    tally.record(now, len, None);
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Reading::Stamped { base, .. } => {
                    let Some(sent) = r.value.as_deref().and_then(|v| read_stamp(v, *base)) else {
                        continue;
                    };
                    if sent >= window_start {
                        tally.record(now, len, Some(now.saturating_duration_since(sent)));
                    }
                }
            }
        }
    }
    Ok(tally)
}

/// Whether this consumer is done: its partitions read to their ends, the count or the
/// deadline reached (from start); every expected record in, or the drain over (stamped).
fn should_stop(
    c: &Consumer,
    reading: &Reading,
    done: &BTreeMap<TopicPartition, i64>,
    received: &AtomicU64,
    drain_until: &mut Option<Instant>,
) -> bool {
    let seen = received.load(Ordering::Relaxed);
    match reading {
        Reading::FromStart {
            ends,
            records,
            stop_at,
        } => {
            let at_end = c.assignment().iter().all(|tp| {
                let end = ends.get(tp).copied().unwrap_or(0);
                end <= 0 || done.get(tp).is_some_and(|&o| o >= end)
            });
            at_end
                || records.is_some_and(|n| seen >= n)
                || stop_at.is_some_and(|s| Instant::now() >= s)
        }
        Reading::Stamped {
            expected, drain_s, ..
        } => {
            let want = expected.load(Ordering::Acquire);
            if want == u64::MAX {
                return false;
            }
            let until = *drain_until
                .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(*drain_s));
            seen >= want || Instant::now() >= until
        }
    }
}
