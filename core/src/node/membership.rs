//! The node's side of cluster identity and joining.
//!
//! **Identity.** `cluster.id` ([`crate::cluster_id`]) ties the data directory to a cluster
//! once the node applies `ClusterCreated` or is admitted. Every envelope names it; an envelope
//! naming another cluster is refused before any replica sees it (the sender gets a
//! [`Refusal`], at most once a second), so a node started against the wrong cluster changes
//! nothing on either side. A node refused by every configured controller voter, while it knows
//! no metadata leader of its own, stops with [`NodeError::ForeignCluster`].
//!
//! **Joining** (`NodeConfig::join`, no metadata log yet). The node sends a [`JoinRequest`]
//! carrying its registration to every configured controller voter each heartbeat period. The
//! metadata leader that gets one:
//! 1. refuses for good an id that is a controller voter or was admitted before by another
//!    start (an empty log under such an id could vote away acknowledged entries); refuses
//!    for now (the joiner keeps asking) the id of a registered broker whose session has not
//!    expired, as Kafka answers a duplicate broker registration;
//! 2. registers the broker through the controller (its raft address goes in the record, so
//!    every node can dial it) and keeps it unfenced while it waits;
//! 3. once registered, adds it to the metadata group as a raft learner (one configuration
//!    change at a time);
//! 4. once it is a member, admits it: the cluster's identity and the metadata group's
//!    configuration at index 0.
//!
//! The admitted node stores the id, creates its metadata replica with that configuration and
//! catches up from the leader, by the log from index 1 (replaying every configuration change
//! since) or by a snapshot; from then on it is an ordinary learner.

use std::collections::BTreeMap;

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::{Node, NodeError};
use crate::cluster_id::ClusterIdFile;
use crate::controller::{metadata_tp, ClusterCreated, RegisterBroker};
use crate::machine::Command;
use crate::mutation::{self, Mutation};
use crate::network::{Envelope, JoinRequest, Refusal, RefusalKind};
use crate::types::{Millis, NodeId};

/// A peer sending envelopes of another cluster is told so at most this often.
const REFUSAL_EVERY_MS: Millis = 1_000;
/// Refusals older than this no longer count towards [`NodeError::ForeignCluster`].
const REFUSAL_WINDOW_MS: Millis = 5_000;

/// The node's identity and join state (module docs).
pub(super) struct Membership {
    pub(super) file: ClusterIdFile,
    /// Asking the controller quorum to admit this node (no metadata log yet).
    pub(super) joining: bool,
    /// The admission received, applied at the next tick.
    admission: Option<ClusterCreated>,
    last_request_ms: Option<Millis>,
    /// The newest refusal from each peer, and when it came.
    refused_by: BTreeMap<NodeId, (Refusal, Millis)>,
    refusals_sent: BTreeMap<NodeId, Millis>,
    /// Envelopes without raft messages (join requests, admissions, refusals, probes), sent by
    /// the next step.
    pub(super) outgoing: Vec<Envelope>,
}

impl Membership {
    pub(super) fn new(file: ClusterIdFile) -> Membership {
        Membership {
            file,
            joining: false,
            admission: None,
            last_request_ms: None,
            refused_by: BTreeMap::new(),
            refusals_sent: BTreeMap::new(),
            outgoing: Vec::new(),
        }
    }
}

impl Node {
    /// The cluster this node's data belongs to, once known.
    pub fn cluster_id(&self) -> Option<&str> {
        self.membership.file.id()
    }

    /// Whether the node is still waiting to be admitted to the cluster.
    pub fn is_joining(&self) -> bool {
        self.membership.joining
    }

    /// The raft listener of every other registered broker that gave one: the transport
    /// dials these besides its configured peers.
    pub fn peer_addresses(&self) -> BTreeMap<NodeId, (String, u16)> {
        self.metadata()
            .brokers
            .values()
            .filter(|b| b.id != self.id)
            .filter_map(|b| b.raft_addr.clone().map(|a| (b.id, a)))
            .collect()
    }

