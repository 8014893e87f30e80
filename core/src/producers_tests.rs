//! The producer table's screening, its two layers and its snapshot.

use super::*;
use crate::batch::BatchBuilder;

fn ctx(wall_ms: Millis) -> Ctx {
    Ctx {
        node: 1,
        now_ms: 0,
        wall_ms,
        is_leader: true,
        term: 1,
        leader: Some(1),
        applied: 0,
        replaying: false,
    }
}

/// A batch of `n` records from `pid` at `epoch`, sequences from `seq`, stamped at `ts`.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(ts).producer(pid, epoch, seq);
    for _ in 0..n {
        b = b.record(None, Some(b"v"), &[], ts);
    }
    b.build()
}

/// Plays the replica: admits, appends at the next index, commits in order.
struct Harness {
    table: ProducerTable,
    index: RaftIndex,
    next_offset: Offset,
    log: Vec<(RaftIndex, Bytes, Offset)>,
    applied: usize,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            table: ProducerTable::new(PRODUCER_EXPIRATION_MS_DEFAULT),
            index: 0,
            next_offset: 0,
            log: Vec::new(),
            applied: 0,
        }
    }

    /// Admits and appends (not committed). Returns the admission.
    fn produce(&mut self, b: &Bytes) -> Admission {
        self.produce_at(b, 1_000)
    }

    /// [`Harness::produce`] with the leader's wall clock at `wall_ms`.
    fn produce_at(&mut self, b: &Bytes, wall_ms: Millis) -> Admission {
        let a = self.table.admit(b, &ctx(wall_ms));
        if a == Admission::Propose {
            self.index += 1;
            let n = BatchHeader::parse(b).unwrap().record_count() as i64;
            self.log.push((self.index, b.clone(), self.next_offset));
            self.next_offset += n;
            self.table.on_append(&[AppendedEntry {
                index: self.index,
                term: 1,
                data: b,
            }]);
        }
        a
    }

    fn commit_all(&mut self) {
        self.commit_all_at(1_000);
    }

    /// Applies every proposed batch with the replica's wall clock at `wall_ms`.
    fn commit_all_at(&mut self, wall_ms: Millis) {
        while self.applied < self.log.len() {
            let (index, data, base_offset) = self.log[self.applied].clone();
            let entry = CommittedEntry {
                index,
                term: 1,
                data: &data,
                base_offset,
            };
            self.table
                .apply(&entry, &ctx(wall_ms), &mut Effects::default());
            self.applied += 1;
        }
        self.table.check_invariants();
    }
}

#[test]
fn test_in_order_batches_pass_and_duplicates_get_their_offset() {
    let mut h = Harness::new();
    assert_eq!(h.produce(&batch(7, 0, 0, 3, 1)), Admission::Propose);
    assert_eq!(h.produce(&batch(7, 0, 3, 2, 1)), Admission::Propose);
    // A retry of the second before it commits: retriable, not written again.
    assert_eq!(
        h.produce(&batch(7, 0, 3, 2, 1)),
        Admission::Answer(Err(ClientError::DuplicateNotCommitted))
    );
    h.commit_all();
    assert_eq!(h.produce(&batch(7, 0, 3, 2, 1)), Admission::Answer(Ok(3)));
    assert_eq!(h.produce(&batch(7, 0, 0, 3, 1)), Admission::Answer(Ok(0)));
    assert_eq!(h.log.len(), 2, "nothing was written twice");
    assert_eq!(h.table.stats().duplicates_answered, 2);
}

#[test]
fn test_gaps_stale_epochs_and_unknown_producers_are_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.produce(&batch(7, 0, 5, 1, 1)),
        Admission::Answer(Err(ClientError::UnknownProducerId(7)))
    );
    assert_eq!(h.produce(&batch(7, 0, 0, 2, 1)), Admission::Propose);
    assert_eq!(
        h.produce(&batch(7, 0, 3, 1, 1)),
        Admission::Answer(Err(ClientError::OutOfOrderSequence {
            expected: 2,
            got: 3
        }))
    );
    // A bumped epoch starts again at 0; the old epoch is fenced from then on.
    assert_eq!(
        h.produce(&batch(7, 1, 2, 1, 1)),
        Admission::Answer(Err(ClientError::OutOfOrderSequence {
            expected: 0,
            got: 2
        }))
    );
    assert_eq!(h.produce(&batch(7, 1, 0, 1, 1)), Admission::Propose);
    assert_eq!(
        h.produce(&batch(7, 0, 2, 1, 1)),
        Admission::Answer(Err(ClientError::InvalidProducerEpoch {
            epoch: 0,
            current: 1
        }))
    );
    h.commit_all();
    assert_eq!(h.table.committed_batches(7).unwrap().0, 1);
    // Batches without a producer id are never screened.
    assert_eq!(h.produce(&batch(-1, -1, -1, 1, 1)), Admission::Propose);
}

