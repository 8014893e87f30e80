use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const COMPAT_DOC: &str = include_str!("../../docs/kafka-compatibility.md");

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn broker(pairs: &[(&str, &str)]) -> BrokerDefaults {
    BrokerDefaults(map(pairs))
}

fn ops(list: &[(&str, AlterOp)]) -> Vec<(String, AlterOp)> {
    list.iter()
        .map(|(k, op)| (k.to_string(), op.clone()))
        .collect()
}

fn is_invalid(r: Result<(), ConfigError>) -> bool {
    matches!(r, Err(ConfigError::InvalidValue { .. }))
}

fn is_unavailable(r: Result<(), ConfigError>) -> bool {
    matches!(r, Err(ConfigError::NotAvailable { .. }))
}

#[test]
fn test_every_default_validates() {
    // Proves Kafka's defaults pass our own checks, so a topic without overrides is valid and
    // resolve's fallback to a default always parses.
    for def in TOPIC_CONFIGS {
        let default = def
            .default
            .expect("every topic config has a non-null default");
        assert_eq!(validate(def.name, default), Ok(()), "{}", def.name);
    }
}

#[test]
fn test_names_sorted_unique_and_documented() {
    // Proves the table is strictly sorted (find's binary search depends on it) and that no
    // entry was left with the placeholder doc or effect text of `def`.
    for pair in TOPIC_CONFIGS.windows(2) {
        assert!(
            pair[0].name < pair[1].name,
            "{} !< {}",
            pair[0].name,
            pair[1].name
        );
    }
    for def in TOPIC_CONFIGS {
        let text = match def.effect {
            Effect::Enforced(t) | Effect::NoEffect(t) => t,
        };
        assert!(!def.doc.is_empty() && !text.is_empty(), "{}", def.name);
        assert_eq!(find(def.name).map(|d| d.name), Some(def.name));
    }
    assert_eq!(find("no.such.config"), None);
}

#[test]
fn test_the_kafka_4_list_is_complete() {
    // Proves every topic config Kafka 4.0 documents is registered, with Kafka's type.
    let expected = [
        ("cleanup.policy", ConfigType::List),
        ("compression.gzip.level", ConfigType::Int),
        ("compression.lz4.level", ConfigType::Int),
        ("compression.type", ConfigType::String),
        ("compression.zstd.level", ConfigType::Int),
        ("delete.retention.ms", ConfigType::Long),
        ("file.delete.delay.ms", ConfigType::Long),
        ("flush.messages", ConfigType::Long),
        ("flush.ms", ConfigType::Long),
        ("follower.replication.throttled.replicas", ConfigType::List),
        ("index.interval.bytes", ConfigType::Int),
        ("leader.replication.throttled.replicas", ConfigType::List),
        ("local.retention.bytes", ConfigType::Long),
        ("local.retention.ms", ConfigType::Long),
        ("max.compaction.lag.ms", ConfigType::Long),
        ("max.message.bytes", ConfigType::Int),
        ("message.timestamp.after.max.ms", ConfigType::Long),
        ("message.timestamp.before.max.ms", ConfigType::Long),
        ("message.timestamp.type", ConfigType::String),
        ("min.cleanable.dirty.ratio", ConfigType::Double),
        ("min.compaction.lag.ms", ConfigType::Long),
        ("min.insync.replicas", ConfigType::Int),
        ("preallocate", ConfigType::Boolean),
        ("remote.log.copy.disable", ConfigType::Boolean),
        ("remote.log.delete.on.disable", ConfigType::Boolean),
        ("remote.storage.enable", ConfigType::Boolean),
        ("retention.bytes", ConfigType::Long),
        ("retention.ms", ConfigType::Long),
        ("segment.bytes", ConfigType::Int),
        ("segment.index.bytes", ConfigType::Int),
        ("segment.jitter.ms", ConfigType::Long),
        ("segment.ms", ConfigType::Long),
        ("unclean.leader.election.enable", ConfigType::Boolean),
    ];
    for (name, kind) in expected {
        assert_eq!(find(name).map(|d| d.kind), Some(kind), "{name}");
    }
    let deprecated: Vec<_> = TOPIC_CONFIGS
        .iter()
        .filter(|d| d.deprecated.is_some())
        .map(|d| d.name)
        .collect();
    assert_eq!(
        deprecated,
        [
            "message.downconversion.enable",
            "message.timestamp.difference.max.ms"
        ]
    );
    assert_eq!(TOPIC_CONFIGS.len(), expected.len() + deprecated.len());
}

