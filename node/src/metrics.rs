//! The node's metrics registry and its Prometheus text rendering.
//!
//! One [`Metrics`] per node, shared through an `Arc` by whoever records into it: the Kafka
//! listener counts requests, bytes, error codes and latency per API; the runtime observes each
//! fsync and publishes a [`PartitionStats`] snapshot of its replicas (raft term, commit index,
//! high watermark, leadership, replicas and in-sync replicas). The admin endpoint
//! ([`crate::admin`]) renders everything with [`Metrics::render_prometheus`].
//!
//! Counters are atomics, so the request path takes no lock for them. Latencies go to
//! hdrhistograms (microseconds, three significant digits), each behind its own mutex and
//! allocated on first use, so an API nobody calls costs no histogram. They are exposed as
//! Prometheus *histograms* over [`LATENCY_BUCKETS_US`] rather than as summaries: bucket counters
//! can be summed across nodes and turned into quantiles over any window with
//! `histogram_quantile(0.99, rate(..._bucket[5m]))`, where a summary's quantiles would cover the
//! whole life of the process. The exact quantiles since start stay available to code (tests,
//! benchmarks) through [`Metrics::request_latency_quantile`] and [`Metrics::fsync_quantile`].

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use railyard_core::types::{NodeId, Offset, PartitionId, Term};
use serde::Serialize;

/// Upper bounds (inclusive, microseconds) of the latency histogram buckets, from a fast
/// fdatasync to a long-polling fetch; `+Inf` follows implicitly.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The largest latency a histogram tells apart (one hour); longer ones are recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Slots for per-API statistics, indexed by Kafka API key. Every key Kafka defines is below
/// this (the highest in kafka-protocol 0.18 is 92); a test keeps it that way.
const API_KEY_SLOTS: usize = 128;

/// One hosted partition as the runtime last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: PartitionId,
    /// The replica's current raft term (Kafka's leader epoch).
    pub term: Term,
    /// The raft commit index.
    pub commit_index: u64,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    /// Whether this node is the partition's leader.
    pub is_leader: bool,
    /// The partition's voters.
    pub replicas: Vec<NodeId>,
    /// The voters caught up with the leader; only meaningful on the leader.
    pub isr: Vec<NodeId>,
}

impl PartitionStats {
    /// A leader with fewer in-sync replicas than replicas (Kafka's UnderReplicatedPartitions).
    /// Followers do not know the ISR, so only leaders count.
    pub fn is_under_replicated(&self) -> bool {
        self.is_leader && self.isr.len() < self.replicas.len()
    }
}

/// Why the Kafka listener closed a connection, as counted by
/// [`Metrics::record_connection_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectionErrorKind {
    /// The socket failed or the client left in the middle of a frame.
    Io,
    /// A length prefix over the frame limit.
    FrameTooLarge,
    /// A length prefix too short for a request header (or negative).
    FrameTooShort,
    /// An api key Kafka does not define.
    UnknownApiKey,
    /// An API we do not implement or a version we do not advertise.
    UnsupportedVersion,
    /// A body declaring impossible array lengths.
    Refused,
    /// An undecodable header or body.
    Decode,
    /// A response that did not encode (a bug of ours).
    Encode,
    /// An acks=0 produce that failed on some partition.
    AcksZeroProduceFailed,
}

impl ConnectionErrorKind {
    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            ConnectionErrorKind::Io => "io",
            ConnectionErrorKind::FrameTooLarge => "frame_too_large",
            ConnectionErrorKind::FrameTooShort => "frame_too_short",
            ConnectionErrorKind::UnknownApiKey => "unknown_api_key",
            ConnectionErrorKind::UnsupportedVersion => "unsupported_version",
            ConnectionErrorKind::Refused => "refused",
            ConnectionErrorKind::Decode => "decode",
            ConnectionErrorKind::Encode => "encode",
            ConnectionErrorKind::AcksZeroProduceFailed => "acks0_produce_failed",
        }
    }
}

