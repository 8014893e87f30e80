//! A pre-decode walk over request bodies that refuses any array whose declared length exceeds the
//! bytes left in the frame.
//!
//! kafka-protocol 0.18 calls `Vec::with_capacity(count)` with the count read off the wire before
//! decoding a single element (upstream kafka-protocol-rs PRs #152/#200). A 20-byte frame that
//! declares four billion topics asks for hundreds of GiB, the allocator fails, and Rust aborts
//! the whole broker: no panic to catch. Every array element takes at least one byte on the
//! wire, so a count above the remaining bytes cannot be a real request. This module walks the
//! exact field layout of each request version we advertise (only to skip fields; values are not
//! kept) and rejects such counts before kafka-protocol sees the body. A test encodes every
//! advertised version with kafka-protocol and checks that the walk consumes it exactly, so the
//! layouts here cannot drift from the decoder's. Remove this once the upstream fix ships.

use kafka_protocol::messages::ApiKey;

/// Why a request body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The body ended inside a field.
    #[error("request body truncated")]
    Truncated,
    /// An array declares more elements than bytes remain.
    #[error("array of {count} elements in {remaining} remaining bytes")]
    ArrayTooLong { count: u64, remaining: usize },
    /// A length prefix is negative (other than -1 for null) or a varint is malformed.
    #[error("malformed length")]
    BadLength,
    /// No layout is known for this API version (a bug: the dispatcher checks versions first).
    #[error("no layout for {0:?} v{1}")]
    UnknownLayout(ApiKey, i16),
}

/// Checks that `body` (the bytes after the request header) declares no impossible array.
pub fn check_body(api: ApiKey, version: i16, body: &[u8]) -> Result<(), GuardError> {
    walk(api, version, body).map(|_| ())
}

/// Walks the body and returns how many bytes the request occupies.
fn walk(api: ApiKey, v: i16, body: &[u8]) -> Result<usize, GuardError> {
    let flexible = match api {
        ApiKey::Produce => v >= 9,
        ApiKey::Fetch => v >= 12,
        ApiKey::ListOffsets => v >= 6,
        ApiKey::Metadata => v >= 9,
        ApiKey::OffsetForLeaderEpoch => v >= 4,
        ApiKey::ApiVersions => v >= 3,
        ApiKey::DescribeCluster => true,
        ApiKey::CreateTopics => v >= 5,
        ApiKey::DeleteTopics => v >= 4,
        ApiKey::DescribeConfigs => v >= 4,
        _ => return Err(GuardError::UnknownLayout(api, v)),
    };
    let mut r = Reader {
        buf: body,
        pos: 0,
        flexible,
    };
    match api {
        ApiKey::Produce => produce(&mut r)?,
        ApiKey::Fetch => fetch(&mut r, v)?,
        ApiKey::ListOffsets => list_offsets(&mut r, v)?,
        ApiKey::Metadata => metadata(&mut r, v)?,
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch(&mut r, v)?,
        ApiKey::ApiVersions => {
            if v >= 3 {
                r.string()?; // client_software_name
                r.string()?; // client_software_version
            }
        }
        ApiKey::DescribeCluster => {
            r.skip(1)?; // include_cluster_authorized_operations
            if v >= 1 {
                r.skip(1)?; // endpoint_type
            }
            if v >= 2 {
                r.skip(1)?; // include_fenced_brokers
            }
        }
        ApiKey::CreateTopics => create_topics(&mut r)?,
        ApiKey::DeleteTopics => delete_topics(&mut r, v)?,
        ApiKey::DescribeConfigs => describe_configs(&mut r, v)?,
        _ => return Err(GuardError::UnknownLayout(api, v)),
    }
    r.tags()?;
    Ok(r.pos)
}

/// Produce v3+ (topic names; v13 topic ids are not advertised).
fn produce(r: &mut Reader) -> Result<(), GuardError> {
    r.string()?; // transactional_id
    r.skip(2 + 4)?; // acks, timeout_ms
    r.array(|r| {
        r.string()?; // name
        r.array(|r| {
            r.skip(4)?; // index
            r.bytes()?; // records
            r.tags()
        })?;
        r.tags()
    })
}

/// Fetch v4..=12, as advertised (replica_id as a field, topic names).
fn fetch(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    r.skip(4 + 4 + 4 + 4 + 1)?; // replica_id, max_wait_ms, min_bytes, max_bytes, isolation
    if v >= 7 {
        r.skip(4 + 4)?; // session_id, session_epoch
    }
    r.array(|r| {
        r.string()?; // topic
        r.array(|r| {
            r.skip(4)?; // partition
            if v >= 9 {
                r.skip(4)?; // current_leader_epoch
            }
            r.skip(8)?; // fetch_offset
            if v >= 12 {
                r.skip(4)?; // last_fetched_epoch
            }
            if v >= 5 {
                r.skip(8)?; // log_start_offset
            }
            r.skip(4)?; // partition_max_bytes
            r.tags()
        })?;
        r.tags()
    })?;
    if v >= 7 {
        r.array(|r| {
            r.string()?; // forgotten topic
            r.array(|r| r.skip(4))?; // partitions
            r.tags()
        })?;
    }
    if v >= 11 {
        r.string()?; // rack_id
    }
    Ok(())
}