#[test]
fn test_check_matches_type() {
    // Proves each config's validator parses the type it is reported as.
    for def in TOPIC_CONFIGS {
        let kind = match def.check {
            Check::Bool => ConfigType::Boolean,
            Check::Int { .. } | Check::IntOr { .. } => ConfigType::Int,
            Check::Long { .. } => ConfigType::Long,
            Check::Double { .. } => ConfigType::Double,
            Check::OneOf(_) => ConfigType::String,
            Check::ListOf(_) | Check::ReplicaList => ConfigType::List,
        };
        assert_eq!(def.kind, kind, "{}", def.name);
    }
}

#[test]
fn test_config_type_codes() {
    // Proves the DescribeConfigs v3 numbering of types and the config_source codes.
    let codes = [
        (ConfigType::Boolean, 1),
        (ConfigType::String, 2),
        (ConfigType::Int, 3),
        (ConfigType::Short, 4),
        (ConfigType::Long, 5),
        (ConfigType::Double, 6),
        (ConfigType::List, 7),
        (ConfigType::Class, 8),
        (ConfigType::Password, 9),
    ];
    for (kind, code) in codes {
        assert_eq!(kind.code(), code, "{kind:?}");
    }
    assert_eq!(
        [
            Source::Topic.code(),
            Source::Broker.code(),
            Source::Default.code()
        ],
        [1, 4, 5]
    );
}

#[test]
fn test_broker_synonyms_match_kafka() {
    // Proves the broker names of the configs whose synonym Kafka renames, and that no two
    // topic configs claim the same broker name (BrokerDefaults::validate relies on it).
    let renamed = [
        ("max.message.bytes", "message.max.bytes"),
        ("retention.ms", "log.retention.ms"),
        ("segment.bytes", "log.segment.bytes"),
        ("segment.ms", "log.roll.ms"),
        ("segment.index.bytes", "log.index.size.max.bytes"),
        ("flush.messages", "log.flush.interval.messages"),
        ("file.delete.delay.ms", "log.segment.delete.delay.ms"),
        (
            "min.cleanable.dirty.ratio",
            "log.cleaner.min.cleanable.ratio",
        ),
        ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
        ("message.timestamp.type", "log.message.timestamp.type"),
        ("cleanup.policy", "log.cleanup.policy"),
        ("min.insync.replicas", "min.insync.replicas"),
        ("compression.type", "compression.type"),
        (
            "unclean.leader.election.enable",
            "unclean.leader.election.enable",
        ),
    ];
    for (topic, broker) in renamed {
        assert_eq!(
            find(topic).and_then(|d| d.broker_name),
            Some(broker),
            "{topic}"
        );
    }
    for name in [
        "remote.storage.enable",
        "leader.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
    ] {
        assert_eq!(find(name).and_then(|d| d.broker_name), None, "{name}");
    }
    let mut names: Vec<_> = TOPIC_CONFIGS
        .iter()
        .flat_map(|d| {
            d.broker_name
                .into_iter()
                .chain(d.broker_alts.iter().map(|a| a.name))
        })
        .collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count);
}

#[test]
fn test_unknown_name_is_refused() {
    // Proves a name outside the registry is Unknown, and the message names it.
    let err = validate("retention.hours", "1").unwrap_err();
    assert_eq!(
        err,
        ConfigError::Unknown {
            name: "retention.hours".into()
        }
    );
    assert!(err.to_string().contains("retention.hours"));
}

