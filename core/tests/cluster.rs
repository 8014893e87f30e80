//! Three core nodes wired together in memory, driven step by step: no simulator, no faults
//! except a cut link. Proves the paths the swarm rarely reaches on purpose: retention deleting
//! segments under a lagging follower, which must then install the leader's metadata-only
//! snapshot and resume from it; and the produce/fetch/list-offsets/leader-epoch API end to end.

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;
use railyard_core::api::{Acks, ClientError, OffsetSpec, Produced, Request, Response};
use railyard_core::batch::{decode_records, BatchBuilder};
use railyard_core::controller::METADATA_TOPIC;
use railyard_core::disk::{Disk, MemDisk};
use railyard_core::groups::{
    coordinator_partition, FetchedOffset, GroupConfig, GroupError, GroupRequest, GroupResponse,
};
use railyard_core::log::LogConfig;
use railyard_core::metadata::metadata_tp;
use railyard_core::network::{Envelope, Outbox};
use railyard_core::node::{BrokerEndpoint, Node, NodeConfig, PartitionSpec, PUMP_STEPS_MAX};
use railyard_core::replica::ReplicaConfig;
use railyard_core::types::{NodeId, TopicPartition};

struct Cluster {
    nodes: Vec<Node>,
    disks: Vec<Rc<MemDisk>>,
    log: LogConfig,
    metadata: bool,
    /// Nodes 1..=size; the first three vote in the metadata group, the rest are learners.
    size: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    in_flight: Vec<Envelope>,
    /// Nodes whose tick stopped them (only those in `may_stop` may), with the error; they are
    /// neither ticked, pumped nor sent anything afterwards, as a stopped process.
    stopped: std::collections::BTreeMap<NodeId, String>,
    may_stop: BTreeSet<NodeId>,
    now_ms: i64,
    next_request: u64,
    restarts: u64,
    /// `ReplicaConfig::snapshot_entries` of every node.
    snapshot_entries: u64,
    /// `__consumer_offsets` partitions the controller creates (0: none).
    offsets_partitions: u32,
}

fn endpoint(id: NodeId) -> BrokerEndpoint {
    BrokerEndpoint {
        host: format!("broker-{id}"),
        port: 9090 + id as u16,
        rack: Some(format!("rack-{}", id % 2)),
        raft: None,
    }
}

fn tp() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// A node of the fixed layout (one partition `t-0`), or, with `metadata`, a node whose
/// partitions come from the metadata log only, in a cluster of `size` brokers whose first three
/// are the controller quorum. `incarnation` changes at every restart, like a real start.
fn config(id: NodeId, log: LogConfig, metadata: bool, size: u64, incarnation: u64) -> NodeConfig {
    NodeConfig {
        id,
        seed: id + 1000 * incarnation,
        replica: ReplicaConfig {
            isr_lag_ms: 2_000,
            ..ReplicaConfig::default()
        },
        log,
        partitions: if metadata {
            vec![]
        } else {
            vec![PartitionSpec {
                tp: tp(),
                voters: vec![1, 2, 3],
                learners: vec![],
            }]
        },
        retention_check_ms: 50,
        metadata_voters: if metadata { vec![1, 2, 3] } else { vec![] },
        brokers: (1..=size).collect(),
        endpoint: Some(endpoint(id)),
        heartbeat_ms: 300,
        session_timeout_ms: 2_000,
        preferred_leader_check_ms: None,
        min_free_bytes: 0,
        offsets_partitions: 0,
        producer_expiration_ms: railyard_core::producers::PRODUCER_EXPIRATION_MS_DEFAULT,
        topic_defaults: Default::default(),
        group: GroupConfig {
            group_initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        },
        join: false,
    }
}

impl Cluster {
    fn new(log: LogConfig) -> Cluster {
        Cluster::with(log, false)
    }

    fn with(log: LogConfig, metadata: bool) -> Cluster {
        Cluster::sized(log, metadata, 3)
    }

    fn sized(log: LogConfig, metadata: bool, size: u64) -> Cluster {
        Cluster::snapshotting(
            log,
            metadata,
            size,
            ReplicaConfig::default().snapshot_entries,
        )
    }

    fn snapshotting(log: LogConfig, metadata: bool, size: u64, snapshot_entries: u64) -> Cluster {
        Cluster::build(log, metadata, size, snapshot_entries, 0)
    }

    /// A metadata-driven cluster of 3 with `__consumer_offsets` of `offsets_partitions`.
    fn with_groups(offsets_partitions: u32) -> Cluster {
        let entries = ReplicaConfig::default().snapshot_entries;
        Cluster::build(LogConfig::default(), true, 3, entries, offsets_partitions)
    }

