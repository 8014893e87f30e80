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

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use raft::eraftpb::Message as RaftMessage;
use raft::Ready;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slog::{o, Logger};

use crate::api::{ClientError, Request, RequestId, Response};
use crate::disk::Disk;
use crate::log::LogConfig;
use crate::network::{Envelope, GroupMessage, Network};
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
    pub partitions: Vec<PartitionSpec>,
    /// How often retention runs.
    pub retention_check_ms: Millis,
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
}

impl Node {
    /// Opens every configured partition from `disk` (recovering each log).
    pub fn open(
        config: NodeConfig,
        disk: Rc<dyn Disk>,
        logger: &Logger,
    ) -> Result<Node, NodeError> {
        let logger = logger.new(o!("node" => config.id));
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut replicas = BTreeMap::new();
        let mut open_reports = BTreeMap::new();
        for spec in &config.partitions {
            assert!(
                spec.voters.contains(&config.id),
                "{} hosts {}",
                config.id,
                spec.tp
            );
            let wrap = |source| NodeError::Storage {
                tp: spec.tp.clone(),
                source,
            };
            let (storage, report) = PartitionStorage::open(
                disk.clone(),
                &spec.tp.dir(),
                config.log.clone(),
                &spec.voters,
            )
            .map_err(wrap)?;
            let replica = Replica::open(
                config.id,
                spec.tp.clone(),
                storage,
                &report,
                config.replica.clone(),
                &mut rng,
                &logger,
            )
            .map_err(wrap)?;
            replicas.insert(spec.tp.clone(), replica);
            open_reports.insert(spec.tp.clone(), report);
        }
        Ok(Node {
            id: config.id,
            config,
            replicas,
            rng,
            replies: VecDeque::new(),
            last_retention_ms: 0,
            stats: NodeStats::default(),
            open_reports,
        })
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
        for gm in envelope.messages {
            let Some(replica) = self.replicas.get_mut(&gm.tp()) else {
                self.stats.unknown_partition_messages += 1;
                continue;
            };
            match gm.decode() {
                Ok(msg) if msg.to == self.id && msg.from == envelope.from => {
                    replica.handle_raft_message(msg, &mut self.rng)
                }
                _ => self.stats.bad_messages += 1,
            }
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
        };
        let Some(replica) = self.replicas.get_mut(&tp) else {
            let err = ClientError::UnknownPartition(tp);
            let reply = match request {
                Request::Produce { .. } => Response::Produce(Err(err)),
                Request::Fetch { .. } => Response::Fetch(Err(err)),
                Request::ListOffsets { .. } => Response::ListOffsets(Err(err)),
                Request::OffsetForLeaderEpoch { .. } => Response::OffsetForLeaderEpoch(Err(err)),
            };
            self.replies.push_back((id, reply));
            return;
        };
        let reply = match request {
            Request::Produce { acks, batch, .. } => {
                let mut replies = Replies::new();
                replica.produce(now_ms, id, acks, batch, &mut self.rng, &mut replies);
                self.replies.extend(replies);
                return;
            }
            Request::Fetch {
                offset, max_bytes, ..
            } => Response::Fetch(replica.fetch(offset, max_bytes)),
            Request::ListOffsets { spec, .. } => Response::ListOffsets(replica.list_offsets(spec)),
            Request::OffsetForLeaderEpoch { epoch, .. } => {
                Response::OffsetForLeaderEpoch(replica.offset_for_leader_epoch(epoch))
            }
        };
        self.replies.push_back((id, reply));
    }

    /// Advances raft's logical clock by one tick for every replica, expires produces past their
    /// deadline, and runs retention every `retention_check_ms`.
    pub fn tick(&mut self, now_ms: Millis) -> Result<(), NodeError> {
        let mut replies = Replies::new();
        for replica in self.replicas.values_mut() {
            replica.tick(now_ms, &mut self.rng, &mut replies);
        }
        self.replies.extend(replies);
        if now_ms - self.last_retention_ms >= self.config.retention_check_ms {
            self.last_retention_ms = now_ms;
            for (tp, replica) in self.replicas.iter_mut() {
                replica
                    .apply_retention(now_ms)
                    .map_err(|source| NodeError::Storage {
                        tp: tp.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Whether [`Node::step`] has work to do.
    pub fn has_ready(&self) -> bool {
        self.replicas
            .values()
            .any(|r| r.has_ready() || r.storage().is_dirty())
    }

    /// The shared driver: one pass of the `Ready` protocol over every replica (module docs).
    pub fn step(&mut self, net: &mut impl Network) -> Result<(), NodeError> {
        self.stats.steps += 1;
        let id = self.id;
        // Phase 1: messages that need not wait for our disk, and unsynced writes.
        let mut outbox: BTreeMap<NodeId, Vec<GroupMessage>> = BTreeMap::new();
        let mut readies: Vec<(TopicPartition, Ready)> = Vec::new();
        for (tp, replica) in self.replicas.iter_mut() {
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
        self.flush(id, &mut outbox, net);
        // Phase 2: one sync per dirty file, for every partition at once.
        for (tp, replica) in self.replicas.iter_mut() {
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
        self.flush(id, &mut outbox, net);
        self.replies.extend(replies);
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
        self.replies.extend(replies);
    }

    fn flush(
        &mut self,
        from: NodeId,
        outbox: &mut BTreeMap<NodeId, Vec<GroupMessage>>,
        net: &mut impl Network,
    ) {
        for (to, messages) in std::mem::take(outbox) {
            self.stats.envelopes_sent += 1;
            self.stats.raft_messages_sent += messages.len() as u64;
            net.send(Envelope { from, to, messages });
        }
    }
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