/// The node's metrics. `Send + Sync`; share it with `Arc`.
pub struct Metrics {
    apis: Box<[ApiStats]>,
    fsync: Mutex<Option<Latency>>,
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    connection_errors: Mutex<BTreeMap<ConnectionErrorKind, u64>>,
    partitions: Mutex<Published>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            apis: (0..API_KEY_SLOTS).map(|_| ApiStats::default()).collect(),
            fsync: Mutex::new(None),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connection_errors: Mutex::new(BTreeMap::new()),
            partitions: Mutex::new(Published::default()),
        }
    }

    /// Records one Kafka request: its frame size (length prefix included), the response size
    /// (0 when nothing was sent) and the time from the frame being read to the response being
    /// written.
    pub fn record_request(&self, api: ApiKey, latency: Duration, bytes_in: u64, bytes_out: u64) {
        let Some(stats) = self.apis.get(api as usize) else {
            return;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        stats.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        Latency::record(&mut lock(&stats.latency), latency);
    }

    /// Records one non-zero error code returned in a response of `api` (top-level, per topic or
    /// per partition: each occurrence counts).
    pub fn record_error_code(&self, api: ApiKey, code: i16) {
        if code == 0 {
            return;
        }
        if let Some(stats) = self.apis.get(api as usize) {
            *lock(&stats.errors).entry(code).or_insert(0) += 1;
        }
    }

    /// Records a connection the listener closed because of a bad or failed request.
    pub fn record_connection_error(&self, kind: ConnectionErrorKind) {
        *lock(&self.connection_errors).entry(kind).or_insert(0) += 1;
    }

    /// Records an accepted Kafka connection; pair with [`Metrics::connection_closed`].
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        let before = self.connections_open.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "connection closed that was never opened");
    }

    /// Records the duration of one fsync (fdatasync) of the data directory.
    pub fn observe_fsync(&self, latency: Duration) {
        Latency::record(&mut lock(&self.fsync), latency);
    }

    /// Replaces the hosted partitions' statistics (the runtime calls this whenever it
    /// republishes its view).
    pub fn set_partitions(&self, partitions: Vec<PartitionStats>) {
        let mut p = lock(&self.partitions);
        p.stats = partitions;
        p.at = Some(Instant::now());
    }

    /// The last published partition statistics.
    pub fn partitions(&self) -> Vec<PartitionStats> {
        lock(&self.partitions).stats.clone()
    }

    /// Time since the last [`Metrics::set_partitions`], `None` if it was never called.
    pub fn partitions_age(&self) -> Option<Duration> {
        lock(&self.partitions).at.map(|at| at.elapsed())
    }

    /// Requests of `api` recorded so far.
    pub fn requests(&self, api: ApiKey) -> u64 {
        self.apis
            .get(api as usize)
            .map_or(0, |s| s.requests.load(Ordering::Relaxed))
    }

    /// Occurrences of error `code` in responses of `api`.
    pub fn error_codes(&self, api: ApiKey, code: i16) -> u64 {
        self.apis
            .get(api as usize)
            .and_then(|s| lock(&s.errors).get(&code).copied())
            .unwrap_or(0)
    }

    /// Connections closed for `kind`.
    pub fn connection_errors(&self, kind: ConnectionErrorKind) -> u64 {
        lock(&self.connection_errors)
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// The `q` quantile (0..=1) of `api`'s latency since start, `None` before any request.
    pub fn request_latency_quantile(&self, api: ApiKey, q: f64) -> Option<Duration> {
        let stats = self.apis.get(api as usize)?;
        lock(&stats.latency).as_ref().map(|l| l.quantile(q))
    }

    /// How many fsyncs since start took longer than `threshold` (a benchmark diffs it around a
    /// phase to tell disk stalls from other tail latency).
    pub fn fsyncs_slower_than(&self, threshold: Duration) -> u64 {
        let us = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX);
        lock(&self.fsync).as_ref().map_or(0, |l| {
            l.histogram
                .iter_recorded()
                .filter(|v| v.value_iterated_to() > us)
                .map(|v| v.count_at_value())
                .sum()
        })
    }

    /// The `q` quantile (0..=1) of fsync latency since start, `None` before any fsync.
    pub fn fsync_quantile(&self, q: f64) -> Option<Duration> {
        lock(&self.fsync).as_ref().map(|l| l.quantile(q))
    }

    /// Everything in the Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let mut w = Exposition::default();
        self.render_requests(&mut w);
        self.render_connections(&mut w);
        w.family(
            "railyard_fsync_duration_seconds",
            "histogram",
            "Duration of fsyncs (fdatasync) of the data directory.",
        );
        if let Some(l) = lock(&self.fsync).as_ref() {
            l.render(&mut w, "railyard_fsync_duration_seconds", &[]);
        }
        self.render_partitions(&mut w);
        w.out
    }

    fn render_requests(&self, w: &mut Exposition) {
        // Snapshot the APIs with traffic once, so every family lists the same label sets.
        let used: Vec<(String, &ApiStats)> = self
            .apis
            .iter()
            .enumerate()
            .filter(|(_, s)| s.requests.load(Ordering::Relaxed) > 0)
            .filter_map(|(key, s)| Some((api_label(key)?, s)))
            .collect();
        let counters: [ApiCounter; 3] = [
            (
                "railyard_kafka_requests_total",
                "Kafka requests received, by API.",
                |s| &s.requests,
            ),
            (
                "railyard_kafka_request_bytes_total",
                "Bytes of Kafka request frames received (length prefix included), by API.",
                |s| &s.bytes_in,
            ),
            (
                "railyard_kafka_response_bytes_total",
                "Bytes of Kafka response frames sent (length prefix included), by API.",
                |s| &s.bytes_out,
            ),
        ];
        for (name, help, field) in counters {
            w.family(name, "counter", help);
            for (api, s) in &used {
                w.sample(
                    name,
                    &[("api", api.as_str())],
                    field(s).load(Ordering::Relaxed),
                );
            }
        }

        let name = "railyard_kafka_errors_total";
        w.family(
            name,
            "counter",
            "Kafka error codes returned, by API and code; each erroring topic or partition counts.",
        );
        for (api, s) in &used {
            for (code, n) in lock(&s.errors).iter() {
                let code_label = code.to_string();
                let error = error_label(*code);
                let labels = [
                    ("api", api.as_str()),
                    ("code", &code_label),
                    ("error", &error),
                ];
                w.sample(name, &labels, n);
            }
        }

        let name = "railyard_kafka_request_duration_seconds";
        w.family(
            name,
            "histogram",
            "Time from a Kafka request frame being read to its response being written, by API.",
        );
        for (api, s) in &used {
            if let Some(l) = lock(&s.latency).as_ref() {
                l.render(w, name, &[("api", api.as_str())]);
            }
        }
    }

    fn render_connections(&self, w: &mut Exposition) {
        let name = "railyard_kafka_connections";
        w.family(name, "gauge", "Open Kafka client connections.");
        w.sample(name, &[], self.connections_open.load(Ordering::Relaxed));
        let name = "railyard_kafka_connections_total";
        w.family(name, "counter", "Kafka client connections accepted.");
        w.sample(name, &[], self.connections_total.load(Ordering::Relaxed));
        let name = "railyard_kafka_connection_errors_total";
        w.family(
            name,
            "counter",
            "Kafka connections closed by the listener because of a bad or failed request.",
        );
        for (kind, n) in lock(&self.connection_errors).iter() {
            w.sample(name, &[("reason", kind.label())], n);
        }
    }

    fn render_partitions(&self, w: &mut Exposition) {
        let published = lock(&self.partitions);
        let stats = &published.stats;
        let per_partition: [PartitionGauge; 7] = [
            (
                "railyard_partition_raft_term",
                "Raft term of the local replica (Kafka leader epoch).",
                |p| p.term.into(),
            ),
            (
                "railyard_partition_commit_index",
                "Raft commit index of the local replica.",
                |p| p.commit_index.into(),
            ),
            (
                "railyard_partition_high_watermark",
                "High watermark (first offset not yet committed) of the local replica.",
                |p| p.high_watermark.into(),
            ),
            (
                "railyard_partition_log_end_offset",
                "Next offset the local replica's log would assign.",
                |p| p.log_end_offset.into(),
            ),
            (
                "railyard_partition_leader",
                "1 if this node leads the partition, else 0.",
                |p| p.is_leader.into(),
            ),
            (
                "railyard_partition_replicas",
                "Number of replicas (voters) of the partition.",
                |p| p.replicas.len() as i128,
            ),
            (
                "railyard_partition_in_sync_replicas",
                "Number of in-sync replicas, as known to the local replica (0 on followers).",
                |p| p.isr.len() as i128,
            ),
        ];
        for (name, help, field) in per_partition {
            w.family(name, "gauge", help);
            for p in stats {
                let partition = p.partition.to_string();
                let labels = [("topic", p.topic.as_str()), ("partition", &partition)];
                w.sample(name, &labels, field(p));
            }
        }
        let node_gauges = [
            (
                "railyard_partitions",
                "Partitions with a replica on this node.",
                stats.len(),
            ),
            (
                "railyard_leader_partitions",
                "Partitions this node leads.",
                stats.iter().filter(|p| p.is_leader).count(),
            ),
            (
                "railyard_under_replicated_partitions",
                "Partitions this node leads whose in-sync replicas are fewer than their replicas.",
                stats.iter().filter(|p| p.is_under_replicated()).count(),
            ),
        ];
        for (name, help, value) in node_gauges {
            w.family(name, "gauge", help);
            w.sample(name, &[], value);
        }
        let name = "railyard_partition_stats_age_seconds";
        w.family(
            name,
            "gauge",
            "Seconds since the runtime last published partition statistics.",
        );
        if let Some(at) = published.at {
            w.sample(name, &[], at.elapsed().as_secs_f64());
        }
    }
}

