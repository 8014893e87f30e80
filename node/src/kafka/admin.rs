//! The admin APIs: CreateTopics, DeleteTopics and DescribeConfigs.
//!
//! Topic changes go to the core as [`Request::CreateTopic`] / [`Request::DeleteTopic`]; only the
//! controller (the metadata partition's leader, Metadata's `controller_id`) accepts them, and
//! every other broker answers NOT_CONTROLLER so the client retries there. The topics of one
//! request run concurrently, each on its own task, and are answered in request order.
//!
//! `timeout_ms` is advisory: the core bounds a proposal's lifetime itself (an expired one is
//! REQUEST_TIMED_OUT). It only caps how long a successful change waits to become visible in
//! this broker's cluster view, which is what lets CreateTopics v7 report the new topic's id and
//! a client's next Metadata on this connection see the topic.
//!
//! DescribeConfigs answers from the cluster view: the overrides set at creation, and the
//! defaults in [`TOPIC_CONFIGS`] for the rest.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{ClientError, Request, Response};
use railyard_core::types::valid_topic_name;
use tokio::task::JoinHandle;

use super::codec::uuid_carrier;
use super::handlers::client_error_code;
use super::KafkaConfig;
use crate::broker::{Broker, ClusterView};

/// Partitions of a topic created with `num_partitions` -1 (Kafka's `num.partitions`).
pub const DEFAULT_PARTITIONS: i64 = 1;
/// Replication factor of a topic created with `replication_factor` -1, capped at the number of
/// brokers (Kafka's `default.replication.factor`).
pub const DEFAULT_REPLICATION_FACTOR: i64 = 3;

/// DescribeConfigs resource types (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// Config types (Kafka's `ConfigDef.Type` as numbered in DescribeConfigs v3+).
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// A topic config the metadata holds, with the default a topic without an override has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: &'static str,
    pub default: &'static str,
    /// The broker config the default comes from (reported as its synonym).
    pub broker_name: &'static str,
    config_type: i8,
}

/// The topic configs reported, in Kafka's (alphabetical) order.
pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    TopicConfig {
        name: "cleanup.policy",
        default: "delete",
        broker_name: "log.cleanup.policy",
        config_type: TYPE_LIST,
    },
    TopicConfig {
        name: "retention.bytes",
        default: "-1",
        broker_name: "log.retention.bytes",
        config_type: TYPE_LONG,
    },
    TopicConfig {
        name: "retention.ms",
        default: "604800000",
        broker_name: "log.retention.ms",
        config_type: TYPE_LONG,
    },
    TopicConfig {
        name: "segment.bytes",
        default: "1073741824",
        broker_name: "log.segment.bytes",
        config_type: TYPE_INT,
    },
];

