//! `railyard-jepsen`: Jepsen-style tests of real railyard clusters, and a checker for any
//! queue history.
//!
//! - `railyard-jepsen run`: starts 3 or 5 `railyard` processes, each in its own network
//!   namespace, drives a workload of the Rust client against them while a nemesis kills,
//!   pauses, partitions and clock-steps nodes, heals everything, reads every key to its end
//!   and checks the history (CHECKER.md). See [`harness`] for the layout of a run.
//! - `railyard-jepsen check HISTORY.jsonl`: checks a history file.

mod harness;

fn main() -> std::process::ExitCode {
    harness::main()
}