    /// After the metadata log replayed: the image's cluster and the directory's must agree;
    /// a directory from before cluster ids gets the image's.
    pub(super) fn check_cluster_identity(&mut self) -> Result<(), NodeError> {
        let Some(logged) = self
            .metadata()
            .cluster
            .as_ref()
            .map(|c| c.cluster_id.clone())
        else {
            return Ok(());
        };
        self.adopt_cluster_id(&logged)
    }

    /// Stores `id` as this directory's cluster, which must be the only one it ever names.
    pub(super) fn adopt_cluster_id(&mut self, id: &str) -> Result<(), NodeError> {
        match self.cluster_id() {
            Some(cur) if cur == id => Ok(()),
            Some(cur) => Err(NodeError::ClusterIdMismatch {
                directory: cur.to_string(),
                log: id.to_string(),
            }),
            None if mutation::active(Mutation::ForgetClusterId) => Ok(()),
            None => {
                slog::info!(self.logger, "cluster identified"; "cluster_id" => id);
                self.membership.file.store(id).map_err(NodeError::ClusterId)
            }
        }
    }

    /// Queues an envelope without raft messages.
    fn send_control(&mut self, to: NodeId, fill: impl FnOnce(&mut Envelope)) {
        let mut env = Envelope::control(self.id, to, self.cluster_id().map(str::to_string));
        fill(&mut env);
        self.membership.outgoing.push(env);
    }

    /// Handles the identity and join parts of an envelope. Returns false when the envelope
    /// must not be read further: a refusal, or one from another cluster.
    pub(super) fn screen_envelope(&mut self, envelope: &mut Envelope) -> bool {
        if let Some(r) = envelope.refused.take() {
            self.note_refusal(envelope.from, *r);
            return false;
        }
        if self.refuse_foreign(envelope) {
            return false;
        }
        if let Some(j) = envelope.join.take() {
            let kept_directory = envelope.cluster_id.is_some();
            self.handle_join(envelope.from, *j, kept_directory);
        }
        if let Some(c) = envelope.admitted.take() {
            if self.membership.joining {
                self.membership.admission = Some(*c);
            }
        }
        true
    }

    fn refuse_foreign(&mut self, envelope: &Envelope) -> bool {
        let (Some(mine), Some(theirs)) = (self.cluster_id(), envelope.cluster_id.as_deref()) else {
            return false;
        };
        if mine == theirs {
            return false;
        }
        let (mine, theirs) = (mine.to_string(), theirs.to_string());
        self.stats.foreign_envelopes += 1;
        let now = self.now_ms;
        let due = self
            .membership
            .refusals_sent
            .get(&envelope.from)
            .is_none_or(|at| now - at >= REFUSAL_EVERY_MS);
        if due {
            slog::warn!(self.logger, "refused a node of another cluster";
                "peer" => envelope.from, "its_cluster" => &theirs, "cluster" => &mine);
            self.membership.refusals_sent.insert(envelope.from, now);
            let detail = format!(
                "node {} belongs to cluster {mine}, and node {} sent data of cluster {theirs}",
                self.id, envelope.from
            );
            self.send_control(envelope.from, |e| {
                e.refused = Some(Box::new(Refusal {
                    kind: RefusalKind::ForeignCluster as i32,
                    cluster_id: mine,
                    detail,
                }))
            });
        }
        true
    }

    fn note_refusal(&mut self, from: NodeId, r: Refusal) {
        if r.kind == RefusalKind::IdInUse as i32 {
            // Retriable: the join requests go on until the old session expires.
            slog::warn!(self.logger, "join refused for now"; "peer" => from, "detail" => &r.detail);
            return;
        }
        let first = !self.membership.refused_by.contains_key(&from);
        if first {
            slog::error!(self.logger, "refused by a peer"; "peer" => from,
                "its_cluster" => &r.cluster_id, "detail" => &r.detail);
        }
        self.membership.refused_by.insert(from, (r, self.now_ms));
    }

