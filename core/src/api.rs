//! Client-facing requests and replies of the core, independent of any wire format.
//!
//! The Kafka listener (node) and the simulator's clients translate to and from these. Errors are
//! typed and map one-to-one onto Kafka error codes; each variant says whether the write may
//! still have happened, because a client must record that honestly (Jepsen's `info`).

use bytes::Bytes;

use crate::batch::BatchError;
use crate::types::{Millis, NodeId, Offset, Term, TopicPartition};

/// Identifies a request so its reply can be matched; chosen by the caller. (State machines'
/// own proposals are tagged inside the replica, so every id is the caller's.)
pub type RequestId = u64;

/// Kafka's `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Acks {
    /// No reply at all.
    None,
    /// Reply once the leader has the batch durably in its own log. Not fault tolerant: a leader
    /// failover can lose it.
    Leader,
    /// Reply once the batch is committed: fsynced on a majority of the replicas.
    All,
}

/// ListOffsets targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    /// The high watermark (Kafka's "latest" for read_uncommitted consumers).
    Latest,
    /// The earliest offset whose record timestamp is >= this.
    Timestamp(Millis),
    /// The first record with the largest timestamp (Kafka's -3, KIP-734).
    MaxTimestamp,
    /// The earliest offset in local storage (Kafka's -4, KIP-405): the log start here, as
    /// Railyard has no tiered storage.
    EarliestLocal,
    /// The highest offset copied to tiered storage (Kafka's -5, KIP-1005): none here, answered
    /// as Kafka does with tiered storage off (offset and timestamp -1).
    LatestTiered,
}

#[derive(Clone, Debug)]
pub enum Request {
    Produce {
        tp: TopicPartition,
        acks: Acks,
        /// Exactly one Kafka RecordBatch v2.
        batch: Bytes,
    },
    Fetch {
        tp: TopicPartition,
        offset: Offset,
        max_bytes: u64,
    },
    /// A fetch across many partitions in one request (a Kafka Fetch names many): the core
    /// answers every partition in one pass, in the order given.
    FetchMany {
        partitions: Vec<FetchPartition>,
    },
    ListOffsets {
        tp: TopicPartition,
        spec: OffsetSpec,
    },
    OffsetForLeaderEpoch {
        tp: TopicPartition,
        epoch: Term,
    },
    /// Kafka's DeleteRecords, asked of the partition's leader: records before `offset` (-1:
    /// the high watermark) are deleted, through a command in the partition's raft log.
    /// Answered with the new log start offset once the command is committed.
    DeleteRecords {
        tp: TopicPartition,
        offset: Offset,
    },
    /// Create a topic through the controller (the metadata partition's leader).
    CreateTopic {
        name: String,
        partitions: i64,
        replication_factor: i64,
        configs: std::collections::BTreeMap<String, String>,
        /// Manual replica assignment: partition `i` gets `assignments[i]` (first = preferred
        /// leader), as Kafka's CreateTopics `assignments`. Empty: the controller places them
        /// (then `partitions` and `replication_factor` apply; otherwise they must match).
        assignments: Vec<Vec<NodeId>>,
        /// Check everything, change nothing.
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// Grow a topic to `count` partitions through the controller (Kafka's CreatePartitions).
    CreatePartitions {
        topic: String,
        count: i64,
        /// Replicas of each new partition, in order (first = preferred leader); empty: the
        /// controller places them with the topic's replication factor.
        assignments: Vec<Vec<NodeId>>,
        validate_only: bool,
    },
    /// Change a topic's config overrides through the controller (Kafka's AlterConfigs and
    /// IncrementalAlterConfigs for a topic resource).
    AlterTopicConfigs {
        topic: String,
        change: ConfigChange,
        validate_only: bool,
    },
    /// Change a broker resource's dynamic configs through the controller (Kafka's
    /// AlterConfigs and IncrementalAlterConfigs for a BROKER resource): `broker` None is the
    /// cluster-wide default resource (empty name). Only the broker synonyms of topic configs
    /// (`log.retention.ms`, `message.max.bytes`, ...) are dynamic.
    AlterBrokerConfigs {
        broker: Option<NodeId>,
        change: ConfigChange,
        validate_only: bool,
    },
    /// Move partitions to new replicas through the controller (Kafka's
    /// AlterPartitionReassignments): each partition's target replicas (first = preferred
    /// leader), or `None` to cancel its move (back to the replicas it had before). Answered
    /// once the moves are recorded; the partitions' leaders then carry them out.
    AlterReassignments {
        moves: Vec<(TopicPartition, Option<Vec<NodeId>>)>,
    },
    /// The moves in flight (Kafka's ListPartitionReassignments), of these partitions only if
    /// given.
    ListReassignments {
        partitions: Option<Vec<TopicPartition>>,
    },
    /// Take a broker out of the cluster (Kafka's UnregisterBroker, draining first: see
    /// [`crate::controller::balance`]). Answered once the decommission is recorded (or the
    /// broker, already empty and stopped, unregistered).
    UnregisterBroker {
        broker: NodeId,
    },
    /// Promote a broker to controller voter (Kafka's AddRaftVoter), asked of the metadata
    /// leader; answered once the configuration applied (see `node::quorum`).
    AddControllerVoter {
        broker: NodeId,
    },
    /// Demote a controller voter to a learner (Kafka's RemoveRaftVoter); it stays a broker.
    RemoveControllerVoter {
        broker: NodeId,
    },
    /// Hand `tp`'s leadership to its preferred replica (Kafka's ElectLeaders, preferred
    /// election), asked of the partition's leader. Answered once the transfer has started.
    ElectPreferredLeader {
        tp: TopicPartition,
    },
    /// This node's log directory: every hosted client partition's size and lag (Kafka's
    /// DescribeLogDirs), and the free space of its disk.
    DescribeLogDirs,
    /// Kafka's InitProducerId for an idempotent producer: a new producer id with epoch 0, or,
    /// given the current id and epoch (KIP-360), the same id with the epoch bumped.
    InitProducerId {
        current: Option<(i64, i16)>,
    },
    /// A client used a topic that does not exist and auto-creation is on: ask the controller
    /// to create it with these defaults. Answered `CreateTopic(Ok(()))` once asked (or when it
    /// exists); the topic appears when the controller's record commits, and clients retry
    /// meanwhile, as with Kafka's `auto.create.topics.enable`.
    AutoCreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
    },
    /// A consumer-group request, for the coordinator of the group's `__consumer_offsets`
    /// partition.
    Group(crate::groups::GroupRequest),
}

