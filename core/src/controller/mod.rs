//! The controller: the [`PartitionMachine`] of `__cluster_metadata-0`, the first partition
//! state machine. Every node that hosts the metadata partition runs one; only the one on the
//! raft leader acts (proposes records, answers admin requests, fences brokers), the others
//! apply the log into the same [`MetadataImage`].
//!
//! - [`image`]: the records, the image they build, and its snapshot;
//! - [`placement`]: where a new topic's replicas go, and the checks of a manual assignment;
//! - this file: registration, fencing, leadership records, auto-create and admin requests.
//!
//! Soft state (last heartbeat per broker, proposals in flight) belongs to one leadership: it is
//! rebuilt in [`PartitionMachine::on_role`], giving every broker a full session timeout. The
//! caches stop the same record being proposed on every heartbeat while the first is in flight;
//! an entry older than the session timeout no longer blocks a retry, so a lost proposal is
//! retried. All timers run on the monotonic clock (`Ctx::now_ms`).

pub mod balance;
pub mod image;
pub mod placement;
pub mod reassign;

use std::any::Any;
use std::collections::BTreeMap;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use self::balance::*;
pub use self::image::*;
pub use self::placement::*;
pub use self::reassign::*;
use crate::api::{ClientError, ConfigChange, Request, RequestId, Response};
use crate::machine::{
    Command, CommittedEntry, Ctx, Effects, NodeEvent, PartitionMachine, RestoreError,
};
use crate::mutation::{self, Mutation};
use crate::network::{AutoCreateTopic, BrokerHeartbeat};
use crate::topic_config::{self, AlterError, BrokerDefaults};
use crate::types::{Millis, NodeId, Offset, PartitionId, TopicPartition};

/// Most leaderships one LeaderChanges record carries (bounds a record's size).
const LEADERS_PER_RECORD: usize = 1_000;

/// The controller's fixed inputs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Every configured broker: where new replicas may go (with the registered, unfenced ones).
    pub brokers: Vec<NodeId>,
    /// The configured controller quorum: with `brokers`, the metadata group's configuration
    /// at index 0, which the first controller records in `ClusterCreated`.
    pub metadata_voters: Vec<NodeId>,
    /// Seeds the draw of the cluster id.
    pub seed: u64,
    /// A broker not heard from for this long is fenced.
    pub session_timeout_ms: Millis,
    /// Partitions of `__consumer_offsets`, created when the cluster forms (0: never).
    pub offsets_partitions: u32,
    /// The broker defaults of topic configs: the values IncrementalAlterConfigs APPEND and
    /// SUBTRACT start from when a topic has no override.
    pub topic_defaults: BrokerDefaults,
}

/// The learners of the metadata group a node creates from its configuration: every
/// configured broker that is not a voter, sorted. The first controller records the same in
/// `ClusterCreated`, so the two must come from this one function.
pub fn metadata_learners(voters: &[NodeId], brokers: &[NodeId]) -> Vec<NodeId> {
    let mut learners: Vec<NodeId> = brokers
        .iter()
        .copied()
        .filter(|b| !voters.contains(b))
        .collect();
    learners.sort_unstable();
    learners.dedup();
    learners
}

/// The replication factor of `__consumer_offsets`, capped at the brokers there are (Kafka's
/// `offsets.topic.replication.factor`).
pub const OFFSETS_REPLICATION_FACTOR: usize = 3;

/// An admin request or an internal record whose proposal is in flight.
#[derive(Debug, Clone)]
enum Proposal {
    Create {
        request: RequestId,
        name: String,
    },
    Delete {
        request: RequestId,
        name: String,
    },
    /// A CreatePartitions.
    Grow {
        request: RequestId,
        name: String,
    },
    /// An AlterConfigs or IncrementalAlterConfigs of a topic.
    Alter {
        request: RequestId,
        name: String,
    },
    /// The same of a broker resource ("" = the cluster-wide defaults).
    AlterBroker {
        request: RequestId,
        resource: String,
    },
    /// An AlterPartitionReassignments: the result of each of its moves, sent when the record
    /// of the valid ones commits.
    Reassign {
        request: RequestId,
        results: Vec<Result<(), ClientError>>,
    },
    /// An UnregisterBroker: a decommission (or an unregistration) recorded.
    Decommission {
        request: RequestId,
    },
    /// The balancer's moves.
    Balance,
    /// The controller's own record (registration, fencing, leaderships, auto-create).
    Internal,
}

/// Soft state of one leadership (module docs).
#[derive(Debug, Default)]
struct Leadership {
    /// The metadata term this state belongs to (0: not the controller).
    term: u64,
    last_seen: BTreeMap<NodeId, Millis>,
    registering: BTreeMap<NodeId, (RegisterBroker, Millis)>,
    fencing: BTreeMap<NodeId, Millis>,
    leaders: BTreeMap<TopicPartition, (LeaderMeta, Millis)>,
    creating: BTreeMap<String, Millis>,
    granting: BTreeMap<NodeId, (AllocateProducerIds, Millis)>,
    /// When `ClusterCreated` was proposed.
    identifying: Option<Millis>,
    /// Moves whose `ReassignmentDone` was proposed (move id, when).
    completing: BTreeMap<TopicPartition, (u64, Millis)>,
    /// Drained brokers whose `UnregisterBroker` was proposed.
    unregistering: BTreeMap<NodeId, Millis>,
    /// When the balancer's moves were proposed (until they commit or fail).
    balancing: Option<Millis>,
    /// When the balancer last ran.
    balanced_at: Millis,
    /// A move finished since the balancer last ran: run it at the next tick.
    move_finished: bool,
}

