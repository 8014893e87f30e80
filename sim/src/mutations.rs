//! Mutation canaries: run a simulation with one of the core's planted bugs
//! (`railyard_core::mutation`) and report which check caught it. Proof that the checkers have
//! teeth: `cargo test` runs every mutation on seeds known to catch it (`sim/tests/simulation.rs`).

use railyard_core::mutation::{plant, Mutation};

use crate::world::{run_catching, SimOptions};

/// Runs one seed with `m` planted on this thread. Returns the check that caught it (the first
/// violation, or the assertion that fired), or `None` if the run passed.
pub fn run_planted(m: Mutation, opts: SimOptions) -> Option<String> {
    plant(Some(m));
    // Remember where an assertion fired, to name the check that caught the bug.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let outcome = run_catching(opts);
    std::panic::set_hook(previous);
    plant(None);
    match outcome {
        Ok(report) if report.ok() => None,
        Ok(report) => {
            if std::env::var_os("RAILYARD_SIM_VIOLATIONS").is_some() {
                eprintln!("{}", report.failure_text());
            }
            Some(check_name(&report.violations[0]))
        }
        Err(panic) => {
            let msg = panic.split_once("panic: ").map_or("", |(_, m)| m);
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            let first = msg.lines().next().unwrap_or_default();
            Some(format!("assertion at {at}: {first}"))
        }
    }
}

thread_local! {
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The violation without its timestamp, cut to one short line.
fn check_name(violation: &str) -> String {
    let text = violation
        .split_once("ms ")
        .map_or(violation, |(_, rest)| rest);
    text.chars().take(120).collect()
}
