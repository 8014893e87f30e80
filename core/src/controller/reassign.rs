//! Partition reassignment (Kafka's KIP-455 on raft, as Redpanda moves partitions): the
//! controller records a partition's target replicas in the metadata log, and the partition's
//! own raft leader moves its configuration there, one committed step at a time:
//!
//! 1. every target replica not yet in the group joins as a raft learner, and catches up from a
//!    snapshot plus the log;
//! 2. once every learner has caught up (matched the leader's commit index), one
//!    `ConfChangeV2` promotes them and removes the replicas that leave, by joint consensus
//!    (raft leaves the joint configuration on its own: `auto_leave`);
//! 3. a leader that is itself leaving first promotes the learners alone, then hands leadership
//!    to a target voter, which removes it: leadership moves off a replica before it goes;
//! 4. once the committed configuration is exactly the target, the leader reports it in its
//!    heartbeat, and the controller records the move done. Only then does a removed replica
//!    delete its data: its image drops it from the replica set, never before the new
//!    configuration has committed.
//!
//! While a move is in flight the image's replica list is the target followed by every other
//! replica the group may still hold (KIP-455's `replicas = target + removing`), so that the
//! image's replica set always covers the raft configuration, which is what keeps a replica
//! from being deleted while it still votes. A new reassignment of a moving partition replaces
//! the target and keeps the original replicas (to which a cancel returns). Every step is read
//! off the committed configuration and the image, so a move survives any failover: the next
//! leader (of the partition or of the controller) resumes from there.

use std::collections::BTreeSet;

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};

use super::image::{ImageChange, MetadataImage, RecordKind, METADATA_TOPIC};
use super::{Controller, Proposal};
use crate::api::{ClientError, RequestId, Response};
use crate::machine::{Ctx, Effects};
use crate::types::{NodeId, PartitionId, TopicPartition};

/// One partition's new replicas (first = preferred leader).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionMove {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    #[prost(uint64, repeated, tag = "3")]
    pub target: Vec<NodeId>,
}

/// Reassignments, all checked by the controller (AlterPartitionReassignments); a cancel is a
/// move back to the original replicas.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReassignPartitions {
    #[prost(message, repeated, tag = "1")]
    pub moves: Vec<PartitionMove>,
}

/// A move finished: the partition's committed raft configuration is its target. Written by
/// the controller on the partition leader's report; applies only to the move it names.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReassignmentDone {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    /// The move's id ([`Reassignment::id`]): a report of an earlier move with the same target
    /// completes nothing.
    #[prost(uint64, tag = "3")]
    pub move_id: u64,
}

/// A partition leader's report that its committed configuration is a move's target.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MoveDone {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    #[prost(uint64, tag = "3")]
    pub move_id: u64,
}

/// A move in a snapshot.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MoveSnapshot {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    #[prost(uint64, repeated, tag = "3")]
    pub original: Vec<NodeId>,
    #[prost(uint64, repeated, tag = "4")]
    pub target: Vec<NodeId>,
    #[prost(uint64, tag = "5")]
    pub id: u64,
}

/// A partition move in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    /// The replicas before the first move of this reassignment (where a cancel goes back to).
    pub original: Vec<NodeId>,
    /// Where the replicas are going (first = preferred leader).
    pub target: Vec<NodeId>,
    /// The image's record count when the move's record applied: unique per move.
    pub id: u64,
}

impl Reassignment {
    /// Target replicas that were not original ones (KIP-455's `adding_replicas`).
    pub fn adding(&self) -> Vec<NodeId> {
        minus(&self.target, &self.original)
    }

    /// Original replicas that are not target ones (KIP-455's `removing_replicas`).
    pub fn removing(&self) -> Vec<NodeId> {
        minus(&self.original, &self.target)
    }
}

/// `a` without the members of `b`, in `a`'s order.
fn minus(a: &[NodeId], b: &[NodeId]) -> Vec<NodeId> {
    a.iter().copied().filter(|x| !b.contains(x)).collect()
}

