//! InitProducerId, for idempotent producers.
//!
//! The core's producer-id allocator answers ([`railyard_core::producer_ids`]): a new id from
//! this broker's block, or the same id with its epoch bumped when the client names its current
//! id and epoch (KIP-360). Any broker answers (clients send it to the least loaded one).
//! Transactions are not implemented: a request with a transactional id is INVALID_REQUEST, and
//! nothing else is advertised for them.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use railyard_core::api::{Request, Response};

use super::common::client_error_code;
use super::{Answer, Ctx, Handler, ResponseOf};
use crate::broker::Broker;
use crate::kafka::guard::{GuardError, Reader};

pub struct InitProducerId;

impl Handler for InitProducerId {
    type Request = InitProducerIdRequest;

    /// v0..=5: the producer id and epoch from v3.
    fn layout(r: &mut Reader<'_>, version: i16) -> Result<(), GuardError> {
        r.string()?; // transactional_id (nullable)
        r.skip(4)?; // transaction_timeout_ms
        if version >= 3 {
            r.skip(8 + 2)?; // producer_id, producer_epoch
        }
        Ok(())
    }

    async fn handle<B: Broker>(
        ctx: Ctx<'_, B>,
        request: InitProducerIdRequest,
    ) -> Answer<InitProducerIdResponse> {
        Answer::Reply(init_producer_id(ctx.broker, request).await)
    }

    fn error_codes(response: &ResponseOf<Self>, out: &mut Vec<i16>) {
        out.push(response.error_code);
    }

    #[cfg(test)]
    fn sample(version: i16) -> InitProducerIdRequest {
        let r = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        if version >= 3 {
            r.with_producer_id(ProducerId(7)).with_producer_epoch(3)
        } else {
            r
        }
    }
}

async fn init_producer_id<B: Broker>(
    broker: &B,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(ResponseError::InvalidRequest.code());
    }
    let current = (request.producer_id.0 >= 0 && request.producer_epoch >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    match broker.request(Request::InitProducerId { current }).await {
        Response::InitProducerId(Ok((id, epoch))) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Response::InitProducerId(Err(e)) => failed(client_error_code(&e)),
        _ => failed(ResponseError::UnknownServerError.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::common::{sample_view, ViewOnly};

    #[tokio::test]
    async fn test_transactional_ids_are_refused_without_reaching_the_core() {
        let broker = ViewOnly(std::sync::Arc::new(sample_view()));
        let request = InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_static_str("txn-1"),
            ),
        ));
        let r = init_producer_id(&broker, request).await;
        assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(r.producer_id.0, -1);
    }
}
