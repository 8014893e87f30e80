//! The client subcommands of `railyard` (`topic`, `produce`, `consume`, `group`, `cluster`,
//! `partition`, `broker`, `controller`),
//! in the manner of Redpanda's `rpk`, built on `railyard-client`: they speak only the Kafka
//! protocol, so they work against any broker of the same API versions.
//!
//! Every command takes `-b/--brokers` (default `127.0.0.1:9092`, env `RAILYARD_BROKERS`).
//! Output is a table by default and JSON with `--format json` ([`output`]). A failure is one
//! line on stderr that names the broker and the Kafka error code ([`CliError`]), with exit
//! code 1; a bad flag value is clap's usage error, exit code 2.

pub mod broker;
pub mod cluster;
pub mod consume;
pub mod controller;
pub mod group;
pub mod output;
pub mod partition;
pub mod produce;
pub mod topic;

use clap::{Args, Subcommand};
use railyard_client::{Admin, ClientConfig};

use output::Format;

/// The client subcommands, flattened into the `railyard` command line.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list, describe and delete topics, and alter their configs.
    Topic(topic::TopicArgs),
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print a topic's records, by assignment or through a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups, and reset their offsets.
    Group(group::GroupArgs),
    /// Describe the cluster: its id, controller and brokers.
    Cluster(cluster::ClusterArgs),
    /// Move partitions to new replicas, and list the moves in flight.
    Partition(partition::PartitionArgs),
    /// List brokers, and decommission one.
    Broker(broker::BrokerArgs),
    /// Add or remove controller voters.
    Controller(controller::ControllerArgs),
}

/// How to reach the cluster; every client subcommand has these.
#[derive(Args, Debug, Clone)]
pub struct Connect {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(
        short = 'b',
        long = "brokers",
        env = "RAILYARD_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub brokers: String,
    /// How long a command keeps retrying before it reports the error, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub timeout_ms: u64,
}

impl Connect {
    /// The client settings for these flags: fail within `--timeout-ms`, not the library's
    /// default minute.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.brokers);
        c.client_id = "railyard-cli".into();
        c.default_api_timeout_ms = self.timeout_ms;
        c.connect_timeout_ms = self.timeout_ms.min(5_000);
        c.request_timeout_ms = self.timeout_ms;
        c
    }

    /// An admin client on the cluster.
    pub async fn admin(&self) -> Result<Admin, CliError> {
        Ok(Admin::new(self.client_config()).await?)
    }
}

/// `--format table|json` of the admin commands.
#[derive(Args, Debug, Clone, Copy)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
}

/// Why a client subcommand failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The client's error names the broker and the Kafka error code itself.
    #[error("{}", client_message(.0))]
    Client(#[from] railyard_client::Error),
    /// Arguments that parse but do not fit together, or a value the cluster rules out.
    #[error("{0}")]
    Usage(String),
    /// A line of `produce`'s input that cannot become a record.
    #[error("stdin line {line}: {reason}")]
    Input {
        /// 1-based.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// What the command names does not exist (a group the coordinator does not know).
    #[error("{0}")]
    NotFound(String),
    /// Reading stdin or writing stdout failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code: 2 for a usage error (as clap's), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The client's message, with the Kafka code added where the client's own words leave it out
/// (an unknown topic is UNKNOWN_TOPIC_OR_PARTITION on the wire).
pub(crate) fn client_message(e: &railyard_client::Error) -> String {
    match e {
        railyard_client::Error::UnknownTopic(t) => {
            format!("unknown topic {t:?} (UNKNOWN_TOPIC_OR_PARTITION, code 3)")
        }
        e => e.to_string(),
    }
}

/// Runs one client subcommand on a runtime of the caller's.
pub async fn run(command: ClientCommand) -> Result<(), CliError> {
    match command {
        ClientCommand::Topic(a) => topic::run(a).await,
        ClientCommand::Produce(a) => produce::run(a).await,
        ClientCommand::Consume(a) => consume::run(a).await,
        ClientCommand::Group(a) => group::run(a).await,
        ClientCommand::Cluster(a) => cluster::run(a).await,
        ClientCommand::Partition(a) => partition::run(a).await,
        ClientCommand::Broker(a) => broker::run(a).await,
        ClientCommand::Controller(a) => controller::run(a).await,
    }
}

/// Parses `k=v` (a topic config, a header).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Where reading starts: `beginning`, `end`, an offset, or `@TIMESTAMP_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The log start.
    Beginning,
    /// The log end.
    End,
    /// This offset (clamped to the log by the consumer's reset policy).
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Parses a [`StartAt`] (`--from`, `--to`); `earliest`/`latest` are Kafka's words for the ends.
pub fn parse_start_at(s: &str) -> Result<StartAt, String> {
    match s {
        "beginning" | "earliest" | "start" => Ok(StartAt::Beginning),
        "end" | "latest" => Ok(StartAt::End),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                return match ts.parse::<i64>() {
                    Ok(ms) if ms >= 0 => Ok(StartAt::Timestamp(ms)),
                    _ => Err(format!(
                        "{s:?}: expected @TIMESTAMP_MS, milliseconds since the epoch"
                    )),
                };
            }
            match s.parse::<i64>() {
                Ok(o) if o >= 0 => Ok(StartAt::Offset(o)),
                _ => Err(format!(
                    "{s:?}: expected beginning, end, an offset (0 or more) or @TIMESTAMP_MS"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_start_at_parses_every_form_and_rejects_the_rest() {
        assert_eq!(parse_start_at("beginning"), Ok(StartAt::Beginning));
        assert_eq!(parse_start_at("earliest"), Ok(StartAt::Beginning));
        assert_eq!(parse_start_at("end"), Ok(StartAt::End));
        assert_eq!(parse_start_at("latest"), Ok(StartAt::End));
        assert_eq!(parse_start_at("42"), Ok(StartAt::Offset(42)));
        assert_eq!(
            parse_start_at("@1700000000000"),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        for bad in ["", "-1", "@", "@x", "@-5", "soon", "1.5"] {
            assert!(parse_start_at(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn test_key_value_needs_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn test_unknown_topic_message_names_the_kafka_code() {
        let e = CliError::from(railyard_client::Error::UnknownTopic("t".into()));
        assert_eq!(
            e.to_string(),
            "unknown topic \"t\" (UNKNOWN_TOPIC_OR_PARTITION, code 3)"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }
}
