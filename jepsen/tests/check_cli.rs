//! `railyard-jepsen check` as a user runs it: the verdict as JSON and the exit code (0 valid,
//! 1 invalid, 2 unparseable, naming the line).

use std::path::PathBuf;
use std::process::Command;

use railyard_jepsen::{Event, History, Op};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_railyard-jepsen"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("railyard-jepsen-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write history");
    path
}

/// One send of 7 to k-0, acknowledged at offset 0, and a final read that sees it (or not).
fn history(read_it: bool) -> History {
    let mut h = History::new();
    h.push(Event::invoke(0, Op::send("k-0", 7), 1));
    h.push(Event::ok(0, Op::send_ok("k-0", 0, 7), 2));
    h.push(Event::invoke(1, Op::assign(["k-0"], true), 3));
    h.push(Event::ok(1, Op::assign(["k-0"], true), 4));
    h.push(Event::invoke(1, Op::poll(), 5));
    let reads = if read_it { vec![(0, 7)] } else { vec![] };
    h.push(Event::ok(1, Op::poll_key("k-0", reads), 6));
    h
}

fn check(path: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .arg("check")
        .arg(path)
        .args(args)
        .output()
        .expect("run railyard-jepsen");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Proves a valid history exits 0 and prints every anomaly's count as JSON.
#[test]
fn test_valid_history_exits_zero_with_every_count() {
    let path = write("valid.jsonl", &history(true).to_jsonl());
    let (code, stdout, _) = check(&path, &["--final-reads", "--mode", "assign"]);
    assert_eq!(code, 0, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON verdict");
    assert_eq!(v["valid"], true);
    assert_eq!(v["mode"], "assign");
    let counts = v["anomalies"].as_object().expect("anomaly counts");
    assert_eq!(counts.len(), railyard_jepsen::Anomaly::ALL.len());
    assert!(counts.values().all(|c| c == 0));
}

// Proves an acknowledged value the final reads never saw makes the history invalid (exit 1),
// and only with --final-reads (without them it may simply not have been polled yet).
#[test]
fn test_unseen_write_after_final_reads_exits_one() {
    let path = write("unseen.jsonl", &history(false).to_jsonl());
    let (code, stdout, _) = check(&path, &["--final-reads"]);
    assert_eq!(code, 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON verdict");
    assert_eq!(v["anomalies"]["unseen"], 1);
    assert!(v["errors"]
        .as_array()
        .expect("errors")
        .contains(&"unseen".into()));
    let (code, _, _) = check(&path, &[]);
    assert_eq!(code, 0);
}

// Proves a malformed line exits 2 with a message naming its line number.
#[test]
fn test_malformed_line_exits_two_naming_the_line() {
    let mut text = history(true).to_jsonl();
    text.push_str("{\"process\": 3, \"type\": \"ok\"\n");
    let path = write("malformed.jsonl", &text);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("line 7"), "{stderr}");
    let missing = std::env::temp_dir().join("railyard-jepsen-no-such-history.jsonl");
    let (code, _, stderr) = check(&missing, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}
