//! Partition state machines: everything the cluster derives from a partition's committed log
//! has one shape, [`PartitionMachine`], and the replica drives it. The raft layer knows nothing
//! about any one of them (Redpanda's `rm_stm` / `group_stm` split), and the node only routes.
//!
//! Instances: the controller on `__cluster_metadata-0` ([`crate::controller::Controller`]);
//! later a group coordinator per `__consumer_offsets` partition, a producer-state table per data
//! partition and a transaction coordinator on `__transaction_state`.
//!
//! ## Call contract
//! The owning [`crate::replica::Replica`] calls, always with a [`Ctx`] describing the replica
//! now (node, monotonic and wall time, role, term, applied index):
//! - [`PartitionMachine::apply`] for every committed normal entry with data, in log order,
//!   exactly once per entry between two restores (at open the replica replays the committed log
//!   after the snapshot with `ctx.replaying` set);
//! - [`PartitionMachine::admit`] for a client's produce on the leader, before it is proposed;
//! - [`PartitionMachine::on_append`] / [`PartitionMachine::on_truncate`] when entries reach this
//!   replica's log (leader or follower) or a conflicting suffix is dropped, so state that must
//!   run ahead of the commit index (a producer's sequence numbers) can be kept and rolled back;
//! - [`PartitionMachine::on_role`] when the term, role or leader changed;
//! - [`PartitionMachine::tick`] on every node tick;
//! - [`PartitionMachine::handle`] for commands routed to this partition (client requests,
//!   broker heartbeats, messages from other machines);
//! - [`PartitionMachine::on_proposal`] with the outcome of each of its own proposals;
//! - [`PartitionMachine::snapshot`] / [`PartitionMachine::restore`]: the state at the applied
//!   index, which lets raft delete the log before it and is what a lagging follower installs.
//!
//! Outputs go into [`Effects`], in order: replies to clients, proposals to this partition's log
//! (the replica proposes them with acks=all and reports the outcome by tag), events for the node
//! (replicas to create or delete) and messages to other machines.

use std::any::Any;

use bytes::Bytes;

use crate::api::{ClientError, Request, RequestId, Response};
use crate::network::BrokerHeartbeat;
use crate::types::{Millis, NodeId, Offset, RaftIndex, Term, TopicPartition};

/// The replica as the machine sees it during one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ctx {
    pub node: NodeId,
    /// Monotonic milliseconds: every timer (sessions, fencing, retries) runs on this clock.
    pub now_ms: Millis,
    /// Wall-clock milliseconds: data only (record timestamps), never a timer.
    pub wall_ms: Millis,
    pub is_leader: bool,
    pub term: Term,
    pub leader: Option<NodeId>,
    /// The index of the last entry handed to [`PartitionMachine::apply`].
    pub applied: RaftIndex,
    /// Set while the replica replays its committed log at open: the entries were applied
    /// before the restart, so replies and node events from them are dropped.
    pub replaying: bool,
}

/// A committed entry as a machine sees it.
#[derive(Clone, Debug)]
pub struct CommittedEntry<'a> {
    pub index: RaftIndex,
    pub term: Term,
    /// The entry's Kafka batch as proposed (offsets are stamped when it is read back).
    pub data: &'a Bytes,
    /// The Kafka offset of the batch's first record.
    pub base_offset: Offset,
}

/// An entry that reached this replica's log (not yet committed).
#[derive(Clone, Debug)]
pub struct AppendedEntry<'a> {
    pub index: RaftIndex,
    pub term: Term,
    pub data: &'a [u8],
}

/// A command routed to a partition's machine.
#[derive(Clone, Debug)]
pub enum Command {
    /// A client request (admin requests to the controller, group requests to a coordinator).
    Client { id: RequestId, request: Request },
    /// A broker's periodic report, for the controller.
    Heartbeat {
        from: NodeId,
        heartbeat: BrokerHeartbeat,
    },
    /// A node asking to join, for the controller: registered fenced, so that every node can
    /// dial it and nothing is placed on it before it is admitted and heartbeats.
    Join {
        registration: crate::controller::RegisterBroker,
    },
}

/// What the node does for a machine (the metadata log decides which replicas exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// This node should host `tp`; a new replica starts from the raft configuration `voters`
    /// (see [`crate::controller::MetadataImage::initial_voters`]), and campaigns at once when
    /// `campaign` (the preferred leader of a new partition).
    ReplicaWanted {
        tp: TopicPartition,
        voters: Vec<NodeId>,
        configs: std::collections::BTreeMap<String, String>,
        campaign: bool,
    },
    /// `tp` no longer exists, or no longer has a replica here: close the local replica and
    /// delete its files.
    ReplicaGone { tp: TopicPartition },
    /// A topic's config overrides changed: its local replicas take the new settings.
    TopicConfigsChanged {
        topic: String,
        configs: std::collections::BTreeMap<String, String>,
    },
    /// Dynamic broker configs changed (cluster-wide or this broker's): every local replica
    /// of a client topic takes its settings again.
    BrokerConfigsChanged,
    /// The cluster got its id: the node stores it in its data directory.
    ClusterCreated { cluster_id: String },
}

