//! OffsetCommit, OffsetFetch and OffsetDelete: a group's committed offsets.
//!
//! Each group's request is one [`GroupRequest`] for its coordinator (the node routes it, see
//! [`super::groups`]). OffsetCommit and OffsetDelete check partitions against the cluster view
//! first: a topic the view does not list or a negative partition is UNKNOWN_TOPIC_OR_PARTITION
//! for that partition alone, and only the others reach the core (internal topics such as
//! `__consumer_offsets` are listed, so they may be committed too). OffsetFetch passes its
//! partitions through: the core answers offset -1 for anything never committed, as Kafka does.
//! OffsetFetch v8+ batches groups, which may live on different coordinators: one core request
//! per group, concurrently, answered in request order. Topic ids (OffsetCommit v10, OffsetFetch
//! v10) are not in kafka-protocol 0.18's requests and are not advertised.

use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestTopic;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::groups::{CommitOffset, FetchedOffset, GroupError, GroupRequest, GroupResponse};
use railyard_core::types::TopicPartition;

use super::common::{ask_group, ask_groups, unknown_server_error};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::guard::{GuardError, Reader};

pub struct OffsetCommit;

impl Handler for OffsetCommit {
    type Request = OffsetCommitRequest;

    /// v2..=9: retention time in v2-4, leader epochs from v6, instance id from v7.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        r.skip(4)?; // generation_id_or_member_epoch
        r.string()?; // member_id
        if v >= 7 {
            r.string()?; // group_instance_id (nullable)
        }
        if v <= 4 {
            r.skip(8)?; // retention_time_ms
        }
        r.array(|r| {
            r.string()?; // name
            r.array(|r| {
                r.skip(4 + 8)?; // partition_index, committed_offset
                if v >= 6 {
                    r.skip(4)?; // committed_leader_epoch
                }
                r.string()?; // committed_metadata (nullable)
                r.tags()
            })?;
            r.tags()
        })
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: OffsetCommitRequest,
    ) -> Answer<OffsetCommitResponse> {
        Answer::Reply(offset_commit(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(v: i16) -> OffsetCommitRequest {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let partition = |p| {
            let out = OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(42)
                .with_committed_metadata(Some(StrBytes::from_static_str("meta")));
            if v >= 6 {
                out.with_committed_leader_epoch(5)
            } else {
                out
            }
        };
        let r = OffsetCommitRequest::default()
            .with_group_id(group("g"))
            .with_generation_id_or_member_epoch(3)
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![partition(0), partition(1)])]);
        let r = if v >= 7 {
            r.with_group_instance_id(Some(StrBytes::from_static_str("i-1")))
        } else {
            r
        };
        if v <= 4 {
            r.with_retention_time_ms(60_000)
        } else {
            r
        }
    }
}

pub struct OffsetFetch;

impl Handler for OffsetFetch {
    type Request = OffsetFetchRequest;

    /// v1..=9: one group up to v7 (require_stable in v7), a batch of groups from v8 (with a
    /// member id and epoch in v9, for KIP-848 groups, which classic groups ignore).
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        let topics = |r: &mut Reader<'_>| {
            r.array(|r| {
                r.string()?; // name
                r.array(|r| r.skip(4))?; // partition_indexes
                r.tags()
            })
        };
        if v <= 7 {
            r.string()?; // group_id
            topics(r)?; // topics (nullable)
        } else {
            r.array(|r| {
                r.string()?; // group_id
                if v >= 9 {
                    r.string()?; // member_id (nullable)
                    r.skip(4)?; // member_epoch
                }
                topics(r)?; // topics (nullable)
                r.tags()
            })?;
        }
        if v >= 7 {
            r.skip(1)?; // require_stable
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: OffsetFetchRequest,
    ) -> Answer<OffsetFetchResponse> {
        Answer::Reply(offset_fetch(ctx.broker, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
        for g in &response.groups {
            out.push(g.error_code);
            for t in &g.topics {
                out.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
    }

    #[cfg(test)]
    fn sample(v: i16) -> OffsetFetchRequest {
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
        };
        let r = OffsetFetchRequest::default().with_require_stable(v >= 7);
        if v <= 7 {
            return r.with_group_id(group("g")).with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 1]),
            ]));
        }
        let one = |name| {
            let g = OffsetFetchRequestGroup::default()
                .with_group_id(group(name))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 1])]));
            if v >= 9 {
                g.with_member_id(Some(StrBytes::from_static_str("m-1")))
                    .with_member_epoch(2)
            } else {
                g
            }
        };
        r.with_groups(vec![one("g"), one("h").with_topics(None)])
    }
}

