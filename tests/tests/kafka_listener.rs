//! The Kafka listener end to end: real kafka-protocol requests over loopback TCP to
//! [`railyard_node::kafka::serve`] in front of real nodes, whose cores run on in-memory disks
//! (`MemDisk`): one node for most tests, three where a test needs a follower or a broker that
//! is not the controller.
//!
//! Each test's listener is its own (so that it can choose the [`KafkaConfig`]) and talks to the
//! node through a [`Seen`] broker: the node's own handle, which also records every core request
//! the listener makes and every auto-creation it asks for, so that a test can say what reached
//! the core and what the listener answered alone. A [`Seen`] may hold a barrier that produces
//! or creates wait at, which completes only if the listener runs them concurrently.
//!
//! What a real node cannot be made to show (an internal topic in its view, a fenced broker's
//! replicas) is unit-tested on the handlers' functions in `node/src/kafka/handlers/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    FetchResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetForLeaderEpochRequest,
    ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use railyard_core::api::{Acks, Request, Response};
use railyard_core::batch::{decode_records, validate, BatchBuilder, BatchHeader};
use railyard_core::types::{
    TopicPartition, CONSUMER_OFFSETS_TOPIC, INTERNAL_TOPICS, METADATA_TOPIC,
};
use railyard_node::broker::{Broker, ClusterView};
use railyard_node::kafka::codec::uuid_carrier;
use railyard_node::kafka::handlers::Api;
use railyard_node::kafka::{serve, KafkaConfig};
use railyard_node::metrics::{ConnectionErrorKind, Metrics};
use railyard_node::runtime::NodeHandle;
use railyard_tests::{eventually_async, topic, Deadline, Disks, InProcessCluster, KafkaConn, Spec};
use tokio::net::TcpListener;
use tokio::sync::Barrier;

/// The topic every test cluster starts with: two partitions, on every node.
const TOPIC: &str = "orders";
/// Bound of every wait for the cluster (leaders, views, records).
const WAIT: Duration = Duration::from_secs(30);
/// A short tick, so that elections take a few hundred milliseconds.
const TICK_MS: u64 = 20;

/// What the listener asked of the node, in order.
#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    /// Each topic the listener asked to auto-create, and whether the node took the request.
    auto_creates: Vec<(String, bool)>,
}

/// The broker a test's listener serves from: the node's handle, recording what passes.
#[derive(Clone)]
struct Seen {
    node: NodeHandle,
    log: Arc<Mutex<Log>>,
    /// Every produce waits here when set: a barrier of n proves n produces run at once.
    produce_barrier: Option<Arc<Barrier>>,
    /// Every CreateTopic waits here when set, as `produce_barrier` does for produces.
    create_barrier: Option<Arc<Barrier>>,
}

impl Broker for Seen {
    fn node_id(&self) -> u64 {
        self.node.node_id()
    }

    fn cluster(&self) -> Arc<ClusterView> {
        self.node.cluster()
    }

    async fn request(&self, request: Request) -> Response {
        self.log.lock().unwrap().requests.push(request.clone());
        let barrier = match request {
            Request::Produce { .. } => self.produce_barrier.clone(),
            Request::CreateTopic { .. } => self.create_barrier.clone(),
            _ => None,
        };
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        self.node.request(request).await
    }

    fn data_changed(&self) -> impl std::future::Future<Output = ()> + Send {
        self.node.data_changed()
    }

    async fn auto_create_topic(&self, topic: String) -> bool {
        let taken = self.node.auto_create_topic(topic.clone()).await;
        self.log.lock().unwrap().auto_creates.push((topic, taken));
        taken
    }
}

/// Barriers of a [`Seen`] (the number of parties), none by default.
#[derive(Default)]
struct Barriers {
    produce: Option<usize>,
    create: Option<usize>,
}

/// A started cluster, and the test's own listener on one of its nodes.
struct Harness {
    cluster: InProcessCluster,
    seen: Seen,
    addr: SocketAddr,
}

impl Harness {
    /// One node hosting [`TOPIC`], with `extra_toml` in its config, served with `config`.
    async fn one_node(extra_toml: &str, config: KafkaConfig) -> Harness {
        let mut spec = Spec::new(1, vec![topic(TOPIC, 2, 1)]);
        spec.extra_toml = extra_toml.to_string();
        Harness::start(spec, config, Barriers::default()).await
    }

    /// Starts `spec` on in-memory disks and, once every partition has a leader and the nodes
    /// agree on the controller, serves the controller with `config`.
    async fn start(mut spec: Spec, config: KafkaConfig, barriers: Barriers) -> Harness {
        spec.tick_ms = TICK_MS;
        let cluster = InProcessCluster::start_spec(&spec, Disks::Memory).await;
        let view = cluster.wait_for_settled(WAIT).await;
        let controller = view.controller().expect("an agreed controller");
        let seen = Seen {
            node: cluster.node(controller).handle.clone(),
            log: Arc::default(),
            produce_barrier: barriers.produce.map(|n| Arc::new(Barrier::new(n))),
            create_barrier: barriers.create.map(|n| Arc::new(Barrier::new(n))),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        tokio::spawn(serve(listener, seen.clone(), config, logger));
        Harness {
            cluster,
            seen,
            addr,
        }
    }

    async fn connect(&self) -> KafkaConn {
        KafkaConn::connect(self.addr).await
    }

    /// The served node's current view.
    fn view(&self) -> Arc<ClusterView> {
        self.seen.node.cluster()
    }

    /// Every core request the listener made so far.
    fn requests(&self) -> Vec<Request> {
        self.seen.log.lock().unwrap().requests.clone()
    }

    fn auto_creates(&self) -> Vec<(String, bool)> {
        self.seen.log.lock().unwrap().auto_creates.clone()
    }

    /// Asserts that no request reached the core and the topics are still [`TOPIC`] alone: the
    /// listener answered by itself and changed nothing.
    fn assert_core_untouched(&self) {
        assert!(self.requests().is_empty(), "{:?}", self.requests());
        assert_eq!(self.topic_names(), vec![TOPIC]);
    }

    /// The acks of every produce that reached the core.
    fn produce_acks(&self) -> Vec<Acks> {
        self.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Produce { acks, .. } => Some(acks),
                _ => None,
            })
            .collect()
    }

    /// The topics of the served node's view, sorted.
    fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .view()
            .topics()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        names
    }

    /// The partition's batches as the node serves them from offset 0, once the log holds at
    /// least `at_least` records (committed).
    async fn batches(&self, topic: &str, partition: i32, at_least: i64) -> Vec<Bytes> {
        let mut c = self.connect().await;
        let deadline = Deadline::new(format!("{at_least} records in {topic}/{partition}"), WAIT);
        loop {
            let resp = c.call(&fetch_request(topic, partition, 0, 0, 0), 12).await;
            let part = &resp.responses[0].partitions[0];
            assert_eq!(part.error_code, 0, "fetching {topic}/{partition}");
            if part.high_watermark >= at_least {
                return split(part.records.clone().unwrap_or_default());
            }
            deadline.pause(part.high_watermark).await;
        }
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn batch(values: &[&str], timestamp_ms: i64) -> Bytes {
    let mut b = BatchBuilder::new(timestamp_ms);
    for (i, v) in values.iter().enumerate() {
        b.push(Some(b"k"), Some(v.as_bytes()), &[], timestamp_ms + i as i64);
    }
    b.build()
}

fn produce_request(acks: i16, topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn fetch_request(topic: &str, partition: i32, offset: i64, wait_ms: i32, min: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(min)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])])
}

fn metadata_request(names: &[&str]) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(
        names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
            .collect(),
    ))
}

/// Fetched records are whole batches back to back; splits them by their lengths.
fn split(mut records: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while !records.is_empty() {
        let len = BatchHeader::parse(&records).unwrap().total_len();
        out.push(records.split_to(len));
    }
    out
}

/// (offset, value) of every record in fetched records.
fn values(records: &Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for one in split(records.clone()) {
        for r in decode_records(&one).unwrap() {
            out.push((r.offset, String::from_utf8(r.value.unwrap()).unwrap()));
        }
    }
    out
}

fn next_offset(batch: &Bytes) -> i64 {
    validate(batch).unwrap().next_offset()
}

/// (error code, base offset) of the first partition of a produce response.
fn first_partition(resp: &ProduceResponse) -> (i16, i64) {
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A request header of `api` at `version` (correlation id 1), encoded in `header_version`, and
/// nothing after it: the start of a frame a test completes with bytes of its own.
fn header_only(api: ApiKey, version: i16, header_version: i16) -> BytesMut {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut frame, header_version)
        .unwrap();
    frame
}

/// The four topic configs every topic reports, in Kafka's order, as (name, value, source):
/// defaults (source 5) but for `retention.ms`, which is `retention_ms` from `source`.
/// The configs of [`topic_configs`] picked out of a full list (every registered config is
/// reported; these four are the ones the tests vary or know the defaults of).
fn picked(all: &[(String, String, i8)]) -> Vec<(String, String, i8)> {
    let names = [
        "cleanup.policy",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
    ];
    all.iter()
        .filter(|c| names.contains(&c.0.as_str()))
        .cloned()
        .collect()
}

fn topic_configs(retention_ms: &str, source: i8) -> Vec<(String, String, i8)> {
    vec![
        ("cleanup.policy".into(), "delete".into(), 5),
        ("retention.bytes".into(), "-1".into(), 5),
        ("retention.ms".into(), retention_ms.into(), source),
        ("segment.bytes".into(), "1073741824".into(), 5),
    ]
}