/// Whether `replicas` is a non-empty list of distinct, non-zero ids.
pub fn valid_replica_list(replicas: &[NodeId]) -> bool {
    let set: BTreeSet<_> = replicas.iter().collect();
    !replicas.is_empty() && set.len() == replicas.len() && !replicas.contains(&0)
}

impl MetadataImage {
    /// Starts (or retargets) the moves of a committed `ReassignPartitions`.
    pub(super) fn apply_reassign(&mut self, r: &ReassignPartitions) -> Vec<ImageChange> {
        let mut changes = Vec::new();
        for m in &r.moves {
            let tp = TopicPartition::new(m.topic.clone(), m.partition);
            let Some(topic) = self.topics.get_mut(&m.topic) else {
                continue;
            };
            let Some(current) = topic.partitions.get(&m.partition).cloned() else {
                continue;
            };
            if !valid_replica_list(&m.target) {
                continue;
            }
            let original = match self.moves.get(&tp) {
                Some(mv) => mv.original.clone(),
                None if m.target == current => continue, // Already there: nothing moves.
                None => current.clone(),
            };
            // The target, then everything the group may still hold: the set only shrinks when
            // the move is done.
            let mut replicas = m.target.clone();
            replicas.extend(minus(&current, &m.target));
            topic.partitions.insert(m.partition, replicas.clone());
            let mv = Reassignment {
                original,
                target: m.target.clone(),
                id: self.records_applied,
            };
            changes.push(ImageChange::ReplicasChanged {
                tp: tp.clone(),
                replicas,
                leaving: mv.removing(),
                configs: topic.configs.clone(),
            });
            self.moves.insert(tp, mv);
        }
        changes
    }

    /// Finishes a move: the replica set becomes its target.
    pub(super) fn apply_reassignment_done(&mut self, d: &ReassignmentDone) -> Vec<ImageChange> {
        let tp = TopicPartition::new(d.topic.clone(), d.partition);
        let Some(mv) = self.moves.get(&tp).filter(|m| m.id == d.move_id) else {
            return Vec::new();
        };
        let Some(topic) = self.topics.get_mut(&d.topic) else {
            return Vec::new();
        };
        let target = mv.target.clone();
        self.moves.remove(&tp);
        topic.partitions.insert(d.partition, target.clone());
        vec![ImageChange::ReplicasChanged {
            tp,
            replicas: target,
            leaving: Vec::new(),
            configs: topic.configs.clone(),
        }]
    }

    /// The raft configuration a new replica of `tp` on `node` starts from before it replays
    /// the log (a snapshot from the leader replaces it): the replicas the partition was
    /// created with, since its log's configuration changes apply on top of those. A replica
    /// added by a move leaves itself out, so that it never campaigns on an empty log: a later
    /// change of the log, or the leader's snapshot, makes it a member.
    pub fn initial_voters(&self, tp: &TopicPartition, node: NodeId) -> Vec<NodeId> {
        let Some(t) = self.topics.get(&tp.topic) else {
            return Vec::new();
        };
        let current = t.partitions.get(&tp.partition).cloned().unwrap_or_default();
        let created = t
            .created
            .get(&tp.partition)
            .cloned()
            .unwrap_or(current.clone());
        let moved = created != current || self.moves.contains_key(tp);
        if !moved {
            return created;
        }
        let voters = minus(&created, &[node]);
        if voters.is_empty() {
            minus(&current, &[node])
        } else {
            voters
        }
    }

    pub(super) fn encode_moves(&self) -> Vec<MoveSnapshot> {
        self.moves
            .iter()
            .map(|(tp, m)| MoveSnapshot {
                topic: tp.topic.clone(),
                partition: tp.partition,
                original: m.original.clone(),
                target: m.target.clone(),
                id: m.id,
            })
            .collect()
    }

