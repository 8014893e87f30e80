//! The producer's record accumulator, sans-IO: records queue per partition in batches of up to
//! `batch_size_bytes`; [`Accumulator::drain`] hands out batches that are ready (full, older than
//! `linger`, or a flush is on) and takes them back with [`Accumulator::complete`] or
//! [`Accumulator::requeue`]. It reads no clock (`now` is an argument) and owns no socket; the
//! sender task drives it, and the tests below drive it alone.
//!
//! Ordering. With idempotence a batch gets its sequence numbers when it is first drained and
//! keeps them across retries. A batch that comes back for a retry goes back into the queue in
//! sequence order, and while a partition has such a batch it sends one batch at a time, the
//! lowest sequence first: the broker accepts a sequence only right after the previous one, so
//! later batches sent meanwhile would only be refused. Without idempotence, order across
//! retries holds only with one batch in flight per partition (`in_flight_per_partition_max`).
//!
//! Epoch bumps (KIP-360). When a batch that had sequence numbers fails for good, the
//! partition's sequence has a gap the broker will never fill; [`Accumulator::needs_bump`] turns
//! on, the sender stops draining, waits for every in-flight batch, obtains a new epoch, and
//! calls [`Accumulator::reset_sequences`]: batches whose earlier attempt may have been written
//! are failed (resending them under a new epoch could write them twice), the others are
//! renumbered from 0.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A topic and partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One record waiting in a batch, with whatever the caller needs to complete it (`C`: the
/// producer keeps a oneshot sender and a memory permit there).
#[derive(Debug)]
pub struct QueuedRecord<C> {
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The record's timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// The size the record counts for against `batch_size_bytes`.
    pub size_bytes: usize,
    /// What completes the record.
    pub completion: C,
}

/// A batch of records for one partition.
#[derive(Debug)]
pub struct Batch<C> {
    /// Where it goes.
    pub tp: TopicPartition,
    /// Its records, in send order.
    pub records: Vec<QueuedRecord<C>>,
    /// The sum of the records' sizes.
    pub size_bytes: usize,
    /// When its first record arrived (linger and the delivery timeout count from here).
    pub created: Instant,
    /// The sequence of its first record, once it was first drained (idempotence only).
    pub base_sequence: Option<i32>,
    /// How many times it was sent.
    pub attempts: u32,
    /// Not before this instant (retry backoff).
    pub retry_at: Option<Instant>,
    /// Whether an earlier attempt may have been written (it timed out or its connection broke).
    pub maybe_written: bool,
}

impl<C> Batch<C> {
    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it has no records (never true of a batch the accumulator hands out).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The accumulator's limits.
#[derive(Clone, Copy, Debug)]
pub struct AccumulatorConfig {
    /// A batch is full once its records reach this size.
    pub batch_size_bytes: usize,
    /// How long a batch that is not full waits for more records.
    pub linger: Duration,
    /// Whether batches get sequence numbers.
    pub idempotent: bool,
    /// Batches in flight at once for one partition.
    pub in_flight_per_partition_max: usize,
}

#[derive(Debug)]
struct PartitionQueue<C> {
    batches: VecDeque<Batch<C>>,
    in_flight: usize,
    /// Base sequences of the batches in flight.
    in_flight_sequences: BTreeSet<i32>,
    next_sequence: i32,
}

impl<C> Default for PartitionQueue<C> {
    fn default() -> Self {
        PartitionQueue {
            batches: VecDeque::new(),
            in_flight: 0,
            in_flight_sequences: BTreeSet::new(),
            next_sequence: 0,
        }
    }
}

impl<C> PartitionQueue<C> {
    /// Whether a batch came back for a retry and has not been resent yet.
    fn retrying(&self) -> bool {
        self.batches.iter().any(|b| b.attempts > 0)
    }
}

/// The sequence `n` records after `seq`: Kafka's sequences wrap from `i32::MAX` to 0.
fn seq_after(seq: i32, n: usize) -> i32 {
    ((i64::from(seq) + n as i64) % (i64::from(i32::MAX) + 1)) as i32
}

/// Records queued per partition; see the module docs.
#[derive(Debug)]
pub struct Accumulator<C> {
    config: AccumulatorConfig,
    queues: BTreeMap<TopicPartition, PartitionQueue<C>>,
    needs_bump: bool,
}

impl<C> Accumulator<C> {
    /// An empty accumulator.
    pub fn new(config: AccumulatorConfig) -> Accumulator<C> {
        assert!(
            config.batch_size_bytes > 0,
            "batch_size_bytes must be positive"
        );
        assert!(config.in_flight_per_partition_max > 0);
        Accumulator {
            config,
            queues: BTreeMap::new(),
            needs_bump: false,
        }
    }