fn advertised(resp: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    let mut got: Vec<_> = resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    got.sort();
    got
}

fn expected_table() -> Vec<(i16, i16, i16)> {
    let mut want: Vec<_> = Api::<NodeHandle>::ALL
        .iter()
        .map(|api| (api.key as i16, api.min, api.max))
        .collect();
    want.sort();
    want
}

fn creatable(topic: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
}

fn create_request(topics: Vec<CreatableTopic>) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5_000)
}

fn topic_config(key: &str, value: &str) -> CreatableTopicConfig {
    CreatableTopicConfig::default()
        .with_name(StrBytes::from_string(key.to_owned()))
        .with_value(Some(StrBytes::from_string(value.to_owned())))
}

fn delete_request(names: &[&str]) -> DeleteTopicsRequest {
    DeleteTopicsRequest::default()
        .with_topic_names(names.iter().map(|n| name(n)).collect())
        .with_timeout_ms(5_000)
}

/// (name, code) of each topic of a CreateTopics response.
fn create_codes(resp: &CreateTopicsResponse) -> Vec<(String, i16)> {
    resp.topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code))
        .collect()
}

fn describe_request(resources: Vec<DescribeConfigsResource>) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(resources)
}

fn resource(kind: i8, name: &str) -> DescribeConfigsResource {
    DescribeConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(name.to_owned()))
        .with_configuration_keys(None)
}

// Proves ApiVersions in the v3 and v0 layouts (and v4) advertises exactly the table of
// implemented APIs, with no error.
#[tokio::test]
async fn test_api_versions_v3_and_v0_list_exactly_the_table() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    for version in [3, 0, 4] {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(advertised(&resp), expected_table());
    }
    let table = expected_table();
    assert!(table.contains(&(ApiKey::Fetch as i16, 4, 12)));
    assert!(table.contains(&(ApiKey::Produce as i16, 3, 12)));
    assert!(table.contains(&(ApiKey::CreateTopics as i16, 2, 7)));
    assert!(table.contains(&(ApiKey::DeleteTopics as i16, 1, 6)));
    assert!(table.contains(&(ApiKey::DescribeConfigs as i16, 1, 4)));
}

// Proves KIP-511: ApiVersions v9 gets UNSUPPORTED_VERSION in the v0 layout with the full table,
// and the connection stays usable for the retry.
#[tokio::test]
async fn test_api_versions_too_new_falls_back_to_v0() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(9)
        .with_correlation_id(77)
        .with_client_id(Some(StrBytes::from_static_str("future-client")));
    let mut frame = BytesMut::new();
    header.encode(&mut frame, 2).unwrap();
    ApiVersionsRequest::default().encode(&mut frame, 4).unwrap();
    c.send_frame(&frame).await;
    let resp: ApiVersionsResponse = c.recv(0, 77).await;
    assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(advertised(&resp), expected_table());

    let retry = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(retry.error_code, 0);
}

// Proves a missing topic is auto-created only when the broker allows it (`auto_create_topics`)
// and the request does (the v4+ flag; always before v4), and then really appears; invalid and
// existing names are never asked for.
#[tokio::test]
async fn test_metadata_auto_creates_only_when_broker_and_request_allow() {
    let ask = |n: &str, allow: bool| metadata_request(&[n]).with_allow_auto_topic_creation(allow);
    let code = |r: &MetadataResponse| r.topics[0].error_code;
    let unknown = ResponseError::UnknownTopicOrPartition.code();

    // A broker with auto-creation off declines; nothing reaches its core.
    let off = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = off.connect().await;
    assert_eq!(code(&c.call(&ask("fresh", true), 9).await), unknown);
    assert_eq!(off.auto_creates(), vec![("fresh".to_string(), false)]);
    assert!(off.requests().is_empty(), "{:?}", off.requests());
    assert!(off.view().topic("fresh").is_none());

    let on = Harness::one_node("auto_create_topics = true\n", KafkaConfig::default()).await;
    let mut c = on.connect().await;
    let refused = c.call(&ask("fresh", false), 9).await;
    assert_eq!(code(&refused), unknown);
    assert!(on.auto_creates().is_empty());
    // Creation was requested: LEADER_NOT_AVAILABLE (retriable) while the topic is on its way,
    // or the topic itself if the node's view already shows it. (The exact answer for a topic
    // being created is a unit test of `metadata`.)
    let in_the_making = [ResponseError::LeaderNotAvailable.code(), 0];
    let made = c.call(&ask("fresh", true), 9).await;
    assert!(in_the_making.contains(&code(&made)), "{made:?}");
    // v1 has no flag (its default, true, is the only encodable value): always allowed.
    let v1 = c.call(&ask("older", true), 1).await;
    assert!(in_the_making.contains(&code(&v1)), "{v1:?}");
    let bad = c.call(&ask("a/b", true), 9).await;
    assert_eq!(code(&bad), ResponseError::InvalidTopicException.code());
    let existing = c.call(&ask(TOPIC, true), 9).await;
    assert_eq!(code(&existing), 0);
    let asked = vec![("fresh".to_string(), true), ("older".to_string(), true)];
    assert_eq!(on.auto_creates(), asked);
    on.cluster
        .wait_for_views("the auto-created topics", WAIT, |views| {
            views[0].topic("fresh").is_some() && views[0].topic("older").is_some()
        })
        .await;
}

// Proves Metadata reports what the node's view holds: cluster id, controller, brokers, and each
// partition's leader, epoch, replicas and ISR with the topic id, client topics not internal;
// unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a v1 empty list asks for no topics. (Several
// replicas, racks and a fenced broker's offline replica are a unit test of `metadata`.)
#[tokio::test]
async fn test_metadata_v12_and_v1() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let node = h.cluster.node(1);
    let view = h.view();

    let all = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let cluster_id = all
        .cluster_id
        .as_deref()
        .expect("the cluster has an id")
        .to_string();
    assert_eq!(cluster_id.len(), 22, "a Kafka-style id: {cluster_id}");
    assert_eq!(cluster_id, view.cluster_id());
    assert_eq!(all.controller_id, BrokerId(1));
    let brokers: Vec<_> = all
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port, b.rack.clone()))
        .collect();
    let port = i32::from(node.kafka_addr.port());
    assert_eq!(brokers, vec![(1, "127.0.0.1".into(), port, None)]);
    assert_eq!(all.topics.len(), 1);
    let orders = &all.topics[0];
    let orders_view = view.topic(TOPIC).unwrap();
    assert_eq!(orders.name.as_deref().map(|n| n.as_str()), Some(TOPIC));
    assert_eq!((orders.error_code, orders.is_internal), (0, false));
    assert_eq!(*orders.topic_id.as_bytes(), orders_view.id);
    assert_eq!(orders.partitions.len(), 2);
    for (p, pv) in orders.partitions.iter().zip(&orders_view.partitions) {
        let ids = |v: &[u64]| v.iter().map(|&i| BrokerId(i as i32)).collect::<Vec<_>>();
        assert_eq!(
            (p.partition_index, p.error_code, p.leader_id, p.leader_epoch),
            (pv.partition, 0, BrokerId(1), pv.leader_epoch)
        );
        assert!(p.leader_epoch >= 1, "{p:?}");
        assert_eq!(p.replica_nodes, ids(&pv.replicas));
        assert_eq!(p.isr_nodes, ids(&pv.isr));
        assert_eq!(p.replica_nodes, vec![BrokerId(1)]);
        assert!(p.offline_replicas.is_empty());
    }

    let some = c.call(&metadata_request(&["nope", TOPIC]), 1).await;
    assert_eq!(some.controller_id, BrokerId(1));
    let codes: Vec<_> = some
        .topics
        .iter()
        .map(|t| (t.name.as_deref().unwrap().to_string(), t.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("nope".into(), ResponseError::UnknownTopicOrPartition.code()),
            (TOPIC.into(), 0)
        ]
    );
    assert_eq!(some.topics[1].partitions.len(), 2);

    let none = c.call(&metadata_request(&[]), 1).await;
    assert!(none.topics.is_empty());
    assert_eq!(none.brokers.len(), 1);
}

// Proves acks=-1 reaches the core as Acks::All, and a fetch returns the same records at the
// offsets the produce answered, across old and flexible versions; a fetch from the middle
// returns the batch holding the offset and nothing before it.
#[tokio::test]
async fn test_produce_acks_all_then_fetch_returns_records() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let mut expect = Vec::new();
    for (i, (produce_v, fetch_v)) in [(3, 4), (9, 11), (12, 12)].into_iter().enumerate() {
        let values_in = [format!("a{i}"), format!("b{i}")];
        let refs: Vec<&str> = values_in.iter().map(String::as_str).collect();
        let resp = c
            .call(
                &produce_request(-1, TOPIC, 0, batch(&refs, 1_000)),
                produce_v,
            )
            .await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce v{produce_v}");
        assert_eq!(p.base_offset, 2 * i as i64);
        expect.push((2 * i as i64, values_in[0].clone()));
        expect.push((2 * i as i64 + 1, values_in[1].clone()));

        let fetched = c.call(&fetch_request(TOPIC, 0, 0, 0, 0), fetch_v).await;
        assert_eq!(fetched.error_code, 0);
        let part = &fetched.responses[0].partitions[0];
        assert_eq!(part.error_code, 0, "fetch v{fetch_v}");
        assert_eq!(part.high_watermark, 2 * (i as i64 + 1));
        assert_eq!(part.last_stable_offset, part.high_watermark);
        // log_start_offset exists from v5; older versions decode the default.
        let log_start = if fetch_v >= 5 { 0 } else { -1 };
        assert_eq!(part.log_start_offset, log_start);
        assert_eq!(values(part.records.as_ref().unwrap()), expect);
    }
    assert_eq!(h.produce_acks(), vec![Acks::All; 3]);

    let mid = c.call(&fetch_request(TOPIC, 0, 4, 0, 0), 12).await;
    let records = mid.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(values(&records), expect[4..].to_vec());
}

