//! A pre-decode walk over request bodies that refuses any array whose declared length exceeds the
//! bytes left in the frame.
//!
//! kafka-protocol 0.18 calls `Vec::with_capacity(count)` with the count read off the wire before
//! decoding a single element (upstream kafka-protocol-rs PRs #152/#200). A 20-byte frame that
//! declares four billion topics asks for hundreds of GiB, the allocator fails, and Rust aborts
//! the whole broker: no panic to catch. Every array element takes at least one byte on the
//! wire, so a count above the remaining bytes cannot be a real request. The guard walks the
//! exact field layout of each request version we advertise (only to skip fields; values are not
//! kept) and rejects such counts before kafka-protocol sees the body. Each handler writes its
//! request's layout ([`super::handlers::Handler::layout`]) with the [`Reader`] here. A test
//! encodes every advertised version of every API in the table with kafka-protocol and checks
//! that the walk consumes it exactly, so the layouts cannot drift from the decoder's. Remove
//! this once the upstream fix ships.

use kafka_protocol::messages::ApiKey;

/// Why a request body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The body ended inside a field.
    #[error("request body truncated")]
    Truncated,
    /// An array declares more elements than bytes remain.
    #[error("array of {count} elements in {remaining} remaining bytes")]
    ArrayTooLong { count: u64, remaining: usize },
    /// A length prefix is negative (other than -1 for null) or a varint is malformed.
    #[error("malformed length")]
    BadLength,
}

