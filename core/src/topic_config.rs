//! The registry of topic-level configs: every config Kafka 4.0 documents for topics, with its
//! type, default, broker-level synonym, validation and what it does in Railyard.
//!
//! Kafka clients create topics with any of these configs and expect DescribeConfigs to list all
//! of them, so Railyard accepts every one that Kafka accepts, with Kafka's types and ranges
//! (`ConfigDef` parsing: values are trimmed, booleans are case-insensitive, enum strings are not).
//! Two kinds of value are refused although Kafka accepts them: those that need a feature
//! Railyard lacks ([`ConfigError::NotAvailable`]: log compaction, tiered storage), so that no
//! config is silently ignored where it would change what a client sees. A config that is accepted
//! and changes nothing here says so, and why, in its [`Effect`]; `docs/kafka-compatibility.md`
//! lists them all and a test keeps it in step with [`TOPIC_CONFIGS`].
//!
//! The value of a config for a topic comes from the topic's override, else the node's broker
//! default (under Kafka's broker name, such as `log.retention.ms` for `retention.ms`), else
//! Kafka's default ([`effective`]). [`TopicSettings::resolve`] turns that into the typed settings
//! the data path needs. Overrides are stored as the strings the client sent, as Kafka does.
//!
//! [`Effect::Enforced`] texts describe the behaviour issue 12 wires into the log, the produce
//! path and the controller; the wiring must keep them true.
//!
//! Everything here is pure: no clock, no IO, and maps are `BTreeMap`s so that the first error
//! reported for a set of configs is always the same one.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::batch::Compression;

/// Kafka's `ConfigDef.Type`, numbered as DescribeConfigs v3+ reports it (`UNKNOWN` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// The `config_type` code of DescribeConfigs v3+.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }

    /// The lower-case name Kafka's documentation uses (`long`, `list`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "boolean",
            ConfigType::String => "string",
            ConfigType::Int => "int",
            ConfigType::Short => "short",
            ConfigType::Long => "long",
            ConfigType::Double => "double",
            ConfigType::List => "list",
            ConfigType::Class => "class",
            ConfigType::Password => "password",
        }
    }
}

/// How a value is validated: the parse of its [`ConfigType`] plus Kafka's validator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// `true` or `false`, in any case.
    Bool,
    /// A 32-bit integer in `[min, max]`.
    Int { min: i32, max: i32 },
    /// A 32-bit integer in `[min, max]`, or exactly `or` (gzip's "codec default" level, -1).
    IntOr { min: i32, max: i32, or: i32 },
    /// A 64-bit integer of at least `min`.
    Long { min: i64 },
    /// A finite double in `[min, max]`.
    Double { min: f64, max: f64 },
    /// One of these strings, case-sensitive.
    OneOf(&'static [&'static str]),
    /// A comma-separated list, each item one of these strings (case-sensitive); may be empty.
    ListOf(&'static [&'static str]),
    /// A comma-separated list of `partition:broker` pairs, or the single wildcard `*`.
    ReplicaList,
}

impl Check {
    /// The valid values in the notation of Kafka's documentation, for the docs table.
    pub fn valid_values(&self) -> String {
        match *self {
            Check::Bool => "true, false".to_owned(),
            Check::Int { min, max } | Check::IntOr { min, max, .. } if max == i32::MAX => {
                format!("[{min},...]")
            }
            Check::IntOr { min, max, or } => format!("[{min},...,{max}] or {or}"),
            Check::Int { min, max } => format!("[{min},...,{max}]"),
            Check::Long { min: i64::MIN } => "any".to_owned(),
            Check::Long { min } => format!("[{min},...]"),
            Check::Double { min, max } => format!("[{min},...,{max}]"),
            Check::OneOf(v) => format!("[{}]", v.join(", ")),
            Check::ListOf(v) => format!("list of [{}]", v.join(", ")),
            Check::ReplicaList => "[partition]:[broker],... or *".to_owned(),
        }
    }
}

/// A value Kafka accepts that needs a feature Railyard does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Any list that contains `item`.
    ListItem {
        item: &'static str,
        reason: &'static str,
    },
    /// This boolean value.
    Bool { value: bool, reason: &'static str },
}

impl Unavailable {
    /// Why the value is refused.
    pub fn reason(&self) -> &'static str {
        match *self {
            Unavailable::ListItem { reason, .. } | Unavailable::Bool { reason, .. } => reason,
        }
    }
}

/// What a config does in Railyard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Changes Railyard's behaviour; the text says how.
    Enforced(&'static str),
    /// Accepted and stored, and reported by DescribeConfigs, but changes nothing here; the text
    /// says why.
    NoEffect(&'static str),
}

/// A further broker config that supplies a default in a coarser unit (`log.retention.hours`),
/// consulted after [`ConfigDef::broker_name`] and before Kafka's default, in the order listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerAlt {
    pub name: &'static str,
    /// Milliseconds per unit of the broker value (3,600,000 for hours).
    pub ms_per_unit: i64,
}

/// One topic-level config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default in the string form DescribeConfigs reports (None = null).
    pub default: Option<&'static str>,
    /// The broker config that supplies the default, reported as a synonym; None if none.
    pub broker_name: Option<&'static str>,
    /// Lower-priority broker synonyms in other units.
    pub broker_alts: &'static [BrokerAlt],
    pub check: Check,
    /// Values refused because Railyard lacks the feature they turn on.
    pub unavailable: Option<Unavailable>,
    /// Kafka's documentation, shortened.
    pub doc: &'static str,
    pub effect: Effect,
    /// Set for configs Kafka 4.0 deprecated or removed that Railyard still accepts from older
    /// clients; the text says what replaces it.
    pub deprecated: Option<&'static str>,
}

const COMPACTION_ONLY: &str = "Only acts on compacted topics, and cleanup.policy=compact is \
     refused until log compaction exists.";
const TIERED_ONLY: &str = "Only acts when remote.storage.enable=true, which Railyard refuses: \
     without tiered storage the whole log is local and retention.ms and retention.bytes govern \
     it, as in Kafka with tiered storage off.";
