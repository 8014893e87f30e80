//! The node's side of partition moves ([`crate::controller::reassign`]): for every partition
//! this node leads that the image is moving, the leader takes the next step of
//! [`next_move_step`] on its committed configuration, one configuration change at a time, and
//! reports a finished move in its heartbeat so that the controller records it done.
//!
//! At most [`CATCH_UPS_PER_LEADER_MAX`] partitions led here have learners catching up at
//! once: each learner is fed from its leader's log (or a snapshot) on top of the produce
//! traffic, so the bound keeps a large reassignment from crowding out the leader's clients.

use std::collections::BTreeMap;

use super::Node;
use crate::controller::{conf_change_of, next_move_step, MoveDone, MoveStep, Reassignment};
use crate::types::{NodeId, RaftIndex, TopicPartition};

/// Most partitions led by one node that have learners catching up at the same time.
pub const CATCH_UPS_PER_LEADER_MAX: usize = 4;

/// A learner promoted to voter, as the leader saw it when it proposed the promotion (for the
/// simulator's check that only caught-up learners are promoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub tp: TopicPartition,
    pub learner: NodeId,
    /// The leader's commit index then: the learner's log held at least this much.
    pub commit: RaftIndex,
}

/// Moves led here.
#[derive(Debug, Default)]
pub(super) struct Moves {
    /// Finished moves (partition -> move id) for the heartbeats, until the image records them.
    done: BTreeMap<TopicPartition, u64>,
    /// A move finished since the last heartbeat: send the next one now.
    pub(super) report_now: bool,
    /// Promotions proposed since the last [`Node::take_promotions`] (bounded).
    promotions: Vec<Promotion>,
}

/// Promotions kept for the simulator between two drains.
const PROMOTIONS_KEPT_MAX: usize = 1_024;

impl Node {
    /// Takes the next step of every move this node leads (module docs).
    pub(super) fn drive_moves(&mut self) {
        let mut done = std::mem::take(&mut self.moves.done);
        let image_moves = &self.metadata().moves;
        done.retain(|tp, id| image_moves.get(tp).is_some_and(|m| m.id == *id));
        let led: Vec<(TopicPartition, Reassignment)> = image_moves
            .iter()
            .filter(|(tp, _)| self.replicas.get(*tp).is_some_and(|r| r.is_leader()))
            .map(|(tp, m)| (tp.clone(), m.clone()))
            .collect();
        self.moves.done = done;
        let mut catching_up = led
            .iter()
            .filter(|(tp, _)| !self.replicas[tp].conf_state().learners.is_empty())
            .count();
        for (tp, mv) in led {
            self.move_step(&tp, &mv, &mut catching_up);
        }
    }

    fn move_step(&mut self, tp: &TopicPartition, mv: &Reassignment, catching_up: &mut usize) {
        let id = self.id;
        let replica = self
            .replicas
            .get_mut(tp)
            .expect("led partitions are hosted");
        if replica.has_pending_conf() || replica.is_repairing() {
            return;
        }
        let conf = replica.conf_state();
        let step = next_move_step(&conf, &mv.target, id, |n| replica.caught_up(n));
        match &step {
            MoveStep::Wait => return,
            MoveStep::Done => {
                if self.moves.done.insert(tp.clone(), mv.id) != Some(mv.id) {
                    slog::info!(self.logger, "move done"; "tp" => %tp, "replicas" => ?mv.target);
                    self.moves.report_now = true;
                }
                return;
            }
            MoveStep::Transfer(to) => replica.transfer_leadership(*to, &mut self.rng),
            MoveStep::AddLearners(_) if *catching_up >= CATCH_UPS_PER_LEADER_MAX => return,
            MoveStep::AddLearners(_) | MoveStep::ChangeVoters { .. } => {
                let cc = conf_change_of(&step).expect("a configuration step");
                if let MoveStep::ChangeVoters { promote, .. } = &step {
                    let commit = replica.commit_index();
                    for l in promote {
                        if self.moves.promotions.len() < PROMOTIONS_KEPT_MAX {
                            self.moves.promotions.push(Promotion {
                                tp: tp.clone(),
                                learner: *l,
                                commit,
                            });
                        }
                    }
                }
                if matches!(step, MoveStep::AddLearners(_)) {
                    *catching_up += 1;
                }
                slog::info!(self.logger, "move step"; "tp" => %tp, "step" => ?step);
                if let Err(e) = replica.propose_conf_change(cc, &mut self.rng) {
                    slog::warn!(self.logger, "move step refused"; "tp" => %tp, "error" => %e);
                }
            }
        }
        self.active.insert(tp.clone());
    }

    /// The finished moves for the next heartbeat.
    pub(super) fn moves_done(&self) -> Vec<MoveDone> {
        self.moves
            .done
            .iter()
            .map(|(tp, id)| MoveDone {
                topic: tp.topic.clone(),
                partition: tp.partition,
                move_id: *id,
            })
            .collect()
    }

    /// The promotions proposed since the last call (the simulator checks each against the
    /// learner's log).
    pub fn take_promotions(&mut self) -> Vec<Promotion> {
        std::mem::take(&mut self.moves.promotions)
    }
}
