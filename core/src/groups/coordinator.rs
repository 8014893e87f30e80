//! [`GroupCoordinator`]: the [`PartitionMachine`] of one `__consumer_offsets` partition, the
//! classic Kafka group coordinator in sans-IO form.
//!
//! Every replica applies the partition's records into the same [`CommittedState`]. Only the
//! raft leader coordinates: it holds the live groups ([`LiveGroup`]: members, states, pending
//! JoinGroup/SyncGroup replies, session and rebalance timers), which belong to one leadership
//! and are dropped when it ends. Every change that must survive is a record proposed to the
//! log, and the client hears of it only once it commits.
//!
//! ## Loading (NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS)
//! A replica that does not lead answers NOT_COORDINATOR. A new leader may not yet have applied
//! every entry of earlier terms (raft commits them only together with an entry of its own
//! term), so its committed state may be stale; it answers COORDINATOR_LOAD_IN_PROGRESS until
//! *loaded*. The rule: on becoming leader the machine proposes a barrier, a group metadata
//! tombstone for the group id "" (a valid Kafka record that no group can be affected by, as ""
//! is not a valid group id). The replica applies every entry before its proposer hears the
//! outcome, so when the barrier's `on_proposal(Ok)` arrives, or `apply` sees any entry of the
//! current term (which can only commit after everything before it), every entry of earlier
//! terms has been applied. Then the live groups are built from the committed state. A failed
//! barrier is proposed again from `tick`.
//!
//! The request handlers live in [`super::membership`] (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, timers) and [`super::offsets`] (offsets and the admin requests).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::api::{GroupError, GroupRequest, GroupResponse, JoinResult};
use super::api::{OffsetDeleteResult, SyncResult};
use super::live::LiveGroup;
use super::offsets::commit_done;
use super::records::{records_of_batch, to_batch, GroupRecord, OffsetValue};
use super::state::CommittedState;
use crate::api::{ClientError, Request, RequestId, Response};
use crate::machine::{Command, CommittedEntry, Ctx, Effects, PartitionMachine, RestoreError};
use crate::types::{Millis, Offset, Term, TopicPartition};

/// How often (monotonic) the leader looks for expired offsets.
pub(super) const EXPIRY_INTERVAL_MS: Millis = 1_000;
/// Most tombstones one expiry proposal carries.
pub(super) const EXPIRY_RECORDS_MAX: usize = 1_000;

/// The coordinator's fixed inputs (Kafka's broker configs of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_initial_rebalance_delay_ms: i32,
    pub offsets_retention_ms: Millis,
    pub offset_metadata_max_bytes: usize,
    /// Most members a group may have.
    pub group_max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_ms: 7 * 24 * 3_600 * 1_000,
            offset_metadata_max_bytes: 4_096,
            group_max_size: usize::MAX,
        }
    }
}

/// A proposal in flight, and who waits for it.
#[derive(Clone, Debug)]
pub(super) enum Proposal {
    /// The load barrier (module docs).
    Barrier,
    /// An OffsetCommit: the errors decided up front; `None` entries were written.
    Commit {
        group: String,
        request: RequestId,
        results: Vec<(TopicPartition, Option<GroupError>)>,
    },
    /// The leader's assignment for `generation` (CompletingRebalance -> Stable).
    Assignment {
        group: String,
        assignments: BTreeMap<String, Bytes>,
    },
    /// A static member replaced in a Stable group: its JoinGroup reply waits for the record.
    StaticJoin {
        group: String,
        request: RequestId,
        reply: JoinResult,
    },
    /// Group metadata nobody waits for (a group that went Empty).
    Metadata { group: String },
    Delete {
        request: RequestId,
        results: Vec<(String, Option<GroupError>)>,
    },
    OffsetDelete {
        request: RequestId,
        result: OffsetDeleteResult,
    },
    /// Expired offsets, and the groups that go with them.
    Expiry { groups: Vec<String> },
}

impl Proposal {
    /// The group whose live state the record writes, for those that write one.
    fn group(&self) -> Option<&str> {
        match self {
            Proposal::Commit { group, .. }
            | Proposal::Assignment { group, .. }
            | Proposal::StaticJoin { group, .. }
            | Proposal::Metadata { group } => Some(group),
            _ => None,
        }
    }
}

/// Soft state of one leadership (module docs).
#[derive(Debug)]
pub(super) struct Leadership {
    pub term: Term,
    pub loaded: bool,
    /// The barrier in flight.
    pub barrier: Option<u64>,
    pub groups: BTreeMap<String, LiveGroup>,
    /// Makes member ids unique within the leadership (with the node and term).
    pub next_member: u64,
    /// Arrival order of members.
    pub next_seq: u64,
    pub last_expiry_ms: Option<Millis>,
    pub expiring: bool,
}