const NO_COMPACTION: &str = "log compaction is not available yet";
const NO_TIERED_STORAGE: &str = "tiered storage is not available";
const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_HOUR: i64 = 3_600_000;

/// A config with the fields most entries share; the table below overrides the rest.
const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    check: Check,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default: Some(default),
        broker_name: None,
        broker_alts: &[],
        check,
        unavailable: None,
        doc: "",
        effect: Effect::NoEffect(""),
        deprecated: None,
    }
}

/// Every topic config, sorted by name as Kafka lists them.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        broker_name: Some("log.cleanup.policy"),
        unavailable: Some(Unavailable::ListItem {
            item: "compact",
            reason: NO_COMPACTION,
        }),
        doc: "The retention policy for old segments: `delete` discards them by time or size; \
              `compact` keeps the latest record per key.",
        effect: Effect::Enforced(
            "`delete` lets retention.ms and retention.bytes delete old segments; an empty list \
             keeps every segment.",
        ),
        ..def(
            "cleanup.policy",
            ConfigType::List,
            "delete",
            Check::ListOf(&["compact", "delete"]),
        )
    },
    ConfigDef {
        broker_name: Some("compression.gzip.level"),
        doc: "The compression level to use if compression.type is gzip.",
        effect: Effect::Enforced(
            "The level the leader recompresses with when compression.type=gzip (-1: the codec's \
             default).",
        ),
        ..def(
            "compression.gzip.level",
            ConfigType::Int,
            "-1",
            Check::IntOr {
                min: 1,
                max: 9,
                or: -1,
            },
        )
    },
    ConfigDef {
        broker_name: Some("compression.lz4.level"),
        doc: "The compression level to use if compression.type is lz4.",
        effect: Effect::Enforced(
            "The level the leader recompresses with when compression.type=lz4.",
        ),
        ..def(
            "compression.lz4.level",
            ConfigType::Int,
            "9",
            Check::Int { min: 1, max: 17 },
        )
    },
    ConfigDef {
        broker_name: Some("compression.type"),
        doc: "The final compression of the topic's batches: a codec, `uncompressed`, or \
              `producer` to keep what the producer sent.",
        effect: Effect::Enforced(
            "`producer` stores batches as sent; any other value makes the leader recompress \
             each produced batch to that codec before appending it, as Kafka does.",
        ),
        ..def(
            "compression.type",
            ConfigType::String,
            "producer",
            Check::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        )
    },
    ConfigDef {
        broker_name: Some("compression.zstd.level"),
        doc: "The compression level to use if compression.type is zstd.",
        effect: Effect::Enforced(
            "The level the leader recompresses with when compression.type=zstd.",
        ),
        ..def(
            "compression.zstd.level",
            ConfigType::Int,
            "3",
            Check::Int {
                min: -131_072,
                max: 22,
            },
        )
    },
    ConfigDef {
        broker_name: Some("log.cleaner.delete.retention.ms"),
        doc: "How long delete tombstones are kept in compacted topics.",
        effect: Effect::NoEffect(COMPACTION_ONLY),
        ..def(
            "delete.retention.ms",
            ConfigType::Long,
            "86400000",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.segment.delete.delay.ms"),
        doc: "How long to wait before deleting a file from the filesystem.",
        effect: Effect::NoEffect(
            "Railyard deletes a segment file right after the synced start record that excludes \
             it is written; there is no delayed deletion.",
        ),
        ..def(
            "file.delete.delay.ms",
            ConfigType::Long,
            "60000",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.flush.interval.messages"),
        doc: "Force an fsync of the log after this many messages.",
        effect: Effect::NoEffect(
            "Every raft entry is synced to disk before it counts towards the commit quorum, \
             which is stricter than any flush interval.",
        ),
        ..def(
            "flush.messages",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 1 },
        )
    },
    ConfigDef {
        broker_name: Some("log.flush.interval.ms"),
        broker_alts: &[BrokerAlt {
            name: "log.flush.scheduler.interval.ms",
            ms_per_unit: 1,
        }],
        doc: "Force an fsync of the log after this much time.",
        effect: Effect::NoEffect(
            "Every raft entry is synced to disk before it counts towards the commit quorum, \
             which is stricter than any flush interval.",
        ),
        ..def(
            "flush.ms",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        doc: "Replicas whose replication is throttled on the follower side: \
              `partition:broker` pairs, or `*` for all.",
        effect: Effect::NoEffect(
            "Railyard has no replication quotas: raft replication is never throttled. Accepted \
             because kafka-reassign-partitions sets it.",
        ),
        ..def(
            "follower.replication.throttled.replicas",
            ConfigType::List,
            "",
            Check::ReplicaList,
        )
    },
    ConfigDef {
        broker_name: Some("log.index.interval.bytes"),
        doc: "How often, in bytes, an entry is added to the index.",
        effect: Effect::Enforced(
            "The log adds a time-index entry every this many bytes (0 behaves as 1: every \
             entry). Offset lookups use a row per raft entry regardless.",
        ),
        ..def(
            "index.interval.bytes",
            ConfigType::Int,
            "4096",
            Check::Int {
                min: 0,
                max: i32::MAX,
            },
        )
    },
    ConfigDef {
        doc: "Replicas whose replication is throttled on the leader side: \
              `partition:broker` pairs, or `*` for all.",
        effect: Effect::NoEffect(
            "Railyard has no replication quotas: raft replication is never throttled. Accepted \
             because kafka-reassign-partitions sets it.",
        ),
        ..def(
            "leader.replication.throttled.replicas",
            ConfigType::List,
            "",
            Check::ReplicaList,
        )
    },
    ConfigDef {
        broker_name: Some("log.local.retention.bytes"),
        doc: "The local size a partition may reach before local segments are deleted \
              (tiered storage; -2 means retention.bytes).",
        effect: Effect::NoEffect(TIERED_ONLY),
        ..def(
            "local.retention.bytes",
            ConfigType::Long,
            "-2",
            Check::Long { min: -2 },
        )
    },
    ConfigDef {
        broker_name: Some("log.local.retention.ms"),
        doc: "How long local segments are kept before deletion (tiered storage; -2 means \
              retention.ms).",
        effect: Effect::NoEffect(TIERED_ONLY),
        ..def(
            "local.retention.ms",
            ConfigType::Long,
            "-2",
            Check::Long { min: -2 },
        )
    },
    ConfigDef {
        broker_name: Some("log.cleaner.max.compaction.lag.ms"),
        doc: "The longest a message stays ineligible for compaction.",
        effect: Effect::NoEffect(COMPACTION_ONLY),
        ..def(
            "max.compaction.lag.ms",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 1 },
        )
    },
    ConfigDef {
        broker_name: Some("message.max.bytes"),
        doc: "The largest record batch accepted, after compression.",
        effect: Effect::Enforced(
            "Produce answers MESSAGE_TOO_LARGE for a batch larger than this (measured as it \
             will be stored, after any recompression); nothing is appended.",
        ),
        ..def(
            "max.message.bytes",
            ConfigType::Int,
            "1048588",
            Check::Int {
                min: 0,
                max: i32::MAX,
            },
        )
    },
    ConfigDef {
        broker_name: Some("log.message.downconversion.enable"),
        doc: "Whether the broker down-converts batches for consumers that expect an older \
              message format.",
        effect: Effect::NoEffect(
            "Railyard stores and serves only RecordBatch v2 and never down-converts, like \
             Kafka 4, where this config is a deprecated no-op.",
        ),
        deprecated: Some("a no-op since Kafka 4.0, to be removed in Kafka 5.0"),
        ..def(
            "message.downconversion.enable",
            ConfigType::Boolean,
            "true",
            Check::Bool,
        )
    },
    ConfigDef {
        broker_name: Some("log.message.timestamp.after.max.ms"),
        doc: "How far a record timestamp may be ahead of the broker's clock \
              (message.timestamp.type=CreateTime).",
        effect: Effect::Enforced(
            "With CreateTime, the leader refuses a batch with a record timestamp more than this \
             after its clock with INVALID_TIMESTAMP; ignored with LogAppendTime. The default is \
             unbounded, as in Kafka 3.x, not Kafka 4.0's one hour: a broker whose wall clock \
             steps back an hour must not refuse every producer.",
        ),
        ..def(
            "message.timestamp.after.max.ms",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.message.timestamp.before.max.ms"),
        doc: "How far a record timestamp may be behind the broker's clock \
              (message.timestamp.type=CreateTime).",
        effect: Effect::Enforced(
            "With CreateTime, the leader refuses a batch with a record timestamp more than this \
             before its clock with INVALID_TIMESTAMP; ignored with LogAppendTime.",
        ),
        ..def(
            "message.timestamp.before.max.ms",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.message.timestamp.difference.max.ms"),
        doc: "The largest difference allowed between a record timestamp and the broker's clock.",
        effect: Effect::Enforced(
            "As in Kafka 3.6 to 3.9: supplies message.timestamp.before.max.ms and \
             message.timestamp.after.max.ms wherever those are not set on the topic or broker.",
        ),
        deprecated: Some(
            "removed in Kafka 4.0 (KIP-937); use message.timestamp.before.max.ms and \
             message.timestamp.after.max.ms",
        ),
        ..def(
            "message.timestamp.difference.max.ms",
            ConfigType::Long,
            "9223372036854775807",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.message.timestamp.type"),
        doc: "Whether record timestamps are the producer's create time or the broker's log \
              append time.",
        effect: Effect::Enforced(
            "LogAppendTime makes the leader stamp each batch with its clock (LogAppendTime \
             attribute, max timestamp) and recompute the batch CRC before appending; the Produce \
             response carries the stamp as log_append_time_ms.",
        ),
        ..def(
            "message.timestamp.type",
            ConfigType::String,
            "CreateTime",
            Check::OneOf(&["CreateTime", "LogAppendTime"]),
        )
    },
    ConfigDef {
        broker_name: Some("log.cleaner.min.cleanable.ratio"),
        doc: "The dirty share of the log above which the compactor cleans it.",
        effect: Effect::NoEffect(COMPACTION_ONLY),
        ..def(
            "min.cleanable.dirty.ratio",
            ConfigType::Double,
            "0.5",
            Check::Double { min: 0.0, max: 1.0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.cleaner.min.compaction.lag.ms"),
        doc: "The shortest time a message stays uncompacted.",
        effect: Effect::NoEffect(COMPACTION_ONLY),
        ..def(
            "min.compaction.lag.ms",
            ConfigType::Long,
            "0",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("min.insync.replicas"),
        doc: "With acks=all, the least number of replicas that must acknowledge a write.",
        effect: Effect::Enforced(
            "acks=all waits until this many replicas have the entry durably, and is answered \
             NOT_ENOUGH_REPLICAS when fewer replicas are in sync.",
        ),
        ..def(
            "min.insync.replicas",
            ConfigType::Int,
            "1",
            Check::Int {
                min: 1,
                max: i32::MAX,
            },
        )
    },
    ConfigDef {
        broker_name: Some("log.preallocate"),
        doc: "Whether to preallocate the file on disk when creating a segment.",
        effect: Effect::NoEffect(
            "Segment files grow as entries are written; the Disk trait has no preallocation.",
        ),
        ..def("preallocate", ConfigType::Boolean, "false", Check::Bool)
    },
    ConfigDef {
        doc: "With tiered storage, stop copying segments to remote storage (remote data \
              becomes read-only).",
        effect: Effect::NoEffect(TIERED_ONLY),
        ..def(
            "remote.log.copy.disable",
            ConfigType::Boolean,
            "false",
            Check::Bool,
        )
    },
    ConfigDef {
        doc: "Delete the remote data when tiered storage is turned off for the topic.",
        effect: Effect::NoEffect(TIERED_ONLY),
        ..def(
            "remote.log.delete.on.disable",
            ConfigType::Boolean,
            "false",
            Check::Bool,
        )
    },
    ConfigDef {
        unavailable: Some(Unavailable::Bool {
            value: true,
            reason: NO_TIERED_STORAGE,
        }),
        doc: "Whether the topic uses tiered storage.",
        effect: Effect::NoEffect(
            "Railyard has no tiered storage; `false`, the default, is what it does.",
        ),
        ..def(
            "remote.storage.enable",
            ConfigType::Boolean,
            "false",
            Check::Bool,
        )
    },
    ConfigDef {
        broker_name: Some("log.retention.bytes"),
        doc: "The size a partition may reach before old segments are deleted (delete policy); \
              negative means no limit.",
        effect: Effect::Enforced(
            "Whole committed segments are deleted, oldest first, while the partition stays at \
             least this big without them; negative: no size limit.",
        ),
        ..def(
            "retention.bytes",
            ConfigType::Long,
            "-1",
            Check::Long { min: i64::MIN },
        )
    },
    ConfigDef {
        broker_name: Some("log.retention.ms"),
        broker_alts: &[
            BrokerAlt {
                name: "log.retention.minutes",
                ms_per_unit: MS_PER_MINUTE,
            },
            BrokerAlt {
                name: "log.retention.hours",
                ms_per_unit: MS_PER_HOUR,
            },
        ],
        doc: "How long old segments are kept (delete policy); -1 means no time limit.",
        effect: Effect::Enforced(
            "Whole committed segments whose newest timestamp is older than this are deleted; \
             -1: no time limit.",
        ),
        ..def(
            "retention.ms",
            ConfigType::Long,
            "604800000",
            Check::Long { min: -1 },
        )
    },
    ConfigDef {
        broker_name: Some("log.segment.bytes"),
        doc: "The size of a segment file.",
        effect: Effect::Enforced(
            "The log rolls to a new segment before a segment would exceed this size.",
        ),
        // Kafka 4.0 raised the minimum to 1 MiB (KIP-1030). Railyard keeps its lower bound of
        // 1 KiB: its own tests and the simulator use small segments to exercise rolls and
        // retention, and librdkafka's tests create topics with segment.bytes=20000.
        ..def(
            "segment.bytes",
            ConfigType::Int,
            "1073741824",
            Check::Int {
                min: 1024,
                max: i32::MAX,
            },
        )
    },
    ConfigDef {
        broker_name: Some("log.index.size.max.bytes"),
        doc: "The size of the preallocated index file that maps offsets to file positions.",
        effect: Effect::NoEffect(
            "Railyard's offset index is one in-memory row per raft entry, rebuilt when the \
             log opens; there is no index file to size.",
        ),
        ..def(
            "segment.index.bytes",
            ConfigType::Int,
            "10485760",
            Check::Int {
                min: 4,
                max: i32::MAX,
            },
        )
    },
    ConfigDef {
        broker_name: Some("log.roll.jitter.ms"),
        broker_alts: &[BrokerAlt {
            name: "log.roll.jitter.hours",
            ms_per_unit: MS_PER_HOUR,
        }],
        doc: "The largest random jitter subtracted from the segment roll time.",
        effect: Effect::NoEffect(
            "Segments roll at exactly segment.ms; no jitter is applied (rolls are per \
             partition, driven by entry timestamps, not a shared timer).",
        ),
        ..def(
            "segment.jitter.ms",
            ConfigType::Long,
            "0",
            Check::Long { min: 0 },
        )
    },
    ConfigDef {
        broker_name: Some("log.roll.ms"),
        broker_alts: &[BrokerAlt {
            name: "log.roll.hours",
            ms_per_unit: MS_PER_HOUR,
        }],
        doc: "The time after which the log rolls even if the segment is not full.",
        effect: Effect::Enforced(
            "The log rolls when an entry's timestamp is more than this after the first \
             timestamp of the active segment.",
        ),
        ..def(
            "segment.ms",
            ConfigType::Long,
            "604800000",
            Check::Long { min: 1 },
        )
    },
    ConfigDef {
        broker_name: Some("unclean.leader.election.enable"),
        doc: "Whether a replica outside the ISR may become leader as a last resort, at the \
              cost of data loss.",
        effect: Effect::NoEffect(
            "Raft never elects a leader that lacks committed entries, so there is no unclean \
             election to enable; ElectLeaders with type UNCLEAN is refused.",
        ),
        ..def(
            "unclean.leader.election.enable",
            ConfigType::Boolean,
            "false",
            Check::Bool,
        )
    },
];

/// The config with this name.
pub fn find(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS
        .binary_search_by(|d| d.name.cmp(name))
        .ok()
        .map(|i| &TOPIC_CONFIGS[i])
}

/// Why a config or a set of configs was refused (INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// No config has this name.
    #[error("unknown config name {name:?}")]
    Unknown { name: String },
    /// The value does not parse as the config's type or is outside its range.
    #[error("invalid value {value:?} for config {name}: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
    /// Kafka accepts the value, but it needs a feature Railyard does not have yet.
    #[error("{name}={value:?} is not supported by Railyard: {reason}")]
    NotAvailable {
        name: String,
        value: String,
        reason: String,
    },
}

/// Checks one topic config: its name, its type and range as Kafka's `LogConfig` validates them,
/// and that Railyard implements what the value asks for.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = find(name).ok_or_else(|| ConfigError::Unknown {
        name: name.to_owned(),
    })?;
    def.check
        .check(value)
        .map_err(|reason| ConfigError::InvalidValue {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        })?;
    match def.unavailable {
        Some(u) if u.matches(value) => Err(ConfigError::NotAvailable {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: u.reason().to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Checks a topic's overrides: each one (in name order, so the error is deterministic), then
/// the rule across configs that Kafka checks, min.compaction.lag.ms <= max.compaction.lag.ms
/// (against Kafka's default where one is not overridden).
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, value) in configs {
        validate(name, value)?;
    }
    check_compaction_lags(configs)
}

/// One IncrementalAlterConfigs operation (Kafka's `AlterConfigOp.OpType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// SET (0): override with this value.
    Set(String),
    /// DELETE (1): remove the override; the config is back to its broker or Kafka default.
    Delete,
    /// APPEND (2): add these comma-separated items to a list config.
    Append(String),
    /// SUBTRACT (3): remove these comma-separated items from a list config.
    Subtract(String),
}

impl AlterOp {
    /// The operation for a request's `config_operation` code and value; None for an unknown
    /// code, or a SET, APPEND or SUBTRACT without a value (both INVALID_REQUEST in Kafka).
    pub fn from_code(code: i8, value: Option<&str>) -> Option<AlterOp> {
        match (code, value) {
            (0, Some(v)) => Some(AlterOp::Set(v.to_owned())),
            (1, _) => Some(AlterOp::Delete),
            (2, Some(v)) => Some(AlterOp::Append(v.to_owned())),
            (3, Some(v)) => Some(AlterOp::Subtract(v.to_owned())),
            _ => None,
        }
    }
}

/// Why an IncrementalAlterConfigs request for a topic was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AlterError {
    /// The resulting configs are invalid (INVALID_CONFIG).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// APPEND or SUBTRACT on a config that is not a list (INVALID_CONFIG).
    #[error("cannot APPEND or SUBTRACT on {name}: it is not a list config")]
    NotAList { name: String },
    /// The same config appears twice in one request (INVALID_REQUEST in Kafka).
    #[error("config {name} appears more than once in the request")]
    Duplicate { name: String },
}

/// Applies IncrementalAlterConfigs operations to a copy of a topic's overrides and returns the
/// new overrides, all or nothing: the result is validated as a whole. APPEND and SUBTRACT work
/// on the items of the current effective value (override, else broker default, else Kafka's
/// default), as Kafka does; APPEND skips items already present.
pub fn apply_incremental(
    current: &BTreeMap<String, String>,
    ops: &[(String, AlterOp)],
    broker: &BrokerDefaults,
) -> Result<BTreeMap<String, String>, AlterError> {
    reject_duplicates(ops)?;
    let mut next = current.clone();
    for (name, op) in ops {
        apply_one(&mut next, name, op, broker)?;
    }
    validate_all(&next)?;
    Ok(next)
}

/// The node's broker-level defaults for topic configs, keyed by Kafka's broker config names
/// (`log.retention.ms`, `message.max.bytes`, ...). Empty means Kafka's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerDefaults(pub BTreeMap<String, String>);

impl BrokerDefaults {
    /// These defaults with `upper`'s entries on top (a dynamic layer over a static one). A
    /// config `upper` sets in any unit hides every synonym of it below, so that
    /// `log.retention.hours` set dynamically beats a static `log.retention.ms`, as in Kafka,
    /// where each level is searched whole before the next.
    pub fn overlay(&self, upper: &BTreeMap<String, String>) -> BrokerDefaults {
        let mut merged = self.0.clone();
        for name in upper.keys() {
            for synonym in broker_synonyms(name) {
                merged.remove(synonym);
            }
        }
        merged.extend(upper.iter().map(|(k, v)| (k.clone(), v.clone())));
        BrokerDefaults(merged)
    }

    /// Checks every entry: its name must be the broker synonym of a topic config, and its
    /// value valid for that config (after unit conversion). For node config loading, so that
    /// [`TopicSettings::resolve`] never has to fall back past a bad broker value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.0
            .iter()
            .try_for_each(|(name, value)| check_broker_entry(name, value))
    }
}

/// The broker config names that mean the same topic-config default as `name` (its primary
/// name and the alternatives in other units), `name` included; empty if it is none.
fn broker_synonyms(name: &str) -> Vec<&'static str> {
    let def = TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_name == Some(name) || d.broker_alts.iter().any(|a| a.name == name));
    def.map_or_else(Vec::new, |d| {
        d.broker_name
            .into_iter()
            .chain(d.broker_alts.iter().map(|a| a.name))
            .collect()
    })
}

