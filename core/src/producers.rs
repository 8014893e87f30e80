//! The producer-state table of a data partition: Kafka's idempotent producer, as a partition
//! state machine ([`crate::machine`]).
//!
//! Per producer id the table keeps the epoch and the last [`BATCHES_KEPT`] batches (first and
//! last sequence, base offset). The leader screens every produce against it before proposing
//! ([`ProducerTable::admit`]): a duplicate of a committed batch is answered with its original
//! base offset and not written again, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch is
//! INVALID_PRODUCER_EPOCH, a sequence other than 0 from a producer the table does not know (or
//! has expired) is UNKNOWN_PRODUCER_ID.
//!
//! Two layers, as Redpanda's `rm_stm` `log_state` / `mem_state`:
//! - `committed`: built by `apply` from committed entries only, carried in snapshots;
//! - `tail`: the producer batches in this replica's log past the commit index, added at append
//!   on every replica (the leader adds its own proposals at once) and dropped on truncation.
//!
//! The leader's view of a producer is `committed` followed by the tail. Because followers keep
//! the tail too, a new leader screens against every batch in its log, committed or not, and
//! the log never holds a batch twice (Jepsen found exactly this window in Redpanda,
//! redpanda#3039). A duplicate whose original is still uncommitted is refused with a
//! retriable error ([`ClientError::DuplicateNotCommitted`]): answering it with an offset before
//! the original commits would acknowledge an unreplicated write.
//!
//! Expiry (`producer.id.expiration.ms`) compares a producer's newest batch timestamp with the
//! wall clock, as Kafka does. The leader treats an expired producer as unknown at once; the
//! entry itself is dropped by a periodic sweep on every replica, so replicas may differ for a
//! while only in entries no leader would use.

use std::any::Any;
use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use crate::api::ClientError;
use crate::batch::BatchHeader;
use crate::machine::{
    Admission, AppendedEntry, Command, CommittedEntry, Ctx, Effects, PartitionMachine, RestoreError,
};
use crate::mutation::{self, Mutation};
use crate::types::{Millis, Offset, RaftIndex};

/// Batches remembered per producer: Kafka's `max.in.flight.requests.per.connection` bound for
/// idempotence is 5, so a retry is always of one of the last 5.
pub const BATCHES_KEPT: usize = 5;

/// Kafka's default `producer.id.expiration.ms`: one day.
pub const PRODUCER_EXPIRATION_MS_DEFAULT: Millis = 24 * 60 * 60 * 1000;

/// How often every replica sweeps expired producers out of its table.
const EXPIRY_SWEEP_MS: Millis = 60_000;

/// A producer batch's identity, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchId {
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
    max_timestamp: i64,
}

impl BatchId {
    /// The idempotence fields of `batch`, if it has any (producer id >= 0).
    fn of(batch: &[u8]) -> Option<BatchId> {
        let h = BatchHeader::parse(batch).ok()?;
        if h.producer_id < 0 || h.is_control() {
            return None;
        }
        Some(BatchId {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: seq_add(h.base_sequence, h.last_offset_delta),
            max_timestamp: h.max_timestamp,
        })
    }
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
fn seq_add(seq: i32, delta: i32) -> i32 {
    ((seq as i64 + delta as i64) % (i32::MAX as i64 + 1)) as i32
}

/// A committed batch as the white-box checks see it: (first sequence, last sequence, base
/// offset).
pub type SeqRange = (i32, i32, Offset);

/// One remembered batch of a producer.
#[derive(Clone, PartialEq, prost::Message)]
struct KeptBatch {
    #[prost(int32, tag = "1")]
    first_seq: i32,
    #[prost(int32, tag = "2")]
    last_seq: i32,
    /// Base offset once committed; -1 while in the tail.
    #[prost(int64, tag = "3")]
    base_offset: i64,
}

/// What the table knows of one producer.
#[derive(Clone, PartialEq, prost::Message)]
struct Producer {
    #[prost(int64, tag = "1")]
    producer_id: i64,
    #[prost(int32, tag = "2")]
    epoch: i32,
    /// Oldest first, at most [`BATCHES_KEPT`].
    #[prost(message, repeated, tag = "3")]
    batches: Vec<KeptBatch>,
    /// For expiry: the newest batch's max timestamp, or the wall time this replica applied
    /// it, whichever is later. Kafka uses the record timestamp alone, so a producer replaying
    /// old events (CreateTime years ago) has its state expire at once and sees
    /// UNKNOWN_PRODUCER_ID on its next batch; here a producer expires only after
    /// `producer_id_expiration_ms` without writes.
    #[prost(int64, tag = "4")]
    last_timestamp: i64,
}

impl Producer {
    fn new(id: &BatchId) -> Producer {
        Producer {
            producer_id: id.producer_id,
            epoch: id.epoch as i32,
            batches: Vec::new(),
            last_timestamp: id.max_timestamp,
        }
    }

