//! A group's live membership: the leader-only soft state of Kafka's `ClassicGroup`. It is
//! built from the committed metadata when this replica finishes loading, changed only by the
//! leader's decisions, and dropped when leadership ends. Pure data and decisions: no effects.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::api::{DescribedMember, GroupState, JoinMember};
use super::records::{GroupValue, MemberMeta};
use crate::api::RequestId;
use crate::types::Millis;

/// One member of a live group.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub id: String,
    pub instance: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub join: Option<RequestId>,
    /// A SyncGroup waiting for the assignment to commit.
    pub sync: Option<RequestId>,
    /// Monotonic time at which the session expires without a heartbeat.
    pub session_deadline_ms: Millis,
    /// Order of arrival in the group: the earliest member leads when the leader left.
    pub seq: u64,
}

impl Member {
    /// The member's metadata for `protocol` (empty if it does not support it).
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Whether the session is kept alive: members waiting on a reply are (Kafka's
    /// `hasSatisfiedHeartbeat`); the rebalance timeout bounds those instead.
    pub fn expired(&self, now_ms: Millis) -> bool {
        self.join.is_none() && self.sync.is_none() && now_ms >= self.session_deadline_ms
    }

    pub fn touch(&mut self, now_ms: Millis) {
        self.session_deadline_ms = now_ms + self.session_timeout_ms as Millis;
    }
}

/// The timer of a rebalance in progress (Kafka's DelayedJoin / InitialDelayedJoin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rebalance {
    pub deadline_ms: Millis,
    /// `Some(remaining)`: the initial delay of a group that was Empty; it never completes
    /// early, and is extended by joins until `remaining` is used up.
    pub initial_remaining_ms: Option<Millis>,
}

/// A group as its coordinator runs it.
#[derive(Clone, Debug)]
pub(super) struct LiveGroup {
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: group instance id -> member id.
    pub instances: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to join by.
    pub pending: BTreeMap<String, Millis>,
    pub rebalance: Option<Rebalance>,
    /// The assignment record in flight (CompletingRebalance -> Stable).
    pub sync_tag: Option<u64>,
    /// Members yet to send their SyncGroup for this generation, and the deadline (the
    /// rebalance timeout) after which they are removed (Kafka's pending sync expiration).
    pub awaiting_sync: BTreeSet<String>,
    pub sync_deadline_ms: Option<Millis>,
    /// A member joined during the initial delay (which then extends).
    pub new_member_added: bool,
}

impl LiveGroup {
    pub fn empty() -> LiveGroup {
        LiveGroup {
            state: GroupState::Empty,
            protocol_type: None,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance: None,
            sync_tag: None,
            awaiting_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            new_member_added: false,
        }
    }

