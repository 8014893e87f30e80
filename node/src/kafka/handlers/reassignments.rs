//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455), through the
//! controller ([`Request::AlterReassignments`], [`Request::ListReassignments`]). Like the
//! other controller APIs, a broker that is not the controller forwards them to it.
//!
//! A reassignment is answered once the controller has recorded it; the partition's leader then
//! moves the replicas (learners catch up, joint consensus, leadership moves off a leaving
//! replica), and ListPartitionReassignments shows it until it is done. Each partition gets its
//! own error: INVALID_REPLICA_ASSIGNMENT for an empty list, a repeated broker, or a broker that
//! is unknown or fenced; NO_REASSIGNMENT_IN_PROGRESS for a cancel (null replicas) of a
//! partition that is not moving; UNKNOWN_TOPIC_OR_PARTITION for a partition that does not
//! exist.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{ClientError, Request, Response};
use railyard_core::types::{NodeId, TopicPartition};

use super::topics::AdminError;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};

pub struct AlterPartitionReassignments;

impl Handler for AlterPartitionReassignments {
    type Request = AlterPartitionReassignmentsRequest;

    /// v0 (flexible).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.skip(4)?; // timeout_ms
        r.array(|r| {
            r.string()?; // name
            r.array(|r| {
                r.skip(4)?; // partition_index
                r.array(|r| r.skip(4))?; // replicas (nullable)
                r.tags()
            })?;
            r.tags()
        })
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: AlterPartitionReassignmentsRequest,
    ) -> Answer<AlterPartitionReassignmentsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        Answer::Reply(alter(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.responses {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> AlterPartitionReassignmentsRequest {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        let p = ReassignablePartition::default()
            .with_partition_index(0)
            .with_replicas(Some(vec![BrokerId(1), BrokerId(2)]));
        let cancel = ReassignablePartition::default().with_partition_index(1);
        let t = ReassignableTopic::default()
            .with_name(super::common::sample_topic())
            .with_partitions(vec![p, cancel]);
        AlterPartitionReassignmentsRequest::default().with_topics(vec![t.clone(), t])
    }
}

/// One core request for every partition of the request; answered per partition, in order.
async fn alter<B: Broker>(
    broker: &B,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut moves = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.to_string(), p.partition_index);
            let target = p.replicas.as_ref().map(|r| broker_ids(r));
            moves.push((tp, target));
        }
    }
    let outcome = match broker.request(Request::AlterReassignments { moves }).await {
        Response::AlterReassignments(Ok(results)) => Ok(results),
        Response::AlterReassignments(Err(e)) => Err(AdminError::core(&e)),
        _ => Err(AdminError::unexpected()),
    };
    let resp = AlterPartitionReassignmentsResponse::default();
    let mut results = match outcome {
        Ok(results) => results.into_iter(),
        Err(e) => {
            return resp
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message)))
        }
    };
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = results
                        .next()
                        .unwrap_or(Err(ClientError::InvalidRequest("no result".into())));
                    partition_result(p.partition_index, r)
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    resp.with_responses(responses)
}

fn partition_result(
    partition: i32,
    result: Result<(), ClientError>,
) -> ReassignablePartitionResponse {
    let out = ReassignablePartitionResponse::default().with_partition_index(partition);
    match result {
        Ok(()) => out.with_error_message(None),
        Err(e) => {
            let e = AdminError::core(&e);
            out.with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message)))
        }
    }
}

/// Broker ids as the core names them; a negative id is no broker (0 is refused by the core).
fn broker_ids(ids: &[BrokerId]) -> Vec<NodeId> {
    ids.iter()
        .map(|b| NodeId::try_from(b.0).unwrap_or(0))
        .collect()
}

fn kafka_ids(ids: &[NodeId]) -> Vec<BrokerId> {
    ids.iter()
        .map(|b| BrokerId(i32::try_from(*b).unwrap_or(-1)))
        .collect()
}

pub struct ListPartitionReassignments;

impl Handler for ListPartitionReassignments {
    type Request = ListPartitionReassignmentsRequest;

    /// v0 (flexible).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.skip(4)?; // timeout_ms
        r.array(|r| {
            r.string()?; // name
            r.array(|r| r.skip(4))?; // partition_indexes
            r.tags()
        }) // topics (nullable)
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: ListPartitionReassignmentsRequest,
    ) -> Answer<ListPartitionReassignmentsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        Answer::Reply(list(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> ListPartitionReassignmentsRequest {
        use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
        let t = ListPartitionReassignmentsTopics::default()
            .with_name(super::common::sample_topic())
            .with_partition_indexes(vec![0, 1]);
        ListPartitionReassignmentsRequest::default().with_topics(Some(vec![t.clone(), t]))
    }
}

/// The moves in flight, grouped by topic in name order.
async fn list<B: Broker>(
    broker: &B,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let partitions = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| TopicPartition::new(t.name.to_string(), *p))
            })
            .collect()
    });
    let resp = ListPartitionReassignmentsResponse::default();
    let list = match broker
        .request(Request::ListReassignments { partitions })
        .await
    {
        Response::ListReassignments(Ok(list)) => list,
        Response::ListReassignments(Err(e)) => {
            let e = AdminError::core(&e);
            return resp
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message)));
        }
        _ => {
            return resp.with_error_code(ResponseError::UnknownServerError.code());
        }
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for s in list {
        let p = OngoingPartitionReassignment::default()
            .with_partition_index(s.tp.partition)
            .with_replicas(kafka_ids(&s.replicas))
            .with_adding_replicas(kafka_ids(&s.adding))
            .with_removing_replicas(kafka_ids(&s.removing));
        match topics.last_mut() {
            Some(t) if t.name.as_str() == s.tp.topic => t.partitions.push(p),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(s.tp.topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    resp.with_topics(topics)
}
