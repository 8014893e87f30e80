//! Issue 3's "figures to measure", each next to the machine limit measured in the same run.
//!
//! ```sh
//! cargo bench -p railyard-tests --bench cluster                 # 3 runs, medians
//! cargo bench -p railyard-tests --bench cluster -- --runs 1 --catchup-mib 256 --only produce,latency
//! ```
//!
//! Every run starts a fresh 3-node cluster **inside this process** (the `InProcessCluster` of
//! `railyard_tests`, real TOML configs, loopback TCP, `FileDisk` with fdatasync, data in a temp
//! dir) with one topic of 1 partition at RF=3, and a librdkafka producer with `acks=all`,
//! `linger.ms=5`, `batch.size=1000000` and 1 KiB records:
//!
//! 1. **produce**: unpaced production for `--produce-secs` after `--warmup-secs`; acknowledged
//!    payload MB/s (10^6 B) and records/s. Limit: `FileDisk::fsync_probe` (write + fdatasync
//!    appends in a temp dir on the same filesystem) at the producer's average batch size (from
//!    librdkafka statistics), divided by 3 replicas sharing the disk.
//! 2. **latency**: records paced at 10% of (1)'s records/s, each carrying its send time; a
//!    consumer (by assign) on another thread measures send → receive. p50/p99/p99.9 next to
//!    the fdatasync p99 at that phase's average batch size.
//! 3. **catchup**: the partition is topped up to `--catchup-mib` MiB of payload, then read from
//!    offset 0 by a fresh consumer. Limit: one loopback TCP stream (std sockets, 1 MiB writes).
//!    The same pass runs again with `enable.idempotence=true` (InitProducerId, sequence
//!    numbers screened by the partition's producer table): `idem_vs_plain` is the ratio.
//! 4. **idle**: a child process (this binary, `--idle-child`) starts its own 3-node cluster with
//!    one topic of `--idle-partitions` partitions at RF=3, waits until every partition has an
//!    agreed leader, then idles `--idle-secs`: CPU% of one core (utime+stime from
//!    /proc/self/stat) and VmRSS. A second child adds `__consumer_offsets` with
//!    `--idle-offsets` partitions (Kafka's 50 by default): `idle_offsets_*` is what they cost.
//!
//! 5. **rebalance**: a 3-member consumer group (librdkafka, 6 partitions) on a cluster with
//!    `__consumer_offsets`; a fourth member joins and then leaves, 10 times each, eager
//!    (range) and cooperative-sticky: the median time from the subscribe (or close) until
//!    every member holds a disjoint share of all partitions. Limit: the rebalance protocol's
//!    own round trips (JoinGroup, SyncGroup) are sub-millisecond on loopback; the time is the
//!    clients' heartbeat interval (set to 100 ms here) plus the coordinator's waits.
//!
//! Per-thread CPU time (from /proc/self/task) during produce and idle says where time goes.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use railyard_node::bench::limits;
use railyard_node::bench::report::median;
use railyard_node::broker::Broker;
use railyard_node::config::TopicConfig;
use railyard_node::file_disk::{FileDisk, ProbeResult};
use railyard_tests::{profiles, topic, Disks, InProcessCluster, Spec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

const TOPIC: &str = "bench";
const RECORD_BYTES: usize = 1024;
/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 on every mainstream Linux).
const CLK_TCK: f64 = 100.0;

