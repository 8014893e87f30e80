//! Cluster metadata as a replicated log (KRaft-like): brokers (listener, rack, fenced or not),
//! topics, their partitions and replica assignments, and each partition's last reported leader,
//! leader epoch and ISR, kept in the raft group `__cluster_metadata-0`. The controller quorum
//! (its voters) is named in config; every other broker follows the log as a raft learner, so
//! every node holds the whole image.
//!
//! The metadata log is an ordinary partition log: each entry is a Kafka RecordBatch whose single
//! record's value is a prost-encoded [`MetadataRecord`]. Every node that hosts the metadata
//! partition rebuilds the [`MetadataImage`] by applying the committed records in order (at open,
//! by replaying its log up to the commit index; afterwards, as entries are applied), and creates
//! or deletes its local partition replicas from the [`ImageChange`]s that applying returns.
//! The image is also the controller's snapshot ([`MetadataImage::encode`]), which lets the
//! metadata log be truncated before it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use prost::Message as _;

use super::balance::{DecommissionBroker, UnregisterBroker};
use super::reassign::{MoveSnapshot, ReassignPartitions, Reassignment, ReassignmentDone};
use crate::batch::{decode_records, BatchBuilder, BatchError};
use crate::cluster_id::valid_cluster_id;
use crate::types::{valid_topic_name, Millis, NodeId, PartitionId, TopicPartition};

pub use crate::types::{
    is_internal_topic, CONSUMER_OFFSETS_TOPIC, INTERNAL_TOPICS, METADATA_TOPIC,
    TRANSACTION_STATE_TOPIC,
};

/// The metadata partition.
pub fn metadata_tp() -> TopicPartition {
    TopicPartition::new(METADATA_TOPIC, 0)
}

/// The broker a BROKER config resource names: `Some(None)` for the cluster-wide defaults
/// (empty name), `Some(Some(id))` for a broker id, `None` for anything else.
pub fn broker_resource_id(resource: &str) -> Option<Option<NodeId>> {
    if resource.is_empty() {
        return Some(None);
    }
    let canonical = !resource.starts_with('0') && resource.bytes().all(|b| b.is_ascii_digit());
    resource
        .parse::<NodeId>()
        .ok()
        .filter(|_| canonical)
        .map(Some)
}

/// Most partitions one topic may have; bounds the work of one metadata record.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionAssignment {
    #[prost(int32, tag = "1")]
    pub partition: PartitionId,
    /// Replica ids; the first is the preferred leader.
    #[prost(uint64, repeated, tag = "2")]
    pub replicas: Vec<NodeId>,
    /// In a snapshot, the replicas the partition was created with when a move changed them
    /// (empty: the same as `replicas`); see [`MetadataImage::initial_voters`].
    #[prost(uint64, repeated, tag = "3")]
    pub created: Vec<NodeId>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub topic_id: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub partitions: Vec<PartitionAssignment>,
    /// Topic configs (`retention.ms`, `retention.bytes`, `segment.bytes`, `cleanup.policy`).
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
}

/// New partitions of an existing topic (Kafka's CreatePartitions): they continue its
/// numbering.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreatePartitions {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub partitions: Vec<PartitionAssignment>,
}

/// A topic's new config overrides, replacing the old ones (AlterConfigs and
/// IncrementalAlterConfigs, resolved by the controller).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterTopicConfigs {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub configs: BTreeMap<String, String>,
}

/// A broker resource's new dynamic configs, replacing the old ones (AlterConfigs and
/// IncrementalAlterConfigs of a BROKER resource, resolved by the controller). `resource` is
/// the broker id in decimal, or empty for the cluster-wide defaults (Kafka's
/// `--entity-default`). Only the broker synonyms of topic configs are dynamic here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterBrokerConfigs {
    #[prost(string, tag = "1")]
    pub resource: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// A broker (re-)registering: written by the controller when a heartbeat shows a broker it
/// does not know, whose listener or rack changed, that restarted (a new incarnation) or that
/// was fenced. Unfences the broker.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RegisterBroker {
    #[prost(uint64, tag = "1")]
    pub id: NodeId,
    /// The advertised Kafka listener.
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(uint32, tag = "3")]
    pub port: u32,
    #[prost(string, optional, tag = "4")]
    pub rack: Option<String>,
    /// Changes at every start of the broker.
    #[prost(uint64, tag = "5")]
    pub incarnation: u64,
    /// The node-to-node (raft) listener, so that every node can reach a broker that joined
    /// after it started (empty: not given, as brokers registered before it existed).
    #[prost(string, tag = "6")]
    pub raft_host: String,
    #[prost(uint32, tag = "7")]
    pub raft_port: u32,
    /// Registered fenced: a node asking to join, which its first heartbeat after admission
    /// unfences (a KRaft broker, likewise, stays fenced until it has caught up).
    #[prost(bool, tag = "8")]
    pub fenced: bool,
}

