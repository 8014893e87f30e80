//! ListOffsets and OffsetForLeaderEpoch: where a partition's log starts and ends, the first
//! offset at a timestamp, and the end offset of a leader epoch (raft term), one core request per
//! partition. Partitions missing from the cluster view are answered UNKNOWN_TOPIC_OR_PARTITION
//! here.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;
use railyard_core::api::{OffsetSpec, Request, Response};
use railyard_core::types::TopicPartition;

use super::common::{unexpected, PartitionError};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct ListOffsets;

impl Handler for ListOffsets {
    type Request = ListOffsetsRequest;

    /// v1..=10, as advertised.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
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
        })?;
        if v >= 10 {
            r.skip(4)?; // timeout_ms
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: ListOffsetsRequest,
    ) -> Answer<ListOffsetsResponse> {
        Answer::Reply(list_offsets(ctx.broker, &request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> ListOffsetsRequest {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(super::common::sample_topic())
            .with_partitions(vec![ListOffsetsPartition::default(); 2])])
    }
}

pub struct OffsetForLeaderEpoch;

impl Handler for OffsetForLeaderEpoch {
    type Request = OffsetForLeaderEpochRequest;

    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
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

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: OffsetForLeaderEpochRequest,
    ) -> Answer<OffsetForLeaderEpochResponse> {
        Answer::Reply(offset_for_leader_epoch(ctx.broker, &request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> OffsetForLeaderEpochRequest {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(super::common::sample_topic())
            .with_partitions(vec![OffsetForLeaderPartition::default(); 2])])
    }
}

/// ListOffsets: earliest (-2), latest (-1, the high watermark), the first offset at or after a
/// timestamp, or the specials of [`offset_spec`].
pub async fn list_offsets<B: Broker>(
    broker: &B,
    req: &ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let view = broker.cluster();
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let out =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let spec = offset_spec(p.timestamp, version);
            let result = match (spec, view.partition(&topic.name, p.partition_index)) {
                (_, None) => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                (None, Some(_)) => Err(PartitionError::Kafka(ResponseError::UnsupportedVersion)),
                (Some(spec), Some(_)) => {
                    let tp = TopicPartition::new(topic.name.as_str(), p.partition_index);
                    match broker.request(Request::ListOffsets { tp, spec }).await {
                        Response::ListOffsets(r) => r.map_err(PartitionError::Core),
                        other => Err(unexpected(&other)),
                    }
                }
            };
            partitions.push(match result {
                Ok((offset, timestamp)) => out.with_offset(offset).with_timestamp(timestamp),
                Err(e) => out.with_error_code(e.code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The query a ListOffsets timestamp names, if the request's version allows it: Kafka accepts
/// max timestamp (-3) from v7, earliest-local (-4) from v8 and latest-tiered (-5) from v9, and
/// answers older versions UNSUPPORTED_VERSION.
fn offset_spec(timestamp: i64, version: i16) -> Option<OffsetSpec> {
    match timestamp {
        t if t >= 0 => Some(OffsetSpec::Timestamp(t)),
        -1 => Some(OffsetSpec::Latest),
        -2 => Some(OffsetSpec::Earliest),
        -3 if version >= 7 => Some(OffsetSpec::MaxTimestamp),
        -4 if version >= 8 => Some(OffsetSpec::EarliestLocal),
        -5 if version >= 9 => Some(OffsetSpec::LatestTiered),
        _ => None,
    }
}

/// OffsetForLeaderEpoch: the end offset of the requested leader epoch (raft term), which
/// consumers use to detect log truncation after a leader change.
pub async fn offset_for_leader_epoch<B: Broker>(
    broker: &B,
    req: &OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let view = broker.cluster();
    let mut topics = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let out = EpochEndOffset::default().with_partition(p.partition);
            let result = match view.partition(&topic.topic, p.partition) {
                None => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                // A negative epoch names no term: Kafka's "undefined" answer.
                Some(_) if p.leader_epoch < 0 => Ok((-1, -1)),
                Some(_) => {
                    let tp = TopicPartition::new(topic.topic.as_str(), p.partition);
                    let epoch = p.leader_epoch as u64;
                    match broker
                        .request(Request::OffsetForLeaderEpoch { tp, epoch })
                        .await
                    {
                        Response::OffsetForLeaderEpoch(r) => r.map_err(PartitionError::Core),
                        other => Err(unexpected(&other)),
                    }
                }
            };
            partitions.push(match result {
                Ok((epoch, end_offset)) => out
                    .with_leader_epoch(i32::try_from(epoch).unwrap_or(-1))
                    .with_end_offset(end_offset),
                Err(e) => out.with_error_code(e.code()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
