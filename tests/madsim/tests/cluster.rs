//! madsim end-to-end: three real brokers (`railyard_node::server`, the very code `railyard
//! start` runs: Kafka listener, transport, core loop) and the Jepsen workload of the real Rust
//! client, on madsim's simulated network and clock, under kills, pauses and partitions. The
//! history goes through the Jepsen checker.
//!
//! Each broker is a madsim node whose disk is the simulator's `SimDisk`, held here, outside
//! the node: a kill drops the node's tasks (its core loop, its sockets, its Node) but not the
//! disk, which then loses what was not synced ([`SimDisk::crash`]), torn writes included; the
//! restarted node replays what is left. Everything runs on one thread in simulated time, and
//! madsim seeds every source of randomness (and the nemesis draws from the same seed), so a
//! seed is a replay.
//!
//! Built only with `RUSTFLAGS="--cfg madsim"` (its own target dir, since every crate is
//! rebuilt): `MADSIM_TEST_SEED` picks the first seed, `MADSIM_TEST_NUM` how many run; the
//! README's "madsim" section has the commands.
#![cfg(madsim)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use railyard_core::disk::Disk;
use railyard_core::mutation::{self, Mutation};
use railyard_jepsen::workload::{self, Recorder, WorkloadOpts, TOPIC};
use railyard_jepsen::{
    check, Anomaly, CheckOptions, CheckReport, ConsumerMode, EventType, Function, Op,
};
use railyard_node::config::NodeConfig;
use railyard_node::runtime::MakeDisk;
use railyard_node::server::{start_node_on, Storage};
use railyard_sim::disk::SimDisk;
use railyard_sim::faults::FaultConfig;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Brokers in the cluster (ids 1..=BROKERS); every key is replicated on all of them.
const BROKERS: u64 = 3;
/// Partitions of the workload's topic.
const KEYS: u32 = 4;
/// Simulated time the workload runs under the nemesis.
const RUN: Duration = Duration::from_secs(60);
/// Quiet time between two faults, and how long one lasts: drawn from these ranges (ms).
const QUIET_MS: (u64, u64) = (1_000, 4_000);
const FAULT_MS: (u64, u64) = (2_000, 6_000);
/// Time after the last heal before the workload stops, so that every process recovers.
const RECOVER: Duration = Duration::from_secs(10);
const KAFKA_PORT: u16 = 9092;
const RAFT_PORT: u16 = 9093;

thread_local! {
    /// Each broker's disk, by broker id. madsim runs one seed per thread, nodes included, so
    /// this holds the current run's disks and nothing leaks between seeds.
    static DISKS: RefCell<BTreeMap<u64, Rc<SimDisk>>> = const { RefCell::new(BTreeMap::new()) };
}

fn broker_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

const CLIENTS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));

fn bootstrap() -> String {
    let addrs: Vec<String> = (1..=BROKERS)
        .map(|id| format!("{}:{KAFKA_PORT}", broker_ip(id)))
        .collect();
    addrs.join(",")
}

/// Broker `id`'s config, as `railyard start --config` would read it.
fn config(id: u64) -> NodeConfig {
    let mut text = format!(
        "id = {id}\ndata_dir = \"/sim/{id}\"\nkafka_listen = \"{ip}:{KAFKA_PORT}\"\n\
         raft_listen = \"{ip}:{RAFT_PORT}\"\ntick_ms = 100\nmin_free_bytes = 0\n\n",
        ip = broker_ip(id)
    );
    for p in 1..=BROKERS {
        text.push_str(&format!(
            "[[peers]]\nid = {p}\nraft_addr = \"{ip}:{RAFT_PORT}\"\nkafka_addr = \"{ip}:{KAFKA_PORT}\"\n\n",
            ip = broker_ip(p)
        ));
    }
    text.push_str(&format!(
        "[[topics]]\nname = \"{TOPIC}\"\npartitions = {KEYS}\nreplication_factor = {BROKERS}\n"
    ));
    toml::from_str(&text).expect("the test's broker config parses")
}

