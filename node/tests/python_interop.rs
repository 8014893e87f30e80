//! Python Kafka clients with their default settings against real `railyard start` processes:
//! kafka-python 3 (admin, its default idempotent producer, a group consumer that commits,
//! reopens and resumes, group admin) and confluent-kafka's idempotent producer across a kill
//! -9 of the partition leader (no duplicate, no gap). The scripts are in `tests/interop/`.
//!
//! They need a Python with kafka-python and confluent-kafka: `.ci/run` makes one (a venv) and
//! names it in `RAILYARD_PYTHON`. Without it the tests say so and pass, except under CI
//! (`CI` set), where a missing interpreter fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use railyard_tests::{topic, ProcessCluster, Spec};

/// Three nodes each: one test at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(30);

/// The interpreter to run the scripts with, or `None` (skip) outside CI.
fn python() -> Option<PathBuf> {
    match std::env::var_os("RAILYARD_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("RAILYARD_PYTHON is not set under CI: .ci/run makes the venv")
        }
        None => {
            eprintln!(
                "skipped: set RAILYARD_PYTHON to a Python with kafka-python and confluent-kafka"
            );
            None
        }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop")
        .join(name)
}

fn run(python: &Path, bootstrap: &str, args: &[&str]) -> Output {
    let out = Command::new(python)
        .args(args)
        .env("BOOTSTRAP", bootstrap)
        .output()
        .expect("running python");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn start(spec: Spec) -> ProcessCluster {
    ProcessCluster::start(Path::new(env!("CARGO_BIN_EXE_railyard")), &spec)
}

/// Three nodes with `__consumer_offsets`; the kit's test clusters rebalance groups at once
/// (no initial delay).
fn spec(topics: Vec<railyard_node::config::TopicConfig>) -> Spec {
    Spec::new(3, topics).with_groups()
}

#[test]
fn test_kafka_python_with_default_settings() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = start(spec(vec![]));
    let script = script("kafka_python_suite.py");
    let out = run(&python, &cluster.bootstrap(), &[script.to_str().unwrap()]);
    assert!(out.status.success(), "the kafka-python suite failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("kafka-python suite passed"));
}

#[test]
fn test_confluent_idempotent_producer_across_a_leader_kill() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = start(spec(vec![topic("idem", 1, 3)]));
    let (leader, _) = cluster.wait_for_leader("idem", 0, None, WAIT);
    let bootstrap = cluster.bootstrap();
    let script = script("confluent_idempotent.py");
    let script = script.to_str().unwrap().to_string();
    let n = "4000";
    let producing = {
        let (python, bootstrap, script) = (python.clone(), bootstrap.clone(), script.clone());
        std::thread::spawn(move || run(&python, &bootstrap, &[&script, "produce", "idem", n]))
    };
    // The producer needs about 10 s: the leader dies 2 s in and is back 3 s later.
    std::thread::sleep(Duration::from_secs(2));
    cluster.node(leader).kill9();
    let (next, _) = cluster.wait_for_leader("idem", 0, Some(leader), WAIT);
    assert_ne!(next, leader);
    std::thread::sleep(Duration::from_secs(3));
    cluster.node(leader).start();
    let produced = producing.join().expect("the producer thread");
    assert!(produced.status.success(), "idempotent deliveries failed");
    let verified = run(&python, &bootstrap, &[&script, "verify", "idem", n]);
    assert!(
        verified.status.success(),
        "duplicates or gaps after the leader kill"
    );
}

/// kafka-python commits an offset; the node leading the group's `__consumer_offsets` partition
/// is killed -9; a new consumer reads the same committed offset from the new coordinator. The
/// time from the kill to that read is printed (the figure of the coordinator failover).
#[test]
fn test_committed_offsets_survive_a_coordinator_kill() {
    let Some(python) = python() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = start(spec(vec![topic("fo", 1, 3)]));
    cluster.wait_for_leader("fo", 0, None, WAIT);
    let bootstrap = cluster.bootstrap();
    let script = script("coordinator_failover.py");
    let script = script.to_str().unwrap();
    let group = "failover-group";
    let offsets = railyard_tests::cluster::OFFSETS_PARTITIONS;
    let partition = railyard_core::groups::coordinator_partition(group, offsets);
    let commit = run(&python, &bootstrap, &[script, "commit", group, "fo", "42"]);
    assert!(commit.status.success(), "the commit failed");
    let (coordinator, _) = cluster.wait_for_leader("__consumer_offsets", partition, None, WAIT);
    let killed = std::time::Instant::now();
    cluster.node(coordinator).kill9();
    let fetched = run(&python, &bootstrap, &[script, "fetch", group, "fo", "42"]);
    assert!(
        fetched.status.success(),
        "the committed offset did not survive"
    );
    eprintln!(
        "coordinator {coordinator} killed; the commit read back {:?} after the kill",
        killed.elapsed()
    );
}
