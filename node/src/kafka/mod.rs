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
//! One table, [`handlers::Api::ALL`], lists every API we implement with its advertised
//! versions, its body layout and its handler: ApiVersions answers from it, the dispatcher below
//! refuses whatever it does not list, the guard walks the layout its row names, and the row's
//! handler answers.
//!
//! - [`codec`]: frames, headers, request decoding and response encoding.
//! - [`guard`]: refuses impossible array lengths before kafka-protocol allocates for them.
//! - [`handlers`]: the table, and one handler file per API family, each from decoded request
//!   to typed response (and its request layout and error codes).
//! - [`observe`]: reasons for closing a connection, for [`Metrics`].
//!
//! With [`KafkaConfig::metrics`] set, every frame is counted: requests, bytes in and out and
//! latency (frame read to response written) per API, each non-zero error code in a response, and
//! each connection closed for a bad request, by reason.
//!
//! The listener's end-to-end tests (kafka-protocol over loopback against real nodes) are
//! `tests/tests/kafka_listener.rs` in the `railyard-tests` crate; what a real node cannot be
//! made to show is unit-tested on the handler functions here.

pub mod codec;
pub mod forward;
pub mod guard;
pub mod handlers;
pub mod observe;
pub mod recompress;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use slog::{debug, info, o, warn, Logger};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use self::codec::{
    decode_header, encode_response, header_prefix, read_frame, CodecError, DEFAULT_MAX_FRAME_BYTES,
};
use self::handlers::api_versions::{self, ApiVersions};
use self::handlers::{Api, Call, Handler};
use crate::broker::Broker;
use crate::metrics::Metrics;

/// Limits of the Kafka listener, and where it reports metrics.
#[derive(Clone, Debug)]
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
    /// How long a successful CreateTopics/DeleteTopics waits for the change to show in this
    /// broker's cluster view (for the new topic's id, and so that the client's next Metadata
    /// here sees it). Further capped by the request's `timeout_ms`.
    pub admin_visible_wait_ms: u64,
    /// Where requests, bytes, latencies and error codes are counted; `None` counts nothing.
    pub metrics: Option<Arc<Metrics>>,
    /// This broker's static defaults of topic configs (Kafka's broker names), reported by
    /// DescribeConfigs as STATIC_BROKER_CONFIG.
    pub topic_defaults: railyard_core::topic_config::BrokerDefaults,
    /// The data directory, reported by DescribeLogDirs as this broker's log dir.
    pub log_dir: String,
}

/// Equal limits and the same metrics registry (by identity: a registry has no value to compare).
impl PartialEq for KafkaConfig {
    fn eq(&self, other: &Self) -> bool {
        let same_metrics = match (&self.metrics, &other.metrics) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.max_frame_bytes == other.max_frame_bytes
            && self.fetch_max_wait_ms == other.fetch_max_wait_ms
            && self.fetch_poll_interval_ms == other.fetch_poll_interval_ms
            && self.accept_backoff_ms == other.accept_backoff_ms
            && self.admin_visible_wait_ms == other.admin_visible_wait_ms
            && self.topic_defaults == other.topic_defaults
            && self.log_dir == other.log_dir
            && same_metrics
    }
}

impl Eq for KafkaConfig {}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            fetch_max_wait_ms: 10_000,
            fetch_poll_interval_ms: 5,
            accept_backoff_ms: 100,
            admin_visible_wait_ms: 2_000,
            metrics: None,
            topic_defaults: Default::default(),
            log_dir: String::new(),
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
    let stopped = broker.stopped();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stopped => {
                info!(logger, "kafka listener stopped: the core has stopped");
                return;
            }
        };
        match accepted {
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
    let metrics = config.metrics.as_deref();
    let _open = OpenConnection::new(metrics);
    // Kafka's client_host, as its DescribeGroups shows it (Java's `InetAddress.toString()`).
    let client_host = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    // madsim's TcpStream has no `into_split`; the generic halves there, tokio's owned ones
    // (no lock per read or write) otherwise.
    #[cfg(not(madsim))]
    let (read, mut write) = stream.into_split();
    #[cfg(madsim)]
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut codes = Vec::new();
    // One future for the connection's life, not one per request.
    let stopped = broker.stopped();
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            f = read_frame(&mut reader, config.max_frame_bytes) => f,
            () = &mut stopped => {
                debug!(log, "closing the connection: the core has stopped");
                return;
            }
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!(log, "client closed the connection");
                return;
            }
            Err(e) => {
                close(metrics, &log, &e.into());
                return;
            }
        };
        let started = Instant::now();
        let bytes_in = frame.len() as u64 + 4;
        let api = header_prefix(&frame)
            .ok()
            .and_then(|p| ApiKey::try_from(p.api_key).ok());
        codes.clear();
        let (bytes_out, result) =
            match dispatch(&broker, &config, &client_host, frame, &mut codes).await {
                // Flush is free on a real socket; madsim's buffers writes until it.
                Ok(Some(out)) => match write_frame(&mut write, &out).await {
                    Ok(()) => (out.len() as u64, Ok(())),
                    Err(e) => (0, Err(ConnectionError::Codec(e.into()))),
                },
                Ok(None) => (0, Ok(())),
                Err(e) => (0, Err(e)),
            };
        if let (Some(m), Some(api)) = (metrics, api) {
            m.record_request(api, started.elapsed(), bytes_in, bytes_out);
            for &code in codes.iter().filter(|&&c| c != 0) {
                m.record_error_code(api, code);
            }
        }
        if let Err(e) = result {
            close(metrics, &log, &e);
            return;
        }
    }
}