    /// Records a batch that was admitted.
    fn push(&mut self, id: &BatchId, base_offset: Offset) {
        // A new epoch forgets the old one's batches; so does a batch that does not continue
        // the sequence (the leader took the producer for expired and let it start again at 0).
        let continues = self
            .batches
            .last()
            .is_none_or(|b| seq_add(b.last_seq, 1) == id.first_seq);
        if id.epoch as i32 != self.epoch || !continues {
            self.epoch = id.epoch as i32;
            self.batches.clear();
        }
        self.batches.push(KeptBatch {
            first_seq: id.first_seq,
            last_seq: id.last_seq,
            base_offset,
        });
        if self.batches.len() > BATCHES_KEPT {
            self.batches.remove(0);
        }
        self.last_timestamp = self.last_timestamp.max(id.max_timestamp);
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct TableSnapshot {
    #[prost(message, repeated, tag = "1")]
    producers: Vec<Producer>,
    /// CRC-32C of the encoded producers, so a snapshot that decodes by chance is still refused.
    #[prost(uint32, tag = "2")]
    checksum: u32,
}

fn checksum(producers: &[Producer]) -> u32 {
    let mut buf = Vec::new();
    for p in producers {
        p.encode_length_delimited(&mut buf).expect("Vec grows");
    }
    crc32c::crc32c(&buf)
}

/// The table. See the module docs.
#[derive(Debug)]
pub struct ProducerTable {
    expiration_ms: Millis,
    committed: BTreeMap<i64, Producer>,
    /// Producer batches past the commit index in this replica's log, by raft index.
    tail: BTreeMap<RaftIndex, (u64, BatchId)>,
    last_sweep_ms: Option<Millis>,
    stats: ProducerStats,
}

/// Counters for tests and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    pub duplicates_answered: u64,
    pub duplicates_in_flight: u64,
    pub refused: u64,
    pub expired: u64,
}

impl ProducerTable {
    pub fn new(expiration_ms: Millis) -> ProducerTable {
        assert!(expiration_ms > 0, "producer expiry must be positive");
        ProducerTable {
            expiration_ms,
            committed: BTreeMap::new(),
            tail: BTreeMap::new(),
            last_sweep_ms: None,
            stats: ProducerStats::default(),
        }
    }

    pub fn stats(&self) -> &ProducerStats {
        &self.stats
    }

    /// How many producers the committed table holds.
    pub fn producers(&self) -> usize {
        self.committed.len()
    }

    /// The committed epoch and (first, last sequence, base offset) of each remembered batch
    /// of a producer (the simulator's white-box checks).
    pub fn committed_batches(&self, producer_id: i64) -> Option<(i16, Vec<SeqRange>)> {
        let p = self.committed.get(&producer_id)?;
        let batches = p
            .batches
            .iter()
            .map(|b| (b.first_seq, b.last_seq, b.base_offset))
            .collect();
        Some((p.epoch as i16, batches))
    }

    /// (raft index, term) of every producer batch the table holds past the commit index: the
    /// simulator checks that each is in the replica's raft log, with that term.
    pub fn tail(&self) -> impl Iterator<Item = (RaftIndex, u64)> + '_ {
        self.tail.iter().map(|(i, (t, _))| (*i, *t))
    }

