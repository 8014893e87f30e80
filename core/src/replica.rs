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

use crate::api::{Acks, ClientError, FetchReply, OffsetSpec, Produced, RequestId, Response};
use crate::batch::{self, BatchHeader};
use crate::machine::{
    Admission, AppendedEntry, Command, CommittedEntry, Ctx, Effect, Effects, PartitionMachine,
};
use crate::mutation::{self, Mutation};
use crate::partition_command::{self, Command as PartitionCommand, COMMAND_CONTEXT};
use crate::storage::{with_retries, OpenReport, PartitionStorage, StorageError};
use crate::topic_config::{BrokerDefaults, TimestampType, TopicSettings};
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
    /// A partition with a state machine snapshots it (and compacts its log) once this many
    /// entries were applied since the last snapshot.
    pub snapshot_entries: u64,
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
            snapshot_entries: 10_000,
        }
    }
}

/// Who waits for a proposal's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A client's produce: answered with a reply, which carries the time the leader stamped
    /// the batch with under LogAppendTime.
    Client {
        request: RequestId,
        append_time_ms: Option<i64>,
    },
    /// The state machine's own proposal: reported through `on_proposal`.
    Machine(u64),
    /// A client's DeleteRecords: answered with the log start offset once it applied.
    DeleteRecords(RequestId),
}

/// A produce waiting for its entry to be made durable (acks=1) or committed (acks=all).
#[derive(Debug, Clone)]
struct PendingProduce {
    origin: Origin,
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
    /// How many times this replica became leader: the node reports a new leadership to the
    /// controller at once instead of at its next periodic heartbeat.
    leaderships_taken: u64,
    /// Ticks left in which a new partition's preferred replica campaigns again while no leader
    /// is known (see [`Replica::campaign_fresh`]).
    fresh_campaign_ticks: usize,
    /// In repair mode: the commit index of the first leader that replicated to us since.
    repair_target: Option<RaftIndex>,
    /// Produces pending when leadership was lost; answered `Indeterminate` at the next drain.
    lost_pending: Vec<PendingProduce>,
    /// The partition's state machine, if it has one (module docs of [`crate::machine`]).
    machine: Option<Box<dyn PartitionMachine>>,
    /// Effects the machine emitted and the replica has not processed yet.
    fx: Effects,
    /// Machine effects for the node (replies, node events, messages), in order.
    output: Vec<Effect>,
    /// The raft index the machine's last snapshot covers.
    snapshot_index: RaftIndex,
    /// Committed entries the machine replayed at open (snapshot plus this many).
    replayed: u64,
    /// On the leader: when each voter was last seen caught up (at a tick). Cleared on any role
    /// change, so a new leader reports a follower in sync only once it has seen it so.
    caught_up_at: BTreeMap<NodeId, Millis>,
    /// The topic's settings that the produce path enforces (size, timestamps, min ISR).
    settings: TopicSettings,
    /// acks=all produces that committed but are not yet durable on `min.insync.replicas`
    /// replicas (only when that is more than a majority), with their base offsets.
    awaiting_insync: BTreeMap<RaftIndex, (PendingProduce, Offset)>,
    /// DeleteRecords commands in the log that have not applied yet, by raft index: a leader
    /// serves nothing below them already, because a committed one may be among them (a new
    /// leader applies its predecessor's last entries only once it commits in its own term).
    unapplied_deletes: BTreeMap<RaftIndex, Offset>,
    /// This leader applied a configuration without itself: it steps down at the end of the
    /// step ([`Replica::step_down_removed`]).
    removed_as_leader: bool,
    /// The monotonic time of the last tick.
    now_ms: Millis,
    /// The wall-clock time of the last tick (record timestamps only).
    wall_ms: Millis,
    logger: Logger,
}

