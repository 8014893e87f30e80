//! DeleteRecords: move partitions' log start offsets forward. Each partition's leader proposes
//! a command in the partition's raft log (`railyard_core::partition_command`) and answers with
//! the new start (Kafka's low watermark) once it commits; a broker that does not lead the
//! partition answers NOT_LEADER_OR_FOLLOWER, as Kafka does (clients send each partition to its
//! leader). Partitions run concurrently.
//!
//! The request's `timeout_ms` bounds, in Kafka, the wait for every follower's log start to
//! catch up after the leader's own, immediate, move. Here the leader's start moves when the
//! command commits, and each follower moves its own when it applies it, so there is nothing
//! further to wait for: the answer comes at the commit (as an acks=all produce's does),
//! bounded by the broker's produce timeout (REQUEST_TIMED_OUT after it). So a timeout of 0,
//! which librdkafka sends by default, still gets the new low watermark, as it does from Kafka
//! for a partition with one replica.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use railyard_core::api::{Request, Response};
use railyard_core::metadata::is_internal_topic;
use railyard_core::types::{Offset, TopicPartition};

use super::common::{unexpected, PartitionError};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct DeleteRecords;

impl Handler for DeleteRecords {
    type Request = DeleteRecordsRequest;

    /// v0..=2 (flexible from v2).
    fn layout(r: &mut Reader<'_>, _v: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.string()?; // name
            r.array(|r| {
                r.skip(4 + 8)?; // partition_index, offset
                r.tags()
            })?;
            r.tags()
        })?;
        r.skip(4) // timeout_ms
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DeleteRecordsRequest,
    ) -> Answer<DeleteRecordsResponse> {
        Answer::Reply(delete_records(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> DeleteRecordsRequest {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(super::common::sample_topic())
            .with_partitions(vec![DeleteRecordsPartition::default(); 2])])
    }
}

/// Every partition at once, answered in request order.
async fn delete_records<B: Broker>(broker: &B, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let view = broker.cluster();
    let mut jobs = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let tp = TopicPartition::new(topic.name.as_str(), p.partition_index);
            let job = match view.partition(&tp.topic, tp.partition) {
                // Only the cluster deletes from its internal topics (as Kafka).
                Some(_) if is_internal_topic(&tp.topic) => {
                    Err(PartitionError::Kafka(ResponseError::InvalidTopicException))
                }
                None => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                Some(_) => Ok(tokio::spawn(delete_one(broker.clone(), tp, p.offset))),
            };
            partitions.push((p.partition_index, job));
        }
        jobs.push((topic.name, partitions));
    }
    let mut topics = Vec::with_capacity(jobs.len());
    for (name, partitions) in jobs {
        let mut out = Vec::with_capacity(partitions.len());
        for (index, job) in partitions {
            let result = match job {
                Err(e) => Err(e),
                // A panic in the broker's request future surfaces here as a join error.
                Ok(task) => task.await.unwrap_or(Err(PartitionError::Kafka(
                    ResponseError::UnknownServerError,
                ))),
            };
            let r = DeleteRecordsPartitionResult::default().with_partition_index(index);
            out.push(match result {
                Ok(low) => r.with_low_watermark(low),
                Err(e) => r.with_low_watermark(-1).with_error_code(e.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(out),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// One partition: the core's answer (an uncommitted command at the produce timeout is
/// `Indeterminate`, REQUEST_TIMED_OUT on the wire: it may still commit).
async fn delete_one<B: Broker>(
    broker: B,
    tp: TopicPartition,
    offset: Offset,
) -> Result<Offset, PartitionError> {
    match broker.request(Request::DeleteRecords { tp, offset }).await {
        Response::DeleteRecords(r) => r.map_err(PartitionError::Core),
        other => Err(unexpected(&other)),
    }
}
