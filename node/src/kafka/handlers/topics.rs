//! CreateTopics and DeleteTopics.
//!
//! Topic changes go to the core as [`Request::CreateTopic`] / [`Request::DeleteTopic`]; only the
//! controller (the metadata partition's leader, Metadata's `controller_id`) accepts them, and
//! every other broker answers NOT_CONTROLLER so the client retries there. The topics of one
//! request run concurrently, each on its own task, and are answered in request order. Internal
//! topics are refused here as the core would refuse them: creating one is INVALID_REQUEST,
//! deleting one INVALID_TOPIC_EXCEPTION.
//!
//! The core bounds a proposal's lifetime itself (an expired one is REQUEST_TIMED_OUT). A
//! CreateTopics then waits, up to its `timeout_ms`, until this broker's cluster view shows the
//! topic with a leader for every partition, as Kafka does: a client's next Metadata finds the
//! leaders (librdkafka caches a missing leader), and v7 reports the topic's id. A DeleteTopics
//! waits (up to `admin_visible_wait_ms`) for the topic to leave the view.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{ClientError, Request, Response};
use railyard_core::metadata::is_internal_topic;
use railyard_core::topic_config::BrokerLayers;
use tokio::task::JoinHandle;

use super::common::client_error_code;
use super::configs::topic_entries;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::codec::uuid_carrier;
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};
use crate::kafka::KafkaConfig;

pub struct CreateTopics;

impl Handler for CreateTopics {
    type Request = CreateTopicsRequest;

    /// v2..=7 (the layout is the same in all of them but for the flexible encoding).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.string()?; // name
            r.skip(4 + 2)?; // num_partitions, replication_factor
            r.array(|r| {
                r.skip(4)?; // partition_index
                r.array(|r| r.skip(4))?; // broker_ids
                r.tags()
            })?;
            r.array(|r| {
                r.string()?; // config name
                r.string()?; // config value (nullable)
                r.tags()
            })?;
            r.tags()
        })?;
        r.skip(4 + 1) // timeout_ms, validate_only
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: CreateTopicsRequest,
    ) -> Answer<CreateTopicsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        let view = ctx.broker.cluster();
        let layers = view.broker_layers(ctx.broker.node_id(), &ctx.config.topic_defaults);
        Answer::Reply(create_topics(ctx.broker, &layers, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.topics.iter().map(|t| t.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> CreateTopicsRequest {
        use kafka_protocol::messages::create_topics_request::{
            CreatableReplicaAssignment, CreatableTopicConfig,
        };
        use kafka_protocol::messages::BrokerId;
        let config = |name, value: Option<&'static str>| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(value.map(StrBytes::from_static_str))
        };
        CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(super::common::sample_topic())
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                    .with_configs(vec![config("retention.ms", Some("1")), config("x", None)]),
                CreatableTopic::default().with_name(super::common::sample_topic()),
            ])
            .with_validate_only(true)
    }
}

pub struct DeleteTopics;

impl Handler for DeleteTopics {
    type Request = DeleteTopicsRequest;

    /// v1..=6: names up to v5, (name, id) pairs in v6.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        if v >= 6 {
            r.array(|r| {
                r.string()?; // name (nullable)
                r.skip(16)?; // topic_id
                r.tags()
            })?;
        } else {
            r.array(|r| r.string())?; // topic_names
        }
        r.skip(4) // timeout_ms
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DeleteTopicsRequest,
    ) -> Answer<DeleteTopicsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        Answer::Reply(delete_topics(ctx.broker, ctx.config, request, ctx.version).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.responses.iter().map(|t| t.error_code));
    }

    #[cfg(test)]
    fn sample(v: i16) -> DeleteTopicsRequest {
        use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
        let name = super::common::sample_topic;
        if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name())),
                DeleteTopicState::default()
                    .with_name(None)
                    .with_topic_id(uuid_carrier([3; 16]).topic_id),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(), name()])
        }
    }
}

/// Partitions of a topic created with `num_partitions` -1 (Kafka's `num.partitions`).
pub const DEFAULT_PARTITIONS: i64 = 1;
/// Replication factor of a topic created with `replication_factor` -1, capped at the number of
/// brokers (Kafka's `default.replication.factor`).
pub const DEFAULT_REPLICATION_FACTOR: i64 = 3;

