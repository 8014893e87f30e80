//! `railyard-client`: an async Kafka-protocol client for Railyard, on tokio.
//!
//! It speaks only the Kafka wire protocol (through the `kafka-protocol` crate), so it works
//! against any broker that implements the same API versions. The parts:
//!
//! - [`Producer`]: `send` returns a future of (partition, offset); murmur2 partitioning
//!   identical to the Java client, sticky partitioning for records without a key; batching with
//!   `linger_ms` and `batch_size_bytes`; a memory bound that makes `send` wait; gzip, snappy,
//!   lz4 and zstd; acks 0, 1 or all; idempotence on by default.
//! - [`Consumer`]: `assign`, or `subscribe` through a consumer group (range or
//!   cooperative-sticky assignment, background heartbeats, rebalance events, static
//!   membership); `poll`, `seek`, `offsets_for_times`, commits, pause and resume.
//! - [`Admin`]: topics and their configs, the cluster, groups, offsets and lag.
//!
//! Underneath, [`cluster::Cluster`] keeps one pipelined [`conn::Connection`] per broker and a
//! metadata cache, and retries retriable errors with backoff; every error is an [`Error`] that
//! names the broker and the Kafka error code.

#![warn(missing_docs)]

pub mod admin;
pub mod cluster;
pub mod codec;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod producer;
mod random;
mod tasks;

pub use admin::{Admin, BrokerStatus, NewTopic, OffsetSpec, PartitionReassignment};
pub use cluster::ClientConfig;
pub use codec::Compression;
pub use consumer::assignor::Assignor;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceEvent};
pub use error::{Error, ResponseError, Result};
pub use producer::accumulator::TopicPartition;
pub use producer::{
    Acks, BatchStats, Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
