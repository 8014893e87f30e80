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

use crate::api::{Acks, ClientError, Request, RequestId, Response, INTERNAL_REQUEST};
use crate::disk::Disk;
use crate::log::LogConfig;
use crate::metadata::{
    check_assignment, is_internal_topic, metadata_tp, place_replicas, records_of_batch, topic_id,
    CreateTopic, DeleteTopic, FenceBroker, ImageChange, LeaderChanges, LeaderMeta, MetadataImage,
    MetadataRecord, PartitionLeader, PlacementError, RecordKind, RegisterBroker,
};
use crate::network::{AutoCreateTopic, BrokerHeartbeat, Envelope, GroupMessage, Network};
use crate::replica::{is_vote_request, Replica, ReplicaConfig, Replies};
use crate::storage::{OpenReport, PartitionStorage, StorageError};
use crate::types::{Millis, NodeId, TopicPartition};

/// A partition this node hosts and its raft voters.
#[derive(Clone, Debug)]
pub struct PartitionSpec {
    pub tp: TopicPartition,
    pub voters: Vec<NodeId>,
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
}

/// Where clients reach a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// Most leaderships one LeaderChanges record carries (bounds a record's size).
const LEADERS_PER_RECORD: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A partition's storage failed; the node must be restarted from disk (fail-stop).
    #[error("storage of {tp} failed: {source}")]
    Storage {
        tp: TopicPartition,
        #[source]
        source: StorageError,
    },
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
    /// The metadata log applied so far (empty without a metadata group).
    image: MetadataImage,
    /// Admin requests proposed to the metadata log, by request id: their produce reply is
    /// translated into the admin reply.
    admin_pending: BTreeMap<RequestId, AdminPending>,
    last_preferred_check_ms: Millis,
    /// Free space fell below `min_free_bytes` at the last check.
    disk_low: bool,
    /// Free space fell below half of `min_free_bytes`: follower replicas stop taking appends.
    disk_critical: bool,
    /// The time of the last tick: the node's notion of now between ticks.
    now_ms: Millis,
    last_heartbeat_ms: Option<Millis>,
    /// A heartbeat for the controller, sent with the next step's envelopes.
    heartbeat_out: Option<(NodeId, BrokerHeartbeat)>,
    /// Topics clients asked to auto-create, for the next heartbeat.
    auto_create: Vec<AutoCreateTopic>,
    /// What this node does as the controller (empty unless it leads the metadata partition).
    controller: ControllerState,
    next_internal: u64,
    /// Replicas that may have a `Ready` or unsynced writes: only these are visited by
    /// [`Node::step`] and [`Node::has_ready`]. Every input that can give a replica work marks
    /// it; a tick re-checks every replica, so a missed mark would cost at most one tick (the
    /// simulator's fixed-seed traces, identical with and without this set, say none is missed).
    /// With thousands of mostly idle partitions, a step otherwise walks all of them for the few
    /// a message touched.
    active: BTreeSet<TopicPartition>,
}

/// An admin request whose metadata record is being committed.
#[derive(Debug, Clone)]
enum AdminPending {
    Create(String),
    Delete(String),
    /// The controller's own proposal (registration, fencing, leaderships, auto-create).
    Internal,
}

/// The controller's soft state, rebuilt whenever this node starts a new term as the metadata
/// leader. The caches stop the same record being proposed on every heartbeat while the first
/// is in flight; an entry older than the session timeout no longer blocks a retry, so a lost
/// proposal is retried.
#[derive(Debug, Default)]
struct ControllerState {
    /// The metadata term this state belongs to (0: not the controller).
    term: u64,
    /// When each broker was last heard from.
    last_seen: BTreeMap<NodeId, Millis>,
    registering: BTreeMap<NodeId, (RegisterBroker, Millis)>,
    fencing: BTreeMap<NodeId, Millis>,
    leaders: BTreeMap<TopicPartition, (LeaderMeta, Millis)>,
    creating: BTreeMap<String, Millis>,
}

impl ControllerState {
    /// Drops the caches of proposals in flight (one failed, so any may have), keeping the term
    /// and the liveness record.
    fn forget_proposals(&mut self) {
        self.registering.clear();
        self.fencing.clear();
        self.leaders.clear();
        self.creating.clear();
    }
}

/// Whether a cache entry made at `at` still blocks a new proposal at `now`.
fn recent(at: Millis, now: Millis, window: Millis) -> bool {
    now - at < window
}