#[test]
fn test_out_of_range_values_are_refused() {
    // Proves Kafka's ranges at their edges, and Railyard's own segment.bytes floor.
    let cases = [
        ("segment.bytes", "1023", "1024"),
        ("min.insync.replicas", "0", "1"),
        ("retention.ms", "-2", "-1"),
        ("max.message.bytes", "-1", "0"),
        ("segment.ms", "0", "1"),
        ("segment.index.bytes", "3", "4"),
        ("flush.messages", "0", "1"),
        ("local.retention.ms", "-3", "-2"),
        ("max.compaction.lag.ms", "0", "1"),
        ("message.timestamp.after.max.ms", "-1", "0"),
        ("min.cleanable.dirty.ratio", "1.0001", "1"),
        ("min.cleanable.dirty.ratio", "-0.1", "0"),
        ("compression.gzip.level", "0", "9"),
        ("compression.gzip.level", "10", "-1"),
        ("compression.lz4.level", "18", "17"),
        ("compression.zstd.level", "-131073", "-131072"),
        ("compression.zstd.level", "23", "22"),
    ];
    for (name, bad, good) in cases {
        assert!(is_invalid(validate(name, bad)), "{name}={bad}");
        assert_eq!(validate(name, good), Ok(()), "{name}={good}");
    }
    // retention.bytes has no range in Kafka: any negative means unlimited.
    assert_eq!(validate("retention.bytes", "-9223372036854775808"), Ok(()));
    let err = validate("segment.bytes", "1023").unwrap_err().to_string();
    assert!(
        err.contains("segment.bytes") && err.contains("1024"),
        "{err}"
    );
}

#[test]
fn test_values_of_the_wrong_type_are_refused() {
    // Proves each type's parse: ints are 32-bit, longs 64-bit, no fractions or units.
    let cases = [
        ("max.message.bytes", "abc"),
        ("max.message.bytes", "1.5"),
        ("max.message.bytes", "2147483648"),
        ("max.message.bytes", ""),
        ("retention.ms", "7d"),
        ("retention.ms", "9223372036854775808"),
        ("preallocate", "yes"),
        ("preallocate", "1"),
        ("min.cleanable.dirty.ratio", "half"),
        ("min.cleanable.dirty.ratio", "NaN"),
    ];
    for (name, bad) in cases {
        assert!(is_invalid(validate(name, bad)), "{name}={bad:?}");
    }
}

#[test]
fn test_values_are_parsed_like_kafka() {
    // Proves Kafka's ConfigDef leniencies: values are trimmed, booleans take any case, a sign
    // is allowed, and a list may end with a comma.
    let ok = [
        ("retention.ms", " 1000 "),
        ("retention.ms", "+1000"),
        ("preallocate", "TRUE"),
        ("unclean.leader.election.enable", " False"),
        ("min.cleanable.dirty.ratio", ".25"),
        ("cleanup.policy", "delete,"),
        ("cleanup.policy", ""),
        ("cleanup.policy", " delete "),
        ("retention.ms", "9223372036854775807"),
    ];
    for (name, value) in ok {
        assert_eq!(validate(name, value), Ok(()), "{name}={value:?}");
    }
    assert!(is_invalid(validate("cleanup.policy", ",delete")));
}

#[test]
fn test_enum_strings_are_case_sensitive() {
    // Proves the string enums accept exactly Kafka's spellings.
    for v in ["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"] {
        assert_eq!(validate("compression.type", v), Ok(()), "{v}");
    }
    for v in ["LZ4", "none", "brotli", ""] {
        assert!(is_invalid(validate("compression.type", v)), "{v:?}");
    }
    assert_eq!(validate("message.timestamp.type", "LogAppendTime"), Ok(()));
    assert!(is_invalid(validate("message.timestamp.type", "createtime")));
    assert!(is_invalid(validate("cleanup.policy", "Delete")));
    assert!(is_invalid(validate("cleanup.policy", "delete,bogus")));
}

#[test]
fn test_compaction_and_tiered_storage_are_not_available() {
    // Proves values Kafka accepts but Railyard cannot honour are NotAvailable (not
    // InvalidValue), with a reason that says what is missing.
    for v in ["compact", "delete,compact", "compact,delete", " compact "] {
        let err = validate("cleanup.policy", v).unwrap_err();
        assert!(is_unavailable(Err(err.clone())), "{v:?}");
        assert!(
            err.to_string().contains("compaction is not available"),
            "{err}"
        );
    }
    assert!(is_unavailable(validate("remote.storage.enable", "true")));
    assert!(is_unavailable(validate("remote.storage.enable", "TRUE")));
    assert_eq!(validate("remote.storage.enable", "false"), Ok(()));
    // A bad value is InvalidValue even if it mentions the unavailable item.
    assert!(is_invalid(validate("cleanup.policy", "compact,bogus")));
}

