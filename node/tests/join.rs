//! Elastic membership with real `railyard start` processes: a fourth node joins a running
//! 3-node cluster with `join = true` and only the controller quorum in its config (no other
//! node is restarted or reconfigured), every node lists it, a topic placed on it is led by it
//! and serves librdkafka, and it rejoins after kill -9 from its own metadata log. Then a
//! data directory of another cluster, started against this one, is refused: the process exits
//! with an error naming both cluster ids, and not a byte of the directory changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use railyard_tests::cluster::process::brokers;
use railyard_tests::kafka_conn::call_blocking;
use railyard_tests::profiles::{self, OnError};
use railyard_tests::{eventually, topic, ProcessCluster, Spec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(30);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_railyard"))
}

/// The cluster id the node at `addr` reports in Metadata.
fn cluster_id(addr: SocketAddr) -> Option<String> {
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    let resp: MetadataResponse = call_blocking(addr, &request, 12, Duration::from_secs(2)).ok()?;
    resp.cluster_id.map(|s| s.to_string())
}

/// Sends `n` records `prefix-i` to partition 0 of `topic` with acks=all; all must be acked.
fn produce(bootstrap: &str, topic: &str, prefix: &str, n: usize) {
    let producer: FutureProducer = profiles::producer(bootstrap)
        .set("message.timeout.ms", "20000")
        .create()
        .expect("creating the producer");
    profiles::runtime().block_on(async {
        for i in 0..n {
            let value = format!("{prefix}-{i}");
            let record = FutureRecord::<(), _>::to(topic)
                .payload(&value)
                .partition(0);
            producer
                .send(record, Duration::from_secs(20))
                .await
                .unwrap_or_else(|(e, _)| panic!("{topic}: {value} not acked: {e}"));
        }
    });
}

/// Partition 0 of `topic` from the start, as librdkafka reads it through `bootstrap`.
fn read_values(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    let consumer: BaseConsumer = profiles::assign_consumer(bootstrap)
        .create()
        .expect("creating the consumer");
    let read = profiles::read_from_start(&consumer, topic, &[0], WAIT, OnError::Retry, |r| {
        r.len() >= n
    });
    read.into_iter().filter_map(|r| r.value).collect()
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading a data directory") {
            let path = e.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("reading a data file");
                out.insert(path, bytes);
            }
        }
    }
    out
}

#[test]
fn test_a_node_joins_a_running_cluster_and_a_foreign_directory_is_refused() {
    let mut c = ProcessCluster::start(binary(), &Spec::new(3, vec![topic("before", 1, 3)]));
    c.wait_for_all_leaders("before", 1, WAIT);
    let bootstrap = c.bootstrap();
    produce(&bootstrap, "before", "old", 20);
    let id = eventually("the cluster's id", WAIT, || cluster_id(c.nodes[0].kafka));

    // Node 4 names only the quorum; nobody else is told about it.
    let started = std::time::Instant::now();
    c.add_joiner(4, None).start();
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|n| n.kafka).collect();
    eventually("every node lists broker 4", WAIT, || {
        let all = addrs
            .iter()
            .all(|a| brokers(*a).is_some_and(|b| b.ids == vec![1, 2, 3, 4]));
        all.then_some(())
    });
    // A figure for the closing note, not an assertion: machines differ.
    eprintln!(
        "node 4 listed by every node {:?} after its start",
        started.elapsed()
    );
    let addr4 = c.node(4).kafka;
    eventually("node 4 reports the cluster's id", WAIT, || {
        (cluster_id(addr4).as_deref() == Some(id.as_str())).then_some(())
    });

    let admin: AdminClient<DefaultClientContext> = profiles::client(&bootstrap)
        .create()
        .expect("creating the admin client");
    let assignment: &[&[i32]] = &[&[4, 1, 2]];
    let created = profiles::runtime().block_on(admin.create_topics(
        &[NewTopic::new(
            "after",
            1,
            TopicReplication::Variable(assignment),
        )],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
    let results = created.expect("CreateTopics answered");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let (leader, _) = c.wait_for_leader("after", 0, None, WAIT);
    assert_eq!(leader, 4, "the preferred replica, the new node, leads");
    let with_4 = c.bootstrap();
    produce(&with_4, "after", "new", 10);
    let expected: Vec<String> = (0..10).map(|i| format!("new-{i}")).collect();
    assert_eq!(read_values(&with_4, "after", 10), expected);

    // kill -9 and back: it rejoins from its own metadata log, with the same data.
    c.node(4).kill9();
    c.node(4).start();
    let (leader, _) = c.wait_for_leader("after", 0, None, WAIT);
    assert!([4, 1, 2].contains(&leader));
    assert_eq!(read_values(&with_4, "after", 10), expected);
    let old: Vec<String> = (0..20).map(|i| format!("old-{i}")).collect();
    assert_eq!(read_values(&with_4, "before", 20), old);

    // Another cluster's data directory, started against this cluster.
    let mut other = ProcessCluster::start(binary(), &Spec::new(1, vec![topic("theirs", 1, 1)]));
    other.wait_for_all_leaders("theirs", 1, WAIT);
    produce(&other.bootstrap(), "theirs", "theirs", 5);
    let theirs = eventually("the other cluster's id", WAIT, || {
        cluster_id(other.nodes[0].kafka)
    });
    assert_ne!(theirs, id);
    other.node(1).terminate();
    let foreign_dir = other.dir().join("node-1");
    let before = files(&foreign_dir);
    let stranger = c.add_joiner(5, Some(foreign_dir.clone()));
    stranger.start();
    let exit = stranger
        .wait_exit(WAIT)
        .expect("the foreign node exits on its own");
    assert!(!exit.success(), "{exit}");
    let log = stranger.log();
    assert!(
        log.contains(&id) && log.contains(&theirs) && log.contains("left untouched"),
        "{log}"
    );
    assert!(
        files(&foreign_dir) == before,
        "the foreign data directory changed"
    );
    let listed = brokers(c.nodes[0].kafka).map(|b| b.ids);
    assert_eq!(
        listed,
        Some(vec![1, 2, 3, 4]),
        "the stranger never registered"
    );
}