impl Leadership {
    /// Drops the caches of proposals in flight (one failed, so any may have), keeping the term
    /// and the liveness record.
    fn forget_proposals(&mut self) {
        self.registering.clear();
        self.fencing.clear();
        self.leaders.clear();
        self.creating.clear();
        self.granting.clear();
        self.identifying = None;
        self.completing.clear();
        self.unregistering.clear();
        self.balancing = None;
    }
}

/// Whether a cache entry made at `at` still blocks a new proposal at `now`.
fn recent(at: Millis, now: Millis, window: Millis) -> bool {
    now - at < window
}

/// The metadata partition's state machine (module docs).
pub struct Controller {
    config: ControllerConfig,
    image: MetadataImage,
    lead: Leadership,
    proposals: BTreeMap<u64, Proposal>,
    next_tag: u64,
    rng: ChaCha8Rng,
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            image: MetadataImage::default(),
            lead: Leadership::default(),
            proposals: BTreeMap::new(),
            next_tag: 0,
        }
    }

    /// The image applied so far.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Whether this instance acts as the controller (leads the metadata partition).
    pub fn is_active(&self) -> bool {
        self.lead.term != 0
    }

    fn propose(&mut self, proposal: Proposal, kind: RecordKind, ctx: &Ctx, fx: &mut Effects) {
        self.next_tag += 1;
        self.proposals.insert(self.next_tag, proposal);
        let batch = MetadataRecord { kind: Some(kind) }.to_batch(ctx.wall_ms);
        fx.propose(self.next_tag, batch);
    }

    fn handle_client(&mut self, id: RequestId, request: Request, ctx: &Ctx, fx: &mut Effects) {
        if !ctx.is_leader {
            let e = ClientError::NotController {
                controller: ctx.leader,
            };
            fx.reply(id, Response::error_for(&request, e));
            return;
        }
        match request {
            Request::CreateTopic { .. } => self.create_topic(id, request, ctx, fx),
            Request::DeleteTopic { name } => self.delete_topic(id, name, ctx, fx),
            Request::AlterTopicConfigs {
                topic,
                change,
                validate_only,
            } => {
                let checked = self.check_alter(&topic, change).map(|configs| {
                    RecordKind::AlterTopicConfigs(AlterTopicConfigs {
                        name: topic.clone(),
                        configs,
                    })
                });
                let proposal = Proposal::Alter {
                    request: id,
                    name: topic,
                };
                let reply = Response::AlterTopicConfigs;
                self.admin_change(id, checked, validate_only, proposal, reply, ctx, fx);
            }
            Request::AlterBrokerConfigs {
                broker,
                change,
                validate_only,
            } => {
                let resource = broker.map_or_else(String::new, |b| b.to_string());
                let checked = self
                    .check_alter_broker(broker, &resource, change)
                    .map(|configs| {
                        RecordKind::AlterBrokerConfigs(AlterBrokerConfigs {
                            resource: resource.clone(),
                            configs,
                        })
                    });
                let proposal = Proposal::AlterBroker {
                    request: id,
                    resource,
                };
                let reply = Response::AlterBrokerConfigs;
                self.admin_change(id, checked, validate_only, proposal, reply, ctx, fx);
            }
            Request::CreatePartitions {
                topic,
                count,
                assignments,
                validate_only,
            } => {
                let checked = self
                    .check_create_partitions(&topic, count, &assignments)
                    .map(|partitions| {
                        RecordKind::CreatePartitions(CreatePartitions {
                            name: topic.clone(),
                            partitions,
                        })
                    });
                let proposal = Proposal::Grow {
                    request: id,
                    name: topic,
                };
                let reply = Response::CreatePartitions;
                self.admin_change(id, checked, validate_only, proposal, reply, ctx, fx);
            }
            Request::AutoCreateTopic {
                name,
                partitions,
                replication_factor,
            } => {
                let t = AutoCreateTopic {
                    name,
                    partitions,
                    replication_factor,
                };
                let reply = self
                    .check_auto_create(&t)
                    .map(|()| self.auto_create(t, ctx, fx));
                fx.reply(id, Response::CreateTopic(reply));
            }
            Request::AlterReassignments { moves } => self.alter_reassignments(id, moves, ctx, fx),
            Request::ListReassignments { partitions } => {
                let list = self.image.reassignments(partitions.as_deref());
                fx.reply(id, Response::ListReassignments(Ok(list)));
            }
            Request::UnregisterBroker { broker } => self.decommission(id, broker, ctx, fx),
            other => {
                let e = ClientError::InvalidRequest("not a controller request".into());
                fx.reply(id, Response::error_for(&other, e));
            }
        }
    }

    fn in_flight(&self, name: &str) -> bool {
        self.proposals.values().any(|p| match p {
            Proposal::Create { name: n, .. }
            | Proposal::Delete { name: n, .. }
            | Proposal::Grow { name: n, .. }
            | Proposal::Alter { name: n, .. } => n == name,
            Proposal::AlterBroker { .. }
            | Proposal::Reassign { .. }
            | Proposal::Decommission { .. }
            | Proposal::Balance
            | Proposal::Internal => false,
        })
    }

    /// Answers a checked admin change: its error, or success at once under validate_only, or
    /// proposes its record (answered through `proposal` when it commits).
    #[allow(clippy::too_many_arguments)]
    fn admin_change(
        &mut self,
        id: RequestId,
        checked: Result<RecordKind, ClientError>,
        validate_only: bool,
        proposal: Proposal,
        reply: fn(Result<(), ClientError>) -> Response,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        match checked {
            Err(e) => fx.reply(id, reply(Err(e))),
            Ok(_) if validate_only => fx.reply(id, reply(Ok(()))),
            Ok(kind) => self.propose(proposal, kind, ctx, fx),
        }
    }

    /// The client topic an admin change names: UNKNOWN_TOPIC_OR_PARTITION if it does not exist
    /// or another change to it is in flight, INVALID_REQUEST (with `internal`'s reason) for an
    /// internal topic.
    fn client_topic(&self, name: &str, internal: &str) -> Result<&TopicMeta, ClientError> {
        if is_internal_topic(name) {
            return Err(ClientError::InvalidRequest(format!(
                "{name} is an internal topic; {internal}"
            )));
        }
        match self.image.topics.get(name) {
            Some(t) if !self.in_flight(name) => Ok(t),
            _ => Err(ClientError::UnknownTopic(name.to_string())),
        }
    }

    /// A topic's overrides after `change`, all checked: a client topic that exists with no
    /// change in flight, and every resulting config valid. Computed here, on the current image,
    /// so two alters never lose each other's ops.
    fn check_alter(
        &self,
        name: &str,
        change: ConfigChange,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let topic = self.client_topic(name, "the cluster sets its configs")?;
        match change {
            ConfigChange::Replace(configs) => {
                check_topic_configs(&configs)?;
                Ok(configs)
            }
            ConfigChange::Incremental(ops) => {
                topic_config::apply_incremental(&topic.configs, &ops, &self.config.topic_defaults)
                    .map_err(|e| match e {
                        AlterError::Duplicate { .. } => ClientError::InvalidRequest(e.to_string()),
                        other => ClientError::InvalidConfig(other.to_string()),
                    })
            }
        }
    }

    /// A broker resource's dynamic configs after `change`, all checked: a registered broker
    /// (or the cluster-wide defaults) with no other change to it in flight, and every config
    /// the broker synonym of a topic config, with a valid value (INVALID_CONFIG otherwise).
    fn check_alter_broker(
        &self,
        broker: Option<NodeId>,
        resource: &str,
        change: ConfigChange,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        if let Some(b) = broker.filter(|b| !self.image.brokers.contains_key(b)) {
            return Err(ClientError::InvalidRequest(format!(
                "broker {b} is not registered"
            )));
        }
        let busy = self
            .proposals
            .values()
            .any(|p| matches!(p, Proposal::AlterBroker { resource: r, .. } if r == resource));
        if busy {
            return Err(ClientError::InvalidRequest(format!(
                "another change to broker resource {resource:?} is in flight"
            )));
        }
        let current = self
            .image
            .broker_configs
            .get(resource)
            .cloned()
            .unwrap_or_default();
        // The cluster configs (the balancer's switch, the recovery rate) are not topic-config
        // defaults: checked on their own, and only on the cluster-wide resource.
        let (cluster_now, current): (BTreeMap<_, _>, BTreeMap<_, _>) = current
            .into_iter()
            .partition(|(k, _)| CLUSTER_CONFIGS.contains(&k.as_str()));
        let mut cluster = cluster_now;
        let change = split_cluster_configs(change, &mut cluster, resource)?;
        let next = match change {
            ConfigChange::Replace(configs) => BrokerDefaults(configs.clone())
                .validate()
                .map(|()| configs)
                .map_err(AlterError::from),
            ConfigChange::Incremental(ops) => {
                topic_config::apply_broker_incremental(&current, &ops)
            }
        };
        let mut next = next.map_err(|e| match e {
            AlterError::Duplicate { .. } => ClientError::InvalidRequest(e.to_string()),
            other => ClientError::InvalidConfig(other.to_string()),
        })?;
        next.extend(cluster);
        Ok(next)
    }

    /// Checks a CreatePartitions and places the new partitions: a client topic that exists and
    /// has no change in flight, a count above the current one, and an assignment (if given)
    /// for exactly the new partitions with the topic's replication factor.
    fn check_create_partitions(
        &self,
        name: &str,
        count: i64,
        assignments: &[Vec<NodeId>],
    ) -> Result<Vec<PartitionAssignment>, ClientError> {
        // A group's coordinator partition is a hash modulo the count: changing that of
        // `__consumer_offsets` would move every group.
        let topic = self.client_topic(name, "its partition count is fixed")?;
        let current = topic.partitions.len() as i64;
        let rf = topic.partitions.values().next().map_or(1, Vec::len) as i64;
        let invalid = |m: String| Err(ClientError::InvalidPartitionCount(m));
        if count < current {
            return invalid(format!(
                "topic {name} has {current} partitions; the count cannot decrease to {count}"
            ));
        }
        if count == current {
            return invalid(format!("topic {name} already has {current} partitions"));
        }
        if count > PARTITIONS_PER_TOPIC_MAX as i64 {
            return invalid(format!(
                "{count} partitions is more than the limit of {PARTITIONS_PER_TOPIC_MAX}"
            ));
        }
        let new = (count - current) as usize;
        let placed = if assignments.is_empty() {
            let brokers = self.image.placeable_brokers(&self.config.brokers);
            place_replicas(&self.image, &brokers, name, count, rf)
                .map(|all| all.into_iter().skip(current as usize).collect::<Vec<_>>())
        } else if assignments.len() != new {
            return Err(ClientError::InvalidReplicaAssignment(format!(
                "{} assignments for {new} new partitions",
                assignments.len()
            )));
        } else if assignments.iter().any(|a| a.len() as i64 != rf) {
            return Err(ClientError::InvalidReplicaAssignment(format!(
                "every new partition needs the topic's {rf} replicas"
            )));
        } else {
            check_assignment(&self.image, &self.config.brokers, name, assignments)
        };
        let mut placed = placed.map_err(placement_error)?;
        for (i, p) in placed.iter_mut().enumerate() {
            p.partition = (current as usize + i) as PartitionId;
        }
        Ok(placed)
    }

    /// Validates a CreateTopic, then proposes its record; the reply comes when it commits.
    fn create_topic(&mut self, id: RequestId, request: Request, ctx: &Ctx, fx: &mut Effects) {
        let Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            assignments,
            validate_only,
        } = request
        else {
            unreachable!("create_topic gets CreateTopic only");
        };
        let checked = self.check_create(
            &name,
            partitions,
            replication_factor,
            &configs,
            &assignments,
        );
        let assignment = match checked {
            Ok(a) => a,
            Err(e) => return fx.reply(id, Response::CreateTopic(Err(e))),
        };
        if validate_only {
            return fx.reply(id, Response::CreateTopic(Ok(())));
        }
        let kind = RecordKind::CreateTopic(CreateTopic {
            topic_id: topic_id(&name, self.image.records_applied).to_vec(),
            name: name.clone(),
            partitions: assignment,
            configs,
        });
        self.propose(Proposal::Create { request: id, name }, kind, ctx, fx);
    }

    fn check_create(
        &self,
        name: &str,
        partitions: i64,
        replication_factor: i64,
        configs: &BTreeMap<String, String>,
        assignments: &[Vec<NodeId>],
    ) -> Result<Vec<PartitionAssignment>, ClientError> {
        if is_internal_topic(name) {
            return Err(ClientError::InvalidRequest(format!(
                "{name} is an internal topic; only the cluster creates it"
            )));
        }
        if self.image.topics.contains_key(name) || self.in_flight(name) {
            return Err(ClientError::TopicAlreadyExists(name.to_string()));
        }
        check_topic_configs(configs)?;
        let placed = if assignments.is_empty() {
            let brokers = self.image.placeable_brokers(&self.config.brokers);
            place_replicas(&self.image, &brokers, name, partitions, replication_factor)
        } else {
            check_assignment(&self.image, &self.config.brokers, name, assignments)
        };
        placed.map_err(placement_error)
    }

    fn delete_topic(&mut self, id: RequestId, name: String, ctx: &Ctx, fx: &mut Effects) {
        if is_internal_topic(&name) {
            return fx.reply(
                id,
                Response::DeleteTopic(Err(ClientError::InvalidTopic(name))),
            );
        }
        if !self.image.topics.contains_key(&name) || self.in_flight(&name) {
            let e = ClientError::UnknownTopic(name);
            return fx.reply(id, Response::DeleteTopic(Err(e)));
        }
        let kind = RecordKind::DeleteTopic(DeleteTopic { name: name.clone() });
        self.propose(Proposal::Delete { request: id, name }, kind, ctx, fx);
    }

    fn check_auto_create(&self, t: &AutoCreateTopic) -> Result<(), ClientError> {
        if !crate::types::valid_topic_name(&t.name) || is_internal_topic(&t.name) {
            return Err(ClientError::InvalidTopic(t.name.clone()));
        }
        Ok(())
    }

    fn auto_create(&mut self, t: AutoCreateTopic, ctx: &Ctx, fx: &mut Effects) {
        let now = ctx.now_ms;
        let pending = self
            .lead
            .creating
            .get(&t.name)
            .is_some_and(|at| recent(*at, now, self.config.session_timeout_ms));
        if self.image.topics.contains_key(&t.name) || pending || self.check_auto_create(&t).is_err()
        {
            return;
        }
        let brokers = self.image.placeable_brokers(&self.config.brokers);
        let placed = place_replicas(
            &self.image,
            &brokers,
            &t.name,
            t.partitions as i64,
            t.replication_factor as i64,
        );
        let Ok(partitions) = placed else {
            return; // Not enough live brokers yet: the next request asks again.
        };
        self.lead.creating.insert(t.name.clone(), now);
        let kind = RecordKind::CreateTopic(CreateTopic {
            topic_id: topic_id(&t.name, self.image.records_applied).to_vec(),
            name: t.name,
            partitions,
            configs: BTreeMap::new(),
        });
        self.propose(Proposal::Internal, kind, ctx, fx);
    }

    /// Gives a new cluster (or one formed before clusters had ids) its identity: a fresh id,
    /// and the metadata group's configuration at index 0 as every node of the configured
    /// quorum created it (voters `metadata_voters`, every other configured broker a learner).
    fn identify_cluster(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let window = self.config.session_timeout_ms;
        let pending = self
            .lead
            .identifying
            .is_some_and(|at| recent(at, ctx.now_ms, window));
        if self.image.cluster.is_some() || pending {
            return;
        }
        self.lead.identifying = Some(ctx.now_ms);
        let voters = self.config.metadata_voters.clone();
        let learners = metadata_learners(&voters, &self.config.brokers);
        let kind = RecordKind::ClusterCreated(ClusterCreated {
            cluster_id: crate::cluster_id::new_cluster_id(&mut self.rng),
            voters,
            learners,
        });
        self.propose(Proposal::Internal, kind, ctx, fx);
    }

    /// Creates `__consumer_offsets` once enough brokers are up for its replication factor
    /// (every configured broker counts as placeable until it is fenced).
    fn create_offsets_topic(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let name = crate::types::CONSUMER_OFFSETS_TOPIC;
        let partitions = self.config.offsets_partitions;
        let pending = self
            .lead
            .creating
            .get(name)
            .is_some_and(|at| recent(*at, ctx.now_ms, self.config.session_timeout_ms));
        if partitions == 0 || pending || self.image.topics.contains_key(name) {
            return;
        }
        let brokers = self.image.placeable_brokers(&self.config.brokers);
        let rf = self
            .config
            .brokers
            .len()
            .clamp(1, OFFSETS_REPLICATION_FACTOR);
        let placed = place_internal(&self.image, &brokers, name, partitions as i64, rf as i64);
        let Ok(assignment) = placed else {
            return; // Too few brokers unfenced: the next tick tries again.
        };
        self.lead.creating.insert(name.to_string(), ctx.now_ms);
        let kind = RecordKind::CreateTopic(CreateTopic {
            topic_id: topic_id(name, self.image.records_applied).to_vec(),
            name: name.to_string(),
            partitions: assignment,
            configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        });
        self.propose(Proposal::Internal, kind, ctx, fx);
    }

    /// A heartbeat: liveness, (re-)registration, leaderships and auto-creation, each turned into
    /// a record only when the image differs.
    fn handle_heartbeat(&mut self, from: NodeId, hb: BrokerHeartbeat, ctx: &Ctx, fx: &mut Effects) {
        if !self.is_active() {
            return;
        }
        self.lead.last_seen.insert(from, ctx.now_ms);
        if let Some(reg) = hb.registration.filter(|r| r.id == from) {
            self.register(reg, ctx, fx);
        }
        let changes: Vec<PartitionLeader> = hb
            .leaders
            .into_iter()
            .filter(|pl| pl.leader == from && self.leader_changed(pl, ctx.now_ms))
            .collect();
        for chunk in changes.chunks(LEADERS_PER_RECORD) {
            let kind = RecordKind::LeaderChanges(LeaderChanges {
                leaders: chunk.to_vec(),
            });
            self.propose(Proposal::Internal, kind, ctx, fx);
        }
        for t in hb.create_topics {
            self.auto_create(t, ctx, fx);
        }
        if let Some(want) = hb.producer_ids.filter(|w| w.broker == from) {
            self.grant_producer_ids(want, ctx, fx);
        }
        for done in hb.moves_done {
            self.complete_move(done, ctx, fx);
        }
    }

    /// A broker asked for a block of producer ids: granted once per request.
    fn grant_producer_ids(&mut self, want: AllocateProducerIds, ctx: &Ctx, fx: &mut Effects) {
        let granted = self
            .image
            .producer_blocks
            .get(&want.broker)
            .is_some_and(|b| b.grant == want);
        let window = self.config.session_timeout_ms;
        let proposed = self
            .lead
            .granting
            .get(&want.broker)
            .is_some_and(|(w, at)| *w == want && recent(*at, ctx.now_ms, window));
        if granted || proposed || want.size == 0 || want.size > PRODUCER_ID_BLOCK_MAX {
            return;
        }
        self.lead
            .granting
            .insert(want.broker, (want.clone(), ctx.now_ms));
        let kind = RecordKind::AllocateProducerIds(want);
        self.propose(Proposal::Internal, kind, ctx, fx);
    }

    /// A node asking to join: registered fenced (its address known to every node, nothing
    /// placed on it), once per start.
    fn register_joining(&mut self, reg: RegisterBroker, ctx: &Ctx, fx: &mut Effects) {
        let known = self
            .image
            .brokers
            .get(&reg.id)
            .is_some_and(|b| b.incarnation == reg.incarnation);
        let window = self.config.session_timeout_ms;
        let proposed = self.lead.registering.get(&reg.id).is_some_and(|(r, at)| {
            r.incarnation == reg.incarnation && recent(*at, ctx.now_ms, window)
        });
        if !self.is_active() || known || proposed {
            return;
        }
        let reg = RegisterBroker {
            fenced: true,
            ..reg
        };
        self.lead
            .registering
            .insert(reg.id, (reg.clone(), ctx.now_ms));
        self.propose(Proposal::Internal, RecordKind::RegisterBroker(reg), ctx, fx);
    }

    fn register(&mut self, reg: RegisterBroker, ctx: &Ctx, fx: &mut Effects) {
        if self.image.unregistered.contains(&reg.id) {
            return; // Decommissioned: it comes back only by joining again.
        }
        let now = ctx.now_ms;
        let window = self.config.session_timeout_ms;
        let current = self
            .image
            .brokers
            .get(&reg.id)
            .is_some_and(|b| !b.fenced && b.registration() == reg);
        let proposed = self
            .lead
            .registering
            .get(&reg.id)
            .is_some_and(|(r, at)| *r == reg && recent(*at, now, window));
        if current || proposed {
            return;
        }
        self.lead.registering.insert(reg.id, (reg.clone(), now));
        self.lead.fencing.remove(&reg.id);
        self.propose(Proposal::Internal, RecordKind::RegisterBroker(reg), ctx, fx);
    }

    /// Whether a reported leadership differs from the record and is not already proposed;
    /// remembers it as proposed if so. An older term never overwrites a newer one.
    fn leader_changed(&mut self, pl: &PartitionLeader, now: Millis) -> bool {
        let tp = TopicPartition::new(pl.topic.clone(), pl.partition);
        let known = self
            .image
            .topics
            .get(&pl.topic)
            .is_some_and(|t| t.partitions.contains_key(&pl.partition));
        if !known {
            return false;
        }
        let reported = LeaderMeta {
            leader: Some(pl.leader),
            epoch: pl.epoch,
            isr: pl.isr.clone(),
        };
        let recorded = self.image.leaders.get(&tp);
        if recorded == Some(&reported) || recorded.is_some_and(|r| r.epoch > pl.epoch) {
            return false;
        }
        let window = self.config.session_timeout_ms;
        let proposed = self
            .lead
            .leaders
            .get(&tp)
            .is_some_and(|(m, at)| *m == reported && recent(*at, now, window));
        if proposed {
            return false;
        }
        self.lead.leaders.insert(tp, (reported, now));
        true
    }

    /// Fences every broker not heard from within the session timeout.
    fn fence_silent(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let now = ctx.now_ms;
        let window = self.config.session_timeout_ms;
        let mut fence = Vec::new();
        for b in self.image.brokers.values() {
            if b.fenced || b.id == ctx.node {
                continue;
            }
            let seen = *self.lead.last_seen.entry(b.id).or_insert(now);
            let pending = self
                .lead
                .fencing
                .get(&b.id)
                .is_some_and(|at| recent(*at, now, window));
            if now - seen > window && !pending {
                fence.push(b.id);
            }
        }
        for id in fence {
            self.lead.fencing.insert(id, now);
            self.lead.registering.remove(&id);
            // Its leaderships are cleared by the record; let fresh reports rewrite them.
            self.lead.leaders.retain(|_, (m, _)| m.leader != Some(id));
            self.propose(
                Proposal::Internal,
                RecordKind::FenceBroker(FenceBroker { id }),
                ctx,
                fx,
            );
        }
    }

    /// Events for the node: the replicas of this node that `changes` create or delete.
    fn node_events(&self, node: NodeId, changes: Vec<ImageChange>, fx: &mut Effects) {
        for change in changes {
            match change {
                ImageChange::PartitionAdded {
                    tp,
                    replicas,
                    configs,
                } if replicas.contains(&node) => fx.node(NodeEvent::ReplicaWanted {
                    tp,
                    campaign: replicas.first() == Some(&node),
                    voters: replicas,
                    configs,
                }),
                ImageChange::PartitionAdded { .. } => {}
                ImageChange::PartitionRemoved { tp } => fx.node(NodeEvent::ReplicaGone { tp }),
                ImageChange::ReplicasChanged {
                    tp,
                    replicas,
                    leaving,
                    ..
                } if !replicas.contains(&node)
                    || (leaving.contains(&node)
                        && mutation::active(Mutation::DropDataBeforeCommit)) =>
                {
                    fx.node(NodeEvent::ReplicaGone { tp })
                }
                ImageChange::ReplicasChanged { tp, configs, .. } => {
                    fx.node(NodeEvent::ReplicaWanted {
                        voters: self.image.initial_voters(&tp, node),
                        tp,
                        configs,
                        campaign: false,
                    })
                }
                ImageChange::ConfigsChanged { topic, configs } => {
                    fx.node(NodeEvent::TopicConfigsChanged { topic, configs })
                }
                ImageChange::BrokerConfigsChanged { resource } => {
                    if resource.is_empty() || resource == node.to_string() {
                        fx.node(NodeEvent::BrokerConfigsChanged)
                    }
                }
                ImageChange::ClusterCreated { cluster_id } => {
                    fx.node(NodeEvent::ClusterCreated { cluster_id })
                }
            }
        }
    }
}

