//! A node: the state machine hosting every partition replica of one broker, and the shared
//! driver that pumps it into the [`Disk`] and [`Network`] traits.
//!
//! Call contract (quinn-proto style): feed inputs with [`Node::handle_envelope`],
//! [`Node::handle_request`] and [`Node::tick`]; then call [`Node::step`], which runs raft-rs's
//! `Ready` protocol for every replica in the required order; then drain replies with
//! [`Node::poll_reply`]. Both the simulator and the real node use exactly this code, so the
//! simulator tests the driver's ordering too.
//!
//! ## One step
//! 1. every replica with a `Ready` sends its `messages()` and writes entries and hard state;
//! 2. **one sync per dirty file** for the whole node (group commit across partitions);
//! 3. only then `persisted_messages()` go out and clients are acknowledged.
//!
//! Raft messages for the same peer are coalesced into one [`Envelope`] per phase: at most two
//! envelopes per peer per step, the first overlapping the fsync (a leader's appends need not wait
//! for its own disk), the second carrying what must follow it.
//!
//! A storage write error (a full disk, EIO) is fail-stop: [`Node::step`] returns
//! [`NodeError::Storage`] and the caller must drop the node and restart it from disk, exactly
//! as after a crash. Nothing was acknowledged from the failed step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use raft::eraftpb::Message as RaftMessage;
use raft::Ready;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slog::{o, Logger};

mod membership;
mod moves;
mod quorum;
mod throttle;

pub use self::moves::{Promotion, CATCH_UPS_PER_LEADER_MAX};
pub use self::throttle::LEARNER_RECOVERY_BYTES_PER_S_DEFAULT;

use crate::api::{ClientError, Request, RequestId, Response};
use crate::cluster_id::{ClusterIdError, ClusterIdFile};
use crate::controller::{metadata_tp, Controller, ControllerConfig, MetadataImage, RegisterBroker};
use crate::disk::Disk;
use crate::groups::{
    coordinator_partition, GroupConfig, GroupCoordinator, GroupError, GroupRequest, GroupResponse,
    ListedGroup,
};
use crate::log::LogConfig;
use crate::machine::{Command, Effect, NodeEvent, PartitionMachine};
use crate::metadata::PartitionLeader;
use crate::mutation::{self, Mutation};
use crate::network::{
    AutoCreateTopic, BrokerHeartbeat, Envelope, GroupMessage, Network, ENVELOPE_BYTES_MAX,
};
use crate::producer_ids::ProducerIdAllocator;
use crate::producers::ProducerTable;
use crate::replica::{is_vote_request, Replica, ReplicaConfig, Replies};
use crate::storage::{OpenReport, PartitionStorage, StorageError};
use crate::topic_config::{self, BrokerDefaults, BrokerLayers, TopicSettings};
use crate::types::{is_internal_topic, Millis, NodeId, TopicPartition, CONSUMER_OFFSETS_TOPIC};

/// A partition this node hosts and its raft voters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    pub tp: TopicPartition,
    pub voters: Vec<NodeId>,
    /// Members that follow without voting (a replica joining by a conf change). Only the
    /// first open of a partition uses `voters` and `learners`; afterwards the configuration
    /// it persisted wins.
    pub learners: Vec<NodeId>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Seeds the node's RNG (election timeouts). Distinct per node and per restart.
    pub seed: u64,
    pub replica: ReplicaConfig,
    pub log: LogConfig,
    /// Partitions hosted regardless of the metadata log (the simulator's fixed layout).
    pub partitions: Vec<PartitionSpec>,
    /// How often retention runs.
    pub retention_check_ms: Millis,
    /// Voters of the metadata partition (the controller quorum). Empty: no metadata group, only
    /// the fixed `partitions`. Otherwise every node in `brokers` hosts the metadata partition:
    /// as a voter if listed here, else as a raft learner that follows the log and never votes.
    pub metadata_voters: Vec<NodeId>,
    /// Every broker of the cluster: the metadata group's members, and where new topics'
    /// replicas may go (with the registered, unfenced brokers).
    pub brokers: Vec<NodeId>,
    /// The Kafka listener (and rack) this broker registers with the controller. `None`: no
    /// registration and no heartbeats (the simulator's fixed layout).
    pub endpoint: Option<BrokerEndpoint>,
    /// How often the broker heartbeats to the controller (registration, leaderships).
    pub heartbeat_ms: Millis,
    /// The controller fences a broker it has not heard from for this long.
    pub session_timeout_ms: Millis,
    /// How often a leader that is not its partition's preferred leader hands leadership back
    /// to the preferred one once that one is in sync (a rejoined node regains its
    /// leaderships). `None`: never.
    pub preferred_leader_check_ms: Option<Millis>,
    /// Leaders refuse produces (KAFKA_STORAGE_ERROR) while the disk has less free space than
    /// this; below half of it, follower replicas also stop taking appends (the leader retries
    /// them later), so a filling disk seldom reaches ENOSPC, which is fail-stop. Checked every
    /// tick. Reads and the metadata log go on.
    pub min_free_bytes: u64,
    /// Partitions of `__consumer_offsets`, which the controller creates when the cluster forms
    /// (Kafka's `offsets.topic.num.partitions`; 0: no consumer groups).
    pub offsets_partitions: u32,
    /// The group coordinators' settings (session bounds, initial rebalance delay, offset
    /// retention).
    pub group: GroupConfig,
    /// A producer with no batch for this long is forgotten by the partitions (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_expiration_ms: Millis,
    /// Broker-level defaults of topic configs, under Kafka's broker names (`log.retention.ms`,
    /// `message.max.bytes`, ...): what a topic without an override gets.
    pub topic_defaults: BrokerDefaults,
    /// Join a running cluster: with no metadata log yet, ask the controller quorum
    /// (`metadata_voters`) to admit this node instead of forming a cluster with `brokers`
    /// (module docs of `membership`). Ignored once the node has a metadata log.
    pub join: bool,
}

/// A partition this node should host, and its configuration if it is created now.
struct Wanted {
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    configs: BTreeMap<String, String>,
}

/// Where clients reach a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Where peers reach this node (raft); registered so that nodes that do not have it in
    /// their configuration can dial it.
    pub raft: Option<(String, u16)>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A partition's storage failed; the node must be restarted from disk (fail-stop).
    #[error("storage of {tp} failed: {source}")]
    Storage {
        tp: TopicPartition,
        #[source]
        source: StorageError,
    },
    /// The data directory's `cluster.id` cannot be read or written.
    #[error("data directory: {0}")]
    ClusterId(#[source] ClusterIdError),
    /// The directory's `cluster.id` and its metadata log name different clusters.
    #[error("the data directory belongs to cluster {directory}, but its metadata log is cluster {log}'s")]
    ClusterIdMismatch { directory: String, log: String },
    /// Every configured controller voter refused this node: its data belongs to another
    /// cluster. Nothing was written; the data is as it was.
    #[error("this node's data directory belongs to cluster {ours}, but the controller quorum (nodes {voters:?}) is cluster {theirs}; refusing to run against it (the data directory is left untouched)")]
    ForeignCluster {
        ours: String,
        theirs: String,
        voters: Vec<NodeId>,
    },
    /// The controller refused to admit this joining node.
    #[error("the cluster refused to admit this node: {detail}")]
    JoinRefused { detail: String },
}

/// Counters for summaries and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub steps: u64,
    pub syncs: u64,
    pub envelopes_sent: u64,
    pub raft_messages_sent: u64,
    pub bad_messages: u64,
    pub unknown_partition_messages: u64,
    pub heartbeats_sent: u64,
    /// Appends and snapshots to follower replicas dropped because the disk was nearly full.
    pub appends_refused_disk_low: u64,
    /// Heartbeats received while not the controller (dropped).
    pub heartbeats_misrouted: u64,
    /// Replicas opened by the periodic reconcile, after their creation had failed.
    pub replicas_created_late: u64,
    /// Partition deletions a crash had cut short, finished when the partition was opened.
    pub deletions_finished: u64,
    /// Envelopes refused because they named another cluster.
    pub foreign_envelopes: u64,
}

/// Most steps one [`Node::pump`] call runs before it returns (the caller comes back for more).
pub const PUMP_STEPS_MAX: usize = 64;
/// Request ids of the per-coordinator parts of a ListGroups (never a caller's: callers count
/// up from small numbers).
const LIST_GROUPS_ID_BASE: RequestId = 1 << 62;