// Proves acks=0 stores the batch but answers nothing (the next response on the connection is
// the next request's), and that acks=0 and acks=1 both reach the core as Acks::Leader.
#[tokio::test]
async fn test_acks_zero_gets_no_response() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.send(&produce_request(0, TOPIC, 0, batch(&["x"], 5)), 9)
        .await;
    let resp = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(h.batches(TOPIC, 0, 1).await.len(), 1);

    let one = c
        .call(&produce_request(1, TOPIC, 0, batch(&["y"], 5)), 9)
        .await;
    assert_eq!(one.responses[0].partition_responses[0].base_offset, 1);
    assert_eq!(h.produce_acks(), vec![Acks::Leader, Acks::Leader]);
}

// Proves an acks=0 produce that fails closes the connection, Kafka's only way to tell the
// client.
#[tokio::test]
async fn test_acks_zero_failure_closes_connection() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.send(&produce_request(0, "nope", 0, batch(&["x"], 5)), 9)
        .await;
    assert!(c.is_closed().await);
}

// Proves a flipped record byte fails the CRC: CORRUPT_MESSAGE from the core for a lone batch and
// from the listener for a bad batch after a good one in the same record set, and for trailing
// bytes that are not a whole batch; none of them stores anything (the next good batch lands at
// offset 0).
#[tokio::test]
async fn test_bad_crc_is_corrupt_message_and_stores_nothing() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let mut bad = BytesMut::from(&batch(&["hello"], 1)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let bad = bad.freeze();
    let corrupt = (ResponseError::CorruptMessage.code(), -1);
    let resp = c.call(&produce_request(-1, TOPIC, 0, bad.clone()), 9).await;
    assert_eq!(first_partition(&resp), corrupt);
    let lone = h.produce_acks().len();
    assert_eq!(lone, 1, "a lone batch is the core's to check");

    let mut set = BytesMut::from(&batch(&["good"], 1)[..]);
    set.put_slice(&bad);
    let resp = c
        .call(&produce_request(-1, TOPIC, 0, set.freeze()), 3)
        .await;
    assert_eq!(first_partition(&resp), corrupt);

    // Trailing bytes that are not a whole batch are refused before the core sees them.
    let mut torn = BytesMut::from(&batch(&["good"], 1)[..]);
    torn.put_slice(&[0, 0, 0]);
    let resp = c
        .call(&produce_request(-1, TOPIC, 0, torn.freeze()), 3)
        .await;
    assert_eq!(first_partition(&resp), corrupt);
    let refused = h.produce_acks().len();
    assert_eq!(refused, 1, "refused sets never reach the core");

    let good = c
        .call(&produce_request(-1, TOPIC, 0, batch(&["after"], 1)), 9)
        .await;
    let p = &good.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "nothing was stored before"
    );
}

// Proves two v2 batches in one partition's records become one core produce each, are stored as
// two batches in order, and the answer is the first one's base offset.
#[tokio::test]
async fn test_concatenated_batches_become_one_core_produce_each() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.call(&produce_request(-1, TOPIC, 1, batch(&["pre"], 1)), 9)
        .await;
    let mut set = BytesMut::from(&batch(&["a", "b"], 1)[..]);
    set.put_slice(&batch(&["c"], 2));
    let resp = c
        .call(&produce_request(-1, TOPIC, 1, set.freeze()), 9)
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 1));
    assert_eq!(h.produce_acks().len(), 3);
    let log = h.batches(TOPIC, 1, 4).await;
    let ends: Vec<i64> = log.iter().map(next_offset).collect();
    assert_eq!(ends, vec![1, 3, 4]);
}

// Proves the partitions of one produce run concurrently: with a two-party barrier in front of
// the core, the produce completes only if both partitions' core requests are in flight at once.
#[tokio::test]
async fn test_partitions_of_one_produce_run_concurrently() {
    let spec = Spec::new(1, vec![topic(TOPIC, 2, 1)]);
    let barriers = Barriers {
        produce: Some(2),
        ..Barriers::default()
    };
    let h = Harness::start(spec, KafkaConfig::default(), barriers).await;
    let mut c = h.connect().await;
    let mut req = produce_request(-1, TOPIC, 0, batch(&["p0"], 1));
    req.topic_data[0].partition_data.push(
        PartitionProduceData::default()
            .with_index(1)
            .with_records(Some(batch(&["p1"], 1))),
    );
    let resp = c.call(&req, 9).await;
    let codes: Vec<_> = resp.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code))
        .collect();
    assert_eq!(codes, vec![(0, 0), (1, 0)]);
}

// Proves unknown topics and partitions (for produce, fetch and list offsets) and invalid acks
// are answered by the listener alone, without a core request.
#[tokio::test]
async fn test_unknown_topic_and_bad_acks_skip_the_core() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    for (topic, partition) in [("nope", 0), (TOPIC, 9)] {
        let resp = c
            .call(&produce_request(-1, topic, partition, batch(&["x"], 1)), 9)
            .await;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, unknown);
        let fetched = c.call(&fetch_request(topic, partition, 0, 0, 0), 12).await;
        assert_eq!(fetched.responses[0].partitions[0].error_code, unknown);
        let listed = c.call(&list_offsets_request(topic, partition, -1), 6).await;
        assert_eq!(listed.topics[0].partitions[0].error_code, unknown);
    }
    let resp = c
        .call(&produce_request(2, TOPIC, 0, batch(&["x"], 1)), 9)
        .await;
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::InvalidRequiredAcks.code());
    h.assert_core_untouched();
}

/// Three nodes hosting [`TOPIC`] on all of them, on in-memory disks, with agreed leaders and
/// controller. (The controller stays where it is; a partition leader may still move to its
/// preferred replica.)
async fn three_nodes() -> (InProcessCluster, Arc<ClusterView>) {
    let mut spec = Spec::new(3, vec![topic(TOPIC, 2, 3)]);
    spec.tick_ms = TICK_MS;
    let cluster = InProcessCluster::start_spec(&spec, Disks::Memory).await;
    let view = cluster.wait_for_settled(WAIT).await;
    (cluster, view)
}

// Proves a follower answers NOT_LEADER_OR_FOLLOWER with the leader and its epoch (produce v10+,
// fetch v12), produce adding the leader's endpoint, and that the error alone encodes in v9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_not_leader_names_the_current_leader() {
    let (cluster, _) = three_nodes().await;
    // A leader may hand over to its preferred replica meanwhile: the answers are checked
    // against a leadership that held from before the requests to after them.
    let deadline = Deadline::new("a leadership unchanged across the requests", WAIT);
    loop {
        let leadership = || {
            let p = cluster.nodes[0]
                .handle
                .cluster()
                .partition(TOPIC, 0)
                .cloned();
            p.map(|p| (p.leader, p.leader_epoch))
        };
        let before = leadership();
        let Some((Some(leader), _)) = before else {
            deadline.pause(before).await;
            continue;
        };
        let follower = cluster
            .nodes
            .iter()
            .find(|n| n.handle.node_id() != leader)
            .unwrap();
        let follower_epoch = |c: &InProcessCluster| {
            let id = follower.handle.node_id();
            c.node(id)
                .handle
                .cluster()
                .partition(TOPIC, 0)
                .map(|p| (p.leader, p.leader_epoch))
        };
        let seen_by_follower = follower_epoch(&cluster);
        let mut c = KafkaConn::connect(follower.kafka_addr).await;
        let produced = c
            .call(&produce_request(-1, TOPIC, 0, batch(&["x"], 1)), 12)
            .await;
        let old = c
            .call(&produce_request(-1, TOPIC, 0, batch(&["x"], 1)), 9)
            .await;
        let fetched = c.call(&fetch_request(TOPIC, 0, 0, 0, 0), 12).await;
        if leadership() != before || follower_epoch(&cluster) != seen_by_follower {
            deadline.pause((before, leadership())).await;
            continue;
        }
        let Some((Some(_), epoch)) = seen_by_follower else {
            panic!("the follower knows no leader: {seen_by_follower:?}");
        };
        let leader_id = BrokerId(leader as i32);

        let p = &produced.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
        assert_eq!(
            (p.current_leader.leader_id, p.current_leader.leader_epoch),
            (leader_id, epoch)
        );
        let endpoint = &produced.node_endpoints[..];
        assert_eq!(endpoint.len(), 1);
        let leader_port = i32::from(cluster.node(leader).kafka_addr.port());
        assert_eq!(
            (
                endpoint[0].node_id,
                endpoint[0].host.as_str(),
                endpoint[0].port
            ),
            (leader_id, "127.0.0.1", leader_port)
        );

        let code = old.responses[0].partition_responses[0].error_code;
        assert_eq!(code, ResponseError::NotLeaderOrFollower.code());

        let part = &fetched.responses[0].partitions[0];
        assert_eq!(part.error_code, ResponseError::NotLeaderOrFollower.code());
        assert_eq!(part.current_leader.leader_id, leader_id);
        assert_eq!(part.current_leader.leader_epoch, epoch);
        return;
    }
}

