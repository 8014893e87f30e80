//! The harness behind `railyard-jepsen run` and `railyard-jepsen check`.
//!
//! A run, in order:
//! 1. [`lab`]: one network namespace per node, joined to a bridge in the root namespace by a
//!    veth pair, so each node has its own address and its peer connections leave from it.
//!    The clients run in the root namespace and reach every node over the bridge. Faults are
//!    applied per namespace (iptables DROP rules, signals to the node's process, the node's
//!    libfaketime offset file), so healing is removing them, and deleting the namespaces
//!    removes any rule left behind.
//! 2. [`workload`]: producer and consumer processes of the Rust client, one operation at a
//!    time each, recorded as a history in CHECKER.md's format. A process that sees an
//!    indeterminate result is crashed (its client dropped) and replaced by a new process id.
//! 3. [`nemesis`]: faults drawn from the seed, one at a time, each held for the nemesis
//!    interval and then healed, with a quiet interval between; a [`membership`] turn adds a
//!    broker, moves partitions onto it and decommissions another.
//! 4. The final phase: every fault healed, the cluster waited for, then every key assigned
//!    from the beginning and read up to its end offset.
//! 5. [`results`]: the checker's verdict, the figures and the report, in
//!    `<store>/<test>/<time>/`.
//!
//! Cleanup is the [`lab::Lab`]'s `Drop`: it resumes paused nodes, kills every node and
//! deletes the namespaces and the bridge, on success, on error, on Ctrl-C or SIGTERM (the
//! run future is dropped) and on a panic (unwinding drops it). A harness killed with -9
//! cannot clean up: its nodes die with it (parent-death signal) and the next run deletes its
//! namespaces ([`lab::sweep_stale`]).

mod check_cmd;
mod lab;
mod membership;
mod nemesis;
mod results;
pub use railyard_jepsen::workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use lab::{Lab, LabError};
use nemesis::NemesisKind;
use workload::Recorder;

pub use workload::{AcksArg, ConsumerModeArg, Idempotence, WorkloadOpts, TOPIC};

#[derive(Parser, Debug)]
#[command(
    name = "railyard-jepsen",
    about = "Jepsen-style tests of real railyard clusters, and a queue-history checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a cluster in network namespaces, run the workload under the nemesis, check it.
    Run(RunOpts),
    /// Check a history file in CHECKER.md's format (JSONL).
    Check(check_cmd::CheckOpts),
}

/// Settings of `railyard-jepsen run`.
#[derive(Args, Clone, Debug)]
pub struct RunOpts {
    /// Nodes the cluster forms with (every one a controller voter); the membership nemesis
    /// replaces them one at a time, keeping the count.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
    /// Seconds of workload under the nemesis, before the final phase.
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Operations per second, summed over every client process.
    #[arg(long, default_value_t = WorkloadOpts::default().rate)]
    pub rate: f64,
    /// Faults to schedule, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,clock,rolling,membership"
    )]
    pub nemesis: Vec<NemesisKind>,
    /// Seconds each fault is held, and seconds of quiet between two faults.
    #[arg(long, default_value_t = 10)]
    pub nemesis_interval: u64,
    /// Producer acknowledgements.
    #[arg(long, value_enum, default_value_t = WorkloadOpts::default().acks)]
    pub acks: AcksArg,
    /// Which producers are idempotent.
    #[arg(long, value_enum, default_value_t = WorkloadOpts::default().idempotent)]
    pub idempotent: Idempotence,
    /// Keys (partitions of the topic).
    #[arg(
        long,
        default_value_t = WorkloadOpts::default().keys,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub keys: u32,
    /// Seed of the nemesis schedule and of the clients' choices; default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent producer processes.
    #[arg(long, default_value_t = WorkloadOpts::default().producers)]
    pub producers: usize,
    /// Concurrent consumer processes.
    #[arg(long, default_value_t = WorkloadOpts::default().consumers)]
    pub consumers: usize,
    /// How consumers get their keys.
    #[arg(long, value_enum, default_value_t = WorkloadOpts::default().consumer_mode)]
    pub consumer_mode: ConsumerModeArg,
    /// The railyard binary; default: `railyard` beside this binary (a release build).
    #[arg(long)]
    pub railyard: Option<PathBuf>,
    /// Where runs are stored: `<store>/<test>/<time>/`.
    #[arg(long, default_value = "jepsen/store")]
    pub store: PathBuf,
    /// The test's name in the store; default: `queue-<nemeses>`.
    #[arg(long)]
    pub test_name: Option<String>,
    /// Keep the nodes' data directories (they are deleted after a valid run).
    #[arg(long)]
    pub keep_data: bool,
}