/// Most rounds of machine-to-machine messages one input may cause.
const ROUTE_ROUNDS_MAX: usize = 8;
/// How often replicas the image assigns here but that failed to open are retried.
const RECONCILE_EVERY_MS: Millis = 1_000;
/// A change of the wall clock against the monotonic clock larger than this between two ticks is
/// logged as a clock step (the wall clock is data; no timer uses it).
const CLOCK_STEP_WARN_MS: Millis = 1_000;

/// What one [`Node::pump`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    pub steps: usize,
    /// Work was left when the step bound was reached: call again.
    pub more: bool,
}

pub struct Node {
    id: NodeId,
    config: NodeConfig,
    replicas: BTreeMap<TopicPartition, Replica>,
    rng: ChaCha8Rng,
    replies: VecDeque<(RequestId, Response)>,
    last_retention_ms: Millis,
    stats: NodeStats,
    open_reports: BTreeMap<TopicPartition, OpenReport>,
    disk: Rc<dyn Disk>,
    logger: Logger,
    last_preferred_check_ms: Millis,
    /// Free space fell below `min_free_bytes` at the last check.
    disk_low: bool,
    /// Free space fell below half of `min_free_bytes`: follower replicas stop taking appends.
    disk_critical: bool,
    /// The monotonic time of the last tick: the node's notion of now between ticks.
    now_ms: Millis,
    /// The wall-clock time of the last tick (record timestamps, retention by age).
    wall_ms: Millis,
    /// `wall_ms - now_ms` at the last tick, to notice wall-clock steps.
    wall_offset_ms: Option<Millis>,
    /// Wall-clock steps noticed (each logged once).
    clock_steps: u64,
    last_heartbeat_ms: Option<Millis>,
    /// The sum of the replicas' `leaderships_taken` at the last tick.
    leaderships_reported: u64,
    /// A heartbeat for the controller, sent with the next step's envelopes.
    heartbeat_out: Option<(NodeId, BrokerHeartbeat)>,
    /// Topics clients asked to auto-create, for the next heartbeat.
    auto_create: Vec<AutoCreateTopic>,
    /// Replicas that may have a `Ready` or unsynced writes: only these are visited by
    /// [`Node::step`] and [`Node::has_ready`]. Every input that can give a replica work marks
    /// it; a tick re-checks every replica, so a missed mark would cost at most one tick (the
    /// simulator's fixed-seed traces, identical with and without this set, say none is missed).
    /// With thousands of mostly idle partitions, a step otherwise walks all of them for the few
    /// a message touched.
    active: BTreeSet<TopicPartition>,
    /// Grows whenever a replica is created or deleted (see [`Node::view_version`]).
    replica_set_version: u64,
    /// The `replica_set_version` each hosted replica was created at: tells a replica deleted
    /// and created again apart from one that stayed.
    replica_born: BTreeMap<TopicPartition, u64>,
    /// Partition files the image does not name wait to be deleted until the metadata replica
    /// has left repair mode: a metadata log that lost committed records to corruption replays
    /// into an image that lacks topics, and their data must not go with them.
    leftovers_pending: bool,
    last_reconcile_ms: Millis,
    /// InitProducerId: blocks of producer ids granted by the controller.
    producer_ids: ProducerIdAllocator,
    /// Cluster identity and joining.
    membership: membership::Membership,
    /// Partition moves this node leads.
    moves: moves::Moves,
    /// A controller quorum change proposed here, answered once it applies.
    quorum_change: Option<quorum::PendingQuorumChange>,
    /// The bandwidth bound on log data sent to learners (module docs of `throttle`).
    recovery: throttle::RecoveryThrottle,
}

/// The image of a node without a metadata group.
static EMPTY_IMAGE: std::sync::OnceLock<MetadataImage> = std::sync::OnceLock::new();

impl Node {
    /// Opens the node: the metadata partition first (its controller rebuilds the image from
    /// snapshot and log), then every partition the fixed layout or the image assigns to it.
    pub fn open(
        config: NodeConfig,
        disk: Rc<dyn Disk>,
        logger: &Logger,
    ) -> Result<Node, NodeError> {
        let logger = logger.new(o!("node" => config.id));
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        // The seed differs at every start: it is the incarnation.
        let producer_ids = ProducerIdAllocator::new(config.id, config.seed);
        let cluster_file = ClusterIdFile::open(disk.clone()).map_err(NodeError::ClusterId)?;
        let mut node = Node {
            id: config.id,
            config,
            replicas: BTreeMap::new(),
            rng,
            replies: VecDeque::new(),
            last_retention_ms: 0,
            stats: NodeStats::default(),
            open_reports: BTreeMap::new(),
            disk,
            logger,
            last_preferred_check_ms: 0,
            disk_low: false,
            disk_critical: false,
            now_ms: 0,
            wall_ms: 0,
            wall_offset_ms: None,
            clock_steps: 0,
            last_heartbeat_ms: None,
            leaderships_reported: 0,
            heartbeat_out: None,
            auto_create: Vec::new(),
            producer_ids,
            active: BTreeSet::new(),
            replica_set_version: 0,
            replica_born: BTreeMap::new(),
            leftovers_pending: true,
            last_reconcile_ms: 0,
            membership: membership::Membership::new(cluster_file),
            moves: moves::Moves::default(),
            quorum_change: None,
            recovery: throttle::RecoveryThrottle::new(LEARNER_RECOVERY_BYTES_PER_S_DEFAULT),
        };
        let has_metadata_log = node
            .disk
            .list_dirs("")
            .unwrap_or_default()
            .contains(&metadata_tp().dir());
        node.membership.joining = node.config.join && !has_metadata_log;
        node.open_metadata()?;
        node.check_cluster_identity()?;
        let wanted = node.wanted_partitions();
        for (tp, w) in wanted {
            node.open_replica(tp, &w.voters, &w.learners, &w.configs, None)?;
        }
        node.remove_leftover_partitions();
        Ok(node)
    }

    /// Opens `__cluster_metadata-0` with its controller, when this node is a member of the
    /// metadata group (a voter, or a configured broker that follows it as a learner).
    /// A joining node opens it once admitted, with the configuration the controller sends.
    fn open_metadata(&mut self) -> Result<(), NodeError> {
        let voters = self.config.metadata_voters.clone();
        let member = voters.contains(&self.id) || self.config.brokers.contains(&self.id);
        if voters.is_empty() || !member || self.membership.joining {
            return Ok(());
        }
        let learners = crate::controller::metadata_learners(&voters, &self.config.brokers);
        self.open_metadata_with(&voters, &learners)
    }

