//! End-to-end tests of the Kafka listener: real kafka-protocol requests over loopback TCP against
//! an in-memory [`FakeBroker`] that keeps each partition's log as a list of stamped batches.

use std::collections::{BTreeMap, BTreeSet};
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
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    FetchRequest, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request as KafkaRequest};
use kafka_protocol::ResponseError;
use railyard_core::api::{Acks, ClientError, FetchReply, OffsetSpec, Request, Response};
use railyard_core::batch::{decode_records, stamp, validate, BatchBuilder, BatchHeader};
use railyard_core::metadata::{CONSUMER_OFFSETS_TOPIC, INTERNAL_TOPICS, METADATA_TOPIC};
use railyard_core::types::{valid_topic_name, Offset, TopicPartition};
use slog::{o, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

use super::handlers::Api;
use super::{serve, KafkaConfig};
use crate::broker::{Broker, BrokerInfo, ClusterView, PartitionView, TopicView};
use crate::metrics::{ConnectionErrorKind, Metrics};

const TOPIC: &str = "orders";
/// A partition this node does not lead; the fake answers NotLeader pointing at broker 2.
const MOVED: &str = "moved";
const EPOCH: i32 = 5;

#[derive(Default)]
struct FakeState {
    view: Arc<ClusterView>,
    logs: BTreeMap<TopicPartition, Vec<Bytes>>,
    /// Every core request seen, in arrival order.
    requests: Vec<Request>,
    not_leader: BTreeSet<TopicPartition>,
    /// When set, every produce waits here: a barrier of n proves n produces run at once.
    produce_barrier: Option<Arc<Barrier>>,
    /// When set, every CreateTopic waits here, as `produce_barrier` does for produces.
    create_barrier: Option<Arc<Barrier>>,
    /// Answer admin requests as a broker that is not the controller (broker 3 is).
    not_controller: bool,
    /// Topics created so far, for ids that differ from the static topics'.
    created: u8,
    /// Whether the broker allows auto-creation (the node's `auto_create_topics`).
    auto_create: bool,
}

/// An in-memory broker (also used by other listener modules' tests for its type).
#[derive(Clone)]
pub(crate) struct FakeBroker(Arc<Mutex<FakeState>>);

impl FakeBroker {
    fn new() -> FakeBroker {
        let partition = |p, leader, epoch| PartitionView {
            partition: p,
            leader: Some(leader),
            leader_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
        };
        let view = ClusterView::new(
            "railyard-test".into(),
            Some(3),
            vec![
                BrokerInfo {
                    id: 1,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: Some("rack-a".into()),
                },
                BrokerInfo {
                    id: 2,
                    host: "broker-2".into(),
                    port: 9093,
                    rack: None,
                },
            ],
            vec![
                TopicView {
                    name: TOPIC.into(),
                    id: [0xAB; 16],
                    partitions: vec![partition(0, 1, EPOCH), partition(1, 1, EPOCH)],
                    configs: BTreeMap::new(),
                },
                TopicView {
                    name: MOVED.into(),
                    id: [0xCD; 16],
                    partitions: vec![partition(0, 2, 7)],
                    configs: BTreeMap::new(),
                },
            ],
        );
        let mut state = FakeState {
            view: Arc::new(view),
            ..FakeState::default()
        };
        for p in 0..2 {
            state.logs.insert(TopicPartition::new(TOPIC, p), Vec::new());
        }
        state.not_leader.insert(TopicPartition::new(MOVED, 0));
        FakeBroker(Arc::new(Mutex::new(state)))
    }

    /// Adds `__consumer_offsets` (one partition, an empty log that would take writes) to the
    /// view, as the cluster will once it hosts consumer groups.
    fn with_internal_topic(self) -> FakeBroker {
        {
            let mut state = self.0.lock().unwrap();
            let mut topics = state.view.topics().to_vec();
            topics.push(TopicView {
                name: CONSUMER_OFFSETS_TOPIC.into(),
                id: [0xEE; 16],
                partitions: vec![PartitionView {
                    partition: 0,
                    leader: Some(1),
                    leader_epoch: EPOCH,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                }],
                configs: BTreeMap::new(),
            });
            state.set_topics(topics);
            let tp = TopicPartition::new(CONSUMER_OFFSETS_TOPIC, 0);
            state.logs.insert(tp, Vec::new());
        }
        self
    }

    fn log(&self, topic: &str, partition: i32) -> Vec<Bytes> {
        let state = self.0.lock().unwrap();
        state.logs[&TopicPartition::new(topic, partition)].clone()
    }

    fn requests(&self) -> Vec<Request> {
        self.0.lock().unwrap().requests.clone()
    }

    fn handle(&self, request: Request) -> Response {
        let mut state = self.0.lock().unwrap();
        state.requests.push(request.clone());
        let tp = match &request {
            Request::Fetch {
                tp,
                offset,
                max_bytes,
            } => return Response::Fetch(state.fetch(tp, *offset, *max_bytes)),
            Request::Produce { tp, .. }
            | Request::ListOffsets { tp, .. }
            | Request::OffsetForLeaderEpoch { tp, .. } => tp.clone(),
            Request::CreateTopic { .. } | Request::DeleteTopic { .. } if state.not_controller => {
                let e = ClientError::NotController {
                    controller: Some(3),
                };
                return Response::error_for(&request, e);
            }
            Request::CreateTopic { .. } => return Response::CreateTopic(state.create(&request)),
            Request::DeleteTopic { name } => return Response::DeleteTopic(state.delete(name)),
            Request::AutoCreateTopic { .. } => return Response::CreateTopic(Ok(())),
            Request::FetchMany { partitions } => {
                let replies = partitions
                    .iter()
                    .map(|p| state.fetch(&p.tp, p.offset, p.max_bytes))
                    .collect();
                return Response::FetchMany(replies);
            }
        };
        let missing = state.missing(&tp);
        let Some(log) = state.logs.get_mut(&tp) else {
            return error_response(&request, missing);
        };
        let end = log_end(log);
        match request {
            Request::Produce { batch, .. } => Response::Produce(match validate(&batch) {
                Err(e) => Err(ClientError::CorruptBatch(e)),
                Ok(_) => {
                    let mut stored = BytesMut::from(&batch[..]);
                    stamp(&mut stored, end, EPOCH);
                    log.push(stored.freeze());
                    Ok(end)
                }
            }),
            Request::ListOffsets { spec, .. } => Response::ListOffsets(Ok(match spec {
                OffsetSpec::Earliest => (0, -1),
                OffsetSpec::Latest => (end, -1),
                OffsetSpec::Timestamp(t) => log
                    .iter()
                    .flat_map(|b| decode_records(b).unwrap())
                    .find(|r| r.timestamp >= t)
                    .map_or((-1, -1), |r| (r.offset, r.timestamp)),
            })),
            Request::OffsetForLeaderEpoch { epoch, .. } => {
                Response::OffsetForLeaderEpoch(Ok(if epoch <= EPOCH as u64 {
                    (EPOCH as i64, end)
                } else {
                    (-1, -1)
                }))
            }
            Request::Fetch { .. }
            | Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::FetchMany { .. }
            | Request::AutoCreateTopic { .. } => {
                unreachable!("fetches and admin requests are answered before the log lookup")
            }
        }
    }
}

impl FakeState {
    /// A read of one partition, as `Replica::fetch` answers it: whole batches from the one
    /// holding `offset`, the first even past `max_bytes`.
    fn fetch(
        &self,
        tp: &TopicPartition,
        offset: Offset,
        max_bytes: u64,
    ) -> Result<FetchReply, ClientError> {
        let Some(log) = self.logs.get(tp) else {
            return Err(self.missing(tp));
        };
        let end = log_end(log);
        if offset < 0 || offset > end {
            return Err(ClientError::OffsetOutOfRange {
                offset,
                start: 0,
                end,
            });
        }
        let mut batches = Vec::new();
        let mut size = 0u64;
        for b in log.iter().filter(|b| next_offset(b) > offset) {
            if !batches.is_empty() && size + b.len() as u64 > max_bytes {
                break;
            }
            size += b.len() as u64;
            batches.push(b.clone());
        }
        Ok(FetchReply {
            batches,
            high_watermark: end,
            log_start_offset: 0,
        })
    }

    /// The error for a partition this node has no log of.
    fn missing(&self, tp: &TopicPartition) -> ClientError {
        if self.not_leader.contains(tp) {
            ClientError::NotLeader { leader: Some(2) }
        } else {
            ClientError::UnknownPartition(tp.clone())
        }
    }

    /// The controller's checks (as `core::node::handle_admin` makes them), then the topic
    /// appears in the view with every partition led by broker 1.
    fn create(&mut self, request: &Request) -> Result<(), ClientError> {
        let Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
            ..
        } = request
        else {
            unreachable!("create gets CreateTopic requests only")
        };
        if self.view.topic(name).is_some() {
            return Err(ClientError::TopicAlreadyExists(name.clone()));
        }
        if let Some((key, value)) = configs.iter().find(|(k, _)| {
            ![
                "retention.ms",
                "retention.bytes",
                "segment.bytes",
                "cleanup.policy",
            ]
            .contains(&k.as_str())
        }) {
            return Err(ClientError::InvalidConfig {
                key: key.clone(),
                value: value.clone(),
            });
        }
        if !valid_topic_name(name) {
            return Err(ClientError::InvalidTopic(name.clone()));
        }
        if !(1..=100).contains(partitions) {
            return Err(ClientError::InvalidPartitions(*partitions));
        }
        let brokers = self.view.brokers().len();
        if *replication_factor < 1 || *replication_factor as usize > brokers {
            return Err(ClientError::InvalidReplicationFactor {
                asked: *replication_factor,
                brokers,
            });
        }
        if *validate_only {
            return Ok(());
        }
        self.created += 1;
        let replicas: Vec<u64> = (1..=*replication_factor as u64).collect();
        let partitions = (0..*partitions as i32)
            .map(|p| PartitionView {
                partition: p,
                leader: Some(1),
                leader_epoch: 1,
                replicas: replicas.clone(),
                isr: replicas.clone(),
            })
            .collect::<Vec<_>>();
        for p in &partitions {
            let tp = TopicPartition::new(name.as_str(), p.partition);
            self.logs.insert(tp, Vec::new());
        }
        let mut topics = self.view.topics().to_vec();
        topics.push(TopicView {
            name: name.clone(),
            id: [self.created; 16],
            partitions,
            configs: configs.clone(),
        });
        self.set_topics(topics);
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        if self.view.topic(name).is_none() {
            return Err(ClientError::UnknownTopic(name.to_string()));
        }
        let mut topics = self.view.topics().to_vec();
        topics.retain(|t| t.name != name);
        self.set_topics(topics);
        self.logs.retain(|tp, _| tp.topic != name);
        Ok(())
    }

    /// Publishes a new view with `topics`, as the runtime does after a metadata change.
    fn set_topics(&mut self, topics: Vec<TopicView>) {
        let v = &self.view;
        let view = ClusterView::new(
            v.cluster_id().to_owned(),
            v.controller(),
            v.brokers().to_vec(),
            topics,
        );
        self.view = Arc::new(view);
    }
}

