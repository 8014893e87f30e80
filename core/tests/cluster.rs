//! Three core nodes wired together in memory, driven step by step: no simulator, no faults
//! except a cut link. Proves the paths the swarm rarely reaches on purpose: retention deleting
//! segments under a lagging follower, which must then install the leader's metadata-only
//! snapshot and resume from it; and the produce/fetch/list-offsets/leader-epoch API end to end.

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;
use railyard_core::api::{Acks, ClientError, OffsetSpec, Request, Response};
use railyard_core::batch::{decode_records, BatchBuilder};
use railyard_core::disk::{Disk, MemDisk};
use railyard_core::log::LogConfig;
use railyard_core::network::{Envelope, Outbox};
use railyard_core::node::{Node, NodeConfig, PartitionSpec};
use railyard_core::replica::ReplicaConfig;
use railyard_core::types::{NodeId, TopicPartition};

struct Cluster {
    nodes: Vec<Node>,
    disks: Vec<Rc<MemDisk>>,
    log: LogConfig,
    metadata: bool,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    in_flight: Vec<Envelope>,
    now_ms: i64,
    next_request: u64,
}

fn tp() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// A node of the fixed layout (one partition `t-0`), or, with `metadata`, a node whose
/// partitions come from the metadata log only.
fn config(id: NodeId, log: LogConfig, metadata: bool) -> NodeConfig {
    NodeConfig {
        id,
        seed: id,
        replica: ReplicaConfig::default(),
        log,
        partitions: if metadata {
            vec![]
        } else {
            vec![PartitionSpec {
                tp: tp(),
                voters: vec![1, 2, 3],
            }]
        },
        retention_check_ms: 50,
        metadata_voters: if metadata { vec![1, 2, 3] } else { vec![] },
        brokers: vec![1, 2, 3],
        preferred_leader_check_ms: None,
        min_free_bytes: 0,
    }
}

impl Cluster {
    fn new(log: LogConfig) -> Cluster {
        Cluster::with(log, false)
    }

