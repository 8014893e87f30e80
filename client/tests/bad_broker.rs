//! The client against fake brokers that misbehave on purpose: each must give a typed error
//! naming the broker, within the timeouts, and never a panic.

use std::time::{Duration, Instant};

use railyard_client::cluster::{ClientConfig, Cluster};
use railyard_client::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake broker does with the first request it reads.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Answers random-looking bytes with an impossible length.
    Garbage,
    /// Answers a well-framed response whose body is not an ApiVersions response.
    BadBody,
    /// Starts a response and closes the connection halfway.
    CloseMidResponse,
    /// Reads the request and never answers.
    Silent,
}

async fn fake_broker(how: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                // The correlation id sits after the length (4), api key (2) and version (2).
                let correlation = if n >= 12 {
                    buf[8..12].to_vec()
                } else {
                    vec![0, 0, 0, 1]
                };
                match how {
                    Misbehaviour::Garbage => {
                        let _ = s.write_all(b"\x7f\xff\xff\xffHELLO garbage").await;
                    }
                    Misbehaviour::BadBody => {
                        let mut frame = vec![0, 0, 0, 7];
                        frame.extend_from_slice(&correlation);
                        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
                        let _ = s.write_all(&frame).await;
                    }
                    Misbehaviour::CloseMidResponse => {
                        let mut frame = vec![0, 0, 1, 0];
                        frame.extend_from_slice(&correlation);
                        frame.extend_from_slice(&[0; 20]);
                        let _ = s.write_all(&frame).await;
                        return; // dropping the socket closes it mid-response
                    }
                    Misbehaviour::Silent => {}
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

fn config(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr);
    c.connect_timeout_ms = 1_000;
    c.request_timeout_ms = 1_000;
    c.default_api_timeout_ms = 1_500;
    c.retry_backoff_ms = 50;
    c
}

/// Connects to a fake broker and returns the error, checking it came in time.
async fn connect_error(how: Misbehaviour) -> Error {
    let addr = fake_broker(how).await;
    let start = Instant::now();
    let err = match Cluster::connect(config(&addr)).await {
        Ok(_) => panic!("a misbehaving broker was accepted"),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        err.to_string().contains(&addr),
        "the error names the broker: {err}"
    );
    err
}

fn last(e: &Error) -> &Error {
    match e {
        Error::NoBrokerAvailable { last, .. } => last,
        other => other,
    }
}

// Proves an impossible frame length is a protocol error, not an allocation or a panic.
#[tokio::test]
async fn test_garbage_answer_is_a_protocol_error() {
    let err = connect_error(Misbehaviour::Garbage).await;
    assert!(matches!(last(&err), Error::Protocol { .. }), "{err}");
}

// Proves a body that does not decode is a protocol error naming the API.
#[tokio::test]
async fn test_undecodable_body_is_a_protocol_error() {
    let err = connect_error(Misbehaviour::BadBody).await;
    assert!(matches!(last(&err), Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("ApiVersions"), "{err}");
}

// Proves a connection closed in the middle of a response is reported as such.
#[tokio::test]
async fn test_close_mid_response_is_a_disconnect() {
    let err = connect_error(Misbehaviour::CloseMidResponse).await;
    assert!(matches!(last(&err), Error::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("in the middle of"), "{err}");
}

// Proves a broker that never answers is a timeout, within the configured bound.
#[tokio::test]
async fn test_silent_broker_times_out() {
    let err = connect_error(Misbehaviour::Silent).await;
    assert!(matches!(last(&err), Error::Timeout { .. }), "{err}");
}