#[derive(Clone, Debug)]
struct Opts {
    runs: usize,
    warmup_secs: f64,
    produce_secs: f64,
    latency_secs: f64,
    catchup_mib: u64,
    idle_secs: f64,
    idle_partitions: u32,
    /// `__consumer_offsets` partitions of the idle child (0: none).
    idle_offsets: u32,
    only: Vec<String>,
    idle_child: bool,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            warmup_secs: 3.0,
            produce_secs: 15.0,
            latency_secs: 10.0,
            catchup_mib: 1024,
            idle_secs: 30.0,
            idle_partitions: 1000,
            idle_offsets: 0,
            only: Vec::new(),
            idle_child: false,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            let mut val = || {
                i += 1;
                args.get(i)
                    .unwrap_or_else(|| panic!("{a} needs a value"))
                    .clone()
            };
            match a {
                "--runs" => o.runs = val().parse().expect("--runs N"),
                "--warmup-secs" => o.warmup_secs = val().parse().expect("--warmup-secs S"),
                "--produce-secs" => o.produce_secs = val().parse().expect("--produce-secs S"),
                "--latency-secs" => o.latency_secs = val().parse().expect("--latency-secs S"),
                "--catchup-mib" => o.catchup_mib = val().parse().expect("--catchup-mib N"),
                "--idle-secs" => o.idle_secs = val().parse().expect("--idle-secs S"),
                "--idle-partitions" => {
                    o.idle_partitions = val().parse().expect("--idle-partitions N")
                }
                "--idle-offsets" => o.idle_offsets = val().parse().expect("--idle-offsets N"),
                "--only" => o.only = val().split(',').map(str::to_string).collect(),
                "--idle-child" => o.idle_child = true,
                // `cargo bench` passes `--bench`; filters are not used.
                _ => {}
            }
            i += 1;
        }
        o
    }

    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// The instant every embedded timestamp is relative to (one process, one monotonic clock).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    base().elapsed().as_micros() as u64
}

// ---------------------------------------------------------------------------------------------
// librdkafka producer with delivery counting and statistics.

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
    stats: Mutex<Option<Statistics>>,
}

struct Ctx(Arc<Counters>);

