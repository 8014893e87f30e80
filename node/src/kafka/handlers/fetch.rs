//! Fetch: every partition of a request that is in the cluster view goes to the core in one
//! [`Request::FetchMany`] per pass; the others are answered UNKNOWN_TOPIC_OR_PARTITION here.
//!
//! A fetch with fewer than `min_bytes` available long-polls: it reads again when the broker
//! reports new commits (or every `fetch_poll_interval_ms`) until `max_wait_ms` passes. The
//! request's `max_bytes` is shared by its partitions in request order, and each partition's
//! share is only known once the earlier ones have answered, so every partition asks the core
//! for up to its own `partition_max_bytes` (capped at `max_bytes`) and the replies are trimmed
//! to the budget here, whole batches only, as Kafka does. We keep no fetch sessions (KIP-227).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch as FetchLeader, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use railyard_core::api::{FetchPartition as CoreFetch, FetchReply, Request, Response};
use railyard_core::types::TopicPartition;

use super::common::{broker_id, leader_hint, unexpected, PartitionError};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::guard::{GuardError, Reader};
use crate::kafka::KafkaConfig;

pub struct Fetch;

impl Handler for Fetch {
    type Request = FetchRequest;

    /// v4..=12, as advertised (replica_id as a field, topic names).
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
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

    async fn handle<B: Broker>(ctx: Ctx<'_, B>, request: FetchRequest) -> Answer<FetchResponse> {
        Answer::Reply(fetch(ctx.broker, ctx.config, &request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.responses {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(v: i16) -> FetchRequest {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
        use kafka_protocol::protocol::StrBytes;
        let topic = super::common::sample_topic;
        FetchRequest::default()
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![FetchPartition::default(); 2])])
            .with_forgotten_topics_data(if v >= 7 {
                vec![ForgottenTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![1, 2])]
            } else {
                vec![]
            })
            .with_rack_id(StrBytes::from_static_str(if v >= 11 { "r" } else { "" }))
    }
}

