//! Simulated group consumers: members of one consumer group that join, sync, heartbeat, read
//! their assigned partitions from the committed offsets, commit what they read, and crash,
//! pause (stop heartbeating) or leave now and then, as Kafka's classic consumer does.
//!
//! They speak the core's group API ([`GroupRequest`]) to whichever node they believe
//! coordinates the group, moving on at NOT_COORDINATOR. The leader assigns with a range
//! assignor over the sorted members. Their polls are not in the Jepsen history (the history's
//! consumers use assign and are checked strictly); instead the workload checks the two
//! promises of committed offsets:
//! - **no acknowledged commit is lost:** an OffsetFetch answers at least the highest offset
//!   whose commit was acknowledged before the fetch was sent (a committed offset never goes
//!   backwards);
//! - **resuming skips nothing:** it answers at most the highest position a member of the
//!   group actually read to, so a consumer that resumes there skips no record.

use std::collections::BTreeMap;

use bytes::Bytes;
use railyard_core::api::{ClientError, Request, Response};
use railyard_core::groups::{GroupError, GroupRequest, GroupResponse, JoinMember};
use railyard_core::types::{NodeId, Offset, TopicPartition};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Session timeout the members ask for (simulated ms); the coordinators allow from 100 ms.
pub const SESSION_TIMEOUT_MS: i32 = 1_000;
const REBALANCE_TIMEOUT_MS: i32 = 2_000;
/// A member heartbeats at least this often while it consumes (simulated µs).
const HEARTBEAT_EVERY_US: u64 = 250_000;
/// Chance per operation that the member crashes (forgets everything, rejoins as new).
const CRASH_P: f64 = 0.002;
/// Chance per operation that it leaves the group (LeaveGroup) and rejoins.
const LEAVE_P: f64 = 0.002;
/// Chance per operation that it pauses: no request for longer than its session timeout.
const PAUSE_P: f64 = 0.001;

/// Where a member is in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Join,
    Sync,
    FetchOffsets,
    Consume,
    Leave,
}

/// One group member's state.
#[derive(Clone, Debug)]
pub struct Member {
    pub group: String,
    keys: Vec<TopicPartition>,
    phase: Phase,
    member_id: String,
    generation: i32,
    /// Members and their metadata, when this member leads the generation.
    led: Vec<JoinMember>,
    assignment: Vec<TopicPartition>,
    positions: BTreeMap<TopicPartition, Offset>,
    coordinator: Option<NodeId>,
    leaders: BTreeMap<TopicPartition, NodeId>,
    last_heartbeat_us: u64,
    next_poll: usize,
    /// Do nothing before this time (a pause).
    pub paused_until_us: u64,
}

/// What a member sends, remembered until its reply.
#[derive(Clone, Debug)]
pub enum GroupOp {
    Group {
        /// For commits: the offsets sent; for fetches: the time it was sent.
        commit: Vec<(TopicPartition, Offset)>,
        sent_us: u64,
    },
    Poll {
        tp: TopicPartition,
        from: Offset,
    },
}

/// What the checks of one group know (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct GroupLedger {
    /// Per partition: (ack time, offset) of every acknowledged commit.
    acked: BTreeMap<TopicPartition, Vec<(u64, Offset)>>,
    /// Per partition: the highest position any member read to.
    read_to: BTreeMap<TopicPartition, Offset>,
    pub commits_acked: u64,
    pub rebalances: u64,
    pub crashes: u64,
    pub resumes_checked: u64,
}

impl GroupLedger {
    /// The highest offset acknowledged before `t`.
    fn acked_before(&self, tp: &TopicPartition, t: u64) -> Offset {
        self.acked.get(tp).map_or(0, |v| {
            v.iter()
                .filter(|(at, _)| *at < t)
                .map(|(_, o)| *o)
                .max()
                .unwrap_or(0)
        })
    }
}

impl Member {
    pub fn new(group: &str, keys: Vec<TopicPartition>) -> Member {
        Member {
            group: group.to_string(),
            keys,
            phase: Phase::Join,
            member_id: String::new(),
            generation: -1,
            led: Vec::new(),
            assignment: Vec::new(),
            positions: BTreeMap::new(),
            coordinator: None,
            leaders: BTreeMap::new(),
            last_heartbeat_us: 0,
            next_poll: 0,
            paused_until_us: 0,
        }
    }