impl ClientContext for Ctx {
    fn stats(&self, statistics: Statistics) {
        *self.0.stats.lock().expect("stats lock") = Some(statistics);
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn producer(bootstrap: &str, idempotent: bool) -> (ThreadedProducer<Ctx>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let p = profiles::producer(bootstrap)
        .set("enable.idempotence", idempotent.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        // Bounded so that the flush after a timed phase is short.
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", "120000")
        .set("compression.type", "none")
        .set("statistics.interval.ms", "1000")
        .create_with_context(Ctx(counters.clone()))
        .expect("creating the producer");
    (p, counters)
}

/// Sends one record, waiting while librdkafka's queue is full.
fn send(p: &ThreadedProducer<Ctx>, payload: &[u8]) {
    let mut record = BaseRecord::<(), [u8], ()>::to(TOPIC).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => panic!("producing: {e}"),
        }
    }
}

/// Average produced batch size (bytes), average records per batch, and the produce round trip
/// p50/p99 (ms) of the broker that took the most requests, from the last statistics.
fn batch_stats(c: &Counters) -> (f64, f64, f64, f64) {
    let guard = c.stats.lock().expect("stats lock");
    let Some(s) = guard.as_ref() else {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    };
    let (size, cnt) = s
        .topics
        .get(TOPIC)
        .map(|t| (t.batchsize.avg as f64, t.batchcnt.avg as f64))
        .unwrap_or((f64::NAN, f64::NAN));
    let rtt = s
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .max_by_key(|b| b.tx)
        .and_then(|b| b.rtt.clone())
        .map(|w| (w.p50 as f64 / 1e3, w.p99 as f64 / 1e3))
        .unwrap_or((f64::NAN, f64::NAN));
    (size, cnt, rtt.0, rtt.1)
}

fn payload() -> Vec<u8> {
    (0..RECORD_BYTES).map(|i| (i % 251) as u8 + 1).collect()
}

// ---------------------------------------------------------------------------------------------
// Machine limits.

/// write+fdatasync of `block` bytes in a temp dir (same filesystem as the cluster's data), for
/// about `secs` seconds.
fn fsync_probe(block: usize, secs: f64) -> ProbeResult {
    limits::fsync_probe(&std::env::temp_dir(), block, secs).expect("fsync probe")
}

/// `streams` concurrent [`fsync_probe`]s of `iters` appends each, in separate directories (the
/// three replicas fsync at the same time): the summed MB/s and the worst p99 (us).
fn fsync_probe_concurrent(block: usize, iters: usize, streams: usize) -> (f64, f64) {
    let results: Vec<ProbeResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..streams)
            .map(|_| {
                s.spawn(move || {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let disk = FileDisk::open(dir.path().join("probe")).expect("probe disk");
                    disk.fsync_probe(block, iters).expect("fsync probe")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    (
        results.iter().map(|r| r.mb_per_s).sum(),
        results.iter().map(|r| r.p99_us).fold(0.0, f64::max),
    )
}

/// Rounds a batch size up to a 4 KiB multiple (what the page cache writes back anyway).
fn probe_block(batch: f64) -> usize {
    limits::probe_block_bytes(Some(batch))
}

/// One loopback TCP stream: MB/s of `bytes` pushed in 1 MiB writes and read in 1 MiB reads.
fn loopback_tcp(bytes: u64) -> f64 {
    limits::loopback_tcp_mb_s(bytes).expect("loopback TCP probe")
}

// ---------------------------------------------------------------------------------------------
// /proc.

/// utime + stime of this process, in clock ticks.
fn proc_cpu_ticks(stat: &str) -> u64 {
    // Fields after the parenthesized command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

fn self_cpu_ticks() -> u64 {
    proc_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat"))
}

/// A `/proc/self/status` field in KiB, as MiB.
fn status_mib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU ticks per thread name (threads of one name summed).
fn thread_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(p.join("stat")),
            std::fs::read_to_string(p.join("comm")),
        ) else {
            continue;
        };
        *out.entry(comm.trim().to_string()).or_insert(0) += proc_cpu_ticks(&stat);
    }
    out
}

/// The per-thread-name CPU% (of one core) between two [`thread_ticks`] snapshots, busiest first.
fn thread_report(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    secs: f64,
) -> String {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            let d = v.saturating_sub(*before.get(k).unwrap_or(&0));
            (k.clone(), d as f64 / CLK_TCK / secs * 100.0)
        })
        .filter(|(_, pct)| *pct >= 0.5)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.iter()
        .map(|(k, pct)| format!("{k} {pct:.0}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Results.

#[derive(Clone, Debug, Default)]
struct Run {
    values: BTreeMap<&'static str, f64>,
    notes: Vec<String>,
}

impl Run {
    fn set(&mut self, key: &'static str, v: f64) {
        self.values.insert(key, v);
    }
}

/// Rows of the final table: key, label, limit key (the figure it is compared against).
const ROWS: &[(&str, &str)] = &[
    ("produce_mb_s", "produce payload MB/s"),
    ("produce_rec_s", "produce records/s"),
    ("produce_batch_b", "  avg produce batch (bytes)"),
    ("produce_batch_recs", "  avg records per batch"),
    ("produce_rtt_p50_ms", "  produce RTT p50 ms (rdkafka)"),
    ("fsync_batch_mb_s", "  LIMIT write+fdatasync MB/s @batch"),
    ("ceiling_mb_s", "  LIMIT ceiling = that / 3"),
    ("produce_vs_ceiling", "  produce / ceiling"),
    ("fsync3_batch_mb_s", "  3 concurrent fdatasync streams MB/s"),
    ("produce_vs_fsync3", "  produce / (3-stream MB/s / 3)"),
    ("produce_idem_mb_s", "idempotent produce payload MB/s"),
    ("idem_vs_plain", "  idempotent / plain"),
    ("lat_rate_rec_s", "e2e latency phase records/s"),
    ("lat_p50_ms", "e2e p50 ms"),
    ("lat_p99_ms", "e2e p99 ms"),
    ("lat_p999_ms", "e2e p99.9 ms"),
    ("lat_max_ms", "e2e max ms"),
    ("lat_batch_b", "  avg batch in latency phase (bytes)"),
    ("fsync_lat_p50_ms", "  LIMIT fdatasync p50 ms @that batch"),
    ("fsync_lat_p99_ms", "  LIMIT fdatasync p99 ms @that batch"),
    ("fsync_big_p99_ms", "  fdatasync p99 ms @produce batch"),
    ("lat_p99_vs_fsync_p99", "  e2e p99 / fdatasync p99"),
    ("catchup_mib", "catch-up MiB read (payload)"),
    ("catchup_mb_s", "catch-up read payload MB/s"),
    ("tcp_mb_s", "  LIMIT loopback TCP MB/s (1 stream)"),
    ("catchup_vs_tcp", "  catch-up / TCP"),
    ("idle_elect_s", "idle: secs to all leaders"),
    ("idle_cpu_pct", "idle CPU % of one core"),
    ("idle_rss_mib", "idle RSS MiB"),
    ("idle_rss_base_mib", "  RSS before cluster start MiB"),
    ("idle_hwm_mib", "  peak RSS (VmHWM) MiB"),
    (
        "idle_offsets_cpu_pct",
        "idle + 50 __consumer_offsets: CPU %",
    ),
    ("idle_offsets_rss_mib", "  RSS MiB"),
    ("offsets_cpu_pct_added", "  CPU % added"),
    ("offsets_rss_mib_added", "  RSS MiB added"),
    (
        "rebalance_join_eager_ms",
        "rebalance, 4th member joins, eager ms",
    ),
    ("rebalance_leave_eager_ms", "  it leaves, eager ms"),
    ("rebalance_join_coop_ms", "  joins, cooperative-sticky ms"),
    ("rebalance_leave_coop_ms", "  leaves, cooperative-sticky ms"),
];

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn print_table(runs: &[Run]) {
    let mut header = format!("{:<40}", "figure");
    for i in 0..runs.len() {
        header += &format!(" {:>10}", format!("run {}", i + 1));
    }
    header += &format!(" {:>10}", "median");
    println!("\n{header}\n{}", "-".repeat(header.len()));
    for (key, label) in ROWS {
        let vals: Vec<f64> = runs
            .iter()
            .map(|r| r.values.get(key).copied().unwrap_or(f64::NAN))
            .collect();
        if vals.iter().all(|v| !v.is_finite()) {
            continue;
        }
        let mut line = format!("{label:<40}");
        for v in &vals {
            line += &format!(" {:>10}", fmt(*v));
        }
        line += &format!(" {:>10}", fmt(median(vals)));
        println!("{line}");
    }
    for (i, r) in runs.iter().enumerate() {
        for n in &r.notes {
            println!("run {}: {n}", i + 1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phases.

fn produce_phase(opts: &Opts, bootstrap: &str, run: &mut Run) {
    let (rate, recs, ticks, c) = unpaced(opts, bootstrap, false);
    let (batch, batch_recs, rtt50, _rtt99) = batch_stats(&c);
    let failed = c.failed.load(Ordering::Relaxed);
    run.set("produce_mb_s", rate);
    run.set("produce_rec_s", recs);
    run.set("produce_batch_b", batch);
    run.set("produce_batch_recs", batch_recs);
    run.set("produce_rtt_p50_ms", rtt50);
    run.notes.push(format!("produce CPU by thread: {ticks}"));
    if failed > 0 {
        run.notes
            .push(format!("produce: {failed} records NOT acknowledged"));
    }
    let (idem, _, _, ci) = unpaced(opts, bootstrap, true);
    run.set("produce_idem_mb_s", idem);
    run.set("idem_vs_plain", idem / rate);
    let failed = ci.failed.load(Ordering::Relaxed);
    if failed > 0 {
        run.notes.push(format!(
            "idempotent produce: {failed} records NOT acknowledged"
        ));
    }
    let probe = fsync_probe(probe_block(batch), 3.0);
    run.notes.push(format!("ceiling probe: {probe}"));
    run.set("fsync_batch_mb_s", probe.mb_per_s);
    run.set("ceiling_mb_s", probe.mb_per_s / 3.0);
    run.set("produce_vs_ceiling", rate / (probe.mb_per_s / 3.0));
    run.set("fsync_big_p99_ms", probe.p99_us / 1e3);
    let (par, _) = fsync_probe_concurrent(probe.block_bytes, (probe.iters / 2).max(20), 3);
    run.set("fsync3_batch_mb_s", par);
    run.set("produce_vs_fsync3", rate / (par / 3.0));
    eprintln!(
        "  produce: {rate:.1} MB/s, {recs:.0} rec/s, batch {batch:.0} B; idempotent {idem:.1} \
         MB/s; {probe}"
    );
}

/// Unpaced production for `--produce-secs` after the warm-up: (MB/s, records/s, CPU by
/// thread, the producer's counters once flushed).
fn unpaced(opts: &Opts, bootstrap: &str, idempotent: bool) -> (f64, f64, String, Arc<Counters>) {
    let (p, c) = producer(bootstrap, idempotent);
    let stop = AtomicBool::new(false);
    let data = payload();
    let (rate, recs, ticks) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                send(&p, &data);
            }
        });
        std::thread::sleep(Duration::from_secs_f64(opts.warmup_secs));
        let (a0, t0, th0) = (
            c.acked.load(Ordering::Relaxed),
            Instant::now(),
            thread_ticks(),
        );
        std::thread::sleep(Duration::from_secs_f64(opts.produce_secs));
        let (a1, dt, th1) = (
            c.acked.load(Ordering::Relaxed),
            t0.elapsed().as_secs_f64(),
            thread_ticks(),
        );
        stop.store(true, Ordering::Relaxed);
        let recs = (a1 - a0) as f64 / dt;
        (
            recs * RECORD_BYTES as f64 / 1e6,
            recs,
            thread_report(&th0, &th1, dt),
        )
    });
    p.flush(Duration::from_secs(120)).expect("flushing");
    (rate, recs, ticks, c)
}

/// The bench partition's high watermark, and a list that assigns the partition from
/// `from(high)`.
fn start_at(consumer: &BaseConsumer, from: impl Fn(i64) -> i64) -> (i64, TopicPartitionList) {
    let (_, high) = consumer
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from(high)))
        .expect("tpl");
    (high, tpl)
}

