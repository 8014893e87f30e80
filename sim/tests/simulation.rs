//! Seeded fault-injection simulations under plain `cargo test`: a swarm of seeds (each drawing
//! its own faults), the targeted scenarios, determinism, a snapshot of one run's summary, and
//! the standing mutation canaries (at the end). Every failure prints its seed, the drawn faults
//! and the one-line replay command.

use railyard_core::mutation::Mutation;
use railyard_sim::mutations::run_planted;
use railyard_sim::{run, run_catching, Scenario, SimOptions, SimReport};

/// How many swarm seeds `cargo test` runs at least; `RAILYARD_SIM_SEEDS` raises it.
const SWARM_SEEDS_DEFAULT: u64 = 64;
/// How many it may run to see every fault class fire.
const SWARM_SEEDS_MAX: u64 = 256;

fn assert_ok(report: &SimReport) {
    assert!(report.ok(), "{}", report.failure_text());
}

/// Proves the swarm finds no violation over many seeds, and that together the seeds exercised
/// every fault type the simulator models (a fault that never fires proves nothing).
#[test]
fn test_swarm_seeds_hold_every_invariant_and_cover_every_fault() {
    let n = std::env::var("RAILYARD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SWARM_SEEDS_DEFAULT);
    let mut failures = Vec::new();
    let mut total = railyard_sim::world::RunStats::default();
    let mut seed = 0;
    // At least `n` seeds; beyond that, more (in order, so still deterministic) until every
    // fault class has fired: rare classes (a torn write needs a crash mid-step on a seed whose
    // disks tear) need not fire in the first `n`, but must within `SWARM_SEEDS_MAX`.
    while seed < n || (!missing(&total).is_empty() && seed < SWARM_SEEDS_MAX.max(n)) {
        if seed >= n {
            eprintln!("swarm: seed {seed}, still missing {:?}", missing(&total));
        }
        seed += 1;
        let r = match run_catching(SimOptions::from_seed(seed)) {
            Ok(r) => r,
            Err(text) => {
                failures.push(text);
                continue;
            }
        };
        if !r.ok() {
            failures.push(r.failure_text());
        }
        add_stats(&mut total, &r.stats);
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("swarm: {seed} seeds ran");
    let missing = missing(&total);
    assert!(
        missing.is_empty(),
        "{seed} swarm seeds never exercised: {missing:?}"
    );
}

/// Sums the counters the coverage check reads.
fn add_stats(total: &mut railyard_sim::world::RunStats, s: &railyard_sim::world::RunStats) {
    total.crashes += s.crashes;
    total.mid_step_crashes += s.mid_step_crashes;
    total.pauses += s.pauses;
    total.partitions += s.partitions;
    total.clogs += s.clogs;
    total.bit_flips += s.bit_flips;
    total.corruption_recoveries += s.corruption_recoveries;
    total.disk_full_periods += s.disk_full_periods;
    total.appends_refused_disk_low += s.appends_refused_disk_low;
    total.brokers_fenced += s.brokers_fenced;
    total.leaders_recorded += s.leaders_recorded;
    total.fail_stops += s.fail_stops;
    total.clock_steps += s.clock_steps;
    total.graceful_stops += s.graceful_stops;
    total.churn_requests += s.churn_requests;
    total.delete_records_acked += s.delete_records_acked;
    total.acked_all += s.acked_all;
    total.joins_admitted += s.joins_admitted;
    total.moves_completed += s.moves_completed;
    total.brokers_unregistered += s.brokers_unregistered;
    total.disk.read_errors += s.disk.read_errors;
    total.disk.torn_writes += s.disk.torn_writes;
    total.disk.ops_lost += s.disk.ops_lost;
    total.disk.no_space += s.disk.no_space;
    total.net.dropped += s.net.dropped;
    total.net.duplicated += s.net.duplicated;
    total.net.reordered += s.net.reordered;
    total.net.blocked += s.net.blocked + s.net.lost_in_flight;
}

/// The fault classes the seeds so far never exercised.
fn missing(total: &railyard_sim::world::RunStats) -> Vec<&'static str> {
    let coverage = [
        ("crashes", total.crashes),
        ("mid-step crashes", total.mid_step_crashes),
        ("pauses", total.pauses),
        ("partitions", total.partitions),
        ("clogs", total.clogs),
        ("bit flips", total.bit_flips),
        ("corruption recoveries", total.corruption_recoveries),
        ("disk-full periods", total.disk_full_periods),
        ("writes refused for space", total.disk.no_space),
        ("appends refused for space", total.appends_refused_disk_low),
        ("read errors", total.disk.read_errors),
        ("torn writes", total.disk.torn_writes),
        ("unsynced ops lost", total.disk.ops_lost),
        ("dropped messages", total.net.dropped),
        ("duplicated messages", total.net.duplicated),
        ("reordered messages", total.net.reordered),
        ("partition-blocked messages", total.net.blocked),
        ("acks=all writes", total.acked_all),
        ("nodes joined to a running cluster", total.joins_admitted),
        ("partition moves completed", total.moves_completed),
        (
            "brokers decommissioned and unregistered",
            total.brokers_unregistered,
        ),
        ("wall-clock steps", total.clock_steps),
        ("graceful stops", total.graceful_stops),
        ("topic churn through the controller", total.churn_requests),
        ("DeleteRecords committed", total.delete_records_acked),
        ("brokers fenced by the controller", total.brokers_fenced),
        (
            "leaderships recorded in the metadata log",
            total.leaders_recorded,
        ),
    ];
    coverage
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(k, _)| *k)
        .collect()
}