impl RegisterBroker {
    /// The raft listener it names, as the image stores it: `None` when absent (empty host,
    /// port 0) or out of range.
    pub fn raft_addr(&self) -> Option<(String, u16)> {
        let port = u16::try_from(self.raft_port).ok().filter(|p| *p != 0)?;
        (!self.raft_host.is_empty()).then(|| (self.raft_host.clone(), port))
    }
}

/// The cluster's identity, written once by the first controller: its id (Kafka's cluster id,
/// 16 random bytes in unpadded base64url), and the metadata group's configuration at index 0,
/// which a joining node needs to replay the log from its start.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClusterCreated {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint64, repeated, tag = "2")]
    pub voters: Vec<NodeId>,
    #[prost(uint64, repeated, tag = "3")]
    pub learners: Vec<NodeId>,
}

/// The controller has not heard from a broker within the session timeout.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FenceBroker {
    #[prost(uint64, tag = "1")]
    pub id: NodeId,
}

/// A partition's leader as its leader reported it (Kafka's PartitionChangeRecord).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PartitionLeader {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    /// 0: no leader known.
    #[prost(uint64, tag = "3")]
    pub leader: NodeId,
    /// The leader's raft term (Kafka's leader epoch).
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
    #[prost(uint64, repeated, tag = "5")]
    pub isr: Vec<NodeId>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaderChanges {
    #[prost(message, repeated, tag = "1")]
    pub leaders: Vec<PartitionLeader>,
}

/// A block of producer ids granted to a broker, which hands them to its InitProducerId
/// clients. The block starts at the image's next free id when the record applies (not at a
/// value the proposer chose), so two grants never overlap, even across a controller failover.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AllocateProducerIds {
    #[prost(uint64, tag = "1")]
    pub broker: NodeId,
    /// The broker's request this answers: its incarnation and a counter within it. A broker
    /// takes only a block that answers its own current request, so a restarted broker never
    /// reuses its previous block.
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
    #[prost(uint64, tag = "3")]
    pub request: u64,
    #[prost(uint32, tag = "4")]
    pub size: u32,
}

/// Most producer ids one block may hold (a record asking for more is ignored).
pub const PRODUCER_ID_BLOCK_MAX: u32 = 100_000;

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RecordKind {
    #[prost(message, tag = "1")]
    CreateTopic(CreateTopic),
    #[prost(message, tag = "2")]
    DeleteTopic(DeleteTopic),
    #[prost(message, tag = "3")]
    RegisterBroker(RegisterBroker),
    #[prost(message, tag = "4")]
    FenceBroker(FenceBroker),
    #[prost(message, tag = "5")]
    LeaderChanges(LeaderChanges),
    #[prost(message, tag = "6")]
    AllocateProducerIds(AllocateProducerIds),
    #[prost(message, tag = "7")]
    CreatePartitions(CreatePartitions),
    #[prost(message, tag = "8")]
    AlterTopicConfigs(AlterTopicConfigs),
    #[prost(message, tag = "9")]
    AlterBrokerConfigs(AlterBrokerConfigs),
    #[prost(message, tag = "10")]
    ClusterCreated(ClusterCreated),
    #[prost(message, tag = "11")]
    ReassignPartitions(ReassignPartitions),
    #[prost(message, tag = "12")]
    ReassignmentDone(ReassignmentDone),
    #[prost(message, tag = "13")]
    DecommissionBroker(DecommissionBroker),
    #[prost(message, tag = "14")]
    UnregisterBroker(UnregisterBroker),
}

/// One metadata change, the value of one record in the metadata log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataRecord {
    #[prost(
        oneof = "RecordKind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14"
    )]
    pub kind: Option<RecordKind>,
}

impl MetadataRecord {
    /// Encodes the record as a one-record Kafka batch, ready to propose.
    pub fn to_batch(&self, now_ms: Millis) -> Bytes {
        BatchBuilder::new(now_ms)
            .record(None, Some(&self.encode_to_vec()), &[], now_ms)
            .build()
    }
}

/// A registered broker in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerSnapshot {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<RegisterBroker>,
    #[prost(bool, tag = "2")]
    pub fenced: bool,
}

