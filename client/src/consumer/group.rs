//! A consumer group member (the classic protocol): the coordinator's address, the member
//! state, and the group requests.
//!
//! [`Member`] is the state (member id, generation, whether a rejoin is due), plain data the
//! consumer and the heartbeat task share. [`Coordinator`] makes the requests: JoinGroup (with
//! the MEMBER_ID_REQUIRED round trip of KIP-394), SyncGroup (the leader sends the assignment
//! it computed), Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch. A coordinator that moved
//! (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, a lost connection) is forgotten and found
//! again through FindCoordinator on the next attempt; the retry loop is [`Cluster::retry`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::assignor::{Assignor, MemberSubscription};
use crate::cluster::Cluster;
use crate::conn::{lock, Connection};
use crate::error::{check_code, Error, Result};
use crate::producer::accumulator::TopicPartition;

/// The consumer protocol versions this client writes (v1 carries owned partitions, which the
/// cooperative protocol needs; every reader since Kafka 2.4 reads it).
const SUBSCRIPTION_VERSION: i16 = 1;
const ASSIGNMENT_VERSION: i16 = 1;
/// The newest versions this client decodes; a newer one decodes as this (fields only append).
const PROTOCOL_VERSION_MAX: i16 = 3;

/// The member's state in its group.
#[derive(Clone, Debug, Default)]
pub struct MemberState {
    /// Assigned by the coordinator at the first JoinGroup; empty before.
    pub member_id: String,
    /// The generation of the last successful join (`-1` before).
    pub generation: i32,
    /// Whether the member is in a stable generation (heartbeats are sent only then).
    pub stable: bool,
    /// The protocol the group chose.
    pub protocol: Option<Assignor>,
}

/// State shared by the consumer and its heartbeat task.
#[derive(Debug)]
pub struct Member {
    /// The state.
    pub state: Mutex<MemberState>,
    /// Set when the coordinator says the group is rebalancing (or forgot the member).
    pub rejoin: AtomicBool,
}

impl Member {
    fn new() -> Member {
        Member {
            state: Mutex::new(MemberState {
                generation: -1,
                ..MemberState::default()
            }),
            rejoin: AtomicBool::new(true),
        }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> MemberState {
        lock(&self.state).clone()
    }
}

/// What one join-and-sync produced.
#[derive(Debug)]
pub struct Joined {
    /// The member's new assignment.
    pub assignment: Vec<TopicPartition>,
    /// The protocol the group chose.
    pub protocol: Assignor,
}

/// Group settings the coordinator needs.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// The group id.
    pub group_id: String,
    /// Static membership.
    pub instance_id: Option<String>,
    /// The session timeout.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin.
    pub rebalance_timeout_ms: i32,
    /// Assignors in preference order.
    pub assignors: Vec<Assignor>,
}

impl GroupSettings {
    /// Settings for a client that only reads or commits a group's offsets, or describes it,
    /// without joining (the admin client, a consumer that only assigns).
    pub fn for_admin(group_id: &str) -> GroupSettings {
        GroupSettings {
            group_id: group_id.to_string(),
            instance_id: None,
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            assignors: Vec::new(),
        }
    }
}

/// The group's coordinator and the requests to it.
pub struct Coordinator {
    cluster: Arc<Cluster>,
    settings: GroupSettings,
    /// (node id, address) of the coordinator, once found.
    known: Mutex<Option<(i32, String)>>,
    /// The member state, shared with the heartbeat task.
    pub member: Arc<Member>,
}

impl Coordinator {
    /// A coordinator client for `settings.group_id` (not yet looked up).
    pub fn new(cluster: Arc<Cluster>, settings: GroupSettings) -> Coordinator {
        Coordinator {
            cluster,
            settings,
            known: Mutex::new(None),
            member: Arc::new(Member::new()),
        }
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.settings.group_id
    }