/// The group coordinator of one `__consumer_offsets` partition (module docs).
pub struct GroupCoordinator {
    pub(super) config: GroupConfig,
    pub(super) committed: CommittedState,
    pub(super) lead: Option<Leadership>,
    pub(super) proposals: BTreeMap<u64, Proposal>,
    next_tag: u64,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        assert!(config.group_min_session_timeout_ms <= config.group_max_session_timeout_ms);
        assert!(config.group_initial_rebalance_delay_ms >= 0 && config.group_max_size > 0);
        GroupCoordinator {
            config,
            committed: CommittedState::default(),
            lead: None,
            proposals: BTreeMap::new(),
            next_tag: 0,
        }
    }

    /// The committed state (white-box checks): groups' metadata and offsets.
    pub fn committed(&self) -> &CommittedState {
        &self.committed
    }

    /// The committed offset of `tp` for `group`.
    pub fn committed_offset(&self, group: &str, tp: &TopicPartition) -> Option<&OffsetValue> {
        self.committed.offset(group, tp)
    }

    /// Records applied so far.
    pub fn records_applied(&self) -> u64 {
        self.committed.records_applied
    }

    /// Whether this replica coordinates (leads and finished loading).
    pub fn is_loaded(&self) -> bool {
        self.lead.as_ref().is_some_and(|l| l.loaded)
    }

    /// Proposes `records` as one batch; the outcome comes to `on_proposal` with the tag.
    pub(super) fn propose(
        &mut self,
        p: Proposal,
        records: &[GroupRecord],
        ctx: &Ctx,
        fx: &mut Effects,
    ) -> u64 {
        self.next_tag += 1;
        self.proposals.insert(self.next_tag, p);
        fx.propose(self.next_tag, to_batch(records, ctx.wall_ms));
        self.next_tag
    }

    /// The live leadership, once loaded (handlers run only then).
    pub(super) fn lead_mut(&mut self) -> &mut Leadership {
        let lead = self.lead.as_mut().expect("handlers run while leading");
        assert!(lead.loaded, "handlers run once loaded");
        lead
    }

    /// The live group `name`, created Empty when unknown.
    pub(super) fn group_mut(&mut self, name: &str) -> &mut LiveGroup {
        self.lead_mut()
            .groups
            .entry(name.to_string())
            .or_insert_with(LiveGroup::empty)
    }

    /// Why this replica cannot answer a group request now, if it cannot.
    fn not_ready(&mut self, ctx: &Ctx, fx: &mut Effects) -> Option<GroupError> {
        let leading = ctx.is_leader && self.lead.as_ref().is_some_and(|l| l.term == ctx.term);
        if !leading {
            return Some(GroupError::NotCoordinator);
        }
        if self.is_loaded() {
            return None;
        }
        self.propose_barrier(ctx, fx);
        Some(GroupError::CoordinatorLoadInProgress)
    }

    fn propose_barrier(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let in_flight = self.lead.as_ref().is_some_and(|l| l.barrier.is_some());
        if in_flight || self.is_loaded() {
            return;
        }
        let barrier = GroupRecord::Group {
            group: String::new(),
            value: None,
        };
        let tag = self.propose(Proposal::Barrier, &[barrier], ctx, fx);
        self.lead.as_mut().expect("leading").barrier = Some(tag);
    }

    /// Everything before this leadership is applied: build the live groups.
    fn finish_loading(&mut self, ctx: &Ctx) {
        let Some(lead) = self.lead.as_mut().filter(|l| !l.loaded) else {
            return;
        };
        lead.loaded = true;
        lead.barrier = None;
        lead.groups = self
            .committed
            .group_names()
            .into_iter()
            .map(|g| {
                let live = LiveGroup::load(self.committed.groups.get(&g), ctx.now_ms);
                (g, live)
            })
            .collect();
        for (n, g) in &lead.groups {
            g.check_invariants(n);
        }
    }

    /// Ends the leadership: whoever waits for a rebalance hears NOT_COORDINATOR and finds the
    /// new coordinator (proposals in flight are answered through `on_proposal`).
    fn step_down(&mut self, fx: &mut Effects) {
        let Some(lead) = self.lead.take() else {
            return;
        };
        let e = GroupError::NotCoordinator;
        for m in lead.groups.values().flat_map(|g| g.members.values()) {
            if let Some(id) = m.join {
                let reply = GroupResponse::Join(JoinResult::error(e, m.id.clone()));
                fx.reply(id, Response::Group(reply));
            }
            if let Some(id) = m.sync {
                fx.reply(
                    id,
                    Response::Group(GroupResponse::Sync(SyncResult::error(e))),
                );
            }
        }
    }

    fn handle_client(&mut self, id: RequestId, request: Request, ctx: &Ctx, fx: &mut Effects) {
        let Request::Group(request) = request else {
            let e = ClientError::InvalidRequest("not a group request".into());
            return fx.reply(id, Response::error_for(&request, e));
        };
        if let Some(e) = self.not_ready(ctx, fx) {
            let reply = GroupResponse::error_for(&request, e);
            return fx.reply(id, Response::Group(reply));
        }
        if let Some(e) = invalid_group_id(&request) {
            let reply = GroupResponse::error_for(&request, e);
            return fx.reply(id, Response::Group(reply));
        }
        self.dispatch(id, request, ctx, fx);
    }

    fn dispatch(&mut self, id: RequestId, request: GroupRequest, ctx: &Ctx, fx: &mut Effects) {
        match request {
            GroupRequest::Join { .. } => self.join(id, request, ctx, fx),
            GroupRequest::Sync { .. } => self.sync(id, request, ctx, fx),
            GroupRequest::Heartbeat {
                group,
                generation,
                member_id,
                group_instance_id,
            } => {
                let r = self.heartbeat(&group, generation, &member_id, group_instance_id, ctx);
                fx.reply(id, Response::Group(GroupResponse::Heartbeat(r)));
            }
            GroupRequest::Leave { group, members } => {
                let r = self.leave(&group, members, ctx, fx);
                fx.reply(id, Response::Group(GroupResponse::Leave(r)));
            }
            GroupRequest::OffsetCommit { .. } => self.offset_commit(id, request, ctx, fx),
            GroupRequest::OffsetFetch {
                group, partitions, ..
            } => {
                let r = self.offset_fetch(&group, partitions);
                fx.reply(id, Response::Group(GroupResponse::OffsetFetch(Ok(r))));
            }
            GroupRequest::List { states_filter } => {
                let r = self.list(&states_filter);
                fx.reply(id, Response::Group(r));
            }
            GroupRequest::Describe { groups } => {
                let r = GroupResponse::Describe(self.describe(&groups));
                fx.reply(id, Response::Group(r));
            }
            GroupRequest::Delete { groups } => self.delete_groups(id, groups, ctx, fx),
            GroupRequest::OffsetDelete { group, partitions } => {
                self.offset_delete(id, group, partitions, ctx, fx)
            }
        }
    }

    fn finish_proposal(
        &mut self,
        tag: u64,
        p: Proposal,
        result: Result<Offset, ClientError>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let err = result.as_ref().err().map(GroupError::from_proposal);
        match p {
            Proposal::Barrier if err.is_none() => self.finish_loading(ctx),
            Proposal::Barrier => {
                if let Some(l) = self.lead.as_mut() {
                    l.barrier = None; // `tick` proposes it again.
                }
            }
            Proposal::Commit {
                request, results, ..
            } => commit_done(request, results, err, fx),
            Proposal::Assignment { group, assignments } => {
                self.assignment_done(&group, tag, assignments, err, ctx, fx)
            }
            Proposal::StaticJoin { request, reply, .. } => {
                let reply = match err {
                    None => reply,
                    Some(e) => JoinResult::error(e, reply.member_id),
                };
                fx.reply(request, Response::Group(GroupResponse::Join(reply)));
            }
            Proposal::Metadata { .. } => {}
            Proposal::Delete { request, results } => {
                self.delete_done(request, results, err, ctx, fx)
            }
            Proposal::OffsetDelete { request, result } => {
                self.offset_delete_done(request, result, err, fx)
            }
            Proposal::Expiry { groups } => self.expiry_done(groups, err, ctx),
        }
    }

    /// Groups with a record of theirs in flight: expiry leaves them alone, so that a group
    /// is never forgotten while a record that recreates it may still commit.
    pub(super) fn busy_groups(&self) -> BTreeSet<&str> {
        self.proposals
            .values()
            .filter_map(Proposal::group)
            .collect()
    }

    /// Partitions of `group` whose commits are in flight: a deletion must cover them too, as
    /// their records come before its tombstones in the log.
    pub(super) fn partitions_in_flight(&self, name: &str) -> BTreeSet<TopicPartition> {
        let written = |p: &Proposal| -> Vec<TopicPartition> {
            match p {
                Proposal::Commit { group, results, .. } if group == name => results
                    .iter()
                    .filter(|(_, e)| e.is_none())
                    .map(|(tp, _)| tp.clone())
                    .collect(),
                _ => Vec::new(),
            }
        };
        self.proposals.values().flat_map(written).collect()
    }

    /// Whether this leadership is loaded and in the current term.
    pub(super) fn coordinating(&self, ctx: &Ctx) -> bool {
        ctx.is_leader
            && self
                .lead
                .as_ref()
                .is_some_and(|l| l.loaded && l.term == ctx.term)
    }
}

