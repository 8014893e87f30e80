//! Produce: each partition's record set is split into v2 batches that go to the core one at a
//! time, in order; the partitions of one request run concurrently, each on its own task, so a
//! request costs one commit round. Internal topics and partitions missing from the cluster view
//! are refused here, without a trip to the core.
//!
//! acks=0 is answered with nothing, or, if a partition failed, by closing the connection.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch as ProduceLeader, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError;
use railyard_core::api::{Acks, Produced, Request, Response};
use railyard_core::batch;
use railyard_core::batch::Compression;
use railyard_core::metadata::is_internal_topic;
use railyard_core::topic_config::{BrokerDefaults, TopicSettings};
use railyard_core::types::{NodeId, TopicPartition};
use tokio::task::JoinHandle;

use super::common::{
    broker_id, leader_hint, may_auto_create, str_bytes, unexpected, PartitionError,
};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::codec::split_batches;
use crate::kafka::guard::{GuardError, Reader};
use crate::kafka::recompress::recompress;
use crate::kafka::ConnectionError;

pub struct Produce;

impl Handler for Produce {
    type Request = ProduceRequest;

    /// v3+ (topic names; v13 topic ids are not advertised).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
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

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: ProduceRequest,
    ) -> Answer<ProduceResponse> {
        // The broker-level defaults include the dynamic ones (usually none: empty maps).
        let view = ctx.broker.cluster();
        let defaults = view
            .broker_layers(ctx.broker.node_id(), &ctx.config.topic_defaults)
            .merged();
        produce(ctx.broker, &defaults, request, ctx.version).await
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        for t in &response.responses {
            out.extend(t.partition_responses.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> ProduceRequest {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(super::common::sample_topic())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_records(Some(Bytes::from_static(b"records"))),
                    PartitionProduceData::default().with_index(1),
                ])])
    }
}

/// Produce: each partition's record set is split into v2 batches that go to the core one at a
/// time, in order; partitions run concurrently so a request costs one commit round.
pub async fn produce<B: Broker>(
    broker: &B,
    defaults: &BrokerDefaults,
    req: ProduceRequest,
    version: i16,
) -> Answer<ProduceResponse> {
    // acks=0 is sent to the core as acks=1: the core never answers acks=0 (so the broker future
    // would never finish), and waiting for the leader's append keeps one connection's writes in
    // order. The client is still sent nothing.
    let acks = match req.acks {
        0 | 1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let view = broker.cluster();
    let mut pending: Vec<(TopicName, Vec<(i32, Pending)>)> = Vec::new();
    for topic in req.topic_data {
        if may_auto_create(&view, topic.name.as_str()) {
            // Kafka creates on metadata requests; a client that produces blind (no metadata
            // first) gets UNKNOWN_TOPIC_OR_PARTITION, and the topic on its retry.
            broker.auto_create_topic(topic.name.to_string()).await;
        }
        // compression.type other than `producer`: the codec (and level) this leader
        // recompresses to.
        let target = view
            .topic(topic.name.as_str())
            .map(|t| TopicSettings::resolve(defaults, &t.configs).compression)
            .and_then(|c| c.target().map(|codec| (codec, c.level())));
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            let job = match acks {
                None => Pending::Done(Err(PartitionError::Kafka(
                    ResponseError::InvalidRequiredAcks,
                ))),
                Some(acks) => match produce_batches(&view, &topic.name, p.index, p.records) {
                    Err(e) => Pending::Done(Err(e)),
                    Ok((tp, batches)) => Pending::Running(tokio::spawn(produce_partition(
                        broker.clone(),
                        tp,
                        acks,
                        batches,
                        target,
                    ))),
                },
            };
            partitions.push((p.index, job));
        }
        pending.push((topic.name, partitions));
    }

    let mut failed = false;
    let mut node_endpoints: Vec<NodeEndpoint> = Vec::new();
    let mut responses = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut out = Vec::with_capacity(partitions.len());
        for (index, job) in partitions {
            let result = match job {
                Pending::Done(r) => r,
                // A panic in the broker's request future surfaces here as a join error.
                Pending::Running(handle) => handle.await.unwrap_or(Err(PartitionError::Kafka(
                    ResponseError::UnknownServerError,
                ))),
            };
            let mut part = PartitionProduceResponse::default().with_index(index);
            match result {
                Ok(produced) => {
                    part.base_offset = produced.base_offset;
                    // -1 (Kafka's "none") under CreateTime.
                    part.log_append_time_ms = produced.log_append_time_ms.unwrap_or(-1);
                }
                Err(e) => {
                    failed = true;
                    part.error_code = e.code();
                    part.base_offset = -1;
                    // current_leader and node_endpoints are tagged fields of v10+.
                    if let (true, Some((leader, epoch))) =
                        (version >= 10, leader_hint(&view, &name, index, &e))
                    {
                        part.current_leader = ProduceLeader::default()
                            .with_leader_id(broker_id(leader))
                            .with_leader_epoch(epoch);
                        add_endpoint(&view, leader, &mut node_endpoints);
                    }
                }
            }
            out.push(part);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(out),
        );
    }
    match (req.acks, failed) {
        (0, false) => Answer::NoReply,
        // The client reads no response, so Kafka closes the connection to make it notice
        // and refresh its metadata.
        (0, true) => Answer::Close(ConnectionError::AcksZeroProduceFailed),
        _ => Answer::Reply(
            ProduceResponse::default()
                .with_responses(responses)
                .with_node_endpoints(node_endpoints),
        ),
    }
}