/// The brokers' logger: silent, or the node's log lines on stderr when `RAILYARD_MADSIM_LOG`
/// is set (to replay one seed; their timestamps are the host's, not simulated time).
fn logger() -> slog::Logger {
    use slog::Drain;
    if std::env::var_os("RAILYARD_MADSIM_LOG").is_none() {
        return slog::Logger::root(slog::Discard, slog::o!());
    }
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

/// A broker's life: start on its disk, then serve until madsim kills the node.
async fn broker(id: u64) {
    let make_disk: MakeDisk =
        Box::new(move || -> Rc<dyn Disk> { DISKS.with(|d| d.borrow()[&id].clone()) });
    let logger = logger();
    let node = start_node_on(config(id), &logger, Storage::Disk(make_disk))
        .await
        .unwrap_or_else(|e| panic!("broker {id} did not start: {e}"));
    // The node's tasks run on their own; holding the handle keeps its queues open.
    let _node = node;
    std::future::pending::<()>().await
}

/// One fault of the nemesis, by broker id.
#[derive(Clone, Debug)]
enum Fault {
    /// kill -9, then restart after the fault's time.
    Kill(u64),
    /// SIGSTOP, then SIGCONT.
    Pause(u64),
    /// Every packet to and from the broker held back (clients' too).
    Isolate(u64),
    /// The two brokers other than the bridge cannot reach each other; the bridge reaches both.
    Bridge(u64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill {n}"),
            Fault::Pause(n) => write!(f, "pause {n}"),
            Fault::Isolate(n) => write!(f, "isolate {n}"),
            Fault::Bridge(n) => write!(f, "bridge through {n}"),
        }
    }
}

/// The brokers as madsim nodes, and their disks.
struct Cluster {
    handle: Handle,
    nodes: BTreeMap<u64, NodeHandle>,
}

impl Cluster {
    fn start(handle: &Handle, seed: u64) -> Cluster {
        let mut faults = FaultConfig::none();
        // A kill may keep part of the last unsynced write, torn at a sector.
        faults.torn_writes = true;
        let mut nodes = BTreeMap::new();
        for id in 1..=BROKERS {
            let disk = Rc::new(SimDisk::new(&faults, seed ^ (id << 32)));
            DISKS.with(|d| d.borrow_mut().insert(id, disk));
            let node = handle
                .create_node()
                .name(format!("broker-{id}"))
                .ip(broker_ip(id))
                .init(move || broker(id))
                .build();
            nodes.insert(id, node);
        }
        Cluster {
            handle: handle.clone(),
            nodes,
        }
    }

    fn node(&self, id: u64) -> &NodeHandle {
        &self.nodes[&id]
    }

    fn apply(&self, fault: &Fault) {
        let net = NetSim::current();
        match *fault {
            Fault::Kill(id) => {
                self.handle.kill(self.node(id).id());
                DISKS.with(|d| d.borrow()[&id].crash());
            }
            Fault::Pause(id) => self.handle.pause(self.node(id).id()),
            Fault::Isolate(id) => net.clog_node(self.node(id).id()),
            Fault::Bridge(middle) => {
                let (a, b) = self.others(middle);
                net.clog_link(a, b);
                net.clog_link(b, a);
            }
        }
    }

    fn heal(&self, fault: &Fault) {
        let net = NetSim::current();
        match *fault {
            Fault::Kill(id) => self.handle.restart(self.node(id).id()),
            Fault::Pause(id) => self.handle.resume(self.node(id).id()),
            Fault::Isolate(id) => net.unclog_node(self.node(id).id()),
            Fault::Bridge(middle) => {
                let (a, b) = self.others(middle);
                net.unclog_link(a, b);
                net.unclog_link(b, a);
            }
        }
    }

    /// The madsim ids of the two brokers other than `middle`.
    fn others(&self, middle: u64) -> (madsim::task::NodeId, madsim::task::NodeId) {
        let ids: Vec<_> = (1..=BROKERS)
            .filter(|id| *id != middle)
            .map(|id| self.node(id).id())
            .collect();
        (ids[0], ids[1])
    }
}

/// Every key's leader as the cluster reports it now (asked from the clients' node); empty
/// when nobody answers in time.
async fn leaders(clients: &NodeHandle) -> BTreeMap<i32, u64> {
    clients
        .spawn(async {
            let ask = async {
                let admin = workload::admin(&bootstrap()).await.ok()?;
                admin.cluster().refresh_metadata().await.ok()
            };
            let Ok(Some(meta)) = tokio::time::timeout(Duration::from_secs(3), ask).await else {
                return BTreeMap::new();
            };
            (0..KEYS as i32)
                .filter_map(|p| Some((p, u64::try_from(meta.leader(TOPIC, p)?).ok()?)))
                .collect()
        })
        .await
        .unwrap_or_default()
}

