//! Kafka RecordBatch v2: header parsing, validation, offset stamping, a builder for uncompressed
//! batches and a record decoder.
//!
//! A produce request carries v2 batches that the broker stores and serves verbatim: the leader only
//! checks them ([`validate`]) and writes `baseOffset` and `partitionLeaderEpoch` into its stored
//! copy ([`stamp`]). Those two fields lie before the CRC-covered region, so stamping never
//! invalidates the client's CRC-32C and the broker never re-encodes records.
//!
//! Layout (big-endian), 61 header bytes then the records:
//!
//! ```text
//! 0  baseOffset i64        8  batchLength i32 (bytes after this field)
//! 12 partitionLeaderEpoch  16 magic i8 (= 2)       17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16        23 lastOffsetDelta i32  27 baseTimestamp i64  35 maxTimestamp i64
//! 43 producerId i64        51 producerEpoch i16    53 baseSequence i32   57 recordsCount i32
//! ```
//!
//! Everything here treats its input as untrusted: every function returns a [`BatchError`] on
//! malformed bytes and none of them panics on any input (a proptest feeds arbitrary bytes).

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the fixed v2 batch header.
pub const BATCH_HEADER_LEN: usize = 61;

/// Bytes before `batchLength`'s payload begins: `batchLength` counts everything after offset 12.
pub const BATCH_LENGTH_OFFSET: usize = 12;

/// The only magic (format version) Railyard accepts.
pub const MAGIC_V2: i8 = 2;

/// The CRC covers the batch from `attributes` to the end.
const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a byte string is not an acceptable v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the 61-byte header, or the records end before `recordsCount` records.
    #[error("batch too short")]
    TooShort,
    /// The magic byte is not 2 (v0/v1 message sets are not supported).
    #[error("unsupported batch magic {0}")]
    BadMagic(i8),
    /// `batchLength` + 12 does not equal the number of bytes given.
    #[error("batch length mismatch: header declares {declared} bytes, got {actual}")]
    LengthMismatch { declared: i64, actual: usize },
    /// The stored CRC-32C does not match the bytes from `attributes` to the end.
    #[error("batch crc mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    /// A structurally invalid field; the text names it.
    #[error("invalid batch: {0}")]
    Invalid(&'static str),
    /// Records of a compressed batch cannot be decoded here (the broker never decompresses);
    /// carries the compression codec id from the attributes.
    #[error("batch is compressed with codec {0}")]
    Compressed(u8),
}

/// Compression codec from bits 0-2 of the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// Codec ids 5-7 are unassigned in Kafka.
    Unknown(u8),
}

impl Compression {
    /// The codec id stored in the attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
            Compression::Unknown(id) => id,
        }
    }
}

/// The fixed 61-byte header of a v2 record batch, field for field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which may hold more bytes, e.g. the records or a
    /// following batch). Checks only what the header alone can tell: the magic and that
    /// `batchLength` covers at least the header. Does not check the CRC; see [`validate`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort);
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: be_u32(buf, 17),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if h.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(h.magic));
        }
        if (h.batch_length as i64) < (BATCH_HEADER_LEN - BATCH_LENGTH_OFFSET) as i64 {
            return Err(BatchError::Invalid("batchLength shorter than the header"));
        }
        Ok(h)
    }

    /// Encodes the header into its 61-byte wire form (the inverse of [`BatchHeader::parse`]).
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        let mut w = &mut out[..];
        w.put_i64(self.base_offset);
        w.put_i32(self.batch_length);
        w.put_i32(self.partition_leader_epoch);
        w.put_i8(self.magic);
        w.put_u32(self.crc);
        w.put_i16(self.attributes);
        w.put_i32(self.last_offset_delta);
        w.put_i64(self.base_timestamp);
        w.put_i64(self.max_timestamp);
        w.put_i64(self.producer_id);
        w.put_i16(self.producer_epoch);
        w.put_i32(self.base_sequence);
        w.put_i32(self.records_count);
        assert!(w.is_empty());
        out
    }

    /// Number of offsets the batch occupies: `lastOffsetDelta + 1` (0 if the header is invalid).
    pub fn record_count(&self) -> u32 {
        // A negative delta only survives `parse`, never `validate`; clamp rather than wrap.
        (self.last_offset_delta as i64 + 1).clamp(0, u32::MAX as i64) as u32
    }

    /// Total length of the batch in bytes, including `baseOffset` and `batchLength`.
    pub fn total_len(&self) -> usize {
        // `parse` guarantees batch_length >= 49, so the cast cannot wrap.
        assert!(self.batch_length >= 0);
        self.batch_length as usize + BATCH_LENGTH_OFFSET
    }

    /// The compression codec.
    pub fn compression(&self) -> Compression {
        match (self.attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            id => Compression::Unknown(id),
        }
    }

    /// Whether record timestamps were set by the broker (LogAppendTime) rather than the client.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records (transaction markers), not user data.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The offset just after the batch: `base_offset + record_count`.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.record_count() as i64
    }
}