impl PartitionMachine for Controller {
    fn apply(&mut self, entry: &CommittedEntry<'_>, ctx: &Ctx, fx: &mut Effects) {
        let records = match records_of_batch(entry.data) {
            Ok(r) => r,
            // Committed, checksummed and validated at append: a record that does not decode
            // is a bug or a newer version; skip it rather than stop the cluster. The image
            // still counts it, so images stay comparable by count.
            Err(_) => {
                self.image.records_applied += 1;
                return;
            }
        };
        for r in &records {
            if matches!(r.kind, Some(RecordKind::ReassignmentDone(_))) {
                self.lead.move_finished = true;
            }
            let changes = self.image.apply(r);
            self.node_events(ctx.node, changes, fx);
        }
    }

    fn on_role(&mut self, ctx: &Ctx, _fx: &mut Effects) {
        if !ctx.is_leader {
            self.lead = Leadership::default();
            return;
        }
        if self.lead.term == ctx.term {
            return;
        }
        let mut last_seen = BTreeMap::new();
        for b in self.image.brokers.keys().chain(self.config.brokers.iter()) {
            last_seen.insert(*b, ctx.now_ms);
        }
        assert_ne!(ctx.term, 0, "a leader has a term");
        self.lead = Leadership {
            term: ctx.term,
            last_seen,
            ..Leadership::default()
        };
    }

