//! One TCP connection to one broker, with pipelined requests.
//!
//! A writer task sends frames in the order callers hand them over; a reader task reads response
//! frames and hands each to the caller waiting for its correlation id (a oneshot per request),
//! so any number of requests may be outstanding at once and a slow response does not hold up
//! others. The caller decodes its own response (it knows the type and version); decoding runs
//! under `catch_unwind`, so bytes from the network can fail a request but never panic the
//! client. Any transport failure, a frame of an impossible length, or a correlation id nobody
//! waits for closes the connection and fails every outstanding request with a typed error;
//! the cluster then opens a new connection for the next request.
//!
//! At connect, ApiVersions is negotiated: for each API the connection uses the highest version
//! both this client ([`client_versions`]) and the broker support.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
// The socket's halves: tokio's zero-cost owned halves, or, under madsim (whose TcpStream has
// no `into_split`), the generic halves of `tokio::io::split`.
#[cfg(not(madsim))]
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
#[cfg(madsim)]
type OwnedReadHalf = tokio::io::ReadHalf<TcpStream>;
#[cfg(madsim)]
type OwnedWriteHalf = tokio::io::WriteHalf<TcpStream>;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{BrokerRef, Error, ResponseError, Result};

/// The largest response frame accepted. A fetch response is bounded by `fetch_max_bytes`
/// (50 MiB by default); a length beyond this is garbage, not a response.
pub const RESPONSE_FRAME_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Requests queued for the writer task before callers wait for room.
const WRITE_QUEUE_MAX: usize = 1024;

/// The highest version of each API this client builds requests for, where it is lower than
/// what kafka-protocol offers: beyond these, Produce, Fetch, Metadata, OffsetCommit and
/// OffsetFetch name topics by id only, and this client names them by name.
pub fn client_versions(api_key: i16, kp_max: i16) -> i16 {
    let cap = match api_key {
        0 => 12, // Produce
        1 => 12, // Fetch
        3 => 12, // Metadata
        8 => 9,  // OffsetCommit
        9 => 9,  // OffsetFetch
        18 => 3, // ApiVersions: v3 is what every broker since 2.4 answers
        _ => kp_max,
    };
    cap.min(kp_max)
}

/// What [`Connection::connect`] needs to know.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// Sent in every request header.
    pub client_id: String,
    /// How long a TCP connect (and the ApiVersions handshake) may take.
    pub connect_timeout_ms: u64,
    /// How long any one request may wait for its response.
    pub request_timeout_ms: u64,
}

/// A response frame (header and body, without the length prefix), or why there is none.
type Reply = Result<Bytes>;

/// Requests sent and not yet answered, by correlation id.
type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<Reply>>>>;

/// An open connection to one broker. Cheap to share (`Arc`); closed when dropped.
pub struct Connection {
    broker: BrokerRef,
    options: ConnOptions,
    writer: mpsc::Sender<BytesMut>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    next_correlation: Arc<AtomicI32>,
    /// (min, max) the broker supports, by API key.
    versions: HashMap<i16, (i16, i16)>,
    tasks: [JoinHandle<()>; 2],
}

