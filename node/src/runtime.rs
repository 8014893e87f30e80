//! The node runtime: one dedicated thread owns the sans-IO core [`Node`] and does all its disk
//! IO and fsyncs; tokio tasks own the sockets.
//!
//! The core loop ([`core_loop`]) waits on one channel of [`CoreCmd`]s (peer envelopes from the
//! transport, client requests from the Kafka listener), drains everything queued, ticks raft
//! when a tick is due, and runs one bounded [`Node::pump`]. Because it drains the queue before
//! stepping, every request that arrived during the previous fsync is covered by the next one:
//! group commit falls out of the loop. Envelopes leave through bounded per-peer queues
//! ([`crate::transport`]); a full queue drops the envelope, which raft treats as loss.
//!
//! The loop is async only so that it can wait on the channel, the stop request and the next
//! tick at once; its disk IO blocks. On a real machine it runs on its own thread, in a
//! current-thread tokio runtime that nothing else uses, so a blocking fsync stalls only it.
//! Under madsim (`--cfg madsim`) the same loop is a task of the simulated node (madsim forbids
//! threads, and its tasks all run on one), on whatever disk the caller made, such as the
//! simulator's `SimDisk` held outside the node so that it survives a kill.
//!
//! The thread publishes a [`ClusterView`] (brokers, topics, and every partition's leader,
//! epoch and in-sync replicas: from the local replica where it knows them, else from the
//! metadata log's records) that the Kafka listener answers Metadata from, when something
//! changed and at least every second.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use railyard_core::api::{Request, Response};
use railyard_core::disk::Disk;
use railyard_core::groups::GroupConfig;
use railyard_core::log::LogConfig;
use railyard_core::network::{Envelope, Network};
use railyard_core::node::{Node, NodeConfig as CoreNodeConfig, NodeError, PUMP_STEPS_MAX};
use railyard_core::replica::ReplicaConfig;
use railyard_core::types::NodeId;
use slog::{error, info, Logger};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::broker::{Broker, BrokerInfo, ClusterView};
use crate::config::NodeConfig;
use crate::file_disk::FileDisk;
use crate::metrics::{Metrics, PartitionStats};
use crate::transport::{Dialer, ReplyRoutes};
use railyard_core::metadata::is_internal_topic;

/// Most commands queued for the core thread before new peer envelopes are dropped.
pub const CORE_QUEUE_MAX: usize = 16 * 1024;

/// How long a stopping node waits for its leaderships to move before it exits anyway.
const HANDOVER_MAX: Duration = Duration::from_secs(3);

/// How often the core thread checks whether to republish the cluster view.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Republish at least this often (watermarks and ISRs change without a leadership change).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// What the core thread is asked to do.
pub enum CoreCmd {
    /// An envelope from a peer.
    Peer(Envelope),
    /// A client request and where to send its reply.
    Client(Request, oneshot::Sender<Response>),
}

/// A request to stop, apart from the command queue so that a full queue cannot lose it.
#[derive(Default)]
struct StopRequest {
    requested: AtomicBool,
    /// Wakes the core loop if it is waiting (a permit is kept if it is not).
    wake: Notify,
}

