//! What the listener reports to [`Metrics`](crate::metrics::Metrics): the error codes inside each typed response, and
//! the reason a connection was closed.
//!
//! Error codes are read back from the response the handler built rather than threaded through
//! every handler, so a handler cannot forget to report one: whatever the client is told is
//! what is counted.

use kafka_protocol::messages::{
    ApiVersionsResponse, CreateTopicsResponse, DeleteTopicsResponse, DescribeClusterResponse,
    DescribeConfigsResponse, FetchResponse, ListOffsetsResponse, MetadataResponse,
    OffsetForLeaderEpochResponse, ProduceResponse,
};

use super::codec::CodecError;
use super::ConnectionError;
use crate::metrics::ConnectionErrorKind;

/// A response whose error codes (top-level, per topic, per partition) can be listed.
pub trait ErrorCodes {
    /// Appends every error code of the response, zeros included.
    fn error_codes(&self, out: &mut Vec<i16>);
}

impl ErrorCodes for ApiVersionsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.push(self.error_code);
    }
}

impl ErrorCodes for DescribeClusterResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.push(self.error_code);
    }
}

impl ErrorCodes for MetadataResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.push(self.error_code);
        for t in &self.topics {
            out.push(t.error_code);
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for ProduceResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        for t in &self.responses {
            out.extend(t.partition_responses.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for FetchResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.push(self.error_code);
        for t in &self.responses {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for ListOffsetsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        for t in &self.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for OffsetForLeaderEpochResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        for t in &self.topics {
            out.extend(t.partitions.iter().map(|p| p.error_code));
        }
    }
}

impl ErrorCodes for CreateTopicsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.extend(self.topics.iter().map(|t| t.error_code));
    }
}

impl ErrorCodes for DeleteTopicsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.extend(self.responses.iter().map(|t| t.error_code));
    }
}

impl ErrorCodes for DescribeConfigsResponse {
    fn error_codes(&self, out: &mut Vec<i16>) {
        out.extend(self.results.iter().map(|r| r.error_code));
    }
}

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
