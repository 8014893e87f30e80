//! What `railyard dev` shows in the terminal: a banner with everything a newcomer needs to
//! connect (bootstrap servers, admin URLs, data directory, log file, topics), then one line per
//! event that matters to someone using the cluster: a broker fenced or back, the controller
//! moving, a topic created or deleted, a partition's leader changing. The full structured logs
//! go to a file (see `main.rs`).
//!
//! Events are found by diffing [`Snapshot`]s of a node's published cluster view, taken every
//! [`POLL_MS`]: pure functions, so the wording is tested without a cluster. Internal topics
//! (`__consumer_offsets`) are left out: their leaders move with group coordinators and would
//! drown the lines a person is looking for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use railyard_core::types::{is_internal_topic, NodeId};

use crate::broker::ClusterView;
use crate::config::TopicConfig;

/// How often the console looks at the cluster view for events.
pub const POLL_MS: u64 = 250;

/// What the console compares between two looks at the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Brokers the cluster lists (a fenced broker is missing).
    pub brokers: BTreeSet<NodeId>,
    pub controller: Option<NodeId>,
    /// Client topics and their partition counts.
    pub topics: BTreeMap<String, usize>,
    /// The leader of each client partition, by (topic, partition).
    pub leaders: BTreeMap<(String, i32), Option<NodeId>>,
}

impl Snapshot {
    pub fn of(view: &ClusterView) -> Snapshot {
        let mut s = Snapshot {
            brokers: view.brokers().iter().map(|b| b.id).collect(),
            controller: view.controller(),
            ..Snapshot::default()
        };
        for t in view.topics().iter().filter(|t| !is_internal_topic(&t.name)) {
            s.topics.insert(t.name.clone(), t.partitions.len());
            for p in &t.partitions {
                s.leaders.insert((t.name.clone(), p.partition), p.leader);
            }
        }
        s
    }
}

/// The event lines between two snapshots, in a fixed order: brokers, controller, topics,
/// leaders. A new partition gets a leader line once it has a leader.
pub fn events(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for id in before.brokers.difference(&after.brokers) {
        out.push(format!(
            "node {id} is down (fenced: no heartbeat within the session timeout)"
        ));
    }
    for id in after.brokers.difference(&before.brokers) {
        out.push(format!("node {id} is up"));
    }
    if before.controller != after.controller {
        out.push(match after.controller {
            Some(c) => format!("controller: node {c}"),
            None => "controller: none (electing)".to_string(),
        });
    }
    for (name, n) in &after.topics {
        if !before.topics.contains_key(name) {
            out.push(format!("topic {name} created ({n} partitions)"));
        } else if before.topics[name] != *n {
            out.push(format!(
                "topic {name}: {} -> {n} partitions",
                before.topics[name]
            ));
        }
    }
    for name in before.topics.keys() {
        if !after.topics.contains_key(name) {
            out.push(format!("topic {name} deleted"));
        }
    }
    for ((topic, p), leader) in &after.leaders {
        // A new partition without a leader yet: its topic's line said it exists.
        let was = before.leaders.get(&(topic.clone(), *p)).copied().flatten();
        let known = before.leaders.contains_key(&(topic.clone(), *p));
        if (known && was != *leader) || (!known && leader.is_some()) {
            out.push(format!("{topic}-{p}: {}", leader_change(was, *leader)));
        }
    }
    out
}

fn leader_change(was: Option<NodeId>, now: Option<NodeId>) -> String {
    match (was, now) {
        (Some(a), Some(b)) => format!("leader node {a} -> node {b}"),
        (None, Some(b)) => format!("leader node {b}"),
        (_, None) => "no leader (electing)".to_string(),
    }
}

/// What the banner shows.
pub struct Banner<'a> {
    pub kafka: &'a [SocketAddr],
    pub admin: &'a [SocketAddr],
    pub controllers: u64,
    pub data_dir: &'a Path,
    pub log_file: &'a Path,
    pub topics: &'a [TopicConfig],
    pub auto_create_topics: bool,
    /// A config for one more node, joining this cluster (`railyard start --config` it).
    pub join_config: Option<&'a Path>,
}