// Proves a fetch past the log end is OFFSET_OUT_OF_RANGE with an invalid high watermark.
#[tokio::test]
async fn test_fetch_out_of_range() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let fetched = c.call(&fetch_request(TOPIC, 0, 100, 0, 0), 4).await;
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(part.high_watermark, -1);
}

// Proves a fetch with min_bytes=1 and nothing to read waits: it answers as soon as a produce
// lands, and otherwise only after max_wait_ms.
#[tokio::test]
async fn test_fetch_long_poll_waits_for_data_and_for_max_wait() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let started = Instant::now();
    let empty = c.call(&fetch_request(TOPIC, 0, 0, 200, 1), 12).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    let records = empty.responses[0].partitions[0].records.clone().unwrap();
    assert!(records.is_empty());

    let corr = c.send(&fetch_request(TOPIC, 0, 0, 20_000, 1), 12).await;
    let mut producer = h.connect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer
        .call(&produce_request(-1, TOPIC, 0, batch(&["late"], 1)), 9)
        .await;
    let waited = Instant::now();
    let got: FetchResponse = c.recv(12, corr).await;
    assert!(waited.elapsed() < Duration::from_secs(10));
    let records = got.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(values(&records), vec![(0, "late".to_string())]);
}

// Proves ListOffsets -2 is the log start, -1 the high watermark, and a timestamp finds the
// first record at or after it, in v1 and flexible v6.
#[tokio::test]
async fn test_list_offsets_earliest_latest_and_timestamp() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.call(&produce_request(-1, TOPIC, 0, batch(&["a", "b"], 100)), 9)
        .await;
    c.call(&produce_request(-1, TOPIC, 0, batch(&["c"], 200)), 9)
        .await;
    for version in [1, 6] {
        let offset = |resp: kafka_protocol::messages::ListOffsetsResponse| {
            let p = &resp.topics[0].partitions[0];
            assert_eq!(p.error_code, 0);
            (p.offset, p.timestamp)
        };
        let earliest = c.call(&list_offsets_request(TOPIC, 0, -2), version).await;
        assert_eq!(offset(earliest).0, 0);
        let latest = c.call(&list_offsets_request(TOPIC, 0, -1), version).await;
        assert_eq!(offset(latest).0, 3);
        let by_time = c.call(&list_offsets_request(TOPIC, 0, 101), version).await;
        assert_eq!(offset(by_time), (1, 101));
    }
    // The specials arrive with their versions: max timestamp (v7), earliest-local (v8),
    // latest-tiered (v9, none without tiered storage); v10 adds a timeout.
    for version in [9, 10] {
        let max = c.call(&list_offsets_request(TOPIC, 0, -3), version).await;
        assert_eq!(offset_of(&max), (0, 2, 200));
        let local = c.call(&list_offsets_request(TOPIC, 0, -4), version).await;
        assert_eq!(offset_of(&local).1, 0);
        let tiered = c.call(&list_offsets_request(TOPIC, 0, -5), version).await;
        assert_eq!(offset_of(&tiered), (0, -1, -1));
    }
    let old = c.call(&list_offsets_request(TOPIC, 0, -3), 6).await;
    assert_eq!(offset_of(&old).0, ResponseError::UnsupportedVersion.code());
    let early = c.call(&list_offsets_request(TOPIC, 0, -5), 8).await;
    assert_eq!(
        offset_of(&early).0,
        ResponseError::UnsupportedVersion.code()
    );
}

/// (error code, offset, timestamp) of a one-partition ListOffsets answer.
fn offset_of(resp: &kafka_protocol::messages::ListOffsetsResponse) -> (i16, i64, i64) {
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

// Proves OffsetForLeaderEpoch returns the leader's (epoch, end offset) for its current epoch
// and UNKNOWN_TOPIC_OR_PARTITION for a partition it does not have, and DescribeCluster the
// cluster id, controller and brokers.
#[tokio::test]
async fn test_offset_for_leader_epoch_and_describe_cluster() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.call(&produce_request(-1, TOPIC, 0, batch(&["a", "b"], 1)), 9)
        .await;
    let epoch = h.view().partition(TOPIC, 0).unwrap().leader_epoch;
    let req =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_leader_epoch(epoch),
                OffsetForLeaderPartition::default()
                    .with_partition(7)
                    .with_leader_epoch(epoch),
            ])]);
    for version in [2, 4] {
        let resp = c.call(&req, version).await;
        let parts = &resp.topics[0].partitions;
        assert_eq!(
            (
                parts[0].error_code,
                parts[0].leader_epoch,
                parts[0].end_offset
            ),
            (0, epoch, 2)
        );
        assert_eq!(
            parts[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
    let port = i32::from(h.cluster.node(1).kafka_addr.port());
    for version in [0, 1] {
        let resp = c.call(&DescribeClusterRequest::default(), version).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.cluster_id.as_str(), h.view().cluster_id());
        assert_eq!(resp.cluster_id.len(), 22);
        assert_eq!(resp.controller_id, BrokerId(1));
        let ids: Vec<_> = resp
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
            .collect();
        assert_eq!(ids, vec![(1, "127.0.0.1".to_string(), port)]);
    }
}

// Proves over-limit lengths, negative lengths, unknown api keys, unadvertised versions,
// undecodable bodies and impossible array counts each close their connection, and new
// connections are still served.
#[tokio::test]
async fn test_bad_frames_close_the_connection_and_the_server_keeps_serving() {
    let config = KafkaConfig {
        max_frame_bytes: 1024,
        ..KafkaConfig::default()
    };
    let h = Harness::one_node("", config).await;

    let mut over = h.connect().await;
    over.send_raw(&2048i32.to_be_bytes()).await;
    assert!(over.is_closed().await);

    let mut negative = h.connect().await;
    negative.send_raw(&(-5i32).to_be_bytes()).await;
    assert!(negative.is_closed().await);

    let mut garbage = h.connect().await;
    garbage
        .send_frame(&[0x7F, 0x7F, 0, 1, 0, 0, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF])
        .await;
    assert!(garbage.is_closed().await);

    // Produce v2 is below the floor we advertise.
    let mut below_floor = header_only(ApiKey::Produce, 2, 1);
    below_floor.put_slice(&[0; 16]);
    // A compact array of three topics, then nothing.
    let mut truncated = header_only(ApiKey::Metadata, 12, 2);
    truncated.put_u8(4);
    // Four billion topics in a 20-byte frame: refused by the guard, where kafka-protocol would
    // have tried to preallocate hundreds of GiB and aborted the process.
    let mut huge = header_only(ApiKey::Metadata, 12, 2);
    huge.put_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    for (what, frame) in [
        ("below the floor", below_floor),
        ("truncated", truncated),
        ("huge", huge),
    ] {
        let mut c = h.connect().await;
        c.send_frame(&frame).await;
        assert!(c.is_closed().await, "{what}");
    }

    let mut fresh = h.connect().await;
    let resp = fresh.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(resp.error_code, 0);
}

// Proves that with a registry configured the listener counts each request per API with its
// bytes and latency, every non-zero error code it answers, and each connection it opens and
// closes (refusals by reason). The listener records a request just after writing its response,
// so the counters are awaited.
#[tokio::test]
async fn test_metrics_count_requests_bytes_errors_and_refusals() {
    let metrics = Arc::new(Metrics::new());
    let config = KafkaConfig {
        max_frame_bytes: 1024,
        metrics: Some(metrics.clone()),
        ..KafkaConfig::default()
    };
    let h = Harness::one_node("", config).await;
    let mut c = h.connect().await;
    c.call(&ApiVersionsRequest::default(), 3).await;
    let resp = c
        .call(&produce_request(-1, "nope", 0, batch(&["x"], 1)), 9)
        .await;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, unknown);
    c.call(&produce_request(-1, TOPIC, 0, batch(&["x"], 1)), 9)
        .await;
    let m = &metrics;
    eventually_async("two produces counted", WAIT, move || async move {
        m.requests(ApiKey::Produce) == 2
    })
    .await;
    assert_eq!(metrics.requests(ApiKey::ApiVersions), 1);
    assert_eq!(metrics.error_codes(ApiKey::Produce, unknown), 1);
    assert_eq!(metrics.error_codes(ApiKey::ApiVersions, 0), 0);
    assert!(metrics
        .request_latency_quantile(ApiKey::Produce, 1.0)
        .is_some());

    let mut over = h.connect().await;
    over.send_raw(&2048i32.to_be_bytes()).await;
    assert!(over.is_closed().await);
    let too_large = ConnectionErrorKind::FrameTooLarge;
    eventually_async("a refusal counted", WAIT, move || async move {
        m.connection_errors(too_large) == 1
    })
    .await;

    let text = metrics.render_prometheus();
    assert!(text.contains("railyard_kafka_requests_total{api=\"Produce\"} 2\n"));
    assert!(text.contains(
        "railyard_kafka_errors_total{api=\"Produce\",code=\"3\",error=\"UnknownTopicOrPartition\"} 1\n"
    ));
    assert!(text.contains("railyard_kafka_connection_errors_total{reason=\"frame_too_large\"} 1\n"));
    assert!(text.contains("railyard_kafka_connections_total 2\n"));
    // Request bytes are the frames as sent; response bytes are non-zero for answered calls.
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(line("railyard_kafka_request_bytes_total{api=\"Produce\"}") > 100);
    assert!(line("railyard_kafka_response_bytes_total{api=\"ApiVersions\"}") > 20);
    drop(c);
    eventually_async("connections to close", WAIT, move || async move {
        m.render_prometheus()
            .contains("railyard_kafka_connections 0\n")
    })
    .await;
}