    /// Opens `__cluster_metadata-0` with its controller; `voters` and `learners` are its
    /// configuration if it is created now.
    fn open_metadata_with(
        &mut self,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(), NodeError> {
        let controller = Controller::new(ControllerConfig {
            topic_defaults: self.config.topic_defaults.clone(),
            brokers: self.config.brokers.clone(),
            metadata_voters: self.config.metadata_voters.clone(),
            seed: self.config.seed,
            session_timeout_ms: self.config.session_timeout_ms,
            offsets_partitions: self.config.offsets_partitions,
        });
        let tp = metadata_tp();
        self.open_replica(
            tp.clone(),
            voters,
            learners,
            &BTreeMap::new(),
            Some(Box::new(controller)),
        )?;
        // The replay's node events describe what the image below already holds.
        let replayed = self
            .replicas
            .get_mut(&tp)
            .expect("just opened")
            .take_output();
        assert!(
            replayed.iter().all(|e| matches!(e, Effect::Node(_))),
            "a replay answers no client"
        );
        Ok(())
    }

    /// The partitions this node hosts: the fixed layout's and the image's.
    fn wanted_partitions(&self) -> BTreeMap<TopicPartition, Wanted> {
        let mut wanted = BTreeMap::new();
        // A fixed-layout partition not naming this node is one it joins: its leader adds it
        // with a conf change, and until then it only listens.
        for spec in &self.config.partitions {
            let w = Wanted {
                voters: spec.voters.clone(),
                learners: spec.learners.clone(),
                configs: BTreeMap::new(),
            };
            wanted.insert(spec.tp.clone(), w);
        }
        for t in self.metadata().topics.values() {
            for (p, replicas) in &t.partitions {
                if replicas.contains(&self.id) {
                    let tp = TopicPartition::new(t.name.clone(), *p);
                    let w = Wanted {
                        voters: self.metadata().initial_voters(&tp, self.id),
                        learners: Vec::new(),
                        configs: t.configs.clone(),
                    };
                    wanted.insert(tp, w);
                }
            }
        }
        wanted
    }

    /// The metadata image (topics and assignments) this node has applied.
    pub fn metadata(&self) -> &MetadataImage {
        self.controller_machine()
            .map(|c| c.image())
            .unwrap_or_else(|| EMPTY_IMAGE.get_or_init(MetadataImage::default))
    }

    /// The broker-level defaults of topic configs this node applies: its static
    /// `topic_defaults`, under the cluster-wide dynamic defaults, under its own dynamic
    /// configs (Kafka's order), from the metadata image.
    pub fn topic_defaults(&self) -> BrokerDefaults {
        let (dynamic, dynamic_default) = self.metadata().dynamic_broker_configs(self.id);
        BrokerLayers {
            dynamic,
            dynamic_default,
            static_: self.config.topic_defaults.clone(),
        }
        .merged()
    }

    /// Every local replica of a client topic takes its settings again (dynamic broker configs
    /// changed).
    fn refresh_topic_settings(&mut self) {
        let defaults = self.topic_defaults();
        let image = self.metadata();
        let mut fresh = Vec::new();
        for tp in self
            .replicas
            .keys()
            .filter(|tp| !is_internal_topic(&tp.topic))
        {
            if let Some(t) = image.topics.get(&tp.topic) {
                let settings = TopicSettings::resolve(&defaults, &t.configs);
                let log = log_config_for(&self.config.log, &defaults, &t.configs);
                fresh.push((tp.clone(), settings, log));
            }
        }
        for (tp, settings, log) in fresh {
            let r = self.replicas.get_mut(&tp).expect("listed above");
            r.set_settings(settings);
            r.set_log_config(log);
        }
    }

    /// The local controller machine, if this node hosts the metadata partition.
    fn controller_machine(&self) -> Option<&Controller> {
        self.replicas
            .get(&metadata_tp())?
            .machine()?
            .as_any()
            .downcast_ref::<Controller>()
    }

    /// The controller: the leader of the metadata partition, if known here.
    pub fn controller(&self) -> Option<NodeId> {
        self.replicas.get(&metadata_tp()).and_then(|r| r.leader())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn replica(&self, tp: &TopicPartition) -> Option<&Replica> {
        self.replicas.get(tp)
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The learner recovery throttle: messages it held, bytes it let through to learners, and
    /// bytes waiting now.
    pub fn recovery_stats(&self) -> (u64, u64, u64) {
        let r = &self.recovery;
        (r.held_total, r.sent_bytes_total, r.queued_bytes())
    }

    /// Wall-clock steps this node noticed (each logged once as a warning).
    pub fn clock_steps(&self) -> u64 {
        self.clock_steps
    }

    /// What recovery found for each partition when this node was opened.
    pub fn open_reports(&self) -> &BTreeMap<TopicPartition, OpenReport> {
        &self.open_reports
    }

    /// Runs every state machine's invariant checks (the simulator calls this after steps).
    pub fn check_invariants(&self) {
        for r in self.replicas.values() {
            if let Some(m) = r.machine() {
                m.check_invariants();
            }
        }
    }

    /// Feeds an envelope from a peer. Undecodable or misaddressed messages are counted and
    /// dropped: they come from the network and must never panic.
    pub fn handle_envelope(&mut self, mut envelope: Envelope) {
        if envelope.to != self.id {
            self.stats.bad_messages += 1;
            return;
        }
        if !self.screen_envelope(&mut envelope) {
            return;
        }
        let meta = metadata_tp();
        for gm in envelope.messages {
            let tp = gm.tp();
            let Some(replica) = self.replicas.get_mut(&tp) else {
                self.stats.unknown_partition_messages += 1;
                continue;
            };
            match gm.decode() {
                Ok(msg) if msg.to == self.id && msg.from == envelope.from => {
                    if self.disk_critical && tp != meta && carries_data(msg.get_msg_type()) {
                        // Writing it could hit ENOSPC, which is fail-stop. Dropped, it is an
                        // unanswered append: the leader retries after the next heartbeat and
                        // commits with the other replicas meanwhile; reads here go on.
                        self.stats.appends_refused_disk_low += 1;
                        continue;
                    }
                    replica.handle_raft_message(msg, &mut self.rng);
                    self.active.insert(tp);
                }
                _ => self.stats.bad_messages += 1,
            }
        }
        if let Some(hb) = envelope.heartbeat {
            self.deliver_heartbeat(envelope.from, hb);
        }
    }

    /// Feeds a client request. The reply comes from [`Node::poll_reply`], now or after later
    /// steps. Admin requests go to the controller's machine; data requests to the replica.
    pub fn handle_request(&mut self, now_ms: Millis, id: RequestId, request: Request) {
        let tp = match &request {
            Request::Produce { tp, .. }
            | Request::Fetch { tp, .. }
            | Request::ListOffsets { tp, .. }
            | Request::OffsetForLeaderEpoch { tp, .. }
            | Request::DeleteRecords { tp, .. } => tp.clone(),
            Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::CreatePartitions { .. }
            | Request::AlterTopicConfigs { .. }
            | Request::AlterBrokerConfigs { .. }
            | Request::AlterReassignments { .. }
            | Request::ListReassignments { .. } => {
                return self.route_to_controller(id, request);
            }
            Request::UnregisterBroker { broker } => {
                if let Some(e) = self.voter_decommission(*broker) {
                    return self
                        .replies
                        .push_back((id, Response::UnregisterBroker(Err(e))));
                }
                return self.route_to_controller(id, request);
            }
            Request::AddControllerVoter { broker } => {
                return self.change_quorum(id, *broker, true);
            }
            Request::RemoveControllerVoter { broker } => {
                return self.change_quorum(id, *broker, false);
            }
            Request::InitProducerId { current } => {
                return self.init_producer_id(id, *current);
            }
            Request::ElectPreferredLeader { tp } => {
                let reply = self.elect_preferred(tp);
                self.replies
                    .push_back((id, Response::ElectPreferredLeader(reply)));
                return;
            }
            Request::DescribeLogDirs => {
                let dirs = self.log_dirs();
                self.replies.push_back((id, Response::LogDirs(dirs)));
                return;
            }
            Request::FetchMany { partitions } => {
                let reply = partitions.iter().map(|p| self.fetch_one(p)).collect();
                self.replies.push_back((id, Response::FetchMany(reply)));
                return;
            }
            Request::AutoCreateTopic {
                name,
                partitions,
                replication_factor,
            } => {
                let t = AutoCreateTopic {
                    name: name.clone(),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                };
                return self.request_auto_create(id, t, request);
            }
            Request::Group(g) => {
                let g = g.clone();
                return self.route_group(id, g);
            }
        };
        self.handle_data_request(now_ms, id, tp, request);
    }

    /// A request for one partition's data: produce, fetch, list offsets, leader epochs.
    fn handle_data_request(
        &mut self,
        now_ms: Millis,
        id: RequestId,
        tp: TopicPartition,
        request: Request,
    ) {
        let writes = matches!(
            request,
            Request::Produce { .. } | Request::DeleteRecords { .. }
        );
        if is_internal_topic(&tp.topic) && writes {
            // Only the cluster writes (or deletes from) its internal topics (Kafka:
            // INVALID_TOPIC_EXCEPTION).
            let err = ClientError::InvalidTopic(tp.topic);
            self.replies
                .push_back((id, Response::error_for(&request, err)));
            return;
        }
        let replica = match self.replicas.get_mut(&tp) {
            // The metadata log is not a client topic.
            Some(r) if !is_internal_topic(&tp.topic) => r,
            _ => {
                let err = ClientError::UnknownPartition(tp);
                self.replies
                    .push_back((id, Response::error_for(&request, err)));
                return;
            }
        };
        let reply = match request {
            Request::Produce { .. } if self.disk_low && replica.is_leader() => {
                // Refused before anything is written; the write certainly did not happen.
                Response::Produce(Err(ClientError::Storage(
                    "disk almost full: produce refused".into(),
                )))
            }
            Request::Produce { acks, batch, .. } => {
                let mut replies = Replies::new();
                replica.produce(now_ms, id, acks, batch, &mut self.rng, &mut replies);
                self.active.insert(tp.clone());
                self.after_input(&[tp], replies);
                return;
            }
            Request::DeleteRecords { offset, .. } => {
                // Allowed on a low disk: it is how an operator frees space.
                let mut replies = Replies::new();
                replica.delete_records(now_ms, id, offset, &mut self.rng, &mut replies);
                self.active.insert(tp.clone());
                self.after_input(&[tp], replies);
                return;
            }
            Request::Fetch {
                offset, max_bytes, ..
            } => Response::Fetch(replica.fetch(offset, max_bytes)),
            Request::ListOffsets { spec, .. } => Response::ListOffsets(replica.list_offsets(spec)),
            Request::OffsetForLeaderEpoch { epoch, .. } => {
                Response::OffsetForLeaderEpoch(replica.offset_for_leader_epoch(epoch))
            }
            Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::CreatePartitions { .. }
            | Request::AlterTopicConfigs { .. }
            | Request::AlterBrokerConfigs { .. }
            | Request::DescribeLogDirs
            | Request::ElectPreferredLeader { .. }
            | Request::FetchMany { .. }
            | Request::InitProducerId { .. }
            | Request::AutoCreateTopic { .. }
            | Request::AlterReassignments { .. }
            | Request::ListReassignments { .. }
            | Request::UnregisterBroker { .. }
            | Request::AddControllerVoter { .. }
            | Request::RemoveControllerVoter { .. }
            | Request::Group(_) => unreachable!("handled above"),
        };
        self.replies.push_back((id, reply));
    }

    /// Hosts `tp` here with the given initial configuration: how a replica joins a partition
    /// it is not yet a voter of (as a learner the leader then adds with a conf change). An
    /// already hosted partition is left as it is.
    pub fn host_partition(
        &mut self,
        tp: TopicPartition,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(), NodeError> {
        if self.replicas.contains_key(&tp) {
            return Ok(());
        }
        self.open_replica(tp, voters, learners, &BTreeMap::new(), None)
    }

    /// Proposes a raft configuration change for `tp` (this node must lead it). It takes effect
    /// on each replica when it commits, and is persisted there.
    pub fn propose_conf_change(
        &mut self,
        tp: &TopicPartition,
        cc: raft::eraftpb::ConfChangeV2,
    ) -> Result<(), ClientError> {
        let replica = self
            .replicas
            .get_mut(tp)
            .ok_or_else(|| ClientError::UnknownPartition(tp.clone()))?;
        replica.propose_conf_change(cc, &mut self.rng)?;
        self.active.insert(tp.clone());
        Ok(())
    }

    /// One partition of a multi-partition fetch.
    fn fetch_one(
        &self,
        p: &crate::api::FetchPartition,
    ) -> Result<crate::api::FetchReply, ClientError> {
        match self.replicas.get(&p.tp) {
            Some(r) if !is_internal_topic(&p.tp.topic) => r.fetch(p.offset, p.max_bytes),
            _ => Err(ClientError::UnknownPartition(p.tp.clone())),
        }
    }

    /// Hands a command to the machine of `tp` and processes what follows.
    fn command(&mut self, tp: &TopicPartition, command: Command) {
        let Some(replica) = self.replicas.get_mut(tp) else {
            if let Command::Client { id, request } = command {
                let e = ClientError::UnknownPartition(tp.clone());
                self.replies
                    .push_back((id, Response::error_for(&request, e)));
            }
            return;
        };
        let mut replies = Replies::new();
        replica.handle_command(command, &mut self.rng, &mut replies);
        self.active.insert(tp.clone());
        self.after_input(std::slice::from_ref(tp), replies);
    }

    /// Admin requests: the controller's machine validates and proposes, or answers
    /// NOT_CONTROLLER with the leader it knows.
    fn route_to_controller(&mut self, id: RequestId, request: Request) {
        let meta = metadata_tp();
        if !self.replicas.contains_key(&meta) {
            let e = ClientError::NotController { controller: None };
            self.replies
                .push_back((id, Response::error_for(&request, e)));
            return;
        }
        self.command(&meta, Command::Client { id, request });
    }

    /// ElectLeaders (preferred) for one partition this node should lead: starts the transfer
    /// to the preferred replica if that one is in sync.
    fn elect_preferred(&mut self, tp: &TopicPartition) -> Result<(), ClientError> {
        let preferred = self.preferred_replica(tp);
        let replica = match self.replicas.get_mut(tp) {
            Some(r) if !is_internal_topic(&tp.topic) => r,
            _ => return Err(ClientError::UnknownPartition(tp.clone())),
        };
        if !replica.is_leader() {
            let leader = replica.leader().filter(|l| *l != self.id);
            return Err(ClientError::NotLeader { leader });
        }
        let preferred = preferred.unwrap_or(self.id);
        if preferred == self.id {
            return Err(ClientError::ElectionNotNeeded);
        }
        if !replica.in_sync_replicas().contains(&preferred) {
            return Err(ClientError::PreferredLeaderNotAvailable(preferred));
        }
        replica.transfer_leadership(preferred, &mut self.rng);
        self.active.insert(tp.clone());
        Ok(())
    }

    /// DescribeLogDirs: every hosted partition, `__consumer_offsets` included as in Kafka, but
    /// not the metadata log (Kafka keeps it apart, in `metadata.log.dir`).
    fn log_dirs(&self) -> crate::api::LogDirs {
        let partitions = self
            .replicas
            .iter()
            .filter(|(tp, _)| tp.topic != crate::types::METADATA_TOPIC)
            .map(|(tp, r)| {
                let s = r.status();
                let lag = (s.high_watermark - s.log_end_offset).max(0);
                (tp.clone(), r.log_size_bytes(), lag)
            })
            .collect();
        crate::api::LogDirs {
            partitions,
            available_bytes: self.disk.available_bytes(),
        }
    }

    /// A heartbeat for the controller: handled when the local metadata replica leads, else
    /// dropped (the broker sends the next one to the leader it then knows).
    fn deliver_heartbeat(&mut self, from: NodeId, heartbeat: BrokerHeartbeat) {
        if self.controller() != Some(self.id) {
            self.stats.heartbeats_misrouted += 1;
            return;
        }
        self.command(&metadata_tp(), Command::Heartbeat { from, heartbeat });
    }

    /// A client used a missing topic and auto-creation is on: the local controller creates it,
    /// or the request rides in an immediate heartbeat to the remote one.
    fn request_auto_create(&mut self, id: RequestId, t: AutoCreateTopic, request: Request) {
        let reply = if !crate::types::valid_topic_name(&t.name) || is_internal_topic(&t.name) {
            Err(ClientError::InvalidTopic(t.name))
        } else if self.metadata().topics.contains_key(&t.name) {
            Ok(())
        } else if self.controller() == Some(self.id) {
            return self.route_to_controller(id, request);
        } else {
            if !self.auto_create.iter().any(|a| a.name == t.name) {
                self.auto_create.push(t);
            }
            match self.controller() {
                None => Err(ClientError::NotController { controller: None }),
                Some(_) => {
                    self.send_heartbeat();
                    Ok(())
                }
            }
        };
        self.replies.push_back((id, Response::CreateTopic(reply)));
    }

    /// A group request: to the coordinator of its group, the leader of
    /// `__consumer_offsets-{coordinator_partition(group)}`; the machine answers NOT_COORDINATOR
    /// unless it leads, and so does a node that does not host the partition. ListGroups asks
    /// every coordinator this node leads.
    fn route_group(&mut self, id: RequestId, request: GroupRequest) {
        let answer = |me: &mut Self, e: GroupError| {
            let r = GroupResponse::error_for(&request, e);
            me.replies.push_back((id, Response::Group(r)));
        };
        let partitions = self
            .metadata()
            .topics
            .get(CONSUMER_OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions.len() as u32);
        if partitions == 0 {
            return answer(self, GroupError::CoordinatorNotAvailable);
        }
        if let GroupRequest::List { states_filter } = &request {
            let filter = states_filter.clone();
            return self.list_groups(id, filter);
        }
        let batched = match &request {
            GroupRequest::Describe { groups } | GroupRequest::Delete { groups } => groups.len() > 1,
            _ => false,
        };
        if batched {
            // The Kafka layer splits batched requests by group (their coordinators differ).
            return answer(self, GroupError::InvalidRequest);
        }
        let group = request.group().unwrap_or_default();
        let tp = TopicPartition::new(
            CONSUMER_OFFSETS_TOPIC,
            coordinator_partition(group, partitions),
        );
        if !self.replicas.contains_key(&tp) {
            return answer(self, GroupError::NotCoordinator);
        }
        self.command(
            &tp,
            Command::Client {
                id,
                request: Request::Group(request),
            },
        );
    }

    /// ListGroups: the groups of every coordinator this node leads, merged. Each coordinator
    /// answers at once; a loading one makes the whole answer COORDINATOR_LOAD_IN_PROGRESS, as
    /// in Kafka.
    fn list_groups(&mut self, id: RequestId, states_filter: Vec<String>) {
        let leading: Vec<TopicPartition> = self
            .replicas
            .iter()
            .filter(|(tp, r)| tp.topic == CONSUMER_OFFSETS_TOPIC && r.is_leader())
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut merged: Result<Vec<ListedGroup>, GroupError> = Ok(Vec::new());
        for (i, tp) in leading.iter().enumerate() {
            let sub = LIST_GROUPS_ID_BASE + i as u64;
            let request = Request::Group(GroupRequest::List {
                states_filter: states_filter.clone(),
            });
            self.command(tp, Command::Client { id: sub, request });
            let Some(pos) = self.replies.iter().position(|(rid, _)| *rid == sub) else {
                merged = Err(GroupError::CoordinatorLoadInProgress);
                continue;
            };
            let (_, reply) = self.replies.remove(pos).expect("found above");
            match (reply, &mut merged) {
                (Response::Group(GroupResponse::List(Ok(groups))), Ok(all)) => all.extend(groups),
                (Response::Group(GroupResponse::List(Err(e))), _) => merged = Err(e),
                (_, Err(_)) => {}
                (other, _) => panic!("a coordinator answered ListGroups with {other:?}"),
            }
        }
        if let Ok(all) = &mut merged {
            all.sort_by(|a, b| a.group.cmp(&b.group));
        }
        self.replies
            .push_back((id, Response::Group(GroupResponse::List(merged))));
    }

    /// InitProducerId: an id from this broker's block, or a wait for the controller's next
    /// grant (asked for in an immediate heartbeat).
    fn init_producer_id(&mut self, id: RequestId, current: Option<(i64, i16)>) {
        let next_free = self.metadata().next_producer_id;
        match self.producer_ids.init(id, current, next_free, self.now_ms) {
            Some(result) => self
                .replies
                .push_back((id, Response::InitProducerId(result))),
            None => self.send_heartbeat(),
        }
    }

    /// Answers InitProducerId requests that a new grant or the wait time settled.
    fn settle_producer_ids(&mut self) {
        let mut done = if self.producer_ids.is_waiting() {
            let image = self.metadata().clone();
            self.producer_ids.on_image(&image)
        } else {
            Vec::new()
        };
        done.extend(self.producer_ids.expire(self.now_ms));
        for (id, result) in done {
            self.replies
                .push_back((id, Response::InitProducerId(result)));
        }
    }

    /// After an input touched `tps`: processes their machines' outputs (node events first in
    /// their order, then replies, as they were emitted), then queues `replies`.
    fn after_input(&mut self, tps: &[TopicPartition], replies: Replies) {
        let mut next = Vec::new();
        for tp in tps {
            self.drain_output(tp, &mut next);
        }
        // Messages between machines: each round delivers what the previous one sent.
        for _ in 0..ROUTE_ROUNDS_MAX {
            if next.is_empty() {
                break;
            }
            for tp in std::mem::take(&mut next) {
                self.drain_output(&tp, &mut next);
            }
        }
        self.replies.extend(replies);
        if tps.contains(&metadata_tp()) {
            self.settle_producer_ids();
        }
    }

    /// Carries out the machine output of `tp`; partitions that got messages go to `sent_to`.
    fn drain_output(&mut self, tp: &TopicPartition, sent_to: &mut Vec<TopicPartition>) {
        let Some(r) = self.replicas.get_mut(tp) else {
            return;
        };
        if !r.has_output() {
            return;
        }
        for effect in r.take_output() {
            if let Some(to) = self.apply_effect(effect) {
                sent_to.push(to);
            }
        }
    }

    /// Carries out one machine effect; returns the partition a message went to.
    fn apply_effect(&mut self, effect: Effect) -> Option<TopicPartition> {
        match effect {
            Effect::Reply(id, resp) => self.replies.push_back((id, resp)),
            Effect::Node(event) => {
                if let Err(e) = self.apply_node_event(event) {
                    // A replica that cannot be created is retried at the next start (its
                    // assignment is in the image); this node keeps serving the others.
                    slog::error!(self.logger, "cannot create replica"; "error" => %e);
                }
            }
            Effect::Message { to, command } => {
                let replica = self.replicas.get_mut(&to)?;
                let mut replies = Replies::new();
                replica.handle_command(command, &mut self.rng, &mut replies);
                self.replies.extend(replies);
                self.active.insert(to.clone());
                return Some(to);
            }
            Effect::Propose { .. } => unreachable!("the replica proposes its machine's proposals"),
        }
        None
    }

    fn apply_node_event(&mut self, event: NodeEvent) -> Result<(), NodeError> {
        match event {
            NodeEvent::ReplicaWanted {
                tp,
                voters,
                configs,
                campaign,
            } => {
                if !self.replicas.contains_key(&tp) {
                    slog::info!(self.logger, "creating replica"; "tp" => %tp, "voters" => ?voters);
                    self.open_replica(tp.clone(), &voters, &[], &configs, None)?;
                    if campaign {
                        let replica = self.replicas.get_mut(&tp).expect("opened above");
                        replica.campaign_fresh(&mut self.rng);
                    }
                }
            }
            NodeEvent::ClusterCreated { cluster_id } => self.adopt_cluster_id(&cluster_id)?,
            NodeEvent::BrokerConfigsChanged => {
                if !mutation::active(Mutation::IgnoreBrokerConfigsChanged) {
                    self.refresh_topic_settings()
                }
            }
            NodeEvent::TopicConfigsChanged { topic, configs } => {
                let defaults = &self.topic_defaults();
                let settings = TopicSettings::resolve(defaults, &configs);
                let log = log_config_for(&self.config.log, defaults, &configs);
                for (tp, r) in self
                    .replicas
                    .range_mut(TopicPartition::new(topic.clone(), 0)..)
                {
                    if tp.topic != topic {
                        break;
                    }
                    r.set_settings(settings.clone());
                    if !is_internal_topic(&topic) {
                        r.set_log_config(log.clone());
                    }
                }
            }
            NodeEvent::ReplicaGone { tp } => {
                if let Some(mut r) = self.replicas.remove(&tp) {
                    slog::info!(self.logger, "deleting replica"; "tp" => %tp);
                    let mut replies = Replies::new();
                    r.abandon_pending(&mut replies);
                    self.replies.extend(replies);
                    self.open_reports.remove(&tp);
                    self.active.remove(&tp);
                    self.replica_set_version += 1;
                    self.replica_born.remove(&tp);
                    drop(r);
                    remove_dir_files(&*self.disk, &tp.dir());
                }
            }
        }
        Ok(())
    }

    /// Advances time: `now_ms` is monotonic and drives every timer (raft ticks, heartbeats,
    /// sessions, produce deadlines); `wall_ms` is the wall clock, used only as data (record
    /// timestamps of metadata records, retention by age). Ticks every replica, sends the
    /// heartbeat when due, and runs retention every `retention_check_ms`.
    pub fn tick(&mut self, now_ms: Millis, wall_ms: Millis) -> Result<(), NodeError> {
        assert!(now_ms >= self.now_ms, "monotonic clock went backwards");
        self.now_ms = now_ms;
        self.note_wall_clock(now_ms, wall_ms);
        let free = self.disk.available_bytes();
        self.disk_low = free.is_some_and(|f| f < self.config.min_free_bytes);
        self.disk_critical = free.is_some_and(|f| f < self.config.min_free_bytes / 2);
        self.refill_recovery(now_ms);
        // Before the raft ticks: a tick may run check_quorum, which clears every follower's
        // `recent_active`; checked after it, the preferred leader would look out of sync on
        // every check that lands on such a tick (with a check period a multiple of the
        // election timeout, all of them).
        if let Some(every) = self.config.preferred_leader_check_ms {
            if now_ms - self.last_preferred_check_ms >= every {
                self.last_preferred_check_ms = now_ms;
                self.restore_preferred_leaders();
            }
        }
        let mut replies = Replies::new();
        let mut touched = Vec::new();
        let mut leaderships: u64 = 0;
        for (tp, replica) in self.replicas.iter_mut() {
            replica
                .tick(now_ms, wall_ms, &mut self.rng, &mut replies)
                .map_err(storage_error(tp))?;
            if replica.has_work() {
                self.active.insert(tp.clone());
            }
            if replica.machine().is_some() {
                touched.push(tp.clone());
            }
            leaderships = leaderships.wrapping_add(replica.leaderships_taken());
        }
        self.after_input(&touched, replies);
        self.settle_producer_ids();
        self.drive_moves();
        self.settle_quorum_change();
        // A leadership taken since the last tick is reported now: clients find a new
        // partition's (or a failed-over partition's) leader without waiting a heartbeat period.
        let new_leaderships = leaderships != self.leaderships_reported;
        self.leaderships_reported = leaderships;
        if new_leaderships
            || std::mem::take(&mut self.moves.report_now)
            || self
                .last_heartbeat_ms
                .is_none_or(|t| now_ms - t >= self.config.heartbeat_ms)
        {
            self.send_heartbeat();
        }
        if now_ms - self.last_retention_ms >= self.config.retention_check_ms {
            self.last_retention_ms = now_ms;
            self.apply_retention()?;
        }
        if now_ms - self.last_reconcile_ms >= RECONCILE_EVERY_MS {
            self.last_reconcile_ms = now_ms;
            self.reconcile_replicas();
            self.remove_leftover_partitions();
        }
        self.tick_membership()
    }

    /// Opens every replica the image assigns here that is not open: a creation that failed
    /// when its record applied (a full disk, a read error in recovery) is retried until it
    /// works. Deletions need no retry: they are local and cannot fail.
    fn reconcile_replicas(&mut self) {
        if self.controller_machine().is_none() {
            return;
        }
        for (tp, w) in self.wanted_partitions() {
            if self.replicas.contains_key(&tp) {
                continue;
            }
            match self.open_replica(tp, &w.voters, &w.learners, &w.configs, None) {
                Ok(()) => self.stats.replicas_created_late += 1,
                Err(e) => slog::warn!(self.logger, "cannot create replica yet"; "error" => %e),
            }
        }
    }

    /// Records the wall clock and warns once per step of it (a jump of the wall clock against
    /// the monotonic one): nothing times out because of it, but an operator should know.
    fn note_wall_clock(&mut self, now_ms: Millis, wall_ms: Millis) {
        self.wall_ms = wall_ms;
        let offset = wall_ms - now_ms;
        if let Some(prev) = self.wall_offset_ms {
            let step = offset - prev;
            if step.abs() > CLOCK_STEP_WARN_MS {
                self.clock_steps += 1;
                slog::warn!(self.logger, "wall clock stepped; timers are unaffected";
                    "step_ms" => step);
            }
        }
        self.wall_offset_ms = Some(offset);
    }

    /// Retention by size and by age (against the wall clock: record timestamps are wall time).
    fn apply_retention(&mut self) -> Result<(), NodeError> {
        for (tp, replica) in self.replicas.iter_mut() {
            replica
                .apply_retention(self.wall_ms)
                .map_err(storage_error(tp))?;
            if replica.has_work() {
                self.active.insert(tp.clone());
            }
        }
        Ok(())
    }

    /// Hands every leadership this node holds to the best caught-up follower: a graceful stop
    /// (SIGTERM) calls this, keeps stepping until [`Node::leads_any`] is false or a deadline
    /// passes, then exits, so clients see a new leader at once instead of after an election
    /// timeout.
    pub fn transfer_all_leaderships(&mut self) {
        for (tp, r) in self.replicas.iter_mut() {
            if let Some(to) = r.best_successor() {
                r.transfer_leadership(to, &mut self.rng);
                self.active.insert(tp.clone());
            }
        }
    }

    /// A number that grows whenever a replica's term, role or leader changes, or the metadata
    /// image or the set of replicas does: the cluster view is rebuilt only then, instead of
    /// walking every partition every few milliseconds. Each part only grows, so the sum does.
    pub fn view_version(&self) -> u64 {
        let roles: u64 = self.replicas.values().map(|r| r.role_changes()).sum();
        // The cluster id is adopted a moment after its record applies.
        let identified = u64::from(self.cluster_id().is_some());
        roles + self.metadata().records_applied + self.replica_set_version + identified
    }

    /// A number that grows whenever a replica is created or deleted here.
    pub fn replica_set_version(&self) -> u64 {
        self.replica_set_version
    }

    /// The [`Node::replica_set_version`] at which `tp`'s replica here was created (within this
    /// start of the node): it changes when the replica is deleted and created again.
    pub fn replica_generation(&self, tp: &TopicPartition) -> Option<u64> {
        self.replica_born.get(tp).copied()
    }

    /// A number that changes whenever a replica's durable commit index moves, i.e. whenever a
    /// high watermark may have moved: the runtime wakes long-polling fetches on a change.
    pub fn commit_version(&self) -> u64 {
        self.replicas.values().fold(0u64, |acc, r| {
            acc.wrapping_add(r.storage().durable_commit())
        })
    }

    /// Whether free space is below the reserve (produces are being refused).
    pub fn disk_low(&self) -> bool {
        self.disk_low
    }

    /// Whether this node leads any partition.
    pub fn leads_any(&self) -> bool {
        self.replicas.values().any(|r| r.is_leader())
    }

    /// Gives leadership back to each partition's preferred leader when it is in sync. The
    /// metadata partition is left alone: moving the controller only makes admin requests meet
    /// NOT_CONTROLLER, which librdkafka does not retry.
    fn restore_preferred_leaders(&mut self) {
        let meta = metadata_tp();
        let image = self.metadata();
        // A moving partition's leadership is the move's to place.
        let preferred: BTreeMap<TopicPartition, Option<NodeId>> = self
            .replicas
            .iter()
            .filter(|(tp, r)| **tp != meta && r.is_leader() && !image.moves.contains_key(*tp))
            .map(|(tp, _)| (tp.clone(), self.preferred_replica(tp)))
            .collect();
        for (tp, pref) in preferred {
            let r = self.replicas.get_mut(&tp).expect("collected above");
            let Some(pref) = pref else {
                continue;
            };
            if r.is_leader() && pref != self.id && r.in_sync_replicas().contains(&pref) {
                r.transfer_leadership(pref, &mut self.rng);
                self.active.insert(tp.clone());
            }
        }
    }

    /// A partition's preferred leader: the first replica the image assigns it (raft keeps its
    /// voters unordered, and a move changes them), else the first of its initial voters.
    fn preferred_replica(&self, tp: &TopicPartition) -> Option<NodeId> {
        let assigned = self
            .metadata()
            .topics
            .get(&tp.topic)
            .and_then(|t| t.partitions.get(&tp.partition))
            .and_then(|replicas| replicas.first().copied());
        assigned.or_else(|| self.replicas.get(tp)?.preferred_leader())
    }

    /// Whether [`Node::step`] has work to do.
    pub fn has_ready(&self) -> bool {
        self.heartbeat_out.is_some()
            || !self.membership.outgoing.is_empty()
            || self.recovery.ready()
            || self
                .active
                .iter()
                .any(|tp| self.replicas.get(tp).is_some_and(|r| r.has_work()))
    }

    /// The one driver: steps until nothing is ready or `steps_max` steps ran. The runtime, the
    /// simulator and the tests all call this, so they run the same ordering.
    pub fn pump(&mut self, net: &mut impl Network, steps_max: usize) -> Result<Pumped, NodeError> {
        assert!(steps_max > 0, "a pump runs at least one step");
        let mut out = Pumped::default();
        while self.has_ready() {
            if out.steps == steps_max {
                out.more = true;
                break;
            }
            self.step(net)?;
            out.steps += 1;
        }
        Ok(out)
    }

    /// One pass of the `Ready` protocol over every active replica (module docs).
    pub fn step(&mut self, net: &mut impl Network) -> Result<(), NodeError> {
        self.stats.steps += 1;
        let id = self.id;
        // Phase 1: messages that need not wait for our disk, and unsynced writes.
        let mut outbox: BTreeMap<NodeId, Vec<GroupMessage>> = BTreeMap::new();
        let mut readies: Vec<(TopicPartition, Ready)> = Vec::new();
        let active = std::mem::take(&mut self.active);
        for tp in &active {
            let Some(replica) = self.replicas.get_mut(tp) else {
                continue;
            };
            let to = Recipients::of(replica);
            let recovery = &mut self.recovery;
            let mut send = |m: RaftMessage| to.queue(&mut outbox, recovery, tp, m);
            let rd = replica.ready_write(&mut send).map_err(storage_error(tp))?;
            if let Some(rd) = rd {
                readies.push((tp.clone(), rd));
            }
        }
        for env in std::mem::take(&mut self.membership.outgoing) {
            self.stats.envelopes_sent += 1;
            net.send(env);
        }
        self.recovery
            .release(|to, m| outbox.entry(to).or_default().push(m));
        let mut heartbeat = self.heartbeat_out.take();
        if let Some((to, _)) = &heartbeat {
            // Rides with this step's raft messages for the controller, or goes alone.
            outbox.entry(*to).or_default();
        }
        self.flush(id, &mut outbox, &mut heartbeat, net);
        let early = mutation::active(Mutation::AckBeforeSync);
        let replies = if early {
            // Planted bug: acknowledge, and send what must follow the fsync, before it.
            let r = self.finish_readies(readies, &mut outbox)?;
            self.flush(id, &mut outbox, &mut None, net);
            self.replies.extend(r);
            self.sync_active(&active)?;
            Replies::new()
        } else {
            // Phase 2: one sync per dirty file, for every partition at once.
            self.sync_active(&active)?;
            // Phase 3: what had to wait for durability.
            self.finish_readies(readies, &mut outbox)?
        };
        self.flush(id, &mut outbox, &mut None, net);
        // What still has work (e.g. entries committed by this step, to apply) stays active.
        for tp in &active {
            if self.replicas.get(tp).is_some_and(|r| r.has_work()) {
                self.active.insert(tp.clone());
            }
        }
        // Machine outputs first, so a CreateTopic is answered only once its replicas exist here.
        let touched: Vec<TopicPartition> = active
            .into_iter()
            .filter(|tp| self.replicas.get(tp).is_some_and(|r| r.has_output()))
            .collect();
        self.after_input(&touched, replies);
        Ok(())
    }

    /// Phase 2 of a step: one sync per dirty file.
    fn sync_active(&mut self, active: &BTreeSet<TopicPartition>) -> Result<(), NodeError> {
        for tp in active {
            let Some(replica) = self.replicas.get_mut(tp) else {
                continue;
            };
            if replica.storage().is_dirty() {
                self.stats.syncs += 1;
                replica.sync_storage().map_err(storage_error(tp))?;
            }
        }
        Ok(())
    }

    /// Phase 3 of a step: persisted messages, acknowledgements, applying.
    fn finish_readies(
        &mut self,
        readies: Vec<(TopicPartition, Ready)>,
        outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
    ) -> Result<Replies, NodeError> {
        let mut replies = Replies::new();
        for (tp, rd) in readies {
            let replica = self.replicas.get_mut(&tp).expect("ready taken above");
            let to = Recipients::of(replica);
            let recovery = &mut self.recovery;
            let mut send = |m: RaftMessage| to.queue(outbox, recovery, &tp, m);
            replica
                .ready_finish(rd, &mut send, &mut self.rng, &mut replies)
                .map_err(storage_error(&tp))?;
        }
        Ok(replies)
    }

    /// Drains one reply.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<(RequestId, Response)> {
        self.replies.pop_front()
    }

    /// Answers every pending produce as `Indeterminate`; used before dropping the node on a
    /// graceful stop (a crash just loses them, as a real crash does).
    pub fn abandon_pending(&mut self) {
        let mut replies = Replies::new();
        for r in self.replicas.values_mut() {
            r.abandon_pending(&mut replies);
        }
        let tps: Vec<TopicPartition> = self.replicas.keys().cloned().collect();
        self.after_input(&tps, replies);
    }

    /// The machine of a partition the metadata log created: a group coordinator on each
    /// `__consumer_offsets` partition, the producer table on every data partition.
    fn machine_for(&self, tp: &TopicPartition) -> Option<Box<dyn PartitionMachine>> {
        if tp.topic == CONSUMER_OFFSETS_TOPIC {
            return Some(Box::new(GroupCoordinator::new(self.config.group.clone())));
        }
        if is_internal_topic(&tp.topic) {
            return None;
        }
        Some(Box::new(ProducerTable::new(
            self.config.producer_expiration_ms,
        )))
    }

    fn open_replica(
        &mut self,
        tp: TopicPartition,
        voters: &[NodeId],
        learners: &[NodeId],
        configs: &BTreeMap<String, String>,
        machine: Option<Box<dyn PartitionMachine>>,
    ) -> Result<(), NodeError> {
        let machine = machine.or_else(|| self.machine_for(&tp));
        if deletion_unfinished(&*self.disk, &tp.dir()) {
            slog::warn!(self.logger, "finishing a deletion a crash cut short"; "tp" => %tp);
            self.stats.deletions_finished += 1;
            remove_dir_files(&*self.disk, &tp.dir());
        }
        let defaults = self.topic_defaults();
        let mut log = log_config_for(&self.config.log, &defaults, configs);
        if is_internal_topic(&tp.topic) {
            // Their machines' snapshots bound the internal logs (compacted behind them);
            // retention by size or age means nothing for them.
            log.retention_ms = None;
            log.retention_bytes = None;
        }
        let needs_history = machine.as_ref().is_none_or(|m| m.compacts_log());
        let (storage, report) = PartitionStorage::open_with(
            self.disk.clone(),
            &tp.dir(),
            log,
            voters,
            learners,
            needs_history,
        )
        .map_err(storage_error(&tp))?;
        let replica = Replica::open(
            self.config.id,
            tp.clone(),
            storage,
            self.config.replica.clone(),
            machine,
            &mut self.rng,
            &self.logger,
        )
        .map_err(storage_error(&tp))?;
        let mut replica = replica;
        replica.set_settings(TopicSettings::resolve(&defaults, configs));
        self.replicas.insert(tp.clone(), replica);
        self.active.insert(tp.clone());
        self.replica_set_version += 1;
        self.replica_born
            .insert(tp.clone(), self.replica_set_version);
        self.open_reports.insert(tp, report);
        Ok(())
    }

    /// Deletes the files of partitions this node no longer hosts (a delete interrupted by a
    /// crash, or a topic deleted while the node was down), once the image can be trusted to
    /// name every topic (see `leftovers_pending`).
    fn remove_leftover_partitions(&mut self) {
        if !self.leftovers_pending || self.config.metadata_voters.is_empty() {
            return;
        }
        let meta = metadata_tp();
        if self.replicas.get(&meta).is_none_or(|r| r.is_repairing()) {
            return;
        }
        // An image that does not register this node is no proof that the directory's
        // partitions are leftovers: the directory may have been started under another id
        // (the partitions would be someone else's replicas). Wait for the registration.
        let unregistered = !self.metadata().brokers.contains_key(&self.id);
        if unregistered && !self.metadata().topics.is_empty() {
            return;
        }
        self.leftovers_pending = false;
        let dirs = self.disk.list_dirs("").unwrap_or_default();
        for d in dirs {
            if !self.replicas.keys().any(|tp| tp.dir() == d) && looks_like_partition_dir(&d) {
                slog::info!(self.logger, "removing leftover partition files"; "dir" => &d);
                remove_dir_files(&*self.disk, &d);
            }
        }
    }

    /// This broker's heartbeat: its registration, the leaderships it holds, and the topics
    /// clients asked to auto-create.
    fn build_heartbeat(&mut self) -> BrokerHeartbeat {
        let registration = self.registration();
        let leaders = self
            .replicas
            .values()
            // Every partition but the metadata log's (whose leader is the controller itself):
            // brokers that do not host `__consumer_offsets-N` answer FindCoordinator from it.
            .filter(|r| *r.tp() != metadata_tp() && r.is_leader() && !r.is_repairing())
            .map(|r| PartitionLeader {
                topic: r.tp().topic.clone(),
                partition: r.tp().partition,
                leader: self.id,
                epoch: r.term(),
                isr: r.isr(),
            })
            .collect();
        BrokerHeartbeat {
            registration,
            leaders,
            create_topics: std::mem::take(&mut self.auto_create),
            producer_ids: self.producer_ids.wanted().cloned(),
            moves_done: self.moves_done(),
        }
    }

    /// This broker's registration (none without an endpoint).
    fn registration(&self) -> Option<RegisterBroker> {
        self.config.endpoint.as_ref().map(|e| {
            let (raft_host, raft_port) = e.raft.clone().unwrap_or_default();
            RegisterBroker {
                id: self.id,
                host: e.host.clone(),
                port: e.port as u32,
                rack: e.rack.clone(),
                // Distinct per start (module docs of `NodeConfig::seed`).
                incarnation: self.config.seed,
                raft_host,
                raft_port: raft_port as u32,
                fenced: false,
            }
        })
    }

    /// Takes the learner recovery rate the cluster sets (`raft.learner.recovery.rate`, else the
    /// default), then refills the bucket for the time since the last tick.
    fn refill_recovery(&mut self, now_ms: Millis) {
        let rate = self
            .metadata()
            .broker_configs
            .get("")
            .and_then(|c| c.get(throttle::LEARNER_RECOVERY_CONFIG))
            .and_then(|v| throttle::parse_rate(v))
            .unwrap_or(LEARNER_RECOVERY_BYTES_PER_S_DEFAULT);
        if rate != self.recovery.rate_bytes_per_s() {
            self.recovery.set_rate(rate);
        }
        self.recovery.refill(now_ms);
    }

    /// Sends this broker's heartbeat to the controller (handled in place when this node is the
    /// controller). Without a metadata group or an endpoint there is nothing to report.
    fn send_heartbeat(&mut self) {
        if self.config.endpoint.is_none() || self.config.metadata_voters.is_empty() {
            return;
        }
        let Some(controller) = self.controller() else {
            return;
        };
        self.last_heartbeat_ms = Some(self.now_ms);
        let hb = self.build_heartbeat();
        self.stats.heartbeats_sent += 1;
        if controller == self.id {
            self.deliver_heartbeat(self.id, hb);
        } else {
            self.heartbeat_out = Some((controller, hb));
        }
    }

    fn flush(
        &mut self,
        from: NodeId,
        outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
        heartbeat: &mut Option<(NodeId, BrokerHeartbeat)>,
        net: &mut impl Network,
    ) {
        for (to, messages) in std::mem::take(outbox) {
            let mut heartbeat_to = match heartbeat.take() {
                Some((hb_to, hb)) if hb_to == to => Some(hb),
                other => {
                    *heartbeat = other;
                    None
                }
            };
            for messages in split_by_size(messages, ENVELOPE_BYTES_MAX) {
                self.stats.envelopes_sent += 1;
                self.stats.raft_messages_sent += messages.len() as u64;
                net.send(Envelope {
                    from,
                    to,
                    messages,
                    heartbeat: heartbeat_to.take(),
                    cluster_id: self.cluster_id().map(str::to_string),
                    ..Envelope::default()
                });
            }
        }
    }
}

/// Splits one step's messages for a peer into envelopes of at most `bytes_max` of raft
/// payload each (a larger message goes alone), in order. A leader catching up a replica puts
/// up to `max_inflight_msgs` appends of `max_size_per_msg` in one step: as one envelope that
/// is hundreds of MiB, more than a transport frame may carry. Always at least one envelope.
fn split_by_size(messages: Vec<GroupMessage>, bytes_max: usize) -> Vec<Vec<GroupMessage>> {
    let mut out: Vec<Vec<GroupMessage>> = vec![Vec::new()];
    let mut bytes = 0;
    for m in messages {
        let len = m.raft.len();
        let last = out.last_mut().expect("never empty");
        if !last.is_empty() && bytes + len > bytes_max {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        out.last_mut().expect("never empty").push(m);
    }
    out
}

/// Wraps a partition's storage failure as the node's fail-stop error.
fn storage_error(tp: &TopicPartition) -> impl FnOnce(StorageError) -> NodeError + '_ {
    move |source| NodeError::Storage {
        tp: tp.clone(),
        source,
    }
}

/// Whether a raft message makes its receiver write log data (appends, snapshots).
fn carries_data(t: raft::eraftpb::MessageType) -> bool {
    use raft::eraftpb::MessageType as T;
    matches!(t, T::MsgAppend | T::MsgSnapshot)
}

/// What one replica's outgoing messages need to know about their recipients.
struct Recipients {
    /// A replica in repair mode sends no vote requests (see `storage` module docs).
    repairing: bool,
    /// Learners of the partition this node leads: log data for them goes through the
    /// recovery throttle.
    learners: Vec<NodeId>,
}

impl Recipients {
    fn of(replica: &Replica) -> Recipients {
        let learners = if replica.is_leader() && replica.has_learners() {
            replica.conf_state().learners
        } else {
            Vec::new()
        };
        Recipients {
            repairing: replica.is_repairing(),
            learners,
        }
    }

    /// Queues one raft message for its peer, or holds it in the throttle.
    fn queue(
        &self,
        outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
        recovery: &mut throttle::RecoveryThrottle,
        tp: &TopicPartition,
        m: RaftMessage,
    ) {
        if self.repairing && is_vote_request(m.get_msg_type()) {
            return;
        }
        let to = m.to;
        let mut encoded = GroupMessage::encode(tp, &m);
        if carries_data(m.get_msg_type()) && self.learners.contains(&to) {
            match recovery.admit(to, encoded) {
                Some(m) => encoded = m,
                None => return,
            }
        }
        outbox.entry(to).or_default().push(encoded);
    }
}

/// The log config of a partition: the node's log config, with each retention and segment
/// setting that the topic overrides or the broker defaults name taken from those (topic first);
/// the node's log config stands for Kafka's defaults (the simulator runs small segments).
pub fn log_config_for(
    base: &LogConfig,
    defaults: &BrokerDefaults,
    configs: &BTreeMap<String, String>,
) -> LogConfig {
    let settings = TopicSettings::resolve(defaults, configs);
    let set = |name: &str| {
        let def = topic_config::find(name).expect("a registered config");
        topic_config::effective(def, configs, defaults).1 != topic_config::Source::Default
    };
    let mut c = base.clone();
    if set("retention.ms") || set("cleanup.policy") {
        c.retention_ms = settings.retention_ms;
    }
    if set("retention.bytes") || set("cleanup.policy") {
        c.retention_bytes = settings.retention_bytes;
    }
    if set("segment.bytes") {
        c.segment_bytes = settings.segment_bytes;
    }
    if set("segment.ms") {
        c.segment_ms = settings.segment_ms;
    }
    if set("index.interval.bytes") {
        c.index_interval_bytes = settings.index_interval_bytes;
    }
    c
}

/// Whether a directory name is `<topic>-<partition>` (so cleanup never touches anything else).
fn looks_like_partition_dir(d: &str) -> bool {
    d.rsplit_once('-')
        .is_some_and(|(t, p)| crate::types::valid_topic_name(t) && p.parse::<u32>().is_ok())
}

/// Removes every file of a partition directory (best effort: leftovers are retried at the
/// next start).
/// Marks a partition directory whose files are being deleted: written and synced before the
/// first removal, removed after the last. A crash in between leaves it, and the next open of
/// that directory (a restart, or a new topic of the same name) finishes the deletion instead of
/// reading half a deleted log.
const DELETING_MARKER: &str = "DELETING";

/// Deletes a partition's files, crash-safely (see [`DELETING_MARKER`]). Best effort: a file
/// that cannot be removed now is removed at the next open or by the leftover sweep.
fn remove_dir_files(disk: &dyn Disk, dir: &str) {
    let marker = crate::disk::join_path(dir, DELETING_MARKER);
    let _ = disk.create(&marker).and_then(|_| disk.sync(&marker));
    for name in disk.list(dir).unwrap_or_default() {
        if name != DELETING_MARKER {
            let _ = disk.remove(&crate::disk::join_path(dir, &name));
        }
    }
    let _ = disk.remove(&marker);
}

/// Whether a deletion of `dir`'s files was cut short by a crash.
fn deletion_unfinished(disk: &dyn Disk, dir: &str) -> bool {
    disk.exists(&crate::disk::join_path(dir, DELETING_MARKER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> GroupMessage {
        GroupMessage {
            topic: "t".into(),
            partition: 0,
            raft: bytes::Bytes::from(vec![0u8; bytes]),
        }
    }

    #[test]
    fn test_envelopes_are_split_by_size_in_order() {
        let sizes = |v: &[Vec<GroupMessage>]| -> Vec<Vec<usize>> {
            v.iter()
                .map(|e| e.iter().map(|m| m.raft.len()).collect())
                .collect()
        };
        let split = split_by_size((1..=5).map(message).collect(), 6);
        assert_eq!(sizes(&split), vec![vec![1, 2, 3], vec![4], vec![5]]);
        let split = split_by_size(vec![message(10), message(1)], 6);
        assert_eq!(
            sizes(&split),
            vec![vec![10], vec![1]],
            "a large one goes alone"
        );
        assert_eq!(
            split_by_size(Vec::new(), 6).len(),
            1,
            "a heartbeat still goes"
        );
    }
}