impl Node {
    /// Opens the node: the metadata partition first (replaying its committed records into the
    /// image), then every partition the fixed layout or the image assigns to this node.
    pub fn open(
        config: NodeConfig,
        disk: Rc<dyn Disk>,
        logger: &Logger,
    ) -> Result<Node, NodeError> {
        let logger = logger.new(o!("node" => config.id));
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
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
            image: MetadataImage::default(),
            admin_pending: BTreeMap::new(),
            last_preferred_check_ms: 0,
            disk_low: false,
            disk_critical: false,
            now_ms: 0,
            last_heartbeat_ms: None,
            heartbeat_out: None,
            auto_create: Vec::new(),
            controller: ControllerState::default(),
            next_internal: 0,
            active: BTreeSet::new(),
        };
        let voters = node.config.metadata_voters.clone();
        let member = voters.contains(&node.id) || node.config.brokers.contains(&node.id);
        if !voters.is_empty() && member {
            let mut learners: Vec<NodeId> = node
                .config
                .brokers
                .iter()
                .copied()
                .filter(|b| !voters.contains(b))
                .collect();
            learners.sort_unstable();
            learners.dedup();
            node.open_replica(metadata_tp(), &voters, &learners, &BTreeMap::new())?;
            node.replay_metadata()?;
        }
        let mut wanted: BTreeMap<TopicPartition, (Vec<NodeId>, BTreeMap<String, String>)> =
            BTreeMap::new();
        for spec in &node.config.partitions {
            assert!(
                spec.voters.contains(&node.config.id),
                "{} hosts {}",
                node.config.id,
                spec.tp
            );
            wanted.insert(spec.tp.clone(), (spec.voters.clone(), BTreeMap::new()));
        }
        for t in node.image.topics.values() {
            for (p, replicas) in &t.partitions {
                if replicas.contains(&node.config.id) {
                    let tp = TopicPartition::new(t.name.clone(), *p);
                    wanted.insert(tp, (replicas.clone(), t.configs.clone()));
                }
            }
        }
        for (tp, (voters, configs)) in wanted {
            node.open_replica(tp, &voters, &[], &configs)?;
        }
        node.remove_leftover_partitions();
        Ok(node)
    }

    /// The metadata image (topics and assignments) this node has applied.
    pub fn metadata(&self) -> &MetadataImage {
        &self.image
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

    /// What recovery found for each partition when this node was opened.
    pub fn open_reports(&self) -> &BTreeMap<TopicPartition, OpenReport> {
        &self.open_reports
    }

    /// Feeds an envelope from a peer. Undecodable or misaddressed messages are counted and
    /// dropped: they come from the network and must never panic.
    pub fn handle_envelope(&mut self, envelope: Envelope) {
        if envelope.to != self.id {
            self.stats.bad_messages += 1;
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
            self.handle_heartbeat(envelope.from, hb);
        }
    }

    /// Feeds a client request. The reply comes from [`Node::poll_reply`], now or after later
    /// steps.
    pub fn handle_request(&mut self, now_ms: Millis, id: RequestId, request: Request) {
        let tp = match &request {
            Request::Produce { tp, .. }
            | Request::Fetch { tp, .. }
            | Request::ListOffsets { tp, .. }
            | Request::OffsetForLeaderEpoch { tp, .. } => tp.clone(),
            Request::CreateTopic { .. } | Request::DeleteTopic { .. } => {
                return self.handle_admin(now_ms, id, request);
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
                let reply = self.request_auto_create(AutoCreateTopic {
                    name: name.clone(),
                    partitions: *partitions,
                    replication_factor: *replication_factor,
                });
                self.replies.push_back((id, Response::CreateTopic(reply)));
                return;
            }
        };
        if is_internal_topic(&tp.topic) && matches!(request, Request::Produce { .. }) {
            // Only the cluster writes its internal topics (Kafka: INVALID_TOPIC_EXCEPTION).
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
                self.active.insert(tp);
                self.push_replies(replies);
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
            | Request::FetchMany { .. }
            | Request::AutoCreateTopic { .. } => unreachable!("handled above"),
        };
        self.replies.push_back((id, reply));
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

    /// Advances raft's logical clock by one tick for every replica, expires produces past their
    /// deadline, and runs retention every `retention_check_ms`.
    pub fn tick(&mut self, now_ms: Millis) -> Result<(), NodeError> {
        self.now_ms = now_ms;
        let free = self.disk.available_bytes();
        self.disk_low = free.is_some_and(|f| f < self.config.min_free_bytes);
        self.disk_critical = free.is_some_and(|f| f < self.config.min_free_bytes / 2);
        let mut replies = Replies::new();
        for (tp, replica) in self.replicas.iter_mut() {
            replica.tick(now_ms, &mut self.rng, &mut replies);
            if replica.has_work() {
                self.active.insert(tp.clone());
            }
        }
        self.push_replies(replies);
        if self
            .last_heartbeat_ms
            .is_none_or(|t| now_ms - t >= self.config.heartbeat_ms)
        {
            self.send_heartbeat();
        }
        self.controller_tick();
        if let Some(every) = self.config.preferred_leader_check_ms {
            if now_ms - self.last_preferred_check_ms >= every {
                self.last_preferred_check_ms = now_ms;
                self.restore_preferred_leaders();
            }
        }
        if now_ms - self.last_retention_ms >= self.config.retention_check_ms {
            self.last_retention_ms = now_ms;
            for (tp, replica) in self.replicas.iter_mut() {
                replica
                    .apply_retention(now_ms)
                    .map_err(|source| NodeError::Storage {
                        tp: tp.clone(),
                        source,
                    })?;
                if replica.has_work() {
                    self.active.insert(tp.clone());
                }
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

    /// A number that changes whenever a replica's term, role or leader changes, or the
    /// metadata image or the set of replicas does: the runtime rebuilds its cluster view only
    /// then, instead of walking every partition every few milliseconds.
    pub fn view_version(&self) -> u64 {
        let roles = self
            .replicas
            .values()
            .fold(0u64, |acc, r| acc.wrapping_add(r.role_changes()));
        roles
            .wrapping_add(self.image.records_applied.wrapping_mul(1_000_003))
            .wrapping_add((self.replicas.len() as u64).wrapping_mul(0x9e37_79b9))
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
        for (tp, r) in self.replicas.iter_mut() {
            if *tp == meta {
                continue;
            }
            let Some(pref) = r.preferred_leader() else {
                continue;
            };
            if r.is_leader() && pref != self.id && r.in_sync_replicas().contains(&pref) {
                r.transfer_leadership(pref, &mut self.rng);
                self.active.insert(tp.clone());
            }
        }
    }

    /// Whether [`Node::step`] has work to do.
    pub fn has_ready(&self) -> bool {
        self.heartbeat_out.is_some()
            || self
                .active
                .iter()
                .any(|tp| self.replicas.get(tp).is_some_and(|r| r.has_work()))
    }

    /// The shared driver: one pass of the `Ready` protocol over every replica (module docs).
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
            let repairing = replica.is_repairing();
            let mut send = |m: RaftMessage| queue(&mut outbox, tp, repairing, m);
            let rd = replica
                .ready_write(&mut send)
                .map_err(|source| NodeError::Storage {
                    tp: tp.clone(),
                    source,
                })?;
            if let Some(rd) = rd {
                readies.push((tp.clone(), rd));
            }
        }
        let mut heartbeat = self.heartbeat_out.take();
        if let Some((to, _)) = &heartbeat {
            // Rides with this step's raft messages for the controller, or goes alone.
            outbox.entry(*to).or_default();
        }
        self.flush(id, &mut outbox, &mut heartbeat, net);
        // Phase 2: one sync per dirty file, for every partition at once.
        for tp in &active {
            let Some(replica) = self.replicas.get_mut(tp) else {
                continue;
            };
            if replica.storage().is_dirty() {
                self.stats.syncs += 1;
                replica
                    .sync_storage()
                    .map_err(|source| NodeError::Storage {
                        tp: tp.clone(),
                        source,
                    })?;
            }
        }
        // Phase 3: what had to wait for durability.
        let mut replies = Replies::new();
        for (tp, rd) in readies {
            let replica = self.replicas.get_mut(&tp).expect("ready taken above");
            let repairing = replica.is_repairing();
            let mut send = |m: RaftMessage| queue(&mut outbox, &tp, repairing, m);
            replica.ready_finish(rd, &mut send, &mut self.rng, &mut replies);
        }
        self.flush(id, &mut outbox, &mut None, net);
        // What still has work (e.g. entries committed by this step, to apply) stays active.
        for tp in active {
            if self.replicas.get(&tp).is_some_and(|r| r.has_work()) {
                self.active.insert(tp);
            }
        }
        // Apply metadata first, so a CreateTopic is answered only once its replicas exist here.
        self.drain_metadata()?;
        self.push_replies(replies);
        Ok(())
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
        self.push_replies(replies);
    }

    fn open_replica(
        &mut self,
        tp: TopicPartition,
        voters: &[NodeId],
        learners: &[NodeId],
        configs: &BTreeMap<String, String>,
    ) -> Result<(), NodeError> {
        let wrap = |source| NodeError::Storage {
            tp: tp.clone(),
            source,
        };
        let mut log = log_config_for(&self.config.log, configs);
        if tp == metadata_tp() {
            // The image is rebuilt by replaying the whole log: deleting old segments would
            // forget topics, whose data `remove_leftover_partitions` would then delete.
            log.retention_ms = None;
            log.retention_bytes = None;
        }
        let (storage, report) =
            PartitionStorage::open(self.disk.clone(), &tp.dir(), log, voters, learners)
                .map_err(wrap)?;
        let mut replica = Replica::open(
            self.config.id,
            tp.clone(),
            storage,
            &report,
            self.config.replica.clone(),
            &mut self.rng,
            &self.logger,
        )
        .map_err(wrap)?;
        if tp == metadata_tp() {
            replica.enable_tap();
        }
        self.replicas.insert(tp.clone(), replica);
        self.active.insert(tp.clone());
        self.open_reports.insert(tp, report);
        Ok(())
    }

    /// Rebuilds the image from the metadata log's committed entries (raft will not re-apply
    /// them: a replica restarts with `applied` = its commit index).
    fn replay_metadata(&mut self) -> Result<(), NodeError> {
        let tp = metadata_tp();
        let replica = self.replicas.get(&tp).expect("metadata replica opened");
        let log = replica.storage().log();
        let commit = replica.storage().state().commit.min(log.last_index());
        let mut next = log.first_index();
        let mut batches = Vec::new();
        while next <= commit {
            let entries =
                crate::storage::with_retries(|| log.entries(next, commit + 1, Some(1 << 20)))
                    .map_err(|e| NodeError::Storage {
                        tp: tp.clone(),
                        source: e.into(),
                    })?;
            for e in &entries {
                if e.record_count > 0 {
                    batches.push(e.data.clone());
                }
            }
            next = entries.last().map_or(commit + 1, |e| e.index + 1);
        }
        for b in batches {
            self.apply_metadata_batch(&b, false)?;
        }
        Ok(())
    }

    /// Applies one committed metadata batch to the image and, when `act`, creates or deletes
    /// the local replicas it changes.
    fn apply_metadata_batch(&mut self, batch: &[u8], act: bool) -> Result<(), NodeError> {
        let records = match records_of_batch(batch) {
            Ok(r) => r,
            Err(e) => {
                // Committed, checksummed and validated at append: a record that does not decode
                // is a bug or a newer version; skip it loudly rather than stop the cluster.
                slog::error!(self.logger, "undecodable metadata record"; "error" => %e);
                return Ok(());
            }
        };
        for r in &records {
            for change in self.image.apply(r) {
                if act {
                    self.apply_change(change)?;
                }
            }
        }
        Ok(())
    }

    fn apply_change(&mut self, change: ImageChange) -> Result<(), NodeError> {
        match change {
            ImageChange::PartitionAdded {
                tp,
                replicas,
                configs,
            } => {
                if replicas.contains(&self.id) && !self.replicas.contains_key(&tp) {
                    slog::info!(self.logger, "creating replica"; "tp" => %tp);
                    self.open_replica(tp, &replicas, &[], &configs)?;
                }
            }
            ImageChange::PartitionRemoved { tp } => {
                if let Some(mut r) = self.replicas.remove(&tp) {
                    slog::info!(self.logger, "deleting replica"; "tp" => %tp);
                    let mut replies = Replies::new();
                    r.abandon_pending(&mut replies);
                    self.push_replies(replies);
                    self.open_reports.remove(&tp);
                    drop(r);
                    remove_dir_files(&*self.disk, &tp.dir());
                }
            }
        }
        Ok(())
    }

    /// Deletes the files of partitions this node no longer hosts (a delete interrupted by a
    /// crash, or a topic deleted while the node was down).
    fn remove_leftover_partitions(&mut self) {
        if self.config.metadata_voters.is_empty() {
            return;
        }
        let dirs = self.disk.list_dirs("").unwrap_or_default();
        for d in dirs {
            if !self.replicas.keys().any(|tp| tp.dir() == d) && looks_like_partition_dir(&d) {
                slog::info!(self.logger, "removing leftover partition files"; "dir" => &d);
                remove_dir_files(&*self.disk, &d);
            }
        }
    }

    /// Handles CreateTopic / DeleteTopic: validated here, then proposed to the metadata log;
    /// the reply comes when the record commits.
    fn handle_admin(&mut self, now_ms: Millis, id: RequestId, request: Request) {
        let meta_tp = metadata_tp();
        let Some(meta) = self.replicas.get(&meta_tp) else {
            let e = ClientError::NotController { controller: None };
            self.replies
                .push_back((id, Response::error_for(&request, e)));
            return;
        };
        if !meta.is_leader() {
            let e = ClientError::NotController {
                controller: meta.leader(),
            };
            self.replies
                .push_back((id, Response::error_for(&request, e)));
            return;
        }
        let in_flight = |name: &str, pending: &BTreeMap<RequestId, AdminPending>| {
            pending.values().any(|p| match p {
                AdminPending::Create(n) | AdminPending::Delete(n) => n == name,
                AdminPending::Internal => false,
            })
        };
        let (record, pending) = match &request {
            Request::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                assignments,
                validate_only,
            } => {
                if is_internal_topic(name) {
                    let e = ClientError::InvalidRequest(format!(
                        "{name} is an internal topic; only the cluster creates it"
                    ));
                    self.replies.push_back((id, Response::CreateTopic(Err(e))));
                    return;
                }
                if self.image.topics.contains_key(name) || in_flight(name, &self.admin_pending) {
                    let e = ClientError::TopicAlreadyExists(name.clone());
                    self.replies.push_back((id, Response::CreateTopic(Err(e))));
                    return;
                }
                if let Err(e) = check_topic_configs(configs) {
                    self.replies.push_back((id, Response::CreateTopic(Err(e))));
                    return;
                }
                let placed = if assignments.is_empty() {
                    place_replicas(
                        &self.image,
                        &self.image.placeable_brokers(&self.config.brokers),
                        name,
                        *partitions,
                        *replication_factor,
                    )
                } else {
                    check_assignment(&self.image, &self.config.brokers, name, assignments)
                };
                let assignments = match placed {
                    Ok(a) => a,
                    Err(e) => {
                        let e = match e {
                            PlacementError::InvalidTopic(n) => ClientError::InvalidTopic(n),
                            PlacementError::InvalidPartitions(p) => {
                                ClientError::InvalidPartitions(p)
                            }
                            PlacementError::InvalidReplicationFactor { asked, brokers } => {
                                ClientError::InvalidReplicationFactor { asked, brokers }
                            }
                            PlacementError::InvalidAssignment(m) => {
                                ClientError::InvalidReplicaAssignment(m)
                            }
                        };
                        self.replies.push_back((id, Response::CreateTopic(Err(e))));
                        return;
                    }
                };
                if *validate_only {
                    self.replies.push_back((id, Response::CreateTopic(Ok(()))));
                    return;
                }
                let record = MetadataRecord {
                    kind: Some(RecordKind::CreateTopic(CreateTopic {
                        name: name.clone(),
                        topic_id: topic_id(name, self.image.records_applied).to_vec(),
                        partitions: assignments,
                        configs: configs.clone(),
                    })),
                };
                (record, AdminPending::Create(name.clone()))
            }
            Request::DeleteTopic { name } => {
                if is_internal_topic(name) {
                    let e = ClientError::InvalidTopic(name.clone());
                    self.replies.push_back((id, Response::DeleteTopic(Err(e))));
                    return;
                }
                if !self.image.topics.contains_key(name) || in_flight(name, &self.admin_pending) {
                    let e = ClientError::UnknownTopic(name.clone());
                    self.replies.push_back((id, Response::DeleteTopic(Err(e))));
                    return;
                }
                let record = MetadataRecord {
                    kind: Some(RecordKind::DeleteTopic(DeleteTopic { name: name.clone() })),
                };
                (record, AdminPending::Delete(name.clone()))
            }
            _ => unreachable!("handle_admin gets admin requests only"),
        };
        self.admin_pending.insert(id, pending);
        let batch = record.to_batch(now_ms);
        let mut replies = Replies::new();
        let meta = self.replicas.get_mut(&meta_tp).expect("checked above");
        meta.produce(now_ms, id, Acks::All, batch, &mut self.rng, &mut replies);
        self.active.insert(meta_tp);
        self.push_replies(replies);
    }

    /// This broker's heartbeat: its registration, the leaderships it holds, and the topics
    /// clients asked to auto-create.
    fn build_heartbeat(&mut self) -> BrokerHeartbeat {
        let registration = self.config.endpoint.as_ref().map(|e| RegisterBroker {
            id: self.id,
            host: e.host.clone(),
            port: e.port as u32,
            rack: e.rack.clone(),
            // Distinct per start (module docs of `NodeConfig::seed`).
            incarnation: self.config.seed,
        });
        let leaders = self
            .replicas
            .values()
            .filter(|r| !is_internal_topic(&r.tp().topic) && r.is_leader() && !r.is_repairing())
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
        }
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
            self.handle_heartbeat(self.id, hb);
        } else {
            self.heartbeat_out = Some((controller, hb));
        }
    }

    /// Whether this node is the controller; resets the controller's soft state when it starts
    /// a new term (every broker then gets a full session timeout to report in).
    fn controller_active(&mut self) -> bool {
        let Some(meta) = self.replicas.get(&metadata_tp()) else {
            return false;
        };
        if !meta.is_leader() {
            if self.controller.term != 0 {
                self.controller = ControllerState::default();
            }
            return false;
        }
        let term = meta.term();
        if self.controller.term != term {
            let now = self.now_ms;
            let mut last_seen = BTreeMap::new();
            for b in self.image.brokers.keys().chain(self.config.brokers.iter()) {
                last_seen.insert(*b, now);
            }
            self.controller = ControllerState {
                term,
                last_seen,
                ..ControllerState::default()
            };
        }
        true
    }

    /// The controller's side of a heartbeat: liveness, (re-)registration, leaderships and
    /// auto-creation, each turned into a metadata record only when the image differs.
    fn handle_heartbeat(&mut self, from: NodeId, hb: BrokerHeartbeat) {
        if !self.controller_active() {
            self.stats.heartbeats_misrouted += 1;
            return;
        }
        let now = self.now_ms;
        let window = self.config.session_timeout_ms;
        self.controller.last_seen.insert(from, now);
        if let Some(reg) = hb.registration.filter(|r| r.id == from) {
            let current = self.image.brokers.get(&from).is_some_and(|b| {
                !b.fenced
                    && b.host == reg.host
                    && b.port as u32 == reg.port
                    && b.rack == reg.rack
                    && b.incarnation == reg.incarnation
            });
            let proposed = self
                .controller
                .registering
                .get(&from)
                .is_some_and(|(r, at)| *r == reg && recent(*at, now, window));
            if !current && !proposed {
                self.controller.registering.insert(from, (reg.clone(), now));
                self.controller.fencing.remove(&from);
                self.propose_internal(RecordKind::RegisterBroker(reg));
            }
        }
        let mut changes = Vec::new();
        for pl in hb.leaders {
            if pl.leader != from {
                continue;
            }
            let tp = TopicPartition::new(pl.topic.clone(), pl.partition);
            let known = self
                .image
                .topics
                .get(&pl.topic)
                .is_some_and(|t| t.partitions.contains_key(&pl.partition));
            if !known {
                continue;
            }
            let reported = LeaderMeta {
                leader: Some(from),
                epoch: pl.epoch,
                isr: pl.isr.clone(),
            };
            let recorded = self.image.leaders.get(&tp);
            if recorded == Some(&reported) || recorded.is_some_and(|r| r.epoch > pl.epoch) {
                continue;
            }
            let proposed = self
                .controller
                .leaders
                .get(&tp)
                .is_some_and(|(m, at)| *m == reported && recent(*at, now, window));
            if proposed {
                continue;
            }
            self.controller.leaders.insert(tp, (reported, now));
            changes.push(pl);
        }
        for chunk in changes.chunks(LEADERS_PER_RECORD) {
            self.propose_internal(RecordKind::LeaderChanges(LeaderChanges {
                leaders: chunk.to_vec(),
            }));
        }
        for t in hb.create_topics {
            self.controller_auto_create(t);
        }
    }

    /// Fences every broker not heard from within the session timeout.
    fn controller_tick(&mut self) {
        if !self.controller_active() {
            return;
        }
        let now = self.now_ms;
        let window = self.config.session_timeout_ms;
        let mut fence = Vec::new();
        for b in self.image.brokers.values() {
            if b.fenced || b.id == self.id {
                continue;
            }
            let seen = *self.controller.last_seen.entry(b.id).or_insert(now);
            let pending = self
                .controller
                .fencing
                .get(&b.id)
                .is_some_and(|at| recent(*at, now, window));
            if now - seen > window && !pending {
                fence.push(b.id);
            }
        }
        for id in fence {
            slog::info!(self.logger, "fencing broker"; "broker" => id);
            self.controller.fencing.insert(id, now);
            self.controller.registering.remove(&id);
            // Its leaderships are cleared by the record; let fresh reports rewrite them.
            self.controller
                .leaders
                .retain(|_, (m, _)| m.leader != Some(id));
            self.propose_internal(RecordKind::FenceBroker(FenceBroker { id }));
        }
    }

    /// A client used a missing topic and auto-creation is on: create it here if this node is
    /// the controller, else ask the controller with an immediate heartbeat.
    fn request_auto_create(&mut self, t: AutoCreateTopic) -> Result<(), ClientError> {
        if !crate::types::valid_topic_name(&t.name) || is_internal_topic(&t.name) {
            return Err(ClientError::InvalidTopic(t.name));
        }
        if self.image.topics.contains_key(&t.name) {
            return Ok(());
        }
        if self.controller_active() {
            self.controller_auto_create(t);
            return Ok(());
        }
        if !self.auto_create.iter().any(|a| a.name == t.name) {
            self.auto_create.push(t);
        }
        if self.controller().is_none() {
            return Err(ClientError::NotController { controller: None });
        }
        self.send_heartbeat();
        Ok(())
    }

    fn controller_auto_create(&mut self, t: AutoCreateTopic) {
        let now = self.now_ms;
        let pending = self
            .controller
            .creating
            .get(&t.name)
            .is_some_and(|at| recent(*at, now, self.config.session_timeout_ms));
        if self.image.topics.contains_key(&t.name) || pending {
            return;
        }
        let placed = place_replicas(
            &self.image,
            &self.image.placeable_brokers(&self.config.brokers),
            &t.name,
            t.partitions as i64,
            t.replication_factor as i64,
        );
        match placed {
            Ok(partitions) => {
                slog::info!(self.logger, "auto-creating topic"; "topic" => &t.name,
                    "partitions" => t.partitions, "replication_factor" => t.replication_factor);
                self.controller.creating.insert(t.name.clone(), now);
                self.propose_internal(RecordKind::CreateTopic(CreateTopic {
                    topic_id: topic_id(&t.name, self.image.records_applied).to_vec(),
                    name: t.name,
                    partitions,
                    configs: BTreeMap::new(),
                }));
            }
            Err(e) => {
                slog::warn!(self.logger, "cannot auto-create topic"; "topic" => &t.name, "error" => %e)
            }
        }
    }

    /// Proposes one of the controller's own records; its reply is swallowed (a failure clears
    /// the caches so the next heartbeat retries).
    fn propose_internal(&mut self, kind: RecordKind) {
        self.next_internal += 1;
        let id = INTERNAL_REQUEST | self.next_internal;
        self.admin_pending.insert(id, AdminPending::Internal);
        let batch = MetadataRecord { kind: Some(kind) }.to_batch(self.now_ms);
        let mut replies = Replies::new();
        let Some(meta) = self.replicas.get_mut(&metadata_tp()) else {
            return;
        };
        meta.produce(
            self.now_ms,
            id,
            Acks::All,
            batch,
            &mut self.rng,
            &mut replies,
        );
        self.active.insert(metadata_tp());
        self.push_replies(replies);
    }

    /// Queues replies, turning the produce replies of admin proposals into admin replies.
    fn push_replies(&mut self, replies: Replies) {
        for (id, resp) in replies {
            let resp = match (self.admin_pending.remove(&id), resp) {
                (Some(AdminPending::Create(_)), Response::Produce(r)) => {
                    Response::CreateTopic(r.map(|_| ()))
                }
                (Some(AdminPending::Delete(_)), Response::Produce(r)) => {
                    Response::DeleteTopic(r.map(|_| ()))
                }
                (Some(AdminPending::Internal), r) => {
                    if !matches!(r, Response::Produce(Ok(_))) {
                        // Lost or failed: let the next heartbeats propose it again.
                        slog::debug!(self.logger, "controller proposal failed"; "reply" => ?r);
                        self.controller.forget_proposals();
                    }
                    continue;
                }
                (Some(p), other) => panic!("admin request {p:?} got {other:?}"),
                (None, other) => other,
            };
            self.replies.push_back((id, resp));
        }
    }

    /// Applies what the metadata replica committed since the last call.
    fn drain_metadata(&mut self) -> Result<(), NodeError> {
        let Some(meta) = self.replicas.get_mut(&metadata_tp()) else {
            return Ok(());
        };
        for b in meta.take_applied() {
            self.apply_metadata_batch(&b, true)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        from: NodeId,
        outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
        heartbeat: &mut Option<(NodeId, BrokerHeartbeat)>,
        net: &mut impl Network,
    ) {
        for (to, messages) in std::mem::take(outbox) {
            self.stats.envelopes_sent += 1;
            self.stats.raft_messages_sent += messages.len() as u64;
            let heartbeat = match heartbeat.take() {
                Some((hb_to, hb)) if hb_to == to => Some(hb),
                other => {
                    *heartbeat = other;
                    None
                }
            };
            net.send(Envelope {
                from,
                to,
                messages,
                heartbeat,
            });
        }
    }
}

