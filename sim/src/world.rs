//! The discrete-event simulator: N core nodes, their simulated disks, a simulated network,
//! clients, a fault schedule, white-box checks and the liveness phase.
//!
//! ## Fault model
//! One `u64` seed derives everything through ChaCha8: which faults are on and at what rates
//! (swarm testing, [`FaultConfig::draw`]), the schedule of crashes, pauses, partitions, clogs,
//! disk-full periods and bit flips, message latencies, drops and duplicates, and the workload.
//! Bit flips and read errors are confined to one "faulty disk" node (a minority of the replicas
//! of any record); flips hit sealed segments at rest, so a crash-restart meets them in recovery.
//!
//! ## Phases
//! 1. **Safety** (`fault_phase_us`): faults fire while producers and consumers run; white-box
//!    checks run after every node step.
//! 2. **Liveness**: the network heals, every node restarts or resumes, disk faults stop. Within a
//!    bound every partition must commit new acks=all writes, and final readers must read every
//!    partition up to its high watermark.
//! 3. The Jepsen checker runs over the recorded history.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;

use raft::StateRole;
use railyard_core::api::{Acks, Request, Response};
use railyard_core::batch::decode_records;
use railyard_core::disk::{join_path, Disk};
use railyard_core::log::LogConfig;
use railyard_core::metadata::metadata_tp;
use railyard_core::network::{Envelope, Network};
use railyard_core::node::{BrokerEndpoint, Node, NodeConfig, PartitionSpec};
use railyard_core::replica::ReplicaConfig;
use railyard_core::types::{NodeId, Offset, RaftIndex, Term, TopicPartition};
use railyard_jepsen::{check, CheckOptions, CheckReport, ConsumerMode, History};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::{DiskStats, SimDisk};
use crate::faults::{event_due, FaultConfig};
use crate::net::{NetStats, PartitionKind, SimNetwork};
use crate::workload::{record_value, Role, Workload, WALL_EPOCH_MS};

/// Simulated time between two raft ticks of a node.
pub const TICK_US: u64 = 10_000;
/// How often the fault schedule is evaluated.
const FAULT_TICK_US: u64 = 100_000;
/// How often the committed-prefix check reads newly committed entries.
const PREFIX_CHECK_US: u64 = 250_000;
/// Latency between a client and a node (clients are not partitioned from nodes).
const CLIENT_LATENCY_US: (u64, u64) = (100, 1_000);
/// Most consecutive steps one input may trigger (each step is one raft `Ready`).
const STEPS_PER_INPUT_MAX: usize = 8;

/// One ChaCha stream per subsystem, all from the run's seed: a change in how often one
/// subsystem draws (a new fault, a different workload) does not shift another's draws.
struct Rngs {
    /// Crashes, pauses, restarts, tick phases.
    process: ChaCha8Rng,
    /// Partitions and clogs (the network's own latencies and drops use a seed drawn here).
    net: ChaCha8Rng,
    /// The faulty-disk node, bit flips, disk-full periods, and the disks' own seeds.
    disk: ChaCha8Rng,
    /// Client think times, latencies and key choices.
    workload: ChaCha8Rng,
    /// Wall-clock skews and steps.
    clock: ChaCha8Rng,
}

impl Rngs {
    fn new(seed: u64) -> Rngs {
        let stream = |n: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            r.set_stream(n);
            r
        };
        Rngs {
            process: stream(1),
            net: stream(2),
            disk: stream(3),
            workload: stream(4),
            clock: stream(5),
        }
    }
}

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