impl Broker for FakeBroker {
    fn node_id(&self) -> u64 {
        1
    }

    fn cluster(&self) -> Arc<ClusterView> {
        self.0.lock().unwrap().view.clone()
    }

    async fn request(&self, request: Request) -> Response {
        let barrier = match request {
            Request::Produce { .. } => self.0.lock().unwrap().produce_barrier.clone(),
            Request::CreateTopic { .. } => self.0.lock().unwrap().create_barrier.clone(),
            _ => None,
        };
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        self.handle(request)
    }

    async fn auto_create_topic(&self, topic: String) -> bool {
        if !self.0.lock().unwrap().auto_create {
            return false;
        }
        let request = Request::AutoCreateTopic {
            name: topic,
            partitions: 1,
            replication_factor: 3,
        };
        matches!(self.request(request).await, Response::CreateTopic(Ok(())))
    }
}

fn error_response(request: &Request, e: ClientError) -> Response {
    Response::error_for(request, e)
}

fn next_offset(batch: &Bytes) -> Offset {
    validate(batch).unwrap().next_offset()
}

fn log_end(log: &[Bytes]) -> Offset {
    log.last().map_or(0, next_offset)
}

/// A raw Kafka client: frames requests and reads responses, checking correlation ids.
struct Client {
    stream: TcpStream,
    next_correlation: i32,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            next_correlation: 1,
        }
    }

    async fn send<R: KafkaRequest>(&mut self, req: &R, version: i16) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("test-client")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        self.send_frame(&body).await;
        correlation
    }

    async fn send_frame(&mut self, body: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn recv_frame(&mut self) -> Bytes {
        let read = async {
            let len = self.stream.read_i32().await.unwrap();
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await.unwrap();
            Bytes::from(buf)
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no response within 10 s")
    }

    async fn recv<R: Decodable + HeaderVersion>(&mut self, version: i16, correlation: i32) -> R {
        let mut frame = self.recv_frame().await;
        let header = ResponseHeader::decode(&mut frame, R::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation, "responses out of order");
        R::decode(&mut frame, version).unwrap()
    }

    async fn call<R: KafkaRequest>(&mut self, req: &R, version: i16) -> R::Response {
        let correlation = self.send(req, version).await;
        self.recv::<R::Response>(version, correlation).await
    }

    /// Whether the server closed the connection (EOF or reset) rather than answering.
    async fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => panic!("connection neither answered nor closed within 10 s"),
        }
    }
}