#[test]
fn test_throttled_replicas_lists() {
    // Proves Kafka's ThrottledReplicaListValidator: pairs of numbers, or the lone wildcard.
    for v in ["", "*", "0:1", "0:1,1:2", " 0:1 , 1:2 ", "*,"] {
        assert_eq!(
            validate("leader.replication.throttled.replicas", v),
            Ok(()),
            "{v:?}"
        );
    }
    for v in ["0:1,*", "a:b", "0", "0:", ":1", "0:1:2", "**"] {
        assert!(
            is_invalid(validate("follower.replication.throttled.replicas", v)),
            "{v:?}"
        );
    }
}

#[test]
fn test_validate_all() {
    // Proves every override is checked, the first error in name order is reported, and the
    // compaction lags are checked against each other.
    assert_eq!(validate_all(&map(&[])), Ok(()));
    assert_eq!(
        validate_all(&map(&[("retention.ms", "1000"), ("segment.bytes", "2048")])),
        Ok(())
    );
    let err = validate_all(&map(&[
        ("segment.bytes", "1"),
        ("retention.ms", "x"),
        ("zz", "1"),
    ]));
    assert!(
        matches!(err, Err(ConfigError::InvalidValue { ref name, .. }) if name == "retention.ms")
    );
    let lags = map(&[
        ("min.compaction.lag.ms", "10"),
        ("max.compaction.lag.ms", "5"),
    ]);
    assert!(is_invalid(validate_all(&lags)));
    let lags = map(&[
        ("min.compaction.lag.ms", "10"),
        ("max.compaction.lag.ms", "10"),
    ]);
    assert_eq!(validate_all(&lags), Ok(()));
}

#[test]
fn test_apply_set_and_delete() {
    // Proves SET overrides, DELETE removes the override (back to the default), and the input
    // map is left as it was.
    let current = map(&[("retention.ms", "1000"), ("segment.ms", "5000")]);
    let next = apply_incremental(
        &current,
        &ops(&[
            ("retention.ms", AlterOp::Set("2000".into())),
            ("segment.ms", AlterOp::Delete),
            ("flush.ms", AlterOp::Delete),
        ]),
        &BrokerDefaults::default(),
    )
    .unwrap();
    assert_eq!(next, map(&[("retention.ms", "2000")]));
    assert_eq!(
        current,
        map(&[("retention.ms", "1000"), ("segment.ms", "5000")])
    );
}

#[test]
fn test_apply_append_and_subtract() {
    // Proves APPEND adds missing items to the effective list (the default when there is no
    // override, the broker's value when it has one) and SUBTRACT removes items.
    let none = BrokerDefaults::default();
    let replicas = "leader.replication.throttled.replicas";
    let next = apply_incremental(
        &map(&[]),
        &ops(&[(replicas, AlterOp::Append("0:1".into()))]),
        &none,
    )
    .unwrap();
    assert_eq!(next, map(&[(replicas, "0:1")]));
    let next = apply_incremental(
        &next,
        &ops(&[(replicas, AlterOp::Append("1:2,0:1".into()))]),
        &none,
    )
    .unwrap();
    assert_eq!(next, map(&[(replicas, "0:1,1:2")]));
    let next = apply_incremental(
        &next,
        &ops(&[(replicas, AlterOp::Subtract("0:1".into()))]),
        &none,
    )
    .unwrap();
    assert_eq!(next, map(&[(replicas, "1:2")]));
    // SUBTRACT from the default `delete` leaves an empty policy, which Kafka allows.
    let next = apply_incremental(
        &map(&[]),
        &ops(&[("cleanup.policy", AlterOp::Subtract("delete".into()))]),
        &none,
    )
    .unwrap();
    assert_eq!(next, map(&[("cleanup.policy", "")]));
    // APPEND works on the broker's default when the topic has no override.
    let b = broker(&[("log.cleanup.policy", "")]);
    let next = apply_incremental(
        &map(&[]),
        &ops(&[("cleanup.policy", AlterOp::Append("delete".into()))]),
        &b,
    )
    .unwrap();
    assert_eq!(next, map(&[("cleanup.policy", "delete")]));
}