    /// Reads a snapshot's moves: each of a known partition, with valid lists, and a replica
    /// set that covers both (else the snapshot is refused).
    pub(super) fn decode_moves(&mut self, moves: &[MoveSnapshot]) -> Result<(), String> {
        for m in moves {
            let tp = TopicPartition::new(m.topic.clone(), m.partition);
            let replicas = self
                .topics
                .get(&m.topic)
                .and_then(|t| t.partitions.get(&m.partition))
                .ok_or_else(|| format!("move of unknown {tp}"))?;
            let covered =
                m.target.iter().all(|r| replicas.contains(r)) && replicas.starts_with(&m.target);
            let valid = valid_replica_list(&m.original) && valid_replica_list(&m.target);
            if !covered || !valid || self.moves.contains_key(&tp) {
                return Err(format!("move of {tp}"));
            }
            let mv = Reassignment {
                original: m.original.clone(),
                target: m.target.clone(),
                id: m.id,
            };
            self.moves.insert(tp, mv);
        }
        Ok(())
    }

    /// Every move's partition has a replica list that starts with its target.
    pub(super) fn check_moves(&self) {
        for (tp, m) in &self.moves {
            let replicas = &self.topics[&tp.topic].partitions[&tp.partition];
            assert!(
                replicas.starts_with(&m.target) && valid_replica_list(&m.original),
                "{tp}: move {m:?} over replicas {replicas:?}"
            );
            assert!(
                m.id <= self.records_applied,
                "{tp}: move id from the future"
            );
        }
    }
}

impl Controller {
    /// An AlterPartitionReassignments: every move checked on its own (KIP-455 answers per
    /// partition), the valid ones recorded in one `ReassignPartitions`.
    pub(super) fn alter_reassignments(
        &mut self,
        id: RequestId,
        moves: Vec<(TopicPartition, Option<Vec<NodeId>>)>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let mut seen = BTreeSet::new();
        let mut results = Vec::with_capacity(moves.len());
        let mut record = Vec::new();
        for (tp, target) in moves {
            let checked = if seen.insert(tp.clone()) {
                self.check_move(&tp, target.as_deref())
            } else {
                Err(ClientError::InvalidRequest(format!("{tp} is named twice")))
            };
            results.push(checked.map(|m| record.extend(m)));
        }
        if record.is_empty() {
            return fx.reply(id, Response::AlterReassignments(Ok(results)));
        }
        let kind = RecordKind::ReassignPartitions(ReassignPartitions { moves: record });
        let proposal = Proposal::Reassign {
            request: id,
            results,
        };
        self.propose(proposal, kind, ctx, fx);
    }

    /// One move, checked: a partition that exists, and a target of distinct registered,
    /// unfenced brokers (INVALID_REPLICA_ASSIGNMENT otherwise); or a cancel of a move in
    /// progress (NO_REASSIGNMENT_IN_PROGRESS otherwise). `None`: nothing to do.
    fn check_move(
        &self,
        tp: &TopicPartition,
        target: Option<&[NodeId]>,
    ) -> Result<Option<PartitionMove>, ClientError> {
        if tp.topic == METADATA_TOPIC {
            return Err(ClientError::InvalidRequest(format!(
                "{tp} moves by changes of the controller quorum"
            )));
        }
        let current = self
            .image
            .topics
            .get(&tp.topic)
            .filter(|_| !self.in_flight(&tp.topic))
            .ok_or_else(|| ClientError::UnknownTopic(tp.topic.clone()))?
            .partitions
            .get(&tp.partition)
            .ok_or_else(|| ClientError::UnknownPartition(tp.clone()))?;
        let moving = self.image.moves.get(tp);
        let target = match (target, moving) {
            (None, None) => return Err(ClientError::NoReassignmentInProgress(tp.clone())),
            (None, Some(m)) => m.original.clone(),
            (Some(t), _) => {
                self.check_target(t)?;
                t.to_vec()
            }
        };
        if moving.is_none() && target == *current {
            return Ok(None);
        }
        Ok(Some(PartitionMove {
            topic: tp.topic.clone(),
            partition: tp.partition,
            target,
        }))
    }

