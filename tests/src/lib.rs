//! Workspace-level tests and their helpers.
//!
//! - `tests/core_is_sans_io.rs`: the core depends on no IO crate.
//! - `tests/rdkafka_interop.rs`: librdkafka (the `rdkafka` crate) against an in-process 3-node
//!   cluster: 100k keyed records with acks=all, read back by assign, murmur2 placement.
//! - `tests/protocol_snapshots.rs`: insta snapshots of ApiVersions and Metadata.
//!
//! Real-process tests (kill -9, whole-cluster restart) live in `node/tests/process.rs`, where
//! cargo builds the `railyard` binary for them.
//!
//! This library holds what those suites share: ephemeral ports, an in-process cluster, a raw
//! Kafka client over kafka-protocol, and the Java client's murmur2 partitioner.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use railyard_node::broker::{Broker, ClusterView};
use railyard_node::config::{NodeConfig, TopicConfig};
use railyard_node::server::{start_node, RunningNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// First and one-past-last port [`free_addr`] hands out: below Linux's ephemeral range
/// (32768-60999), so the kernel never gives these ports to outgoing connections or to port-0
/// binds between our check and the node's bind (the race a released ephemeral port has).
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A loopback address whose port was free a moment ago. Ports come from a per-process counter
/// (no two calls in a process share one) starting at a pid-derived offset (test binaries running
/// side by side start far apart), below the ephemeral range (see [`PORTS`]).
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let offset = (std::process::id() % 97) * (span / 97);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + (offset + n) % span;
        if let Ok(l) = StdListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("bound listener has an address");
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// `n` node configs (ids 1..=n) on fresh ephemeral loopback ports sharing one peer list, with
/// data directories `root/node-<id>`. Each is written as `root/node-<id>.toml` and loaded with
/// [`NodeConfig::from_file`], so the tests go through the same TOML format as `railyard start`
/// (and fields added later with defaults need no change here).
pub fn cluster_configs(
    n: u64,
    root: &std::path::Path,
    topics: Vec<TopicConfig>,
    extra_toml: &str,
) -> Vec<NodeConfig> {
    let peers: Vec<(u64, SocketAddr, SocketAddr)> =
        (1..=n).map(|id| (id, free_addr(), free_addr())).collect();
    (1..=n)
        .map(|id| {
            let mut text = extra_toml.to_string();
            text += &node_toml(id, &root.join(format!("node-{id}")), &peers, &topics);
            let path = root.join(format!("node-{id}.toml"));
            std::fs::write(&path, text).expect("writing a node config");
            NodeConfig::from_file(&path).expect("a config we wrote parses")
        })
        .collect()
}

/// The TOML config of node `id`: `peers` are `(id, raft_addr, kafka_addr)`; the node listens
/// on its own pair.
pub fn node_toml(
    id: u64,
    data_dir: &std::path::Path,
    peers: &[(u64, SocketAddr, SocketAddr)],
    topics: &[TopicConfig],
) -> String {
    let &(_, raft, kafka) = peers
        .iter()
        .find(|p| p.0 == id)
        .expect("the node is among the peers");
    let mut t = format!(
        "id = {id}\ndata_dir = {:?}\nkafka_listen = \"{kafka}\"\nraft_listen = \"{raft}\"\n\
         tick_ms = 100\nlog_level = \"warning\"\n",
        data_dir.display().to_string()
    );
    for (pid, raft, kafka) in peers {
        t +=
            &format!("\n[[peers]]\nid = {pid}\nraft_addr = \"{raft}\"\nkafka_addr = \"{kafka}\"\n");
    }
    for tc in topics {
        t += &format!(
            "\n[[topics]]\nname = {:?}\npartitions = {}\nreplication_factor = {}\n",
            tc.name, tc.partitions, tc.replication_factor
        );
    }
    t
}

/// A topic of `partitions` partitions replicated `rf` times.
pub fn topic(name: &str, partitions: u32, rf: u32) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        partitions,
        replication_factor: rf,
    }
}

/// A cluster of nodes inside this process (inside the calling tokio runtime), each with its own
/// data directory under one temporary directory. Dropping it stops the core threads; the tokio
/// tasks (listeners, transport) end with the runtime.
pub struct InProcessCluster {
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<RunningNode>,
    _dir: tempfile::TempDir,
}

