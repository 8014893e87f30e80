//! One partition replica: a raft-rs `RawNode` over [`PartitionStorage`], plus the Kafka
//! semantics on top (produce with acks, fetch below the high watermark, list offsets, leader
//! epochs).
//!
//! The replica never touches a network or a clock. The [`crate::node::Node`] feeds it raft
//! messages, ticks and client requests, and drives its `Ready` in three phases so that one sync
//! covers every partition of the node (group commit):
//! 1. [`Replica::ready_write`]: take the `Ready`, send `messages()` at once (they do not depend
//!    on our own persistence), write entries and hard state without syncing;
//! 2. the node syncs every dirty storage;
//! 3. [`Replica::ready_finish`]: only now send `persisted_messages()`, acknowledge acks=1
//!    produces whose entries were just made durable, apply committed entries (acknowledging
//!    acks=all produces) and advance.
//!
//! raft-rs draws election timeouts from `thread_rng`; after every call that can change the
//! term, role or leader we overwrite the drawn value with one from the node's seeded RNG, so
//! runs are reproducible (see [`Replica::after_raft_call`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::eraftpb::{Entry, Message as RaftMessage, MessageType};
use raft::{Config as RaftConfig, RawNode, Ready, StateRole};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use slog::{info, o, warn, Logger};

use crate::api::{Acks, ClientError, FetchReply, OffsetSpec, RequestId, Response};
use crate::batch;
use crate::storage::{with_retries, OpenReport, PartitionStorage, StorageError};
use crate::types::{Millis, NodeId, Offset, RaftIndex, Term, TopicPartition};

/// Tunables of a replica. Ticks are the node's tick interval (see `NodeConfig::tick_ms`).
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub election_tick_min: usize,
    /// Exclusive upper bound of the randomized election timeout.
    pub election_tick_max: usize,
    pub heartbeat_tick: usize,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Largest batch a produce may carry.
    pub max_batch_bytes: u64,
    /// A proposed produce not answered within this is answered `Indeterminate`.
    pub produce_timeout_ms: Millis,
    /// A follower stays in the reported ISR ([`Replica::isr`]) while it was caught up with the
    /// leader's commit index at some tick within this long (Kafka's `replica.lag.time.max.ms`),
    /// so the ISR published in the metadata log does not flap with every batch in flight.
    pub isr_lag_ms: Millis,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            election_tick_min: 10,
            election_tick_max: 20,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_batch_bytes: 1 << 20,
            produce_timeout_ms: 30_000,
            isr_lag_ms: 10_000,
        }
    }
}

/// A produce waiting for its entry to be made durable (acks=1) or committed (acks=all).
#[derive(Debug, Clone)]
struct PendingProduce {
    request: RequestId,
    term: Term,
    acks: Acks,
    deadline_ms: Millis,
}

/// Observable replica state, for metrics and the simulator's white-box checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub term: Term,
    pub role: StateRole,
    pub leader: NodeId,
    pub commit: RaftIndex,
    pub durable_commit: RaftIndex,
    pub applied: RaftIndex,
    pub last_index: RaftIndex,
    pub high_watermark: Offset,
    pub log_end_offset: Offset,
    pub log_start_offset: Offset,
    pub repairing: bool,
}

pub struct Replica {
    tp: TopicPartition,
    id: NodeId,
    config: ReplicaConfig,
    raw: RawNode<PartitionStorage>,
    pending: BTreeMap<RaftIndex, PendingProduce>,
    /// (term, role, leader) after the last raft call; a change triggers a seeded timeout draw.
    last_seen: (Term, StateRole, NodeId),
    /// How many times (term, role, leader) changed: lets observers skip unchanged replicas.
    role_changes: u64,
    /// In repair mode: the commit index of the first leader that replicated to us since.
    repair_target: Option<RaftIndex>,
    /// Produces pending when leadership was lost; answered `Indeterminate` at the next drain.
    lost_pending: Vec<PendingProduce>,
    /// When set (the metadata partition), the data of every applied entry, in log order, for
    /// the node to apply to its metadata image.
    tap: Option<Vec<Bytes>>,
    /// On the leader: when each voter was last seen caught up (at a tick). Cleared on any role
    /// change, so a new leader reports a follower in sync only once it has seen it so.
    caught_up_at: BTreeMap<NodeId, Millis>,
    /// The time of the last tick.
    now_ms: Millis,
    logger: Logger,
}

