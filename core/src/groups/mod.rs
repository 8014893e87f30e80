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
