//! `railyard bench` through the real binary against an in-process 3-node cluster (files with
//! fdatasync, loopback TCP): its JSON report has records, ordered percentiles and the
//! machine's limits; a bad flag is one line on stderr and a non-zero exit.

use std::process::{Command, Output};
use std::time::Duration;

use railyard_tests::{topic, Disks, InProcessCluster, Spec};

const TOPIC: &str = "bench-it";

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_railyard"))
        .arg("bench")
        .args(args)
        .env_remove("RAILYARD_BROKERS")
        .output()
        .expect("running railyard bench")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "railyard bench failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// The figures every report must have, sane.
fn check_report(v: &serde_json::Value) {
    assert!(v["records"].as_u64().unwrap() > 0, "{v}");
    assert!(v["mb_s"].as_f64().unwrap() > 0.0, "{v}");
    let l = &v["latency_ms"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
    let limits = &v["limits"];
    assert!(limits["fsync_mb_s"].as_f64().unwrap() > 0.0, "{limits}");
    assert!(limits["tcp_mb_s"].as_f64().unwrap() > 0.0, "{limits}");
    assert!(v["ratios"]["throughput_vs_limit"].as_f64().unwrap() > 0.0);
}

// Proves produce and e2e runs against a real cluster report records, p50 <= p99 <= max and
// the limits, as JSON on stdout; and that e2e writes its SVG plot.
#[test]
fn test_bench_produce_and_e2e_report_json() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spec = Spec::new(3, vec![topic(TOPIC, 1, 3)]);
    let cluster = rt.block_on(InProcessCluster::start_spec(&spec, Disks::Files));
    rt.block_on(cluster.wait_for_leaders(Duration::from_secs(30)));
    let brokers = cluster.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().to_str().unwrap();
    let common = ["-b", &brokers, "--topic", TOPIC, "--format", "json"];
    let mut args = common.to_vec();
    args.extend([
        "produce",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--record-size",
        "512",
    ]);
    args.extend([
        "--idempotence",
        "false",
        "--rate",
        "2000",
        "--data-dir-probe",
        probe,
    ]);
    let v = json_of(&bench(&args));
    check_report(&v);
    assert_eq!(v["mode"], "produce");

    let svg = dir.path().join("e2e.svg");
    let mut args = common.to_vec();
    args.extend(["e2e", "--duration", "1", "--warmup", "0.5", "--rate", "300"]);
    args.extend(["--idempotence", "false", "--data-dir-probe", probe]);
    args.extend(["--svg", svg.to_str().unwrap()]);
    let v = json_of(&bench(&args));
    check_report(&v);
    assert_eq!(v["mode"], "e2e");
    let plot = std::fs::read_to_string(&svg).expect("the SVG plot");
    assert!(plot.starts_with("<svg") && plot.contains("<polyline"));
    drop(cluster);
    rt.shutdown_timeout(Duration::from_secs(2));
}

// Proves a bad flag value exits non-zero with one line naming the flag, before any broker is
// contacted.
#[test]
fn test_bench_bad_flag_is_one_line() {
    for (flag, value) in [
        ("--record-size", "0"),
        ("--acks", "2"),
        ("--compression", "foo"),
        ("--rate", "-1"),
    ] {
        let out = bench(&["produce", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(out.stdout.is_empty());
    }
}
