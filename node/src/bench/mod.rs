//! `railyard bench`: producer, consumer and end-to-end benchmarks on the project's own client
//! (`railyard-client`), in the spirit of the OpenMessaging Benchmark and
//! kafka-producer-perf-test, each figure printed next to the machine limit it is bounded by,
//! measured in the same run.
//!
//! - [`args`]: the flags and their validation (one-line errors, never a panic).
//! - [`produce`]: producers on a plan (unpaced or open loop), send → ack latency.
//! - [`consume`]: consumers by assign, from the start (consume) or the end (e2e).
//! - [`e2e`]: stamped records, send → receive latency.
//! - [`limits`]: write + fdatasync at the run's batch size, one loopback TCP stream.
//! - [`tally`], [`report`], [`svg`], [`progress`]: counting, the table/JSON report, the
//!   latency plot, the progress bar.
//!
//! [`run`] is the whole of one invocation after validation; `tests/benches/clients.rs` calls
//! the same pieces for the Rust-client side of its comparison with librdkafka.

pub mod args;
pub mod consume;
pub mod e2e;
pub mod limits;
pub mod produce;
pub mod progress;
pub mod report;
pub mod svg;
pub mod tally;

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_client::{Admin, NewTopic};

pub use args::{ArgsError, BenchArgs, BenchConfig, Format, Mode};
use consume::{ConsumeError, Reading};
use e2e::E2eError;
use limits::LimitsError;
use produce::{client_config, Plan, ProduceError};
use progress::{Goal, Progress};
use report::{Measured, Report};
use tally::Tally;

/// How long the fsync probe runs.
const FSYNC_PROBE_S: f64 = 1.0;
/// Bytes the TCP probe pushes through one loopback stream.
const TCP_PROBE_BYTES: u64 = 256 << 20;
/// How long a created topic may take to have a leader for every partition.
const LEADERS_WITHIN: Duration = Duration::from_secs(15);
/// The replication factor when none is given and the cluster has at least this many brokers.
const REPLICATION_FACTOR_DEFAULT: i16 = 3;

/// Why a run failed (the flags were valid).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No broker of the bootstrap list answered.
    #[error("cannot reach the brokers {brokers}: {source}")]
    Connect {
        brokers: String,
        source: railyard_client::Error,
    },
    /// The topic could not be described or created, or got no leaders.
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    /// consume without --records on an empty topic.
    #[error(
        "topic {0} is empty: run `railyard bench produce` first, or pass --records N to fill it"
    )]
    EmptyTopic(String),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error(transparent)]
    E2e(#[from] E2eError),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The SVG file could not be written.
    #[error("writing {path}: {source}")]
    Svg {
        path: String,
        source: std::io::Error,
    },
}

