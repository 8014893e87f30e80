//! The machine's limits, measured in the same run as the figures they bound: write +
//! fdatasync bandwidth and latency at the run's batch size (what every acknowledged produce
//! waits for on each replica), and one loopback TCP stream (what a consumer's fetches can at
//! most carry on one machine). The cluster bench (`tests/benches/cluster.rs`) and the client
//! comparison (`tests/benches/clients.rs`) call these too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::file_disk::{FileDisk, ProbeResult};

/// The page size fsync probes round up to: the page cache writes back whole pages anyway.
const PROBE_BLOCK_ALIGN_BYTES: usize = 4096;
/// Most appends one fsync probe makes, so a fast disk does not turn it into a long run.
const PROBE_ITERS_MAX: usize = 5_000;
/// Fewest appends, so that a p99 means something.
const PROBE_ITERS_MIN: usize = 50;
/// One write or read of the TCP probe.
const TCP_CHUNK_BYTES: usize = 1 << 20;

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The probe directory could not be made, or the disk failed under the probe.
    #[error("fsync probe in {dir}: {reason}")]
    Disk { dir: PathBuf, reason: String },
    /// A loopback socket failed.
    #[error("loopback TCP probe: {0}")]
    Tcp(#[from] std::io::Error),
}

/// write + fdatasync of `block_bytes` appends in a fresh temp dir under `dir` (same filesystem
/// as the brokers' data if `dir` is on it), for about `duration_s`; the dir is removed after.
pub fn fsync_probe(
    dir: &Path,
    block_bytes: usize,
    duration_s: f64,
) -> Result<ProbeResult, LimitsError> {
    let root = dir.join(format!(".railyard-fsync-probe-{}", std::process::id()));
    let disk_err = |reason: String| LimitsError::Disk {
        dir: dir.to_path_buf(),
        reason,
    };
    let _cleanup = RemoveOnDrop(root.clone());
    let disk = FileDisk::open(&root).map_err(|e| disk_err(e.to_string()))?;
    let first = disk
        .fsync_probe(block_bytes, 5)
        .map_err(|e| disk_err(e.to_string()))?;
    let iters = ((duration_s * 1e6 / first.median_us.max(1.0)) as usize)
        .clamp(PROBE_ITERS_MIN, PROBE_ITERS_MAX);
    disk.fsync_probe(block_bytes, iters)
        .map_err(|e| disk_err(e.to_string()))
}

/// The probe block for an average batch of `avg_batch_bytes`: rounded up to whole pages, one
/// page when unknown.
pub fn probe_block_bytes(avg_batch_bytes: Option<f64>) -> usize {
    let b = match avg_batch_bytes {
        Some(b) if b.is_finite() && b > 0.0 => b as usize,
        _ => PROBE_BLOCK_ALIGN_BYTES,
    };
    b.div_ceil(PROBE_BLOCK_ALIGN_BYTES).max(1) * PROBE_BLOCK_ALIGN_BYTES
}

/// One loopback TCP stream: MB/s (10^6 B) of `bytes` pushed in 1 MiB writes and read in 1 MiB
/// reads by another thread.
pub fn loopback_tcp_mb_s(bytes: u64) -> Result<f64, LimitsError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; TCP_CHUNK_BYTES];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(n),
                k => n += k as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let chunk = vec![7u8; TCP_CHUNK_BYTES];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes.max(1) {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| std::io::Error::other("the reader thread panicked"))??;
    if got != sent {
        return Err(
            std::io::Error::other(format!("read {got} of the {sent} bytes written")).into(),
        );
    }
    Ok(sent as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Removes a probe directory however the probe returns.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves probe blocks are whole pages and an unknown batch probes one page.
    #[test]
    fn test_probe_block_rounds_to_pages() {
        assert_eq!(probe_block_bytes(None), 4096);
        assert_eq!(probe_block_bytes(Some(f64::NAN)), 4096);
        assert_eq!(probe_block_bytes(Some(1.0)), 4096);
        assert_eq!(probe_block_bytes(Some(4097.0)), 8192);
    }

    // Proves the fsync probe measures and leaves nothing behind, and a bad dir is an error.
    #[test]
    fn test_fsync_probe_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let r = fsync_probe(dir.path(), 4096, 0.01).unwrap();
        assert!(r.iters >= PROBE_ITERS_MIN && r.mb_per_s > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(fsync_probe(&file, 4096, 0.01).is_err());
    }

    // Proves the TCP probe moves the bytes and reports a rate.
    #[test]
    fn test_loopback_tcp_reports_a_rate() {
        assert!(loopback_tcp_mb_s(4 << 20).unwrap() > 0.0);
    }
}