/// How an alter changes a topic's overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// AlterConfigs: these become the topic's overrides; every other config returns to its
    /// default.
    Replace(std::collections::BTreeMap<String, String>),
    /// IncrementalAlterConfigs: each op changes one config, the others stay.
    Incremental(Vec<(String, crate::topic_config::AlterOp)>),
}

/// The answer to [`Request::DescribeLogDirs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogDirs {
    /// (partition, bytes of its segments, how far its log end is behind the high watermark).
    pub partitions: Vec<(TopicPartition, u64, i64)>,
    /// Free space of the data disk, if the disk can tell.
    pub available_bytes: Option<u64>,
}

/// One partition of a [`Request::FetchMany`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPartition {
    pub tp: TopicPartition,
    pub offset: Offset,
    pub max_bytes: u64,
}

/// Errors a client can get. Each maps onto one Kafka error code (in parentheses).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This node does not lead the partition (NOT_LEADER_OR_FOLLOWER). The write did not happen.
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    /// No such partition on this node (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic or partition {0}")]
    UnknownPartition(TopicPartition),
    /// The batch is malformed (CORRUPT_MESSAGE). Nothing was written.
    #[error("corrupt batch: {0}")]
    CorruptBatch(BatchError),
    /// The batch exceeds the size limit (MESSAGE_TOO_LARGE). Nothing was written.
    #[error("batch of {size} bytes exceeds the limit of {max}")]
    MessageTooLarge { size: u64, max: u64 },
    /// Fetch offset outside [log start, log end] (OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        offset: Offset,
        start: Offset,
        end: Offset,
    },
    /// The write was proposed but its outcome is unknown: leadership moved or the request timed
    /// out (REQUEST_TIMED_OUT). It may still commit.
    #[error("outcome unknown: {reason}")]
    Indeterminate { reason: &'static str },
    /// The partition's storage failed (KAFKA_STORAGE_ERROR).
    #[error("storage error: {0}")]
    Storage(String),
    /// This node is not the controller (NOT_CONTROLLER); the controller it knows, if any.
    #[error("not the controller; controller is {controller:?}")]
    NotController { controller: Option<NodeId> },
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION, for admin requests on a topic that does not exist.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS.
    #[error("invalid number of partitions {0}")]
    InvalidPartitions(i64),
    /// Fewer replicas in sync than the topic's `min.insync.replicas` (NOT_ENOUGH_REPLICAS,
    /// retriable). Nothing was written.
    #[error("{isr} replicas in sync, min.insync.replicas is {required}")]
    NotEnoughReplicas { isr: usize, required: usize },
    /// Written and committed, but not durable on `min.insync.replicas` replicas before the
    /// deadline (NOT_ENOUGH_REPLICAS_AFTER_APPEND): the write may well be kept.
    #[error("committed, but not on min.insync.replicas replicas in time")]
    NotEnoughReplicasAfterAppend,
    /// The preferred replica already leads (ELECTION_NOT_NEEDED).
    #[error("the preferred replica already leads")]
    ElectionNotNeeded,
    /// The preferred replica is down or not in sync (PREFERRED_LEADER_NOT_AVAILABLE).
    #[error("preferred replica {0} is not in sync")]
    PreferredLeaderNotAvailable(NodeId),
    /// A record timestamp outside the topic's `message.timestamp.*.max.ms` bounds
    /// (INVALID_TIMESTAMP). Nothing was written.
    #[error("{0}")]
    InvalidTimestamp(String),
    /// INVALID_PARTITIONS, for a CreatePartitions that does not grow the topic.
    #[error("{0}")]
    InvalidPartitionCount(String),
    /// INVALID_REPLICATION_FACTOR.
    #[error("replication factor {asked} is not in 1..={brokers}")]
    InvalidReplicationFactor { asked: i64, brokers: usize },
    /// INVALID_CONFIG; the message names the config and what is wrong with it.
    #[error("{0}")]
    InvalidConfig(String),
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A cancel of a partition that is not moving (NO_REASSIGNMENT_IN_PROGRESS).
    #[error("no reassignment of {0} is in progress")]
    NoReassignmentInProgress(TopicPartition),
    /// A broker id with no registration (BROKER_ID_NOT_REGISTERED).
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(NodeId),
    /// A decommission that would leave a partition short of brokers for its replication
    /// factor (INVALID_REPLICATION_FACTOR); nothing changed.
    #[error("{0}")]
    BelowReplicationFactor(String),
    /// Promoting a broker that already votes (DUPLICATE_VOTER).
    #[error("broker {0} is already a controller voter")]
    DuplicateVoter(NodeId),
    /// Demoting a broker that does not vote (VOTER_NOT_FOUND).
    #[error("broker {0} is not a controller voter")]
    VoterNotFound(NodeId),
    /// A quorum change that must wait: another is in flight, or the learner is catching up
    /// (REQUEST_TIMED_OUT, retriable).
    #[error("{0}")]
    QuorumChangePending(String),
    /// INVALID_REQUEST: e.g. a CreateTopics for an internal topic, which only the cluster
    /// creates.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A sequence number other than 0 from a producer the partition does not know, or no
    /// longer knows (UNKNOWN_PRODUCER_ID). Nothing was written.
    #[error("unknown producer id {0}")]
    UnknownProducerId(i64),
    /// An epoch older than the producer's current one (INVALID_PRODUCER_EPOCH): a zombie.
    #[error("producer epoch {epoch} is older than {current}")]
    InvalidProducerEpoch { epoch: i16, current: i16 },
    /// A gap in a producer's sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    /// A retry of a batch that is in the log but not committed yet
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND, retriable). The original may still commit; a later
    /// retry is answered with its offset.
    #[error("duplicate of a batch that is not committed yet")]
    DuplicateNotCommitted,
    /// An InitProducerId for a producer id the cluster never allocated
    /// (INVALID_PRODUCER_ID_MAPPING).
    #[error("producer id {0} was never allocated")]
    InvalidProducerIdMapping(i64),
    /// The broker cannot answer yet: its coordinator state or producer ids are still loading
    /// (COORDINATOR_LOAD_IN_PROGRESS, retriable).
    #[error("coordinator is loading")]
    CoordinatorLoading,
}