impl RunOpts {
    /// What the workload runs, from these settings.
    fn workload(&self) -> WorkloadOpts {
        WorkloadOpts {
            keys: self.keys,
            producers: self.producers,
            consumers: self.consumers,
            rate: self.rate,
            acks: self.acks,
            idempotent: self.idempotent,
            consumer_mode: self.consumer_mode,
        }
    }

    fn test_name(&self) -> String {
        self.test_name.clone().unwrap_or_else(|| {
            let kinds: Vec<&str> = self.nemesis.iter().map(|k| k.name()).collect();
            format!("queue-{}", kinds.join("-"))
        })
    }

    /// The command line that repeats this run's schedule.
    fn replay_command(&self, seed: u64) -> String {
        let kinds: Vec<&str> = self.nemesis.iter().map(|k| k.name()).collect();
        format!(
            "railyard-jepsen run --seed {seed} --nodes {} --time-limit {} --nemesis {} \
             --nemesis-interval {} --keys {} --rate {} --producers {} --consumers {}",
            self.nodes,
            self.time_limit,
            kinds.join(","),
            self.nemesis_interval,
            self.keys,
            self.rate,
            self.producers,
            self.consumers
        )
    }
}

/// Entry point: parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(opts) => check_cmd::run(&opts),
        Command::Run(opts) => run_cmd(opts),
    }
}

/// Exit codes of `run`: 0 valid, 1 invalid history, 2 the run could not be carried out (a
/// node failed to start, the namespaces could not be made, interrupted).
fn run_cmd(opts: RunOpts) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("railyard-jepsen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(opts)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("railyard-jepsen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Why a run could not be carried out (as opposed to an invalid history).
#[derive(Debug)]
pub enum RunError {
    /// Setting up, starting or faulting the cluster failed.
    Lab(LabError),
    /// Writing the run's files failed.
    Io(String),
    /// Ctrl-C or SIGTERM.
    Interrupted(&'static str),
}

impl std::error::Error for RunError {}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Lab(e) => write!(f, "{e}"),
            RunError::Io(e) => write!(f, "{e}"),
            RunError::Interrupted(by) => write!(f, "interrupted by {by}; every fault healed"),
        }
    }
}

impl From<LabError> for RunError {
    fn from(e: LabError) -> RunError {
        RunError::Lab(e)
    }
}

/// Returns whether the history is valid.
async fn run(opts: RunOpts) -> Result<bool, RunError> {
    let seed = opts.seed.unwrap_or_else(seed_from_clock);
    let started_at = SystemTime::now();
    let dir = opts
        .store
        .join(opts.test_name())
        .join(results::dir_timestamp(started_at));
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunError::Io(format!("cannot create {}: {e}", dir.display())))?;
    // The nodes are given paths under it; absolute, so their working directory never matters.
    let dir =
        std::fs::canonicalize(&dir).map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
    println!(
        "railyard-jepsen: seed {seed}, store {}\n  replay: {}",
        dir.display(),
        opts.replay_command(seed)
    );
    lab::sweep_stale();
    let mut lab = Lab::create(&opts, &dir)?;
    let outcome = tokio::select! {
        r = run_in(&opts, seed, started_at, &dir, &mut lab) => r,
        by = interrupted() => Err(RunError::Interrupted(by)),
    };
    if let Err(e) = &outcome {
        lab.print_failure(e);
    }
    let valid = outcome?;
    lab.cleanup();
    if valid && !opts.keep_data {
        lab.remove_data();
    }
    Ok(valid)
}

async fn run_in(
    opts: &RunOpts,
    seed: u64,
    started_at: SystemTime,
    dir: &std::path::Path,
    lab: &mut Lab,
) -> Result<bool, RunError> {
    lab.start_all()?;
    lab.wait_ready(opts.keys).await?;
    let recorder = Arc::new(Recorder::new());
    let workload = workload::start(
        &opts.workload(),
        seed,
        lab.shared_bootstrap(),
        recorder.clone(),
    );
    let deadline = recorder.now_ns() + opts.time_limit * 1_000_000_000;
    let faults = nemesis::run(opts, seed, lab, &recorder, deadline).await?;
    workload.stop().await;
    println!("railyard-jepsen: workload stopped; healing and reading every key to its end");
    lab.heal_all().await?;
    lab.wait_ready(opts.keys).await?;
    workload::final_reads(&opts.workload(), lab.bootstrap(), &recorder)
        .await
        .map_err(LabError::from)?;
    let run = results::Run {
        opts,
        seed,
        started_at,
        history: recorder.history(),
        faults,
    };
    let valid = results::write(dir, &run).map_err(RunError::Io)?;
    Ok(valid)
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

fn seed_from_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
