//! Node configuration: a TOML file whose every field a CLI flag or a `RAILYARD_*` environment
//! variable can override (flags win over the environment, which wins over the file).
//!
//! Topics live in the metadata log (the controller raft group, `__cluster_metadata-0`, whose
//! voters are `controller_voters`, default every peer). Topics listed here (or given with
//! `--topic name:partitions[:replication]`) are created at startup if missing, through the
//! controller exactly as a CreateTopics request would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use railyard_core::topic_config::BrokerDefaults;
use railyard_core::types::{valid_topic_name, NodeId};
use serde::Deserialize;

/// One broker of the cluster, as every node's config names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PeerConfig {
    pub id: NodeId,
    /// Node-to-node (raft) address.
    pub raft_addr: SocketAddr,
    /// Address Kafka clients are told to connect to.
    pub kafka_addr: SocketAddr,
    #[serde(default)]
    pub rack: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: u32,
    #[serde(default = "default_replication")]
    pub replication_factor: u32,
}

fn default_replication() -> u32 {
    3
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Term,
    Json,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where this node listens for Kafka clients.
    pub kafka_listen: SocketAddr,
    /// Where this node listens for its peers.
    pub raft_listen: SocketAddr,
    /// Admin HTTP endpoint (`/metrics`, `/health`, `/v1/cluster`); off when absent.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Every broker of the cluster, this one included.
    pub peers: Vec<PeerConfig>,
    /// Topics to create at startup if missing (through the controller, like CreateTopics).
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// Voters of the metadata (controller) raft group; default: every peer. Peers not listed
    /// follow the metadata log as raft learners.
    #[serde(default)]
    pub controller_voters: Vec<NodeId>,
    /// Join a running cluster instead of forming one: with an empty data directory, the node
    /// asks the controller quorum (`controller_voters`, which must be given, with their
    /// addresses in `peers`) to admit it, and learns every other broker from the metadata
    /// log. A data directory that already holds a metadata log rejoins as before.
    #[serde(default)]
    pub join: bool,
    /// How often this broker heartbeats to the controller (registration, leaderships).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The controller fences a broker silent for this long: Metadata stops listing it and new
    /// replicas are not placed on it.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Create a topic when a client asks Metadata for it (or produces to it) and it does not
    /// exist, as Kafka's `auto.create.topics.enable`. Off by default.
    #[serde(default)]
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (Kafka's `num.partitions`).
    #[serde(default = "default_partitions")]
    pub default_partitions: u32,
    /// Replication factor of an auto-created topic; default min(3, brokers).
    #[serde(default)]
    pub default_replication_factor: Option<u32>,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Leaders refuse produces (KAFKA_STORAGE_ERROR) while the data disk has less free space;
    /// reads keep working.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Partitions of `__consumer_offsets`, created when the cluster forms (Kafka's
    /// `offsets.topic.num.partitions`).
    #[serde(default = "default_offsets_partitions")]
    pub offsets_topic_num_partitions: u32,
    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    #[serde(default = "default_initial_rebalance_delay_ms")]
    pub group_initial_rebalance_delay_ms: u32,
    /// The session timeouts a JoinGroup may ask for (Kafka's `group.min.session.timeout.ms`
    /// and `group.max.session.timeout.ms`).
    #[serde(default = "default_group_min_session_timeout_ms")]
    pub group_min_session_timeout_ms: u32,
    #[serde(default = "default_group_max_session_timeout_ms")]
    pub group_max_session_timeout_ms: u32,
    /// Committed offsets of an empty group expire after this long (Kafka's
    /// `offsets.retention.minutes`).
    #[serde(default = "default_offsets_retention_minutes")]
    pub offsets_retention_minutes: u64,
    /// A producer id with no batch for this long is forgotten by the partitions; its next
    /// batch gets UNKNOWN_PRODUCER_ID (Kafka's `producer.id.expiration.ms`, one day).
    #[serde(default = "default_producer_id_expiration_ms")]
    pub producer_id_expiration_ms: u64,
    /// Broker-level defaults of topic configs, under Kafka's broker config names, for every
    /// topic without its own override, e.g. `"log.retention.ms" = 3600000`,
    /// `"message.max.bytes" = 2097152`, `"log.message.timestamp.type" = "LogAppendTime"`
    /// (docs/kafka-compatibility.md lists them). Values may be TOML strings, integers or
    /// booleans (a ratio goes in a string: `"log.cleaner.min.cleanable.ratio" = "0.5"`).
    #[serde(default)]
    pub topic_defaults: BTreeMap<String, ConfigValue>,
}

/// A value of [`NodeConfig::topic_defaults`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ConfigValue {
    String(String),
    Integer(i64),
    Boolean(bool),
}

