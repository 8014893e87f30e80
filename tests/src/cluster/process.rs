//! A cluster of `railyard start` child processes on loopback, for what only a real process
//! shows: kill -9, SIGTERM and restarts with the data left on disk. Each node has its own TOML
//! config, ports and data directory in one temp dir, and its stderr in a log file there; every
//! process is killed when the cluster is dropped, pass or fail, and a failing test prints the
//! end of each node's log. Leaders and in-sync replicas are read with a raw Metadata v12
//! request to one node at a time, so each node is asked what it itself believes, and so are the
//! live brokers ([`brokers`]).
//!
//! A node may be given extra environment variables ([`NodeProcess::env`]) between
//! [`ProcessCluster::prepare`] and [`ProcessCluster::start_all`], e.g. to run it under an
//! `LD_PRELOAD` library; the cluster's temp dir ([`ProcessCluster::dir`]) holds whatever files
//! such a test needs beside the nodes'.
//!
//! The binary is the caller's to name: cargo tells only the integration tests of the crate that
//! owns it where it is (`env!("CARGO_BIN_EXE_railyard")` in `railyard-node`'s tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use railyard_node::config::NodeConfig;

use super::Spec;
use crate::eventually::{eventually, Deadline};
use crate::kafka_conn::call_blocking;

/// How long a node may take to exit after SIGTERM.
pub const TERMINATE_WITHIN: Duration = Duration::from_secs(15);

/// How many lines of each node's log a failing test prints.
const LOG_TAIL_LINES: usize = 30;

/// Environment variables that would override the config file; cleared for the children.
const OVERRIDES: [&str; 7] = [
    "RAILYARD_LOG",
    "RAILYARD_LOG_FORMAT",
    "RAILYARD_CONFIG",
    "RAILYARD_ID",
    "RAILYARD_DATA_DIR",
    "RAILYARD_KAFKA_LISTEN",
    "RAILYARD_RAFT_LISTEN",
];