#[test]
fn test_apply_refusals_change_nothing() {
    // Proves APPEND on a non-list is NotAList, appending `compact` is NotAvailable, duplicates
    // and unknown names are refused, and one bad op fails the whole request.
    let none = BrokerDefaults::default();
    let current = map(&[("retention.ms", "1000")]);
    let apply = |list: &[(&str, AlterOp)]| apply_incremental(&current, &ops(list), &none);
    assert_eq!(
        apply(&[("retention.ms", AlterOp::Append("5".into()))]),
        Err(AlterError::NotAList {
            name: "retention.ms".into()
        })
    );
    assert!(matches!(
        apply(&[("cleanup.policy", AlterOp::Append("compact".into()))]),
        Err(AlterError::Config(ConfigError::NotAvailable { .. }))
    ));
    assert_eq!(
        apply(&[
            ("segment.ms", AlterOp::Set("1".into())),
            ("segment.ms", AlterOp::Delete)
        ]),
        Err(AlterError::Duplicate {
            name: "segment.ms".into()
        })
    );
    assert!(matches!(
        apply(&[("nope", AlterOp::Delete)]),
        Err(AlterError::Config(ConfigError::Unknown { .. }))
    ));
    assert!(matches!(
        apply(&[
            ("retention.ms", AlterOp::Set("2000".into())),
            ("segment.bytes", AlterOp::Set("1".into())),
        ]),
        Err(AlterError::Config(ConfigError::InvalidValue { ref name, .. })) if name == "segment.bytes"
    ));
    assert_eq!(current, map(&[("retention.ms", "1000")]));
}

#[test]
fn test_alter_op_codes() {
    // Proves Kafka's AlterConfigOp.OpType numbering and that a missing value is refused.
    assert_eq!(
        AlterOp::from_code(0, Some("1")),
        Some(AlterOp::Set("1".into()))
    );
    assert_eq!(AlterOp::from_code(1, None), Some(AlterOp::Delete));
    assert_eq!(
        AlterOp::from_code(2, Some("a")),
        Some(AlterOp::Append("a".into()))
    );
    assert_eq!(
        AlterOp::from_code(3, Some("a")),
        Some(AlterOp::Subtract("a".into()))
    );
    assert_eq!(AlterOp::from_code(0, None), None);
    assert_eq!(AlterOp::from_code(4, Some("a")), None);
}

#[test]
fn test_effective_precedence_and_source() {
    // Proves topic override > broker default (primary name, then coarser synonyms) > Kafka.
    let def = find("retention.ms").unwrap();
    let none = BrokerDefaults::default();
    assert_eq!(
        effective(def, &map(&[]), &none),
        (Some("604800000".into()), Source::Default)
    );
    let hours = broker(&[("log.retention.hours", "2")]);
    assert_eq!(
        effective(def, &map(&[]), &hours),
        (Some("7200000".into()), Source::Broker)
    );
    let both = broker(&[("log.retention.hours", "2"), ("log.retention.minutes", "3")]);
    assert_eq!(
        effective(def, &map(&[]), &both).0.as_deref(),
        Some("180000")
    );
    let all = broker(&[("log.retention.ms", "5"), ("log.retention.minutes", "3")]);
    assert_eq!(effective(def, &map(&[]), &all).0.as_deref(), Some("5"));
    assert_eq!(
        effective(def, &map(&[("retention.ms", "7")]), &all),
        (Some("7".into()), Source::Topic)
    );
    let forever = broker(&[("log.retention.hours", "-1")]);
    assert_eq!(effective(def, &map(&[]), &forever).0.as_deref(), Some("-1"));
}

#[test]
fn test_resolve_kafka_defaults() {
    // Proves the typed view of a topic with no overrides on a node with no broker defaults
    // matches Kafka 4.0's defaults, but for the unbounded message.timestamp.after.max.ms (see
    // its effect text).
    let s = TopicSettings::resolve(&BrokerDefaults::default(), &map(&[]));
    let expected = TopicSettings {
        max_message_bytes: 1_048_588,
        timestamp_type: TimestampType::CreateTime,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
        compression: CompressionSetting::Producer,
        min_insync_replicas: 1,
        retention_ms: Some(604_800_000),
        retention_bytes: None,
        segment_bytes: 1 << 30,
        segment_ms: 604_800_000,
        index_interval_bytes: 4096,
    };
    assert_eq!(s, expected);
}

