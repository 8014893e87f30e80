//! Issue 9's client figures: the project's Rust client (`railyard-client`) against librdkafka
//! (`rdkafka`) in the same run, on the cluster bench's setup, next to the machine's limits.
//!
//! ```sh
//! cargo bench -p railyard-tests --bench clients                      # 3 runs, medians
//! cargo bench -p railyard-tests --bench clients -- --runs 1 --produce-secs 3 --latency-secs 3
//! ```
//!
//! Each run starts a fresh in-process 3-node cluster (`InProcessCluster`, `FileDisk` with
//! fdatasync, loopback TCP) with one topic of 1 partition at RF=3, then measures each figure
//! for both clients, one after the other (the order alternates between runs so neither always
//! goes first):
//!
//! 1. **produce 100 B / 1 KiB**: one unpaced producer for `--produce-secs` after
//!    `--warmup-secs`; acknowledged payload MB/s (10^6 B).
//! 2. **consume**: one consumer by assign reads the partition from offset 0 to its end (what
//!    the produce phases wrote); payload MB/s.
//! 3. **e2e at 10% load**: records paced at 10% of the run's 1 KiB rdkafka records/s (the same
//!    rate for both), stamped with their intended send time; a consumer in this process
//!    measures send → receive; p50 and p99.
//!
//! Both sides use the same settings: acks=all, **idempotence off** (librdkafka's default, and
//! the cluster bench's), linger 5 ms, batches of `--batch-bytes` (16 KiB, the Java default),
//! at most 5 produce requests in flight per broker, a 32 MiB producer buffer, no compression;
//! fetches of at most 50 MiB, 1 MiB per partition, waiting up to 500 ms for 1 byte. The Rust
//! side is `railyard_node::bench` itself (the code behind `railyard bench`); only the rdkafka
//! side is written here.
//!
//! Ratios are rust / rdkafka for throughput and rdkafka / rust for latency, so > 1 always
//! means the Rust client did better.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_node::bench::consume::{self, Reading};
use railyard_node::bench::produce::{self, Plan};
use railyard_node::bench::report::{median, LatencyMs, Measured};
use railyard_node::bench::tally::latency_histogram;
use railyard_node::bench::{e2e, measure_limits, BenchConfig, Mode};
use railyard_tests::{profiles, topic, Disks, InProcessCluster, Spec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

const TOPIC: &str = "clients";
/// Produce requests in flight per broker, both clients (the Rust client's default).
const IN_FLIGHT_MAX: &str = "5";
/// How long a consume pass may take before it is cut short.
const CONSUME_S_MAX: u64 = 120;

#[derive(Clone, Debug)]
struct Opts {
    runs: usize,
    warmup_secs: f64,
    produce_secs: f64,
    latency_secs: f64,
    batch_bytes: usize,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            runs: 3,
            warmup_secs: 2.0,
            produce_secs: 10.0,
            latency_secs: 10.0,
            batch_bytes: 16 * 1024,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.windows(2) {
            let v = &pair[1];
            let num = || {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{} {v}", pair[0]))
            };
            match pair[0].as_str() {
                "--runs" => o.runs = num() as usize,
                "--warmup-secs" => o.warmup_secs = num(),
                "--produce-secs" => o.produce_secs = num(),
                "--latency-secs" => o.latency_secs = num(),
                "--batch-bytes" => o.batch_bytes = num() as usize,
                _ => {}
            }
        }
        o
    }
}

/// One figure of one client in one run.
type Figures = BTreeMap<&'static str, f64>;

// ---------------------------------------------------------------------------------------------
// The Rust client: railyard_node::bench.

fn rust_config(opts: &Opts, bootstrap: &str, mode: Mode, record_bytes: usize) -> BenchConfig {
    let mut c = BenchConfig::defaults(mode, bootstrap);
    c.topic = TOPIC.into();
    c.record_size_bytes = record_bytes;
    c.idempotence = false;
    c.linger_ms = 5;
    c.batch_size_bytes = opts.batch_bytes;
    c.warmup_s = opts.warmup_secs;
    c.duration_s = Some(opts.produce_secs);
    c
}

/// Unpaced production: (payload MB/s, records/s, average batch bytes).
fn rust_produce(rt: &tokio::runtime::Runtime, cfg: &BenchConfig) -> (f64, f64, Option<f64>) {
    let out = rt
        .block_on(produce::run(cfg, Plan::of(cfg, None), Arc::default()))
        .expect("rust produce");
    let w = out.tally.window_s();
    (
        out.tally.bytes as f64 / w / 1e6,
        out.tally.records as f64 / w,
        out.batches.avg_batch_bytes(),
    )
}