/// Whether a raft message makes its receiver write log data (appends, snapshots).
fn carries_data(t: raft::eraftpb::MessageType) -> bool {
    use raft::eraftpb::MessageType as T;
    matches!(t, T::MsgAppend | T::MsgSnapshot)
}

/// Queues one raft message for its peer. A replica in repair mode sends no vote requests (see
/// `storage` module docs).
fn queue(
    outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
    tp: &TopicPartition,
    repairing: bool,
    m: RaftMessage,
) {
    if repairing && is_vote_request(m.get_msg_type()) {
        return;
    }
    outbox
        .entry(m.to)
        .or_default()
        .push(GroupMessage::encode(tp, &m));
}

/// The log config of a partition: the node's defaults with the topic's overrides.
pub fn log_config_for(base: &LogConfig, configs: &BTreeMap<String, String>) -> LogConfig {
    let mut c = base.clone();
    for (k, v) in configs {
        match k.as_str() {
            "retention.ms" => c.retention_ms = v.parse::<i64>().ok().filter(|x| *x >= 0),
            "retention.bytes" => {
                c.retention_bytes = v.parse::<i64>().ok().filter(|x| *x >= 0).map(|x| x as u64)
            }
            "segment.bytes" => {
                if let Ok(x) = v.parse::<u64>() {
                    c.segment_bytes = x;
                }
            }
            "segment.ms" => {
                if let Ok(x) = v.parse::<i64>() {
                    c.segment_ms = x;
                }
            }
            _ => {}
        }
    }
    c
}