// Proves a create reaches the core with the request's partitions, replication factor and
// configs; v7 answers with the resolved settings, the configs (override vs default) and the new
// topic's id; Metadata then lists the topic; creating it again is TOPIC_ALREADY_EXISTS (36)
// with a message, in the classic layouts too.
#[tokio::test]
async fn test_create_topics_then_duplicate_is_topic_already_exists() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let req = create_request(vec![
        creatable("fresh", 3, 1).with_configs(vec![topic_config("retention.ms", "1000")])
    ]);
    let resp = c.call(&req, 7).await;
    let t = &resp.topics[0];
    assert_eq!((t.name.as_str(), t.error_code), ("fresh", 0));
    assert_eq!(t.error_message, None);
    assert_eq!((t.num_partitions, t.replication_factor), (3, 1));
    let id = h.view().topic("fresh").unwrap().id;
    assert_eq!(*t.topic_id.as_bytes(), id);
    let configs: Vec<_> = t
        .configs
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap().to_string(),
                c.config_source,
            )
        })
        .collect();
    assert_eq!(
        configs.len(),
        railyard_core::topic_config::TOPIC_CONFIGS.len()
    );
    assert_eq!(picked(&configs), topic_configs("1000", 1));
    match &h.requests()[..] {
        [Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            assignments,
            validate_only,
        }] => {
            assert_eq!(
                (name.as_str(), *partitions, *replication_factor),
                ("fresh", 3, 1)
            );
            assert!(assignments.is_empty());
            assert_eq!(
                configs.get("retention.ms").map(String::as_str),
                Some("1000")
            );
            assert!(!validate_only);
        }
        other => panic!("unexpected core requests {other:?}"),
    }
    let meta = c.call(&metadata_request(&["fresh"]), 12).await;
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 3);

    for version in [2, 5, 7] {
        let again = c
            .call(&create_request(vec![creatable("fresh", 1, 1)]), version)
            .await;
        let t = &again.topics[0];
        assert_eq!(
            t.error_code,
            ResponseError::TopicAlreadyExists.code(),
            "v{version}"
        );
        assert!(t.error_message.as_deref().unwrap().contains("fresh"));
        if version >= 5 {
            assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
        }
    }
}

// Proves -1 partitions is 1 and -1 replication is 3 capped at the brokers there are (one);
// the controller refuses bad replication factors, partition counts, names and configs with
// their codes and messages; null config values and duplicate names are refused by the listener
// without a core request.
#[tokio::test]
async fn test_create_topics_defaults_and_refusals() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let resp = c
        .call(&create_request(vec![creatable("dflt", -1, -1)]), 5)
        .await;
    let t = &resp.topics[0];
    assert_eq!(
        (t.error_code, t.num_partitions, t.replication_factor),
        (0, 1, 1)
    );

    let null_config = creatable("nullcfg", 1, 1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(None)]);
    let req = create_request(vec![
        creatable("rf", 1, 5),
        creatable("parts", 0, 1),
        creatable("bad/name", 1, 1),
        creatable("cfg", 1, 1).with_configs(vec![topic_config("unknown.config", "1")]),
        null_config,
        creatable("twice", 1, 1),
        creatable("twice", 2, 1),
    ]);
    let before = h.requests().len();
    for version in [4, 7] {
        let resp = c.call(&req, version).await;
        assert_eq!(
            create_codes(&resp),
            vec![
                ("rf".into(), ResponseError::InvalidReplicationFactor.code()),
                ("parts".into(), ResponseError::InvalidPartitions.code()),
                (
                    "bad/name".into(),
                    ResponseError::InvalidTopicException.code()
                ),
                ("cfg".into(), ResponseError::InvalidConfig.code()),
                ("nullcfg".into(), ResponseError::InvalidConfig.code()),
                ("twice".into(), ResponseError::InvalidRequest.code()),
            ],
            "v{version}"
        );
        assert!(resp.topics.iter().all(|t| t.error_message.is_some()));
        let rf = resp.topics[0].error_message.as_deref().unwrap();
        assert!(rf.contains('5'), "{rf}");
    }
    // Only the four topics the listener let through reached the core, in each of the 2 calls.
    assert_eq!(h.requests().len(), before + 8);
    assert_eq!(h.topic_names(), vec!["dflt", TOPIC]);
}

// Proves the topics of one create run concurrently: with a two-party barrier in front of the
// core, the request completes only if both topics' core requests are in flight at once.
#[tokio::test]
async fn test_topics_of_one_create_run_concurrently() {
    let spec = Spec::new(1, vec![topic(TOPIC, 2, 1)]);
    let barriers = Barriers {
        create: Some(2),
        ..Barriers::default()
    };
    let h = Harness::start(spec, KafkaConfig::default(), barriers).await;
    let mut c = h.connect().await;
    let req = create_request(vec![creatable("one", 1, 1), creatable("two", 1, 1)]);
    let resp = c.call(&req, 7).await;
    assert_eq!(
        create_codes(&resp),
        vec![("one".into(), 0), ("two".into(), 0)]
    );
}

// Proves a broker that is not the controller forwards CreateTopics and DeleteTopics to the
// controller (KIP-590) and relays its answers: the topic is created, then deleted, on every
// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_admin_on_a_non_controller_is_forwarded_to_the_controller() {
    let (cluster, view) = three_nodes().await;
    let controller = view.controller().unwrap();
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.handle.node_id() != controller)
        .unwrap();
    let mut c = KafkaConn::connect(other.kafka_addr).await;
    let resp = c
        .call(&create_request(vec![creatable("elsewhere", 1, 1)]), 7)
        .await;
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
    let resp = c.call(&delete_request(&[TOPIC]), 5).await;
    assert_eq!(resp.responses[0].error_code, 0, "{resp:?}");
    let wait = Duration::from_secs(10);
    cluster
        .wait_for_views("the forwarded changes on every node", wait, |views| {
            views
                .iter()
                .all(|v| v.topic(TOPIC).is_none() && v.topic("elsewhere").is_some())
        })
        .await;
}

// Proves validate_only runs the controller's checks and answers the would-be settings, but no
// topic appears; its errors are still reported.
#[tokio::test]
async fn test_create_validate_only_creates_nothing() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let req = create_request(vec![creatable("dry", 4, 1), creatable("dry-bad", 1, 9)])
        .with_validate_only(true);
    let resp = c.call(&req, 7).await;
    assert_eq!(
        create_codes(&resp),
        vec![
            ("dry".into(), 0),
            (
                "dry-bad".into(),
                ResponseError::InvalidReplicationFactor.code()
            )
        ]
    );
    assert_eq!(resp.topics[0].num_partitions, 4);
    assert!(resp.topics[0].topic_id.is_nil());
    assert!(h.requests().iter().all(|r| matches!(
        r,
        Request::CreateTopic {
            validate_only: true,
            ..
        }
    )));
    assert_eq!(h.topic_names(), vec![TOPIC]);
}

// Proves Kafka's manual replica assignment (partition indexes 0..n each once, num_partitions
// and replication_factor -1) reaches the controller in partition order and creates the topic
// with it; malformed ones are refused by the listener with Kafka's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_create_topics_manual_assignment_reaches_the_controller_checked() {
    let assign = |p: i32, ids: &[i32]| {
        CreatableReplicaAssignment::default()
            .with_partition_index(p)
            .with_broker_ids(ids.iter().map(|i| BrokerId(*i)).collect())
    };
    let spec = Spec::new(3, vec![topic(TOPIC, 2, 3)]);
    let h = Harness::start(spec, KafkaConfig::default(), Barriers::default()).await;
    let mut c = h.connect().await;
    let good =
        creatable("manual", -1, -1).with_assignments(vec![assign(1, &[2, 1]), assign(0, &[1, 2])]);
    let holes = creatable("holes", -1, -1).with_assignments(vec![assign(0, &[1]), assign(2, &[2])]);
    let twice = creatable("twice", -1, -1).with_assignments(vec![assign(0, &[1]), assign(0, &[2])]);
    let negative = creatable("negative", -1, -1).with_assignments(vec![assign(0, &[-1])]);
    let mixed = creatable("mixed", 2, -1).with_assignments(vec![assign(0, &[1])]);
    let resp = c
        .call(
            &create_request(vec![good, holes, twice, negative, mixed]),
            7,
        )
        .await;
    let invalid_assignment = ResponseError::InvalidReplicaAssignment.code();
    assert_eq!(
        create_codes(&resp),
        vec![
            ("manual".into(), 0),
            ("holes".into(), invalid_assignment),
            ("twice".into(), invalid_assignment),
            ("negative".into(), invalid_assignment),
            ("mixed".into(), ResponseError::InvalidRequest.code()),
        ]
    );
    assert_eq!(
        (
            resp.topics[0].num_partitions,
            resp.topics[0].replication_factor
        ),
        (2, 2)
    );
    let seen: Vec<Vec<Vec<u64>>> = h
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::CreateTopic { assignments, .. } => Some(assignments),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec![vec![vec![1, 2], vec![2, 1]]]);
    let view = h.view();
    let replicas: Vec<&[u64]> = view
        .topic("manual")
        .unwrap()
        .partitions
        .iter()
        .map(|p| &p.replicas[..])
        .collect();
    assert_eq!(replicas, vec![&[1, 2][..], &[2, 1][..]]);
}

