//! `railyard group list|describe|reset-offsets|delete`: consumer groups, through their
//! coordinators (ListGroups, DescribeGroups, OffsetFetch, ListOffsets, OffsetCommit,
//! DeleteGroups). `describe` prints what `kafka-consumer-groups.sh --describe` does: per
//! partition the committed offset, the log end, the lag and the member that owns it.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use railyard_client::admin::{GroupDescription, GroupListing};
use railyard_client::{Admin, OffsetSpec, TopicPartition};
use serde::Serialize;

use super::output::{emit, key_values, or_dash, render, Report, Table};
use super::{parse_start_at, CliError, Connect, FormatArg, StartAt};

/// `railyard group ...`.
#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List the groups of every coordinator.
    List,
    /// Show a group's state, members, and per partition its offset, log end and lag.
    Describe { group: String },
    /// Move a group's committed offsets on a topic (the group must have no active members).
    ResetOffsets {
        group: String,
        /// The topic whose offsets move.
        #[arg(short = 't', long)]
        topic: String,
        /// Only these partitions (repeatable; default all).
        #[arg(short = 'p', long = "partition", value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Vec<i32>,
        /// `earliest`, `latest`, an offset (clamped to the log, as Kafka does), or
        /// `@TIMESTAMP_MS`.
        #[arg(long, value_parser = parse_start_at)]
        to: StartAt,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group and its committed offsets (it must have no active members).
    Delete { group: String },
}

/// Runs `railyard group ...`.
pub async fn run(a: GroupArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    let text = match a.command {
        GroupCommand::List => render(
            &Listing {
                groups: admin
                    .list_groups()
                    .await?
                    .into_iter()
                    .map(Listed::from)
                    .collect(),
            },
            a.format.format,
        ),
        GroupCommand::Describe { group } => {
            render(&describe(&admin, &group).await?, a.format.format)
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to,
            dry_run,
        } => {
            let reset = Reset {
                group: &group,
                topic: &topic,
                partitions: &partitions,
                to,
            };
            render(&reset.run(&admin, dry_run).await?, a.format.format)
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            render(&Deleted { group }, a.format.format)
        }
    };
    emit(&text)?;
    Ok(())
}

/// `group list`.
#[derive(Serialize, Debug)]
pub struct Listing {
    groups: Vec<Listed>,
}

#[derive(Serialize, Debug)]
struct Listed {
    group: String,
    state: String,
    protocol_type: String,
}

impl From<GroupListing> for Listed {
    fn from(g: GroupListing) -> Listed {
        Listed {
            group: g.group_id,
            state: g.state,
            protocol_type: g.protocol_type,
        }
    }
}

impl Report for Listing {
    fn table(&self) -> String {
        let mut t = Table::new(&["group", "state", "protocol-type"]);
        for g in &self.groups {
            t.row(vec![
                g.group.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
            ]);
        }
        t.render()
    }
}

async fn describe(admin: &Admin, group: &str) -> Result<Described, CliError> {
    let d = admin.describe_group(group).await?;
    let committed = admin.group_offsets(group).await?;
    // A coordinator describes a group it does not know as Dead with no members (Kafka's
    // tool says the same: the group does not exist).
    if d.state == "Dead" && d.members.is_empty() && committed.is_empty() {
        return Err(CliError::NotFound(format!(
            "consumer group {group:?} does not exist (its coordinator describes it as Dead)"
        )));
    }
    let topics: BTreeSet<String> = committed
        .keys()
        .chain(d.members.iter().flat_map(|m| m.assignment.iter()))
        .map(|tp| tp.topic.clone())
        .collect();
    let mut ends = BTreeMap::new();
    for t in &topics {
        ends.extend(admin.end_offsets(t).await?);
    }
    Ok(Described::new(d, &committed, &ends))
}

/// `group describe`.
#[derive(Serialize, Debug)]
pub struct Described {
    group: String,
    state: String,
    protocol: String,
    members: usize,
    partitions: Vec<GroupPartition>,
}