    /// Joins (or rejoins) the group with `topics`, owning `owned`, and syncs; the leader
    /// computes the assignment from every member's subscription. Retries MEMBER_ID_REQUIRED,
    /// coordinator moves and rebalances in progress.
    pub async fn join_and_sync(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Joined> {
        let cluster = self.cluster.clone();
        cluster
            .retry(|| async {
                let joined = self.join_once(topics, owned).await;
                if let Err(e) = &joined {
                    self.forget_on(e);
                }
                joined
            })
            .await
    }

    async fn join_once(&self, topics: &[String], owned: &[TopicPartition]) -> Result<Joined> {
        let conn = self.connection().await?;
        let metadata = encode_subscription(topics, owned)?;
        let protocols = self
            .settings
            .assignors
            .iter()
            .map(|a| {
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(a.name()))
                    .with_metadata(metadata.clone())
            })
            .collect();
        let mut req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_session_timeout_ms(self.settings.session_timeout_ms)
            .with_rebalance_timeout_ms(self.settings.rebalance_timeout_ms)
            .with_group_instance_id(self.settings.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols);
        // JoinGroup waits for every member to rejoin: up to the rebalance timeout.
        let wait = Duration::from_millis(self.settings.rebalance_timeout_ms as u64 + 5_000);
        let version = conn.version::<JoinGroupRequest>()?;
        let resp = loop {
            req.member_id = StrBytes::from_string(self.member.snapshot().member_id);
            let resp = conn.call_within(&req, version, wait).await?;
            if resp.error_code == ResponseError::MemberIdRequired.code() {
                lock(&self.member.state).member_id = resp.member_id.to_string();
                continue;
            }
            if resp.error_code == ResponseError::UnknownMemberId.code() {
                lock(&self.member.state).member_id.clear();
            }
            self.check(&conn, resp.error_code, "JoinGroup")?;
            break resp;
        };
        let protocol = resp
            .protocol_name
            .as_ref()
            .and_then(|n| Assignor::from_name(n))
            .ok_or_else(|| Error::Protocol {
                broker: conn.broker().clone(),
                reason: format!("JoinGroup chose unknown protocol {:?}", resp.protocol_name),
            })?;
        {
            let mut s = lock(&self.member.state);
            s.member_id = resp.member_id.to_string();
            s.generation = resp.generation_id;
            s.protocol = Some(protocol);
        }
        let assignments = if resp.leader == resp.member_id && !resp.skip_assignment {
            self.lead(&resp.members, protocol).await?
        } else {
            Vec::new()
        };
        let assignment = self.sync(&conn, protocol, assignments).await?;
        let mut s = lock(&self.member.state);
        s.stable = true;
        self.member.rejoin.store(false, Ordering::Release);
        drop(s);
        Ok(Joined {
            assignment,
            protocol,
        })
    }

