//! The flags of `railyard bench` and their validation into a [`BenchConfig`].
//!
//! Numbers and names are taken as strings and checked here rather than by clap's typed
//! parsers: a bad value (`--record-size 0`, `--acks 2`, `--rate -1`) then gets one line that
//! names the flag, the value and what is allowed, and never a panic or clap's multi-line help.

use std::path::PathBuf;

use railyard_client::{Acks, Compression};

/// Which figure a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Producer throughput and send → acknowledgement latency.
    Produce,
    /// Consumer throughput, reading the topic from its start.
    Consume,
    /// End-to-end latency: the producer stamps each record, the consumers measure send → receive.
    E2e,
}

/// How the report is printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// `railyard bench MODE [flags]`, as typed.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// produce (throughput, send → ack latency), consume (read throughput) or e2e (send →
    /// receive latency).
    #[arg(value_enum)]
    pub mode: Mode,
    /// Bootstrap brokers, `host:port,...`.
    #[arg(
        short = 'b',
        long,
        env = "RAILYARD_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// The topic; created if missing.
    #[arg(long, default_value = "railyard-bench")]
    pub topic: String,
    /// Partitions of the topic if it is created.
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    pub partitions: String,
    /// Replication factor of the topic if it is created (default: min(3, brokers)).
    #[arg(long, allow_hyphen_values = true)]
    pub replication_factor: Option<String>,
    /// Bytes of payload per record (e2e needs at least 8 for the send stamp).
    #[arg(long, default_value = "1024", allow_hyphen_values = true)]
    pub record_size: String,
    /// Seconds to measure, after the warm-up (default 10 unless --records is given).
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Records to measure, after the warm-up (consume: reads the first N, topping the topic up
    /// to N if it holds fewer).
    #[arg(long, allow_hyphen_values = true)]
    pub records: Option<String>,
    /// Seconds of load before measuring (not used by consume).
    #[arg(long, default_value = "2", allow_hyphen_values = true)]
    pub warmup: String,
    /// Open-loop rate in records/s over all producers; 0 = as fast as possible. With a rate,
    /// latency counts from each record's intended send time.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub rate: String,
    /// Producer instances, each on its own task.
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    pub producers: String,
    /// Consumer instances (consume, e2e); partitions are split between them.
    #[arg(long, default_value = "1", allow_hyphen_values = true)]
    pub consumers: String,
    /// 0, 1 or all.
    #[arg(long, default_value = "all", allow_hyphen_values = true)]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// true or false (default: true with acks=all, else false).
    #[arg(long)]
    pub idempotence: Option<String>,
    /// How long a batch that is not full waits for more records.
    #[arg(long, default_value = "5", allow_hyphen_values = true)]
    pub linger_ms: String,
    /// A batch is sent once its records reach this many bytes.
    #[arg(long, default_value = "16384", allow_hyphen_values = true)]
    pub batch_size: String,
    /// table or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Write a latency-over-time plot (p50, p99, max per second) to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The fsync probe runs in a temp dir here (put it on the brokers' filesystem).
    #[arg(long, default_value = ".")]
    pub data_dir_probe: PathBuf,
    /// Replicas that share the probed disk: produce MB/s is compared with the fsync bandwidth
    /// divided by this (default: the replication factor, as in `railyard dev` on one machine).
    #[arg(long, allow_hyphen_values = true)]
    pub replicas_per_disk: Option<String>,
}

/// A validated run description; every field is in range.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    pub mode: Mode,
    pub brokers: String,
    pub topic: String,
    pub partitions: i32,
    /// `None`: min(3, the cluster's brokers).
    pub replication_factor: Option<i16>,
    pub record_size_bytes: usize,
    /// `None` with `records`: run until that many records are measured.
    pub duration_s: Option<f64>,
    pub records: Option<u64>,
    pub warmup_s: f64,
    /// 0: unpaced.
    pub rate_rec_s: f64,
    pub producers: usize,
    pub consumers: usize,
    pub acks: Acks,
    pub compression: Compression,
    pub idempotence: bool,
    pub linger_ms: u64,
    pub batch_size_bytes: usize,
    pub format: Format,
    pub svg: Option<PathBuf>,
    pub data_dir_probe: PathBuf,
    /// `None`: the replication factor.
    pub replicas_per_disk: Option<u32>,
}