/// The whole partition from offset 0: payload MB/s.
fn rust_consume(rt: &tokio::runtime::Runtime, cfg: &BenchConfig) -> f64 {
    rt.block_on(async {
        let (ends, _) = consume::end_offsets(cfg).await.expect("end offsets");
        let consumers = consume::connect(cfg, 1, true).await.expect("consumer");
        let start = Instant::now();
        let reading = Reading::FromStart {
            ends,
            records: None,
            stop_at: Some(start + Duration::from_secs(CONSUME_S_MAX)),
        };
        let t = consume::run(consumers, TOPIC, reading, start, Arc::default())
            .await
            .expect("rust consume");
        t.bytes as f64 / t.window_s() / 1e6
    })
}

fn rust_e2e(rt: &tokio::runtime::Runtime, cfg: &BenchConfig) -> LatencyMs {
    let out = rt
        .block_on(e2e::run(cfg, 1, Arc::default()))
        .expect("rust e2e");
    LatencyMs::of(&out.received.latency_us).expect("e2e records received")
}

// ---------------------------------------------------------------------------------------------
// librdkafka with the same settings.

#[derive(Default)]
struct Acked(AtomicU64);

struct Ctx(Arc<Acked>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_ok() {
            self.0 .0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn rd_producer(opts: &Opts, bootstrap: &str) -> (ThreadedProducer<Ctx>, Arc<Acked>) {
    let acked = Arc::new(Acked::default());
    let p = profiles::producer(bootstrap)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("batch.size", opts.batch_bytes.to_string())
        .set("max.in.flight.requests.per.connection", IN_FLIGHT_MAX)
        .set("queue.buffering.max.kbytes", "32768")
        .set("queue.buffering.max.messages", "10000000")
        .set("compression.type", "none")
        .set("message.timeout.ms", "120000")
        .create_with_context(Ctx(acked.clone()))
        .expect("creating the rdkafka producer");
    (p, acked)
}

/// Enqueues one record, waiting while librdkafka's queue is full.
fn rd_send(p: &ThreadedProducer<Ctx>, payload: &[u8]) {
    let mut record = BaseRecord::<(), [u8], ()>::to(TOPIC).payload(payload);
    while let Err((e, r)) = p.send(record) {
        assert!(
            matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            ),
            "rdkafka produce: {e}"
        );
        record = r;
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// Unpaced production: (payload MB/s, records/s), counting acknowledgements in the window.
fn rd_produce(opts: &Opts, bootstrap: &str, record_bytes: usize) -> (f64, f64) {
    let (p, acked) = rd_producer(opts, bootstrap);
    let data = produce::payload(record_bytes);
    let stop = AtomicBool::new(false);
    let recs = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                rd_send(&p, &data);
            }
        });
        std::thread::sleep(Duration::from_secs_f64(opts.warmup_secs));
        let (a0, t0) = (acked.0.load(Ordering::Relaxed), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(opts.produce_secs));
        let a1 = acked.0.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        (a1 - a0) as f64 / t0.elapsed().as_secs_f64()
    });
    p.flush(Duration::from_secs(120)).expect("rdkafka flush");
    (recs * record_bytes as f64 / 1e6, recs)
}

fn rd_consumer(bootstrap: &str) -> BaseConsumer {
    profiles::assign_consumer(bootstrap)
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "1048576")
        .set("fetch.wait.max.ms", "500")
        .set("fetch.min.bytes", "1")
        .create()
        .expect("creating the rdkafka consumer")
}

fn assign_at(c: &BaseConsumer, at: impl Fn(i64) -> i64) -> i64 {
    let (_, high) = c
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(at(high)))
        .expect("partition list");
    c.assign(&tpl).expect("assign");
    high
}

/// The whole partition from offset 0: payload MB/s.
fn rd_consume(bootstrap: &str) -> f64 {
    let c = rd_consumer(bootstrap);
    let start = Instant::now();
    let high = assign_at(&c, |_| 0);
    let (mut bytes, mut next) = (0u64, 0i64);
    let mut last = start;
    while next < high && start.elapsed() < Duration::from_secs(CONSUME_S_MAX) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, |b| b.len() as u64);
            next = m.offset() + 1;
            last = Instant::now();
        }
    }
    bytes as f64 / last.duration_since(start).as_secs_f64() / 1e6
}