/// Checks that `buf` is exactly one complete, intact v2 batch and returns its header.
///
/// Checked: magic 2, `batchLength` matches `buf.len()`, CRC-32C, `lastOffsetDelta >= 0`,
/// `recordsCount == lastOffsetDelta + 1` (Kafka requires this of produced batches), a known
/// compression codec, and for uncompressed batches that the records parse, use offset deltas
/// `0..recordsCount` in order and fill the batch exactly. Timestamps are not checked against each
/// other: Kafka allows -1 (unknown) timestamps.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = check_envelope(buf)?;
    if h.compression() == Compression::None {
        walk_records(buf, &h, |_| {})?;
    }
    Ok(h)
}

/// Writes `baseOffset` and `partitionLeaderEpoch` into a batch. Both lie outside the CRC-covered
/// region, so a valid batch stays valid.
pub fn stamp(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(
        buf.len() >= BATCH_HEADER_LEN,
        "stamp on a buffer shorter than a batch header"
    );
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a valid batch LogAppendTime with `now_ms` as its max timestamp, which consumers then
/// read as every record's timestamp (Kafka's `message.timestamp.type=LogAppendTime`), and
/// recomputes the CRC over the changed header fields. The records are untouched.
pub fn stamp_log_append_time(buf: &mut [u8], now_ms: i64) {
    let mut h = BatchHeader::parse(buf).expect("stamp_log_append_time on a validated batch");
    h.attributes |= ATTR_TIMESTAMP_TYPE;
    h.max_timestamp = now_ms;
    buf[..BATCH_HEADER_LEN].copy_from_slice(&h.encode());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A batch with `header`'s fields but `records` as its records section (compressed with
/// `compression`): the length, codec bits and CRC are recomputed. How a leader recompresses a
/// batch without touching its records (the codecs live outside the core).
pub fn with_records(header: &BatchHeader, compression: Compression, records: &[u8]) -> Bytes {
    let mut h = *header;
    h.attributes = (h.attributes & !ATTR_COMPRESSION_MASK) | i16::from(compression.id());
    h.batch_length = i32::try_from(BATCH_HEADER_LEN - BATCH_LENGTH_OFFSET + records.len())
        .expect("a batch under 2 GiB");
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// One decoded record, with its absolute offset and timestamp resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// `baseOffset + offsetDelta`.
    pub offset: i64,
    /// `baseTimestamp + timestampDelta`, or the batch's `maxTimestamp` under LogAppendTime.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Validates `batch` (as [`validate`]) and decodes its records.
///
/// Compressed batches return [`BatchError::Compressed`]: the broker never decompresses.
pub fn decode_records(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let h = check_envelope(batch)?;
    if h.compression() != Compression::None {
        return Err(BatchError::Compressed(h.compression().id()));
    }
    let mut out = Vec::with_capacity((h.records_count as usize).min(batch.len()));
    walk_records(batch, &h, |r| {
        out.push(DecodedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
        })
    })?;
    Ok(out)
}

/// Builds an uncompressed v2 batch with `baseOffset` 0, epoch -1 and no producer id (or the
/// producer fields given to [`BatchBuilder::producer`]). Used by the simulator's producers and by
/// tests.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    count: i32,
    records: BytesMut,
}

impl BatchBuilder {
    /// Starts a batch whose record timestamps are encoded relative to `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64) -> BatchBuilder {
        BatchBuilder {
            base_timestamp: base_timestamp_ms,
            max_timestamp: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            count: 0,
            records: BytesMut::new(),
        }
    }

    /// Sets the idempotent-producer fields.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Adds a record (chaining form of [`BatchBuilder::push`]).
    pub fn record(
        mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
    ) -> Self {
        self.push(key, value, headers, timestamp_ms);
        self
    }

    /// Adds a record.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp_ms: i64,
    ) {
        assert!(self.count < i32::MAX, "batch record count overflow");
        let mut body = Vec::new();
        body.push(0u8); // record attributes: unused in v2
        put_varlong(&mut body, timestamp_ms.wrapping_sub(self.base_timestamp));
        put_varlong(&mut body, self.count as i64);
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(&mut body, Some(k.as_bytes()));
            put_bytes(&mut body, *v);
        }
        let mut len = Vec::new();
        put_varlong(&mut len, body.len() as i64);
        self.records.extend_from_slice(&len);
        self.records.extend_from_slice(&body);
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.count += 1;
    }

    /// Number of records added so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes the batch. Panics if no record was added: a v2 batch holds at least one.
    pub fn build(self) -> Bytes {
        assert!(self.count > 0, "a v2 batch needs at least one record");
        let total = BATCH_HEADER_LEN + self.records.len();
        let batch_length = i32::try_from(total - BATCH_LENGTH_OFFSET).expect("batch over 2 GiB");
        let mut header = BatchHeader {
            base_offset: 0,
            batch_length,
            partition_leader_epoch: -1,
            magic: MAGIC_V2,
            crc: 0,
            attributes: 0,
            last_offset_delta: self.count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.count,
        };
        let mut out = BytesMut::with_capacity(total);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&self.records);
        header.crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&header.crc.to_be_bytes());
        let out = out.freeze();
        assert_eq!(
            validate(&out),
            Ok(header),
            "builder produced an invalid batch"
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Private helpers.

/// Everything [`validate`] checks except the records themselves.
fn check_envelope(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    if h.total_len() != buf.len() {
        return Err(BatchError::LengthMismatch {
            declared: h.batch_length as i64 + BATCH_LENGTH_OFFSET as i64,
            actual: buf.len(),
        });
    }
    let actual = crc32c::crc32c(&buf[CRC_START..]);
    if actual != h.crc {
        return Err(BatchError::CrcMismatch {
            expected: h.crc,
            actual,
        });
    }
    if h.last_offset_delta < 0 {
        return Err(BatchError::Invalid("negative lastOffsetDelta"));
    }
    if h.records_count as i64 != h.last_offset_delta as i64 + 1 {
        return Err(BatchError::Invalid(
            "recordsCount does not match lastOffsetDelta",
        ));
    }
    if let Compression::Unknown(_) = h.compression() {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    Ok(h)
}

/// A record borrowed from its batch: validation walks records without copying them.
struct RecordRef<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Parses every record of an uncompressed batch whose envelope was checked, calling `f` on each.
fn walk_records<'a>(
    buf: &'a [u8],
    h: &BatchHeader,
    mut f: impl FnMut(RecordRef<'a>),
) -> Result<(), BatchError> {
    let mut r = Reader {
        buf,
        pos: BATCH_HEADER_LEN,
    };
    for i in 0..h.records_count {
        let len = r.varint()?;
        if len < 0 {
            return Err(BatchError::Invalid("negative record length"));
        }
        let end = r
            .pos
            .checked_add(len as usize)
            .filter(|&e| e <= buf.len())
            .ok_or(BatchError::TooShort)?;
        let mut rr = Reader {
            buf: &buf[..end],
            pos: r.pos,
        };
        let _attributes = rr.byte()?;
        let ts_delta = rr.varlong()?;
        let offset_delta = rr.varint()?;
        if offset_delta != i {
            return Err(BatchError::Invalid("record offset deltas not sequential"));
        }
        let key = rr.bytes()?;
        let value = rr.bytes()?;
        let n_headers = rr.varint()?;
        if n_headers < 0 {
            return Err(BatchError::Invalid("negative header count"));
        }
        let mut headers = Vec::with_capacity((n_headers as usize).min(rr.remaining()));
        for _ in 0..n_headers {
            let k = rr.bytes()?.ok_or(BatchError::Invalid("null header key"))?;
            let k =
                std::str::from_utf8(k).map_err(|_| BatchError::Invalid("header key not utf-8"))?;
            let v = rr.bytes()?;
            headers.push((k, v));
        }
        if rr.pos != end {
            return Err(BatchError::Invalid("record length does not match contents"));
        }
        r.pos = end;
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(ts_delta)
        };
        f(RecordRef {
            offset: h.base_offset.wrapping_add(offset_delta as i64),
            timestamp,
            key,
            value,
            headers,
        });
    }
    if r.pos != buf.len() {
        return Err(BatchError::Invalid("trailing bytes after the last record"));
    }
    Ok(())
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, BatchError> {
        let b = *self.buf.get(self.pos).ok_or(BatchError::TooShort)?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned LEB128 value of at most `max_bytes` bytes.
    fn uvarint(&mut self, max_bytes: u32) -> Result<u64, BatchError> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BatchError::Invalid("varint too long"))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let v = self.uvarint(10)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let v = self.uvarint(5)?;
        if v > u32::MAX as u64 {
            return Err(BatchError::Invalid("varint overflows 32 bits"));
        }
        let v = v as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// A varint length (-1 = null) followed by that many bytes.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(BatchError::Invalid("negative length"));
        }
        let len = len as usize;
        if len > self.remaining() {
            return Err(BatchError::TooShort);
        }
        let s = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(Some(s))
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

// The `be_*` readers are only called after a length check covering the field.
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Rec = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        i64,
    );

    fn build(base_ts: i64, recs: &[Rec]) -> Bytes {
        let mut b = BatchBuilder::new(base_ts);
        for (k, v, hs, ts) in recs {
            let hs: Vec<(&str, Option<&[u8]>)> =
                hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            b.push(k.as_deref(), v.as_deref(), &hs, *ts);
        }
        b.build()
    }

    fn rec_strategy() -> impl Strategy<Value = Rec> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-z]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                ),
                0..3,
            ),
            -1i64..2_000_000_000_000,
        )
    }

    #[test]
    fn test_builder_output_is_a_valid_batch_with_expected_header() {
        // The builder's defaults match what a Kafka producer without idempotence sends.
        let b = BatchBuilder::new(1000)
            .record(Some(b"k"), Some(b"v"), &[("h", None)], 1005)
            .record(None, Some(b"w"), &[], 1002)
            .build();
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.producer_epoch, -1);
        assert_eq!(h.base_sequence, -1);
        assert_eq!(h.record_count(), 2);
        assert_eq!(h.records_count, 2);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.compression(), Compression::None);
        assert!(!h.is_control());
    }

    #[test]
    fn test_stamp_keeps_crc_valid() {
        // baseOffset and partitionLeaderEpoch are outside the CRC region.
        let b = BatchBuilder::new(0)
            .record(None, Some(b"x"), &[], 0)
            .build();
        let mut m = b.to_vec();
        stamp(&mut m, 12345, 7);
        let h = validate(&m).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (12345, 7));
        assert_eq!(decode_records(&m).unwrap()[0].offset, 12345);
    }

    #[test]
    fn test_malformed_batches_get_typed_errors() {
        // Each class of damage maps to its own error variant.
        let b = BatchBuilder::new(0)
            .record(None, Some(b"x"), &[], 0)
            .build();
        assert_eq!(validate(&b[..10]), Err(BatchError::TooShort));
        let mut m = b.to_vec();
        m[16] = 1;
        assert_eq!(validate(&m), Err(BatchError::BadMagic(1)));
        let mut m = b.to_vec();
        m.push(0);
        assert!(matches!(
            validate(&m),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut m = b.to_vec();
        *m.last_mut().unwrap() ^= 1;
        assert!(matches!(validate(&m), Err(BatchError::CrcMismatch { .. })));
        // A compressed batch validates (the envelope is fine) but is not decoded.
        let mut m = b.to_vec();
        m[22] |= 1;
        let crc = crc32c::crc32c(&m[CRC_START..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate(&m).unwrap().compression(), Compression::Gzip);
        assert_eq!(decode_records(&m), Err(BatchError::Compressed(1)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Builder output validates and decodes back to exactly the records put in.
        #[test]
        fn prop_build_validate_decode_roundtrip(
            base_ts in -1i64..2_000_000_000_000,
            recs in proptest::collection::vec(rec_strategy(), 1..8),
            base_offset in 0i64..1 << 40,
        ) {
            let mut b = build(base_ts, &recs).to_vec();
            stamp(&mut b, base_offset, 3);
            let h = validate(&b).unwrap();
            prop_assert_eq!(h.record_count() as usize, recs.len());
            let got = decode_records(&b).unwrap();
            prop_assert_eq!(got.len(), recs.len());
            for (i, (g, r)) in got.iter().zip(&recs).enumerate() {
                prop_assert_eq!(g.offset, base_offset + i as i64);
                prop_assert_eq!(g.timestamp, r.3);
                prop_assert_eq!(&g.key, &r.0);
                prop_assert_eq!(&g.value, &r.1);
                prop_assert_eq!(&g.headers, &r.2);
            }
        }

        /// Header encode and parse are inverses.
        #[test]
        fn prop_header_roundtrip(
            a in any::<(i64, i32, i64, i64, i64)>(),
            b in any::<(i16, i32, i16, i32, i32, u32)>(),
        ) {
            let h = BatchHeader {
                base_offset: a.0,
                batch_length: (a.1 & 0x3fff_ffff) + 49,
                partition_leader_epoch: b.1,
                magic: 2,
                crc: b.5,
                attributes: b.0,
                last_offset_delta: b.3,
                base_timestamp: a.2,
                max_timestamp: a.3,
                producer_id: a.4,
                producer_epoch: b.2,
                base_sequence: b.4,
                records_count: a.1,
            };
            prop_assert_eq!(BatchHeader::parse(&h.encode()), Ok(h));
        }

        /// Flipping any byte in the CRC-covered region is caught by validate.
        #[test]
        fn prop_single_byte_corruption_detected(
            recs in proptest::collection::vec(rec_strategy(), 1..4),
            pos in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut b = build(0, &recs).to_vec();
            let at = CRC_START + pos.index(b.len() - CRC_START);
            b[at] ^= xor;
            prop_assert!(validate(&b).is_err());
        }

        /// Arbitrary bytes never panic the parser, validator or decoder.
        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = validate(&bytes);
            let _ = decode_records(&bytes);
        }

        /// Valid-looking envelopes (right length, magic, CRC) around junk records never panic.
        #[test]
        fn prop_junk_records_with_valid_crc_never_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            count in -2i32..6,
            attrs in 0i16..64,
        ) {
            let mut h = BatchHeader {
                base_offset: 0,
                batch_length: (BATCH_HEADER_LEN - BATCH_LENGTH_OFFSET + junk.len()) as i32,
                partition_leader_epoch: 0,
                magic: 2,
                crc: 0,
                attributes: attrs,
                last_offset_delta: count - 1,
                base_timestamp: 0,
                max_timestamp: 0,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records_count: count,
            };
            let mut b = h.encode().to_vec();
            b.extend_from_slice(&junk);
            h.crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&h.crc.to_be_bytes());
            let _ = validate(&b);
            let _ = decode_records(&b);
        }
    }
}