/// A cheap handle to a running node: implements [`Broker`] for the Kafka listener.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    cmds: mpsc::Sender<CoreCmd>,
    stop: Arc<StopRequest>,
    /// The latest published view; readers clone the `Arc`, the core thread swaps in a new one.
    view: Arc<RwLock<Arc<ClusterView>>>,
    /// Set by the core thread when it exits.
    stopped: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// The same, for async waiters (the Kafka listener).
    stopped_rx: tokio::sync::watch::Receiver<bool>,
    /// Notified by the core thread when a commit index moved (wakes long-polling fetches).
    data: Arc<Notify>,
    /// (partitions, replication factor) of auto-created topics; `None`: auto-creation off.
    auto_create: Option<(u32, u32)>,
    /// Why the core stopped on its own (a storage failure, a refusal by the cluster).
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Why the core stopped without being asked to, once it has.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// Waits until the core has stopped, for whatever reason.
    pub async fn stopped(&self) {
        let mut rx = self.stopped_rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Queues an envelope from a peer; drops it if the core is saturated (raft retransmits).
    pub fn deliver(&self, env: Envelope) {
        match self.cmds.try_send(CoreCmd::Peer(env)) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Asks the core to stop gracefully: hand its leaderships to caught-up followers, answer
    /// what it can, exit. Returns at once; see [`NodeHandle::wait_stopped`].
    pub fn shutdown(&self) {
        self.stop.requested.store(true, Ordering::SeqCst);
        self.stop.wake.notify_one();
    }

    /// Blocks until the core thread has exited or `timeout` passed; true if it exited.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.stopped;
        let guard = lock.lock().expect("stop flag lock");
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .expect("stop flag lock");
        *guard
    }
}

impl Broker for NodeHandle {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn cluster(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock poisoned").clone()
    }

    async fn request(&self, request: Request) -> Response {
        let (tx, rx) = oneshot::channel();
        let fallback = unavailable(&request);
        // A blocking send would stall a tokio worker; the queue is large and a full queue means
        // the node is overloaded, which the client sees as a timeout.
        if self.cmds.try_send(CoreCmd::Client(request, tx)).is_err() {
            return fallback;
        }
        rx.await.unwrap_or(fallback)
    }

    fn data_changed(&self) -> impl std::future::Future<Output = ()> + Send {
        let data = self.data.clone();
        async move { data.notified().await }
    }

    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send {
        let mut rx = self.stopped_rx.clone();
        async move {
            // An error means the core thread dropped its sender: it has exited too.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    fn auto_create_topic(&self, topic: String) -> impl std::future::Future<Output = bool> + Send {
        let handle = self.clone();
        async move {
            let Some((partitions, replication_factor)) = handle.auto_create else {
                return false;
            };
            let request = Request::AutoCreateTopic {
                name: topic,
                partitions,
                replication_factor,
            };
            matches!(handle.request(request).await, Response::CreateTopic(Ok(())))
        }
    }
}

/// The answer when the core cannot take or finish a request.
fn unavailable(request: &Request) -> Response {
    Response::error_for(
        request,
        railyard_core::api::ClientError::Indeterminate {
            reason: "node overloaded or stopping",
        },
    )
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory: {0}")]
    Disk(String),
    #[error("opening partitions: {0}")]
    Core(String),
}

/// Per-peer outbound queues, filled by the core thread.
pub type PeerQueues = BTreeMap<NodeId, mpsc::Sender<Envelope>>;

/// The core's side of the transport: the configured peers' queues, the way to ask for more
/// (peers the metadata image registers), and the way back to peers that only connected here.
pub struct Transport {
    pub peers: PeerQueues,
    pub dialer: Dialer,
    pub routes: ReplyRoutes,
}

impl Transport {
    /// Dials every registered broker with a raft address that no queue serves yet (a broker
    /// that joined after this node started, or one that moved).
    fn dial_registered(&mut self, node: &Node, dialed: &mut BTreeMap<NodeId, SocketAddr>) {
        for (id, (host, port)) in node.peer_addresses() {
            let Ok(ip) = host.parse::<std::net::IpAddr>() else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            let configured = self.peers.contains_key(&id) && !dialed.contains_key(&id);
            if configured || dialed.get(&id) == Some(&addr) {
                continue;
            }
            let (tx, rx) = crate::transport::peer_queue();
            if self.dialer.send((id, addr, rx)).is_ok() {
                // Replacing the sender closes the old queue, which ends its connection task.
                self.peers.insert(id, tx);
                dialed.insert(id, addr);
            }
        }
    }
}

struct QueueNet<'a> {
    peers: &'a PeerQueues,
    routes: &'a ReplyRoutes,
}