    /// Appends `record` to the partition's open batch, or starts a batch if there is none or it
    /// is full (a record larger than a batch gets a batch of its own).
    pub fn append(&mut self, tp: TopicPartition, record: QueuedRecord<C>, now: Instant) {
        let batch_size = self.config.batch_size_bytes;
        let queue = self.queues.entry(tp.clone()).or_default();
        if let Some(open) = queue.batches.back_mut() {
            let fresh = open.attempts == 0 && open.base_sequence.is_none();
            if fresh && open.size_bytes + record.size_bytes <= batch_size {
                open.size_bytes += record.size_bytes;
                open.records.push(record);
                return;
            }
        }
        queue.batches.push_back(Batch {
            tp,
            size_bytes: record.size_bytes,
            records: vec![record],
            created: now,
            base_sequence: None,
            attempts: 0,
            retry_at: None,
            maybe_written: false,
        });
    }

    /// Partitions whose first batch may be sent now; `flushing` makes every batch ready
    /// regardless of linger. Empty while an epoch bump is pending.
    pub fn ready(&self, now: Instant, flushing: bool) -> Vec<TopicPartition> {
        if self.needs_bump {
            return Vec::new();
        }
        self.queues
            .iter()
            .filter(|(_, q)| self.sendable(q, now, flushing))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Takes the first batch of `tp` for sending (if [`Accumulator::ready`] lists it), giving it
    /// sequence numbers on its first send.
    pub fn drain(&mut self, tp: &TopicPartition) -> Option<Batch<C>> {
        let idempotent = self.config.idempotent;
        let queue = self.queues.get_mut(tp)?;
        let mut batch = queue.batches.pop_front()?;
        if idempotent && batch.base_sequence.is_none() {
            batch.base_sequence = Some(queue.next_sequence);
            queue.next_sequence = seq_after(queue.next_sequence, batch.len());
        }
        batch.attempts += 1;
        batch.retry_at = None;
        queue.in_flight += 1;
        if let Some(seq) = batch.base_sequence {
            queue.in_flight_sequences.insert(seq);
        }
        Some(batch)
    }

    /// A drained batch is no longer in flight (done, or about to be queued again): its
    /// partition's queue, with the count and the batch's sequence taken off.
    fn back_from_flight(&mut self, batch: &Batch<C>) -> &mut PartitionQueue<C> {
        let queue = self
            .queues
            .get_mut(&batch.tp)
            .expect("a drained batch's partition has a queue");
        assert!(queue.in_flight > 0, "a batch back that is not in flight");
        queue.in_flight -= 1;
        if let Some(seq) = batch.base_sequence {
            queue.in_flight_sequences.remove(&seq);
        }
        queue
    }

    /// A sent batch is done (acknowledged, or failed for good and completed by the caller).
    /// `failed` says it failed: with idempotence that leaves a sequence gap, so a bump is due.
    pub fn complete(&mut self, batch: &Batch<C>, failed: bool) {
        self.back_from_flight(batch);
        if failed && batch.base_sequence.is_some() {
            self.needs_bump = true;
        }
    }

    /// A sent batch comes back for another attempt, not before `retry_at`; it goes back in
    /// sequence order ahead of the batches never sent.
    pub fn requeue(&mut self, mut batch: Batch<C>, retry_at: Instant, maybe_written: bool) {
        // Queued again, it counts through `batches` until it is drained again.
        let queue = self.back_from_flight(&batch);
        batch.retry_at = Some(retry_at);
        batch.maybe_written |= maybe_written;
        let seq = batch.base_sequence;
        let at = queue
            .batches
            .iter()
            .position(|b| b.attempts == 0 || (seq.is_some() && b.base_sequence > seq))
            .unwrap_or(queue.batches.len());
        queue.batches.insert(at, batch);
    }

    /// A sent batch the broker refused as too large (MESSAGE_TOO_LARGE) comes back as two
    /// halves, queued where it would have gone, not before `retry_at`. The halves keep its
    /// sequence range (the first starts at its base sequence, the second right after the
    /// first), so the batches behind it still follow without a gap. A batch of one record
    /// cannot be split and is handed back.
    pub fn split_requeue(&mut self, batch: Batch<C>, retry_at: Instant) -> Result<(), Batch<C>> {
        if batch.len() < 2 {
            return Err(batch);
        }
        let queue = self.back_from_flight(&batch);
        let Batch {
            tp,
            mut records,
            created,
            base_sequence,
            attempts,
            maybe_written,
            ..
        } = batch;
        let second = records.split_off(records.len() / 2);
        let second_sequence = base_sequence.map(|s| seq_after(s, records.len()));
        let half = |records: Vec<QueuedRecord<C>>, base_sequence| Batch {
            tp: tp.clone(),
            size_bytes: records.iter().map(|r| r.size_bytes).sum(),
            records,
            created,
            base_sequence,
            attempts,
            retry_at: Some(retry_at),
            maybe_written,
        };
        let (first, second) = (half(records, base_sequence), half(second, second_sequence));
        let at = queue
            .batches
            .iter()
            .position(|b| {
                b.attempts == 0 || (base_sequence.is_some() && b.base_sequence > base_sequence)
            })
            .unwrap_or(queue.batches.len());
        queue.batches.insert(at, second);
        queue.batches.insert(at, first);
        Ok(())
    }

    /// Removes and returns the queued batches (not in flight) older than `timeout`, for the
    /// caller to fail; their sequences, if any, leave gaps, so a bump becomes due.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Batch<C>> {
        let mut expired = Vec::new();
        for queue in self.queues.values_mut() {
            while queue
                .batches
                .front()
                .is_some_and(|b| now.saturating_duration_since(b.created) >= timeout)
            {
                let b = queue.batches.pop_front().expect("front exists");
                if b.base_sequence.is_some() {
                    self.needs_bump = true;
                }
                expired.push(b);
            }
        }
        expired
    }

