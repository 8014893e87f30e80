//! One handler per implemented Kafka API: each turns a decoded request into core requests on the
//! [`Broker`] and builds the typed response for the requested version.
//!
//! Handlers never see bytes: decoding, version checks and encoding happen in `codec` and the
//! connection loop. A handler sets only fields that exist in the version it answers, because
//! kafka-protocol refuses to encode a non-default value into a version that lacks the field.
//! Partitions that are not in the broker's cluster view are answered
//! UNKNOWN_TOPIC_OR_PARTITION here, without a trip to the core.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch as FetchLeader, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch as ProduceLeader, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, DescribeClusterRequest, DescribeClusterResponse, FetchRequest,
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{Acks, ClientError, OffsetSpec, Request, Response};
use railyard_core::batch;
use railyard_core::types::{valid_topic_name, NodeId, Offset, TopicPartition};
use tokio::task::JoinHandle;

use super::codec::{split_batches, uuid_carrier, SUPPORTED_APIS};
use super::KafkaConfig;
use crate::broker::{Broker, ClusterView, PartitionView, TopicView};

/// Kafka's internal topics, flagged in Metadata so that clients skip them in pattern
/// subscriptions.
const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Why one partition of a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// The core refused or failed the request.
    Core(ClientError),
    /// The listener refused it before the core saw it (unknown partition, bad acks, ...).
    Kafka(ResponseError),
}

impl PartitionError {
    /// The Kafka error code sent to the client.
    pub fn code(&self) -> i16 {
        match self {
            PartitionError::Core(e) => client_error_code(e),
            PartitionError::Kafka(e) => e.code(),
        }
    }

    /// The leader a NOT_LEADER_OR_FOLLOWER error points at, if any.
    fn leader(&self) -> Option<NodeId> {
        match self {
            PartitionError::Core(ClientError::NotLeader { leader }) => *leader,
            _ => None,
        }
    }
}

/// The Kafka error code of each core error (the mapping `api::ClientError` documents).
pub fn client_error_code(e: &ClientError) -> i16 {
    let kafka = match e {
        ClientError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        ClientError::UnknownPartition(_) => ResponseError::UnknownTopicOrPartition,
        ClientError::CorruptBatch(_) => ResponseError::CorruptMessage,
        ClientError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        ClientError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        ClientError::Indeterminate { .. } => ResponseError::RequestTimedOut,
        ClientError::Storage(_) => ResponseError::KafkaStorageError,
        ClientError::NotController { .. } => ResponseError::NotController,
        ClientError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ClientError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ClientError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ClientError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ClientError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        ClientError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        ClientError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ClientError::InvalidRequest(_) => ResponseError::InvalidRequest,
    };
    kafka.code()
}

/// The ApiVersions response listing [`SUPPORTED_APIS`]. Fits every version, including the v0
/// layout of the UNSUPPORTED_VERSION fallback.
pub fn api_versions(error: Option<ResponseError>) -> ApiVersionsResponse {
    let keys = SUPPORTED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(keys)
}

/// Asks for the auto-creation of every requested topic that does not exist, when the request
/// allows it (always before v4, by flag from v4) and the broker does; returns the names whose
/// creation was requested.
pub async fn auto_create_missing<B: Broker>(
    broker: &B,
    req: &MetadataRequest,
    version: i16,
) -> Vec<String> {
    let mut creating = Vec::new();
    if version >= 4 && !req.allow_auto_topic_creation {
        return creating;
    }
    let Some(list) = &req.topics else {
        return creating;
    };
    let view = broker.cluster();
    for t in list {
        let Some(name) = &t.name else { continue };
        if may_auto_create(&view, name.as_str()) && broker.auto_create_topic(name.to_string()).await
        {
            creating.push(name.to_string());
        }
    }
    creating
}

/// Whether a client's use of `name` may ask for its creation: missing from the view, a valid
/// name, not an internal topic.
fn may_auto_create(view: &ClusterView, name: &str) -> bool {
    !view.topics.iter().any(|v| v.name == name)
        && valid_topic_name(name)
        && !INTERNAL_TOPICS.contains(&name)
}