    /// On the metadata leader: one step of admitting a joining node (module docs).
    /// `kept_directory`: the joiner's directory already belongs to this cluster (it was
    /// admitted, and crashed before its metadata log was durable).
    fn handle_join(&mut self, from: NodeId, request: JoinRequest, kept_directory: bool) {
        let meta = metadata_tp();
        if !self.replicas.get(&meta).is_some_and(|r| r.is_leader()) {
            return; // The joiner asks every voter; the leader answers.
        }
        let Some(cluster) = self.metadata().cluster.clone() else {
            return; // Not formed yet: the joiner asks again.
        };
        let Some(reg) = request.registration.filter(|r| r.id == from) else {
            self.stats.bad_messages += 1;
            return;
        };
        if let Some((kind, detail)) = self.join_conflict(&reg, kept_directory) {
            slog::warn!(self.logger, "refused a joining node"; "peer" => from, "why" => &detail);
            self.send_control(from, |e| {
                e.refused = Some(Box::new(Refusal {
                    kind: kind as i32,
                    cluster_id: cluster.cluster_id.clone(),
                    detail,
                }))
            });
            return;
        }
        let registered =
            self.metadata().brokers.get(&from).is_some_and(|b| {
                b.incarnation == reg.incarnation && b.raft_addr == reg.raft_addr()
            });
        if !registered {
            self.command(&meta, Command::Join { registration: reg });
            return;
        }
        let replica = self.replicas.get(&meta).expect("leads it");
        let cs = replica.conf_state();
        let member = [
            &cs.voters,
            &cs.learners,
            &cs.learners_next,
            &cs.voters_outgoing,
        ]
        .iter()
        .any(|ids| ids.contains(&from));
        if member {
            let mut cluster = cluster;
            if mutation::active(Mutation::AdmitWithoutLearners) {
                cluster.learners.clear();
            }
            self.send_control(from, |e| e.admitted = Some(Box::new(cluster)));
        } else if !replica.has_pending_conf() {
            let mut add = ConfChangeSingle::default();
            add.set_change_type(ConfChangeType::AddLearnerNode);
            add.node_id = from;
            let cc = ConfChangeV2 {
                changes: vec![add].into(),
                ..ConfChangeV2::default()
            };
            match self.propose_conf_change(&meta, cc) {
                Ok(()) => slog::info!(self.logger, "adding a joining node to the metadata group";
                    "peer" => from),
                Err(e) => slog::warn!(self.logger, "cannot add a joining node yet";
                    "peer" => from, "error" => %e),
            }
        }
    }

    /// Why `reg.id` may not join with an empty log (now, or ever), if it may not. A node
    /// never admitted never replicated anything, even where the controller placed replicas
    /// on its registration, so only membership of the metadata group bars an id for good.
    fn join_conflict(
        &self,
        reg: &RegisterBroker,
        kept_directory: bool,
    ) -> Option<(RefusalKind, String)> {
        let id = reg.id;
        let meta = self.replicas.get(&metadata_tp())?;
        let cs = meta.conf_state();
        if cs.voters.contains(&id) || cs.voters_outgoing.contains(&id) {
            let why = format!("node id {id} is a controller voter");
            return Some((RefusalKind::DuplicateId, why));
        }
        let image = self.metadata();
        let registered = image.brokers.get(&id);
        if registered.is_some_and(|b| b.incarnation == reg.incarnation) {
            return None; // This start's own request, again.
        }
        // Admitted before, and replicas were placed on it (after its first heartbeat, so it
        // had a metadata log): unless it kept its directory, it lost data it may have
        // acknowledged.
        let admitted = cs.learners.contains(&id) || cs.learners_next.contains(&id);
        let hosts = image.assignments().values().any(|r| r.contains(&id));
        if admitted && hosts && !kept_directory {
            let why = format!(
                "node id {id} was admitted before and holds replicas, and this directory is \
                 empty: a node that lost its data rejoins under a new id"
            );
            return Some((RefusalKind::DuplicateId, why));
        }
        let alive = registered.is_some_and(|b| !b.fenced);
        alive.then(|| {
            let why = format!("broker {id} is registered and its session has not expired");
            (RefusalKind::IdInUse, why)
        })
    }