/// One node hosting [`TOPIC`] and a second topic, `other`, created through the listener (a
/// configured topic deleted right after startup could be created again by the node's startup
/// task).
async fn two_topics() -> Harness {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let resp = h
        .connect()
        .await
        .call(&create_request(vec![creatable("other", 1, 1)]), 7)
        .await;
    assert_eq!(create_codes(&resp), vec![("other".into(), 0)]);
    h
}

// Proves a delete removes the topic; deleting it again is UNKNOWN_TOPIC_OR_PARTITION (3), in
// the classic (v1), flexible (v4) and message-bearing (v5) layouts; a name given twice is
// refused once, without a core request.
#[tokio::test]
async fn test_delete_topics_then_again_is_unknown_topic() {
    let h = two_topics().await;
    let mut c = h.connect().await;
    let resp = c.call(&delete_request(&[TOPIC]), 1).await;
    assert_eq!(
        resp.responses[0].name.as_deref().map(|n| n.as_str()),
        Some(TOPIC)
    );
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(h.topic_names(), vec!["other"]);
    for version in [1, 4, 5] {
        let resp = c.call(&delete_request(&[TOPIC]), version).await;
        let t = &resp.responses[0];
        assert_eq!(t.error_code, ResponseError::UnknownTopicOrPartition.code());
        assert_eq!(t.error_message.is_some(), version >= 5, "v{version}");
    }
    let before = h.requests().len();
    let resp = c.call(&delete_request(&["other", "other"]), 5).await;
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(
        resp.responses[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(h.requests().len(), before);
    assert_eq!(h.topic_names(), vec!["other"]);
}

// Proves DeleteTopics v6 names topics by id (the response fills in the name) or by name (the
// response fills in the id), and an unknown id is UNKNOWN_TOPIC_ID.
#[tokio::test]
async fn test_delete_topics_v6_by_id_and_by_name() {
    let h = two_topics().await;
    let mut c = h.connect().await;
    let view = h.view();
    let (orders_id, other_id) = (
        view.topic(TOPIC).unwrap().id,
        view.topic("other").unwrap().id,
    );
    let unknown_id = [0x11; 16];
    assert!(view.topic_by_id(&unknown_id).is_none());
    let by_id = |id: [u8; 16]| {
        DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(uuid_carrier(id).topic_id)
    };
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![
            by_id(orders_id),
            DeleteTopicState::default().with_name(Some(name("other"))),
            by_id(unknown_id),
        ])
        .with_timeout_ms(5_000);
    let resp = c.call(&req, 6).await;
    let got: Vec<_> = resp
        .responses
        .iter()
        .map(|r| {
            (
                r.name.as_deref().map(|n| n.to_string()),
                *r.topic_id.as_bytes(),
                r.error_code,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(TOPIC.into()), orders_id, 0),
            (Some("other".into()), other_id, 0),
            (None, unknown_id, ResponseError::UnknownTopicId.code()),
        ]
    );
    assert!(h.topic_names().is_empty());
}

// Proves DescribeConfigs: a topic reports its four configs as defaults (source DEFAULT_CONFIG,
// with the broker config as synonym when asked); configuration_keys filters them; a broker
// reports no configs and no error; an unknown topic is UNKNOWN_TOPIC_OR_PARTITION; other
// resource types are INVALID_REQUEST.
#[tokio::test]
async fn test_describe_configs_for_topics_and_brokers() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    for version in [1, 3, 4] {
        let req = describe_request(vec![
            resource(2, TOPIC),
            resource(2, TOPIC).with_configuration_keys(Some(vec![
                StrBytes::from_static_str("retention.ms"),
                StrBytes::from_static_str("no.such.config"),
            ])),
            resource(4, "1"),
            resource(4, ""),
            resource(2, "nope"),
            resource(8, "1"),
        ])
        .with_include_synonyms(true);
        let resp = c.call(&req, version).await;
        let codes: Vec<_> = resp.results.iter().map(|r| r.error_code).collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(codes, vec![0, 0, 0, 0, unknown, invalid], "v{version}");
        let all: Vec<_> = resp.results[0]
            .configs
            .iter()
            .map(|c| {
                assert!(!c.read_only && !c.is_sensitive);
                (
                    c.name.to_string(),
                    c.value.as_deref().unwrap_or("").to_string(),
                    c.config_source,
                )
            })
            .collect();
        assert_eq!(all.len(), railyard_core::topic_config::TOPIC_CONFIGS.len());
        assert_eq!(picked(&all), topic_configs("604800000", 5));
        let retention = resp.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .unwrap();
        assert_eq!(retention.synonyms.len(), 1);
        assert_eq!(
            (
                retention.synonyms[0].name.as_str(),
                retention.synonyms[0].source
            ),
            ("log.retention.ms", 5)
        );
        if version >= 3 {
            assert_eq!(retention.config_type, 5); // LONG
        }
        let filtered: Vec<_> = resp.results[1]
            .configs
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(filtered, vec!["retention.ms".to_string()]);
        // A broker reports its topic-config defaults, which are dynamic (not read-only).
        let broker = &resp.results[2].configs;
        assert!(broker.iter().any(|c| c.name.as_str() == "log.retention.ms"));
        assert!(broker.iter().all(|c| !c.read_only));
        assert_eq!(resp.results[2].resource_type, 4);
        assert_eq!(resp.results[2].error_message, None);
        assert!(resp.results[4].error_message.is_some());
    }
}

// Proves a fetch naming several partitions reaches the core as one FetchMany of the partitions
// in the view, in request order; a partition missing from the view is answered by the listener;
// the request's max_bytes is shared in request order, so a later partition gets what is left.
#[tokio::test]
async fn test_fetch_across_partitions_is_one_core_request() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    c.call(&produce_request(-1, TOPIC, 0, batch(&["zero"], 1)), 9)
        .await;
    let one = batch(&["one"], 1);
    c.call(&produce_request(-1, TOPIC, 1, one.clone()), 9).await;
    let partition = |p: i32| {
        FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20)
    };
    let req = FetchRequest::default()
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![partition(1), partition(0)]),
            FetchTopic::default()
                .with_topic(name("nope"))
                .with_partitions(vec![partition(0)]),
        ]);
    let before = h.requests().len();
    let resp = c.call(&req, 12).await;
    let fetches: Vec<_> = h.requests()[before..]
        .iter()
        .map(|r| match r {
            Request::FetchMany { partitions } => partitions
                .iter()
                .map(|p| (p.tp.clone(), p.offset))
                .collect::<Vec<_>>(),
            other => panic!("a fetch sent {other:?} to the core"),
        })
        .collect();
    let tp = |p| TopicPartition::new(TOPIC, p);
    assert_eq!(fetches, vec![vec![(tp(1), 0), (tp(0), 0)]]);
    let got = |t: usize, p: usize| {
        let part = &resp.responses[t].partitions[p];
        (
            part.error_code,
            values(part.records.as_ref().unwrap_or(&Bytes::new())),
        )
    };
    assert_eq!(got(0, 0), (0, vec![(0, "one".to_string())]));
    assert_eq!(got(0, 1), (0, vec![(0, "zero".to_string())]));
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(got(1, 0).0, unknown);

    // A budget of one batch: the first partition takes it, the second gets nothing.
    let one_batch = req.clone().with_max_bytes(one.len() as i32);
    let resp = c.call(&one_batch, 12).await;
    let sizes: Vec<_> = resp.responses[0]
        .partitions
        .iter()
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .collect();
    assert_eq!(sizes, vec![one.len(), 0]);
}

// Proves creating any internal topic is INVALID_REQUEST with a message, whatever else is wrong
// with the request, and reaches neither the core nor the view.
#[tokio::test]
async fn test_create_internal_topic_is_invalid_request() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let mut topics: Vec<_> = INTERNAL_TOPICS
        .iter()
        .map(|&t| creatable(t, 1, 1))
        .collect();
    // A bad config would otherwise be INVALID_CONFIG.
    topics[0] = topics[0]
        .clone()
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(None)]);
    for version in [2, 7] {
        let resp = c.call(&create_request(topics.clone()), version).await;
        let invalid = ResponseError::InvalidRequest.code();
        let want: Vec<_> = INTERNAL_TOPICS
            .iter()
            .map(|&t| (t.to_string(), invalid))
            .collect();
        assert_eq!(create_codes(&resp), want, "v{version}");
        for t in &resp.topics {
            let message = t.error_message.as_deref().unwrap();
            assert!(message.contains("internal topic"), "{message}");
        }
    }
    h.assert_core_untouched();
}

