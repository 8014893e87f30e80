//! Partition reassignment with real `railyard start` processes: a fourth node joins a running
//! 3-node cluster, and `railyard partition reassign` moves a partition holding data (16 MiB
//! by default; `RAILYARD_MOVE_MIB` sets it) from nodes 1, 2, 3 to 4, 2, 3 while a producer
//! keeps writing to it with acks=all. Every acknowledged record is on the new replicas, in
//! order, the producer loses nothing, and node 1 deletes its copy once the move is done.
//! Balancing is turned off first, so that the move measured is the only one;
//! `RAILYARD_MOVE_RATE` sets the learner recovery rate (bytes per second, 0 unthrottled).
//!
//! The figures for the closing note are printed, not asserted (machines differ): the move time
//! next to single-stream loopback TCP measured in the same run, and the producer's p99
//! latency and failures during the move next to the same load without a move.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_node::bench::limits::loopback_tcp_mb_s;
use railyard_tests::cluster::process::{brokers, replicas};
use railyard_tests::profiles::{self, OnError};
use railyard_tests::{eventually, topic, ProcessCluster, Spec};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(60);
/// Bytes of one preloaded record.
const PRELOAD_RECORD_BYTES: usize = 16 * 1024;
/// The steady load's pace: one record this often, each awaited.
const LOAD_PERIOD: Duration = Duration::from_millis(5);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_railyard"))
}

/// Fills partition 0 of `topic` with `mib` MiB of `PRELOAD_RECORD_BYTES` records.
fn preload(bootstrap: &str, topic: &str, mib: usize) -> usize {
    let producer: FutureProducer = profiles::producer(bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .expect("creating the producer");
    let n = mib * 1024 * 1024 / PRELOAD_RECORD_BYTES;
    let payload = vec![b'x'; PRELOAD_RECORD_BYTES];
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("pre-{i}"), payload.clone()))
        .collect();
    profiles::runtime().block_on(async {
        let mut acks = Vec::new();
        for (k, v) in &records {
            let r = FutureRecord::to(topic).key(k).payload(v).partition(0);
            acks.push(producer.send(r, Duration::from_secs(60)));
        }
        for a in futures_util::future::join_all(acks).await {
            a.unwrap_or_else(|(e, _)| panic!("preload not acked: {e}"));
        }
    });
    n
}

/// What a steady producer saw.
#[derive(Default)]
struct Load {
    acked: Vec<String>,
    latencies_us: Vec<u64>,
    failures: Vec<String>,
}

impl Load {
    fn p99_ms(&self) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let i = (l.len() * 99 / 100).min(l.len().saturating_sub(1));
        l.get(i).map_or(0.0, |us| *us as f64 / 1000.0)
    }
}

/// Produces `prefix-i` records, one every `LOAD_PERIOD` and each awaited, until `stop`.
fn steady_load(bootstrap: String, topic: String, prefix: String, stop: Arc<AtomicBool>) -> Load {
    let producer: FutureProducer = profiles::producer(&bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("creating the producer");
    profiles::runtime().block_on(async {
        let mut load = Load::default();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let value = format!("{prefix}-{i}");
            i += 1;
            let started = Instant::now();
            let r = FutureRecord::<(), _>::to(&topic)
                .payload(&value)
                .partition(0);
            match producer.send(r, Duration::from_secs(30)).await {
                Ok(_) => {
                    load.latencies_us.push(started.elapsed().as_micros() as u64);
                    load.acked.push(value);
                }
                Err((e, _)) => load.failures.push(format!("{value}: {e}")),
            }
            tokio::time::sleep(LOAD_PERIOD).await;
        }
        load
    })
}

/// Runs `steady_load` on a thread for as long as `during` takes.
fn with_load<T>(bootstrap: &str, prefix: &str, during: impl FnOnce() -> T) -> (T, Load) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (b, s) = (bootstrap.to_string(), stop.clone());
        let p = prefix.to_string();
        std::thread::spawn(move || steady_load(b, "moving".into(), p, s))
    };
    let out = during();
    stop.store(true, Ordering::Relaxed);
    (out, load.join().expect("the load thread"))
}

