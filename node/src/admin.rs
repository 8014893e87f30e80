//! The admin HTTP endpoint: Prometheus metrics, a health check and the cluster view as JSON.
//!
//! - `GET /metrics`: [`Metrics::render_prometheus`], `text/plain; version=0.0.4`.
//! - `GET /health`: 200 with `{"status":"ok",...}` when the node is up and knows a leader for
//!   every partition it hosts; 503 with `{"status":"unavailable","reasons":[...]}` otherwise.
//!   "Up" means the runtime is still publishing partition statistics: a core thread that
//!   stopped (after a storage failure) leaves its last cluster view in place, so the view alone
//!   cannot tell a dead node from a healthy one.
//! - `GET /v1/cluster`: the [`ClusterView`] (brokers, topics, partitions with leader, replicas
//!   and ISR) plus this node's [`PartitionStats`], as JSON.
//!
//! Anything else is 404 (405 for another method on a known path). The server is hyper's HTTP/1
//! connection driver with no framework: three routes do not need a router. Connections are
//! limited to [`ADMIN_CONNECTIONS_MAX`] and must send their headers within
//! [`HEADER_READ_TIMEOUT`], so a scraper gone wrong cannot hold the node's resources.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use railyard_core::types::{NodeId, PartitionId};
use serde::Serialize;
use slog::{debug, info, o, warn, Logger};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::broker::{Broker, BrokerInfo, ClusterView, PartitionView, TopicView};
use crate::metrics::{Metrics, PartitionStats};

/// Most admin connections served at once; further ones wait in the listen backlog.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Partition statistics older than this mean the runtime has stopped: it republishes every few
/// tens of milliseconds while it runs.
pub const STATS_STALE_AFTER: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const JSON_CONTENT_TYPE: &str = "application/json";

/// Returns the node's current cluster view; called once per `/health` or `/v1/cluster` request.
pub type ClusterFn = Arc<dyn Fn() -> Arc<ClusterView> + Send + Sync>;

/// What the admin endpoint answers from.
#[derive(Clone)]
pub struct AdminState {
    pub node_id: NodeId,
    pub metrics: Arc<Metrics>,
    pub cluster: ClusterFn,
}

impl AdminState {
    /// The state of a node whose cluster view comes from its [`Broker`] handle.
    pub fn from_broker<B: Broker>(broker: B, metrics: Arc<Metrics>) -> AdminState {
        AdminState {
            node_id: broker.node_id(),
            metrics,
            cluster: Arc::new(move || broker.cluster()),
        }
    }
}

/// Serves the admin endpoint on `listener` forever, one task per connection.
pub async fn serve_admin(listener: TcpListener, state: AdminState, logger: Logger) {
    if let Ok(addr) = listener.local_addr() {
        info!(logger, "admin listener started"; "addr" => %addr);
    }
    let slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    loop {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(logger, "admin accept failed"; "error" => %e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        let log = logger.new(o!("admin_peer" => peer.to_string()));
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(log, "admin connection ended"; "error" => %e);
            }
            drop(permit);
        });
    }
}

/// The JSON body of `/health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub node_id: NodeId,
    /// Why the node is unavailable; empty when it is ok.
    pub reasons: Vec<String>,
}

/// Judges the node's health from its cluster view and how recently the runtime published stats.
pub fn health(state: &AdminState) -> Health {
    judge(state, STATS_STALE_AFTER)
}

fn judge(state: &AdminState, stale_after: Duration) -> Health {
    let mut reasons = Vec::new();
    if let Some(age) = state.metrics.partitions_age() {
        if age > stale_after {
            reasons.push(format!(
                "runtime has not published partition stats for {} ms",
                age.as_millis()
            ));
        }
    }
    let view = (state.cluster)();
    for topic in view.topics() {
        for p in &topic.partitions {
            if p.replicas.contains(&state.node_id) && p.leader.is_none() {
                reasons.push(format!("{}-{}: no leader known", topic.name, p.partition));
            }
        }
    }
    Health {
        status: if reasons.is_empty() {
            "ok"
        } else {
            "unavailable"
        },
        node_id: state.node_id,
        reasons,
    }
}