/// Metadata: brokers, cluster id, controller and the requested topics. Topics in `creating`
/// are being auto-created: LEADER_NOT_AVAILABLE (retriable) rather than unknown.
pub fn metadata(
    view: &ClusterView,
    req: &MetadataRequest,
    version: i16,
    creating: &[String],
) -> MetadataResponse {
    let brokers = view
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    // Kafka's rule: null asks for every topic, and so does an empty list in v0 only; from v1 an
    // empty list asks for none (clients use it to learn the brokers cheaply).
    let topic = |t: &TopicView| metadata_topic(t, view, version);
    let topics = match &req.topics {
        None => view.topics.iter().map(topic).collect(),
        Some(list) if list.is_empty() && version == 0 => view.topics.iter().map(topic).collect(),
        Some(list) => list
            .iter()
            .map(|t| match &t.name {
                Some(name) => match view.topics.iter().find(|v| v.name == name.as_str()) {
                    Some(t) => topic(t),
                    None if !valid_topic_name(name.as_str()) => metadata_topic_error(
                        Some(name.clone()),
                        ResponseError::InvalidTopicException,
                    ),
                    None if creating.iter().any(|c| c == name.as_str()) => {
                        metadata_topic_error(Some(name.clone()), ResponseError::LeaderNotAvailable)
                    }
                    None => metadata_topic_error(
                        Some(name.clone()),
                        ResponseError::UnknownTopicOrPartition,
                    ),
                },
                None => match view.topics.iter().find(|v| v.id == *t.topic_id.as_bytes()) {
                    Some(t) => topic(t),
                    None => metadata_topic_error(None, ResponseError::UnknownTopicId)
                        .with_topic_id(t.topic_id),
                },
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&view.cluster_id)))
        .with_controller_id(view.controller.map_or(BrokerId(-1), broker_id))
        .with_topics(topics)
}

/// DescribeCluster: the same brokers, cluster id and controller as Metadata.
pub fn describe_cluster(
    view: &ClusterView,
    req: &DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    // Endpoint type 1 is "brokers"; 2 ("controllers") asks for the KRaft controller listeners,
    // which clients reach through brokers here.
    if version >= 1 && req.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only the brokers endpoint type is served",
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    let brokers = view
        .brokers
        .iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&view.cluster_id))
        .with_controller_id(view.controller.map_or(BrokerId(-1), broker_id))
        .with_brokers(brokers)
}

/// What the connection does after a produce.
#[derive(Debug)]
pub enum ProduceOutcome {
    Reply(ProduceResponse),
    /// acks=0 and every partition succeeded: the client expects nothing.
    NoReply,
    /// acks=0 and some partition failed. Kafka closes the connection so that the client, which
    /// reads no response, notices and refreshes its metadata.
    Close,
}

/// Produce: each partition's record set is split into v2 batches that go to the core one at a
/// time, in order; partitions run concurrently so a request costs one commit round.
pub async fn produce<B: Broker>(broker: &B, req: ProduceRequest, version: i16) -> ProduceOutcome {
    // acks=0 is sent to the core as acks=1: the core never answers acks=0 (so the broker future
    // would never finish), and waiting for the leader's append keeps one connection's writes in
    // order. The client is still sent nothing.
    let acks = match req.acks {
        0 | 1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let view = broker.cluster();
    let mut pending: Vec<(TopicName, Vec<(i32, Pending)>)> = Vec::new();
    for topic in req.topic_data {
        if may_auto_create(&view, topic.name.as_str()) {
            // Kafka creates on metadata requests; a client that produces blind (no metadata
            // first) gets UNKNOWN_TOPIC_OR_PARTITION, and the topic on its retry.
            broker.auto_create_topic(topic.name.to_string()).await;
        }
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            let job = match acks {
                None => Pending::Done(Err(PartitionError::Kafka(
                    ResponseError::InvalidRequiredAcks,
                ))),
                Some(acks) => match produce_batches(&view, &topic.name, p.index, p.records) {
                    Err(e) => Pending::Done(Err(e)),
                    Ok((tp, batches)) => Pending::Running(tokio::spawn(produce_partition(
                        broker.clone(),
                        tp,
                        acks,
                        batches,
                    ))),
                },
            };
            partitions.push((p.index, job));
        }
        pending.push((topic.name, partitions));
    }

    let mut failed = false;
    let mut node_endpoints: Vec<NodeEndpoint> = Vec::new();
    let mut responses = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut out = Vec::with_capacity(partitions.len());
        for (index, job) in partitions {
            let result = match job {
                Pending::Done(r) => r,
                // A panic in the broker's request future surfaces here as a join error.
                Pending::Running(handle) => handle.await.unwrap_or(Err(PartitionError::Kafka(
                    ResponseError::UnknownServerError,
                ))),
            };
            let mut part = PartitionProduceResponse::default().with_index(index);
            match result {
                Ok(base_offset) => part.base_offset = base_offset,
                Err(e) => {
                    failed = true;
                    part.error_code = e.code();
                    part.base_offset = -1;
                    // current_leader and node_endpoints are tagged fields of v10+.
                    if let (true, Some((leader, epoch))) =
                        (version >= 10, leader_hint(&view, &name, index, &e))
                    {
                        part.current_leader = ProduceLeader::default()
                            .with_leader_id(broker_id(leader))
                            .with_leader_epoch(epoch);
                        add_endpoint(&view, leader, &mut node_endpoints);
                    }
                }
            }
            out.push(part);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(out),
        );
    }
    match (req.acks, failed) {
        (0, false) => ProduceOutcome::NoReply,
        (0, true) => ProduceOutcome::Close,
        _ => ProduceOutcome::Reply(
            ProduceResponse::default()
                .with_responses(responses)
                .with_node_endpoints(node_endpoints),
        ),
    }
}

