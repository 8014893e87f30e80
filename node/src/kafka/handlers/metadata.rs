//! Metadata and DescribeCluster: brokers, cluster id and controller, and (Metadata) the
//! requested topics with every partition's leader, epoch, replicas and in-sync replicas, all from
//! the broker's cluster view. Metadata also asks for the auto-creation of missing topics when
//! both the request and the broker allow it. Internal topics are marked `is_internal`.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::metadata::is_internal_topic;
use railyard_core::types::{valid_topic_name, NodeId};

use super::common::{
    authorized_operations, broker_id, may_auto_create, str_bytes, CLUSTER_OPERATIONS,
    TOPIC_OPERATIONS,
};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView, TopicView};
use crate::kafka::codec::uuid_carrier;
use crate::kafka::guard::{GuardError, Reader};

pub struct Metadata;

impl Handler for Metadata {
    type Request = MetadataRequest;

    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
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

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: MetadataRequest,
    ) -> Answer<MetadataResponse> {
        let creating = auto_create_missing(ctx.broker, &request, ctx.version).await;
        let view = ctx.broker.cluster();
        Answer::Reply(metadata(&view, &request, ctx.version, &creating))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.topics {
            out.push(t.error_code);
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> MetadataRequest {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let topic = MetadataRequestTopic::default().with_name(Some(super::common::sample_topic()));
        MetadataRequest::default().with_topics(Some(vec![topic; 2]))
    }
}

pub struct DescribeCluster;

impl Handler for DescribeCluster {
    type Request = DescribeClusterRequest;

    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.skip(1)?; // include_cluster_authorized_operations
        if v >= 1 {
            r.skip(1)?; // endpoint_type
        }
        if v >= 2 {
            r.skip(1)?; // include_fenced_brokers
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DescribeClusterRequest,
    ) -> Answer<DescribeClusterResponse> {
        let view = ctx.broker.cluster();
        Answer::Reply(describe_cluster(&view, &request, ctx.version))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> DescribeClusterRequest {
        DescribeClusterRequest::default()
    }
}

/// Asks for the auto-creation of every requested topic that does not exist, when the request
/// allows it (always before v4, by flag from v4) and the broker does; returns the names whose
/// creation was requested.
pub async fn auto_create_missing<B: Broker>(
    broker: &B,
    req: &MetadataRequest,
    version: i16,
) -> Vec<String> {
    let mut creating = Vec::new();
    if version >= 4 && !req.allow_auto_topic_creation {
        return creating;
    }
    let Some(list) = &req.topics else {
        return creating;
    };
    let view = broker.cluster();
    for t in list {
        let Some(name) = &t.name else { continue };
        if may_auto_create(&view, name.as_str()) && broker.auto_create_topic(name.to_string()).await
        {
            creating.push(name.to_string());
        }
    }
    creating
}

/// Metadata: brokers, cluster id, controller and the requested topics. Topics in `creating`
/// are being auto-created: LEADER_NOT_AVAILABLE (retriable) rather than unknown.
pub fn metadata(
    view: &ClusterView,
    req: &MetadataRequest,
    version: i16,
    creating: &[String],
) -> MetadataResponse {
    let brokers = view
        .brokers()
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    // Kafka's rule: null asks for every topic, and so does an empty list in v0 only; from v1 an
    // empty list asks for none (clients use it to learn the brokers cheaply).
    let topic_ops = authorized_operations(
        version >= 8 && req.include_topic_authorized_operations,
        TOPIC_OPERATIONS,
    );
    let topic = |t: &TopicView| {
        metadata_topic(t, view, version).with_topic_authorized_operations(topic_ops)
    };
    let topics = match &req.topics {
        None => view.topics().iter().map(topic).collect(),
        Some(list) if list.is_empty() && version == 0 => view.topics().iter().map(topic).collect(),
        Some(list) => list
            .iter()
            .map(|t| match &t.name {
                Some(name) => match view.topic(name.as_str()) {
                    Some(t) => topic(t),
                    None if !valid_topic_name(name.as_str()) => metadata_topic_error(
                        Some(name.clone()),
                        ResponseError::InvalidTopicException,
                    ),
                    None if creating.iter().any(|c| c == name.as_str()) => {
                        metadata_topic_error(Some(name.clone()), ResponseError::LeaderNotAvailable)
                    }
                    None => metadata_topic_error(
                        Some(name.clone()),
                        ResponseError::UnknownTopicOrPartition,
                    ),
                },
                None => match view.topic_by_id(t.topic_id.as_bytes()) {
                    Some(t) => topic(t),
                    None => metadata_topic_error(None, ResponseError::UnknownTopicId)
                        .with_topic_id(t.topic_id),
                },
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(
            Some(view.cluster_id())
                .filter(|c| !c.is_empty())
                .map(str_bytes),
        )
        .with_controller_id(view.controller().map_or(BrokerId(-1), broker_id))
        .with_topics(topics)
        // Dropped from Metadata in v11 (DescribeCluster carries it since).
        .with_cluster_authorized_operations(authorized_operations(
            (8..=10).contains(&version) && req.include_cluster_authorized_operations,
            CLUSTER_OPERATIONS,
        ))
}

/// DescribeCluster: the same brokers, cluster id and controller as Metadata.
pub fn describe_cluster(
    view: &ClusterView,
    req: &DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    // Endpoint type 1 is "brokers"; 2 ("controllers") asks for the KRaft controller listeners,
    // which clients reach through brokers here.
    if version >= 1 && req.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only the brokers endpoint type is served",
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    // v2 (KIP-1073): fenced brokers too, when asked, marked as such. A decommissioned broker
    // is unregistered, so it is in neither list.
    let fenced = if version >= 2 && req.include_fenced_brokers {
        view.fenced()
    } else {
        &[]
    };
    let listed = view.brokers().iter().map(|b| (b, false));
    let brokers = listed
        .chain(fenced.iter().map(|b| (b, true)))
        .map(|(b, is_fenced)| {
            DescribeClusterBroker::default()
                .with_broker_id(broker_id(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str_bytes))
                .with_is_fenced(is_fenced)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(authorized_operations(
            req.include_cluster_authorized_operations,
            CLUSTER_OPERATIONS,
        ))
        .with_cluster_id(str_bytes(view.cluster_id()))
        .with_controller_id(view.controller().map_or(BrokerId(-1), broker_id))
        .with_brokers(brokers)
}

/// One topic of a Metadata response. From v5, replicas on brokers missing from the view's
/// broker list (fenced by the controller) are reported offline, as Kafka does.
fn metadata_topic(t: &TopicView, view: &ClusterView, version: i16) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let ids = |v: &[NodeId]| v.iter().copied().map(broker_id).collect::<Vec<_>>();
            let offline: Vec<NodeId> = if version >= 5 {
                p.replicas
                    .iter()
                    .copied()
                    .filter(|r| view.broker(*r).is_none())
                    .collect()
            } else {
                Vec::new()
            };
            MetadataResponsePartition::default()
                .with_offline_replicas(ids(&offline))
                .with_error_code(match p.leader {
                    Some(_) => 0,
                    None => ResponseError::LeaderNotAvailable.code(),
                })
                .with_partition_index(p.partition)
                .with_leader_id(p.leader.map_or(BrokerId(-1), broker_id))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(uuid_carrier(t.id).topic_id)
        // Clients skip internal topics in pattern subscriptions.
        .with_is_internal(is_internal_topic(&t.name))
        .with_partitions(partitions)
}

fn metadata_topic_error(name: Option<TopicName>, e: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_name(name)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;

    use super::*;
    use crate::kafka::handlers::common::{sample_view, OPERATIONS_NOT_ASKED};

    /// Every topic (a null list).
    fn every_topic() -> MetadataRequest {
        MetadataRequest::default().with_topics(None)
    }

    fn ask(names: &[&str]) -> MetadataRequest {
        let topics = names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(n)))))
            .collect();
        MetadataRequest::default().with_topics(Some(topics))
    }

    #[test]
    fn test_metadata_v12_reports_racks_replicas_isr_and_a_fenced_brokers_replica_offline() {
        // Every field comes from the view: brokers with their racks, cluster id, controller,
        // topic ids, each partition's leader, epoch, replicas and ISR, and (v5+) the replicas
        // on a broker missing from the broker list (fenced) reported offline.
        let all = metadata(&sample_view(), &every_topic(), 12, &[]);
        assert_eq!(all.cluster_id.as_deref(), Some("railyard-test"));
        assert_eq!(all.controller_id, BrokerId(3));
        let brokers: Vec<_> = all
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string(), b.port, b.rack.clone()))
            .collect();
        assert_eq!(
            brokers,
            vec![
                (1, "127.0.0.1".into(), 9092, Some(str_bytes("rack-a"))),
                (2, "broker-2".into(), 9093, None)
            ]
        );
        assert_eq!(all.topics.len(), 3);
        let orders = &all.topics[0];
        assert_eq!(orders.name.as_deref().map(|n| n.as_str()), Some("orders"));
        assert_eq!(orders.error_code, 0);
        assert_eq!(*orders.topic_id.as_bytes(), [0xAB; 16]);
        let p = &orders.partitions[1];
        assert_eq!(
            (p.partition_index, p.leader_id, p.leader_epoch),
            (1, BrokerId(1), 5)
        );
        assert_eq!(p.replica_nodes, vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
        assert_eq!(p.isr_nodes, vec![BrokerId(1), BrokerId(2)]);
        assert_eq!(p.offline_replicas, vec![BrokerId(3)]);
        let moved = &all.topics[1].partitions[0];
        assert_eq!((moved.leader_id, moved.leader_epoch), (BrokerId(2), 7));
        // Offline replicas are a v5 field.
        let v4 = metadata(&sample_view(), &every_topic(), 4, &[]);
        assert!(v4.topics[0].partitions[1].offline_replicas.is_empty());
    }

    #[test]
    fn test_metadata_v1_lists_asked_topics_and_an_empty_list_asks_for_none() {
        // v1: unknown topics are UNKNOWN_TOPIC_OR_PARTITION in request order, racks are
        // reported, and an empty list asks for no topics but still lists the brokers.
        let view = sample_view();
        let some = metadata(&view, &ask(&["nope", "orders"]), 1, &[]);
        assert_eq!(some.controller_id, BrokerId(3));
        assert_eq!(some.brokers[0].rack.as_deref(), Some("rack-a"));
        let codes: Vec<_> = some
            .topics
            .iter()
            .map(|t| (t.name.as_deref().unwrap().to_string(), t.error_code))
            .collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, vec![("nope".into(), unknown), ("orders".into(), 0)]);
        assert_eq!(some.topics[1].partitions.len(), 2);
        let none = metadata(&view, &ask(&[]), 1, &[]);
        assert!(none.topics.is_empty());
        assert_eq!(none.brokers.len(), 2);
    }

    #[test]
    fn test_authorized_operations_are_every_supported_one_when_asked() {
        // With no authorizer Kafka reports every operation a resource supports, and i32::MIN
        // when not asked; Metadata carries the cluster's only in v8..=10.
        let view = sample_view();
        let asked = every_topic()
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true);
        let v10 = metadata(&view, &asked, 10, &[]);
        assert_eq!(v10.topics[0].topic_authorized_operations, 3576);
        assert_eq!(v10.cluster_authorized_operations, 8096);
        let v12 = metadata(&view, &asked, 12, &[]);
        assert_eq!(v12.topics[0].topic_authorized_operations, 3576);
        assert_eq!(v12.cluster_authorized_operations, OPERATIONS_NOT_ASKED);
        let not_asked = metadata(&view, &every_topic(), 12, &[]);
        assert_eq!(
            not_asked.topics[0].topic_authorized_operations,
            OPERATIONS_NOT_ASKED
        );
        let dc = DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_cluster_authorized_operations(true);
        assert_eq!(
            describe_cluster(&view, &dc, 1).cluster_authorized_operations,
            8096
        );
    }

    #[test]
    fn test_metadata_marks_internal_topics_internal() {
        // An internal topic in the view is listed with is_internal set; client topics are not.
        let resp = metadata(&sample_view(), &every_topic(), 12, &[]);
        let flags: Vec<_> = resp
            .topics
            .iter()
            .map(|t| (t.name.as_deref().unwrap().to_string(), t.is_internal))
            .collect();
        assert_eq!(
            flags,
            vec![
                ("orders".to_string(), false),
                ("moved".to_string(), false),
                ("__consumer_offsets".to_string(), true),
            ]
        );
    }

    #[test]
    fn test_metadata_answers_a_topic_being_created_leader_not_available() {
        // A missing topic whose creation was requested is LEADER_NOT_AVAILABLE (retriable); one
        // not being created is UNKNOWN_TOPIC_OR_PARTITION; an invalid name is
        // INVALID_TOPIC_EXCEPTION even if asked for.
        let creating = vec!["fresh".to_string(), "a/b".to_string()];
        let resp = metadata(
            &sample_view(),
            &ask(&["fresh", "other", "a/b"]),
            9,
            &creating,
        );
        let codes: Vec<_> = resp.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            vec![
                ResponseError::LeaderNotAvailable.code(),
                ResponseError::UnknownTopicOrPartition.code(),
                ResponseError::InvalidTopicException.code(),
            ]
        );
    }
}