/// Why one topic of an admin request failed: a Kafka error code and the message sent with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    pub(super) fn kafka(e: ResponseError, message: impl Into<String>) -> AdminError {
        AdminError {
            code: e.code(),
            message: message.into(),
        }
    }

    pub(super) fn core(e: &ClientError) -> AdminError {
        let message = match e {
            ClientError::NotController {
                controller: Some(id),
            } => format!("this broker is not the controller; the controller is broker {id}"),
            ClientError::NotController { controller: None } => {
                "this broker is not the controller, and no controller is known".to_string()
            }
            other => other.to_string(),
        };
        AdminError {
            code: client_error_code(e),
            message,
        }
    }

    pub(super) fn unexpected() -> AdminError {
        AdminError::kafka(
            ResponseError::UnknownServerError,
            "the broker answered an admin request with another kind of reply",
        )
    }
}

/// A topic the controller created (or, validate_only, would create).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Created {
    partitions: i64,
    replication_factor: i64,
    configs: BTreeMap<String, String>,
    /// The new topic's id, once this broker's view shows the topic.
    id: Option<[u8; 16]>,
}

/// One topic's outcome: decided by the listener, or running on its own task.
enum Job<T> {
    Done(Result<T, AdminError>),
    Running(JoinHandle<Result<T, AdminError>>),
}

impl<T> Job<T> {
    async fn result(self) -> Result<T, AdminError> {
        match self {
            Job::Done(r) => r,
            // A panic in the broker's request future surfaces here as a join error.
            Job::Running(handle) => handle
                .await
                .unwrap_or_else(|_| Err(AdminError::unexpected())),
        }
    }
}

/// Keys that occur more than once in a request. Kafka refuses every copy of a duplicate and
/// answers it once: [`Duplicates::check`] says which copy gets the answer.
pub(super) struct Duplicates<K>(HashMap<K, bool>);

impl<K: Hash + Eq> Duplicates<K> {
    pub(super) fn new(keys: impl Iterator<Item = K>) -> Self {
        let mut seen: HashMap<K, bool> = HashMap::new();
        for k in keys {
            seen.entry(k).and_modify(|dup| *dup = true).or_insert(false);
        }
        seen.retain(|_, dup| *dup);
        Duplicates(seen)
    }

    /// `None` if `key` is not duplicated; else whether this is the copy to answer (the first).
    pub(super) fn check<Q>(&mut self, key: &Q) -> Option<bool>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0
            .get_mut(key)
            .map(|unanswered| std::mem::replace(unanswered, false))
    }
}

/// CreateTopics: each topic becomes one [`Request::CreateTopic`] on its own task.
pub async fn create_topics<B: Broker>(
    broker: &B,
    defaults: &BrokerLayers,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let view = broker.cluster();
    let brokers = i64::try_from(view.brokers().len()).unwrap_or(i64::MAX);
    let default_rf = DEFAULT_REPLICATION_FACTOR.min(brokers).max(1);
    // Kafka answers a CreateTopics with a positive timeout once every new partition has a
    // leader, or REQUEST_TIMED_OUT when the timeout runs out first; with 0, at once.
    let wait = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let mut dups = Duplicates::new(req.topics.iter().map(|t| t.name.to_string()));
    let mut jobs: Vec<(TopicName, Job<Created>)> = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        if let Some(answer) = dups.check(topic.name.as_str()) {
            if !answer {
                continue;
            }
            let e = AdminError::kafka(ResponseError::InvalidRequest, "duplicate topic name");
            jobs.push((topic.name, Job::Done(Err(e))));
            continue;
        }
        let job = match create_request(&topic, default_rf, req.validate_only) {
            Err(e) => Job::Done(Err(e)),
            Ok(request) => Job::Running(tokio::spawn(create_one(broker.clone(), request, wait))),
        };
        jobs.push((topic.name, job));
    }
    let mut topics = Vec::with_capacity(jobs.len());
    for (name, job) in jobs {
        let mut out = CreatableTopicResult::default()
            .with_name(name)
            .with_error_message(None);
        match job.result().await {
            Ok(created) => {
                if version >= 5 {
                    out.num_partitions = i32::try_from(created.partitions).unwrap_or(-1);
                    out.replication_factor =
                        i16::try_from(created.replication_factor).unwrap_or(-1);
                    out.configs = Some(creatable_configs(&created.configs, defaults));
                }
                if let (true, Some(id)) = (version >= 7, created.id) {
                    out.topic_id = uuid_carrier(id).topic_id;
                }
            }
            Err(e) => {
                out.error_code = e.code;
                out.error_message = Some(StrBytes::from_string(e.message));
            }
        }
        topics.push(out);
    }
    CreateTopicsResponse::default().with_topics(topics)
}