impl Replica {
    /// Opens the replica's storage and builds its raft node.
    pub fn open(
        id: NodeId,
        tp: TopicPartition,
        storage: PartitionStorage,
        report: &OpenReport,
        config: ReplicaConfig,
        rng: &mut ChaCha8Rng,
        logger: &Logger,
    ) -> Result<Replica, StorageError> {
        let logger = logger.new(o!("tp" => tp.to_string()));
        if report.truncated_from_index.is_some() || report.corruption {
            warn!(logger, "recovery truncated the log";
                "from_index" => ?report.truncated_from_index, "corruption" => report.corruption,
                "commit_clamped_from" => ?report.commit_clamped_from);
        }
        let applied = storage.state().commit;
        let raft_config = RaftConfig {
            id,
            election_tick: config.election_tick_min,
            heartbeat_tick: config.heartbeat_tick,
            min_election_tick: config.election_tick_min,
            max_election_tick: config.election_tick_max,
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config
            .validate()
            .expect("replica raft config is built from validated tunables");
        let raw =
            RawNode::new(&raft_config, storage, &logger).map_err(|e| StorageError::BadState {
                path: tp.dir(),
                reason: e.to_string(),
            })?;
        let mut replica = Replica {
            tp,
            id,
            config,
            last_seen: (0, StateRole::Follower, 0),
            role_changes: 0,
            raw,
            pending: BTreeMap::new(),
            repair_target: None,
            lost_pending: Vec::new(),
            tap: None,
            caught_up_at: BTreeMap::new(),
            now_ms: 0,
            logger,
        };
        replica.redraw_election_timeout(rng);
        replica.last_seen = replica.role_key();
        Ok(replica)
    }

    pub fn tp(&self) -> &TopicPartition {
        &self.tp
    }

    /// The current raft term (Kafka's leader epoch).
    pub fn term(&self) -> Term {
        self.raw.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<NodeId> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    pub fn is_repairing(&self) -> bool {
        self.raw.store().is_repairing()
    }

    /// Starts collecting the data of applied entries (see [`Replica::take_applied`]).
    pub fn enable_tap(&mut self) {
        self.tap.get_or_insert_with(Vec::new);
    }

    /// The data of the entries applied since the last call, in log order.
    pub fn take_applied(&mut self) -> Vec<Bytes> {
        self.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Whether a step has something to do for this replica: a raft `Ready`, or writes (e.g.
    /// retention's) not yet synced.
    pub fn has_work(&self) -> bool {
        self.has_ready() || self.storage().is_dirty()
    }

    /// Phase 2 of a step: makes this replica's writes durable.
    pub fn sync_storage(&mut self) -> Result<(), StorageError> {
        self.raw.mut_store().sync()
    }

    pub fn storage(&self) -> &PartitionStorage {
        self.raw.store()
    }

    /// The high watermark: the end offset of the last entry whose commit is durable here, so it
    /// never goes backwards, not even across a crash.
    pub fn high_watermark(&self) -> Offset {
        let store = self.raw.store();
        let idx = store.durable_commit().min(store.log().last_index());
        store
            .log()
            .end_offset_at(idx)
            .expect("durable commit is within the log (asserted at open and on every write)")
    }

    pub fn status(&self) -> ReplicaStatus {
        let store = self.raw.store();
        ReplicaStatus {
            term: self.raw.raft.term,
            role: self.raw.raft.state,
            leader: self.raw.raft.leader_id,
            commit: self.raw.raft.raft_log.committed,
            durable_commit: store.durable_commit(),
            applied: self.raw.raft.raft_log.applied,
            last_index: store.log().last_index(),
            high_watermark: self.high_watermark(),
            log_end_offset: store.log().next_offset(),
            log_start_offset: store.log().start_offset(),
            repairing: store.is_repairing(),
        }
    }

    /// The replicas caught up with the leader (Kafka's ISR): the leader itself and every voter
    /// recently active whose log matches up to the commit index. Known only on the leader;
    /// empty elsewhere. Sorted, so the answer does not depend on raft-rs's map order.
    pub fn in_sync_replicas(&self) -> Vec<NodeId> {
        if !self.is_leader() {
            return Vec::new();
        }
        let committed = self.raw.raft.raft_log.committed;
        let voters = &self.raw.store().state().voters;
        let mut isr: Vec<NodeId> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .filter(|(id, p)| **id == self.id || (p.recent_active && p.matched >= committed))
            .map(|(id, _)| *id)
            .collect();
        isr.sort_unstable();
        isr
    }

    /// The ISR as published (Metadata responses, the metadata log): the leader and every voter
    /// caught up at some tick within `isr_lag_ms`. Steadier than [`Replica::in_sync_replicas`],
    /// which drops a follower whenever a batch is in flight. Known only on the leader.
    pub fn isr(&self) -> Vec<NodeId> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut isr: Vec<NodeId> = self
            .caught_up_at
            .iter()
            .filter(|(_, at)| self.now_ms - **at <= self.config.isr_lag_ms)
            .map(|(id, _)| *id)
            .chain(std::iter::once(self.id))
            .collect();
        isr.sort_unstable();
        isr.dedup();
        isr
    }

    /// How many times this replica's term, role or leader changed.
    pub fn role_changes(&self) -> u64 {
        self.role_changes
    }

    /// The preferred leader: the first replica of the assignment.
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.raw.store().state().voters.first().copied()
    }

    /// Asks raft to hand leadership to `to` (a no-op unless we lead and `to` is a voter).
    pub fn transfer_leadership(&mut self, to: NodeId, rng: &mut ChaCha8Rng) {
        if self.is_leader() && to != self.id {
            self.raw.transfer_leader(to);
            self.after_raft_call(rng);
        }
    }

    /// The caught-up voter other than us with the longest log, to hand leadership to.
    pub fn best_successor(&self) -> Option<NodeId> {
        if !self.is_leader() {
            return None;
        }
        let mut best: Option<(u64, NodeId)> = None;
        let voters = &self.raw.store().state().voters;
        for (id, p) in self.raw.raft.prs().iter() {
            // Learners cannot lead.
            if *id == self.id || !p.recent_active || !voters.contains(id) {
                continue;
            }
            // Ties go to the lower id so the choice does not depend on map order.
            let cand = (p.matched, *id);
            if best.is_none_or(|b| cand.0 > b.0 || (cand.0 == b.0 && cand.1 < b.1)) {
                best = Some(cand);
            }
        }
        best.map(|b| b.1)
    }

    /// The replica set (raft voters), sorted.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut v = self.raw.store().state().voters.clone();
        v.sort_unstable();
        v
    }

    /// Feeds one raft message from a peer. Vote traffic is dropped in repair mode (module docs
    /// of [`crate::storage`]): dropping is always safe, raft treats it as loss.
    pub fn handle_raft_message(&mut self, msg: RaftMessage, rng: &mut ChaCha8Rng) {
        if self.raw.store().is_repairing() {
            if is_vote_request(msg.get_msg_type()) {
                return;
            }
            if msg.get_msg_type() == MessageType::MsgAppend && self.repair_target.is_none() {
                self.repair_target = Some(msg.commit);
            }
        }
        let mut msg = msg;
        if msg.get_msg_type() == MessageType::MsgHeartbeat
            && msg.commit > self.raw.raft.raft_log.last_index()
        {
            // The leader's progress for us predates a recovery that truncated our log
            // (corruption): it believes we hold entries we lost. raft-rs would panic on the
            // out-of-range commit; keep our commit instead. The next append is rejected and the
            // leader probes back to what we really have.
            msg.commit = self.raw.raft.raft_log.committed;
        }
        // Errors here are messages for unknown peers or stale terms: raft ignores them.
        let _ = self.raw.step(msg);
        self.after_raft_call(rng);
    }

    pub fn tick(&mut self, now_ms: Millis, rng: &mut ChaCha8Rng, replies: &mut Replies) {
        self.now_ms = now_ms;
        self.raw.tick();
        self.after_raft_call(rng);
        self.expire_pending(now_ms, replies);
        if self.is_leader() {
            for id in self.in_sync_replicas() {
                self.caught_up_at.insert(id, now_ms);
            }
        }
    }

    /// Proposes a produce. Replies go to `replies` now (errors, acks=0) or later.
    pub fn produce(
        &mut self,
        now_ms: Millis,
        request: RequestId,
        acks: Acks,
        batch: Bytes,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        let reply = |replies: &mut Replies, r: Result<Offset, ClientError>| {
            if acks != Acks::None {
                replies.push((request, Response::Produce(r)));
            }
        };
        if !self.is_leader() || self.raw.store().is_repairing() {
            return reply(
                replies,
                Err(ClientError::NotLeader {
                    leader: self.leader().filter(|l| *l != self.id),
                }),
            );
        }
        if batch.len() as u64 > self.config.max_batch_bytes {
            return reply(
                replies,
                Err(ClientError::MessageTooLarge {
                    size: batch.len() as u64,
                    max: self.config.max_batch_bytes,
                }),
            );
        }
        if let Err(e) = batch::validate(&batch) {
            return reply(replies, Err(ClientError::CorruptBatch(e)));
        }
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(vec![], batch.to_vec());
        self.after_raft_call(rng);
        if proposed.is_err() {
            return reply(replies, Err(ClientError::NotLeader { leader: None }));
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(
            index,
            last_before + 1,
            "a proposal appends exactly one entry"
        );
        if acks == Acks::None {
            return;
        }
        let prev = self.pending.insert(
            index,
            PendingProduce {
                request,
                term: self.raw.raft.term,
                acks,
                deadline_ms: now_ms + self.config.produce_timeout_ms,
            },
        );
        assert!(prev.is_none(), "two proposals at index {index}");
    }

    /// Serves a fetch: whole batches from `offset`, never past the high watermark. An offset
    /// between the high watermark and the log end is valid and returns nothing yet.
    pub fn fetch(&self, offset: Offset, max_bytes: u64) -> Result<FetchReply, ClientError> {
        self.check_serving()?;
        let log = self.raw.store().log();
        let hw = self.high_watermark();
        let start = log.start_offset();
        let end = log.next_offset();
        if offset < start || offset > end {
            return Err(ClientError::OffsetOutOfRange { offset, start, end });
        }
        let batches = if offset >= hw {
            Vec::new()
        } else {
            with_retries(|| log.read(offset, hw, max_bytes))
                .map_err(|e| ClientError::Storage(e.to_string()))?
                .batches
        };
        Ok(FetchReply {
            batches,
            high_watermark: hw,
            log_start_offset: start,
        })
    }

    pub fn list_offsets(&self, spec: OffsetSpec) -> Result<(Offset, Millis), ClientError> {
        self.check_serving()?;
        let log = self.raw.store().log();
        match spec {
            OffsetSpec::Earliest => Ok((log.start_offset(), -1)),
            OffsetSpec::Latest => Ok((self.high_watermark(), -1)),
            OffsetSpec::Timestamp(ts) => {
                let hw = self.high_watermark();
                let found = with_retries(|| log.offset_for_timestamp(ts, hw))
                    .map_err(|e| ClientError::Storage(e.to_string()))?;
                Ok(found.unwrap_or((-1, -1)))
            }
        }
    }

    pub fn offset_for_leader_epoch(&self, epoch: Term) -> Result<(i64, Offset), ClientError> {
        self.check_serving()?;
        Ok(self
            .raw
            .store()
            .log()
            .end_offset_for_epoch(epoch)
            .map(|(e, o)| (e as i64, o))
            .unwrap_or((-1, -1)))
    }

    /// Phase 1 of a step (module docs). Returns the `Ready` to finish after the node's sync.
    pub fn ready_write(
        &mut self,
        send: &mut impl FnMut(RaftMessage),
    ) -> Result<Option<Ready>, StorageError> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        for m in rd.take_messages() {
            send(m);
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            info!(self.logger, "installing snapshot"; "index" => snap.get_metadata().index);
            self.raw.mut_store().apply_snapshot(&snap)?;
        }
        self.raw.mut_store().append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hard_state(&hs);
        }
        Ok(Some(rd))
    }

