//! `railyard-jepsen check HISTORY.jsonl`: checks any history in CHECKER.md's format and
//! prints the verdict and every anomaly count as JSON.
//!
//! Exit codes: 0 valid, 1 invalid, 2 the file cannot be read or parsed (with the line).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use railyard_jepsen::{check, Anomaly, CheckOptions, CheckReport, ConsumerMode, History};
use serde_json::json;

/// Settings of `railyard-jepsen check`.
#[derive(Args, Clone, Debug)]
pub struct CheckOpts {
    /// The history (one JSON event per line).
    pub history: PathBuf,
    /// The history ends with reads of every key to its end: values never read are errors.
    #[arg(long)]
    pub final_reads: bool,
    /// How the consumers got their keys; default: subscribe if any process subscribed.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Poll skips and nonmonotonic polls are errors.
    Assign,
    /// Poll skips and nonmonotonic polls are allowed (rebalances move keys).
    Subscribe,
}

/// Runs the check and returns the exit code.
pub fn run(opts: &CheckOpts) -> ExitCode {
    let text = match std::fs::read_to_string(&opts.history) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "railyard-jepsen: cannot read {}: {e}",
                opts.history.display()
            );
            return ExitCode::from(2);
        }
    };
    let history = match History::from_jsonl(&text) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("railyard-jepsen: {}: {e}", opts.history.display());
            return ExitCode::from(2);
        }
    };
    let mode = match opts.mode {
        None => ConsumerMode::Auto,
        Some(ModeArg::Assign) => ConsumerMode::Assign,
        Some(ModeArg::Subscribe) => ConsumerMode::Subscribe,
    };
    let report = check(
        &history,
        &CheckOptions {
            final_reads_done: opts.final_reads,
            mode,
        },
    );
    let out = verdict(&report);
    println!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
    if report.valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A check's verdict as JSON: validity, mode, every anomaly's count (zeros too), the names of
/// the errors and of the allowed ones, the examples and the stats. `check` prints it and a
/// run's `results.json` holds one per check.
pub fn verdict(report: &CheckReport) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = Anomaly::ALL
        .iter()
        .map(|&a| (a.name().to_string(), json!(report.count(a))))
        .collect();
    let examples: serde_json::Map<String, serde_json::Value> = report
        .anomalies
        .iter()
        .map(|(a, s)| (a.name().to_string(), json!(s.examples)))
        .collect();
    json!({
        "valid": report.valid(),
        "mode": report.mode,
        "final_reads": report.final_reads_done,
        "errors": report.errors(),
        "allowed": report.allowed(),
        "anomalies": counts,
        "examples": examples,
        "stats": report.stats,
    })
}
