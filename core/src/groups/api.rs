//! The group coordinator's requests and replies, independent of the Kafka wire format.
//!
//! The Kafka layer translates JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete to and from these.
//! Every error is a [`GroupError`], which maps one-to-one onto a Kafka error code
//! ([`GroupError::code`]); `None` in an `Option<GroupError>` field is Kafka's `NONE` (0).

use bytes::Bytes;

use crate::api::ClientError;
use crate::types::TopicPartition;

/// One partition of an OffsetCommit: (partition, offset, leader epoch, metadata).
pub type CommitOffset = (TopicPartition, i64, i32, Option<String>);

/// A request for the coordinator of the group's `__consumer_offsets` partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRequest {
    Join {
        group: String,
        /// "" for a member that joins for the first time.
        member_id: String,
        group_instance_id: Option<String>,
        client_id: String,
        client_host: String,
        protocol_type: String,
        /// (protocol name, metadata) in the member's order of preference.
        protocols: Vec<(String, Bytes)>,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and its id.
        require_known_member_id: bool,
        reason: Option<String>,
    },
    Sync {
        group: String,
        generation: i32,
        member_id: String,
        group_instance_id: Option<String>,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        /// (member id, assignment); only the leader sends any.
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
        group_instance_id: Option<String>,
    },
    Leave {
        group: String,
        /// (member id, group instance id); the id may be "" when the instance id is given.
        members: Vec<(String, Option<String>)>,
    },
    OffsetCommit {
        group: String,
        /// -1 (with member id "") for a simple commit outside group management.
        generation: i32,
        member_id: String,
        group_instance_id: Option<String>,
        offsets: Vec<CommitOffset>,
    },
    OffsetFetch {
        group: String,
        /// `None`: every partition the group committed.
        partitions: Option<Vec<TopicPartition>>,
        /// Only for transactional offsets, which do not exist yet: ignored.
        require_stable: bool,
    },
    List {
        /// Kafka state names ("Stable", ...); empty = every state.
        states_filter: Vec<String>,
    },
    Describe {
        groups: Vec<String>,
    },
    Delete {
        groups: Vec<String>,
    },
    OffsetDelete {
        group: String,
        partitions: Vec<TopicPartition>,
    },
}

impl GroupRequest {
    /// The group the request is about (the first one for batched admin requests), if any.
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupRequest::Join { group, .. }
            | GroupRequest::Sync { group, .. }
            | GroupRequest::Heartbeat { group, .. }
            | GroupRequest::Leave { group, .. }
            | GroupRequest::OffsetCommit { group, .. }
            | GroupRequest::OffsetFetch { group, .. }
            | GroupRequest::OffsetDelete { group, .. } => Some(group),
            GroupRequest::Describe { groups } | GroupRequest::Delete { groups } => {
                groups.first().map(String::as_str)
            }
            GroupRequest::List { .. } => None,
        }
    }
}

/// Errors of group requests; each is one Kafka error code (in [`GroupError::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum GroupError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("request timed out: the record may still commit")]
    RequestTimedOut,
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// A request the broker cannot route (INVALID_REQUEST): the Kafka layer sends one group
    /// per DescribeGroups / DeleteGroups request to the core.
    #[error("invalid request")]
    InvalidRequest,
    #[error("not the coordinator")]
    NotCoordinator,
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    #[error("rebalance in progress")]
    RebalanceInProgress,
    #[error("non-empty group")]
    NonEmptyGroup,
    #[error("group id not found")]
    GroupIdNotFound,
    #[error("member id required")]
    MemberIdRequired,
    #[error("group max size reached")]
    GroupMaxSizeReached,
    #[error("fenced instance id")]
    FencedInstanceId,
    #[error("group subscribed to topic")]
    GroupSubscribedToTopic,
    #[error("unstable offset commit")]
    UnstableOffsetCommit,
}

impl GroupError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            GroupError::UnknownTopicOrPartition => 3,
            GroupError::RequestTimedOut => 7,
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::MemberIdRequired => 79,
            GroupError::FencedInstanceId => 82,
            GroupError::GroupSubscribedToTopic => 86,
            GroupError::UnstableOffsetCommit => 88,
            GroupError::InvalidRequest => 42,
        }
    }

    /// The Kafka code of an optional error (0 = NONE).
    pub fn code_of(e: Option<GroupError>) -> i16 {
        e.map_or(0, GroupError::code)
    }

    /// The error a client gets when a proposal failed: `Indeterminate` may still commit
    /// (REQUEST_TIMED_OUT); anything else means this replica no longer coordinates.
    pub fn from_proposal(e: &ClientError) -> GroupError {
        match e {
            ClientError::Indeterminate { .. } => GroupError::RequestTimedOut,
            _ => GroupError::NotCoordinator,
        }
    }
}

