//! `railyard-sim`: the long-campaign runner. `--seeds N` runs N consecutive seeds from
//! `--start` (default: drawn from nothing but the command line, so campaigns are reproducible),
//! `--seed S` replays one. It shows progress and reports seeds per second and simulated seconds
//! per wall second. Wall-clock time is read here, in the binary, never in the simulation.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use railyard_sim::{run, run_catching, Scenario, SimOptions};

#[derive(Parser, Debug)]
#[command(
    name = "railyard-sim",
    about = "Seeded fault-injection simulations of a Railyard cluster"
)]
struct Args {
    /// Replay one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds, starting at --start.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of a campaign.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// A scripted scenario instead of swarm faults.
    #[arg(long, value_enum, default_value_t = Scenario::Swarm)]
    scenario: Scenario,
    /// Write the history of a single-seed run as JSONL to this file.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
    /// Simulated seconds of the fault phase (the liveness phase is as long).
    #[arg(long)]
    fault_secs: Option<u64>,
    /// Stop a campaign at the first failing seed.
    #[arg(long)]
    fail_fast: bool,
    /// Force the cluster size (default: drawn from the seed, 3 or 5).
    #[arg(long)]
    nodes: Option<u64>,
    /// Plant this bug (see `railyard_core::mutation`) and run a campaign until a seed catches
    /// it: prints `caught NAME at seed S by CHECK` and exits 0, or `not caught` and exits 1.
    /// Needs `--features mutations`.
    #[arg(long)]
    mutation: Option<String>,
}

fn options(args: &Args, seed: u64) -> SimOptions {
    let mut o = match args.scenario {
        Scenario::Swarm => SimOptions::from_seed(seed),
        s => SimOptions::scenario(seed, s),
    };
    if let Some(n) = args.nodes {
        o.node_count = n;
    }
    if let Some(s) = args.fault_secs {
        o.fault_phase_us = s * 1_000_000;
        o.liveness_us = s * 1_000_000;
    }
    o
}

/// Runs seeds with `name` planted until one catches it (module docs of `core::mutation`).
fn mutation_campaign(args: &Args, name: &str) -> ExitCode {
    let Some(m) = railyard_core::mutation::Mutation::from_name(name) else {
        let names: Vec<&str> = railyard_core::mutation::Mutation::ALL
            .iter()
            .map(|m| m.name())
            .collect();
        eprintln!("unknown mutation {name:?}; known: {}", names.join(", "));
        return ExitCode::FAILURE;
    };
    if !railyard_core::mutation::enabled() {
        eprintln!("built without the mutations feature: add --features mutations");
        return ExitCode::FAILURE;
    }
    let first = args.seed.unwrap_or(args.start);
    let count = if args.seed.is_some() { 1 } else { args.seeds };
    for seed in first..first + count {
        match railyard_sim::mutations::run_planted(m, options(args, seed)) {
            Some(check) => {
                println!("caught {name} at seed {seed} by {check}");
                return ExitCode::SUCCESS;
            }
            None => continue,
        }
    }
    println!("not caught");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = args.mutation.clone() {
        return mutation_campaign(&args, &name);
    }
    if let Some(seed) = args.seed {
        let mut o = options(&args, seed);
        o.keep_history = args.history.is_some();
        let started = Instant::now();
        let report = run(o);
        let wall = started.elapsed().as_secs_f64();
        println!(
            "seed={} ok={} trace={:016x} sim={:.1}s wall={:.2}s\n  faults: {}\n  stats: {}\n  check: {}",
            report.seed,
            report.ok(),
            report.trace_hash,
            report.sim_us as f64 / 1e6,
            wall,
            report.faults,
            serde_json::to_string(&report.stats).unwrap_or_default(),
            report.check
        );
        if let (Some(path), Some(h)) = (&args.history, &report.history) {
            if let Err(e) = std::fs::write(path, h.to_jsonl()) {
                eprintln!("cannot write history to {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        if !report.ok() {
            eprintln!("{}", report.failure_text());
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {per_sec} eta {eta} {msg}")
            .expect("static template"),
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut sim_us_total = 0u64;
    // A panic inside a run (a failed assertion in core or the simulator) is a failing seed too.
    std::panic::set_hook(Box::new(|_| {}));
    for seed in args.start..args.start + args.seeds {
        let report = match run_catching(options(&args, seed)) {
            Ok(r) => r,
            Err(text) => {
                bar.suspend(|| eprintln!("{text}"));
                failures.push(seed);
                if args.fail_fast {
                    break;
                }
                bar.inc(1);
                continue;
            }
        };
        sim_us_total += report.sim_us;
        if !report.ok() {
            bar.suspend(|| eprintln!("{}", report.failure_text()));
            failures.push(seed);
            if args.fail_fast {
                break;
            }
        }
        bar.inc(1);
        bar.set_message(format!("{} failed", failures.len()));
    }
    bar.finish();
    let wall = started.elapsed().as_secs_f64();
    let done = bar.position();
    println!(
        "{} seeds in {:.1}s: {:.2} seeds/s ({:.0} seeds/min), {:.1} simulated s per wall s, {} failed{}",
        done,
        wall,
        done as f64 / wall,
        done as f64 / wall * 60.0,
        sim_us_total as f64 / 1e6 / wall,
        failures.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!(": {failures:?}")
        }
    );
    let _ = std::io::stdout().flush();
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