/// Walks one request body: an API's field layout, given by its row in
/// [`super::handlers::Api::ALL`].
pub type Layout = fn(&mut Reader<'_>, i16) -> Result<(), GuardError>;

/// Checks that `body` (the bytes after the request header of a `version` request of `api`)
/// declares no impossible array, walking it with `layout`. The body must be exactly one
/// request, bar trailing bytes (which kafka-protocol ignores too).
pub fn check_body(
    api: ApiKey,
    version: i16,
    layout: Layout,
    body: &[u8],
) -> Result<(), GuardError> {
    walk(api, version, layout, body).map(|_| ())
}

/// Walks the body and returns how many bytes the request occupies.
fn walk(api: ApiKey, version: i16, layout: Layout, body: &[u8]) -> Result<usize, GuardError> {
    // Flexible versions (compact lengths, tagged fields) are exactly those with a v2 request
    // header, so kafka-protocol's header table says which encoding the body uses.
    let flexible = api.request_header_version(version) >= 2;
    let mut r = Reader {
        buf: body,
        pos: 0,
        flexible,
    };
    layout(&mut r, version)?;
    r.tags()?;
    Ok(r.pos)
}

/// A cursor that skips Kafka primitive types in the classic or the flexible (compact) encoding.
/// Handlers describe their request layouts with it (see [`Layout`]).
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Skips `n` fixed bytes (an integer, a boolean, a UUID).
    pub fn skip(&mut self, n: usize) -> Result<(), GuardError> {
        if n > self.remaining() {
            return Err(GuardError::Truncated);
        }
        self.pos += n;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], GuardError> {
        let start = self.pos;
        self.skip(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[start..start + N]);
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u32, GuardError> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.fixed::<1>()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GuardError::BadLength)
    }

    /// A length: compact (varint, 0 = null, else n + 1) or classic (i16/i32, -1 = null).
    /// Returns `None` for null.
    fn length(&mut self, classic_i16: bool) -> Result<Option<u64>, GuardError> {
        if self.flexible {
            return Ok(self.uvarint()?.checked_sub(1).map(u64::from));
        }
        let n = if classic_i16 {
            i64::from(i16::from_be_bytes(self.fixed::<2>()?))
        } else {
            i64::from(i32::from_be_bytes(self.fixed::<4>()?))
        };
        match n {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(n as u64)),
            _ => Err(GuardError::BadLength),
        }
    }

    /// Skips a string or nullable string.
    pub fn string(&mut self) -> Result<(), GuardError> {
        let n = self.length(true)?.unwrap_or(0);
        self.skip(usize::try_from(n).map_err(|_| GuardError::Truncated)?)
    }

    /// Skips a byte array or nullable byte array (records).
    pub fn bytes(&mut self) -> Result<(), GuardError> {
        let n = self.length(false)?.unwrap_or(0);
        self.skip(usize::try_from(n).map_err(|_| GuardError::Truncated)?)
    }

    /// Skips an array (or nullable array), walking each element with `element`; refuses a
    /// count above the bytes left, before walking any element.
    pub fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), GuardError>,
    ) -> Result<(), GuardError> {
        let count = self.length(false)?.unwrap_or(0);
        if count > self.remaining() as u64 {
            return Err(GuardError::ArrayTooLong {
                count,
                remaining: self.remaining(),
            });
        }
        for _ in 0..count {
            element(self)?;
        }
        Ok(())
    }

    /// Tagged fields (flexible versions only): a count, then (tag, size, bytes) each.
    pub fn tags(&mut self) -> Result<(), GuardError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::handlers::fetch::Fetch;
    use crate::kafka::handlers::group_offsets::OffsetCommit;
    use crate::kafka::handlers::metadata::Metadata;
    use crate::kafka::handlers::produce::Produce;
    use crate::kafka::handlers::{Api, Handler};
    use crate::runtime::NodeHandle;

    #[test]
    fn test_walk_consumes_every_advertised_version_exactly() {
        // The skip layouts match kafka-protocol's encoders byte for byte, for every version we
        // advertise, so a valid request is never refused and arrays are found where they are.
        for api in Api::<NodeHandle>::ALL {
            for v in api.min..=api.max {
                let body = (api.sample)(v);
                assert_eq!(
                    walk(api.key, v, api.layout, &body),
                    Ok(body.len()),
                    "{:?} v{v}",
                    api.key
                );
                // One byte short is refused (ApiVersions v0-2 have an empty body).
                if let Some(short) = body.len().checked_sub(1) {
                    let walked = walk(api.key, v, api.layout, &body[..short]);
                    assert!(walked.is_err(), "{:?} v{v} short", api.key);
                }
            }
        }
    }

    #[test]
    fn test_huge_array_counts_are_refused() {
        // The 20-byte requests that would make kafka-protocol abort the process are refused.
        let compact_max = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(
            check_body(ApiKey::Metadata, 12, Metadata::layout, &compact_max),
            Err(GuardError::ArrayTooLong { .. })
        ));
        let mut fetch = vec![0u8; 4 * 4 + 1 + 8];
        fetch.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check_body(ApiKey::Fetch, 7, Fetch::layout, &fetch),
            Err(GuardError::ArrayTooLong { .. })
        ));
        // A nested count is checked too: one topic, then four billion partitions.
        let mut produce = vec![0xFF, 0xFF, 0, 1, 0, 0, 0, 0]; // null txn id, acks, timeout
        produce.extend_from_slice(&1i32.to_be_bytes());
        produce.extend_from_slice(&[0, 1, b't']);
        produce.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check_body(ApiKey::Produce, 3, Produce::layout, &produce),
            Err(GuardError::ArrayTooLong { .. })
        ));
        // And in a group request: OffsetCommit v2, one topic, four billion partitions.
        let mut commit = vec![0, 1, b'g', 0, 0, 0, 0, 0, 0]; // group, generation, member ""
        commit.extend_from_slice(&[0; 8]); // retention_time_ms
        commit.extend_from_slice(&1i32.to_be_bytes());
        commit.extend_from_slice(&[0, 1, b't']);
        commit.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            check_body(ApiKey::OffsetCommit, 2, OffsetCommit::layout, &commit),
            Err(GuardError::ArrayTooLong { .. })
        ));
        assert_eq!(
            check_body(
                ApiKey::Metadata,
                1,
                Metadata::layout,
                &(-7i32).to_be_bytes()
            ),
            Err(GuardError::BadLength)
        );
    }
}