/// INVALID_GROUP_ID as Kafka checks it: "" is a valid group for offsets and the admin requests.
fn invalid_group_id(request: &GroupRequest) -> Option<GroupError> {
    let empty_allowed = matches!(
        request,
        GroupRequest::OffsetCommit { .. }
            | GroupRequest::OffsetFetch { .. }
            | GroupRequest::Describe { .. }
            | GroupRequest::Delete { .. }
            | GroupRequest::List { .. }
    );
    let empty = request.group().is_some_and(str::is_empty);
    (empty && !empty_allowed).then_some(GroupError::InvalidGroupId)
}

impl PartitionMachine for GroupCoordinator {
    fn apply(&mut self, entry: &CommittedEntry<'_>, ctx: &Ctx, _fx: &mut Effects) {
        match records_of_batch(entry.data) {
            Ok(records) => records.into_iter().for_each(|r| self.committed.apply(r)),
            // Committed and validated at append: a batch that does not decode is another
            // version's (KIP-848 records) or a bug; skip it, counted, rather than stop.
            Err(_) => self.committed.records_applied += 1,
        }
        let current = self.lead.as_ref().is_some_and(|l| l.term == entry.term);
        if current && ctx.is_leader {
            self.finish_loading(ctx);
        }
    }

    fn on_role(&mut self, ctx: &Ctx, fx: &mut Effects) {
        if self.lead.as_ref().is_some_and(|l| l.term == ctx.term) && ctx.is_leader {
            return;
        }
        self.step_down(fx);
        if !ctx.is_leader {
            return;
        }
        assert_ne!(ctx.term, 0, "a leader has a term");
        self.lead = Some(Leadership {
            term: ctx.term,
            loaded: false,
            barrier: None,
            groups: BTreeMap::new(),
            next_member: 0,
            next_seq: 0,
            last_expiry_ms: None,
            expiring: false,
        });
        self.propose_barrier(ctx, fx);
    }

