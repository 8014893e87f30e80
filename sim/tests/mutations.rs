//! Standing mutation canaries: each planted bug in `railyard_core::mutation` must be caught by
//! the simulator on a seed known to catch it, and the same seed must pass without it. A check
//! weakened so that it no longer catches its bug fails this test.
//!
//! The seeds come from campaigns
//! (`cargo run -p railyard-sim --release --features mutations -- --mutation NAME --seeds N`);
//! after a change that shifts the simulation, rerun them and update the table.

use railyard_core::mutation::Mutation;
use railyard_sim::mutations::run_planted;
use railyard_sim::{run_catching, Scenario, SimOptions};

/// (mutation, scenario, seed that catches it, what the check's report starts with).
const CANARIES: [(Mutation, Scenario, u64, &str); 6] = [
    (
        Mutation::AckBeforeSync,
        Scenario::FollowerThenLeaderCrash,
        3,
        "a-0: committed entry",
    ),
    (Mutation::ServePastHw, Scenario::Swarm, 4, "checker:"),
    (
        Mutation::SkipTermCheck,
        Scenario::Swarm,
        29,
        "b-1: committed entry",
    ),
    (
        Mutation::LoseTruncation,
        Scenario::Swarm,
        2,
        "b-0: committed entry",
    ),
    (
        Mutation::ApplyBeforeCommit,
        Scenario::Swarm,
        2,
        "b-0: acked",
    ),
    (Mutation::ForgetHardState, Scenario::Swarm, 4, "two leaders"),
];

fn options(scenario: Scenario, seed: u64) -> SimOptions {
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
        let clean = run_catching(options(scenario, seed)).expect("no panic without the bug");
        assert!(
            clean.ok(),
            "{} seed {seed} fails without the bug:\n{}",
            m.name(),
            clean.failure_text()
        );
        match run_planted(m, options(scenario, seed)) {
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
