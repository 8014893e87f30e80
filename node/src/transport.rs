//! The TCP transport between nodes: one outbound connection per peer carrying length-prefixed
//! prost [`Envelope`]s, and a listener that feeds inbound envelopes to the core thread.
//!
//! Outbound queues are bounded; the core drops an envelope when its peer's queue is full, and
//! raft retransmits. A broken connection is re-dialled with exponential backoff (50 ms doubling
//! to 2 s). A frame is a 4-byte big-endian length and the encoded envelope; an inbound frame
//! that is too long or does not decode closes that connection (it came from the network).

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
use railyard_core::network::Envelope;
use railyard_core::types::NodeId;
use slog::{debug, warn, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::runtime::NodeHandle;

/// Envelopes queued per peer before the core starts dropping.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Largest envelope accepted from a peer.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Creates the bounded outbound queue for one peer.
pub fn peer_queue() -> (mpsc::Sender<Envelope>, mpsc::Receiver<Envelope>) {
    mpsc::channel(PEER_QUEUE_MAX)
}

/// Dials `addr` and writes every queued envelope, reconnecting with backoff.
pub async fn run_outbound(
    peer: NodeId,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Envelope>,
    logger: Logger,
) {
    let mut backoff = BACKOFF_MIN;
    let mut pending: Option<Envelope> = None;
    loop {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                debug!(logger, "peer unreachable"; "peer" => peer, "error" => %e);
                // Drop what piled up meanwhile: raft resends whatever still matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = BACKOFF_MIN;
        let mut w = BufWriter::new(stream);
        let result: std::io::Result<()> = async {
            loop {
                let env = match pending.take() {
                    Some(e) => e,
                    None => match queue.recv().await {
                        Some(e) => e,
                        None => return Ok(()),
                    },
                };
                write_frame(&mut w, &env).await?;
                // Batch whatever else is already queued into the same flush.
                while let Ok(more) = queue.try_recv() {
                    write_frame(&mut w, &more).await?;
                }
                w.flush().await?;
            }
        }
        .await;
        match result {
            Ok(()) => return, // queue closed: node stopping
            Err(e) => warn!(logger, "peer connection lost"; "peer" => peer, "error" => %e),
        }
    }
}

async fn write_frame(w: &mut BufWriter<TcpStream>, env: &Envelope) -> std::io::Result<()> {
    let bytes = env.encode_to_vec();
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await
}

/// Accepts peer connections and feeds their envelopes to the core.
pub async fn run_inbound(listener: TcpListener, node: NodeHandle, me: NodeId, logger: Logger) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(logger, "accept failed"; "error" => %e);
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let node = node.clone();
        let logger = logger.clone();
        tokio::spawn(async move {
            if let Err(e) = read_envelopes(stream, &node, me).await {
                debug!(logger, "peer stream closed"; "from" => %from, "reason" => %e);
            }
        });
    }
}

/// Why an inbound peer connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLong(usize),
    #[error("envelope does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("envelope addressed to node {0}")]
    Misaddressed(NodeId),
}

async fn read_envelopes(
    mut stream: TcpStream,
    node: &NodeHandle,
    me: NodeId,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLong(len));
        }
        buf.resize(len, 0);
        stream.read_exact(&mut buf).await?;
        let env = Envelope::decode(buf.as_slice())?;
        if env.to != me {
            return Err(FrameError::Misaddressed(env.to));
        }
        node.deliver(env);
    }
}