/// The topic configs a CreateTopic may set, with their checks.
fn check_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ClientError> {
    for (k, v) in configs {
        let ok = match k.as_str() {
            "retention.ms" | "retention.bytes" => v.parse::<i64>().is_ok_and(|x| x >= -1),
            "segment.bytes" => v.parse::<u64>().is_ok_and(|x| x >= 1024),
            "segment.ms" => v.parse::<i64>().is_ok_and(|x| x >= 1),
            "cleanup.policy" => v == "delete",
            _ => false,
        };
        if !ok {
            return Err(ClientError::InvalidConfig {
                key: k.clone(),
                value: v.clone(),
            });
        }
    }
    Ok(())
}

/// Whether a directory name is `<topic>-<partition>` (so cleanup never touches anything else).
fn looks_like_partition_dir(d: &str) -> bool {
    d.rsplit_once('-')
        .is_some_and(|(t, p)| crate::types::valid_topic_name(t) && p.parse::<u32>().is_ok())
}

/// Removes every file of a partition directory (best effort: leftovers are retried at the
/// next start).
fn remove_dir_files(disk: &dyn Disk, dir: &str) {
    for name in disk.list(dir).unwrap_or_default() {
        let _ = disk.remove(&crate::disk::join_path(dir, &name));
    }
}
