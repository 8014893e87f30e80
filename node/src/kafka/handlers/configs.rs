//! DescribeConfigs, answered from the cluster view: a topic reports the overrides set at its
//! creation and the defaults in [`TOPIC_CONFIGS`] for the rest; a broker reports no configs.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::types::valid_topic_name;

use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::{Broker, ClusterView};
use crate::kafka::guard::{GuardError, Reader};

pub struct DescribeConfigs;

impl Handler for DescribeConfigs {
    type Request = DescribeConfigsRequest;

    /// v1..=4.
    fn layout(r: &mut Reader<'_>, v: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.skip(1)?; // resource_type
            r.string()?; // resource_name
            r.array(|r| r.string())?; // configuration_keys (nullable)
            r.tags()
        })?;
        r.skip(1)?; // include_synonyms
        if v >= 3 {
            r.skip(1)?; // include_documentation
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: DescribeConfigsRequest,
    ) -> Answer<DescribeConfigsResponse> {
        let view = ctx.broker.cluster();
        Answer::Reply(describe_configs(&view, &request, ctx.version))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.results.iter().map(|r| r.error_code));
    }

    #[cfg(test)]
    fn sample(v: i16) -> DescribeConfigsRequest {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        DescribeConfigsRequest::default()
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(StrBytes::from_static_str("topic-a"))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_BROKER)
                    .with_configuration_keys(None),
            ])
            .with_include_synonyms(true)
            .with_include_documentation(v >= 3)
    }
}

/// DescribeConfigs resource types (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
pub(super) const SOURCE_TOPIC_CONFIG: i8 = 1;
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
                    let Some(topic) = view.topic(name) else {
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

/// One config of a topic as reported.
pub(super) struct ConfigEntry {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) source: i8,
    config_type: i8,
    /// The broker config a default value comes from.
    broker_name: Option<&'static str>,
}

/// Each known config with its override or default, then any other override the controller
/// accepted.
pub(super) fn config_entries(overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
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