fn default_producer_id_expiration_ms() -> u64 {
    railyard_core::producers::PRODUCER_EXPIRATION_MS_DEFAULT as u64
}

fn default_offsets_partitions() -> u32 {
    railyard_core::groups::OFFSETS_PARTITIONS_DEFAULT
}

fn default_initial_rebalance_delay_ms() -> u32 {
    3_000
}

fn default_group_min_session_timeout_ms() -> u32 {
    6_000
}

fn default_group_max_session_timeout_ms() -> u32 {
    1_800_000
}

fn default_offsets_retention_minutes() -> u64 {
    7 * 24 * 60
}

fn default_tick_ms() -> u64 {
    100
}

fn default_heartbeat_ms() -> u64 {
    500
}

fn default_session_timeout_ms() -> u64 {
    4_000
}

fn default_partitions() -> u32 {
    1
}

fn default_min_free_bytes() -> u64 {
    256 << 20
}

fn default_log_level() -> String {
    "info".into()
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    pub fn from_file(path: &std::path::Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(toml::from_str(&text)?)
    }

    /// Checks what the types cannot: ids, topic names, replication factors.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return bad("node id 0 is reserved (raft)".into());
        }
        if !self.peers.iter().any(|p| p.id == self.id) {
            return bad(format!("peers do not list this node ({})", self.id));
        }
        let mut ids: Vec<NodeId> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() || ids.contains(&0) {
            return bad("peer ids must be unique and non-zero".into());
        }
        for t in &self.topics {
            if !valid_topic_name(&t.name) {
                return bad(format!("invalid topic name {:?}", t.name));
            }
            if t.partitions == 0 || t.replication_factor == 0 {
                return bad(format!("topic {} needs partitions and replicas", t.name));
            }
            if t.replication_factor as usize > self.peers.len() {
                return bad(format!(
                    "topic {} wants {} replicas but the cluster has {} brokers",
                    t.name,
                    t.replication_factor,
                    self.peers.len()
                ));
            }
        }
        if let Some(v) = self
            .controller_voters
            .iter()
            .find(|v| !self.peers.iter().any(|p| p.id == **v))
        {
            return bad(format!("controller voter {v} is not a peer"));
        }
        if self.join && self.controller_voters.is_empty() {
            return bad("join needs controller_voters: the quorum to ask for admission".into());
        }
        if self.join && self.controller_voters.contains(&self.id) {
            return bad(format!(
                "node {} cannot join as a controller voter: it joins as a learner",
                self.id
            ));
        }
        if self.producer_id_expiration_ms == 0 || self.producer_id_expiration_ms > i64::MAX as u64 {
            return bad("producer_id_expiration_ms must be positive".into());
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return bad("group_min_session_timeout_ms exceeds group_max_session_timeout_ms".into());
        }
        if self.heartbeat_ms == 0 || self.session_timeout_ms <= 2 * self.heartbeat_ms {
            return bad("session_timeout_ms must exceed two heartbeats (heartbeat_ms > 0)".into());
        }
        if self.auto_create_topics && self.default_partitions == 0 {
            return bad("default_partitions must be positive".into());
        }
        if let Some(rf) = self.default_replication_factor {
            if rf == 0 || rf as usize > self.peers.len() {
                return bad(format!(
                    "default_replication_factor {rf} is not in 1..={}",
                    self.peers.len()
                ));
            }
        }
        if self.tick_ms == 0 {
            return bad("tick_ms must be positive".into());
        }
        self.broker_defaults()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("topic_defaults: {e}")))?;
        Ok(())
    }

    /// [`NodeConfig::topic_defaults`] as the core takes them: strings, as Kafka stores them.
    pub fn broker_defaults(&self) -> BrokerDefaults {
        let out = self
            .topic_defaults
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    ConfigValue::String(s) => s.clone(),
                    ConfigValue::Integer(i) => i.to_string(),
                    ConfigValue::Boolean(b) => b.to_string(),
                };
                (k.clone(), s)
            })
            .collect();
        BrokerDefaults(out)
    }

    /// Partitions and replication factor of auto-created topics; `None` when auto-creation is
    /// off.
    pub fn auto_create(&self) -> Option<(u32, u32)> {
        self.auto_create_topics.then(|| {
            let rf = self
                .default_replication_factor
                .unwrap_or(self.peers.len().min(3) as u32);
            (self.default_partitions, rf)
        })
    }

    /// The controller quorum: `controller_voters`, or every peer when empty.
    pub fn controller_voters(&self) -> Vec<NodeId> {
        if self.controller_voters.is_empty() {
            self.peers.iter().map(|p| p.id).collect()
        } else {
            self.controller_voters.clone()
        }
    }
}

