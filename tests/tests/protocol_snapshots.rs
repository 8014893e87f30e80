//! insta snapshots of what a real 3-node in-process cluster answers to ApiVersions v3 and
//! Metadata v12, decoded with kafka-protocol. Ephemeral ports, leaders, leader epochs and
//! in-sync replica sets change from run to run; they are checked for sanity and then replaced
//! by placeholders so the snapshots are stable.

use std::time::Duration;

use kafka_protocol::messages::{ApiVersionsRequest, BrokerId, MetadataRequest};
use kafka_protocol::protocol::StrBytes;
use railyard_tests::{topic, InProcessCluster, KafkaConn};

/// Sentinels written into nondeterministic fields before rendering, then replaced by names.
const LEADER: i32 = -1_000_001;
const EPOCH: i32 = -1_000_002;
const ISR: i32 = -1_000_003;
const CONTROLLER: i32 = -1_000_004;
/// Topic ids are derived from the name and the metadata log position of the creation, which
/// depends on which node's startup create lands first.
const TOPIC_ID: &str = "00000000-0000-0000-0000-000000000000";

fn placeholders(mut text: String, ports: &[(u16, String)]) -> String {
    for (port, name) in ports {
        text = text.replace(&format!("port: {port},"), &format!("port: <{name}>,"));
    }
    text.replace(&LEADER.to_string(), "<leader>")
        .replace(&EPOCH.to_string(), "<leader-epoch>")
        .replace(&ISR.to_string(), "<isr>")
        .replace(&CONTROLLER.to_string(), "<controller>")
        .replace(TOPIC_ID, "<topic-id>")
}

// Proves the ApiVersions v3 answer of a real node (which APIs and version ranges it
// advertises, and the response layout) does not change unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_versions_v3_snapshot() {
    let cluster = InProcessCluster::start(3, vec![topic("snap", 3, 3)]).await;
    let mut conn = KafkaConn::connect(cluster.nodes[0].kafka_addr).await;
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("railyard-tests"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let resp = conn.call(&req, 3).await;
    assert_eq!(resp.error_code, 0);
    insta::assert_snapshot!("api_versions_v3", format!("{resp:#?}"));
}

// Proves the Metadata v12 answer of a real 3-node cluster: brokers and their advertised
// listeners, cluster id, a live controller, both topics with every partition's replica set,
// preferred leaders spread over the brokers, a leader among the replicas for every partition,
// and the error for an unknown topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_metadata_v12_snapshot() {
    let cluster = InProcessCluster::start(3, vec![topic("snap", 3, 3), topic("more", 2, 3)]).await;
    cluster.wait_for_leaders(Duration::from_secs(30)).await;
    let mut conn = KafkaConn::connect(cluster.nodes[0].kafka_addr).await;
    let all = conn
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let one = conn
        .call(
            &MetadataRequest::default().with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(StrBytes::from_static_str("snap").into())),
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(StrBytes::from_static_str("no-such-topic").into())),
            ])),
            12,
        )
        .await;
    let ports: Vec<(u16, String)> = cluster
        .nodes
        .iter()
        .zip(&cluster.configs)
        .map(|(n, c)| (n.kafka_addr.port(), format!("kafka-port-of-node-{}", c.id)))
        .collect();
    let mut rendered = Vec::new();
    for (label, mut resp) in [("all topics", all), ("snap and an unknown topic", one)] {
        assert_eq!(resp.brokers.len(), 3, "{label}: every broker is listed");
        for (b, n) in resp.brokers.iter().zip(&cluster.nodes) {
            assert_eq!(
                b.port,
                i32::from(n.kafka_addr.port()),
                "{label}: advertised port"
            );
        }
        let controller = resp.controller_id.0;
        assert!(
            (1..=3).contains(&controller),
            "{label}: controller {controller}"
        );
        resp.controller_id = BrokerId(CONTROLLER);
        let id = resp.cluster_id.take().expect("the cluster has an id");
        assert_eq!(id.len(), 22, "{label}: a Kafka-style cluster id {id}");
        resp.cluster_id = Some(StrBytes::from_static_str("<cluster-id>"));
        for t in resp.topics.iter_mut() {
            if t.error_code == 0 {
                assert!(!t.topic_id.is_nil(), "{label}: topic id");
                t.topic_id = Default::default();
                // Preferred leaders (first replicas) are spread over the brokers.
                let mut firsts: Vec<i32> =
                    t.partitions.iter().map(|p| p.replica_nodes[0].0).collect();
                firsts.sort_unstable();
                firsts.dedup();
                assert_eq!(
                    firsts.len(),
                    t.partitions.len(),
                    "{label}: preferred leaders {firsts:?}"
                );
            }
            for p in t.partitions.iter_mut() {
                if t.error_code != 0 {
                    continue;
                }
                assert!(
                    p.replica_nodes.contains(&p.leader_id),
                    "{label}: leader {:?} is not a replica {:?}",
                    p.leader_id,
                    p.replica_nodes
                );
                assert!(
                    p.leader_epoch >= 1,
                    "{label}: leader epoch {}",
                    p.leader_epoch
                );
                assert!(
                    p.isr_nodes.iter().all(|i| p.replica_nodes.contains(i)),
                    "{label}: ISR {:?} outside replicas {:?}",
                    p.isr_nodes,
                    p.replica_nodes
                );
                // Placement depends on creation order; the snapshot keeps the replica set.
                let mut replicas = p.replica_nodes.clone();
                replicas.sort_unstable();
                replicas.dedup();
                assert_eq!(
                    replicas.len(),
                    p.replica_nodes.len(),
                    "{label}: duplicate replica"
                );
                p.replica_nodes = replicas;
                p.leader_id = BrokerId(LEADER);
                p.leader_epoch = EPOCH;
                p.isr_nodes = vec![BrokerId(ISR)];
            }
        }
        rendered.push(format!("# {label}\n{resp:#?}"));
    }
    insta::assert_snapshot!("metadata_v12", placeholders(rendered.join("\n\n"), &ports));
}