/// A flag value that is out of range or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The value is not a number of the expected kind, or outside its range.
    #[error("invalid --{flag} {value:?}: {expected}")]
    Invalid {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Two flags that cannot go together.
    #[error("{0}")]
    Conflict(&'static str),
}

/// The longest run one invocation accepts: a day, so that a typo cannot start a week-long run.
const DURATION_S_MAX: f64 = 86_400.0;
/// The largest record: the client's default `max_request_size_bytes` less room for the batch.
const RECORD_SIZE_BYTES_MAX: usize = 1_000_000;
/// Producers or consumers of one run (each is a client with its own connections).
const CLIENTS_MAX: usize = 256;
/// Bytes the e2e stamp takes at the start of each value.
pub const STAMP_BYTES: usize = 8;
/// The measured duration when neither --duration nor --records is given.
const DURATION_S_DEFAULT: f64 = 10.0;

impl BenchConfig {
    /// The defaults of `railyard bench MODE` against `brokers`, as if no other flag were given.
    pub fn defaults(mode: Mode, brokers: &str) -> BenchConfig {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: BenchArgs,
        }
        let mode = clap::ValueEnum::to_possible_value(&mode)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        let wrap = Wrap::try_parse_from(["bench", &mode, "--brokers", brokers])
            .expect("the defaults parse: they are written in BenchArgs");
        validate(&wrap.args).expect("the defaults are in range")
    }

    /// Records each producer sends after the warm-up, if the run is bounded by a count.
    pub fn records_per_producer(&self) -> Option<u64> {
        self.records.map(|n| n.div_ceil(self.producers as u64))
    }
}

/// Checks every flag of `a`; the first bad one is the error.
pub fn validate(a: &BenchArgs) -> Result<BenchConfig, ArgsError> {
    let acks = parse_acks(&a.acks)?;
    let idempotence = match &a.idempotence {
        Some(v) => parse_bool("idempotence", v)?,
        None => acks == Acks::All,
    };
    if idempotence && acks != Acks::All {
        return Err(ArgsError::Conflict(
            "--idempotence true needs --acks all (the broker checks sequences only then)",
        ));
    }
    let record_size_bytes = int_in("record-size", &a.record_size, 1, RECORD_SIZE_BYTES_MAX)?;
    if a.mode == Mode::E2e && record_size_bytes < STAMP_BYTES {
        return Err(ArgsError::Conflict(
            "e2e needs --record-size of at least 8 bytes (the send stamp)",
        ));
    }
    let duration_s = a
        .duration
        .as_deref()
        .map(|v| float_in("duration", v, f64::MIN_POSITIVE, DURATION_S_MAX))
        .transpose()?;
    let records = a
        .records
        .as_deref()
        .map(|v| int_in("records", v, 1, u64::MAX as usize).map(|n| n as u64))
        .transpose()?;
    let replication_factor = a
        .replication_factor
        .as_deref()
        .map(|v| int_in("replication-factor", v, 1, i16::MAX as usize).map(|n| n as i16))
        .transpose()?;
    Ok(BenchConfig {
        mode: a.mode,
        brokers: parse_brokers(&a.brokers)?,
        topic: parse_topic(&a.topic)?,
        partitions: int_in("partitions", &a.partitions, 1, i32::MAX as usize)? as i32,
        replication_factor,
        record_size_bytes,
        duration_s: duration_s.or(records.is_none().then_some(DURATION_S_DEFAULT)),
        records,
        warmup_s: float_in("warmup", &a.warmup, 0.0, DURATION_S_MAX)?,
        rate_rec_s: float_in("rate", &a.rate, 0.0, 1e9)?,
        producers: int_in("producers", &a.producers, 1, CLIENTS_MAX)?,
        consumers: int_in("consumers", &a.consumers, 1, CLIENTS_MAX)?,
        acks,
        compression: parse_compression(&a.compression)?,
        idempotence,
        linger_ms: int_in("linger-ms", &a.linger_ms, 0, 60_000)? as u64,
        batch_size_bytes: int_in("batch-size", &a.batch_size, 1, 64 << 20)?,
        format: parse_format(&a.format)?,
        svg: a.svg.clone(),
        data_dir_probe: a.data_dir_probe.clone(),
        replicas_per_disk: a
            .replicas_per_disk
            .as_deref()
            .map(|v| int_in("replicas-per-disk", v, 1, 1024).map(|n| n as u32))
            .transpose()?,
    })
}

fn int_in(flag: &'static str, v: &str, min: usize, max: usize) -> Result<usize, ArgsError> {
    let bad = || ArgsError::Invalid {
        flag,
        value: v.to_string(),
        expected: match (min, max) {
            (0, _) => "a whole number >= 0",
            _ => "a whole number >= 1",
        },
    };
    let n: usize = v.trim().replace('_', "").parse().map_err(|_| bad())?;
    if n < min || n > max {
        return Err(bad());
    }
    Ok(n)
}