/// Paced, stamped records; a consumer thread measures send → receive.
fn rd_e2e(opts: &Opts, bootstrap: &str, rate: f64) -> LatencyMs {
    let c = rd_consumer(bootstrap);
    assign_at(&c, |high| high);
    let _ = c.poll(Duration::from_millis(500));
    let (p, _) = rd_producer(opts, bootstrap);
    let base = Instant::now();
    let warm_until = base + Duration::from_secs_f64(opts.warmup_secs);
    let total = (rate * (opts.warmup_secs + opts.latency_secs)) as u64;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut hist = latency_histogram();
    std::thread::scope(|s| {
        s.spawn(|| {
            let data = produce::payload(1024);
            for i in 0..total {
                let due = base + gap.mul_f64(i as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                rd_send(&p, &produce::stamped(&data, base, due));
            }
            p.flush(Duration::from_secs(30)).expect("rdkafka flush");
        });
        let deadline = base + Duration::from_secs_f64(opts.warmup_secs + opts.latency_secs + 15.0);
        let mut got = 0u64;
        while got < total && Instant::now() < deadline {
            let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            let now = Instant::now();
            got += 1;
            let sent = m.payload().and_then(|v| produce::read_stamp(v, base));
            if let Some(sent) = sent.filter(|s| *s >= warm_until) {
                let us = now.saturating_duration_since(sent).as_micros() as u64;
                hist.saturating_record(us.max(1));
            }
        }
    });
    LatencyMs::of(&hist).expect("e2e records received")
}

// ---------------------------------------------------------------------------------------------
// Runs and the table.

/// One run: a fresh cluster, every figure for both clients (in `rust_first` order), limits.
fn one_run(opts: &Opts, rust_first: bool) -> (Figures, Figures, Figures) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let spec = Spec::new(3, vec![topic(TOPIC, 1, 3)]);
    let cluster = rt.block_on(InProcessCluster::start_spec(&spec, Disks::Files));
    rt.block_on(cluster.wait_for_leaders(Duration::from_secs(120)));
    let b = cluster.bootstrap();
    let (mut rust, mut rd, mut limits) = (Figures::new(), Figures::new(), Figures::new());
    let mut batch = None;
    for (bytes, key) in [(100, "produce_100b_mb_s"), (1024, "produce_1kib_mb_s")] {
        let cfg = rust_config(opts, &b, Mode::Produce, bytes);
        let mut go_rust = || {
            let (mb, recs, avg) = rust_produce(&rt, &cfg);
            rust.insert(key, mb);
            if bytes == 1024 {
                rust.insert("produce_1kib_rec_s", recs);
                batch = avg;
            }
        };
        let mut go_rd = || {
            let (mb, recs) = rd_produce(opts, &b, bytes);
            rd.insert(key, mb);
            if bytes == 1024 {
                rd.insert("produce_1kib_rec_s", recs);
            }
        };
        alternate(rust_first, &mut go_rust, &mut go_rd);
        eprintln!("  {key}: rust {:.2}, rdkafka {:.2}", rust[key], rd[key]);
    }
    let cfg = rust_config(opts, &b, Mode::Consume, 1024);
    alternate(
        rust_first,
        &mut || {
            rust.insert("consume_mb_s", rust_consume(&rt, &cfg));
        },
        &mut || {
            rd.insert("consume_mb_s", rd_consume(&b));
        },
    );
    eprintln!(
        "  consume: rust {:.1}, rdkafka {:.1}",
        rust["consume_mb_s"], rd["consume_mb_s"]
    );
    let rate = (rd["produce_1kib_rec_s"] * 0.1).max(10.0);
    let mut cfg = rust_config(opts, &b, Mode::E2e, 1024);
    (cfg.rate_rec_s, cfg.duration_s) = (rate, Some(opts.latency_secs));
    let (mut lr, mut ld) = (None, None);
    alternate(
        rust_first,
        &mut || lr = Some(rust_e2e(&rt, &cfg)),
        &mut || ld = Some(rd_e2e(opts, &b, rate)),
    );
    for (f, l) in [(&mut rust, lr), (&mut rd, ld)] {
        let l = l.expect("both e2e passes ran");
        f.insert("e2e_p50_ms", l.p50);
        f.insert("e2e_p99_ms", l.p99);
    }
    limits.insert("e2e_rate_rec_s", rate);
    let m: Measured = measure_limits(&std::env::temp_dir(), batch, 3).expect("limits");
    limits.insert("fsync_block_b", m.fsync.block_bytes as f64);
    limits.insert("fsync_mb_s", m.fsync.mb_per_s);
    limits.insert("ceiling_mb_s", m.fsync.mb_per_s / 3.0);
    limits.insert("fsync_p99_ms", m.fsync.p99_us / 1e3);
    limits.insert("tcp_mb_s", m.tcp_mb_s);
    eprintln!(
        "  e2e @ {rate:.0} rec/s: rust {lr:?}\n    rdkafka {ld:?}\n  limits: {}",
        m.fsync
    );
    drop(cluster);
    rt.shutdown_timeout(Duration::from_secs(2));
    (rust, rd, limits)
}