fn scenario(s: Scenario) -> SimReport {
    let r = run_catching(SimOptions::scenario(7, s)).unwrap_or_else(|e| panic!("{e}"));
    assert_ok(&r);
    assert!(r.stats.acked_all > 100, "too little work: {:?}", r.stats);
    r
}

/// Raft configuration changes under the swarm's faults: a learner joins `r-0`, is promoted
/// through joint consensus while a voter is removed, the joint configuration is left, and
/// writes to the partition survive (the scenario's own check, then every usual one).
#[test]
fn test_scenario_reconfigure_under_faults() {
    for seed in 1..=4 {
        let r = run_catching(SimOptions::scenario(seed, Scenario::Reconfigure))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ok(&r);
        assert!(r.stats.acked_all > 100, "too little work: {:?}", r.stats);
    }
}

/// Wall clocks skewed by up to an hour and stepping by an hour: no broker is fenced, writes go
/// on (the scenario's checks), and the nodes noticed the steps.
#[test]
fn test_scenario_clock_steps_fence_nothing() {
    let r = scenario(Scenario::ClockSteps);
    assert!(r.stats.clock_steps >= 5, "{:?}", r.stats);
    assert_eq!(r.stats.brokers_fenced, 0, "{:?}", r.stats);
    assert_eq!(r.stats.crashes, 0);
}

/// The leader of a partition is killed while producers write; a new leader takes over and no
/// acknowledged write is lost.
#[test]
fn test_scenario_leader_crash_mid_write() {
    let r = scenario(Scenario::LeaderCrashMidWrite);
    assert_eq!(r.stats.crashes, 2, "{:?}", r.stats);
    // Initial elections of 4 partitions, plus at least one failover per crash.
    assert!(r.stats.leader_changes >= 6, "{:?}", r.stats);
}

/// The leader is isolated; the majority elects another, the old leader acknowledges nothing it
/// cannot commit, and after the heal it rejoins.
#[test]
fn test_scenario_partitioned_leader() {
    let r = scenario(Scenario::PartitionedLeader);
    assert_eq!(r.stats.partitions, 1);
    assert!(
        r.stats.net.blocked + r.stats.net.lost_in_flight > 0,
        "{:?}",
        r.stats
    );
    assert!(r.stats.leader_changes >= 5, "{:?}", r.stats);
}

