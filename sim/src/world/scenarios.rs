//! Scripted scenarios and the reconfiguration driver. A scripted scenario replaces the swarm's
//! fault schedule with a few deliberate faults at fixed times, aimed at roles (the first
//! partition's leader or a follower) looked up when the step fires. The reconfiguration scenario
//! keeps the swarm's faults and every `RECONFIG_EVERY_US` proposes the next change to `r-0`'s
//! raft configuration: the last node joins as a learner; once caught up it is promoted through
//! joint consensus while a voter is removed; then the joint configuration is left.

use railyard_core::types::{NodeId, TopicPartition};
use rand::Rng;

use super::lifecycle::MIN_FREE_BYTES;
use super::{Event, Scenario, World};
use crate::net::PartitionKind;

/// The partition the reconfiguration scenario changes: outside the metadata log (it is the
/// raft group's own configuration that moves, not the assignment).
pub(super) const RECONFIG_TOPIC: &str = "r";

/// How often the reconfiguration driver looks at the configuration and proposes the next change.
pub(super) const RECONFIG_EVERY_US: u64 = 250_000;

/// What the disk-full scenario leaves free: under half the reserve, so both leaders and
/// followers refuse once they notice.
const SCRIPTED_HEADROOM: u64 = MIN_FREE_BYTES * 3 / 8;

#[derive(Debug, Clone, Copy)]
pub(super) enum ScriptStep {
    CrashLeader,
    IsolateLeader,
    CrashFollower,
    CorruptFollower,
    FillFollowerDisk,
    FillLeaderDisk,
    /// Remember tp0's leader, a follower and the third replica; cut the third one off.
    PickRolesIsolateThird,
    KillFollowerMidWrite,
    CrashPickedLeader,
}

/// Where the reconfiguration scenario stands.
#[derive(Debug, Default)]
pub(super) struct Reconfig {
    /// The voter being removed, chosen when the joint change is first proposed.
    pub(super) removed: Option<NodeId>,
    /// Conf changes proposed (some are refused or lost and proposed again).
    pub(super) proposals: u64,
    pub(super) done: bool,
}

impl World {
    pub(super) fn schedule_script(&mut self) {
        let s = |w: &mut World, at: u64, step| w.schedule(at, Event::Script(step));
        match self.opts.scenario {
            Scenario::LeaderCrashMidWrite => {
                s(self, 3_000_000, ScriptStep::CrashLeader);
                s(self, 6_000_000, ScriptStep::CrashLeader);
            }
            Scenario::PartitionedLeader => s(self, 3_000_000, ScriptStep::IsolateLeader),
            Scenario::TornWriteFollower => {
                s(self, 2_000_000, ScriptStep::CrashFollower);
                s(self, 5_000_000, ScriptStep::CrashFollower);
            }
            Scenario::CorruptReplica => s(self, 4_000_000, ScriptStep::CorruptFollower),
            Scenario::DiskFull => {
                s(self, 2_000_000, ScriptStep::FillFollowerDisk);
                s(self, 5_000_000, ScriptStep::FillLeaderDisk);
            }
            Scenario::Swarm | Scenario::ClockSteps | Scenario::Reconfigure => {}
            Scenario::FollowerThenLeaderCrash => {
                s(self, 2_000_000, ScriptStep::PickRolesIsolateThird);
                s(self, 2_500_000, ScriptStep::KillFollowerMidWrite);
                s(self, 3_200_000, ScriptStep::CrashPickedLeader);
                self.schedule(3_300_000, Event::Heal);
            }
        }
    }

    pub(super) fn leader_of(&self, tp: &TopicPartition) -> Option<NodeId> {
        self.up_nodes().into_iter().find(|id| {
            self.slots[id]
                .node
                .as_ref()
                .and_then(|n| n.replica(tp))
                .is_some_and(|r| r.is_leader())
        })
    }