    /// Calls for an epoch bump although no sequence was lost: the broker forgot the producer
    /// (UNKNOWN_PRODUCER_ID), and only a new epoch, whose sequences start at 0, is accepted.
    pub fn request_bump(&mut self) {
        self.needs_bump = true;
    }

    /// Whether an epoch bump is due (see the module docs).
    pub fn needs_bump(&self) -> bool {
        self.needs_bump
    }

    /// Batches in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        self.queues.values().map(|q| q.in_flight).sum()
    }

    /// Batches queued (not in flight).
    pub fn queued_batches(&self) -> usize {
        self.queues.values().map(|q| q.batches.len()).sum()
    }

    /// After a new epoch: every sequence starts again from 0. Returns the queued batches that
    /// may already have been written (the caller fails them); the rest are renumbered when
    /// next drained. Must be called with nothing in flight.
    pub fn reset_sequences(&mut self) -> Vec<Batch<C>> {
        assert_eq!(
            self.in_flight(),
            0,
            "sequences reset with batches in flight"
        );
        let mut unsafe_to_resend = Vec::new();
        for queue in self.queues.values_mut() {
            queue.next_sequence = 0;
            let batches = std::mem::take(&mut queue.batches);
            for mut b in batches {
                if b.maybe_written {
                    unsafe_to_resend.push(b);
                } else {
                    b.base_sequence = None;
                    queue.batches.push_back(b);
                }
            }
        }
        self.needs_bump = false;
        unsafe_to_resend
    }

