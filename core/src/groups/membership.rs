//! The classic membership protocol on the coordinator: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, rebalances and their timers, after Apache Kafka's `GroupCoordinator` /
//! `ClassicGroup` (3.x/4.x behaviour).
//!
//! A rebalance: the group goes PreparingRebalance, every member must rejoin (its JoinGroup
//! waits), and it completes when all did or the rebalance timeout (the largest of the members')
//! passes, dropping those that did not. The generation then increments and the group goes
//! CompletingRebalance: the leader's SyncGroup carries the assignment, which is proposed as the
//! group metadata record; only when it commits do the SyncGroups get their assignments and the
//! group goes Stable. A group that was Empty waits `group_initial_rebalance_delay_ms` first,
//! extended by later joins up to the rebalance timeout (Kafka's InitialDelayedJoin).

use std::collections::BTreeMap;

use bytes::Bytes;

use super::api::{GroupError, GroupRequest, GroupResponse, GroupState, JoinResult};
use super::api::{LeaveResult, SyncResult};
use super::coordinator::{GroupCoordinator, Proposal};
use super::live::{LiveGroup, Member, Rebalance};
use super::records::GroupRecord;
use crate::api::{RequestId, Response};
use crate::machine::{Ctx, Effects};
use crate::types::Millis;

/// A JoinGroup's fields.
struct Join {
    group: String,
    member_id: String,
    instance: Option<String>,
    client_id: String,
    client_host: String,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    require_known_member_id: bool,
}

impl Join {
    fn from_request(request: GroupRequest) -> Join {
        let GroupRequest::Join {
            group,
            member_id,
            group_instance_id,
            client_id,
            client_host,
            protocol_type,
            protocols,
            session_timeout_ms,
            rebalance_timeout_ms,
            require_known_member_id,
            reason: _,
        } = request
        else {
            unreachable!("join gets JoinGroup only");
        };
        Join {
            group,
            member_id,
            instance: group_instance_id,
            client_id,
            client_host,
            protocol_type,
            protocols,
            session_timeout_ms,
            // JoinGroup v0 has no rebalance timeout (-1): Kafka uses the session timeout.
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            require_known_member_id,
        }
    }
}

fn reply_join(fx: &mut Effects, id: RequestId, r: JoinResult) {
    fx.reply(id, Response::Group(GroupResponse::Join(r)));
}

fn reply_sync(fx: &mut Effects, id: RequestId, r: SyncResult) {
    fx.reply(id, Response::Group(GroupResponse::Sync(r)));
}

impl GroupCoordinator {
    pub(super) fn join(
        &mut self,
        id: RequestId,
        request: GroupRequest,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let j = Join::from_request(request);
        match self.check_join(&j) {
            Err(e) => reply_join(fx, id, JoinResult::error(e, j.member_id)),
            Ok(()) if j.member_id.is_empty() => self.join_unknown(id, j, ctx, fx),
            Ok(()) => self.join_with_id(id, j, ctx, fx),
        }
    }

