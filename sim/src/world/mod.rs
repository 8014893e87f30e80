//! The discrete-event simulator: N core nodes, their simulated disks, a simulated network,
//! clients, a fault schedule, white-box checks and the liveness phase.
//!
//! This module holds the run's state (`World`), its options and report, and the event loop: one
//! queue ordered by (time, sequence), and `handle`, which hands each event to the job that owns
//! it, one file each:
//! - `lifecycle.rs`: running a node (start, tick, deliver, crash, stop, pause) and its clients;
//! - `schedule.rs`: the fault schedule and the random streams;
//! - `scenarios.rs`: the scripted scenarios and the reconfiguration driver;
//! - `admin.rs`: the admin client (the workload's topics, topic churn);
//! - `checks.rs`: the white-box checkers;
//! - `liveness.rs`: the liveness phase and the end of the run.
//!
//! ## Fault model
//! One `u64` seed derives everything through ChaCha8: which faults are on and at what rates
//! (swarm testing, [`FaultConfig::draw`]), the schedule of crashes, pauses, partitions, clogs,
//! disk-full periods and bit flips, message latencies, drops and duplicates, and the workload.
//! Bit flips and read errors are confined to one "faulty disk" node (a minority of the replicas
//! of any record); flips hit sealed segments at rest, so a crash-restart meets them in recovery.
//! `schedule.rs` describes the schedule stream by stream.
//!
//! ## Phases
//! 1. **Safety** (`fault_phase_us`): faults fire while producers and consumers run; white-box
//!    checks run after every node step.
//! 2. **Liveness**: the network heals, every node restarts or resumes, disk faults stop. Within a
//!    bound every partition must commit new acks=all writes, and final readers must read every
//!    partition up to its high watermark.
//! 3. The Jepsen checker runs over the recorded history.

mod admin;
mod checks;
mod lifecycle;
mod liveness;
mod scenarios;
mod schedule;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use railyard_core::api::{Acks, Request, Response};
use railyard_core::log::LogConfig;
use railyard_core::metadata::metadata_tp;
use railyard_core::network::Envelope;
use railyard_core::node::{Node, PartitionSpec};
use railyard_core::types::{NodeId, Offset, RaftIndex, Term, TopicPartition};
use railyard_jepsen::{CheckReport, History};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::admin::{
    ADMIN_EVERY_US, CHURN_EVERY_US, DELETE_RECORDS_EVERY_US, MOVES_FROM_US, MOVE_EVERY_US,
};
use self::scenarios::{Reconfig, ScriptStep, RECONFIG_EVERY_US, RECONFIG_TOPIC};
use self::schedule::{Rngs, FAULT_TICK_US};
use crate::disk::{DiskStats, SimDisk};
use crate::faults::FaultConfig;
use crate::net::{NetStats, SimNetwork};
use crate::workload::{Role, Workload};

/// Simulated time between two raft ticks of a node.
pub const TICK_US: u64 = 10_000;
/// Joiners start no earlier than this into the run.
const JOIN_FROM_US: u64 = 500_000;
/// How often the committed-prefix check reads newly committed entries.
const PREFIX_CHECK_US: u64 = 250_000;

/// The consumer group of the simulated group members.
const SIM_GROUP: &str = "sim-group";

