//! The `Network` trait and the node-to-node frame.
//!
//! Every raft message a node produces for one peer during one step travels in a single
//! [`Envelope`] (prost-encoded), so a peer with many partitions gets one frame per step instead
//! of one per partition. The raft messages themselves are raft-rs's protobuf `Message`s, carried
//! as opaque bytes per partition. Transports (the simulator's in-memory network, the node's TCP
//! connections) implement [`Network`]; they may drop an envelope under pressure, because raft
//! retransmits.

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::Message as RaftMessage;

use crate::metadata::{PartitionLeader, RegisterBroker};
use crate::types::{NodeId, PartitionId, TopicPartition};

/// Most raft payload bytes one envelope carries (a single larger message goes alone): a
/// transport frame holds one envelope, and a catch-up step can produce hundreds of MiB.
pub const ENVELOPE_BYTES_MAX: usize = 8 << 20;

/// One raft message for one partition.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupMessage {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: PartitionId,
    /// A raft-rs `eraftpb::Message`, protobuf-encoded.
    #[prost(bytes = "bytes", tag = "3")]
    pub raft: Bytes,
}

/// A topic a broker asks the controller to create because a client used it (Kafka's
/// `auto.create.topics.enable`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AutoCreateTopic {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub partitions: u32,
    #[prost(uint32, tag = "3")]
    pub replication_factor: u32,
}

/// A broker's periodic report to the controller (Kafka's BrokerHeartbeat and
/// BrokerRegistration in one): it keeps the broker unfenced, (re-)registers its listener, and
/// carries the leaderships it holds so that every node learns every partition's leader through
/// the metadata log, including partitions it does not host.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerHeartbeat {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<RegisterBroker>,
    /// Every partition this broker leads, with its term and ISR.
    #[prost(message, repeated, tag = "2")]
    pub leaders: Vec<PartitionLeader>,
    #[prost(message, repeated, tag = "3")]
    pub create_topics: Vec<AutoCreateTopic>,
    /// Set while the broker waits for a block of producer ids: the grant it asks for (its
    /// incarnation, request counter and block size).
    #[prost(message, optional, tag = "4")]
    pub producer_ids: Option<crate::controller::AllocateProducerIds>,
    /// Moves finished on partitions this broker leads: their committed configuration is the
    /// target, so the controller may record them done.
    #[prost(message, repeated, tag = "5")]
    pub moves_done: Vec<crate::controller::MoveDone>,
}

/// A node asking the controller quorum to admit it to a running cluster (it has no metadata
/// log yet). Sent to every configured controller voter until one admits it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinRequest {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<RegisterBroker>,
}

/// Why a node refused a peer's envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum RefusalKind {
    /// The envelope named another cluster: nothing in it was read.
    ForeignCluster = 0,
    /// A join under the id of a controller voter or of a node admitted before: an empty log
    /// there could vote away acknowledged entries. Final.
    DuplicateId = 1,
    /// A join under the id of a registered broker that is still alive (its session has not
    /// expired): the joiner asks again, as a Kafka broker retries a duplicate registration.
    IdInUse = 2,
}

/// The answer to an envelope that was refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Refusal {
    #[prost(enumeration = "RefusalKind", tag = "1")]
    pub kind: i32,
    /// The refusing node's cluster.
    #[prost(string, tag = "2")]
    pub cluster_id: String,
    #[prost(string, tag = "3")]
    pub detail: String,
}

/// Everything one node sends one peer in one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(uint64, tag = "1")]
    pub from: NodeId,
    #[prost(uint64, tag = "2")]
    pub to: NodeId,
    #[prost(message, repeated, tag = "3")]
    pub messages: Vec<GroupMessage>,
    /// Set when `from` reports to `to` as its controller.
    #[prost(message, optional, tag = "4")]
    pub heartbeat: Option<BrokerHeartbeat>,
    /// The cluster whose data `from` holds; `None` before it has one (a new node). A node that
    /// has one refuses envelopes naming another.
    #[prost(string, optional, tag = "5")]
    pub cluster_id: Option<String>,
    #[prost(message, optional, boxed, tag = "6")]
    pub join: Option<Box<JoinRequest>>,
    /// The controller admitted `to`: the cluster's identity and the metadata group's
    /// configuration at index 0, from which `to` replays the metadata log.
    #[prost(message, optional, boxed, tag = "7")]
    pub admitted: Option<Box<crate::controller::ClusterCreated>>,
    #[prost(message, optional, boxed, tag = "8")]
    pub refused: Option<Box<Refusal>>,
}

impl Envelope {
    /// An envelope with no raft messages.
    pub fn control(from: NodeId, to: NodeId, cluster_id: Option<String>) -> Envelope {
        Envelope {
            from,
            to,
            cluster_id,
            ..Envelope::default()
        }
    }
}

/// Why an incoming group message was rejected (the envelope's other messages still count).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("raft message for {tp} does not decode: {reason}")]
    BadRaftMessage { tp: TopicPartition, reason: String },
}

impl GroupMessage {
    pub fn encode(tp: &TopicPartition, msg: &RaftMessage) -> GroupMessage {
        // Encoding into a Vec cannot fail for a well-formed in-memory message.
        let bytes = msg
            .write_to_bytes()
            .expect("encoding an in-memory raft message cannot fail");
        GroupMessage {
            topic: tp.topic.clone(),
            partition: tp.partition,
            raft: Bytes::from(bytes),
        }
    }

    pub fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// Decodes the raft message; bytes from the network never panic here.
    pub fn decode(&self) -> Result<RaftMessage, DecodeError> {
        RaftMessage::parse_from_bytes(&self.raft).map_err(|e| DecodeError::BadRaftMessage {
            tp: self.tp(),
            reason: e.to_string(),
        })
    }
}

/// Where a node's envelopes go. Implemented by the simulator and by the TCP transport.
pub trait Network {
    /// Queues an envelope for delivery to `envelope.to`. Never blocks: a transport under
    /// pressure drops, and raft retransmits.
    fn send(&mut self, envelope: Envelope);
}

/// A `Network` that collects envelopes, for tests and for callers that route them later.
#[derive(Default, Debug)]
pub struct Outbox {
    pub sent: Vec<Envelope>,
}

impl Network for Outbox {
    fn send(&mut self, envelope: Envelope) {
        self.sent.push(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn test_envelope_round_trip_and_garbage() {
        let m = RaftMessage {
            term: 7,
            from: 1,
            to: 2,
            ..Default::default()
        };
        let tp = TopicPartition::new("t", 1);
        let env = Envelope {
            from: 1,
            to: 2,
            messages: vec![GroupMessage::encode(&tp, &m)],
            cluster_id: Some("c1".into()),
            ..Envelope::default()
        };
        let bytes = env.encode_to_vec();
        let back = Envelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.messages[0].decode().unwrap().term, 7);
        let bad = GroupMessage {
            topic: "t".into(),
            partition: 1,
            raft: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert!(bad.decode().is_err());
        assert!(Envelope::decode(&[0xffu8, 0xff, 0xff][..]).is_err());
    }
}
