//! The classic Kafka group coordinator: consumer groups and committed offsets, one
//! [`GroupCoordinator`] per `__consumer_offsets` partition (DESIGN.md section 5).
//!
//! - [`api`]: the requests and replies, independent of the wire format, and [`GroupError`];
//! - [`records`]: Kafka's `__consumer_offsets` key/value formats, by hand;
//! - [`state`]: the committed state the records build, and its snapshot;
//! - `coordinator`: the [`crate::machine::PartitionMachine`], loading, proposals, routing;
//! - `live`, `membership`: live groups and the JoinGroup/SyncGroup/Heartbeat/LeaveGroup
//!   protocol; `offsets`: OffsetCommit/OffsetFetch and the admin requests.

pub mod api;
mod coordinator;
mod live;
mod membership;
mod offsets;
pub mod records;
pub mod state;
#[cfg(test)]
mod tests;

pub use self::api::*;
pub use self::coordinator::{GroupConfig, GroupCoordinator};

/// Kafka's default number of `__consumer_offsets` partitions (`offsets.topic.num.partitions`).
pub const OFFSETS_PARTITIONS_DEFAULT: u32 = 50;

/// The `__consumer_offsets` partition that coordinates `group`, as Kafka computes it:
/// `Utils.abs(groupId.hashCode) % partitions`, with Java's `String.hashCode` over UTF-16 code
/// units and `Utils.abs(Integer.MIN_VALUE) = 0`. Clients never compute it (FindCoordinator
/// answers), but tools and tests compare it with Kafka's.
pub fn coordinator_partition(group: &str, partitions: u32) -> i32 {
    assert!(partitions > 0, "a topic has partitions");
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    (abs as u32 % partitions) as i32
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn test_coordinator_partition_matches_java_hash() {
        // Proves Java's String.hashCode (UTF-16, surrogate pairs) and Kafka's Utils.abs.
        let cases = [
            ("", 0),
            ("a", 47),
            ("test-group", 12),
            ("my-consumer-group", 13),
            ("console-consumer-12345", 6),
            ("grüppe", 12),
            ("😀x", 39),
            ("polygenelubricants", 0), // hashCode is Integer.MIN_VALUE
        ];
        for (group, want) in cases {
            assert_eq!(coordinator_partition(group, 50), want, "{group:?}");
        }
        assert_eq!(coordinator_partition("test-group", 1), 0);
    }
}