/// A follower is killed in the middle of writing, its unsynced writes torn; it recovers and
/// catches up.
#[test]
fn test_scenario_torn_write_on_follower() {
    let mut torn = 0;
    for seed in 1..=8 {
        let r = run_catching(SimOptions::scenario(seed, Scenario::TornWriteFollower))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ok(&r);
        torn += r.stats.disk.torn_writes + r.stats.disk.ops_lost;
    }
    assert!(
        torn > 0,
        "no crash in 8 seeds tore or lost an unsynced write"
    );
}

/// Bits flip in one follower's sealed segments; its recovery sees corruption (not a torn
/// tail), truncates, enters repair mode and is repaired from the leader; nothing corrupt is
/// served and nothing acknowledged is lost.
#[test]
fn test_scenario_corruption_on_one_replica() {
    let r = scenario(Scenario::CorruptReplica);
    assert!(r.stats.bit_flips >= 1, "{:?}", r.stats);
    assert!(r.stats.corruption_recoveries >= 1, "{:?}", r.stats);
}

/// A follower's and then the leader's disk fill up. Once a node's tick sees it, a follower
/// drops appends (the leader commits with the others and retries it later) and a leader refuses
/// produces with a clean error; a write that hits the full disk before that check fail-stops the
/// node, which restarts. Either way nothing acknowledged is lost, and after space returns the
/// node catches up (the liveness phase and the checker).
#[test]
fn test_scenario_disk_full() {
    let r = scenario(Scenario::DiskFull);
    assert_eq!(r.stats.disk_full_periods, 2);
    assert!(r.stats.appends_refused_disk_low > 0, "{:?}", r.stats);
    assert!(r.stats.send_refused_disk_full > 0, "{:?}", r.stats);
}

/// The same seed gives the same run, event for event; a different seed does not.
#[test]
fn test_same_seed_same_trace() {
    for seed in [3, 1234] {
        let a = run(SimOptions::from_seed(seed));
        let b = run(SimOptions::from_seed(seed));
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a.stats.events, b.stats.events);
        assert_eq!(a.faults, b.faults);
    }
    let a = run(SimOptions::from_seed(3));
    let c = run(SimOptions::from_seed(4));
    assert_ne!(a.trace_hash, c.trace_hash);
}

/// A snapshot of a fixed-seed run's summary: any change in behaviour shows up in review.
#[test]
fn test_fixed_seed_summary_snapshot() {
    let r = run(SimOptions::from_seed(42));
    assert_ok(&r);
    let summary = format!(
        "seed: {}\nfaults: {}\ntrace: {:016x}\nsim_ms: {}\nstats: {}\ncheck: {}\n",
        r.seed,
        r.faults,
        r.trace_hash,
        r.sim_us / 1000,
        serde_json::to_string_pretty(&r.stats).unwrap(),
        r.check
    );
    insta::assert_snapshot!(summary);
}

