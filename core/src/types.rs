//! Domain types shared by every layer: node ids, topics, partitions, offsets, terms and time.
//!
//! They are plain newtypes and aliases so that a Kafka offset can never be confused with a raft
//! index, and a leader epoch is visibly the raft term of the entry that carries a batch.

use std::fmt;

/// A broker's id. Raft peer ids are the same number (raft-rs reserves 0, so ids start at 1).
pub type NodeId = u64;

/// Raft term. Kafka's `partitionLeaderEpoch` of a stored batch is the term of its raft entry.
pub type Term = u64;

/// A raft log index. Distinct from [`Offset`]: raft entries that carry no records (empty leader
/// entries, configuration changes) take an index but no Kafka offset.
pub type RaftIndex = u64;

/// A Kafka offset: the position of a record in a partition.
pub type Offset = i64;

/// Milliseconds. Core never reads a clock: time enters every call as an argument.
pub type Millis = i64;

/// A partition number within a topic.
pub type PartitionId = i32;

/// A topic-partition, the unit of replication: each one is its own raft group.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    /// The directory that holds this partition's files on a [`crate::disk::Disk`]. Kafka names
    /// it `<topic>-<partition>`; topic names are restricted to `[A-Za-z0-9._-]`, so the name is
    /// unambiguous.
    pub fn dir(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The internal topic that holds the metadata log.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The group coordinator's topic (consumer groups and committed offsets).
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The transaction coordinator's topic.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Every internal topic: the one list. Clients cannot create, delete or produce to these
/// (Kafka's INVALID_TOPIC_EXCEPTION / TOPIC_ALREADY_EXISTS), and Metadata marks them internal.
pub const INTERNAL_TOPICS: [&str; 3] = [
    METADATA_TOPIC,
    CONSUMER_OFFSETS_TOPIC,
    TRANSACTION_STATE_TOPIC,
];

/// Whether this is one of [`INTERNAL_TOPICS`].
pub fn is_internal_topic(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}

/// Checks a topic name the way Kafka does: 1..=249 characters of `[A-Za-z0-9._-]`, not `.`
/// or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_topic_names() {
        assert!(valid_topic_name("orders.v1_x-2"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
        assert_eq!(TopicPartition::new("t", 3).dir(), "t-3");
    }
}