    fn build(
        log: LogConfig,
        metadata: bool,
        size: u64,
        snapshot_entries: u64,
        offsets_partitions: u32,
    ) -> Cluster {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let disks: Vec<Rc<MemDisk>> = (0..size).map(|_| Rc::new(MemDisk::new())).collect();
        let nodes = (1..=size)
            .map(|id| {
                let disk: Rc<dyn Disk> = disks[id as usize - 1].clone();
                let mut cfg = config(id, log.clone(), metadata, size, 0);
                cfg.replica.snapshot_entries = snapshot_entries;
                cfg.offsets_partitions = offsets_partitions;
                Node::open(cfg, disk, &logger).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            disks,
            log,
            metadata,
            size,
            restarts: 0,
            snapshot_entries,
            offsets_partitions,
            cut: BTreeSet::new(),
            in_flight: Vec::new(),
            stopped: Default::default(),
            may_stop: BTreeSet::new(),
            now_ms: 0,
            next_request: 1,
        }
    }

    /// Drops node `id` and opens it again from its disk (a clean restart).
    fn restart(&mut self, id: NodeId) {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let disk: Rc<dyn Disk> = self.disks[id as usize - 1].clone();
        self.restarts += 1;
        let mut config = config(
            id,
            self.log.clone(),
            self.metadata,
            self.size,
            self.restarts,
        );
        config.replica.snapshot_entries = self.snapshot_entries;
        config.offsets_partitions = self.offsets_partitions;
        let node = Node::open(config, disk, &logger).unwrap();
        self.nodes[id as usize - 1] = node;
    }

    /// Drops node `id` and opens it again from its disk with `config`.
    fn restart_as(&mut self, id: NodeId, config: NodeConfig) {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let disk: Rc<dyn Disk> = self.disks[id as usize - 1].clone();
        self.nodes[id as usize - 1] = Node::open(config, disk, &logger).unwrap();
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Steps every node and delivers everything sent, until quiet.
    fn settle(&mut self) {
        for _ in 0..50 {
            for n in self.nodes.iter_mut() {
                if self.stopped.contains_key(&n.id()) {
                    continue;
                }
                let mut out = Outbox::default();
                while n.pump(&mut out, PUMP_STEPS_MAX).unwrap().more {}
                self.in_flight.extend(out.sent);
            }
            if self.in_flight.is_empty() {
                return;
            }
            for env in std::mem::take(&mut self.in_flight) {
                let alive =
                    env.to as usize <= self.nodes.len() && !self.stopped.contains_key(&env.to);
                if alive && !self.cut.contains(&(env.from, env.to)) {
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
                if self.stopped.contains_key(&n.id()) {
                    continue;
                }
                // Wall clock = monotonic clock here; the simulator skews and steps them.
                if let Err(e) = n.tick(now, now) {
                    assert!(self.may_stop.contains(&n.id()), "node {}: {e}", n.id());
                    self.stopped.insert(n.id(), e.to_string());
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.replica(&tp()).is_some_and(|r| r.is_leader()))
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
            Response::Produce(r) => r.map(|p| p.base_offset),
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

/// Ticks until some node leads the metadata partition; returns it.
fn wait_for_controller(c: &mut Cluster) -> NodeId {
    tick_until(c, 100, "a controller", |c| {
        c.nodes.iter().any(|n| n.controller() == Some(n.id()))
    });
    let n = c.nodes.iter().find(|n| n.controller() == Some(n.id()));
    n.expect("waited for it").id()
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
    assert_eq!(c.list_offsets(l, OffsetSpec::MaxTimestamp), (9, 1_009));
    assert_eq!(c.list_offsets(l, OffsetSpec::EarliestLocal).0, 0);
    assert_eq!(c.list_offsets(l, OffsetSpec::LatestTiered), (-1, -1));
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
            assignments: Vec::new(),
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
    assert_eq!(r, Response::Produce(Ok(Produced::at(0))));
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

/// Ticks until `cond` holds, at most `max` ticks.
fn tick_until(c: &mut Cluster, max: usize, what: &str, cond: impl Fn(&Cluster) -> bool) {
    for _ in 0..max {
        if cond(c) {
            return;
        }
        c.tick(1);
    }
    assert!(cond(c), "after {max} ticks: {what}");
}

/// Cuts node `id` off from every other node (both directions), or heals it.
fn isolate(c: &mut Cluster, id: NodeId, cut: bool) {
    for other in 1..=c.size {
        if other != id {
            for link in [(id, other), (other, id)] {
                if cut {
                    c.cut.insert(link);
                } else {
                    c.cut.remove(&link);
                }
            }
        }
    }
}

/// The leader of `tp` and its term, as the replicas themselves see it.
fn actual_leader(c: &Cluster, tp: &TopicPartition) -> Option<(NodeId, u64)> {
    c.nodes
        .iter()
        .filter_map(|n| {
            n.replica(tp)
                .filter(|r| r.is_leader())
                .map(|r| (n.id(), r.term()))
        })
        .max_by_key(|(_, term)| *term)
}

/// Whether every node not cut off records the actual leader (and epoch) of every partition of
/// `topic` in its metadata image, including nodes that host no replica of it.
fn leaders_published(c: &Cluster, topic: &str, skip: &[NodeId]) -> bool {
    let Some(t) = c.nodes[0].metadata().topics.get(topic).cloned() else {
        return false;
    };
    t.partitions.keys().all(|p| {
        let tp = TopicPartition::new(topic, *p);
        let Some((leader, term)) = actual_leader(c, &tp) else {
            return false;
        };
        c.nodes.iter().filter(|n| !skip.contains(&n.id())).all(|n| {
            n.metadata()
                .leaders
                .get(&tp)
                .is_some_and(|l| l.leader == Some(leader) && l.epoch == term)
        })
    })
}

/// Five brokers, three of them the controller quorum: the other two follow the metadata log
/// as raft learners; every broker registers its listener and rack through heartbeats; every
/// node learns every partition's leader (also of partitions it does not host); a silent broker
/// is fenced (and its leaderships cleared) and unfenced when it comes back; a learner asks the
/// controller to auto-create a topic; a restarted learner rebuilds all of it from its log.
#[test]
fn test_learners_registration_fencing_leaders_and_auto_create() {
    let mut c = Cluster::sized(LogConfig::default(), true, 5);
    tick_until(&mut c, 100, "every node knows the controller", |c| {
        let ctl = c.nodes[0].controller();
        ctl.is_some() && c.nodes.iter().all(|n| n.controller() == ctl)
    });
    let ctl = c.nodes[0].controller().unwrap();
    assert!([1, 2, 3].contains(&ctl), "a learner never leads: {ctl}");
    let meta = railyard_core::metadata::metadata_tp();
    for id in [4, 5] {
        let r = c
            .node(id)
            .replica(&meta)
            .expect("learners host the metadata log");
        assert_eq!(r.voters(), vec![1, 2, 3]);
    }
    tick_until(&mut c, 50, "every broker registered everywhere", |c| {
        c.nodes.iter().all(|n| {
            (1..=5).all(|b| {
                n.metadata().brokers.get(&b).is_some_and(|m| {
                    let e = endpoint(b);
                    m.host == e.host && m.port == e.port && m.rack == e.rack && !m.fenced
                })
            })
        })
    });

    // Learners apply topics and host the replicas placed on them.
    assert_eq!(
        create(&mut c, ctl, "wide", 5, 3),
        Response::CreateTopic(Ok(()))
    );
    c.tick(2);
    let t = c.nodes[0].metadata().topics["wide"].clone();
    for n in &c.nodes {
        assert_eq!(n.metadata().topics.get("wide"), Some(&t), "node {}", n.id());
        for (p, replicas) in &t.partitions {
            let tp = TopicPartition::new("wide", *p);
            assert_eq!(
                n.replica(&tp).is_some(),
                replicas.contains(&n.id()),
                "node {} hosting {tp}",
                n.id()
            );
        }
    }
    assert!(
        t.partitions
            .values()
            .any(|r| r.contains(&4) || r.contains(&5)),
        "placement uses learners too: {t:?}"
    );
    tick_until(&mut c, 100, "leaders published to every node", |c| {
        leaders_published(c, "wide", &[])
    });
    tick_until(&mut c, 50, "full ISRs published", |c| {
        c.nodes[0]
            .metadata()
            .leaders
            .values()
            .all(|l| l.isr.len() == 3)
    });

    // A silent broker is fenced and its leaderships cleared; others take over and report.
    let victim = (1..=5).find(|b| *b != ctl).unwrap();
    let led: Vec<TopicPartition> = t
        .partitions
        .keys()
        .map(|p| TopicPartition::new("wide", *p))
        .filter(|tp| actual_leader(&c, tp).is_some_and(|(l, _)| l == victim))
        .collect();
    isolate(&mut c, victim, true);
    let others: Vec<NodeId> = (1..=5).filter(|b| *b != victim).collect();
    tick_until(&mut c, 60, "the silent broker is fenced", |c| {
        others
            .iter()
            .all(|o| c.nodes[*o as usize - 1].metadata().brokers[&victim].fenced)
    });
    for tp in &led {
        let l = &c.node(ctl).metadata().leaders[tp];
        assert!(
            l.leader != Some(victim),
            "{tp} still led by fenced {victim}: {l:?}"
        );
    }
    tick_until(&mut c, 150, "new leaders published; ISRs shrunk", |c| {
        leaders_published(c, "wide", &[victim])
            && c.nodes[ctl as usize - 1]
                .metadata()
                .leaders
                .values()
                .all(|l| l.leader != Some(victim) && !l.isr.contains(&victim))
    });
    // Placement avoids fenced brokers.
    assert_eq!(
        create(&mut c, ctl, "after", 4, 3),
        Response::CreateTopic(Ok(()))
    );
    c.tick(2);
    let placed = &c.node(ctl).metadata().topics["after"];
    assert!(
        placed.partitions.values().all(|r| !r.contains(&victim)),
        "{placed:?}"
    );
    isolate(&mut c, victim, false);
    tick_until(
        &mut c,
        60,
        "the broker is unfenced once it reports again",
        |c| {
            c.nodes
                .iter()
                .all(|n| !n.metadata().brokers[&victim].fenced)
        },
    );

    // A learner asks the controller to auto-create a topic; bad names are refused.
    let learner = 4;
    let auto = |name: &str| Request::AutoCreateTopic {
        name: name.into(),
        partitions: 2,
        replication_factor: 3,
    };
    assert_eq!(
        c.request(learner, auto("clicks")),
        Response::CreateTopic(Ok(()))
    );
    assert!(matches!(
        c.request(learner, auto("__cluster_metadata")),
        Response::CreateTopic(Err(ClientError::InvalidTopic(_)))
    ));
    assert!(matches!(
        c.request(learner, auto("no/slash")),
        Response::CreateTopic(Err(ClientError::InvalidTopic(_)))
    ));
    tick_until(&mut c, 20, "auto-created topic everywhere", |c| {
        c.nodes.iter().all(|n| {
            n.metadata()
                .topics
                .get("clicks")
                .is_some_and(|t| t.partitions.len() == 2)
        })
    });
    tick_until(&mut c, 100, "auto-created topic's leaders published", |c| {
        leaders_published(c, "clicks", &[])
    });

    // A restarted learner rebuilds brokers, topics and leaders from its log.
    let before = c.node(learner).metadata().clone();
    c.restart(learner);
    let after = c.node(learner).metadata();
    assert_eq!(after.topics, before.topics);
    assert_eq!(
        after.brokers.keys().collect::<Vec<_>>(),
        vec![&1, &2, &3, &4, &5]
    );
    assert_eq!(after.leaders, before.leaders);
    // Its new incarnation re-registers.
    let old = before.brokers[&learner].incarnation;
    tick_until(&mut c, 30, "the restarted broker re-registers", |c| {
        c.nodes
            .iter()
            .all(|n| n.metadata().brokers[&learner].incarnation != old)
    });
}

/// Retention never applies to the metadata log: a node replays the whole log to rebuild its
/// image, and a topic forgotten that way would have its partitions deleted as leftovers. With a
/// retention that would delete every sealed segment of any other partition, topics created long
/// ago survive a restart, data included.
#[test]
fn test_metadata_log_is_exempt_from_retention() {
    let log = LogConfig {
        segment_bytes: 1024,
        retention_bytes: Some(1),
        retention_ms: Some(1),
        ..LogConfig::default()
    };
    let mut c = Cluster::sized(log, true, 3);
    let ctl = wait_for_controller(&mut c);
    // Enough metadata records (topics, registrations) to seal several metadata segments.
    for i in 0..20 {
        assert_eq!(
            create(&mut c, ctl, &format!("t{i}"), 1, 3),
            Response::CreateTopic(Ok(()))
        );
    }
    c.tick(100);
    let meta = railyard_core::metadata::metadata_tp();
    let first = c
        .node(1)
        .replica(&meta)
        .unwrap()
        .storage()
        .log()
        .first_index();
    assert_eq!(first, 1, "metadata segments were deleted");
    c.restart(1);
    let n = c.node(1);
    assert_eq!(n.metadata().topics.len(), 20);
    for i in 0..20 {
        assert!(n
            .replica(&TopicPartition::new(format!("t{i}"), 0))
            .is_some());
    }
}

/// A follower cut off while the metadata log is snapshotted and compacted past it receives the
/// controller's snapshot through raft, with its data: its image equals the leader's, and it
/// creates the replicas the snapshot assigns to it and deletes those of topics deleted meanwhile.
#[test]
fn test_lagging_follower_installs_the_controller_snapshot_with_its_data() {
    let log = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let mut c = Cluster::snapshotting(log, true, 3, 20);
    let ctl = wait_for_controller(&mut c);
    let lagger = (1..=3).find(|n| *n != ctl).unwrap();
    assert_eq!(
        create(&mut c, ctl, "old", 1, 3),
        Response::CreateTopic(Ok(()))
    );
    c.tick(2);
    assert!(c
        .node(lagger)
        .replica(&TopicPartition::new("old", 0))
        .is_some());
    isolate(&mut c, lagger, true);
    let meta = railyard_core::metadata::metadata_tp();
    let first_before = c
        .node(ctl)
        .replica(&meta)
        .unwrap()
        .storage()
        .log()
        .first_index();
    for i in 0..40 {
        assert_eq!(
            create(&mut c, ctl, &format!("n{i}"), 1, 3),
            Response::CreateTopic(Ok(()))
        );
    }
    assert_eq!(
        c.request(ctl, Request::DeleteTopic { name: "old".into() }),
        Response::DeleteTopic(Ok(()))
    );
    tick_until(&mut c, 50, "the controller compacted its log", |c| {
        let r = c.nodes[ctl as usize - 1].replica(&meta).unwrap();
        r.snapshot_index() > 0 && r.storage().log().first_index() > first_before + 20
    });
    isolate(&mut c, lagger, false);
    tick_until(
        &mut c,
        100,
        "the lagging follower installed the snapshot",
        |c| {
            let l = &c.nodes[lagger as usize - 1];
            l.metadata().topics == c.nodes[ctl as usize - 1].metadata().topics
        },
    );
    let l = c.node(lagger);
    let r = l.replica(&meta).unwrap();
    assert!(
        r.snapshot_index() > 0,
        "installed through a snapshot, not the log"
    );
    assert!(
        l.replica(&TopicPartition::new("old", 0)).is_none(),
        "deleted topic's replica"
    );
    for i in 0..40 {
        assert!(
            l.replica(&TopicPartition::new(format!("n{i}"), 0))
                .is_some(),
            "replica n{i}-0 created from the snapshot"
        );
    }
    // It restarts from the installed snapshot too.
    let image = l.metadata().clone();
    c.restart(lagger);
    assert_eq!(c.node(lagger).metadata().topics, image.topics);

    // More records: it snapshots and compacts its own log. Then every snapshot file it has is
    // corrupted on disk: none is applied, and it re-fetches the state from the leader.
    for i in 40..80 {
        assert_eq!(
            create(&mut c, ctl, &format!("n{i}"), 1, 3),
            Response::CreateTopic(Ok(()))
        );
    }
    tick_until(&mut c, 50, "the follower compacted its own log", |c| {
        let r = c.nodes[lagger as usize - 1].replica(&meta).unwrap();
        r.storage().log().first_index() > 1 && r.snapshot_index() > 0
    });
    let disk = c.disks[lagger as usize - 1].clone();
    let snaps: Vec<String> = disk
        .list(&meta.dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".snap"))
        .collect();
    assert!(!snaps.is_empty());
    for name in &snaps {
        let path = railyard_core::disk::join_path(&meta.dir(), name);
        disk.with_file(&path, |b| b[3] ^= 0x01).unwrap();
    }
    c.restart(lagger);
    let r = c.node(lagger).replica(&meta).unwrap();
    assert!(r.is_repairing(), "re-fetching, it votes for nobody");
    assert_eq!(
        c.node(lagger).open_reports()[&meta].corrupt_snapshots,
        snaps.len()
    );
    tick_until(&mut c, 100, "the state re-fetched from the leader", |c| {
        let l = &c.nodes[lagger as usize - 1];
        l.metadata().topics == c.nodes[ctl as usize - 1].metadata().topics
            && !l.replica(&meta).unwrap().is_repairing()
    });
    assert!(c
        .node(lagger)
        .replica(&TopicPartition::new("n79", 0))
        .is_some());
}

/// Raft configuration changes are applied and persisted: a new replica joins a partition as a
/// learner, is promoted through joint consensus while a voter is removed, the joint
/// configuration is left, and every replica (and a restarted one) agrees on the result while
/// produces keep committing.
#[test]
fn test_conf_changes_add_learner_promote_and_remove_voter() {
    use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
    let change = |steps: &[(ConfChangeType, u64)], transition| {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(transition);
        cc.set_changes(
            steps
                .iter()
                .map(|(t, id)| {
                    let mut s = ConfChangeSingle::default();
                    s.set_change_type(*t);
                    s.node_id = *id;
                    s
                })
                .collect::<Vec<_>>()
                .into(),
        );
        cc
    };
    let mut c = Cluster::new(LogConfig::default());
    // A fourth node, hosting nothing of the fixed layout yet.
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let disk = Rc::new(MemDisk::new());
    let mut cfg = config(4, c.log.clone(), false, 4, 0);
    cfg.partitions.clear();
    let d: Rc<dyn Disk> = disk.clone();
    c.nodes.push(Node::open(cfg, d, &logger).unwrap());
    c.disks.push(disk);
    c.size = 4;
    let l = elect(&mut c);
    for i in 0..5 {
        c.produce(l, &format!("before{i}"), i).unwrap();
    }
    c.node(4).host_partition(tp(), &[1, 2, 3], &[4]).unwrap();
    let auto = ConfChangeTransition::Auto;
    c.node(l)
        .propose_conf_change(&tp(), change(&[(ConfChangeType::AddLearnerNode, 4)], auto))
        .unwrap();
    tick_until(&mut c, 50, "the learner caught up", |c| {
        c.nodes[3].replica(&tp()).unwrap().status().commit
            == c.nodes[l as usize - 1]
                .replica(&tp())
                .unwrap()
                .status()
                .commit
    });
    let removed = (1..=3).find(|n| *n != l).unwrap();
    let joint = change(
        &[
            (ConfChangeType::AddNode, 4),
            (ConfChangeType::RemoveNode, removed),
        ],
        ConfChangeTransition::Explicit,
    );
    c.node(l).propose_conf_change(&tp(), joint).unwrap();
    tick_until(
        &mut c,
        50,
        "every replica in the joint configuration",
        |c| {
            c.nodes.iter().all(|n| {
                let cs = n.replica(&tp()).unwrap().conf_state();
                !cs.voters_outgoing.is_empty() && cs.voters.contains(&4)
            })
        },
    );
    c.node(l)
        .propose_conf_change(&tp(), ConfChangeV2::default())
        .unwrap();
    let mut want: Vec<NodeId> = [1, 2, 3, 4].into_iter().filter(|n| *n != removed).collect();
    want.sort_unstable();
    tick_until(
        &mut c,
        50,
        "every replica left the joint configuration",
        |c| {
            c.nodes.iter().filter(|n| n.id() != removed).all(|n| {
                let cs = n.replica(&tp()).unwrap().conf_state();
                let mut v = cs.voters.clone();
                v.sort_unstable();
                cs.voters_outgoing.is_empty() && v == want
            })
        },
    );
    // The new voter set commits without the removed one, and it is what a restart reads.
    c.cut
        .extend((1..=4).flat_map(|o| [(removed, o), (o, removed)]));
    let l = c.leader().unwrap_or_else(|| elect(&mut c));
    assert_ne!(l, removed);
    assert_eq!(c.produce(l, "after", 10).unwrap(), 5);
    // Restart node 4: it hosts t-0 outside the fixed layout, so it opens it again itself;
    // the configuration comes from its storage, not from the arguments.
    let d: Rc<dyn Disk> = c.disks[3].clone();
    let mut cfg = config(4, c.log.clone(), false, 4, 1);
    cfg.partitions.clear();
    c.nodes[3] = Node::open(cfg, d, &logger).unwrap();
    c.node(4).host_partition(tp(), &[1, 2, 3], &[4]).unwrap();
    let cs = c.node(4).replica(&tp()).unwrap().conf_state();
    let mut v = cs.voters.clone();
    v.sort_unstable();
    assert_eq!(v, want, "the configuration was persisted");
    assert_eq!(c.node(4).replica(&tp()).unwrap().voters(), want);
}

/// InitProducerId through the controller's blocks, then an idempotent producer's batches: a
/// retry is answered with its original offset (on the old leader, on a new one after a
/// failover, and after every node restarted), a gap and a fenced epoch are refused, and the log
/// holds each batch once.
#[test]
fn test_idempotent_producer_across_failover_and_restart() {
    let mut c = Cluster::with(LogConfig::default(), true);
    let ctl = wait_for_controller(&mut c);
    assert_eq!(
        create(&mut c, ctl, "t", 1, 3),
        Response::CreateTopic(Ok(()))
    );
    tick_until(&mut c, 100, "a leader of t-0", |c| c.leader().is_some());
    let init = |c: &mut Cluster, node, current| match c
        .request(node, Request::InitProducerId { current })
    {
        Response::InitProducerId(r) => r,
        other => panic!("{other:?}"),
    };
    let (pid, epoch) = init(&mut c, 2, None).expect("a producer id");
    assert_eq!(epoch, 0);
    let (other, _) = init(&mut c, 3, None).expect("another producer id");
    assert_ne!(pid, other, "two brokers never hand out the same id");
    let send = |c: &mut Cluster, epoch: i16, seq: i32| {
        let batch = BatchBuilder::new(1_000)
            .producer(pid, epoch, seq)
            .record(None, Some(format!("v{seq}").as_bytes()), &[], 1_000)
            .build();
        let leader = c.leader().expect("a leader");
        let tp = tp();
        match c.request(
            leader,
            Request::Produce {
                tp,
                acks: Acks::All,
                batch,
            },
        ) {
            Response::Produce(r) => r.map(|p| p.base_offset),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(send(&mut c, 0, 0), Ok(0));
    assert_eq!(
        send(&mut c, 0, 0),
        Ok(0),
        "a retry gets the original offset"
    );
    assert_eq!(
        send(&mut c, 0, 2),
        Err(ClientError::OutOfOrderSequence {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(send(&mut c, 0, 1), Ok(1));
    let old = c.leader().unwrap();
    isolate(&mut c, old, true);
    tick_until(&mut c, 200, "a new leader", |c| {
        c.leader().is_some_and(|l| l != old)
    });
    assert_eq!(send(&mut c, 0, 1), Ok(1), "the new leader knows the batch");
    isolate(&mut c, old, false);
    for id in 1..=3 {
        c.restart(id);
    }
    tick_until(&mut c, 200, "a leader after the restart", |c| {
        c.leader().is_some()
    });
    assert_eq!(send(&mut c, 0, 1), Ok(1), "rebuilt from the log at open");
    // KIP-360: a re-init bumps the epoch, and the old epoch is fenced once the new one wrote.
    let (same, bumped) = init(&mut c, 1, Some((pid, 0))).unwrap();
    assert_eq!((same, bumped), (pid, 1));
    assert_eq!(send(&mut c, 1, 0), Ok(2));
    assert_eq!(
        send(&mut c, 0, 2),
        Err(ClientError::InvalidProducerEpoch {
            epoch: 0,
            current: 1
        })
    );
    assert_eq!(
        init(&mut c, 1, Some((1 << 40, 0))),
        Err(ClientError::InvalidProducerIdMapping(1 << 40))
    );
    let leader = c.leader().unwrap();
    assert_eq!(
        c.list_offsets(leader, OffsetSpec::Latest).0,
        3,
        "each batch written once"
    );
}

/// Sends a group request to `node`, retrying while the coordinator loads.
fn group(c: &mut Cluster, node: NodeId, request: GroupRequest) -> GroupResponse {
    for _ in 0..50 {
        match c.request(node, Request::Group(request.clone())) {
            Response::Group(GroupResponse::OffsetFetch(Err(
                GroupError::CoordinatorLoadInProgress,
            )))
            | Response::Group(GroupResponse::Heartbeat(Err(
                GroupError::CoordinatorLoadInProgress,
            ))) => c.tick(1),
            Response::Group(GroupResponse::Join(j))
                if j.error == Some(GroupError::CoordinatorLoadInProgress) =>
            {
                c.tick(1)
            }
            Response::Group(r) => return r,
            other => panic!("{other:?}"),
        }
    }
    panic!("the coordinator never loaded")
}

/// The node leading the group's `__consumer_offsets` partition.
fn coordinator(c: &Cluster, group: &str, partitions: u32) -> Option<NodeId> {
    let tp = TopicPartition::new(
        "__consumer_offsets",
        coordinator_partition(group, partitions),
    );
    c.nodes
        .iter()
        .find(|n| n.replica(&tp).is_some_and(|r| r.is_leader()))
        .map(|n| n.id())
}

/// The controller creates `__consumer_offsets`; a member joins (MEMBER_ID_REQUIRED first),
/// syncs and commits; every other node answers NOT_COORDINATOR; the coordinator's node is cut
/// off, and the new coordinator serves the committed offset (measured: the failover time).
#[test]
fn test_group_offsets_survive_coordinator_failover() {
    const PARTITIONS: u32 = 3;
    let mut c = Cluster::with_groups(PARTITIONS);
    wait_for_controller(&mut c);
    tick_until(&mut c, 200, "a coordinator", |c| {
        coordinator(c, "g", PARTITIONS).is_some()
    });
    let coord = coordinator(&c, "g", PARTITIONS).unwrap();
    let other = (1..=3).find(|n| *n != coord).unwrap();
    let join = |member_id: &str| GroupRequest::Join {
        group: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/h".into(),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"t"))],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        require_known_member_id: true,
        reason: None,
    };
    let GroupResponse::Join(j) = group(&mut c, other, join("")) else {
        panic!()
    };
    assert_eq!(j.error, Some(GroupError::NotCoordinator));
    let GroupResponse::Join(j) = group(&mut c, coord, join("")) else {
        panic!()
    };
    assert_eq!(j.error, Some(GroupError::MemberIdRequired));
    let member = j.member_id;
    let GroupResponse::Join(j) = group(&mut c, coord, join(&member)) else {
        panic!()
    };
    assert_eq!((j.error, j.leader.as_str()), (None, member.as_str()));
    let sync = GroupRequest::Sync {
        group: "g".into(),
        generation: j.generation,
        member_id: member.clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: vec![(member.clone(), Bytes::from_static(b"t-0"))],
    };
    let GroupResponse::Sync(s) = group(&mut c, coord, sync) else {
        panic!()
    };
    assert_eq!((s.error, s.assignment), (None, Bytes::from_static(b"t-0")));
    let commit = GroupRequest::OffsetCommit {
        group: "g".into(),
        generation: j.generation,
        member_id: member,
        group_instance_id: None,
        offsets: vec![(tp(), 42, 1, Some("m".into()))],
    };
    let GroupResponse::OffsetCommit(r) = group(&mut c, coord, commit) else {
        panic!()
    };
    assert_eq!(r, vec![(tp(), None)]);
    let fetch = GroupRequest::OffsetFetch {
        group: "g".into(),
        partitions: Some(vec![tp()]),
        require_stable: false,
    };
    let cut_at = c.now_ms;
    isolate(&mut c, coord, true);
    tick_until(&mut c, 300, "a new coordinator", |c| {
        coordinator(c, "g", PARTITIONS).is_some_and(|n| n != coord)
    });
    let next = coordinator(&c, "g", PARTITIONS).unwrap();
    let GroupResponse::OffsetFetch(r) = group(&mut c, next, fetch) else {
        panic!()
    };
    let failover_ms = c.now_ms - cut_at;
    let want = FetchedOffset {
        tp: tp(),
        offset: 42,
        leader_epoch: 1,
        metadata: Some("m".into()),
        error: None,
    };
    assert_eq!(
        r,
        Ok(vec![want]),
        "the commit survived the coordinator's loss"
    );
    eprintln!("coordinator failover: {failover_ms} ms of simulated time (100 ms ticks)");
    assert!(failover_ms < 10_000, "failover took {failover_ms} ms");
}

/// acks=all on a topic with `min.insync.replicas=3` (more than a majority of 3): answered once
/// every replica has the entry, NOT_ENOUGH_REPLICAS (and nothing written) while a replica is
/// out of sync, and fine again once it is back.
#[test]
fn test_min_insync_replicas_above_a_majority_is_enforced() {
    let mut c = Cluster::with(LogConfig::default(), true);
    let ctrl = wait_for_controller(&mut c);
    let safe = TopicPartition::new("safe", 0);
    let created = c.request(
        ctrl,
        Request::CreateTopic {
            name: "safe".into(),
            partitions: 1,
            replication_factor: 3,
            configs: [("min.insync.replicas".to_string(), "3".to_string())].into(),
            assignments: Vec::new(),
            validate_only: false,
        },
    );
    assert_eq!(created, Response::CreateTopic(Ok(())));
    let in_sync = |c: &Cluster| {
        actual_leader(c, &safe).map_or(0, |(l, _)| {
            c.nodes[l as usize - 1].replica(&safe).unwrap().isr().len()
        })
    };
    tick_until(&mut c, 200, "safe-0 led with 3 in sync", |c| {
        in_sync(c) == 3
    });
    let produce = |c: &mut Cluster, v: &str| {
        let (leader, _) = actual_leader(c, &safe).expect("a leader");
        let batch = BatchBuilder::new(1)
            .record(None, Some(v.as_bytes()), &[], 1)
            .build();
        let tp = safe.clone();
        match c.request(
            leader,
            Request::Produce {
                tp,
                acks: Acks::All,
                batch,
            },
        ) {
            Response::Produce(r) => r.map(|p| p.base_offset),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(produce(&mut c, "a"), Ok(0));
    let (leader, _) = actual_leader(&c, &safe).unwrap();
    let follower = (1..=3)
        .find(|n| *n != leader && *n != ctrl)
        .unwrap_or((1..=3).find(|n| *n != leader).unwrap());
    isolate(&mut c, follower, true);
    tick_until(&mut c, 200, "the cut follower out of the ISR", |c| {
        actual_leader(c, &safe).is_some_and(|(l, _)| l != follower) && in_sync(c) == 2
    });
    assert_eq!(
        produce(&mut c, "b"),
        Err(ClientError::NotEnoughReplicas {
            isr: 2,
            required: 3
        })
    );
    isolate(&mut c, follower, false);
    tick_until(&mut c, 300, "the follower back in the ISR", |c| {
        in_sync(c) == 3
    });
    let next = produce(&mut c, "c").expect("acks=all with every replica in sync");
    assert_eq!(next, 1, "the refused batch took no offset");
    // Cut a follower before the ISR shrinks: the entry commits on the other two but is not
    // answered until the third has it too.
    let (leader, _) = actual_leader(&c, &safe).unwrap();
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    isolate(&mut c, follower, true);
    let batch = BatchBuilder::new(1)
        .record(None, Some(b"d"), &[], 1)
        .build();
    let now = c.now_ms;
    let tp = safe.clone();
    c.node(leader).handle_request(
        now,
        9_999,
        Request::Produce {
            tp,
            acks: Acks::All,
            batch,
        },
    );
    c.tick(5);
    let early = c.node(leader).poll_reply();
    assert!(early.is_none(), "answered with 2 of 3 replicas: {early:?}");
    let status = c.nodes[leader as usize - 1]
        .replica(&safe)
        .unwrap()
        .status();
    assert!(
        status.commit >= status.last_index,
        "the entry committed on two replicas while unanswered: {status:?}"
    );
    isolate(&mut c, follower, false);
    let mut reply = None;
    for _ in 0..100 {
        c.tick(1);
        if let Some(r) = c.node(leader).poll_reply() {
            reply = Some(r);
            break;
        }
    }
    assert_eq!(reply, Some((9_999, Response::Produce(Ok(Produced::at(2))))));
}

impl Cluster {
    fn delete_records(&mut self, node: NodeId, offset: i64) -> Result<i64, ClientError> {
        match self.request(node, Request::DeleteRecords { tp: tp(), offset }) {
            Response::DeleteRecords(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn fetch_from(&mut self, node: NodeId, offset: i64) -> Result<Vec<i64>, ClientError> {
        let max_bytes = 1 << 20;
        match self.request(
            node,
            Request::Fetch {
                tp: tp(),
                offset,
                max_bytes,
            },
        ) {
            Response::Fetch(r) => r.map(|f| {
                let records = f.batches.iter().flat_map(|b| decode_records(b).unwrap());
                records.map(|r| r.offset).collect()
            }),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn starts(&self) -> Vec<i64> {
        let status = |n: &Node| n.replica(&tp()).unwrap().status();
        self.nodes
            .iter()
            .map(|n| status(n).log_start_offset)
            .collect()
    }
}

/// DeleteRecords goes through the partition's raft log: every replica's log start offset
/// moves, fetches below it are out of range, ListOffsets reflects it, retention deletes the
/// segments below it, and restarts (which re-derive it from the log) keep it.
#[test]
fn test_delete_records_moves_the_log_start_on_every_replica() {
    let log = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let mut c = Cluster::new(log);
    let l = elect(&mut c);
    let follower = (1..=3).find(|n| *n != l).unwrap();
    let payload = "p".repeat(100);
    for i in 0..50 {
        // Offset 5 holds the largest timestamp until it is deleted.
        let ts = if i == 5 { 9_000 } else { 1_000 + i };
        c.produce(l, &format!("{i}:{payload}"), ts).unwrap();
    }
    assert_eq!(c.list_offsets(l, OffsetSpec::MaxTimestamp), (5, 9_000));
    // Bad input changes nothing.
    assert_eq!(
        c.delete_records(follower, 10),
        Err(ClientError::NotLeader { leader: Some(l) })
    );
    for past in [51, -2] {
        assert!(
            matches!(
                c.delete_records(l, past),
                Err(ClientError::OffsetOutOfRange { .. })
            ),
            "DeleteRecords before {past}"
        );
    }
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, 0);
    let segments_before = c
        .node(l)
        .replica(&tp())
        .unwrap()
        .storage()
        .log()
        .segment_count();
    assert_eq!(c.delete_records(l, 20), Ok(20));
    c.tick(2);
    assert_eq!(c.starts(), vec![20, 20, 20], "every replica applied it");
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, 20);
    assert_eq!(c.list_offsets(l, OffsetSpec::EarliestLocal).0, 20);
    assert_eq!(c.list_offsets(l, OffsetSpec::MaxTimestamp), (49, 1_049));
    assert_eq!(c.list_offsets(l, OffsetSpec::Timestamp(0)), (20, 1_020));
    assert!(matches!(
        c.fetch_from(l, 19),
        Err(ClientError::OffsetOutOfRange { start: 20, .. })
    ));
    assert_eq!(c.fetch_from(l, 20).unwrap()[0], 20);
    // A lower offset deletes nothing and answers the current start.
    assert_eq!(c.delete_records(l, 10), Ok(20));
    // Retention removes the segments wholly below the start, and nothing at or above it.
    c.tick(3);
    let log_of = |c: &Cluster, id: NodeId| {
        let log = c.nodes[id as usize - 1]
            .replica(&tp())
            .unwrap()
            .storage()
            .log();
        (log.segment_count(), log.snapshot_meta().next_offset)
    };
    let (segments_after, physical_start) = log_of(&c, l);
    assert!(
        segments_after < segments_before && physical_start > 0 && physical_start <= 20,
        "segments {segments_before} -> {segments_after}, physical start {physical_start}"
    );
    // Restarts re-derive the start from the committed command in the log.
    for id in 1..=3 {
        c.restart(id);
    }
    let l = elect(&mut c);
    c.tick(2);
    assert_eq!(c.starts(), vec![20, 20, 20], "the start survives restarts");
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, 20);
    // -1 deletes up to the high watermark.
    assert_eq!(c.delete_records(l, -1), Ok(50));
    assert_eq!(c.list_offsets(l, OffsetSpec::Earliest).0, 50);
    assert_eq!(c.fetch_from(l, 50), Ok(vec![]));
    assert_eq!(c.list_offsets(l, OffsetSpec::MaxTimestamp), (-1, -1));
    // New records go on from there.
    assert_eq!(c.produce(l, "after", 2_000), Ok(50));
    assert_eq!(c.fetch_from(l, 50), Ok(vec![50]));
}

// Proves a DeleteRecords is answered only from committed commands. A leader cut off from its
// followers has a DeleteRecords before 30 in its log, uncommitted. A second one, before 20,
// must not be answered "start 30" at once: the other two replicas elect a leader without that
// command, and their start stays 0. (The 2,000-seed campaign found this as seed 2651.)
#[test]
fn test_delete_records_is_not_answered_from_an_uncommitted_command() {
    let mut c = Cluster::new(LogConfig::default());
    let l = elect(&mut c);
    for i in 0..40 {
        c.produce(l, &format!("{i}"), 1_000 + i).unwrap();
    }
    isolate(&mut c, l, true);
    let now = c.now_ms;
    for (id, offset) in [(9_001, 30), (9_002, 20)] {
        let req = Request::DeleteRecords { tp: tp(), offset };
        c.node(l).handle_request(now, id, req);
        c.settle();
    }
    let start = c.node(l).replica(&tp()).unwrap().log_start_offset();
    assert_eq!(
        start, 30,
        "the leader serves nothing below a delete in its log"
    );
    let mut replies = Vec::new();
    let others: Vec<NodeId> = (1..=3).filter(|n| *n != l).collect();
    for _ in 0..200 {
        c.tick(1);
        while let Some(reply) = c.node(l).poll_reply() {
            replies.push(reply);
        }
        let elected = others
            .iter()
            .any(|n| c.nodes[*n as usize - 1].replica(&tp()).unwrap().is_leader());
        if elected && replies.len() == 2 {
            break;
        }
    }
    assert!(
        replies
            .iter()
            .all(|(_, r)| !matches!(r, Response::DeleteRecords(Ok(_)))),
        "answered from an uncommitted command: {replies:?}"
    );
    for n in others {
        let r = c.nodes[n as usize - 1].replica(&tp()).unwrap();
        assert_eq!(r.log_start_offset(), 0, "node {n} never had the commands");
    }
}

/// The configuration of node `id` joining the metadata cluster `c`: it names the quorum
/// (1, 2, 3) and itself, and asks to be admitted.
fn joiner_config(c: &Cluster, id: NodeId, incarnation: u64) -> NodeConfig {
    let mut cfg = config(id, c.log.clone(), true, c.size, incarnation);
    cfg.brokers = vec![1, 2, 3, id];
    cfg.join = true;
    cfg
}

/// Opens node `id` on `disk` as the next node of `c` (ids must follow on).
fn add_node(c: &mut Cluster, cfg: NodeConfig, disk: Rc<MemDisk>) {
    assert_eq!(
        cfg.id as usize,
        c.nodes.len() + 1,
        "nodes are added in id order"
    );
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let d: Rc<dyn Disk> = disk.clone();
    c.nodes.push(Node::open(cfg, d, &logger).unwrap());
    c.disks.push(disk);
}

/// A metadata cluster of three whose nodes all store the cluster's id, and its controller.
fn identified_cluster() -> (Cluster, NodeId) {
    let mut c = Cluster::with(LogConfig::default(), true);
    let controller = wait_for_controller(&mut c);
    tick_until(&mut c, 50, "the cluster's id on every node", |c| {
        c.nodes.iter().all(|n| n.cluster_id().is_some())
    });
    (c, controller)
}

/// Starts node 4 with `join` on an empty disk and waits until it is admitted.
fn admit_node_4(c: &mut Cluster) {
    let cfg = joiner_config(c, 4, 0);
    add_node(c, cfg, Rc::new(MemDisk::new()));
    tick_until(c, 100, "node 4 admitted", |c| !c.nodes[3].is_joining());
}

/// Creates `t` with its one partition on 4, 1, 2 and waits until node 4 leads it.
fn create_t_on_node_4(c: &mut Cluster, controller: NodeId) {
    let create = Request::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        configs: Default::default(),
        assignments: vec![vec![4, 1, 2]],
        validate_only: false,
    };
    assert!(matches!(
        c.request(controller, create),
        Response::CreateTopic(Ok(()))
    ));
    tick_until(c, 100, "node 4 leads t-0", |c| {
        c.nodes[3].replica(&tp()).is_some_and(|r| r.is_leader())
    });
}

/// Every file of a disk, with its bytes.
fn disk_contents(d: &MemDisk) -> Vec<(String, Vec<u8>)> {
    d.paths()
        .into_iter()
        .map(|p| {
            let bytes = d.with_file(&p, |b| b.clone()).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A cluster gets one id, which every node stores; a fourth node started with `join` is
/// admitted by the controller (registered with its raft address, added to the metadata group
/// as a learner), replays the metadata log from its start, hosts a replica of a new topic that
/// names it and leads it, and rejoins after a restart from its own metadata log.
#[test]
fn test_a_node_joins_a_running_cluster() {
    let (mut c, controller) = identified_cluster();
    let id = c.nodes[0].cluster_id().unwrap().to_string();
    assert_eq!(id.len(), 22, "{id}");
    assert!(c.nodes.iter().all(|n| n.cluster_id() == Some(id.as_str())));
    let cfg = joiner_config(&c, 4, 0);
    add_node(&mut c, cfg, Rc::new(MemDisk::new()));
    assert!(c.node(4).is_joining());
    assert_eq!(
        c.node(4).cluster_id(),
        None,
        "a new directory belongs to no cluster"
    );
    tick_until(
        &mut c,
        100,
        "node 4 admitted, unfenced and caught up",
        |c| {
            let n4 = &c.nodes[3];
            let image = c.nodes[controller as usize - 1].metadata();
            let unfenced = image.brokers.get(&4).is_some_and(|b| !b.fenced);
            !n4.is_joining() && unfenced && n4.metadata() == image
        },
    );
    assert_eq!(c.node(4).cluster_id(), Some(id.as_str()));
    let conf = c
        .node(controller)
        .replica(&metadata_tp())
        .unwrap()
        .conf_state();
    assert_eq!(conf.voters, vec![1, 2, 3], "a joined node does not vote");
    assert_eq!(conf.learners, vec![4]);
    let b4 = c.node(controller).metadata().brokers[&4].clone();
    assert_eq!(
        b4.raft_addr, None,
        "the test's endpoints carry no raft address"
    );
    assert!(!b4.fenced);
    // Every node's peer list comes from the image: node 1 now knows broker 4 is a broker.
    assert!(c.node(1).metadata().brokers.contains_key(&4));

    create_t_on_node_4(&mut c, controller);
    assert_eq!(c.produce(4, "on the new node", 1_000), Ok(0));
    assert_eq!(c.produce(4, "again", 1_001), Ok(1));

    // A restart reopens its own metadata log: no second admission.
    c.restart_as(4, joiner_config(&c, 4, 1));
    assert!(
        !c.node(4).is_joining(),
        "a node with a metadata log does not ask to join"
    );
    tick_until(&mut c, 100, "node 4 back in step", |c| {
        c.nodes[3].metadata() == c.nodes[controller as usize - 1].metadata()
            && c.nodes[3]
                .replica(&tp())
                .is_some_and(|r| r.status().high_watermark == 2)
    });
}

/// A join under the id of a controller voter is refused: an empty log under a voter's id
/// could elect a leader without acknowledged entries. The joiner stops with the reason.
#[test]
fn test_a_join_under_a_voters_id_is_refused() {
    let (mut c, _) = identified_cluster();
    // Node 2's disk dies; an operator starts it empty with `join`.
    c.disks[1] = Rc::new(MemDisk::new());
    let mut cfg = joiner_config(&c, 2, 1);
    cfg.brokers = vec![1, 2, 3];
    c.restart_as(2, cfg);
    c.may_stop.insert(2);
    tick_until(&mut c, 50, "node 2 refused", |c| c.stopped.contains_key(&2));
    let why = &c.stopped[&2];
    assert!(
        why.contains("refused to admit") && why.contains("controller voter"),
        "{why}"
    );
    assert!(
        c.node(2).replica(&metadata_tp()).is_none(),
        "nothing was created"
    );
}

/// A node whose directory belongs to another cluster is refused by this cluster's quorum
/// before any replica reads its envelopes, stops with an error naming both clusters, and
/// leaves its data exactly as it was; the cluster it reached goes on.
#[test]
fn test_a_node_of_another_cluster_is_refused_and_its_data_untouched() {
    let mut other = Cluster::with(LogConfig::default(), true);
    // Other seeds than the cluster below, so another id is drawn.
    for id in 1..=3 {
        other.restart(id);
    }
    let other_controller = wait_for_controller(&mut other);
    tick_until(&mut other, 50, "the other cluster's id", |c| {
        c.nodes.iter().all(|n| n.cluster_id().is_some())
    });
    other.request(
        other_controller,
        Request::CreateTopic {
            name: "theirs".into(),
            partitions: 1,
            replication_factor: 3,
            configs: Default::default(),
            assignments: vec![],
            validate_only: false,
        },
    );
    other.tick(20);
    let theirs = other.nodes[0].cluster_id().unwrap().to_string();
    let foreign_disk = other.disks[0].clone();
    drop(other);
    let before = disk_contents(&foreign_disk);

    let (mut c, _) = identified_cluster();
    let ours = c.nodes[0].cluster_id().unwrap().to_string();
    assert_ne!(ours, theirs, "two clusters, two ids");
    // The other cluster's node 1, started as node 4 against this cluster (joining or not).
    let cfg = joiner_config(&c, 4, 0);
    add_node(&mut c, cfg, foreign_disk.clone());
    c.may_stop.insert(4);
    tick_until(&mut c, 100, "node 4 stopped", |c| {
        c.stopped.contains_key(&4)
    });
    let why = &c.stopped[&4];
    assert!(why.contains(&ours) && why.contains(&theirs), "{why}");
    assert!(why.contains("left untouched"), "{why}");
    assert!(c.nodes[..3]
        .iter()
        .all(|n| n.stats().foreign_envelopes > 0 || n.controller() != Some(n.id())));
    let after = disk_contents(&foreign_disk);
    let differ = |a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]| -> Vec<String> {
        a.iter()
            .filter(|f| !b.contains(f))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let (new, gone) = (differ(&after, &before), differ(&before, &after));
    assert!(
        new.is_empty() && gone.is_empty(),
        "foreign data changed: {new:?} {gone:?}"
    );
    assert!(
        !c.node(1).metadata().brokers.contains_key(&4),
        "never registered"
    );
    // This cluster is unharmed.
    let create = Request::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        configs: Default::default(),
        assignments: vec![],
        validate_only: false,
    };
    let ctrl = wait_for_controller(&mut c);
    assert!(matches!(
        c.request(ctrl, create),
        Response::CreateTopic(Ok(()))
    ));
}

/// A joiner that was admitted but lost its metadata log before it was durable (it crashed
/// right after storing the cluster's id) is admitted again: its directory still names the
/// cluster, and it never held anything. The simulator found the stricter rule that refused
/// every admitted id forever.
#[test]
fn test_a_joiner_that_crashed_after_admission_is_admitted_again() {
    let (mut c, controller) = identified_cluster();
    admit_node_4(&mut c);
    create_t_on_node_4(&mut c, controller);
    // The crash: the metadata replica's files are gone, `cluster.id` stayed.
    let disk = c.disks[3].clone();
    let meta_dir = format!("{}/", metadata_tp().dir());
    for p in disk
        .paths()
        .into_iter()
        .filter(|p| p.starts_with(&meta_dir))
    {
        disk.remove(&p).unwrap();
    }
    c.restart_as(4, joiner_config(&c, 4, 1));
    assert!(c.node(4).is_joining(), "no metadata log: it asks again");
    assert!(
        c.node(4).cluster_id().is_some(),
        "its directory kept the id"
    );
    tick_until(&mut c, 100, "node 4 admitted again and caught up", |c| {
        let image = c.nodes[controller as usize - 1].metadata();
        !c.nodes[3].is_joining() && c.nodes[3].metadata() == image
    });
}

/// The same id coming back with an empty directory after it was admitted and given
/// replicas: it may have acknowledged entries it no longer has, so it is refused for good.
#[test]
fn test_an_admitted_id_with_replicas_and_an_empty_directory_is_refused() {
    let (mut c, controller) = identified_cluster();
    admit_node_4(&mut c);
    create_t_on_node_4(&mut c, controller);
    assert_eq!(c.produce(4, "acked by node 4", 1_000), Ok(0));
    // Its disk is replaced by an empty one.
    c.disks[3] = Rc::new(MemDisk::new());
    c.restart_as(4, joiner_config(&c, 4, 1));
    c.may_stop.insert(4);
    tick_until(&mut c, 50, "node 4 refused", |c| c.stopped.contains_key(&4));
    let why = &c.stopped[&4];
    assert!(
        why.contains("holds replicas") && why.contains("new id"),
        "{why}"
    );
}

/// A 4-broker metadata cluster (voters 1-3, learner 4) with `t` on 1, 2, 3 led by node 1,
/// holding `records` records; returns the controller.
fn cluster_with_t_on_123(records: usize) -> (Cluster, NodeId) {
    let mut c = Cluster::sized(LogConfig::default(), true, 4);
    let controller = wait_for_controller(&mut c);
    tick_until(&mut c, 50, "4 brokers registered", |c| {
        c.nodes[0].metadata().brokers.len() == 4
    });
    let create = Request::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 3,
        configs: Default::default(),
        assignments: vec![vec![1, 2, 3]],
        validate_only: false,
    };
    assert_eq!(c.request(controller, create), Response::CreateTopic(Ok(())));
    tick_until(&mut c, 100, "node 1 leads t-0", |c| c.leader() == Some(1));
    for i in 0..records {
        c.produce(1, &format!("r{i}"), i as i64).unwrap();
    }
    (c, controller)
}

fn reassign(c: &mut Cluster, node: NodeId, target: Option<Vec<NodeId>>) -> Response {
    let moves = vec![(tp(), target)];
    c.request(node, Request::AlterReassignments { moves })
}

/// Whether every node's image has `t-0` on exactly `replicas` with no move, only those nodes
/// host it, and the leader's committed configuration is that set.
fn moved_to(c: &Cluster, replicas: &[NodeId]) -> bool {
    let images = c.nodes.iter().all(|n| {
        let image = n.metadata();
        image.moves.is_empty() && image.topics["t"].partitions[&0] == replicas
    });
    let hosts: Vec<NodeId> = c
        .nodes
        .iter()
        .filter(|n| n.replica(&tp()).is_some())
        .map(|n| n.id())
        .collect();
    let mut want = replicas.to_vec();
    want.sort_unstable();
    let conf = c.leader().map(|l| {
        let mut v = c.nodes[l as usize - 1].replica(&tp()).unwrap().voters();
        v.sort_unstable();
        v
    });
    images && hosts == want && conf == Some(want)
}

/// The committed values of `t-0` as node `id`'s replica holds them (leader or not), from
/// offset 0.
fn values_on(c: &Cluster, id: NodeId) -> Vec<String> {
    let r = c.nodes[id as usize - 1].replica(&tp()).unwrap();
    let hw = r.status().high_watermark;
    let fetched = r.storage().log().read(0, hw, u64::MAX).unwrap();
    fetched
        .batches
        .iter()
        .flat_map(|b| decode_records(b).unwrap())
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

/// KIP-455 on raft: moving t-0 from 1, 2, 3 to 2, 3, 4 while its leader is node 1. Node 4
/// joins as a learner and catches up, leadership moves off node 1 before it is removed, the
/// configuration becomes 2, 3, 4 by joint consensus, and only then does node 1 delete its
/// replica. Every record is on the new replica, ListPartitionReassignments shows the move while
/// it runs, and produce works throughout.
#[test]
fn test_a_partition_moves_to_new_replicas_and_its_leader_moves_off_first() {
    let (mut c, controller) = cluster_with_t_on_123(40);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![2, 3, 4])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    let listed = c.request(controller, Request::ListReassignments { partitions: None });
    let Response::ListReassignments(Ok(list)) = listed else {
        panic!("{listed:?}");
    };
    let s = list.first().expect("the move is listed while it runs");
    assert_eq!(s.tp, tp());
    assert_eq!((s.adding.clone(), s.removing.clone()), (vec![4], vec![1]));
    assert_eq!(
        s.replicas,
        vec![2, 3, 4, 1],
        "target first, then the leaving ones"
    );
    let mut produced = 40;
    let mut node1_removed_while_leading = false;
    for _ in 0..300 {
        if moved_to(&c, &[2, 3, 4]) {
            break;
        }
        c.tick(1);
        let n1 = c.nodes[0].replica(&tp());
        if n1.is_some_and(|r| r.is_leader() && !r.conf_state().voters.contains(&1)) {
            node1_removed_while_leading = true;
        }
        // Node 1 keeps its data until the new configuration commits without it.
        if c.nodes[0].replica(&tp()).is_none() {
            let l = c.leader().expect("a leader");
            let conf = c.nodes[l as usize - 1].replica(&tp()).unwrap().conf_state();
            assert!(!conf.voters.contains(&1) && conf.voters_outgoing.is_empty());
        }
        if let Some(l) = c.leader() {
            if c.produce(l, &format!("r{produced}"), produced).is_ok() {
                produced += 1;
            }
        }
    }
    assert!(moved_to(&c, &[2, 3, 4]), "the move finished");
    assert!(!node1_removed_while_leading, "leadership left node 1 first");
    assert!(c.disks[0].paths().iter().all(|p| !p.starts_with("t-0")));
    let want: Vec<String> = (0..produced).map(|i| format!("r{i}")).collect();
    tick_until(&mut c, 50, "node 4 has every record", |c| {
        values_on(c, 4).len() == want.len()
    });
    assert_eq!(values_on(&c, 4), want);
    let l = c.leader().unwrap();
    assert_ne!(l, 1);
    assert_eq!(c.produce(l, "after", 0).unwrap(), produced);
}

/// Bad reassignments get Kafka's errors and change nothing; a cancel takes a move that cannot
/// finish (its new replica is cut off) back to the original replicas, and the would-be new
/// replica deletes what it had.
#[test]
fn test_bad_reassignments_are_refused_and_a_cancel_restores_the_replicas() {
    let (mut c, controller) = cluster_with_t_on_123(5);
    let one = |r: Response| match r {
        Response::AlterReassignments(Ok(v)) => v.into_iter().next().unwrap(),
        other => panic!("{other:?}"),
    };
    let bad = [vec![], vec![2, 2, 3], vec![2, 3, 9], vec![0, 2]];
    for target in bad {
        let r = one(reassign(&mut c, controller, Some(target.clone())));
        assert!(
            matches!(r, Err(ClientError::InvalidReplicaAssignment(_))),
            "{target:?}: {r:?}"
        );
    }
    let r = one(reassign(&mut c, controller, None));
    assert_eq!(r, Err(ClientError::NoReassignmentInProgress(tp())));
    let unknown = vec![(TopicPartition::new("t", 7), Some(vec![1, 2, 3]))];
    let r = one(c.request(controller, Request::AlterReassignments { moves: unknown }));
    assert!(matches!(r, Err(ClientError::UnknownPartition(_))), "{r:?}");
    assert!(c.nodes.iter().all(|n| n.metadata().moves.is_empty()));

    // Node 4 is cut off: the move waits for its learner, then is cancelled.
    isolate(&mut c, 4, true);
    tick_until(&mut c, 100, "node 4 fenced", |c| {
        c.nodes[0].metadata().brokers[&4].fenced
    });
    let r = one(reassign(&mut c, controller, Some(vec![2, 3, 4])));
    assert!(
        matches!(r, Err(ClientError::InvalidReplicaAssignment(_))),
        "a fenced broker: {r:?}"
    );
    isolate(&mut c, 4, false);
    tick_until(&mut c, 100, "node 4 unfenced", |c| {
        !c.nodes[0].metadata().brokers[&4].fenced
    });
    // Node 4 hears the metadata log but no partition traffic.
    for other in 1..=3 {
        c.cut.insert((other, 4));
    }
    let controller = wait_for_controller(&mut c);
    assert_eq!(
        one(reassign(&mut c, controller, Some(vec![2, 3, 4]))),
        Ok(())
    );
    c.tick(20);
    assert!(
        c.nodes[0].metadata().moves.contains_key(&tp()),
        "the move waits"
    );
    let l = c.leader().unwrap();
    let conf = c.nodes[l as usize - 1].replica(&tp()).unwrap().conf_state();
    assert_eq!(conf.learners, vec![4], "node 4 joined as a learner only");
    let controller = wait_for_controller(&mut c);
    assert_eq!(one(reassign(&mut c, controller, None)), Ok(()));
    for other in 1..=3 {
        c.cut.remove(&(other, 4));
    }
    tick_until(&mut c, 200, "back on 1, 2, 3", |c| moved_to(c, &[1, 2, 3]));
    assert_eq!(values_on(&c, 2).len(), 5);
}

/// A move survives the loss of the partition's leader and of the controller in the middle:
/// the next leaders read the committed configuration and the image, and finish it.
#[test]
fn test_a_move_survives_leader_and_controller_restarts() {
    let (mut c, controller) = cluster_with_t_on_123(20);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![4, 2, 3])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    c.tick(2);
    c.restart(1);
    c.restart(controller);
    tick_until(&mut c, 400, "the move finished", |c| {
        moved_to(c, &[4, 2, 3])
    });
    let want: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    assert_eq!(values_on(&c, 4), want);
    // The preferred leader is the target's first replica (raft's voters are unordered).
    let l = c.leader().unwrap();
    if l != 4 {
        let elect = c.request(l, Request::ElectPreferredLeader { tp: tp() });
        assert_eq!(elect, Response::ElectPreferredLeader(Ok(())));
        tick_until(&mut c, 100, "node 4 leads", |c| c.leader() == Some(4));
    }
}

/// Replicas (and preferred leaderships, counted by the first replica) per broker in node
/// `id`'s image, over brokers 1..=n.
fn loads(c: &Cluster, id: NodeId, n: NodeId) -> (Vec<usize>, Vec<usize>) {
    let image = c.nodes[id as usize - 1].metadata();
    let mut replicas = vec![0; n as usize];
    let mut leaders = vec![0; n as usize];
    for (tp, r) in image.assignments() {
        if tp.topic == METADATA_TOPIC {
            continue;
        }
        for (i, b) in r.iter().enumerate() {
            replicas[*b as usize - 1] += 1;
            leaders[*b as usize - 1] += usize::from(i == 0);
        }
    }
    (replicas, leaders)
}

/// Automatic balancing and decommission, end to end in core: a fourth broker joins a cluster
/// whose 12 RF-2 partitions sit on three, and the controller moves replicas and preferred
/// leaders until every broker is within 1 of the mean; bad decommissions are refused with
/// their codes and change nothing; a decommission of the new broker drains it with every
/// partition keeping its replication factor and its spread over racks, and once it stops it is
/// unregistered (no view lists it, though configured) and leaves the metadata group.
#[test]
fn test_a_joined_broker_is_balanced_onto_then_decommissioned() {
    let (mut c, controller) = identified_cluster();
    let create = Request::CreateTopic {
        name: "b".into(),
        partitions: 12,
        replication_factor: 2,
        configs: Default::default(),
        assignments: vec![],
        validate_only: false,
    };
    assert_eq!(c.request(controller, create), Response::CreateTopic(Ok(())));
    assert_eq!(loads(&c, 1, 3).0, vec![8, 8, 8]);
    admit_node_4(&mut c);
    tick_until(&mut c, 600, "balanced onto node 4", |c| {
        c.nodes.iter().all(|n| {
            let image = n.metadata();
            let (replicas, leaders) = loads(c, n.id(), 4);
            image.moves.is_empty()
                && replicas.iter().all(|r| (5..=7).contains(r))
                && leaders.iter().all(|l| (2..=4).contains(l))
        })
    });
    let hosted = |c: &Cluster, id: NodeId| {
        (0..12)
            .filter(|p| {
                c.nodes[id as usize - 1]
                    .replica(&TopicPartition::new("b", *p))
                    .is_some()
            })
            .count()
    };
    assert_eq!(
        hosted(&c, 4),
        loads(&c, 1, 4).0[3],
        "node 4 hosts what its image says"
    );

    let unregister = |c: &mut Cluster, broker| {
        let controller = wait_for_controller(c);
        match c.request(controller, Request::UnregisterBroker { broker }) {
            Response::UnregisterBroker(r) => r,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        unregister(&mut c, 9),
        Err(ClientError::BrokerNotRegistered(9))
    );
    assert!(
        matches!(unregister(&mut c, 1), Err(ClientError::InvalidRequest(m)) if m.contains("controller voter"))
    );
    let wide = Request::CreateTopic {
        name: "wide".into(),
        partitions: 1,
        replication_factor: 4,
        configs: Default::default(),
        assignments: vec![],
        validate_only: false,
    };
    assert_eq!(c.request(controller, wide), Response::CreateTopic(Ok(())));
    assert!(matches!(
        unregister(&mut c, 4),
        Err(ClientError::BelowReplicationFactor(m)) if m.contains("wide-0")
    ));
    assert!(
        c.nodes[0].metadata().decommissioning.is_empty(),
        "a refusal changes nothing"
    );
    let delete = Request::DeleteTopic {
        name: "wide".into(),
    };
    assert_eq!(c.request(controller, delete), Response::DeleteTopic(Ok(())));

    // Racks (see `endpoint`): 1 and 3 on rack-1, 2 and 4 on rack-0.
    let racks = |r: &[NodeId]| r.iter().map(|b| b % 2).collect::<BTreeSet<_>>().len();
    let spread_before: Vec<usize> = c.nodes[0]
        .metadata()
        .assignments()
        .values()
        .map(|r| racks(r))
        .collect();
    assert_eq!(unregister(&mut c, 4), Ok(()));
    tick_until(&mut c, 600, "node 4 drained", |c| {
        c.nodes
            .iter()
            .all(|n| !n.metadata().hosts_replicas(4) && n.metadata().moves.is_empty())
            && hosted(c, 4) == 0
    });
    let image = c.nodes[0].metadata();
    assert!(!image.brokers[&4].fenced && image.decommissioning.contains(&4));
    for (tp, r) in image.assignments() {
        if tp.topic == "b" {
            assert_eq!(r.len(), 2, "{tp} keeps its replication factor: {r:?}");
        }
    }
    let spread_after: Vec<usize> = image.assignments().values().map(|r| racks(r)).collect();
    assert_eq!(
        spread_before, spread_after,
        "no partition narrows its spread over racks"
    );
    let (replicas, _) = loads(&c, 1, 3);
    assert_eq!(replicas.iter().sum::<usize>(), 24);

    isolate(&mut c, 4, true);
    tick_until(&mut c, 200, "node 4 unregistered", |c| {
        c.nodes[..3].iter().all(|n| {
            let image = n.metadata();
            !image.brokers.contains_key(&4) && image.unregistered.contains(&4)
        })
    });
    // Gone from every view, even for a node configured with it as a peer.
    let configured: Vec<railyard_core::view::BrokerInfo> = (1..=4)
        .map(|id| railyard_core::view::BrokerInfo {
            id,
            host: format!("node-{id}"),
            port: 9092,
            rack: None,
        })
        .collect();
    for n in &c.nodes[..3] {
        let topics = railyard_core::view::topics(n);
        let listed: Vec<NodeId> = railyard_core::view::brokers(n, &configured, &topics)
            .iter()
            .map(|b| b.id)
            .collect();
        assert!(!listed.contains(&4), "node {} lists {listed:?}", n.id());
    }
    tick_until(&mut c, 100, "node 4 out of the metadata group", |c| {
        let l = c.nodes[..3]
            .iter()
            .find(|n| n.replica(&metadata_tp()).is_some_and(|r| r.is_leader()));
        l.is_some_and(|n| {
            let cs = n.replica(&metadata_tp()).unwrap().conf_state();
            !cs.learners.contains(&4) && !cs.voters.contains(&4)
        })
    });
}

/// The balancer's switch is a cluster-wide boolean config: refused with INVALID_CONFIG on one
/// broker or with a non-boolean value; once `false`, a joining broker gets nothing moved onto
/// it, and deleting the config turns balancing back on.
#[test]
fn test_balancing_can_be_turned_off_for_the_cluster() {
    use railyard_core::api::ConfigChange;
    use railyard_core::controller::AUTOBALANCE_CONFIG;
    use railyard_core::topic_config::AlterOp;
    let (mut c, controller) = identified_cluster();
    let alter = |c: &mut Cluster, broker, op| {
        let change = ConfigChange::Incremental(vec![(AUTOBALANCE_CONFIG.to_string(), op)]);
        let req = Request::AlterBrokerConfigs {
            broker,
            change,
            validate_only: false,
        };
        match c.request(controller, req) {
            Response::AlterBrokerConfigs(r) => r,
            other => panic!("{other:?}"),
        }
    };
    let off = || AlterOp::Set("false".into());
    assert!(matches!(
        alter(&mut c, Some(1), off()),
        Err(ClientError::InvalidConfig(_))
    ));
    let maybe = AlterOp::Set("maybe".into());
    assert!(matches!(
        alter(&mut c, None, maybe),
        Err(ClientError::InvalidConfig(_))
    ));
    assert!(c.nodes[0].metadata().balancing_enabled());
    assert_eq!(alter(&mut c, None, off()), Ok(()));
    assert!(c.nodes.iter().all(|n| !n.metadata().balancing_enabled()));
    let create = Request::CreateTopic {
        name: "b".into(),
        partitions: 6,
        replication_factor: 2,
        configs: Default::default(),
        assignments: vec![],
        validate_only: false,
    };
    assert_eq!(c.request(controller, create), Response::CreateTopic(Ok(())));
    admit_node_4(&mut c);
    c.tick(100);
    assert_eq!(
        loads(&c, 1, 4).0,
        vec![4, 4, 4, 0],
        "nothing moves while balancing is off"
    );
    assert_eq!(alter(&mut c, None, AlterOp::Delete), Ok(()));
    tick_until(&mut c, 600, "balanced once it is on again", |c| {
        let (replicas, _) = loads(c, 1, 4);
        c.nodes[0].metadata().moves.is_empty() && replicas[3] >= 2
    });
}

/// A partition moves back onto a broker that held it before (and deleted its data when it
/// left): the broker's new replica catches up from the leader like any new one.
#[test]
fn test_a_partition_moves_back_onto_a_former_replica() {
    let (mut c, controller) = cluster_with_t_on_123(30);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![2, 3, 4])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    tick_until(&mut c, 400, "t-0 on 2, 3, 4", |c| moved_to(c, &[2, 3, 4]));
    let leader = c.leader().unwrap();
    for i in 30..40 {
        c.produce(leader, &format!("r{i}"), i as i64).unwrap();
    }
    let controller = wait_for_controller(&mut c);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![1, 2, 3])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    tick_until(&mut c, 400, "t-0 back on 1, 2, 3", |c| {
        moved_to(c, &[1, 2, 3])
    });
    let want: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    assert_eq!(values_on(&c, 1), want, "node 1 has every record again");
}

/// Sets (or with `None` deletes) one cluster-wide config through the controller.
fn alter_cluster_config(
    c: &mut Cluster,
    resource: Option<NodeId>,
    name: &str,
    value: Option<&str>,
) -> Result<(), ClientError> {
    use railyard_core::api::ConfigChange;
    use railyard_core::topic_config::AlterOp;
    let op = value.map_or(AlterOp::Delete, |v| AlterOp::Set(v.into()));
    let req = Request::AlterBrokerConfigs {
        broker: resource,
        change: ConfigChange::Incremental(vec![(name.to_string(), op)]),
        validate_only: false,
    };
    let controller = wait_for_controller(c);
    match c.request(controller, req) {
        Response::AlterBrokerConfigs(r) => r,
        other => panic!("{other:?}"),
    }
}

/// The learner recovery throttle: at `raft.learner.recovery.rate` = 64 KiB/s, a move of a
/// partition holding 640 KiB takes at least the time the rate allows (less the bucket's
/// burst); unthrottled (0), moving it back is several times faster. Bad values, and the
/// config on one broker, are refused.
#[test]
fn test_learner_recovery_is_throttled_by_the_cluster_config() {
    use railyard_core::controller::LEARNER_RECOVERY_CONFIG;
    let (mut c, _) = cluster_with_t_on_123(0);
    let value = "v".repeat(16 << 10);
    for i in 0..40 {
        c.produce(1, &value, i).unwrap();
    }
    for (resource, bad) in [(None, "fast"), (None, "-1"), (Some(1), "1000")] {
        let r = alter_cluster_config(&mut c, resource, LEARNER_RECOVERY_CONFIG, Some(bad));
        assert!(
            matches!(r, Err(ClientError::InvalidConfig(_))),
            "{bad}: {r:?}"
        );
    }
    let rate_bytes_per_s = 64 << 10;
    let rate = rate_bytes_per_s.to_string();
    alter_cluster_config(&mut c, None, LEARNER_RECOVERY_CONFIG, Some(&rate)).unwrap();
    c.tick(2);
    let started_ms = c.now_ms;
    let controller = wait_for_controller(&mut c);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![2, 3, 4])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    tick_until(&mut c, 1_000, "t-0 on 2, 3, 4", |c| moved_to(c, &[2, 3, 4]));
    let throttled_ms = c.now_ms - started_ms;
    // 640 KiB of values at 64 KiB/s: 10 s, less the 100 ms burst.
    assert!(throttled_ms >= 9_000, "moved in {throttled_ms} ms");
    let (held, sent_bytes, _) = c.nodes[0].recovery_stats();
    assert!(
        held > 0,
        "node 1 led the move and held data for the learner"
    );
    assert!(
        sent_bytes >= 640 << 10,
        "node 1 sent {sent_bytes} bytes to the learner"
    );
    eprintln!("throttled move: {throttled_ms} ms, {held} messages held");

    alter_cluster_config(&mut c, None, LEARNER_RECOVERY_CONFIG, Some("0")).unwrap();
    c.tick(2);
    let started_ms = c.now_ms;
    let controller = wait_for_controller(&mut c);
    assert_eq!(
        reassign(&mut c, controller, Some(vec![1, 2, 3])),
        Response::AlterReassignments(Ok(vec![Ok(())]))
    );
    tick_until(&mut c, 1_000, "t-0 back on 1, 2, 3", |c| {
        moved_to(c, &[1, 2, 3])
    });
    let free_ms = c.now_ms - started_ms;
    eprintln!("unthrottled move: {free_ms} ms");
    assert!(
        free_ms * 3 < throttled_ms,
        "unthrottled {free_ms} ms, throttled {throttled_ms} ms"
    );
    let want = vec![value; 40];
    assert_eq!(values_on(&c, 1), want, "node 1 has every record again");
}

/// Asks the controller for a quorum change, following NOT_CONTROLLER (a leader demoting itself
/// hands over first).
fn quorum_change(c: &mut Cluster, promote: bool, broker: NodeId) -> Result<(), ClientError> {
    for _ in 0..20 {
        let controller = wait_for_controller(c);
        let req = if promote {
            Request::AddControllerVoter { broker }
        } else {
            Request::RemoveControllerVoter { broker }
        };
        match c.request(controller, req) {
            Response::QuorumChange(Err(ClientError::NotController { .. }))
            | Response::QuorumChange(Err(ClientError::QuorumChangePending(_))) => c.tick(5),
            Response::QuorumChange(r) => return r,
            other => panic!("{other:?}"),
        }
    }
    panic!("quorum change of {broker} kept failing over");
}

fn metadata_voters(c: &Cluster) -> Vec<NodeId> {
    let l = c
        .nodes
        .iter()
        .find(|n| n.replica(&metadata_tp()).is_some_and(|r| r.is_leader()))
        .expect("a metadata leader");
    let mut v = l.controller_voters().unwrap();
    v.sort_unstable();
    v
}

/// Controller quorum changes (KIP-853 in spirit): a joined broker is promoted to voter, a voter
/// (the leader too, which hands over first) is demoted to learner and stays a broker; bad
/// changes are refused with their codes and change nothing: a duplicate voter, an unknown
/// broker, a non-voter, a removal that would leave too few caught-up voters for a quorum, and
/// the last voter. A voter cannot be decommissioned until it is demoted.
#[test]
fn test_controller_voters_are_added_and_removed_by_joint_consensus() {
    let (mut c, _) = identified_cluster();
    admit_node_4(&mut c);
    tick_until(&mut c, 100, "node 4 registered", |c| {
        c.nodes[0]
            .metadata()
            .brokers
            .get(&4)
            .is_some_and(|b| !b.fenced)
    });
    assert_eq!(quorum_change(&mut c, true, 4), Ok(()));
    assert_eq!(metadata_voters(&c), vec![1, 2, 3, 4]);
    assert_eq!(
        quorum_change(&mut c, true, 4),
        Err(ClientError::DuplicateVoter(4))
    );
    assert_eq!(
        quorum_change(&mut c, true, 9),
        Err(ClientError::BrokerNotRegistered(9))
    );
    assert_eq!(
        quorum_change(&mut c, false, 9),
        Err(ClientError::VoterNotFound(9))
    );

    let leader = wait_for_controller(&mut c);
    let refused = c.request(leader, Request::UnregisterBroker { broker: leader });
    assert!(
        matches!(&refused, Response::UnregisterBroker(Err(ClientError::InvalidRequest(m))) if m.contains("controller voter")),
        "{refused:?}"
    );
    // Demoting the leader itself: it hands over, and the next leader demotes it.
    assert_eq!(quorum_change(&mut c, false, leader), Ok(()));
    let mut left: Vec<NodeId> = vec![1, 2, 3, 4];
    left.retain(|v| *v != leader);
    assert_eq!(metadata_voters(&c), left);
    let now_leading = wait_for_controller(&mut c);
    let cs = c.nodes[now_leading as usize - 1]
        .replica(&metadata_tp())
        .unwrap()
        .conf_state();
    assert!(
        cs.learners.contains(&leader),
        "a demoted voter stays a learner: {cs:?}"
    );
    // A demoted voter is an ordinary broker: it may be decommissioned.
    let controller = wait_for_controller(&mut c);
    let demoted = c.request(controller, Request::UnregisterBroker { broker: leader });
    assert_eq!(demoted, Response::UnregisterBroker(Ok(())));

    // With one of the three voters cut off, removing another would leave one caught up of two.
    let controller = wait_for_controller(&mut c);
    let cut = *left.iter().find(|v| **v != controller).unwrap();
    let other = *left
        .iter()
        .find(|v| **v != controller && **v != cut)
        .unwrap();
    isolate(&mut c, cut, true);
    for i in 0..3 {
        create(&mut c, controller, &format!("q{i}"), 1, 1);
    }
    c.tick(5);
    let r = quorum_change(&mut c, false, other);
    assert!(
        matches!(&r, Err(ClientError::InvalidRequest(m)) if m.contains("short of a quorum")),
        "{r:?}"
    );
    assert_eq!(metadata_voters(&c), left, "a refusal changes nothing");
    isolate(&mut c, cut, false);
    c.tick(20);

    // Down to one voter, which cannot go.
    for v in left.clone() {
        let last = metadata_voters(&c).len() == 1;
        let r = quorum_change(&mut c, false, v);
        if last {
            assert!(
                matches!(&r, Err(ClientError::InvalidRequest(m)) if m.contains("last controller voter")),
                "{r:?}"
            );
        } else {
            assert_eq!(r, Ok(()), "removing {v}");
        }
    }
    assert_eq!(metadata_voters(&c).len(), 1);
    let only = metadata_voters(&c)[0];
    assert!(matches!(
        quorum_change(&mut c, false, only),
        Err(ClientError::InvalidRequest(_))
    ));
}