    /// The member's next request: (node, request, what to remember).
    pub fn next(
        &mut self,
        nodes: &[NodeId],
        now_us: u64,
        ledger: &mut GroupLedger,
        rng: &mut ChaCha8Rng,
    ) -> Option<(NodeId, Request, GroupOp)> {
        if now_us < self.paused_until_us {
            return None;
        }
        self.maybe_fault(now_us, ledger, rng);
        let any = nodes[rng.gen_range(0..nodes.len())];
        let coordinator = self.coordinator.unwrap_or(any);
        let group_op = |commit| GroupOp::Group {
            commit,
            sent_us: now_us,
        };
        let request = match self.phase {
            Phase::Join => self.join(),
            Phase::Sync => self.sync(),
            Phase::FetchOffsets => GroupRequest::OffsetFetch {
                group: self.group.clone(),
                partitions: Some(self.assignment.clone()),
                require_stable: false,
            },
            Phase::Leave => GroupRequest::Leave {
                group: self.group.clone(),
                members: vec![(self.member_id.clone(), None)],
            },
            Phase::Consume if now_us - self.last_heartbeat_us >= HEARTBEAT_EVERY_US => {
                self.last_heartbeat_us = now_us;
                GroupRequest::Heartbeat {
                    group: self.group.clone(),
                    generation: self.generation,
                    member_id: self.member_id.clone(),
                    group_instance_id: None,
                }
            }
            Phase::Consume if self.assignment.is_empty() => return None,
            Phase::Consume if rng.gen_bool(0.5) => return Some(self.poll(any, rng)),
            Phase::Consume => {
                let offsets: Vec<(TopicPartition, Offset)> = self
                    .positions
                    .iter()
                    .map(|(t, o)| (t.clone(), *o))
                    .collect();
                let request = GroupRequest::OffsetCommit {
                    group: self.group.clone(),
                    generation: self.generation,
                    member_id: self.member_id.clone(),
                    group_instance_id: None,
                    offsets: offsets
                        .iter()
                        .map(|(t, o)| (t.clone(), *o, -1, None))
                        .collect(),
                };
                return Some((coordinator, Request::Group(request), group_op(offsets)));
            }
        };
        Some((coordinator, Request::Group(request), group_op(Vec::new())))
    }

    /// Crashes, leaves or pauses now and then.
    fn maybe_fault(&mut self, now_us: u64, ledger: &mut GroupLedger, rng: &mut ChaCha8Rng) {
        if rng.gen_bool(CRASH_P) {
            ledger.crashes += 1;
            let keys = std::mem::take(&mut self.keys);
            *self = Member::new(&self.group, keys);
        } else if self.phase == Phase::Consume && rng.gen_bool(LEAVE_P) {
            self.phase = Phase::Leave;
        } else if rng.gen_bool(PAUSE_P) {
            self.paused_until_us = now_us + 2 * SESSION_TIMEOUT_MS as u64 * 1000;
        }
    }