fn latency_phase(opts: &Opts, bootstrap: &str, rate: f64, run: &mut Run) {
    let consumer: BaseConsumer = profiles::assign_consumer(bootstrap)
        .set("fetch.min.bytes", "1")
        .create()
        .expect("creating the consumer");
    let (_, tpl) = start_at(&consumer, |high| high);
    consumer.assign(&tpl).expect("assign");
    // Let the consumer connect and start long-polling before anything is sent.
    let _ = consumer.poll(Duration::from_millis(1000));

    let (p, c) = producer(bootstrap, false);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * opts.latency_secs) as u64;
    let warm_until = now_us() + 1_000_000;
    let producing = AtomicBool::new(true);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
    let mut received = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut data = payload();
            let start = Instant::now();
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                // The intended send time, so a late sender does not hide its lateness.
                let ts = due.duration_since(base()).as_micros() as u64;
                data[..8].copy_from_slice(&ts.to_le_bytes());
                send(&p, &data);
            }
            producing.store(false, Ordering::Relaxed);
        });
        let mut deadline = None;
        while received < total {
            if deadline.is_none() && !producing.load(Ordering::Relaxed) {
                deadline = Some(Instant::now() + Duration::from_secs(20));
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => panic!("consumer: {e}"),
                Some(Ok(m)) => {
                    let t = now_us();
                    let b = m.payload().expect("payload");
                    let ts = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                    received += 1;
                    if ts >= warm_until {
                        hist.record(t.saturating_sub(ts).max(1)).expect("record");
                    }
                }
            }
        }
    });
    p.flush(Duration::from_secs(30)).expect("flushing");
    let (batch, _, _, _) = batch_stats(&c);
    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1e3;
    run.set("lat_rate_rec_s", rate);
    run.set("lat_p50_ms", q(0.5));
    run.set("lat_p99_ms", q(0.99));
    run.set("lat_p999_ms", q(0.999));
    run.set("lat_max_ms", hist.max() as f64 / 1e3);
    run.set("lat_batch_b", batch);
    if received < total {
        run.notes.push(format!(
            "latency: only {received} of {total} records received"
        ));
    }
    let probe = fsync_probe(probe_block(batch), 3.0);
    run.notes.push(format!("latency probe: {probe}"));
    run.set("fsync_lat_p50_ms", probe.median_us / 1e3);
    run.set("fsync_lat_p99_ms", probe.p99_us / 1e3);
    run.set("lat_p99_vs_fsync_p99", q(0.99) / (probe.p99_us / 1e3));
    eprintln!(
        "  latency @{rate:.0} rec/s: p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms (n={}); {probe}",
        q(0.5),
        q(0.99),
        q(0.999),
        hist.len()
    );
}