    /// The producer as the leader sees it: committed state, then the tail's batches.
    fn effective(&self, producer_id: i64, ctx: &Ctx) -> Option<Producer> {
        let mut p = self
            .committed
            .get(&producer_id)
            .filter(|p| !self.expired(p, ctx.wall_ms))
            .cloned();
        for (_, id) in self
            .tail
            .values()
            .filter(|(_, id)| id.producer_id == producer_id)
        {
            p.get_or_insert_with(|| Producer::new(id)).push(id, -1);
        }
        p
    }

    fn expired(&self, p: &Producer, wall_ms: Millis) -> bool {
        wall_ms.saturating_sub(p.last_timestamp) > self.expiration_ms
    }

    /// Kafka's checks (`ProducerAppendInfo.checkProducerEpoch` / `checkSequence`).
    fn screen(&self, id: &BatchId, p: Option<&Producer>) -> Result<Screened, ClientError> {
        let Some(p) = p else {
            if id.first_seq != 0 {
                return Err(ClientError::UnknownProducerId(id.producer_id));
            }
            return Ok(Screened::Fresh);
        };
        let epoch = id.epoch as i32;
        if epoch < p.epoch {
            return Err(ClientError::InvalidProducerEpoch {
                epoch: id.epoch,
                current: p.epoch as i16,
            });
        }
        if epoch > p.epoch {
            // A bumped epoch restarts its sequences at 0.
            return if id.first_seq == 0 {
                Ok(Screened::Fresh)
            } else {
                Err(ClientError::OutOfOrderSequence {
                    expected: 0,
                    got: id.first_seq,
                })
            };
        }
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.first_seq == id.first_seq && b.last_seq == id.last_seq)
        {
            return Ok(Screened::Duplicate(b.base_offset));
        }
        let expected = p.batches.last().map_or(0, |b| seq_add(b.last_seq, 1));
        if id.first_seq != expected {
            return Err(ClientError::OutOfOrderSequence {
                expected,
                got: id.first_seq,
            });
        }
        Ok(Screened::Fresh)
    }

    fn sweep_expired(&mut self, wall_ms: Millis) {
        let before = self.committed.len();
        let expiration_ms = self.expiration_ms;
        self.committed
            .retain(|_, p| wall_ms.saturating_sub(p.last_timestamp) <= expiration_ms);
        self.stats.expired += (before - self.committed.len()) as u64;
    }
}

/// What screening found.
enum Screened {
    Fresh,
    /// A batch the producer already sent: its base offset, or -1 if not committed yet.
    Duplicate(Offset),
}

impl PartitionMachine for ProducerTable {
    fn apply(&mut self, entry: &CommittedEntry<'_>, ctx: &Ctx, _fx: &mut Effects) {
        // Everything up to this index is committed now: it leaves the tail.
        let rest = self.tail.split_off(&(entry.index + 1));
        self.tail = rest;
        let Some(id) = BatchId::of(entry.data) else {
            return;
        };
        let p = self
            .committed
            .entry(id.producer_id)
            .or_insert_with(|| Producer::new(&id));
        p.push(&id, entry.base_offset);
        p.last_timestamp = p.last_timestamp.max(ctx.wall_ms);
    }

    fn on_role(&mut self, _ctx: &Ctx, _fx: &mut Effects) {}

    fn tick(&mut self, ctx: &Ctx, _fx: &mut Effects) {
        if self
            .last_sweep_ms
            .is_some_and(|t| ctx.now_ms - t < EXPIRY_SWEEP_MS)
        {
            return;
        }
        self.last_sweep_ms = Some(ctx.now_ms);
        self.sweep_expired(ctx.wall_ms);
    }

    fn handle(&mut self, _command: Command, _ctx: &Ctx, _fx: &mut Effects) {}

    fn on_proposal(
        &mut self,
        _tag: u64,
        _result: Result<Offset, ClientError>,
        _ctx: &Ctx,
        _fx: &mut Effects,
    ) {
    }

