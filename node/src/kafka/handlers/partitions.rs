//! CreatePartitions: grows topics through the controller ([`Request::CreatePartitions`]). Like
//! CreateTopics, each topic runs on its own task, only the controller accepts (the others
//! answer NOT_CONTROLLER), and with a positive `timeout_ms` the answer waits until this
//! broker's view shows every new partition with a leader, or is REQUEST_TIMED_OUT.

use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{Request, Response};
use railyard_core::types::NodeId;

use super::topics::{wait_for_view, AdminError, Duplicates};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};

pub struct CreatePartitions;

impl Handler for CreatePartitions {
    type Request = CreatePartitionsRequest;

    /// v0..=3 (flexible from v2).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.string()?; // name
            r.skip(4)?; // count
            r.array(|r| {
                r.array(|r| r.skip(4))?; // broker_ids
                r.tags()
            })?; // assignments (nullable)
            r.tags()
        })?;
        r.skip(4 + 1) // timeout_ms, validate_only
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: CreatePartitionsRequest,
    ) -> Answer<CreatePartitionsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        Answer::Reply(create_partitions(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.results.iter().map(|t| t.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> CreatePartitionsRequest {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
        use kafka_protocol::messages::BrokerId;
        let assignment =
            CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
        CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(super::common::sample_topic())
                .with_count(3)
                .with_assignments(Some(vec![assignment.clone(), assignment])),
            CreatePartitionsTopic::default()
                .with_name(super::common::sample_topic())
                .with_count(2),
        ])
    }
}

/// CreatePartitions: one core request per topic, answered in request order.
pub async fn create_partitions<B: Broker>(
    broker: &B,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let wait = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let mut dups = Duplicates::new(req.topics.iter().map(|t| t.name.to_string()));
    let mut jobs = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.name.clone();
        let job = match dups.check(topic.name.as_str()) {
            Some(false) => continue,
            Some(true) => Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "duplicate topic name",
            )),
            None => match core_request(&topic, req.validate_only) {
                Ok(request) => Ok(tokio::spawn(grow_one(broker.clone(), request, wait))),
                Err(e) => Err(e),
            },
        };
        jobs.push((name, job));
    }
    let mut results = Vec::with_capacity(jobs.len());
    for (name, job) in jobs {
        let outcome = match job {
            Ok(handle) => handle
                .await
                .unwrap_or_else(|_| Err(AdminError::unexpected())),
            Err(e) => Err(e),
        };
        let out = CreatePartitionsTopicResult::default().with_name(name);
        results.push(match outcome {
            Ok(()) => out.with_error_message(None),
            Err(e) => out
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// The core request for one topic, or why the listener refuses it outright.
fn core_request(topic: &CreatePartitionsTopic, validate_only: bool) -> Result<Request, AdminError> {
    let mut assignments = Vec::new();
    for a in topic.assignments.iter().flatten() {
        let ids: Result<Vec<NodeId>, AdminError> = a
            .broker_ids
            .iter()
            .map(|b| {
                u64::try_from(b.0).ok().filter(|id| *id > 0).ok_or_else(|| {
                    AdminError::kafka(
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker id {} is not valid", b.0),
                    )
                })
            })
            .collect();
        assignments.push(ids?);
    }
    Ok(Request::CreatePartitions {
        topic: topic.name.to_string(),
        count: i64::from(topic.count),
        assignments,
        validate_only,
    })
}

/// Runs one topic's growth and, if it happened and `wait` is positive, waits for every
/// partition to show a leader in this broker's view.
async fn grow_one<B: Broker>(
    broker: B,
    request: Request,
    wait: Duration,
) -> Result<(), AdminError> {
    let Request::CreatePartitions {
        topic,
        count,
        validate_only,
        ..
    } = request.clone()
    else {
        return Err(AdminError::unexpected());
    };
    match broker.request(request).await {
        Response::CreatePartitions(Ok(())) => {}
        Response::CreatePartitions(Err(e)) => return Err(AdminError::core(&e)),
        _ => return Err(AdminError::unexpected()),
    }
    if validate_only || wait.is_zero() {
        return Ok(());
    }
    let led = |v: &ClusterView| {
        let t = v.topic(&topic)?;
        let all =
            t.partitions.len() as i64 == count && t.partitions.iter().all(|p| p.leader.is_some());
        all.then_some(())
    };
    wait_for_view(&broker, wait, led).await.ok_or_else(|| {
        AdminError::kafka(
            ResponseError::RequestTimedOut,
            format!("{topic} grew to {count} partitions, but not every one had a leader in time"),
        )
    })
}
