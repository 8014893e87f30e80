//! The report of one run: what was measured, the machine's limits from the same run, and the
//! ratio of each figure to its limit; rendered as a table for people or JSON for scripts.
//!
//! Throughput is payload only: MB/s is 10^6 bytes of record values per second, as
//! kafka-producer-perf-test counts it; batch headers and keys are not in it.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::{BenchConfig, Mode};
use super::tally::Tally;
use crate::file_disk::ProbeResult;

/// Everything a run prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub settings: Settings,
    /// Records measured (after the warm-up).
    pub records: u64,
    /// Records that failed for good.
    pub failed: u64,
    pub payload_bytes: u64,
    /// The measurement window: warm-up end to the last ack or receipt.
    pub window_s: f64,
    pub mb_s: f64,
    pub records_s: f64,
    /// Send → ack (produce) or send → receive (e2e); `None` for consume.
    pub latency_ms: Option<LatencyMs>,
    /// The producers' average batch on the wire, bytes (the fsync probe's block).
    pub avg_batch_bytes: Option<f64>,
    /// consume: records produced first because the topic held fewer than `--records`.
    pub topped_up: Option<u64>,
    pub limits: Limits,
    pub ratios: Ratios,
    /// p50/p99/max per second of the window (the SVG plot's data).
    pub per_second: Vec<SecondRow>,
    /// The first delivery error, when some records failed.
    pub first_error: Option<String>,
}

/// The settings the run used (after defaults).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub record_size_bytes: usize,
    pub producers: usize,
    pub consumers: usize,
    pub acks: String,
    pub compression: String,
    pub idempotence: bool,
    pub linger_ms: u64,
    pub batch_size_bytes: usize,
    /// 0: unpaced.
    pub rate_rec_s: f64,
    pub warmup_s: f64,
}

/// Latency percentiles, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The machine's limits, measured in the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limits {
    pub fsync_block_bytes: usize,
    pub fsync_mb_s: f64,
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
    /// Replicas assumed to share the probed disk (the fsync bandwidth is divided by it).
    pub replicas_per_disk: u32,
    pub tcp_mb_s: f64,
}

/// Each figure over its limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// mb_s over the limit named in `throughput_limit`.
    pub throughput_vs_limit: f64,
    /// What the throughput was divided by.
    pub throughput_limit: String,
    /// Latency p99 over the fdatasync p99 (produce, e2e).
    pub p99_vs_fsync_p99: Option<f64>,
}

/// One second of the window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SecondRow {
    pub t_s: u64,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the limits measured, before they become a [`Limits`].
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub fsync: ProbeResult,
    pub tcp_mb_s: f64,
    pub replicas_per_disk: u32,
}

impl LatencyMs {
    /// The percentiles of `h` (µs), or `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<LatencyMs> {
        if h.is_empty() {
            return None;
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1e3;
        Some(LatencyMs {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1e3,
        })
    }
}

impl Report {
    /// The report of `tally` under `cfg` (topic created with `replication_factor`).
    pub fn new(
        cfg: &BenchConfig,
        replication_factor: i16,
        tally: &Tally,
        avg_batch_bytes: Option<f64>,
        measured: &Measured,
    ) -> Report {
        let window_s = tally.window_s();
        let per_s = |x: f64| if window_s > 0.0 { x / window_s } else { 0.0 };
        let mb_s = per_s(tally.bytes as f64) / 1e6;
        let latency_ms = LatencyMs::of(&tally.latency_us);
        let limits = Limits {
            fsync_block_bytes: measured.fsync.block_bytes,
            fsync_mb_s: measured.fsync.mb_per_s,
            fsync_p50_ms: measured.fsync.median_us / 1e3,
            fsync_p99_ms: measured.fsync.p99_us / 1e3,
            replicas_per_disk: measured.replicas_per_disk,
            tcp_mb_s: measured.tcp_mb_s,
        };
        Report {
            mode: cfg.mode,
            settings: Settings::of(cfg, replication_factor),
            records: tally.records,
            failed: tally.failed,
            payload_bytes: tally.bytes,
            window_s,
            mb_s,
            records_s: per_s(tally.records as f64),
            ratios: ratios(cfg.mode, mb_s, latency_ms.as_ref(), &limits),
            latency_ms,
            avg_batch_bytes,
            topped_up: None,
            limits,
            per_second: per_second(&tally.per_second_us),
            first_error: tally.first_error.clone(),
        }
    }

    /// The JSON form (one object, pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report has no maps with non-string keys")
    }

    /// The table form.
    pub fn to_table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "railyard bench {}: {} ({} partitions, RF {}), {} B records, {} producer(s), {} \
             consumer(s), acks={}, idempotence={}, compression={}, linger {} ms, batch {} B, {}\n",
            mode_name(self.mode),
            s.topic,
            s.partitions,
            s.replication_factor,
            s.record_size_bytes,
            s.producers,
            s.consumers,
            s.acks,
            s.idempotence,
            s.compression,
            s.linger_ms,
            s.batch_size_bytes,
            rate_text(s.rate_rec_s),
        );
        out += &format!(
            "records      {} measured, {} failed, in {:.2} s{}\n",
            self.records,
            self.failed,
            self.window_s,
            self.topped_up
                .map(|n| format!(" (topped up with {n} records first)"))
                .unwrap_or_default()
        );
        out += &format!(
            "throughput   {:.2} MB/s, {:.0} records/s = {:.2} x {}\n",
            self.mb_s,
            self.records_s,
            self.ratios.throughput_vs_limit,
            self.ratios.throughput_limit
        );
        if let Some(l) = &self.latency_ms {
            out += &format!(
                "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({}, n={})\n",
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                latency_name(self.mode),
                l.count
            );
        }
        if let Some(r) = self.ratios.p99_vs_fsync_p99 {
            out += &format!(
                "             p99 = {r:.2} x fdatasync p99 ({:.3} ms @ {} B)\n",
                self.limits.fsync_p99_ms, self.limits.fsync_block_bytes
            );
        }
        if let Some(b) = self.avg_batch_bytes {
            out += &format!("avg batch    {b:.0} B on the wire\n");
        }
        let l = &self.limits;
        out += &format!(
            "limits       write+fdatasync @ {} B: {:.1} MB/s, p50 {:.3} ms, p99 {:.3} ms; \
             loopback TCP (1 stream): {:.0} MB/s\n",
            l.fsync_block_bytes, l.fsync_mb_s, l.fsync_p50_ms, l.fsync_p99_ms, l.tcp_mb_s
        );
        if let Some(e) = &self.first_error {
            out += &format!("first error  {e}\n");
        }
        out
    }
}

