//! `railyard consume TOPIC`: prints records as they arrive, by assignment (every partition, or
//! `--partition`), or through a consumer group with `--group`. The group's commits are of
//! records printed, never of records fetched and not yet shown: a consumer stopped by
//! `--count` or Ctrl-C resumes at the first record it did not print.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use railyard_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, TopicPartition};
use serde::Serialize;
use serde_json::Value;

use super::output::{emit, RecordFormat};
use super::{parse_start_at, CliError, Connect, StartAt};

/// How often a group consumer commits what it has printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// One poll's wait; Ctrl-C is noticed between polls as well as during one.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// `railyard consume TOPIC`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    #[command(flatten)]
    connect: Connect,
    /// Where to start: `beginning`, `end`, an offset, or `@TIMESTAMP_MS` (the first record at
    /// or after that time). With `--group`, `beginning` or `end` apply where the group has no
    /// committed offset.
    #[arg(short = 'o', long, default_value = "beginning", value_parser = parse_start_at)]
    from: StartAt,
    /// Consume as a member of this group: partitions are shared with its other members, and
    /// what is printed is committed.
    #[arg(short = 'g', long)]
    group: Option<String>,
    /// Only these partitions (repeatable; not with `--group`).
    #[arg(short = 'p', long = "partition", value_parser = clap::value_parser!(i32).range(0..))]
    partitions: Vec<i32>,
    /// Exit after this many records.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Exit once every partition is read to the end it had at the start (not with `--group`).
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Output: `text` (the value per line) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    format: RecordFormat,
    /// In text output, print `KEY<SEP>VALUE` (the input form of `produce --key-separator`).
    #[arg(short = 'k', long, value_name = "SEP")]
    key_separator: Option<String>,
}

/// Runs `railyard consume`.
pub async fn run(a: ConsumeArgs) -> Result<(), CliError> {
    if a.group.is_some() {
        if !a.partitions.is_empty() || a.exit_at_end {
            return Err(CliError::Usage(
                "--partition and --exit-at-end read by assignment; they do not go with --group"
                    .into(),
            ));
        }
        if matches!(a.from, StartAt::Offset(_) | StartAt::Timestamp(_)) {
            return Err(CliError::Usage(
                "with --group, --from is beginning or end (for partitions without a commit); \
                 move the group with `railyard group reset-offsets` first"
                    .into(),
            ));
        }
    }
    let mut config = ConsumerConfig::new(&a.connect.brokers);
    config.client = a.connect.client_config();
    config.group_id = a.group.clone();
    // Commits are made here, of printed records only.
    config.enable_auto_commit = false;
    config.auto_offset_reset = match a.from {
        StartAt::Beginning => OffsetReset::Earliest,
        _ => OffsetReset::Latest,
    };
    if let Some(n) = a.count {
        config.max_poll_records = config.max_poll_records.min(n as usize);
    }
    let mut consumer = Consumer::new(config).await?;
    let mut ends = BTreeMap::new();
    if a.group.is_some() {
        consumer.subscribe(&[a.topic.as_str()]).await?;
    } else {
        let tps = assign(&mut consumer, &a).await?;
        if a.exit_at_end {
            ends = unfinished_ends(&mut consumer, &tps).await?;
        }
    }
    let mut reader = Reader {
        args: &a,
        printed: 0,
        next: BTreeMap::new(),
        ends,
    };
    let read = reader.read(&mut consumer).await;
    let committed = reader.commit(&mut consumer).await;
    let closed = consumer.close().await;
    read?;
    committed?;
    closed.map_err(CliError::from)
}

/// Assigns the partitions asked for and moves each to `--from`.
async fn assign(consumer: &mut Consumer, a: &ConsumeArgs) -> Result<Vec<TopicPartition>, CliError> {
    let topic = consumer.cluster().topic(&a.topic).await?;
    let tps: Vec<TopicPartition> = if a.partitions.is_empty() {
        topic
            .partitions
            .iter()
            .map(|p| TopicPartition::new(&a.topic, p.partition))
            .collect()
    } else {
        a.partitions
            .iter()
            .map(|p| TopicPartition::new(&a.topic, *p))
            .collect()
    };
    consumer.assign(&tps).await?;
    match a.from {
        StartAt::Beginning => consumer.seek_to_beginning(&tps).await?,
        StartAt::End => consumer.seek_to_end(&tps).await?,
        StartAt::Offset(o) => {
            for tp in &tps {
                consumer.seek(tp, o)?;
            }
        }
        StartAt::Timestamp(ms) => {
            let times = tps.iter().map(|tp| (tp.clone(), ms)).collect();
            let found = consumer.offsets_for_times(&times).await?;
            let mut past_the_end = Vec::new();
            for (tp, at) in found {
                match at {
                    Some((offset, _)) => consumer.seek(&tp, offset)?,
                    None => past_the_end.push(tp),
                }
            }
            // No record that recent: start at the end, where the next one will be.
            consumer.seek_to_end(&past_the_end).await?;
        }
    }
    Ok(tps)
}