/// A scripted scenario, or the swarm (random faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Swarm,
    LeaderCrashMidWrite,
    PartitionedLeader,
    TornWriteFollower,
    CorruptReplica,
    DiskFull,
    /// A follower dies between writing and syncing, then the leader dies before the third
    /// replica (cut off until then) has the latest entries: whatever the follower acknowledged
    /// must have been durable.
    FollowerThenLeaderCrash,
    /// Wall clocks skewed by up to an hour between nodes and stepping by an hour, no other
    /// fault: no broker may be fenced and no write may stall because of them.
    ClockSteps,
    /// Under the seed's swarm faults, partition `r-0` (voters 1, 2, 3) takes the last node as
    /// a learner, promotes it through joint consensus while removing a voter, and leaves the
    /// joint configuration; writes to it go on and must all survive.
    Reconfigure,
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// The nodes that form the cluster (ids 1..=node_count).
    pub node_count: u64,
    /// Nodes that join the running cluster later (ids after `node_count`, `join` on), at a
    /// time drawn during the fault phase, or at the heal.
    pub joiners: u64,
    /// The membership nemesis: the admin client moves workload partitions to drawn replica
    /// sets (and cancels moves) while the faults run.
    pub moves: bool,
    pub topics: Vec<(String, i32)>,
    pub faults: FaultConfig,
    pub fault_phase_us: u64,
    pub liveness_us: u64,
    pub producers_all: usize,
    pub producers_leader: usize,
    /// Idempotent acks=all producers that retry across leader changes.
    pub producers_idempotent: usize,
    /// Members of one consumer group (`crate::group_client`).
    pub group_members: usize,
    pub consumers: usize,
    pub scenario: Scenario,
    pub log: LogConfig,
    /// Keep the history in the report (for writing it out as JSONL).
    pub keep_history: bool,
}

