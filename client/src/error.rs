//! The client's errors. Every error that came from a broker names it (its address, and its node
//! id when known) and, for an error code in a response, the Kafka error itself
//! ([`ResponseError`], which carries the numeric code). [`Error::is_retriable`] is the one place
//! that decides whether an operation may be tried again: the retry loops in [`crate::cluster`]
//! and the producer's sender ask it and never retry what it calls fatal.

use std::fmt;
use std::time::Duration;

pub use kafka_protocol::ResponseError;

/// A broker as an error names it: where it is, and which node id it is when the metadata said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRef {
    /// The address (`host:port`) the client connected (or tried to connect) to.
    pub addr: String,
    /// The broker's node id, or `None` for a bootstrap address not yet matched to a node.
    pub node_id: Option<i32>,
}

impl fmt::Display for BrokerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node_id {
            Some(id) => write!(f, "broker {id} at {}", self.addr),
            None => write!(f, "broker at {}", self.addr),
        }
    }
}

/// Everything an operation of this client can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The TCP connection to a broker could not be made.
    #[error("cannot connect to {broker}: {reason}")]
    Connect {
        /// The broker tried.
        broker: BrokerRef,
        /// The operating system's reason.
        reason: String,
    },
    /// None of the bootstrap addresses answered (each was tried; the last failure is kept).
    #[error("no bootstrap broker of [{bootstrap}] answered (connect timeout {within:?} each); last error: {last}")]
    NoBrokerAvailable {
        /// The bootstrap list, as configured.
        bootstrap: String,
        /// The connect timeout of each attempt (the operation retries such rounds until its
        /// `default_api_timeout_ms` runs out).
        within: Duration,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// A request got no response in time.
    #[error("{api} request to {broker} timed out after {after:?}")]
    Timeout {
        /// The broker asked.
        broker: BrokerRef,
        /// The API (`Produce`, `Fetch`, ...).
        api: &'static str,
        /// How long the client waited.
        after: Duration,
    },
    /// The connection broke (reset, or closed by the broker) before the response came.
    #[error("connection to {broker} lost: {reason}")]
    Disconnected {
        /// The broker whose connection broke.
        broker: BrokerRef,
        /// What the socket said.
        reason: String,
    },
    /// The broker sent bytes that are not a valid response (bad length, bad header, a body that
    /// does not decode, an unknown correlation id).
    #[error("{broker} sent an invalid response: {reason}")]
    Protocol {
        /// The broker that sent them.
        broker: BrokerRef,
        /// What was wrong with them.
        reason: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{broker} answered {api} with {} (code {}){}", kafka_name(*code), code.code(), context.as_deref().map(|c| format!(" for {c}")).unwrap_or_default())]
    Kafka {
        /// The broker that answered (`None` if the error was not tied to one response).
        broker: BrokerRef,
        /// The API it answered.
        api: &'static str,
        /// The Kafka error (its `code()` is the wire code).
        code: ResponseError,
        /// What the error concerns (`topic t partition 3`, a group id), when there is one.
        context: Option<String>,
    },
    /// The broker supports no version of an API the client needs in common with this client.
    #[error("{broker} supports no version of {api} this client speaks (broker {broker_min}..={broker_max}, client {client_min}..={client_max})")]
    UnsupportedVersion {
        /// The broker.
        broker: BrokerRef,
        /// The API.
        api: &'static str,
        /// The broker's range.
        broker_min: i16,
        /// The broker's range.
        broker_max: i16,
        /// This client's range.
        client_min: i16,
        /// This client's range.
        client_max: i16,
    },
    /// The topic does not exist (after the metadata refreshes the client allows itself).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A partition number outside the topic.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// A record bigger than the client's own limits allow.
    #[error("record of {size_bytes} bytes exceeds {limit}")]
    RecordTooLarge {
        /// The record's encoded size estimate.
        size_bytes: usize,
        /// The limit it broke (`max_request_size_bytes = 1048576`).
        limit: String,
    },
    /// A record was not acknowledged within `delivery_timeout_ms`.
    #[error("record not delivered within {0:?}")]
    DeliveryTimeout(Duration),
    /// A record's fate is not known: it may or may not have been written (the producer had to
    /// give up on it after a timeout or lost connection, and bumped its epoch).
    #[error("unknown outcome: {0}")]
    UnknownOutcome(String),
    /// A bad configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An argument the operation cannot accept (an empty subscription, a partition not assigned).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client (or the producer, or the consumer) was closed.
    #[error("the client is closed")]
    Closed,
    /// Encoding a request failed (a value out of range for the protocol).
    #[error("cannot encode the {api} request: {reason}")]
    Encode {
        /// The API.
        api: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether trying the same operation again (after refreshing metadata and a backoff) may
    /// succeed. Kafka error codes follow the protocol's own classification
    /// ([`ResponseError::is_retriable`]), with the group codes that a rejoin cures added;
    /// connection failures and timeouts are retriable; everything else is fatal.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Disconnected { .. }
            | Error::NoBrokerAvailable { .. } => true,
            Error::Kafka { code, .. } => is_retriable_code(*code),
            _ => false,
        }
    }

    /// The Kafka error code, if the broker answered with one.
    pub fn kafka_code(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            Error::NoBrokerAvailable { last, .. } => last.kafka_code(),
            _ => None,
        }
    }

    /// Whether the request may have taken effect although no answer came (a timeout or a lost
    /// connection after it was sent): the producer's "unknown outcome".
    pub fn is_unknown_outcome(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Disconnected { .. })
    }

    /// Whether the error means the client's metadata is stale (leaders moved, or the
    /// coordinator did), so a refresh must come before the retry.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => matches!(
                code,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::NotController
            ),
            other => other.is_unknown_outcome() || matches!(other, Error::Connect { .. }),
        }
    }
}

