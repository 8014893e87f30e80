//! FindCoordinator: which broker coordinates a consumer group.
//!
//! Answered from the cluster view alone, as Kafka computes it: the group's coordinator is the
//! leader of partition `coordinator_partition(group, n)` of `__consumer_offsets`, `n` being
//! the topic's partition count in the view. While the topic, that partition's leader or the
//! leader's broker is missing from the view the answer is COORDINATOR_NOT_AVAILABLE, which
//! clients retry. Transactions are not implemented: a transaction coordinator (key type 1) is
//! INVALID_REQUEST with a message saying so, rather than a retriable error a transactional
//! client would retry forever. v0-3 ask for one key, v4+ for a batch with one result each.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::groups::coordinator_partition;
use railyard_core::types::CONSUMER_OFFSETS_TOPIC;

use super::common::{broker_id, str_bytes};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::guard::{GuardError, Reader};

/// Kafka's key type of a consumer group.
pub const KEY_TYPE_GROUP: i8 = 0;
/// Kafka's key type of a transactional id.
pub const KEY_TYPE_TRANSACTION: i8 = 1;

pub struct FindCoordinator;

impl Handler for FindCoordinator {
    type Request = FindCoordinatorRequest;

    /// v0..=6: `key` (v0-3), `key_type` (v1+), `coordinator_keys` (v4+).
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        if v <= 3 {
            r.string()?; // key
        }
        if v >= 1 {
            r.skip(1)?; // key_type
        }
        if v >= 4 {
            r.array(|r| r.string())?; // coordinator_keys
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: FindCoordinatorRequest,
    ) -> Answer<FindCoordinatorResponse> {
        Answer::Reply(find_coordinator(
            &ctx.broker.cluster(),
            &request,
            ctx.version,
        ))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        out.extend(response.coordinators.iter().map(|c| c.error_code));
    }

    #[cfg(test)]
    fn sample(v: i16) -> FindCoordinatorRequest {
        let r = FindCoordinatorRequest::default();
        let r = if v >= 1 { r.with_key_type(0) } else { r };
        if v >= 4 {
            r.with_coordinator_keys(vec![str_bytes("g-1"), str_bytes("g-2")])
        } else {
            r.with_key(str_bytes("g-1"))
        }
    }
}

/// Where a key's coordinator is: (node id, host, port).
type Located = (BrokerId, String, i32);

/// Why a key has no coordinator to name: a Kafka error and its message.
type NotFound = (ResponseError, &'static str);

/// FindCoordinator, every key answered from `view`.
pub fn find_coordinator(
    view: &ClusterView,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| coordinator(key, locate(view, req.key_type, key)))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let out = FindCoordinatorResponse::default();
    match locate(view, req.key_type, &req.key) {
        Ok((node_id, host, port)) => out
            .with_node_id(node_id)
            .with_host(StrBytes::from_string(host))
            .with_port(port)
            .with_error_message(None),
        Err((e, message)) => {
            let out = out
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            // v0 has no error message.
            if version >= 1 {
                out.with_error_message(Some(str_bytes(message)))
            } else {
                out
            }
        }
    }
}