impl ClientError {
    /// Whether the write certainly did not happen (Jepsen `fail`) rather than maybe (`info`).
    /// Every other error is raised before the batch is proposed.
    pub fn definitely_not_written(&self) -> bool {
        !matches!(
            self,
            ClientError::Indeterminate { .. }
                | ClientError::DuplicateNotCommitted
                | ClientError::NotEnoughReplicasAfterAppend
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReply {
    /// Whole stored batches, verbatim (baseOffset and leader epoch stamped at append).
    pub batches: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

/// A produce's outcome: where its batch landed and, on a `LogAppendTime` topic, the time the
/// leader stamped it with (Kafka's `log_append_time_ms`, which clients report as the records'
/// timestamp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: Offset,
    /// `None` under CreateTime, and for a duplicate answered from the producer table.
    pub log_append_time_ms: Option<i64>,
}

impl Produced {
    /// A batch the leader did not stamp (CreateTime, or a duplicate).
    pub fn at(base_offset: Offset) -> Self {
        Self {
            base_offset,
            log_append_time_ms: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Produce(Result<Produced, ClientError>),
    Fetch(Result<FetchReply, ClientError>),
    /// One result per partition of a [`Request::FetchMany`], in its order.
    FetchMany(Vec<Result<FetchReply, ClientError>>),
    /// (offset, timestamp); offset -1 when no record matches a timestamp query.
    ListOffsets(Result<(Offset, Millis), ClientError>),
    /// (epoch, end offset) as in Kafka's OffsetForLeaderEpoch; (-1, -1) when unknown.
    OffsetForLeaderEpoch(Result<(i64, Offset), ClientError>),
    /// The log start offset (Kafka's low watermark) after the deletion.
    DeleteRecords(Result<Offset, ClientError>),
    /// The topic exists on every node that applied the record (or, validate_only, could).
    CreateTopic(Result<(), ClientError>),
    DeleteTopic(Result<(), ClientError>),
    CreatePartitions(Result<(), ClientError>),
    ElectPreferredLeader(Result<(), ClientError>),
    LogDirs(LogDirs),
    AlterTopicConfigs(Result<(), ClientError>),
    AlterBrokerConfigs(Result<(), ClientError>),
    /// (producer id, epoch).
    InitProducerId(Result<(i64, i16), ClientError>),
    Group(crate::groups::GroupResponse),
    /// One result per move of a [`Request::AlterReassignments`], in its order.
    AlterReassignments(Result<Vec<Result<(), ClientError>>, ClientError>),
    ListReassignments(Result<Vec<crate::controller::ReassignmentStatus>, ClientError>),
    UnregisterBroker(Result<(), ClientError>),
    /// AddControllerVoter and RemoveControllerVoter.
    QuorumChange(Result<(), ClientError>),
}

impl Response {
    /// The reply carrying `err` for a request of the same kind as `request`.
    pub fn error_for(request: &Request, err: ClientError) -> Response {
        match request {
            Request::Produce { .. } => Response::Produce(Err(err)),
            Request::Fetch { .. } => Response::Fetch(Err(err)),
            Request::FetchMany { partitions } => {
                Response::FetchMany(partitions.iter().map(|_| Err(err.clone())).collect())
            }
            Request::ListOffsets { .. } => Response::ListOffsets(Err(err)),
            Request::OffsetForLeaderEpoch { .. } => Response::OffsetForLeaderEpoch(Err(err)),
            Request::DeleteRecords { .. } => Response::DeleteRecords(Err(err)),
            Request::CreateTopic { .. } | Request::AutoCreateTopic { .. } => {
                Response::CreateTopic(Err(err))
            }
            Request::DeleteTopic { .. } => Response::DeleteTopic(Err(err)),
            Request::CreatePartitions { .. } => Response::CreatePartitions(Err(err)),
            Request::DescribeLogDirs => Response::LogDirs(LogDirs::default()),
            Request::ElectPreferredLeader { .. } => Response::ElectPreferredLeader(Err(err)),
            Request::AlterTopicConfigs { .. } => Response::AlterTopicConfigs(Err(err)),
            Request::AlterBrokerConfigs { .. } => Response::AlterBrokerConfigs(Err(err)),
            Request::InitProducerId { .. } => Response::InitProducerId(Err(err)),
            Request::AlterReassignments { .. } => Response::AlterReassignments(Err(err)),
            Request::ListReassignments { .. } => Response::ListReassignments(Err(err)),
            Request::UnregisterBroker { .. } => Response::UnregisterBroker(Err(err)),
            Request::AddControllerVoter { .. } | Request::RemoveControllerVoter { .. } => {
                Response::QuorumChange(Err(err))
            }
            Request::Group(r) => {
                Response::Group(crate::groups::GroupResponse::error_for(r, (&err).into()))
            }
        }
    }
}