/// Applies IncrementalAlterConfigs operations to a broker resource's dynamic configs (Kafka's
/// broker config names: `log.retention.ms`, `message.max.bytes`, ...), all or nothing. APPEND
/// and SUBTRACT work only on list configs, on the items of the resource's current value (else
/// Kafka's default).
pub fn apply_broker_incremental(
    current: &BTreeMap<String, String>,
    ops: &[(String, AlterOp)],
) -> Result<BTreeMap<String, String>, AlterError> {
    reject_duplicates(ops)?;
    let mut next = current.clone();
    for (name, op) in ops {
        let def = TOPIC_CONFIGS.iter().find(|d| d.broker_name == Some(name));
        let items = match op {
            AlterOp::Set(v) => {
                next.insert(name.clone(), v.clone());
                continue;
            }
            AlterOp::Delete => {
                next.remove(name);
                continue;
            }
            AlterOp::Append(v) | AlterOp::Subtract(v) => v,
        };
        let Some(def) = def.filter(|d| d.kind == ConfigType::List) else {
            return Err(AlterError::NotAList { name: name.clone() });
        };
        let value = next.get(name).cloned().or(def.default.map(str::to_owned));
        let edited = edit_list(value.as_deref(), op, items);
        next.insert(name.clone(), edited);
    }
    let next = BrokerDefaults(next);
    next.validate()?;
    Ok(next.0)
}