/// Fetch with Kafka's long poll: if fewer than `min_bytes` are available, read again when the
/// broker reports new commits (or every `fetch_poll_interval_ms` at the latest) until
/// `max_wait_ms` (capped by the config) passes, then answer what there is. Any partition error answers at once, as Kafka does.
pub async fn fetch<B: Broker>(
    broker: &B,
    config: &KafkaConfig,
    req: &FetchRequest,
    version: i16,
) -> FetchResponse {
    // We keep no fetch sessions (KIP-227): session id 0 in every response tells the client to
    // keep sending full requests. A client that names a session must have got it elsewhere.
    if req.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    if req.session_epoch != 0 && req.session_epoch != -1 {
        return FetchResponse::default()
            .with_error_code(ResponseError::InvalidFetchSessionEpoch.code());
    }
    let wait_ms = (req.max_wait_ms.max(0) as u64).min(config.fetch_max_wait_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = req.min_bytes.max(0) as u64;
    loop {
        let pass = fetch_once(broker, req, version).await;
        let now = tokio::time::Instant::now();
        if pass.bytes >= min_bytes || pass.any_error || now >= deadline {
            return pass.response;
        }
        let interval = Duration::from_millis(config.fetch_poll_interval_ms.max(1));
        tokio::select! {
            _ = broker.data_changed() => {}
            _ = tokio::time::sleep(interval.min(deadline - now)) => {}
        }
    }
}

/// ListOffsets: earliest (-2), latest (-1, the high watermark) or the first offset at or after a
/// timestamp.
pub async fn list_offsets<B: Broker>(
    broker: &B,
    req: &ListOffsetsRequest,
    _version: i16,
) -> ListOffsetsResponse {
    let view = broker.cluster();
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let out =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let spec = match p.timestamp {
                -2 => Some(OffsetSpec::Earliest),
                -1 => Some(OffsetSpec::Latest),
                t if t >= 0 => Some(OffsetSpec::Timestamp(t)),
                // -3 (max timestamp) and later specials need versions we do not advertise.
                _ => None,
            };
            let result = match (spec, find_partition(&view, &topic.name, p.partition_index)) {
                (_, None) => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                (None, Some(_)) => Err(PartitionError::Kafka(ResponseError::UnsupportedVersion)),
                (Some(spec), Some(_)) => {
                    let tp = TopicPartition::new(topic.name.as_str(), p.partition_index);
                    match broker.request(Request::ListOffsets { tp, spec }).await {
                        Response::ListOffsets(r) => r.map_err(PartitionError::Core),
                        other => Err(unexpected(&other)),
                    }
                }
            };
            partitions.push(match result {
                Ok((offset, timestamp)) => out.with_offset(offset).with_timestamp(timestamp),
                Err(e) => out.with_error_code(e.code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// OffsetForLeaderEpoch: the end offset of the requested leader epoch (raft term), which
/// consumers use to detect log truncation after a leader change.
pub async fn offset_for_leader_epoch<B: Broker>(
    broker: &B,
    req: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let view = broker.cluster();
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let out = EpochEndOffset::default().with_partition(p.partition);
            let result = match find_partition(&view, &topic.topic, p.partition) {
                None => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                // A negative epoch names no term: Kafka's "undefined" answer.
                Some(_) if p.leader_epoch < 0 => Ok((-1, -1)),
                Some(_) => {
                    let tp = TopicPartition::new(topic.topic.as_str(), p.partition);
                    let epoch = p.leader_epoch as u64;
                    match broker
                        .request(Request::OffsetForLeaderEpoch { tp, epoch })
                        .await
                    {
                        Response::OffsetForLeaderEpoch(r) => r.map_err(PartitionError::Core),
                        other => Err(unexpected(&other)),
                    }
                }
            };
            partitions.push(match result {
                Ok((epoch, end_offset)) => out
                    .with_leader_epoch(i32::try_from(epoch).unwrap_or(-1))
                    .with_end_offset(end_offset),
                Err(e) => out.with_error_code(e.code()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// A partition's produce, either already decided or running on its own task.
enum Pending {
    Done(Result<Offset, PartitionError>),
    Running(JoinHandle<Result<Offset, PartitionError>>),
}

/// Checks a produce partition before the core sees it: known partition, records present and
/// well framed. Several batches are all CRC-checked first so that a bad one later in the set
/// stores nothing (one batch is checked by the core itself).
fn produce_batches(
    view: &ClusterView,
    topic: &TopicName,
    partition: i32,
    records: Option<Bytes>,
) -> Result<(TopicPartition, Vec<Bytes>), PartitionError> {
    if find_partition(view, topic, partition).is_none() {
        return Err(PartitionError::Kafka(
            ResponseError::UnknownTopicOrPartition,
        ));
    }
    let corrupt = || PartitionError::Kafka(ResponseError::CorruptMessage);
    let records = records.ok_or_else(corrupt)?;
    let batches = split_batches(&records).map_err(|_| corrupt())?;
    if batches.len() > 1 && batches.iter().any(|b| batch::validate(b).is_err()) {
        return Err(corrupt());
    }
    Ok((TopicPartition::new(topic.as_str(), partition), batches))
}

/// Produces `batches` to one partition in order, stopping at the first failure. Answers the
/// first batch's base offset. Not atomic: if a later batch fails, the earlier ones stay.
async fn produce_partition<B: Broker>(
    broker: B,
    tp: TopicPartition,
    acks: Acks,
    batches: Vec<Bytes>,
) -> Result<Offset, PartitionError> {
    let mut first = None;
    for batch in batches {
        let request = Request::Produce {
            tp: tp.clone(),
            acks,
            batch,
        };
        match broker.request(request).await {
            Response::Produce(Ok(offset)) => {
                first.get_or_insert(offset);
            }
            Response::Produce(Err(e)) => return Err(PartitionError::Core(e)),
            other => return Err(unexpected(&other)),
        }
    }
    // `split_batches` never returns an empty list, so `first` is set; if it were not, the
    // client gets an error rather than a made-up offset.
    first.ok_or(PartitionError::Kafka(ResponseError::UnknownServerError))
}

/// One pass over every partition of a fetch.
struct FetchPass {
    response: FetchResponse,
    bytes: u64,
    any_error: bool,
}

async fn fetch_once<B: Broker>(broker: &B, req: &FetchRequest, version: i16) -> FetchPass {
    let view = broker.cluster();
    let mut remaining = req.max_bytes.max(0) as u64;
    let mut bytes = 0u64;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut out = PartitionData::default().with_partition_index(p.partition);
            let limit = (p.partition_max_bytes.max(0) as u64).min(remaining);
            let result = match find_partition(&view, &topic.topic, p.partition) {
                None => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                Some(_) => {
                    let tp = TopicPartition::new(topic.topic.as_str(), p.partition);
                    let request = Request::Fetch {
                        tp,
                        offset: p.fetch_offset,
                        max_bytes: limit,
                    };
                    match broker.request(request).await {
                        Response::Fetch(r) => r.map_err(PartitionError::Core),
                        other => Err(unexpected(&other)),
                    }
                }
            };
            match result {
                Ok(reply) => {
                    // The core returns a whole first batch even past `max_bytes` so a consumer
                    // always progresses (KIP-74); Kafka allows that only for the first partition
                    // with data, so later ones keep to the budget.
                    let records = concat_within(reply.batches, limit, bytes == 0);
                    bytes += records.len() as u64;
                    remaining = remaining.saturating_sub(records.len() as u64);
                    out = out
                        .with_high_watermark(reply.high_watermark)
                        .with_last_stable_offset(reply.high_watermark)
                        .with_log_start_offset(reply.log_start_offset)
                        .with_records(Some(records));
                }
                Err(e) => {
                    any_error = true;
                    out = out
                        .with_error_code(e.code())
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1);
                    if let (true, Some((leader, epoch))) = (
                        version >= 12,
                        leader_hint(&view, &topic.topic, p.partition, &e),
                    ) {
                        out.current_leader = FetchLeader::default()
                            .with_leader_id(broker_id(leader))
                            .with_leader_epoch(epoch);
                    }
                }
            }
            partitions.push(out);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    FetchPass {
        response: FetchResponse::default().with_responses(responses),
        bytes,
        any_error,
    }
}

/// Concatenates whole batches up to `limit` bytes; the first batch may exceed it when
/// `allow_oversized_first`. A single batch is passed through without a copy.
fn concat_within(batches: Vec<Bytes>, limit: u64, allow_oversized_first: bool) -> Bytes {
    let mut kept = 0usize;
    let mut total = 0u64;
    for b in &batches {
        let next = total + b.len() as u64;
        if next > limit && !(kept == 0 && allow_oversized_first) {
            break;
        }
        total = next;
        kept += 1;
    }
    match kept {
        0 => Bytes::new(),
        1 => batches[0].clone(),
        _ => {
            let mut out = BytesMut::with_capacity(total as usize);
            for b in &batches[..kept] {
                out.extend_from_slice(b);
            }
            out.freeze()
        }
    }
}

/// Where a NOT_LEADER_OR_FOLLOWER client should go: the leader the core named, else the one in
/// the cluster view; with the view's leader epoch when both agree.
fn leader_hint(
    view: &ClusterView,
    topic: &str,
    partition: i32,
    e: &PartitionError,
) -> Option<(NodeId, i32)> {
    if e.code() != ResponseError::NotLeaderOrFollower.code() {
        return None;
    }
    let p = find_partition(view, topic, partition)?;
    let leader = e.leader().or(p.leader)?;
    let epoch = if p.leader == Some(leader) {
        p.leader_epoch
    } else {
        -1
    };
    Some((leader, epoch))
}

fn add_endpoint(view: &ClusterView, id: NodeId, endpoints: &mut Vec<NodeEndpoint>) {
    if endpoints.iter().any(|e| e.node_id == broker_id(id)) {
        return;
    }
    if let Some(b) = view.brokers.iter().find(|b| b.id == id) {
        endpoints.push(
            NodeEndpoint::default()
                .with_node_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes)),
        );
    }
}

fn find_partition<'a>(
    view: &'a ClusterView,
    topic: &str,
    partition: i32,
) -> Option<&'a PartitionView> {
    view.topics
        .iter()
        .find(|t| t.name == topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)
}

/// One topic of a Metadata response. From v5, replicas on brokers missing from the view's
/// broker list (fenced by the controller) are reported offline, as Kafka does.
fn metadata_topic(t: &TopicView, view: &ClusterView, version: i16) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let ids = |v: &[NodeId]| v.iter().copied().map(broker_id).collect::<Vec<_>>();
            let offline: Vec<NodeId> = if version >= 5 {
                p.replicas
                    .iter()
                    .copied()
                    .filter(|r| !view.brokers.iter().any(|b| b.id == *r))
                    .collect()
            } else {
                Vec::new()
            };
            MetadataResponsePartition::default()
                .with_offline_replicas(ids(&offline))
                .with_error_code(match p.leader {
                    Some(_) => 0,
                    None => ResponseError::LeaderNotAvailable.code(),
                })
                .with_partition_index(p.partition)
                .with_leader_id(p.leader.map_or(BrokerId(-1), broker_id))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(uuid_carrier(t.id).topic_id)
        .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
        .with_partitions(partitions)
}

fn metadata_topic_error(name: Option<TopicName>, e: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_name(name)
}

/// The broker answered a request with another kind of response: a runtime bug. The client gets
/// a generic error rather than a dead connection.
fn unexpected(_response: &Response) -> PartitionError {
    PartitionError::Kafka(ResponseError::UnknownServerError)
}

/// Kafka broker ids are i32; node ids come from configuration, never from the network, and
/// are small. An id that does not fit is reported as "none" (-1) rather than wrapped.
fn broker_id(id: NodeId) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}
