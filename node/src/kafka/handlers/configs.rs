//! DescribeConfigs, answered from the cluster view and the registry of topic configs
//! ([`railyard_core::topic_config`]): a topic reports every config Kafka documents, with its
//! override, else the broker-level default (this broker's dynamic config, the cluster-wide
//! dynamic default, its static config) or Kafka's default; a broker reports the broker-level
//! defaults of those configs, which AlterConfigs can change dynamically; the cluster-wide
//! default resource (empty name) reports the dynamic defaults set.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::metadata::broker_resource_id;
use railyard_core::topic_config::{
    find, BrokerDefaults, BrokerLayers, ConfigDef, ConfigType, Source, TOPIC_CONFIGS,
};
use railyard_core::types::{valid_topic_name, NodeId};

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
        Answer::Reply(describe_configs(
            &view,
            &request,
            ctx.version,
            ctx.broker.node_id(),
            &ctx.config.topic_defaults,
        ))
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

/// DescribeConfigs: topics report every registered config, brokers their topic-config defaults
/// (their dynamic configs over `defaults`, this broker's static ones), the cluster-wide default
/// resource (empty name) its dynamic defaults. `own` is the answering broker: a topic's
/// broker-level values are its.
pub fn describe_configs(
    view: &ClusterView,
    req: &DescribeConfigsRequest,
    version: i16,
    own: NodeId,
    defaults: &BrokerDefaults,
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
            let entries = match r.resource_type {
                RESOURCE_TOPIC => match view.topic(name) {
                    Some(topic) => {
                        topic_entries(&topic.configs, &view.broker_layers(own, defaults))
                    }
                    None => {
                        let e = if valid_topic_name(name) {
                            ResponseError::UnknownTopicOrPartition
                        } else {
                            ResponseError::InvalidTopicException
                        };
                        return fail(out, e, format!("unknown topic {name}"));
                    }
                },
                RESOURCE_BROKER => match broker_resource_id(name) {
                    Some(None) => default_entries(&view.broker_layers(0, defaults)),
                    Some(Some(id)) => broker_entries(&view.broker_layers(id, defaults)),
                    None => {
                        let msg = format!("broker resource name {name:?} is not a broker id");
                        return fail(out, ResponseError::InvalidRequest, msg);
                    }
                },
                other => {
                    let msg = format!("resource type {other} is not supported");
                    return fail(out, ResponseError::InvalidRequest, msg);
                }
            };
            let wanted = |n: &str| match &r.configuration_keys {
                None => true,
                Some(keys) => keys.iter().any(|k| k.as_str() == n),
            };
            let configs = entries
                .into_iter()
                .filter(|e| wanted(&e.name))
                .map(|e| describe_entry(e, req, version))
                .collect();
            out.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe_entry(
    e: ConfigEntry,
    req: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name.clone()))
        .with_value(e.value.clone().map(StrBytes::from_string))
        .with_read_only(e.read_only)
        .with_config_source(e.source.code())
        .with_is_sensitive(false);
    if req.include_synonyms {
        out.synonyms = e
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(value.map(StrBytes::from_string))
                    .with_source(source.code())
            })
            .collect();
    }
    if version >= 3 {
        out.config_type = e.kind.map_or(0, ConfigType::code);
        out.documentation = req
            .include_documentation
            .then(|| e.doc.map(StrBytes::from_static_str))
            .flatten();
    }
    out
}

/// One config as reported.
pub(super) struct ConfigEntry {
    pub(super) name: String,
    pub(super) value: Option<String>,
    pub(super) source: Source,
    pub(super) read_only: bool,
    kind: Option<ConfigType>,
    doc: Option<&'static str>,
    /// Where the value could come from, most specific first, as Kafka lists synonyms.
    synonyms: Vec<(String, Option<String>, Source)>,
}