pub struct OffsetDelete;

impl Handler for OffsetDelete {
    type Request = OffsetDeleteRequest;

    /// v0 only.
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.string()?; // group_id
        r.array(|r| {
            r.string()?; // name
            r.array(|r| r.skip(4)) // partition_index
        })
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: OffsetDeleteRequest,
    ) -> Answer<OffsetDeleteResponse> {
        Answer::Reply(offset_delete(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        for t in &response.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }

    #[cfg(test)]
    fn sample(_version: i16) -> OffsetDeleteRequest {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        let partition = |p| OffsetDeleteRequestPartition::default().with_partition_index(p);
        OffsetDeleteRequest::default()
            .with_group_id(group("g"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![partition(0), partition(1)])])
    }
}

/// OffsetCommit: partitions the view knows go to the core, the others fail here.
pub async fn offset_commit<B: Broker>(
    broker: &B,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let view = broker.cluster();
    let mut offsets = Vec::new();
    let mut verdicts = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut topic = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
            topic.push(refused(&view, &tp));
            if topic.last() == Some(&None) {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                offsets.push((tp, p.committed_offset, p.committed_leader_epoch, metadata));
            }
        }
        verdicts.push(topic);
    }
    let codes = fill(verdicts, commit_codes(broker, &req, offsets).await);
    OffsetCommitResponse::default().with_topics(commit_topics(&req, codes))
}

/// OffsetFetch: one group up to v7, a batch of groups from v8.
pub async fn offset_fetch<B: Broker>(
    broker: &B,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        return offset_fetch_groups(broker, req).await;
    }
    let partitions = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.name.as_str();
                t.partition_indexes
                    .iter()
                    .map(move |&p| TopicPartition::new(name, p))
            })
            .collect::<Vec<_>>()
    });
    let asked = partitions.clone().unwrap_or_default();
    let request = GroupRequest::OffsetFetch {
        group: req.group_id.to_string(),
        partitions,
        require_stable: req.require_stable,
    };
    let reply = fetched(ask_group(broker, request).await);
    match reply {
        Ok(offsets) => OffsetFetchResponse::default().with_topics(old_topics(offsets, version)),
        // v1 has no top-level error: each partition asked carries it.
        Err(code) if version < 2 => {
            let failed = asked
                .into_iter()
                .map(|tp| FetchedOffset {
                    tp,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: None,
                    error: None,
                })
                .collect();
            let mut topics = old_topics(failed, version);
            for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.error_code = code;
            }
            OffsetFetchResponse::default().with_topics(topics)
        }
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}

/// OffsetDelete: partitions the view knows go to the core with the group; a group-level error
/// is answered alone, as Kafka does.
pub async fn offset_delete<B: Broker>(
    broker: &B,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let view = broker.cluster();
    let mut partitions = Vec::new();
    let mut verdicts = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut topic = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
            topic.push(refused(&view, &tp));
            if topic.last() == Some(&None) {
                partitions.push(tp);
            }
        }
        verdicts.push(topic);
    }
    let sent = partitions.len();
    let request = GroupRequest::OffsetDelete {
        group: req.group_id.to_string(),
        partitions,
    };
    let codes = match ask_group(broker, request).await {
        Some(GroupResponse::OffsetDelete(r)) => match r.error {
            Some(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
            None => r
                .partitions
                .into_iter()
                .map(|(_, e)| GroupError::code_of(e))
                .collect(),
        },
        _ => vec![unknown_server_error(); sent],
    };
    let codes = fill(verdicts, codes);
    OffsetDeleteResponse::default().with_topics(delete_topics(&req, codes))
}