/// A broker's defaults for topic configs in Kafka's levels, most specific first: its own
/// dynamic configs, the cluster-wide dynamic defaults, its static config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLayers {
    pub dynamic: BTreeMap<String, String>,
    pub dynamic_default: BTreeMap<String, String>,
    pub static_: BrokerDefaults,
}

impl BrokerLayers {
    /// The defaults the broker applies: the layers merged.
    pub fn merged(&self) -> BrokerDefaults {
        self.static_
            .overlay(&self.dynamic_default)
            .overlay(&self.dynamic)
    }

    /// The broker-level values of `def`, most specific layer first, each in the topic
    /// config's unit (DescribeConfigs' synonyms; Kafka's default is not among them).
    pub fn values(&self, def: &ConfigDef) -> Vec<(Source, String)> {
        let layers = [
            (&self.dynamic, Source::DynamicBroker),
            (&self.dynamic_default, Source::DynamicDefaultBroker),
            (&self.static_.0, Source::Broker),
        ];
        layers
            .into_iter()
            .filter_map(|(layer, source)| {
                let v = broker_value(def, &BrokerDefaults(layer.clone()))?;
                Some((source, v))
            })
            .collect()
    }

    /// A topic's value of `def` and where it comes from: its override, else the first broker
    /// layer that sets it, else Kafka's default.
    pub fn effective(
        &self,
        def: &ConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> (Option<String>, Source) {
        if let Some(v) = overrides.get(def.name) {
            return (Some(v.clone()), Source::Topic);
        }
        let layers = [
            (BrokerDefaults(self.dynamic.clone()), Source::DynamicBroker),
            (
                BrokerDefaults(self.dynamic_default.clone()),
                Source::DynamicDefaultBroker,
            ),
            (self.static_.clone(), Source::Broker),
        ];
        for (layer, source) in layers {
            if let Some(v) = broker_value(def, &layer) {
                return (Some(v), source);
            }
        }
        (def.default.map(str::to_owned), Source::Default)
    }
}

/// Where a topic's value of a config comes from (DescribeConfigs' `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The topic's override (DYNAMIC_TOPIC_CONFIG).
    Topic,
    /// This broker's dynamic config (DYNAMIC_BROKER_CONFIG).
    DynamicBroker,
    /// The cluster-wide dynamic default (DYNAMIC_DEFAULT_BROKER_CONFIG).
    DynamicDefaultBroker,
    /// The node's static broker config (STATIC_BROKER_CONFIG).
    Broker,
    /// Kafka's default (DEFAULT_CONFIG).
    Default,
}