/// The log end of each partition whose position is before it (`--exit-at-end`).
async fn unfinished_ends(
    consumer: &mut Consumer,
    tps: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>, CliError> {
    let latest = tps.iter().map(|tp| (tp.clone(), -1)).collect();
    let ends = consumer.offsets_for_times(&latest).await?;
    let mut out = BTreeMap::new();
    for (tp, end) in ends {
        let end = end.map_or(0, |(o, _)| o);
        if consumer.position(&tp).await? < end {
            out.insert(tp, end);
        }
    }
    Ok(out)
}

struct Reader<'a> {
    args: &'a ConsumeArgs,
    printed: u64,
    /// Per partition, the offset after the last record printed: what a commit says.
    next: BTreeMap<TopicPartition, i64>,
    /// `--exit-at-end`: partitions not yet read to their end, and that end.
    ends: BTreeMap<TopicPartition, i64>,
}

impl Reader<'_> {
    async fn read(&mut self, consumer: &mut Consumer) -> Result<(), CliError> {
        let mut last_commit = Instant::now();
        while !self.done() {
            let records = tokio::select! {
                r = consumer.poll(POLL_WAIT) => r?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let mut text = String::new();
            for r in records {
                if self.done() {
                    break;
                }
                text.push_str(&self.line(&r));
                self.printed += 1;
                let tp = TopicPartition::new(r.topic.clone(), r.partition);
                if self.ends.get(&tp).is_some_and(|end| r.offset + 1 >= *end) {
                    self.ends.remove(&tp);
                }
                self.next.insert(tp, r.offset + 1);
            }
            emit(&text)?;
            if self.args.group.is_some() && last_commit.elapsed() >= COMMIT_INTERVAL {
                // A periodic commit that fails (a rebalance took a partition) is retried by
                // the next one and by the final commit, which does report.
                if let Err(e) = consumer.commit_offsets(&self.next).await {
                    eprintln!("railyard: commit failed, will retry: {e}");
                }
                last_commit = Instant::now();
            }
        }
        Ok(())
    }

    fn done(&self) -> bool {
        let counted = self.args.count.is_some_and(|n| self.printed >= n);
        let at_end = self.args.exit_at_end && self.ends.is_empty();
        counted || at_end
    }

    fn line(&self, r: &ConsumerRecord) -> String {
        match self.args.format {
            RecordFormat::Json => {
                let mut s = serde_json::to_string(&JsonRecord::of(r)).unwrap_or_default();
                s.push('\n');
                s
            }
            RecordFormat::Text => {
                let value = lossy(r.value.as_ref());
                match &self.args.key_separator {
                    Some(sep) => format!("{}{sep}{value}\n", lossy(r.key.as_ref())),
                    None => format!("{value}\n"),
                }
            }
        }
    }

    async fn commit(&self, consumer: &mut Consumer) -> Result<(), CliError> {
        if self.args.group.is_none() || self.next.is_empty() {
            return Ok(());
        }
        Ok(consumer.commit_offsets(&self.next).await?)
    }
}

fn lossy(b: Option<&Bytes>) -> String {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// A record as `--format json` prints it. Keys, values and header values are strings when
/// they are UTF-8, `{"hex": "..."}` otherwise (nothing is lost), and `null` when absent.
#[derive(Serialize, Debug)]
pub struct JsonRecord {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Value,
    value: Value,
    headers: Vec<JsonHeader>,
}

#[derive(Serialize, Debug)]
struct JsonHeader {
    key: String,
    value: Value,
}

impl JsonRecord {
    /// The JSON form of `r`.
    pub fn of(r: &ConsumerRecord) -> JsonRecord {
        JsonRecord {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp_ms,
            key: bytes_json(r.key.as_ref()),
            value: bytes_json(r.value.as_ref()),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| JsonHeader {
                    key: k.clone(),
                    value: bytes_json(v.as_ref()),
                })
                .collect(),
        }
    }
}

fn bytes_json(b: Option<&Bytes>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.into()),
            Err(_) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                serde_json::json!({ "hex": hex })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_json_record_keeps_every_field_and_non_utf8_bytes() {
        let r = ConsumerRecord {
            topic: "events".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"user-7")),
            value: Some(Bytes::from_static(&[0xff, 0x00, 0x41])),
            headers: vec![
                ("source".into(), Some(Bytes::from_static(b"cli"))),
                ("source".into(), None),
            ],
        };
        insta::assert_snapshot!(serde_json::to_string(&JsonRecord::of(&r)).unwrap(), @r#"{"topic":"events","partition":2,"offset":41,"timestamp":1700000000123,"key":"user-7","value":{"hex":"ff0041"},"headers":[{"key":"source","value":"cli"},{"key":"source","value":null}]}"#);
    }
}
