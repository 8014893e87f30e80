//! `railyard partition reassign|reassignments`: partition moves (KIP-455), in the manner of
//! `kafka-reassign-partitions.sh` and `rpk cluster partitions move`.
//!
//! - `reassign TOPIC:PARTITION --replicas 2,3,4` moves a partition (the first replica is the
//!   preferred leader); `--cancel` instead takes a moving partition back to its replicas. The
//!   command returns once the controller has recorded the move, and with `--wait` once it is
//!   done.
//! - `reassignments` lists the moves in flight: replicas, and those joining and leaving.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use railyard_client::{Admin, PartitionReassignment, TopicPartition};
use serde::Serialize;

use super::output::{emit, ids, render, Report, Table};
use super::{CliError, Connect, FormatArg};

/// `railyard partition ...`.
#[derive(Args, Debug)]
pub struct PartitionArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    #[command(subcommand)]
    command: PartitionCommand,
}

#[derive(Subcommand, Debug)]
enum PartitionCommand {
    /// Move a partition to new replicas, or cancel its move.
    Reassign {
        /// The partition, `TOPIC:PARTITION`.
        #[arg(value_parser = parse_partition)]
        partition: TopicPartition,
        /// The new replicas, `2,3,4` (the first is the preferred leader).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "cancel",
            conflicts_with = "cancel"
        )]
        replicas: Vec<i32>,
        /// Cancel the partition's move: back to the replicas it had.
        #[arg(long)]
        cancel: bool,
        /// Wait until the move is done (no longer listed), up to `--timeout-ms`.
        #[arg(long)]
        wait: bool,
    },
    /// List the partition moves in flight.
    Reassignments,
}

/// Runs `railyard partition ...`.
pub async fn run(a: PartitionArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    match a.command {
        PartitionCommand::Reassign {
            partition,
            replicas,
            cancel,
            wait,
        } => {
            let target = (!cancel).then_some(replicas);
            let moves = [(partition.clone(), target)];
            admin.alter_partition_reassignments(&moves).await?;
            if wait {
                wait_done(&admin, &partition, a.connect.timeout_ms).await?;
            }
            let verb = if cancel { "cancelled" } else { "reassigned" };
            let done = if wait { "done" } else { "recorded" };
            emit(&format!(
                "{}:{} {verb} ({done})\n",
                partition.topic, partition.partition
            ))?;
        }
        PartitionCommand::Reassignments => {
            let list = admin.list_partition_reassignments().await?;
            emit(&render(&Moves::new(list), a.format.format))?;
        }
    }
    Ok(())
}

/// Polls ListPartitionReassignments until `tp` is no longer moving.
async fn wait_done(admin: &Admin, tp: &TopicPartition, timeout_ms: u64) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let moving = admin.list_partition_reassignments().await?;
        if !moving.iter().any(|m| m.tp == *tp) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "{}:{} is still moving after {timeout_ms} ms",
                tp.topic, tp.partition
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Parses `TOPIC:PARTITION` (the topic may itself hold colons; the last one splits).
pub fn parse_partition(s: &str) -> Result<TopicPartition, String> {
    let bad = || format!("{s:?}: expected TOPIC:PARTITION, e.g. orders:0");
    let (topic, p) = s.rsplit_once(':').ok_or_else(bad)?;
    let partition = p.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(bad)?;
    if topic.is_empty() {
        return Err(bad());
    }
    Ok(TopicPartition {
        topic: topic.to_string(),
        partition,
    })
}

/// `partition reassignments`.
#[derive(Serialize, Debug)]
pub struct Moves {
    reassignments: Vec<Move>,
}

#[derive(Serialize, Debug)]
struct Move {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

impl Moves {
    fn new(list: Vec<PartitionReassignment>) -> Moves {
        let reassignments = list
            .into_iter()
            .map(|m| Move {
                topic: m.tp.topic,
                partition: m.tp.partition,
                replicas: m.replicas,
                adding: m.adding,
                removing: m.removing,
            })
            .collect();
        Moves { reassignments }
    }
}

impl Report for Moves {
    fn table(&self) -> String {
        let mut t = Table::new(&["topic", "partition", "replicas", "adding", "removing"]);
        for m in &self.reassignments {
            t.row(vec![
                m.topic.clone(),
                m.partition.to_string(),
                ids(&m.replicas),
                ids(&m.adding),
                ids(&m.removing),
            ]);
        }
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_partition_argument_parses_and_rejects() {
        let tp = parse_partition("orders:3").unwrap();
        assert_eq!((tp.topic.as_str(), tp.partition), ("orders", 3));
        let tp = parse_partition("a:b:0").unwrap();
        assert_eq!((tp.topic.as_str(), tp.partition), ("a:b", 0));
        for bad in ["orders", ":1", "orders:", "orders:-1", "orders:x"] {
            assert!(parse_partition(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn test_reassignments_table() {
        let m = PartitionReassignment {
            tp: TopicPartition {
                topic: "orders".into(),
                partition: 0,
            },
            replicas: vec![2, 3, 4, 1],
            adding: vec![4],
            removing: vec![1],
        };
        insta::assert_snapshot!(Moves::new(vec![m]).table(), @r"
        TOPIC   PARTITION  REPLICAS  ADDING  REMOVING
        orders  0          2,3,4,1   4       1
        ");
    }
}
