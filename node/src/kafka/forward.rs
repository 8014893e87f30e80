//! Forwarding of controller requests (Kafka's KIP-590): clients send CreateTopics,
//! DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs to whichever broker
//! they think is the controller (or, for configs, to any broker), but only the controller can
//! change the metadata. A broker that is not the controller relays the request, unchanged, to
//! the controller's Kafka listener and relays the answer back, so a client never sees
//! NOT_CONTROLLER for a controller that merely moved (librdkafka does not retry it).
//!
//! A forwarded request carries [`FORWARDED_PREFIX`] in its client id and is never forwarded
//! again: two brokers that each think the other is the controller answer NOT_CONTROLLER
//! instead of passing a request back and forth. If forwarding fails, the local core answers
//! (NOT_CONTROLLER, retriable). One fresh connection per forwarded request: admin changes are
//! rare, and a connection that outlived a controller change would forward to the wrong broker.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::{Broker, ClusterView};
use crate::kafka::handlers::Ctx;

/// Marks a forwarded request's client id.
pub const FORWARDED_PREFIX: &str = "railyard-forwarded:";

/// How long a forwarded request may take, connection included.
pub const FORWARD_TIMEOUT_MS: u64 = 30_000;

/// The largest response accepted from the controller.
const RESPONSE_MAX_BYTES: usize = 64 << 20;

/// Why a request could not be forwarded; the client gets NOT_CONTROLLER and retries.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no controller is known")]
    NoController,
    #[error("controller {0} has no known listener")]
    UnknownController(u64),
    #[error("forwarding to the controller: {0}")]
    Io(#[from] std::io::Error),
    #[error("forwarding to the controller timed out")]
    Timeout,
    #[error("forwarding to the controller: {0}")]
    Protocol(String),
}

/// The controller's Kafka listener, if this broker is not the controller and knows it.
/// `None`: this broker is the controller (or none is known: the local core answers).
pub fn controller_elsewhere(
    view: &ClusterView,
    me: u64,
) -> Option<Result<SocketAddr, ForwardError>> {
    let controller = view.controller()?;
    if controller == me {
        return None;
    }
    let Some(b) = view.broker(controller) else {
        return Some(Err(ForwardError::UnknownController(controller)));
    };
    let addr = format!("{}:{}", b.host, b.port);
    Some(
        addr.parse::<SocketAddr>()
            .map_err(|_| ForwardError::UnknownController(controller)),
    )
}

/// The controller's answer to `req`, if this broker is not the controller, knows which one
/// is, and the request was not forwarded already; `None`: answer locally.
pub async fn to_controller<B: Broker, R: Request>(
    ctx: &Ctx<'_, B>,
    req: &R,
) -> Option<R::Response> {
    if ctx.client_id.starts_with(FORWARDED_PREFIX) {
        return None;
    }
    let addr = controller_elsewhere(&ctx.broker.cluster(), ctx.broker.node_id())?.ok()?;
    let client_id = format!("{FORWARDED_PREFIX}{}", ctx.client_id);
    forward(addr, req, ctx.version, &client_id).await.ok()
}

/// Sends `req` at `version` to `addr` and returns the decoded response.
pub async fn forward<R: Request>(
    addr: SocketAddr,
    req: &R,
    version: i16,
    client_id: &str,
) -> Result<R::Response, ForwardError> {
    let call = async {
        let mut stream = TcpStream::connect(addr).await?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| req.encode(&mut body, version))
            .map_err(|e| ForwardError::Protocol(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await?;
        // Free on a real socket; madsim's buffers writes until it.
        stream.flush().await?;
        let len = stream.read_u32().await? as usize;
        if len > RESPONSE_MAX_BYTES {
            return Err(ForwardError::Protocol(format!("a {len}-byte response")));
        }
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        decode::<R::Response>(Bytes::from(buf), version)
    };
    tokio::time::timeout(Duration::from_millis(FORWARD_TIMEOUT_MS), call)
        .await
        .map_err(|_| ForwardError::Timeout)?
}

fn decode<R: Decodable + HeaderVersion>(mut frame: Bytes, version: i16) -> Result<R, ForwardError> {
    let header = ResponseHeader::decode(&mut frame, R::header_version(version))
        .map_err(|e| ForwardError::Protocol(e.to_string()))?;
    if header.correlation_id != 1 {
        return Err(ForwardError::Protocol(
            "the answer has another correlation id".into(),
        ));
    }
    let r = R::decode(&mut frame, version).map_err(|e| ForwardError::Protocol(e.to_string()))?;
    if frame.has_remaining() {
        return Err(ForwardError::Protocol("bytes left after the answer".into()));
    }
    Ok(r)
}
