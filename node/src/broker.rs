//! The interface between the Kafka listener and the node runtime.
//!
//! The listener decodes Kafka requests and calls a [`Broker`]; the runtime implements it by
//! forwarding core requests to the thread that owns the sans-IO [`railyard_core::node::Node`]
//! and by publishing a [`ClusterView`] (brokers, topics, leaders) after every step. Tests
//! implement it with an in-memory fake.

use std::future::Future;

use railyard_core::api::{Request, Response};
use railyard_core::types::{NodeId, PartitionId};

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
    /// The leader's raft term (Kafka's leader epoch).
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    /// Voters caught up with the leader.
    pub isr: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    /// A stable topic id (Kafka's UUID), derived from the name for static topics.
    pub id: [u8; 16],
    pub partitions: Vec<PartitionView>,
    /// Topic config overrides set at creation (`retention.ms`, ...); absent keys are defaults.
    pub configs: std::collections::BTreeMap<String, String>,
}

/// What a Metadata request is answered from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    pub controller: Option<NodeId>,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicView>,
}

/// What the Kafka listener needs from the node. Cheap to clone (a handle).
pub trait Broker: Clone + Send + Sync + 'static {
    /// This broker's id.
    fn node_id(&self) -> NodeId;
    /// The current cluster view (brokers, topics, partition leaders).
    fn cluster(&self) -> ClusterView;
    /// Runs one core request on this node and waits for its reply.
    fn request(&self, request: Request) -> impl Future<Output = Response> + Send;

    /// Resolves when data may have been committed on this node since the call (a high
    /// watermark may have moved). Long-polling fetches wait on it, with their poll interval as
    /// a fallback, so a missed wake-up costs at most one interval. The default never resolves.
    fn data_changed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Asks the controller to create a topic a client used but that does not exist, when this
    /// node allows auto-creation (`auto_create_topics`, off by default). True if creation was
    /// requested (clients see LEADER_NOT_AVAILABLE and retry until the topic appears). The
    /// default: auto-creation off.
    fn auto_create_topic(&self, topic: String) -> impl Future<Output = bool> + Send {
        let _ = topic;
        std::future::ready(false)
    }
}