// Proves deleting an internal topic by name is INVALID_TOPIC_EXCEPTION (with a message from
// v5), reaches no core, and deletes nothing. (An internal topic listed in the view, deleted by
// id, is a unit test of `delete_topics`: a real node's view lists none.)
#[tokio::test]
async fn test_delete_internal_topic_is_invalid_topic_exception() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let invalid = ResponseError::InvalidTopicException.code();
    for version in [1, 5] {
        let resp = c
            .call(
                &delete_request(&[METADATA_TOPIC, CONSUMER_OFFSETS_TOPIC]),
                version,
            )
            .await;
        let codes: Vec<_> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![invalid, invalid], "v{version}");
        let messages = resp.responses.iter().all(|r| r.error_message.is_some());
        assert_eq!(messages, version >= 5, "v{version}");
    }
    h.assert_core_untouched();
}

// Proves a produce to an internal topic is INVALID_TOPIC_EXCEPTION and nothing is written: the
// listener answers without the core. (The same with the topic listed in the view is a unit
// test of `produce`.)
#[tokio::test]
async fn test_produce_to_internal_topic_is_invalid_topic_exception() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let invalid = ResponseError::InvalidTopicException.code();
    for topic in [CONSUMER_OFFSETS_TOPIC, METADATA_TOPIC] {
        for version in [3, 12] {
            let resp = c
                .call(&produce_request(-1, topic, 0, batch(&["x"], 1)), version)
                .await;
            let part = &resp.responses[0].partition_responses[0];
            assert_eq!(
                (part.error_code, part.base_offset),
                (invalid, -1),
                "{topic} v{version}"
            );
        }
    }
    h.assert_core_untouched();
}

/// IncrementalAlterConfigs of one topic: (name, op code, value) each.
fn incremental(topic: &str, ops: &[(&str, i8, Option<&str>)]) -> IncrementalAlterConfigsRequest {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let configs = ops
        .iter()
        .map(|(n, op, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(n.to_string()))
                .with_config_operation(*op)
                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
        })
        .collect();
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.to_string()))
        .with_configs(configs)])
}

// Proves IncrementalAlterConfigs (v0 and flexible v1) sets, appends to and deletes a topic's
// overrides, and answers Kafka's codes to bad input without changing anything: a bad value or
// an APPEND to a non-list config INVALID_CONFIG, an internal topic INVALID_REQUEST, an unknown
// topic UNKNOWN_TOPIC_OR_PARTITION; and AlterConfigs (v2) refuses a bad value the same way.
#[tokio::test]
async fn test_alter_configs_ops_and_refusals() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let code = |r: &IncrementalAlterConfigsResponse| r.responses[0].error_code;
    let configs = |h: &Harness| h.view().topic(TOPIC).unwrap().configs.clone();
    for version in [0, 1] {
        let set = incremental(
            TOPIC,
            &[
                ("retention.ms", 0, Some("1000")),
                ("cleanup.policy", 2, Some("delete")),
            ],
        );
        assert_eq!(code(&c.call(&set, version).await), 0, "v{version}");
        let want = BTreeMap::from([
            ("cleanup.policy".to_string(), "delete".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]);
        eventually_async("the override applied", Duration::from_secs(10), || async {
            if configs(&h) == want {
                Ok(())
            } else {
                Err(configs(&h))
            }
        })
        .await;
        for (bad, want) in [
            (
                incremental(TOPIC, &[("retention.ms", 0, Some("-7"))]),
                ResponseError::InvalidConfig,
            ),
            (
                incremental(TOPIC, &[("max.message.bytes", 2, Some("5"))]),
                ResponseError::InvalidConfig,
            ),
            (
                incremental(TOPIC, &[("no.such.config", 0, Some("5"))]),
                ResponseError::InvalidConfig,
            ),
            (
                incremental(TOPIC, &[("retention.ms", 9, Some("5"))]),
                ResponseError::InvalidRequest,
            ),
            (
                incremental("__consumer_offsets", &[("retention.ms", 0, Some("5"))]),
                ResponseError::InvalidRequest,
            ),
            (
                incremental("nope", &[("retention.ms", 0, Some("5"))]),
                ResponseError::UnknownTopicOrPartition,
            ),
        ] {
            let resp = c.call(&bad, version).await;
            assert_eq!(code(&resp), want.code(), "v{version}: {bad:?}");
            assert!(resp.responses[0].error_message.is_some());
        }
        assert_eq!(configs(&h), want, "a refused alter changes nothing");
        let delete = incremental(
            TOPIC,
            &[("retention.ms", 1, None), ("cleanup.policy", 1, None)],
        );
        assert_eq!(code(&c.call(&delete, version).await), 0);
        eventually_async("the overrides deleted", Duration::from_secs(10), || async {
            if configs(&h).is_empty() {
                Ok(())
            } else {
                Err(configs(&h))
            }
        })
        .await;
    }
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let replace = |v: &str| {
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(TOPIC))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("segment.ms"))
                .with_value(Some(StrBytes::from_string(v.to_string())))])])
    };
    let bad = c.call(&replace("zero"), 2).await;
    assert_eq!(
        bad.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    let ok = c.call(&replace("60000"), 2).await;
    assert_eq!(ok.responses[0].error_code, 0);
}

// Proves the timestamp configs act on produce: under CreateTime a record older than
// message.timestamp.before.max.ms is INVALID_TIMESTAMP and not written; under LogAppendTime
// the leader stamps the batch (timestamp type bit, max timestamp = its clock) with a valid CRC.
#[tokio::test]
async fn test_timestamp_configs_refuse_and_stamp() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let req = create_request(vec![
        creatable("bounded", 1, 1).with_configs(vec![topic_config(
            "message.timestamp.before.max.ms",
            "60000",
        )]),
        creatable("stamped", 1, 1).with_configs(vec![topic_config(
            "message.timestamp.type",
            "LogAppendTime",
        )]),
    ]);
    let created = c.call(&req, 7).await;
    assert!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old = c
        .call(
            &produce_request(-1, "bounded", 0, batch(&["old"], 1_000)),
            9,
        )
        .await;
    assert_eq!(
        first_partition(&old).0,
        ResponseError::InvalidTimestamp.code()
    );
    let fresh = c
        .call(&produce_request(-1, "bounded", 0, batch(&["new"], now)), 9)
        .await;
    assert_eq!(
        first_partition(&fresh),
        (0, 0),
        "the refused batch took no offset"
    );
    let stamped = c
        .call(
            &produce_request(-1, "stamped", 0, batch(&["a", "b"], 1_000)),
            9,
        )
        .await;
    assert_eq!(first_partition(&stamped).0, 0);
    let fetched = c.call(&fetch_request("stamped", 0, 0, 0, 1), 12).await;
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    let header = validate(&records).expect("a stamped batch keeps a valid CRC");
    assert!(header.is_log_append_time());
    assert!(
        (header.max_timestamp - now).abs() < 60_000,
        "stamped with the leader's clock: {} vs {now}",
        header.max_timestamp
    );
    let decoded = decode_records(&records).unwrap();
    assert!(decoded.iter().all(|r| r.timestamp == header.max_timestamp));
    // The response carries the stamp (clients report it as the records' timestamp); a
    // CreateTime topic answers -1.
    let stamped_part = &stamped.responses[0].partition_responses[0];
    assert_eq!(stamped_part.log_append_time_ms, header.max_timestamp);
    let fresh_part = &fresh.responses[0].partition_responses[0];
    assert_eq!(fresh_part.log_append_time_ms, -1);
}

// Proves compression.type other than `producer` makes the leader recompress: an uncompressed
// batch produced to a zstd topic is stored zstd-compressed with the same records, and one to
// an `uncompressed` topic sent lz4-compressed is stored uncompressed.
#[tokio::test]
async fn test_leader_recompresses_to_the_topic_codec() {
    use railyard_core::batch::Compression;
    use railyard_node::kafka::recompress::recompress;
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let req = create_request(vec![
        creatable("zstd", 1, 1).with_configs(vec![topic_config("compression.type", "zstd")]),
        creatable("plain", 1, 1)
            .with_configs(vec![topic_config("compression.type", "uncompressed")]),
    ]);
    let created = c.call(&req, 7).await;
    assert!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );
    let sent = batch(&["a", "b", "c"], 1_000);
    let want = decode_records(&sent).unwrap();
    let lz4 = recompress(sent.clone(), Compression::Lz4, None).unwrap();
    for (topic, records, stored_as) in [
        ("zstd", sent.clone(), Compression::Zstd),
        ("plain", lz4, Compression::None),
    ] {
        let resp = c.call(&produce_request(-1, topic, 0, records), 9).await;
        assert_eq!(first_partition(&resp), (0, 0), "{topic}");
        let fetched = c.call(&fetch_request(topic, 0, 0, 0, 1), 12).await;
        let stored = fetched.responses[0].partitions[0].records.clone().unwrap();
        let header = validate(&stored).expect("a recompressed batch is valid");
        assert_eq!(header.compression(), stored_as, "{topic}");
        let plain = recompress(stored, Compression::None, None).unwrap();
        assert_eq!(decode_records(&plain).unwrap(), want, "{topic}");
    }
}