    fn join(&self) -> GroupRequest {
        let subscription: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        GroupRequest::Join {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: None,
            client_id: "sim".into(),
            client_host: "/sim".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from(subscription.join(",")))],
            session_timeout_ms: SESSION_TIMEOUT_MS,
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
            require_known_member_id: true,
            reason: None,
        }
    }

    /// SyncGroup; the leader sends a range assignment of the keys over the sorted members.
    fn sync(&self) -> GroupRequest {
        let mut members: Vec<&str> = self.led.iter().map(|m| m.member_id.as_str()).collect();
        members.sort_unstable();
        let assignments = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mine: Vec<String> = self
                    .keys
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % members.len() == i)
                    .map(|(_, tp)| tp.to_string())
                    .collect();
                (m.to_string(), Bytes::from(mine.join(",")))
            })
            .collect();
        GroupRequest::Sync {
            group: self.group.clone(),
            generation: self.generation,
            member_id: self.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        }
    }

    fn poll(&mut self, any: NodeId, rng: &mut ChaCha8Rng) -> (NodeId, Request, GroupOp) {
        let tp = self.assignment[self.next_poll % self.assignment.len()].clone();
        self.next_poll = self.next_poll.wrapping_add(1);
        let from = self.positions.get(&tp).copied().unwrap_or(0);
        let node = match self.leaders.get(&tp) {
            Some(n) if rng.gen_bool(0.95) => *n,
            _ => any,
        };
        let request = Request::Fetch {
            tp: tp.clone(),
            offset: from,
            max_bytes: crate::workload::FETCH_MAX_BYTES,
        };
        (node, request, GroupOp::Poll { tp, from })
    }

    /// Handles a reply; returns a violation of the module's promises, if one showed.
    pub fn reply(
        &mut self,
        node: NodeId,
        op: GroupOp,
        response: Response,
        now_us: u64,
        ledger: &mut GroupLedger,
    ) -> Option<String> {
        match (op, response) {
            (GroupOp::Poll { tp, from }, Response::Fetch(r)) => {
                self.polled(tp, from, node, r, ledger);
                None
            }
            (GroupOp::Group { commit, sent_us }, Response::Group(g)) => {
                self.group_reply(node, commit, sent_us, g, now_us, ledger)
            }
            (op, r) => panic!("group member got {r:?} for {op:?}"),
        }
    }

    /// No reply in time: try another coordinator, and rejoin if it was a rebalance step.
    pub fn timed_out(&mut self) {
        self.coordinator = None;
        self.leaders.clear();
    }

    fn polled(
        &mut self,
        tp: TopicPartition,
        from: Offset,
        node: NodeId,
        r: Result<railyard_core::api::FetchReply, ClientError>,
        ledger: &mut GroupLedger,
    ) {
        match r {
            Ok(reply) => {
                self.leaders.insert(tp.clone(), node);
                let end = reply
                    .batches
                    .iter()
                    .filter_map(|b| railyard_core::batch::BatchHeader::parse(b).ok())
                    .map(|h| h.next_offset())
                    .max()
                    .unwrap_or(from)
                    .min(reply.high_watermark)
                    .max(from);
                if self.assignment.contains(&tp) {
                    self.positions.insert(tp.clone(), end);
                    let r = ledger.read_to.entry(tp).or_insert(0);
                    *r = (*r).max(end);
                }
            }
            Err(ClientError::NotLeader { leader: Some(l) }) => {
                self.leaders.insert(tp, l);
            }
            Err(ClientError::OffsetOutOfRange { start, .. }) if from < start => {
                // Deleted records (DeleteRecords): on from the log start, as
                // `auto.offset.reset=earliest`; what lies below it is gone, so resuming there
                // skips nothing.
                if self.assignment.contains(&tp) {
                    self.positions.insert(tp.clone(), start);
                    let r = ledger.read_to.entry(tp).or_insert(0);
                    *r = (*r).max(start);
                }
            }
            Err(_) => {
                self.leaders.remove(&tp);
            }
        }
    }

    fn group_reply(
        &mut self,
        node: NodeId,
        commit: Vec<(TopicPartition, Offset)>,
        sent_us: u64,
        g: GroupResponse,
        now_us: u64,
        ledger: &mut GroupLedger,
    ) -> Option<String> {
        let error = match g {
            GroupResponse::Join(j) => self.joined(j, ledger),
            GroupResponse::Sync(s) => self.synced(s),
            GroupResponse::Heartbeat(r) => r.err(),
            GroupResponse::Leave(_) => {
                self.rejoin_as_new();
                None
            }
            GroupResponse::OffsetCommit(parts) => {
                for ((tp, o), (_, e)) in commit.iter().zip(&parts) {
                    if e.is_none() {
                        ledger
                            .acked
                            .entry(tp.clone())
                            .or_default()
                            .push((now_us, *o));
                        ledger.commits_acked += 1;
                    }
                }
                parts.iter().find_map(|(_, e)| *e)
            }
            GroupResponse::OffsetFetch(r) => match r {
                Ok(offsets) => return self.resumed(offsets, sent_us, ledger),
                Err(e) => Some(e),
            },
            other => panic!("group member got {other:?}"),
        };
        match error {
            None => self.coordinator = Some(node),
            Some(e) => self.on_error(e),
        }
        None
    }

    fn joined(
        &mut self,
        j: railyard_core::groups::JoinResult,
        ledger: &mut GroupLedger,
    ) -> Option<GroupError> {
        match j.error {
            Some(GroupError::MemberIdRequired) => {
                self.member_id = j.member_id;
                return None;
            }
            Some(e) => return Some(e),
            None => {}
        }
        ledger.rebalances += 1;
        self.member_id = j.member_id;
        self.generation = j.generation;
        self.led = j.members;
        self.phase = Phase::Sync;
        None
    }

    fn synced(&mut self, s: railyard_core::groups::SyncResult) -> Option<GroupError> {
        if let Some(e) = s.error {
            return Some(e);
        }
        let text = String::from_utf8_lossy(&s.assignment).to_string();
        self.assignment = self
            .keys
            .iter()
            .filter(|k| text.split(',').any(|t| t == k.to_string()))
            .cloned()
            .collect();
        self.positions.clear();
        self.phase = Phase::FetchOffsets;
        None
    }

    /// The committed offsets to resume from: checked against the ledger, then adopted.
    fn resumed(
        &mut self,
        offsets: Vec<railyard_core::groups::FetchedOffset>,
        sent_us: u64,
        ledger: &mut GroupLedger,
    ) -> Option<String> {
        let mut violation = None;
        for f in &offsets {
            if f.error.is_some() {
                continue;
            }
            let at = f.offset.max(0);
            let acked = ledger.acked_before(&f.tp, sent_us);
            let read = ledger.read_to.get(&f.tp).copied().unwrap_or(0);
            ledger.resumes_checked += 1;
            if at < acked {
                violation = Some(format!(
                    "group {}: committed offset of {} went backwards: fetched {at}, acked {acked}",
                    self.group, f.tp
                ));
            } else if at > read {
                violation = Some(format!(
                    "group {}: resuming {} at {at} skips records: members read only to {read}",
                    self.group, f.tp
                ));
            }
            self.positions.insert(f.tp.clone(), at);
        }
        self.phase = Phase::Consume;
        violation
    }

    fn on_error(&mut self, e: GroupError) {
        match e {
            GroupError::NotCoordinator
            | GroupError::CoordinatorNotAvailable
            | GroupError::CoordinatorLoadInProgress
            | GroupError::RequestTimedOut => self.coordinator = None,
            GroupError::UnknownMemberId | GroupError::FencedInstanceId => self.rejoin_as_new(),
            GroupError::RebalanceInProgress | GroupError::IllegalGeneration => {
                self.phase = Phase::Join;
            }
            // A commit of a partition that is not a topic's, or anything else: start over.
            _ => self.phase = Phase::Join,
        }
    }

    fn rejoin_as_new(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        self.assignment.clear();
        self.positions.clear();
        self.phase = Phase::Join;
    }
}