impl Banner<'_> {
    pub fn render(&self) -> String {
        let bootstrap: Vec<String> = self.kafka.iter().map(|a| a.to_string()).collect();
        let mut s = String::new();
        let nodes = self.kafka.len();
        let _ = writeln!(
            s,
            "Railyard dev cluster: {nodes} node{} in this process, {} of them controllers",
            if nodes == 1 { "" } else { "s" },
            self.controllers
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "  bootstrap.servers={}", bootstrap.join(","));
        for (i, a) in self.admin.iter().enumerate() {
            let _ = writeln!(
                s,
                "  admin (node {}): http://{a}/v1/cluster  /metrics  /health",
                i + 1
            );
        }
        let _ = writeln!(s, "  data:   {}", self.data_dir.display());
        let _ = writeln!(s, "  logs:   {}", self.log_file.display());
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|t| {
                format!(
                    "{} ({} partitions, RF {})",
                    t.name, t.partitions, t.replication_factor
                )
            })
            .collect();
        let topics = if topics.is_empty() {
            "none".to_string()
        } else {
            topics.join(", ")
        };
        let _ = writeln!(s, "  topics: {topics}");
        let auto = if self.auto_create_topics { "on" } else { "off" };
        let _ = writeln!(s, "  auto-create topics: {auto}");
        let first = bootstrap.first().map_or("127.0.0.1:9092", String::as_str);
        let _ = writeln!(s);
        let _ = writeln!(s, "  try:    kcat -b {first} -L");
        if let Some(t) = self.topics.first() {
            let _ = writeln!(s, "          echo hello | kcat -b {first} -P -t {}", t.name);
            let _ = writeln!(
                s,
                "          kcat -b {first} -C -t {} -o beginning -e",
                t.name
            );
        }
        if let Some(p) = self.join_config {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "  add a node (another terminal): railyard start --config {}",
                p.display()
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Events (Ctrl-C stops the cluster):");
        s
    }
}

/// `HH:MM:SS` UTC of a Unix time in seconds, for the event lines.
pub fn clock_utc(unix_secs: u64) -> String {
    let day = unix_secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(brokers: &[NodeId], leaders: &[(&str, i32, Option<NodeId>)]) -> Snapshot {
        let mut s = Snapshot {
            brokers: brokers.iter().copied().collect(),
            controller: Some(1),
            ..Snapshot::default()
        };
        for (t, p, l) in leaders {
            *s.topics.entry(t.to_string()).or_default() += 1;
            s.leaders.insert((t.to_string(), *p), *l);
        }
        s
    }

    #[test]
    fn test_events_name_what_changed_and_nothing_else() {
        let before = snap(
            &[1, 2, 3],
            &[("events", 0, Some(1)), ("events", 1, Some(2))],
        );
        assert!(events(&before, &before).is_empty());
        let mut after = snap(&[1, 2], &[("events", 0, Some(1)), ("events", 1, Some(3))]);
        after.controller = Some(2);
        after.topics.insert("orders".into(), 2);
        after.leaders.insert(("orders".into(), 0), None);
        after.leaders.insert(("orders".into(), 1), Some(2));
        assert_eq!(
            events(&before, &after),
            vec![
                "node 3 is down (fenced: no heartbeat within the session timeout)",
                "controller: node 2",
                "topic orders created (2 partitions)",
                "events-1: leader node 2 -> node 3",
                "orders-1: leader node 2",
            ]
        );
        let back = snap(&[1, 2, 3], &[("events", 0, None)]);
        assert_eq!(
            events(&after, &back),
            vec![
                "node 3 is up",
                "controller: node 1",
                "topic events: 2 -> 1 partitions",
                "topic orders deleted",
                "events-0: no leader (electing)",
            ]
        );
    }

    #[test]
    fn test_banner_shows_how_to_connect() {
        let kafka: Vec<SocketAddr> = (0..3)
            .map(|i| format!("127.0.0.1:{}", 9092 + i).parse().unwrap())
            .collect();
        let admin: Vec<SocketAddr> = vec!["127.0.0.1:9644".parse().unwrap()];
        let topics = vec![TopicConfig {
            name: "events".into(),
            partitions: 3,
            replication_factor: 3,
        }];
        let b = Banner {
            kafka: &kafka,
            admin: &admin,
            controllers: 3,
            data_dir: Path::new("./railyard-data"),
            log_file: Path::new("./railyard-data/railyard.log"),
            topics: &topics,
            auto_create_topics: false,
            join_config: Some(Path::new("./railyard-data/join-node-4.toml")),
        };
        let text = b.render();
        for want in [
            "  bootstrap.servers=127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094\n",
            "http://127.0.0.1:9644/v1/cluster",
            "logs:   ./railyard-data/railyard.log",
            "topics: events (3 partitions, RF 3)",
            "kcat -b 127.0.0.1:9092 -L",
            "add a node (another terminal): railyard start --config ./railyard-data/join-node-4.toml",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn test_clock_is_utc_hours_minutes_seconds() {
        assert_eq!(clock_utc(0), "00:00:00");
        assert_eq!(clock_utc(86_400 + 3_661), "01:01:01");
    }
}