/// The whole image, as the controller's snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSnapshot {
    #[prost(message, repeated, tag = "1")]
    pub topics: Vec<CreateTopic>,
    #[prost(message, repeated, tag = "2")]
    pub brokers: Vec<BrokerSnapshot>,
    #[prost(message, repeated, tag = "3")]
    pub leaders: Vec<PartitionLeader>,
    #[prost(uint64, tag = "4")]
    pub records_applied: u64,
    #[prost(int64, tag = "5")]
    pub next_producer_id: i64,
    #[prost(message, repeated, tag = "6")]
    pub producer_blocks: Vec<ProducerBlockSnapshot>,
    #[prost(message, repeated, tag = "7")]
    pub broker_configs: Vec<AlterBrokerConfigs>,
    #[prost(message, optional, tag = "8")]
    pub cluster: Option<ClusterCreated>,
    #[prost(message, repeated, tag = "9")]
    pub moves: Vec<MoveSnapshot>,
    #[prost(uint64, repeated, tag = "10")]
    pub decommissioning: Vec<NodeId>,
    #[prost(uint64, repeated, tag = "11")]
    pub unregistered: Vec<NodeId>,
}

/// A broker's newest producer-id block in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProducerBlockSnapshot {
    #[prost(message, optional, tag = "1")]
    pub grant: Option<AllocateProducerIds>,
    #[prost(int64, tag = "2")]
    pub first: i64,
}

/// Why a metadata batch could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("metadata batch: {0}")]
    Batch(#[from] BatchError),
    #[error("metadata record does not decode: {0}")]
    Decode(String),
}

/// Decodes the records of one committed metadata batch.
pub fn records_of_batch(batch: &[u8]) -> Result<Vec<MetadataRecord>, MetadataError> {
    decode_records(batch)?
        .into_iter()
        .map(|r| {
            let v = r.value.unwrap_or_default();
            MetadataRecord::decode(v.as_slice()).map_err(|e| MetadataError::Decode(e.to_string()))
        })
        .collect()
}

/// A topic as the metadata log describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: [u8; 16],
    /// Partition -> replicas (first = preferred leader).
    pub partitions: BTreeMap<PartitionId, Vec<NodeId>>,
    /// Partition -> the replicas it was created with (the configuration its log starts from).
    pub created: BTreeMap<PartitionId, Vec<NodeId>>,
    pub configs: BTreeMap<String, String>,
}

/// What applying a record changed, for the node to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageChange {
    PartitionAdded {
        tp: TopicPartition,
        replicas: Vec<NodeId>,
        configs: BTreeMap<String, String>,
    },
    PartitionRemoved {
        tp: TopicPartition,
    },
    ConfigsChanged {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// A broker resource's dynamic configs changed (`resource` as in [`AlterBrokerConfigs`]).
    BrokerConfigsChanged {
        resource: String,
    },
    /// The cluster got its identity.
    ClusterCreated {
        cluster_id: String,
    },
    /// A move started or finished: the partition's replica set is now `replicas` (a moving
    /// partition's target first, then every replica it may still hold); `leaving` will go
    /// when the move is done.
    ReplicasChanged {
        tp: TopicPartition,
        replicas: Vec<NodeId>,
        leaving: Vec<NodeId>,
        configs: BTreeMap<String, String>,
    },
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerMeta {
    pub id: NodeId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub incarnation: u64,
    /// The raft listener it registered (`None` from registrations that carried none).
    pub raft_addr: Option<(String, u16)>,
    /// Not heard from within the session timeout: clients are not sent to it and new replicas
    /// are not placed on it.
    pub fenced: bool,
}

impl BrokerMeta {
    /// Its registration, as the snapshot stores it.
    pub fn registration(&self) -> RegisterBroker {
        let (raft_host, raft_port) = self.raft_addr.clone().unwrap_or_default();
        RegisterBroker {
            id: self.id,
            host: self.host.clone(),
            port: self.port as u32,
            rack: self.rack.clone(),
            incarnation: self.incarnation,
            raft_host,
            raft_port: raft_port as u32,
            fenced: false,
        }
    }

    /// Reads a registration; `None` if a port is out of range or the id is 0.
    fn from_registration(r: &RegisterBroker, fenced: bool) -> Option<BrokerMeta> {
        let port = u16::try_from(r.port).ok()?;
        u16::try_from(r.raft_port).ok()?;
        if r.id == 0 {
            return None;
        }
        Some(BrokerMeta {
            id: r.id,
            host: r.host.clone(),
            port,
            rack: r.rack.clone(),
            incarnation: r.incarnation,
            raft_addr: r.raft_addr(),
            fenced,
        })
    }
}

/// A partition's leadership as last recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderMeta {
    pub leader: Option<NodeId>,
    pub epoch: u64,
    pub isr: Vec<NodeId>,
}

