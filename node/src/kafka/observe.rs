//! What the listener reports to [`Metrics`](crate::metrics::Metrics) about closed
//! connections: the metrics category of each reason for closing one.
//!
//! The error codes inside responses are listed by each handler
//! ([`super::handlers::Handler::error_codes`]), read back from the response it built rather than
//! threaded through the handler, so whatever the client is told is what is counted.

use super::codec::CodecError;
use super::ConnectionError;
use crate::metrics::ConnectionErrorKind;

impl ConnectionError {
    /// The metrics category of this reason for closing a connection.
    pub fn kind(&self) -> ConnectionErrorKind {
        match self {
            ConnectionError::Codec(e) => e.kind(),
            ConnectionError::AcksZeroProduceFailed => ConnectionErrorKind::AcksZeroProduceFailed,
        }
    }
}

impl CodecError {
    /// The metrics category of this codec failure.
    pub fn kind(&self) -> ConnectionErrorKind {
        match self {
            CodecError::Io(_) => ConnectionErrorKind::Io,
            CodecError::FrameTooLarge { .. } => ConnectionErrorKind::FrameTooLarge,
            CodecError::FrameTooShort(_) => ConnectionErrorKind::FrameTooShort,
            CodecError::UnknownApiKey(_) => ConnectionErrorKind::UnknownApiKey,
            CodecError::Unsupported { .. } => ConnectionErrorKind::UnsupportedVersion,
            CodecError::Refused { .. } => ConnectionErrorKind::Refused,
            CodecError::Decode { .. } => ConnectionErrorKind::Decode,
            CodecError::Encode { .. } => ConnectionErrorKind::Encode,
        }
    }
}