impl SimOptions {
    /// Everything derived from the seed: the swarm's fault options and the cluster shape.
    pub fn from_seed(seed: u64) -> SimOptions {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_fa17);
        let faults = FaultConfig::draw(&mut rng);
        let node_count = if rng.gen_bool(0.25) { 5 } else { 3 };
        // Small segments on some seeds so rolling, sealed-segment flips and retention run.
        let segment_bytes = if rng.gen_bool(0.5) { 8 * 1024 } else { 1 << 20 };
        // Drawn apart, so that the draws above stay what they were before joins existed.
        let joiners = u64::from(ChaCha8Rng::seed_from_u64(seed ^ 0x0001_0e1a_571c).gen_bool(0.5));
        let moves = ChaCha8Rng::seed_from_u64(seed ^ 0x0000_3073_e5ab).gen_bool(0.5);
        SimOptions {
            seed,
            node_count,
            joiners,
            moves,
            topics: vec![("a".into(), 2), ("b".into(), 2)],
            faults,
            fault_phase_us: 10_000_000,
            liveness_us: 10_000_000,
            producers_all: 3,
            producers_leader: 1,
            producers_idempotent: 2,
            group_members: 3,
            consumers: 2,
            scenario: Scenario::Swarm,
            log: LogConfig {
                segment_bytes,
                ..LogConfig::default()
            },
            keep_history: false,
        }
    }

    /// A scripted scenario: few random faults, one deliberate one.
    pub fn scenario(seed: u64, scenario: Scenario) -> SimOptions {
        let mut o = SimOptions::from_seed(seed);
        o.scenario = scenario;
        o.node_count = 3;
        o.joiners = 0;
        o.moves = false;
        o.faults = FaultConfig::none();
        o.log.segment_bytes = 8 * 1024;
        if scenario == Scenario::TornWriteFollower || scenario == Scenario::LeaderCrashMidWrite {
            o.faults.torn_writes = true;
        }
        if scenario == Scenario::Reconfigure {
            // The swarm's faults, on a cluster with a node to add.
            o.faults = SimOptions::from_seed(seed).faults;
            o.node_count = 4;
        }
        if scenario == Scenario::ClockSteps {
            o.faults.clock_skew_ms = crate::faults::CLOCK_STEP_MS;
            o.faults.clock_step_per_s = 1.0;
        }
        o
    }

    /// The one-line command that replays this run.
    pub fn replay_command(&self) -> String {
        match self.scenario {
            Scenario::Swarm => format!(
                "cargo run -p railyard-sim --release -- --seed {}",
                self.seed
            ),
            s => format!(
                "cargo run -p railyard-sim --release -- --seed {} --scenario {}",
                self.seed,
                clap::ValueEnum::to_possible_value(&s)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// Counters of what happened in a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunStats {
    pub events: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub failed_restarts: u64,
    pub fail_stops: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub clogs: u64,
    pub bit_flips: u64,
    pub disk_full_periods: u64,
    pub corruption_recoveries: u64,
    pub torn_recoveries: u64,
    pub leader_changes: u64,
    pub acked_all: u64,
    pub acked_leader: u64,
    pub send_fail: u64,
    pub send_refused_disk_full: u64,
    /// Appends a follower with a nearly full disk dropped instead of writing.
    pub appends_refused_disk_low: u64,
    /// Brokers (per incarnation) the controller fenced, as seen in the metadata images.
    pub brokers_fenced: u64,
    /// Leaderships recorded in the metadata log, summed over the images at the end.
    pub leaders_recorded: u64,
    pub send_info: u64,
    /// Idempotent sends resent (timeouts, leader changes) and producers that started over.
    pub idempotent_retries: u64,
    pub idempotent_resets: u64,
    /// Group members' acknowledged offset commits, completed joins, crashes, and committed
    /// offsets checked at a resume.
    pub group_commits_acked: u64,
    pub group_joins: u64,
    pub group_crashes: u64,
    pub group_resumes_checked: u64,
    pub polls_ok: u64,
    pub values_read: u64,
    pub committed_entries_checked: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    /// Crashes that hit a node in the middle of a step (its writes unsynced, maybe torn).
    pub mid_step_crashes: u64,
    /// Wall-clock steps injected.
    pub clock_steps: u64,
    /// Graceful stops (leaderships handed over, then exit).
    pub graceful_stops: u64,
    /// Workload partitions led by their preferred (first) replica at the end.
    pub preferred_leaders: u64,
    /// Topic creations and deletions the admin client asked for (churn).
    pub churn_requests: u64,
    /// DeleteRecords the admin client sent, and those answered with a new log start.
    pub delete_records_sent: u64,
    pub delete_records_acked: u64,
    /// Replicas a node created only at a later reconcile (their first open failed), summed
    /// over the nodes up at the end.
    pub replicas_created_late: u64,
    /// Joiners admitted to the cluster by the end.
    pub joins_admitted: u64,
    /// Reassignments the admin client sent, and moves seen started and finished.
    pub moves_requested: u64,
    pub moves_started: u64,
    pub moves_completed: u64,
    /// UnregisterBroker requests the membership nemesis sent, brokers it stopped for good once
    /// drained, and brokers the controller then unregistered.
    pub decommissions_requested: u64,
    pub brokers_retired: u64,
    pub brokers_unregistered: u64,
    /// Disk counters summed over every node's disk.
    pub disk: DiskStats,
    pub net: NetStats,
}

/// The outcome of one simulation.
pub struct SimReport {
    pub seed: u64,
    pub options: SimOptions,
    pub faults: String,
    pub trace_hash: u64,
    pub sim_us: u64,
    pub violations: Vec<String>,
    pub check: CheckReport,
    pub stats: RunStats,
    pub history: Option<History>,
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// What a failing run prints: seed, drawn faults, replay command, violations.
    pub fn failure_text(&self) -> String {
        let mut s = format!(
            "simulation FAILED seed={} scenario={:?} nodes={}\n  faults: {}\n  replay: {}\n",
            self.seed,
            self.options.scenario,
            self.options.node_count,
            self.faults,
            self.options.replay_command()
        );
        for v in self.violations.iter().take(20) {
            s.push_str(&format!("  violation: {v}\n"));
        }
        s
    }
}

#[derive(Debug)]
enum Event {
    Tick(NodeId),
    Deliver(Envelope),
    /// A client request reaches a node.
    Arrive {
        node: NodeId,
        client: usize,
        request_id: u64,
        request: Request,
    },
    Reply {
        client: usize,
        request_id: u64,
        response: Response,
    },
    ClientWake(usize),
    FaultTick,
    Restart(NodeId),
    /// A joiner starts for the first time (with `join`: it asks to be admitted).
    Join(NodeId),
    /// Crash the node now if the armed mid-step crash has not happened yet.
    ForceCrash(NodeId, u64),
    /// A graceful stop's handover window ended: (node, incarnation, downtime).
    StopNow(NodeId, u64, u64),
    /// A second crash shortly after a mid-step one (correlated failures, e.g. a power loss
    /// that takes out two racks): crashes a partition leader if one is up.
    CorrelatedCrash,
    Resume(NodeId),
    Heal,
    DiskFullEnd(NodeId),
    PrefixCheck,
    /// The admin client asks the controller to record the workload's topics (with their fixed
    /// assignments) until they exist, so that leaderships get published under faults too.
    CreateTopics,
    /// The admin client creates or deletes a topic that no workload uses (topic churn).
    Churn,
    /// The admin client deletes the records of a workload partition that the consumers have
    /// all read.
    DeleteRecords,
    /// The membership nemesis moves a workload partition (or cancels a move).
    Reassign,
    /// The reconfiguration scenario's driver looks at `r-0` and proposes its next change.
    Reconfigure,
    Liveness,
    StopProducers,
    FinalReads,
    End,
    Script(ScriptStep),
}

/// A queued event; ordered by (time, sequence) only.
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Box<Event>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct NodeSlot {
    node: Option<Node>,
    disk: Rc<SimDisk>,
    paused_until: Option<u64>,
    incarnation: u64,
    /// Deliveries held while paused (a paused process's socket buffers them).
    held: Vec<Event>,
    /// Downtime to use when an armed mid-step crash fires.
    restart_after: Option<u64>,
}

pub struct World {
    opts: SimOptions,
    now: u64,
    seq: u64,
    /// A min-heap on (time, sequence): the sequence breaks ties in scheduling order, so the
    /// order is total and deterministic. Events are boxed so the heap moves pointers.
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// One random stream per subsystem (see [`Rngs`]).
    rngs: Rngs,
    net: SimNetwork<Envelope>,
    slots: BTreeMap<NodeId, NodeSlot>,
    /// Every node, the joiners last.
    node_ids: Vec<NodeId>,
    /// Brokers whose decommission the controller recorded, drained and stopped for good (an
    /// operator's last step): never restarted, and expected unregistered after the heal.
    retired: BTreeSet<NodeId>,
    /// Decommissions sent this run (bounded by [`admin::DECOMMISSIONS_PER_RUN_MAX`]).
    decommissions_sent: u64,
    /// The nodes that formed the cluster (the others join it).
    bootstrap: Vec<NodeId>,
    specs: Vec<PartitionSpec>,
    workload: Workload,
    /// Request id -> client, to route a node's replies.
    route: BTreeMap<u64, usize>,
    /// The one node whose disk gets bit flips and read errors.
    faulty_disk_node: NodeId,
    trace: u64,
    violations: Vec<String>,
    stats: RunStats,
    // White-box state.
    /// Partition -> its index in `specs`, for cheap keys in the white-box maps.
    tp_index: BTreeMap<TopicPartition, usize>,
    leaders: BTreeMap<(usize, Term), NodeId>,
    hw_seen: BTreeMap<(NodeId, usize), Offset>,
    /// The (incarnation, replica generation) each `hw_seen` entry was seen at.
    hw_generations: BTreeMap<(NodeId, usize), (u64, Option<u64>)>,
    /// Each node's (incarnation, replica-set version) when its replicas were last looked at,
    /// with the partitions (`tp_index`) it hosted then.
    replica_sets_seen: BTreeMap<NodeId, ((u64, u64), BTreeSet<usize>)>,
    /// (node, partition) pairs seen with a durable commit index above 0.
    durable_replicas: BTreeSet<(NodeId, usize)>,
    committed: BTreeMap<TopicPartition, BTreeMap<RaftIndex, (Term, u32)>>,
    committed_values: BTreeMap<(TopicPartition, Offset), u64>,
    prefix_checked: BTreeMap<(NodeId, TopicPartition), RaftIndex>,
    heal_us: Option<u64>,
    in_liveness: bool,
    final_started: bool,
    partition_active: bool,
    /// (leader, follower, third) picked by a scripted scenario.
    script_roles: Option<(NodeId, NodeId, NodeId)>,
    /// Admin requests sent so far (their ids).
    admin_sent: u64,
    /// (broker, incarnation) seen fenced in some node's metadata image.
    fenced_seen: BTreeSet<(NodeId, u64)>,
    /// Each node's wall clock minus true (simulated) time: skew plus the steps so far.
    wall_offset_ms: BTreeMap<NodeId, i64>,
    /// Churn topics created so far (names are never reused: a re-created name would reuse the
    /// white-box history of the old partition).
    churn_created: u64,
    /// Partitions outside the metadata log (the reconfiguration scenario's), opened from the
    /// node config; the admin client does not create them.
    fixed: Vec<PartitionSpec>,
    /// The reconfiguration scenario's progress.
    reconfig: Reconfig,
    /// DeleteRecords in flight: request id -> (partition, offset asked).
    deletes_in_flight: BTreeMap<u64, (TopicPartition, Offset)>,
    /// The highest log start offset a DeleteRecords was answered with, per partition and term
    /// of the answering leader: no leader of that term or a later one may serve from below it
    /// (each has the committed command in its log). A deposed leader of an older term that has
    /// not noticed yet may: it serves a stale but committed view, as a Kafka zombie leader does.
    acked_starts: BTreeMap<TopicPartition, BTreeMap<Term, Offset>>,
    /// Moves in flight in the controller's image when last looked: (partition, move id) ->
    /// target.
    moves_seen: BTreeMap<(TopicPartition, u64), Vec<NodeId>>,
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rngs = Rngs::new(opts.seed);
        let bootstrap: Vec<NodeId> = (1..=opts.node_count).collect();
        let node_ids: Vec<NodeId> = (1..=opts.node_count + opts.joiners).collect();
        let mut specs = Vec::new();
        let mut k = 0usize;
        for (topic, parts) in &opts.topics {
            for p in 0..*parts {
                let voters = (0..3)
                    .map(|j| bootstrap[(k + j) % bootstrap.len()])
                    .collect();
                specs.push(PartitionSpec {
                    tp: TopicPartition::new(topic.clone(), p),
                    voters,
                    learners: Vec::new(),
                });
                k += 1;
            }
        }
        let mut fixed = Vec::new();
        if opts.scenario == Scenario::Reconfigure {
            let joiner = *node_ids.last().expect("nodes");
            // The joiner opens it too, as no member: the leader adds it with a conf change.
            let spec = PartitionSpec {
                tp: TopicPartition::new(RECONFIG_TOPIC, 0),
                voters: vec![1, 2, 3],
                learners: Vec::new(),
            };
            specs.push(spec.clone());
            fixed.push(spec);
            let _ = joiner;
        }
        let faulty_disk_node = bootstrap[rngs.disk.gen_range(0..bootstrap.len())];
        let net = SimNetwork::new(&node_ids, &opts.faults, rngs.net.gen());
        let mut slots = BTreeMap::new();
        for &id in &node_ids {
            // Only the faulty-disk node gets bit flips and read errors: a minority of the
            // replicas of any record.
            let mut disk_faults = opts.faults.clone();
            if id != faulty_disk_node {
                disk_faults.read_error_p = 0.0;
                disk_faults.bit_flip_per_s = 0.0;
            }
            let disk = Rc::new(SimDisk::new(&disk_faults, rngs.disk.gen()));
            slots.insert(
                id,
                NodeSlot {
                    node: None,
                    disk,
                    paused_until: None,
                    incarnation: 0,
                    held: Vec::new(),
                    restart_after: None,
                },
            );
        }
        let mut workload = Workload::new(node_ids.clone());
        let all_keys: Vec<TopicPartition> = specs.iter().map(|s| s.tp.clone()).collect();
        for _ in 0..opts.producers_all {
            workload.add_client(Role::Producer { acks: Acks::All }, all_keys.clone());
        }
        for _ in 0..opts.producers_leader {
            workload.add_client(Role::Producer { acks: Acks::Leader }, all_keys.clone());
        }
        for _ in 0..opts.producers_idempotent {
            workload.add_client(Role::IdempotentProducer, all_keys.clone());
        }
        for _ in 0..opts.group_members {
            workload.add_group_member(SIM_GROUP, all_keys.clone());
        }
        for _ in 0..opts.consumers {
            workload.add_client(Role::Consumer, all_keys.clone());
        }
        // The metadata partition gets the white-box checks too (one leader per term, watermarks,
        // committed prefixes), under the index after the workload's partitions.
        let tp_index = specs
            .iter()
            .map(|s| s.tp.clone())
            .chain(std::iter::once(metadata_tp()))
            .enumerate()
            .map(|(i, tp)| (tp, i))
            .collect();
        let mut w = World {
            opts,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rngs,
            net,
            slots,
            node_ids,
            retired: BTreeSet::new(),
            decommissions_sent: 0,
            bootstrap,
            specs,
            workload,
            route: BTreeMap::new(),
            faulty_disk_node,
            trace: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            stats: RunStats::default(),
            tp_index,
            leaders: BTreeMap::new(),
            hw_seen: BTreeMap::new(),
            hw_generations: BTreeMap::new(),
            replica_sets_seen: BTreeMap::new(),
            durable_replicas: BTreeSet::new(),
            committed: BTreeMap::new(),
            committed_values: BTreeMap::new(),
            prefix_checked: BTreeMap::new(),
            heal_us: None,
            in_liveness: false,
            final_started: false,
            partition_active: false,
            script_roles: None,
            admin_sent: 0,
            fenced_seen: BTreeSet::new(),
            wall_offset_ms: BTreeMap::new(),
            churn_created: 0,
            fixed,
            reconfig: Reconfig::default(),
            deletes_in_flight: BTreeMap::new(),
            acked_starts: BTreeMap::new(),
            moves_seen: BTreeMap::new(),
        };
        w.boot();
        w
    }

    fn boot(&mut self) {
        self.draw_clock_offsets();
        for id in self.node_ids.clone() {
            let phase = self.rngs.process.gen_range(0..TICK_US);
            self.schedule(phase, Event::Tick(id));
            if self.bootstrap.contains(&id) {
                self.start_node(id);
            } else {
                let at = self
                    .rngs
                    .membership
                    .gen_range(JOIN_FROM_US..self.opts.fault_phase_us);
                self.schedule(at, Event::Join(id));
            }
        }
        for c in 0..self.workload.clients.len() {
            let t = self.rngs.workload.gen_range(0..50_000);
            self.schedule(t, Event::ClientWake(c));
        }
        if self.opts.scenario == Scenario::Reconfigure {
            self.schedule(2_000_000, Event::Reconfigure);
        }
        if matches!(
            self.opts.scenario,
            Scenario::Swarm | Scenario::ClockSteps | Scenario::Reconfigure
        ) {
            self.schedule(FAULT_TICK_US, Event::FaultTick);
        } else {
            self.schedule_script();
        }
        self.schedule(PREFIX_CHECK_US, Event::PrefixCheck);
        self.schedule(ADMIN_EVERY_US, Event::CreateTopics);
        if self.opts.scenario == Scenario::Swarm {
            self.schedule(CHURN_EVERY_US, Event::Churn);
            self.schedule(DELETE_RECORDS_EVERY_US, Event::DeleteRecords);
            if self.opts.moves {
                let first = self.rngs.moves.gen_range(MOVES_FROM_US..2 * MOVES_FROM_US);
                self.schedule(first, Event::Reassign);
            }
        }
        self.schedule(self.opts.fault_phase_us, Event::Liveness);
        let end = self.opts.fault_phase_us + self.opts.liveness_us;
        self.schedule(end, Event::End);
    }

    /// Runs to the end and checks everything.
    pub fn run(mut self) -> SimReport {
        while let Some(Reverse(Scheduled { at: t, ev, .. })) = self.queue.pop() {
            assert!(t >= self.now, "time went backwards");
            self.now = t;
            self.stats.events += 1;
            if matches!(*ev, Event::End) {
                break;
            }
            self.handle(*ev);
        }
        self.finish()
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev: Box::new(ev),
        }));
    }

    fn trace(&mut self, tag: u64, a: u64, b: u64) {
        for x in [self.now, tag, a, b] {
            for byte in x.to_le_bytes() {
                self.trace ^= byte as u64;
                self.trace = self.trace.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Reports what the workload's own checks found.
    pub(super) fn workload_violations(&mut self) {
        for v in std::mem::take(&mut self.workload.violations) {
            self.violation(v);
        }
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("t={}ms {v}", self.now / 1000));
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Tick(id) => self.tick(id),
            Event::Deliver(env) => self.deliver(env),
            Event::Arrive {
                node,
                client,
                request_id,
                request,
            } => self.arrive(node, client, request_id, request),
            Event::Reply {
                client,
                request_id,
                response,
            } => self.client_reply(client, request_id, response),
            Event::ClientWake(c) => self.client_wake(c),
            Event::FaultTick => {
                if !self.in_liveness {
                    self.fault_tick();
                    self.schedule(self.now + FAULT_TICK_US, Event::FaultTick);
                }
            }
            Event::Join(id) => {
                if self.slots[&id].node.is_none() && self.slots[&id].incarnation == 0 {
                    self.start_node(id);
                }
            }
            Event::Restart(id) => {
                self.trace(6, id, 0);
                if self.slots[&id].node.is_none() && !self.retired.contains(&id) {
                    self.start_node(id);
                }
            }
            Event::ForceCrash(id, incarnation) => self.force_crash(id, incarnation),
            Event::StopNow(id, incarnation, down) => self.stop_now(id, incarnation, down),
            Event::CorrelatedCrash => self.correlated_crash(),
            Event::Resume(id) => {
                self.trace(7, id, 0);
                self.resume(id);
            }
            Event::Heal => {
                self.trace(8, 0, 0);
                self.net.heal();
                self.partition_active = false;
            }
            Event::DiskFullEnd(id) => {
                self.slots[&id].disk.set_capacity(None);
            }
            Event::PrefixCheck => {
                self.note_moves();
                self.check_committed_prefixes();
                self.check_metadata();
                self.check_settings();
                self.schedule(self.now + PREFIX_CHECK_US, Event::PrefixCheck);
            }
            Event::CreateTopics => self.create_topics(),
            Event::Reconfigure => {
                self.reconfigure();
                if !self.reconfig.done {
                    self.schedule(self.now + RECONFIG_EVERY_US, Event::Reconfigure);
                }
            }
            Event::Churn => {
                if !self.in_liveness {
                    self.churn();
                    self.schedule(self.now + CHURN_EVERY_US, Event::Churn);
                }
            }
            Event::DeleteRecords => {
                if !self.in_liveness {
                    self.delete_records();
                    self.schedule(self.now + DELETE_RECORDS_EVERY_US, Event::DeleteRecords);
                }
            }
            Event::Reassign => {
                if !self.in_liveness {
                    self.reassign();
                    let next = self
                        .rngs
                        .moves
                        .gen_range(MOVE_EVERY_US / 2..MOVE_EVERY_US * 3 / 2);
                    self.schedule(self.now + next, Event::Reassign);
                }
            }
            Event::Liveness => self.start_liveness(),
            Event::StopProducers => self.stop_producers(),
            Event::FinalReads => self.start_final_reads(),
            Event::Script(step) => self.script(step),
            Event::End => unreachable!("handled by run"),
        }
    }
}

/// Runs one simulation.
pub fn run(opts: SimOptions) -> SimReport {
    World::new(opts).run()
}

/// Runs one simulation; a panic inside it (a failed assertion in core or the simulator) comes
/// back as a failure text naming the seed, the drawn faults, the replay command and the panic.
pub fn run_catching(opts: SimOptions) -> Result<SimReport, String> {
    let header = format!(
        "seed={} scenario={:?}\n  faults: {}\n  replay: {}",
        opts.seed,
        opts.scenario,
        opts.faults,
        opts.replay_command()
    );
    std::panic::catch_unwind(|| run(opts)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("simulation PANICKED {header}\n  panic: {msg}")
    })
}