/// Kafka's classic group states, with the names ListGroups and DescribeGroups use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name as Kafka spells it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a Kafka state name, case-insensitively as Kafka's ListGroups does.
    pub fn parse(name: &str) -> Option<GroupState> {
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// A member as the leader's JoinGroup reply lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The JoinGroup reply (every field of Kafka's response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// JoinGroup v9: a static leader that rejoined a Stable group must not reassign.
    pub skip_assignment: bool,
    /// The member's id (also set with MEMBER_ID_REQUIRED: the id to join with).
    pub member_id: String,
    /// Non-empty for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    /// A reply carrying only an error (and the member id it concerns).
    pub fn error(error: GroupError, member_id: impl Into<String>) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.into(),
            members: Vec::new(),
        }
    }
}

/// The SyncGroup reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: GroupError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// The LeaveGroup reply: a top-level error, then one entry per member asked (v3+).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResult {
    pub error: Option<GroupError>,
    /// (member id, group instance id, error) in the request's order.
    pub members: Vec<(String, Option<String>, Option<GroupError>)>,
}

/// One partition of an OffsetFetch reply; offset -1 when nothing is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub tp: TopicPartition,
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error: Option<GroupError>,
}

/// One group of a ListGroups reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group: String,
    /// "" for a group that only stores offsets.
    pub protocol_type: String,
    pub state: GroupState,
}

/// One member of a DescribeGroups reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One group of a DescribeGroups reply; an unknown group is `Dead` with no error, as in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group: String,
    pub error: Option<GroupError>,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol ("" outside Stable/CompletingRebalance).
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

/// The OffsetDelete reply: a group-level error, then one per partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetDeleteResult {
    pub error: Option<GroupError>,
    pub partitions: Vec<(TopicPartition, Option<GroupError>)>,
}

/// The reply to each [`GroupRequest`], variant for variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupResponse {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(Result<(), GroupError>),
    Leave(LeaveResult),
    /// One error (or none) per partition, in the request's order.
    OffsetCommit(Vec<(TopicPartition, Option<GroupError>)>),
    /// In the request's order, or the group's partitions in order for `partitions: None`.
    OffsetFetch(Result<Vec<FetchedOffset>, GroupError>),
    List(Result<Vec<ListedGroup>, GroupError>),
    /// One per group asked, in order.
    Describe(Vec<DescribedGroup>),
    /// (group, error) per group asked, in order.
    Delete(Vec<(String, Option<GroupError>)>),
    OffsetDelete(OffsetDeleteResult),
}

impl GroupResponse {
    /// The reply to `request` when the whole request fails with `e`.
    pub fn error_for(request: &GroupRequest, e: GroupError) -> GroupResponse {
        match request {
            GroupRequest::Join { member_id, .. } => {
                GroupResponse::Join(JoinResult::error(e, member_id.clone()))
            }
            GroupRequest::Sync { .. } => GroupResponse::Sync(SyncResult::error(e)),
            GroupRequest::Heartbeat { .. } => GroupResponse::Heartbeat(Err(e)),
            GroupRequest::Leave { members, .. } => GroupResponse::Leave(LeaveResult {
                error: Some(e),
                members: members
                    .iter()
                    .map(|(m, i)| (m.clone(), i.clone(), Some(e)))
                    .collect(),
            }),
            GroupRequest::OffsetCommit { offsets, .. } => GroupResponse::OffsetCommit(
                offsets.iter().map(|o| (o.0.clone(), Some(e))).collect(),
            ),
            GroupRequest::OffsetFetch { .. } => GroupResponse::OffsetFetch(Err(e)),
            GroupRequest::List { .. } => GroupResponse::List(Err(e)),
            GroupRequest::Describe { groups } => GroupResponse::Describe(
                groups
                    .iter()
                    .map(|g| DescribedGroup {
                        group: g.clone(),
                        error: Some(e),
                        state: GroupState::Dead,
                        protocol_type: String::new(),
                        protocol: String::new(),
                        members: Vec::new(),
                    })
                    .collect(),
            ),
            GroupRequest::Delete { groups } => {
                GroupResponse::Delete(groups.iter().map(|g| (g.clone(), Some(e))).collect())
            }
            GroupRequest::OffsetDelete { partitions, .. } => {
                GroupResponse::OffsetDelete(OffsetDeleteResult {
                    error: Some(e),
                    partitions: partitions.iter().map(|tp| (tp.clone(), Some(e))).collect(),
                })
            }
        }
    }
}

impl From<&ClientError> for GroupError {
    /// A core error where a group error is due: not leading is NOT_COORDINATOR, an unknown
    /// outcome REQUEST_TIMED_OUT, anything else COORDINATOR_NOT_AVAILABLE (retriable).
    fn from(e: &ClientError) -> GroupError {
        match e {
            ClientError::NotLeader { .. } | ClientError::UnknownPartition(_) => {
                GroupError::NotCoordinator
            }
            ClientError::Indeterminate { .. } => GroupError::RequestTimedOut,
            _ => GroupError::CoordinatorNotAvailable,
        }
    }
}