#[test]
fn test_sequences_wrap_at_i32_max() {
    let mut h = Harness::new();
    let mut p = Producer::new(&BatchId::of(&batch(9, 0, 0, 1, 1)).unwrap());
    p.batches.push(KeptBatch {
        first_seq: i32::MAX - 1,
        last_seq: i32::MAX,
        base_offset: 0,
    });
    h.table.committed.insert(9, p);
    // Two records from i32::MAX: the last sequence wraps to 0.
    assert_eq!(
        h.table.admit(&batch(9, 0, i32::MAX, 2, 1), &ctx(1_000)),
        Admission::Answer(Err(ClientError::OutOfOrderSequence {
            expected: 0,
            got: i32::MAX
        }))
    );
    assert_eq!(
        h.table.admit(&batch(9, 0, 0, 2, 1), &ctx(1_000)),
        Admission::Propose
    );
    assert_eq!(seq_add(i32::MAX, 1), 0);
    assert_eq!(seq_add(i32::MAX - 1, 3), 1);
}

#[test]
fn test_truncation_rolls_back_the_tail() {
    let mut h = Harness::new();
    assert_eq!(h.produce(&batch(7, 0, 0, 1, 1)), Admission::Propose);
    h.commit_all();
    assert_eq!(h.produce(&batch(7, 0, 1, 1, 1)), Admission::Propose);
    // A new leader's log did not have entry 2: the batch is gone, and its retry is new.
    h.table.on_truncate(2);
    h.log.truncate(1);
    h.index = 1;
    h.next_offset = 1;
    assert_eq!(h.produce(&batch(7, 0, 1, 1, 1)), Admission::Propose);
    h.commit_all();
    assert_eq!(
        h.table.committed_batches(7).unwrap().1,
        vec![(0, 0, 0), (1, 1, 1)]
    );
}

#[test]
fn test_a_follower_screens_its_uncommitted_tail_once_it_leads() {
    // The old leader appended seq 0 to this follower's log; it is not committed yet.
    let mut t = ProducerTable::new(PRODUCER_EXPIRATION_MS_DEFAULT);
    let b0 = batch(7, 0, 0, 1, 1);
    t.on_append(&[AppendedEntry {
        index: 1,
        term: 1,
        data: &b0,
    }]);
    assert_eq!(
        t.admit(&b0, &ctx(1_000)),
        Admission::Answer(Err(ClientError::DuplicateNotCommitted)),
        "a retry to the new leader must not be appended twice"
    );
    assert_eq!(
        t.admit(&batch(7, 0, 1, 1, 1), &ctx(1_000)),
        Admission::Propose
    );
}

#[test]
fn test_only_the_last_five_batches_are_remembered() {
    let mut h = Harness::new();
    for i in 0..8 {
        assert_eq!(h.produce(&batch(7, 0, i, 1, 1)), Admission::Propose);
    }
    h.commit_all();
    assert_eq!(h.table.committed_batches(7).unwrap().1.len(), BATCHES_KEPT);
    assert_eq!(h.produce(&batch(7, 0, 3, 1, 1)), Admission::Answer(Ok(3)));
    assert!(matches!(
        h.produce(&batch(7, 0, 2, 1, 1)),
        Admission::Answer(Err(ClientError::OutOfOrderSequence { .. }))
    ));
}

#[test]
fn test_expired_producers_are_unknown() {
    let mut h = Harness::new();
    assert_eq!(h.produce(&batch(7, 0, 0, 1, 1_000)), Admission::Propose);
    h.commit_all();
    let late = 1_000 + PRODUCER_EXPIRATION_MS_DEFAULT + 1;
    assert_eq!(
        h.table.admit(&batch(7, 0, 1, 1, late), &ctx(late)),
        Admission::Answer(Err(ClientError::UnknownProducerId(7)))
    );
    let mut c = ctx(late);
    c.now_ms = EXPIRY_SWEEP_MS;
    h.table.tick(&c, &mut Effects::default());
    assert_eq!(h.table.producers(), 0);
    assert_eq!(h.table.stats().expired, 1);
}

