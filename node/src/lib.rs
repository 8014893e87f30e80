//! The Railyard broker: runs the sans-IO core on real machines.
//!
//! - [`file_disk`]: the core's `Disk` over `std::fs` with `fdatasync`.
//! - [`broker`]: the interface between the Kafka listener and the runtime.
//! - [`kafka`]: the Kafka wire-protocol listener (kafka-protocol crate).
//! - [`config`]: TOML config with CLI and environment overrides, static topic placement.
//! - [`runtime`]: the core thread that owns the sans-IO node and does all disk IO.
//! - [`transport`]: TCP between nodes (length-prefixed prost envelopes, bounded queues).
//! - [`server`]: wires them together into a running node.
//! - [`metrics`]: request, fsync and partition metrics, rendered for Prometheus.
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/health`, `/v1/cluster`).
//! - [`dev_console`]: the banner and event lines `railyard dev` shows in the terminal.
//! - [`cli`]: the client subcommands (`topic`, `produce`, `consume`, `group`, `cluster`), on
//!   `railyard-client`.
//! - [`bench`]: `railyard bench` (produce, consume, e2e) on `railyard-client`, with the
//!   machine's limits measured in the same run.

pub mod admin;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod dev_console;
pub mod file_disk;
pub mod kafka;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod transport;