/// The core request for one topic, or why the listener refuses it outright.
fn create_request(
    topic: &CreatableTopic,
    default_rf: i64,
    validate_only: bool,
) -> Result<Request, AdminError> {
    let name = topic.name.as_str();
    if is_internal_topic(name) {
        // The core refuses it the same way; answering here keeps a bad config or assignment
        // in the same request from being reported instead.
        return Err(AdminError::kafka(
            ResponseError::InvalidRequest,
            format!("{name} is an internal topic; only the cluster creates it"),
        ));
    }
    let assignments = manual_assignment(topic)?;
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        let Some(value) = &c.value else {
            return Err(AdminError::kafka(
                ResponseError::InvalidConfig,
                format!("null value for config {}", c.name.as_str()),
            ));
        };
        if configs
            .insert(c.name.to_string(), value.to_string())
            .is_some()
        {
            return Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                format!("config {} is given more than once", c.name.as_str()),
            ));
        }
    }
    let (partitions, replication_factor) = match assignments.first() {
        Some(first) => (assignments.len() as i64, first.len() as i64),
        None => (
            match topic.num_partitions {
                -1 => DEFAULT_PARTITIONS,
                n => i64::from(n),
            },
            match topic.replication_factor {
                -1 => default_rf,
                n => i64::from(n),
            },
        ),
    };
    Ok(Request::CreateTopic {
        name: topic.name.to_string(),
        partitions,
        replication_factor,
        configs,
        assignments,
        validate_only,
    })
}

/// A manual replica assignment as Kafka sends it: partition indexes 0..n, each once, and then
/// `num_partitions` and `replication_factor` must both be -1. The controller checks the broker
/// ids. Empty when the controller is to place the replicas.
fn manual_assignment(topic: &CreatableTopic) -> Result<Vec<Vec<u64>>, AdminError> {
    if topic.assignments.is_empty() {
        return Ok(Vec::new());
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err(AdminError::kafka(
            ResponseError::InvalidRequest,
            "with a manual replica assignment, num_partitions and replication_factor must be -1",
        ));
    }
    let n = topic.assignments.len();
    let mut out: Vec<Option<Vec<u64>>> = vec![None; n];
    for a in &topic.assignments {
        let slot = usize::try_from(a.partition_index)
            .ok()
            .and_then(|i| out.get_mut(i));
        let Some(slot) = slot.filter(|s| s.is_none()) else {
            return Err(AdminError::kafka(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "partition indexes must be 0..{n}, each once; got {}",
                    a.partition_index
                ),
            ));
        };
        let ids: Option<Vec<u64>> = a
            .broker_ids
            .iter()
            .map(|b| u64::try_from(b.0).ok().filter(|id| *id > 0))
            .collect();
        let Some(ids) = ids else {
            return Err(AdminError::kafka(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "partition {}: broker ids must be positive",
                    a.partition_index
                ),
            ));
        };
        *slot = Some(ids);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Runs one topic's creation and, if it happened, waits (up to `wait`) for this broker's view
