//! `railyard topic create|list|describe|delete|alter-config`: topics and their configs, through
//! the admin client (CreateTopics, Metadata, DescribeConfigs, ListOffsets, DeleteTopics,
//! IncrementalAlterConfigs).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use railyard_client::admin::TopicDescription;
use railyard_client::{Admin, NewTopic, OffsetSpec};
use serde::Serialize;

use super::output::{emit, ids, key_values, or_dash, render, Report, Table};
use super::{parse_key_value, CliError, Connect, FormatArg};

/// `railyard topic ...`.
#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (default: the broker's `num.partitions`).
        #[arg(short = 'p', long, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replicas of each partition (default: the broker's default).
        #[arg(short = 'r', long, value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: Option<i16>,
        /// A topic config, `key=value` (repeatable): `retention.ms=86400000`.
        #[arg(short = 'c', long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Include internal topics (`__consumer_offsets`).
        #[arg(short = 'i', long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, offsets) and the configs set on it.
    Describe {
        name: String,
        /// List every config, defaults included (JSON always has them all).
        #[arg(short = 'a', long)]
        all_configs: bool,
    },
    /// Delete a topic and its records.
    Delete { name: String },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        /// `key=value` to set (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// A config to remove, back to its default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
}

/// Runs `railyard topic ...`.
pub async fn run(a: TopicArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    let text = match a.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut t = NewTopic::new(
                &name,
                partitions.unwrap_or(-1),
                replication_factor.unwrap_or(-1),
            );
            t.configs = configs;
            admin.create_topic(t).await?;
            let meta = admin.cluster().topic(&name).await?;
            let done = Done {
                topic: name,
                action: "created",
                partitions: Some(meta.partitions.len()),
            };
            render(&done, a.format.format)
        }
        TopicCommand::List { internal } => render(&list(&admin, internal).await?, a.format.format),
        TopicCommand::Describe { name, all_configs } => {
            let mut d = describe(&admin, &name).await?;
            d.all_configs = all_configs;
            render(&d, a.format.format)
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            let done = Done {
                topic: name,
                action: "deleted",
                partitions: None,
            };
            render(&done, a.format.format)
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                return Err(CliError::Usage(
                    "alter-config needs at least one --set KEY=VALUE or --delete KEY".into(),
                ));
            }
            let mut changes: Vec<(&str, Option<&str>)> = set
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str())))
                .collect();
            changes.extend(delete.iter().map(|k| (k.as_str(), None)));
            admin.alter_topic_config(&name, &changes).await?;
            let described = describe_applied(&admin, &name, &set).await?;
            let changed: BTreeMap<String, ConfigRow> = described
                .configs
                .into_iter()
                .filter(|(k, _)| changes.iter().any(|(c, _)| c == k))
                .collect();
            render(
                &Altered {
                    topic: name,
                    configs: changed,
                },
                a.format.format,
            )
        }
    };
    emit(&text)?;
    Ok(())
}

async fn list(admin: &Admin, internal: bool) -> Result<Listing, CliError> {
    let meta = admin.cluster().refresh_metadata().await?;
    let topics = meta
        .topics
        .values()
        .filter(|t| internal || !t.internal)
        .map(|t| ListedTopic {
            name: t.name.clone(),
            partitions: t.partitions.len(),
            replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len()),
            internal: t.internal,
        })
        .collect();
    Ok(Listing { topics })
}

