//! The cluster as clients see it: live brokers with their listeners, and every partition's
//! leader, leader epoch and ISR. The rules live here, in core, so the simulator runs them: the
//! runtime publishes exactly what [`brokers`] and [`topics`] return.
//!
//! - **Brokers:** the configured ones with the listener and rack they registered, plus any
//!   other registered broker, minus the fenced (Kafka lists only live brokers) and the
//!   unregistered (decommissioned: gone, even when still in a config's peers). A node always
//!   lists itself and every broker its view names a partition's leader: the controller fences
//!   a broker silent towards it, which may still lead a raft group its followers reach, and a
//!   client must be able to reach the leader it is told of (librdkafka takes a leader missing
//!   from the broker list for a lasting error, and stops asking for that partition).
//! - **Leaders:** the local replica's knowledge when it leads, or knows the leader of a newer
//!   term than the metadata log's record; else the record, which leaders report to the
//!   controller, so partitions hosted elsewhere have leaders too. While an election runs (a
//!   newer term, its leader not yet known) the record stays: a client asking the old leader
//!   is told NOT_LEADER and asks again, while "no leader" sticks in librdkafka's metadata
//!   cache for some requests (watermark and offset queries fail until the cache expires).

use std::collections::{BTreeMap, BTreeSet};

use crate::mutation::{self, Mutation};
use crate::node::Node;
use crate::types::{NodeId, PartitionId, TopicPartition};

/// A broker as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: NodeId,
    /// Host clients connect to (the advertised Kafka listener).
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// One partition as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: PartitionId,
    /// The current leader, if one is known.
    pub leader: Option<NodeId>,
    /// The leader's raft term (Kafka's leader epoch); -1 when nothing is known.
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    /// Voters caught up with the leader.
    pub isr: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    /// A stable topic id (Kafka's UUID).
    pub id: [u8; 16],
    /// Sorted by partition.
    pub partitions: Vec<PartitionView>,
    /// Topic config overrides set at creation (`retention.ms`, ...); absent keys are defaults.
    pub configs: BTreeMap<String, String>,
}

/// The live brokers (module docs), sorted by id. `configured` are the brokers the node was
/// started with, as configured (used until they register); `topics` is what [`topics`]
/// returned, whose leaders are listed even when fenced.
pub fn brokers(node: &Node, configured: &[BrokerInfo], topics: &[TopicView]) -> Vec<BrokerInfo> {
    let image = node.metadata();
    let mut leaders: BTreeSet<NodeId> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().filter_map(|p| p.leader))
        .collect();
    if mutation::active(Mutation::HideFencedLeaders) {
        leaders.clear();
    }
    // A configured broker the image does not know is listed (it has not registered yet),
    // unless it was decommissioned and unregistered: then it is gone, configured or not.
    let listed = |id: NodeId| {
        id == node.id()
            || leaders.contains(&id)
            || (!image.unregistered.contains(&id)
                && image.brokers.get(&id).is_none_or(|m| !m.fenced))
    };
    let mut out: Vec<BrokerInfo> = configured
        .iter()
        .filter(|b| listed(b.id))
        .cloned()
        .collect();
    for b in out.iter_mut() {
        if let Some(m) = image.brokers.get(&b.id) {
            b.host = m.host.clone();
            b.port = m.port;
            b.rack = m.rack.clone();
        }
    }
    for m in image.brokers.values() {
        if listed(m.id) && !out.iter().any(|b| b.id == m.id) {
            out.push(BrokerInfo {
                id: m.id,
                host: m.host.clone(),
                port: m.port,
                rack: m.rack.clone(),
            });
        }
    }
    out.sort_by_key(|b| b.id);
    out
}

/// The registered brokers that `live` (what [`brokers`] returned) leaves out, fenced ones:
/// DescribeCluster lists them when asked (KIP-1073). An unregistered broker is in neither.
pub fn fenced_brokers(node: &Node, live: &[BrokerInfo]) -> Vec<BrokerInfo> {
    node.metadata()
        .brokers
        .values()
        .filter(|m| m.fenced && !live.iter().any(|b| b.id == m.id))
        .map(|m| BrokerInfo {
            id: m.id,
            host: m.host.clone(),
            port: m.port,
            rack: m.rack.clone(),
        })
        .collect()
}

/// Every topic of the image with its partitions' leaderships (module docs), by name.
pub fn topics(node: &Node) -> Vec<TopicView> {
    let image = node.metadata();
    image
        .topics
        .values()
        .map(|t| TopicView {
            name: t.name.clone(),
            id: t.id,
            partitions: t
                .partitions
                .iter()
                .map(|(p, replicas)| partition(node, &t.name, *p, replicas))
                .collect(),
            configs: t.configs.clone(),
        })
        .collect()
}

/// One partition's view (module docs).
pub fn partition(node: &Node, topic: &str, p: PartitionId, replicas: &[NodeId]) -> PartitionView {
    let tp = TopicPartition::new(topic, p);
    let recorded = node.metadata().leaders.get(&tp);
    let mut pv = PartitionView {
        partition: p,
        leader: recorded.and_then(|l| l.leader),
        leader_epoch: recorded.map_or(-1, |l| l.epoch as i32),
        replicas: replicas.to_vec(),
        isr: recorded.map(|l| l.isr.clone()).unwrap_or_default(),
    };
    if let Some(r) = node.replica(&tp) {
        let term = r.term();
        if r.is_leader() {
            pv.leader = Some(node.id());
            pv.leader_epoch = term as i32;
            pv.isr = r.isr();
        } else if recorded.is_none_or(|l| l.epoch < term) {
            // This replica has seen a newer term than the record: trust it if it knows that
            // term's leader; while the election runs, keep the record (module docs).
            match r.leader() {
                Some(leader) => {
                    pv.leader = Some(leader);
                    pv.leader_epoch = term as i32;
                }
                None if pv.leader.is_none() => pv.leader_epoch = term as i32,
                None => {}
            }
        }
    }
    assert!(
        pv.leader.is_none() || pv.leader_epoch >= 0,
        "{tp}: a leader without an epoch"
    );
    pv
}