    fn tick(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let leading = ctx.is_leader && self.lead.as_ref().is_some_and(|l| l.term == ctx.term);
        if !leading {
            return;
        }
        if !self.is_loaded() {
            return self.propose_barrier(ctx, fx);
        }
        self.run_timers(ctx, fx);
        self.expire_offsets(ctx, fx);
    }

    fn handle(&mut self, command: Command, ctx: &Ctx, fx: &mut Effects) {
        match command {
            Command::Client { id, request } => self.handle_client(id, request, ctx, fx),
            // Broker heartbeats and joins are the controller's.
            Command::Heartbeat { .. } | Command::Join { .. } => {}
        }
    }

    fn on_proposal(
        &mut self,
        tag: u64,
        result: Result<Offset, ClientError>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let Some(p) = self.proposals.remove(&tag) else {
            return;
        };
        // Only this leadership's own barrier says its predecessors' entries are applied.
        let ours = self.lead.as_ref().is_some_and(|l| l.barrier == Some(tag));
        if matches!(p, Proposal::Barrier) && !ours {
            return;
        }
        self.finish_proposal(tag, p, result, ctx, fx);
    }

    fn snapshot(&self) -> Bytes {
        self.committed.encode()
    }

    fn restore(&mut self, data: &[u8], ctx: &Ctx, fx: &mut Effects) -> Result<(), RestoreError> {
        let state =
            CommittedState::decode(data).map_err(|e| RestoreError::Decode(e.to_string()))?;
        state.check_invariants();
        self.committed = state;
        // The log under the live state was replaced: start the leadership over.
        if self.lead.is_some() {
            self.step_down(fx);
            self.on_role(ctx, fx);
        }
        Ok(())
    }

    fn check_invariants(&self) {
        self.committed.check_invariants();
        let Some(lead) = &self.lead else {
            return;
        };
        assert!(
            lead.loaded || lead.groups.is_empty(),
            "live groups before loading"
        );
        for (name, g) in &lead.groups {
            g.check_invariants(name);
            let persisted = self.committed.groups.get(name).map_or(0, |v| v.generation);
            assert!(
                persisted <= g.generation,
                "group {name}: live generation behind the log"
            );
            if let Some(tag) = g.sync_tag {
                assert!(
                    self.proposals.contains_key(&tag),
                    "group {name}: lost sync tag"
                );
            }
        }
    }

    /// The log exists only to build the groups and offsets (Kafka compacts
    /// `__consumer_offsets`): snapshots let it be deleted behind them, and a lagging follower
    /// installs the state with the snapshot.
    fn compacts_log(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