/// Why one topic of an admin request failed: a Kafka error code and the message sent with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    fn kafka(e: ResponseError, message: impl Into<String>) -> AdminError {
        AdminError {
            code: e.code(),
            message: message.into(),
        }
    }

    fn core(e: &ClientError) -> AdminError {
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

    fn unexpected() -> AdminError {
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
struct Duplicates<K>(HashMap<K, bool>);

impl<K: Hash + Eq> Duplicates<K> {
    fn new(keys: impl Iterator<Item = K>) -> Self {
        let mut seen: HashMap<K, bool> = HashMap::new();
        for k in keys {
            seen.entry(k).and_modify(|dup| *dup = true).or_insert(false);
        }
        seen.retain(|_, dup| *dup);
        Duplicates(seen)
    }

    /// `None` if `key` is not duplicated; else whether this is the copy to answer (the first).
    fn check<Q>(&mut self, key: &Q) -> Option<bool>
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
    config: &KafkaConfig,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let view = broker.cluster();
    let brokers = i64::try_from(view.brokers.len()).unwrap_or(i64::MAX);
    let default_rf = DEFAULT_REPLICATION_FACTOR.min(brokers).max(1);
    let wait = visible_wait(config, req.timeout_ms);
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
                    out.configs = Some(creatable_configs(&created.configs));
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
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    default_rf: i64,
    validate_only: bool,
) -> Result<Request, AdminError> {
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
fn manual_assignment(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<Vec<Vec<u64>>, AdminError> {
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
/// to show the topic, for its id.
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
    let id = if validate_only {
        None
    } else {
        wait_for_view(&broker, wait, |v| {
            v.topics.iter().find(|t| t.name == name).map(|t| t.id)
        })
        .await
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
async fn wait_for_view<B: Broker, T>(
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

/// The configs of a created topic as CreateTopics v5+ reports them: each known config with its
/// override or default, then any other override the controller accepted.
fn creatable_configs(overrides: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    config_entries(overrides)
        .into_iter()
        .map(|e| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(e.name))
                .with_value(Some(StrBytes::from_string(e.value)))
                .with_config_source(e.source)
        })
        .collect()
}

/// One config of a topic as reported.
struct ConfigEntry {
    name: String,
    value: String,
    source: i8,
    config_type: i8,
    /// The broker config a default value comes from.
    broker_name: Option<&'static str>,
}

fn config_entries(overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = TOPIC_CONFIGS
        .iter()
        .map(|c| match overrides.get(c.name) {
            Some(v) => ConfigEntry {
                name: c.name.to_string(),
                value: v.clone(),
                source: SOURCE_TOPIC_CONFIG,
                config_type: c.config_type,
                broker_name: None,
            },
            None => ConfigEntry {
                name: c.name.to_string(),
                value: c.default.to_string(),
                source: SOURCE_DEFAULT_CONFIG,
                config_type: c.config_type,
                broker_name: Some(c.broker_name),
            },
        })
        .collect();
    for (k, v) in overrides {
        if !TOPIC_CONFIGS.iter().any(|c| c.name == k) {
            out.push(ConfigEntry {
                name: k.clone(),
                value: v.clone(),
                source: SOURCE_TOPIC_CONFIG,
                config_type: 0,
                broker_name: None,
            });
        }
    }
    out
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
        let resolved = match (&name, id) {
            (Some(n), None) => {
                let id = view
                    .topics
                    .iter()
                    .find(|t| t.name == n.as_str())
                    .map(|t| t.id);
                Ok((n.clone(), id))
            }
            (None, Some(id)) => match view.topics.iter().find(|t| t.id == id) {
                Some(t) => Ok((TopicName(StrBytes::from_string(t.name.clone())), Some(id))),
                None => Err(AdminError::kafka(
                    ResponseError::UnknownTopicId,
                    "no topic has this id",
                )),
            },
            (Some(_), Some(_)) => Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "name a topic by its name or by its id, not both",
            )),
            (None, None) => Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "a topic needs a name or an id",
            )),
        };
        targets.push(match resolved {
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

/// Runs one topic's deletion and, if it happened, waits (up to `wait`) for this broker's view
/// to drop the topic.
async fn delete_one<B: Broker>(broker: B, name: String, wait: Duration) -> Result<(), AdminError> {
    let request = Request::DeleteTopic { name: name.clone() };
    match broker.request(request).await {
        Response::DeleteTopic(Ok(())) => {}
        Response::DeleteTopic(Err(e)) => return Err(AdminError::core(&e)),
        _ => return Err(AdminError::unexpected()),
    }
    wait_for_view(&broker, wait, |v| {
        (!v.topics.iter().any(|t| t.name == name)).then_some(())
    })
    .await;
    Ok(())
}

/// DescribeConfigs: topics report [`TOPIC_CONFIGS`], with the overrides set at creation;
/// brokers report no configs.
pub fn describe_configs(
    view: &ClusterView,
    req: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .iter()
        .map(|r| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_message(None);
            let fail = |out: DescribeConfigsResult, e: ResponseError, msg: String| {
                out.with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
            };
            let name = r.resource_name.as_str();
            match r.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = view.topics.iter().find(|t| t.name == name) else {
                        let e = if valid_topic_name(name) {
                            ResponseError::UnknownTopicOrPartition
                        } else {
                            ResponseError::InvalidTopicException
                        };
                        return fail(out, e, format!("unknown topic {name}"));
                    };
                    let wanted = |n: &str| match &r.configuration_keys {
                        None => true,
                        Some(keys) => keys.iter().any(|k| k.as_str() == n),
                    };
                    let configs = config_entries(&topic.configs)
                        .into_iter()
                        .filter(|e| wanted(&e.name))
                        .map(|e| describe_entry(e, req.include_synonyms, version))
                        .collect();
                    out.with_configs(configs)
                }
                // The broker's own settings are not exposed; an empty list is a valid answer
                // that tools asking for them (kcat, admin clients) accept.
                RESOURCE_BROKER if name.is_empty() || name.parse::<i32>().is_ok() => out,
                RESOURCE_BROKER => fail(
                    out,
                    ResponseError::InvalidRequest,
                    format!("broker resource name {name:?} is not a broker id"),
                ),
                other => fail(
                    out,
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                ),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(e: ConfigEntry, synonyms: bool, version: i16) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name.clone()))
        .with_value(Some(StrBytes::from_string(e.value.clone())))
        .with_config_source(e.source);
    if synonyms {
        // Kafka lists where the value comes from, most specific first: the topic override, or
        // the broker default it falls back to.
        let (name, source) = match e.broker_name {
            Some(b) => (b.to_string(), SOURCE_DEFAULT_CONFIG),
            None => (e.name, SOURCE_TOPIC_CONFIG),
        };
        out.synonyms = vec![DescribeConfigsSynonym::default()
            .with_name(StrBytes::from_string(name))
            .with_value(Some(StrBytes::from_string(e.value)))
            .with_source(source)];
    }
    if version >= 3 {
        out.config_type = e.config_type;
        out.documentation = None;
    }
    out
}