/// The partition the reconfiguration scenario changes: outside the metadata log (it is the
/// raft group's own configuration that moves, not the assignment).
const RECONFIG_TOPIC: &str = "r";
/// How often the reconfiguration driver looks at the configuration and proposes the next change.
const RECONFIG_EVERY_US: u64 = 250_000;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub node_count: u64,
    pub topics: Vec<(String, i32)>,
    pub faults: FaultConfig,
    pub fault_phase_us: u64,
    pub liveness_us: u64,
    pub producers_all: usize,
    pub producers_leader: usize,
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
        SimOptions {
            seed,
            node_count,
            topics: vec![("a".into(), 2), ("b".into(), 2)],
            faults,
            fault_phase_us: 10_000_000,
            liveness_us: 10_000_000,
            producers_all: 3,
            producers_leader: 1,
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

/// How many nodes (the first ones) vote in the metadata group; the others are learners.
const METADATA_VOTERS_MAX: usize = 3;
/// Request ids of the simulator's admin client (creating the workload's topics in the metadata
/// log); the workload's own ids count up from 1.
const ADMIN_REQUEST_BASE: u64 = 1 << 62;
/// How often the admin client retries creating the topics until they exist.
const ADMIN_EVERY_US: u64 = 300_000;
/// How often the admin client creates or deletes a churn topic during the fault phase.
const CHURN_EVERY_US: u64 = 700_000;
/// Most churn topics alive at once.
const CHURN_TOPICS_MAX: usize = 3;
/// Share of the swarm's process stops that are graceful (SIGTERM: leaderships handed over)
/// rather than crashes.
const GRACEFUL_STOP_P: f64 = 0.25;
/// How long a gracefully stopping node keeps running to hand its leaderships over (the
/// runtime waits up to 3 s; the handover takes about one round trip).
const HANDOVER_US: u64 = 300_000;
/// How often a leader hands leadership back to its partition's preferred replica.
const PREFERRED_LEADER_CHECK_MS: i64 = 2_000;

/// The nodes' disk reserve (`NodeConfig::min_free_bytes`).
const MIN_FREE_BYTES: u64 = 64 * 1024;
/// What the disk-full scenario leaves free: under half the reserve, so both leaders and
/// followers refuse once they notice.
const SCRIPTED_HEADROOM: u64 = MIN_FREE_BYTES * 3 / 8;

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
    /// Topic creations and deletions the admin client asked for (churn).
    pub churn_requests: u64,
    /// Replicas a node created only at a later reconcile (their first open failed), summed
    /// over the nodes up at the end.
    pub replicas_created_late: u64,
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

#[derive(Debug, Clone, Copy)]
enum ScriptStep {
    CrashLeader,
    IsolateLeader,
    CrashFollower,
    CorruptFollower,
    FillFollowerDisk,
    FillLeaderDisk,
    /// Remember tp0's leader, a follower and the third replica; cut the third one off.
    PickRolesIsolateThird,
    KillFollowerMidWrite,
    CrashPickedLeader,
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

/// Collects envelopes during a node step.
#[derive(Default)]
struct Collect(Vec<Envelope>);

impl Network for Collect {
    fn send(&mut self, envelope: Envelope) {
        self.0.push(envelope);
    }
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
    node_ids: Vec<NodeId>,
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
}

/// Where the reconfiguration scenario stands.
#[derive(Debug, Default)]
struct Reconfig {
    /// The voter being removed, chosen when the joint change is first proposed.
    removed: Option<NodeId>,
    /// Conf changes proposed (some are refused or lost and proposed again).
    proposals: u64,
    done: bool,
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rngs = Rngs::new(opts.seed);
        let node_ids: Vec<NodeId> = (1..=opts.node_count).collect();
        let mut specs = Vec::new();
        let mut k = 0usize;
        for (topic, parts) in &opts.topics {
            for p in 0..*parts {
                let voters = (0..3).map(|j| node_ids[(k + j) % node_ids.len()]).collect();
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
        let faulty_disk_node = node_ids[rngs.disk.gen_range(0..node_ids.len())];
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
        };
        w.boot();
        w
    }

    fn boot(&mut self) {
        let skew = self.opts.faults.clock_skew_ms;
        for id in self.node_ids.clone() {
            let offset = if skew > 0 {
                self.rngs.clock.gen_range(-skew..=skew)
            } else {
                0
            };
            self.wall_offset_ms.insert(id, offset);
        }
        for id in self.node_ids.clone() {
            self.start_node(id);
            let phase = self.rngs.process.gen_range(0..TICK_US);
            self.schedule(phase, Event::Tick(id));
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
        }
        self.schedule(self.opts.fault_phase_us, Event::Liveness);
        let end = self.opts.fault_phase_us + self.opts.liveness_us;
        self.schedule(end, Event::End);
    }

    fn schedule_script(&mut self) {
        let s = |w: &mut World, at: u64, step| w.schedule(at, Event::Script(step));
        match self.opts.scenario {
            Scenario::LeaderCrashMidWrite => {
                s(self, 3_000_000, ScriptStep::CrashLeader);
                s(self, 6_000_000, ScriptStep::CrashLeader);
            }
            Scenario::PartitionedLeader => s(self, 3_000_000, ScriptStep::IsolateLeader),
            Scenario::TornWriteFollower => {
                s(self, 2_000_000, ScriptStep::CrashFollower);
                s(self, 5_000_000, ScriptStep::CrashFollower);
            }
            Scenario::CorruptReplica => s(self, 4_000_000, ScriptStep::CorruptFollower),
            Scenario::DiskFull => {
                s(self, 2_000_000, ScriptStep::FillFollowerDisk);
                s(self, 5_000_000, ScriptStep::FillLeaderDisk);
            }
            Scenario::Swarm | Scenario::ClockSteps | Scenario::Reconfigure => {}
            Scenario::FollowerThenLeaderCrash => {
                s(self, 2_000_000, ScriptStep::PickRolesIsolateThird);
                s(self, 2_500_000, ScriptStep::KillFollowerMidWrite);
                s(self, 3_200_000, ScriptStep::CrashPickedLeader);
                self.schedule(3_300_000, Event::Heal);
            }
        }
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

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Tick(id) => {
                self.trace(1, id, 0);
                self.schedule(self.now + TICK_US, Event::Tick(id));
                if self.is_paused(id) {
                    return;
                }
                let now_ms = (self.now / 1000) as i64;
                let res = match self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
                    Some(node) => {
                        node.tick(now_ms, WALL_EPOCH_MS + now_ms + self.wall_offset_ms[&id])
                    }
                    None => return,
                };
                if let Err(e) = res {
                    self.fail_stop(id, &e.to_string());
                    return;
                }
                self.pump(id);
            }
            Event::Deliver(env) => {
                let (from, to) = (env.from, env.to);
                self.trace(2, from, to);
                if !self.net.on_deliver(from, to) {
                    return;
                }
                if self.is_paused(to) {
                    self.slots
                        .get_mut(&to)
                        .unwrap()
                        .held
                        .push(Event::Deliver(env));
                    return;
                }
                let Some(node) = self.slots.get_mut(&to).and_then(|s| s.node.as_mut()) else {
                    return;
                };
                let refused = node.stats().appends_refused_disk_low;
                node.handle_envelope(env);
                self.stats.appends_refused_disk_low +=
                    node.stats().appends_refused_disk_low - refused;
                self.pump(to);
            }
            Event::Arrive {
                node,
                client,
                request_id,
                request,
            } => {
                self.trace(3, node, request_id);
                if self.is_paused(node) {
                    let ev = Event::Arrive {
                        node,
                        client,
                        request_id,
                        request,
                    };
                    self.slots.get_mut(&node).unwrap().held.push(ev);
                    return;
                }
                let now_ms = (self.now / 1000) as i64;
                let Some(n) = self.slots.get_mut(&node).and_then(|s| s.node.as_mut()) else {
                    return; // connection refused: the client times out
                };
                // Request ids are unique per run; the client is recovered from the reply map.
                n.handle_request(now_ms, request_id, request);
                self.route.insert(request_id, client);
                self.pump(node);
            }
            Event::Reply {
                client,
                request_id,
                response,
            } => {
                self.trace(4, client as u64, request_id);
                self.workload
                    .handle_reply(client, request_id, response, self.now);
                self.client_next(client);
            }
            Event::ClientWake(c) => {
                self.trace(5, c as u64, 0);
                // Either the in-flight request timed out or the client was idle: go on.
                if self.workload.handle_timeout(c, self.now)
                    || self.workload.clients[c].in_flight.is_none()
                {
                    self.client_next(c);
                }
            }
            Event::FaultTick => {
                if !self.in_liveness {
                    self.fault_tick();
                    self.schedule(self.now + FAULT_TICK_US, Event::FaultTick);
                }
            }
            Event::Restart(id) => {
                self.trace(6, id, 0);
                if self.slots[&id].node.is_none() {
                    self.start_node(id);
                }
            }
            Event::ForceCrash(id, incarnation) => {
                let slot = &self.slots[&id];
                if slot.node.is_some() && slot.incarnation == incarnation {
                    let after = slot.restart_after.unwrap_or(300_000);
                    self.crash_now(id, after);
                }
            }
            Event::StopNow(id, incarnation, down) => self.stop_now(id, incarnation, down),
            Event::CorrelatedCrash => {
                if self.in_liveness {
                    return;
                }
                let up = self.up_nodes();
                let leaders: Vec<NodeId> = up
                    .iter()
                    .copied()
                    .filter(|id| {
                        let n = self.slots[id].node.as_ref().expect("up");
                        n.replicas().any(|r| r.is_leader())
                    })
                    .collect();
                let pool = if leaders.is_empty() { up } else { leaders };
                if !pool.is_empty() {
                    let id = pool[self.rngs.process.gen_range(0..pool.len())];
                    let down = self.opts.faults.crash_down_us.draw(&mut self.rngs.process);
                    self.crash_now(id, down);
                }
            }
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
                self.check_committed_prefixes();
                self.check_metadata();
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
            Event::Liveness => self.start_liveness(),
            Event::StopProducers => {
                for c in self.workload.clients.iter_mut() {
                    if matches!(c.role, Role::Producer { .. }) {
                        c.stopped = true;
                    }
                }
                self.check_liveness_writes();
                self.schedule(self.now + 1_000_000, Event::FinalReads);
            }
            Event::FinalReads => self.start_final_reads(),
            Event::Script(step) => self.script(step),
            Event::End => unreachable!("handled by run"),
        }
    }
}

