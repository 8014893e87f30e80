//! An elastic cluster with real `railyard start` processes: under a steady produce load (an
//! rdkafka producer with librdkafka's defaults), a fourth node joins a 3-node cluster and the
//! controller's balancer moves replicas and preferred leaders onto it until every broker is
//! within 1 of the mean; then `railyard broker decommission 1 --wait` drains node 1, which is
//! stopped and unregistered. No acknowledged record is lost, every record is read back at the
//! offset it was acknowledged at, and the producer sees no failure (librdkafka retries the
//! retriable errors the moves cause, as it should).
//!
//! Node 1 is not a controller voter here (`controller_voters = [2, 3]`); node 4 joins the
//! quorum with `railyard controller add-voter 4` before node 1 leaves, and bad quorum changes
//! and decommissions get their Kafka codes. `RAILYARD_BALANCE_PARTITIONS` sets the topic's
//! partitions (default 24, replication factor 3); the time to balance them onto the new node is
//! printed for the closing note, not asserted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_tests::profiles::{self, OnError};
use railyard_tests::{eventually, topic, ProcessCluster, Spec};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
/// The steady load: one record this often, up to this many in flight.
const LOAD_PERIOD: Duration = Duration::from_millis(2);
const IN_FLIGHT_MAX: usize = 64;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_railyard"))
}

/// `railyard <args> -b bootstrap`; panics unless it succeeds.
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

/// `railyard <args> -b bootstrap`, which must fail; its stderr.
fn cli_fails(bootstrap: &str, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .args(["-b", bootstrap, "--timeout-ms", "10000"])
        .output()
        .expect("running the CLI");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "railyard {args:?}: {err}");
    err
}

/// `railyard broker list --format json`: id -> (replicas, leaders, fenced).
fn broker_loads(bootstrap: &str) -> BTreeMap<u64, (u64, u64, bool)> {
    let text = cli(bootstrap, &["broker", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&text).expect("broker list JSON");
    v["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| {
            let n = |k: &str| b[k].as_u64().expect(k);
            (n("id"), (n("replicas"), n("leaders"), b["fenced"] == true))
        })
        .collect()
}

/// Whether every count is within 1 of the mean.
fn within_one(counts: &[u64]) -> bool {
    let n = counts.len() as i64;
    let total: i64 = counts.iter().map(|c| *c as i64).sum();
    counts.iter().all(|c| (*c as i64 * n - total).abs() <= n)
}

fn no_moves(bootstrap: &str) -> bool {
    cli(bootstrap, &["partition", "reassignments"])
        .lines()
        .count()
        == 1
}

/// What the steady producer saw: each acknowledged value at its (partition, offset).
#[derive(Default)]
struct Load {
    acked: BTreeMap<(i32, i64), String>,
    failures: Vec<String>,
}

fn steady_load(bootstrap: String, stop: Arc<AtomicBool>) -> Load {
    let producer: FutureProducer = profiles::client(&bootstrap)
        .create()
        .expect("creating the producer");
    profiles::runtime().block_on(async {
        let mut load = Load::default();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut i = 0u64;
        use futures_util::StreamExt;
        while !stop.load(Ordering::Relaxed) || !pending.is_empty() {
            if !stop.load(Ordering::Relaxed) && pending.len() < IN_FLIGHT_MAX {
                let value = format!("v-{i}");
                let key = format!("k-{}", i % 97);
                i += 1;
                let producer = &producer;
                pending.push(async move {
                    let r = FutureRecord::to("elastic").key(&key).payload(&value);
                    let out = producer.send(r, Duration::from_secs(120)).await;
                    (value, out.map_err(|(e, _)| e.to_string()))
                });
                tokio::time::sleep(LOAD_PERIOD).await;
            }
            let next = tokio::time::timeout(Duration::from_millis(1), pending.next()).await;
            if let Ok(Some((value, result))) = next {
                match result {
                    Ok(d) => {
                        load.acked.insert(d, value);
                    }
                    Err(e) => load.failures.push(format!("{value}: {e}")),
                }
            }
        }
        load
    })
}

