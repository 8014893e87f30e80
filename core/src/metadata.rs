//! Cluster metadata as a replicated log (KRaft-like): topics, their partitions and replica
//! assignments, kept in the raft group `__cluster_metadata-0`.
//!
//! The metadata log is an ordinary partition log: each entry is a Kafka RecordBatch whose single
//! record's value is a prost-encoded [`MetadataRecord`]. Every node that hosts the metadata
//! partition rebuilds the [`MetadataImage`] by applying the committed records in order (at open,
//! by replaying its log up to the commit index; afterwards, as entries are applied), and creates
//! or deletes its local partition replicas from the [`ImageChange`]s that applying returns.
//!
//! Placement ([`place_replicas`]) is computed once, by the controller (the metadata leader),
//! when it proposes a topic; the record carries the result, so every node applies the same
//! assignment whatever its own view of the brokers.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use crate::batch::{decode_records, BatchBuilder, BatchError};
use crate::types::{valid_topic_name, Millis, NodeId, PartitionId, TopicPartition};

/// The internal topic that holds the metadata log.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The metadata partition.
pub fn metadata_tp() -> TopicPartition {
    TopicPartition::new(METADATA_TOPIC, 0)
}

/// Whether clients may not produce to or fetch from this topic directly.
pub fn is_internal_topic(topic: &str) -> bool {
    topic == METADATA_TOPIC
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

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopic {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RecordKind {
    #[prost(message, tag = "1")]
    CreateTopic(CreateTopic),
    #[prost(message, tag = "2")]
    DeleteTopic(DeleteTopic),
}

/// One metadata change, the value of one record in the metadata log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataRecord {
    #[prost(oneof = "RecordKind", tags = "1, 2")]
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
}

/// The state the metadata log describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicMeta>,
    /// Records applied so far.
    pub records_applied: u64,
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
                for p in &c.partitions {
                    partitions.insert(p.partition, p.replicas.clone());
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
                        configs: c.configs.clone(),
                    },
                );
            }
            Some(RecordKind::DeleteTopic(d)) => {
                if let Some(t) = self.topics.remove(&d.name) {
                    for p in t.partitions.keys() {
                        changes.push(ImageChange::PartitionRemoved {
                            tp: TopicPartition::new(t.name.clone(), *p),
                        });
                    }
                }
            }
            None => {}
        }
        changes
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

/// Why a topic cannot be created as asked (each maps onto a Kafka error code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("invalid number of partitions {0}")]
    InvalidPartitions(i64),
    #[error("replication factor {asked} is not in 1..={brokers}")]
    InvalidReplicationFactor { asked: i64, brokers: usize },
}

/// Chooses replicas for a new topic: partition `p` starts at broker `(start + p) % n` and takes
/// the next `rf` brokers, where `start` is the number of partitions already in the cluster, so
/// replicas and preferred leaders stay spread across topics.
pub fn place_replicas(
    image: &MetadataImage,
    brokers: &[NodeId],
    name: &str,
    partitions: i64,
    replication_factor: i64,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    if !valid_topic_name(name) || is_internal_topic(name) {
        return Err(PlacementError::InvalidTopic(name.to_string()));
    }
    if partitions < 1 || partitions > PARTITIONS_PER_TOPIC_MAX as i64 {
        return Err(PlacementError::InvalidPartitions(partitions));
    }
    let mut ids = brokers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len();
    if replication_factor < 1 || replication_factor as usize > n {
        return Err(PlacementError::InvalidReplicationFactor {
            asked: replication_factor,
            brokers: n,
        });
    }
    let start: usize = image.topics.values().map(|t| t.partitions.len()).sum();
    Ok((0..partitions as usize)
        .map(|p| PartitionAssignment {
            partition: p as PartitionId,
            replicas: (0..replication_factor as usize)
                .map(|j| ids[(start + p + j) % n])
                .collect(),
        })
        .collect())
}

/// A stable 16-byte topic id derived from the name and the record's position, so that a topic
/// re-created after a delete gets a different id (as Kafka's UUIDs would).
pub fn topic_id(name: &str, salt: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4]
        .iter()
        .enumerate()
    {
        let mut h = *seed ^ salt;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out[half * 8..half * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
