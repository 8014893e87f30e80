//! The TCP transport between nodes: one outbound connection per peer carrying length-prefixed
//! prost [`Envelope`]s, and a listener that feeds inbound envelopes to the core thread.
//!
//! Outbound queues are bounded; the core drops an envelope when its peer's queue is full, and
//! raft retransmits. A broken connection is re-dialled with exponential backoff (50 ms doubling
//! to 2 s). A frame is a 4-byte big-endian length and the encoded envelope; an inbound frame
//! that is too long or does not decode closes that connection (it came from the network).
//!
//! The peer set grows at run time: the core dials every broker the metadata image registers
//! with a raft address ([`Dialer`]). A node that no address is known for yet (one asking to
//! join, or one of another cluster) is answered on the connection it opened: each inbound
//! connection registers a reply route for its peer ([`ReplyRoutes`]), and the dialling side
//! reads what comes back on its outbound connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use railyard_core::network::Envelope;
use railyard_core::types::NodeId;
use slog::{debug, warn, Logger};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
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

/// Queues for the peers that connected to this node, by peer id: the way back to a node no
/// address is known for.
pub type ReplyRoutes = Arc<Mutex<BTreeMap<NodeId, mpsc::Sender<Envelope>>>>;

/// A peer the core wants dialled: its id, address and the queue it fills.
pub type Dial = (NodeId, SocketAddr, mpsc::Receiver<Envelope>);

/// Asks the transport, from the core thread, to dial a peer learned at run time.
pub type Dialer = mpsc::UnboundedSender<Dial>;

/// Dials every peer the core asks for, until the core is gone.
pub async fn run_dialer(
    mut dials: mpsc::UnboundedReceiver<Dial>,
    node: NodeHandle,
    logger: Logger,
) {
    while let Some((peer, addr, queue)) = dials.recv().await {
        debug!(logger, "dialling a registered peer"; "peer" => peer, "addr" => %addr);
        tokio::spawn(run_outbound(
            peer,
            addr,
            queue,
            node.clone(),
            logger.clone(),
        ));
    }
}

/// Dials `addr` and writes every queued envelope, reconnecting with backoff. What the peer
/// sends back on the connection (a refusal, say) goes to the core.
pub async fn run_outbound(
    peer: NodeId,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Envelope>,
    node: NodeHandle,
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
        let (read, write) = tokio::io::split(stream);
        let me = node.id();
        let answers = node.clone();
        let reader = tokio::spawn(async move {
            let _ = read_envelopes(read, &answers, me, Some(peer), None).await;
        });
        let mut w = BufWriter::new(write);
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
        reader.abort();
        match result {
            Ok(()) => return, // queue closed: node stopping
            Err(e) => warn!(logger, "peer connection lost"; "peer" => peer, "error" => %e),
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    env: &Envelope,
) -> std::io::Result<()> {
    let bytes = env.encode_to_vec();
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await
}

/// Accepts peer connections and feeds their envelopes to the core; registers each
/// connection's way back in `routes`.
pub async fn run_inbound(
    listener: TcpListener,
    node: NodeHandle,
    me: NodeId,
    routes: ReplyRoutes,
    logger: Logger,
) {
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
        let routes = routes.clone();
        tokio::spawn(async move {
            let (read, write) = tokio::io::split(stream);
            let (tx, rx) = peer_queue();
            let writer = tokio::spawn(write_replies(write, rx));
            let back = Route { routes, tx };
            if let Err(e) = read_envelopes(read, &node, me, None, Some(&back)).await {
                debug!(logger, "peer stream closed"; "from" => %from, "reason" => %e);
            }
            back.forget();
            writer.abort();
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
    #[error("envelope from node {0} on the connection to another peer")]
    WrongPeer(NodeId),
}

/// The way back on one inbound connection.
struct Route {
    routes: ReplyRoutes,
    tx: mpsc::Sender<Envelope>,
}

impl Route {
    fn register(&self, peer: NodeId) {
        if let Ok(mut r) = self.routes.lock() {
            r.insert(peer, self.tx.clone());
        }
    }

    /// Removes this connection's entries (a newer connection of the same peer keeps its own).
    fn forget(&self) {
        if let Ok(mut r) = self.routes.lock() {
            r.retain(|_, tx| !tx.same_channel(&self.tx));
        }
    }
}

/// Writes what the core answers a peer that connected to this node.
async fn write_replies<W: AsyncWrite + Unpin>(write: W, mut queue: mpsc::Receiver<Envelope>) {
    let mut w = BufWriter::new(write);
    while let Some(env) = queue.recv().await {
        if write_frame(&mut w, &env).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

/// Reads frames until the connection closes. `expect`: on an outbound connection, the peer
/// it was dialled for; `back`: on an inbound one, where to register the way back.
async fn read_envelopes<R: AsyncRead + Unpin>(
    mut stream: R,
    node: &NodeHandle,
    me: NodeId,
    expect: Option<NodeId>,
    back: Option<&Route>,
) -> Result<(), FrameError> {
    let mut registered = None;
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
        if expect.is_some_and(|p| p != env.from) {
            return Err(FrameError::WrongPeer(env.from));
        }
        if let Some(b) = back.filter(|_| registered != Some(env.from)) {
            b.register(env.from);
            registered = Some(env.from);
        }
        node.deliver(env);
    }
}
