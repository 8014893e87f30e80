//! A 4-node in-process cluster whose controller quorum is nodes 1-3: node 4 follows the
//! metadata log as a raft learner. With RF=1 every node hosts only some partitions, so Metadata
//! answers for the others come from the leaderships the metadata log records. librdkafka
//! bootstrapped at the learner alone finds every leader, produces and reads back; produces to a
//! missing topic auto-create it; a stopped broker is fenced and leaves Metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_node::broker::{Broker, ClusterView};
use railyard_tests::{topic, InProcessCluster};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const SPREAD: &str = "spread";
const PARTITIONS: i32 = 4;
const AUTO: &str = "auto-made";
const WAIT: Duration = Duration::from_secs(30);

const EXTRA: &str = "controller_voters = [1, 2, 3]\nauto_create_topics = true\n\
                     default_partitions = 2\ndefault_replication_factor = 2\n\
                     heartbeat_ms = 200\nsession_timeout_ms = 2000\n";

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("allow.auto.create.topics", "true")
        .set("enable.idempotence", "false")
        .create()
        .expect("creating the producer")
}

/// Reads `n` records of `topic` (partitions `0..partitions`) from offset 0 by assign, as
/// (partition, offset, value).
fn read_back(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "railyard-learners-unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("creating the consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .expect("adding a partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(Instant::now() < deadline, "read {} of {n}", out.len());
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => {
                let v = String::from_utf8(m.payload().expect("a value").to_vec()).expect("utf-8");
                out.push((m.partition(), m.offset(), v));
            }
        }
    }
    out
}

async fn wait_views(
    cluster: &InProcessCluster,
    what: &str,
    ok: impl Fn(&[Arc<ClusterView>]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let views: Vec<Arc<ClusterView>> =
            cluster.nodes.iter().map(|n| n.handle.cluster()).collect();
        if ok(&views) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {views:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_learner_broker_leaders_of_unhosted_partitions_auto_create_and_fencing() {
    let cluster =
        InProcessCluster::start_with(4, vec![topic(SPREAD, PARTITIONS as u32, 1)], EXTRA).await;
    // Every node, the learner included, agrees on a leader for every partition, although each
    // hosts only some of them.
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
    wait_views(&cluster, "all four brokers registered", |views| {
        views.iter().all(|v| v.brokers().len() == 4)
    })
    .await;

    // librdkafka bootstrapped at the learner only.
    let learner = cluster.nodes[3].kafka_addr.to_string();
    let p = producer(&learner);
    for i in 0..200 {
        let v = format!("s{i}");
        let k = format!("k{i}");
        p.send(FutureRecord::to(SPREAD).key(&k).payload(&v), WAIT)
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    let l2 = learner.clone();
    let read = tokio::task::spawn_blocking(move || read_back(&l2, SPREAD, PARTITIONS, 200))
        .await
        .unwrap();
    let mut values: Vec<String> = read.into_iter().map(|r| r.2).collect();
    values.sort();
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
    wait_views(&cluster, "auto-created topic everywhere", |views| {
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
    wait_views(&cluster, "the stopped broker is fenced", |views| {
        views[..3].iter().all(|v| {
            let led = v.partition(SPREAD, victim_partition).and_then(|p| p.leader);
            v.broker(victim).is_none() && led.is_none()
        })
    })
    .await;
}