impl World {
    fn is_paused(&self, id: NodeId) -> bool {
        self.slots[&id].paused_until.is_some()
    }

    fn node_config(&self, id: NodeId, incarnation: u64) -> NodeConfig {
        NodeConfig {
            id,
            seed: self.opts.seed ^ (id << 32) ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            replica: ReplicaConfig {
                produce_timeout_ms: 1_500,
                isr_lag_ms: 1_000,
                ..ReplicaConfig::default()
            },
            log: self.opts.log.clone(),
            // Every partition comes from the metadata log, as on real nodes: the admin client
            // creates the workload's topics (with the specs' assignments) and churns others,
            // so replica creation and deletion run under the same faults as everything else.
            // Fixed partitions: on their voters, and on the reconfiguration's joiner.
            partitions: self
                .fixed
                .iter()
                .filter(|s| s.voters.contains(&id) || Some(&id) == self.node_ids.last())
                .cloned()
                .collect(),
            retention_check_ms: 1_000,
            metadata_voters: self
                .node_ids
                .iter()
                .copied()
                .take(METADATA_VOTERS_MAX)
                .collect(),
            brokers: self.node_ids.clone(),
            endpoint: Some(BrokerEndpoint {
                host: format!("sim-node-{id}"),
                port: 9092,
                rack: Some(format!("rack-{}", id % 2)),
            }),
            heartbeat_ms: 100,
            session_timeout_ms: 800,
            preferred_leader_check_ms: Some(PREFERRED_LEADER_CHECK_MS),
            min_free_bytes: MIN_FREE_BYTES,
        }
    }

