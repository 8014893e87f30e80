//! The progress bar on stderr while a run measures: elapsed against `--duration` (or records
//! against `--records`) and the records/s so far. Hidden when stderr is not a terminal or the
//! output is JSON, so that what a script reads stays parseable.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar is redrawn.
const TICK_MS: u64 = 200;

/// A running bar; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What the bar counts up to.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// Milliseconds of measurement after `warmup_s` seconds.
    Duration { warmup_s: f64, duration_s: f64 },
    /// Records measured.
    Records(u64),
}

impl Progress {
    /// A bar fed from `counter` (records measured so far); drawn only if `visible` and stderr
    /// is a terminal.
    pub fn start(visible: bool, goal: Goal, counter: Arc<AtomicU64>) -> Progress {
        let shown = visible && std::io::stderr().is_terminal();
        let (len, template) = match goal {
            Goal::Duration { duration_s, .. } => (
                (duration_s * 1e3) as u64,
                "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
            ),
            Goal::Records(n) => (
                n,
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if shown {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let task = shown.then(|| tokio::spawn(tick(bar.clone(), goal, counter)));
        Progress { bar, task }
    }

    /// Stops and clears the bar.
    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}

async fn tick(bar: ProgressBar, goal: Goal, counter: Arc<AtomicU64>) {
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        every.tick().await;
        let n = counter.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        match goal {
            Goal::Duration { warmup_s, .. } => {
                let measuring_ms = ((secs - warmup_s).max(0.0) * 1e3) as u64;
                bar.set_position(measuring_ms);
                let phase = if secs < warmup_s { "warm-up, " } else { "" };
                bar.set_message(format!("{phase}{n} records"));
            }
            Goal::Records(_) => bar.set_position(n),
        }
        if secs > 0.0 && matches!(goal, Goal::Records(_)) {
            bar.set_message(format!("{:.0} records/s", n as f64 / secs));
        }
    }
}