fn catchup_phase(opts: &Opts, bootstrap: &str, run: &mut Run) {
    let probe: BaseConsumer = profiles::client(bootstrap).create().expect("consumer");
    let (_, high) = probe
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    drop(probe);
    let want = (opts.catchup_mib << 20) / RECORD_BYTES as u64;
    if (high as u64) < want {
        let (p, c) = producer(bootstrap, false);
        let data = payload();
        let t = Instant::now();
        for _ in high as u64..want {
            send(&p, &data);
        }
        p.flush(Duration::from_secs(300)).expect("flushing");
        let failed = c.failed.load(Ordering::Relaxed);
        eprintln!(
            "  catch-up: topped up {} records in {:.1}s ({failed} failed)",
            want - high as u64,
            t.elapsed().as_secs_f64()
        );
    }
    let consumer: BaseConsumer = profiles::assign_consumer(bootstrap)
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .expect("creating the consumer");
    let (high, tpl) = start_at(&consumer, |_| 0);
    let th0 = thread_ticks();
    let start = Instant::now();
    consumer.assign(&tpl).expect("assign");
    let (mut bytes, mut last) = (0u64, -1i64);
    let deadline = start + Duration::from_secs(600);
    while last + 1 < high && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => panic!("consumer: {e}"),
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, |b| b.len() as u64);
                last = m.offset();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mbs = bytes as f64 / secs / 1e6;
    run.notes.push(format!(
        "catch-up CPU by thread: {}",
        thread_report(&th0, &thread_ticks(), secs)
    ));
    if last + 1 < high {
        run.notes
            .push(format!("catch-up: read only to offset {last} of {high}"));
    }
    run.set("catchup_mib", bytes as f64 / (1 << 20) as f64);
    run.set("catchup_mb_s", mbs);
    let tcp = loopback_tcp(bytes.max(256 << 20));
    run.set("tcp_mb_s", tcp);
    run.set("catchup_vs_tcp", mbs / tcp);
    eprintln!(
        "  catch-up: {} MiB in {secs:.1}s = {mbs:.1} MB/s; loopback TCP {tcp:.0} MB/s",
        bytes >> 20
    );
}

