//! DescribeLogDirs: this broker's one log directory (its data dir) with the size and lag of
//! each partition it hosts, and (v4) the directory's free space. A filter names topics and
//! partitions; one this broker does not host is left out, as Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use railyard_core::api::{LogDirs, Request, Response};

use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct DescribeLogDirs;

impl Handler for DescribeLogDirs {
    type Request = DescribeLogDirsRequest;

    /// v1..=4 (flexible from v2).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.string()?; // topic
            r.array(|r| r.skip(4))?; // partitions
            r.tags()
        }) // topics (nullable)
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DescribeLogDirsRequest,
    ) -> Answer<DescribeLogDirsResponse> {
        let dirs = match ctx.broker.request(Request::DescribeLogDirs).await {
            Response::LogDirs(d) => d,
            _ => LogDirs::default(),
        };
        Answer::Reply(describe_log_dirs(&ctx.config.log_dir, &request, dirs))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
        out.extend(response.results.iter().map(|r| r.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> DescribeLogDirsRequest {
        use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
        let t = DescribableLogDirTopic::default()
            .with_topic(super::common::sample_topic())
            .with_partitions(vec![0, 1]);
        DescribeLogDirsRequest::default().with_topics(Some(vec![t.clone(), t]))
    }
}

/// The response for `dirs`, filtered as the request asks.
pub fn describe_log_dirs(
    log_dir: &str,
    req: &DescribeLogDirsRequest,
    dirs: LogDirs,
) -> DescribeLogDirsResponse {
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.topic.as_str() == topic && t.partitions.contains(&partition)),
    };
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (tp, size, lag) in dirs.partitions {
        if !wanted(&tp.topic, tp.partition) {
            continue;
        }
        topics.entry(tp.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(tp.partition)
                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                .with_offset_lag(lag),
        );
    }
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    let usable = dirs
        .available_bytes
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir.to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use railyard_core::types::TopicPartition;

    use super::*;

    #[test]
    fn test_log_dirs_group_partitions_by_topic_and_apply_the_filter() {
        let dirs = LogDirs {
            partitions: vec![
                (TopicPartition::new("a", 0), 100, 0),
                (TopicPartition::new("a", 1), 50, 3),
                (TopicPartition::new("b", 0), 7, 0),
            ],
            available_bytes: Some(1 << 30),
        };
        let every = DescribeLogDirsRequest::default().with_topics(None);
        let all = describe_log_dirs("/data", &every, dirs.clone());
        let r = &all.results[0];
        assert_eq!((r.log_dir.as_str(), r.usable_bytes), ("/data", 1 << 30));
        let got: Vec<_> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.partition_size,
                        p.offset_lag,
                    )
                })
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 100, 0),
                ("a".into(), 1, 50, 3),
                ("b".into(), 0, 7, 0)
            ]
        );
        let only = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("a")))
                .with_partitions(vec![1, 9]),
        ]));
        let some = describe_log_dirs("/data", &only, dirs);
        assert_eq!(some.results[0].topics.len(), 1);
        assert_eq!(some.results[0].topics[0].partitions.len(), 1);
        assert_eq!(some.results[0].topics[0].partitions[0].partition_index, 1);
    }
}
