//! Real `railyard start` processes on loopback: kill -9 of a partition leader during acks=all
//! production, and a whole-cluster restart. Each node is a child process of the test with its
//! own TOML config, ephemeral ports and data directory in a temp dir; the processes are killed
//! when the test ends, pass or fail. librdkafka (the `rdkafka` crate) is the client; leaders and
//! in-sync replicas are read with raw Metadata v12 requests to one node at a time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

/// The core's election timeout is 10-20 ticks of 100 ms; a new leader must appear within twice
/// the longest one.
const NEW_LEADER_WITHIN: Duration = Duration::from_secs(4);

/// The two tests each run three nodes; running them one at a time keeps a 2-core machine from
/// starving the election timers.
static SERIAL: Mutex<()> = Mutex::new(());

/// A loopback address whose port was free a moment ago, taken below Linux's ephemeral range
/// (32768-60999) so that no outgoing connection or port-0 bind can grab it before the child
/// binds it (as `railyard_tests::free_addr`, which this crate cannot depend on).
fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 97) * 120;
    for _ in 0..12_000 {
        let port = 20_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("bound listener has an address");
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// One `railyard start` child process (absent while stopped).
struct NodeProc {
    id: u64,
    kafka: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_railyard"));
        for var in [
            "RAILYARD_LOG",
            "RAILYARD_LOG_FORMAT",
            "RAILYARD_CONFIG",
            "RAILYARD_ID",
            "RAILYARD_DATA_DIR",
            "RAILYARD_KAFKA_LISTEN",
            "RAILYARD_RAFT_LISTEN",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(["--log-level", "warning", "start", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning railyard");
        self.child = Some(child);
    }

    /// kill -9 and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL and fail after 15 s).
    fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(exit) = c.try_wait().expect("waiting for railyard") {
                assert!(
                    exit.success(),
                    "node {} exited with {exit} on SIGTERM",
                    self.id
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node {} did not exit within 15 s of SIGTERM", self.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Three `railyard start` processes sharing a peer list; killed on drop.
struct ProcCluster {
    nodes: Vec<NodeProc>,
    _dir: tempfile::TempDir,
}

impl ProcCluster {
    fn start(topic: &str, partitions: u32) -> ProcCluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let peers: Vec<(u64, SocketAddr, SocketAddr)> =
            (1..=3).map(|id| (id, free_addr(), free_addr())).collect();
        let mut nodes = Vec::new();
        for &(id, raft, kafka) in &peers {
            let data = dir.path().join(format!("node-{id}"));
            let mut text = format!(
                "id = {id}\ndata_dir = {:?}\nkafka_listen = \"{kafka}\"\n\
                 raft_listen = \"{raft}\"\ntick_ms = 100\n",
                data.display().to_string()
            );
            for (pid, praft, pkafka) in &peers {
                text += &format!(
                    "\n[[peers]]\nid = {pid}\nraft_addr = \"{praft}\"\nkafka_addr = \"{pkafka}\"\n"
                );
            }
            text += &format!(
                "\n[[topics]]\nname = \"{topic}\"\npartitions = {partitions}\nreplication_factor = 3\n"
            );
            let config = dir.path().join(format!("node-{id}.toml"));
            std::fs::write(&config, text).expect("writing a config");
            nodes.push(NodeProc {
                id,
                kafka,
                config,
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            });
        }
        for n in nodes.iter_mut() {
            n.start();
        }
        ProcCluster { nodes, _dir: dir }
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node(&mut self, id: u64) -> &mut NodeProc {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of the cluster")
    }

    fn kafka(&self, id: u64) -> SocketAddr {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node")
            .kafka
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The node that, asked itself, says it leads `partition` of `topic`, and its ISR.
    fn self_declared_leader(&self, topic: &str, partition: i32) -> Option<(u64, Vec<u64>)> {
        self.running().into_iter().find_map(|id| {
            let p = partition_state(self.kafka(id), topic, partition)?;
            (p.0 == Some(id)).then_some((id, p.1))
        })
    }

    /// Waits until some running node other than `not` declares itself leader of the partition
    /// and every other running node agrees; returns it and when that was first seen.
    fn wait_for_leader(
        &self,
        topic: &str,
        partition: i32,
        not: Option<u64>,
        timeout: Duration,
    ) -> (u64, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((leader, _)) = self.self_declared_leader(topic, partition) {
                let agreed = self.running().into_iter().all(|id| {
                    partition_state(self.kafka(id), topic, partition).map(|p| p.0)
                        == Some(Some(leader))
                });
                if Some(leader) != not && agreed {
                    return (leader, Instant::now());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader of {topic}/{partition} (other than {not:?}) within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_for_all_leaders(&self, topic: &str, partitions: i32) {
        for p in 0..partitions {
            self.wait_for_leader(topic, p, None, Duration::from_secs(30));
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            n.kill9();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- node {} log (last 30 lines, newest first)", n.id);
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Asks the node at `addr` for Metadata v12 and returns `partition`'s (leader, ISR) as that node
/// sees it; `None` if the node does not answer.
fn partition_state(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
) -> Option<(Option<u64>, Vec<u64>)> {
    let resp = metadata(addr).ok()?;
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))?;
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)?;
    let leader = (p.leader_id.0 >= 0).then_some(p.leader_id.0 as u64);
    Some((leader, p.isr_nodes.iter().map(|b| b.0 as u64).collect()))
}

fn metadata(addr: SocketAddr) -> std::io::Result<MetadataResponse> {
    const VERSION: i16 = 12;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let header = RequestHeader::default()
        .with_request_api_key(MetadataRequest::KEY)
        .with_request_api_version(VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("process-test")));
    let mut body = BytesMut::new();
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    header
        .encode(&mut body, MetadataRequest::header_version(VERSION))
        .map_err(|e| bad(e.to_string()))?;
    MetadataRequest::default()
        .with_topics(None)
        .encode(&mut body, VERSION)
        .map_err(|e| bad(e.to_string()))?;
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    stream.read_exact(&mut buf)?;
    let mut buf = bytes::Bytes::from(buf);
    let h = ResponseHeader::decode(&mut buf, MetadataResponse::header_version(VERSION))
        .map_err(|e| bad(e.to_string()))?;
    if h.correlation_id != 7 {
        return Err(bad("correlation id mismatch".into()));
    }
    let resp = MetadataResponse::decode(&mut buf, VERSION).map_err(|e| bad(e.to_string()))?;
    if buf.has_remaining() {
        return Err(bad("trailing bytes".into()));
    }
    Ok(resp)
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("enable.idempotence", "false")
        .create()
        .expect("creating the producer")
}

/// Reads `partition` from offset 0 through `last` (inclusive) with a librdkafka consumer by
/// assign; returns offset -> value.
fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    last: i64,
) -> BTreeMap<i64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "railyard-process-test-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("creating the consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(0))
        .expect("adding a partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last_key_value().is_none_or(|(o, _)| *o < last) {
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: read up to {:?} of {last} within 60 s",
            out.last_key_value().map(|(o, _)| *o)
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            // Transient (e.g. a broker of the bootstrap list is down): keep polling.
            Some(Err(e)) => eprintln!("consumer: {e}"),
            Some(Ok(m)) => {
                let v = m.payload().map(|b| String::from_utf8_lossy(b).into_owned());
                out.insert(m.offset(), v.unwrap_or_default());
            }
        }
    }
    out
}

/// Acknowledged records of a background producer: (offset, value, when acknowledged).
type Acked = Arc<Mutex<Vec<(i64, String, Instant)>>>;

/// Produces to one partition with acks=all, up to 64 records in flight, until `stop`.
async fn produce_until(
    producer: FutureProducer,
    topic: &'static str,
    partition: i32,
    stop: Arc<AtomicBool>,
    acked: Acked,
) -> (u64, u64) {
    let window = Arc::new(tokio::sync::Semaphore::new(64));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let (producer, acked, failed) = (producer.clone(), acked.clone(), failed.clone());
        let value = format!("value-{sent}");
        sent += 1;
        tokio::spawn(async move {
            let record = FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&value);
            match producer.send(record, Timeout::Never).await {
                Ok((p, offset)) => {
                    assert_eq!(p, partition);
                    acked.lock().unwrap().push((offset, value, Instant::now()));
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every send resolves within message.timeout.ms.
    let _all = window.acquire_many(64).await.expect("semaphore open");
    (sent, failed.load(Ordering::Relaxed))
}

fn acked_since(acked: &Acked, since: Instant) -> usize {
    acked.lock().unwrap().iter().filter(|a| a.2 > since).count()
}

fn wait_for_acks_since(acked: &Acked, since: Instant, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_since(acked, since) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: only {} records acknowledged within 30 s",
            acked_since(acked, since)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Proves, with real processes and kill -9 during acks=all production: a new leader is elected
// within 2x the election timeout (4 s), the cluster keeps committing, no acknowledged record is
// lost or changed, and the killed node catches up after a restart: the leader's ISR drops it
// while it is down and lists it again after it restarts, and then, with the other original
// leader killed too, the partition keeps committing with the restarted node as one of its two
// live voters (a raft majority of two needs its fsync, and log matching means its log holds
// every earlier entry).
#[test]
fn test_kill9_leader_during_acks_all_production() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const TOPIC: &str = "crash";
    let started = Instant::now();
    let mut cluster = ProcCluster::start(TOPIC, 1);
    let (first, _) = cluster.wait_for_leader(TOPIC, 0, None, Duration::from_secs(30));
    let bootstrap = cluster.bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let producing = rt.spawn(produce_until(
        producer(&bootstrap),
        TOPIC,
        0,
        stop.clone(),
        acked.clone(),
    ));
    wait_for_acks_since(&acked, started, 200, "before the kill");

    // kill -9 the leader mid-production.
    let killed_at = Instant::now();
    cluster.node(first).kill9();
    let (second, elected_at) =
        cluster.wait_for_leader(TOPIC, 0, Some(first), Duration::from_secs(30));
    let failover = elected_at - killed_at;
    assert!(
        failover <= NEW_LEADER_WITHIN,
        "new leader {second} took {failover:?} after the kill (limit {NEW_LEADER_WITHIN:?})"
    );
    wait_for_acks_since(&acked, killed_at, 200, "after the kill");

    // While the killed node is down, the leader's ISR must not list it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.self_declared_leader(TOPIC, 0) {
            Some((_, isr)) if !isr.contains(&first) && !isr.is_empty() => break,
            other => assert!(
                Instant::now() < deadline,
                "ISR still lists the dead node {first} after 20 s: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Restart it: it must rejoin the ISR (catch up with the leader's log) while writes go on.
    let restarted_at = Instant::now();
    cluster.node(first).start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (leader_now, caught_up) = loop {
        match cluster.self_declared_leader(TOPIC, 0) {
            Some((leader, isr)) if isr.contains(&first) && isr.len() == 3 => {
                break (leader, restarted_at.elapsed())
            }
            other => assert!(
                Instant::now() < deadline,
                "restarted node {first} not back in the ISR within 60 s: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // If the restarted node leads now, its election already shows an up-to-date log. Otherwise
    // kill the current leader: the restarted node is one of the two live voters, so every new
    // commit needs it.
    let mut second_failover = None;
    if leader_now != first {
        let killed2 = Instant::now();
        cluster.node(leader_now).kill9();
        let (third, at) =
            cluster.wait_for_leader(TOPIC, 0, Some(leader_now), Duration::from_secs(30));
        let took = at - killed2;
        assert!(
            took <= NEW_LEADER_WITHIN,
            "second failover to {third} took {took:?} (limit {NEW_LEADER_WITHIN:?})"
        );
        second_failover = Some((leader_now, third, took));
        wait_for_acks_since(&acked, at, 200, "with the restarted node as a needed voter");
    }

    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = rt.block_on(producing).expect("producer task");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let last = acked.iter().map(|a| a.0).max().expect("some acks");
    let read = read_partition(&bootstrap, TOPIC, 0, last);
    let mut lost = Vec::new();
    for (offset, value, _) in &acked {
        if read.get(offset) != Some(value) {
            lost.push((*offset, value.clone(), read.get(offset).cloned()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost or changed, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let dense: Vec<i64> = (0..=last).collect();
    assert_eq!(
        read.keys().copied().collect::<Vec<_>>(),
        dense,
        "offsets dense from 0"
    );
    eprintln!(
        "kill -9: leader {first} killed, {second} elected after {failover:?}; restarted node back \
         in ISR after {caught_up:?}; second failover {second_failover:?}; {} acked, {failed} \
         failed of {sent} sent; total {:?}",
        acked.len(),
        started.elapsed()
    );
}

// Proves that after SIGTERM of all three processes and a restart of all of them, every
// acknowledged (acks=all) record is still there, at its offset and with its value, and nothing
// else is: each partition's log ends exactly where the acknowledgements did.
#[test]
fn test_whole_cluster_restart_keeps_every_committed_record() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const TOPIC: &str = "durable";
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 3_000;
    let started = Instant::now();
    let mut cluster = ProcCluster::start(TOPIC, PARTITIONS as u32);
    cluster.wait_for_all_leaders(TOPIC, PARTITIONS);
    let bootstrap = cluster.bootstrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let acked: BTreeMap<(i32, i64), String> = rt.block_on(async {
        let producer = producer(&bootstrap);
        let mut pending = Vec::new();
        for i in 0..RECORDS {
            let (key, value) = (format!("k{i}"), format!("value-{i}"));
            let record = FutureRecord::to(TOPIC).key(&key).payload(&value);
            let delivery = producer
                .send_result(record)
                .unwrap_or_else(|(e, _)| panic!("enqueueing {i}: {e}"));
            pending.push((value, delivery));
        }
        let mut acked = BTreeMap::new();
        for (value, delivery) in pending {
            match delivery.await.expect("delivery future") {
                Ok((p, offset)) => {
                    assert!(
                        acked.insert((p, offset), value).is_none(),
                        "offset acked twice"
                    );
                }
                Err((e, _)) => panic!("{value} not acknowledged: {e}"),
            }
        }
        acked
    });
    let produced = started.elapsed();

    for n in cluster.nodes.iter_mut() {
        n.terminate();
    }
    for n in cluster.nodes.iter_mut() {
        n.start();
    }
    cluster.wait_for_all_leaders(TOPIC, PARTITIONS);
    for p in 0..PARTITIONS {
        let want: BTreeMap<i64, String> = acked
            .iter()
            .filter(|((ap, _), _)| *ap == p)
            .map(|((_, o), v)| (*o, v.clone()))
            .collect();
        let last = *want.keys().last().expect("every partition got records");
        let read = read_partition(&bootstrap, TOPIC, p, last);
        assert_eq!(read, want, "partition {p} differs after the restart");
    }
    // Nothing past the acknowledged records (the consumer stopped at the last acked offset).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("a client");
    for p in 0..PARTITIONS {
        // Right after a whole-cluster restart, brokers the old controller fenced while the
        // cluster went down stay out of Metadata until they re-register (one heartbeat and a
        // commit); librdkafka may meanwhile report the partition unknown, so retry a while as
        // an application would.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (low, high) = loop {
            match consumer.fetch_watermarks(TOPIC, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("watermarks of partition {p}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("watermarks of partition {p}: {e}"),
            }
        };
        let count = acked.keys().filter(|(ap, _)| *ap == p).count() as i64;
        assert_eq!(
            (low, high),
            (0, count),
            "partition {p} watermarks after the restart"
        );
    }
    eprintln!(
        "restart: {RECORDS} records produced in {produced:?}; total {:?}",
        started.elapsed()
    );
}