    pub(super) fn script(&mut self, step: ScriptStep) {
        let tp = self.specs[0].tp.clone();
        let leader = self.leader_of(&tp);
        let follower = self.specs[0]
            .voters
            .iter()
            .copied()
            .find(|v| Some(*v) != leader && self.slots[v].node.is_some());
        match step {
            ScriptStep::CrashLeader => {
                if let Some(l) = leader {
                    self.crash(l, 1_500_000);
                }
            }
            ScriptStep::IsolateLeader => {
                if let Some(l) = leader {
                    self.net.partition(&PartitionKind::IsolateOne(l));
                    self.partition_active = true;
                    self.stats.partitions += 1;
                    self.schedule(self.now + 3_000_000, Event::Heal);
                }
            }
            ScriptStep::CrashFollower => {
                if let Some(f) = follower {
                    self.crash(f, 1_000_000);
                }
            }
            ScriptStep::CorruptFollower => {
                if let Some(f) = follower {
                    // Crash first so the flips land on the image the restart reads.
                    self.crash_now(f, 1_000_000);
                    for _ in 0..3 {
                        self.flip_sealed_segment(f);
                    }
                }
            }
            ScriptStep::FillFollowerDisk => {
                if let Some(f) = follower {
                    self.fill_disk(f, 2_000_000, SCRIPTED_HEADROOM);
                }
            }
            ScriptStep::FillLeaderDisk => {
                if let Some(l) = leader {
                    self.fill_disk(l, 2_000_000, SCRIPTED_HEADROOM);
                }
            }
            ScriptStep::PickRolesIsolateThird => {
                let (Some(l), Some(f)) = (leader, follower) else {
                    return;
                };
                let third = self.specs[0]
                    .voters
                    .iter()
                    .copied()
                    .find(|v| *v != l && *v != f)
                    .expect("three voters");
                self.script_roles = Some((l, f, third));
                self.net.partition(&PartitionKind::IsolateOne(third));
                self.partition_active = true;
                self.stats.partitions += 1;
            }
            ScriptStep::KillFollowerMidWrite => {
                let Some((_, f, _)) = self.script_roles else {
                    return;
                };
                // Die within the next step that writes: after its first, second or third
                // mutating disk operation, so between a write and its sync.
                let ops = self.rngs.process.gen_range(1..=3);
                self.arm_mid_step_crash(f, ops, 1_500_000);
            }
            ScriptStep::CrashPickedLeader => {
                if let Some((l, _, _)) = self.script_roles {
                    self.crash_now(l, 5_000_000);
                }
            }
        }
    }

    /// One round of the reconfiguration driver (see [`Scenario::Reconfigure`]): from the
    /// leader's configuration, propose the next change; a refused or lost proposal is simply
    /// proposed again next round.
    pub(super) fn reconfigure(&mut self) {
        use raft::eraftpb::{ConfChangeTransition as T, ConfChangeType as C};
        let tp = TopicPartition::new(RECONFIG_TOPIC, 0);
        let joiner = *self.node_ids.last().expect("nodes");
        let Some(leader) = self.leader_of(&tp).filter(|l| !self.is_paused(*l)) else {
            return;
        };
        let node = self.slots[&leader].node.as_ref().expect("up");
        let r = node.replica(&tp).expect("leader hosts it");
        let cs = r.conf_state();
        let commit = r.status().commit;
        let joined = self.slots[&joiner]
            .node
            .as_ref()
            .and_then(|n| n.replica(&tp))
            .is_some_and(|j| j.status().commit >= commit);
        let change = if !cs.voters_outgoing.is_empty() {
            // An empty change with the automatic transition leaves the joint configuration
            // (an empty *explicit* one would enter another).
            Some(conf_change(&[], T::Auto))
        } else if !cs.voters.contains(&joiner) && !cs.learners.contains(&joiner) {
            Some(conf_change(&[(C::AddLearnerNode, joiner)], T::Auto))
        } else if cs.learners.contains(&joiner) && joined {
            // Remove a voter other than the current leader (chosen afresh until the joint
            // change is in the log: leadership may move meanwhile).
            let removed = [1, 2, 3]
                .into_iter()
                .find(|v| *v != leader)
                .expect("two others");
            self.reconfig.removed = Some(removed);
            let steps = [(C::AddNode, joiner), (C::RemoveNode, removed)];
            Some(conf_change(&steps, T::Explicit))
        } else if let Some(removed) = self
            .reconfig
            .removed
            .filter(|r| cs.voters.contains(&joiner) && !cs.voters.contains(r))
        {
            let _ = removed;
            self.reconfig.done = true;
            None
        } else {
            None
        };
        let Some(cc) = change else {
            return;
        };
        let node = self
            .slots
            .get_mut(&leader)
            .and_then(|s| s.node.as_mut())
            .expect("up");
        if node.propose_conf_change(&tp, cc).is_ok() {
            self.reconfig.proposals += 1;
        }
        self.trace(17, leader, self.reconfig.proposals);
        self.pump(leader);
    }
}

/// A `ConfChangeV2` of `steps` (change type, node).
fn conf_change(
    steps: &[(raft::eraftpb::ConfChangeType, NodeId)],
    transition: raft::eraftpb::ConfChangeTransition,
) -> raft::eraftpb::ConfChangeV2 {
    let mut cc = raft::eraftpb::ConfChangeV2::default();
    cc.set_transition(transition);
    let changes: Vec<raft::eraftpb::ConfChangeSingle> = steps
        .iter()
        .map(|(t, id)| {
            let mut c = raft::eraftpb::ConfChangeSingle::default();
            c.set_change_type(*t);
            c.node_id = *id;
            c
        })
        .collect();
    cc.set_changes(changes.into());
    cc
}
