//! What several handlers share: the error of one partition and the Kafka code of each core
//! error, where a client that hit NOT_LEADER_OR_FOLLOWER should go, auto-creation eligibility,
//! and conversions into kafka-protocol's types.

use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{ClientError, Request, Response};
use railyard_core::groups::{GroupRequest, GroupResponse};
use railyard_core::metadata::is_internal_topic;
use railyard_core::types::{valid_topic_name, NodeId};

use crate::broker::{Broker, ClusterView};

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
    pub fn leader(&self) -> Option<NodeId> {
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
        ClientError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        ClientError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ClientError::PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
        ClientError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        ClientError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        ClientError::InvalidPartitions(_) | ClientError::InvalidPartitionCount(_) => {
            ResponseError::InvalidPartitions
        }
        ClientError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        ClientError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        ClientError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ClientError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ClientError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
        ClientError::BrokerNotRegistered(_) => ResponseError::BrokerIdNotRegistered,
        ClientError::BelowReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ClientError::DuplicateVoter(_) => ResponseError::DuplicateVoter,
        ClientError::VoterNotFound(_) => ResponseError::VoterNotFound,
        ClientError::QuorumChangePending(_) => ResponseError::RequestTimedOut,
        ClientError::UnknownProducerId(_) => ResponseError::UnknownProducerId,
        ClientError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ClientError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        ClientError::DuplicateNotCommitted => ResponseError::NotEnoughReplicasAfterAppend,
        ClientError::InvalidProducerIdMapping(_) => ResponseError::InvalidProducerIdMapping,
        ClientError::CoordinatorLoading => ResponseError::CoordinatorLoadInProgress,
    };
    kafka.code()
}

/// Where a NOT_LEADER_OR_FOLLOWER client should go: the leader the core named, else the one in
/// the cluster view; with the view's leader epoch when both agree.
pub fn leader_hint(
    view: &ClusterView,
    topic: &str,
    partition: i32,
    e: &PartitionError,
) -> Option<(NodeId, i32)> {
    if e.code() != ResponseError::NotLeaderOrFollower.code() {
        return None;
    }
    let p = view.partition(topic, partition)?;
    let leader = e.leader().or(p.leader)?;
    let epoch = if p.leader == Some(leader) {
        p.leader_epoch
    } else {
        -1
    };
    Some((leader, epoch))
}

/// Whether a client's use of `name` may ask for its creation: missing from the view, a valid
/// name, not an internal topic.
pub fn may_auto_create(view: &ClusterView, name: &str) -> bool {
    view.topic(name).is_none() && valid_topic_name(name) && !is_internal_topic(name)
}

/// The broker answered a request with another kind of response: a runtime bug. The client gets
/// a generic error rather than a dead connection.
pub fn unexpected(_response: &Response) -> PartitionError {
    PartitionError::Kafka(ResponseError::UnknownServerError)
}

/// The code of a reply the handler cannot read: the broker answered with another kind of
/// response, or the task waiting for the answer failed (see [`unexpected`]).
pub fn unknown_server_error() -> i16 {
    ResponseError::UnknownServerError.code()
}

/// Sends one group request to the coordinator machinery; `None` when the broker answered with
/// anything but a group reply (the caller answers UNKNOWN_SERVER_ERROR). A core error the node
/// answers with instead of running the request (not leading the group's `__consumer_offsets`
/// partition, ...) arrives as the request's own reply carrying `GroupError::from(&ClientError)`
/// (NOT_COORDINATOR), built by `Response::error_for`.
pub async fn ask_group<B: Broker>(broker: &B, request: GroupRequest) -> Option<GroupResponse> {
    match broker.request(Request::Group(request)).await {
        Response::Group(reply) => Some(reply),
        _ => None,
    }
}

/// Sends each group request on its own task, so that requests for groups coordinated by
/// different partitions run concurrently, and returns the replies in order.
pub async fn ask_groups<B: Broker>(
    broker: &B,
    requests: Vec<GroupRequest>,
) -> Vec<Option<GroupResponse>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let broker = broker.clone();
            tokio::spawn(async move { ask_group(&broker, request).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A panic in the broker's request future surfaces here as a join error.
        replies.push(task.await.ok().flatten());
    }
    replies
}

/// Kafka broker ids are i32; node ids come from configuration, never from the network, and
/// are small. An id that does not fit is reported as "none" (-1) rather than wrapped.
pub fn broker_id(id: NodeId) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The topic name the handlers' test samples use.
#[cfg(test)]
pub fn sample_topic() -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_static_str("topic-a"))
}

/// The handlers' unit-test broker: it answers from a fixed view and fails the test if a
/// request reaches it (a handler that must answer alone never calls it).
#[cfg(test)]
#[derive(Clone)]
pub struct ViewOnly(pub std::sync::Arc<ClusterView>);

#[cfg(test)]
impl crate::broker::Broker for ViewOnly {
    fn node_id(&self) -> NodeId {
        1
    }