/// Fetch with Kafka's long poll: if fewer than `min_bytes` are available, read again when the
/// broker reports new commits (or every `fetch_poll_interval_ms` at the latest) until
/// `max_wait_ms` (capped by the config) passes, then answer what there is. Any partition error answers at once, as Kafka does.
pub async fn fetch<B: Broker>(
    broker: &B,
    config: &KafkaConfig,
    req: &FetchRequest,
    version: i16,
) -> FetchResponse {
    // We keep no fetch sessions (KIP-227): session id 0 in every response tells the client to
    // keep sending full requests. A client that names a session must have got it elsewhere.
    if req.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    if req.session_epoch != 0 && req.session_epoch != -1 {
        return FetchResponse::default()
            .with_error_code(ResponseError::InvalidFetchSessionEpoch.code());
    }
    let wait_ms = (req.max_wait_ms.max(0) as u64).min(config.fetch_max_wait_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = req.min_bytes.max(0) as u64;
    loop {
        let pass = fetch_once(broker, req, version).await;
        let now = tokio::time::Instant::now();
        if pass.bytes >= min_bytes || pass.any_error || now >= deadline {
            return pass.response;
        }
        let interval = Duration::from_millis(config.fetch_poll_interval_ms.max(1));
        tokio::select! {
            _ = broker.data_changed() => {}
            _ = tokio::time::sleep(interval.min(deadline - now)) => {}
        }
    }
}

/// One pass over every partition of a fetch.
struct FetchPass {
    response: FetchResponse,
    bytes: u64,
    any_error: bool,
}

/// Reads every partition once: one core request for all those in the view.
async fn fetch_once<B: Broker>(broker: &B, req: &FetchRequest, version: i16) -> FetchPass {
    let view = broker.cluster();
    let mut replies = fetch_many(broker, core_partitions(&view, req))
        .await
        .into_iter();
    let mut budget = Budget {
        remaining: req.max_bytes.max(0) as u64,
        used: 0,
    };
    let mut any_error = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            // The replies come in the order of `core_partitions`, which skipped exactly the
            // partitions missing from this same view.
            let result = match view.partition(&topic.topic, p.partition) {
                None => Err(PartitionError::Kafka(
                    ResponseError::UnknownTopicOrPartition,
                )),
                Some(_) => replies.next().unwrap_or(Err(PartitionError::Kafka(
                    ResponseError::UnknownServerError,
                ))),
            };
            any_error |= result.is_err();
            let out = match result {
                Ok(reply) => budget.take(reply, p.partition_max_bytes),
                Err(e) => failed_partition(&view, &topic.topic, p.partition, &e, version),
            };
            partitions.push(out.with_partition_index(p.partition));
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    FetchPass {
        response: FetchResponse::default().with_responses(responses),
        bytes: budget.used,
        any_error,
    }
}

/// What is left of a fetch's `max_bytes`, shared by its partitions in request order.
struct Budget {
    remaining: u64,
    /// Record bytes in the response so far.
    used: u64,
}

impl Budget {
    /// One partition's records, within its `partition_max_bytes` and what is left.
    fn take(&mut self, reply: FetchReply, partition_max_bytes: i32) -> PartitionData {
        let limit = (partition_max_bytes.max(0) as u64).min(self.remaining);
        // The core returns a whole first batch even past `max_bytes` so a consumer always
        // progresses (KIP-74); Kafka allows that only for the first partition with data, so
        // later ones keep to the budget.
        let records = concat_within(reply.batches, limit, self.used == 0);
        self.used += records.len() as u64;
        self.remaining = self.remaining.saturating_sub(records.len() as u64);
        PartitionData::default()
            .with_high_watermark(reply.high_watermark)
            .with_last_stable_offset(reply.high_watermark)
            .with_log_start_offset(reply.log_start_offset)
            .with_records(Some(records))
    }
}

/// A failed partition: the error, invalid offsets, and from v12 where its leader is.
fn failed_partition(
    view: &ClusterView,
    topic: &str,
    partition: i32,
    e: &PartitionError,
    version: i16,
) -> PartitionData {
    let mut out = PartitionData::default()
        .with_error_code(e.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1);
    if let (true, Some((leader, epoch))) = (version >= 12, leader_hint(view, topic, partition, e)) {
        out.current_leader = FetchLeader::default()
            .with_leader_id(broker_id(leader))
            .with_leader_epoch(epoch);
    }
    out
}

/// The partitions of `req` that are in the view, in request order, each asking for up to its
/// own `partition_max_bytes` capped at the request's `max_bytes`.
fn core_partitions(view: &ClusterView, req: &FetchRequest) -> Vec<CoreFetch> {
    let max_bytes = req.max_bytes.max(0) as u64;
    let mut out = Vec::new();
    for topic in &req.topics {
        for p in &topic.partitions {
            if view.partition(&topic.topic, p.partition).is_none() {
                continue;
            }
            out.push(CoreFetch {
                tp: TopicPartition::new(topic.topic.as_str(), p.partition),
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(0) as u64).min(max_bytes),
            });
        }
    }
    out
}

/// Fetches `partitions` in one core request: one result each, in their order.
async fn fetch_many<B: Broker>(
    broker: &B,
    partitions: Vec<CoreFetch>,
) -> Vec<Result<FetchReply, PartitionError>> {
    let n = partitions.len();
    if n == 0 {
        return Vec::new();
    }
    match broker.request(Request::FetchMany { partitions }).await {
        Response::FetchMany(replies) if replies.len() == n => replies
            .into_iter()
            .map(|r| r.map_err(PartitionError::Core))
            .collect(),
        // Another kind of reply, or one result short or over: a runtime bug.
        other => (0..n).map(|_| Err(unexpected(&other))).collect(),
    }
}

/// Concatenates whole batches up to `limit` bytes; the first batch may exceed it when
/// `allow_oversized_first`. A single batch is passed through without a copy.
fn concat_within(batches: Vec<Bytes>, limit: u64, allow_oversized_first: bool) -> Bytes {
    let mut kept = 0usize;
    let mut total = 0u64;
    for b in &batches {
        let next = total + b.len() as u64;
        if next > limit && !(kept == 0 && allow_oversized_first) {
            break;
        }
        total = next;
        kept += 1;
    }
    match kept {
        0 => Bytes::new(),
        1 => batches[0].clone(),
        _ => {
            let mut out = BytesMut::with_capacity(total as usize);
            for b in &batches[..kept] {
                out.extend_from_slice(b);
            }
            out.freeze()
        }
    }
}