/// to show the topic with a leader for every partition.
async fn create_one<B: Broker>(
    broker: B,
    request: Request,
    wait: Duration,
) -> Result<Created, AdminError> {
    let Request::CreateTopic {
        name,
        partitions,
        replication_factor,
        configs,
        validate_only,
        ..
    } = request.clone()
    else {
        return Err(AdminError::unexpected());
    };
    match broker.request(request).await {
        Response::CreateTopic(Ok(())) => {}
        Response::CreateTopic(Err(e)) => return Err(AdminError::core(&e)),
        _ => return Err(AdminError::unexpected()),
    }
    let id = if validate_only || wait.is_zero() {
        None
    } else {
        let led = |v: &ClusterView| {
            let t = v.topic(&name)?;
            t.partitions
                .iter()
                .all(|p| p.leader.is_some())
                .then_some(t.id)
        };
        match wait_for_view(&broker, wait, led).await {
            Some(id) => Some(id),
            None => {
                return Err(AdminError::kafka(
                    ResponseError::RequestTimedOut,
                    format!("{name} was created, but not every partition had a leader in time"),
                ))
            }
        }
    };
    Ok(Created {
        partitions,
        replication_factor,
        configs,
        id,
    })
}

/// How long a successful change may wait to show in the view: the config's cap, or less if
/// the client's timeout is shorter.
fn visible_wait(config: &KafkaConfig, timeout_ms: i32) -> Duration {
    let client = u64::try_from(timeout_ms).unwrap_or(0);
    Duration::from_millis(config.admin_visible_wait_ms.min(client))
}

/// Polls the broker's view until `found` returns something or `wait` passes.
pub(super) async fn wait_for_view<B: Broker, T>(
    broker: &B,
    wait: Duration,
    found: impl Fn(&ClusterView) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(t) = found(&broker.cluster()) {
            return Some(t);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(VIEW_POLL_INTERVAL.min(deadline - now)).await;
    }
}

const VIEW_POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The configs of a created topic as CreateTopics v5+ reports them: each registered config
/// with its override or default.
fn creatable_configs(
    overrides: &BTreeMap<String, String>,
    defaults: &BrokerLayers,
) -> Vec<CreatableTopicConfigs> {
    topic_entries(overrides, defaults)
        .into_iter()
        .map(|e| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(e.name))
                .with_value(e.value.map(StrBytes::from_string))
                .with_read_only(e.read_only)
                .with_config_source(e.source.code())
        })
        .collect()
}

/// A topic named by a DeleteTopics request: by name (v1+) or, in v6, by id.
struct DeleteTarget {
    /// The name the response carries (the request's, or the one the id resolves to).
    name: Option<TopicName>,
    /// The topic id the response carries in v6 (nil if unknown).
    id: Option<[u8; 16]>,
    job: Job<()>,
}

/// DeleteTopics: each topic becomes one [`Request::DeleteTopic`] on its own task.
pub async fn delete_topics<B: Broker>(
    broker: &B,
    config: &KafkaConfig,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let view = broker.cluster();
    let wait = visible_wait(config, req.timeout_ms);
    // v6 names topics as (name, id) pairs; earlier versions as a list of names.
    let named: Vec<(Option<TopicName>, Option<[u8; 16]>)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| {
                let id = (!t.topic_id.is_nil()).then(|| *t.topic_id.as_bytes());
                (t.name.clone(), id)
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.clone()), None))
            .collect()
    };
    let mut dup_names = Duplicates::new(
        named
            .iter()
            .filter_map(|(n, _)| n.as_ref().map(|n| n.to_string())),
    );
    let mut dup_ids = Duplicates::new(named.iter().filter_map(|(_, id)| *id));
    let mut targets = Vec::with_capacity(named.len());
    for (name, id) in named {
        let dup = match (&name, id) {
            (_, Some(id)) => dup_ids
                .check(&id)
                .map(|answer| (answer, "duplicate topic id")),
            (Some(n), None) => dup_names
                .check(n.as_str())
                .map(|answer| (answer, "duplicate topic name")),
            (None, None) => None,
        };
        if let Some((answer, message)) = dup {
            if answer {
                let e = AdminError::kafka(ResponseError::InvalidRequest, message);
                targets.push(DeleteTarget {
                    name,
                    id,
                    job: Job::Done(Err(e)),
                });
            }
            continue;
        }
        targets.push(match resolve_delete(&view, &name, id) {
            Err(e) => DeleteTarget {
                name,
                id,
                job: Job::Done(Err(e)),
            },
            Ok((name, id)) => DeleteTarget {
                job: Job::Running(tokio::spawn(delete_one(
                    broker.clone(),
                    name.to_string(),
                    wait,
                ))),
                name: Some(name),
                id,
            },
        });
    }
    let mut responses = Vec::with_capacity(targets.len());
    for t in targets {
        let result = t.job.result().await;
        let mut out = DeletableTopicResult::default().with_name(t.name);
        if let (true, Some(id)) = (version >= 6, t.id) {
            out.topic_id = uuid_carrier(id).topic_id;
        }
        if let Err(e) = result {
            out.error_code = e.code;
            if version >= 5 {
                out.error_message = Some(StrBytes::from_string(e.message));
            }
        }
        responses.push(out);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// The topic a DeleteTopics entry names, as (name, id), or why the listener refuses it outright.
fn resolve_delete(
    view: &ClusterView,
    name: &Option<TopicName>,
    id: Option<[u8; 16]>,
) -> Result<(TopicName, Option<[u8; 16]>), AdminError> {
    let (name, id) = match (name, id) {
        (Some(n), None) => (n.clone(), view.topic(n.as_str()).map(|t| t.id)),
        (None, Some(id)) => match view.topic_by_id(&id) {
            Some(t) => (TopicName(StrBytes::from_string(t.name.clone())), Some(id)),
            None => {
                return Err(AdminError::kafka(
                    ResponseError::UnknownTopicId,
                    "no topic has this id",
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "name a topic by its name or by its id, not both",
            ))
        }
        (None, None) => {
            return Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "a topic needs a name or an id",
            ))
        }
    };
    if is_internal_topic(name.as_str()) {
        // The core refuses it the same way; answering here also covers an internal topic that
        // is missing from the view, which the core would call unknown.
        return Err(AdminError::kafka(
            ResponseError::InvalidTopicException,
            format!(
                "{} is an internal topic; only the cluster deletes it",
                name.as_str()
            ),
        ));
    }
    Ok((name, id))
}