/// Draws the next fault. Each kind comes once per round, in a seed-shuffled order; "kill the
/// leader" aims at a key's current leader, so idempotent producers see a leader change with
/// sends in flight.
struct Nemesis {
    rng: ChaCha8Rng,
    round: Vec<&'static str>,
}

impl Nemesis {
    const KINDS: [&'static str; 5] = ["kill", "kill-leader", "pause", "isolate", "bridge"];

    async fn next(&mut self, clients: &NodeHandle) -> Fault {
        if self.round.is_empty() {
            self.round = Self::KINDS.to_vec();
            self.round.shuffle(&mut self.rng);
        }
        let kind = self.round.pop().expect("a round is never empty");
        let random = self.rng.gen_range(1..=BROKERS);
        match kind {
            "kill" => Fault::Kill(random),
            "kill-leader" => {
                let leaders = leaders(clients).await;
                let key = self.rng.gen_range(0..KEYS as i32);
                Fault::Kill(leaders.get(&key).copied().unwrap_or(random))
            }
            "pause" => Fault::Pause(random),
            "isolate" => Fault::Isolate(random),
            _ => Fault::Bridge(random),
        }
    }
}

fn ms(rng: &mut ChaCha8Rng, (lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(rng.gen_range(lo..=hi))
}

/// What one seed's run did, for its summary line and the assertions on progress.
#[derive(Debug, Default)]
struct Figures {
    faults: Vec<String>,
    leader_changes: u64,
    ok_sends: u64,
    ok_subscribes: u64,
    reads: u64,
}

impl Figures {
    fn count(&mut self, history: &railyard_jepsen::History) {
        for e in history.events() {
            if e.kind != EventType::Ok {
                continue;
            }
            match e.op.function() {
                Function::Send => self.ok_sends += 1,
                Function::Subscribe => self.ok_subscribes += 1,
                Function::Poll => {
                    if let Op::Poll { reads } = &e.op {
                        self.reads += reads.values().map(|r| r.len() as u64).sum::<u64>();
                    }
                }
                _ => {}
            }
        }
    }
}

fn replay(seed: u64) -> String {
    format!(
        "MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" cargo test -p railyard-madsim \
         --target-dir target/madsim --test cluster"
    )
}

fn verdict(seed: u64, whole: &CheckReport, assigned: &CheckReport, figures: &Figures) -> String {
    format!(
        "seed {seed}: the history is {}\nall processes: {whole}\nassign-mode processes: \
         {assigned}\nfigures: {figures:?}\nreplay: {}",
        if whole.valid() && assigned.valid() {
            "valid"
        } else {
            "INVALID"
        },
        replay(seed)
    )
}

/// One run: the cluster, the workload under the nemesis, the heal and the final reads, then
/// the checker over the history.
struct Run {
    seed: u64,
    whole: CheckReport,
    assigned: CheckReport,
    figures: Figures,
}

impl Run {
    fn valid(&self) -> bool {
        self.whole.valid() && self.assigned.valid()
    }

    fn verdict(&self) -> String {
        verdict(self.seed, &self.whole, &self.assigned, &self.figures)
    }
}

async fn run() -> Run {
    let handle = Handle::current();
    let seed = handle.seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cluster = Cluster::start(&handle, seed);
    let clients = handle.create_node().name("clients").ip(CLIENTS_IP).build();
    let rec = Arc::new(Recorder::new());
    let opts = WorkloadOpts {
        keys: KEYS,
        producers: 4,
        consumers: 4,
        rate: 100.0,
        ..WorkloadOpts::default()
    };
    let workload = {
        let (opts, rec) = (opts.clone(), rec.clone());
        clients
            .spawn(async move { workload::start(&opts, seed, bootstrap(), rec) })
            .await
            .expect("the workload starts")
    };
    let mut figures = Figures::default();
    let mut nemesis = Nemesis {
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e656d),
        round: Vec::new(),
    };
    let mut before = leaders(&clients).await;
    let started = madsim::time::Instant::now();
    let at = || started.elapsed().as_secs_f64();
    while started.elapsed() < RUN {
        madsim::time::sleep(ms(&mut rng, QUIET_MS)).await;
        let fault = nemesis.next(&clients).await;
        let from = at();
        cluster.apply(&fault);
        madsim::time::sleep(ms(&mut rng, FAULT_MS)).await;
        cluster.heal(&fault);
        figures
            .faults
            .push(format!("{fault} {from:.1}-{:.1}s", at()));
        let after = leaders(&clients).await;
        figures.leader_changes += after
            .iter()
            .filter(|(k, l)| before.get(k).is_some_and(|b| b != *l))
            .count() as u64;
        if !after.is_empty() {
            before = after;
        }
    }
    madsim::time::sleep(RECOVER).await;
    workload.stop().await;
    let final_reads = {
        let (opts, rec) = (opts.clone(), rec.clone());
        clients
            .spawn(async move { workload::final_reads(&opts, bootstrap(), &rec).await })
            .await
            .expect("the final reads ran")
    };
    let history = rec.history();
    figures.count(&history);
    if let Err(e) = final_reads {
        panic!(
            "seed {seed}: final reads at {:.1}s: {e}\nfigures: {figures:?}\nreplay: {}",
            at(),
            replay(seed)
        );
    }
    let whole = check(
        &history,
        &CheckOptions {
            final_reads_done: true,
            mode: ConsumerMode::Auto,
        },
    );
    let assigned = check(
        &history.without_subscribers(),
        &CheckOptions {
            final_reads_done: true,
            mode: ConsumerMode::Assign,
        },
    );
    Run {
        seed,
        whole,
        assigned,
        figures,
    }
}

// Proves the shipped node and client keep Jepsen's guarantees under kills (with unsynced
// writes lost and torn), pauses and partitions: acknowledged sends are read back, no
// duplicates (idempotent producers retrying across leader changes), offsets monotonic, and
// group consumers rebalance as processes crash and are replaced. Also that the run did work:
// sends were acknowledged under faults, leaders changed, consumers subscribed and read.
#[madsim::test]
async fn jepsen_workload_under_kills_pauses_and_partitions() {
    let run = run().await;
    let (verdict, figures) = (run.verdict(), &run.figures);
    assert!(run.valid(), "{verdict}");
    assert!(
        figures.ok_sends >= 200,
        "too little was acknowledged: {verdict}"
    );
    assert!(
        figures.reads >= figures.ok_sends,
        "reads fell short: {verdict}"
    );
    assert!(figures.ok_subscribes >= 2, "no rebalance: {verdict}");
    assert!(figures.leader_changes >= 1, "no leader changed: {verdict}");
    eprintln!(
        "seed {}: valid; {} faults, {} leader changes, {} sends acked, {} subscribes, {} \
         records read",
        run.seed,
        figures.faults.len(),
        figures.leader_changes,
        figures.ok_sends,
        figures.ok_subscribes,
        figures.reads,
    );
}

/// The seeds the canary tries, in order. Duplicates need a retry of a batch that was
/// written without an answer, which not every seed's faults produce.
const CANARY_SEEDS: std::ops::Range<u64> = 1..9;

// The mutation canary: with the producer-state table letting a retried batch through
// (`accept-duplicate-sequence`, planted on this thread, where madsim runs every broker), the
// idempotent producers' retries across leader changes must show up as duplicates within the
// canary's seeds. Proves the test above can fail, and that it exercises retries of batches
// already written. A plain test (madsim's runtime driven by hand) so that it stops at the
// first seed that catches the bug, whatever MADSIM_TEST_NUM says.
#[test]
fn canary_accepted_duplicate_sequence_is_caught() {
    let mut missed = Vec::new();
    for seed in CANARY_SEEDS {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        mutation::plant(Some(Mutation::AcceptDuplicateSequence));
        let run = runtime.block_on(run());
        mutation::plant(None);
        if !run.valid() && run.whole.count(Anomaly::Duplicate) > 0 {
            eprintln!("seed {seed}: canary caught: {}", run.whole);
            return;
        }
        missed.push(seed);
    }
    panic!("the planted accept-duplicate-sequence went unnoticed on seeds {missed:?}");
}
