//! What the client knows about the cluster, and how it reaches each broker.
//!
//! [`Cluster`] holds the configuration, one [`Connection`] per broker (opened on first use and
//! replaced when it fails), and a metadata cache: brokers, topics, partition leaders. The cache
//! is refreshed at start, when an operation fails with an error that means it is stale (a
//! leader or coordinator moved, a broker went away), and every `metadata_max_age_ms` by a
//! background task. Refreshes are coalesced: callers that ask while one is running share its
//! result. Metadata is requested for all topics and never auto-creates one, so a typo in a
//! topic name is an [`Error::UnknownTopic`], not a new topic.
//!
//! [`Cluster::retry`] is the retry loop every operation shares: exponential backoff from
//! `retry_backoff_ms` to `retry_backoff_max_ms`, bounded by `default_api_timeout_ms`, and no
//! retry at all after an error [`Error::is_retriable`] calls fatal.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::task::JoinHandle;

use crate::conn::{lock, ConnOptions, Connection};
use crate::error::{check_code, BrokerRef, Error, Result};

/// Settings every client (producer, consumer, admin) shares.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` addresses to learn the cluster from; any one that answers is enough.
    pub bootstrap: Vec<String>,
    /// Sent in every request header (brokers log it).
    pub client_id: String,
    /// How long a TCP connect plus the ApiVersions handshake may take.
    pub connect_timeout_ms: u64,
    /// How long one request may wait for its response.
    pub request_timeout_ms: u64,
    /// The first wait before a retry; it doubles up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    /// The longest wait between retries.
    pub retry_backoff_max_ms: u64,
    /// How long an operation (a metadata refresh, an admin call, a commit) keeps retrying.
    pub default_api_timeout_ms: u64,
    /// Metadata older than this is refreshed in the background.
    pub metadata_max_age_ms: u64,
}

impl ClientConfig {
    /// Defaults (those of the Java client where it has the setting) for the comma-separated
    /// bootstrap list `bootstrap` (`"127.0.0.1:9092,127.0.0.1:9093"`).
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            client_id: "railyard-client".into(),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            default_api_timeout_ms: 60_000,
            metadata_max_age_ms: 300_000,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::Config("the bootstrap list is empty".into()));
        }
        if let Some(bad) = self.bootstrap.iter().find(|a| !a.contains(':')) {
            return Err(Error::Config(format!(
                "bootstrap address {bad:?} has no port"
            )));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        Ok(())
    }

    fn conn_options(&self) -> ConnOptions {
        ConnOptions {
            client_id: self.client_id.clone(),
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
        }
    }
}

/// One broker as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerMeta {
    /// Its node id.
    pub node_id: i32,
    /// `host:port` of its Kafka listener.
    pub addr: String,
    /// Its rack, if it has one.
    pub rack: Option<String>,
}

/// One partition as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMeta {
    /// The partition number.
    pub partition: i32,
    /// The leader's node id (`None` during an election).
    pub leader: Option<i32>,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// All replicas, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// A partition-level error (LEADER_NOT_AVAILABLE during an election), if any.
    pub error: Option<ResponseError>,
}

/// One topic as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    /// The topic name.
    pub name: String,
    /// Whether it is an internal topic (`__consumer_offsets`).
    pub internal: bool,
    /// Its partitions, by partition number (`partitions[i].partition == i`).
    pub partitions: Vec<PartitionMeta>,
}

/// A snapshot of the cluster's metadata.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// The cluster id, if the broker reports one.
    pub cluster_id: Option<String>,
    /// The active controller's node id, if known.
    pub controller: Option<i32>,
    /// The brokers, by node id.
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The topics, by name.
    pub topics: BTreeMap<String, TopicMeta>,
    fetched_at: Option<Instant>,
}

impl Metadata {
    /// The topic, if the cluster has it.
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The leader of `partition` of `topic`, if it has one.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topic(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)?
            .leader
    }
}