    /// Phase 3 of a step: the node has synced; finish the `Ready` (module docs).
    pub fn ready_finish(
        &mut self,
        mut rd: Ready,
        send: &mut impl FnMut(RaftMessage),
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        assert!(!self.raw.store().is_dirty(), "ready finished before sync");
        for m in rd.take_persisted_messages() {
            send(m);
        }
        self.ack_leader_persisted(rd.entries(), replies);
        let committed = rd.take_committed_entries();
        self.apply(&committed, replies);
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        for m in light.take_messages() {
            send(m);
        }
        let committed = light.take_committed_entries();
        self.apply(&committed, replies);
        self.raw.advance_apply();
        self.after_raft_call(rng);
        self.drain_lost(replies);
        self.check_repair_done();
    }

    /// Deletes whole segments past retention, never anything not yet committed and applied.
    pub fn apply_retention(&mut self, now_ms: Millis) -> Result<(), StorageError> {
        let upto = self
            .raw
            .raft
            .raft_log
            .applied
            .min(self.raw.store().durable_commit());
        self.raw
            .mut_store()
            .log_mut()
            .apply_retention(now_ms, upto)?;
        Ok(())
    }

    /// Answers every pending produce: the replica is going away (crash, shutdown, deletion).
    pub fn abandon_pending(&mut self, replies: &mut Replies) {
        for (_, p) in std::mem::take(&mut self.pending) {
            replies.push((
                p.request,
                Response::Produce(Err(ClientError::Indeterminate {
                    reason: "replica closed",
                })),
            ));
        }
    }