impl Connection {
    /// Connects to `broker.addr`, starts the reader and writer tasks and negotiates API
    /// versions. Fails with [`Error::Connect`] if the address does not resolve or accept, and
    /// with [`Error::Timeout`] after `connect_timeout_ms`.
    pub async fn connect(broker: BrokerRef, options: ConnOptions) -> Result<Connection> {
        let within = Duration::from_millis(options.connect_timeout_ms);
        let connect = TcpStream::connect(broker.addr.as_str());
        let stream = match tokio::time::timeout(within, connect).await {
            Err(_) => {
                return Err(Error::Timeout {
                    broker,
                    api: "connect",
                    after: within,
                })
            }
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    broker,
                    reason: e.to_string(),
                })
            }
            Ok(Ok(s)) => s,
        };
        // Nagle would hold small requests (heartbeats, acks=1 produces) for up to 40 ms.
        let _ = stream.set_nodelay(true);
        #[cfg(not(madsim))]
        let (read, write) = stream.into_split();
        #[cfg(madsim)]
        let (read, write) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let next_correlation = Arc::new(AtomicI32::new(1));
        let reader = tokio::spawn(read_loop(
            read,
            next_correlation.clone(),
            pending.clone(),
            closed.clone(),
            broker.clone(),
        ));
        let writer = tokio::spawn(write_loop(
            write,
            rx,
            pending.clone(),
            closed.clone(),
            broker.clone(),
        ));
        let mut conn = Connection {
            broker,
            options,
            writer: tx,
            pending,
            closed,
            next_correlation,
            versions: HashMap::new(),
            tasks: [reader, writer],
        };
        // Each handshake request is bounded by the connect timeout.
        conn.versions = conn.negotiate_versions(within).await?;
        Ok(conn)
    }

    /// The broker this connection goes to.
    pub fn broker(&self) -> &BrokerRef {
        &self.broker
    }

    /// Whether the connection has failed (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The version of `R` this connection uses: the highest both sides support.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let client_max = client_versions(R::KEY, R::VERSIONS.max);
        let client_min = R::VERSIONS.min;
        let unsupported = |broker_min, broker_max| Error::UnsupportedVersion {
            broker: self.broker.clone(),
            api: api_name::<R>(),
            broker_min,
            broker_max,
            client_min,
            client_max,
        };
        let Some(&(broker_min, broker_max)) = self.versions.get(&R::KEY) else {
            return Err(unsupported(-1, -1));
        };
        let version = broker_max.min(client_max);
        if version < broker_min.max(client_min) {
            return Err(unsupported(broker_min, broker_max));
        }
        Ok(version)
    }

    /// Whether the broker supports `R` at all (in a version this client speaks).
    pub fn supports<R: Request>(&self) -> bool {
        self.version::<R>().is_ok()
    }

    /// Sends `req` at the negotiated version and returns the decoded response.
    pub async fn call<R: Request>(&self, req: &R) -> Result<R::Response> {
        let version = self.version::<R>()?;
        self.call_at(req, version).await
    }

    /// Sends `req` at `version` and returns the decoded response, within `request_timeout_ms`.
    pub async fn call_at<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let timeout = Duration::from_millis(self.options.request_timeout_ms);
        self.call_within(req, version, timeout).await
    }

    /// [`Connection::call_at`] with its own timeout (a Fetch or a JoinGroup may legitimately
    /// wait longer than other requests).
    pub async fn call_within<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let (correlation, rx) = self.submit(req, version, true).await?;
        self.reply::<R>(correlation, rx, version, timeout).await
    }

    /// [`Connection::call`], queued for the socket only once `turn` resolves; `queued` fires
    /// once it is (or the call failed before). A caller that hands each request the previous
    /// one's `queued` as its `turn` puts them on the wire in its own order even when they run
    /// on different tasks: the idempotent producer needs that, since the broker refuses a
    /// sequence number that arrives before the one it follows.
    pub async fn call_in_turn<R: Request>(
        &self,
        req: &R,
        turn: impl std::future::Future<Output = ()>,
        queued: oneshot::Sender<()>,
    ) -> Result<R::Response> {
        let version = self.version::<R>()?;
        turn.await;
        let submitted = self.submit(req, version, true).await;
        let _ = queued.send(());
        let (correlation, rx) = submitted?;
        let timeout = Duration::from_millis(self.options.request_timeout_ms);
        self.reply::<R>(correlation, rx, version, timeout).await
    }

    /// Waits for the response to `correlation` and decodes it.
    async fn reply<R: Request>(
        &self,
        correlation: i32,
        rx: Option<oneshot::Receiver<Reply>>,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        let rx = rx.expect("a request that expects a response has a receiver");
        let frame = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply?,
            Ok(Err(_)) => return Err(self.disconnected("the connection closed")),
            Err(_) => {
                self.lock_pending().remove(&correlation);
                return Err(Error::Timeout {
                    broker: self.broker.clone(),
                    api: api_name::<R>(),
                    after: timeout,
                });
            }
        };
        self.decode::<R>(frame, version)
    }

    /// Sends `req` and does not wait for an answer: for Produce with acks=0, which the broker
    /// never answers. Returns once the request is queued for the socket.
    pub async fn send_only<R: Request>(&self, req: &R) -> Result<()> {
        let version = self.version::<R>()?;
        self.submit(req, version, false).await.map(|_| ())
    }

    /// Encodes and queues `req`; registers the waiter first, so the reader cannot see the
    /// response before anyone waits for it.
    async fn submit<R: Request>(
        &self,
        req: &R,
        version: i16,
        expect_response: bool,
    ) -> Result<(i32, Option<oneshot::Receiver<Reply>>)> {
        if self.is_closed() {
            return Err(self.disconnected("the connection is closed"));
        }
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(req, version, correlation)?;
        let rx = expect_response.then(|| {
            let (tx, rx) = oneshot::channel();
            self.lock_pending().insert(correlation, tx);
            rx
        });
        if self.writer.send(frame).await.is_err() {
            self.lock_pending().remove(&correlation);
            return Err(self.disconnected("the connection's writer stopped"));
        }
        Ok((correlation, rx))
    }

    fn encode<R: Request>(&self, req: &R, version: i16, correlation: i32) -> Result<BytesMut> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_string(self.options.client_id.clone())));
        let encode_err = |e: &dyn std::fmt::Display| Error::Encode {
            api: api_name::<R>(),
            reason: e.to_string(),
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0); // the length, filled in below
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| encode_err(&e))?;
        req.encode(&mut buf, version).map_err(|e| encode_err(&e))?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| Error::Encode {
            api: api_name::<R>(),
            reason: "request larger than 2 GiB".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf)
    }

    fn decode<R: Request>(&self, mut frame: Bytes, version: i16) -> Result<R::Response> {
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
            ResponseHeader::decode(&mut frame, header_version)?;
            <R::Response as Decodable>::decode(&mut frame, version)
        }));
        match decoded {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.protocol(format!(
                "{} v{version} response does not decode: {e}",
                api_name::<R>()
            ))),
            Err(_) => Err(self.protocol(format!(
                "{} v{version} response made the decoder panic",
                api_name::<R>()
            ))),
        }
    }

    /// ApiVersions v3, falling back to v0 for a broker that answers UNSUPPORTED_VERSION (it
    /// then lists its versions in a v0 body, as the protocol specifies).
    async fn negotiate_versions(&self, within: Duration) -> Result<HashMap<i16, (i16, i16)>> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("railyard-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let v0_req = ApiVersionsRequest::default();
        let v0 = || self.call_within(&v0_req, 0, within);
        let resp = match self.call_within(&req, 3, within).await {
            Ok(r) if r.error_code == ResponseError::UnsupportedVersion.code() => v0().await?,
            Ok(r) => r,
            // A v3 body that does not decode may be an old broker's v0 answer; if v0 fails
            // too (or the connection is gone), the v3 error is the one that explains.
            Err(e @ Error::Protocol { .. }) if !self.is_closed() => v0().await.map_err(|_| e)?,
            Err(e) => return Err(e),
        };
        crate::error::check_code(resp.error_code, self.broker.clone(), "ApiVersions", || None)?;
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<Reply>>> {
        lock(&self.pending)
    }

    fn disconnected(&self, reason: &str) -> Error {
        Error::Disconnected {
            broker: self.broker.clone(),
            reason: reason.into(),
        }
    }

    fn protocol(&self, reason: String) -> Error {
        Error::Protocol {
            broker: self.broker.clone(),
            reason,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        fail_all(&self.pending, &self.closed, || Error::Closed);
    }
}

/// `Produce` for `kafka_protocol::messages::produce_request::ProduceRequest`: the API's name
/// for errors, taken from the type (a `&'static str` without a table to keep in step).
pub fn api_name<R>() -> &'static str {
    let full = std::any::type_name::<R>();
    let short = full.rsplit("::").next().unwrap_or(full);
    short.strip_suffix("Request").unwrap_or(short)
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<BytesMut>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    broker: BrokerRef,
) {
    while let Some(frame) = rx.recv().await {
        // Flush is free on a real socket; madsim's buffers writes until it.
        let written = match write.write_all(&frame).await {
            Ok(()) => write.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            fail_all(&pending, &closed, || Error::Disconnected {
                broker: broker.clone(),
                reason: format!("write failed: {e}"),
            });
            return;
        }
    }
}

