//! The `railyard` client subcommands, run as a user runs them (the real binary, a real
//! in-process 3-node cluster): topics, produce and consume round trips, consumer groups with
//! describe and reset-offsets, and the one-line errors of bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use railyard_tests::{eventually, topic, Disks, InProcessCluster, Spec};

/// Elections of a fresh cluster.
const SETTLE: Duration = Duration::from_secs(30);

/// Runs `railyard ARGS` against `bootstrap` (through `RAILYARD_BROKERS`, as a user would set
/// it), with `stdin` piped in.
fn railyard(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(args)
        .env("RAILYARD_BROKERS", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting railyard");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let out = railyard(bootstrap, args, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "railyard {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// Runs a command that must fail with `code`; returns its stderr, which is one line for a
/// failure (code 1; a usage error is clap's, with its hint).
fn fails(bootstrap: &str, args: &[&str], code: i32) -> String {
    let out = railyard(bootstrap, args, "");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "railyard {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == 1 {
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    stderr
}

async fn cluster() -> InProcessCluster {
    let spec = Spec::new(3, vec![topic("events", 3, 3)]).with_groups();
    let c = InProcessCluster::start_spec(&spec, Disks::Memory).await;
    c.wait_for_settled(SETTLE).await;
    c
}

// Proves topics can be created with configs, listed, described, altered and deleted, and that
// records produced from stdin (keys, headers, explicit partitions) read back in order, as text
// and as JSON, from the beginning, from an offset, and from a timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_topics_produce_and_consume_round_trip() {
    let c = cluster().await;
    let b = c.bootstrap();
    let b = b.as_str();
    let created = ok(
        b,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "2",
            "-r",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    );
    insta::assert_snapshot!(created, @r"
    TOPIC   STATUS
    orders  CREATED
    ");
    insta::assert_snapshot!(ok(b, &["topic", "list"], ""), @r"
    NAME    PARTITIONS  REPLICAS
    events  3           3
    orders  2           3
    ");
    let described = ok(b, &["topic", "describe", "orders"], "");
    assert!(
        described.contains("retention.ms  3600000  topic"),
        "{described}"
    );
    assert!(
        !described.contains("cleanup.policy"),
        "defaults listed without -a: {described}"
    );

    let produced = ok(
        b,
        &["produce", "orders", "-k", "=", "-H", "src=cli", "-p", "1"],
        "a=1\nb=2\nc=3\n",
    );
    insta::assert_snapshot!(produced, @r"
    produced 3 records to orders
    PARTITION  RECORDS  FIRST-OFFSET  LAST-OFFSET
    1          3        0             2
    ");
    let text = ok(b, &["consume", "orders", "-p", "1", "-e", "-k", "="], "");
    assert_eq!(text, "a=1\nb=2\nc=3\n");
    let from_offset = ok(
        b,
        &["consume", "orders", "-p", "1", "--from", "1", "-n", "2"],
        "",
    );
    assert_eq!(from_offset, "2\n3\n");
    let json = ok(
        b,
        &[
            "consume", "orders", "--format", "json", "-n", "1", "-p", "1",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (
            &v["topic"],
            &v["partition"],
            &v["offset"],
            &v["key"],
            &v["value"]
        ),
        (
            &"orders".into(),
            &1.into(),
            &0.into(),
            &"a".into(),
            &"1".into()
        )
    );
    assert_eq!(
        v["headers"],
        serde_json::json!([{"key": "src", "value": "cli"}])
    );
    let ts = v["timestamp"].as_i64().unwrap();
    // Every record is at or after its own timestamp; a time after all of them starts at the end.
    let at_ts = ok(
        b,
        &[
            "consume",
            "orders",
            "-p",
            "1",
            "--from",
            &format!("@{ts}"),
            "-n",
            "1",
        ],
        "",
    );
    assert_eq!(at_ts, "1\n");
    let future = ok(
        b,
        &[
            "consume",
            "orders",
            "--from",
            &format!("@{}", ts + 3_600_000),
            "-e",
        ],
        "",
    );
    assert_eq!(future, "");

    let altered = ok(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=7200000",
            "--format",
            "json",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&altered).unwrap();
    assert_eq!(v["configs"]["retention.ms"]["value"], "7200000");
    ok(b, &["topic", "delete", "orders"], "");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(b, &["topic", "list", "--format", "json"], "")).unwrap();
    assert_eq!(listed["topics"].as_array().unwrap().len(), 1, "{listed}");
}

// Proves a group consumer commits exactly the records it printed (a second run resumes after
// them), that describe reports offsets and lag, that reset-offsets moves the group (and
// refuses while it has members is covered by the coordinator's own tests), and deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_groups_commit_what_they_print_and_reset() {
    let c = cluster().await;
    let b = c.bootstrap();
    let b = b.as_str();
    let lines: String = (0..10).map(|i| format!("r{i}\n")).collect();
    ok(b, &["produce", "events", "-p", "0"], &lines);
    let first = ok(b, &["consume", "events", "-g", "cli-group", "-n", "4"], "");
    assert_eq!(first, "r0\nr1\nr2\nr3\n");
    let second = ok(b, &["consume", "events", "-g", "cli-group", "-n", "3"], "");
    assert_eq!(
        second, "r4\nr5\nr6\n",
        "the second member resumes at the first unprinted record"
    );

    let listed = ok(b, &["group", "list"], "");
    assert!(listed.contains("cli-group"), "{listed}");
    let described = ok(b, &["group", "describe", "cli-group"], "");
    assert!(described.contains("has no active members"), "{described}");
    assert!(
        described.contains("events  0          7               10              3"),
        "{described}"
    );

    let dry = ok(
        b,
        &[
            "group",
            "reset-offsets",
            "cli-group",
            "-t",
            "events",
            "--to",
            "2",
            "-p",
            "0",
            "--dry-run",
        ],
        "",
    );
    insta::assert_snapshot!(dry, @r"
    GROUP      TOPIC   PARTITION  NEW-OFFSET
    cli-group  events  0          2
    (dry run: nothing was committed)
    ");
    let clamped = ok(
        b,
        &[
            "group",
            "reset-offsets",
            "cli-group",
            "-t",
            "events",
            "--to",
            "99",
            "-p",
            "0",
            "--format",
            "json",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&clamped).unwrap();
    assert_eq!(
        v["offsets"][0]["new_offset"], 10,
        "an offset past the end is clamped to it"
    );
    ok(
        b,
        &[
            "group",
            "reset-offsets",
            "cli-group",
            "-t",
            "events",
            "--to",
            "earliest",
        ],
        "",
    );
    let again = ok(b, &["consume", "events", "-g", "cli-group", "-n", "1"], "");
    assert_eq!(again, "r0\n");
    ok(b, &["group", "delete", "cli-group"], "");
    let gone = fails(b, &["group", "describe", "cli-group"], 1);
    assert!(gone.contains("does not exist"), "{gone}");
}

// Proves bad input gets one clear line and a non-zero exit: unknown topics and partitions, an
// existing topic, an invalid config value (the broker's INVALID_CONFIG, code 40), bad flag
// values (usage, exit 2), an unreachable bootstrap, and an input line without its key
// separator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_bad_input_gets_one_line_and_a_non_zero_exit() {
    let c = cluster().await;
    let b = c.bootstrap();
    let b = b.as_str();
    let unknown = fails(b, &["topic", "describe", "nope"], 1);
    assert_eq!(
        unknown,
        "railyard: unknown topic \"nope\" (UNKNOWN_TOPIC_OR_PARTITION, code 3)\n"
    );
    let exists = fails(b, &["topic", "create", "events"], 1);
    assert!(
        exists.contains("TOPIC_ALREADY_EXISTS (code 36)") && exists.contains("broker "),
        "{exists}"
    );
    let bad_config = fails(
        b,
        &[
            "topic",
            "alter-config",
            "events",
            "--set",
            "retention.ms=soon",
        ],
        1,
    );
    assert!(
        bad_config.contains("INVALID_CONFIG (code 40)"),
        "{bad_config}"
    );
    let internal = fails(b, &["topic", "delete", "__consumer_offsets"], 1);
    assert!(internal.contains("(code "), "{internal}");
    fails(b, &["consume", "events", "-p", "9", "-n", "1"], 1);
    for usage in [
        &["produce", "events", "--acks", "2"][..],
        &["consume", "events", "--from", "yesterday"],
        &["topic", "create", "t", "--partitions", "0"],
        &["topic", "create", "t", "--config", "novalue"],
        &[
            "group",
            "reset-offsets",
            "g",
            "-t",
            "events",
            "--to",
            "@soon",
        ],
        &["consume", "events", "-g", "g", "--from", "5"],
        &["topic", "alter-config", "events"],
    ] {
        fails(b, usage, 2);
    }
    let unreachable = fails(
        "127.0.0.1:1",
        &["cluster", "info", "--timeout-ms", "1000"],
        1,
    );
    assert!(
        unreachable.contains("127.0.0.1:1") && unreachable.lines().count() == 1,
        "{unreachable}"
    );
    let out = railyard(
        b,
        &["produce", "events", "-k", "::"],
        "k::v\nno separator\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("stdin line 2: no key separator"),
        "{stderr}"
    );
}

/// `cluster config set` turns the balancer off (and refuses bad values and a per-broker
/// switch); then `partition reassign` moves (here: reorders) a partition's replicas and waits
/// for it, `partition reassignments` lists nothing afterwards, and bad reassignments get one
/// line with Kafka's error code, or a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_partition_reassign_and_its_bad_input() {
    let c = cluster().await;
    let b = c.bootstrap();
    let b = b.as_str();
    // With the balancer on, it would answer our reorders by reordering other partitions.
    let set = ok(
        b,
        &[
            "cluster",
            "config",
            "set",
            "partition.autobalancing.enable=false",
        ],
        "",
    );
    assert_eq!(
        set,
        "NAME                            VALUE  SOURCE\npartition.autobalancing.enable  false  set\n"
    );
    let got = ok(b, &["cluster", "config", "get", "--format", "json"], "");
    assert!(
        got.contains("\"partition.autobalancing.enable\": {\n      \"value\": \"false\""),
        "{got}"
    );
    for (args, code) in [
        (
            &["partition.autobalancing.enable=maybe"][..],
            "INVALID_CONFIG",
        ),
        (
            &["--broker", "2", "partition.autobalancing.enable=false"],
            "INVALID_CONFIG",
        ),
    ] {
        let e = fails(b, &[&["cluster", "config", "set"][..], args].concat(), 1);
        assert!(e.contains(code), "{e}");
    }
    fails(b, &["cluster", "config", "set", "novalue"], 2);
    // Moves the balancer started before it was turned off finish on their own.
    eventually("no moves in flight", SETTLE, || {
        let listed = ok(b, &["partition", "reassignments"], "");
        (listed.lines().count() == 1).then_some(()).ok_or(listed)
    });
    for target in ["3,1,2", "2,3,1"] {
        let out = ok(
            b,
            &[
                "partition",
                "reassign",
                "events:0",
                "--replicas",
                target,
                "--wait",
            ],
            "",
        );
        assert_eq!(out, "events:0 reassigned (done)\n");
    }
    let listed = ok(b, &["partition", "reassignments"], "");
    assert_eq!(listed, "TOPIC  PARTITION  REPLICAS  ADDING  REMOVING\n");
    let json = ok(b, &["partition", "reassignments", "--format", "json"], "");
    assert!(json.contains("\"reassignments\": []"), "{json}");
    // The reordered replicas, preferred leader first, as Metadata reports them.
    let described = ok(b, &["topic", "describe", "events"], "");
    let row = described
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION "))
        .nth(1);
    let cells: Vec<&str> = row.unwrap_or_default().split_whitespace().collect();
    assert_eq!(cells.get(3), Some(&"2,3,1"), "{described}");

    for target in ["1,1,2", "1,2,9"] {
        let e = fails(
            b,
            &["partition", "reassign", "events:0", "--replicas", target],
            1,
        );
        assert!(e.contains("INVALID_REPLICA_ASSIGNMENT (code 39)"), "{e}");
    }
    let e = fails(b, &["partition", "reassign", "events:0", "--cancel"], 1);
    assert!(e.contains("NO_REASSIGNMENT_IN_PROGRESS (code 85)"), "{e}");
    let e = fails(
        b,
        &[
            "partition",
            "reassign",
            "events:7",
            "--replicas",
            "1,2,3",
            "--timeout-ms",
            "2000",
        ],
        1,
    );
    assert!(e.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{e}");
    for usage in [
        &["partition", "reassign", "events:0"][..],
        &["partition", "reassign", "events", "--replicas", "1"],
        &[
            "partition",
            "reassign",
            "events:0",
            "--replicas",
            "1",
            "--cancel",
        ],
        &["partition", "reassign", "events:0", "--replicas", "x"],
    ] {
        fails(b, usage, 2);
    }
}