/// The state the metadata log describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    pub brokers: BTreeMap<NodeId, BrokerMeta>,
    /// Leaders of the partitions of `topics`, as their leaders last reported them.
    pub leaders: BTreeMap<TopicPartition, LeaderMeta>,
    /// Records applied so far.
    pub records_applied: u64,
    /// The lowest producer id no block holds yet.
    pub next_producer_id: i64,
    /// Each broker's newest producer-id block.
    pub producer_blocks: BTreeMap<NodeId, ProducerIdBlock>,
    /// Dynamic broker configs by resource ("" = cluster-wide defaults, else a broker id); no
    /// empty maps.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The cluster's identity, once the first controller wrote it.
    pub cluster: Option<ClusterCreated>,
    /// Partition moves in flight (see [`super::reassign`]).
    pub moves: BTreeMap<TopicPartition, Reassignment>,
    /// Registered brokers being drained (see [`super::balance`]).
    pub decommissioning: BTreeSet<NodeId>,
    /// Brokers unregistered after a decommission: a heartbeat does not register them again,
    /// only a join does.
    pub unregistered: BTreeSet<NodeId>,
}

/// Producer ids `first .. first + grant.size`, granted to `grant.broker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub grant: AllocateProducerIds,
    pub first: i64,
}

impl ProducerIdBlock {
    pub fn end(&self) -> i64 {
        self.first + self.grant.size as i64
    }
}

impl MetadataImage {
    /// Applies one committed record. Records that conflict with the image (a topic created
    /// twice, a missing topic deleted) change nothing: the controller validates before
    /// proposing, so they only arise from races that the first record already won.
    pub fn apply(&mut self, record: &MetadataRecord) -> Vec<ImageChange> {
        self.records_applied += 1;
        let mut changes = Vec::new();
        match &record.kind {
            Some(RecordKind::CreateTopic(c)) => {
                if self.topics.contains_key(&c.name) || !valid_topic_name(&c.name) {
                    return changes;
                }
                let mut id = [0u8; 16];
                let n = c.topic_id.len().min(16);
                id[..n].copy_from_slice(&c.topic_id[..n]);
                let mut partitions = BTreeMap::new();
                let mut created = BTreeMap::new();
                for p in &c.partitions {
                    partitions.insert(p.partition, p.replicas.clone());
                    let first = if p.created.is_empty() {
                        &p.replicas
                    } else {
                        &p.created
                    };
                    created.insert(p.partition, first.clone());
                    changes.push(ImageChange::PartitionAdded {
                        tp: TopicPartition::new(c.name.clone(), p.partition),
                        replicas: p.replicas.clone(),
                        configs: c.configs.clone(),
                    });
                }
                self.topics.insert(
                    c.name.clone(),
                    TopicMeta {
                        name: c.name.clone(),
                        id,
                        partitions,
                        created,
                        configs: c.configs.clone(),
                    },
                );
            }
            Some(RecordKind::DeleteTopic(d)) => {
                if let Some(t) = self.topics.remove(&d.name) {
                    for p in t.partitions.keys() {
                        let tp = TopicPartition::new(t.name.clone(), *p);
                        self.leaders.remove(&tp);
                        self.moves.remove(&tp);
                        changes.push(ImageChange::PartitionRemoved { tp });
                    }
                }
            }
            Some(RecordKind::RegisterBroker(r)) => {
                if let Some(b) = BrokerMeta::from_registration(r, r.fenced) {
                    self.brokers.insert(r.id, b);
                    self.unregistered.remove(&r.id);
                }
            }
            // The first identity wins: a second controller's proposal lost the race.
            Some(RecordKind::ClusterCreated(c))
                if self.cluster.is_none()
                    && valid_cluster_id(&c.cluster_id)
                    && !c.voters.is_empty() =>
            {
                self.cluster = Some(c.clone());
                changes.push(ImageChange::ClusterCreated {
                    cluster_id: c.cluster_id.clone(),
                });
            }
            Some(RecordKind::ClusterCreated(_)) => {}
            Some(RecordKind::FenceBroker(f)) => {
                if let Some(b) = self.brokers.get_mut(&f.id) {
                    b.fenced = true;
                    // Its leaderships are stale: clients should look elsewhere until the new
                    // leaders report.
                    for l in self.leaders.values_mut() {
                        if l.leader == Some(f.id) {
                            l.leader = None;
                        }
                    }
                }
            }
            Some(RecordKind::LeaderChanges(lc)) => {
                for pl in &lc.leaders {
                    let tp = TopicPartition::new(pl.topic.clone(), pl.partition);
                    let known = self
                        .topics
                        .get(&pl.topic)
                        .is_some_and(|t| t.partitions.contains_key(&pl.partition));
                    if !known {
                        continue;
                    }
                    let cur = self.leaders.entry(tp).or_default();
                    // Terms only grow: a report from an older term lost the race to a newer one.
                    if pl.epoch >= cur.epoch {
                        *cur = LeaderMeta {
                            leader: (pl.leader != 0).then_some(pl.leader),
                            epoch: pl.epoch,
                            isr: pl.isr.clone(),
                        };
                    }
                }
            }
            Some(RecordKind::AllocateProducerIds(a)) => self.grant_producer_ids(a),
            Some(RecordKind::CreatePartitions(c)) => changes = self.add_partitions(c),
            Some(RecordKind::AlterTopicConfigs(a)) => {
                if let Some(t) = self.topics.get_mut(&a.name) {
                    t.configs = a.configs.clone();
                    changes.push(ImageChange::ConfigsChanged {
                        topic: a.name.clone(),
                        configs: a.configs.clone(),
                    });
                }
            }
            Some(RecordKind::AlterBrokerConfigs(a))
                if broker_resource_id(&a.resource).is_some() =>
            {
                if a.configs.is_empty() {
                    self.broker_configs.remove(&a.resource);
                } else {
                    self.broker_configs
                        .insert(a.resource.clone(), a.configs.clone());
                }
                changes.push(ImageChange::BrokerConfigsChanged {
                    resource: a.resource.clone(),
                });
            }
            Some(RecordKind::AlterBrokerConfigs(_)) => {}
            Some(RecordKind::ReassignPartitions(r)) => changes = self.apply_reassign(r),
            Some(RecordKind::ReassignmentDone(d)) => changes = self.apply_reassignment_done(d),
            Some(RecordKind::DecommissionBroker(d)) => self.apply_decommission(d),
            Some(RecordKind::UnregisterBroker(u)) => self.apply_unregister(u),
            None => {}
        }
        changes
    }

