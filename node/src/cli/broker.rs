//! `railyard broker list|decommission`: the brokers, and taking one out of the cluster, in the
//! manner of `rpk redpanda admin brokers decommission`.
//!
//! - `list` shows every registered broker (fenced ones too, DescribeCluster v2) with the
//!   replicas and preferred leaderships it holds.
//! - `decommission N` asks the controller to drain broker N (UnregisterBroker: every replica
//!   moves off it, then, once it is stopped, it is unregistered). With `--wait` the command
//!   reports progress until N holds no replicas, and, if N is already stopped, until it is
//!   unregistered. A decommission that would leave a partition short of brokers for its
//!   replication factor is refused (INVALID_REPLICATION_FACTOR) and changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use railyard_client::{Admin, BrokerStatus};
use serde::Serialize;

use super::output::{emit, render, Report, Table};
use super::{CliError, Connect, FormatArg};

/// `railyard broker ...`.
#[derive(Args, Debug)]
pub struct BrokerArgs {
    #[command(flatten)]
    connect: Connect,
    #[command(flatten)]
    format: FormatArg,
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Subcommand, Debug)]
enum BrokerCommand {
    /// List the registered brokers with their replica and leader counts.
    List,
    /// Drain a broker and take it out of the cluster once it is stopped.
    Decommission {
        /// The broker's node id.
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        id: i32,
        /// Report progress until the broker holds no replicas, up to `--timeout-ms`.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs `railyard broker ...`.
pub async fn run(a: BrokerArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    match a.command {
        BrokerCommand::List => {
            let list = Brokers::fetch(&admin).await?;
            emit(&render(&list, a.format.format))?;
        }
        BrokerCommand::Decommission { id, wait } => {
            admin.unregister_broker(id).await?;
            if wait {
                wait_drained(&admin, id, a.connect.timeout_ms).await?;
            } else {
                emit(&format!(
                    "broker {id} is being decommissioned; `railyard broker list` shows its \
                     replicas leaving\n"
                ))?;
            }
        }
    }
    Ok(())
}

/// Polls until broker `id` holds no replicas (and, if it is stopped, is unregistered).
async fn wait_drained(admin: &Admin, id: i32, timeout_ms: u64) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut last = None;
    loop {
        let list = Brokers::fetch(admin).await?;
        let me = list.brokers.iter().find(|b| b.id == id);
        let Some(me) = me else {
            emit(&format!("broker {id} is decommissioned and unregistered\n"))?;
            return Ok(());
        };
        if me.replicas == 0 && !me.fenced {
            emit(&format!(
                "broker {id} holds no replicas: stop it, and it is unregistered once its \
                 session expires\n"
            ))?;
            return Ok(());
        }
        if last != Some(me.replicas) {
            eprintln!("broker {id}: {} replicas left", me.replicas);
            last = Some(me.replicas);
        }
        if Instant::now() >= deadline {
            return Err(CliError::Usage(format!(
                "broker {id} still holds {} replicas after {timeout_ms} ms",
                me.replicas
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `broker list`.
#[derive(Serialize, Debug)]
pub struct Brokers {
    brokers: Vec<Broker>,
}

#[derive(Serialize, Debug)]
struct Broker {
    id: i32,
    address: String,
    rack: Option<String>,
    fenced: bool,
    replicas: usize,
    leaders: usize,
}

impl Brokers {
    async fn fetch(admin: &Admin) -> Result<Brokers, CliError> {
        let status = admin.describe_brokers().await?;
        let meta = admin.cluster().refresh_metadata().await?;
        let mut replicas: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
        for t in meta.topics.values() {
            for p in &t.partitions {
                for (i, b) in p.replicas.iter().enumerate() {
                    let e = replicas.entry(*b).or_default();
                    e.0 += 1;
                    e.1 += usize::from(i == 0);
                }
            }
        }
        Ok(Brokers::new(status, &replicas))
    }

    fn new(status: Vec<BrokerStatus>, counts: &BTreeMap<i32, (usize, usize)>) -> Brokers {
        let mut brokers: Vec<Broker> = status
            .into_iter()
            .map(|b| {
                let (replicas, leaders) = counts.get(&b.node_id).copied().unwrap_or_default();
                Broker {
                    id: b.node_id,
                    address: b.addr,
                    rack: b.rack,
                    fenced: b.fenced,
                    replicas,
                    leaders,
                }
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        Brokers { brokers }
    }
}

impl Report for Brokers {
    fn table(&self) -> String {
        let mut t = Table::new(&["id", "address", "rack", "fenced", "replicas", "leaders"]);
        for b in &self.brokers {
            t.row(vec![
                b.id.to_string(),
                b.address.clone(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
                b.fenced.to_string(),
                b.replicas.to_string(),
                b.leaders.to_string(),
            ]);
        }
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_brokers_table() {
        let status = |id, fenced| BrokerStatus {
            node_id: id,
            addr: format!("127.0.0.1:909{id}"),
            rack: (id == 1).then(|| "a".to_string()),
            fenced,
        };
        let counts = BTreeMap::from([(1, (4, 2)), (2, (2, 0))]);
        let list = Brokers::new(
            vec![status(2, false), status(1, false), status(3, true)],
            &counts,
        );
        insta::assert_snapshot!(list.table(), @r"
        ID  ADDRESS         RACK  FENCED  REPLICAS  LEADERS
        1   127.0.0.1:9091  a     false   4         2
        2   127.0.0.1:9092  -     false   2         0
        3   127.0.0.1:9093  -     true    0         0
        ");
    }
}