    /// The leader's part: every member's subscription in, an encoded assignment per member out.
    async fn lead(
        &self,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
        protocol: Assignor,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut subs = Vec::new();
        for m in members {
            let (topics, owned) =
                decode_subscription(m.metadata.clone()).map_err(|reason| Error::Protocol {
                    broker: crate::error::BrokerRef {
                        addr: "coordinator".into(),
                        node_id: None,
                    },
                    reason: format!("member {}'s subscription: {reason}", m.member_id),
                })?;
            subs.push(MemberSubscription {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics,
                owned,
            });
        }
        let meta = self.cluster.refresh_metadata().await?;
        let counts: BTreeMap<String, i32> = subs
            .iter()
            .flat_map(|s| s.topics.iter())
            .filter_map(|t| Some((t.clone(), meta.topic(t)?.partitions.len() as i32)))
            .collect();
        let plan = protocol.assign(&subs, &counts);
        plan.into_iter()
            .map(|(member, tps)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_assignment(&tps)?))
            })
            .collect()
    }

    async fn sync(
        &self,
        conn: &Connection,
        protocol: Assignor,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<Vec<TopicPartition>> {
        let s = self.member.snapshot();
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id(s.generation)
            .with_member_id(StrBytes::from_string(s.member_id))
            .with_group_instance_id(self.settings.instance_id.clone().map(StrBytes::from_string))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(protocol.name())))
            .with_assignments(assignments);
        let wait = Duration::from_millis(self.settings.rebalance_timeout_ms as u64 + 5_000);
        let resp = conn
            .call_within(&req, conn.version::<SyncGroupRequest>()?, wait)
            .await?;
        self.check(conn, resp.error_code, "SyncGroup")?;
        decode_assignment(resp.assignment).map_err(|reason| Error::Protocol {
            broker: conn.broker().clone(),
            reason: format!("SyncGroup assignment: {reason}"),
        })
    }

    /// One heartbeat. REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION and
    /// FENCED_INSTANCE_ID mark a rejoin as due (the error is returned too).
    pub async fn heartbeat(&self) -> Result<()> {
        let s = self.member.snapshot();
        if !s.stable {
            return Ok(());
        }
        let result = async {
            let conn = self.connection().await?;
            let req = HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(
                    self.settings.group_id.clone(),
                )))
                .with_generation_id(s.generation)
                .with_member_id(StrBytes::from_string(s.member_id.clone()))
                .with_group_instance_id(
                    self.settings.instance_id.clone().map(StrBytes::from_string),
                );
            let resp = conn.call(&req).await?;
            self.check(&conn, resp.error_code, "Heartbeat")
        }
        .await;
        if let Err(e) = &result {
            self.forget_on(e);
            if let Some(code) = e.kafka_code() {
                self.on_membership_error(code);
            }
        }
        result
    }

    /// Leaves the group (a static member stays: its instance id keeps its assignment through a
    /// restart, KIP-345). Best effort: an error is returned but nothing is retried.
    pub async fn leave(&self) -> Result<()> {
        let s = self.member.snapshot();
        lock(&self.member.state).stable = false;
        if s.member_id.is_empty() || self.settings.instance_id.is_some() {
            return Ok(());
        }
        let conn = self.connection().await?;
        let version = conn.version::<LeaveGroupRequest>()?;
        let mut req = LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_string(
            self.settings.group_id.clone(),
        )));
        if version >= 3 {
            req.members =
                vec![MemberIdentity::default().with_member_id(StrBytes::from_string(s.member_id))];
        } else {
            req.member_id = StrBytes::from_string(s.member_id);
        }
        let resp = conn.call_at(&req, version).await?;
        self.check(&conn, resp.error_code, "LeaveGroup")
    }

    /// Commits `offsets` (the next offset to read, per partition) for the group, as this
    /// member when it is in a generation, else as a simple consumer (generation -1).
    pub async fn commit(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        // A rebalance under way is not retried here: the commit belongs to a generation that
        // is ending, and the caller (the revoke, the next auto-commit) decides what follows.
        cluster
            .retry(|| async {
                match self.commit_once(offsets).await {
                    Err(e) if e.kafka_code() == Some(ResponseError::RebalanceInProgress) => {
                        Ok(Err(e))
                    }
                    Err(e) => {
                        self.forget_on(&e);
                        Err(e)
                    }
                    Ok(()) => Ok(Ok(())),
                }
            })
            .await?
    }

    async fn commit_once(&self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let conn = self.connection().await?;
        let s = self.member.snapshot();
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, &offset) in offsets {
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_generation_id_or_member_epoch(if s.stable { s.generation } else { -1 })
            .with_member_id(StrBytes::from_string(if s.stable {
                s.member_id
            } else {
                String::new()
            }))
            .with_group_instance_id(if s.stable {
                self.settings.instance_id.clone().map(StrBytes::from_string)
            } else {
                None
            })
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let resp = conn.call(&req).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                let code = ResponseError::try_from_code(p.error_code);
                if let Some(code) = code {
                    self.on_membership_error(code);
                }
                check_code(p.error_code, conn.broker().clone(), "OffsetCommit", || {
                    Some(format!("{}/{}", t.name.0, p.partition_index))
                })?;
            }
        }
        Ok(())
    }

    /// The committed offsets of `tps` (`None` where nothing is committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.fetch_offsets(Some(tps)).await
    }

    /// Every offset the group has committed, on any topic (OffsetFetch with no topic list).
    pub async fn committed_all(&self) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        self.fetch_offsets(None).await
    }

    async fn fetch_offsets(
        &self,
        tps: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let cluster = self.cluster.clone();
        cluster
            .retry(|| async {
                let r = self.committed_once(tps).await;
                if let Err(e) = &r {
                    self.forget_on(e);
                }
                r
            })
            .await
    }

    /// One OffsetFetch: of `tps`, or of every committed partition when `None`.
    async fn committed_once(
        &self,
        tps: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let conn = self.connection().await?;
        let topics = tps.map(|tps| {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in tps {
                topics.entry(&tp.topic).or_default().push(tp.partition);
            }
            topics
                .into_iter()
                .map(|(t, p)| {
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(p)
                })
                .collect()
        });
        let group = OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(
                self.settings.group_id.clone(),
            )))
            .with_topics(topics);
        let version = conn.version::<OffsetFetchRequest>()?;
        if version < 8 {
            return Err(Error::UnsupportedVersion {
                broker: conn.broker().clone(),
                api: "OffsetFetch",
                broker_min: version,
                broker_max: version,
                client_min: 8,
                client_max: 9,
            });
        }
        let req = OffsetFetchRequest::default().with_groups(vec![group]);
        let resp = conn.call_at(&req, version).await?;
        let mut out: BTreeMap<TopicPartition, Option<i64>> = tps
            .unwrap_or_default()
            .iter()
            .map(|tp| (tp.clone(), None))
            .collect();
        for g in resp.groups {
            self.check(&conn, g.error_code, "OffsetFetch")?;
            for t in g.topics {
                for p in t.partitions {
                    check_code(p.error_code, conn.broker().clone(), "OffsetFetch", || {
                        Some(format!("{}/{}", t.name.0, p.partition_index))
                    })?;
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    out.insert(tp, (p.committed_offset >= 0).then_some(p.committed_offset));
                }
            }
        }
        Ok(out)
    }

    /// The coordinator's connection, found through FindCoordinator when not known.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let known = lock(&self.known).clone();
        let (node, addr) = match known {
            Some(k) => k,
            None => {
                let found = self
                    .cluster
                    .find_coordinator(&self.settings.group_id, 0)
                    .await?;
                *lock(&self.known) = Some(found.clone());
                found
            }
        };
        self.cluster.connection_at(node, &addr).await
    }

    /// The coordinator's connection, for requests the admin client makes.
    pub(crate) async fn connection_for_admin(&self) -> Result<Arc<Connection>> {
        let r = self.connection().await;
        if let Err(e) = &r {
            self.forget_on(e);
        }
        r
    }

    /// Forgets the coordinator after an error that says it moved or is unreachable.
    pub(crate) fn forget_on(&self, e: &Error) {
        // REQUEST_TIMED_OUT too, as the Java client's coordinator does: the coordinator may
        // be a broker that is stopping, whose answers will not get better.
        let moved = matches!(
            e.kafka_code(),
            Some(
                ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::RequestTimedOut
            )
        );
        if moved || e.is_unknown_outcome() || matches!(e, Error::Connect { .. }) {
            *lock(&self.known) = None;
        }
    }

    fn on_membership_error(&self, code: ResponseError) {
        match code {
            ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration => {
                self.member.rejoin.store(true, Ordering::Release);
            }
            ResponseError::UnknownMemberId | ResponseError::FencedInstanceId => {
                let mut s = lock(&self.member.state);
                s.member_id.clear();
                s.generation = -1;
                s.stable = false;
                self.member.rejoin.store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    fn check(&self, conn: &Connection, code: i16, api: &'static str) -> Result<()> {
        let group = &self.settings.group_id;
        check_code(code, conn.broker().clone(), api, || {
            Some(format!("group {group:?}"))
        })
    }
}

/// Heartbeats every `interval` while the member is stable, until `stop` is set.
pub async fn heartbeat_loop(
    coordinator: Arc<Coordinator>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(interval).await;
        // Errors are recorded in the member state (a rejoin is due) or are transient (the next
        // beat tries again); the consumer reports what matters from its own calls.
        let _ = coordinator.heartbeat().await;
    }
}

/// ConsumerProtocolSubscription, version-prefixed.
pub fn encode_subscription(topics: &[String], owned: &[TopicPartition]) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(
            by_topic
                .into_iter()
                .map(|(t, p)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(p)
                })
                .collect(),
        );
    versioned(SUBSCRIPTION_VERSION, |buf| {
        sub.encode(buf, SUBSCRIPTION_VERSION)
    })
}

