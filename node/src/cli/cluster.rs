//! `railyard cluster info`: the cluster id, the controller and the brokers, from a fresh
//! Metadata response.

use clap::{Args, Subcommand};
use railyard_client::admin::ClusterDescription;
use serde::Serialize;

use super::output::{emit, key_values, or_dash, render, Report, Table};
use super::{CliError, Connect, FormatArg};

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
}

/// Runs `railyard cluster ...`.
pub async fn run(a: ClusterArgs) -> Result<(), CliError> {
    let admin = a.connect.admin().await?;
    match a.command {
        ClusterCommand::Info => {
            let d = admin.describe_cluster().await?;
            let topics = admin.cluster().metadata().topics.len();
            emit(&render(&Info::new(d, topics), a.format.format))?;
        }
    }
    Ok(())
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
}
