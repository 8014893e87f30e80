//! `railyard produce TOPIC`: one record per line of stdin, through the producer of
//! `railyard-client` (batched, idempotent with acks=all). Lines are bytes: the value need not
//! be UTF-8. A failed record stops the command: what was acknowledged before it is reported on
//! stderr with the error, and the exit code is 1.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;

use bytes::Bytes;
use clap::Args;
use railyard_client::{Acks, Compression, Delivery, Producer, ProducerConfig, ProducerRecord};
use serde::Serialize;

use super::output::{emit, render, Report, Table};
use super::{parse_key_value, CliError, Connect, FormatArg};

/// Records sent and not yet acknowledged before the command waits for the oldest: enough to
/// keep batches full, small enough that a failure stops the input soon.
const IN_FLIGHT_RECORDS_MAX: usize = 10_000;

/// `railyard produce TOPIC`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    /// Split each line at the first SEP into key and value (a line without it is an error).
    #[arg(short = 'k', long, value_name = "SEP", value_parser = non_empty)]
    key_separator: Option<String>,
    /// A header on every record, `key=value` (repeatable).
    #[arg(short = 'H', long = "header", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgement: `all` (every in-sync replica, after fsync on a majority), `1` (the
    /// leader), `0` (none: no offsets are reported).
    #[arg(short = 'a', long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    acks: Acks,
    /// Send every record to this partition (default: by key, sticky without one).
    #[arg(short = 'p', long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Batch compression.
    #[arg(short = 'z', long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
}