/// Every registered config of a topic with its override or default, then any other override
/// the metadata holds (none that a client could set).
pub(super) fn topic_entries(
    overrides: &BTreeMap<String, String>,
    layers: &BrokerLayers,
) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (value, source) = layers.effective(def, overrides);
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_string(), Some(v.clone()), Source::Topic));
            }
            synonyms.extend(broker_synonyms(def, layers));
            ConfigEntry {
                name: def.name.to_string(),
                value,
                source,
                read_only: false,
                kind: Some(def.kind),
                doc: Some(def.doc),
                synonyms,
            }
        })
        .collect();
    for (k, v) in overrides {
        if find(k).is_none() {
            out.push(ConfigEntry {
                name: k.clone(),
                value: Some(v.clone()),
                source: Source::Topic,
                read_only: false,
                kind: None,
                doc: None,
                synonyms: vec![(k.clone(), Some(v.clone()), Source::Topic)],
            });
        }
    }
    out
}

/// The broker-level synonyms of a topic config: the value of each broker layer that sets it
/// (dynamic, dynamic default, static), then Kafka's default.
fn broker_synonyms(
    def: &ConfigDef,
    layers: &BrokerLayers,
) -> Vec<(String, Option<String>, Source)> {
    let Some(broker_name) = def.broker_name else {
        return Vec::new();
    };
    let mut out: Vec<(String, Option<String>, Source)> = layers
        .values(def)
        .into_iter()
        .map(|(source, v)| (broker_name.to_string(), Some(v), source))
        .collect();
    out.push((
        broker_name.to_string(),
        def.default.map(str::to_owned),
        Source::Default,
    ));
    out
}

