//! Clusters for tests: the node configs they share, and two ways to run them.
//!
//! - [`in_process`]: every node inside the test process and its tokio runtime, on files in a
//!   temp dir or on in-memory disks.
//! - [`process`]: every node a `railyard start` child process, for kill -9 and restarts.
//!
//! Both write each node's config as TOML and load it with [`NodeConfig::from_file`], so the
//! tests go through the same format as `railyard start` (and fields added later with defaults
//! need no change here).

pub mod in_process;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use railyard_node::config::{NodeConfig, TopicConfig};

use crate::ports::free_addr;

/// The tick of a node whose test does not choose one (the node's own default).
pub const TICK_MS: u64 = 100;

/// A topic of `partitions` partitions replicated `rf` times.
pub fn topic(name: &str, partitions: u32, rf: u32) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        partitions,
        replication_factor: rf,
    }
}

/// A Kafka bootstrap list, `host:port,...`, of these listeners.
pub fn bootstrap(kafka_addrs: impl Iterator<Item = SocketAddr>) -> String {
    kafka_addrs
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What every node of a test cluster is configured with.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Nodes 1..=nodes.
    pub nodes: u64,
    /// Created at startup through the controller.
    pub topics: Vec<TopicConfig>,
    /// Top-level TOML keys added to every node's config (`controller_voters = [1, 2, 3]`).
    pub extra_toml: String,
    pub tick_ms: u64,
    /// `__consumer_offsets` partitions (0: no consumer groups, and no internal topic besides
    /// the metadata log). Test clusters use few: each is a raft group on every node.
    pub offsets_partitions: u32,
    /// `group_initial_rebalance_delay_ms`: 0 here, so group tests need not wait 3 s.
    pub initial_rebalance_delay_ms: u32,
}

/// `__consumer_offsets` partitions of a test cluster that uses consumer groups (see
/// [`Spec::with_groups`]); other test clusters have none, so their topic lists are theirs.
pub const OFFSETS_PARTITIONS: u32 = 5;

impl Spec {
    /// `nodes` nodes hosting `topics`, ticking every [`TICK_MS`].
    pub fn new(nodes: u64, topics: Vec<TopicConfig>) -> Spec {
        Spec {
            nodes,
            topics,
            extra_toml: String::new(),
            tick_ms: TICK_MS,
            offsets_partitions: 0,
            initial_rebalance_delay_ms: 0,
        }
    }

    /// This spec with [`OFFSETS_PARTITIONS`] partitions of `__consumer_offsets`.
    pub fn with_groups(mut self) -> Spec {
        self.offsets_partitions = OFFSETS_PARTITIONS;
        self
    }

    /// Writes the config of every node, on fresh loopback ports sharing one peer list, as
    /// `root/node-<id>.toml` with data directory `root/node-<id>`, and loads it back. Returns
    /// each config with the path of its file.
    pub fn write_configs(&self, root: &Path) -> Vec<(PathBuf, NodeConfig)> {
        let peers: Vec<(u64, SocketAddr, SocketAddr)> = (1..=self.nodes)
            .map(|id| (id, free_addr(), free_addr()))
            .collect();
        (1..=self.nodes)
            .map(|id| {
                let mut text = self.extra_toml.clone();
                text += &node_toml(id, &root.join(format!("node-{id}")), &peers, self);
                let path = root.join(format!("node-{id}.toml"));
                std::fs::write(&path, text).expect("writing a node config");
                let config = NodeConfig::from_file(&path).expect("a config we wrote parses");
                (path, config)
            })
            .collect()
    }
}

/// The TOML config of node `id`: `peers` are `(id, raft_addr, kafka_addr)`; the node listens
/// on its own pair.
fn node_toml(
    id: u64,
    data_dir: &Path,
    peers: &[(u64, SocketAddr, SocketAddr)],
    spec: &Spec,
) -> String {
    let &(_, raft, kafka) = peers
        .iter()
        .find(|p| p.0 == id)
        .expect("the node is among the peers");
    let mut t = format!(
        "id = {id}\ndata_dir = {:?}\nkafka_listen = \"{kafka}\"\nraft_listen = \"{raft}\"\n\
         tick_ms = {}\nlog_level = \"warning\"\noffsets_topic_num_partitions = {}\n\
         group_initial_rebalance_delay_ms = {}\n",
        data_dir.display().to_string(),
        spec.tick_ms,
        spec.offsets_partitions,
        spec.initial_rebalance_delay_ms
    );
    for (pid, raft, kafka) in peers {
        t +=
            &format!("\n[[peers]]\nid = {pid}\nraft_addr = \"{raft}\"\nkafka_addr = \"{kafka}\"\n");
    }
    for tc in &spec.topics {
        t += &format!(
            "\n[[topics]]\nname = {:?}\npartitions = {}\nreplication_factor = {}\n",
            tc.name, tc.partitions, tc.replication_factor
        );
    }
    t
}
