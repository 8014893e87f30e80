//! Railyard's sans-IO replication core.
//!
//! Every partition is a raft group (tikv/raft-rs) whose log *is* the Kafka partition log. This
//! crate holds the state machines only: it reads no clock, opens no socket or file, spawns no
//! thread and draws no unseeded randomness. Disk and network are the [`disk::Disk`] and
//! [`network::Network`] traits; the simulator (`railyard-sim`) and the real node
//! (`railyard-node`) implement them, and the shared driver ([`node::Node::step`]) pumps a [`node::Node`]'s outputs
//! into them in the order raft-rs requires.

pub mod api;
pub mod batch;
pub mod cluster_id;
pub mod controller;
pub mod disk;
pub mod groups;
pub mod log;
pub mod machine;
pub mod mutation;
pub mod network;
pub mod node;
pub mod partition_command;
pub mod producer_ids;
pub mod producers;
pub mod replica;
pub mod snapshot;
pub mod storage;
pub mod topic_config;
pub mod types;
pub mod view;

/// The controller's records, image and placement, under their former name.
pub use controller as metadata;