fn alternate(rust_first: bool, rust: &mut dyn FnMut(), rd: &mut dyn FnMut()) {
    if rust_first {
        rust();
        rd();
    } else {
        rd();
        rust();
    }
}

fn med(runs: &[Figures], key: &str) -> f64 {
    median(runs.iter().filter_map(|f| f.get(key).copied()).collect())
}

/// (key, label, higher is better).
const ROWS: &[(&str, &str, bool)] = &[
    ("produce_100b_mb_s", "produce 100 B, payload MB/s", true),
    ("produce_1kib_mb_s", "produce 1 KiB, payload MB/s", true),
    ("produce_1kib_rec_s", "produce 1 KiB, records/s", true),
    ("consume_mb_s", "consume from offset 0, payload MB/s", true),
    ("e2e_p50_ms", "e2e p50 ms at 10% load", false),
    ("e2e_p99_ms", "e2e p99 ms at 10% load", false),
];

fn print_table(rust: &[Figures], rd: &[Figures], limits: &[Figures]) {
    println!(
        "\n{:<38} {:>12} {:>12} {:>8}   (medians of {} runs; ratio > 1: Rust client better)",
        "figure",
        "rust",
        "rdkafka",
        "ratio",
        rust.len()
    );
    for (key, label, higher) in ROWS {
        let (r, d) = (med(rust, key), med(rd, key));
        let ratio = if *higher { r / d } else { d / r };
        println!("{label:<38} {r:>12.3} {d:>12.3} {ratio:>8.2}");
    }
    println!("limits (same runs):");
    for (key, label) in [
        ("e2e_rate_rec_s", "e2e rate (10% of rdkafka 1 KiB rec/s)"),
        ("fsync_block_b", "fsync probe block (Rust 1 KiB avg batch)"),
        ("fsync_mb_s", "write+fdatasync MB/s @ block"),
        ("ceiling_mb_s", "  / 3 replicas sharing the disk"),
        ("fsync_p99_ms", "fdatasync p99 ms @ block"),
        ("tcp_mb_s", "loopback TCP MB/s (1 stream)"),
    ] {
        println!("{label:<44} {:>12.3}", med(limits, key));
    }
    let ceiling = med(limits, "ceiling_mb_s");
    println!(
        "produce 1 KiB / ceiling: rust {:.2}, rdkafka {:.2}; consume / TCP: rust {:.2}, rdkafka {:.2}",
        med(rust, "produce_1kib_mb_s") / ceiling,
        med(rd, "produce_1kib_mb_s") / ceiling,
        med(rust, "consume_mb_s") / med(limits, "tcp_mb_s"),
        med(rd, "consume_mb_s") / med(limits, "tcp_mb_s"),
    );
}

fn main() {
    let opts = Opts::parse();
    eprintln!(
        "railyard clients bench: in-process 3-node cluster, 1 partition RF=3, fdatasync; acks=all, \
         idempotence off, linger 5 ms, batch {} B, 5 in flight, both clients; {opts:?}",
        opts.batch_bytes
    );
    let (mut rust, mut rd, mut limits) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..opts.runs {
        let rust_first = i % 2 == 0;
        eprintln!(
            "run {}/{} ({} first)",
            i + 1,
            opts.runs,
            if rust_first { "rust" } else { "rdkafka" }
        );
        let (a, b, c) = one_run(&opts, rust_first);
        rust.push(a);
        rd.push(b);
        limits.push(c);
    }
    print_table(&rust, &rd, &limits);
}
