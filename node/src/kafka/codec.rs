//! Framing and encoding for the Kafka listener: length-prefixed frames, the fixed request-header
//! prefix, request decoding and response encoding, and the splitting of a produce's record set
//! into single v2 batches. Which APIs and versions are accepted is the table's business
//! ([`super::handlers::Api::ALL`]).
//!
//! Every function here treats its input as untrusted bytes from the network and returns a
//! [`CodecError`] instead of panicking. kafka-protocol 0.18 preallocates arrays from counts read
//! off the wire, so bodies pass [`super::guard`] before [`decode_body`] sees them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use railyard_core::batch::{self, BatchError, BatchHeader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Kafka's default `socket.request.max.bytes`: the largest request frame we accept.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Bytes every request header starts with, whatever its version: api key (i16), api version
/// (i16), correlation id (i32).
pub const HEADER_PREFIX_LEN: usize = 8;

/// Why a frame could not be read, decoded or answered. Every variant closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed mid-frame (including EOF inside a frame).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix exceeds the configured limit (Kafka's `socket.request.max.bytes`).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: i64, max: usize },
    /// The length prefix is negative or too short to hold a request header.
    #[error("frame length {0} cannot hold a request header")]
    FrameTooShort(i64),
    /// The api key is not one Kafka defines.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// A known API we do not implement, or a version outside what we advertise.
    #[error("unsupported api {api:?} version {version}")]
    Unsupported { api: ApiKey, version: i16 },
    /// The body declares an array longer than the frame could hold (see [`super::guard`]).
    #[error("refused {api:?} v{version}: {reason}")]
    Refused {
        api: ApiKey,
        version: i16,
        reason: super::guard::GuardError,
    },
    /// The request header or body does not decode.
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    /// A response does not encode: a field set that the version lacks, i.e. a bug of ours.
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// The fixed first eight bytes of every request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads one length-prefixed frame. `Ok(None)` means the peer closed the connection cleanly
/// between frames. Frames over `max_frame_bytes` are refused before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, CodecError> {
    let mut len_buf = [0u8; 4];
    // A clean close is an EOF before the first byte of the prefix; anything later is truncation.
    let first = reader.read(&mut len_buf).await?;
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut len_buf[first..]).await?;
    let len = i32::from_be_bytes(len_buf) as i64;
    if len < HEADER_PREFIX_LEN as i64 {
        return Err(CodecError::FrameTooShort(len));
    }
    if len as u64 > max_frame_bytes as u64 {
        return Err(CodecError::FrameTooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    let mut frame = BytesMut::zeroed(len as usize);
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame.freeze()))
}

/// Parses the version-independent header prefix without consuming it.
pub fn header_prefix(frame: &[u8]) -> Result<HeaderPrefix, CodecError> {
    if frame.len() < HEADER_PREFIX_LEN {
        return Err(CodecError::FrameTooShort(frame.len() as i64));
    }
    let mut b = &frame[..HEADER_PREFIX_LEN];
    Ok(HeaderPrefix {
        api_key: b.get_i16(),
        api_version: b.get_i16(),
        correlation_id: b.get_i32(),
    })
}

/// Decodes the full request header of a supported `(api, version)`, leaving `frame` at the body.
pub fn decode_header(
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<RequestHeader, CodecError> {
    let header_version = api.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| CodecError::Decode {
        api,
        version,
        reason: format!("header: {e}"),
    })
}

/// Decodes a request body of a supported version.
pub fn decode_body<T: Decodable>(
    body: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<T, CodecError> {
    T::decode(body, version).map_err(|e| CodecError::Decode {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Encodes a whole response frame: length prefix, response header, body.
pub fn encode_response<T: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, CodecError> {
    let err = |e: String| CodecError::Encode {
        api,
        version,
        reason: e,
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = T::header_version(version);
    // Sized up front: a fetch response carries megabytes of records, and growing the buffer
    // by doubling would copy them several times over.
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(|e| err(e.to_string()))?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(0); // patched below, once the size is known
    header
        .encode(&mut out, header_version)
        .map_err(|e| err(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| err(e.to_string()))?;
    let len = i32::try_from(out.len() - 4).map_err(|_| err("response over 2 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Splits a produce's record set into its v2 batches, each one complete per its header.
/// Checks only the framing (magic, lengths); CRCs are checked by [`batch::validate`].
pub fn split_batches(records: &Bytes) -> Result<Vec<Bytes>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::TooShort);
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..])?;
        let end = pos + header.total_len();
        if end > records.len() {
            return Err(BatchError::LengthMismatch {
                declared: header.batch_length as i64,
                actual: records.len() - pos - batch::BATCH_LENGTH_OFFSET,
            });
        }
        out.push(records.slice(pos..end));
        pos = end;
    }
    Ok(out)
}

/// A message carrying `id` in its `topic_id` field. kafka-protocol's fields use `uuid::Uuid`,
/// which it does not re-export; rather than add a dependency for one constructor, decode the id
/// through a message whose first field is a UUID (MetadataRequestTopic v10: uuid, null name, no
/// tagged fields) and move the field out: `topic.topic_id = uuid_carrier(id).topic_id`.
pub fn uuid_carrier(id: [u8; 16]) -> MetadataRequestTopic {
    let mut buf = BytesMut::with_capacity(18);
    buf.put_slice(&id);
    buf.put_u8(0); // compact nullable string: null
    buf.put_u8(0); // no tagged fields
    let topic = MetadataRequestTopic::decode(&mut buf.freeze(), 10);
    // These 18 bytes are a valid v10 encoding, so decoding cannot fail; asserting keeps a future
    // change of the schema from silently turning every topic id into nil.
    assert!(topic.is_ok(), "uuid carrier encoding rejected: {topic:?}");
    topic.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use railyard_core::batch::BatchBuilder;

    #[test]
    fn test_split_batches_splits_and_rejects_truncation() {
        // Two concatenated batches split at their declared lengths; a cut one is refused.
        let a = BatchBuilder::new(0)
            .record(None, Some(b"a"), &[], 1)
            .build();
        let b = BatchBuilder::new(0)
            .record(None, Some(b"bb"), &[], 2)
            .record(None, Some(b"cc"), &[], 3)
            .build();
        let mut both = BytesMut::new();
        both.put_slice(&a);
        both.put_slice(&b);
        let both = both.freeze();
        let parts = split_batches(&both).unwrap();
        assert_eq!(parts, vec![a.clone(), b.clone()]);
        let cut = both.slice(..both.len() - 1);
        assert!(split_batches(&cut).is_err());
        assert!(split_batches(&Bytes::new()).is_err());
        assert!(split_batches(&Bytes::from_static(&[0u8; 70])).is_err());
    }

    #[test]
    fn test_header_prefix_needs_eight_bytes() {
        // The prefix parser never reads past a short frame.
        assert!(header_prefix(&[0, 18, 0, 3, 0, 0, 0]).is_err());
        let p = header_prefix(&[0, 18, 0, 3, 0, 0, 0, 7, 99]).unwrap();
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
    }

    #[test]
    fn test_topic_uuid_roundtrip() {
        // The UUID detour keeps the bytes as given.
        let id = [7u8; 16];
        assert_eq!(*uuid_carrier(id).topic_id.as_bytes(), id);
    }
}