async fn start(broker: FakeBroker, config: KafkaConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let logger = Logger::root(slog::Discard, o!());
    tokio::spawn(serve(listener, broker, config, logger));
    addr
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

fn values(records: &Bytes) -> Vec<(i64, String)> {
    // Fetched records are whole batches back to back; walk them by their lengths.
    let mut out = Vec::new();
    let mut rest = records.clone();
    while !rest.is_empty() {
        let len = BatchHeader::parse(&rest).unwrap().total_len();
        let one = rest.split_to(len);
        for r in decode_records(&one).unwrap() {
            out.push((r.offset, String::from_utf8(r.value.unwrap()).unwrap()));
        }
    }
    out
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
    let mut want: Vec<_> = Api::<FakeBroker>::ALL
        .iter()
        .map(|api| (api.key as i16, api.min, api.max))
        .collect();
    want.sort();
    want
}

#[tokio::test]
async fn test_api_versions_v3_and_v0_list_exactly_the_table() {
    // Both layouts advertise exactly the implemented APIs, with no error.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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

#[tokio::test]
async fn test_api_versions_too_new_falls_back_to_v0() {
    // KIP-511: ApiVersions v9 gets UNSUPPORTED_VERSION in the v0 layout, and the connection
    // stays usable for the retry.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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

#[tokio::test]
async fn test_metadata_auto_creates_only_when_broker_and_request_allow() {
    // A missing topic is auto-created only when the broker allows it and the request does
    // (v4+ flag; always before v4): the answer is then LEADER_NOT_AVAILABLE (retriable).
    // Invalid and internal names are never created.
    let fake = FakeBroker::new();
    let addr = start(fake.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let ask = |n: &str, allow: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(n)))
            ]))
            .with_allow_auto_topic_creation(allow)
    };
    let auto_requests = |f: &FakeBroker| {
        f.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::AutoCreateTopic { name, .. } => Some(name),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let code = |r: &kafka_protocol::messages::MetadataResponse| r.topics[0].error_code;
    let off = c.call(&ask("fresh", true), 9).await;
    assert_eq!(code(&off), ResponseError::UnknownTopicOrPartition.code());
    fake.0.lock().unwrap().auto_create = true;
    let refused = c.call(&ask("fresh", false), 9).await;
    assert_eq!(
        code(&refused),
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(auto_requests(&fake).is_empty());
    let made = c.call(&ask("fresh", true), 9).await;
    assert_eq!(code(&made), ResponseError::LeaderNotAvailable.code());
    // v1 has no flag (its default, true, is the only encodable value): always allowed.
    let v1 = c.call(&ask("older", true), 1).await;
    assert_eq!(code(&v1), ResponseError::LeaderNotAvailable.code());
    let bad = c.call(&ask("a/b", true), 9).await;
    assert_eq!(code(&bad), ResponseError::InvalidTopicException.code());
    let existing = c.call(&ask(TOPIC, true), 9).await;
    assert_eq!(code(&existing), 0);
    assert_eq!(auto_requests(&fake), vec!["fresh", "older"]);
}

#[tokio::test]
async fn test_metadata_v12_and_v1() {
    // Metadata reports brokers, cluster id, controller, leaders, epochs, replicas, ISR and
    // topic ids; unknown topics get UNKNOWN_TOPIC_OR_PARTITION; v1 empty list means no topics.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;

    let all = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(all.cluster_id.as_deref(), Some("railyard-test"));
    assert_eq!(all.controller_id, BrokerId(3));
    let brokers: Vec<_> = all
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                b.host.to_string(),
                b.port,
                b.rack.as_deref().map(String::from),
            )
        })
        .collect();
    assert_eq!(
        brokers,
        vec![
            (1, "127.0.0.1".into(), 9092, Some("rack-a".into())),
            (2, "broker-2".into(), 9093, None)
        ]
    );
    assert_eq!(all.topics.len(), 2);
    let orders = &all.topics[0];
    assert_eq!(orders.name.as_deref().map(|n| n.as_str()), Some(TOPIC));
    assert_eq!(orders.error_code, 0);
    assert_eq!(*orders.topic_id.as_bytes(), [0xAB; 16]);
    assert_eq!(orders.partitions.len(), 2);
    let p = &orders.partitions[1];
    assert_eq!(
        (p.partition_index, p.leader_id, p.leader_epoch),
        (1, BrokerId(1), EPOCH)
    );
    assert_eq!(p.replica_nodes, vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
    assert_eq!(p.isr_nodes, vec![BrokerId(1), BrokerId(2)]);
    // Broker 3 is not in the broker list (fenced): its replica is offline.
    assert_eq!(p.offline_replicas, vec![BrokerId(3)]);
    let moved = &all.topics[1];
    assert_eq!(
        (
            moved.partitions[0].leader_id,
            moved.partitions[0].leader_epoch
        ),
        (BrokerId(2), 7)
    );

    let topics = |names: &[&str]| {
        Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect::<Vec<_>>(),
        )
    };
    let some = c
        .call(
            &MetadataRequest::default().with_topics(topics(&["nope", TOPIC])),
            1,
        )
        .await;
    assert_eq!(some.controller_id, BrokerId(3));
    assert_eq!(some.brokers[0].rack.as_deref(), Some("rack-a"));
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

    let none = c
        .call(&MetadataRequest::default().with_topics(topics(&[])), 1)
        .await;
    assert!(none.topics.is_empty());
    assert_eq!(none.brokers.len(), 2);
}