// Proves a producer whose records carry old timestamps (a replay of events from years ago)
// keeps its state while it writes: expiry counts from the later of the record timestamp and
// the wall time the batch was applied, so its next batch is screened, not UNKNOWN_PRODUCER_ID.
#[test]
fn test_old_record_timestamps_do_not_expire_a_writing_producer() {
    const YEARS_MS: Millis = 2 * 365 * 86_400_000;
    let now = 1_800_000_000_000;
    let mut h = Harness::new();
    let old = now - YEARS_MS;
    assert_eq!(
        h.produce_at(&batch(7, 0, 0, 1, old), now),
        Admission::Propose
    );
    h.commit_all_at(now);
    assert_eq!(
        h.table.admit(&batch(7, 0, 1, 1, old), &ctx(now + 1)),
        Admission::Propose
    );
    // Idle for longer than the expiration: gone, as before.
    let late = now + PRODUCER_EXPIRATION_MS_DEFAULT + 1;
    assert_eq!(
        h.table.admit(&batch(7, 0, 1, 1, old), &ctx(late)),
        Admission::Answer(Err(ClientError::UnknownProducerId(7)))
    );
}

#[test]
fn test_snapshot_round_trips_and_corruption_is_refused() {
    let mut h = Harness::new();
    for pid in 0..3 {
        for seq in 0..4 {
            assert_eq!(h.produce(&batch(pid, 2, seq, 1, 1)), Admission::Propose);
        }
    }
    h.commit_all();
    let snap = h.table.snapshot();
    let mut t = ProducerTable::new(PRODUCER_EXPIRATION_MS_DEFAULT);
    t.restore(&snap, &ctx(1_000), &mut Effects::default())
        .unwrap();
    t.check_invariants();
    for pid in 0..3 {
        assert_eq!(t.committed_batches(pid), h.table.committed_batches(pid));
    }
    assert_eq!(
        t.admit(&batch(1, 2, 3, 1, 1), &ctx(1_000)),
        Admission::Answer(Ok(7))
    );
    let mut bad = snap.to_vec();
    let last = bad.len() - 8;
    bad[last] ^= 0x40;
    let mut t2 = ProducerTable::new(PRODUCER_EXPIRATION_MS_DEFAULT);
    assert!(t2
        .restore(&bad, &ctx(1_000), &mut Effects::default())
        .is_err());
    assert_eq!(t2.producers(), 0, "a refused snapshot changes nothing");
}

#[test]
fn test_an_append_over_unwritten_proposals_replaces_them() {
    // A leader proposed seq 0 at index 1 (not yet written) and lost leadership; the next
    // leader's entry at index 1 (another producer's, and a plain batch at 2) replaces it with
    // no truncation of the storage.
    let mut t = ProducerTable::new(PRODUCER_EXPIRATION_MS_DEFAULT);
    let mine = batch(7, 0, 0, 1, 1);
    t.on_append(&[AppendedEntry {
        index: 1,
        term: 1,
        data: &mine,
    }]);
    t.on_append(&[AppendedEntry {
        index: 2,
        term: 1,
        data: &batch(7, 0, 1, 1, 1),
    }]);
    let theirs = batch(8, 0, 0, 1, 1);
    t.on_append(&[AppendedEntry {
        index: 1,
        term: 2,
        data: &theirs,
    }]);
    assert_eq!(
        t.tail().collect::<Vec<_>>(),
        vec![(1, 2)],
        "index 2 went with index 1"
    );
    assert_eq!(
        t.admit(&mine, &ctx(1_000)),
        Admission::Propose,
        "the retry is new again"
    );
    // The leader's own proposal appended twice (at propose, then when written) is kept once.
    t.on_append(&[AppendedEntry {
        index: 1,
        term: 2,
        data: &theirs,
    }]);
    assert_eq!(t.tail().count(), 1);
    t.on_append(&[AppendedEntry {
        index: 2,
        term: 2,
        data: &batch(-1, -1, -1, 1, 1),
    }]);
    assert_eq!(
        t.tail().collect::<Vec<_>>(),
        vec![(1, 2)],
        "a plain batch holds no producer"
    );
}