    fn tick(&mut self, ctx: &Ctx, fx: &mut Effects) {
        if self.is_active() && ctx.is_leader {
            self.identify_cluster(ctx, fx);
            self.fence_silent(ctx, fx);
            self.create_offsets_topic(ctx, fx);
            self.unregister_drained(ctx, fx);
            self.balance(ctx, fx);
        }
    }

    fn handle(&mut self, command: Command, ctx: &Ctx, fx: &mut Effects) {
        match command {
            Command::Client { id, request } => self.handle_client(id, request, ctx, fx),
            Command::Heartbeat { from, heartbeat } => {
                self.handle_heartbeat(from, heartbeat, ctx, fx)
            }
            Command::Join { registration } => self.register_joining(registration, ctx, fx),
        }
    }

    fn on_proposal(
        &mut self,
        tag: u64,
        result: Result<Offset, ClientError>,
        _ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let Some(proposal) = self.proposals.remove(&tag) else {
            return;
        };
        match proposal {
            Proposal::Create { request, .. } => {
                fx.reply(request, Response::CreateTopic(result.map(|_| ())))
            }
            Proposal::Delete { request, .. } => {
                fx.reply(request, Response::DeleteTopic(result.map(|_| ())))
            }
            Proposal::Grow { request, .. } => {
                fx.reply(request, Response::CreatePartitions(result.map(|_| ())))
            }
            Proposal::Alter { request, .. } => {
                fx.reply(request, Response::AlterTopicConfigs(result.map(|_| ())))
            }
            Proposal::AlterBroker { request, .. } => {
                fx.reply(request, Response::AlterBrokerConfigs(result.map(|_| ())))
            }
            Proposal::Reassign { request, results } => fx.reply(
                request,
                Response::AlterReassignments(result.map(|_| results)),
            ),
            Proposal::Decommission { request } => {
                fx.reply(request, Response::UnregisterBroker(result.map(|_| ())))
            }
            Proposal::Balance => self.lead.balancing = None,
            // Lost or failed: let the next heartbeats propose it again.
            Proposal::Internal if result.is_err() => self.lead.forget_proposals(),
            Proposal::Internal => {}
        }
    }

