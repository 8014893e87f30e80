//! A 4-node in-process cluster whose controller quorum is nodes 1-3: node 4 follows the
//! metadata log as a raft learner. With RF=1 every node hosts only some partitions, so Metadata
//! answers for the others come from the leaderships the metadata log records. librdkafka
//! bootstrapped at the learner alone finds every leader, produces and reads back; produces to a
//! missing topic auto-create it; a stopped broker is fenced and leaves Metadata.

use std::time::Duration;

use railyard_node::broker::Broker;
use railyard_tests::profiles::{self, OnError};
use railyard_tests::{topic, Disks, InProcessCluster, Spec};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

const SPREAD: &str = "spread";
const PARTITIONS: i32 = 4;
const AUTO: &str = "auto-made";
const WAIT: Duration = Duration::from_secs(30);

const EXTRA: &str = "controller_voters = [1, 2, 3]\nauto_create_topics = true\n\
                     default_partitions = 2\ndefault_replication_factor = 2\n\
                     heartbeat_ms = 200\nsession_timeout_ms = 2000\n";

/// Reads `n` values of `topic` (partitions `0..partitions`) from offset 0 by assign, sorted.
fn read_back(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<String> {
    let consumer: BaseConsumer = profiles::assign_consumer(bootstrap)
        .create()
        .expect("creating the consumer");
    let all: Vec<i32> = (0..partitions).collect();
    let read = profiles::read_from_start(&consumer, topic, &all, WAIT, OnError::Fail, |r| {
        r.len() >= n
    });
    let mut values: Vec<String> = read
        .into_iter()
        .map(|r| r.value.expect("a value"))
        .collect();
    values.sort();
    values
}

// Proves a raft learner of the metadata log serves as a full broker: every node, learner
// included, agrees on the leaders of partitions it does not host; librdkafka bootstrapped at the
// learner alone produces and reads back; producing to a missing topic auto-creates it with the
// configured defaults; and a stopped broker is fenced out of every view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_learner_broker_leaders_of_unhosted_partitions_auto_create_and_fencing() {
    let mut spec = Spec::new(4, vec![topic(SPREAD, PARTITIONS as u32, 1)]).with_groups();
    spec.extra_toml = EXTRA.to_string();
    let cluster = InProcessCluster::start_spec(&spec, Disks::Files).await;
    // Every node, the learner included, agrees on a leader for every partition, although each
    // hosts only some of them: `__consumer_offsets` too (RF 3 of 4), so any broker answers
    // FindCoordinator.
    let view = cluster.wait_for_leaders(WAIT).await;
    let spread = view.topic(SPREAD).unwrap();
    let hosts: Vec<u64> = spread.partitions.iter().map(|p| p.replicas[0]).collect();
    assert!(
        hosts.contains(&4),
        "placement puts a replica on the learner: {hosts:?}"
    );
    for n in &cluster.nodes {
        let v = n.handle.cluster();
        assert!(
            matches!(v.controller(), Some(1..=3)),
            "node {} sees controller {:?}",
            n.handle.node_id(),
            v.controller()
        );
    }
    cluster
        .wait_for_views("all four brokers registered", WAIT, |views| {
            views.iter().all(|v| v.brokers().len() == 4)
        })
        .await;

    // librdkafka bootstrapped at the learner only.
    let learner = cluster.nodes[3].kafka_addr.to_string();
    let p: FutureProducer = profiles::producer(&learner)
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("creating the producer");
    for i in 0..200 {
        let v = format!("s{i}");
        let k = format!("k{i}");
        p.send(FutureRecord::to(SPREAD).key(&k).payload(&v), WAIT)
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    let l2 = learner.clone();
    let values = tokio::task::spawn_blocking(move || read_back(&l2, SPREAD, PARTITIONS, 200))
        .await
        .unwrap();
    let mut want: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(values, want);

    // Producing to a missing topic creates it with the configured defaults.
    for i in 0..10 {
        let v = format!("a{i}");
        p.send(FutureRecord::<(), _>::to(AUTO).payload(&v), WAIT)
            .await
            .unwrap_or_else(|(e, _)| panic!("auto-created record {i}: {e}"));
    }
    cluster
        .wait_for_views("auto-created topic everywhere", WAIT, |views| {
            views.iter().all(|v| {
                v.topic(AUTO).is_some_and(|t| {
                    t.partitions.len() == 2 && t.partitions.iter().all(|p| p.replicas.len() == 2)
                })
            })
        })
        .await;
    let l2 = learner.clone();
    let read = tokio::task::spawn_blocking(move || read_back(&l2, AUTO, 2, 10))
        .await
        .unwrap();
    assert_eq!(read.len(), 10);

    // A stopped broker is fenced: the others stop listing it, and the partition it alone hosted
    // has no leader.
    let victim = 4;
    let victim_partition = spread
        .partitions
        .iter()
        .find(|p| p.replicas == vec![victim])
        .map(|p| p.partition)
        .expect("a partition only the learner hosts");
    cluster.nodes[3].handle.shutdown();
    assert!(cluster.nodes[3]
        .handle
        .wait_stopped(Duration::from_secs(10)));
    cluster
        .wait_for_views("the stopped broker is fenced", WAIT, |views| {
            views[..3].iter().all(|v| {
                let led = v.partition(SPREAD, victim_partition).and_then(|p| p.leader);
                v.broker(victim).is_none() && led.is_none()
            })
        })
        .await;
}