/// Runs the idle measurement in a child process (so that RSS and CPU are the cluster's alone)
/// and parses its `IDLE ...` line.
fn idle_phase(opts: &Opts, run: &mut Run) {
    idle_child_run(opts, 0, "idle", run);
    idle_child_run(opts, GROUPS_IDLE_OFFSETS, "idle_offsets", run);
    let (cpu, rss) = ("idle_offsets_cpu_pct", "idle_offsets_rss_mib");
    if let (Some(a), Some(b)) = (run.values.get(cpu), run.values.get("idle_cpu_pct")) {
        let d = a - b;
        run.set("offsets_cpu_pct_added", d);
    }
    if let (Some(a), Some(b)) = (run.values.get(rss), run.values.get("idle_rss_mib")) {
        let d = a - b;
        run.set("offsets_rss_mib_added", d);
    }
}

/// The table key of an idle child's figure `k`, under `prefix`.
fn idle_key(prefix: &str, k: &str) -> Option<&'static str> {
    Some(match (prefix, k) {
        ("idle", "elect_s") => "idle_elect_s",
        ("idle", "cpu_pct") => "idle_cpu_pct",
        ("idle", "rss_mib") => "idle_rss_mib",
        ("idle", "rss_base_mib") => "idle_rss_base_mib",
        ("idle", "hwm_mib") => "idle_hwm_mib",
        ("idle_offsets", "elect_s") => "idle_offsets_elect_s",
        ("idle_offsets", "cpu_pct") => "idle_offsets_cpu_pct",
        ("idle_offsets", "rss_mib") => "idle_offsets_rss_mib",
        _ => return None,
    })
}

/// `__consumer_offsets` partitions in the second idle child (Kafka's default).
const GROUPS_IDLE_OFFSETS: u32 = 50;