#[test]
fn test_resolve_precedence() {
    // Proves each resolved field takes the topic override over the broker default over
    // Kafka's default.
    let b = broker(&[
        ("message.max.bytes", "2000"),
        ("log.message.timestamp.type", "LogAppendTime"),
        ("compression.type", "zstd"),
        ("compression.zstd.level", "7"),
        ("min.insync.replicas", "2"),
        ("log.retention.ms", "1000"),
        ("log.retention.bytes", "4096"),
        ("log.segment.bytes", "8192"),
        ("log.roll.hours", "1"),
    ]);
    let s = TopicSettings::resolve(&b, &map(&[]));
    assert_eq!(s.max_message_bytes, 2000);
    assert_eq!(s.timestamp_type, TimestampType::LogAppendTime);
    assert_eq!(s.compression, CompressionSetting::Zstd { level: 7 });
    assert_eq!(s.min_insync_replicas, 2);
    assert_eq!(
        (s.retention_ms, s.retention_bytes),
        (Some(1000), Some(4096))
    );
    assert_eq!((s.segment_bytes, s.segment_ms), (8192, 3_600_000));
    let topic = map(&[
        ("max.message.bytes", "3000"),
        ("message.timestamp.type", "CreateTime"),
        ("compression.type", "gzip"),
        ("min.insync.replicas", "3"),
        ("retention.ms", "-1"),
        ("retention.bytes", "-5"),
        ("segment.bytes", "1024"),
        ("segment.ms", "10"),
        ("index.interval.bytes", "0"),
    ]);
    let s = TopicSettings::resolve(&b, &topic);
    assert_eq!(s.max_message_bytes, 3000);
    assert_eq!(s.timestamp_type, TimestampType::CreateTime);
    assert_eq!(s.compression, CompressionSetting::Gzip { level: -1 });
    assert_eq!(s.compression.target(), Some(Compression::Gzip));
    assert_eq!(s.min_insync_replicas, 3);
    assert_eq!((s.retention_ms, s.retention_bytes), (None, None));
    assert_eq!((s.segment_bytes, s.segment_ms), (1024, 10));
    assert_eq!(s.index_interval_bytes, 1);
}

#[test]
fn test_resolve_cleanup_policy_without_delete_keeps_everything() {
    // Proves Kafka's rule that time and size retention apply only under the delete policy.
    let topic = map(&[
        ("cleanup.policy", ""),
        ("retention.ms", "1000"),
        ("retention.bytes", "1000"),
    ]);
    let s = TopicSettings::resolve(&BrokerDefaults::default(), &topic);
    assert_eq!((s.retention_ms, s.retention_bytes), (None, None));
}

#[test]
fn test_resolve_deprecated_timestamp_difference() {
    // Proves message.timestamp.difference.max.ms fills both bounds where they are unset, and
    // loses to a bound set on the topic or the broker (Kafka 3.6's rule).
    let none = BrokerDefaults::default();
    let topic = map(&[("message.timestamp.difference.max.ms", "500")]);
    let s = TopicSettings::resolve(&none, &topic);
    assert_eq!(
        (s.timestamp_before_max_ms, s.timestamp_after_max_ms),
        (500, 500)
    );
    let b = broker(&[("log.message.timestamp.after.max.ms", "9")]);
    let s = TopicSettings::resolve(&b, &topic);
    assert_eq!(
        (s.timestamp_before_max_ms, s.timestamp_after_max_ms),
        (500, 9)
    );
    let topic = map(&[
        ("message.timestamp.difference.max.ms", "500"),
        ("message.timestamp.before.max.ms", "7"),
    ]);
    let s = TopicSettings::resolve(&none, &topic);
    assert_eq!(
        (s.timestamp_before_max_ms, s.timestamp_after_max_ms),
        (7, 500)
    );
}