    // ---- private helpers ----

    fn check_serving(&self) -> Result<(), ClientError> {
        if !self.is_leader() {
            return Err(ClientError::NotLeader {
                leader: self.leader().filter(|l| *l != self.id),
            });
        }
        Ok(())
    }

    fn role_key(&self) -> (Term, StateRole, NodeId) {
        (
            self.raw.raft.term,
            self.raw.raft.state,
            self.raw.raft.leader_id,
        )
    }

    fn redraw_election_timeout(&mut self, rng: &mut ChaCha8Rng) {
        let t = rng.gen_range(self.config.election_tick_min..self.config.election_tick_max);
        self.raw.raft.set_randomized_election_timeout(t);
    }

    /// Called after every raft-rs call: reseeds the election timeout on a role/term/leader
    /// change and fails pending produces when leadership is lost.
    fn after_raft_call(&mut self, rng: &mut ChaCha8Rng) {
        let key = self.role_key();
        if key == self.last_seen {
            return;
        }
        let was_leader = self.last_seen.1 == StateRole::Leader;
        self.last_seen = key;
        self.role_changes += 1;
        self.caught_up_at.clear();
        self.redraw_election_timeout(rng);
        if was_leader && key.1 != StateRole::Leader && !self.pending.is_empty() {
            info!(self.logger, "lost leadership"; "term" => key.0, "pending" => self.pending.len());
            // The entries may still commit under the next leader: the outcome is unknown.
            self.lost_pending = std::mem::take(&mut self.pending).into_values().collect();
        }
    }