    fn compacts_log(&self) -> bool {
        true
    }

    fn snapshot(&self) -> Bytes {
        self.image.encode()
    }

    fn restore(&mut self, data: &[u8], ctx: &Ctx, fx: &mut Effects) -> Result<(), RestoreError> {
        let image = MetadataImage::decode(data).map_err(|e| RestoreError::Decode(e.to_string()))?;
        image.check_invariants();
        let before = self.image.assignments();
        let after = image.assignments();
        let here = |a: &BTreeMap<TopicPartition, Vec<NodeId>>, tp: &TopicPartition| {
            a.get(tp).is_some_and(|r| r.contains(&ctx.node))
        };
        for tp in before.keys().filter(|tp| !here(&after, tp)) {
            fx.node(NodeEvent::ReplicaGone { tp: tp.clone() });
        }
        for (name, t) in &image.topics {
            let changed = self
                .image
                .topics
                .get(name)
                .is_some_and(|o| o.configs != t.configs);
            if changed {
                fx.node(NodeEvent::TopicConfigsChanged {
                    topic: name.clone(),
                    configs: t.configs.clone(),
                });
            }
        }
        if image.dynamic_broker_configs(ctx.node) != self.image.dynamic_broker_configs(ctx.node) {
            fx.node(NodeEvent::BrokerConfigsChanged);
        }
        if let Some(c) = image
            .cluster
            .as_ref()
            .filter(|_| self.image.cluster.is_none())
        {
            fx.node(NodeEvent::ClusterCreated {
                cluster_id: c.cluster_id.clone(),
            });
        }
        for (tp, replicas) in &after {
            let configs = image.topics[&tp.topic].configs.clone();
            if replicas.contains(&ctx.node) {
                fx.node(NodeEvent::ReplicaWanted {
                    tp: tp.clone(),
                    voters: image.initial_voters(tp, ctx.node),
                    configs,
                    campaign: false,
                });
            }
        }
        self.image = image;
        // Proposals in flight belong to a log that was replaced; clients see them time out.
        self.lead.forget_proposals();
        Ok(())
    }