    fn cluster(&self) -> std::sync::Arc<ClusterView> {
        self.0.clone()
    }

    async fn request(&self, request: railyard_core::api::Request) -> Response {
        panic!("a request reached the core: {request:?}")
    }
}

/// The handlers' unit-test broker for group requests: it answers every `Request::Group` with
/// `answer` (from [`sample_view`]) and records the requests; any other request fails the test.
#[cfg(test)]
#[derive(Clone)]
pub struct GroupFake {
    view: std::sync::Arc<ClusterView>,
    answer: std::sync::Arc<dyn Fn(&GroupRequest) -> Response + Send + Sync>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<GroupRequest>>>,
}

#[cfg(test)]
impl GroupFake {
    pub fn new(answer: impl Fn(&GroupRequest) -> Response + Send + Sync + 'static) -> Self {
        GroupFake {
            view: std::sync::Arc::new(sample_view()),
            answer: std::sync::Arc::new(answer),
            seen: Default::default(),
        }
    }

    /// A fake that answers every request with its group reply.
    pub fn replying(reply: GroupResponse) -> Self {
        GroupFake::new(move |_| Response::Group(reply.clone()))
    }

    /// The group requests received, in order.
    pub fn seen(&self) -> Vec<GroupRequest> {
        self.seen.lock().expect("a test thread panicked").clone()
    }
}

#[cfg(test)]
impl crate::broker::Broker for GroupFake {
    fn node_id(&self) -> NodeId {
        1
    }

    fn cluster(&self) -> std::sync::Arc<ClusterView> {
        self.view.clone()
    }

    async fn request(&self, request: Request) -> Response {
        let Request::Group(request) = request else {
            panic!("a non-group request reached the core: {request:?}")
        };
        let reply = (self.answer)(&request);
        self.seen
            .lock()
            .expect("a test thread panicked")
            .push(request);
        reply
    }
}

/// Encodes a handler's response in `version`, failing the test if kafka-protocol refuses it
/// (a field set that the version lacks).
#[cfg(test)]
pub fn assert_encodes<R: kafka_protocol::protocol::Encodable>(response: &R, version: i16) {
    let mut buf = bytes::BytesMut::new();
    if let Err(e) = response.encode(&mut buf, version) {
        panic!("encoding a v{version} response: {e}");
    }
}

/// A cluster view no real node publishes, for the handlers' unit tests: broker 1 (rack
/// `rack-a`) and broker 2 are live and broker 3, which holds replicas, is fenced (missing from
/// the broker list); broker 3 is the controller. `orders` (id `[0xAB; 16]`) has two partitions
/// led by broker 1 at epoch 5 with replicas 1-3 and ISR 1-2, `moved` (id `[0xCD; 16]`) one led
/// by broker 2 at epoch 7, and the internal `__consumer_offsets` (id `[0xEE; 16]`) is listed.
#[cfg(test)]
pub fn sample_view() -> ClusterView {
    use crate::broker::{BrokerInfo, PartitionView, TopicView};
    use railyard_core::types::CONSUMER_OFFSETS_TOPIC;
    let partition = |p, leader, epoch, replicas: &[NodeId]| PartitionView {
        partition: p,
        leader: Some(leader),
        leader_epoch: epoch,
        replicas: replicas.to_vec(),
        isr: vec![1, 2],
    };
    let topic = |name: &str, id, partitions| TopicView {
        name: name.into(),
        id,
        partitions,
        configs: Default::default(),
    };
    let broker = |id, host: &str, port, rack: Option<&str>| BrokerInfo {
        id,
        host: host.into(),
        port,
        rack: rack.map(String::from),
    };
    ClusterView::new(
        "railyard-test".into(),
        Some(3),
        vec![
            broker(1, "127.0.0.1", 9092, Some("rack-a")),
            broker(2, "broker-2", 9093, None),
        ],
        vec![
            topic(
                "orders",
                [0xAB; 16],
                vec![
                    partition(0, 1, 5, &[1, 2, 3]),
                    partition(1, 1, 5, &[1, 2, 3]),
                ],
            ),
            topic("moved", [0xCD; 16], vec![partition(0, 2, 7, &[1, 2, 3])]),
            topic(
                CONSUMER_OFFSETS_TOPIC,
                [0xEE; 16],
                vec![partition(0, 1, 5, &[1, 2])],
            ),
        ],
    )
}

/// Kafka's authorized_operations when the client did not ask for them.
pub const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

// Authorized operations, as Kafka reports them with no authorizer configured: every operation
// the resource type supports (`AclEntry.supportedOperations`), as a bit set of operation codes
// (READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12). Railyard has no ACLs.

/// READ, DELETE and DESCRIBE.
pub const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS and ALTER_CONFIGS.
pub const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS and
/// IDEMPOTENT_WRITE.
pub const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// `operations` if the client asked for them, else Kafka's "not asked" marker.
pub fn authorized_operations(asked: bool, operations: i32) -> i32 {
    if asked {
        operations
    } else {
        OPERATIONS_NOT_ASKED
    }
}