/// A broker's configs: the broker-level default of every topic config that has one, from its
/// layers. Each can be altered dynamically (AlterConfigs of the BROKER resource).
fn broker_entries(layers: &BrokerLayers) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = TOPIC_CONFIGS
        .iter()
        .filter_map(|def| {
            let name = def.broker_name?;
            let (value, source) = layers.effective(def, &BTreeMap::new());
            Some(ConfigEntry {
                name: name.to_string(),
                value,
                source,
                read_only: false,
                kind: Some(def.kind),
                doc: Some(def.doc),
                synonyms: broker_synonyms(def, layers),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The cluster-wide default resource: only the dynamic defaults set, as Kafka lists them.
fn default_entries(layers: &BrokerLayers) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = layers
        .dynamic_default
        .iter()
        .map(|(name, value)| {
            let def = TOPIC_CONFIGS.iter().find(|d| {
                d.broker_name == Some(name) || d.broker_alts.iter().any(|a| a.name == name)
            });
            let source = Source::DynamicDefaultBroker;
            ConfigEntry {
                name: name.clone(),
                value: Some(value.clone()),
                source,
                read_only: false,
                kind: def.map(|d| d.kind),
                doc: def.map(|d| d.doc),
                synonyms: vec![(name.clone(), Some(value.clone()), source)],
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::common::sample_view;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;

    fn ask(resource_type: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsRequest {
        let keys = keys.map(|k| {
            k.iter()
                .map(|k| StrBytes::from_string(k.to_string()))
                .collect()
        });
        DescribeConfigsRequest::default()
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(keys)])
            .with_include_synonyms(true)
            .with_include_documentation(true)
    }

    #[test]
    fn test_topic_reports_every_registered_config_with_its_source_and_synonyms() {
        // A topic lists all of Kafka's topic configs; a value comes from the topic's override,
        // else the broker's static default, else Kafka's, and the synonyms say so in order.
        let defaults = BrokerDefaults(BTreeMap::from([(
            "log.retention.ms".to_string(),
            "3600000".to_string(),
        )]));
        let resp = describe_configs(
            &sample_view(),
            &ask(RESOURCE_TOPIC, "orders", None),
            4,
            1,
            &defaults,
        );
        let r = &resp.results[0];
        assert_eq!(r.error_code, 0);
        assert_eq!(r.configs.len(), TOPIC_CONFIGS.len());
        let get = |n: &str| r.configs.iter().find(|c| c.name.as_str() == n).unwrap();
        let retention = get("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.config_source, Source::Broker.code());
        let syn: Vec<_> = retention
            .synonyms
            .iter()
            .map(|s| (s.name.to_string(), s.source))
            .collect();
        assert_eq!(
            syn,
            vec![
                ("log.retention.ms".to_string(), Source::Broker.code()),
                ("log.retention.ms".to_string(), Source::Default.code())
            ]
        );
        let max = get("max.message.bytes");
        assert_eq!(
            (max.value.as_deref(), max.config_source, max.config_type),
            (
                Some("1048588"),
                Source::Default.code(),
                ConfigType::Int.code()
            )
        );
        assert!(max.documentation.is_some());
    }

    #[test]
    fn test_broker_reports_its_defaults_and_bad_resources_fail() {
        let defaults = BrokerDefaults(BTreeMap::from([(
            "message.max.bytes".to_string(),
            "2000000".to_string(),
        )]));
        let view = sample_view();
        let keys = ["message.max.bytes", "log.retention.ms"];
        let resp = describe_configs(
            &view,
            &ask(RESOURCE_BROKER, "1", Some(&keys)),
            4,
            1,
            &defaults,
        );
        let c = &resp.results[0].configs;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name.as_str(), "log.retention.ms");
        assert_eq!(c[0].config_source, Source::Default.code());
        assert_eq!(
            (c[1].value.as_deref(), c[1].config_source, c[1].read_only),
            (Some("2000000"), Source::Broker.code(), false)
        );
        let bad = describe_configs(&view, &ask(RESOURCE_BROKER, "x", None), 4, 1, &defaults);
        assert_eq!(
            bad.results[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        let unknown = describe_configs(&view, &ask(RESOURCE_TOPIC, "nope", None), 4, 1, &defaults);
        assert_eq!(
            unknown.results[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
    }

    #[test]
    fn test_dynamic_broker_configs_layer_over_static_ones() {
        // Kafka's order: this broker's dynamic config, then the cluster-wide dynamic default,
        // then the static config file, then Kafka's default; each source reported.
        let defaults = BrokerDefaults(BTreeMap::from([
            ("log.retention.ms".to_string(), "3600000".to_string()),
            ("message.max.bytes".to_string(), "2000000".to_string()),
        ]));
        let dynamic = BTreeMap::from([
            (
                String::new(),
                BTreeMap::from([("log.retention.hours".to_string(), "2".to_string())]),
            ),
            (
                "1".to_string(),
                BTreeMap::from([("message.max.bytes".to_string(), "3000000".to_string())]),
            ),
        ]);
        let view = sample_view().with_broker_configs(dynamic);
        let topic = describe_configs(&view, &ask(RESOURCE_TOPIC, "orders", None), 4, 1, &defaults);
        let get = |n: &str| {
            let c = topic.results[0]
                .configs
                .iter()
                .find(|c| c.name.as_str() == n);
            let c = c.unwrap();
            (c.value.as_deref().map(str::to_string), c.config_source)
        };
        assert_eq!(
            get("retention.ms"),
            (Some("7200000".into()), Source::DynamicDefaultBroker.code()),
            "hours set dynamically beat a static log.retention.ms"
        );
        assert_eq!(
            get("max.message.bytes"),
            (Some("3000000".into()), Source::DynamicBroker.code())
        );
        let keys = ["message.max.bytes"];
        let other = describe_configs(
            &view,
            &ask(RESOURCE_BROKER, "2", Some(&keys)),
            4,
            1,
            &defaults,
        );
        let c = &other.results[0].configs[0];
        assert_eq!(
            (c.value.as_deref(), c.config_source),
            (Some("2000000"), Source::Broker.code()),
            "broker 2 has no dynamic config of its own"
        );
        let cluster = describe_configs(&view, &ask(RESOURCE_BROKER, "", None), 4, 1, &defaults);
        let names: Vec<_> = cluster.results[0]
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.config_source))
            .collect();
        assert_eq!(
            names,
            vec![(
                "log.retention.hours".to_string(),
                Source::DynamicDefaultBroker.code()
            )]
        );
    }
}