/// OffsetFetch v8+: one core request per group, concurrently, answered in request order.
async fn offset_fetch_groups<B: Broker>(
    broker: &B,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let requests = req
        .groups
        .iter()
        .map(|g| GroupRequest::OffsetFetch {
            group: g.group_id.to_string(),
            partitions: g.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .flat_map(|t| {
                        let name = t.name.as_str();
                        t.partition_indexes
                            .iter()
                            .map(move |&p| TopicPartition::new(name, p))
                    })
                    .collect()
            }),
            require_stable: req.require_stable,
        })
        .collect();
    let replies = ask_groups(broker, requests).await;
    let groups = req
        .groups
        .iter()
        .zip(replies)
        .map(|(g, reply)| {
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match fetched(reply) {
                Ok(offsets) => out.with_topics(new_topics(offsets)),
                Err(code) => out.with_error_code(code),
            }
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

/// The core's code for each partition sent in an OffsetCommit (none sent: nothing asked).
async fn commit_codes<B: Broker>(
    broker: &B,
    req: &OffsetCommitRequest,
    offsets: Vec<CommitOffset>,
) -> Vec<i16> {
    let sent = offsets.len();
    if sent == 0 {
        return Vec::new();
    }
    let request = GroupRequest::OffsetCommit {
        group: req.group_id.to_string(),
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        offsets,
    };
    match ask_group(broker, request).await {
        Some(GroupResponse::OffsetCommit(r)) => {
            r.into_iter().map(|(_, e)| GroupError::code_of(e)).collect()
        }
        _ => vec![unknown_server_error(); sent],
    }
}

/// OffsetCommit's topics, in request order, with each partition's code.
fn commit_topics(
    req: &OffsetCommitRequest,
    codes: Vec<Vec<i16>>,
) -> Vec<OffsetCommitResponseTopic> {
    let topic = |(t, codes): (&OffsetCommitRequestTopic, Vec<i16>)| {
        let partitions = t.partitions.iter().zip(codes).map(|(p, code)| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
        });
        OffsetCommitResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    };
    req.topics.iter().zip(codes).map(topic).collect()
}

/// OffsetDelete's topics, in request order, with each partition's code.
fn delete_topics(
    req: &OffsetDeleteRequest,
    codes: Vec<Vec<i16>>,
) -> Vec<OffsetDeleteResponseTopic> {
    let topic = |(t, codes): (&OffsetDeleteRequestTopic, Vec<i16>)| {
        let partitions = t.partitions.iter().zip(codes).map(|(p, code)| {
            OffsetDeleteResponsePartition::default()
                .with_partition_index(p.partition_index)
                .with_error_code(code)
        });
        OffsetDeleteResponseTopic::default()
            .with_name(t.name.clone())
            .with_partitions(partitions.collect())
    };
    req.topics.iter().zip(codes).map(topic).collect()
}

/// Why the listener refuses a partition before the core sees it, if it does.
fn refused(view: &ClusterView, tp: &TopicPartition) -> Option<i16> {
    let known = tp.partition >= 0 && view.partition(&tp.topic, tp.partition).is_some();
    (!known).then(|| ResponseError::UnknownTopicOrPartition.code())
}

/// Each partition's code: the listener's verdict, or else the core's next answer (the core
/// answers the partitions it was sent in order; one it left out is UNKNOWN_SERVER_ERROR).
fn fill(verdicts: Vec<Vec<Option<i16>>>, core: Vec<i16>) -> Vec<Vec<i16>> {
    let mut core = core.into_iter();
    verdicts
        .into_iter()
        .map(|topic| {
            topic
                .into_iter()
                .map(|v| v.unwrap_or_else(|| core.next().unwrap_or_else(unknown_server_error)))
                .collect()
        })
        .collect()
}

/// An OffsetFetch reply's offsets, or the group's error code.
fn fetched(reply: Option<GroupResponse>) -> Result<Vec<FetchedOffset>, i16> {
    match reply {
        Some(GroupResponse::OffsetFetch(r)) => r.map_err(GroupError::code),
        _ => Err(unknown_server_error()),
    }
}

/// Offsets grouped by topic, topics in order of first appearance.
fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for o in offsets {
        match out.iter_mut().find(|(t, _)| *t == o.tp.topic) {
            Some((_, partitions)) => partitions.push(o),
            None => out.push((o.tp.topic.clone(), vec![o])),
        }
    }
    out
}