/// A per-API counter family: name, help, and the counter it reads.
type ApiCounter = (&'static str, &'static str, fn(&ApiStats) -> &AtomicU64);

/// A per-partition gauge family: name, help, and the value it reads.
type PartitionGauge = (&'static str, &'static str, fn(&PartitionStats) -> i128);

/// Per-API statistics; the histogram is allocated by the first request.
#[derive(Default)]
struct ApiStats {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: Mutex<BTreeMap<i16, u64>>,
    latency: Mutex<Option<Latency>>,
}

#[derive(Default)]
struct Published {
    stats: Vec<PartitionStats>,
    at: Option<Instant>,
}

/// A latency distribution in microseconds, with the exact sum the histogram cannot give.
struct Latency {
    histogram: Histogram<u64>,
    sum_us: u64,
}

impl Latency {
    /// Records into `slot`, allocating the histogram on first use.
    fn record(slot: &mut Option<Latency>, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let l = slot.get_or_insert_with(|| Latency {
            // The bounds are constants that satisfy new_with_bounds' preconditions (low >= 1,
            // high >= 2 * low, sigfig <= 5), so this cannot fail.
            histogram: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("constant histogram bounds are valid"),
            sum_us: 0,
        });
        l.histogram.saturating_record(us.min(LATENCY_MAX_US));
        l.sum_us = l.sum_us.saturating_add(us);
    }

    fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.histogram.value_at_quantile(q))
    }

    /// Writes `_bucket`, `_sum` and `_count` samples of the histogram family `name`.
    ///
    /// Each recorded value is counted in the first bucket whose bound is at least the highest
    /// value equivalent to it at the histogram's resolution (0.1%), so a bucket never claims a
    /// request faster than it was.
    fn render(&self, w: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let mut counts = vec![0u64; LATENCY_BUCKETS_US.len()];
        for v in self.histogram.iter_recorded() {
            let value = v.value_iterated_to();
            if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&le| value <= le) {
                counts[i] += v.count_at_value();
            }
        }
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (le_us, n) in LATENCY_BUCKETS_US.iter().zip(counts) {
            cumulative += n;
            let le = seconds(*le_us).to_string();
            w.sample(&bucket, &with_label(labels, ("le", &le)), cumulative);
        }
        let count = self.histogram.len();
        debug_assert!(cumulative <= count, "buckets hold more than the histogram");
        w.sample(&bucket, &with_label(labels, ("le", "+Inf")), count);
        w.sample(&format!("{name}_sum"), labels, seconds(self.sum_us));
        w.sample(&format!("{name}_count"), labels, count);
    }
}

/// Builds the text exposition: a family's HELP and TYPE once, then its samples.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Metrics are plain counters: a panic elsewhere while holding the lock leaves nothing
    // half-updated that matters, so keep counting rather than propagate the poison.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `api` label: the API's name as Kafka's request metrics spell it (`Produce`, `Fetch`).
/// ApiKey has no name accessor, but the Debug form of a fieldless variant is its name.
fn api_label(key: usize) -> Option<String> {
    let api = ApiKey::try_from(i16::try_from(key).ok()?).ok()?;
    Some(format!("{api:?}"))
}