/// `railyard bench ...` from the binary: validates, runs, prints; exit 2 for a bad flag, 1
/// for a failed run, each with one line on stderr.
pub fn cli_main(args: &BenchArgs) -> ExitCode {
    let cfg = match args::validate(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("railyard bench: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("railyard bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cfg, cfg.format == Format::Table)) {
        Ok(report) => {
            match cfg.format {
                Format::Table => print!("{}", report.to_table()),
                Format::Json => println!("{}", report.to_json()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("railyard bench: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// One run of `cfg`: topic, load, limits, report (and the SVG file if asked).
pub async fn run(cfg: &BenchConfig, show_progress: bool) -> Result<Report, BenchError> {
    let (partitions, rf) = ensure_topic(cfg).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let goal = match (cfg.duration_s, cfg.records) {
        (Some(d), _) => Goal::Duration {
            warmup_s: if cfg.mode == Mode::Consume {
                0.0
            } else {
                cfg.warmup_s
            },
            duration_s: d,
        },
        (None, n) => Goal::Records(n.unwrap_or(0)),
    };
    let bar = Progress::start(show_progress, goal, counter.clone());
    let measured = measure(cfg, partitions, counter).await;
    bar.finish();
    let (tally, avg_batch, topped_up) = measured?;
    let dir = cfg.data_dir_probe.clone();
    let replicas_per_disk = cfg.replicas_per_disk.unwrap_or(rf.max(1) as u32);
    // The limits are the real machine's (fsync, loopback TCP): under madsim, whose tokio
    // deprecates blocking tasks, the bench has no machine to measure and is never run.
    #[cfg_attr(madsim, allow(deprecated))]
    let limits =
        tokio::task::spawn_blocking(move || measure_limits(&dir, avg_batch, replicas_per_disk))
            .await
            .map_err(|e| LimitsError::Tcp(std::io::Error::other(e.to_string())))??;
    let mut report = Report::new(cfg, rf, &tally, avg_batch, &limits);
    report.topped_up = topped_up;
    if let Some(path) = &cfg.svg {
        let title = format!(
            "railyard bench {:?}: {} latency per second",
            cfg.mode,
            report::latency_name(cfg.mode)
        );
        std::fs::write(path, svg::render(&title, &report.per_second)).map_err(|source| {
            BenchError::Svg {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    Ok(report)
}

/// The machine limits at a batch of `avg_batch` bytes.
pub fn measure_limits(
    dir: &std::path::Path,
    avg_batch: Option<f64>,
    replicas_per_disk: u32,
) -> Result<Measured, LimitsError> {
    let fsync = limits::fsync_probe(dir, limits::probe_block_bytes(avg_batch), FSYNC_PROBE_S)?;
    let tcp_mb_s = limits::loopback_tcp_mb_s(TCP_PROBE_BYTES)?;
    Ok(Measured {
        fsync,
        tcp_mb_s,
        replicas_per_disk,
    })
}

/// The mode's load: its tally, the producers' average batch, records topped up (consume).
async fn measure(
    cfg: &BenchConfig,
    partitions: i32,
    counter: Arc<AtomicU64>,
) -> Result<(Tally, Option<f64>, Option<u64>), BenchError> {
    match cfg.mode {
        Mode::Produce => {
            let out = produce::run(cfg, Plan::of(cfg, None), counter).await?;
            Ok((out.tally, out.batches.avg_batch_bytes(), None))
        }
        Mode::E2e => {
            let out = e2e::run(cfg, partitions, counter).await?;
            Ok((out.received, out.produced.batches.avg_batch_bytes(), None))
        }
        Mode::Consume => consume_mode(cfg, partitions, counter).await,
    }
}

/// Tops the topic up to `--records` if it holds fewer, then reads it from the start.
async fn consume_mode(
    cfg: &BenchConfig,
    partitions: i32,
    counter: Arc<AtomicU64>,
) -> Result<(Tally, Option<f64>, Option<u64>), BenchError> {
    let (_, total) = consume::end_offsets(cfg).await?;
    let mut topped_up = None;
    let mut avg_batch = None;
    match cfg.records {
        Some(want) if total < want => {
            let mut fill = cfg.clone();
            (
                fill.records,
                fill.duration_s,
                fill.warmup_s,
                fill.rate_rec_s,
            ) = (Some(want - total), None, 0.0, 0.0);
            let out =
                produce::run(&fill, Plan::of(&fill, None), Arc::new(AtomicU64::new(0))).await?;
            topped_up = Some(out.acked_total);
            avg_batch = out.batches.avg_batch_bytes();
        }
        None if total == 0 => return Err(BenchError::EmptyTopic(cfg.topic.clone())),
        _ => {}
    }
    let (ends, _) = consume::end_offsets(cfg).await?;
    let consumers = consume::connect(cfg, partitions, true).await?;
    let start = Instant::now();
    let reading = Reading::FromStart {
        ends,
        records: cfg.records,
        stop_at: cfg.duration_s.map(|d| start + Duration::from_secs_f64(d)),
    };
    let tally = consume::run(consumers, &cfg.topic, reading, start, counter).await?;
    Ok((tally, avg_batch, topped_up))
}

/// The topic's partitions and replication factor, creating it if missing.
async fn ensure_topic(cfg: &BenchConfig) -> Result<(i32, i16), BenchError> {
    let admin = Admin::new(client_config(&cfg.brokers))
        .await
        .map_err(|source| BenchError::Connect {
            brokers: cfg.brokers.clone(),
            source,
        })?;
    let topic_err = |reason: String| BenchError::Topic {
        topic: cfg.topic.clone(),
        reason,
    };
    if let Ok(meta) = admin.cluster().topic(&cfg.topic).await {
        let rf = meta.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
        return Ok((meta.partitions.len() as i32, rf));
    }
    let rf = match cfg.replication_factor {
        Some(rf) => rf,
        None => {
            let brokers = admin
                .describe_cluster()
                .await
                .map_err(|e| topic_err(e.to_string()))?
                .brokers
                .len();
            REPLICATION_FACTOR_DEFAULT.min(brokers.max(1) as i16)
        }
    };
    admin
        .create_topic(NewTopic::new(cfg.topic.as_str(), cfg.partitions, rf))
        .await
        .map_err(|e| topic_err(format!("creating it: {e}")))?;
    wait_for_leaders(&admin, cfg).await.map_err(topic_err)?;
    Ok((cfg.partitions, rf))
}

/// Waits until every partition of the new topic has a leader in the metadata.
async fn wait_for_leaders(admin: &Admin, cfg: &BenchConfig) -> Result<(), String> {
    let deadline = Instant::now() + LEADERS_WITHIN;
    loop {
        let meta = admin
            .cluster()
            .refresh_metadata()
            .await
            .map_err(|e| e.to_string())?;
        let led = meta
            .topic(&cfg.topic)
            .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()));
        if led {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no leader for every partition within {LEADERS_WITHIN:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An error message on one line (a nested error may carry newlines).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
