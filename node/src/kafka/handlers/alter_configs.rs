//! AlterConfigs and IncrementalAlterConfigs. A topic's change goes to the controller as one
//! [`Request::AlterTopicConfigs`]: it resolves the ops on the current overrides, validates the
//! result with the config registry and commits one record, so a resource changes entirely or
//! not at all. A BROKER resource (a broker id, or the empty name for the cluster-wide
//! defaults) is a [`Request::AlterBrokerConfigs`] the same way: its dynamic configs are the
//! broker synonyms of topic configs (`log.retention.ms`, `message.max.bytes`, ...), in the
//! metadata log, and apply to every topic without an override of its own, over the static
//! `[topic_defaults]` of the node config. Clients send these to any broker; one that is not
//! the controller forwards the request there ([`crate::kafka::forward`]).

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use railyard_core::api::{ConfigChange, Request, Response};
use railyard_core::metadata::broker_resource_id;
use railyard_core::topic_config::AlterOp;

use super::configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::topics::{AdminError, Duplicates};
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};

pub struct AlterConfigs;

impl Handler for AlterConfigs {
    type Request = AlterConfigsRequest;

    /// v0..=2 (flexible in v2).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.skip(1)?; // resource_type
            r.string()?; // resource_name
            r.array(|r| {
                r.string()?; // name
                r.string()?; // value (nullable)
                r.tags()
            })?;
            r.tags()
        })?;
        r.skip(1) // validate_only
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: AlterConfigsRequest,
    ) -> Answer<AlterConfigsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        let validate_only = request.validate_only;
        let resources = request.resources.into_iter().map(|r| {
            let mut configs = BTreeMap::new();
            let mut null = None;
            for c in r.configs {
                match c.value {
                    Some(v) => {
                        configs.insert(c.name.to_string(), v.to_string());
                    }
                    None => null = Some(c.name.to_string()),
                }
            }
            let change = match null {
                Some(name) => Err(AdminError::kafka(
                    ResponseError::InvalidRequest,
                    format!("a null value is not supported for {name}"),
                )),
                None => Ok(ConfigChange::Replace(configs)),
            };
            (r.resource_type, r.resource_name, change)
        });
        let results = alter(ctx.broker, resources.collect(), validate_only).await;
        let responses = results
            .into_iter()
            .map(|(resource_type, name, e)| {
                use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(e.as_ref().map_or(0, |e| e.code))
                    .with_error_message(e.map(|e| StrBytes::from_string(e.message)))
            })
            .collect();
        Answer::Reply(AlterConfigsResponse::default().with_responses(responses))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.responses.iter().map(|r| r.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> AlterConfigsRequest {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("1000")));
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("topic-a"))
            .with_configs(vec![config.clone(), config]);
        AlterConfigsRequest::default().with_resources(vec![resource.clone(), resource])
    }
}

pub struct IncrementalAlterConfigs;

impl Handler for IncrementalAlterConfigs {
    type Request = IncrementalAlterConfigsRequest;

    /// v0..=1 (flexible in v1).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.array(|r| {
            r.skip(1)?; // resource_type
            r.string()?; // resource_name
            r.array(|r| {
                r.string()?; // name
                r.skip(1)?; // config_operation
                r.string()?; // value (nullable)
                r.tags()
            })?;
            r.tags()
        })?;
        r.skip(1) // validate_only
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: IncrementalAlterConfigsRequest,
    ) -> Answer<IncrementalAlterConfigsResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        let validate_only = request.validate_only;
        let resources = request.resources.into_iter().map(|r| {
            let ops: Result<Vec<(String, AlterOp)>, AdminError> = r
                .configs
                .iter()
                .map(|c| {
                    let op = AlterOp::from_code(c.config_operation, c.value.as_deref());
                    op.map(|op| (c.name.to_string(), op)).ok_or_else(|| {
                        AdminError::kafka(
                            ResponseError::InvalidRequest,
                            format!(
                                "operation {} with value {:?} is not valid for {}",
                                c.config_operation,
                                c.value.as_deref(),
                                c.name.as_str()
                            ),
                        )
                    })
                })
                .collect();
            (
                r.resource_type,
                r.resource_name,
                ops.map(ConfigChange::Incremental),
            )
        });
        let results = alter(ctx.broker, resources.collect(), validate_only).await;
        let responses = results
            .into_iter()
            .map(|(resource_type, name, e)| {
                use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(e.as_ref().map_or(0, |e| e.code))
                    .with_error_message(e.map(|e| StrBytes::from_string(e.message)))
            })
            .collect();
        Answer::Reply(IncrementalAlterConfigsResponse::default().with_responses(responses))
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.extend(response.responses.iter().map(|r| r.error_code));
    }

    #[cfg(test)]
    fn sample(_version: i16) -> IncrementalAlterConfigsRequest {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("cleanup.policy"))
            .with_config_operation(2)
            .with_value(Some(StrBytes::from_static_str("delete")));
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("topic-a"))
            .with_configs(vec![config.clone(), config]);
        IncrementalAlterConfigsRequest::default().with_resources(vec![resource.clone(), resource])
    }
}

/// A BROKER resource's change, through the controller.
async fn alter_broker<B: Broker>(
    broker: &B,
    name: &str,
    change: ConfigChange,
    validate_only: bool,
) -> Result<(), AdminError> {
    let Some(id) = broker_resource_id(name) else {
        return Err(AdminError::kafka(
            ResponseError::InvalidRequest,
            format!("{name:?} is not a broker id (or empty, for the cluster-wide defaults)"),
        ));
    };
    let request = Request::AlterBrokerConfigs {
        broker: id,
        change,
        validate_only,
    };
    match broker.request(request).await {
        Response::AlterBrokerConfigs(r) => r.map_err(|e| AdminError::core(&e)),
        _ => Err(AdminError::unexpected()),
    }
}

/// One resource of an alter: its type, its name and the change asked (or why it is refused).
type Resource = (i8, StrBytes, Result<ConfigChange, AdminError>);

/// Runs each resource's change, in request order; `None` is success.
async fn alter<B: Broker>(
    broker: &B,
    resources: Vec<Resource>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, Option<AdminError>)> {
    let mut dups = Duplicates::new(resources.iter().map(|r| (r.0, r.1.to_string())));
    let mut out = Vec::with_capacity(resources.len());
    for (resource_type, name, change) in resources {
        let outcome = match dups.check(&(resource_type, name.to_string())) {
            Some(false) => continue,
            Some(true) => Err(AdminError::kafka(
                ResponseError::InvalidRequest,
                "the resource is named twice",
            )),
            None => match (resource_type, change) {
                (_, Err(e)) => Err(e),
                (RESOURCE_TOPIC, Ok(change)) => {
                    let request = Request::AlterTopicConfigs {
                        topic: name.to_string(),
                        change,
                        validate_only,
                    };
                    match broker.request(request).await {
                        Response::AlterTopicConfigs(r) => r.map_err(|e| AdminError::core(&e)),
                        _ => Err(AdminError::unexpected()),
                    }
                }
                (RESOURCE_BROKER, Ok(change)) => {
                    alter_broker(broker, &name, change, validate_only).await
                }
                (other, Ok(_)) => Err(AdminError::kafka(
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            },
        };
        out.push((resource_type, name, outcome.err()));
    }
    out
}