/// OffsetFetch v1-7 topics; leader epochs from v5.
fn old_topics(offsets: Vec<FetchedOffset>, version: i16) -> Vec<OffsetFetchResponseTopic> {
    let partition = |o: FetchedOffset| {
        let out = OffsetFetchResponsePartition::default()
            .with_partition_index(o.tp.partition)
            .with_committed_offset(o.offset)
            .with_metadata(o.metadata.map(StrBytes::from_string))
            .with_error_code(GroupError::code_of(o.error));
        if version >= 5 {
            out.with_committed_leader_epoch(o.leader_epoch)
        } else {
            out
        }
    };
    by_topic(offsets)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions.into_iter().map(partition).collect())
        })
        .collect()
}

/// OffsetFetch v8+ topics.
fn new_topics(offsets: Vec<FetchedOffset>) -> Vec<OffsetFetchResponseTopics> {
    let partition = |o: FetchedOffset| {
        OffsetFetchResponsePartitions::default()
            .with_partition_index(o.tp.partition)
            .with_committed_offset(o.offset)
            .with_committed_leader_epoch(o.leader_epoch)
            .with_metadata(o.metadata.map(StrBytes::from_string))
            .with_error_code(GroupError::code_of(o.error))
    };
    by_topic(offsets)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions.into_iter().map(partition).collect())
        })
        .collect()
}

#[cfg(test)]
fn group(name: &'static str) -> kafka_protocol::messages::GroupId {
    kafka_protocol::messages::GroupId(StrBytes::from_static_str(name))
}

