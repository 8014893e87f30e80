//! ElectLeaders: preferred elections. Each partition's leader hands leadership to the
//! partition's preferred replica (the first of its replicas) if that one is in sync; a
//! partition whose leader is on another broker gets a one-partition ElectLeaders forwarded to
//! that broker. The answer waits, up to the request's timeout, for this broker's view to show
//! the preferred replica leading. Unclean elections are refused: raft only ever elects a
//! replica holding every committed entry, so there is nothing unclean to allow.

use std::time::Duration;

use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{Request, Response};
use railyard_core::metadata::is_internal_topic;
use railyard_core::types::{NodeId, TopicPartition};

use super::common::client_error_code;
use super::topics::wait_for_view;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::forward::{forward, FORWARDED_PREFIX};
use crate::kafka::guard::{GuardError, Reader};

/// Kafka's `ElectionType`.
const PREFERRED: i8 = 0;

pub struct ElectLeaders;

impl Handler for ElectLeaders {
    type Request = ElectLeadersRequest;

    /// v0..=2 (election_type from v1, flexible from v2).
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        if v >= 1 {
            r.skip(1)?; // election_type
        }
        r.array(|r| {
            r.string()?; // topic
            r.array(|r| r.skip(4))?; // partitions
            r.tags()
        })?; // topic_partitions (nullable)
        r.skip(4) // timeout_ms
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: ElectLeadersRequest,
    ) -> Answer<ElectLeadersResponse> {
        Answer::Reply(elect_leaders(&ctx, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.replica_election_results {
            out.extend(t.partition_result.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> ElectLeadersRequest {
        let t = TopicPartitions::default()
            .with_topic(super::common::sample_topic())
            .with_partitions(vec![0, 1]);
        ElectLeadersRequest::default().with_topic_partitions(Some(vec![t.clone(), t]))
    }
}

/// ElectLeaders: one election per partition, answered per topic in request order.
async fn elect_leaders<B: Broker>(
    ctx: &Ctx<'_, B>,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let view = ctx.broker.cluster();
    let wait = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let asked: Vec<(TopicName, Vec<i32>)> = match &req.topic_partitions {
        Some(list) => list
            .iter()
            .map(|t| (t.topic.clone(), t.partitions.clone()))
            .collect(),
        None => view
            .topics()
            .iter()
            .filter(|t| !is_internal_topic(&t.name))
            .map(|t| {
                let name = TopicName(StrBytes::from_string(t.name.clone()));
                (name, t.partitions.iter().map(|p| p.partition).collect())
            })
            .collect(),
    };
    let election_type = if ctx.version >= 1 {
        req.election_type
    } else {
        PREFERRED
    };
    let mut results = Vec::with_capacity(asked.len());
    for (topic, partitions) in asked {
        let mut out = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let tp = TopicPartition::new(topic.as_str(), partition);
            let outcome = if election_type != PREFERRED {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "unclean elections are never needed: raft elects only a replica that \
                     holds every committed entry"
                        .to_string(),
                ))
            } else {
                elect_one(ctx, &view, &tp, wait).await
            };
            let r = PartitionResult::default().with_partition_id(partition);
            out.push(match outcome {
                Ok(()) => r.with_error_message(None),
                Err((code, message)) => r
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            });
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(topic)
                .with_partition_result(out),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// One preferred election: checked against the view, run by the leader, awaited in the view.
async fn elect_one<B: Broker>(
    ctx: &Ctx<'_, B>,
    view: &ClusterView,
    tp: &TopicPartition,
    wait: Duration,
) -> Result<(), (i16, String)> {
    let fail = |e: ResponseError, m: String| Err((e.code(), m));
    let Some(p) = view.partition(&tp.topic, tp.partition) else {
        return fail(
            ResponseError::UnknownTopicOrPartition,
            format!("{tp} is unknown"),
        );
    };
    let preferred: NodeId = p.replicas.first().copied().unwrap_or(0);
    if p.leader == Some(preferred) {
        return fail(
            ResponseError::ElectionNotNeeded,
            format!("broker {preferred}, the preferred replica, already leads {tp}"),
        );
    }
    let live = view.broker(preferred).is_some() && p.isr.contains(&preferred);
    let Some(leader) = p.leader.filter(|_| live) else {
        return fail(
            ResponseError::PreferredLeaderNotAvailable,
            format!("broker {preferred}, the preferred replica of {tp}, is not in sync"),
        );
    };
    if leader == ctx.broker.node_id() || ctx.client_id.starts_with(FORWARDED_PREFIX) {
        match ctx
            .broker
            .request(Request::ElectPreferredLeader { tp: tp.clone() })
            .await
        {
            Response::ElectPreferredLeader(Ok(())) => {}
            Response::ElectPreferredLeader(Err(e)) => {
                return Err((client_error_code(&e), e.to_string()))
            }
            _ => return fail(ResponseError::UnknownServerError, "unexpected reply".into()),
        }
    } else {
        forward_to_leader(ctx, view, leader, tp, wait).await?;
    }
    let led = |v: &ClusterView| {
        let p = v.partition(&tp.topic, tp.partition)?;
        (p.leader == Some(preferred)).then_some(())
    };
    wait_for_view(ctx.broker, wait, led).await.ok_or((
        ResponseError::RequestTimedOut.code(),
        format!("{tp}: the transfer to broker {preferred} did not finish in time"),
    ))
}

/// Asks `leader` to run the election of `tp` (a one-partition ElectLeaders, marked forwarded).
async fn forward_to_leader<B: Broker>(
    ctx: &Ctx<'_, B>,
    view: &ClusterView,
    leader: NodeId,
    tp: &TopicPartition,
    wait: Duration,
) -> Result<(), (i16, String)> {
    let unavailable = |m: String| (ResponseError::NotLeaderOrFollower.code(), m);
    let b = view
        .broker(leader)
        .ok_or_else(|| unavailable(format!("leader {leader} of {tp} is not listed")))?;
    let addr = format!("{}:{}", b.host, b.port)
        .parse()
        .map_err(|_| unavailable(format!("leader {leader} has no usable address")))?;
    let one = ElectLeadersRequest::default()
        .with_election_type(PREFERRED)
        .with_timeout_ms(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
            .with_partitions(vec![tp.partition])]));
    let client_id = format!("{FORWARDED_PREFIX}{}", ctx.client_id);
    let resp = forward(addr, &one, ctx.version.max(1), &client_id)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let r = resp
        .replica_election_results
        .first()
        .and_then(|t| t.partition_result.first())
        .ok_or_else(|| unavailable("the leader answered no partition".into()))?;
    if r.error_code != 0 {
        let message = r.error_message.as_deref().unwrap_or("").to_string();
        return Err((r.error_code, message));
    }
    Ok(())
}
