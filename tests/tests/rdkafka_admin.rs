//! librdkafka's `AdminClient` (CreateTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! DeleteRecords, DeleteTopics) against an
//! in-process 3-node cluster started with no configured topics: every topic here is created
//! at run time through the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use railyard_node::broker::Broker;
use railyard_tests::profiles::{self, OnError};
use railyard_tests::{eventually, java_partition, Deadline, InProcessCluster};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication, TopicResult,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::MetadataTopic;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 6;
const RF: usize = 3;
const RETENTION_MS: &str = "3600000";
/// Kafka's `log.segment.bytes` default, which the broker reports for topics without an override.
const DEFAULT_SEGMENT_BYTES: &str = "1073741824";
/// Bound of every wait in this file; generous, since four clusters share the machine.
const WAIT: Duration = Duration::from_secs(30);

/// A started cluster with an agreed controller, and an admin client bootstrapped to it.
struct Fixture {
    cluster: InProcessCluster,
    admin: AdminClient<DefaultClientContext>,
    bootstrap: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let cluster = InProcessCluster::start(3, Vec::new()).await;
        // Setup: the first controller election is over (the admin client finds one).
        cluster
            .wait_for_views("an agreed controller", WAIT, |views| {
                views[0].controller().is_some()
                    && views
                        .iter()
                        .all(|v| v.controller() == views[0].controller())
            })
            .await;
        let bootstrap = cluster.bootstrap();
        let admin = profiles::client(&bootstrap)
            .create()
            .expect("creating the admin client");
        Fixture {
            cluster,
            admin,
            bootstrap,
        }
    }

    /// Creates `orders` (6 partitions, RF 3, retention.ms override) and checks it succeeded.
    async fn create_orders(&self) {
        let results = self.create(&orders()).await;
        assert_eq!(results, vec![Ok(TOPIC.to_string())], "creating {TOPIC}");
    }

    /// Creates `orders` and waits until rdkafka metadata shows it [`fully_led`]; returns the
    /// consumer that saw it.
    async fn create_orders_led(&self) -> BaseConsumer {
        self.create_orders().await;
        let consumer = self.consumer();
        tokio::task::block_in_place(|| {
            poll_orders_metadata(&consumer, "6 led partitions with 3 replicas", fully_led)
        });
        consumer
    }

    /// CreateTopics for one topic, retried on NOT_CONTROLLER (see [`Fixture::retry`]).
    async fn create(&self, topic: &NewTopic<'_>) -> Vec<TopicResult> {
        self.retry("CreateTopics", || {
            self.admin.create_topics([topic], &opts())
        })
        .await
    }

    /// DeleteTopics for one topic, retried on NOT_CONTROLLER (see [`Fixture::retry`]).
    async fn delete(&self, name: &str) -> Vec<TopicResult> {
        self.retry("DeleteTopics", || {
            self.admin.delete_topics(&[name], &opts())
        })
        .await
    }

    /// Runs an admin call until its answer is not NOT_CONTROLLER. The controller moves on its
    /// own in a young cluster (a non-preferred winner of the first election hands it to the
    /// preferred node at some 5 s preferred-leader check), and librdkafka, unlike the Java
    /// client, hands NOT_CONTROLLER to the application instead of retrying. A refresh of the
    /// client's metadata teaches it the new controller. NOT_CONTROLLER is answered before
    /// anything is proposed, so the retry cannot turn one creation into TOPIC_ALREADY_EXISTS.
    async fn retry<F: std::future::Future<Output = KafkaResult<Vec<TopicResult>>>>(
        &self,
        what: &str,
        call: impl Fn() -> F,
    ) -> Vec<TopicResult> {
        let deadline = Deadline::new(format!("{what} answered by the controller"), WAIT);
        loop {
            let results = call()
                .await
                .unwrap_or_else(|e| panic!("{what} request: {e}"));
            let moved = results
                .iter()
                .any(|r| matches!(r, Err((_, RDKafkaErrorCode::NotController))));
            if !moved {
                return results;
            }
            eprintln!("{what}: NOT_CONTROLLER (the controller moved); retrying");
            deadline.pause(&results).await;
            tokio::task::block_in_place(|| {
                self.admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(5))
                    .expect("refreshing metadata")
            });
        }
    }

    /// `profile` with auto-creation off, so nothing but the admin client makes topics.
    fn no_auto_create(mut profile: ClientConfig) -> ClientConfig {
        profile.set("allow.auto.create.topics", "false");
        profile
    }

    fn producer(&self) -> FutureProducer {
        Fixture::no_auto_create(profiles::producer(&self.bootstrap))
            .set("message.timeout.ms", "20000")
            // How long an unknown topic may be waited for before queued records fail with
            // UNKNOWN_TOPIC (default 30 s, longer than these tests).
            .set("topic.metadata.propagation.max.ms", "1000")
            .create()
            .expect("creating the producer")
    }

    fn consumer(&self) -> BaseConsumer {
        Fixture::no_auto_create(profiles::assign_consumer(&self.bootstrap))
            .create()
            .expect("creating the consumer")
    }
}

