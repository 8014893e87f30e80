//! The coordinator's committed state: what the `__consumer_offsets` records built, identical
//! on every replica that applied the same log. Groups' persisted metadata (the last group
//! metadata record) and committed offsets per (group, partition).
//!
//! The snapshot reuses the record encoding: the live records (no tombstones) as key/value
//! frames, the record counter, and a CRC-32C over everything, checked before anything is read.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::records::{GroupRecord, GroupValue, OffsetValue, Reader, RecordError};
use crate::types::TopicPartition;

/// Identifies a snapshot of this machine ("RYG" + format 1).
const SNAPSHOT_MAGIC: u32 = 0x5259_4701;

/// State rebuilt from the committed records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommittedState {
    /// The last group metadata record of each group.
    pub groups: BTreeMap<String, GroupValue>,
    /// Committed offsets; a group with no offset has no entry.
    pub offsets: BTreeMap<String, BTreeMap<TopicPartition, OffsetValue>>,
    /// Records applied (undecodable batches count as one), for white-box comparisons.
    pub records_applied: u64,
}

impl CommittedState {
    /// Applies one committed record.
    pub fn apply(&mut self, rec: GroupRecord) {
        self.records_applied += 1;
        match rec {
            GroupRecord::Offset { group, tp, value } => self.apply_offset(group, tp, value),
            GroupRecord::Group { group, value } => match value {
                Some(v) => {
                    self.groups.insert(group, v);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
    }

    fn apply_offset(&mut self, group: String, tp: TopicPartition, value: Option<OffsetValue>) {
        match value {
            Some(v) => {
                self.offsets.entry(group).or_default().insert(tp, v);
            }
            None => {
                let Some(offsets) = self.offsets.get_mut(&group) else {
                    return;
                };
                offsets.remove(&tp);
                if offsets.is_empty() {
                    self.offsets.remove(&group);
                }
            }
        }
    }

    /// Every group known: with metadata, offsets or both.
    pub fn group_names(&self) -> BTreeSet<String> {
        self.groups
            .keys()
            .chain(self.offsets.keys())
            .cloned()
            .collect()
    }

    /// The committed offset of (group, tp).
    pub fn offset(&self, group: &str, tp: &TopicPartition) -> Option<&OffsetValue> {
        self.offsets.get(group)?.get(tp)
    }

    /// The snapshot encoding (module docs).
    pub fn encode(&self) -> Bytes {
        let mut w = Vec::new();
        w.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        w.extend_from_slice(&self.records_applied.to_be_bytes());
        let records = self.records();
        let n = u32::try_from(records.len()).expect("records fit u32");
        w.extend_from_slice(&n.to_be_bytes());
        for rec in &records {
            let key = rec.encode_key();
            let value = rec.encode_value().expect("live records have values");
            w.extend_from_slice(&(key.len() as u32).to_be_bytes());
            w.extend_from_slice(&key);
            w.extend_from_slice(&(value.len() as u32).to_be_bytes());
            w.extend_from_slice(&value);
        }
        let crc = crc32c::crc32c(&w);
        w.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(w)
    }

    /// Decodes a snapshot; a wrong checksum or any malformed byte is an error.
    pub fn decode(data: &[u8]) -> Result<CommittedState, RecordError> {
        let Some(body_len) = data.len().checked_sub(4) else {
            return Err(RecordError::TooShort);
        };
        let (body, crc) = data.split_at(body_len);
        let stored = u32::from_be_bytes(crc.try_into().expect("split at 4 bytes"));
        if crc32c::crc32c(body) != stored {
            return Err(RecordError::Batch(crate::batch::BatchError::Invalid(
                "group snapshot checksum",
            )));
        }
        let mut r = Reader::new(body);
        let magic = r.i32()? as u32;
        if magic != SNAPSHOT_MAGIC {
            let version = (magic & 0xffff) as i16;
            let what = "group snapshot";
            return Err(RecordError::UnknownVersion { what, version });
        }
        let records_applied = r.i64()? as u64;
        let n = r.len32()?;
        let mut state = CommittedState::default();
        for _ in 0..n {
            let key = r.bytes()?;
            let value = r.bytes()?;
            state.apply(GroupRecord::decode(&key, Some(&value))?);
        }
        r.finish()?;
        state.records_applied = records_applied;
        Ok(state)
    }

    /// The records that rebuild this state (group metadata first, then offsets).
    fn records(&self) -> Vec<GroupRecord> {
        let groups = self.groups.iter().map(|(g, v)| GroupRecord::Group {
            group: g.clone(),
            value: Some(v.clone()),
        });
        let offsets = self.offsets.iter().flat_map(|(g, tps)| {
            tps.iter().map(|(tp, v)| GroupRecord::Offset {
                group: g.clone(),
                tp: tp.clone(),
                value: Some(v.clone()),
            })
        });
        groups.chain(offsets).collect()
    }

    /// Panics if the state breaks what the coordinator writes.
    pub fn check_invariants(&self) {
        for (name, g) in &self.groups {
            assert!(g.generation >= 0, "group {name}: negative generation");
            let ids: BTreeSet<&str> = g.members.iter().map(|m| m.member_id.as_str()).collect();
            assert_eq!(ids.len(), g.members.len(), "group {name}: duplicate member");
            let instances: Vec<&String> = g
                .members
                .iter()
                .filter_map(|m| m.group_instance_id.as_ref())
                .collect();
            let unique: BTreeSet<&&String> = instances.iter().collect();
            assert_eq!(
                unique.len(),
                instances.len(),
                "group {name}: shared instance id"
            );
            if !g.members.is_empty() {
                let leader = g
                    .leader
                    .as_deref()
                    .expect("a group with members has a leader");
                assert!(ids.contains(leader), "group {name}: leader is not a member");
                assert!(
                    g.protocol.is_some(),
                    "group {name}: members but no protocol"
                );
            }
        }
        for (name, tps) in &self.offsets {
            assert!(!tps.is_empty(), "group {name}: empty offsets entry kept");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::records::MemberMeta;

    fn offset(o: i64) -> OffsetValue {
        OffsetValue {
            offset: o,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 9,
        }
    }

    #[test]
    fn test_apply_tombstones_and_snapshot_round_trip() {
        // Proves tombstones delete, and a snapshot restores the same state and counter.
        let mut s = CommittedState::default();
        let tp = TopicPartition::new("t", 0);
        for o in [1, 2] {
            s.apply(GroupRecord::Offset {
                group: "g".into(),
                tp: tp.clone(),
                value: Some(offset(o)),
            });
        }
        s.apply(GroupRecord::Offset {
            group: "h".into(),
            tp: tp.clone(),
            value: Some(offset(5)),
        });
        s.apply(GroupRecord::Offset {
            group: "h".into(),
            tp: tp.clone(),
            value: None,
        });
        s.apply(GroupRecord::Group {
            group: "g".into(),
            value: Some(GroupValue {
                protocol_type: "consumer".into(),
                generation: 1,
                protocol: Some("range".into()),
                leader: Some("m".into()),
                current_state_timestamp_ms: 0,
                members: vec![MemberMeta {
                    member_id: "m".into(),
                    group_instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 1,
                    subscription: Bytes::new(),
                    assignment: Bytes::from_static(b"x"),
                }],
            }),
        });
        s.check_invariants();
        assert_eq!(s.offset("g", &tp).map(|v| v.offset), Some(2));
        assert!(!s.offsets.contains_key("h"));
        assert_eq!(s.records_applied, 5);
        let snap = s.encode();
        assert_eq!(CommittedState::decode(&snap), Ok(s.clone()));
        let mut bad = snap.to_vec();
        bad[10] ^= 1;
        assert!(CommittedState::decode(&bad).is_err());
        assert!(CommittedState::decode(&snap[..3]).is_err());
    }
}