/// Topics and owned partitions of a version-prefixed ConsumerProtocolSubscription.
pub fn decode_subscription(mut data: Bytes) -> Result<(Vec<String>, Vec<TopicPartition>), String> {
    let version = read_version(&mut data)?;
    let sub = catch(|| ConsumerProtocolSubscription::decode(&mut data, version))?;
    let owned = sub
        .owned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.0.to_string(), p))
        })
        .collect();
    Ok((sub.topics.iter().map(|t| t.to_string()).collect(), owned))
}

/// ConsumerProtocolAssignment, version-prefixed.
pub fn encode_assignment(tps: &[TopicPartition]) -> Result<Bytes> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(t, p)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(p)
            })
            .collect(),
    );
    versioned(ASSIGNMENT_VERSION, |buf| a.encode(buf, ASSIGNMENT_VERSION))
}

/// The partitions of a version-prefixed ConsumerProtocolAssignment (empty bytes: none).
pub fn decode_assignment(mut data: Bytes) -> Result<Vec<TopicPartition>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let version = read_version(&mut data)?;
    let a = catch(|| ConsumerProtocolAssignment::decode(&mut data, version))?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.0.to_string(), p))
        })
        .collect())
}

fn versioned<E: std::fmt::Display>(
    version: i16,
    encode: impl FnOnce(&mut BytesMut) -> std::result::Result<(), E>,
) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    encode(&mut buf).map_err(|e| Error::Encode {
        api: "ConsumerProtocol",
        reason: e.to_string(),
    })?;
    Ok(buf.freeze())
}

fn read_version(data: &mut Bytes) -> Result<i16, String> {
    if data.len() < 2 {
        return Err("shorter than its version".into());
    }
    let v = data.get_i16();
    if v < 0 {
        return Err(format!("version {v}"));
    }
    Ok(v.min(PROTOCOL_VERSION_MAX))
}

fn catch<T, E: std::fmt::Display>(
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the decoder panicked".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves subscriptions and assignments survive their encoding, owned partitions included.
    #[test]
    fn test_consumer_protocol_round_trip() {
        let owned = vec![TopicPartition::new("a", 1), TopicPartition::new("a", 3)];
        let bytes = encode_subscription(&["a".into(), "b".into()], &owned).expect("encodes");
        let (topics, back) = decode_subscription(bytes).expect("decodes");
        assert_eq!(topics, vec!["a", "b"]);
        assert_eq!(back, owned);
        let bytes = encode_assignment(&owned).expect("encodes");
        assert_eq!(decode_assignment(bytes).expect("decodes"), owned);
        assert!(decode_assignment(Bytes::from_static(&[0, 1, 0xff])).is_err());
    }
}