    fn check_target(&self, target: &[NodeId]) -> Result<(), ClientError> {
        let invalid = |m: String| Err(ClientError::InvalidReplicaAssignment(m));
        if target.is_empty() {
            return invalid("the replica list is empty".into());
        }
        if !valid_replica_list(target) {
            return invalid(format!(
                "replicas {target:?} repeat a broker or name broker 0"
            ));
        }
        for b in target {
            match self.image.brokers.get(b) {
                None => return invalid(format!("broker {b} is not registered")),
                Some(m) if m.fenced => return invalid(format!("broker {b} is fenced")),
                Some(_) if self.image.decommissioning.contains(b) => {
                    return invalid(format!("broker {b} is being decommissioned"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// A partition leader reported a move done: recorded once per move.
    pub(super) fn complete_move(&mut self, done: MoveDone, ctx: &Ctx, fx: &mut Effects) {
        let tp = TopicPartition::new(done.topic.clone(), done.partition);
        let window = self.config.session_timeout_ms;
        let proposed = self
            .lead
            .completing
            .get(&tp)
            .is_some_and(|(id, at)| *id == done.move_id && ctx.now_ms - *at < window);
        if proposed || !completes(&self.image, &done) {
            return;
        }
        self.lead.completing.insert(tp, (done.move_id, ctx.now_ms));
        let kind = RecordKind::ReassignmentDone(ReassignmentDone {
            topic: done.topic,
            partition: done.partition,
            move_id: done.move_id,
        });
        self.propose(Proposal::Internal, kind, ctx, fx);
    }
}

/// What a partition's leader does next for a move ([`next_move_step`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// Add these target replicas as learners.
    AddLearners(Vec<NodeId>),
    /// One configuration change: promote these learners, remove these members.
    ChangeVoters {
        promote: Vec<NodeId>,
        remove: Vec<NodeId>,
    },
    /// Hand leadership to this target voter (the leader is leaving).
    Transfer(NodeId),
    /// A learner is catching up, or a configuration change is in flight.
    Wait,
    /// The configuration is the target: report the move done.
    Done,
}

/// The next step of a move to `target`, from the leader's committed configuration `conf`
/// (module docs). `caught_up` says whether a member's log has reached the leader's commit.
pub fn next_move_step(
    conf: &ConfState,
    target: &[NodeId],
    leader: NodeId,
    caught_up: impl Fn(NodeId) -> bool,
) -> MoveStep {
    if !conf.voters_outgoing.is_empty() || !conf.learners_next.is_empty() {
        return MoveStep::Wait; // Joint: raft leaves it by itself (auto_leave).
    }
    let voters = &conf.voters;
    let learners = &conf.learners;
    let missing: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|t| !voters.contains(t) && !learners.contains(t))
        .collect();
    if !missing.is_empty() {
        return MoveStep::AddLearners(missing);
    }
    let promote: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|t| learners.contains(t))
        .collect();
    let ready = crate::mutation::active(crate::mutation::Mutation::RemoveBeforeCaughtUp)
        || promote.iter().all(|l| caught_up(*l));
    if !ready {
        return MoveStep::Wait;
    }
    if !target.contains(&leader) {
        if !promote.is_empty() {
            return MoveStep::ChangeVoters {
                promote,
                remove: Vec::new(),
            };
        }
        return target
            .iter()
            .copied()
            .find(|t| voters.contains(t) && caught_up(*t))
            .map_or(MoveStep::Wait, MoveStep::Transfer);
    }
    let mut remove = minus(voters, target);
    remove.extend(minus(learners, target));
    if promote.is_empty() && remove.is_empty() {
        return MoveStep::Done;
    }
    MoveStep::ChangeVoters { promote, remove }
}

/// The `ConfChangeV2` of a step: learners added, or learners promoted and members removed. Two
/// or more changes go through joint consensus, which raft leaves on its own.
pub fn conf_change_of(step: &MoveStep) -> Option<ConfChangeV2> {
    let single = |change_type, node_id| ConfChangeSingle {
        change_type,
        node_id,
        ..Default::default()
    };
    let changes: Vec<ConfChangeSingle> = match step {
        MoveStep::AddLearners(l) => l
            .iter()
            .map(|n| single(ConfChangeType::AddLearnerNode, *n))
            .collect(),
        MoveStep::ChangeVoters { promote, remove } => promote
            .iter()
            .map(|n| single(ConfChangeType::AddNode, *n))
            .chain(
                remove
                    .iter()
                    .map(|n| single(ConfChangeType::RemoveNode, *n)),
            )
            .collect(),
        _ => return None,
    };
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.set_changes(changes.into());
    Some(cc)
}

/// One partition's reassignment as ListPartitionReassignments reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassignmentStatus {
    pub tp: TopicPartition,
    /// Every replica the partition holds now (target first).
    pub replicas: Vec<NodeId>,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

impl MetadataImage {
    /// The moves in flight, of `only` if given (partitions without a move are left out, as
    /// Kafka does).
    pub fn reassignments(&self, only: Option<&[TopicPartition]>) -> Vec<ReassignmentStatus> {
        let wanted = |tp: &TopicPartition| only.is_none_or(|o| o.contains(tp));
        self.moves
            .iter()
            .filter(|(tp, _)| wanted(tp))
            .map(|(tp, m)| ReassignmentStatus {
                tp: tp.clone(),
                replicas: self.topics[&tp.topic].partitions[&tp.partition].clone(),
                adding: m.adding(),
                removing: m.removing(),
            })
            .collect()
    }
}

/// Whether a leader's report completes the move it names.
pub fn completes(image: &MetadataImage, done: &MoveDone) -> bool {
    let tp = TopicPartition::new(done.topic.clone(), done.partition);
    image.moves.get(&tp).is_some_and(|m| m.id == done.move_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_move_adds_learners_then_swaps_by_joint_consensus() {
        let all = |_| true;
        let none = |_| false;
        let step = next_move_step(&conf(&[1, 2, 3], &[]), &[2, 3, 4], 2, all);
        assert_eq!(step, MoveStep::AddLearners(vec![4]));
        let step = next_move_step(&conf(&[1, 2, 3], &[4]), &[2, 3, 4], 2, none);
        assert_eq!(step, MoveStep::Wait, "a learner behind is not promoted");
        let step = next_move_step(&conf(&[1, 2, 3], &[4]), &[2, 3, 4], 2, all);
        let swap = MoveStep::ChangeVoters {
            promote: vec![4],
            remove: vec![1],
        };
        assert_eq!(step, swap);
        let cc = conf_change_of(&swap).unwrap();
        assert_eq!(
            cc.changes.len(),
            2,
            "promote and remove in one joint change"
        );
        let step = next_move_step(&conf(&[2, 3, 4], &[]), &[2, 3, 4], 2, all);
        assert_eq!(step, MoveStep::Done);
        let joint = ConfState {
            voters_outgoing: vec![1, 2, 3],
            ..conf(&[2, 3, 4], &[])
        };
        assert_eq!(next_move_step(&joint, &[2, 3, 4], 2, all), MoveStep::Wait);
    }

    #[test]
    fn a_leaving_leader_promotes_then_hands_over_before_removal() {
        let all = |_| true;
        let step = next_move_step(&conf(&[1, 2, 3], &[4]), &[2, 3, 4], 1, all);
        let promote = MoveStep::ChangeVoters {
            promote: vec![4],
            remove: vec![],
        };
        assert_eq!(step, promote, "no removal while the leader is leaving");
        let step = next_move_step(&conf(&[1, 2, 3, 4], &[]), &[2, 3, 4], 1, all);
        assert_eq!(step, MoveStep::Transfer(2));
        let step = next_move_step(&conf(&[1, 2, 3, 4], &[]), &[2, 3, 4], 3, all);
        let remove = MoveStep::ChangeVoters {
            promote: vec![],
            remove: vec![1],
        };
        assert_eq!(step, remove);
    }

    #[test]
    fn a_shrink_and_a_learner_outside_the_target_are_removed() {
        let all = |_| true;
        let step = next_move_step(&conf(&[1, 2, 3], &[5]), &[1, 2], 1, all);
        let remove = MoveStep::ChangeVoters {
            promote: vec![],
            remove: vec![3, 5],
        };
        assert_eq!(step, remove);
    }
}