impl std::fmt::Display for TopicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.name, self.partitions, self.replication_factor
        )
    }
}

/// Parses `name:partitions[:replication]`.
pub fn parse_topic_flag(s: &str) -> Result<TopicConfig, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |v: &str| v.parse::<u32>().map_err(|e| format!("{s}: {e}"));
    match parts.as_slice() {
        [name] => Ok(TopicConfig {
            name: name.to_string(),
            partitions: 1,
            replication_factor: 3,
        }),
        [name, p] => Ok(TopicConfig {
            name: name.to_string(),
            partitions: num(p)?,
            replication_factor: 3,
        }),
        [name, p, r] => Ok(TopicConfig {
            name: name.to_string(),
            partitions: num(p)?,
            replication_factor: num(r)?,
        }),
        _ => Err(format!("expected name:partitions[:replication], got {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> NodeConfig {
        let peers = (1..=3)
            .map(|id| PeerConfig {
                id,
                raft_addr: format!("127.0.0.1:{}", 19000 + id).parse().unwrap(),
                kafka_addr: format!("127.0.0.1:{}", 9091 + id).parse().unwrap(),
                rack: None,
            })
            .collect();
        NodeConfig {
            id: 1,
            data_dir: "/tmp/x".into(),
            kafka_listen: "127.0.0.1:9092".parse().unwrap(),
            raft_listen: "127.0.0.1:19001".parse().unwrap(),
            admin_listen: None,
            peers,
            topics: vec![TopicConfig {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
            }],
            controller_voters: vec![],
            join: false,
            heartbeat_ms: 500,
            session_timeout_ms: 4_000,
            auto_create_topics: false,
            default_partitions: 1,
            default_replication_factor: None,
            tick_ms: 100,
            min_free_bytes: 0,
            log_format: LogFormat::Term,
            log_level: "info".into(),
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 7 * 24 * 60,
            producer_id_expiration_ms: 86_400_000,
            topic_defaults: BTreeMap::new(),
        }
    }

    #[test]
    fn test_invalid_configs_are_refused() {
        let mut c = three();
        c.topics[0].replication_factor = 4;
        assert!(c.validate().is_err());
        let mut c = three();
        c.topics[0].name = "a/b".into();
        assert!(c.validate().is_err());
        let mut c = three();
        c.id = 9;
        assert!(c.validate().is_err());
        assert!(parse_topic_flag("x:2:1").unwrap().partitions == 2);
        assert!(parse_topic_flag("x:y").is_err());
    }

    #[test]
    fn test_toml_round_trip() {
        let text = r#"
            id = 2
            data_dir = "/var/lib/railyard"
            kafka_listen = "0.0.0.0:9092"
            raft_listen = "0.0.0.0:19092"
            [[peers]]
            id = 2
            raft_addr = "10.0.0.2:19092"
            kafka_addr = "10.0.0.2:9092"
            rack = "a"
            [[topics]]
            name = "orders"
            partitions = 6
        "#;
        let c: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!(c.topics[0].replication_factor, 3);
        assert_eq!(c.tick_ms, 100);
        assert_eq!(c.peers[0].rack.as_deref(), Some("a"));
    }

    #[test]
    fn test_topic_defaults_take_kafka_broker_names_and_are_validated() {
        let text = r#"
            id = 1
            data_dir = "/tmp/x"
            kafka_listen = "127.0.0.1:9092"
            raft_listen = "127.0.0.1:19092"
            [[peers]]
            id = 1
            raft_addr = "127.0.0.1:19092"
            kafka_addr = "127.0.0.1:9092"
            [topic_defaults]
            "log.retention.ms" = 86400000
            "log.message.timestamp.type" = "LogAppendTime"
            "unclean.leader.election.enable" = false
        "#;
        let c: NodeConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let d = c.broker_defaults();
        assert_eq!(d.0["log.retention.ms"], "86400000");
        assert_eq!(d.0["unclean.leader.election.enable"], "false");
        let bad: NodeConfig = toml::from_str(&text.replace("86400000", "\"soon\"")).unwrap();
        assert!(bad.validate().is_err(), "a bad value is refused at load");
        let unknown: NodeConfig =
            toml::from_str(&text.replace("log.retention.ms", "log.no.such")).unwrap();
        assert!(
            unknown.validate().is_err(),
            "an unknown name is refused at load"
        );
    }
}