    fn check_invariants(&self) {
        self.image.check_invariants();
        if self.lead.term == 0 {
            assert!(self.lead.registering.is_empty() && self.lead.fencing.is_empty());
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The cluster-wide dynamic configs that are not topic-config defaults: the balancer's
/// switch and the learner recovery rate (`node::throttle`), in bytes per second.
pub const CLUSTER_CONFIGS: [&str; 2] = [AUTOBALANCE_CONFIG, LEARNER_RECOVERY_CONFIG];

/// The cluster-wide dynamic config of the rate at which leaders send log data to learners,
/// per node, in bytes per second (0: unthrottled).
pub const LEARNER_RECOVERY_CONFIG: &str = "raft.learner.recovery.rate";

/// Checks one cluster config ([`CLUSTER_CONFIGS`]): set on the cluster-wide resource (`""`)
/// only, and of its type.
fn check_cluster_config(
    name: &str,
    value: Option<&str>,
    resource: &str,
) -> Result<(), ClientError> {
    if !resource.is_empty() {
        return Err(ClientError::InvalidConfig(format!(
            "{name} is cluster-wide: set it on the default broker resource"
        )));
    }
    let Some(v) = value else {
        return Ok(());
    };
    let ok = if name == AUTOBALANCE_CONFIG {
        v == "true" || v == "false"
    } else {
        v.parse::<u64>().is_ok()
    };
    if ok {
        return Ok(());
    }
    let wanted = if name == AUTOBALANCE_CONFIG {
        "true or false"
    } else {
        "a number of bytes per second (0: unthrottled)"
    };
    Err(ClientError::InvalidConfig(format!(
        "{name} must be {wanted}, not {v:?}"
    )))
}

/// Takes the cluster configs ([`CLUSTER_CONFIGS`]) out of a broker-config change and applies
/// them to `cluster`, each checked ([`check_cluster_config`]). A Replace (AlterConfigs) that
/// leaves one out resets it, as it resets every other config.
fn split_cluster_configs(
    change: ConfigChange,
    cluster: &mut BTreeMap<String, String>,
    resource: &str,
) -> Result<ConfigChange, ClientError> {
    let is_cluster = |name: &str| CLUSTER_CONFIGS.contains(&name);
    Ok(match change {
        ConfigChange::Replace(configs) => {
            cluster.clear();
            let (ours, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
                configs.into_iter().partition(|(k, _)| is_cluster(k));
            for (name, v) in ours {
                check_cluster_config(&name, Some(&v), resource)?;
                cluster.insert(name, v);
            }
            ConfigChange::Replace(rest)
        }
        ConfigChange::Incremental(ops) => {
            let mut rest = Vec::new();
            for (name, op) in ops {
                if !is_cluster(&name) {
                    rest.push((name, op));
                    continue;
                }
                match op {
                    topic_config::AlterOp::Set(v) => {
                        check_cluster_config(&name, Some(&v), resource)?;
                        cluster.insert(name, v);
                    }
                    topic_config::AlterOp::Delete => {
                        check_cluster_config(&name, None, resource)?;
                        cluster.remove(&name);
                    }
                    _ => {
                        return Err(ClientError::InvalidConfig(format!(
                            "cannot APPEND or SUBTRACT on {name}: it is not a list config"
                        )))
                    }
                }
            }
            ConfigChange::Incremental(rest)
        }
    })
}

fn placement_error(e: PlacementError) -> ClientError {
    match e {
        PlacementError::InvalidTopic(n) => ClientError::InvalidTopic(n),
        PlacementError::InvalidPartitions(p) => ClientError::InvalidPartitions(p),
        PlacementError::InvalidReplicationFactor { asked, brokers } => {
            ClientError::InvalidReplicationFactor { asked, brokers }
        }
        PlacementError::InvalidAssignment(m) => ClientError::InvalidReplicaAssignment(m),
    }
}

/// The topic configs a CreateTopic (or an alter) may set: every config Kafka documents, with
/// Kafka's types and ranges (see [`crate::topic_config`]).
fn check_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ClientError> {
    topic_config::validate_all(configs).map_err(config_error)
}

/// A config refused, as the client sees it: INVALID_CONFIG with a message naming the config.
fn config_error(e: topic_config::ConfigError) -> ClientError {
    ClientError::InvalidConfig(e.to_string())
}