    fn ack_leader_persisted(&mut self, entries: &[Entry], replies: &mut Replies) {
        let log = self.raw.store().log();
        for e in entries {
            let Some(p) = self.pending.get(&e.index) else {
                continue;
            };
            if p.acks != Acks::Leader || p.term != e.term {
                continue;
            }
            let base = log
                .end_offset_at(e.index - 1)
                .expect("the entry just appended has a predecessor in the log");
            replies.push((p.request, Response::Produce(Ok(base))));
            self.pending.remove(&e.index);
        }
    }

    fn apply(&mut self, committed: &[Entry], replies: &mut Replies) {
        for e in committed {
            if let Some(tap) = self.tap.as_mut() {
                if e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty()
                {
                    tap.push(e.data.clone());
                }
            }
            let Some(p) = self.pending.remove(&e.index) else {
                continue;
            };
            let result = if p.term == e.term {
                let base = self
                    .raw
                    .store()
                    .log()
                    .end_offset_at(e.index - 1)
                    .expect("a committed entry's predecessor is in the log");
                Ok(base)
            } else {
                // Another leader's entry took this index: ours was never committed.
                Err(ClientError::NotLeader {
                    leader: self.leader(),
                })
            };
            replies.push((p.request, Response::Produce(result)));
        }
    }

    fn drain_lost(&mut self, replies: &mut Replies) {
        for p in std::mem::take(&mut self.lost_pending) {
            replies.push((
                p.request,
                Response::Produce(Err(ClientError::Indeterminate {
                    reason: "leadership lost before commit",
                })),
            ));
        }
    }

    fn expire_pending(&mut self, now_ms: Millis, replies: &mut Replies) {
        self.drain_lost(replies);
        let expired: Vec<RaftIndex> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(i, _)| *i)
            .collect();
        for i in expired {
            let p = self.pending.remove(&i).expect("key collected above");
            replies.push((
                p.request,
                Response::Produce(Err(ClientError::Indeterminate {
                    reason: "timed out waiting for commit",
                })),
            ));
        }
    }

    fn check_repair_done(&mut self) {
        let Some(target) = self.repair_target else {
            return;
        };
        if self.raw.raft.raft_log.committed >= target && !self.raw.store().is_dirty() {
            info!(self.logger, "repair complete"; "commit" => self.raw.raft.raft_log.committed);
            self.raw.mut_store().finish_repair();
            self.repair_target = None;
        }
    }
}

/// Replies produced while handling an input; the node drains them.
pub type Replies = Vec<(RequestId, Response)>;

/// Vote traffic, which a replica in repair mode neither sends nor answers.
pub fn is_vote_request(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    )
}