impl Network for QueueNet<'_> {
    fn send(&mut self, envelope: Envelope) {
        // Full or closed: drop, raft retransmits.
        if let Some(q) = self.peers.get(&envelope.to) {
            let _ = q.try_send(envelope);
        } else if let Some(q) = self
            .routes
            .lock()
            .ok()
            .and_then(|r| r.get(&envelope.to).cloned())
        {
            let _ = q.try_send(envelope);
        }
    }
}

/// Makes the core's disk. It runs inside the core thread, because the core [`Node`] holds its
/// disk in an `Rc` (and a disk such as `MemDisk` is not `Send`).
pub type MakeDisk = Box<dyn FnOnce() -> Rc<dyn Disk> + Send>;

/// Opens the node's storage (a [`FileDisk`] on `config.data_dir`) and starts its core thread.
/// `peers` are the outbound queues the transport drains; the returned handle feeds the core.
pub async fn start_core(
    config: &NodeConfig,
    transport: Transport,
    metrics: Arc<Metrics>,
    logger: &Logger,
) -> Result<NodeHandle, StartError> {
    let observer = metrics.clone();
    let disk = FileDisk::open(&config.data_dir)
        .map_err(|e| StartError::Disk(e.to_string()))?
        .with_fsync_observer(move |d| observer.observe_fsync(d));
    let make_disk: MakeDisk = Box::new(move || -> Rc<dyn Disk> { Rc::new(disk) });
    start_core_with_disk(config, transport, metrics, logger, make_disk).await
}

/// The core's seed for this start: distinct per start (it is the broker's incarnation) and
/// per process (it draws a new cluster's id), from the wall clock and std's per-process
/// random hash keys.
fn start_seed(id: NodeId) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(id);
    h.write_u64(wall_ms() as u64);
    h.finish()
}

/// Kafka's group timeouts are i32 milliseconds: a larger setting means "as long as possible".
fn ms_i32(ms: u32) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// Starts the core thread on the disk `make_disk` makes there (`config.data_dir` is not used):
/// [`start_core`] passes a [`FileDisk`], tests an in-memory disk, madsim tests the simulator's.
/// Returns once the node has opened its storage and replayed its log.
pub async fn start_core_with_disk(
    config: &NodeConfig,
    transport: Transport,
    metrics: Arc<Metrics>,
    logger: &Logger,
    make_disk: MakeDisk,
) -> Result<NodeHandle, StartError> {
    let brokers: Vec<NodeId> = config.peers.iter().map(|p| p.id).collect();
    let core_config = CoreNodeConfig {
        id: config.id,
        seed: start_seed(config.id),
        replica: ReplicaConfig::default(),
        log: LogConfig::default(),
        // Every partition comes from the metadata log.
        partitions: Vec::new(),
        retention_check_ms: 60_000,
        metadata_voters: config.controller_voters(),
        brokers,
        endpoint: config.peers.iter().find(|p| p.id == config.id).map(|p| {
            railyard_core::node::BrokerEndpoint {
                host: p.kafka_addr.ip().to_string(),
                port: p.kafka_addr.port(),
                rack: p.rack.clone(),
                raft: Some((p.raft_addr.ip().to_string(), p.raft_addr.port())),
            }
        }),
        join: config.join,
        heartbeat_ms: config.heartbeat_ms as i64,
        session_timeout_ms: config.session_timeout_ms as i64,
        preferred_leader_check_ms: Some(5_000),
        min_free_bytes: config.min_free_bytes,
        offsets_partitions: config.offsets_topic_num_partitions,
        producer_expiration_ms: config.producer_id_expiration_ms as i64,
        // Validated with the config.
        topic_defaults: config.broker_defaults(),
        group: GroupConfig {
            group_min_session_timeout_ms: ms_i32(config.group_min_session_timeout_ms),
            group_max_session_timeout_ms: ms_i32(config.group_max_session_timeout_ms),
            group_initial_rebalance_delay_ms: ms_i32(config.group_initial_rebalance_delay_ms),
            offsets_retention_ms: (config.offsets_retention_minutes * 60_000) as i64,
            ..GroupConfig::default()
        },
    };
    let (tx, rx) = mpsc::channel(CORE_QUEUE_MAX);
    let stop = Arc::new(StopRequest::default());
    let view = Arc::new(RwLock::new(base_view(config)));
    let stopped = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);
    let handle = NodeHandle {
        id: config.id,
        cmds: tx,
        stop: stop.clone(),
        view: view.clone(),
        stopped: stopped.clone(),
        stopped_rx,
        data: Arc::new(Notify::new()),
        auto_create: config.auto_create(),
        fatal: Arc::new(std::sync::Mutex::new(None)),
    };
    let fatal = handle.fatal.clone();
    let data = handle.data.clone();
    let logger = logger.clone();
    let tick = Duration::from_millis(config.tick_ms);
    let base = base_view(config);
    // Open in the core thread: the Node is single-threaded (Rc) and must live there.
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), StartError>>();
    // A closure making the future: the future holds the `Rc`s of the Node and is not `Send`.
    let run = move || async move {
        let disk = make_disk();
        let published = Published { view, base };
        let node = match Node::open(core_config, disk, &logger) {
            Ok(n) => {
                // The listeners start once this returns: publish the replayed topics first,
                // so no Metadata request is answered from the empty base view.
                publish(&n, &published);
                let _ = ready_tx.send(Ok(()));
                n
            }
            Err(e) => {
                let _ = ready_tx.send(Err(StartError::Core(e.to_string())));
                return;
            }
        };
        let core = Core {
            fatal,
            transport,
            published,
            metrics,
            data,
            tick,
        };
        core_loop(node, rx, &stop, core, &logger).await;
        let (lock, cv) = &*stopped;
        *lock.lock().expect("stop flag lock") = true;
        cv.notify_all();
        let _ = stopped_tx.send(true);
    };
    spawn_core(config.id, run)?;
    match ready_rx.await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StartError::Core("core thread died while opening".into())),
    }
}

