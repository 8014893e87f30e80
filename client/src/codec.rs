//! Record batches on the wire, through kafka-protocol's `RecordBatchEncoder` and
//! `RecordBatchDecoder` (which also do the compression: gzip, snappy, lz4, zstd). The producer
//! encodes one batch per partition per request; the consumer decodes whatever a fetch returns,
//! under `catch_unwind`, so a corrupt or truncated batch is an error and never a panic.

use std::panic::AssertUnwindSafe;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH,
};

pub use kafka_protocol::records::Compression;

/// A record as the producer hands it to the encoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers, in order. Keys must be distinct (kafka-protocol keeps headers in a map).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// The producer identity a batch carries (`-1`s without idempotence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The first record's sequence number (`-1` without idempotence).
    pub base_sequence: i32,
}

impl ProducerIdentity {
    /// No producer id: a batch without idempotence.
    pub const NONE: ProducerIdentity = ProducerIdentity {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// A record as the consumer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// Whether the timestamp is the broker's (LogAppendTime) rather than the producer's.
    pub log_append_time: bool,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers (distinct keys; see [`OutRecord::headers`]).
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes `records` as one RecordBatch v2 with base offset 0, compressed with `compression`.
pub fn encode_batch(
    records: &[OutRecord],
    identity: ProducerIdentity,
    compression: Compression,
) -> Result<Bytes, String> {
    if records.is_empty() {
        return Err("a batch needs at least one record".into());
    }
    let kp: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| to_kp_record(r, i as i64, identity))
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, kp.iter(), &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Decodes every batch in `data` (a fetch response's records), decompressing as needed, and
/// drops control records. A partial batch at the end (fetches may cut one off) is ignored;
/// anything else that does not decode is an error.
pub fn decode_batches(data: Bytes) -> Result<Vec<InRecord>, String> {
    let mut buf = whole_batches(data);
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        RecordBatchDecoder::decode_all(&mut buf)
    }));
    let sets = match decoded {
        Ok(Ok(sets)) => sets,
        Ok(Err(e)) => return Err(format!("record batch does not decode: {e}")),
        Err(_) => return Err("record batch made the decoder panic".into()),
    };
    Ok(sets
        .into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control)
        .map(from_kp_record)
        .collect())
}

/// The prefix of `data` made of complete batches (each is `baseOffset: i64`, `length: i32`,
/// then `length` bytes).
fn whole_batches(data: Bytes) -> Bytes {
    const HEADER_BYTES: usize = 12;
    let mut end = 0usize;
    while data.len() >= end + HEADER_BYTES {
        let len_bytes: [u8; 4] = data[end + 8..end + 12].try_into().expect("a 4-byte slice");
        let len = i32::from_be_bytes(len_bytes);
        if len < 0 {
            break;
        }
        let next = end + HEADER_BYTES + len as usize;
        if next > data.len() {
            break;
        }
        end = next;
    }
    data.slice(..end)
}

fn to_kp_record(r: &OutRecord, offset_delta: i64, id: ProducerIdentity) -> Record {
    let headers: IndexMap<StrBytes, Option<Bytes>> = r
        .headers
        .iter()
        .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
        .collect();
    // The encoder derives the batch's base sequence as `sequence - offset` of the first record
    // and groups records whose `offset - sequence` agree, so every record's sequence advances
    // with its offset; without idempotence that yields the base sequence -1.
    let sequence = id.base_sequence.wrapping_add(offset_delta as i32);
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: id.producer_id,
        producer_epoch: id.producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: offset_delta,
        sequence,
        timestamp: r.timestamp_ms,
        key: r.key.clone(),
        value: r.value.clone(),
        headers,
    }
}

fn from_kp_record(r: Record) -> InRecord {
    InRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp,
        log_append_time: r.timestamp_type == TimestampType::LogAppend,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;
    use proptest::prelude::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn arb_record() -> impl Strategy<Value = OutRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::btree_map(
                "[a-z]{1,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                0..4,
            ),
            0i64..4_000_000_000_000,
        )
            .prop_map(|(k, v, h, ts)| OutRecord {
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                headers: h
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
                timestamp_ms: ts,
            })
    }

    proptest! {
        // Proves a batch encoded with any codec decodes to the same records at offsets 0..n,
        // and that the batch header carries the producer id, epoch and base sequence given.
        #[test]
        fn prop_batch_round_trip(
            records in proptest::collection::vec(arb_record(), 1..20),
            codec in 0usize..5,
            idempotent in any::<bool>(),
        ) {
            let id = if idempotent {
                ProducerIdentity { producer_id: 4000, producer_epoch: 3, base_sequence: 17 }
            } else {
                ProducerIdentity::NONE
            };
            let bytes = encode_batch(&records, id, CODECS[codec]).expect("encodes");
            let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).expect("header");
            prop_assert_eq!(info.len(), 1, "one batch");
            prop_assert_eq!(info[0].record_count as usize, records.len());
            prop_assert_eq!(info[0].producer_id, id.producer_id);
            prop_assert_eq!(info[0].producer_epoch, id.producer_epoch);
            prop_assert_eq!(info[0].base_sequence, id.base_sequence);
            prop_assert_eq!(info[0].compression, CODECS[codec]);
            let back = decode_batches(bytes).expect("decodes");
            prop_assert_eq!(back.len(), records.len());
            for (i, (out, back)) in records.iter().zip(&back).enumerate() {
                prop_assert_eq!(back.offset, i as i64);
                prop_assert_eq!(&back.key, &out.key);
                prop_assert_eq!(&back.value, &out.value);
                prop_assert_eq!(&back.headers, &out.headers);
                prop_assert_eq!(back.timestamp_ms, out.timestamp_ms);
            }
        }

        // Proves arbitrary bytes never panic the decoder: they decode or give an error.
        #[test]
        fn prop_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batches(Bytes::from(data));
        }
    }

    // Proves a batch cut off at the end of a fetch is skipped, not an error.
    #[test]
    fn test_partial_trailing_batch_is_ignored() {
        let r = OutRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 1,
        };
        let one = encode_batch(
            std::slice::from_ref(&r),
            ProducerIdentity::NONE,
            Compression::None,
        )
        .expect("encodes");
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 3]);
        let back = decode_batches(two.freeze()).expect("the whole batch decodes");
        assert_eq!(back.len(), 1);
    }
}