/// `railyard <args>` against the cluster; panics unless it succeeds.
fn cli(bootstrap: &str, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .args(["-b", bootstrap, "--timeout-ms", "600000"])
        .output()
        .expect("running the CLI");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "railyard {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn test_a_partition_moves_onto_a_joined_node_under_load() {
    let mib: usize = std::env::var("RAILYARD_MOVE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut c = ProcessCluster::start(binary(), &Spec::new(3, vec![topic("moving", 1, 3)]));
    c.wait_for_all_leaders("moving", 1, WAIT);
    let addr1 = c.nodes[0].kafka;
    let mut before = replicas(addr1, "moving", 0).expect("moving-0's replicas");
    before.sort_unstable();
    assert_eq!(before, vec![1, 2, 3]);
    // The figure is one move's: the balancer would move replicas onto the new node too.
    cli(
        &c.bootstrap(),
        &[
            "cluster",
            "config",
            "set",
            "partition.autobalancing.enable=false",
        ],
    );
    // The learner recovery rate, bytes per second (default 100 MiB/s; 0 unthrottled).
    if let Ok(rate) = std::env::var("RAILYARD_MOVE_RATE") {
        let set = format!("raft.learner.recovery.rate={rate}");
        cli(&c.bootstrap(), &["cluster", "config", "set", &set]);
    }
    c.add_joiner(4, None).start();
    eventually("broker 4 registered", WAIT, || {
        brokers(addr1)
            .is_some_and(|b| b.ids == vec![1, 2, 3, 4])
            .then_some(())
    });
    let bootstrap = c.bootstrap();
    let preloaded = preload(&bootstrap, "moving", mib);

    // The same load without a move, for comparison.
    let ((), baseline) = with_load(&bootstrap, "base", || {
        std::thread::sleep(Duration::from_secs(5))
    });
    let loopback = loopback_tcp_mb_s(1 << 30).expect("loopback TCP");

    let (elapsed, during) = with_load(&bootstrap, "during", || {
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        cli(
            &bootstrap,
            &[
                "partition",
                "reassign",
                "moving:0",
                "--replicas",
                "4,2,3",
                "--wait",
            ],
        );
        let elapsed = started.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        elapsed
    });
    let moved = (mib as f64) * 1.048_576 / elapsed.as_secs_f64();
    eprintln!(
        "moved {mib} MiB in {:.2} s: {moved:.1} MB/s; loopback TCP {loopback:.0} MB/s (ratio {:.3})",
        elapsed.as_secs_f64(),
        moved / loopback
    );
    eprintln!(
        "produce p99 {:.1} ms and {} failures during the move ({} acked); without a move p99 {:.1} ms and {} failures ({} acked)",
        during.p99_ms(),
        during.failures.len(),
        during.acked.len(),
        baseline.p99_ms(),
        baseline.failures.len(),
        baseline.acked.len()
    );
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    assert!(baseline.failures.is_empty(), "{:?}", baseline.failures);

    let listed = cli(&bootstrap, &["partition", "reassignments"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    let mut after = replicas(addr1, "moving", 0).expect("moving-0's replicas");
    after.sort_unstable();
    assert_eq!(after, vec![2, 3, 4]);
    let node1_dir = c.dir().join("node-1").join("moving-0");
    eventually("node 1 deleted its copy", WAIT, || {
        let files = std::fs::read_dir(&node1_dir).map_or(0, |d| d.count());
        (files == 0).then_some(())
    });

    // Every acknowledged record, in order, read through node 4 alone.
    let total = preloaded + baseline.acked.len() + during.acked.len();
    let consumer: BaseConsumer = profiles::assign_consumer(&c.node(4).kafka.to_string())
        .create()
        .expect("creating the consumer");
    let read = profiles::read_from_start(&consumer, "moving", &[0], WAIT, OnError::Retry, |r| {
        r.len() >= total
    });
    let keys: Vec<String> = read
        .iter()
        .take(preloaded)
        .filter_map(|r| r.key.clone())
        .collect();
    let want: Vec<String> = (0..preloaded).map(|i| format!("pre-{i}")).collect();
    assert_eq!(keys, want);
    let values: Vec<String> = read
        .into_iter()
        .skip(preloaded)
        .filter_map(|r| r.value)
        .collect();
    let acked: Vec<String> = baseline.acked.into_iter().chain(during.acked).collect();
    assert_eq!(values, acked, "the acknowledged records, in order");
}
