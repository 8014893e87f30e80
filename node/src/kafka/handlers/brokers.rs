//! UnregisterBroker: taking a broker out of the cluster, through the controller
//! ([`Request::UnregisterBroker`]), forwarded there like the other controller APIs.
//!
//! Kafka drops the registration at once and leaves the broker's replicas offline; Railyard
//! drains first (see `railyard_core::controller::balance`): the answer means the decommission
//! is recorded. Every replica then moves off the broker, and once it holds none and has been
//! stopped it is unregistered, after which DescribeCluster no longer lists it, fenced brokers
//! included. BROKER_ID_NOT_REGISTERED for an unknown id; INVALID_REQUEST for a controller
//! voter; INVALID_REPLICATION_FACTOR when too few brokers would be left for some partition.

use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;
use railyard_core::api::{Request, Response};
use railyard_core::types::NodeId;

use super::topics::AdminError;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::forward::to_controller;
use crate::kafka::guard::{GuardError, Reader};

pub struct UnregisterBroker;

impl Handler for UnregisterBroker {
    type Request = UnregisterBrokerRequest;

    /// v0 (flexible).
    fn layout(r: &mut Reader<'_>, _version: i16) -> Result<(), GuardError> {
        r.skip(4) // broker_id
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: UnregisterBrokerRequest,
    ) -> Answer<UnregisterBrokerResponse> {
        if let Some(answer) = to_controller(&ctx, &request).await {
            return Answer::Reply(answer);
        }
        Answer::Reply(unregister(ctx.broker, &request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(_version: i16) -> UnregisterBrokerRequest {
        UnregisterBrokerRequest::default().with_broker_id(kafka_protocol::messages::BrokerId(3))
    }
}

async fn unregister<B: Broker>(
    broker: &B,
    req: &UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let resp = UnregisterBrokerResponse::default();
    let Ok(id) = NodeId::try_from(req.broker_id.0) else {
        let e = AdminError::kafka(
            kafka_protocol::ResponseError::BrokerIdNotRegistered,
            format!("broker {} is not registered", req.broker_id.0),
        );
        return with_error(resp, e);
    };
    match broker
        .request(Request::UnregisterBroker { broker: id })
        .await
    {
        Response::UnregisterBroker(Ok(())) => resp,
        Response::UnregisterBroker(Err(e)) => with_error(resp, AdminError::core(&e)),
        _ => with_error(resp, AdminError::unexpected()),
    }
}

fn with_error(resp: UnregisterBrokerResponse, e: AdminError) -> UnregisterBrokerResponse {
    resp.with_error_code(e.code)
        .with_error_message(Some(StrBytes::from_string(e.message)))
}
