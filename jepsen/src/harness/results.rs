//! A run's outputs: `history.jsonl`, `results.json` (the verdict, every anomaly count and the
//! figures) and `report.html`, and the summary printed at the end.
//!
//! The verdict is two checks of the same history. The whole history is checked in the mode
//! its consumers imply (subscribe as soon as one process subscribed, where a rebalance may
//! legitimately skip or repeat). The processes that never subscribed are also checked alone,
//! strictly in assign mode, with every send, so that group consumers do not soften the
//! checks of the assigned ones. The run is valid only if both are.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use railyard_jepsen::{
    check, render_html, CheckOptions, CheckReport, ConsumerMode, History, NemesisWindow, Op,
    Outcome, RunInfo,
};
use serde_json::{json, Value};

use super::check_cmd::verdict;
use super::lab::ELECTION_TIMEOUT_MS;
use super::nemesis::Fault;
use super::{Idempotence, RunOpts};

/// Everything a run produced.
pub struct Run<'a> {
    pub opts: &'a RunOpts,
    pub seed: u64,
    pub started_at: SystemTime,
    pub history: History,
    pub faults: Vec<Fault>,
}

/// Writes the run's files into `dir`, prints the summary and returns the verdict.
pub fn write(dir: &Path, run: &Run<'_>) -> Result<bool, String> {
    let whole = check(
        &run.history,
        &CheckOptions {
            final_reads_done: true,
            mode: ConsumerMode::Auto,
        },
    );
    let assigned = check(
        &run.history.without_subscribers(),
        &CheckOptions {
            final_reads_done: true,
            mode: ConsumerMode::Assign,
        },
    );
    let valid = whole.valid() && assigned.valid();
    let windows: Vec<NemesisWindow> = run.faults.iter().map(|f| f.window.clone()).collect();
    let figures = figures(&run.history, &run.faults, run.opts.time_limit);
    let results = json!({
        "test": run.opts.test_name(),
        "seed": run.seed,
        "replay": run.opts.replay_command(run.seed),
        "valid": valid,
        "started_at": rfc3339(run.started_at),
        "nodes": run.opts.nodes,
        "keys": run.opts.keys,
        "acks": format!("{:?}", run.opts.acks).to_lowercase(),
        "idempotent": format!("{:?}", run.opts.idempotent).to_lowercase(),
        "consumer_mode": format!("{:?}", run.opts.consumer_mode).to_lowercase(),
        "checks": {
            "all_processes": verdict(&whole),
            "assign_processes": verdict(&assigned),
        },
        "nemesis": windows,
        "figures": figures,
    });
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    save(&dir.join("results.json"), &text)?;
    save(&dir.join("history.jsonl"), &run.history.to_jsonl())?;
    let info = RunInfo {
        test: run.opts.test_name(),
        seed: run.seed,
        nodes: usize::from(run.opts.nodes),
        keys: run.opts.keys as usize,
        acks: format!("{:?}", run.opts.acks).to_lowercase(),
        idempotent: run.opts.idempotent != Idempotence::Off,
        time_limit_s: run.opts.time_limit,
        started_at: rfc3339(run.started_at),
    };
    save(
        &dir.join("report.html"),
        &render_html(&run.history, &windows, &whole, &info),
    )?;
    print_summary(dir, valid, &whole, &assigned, &figures);
    Ok(valid)
}