/// One key's answer in the v4+ batch.
fn coordinator(key: &StrBytes, located: Result<Located, NotFound>) -> Coordinator {
    let out = Coordinator::default().with_key(key.clone());
    match located {
        Ok((node_id, host, port)) => out
            .with_node_id(node_id)
            .with_host(StrBytes::from_string(host))
            .with_port(port)
            .with_error_message(None),
        Err((e, message)) => out
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(message)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}

/// The coordinator of one key, from the view.
fn locate(view: &ClusterView, key_type: i8, key: &str) -> Result<Located, NotFound> {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => {
            return Err((
                ResponseError::InvalidRequest,
                "transactions are not supported by this broker",
            ))
        }
        _ => {
            return Err((
                ResponseError::InvalidRequest,
                "unsupported coordinator key type",
            ))
        }
    }
    if key.is_empty() {
        return Err((ResponseError::InvalidRequest, "the group id is empty"));
    }
    let unavailable = (
        ResponseError::CoordinatorNotAvailable,
        "the group's coordinator is not available yet",
    );
    let topic = view.topic(CONSUMER_OFFSETS_TOPIC).ok_or(unavailable)?;
    let partitions = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
    if partitions == 0 {
        return Err(unavailable);
    }
    let partition = coordinator_partition(key, partitions);
    let leader = view
        .partition(CONSUMER_OFFSETS_TOPIC, partition)
        .and_then(|p| p.leader)
        .and_then(|id| view.broker(id))
        .ok_or(unavailable)?;
    Ok((
        broker_id(leader.id),
        leader.host.clone(),
        i32::from(leader.port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerInfo, PartitionView, TopicView};
    use crate::kafka::handlers::common::{assert_encodes, sample_view};

    fn request(v: i16, key_type: i8, keys: &[&str]) -> FindCoordinatorRequest {
        let r = FindCoordinatorRequest::default();
        let r = if v >= 1 { r.with_key_type(key_type) } else { r };
        if v >= 4 {
            r.with_coordinator_keys(keys.iter().map(|k| str_bytes(k)).collect())
        } else {
            r.with_key(str_bytes(keys[0]))
        }
    }

    /// The view with `__consumer_offsets` replaced by `partitions` (or removed for `None`).
    fn view_with_offsets(partitions: Option<Vec<PartitionView>>) -> ClusterView {
        let base = sample_view();
        let mut topics: Vec<TopicView> = base
            .topics()
            .iter()
            .filter(|t| t.name != CONSUMER_OFFSETS_TOPIC)
            .cloned()
            .collect();
        if let Some(partitions) = partitions {
            topics.push(TopicView {
                name: CONSUMER_OFFSETS_TOPIC.into(),
                id: [0xEE; 16],
                partitions,
                configs: Default::default(),
            });
        }
        let brokers: Vec<BrokerInfo> = base.brokers().to_vec();
        ClusterView::new("c".into(), Some(1), brokers, topics)
    }

    fn offsets_partition(p: i32, leader: Option<railyard_core::types::NodeId>) -> PartitionView {
        PartitionView {
            partition: p,
            leader,
            leader_epoch: 1,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        }
    }

    #[test]
    fn test_every_version_names_the_leader_of_the_groups_partition() {
        // The sample view's one `__consumer_offsets` partition is led by broker 1.
        let view = sample_view();
        for v in 0..=6 {
            let r = find_coordinator(&view, &request(v, 0, &["g-1", "g-2"]), v);
            assert_encodes(&r, v);
            if v >= 4 {
                assert_eq!(r.coordinators.len(), 2);
                for (c, key) in r.coordinators.iter().zip(["g-1", "g-2"]) {
                    assert_eq!((c.error_code, c.key.as_str()), (0, key), "v{v}");
                    assert_eq!(
                        (c.node_id.0, c.host.as_str(), c.port),
                        (1, "127.0.0.1", 9092)
                    );
                }
            } else {
                assert_eq!(r.error_code, 0, "v{v}");
                assert_eq!(
                    (r.node_id.0, r.host.as_str(), r.port),
                    (1, "127.0.0.1", 9092)
                );
            }
        }
    }

    #[test]
    fn test_the_partition_is_kafkas_hash_of_the_group() {
        // "test-group" hashes to partition 12 of 50, led here by broker 2.
        let partitions = (0..50)
            .map(|p| offsets_partition(p, Some(if p == 12 { 2 } else { 1 })))
            .collect();
        let view = view_with_offsets(Some(partitions));
        let r = find_coordinator(&view, &request(3, 0, &["test-group"]), 3);
        assert_eq!((r.error_code, r.node_id.0, r.port), (0, 2, 9093));
        assert_eq!(r.host.as_str(), "broker-2");
    }

    #[test]
    fn test_a_missing_topic_leader_or_broker_is_coordinator_not_available() {
        // Each gap in the view is a retriable error, in both the single and the batched form.
        let views = [
            view_with_offsets(None),
            view_with_offsets(Some(Vec::new())),
            view_with_offsets(Some(vec![offsets_partition(0, None)])),
            view_with_offsets(Some(vec![offsets_partition(0, Some(3))])), // 3 is fenced
        ];
        let code = ResponseError::CoordinatorNotAvailable.code();
        for view in &views {
            let r = find_coordinator(view, &request(2, 0, &["g"]), 2);
            assert_eq!((r.error_code, r.node_id.0, r.port), (code, -1, -1));
            assert_encodes(&r, 2);
            let r = find_coordinator(view, &request(4, 0, &["g"]), 4);
            assert_eq!(r.coordinators[0].error_code, code);
            assert_encodes(&r, 4);
        }
    }

    #[test]
    fn test_bad_keys_are_invalid_request() {
        // Empty group ids, transactional ids and unknown key types; v0 carries no message.
        let view = sample_view();
        let invalid = ResponseError::InvalidRequest.code();
        for v in 0..=3 {
            let r = find_coordinator(&view, &request(v, 0, &[""]), v);
            assert_eq!(r.error_code, invalid, "v{v}");
            assert_encodes(&r, v);
        }
        let r = find_coordinator(&view, &request(1, 1, &["txn"]), 1);
        assert_eq!(r.error_code, invalid);
        let message = r.error_message.expect("a message");
        assert!(
            message.contains("transactions are not supported"),
            "{message}"
        );
        let r = find_coordinator(&view, &request(6, 2, &["share"]), 6);
        assert_eq!(r.coordinators[0].error_code, invalid);
        let r = find_coordinator(&view, &request(4, 0, &["ok", "", "ok2"]), 4);
        let codes: Vec<i16> = r.coordinators.iter().map(|c| c.error_code).collect();
        assert_eq!(codes, vec![0, invalid, 0]);
        assert_encodes(&r, 4);
    }
}