/// One output of a machine.
#[derive(Clone, Debug)]
pub enum Effect {
    Reply(RequestId, Response),
    /// Append `batch` to this partition's log (acks=all); the outcome comes back through
    /// [`PartitionMachine::on_proposal`] with `tag`.
    Propose {
        tag: u64,
        batch: Bytes,
    },
    Node(NodeEvent),
    /// A command for the machine of another partition (on this node or, later, elsewhere).
    Message {
        to: TopicPartition,
        command: Command,
    },
}

/// The outputs of one call, in order.
#[derive(Debug, Default)]
pub struct Effects {
    items: Vec<Effect>,
}

impl Effects {
    pub fn reply(&mut self, id: RequestId, response: Response) {
        self.items.push(Effect::Reply(id, response));
    }

    pub fn propose(&mut self, tag: u64, batch: Bytes) {
        self.items.push(Effect::Propose { tag, batch });
    }

    pub fn node(&mut self, event: NodeEvent) {
        self.items.push(Effect::Node(event));
    }

    pub fn message(&mut self, to: TopicPartition, command: Command) {
        self.items.push(Effect::Message { to, command });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes every effect, oldest first.
    pub fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.items)
    }
}

/// What [`PartitionMachine::admit`] decided about a produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Append it.
    Propose,
    /// Do not append it; answer the client with this (a duplicate's original base offset, or
    /// the reason it was refused).
    Answer(Result<Offset, ClientError>),
}

/// Why a snapshot could not be restored. The replica never applies such a snapshot: it
/// re-fetches one from the leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot is inconsistent: {0}")]
    Invalid(String),
}

/// State derived from one partition's committed log. See the module docs for the contract.
pub trait PartitionMachine {
    /// Applies one committed entry; entries arrive in log order, each once.
    fn apply(&mut self, entry: &CommittedEntry<'_>, ctx: &Ctx, fx: &mut Effects);

    /// The replica's term, role or leader changed (`ctx` has the new ones). Soft state that
    /// belongs to one leadership is dropped or rebuilt here.
    fn on_role(&mut self, ctx: &Ctx, fx: &mut Effects);

    /// The node ticked (`ctx.now_ms` is monotonic).
    fn tick(&mut self, ctx: &Ctx, fx: &mut Effects);

    /// A command routed to this partition.
    fn handle(&mut self, command: Command, ctx: &Ctx, fx: &mut Effects);

    /// The outcome of the proposal made with `tag`: its base offset once committed, or an error
    /// (`Indeterminate` when it may still commit).
    fn on_proposal(
        &mut self,
        tag: u64,
        result: Result<Offset, ClientError>,
        ctx: &Ctx,
        fx: &mut Effects,
    );

    /// A client's produce on the leader, before it is proposed: a machine that screens
    /// writes (the producer-state table: duplicates answered with their original offset, gaps
    /// and stale epochs refused) answers here instead of letting it through.
    fn admit(&mut self, _batch: &[u8], _ctx: &Ctx) -> Admission {
        Admission::Propose
    }

    /// Entries reached this replica's log (leader or follower), before they commit. State
    /// that must run ahead of the commit index is updated here and rolled back by
    /// [`PartitionMachine::on_truncate`]. Most machines need neither.
    fn on_append(&mut self, _entries: &[AppendedEntry<'_>]) {}

    /// Entries from `from_index` on were dropped from this replica's log (a new leader's log
    /// conflicted, or a snapshot replaced the log).
    fn on_truncate(&mut self, _from_index: RaftIndex) {}

    /// Whether the log exists only to build this machine's state, so that a snapshot lets the
    /// log before it be deleted (the metadata log). A data partition's log is what consumers
    /// read: its machine's snapshots only cap what retention may delete.
    fn compacts_log(&self) -> bool {
        false
    }

    /// The machine's state as of `ctx.applied`, encoded.
    fn snapshot(&self) -> Bytes;

    /// Replaces the state by a snapshot's. Events for the node describe the difference (replicas
    /// to create or delete). On error the state is unchanged.
    fn restore(&mut self, data: &[u8], ctx: &Ctx, fx: &mut Effects) -> Result<(), RestoreError>;

    /// Panics if an invariant of the state is broken (called by the simulator after steps and
    /// by the replica after every restore).
    fn check_invariants(&self);

    /// For callers that need the concrete machine (the node reads the controller's image).
    fn as_any(&self) -> &dyn Any;
}
