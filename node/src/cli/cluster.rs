//! `railyard cluster info|config`, in the manner of `rpk cluster info|config`:
//!
//! - `info`: the cluster id, the controller and the brokers, from a fresh Metadata response;
//! - `config get|set|delete`: the cluster-wide dynamic broker configs (Kafka's default broker
//!   resource, `kafka-configs.sh --entity-type brokers --entity-default`), which hold the
//!   topic-config defaults and the cluster switches (`partition.autobalancing.enable`), or
//!   with `--broker N` one broker's. A set prints the configs as the brokers then describe
//!   them.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use railyard_client::admin::{ClusterDescription, ConfigEntry};
use railyard_client::Admin;
use serde::Serialize;

use super::output::{emit, key_values, or_dash, render, Report, Table};
use super::{parse_key_value, CliError, Connect, FormatArg};

/// `railyard cluster ...`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The cluster id, the controller, the brokers and how many topics there are.
    Info,
    /// The cluster-wide (or one broker's) dynamic configs.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// List the configs set cluster-wide, or every config of `--broker N`.
    Get {
        #[command(flatten)]
        target: Target,
    },
    /// Set configs: `KEY=VALUE`...
    Set {
        #[command(flatten)]
        target: Target,
        #[arg(required = true, value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Remove configs, back to their defaults: `KEY`...
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// Which broker resource a config command is about.
#[derive(Args, Debug)]
struct Target {
    /// One broker's configs instead of the cluster-wide ones.
    #[arg(long)]
    broker: Option<i32>,
}

/// How long a set waits for every broker's view to show it (the controller answers once the
/// change commits; brokers learn it from the metadata log just after).
const SET_SHOWN_WITHIN: Duration = Duration::from_secs(5);

/// Runs `railyard cluster ...`.
pub async fn run(a: ClusterArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    match a.command {
        ClusterCommand::Info => {
            let d = admin.describe_cluster().await?;
            let topics = admin.cluster().metadata().topics.len();
            emit(&render(&Info::new(d, topics), a.format.format))?;
        }
        ClusterCommand::Config { command } => {
            let configs = config(&admin, command).await?;
            emit(&render(&configs, a.format.format))?;
        }
    }
    Ok(())
}

async fn config(admin: &Admin, command: ConfigCommand) -> Result<Configs, CliError> {
    let (broker, wanted) = match command {
        ConfigCommand::Get { target } => (target.broker, Vec::new()),
        ConfigCommand::Set { target, configs } => {
            let changes: Vec<(&str, Option<&str>)> = configs
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            admin.alter_broker_config(target.broker, &changes).await?;
            (target.broker, configs)
        }
        ConfigCommand::Delete { target, keys } => {
            let changes: Vec<(&str, Option<&str>)> =
                keys.iter().map(|k| (k.as_str(), None)).collect();
            admin.alter_broker_config(target.broker, &changes).await?;
            (target.broker, Vec::new())
        }
    };
    let deadline = tokio::time::Instant::now() + SET_SHOWN_WITHIN;
    loop {
        let described = admin.describe_broker_config(broker).await?;
        let shown = wanted.iter().all(|(k, v)| {
            described
                .get(k)
                .is_some_and(|e| e.value.as_deref() == Some(v.as_str()))
        });
        if shown || tokio::time::Instant::now() >= deadline {
            return Ok(Configs::new(broker, described));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `cluster config ...`: the resource's configs after the command.
#[derive(Serialize, Debug)]
pub struct Configs {
    /// `None` for the cluster-wide configs.
    broker: Option<i32>,
    configs: BTreeMap<String, ConfigRow>,
}

#[derive(Serialize, Debug)]
struct ConfigRow {
    value: Option<String>,
    /// `default` or `set`.
    source: &'static str,
}

impl Configs {
    fn new(broker: Option<i32>, described: BTreeMap<String, ConfigEntry>) -> Configs {
        let configs = described
            .into_iter()
            .map(|(k, e)| {
                let source = if e.is_default { "default" } else { "set" };
                (
                    k,
                    ConfigRow {
                        value: e.value,
                        source,
                    },
                )
            })
            .collect();
        Configs { broker, configs }
    }
}

impl Report for Configs {
    fn table(&self) -> String {
        if self.configs.is_empty() {
            return match self.broker {
                None => "no cluster-wide configs set\n".into(),
                Some(b) => format!("broker {b} reports no configs\n"),
            };
        }
        let mut t = Table::new(&["name", "value", "source"]);
        for (k, c) in &self.configs {
            t.row(vec![k.clone(), or_dash(c.value.clone()), c.source.into()]);
        }
        t.render()
    }
}

/// `cluster info`.
#[derive(Serialize, Debug)]
pub struct Info {
    cluster_id: Option<String>,
    controller: Option<i32>,
    topics: usize,
    brokers: Vec<Broker>,
}

#[derive(Serialize, Debug)]
struct Broker {
    id: i32,
    address: String,
    rack: Option<String>,
}

impl Info {
    fn new(d: ClusterDescription, topics: usize) -> Info {
        Info {
            cluster_id: d.cluster_id,
            controller: d.controller,
            topics,
            brokers: d
                .brokers
                .into_iter()
                .map(|b| Broker {
                    id: b.node_id,
                    address: b.addr,
                    rack: b.rack,
                })
                .collect(),
        }
    }
}

impl Report for Info {
    fn table(&self) -> String {
        let mut out = key_values(&[
            ("CLUSTER-ID", or_dash(self.cluster_id.clone())),
            ("CONTROLLER", or_dash(self.controller)),
            ("TOPICS", self.topics.to_string()),
        ]);
        out.push('\n');
        let mut t = Table::new(&["id", "address", "rack"]);
        for b in &self.brokers {
            let mut id = b.id.to_string();
            if Some(b.id) == self.controller {
                id.push('*');
            }
            t.row(vec![id, b.address.clone(), or_dash(b.rack.clone())]);
        }
        out.push_str(&t.render());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::output::Format;
    use super::*;
    use railyard_client::cluster::BrokerMeta;

    fn info() -> Info {
        let b = |id: i32, rack: Option<&str>| BrokerMeta {
            node_id: id,
            addr: format!("127.0.0.1:{}", 9091 + id),
            rack: rack.map(String::from),
        };
        let d = ClusterDescription {
            cluster_id: Some("railyard-dev".into()),
            controller: Some(2),
            brokers: vec![b(1, Some("a")), b(2, None), b(3, Some("b"))],
        };
        Info::new(d, 4)
    }

    #[test]
    fn test_cluster_info_table_marks_the_controller() {
        insta::assert_snapshot!(info().table(), @r"
        CLUSTER-ID  railyard-dev
        CONTROLLER  2
        TOPICS      4

        ID  ADDRESS         RACK
        1   127.0.0.1:9092  a
        2*  127.0.0.1:9093  -
        3   127.0.0.1:9094  b
        ");
    }

    #[test]
    fn test_cluster_info_json() {
        insta::assert_snapshot!(render(&info(), Format::Json));
    }

    #[test]
    fn test_cluster_configs_table() {
        let entry = |v: &str, is_default| ConfigEntry {
            value: Some(v.into()),
            is_default,
            read_only: false,
        };
        let set = BTreeMap::from([
            (
                "partition.autobalancing.enable".to_string(),
                entry("false", false),
            ),
            ("log.retention.ms".to_string(), entry("3600000", false)),
        ]);
        insta::assert_snapshot!(Configs::new(None, set).table(), @r"
        NAME                            VALUE    SOURCE
        log.retention.ms                3600000  set
        partition.autobalancing.enable  false    set
        ");
        let none = Configs::new(None, BTreeMap::new());
        assert_eq!(none.table(), "no cluster-wide configs set\n");
        let defaults = BTreeMap::from([("log.retention.ms".to_string(), entry("604800000", true))]);
        insta::assert_snapshot!(Configs::new(Some(2), defaults).table(), @r"
        NAME              VALUE      SOURCE
        log.retention.ms  604800000  default
        ");
    }
}
