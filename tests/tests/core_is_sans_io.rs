//! Proves that `railyard-core` stays sans-IO: its dependency tree holds no IO runtime, and its
//! source uses no file system, sockets, threads, wall clock, unseeded randomness or std
//! `HashMap` (whose iteration order is random per process).

use std::path::{Path, PathBuf};
use std::process::Command;

fn core_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("core source dir is readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn test_core_source_uses_no_io_clock_threads_or_unseeded_rng() {
    let forbidden = [
        "std::fs",
        "std::net",
        "tokio",
        "std::thread",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "HashMap",
        "HashSet",
        "from_entropy",
    ];
    let mut files = Vec::new();
    rust_files(&core_dir().join("src"), &mut files);
    assert!(
        files.len() >= 8,
        "found only {} core source files",
        files.len()
    );
    let mut hits = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("source is utf-8");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    hits.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(hits.is_empty(), "core is not sans-IO:\n{}", hits.join("\n"));
}

#[test]
fn test_core_dependency_tree_has_no_io_runtime() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "railyard-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(core_dir())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("raft v0.7"), "unexpected tree:\n{tree}");
    for io_crate in ["tokio ", "mio ", "async-std ", "socket2 ", "madsim "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(io_crate)),
            "railyard-core depends on {io_crate}:\n{tree}"
        );
    }
}
