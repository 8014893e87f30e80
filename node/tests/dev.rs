//! `railyard dev` as a newcomer sees it: the terminal gets a banner with the bootstrap servers
//! and the log file, then event lines; the structured logs go to the file, without raft-rs's
//! INFO chatter.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use railyard_tests::ports::free_addr;

/// How long the one-node cluster has to elect the topic's leader and say so.
const LEADER_WITHIN: Duration = Duration::from_secs(30);

// Proves the banner names the bootstrap servers, the data directory and the log file, that
// the leader of the dev topic is reported as an event line, and that the log file has the
// node's own lines but none of raft-rs's INFO lines (its "became leader" among them).
#[test]
fn test_dev_shows_a_banner_and_events_and_logs_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kafka = free_addr();
    let raft = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args([
            "dev",
            "--nodes",
            "1",
            "--admin-port",
            "0",
            "--topic",
            "greetings:2:1",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--kafka-port", &kafka.port().to_string()])
        .args(["--raft-port", &raft.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting railyard dev");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + LEADER_WITHIN;
    while !seen
        .iter()
        .any(|l: &String| l.ends_with("greetings-1: leader node 1"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    let log_path = data.join("railyard.log");
    for want in [
        format!("bootstrap.servers={kafka}"),
        format!("logs:   {}", log_path.display()),
        "topics: greetings (2 partitions, RF 1)".to_string(),
        "topic greetings created (2 partitions)".to_string(),
        "greetings-1: leader node 1".to_string(),
    ] {
        assert!(
            text.contains(&want),
            "{want:?} missing from the terminal:\n{text}"
        );
    }
    let log = std::fs::read_to_string(&log_path).expect("the log file");
    assert!(log.contains("kafka listener started"), "{log}");
    assert!(
        !log.contains("became leader"),
        "raft-rs INFO lines in the log at the default level:\n{log}"
    );
}