impl Source {
    /// The `config_source` code of DescribeConfigs v1+.
    pub fn code(self) -> i8 {
        match self {
            Source::Topic => 1,
            Source::DynamicBroker => 2,
            Source::DynamicDefaultBroker => 3,
            Source::Broker => 4,
            Source::Default => 5,
        }
    }
}

/// The value a topic has for `def` and where it comes from: its override, else the broker's
/// synonym (the primary name, then the others in order, converted to milliseconds), else
/// Kafka's default.
pub fn effective(
    def: &ConfigDef,
    overrides: &BTreeMap<String, String>,
    broker: &BrokerDefaults,
) -> (Option<String>, Source) {
    if let Some(v) = overrides.get(def.name) {
        return (Some(v.clone()), Source::Topic);
    }
    match broker_value(def, broker) {
        Some(v) => (Some(v), Source::Broker),
        None => (def.default.map(str::to_owned), Source::Default),
    }
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// `compression.type` with its level, as the leader applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompressionSetting {
    /// Keep the producer's codec.
    Producer,
    Uncompressed,
    Gzip {
        level: i32,
    },
    Snappy,
    Lz4 {
        level: i32,
    },
    Zstd {
        level: i32,
    },
}

impl CompressionSetting {
    /// The codec the leader recompresses to; None for `producer` (store as sent).
    pub fn target(self) -> Option<Compression> {
        match self {
            CompressionSetting::Producer => None,
            CompressionSetting::Uncompressed => Some(Compression::None),
            CompressionSetting::Gzip { .. } => Some(Compression::Gzip),
            CompressionSetting::Snappy => Some(Compression::Snappy),
            CompressionSetting::Lz4 { .. } => Some(Compression::Lz4),
            CompressionSetting::Zstd { .. } => Some(Compression::Zstd),
        }
    }