#[tokio::test]
async fn test_produce_acks_all_then_fetch_returns_records() {
    // acks=-1 reaches the core as Acks::All, and a fetch returns the same records at the
    // offsets the produce answered, across old and flexible versions.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    let acks: Vec<_> = broker
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::Produce { acks, .. } => Some(acks),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![Acks::All; 3]);

    // A fetch from the middle returns the batch containing the offset, and nothing past it.
    let mid = c.call(&fetch_request(TOPIC, 0, 4, 0, 0), 12).await;
    let records = mid.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(values(&records), expect[4..].to_vec());
}

#[tokio::test]
async fn test_acks_zero_gets_no_response() {
    // acks=0 stores the batch but answers nothing: the next response on the connection is the
    // next request's. acks=1 reaches the core as Acks::Leader.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    c.send(&produce_request(0, TOPIC, 0, batch(&["x"], 5)), 9)
        .await;
    let resp = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert_eq!(resp.topics.len(), 2);
    assert_eq!(broker.log(TOPIC, 0).len(), 1);

    let one = c
        .call(&produce_request(1, TOPIC, 0, batch(&["y"], 5)), 9)
        .await;
    assert_eq!(one.responses[0].partition_responses[0].base_offset, 1);
    let produces: Vec<_> = broker
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::Produce { acks, .. } => Some(acks),
            _ => None,
        })
        .collect();
    assert_eq!(produces, vec![Acks::Leader, Acks::Leader]);
}

#[tokio::test]
async fn test_acks_zero_failure_closes_connection() {
    // An acks=0 produce that fails closes the connection, Kafka's only way to tell the client.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    c.send(&produce_request(0, "nope", 0, batch(&["x"], 5)), 9)
        .await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn test_bad_crc_is_corrupt_message_and_stores_nothing() {
    // A flipped record byte fails the CRC: CORRUPT_MESSAGE, and nothing is stored, also when
    // the bad batch follows a good one in the same record set.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let mut bad = BytesMut::from(&batch(&["hello"], 1)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let bad = bad.freeze();
    let resp = c.call(&produce_request(-1, TOPIC, 0, bad.clone()), 9).await;
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::CorruptMessage.code());

    let mut set = BytesMut::from(&batch(&["good"], 1)[..]);
    set.put_slice(&bad);
    let resp = c
        .call(&produce_request(-1, TOPIC, 0, set.freeze()), 3)
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::CorruptMessage.code());
    assert_eq!(p.base_offset, -1);
    assert!(broker.log(TOPIC, 0).is_empty());

    // Trailing bytes that are not a whole batch are refused before the core sees them.
    let mut torn = BytesMut::from(&batch(&["good"], 1)[..]);
    torn.put_slice(&[0, 0, 0]);
    let resp = c
        .call(&produce_request(-1, TOPIC, 0, torn.freeze()), 3)
        .await;
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::CorruptMessage.code());
    assert!(broker.log(TOPIC, 0).is_empty());
}