fn idle_child_run(opts: &Opts, offsets: u32, prefix: &str, run: &mut Run) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "--idle-child",
            "--idle-secs",
            &opts.idle_secs.to_string(),
            "--idle-partitions",
            &opts.idle_partitions.to_string(),
            "--idle-offsets",
            &offsets.to_string(),
        ])
        .output()
        .expect("running the idle child");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("IDLE ")) else {
        run.notes.push(format!(
            "idle child failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    };
    for kv in line["IDLE ".len()..].split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            let Some(key) = idle_key(prefix, k) else {
                continue;
            };
            run.set(key, v.parse().unwrap_or(f64::NAN));
        }
    }
    if let Some(t) = text.lines().find(|l| l.starts_with("THREADS ")) {
        run.notes
            .push(format!("idle CPU by thread: {}", &t["THREADS ".len()..]));
    }
    eprintln!("  {line}");
}

fn idle_child(opts: &Opts) {
    let rss_base = status_mib("VmRSS:");
    let started = Instant::now();
    let (rt, cluster) = start_cluster(
        vec![topic("idle", opts.idle_partitions, 3)],
        opts.idle_offsets,
    );
    let elect = started.elapsed().as_secs_f64();
    let (c0, t0, th0) = (self_cpu_ticks(), Instant::now(), thread_ticks());
    std::thread::sleep(Duration::from_secs_f64(opts.idle_secs));
    let (c1, dt, th1) = (self_cpu_ticks(), t0.elapsed().as_secs_f64(), thread_ticks());
    let cpu = (c1 - c0) as f64 / CLK_TCK / dt * 100.0;
    println!(
        "IDLE elect_s={elect:.2} cpu_pct={cpu:.2} rss_mib={:.1} rss_base_mib={rss_base:.1} \
         hwm_mib={:.1}",
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );
    println!("THREADS {}", thread_report(&th0, &th1, dt));
    drop(cluster);
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// A fresh runtime and a cluster on it. `free_addr` ports are released before the nodes bind
/// them, so another socket (e.g. an outbound connection of the previous cluster) can take one
/// meanwhile; then the start panics and is retried with new ports on a new runtime.
fn start_cluster(
    topics: Vec<TopicConfig>,
    offsets: u32,
) -> (tokio::runtime::Runtime, InProcessCluster) {
    for attempt in 1.. {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let t = topics.clone();
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut spec = Spec::new(3, t);
            spec.offsets_partitions = offsets;
            let cluster = rt.block_on(InProcessCluster::start_spec(&spec, Disks::Files));
            rt.block_on(cluster.wait_for_leaders(Duration::from_secs(600)));
            cluster
        }));
        match started {
            Ok(cluster) => return (rt, cluster),
            Err(_) if attempt < 5 => {
                eprintln!("  cluster start failed (attempt {attempt}); retrying on new ports");
                rt.shutdown_timeout(Duration::from_secs(2));
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!()
}

/// The bench partition's leader and epoch as node 1 publishes them.
fn leadership(cluster: &InProcessCluster) -> Option<(u64, i32)> {
    let view = cluster.nodes[0].handle.cluster();
    let p = view.topic(TOPIC)?.partitions.first()?.clone();
    Some((p.leader?, p.leader_epoch))
}

/// One run: a fresh cluster for produce, latency and catch-up, then the idle child.
fn one_run(opts: &Opts) -> Run {
    let mut run = Run::default();
    if opts.wants("produce") || opts.wants("latency") || opts.wants("catchup") {
        let (rt, cluster) = start_cluster(vec![topic(TOPIC, 1, 3)], 0);
        let bootstrap = cluster.bootstrap();
        if opts.wants("produce") || opts.wants("latency") {
            produce_phase(opts, &bootstrap, &mut run);
        }
        if opts.wants("latency") {
            let rate = run.values["produce_rec_s"] * 0.1;
            let before = leadership(&cluster);
            let slow = |c: &InProcessCluster| -> Vec<u64> {
                c.nodes
                    .iter()
                    .map(|n| n.metrics.fsyncs_slower_than(Duration::from_millis(50)))
                    .collect()
            };
            let slow_before = slow(&cluster);
            latency_phase(opts, &bootstrap, rate.max(10.0), &mut run);
            // A leadership change or a disk stall inside the phase shows in the tail; say so
            // next to the figures.
            let slow_during: Vec<u64> = slow(&cluster)
                .iter()
                .zip(&slow_before)
                .map(|(a, b)| a - b)
                .collect();
            run.notes.push(format!(
                "latency phase: leader (node, epoch) before/after {before:?} / {:?}; fsyncs over \
                 50 ms per node {slow_during:?}",
                leadership(&cluster)
            ));
        }
        if opts.wants("catchup") {
            catchup_phase(opts, &bootstrap, &mut run);
        }
        drop(cluster);
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    if opts.wants("rebalance") {
        let (rt, cluster) = start_cluster(vec![topic(GROUP_TOPIC, 6, 3)], 5);
        rebalance_phase(&cluster.bootstrap(), &mut run);
        drop(cluster);
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    if opts.wants("idle") {
        idle_phase(opts, &mut run);
    }
    run
}

const GROUP_TOPIC: &str = "grouped";
const REBALANCES: usize = 10;

fn group_member(bootstrap: &str, group: &str, strategy: &str) -> BaseConsumer {
    let c: BaseConsumer = profiles::client(bootstrap)
        .set("group.id", group)
        .set("partition.assignment.strategy", strategy)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "100")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a group member");
    c.subscribe(&[GROUP_TOPIC]).expect("subscribe");
    c
}

/// Polls the members until they hold a disjoint share of all 6 partitions, each a non-empty
/// one; returns how long that took.
fn settle(members: &[&BaseConsumer]) -> Duration {
    let start = Instant::now();
    loop {
        for m in members {
            let _ = m.poll(Duration::from_millis(5));
        }
        let sets: Vec<Vec<i32>> = members
            .iter()
            .map(|m| {
                m.assignment()
                    .map(|l| l.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut all: Vec<i32> = sets.iter().flatten().copied().collect();
        all.sort_unstable();
        if sets.iter().all(|s| !s.is_empty()) && all == (0..6).collect::<Vec<_>>() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no stable group: {sets:?}"
        );
    }
}

fn rebalance_phase(bootstrap: &str, run: &mut Run) {
    for (strategy, join_key, leave_key) in [
        (
            "range",
            "rebalance_join_eager_ms",
            "rebalance_leave_eager_ms",
        ),
        (
            "cooperative-sticky",
            "rebalance_join_coop_ms",
            "rebalance_leave_coop_ms",
        ),
    ] {
        let group = format!("bench-{strategy}");
        let base: Vec<BaseConsumer> = (0..3)
            .map(|_| group_member(bootstrap, &group, strategy))
            .collect();
        let refs: Vec<&BaseConsumer> = base.iter().collect();
        settle(&refs);
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for _ in 0..REBALANCES {
            let extra = group_member(bootstrap, &group, strategy);
            let mut all = refs.clone();
            all.push(&extra);
            joins.push(settle(&all).as_secs_f64() * 1e3);
            drop(all);
            let t = Instant::now();
            drop(extra); // close: LeaveGroup
            settle(&refs);
            leaves.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (j, l) = (median(joins), median(leaves));
        run.set(join_key, j);
        run.set(leave_key, l);
        eprintln!(
            "  rebalance {strategy}: join {j:.0} ms, leave {l:.0} ms (medians of {REBALANCES})"
        );
    }
}

fn main() {
    let opts = Opts::parse();
    base();
    if opts.idle_child {
        idle_child(&opts);
        return;
    }
    eprintln!(
        "railyard cluster bench: in-process 3-node loopback cluster, 1 partition RF=3, acks=all, \
         fdatasync, {RECORD_BYTES} B records, linger.ms=5 batch.size=1000000; {opts:?}"
    );
    let mut runs = Vec::new();
    for i in 0..opts.runs {
        eprintln!("run {}/{}", i + 1, opts.runs);
        runs.push(one_run(&opts));
    }
    print_table(&runs);
}