/// ListOffsets v1..=6, as advertised.
fn list_offsets(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    r.skip(4)?; // replica_id
    if v >= 2 {
        r.skip(1)?; // isolation_level
    }
    r.array(|r| {
        r.string()?; // name
        r.array(|r| {
            r.skip(4)?; // partition_index
            if v >= 4 {
                r.skip(4)?; // current_leader_epoch
            }
            r.skip(8)?; // timestamp
            r.tags()
        })?;
        r.tags()
    })
}

fn metadata(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    r.array(|r| {
        if v >= 10 {
            r.skip(16)?; // topic_id
        }
        r.string()?; // name
        r.tags()
    })?;
    if v >= 4 {
        r.skip(1)?; // allow_auto_topic_creation
    }
    if (8..=10).contains(&v) {
        r.skip(1)?; // include_cluster_authorized_operations
    }
    if v >= 8 {
        r.skip(1)?; // include_topic_authorized_operations
    }
    Ok(())
}

fn offset_for_leader_epoch(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    if v >= 3 {
        r.skip(4)?; // replica_id
    }
    r.array(|r| {
        r.string()?; // topic
        r.array(|r| {
            r.skip(4)?; // partition
            if v >= 2 {
                r.skip(4)?; // current_leader_epoch
            }
            r.skip(4)?; // leader_epoch
            r.tags()
        })?;
        r.tags()
    })
}

/// CreateTopics v2..=7 (the layout is the same in all of them but for the flexible encoding).
fn create_topics(r: &mut Reader) -> Result<(), GuardError> {
    r.array(|r| {
        r.string()?; // name
        r.skip(4 + 2)?; // num_partitions, replication_factor
        r.array(|r| {
            r.skip(4)?; // partition_index
            r.array(|r| r.skip(4))?; // broker_ids
            r.tags()
        })?;
        r.array(|r| {
            r.string()?; // config name
            r.string()?; // config value (nullable)
            r.tags()
        })?;
        r.tags()
    })?;
    r.skip(4 + 1) // timeout_ms, validate_only
}

/// DeleteTopics v1..=6: names up to v5, (name, id) pairs in v6.
fn delete_topics(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    if v >= 6 {
        r.array(|r| {
            r.string()?; // name (nullable)
            r.skip(16)?; // topic_id
            r.tags()
        })?;
    } else {
        r.array(|r| r.string())?; // topic_names
    }
    r.skip(4) // timeout_ms
}

/// DescribeConfigs v1..=4.
fn describe_configs(r: &mut Reader, v: i16) -> Result<(), GuardError> {
    r.array(|r| {
        r.skip(1)?; // resource_type
        r.string()?; // resource_name
        r.array(|r| r.string())?; // configuration_keys (nullable)
        r.tags()
    })?;
    r.skip(1)?; // include_synonyms
    if v >= 3 {
        r.skip(1)?; // include_documentation
    }
    Ok(())
}