fn orders() -> NewTopic<'static> {
    NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(RF as i32))
        .set("retention.ms", RETENTION_MS)
}

fn opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(15)))
        .operation_timeout(Some(Duration::from_secs(10)))
}

/// What rdkafka metadata lists for a topic: its error, and each partition's (id, leader,
/// replicas).
type TopicSummary = (String, Vec<(i32, i32, Vec<i32>)>);

/// Polls rdkafka metadata (all topics, from whichever broker librdkafka asks) until `done`
/// accepts what it lists as `orders` (`None`: not listed), and returns that.
fn poll_orders_metadata(
    consumer: &BaseConsumer,
    what: &str,
    done: impl Fn(Option<&MetadataTopic>) -> bool,
) -> Option<TopicSummary> {
    eventually(&format!("rdkafka metadata showing {what}"), WAIT, || {
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("fetching metadata");
        let topic = md.topics().iter().find(|t| t.name() == TOPIC);
        let summary = topic.map(|t| {
            let parts = t
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader(), p.replicas().to_vec()))
                .collect();
            (format!("{:?}", t.error()), parts)
        });
        if done(topic) {
            Ok(summary)
        } else {
            Err(summary)
        }
    })
}

/// Whether `t` is `orders` as created: 6 partitions (0..6), each with 3 distinct replicas
/// among the brokers and a leader among its replicas.
fn fully_led(t: Option<&MetadataTopic>) -> bool {
    let Some(t) = t else { return false };
    let ids: BTreeSet<i32> = t.partitions().iter().map(|p| p.id()).collect();
    t.error().is_none()
        && ids == (0..PARTITIONS).collect()
        && t.partitions().iter().all(|p| {
            let replicas: BTreeSet<i32> = p.replicas().iter().copied().collect();
            p.error().is_none()
                && p.replicas().len() == RF
                && replicas.len() == RF
                && replicas.iter().all(|r| (1..=3).contains(r))
                && replicas.contains(&p.leader())
        })
}

fn key(i: usize) -> String {
    format!("order-{i:04}")
}

fn value(i: usize) -> String {
    format!("total={}", i * 7)
}

// Proves a topic created by AdminClient (6 partitions, RF 3, retention.ms override) shows in
// rdkafka metadata with 3 replicas and a leader per partition, takes keyed acks=all writes in
// murmur2's partitions, and gives every record back by assign at its acknowledged offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_created_topic_serves_metadata_produce_and_fetch() {
    const RECORDS: usize = 600;
    let started = Instant::now();
    let f = Fixture::start().await;
    let consumer = f.create_orders_led().await;
    let led = started.elapsed();

    let producer = f.producer();
    let records: Vec<(String, String)> = (0..RECORDS).map(|i| (key(i), value(i))).collect();
    let acked = profiles::produce_all(&producer, TOPIC, &records).await;
    for (i, &(partition, _)) in acked.iter().enumerate() {
        assert_eq!(
            partition,
            java_partition(key(i).as_bytes(), PARTITIONS),
            "record {i} acknowledged in another partition than murmur2 picks"
        );
    }
    let used: BTreeSet<i32> = acked.iter().map(|a| a.0).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "every partition took records"
    );

    let read = tokio::task::block_in_place(|| {
        let all: Vec<i32> = (0..PARTITIONS).collect();
        profiles::read_from_start(&consumer, TOPIC, &all, WAIT, OnError::Fail, |r| {
            r.len() >= RECORDS
        })
    });
    // key -> (partition, offset, value)
    let mut by_key: BTreeMap<String, (i32, i64, String)> = BTreeMap::new();
    for r in read {
        let k = r.key.expect("every record has a key");
        let v = r.value.expect("every record has a value");
        let prev = by_key.insert(k.clone(), (r.partition, r.offset, v));
        assert!(prev.is_none(), "{k} read twice");
    }
    for (i, &(partition, offset)) in acked.iter().enumerate() {
        let got = by_key.get(&key(i)).expect("every acknowledged key is read");
        assert_eq!(
            got,
            &(partition, offset, value(i)),
            "record {i} read at another place or with another value than acknowledged"
        );
    }
    eprintln!(
        "rdkafka admin create: led after {led:?}, total {:?}",
        started.elapsed()
    );
}