    fn admit(&mut self, batch: &[u8], ctx: &Ctx) -> Admission {
        let Some(id) = BatchId::of(batch) else {
            return Admission::Propose;
        };
        let current = self.effective(id.producer_id, ctx);
        match self.screen(&id, current.as_ref()) {
            Ok(Screened::Fresh) => Admission::Propose,
            // Planted bug: a retry is written again.
            Ok(Screened::Duplicate(_)) if mutation::active(Mutation::AcceptDuplicateSequence) => {
                Admission::Propose
            }
            Ok(Screened::Duplicate(offset)) if offset >= 0 => {
                self.stats.duplicates_answered += 1;
                Admission::Answer(Ok(offset))
            }
            Ok(Screened::Duplicate(_)) => {
                self.stats.duplicates_in_flight += 1;
                Admission::Answer(Err(ClientError::DuplicateNotCommitted))
            }
            Err(e) => {
                self.stats.refused += 1;
                Admission::Answer(Err(e))
            }
        }
    }

    fn on_append(&mut self, entries: &[AppendedEntry<'_>]) {
        for e in entries {
            let id = BatchId::of(e.data);
            let known = match (self.tail.get(&e.index), &id) {
                (Some((term, k)), Some(id)) => *term == e.term && k == id,
                _ => false,
            };
            if known {
                continue; // the leader recorded its own proposal already
            }
            // An append at `index` replaces the log from there on. Raft drops a conflicting
            // suffix that was never written (a leader's unstable proposals, overwritten by the
            // next leader) without any truncation of the storage, so this is the only notice.
            if !mutation::active(Mutation::KeepProducerStateOnTruncation) {
                self.tail.split_off(&e.index);
            }
            if let Some(id) = id {
                self.tail.insert(e.index, (e.term, id));
            }
        }
    }

    fn on_truncate(&mut self, from_index: RaftIndex) {
        if mutation::active(Mutation::KeepProducerStateOnTruncation) {
            // Planted bug: the dropped suffix's batches still count.
            return;
        }
        self.tail.split_off(&from_index);
    }

    fn snapshot(&self) -> Bytes {
        let producers: Vec<Producer> = self.committed.values().cloned().collect();
        let checksum = checksum(&producers);
        Bytes::from(
            TableSnapshot {
                producers,
                checksum,
            }
            .encode_to_vec(),
        )
    }

    fn restore(&mut self, data: &[u8], _ctx: &Ctx, _fx: &mut Effects) -> Result<(), RestoreError> {
        let snap = TableSnapshot::decode(data).map_err(|e| RestoreError::Decode(e.to_string()))?;
        if checksum(&snap.producers) != snap.checksum {
            return Err(RestoreError::Invalid(
                "producer table checksum mismatch".into(),
            ));
        }
        let mut committed = BTreeMap::new();
        for p in snap.producers {
            if p.batches.len() > BATCHES_KEPT || p.epoch < 0 || p.epoch > i16::MAX as i32 {
                return Err(RestoreError::Invalid(format!(
                    "producer {} is malformed",
                    p.producer_id
                )));
            }
            committed.insert(p.producer_id, p);
        }
        self.committed = committed;
        self.tail.clear();
        Ok(())
    }

    fn check_invariants(&self) {
        for (pid, p) in &self.committed {
            assert_eq!(*pid, p.producer_id, "producer filed under another id");
            assert!(*pid >= 0, "negative producer id {pid}");
            assert!(
                p.batches.len() <= BATCHES_KEPT,
                "producer {pid} keeps too many"
            );
            assert!(
                p.epoch >= 0 && p.epoch <= i16::MAX as i32,
                "producer {pid} epoch"
            );
            for w in p.batches.windows(2) {
                assert_eq!(
                    w[1].first_seq,
                    seq_add(w[0].last_seq, 1),
                    "producer {pid}: committed batches not in sequence"
                );
                assert!(
                    w[1].base_offset > w[0].base_offset,
                    "producer {pid}: committed offsets not increasing"
                );
            }
            for b in &p.batches {
                assert!(
                    b.base_offset >= 0,
                    "producer {pid}: committed batch without offset"
                );
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
#[path = "producers_tests.rs"]
mod tests;