    /// The group as its last committed metadata left it: Stable with its members (each with
    /// a fresh session, as Kafka gives on load), or Empty.
    pub fn load(value: Option<&GroupValue>, now_ms: Millis) -> LiveGroup {
        let mut g = LiveGroup::empty();
        let Some(v) = value else {
            return g;
        };
        g.protocol_type = Some(v.protocol_type.clone()).filter(|t| !t.is_empty());
        g.generation = v.generation;
        g.protocol = v.protocol.clone();
        g.leader = v.leader.clone();
        for (seq, m) in v.members.iter().enumerate() {
            let member = Member::from_meta(m, v.protocol.as_deref(), seq as u64, now_ms);
            if let Some(i) = &m.group_instance_id {
                g.instances.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), member);
        }
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
        }
        g
    }

    /// The group metadata value to persist now.
    pub fn to_value(&self, wall_ms: Millis) -> GroupValue {
        let protocol = self.protocol.as_deref().unwrap_or("");
        let members = self
            .members
            .values()
            .map(|m| MemberMeta {
                member_id: m.id.clone(),
                group_instance_id: m.instance.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata(protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: wall_ms,
            members,
        }
    }

    /// Moves to `to`, asserting the move is one of Kafka's (`validPreviousStates`).
    pub fn transition(&mut self, to: GroupState) {
        use GroupState::*;
        let from = self.state;
        let valid = match to {
            PreparingRebalance => matches!(from, Stable | CompletingRebalance | Empty),
            CompletingRebalance => from == PreparingRebalance,
            Stable => from == CompletingRebalance,
            Empty => from == PreparingRebalance,
            Dead => true,
        };
        assert!(valid, "group transition {from:?} -> {to:?}");
        self.state = to;
    }

    /// Whether a member (`member`: its id when it is already one, whose old protocols do not
    /// count) with this type and protocols may join (Kafka's `supportsProtocols`).
    pub fn supports(
        &self,
        member: Option<&str>,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others = self.members.keys().filter(|m| Some(m.as_str()) != member);
        if others.count() == 0 {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(p, _)| self.supported_by_all(p, member))
    }

    /// Whether every member (but `except`) lists `protocol`.
    fn supported_by_all(&self, protocol: &str, except: Option<&str>) -> bool {
        self.members
            .values()
            .filter(|m| Some(m.id.as_str()) != except)
            .all(|m| m.protocols.iter().any(|(n, _)| n == protocol))
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes
    /// for its most preferred; the most votes win (ties: the smallest name, to stay
    /// deterministic where Kafka's hash order decides).
    pub fn select_protocol(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            let choice = m
                .protocols
                .iter()
                .find(|(p, _)| self.supported_by_all(p, None));
            if let Some((p, _)) = choice {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(p, _)| p.to_string())
    }

    /// Every known member rejoined and no member id handed out is still to come.
    pub fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join.is_some())
    }

    pub fn max_rebalance_timeout_ms(&self) -> Millis {
        let max = self.members.values().map(|m| m.rebalance_timeout_ms);
        max.max().unwrap_or(0).max(0) as Millis
    }

    /// The member that leads the next generation: the current leader if still here, else the
    /// earliest to arrive.
    pub fn next_leader(&self) -> Option<String> {
        if let Some(l) = self
            .leader
            .as_ref()
            .filter(|l| self.members.contains_key(*l))
        {
            return Some(l.clone());
        }
        self.members
            .values()
            .min_by_key(|m| m.seq)
            .map(|m| m.id.clone())
    }

    /// Removes a member and its instance mapping; fixes the leader.
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        self.awaiting_sync.remove(member_id);
        if let Some(i) = &m.instance {
            if self.instances.get(i).map(String::as_str) == Some(member_id) {
                self.instances.remove(i);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.next_leader();
        }
        Some(m)
    }

    /// The member list the leader gets in its JoinGroup reply.
    pub fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// The members as DescribeGroups shows them (metadata only once a protocol is chosen).
    pub fn described_members(&self) -> Vec<DescribedMember> {
        let protocol = self.protocol.as_deref().unwrap_or("");
        let chosen = matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        );
        self.members
            .values()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if chosen {
                    m.metadata(protocol)
                } else {
                    Bytes::new()
                },
                assignment: if chosen {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    /// Whether a request naming `member_id` with `instance` comes from a fenced static member:
    /// the instance maps to another member id (KIP-345).
    pub fn fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.instances.get(i))
            .is_some_and(|m| m != member_id)
    }

    /// Panics if the group breaks the classic protocol's invariants.
    pub fn check_invariants(&self, name: &str) {
        assert!(self.generation >= 0, "group {name}: negative generation");
        for (i, m) in &self.instances {
            let member = self.members.get(m);
            assert!(
                member.is_some(),
                "group {name}: instance {i} maps to no member"
            );
            assert_eq!(member.and_then(|m| m.instance.as_deref()), Some(i.as_str()));
        }
        for (id, m) in &self.members {
            assert_eq!(id, &m.id, "group {name}: member keyed by another id");
            assert!(
                !m.protocols.is_empty(),
                "group {name}: member without protocols"
            );
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                assert!(
                    self.members.is_empty(),
                    "group {name}: members in {:?}",
                    self.state
                );
                assert!(self.rebalance.is_none() && self.sync_tag.is_none());
            }
            GroupState::PreparingRebalance => {
                assert!(
                    self.rebalance.is_some(),
                    "group {name}: rebalance without a timer"
                );
                assert!(self.members.values().all(|m| m.sync.is_none()));
                assert!(self.awaiting_sync.is_empty() && self.sync_deadline_ms.is_none());
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(!self.members.is_empty(), "group {name}: no members");
                let leader = self
                    .leader
                    .as_deref()
                    .expect("a leader once a protocol is chosen");
                assert!(
                    self.members.contains_key(leader),
                    "group {name}: leader left"
                );
                assert!(self.protocol.is_some() && self.rebalance.is_none());
                assert!(self.members.values().all(|m| m.join.is_none()));
                assert!(self
                    .awaiting_sync
                    .iter()
                    .all(|m| self.members.contains_key(m)));
            }
        }
        if self.state == GroupState::Stable {
            assert!(
                self.sync_tag.is_none(),
                "group {name}: Stable with a sync in flight"
            );
            assert!(self.members.values().all(|m| m.sync.is_none()));
        }
    }
}

impl Member {
    fn from_meta(m: &MemberMeta, protocol: Option<&str>, seq: u64, now_ms: Millis) -> Member {
        let protocols = protocol
            .map(|p| vec![(p.to_string(), m.subscription.clone())])
            .unwrap_or_default();
        Member {
            id: m.member_id.clone(),
            instance: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout_ms: m.session_timeout_ms,
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            protocols,
            assignment: m.assignment.clone(),
            join: None,
            sync: None,
            session_deadline_ms: now_ms + m.session_timeout_ms as Millis,
            seq,
        }
    }
}