#[test]
fn test_resolve_falls_back_on_bad_stored_values() {
    // Proves resolve is total: a stored or broker value that does not validate is replaced by
    // Kafka's default instead of panicking.
    let b = broker(&[("log.retention.ms", "soon"), ("log.roll.hours", "-3")]);
    let topic = map(&[("segment.bytes", "1"), ("compression.type", "brotli")]);
    let s = TopicSettings::resolve(&b, &topic);
    assert_eq!(s.retention_ms, Some(604_800_000));
    assert_eq!(s.segment_ms, 604_800_000);
    assert_eq!(s.segment_bytes, 1 << 30);
    assert_eq!(s.compression, CompressionSetting::Producer);
}

#[test]
fn test_broker_defaults_validate() {
    // Proves node-config checking: known broker names with valid values pass, unknown names
    // and bad values are refused under the broker name.
    let ok = broker(&[
        ("log.retention.hours", "168"),
        ("log.retention.ms", "-1"),
        ("message.max.bytes", "1000"),
        ("log.cleanup.policy", "delete"),
    ]);
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(
        broker(&[("retention.ms", "1")]).validate(),
        Err(ConfigError::Unknown {
            name: "retention.ms".into()
        })
    );
    let bad = broker(&[("log.segment.bytes", "10")]).validate();
    assert!(
        matches!(bad, Err(ConfigError::InvalidValue { ref name, .. }) if name == "log.segment.bytes")
    );
    let bad = broker(&[("log.roll.hours", "0")]).validate();
    assert!(
        matches!(bad, Err(ConfigError::InvalidValue { ref name, .. }) if name == "log.roll.hours")
    );
    let compact = broker(&[("log.cleanup.policy", "compact")]).validate();
    assert!(matches!(compact, Err(ConfigError::NotAvailable { .. })));
}

#[test]
fn test_compatibility_doc_lists_every_config() {
    // Proves docs/kafka-compatibility.md has a table row for every config, carrying its
    // default and broker synonym, so the doc cannot drift from the registry. To regenerate the
    // table: cargo test -p railyard-core --lib topic_config -- --ignored --nocapture
    let section = COMPAT_DOC
        .split("## Topic configs")
        .nth(1)
        .expect("the doc has a Topic configs section");
    for def in TOPIC_CONFIGS {
        let prefix = format!("| `{}` |", def.name);
        let row = section
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no table row for {}", def.name));
        let default = quote(def.default.unwrap_or("null"));
        assert!(
            row.contains(&default),
            "{}: default {default} missing",
            def.name
        );
        if let Some(b) = def.broker_name {
            assert!(
                row.contains(&format!("`{b}`")),
                "{}: synonym {b} missing",
                def.name
            );
        }
    }
}

/// Prints the docs table from the registry.
#[test]
#[ignore]
fn print_compatibility_table() {
    println!("| Config | Type | Kafka default | Valid values | Broker synonym | In Railyard |");
    println!("|---|---|---|---|---|---|");
    for def in TOPIC_CONFIGS {
        println!("{}", table_row(def));
    }
}

/// A value as the table shows it; the empty string as `""` so that it stays visible.
fn quote(s: &str) -> String {
    if s.is_empty() {
        "`\"\"`".to_owned()
    } else {
        format!("`{s}`")
    }
}

