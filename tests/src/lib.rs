//! Railyard's test kit, and the home of the workspace-level tests.
//!
//! Every helper a test needs beyond its own assertions lives here, once; a test file that
//! finds itself writing a wait loop, a port picker, a cluster or a client config adds it here
//! instead.
//!
//! - [`ports`]: free loopback ports below the ephemeral range, for node configs.
//! - [`eventually`]: bounded waits ([`eventually()`], [`eventually_async`], [`Deadline`]) that
//!   panic naming what they waited for, how long, and what they saw last.
//! - [`cluster`]: node configs written as TOML ([`Spec`]), an [`InProcessCluster`] (nodes in
//!   this process on files or in-memory disks) and a [`ProcessCluster`] (`railyard start`
//!   children, for kill -9 and restarts).
//! - [`profiles`]: librdkafka client configs (producer, assign consumer, plain client), the
//!   read-back loop every rdkafka test uses, a background producer for fault tests and the
//!   tokio runtime its futures run on.
//! - [`kafka_conn`]: a raw Kafka connection over kafka-protocol, async ([`KafkaConn`]) and
//!   blocking ([`kafka_conn::call_blocking`]).
//! - [`murmur2`]: the Java client's partitioner, to check where keyed records land.
//!
//! The suites, in `tests/`:
//! - `core_is_sans_io.rs`: the core depends on no IO crate.
//! - `kafka_listener.rs`: the Kafka listener end to end (kafka-protocol requests over loopback)
//!   against real nodes on in-memory disks; the conditions a real node cannot be put in are
//!   unit tests of the handlers in `node/src/kafka/handlers/`.
//! - `rdkafka_interop.rs`: 100k keyed acks=all records through librdkafka, murmur2 placement.
//! - `rdkafka_admin.rs`: librdkafka's AdminClient against a cluster without configured topics.
//! - `learners.rs`: a broker that follows the metadata log as a raft learner; auto-creation;
//!   fencing.
//! - `protocol_snapshots.rs`: insta snapshots of ApiVersions and Metadata.
//!
//! Real-process tests live in `node/tests/`: kill -9 and whole-cluster restart in `process.rs`,
//! a wall-clock step of one node (under libfaketime) in `clock_step.rs`. Cargo tells only the
//! `railyard-node` crate's integration tests where the `railyard` binary is, so that crate
//! takes this one as a dev-dependency (a dev-dependency cycle, which cargo allows) and hands
//! the binary to [`ProcessCluster::start`].

pub mod cluster;
pub mod eventually;
pub mod kafka_conn;
pub mod murmur2;
pub mod ports;
pub mod profiles;

pub use cluster::in_process::{Disks, InProcessCluster};
pub use cluster::process::ProcessCluster;
pub use cluster::{topic, Spec};
pub use eventually::{eventually, eventually_async, Deadline};
pub use kafka_conn::KafkaConn;
pub use murmur2::{java_partition, murmur2};
pub use ports::free_addr;