impl InProcessCluster {
    /// Starts `n` nodes hosting `topics`.
    pub async fn start(n: u64, topics: Vec<TopicConfig>) -> InProcessCluster {
        InProcessCluster::start_with(n, topics, "").await
    }

    /// Starts `n` nodes hosting `topics`, with `extra_toml` (top-level keys such as
    /// `controller_voters = [1, 2, 3]`) in every node's config.
    pub async fn start_with(
        n: u64,
        topics: Vec<TopicConfig>,
        extra_toml: &str,
    ) -> InProcessCluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let configs = cluster_configs(n, dir.path(), topics, extra_toml);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut nodes = Vec::new();
        for c in &configs {
            nodes.push(
                start_node(c.clone(), &logger)
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
        self.nodes
            .iter()
            .map(|n| n.kafka_addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until the configured topics exist with all their partitions, and every node hosting
    /// a replica of a partition sees a leader for it and agrees with the others on which.
    /// Returns the agreed view (as node 1 publishes it).
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Arc<ClusterView> {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<(u64, Arc<ClusterView>)> = self
                .nodes
                .iter()
                .map(|n| (n.handle.node_id(), n.handle.cluster()))
                .collect();
            if has_topics(&views[0].1, &self.configs[0].topics) && all_led_and_agreed(&views) {
                return views[0].1.clone();
            }
            assert!(
                Instant::now() < deadline,
                "not every partition had an agreed leader within {timeout:?}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// Whether every partition has a leader in every node's view, and the nodes agree (nodes learn
/// the leaders of partitions they do not host through the metadata log).
fn all_led_and_agreed(views: &[(u64, Arc<ClusterView>)]) -> bool {
    let Some((_, first)) = views.first() else {
        return false;
    };
    first.topics().iter().all(|t| {
        t.partitions.iter().all(|p| {
            let seen: Vec<Option<u64>> = views
                .iter()
                .map(|(_, v)| v.partition(&t.name, p.partition).and_then(|vp| vp.leader))
                .collect();
            seen.first().is_some_and(|l| l.is_some()) && seen.iter().all(|l| l == &seen[0])
        })
    })
}

/// A raw Kafka client over one TCP connection: frames requests with kafka-protocol and decodes
/// the responses, checking correlation ids.
pub struct KafkaConn {
    stream: TcpStream,
    next_correlation: i32,
}

impl KafkaConn {
    pub async fn connect(addr: SocketAddr) -> KafkaConn {
        KafkaConn {
            stream: TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}")),
            next_correlation: 1,
        }
    }

    /// Sends `req` at `version` and returns the decoded response (10 s timeout).
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("railyard-tests")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encoding a request header");
        req.encode(&mut body, version).expect("encoding a request");
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.expect("sending");
        let read = async {
            let len = self.stream.read_i32().await.expect("reading a length");
            let mut buf = vec![0u8; len as usize];
            self.stream
                .read_exact(&mut buf)
                .await
                .expect("reading a frame");
            Bytes::from(buf)
        };
        let mut frame = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no response within 10 s");
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .expect("decoding a response header");
        assert_eq!(header.correlation_id, correlation, "responses out of order");
        let resp = R::Response::decode(&mut frame, version).expect("decoding a response");
        assert_eq!(frame.remaining(), 0, "response has trailing bytes");
        resp
    }
}

/// Kafka's `org.apache.kafka.common.utils.Utils.murmur2`: MurmurHash2, 32-bit, seed
/// 0x9747b28c, little-endian 4-byte blocks, with Java's signed arithmetic.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a non-null key:
/// `Utils.toPositive(Utils.murmur2(key)) % numPartitions`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves murmur2 matches Kafka's own test vectors (UtilsTest.testMurmur2), including every
    // tail length, so a partition mismatch in the interop test is the broker's or client's fault.
    #[test]
    fn test_murmur2_matches_kafka_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, want) in cases {
            assert_eq!(
                murmur2(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!((0..4).contains(&java_partition(b"foobar", 4)));
    }
}