#[derive(Serialize, Debug)]
struct GroupPartition {
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

impl Described {
    fn new(
        d: GroupDescription,
        committed: &BTreeMap<TopicPartition, i64>,
        ends: &BTreeMap<TopicPartition, i64>,
    ) -> Described {
        let mut owners = BTreeMap::new();
        for m in &d.members {
            for tp in &m.assignment {
                owners.insert(tp.clone(), m);
            }
        }
        // Every partition the group has a commit on or an owner of, in topic-partition order.
        let tps: BTreeSet<&TopicPartition> = committed.keys().chain(owners.keys()).collect();
        let partitions = tps
            .into_iter()
            .map(|tp| {
                let current = committed.get(tp).copied();
                let end = ends.get(tp).copied();
                let owner = owners.get(tp);
                GroupPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    current_offset: current,
                    log_end_offset: end,
                    lag: current.zip(end).map(|(c, e)| (e - c).max(0)),
                    member_id: owner.map(|m| m.member_id.clone()),
                    host: owner.map(|m| m.client_host.clone()),
                    client_id: owner.map(|m| m.client_id.clone()),
                }
            })
            .collect();
        Described {
            group: d.group_id,
            state: d.state,
            protocol: d.protocol,
            members: d.members.len(),
            partitions,
        }
    }
}

impl Report for Described {
    fn table(&self) -> String {
        let mut out = key_values(&[
            ("GROUP", self.group.clone()),
            ("STATE", self.state.clone()),
            (
                "PROTOCOL",
                or_dash((!self.protocol.is_empty()).then_some(&self.protocol)),
            ),
            ("MEMBERS", self.members.to_string()),
        ]);
        out.push('\n');
        if self.members == 0 {
            out.push_str(&format!(
                "Consumer group '{}' has no active members.\n\n",
                self.group
            ));
        }
        let mut t = Table::new(&[
            "topic",
            "partition",
            "current-offset",
            "log-end-offset",
            "lag",
            "consumer-id",
            "host",
            "client-id",
        ]);
        for p in &self.partitions {
            t.row(vec![
                p.topic.clone(),
                p.partition.to_string(),
                or_dash(p.current_offset),
                or_dash(p.log_end_offset),
                or_dash(p.lag),
                or_dash(p.member_id.clone()),
                or_dash(p.host.clone()),
                or_dash(p.client_id.clone()),
            ]);
        }
        out.push_str(&t.render());
        out
    }
}

/// A `reset-offsets` request.
struct Reset<'a> {
    group: &'a str,
    topic: &'a str,
    partitions: &'a [i32],
    to: StartAt,
}

impl Reset<'_> {
    async fn run(&self, admin: &Admin, dry_run: bool) -> Result<ResetDone, CliError> {
        let d = admin.describe_group(self.group).await?;
        if !d.members.is_empty() {
            return Err(CliError::Usage(format!(
                "group {:?} has {} active members (state {}); stop them before resetting its offsets",
                self.group,
                d.members.len(),
                d.state
            )));
        }
        let offsets = self.targets(admin).await?;
        if !dry_run {
            admin.reset_offsets(self.group, &offsets).await?;
        }
        Ok(ResetDone {
            group: self.group.into(),
            executed: !dry_run,
            offsets: offsets
                .into_iter()
                .map(|(tp, offset)| NewOffset {
                    topic: tp.topic,
                    partition: tp.partition,
                    new_offset: offset,
                })
                .collect(),
        })
    }

    /// The offset each chosen partition moves to.
    async fn targets(&self, admin: &Admin) -> Result<BTreeMap<TopicPartition, i64>, CliError> {
        let starts = admin.list_offsets(self.topic, OffsetSpec::Earliest).await?;
        let ends = admin.list_offsets(self.topic, OffsetSpec::Latest).await?;
        let at_time = match self.to {
            StartAt::Timestamp(ms) => Some(
                admin
                    .list_offsets(self.topic, OffsetSpec::Timestamp(ms))
                    .await?,
            ),
            _ => None,
        };
        for p in self.partitions {
            if !ends.contains_key(&TopicPartition::new(self.topic, *p)) {
                return Err(CliError::Usage(format!(
                    "topic {:?} has {} partitions; there is no partition {p}",
                    self.topic,
                    ends.len()
                )));
            }
        }
        let mut out = BTreeMap::new();
        for (tp, end) in &ends {
            if !self.partitions.is_empty() && !self.partitions.contains(&tp.partition) {
                continue;
            }
            let end = end.unwrap_or(0);
            let start = starts.get(tp).copied().flatten().unwrap_or(0);
            let offset = match self.to {
                StartAt::Beginning => start,
                StartAt::End => end,
                StartAt::Offset(o) => o.clamp(start, end),
                // No record that recent: the end, where the next one will be.
                StartAt::Timestamp(_) => at_time
                    .as_ref()
                    .and_then(|m| m.get(tp).copied().flatten())
                    .unwrap_or(end),
            };
            out.insert(tp.clone(), offset);
        }
        Ok(out)
    }
}