    /// The level the leader compresses at (`compression.<codec>.level`); None for codecs
    /// without levels. Gzip's -1 means zlib's default (6), as in Kafka.
    pub fn level(self) -> Option<i32> {
        match self {
            CompressionSetting::Gzip { level }
            | CompressionSetting::Lz4 { level }
            | CompressionSetting::Zstd { level } => Some(level),
            _ => None,
        }
    }
}

/// The typed settings the data path needs, resolved from broker defaults and topic overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub compression: CompressionSetting,
    pub min_insync_replicas: u32,
    /// None: no time limit (-1, or a cleanup.policy without `delete`).
    pub retention_ms: Option<i64>,
    /// None: no size limit (negative, or a cleanup.policy without `delete`).
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// At least 1: Kafka's 0 ("index every entry") is 1 here, since the log requires > 0.
    pub index_interval_bytes: u64,
}

impl TopicSettings {
    /// The settings of a topic with these overrides on a node with these broker defaults. Total:
    /// a stored or broker value that does not validate (which validation at the door prevents)
    /// falls back to Kafka's default rather than failing.
    pub fn resolve(broker: &BrokerDefaults, overrides: &BTreeMap<String, String>) -> TopicSettings {
        let r = Resolver { broker, overrides };
        let delete = r.list("cleanup.policy").contains(&"delete".to_owned());
        let retention_ms = r.long("retention.ms");
        let retention_bytes = r.long("retention.bytes");
        let settings = TopicSettings {
            max_message_bytes: to_u32(r.long("max.message.bytes")),
            timestamp_type: r.timestamp_type(),
            timestamp_before_max_ms: r.timestamp_bound("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: r.timestamp_bound("message.timestamp.after.max.ms"),
            compression: r.compression(),
            min_insync_replicas: to_u32(r.long("min.insync.replicas")),
            retention_ms: (delete && retention_ms >= 0).then_some(retention_ms),
            retention_bytes: u64::try_from(retention_bytes).ok().filter(|_| delete),
            segment_bytes: u64::try_from(r.long("segment.bytes")).expect("checked >= 1024"),
            segment_ms: r.long("segment.ms"),
            index_interval_bytes: u64::try_from(r.long("index.interval.bytes"))
                .expect("checked >= 0")
                .max(1),
        };
        settings.check_invariants();
        settings
    }

    fn check_invariants(&self) {
        assert!(self.min_insync_replicas >= 1, "{self:?}");
        assert!(
            self.segment_bytes >= 1024 && self.segment_ms >= 1,
            "{self:?}"
        );
        assert!(self.index_interval_bytes >= 1, "{self:?}");
        assert!(self.timestamp_before_max_ms >= 0 && self.timestamp_after_max_ms >= 0);
        assert!(self.retention_ms.is_none_or(|ms| ms >= 0), "{self:?}");
    }
}

// ---- Private helpers ----

impl Check {
    /// Whether `value` parses and is in range; the reason if not.
    fn check(&self, value: &str) -> Result<(), String> {
        let v = java_trim(value);
        match *self {
            Check::Bool => parse_bool(v).map(drop),
            Check::Int { min, max } => check_int(v, min, max, None),
            Check::IntOr { min, max, or } => check_int(v, min, max, Some(or)),
            Check::Long { min } => check_long(v, min),
            Check::Double { min, max } => check_double(v, min, max),
            Check::OneOf(allowed) => check_one_of(v, allowed),
            Check::ListOf(allowed) => split_list(v)
                .into_iter()
                .try_for_each(|item| check_one_of(item, allowed)),
            Check::ReplicaList => check_replica_list(v),
        }
    }
}

impl Unavailable {
    fn matches(&self, value: &str) -> bool {
        let v = java_trim(value);
        match *self {
            Unavailable::ListItem { item, .. } => split_list(v).contains(&item),
            Unavailable::Bool { value, .. } => parse_bool(v) == Ok(value),
        }
    }
}

/// Java's `String.trim`, which Kafka's `ConfigDef` applies before parsing: it strips every
/// character up to U+0020, and nothing else.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

fn parse_bool(v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("expected true or false".to_owned())
    }
}