/// A connection slot per broker: the lock is held while connecting, so concurrent callers wait
/// for one connect instead of opening several.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// The client's view of the cluster; shared by the producer, consumer and admin parts of one
/// client through an `Arc`.
pub struct Cluster {
    config: ClientConfig,
    metadata: RwLock<Arc<Metadata>>,
    slots: Mutex<HashMap<i32, Slot>>,
    bootstrap: tokio::sync::Mutex<Option<Arc<Connection>>>,
    refreshing: tokio::sync::Mutex<()>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Cluster {
    /// Checks the config, fetches the first metadata from a bootstrap broker (retrying for up
    /// to `default_api_timeout_ms`) and starts the periodic refresh.
    pub async fn connect(config: ClientConfig) -> Result<Arc<Cluster>> {
        config.validate()?;
        let cluster = Arc::new(Cluster {
            config,
            metadata: RwLock::default(),
            slots: Mutex::default(),
            bootstrap: tokio::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            refresher: Mutex::new(None),
        });
        cluster.refresh_metadata().await?;
        let task = tokio::spawn(refresh_periodically(Arc::downgrade(&cluster)));
        *lock(&cluster.refresher) = Some(task);
        Ok(cluster)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current metadata snapshot (no request).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetches fresh metadata, retrying across brokers; a caller that arrives while a refresh
    /// runs waits for it and takes its result.
    pub async fn refresh_metadata(&self) -> Result<Arc<Metadata>> {
        let asked = Instant::now();
        let _one = self.refreshing.lock().await;
        let current = self.metadata();
        if current.fetched_at.is_some_and(|t| t >= asked) {
            return Ok(current);
        }
        let fresh = Arc::new(self.retry_inner(|| self.fetch_metadata(), false).await?);
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// The topic's metadata, refreshing once if the cache does not have it.
    pub async fn topic(&self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.metadata().topic(name) {
            return Ok(t.clone());
        }
        let fresh = self.refresh_metadata().await?;
        fresh
            .topic(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.into()))
    }

    /// The connection to broker `node_id`, opened if there is none or the last one failed.
    pub async fn connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = match self.metadata().brokers.get(&node_id) {
            Some(b) => b.addr.clone(),
            None => match self.refresh_metadata().await?.brokers.get(&node_id) {
                Some(b) => b.addr.clone(),
                None => {
                    return Err(Error::Kafka {
                        broker: BrokerRef {
                            addr: "?".into(),
                            node_id: Some(node_id),
                        },
                        api: "Metadata",
                        code: ResponseError::BrokerNotAvailable,
                        context: Some(format!("node {node_id} is not in the metadata")),
                    })
                }
            },
        };
        self.connection_at(node_id, &addr).await
    }

    /// The connection to broker `node_id` at `addr` (a coordinator's address, from
    /// FindCoordinator).
    pub async fn connection_at(&self, node_id: i32, addr: &str) -> Result<Arc<Connection>> {
        let slot = lock(&self.slots).entry(node_id).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() && c.broker().addr == addr {
                return Ok(c.clone());
            }
        }
        let broker = BrokerRef {
            addr: addr.into(),
            node_id: Some(node_id),
        };
        let conn = Arc::new(Connection::connect(broker, self.config.conn_options()).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A connection to any live broker: a known broker first, else a bootstrap address.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let brokers: Vec<BrokerMeta> = self.metadata().brokers.values().cloned().collect();
        // Start at a different broker each time, so one slow broker does not take every call.
        let start = if brokers.is_empty() {
            0
        } else {
            crate::random::below(brokers.len())
        };
        for i in 0..brokers.len() {
            let b = &brokers[(start + i) % brokers.len()];
            // A broker that fails here is skipped; the bootstrap list is the last resort, and
            // its error is the one reported.
            if let Ok(c) = self.connection_at(b.node_id, &b.addr).await {
                return Ok(c);
            }
        }
        self.bootstrap_connection().await
    }

    /// Runs `op` until it succeeds, fails fatally, or `default_api_timeout_ms` runs out;
    /// refreshes metadata before retrying after an error that means it is stale.
    pub async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retry_inner(op, true).await
    }