#[tokio::test]
async fn test_concatenated_batches_become_one_core_produce_each() {
    // Two v2 batches in one partition's records are stored as two batches, in order, and the
    // answer is the first one's base offset.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    c.call(&produce_request(-1, TOPIC, 1, batch(&["pre"], 1)), 9)
        .await;
    let mut set = BytesMut::from(&batch(&["a", "b"], 1)[..]);
    set.put_slice(&batch(&["c"], 2));
    let resp = c
        .call(&produce_request(-1, TOPIC, 1, set.freeze()), 9)
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 1));
    let log = broker.log(TOPIC, 1);
    assert_eq!(log.len(), 3);
    assert_eq!(next_offset(&log[1]), 3);
    assert_eq!(next_offset(&log[2]), 4);
}

#[tokio::test]
async fn test_partitions_of_one_produce_run_concurrently() {
    // With a two-party barrier inside the broker, the produce completes only if both
    // partitions' core requests are in flight at the same time.
    let broker = FakeBroker::new();
    broker.0.lock().unwrap().produce_barrier = Some(Arc::new(Barrier::new(2)));
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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

#[tokio::test]
async fn test_unknown_topic_and_bad_acks_skip_the_core() {
    // Unknown topics/partitions and invalid acks are answered by the listener alone.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
}

#[tokio::test]
async fn test_not_leader_names_the_current_leader() {
    // NOT_LEADER_OR_FOLLOWER carries the leader and its epoch (produce v10+, fetch v12), and
    // produce adds the leader's endpoint.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let resp = c
        .call(&produce_request(-1, MOVED, 0, batch(&["x"], 1)), 12)
        .await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(
        (p.current_leader.leader_id, p.current_leader.leader_epoch),
        (BrokerId(2), 7)
    );
    assert_eq!(resp.node_endpoints.len(), 1);
    assert_eq!(resp.node_endpoints[0].host.as_str(), "broker-2");

    // v9 has no such fields; the error alone must still encode.
    let old = c
        .call(&produce_request(-1, MOVED, 0, batch(&["x"], 1)), 9)
        .await;
    let code = old.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::NotLeaderOrFollower.code());

    let fetched = c.call(&fetch_request(MOVED, 0, 0, 0, 0), 12).await;
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(part.current_leader.leader_id, BrokerId(2));
    assert_eq!(part.current_leader.leader_epoch, 7);
}

#[tokio::test]
async fn test_fetch_out_of_range() {
    // A fetch past the log end is OFFSET_OUT_OF_RANGE with an invalid high watermark.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let fetched = c.call(&fetch_request(TOPIC, 0, 100, 0, 0), 4).await;
    let part = &fetched.responses[0].partitions[0];
    assert_eq!(part.error_code, ResponseError::OffsetOutOfRange.code());
    assert_eq!(part.high_watermark, -1);
}

#[tokio::test]
async fn test_fetch_long_poll_waits_for_data_and_for_max_wait() {
    // With min_bytes=1 an empty fetch waits: it answers as soon as a produce lands, and
    // otherwise only after max_wait_ms.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let started = Instant::now();
    let empty = c.call(&fetch_request(TOPIC, 0, 0, 200, 1), 12).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    let records = empty.responses[0].partitions[0].records.clone().unwrap();
    assert!(records.is_empty());

    let corr = c.send(&fetch_request(TOPIC, 0, 0, 20_000, 1), 12).await;
    let mut producer = Client::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer
        .call(&produce_request(-1, TOPIC, 0, batch(&["late"], 1)), 9)
        .await;
    let waited = Instant::now();
    let got: kafka_protocol::messages::FetchResponse = c.recv(12, corr).await;
    assert!(waited.elapsed() < Duration::from_secs(10));
    let records = got.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(values(&records), vec![(0, "late".to_string())]);
}

#[tokio::test]
async fn test_list_offsets_earliest_latest_and_timestamp() {
    // -2 is the log start, -1 the high watermark, and a timestamp finds the first record at or
    // after it, in v1 and flexible v6.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
}

#[tokio::test]
async fn test_offset_for_leader_epoch_and_describe_cluster() {
    // OffsetForLeaderEpoch returns the core's (epoch, end offset); DescribeCluster the brokers.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    c.call(&produce_request(-1, TOPIC, 0, batch(&["a", "b"], 1)), 9)
        .await;
    let req =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_leader_epoch(EPOCH),
                OffsetForLeaderPartition::default()
                    .with_partition(7)
                    .with_leader_epoch(EPOCH),
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
            (0, EPOCH, 2)
        );
        assert_eq!(
            parts[1].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }
    for version in [0, 1] {
        let resp = c.call(&DescribeClusterRequest::default(), version).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.cluster_id.as_str(), "railyard-test");
        assert_eq!(resp.controller_id, BrokerId(3));
        let ids: Vec<_> = resp
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.port))
            .collect();
        assert_eq!(ids, vec![(1, 9092), (2, 9093)]);
    }
}