impl Settings {
    fn of(cfg: &BenchConfig, replication_factor: i16) -> Settings {
        Settings {
            brokers: cfg.brokers.clone(),
            topic: cfg.topic.clone(),
            partitions: cfg.partitions,
            replication_factor,
            record_size_bytes: cfg.record_size_bytes,
            producers: cfg.producers,
            consumers: cfg.consumers,
            acks: match cfg.acks {
                railyard_client::Acks::None => "0",
                railyard_client::Acks::Leader => "1",
                railyard_client::Acks::All => "all",
            }
            .into(),
            compression: format!("{:?}", cfg.compression).to_lowercase(),
            idempotence: cfg.idempotence,
            linger_ms: cfg.linger_ms,
            batch_size_bytes: cfg.batch_size_bytes,
            rate_rec_s: cfg.rate_rec_s,
            warmup_s: cfg.warmup_s,
        }
    }
}

/// Produce and e2e against the disk (each acknowledged record was fsynced on every replica
/// sharing it), consume against one TCP stream.
fn ratios(mode: Mode, mb_s: f64, latency: Option<&LatencyMs>, l: &Limits) -> Ratios {
    let (limit, name) = match mode {
        Mode::Consume => (
            l.tcp_mb_s,
            format!("loopback TCP, 1 stream ({:.0} MB/s)", l.tcp_mb_s),
        ),
        Mode::Produce | Mode::E2e => {
            let ceiling = l.fsync_mb_s / f64::from(l.replicas_per_disk.max(1));
            (
                ceiling,
                format!(
                    "write+fdatasync MB/s @ {} B / {} replicas sharing the disk ({:.1} MB/s)",
                    l.fsync_block_bytes, l.replicas_per_disk, ceiling
                ),
            )
        }
    };
    Ratios {
        throughput_vs_limit: if limit > 0.0 { mb_s / limit } else { 0.0 },
        throughput_limit: name,
        p99_vs_fsync_p99: latency
            .filter(|_| l.fsync_p99_ms > 0.0)
            .map(|lat| lat.p99 / l.fsync_p99_ms),
    }
}

/// The median of the finite values of `v` (NaN when there are none): how the benches in
/// `tests/benches/` summarise several runs.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

fn per_second(hs: &[Histogram<u64>]) -> Vec<SecondRow> {
    hs.iter()
        .enumerate()
        .filter(|(_, h)| !h.is_empty())
        .map(|(i, h)| SecondRow {
            t_s: i as u64,
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
            max_ms: h.max() as f64 / 1e3,
        })
        .collect()
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Produce => "produce",
        Mode::Consume => "consume",
        Mode::E2e => "e2e",
    }
}

/// What the latency of `m` spans.
pub fn latency_name(m: Mode) -> &'static str {
    match m {
        Mode::Produce => "send -> ack",
        Mode::E2e => "send -> receive",
        Mode::Consume => "none",
    }
}

fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("open loop at {rate:.0} records/s")
    } else {
        "unpaced".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Report {
        let cfg = BenchConfig::defaults(Mode::Produce, "127.0.0.1:9092");
        let fsync = ProbeResult {
            block_bytes: 65536,
            iters: 500,
            median_us: 800.0,
            p99_us: 2000.0,
            max_us: 3000.0,
            mb_per_s: 81.92,
        };
        let measured = Measured {
            fsync,
            tcp_mb_s: 4000.0,
            replicas_per_disk: 3,
        };
        let t0 = std::time::Instant::now();
        let mut tally = Tally::new(t0);
        for i in 0..1000u64 {
            let at = t0 + std::time::Duration::from_millis(i * 2);
            let lat = std::time::Duration::from_micros(1000 + i * 3);
            tally.record(at, 1024, Some(lat));
        }
        Report::new(&cfg, 3, &tally, Some(65000.0), &measured)
    }

    // Proves the table's layout and arithmetic: MB/s of payload, the ceiling divided by the
    // replicas sharing the disk, p99 over the fdatasync p99.
    #[test]
    fn test_table_snapshot() {
        insta::assert_snapshot!(fixed().to_table());
    }

    // Proves the median of odd and even counts, and that NaNs are left out.
    #[test]
    fn test_median() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
    }

    // Proves the JSON carries the figures a script reads, with percentiles in order.
    #[test]
    fn test_json_fields() {
        let v: serde_json::Value = serde_json::from_str(&fixed().to_json()).unwrap();
        assert_eq!(v["mode"], "produce");
        assert_eq!(v["records"], 1000);
        let l = &v["latency_ms"];
        assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
        assert_eq!(v["limits"]["replicas_per_disk"], 3);
        assert_eq!(v["per_second"].as_array().unwrap().len(), 2);
    }
}