/// `group reset-offsets`.
#[derive(Serialize, Debug)]
pub struct ResetDone {
    group: String,
    executed: bool,
    offsets: Vec<NewOffset>,
}

#[derive(Serialize, Debug)]
struct NewOffset {
    topic: String,
    partition: i32,
    new_offset: i64,
}

impl Report for ResetDone {
    fn table(&self) -> String {
        let mut t = Table::new(&["group", "topic", "partition", "new-offset"]);
        for o in &self.offsets {
            t.row(vec![
                self.group.clone(),
                o.topic.clone(),
                o.partition.to_string(),
                o.new_offset.to_string(),
            ]);
        }
        let mut out = t.render();
        if !self.executed {
            out.push_str("(dry run: nothing was committed)\n");
        }
        out
    }
}

/// `group delete`.
#[derive(Serialize, Debug)]
pub struct Deleted {
    group: String,
}

impl Report for Deleted {
    fn table(&self) -> String {
        let mut t = Table::new(&["group", "status"]);
        t.row(vec![self.group.clone(), "DELETED".into()]);
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use railyard_client::admin::GroupMember;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn test_describe_shows_offsets_lag_and_owners_like_kafka_consumer_groups() {
        let d = GroupDescription {
            group_id: "billing".into(),
            state: "Stable".into(),
            protocol: "range".into(),
            members: vec![GroupMember {
                member_id: "railyard-cli-1f3a".into(),
                instance_id: None,
                client_id: "railyard-cli".into(),
                client_host: "/127.0.0.1".into(),
                assignment: vec![tp("events", 0), tp("events", 1)],
            }],
        };
        let committed = [(tp("events", 0), 10), (tp("events", 2), 3)]
            .into_iter()
            .collect();
        let ends = [
            (tp("events", 0), 15),
            (tp("events", 1), 4),
            (tp("events", 2), 3),
        ]
        .into_iter()
        .collect();
        insta::assert_snapshot!(Described::new(d, &committed, &ends).table(), @r"
        GROUP     billing
        STATE     Stable
        PROTOCOL  range
        MEMBERS   1

        TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID        HOST        CLIENT-ID
        events  0          10              15              5    railyard-cli-1f3a  /127.0.0.1  railyard-cli
        events  1          -               4               -    railyard-cli-1f3a  /127.0.0.1  railyard-cli
        events  2          3               3               0    -                  -           -
        ");
    }

    #[test]
    fn test_an_empty_group_says_so() {
        let d = GroupDescription {
            group_id: "idle".into(),
            state: "Empty".into(),
            protocol: String::new(),
            members: Vec::new(),
        };
        let committed = [(tp("events", 0), 7)].into_iter().collect();
        let ends = [(tp("events", 0), 9)].into_iter().collect();
        let text = Described::new(d, &committed, &ends).table();
        assert!(
            text.contains("Consumer group 'idle' has no active members."),
            "{text}"
        );
        assert!(
            text.contains("events  0          7               9               2"),
            "{text}"
        );
    }
}
