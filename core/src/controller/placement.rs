//! Replica placement for new topics, and the checks of a manual assignment. Computed once, by
//! the controller, when it proposes a topic: the record carries the result, so every node
//! applies the same assignment whatever its own view of the brokers.

use super::image::{
    is_internal_topic, MetadataImage, PartitionAssignment, PARTITIONS_PER_TOPIC_MAX,
};
use crate::types::{valid_topic_name, NodeId, PartitionId};

/// Why a topic cannot be created as asked (each maps onto a Kafka error code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("invalid number of partitions {0}")]
    InvalidPartitions(i64),
    #[error("replication factor {asked} is not in 1..={brokers}")]
    InvalidReplicationFactor { asked: i64, brokers: usize },
    #[error("invalid replica assignment: {0}")]
    InvalidAssignment(String),
}

/// Checks a manual replica assignment (partition `i` gets `assignments[i]`): at least one
/// partition, every partition the same positive number of distinct replicas, every replica a
/// known broker (configured or registered; a fenced broker is allowed, as in Kafka, since it
/// may be back soon).
pub fn check_assignment(
    image: &MetadataImage,
    configured: &[NodeId],
    name: &str,
    assignments: &[Vec<NodeId>],
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    if !valid_topic_name(name) || is_internal_topic(name) {
        return Err(PlacementError::InvalidTopic(name.to_string()));
    }
    let n = assignments.len();
    if n == 0 || n > PARTITIONS_PER_TOPIC_MAX as usize {
        return Err(PlacementError::InvalidPartitions(n as i64));
    }
    let bad = |m: String| Err(PlacementError::InvalidAssignment(m));
    let rf = assignments[0].len();
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != rf {
            return bad(format!(
                "partition {p} has {} replicas; every partition needs the same number (>= 1)",
                replicas.len()
            ));
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return bad(format!("partition {p} names a broker twice: {replicas:?}"));
        }
        if let Some(b) = replicas
            .iter()
            .find(|b| !configured.contains(b) && !image.brokers.contains_key(b))
        {
            return bad(format!("partition {p}: broker {b} is not known"));
        }
    }
    Ok(assignments
        .iter()
        .enumerate()
        .map(|(p, replicas)| PartitionAssignment {
            partition: p as PartitionId,
            replicas: replicas.clone(),
            created: Vec::new(),
        })
        .collect())
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
    place(image, brokers, partitions, replication_factor)
}

/// [`place_replicas`] for an internal topic, which only the controller creates.
pub fn place_internal(
    image: &MetadataImage,
    brokers: &[NodeId],
    name: &str,
    partitions: i64,
    replication_factor: i64,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    assert!(is_internal_topic(name), "{name} is not an internal topic");
    place(image, brokers, partitions, replication_factor)
}

fn place(
    image: &MetadataImage,
    brokers: &[NodeId],
    partitions: i64,
    replication_factor: i64,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
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
            created: Vec::new(),
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