/// One `railyard start` child process (absent while stopped).
pub struct NodeProcess {
    pub id: u64,
    pub kafka: SocketAddr,
    /// Set in the child's environment at every start, after the [`OVERRIDES`] are cleared.
    pub env: Vec<(String, String)>,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts the process (it must not be running), its stderr appended to the node's log.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node log");
        let mut cmd = Command::new(&self.binary);
        for var in OVERRIDES {
            cmd.env_remove(var);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let child = cmd
            .args(["--log-level", "warning", "start", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Whether the process is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `within` for the process to exit on its own; its exit status, or `None`
    /// if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().expect("waiting for railyard") {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the node has logged so far (its stderr, across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL and fail after [`TERMINATE_WITHIN`]).
    pub fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Deadline::new(
            format!("node {} to exit on SIGTERM", self.id),
            TERMINATE_WITHIN,
        );
        let exit = loop {
            if let Some(exit) = c.try_wait().expect("waiting for railyard") {
                break exit;
            }
            if deadline.elapsed() >= TERMINATE_WITHIN {
                let _ = c.kill();
                let _ = c.wait();
            }
            deadline.pause_blocking("still running");
        };
        assert!(
            exit.success(),
            "node {} exited with {exit} on SIGTERM",
            self.id
        );
    }

    /// The last `n` lines of the node's log, newest first.
    fn log_tail(&self, n: usize) -> Vec<String> {
        let log = self.log();
        log.lines().rev().take(n).map(String::from).collect()
    }
}

/// `railyard start` processes sharing a peer list; killed on drop.
pub struct ProcessCluster {
    pub nodes: Vec<NodeProcess>,
    dir: tempfile::TempDir,
    spec: Spec,
    /// The first node's config: its peer list and controller quorum, which a joiner names.
    first: NodeConfig,
}

impl ProcessCluster {
    /// Starts the nodes `spec` describes, each as `binary start --config <its file>`.
    pub fn start(binary: &Path, spec: &Spec) -> ProcessCluster {
        let mut cluster = ProcessCluster::prepare(binary, spec);
        cluster.start_all();
        cluster
    }

    /// Writes the configs of the nodes `spec` describes and starts none of them (see
    /// [`ProcessCluster::start_all`]).
    pub fn prepare(binary: &Path, spec: &Spec) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let configs = spec.write_configs(dir.path());
        let first = configs.first().expect("a cluster has nodes").1.clone();
        let nodes: Vec<NodeProcess> = configs
            .into_iter()
            .map(|(config, c)| NodeProcess {
                id: c.id,
                kafka: c.kafka_listen,
                env: Vec::new(),
                binary: binary.to_path_buf(),
                config,
                log: dir.path().join(format!("node-{}.log", c.id)),
                child: None,
            })
            .collect();
        ProcessCluster {
            nodes,
            dir,
            spec: spec.clone(),
            first,
        }
    }

    /// Adds node `id` (not started), configured to join the running cluster: `join = true`,
    /// the cluster's controller quorum and their peer entries, its own fresh ports, and the
    /// data directory `data_dir` (default: `node-<id>` in the cluster's temp dir).
    pub fn add_joiner(&mut self, id: u64, data_dir: Option<PathBuf>) -> &mut NodeProcess {
        let root = self.dir.path();
        let data_dir = data_dir.unwrap_or_else(|| root.join(format!("node-{id}")));
        let voters = self.first.controller_voters();
        let mut peers: Vec<(u64, SocketAddr, SocketAddr)> = self
            .first
            .peers
            .iter()
            .filter(|p| voters.contains(&p.id))
            .map(|p| (p.id, p.raft_addr, p.kafka_addr))
            .collect();
        let (raft, kafka) = (crate::ports::free_addr(), crate::ports::free_addr());
        peers.push((id, raft, kafka));
        let mut text = format!("join = true\ncontroller_voters = {voters:?}\n");
        text += &super::node_toml(id, &data_dir, &peers, &self.spec);
        let path = root.join(format!("node-{id}.toml"));
        std::fs::write(&path, text).expect("writing a node config");
        self.nodes.push(NodeProcess {
            id,
            kafka,
            env: Vec::new(),
            binary: self.nodes[0].binary.clone(),
            config: path,
            log: root.join(format!("node-{id}.log")),
            child: None,
        });
        self.nodes.last_mut().expect("just pushed")
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) {
        for n in self.nodes.iter_mut().filter(|n| !n.is_running()) {
            n.start();
        }
    }

    /// The temp dir of the configs, data directories and logs; removed with the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `host:port,...` of every node's Kafka listener.
    pub fn bootstrap(&self) -> String {
        super::bootstrap(self.nodes.iter().map(|n| n.kafka))
    }

    /// The node with this id.
    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// The running node that, asked itself, says it leads `partition` of `topic`, and the ISR
    /// it reports.
    pub fn self_declared_leader(&self, topic: &str, partition: i32) -> Option<(u64, Vec<u64>)> {
        self.nodes.iter().filter(|n| n.is_running()).find_map(|n| {
            let (leader, isr) = partition_state(n.kafka, topic, partition)?;
            (leader == Some(n.id)).then_some((n.id, isr))
        })
    }

    /// Waits until some running node other than `not` declares itself leader of the partition
    /// and every other running node agrees; returns it and when that was first seen.
    pub fn wait_for_leader(
        &self,
        topic: &str,
        partition: i32,
        not: Option<u64>,
        within: Duration,
    ) -> (u64, Instant) {
        let what = format!("an agreed leader of {topic}/{partition} other than {not:?}");
        eventually(&what, within, || {
            let (leader, _) = self.self_declared_leader(topic, partition)?;
            let agreed = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                partition_state(n.kafka, topic, partition).map(|p| p.0) == Some(Some(leader))
            });
            (Some(leader) != not && agreed).then(|| (leader, Instant::now()))
        })
    }

    /// Waits for an agreed leader of each of the `partitions` partitions of `topic`.
    pub fn wait_for_all_leaders(&self, topic: &str, partitions: i32, within: Duration) {
        for p in 0..partitions {
            self.wait_for_leader(topic, p, None, within);
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            n.kill9();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!(
                    "--- node {} log (last {LOG_TAIL_LINES} lines, newest first)",
                    n.id
                );
                for l in n.log_tail(LOG_TAIL_LINES) {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Asks the node at `addr` for Metadata v12 and returns `partition`'s (leader, ISR) as that node
/// sees it; `None` if the node does not answer or does not list the partition.
pub fn partition_state(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
) -> Option<(Option<u64>, Vec<u64>)> {
    let p = partition_metadata(addr, topic, partition)?;
    let leader = (p.leader_id.0 >= 0).then_some(p.leader_id.0 as u64);
    Some((leader, p.isr_nodes.iter().map(|b| b.0 as u64).collect()))
}

/// The replicas of `partition` as the node at `addr` lists them, the preferred leader first;
/// `None` if the node does not answer or does not list the partition.
pub fn replicas(addr: SocketAddr, topic: &str, partition: i32) -> Option<Vec<u64>> {
    let p = partition_metadata(addr, topic, partition)?;
    Some(p.replica_nodes.iter().map(|b| b.0 as u64).collect())
}

fn partition_metadata(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
) -> Option<MetadataResponsePartition> {
    let request = MetadataRequest::default().with_topics(None);
    let resp: MetadataResponse = call_blocking(addr, &request, 12, Duration::from_secs(2)).ok()?;
    let t = resp
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))?;
    t.partitions
        .into_iter()
        .find(|p| p.partition_index == partition)
}

/// The brokers one node lists in Metadata, and the controller it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brokers {
    /// Sorted: the registered and unfenced brokers, the node itself and every leader it names.
    pub ids: Vec<u64>,
    pub controller: Option<u64>,
}

/// One line of what the node at `addr` answers Metadata v12 for `topic`: brokers, controller
/// and each partition's error, leader and epoch; for a test's failure message.
pub fn describe_metadata(addr: SocketAddr, topic: &str) -> String {
    let request = MetadataRequest::default().with_topics(None);
    let resp: MetadataResponse = match call_blocking(addr, &request, 12, Duration::from_secs(2)) {
        Ok(r) => r,
        Err(e) => return format!("{addr}: no answer ({e})"),
    };
    let brokers: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
    let partitions: Vec<String> = resp
        .topics
        .iter()
        .filter(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            format!(
                "p{} err {} leader {} epoch {}",
                p.partition_index, p.error_code, p.leader_id.0, p.leader_epoch
            )
        })
        .collect();
    format!(
        "{addr}: brokers {brokers:?} controller {} {topic}: [{}]",
        resp.controller_id.0,
        partitions.join("; ")
    )
}

/// Asks the node at `addr` for Metadata v12 without topics; `None` if it does not answer.
pub fn brokers(addr: SocketAddr) -> Option<Brokers> {
    let request = MetadataRequest::default().with_topics(Some(Vec::new()));
    let resp: MetadataResponse = call_blocking(addr, &request, 12, Duration::from_secs(2)).ok()?;
    let mut ids: Vec<u64> = resp.brokers.iter().map(|b| b.node_id.0 as u64).collect();
    ids.sort_unstable();
    let controller = (resp.controller_id.0 >= 0).then_some(resp.controller_id.0 as u64);
    Some(Brokers { ids, controller })
}