    /// [`Cluster::retry`]; `refresh` is false for the metadata refresh itself, which holds the
    /// refresh lock.
    async fn retry_inner<T, F, Fut>(&self, mut op: F, refresh: bool) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let budget = Duration::from_millis(self.config.default_api_timeout_ms);
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new(&self.config);
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = backoff.next();
            if !err.is_retriable() || Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
            if refresh && err.needs_metadata_refresh() {
                // A failed refresh is not this operation's error; the next attempt reports.
                let _ = self.refresh_metadata_once().await;
            }
        }
    }

    /// The coordinator of `key` (`key_type` 0: a group, 1: a transaction), as (node id,
    /// address), through FindCoordinator with retries.
    pub async fn find_coordinator(&self, key: &str, key_type: i8) -> Result<(i32, String)> {
        self.retry(|| self.find_coordinator_once(key, key_type))
            .await
    }

    async fn find_coordinator_once(&self, key: &str, key_type: i8) -> Result<(i32, String)> {
        let conn = self.any_connection().await?;
        let version = conn.version::<FindCoordinatorRequest>()?;
        let mut req = FindCoordinatorRequest::default().with_key_type(key_type);
        let key_bytes = StrBytes::from_string(key.to_string());
        if version >= 4 {
            req.coordinator_keys = vec![key_bytes];
        } else {
            req.key = key_bytes;
        }
        let resp = conn.call(&req).await?;
        let broker = conn.broker().clone();
        let context = || Some(format!("coordinator of {key:?}"));
        if version >= 4 {
            let c = resp.coordinators.first().ok_or_else(|| Error::Protocol {
                broker: broker.clone(),
                reason: "FindCoordinator answered no coordinator".into(),
            })?;
            check_code(c.error_code, broker, "FindCoordinator", context)?;
            Ok((c.node_id.0, format!("{}:{}", c.host, c.port)))
        } else {
            check_code(resp.error_code, broker, "FindCoordinator", context)?;
            Ok((resp.node_id.0, format!("{}:{}", resp.host, resp.port)))
        }
    }

    /// One refresh attempt outside [`Cluster::retry`] (the retry loop itself uses it).
    async fn refresh_metadata_once(&self) -> Result<()> {
        let asked = Instant::now();
        let _one = self.refreshing.lock().await;
        if self.metadata().fetched_at.is_some_and(|t| t >= asked) {
            return Ok(());
        }
        let fresh = Arc::new(self.fetch_metadata().await?);
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    async fn fetch_metadata(&self) -> Result<Metadata> {
        let conn = self.any_connection().await?;
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let resp = conn.call(&req).await?;
        Ok(parse_metadata(resp))
    }

    /// A connection to the first bootstrap address that answers.
    async fn bootstrap_connection(&self) -> Result<Arc<Connection>> {
        let mut current = self.bootstrap.lock().await;
        if let Some(c) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let mut last = None;
        for addr in &self.config.bootstrap {
            let broker = BrokerRef {
                addr: addr.clone(),
                node_id: None,
            };
            match Connection::connect(broker, self.config.conn_options()).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *current = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::NoBrokerAvailable {
            bootstrap: self.config.bootstrap.join(","),
            within: Duration::from_millis(self.config.connect_timeout_ms),
            last: Box::new(last.unwrap_or(Error::Closed)),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.refresher).take() {
            t.abort();
        }
    }
}

/// Exponential backoff with jitter: each wait is the current step ±20 %, and the step doubles
/// up to the maximum.
pub(crate) struct Backoff {
    step_ms: u64,
    max_ms: u64,
}

impl Backoff {
    pub(crate) fn new(config: &ClientConfig) -> Backoff {
        Backoff {
            step_ms: config.retry_backoff_ms.max(1),
            max_ms: config.retry_backoff_max_ms.max(config.retry_backoff_ms),
        }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let jitter = crate::random::unit() * 0.4 + 0.8;
        let wait = (self.step_ms as f64 * jitter) as u64;
        self.step_ms = (self.step_ms * 2).min(self.max_ms);
        Duration::from_millis(wait)
    }
}

fn parse_metadata(resp: MetadataResponse) -> Metadata {
    let brokers = resp
        .brokers
        .iter()
        .map(|b| {
            let meta = BrokerMeta {
                node_id: b.node_id.0,
                addr: format!("{}:{}", b.host, b.port),
                rack: b.rack.as_ref().map(|r| r.to_string()),
            };
            (b.node_id.0, meta)
        })
        .collect();
    let topics = resp
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| {
            let name = t.name.as_ref()?.0.to_string();
            let mut partitions: Vec<PartitionMeta> = t
                .partitions
                .iter()
                .map(|p| PartitionMeta {
                    partition: p.partition_index,
                    leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error: ResponseError::try_from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            // A listing with holes cannot be indexed by partition number; skip the topic until
            // a later refresh lists it whole.
            let whole = partitions
                .iter()
                .enumerate()
                .all(|(i, p)| p.partition == i as i32);
            whole.then(|| {
                let meta = TopicMeta {
                    name: name.clone(),
                    internal: t.is_internal,
                    partitions,
                };
                (name, meta)
            })
        })
        .collect();
    Metadata {
        cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
        controller: (resp.controller_id.0 >= 0).then_some(resp.controller_id.0),
        brokers,
        topics,
        fetched_at: Some(Instant::now()),
    }
}

async fn refresh_periodically(cluster: Weak<Cluster>) {
    loop {
        let Some(age_ms) = cluster.upgrade().map(|c| c.config.metadata_max_age_ms) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(age_ms.max(100))).await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        // A failed background refresh changes nothing; the next operation that needs fresh
        // metadata asks again and reports the error.
        let _ = c.refresh_metadata_once().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the bootstrap string is split and checked before any connection is tried.
    #[test]
    fn test_config_bootstrap_parsing() {
        let c = ClientConfig::new(" 127.0.0.1:9092, localhost:9093 ,");
        assert_eq!(c.bootstrap, vec!["127.0.0.1:9092", "localhost:9093"]);
        assert!(c.validate().is_ok());
        assert!(matches!(
            ClientConfig::new("").validate(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            ClientConfig::new("nohost").validate(),
            Err(Error::Config(_))
        ));
    }

    // Proves the backoff grows to its cap and stays within the jitter band.
    #[test]
    fn test_backoff_doubles_to_cap() {
        let mut c = ClientConfig::new("a:1");
        c.retry_backoff_ms = 100;
        c.retry_backoff_max_ms = 400;
        let mut b = Backoff::new(&c);
        let waits: Vec<u64> = (0..5).map(|_| b.next().as_millis() as u64).collect();
        let steps = [100, 200, 400, 400, 400];
        for (w, s) in waits.iter().zip(steps) {
            assert!(*w >= s * 8 / 10 && *w <= s * 12 / 10, "{waits:?}");
        }
    }
}
