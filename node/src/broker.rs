//! The interface between the Kafka listener and the node runtime.
//!
//! The listener decodes Kafka requests and calls a [`Broker`]; the runtime implements it by
//! forwarding core requests to the thread that owns the sans-IO [`railyard_core::node::Node`]
//! and by publishing a [`ClusterView`] (brokers, topics, leaders) when something changed: an
//! immutable, indexed snapshot behind an `Arc`. The listener's tests serve real nodes through it,
//! with a wrapper that records the core requests passing by.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use railyard_core::api::{Request, Response};
use railyard_core::topic_config::{BrokerDefaults, BrokerLayers};
use railyard_core::types::{NodeId, PartitionId};

/// The view's parts and the rules that build them live in core, where the simulator runs them.
pub use railyard_core::view::{BrokerInfo, PartitionView, TopicView};

/// What the Kafka listener answers from: an immutable snapshot of brokers, topics and leaders.
///
/// The runtime builds one after a step that changed something and shares it as an
/// `Arc<ClusterView>`, so a request takes a reference-counted snapshot instead of a copy. The
/// indexes are built once, in [`ClusterView::new`], and the fields are private so that they
/// cannot drift from what they index: a lookup by topic name, topic id, broker id or partition
/// is a tree search or a binary search, never a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    cluster_id: String,
    controller: Option<NodeId>,
    brokers: Vec<BrokerInfo>,
    /// In the order given; each topic's partitions sorted by partition index.
    topics: Vec<TopicView>,
    /// Position in `brokers` of each broker id.
    broker_index: BTreeMap<NodeId, usize>,
    /// Position in `topics` of each topic name.
    topic_index: BTreeMap<String, usize>,
    /// Position in `topics` of each topic id (the first topic, should two share one).
    topic_id_index: BTreeMap<[u8; 16], usize>,
    /// Dynamic broker configs by resource ("" = cluster-wide defaults, else a broker id).
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Registered brokers left out of `brokers` because they are fenced, by id.
    fenced: Vec<BrokerInfo>,
}

impl ClusterView {
    /// Builds a view and its indexes. Broker ids must be distinct, and so must topic names and
    /// the partition indexes of each topic: the runtime builds them from maps keyed by those.
    pub fn new(
        cluster_id: String,
        controller: Option<NodeId>,
        brokers: Vec<BrokerInfo>,
        mut topics: Vec<TopicView>,
    ) -> ClusterView {
        let mut broker_index = BTreeMap::new();
        for (i, b) in brokers.iter().enumerate() {
            let previous = broker_index.insert(b.id, i);
            assert!(previous.is_none(), "broker {} listed twice", b.id);
        }
        let mut topic_index = BTreeMap::new();
        let mut topic_id_index = BTreeMap::new();
        for (i, t) in topics.iter_mut().enumerate() {
            t.partitions.sort_by_key(|p| p.partition);
            let distinct = t
                .partitions
                .windows(2)
                .all(|w| w[0].partition < w[1].partition);
            assert!(distinct, "topic {} lists a partition twice", t.name);
            let previous = topic_index.insert(t.name.clone(), i);
            assert!(previous.is_none(), "topic {} listed twice", t.name);
            topic_id_index.entry(t.id).or_insert(i);
        }
        ClusterView {
            cluster_id,
            controller,
            brokers,
            topics,
            broker_index,
            topic_index,
            topic_id_index,
            broker_configs: BTreeMap::new(),
            fenced: Vec::new(),
        }
    }

    /// This view with the registered brokers it leaves out for being fenced.
    pub fn with_fenced(mut self, mut fenced: Vec<BrokerInfo>) -> ClusterView {
        fenced.retain(|b| !self.broker_index.contains_key(&b.id));
        fenced.sort_by_key(|b| b.id);
        self.fenced = fenced;
        self
    }

    /// The registered brokers that are fenced and not listed (DescribeCluster v2 lists them
    /// when asked).
    pub fn fenced(&self) -> &[BrokerInfo] {
        &self.fenced
    }

    /// This view with the metadata image's dynamic broker configs.
    pub fn with_broker_configs(
        mut self,
        configs: BTreeMap<String, BTreeMap<String, String>>,
    ) -> ClusterView {
        self.broker_configs = configs;
        self
    }

    /// Broker `id`'s topic-config defaults as layers: its dynamic configs, the cluster-wide
    /// dynamic defaults, then `static_` (its node config's `[topic_defaults]`).
    pub fn broker_layers(&self, id: NodeId, static_: &BrokerDefaults) -> BrokerLayers {
        let get = |r: &str| self.broker_configs.get(r).cloned().unwrap_or_default();
        BrokerLayers {
            dynamic: get(&id.to_string()),
            dynamic_default: get(""),
            static_: static_.clone(),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The controller (the metadata partition's leader), if one is known.
    pub fn controller(&self) -> Option<NodeId> {
        self.controller
    }

    /// The live brokers, in the order given.
    pub fn brokers(&self) -> &[BrokerInfo] {
        &self.brokers
    }

    /// Every topic, in the order given.
    pub fn topics(&self) -> &[TopicView] {
        &self.topics
    }

    /// The live broker with this id.
    pub fn broker(&self, id: NodeId) -> Option<&BrokerInfo> {
        self.broker_index.get(&id).map(|&i| &self.brokers[i])
    }

    /// The topic with this name.
    pub fn topic(&self, name: &str) -> Option<&TopicView> {
        self.topic_index.get(name).map(|&i| &self.topics[i])
    }

    /// The topic with this id (Kafka's topic UUID).
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicView> {
        self.topic_id_index.get(id).map(|&i| &self.topics[i])
    }

    /// One partition of a topic.
    pub fn partition(&self, topic: &str, partition: PartitionId) -> Option<&PartitionView> {
        let t = self.topic(topic)?;
        // `new` sorted every topic's partitions by index.
        let i = t
            .partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()?;
        Some(&t.partitions[i])
    }
}

/// What the Kafka listener needs from the node. Cheap to clone (a handle).
pub trait Broker: Clone + Send + Sync + 'static {
    /// This broker's id.
    fn node_id(&self) -> NodeId;
    /// The current cluster view (brokers, topics, partition leaders): a shared snapshot, cheap
    /// to take, that later publications do not change.
    fn cluster(&self) -> Arc<ClusterView>;
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

    /// Resolves once this node's core has stopped: the listener then stops accepting and
    /// closes its connections, so clients move to the brokers that still serve instead of
    /// hearing REQUEST_TIMED_OUT from a node with nothing behind it. The default never
    /// resolves.
    fn stopped(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}