fn save(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Throughput in and out of faults, and the unavailability after each kill of a key's
/// leader.
fn figures(history: &History, faults: &[Fault], time_limit_s: u64) -> Value {
    let in_fault = |t: u64| {
        faults
            .iter()
            .any(|f| f.window.start_ns <= t && t <= f.window.end_ns)
    };
    let fault_ns: u64 = faults
        .iter()
        .map(|f| f.window.end_ns.saturating_sub(f.window.start_ns))
        .sum();
    let total_ns = time_limit_s.max(1) * 1_000_000_000;
    let oks = ok_sends(history);
    let (during, outside) =
        oks.iter()
            .filter(|s| s.done_ns <= total_ns)
            .fold((0u64, 0u64), |(d, o), s| {
                if in_fault(s.done_ns) {
                    (d + 1, o)
                } else {
                    (d, o + 1)
                }
            });
    let rate = |count: u64, ns: u64| {
        if ns == 0 {
            Value::Null
        } else {
            json!((count as f64 * 1e9 / ns as f64 * 10.0).round() / 10.0)
        }
    };
    // Per killed leader and key: from the kill to the first acknowledgement of a send to
    // that key invoked after it (sends already in flight may have been answered by the old
    // leader just before it died).
    let mut unavailable: Vec<f64> = faults
        .iter()
        .flat_map(|f| f.led_keys.iter().map(move |k| (f.window.start_ns, k)))
        .filter_map(|(t0, key)| {
            oks.iter()
                .filter(|s| &s.key == key && s.invoke_ns >= t0)
                .map(|s| s.done_ns - t0)
                .min()
                .map(|ns| ns as f64 / 1e6)
        })
        .collect();
    unavailable.sort_by(f64::total_cmp);
    json!({
        "acked_sends_per_s": {
            "during_faults": rate(during, fault_ns),
            "outside_faults": rate(outside, total_ns.saturating_sub(fault_ns)),
        },
        "leader_kill_unavailability_ms": {
            "samples": unavailable,
            "p50": percentile(&unavailable, 0.50),
            "p99": percentile(&unavailable, 0.99),
            "election_timeout_ms": ELECTION_TIMEOUT_MS,
        },
    })
}

struct OkSend {
    key: String,
    invoke_ns: u64,
    done_ns: u64,
}

/// Every acknowledged send with its invoke time.
fn ok_sends(history: &History) -> Vec<OkSend> {
    history
        .operations()
        .ops
        .into_iter()
        .filter(|op| op.outcome == Outcome::Ok)
        .filter_map(|op| match (op.completion, op.complete_time) {
            (Op::Send { key, .. }, Some(done_ns)) => Some(OkSend {
                key: key.clone(),
                invoke_ns: op.invoke_time,
                done_ns,
            }),
            _ => None,
        })
        .collect()
}

/// Nearest-rank percentile of sorted samples; null when there are none.
fn percentile(sorted: &[f64], q: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    json!((sorted[rank - 1] * 10.0).round() / 10.0)
}

fn print_summary(
    dir: &Path,
    valid: bool,
    whole: &CheckReport,
    assigned: &CheckReport,
    figures: &Value,
) {
    println!(
        "railyard-jepsen: {} ({} events, {} acked sends, {} info sends)",
        if valid { "VALID" } else { "INVALID" },
        whole.stats.events,
        whole.stats.sends_ok,
        whole.stats.sends_info
    );
    for (name, report) in [("all processes", whole), ("assign processes", assigned)] {
        let found: Vec<String> = report
            .anomalies
            .iter()
            .map(|(a, s)| {
                let how = if s.error { "error" } else { "allowed" };
                format!("{}={} ({how})", a.name(), s.count)
            })
            .collect();
        let found = if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        };
        println!("  {name}: anomalies {found}");
    }
    println!("  figures: {figures}");
    println!("  results: {}", dir.join("results.json").display());
    println!("  report:  {}", dir.join("report.html").display());
}

/// `20261202T061500.123Z`: a directory name that sorts by time.
pub fn dir_timestamp(t: SystemTime) -> String {
    let (date, time, ms) = civil(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{ms:03}Z",
        date.0, date.1, date.2, time.0, time.1, time.2
    )
}

/// `2026-12-02T06:15:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (date, time, _) = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        date.0, date.1, date.2, time.0, time.1, time.2
    )
}

/// UTC calendar date, time of day and milliseconds (Howard Hinnant's `civil_from_days`).
fn civil(t: SystemTime) -> ((i64, u32, u32), (u64, u64, u64), u64) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        (year, month, day),
        (rem / 3_600, rem % 3_600 / 60, rem % 60),
        u64::from(d.subsec_millis()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        // 2026-12-02T06:15:00.123Z
        let t = UNIX_EPOCH + Duration::from_millis(1_796_192_100_123);
        assert_eq!(rfc3339(t), "2026-12-02T06:15:00Z");
        assert_eq!(dir_timestamp(t), "20261202T061500.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&samples, 0.5), json!(2.0));
        assert_eq!(percentile(&samples, 0.99), json!(4.0));
        assert_eq!(percentile(&[], 0.5), Value::Null);
    }
}
