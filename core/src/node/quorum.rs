//! Controller quorum changes (Kafka's KIP-853 in spirit, AddRaftVoter and RemoveRaftVoter): the
//! metadata group's leader promotes a learner to voter, or demotes a voter to learner, one raft
//! configuration change at a time. Every broker is a member of the metadata group (a learner
//! unless it votes), so a demoted voter keeps its metadata and stays a broker; a promoted one
//! must be a registered, live broker whose log has reached the leader's commit.
//!
//! Refused, and nothing changes: promoting a voter (DUPLICATE_VOTER), an unknown broker
//! (BROKER_ID_NOT_REGISTERED) or a fenced or decommissioning one; demoting a non-voter
//! (VOTER_NOT_FOUND), the last voter, or one whose removal would leave fewer caught-up voters
//! than the new configuration's quorum (INVALID_REQUEST). A change waits (REQUEST_TIMED_OUT,
//! retriable) while another is in flight or the learner is catching up. A leader asked to
//! demote itself hands leadership to a caught-up voter and answers NOT_CONTROLLER, so that
//! the client asks the new leader. The answer comes once the new configuration is applied.

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::Node;
use crate::api::{ClientError, RequestId, Response};
use crate::controller::metadata_tp;
use crate::types::{Millis, NodeId};

/// How long a proposed change may take to apply before the client is told to retry.
const QUORUM_CHANGE_TIMEOUT_MS: Millis = 30_000;

/// A quorum change proposed and not yet applied.
#[derive(Debug)]
pub(super) struct PendingQuorumChange {
    request: RequestId,
    broker: NodeId,
    promote: bool,
    deadline_ms: Millis,
}

impl Node {
    /// Answers a quorum change now (refused), or proposes it and answers once it applies.
    pub(super) fn change_quorum(&mut self, id: RequestId, broker: NodeId, promote: bool) {
        match self.propose_quorum_change(broker, promote) {
            Ok(()) => {
                self.quorum_change = Some(PendingQuorumChange {
                    request: id,
                    broker,
                    promote,
                    deadline_ms: self.now_ms + QUORUM_CHANGE_TIMEOUT_MS,
                });
            }
            Err(e) => self.replies.push_back((id, Response::QuorumChange(Err(e)))),
        }
    }

    fn propose_quorum_change(&mut self, broker: NodeId, promote: bool) -> Result<(), ClientError> {
        let meta = metadata_tp();
        let replica = self
            .replicas
            .get(&meta)
            .ok_or(ClientError::NotController { controller: None })?;
        if !replica.is_leader() {
            let controller = replica.leader();
            return Err(ClientError::NotController { controller });
        }
        let busy = |why: String| Err(ClientError::QuorumChangePending(why));
        if self.quorum_change.is_some() || replica.has_pending_conf() {
            return busy("another controller quorum change is in flight".into());
        }
        let cs = replica.conf_state();
        if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() {
            return busy("the controller quorum is leaving a joint configuration".into());
        }
        let image = self.metadata();
        let change_type = if promote {
            if cs.voters.contains(&broker) {
                return Err(ClientError::DuplicateVoter(broker));
            }
            match image.brokers.get(&broker) {
                None => return Err(ClientError::BrokerNotRegistered(broker)),
                Some(b) if b.fenced || image.decommissioning.contains(&broker) => {
                    return Err(ClientError::InvalidRequest(format!(
                        "broker {broker} is fenced or being decommissioned"
                    )))
                }
                Some(_) => {}
            }
            if !cs.learners.contains(&broker) {
                return Err(ClientError::InvalidRequest(format!(
                    "broker {broker} is not a member of the metadata group"
                )));
            }
            if !replica.caught_up(broker) {
                return busy(format!(
                    "broker {broker} is catching up on the metadata log"
                ));
            }
            ConfChangeType::AddNode
        } else {
            if !cs.voters.contains(&broker) {
                return Err(ClientError::VoterNotFound(broker));
            }
            let remaining: Vec<NodeId> =
                cs.voters.iter().copied().filter(|v| *v != broker).collect();
            if remaining.is_empty() {
                return Err(ClientError::InvalidRequest(format!(
                    "broker {broker} is the last controller voter"
                )));
            }
            let live = remaining.iter().filter(|v| replica.caught_up(**v)).count();
            let quorum = remaining.len() / 2 + 1;
            if live < quorum {
                return Err(ClientError::InvalidRequest(format!(
                    "removing controller voter {broker} would leave {live} of {} voters caught \
                     up, short of a quorum of {quorum}",
                    remaining.len()
                )));
            }
            if broker == self.id {
                let to = remaining
                    .iter()
                    .copied()
                    .find(|v| replica.caught_up(*v))
                    .expect("a quorum of them is caught up");
                let replica = self.replicas.get_mut(&meta).expect("checked above");
                replica.transfer_leadership(to, &mut self.rng);
                self.active.insert(meta);
                return Err(ClientError::NotController {
                    controller: Some(to),
                });
            }
            ConfChangeType::AddLearnerNode
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = broker;
        let cc = ConfChangeV2 {
            changes: vec![single].into(),
            ..ConfChangeV2::default()
        };
        slog::info!(self.logger, "changing the controller quorum";
            "broker" => broker, "promote" => promote);
        self.propose_conf_change(&meta, cc)
            .map_err(|e| ClientError::QuorumChangePending(e.to_string()))
    }

    /// Answers the pending quorum change once its configuration applied, or when this node is
    /// no longer the metadata leader, or at its deadline.
    pub(super) fn settle_quorum_change(&mut self) {
        let Some(p) = self.quorum_change.as_ref() else {
            return;
        };
        let meta = metadata_tp();
        let replica = self.replicas.get(&meta);
        let cs = replica.map(|r| r.conf_state()).unwrap_or_default();
        let applied = cs.voters.contains(&p.broker) == p.promote
            && cs.voters_outgoing.is_empty()
            && !replica.is_some_and(|r| r.has_pending_conf());
        let result = if applied {
            Ok(())
        } else if !replica.is_some_and(|r| r.is_leader()) {
            Err(ClientError::NotController {
                controller: replica.and_then(|r| r.leader()),
            })
        } else if self.now_ms >= p.deadline_ms {
            Err(ClientError::QuorumChangePending(
                "the configuration change did not apply in time".into(),
            ))
        } else {
            return;
        };
        let p = self.quorum_change.take().expect("checked above");
        self.replies
            .push_back((p.request, Response::QuorumChange(result)));
    }

    /// A decommission of a controller voter, refused on the metadata leader (the voters are
    /// the raft configuration, which the controller's image does not hold).
    pub(super) fn voter_decommission(&self, broker: NodeId) -> Option<ClientError> {
        let leader = self
            .replicas
            .get(&metadata_tp())
            .filter(|r| r.is_leader())?;
        let cs = leader.conf_state();
        (cs.voters.contains(&broker) || cs.voters_outgoing.contains(&broker)).then(|| {
            ClientError::InvalidRequest(format!(
                "broker {broker} is a controller voter: remove it from the controller quorum \
                 first (railyard controller remove-voter {broker})"
            ))
        })
    }

    /// The metadata group's voters, if this node hosts it.
    pub fn controller_voters(&self) -> Option<Vec<NodeId>> {
        self.replicas
            .get(&metadata_tp())
            .map(|r| r.conf_state().voters)
    }
}