/// A partition's produce, either already decided or running on its own task.
enum Pending {
    Done(Result<Produced, PartitionError>),
    Running(JoinHandle<Result<Produced, PartitionError>>),
}

/// Checks a produce partition before the core sees it: not an internal topic, known partition,
/// records present and well framed. Several batches are all CRC-checked first so that a bad one
/// later in the set stores nothing (one batch is checked by the core itself).
fn produce_batches(
    view: &ClusterView,
    topic: &TopicName,
    partition: i32,
    records: Option<Bytes>,
) -> Result<(TopicPartition, Vec<Bytes>), PartitionError> {
    if is_internal_topic(topic) {
        // Only the cluster writes its internal topics; the core refuses them too, but an
        // internal topic may be missing from the view and would be answered "unknown" here.
        return Err(PartitionError::Kafka(ResponseError::InvalidTopicException));
    }
    if view.partition(topic, partition).is_none() {
        return Err(PartitionError::Kafka(
            ResponseError::UnknownTopicOrPartition,
        ));
    }
    let corrupt = || PartitionError::Kafka(ResponseError::CorruptMessage);
    let records = records.ok_or_else(corrupt)?;
    let batches = split_batches(&records).map_err(|_| corrupt())?;
    if batches.len() > 1 && batches.iter().any(|b| batch::validate(b).is_err()) {
        return Err(corrupt());
    }
    Ok((TopicPartition::new(topic.as_str(), partition), batches))
}

/// Produces `batches` to one partition in order, stopping at the first failure. Answers the
/// first batch's base offset and stamp. Not atomic: if a later batch fails, the earlier ones stay.
async fn produce_partition<B: Broker>(
    broker: B,
    tp: TopicPartition,
    acks: Acks,
    batches: Vec<Bytes>,
    target: Option<(Compression, Option<i32>)>,
) -> Result<Produced, PartitionError> {
    let mut first = None;
    for batch in batches {
        let batch = match target {
            Some((codec, level)) => recompress(batch, codec, level)
                .map_err(|_| PartitionError::Kafka(ResponseError::CorruptMessage))?,
            None => batch,
        };
        let request = Request::Produce {
            tp: tp.clone(),
            acks,
            batch,
        };
        match broker.request(request).await {
            Response::Produce(Ok(produced)) => {
                first.get_or_insert(produced);
            }
            Response::Produce(Err(e)) => return Err(PartitionError::Core(e)),
            other => return Err(unexpected(&other)),
        }
    }
    // `split_batches` never returns an empty list, so `first` is set; if it were not, the
    // client gets an error rather than a made-up offset.
    first.ok_or(PartitionError::Kafka(ResponseError::UnknownServerError))
}

fn add_endpoint(view: &ClusterView, id: NodeId, endpoints: &mut Vec<NodeEndpoint>) {
    if endpoints.iter().any(|e| e.node_id == broker_id(id)) {
        return;
    }
    if let Some(b) = view.broker(id) {
        endpoints.push(
            NodeEndpoint::default()
                .with_node_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes)),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;
    use railyard_core::types::{CONSUMER_OFFSETS_TOPIC, METADATA_TOPIC};

    use super::*;
    use crate::kafka::handlers::common::{sample_view, ViewOnly};

    fn request(topic: &str) -> ProduceRequest {
        let data = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(Bytes::from_static(b"whatever")));
        ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![data])])
    }

    #[tokio::test]
    async fn test_produce_to_an_internal_topic_is_refused_whether_or_not_the_view_lists_it() {
        // Only the cluster writes its internal topics: INVALID_TOPIC_EXCEPTION with no base
        // offset and no core request, for one the view lists (which a real node's view never
        // does) and one it does not.
        let view = Arc::new(sample_view());
        assert!(view.topic(CONSUMER_OFFSETS_TOPIC).is_some());
        assert!(view.topic(METADATA_TOPIC).is_none());
        let broker = ViewOnly(view);
        let invalid = ResponseError::InvalidTopicException.code();
        for topic in [CONSUMER_OFFSETS_TOPIC, METADATA_TOPIC] {
            for version in [3, 12] {
                let Answer::Reply(resp) =
                    produce(&broker, &Default::default(), request(topic), version).await
                else {
                    panic!("{topic} v{version}: no reply");
                };
                let part = &resp.responses[0].partition_responses[0];
                let got = (part.error_code, part.base_offset);
                assert_eq!(got, (invalid, -1), "{topic} v{version}");
            }
        }
    }
}