    /// On the metadata leader: drops an unregistered (decommissioned) broker from the metadata
    /// group's learners, one configuration change at a time, so that the leader stops
    /// replicating to it. A broker the image registers again (it joined anew) stays.
    fn prune_metadata_learners(&mut self) {
        let meta = metadata_tp();
        let Some(replica) = self.replicas.get(&meta).filter(|r| r.is_leader()) else {
            return;
        };
        if replica.has_pending_conf() {
            return;
        }
        let image = self.metadata();
        let Some(gone) = replica
            .conf_state()
            .learners
            .iter()
            .copied()
            .find(|l| image.unregistered.contains(l) && !image.brokers.contains_key(l))
        else {
            return;
        };
        let mut remove = ConfChangeSingle::default();
        remove.set_change_type(ConfChangeType::RemoveNode);
        remove.node_id = gone;
        let cc = ConfChangeV2 {
            changes: vec![remove].into(),
            ..ConfChangeV2::default()
        };
        match self.propose_conf_change(&meta, cc) {
            Ok(()) => {
                slog::info!(self.logger, "removing an unregistered broker from the metadata group";
                "peer" => gone)
            }
            Err(e) => slog::warn!(self.logger, "cannot remove an unregistered broker yet";
                "peer" => gone, "error" => %e),
        }
    }

    /// The membership part of a tick: applies an admission, asks to join or probes the quorum
    /// when due, and stops the node once every controller voter refused it.
    pub(super) fn tick_membership(&mut self) -> Result<(), NodeError> {
        self.prune_metadata_learners();
        if let Some(c) = self.membership.admission.take() {
            self.finish_join(c)?;
        }
        let now = self.now_ms;
        let due = self
            .membership
            .last_request_ms
            .is_none_or(|t| now - t >= self.config.heartbeat_ms);
        let voters: Vec<NodeId> = self
            .config
            .metadata_voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect();
        // A learner that knows no leader says who it is, so that a quorum of another cluster
        // refuses it (a voter's campaign does the same).
        let probe = !self.config.metadata_voters.contains(&self.id) && self.controller().is_none();
        if due && (self.membership.joining || probe) {
            self.membership.last_request_ms = Some(now);
            let join = self.membership.joining.then(|| {
                Box::new(JoinRequest {
                    registration: self.registration(),
                })
            });
            for v in &voters {
                let join = join.clone();
                self.send_control(*v, |e| e.join = join);
            }
        }
        self.check_refusals(&voters)
    }

    fn check_refusals(&mut self, voters: &[NodeId]) -> Result<(), NodeError> {
        let now = self.now_ms;
        self.membership
            .refused_by
            .retain(|_, (_, at)| now - *at < REFUSAL_WINDOW_MS);
        let refused = &self.membership.refused_by;
        if let Some((r, _)) = refused
            .values()
            .find(|(r, _)| r.kind == RefusalKind::DuplicateId as i32)
            .filter(|_| self.membership.joining)
        {
            return Err(NodeError::JoinRefused {
                detail: r.detail.clone(),
            });
        }
        let foreign = |v: &NodeId| {
            refused
                .get(v)
                .is_some_and(|(r, _)| r.kind == RefusalKind::ForeignCluster as i32)
        };
        let all = !voters.is_empty() && voters.iter().all(foreign);
        if !all || self.controller().is_some() {
            return Ok(());
        }
        let (r, _) = &refused[&voters[0]];
        Err(NodeError::ForeignCluster {
            ours: self.cluster_id().unwrap_or("none").to_string(),
            theirs: r.cluster_id.clone(),
            voters: voters.to_vec(),
        })
    }

    /// Admitted: stores the cluster's id and creates the metadata replica with the group's
    /// configuration at index 0; the leader's appends (or snapshot) do the rest.
    fn finish_join(&mut self, c: ClusterCreated) -> Result<(), NodeError> {
        if !self.membership.joining {
            return Ok(());
        }
        self.adopt_cluster_id(&c.cluster_id)?;
        self.open_metadata_with(&c.voters, &c.learners)?;
        self.membership.joining = false;
        slog::info!(self.logger, "admitted to the cluster"; "cluster_id" => &c.cluster_id);
        Ok(())
    }
}