    /// The earliest instant a batch that is not ready now becomes ready (linger or backoff).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|q| q.batches.front())
            .map(|b| b.retry_at.unwrap_or(b.created + self.config.linger))
            .min()
    }

    /// Whether `tp` has a batch with a lower sequence than `seq` that is not acknowledged yet,
    /// queued for a retry or still in flight (perhaps to a leader that is gone). An
    /// OUT_OF_ORDER_SEQUENCE answer is then that batch's doing, and itself retriable: once the
    /// earlier batch is written, this one fits.
    pub fn has_earlier_unacknowledged(&self, tp: &TopicPartition, seq: i32) -> bool {
        self.queues.get(tp).is_some_and(|q| {
            q.in_flight_sequences.range(..seq).next().is_some()
                || q.batches
                    .iter()
                    .any(|b| b.base_sequence.is_some_and(|s| s < seq))
        })
    }

    fn sendable(&self, q: &PartitionQueue<C>, now: Instant, flushing: bool) -> bool {
        let Some(first) = q.batches.front() else {
            return false;
        };
        if first.retry_at.is_some_and(|t| t > now) {
            return false;
        }
        let in_flight_ok = if q.retrying() {
            q.in_flight == 0
        } else {
            q.in_flight < self.config.in_flight_per_partition_max
        };
        let full = first.size_bytes >= self.config.batch_size_bytes || q.batches.len() > 1;
        let lingered = now.saturating_duration_since(first.created) >= self.config.linger;
        in_flight_ok && (full || lingered || flushing || first.attempts > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idempotent: bool) -> AccumulatorConfig {
        AccumulatorConfig {
            batch_size_bytes: 100,
            linger: Duration::from_millis(5),
            idempotent,
            in_flight_per_partition_max: 5,
        }
    }

    fn rec(n: u32, size: usize) -> QueuedRecord<u32> {
        QueuedRecord {
            key: None,
            value: Some(Bytes::from(vec![0u8; size])),
            headers: Vec::new(),
            timestamp_ms: 0,
            size_bytes: size,
            completion: n,
        }
    }

    fn ids(b: &Batch<u32>) -> Vec<u32> {
        b.records.iter().map(|r| r.completion).collect()
    }

    // Proves batching: records share a batch until it is full, and a batch that is not full
    // waits for linger unless a flush is on.
    #[test]
    fn test_batches_fill_and_linger() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut acc = Accumulator::new(config(false));
        for n in 0..3 {
            acc.append(tp.clone(), rec(n, 40), t0);
        }
        // 40 + 40 fit, the third starts a batch: the first is full, so ready at once.
        assert_eq!(acc.ready(t0, false), vec![tp.clone()]);
        let b = acc.drain(&tp).expect("a batch");
        assert_eq!(ids(&b), vec![0, 1]);
        assert!(acc.ready(t0, false).is_empty(), "second batch is lingering");
        assert_eq!(
            acc.ready(t0, true),
            vec![tp.clone()],
            "flush ignores linger"
        );
        let later = t0 + Duration::from_millis(5);
        assert_eq!(acc.ready(later, false), vec![tp.clone()]);
        assert_eq!(acc.next_wakeup(), Some(later));
    }

    // Proves idempotent sequences are assigned at first drain, kept on retry, and that a
    // requeued batch goes back ahead of later ones and is sent alone, in order.
    #[test]
    fn test_requeue_keeps_sequence_order() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut acc = Accumulator::new(config(true));
        for n in 0..6 {
            acc.append(tp.clone(), rec(n, 50), t0);
        }
        let a = acc.drain(&tp).expect("batch a");
        let b = acc.drain(&tp).expect("batch b");
        assert_eq!((a.base_sequence, b.base_sequence), (Some(0), Some(2)));
        // Both fail (the leader moved); b's answer comes first.
        acc.requeue(b, t0, true);
        acc.requeue(a, t0, true);
        let first = acc.drain(&tp).expect("the lowest sequence first");
        assert_eq!(first.base_sequence, Some(0));
        assert!(
            acc.ready(t0, true).is_empty(),
            "one at a time while retrying"
        );
        acc.complete(&first, false);
        let second = acc.drain(&tp).expect("then the next");
        assert_eq!((second.base_sequence, ids(&second)), (Some(2), vec![2, 3]));
        acc.complete(&second, false);
        let third = acc.drain(&tp).expect("then the fresh batch");
        assert_eq!(third.base_sequence, Some(4));
        assert!(!acc.needs_bump());
    }

    // Proves a batch refused as too large comes back as two halves in its place, which keep
    // its sequence range (so the batch behind it still follows), and that a single record is
    // handed back unsplit; sequences wrap from i32::MAX to 0 as Kafka's do.
    #[test]
    fn test_split_keeps_the_sequence_range() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 2);
        let mut acc = Accumulator::new(config(true));
        for n in 0..5 {
            acc.append(tp.clone(), rec(n, 20), t0);
        }
        acc.append(tp.clone(), rec(5, 90), t0);
        let big = acc.drain(&tp).expect("five records");
        let next = acc.drain(&tp).expect("the sixth");
        assert_eq!((big.base_sequence, next.base_sequence), (Some(0), Some(5)));
        assert!(acc.split_requeue(big, t0).is_ok());
        let a = acc.drain(&tp).expect("first half");
        assert_eq!(
            (a.base_sequence, ids(&a), a.size_bytes),
            (Some(0), vec![0, 1], 40)
        );
        acc.complete(&a, false);
        let b = acc.drain(&tp).expect("second half");
        assert_eq!((b.base_sequence, ids(&b)), (Some(2), vec![2, 3, 4]));
        let single = acc
            .split_requeue(next, t0)
            .expect_err("one record cannot split");
        assert_eq!(ids(&single), vec![5]);
        acc.requeue(single, t0, false);
        assert_eq!(seq_after(i32::MAX - 1, 3), 1);
        assert_eq!(seq_after(7, 5), 12);
    }

    // Proves a failed sequenced batch calls for a bump, and the reset fails only batches that
    // may have been written and renumbers the rest from 0.
    #[test]
    fn test_bump_resets_sequences() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 1);
        let mut acc = Accumulator::new(config(true));
        for n in 0..6 {
            acc.append(tp.clone(), rec(n, 50), t0);
        }
        let a = acc.drain(&tp).expect("a");
        let b = acc.drain(&tp).expect("b");
        acc.complete(&a, true);
        assert!(acc.needs_bump());
        assert!(
            acc.ready(t0, true).is_empty(),
            "no sends while a bump is due"
        );
        acc.requeue(b, t0, true);
        let failed = acc.reset_sequences();
        assert_eq!(failed.len(), 1);
        assert_eq!(ids(&failed[0]), vec![2, 3]);
        let c = acc.drain(&tp).expect("c");
        assert_eq!((c.base_sequence, ids(&c)), (Some(0), vec![4, 5]));
    }

    // Proves a gap answered for a later batch counts as retriable while an earlier batch is
    // still in flight (to a leader that may be gone) or queued, and not once all are done.
    #[test]
    fn test_earlier_unacknowledged_covers_in_flight() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut acc = Accumulator::new(config(true));
        for n in 0..4 {
            acc.append(tp.clone(), rec(n, 50), t0);
        }
        let a = acc.drain(&tp).expect("a");
        let b = acc.drain(&tp).expect("b");
        assert!(acc.has_earlier_unacknowledged(&tp, 2), "a is in flight");
        acc.complete(&a, false);
        assert!(!acc.has_earlier_unacknowledged(&tp, 2));
        acc.requeue(b, t0, true);
        assert!(acc.has_earlier_unacknowledged(&tp, 3), "b is queued");
        let b = acc.drain(&tp).expect("b again");
        acc.complete(&b, false);
        assert!(
            !acc.has_earlier_unacknowledged(&tp, 100),
            "nothing left unacknowledged"
        );
    }

    // Proves expiry removes only batches past the delivery timeout.
    #[test]
    fn test_expire() {
        let t0 = Instant::now();
        let tp = TopicPartition::new("t", 0);
        let mut acc = Accumulator::new(config(false));
        acc.append(tp.clone(), rec(0, 100), t0);
        acc.append(tp.clone(), rec(1, 100), t0 + Duration::from_secs(2));
        let gone = acc.expire(t0 + Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(gone.len(), 1);
        assert_eq!(ids(&gone[0]), vec![0]);
        assert_eq!(acc.queued_batches(), 1);
    }
}