// Proves CreateTopics refuses an existing name with TOPIC_ALREADY_EXISTS and a replication
// factor above the broker count with INVALID_REPLICATION_FACTOR, and neither refusal changes
// what exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_create_refuses_existing_topic_and_too_many_replicas() {
    let f = Fixture::start().await;
    f.create_orders().await;

    let again = f.create(&orders()).await;
    assert_eq!(
        again,
        vec![Err((
            TOPIC.to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    // A different shape under the same name is refused just the same.
    let other_shape = NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1));
    let again = f.create(&other_shape).await;
    assert_eq!(
        again,
        vec![Err((
            TOPIC.to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );

    let too_many = NewTopic::new("orders-rf4", 1, TopicReplication::Fixed(4));
    let refused = f.create(&too_many).await;
    assert_eq!(
        refused,
        vec![Err((
            "orders-rf4".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );

    // `orders` keeps its original shape everywhere, and the refused topic exists nowhere.
    f.cluster
        .wait_for_views("orders as first created", WAIT, |views| {
            views.iter().all(|v| {
                v.topic(TOPIC).is_some_and(|t| {
                    t.partitions.len() == PARTITIONS as usize
                        && t.partitions.iter().all(|p| p.replicas.len() == RF)
                })
            })
        })
        .await;
    let consumer = f.consumer();
    let md = tokio::task::block_in_place(|| {
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("fetching metadata")
    });
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert!(
        !names.contains(&"orders-rf4"),
        "refused topic is listed: {names:?}"
    );
    for v in f.cluster.nodes.iter().map(|n| n.handle.cluster()) {
        assert!(
            v.topic("orders-rf4").is_none(),
            "refused topic in a node's view: {v:#?}"
        );
    }
}

// Proves a real cluster refuses client changes to its internal topics with Kafka's codes:
// creating `__consumer_offsets` is INVALID_REQUEST and deleting `__cluster_metadata` is
// INVALID_TOPIC_EXCEPTION, and neither refusal creates or removes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_refuses_to_create_or_delete_internal_topics() {
    let f = Fixture::start().await;
    let offsets = NewTopic::new("__consumer_offsets", 1, TopicReplication::Fixed(1));
    let created = f.create(&offsets).await;
    assert_eq!(
        created,
        vec![Err((
            "__consumer_offsets".to_string(),
            RDKafkaErrorCode::InvalidRequest
        ))]
    );
    let deleted = f.delete("__cluster_metadata").await;
    assert_eq!(
        deleted,
        vec![Err((
            "__cluster_metadata".to_string(),
            RDKafkaErrorCode::InvalidTopic
        ))]
    );
    // Nothing appeared: no node's view has `__consumer_offsets`, and the metadata log still
    // works (a topic can be created after the refusals).
    f.create_orders().await;
    f.cluster
        .wait_for_views("orders, and no __consumer_offsets", WAIT, |views| {
            views
                .iter()
                .all(|v| v.topic(TOPIC).is_some() && v.topic("__consumer_offsets").is_none())
        })
        .await;
}

// Proves DescribeConfigs on a created topic reports the creation override (retention.ms =
// 3600000, a topic config) and Kafka's default segment.bytes (a default), from any broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_describe_configs_reports_override_and_defaults() {
    let f = Fixture::start().await;
    f.create_orders().await;
    // Every broker knows the topic, so whichever one librdkafka asks can answer.
    f.cluster
        .wait_for_views("orders on every node", WAIT, |views| {
            views.iter().all(|v| v.topic(TOPIC).is_some())
        })
        .await;

    let results = f
        .admin
        .describe_configs([&ResourceSpecifier::Topic(TOPIC)], &opts())
        .await
        .expect("DescribeConfigs request");
    assert_eq!(results.len(), 1);
    let resource = results[0]
        .as_ref()
        .unwrap_or_else(|e| panic!("describing {TOPIC}: {e:?}"));
    let entries = resource.entry_map();

    let retention = entries
        .get("retention.ms")
        .unwrap_or_else(|| panic!("no retention.ms in {:#?}", resource.entries));
    assert_eq!(retention.value.as_deref(), Some(RETENTION_MS));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(!retention.is_default, "an override is not a default");

    let segment = entries
        .get("segment.bytes")
        .unwrap_or_else(|| panic!("no segment.bytes in {:#?}", resource.entries));
    assert_eq!(segment.value.as_deref(), Some(DEFAULT_SEGMENT_BYTES));
    assert_eq!(segment.source, ConfigSource::Default);
    assert!(segment.is_default);
}

// Proves DeleteTopics removes a topic: rdkafka metadata stops listing it, a second delete is
// UNKNOWN_TOPIC_OR_PARTITION, and producing to it fails with an unknown-topic error, both for
// a producer that had written to it and for a fresh one (auto-creation off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_delete_topic_removes_it_from_metadata_and_produce() {
    let started = Instant::now();
    let f = Fixture::start().await;
    let consumer = f.create_orders_led().await;
    // A producer that knows the topic (its metadata cache holds all 6 partitions).
    let warm = f.producer();
    for i in 0..PARTITIONS as usize * 4 {
        let (k, v) = (key(i), value(i));
        warm.send(FutureRecord::to(TOPIC).key(&k).payload(&v), WAIT)
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i} before the delete: {e}"));
    }

    let before_delete = started.elapsed();
    let deleted = f.delete(TOPIC).await;
    assert_eq!(deleted, vec![Ok(TOPIC.to_string())]);

    let gone = tokio::task::block_in_place(|| {
        poll_orders_metadata(&consumer, "orders gone", |t| t.is_none())
    });
    assert_eq!(gone, None);
    f.cluster
        .wait_for_views("orders gone from every node", WAIT, |views| {
            views.iter().all(|v| v.topic(TOPIC).is_none())
        })
        .await;

    let again = f.delete(TOPIC).await;
    assert_eq!(
        again,
        vec![Err((
            TOPIC.to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );

    let unknown = |who: &str, r: Result<(i32, i64), (KafkaError, _)>| match r {
        Err((KafkaError::MessageProduction(code), _))
            if [
                RDKafkaErrorCode::UnknownTopicOrPartition,
                RDKafkaErrorCode::UnknownTopic,
                RDKafkaErrorCode::UnknownPartition,
            ]
            .contains(&code) => {}
        Err((e, _)) => panic!("{who}: producing to the deleted topic failed otherwise: {e:?}"),
        Ok(at) => panic!("{who}: producing to the deleted topic was acknowledged at {at:?}"),
    };
    let fresh = f.producer();
    for (who, producer) in [("warm producer", &warm), ("fresh producer", &fresh)] {
        let started = Instant::now();
        let r = producer
            .send(
                FutureRecord::to(TOPIC).key("k").payload("after delete"),
                WAIT,
            )
            .await;
        eprintln!("{who}: {r:?} after {:?}", started.elapsed());
        unknown(who, r);
    }
    // Nothing recreated it behind the test's back.
    let md = tokio::task::block_in_place(|| {
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("fetching metadata")
    });
    assert!(md.topics().iter().all(|t| t.name() != TOPIC));
    warm.flush(Duration::from_secs(1)).ok();
    eprintln!(
        "rdkafka admin delete: deleting at {before_delete:?}, total {:?}",
        started.elapsed()
    );
}

/// One message of `len` bytes to `partition` of `topic`: its offset, or the broker's code.
async fn send_sized(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    len: usize,
) -> Result<i64, RDKafkaErrorCode> {
    // Incompressible (a multiplicative hash of the index), so a topic's leader recompression
    // does not shrink it below a size limit: Kafka checks max.message.bytes after compression.
    let value: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let record = FutureRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(&value[..]);
    match producer.send(record, Duration::from_secs(20)).await {
        Ok((_, offset)) => Ok(offset),
        Err((KafkaError::MessageProduction(code), _)) => Err(code),
        Err((e, _)) => panic!("producing to {topic}: {e}"),
    }
}

/// AlterConfigs of one topic with `configs`: the broker's answer as rust-rdkafka reports it.
async fn alter(f: &Fixture, topic: &str, configs: &[(&str, &str)]) -> Result<(), RDKafkaErrorCode> {
    let mut change = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (k, v) in configs {
        change = change.set(k, v);
    }
    let results = f
        .admin
        .alter_configs([&change], &opts())
        .await
        .expect("AlterConfigs request");
    assert_eq!(results.len(), 1);
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(*code),
    }
}

/// One config of a topic as DescribeConfigs reports it: (value, source as its debug form).
async fn described(f: &Fixture, topic: &str, name: &str) -> (Option<String>, String) {
    let results = f
        .admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts())
        .await
        .expect("DescribeConfigs request");
    let resource = results[0].as_ref().expect("describing the topic");
    let entry = resource.get(name).unwrap_or_else(|| panic!("no {name}"));
    (entry.value.clone(), format!("{:?}", entry.source))
}

// Proves CreatePartitions grows a topic whose new partitions have leaders on every broker
// soon after it answers (a produce to the last one then works), and refuses a decrease with
// INVALID_PARTITIONS and validate_only changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_create_partitions_grows_a_topic_and_refuses_to_shrink_it() {
    let f = Fixture::start().await;
    let consumer = f.create_orders_led().await;
    let grow = |n: usize| NewPartitions::new(TOPIC, n);
    let dry = f
        .admin
        .create_partitions([&grow(9)], &opts().validate_only(true))
        .await
        .expect("CreatePartitions request");
    assert_eq!(dry, vec![Ok(TOPIC.to_string())]);
    let grown = f
        .admin
        .create_partitions([&grow(8)], &opts())
        .await
        .expect("CreatePartitions request");
    assert_eq!(grown, vec![Ok(TOPIC.to_string())]);
    tokio::task::block_in_place(|| {
        poll_orders_metadata(&consumer, "8 partitions", |t| {
            t.is_some_and(|t| t.partitions().len() == 8)
        })
    });
    // The answer waits for the answering broker's view only; the others apply the metadata
    // record a moment later, as in Kafka. librdkafka fails a record for a partition beyond
    // the count it was told at once (_UNKNOWN_PARTITION, no retry), so the producer starts
    // only when every broker it might ask shows the 8 led partitions.
    f.cluster
        .wait_for_views("8 led partitions on every broker", WAIT, |views| {
            views.iter().all(|v| {
                v.topic(TOPIC).is_some_and(|t| {
                    t.partitions.len() == 8 && t.partitions.iter().all(|p| p.leader.is_some())
                })
            })
        })
        .await;
    let producer = f.producer();
    let sent = send_sized(&producer, TOPIC, 7, 10).await;
    assert!(sent.is_ok(), "producing to the new partition 7: {sent:?}");
    let shrink = f
        .admin
        .create_partitions([&grow(4)], &opts())
        .await
        .expect("CreatePartitions request");
    assert_eq!(
        shrink,
        vec![Err((
            TOPIC.to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    let same = f
        .admin
        .create_partitions([&grow(8)], &opts())
        .await
        .expect("CreatePartitions request");
    assert_eq!(
        same,
        vec![Err((
            TOPIC.to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    let view = f.cluster.views()[0].clone();
    assert_eq!(view.topic(TOPIC).map(|t| t.partitions.len()), Some(8));
}

// Proves topic configs are validated like Kafka's (every documented one accepted, a bad value
// or an unknown name INVALID_CONFIG, compaction refused as not available), that
// max.message.bytes is enforced and that AlterConfigs changes it on a live topic, reported by
// DescribeConfigs as a topic override. AlterConfigs goes to whichever broker librdkafka picks:
// one that is not the controller forwards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_topic_configs_are_validated_enforced_and_altered() {
    let f = Fixture::start().await;
    let small = NewTopic::new("small", 1, TopicReplication::Fixed(3))
        .set("max.message.bytes", "1000")
        .set("compression.type", "lz4")
        .set("delete.retention.ms", "1000")
        .set("message.timestamp.type", "CreateTime");
    assert_eq!(f.create(&small).await, vec![Ok("small".to_string())]);
    for (name, value) in [
        ("retention.ms", "soon"),
        ("no.such.config", "1"),
        ("cleanup.policy", "compact"),
        ("min.insync.replicas", "0"),
    ] {
        let bad = NewTopic::new("bad", 1, TopicReplication::Fixed(1)).set(name, value);
        let results = f.create(&bad).await;
        assert_eq!(
            results,
            vec![Err(("bad".to_string(), RDKafkaErrorCode::InvalidConfig))],
            "{name}={value}"
        );
    }
    let producer = f.producer();
    assert_eq!(
        send_sized(&producer, "small", 0, 2_000).await,
        Err(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    assert!(send_sized(&producer, "small", 0, 100).await.is_ok());
    assert_eq!(
        alter(&f, "small", &[("max.message.bytes", "100000")]).await,
        Ok(())
    );
    // Every broker applies the change when its metadata log does, a moment apart.
    let dynamic = (
        Some("100000".to_string()),
        format!("{:?}", ConfigSource::DynamicTopic),
    );
    eventually("every broker describing the altered config", WAIT, || {
        let got = futures_lite_block(described(&f, "small", "max.message.bytes"));
        if got == dynamic {
            Ok(())
        } else {
            Err(got)
        }
    });
    // AlterConfigs replaces every override: compression.type is back to its default.
    assert_eq!(
        described(&f, "small", "compression.type").await,
        (
            Some("producer".to_string()),
            format!("{:?}", ConfigSource::Default)
        )
    );
    let sent = eventually("a 2000-byte record accepted", WAIT, || {
        futures_lite_block(send_sized(&producer, "small", 0, 2_000))
    });
    assert!(sent >= 1);
    // rust-rdkafka 0.37 drops AlterConfigs' per-resource errors (kafka_listener.rs checks the
    // codes); what matters here is that a refused alter changes nothing.
    let _ = alter(&f, "small", &[("retention.ms", "-7")]).await;
    let _ = alter(&f, CONSUMER_OFFSETS, &[("retention.ms", "1000")]).await;
    assert_eq!(
        described(&f, "small", "max.message.bytes")
            .await
            .0
            .as_deref(),
        Some("100000"),
        "a refused alter changes nothing"
    );
}

const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Runs a future to completion from a blocking closure (for [`eventually`]).
/// DeleteRecords of one partition of `orders`: the low watermark, or the partition's error.
async fn delete_before(
    f: &Fixture,
    partition: i32,
    offset: Offset,
) -> Result<i64, RDKafkaErrorCode> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, offset)
        .expect("a valid offset");
    let result = f
        .admin
        .delete_records(&tpl, &opts())
        .await
        .expect("DeleteRecords request");
    let e = result
        .find_partition(TOPIC, partition)
        .expect("the partition is answered");
    match (e.error(), e.offset()) {
        (Ok(()), Offset::Offset(low)) => Ok(low),
        (Ok(()), other) => panic!("low watermark {other:?}"),
        (Err(KafkaError::OffsetFetch(code)), _) => Err(code),
        (Err(other), _) => panic!("DeleteRecords of partition {partition}: {other}"),
    }
}

// Proves DeleteRecords through librdkafka's AdminClient: the low watermark moves (and
// ListOffsets, as fetch_watermarks, shows it), a consumer positioned below it is reset to it,
// an offset past the high watermark is OFFSET_OUT_OF_RANGE and changes nothing, and
// OFFSET_END deletes everything up to the high watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_delete_records_moves_the_low_watermark() {
    let f = Fixture::start().await;
    let consumer = f.create_orders_led().await;
    let producer = f.producer();
    for _ in 0..10 {
        send_sized(&producer, TOPIC, 0, 10).await.expect("produce");
    }
    let watermarks = |c: &BaseConsumer| {
        tokio::task::block_in_place(|| c.fetch_watermarks(TOPIC, 0, Duration::from_secs(5)))
            .expect("watermarks")
    };
    assert_eq!(delete_before(&f, 0, Offset::Offset(4)).await, Ok(4));
    assert_eq!(watermarks(&consumer), (4, 10));
    assert_eq!(
        delete_before(&f, 0, Offset::Offset(11)).await,
        Err(RDKafkaErrorCode::OffsetOutOfRange)
    );
    assert_eq!(
        watermarks(&consumer),
        (4, 10),
        "a refused delete changed nothing"
    );
    // A consumer asking for a deleted offset is reset (auto.offset.reset=earliest) to the start.
    let reader: BaseConsumer = Fixture::no_auto_create(profiles::assign_consumer(&f.bootstrap))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating the consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(TOPIC, 0, Offset::Offset(1))
        .unwrap();
    reader.assign(&at).expect("assign");
    let first = tokio::task::block_in_place(|| {
        eventually("a record after the reset", WAIT, || {
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => Ok(m.offset()),
                other => Err(other.map(|r| r.map(|m| m.offset()))),
            }
        })
    });
    assert_eq!(first, 4, "the consumer resumed at the log start offset");
    assert_eq!(delete_before(&f, 0, Offset::End).await, Ok(10));
    assert_eq!(watermarks(&consumer), (10, 10));
}

fn futures_lite_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