fn table_row(def: &ConfigDef) -> String {
    let synonyms: Vec<String> = def
        .broker_name
        .into_iter()
        .chain(def.broker_alts.iter().map(|a| a.name))
        .map(|n| format!("`{n}`"))
        .collect();
    let mut effect = match def.effect {
        Effect::Enforced(t) => format!("**Enforced.** {t}"),
        Effect::NoEffect(t) => format!("Accepted, no effect. {t}"),
    };
    match def.unavailable {
        Some(Unavailable::ListItem { item, reason }) => {
            effect += &format!(" **Refused:** any list containing `{item}` ({reason}).");
        }
        Some(Unavailable::Bool { value, reason }) => {
            effect += &format!(" **Refused:** `{value}` ({reason}).");
        }
        None => {}
    }
    if let Some(d) = def.deprecated {
        effect = format!("*Deprecated: {d}.* {effect}");
    }
    format!(
        "| `{}` | {} | {} | {} | {} | {} |",
        def.name,
        def.kind.name(),
        quote(def.default.unwrap_or("null")),
        def.check.valid_values(),
        if synonyms.is_empty() {
            "none".to_owned()
        } else {
            synonyms.join(", ")
        },
        effect
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// validate never panics, whatever the name or value (they come from the network).
    #[test]
    fn prop_validate_never_panics(pick in any::<prop::sample::Index>(), value in any::<String>()) {
        let def = &TOPIC_CONFIGS[pick.index(TOPIC_CONFIGS.len())];
        let _ = validate(def.name, &value);
        let _ = validate(&value, &value);
    }

    /// resolve and apply_incremental never panic on stored overrides made of the characters
    /// config values are made of, valid or not (they come from the metadata log).
    #[test]
    fn prop_resolve_and_apply_never_panic(
        entries in proptest::collection::vec(
            (any::<prop::sample::Index>(), "[-+0-9.,:*a-zA-Z ]{0,12}"),
            0..6,
        ),
    ) {
        let overrides: BTreeMap<String, String> = entries
            .iter()
            .map(|(i, v)| (TOPIC_CONFIGS[i.index(TOPIC_CONFIGS.len())].name.to_owned(), v.clone()))
            .collect();
        let _ = TopicSettings::resolve(&BrokerDefaults::default(), &overrides);
        let _ = apply_incremental(
            &overrides,
            &[("cleanup.policy".to_owned(), AlterOp::Append("delete".into()))],
            &BrokerDefaults::default(),
        );
    }

    /// Long configs accept exactly the integers at or above their minimum.
    #[test]
    fn prop_long_ranges(pick in any::<prop::sample::Index>(), n in any::<i64>()) {
        let longs: Vec<_> = TOPIC_CONFIGS.iter().filter(|d| d.kind == ConfigType::Long).collect();
        let def = longs[pick.index(longs.len())];
        let Check::Long { min } = def.check else { panic!("{} is not a Long check", def.name) };
        prop_assert_eq!(validate(def.name, &n.to_string()).is_ok(), n >= min);
    }
}

#[test]
fn test_dynamic_broker_layers_overlay_and_incremental_ops() {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // A dynamic value in any unit hides every synonym below it.
    let static_ = BrokerDefaults(map(&[
        ("log.retention.ms", "1000"),
        ("message.max.bytes", "7"),
    ]));
    let merged = static_.overlay(&map(&[("log.retention.hours", "1")]));
    assert_eq!(
        merged.0,
        map(&[("log.retention.hours", "1"), ("message.max.bytes", "7")])
    );
    let layers = BrokerLayers {
        dynamic: map(&[("message.max.bytes", "9")]),
        dynamic_default: map(&[("log.retention.hours", "1")]),
        static_,
    };
    let retention = find("retention.ms").unwrap();
    assert_eq!(
        layers.effective(retention, &BTreeMap::new()),
        (Some("3600000".into()), Source::DynamicDefaultBroker)
    );
    let max = find("max.message.bytes").unwrap();
    assert_eq!(
        layers.values(max),
        vec![
            (Source::DynamicBroker, "9".into()),
            (Source::Broker, "7".into())
        ]
    );
    assert_eq!(
        layers.effective(max, &map(&[("max.message.bytes", "5")])),
        (Some("5".into()), Source::Topic)
    );
    // Incremental ops on broker names: SET, DELETE, APPEND only to a list; validated whole.
    let cur = map(&[("message.max.bytes", "9")]);
    let set = |n: &str, v: &str| (n.to_string(), AlterOp::Set(v.to_string()));
    let next = apply_broker_incremental(
        &cur,
        &[
            set("log.retention.ms", "60000"),
            ("message.max.bytes".into(), AlterOp::Delete),
            (
                "log.cleanup.policy".into(),
                AlterOp::Append("delete".into()),
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        next,
        map(&[
            ("log.cleanup.policy", "delete"),
            ("log.retention.ms", "60000")
        ])
    );
    for bad in [
        vec![set("broker.id", "1")],
        vec![set("message.max.bytes", "-1")],
        vec![("log.retention.ms".into(), AlterOp::Append("5".into()))],
    ] {
        assert!(
            !matches!(
                apply_broker_incremental(&cur, &bad),
                Ok(_) | Err(AlterError::Duplicate { .. })
            ),
            "{bad:?}"
        );
    }
    let twice = [set("message.max.bytes", "1"), set("message.max.bytes", "2")];
    assert!(matches!(
        apply_broker_incremental(&cur, &twice),
        Err(AlterError::Duplicate { .. })
    ));
}
