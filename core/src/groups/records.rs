//! Kafka's `__consumer_offsets` record formats, encoded and decoded by hand so that the log
//! holds exactly what a Kafka broker would write (and tools that read the topic understand it).
//!
//! Big-endian throughout; STRING = i16 length + UTF-8 bytes, NULLABLE_STRING has length -1 for
//! null, BYTES = i32 length + bytes. Keys: offset commit key v1 `(version, group, topic,
//! partition)`, group metadata key v2 `(version, group)`. Values: offset commit value v3, group
//! metadata value v3. A null value (tombstone) deletes the offset or the group.
//!
//! Decoding treats its input as untrusted: every malformed input is a [`RecordError`], never a
//! panic (a proptest feeds arbitrary bytes).

use bytes::Bytes;

use crate::batch::{decode_records, BatchBuilder, BatchError};
use crate::types::TopicPartition;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// Why a record (or a batch of them) does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record ends early")]
    TooShort,
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("negative length {0}")]
    BadLength(i32),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("a record without a key")]
    NoKey,
    #[error("a null string where one is required")]
    NullString,
    #[error("batch: {0}")]
    Batch(BatchError),
}

/// One member as the group metadata value stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMeta {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The group metadata value (v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Wall-clock time of the last state change (data only).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMeta>,
}

/// The offset commit value (v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// Wall-clock time of the commit (what offset expiry compares).
    pub commit_timestamp_ms: i64,
}

/// One `__consumer_offsets` record; `None` values are tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    Offset {
        group: String,
        tp: TopicPartition,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

impl GroupRecord {
    /// The record's group.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
        }
    }

    pub fn encode_key(&self) -> Vec<u8> {
        let mut w = Vec::new();
        match self {
            GroupRecord::Offset { group, tp, .. } => {
                put_i16(&mut w, OFFSET_KEY_VERSION);
                put_str(&mut w, group);
                put_str(&mut w, &tp.topic);
                put_i32(&mut w, tp.partition);
            }
            GroupRecord::Group { group, .. } => {
                put_i16(&mut w, GROUP_KEY_VERSION);
                put_str(&mut w, group);
            }
        }
        w
    }

    /// The value, `None` for a tombstone.
    pub fn encode_value(&self) -> Option<Vec<u8>> {
        match self {
            GroupRecord::Offset { value, .. } => value.as_ref().map(encode_offset_value),
            GroupRecord::Group { value, .. } => value.as_ref().map(encode_group_value),
        }
    }

    /// Decodes a key and its value (`None`: tombstone).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, RecordError> {
        let mut r = Reader::new(key);
        let version = r.i16()?;
        let rec = match version {
            // Key v0 has the same layout as v1.
            0 | OFFSET_KEY_VERSION => {
                let group = r.string()?;
                let topic = r.string()?;
                let partition = r.i32()?;
                let value = value.map(decode_offset_value).transpose()?;
                let tp = TopicPartition::new(topic, partition);
                GroupRecord::Offset { group, tp, value }
            }
            GROUP_KEY_VERSION => {
                let group = r.string()?;
                let value = value.map(decode_group_value).transpose()?;
                GroupRecord::Group { group, value }
            }
            v => {
                return Err(RecordError::UnknownVersion {
                    what: "key",
                    version: v,
                })
            }
        };
        r.finish()?;
        Ok(rec)
    }
}

/// One RecordBatch v2 holding `records` in order, timestamped `wall_ms`.
pub fn to_batch(records: &[GroupRecord], wall_ms: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut b = BatchBuilder::new(wall_ms);
    for rec in records {
        let key = rec.encode_key();
        let value = rec.encode_value();
        b.push(Some(&key), value.as_deref(), &[], wall_ms);
    }
    b.build()
}

/// The records of a batch, in order.
pub fn records_of_batch(batch: &[u8]) -> Result<Vec<GroupRecord>, RecordError> {
    let records = decode_records(batch).map_err(RecordError::Batch)?;
    records
        .iter()
        .map(|r| {
            let key = r.key.as_deref().ok_or(RecordError::NoKey)?;
            GroupRecord::decode(key, r.value.as_deref())
        })
        .collect()
}

/// The topics of a consumer-protocol subscription (`i16 version, [topic STRING]`), or `None`
/// when the bytes are not one (a non-consumer protocol).
pub fn subscribed_topics(subscription: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(subscription);
    let version = r.i16().ok()?;
    if version < 0 {
        return None;
    }
    let n = r.len32().ok()?;
    (0..n).map(|_| r.string().ok()).collect()
}

fn encode_offset_value(v: &OffsetValue) -> Vec<u8> {
    let mut w = Vec::new();
    put_i16(&mut w, OFFSET_VALUE_VERSION);
    put_i64(&mut w, v.offset);
    put_i32(&mut w, v.leader_epoch);
    put_str(&mut w, &v.metadata);
    put_i64(&mut w, v.commit_timestamp_ms);
    w
}