/// Routes one request. Bodies are ignored: every route is a GET.
fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/health" | "/v1/cluster") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    if req.method() != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            PROMETHEUS_CONTENT_TYPE,
            state.metrics.render_prometheus().into(),
        ),
        "/health" => {
            let h = health(state);
            let status = if h.reasons.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, JSON_CONTENT_TYPE, json(&h))
        }
        _ => {
            let view = (state.cluster)();
            let local = state.metrics.partitions();
            let body = ClusterJson::new(state.node_id, &view, &local);
            reply(StatusCode::OK, JSON_CONTENT_TYPE, json(&body))
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json<T: Serialize>(value: &T) -> Bytes {
    // These types hold only strings, numbers and sequences, whose serialization cannot fail;
    // should it ever, the client gets a JSON error rather than a dropped connection.
    let mut out =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    out.push(b'\n');
    out.into()
}

/// `/v1/cluster`: a serializable mirror of [`ClusterView`], so that the broker interface needs
/// no serde.
#[derive(Serialize)]
struct ClusterJson<'a> {
    node_id: NodeId,
    cluster_id: &'a str,
    controller: Option<NodeId>,
    brokers: Vec<BrokerJson<'a>>,
    topics: Vec<TopicJson<'a>>,
    /// This node's replicas as the runtime last published them.
    local_partitions: &'a [PartitionStats],
}

#[derive(Serialize)]
struct BrokerJson<'a> {
    id: NodeId,
    host: &'a str,
    port: u16,
    rack: Option<&'a str>,
}

#[derive(Serialize)]
struct TopicJson<'a> {
    name: &'a str,
    /// The topic id as a hyphenated hex UUID.
    id: String,
    partitions: Vec<PartitionJson<'a>>,
}

#[derive(Serialize)]
struct PartitionJson<'a> {
    partition: PartitionId,
    leader: Option<NodeId>,
    leader_epoch: i32,
    replicas: &'a [NodeId],
    isr: &'a [NodeId],
}

impl<'a> ClusterJson<'a> {
    fn new(node_id: NodeId, view: &'a ClusterView, local: &'a [PartitionStats]) -> Self {
        ClusterJson {
            node_id,
            cluster_id: view.cluster_id(),
            controller: view.controller(),
            brokers: view.brokers().iter().map(BrokerJson::new).collect(),
            topics: view.topics().iter().map(TopicJson::new).collect(),
            local_partitions: local,
        }
    }
}

impl<'a> BrokerJson<'a> {
    fn new(b: &'a BrokerInfo) -> Self {
        BrokerJson {
            id: b.id,
            host: &b.host,
            port: b.port,
            rack: b.rack.as_deref(),
        }
    }
}

impl<'a> TopicJson<'a> {
    fn new(t: &'a TopicView) -> Self {
        TopicJson {
            name: &t.name,
            id: uuid_string(&t.id),
            partitions: t.partitions.iter().map(PartitionJson::new).collect(),
        }
    }
}

impl<'a> PartitionJson<'a> {
    fn new(p: &'a PartitionView) -> Self {
        PartitionJson {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: &p.replicas,
            isr: &p.isr,
        }
    }
}