/// Runs one topic's deletion and, if it happened, waits (up to `wait`) for this broker's view
/// to drop the topic.
async fn delete_one<B: Broker>(broker: B, name: String, wait: Duration) -> Result<(), AdminError> {
    let request = Request::DeleteTopic { name: name.clone() };
    match broker.request(request).await {
        Response::DeleteTopic(Ok(())) => {}
        Response::DeleteTopic(Err(e)) => return Err(AdminError::core(&e)),
        _ => return Err(AdminError::unexpected()),
    }
    wait_for_view(&broker, wait, |v| v.topic(&name).is_none().then_some(())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use railyard_core::types::{CONSUMER_OFFSETS_TOPIC, METADATA_TOPIC};

    use super::*;
    use crate::kafka::handlers::common::{sample_view, ViewOnly};

    #[tokio::test]
    async fn test_deleting_an_internal_topic_listed_in_the_view_is_invalid_topic_exception() {
        // An internal topic the view lists (a real node's view lists none) is refused by name
        // (listed or not; with a message from v5) and by id (the answer keeping the id) with
        // INVALID_TOPIC_EXCEPTION, and no request reaches the core.
        let broker = ViewOnly(Arc::new(sample_view()));
        let config = KafkaConfig::default();
        let invalid = ResponseError::InvalidTopicException.code();
        let names = [METADATA_TOPIC, CONSUMER_OFFSETS_TOPIC]
            .map(|n| TopicName(StrBytes::from_static_str(n)))
            .to_vec();
        for version in [1, 5] {
            let req = DeleteTopicsRequest::default().with_topic_names(names.clone());
            let resp = delete_topics(&broker, &config, req, version).await;
            let codes: Vec<_> = resp.responses.iter().map(|r| r.error_code).collect();
            assert_eq!(codes, vec![invalid, invalid], "v{version}");
            let messages = resp.responses.iter().all(|r| r.error_message.is_some());
            assert_eq!(messages, version >= 5, "v{version}");
        }
        let by_id = DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
            .with_name(None)
            .with_topic_id(uuid_carrier([0xEE; 16]).topic_id)]);
        let resp = delete_topics(&broker, &config, by_id, 6).await;
        let r = &resp.responses[0];
        assert_eq!(
            (r.error_code, *r.topic_id.as_bytes()),
            (invalid, [0xEE; 16])
        );
    }
}