fn decode_offset_value(b: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader::new(b);
    let version = r.i16()?;
    if version != OFFSET_VALUE_VERSION {
        let what = "offset value";
        return Err(RecordError::UnknownVersion { what, version });
    }
    let v = OffsetValue {
        offset: r.i64()?,
        leader_epoch: r.i32()?,
        metadata: r.string()?,
        commit_timestamp_ms: r.i64()?,
    };
    r.finish()?;
    Ok(v)
}

fn encode_group_value(v: &GroupValue) -> Vec<u8> {
    let mut w = Vec::new();
    put_i16(&mut w, GROUP_VALUE_VERSION);
    put_str(&mut w, &v.protocol_type);
    put_i32(&mut w, v.generation);
    put_nullable_str(&mut w, v.protocol.as_deref());
    put_nullable_str(&mut w, v.leader.as_deref());
    put_i64(&mut w, v.current_state_timestamp_ms);
    put_i32(
        &mut w,
        i32::try_from(v.members.len()).expect("members fit i32"),
    );
    for m in &v.members {
        put_str(&mut w, &m.member_id);
        put_nullable_str(&mut w, m.group_instance_id.as_deref());
        put_str(&mut w, &m.client_id);
        put_str(&mut w, &m.client_host);
        put_i32(&mut w, m.rebalance_timeout_ms);
        put_i32(&mut w, m.session_timeout_ms);
        put_bytes(&mut w, &m.subscription);
        put_bytes(&mut w, &m.assignment);
    }
    w
}