    fn with(log: LogConfig, metadata: bool) -> Cluster {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let disks: Vec<Rc<MemDisk>> = (0..3).map(|_| Rc::new(MemDisk::new())).collect();
        let nodes = (1..=3)
            .map(|id| {
                let disk: Rc<dyn Disk> = disks[id as usize - 1].clone();
                Node::open(config(id, log.clone(), metadata), disk, &logger).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            disks,
            log,
            metadata,
            cut: BTreeSet::new(),
            in_flight: Vec::new(),
            now_ms: 0,
            next_request: 1,
        }
    }

    /// Drops node `id` and opens it again from its disk (a clean restart).
    fn restart(&mut self, id: NodeId) {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let disk: Rc<dyn Disk> = self.disks[id as usize - 1].clone();
        let node = Node::open(config(id, self.log.clone(), self.metadata), disk, &logger).unwrap();
        self.nodes[id as usize - 1] = node;
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Steps every node and delivers everything sent, until quiet.
    fn settle(&mut self) {
        for _ in 0..50 {
            for n in self.nodes.iter_mut() {
                let mut out = Outbox::default();
                while n.has_ready() {
                    n.step(&mut out).unwrap();
                }
                self.in_flight.extend(out.sent);
            }
            if self.in_flight.is_empty() {
                return;
            }
            for env in std::mem::take(&mut self.in_flight) {
                if !self.cut.contains(&(env.from, env.to)) {
                    let to = env.to;
                    self.node(to).handle_envelope(env);
                }
            }
        }
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.now_ms += 100;
            let now = self.now_ms;
            for n in self.nodes.iter_mut() {
                n.tick(now).unwrap();
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.replica(&tp()).unwrap().is_leader())
            .map(|n| n.id())
    }

    fn request(&mut self, node: NodeId, req: Request) -> Response {
        let id = self.next_request;
        self.next_request += 1;
        let now = self.now_ms;
        self.node(node).handle_request(now, id, req);
        for _ in 0..20 {
            self.settle();
            while let Some((rid, resp)) = self.node(node).poll_reply() {
                if rid == id {
                    return resp;
                }
            }
            self.tick(1);
        }
        panic!("no reply to request {id}");
    }

    fn produce(&mut self, node: NodeId, value: &str, ts: i64) -> Result<i64, ClientError> {
        let batch = BatchBuilder::new(ts)
            .record(None, Some(value.as_bytes()), &[], ts)
            .build();
        match self.request(
            node,
            Request::Produce {
                tp: tp(),
                acks: Acks::All,
                batch,
            },
        ) {
            Response::Produce(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn list_offsets(&mut self, node: NodeId, spec: OffsetSpec) -> (i64, i64) {
        match self.request(node, Request::ListOffsets { tp: tp(), spec }) {
            Response::ListOffsets(Ok(v)) => v,
            other => panic!("{other:?}"),
        }
    }
}

fn elect(c: &mut Cluster) -> NodeId {
    for _ in 0..100 {
        c.tick(1);
        if let Some(l) = c.leader() {
            return l;
        }
    }
    panic!("no leader elected");
}

/// Produce, fetch, list offsets and leader epochs behave as a Kafka client expects, and bad
/// requests get typed errors.
#[test]
fn test_produce_fetch_list_offsets_epochs() {
    let mut c = Cluster::new(LogConfig::default());
    let l = elect(&mut c);
    let follower = (1..=3).find(|n| *n != l).unwrap();
    let mut offsets = Vec::new();
    for i in 0..10 {
        offsets.push(c.produce(l, &format!("v{i}"), 1_000 + i).unwrap());
    }
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<i64>>(),
        "offsets are dense from 0"
    );
    // Not the leader: a typed error naming the leader.
    assert_eq!(
        c.produce(follower, "x", 0),
        Err(ClientError::NotLeader { leader: Some(l) })
    );
    // A corrupt batch is refused and nothing is written.
    let mut bad = BatchBuilder::new(0)
        .record(None, Some(b"bad"), &[], 0)
        .build()
        .to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let r = c.request(
        l,
        Request::Produce {
            tp: tp(),
            acks: Acks::All,
            batch: Bytes::from(bad),
        },
    );
    assert!(
        matches!(r, Response::Produce(Err(ClientError::CorruptBatch(_)))),
        "{r:?}"
    );
    let Response::Fetch(Ok(f)) = c.request(
        l,
        Request::Fetch {
            tp: tp(),
            offset: 3,
            max_bytes: 1 << 20,
        },
    ) else {
        panic!("fetch failed")
    };
    assert_eq!(f.high_watermark, 10, "the corrupt batch took no offset");
    let values: Vec<(i64, Vec<u8>)> = f
        .batches
        .iter()
        .flat_map(|b| decode_records(b).unwrap())
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    assert_eq!(values.len(), 7);
    assert_eq!(values[0], (3, b"v3".to_vec()));
    // Beyond the log end is out of range.
    let r = c.request(
        l,
        Request::Fetch {
            tp: tp(),
            offset: 11,
            max_bytes: 1 << 20,
        },
    );
    assert!(matches!(
        r,
        Response::Fetch(Err(ClientError::OffsetOutOfRange { .. }))
    ));
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, 0);
    assert_eq!(c.list_offsets(l, OffsetSpec::Latest).0, 10);
    assert_eq!(c.list_offsets(l, OffsetSpec::Timestamp(1_004)), (4, 1_004));
    assert_eq!(c.list_offsets(l, OffsetSpec::Timestamp(99_999)).0, -1);
    let term = c.node(l).replica(&tp()).unwrap().status().term;
    let Response::OffsetForLeaderEpoch(Ok((epoch, end))) = c.request(
        l,
        Request::OffsetForLeaderEpoch {
            tp: tp(),
            epoch: term,
        },
    ) else {
        panic!("offset for leader epoch failed")
    };
    assert_eq!((epoch, end), (term as i64, 10));
    // Unknown partition: typed error.
    let r = c.request(
        l,
        Request::ListOffsets {
            tp: TopicPartition::new("nope", 0),
            spec: OffsetSpec::Earliest,
        },
    );
    assert!(matches!(
        r,
        Response::ListOffsets(Err(ClientError::UnknownPartition(_)))
    ));
}

/// Retention deletes segments the lagging follower still needs; the leader sends it a
/// metadata-only snapshot, the follower restarts its log after it and catches up.
#[test]
fn test_lagging_follower_installs_snapshot_after_retention() {
    let log = LogConfig {
        segment_bytes: 2048,
        retention_bytes: Some(4096),
        ..LogConfig::default()
    };
    let mut c = Cluster::new(log);
    let l = elect(&mut c);
    let lag = (1..=3).find(|n| *n != l).unwrap();
    for other in 1..=3 {
        c.cut.insert((other, lag));
        c.cut.insert((lag, other));
    }
    let payload = "x".repeat(200);
    let mut last = 0;
    for i in 0..200 {
        last = c.produce(l, &format!("{i}:{payload}"), i).unwrap();
    }
    c.tick(5); // retention runs
    let leader_start = c.node(l).replica(&tp()).unwrap().status().log_start_offset;
    assert!(leader_start > 0, "retention deleted nothing");
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, leader_start);
    let leader_first = c
        .node(l)
        .replica(&tp())
        .unwrap()
        .storage()
        .log()
        .first_index();
    let lag_last = c
        .node(lag)
        .replica(&tp())
        .unwrap()
        .storage()
        .log()
        .last_index();
    assert!(
        lag_last < leader_first,
        "the follower is not behind the leader's first index"
    );
    c.cut.clear();
    c.tick(30);
    let lr = c.node(lag).replica(&tp()).unwrap().status();
    let ll = c.node(l).replica(&tp()).unwrap().status();
    assert_eq!(lr.last_index, ll.last_index, "follower did not catch up");
    assert_eq!(lr.log_end_offset, last + 1);
    assert!(
        lr.log_start_offset > 0,
        "follower did not install the snapshot"
    );
    // And it keeps working: one more write reaches the former laggard.
    c.produce(l, "after", 0).unwrap();
    c.tick(3);
    let lr = c.node(lag).replica(&tp()).unwrap().status();
    assert_eq!(lr.log_end_offset, last + 2);
    // Reading below the log start is out of range.
    let r = c.request(
        l,
        Request::Fetch {
            tp: tp(),
            offset: 0,
            max_bytes: 1 << 20,
        },
    );
    assert!(matches!(
        r,
        Response::Fetch(Err(ClientError::OffsetOutOfRange { .. }))
    ));
}

fn create(c: &mut Cluster, node: NodeId, name: &str, partitions: i64, rf: i64) -> Response {
    c.request(
        node,
        Request::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: Default::default(),
            validate_only: false,
        },
    )
}

/// Topics are created and deleted through the metadata log: every node creates (and removes)
/// its replicas when the record commits, a restarted node rebuilds them from its log, and bad
/// admin requests get typed errors.
#[test]
fn test_create_and_delete_topics_through_the_metadata_log() {
    let mut c = Cluster::with(LogConfig::default(), true);
    let mut controller = None;
    for _ in 0..100 {
        c.tick(1);
        controller = c.nodes.iter().find_map(|n| n.controller());
        if controller.is_some() {
            break;
        }
    }
    let ctl = controller.expect("a controller is elected");
    let other = (1..=3).find(|n| *n != ctl).unwrap();
    assert_eq!(
        create(&mut c, other, "orders", 2, 3),
        Response::CreateTopic(Err(ClientError::NotController {
            controller: Some(ctl)
        }))
    );
    assert_eq!(
        create(&mut c, ctl, "orders", 2, 3),
        Response::CreateTopic(Ok(()))
    );
    assert_eq!(
        create(&mut c, ctl, "orders", 2, 3),
        Response::CreateTopic(Err(ClientError::TopicAlreadyExists("orders".into())))
    );
    assert!(matches!(
        create(&mut c, ctl, "wide", 1, 4),
        Response::CreateTopic(Err(ClientError::InvalidReplicationFactor { asked: 4, .. }))
    ));
    assert!(matches!(
        create(&mut c, ctl, "bad/name", 1, 1),
        Response::CreateTopic(Err(ClientError::InvalidTopic(_)))
    ));
    c.tick(3);
    let o0 = TopicPartition::new("orders", 0);
    for id in 1..=3 {
        assert!(
            c.node(id).replica(&o0).is_some(),
            "node {id} lacks orders-0"
        );
        assert!(c.node(id).metadata().topics.contains_key("orders"));
    }
    // The new partitions elect leaders and take writes.
    let mut leader = None;
    for _ in 0..100 {
        c.tick(1);
        leader = c
            .nodes
            .iter()
            .find(|n| n.replica(&o0).unwrap().is_leader())
            .map(|n| n.id());
        if leader.is_some() {
            break;
        }
    }
    let l = leader.expect("orders-0 elects a leader");
    let batch = BatchBuilder::new(0)
        .record(None, Some(b"hello"), &[], 0)
        .build();
    let r = c.request(
        l,
        Request::Produce {
            tp: o0.clone(),
            acks: Acks::All,
            batch,
        },
    );
    assert_eq!(r, Response::Produce(Ok(0)));
    // Clients cannot read the metadata log itself.
    let r = c.request(
        ctl,
        Request::Fetch {
            tp: railyard_core::metadata::metadata_tp(),
            offset: 0,
            max_bytes: 1024,
        },
    );
    assert!(matches!(
        r,
        Response::Fetch(Err(ClientError::UnknownPartition(_)))
    ));
    // A restarted node rebuilds its replicas from the metadata log it replays.
    let restarted = other;
    c.restart(restarted);
    assert!(c.node(restarted).replica(&o0).is_some());
    assert!(c.node(restarted).metadata().topics.contains_key("orders"));
    c.tick(20);
    // Deleting removes the replicas and their files everywhere.
    let ctl = c.nodes.iter().find_map(|n| n.controller()).unwrap();
    assert_eq!(
        c.request(
            ctl,
            Request::DeleteTopic {
                name: "orders".into()
            }
        ),
        Response::DeleteTopic(Ok(()))
    );
    c.tick(3);
    for id in 1..=3 {
        assert!(
            c.node(id).replica(&o0).is_none(),
            "node {id} still hosts orders-0"
        );
        let files = c.disks[id as usize - 1].paths();
        assert!(
            !files.iter().any(|p| p.starts_with("orders-")),
            "node {id} kept files: {files:?}"
        );
    }
    assert_eq!(
        c.request(
            ctl,
            Request::DeleteTopic {
                name: "orders".into()
            }
        ),
        Response::DeleteTopic(Err(ClientError::UnknownTopic("orders".into())))
    );
}