impl Replica {
    /// Builds the raft node over opened storage (what recovery found is in
    /// [`PartitionStorage::open_report`]) and rebuilds the machine, if any.
    pub fn open(
        id: NodeId,
        tp: TopicPartition,
        storage: PartitionStorage,
        config: ReplicaConfig,
        machine: Option<Box<dyn PartitionMachine>>,
        rng: &mut ChaCha8Rng,
        logger: &Logger,
    ) -> Result<Replica, StorageError> {
        let mut storage = storage;
        let needs_history = machine.as_ref().is_some_and(|m| m.compacts_log());
        if machine.is_some() && storage.set_has_machine(needs_history)? {
            warn!(logger, "no snapshot verified and the log is compacted: re-fetching";
                "tp" => %tp);
        }
        let report = storage.open_report().clone();
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
            leaderships_taken: 0,
            fresh_campaign_ticks: 0,
            raw,
            pending: BTreeMap::new(),
            repair_target: None,
            lost_pending: Vec::new(),
            machine,
            fx: Effects::default(),
            output: Vec::new(),
            snapshot_index: 0,
            replayed: 0,
            caught_up_at: BTreeMap::new(),
            settings: TopicSettings::resolve(&BrokerDefaults::default(), &BTreeMap::new()),
            awaiting_insync: BTreeMap::new(),
            unapplied_deletes: BTreeMap::new(),
            removed_as_leader: false,
            now_ms: 0,
            wall_ms: 0,
            logger,
        };
        replica.redraw_election_timeout(rng);
        replica.last_seen = replica.role_key();
        replica.replay_commands()?;
        replica.rebuild_machine(&report)?;
        Ok(replica)
    }

    /// At open: the committed commands still in the log apply again (the log start offset is
    /// not persisted; `crate::partition_command`), and the uncommitted ones wait in
    /// `unapplied_deletes`. Only entries without records are read.
    fn replay_commands(&mut self) -> Result<(), StorageError> {
        let log = self.raw.store().log();
        let commit = self.raw.store().state().commit.min(log.last_index());
        let mut found = Vec::new();
        for index in log.recordless_indexes(log.first_index(), log.last_index()) {
            let entries = with_retries(|| log.entries(index, index + 1, None))?;
            let e = entries.first().expect("the index is in the log");
            if e.kind != crate::log::EntryKind::Command {
                continue;
            }
            match PartitionCommand::decode(&e.data) {
                Ok(PartitionCommand::DeleteRecords { before_offset }) => {
                    found.push((index, before_offset))
                }
                Err(err) => warn!(self.logger, "command entry skipped"; "index" => index,
                    "error" => %err),
            }
        }
        for (index, before) in found {
            if index > commit {
                self.unapplied_deletes.insert(index, before);
            } else if !mutation::active(Mutation::ForgetDeletedRecordsAtOpen) {
                self.apply_delete_records(index, before);
            }
        }
        Ok(())
    }

    /// Rebuilds the machine at open: its newest verified snapshot, then the committed log after
    /// it (raft will not hand those entries out again: it starts with `applied` = commit).
    /// Effects of the replay are dropped: they happened before the restart.
    fn rebuild_machine(&mut self, report: &OpenReport) -> Result<(), StorageError> {
        let Some(machine) = self.machine.as_mut() else {
            return Ok(());
        };
        if report.corrupt_snapshots > 0 {
            warn!(self.logger, "snapshot files failed their checksum; not applied";
                "count" => report.corrupt_snapshots);
        }
        let mut ctx = Self::ctx_of(self.id, &self.raw, self.now_ms, self.wall_ms);
        ctx.replaying = true;
        let mut fx = Effects::default();
        let store = self.raw.store();
        if let Some(snap) = store.machine_snapshot() {
            ctx.applied = snap.index;
            machine
                .restore(&snap.data, &ctx, &mut fx)
                .map_err(|e| StorageError::BadState {
                    path: self.tp.dir(),
                    reason: format!("snapshot {} does not restore: {e}", snap.index),
                })?;
            self.snapshot_index = snap.index;
        }
        let log = store.log();
        let commit = store.state().commit.min(log.last_index());
        let mut next = (self.snapshot_index + 1).max(log.first_index());
        // A machine that compacts its log needs every entry after its snapshot; a data
        // partition's machine rebuilds from whatever retention left.
        assert!(
            next <= self.snapshot_index + 1 || !machine.compacts_log(),
            "log starts after the machine snapshot: entries {}..{} lost",
            self.snapshot_index + 1,
            next
        );
        while next <= log.last_index() {
            let entries = with_retries(|| log.entries(next, log.last_index() + 1, Some(1 << 20)))?;
            for e in &entries {
                let normal = e.kind == crate::log::EntryKind::Normal && !e.data.is_empty();
                if e.index > commit {
                    // The uncommitted tail: appended, not applied (the producer table keeps it).
                    if normal {
                        let data = [AppendedEntry {
                            index: e.index,
                            term: e.term,
                            data: &e.data,
                        }];
                        machine.on_append(&data);
                    }
                    continue;
                }
                ctx.applied = e.index;
                self.replayed += 1;
                if normal {
                    let base_offset = log.end_offset_at(e.index - 1).map_err(StorageError::from)?;
                    let entry = CommittedEntry {
                        index: e.index,
                        term: e.term,
                        data: &e.data,
                        base_offset,
                    };
                    machine.apply(&entry, &ctx, &mut fx);
                }
            }
            next = entries.last().map_or(log.last_index() + 1, |e| e.index + 1);
        }
        machine.check_invariants();
        Ok(())
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

    /// The partition's state machine, if it has one.
    pub fn machine(&self) -> Option<&dyn PartitionMachine> {
        self.machine.as_deref()
    }

    /// The index the machine's newest snapshot covers (0: none yet).
    pub fn snapshot_index(&self) -> RaftIndex {
        self.snapshot_index
    }

    /// How many log entries the machine replayed at open, after its snapshot.
    pub fn replayed_at_open(&self) -> u64 {
        self.replayed
    }

    /// Whether [`Replica::take_output`] has anything.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The machine's effects for the node since the last call (replies, node events, messages
    /// to other machines), in order.
    pub fn take_output(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.output)
    }

    /// Feeds a command to the machine (the node routes admin requests, heartbeats and machine
    /// messages here). Without a machine the command is refused.
    pub fn handle_command(
        &mut self,
        command: Command,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        let ctx = self.ctx();
        match self.machine.as_mut() {
            Some(m) => m.handle(command, &ctx, &mut self.fx),
            None => {
                if let Command::Client { id, request } = command {
                    let e = ClientError::UnknownPartition(self.tp.clone());
                    replies.push((id, Response::error_for(&request, e)));
                }
            }
        }
        self.run_effects(rng, replies);
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
            log_start_offset: self.log_start_offset(),
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

    /// The term of the entry at `index` in the raft log (written or not), if it holds one.
    pub fn log_term(&self, index: RaftIndex) -> Option<Term> {
        let log = &self.raw.raft.raft_log;
        if index < log.first_index() || index > log.last_index() {
            return None;
        }
        log.term(index).ok()
    }

    /// How many times this replica became leader (see the field).
    pub fn leaderships_taken(&self) -> u64 {
        self.leaderships_taken
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

    /// Whether member `id`'s log has reached this leader's commit index (as its acks say).
    pub fn caught_up(&self, id: NodeId) -> bool {
        let committed = self.raw.raft.raft_log.committed;
        self.raw
            .raft
            .prs()
            .get(id)
            .is_some_and(|p| p.matched >= committed)
    }

    /// The raft commit index.
    pub fn commit_index(&self) -> RaftIndex {
        self.raw.raft.raft_log.committed
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
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            if let Err(e) = crate::storage::decode_snapshot_data(&msg.get_snapshot().data) {
                // Never applied: dropped, it is a lost message and the leader sends it again.
                warn!(self.logger, "snapshot from the leader refused"; "error" => %e);
                return;
            }
        }
        if mutation::active(Mutation::SkipTermCheck)
            && msg.get_msg_type() == MessageType::MsgAppend
            && msg.term < self.raw.raft.term
        {
            // Planted bug: take a stale leader's appends as if they came from the current term.
            msg.term = self.raw.raft.term;
        }
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

    /// One node tick: `now_ms` is monotonic (every timer), `wall_ms` the wall clock (record
    /// timestamps only). Takes the machine's snapshot when one is due.
    pub fn tick(
        &mut self,
        now_ms: Millis,
        wall_ms: Millis,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) -> Result<(), StorageError> {
        assert!(now_ms >= self.now_ms, "monotonic time went backwards");
        self.now_ms = now_ms;
        self.wall_ms = wall_ms;
        self.raw.tick();
        self.after_raft_call(rng);
        self.campaign_again(rng);
        self.expire_pending(now_ms, replies);
        self.settle_insync(replies);
        if self.is_leader() {
            for id in self.in_sync_replicas() {
                self.caught_up_at.insert(id, now_ms);
            }
        }
        let ctx = self.ctx();
        if let Some(m) = self.machine.as_mut() {
            m.tick(&ctx, &mut self.fx);
        }
        self.run_effects(rng, replies);
        self.maybe_snapshot()
    }

    /// A brand-new partition's preferred replica campaigns at once instead of waiting out an
    /// election timeout, so a topic has leaders right after its creation (a leaderless window
    /// makes clients cache "no leader"). Only a replica whose raft state is empty campaigns:
    /// any other already took part in an election and waits as raft says. The other replicas
    /// may open a little later (they apply the same metadata record on their own), so the
    /// campaign repeats for up to one minimum election timeout while no leader is known; with
    /// pre-vote a repeat bumps no term.
    pub fn campaign_fresh(&mut self, rng: &mut ChaCha8Rng) {
        let fresh = self.raw.raft.term == 0 && self.raw.raft.raft_log.last_index() == 0;
        if !fresh || !self.raw.raft.promotable() {
            return;
        }
        self.fresh_campaign_ticks = self.config.election_tick_min;
        let _ = self.raw.campaign();
        self.after_raft_call(rng);
    }

    fn campaign_again(&mut self, rng: &mut ChaCha8Rng) {
        if self.fresh_campaign_ticks == 0 {
            return;
        }
        self.fresh_campaign_ticks -= 1;
        let raft = &self.raw.raft;
        let waiting = raft.leader_id == raft::INVALID_ID
            && matches!(raft.state, StateRole::Follower | StateRole::PreCandidate);
        if !waiting {
            self.fresh_campaign_ticks = 0;
            return;
        }
        let _ = self.raw.campaign();
        self.after_raft_call(rng);
    }

    /// Snapshots the machine at the applied index once `snapshot_entries` were applied since
    /// the last one, then compacts the log (module docs of [`crate::snapshot`]).
    /// A peer that needs a snapshot the stored one cannot serve gets a fresh one as soon as an
    /// entry was applied since the last (see `PartitionStorage::take_snapshot_wanted`).
    fn maybe_snapshot(&mut self) -> Result<(), StorageError> {
        if self.raw.store().take_snapshot_wanted() {
            return self.snapshot_after(1);
        }
        self.snapshot_after(self.config.snapshot_entries)
    }

    /// Snapshots the machine at the applied index if at least `entries` were applied since
    /// the last snapshot and the applied state is durable.
    fn snapshot_after(&mut self, entries: u64) -> Result<(), StorageError> {
        let Some(m) = self.machine.as_ref() else {
            return Ok(());
        };
        let applied = self.raw.raft.raft_log.applied;
        let store = self.raw.store();
        let durable = applied <= store.durable_commit() && !store.is_dirty();
        if applied < self.snapshot_index + entries.max(1) || !durable {
            return Ok(());
        }
        if applied < store.log().first_index() {
            // A leader's snapshot just restarted the log after `applied`: the machine holds
            // what that snapshot gave it, and the next applied entry can be snapshotted.
            return Ok(());
        }
        let term = store.log().term(applied)?;
        let data = m.snapshot();
        let compact = m.compacts_log();
        self.raw
            .mut_store()
            .save_machine_snapshot(applied, term, data, compact)?;
        self.snapshot_index = applied;
        info!(self.logger, "snapshot taken"; "index" => applied,
            "log_first_index" => self.raw.store().log().first_index());
        Ok(())
    }

    /// The replica as its machine sees it now.
    fn ctx(&self) -> Ctx {
        Self::ctx_of(self.id, &self.raw, self.now_ms, self.wall_ms)
    }

    fn ctx_of(id: NodeId, raw: &RawNode<PartitionStorage>, now_ms: Millis, wall_ms: Millis) -> Ctx {
        let leader = raw.raft.leader_id;
        Ctx {
            node: id,
            now_ms,
            wall_ms,
            is_leader: raw.raft.state == StateRole::Leader,
            term: raw.raft.term,
            leader: (leader != raft::INVALID_ID).then_some(leader),
            applied: raw.raft.raft_log.applied,
            replaying: false,
        }
    }

    /// Processes what the machine emitted: proposals go to raft now (their failures come back
    /// to the machine, which may emit more), everything else waits in `output` for the node.
    fn run_effects(&mut self, rng: &mut ChaCha8Rng, replies: &mut Replies) {
        // Each round resolves the previous round's proposals; a machine that answered every
        // failure with a new proposal would loop, so the rounds are bounded.
        for _ in 0..EFFECT_ROUNDS_MAX {
            if self.fx.is_empty() {
                return;
            }
            for effect in self.fx.take() {
                match effect {
                    Effect::Propose { tag, batch } => {
                        let origin = Origin::Machine(tag);
                        self.propose(self.now_ms, origin, Acks::All, batch, rng, replies);
                    }
                    other => self.output.push(other),
                }
            }
        }
        panic!(
            "state machine of {} keeps proposing after failures",
            self.tp
        );
    }

    /// Hands a proposal's outcome to whoever waits for it.
    fn resolve(
        &mut self,
        origin: Origin,
        result: Result<Offset, ClientError>,
        replies: &mut Replies,
    ) {
        match origin {
            Origin::Client {
                request,
                append_time_ms,
            } => {
                let produced = result.map(|base_offset| Produced {
                    base_offset,
                    log_append_time_ms: append_time_ms,
                });
                replies.push((request, Response::Produce(produced)))
            }
            Origin::DeleteRecords(id) => {
                // The start the committed commands put, not `log_start_offset`: a later
                // command still in the log may yet be truncated away.
                let start = self.committed_start_offset();
                replies.push((id, Response::DeleteRecords(result.map(|_| start))));
            }
            Origin::Machine(tag) => {
                let ctx = self.ctx();
                if let Some(m) = self.machine.as_mut() {
                    m.on_proposal(tag, result, &ctx, &mut self.fx);
                }
            }
        }
    }

    /// Proposes a client's produce. Replies go to `replies` now (errors, acks=0) or later.
    pub fn produce(
        &mut self,
        now_ms: Millis,
        request: RequestId,
        acks: Acks,
        batch: Bytes,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        // The checks come before the machine screens the batch, so what it admits is proposed.
        let checked = self
            .check_proposal(&batch)
            .and_then(|header| self.check_topic_policy(batch.len(), &header))
            .and_then(|()| self.check_insync(acks));
        let admission = match checked {
            Err(e) => Admission::Answer(Err(e)),
            Ok(()) => {
                let ctx = self.ctx();
                self.machine
                    .as_mut()
                    .map_or(Admission::Propose, |m| m.admit(&batch, &ctx))
            }
        };
        match admission {
            Admission::Propose => {
                let (batch, append_time_ms) = self.stamp(batch);
                let origin = Origin::Client {
                    request,
                    append_time_ms,
                };
                self.propose(now_ms, origin, acks, batch, rng, replies)
            }
            Admission::Answer(result) if acks != Acks::None => {
                replies.push((request, Response::Produce(result.map(Produced::at))))
            }
            Admission::Answer(_) => {}
        }
        self.run_effects(rng, replies);
    }

    /// Kafka's log start offset as this replica serves it: where retention and the applied
    /// DeleteRecords put it, or past that where a DeleteRecords in the log has yet to apply.
    pub fn log_start_offset(&self) -> Offset {
        let log = self.raw.store().log();
        let pending = self.unapplied_deletes.values().copied().max().unwrap_or(0);
        log.start_offset().max(pending.min(log.next_offset()))
    }

    /// Kafka's DeleteRecords on the leader: records before `offset` (-1: the high watermark)
    /// go. Refused past the high watermark (OFFSET_OUT_OF_RANGE); answered at once when the
    /// start is there already, else once the command commits.
    pub fn delete_records(
        &mut self,
        now_ms: Millis,
        request: RequestId,
        offset: Offset,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        let before = match self.check_delete(offset) {
            Err(e) => return replies.push((request, Response::DeleteRecords(Err(e)))),
            Ok(None) => {
                let start = self.committed_start_offset();
                return replies.push((request, Response::DeleteRecords(Ok(start))));
            }
            Ok(Some(before)) => before,
        };
        let data = PartitionCommand::DeleteRecords {
            before_offset: before,
        }
        .encode();
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(COMMAND_CONTEXT.to_vec(), data.to_vec());
        self.after_raft_call(rng);
        if proposed.is_err() {
            let e = ClientError::NotLeader {
                leader: self.leader(),
            };
            return replies.push((request, Response::DeleteRecords(Err(e))));
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, last_before + 1, "a proposal appends one entry");
        let pending = PendingProduce {
            origin: Origin::DeleteRecords(request),
            term: self.raw.raft.term,
            acks: Acks::All,
            deadline_ms: now_ms + self.config.produce_timeout_ms,
        };
        assert!(self.pending.insert(index, pending).is_none());
    }

    /// The log start offset that committed, applied DeleteRecords and retention put: what a
    /// DeleteRecords may be answered with. [`Replica::log_start_offset`] may be past it.
    fn committed_start_offset(&self) -> Offset {
        self.raw.store().log().start_offset()
    }

    /// The offset a DeleteRecords for `offset` deletes before, or `None` when the committed
    /// start is there already. A start that only an uncommitted command in the log puts there
    /// does not count: that command may be truncated away, so the request proposes its own.
    fn check_delete(&self, offset: Offset) -> Result<Option<Offset>, ClientError> {
        self.check_serving()?;
        let hw = self.high_watermark();
        let before = if offset == -1 { hw } else { offset };
        if before < 0 || before > hw {
            return Err(ClientError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset(),
                end: hw,
            });
        }
        Ok((before > self.committed_start_offset()).then_some(before))
    }

    /// Bytes of the partition's segment files.
    pub fn log_size_bytes(&self) -> u64 {
        self.raw.store().log().size_bytes()
    }

    /// Replaces the log's retention and segment settings (a topic's configs changed).
    pub fn set_log_config(&mut self, config: crate::log::LogConfig) {
        self.raw.mut_store().log_mut().set_config(config);
    }

    /// Replaces the topic's settings (at creation and when its configs change).
    pub fn set_settings(&mut self, settings: TopicSettings) {
        self.settings = settings;
    }

    /// Why the topic's configs refuse a client's batch, if they do: `max.message.bytes`, and
    /// under CreateTime the `message.timestamp.*.max.ms` bounds around the leader's wall clock.
    /// The bounds are checked on the batch's first and max timestamps (no record is decoded;
    /// a compressed batch could not be), as Kafka does for the batch's own fields.
    fn check_topic_policy(&self, len: usize, h: &BatchHeader) -> Result<(), ClientError> {
        let s = &self.settings;
        if len as u64 > s.max_message_bytes as u64 {
            return Err(ClientError::MessageTooLarge {
                size: len as u64,
                max: s.max_message_bytes as u64,
            });
        }
        if s.timestamp_type == TimestampType::LogAppendTime {
            return Ok(());
        }
        let now = self.wall_ms;
        for ts in [h.base_timestamp, h.max_timestamp] {
            // -1: the client did not set one (Kafka exempts it too).
            let early = ts >= 0 && ts < now.saturating_sub(s.timestamp_before_max_ms);
            let late = ts > now.saturating_add(s.timestamp_after_max_ms);
            if early || late {
                return Err(ClientError::InvalidTimestamp(format!(
                    "timestamp {ts} is outside [{}, {}] (message.timestamp.before.max.ms {}, \
                     message.timestamp.after.max.ms {})",
                    now.saturating_sub(s.timestamp_before_max_ms),
                    now.saturating_add(s.timestamp_after_max_ms),
                    s.timestamp_before_max_ms,
                    s.timestamp_after_max_ms
                )));
            }
        }
        Ok(())
    }

    /// NOT_ENOUGH_REPLICAS for an acks=all produce while fewer replicas than
    /// `min.insync.replicas` are in sync; nothing is written.
    fn check_insync(&self, acks: Acks) -> Result<(), ClientError> {
        let required = self.settings.min_insync_replicas as usize;
        if acks != Acks::All || required <= 1 {
            return Ok(());
        }
        let isr = self.isr().len();
        if isr < required {
            return Err(ClientError::NotEnoughReplicas { isr, required });
        }
        Ok(())
    }

    /// The batch as the leader appends it and the time it was stamped with: under
    /// LogAppendTime, the leader's wall clock.
    fn stamp(&self, batch: Bytes) -> (Bytes, Option<i64>) {
        if self.settings.timestamp_type != TimestampType::LogAppendTime {
            return (batch, None);
        }
        let mut b = batch.to_vec();
        batch::stamp_log_append_time(&mut b, self.wall_ms);
        (Bytes::from(b), Some(self.wall_ms))
    }

    /// Why a batch cannot be proposed here now, if it cannot; else its (validated) header.
    fn check_proposal(&self, batch: &[u8]) -> Result<BatchHeader, ClientError> {
        if !self.is_leader() || self.raw.store().is_repairing() {
            return Err(ClientError::NotLeader {
                leader: self.leader().filter(|l| *l != self.id),
            });
        }
        if batch.len() as u64 > self.config.max_batch_bytes {
            return Err(ClientError::MessageTooLarge {
                size: batch.len() as u64,
                max: self.config.max_batch_bytes,
            });
        }
        batch::validate(batch).map_err(ClientError::CorruptBatch)
    }

    fn propose(
        &mut self,
        now_ms: Millis,
        origin: Origin,
        acks: Acks,
        batch: Bytes,
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) {
        let reply = |me: &mut Self, replies: &mut Replies, r: Result<Offset, ClientError>| {
            if acks != Acks::None {
                me.resolve(origin, r, replies);
            }
        };
        if let Err(e) = self.check_proposal(&batch) {
            return reply(self, replies, Err(e));
        }
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(vec![], batch.to_vec());
        self.after_raft_call(rng);
        if proposed.is_err() {
            return reply(self, replies, Err(ClientError::NotLeader { leader: None }));
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(
            index,
            last_before + 1,
            "a proposal appends exactly one entry"
        );
        if let Some(m) = self.machine.as_mut() {
            // The entry is in the leader's log now (unstable): the next produce is screened
            // against it, even before it is written.
            let appended = [AppendedEntry {
                index,
                term: self.raw.raft.term,
                data: &batch,
            }];
            m.on_append(&appended);
        }
        if acks == Acks::None {
            return;
        }
        let prev = self.pending.insert(
            index,
            PendingProduce {
                origin,
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
        let start = self.log_start_offset();
        let end = log.next_offset();
        if offset < start || offset > end {
            return Err(ClientError::OffsetOutOfRange { offset, start, end });
        }
        let hw = if mutation::active(Mutation::ServePastHw) {
            end // Planted bug: serve what is not committed yet.
        } else {
            hw
        };
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
            OffsetSpec::Earliest | OffsetSpec::EarliestLocal => Ok((self.log_start_offset(), -1)),
            OffsetSpec::Latest => Ok((self.high_watermark(), -1)),
            OffsetSpec::LatestTiered => Ok((-1, -1)),
            OffsetSpec::MaxTimestamp => {
                let hw = self.high_watermark();
                let found = with_retries(|| log.max_timestamp_offset(hw))
                    .map_err(|e| ClientError::Storage(e.to_string()))?;
                Ok(found.unwrap_or((-1, -1)))
            }
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
            self.install_snapshot(&snap)?;
        }
        self.append_entries(rd.entries())?;
        if let Some(hs) = rd.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hard_state(&hs);
        }
        Ok(Some(rd))
    }

    /// Installs a leader's snapshot: the log restarts after it and the machine takes its state.
    /// The payload was verified when the message arrived ([`Replica::handle_raft_message`]).
    fn install_snapshot(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<(), StorageError> {
        let index = snap.get_metadata().index;
        info!(self.logger, "installing snapshot"; "index" => index);
        if let Some(m) = self.machine.as_mut() {
            m.on_truncate(self.raw.store().log().first_index());
        }
        let state = self.raw.mut_store().apply_snapshot(snap)?;
        // The log restarts after the snapshot; its start covers the commands that were in it.
        self.unapplied_deletes.clear();
        let mut ctx = self.ctx();
        ctx.applied = index;
        if let (Some(m), Some(state)) = (self.machine.as_mut(), state) {
            // Checked on arrival; a snapshot that decodes but does not restore is a bug on the
            // leader, and applying half of it is worse than stopping.
            m.restore(&state, &ctx, &mut self.fx)
                .unwrap_or_else(|e| panic!("verified snapshot {index} does not restore: {e}"));
            m.check_invariants();
            self.snapshot_index = index;
        }
        Ok(())
    }

    /// Writes a `Ready`'s entries; tells the machine what was appended, and first what a
    /// conflicting suffix dropped.
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last_before = self.raw.store().log().last_index();
        if mutation::active(Mutation::LoseTruncation) && first.index <= last_before {
            // Planted bug: keep the conflicting suffix and write only what lies past it.
            let keep: Vec<Entry> = entries
                .iter()
                .filter(|e| e.index > last_before)
                .cloned()
                .collect();
            return self.raw.mut_store().append(&keep);
        }
        self.raw.mut_store().append(entries)?;
        self.note_appended_commands(first.index <= last_before, entries);
        if let Some(m) = self.machine.as_mut() {
            if first.index <= last_before {
                m.on_truncate(first.index);
            }
            let appended: Vec<AppendedEntry<'_>> = entries
                .iter()
                .map(|e| AppendedEntry {
                    index: e.index,
                    term: e.term,
                    data: &e.data,
                })
                .collect();
            m.on_append(&appended);
        }
        Ok(())
    }

    /// Keeps `unapplied_deletes` in step with the log: a conflicting suffix took its commands
    /// with it, and the appended commands join.
    fn note_appended_commands(&mut self, truncated: bool, entries: &[Entry]) {
        if truncated {
            self.unapplied_deletes.split_off(&entries[0].index);
        }
        for e in entries.iter().filter(|e| partition_command::is_command(e)) {
            match PartitionCommand::decode(&e.data) {
                Ok(PartitionCommand::DeleteRecords { before_offset }) => {
                    self.unapplied_deletes.insert(e.index, before_offset);
                }
                Err(err) => warn!(self.logger, "command entry will be skipped";
                    "index" => e.index, "error" => %err),
            }
        }
    }

    /// Phase 3 of a step: the node has synced; finish the `Ready` (module docs). Fails only
    /// when persisting a configuration change fails (fail-stop, as any storage error).
    pub fn ready_finish(
        &mut self,
        mut rd: Ready,
        send: &mut impl FnMut(RaftMessage),
        rng: &mut ChaCha8Rng,
        replies: &mut Replies,
    ) -> Result<(), StorageError> {
        // The planted ack-before-sync bug removes this guard too, so that the simulator's
        // history checks, not this assertion, have to catch the data it loses.
        assert!(
            !self.raw.store().is_dirty() || mutation::active(Mutation::AckBeforeSync),
            "ready finished before sync"
        );
        for m in rd.take_persisted_messages() {
            send(m);
        }
        self.ack_leader_persisted(rd.entries(), replies);
        let committed = rd.take_committed_entries();
        self.apply(&committed, replies)?;
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        for m in light.take_messages() {
            send(m);
        }
        let committed = light.take_committed_entries();
        self.apply(&committed, replies)?;
        self.raw.advance_apply();
        if std::mem::take(&mut self.removed_as_leader) {
            self.step_down_removed();
        }
        self.after_raft_call(rng);
        self.settle_insync(replies);
        self.drain_lost(replies);
        self.check_repair_done();
        self.run_effects(rng, replies);
        Ok(())
    }

    /// A leader that applied its own removal steps down. raft-rs keeps a removed leader leading
    /// (an untested branch there, whose next commit check panics: the leader has no progress
    /// entry any more). A caught-up member of the new configuration is told to campaign at
    /// once, so no election timeout passes without a leader. Called after the Ready is
    /// advanced: raft-rs refuses new messages from a follower in the middle of one.
    fn step_down_removed(&mut self) {
        let successor = self.best_successor();
        info!(self.logger, "removed from the configuration; stepping down";
            "successor" => ?successor);
        if let Some(to) = successor {
            self.raw.raft.send_timeout_now(to);
        }
        let term = self.raw.raft.term;
        self.raw.raft.become_follower(term, raft::INVALID_ID);
    }

    /// Proposes a raft configuration change (joint consensus with `ConfChangeV2`). It takes
    /// effect on every replica when it commits ([`Replica::apply`]). Only the leader proposes.
    pub fn propose_conf_change(
        &mut self,
        cc: raft::eraftpb::ConfChangeV2,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), ClientError> {
        if !self.is_leader() {
            return Err(ClientError::NotLeader {
                leader: self.leader().filter(|l| *l != self.id),
            });
        }
        let res = self.raw.propose_conf_change(vec![], cc);
        self.after_raft_call(rng);
        res.map_err(|e| ClientError::InvalidRequest(format!("conf change refused: {e}")))
    }

    /// Whether a configuration change is proposed and not yet applied (raft-rs turns a second
    /// one into an empty entry: propose one at a time).
    pub fn has_pending_conf(&self) -> bool {
        self.raw.raft.has_pending_conf()
    }

    /// Whether the current raft configuration has learners (without copying it).
    pub fn has_learners(&self) -> bool {
        !self.raw.raft.prs().conf().learners().is_empty()
    }

    /// The current raft configuration: voters, learners, and the outgoing voters while a joint
    /// configuration is in force.
    pub fn conf_state(&self) -> raft::eraftpb::ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// Deletes whole segments past retention, never anything not yet committed and applied,
    /// nor (with a machine) anything its newest snapshot does not cover: the machine is rebuilt
    /// from that snapshot plus the log after it.
    pub fn apply_retention(&mut self, now_ms: Millis) -> Result<(), StorageError> {
        if !self.raw.store().log().retention_due(now_ms) {
            // Nothing to delete: no snapshot either (one per partition per check, each with an
            // fsync, stalled the node's loop when it hosts hundreds of partitions).
            return Ok(());
        }
        if self.machine.as_ref().is_some_and(|m| !m.compacts_log()) {
            // A data partition's machine (the producer table) is small: snapshot it now, so
            // retention is not held back by up to `snapshot_entries` entries.
            self.snapshot_after(1)?;
        }
        let covered = if self.machine.is_some() {
            self.snapshot_index
        } else {
            RaftIndex::MAX
        };
        let upto = self
            .raw
            .raft
            .raft_log
            .applied
            .min(self.raw.store().durable_commit())
            .min(covered);
        self.raw
            .mut_store()
            .log_mut()
            .apply_retention(now_ms, upto)?;
        Ok(())
    }

    /// Answers every pending produce: the replica is going away (crash, shutdown, deletion).
    pub fn abandon_pending(&mut self, replies: &mut Replies) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let e = ClientError::Indeterminate {
                reason: "replica closed",
            };
            self.resolve(p.origin, Err(e), replies);
        }
        // The machine's reactions are dropped with the replica.
        self.fx.take();
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
    /// change, tells the machine, and fails pending produces when leadership is lost.
    fn after_raft_call(&mut self, rng: &mut ChaCha8Rng) {
        let key = self.role_key();
        if key == self.last_seen {
            return;
        }
        let was_leader = self.last_seen.1 == StateRole::Leader;
        self.last_seen = key;
        self.role_changes += 1;
        if key.1 == StateRole::Leader {
            self.leaderships_taken += 1;
        }
        self.caught_up_at.clear();
        self.redraw_election_timeout(rng);
        let ctx = self.ctx();
        if let Some(m) = self.machine.as_mut() {
            m.on_role(&ctx, &mut self.fx);
        }
        if was_leader && key.1 != StateRole::Leader && !self.pending.is_empty() {
            info!(self.logger, "lost leadership"; "term" => key.0, "pending" => self.pending.len());
            // The entries may still commit under the next leader: the outcome is unknown.
            self.lost_pending = std::mem::take(&mut self.pending).into_values().collect();
        }
        if was_leader && key.1 != StateRole::Leader {
            // Committed, but this replica can no longer count who has them.
            let awaiting = std::mem::take(&mut self.awaiting_insync);
            self.lost_pending
                .extend(awaiting.into_values().map(|(p, _)| p));
        }
    }

    fn ack_leader_persisted(&mut self, entries: &[Entry], replies: &mut Replies) {
        for e in entries {
            let Some(p) = self.pending.get(&e.index) else {
                continue;
            };
            let early = mutation::active(Mutation::ApplyBeforeCommit) && p.acks == Acks::All;
            if (p.acks != Acks::Leader && !early) || p.term != e.term {
                continue;
            }
            let base = self
                .raw
                .store()
                .log()
                .end_offset_at(e.index - 1)
                .expect("the entry just appended has a predecessor in the log");
            let p = self.pending.remove(&e.index).expect("looked up above");
            self.resolve(p.origin, Ok(base), replies);
        }
    }

    /// Applies committed entries: configuration changes to raft, data to the machine, and
    /// answers the proposals they complete. The machine sees an entry before its proposer
    /// hears the outcome, so a reply always reflects the applied state.
    fn apply(&mut self, committed: &[Entry], replies: &mut Replies) -> Result<(), StorageError> {
        for e in committed {
            match e.get_entry_type() {
                _ if partition_command::is_command(e) => self.apply_command(e),
                raft::eraftpb::EntryType::EntryNormal => self.apply_normal(e),
                _ => self.apply_conf_change(e)?,
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
                if self.waits_for_insync(&p, e.index) {
                    self.awaiting_insync.insert(e.index, (p, base));
                    continue;
                }
                Ok(base)
            } else {
                // Another leader's entry took this index: ours was never committed.
                Err(ClientError::NotLeader {
                    leader: self.leader(),
                })
            };
            self.resolve(p.origin, result, replies);
        }
        Ok(())
    }

    fn apply_normal(&mut self, e: &Entry) {
        if e.data.is_empty() {
            return;
        }
        let mut ctx = self.ctx();
        ctx.applied = e.index;
        if let Some(m) = self.machine.as_mut() {
            let base_offset = self
                .raw
                .store()
                .log()
                .end_offset_at(e.index - 1)
                .expect("a committed entry's predecessor is in the log");
            let entry = CommittedEntry {
                index: e.index,
                term: e.term,
                data: &e.data,
                base_offset,
            };
            m.apply(&entry, &ctx, &mut self.fx);
        }
    }

    /// A committed command entry (`crate::partition_command`). One that does not decode was
    /// proposed by a newer node or passed its CRC garbled; every replica skips it alike.
    fn apply_command(&mut self, e: &Entry) {
        match PartitionCommand::decode(&e.data) {
            Ok(PartitionCommand::DeleteRecords { before_offset }) => {
                self.apply_delete_records(e.index, before_offset)
            }
            Err(err) => {
                warn!(self.logger, "command skipped"; "index" => e.index, "error" => %err)
            }
        }
        self.unapplied_deletes = self.unapplied_deletes.split_off(&(e.index + 1));
    }

    /// Moves the log start offset for the DeleteRecords command at `index`. Its offset is at
    /// most the log end before it (the leader checked it against its high watermark).
    fn apply_delete_records(&mut self, index: RaftIndex, before: Offset) {
        let log = self.raw.mut_store().log_mut();
        let end = log
            .end_offset_at(index - 1)
            .expect("a committed entry's predecessor is in the log");
        if before > end {
            warn!(self.logger, "DeleteRecords past the log end before it; clamped";
                "index" => index, "before" => before, "end" => end);
        }
        if log.advance_start(before.min(end)) {
            info!(self.logger, "log start offset moved"; "index" => index,
                "start" => log.start_offset());
        }
    }

    /// A committed `ConfChange`/`ConfChangeV2`: raft adopts it, and the resulting configuration
    /// is persisted at once (see `PartitionStorage::set_conf_state`). An entry that does not
    /// decode was checked when proposed; it is skipped, as raft-rs's own examples do.
    fn apply_conf_change(&mut self, e: &Entry) -> Result<(), StorageError> {
        use protobuf::Message as _;
        let cs = match e.get_entry_type() {
            raft::eraftpb::EntryType::EntryConfChange => {
                let Ok(cc) = raft::eraftpb::ConfChange::parse_from_bytes(&e.data) else {
                    warn!(self.logger, "undecodable conf change"; "index" => e.index);
                    return Ok(());
                };
                self.raw.apply_conf_change(&cc)
            }
            _ => {
                let Ok(cc) = raft::eraftpb::ConfChangeV2::parse_from_bytes(&e.data) else {
                    warn!(self.logger, "undecodable conf change"; "index" => e.index);
                    return Ok(());
                };
                self.raw.apply_conf_change(&cc)
            }
        };
        match cs {
            Ok(cs) => {
                info!(self.logger, "configuration changed"; "index" => e.index,
                    "voters" => ?cs.voters, "learners" => ?cs.learners,
                    "outgoing" => ?cs.voters_outgoing);
                self.raw.mut_store().set_conf_state(&cs)?;
                if self.is_leader() && !cs.voters.contains(&self.id) {
                    // Stepped down once the Ready is advanced ([`Replica::step_down_removed`]).
                    self.removed_as_leader = true;
                }
                Ok(())
            }
            Err(err) => {
                // raft rejects a change that is invalid in the current configuration (e.g.
                // removing the last voter); every replica rejects it alike.
                warn!(self.logger, "conf change refused"; "index" => e.index, "error" => %err);
                Ok(())
            }
        }
    }

    /// Whether a committed acks=all produce must also wait for `min.insync.replicas` replicas
    /// to have it durably: only when that is more than the majority the commit already had.
    fn waits_for_insync(&self, p: &PendingProduce, index: RaftIndex) -> bool {
        let min = self.settings.min_insync_replicas as usize;
        let voters = self.raw.store().state().voters.len();
        matches!(p.origin, Origin::Client { .. })
            && p.acks == Acks::All
            && min > voters / 2 + 1
            && self.durable_replicas(index) < min
    }

    /// Voters whose log holds `index` durably, as the leader's progress says (followers ack
    /// an append after syncing it).
    fn durable_replicas(&self, index: RaftIndex) -> usize {
        let voters = &self.raw.store().state().voters;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(id, p)| voters.contains(id) && p.matched >= index)
            .count()
    }

    /// Answers the produces of `awaiting_insync` that enough replicas now hold, and those whose
    /// deadline passed (NOT_ENOUGH_REPLICAS_AFTER_APPEND: written and committed, but not as
    /// widely as the topic asks).
    fn settle_insync(&mut self, replies: &mut Replies) {
        if self.awaiting_insync.is_empty() {
            return;
        }
        let min = self.settings.min_insync_replicas as usize;
        let now = self.now_ms;
        let done: Vec<RaftIndex> = self
            .awaiting_insync
            .iter()
            .filter(|(i, (p, _))| self.durable_replicas(**i) >= min || p.deadline_ms <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in done {
            let (p, base) = self.awaiting_insync.remove(&i).expect("collected above");
            let result = if self.durable_replicas(i) >= min {
                Ok(base)
            } else {
                Err(ClientError::NotEnoughReplicasAfterAppend)
            };
            self.resolve(p.origin, result, replies);
        }
    }

    fn drain_lost(&mut self, replies: &mut Replies) {
        for p in std::mem::take(&mut self.lost_pending) {
            let e = ClientError::Indeterminate {
                reason: "leadership lost before commit",
            };
            self.resolve(p.origin, Err(e), replies);
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
            let e = ClientError::Indeterminate {
                reason: "timed out waiting for commit",
            };
            self.resolve(p.origin, Err(e), replies);
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

/// Most rounds of machine effects one input may cause (see `Replica::run_effects`).
const EFFECT_ROUNDS_MAX: usize = 16;

/// Replies produced while handling an input; the node drains them.
pub type Replies = Vec<(RequestId, Response)>;

/// Vote traffic, which a replica in repair mode neither sends nor answers.
pub fn is_vote_request(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    )
}