/// A follower dies between writing and syncing, then the leader dies while the third replica
/// lags: whatever the follower acknowledged must have been durable, or the new leader lacks a
/// committed write. (With acknowledgements sent before the sync, this loses acked writes in
/// about a third of the seeds; see the closing note of issue 2.)
#[test]
fn test_scenario_follower_then_leader_crash() {
    for seed in 1..=4 {
        let r = run_catching(SimOptions::scenario(
            seed,
            Scenario::FollowerThenLeaderCrash,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_ok(&r);
        assert!(r.stats.mid_step_crashes >= 1, "{:?}", r.stats);
        assert!(r.stats.crashes >= 2, "{:?}", r.stats);
    }
}

// ---- Standing mutation canaries --------------------------------------------------------------
//
// Each planted bug in `railyard_core::mutation` (compiled in through this crate's
// dev-dependency on the core's `mutations` feature) must be caught by the simulator on a seed
// known to catch it, and the same seed must pass without it: a check weakened so that it no
// longer catches its bug fails here. The seeds come from campaigns
// (`cargo run -p railyard-sim --release --features mutations -- --mutation NAME --seeds N`);
// after a change that shifts the simulation, rerun them and update the table. This lives in
// this binary so that it runs beside the long swarm test instead of after it.

/// (mutation, scenario, seed that catches it, what the check's report starts with).
const CANARIES: [(Mutation, Scenario, u64, &str); 16] = [
    (
        Mutation::AckBeforeSync,
        Scenario::FollowerThenLeaderCrash,
        3,
        "b-1: committed entry",
    ),
    (
        Mutation::ServePastHw,
        Scenario::Swarm,
        2,
        "checker: inconsistent",
    ),
    (
        Mutation::SkipTermCheck,
        Scenario::Swarm,
        56,
        "__consumer_offsets-1: committed entry",
    ),
    (
        Mutation::LoseTruncation,
        Scenario::Swarm,
        3,
        "__cluster_metadata-0: committed entry",
    ),
    (
        Mutation::ApplyBeforeCommit,
        Scenario::Swarm,
        1,
        "a-1: DeleteRecords before 6 answered log start 0",
    ),
    (
        Mutation::ForgetHardState,
        Scenario::Swarm,
        87,
        "two leaders",
    ),
    (
        Mutation::AcceptDuplicateSequence,
        Scenario::Swarm,
        4,
        "checker: duplicate",
    ),
    (
        Mutation::KeepProducerStateOnTruncation,
        Scenario::Swarm,
        6,
        "node 2 a-1: producer table holds",
    ),
    (
        Mutation::AckCommitBeforeCommitted,
        Scenario::Swarm,
        16,
        "group sim-group: committed offset",
    ),
    (
        Mutation::ForgetDeletedRecordsAtOpen,
        Scenario::Swarm,
        4,
        "node 3 b-0: leader serves from offset",
    ),
    (
        Mutation::IgnoreBrokerConfigsChanged,
        Scenario::Swarm,
        2,
        "node 2 a-0: log settings",
    ),
    (
        Mutation::HideFencedLeaders,
        Scenario::Swarm,
        22,
        "node 4's view names 5 leader of __consumer_offsets/2",
    ),
    (
        Mutation::ForgetClusterId,
        Scenario::Swarm,
        1,
        "node 1's image names cluster",
    ),
    (
        Mutation::AdmitWithoutLearners,
        Scenario::Swarm,
        20,
        "metadata configuration at applied index",
    ),
    (
        Mutation::RemoveBeforeCaughtUp,
        Scenario::Swarm,
        3,
        "a-0: node 1 promoted learner 4 at commit",
    ),
    (
        Mutation::DropDataBeforeCommit,
        Scenario::Swarm,
        4,
        "__consumer_offsets-0: node 3 opened a fresh replica after holding durable state",
    ),
];

fn canary_options(scenario: Scenario, seed: u64) -> SimOptions {
    match scenario {
        Scenario::Swarm => SimOptions::from_seed(seed),
        s => SimOptions::scenario(seed, s),
    }
}

/// Every planted bug is caught by the check named in the table, on its seed; without it the
/// seed passes, so it is the bug that the check caught.
#[test]
fn test_every_mutation_is_caught_by_the_simulator() {
    assert!(
        railyard_core::mutation::enabled(),
        "built with the mutations feature"
    );
    assert_eq!(
        CANARIES.len(),
        Mutation::ALL.len(),
        "one canary per mutation"
    );
    let mut missed = Vec::new();
    for (m, scenario, seed, check) in CANARIES {
        let clean = run_catching(canary_options(scenario, seed)).expect("no panic without the bug");
        assert!(
            clean.ok(),
            "{} seed {seed} fails without the bug:\n{}",
            m.name(),
            clean.failure_text()
        );
        match run_planted(m, canary_options(scenario, seed)) {
            Some(caught) if caught.starts_with(check) => {}
            other => missed.push(format!(
                "{} at seed {seed}: {other:?} (expected {check})",
                m.name()
            )),
        }
    }
    assert!(
        missed.is_empty(),
        "mutations not caught as expected:\n{}",
        missed.join("\n")
    );
}
