//! Railyard's deterministic simulator. One `u64` seed drives a cluster of core nodes over a
//! simulated network and simulated disks with swarm-drawn faults, a Jepsen-style workload, the
//! shared checker of `railyard-jepsen`, white-box raft checks and a liveness phase.
//!
//! Nothing here reads a clock, spawns a thread or draws unseeded randomness, so a seed replays
//! exactly; `cargo run -p railyard-sim --release -- --seed S` reproduces any failure.

pub mod disk;
pub mod faults;
pub mod group_client;
pub mod log;
pub mod mutations;
pub mod net;
pub mod workload;
pub mod world;

pub use world::{run, run_catching, Scenario, SimOptions, SimReport};