async fn read_loop(
    mut read: OwnedReadHalf,
    issued: Arc<AtomicI32>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    broker: BrokerRef,
) {
    let err = loop {
        let frame = match read_frame(&mut read, &broker).await {
            Ok(f) => f,
            Err(e) => break e,
        };
        let correlation = (&frame[..4]).get_i32();
        let waiter = lock(&pending).remove(&correlation);
        match waiter {
            // The waiter may have timed out and gone; its late answer is dropped.
            Some(tx) => {
                let _ = tx.send(Ok(frame));
            }
            // A late answer to a request that timed out: its waiter is gone; keep reading.
            None if correlation > 0 && correlation < issued.load(Ordering::Acquire) => {}
            None => {
                break Error::Protocol {
                    broker: broker.clone(),
                    reason: format!(
                        "response with correlation id {correlation} matches no request"
                    ),
                }
            }
        }
    };
    fail_all(&pending, &closed, || err.clone());
}

/// One length-prefixed frame; its length must leave room for a correlation id and stay under
/// [`RESPONSE_FRAME_MAX_BYTES`].
async fn read_frame(read: &mut OwnedReadHalf, broker: &BrokerRef) -> Result<Bytes> {
    let disconnected = |e: std::io::Error| Error::Disconnected {
        broker: broker.clone(),
        reason: if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the broker closed the connection".into()
        } else {
            e.to_string()
        },
    };
    let len = read.read_i32().await.map_err(disconnected)?;
    if len < 4 || len as usize > RESPONSE_FRAME_MAX_BYTES {
        return Err(Error::Protocol {
            broker: broker.clone(),
            reason: format!("response frame length {len} is impossible"),
        });
    }
    let mut buf = vec![0u8; len as usize];
    read.read_exact(&mut buf).await.map_err(|e| {
        let mut err = disconnected(e);
        if let Error::Disconnected { reason, .. } = &mut err {
            *reason = format!("{reason} in the middle of a {len}-byte response");
        }
        err
    })?;
    Ok(Bytes::from(buf))
}

/// Marks the connection closed and fails every waiting request with `err()`.
fn fail_all(pending: &Pending, closed: &AtomicBool, err: impl Fn() -> Error) {
    closed.store(true, Ordering::Release);
    let waiters: Vec<_> = lock(pending).drain().collect();
    for (_, tx) in waiters {
        let _ = tx.send(Err(err()));
    }
}

/// Locks a mutex, taking over one a panicking thread poisoned (the map stays consistent: every
/// critical section is a single insert, remove or drain).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, ProduceRequest};

    // Proves the API names used in errors come out as Kafka spells them.
    #[test]
    fn test_api_name() {
        assert_eq!(api_name::<ProduceRequest>(), "Produce");
        assert_eq!(api_name::<MetadataRequest>(), "Metadata");
    }

    // Proves the caps keep the client on the by-name versions.
    #[test]
    fn test_client_version_caps() {
        assert_eq!(client_versions(0, 13), 12);
        assert_eq!(client_versions(1, 18), 12);
        assert_eq!(client_versions(19, 7), 7);
    }
}