#[tokio::test]
async fn test_bad_frames_close_the_connection_and_the_server_keeps_serving() {
    // Over-limit lengths, negative lengths, unknown api keys, unadvertised versions and
    // undecodable bodies each close their connection; new connections are still served.
    let config = KafkaConfig {
        max_frame_bytes: 1024,
        ..KafkaConfig::default()
    };
    let addr = start(FakeBroker::new(), config).await;

    let mut over = Client::connect(addr).await;
    over.stream.write_all(&2048i32.to_be_bytes()).await.unwrap();
    assert!(over.is_closed().await);

    let mut negative = Client::connect(addr).await;
    negative
        .stream
        .write_all(&(-5i32).to_be_bytes())
        .await
        .unwrap();
    assert!(negative.is_closed().await);

    let mut garbage = Client::connect(addr).await;
    garbage
        .send_frame(&[0x7F, 0x7F, 0, 1, 0, 0, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF])
        .await;
    assert!(garbage.is_closed().await);

    // Produce v2 is below the floor we advertise.
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(2)
        .with_correlation_id(9)
        .encode(&mut frame, 1)
        .unwrap();
    frame.put_slice(&[0; 16]);
    let mut below_floor = Client::connect(addr).await;
    below_floor.send_frame(&frame).await;
    assert!(below_floor.is_closed().await);

    let mut truncated = Client::connect(addr).await;
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(12)
        .with_correlation_id(1)
        .encode(&mut frame, 2)
        .unwrap();
    frame.put_u8(4); // a compact array of three topics, then nothing
    truncated.send_frame(&frame).await;
    assert!(truncated.is_closed().await);

    // Four billion topics in a 20-byte frame: refused by the guard, where kafka-protocol would
    // have tried to preallocate hundreds of GiB and aborted the process.
    let mut huge = Client::connect(addr).await;
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(12)
        .with_correlation_id(1)
        .encode(&mut frame, 2)
        .unwrap();
    frame.put_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    huge.send_frame(&frame).await;
    assert!(huge.is_closed().await);

    let mut fresh = Client::connect(addr).await;
    let resp = fresh.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(resp.error_code, 0);
}

/// Waits up to 10 s for `check` to hold: the listener records a request just after writing its
/// response, so a client can read the response before the counters move.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn test_metrics_count_requests_bytes_errors_and_refusals() {
    // With a registry configured, the listener counts each request per API with its bytes and
    // latency, every non-zero error code it answers, and each connection it closes, by reason.
    let metrics = Arc::new(Metrics::new());
    let config = KafkaConfig {
        max_frame_bytes: 1024,
        metrics: Some(metrics.clone()),
        ..KafkaConfig::default()
    };
    let addr = start(FakeBroker::new(), config).await;
    let mut c = Client::connect(addr).await;
    c.call(&ApiVersionsRequest::default(), 3).await;
    let resp = c
        .call(&produce_request(-1, "nope", 0, batch(&["x"], 1)), 9)
        .await;
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, unknown);
    c.call(&produce_request(-1, TOPIC, 0, batch(&["x"], 1)), 9)
        .await;
    eventually("two produces", || metrics.requests(ApiKey::Produce) == 2).await;
    assert_eq!(metrics.requests(ApiKey::ApiVersions), 1);
    assert_eq!(metrics.error_codes(ApiKey::Produce, unknown), 1);
    assert_eq!(metrics.error_codes(ApiKey::ApiVersions, 0), 0);
    assert!(metrics
        .request_latency_quantile(ApiKey::Produce, 1.0)
        .is_some());

    let mut over = Client::connect(addr).await;
    over.stream.write_all(&2048i32.to_be_bytes()).await.unwrap();
    assert!(over.is_closed().await);
    let too_large = ConnectionErrorKind::FrameTooLarge;
    eventually("a refusal", || metrics.connection_errors(too_large) == 1).await;

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
    eventually("connections to close", || {
        metrics
            .render_prometheus()
            .contains("railyard_kafka_connections 0\n")
    })
    .await;
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

/// (code, message) of each topic of a CreateTopics response.
fn create_codes(resp: &CreateTopicsResponse) -> Vec<(String, i16)> {
    resp.topics
        .iter()
        .map(|t| (t.name.to_string(), t.error_code))
        .collect()
}

fn created_topic_names(broker: &FakeBroker) -> Vec<String> {
    broker
        .cluster()
        .topics()
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

#[tokio::test]
async fn test_create_topics_then_duplicate_is_topic_already_exists() {
    // A create reaches the core with the request's partitions, replication factor and configs;
    // v7 answers with the resolved settings, configs (override vs default) and the new topic's
    // id; Metadata then lists the topic; creating it again is TOPIC_ALREADY_EXISTS (36) with a
    // message, in the classic layout too.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let req = create_request(vec![
        creatable("fresh", 3, 2).with_configs(vec![topic_config("retention.ms", "1000")])
    ]);
    let resp = c.call(&req, 7).await;
    let t = &resp.topics[0];
    assert_eq!((t.name.as_str(), t.error_code), ("fresh", 0));
    assert_eq!(t.error_message, None);
    assert_eq!((t.num_partitions, t.replication_factor), (3, 2));
    let id = broker.cluster().topic("fresh").unwrap().id;
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
        configs,
        vec![
            ("cleanup.policy".into(), "delete".into(), 5),
            ("retention.bytes".into(), "-1".into(), 5),
            ("retention.ms".into(), "1000".into(), 1),
            ("segment.bytes".into(), "1073741824".into(), 5),
        ]
    );
    match &broker.requests()[..] {
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
                ("fresh", 3, 2)
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
    let meta = c
        .call(
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("fresh")))
            ])),
            12,
        )
        .await;
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