#[test]
fn test_a_joined_node_is_balanced_onto_and_a_node_decommissioned_under_load() {
    let partitions: u32 = std::env::var("RAILYARD_BALANCE_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut spec = Spec::new(3, vec![topic("elastic", partitions, 3)]);
    spec.extra_toml = "controller_voters = [2, 3]\n".into();
    let mut c = ProcessCluster::start(binary(), &spec);
    c.wait_for_all_leaders("elastic", partitions as i32, WAIT);
    let bootstrap = c.bootstrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (b, s) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || steady_load(b, s))
    };
    std::thread::sleep(Duration::from_secs(2));

    c.add_joiner(4, None).start();
    let started = Instant::now();
    eventually("replicas and leaders balanced onto node 4", WAIT, || {
        let loads = broker_loads(&bootstrap);
        let replicas: Vec<u64> = loads.values().map(|l| l.0).collect();
        let leaders: Vec<u64> = loads.values().map(|l| l.1).collect();
        let balanced = loads.len() == 4
            && loads[&4].0 > 0
            && within_one(&replicas)
            && within_one(&leaders)
            && no_moves(&bootstrap);
        balanced.then_some(()).ok_or(loads)
    });
    eprintln!(
        "balanced {partitions} RF=3 partitions onto a 4th broker in {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        broker_loads(&bootstrap)
    );

    // The new node joins the controller quorum (2, 3, then 4); bad changes are refused.
    let out = cli(&bootstrap, &["controller", "add-voter", "4"]);
    assert!(out.contains("broker 4 is a controller voter"), "{out}");
    let err = cli_fails(&bootstrap, &["controller", "add-voter", "4"]);
    assert!(err.contains("DUPLICATE_VOTER"), "{err}");
    let err = cli_fails(&bootstrap, &["controller", "remove-voter", "1"]);
    assert!(err.contains("VOTER_NOT_FOUND"), "{err}");
    let err = cli_fails(&bootstrap, &["broker", "decommission", "2"]);
    assert!(err.contains("controller voter"), "{err}");
    let err = cli_fails(&bootstrap, &["broker", "decommission", "9"]);
    assert!(err.contains("BROKER_ID_NOT_REGISTERED"), "{err}");

    let started = Instant::now();
    let out = cli(&bootstrap, &["broker", "decommission", "1", "--wait"]);
    assert!(out.contains("holds no replicas"), "{out}");
    eprintln!("drained node 1 in {:.1} s", started.elapsed().as_secs_f64());
    let loads = broker_loads(&bootstrap);
    let replicas: Vec<u64> = [2, 3, 4].iter().map(|b| loads[b].0).collect();
    assert_eq!(loads[&1].0, 0, "{loads:?}");
    assert_eq!(
        replicas.iter().sum::<u64>(),
        3 * partitions as u64,
        "RF 3 kept: {loads:?}"
    );
    assert!(within_one(&replicas), "{loads:?}");
    c.node(1).terminate();
    let survivors = c.nodes[1..]
        .iter()
        .map(|n| n.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",");
    eventually("node 1 unregistered", WAIT, || {
        let loads = broker_loads(&survivors);
        (!loads.contains_key(&1)).then_some(()).ok_or(loads)
    });
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let load = load.join().expect("the load thread");
    assert!(
        load.failures.is_empty(),
        "{:?}",
        &load.failures[..load.failures.len().min(5)]
    );
    assert!(load.acked.len() > 100, "{} acked", load.acked.len());
    eprintln!("{} records acknowledged, 0 failures", load.acked.len());

    // Every acknowledged record, at its offset, read through the survivors.
    let consumer: BaseConsumer = profiles::assign_consumer(&survivors)
        .create()
        .expect("creating the consumer");
    let ends: BTreeMap<i32, i64> = load.acked.keys().fold(BTreeMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(*o);
        m
    });
    let all: Vec<i32> = (0..partitions as i32).collect();
    let read = profiles::read_from_start(&consumer, "elastic", &all, WAIT, OnError::Retry, |r| {
        ends.iter().all(|(p, end)| {
            r.iter()
                .any(|rec| rec.partition == *p && rec.offset >= *end)
        })
    });
    let found: BTreeMap<(i32, i64), String> = read
        .into_iter()
        .filter_map(|r| Some(((r.partition, r.offset), r.value?)))
        .collect();
    for (at, value) in &load.acked {
        assert_eq!(found.get(at), Some(value), "acknowledged at {at:?}");
    }
}