/// `--compression`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<Codec> for Compression {
    fn from(c: Codec) -> Compression {
        match c {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// Parses `--acks`: `all` (or `-1`), `1`, `0`.
pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        _ => Err(format!("{s:?}: expected all, 1 or 0")),
    }
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the separator must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

/// Runs `railyard produce`.
pub async fn run(a: ProduceArgs) -> Result<(), CliError> {
    let mut config = ProducerConfig::new(&a.connect.brokers);
    config.client = a.connect.client_config();
    config.acks = a.acks;
    // Idempotence needs acks=all; with weaker acks the user asked for less.
    config.idempotence = a.acks == Acks::All;
    config.compression = a.compression.into();
    let producer = Producer::new(config).await?;
    // Fail before reading stdin when the topic does not exist (the producer would otherwise
    // report it on the first record only).
    let partitions = producer.cluster().topic(&a.topic).await?.partitions.len();
    if let Some(p) = a.partition {
        if p as usize >= partitions {
            return Err(CliError::Usage(format!(
                "topic {:?} has {partitions} partitions; there is no partition {p}",
                a.topic
            )));
        }
    }
    let mut summary = Summary::new(&a.topic);
    let result = send_lines(&a, &producer, &mut summary).await;
    producer.close().await;
    match result {
        Ok(()) => {
            emit(&render(&summary, a.format.format))?;
            Ok(())
        }
        Err(e) => {
            // What was acknowledged stays written; say how much before the error line.
            eprintln!(
                "railyard: {} records acknowledged before the error",
                summary.records
            );
            Err(e)
        }
    }
}

/// Reads stdin to its end, sending each line; waits for every acknowledgement.
async fn send_lines(
    a: &ProduceArgs,
    producer: &Producer,
    summary: &mut Summary,
) -> Result<(), CliError> {
    let mut pending: VecDeque<(u64, Delivery)> = VecDeque::new();
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = read_line_blocking(&mut stdin, &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let record = to_record(a, &buf).map_err(|reason| CliError::Input {
            line: line_no,
            reason,
        })?;
        let delivery = producer
            .send(record)
            .await
            .map_err(|e| line_error(line_no, e))?;
        pending.push_back((line_no, delivery));
        if pending.len() >= IN_FLIGHT_RECORDS_MAX {
            settle_oldest(&mut pending, summary).await?;
        }
    }
    while !pending.is_empty() {
        settle_oldest(&mut pending, summary).await?;
    }
    Ok(())
}

async fn settle_oldest(
    pending: &mut VecDeque<(u64, Delivery)>,
    summary: &mut Summary,
) -> Result<(), CliError> {
    let Some((line, delivery)) = pending.pop_front() else {
        return Ok(());
    };
    let meta = delivery.await.map_err(|e| line_error(line, e))?;
    summary.add(meta.partition, meta.offset);
    Ok(())
}

fn line_error(line: u64, e: railyard_client::Error) -> CliError {
    CliError::Input {
        line,
        reason: super::client_message(&e),
    }
}

/// The record for one line (without its newline).
fn to_record(a: &ProduceArgs, line: &[u8]) -> Result<ProducerRecord, String> {
    let mut record = match &a.key_separator {
        None => ProducerRecord::new(a.topic.clone(), Bytes::copy_from_slice(line)),
        Some(sep) => {
            let at = find(line, sep.as_bytes())
                .ok_or_else(|| format!("no key separator {sep:?} in the line"))?;
            ProducerRecord::new(
                a.topic.clone(),
                Bytes::copy_from_slice(&line[at + sep.len()..]),
            )
            .key(Bytes::copy_from_slice(&line[..at]))
        }
    };
    for (k, v) in &a.headers {
        record = record.header(k.clone(), Bytes::from(v.clone()));
    }
    if let Some(p) = a.partition {
        record = record.partition(p);
    }
    Ok(record)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What was produced, per partition.
#[derive(Serialize, Debug)]
pub struct Summary {
    topic: String,
    records: u64,
    partitions: BTreeMap<i32, PartitionSpan>,
}

#[derive(Serialize, Debug, Clone, Copy)]
struct PartitionSpan {
    records: u64,
    /// `-1` with acks=0 (the broker does not answer).
    first_offset: i64,
    last_offset: i64,
}

impl Summary {
    fn new(topic: &str) -> Summary {
        Summary {
            topic: topic.into(),
            records: 0,
            partitions: BTreeMap::new(),
        }
    }

    fn add(&mut self, partition: i32, offset: i64) {
        self.records += 1;
        let span = self.partitions.entry(partition).or_insert(PartitionSpan {
            records: 0,
            first_offset: offset,
            last_offset: offset,
        });
        span.records += 1;
        // Acknowledgements of one partition come in offset order; min/max keeps it true anyway.
        span.first_offset = span.first_offset.min(offset);
        span.last_offset = span.last_offset.max(offset);
    }
}

impl Report for Summary {
    fn table(&self) -> String {
        let mut t = Table::new(&["partition", "records", "first-offset", "last-offset"]);
        for (p, s) in &self.partitions {
            t.row(vec![
                p.to_string(),
                s.records.to_string(),
                s.first_offset.to_string(),
                s.last_offset.to_string(),
            ]);
        }
        format!(
            "produced {} records to {}\n{}",
            self.records,
            self.topic,
            t.render()
        )
    }
}

/// Reads one line of stdin. It blocks this worker thread, so the runtime is told
/// (`block_in_place`): the producer's sender task runs on its other threads meanwhile.
#[cfg(not(madsim))]
fn read_line_blocking(stdin: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    tokio::task::block_in_place(|| stdin.read_until(b'\n', buf))
}

/// madsim has no worker threads to hand over to (and no stdin to simulate): a plain read.
#[cfg(madsim)]
fn read_line_blocking(stdin: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    stdin.read_until(b'\n', buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: ProduceArgs,
    }

    fn args(extra: &[&str]) -> Result<ProduceArgs, clap::Error> {
        let argv = ["produce", "events"].iter().chain(extra);
        Wrap::try_parse_from(argv).map(|w| w.a)
    }

    #[test]
    fn test_lines_become_records_with_keys_and_headers() {
        let a = args(&["-k", "::", "-H", "source=cli", "-H", "n=1"]).unwrap();
        let r = to_record(&a, b"user-7::{\"x\":1}").unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"user-7"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(r.headers.len(), 2);
        assert!(to_record(&a, b"no separator here").is_err());
        let plain = args(&[]).unwrap();
        let r = to_record(&plain, b"a::b").unwrap();
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"a::b"[..])));
    }

    #[test]
    fn test_bad_flag_values_are_usage_errors() {
        for bad in [
            &["--acks", "2"][..],
            &["--compression", "brotli"],
            &["--partition", "-1"],
            &["--header", "novalue"],
            &["--key-separator", ""],
        ] {
            let e = args(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        assert_eq!(args(&["--acks", "-1"]).unwrap().acks, Acks::All);
        assert_eq!(args(&["--acks", "0"]).unwrap().acks, Acks::None);
    }

    #[test]
    fn test_summary_table() {
        let mut s = Summary::new("events");
        for (p, o) in [(0, 5), (1, 0), (0, 6), (0, 7)] {
            s.add(p, o);
        }
        insta::assert_snapshot!(s.table(), @r"
        produced 4 records to events
        PARTITION  RECORDS  FIRST-OFFSET  LAST-OFFSET
        0          3        5             7
        1          1        0             0
        ");
    }
}
