//! A raw Kafka client over one TCP connection: requests framed with kafka-protocol, responses
//! decoded and their correlation ids checked. [`KafkaConn`] is the async connection the
//! protocol tests drive (including malformed frames and requests left unanswered);
//! [`call_blocking`] is one request on a fresh blocking connection, for probing nodes that may
//! be down.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client id every request carries.
pub const CLIENT_ID: &str = "railyard-tests";

/// How long [`KafkaConn`] waits for a response (or for the server to close) before failing.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One Kafka connection. Its methods panic on anything unexpected: they are test assertions.
pub struct KafkaConn {
    stream: TcpStream,
    next_correlation: i32,
}

impl KafkaConn {
    pub async fn connect(addr: SocketAddr) -> KafkaConn {
        KafkaConn {
            stream: TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}")),
            next_correlation: 1,
        }
    }

    /// Sends `req` at `version` and returns the decoded response.
    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let correlation = self.send(req, version).await;
        self.recv::<R::Response>(version, correlation).await
    }

    /// Sends `req` at `version` without reading the answer; returns its correlation id (for
    /// [`KafkaConn::recv`], or for a request the server must not answer).
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let body = encode_request(req, version, correlation)
            .unwrap_or_else(|e| panic!("encoding a request: {e}"));
        self.send_frame(&body).await;
        correlation
    }

    /// Sends `body` (a request header and body, well formed or not) with its length prefix.
    pub async fn send_frame(&mut self, body: &[u8]) {
        self.send_raw(&frame(body)).await;
    }

    /// Sends bytes as they are, without a length prefix (a bad length, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("sending");
    }

    /// Reads the next response, which must answer `correlation`, and decodes it at `version`.
    pub async fn recv<R: Decodable + HeaderVersion>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> R {
        let read = async {
            let len = self.stream.read_i32().await.expect("reading a length");
            let mut buf = vec![0u8; len as usize];
            self.stream
                .read_exact(&mut buf)
                .await
                .expect("reading a frame");
            Bytes::from(buf)
        };
        let frame = tokio::time::timeout(RESPONSE_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("no response within {RESPONSE_TIMEOUT:?}"));
        decode_response(frame, version, correlation).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the server closed the connection (EOF or reset) rather than answering.
    pub async fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => panic!("connection neither answered nor closed within {RESPONSE_TIMEOUT:?}"),
        }
    }
}

/// Sends `req` at `version` to `addr` on a new blocking connection and returns the response;
/// an error (never a panic) if the node does not answer within `timeout` or answers garbage.
pub fn call_blocking<R: Request>(
    addr: SocketAddr,
    req: &R,
    version: i16,
    timeout: Duration,
) -> std::io::Result<R::Response> {
    const CORRELATION: i32 = 7;
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = encode_request(req, version, CORRELATION).map_err(bad)?;
    stream.write_all(&frame(&body))?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    stream.read_exact(&mut buf)?;
    decode_response(Bytes::from(buf), version, CORRELATION).map_err(bad)
}

/// A request header (with [`CLIENT_ID`]) and body, unframed.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .map_err(|e| format!("encoding a request header: {e}"))?;
    req.encode(&mut body, version)
        .map_err(|e| format!("encoding a request: {e}"))?;
    Ok(body)
}

/// Decodes a response frame (without its length prefix): the header must answer
/// `correlation`, and the body must decode at `version` with nothing left over.
pub fn decode_response<R: Decodable + HeaderVersion>(
    mut frame: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R, String> {
    let header = ResponseHeader::decode(&mut frame, R::header_version(version))
        .map_err(|e| format!("decoding a response header: {e}"))?;
    if header.correlation_id != correlation {
        return Err(format!(
            "responses out of order: got correlation id {}, expected {correlation}",
            header.correlation_id
        ));
    }
    let resp = R::decode(&mut frame, version).map_err(|e| format!("decoding a response: {e}"))?;
    if frame.has_remaining() {
        return Err(format!("response has {} trailing bytes", frame.remaining()));
    }
    Ok(resp)
}

/// `body` behind its 4-byte big-endian length.
fn frame(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.put_slice(body);
    out
}