/// The `error` label: the error's name (`NotLeaderOrFollower`), or `Unknown`.
fn error_label(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::Unknown(_)) | None => "Unknown".to_owned(),
        Some(e) => format!("{e:?}"),
    }
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

fn with_label<'a>(
    labels: &[(&'a str, &'a str)],
    extra: (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    let mut v = labels.to_vec();
    v.push(extra);
    v
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// One parsed sample line: metric name, labels in order, value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A strict parser of the text format: checks every line and returns the samples and each
    /// family's type. Panics, naming the line, on anything the format does not allow.
    fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
        assert!(text.ends_with('\n'), "exposition must end with a line feed");
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helps: BTreeSet<String> = BTreeSet::new();
        let mut samples = Vec::new();
        let mut seen_samples_of: BTreeSet<String> = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has a name and text");
                assert!(valid_name(name), "bad HELP name: {line}");
                assert!(helps.insert(name.to_owned()), "HELP twice: {line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and kind");
                assert!(valid_name(name), "bad TYPE name: {line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE kind: {line}"
                );
                assert!(
                    !seen_samples_of.contains(name),
                    "TYPE after its samples: {line}"
                );
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "TYPE declared twice: {line}"
                );
            } else {
                assert!(
                    !line.starts_with('#') && !line.is_empty(),
                    "stray line: {line:?}"
                );
                let s = parse_sample(line);
                let family = family_of(&s.name, &types)
                    .unwrap_or_else(|| panic!("sample without a TYPE: {line}"));
                seen_samples_of.insert(family);
                samples.push(s);
            }
        }
        (samples, types)
    }

    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = parse_labels_from(after, line, &mut labels);
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before value: {line}"));
        assert!(!value.contains(' '), "timestamps are not emitted: {line}");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        Sample {
            name: name.to_owned(),
            labels,
            value,
        }
    }

    /// Parses `key="value",...}` and returns what follows the closing brace.
    fn parse_labels_from<'a>(
        mut s: &'a str,
        line: &str,
        labels: &mut Vec<(String, String)>,
    ) -> &'a str {
        loop {
            if let Some(rest) = s.strip_prefix('}') {
                return rest;
            }
            let eq = s
                .find('=')
                .unwrap_or_else(|| panic!("label without =: {line}"));
            let key = &s[..eq];
            assert!(
                valid_name(key) && !key.contains(':'),
                "bad label name: {line}"
            );
            s = s[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value: {line}"));
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                let (i, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated: {line}"));
                match c {
                    '"' => break i,
                    '\\' => {
                        let (_, e) = chars.next().unwrap_or_else(|| panic!("escape: {line}"));
                        value.push(match e {
                            '\\' => '\\',
                            '"' => '"',
                            'n' => '\n',
                            _ => panic!("bad escape in {line}"),
                        });
                    }
                    c => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            s = &s[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// The declared family a sample belongs to (histogram samples carry suffixes).
    fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
        if types.contains_key(name) {
            return Some(name.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let kind = types.get(base)?;
            (kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
                .then(|| base.to_owned())
        })
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    fn stats(topic: &str, partition: i32, leader: bool, isr: Vec<NodeId>) -> PartitionStats {
        PartitionStats {
            topic: topic.into(),
            partition,
            term: 7,
            commit_index: 42,
            high_watermark: 100,
            log_end_offset: 120,
            is_leader: leader,
            replicas: vec![1, 2, 3],
            isr,
        }
    }

    #[test]
    fn test_every_api_key_fits_a_slot() {
        // Per-API stats are indexed by key; a key past the slots would be silently dropped.
        for key in API_KEY_SLOTS as i16..=i16::MAX {
            assert!(ApiKey::try_from(key).is_err(), "api key {key} has no slot");
        }
    }

    #[test]
    fn test_empty_registry_renders_valid_exposition() {
        // Before anything is recorded every family is declared, with only the node gauges.
        let (samples, types) = parse(&Metrics::new().render_prometheus());
        assert!(types.keys().all(|n| n.starts_with("railyard_")));
        assert_eq!(types["railyard_kafka_requests_total"], "counter");
        assert_eq!(types["railyard_fsync_duration_seconds"], "histogram");
        assert_eq!(
            value(&samples, "railyard_leader_partitions", &[]),
            Some(0.0)
        );
        assert_eq!(
            value(&samples, "railyard_kafka_connections", &[]),
            Some(0.0)
        );
        assert!(value(&samples, "railyard_partition_stats_age_seconds", &[]).is_none());
    }

    #[test]
    fn test_request_counters_bytes_and_errors() {
        // Counters add up per API; error codes are labelled with code and name.
        let m = Metrics::new();
        m.record_request(ApiKey::Produce, Duration::from_micros(300), 1000, 60);
        m.record_request(ApiKey::Produce, Duration::from_micros(700), 500, 40);
        m.record_request(ApiKey::Fetch, Duration::from_millis(3), 80, 4096);
        m.record_error_code(ApiKey::Produce, 6);
        m.record_error_code(ApiKey::Produce, 6);
        m.record_error_code(ApiKey::Produce, 0);
        m.record_error_code(ApiKey::Fetch, 1);
        assert_eq!(m.requests(ApiKey::Produce), 2);
        assert_eq!(m.error_codes(ApiKey::Produce, 6), 2);
        let (samples, types) = parse(&m.render_prometheus());
        let produce = [("api", "Produce")];
        let fetch = [("api", "Fetch")];
        assert_eq!(types["railyard_kafka_errors_total"], "counter");
        let req = "railyard_kafka_requests_total";
        assert_eq!(value(&samples, req, &produce), Some(2.0));
        assert_eq!(value(&samples, req, &fetch), Some(1.0));
        assert_eq!(value(&samples, req, &[("api", "Metadata")]), None);
        let bytes_in = "railyard_kafka_request_bytes_total";
        assert_eq!(value(&samples, bytes_in, &produce), Some(1500.0));
        let bytes_out = "railyard_kafka_response_bytes_total";
        assert_eq!(value(&samples, bytes_out, &fetch), Some(4096.0));
        let errors = "railyard_kafka_errors_total";
        let not_leader = [
            ("api", "Produce"),
            ("code", "6"),
            ("error", "NotLeaderOrFollower"),
        ];
        assert_eq!(value(&samples, errors, &not_leader), Some(2.0));
        let out_of_range = [
            ("api", "Fetch"),
            ("code", "1"),
            ("error", "OffsetOutOfRange"),
        ];
        assert_eq!(value(&samples, errors, &out_of_range), Some(1.0));
        assert_eq!(
            samples.iter().filter(|s| s.name == errors).count(),
            2,
            "code 0 is not an error"
        );
    }

    #[test]
    fn test_latency_histogram_buckets_sum_and_count() {
        // Buckets are cumulative, end in +Inf equal to _count, and _sum is exact.
        let m = Metrics::new();
        for us in [40, 100, 900, 1_000, 30_000, 20_000_000] {
            m.record_request(ApiKey::Metadata, Duration::from_micros(us), 10, 10);
        }
        let (samples, _) = parse(&m.render_prometheus());
        let name = "railyard_kafka_request_duration_seconds";
        let bucket = |le: &str| {
            value(
                &samples,
                &format!("{name}_bucket"),
                &[("api", "Metadata"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.00005"), Some(1.0));
        assert_eq!(bucket("0.0001"), Some(2.0));
        assert_eq!(bucket("0.001"), Some(4.0));
        assert_eq!(bucket("0.025"), Some(4.0));
        assert_eq!(bucket("0.05"), Some(5.0));
        assert_eq!(bucket("10"), Some(5.0));
        assert_eq!(bucket("+Inf"), Some(6.0));
        let labels = [("api", "Metadata")];
        assert_eq!(
            value(&samples, &format!("{name}_count"), &labels),
            Some(6.0)
        );
        let sum = value(&samples, &format!("{name}_sum"), &labels).unwrap();
        assert!((sum - 20.03204).abs() < 1e-9, "sum {sum}");
        let mut last = 0.0;
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
        {
            assert!(s.value >= last, "buckets must be cumulative");
            last = s.value;
        }
        let p50 = m.request_latency_quantile(ApiKey::Metadata, 0.5).unwrap();
        assert_eq!(p50, Duration::from_micros(900));
    }

    #[test]
    fn test_fsync_histogram_and_quantiles() {
        // observe_fsync feeds its own histogram and exact quantiles.
        let m = Metrics::new();
        assert!(m.fsync_quantile(0.99).is_none());
        assert_eq!(m.fsyncs_slower_than(Duration::from_micros(1)), 0);
        for us in 1..=1000 {
            m.observe_fsync(Duration::from_micros(us));
        }
        assert_eq!(m.fsync_quantile(0.5), Some(Duration::from_micros(500)));
        assert_eq!(m.fsync_quantile(0.999), Some(Duration::from_micros(999)));
        assert_eq!(m.fsyncs_slower_than(Duration::from_micros(900)), 100);
        let (samples, _) = parse(&m.render_prometheus());
        let b = "railyard_fsync_duration_seconds_bucket";
        assert_eq!(value(&samples, b, &[("le", "0.00025")]), Some(250.0));
        assert_eq!(value(&samples, b, &[("le", "0.001")]), Some(1000.0));
        let count = "railyard_fsync_duration_seconds_count";
        assert_eq!(value(&samples, count, &[]), Some(1000.0));
    }

    #[test]
    fn test_partition_gauges_leaders_and_under_replication() {
        // Per-partition gauges follow the published stats; only leaders count as
        // under-replicated.
        let m = Metrics::new();
        m.set_partitions(vec![
            stats("orders", 0, true, vec![1, 2, 3]),
            stats("orders", 1, true, vec![1, 2]),
            stats("orders", 2, false, vec![]),
        ]);
        let (samples, types) = parse(&m.render_prometheus());
        assert_eq!(types["railyard_partition_raft_term"], "gauge");
        let p1 = [("topic", "orders"), ("partition", "1")];
        assert_eq!(
            value(&samples, "railyard_partition_raft_term", &p1),
            Some(7.0)
        );
        let commit = "railyard_partition_commit_index";
        assert_eq!(value(&samples, commit, &p1), Some(42.0));
        let hw = "railyard_partition_high_watermark";
        assert_eq!(value(&samples, hw, &p1), Some(100.0));
        let isr = "railyard_partition_in_sync_replicas";
        assert_eq!(value(&samples, isr, &p1), Some(2.0));
        let p2 = [("topic", "orders"), ("partition", "2")];
        assert_eq!(value(&samples, "railyard_partition_leader", &p2), Some(0.0));
        assert_eq!(value(&samples, "railyard_partitions", &[]), Some(3.0));
        assert_eq!(
            value(&samples, "railyard_leader_partitions", &[]),
            Some(2.0)
        );
        let under = "railyard_under_replicated_partitions";
        assert_eq!(value(&samples, under, &[]), Some(1.0));
        assert!(m.partitions_age().is_some());
        m.set_partitions(Vec::new());
        let (samples, _) = parse(&m.render_prometheus());
        assert_eq!(value(&samples, "railyard_partitions", &[]), Some(0.0));
        assert!(samples.iter().all(|s| s.name != commit));
    }

    #[test]
    fn test_label_values_are_escaped() {
        // Quotes, backslashes and line feeds in a label value survive a round trip.
        let m = Metrics::new();
        let topic = "we\"ird\\to\npic";
        m.set_partitions(vec![stats(topic, 0, true, vec![1, 2, 3])]);
        let text = m.render_prometheus();
        let (samples, _) = parse(&text);
        let labels = [("topic", topic), ("partition", "0")];
        let term = "railyard_partition_raft_term";
        assert_eq!(value(&samples, term, &labels), Some(7.0));
    }

    #[test]
    fn test_connection_counters() {
        // Open connections go up and down; refusals count by reason.
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.record_connection_error(ConnectionErrorKind::FrameTooLarge);
        assert_eq!(m.connection_errors(ConnectionErrorKind::FrameTooLarge), 1);
        let (samples, _) = parse(&m.render_prometheus());
        assert_eq!(
            value(&samples, "railyard_kafka_connections", &[]),
            Some(1.0)
        );
        let total = "railyard_kafka_connections_total";
        assert_eq!(value(&samples, total, &[]), Some(2.0));
        let errors = "railyard_kafka_connection_errors_total";
        let labels = [("reason", "frame_too_large")];
        assert_eq!(value(&samples, errors, &labels), Some(1.0));
    }
}