/// A Kafka error's protocol name, as Kafka's docs and tools spell it (`TOPIC_ALREADY_EXISTS`),
/// from the variant name of `kafka-protocol` (`TopicAlreadyExists`).
pub fn kafka_name(code: ResponseError) -> String {
    if let ResponseError::Unknown(n) = code {
        return format!("UNKNOWN_CODE_{n}");
    }
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The protocol's retriable codes, plus those a consumer cures by rejoining or rediscovering
/// (the protocol lists some of these as non-retriable because a plain resend does not help).
pub fn is_retriable_code(code: ResponseError) -> bool {
    code.is_retriable()
        || matches!(
            code,
            ResponseError::CoordinatorNotAvailable
                | ResponseError::NotCoordinator
                | ResponseError::CoordinatorLoadInProgress
                | ResponseError::RebalanceInProgress
        )
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns a response's `error_code` into `Ok(())` or an [`Error::Kafka`].
pub(crate) fn check_code(
    code: i16,
    broker: BrokerRef,
    api: &'static str,
    context: impl FnOnce() -> Option<String>,
) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::Kafka {
            broker,
            api,
            code,
            context: context(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerRef {
        BrokerRef {
            addr: "127.0.0.1:9092".into(),
            node_id: Some(2),
        }
    }

    fn kafka(code: ResponseError) -> Error {
        Error::Kafka {
            broker: broker(),
            api: "Produce",
            code,
            context: Some("topic t partition 0".into()),
        }
    }

    // Proves the classification the retry loops rely on: leadership and transport trouble is
    // retried, a record too large or a fenced producer is not.
    #[test]
    fn test_error_classification() {
        let table = [
            (ResponseError::NotLeaderOrFollower, true),
            (ResponseError::LeaderNotAvailable, true),
            (ResponseError::NotEnoughReplicas, true),
            (ResponseError::RequestTimedOut, true),
            (ResponseError::NotCoordinator, true),
            (ResponseError::CoordinatorNotAvailable, true),
            (ResponseError::MessageTooLarge, false),
            (ResponseError::InvalidProducerEpoch, false),
            (ResponseError::TopicAuthorizationFailed, false),
            (ResponseError::InvalidTopicException, false),
            (ResponseError::Unknown(-77), false),
        ];
        for (code, retriable) in table {
            assert_eq!(kafka(code).is_retriable(), retriable, "{code:?}");
        }
        let timeout = Error::Timeout {
            broker: broker(),
            api: "Fetch",
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_retriable() && timeout.is_unknown_outcome());
        assert!(!Error::UnknownTopic("t".into()).is_retriable());
        assert!(!Error::Closed.is_retriable());
    }

    // Proves the message names the broker, its id, the API and the numeric Kafka code.
    #[test]
    fn test_error_message_names_broker_and_code() {
        let text = kafka(ResponseError::MessageTooLarge).to_string();
        assert!(text.contains("broker 2 at 127.0.0.1:9092"), "{text}");
        assert!(text.contains("MESSAGE_TOO_LARGE (code 10)"), "{text}");
        assert_eq!(
            kafka_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(kafka_name(ResponseError::Unknown(-77)), "UNKNOWN_CODE_-77");
        assert!(text.contains("Produce"), "{text}");
        assert!(text.contains("topic t partition 0"), "{text}");
        assert_eq!(
            kafka(ResponseError::MessageTooLarge).kafka_code(),
            Some(ResponseError::MessageTooLarge)
        );
    }
}