fn decode_group_value(b: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader::new(b);
    let version = r.i16()?;
    if version != GROUP_VALUE_VERSION {
        let what = "group value";
        return Err(RecordError::UnknownVersion { what, version });
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp_ms = r.i64()?;
    let n = r.len32()?;
    let mut members = Vec::with_capacity(n.min(b.len()));
    for _ in 0..n {
        members.push(MemberMeta {
            member_id: r.string()?,
            group_instance_id: r.nullable_string()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    r.finish()?;
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

fn put_i16(w: &mut Vec<u8>, v: i16) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(w: &mut Vec<u8>, v: i32) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(w: &mut Vec<u8>, v: i64) {
    w.extend_from_slice(&v.to_be_bytes());
}

/// A Kafka STRING. Longer strings than i16 allows are cut at the limit on a char boundary:
/// the callers bound what they store (group ids and metadata), so this never loses data.
fn put_str(w: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_i16(w, end as i16);
    w.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_nullable_str(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(w, s),
        None => put_i16(w, -1),
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_i32(
        w,
        i32::try_from(b.len()).expect("member metadata under 2 GiB"),
    );
    w.extend_from_slice(b);
}

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::TooShort);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// An i32 count or length that must not be negative.
    pub(crate) fn len32(&mut self) -> Result<usize, RecordError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| RecordError::BadLength(n))
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let n = self.i16()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| RecordError::BadLength(n as i32))?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| RecordError::NotUtf8)?;
        Ok(Some(s.to_string()))
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?.ok_or(RecordError::NullString)
    }

    pub(crate) fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let n = self.len32()?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    pub(crate) fn finish(&self) -> Result<(), RecordError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn sample_group() -> GroupRecord {
        GroupRecord::Group {
            group: "g".into(),
            value: Some(GroupValue {
                protocol_type: "consumer".into(),
                generation: 2,
                protocol: Some("range".into()),
                leader: Some("m".into()),
                current_state_timestamp_ms: 5,
                members: vec![MemberMeta {
                    member_id: "m".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 7,
                    session_timeout_ms: 6,
                    subscription: Bytes::from_static(b"S"),
                    assignment: Bytes::from_static(b"A"),
                }],
            }),
        }
    }

    #[test]
    fn test_offset_record_golden_bytes() {
        // Proves the offset key v1 / value v3 layout byte for byte.
        let rec = GroupRecord::Offset {
            group: "g".into(),
            tp: TopicPartition::new("t", 1),
            value: Some(OffsetValue {
                offset: 42,
                leader_epoch: 3,
                metadata: "m".into(),
                commit_timestamp_ms: 1000,
            }),
        };
        assert_eq!(hex(&rec.encode_key()), "000100016700017400000001");
        let value = rec.encode_value().unwrap();
        assert_eq!(
            hex(&value),
            "0003000000000000002a0000000300016d00000000000003e8"
        );
        assert_eq!(
            GroupRecord::decode(&rec.encode_key(), Some(&value)),
            Ok(rec)
        );
    }

    #[test]
    fn test_group_record_golden_bytes() {
        // Proves the group metadata key v2 / value v3 layout byte for byte.
        let rec = sample_group();
        assert_eq!(hex(&rec.encode_key()), "0002000167");
        let value = rec.encode_value().unwrap();
        let expected = concat!(
            "0003",                 // version
            "0008636f6e73756d6572", // "consumer"
            "00000002",             // generation
            "000572616e6765",       // "range"
            "00016d",               // leader "m"
            "0000000000000005",     // state timestamp
            "00000001",             // one member
            "00016d",               // member id
            "ffff",                 // no instance id
            "000163",               // client id
            "000168",               // client host
            "00000007",             // rebalance timeout
            "00000006",             // session timeout
            "0000000153",           // subscription
            "0000000141",           // assignment
        );
        assert_eq!(hex(&value), expected);
        assert_eq!(
            GroupRecord::decode(&rec.encode_key(), Some(&value)),
            Ok(rec)
        );
    }

    #[test]
    fn test_tombstones_and_batches_round_trip() {
        // Proves tombstones decode as null values and a batch keeps records in order.
        let recs = vec![
            sample_group(),
            GroupRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 0),
                value: None,
            },
            GroupRecord::Group {
                group: "g".into(),
                value: None,
            },
        ];
        let batch = to_batch(&recs, 77);
        assert_eq!(records_of_batch(&batch), Ok(recs));
    }

    #[test]
    fn test_bad_bytes_are_typed_errors() {
        // Proves malformed keys and values give errors, not panics or wrong records.
        assert_eq!(GroupRecord::decode(&[], None), Err(RecordError::TooShort));
        let e = GroupRecord::decode(&[0, 9], None);
        assert_eq!(
            e,
            Err(RecordError::UnknownVersion {
                what: "key",
                version: 9
            })
        );
        assert_eq!(
            GroupRecord::decode(&[0, 2, 0xff, 0xfe], None),
            Err(RecordError::BadLength(-2))
        );
        assert_eq!(
            GroupRecord::decode(&[0, 2, 0, 1, b'g', 0], None),
            Err(RecordError::Trailing(1))
        );
        let key = sample_group().encode_key();
        let mut v = sample_group().encode_value().unwrap();
        v.truncate(v.len() - 1);
        assert_eq!(
            GroupRecord::decode(&key, Some(&v)),
            Err(RecordError::TooShort)
        );
    }

    #[test]
    fn test_subscribed_topics() {
        // Proves the consumer-protocol subscription parser reads topics and rejects garbage.
        let mut s = vec![0, 1, 0, 0, 0, 2];
        put_str(&mut s, "a");
        put_str(&mut s, "b");
        s.extend_from_slice(&[0, 0, 0, 0]); // user data etc. follow and are ignored
        assert_eq!(subscribed_topics(&s), Some(vec!["a".into(), "b".into()]));
        assert_eq!(subscribed_topics(&[0, 1, 0, 0, 0, 5]), None);
        assert_eq!(subscribed_topics(&[]), None);
    }

    fn opt_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z0-9-]{0,12}")
    }

    proptest! {
        #[test]
        fn prop_decode_never_panics(key in proptest::collection::vec(any::<u8>(), 0..64),
                                    value in proptest::option::of(
                                        proptest::collection::vec(any::<u8>(), 0..128))) {
            let _ = GroupRecord::decode(&key, value.as_deref());
            let _ = subscribed_topics(&key);
            let _ = records_of_batch(&key);
        }

        #[test]
        fn prop_group_value_round_trips(gen in any::<i32>(), proto in opt_string(),
                                        leader in opt_string(), inst in opt_string(),
                                        sub in proptest::collection::vec(any::<u8>(), 0..32),
                                        ts in any::<i64>()) {
            let rec = GroupRecord::Group {
                group: "grp".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: gen,
                    protocol: proto,
                    leader,
                    current_state_timestamp_ms: ts,
                    members: vec![MemberMeta {
                        member_id: "x".into(),
                        group_instance_id: inst,
                        client_id: "c".into(),
                        client_host: "/1.2.3.4".into(),
                        rebalance_timeout_ms: 1,
                        session_timeout_ms: 2,
                        subscription: Bytes::from(sub.clone()),
                        assignment: Bytes::from(sub),
                    }],
                }),
            };
            let v = rec.encode_value();
            prop_assert_eq!(GroupRecord::decode(&rec.encode_key(), v.as_deref()), Ok(rec));
        }

        #[test]
        fn prop_offset_value_round_trips(offset in any::<i64>(), epoch in any::<i32>(),
                                         meta in "\\PC{0,40}", ts in any::<i64>(),
                                         partition in any::<i32>()) {
            let rec = GroupRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("topic", partition),
                value: Some(OffsetValue { offset, leader_epoch: epoch, metadata: meta,
                                          commit_timestamp_ms: ts }),
            };
            let v = rec.encode_value();
            prop_assert_eq!(GroupRecord::decode(&rec.encode_key(), v.as_deref()), Ok(rec));
        }
    }
}