/// A cursor that skips Kafka primitive types in the classic or the flexible (compact) encoding.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), GuardError> {
        if n > self.remaining() {
            return Err(GuardError::Truncated);
        }
        self.pos += n;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], GuardError> {
        let start = self.pos;
        self.skip(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[start..start + N]);
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u32, GuardError> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.fixed::<1>()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GuardError::BadLength)
    }

    /// A length: compact (varint, 0 = null, else n + 1) or classic (i16/i32, -1 = null).
    /// Returns `None` for null.
    fn length(&mut self, classic_i16: bool) -> Result<Option<u64>, GuardError> {
        if self.flexible {
            return Ok(self.uvarint()?.checked_sub(1).map(u64::from));
        }
        let n = if classic_i16 {
            i64::from(i16::from_be_bytes(self.fixed::<2>()?))
        } else {
            i64::from(i32::from_be_bytes(self.fixed::<4>()?))
        };
        match n {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as u64)),
            _ => Err(GuardError::BadLength),
        }
    }

    fn string(&mut self) -> Result<(), GuardError> {
        let n = self.length(true)?.unwrap_or(0);
        self.skip(usize::try_from(n).map_err(|_| GuardError::Truncated)?)
    }

    fn bytes(&mut self) -> Result<(), GuardError> {
        let n = self.length(false)?.unwrap_or(0);
        self.skip(usize::try_from(n).map_err(|_| GuardError::Truncated)?)
    }

    fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), GuardError>,
    ) -> Result<(), GuardError> {
        let count = self.length(false)?.unwrap_or(0);
        if count > self.remaining() as u64 {
            return Err(GuardError::ArrayTooLong {
                count,
                remaining: self.remaining(),
            });
        }
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }

    /// Tagged fields (flexible versions only): a count, then (tag, size, bytes) each.
    fn tags(&mut self) -> Result<(), GuardError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiVersionsRequest, BrokerId, CreateTopicsRequest, DeleteTopicsRequest,
        DescribeClusterRequest, DescribeConfigsRequest, FetchRequest, ListOffsetsRequest,
        MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use crate::kafka::codec::SUPPORTED_APIS;

    fn name() -> TopicName {
        TopicName(StrBytes::from_static_str("topic-a"))
    }

    /// A request of every advertised API with every array non-empty.
    fn encoded(api: ApiKey, v: i16) -> BytesMut {
        let mut buf = BytesMut::new();
        let result = match api {
            ApiKey::Produce => ProduceRequest::default()
                .with_transactional_id(None)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_records(Some(bytes::Bytes::from_static(b"records"))),
                        PartitionProduceData::default().with_index(1),
                    ])])
                .encode(&mut buf, v),
            ApiKey::Fetch => FetchRequest::default()
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![FetchPartition::default(); 2])])
                .with_forgotten_topics_data(if v >= 7 {
                    vec![ForgottenTopic::default()
                        .with_topic(name())
                        .with_partitions(vec![1, 2])]
                } else {
                    vec![]
                })
                .with_rack_id(StrBytes::from_static_str(if v >= 11 { "r" } else { "" }))
                .encode(&mut buf, v),
            ApiKey::ListOffsets => ListOffsetsRequest::default()
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![ListOffsetsPartition::default(); 2])])
                .encode(&mut buf, v),
            ApiKey::Metadata => MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default()
                        .with_name(Some(name()));
                    2
                ]))
                .encode(&mut buf, v),
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default()
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![OffsetForLeaderPartition::default(); 2])])
                .encode(&mut buf, v),
            ApiKey::ApiVersions => ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("client"))
                .with_client_software_version(StrBytes::from_static_str("1.2"))
                .encode(&mut buf, v),
            ApiKey::DescribeCluster => DescribeClusterRequest::default().encode(&mut buf, v),
            ApiKey::CreateTopics => CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(name())
                        .with_assignments(vec![CreatableReplicaAssignment::default()
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                        .with_configs(vec![
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("1"))),
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str("x"))
                                .with_value(None),
                        ]),
                    CreatableTopic::default().with_name(name()),
                ])
                .with_validate_only(true)
                .encode(&mut buf, v),
            ApiKey::DeleteTopics => {
                let req = if v >= 6 {
                    DeleteTopicsRequest::default().with_topics(vec![
                        DeleteTopicState::default().with_name(Some(name())),
                        DeleteTopicState::default()
                            .with_name(None)
                            .with_topic_id(crate::kafka::codec::uuid_carrier([3; 16]).topic_id),
                    ])
                } else {
                    DeleteTopicsRequest::default().with_topic_names(vec![name(), name()])
                };
                req.encode(&mut buf, v)
            }
            ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("topic-a"))
                        .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                            "retention.ms",
                        )])),
                    DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_configuration_keys(None),
                ])
                .with_include_synonyms(true)
                .with_include_documentation(v >= 3)
                .encode(&mut buf, v),
            _ => panic!("no test request for {api:?}"),
        };
        result.unwrap_or_else(|e| panic!("encode {api:?} v{v}: {e}"));
        buf
    }

    #[test]
    fn test_walk_consumes_every_advertised_version_exactly() {
        // The skip layouts match kafka-protocol's encoders byte for byte, for every version we
        // advertise, so a valid request is never refused and arrays are found where they are.
        for &(api, min, max) in SUPPORTED_APIS {
            for v in min..=max {
                let body = encoded(api, v);
                assert_eq!(walk(api, v, &body), Ok(body.len()), "{api:?} v{v}");
                // One byte short is refused (ApiVersions v0-2 have an empty body).
                if let Some(short) = body.len().checked_sub(1) {
                    assert!(walk(api, v, &body[..short]).is_err(), "{api:?} v{v} short");
                }
            }
        }
    }

    #[test]
    fn test_huge_array_counts_are_refused() {
        // The 20-byte requests that would make kafka-protocol abort the process are refused.
        let compact_max = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(
            check_body(ApiKey::Metadata, 12, &compact_max),
            Err(GuardError::ArrayTooLong { .. })
        ));
        let mut fetch = vec![0u8; 4 * 4 + 1 + 8];
        fetch.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check_body(ApiKey::Fetch, 7, &fetch),
            Err(GuardError::ArrayTooLong { .. })
        ));
        // A nested count is checked too: one topic, then four billion partitions.
        let mut produce = vec![0xFF, 0xFF, 0, 1, 0, 0, 0, 0]; // null txn id, acks, timeout
        produce.extend_from_slice(&1i32.to_be_bytes());
        produce.extend_from_slice(&[0, 1, b't']);
        produce.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check_body(ApiKey::Produce, 3, &produce),
            Err(GuardError::ArrayTooLong { .. })
        ));
        assert_eq!(
            check_body(ApiKey::Metadata, 1, &(-7i32).to_be_bytes()),
            Err(GuardError::BadLength)
        );
    }
}