/// `8-4-4-4-12` lowercase hex.
fn uuid_string(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use kafka_protocol::messages::ApiKey;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A parsed HTTP/1.1 response.
    struct HttpResponse {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl HttpResponse {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Sends one request with `Connection: close` and reads the whole response.
    async fn call(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response within 10 s")
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let response = HttpResponse {
            status,
            headers,
            body: body.to_owned(),
        };
        if let Some(len) = response.header("content-length") {
            assert_eq!(len.parse::<usize>().unwrap(), response.body.len());
        }
        response
    }

    fn partition(p: PartitionId, leader: Option<NodeId>, replicas: Vec<NodeId>) -> PartitionView {
        PartitionView {
            partition: p,
            leader,
            leader_epoch: 3,
            isr: replicas.clone(),
            replicas,
        }
    }

    /// Node 1's view, with `orders-1` led by `leader_of_1`.
    fn view(leader_of_1: Option<NodeId>) -> ClusterView {
        ClusterView::new(
            "railyard-test".into(),
            Some(1),
            vec![
                BrokerInfo {
                    id: 1,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: Some("rack-a".into()),
                },
                BrokerInfo {
                    id: 2,
                    host: "127.0.0.1".into(),
                    port: 9093,
                    rack: None,
                },
            ],
            vec![TopicView {
                name: "orders".into(),
                id: [0xAB; 16],
                partitions: vec![
                    partition(0, Some(1), vec![1, 2]),
                    partition(1, leader_of_1, vec![1, 2]),
                    // Hosted elsewhere only: its missing leader is not this node's problem.
                    partition(2, None, vec![2, 3]),
                ],
                configs: Default::default(),
            }],
        )
    }

    /// Starts the endpoint for node 1 over a view the test can change.
    async fn start(view: Arc<Mutex<ClusterView>>, metrics: Arc<Metrics>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState {
            node_id: 1,
            metrics,
            cluster: Arc::new(move || Arc::new(view.lock().unwrap().clone())),
        };
        let logger = Logger::root(slog::Discard, o!());
        tokio::spawn(serve_admin(listener, state, logger));
        addr
    }

    #[tokio::test]
    async fn test_metrics_endpoint_serves_prometheus_text() {
        // /metrics answers 200 in the exposition content type with what was recorded.
        let metrics = Arc::new(Metrics::new());
        metrics.record_request(ApiKey::Produce, Duration::from_micros(250), 100, 50);
        let addr = start(Arc::new(Mutex::new(view(Some(2)))), metrics).await;
        let r = call(addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(PROMETHEUS_CONTENT_TYPE));
        assert!(r
            .body
            .contains("# TYPE railyard_kafka_requests_total counter\n"));
        assert!(r
            .body
            .contains("railyard_kafka_requests_total{api=\"Produce\"} 1\n"));
    }

    #[tokio::test]
    async fn test_health_is_ok_only_with_leaders_for_hosted_partitions() {
        // 200 while every partition with a replica here has a leader; 503 naming the one that
        // lost it.
        let shared = Arc::new(Mutex::new(view(Some(2))));
        let addr = start(shared.clone(), Arc::new(Metrics::new())).await;
        let r = call(addr, "GET", "/health").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), Some(JSON_CONTENT_TYPE));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["node_id"], 1);

        *shared.lock().unwrap() = view(None);
        let r = call(addr, "GET", "/health").await;
        assert_eq!(r.status, 503);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["status"], "unavailable");
        assert_eq!(
            body["reasons"],
            serde_json::json!(["orders-1: no leader known"])
        );
    }

    #[test]
    fn test_health_fails_when_the_runtime_stops_publishing() {
        // Stale partition stats mean a stopped core thread, whatever the last view says.
        let metrics = Arc::new(Metrics::new());
        let state = AdminState {
            node_id: 1,
            metrics: metrics.clone(),
            cluster: Arc::new(|| Arc::new(view(Some(2)))),
        };
        let stale_after = Duration::from_millis(1);
        assert!(
            judge(&state, stale_after).reasons.is_empty(),
            "never published is not stale"
        );
        metrics.set_partitions(Vec::new());
        std::thread::sleep(Duration::from_millis(5));
        let h = judge(&state, stale_after);
        assert_eq!(h.status, "unavailable");
        assert!(
            h.reasons[0].contains("has not published"),
            "{:?}",
            h.reasons
        );
        metrics.set_partitions(Vec::new());
        assert!(judge(&state, Duration::from_secs(60)).reasons.is_empty());
    }

    #[tokio::test]
    async fn test_cluster_endpoint_serves_the_view_as_json() {
        // /v1/cluster carries brokers, topics and partitions with leader, replicas and ISR.
        let metrics = Arc::new(Metrics::new());
        metrics.set_partitions(vec![PartitionStats {
            topic: "orders".into(),
            partition: 0,
            term: 3,
            commit_index: 10,
            high_watermark: 9,
            log_end_offset: 9,
            is_leader: true,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        }]);
        let addr = start(Arc::new(Mutex::new(view(Some(2)))), metrics).await;
        let r = call(addr, "GET", "/v1/cluster").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(JSON_CONTENT_TYPE));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["node_id"], 1);
        assert_eq!(body["cluster_id"], "railyard-test");
        assert_eq!(body["controller"], 1);
        assert_eq!(body["brokers"][0]["rack"], "rack-a");
        assert_eq!(body["brokers"][1]["rack"], serde_json::Value::Null);
        let topic = &body["topics"][0];
        assert_eq!(topic["name"], "orders");
        assert_eq!(topic["id"], "abababab-abab-abab-abab-abababababab");
        assert_eq!(topic["partitions"][1]["leader"], 2);
        assert_eq!(topic["partitions"][1]["leader_epoch"], 3);
        assert_eq!(topic["partitions"][2]["leader"], serde_json::Value::Null);
        assert_eq!(
            topic["partitions"][0]["replicas"],
            serde_json::json!([1, 2])
        );
        assert_eq!(topic["partitions"][0]["isr"], serde_json::json!([1, 2]));
        assert_eq!(body["local_partitions"][0]["commit_index"], 10);
    }

    #[tokio::test]
    async fn test_unknown_paths_and_methods_are_refused() {
        // Anything but GET on the three routes is 404, or 405 with Allow on a known route.
        let addr = start(
            Arc::new(Mutex::new(view(Some(2)))),
            Arc::new(Metrics::new()),
        )
        .await;
        for path in ["/", "/metricsx", "/v1/cluster/1", "/v2/cluster"] {
            assert_eq!(call(addr, "GET", path).await.status, 404, "{path}");
        }
        let r = call(addr, "POST", "/metrics").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET"));
        // A query string does not change the route.
        assert_eq!(call(addr, "GET", "/metrics?x=1").await.status, 200);
    }
}