fn check_int(v: &str, min: i32, max: i32, or: Option<i32>) -> Result<(), String> {
    let n: i32 = v
        .parse()
        .map_err(|_| "expected a 32-bit integer".to_owned())?;
    if (min..=max).contains(&n) || or == Some(n) {
        return Ok(());
    }
    Err(match or {
        Some(or) => format!("must be between {min} and {max}, or {or}"),
        None if max == i32::MAX => format!("must be at least {min}"),
        None => format!("must be between {min} and {max}"),
    })
}

fn check_long(v: &str, min: i64) -> Result<(), String> {
    let n: i64 = v
        .parse()
        .map_err(|_| "expected a 64-bit integer".to_owned())?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(())
}

/// Rust's float syntax is close to Java's `Double.parseDouble`; Java also takes a `d`/`f`
/// suffix and hex floats, which Railyard refuses. NaN is refused (Kafka's range check lets it
/// through, since every comparison with NaN is false).
fn check_double(v: &str, min: f64, max: f64) -> Result<(), String> {
    let x: f64 = v.parse().map_err(|_| "expected a number".to_owned())?;
    if !(min..=max).contains(&x) {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(())
}

fn check_one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(format!("must be one of: {}", allowed.join(", ")))
}

/// Kafka's `ThrottledReplicaListValidator`: every item `partition:broker` (or empty), or the
/// items together spell exactly `*`.
fn check_replica_list(v: &str) -> Result<(), String> {
    let items = split_list(v);
    if items.concat() == "*" || items.iter().all(|i| i.is_empty() || is_replica(i)) {
        return Ok(());
    }
    Err("must be * or a list of [partition]:[broker] pairs".to_owned())
}

fn is_replica(item: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    item.split_once(':')
        .is_some_and(|(p, b)| digits(p) && digits(b))
}

/// Kafka's LIST parse of a trimmed value: empty is the empty list; otherwise items split at
/// commas with surrounding whitespace removed and, as Java's `String.split` does, trailing
/// empty items dropped (so `delete,` is `[delete]` but `,delete` has an empty first item).
fn split_list(v: &str) -> Vec<&str> {
    if v.is_empty() {
        return Vec::new();
    }
    let mut items: Vec<&str> = v.split(',').map(java_trim).collect();
    while items.last() == Some(&"") {
        items.pop();
    }
    items
}

fn check_compaction_lags(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let lag = |name: &str| {
        let raw = configs.get(name).map(String::as_str);
        raw.or_else(|| find(name).and_then(|d| d.default))
            .and_then(|v| java_trim(v).parse::<i64>().ok())
    };
    let (Some(min), Some(max)) = (lag("min.compaction.lag.ms"), lag("max.compaction.lag.ms"))
    else {
        return Ok(());
    };
    if min <= max {
        return Ok(());
    }
    Err(ConfigError::InvalidValue {
        name: "min.compaction.lag.ms".to_owned(),
        value: min.to_string(),
        reason: format!("must not exceed max.compaction.lag.ms ({max})"),
    })
}

fn reject_duplicates(ops: &[(String, AlterOp)]) -> Result<(), AlterError> {
    let mut seen = std::collections::BTreeSet::new();
    match ops.iter().find(|(name, _)| !seen.insert(name.as_str())) {
        Some((name, _)) => Err(AlterError::Duplicate { name: name.clone() }),
        None => Ok(()),
    }
}

fn apply_one(
    next: &mut BTreeMap<String, String>,
    name: &str,
    op: &AlterOp,
    broker: &BrokerDefaults,
) -> Result<(), AlterError> {
    let def = find(name).ok_or_else(|| ConfigError::Unknown {
        name: name.to_owned(),
    })?;
    let items = match op {
        AlterOp::Set(v) => {
            next.insert(name.to_owned(), v.clone());
            return Ok(());
        }
        AlterOp::Delete => {
            next.remove(name);
            return Ok(());
        }
        AlterOp::Append(v) | AlterOp::Subtract(v) => v,
    };
    if def.kind != ConfigType::List {
        return Err(AlterError::NotAList {
            name: name.to_owned(),
        });
    }
    let (current, _) = effective(def, next, broker);
    let edited = edit_list(current.as_deref(), op, items);
    next.insert(name.to_owned(), edited);
    Ok(())
}