    /// The dynamic configs a broker applies on top of its static ones, as layers: its own,
    /// then the cluster-wide defaults.
    pub fn dynamic_broker_configs(
        &self,
        broker: NodeId,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let get = |r: &str| self.broker_configs.get(r).cloned().unwrap_or_default();
        (get(&broker.to_string()), get(""))
    }

    /// Adds a topic's new partitions, if they continue its numbering (else the record lost a
    /// race and changes nothing).
    fn add_partitions(&mut self, c: &CreatePartitions) -> Vec<ImageChange> {
        let Some(topic) = self.topics.get_mut(&c.name) else {
            return Vec::new();
        };
        let next = topic.partitions.len() as i64;
        let continues = c
            .partitions
            .iter()
            .enumerate()
            .all(|(i, p)| p.partition as i64 == next + i as i64 && distinct(&p.replicas));
        let total = next as u64 + c.partitions.len() as u64;
        if !continues || total > PARTITIONS_PER_TOPIC_MAX as u64 {
            return Vec::new();
        }
        c.partitions
            .iter()
            .map(|p| {
                topic.partitions.insert(p.partition, p.replicas.clone());
                topic.created.insert(p.partition, p.replicas.clone());
                ImageChange::PartitionAdded {
                    tp: TopicPartition::new(c.name.clone(), p.partition),
                    replicas: p.replicas.clone(),
                    configs: topic.configs.clone(),
                }
            })
            .collect()
    }

    fn grant_producer_ids(&mut self, a: &AllocateProducerIds) {
        if a.size == 0 || a.size > PRODUCER_ID_BLOCK_MAX || a.broker == 0 {
            return;
        }
        let block = ProducerIdBlock {
            grant: a.clone(),
            first: self.next_producer_id,
        };
        self.next_producer_id = block.end();
        self.producer_blocks.insert(a.broker, block);
    }