    fn start_node(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).unwrap();
        slot.incarnation += 1;
        let inc = slot.incarnation;
        let disk: Rc<dyn Disk> = slot.disk.clone();
        let config = self.node_config(id, inc);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        match Node::open(config, disk, &logger) {
            Ok(node) => {
                for (tp, report) in node.open_reports() {
                    if report.corruption {
                        self.stats.corruption_recoveries += 1;
                    } else if report.truncated_from_index.is_some() {
                        self.stats.torn_recoveries += 1;
                    }
                    let key = (id, tp_key(&mut self.tp_index, tp));
                    let hw = node.replica(tp).unwrap().high_watermark();
                    let repairing = node.replica(tp).unwrap().is_repairing();
                    if report.corruption || report.commit_clamped_from.is_some() || repairing {
                        // Repair legitimately lowers this replica's own watermark (also when an
                        // earlier, failed start already truncated and persisted the repair).
                        self.hw_seen.insert(key, hw);
                        let checked = node.replica(tp).unwrap().storage().durable_commit();
                        if let Some(c) = self.prefix_checked.get_mut(&(id, tp.clone())) {
                            *c = (*c).min(checked);
                        }
                    } else if let Some(prev) = self.hw_seen.get(&key) {
                        if hw < *prev {
                            self.violation(format!(
                                "node {id} {tp}: high watermark went backwards across restart {prev} -> {hw}"
                            ));
                        }
                    }
                }
                self.slots.get_mut(&id).unwrap().node = Some(node);
                self.stats.restarts += 1;
                self.pump(id);
            }
            Err(_) => {
                // E.g. a read error during recovery: try again later, as a supervisor would.
                self.stats.failed_restarts += 1;
                self.schedule(self.now + 500_000, Event::Restart(id));
            }
        }
    }

    /// Crash: the process dies. Half the time it dies right now, between two steps; otherwise it
    /// dies in the middle of one of its next steps, after a few disk operations, so that the
    /// step's writes are unsynced and may be lost or torn.
    fn crash(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() || slot.restart_after.is_some() {
            return;
        }
        if self.rngs.process.gen_bool(0.5) {
            self.crash_now(id, restart_after);
            return;
        }
        let ops = self.rngs.process.gen_range(1..16);
        self.arm_mid_step_crash(id, ops, restart_after);
    }

    /// Makes `id` die after `ops` more mutating disk operations (inside a step, so that step's
    /// writes are unsynced), or in 500 ms if it does not write that much by then.
    fn arm_mid_step_crash(&mut self, id: NodeId, ops: u64, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        slot.disk.kill_after_ops(Some(ops));
        slot.restart_after = Some(restart_after);
        let inc = slot.incarnation;
        self.schedule(self.now + 500_000, Event::ForceCrash(id, inc));
    }

    /// A graceful stop (SIGTERM), as the runtime does it: hand every leadership to a caught-up
    /// follower, keep running for the handover window, then answer what is pending and exit.
    /// Unlike a crash, nothing written is lost (the page cache survives the process).
    fn graceful_stop(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if slot.restart_after.is_some() || slot.paused_until.is_some() {
            return;
        }
        node.transfer_all_leaderships();
        let inc = slot.incarnation;
        self.trace(15, id, inc);
        self.pump(id);
        let at = self.now + HANDOVER_US;
        self.schedule(at, Event::StopNow(id, inc, restart_after));
    }

    /// The end of a graceful stop's handover window.
    fn stop_now(&mut self, id: NodeId, incarnation: u64, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.incarnation != incarnation || slot.paused_until.is_some() {
            return;
        }
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        node.abandon_pending();
        self.pump(id);
        let slot = self.slots.get_mut(&id).unwrap();
        slot.node = None;
        slot.restart_after = None;
        slot.held.clear();
        self.stats.graceful_stops += 1;
        self.trace(16, id, 0);
        self.schedule(self.now + restart_after, Event::Restart(id));
    }

    /// The process dies now; unsynced writes are lost or torn.
    fn crash_now(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() {
            return;
        }
        slot.node = None;
        slot.paused_until = None;
        slot.restart_after = None;
        slot.held.clear();
        slot.disk.crash();
        self.stats.crashes += 1;
        self.trace(9, id, 0);
        self.schedule(self.now + restart_after, Event::Restart(id));
    }

    /// A node's step failed (disk full, or the armed mid-step crash): the process dies.
    fn fail_stop(&mut self, id: NodeId, _why: &str) {
        match self.slots[&id].restart_after {
            Some(after) => {
                self.stats.mid_step_crashes += 1;
                self.crash_now(id, after);
                if self.opts.scenario == Scenario::Swarm && self.rngs.process.gen_bool(0.5) {
                    let at = self.now + self.rngs.process.gen_range(50_000..700_000);
                    self.schedule(at, Event::CorrelatedCrash);
                }
            }
            None => {
                self.stats.fail_stops += 1;
                self.crash_now(id, 300_000);
            }
        }
    }

    fn pause(&mut self, id: NodeId, until: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() || slot.paused_until.is_some() {
            return;
        }
        slot.paused_until = Some(until);
        self.stats.pauses += 1;
        self.schedule(until, Event::Resume(id));
    }

    fn resume(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.paused_until.take().is_none() {
            return;
        }
        let held = std::mem::take(&mut slot.held);
        for ev in held {
            self.handle(ev);
        }
    }

    /// Steps a node until it has nothing ready, then routes what it produced.
    fn pump(&mut self, id: NodeId) {
        let mut out = Collect::default();
        let mut replies = Vec::new();
        let mut failed = None;
        {
            let slot = self.slots.get_mut(&id).unwrap();
            let Some(node) = slot.node.as_mut() else {
                return;
            };
            // One bounded pump per input; work left over waits for the next input or tick,
            // as a busy real node's would.
            if let Err(e) = node.pump(&mut out, STEPS_PER_INPUT_MAX) {
                failed = Some(e.to_string());
            }
            while let Some(r) = node.poll_reply() {
                replies.push(r);
            }
        }
        let busy = self.slots[&id].disk.take_busy_us();
        let at = self.now + busy;
        for env in out.0 {
            let (from, to) = (env.from, env.to);
            self.stats.messages_sent += 1;
            let deliveries = self.net.send(at, from, to, env);
            if deliveries.is_empty() {
                self.stats.messages_dropped += 1;
            }
            for (t, env) in deliveries {
                self.schedule(t, Event::Deliver(env));
            }
        }
        for (request_id, response) in replies {
            let Some(client) = self.route.remove(&request_id) else {
                continue;
            };
            let lat = self
                .rngs
                .workload
                .gen_range(CLIENT_LATENCY_US.0..CLIENT_LATENCY_US.1);
            self.schedule(
                at + lat,
                Event::Reply {
                    client,
                    request_id,
                    response,
                },
            );
        }
        self.check_node(id);
        if let Some(why) = failed {
            self.fail_stop(id, &why);
        }
    }

    fn client_next(&mut self, c: usize) {
        if let Some((node, request_id, request)) =
            self.workload
                .next_request(c, self.now, &mut self.rngs.workload)
        {
            let lat = self
                .rngs
                .workload
                .gen_range(CLIENT_LATENCY_US.0..CLIENT_LATENCY_US.1);
            self.schedule(
                self.now + lat,
                Event::Arrive {
                    node,
                    client: c,
                    request_id,
                    request,
                },
            );
            let deadline = self.workload.clients[c]
                .in_flight
                .as_ref()
                .expect("just issued")
                .deadline_us;
            self.schedule(deadline, Event::ClientWake(c));
        } else if !self.workload.clients[c].stopped && self.workload.clients[c].in_flight.is_none()
        {
            let think = self.rngs.workload.gen_range(1_000..30_000);
            self.schedule(self.now + think, Event::ClientWake(c));
        }
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        self.node_ids
            .iter()
            .copied()
            .filter(|id| self.slots[id].node.is_some())
            .collect()
    }

    fn fault_tick(&mut self) {
        let f = self.opts.faults.clone();
        let dt = FAULT_TICK_US;
        let up = self.up_nodes();
        if !up.is_empty() && event_due(&mut self.rngs.process, f.crash_per_s, dt) {
            let id = up[self.rngs.process.gen_range(0..up.len())];
            let down = f.crash_down_us.draw(&mut self.rngs.process);
            if self.rngs.process.gen_bool(GRACEFUL_STOP_P) {
                self.graceful_stop(id, down);
            } else {
                self.crash(id, down);
            }
        }
        if !up.is_empty() && event_due(&mut self.rngs.process, f.pause_per_s, dt) {
            let id = up[self.rngs.process.gen_range(0..up.len())];
            let until = self.now + f.pause_us.draw(&mut self.rngs.process);
            self.pause(id, until);
        }
        if !self.partition_active && event_due(&mut self.rngs.net, f.partition_per_s, dt) {
            let kind = self.net.random_partition();
            self.trace(10, 0, 0);
            let _ = kind;
            self.partition_active = true;
            self.stats.partitions += 1;
            let heal = self.now + f.partition_us.draw(&mut self.rngs.net);
            self.schedule(heal, Event::Heal);
        }
        if event_due(&mut self.rngs.net, f.clog_per_s, dt)
            && self.net.random_clog(self.now).is_some()
        {
            self.stats.clogs += 1;
        }
        if event_due(&mut self.rngs.disk, f.bit_flip_per_s, dt)
            && self.flip_sealed_segment(self.faulty_disk_node)
            && self.rngs.disk.gen_bool(0.5)
        {
            // A flip at rest is seen by the next cold start: often make that soon.
            let down = f.crash_down_us.draw(&mut self.rngs.disk);
            self.crash(self.faulty_disk_node, down);
        }
        if event_due(&mut self.rngs.clock, f.clock_step_per_s, dt) {
            let id = self.node_ids[self.rngs.clock.gen_range(0..self.node_ids.len())];
            let step = if self.rngs.clock.gen_bool(0.5) {
                f.clock_step_ms
            } else {
                -f.clock_step_ms
            };
            *self
                .wall_offset_ms
                .get_mut(&id)
                .expect("every node has a clock") += step;
            self.stats.clock_steps += 1;
            self.trace(13, id, step as u64);
        }
        if !up.is_empty() && event_due(&mut self.rngs.disk, f.disk_full_per_s, dt) {
            let id = up[self.rngs.disk.gen_range(0..up.len())];
            let duration = f.disk_full_us.draw(&mut self.rngs.disk);
            self.fill_disk(id, duration, 0);
        }
    }

    /// Flips one bit in a sealed (not the newest) segment of `id`'s disk. A flip in the newest
    /// segment's synced tail is indistinguishable from a torn write without a durable record of
    /// the synced position; see docs/architecture.md.
    fn flip_sealed_segment(&mut self, id: NodeId) -> bool {
        let disk = self.slots[&id].disk.clone();
        let mut sealed: BTreeSet<String> = BTreeSet::new();
        for dir in disk.list_dirs("").unwrap_or_default() {
            let mut logs: Vec<String> = disk
                .list(&dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.ends_with(".log"))
                .collect();
            logs.pop();
            sealed.extend(logs.into_iter().map(|n| join_path(&dir, &n)));
        }
        if sealed.is_empty() {
            return false;
        }
        let flipped = disk.flip_random_bit(|p| sealed.contains(p)).is_some();
        if flipped && self.slots[&id].node.is_none() {
            // The node is down: its next start reads the disk cold, so the flip must be visible
            // then. A crash of a stopped disk loses nothing (nothing is unsynced) and drops the
            // cached image.
            disk.crash();
        }
        if flipped {
            self.stats.bit_flips += 1;
            self.trace(11, id, 0);
        }
        flipped
    }

    /// The disk of `id` fills up for a while, leaving `headroom` bytes. With none, a write
    /// racing the node's next free-space check fails with ENOSPC (fail-stop). With some below
    /// half the reserve (a disk that filled gradually), the check usually comes first: a
    /// leader then refuses produces and a follower drops appends.
    fn fill_disk(&mut self, id: NodeId, duration_us: u64, headroom: u64) {
        let disk = &self.slots[&id].disk;
        disk.set_capacity(Some(disk.used_bytes() + headroom));
        self.stats.disk_full_periods += 1;
        self.schedule(self.now + duration_us, Event::DiskFullEnd(id));
    }

    fn leader_of(&self, tp: &TopicPartition) -> Option<NodeId> {
        self.up_nodes().into_iter().find(|id| {
            self.slots[id]
                .node
                .as_ref()
                .and_then(|n| n.replica(tp))
                .is_some_and(|r| r.is_leader())
        })
    }

    fn script(&mut self, step: ScriptStep) {
        let tp = self.specs[0].tp.clone();
        let leader = self.leader_of(&tp);
        let follower = self.specs[0]
            .voters
            .iter()
            .copied()
            .find(|v| Some(*v) != leader && self.slots[v].node.is_some());
        match step {
            ScriptStep::CrashLeader => {
                if let Some(l) = leader {
                    self.crash(l, 1_500_000);
                }
            }
            ScriptStep::IsolateLeader => {
                if let Some(l) = leader {
                    self.net.partition(&PartitionKind::IsolateOne(l));
                    self.partition_active = true;
                    self.stats.partitions += 1;
                    self.schedule(self.now + 3_000_000, Event::Heal);
                }
            }
            ScriptStep::CrashFollower => {
                if let Some(f) = follower {
                    self.crash(f, 1_000_000);
                }
            }
            ScriptStep::CorruptFollower => {
                if let Some(f) = follower {
                    // Crash first so the flips land on the image the restart reads.
                    self.crash_now(f, 1_000_000);
                    for _ in 0..3 {
                        self.flip_sealed_segment(f);
                    }
                }
            }
            ScriptStep::FillFollowerDisk => {
                if let Some(f) = follower {
                    self.fill_disk(f, 2_000_000, SCRIPTED_HEADROOM);
                }
            }
            ScriptStep::FillLeaderDisk => {
                if let Some(l) = leader {
                    self.fill_disk(l, 2_000_000, SCRIPTED_HEADROOM);
                }
            }
            ScriptStep::PickRolesIsolateThird => {
                let (Some(l), Some(f)) = (leader, follower) else {
                    return;
                };
                let third = self.specs[0]
                    .voters
                    .iter()
                    .copied()
                    .find(|v| *v != l && *v != f)
                    .expect("three voters");
                self.script_roles = Some((l, f, third));
                self.net.partition(&PartitionKind::IsolateOne(third));
                self.partition_active = true;
                self.stats.partitions += 1;
            }
            ScriptStep::KillFollowerMidWrite => {
                let Some((_, f, _)) = self.script_roles else {
                    return;
                };
                // Die within the next step that writes: after its first, second or third
                // mutating disk operation, so between a write and its sync.
                let ops = self.rngs.process.gen_range(1..=3);
                self.arm_mid_step_crash(f, ops, 1_500_000);
            }
            ScriptStep::CrashPickedLeader => {
                if let Some((l, _, _)) = self.script_roles {
                    self.crash_now(l, 5_000_000);
                }
            }
        }
    }

    fn start_liveness(&mut self) {
        self.in_liveness = true;
        self.heal_us = Some(self.now);
        self.net.heal();
        self.net.set_faults_enabled(false);
        self.partition_active = false;
        for id in self.node_ids.clone() {
            let slot = &self.slots[&id];
            slot.disk.set_faults_enabled(false);
            slot.disk.set_capacity(None);
            if slot.restart_after.is_some() {
                self.crash_now(id, 0);
                self.start_node(id);
            }
            let slot = &self.slots[&id];
            if slot.paused_until.is_some() {
                self.resume(id);
            }
            if self.slots[&id].node.is_none() {
                self.start_node(id);
            }
        }
        let stop = self.now + self.opts.liveness_us / 2;
        self.schedule(stop, Event::StopProducers);
    }

    /// Liveness, part 1: after the heal every partition committed new acks=all writes.
    fn check_liveness_writes(&mut self) {
        let heal = self.heal_us.expect("liveness started");
        for spec in self.specs.clone() {
            let last = self.workload.last_ok_send_us.get(&spec.tp).copied();
            if last.is_none_or(|t| t <= heal) {
                self.violation(format!(
                    "liveness: no acks=all write to {} committed within {} ms after the heal",
                    spec.tp,
                    (self.now - heal) / 1000
                ));
            }
        }
    }

    /// Liveness, part 2: fresh readers read every partition up to its high watermark.
    fn start_final_reads(&mut self) {
        self.final_started = true;
        let mut targets = BTreeMap::new();
        for spec in &self.specs {
            let hw = self
                .up_nodes()
                .iter()
                .filter_map(|id| self.slots[id].node.as_ref()?.replica(&spec.tp))
                .map(|r| r.high_watermark())
                .max()
                .unwrap_or(0);
            targets.insert(spec.tp.clone(), hw);
        }
        for c in self.workload.clients.iter_mut() {
            if matches!(c.role, Role::Consumer) {
                c.stopped = true;
            }
        }
        let keys: Vec<TopicPartition> = self.specs.iter().map(|s| s.tp.clone()).collect();
        let id = self.workload.add_client(Role::Consumer, keys);
        self.workload.clients[id].final_targets = Some(targets);
        self.client_next(id);
    }

    /// The admin client: asks the node that believes it is the controller to record each
    /// workload topic not yet in its image, with the fixed layout's assignment; retried until
    /// every topic exists.
    fn create_topics(&mut self) {
        let mut topics: BTreeMap<String, Vec<Vec<NodeId>>> = BTreeMap::new();
        for s in self.specs.iter().filter(|s| !self.fixed.contains(s)) {
            let a = topics.entry(s.tp.topic.clone()).or_default();
            assert_eq!(
                a.len(),
                s.tp.partition as usize,
                "specs are in partition order"
            );
            a.push(s.voters.clone());
        }
        let Some(id) = self.controller_node() else {
            self.schedule(self.now + ADMIN_EVERY_US, Event::CreateTopics);
            return;
        };
        let node = self
            .slots
            .get_mut(&id)
            .and_then(|s| s.node.as_mut())
            .unwrap();
        let missing: Vec<(String, Vec<Vec<NodeId>>)> = topics
            .into_iter()
            .filter(|(t, _)| !node.metadata().topics.contains_key(t))
            .collect();
        if missing.is_empty() {
            return;
        }
        let now_ms = (self.now / 1000) as i64;
        for (name, assignments) in missing {
            self.admin_sent += 1;
            let request = Request::CreateTopic {
                name,
                partitions: assignments.len() as i64,
                replication_factor: assignments[0].len() as i64,
                configs: BTreeMap::new(),
                assignments,
                validate_only: false,
            };
            node.handle_request(now_ms, ADMIN_REQUEST_BASE + self.admin_sent, request);
        }
        self.trace(12, id, self.admin_sent);
        self.pump(id);
        self.schedule(self.now + ADMIN_EVERY_US, Event::CreateTopics);
    }

    /// One round of the reconfiguration driver (see [`Scenario::Reconfigure`]): from the
    /// leader's configuration, propose the next change; a refused or lost proposal is simply
    /// proposed again next round.
    fn reconfigure(&mut self) {
        use raft::eraftpb::{ConfChangeTransition as T, ConfChangeType as C};
        let tp = TopicPartition::new(RECONFIG_TOPIC, 0);
        let joiner = *self.node_ids.last().expect("nodes");
        let Some(leader) = self.leader_of(&tp).filter(|l| !self.is_paused(*l)) else {
            return;
        };
        let node = self.slots[&leader].node.as_ref().expect("up");
        let r = node.replica(&tp).expect("leader hosts it");
        let cs = r.conf_state();
        let commit = r.status().commit;
        let joined = self.slots[&joiner]
            .node
            .as_ref()
            .and_then(|n| n.replica(&tp))
            .is_some_and(|j| j.status().commit >= commit);
        let change = if !cs.voters_outgoing.is_empty() {
            // An empty change with the automatic transition leaves the joint configuration
            // (an empty *explicit* one would enter another).
            Some(conf_change(&[], T::Auto))
        } else if !cs.voters.contains(&joiner) && !cs.learners.contains(&joiner) {
            Some(conf_change(&[(C::AddLearnerNode, joiner)], T::Auto))
        } else if cs.learners.contains(&joiner) && joined {
            // Remove a voter other than the current leader (chosen afresh until the joint
            // change is in the log: leadership may move meanwhile).
            let removed = [1, 2, 3]
                .into_iter()
                .find(|v| *v != leader)
                .expect("two others");
            self.reconfig.removed = Some(removed);
            let steps = [(C::AddNode, joiner), (C::RemoveNode, removed)];
            Some(conf_change(&steps, T::Explicit))
        } else if let Some(removed) = self
            .reconfig
            .removed
            .filter(|r| cs.voters.contains(&joiner) && !cs.voters.contains(r))
        {
            let _ = removed;
            self.reconfig.done = true;
            None
        } else {
            None
        };
        let Some(cc) = change else {
            return;
        };
        let node = self
            .slots
            .get_mut(&leader)
            .and_then(|s| s.node.as_mut())
            .expect("up");
        if node.propose_conf_change(&tp, cc).is_ok() {
            self.reconfig.proposals += 1;
        }
        self.trace(17, leader, self.reconfig.proposals);
        self.pump(leader);
    }

    /// The scenario's end state: every up member of `r-0`'s final configuration holds it, with
    /// the joiner a voter and the removed voter gone.
    fn check_reconfigured(&mut self) {
        if self.opts.scenario != Scenario::Reconfigure {
            return;
        }
        let tp = TopicPartition::new(RECONFIG_TOPIC, 0);
        if !self.reconfig.done {
            self.violation(format!(
                "reconfiguration of {tp} did not finish ({} proposals)",
                self.reconfig.proposals
            ));
            return;
        }
        let joiner = *self.node_ids.last().expect("nodes");
        let removed = self.reconfig.removed.expect("chosen before done");
        let mut want: Vec<NodeId> = [1, 2, 3, joiner]
            .into_iter()
            .filter(|n| *n != removed)
            .collect();
        want.sort_unstable();
        let mut problems = Vec::new();
        for id in want.clone() {
            let Some(r) = self.slots[&id].node.as_ref().and_then(|n| n.replica(&tp)) else {
                continue;
            };
            let cs = r.conf_state();
            let mut voters = cs.voters.clone();
            voters.sort_unstable();
            if voters != want || !cs.voters_outgoing.is_empty() {
                problems.push(format!(
                    "node {id}: {tp} ends with configuration {cs:?}, not {want:?}"
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// The up, unpaused node that believes it is the controller.
    fn controller_node(&self) -> Option<NodeId> {
        self.up_nodes().into_iter().find(|id| {
            !self.is_paused(*id)
                && self.slots[id]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.controller() == Some(*id))
        })
    }

    /// Topic churn: the admin client creates a new topic (placed by the controller) or deletes
    /// one of the churn topics, through the controller, while faults run.
    fn churn(&mut self) {
        let Some(id) = self.controller_node() else {
            return;
        };
        let node = self.slots[&id].node.as_ref().expect("up");
        let alive: Vec<String> = node
            .metadata()
            .topics
            .keys()
            .filter(|t| t.starts_with("churn-"))
            .cloned()
            .collect();
        let delete = !alive.is_empty()
            && (alive.len() >= CHURN_TOPICS_MAX || self.rngs.workload.gen_bool(0.4));
        let request = if delete {
            let name = alive[self.rngs.workload.gen_range(0..alive.len())].clone();
            Request::DeleteTopic { name }
        } else {
            self.churn_created += 1;
            Request::CreateTopic {
                name: format!("churn-{}", self.churn_created),
                partitions: self.rngs.workload.gen_range(1..=2),
                replication_factor: self.node_ids.len().min(3) as i64,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
                validate_only: false,
            }
        };
        self.admin_sent += 1;
        self.stats.churn_requests += 1;
        let now_ms = (self.now / 1000) as i64;
        let request_id = ADMIN_REQUEST_BASE + self.admin_sent;
        let node = self
            .slots
            .get_mut(&id)
            .and_then(|s| s.node.as_mut())
            .expect("up");
        node.handle_request(now_ms, request_id, request);
        self.trace(14, id, self.admin_sent);
        self.pump(id);
    }

    /// White-box checks of the metadata image on every up node: two nodes that applied the same
    /// number of records hold the same image; and every recorded leadership names the node
    /// that really led the partition in that term (as `check_node` saw it).
    fn check_metadata(&mut self) {
        let mut problems = Vec::new();
        let mut by_count: BTreeMap<u64, (NodeId, railyard_core::metadata::MetadataImage)> =
            BTreeMap::new();
        for id in self.up_nodes() {
            let image = self.slots[&id].node.as_ref().unwrap().metadata();
            for b in image.brokers.values().filter(|b| b.fenced) {
                if self.fenced_seen.insert((b.id, b.incarnation)) {
                    self.stats.brokers_fenced += 1;
                }
            }
            match by_count.get(&image.records_applied) {
                Some((other, seen)) if seen != image => problems.push(format!(
                    "metadata images differ after {} records: node {id} vs node {other}",
                    image.records_applied
                )),
                Some(_) => {}
                None => {
                    by_count.insert(image.records_applied, (id, image.clone()));
                }
            }
            // The published view (core's rules, as the runtime answers Metadata) never names
            // a leader that another node was in that term.
            let node = self.slots[&id].node.as_ref().unwrap();
            for t in railyard_core::view::topics(node) {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.clone(), p.partition);
                    let (Some(leader), Some(&idx)) = (p.leader, self.tp_index.get(&tp)) else {
                        continue;
                    };
                    match self.leaders.get(&(idx, p.leader_epoch as u64)) {
                        Some(real) if *real != leader => problems.push(format!(
                            "node {id}'s view names {leader} leader of {tp} in term {}, \
                             but the leader then was {real}",
                            p.leader_epoch
                        )),
                        _ => {}
                    }
                }
            }
            for (tp, l) in &image.leaders {
                let (Some(leader), Some(&idx)) = (l.leader, self.tp_index.get(tp)) else {
                    continue;
                };
                match self.leaders.get(&(idx, l.epoch)) {
                    Some(real) if *real == leader => {}
                    real => problems.push(format!(
                        "node {id}: metadata records {leader} as leader of {tp} in term {}, \
                         but the leader then was {real:?}",
                        l.epoch
                    )),
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Liveness of the metadata: after the heal every up node's image registers every broker,
    /// unfenced, holds every workload topic, and records a leader for each partition.
    fn check_metadata_liveness(&mut self) {
        let mut problems = Vec::new();
        for id in self.up_nodes() {
            let image = self.slots[&id].node.as_ref().unwrap().metadata();
            for b in &self.node_ids {
                match image.brokers.get(b) {
                    Some(m) if !m.fenced => {}
                    other => problems.push(format!(
                        "liveness: node {id}'s metadata has broker {b} as {other:?} after the heal"
                    )),
                }
            }
            for s in self.specs.iter().filter(|s| !self.fixed.contains(s)) {
                if !image.topics.contains_key(&s.tp.topic) {
                    problems.push(format!(
                        "liveness: node {id}'s metadata lacks topic {}",
                        s.tp.topic
                    ));
                } else if image.leaders.get(&s.tp).and_then(|l| l.leader).is_none() {
                    problems.push(format!(
                        "liveness: node {id}'s metadata records no leader for {}",
                        s.tp
                    ));
                }
            }
            // The replicas a node hosts are exactly those its image assigns to it: creation
            // and deletion followed the metadata log through every fault.
            let node = self.slots[&id].node.as_ref().unwrap();
            let wanted: BTreeSet<TopicPartition> = image
                .assignments()
                .into_iter()
                .filter(|(_, r)| r.contains(&id))
                .map(|(tp, _)| tp)
                .chain(std::iter::once(metadata_tp()))
                .chain(
                    self.fixed
                        .iter()
                        .filter(|s| s.voters.contains(&id) || Some(&id) == self.node_ids.last())
                        .map(|s| s.tp.clone()),
                )
                .collect();
            let hosted: BTreeSet<TopicPartition> =
                node.replicas().map(|r| r.tp().clone()).collect();
            if hosted != wanted {
                problems.push(format!(
                    "liveness: node {id} hosts {:?} but its image assigns {:?}",
                    hosted.difference(&wanted).collect::<Vec<_>>(),
                    wanted.difference(&hosted).collect::<Vec<_>>()
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("t={}ms {v}", self.now / 1000));
        }
    }

    /// White-box checks after every step of a node: one leader per term, watermarks and commit
    /// indexes never move backwards.
    fn check_node(&mut self, id: NodeId) {
        let Some(node) = self.slots[&id].node.as_ref() else {
            return;
        };
        let mut problems = Vec::new();
        for r in node.replicas() {
            let st = r.status();
            let tp = r.tp();
            if st.role == StateRole::Leader {
                let key = (tp_key(&mut self.tp_index, tp), st.term);
                match self.leaders.get(&key) {
                    Some(other) if *other != id => problems.push(format!(
                        "two leaders for {tp} in term {}: {other} and {id}",
                        st.term
                    )),
                    Some(_) => {}
                    None => {
                        self.stats.leader_changes += 1;
                        self.leaders.insert(key, id);
                    }
                }
            }
            if st.high_watermark > st.log_end_offset {
                problems.push(format!(
                    "node {id} {tp}: high watermark {} beyond log end {}",
                    st.high_watermark, st.log_end_offset
                ));
            }
            let prev = self
                .hw_seen
                .insert((id, tp_key(&mut self.tp_index, tp)), st.high_watermark);
            if prev.is_some_and(|p| st.high_watermark < p) {
                problems.push(format!(
                    "node {id} {tp}: high watermark went backwards {:?} -> {}",
                    prev, st.high_watermark
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Every replica's committed prefix agrees: same (term, checksum) at every committed index,
    /// and every record in it was sent by some client, at one offset only.
    fn check_committed_prefixes(&mut self) {
        let meta = metadata_tp();
        let mut new_violations = Vec::new();
        for id in self.up_nodes() {
            let node = self.slots[&id].node.as_ref().unwrap();
            for r in node.replicas() {
                let tp = r.tp().clone();
                let log = r.storage().log();
                let commit = r.storage().durable_commit().min(log.last_index());
                let key = (id, tp.clone());
                let from = self
                    .prefix_checked
                    .get(&key)
                    .copied()
                    .unwrap_or(0)
                    .max(log.first_index() - 1);
                if from >= commit {
                    continue;
                }
                let Ok(entries) = log.entries(from + 1, commit + 1, None) else {
                    continue; // an injected read error: check next time
                };
                let reference = self.committed.entry(tp.clone()).or_default();
                for e in &entries {
                    let sum = crc32c::crc32c(&e.data);
                    match reference.get(&e.index) {
                        Some(&(term, c)) if (term, c) != (e.term, sum) => {
                            new_violations.push(format!(
                                "{tp}: committed entry {} differs on node {id}: term {} vs {term}",
                                e.index, e.term
                            ))
                        }
                        Some(_) => {}
                        None => {
                            reference.insert(e.index, (e.term, sum));
                        }
                    }
                    // Metadata records are the controller's, not the workload's.
                    if e.record_count == 0 || tp == meta {
                        continue;
                    }
                    let Ok(records) = decode_records(&e.data) else {
                        new_violations
                            .push(format!("{tp}: committed batch at {} undecodable", e.index));
                        continue;
                    };
                    for rec in records {
                        let Some(v) = record_value(&rec) else {
                            new_violations
                                .push(format!("{tp}: record at {} not a value", rec.offset));
                            continue;
                        };
                        if self.workload.sent_values.get(&v) != Some(&tp) {
                            new_violations.push(format!(
                                "{tp}: record {v} at {} was never sent to this partition",
                                rec.offset
                            ));
                        }
                        match self.committed_values.get(&(tp.clone(), rec.offset)) {
                            Some(old) if *old != v => new_violations.push(format!(
                                "{tp}: offset {} holds {v} on node {id} but {old} elsewhere",
                                rec.offset
                            )),
                            Some(_) => {}
                            None => {
                                self.committed_values.insert((tp.clone(), rec.offset), v);
                            }
                        }
                    }
                }
                self.stats.committed_entries_checked += entries.len() as u64;
                self.prefix_checked.insert(key, commit);
            }
        }
        for v in new_violations {
            self.violation(v);
        }
    }

    /// The clock scenario: steps and skews of the wall clock fence no broker (every timer runs
    /// on the monotonic clock), and the nodes noticed the steps.
    fn check_clock_scenario(&mut self) {
        if self.opts.scenario != Scenario::ClockSteps {
            return;
        }
        if self.stats.brokers_fenced > 0 {
            self.violation(format!(
                "clock steps fenced {} broker incarnations",
                self.stats.brokers_fenced
            ));
        }
        let noticed: u64 = self
            .up_nodes()
            .iter()
            .map(|id| self.slots[id].node.as_ref().expect("up").clock_steps())
            .sum();
        if self.stats.clock_steps == 0 || noticed == 0 {
            self.violation(format!(
                "clock scenario: {} steps injected, {noticed} noticed",
                self.stats.clock_steps
            ));
        }
    }

    fn finish(mut self) -> SimReport {
        self.check_committed_prefixes();
        self.check_metadata();
        self.check_metadata_liveness();
        self.check_clock_scenario();
        self.check_reconfigured();
        self.stats.replicas_created_late = self
            .up_nodes()
            .iter()
            .map(|id| {
                self.slots[id]
                    .node
                    .as_ref()
                    .unwrap()
                    .stats()
                    .replicas_created_late
            })
            .sum();
        self.stats.leaders_recorded = self
            .up_nodes()
            .iter()
            .map(|id| {
                self.slots[id]
                    .node
                    .as_ref()
                    .unwrap()
                    .metadata()
                    .leaders
                    .len() as u64
            })
            .sum();
        let final_done = self
            .workload
            .clients
            .iter()
            .filter(|c| c.final_targets.is_some())
            .all(|c| c.stopped && c.in_flight.is_none());
        if !self.final_started || !final_done {
            self.violation("liveness: final reads did not reach the high watermark in time".into());
        }
        // Every acknowledged (acks=all) offset still holds its value in the committed log.
        let acked: Vec<(TopicPartition, Offset, u64)> = self
            .workload
            .history
            .events()
            .iter()
            .filter_map(|e| match (&e.kind, &e.op) {
                (
                    railyard_jepsen::EventType::Ok,
                    railyard_jepsen::Op::Send {
                        key,
                        value,
                        offset: Some(o),
                    },
                ) => {
                    let tp = self
                        .specs
                        .iter()
                        .find(|s| s.tp.to_string() == *key)?
                        .tp
                        .clone();
                    Some((tp, *o, *value))
                }
                _ => None,
            })
            .collect();
        for (tp, off, v) in acked {
            if let Some(c) = self.committed_values.get(&(tp.clone(), off)) {
                if *c != v {
                    self.violation(format!("{tp}: acked {v} at {off} but the log holds {c}"));
                }
            }
        }
        let check = check(
            &self.workload.history,
            &CheckOptions {
                final_reads_done: final_done,
                mode: ConsumerMode::Assign,
            },
        );
        for name in check.errors() {
            self.violation(format!("checker: {name}"));
        }
        let w = &self.workload;
        self.stats.acked_all = w.acked_all;
        self.stats.acked_leader = w.acked_leader;
        self.stats.send_fail = w.send_fail;
        self.stats.send_refused_disk_full = w.send_refused_disk_full;
        self.stats.send_info = w.send_info;
        self.stats.polls_ok = w.polls_ok;
        self.stats.values_read = w.values_read;
        self.stats.net = self.net.stats();
        for slot in self.slots.values() {
            let d = slot.disk.stats();
            let t = &mut self.stats.disk;
            t.writes += d.writes;
            t.bytes_written += d.bytes_written;
            t.syncs += d.syncs;
            t.reads += d.reads;
            t.read_errors += d.read_errors;
            t.no_space += d.no_space;
            t.crashes += d.crashes;
            t.ops_lost += d.ops_lost;
            t.torn_writes += d.torn_writes;
            t.flips += d.flips;
        }
        SimReport {
            seed: self.opts.seed,
            faults: self.opts.faults.to_string(),
            trace_hash: self.trace,
            sim_us: self.now,
            violations: self.violations,
            check,
            stats: self.stats,
            history: self
                .opts
                .keep_history
                .then(|| self.workload.history.clone()),
            options: self.opts,
        }
    }
}

/// A `ConfChangeV2` of `steps` (change type, node).
fn conf_change(
    steps: &[(raft::eraftpb::ConfChangeType, NodeId)],
    transition: raft::eraftpb::ConfChangeTransition,
) -> raft::eraftpb::ConfChangeV2 {
    let mut cc = raft::eraftpb::ConfChangeV2::default();
    cc.set_transition(transition);
    let changes: Vec<raft::eraftpb::ConfChangeSingle> = steps
        .iter()
        .map(|(t, id)| {
            let mut c = raft::eraftpb::ConfChangeSingle::default();
            c.set_change_type(*t);
            c.node_id = *id;
            c
        })
        .collect();
    cc.set_changes(changes.into());
    cc
}

/// The white-box key of a partition: its index, assigned on first sight (workload partitions
/// and the metadata partition first, then churn topics as nodes create them).
fn tp_key(index: &mut BTreeMap<TopicPartition, usize>, tp: &TopicPartition) -> usize {
    if let Some(i) = index.get(tp) {
        return *i; // The hot path (every replica after every step): no clone.
    }
    let next = index.len();
    index.insert(tp.clone(), next);
    next
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
