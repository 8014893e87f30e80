//! The Railyard broker: runs the sans-IO core on real machines.
//!
//! - [`file_disk`]: the core's `Disk` over `std::fs` with `fdatasync`.
//! - [`broker`]: the interface between the Kafka listener and the runtime.
//! - [`kafka`]: the Kafka wire-protocol listener (kafka-protocol crate).

pub mod broker;
pub mod file_disk;
pub mod kafka;