/// A list config's value after APPEND (items not present yet, in order) or SUBTRACT (every
/// occurrence) of the comma-separated `items`, as Kafka edits lists.
fn edit_list(current: Option<&str>, op: &AlterOp, items: &str) -> String {
    let mut list: Vec<String> = split_list(java_trim(current.unwrap_or("")))
        .into_iter()
        .filter(|i| !i.is_empty())
        .map(str::to_owned)
        .collect();
    let op_items = items.split(',').filter(|i| !i.is_empty());
    match op {
        AlterOp::Append(_) => op_items.for_each(|i| {
            if !list.iter().any(|x| x == i) {
                list.push(i.to_owned());
            }
        }),
        _ => op_items.for_each(|i| list.retain(|x| x != i)),
    }
    list.join(",")
}

/// The broker's value for `def`, converted to the topic config's unit; None if the broker sets
/// none that parses.
fn broker_value(def: &ConfigDef, broker: &BrokerDefaults) -> Option<String> {
    if let Some(v) = def.broker_name.and_then(|n| broker.0.get(n)) {
        return Some(v.clone());
    }
    def.broker_alts.iter().find_map(|alt| {
        let raw = broker.0.get(alt.name)?;
        convert_alt(alt, raw).map(|ms| ms.to_string())
    })
}

/// A broker value in coarser units, in milliseconds. As Kafka does for `log.retention.*`, a
/// negative value means -1; overflow is treated as unparsable.
fn convert_alt(alt: &BrokerAlt, raw: &str) -> Option<i64> {
    let n: i64 = java_trim(raw).parse().ok()?;
    if n < 0 {
        return Some(-1);
    }
    n.checked_mul(alt.ms_per_unit)
}

fn check_broker_entry(name: &str, value: &str) -> Result<(), ConfigError> {
    if let Some(def) = TOPIC_CONFIGS.iter().find(|d| d.broker_name == Some(name)) {
        return validate(def.name, value).map_err(|e| rename(e, name));
    }
    let alt = TOPIC_CONFIGS.iter().find_map(|d| {
        d.broker_alts
            .iter()
            .find(|a| a.name == name)
            .map(|a| (d, a))
    });
    let Some((def, alt)) = alt else {
        return Err(ConfigError::Unknown {
            name: name.to_owned(),
        });
    };
    let invalid = |reason: String| ConfigError::InvalidValue {
        name: name.to_owned(),
        value: value.to_owned(),
        reason,
    };
    let ms = convert_alt(alt, value).ok_or_else(|| invalid("expected an integer".to_owned()))?;
    def.check
        .check(&ms.to_string())
        .map_err(|r| invalid(format!("{ms} ms: {r}")))
}

/// Reports a topic config's error under the broker config's name.
fn rename(e: ConfigError, name: &str) -> ConfigError {
    match e {
        ConfigError::Unknown { .. } => ConfigError::Unknown {
            name: name.to_owned(),
        },
        ConfigError::InvalidValue { value, reason, .. } => ConfigError::InvalidValue {
            name: name.to_owned(),
            value,
            reason,
        },
        ConfigError::NotAvailable { value, reason, .. } => ConfigError::NotAvailable {
            name: name.to_owned(),
            value,
            reason,
        },
    }
}

/// Reads effective values for [`TopicSettings::resolve`], falling back to Kafka's default for
/// any value that does not validate.
struct Resolver<'a> {
    broker: &'a BrokerDefaults,
    overrides: &'a BTreeMap<String, String>,
}

impl Resolver<'_> {
    /// The effective value of a config and whether it was set (topic or broker), trimmed.
    fn value(&self, name: &str) -> (String, bool) {
        // The names passed here are literals of this module, each covered by a resolve test.
        let def = find(name).expect("resolve reads only registered configs");
        let (value, source) = effective(def, self.overrides, self.broker);
        match value {
            Some(v) if def.check.check(&v).is_ok() => {
                (java_trim(&v).to_owned(), source != Source::Default)
            }
            _ => (def.default.unwrap_or("").to_owned(), false),
        }
    }

    fn long(&self, name: &str) -> i64 {
        // Only Int and Long configs are read here; `value` returned a value that passed their
        // check (or a default, which a test validates), so it parses.
        self.value(name).0.parse().expect("validated integer")
    }

    fn list(&self, name: &str) -> Vec<String> {
        let (v, _) = self.value(name);
        split_list(&v).into_iter().map(str::to_owned).collect()
    }

    /// A timestamp bound; where neither the topic nor the broker sets it, the deprecated
    /// message.timestamp.difference.max.ms supplies it if set (Kafka 3.6's rule).
    fn timestamp_bound(&self, name: &str) -> i64 {
        let (bound, set) = self.value(name);
        let (difference, difference_set) = self.value("message.timestamp.difference.max.ms");
        let chosen = if !set && difference_set {
            difference
        } else {
            bound
        };
        chosen.parse().expect("validated integer")
    }

    fn timestamp_type(&self) -> TimestampType {
        match self.value("message.timestamp.type").0.as_str() {
            "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        }
    }

    fn compression(&self) -> CompressionSetting {
        let level = |name| i32::try_from(self.long(name)).unwrap_or(-1);
        match self.value("compression.type").0.as_str() {
            "uncompressed" => CompressionSetting::Uncompressed,
            "gzip" => CompressionSetting::Gzip {
                level: level("compression.gzip.level"),
            },
            "snappy" => CompressionSetting::Snappy,
            "lz4" => CompressionSetting::Lz4 {
                level: level("compression.lz4.level"),
            },
            "zstd" => CompressionSetting::Zstd {
                level: level("compression.zstd.level"),
            },
            _ => CompressionSetting::Producer,
        }
    }
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "topic_config_tests.rs"]
mod tests;