/// Runs the future `run` makes on a thread of its own, in a current-thread runtime that
/// nothing else uses: its fsyncs block that thread only.
#[cfg(not(madsim))]
fn spawn_core<F>(id: NodeId, run: impl FnOnce() -> F + Send + 'static) -> Result<(), StartError>
where
    F: std::future::Future<Output = ()> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StartError::Core(e.to_string()))?;
    std::thread::Builder::new()
        .name(format!("railyard-core-{id}"))
        .spawn(move || runtime.block_on(run()))
        .map(drop)
        .map_err(|e| StartError::Core(e.to_string()))
}

/// Runs the future `run` makes as a task of the current simulated node, which madsim kills
/// with the node.
#[cfg(madsim)]
fn spawn_core<F>(_id: NodeId, run: impl FnOnce() -> F + Send + 'static) -> Result<(), StartError>
where
    F: std::future::Future<Output = ()> + 'static,
{
    tokio::task::spawn_local(run());
    Ok(())
}

/// The wall clock: data only (record timestamps, retention by age), never a timer.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The monotonic clock the core's timers run on: milliseconds since the core started. A
/// wall-clock step (NTP, an operator) cannot fire a timer early or late.
struct Monotonic(Instant);

impl Monotonic {
    fn ms(&self) -> i64 {
        self.0.elapsed().as_millis() as i64
    }
}

/// Where the core thread publishes the cluster view, and what it builds it from.
struct Published {
    view: Arc<RwLock<Arc<ClusterView>>>,
    /// The brokers as configured (used until they register).
    base: Arc<ClusterView>,
}

/// The brokers, from the config; topics come from the metadata image.
fn base_view(config: &NodeConfig) -> Arc<ClusterView> {
    let brokers = config
        .peers
        .iter()
        .map(|p| BrokerInfo {
            id: p.id,
            host: p.kafka_addr.ip().to_string(),
            port: p.kafka_addr.port(),
            rack: p.rack.clone(),
        })
        .collect();
    // No cluster id until the metadata log names it (Metadata then answers null).
    Arc::new(ClusterView::new(String::new(), None, brokers, Vec::new()))
}

/// What the core loop feeds besides the node: the peers' queues, the published view, the
/// metrics and the fetches waiting for data.
struct Core {
    fatal: Arc<std::sync::Mutex<Option<String>>>,
    transport: Transport,
    published: Published,
    metrics: Arc<Metrics>,
    data: Arc<Notify>,
    tick: Duration,
}

/// Waits until a command arrives (returned), a stop is requested or the next tick is due.
/// `None` with the queue closed means every handle is gone.
async fn next_command(
    rx: &mut mpsc::Receiver<CoreCmd>,
    stop: &StopRequest,
    next_tick: Instant,
) -> Result<Option<CoreCmd>, Closed> {
    tokio::select! {
        cmd = rx.recv() => cmd.map(Some).ok_or(Closed),
        () = stop.wake.notified() => Ok(None),
        () = tokio::time::sleep_until(next_tick) => Ok(None),
    }
}

/// Every sender of the core's queue is gone.
struct Closed;

async fn core_loop(
    mut node: Node,
    mut rx: mpsc::Receiver<CoreCmd>,
    stop_request: &StopRequest,
    core: Core,
    logger: &Logger,
) {
    let Core {
        fatal,
        mut transport,
        published,
        metrics,
        data,
        tick,
    } = core;
    let mut next_tick = Instant::now() + tick;
    let mut waiting: BTreeMap<u64, oneshot::Sender<Response>> = BTreeMap::new();
    let mut next_id: u64 = 1;
    let started = Instant::now();
    let mut last_publish = started.checked_sub(PUBLISH_EVERY).unwrap_or(started);
    let mut last_full_publish = last_publish;
    let mut published_version = u64::MAX;
    let mut stopping_since: Option<Instant> = None;
    let mut dialed: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    let clock = Monotonic(started);
    info!(logger, "core started"; "partitions" => node.replicas().count());
    // Set when the last pump left work: do not wait for input before the next one.
    let mut busy = false;
    loop {
        let first = if busy {
            rx.try_recv().ok()
        } else {
            match next_command(&mut rx, stop_request, next_tick).await {
                Ok(cmd) => cmd,
                Err(Closed) => return,
            }
        };
        // True once: when the request is first seen.
        let stop = stopping_since.is_none() && stop_request.requested.load(Ordering::SeqCst);
        let mut handle = |cmd: CoreCmd, node: &mut Node| match cmd {
            CoreCmd::Peer(env) => node.handle_envelope(env),
            CoreCmd::Client(req, reply) => {
                let id = next_id;
                next_id += 1;
                waiting.insert(id, reply);
                node.handle_request(clock.ms(), id, req);
            }
        };
        if let Some(cmd) = first {
            handle(cmd, &mut node);
            // Drain what queued meanwhile so one fsync covers all of it.
            while let Ok(cmd) = rx.try_recv() {
                handle(cmd, &mut node);
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            // Ticks missed while the loop was stalled (a long fsync, a starved thread) are
            // skipped, not caught up: a burst of catch-up ticks would run raft's election
            // timer through seconds in milliseconds, and a follower whose leader is healthy
            // but whose own loop stalled would start an election the moment it recovered
            // (librdkafka's 0038 saw such failovers under load, and its producer's retries
            // wrote duplicates). Time-based timers read the clock and lose nothing.
            next_tick = now + tick;
            if let Err(e) = node.tick(clock.ms(), wall_ms()) {
                stop_on(&e, &fatal, logger);
                return;
            }
        }
        let mut net = QueueNet {
            peers: &transport.peers,
            routes: &transport.routes,
        };
        let commits_before = node.commit_version();
        // One bounded pump; leftover work is picked up after answering what is done, so a
        // flood of input cannot starve replies and ticks.
        let pumped = match node.pump(&mut net, PUMP_STEPS_MAX) {
            Ok(p) => p,
            Err(e) => {
                // Fail-stop (see core::node): nothing from the failed step was acknowledged.
                stop_on(&e, &fatal, logger);
                return;
            }
        };
        busy = pumped.more;
        answer(&mut node, &mut waiting);
        if node.commit_version() != commits_before {
            data.notify_waiters();
        }
        // The view is rebuilt when leadership or topics changed (checked every few ms), and at
        // least every second for the watermarks and ISRs that metrics and Metadata report;
        // rebuilding it after every step would cost more than the step with many partitions.
        let version = node.view_version();
        let due = last_publish.elapsed() >= PUBLISH_EVERY
            && (version != published_version || last_full_publish.elapsed() >= REFRESH_EVERY);
        if due || stop {
            publish(&node, &published);
            transport.dial_registered(&node, &mut dialed);
            metrics.set_partitions(partition_stats(&node));
            last_publish = Instant::now();
            last_full_publish = last_publish;
            published_version = version;
        }
        if stop && stopping_since.is_none() {
            info!(logger, "stopping: handing over leaderships");
            stopping_since = Some(Instant::now());
            node.transfer_all_leaderships();
            // Keep pumping without waiting: the handover needs the loop to run.
            busy = true;
            continue;
        }
        let handed_over = !node.leads_any();
        if stopping_since.is_some_and(|t| handed_over || t.elapsed() >= HANDOVER_MAX) {
            node.abandon_pending();
            answer(&mut node, &mut waiting);
            info!(logger, "core stopped");
            return;
        }
    }
}

/// The core stops on `e` (fail-stop): logged, and kept for whoever runs the node.
fn stop_on(e: &NodeError, fatal: &std::sync::Mutex<Option<String>>, logger: &Logger) {
    error!(logger, "stopping"; "error" => %e);
    if let Ok(mut f) = fatal.lock() {
        *f = Some(e.to_string());
    }
}

/// Sends every reply the node has ready to the request that waits for it.
fn answer(node: &mut Node, waiting: &mut BTreeMap<u64, oneshot::Sender<Response>>) {
    while let Some((id, resp)) = node.poll_reply() {
        if let Some(tx) = waiting.remove(&id) {
            let _ = tx.send(resp);
        }
    }
}

/// Per-partition gauges for `/metrics`.
fn partition_stats(node: &Node) -> Vec<PartitionStats> {
    node.replicas()
        .filter(|r| !is_internal_topic(&r.tp().topic))
        .map(|r| {
            let st = r.status();
            PartitionStats {
                topic: r.tp().topic.clone(),
                partition: r.tp().partition,
                term: st.term,
                commit_index: st.commit,
                high_watermark: st.high_watermark,
                log_end_offset: st.log_end_offset,
                is_leader: r.is_leader(),
                replicas: r.voters(),
                isr: r.in_sync_replicas(),
            }
        })
        .collect()
}

/// Publishes the view that `railyard_core::view` builds (its docs give the rules), indexed.
fn publish(node: &Node, p: &Published) {
    let topics = railyard_core::view::topics(node);
    let brokers = railyard_core::view::brokers(node, p.base.brokers(), &topics);
    let cluster_id = node.cluster_id().unwrap_or(p.base.cluster_id());
    let fenced = railyard_core::view::fenced_brokers(node, &brokers);
    let v = ClusterView::new(cluster_id.to_owned(), node.controller(), brokers, topics)
        .with_broker_configs(node.metadata().broker_configs.clone())
        .with_fenced(fenced);
    // Most refreshes (at least one a second) change nothing: keep the old snapshot then.
    let unchanged = p.view.read().is_ok_and(|current| **current == v);
    if !unchanged {
        if let Ok(mut w) = p.view.write() {
            *w = Arc::new(v);
        }
    }
}