    /// The checks every JoinGroup passes first.
    fn check_join(&self, j: &Join) -> Result<(), GroupError> {
        let timeout = j.session_timeout_ms;
        let c = &self.config;
        if timeout < c.group_min_session_timeout_ms || timeout > c.group_max_session_timeout_ms {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let lead = self.lead.as_ref().expect("handlers run while leading");
        let Some(g) = lead.groups.get(&j.group) else {
            let ok = !j.protocol_type.is_empty() && !j.protocols.is_empty();
            return ok
                .then_some(())
                .ok_or(GroupError::InconsistentGroupProtocol);
        };
        if g.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let known = Some(j.member_id.as_str()).filter(|m| g.members.contains_key(*m));
        if !g.supports(known, &j.protocol_type, &j.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let new = known.is_none()
            && j.instance
                .as_ref()
                .is_none_or(|i| !g.instances.contains_key(i));
        if new && g.members.len() >= self.config.group_max_size {
            return Err(GroupError::GroupMaxSizeReached);
        }
        Ok(())
    }

    /// A member id unique to this node, term and leadership (Kafka: client id + UUID).
    fn new_member_id(&mut self, client_id: &str, ctx: &Ctx) -> String {
        let lead = self.lead_mut();
        let n = lead.next_member;
        lead.next_member += 1;
        let (hi, lo) = ((ctx.term >> 16) & 0xffff, ctx.term & 0xffff);
        format!(
            "{client_id}-{:08x}-{hi:04x}-{lo:04x}-{:04x}-{:012x}",
            ctx.node as u32,
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        )
    }

    /// A JoinGroup with member id "": a static member (re)joins, or a dynamic one gets its id.
    fn join_unknown(&mut self, id: RequestId, j: Join, ctx: &Ctx, fx: &mut Effects) {
        let old = j.instance.as_ref().and_then(|i| {
            let g = self.lead.as_ref()?.groups.get(&j.group)?;
            g.instances.get(i).cloned()
        });
        let member_id = self.new_member_id(&j.client_id, ctx);
        if let Some(old) = old {
            return self.replace_static(id, j, old, member_id, ctx, fx);
        }
        if j.instance.is_none() && j.require_known_member_id {
            let deadline = ctx.now_ms + j.session_timeout_ms as Millis;
            self.group_mut(&j.group)
                .pending
                .insert(member_id.clone(), deadline);
            return reply_join(
                fx,
                id,
                JoinResult::error(GroupError::MemberIdRequired, member_id),
            );
        }
        self.add_member(id, j, member_id, ctx, fx);
    }

    /// A JoinGroup naming a member id: a member that got MEMBER_ID_REQUIRED, or a known one.
    fn join_with_id(&mut self, id: RequestId, j: Join, ctx: &Ctx, fx: &mut Effects) {
        let Some(g) = self.lead_mut().groups.get_mut(&j.group) else {
            let e = JoinResult::error(GroupError::UnknownMemberId, j.member_id);
            return reply_join(fx, id, e);
        };
        if g.pending.contains_key(&j.member_id) && j.instance.is_some() {
            // Ids handed out with MEMBER_ID_REQUIRED are dynamic members' (Kafka refuses
            // this as an illegal state); a static member joins with "".
            let e = JoinResult::error(GroupError::UnknownMemberId, j.member_id);
            return reply_join(fx, id, e);
        }
        if g.pending.remove(&j.member_id).is_some() {
            let member_id = j.member_id.clone();
            return self.add_member(id, j, member_id, ctx, fx);
        }
        let error = if g.fenced(&j.member_id, j.instance.as_deref()) {
            Some(GroupError::FencedInstanceId)
        } else if !g.members.contains_key(&j.member_id) {
            Some(GroupError::UnknownMemberId)
        } else {
            None
        };
        if let Some(e) = error {
            return reply_join(fx, id, JoinResult::error(e, j.member_id));
        }
        self.rejoin(id, j, ctx, fx);
    }

    /// A new member joins and the group rebalances.
    fn add_member(
        &mut self,
        id: RequestId,
        j: Join,
        member_id: String,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let seq = {
            let lead = self.lead_mut();
            lead.next_seq += 1;
            lead.next_seq
        };
        let g = self.group_mut(&j.group);
        if g.members.is_empty() {
            g.protocol_type = Some(j.protocol_type.clone());
        }
        if let Some(i) = &j.instance {
            g.instances.insert(i.clone(), member_id.clone());
        }
        let mut member = Member {
            id: member_id.clone(),
            instance: j.instance,
            client_id: j.client_id,
            client_host: j.client_host,
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: j.rebalance_timeout_ms,
            protocols: j.protocols,
            assignment: Bytes::new(),
            join: Some(id),
            sync: None,
            session_deadline_ms: 0,
            seq,
        };
        member.touch(ctx.now_ms);
        g.members.insert(member_id, member);
        g.new_member_added = true;
        if g.state == GroupState::PreparingRebalance {
            return self.try_complete_join(&j.group, ctx, fx);
        }
        self.prepare_rebalance(&j.group, ctx, fx);
    }

    /// A known member's JoinGroup: it rejoins a rebalance, or gets its generation again, or
    /// (leader, or changed protocols) starts a rebalance.
    fn rejoin(&mut self, id: RequestId, j: Join, ctx: &Ctx, fx: &mut Effects) {
        let g = self.group_mut(&j.group);
        let m = g
            .members
            .get_mut(&j.member_id)
            .expect("checked by join_with_id");
        let same = m.protocols == j.protocols;
        m.protocols = j.protocols;
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.touch(ctx.now_ms);
        let is_leader = g.leader.as_deref() == Some(j.member_id.as_str());
        match g.state {
            GroupState::PreparingRebalance => {
                if let Some(old) = m.join.replace(id) {
                    let e = JoinResult::error(GroupError::RebalanceInProgress, &j.member_id);
                    reply_join(fx, old, e);
                }
                self.try_complete_join(&j.group, ctx, fx);
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if same && !(is_leader && g.state == GroupState::Stable) =>
            {
                let r = current_join(g, &j.member_id, false);
                reply_join(fx, id, r);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.join = Some(id);
                self.prepare_rebalance(&j.group, ctx, fx);
            }
            GroupState::Empty | GroupState::Dead => {
                let e = JoinResult::error(GroupError::UnknownMemberId, &j.member_id);
                reply_join(fx, id, e);
            }
        }
    }

    /// KIP-345: a static member restarted: it takes a new member id, the old id is fenced, and
    /// a Stable group whose protocol stays the same keeps its assignment without a rebalance.
    fn replace_static(
        &mut self,
        id: RequestId,
        j: Join,
        old: String,
        new: String,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let g = self.group_mut(&j.group);
        let mut m = g
            .members
            .remove(&old)
            .expect("an instance maps to a member");
        fence_waiters(&mut m, fx);
        m.id = new.clone();
        m.protocols = j.protocols;
        m.session_timeout_ms = j.session_timeout_ms;
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.client_id = j.client_id;
        m.client_host = j.client_host;
        m.touch(ctx.now_ms);
        g.members.insert(new.clone(), m);
        g.instances
            .insert(j.instance.clone().expect("static"), new.clone());
        if g.leader.as_deref() == Some(old.as_str()) {
            g.leader = Some(new.clone());
        }
        if g.awaiting_sync.remove(&old) {
            g.awaiting_sync.insert(new.clone());
        }
        let state = g.state;
        if state == GroupState::Stable && g.select_protocol() == g.protocol {
            let is_leader = g.leader.as_deref() == Some(new.as_str());
            let reply = current_join(g, &new, is_leader);
            let record = GroupRecord::Group {
                group: j.group.clone(),
                value: Some(g.to_value(ctx.wall_ms)),
            };
            let p = Proposal::StaticJoin {
                group: j.group.clone(),
                request: id,
                reply,
            };
            self.propose(p, &[record], ctx, fx);
            return;
        }
        g.members.get_mut(&new).expect("just inserted").join = Some(id);
        if state == GroupState::PreparingRebalance {
            self.try_complete_join(&j.group, ctx, fx);
        } else {
            self.prepare_rebalance(&j.group, ctx, fx);
        }
    }

    /// Starts a rebalance (Kafka's `prepareRebalance`).
    fn prepare_rebalance(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let delay = self.config.group_initial_rebalance_delay_ms as Millis;
        let g = self.group_mut(name);
        assert!(g.state != GroupState::Dead, "no rebalance of a dead group");
        if g.state == GroupState::CompletingRebalance {
            reset_syncs(g, GroupError::RebalanceInProgress, fx);
        }
        g.awaiting_sync.clear();
        g.sync_deadline_ms = None;
        let timeout = g.max_rebalance_timeout_ms();
        // A zero delay is no delay: the rebalance completes as soon as everyone joined.
        g.rebalance = Some(if g.state == GroupState::Empty && delay > 0 {
            g.new_member_added = false;
            Rebalance {
                deadline_ms: ctx.now_ms + delay,
                initial_remaining_ms: Some((timeout - delay).max(0)),
            }
        } else {
            Rebalance {
                deadline_ms: ctx.now_ms + timeout,
                initial_remaining_ms: None,
            }
        });
        g.transition(GroupState::PreparingRebalance);
        self.try_complete_join(name, ctx, fx);
    }

    /// Completes the rebalance if every member rejoined (never during the initial delay).
    fn try_complete_join(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let g = self.group_mut(name);
        let initial = g
            .rebalance
            .is_some_and(|r| r.initial_remaining_ms.is_some());
        if g.state == GroupState::PreparingRebalance && !initial && g.all_joined() {
            self.complete_join(name, ctx, fx);
        }
    }

    /// Ends a rebalance: members that did not rejoin leave, the generation increments, and
    /// every JoinGroup gets its reply (the leader with the member list).
    fn complete_join(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let g = self.group_mut(name);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for m in &gone {
            g.remove(m);
        }
        g.rebalance = None;
        g.generation += 1;
        if g.members.is_empty() {
            g.transition(GroupState::Empty);
            g.protocol = None;
            g.leader = None;
            let value = Some(g.to_value(ctx.wall_ms));
            let record = GroupRecord::Group {
                group: name.to_string(),
                value,
            };
            let p = Proposal::Metadata {
                group: name.to_string(),
            };
            self.propose(p, &[record], ctx, fx);
            return;
        }
        g.protocol = Some(g.select_protocol().unwrap_or_default());
        g.leader = g.next_leader();
        g.transition(GroupState::CompletingRebalance);
        g.awaiting_sync = g.members.keys().cloned().collect();
        g.sync_deadline_ms = Some(ctx.now_ms + g.max_rebalance_timeout_ms());
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for m in ids {
            let reply = current_join(g, &m, false);
            let member = g.members.get_mut(&m).expect("listed above");
            member.touch(ctx.now_ms);
            let id = member.join.take().expect("every member rejoined");
            reply_join(fx, id, reply);
        }
    }

    pub(super) fn sync(
        &mut self,
        id: RequestId,
        request: GroupRequest,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let GroupRequest::Sync {
            group,
            generation,
            member_id,
            group_instance_id,
            protocol_type,
            protocol_name,
            assignments,
        } = request
        else {
            unreachable!("sync gets SyncGroup only");
        };
        let Some(g) = self.lead_mut().groups.get_mut(&group) else {
            return reply_sync(fx, id, SyncResult::error(GroupError::UnknownMemberId));
        };
        let mut error =
            validate_member(g, &member_id, group_instance_id.as_deref(), generation).err();
        let type_differs = protocol_type.is_some_and(|t| Some(&t) != g.protocol_type.as_ref());
        let name_differs = protocol_name.is_some_and(|p| Some(&p) != g.protocol.as_ref());
        if error.is_none() && (type_differs || name_differs) {
            error = Some(GroupError::InconsistentGroupProtocol);
        }
        if let Some(e) = error {
            return reply_sync(fx, id, SyncResult::error(e));
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => {
                reply_sync(fx, id, SyncResult::error(GroupError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                reply_sync(fx, id, SyncResult::error(GroupError::RebalanceInProgress))
            }
            GroupState::Stable => {
                g.awaiting_sync.remove(&member_id);
                let m = g.members.get_mut(&member_id).expect("validated");
                m.touch(ctx.now_ms);
                let r = sync_ok(g, &member_id);
                reply_sync(fx, id, r);
            }
            GroupState::CompletingRebalance => {
                self.sync_completing(id, &group, &member_id, assignments, ctx, fx)
            }
        }
    }

    /// A SyncGroup while the leader's assignment is awaited: it waits; the leader's proposes
    /// the assignment.
    fn sync_completing(
        &mut self,
        id: RequestId,
        name: &str,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let g = self.group_mut(name);
        g.awaiting_sync.remove(member_id);
        let m = g.members.get_mut(member_id).expect("validated");
        m.touch(ctx.now_ms);
        if let Some(old) = m.sync.replace(id) {
            reply_sync(fx, old, SyncResult::error(GroupError::RebalanceInProgress));
        }
        if g.leader.as_deref() != Some(member_id) || g.sync_tag.is_some() {
            return;
        }
        let given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
        let mut value = g.to_value(ctx.wall_ms);
        for m in &mut value.members {
            m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
        }
        let record = GroupRecord::Group {
            group: name.to_string(),
            value: Some(value),
        };
        let p = Proposal::Assignment {
            group: name.to_string(),
            assignments: given,
        };
        let tag = self.propose(p, &[record], ctx, fx);
        self.group_mut(name).sync_tag = Some(tag);
    }

    /// The assignment record's outcome: on commit the group is Stable and every waiting
    /// SyncGroup gets its assignment; on failure they get the error and the group rebalances.
    pub(super) fn assignment_done(
        &mut self,
        name: &str,
        tag: u64,
        assignments: BTreeMap<String, Bytes>,
        err: Option<GroupError>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        if !self.coordinating(ctx) {
            return;
        }
        let Some(g) = self.lead_mut().groups.get_mut(name) else {
            return;
        };
        if g.sync_tag != Some(tag) {
            return; // A later rebalance or leadership superseded it.
        }
        assert_eq!(g.state, GroupState::CompletingRebalance);
        g.sync_tag = None;
        if let Some(e) = err {
            reset_syncs(g, e, fx);
            return self.prepare_rebalance(name, ctx, fx);
        }
        for m in g.members.values_mut() {
            m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
        }
        g.transition(GroupState::Stable);
        let waiting: Vec<(String, RequestId)> = g
            .members
            .values_mut()
            .filter_map(|m| m.sync.take().map(|s| (m.id.clone(), s)))
            .collect();
        for (m, id) in waiting {
            reply_sync(fx, id, sync_ok(g, &m));
        }
    }

    pub(super) fn heartbeat(
        &mut self,
        name: &str,
        generation: i32,
        member_id: &str,
        instance: Option<String>,
        ctx: &Ctx,
    ) -> Result<(), GroupError> {
        let g = self
            .lead_mut()
            .groups
            .get_mut(name)
            .ok_or(GroupError::UnknownMemberId)?;
        validate_member(g, member_id, instance.as_deref(), generation)?;
        let m = g.members.get_mut(member_id).expect("validated");
        m.touch(ctx.now_ms);
        match g.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    pub(super) fn leave(
        &mut self,
        name: &str,
        members: Vec<(String, Option<String>)>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) -> LeaveResult {
        let state = self.lead_mut().groups.get(name).map(|g| g.state);
        let top = match state {
            None => Some(GroupError::UnknownMemberId),
            Some(GroupState::Dead) => Some(GroupError::CoordinatorNotAvailable),
            Some(_) => None,
        };
        if let Some(e) = top {
            // Kafka: an unknown group fails each member; a dead one the whole request.
            let error = (e == GroupError::CoordinatorNotAvailable).then_some(e);
            let members = members.into_iter().map(|(m, i)| (m, i, Some(e))).collect();
            return LeaveResult { error, members };
        }
        let mut out = Vec::with_capacity(members.len());
        for (member_id, instance) in members {
            let e = self
                .leave_one(name, &member_id, instance.as_deref(), ctx, fx)
                .err();
            out.push((member_id, instance, e));
        }
        LeaveResult {
            error: None,
            members: out,
        }
    }

    fn leave_one(
        &mut self,
        name: &str,
        member_id: &str,
        instance: Option<&str>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) -> Result<(), GroupError> {
        let g = self.group_mut(name);
        let target = match instance {
            Some(i) => {
                let m = g.instances.get(i).ok_or(GroupError::UnknownMemberId)?;
                if !member_id.is_empty() && m != member_id {
                    return Err(GroupError::FencedInstanceId);
                }
                m.clone()
            }
            None if g.pending.remove(member_id).is_some() => {
                self.try_complete_join(name, ctx, fx);
                return Ok(());
            }
            None if g.members.contains_key(member_id) => member_id.to_string(),
            None => return Err(GroupError::UnknownMemberId),
        };
        self.remove_member(name, &target, ctx, fx);
        Ok(())
    }

    /// Removes a member (left or expired) and lets the group react: a rebalance, or the
    /// rebalance in progress may now complete.
    fn remove_member(&mut self, name: &str, member_id: &str, ctx: &Ctx, fx: &mut Effects) {
        let g = self.group_mut(name);
        let Some(mut m) = g.remove(member_id) else {
            return;
        };
        if let Some(id) = m.join.take() {
            reply_join(
                fx,
                id,
                JoinResult::error(GroupError::UnknownMemberId, member_id),
            );
        }
        if let Some(id) = m.sync.take() {
            reply_sync(fx, id, SyncResult::error(GroupError::UnknownMemberId));
        }
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(name, ctx, fx)
            }
            GroupState::PreparingRebalance => self.try_complete_join(name, ctx, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Session expiries and rebalance deadlines of every group.
    pub(super) fn run_timers(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let names: Vec<String> = self.lead_mut().groups.keys().cloned().collect();
        for name in names {
            self.expire_sessions(&name, ctx, fx);
            self.rebalance_timer(&name, ctx, fx);
            self.sync_timer(&name, ctx, fx);
        }
    }

    /// Members that never sent SyncGroup within the rebalance timeout of their generation
    /// are removed, and the group rebalances without them (a leader that never syncs would
    /// otherwise hold the group in CompletingRebalance).
    fn sync_timer(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let g = self.group_mut(name);
        if g.sync_deadline_ms.is_none_or(|d| ctx.now_ms < d) {
            return;
        }
        assert!(matches!(
            g.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ));
        g.sync_deadline_ms = None;
        let late = std::mem::take(&mut g.awaiting_sync);
        for m in late {
            self.remove_member(name, &m, ctx, fx);
        }
    }

    fn expire_sessions(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let now = ctx.now_ms;
        let g = self.group_mut(name);
        let before = g.pending.len();
        g.pending.retain(|_, deadline| *deadline > now);
        let pending_gone = g.pending.len() < before;
        let expired: Vec<String> = g
            .members
            .values()
            .filter(|m| m.expired(now))
            .map(|m| m.id.clone())
            .collect();
        for m in expired {
            self.remove_member(name, &m, ctx, fx);
        }
        if pending_gone {
            self.try_complete_join(name, ctx, fx);
        }
    }

    fn rebalance_timer(&mut self, name: &str, ctx: &Ctx, fx: &mut Effects) {
        let delay = self.config.group_initial_rebalance_delay_ms as Millis;
        let g = self.group_mut(name);
        let Some(r) = g.rebalance.filter(|r| ctx.now_ms >= r.deadline_ms) else {
            return;
        };
        match r.initial_remaining_ms {
            Some(remaining) if g.new_member_added && remaining > 0 => {
                // New members came during the delay: wait again, within the rebalance timeout.
                g.new_member_added = false;
                let wait = delay.min(remaining);
                g.rebalance = Some(Rebalance {
                    deadline_ms: ctx.now_ms + wait,
                    initial_remaining_ms: Some(remaining - wait),
                });
            }
            _ => self.complete_join(name, ctx, fx),
        }
    }
}

/// Kafka's `validateCurrentMember`: fenced static member, unknown member, wrong generation.
pub(super) fn validate_member(
    g: &LiveGroup,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> Result<(), GroupError> {
    if g.state == GroupState::Dead {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    if g.fenced(member_id, instance) {
        return Err(GroupError::FencedInstanceId);
    }
    if !g.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation != g.generation {
        return Err(GroupError::IllegalGeneration);
    }
    Ok(())
}

/// The JoinGroup reply for `member` in the current generation.
fn current_join(g: &LiveGroup, member: &str, skip_assignment: bool) -> JoinResult {
    let leader = g.leader.clone().unwrap_or_default();
    let members = if leader == member {
        g.join_members()
    } else {
        Vec::new()
    };
    JoinResult {
        error: None,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol.clone(),
        leader,
        skip_assignment,
        member_id: member.to_string(),
        members,
    }
}

fn sync_ok(g: &LiveGroup, member: &str) -> SyncResult {
    SyncResult {
        error: None,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol.clone(),
        assignment: g
            .members
            .get(member)
            .map(|m| m.assignment.clone())
            .unwrap_or_default(),
    }
}

/// Fails every waiting SyncGroup with `e` and forgets the assignment in flight.
fn reset_syncs(g: &mut LiveGroup, e: GroupError, fx: &mut Effects) {
    g.sync_tag = None;
    for m in g.members.values_mut() {
        if let Some(id) = m.sync.take() {
            reply_sync(fx, id, SyncResult::error(e));
        }
    }
}

/// The replies a replaced static member was waiting for: FENCED_INSTANCE_ID.
fn fence_waiters(m: &mut Member, fx: &mut Effects) {
    let e = GroupError::FencedInstanceId;
    if let Some(id) = m.join.take() {
        reply_join(fx, id, JoinResult::error(e, m.id.clone()));
    }
    if let Some(id) = m.sync.take() {
        reply_sync(fx, id, SyncResult::error(e));
    }
}