#[cfg(test)]
fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use railyard_core::api::{ClientError, Request, Response};
    use railyard_core::types::CONSUMER_OFFSETS_TOPIC;

    use super::*;
    use crate::kafka::handlers::common::{assert_encodes, GroupFake};

    const UNKNOWN_TOPIC: i16 = 3;

    /// A fake coordinator that commits everything and answers fetches with offset 7.
    fn coordinator() -> GroupFake {
        GroupFake::new(|g| {
            Response::Group(match g {
                GroupRequest::OffsetCommit { offsets, .. } => GroupResponse::OffsetCommit(
                    offsets.iter().map(|o| (o.0.clone(), None)).collect(),
                ),
                GroupRequest::OffsetFetch { partitions, .. } => {
                    let all = || vec![TopicPartition::new("orders", 0)];
                    let offsets = partitions.clone().unwrap_or_else(all);
                    GroupResponse::OffsetFetch(Ok(offsets
                        .into_iter()
                        .map(|tp| FetchedOffset {
                            tp,
                            offset: 7,
                            leader_epoch: 5,
                            metadata: Some("meta".into()),
                            error: None,
                        })
                        .collect()))
                }
                other => panic!("unexpected {other:?}"),
            })
        })
    }

    fn commit_partition(p: i32) -> OffsetCommitRequestPartition {
        OffsetCommitRequestPartition::default()
            .with_partition_index(p)
            .with_committed_offset(10)
    }

    fn codes(r: &OffsetCommitResponse) -> Vec<Vec<i16>> {
        r.topics
            .iter()
            .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
            .collect()
    }

    #[tokio::test]
    async fn test_commit_maps_every_version() {
        // Leader epochs from v6 and instance ids from v7 reach the core; all partitions commit.
        for v in 2..=9 {
            let broker = coordinator();
            let r = offset_commit(&broker, OffsetCommit::sample(v)).await;
            assert_encodes(&r, v);
            assert_eq!(codes(&r), vec![vec![0, 0]], "v{v}");
            let [GroupRequest::OffsetCommit {
                group,
                generation,
                group_instance_id,
                offsets,
                ..
            }] = &broker.seen()[..]
            else {
                panic!("one commit expected")
            };
            assert_eq!((group.as_str(), *generation), ("g", 3));
            assert_eq!(group_instance_id.is_some(), v >= 7);
            let epoch = if v >= 6 { 5 } else { -1 };
            let want = (
                TopicPartition::new("orders", 1),
                42,
                epoch,
                Some("meta".into()),
            );
            assert_eq!(offsets[1], want, "v{v}");
        }
    }

    #[tokio::test]
    async fn test_commit_refuses_unknown_topics_and_negative_partitions_per_partition() {
        // Only known partitions reach the core; internal topics are known; order is kept.
        let broker = coordinator();
        let req = OffsetCommitRequest::default()
            .with_group_id(group("g"))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![commit_partition(-1), commit_partition(1)]),
                OffsetCommitRequestTopic::default()
                    .with_name(topic("nope"))
                    .with_partitions(vec![commit_partition(0)]),
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(CONSUMER_OFFSETS_TOPIC)))
                    .with_partitions(vec![commit_partition(0), commit_partition(9)]),
            ]);
        let r = offset_commit(&broker, req).await;
        let want = vec![
            vec![UNKNOWN_TOPIC, 0],
            vec![UNKNOWN_TOPIC],
            vec![0, UNKNOWN_TOPIC],
        ];
        assert_eq!(codes(&r), want);
        let [GroupRequest::OffsetCommit { offsets, .. }] = &broker.seen()[..] else {
            panic!("one commit expected")
        };
        let sent: Vec<&TopicPartition> = offsets.iter().map(|o| &o.0).collect();
        let offsets_0 = TopicPartition::new(CONSUMER_OFFSETS_TOPIC, 0);
        assert_eq!(sent, vec![&TopicPartition::new("orders", 1), &offsets_0]);
        // Nothing known: nothing reaches the core.
        let broker = coordinator();
        let req =
            OffsetCommitRequest::default().with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic("nope"))
                .with_partitions(vec![commit_partition(0)])]);
        assert_eq!(codes(&offset_commit(&broker, req).await), vec![vec![3]]);
        assert!(broker.seen().is_empty());
    }

    #[tokio::test]
    async fn test_commit_core_errors_and_foreign_replies() {
        // The core's group errors (a stale generation, not coordinating) and replies of another
        // kind land on the partitions that were sent.
        let stale = GroupFake::new(|g| {
            Response::Group(GroupResponse::error_for(g, GroupError::IllegalGeneration))
        });
        let r = offset_commit(&stale, OffsetCommit::sample(8)).await;
        assert_eq!(codes(&r), vec![vec![22, 22]]);
        let moved = GroupFake::new(|g| {
            Response::error_for(
                &Request::Group(g.clone()),
                ClientError::NotLeader { leader: None },
            )
        });
        let r = offset_commit(&moved, OffsetCommit::sample(8)).await;
        assert_eq!(codes(&r), vec![vec![16, 16]]);
        let foreign = GroupFake::new(|_| Response::DeleteTopic(Ok(())));
        let r = offset_commit(&foreign, OffsetCommit::sample(8)).await;
        assert_eq!(codes(&r), vec![vec![-1, -1]]);
        // A reply shorter than the request fills the rest with UNKNOWN_SERVER_ERROR.
        let short = GroupFake::replying(GroupResponse::OffsetCommit(vec![(
            TopicPartition::new("orders", 0),
            None,
        )]));
        let r = offset_commit(&short, OffsetCommit::sample(8)).await;
        assert_eq!(codes(&r), vec![vec![0, -1]]);
    }

    #[tokio::test]
    async fn test_fetch_maps_every_version() {
        // v1-7: one group; v8+: every group, each its own core request, in request order.
        for v in 1..=9 {
            let broker = coordinator();
            let r = offset_fetch(&broker, OffsetFetch::sample(v), v).await;
            assert_encodes(&r, v);
            if v <= 7 {
                let p = &r.topics[0].partitions[1];
                assert_eq!((p.partition_index, p.committed_offset), (1, 7));
                assert_eq!(p.committed_leader_epoch, if v >= 5 { 5 } else { -1 });
                assert_eq!(p.metadata.as_deref(), Some("meta"));
                let [GroupRequest::OffsetFetch { require_stable, .. }] = &broker.seen()[..] else {
                    panic!("one fetch expected")
                };
                assert_eq!(*require_stable, v >= 7);
                continue;
            }
            let ids: Vec<&str> = r.groups.iter().map(|g| g.group_id.as_str()).collect();
            assert_eq!(ids, vec!["g", "h"]);
            assert_eq!(r.groups[0].topics[0].partitions.len(), 2);
            // `topics: None` asks for every committed partition.
            assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, 7);
            let mut seen = broker.seen();
            seen.sort_by(|a, b| a.group().cmp(&b.group()));
            assert!(matches!(
                &seen[1],
                GroupRequest::OffsetFetch {
                    partitions: None,
                    ..
                }
            ));
        }
    }

    #[tokio::test]
    async fn test_fetch_errors_per_version() {
        // A group error is top-level from v2, per partition in v1, per group from v8.
        let broker = GroupFake::replying(GroupResponse::OffsetFetch(Err(
            GroupError::CoordinatorLoadInProgress,
        )));
        let r = offset_fetch(&broker, OffsetFetch::sample(1), 1).await;
        assert_encodes(&r, 1);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.committed_offset), (14, -1));
        let r = offset_fetch(&broker, OffsetFetch::sample(7), 7).await;
        assert_eq!((r.error_code, r.topics.len()), (14, 0));
        let r = offset_fetch(&broker, OffsetFetch::sample(8), 8).await;
        assert_encodes(&r, 8);
        assert!(r.groups.iter().all(|g| g.error_code == 14));
        let foreign = GroupFake::new(|_| Response::CreateTopic(Ok(())));
        let r = offset_fetch(&foreign, OffsetFetch::sample(9), 9).await;
        assert!(r.groups.iter().all(|g| g.error_code == -1));
    }

    #[tokio::test]
    async fn test_offset_delete_checks_the_view_and_answers_group_errors_alone() {
        // Per-partition codes in order; a group-level error has no topics.
        let ok = GroupFake::new(|g| {
            let GroupRequest::OffsetDelete { partitions, .. } = g else {
                panic!("unexpected {g:?}")
            };
            Response::Group(GroupResponse::OffsetDelete(
                railyard_core::groups::OffsetDeleteResult {
                    error: None,
                    partitions: partitions
                        .iter()
                        .map(|tp| (tp.clone(), Some(GroupError::GroupSubscribedToTopic)))
                        .collect(),
                },
            ))
        });
        let mut req = OffsetDelete::sample(0);
        req.topics[0].partitions[0].partition_index = -3;
        let r = offset_delete(&ok, req).await;
        assert_encodes(&r, 0);
        let codes: Vec<i16> = r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!((r.error_code, codes), (0, vec![UNKNOWN_TOPIC, 86]));
        let missing = GroupFake::new(|g| {
            Response::Group(GroupResponse::error_for(g, GroupError::GroupIdNotFound))
        });
        let r = offset_delete(&missing, OffsetDelete::sample(0)).await;
        assert_eq!((r.error_code, r.topics.len()), (69, 0));
    }
}
