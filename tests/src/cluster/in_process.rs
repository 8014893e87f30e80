//! A cluster of nodes inside the test process: each node's core thread, its listeners and its
//! transport run as they do in `railyard start`, inside the calling tokio runtime. Data lives
//! in files under one temp dir ([`Disks::Files`], with fsync, as in production) or in each
//! node's in-memory `MemDisk` ([`Disks::Memory`], for tests of the layers above storage).
//! Dropping the cluster stops the core threads; the tokio tasks end with the runtime.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use railyard_node::broker::{Broker, ClusterView};
use railyard_node::config::{NodeConfig, TopicConfig};
use railyard_node::server::{start_node_on, RunningNode, Storage};

use super::Spec;
use crate::eventually::eventually_async;

/// Where the nodes of an [`InProcessCluster`] keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disks {
    /// A `FileDisk` in each node's data directory under the cluster's temp dir.
    Files,
    /// A fresh `MemDisk` per node: nothing is fsynced and nothing survives the node.
    Memory,
}

/// Nodes started in this process, in id order (`nodes[i]` is node `i + 1`).
pub struct InProcessCluster {
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<RunningNode>,
    /// Holds the config files (and, with [`Disks::Files`], the data).
    _dir: tempfile::TempDir,
}

impl InProcessCluster {
    /// Starts `n` nodes hosting `topics`, on files.
    pub async fn start(n: u64, topics: Vec<TopicConfig>) -> InProcessCluster {
        InProcessCluster::start_with(n, topics, "").await
    }

    /// Starts `n` nodes hosting `topics`, on files, with `extra_toml` (top-level keys such as
    /// `controller_voters = [1, 2, 3]`) in every node's config.
    pub async fn start_with(
        n: u64,
        topics: Vec<TopicConfig>,
        extra_toml: &str,
    ) -> InProcessCluster {
        let mut spec = Spec::new(n, topics);
        spec.extra_toml = extra_toml.to_string();
        InProcessCluster::start_spec(&spec, Disks::Files).await
    }

    /// Starts the nodes `spec` describes on `disks`.
    pub async fn start_spec(spec: &Spec, disks: Disks) -> InProcessCluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let configs: Vec<NodeConfig> = spec
            .write_configs(dir.path())
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let logger = test_logger();
        let mut nodes = Vec::new();
        for c in &configs {
            let storage = match disks {
                Disks::Files => Storage::DataDir,
                Disks::Memory => Storage::Disk(Box::new(|| {
                    Rc::new(railyard_core::disk::MemDisk::new())
                        as Rc<dyn railyard_core::disk::Disk>
                })),
            };
            nodes.push(
                start_node_on(c.clone(), &logger, storage)
                    .await
                    .unwrap_or_else(|e| panic!("node {} failed to start: {e}", c.id)),
            );
        }
        InProcessCluster {
            configs,
            nodes,
            _dir: dir,
        }
    }

    /// `host:port,...` of every Kafka listener.
    pub fn bootstrap(&self) -> String {
        super::bootstrap(self.nodes.iter().map(|n| n.kafka_addr))
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &RunningNode {
        self.nodes
            .iter()
            .find(|n| n.handle.node_id() == id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    /// Every node's current cluster view, in node order.
    pub fn views(&self) -> Vec<Arc<ClusterView>> {
        self.nodes.iter().map(|n| n.handle.cluster()).collect()
    }

    /// Waits until `done` holds for the views of all nodes (in node order); panics naming
    /// `what`, with the last views, after `within`. Returns the views that passed.
    pub async fn wait_for_views(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Arc<ClusterView>]) -> bool,
    ) -> Vec<Arc<ClusterView>> {
        let done = &done;
        eventually_async(what, within, move || async move {
            let views = self.views();
            if done(&views) {
                Ok(views)
            } else {
                Err(views)
            }
        })
        .await
    }

    /// Waits until the configured topics exist with all their partitions, and every node sees
    /// a leader for every partition and agrees with the others on which (nodes learn the
    /// leaders of partitions they do not host through the metadata log). Returns the agreed
    /// view (as node 1 publishes it).
    pub async fn wait_for_leaders(&self, within: Duration) -> Arc<ClusterView> {
        let topics = &self.configs[0].topics;
        let views = self
            .wait_for_views("an agreed leader for every partition", within, |views| {
                has_topics(&views[0], topics) && agreed_leaders(views) && identified(views)
            })
            .await;
        views[0].clone()
    }

    /// [`InProcessCluster::wait_for_leaders`] (which also waits for every node to report the
    /// cluster's id), and moreover every node naming the same
    /// controller. Returns the agreed view (as node 1 publishes it).
    pub async fn wait_for_settled(&self, within: Duration) -> Arc<ClusterView> {
        let topics = &self.configs[0].topics;
        let views = self
            .wait_for_views("agreed leaders and controller", within, |views| {
                let controller = views[0].controller();
                has_topics(&views[0], topics)
                    && controller.is_some()
                    && views.iter().all(|v| v.controller() == controller)
                    && agreed_leaders(views)
                    && identified(views)
            })
            .await;
        views[0].clone()
    }
}

impl Drop for InProcessCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.handle.shutdown();
        }
    }
}

/// Whether `view` holds each of `topics` with all its partitions.
fn has_topics(view: &ClusterView, topics: &[TopicConfig]) -> bool {
    topics.iter().all(|t| {
        view.topic(&t.name)
            .is_some_and(|v| v.partitions.len() == t.partitions as usize)
    })
}

/// Whether every partition of the first view has a leader that every view names.
fn agreed_leaders(views: &[Arc<ClusterView>]) -> bool {
    let Some(first) = views.first() else {
        return false;
    };
    first.topics().iter().all(|t| {
        t.partitions.iter().all(|p| {
            p.leader.is_some()
                && views.iter().all(|v| {
                    v.partition(&t.name, p.partition)
                        .is_some_and(|vp| vp.leader == p.leader)
                })
        })
    })
}

/// The nodes' logger: silent, unless `RAILYARD_TEST_LOG` names a level (`debug`, `info`, ...),
/// in which case every node logs to stderr at that level (to see why a test failed).
fn test_logger() -> slog::Logger {
    use slog::Drain;
    let Some(level) = std::env::var("RAILYARD_TEST_LOG")
        .ok()
        .and_then(|l| l.parse::<slog::Level>().ok())
    else {
        return slog::Logger::root(slog::Discard, slog::o!());
    };
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(drain.filter_level(level).fuse(), slog::o!())
}

/// Every view reports the cluster's id (the metadata log has named it).
fn identified(views: &[Arc<ClusterView>]) -> bool {
    views.iter().all(|v| !v.cluster_id().is_empty())
}