#[tokio::test]
async fn test_create_topics_defaults_and_refusals() {
    // -1 partitions is 1 and -1 replication is 3 capped at the two brokers; bad replication
    // factors, partition counts, names and configs get their codes; null config values and
    // duplicate names are refused by the listener without a core request.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let resp = c
        .call(&create_request(vec![creatable("dflt", -1, -1)]), 5)
        .await;
    let t = &resp.topics[0];
    assert_eq!(
        (t.error_code, t.num_partitions, t.replication_factor),
        (0, 1, 2)
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
    let before = broker.requests().len();
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
    assert_eq!(broker.requests().len(), before + 8);
    assert_eq!(created_topic_names(&broker), vec![TOPIC, MOVED, "dflt"]);
}

#[tokio::test]
async fn test_topics_of_one_create_run_concurrently() {
    // With a two-party barrier inside the broker, the request completes only if both topics'
    // core requests are in flight at the same time.
    let broker = FakeBroker::new();
    broker.0.lock().unwrap().create_barrier = Some(Arc::new(Barrier::new(2)));
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let req = create_request(vec![creatable("one", 1, 1), creatable("two", 1, 1)]);
    let resp = c.call(&req, 7).await;
    assert_eq!(
        create_codes(&resp),
        vec![("one".into(), 0), ("two".into(), 0)]
    );
}

#[tokio::test]
async fn test_admin_on_a_non_controller_is_not_controller() {
    // A broker that is not the controller answers NOT_CONTROLLER (41) with a message naming
    // the controller, for creates and deletes alike; nothing changes.
    let broker = FakeBroker::new();
    broker.0.lock().unwrap().not_controller = true;
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let resp = c
        .call(&create_request(vec![creatable("elsewhere", 1, 1)]), 7)
        .await;
    let t = &resp.topics[0];
    assert_eq!(t.error_code, ResponseError::NotController.code());
    assert!(t.error_message.as_deref().unwrap().contains("broker 3"));
    let resp = c.call(&delete_request(&[TOPIC]), 5).await;
    let t = &resp.responses[0];
    assert_eq!(t.error_code, ResponseError::NotController.code());
    assert!(t.error_message.as_deref().unwrap().contains("broker 3"));
    assert_eq!(created_topic_names(&broker), vec![TOPIC, MOVED]);
}

#[tokio::test]
async fn test_create_validate_only_creates_nothing() {
    // validate_only runs the controller's checks and answers the would-be settings, but no
    // topic appears; its errors are still reported.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    assert!(broker.requests().iter().all(|r| matches!(
        r,
        Request::CreateTopic {
            validate_only: true,
            ..
        }
    )));
    assert_eq!(created_topic_names(&broker), vec![TOPIC, MOVED]);
}

#[tokio::test]
async fn test_create_topics_manual_assignment_reaches_the_controller_checked() {
    // Kafka's manual replica assignment: partition indexes 0..n each once, num_partitions and
    // replication_factor -1. The core gets the assignment in partition order; malformed ones
    // are refused by the listener with Kafka's codes.
    let assign = |p: i32, ids: &[i32]| {
        CreatableReplicaAssignment::default()
            .with_partition_index(p)
            .with_broker_ids(ids.iter().map(|i| BrokerId(*i)).collect())
    };
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    assert_eq!(
        create_codes(&resp),
        vec![
            ("manual".into(), 0),
            (
                "holes".into(),
                ResponseError::InvalidReplicaAssignment.code()
            ),
            (
                "twice".into(),
                ResponseError::InvalidReplicaAssignment.code()
            ),
            (
                "negative".into(),
                ResponseError::InvalidReplicaAssignment.code()
            ),
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
    let seen: Vec<Vec<Vec<u64>>> = broker
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::CreateTopic { assignments, .. } => Some(assignments),
            _ => None,
        })
        .collect();
    assert_eq!(seen, vec![vec![vec![1, 2], vec![2, 1]]]);
}

#[tokio::test]
async fn test_delete_topics_then_again_is_unknown_topic() {
    // A delete removes the topic; deleting it again is UNKNOWN_TOPIC_OR_PARTITION (3), in the
    // classic (v1), flexible (v4) and message-bearing (v5) layouts.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let resp = c.call(&delete_request(&[TOPIC]), 1).await;
    assert_eq!(
        resp.responses[0].name.as_deref().map(|n| n.as_str()),
        Some(TOPIC)
    );
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(created_topic_names(&broker), vec![MOVED]);
    for version in [1, 4, 5] {
        let resp = c.call(&delete_request(&[TOPIC]), version).await;
        let t = &resp.responses[0];
        assert_eq!(t.error_code, ResponseError::UnknownTopicOrPartition.code());
        assert_eq!(t.error_message.is_some(), version >= 5, "v{version}");
    }
    // A name given twice is refused once, without a core request.
    let before = broker.requests().len();
    let resp = c.call(&delete_request(&[MOVED, MOVED]), 5).await;
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(
        resp.responses[0].error_code,
        ResponseError::InvalidRequest.code()
    );
    assert_eq!(broker.requests().len(), before);
}