/// How long `alter-config` waits for a broker to describe what it set.
const ALTER_SHOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Describes `name` until the broker asked shows every value of `set`, or for at most
/// [`ALTER_SHOWN_WITHIN`]. The controller answers the alter once the change commits; each
/// broker applies it a moment later, and the describe may go to any of them.
async fn describe_applied(
    admin: &Admin,
    name: &str,
    set: &[(String, String)],
) -> Result<Described, CliError> {
    let deadline = tokio::time::Instant::now() + ALTER_SHOWN_WITHIN;
    loop {
        let described = describe(admin, name).await?;
        let shown = set.iter().all(|(k, v)| {
            described
                .configs
                .get(k)
                .is_some_and(|row| row.value.as_deref() == Some(v.as_str()))
        });
        if shown || tokio::time::Instant::now() >= deadline {
            return Ok(described);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn describe(admin: &Admin, name: &str) -> Result<Described, CliError> {
    let d = admin.describe_topic(name).await?;
    let starts = admin.list_offsets(name, OffsetSpec::Earliest).await?;
    let ends = admin.list_offsets(name, OffsetSpec::Latest).await?;
    Ok(Described::new(d, &starts, &ends))
}

/// A topic created or deleted.
#[derive(Serialize, Debug)]
pub struct Done {
    topic: String,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<usize>,
}

impl Report for Done {
    fn table(&self) -> String {
        let mut t = Table::new(&["topic", "status"]);
        t.row(vec![self.topic.clone(), self.action.to_uppercase()]);
        t.render()
    }
}

/// `topic list`.
#[derive(Serialize, Debug)]
pub struct Listing {
    topics: Vec<ListedTopic>,
}

#[derive(Serialize, Debug)]
struct ListedTopic {
    name: String,
    partitions: usize,
    replication_factor: usize,
    internal: bool,
}

impl Report for Listing {
    fn table(&self) -> String {
        let mut t = Table::new(&["name", "partitions", "replicas"]);
        for topic in &self.topics {
            let mut name = topic.name.clone();
            if topic.internal {
                name.push_str(" (internal)");
            }
            t.row(vec![
                name,
                topic.partitions.to_string(),
                topic.replication_factor.to_string(),
            ]);
        }
        t.render()
    }
}

/// `topic describe`.
#[derive(Serialize, Debug)]
pub struct Described {
    name: String,
    internal: bool,
    partitions: Vec<PartitionRow>,
    configs: BTreeMap<String, ConfigRow>,
    /// The table lists defaults too.
    #[serde(skip)]
    all_configs: bool,
}

#[derive(Serialize, Debug)]
struct PartitionRow {
    partition: i32,
    leader: Option<i32>,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
}

#[derive(Serialize, Debug, Clone)]
struct ConfigRow {
    value: Option<String>,
    source: &'static str,
}

impl Described {
    fn new(
        d: TopicDescription,
        starts: &BTreeMap<railyard_client::TopicPartition, Option<i64>>,
        ends: &BTreeMap<railyard_client::TopicPartition, Option<i64>>,
    ) -> Described {
        let at = |m: &BTreeMap<railyard_client::TopicPartition, Option<i64>>, p: i32| {
            m.get(&railyard_client::TopicPartition::new(
                d.meta.name.clone(),
                p,
            ))
            .copied()
            .flatten()
        };
        let partitions = d
            .meta
            .partitions
            .iter()
            .map(|p| PartitionRow {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                log_start_offset: at(starts, p.partition),
                high_watermark: at(ends, p.partition),
            })
            .collect();
        let configs = d
            .configs
            .into_iter()
            .map(|(k, c)| {
                let source = if c.is_default { "default" } else { "topic" };
                (
                    k,
                    ConfigRow {
                        value: c.value,
                        source,
                    },
                )
            })
            .collect();
        Described {
            name: d.meta.name,
            internal: d.meta.internal,
            partitions,
            configs,
            all_configs: false,
        }
    }
}

impl Report for Described {
    fn table(&self) -> String {
        let replicas = self.partitions.first().map_or(0, |p| p.replicas.len());
        let mut out = key_values(&[
            ("NAME", self.name.clone()),
            ("INTERNAL", self.internal.to_string()),
            ("PARTITIONS", self.partitions.len().to_string()),
            ("REPLICAS", replicas.to_string()),
        ]);
        let shown: BTreeMap<String, ConfigRow> = self
            .configs
            .iter()
            .filter(|(_, c)| self.all_configs || c.source != "default")
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        out.push_str("\nCONFIGS\n");
        if shown.is_empty() {
            out.push_str("(none set on the topic; --all-configs lists the defaults)\n");
        } else {
            out.push_str(&config_table(&shown));
        }
        out.push_str("\nPARTITIONS\n");
        let mut t = Table::new(&[
            "partition",
            "leader",
            "epoch",
            "replicas",
            "isr",
            "log-start-offset",
            "high-watermark",
        ]);
        for p in &self.partitions {
            t.row(vec![
                p.partition.to_string(),
                or_dash(p.leader),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                or_dash(p.log_start_offset),
                or_dash(p.high_watermark),
            ]);
        }
        out.push_str(&t.render());
        out
    }
}

fn config_table(configs: &BTreeMap<String, ConfigRow>) -> String {
    let mut t = Table::new(&["key", "value", "source"]);
    for (k, c) in configs {
        t.row(vec![k.clone(), or_dash(c.value.clone()), c.source.into()]);
    }
    t.render()
}

/// `topic alter-config`: the changed configs as the broker now describes them.
#[derive(Serialize, Debug)]
pub struct Altered {
    topic: String,
    configs: BTreeMap<String, ConfigRow>,
}

impl Report for Altered {
    fn table(&self) -> String {
        config_table(&self.configs)
    }
}

#[cfg(test)]
mod tests {
    use super::super::output::Format;
    use super::*;
    use railyard_client::admin::ConfigEntry;
    use railyard_client::cluster::{PartitionMeta, TopicMeta};
    use railyard_client::TopicPartition;

    fn described() -> Described {
        let partition = |p: i32, leader: Option<i32>| PartitionMeta {
            partition: p,
            leader,
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            isr: if leader.is_some() {
                vec![1, 2, 3]
            } else {
                vec![2]
            },
            error: None,
        };
        let d = TopicDescription {
            meta: TopicMeta {
                name: "events".into(),
                internal: false,
                partitions: vec![partition(0, Some(1)), partition(1, None)],
            },
            configs: [
                ("cleanup.policy", Some("delete"), true),
                ("retention.ms", Some("86400000"), false),
            ]
            .into_iter()
            .map(|(k, v, is_default)| {
                let entry = ConfigEntry {
                    value: v.map(String::from),
                    is_default,
                    read_only: false,
                };
                (k.to_string(), entry)
            })
            .collect(),
        };
        let tp = |p| TopicPartition::new("events", p);
        let starts = [(tp(0), Some(0)), (tp(1), None)].into_iter().collect();
        let ends = [(tp(0), Some(120)), (tp(1), None)].into_iter().collect();
        Described::new(d, &starts, &ends)
    }

    #[test]
    fn test_describe_table() {
        let mut all = described();
        all.all_configs = true;
        assert!(all.table().contains("cleanup.policy  delete    default"));
        insta::assert_snapshot!(described().table(), @r"
        NAME        events
        INTERNAL    false
        PARTITIONS  2
        REPLICAS    3

        CONFIGS
        KEY           VALUE     SOURCE
        retention.ms  86400000  topic

        PARTITIONS
        PARTITION  LEADER  EPOCH  REPLICAS  ISR    LOG-START-OFFSET  HIGH-WATERMARK
        0          1       3      1,2,3     1,2,3  0                 120
        1          -       3      1,2,3     2      -                 -
        ");
    }

    #[test]
    fn test_describe_json() {
        insta::assert_snapshot!(render(&described(), Format::Json));
    }

    #[test]
    fn test_list_marks_internal_topics() {
        let l = Listing {
            topics: vec![
                ListedTopic {
                    name: "__consumer_offsets".into(),
                    partitions: 10,
                    replication_factor: 3,
                    internal: true,
                },
                ListedTopic {
                    name: "events".into(),
                    partitions: 3,
                    replication_factor: 3,
                    internal: false,
                },
            ],
        };
        insta::assert_snapshot!(l.table(), @r"
        NAME                           PARTITIONS  REPLICAS
        __consumer_offsets (internal)  10          3
        events                         3           3
        ");
        let d = Done {
            topic: "events".into(),
            action: "created",
            partitions: Some(3),
        };
        assert_eq!(
            render(&d, Format::Json),
            "{\n  \"topic\": \"events\",\n  \"action\": \"created\",\n  \"partitions\": 3\n}\n"
        );
    }
}