    /// The brokers new replicas may be placed on: the configured ones and every registered
    /// one, minus the fenced.
    pub fn placeable_brokers(&self, configured: &[NodeId]) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = configured
            .iter()
            .copied()
            .chain(self.brokers.keys().copied())
            .filter(|id| !self.brokers.get(id).is_some_and(|b| b.fenced))
            .filter(|id| !self.decommissioning.contains(id) && !self.unregistered.contains(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The image as a snapshot (prost): the controller's state at an applied index.
    pub fn encode(&self) -> Bytes {
        let snap = ImageSnapshot {
            topics: self
                .topics
                .values()
                .map(|t| CreateTopic {
                    name: t.name.clone(),
                    topic_id: t.id.to_vec(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|(p, r)| PartitionAssignment {
                            partition: *p,
                            replicas: r.clone(),
                            created: t
                                .created
                                .get(p)
                                .filter(|c| *c != r)
                                .cloned()
                                .unwrap_or_default(),
                        })
                        .collect(),
                    configs: t.configs.clone(),
                })
                .collect(),
            brokers: self
                .brokers
                .values()
                .map(|b| BrokerSnapshot {
                    registration: Some(b.registration()),
                    fenced: b.fenced,
                })
                .collect(),
            leaders: self
                .leaders
                .iter()
                .map(|(tp, l)| PartitionLeader {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    leader: l.leader.unwrap_or(0),
                    epoch: l.epoch,
                    isr: l.isr.clone(),
                })
                .collect(),
            records_applied: self.records_applied,
            next_producer_id: self.next_producer_id,
            producer_blocks: self
                .producer_blocks
                .values()
                .map(|b| ProducerBlockSnapshot {
                    grant: Some(b.grant.clone()),
                    first: b.first,
                })
                .collect(),
            broker_configs: self
                .broker_configs
                .iter()
                .map(|(resource, configs)| AlterBrokerConfigs {
                    resource: resource.clone(),
                    configs: configs.clone(),
                })
                .collect(),
            cluster: self.cluster.clone(),
            moves: self.encode_moves(),
            decommissioning: self.decommissioning.iter().copied().collect(),
            unregistered: self.unregistered.iter().copied().collect(),
        };
        Bytes::from(snap.encode_to_vec())
    }

    /// Decodes a snapshot made by [`MetadataImage::encode`]. Bytes from disk or the network:
    /// never panics, and a snapshot that does not rebuild an image equal to itself (a topic or
    /// broker twice, a leader of an unknown partition) is refused.
    pub fn decode(data: &[u8]) -> Result<MetadataImage, MetadataError> {
        let snap = ImageSnapshot::decode(data).map_err(|e| MetadataError::Decode(e.to_string()))?;
        let mut image = MetadataImage::default();
        for t in &snap.topics {
            let record = MetadataRecord {
                kind: Some(RecordKind::CreateTopic(t.clone())),
            };
            if image.apply(&record).len() != t.partitions.len() {
                return Err(MetadataError::Decode(format!(
                    "topic {} is invalid",
                    t.name
                )));
            }
        }
        for b in &snap.brokers {
            let Some(reg) = &b.registration else {
                return Err(MetadataError::Decode("broker without registration".into()));
            };
            let meta = BrokerMeta::from_registration(reg, b.fenced)
                .filter(|_| !image.brokers.contains_key(&reg.id))
                .ok_or_else(|| MetadataError::Decode(format!("broker {}", reg.id)))?;
            image.brokers.insert(reg.id, meta);
        }
        for l in &snap.leaders {
            let tp = TopicPartition::new(l.topic.clone(), l.partition);
            let known = image
                .topics
                .get(&l.topic)
                .is_some_and(|t| t.partitions.contains_key(&l.partition));
            if !known {
                return Err(MetadataError::Decode(format!("leader of unknown {tp}")));
            }
            image.leaders.insert(
                tp,
                LeaderMeta {
                    leader: (l.leader != 0).then_some(l.leader),
                    epoch: l.epoch,
                    isr: l.isr.clone(),
                },
            );
        }
        image.records_applied = snap.records_applied;
        image.next_producer_id = snap.next_producer_id;
        for b in &snap.producer_blocks {
            let grant = b
                .grant
                .clone()
                .ok_or_else(|| MetadataError::Decode("producer block without its grant".into()))?;
            let block = ProducerIdBlock {
                grant,
                first: b.first,
            };
            let valid = block.first >= 0
                && block.grant.size <= PRODUCER_ID_BLOCK_MAX
                && block.end() <= image.next_producer_id;
            if !valid || image.producer_blocks.contains_key(&block.grant.broker) {
                return Err(MetadataError::Decode(format!(
                    "producer block of broker {}",
                    block.grant.broker
                )));
            }
            image.producer_blocks.insert(block.grant.broker, block);
        }
        for b in &snap.broker_configs {
            let fresh = !image.broker_configs.contains_key(&b.resource);
            if broker_resource_id(&b.resource).is_none() || b.configs.is_empty() || !fresh {
                return Err(MetadataError::Decode(format!(
                    "broker configs of {:?}",
                    b.resource
                )));
            }
            image
                .broker_configs
                .insert(b.resource.clone(), b.configs.clone());
        }
        if let Some(c) = &snap.cluster {
            if !valid_cluster_id(&c.cluster_id) || c.voters.is_empty() {
                return Err(MetadataError::Decode("cluster identity".into()));
            }
        }
        image.cluster = snap.cluster;
        image
            .decode_moves(&snap.moves)
            .map_err(MetadataError::Decode)?;
        image.decommissioning = snap.decommissioning.iter().copied().collect();
        image.unregistered = snap.unregistered.iter().copied().collect();
        let stray = image
            .decommissioning
            .iter()
            .any(|b| !image.brokers.contains_key(b))
            || image
                .unregistered
                .iter()
                .any(|b| image.brokers.contains_key(b));
        if stray {
            return Err(MetadataError::Decode("decommissioned brokers".into()));
        }
        Ok(image)
    }

    /// Checks the image's own consistency: every leader names a known partition, and every
    /// partition has at least one replica, all distinct.
    pub fn check_invariants(&self) {
        for (tp, _) in self.leaders.iter() {
            assert!(
                self.topics
                    .get(&tp.topic)
                    .is_some_and(|t| t.partitions.contains_key(&tp.partition)),
                "leader recorded for unknown partition {tp}"
            );
        }
        for t in self.topics.values() {
            assert!(
                !t.partitions.is_empty(),
                "topic {} has no partitions",
                t.name
            );
            for (p, r) in &t.partitions {
                let mut sorted = r.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert!(
                    !r.is_empty() && sorted.len() == r.len(),
                    "{}-{p} has replicas {r:?}",
                    t.name
                );
            }
        }
        self.check_moves();
        for b in &self.decommissioning {
            assert!(
                self.brokers.contains_key(b),
                "decommissioning unknown broker {b}"
            );
        }
        for b in &self.unregistered {
            assert!(
                !self.brokers.contains_key(b),
                "broker {b} unregistered and registered"
            );
        }
        for (id, b) in &self.brokers {
            assert_eq!(*id, b.id, "broker keyed by another id");
            assert_ne!(*id, 0, "broker id 0 is reserved");
        }
        if let Some(c) = &self.cluster {
            assert!(
                valid_cluster_id(&c.cluster_id),
                "cluster id {:?}",
                c.cluster_id
            );
            assert!(!c.voters.is_empty(), "a cluster formed without voters");
        }
        let mut blocks: Vec<&ProducerIdBlock> = self.producer_blocks.values().collect();
        blocks.sort_by_key(|b| b.first);
        for b in &blocks {
            assert!(
                b.first >= 0 && b.end() <= self.next_producer_id,
                "block {b:?}"
            );
        }
        for w in blocks.windows(2) {
            assert!(w[0].end() <= w[1].first, "producer blocks overlap: {w:?}");
        }
    }

    /// Every partition and its replicas.
    pub fn assignments(&self) -> BTreeMap<TopicPartition, Vec<NodeId>> {
        let mut out = BTreeMap::new();
        for t in self.topics.values() {
            for (p, r) in &t.partitions {
                out.insert(TopicPartition::new(t.name.clone(), *p), r.clone());
            }
        }
        out
    }
}

/// Whether `replicas` is a non-empty list of distinct brokers.
fn distinct(replicas: &[NodeId]) -> bool {
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    !replicas.is_empty() && sorted.len() == replicas.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::placement::*;

    fn create(image: &MetadataImage, name: &str, p: i64, rf: i64) -> MetadataRecord {
        MetadataRecord {
            kind: Some(RecordKind::CreateTopic(CreateTopic {
                name: name.into(),
                topic_id: topic_id(name, 0).to_vec(),
                partitions: place_replicas(image, &[1, 2, 3], name, p, rf).unwrap(),
                configs: BTreeMap::new(),
            })),
        }
    }

    #[test]
    fn test_records_round_trip_through_batches() {
        let r = create(&MetadataImage::default(), "orders", 3, 3);
        let batch = r.to_batch(5);
        assert_eq!(records_of_batch(&batch).unwrap(), vec![r]);
        let mut bad = batch.to_vec();
        let n = bad.len();
        bad[n - 2] ^= 1;
        assert!(records_of_batch(&bad).is_err());
    }

    #[test]
    fn test_image_snapshot_round_trips_and_rejects_garbage() {
        // A snapshot rebuilds exactly the image it was taken from; garbage is refused.
        let mut img = MetadataImage::default();
        img.apply(&create(&img, "a", 3, 2));
        img.apply(&MetadataRecord {
            kind: Some(RecordKind::RegisterBroker(RegisterBroker {
                id: 2,
                host: "h".into(),
                port: 9092,
                rack: Some("r".into()),
                incarnation: 7,
                raft_host: "10.0.0.2".into(),
                raft_port: 19092,
                fenced: false,
            })),
        });
        img.apply(&MetadataRecord {
            kind: Some(RecordKind::ClusterCreated(ClusterCreated {
                cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
                voters: vec![1, 2, 3],
                learners: vec![4],
            })),
        });
        assert_eq!(img.brokers[&2].raft_addr, Some(("10.0.0.2".into(), 19092)));
        img.apply(&MetadataRecord {
            kind: Some(RecordKind::LeaderChanges(LeaderChanges {
                leaders: vec![PartitionLeader {
                    topic: "a".into(),
                    partition: 1,
                    leader: 2,
                    epoch: 4,
                    isr: vec![1, 2],
                }],
            })),
        });
        img.apply(&MetadataRecord {
            kind: Some(RecordKind::FenceBroker(FenceBroker { id: 2 })),
        });
        let alter = |resource: &str, configs: &[(&str, &str)]| MetadataRecord {
            kind: Some(RecordKind::AlterBrokerConfigs(AlterBrokerConfigs {
                resource: resource.into(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })),
        };
        for (resource, configs) in [("", &[("log.retention.ms", "5")][..]), ("2", &[])] {
            let changes = img.apply(&alter(resource, configs));
            let want = ImageChange::BrokerConfigsChanged {
                resource: resource.into(),
            };
            assert_eq!(changes, vec![want]);
        }
        assert!(
            img.apply(&alter("02", &[("a", "b")])).is_empty(),
            "not a broker id"
        );
        assert_eq!(
            img.broker_configs.len(),
            1,
            "an empty set removes the resource"
        );
        let back = MetadataImage::decode(&img.encode()).unwrap();
        assert_eq!(back, img);
        back.check_invariants();
        assert!(MetadataImage::decode(&[0xff, 0xff, 0x01]).is_err());
        let mut dup = ImageSnapshot::decode(&img.encode()[..]).unwrap();
        dup.topics.push(dup.topics[0].clone());
        assert!(MetadataImage::decode(&dup.encode_to_vec()).is_err());
    }

    #[test]
    fn test_apply_create_delete_and_conflicts() {
        let mut img = MetadataImage::default();
        let r = create(&img, "a", 2, 3);
        let ch = img.apply(&r);
        assert_eq!(ch.len(), 2);
        assert!(
            img.apply(&r).is_empty(),
            "a second create of the same name changes nothing"
        );
        let del = MetadataRecord {
            kind: Some(RecordKind::DeleteTopic(DeleteTopic { name: "a".into() })),
        };
        let ch = img.apply(&del);
        assert_eq!(
            ch,
            vec![
                ImageChange::PartitionRemoved {
                    tp: TopicPartition::new("a", 0)
                },
                ImageChange::PartitionRemoved {
                    tp: TopicPartition::new("a", 1)
                }
            ]
        );
        assert!(img.apply(&del).is_empty());
        assert!(img.topics.is_empty());
    }

    #[test]
    fn test_placement_spreads_preferred_leaders_across_topics() {
        let mut img = MetadataImage::default();
        let mut leaders = BTreeMap::<NodeId, usize>::new();
        for t in ["a", "b", "c"] {
            let r = create(&img, t, 2, 2);
            img.apply(&r);
        }
        for r in img.assignments().values() {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(matches!(
            place_replicas(&img, &[1, 2, 3], "x", 1, 4),
            Err(PlacementError::InvalidReplicationFactor { .. })
        ));
        assert!(matches!(
            place_replicas(&img, &[1, 2, 3], "x", 0, 1),
            Err(PlacementError::InvalidPartitions(0))
        ));
        assert!(matches!(
            place_replicas(&img, &[1, 2, 3], METADATA_TOPIC, 1, 1),
            Err(PlacementError::InvalidTopic(_))
        ));
    }

    #[test]
    fn test_manual_assignments_are_checked() {
        let img = MetadataImage::default();
        let ok = check_assignment(&img, &[1, 2, 3], "m", &[vec![2, 1], vec![3, 2]]).unwrap();
        assert_eq!(ok[1].partition, 1);
        assert_eq!(ok[1].replicas, vec![3, 2]);
        let err = |a: &[Vec<NodeId>]| check_assignment(&img, &[1, 2, 3], "m", a).unwrap_err();
        assert!(matches!(err(&[]), PlacementError::InvalidPartitions(0)));
        for bad in [
            vec![vec![1, 2], vec![3]],
            vec![vec![1, 1]],
            vec![vec![]],
            vec![vec![1, 9]],
        ] {
            assert!(
                matches!(err(&bad), PlacementError::InvalidAssignment(_)),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_assignment(&img, &[1], METADATA_TOPIC, &[vec![1]]),
            Err(PlacementError::InvalidTopic(_))
        ));
    }
}
