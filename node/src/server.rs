//! Assembles a running node: binds the Kafka and raft listeners, starts the core thread, the
//! per-peer transport tasks and the Kafka listener.

use std::net::SocketAddr;
use std::sync::Arc;

use railyard_core::api::{ClientError, Request, Response};
use slog::{info, o, warn, Logger};
use tokio::net::TcpListener;

use crate::admin::{serve_admin, AdminState};
use crate::broker::Broker;
use crate::config::{NodeConfig, TopicConfig};
use crate::kafka::{self, KafkaConfig};
use crate::metrics::Metrics;
use crate::runtime::{
    start_core, start_core_with_disk, MakeDisk, NodeHandle, PeerQueues, Transport,
};
use crate::transport;

/// A started node.
pub struct RunningNode {
    pub handle: NodeHandle,
    pub kafka_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(#[from] crate::runtime::StartError),
}

/// Where a node keeps its data.
pub enum Storage {
    /// Files under the config's `data_dir`, as `railyard start` runs.
    DataDir,
    /// The disk this makes in the core thread (tests: an in-memory disk); `data_dir` is unused.
    Disk(MakeDisk),
}

/// Starts one node inside the current tokio runtime, keeping its data under `data_dir`.
pub async fn start_node(config: NodeConfig, logger: &Logger) -> Result<RunningNode, ServeError> {
    start_node_on(config, logger, Storage::DataDir).await
}

/// Starts one node inside the current tokio runtime, keeping its data in `storage`.
pub async fn start_node_on(
    config: NodeConfig,
    logger: &Logger,
    storage: Storage,
) -> Result<RunningNode, ServeError> {
    config.validate()?;
    let logger = logger.new(o!("node" => config.id));
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let kafka_listener = bind(config.kafka_listen).await?;
    let raft_listener = bind(config.raft_listen).await?;
    let kafka_addr = kafka_listener
        .local_addr()
        .expect("bound listener has an address");
    let raft_addr = raft_listener
        .local_addr()
        .expect("bound listener has an address");
    let mut queues = PeerQueues::new();
    let mut outbound = Vec::new();
    for peer in config.peers.iter().filter(|p| p.id != config.id) {
        let (tx, rx) = transport::peer_queue();
        queues.insert(peer.id, tx);
        outbound.push((peer.id, peer.raft_addr, rx));
    }
    let (dialer, dials) = tokio::sync::mpsc::unbounded_channel();
    let routes = transport::ReplyRoutes::default();
    let core_transport = Transport {
        peers: queues,
        dialer,
        routes: routes.clone(),
    };
    let admin_listener = match config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr().expect("bound listener has an address"));
    let metrics = Arc::new(Metrics::new());
    let handle = match storage {
        Storage::DataDir => start_core(&config, core_transport, metrics.clone(), &logger).await?,
        Storage::Disk(make_disk) => {
            let t = core_transport;
            start_core_with_disk(&config, t, metrics.clone(), &logger, make_disk).await?
        }
    };
    for (peer, addr, rx) in outbound {
        let (node, logger) = (handle.clone(), logger.clone());
        tokio::spawn(transport::run_outbound(peer, addr, rx, node, logger));
    }
    tokio::spawn(transport::run_dialer(dials, handle.clone(), logger.clone()));
    tokio::spawn(transport::run_inbound(
        raft_listener,
        handle.clone(),
        config.id,
        routes,
        logger.clone(),
    ));
    tokio::spawn(kafka::serve(
        kafka_listener,
        handle.clone(),
        KafkaConfig {
            metrics: Some(metrics.clone()),
            topic_defaults: config.broker_defaults(),
            log_dir: config.data_dir.display().to_string(),
            ..KafkaConfig::default()
        },
        logger.clone(),
    ));
    if let Some(l) = admin_listener {
        tokio::spawn(serve_admin(
            l,
            AdminState::from_broker(handle.clone(), metrics.clone()),
            logger.clone(),
        ));
    }
    tokio::spawn(ensure_topics(
        handle.clone(),
        config.topics.clone(),
        logger.clone(),
    ));
    info!(logger, "node started"; "kafka" => %kafka_addr, "raft" => %raft_addr,
        "admin" => ?admin_addr,
        "data_dir" => %config.data_dir.display());
    Ok(RunningNode {
        handle,
        kafka_addr,
        raft_addr,
        admin_addr,
        metrics,
    })
}

/// Creates the configured topics that do not exist yet. Only the controller can; every node
/// runs this and the others' attempts get NOT_CONTROLLER, so whichever node leads the metadata
/// group creates them. Stops once all exist.
async fn ensure_topics(handle: NodeHandle, topics: Vec<TopicConfig>, logger: Logger) {
    let mut missing = topics;
    while !missing.is_empty() {
        let view = handle.cluster();
        missing.retain(|t| view.topic(&t.name).is_none());
        let mut i = 0;
        while i < missing.len() {
            let t = &missing[i];
            let request = Request::CreateTopic {
                name: t.name.clone(),
                partitions: t.partitions as i64,
                replication_factor: t.replication_factor as i64,
                configs: Default::default(),
                assignments: Vec::new(),
                validate_only: false,
            };
            match handle.request(request).await {
                Response::CreateTopic(Ok(())) => {
                    info!(logger, "created topic"; "topic" => &t.name, "partitions" => t.partitions);
                    missing.remove(i);
                }
                Response::CreateTopic(Err(ClientError::TopicAlreadyExists(_))) => {
                    missing.remove(i);
                }
                Response::CreateTopic(Err(
                    ClientError::NotController { .. } | ClientError::Indeterminate { .. },
                )) => i += 1,
                other => {
                    warn!(logger, "cannot create configured topic"; "topic" => &t.name,
                        "reply" => ?other);
                    missing.remove(i);
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
