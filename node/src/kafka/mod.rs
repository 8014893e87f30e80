//! The Kafka wire-protocol listener: accepts client connections, decodes Kafka requests with the
//! `kafka-protocol` crate and answers them through a [`Broker`].
//!
//! Each connection is one task that reads 4-byte big-endian length-prefixed frames and handles
//! them one at a time, so responses leave in request order as Kafka clients require (Kafka's own
//! broker likewise mutes a connection until its response is sent). Partitions inside one produce
//! still run concurrently. Anything malformed — an over-limit frame, an undecodable header or
//! body, an unknown API or a version we do not advertise — closes the connection; the one
//! exception is ApiVersions, which answers a too-new version in the v0 layout with
//! UNSUPPORTED_VERSION (KIP-511) so the client can retry with a version we list.
//!
//! - [`codec`]: frames, headers, response encoding, the advertised version table.
//! - [`guard`]: refuses impossible array lengths before kafka-protocol allocates for them.
//! - [`handlers`]: one function per API, from decoded request to typed response.

pub mod codec;
pub mod guard;
pub mod handlers;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeClusterRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest,
};
use kafka_protocol::ResponseError;
use slog::{debug, info, o, warn, Logger};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use self::codec::{
    decode_body, decode_header, encode_response, header_prefix, read_frame, supported_versions,
    CodecError, DEFAULT_MAX_FRAME_BYTES,
};
use self::handlers::ProduceOutcome;
use crate::broker::Broker;

/// Limits of the Kafka listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// The largest request frame accepted; a longer length prefix closes the connection before
    /// anything is allocated. Kafka's `socket.request.max.bytes` (100 MiB).
    pub max_frame_bytes: usize,
    /// Upper bound on a fetch's `max_wait_ms`, so that a client cannot park a request (and, with
    /// in-order answers, its whole connection) for longer.
    pub fetch_max_wait_ms: u64,
    /// How often a long-polling fetch that has fewer than `min_bytes` reads again.
    pub fetch_poll_interval_ms: u64,
    /// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
    pub accept_backoff_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            fetch_max_wait_ms: 10_000,
            fetch_poll_interval_ms: 5,
            accept_backoff_ms: 100,
        }
    }
}

/// Why a connection was closed by us.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The bytes were not an acceptable request (or the socket failed).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// An acks=0 produce failed on some partition. The client reads no response, so Kafka
    /// closes the connection to make it notice and refresh its metadata.
    #[error("an acks=0 produce failed")]
    AcksZeroProduceFailed,
}

/// Accepts Kafka client connections on `listener` forever, one task per connection.
pub async fn serve<B: Broker>(
    listener: TcpListener,
    broker: B,
    config: KafkaConfig,
    logger: Logger,
) {
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        info!(logger, "kafka listener started"; "addr" => %addr);
    }
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let log = logger.new(o!("peer" => peer.to_string()));
                tokio::spawn(connection(stream, broker.clone(), config.clone(), log));
            }
            Err(e) => {
                warn!(logger, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(config.accept_backoff_ms)).await;
            }
        }
    }
}

/// Serves one connection until the client leaves or sends something we refuse.
async fn connection<B: Broker>(
    stream: TcpStream,
    broker: B,
    config: Arc<KafkaConfig>,
    log: Logger,
) {
    // Responses are written whole, so Nagle's algorithm would only add latency.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(log, "set_nodelay failed"; "error" => %e);
    }
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    loop {
        let frame = match read_frame(&mut reader, config.max_frame_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!(log, "client closed the connection");
                return;
            }
            Err(e) => {
                info!(log, "closing kafka connection"; "reason" => %e);
                return;
            }
        };
        match dispatch(&broker, &config, frame).await {
            Ok(Some(out)) => {
                if let Err(e) = write.write_all(&out).await {
                    debug!(log, "write failed"; "error" => %e);
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                info!(log, "closing kafka connection"; "reason" => %e);
                return;
            }
        }
    }
}

/// Decodes one request frame, runs it and encodes the response frame (`None`: send nothing).
async fn dispatch<B: Broker>(
    broker: &B,
    config: &KafkaConfig,
    mut frame: Bytes,
) -> Result<Option<BytesMut>, ConnectionError> {
    let prefix = header_prefix(&frame)?;
    let api =
        ApiKey::try_from(prefix.api_key).map_err(|_| CodecError::UnknownApiKey(prefix.api_key))?;
    let version = prefix.api_version;
    let supported =
        supported_versions(api).is_some_and(|(min, max)| (min..=max).contains(&version));
    if !supported {
        if api == ApiKey::ApiVersions {
            // KIP-511: a client newer than us learns our versions from a v0 answer (whose
            // header has no tagged fields, so any client can read it) and retries.
            let body = handlers::api_versions(Some(ResponseError::UnsupportedVersion));
            return Ok(Some(encode_response(api, 0, prefix.correlation_id, &body)?));
        }
        return Err(CodecError::Unsupported { api, version }.into());
    }
    let header = decode_header(&mut frame, api, version)?;
    guard::check_body(api, version, &frame).map_err(|e| CodecError::Refused {
        api,
        version,
        reason: e,
    })?;
    let corr = header.correlation_id;
    let body = &mut frame;
    let out = match api {
        ApiKey::ApiVersions => {
            let _: ApiVersionsRequest = decode_body(body, api, version)?;
            encode_response(api, version, corr, &handlers::api_versions(None))?
        }
        ApiKey::Metadata => {
            let req: MetadataRequest = decode_body(body, api, version)?;
            let resp = handlers::metadata(&broker.cluster(), &req, version);
            encode_response(api, version, corr, &resp)?
        }
        ApiKey::DescribeCluster => {
            let req: DescribeClusterRequest = decode_body(body, api, version)?;
            let resp = handlers::describe_cluster(&broker.cluster(), &req, version);
            encode_response(api, version, corr, &resp)?
        }
        ApiKey::Produce => {
            let req: ProduceRequest = decode_body(body, api, version)?;
            match handlers::produce(broker, req, version).await {
                ProduceOutcome::Reply(resp) => encode_response(api, version, corr, &resp)?,
                ProduceOutcome::NoReply => return Ok(None),
                ProduceOutcome::Close => return Err(ConnectionError::AcksZeroProduceFailed),
            }
        }
        ApiKey::Fetch => {
            let req: FetchRequest = decode_body(body, api, version)?;
            let resp = handlers::fetch(broker, config, &req, version).await;
            encode_response(api, version, corr, &resp)?
        }
        ApiKey::ListOffsets => {
            let req: ListOffsetsRequest = decode_body(body, api, version)?;
            let resp = handlers::list_offsets(broker, &req, version).await;
            encode_response(api, version, corr, &resp)?
        }
        ApiKey::OffsetForLeaderEpoch => {
            let req: OffsetForLeaderEpochRequest = decode_body(body, api, version)?;
            let resp = handlers::offset_for_leader_epoch(broker, &req).await;
            encode_response(api, version, corr, &resp)?
        }
        // Unreachable while SUPPORTED_APIS and this match agree; refusing keeps a table entry
        // without a handler from answering garbage.
        _ => return Err(CodecError::Unsupported { api, version }.into()),
    };
    Ok(Some(out))
}