#[tokio::test]
async fn test_delete_topics_v6_by_id_and_by_name() {
    // v6 names topics by id (the response fills in the name) or by name (the response fills
    // in the id); an unknown id is UNKNOWN_TOPIC_ID.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
    let by_id = |id: [u8; 16]| {
        DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(super::codec::uuid_carrier(id).topic_id)
    };
    let req = DeleteTopicsRequest::default().with_topics(vec![
        by_id([0xAB; 16]),
        DeleteTopicState::default().with_name(Some(name(MOVED))),
        by_id([0x11; 16]),
    ]);
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
            (Some(TOPIC.into()), [0xAB; 16], 0),
            (Some(MOVED.into()), [0xCD; 16], 0),
            (None, [0x11; 16], ResponseError::UnknownTopicId.code()),
        ]
    );
    assert!(created_topic_names(&broker).is_empty());
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

#[tokio::test]
async fn test_describe_configs_for_topics_and_brokers() {
    // A topic reports its four configs as defaults (source DEFAULT_CONFIG, with the broker
    // config as synonym when asked); configuration_keys filters them; a broker reports no
    // configs and no error; an unknown topic is UNKNOWN_TOPIC_OR_PARTITION; other resource
    // types are INVALID_REQUEST.
    let addr = start(FakeBroker::new(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
                assert_eq!(c.synonyms.len(), 1);
                assert_eq!(c.synonyms[0].source, 5);
                (
                    c.name.to_string(),
                    c.value.as_deref().unwrap().to_string(),
                    c.config_source,
                )
            })
            .collect();
        assert_eq!(
            all,
            vec![
                ("cleanup.policy".into(), "delete".into(), 5),
                ("retention.bytes".into(), "-1".into(), 5),
                ("retention.ms".into(), "604800000".into(), 5),
                ("segment.bytes".into(), "1073741824".into(), 5),
            ]
        );
        assert_eq!(
            resp.results[0].configs[2].synonyms[0].name.as_str(),
            "log.retention.ms"
        );
        if version >= 3 {
            assert_eq!(resp.results[0].configs[2].config_type, 5); // LONG
        }
        let filtered: Vec<_> = resp.results[1]
            .configs
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(filtered, vec!["retention.ms".to_string()]);
        assert!(resp.results[2].configs.is_empty());
        assert_eq!(resp.results[2].resource_type, 4);
        assert_eq!(resp.results[2].error_message, None);
        assert!(resp.results[4].error_message.is_some());
    }
}

#[tokio::test]
async fn test_fetch_across_partitions_is_one_core_request() {
    // A fetch naming several partitions reaches the core as one FetchMany of the partitions in
    // the view, in request order; a partition missing from the view is answered here; the
    // request's max_bytes is shared in request order, so a later partition gets what is left.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    let before = broker.requests().len();
    let resp = c.call(&req, 12).await;
    let fetches: Vec<_> = broker.requests()[before..]
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

#[tokio::test]
async fn test_metadata_marks_internal_topics_internal() {
    // An internal topic in the view is listed with is_internal set; client topics are not.
    let addr = start(
        FakeBroker::new().with_internal_topic(),
        KafkaConfig::default(),
    )
    .await;
    let mut c = Client::connect(addr).await;
    let resp = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    let flags: Vec<_> = resp
        .topics
        .iter()
        .map(|t| (t.name.as_deref().unwrap().to_string(), t.is_internal))
        .collect();
    assert_eq!(
        flags,
        vec![
            (TOPIC.to_string(), false),
            (MOVED.to_string(), false),
            (CONSUMER_OFFSETS_TOPIC.to_string(), true),
        ]
    );
}

#[tokio::test]
async fn test_create_internal_topic_is_invalid_request() {
    // Creating any internal topic is INVALID_REQUEST with a message, whatever else is wrong with
    // the request, and reaches neither the core nor the view.
    let broker = FakeBroker::new();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
    assert_eq!(created_topic_names(&broker), vec![TOPIC, MOVED]);
}

#[tokio::test]
async fn test_delete_internal_topic_is_invalid_topic_exception() {
    // Deleting an internal topic, by name (listed in the view or not) or by id, is
    // INVALID_TOPIC_EXCEPTION (with a message from v5), reaches no core, and deletes nothing.
    let broker = FakeBroker::new().with_internal_topic();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    let by_id = DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
        .with_name(None)
        .with_topic_id(super::codec::uuid_carrier([0xEE; 16]).topic_id)]);
    let resp = c.call(&by_id, 6).await;
    let r = &resp.responses[0];
    assert_eq!(
        (r.error_code, *r.topic_id.as_bytes()),
        (invalid, [0xEE; 16])
    );
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
    assert_eq!(
        created_topic_names(&broker),
        vec![TOPIC, MOVED, CONSUMER_OFFSETS_TOPIC]
    );
}

#[tokio::test]
async fn test_produce_to_internal_topic_is_invalid_topic_exception() {
    // A produce to an internal topic is INVALID_TOPIC_EXCEPTION whether or not the view lists
    // it, and nothing is written: the listener answers without the core.
    let broker = FakeBroker::new().with_internal_topic();
    let addr = start(broker.clone(), KafkaConfig::default()).await;
    let mut c = Client::connect(addr).await;
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
    assert!(broker.requests().is_empty(), "{:?}", broker.requests());
    assert!(broker.log(CONSUMER_OFFSETS_TOPIC, 0).is_empty());
}