// Proves compression.<codec>.level reaches the leader's recompression: the same compressible
// batch produced to two gzip topics, at levels 1 and 9, is stored smaller at 9, and both read
// back as sent.
#[tokio::test]
async fn test_leader_recompresses_at_the_topic_level() {
    use railyard_core::batch::Compression;
    use railyard_node::kafka::recompress::recompress;
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let gzip_at = |topic, level| {
        creatable(topic, 1, 1).with_configs(vec![
            topic_config("compression.type", "gzip"),
            topic_config("compression.gzip.level", level),
        ])
    };
    let req = create_request(vec![gzip_at("fast", "1"), gzip_at("small", "9")]);
    let created = c.call(&req, 7).await;
    assert!(
        created.topics.iter().all(|t| t.error_code == 0),
        "{created:?}"
    );
    let line: String = (0..3_000)
        .map(|i| format!("event {} at {} ", i % 89, i % 7))
        .collect();
    let sent = batch(&[line.as_str(), line.as_str()], 1_000);
    let want = decode_records(&sent).unwrap();
    let mut sizes = Vec::new();
    for topic in ["fast", "small"] {
        let resp = c
            .call(&produce_request(-1, topic, 0, sent.clone()), 9)
            .await;
        assert_eq!(first_partition(&resp), (0, 0), "{topic}");
        let fetched = c.call(&fetch_request(topic, 0, 0, 0, 1), 12).await;
        let stored = fetched.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(validate(&stored).unwrap().compression(), Compression::Gzip);
        sizes.push(stored.len());
        let plain = recompress(stored, Compression::None, None).unwrap();
        assert_eq!(decode_records(&plain).unwrap(), want, "{topic}");
    }
    assert!(
        sizes[1] < sizes[0],
        "level 9 stored {} bytes, level 1 {}",
        sizes[1],
        sizes[0]
    );
}

fn delete_records_request(topic: &str, asked: &[(i32, i64)]) -> DeleteRecordsRequest {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let partitions = asked
        .iter()
        .map(|&(p, offset)| {
            DeleteRecordsPartition::default()
                .with_partition_index(p)
                .with_offset(offset)
        })
        .collect();
    DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name(topic))
            .with_partitions(partitions)])
}

/// (partition, error code, low watermark) of each answered partition.
fn deleted(resp: &DeleteRecordsResponse) -> Vec<(i32, i16, i64)> {
    resp.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.error_code, p.low_watermark))
        .collect()
}

// Proves DeleteRecords on the wire (v0 and flexible v2): the low watermark moves, fetches below
// it are OFFSET_OUT_OF_RANGE and report it as the log start, ListOffsets earliest follows, and
// bad input gets Kafka's codes without changing anything: past the high watermark
// OFFSET_OUT_OF_RANGE, an unknown partition UNKNOWN_TOPIC_OR_PARTITION, an internal topic
// INVALID_TOPIC_EXCEPTION.
#[tokio::test]
async fn test_delete_records_moves_the_log_start_and_refuses_bad_input() {
    let mut spec = Spec::new(1, vec![topic(TOPIC, 2, 1)]);
    spec.offsets_partitions = 1;
    let h = Harness::start(spec, KafkaConfig::default(), Barriers::default()).await;
    let mut c = h.connect().await;
    let produced = c
        .call(
            &produce_request(-1, TOPIC, 0, batch(&["a", "b", "c", "d"], 1_000)),
            9,
        )
        .await;
    assert_eq!(first_partition(&produced), (0, 0));
    let refused = c
        .call(&delete_records_request(TOPIC, &[(0, 5), (1, 0), (7, 0)]), 2)
        .await;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        deleted(&refused),
        vec![
            (0, ResponseError::OffsetOutOfRange.code(), -1),
            (1, 0, 0),
            (7, unknown, -1)
        ]
    );
    let earliest = c.call(&list_offsets_request(TOPIC, 0, -2), 1).await;
    assert_eq!(
        offset_of(&earliest).1,
        0,
        "a refused delete changed nothing"
    );
    let internal = c
        .call(&delete_records_request("__consumer_offsets", &[(0, 0)]), 0)
        .await;
    let invalid = ResponseError::InvalidTopicException.code();
    assert_eq!(deleted(&internal), vec![(0, invalid, -1)]);
    // Offset 2 is inside the one batch: the batch stays, the start moves to 2.
    let moved = c.call(&delete_records_request(TOPIC, &[(0, 2)]), 0).await;
    assert_eq!(deleted(&moved), vec![(0, 0, 2)]);
    let earliest = c.call(&list_offsets_request(TOPIC, 0, -2), 1).await;
    assert_eq!(offset_of(&earliest).1, 2);
    let below = c.call(&fetch_request(TOPIC, 0, 1, 0, 0), 12).await;
    assert_eq!(
        below.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    let at = c.call(&fetch_request(TOPIC, 0, 2, 0, 0), 12).await;
    let part = &at.responses[0].partitions[0];
    assert_eq!((part.error_code, part.log_start_offset), (0, 2));
    let records = part.records.clone().expect("the batch holding offset 2");
    assert_eq!(values(&records).last().map(|(o, _)| *o), Some(3));
    // -1: up to the high watermark.
    let all = c.call(&delete_records_request(TOPIC, &[(0, -1)]), 2).await;
    assert_eq!(deleted(&all), vec![(0, 0, 4)]);
}

/// IncrementalAlterConfigs of one BROKER resource ("" = the cluster-wide defaults).
fn incremental_broker(
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> IncrementalAlterConfigsRequest {
    let mut req = incremental(name, ops);
    req.resources[0].resource_type = 4;
    req
}

// Proves dynamic broker configs: IncrementalAlterConfigs of the cluster-wide default resource
// and of one broker changes the broker-level default of a topic config on a live topic without
// an override (message.max.bytes: produce refused, then allowed), DescribeConfigs reports the
// value with its source (DYNAMIC_DEFAULT_BROKER_CONFIG, DYNAMIC_BROKER_CONFIG), and bad input
// gets Kafka's codes and changes nothing: a name that is not a dynamic broker config, a bad
// value and an APPEND to a non-list INVALID_CONFIG, a resource that is not a registered broker
// INVALID_REQUEST.
#[tokio::test]
async fn test_dynamic_broker_configs_apply_and_refuse_bad_input() {
    let h = Harness::one_node("", KafkaConfig::default()).await;
    let mut c = h.connect().await;
    let code = |r: &IncrementalAlterConfigsResponse| r.responses[0].error_code;
    async fn produce_code(c: &mut KafkaConn) -> i16 {
        let big = "x".repeat(400);
        let req = produce_request(-1, TOPIC, 0, batch(&[big.as_str()], 1_000));
        first_partition(&c.call(&req, 9).await).0
    }
    async fn described(c: &mut KafkaConn) -> (Option<String>, i8) {
        let req = describe_request(vec![resource(2, TOPIC)]);
        let resp = c.call(&req, 4).await;
        let e = resp.results[0]
            .configs
            .iter()
            .find(|e| e.name.as_str() == "max.message.bytes")
            .cloned()
            .expect("reported");
        (e.value.map(|v| v.to_string()), e.config_source)
    }
    let max_message = |h: &Harness| {
        let layers = h.view().broker_layers(1, &Default::default());
        layers.merged().0.get("message.max.bytes").cloned()
    };
    let set = incremental_broker("", &[("message.max.bytes", 0, Some("200"))]);
    assert_eq!(code(&c.call(&set, 1).await), 0);
    eventually_async(
        "the default in the view",
        Duration::from_secs(10),
        || async {
            (max_message(&h).as_deref() == Some("200"))
                .then_some(())
                .ok_or(max_message(&h))
        },
    )
    .await;
    assert_eq!(
        produce_code(&mut c).await,
        ResponseError::MessageTooLarge.code()
    );
    assert_eq!(described(&mut c).await, (Some("200".into()), 3));
    for (bad, want) in [
        (
            incremental_broker("", &[("broker.id", 0, Some("5"))]),
            ResponseError::InvalidConfig,
        ),
        (
            incremental_broker("", &[("message.max.bytes", 0, Some("-5"))]),
            ResponseError::InvalidConfig,
        ),
        (
            incremental_broker("1", &[("log.retention.ms", 2, Some("5"))]),
            ResponseError::InvalidConfig,
        ),
        (
            incremental_broker("x", &[("message.max.bytes", 0, Some("5"))]),
            ResponseError::InvalidRequest,
        ),
        (
            incremental_broker("9", &[("message.max.bytes", 0, Some("5"))]),
            ResponseError::InvalidRequest,
        ),
    ] {
        let resp = c.call(&bad, 1).await;
        assert_eq!(code(&resp), want.code(), "{bad:?}");
        assert!(resp.responses[0].error_message.is_some());
    }
    assert_eq!(
        max_message(&h).as_deref(),
        Some("200"),
        "refusals changed nothing"
    );
    // This broker's own dynamic config beats the cluster-wide default.
    let mine = incremental_broker("1", &[("message.max.bytes", 0, Some("100000"))]);
    assert_eq!(code(&c.call(&mine, 0).await), 0);
    eventually_async(
        "the broker's own value",
        Duration::from_secs(10),
        || async {
            (max_message(&h).as_deref() == Some("100000"))
                .then_some(())
                .ok_or(max_message(&h))
        },
    )
    .await;
    assert_eq!(produce_code(&mut c).await, 0);
    assert_eq!(described(&mut c).await, (Some("100000".into()), 2));
    for name in ["1", ""] {
        let delete = incremental_broker(name, &[("message.max.bytes", 1, None)]);
        assert_eq!(code(&c.call(&delete, 1).await), 0);
    }
    eventually_async("the defaults deleted", Duration::from_secs(10), || async {
        max_message(&h)
            .is_none()
            .then_some(())
            .ok_or(max_message(&h))
    })
    .await;
    assert_eq!(described(&mut c).await, (Some("1048588".into()), 5));
}