fn float_in(flag: &'static str, v: &str, min: f64, max: f64) -> Result<f64, ArgsError> {
    let expected = if min > 0.0 {
        "a number of seconds > 0 (at most a day)"
    } else if flag == "rate" {
        "a number of records/s >= 0 (0 = as fast as possible)"
    } else {
        "a number of seconds >= 0 (at most a day)"
    };
    let bad = || ArgsError::Invalid {
        flag,
        value: v.to_string(),
        expected,
    };
    let x: f64 = v.trim().parse().map_err(|_| bad())?;
    if !x.is_finite() || x < min || x > max {
        return Err(bad());
    }
    Ok(x)
}

/// `--acks`, spelled as for `railyard produce` (the CLI's parser).
fn parse_acks(v: &str) -> Result<Acks, ArgsError> {
    crate::cli::produce::parse_acks(v.trim()).map_err(|_| ArgsError::Invalid {
        flag: "acks",
        value: v.to_string(),
        expected: "0, 1 or all",
    })
}

/// `--compression`, the codec names of `railyard produce --compression`.
fn parse_compression(v: &str) -> Result<Compression, ArgsError> {
    <crate::cli::produce::Codec as clap::ValueEnum>::from_str(v.trim(), false)
        .map(Compression::from)
        .map_err(|_| ArgsError::Invalid {
            flag: "compression",
            value: v.to_string(),
            expected: "none, gzip, snappy, lz4 or zstd",
        })
}

fn parse_bool(flag: &'static str, v: &str) -> Result<bool, ArgsError> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ArgsError::Invalid {
            flag,
            value: v.to_string(),
            expected: "true or false",
        }),
    }
}

fn parse_format(v: &str) -> Result<Format, ArgsError> {
    match v.trim() {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        _ => Err(ArgsError::Invalid {
            flag: "format",
            value: v.to_string(),
            expected: "table or json",
        }),
    }
}

fn parse_brokers(v: &str) -> Result<String, ArgsError> {
    let ok = v.split(',').map(str::trim).all(|a| {
        a.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    });
    if !ok {
        return Err(ArgsError::Invalid {
            flag: "brokers",
            value: v.to_string(),
            expected: "host:port[,host:port...]",
        });
    }
    Ok(v.to_string())
}

fn parse_topic(v: &str) -> Result<String, ArgsError> {
    // Kafka's rule: 1 to 249 of [a-zA-Z0-9._-].
    let ok = (1..=249).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ArgsError::Invalid {
            flag: "topic",
            value: v.to_string(),
            expected: "1 to 249 characters of [a-zA-Z0-9._-]",
        });
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchConfig, ArgsError> {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        validate(
            &Wrap::try_parse_from(all)
                .expect("clap accepts the strings")
                .args,
        )
    }

    // Proves the defaults: 10 s unpaced, 1 KiB records, acks=all with idempotence.
    #[test]
    fn test_defaults() {
        let c = parse(&["produce"]).unwrap();
        assert_eq!(c.duration_s, Some(10.0));
        assert_eq!(c.records, None);
        assert_eq!(c.record_size_bytes, 1024);
        assert_eq!((c.acks, c.idempotence), (Acks::All, true));
        assert_eq!(c, BenchConfig::defaults(Mode::Produce, "127.0.0.1:9092"));
        let c = parse(&["e2e", "--records", "1000", "--acks", "1"]).unwrap();
        assert_eq!((c.duration_s, c.records), (None, Some(1000)));
        assert!(!c.idempotence, "acks=1 turns idempotence off by default");
    }

    // Proves every bad value of the brief gets a one-line error naming the flag.
    #[test]
    fn test_bad_values_are_one_line_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["produce", "--record-size", "0"], "--record-size"),
            (&["produce", "--acks", "2"], "--acks"),
            (&["produce", "--compression", "foo"], "--compression"),
            (&["produce", "--rate", "-1"], "--rate"),
            (&["produce", "--duration", "0"], "--duration"),
            (&["produce", "--duration", "nan"], "--duration"),
            (&["produce", "--producers", "0"], "--producers"),
            (&["produce", "--format", "xml"], "--format"),
            (&["produce", "--brokers", "localhost"], "--brokers"),
            (&["produce", "--topic", "a b"], "--topic"),
            (&["produce", "--idempotence", "yes"], "--idempotence"),
            (
                &["produce", "--acks", "1", "--idempotence", "true"],
                "--acks all",
            ),
            (&["e2e", "--record-size", "4"], "8 bytes"),
        ];
        for (args, names) in cases {
            let e = parse(args).expect_err(&format!("{args:?} must be refused"));
            let text = e.to_string();
            assert!(text.contains(names), "{args:?}: {text}");
            assert!(!text.contains('\n'), "{args:?}: {text}");
        }
    }

    // Proves a count splits over producers without losing records.
    #[test]
    fn test_records_per_producer_rounds_up() {
        let c = parse(&["produce", "--records", "10", "--producers", "3"]).unwrap();
        assert_eq!(c.records_per_producer(), Some(4));
    }
}