/// Writes one response frame and flushes it.
async fn write_frame<W: AsyncWrite + Unpin>(write: &mut W, out: &[u8]) -> std::io::Result<()> {
    write.write_all(out).await?;
    write.flush().await
}

/// Logs and counts why we are closing a connection.
fn close(metrics: Option<&Metrics>, log: &Logger, e: &ConnectionError) {
    if let Some(m) = metrics {
        m.record_connection_error(e.kind());
    }
    info!(log, "closing kafka connection"; "reason" => %e);
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection<'a>(Option<&'a Metrics>);

impl<'a> OpenConnection<'a> {
    fn new(metrics: Option<&'a Metrics>) -> Self {
        if let Some(m) = metrics {
            m.connection_opened();
        }
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0 {
            m.connection_closed();
        }
    }
}

/// Decodes one request frame, runs it and encodes the response frame (`None`: send nothing).
/// The error codes of the response are appended to `codes`.
async fn dispatch<B: Broker>(
    broker: &B,
    config: &KafkaConfig,
    client_host: &str,
    mut frame: Bytes,
    codes: &mut Vec<i16>,
) -> Result<Option<BytesMut>, ConnectionError> {
    let prefix = header_prefix(&frame)?;
    let api =
        ApiKey::try_from(prefix.api_key).map_err(|_| CodecError::UnknownApiKey(prefix.api_key))?;
    let version = prefix.api_version;
    let Some(row) = Api::<B>::find(api, version) else {
        if api == ApiKey::ApiVersions {
            // KIP-511: a client newer than us learns our versions from a v0 answer (whose
            // header has no tagged fields, so any client can read it) and retries.
            let body = api_versions::response::<B>(Some(ResponseError::UnsupportedVersion));
            ApiVersions::error_codes(&body, codes);
            return Ok(Some(encode_response(api, 0, prefix.correlation_id, &body)?));
        }
        return Err(CodecError::Unsupported { api, version }.into());
    };
    let header = decode_header(&mut frame, api, version)?;
    guard::check_body(api, version, row.layout, &frame).map_err(|e| CodecError::Refused {
        api,
        version,
        reason: e,
    })?;
    let call = Call {
        broker,
        config,
        api,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.as_deref().unwrap_or(""),
        client_host,
        body: frame,
        codes,
    };
    row.run(call).await
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{JoinGroupResponse, RequestHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use railyard_core::api::Response;
    use railyard_core::groups::{GroupError, GroupRequest, GroupResponse};

    use super::*;
    use crate::kafka::handlers::common::GroupFake;
    use crate::kafka::handlers::groups::JoinGroup;
    use crate::kafka::handlers::Handler;

    #[tokio::test]
    async fn test_dispatch_hands_the_client_id_and_host_to_handlers() {
        // JoinGroup records who joined: the header's client id and the connection's address.
        let broker = GroupFake::new(|g| {
            Response::Group(GroupResponse::error_for(g, GroupError::MemberIdRequired))
        });
        let (api, v) = (ApiKey::JoinGroup, 9);
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(v)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("rdkafka")))
            .encode(&mut frame, api.request_header_version(v))
            .expect("a header");
        JoinGroup::sample(v).encode(&mut frame, v).expect("a body");
        let mut codes = Vec::new();
        let config = KafkaConfig::default();
        let out = dispatch(&broker, &config, "/10.1.2.3", frame.freeze(), &mut codes)
            .await
            .expect("an answer")
            .expect("a response frame");
        assert_eq!(codes, vec![79]);
        let [GroupRequest::Join {
            client_id,
            client_host,
            ..
        }] = &broker.seen()[..]
        else {
            panic!("one join expected")
        };
        assert_eq!(
            (client_id.as_str(), client_host.as_str()),
            ("rdkafka", "/10.1.2.3")
        );
        // Length prefix, correlation id, tagged fields (a v1 response header), then the body.
        let mut body = Bytes::from(out).slice(4 + 4 + 1..);
        let r = JoinGroupResponse::decode(&mut body, v).expect("a JoinGroup response");
        assert_eq!(r.error_code, 79);
    }
}
