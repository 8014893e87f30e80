//! Offsets and the admin requests on the coordinator: OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups, DeleteGroups, OffsetDelete and offset expiry.
//!
//! Writes are answered only once their record commits. Reads answer from the committed
//! state: a leader's committed state includes every commit it acknowledged, because
//! acknowledgements wait for the commit.

use crate::mutation::{self, Mutation};
use std::collections::BTreeSet;

use super::api::{DescribedGroup, FetchedOffset, GroupError, GroupRequest, GroupResponse};
use super::api::{GroupState, ListedGroup, OffsetDeleteResult};
use super::coordinator::{GroupCoordinator, Proposal, EXPIRY_INTERVAL_MS, EXPIRY_RECORDS_MAX};
use super::live::LiveGroup;
use super::membership::validate_member;
use super::records::{subscribed_topics, GroupRecord, OffsetValue};
use crate::api::{RequestId, Response};
use crate::machine::{Ctx, Effects};
use crate::types::TopicPartition;

type PartitionErrors = Vec<(TopicPartition, Option<GroupError>)>;

/// An OffsetCommit's outcome: partitions written get `err` (none when it committed).
pub(super) fn commit_done(
    request: RequestId,
    mut results: PartitionErrors,
    err: Option<GroupError>,
    fx: &mut Effects,
) {
    for (_, e) in results.iter_mut().filter(|(_, e)| e.is_none()) {
        *e = err;
    }
    fx.reply(
        request,
        Response::Group(GroupResponse::OffsetCommit(results)),
    );
}

impl GroupCoordinator {
    pub(super) fn offset_commit(
        &mut self,
        id: RequestId,
        request: GroupRequest,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let GroupRequest::OffsetCommit {
            group,
            generation,
            member_id,
            group_instance_id,
            offsets,
        } = request
        else {
            unreachable!("offset_commit gets OffsetCommit only");
        };
        let checked = self.check_commit(&group, generation, &member_id, group_instance_id);
        if let Err(e) = checked {
            let results = offsets.into_iter().map(|o| (o.0, Some(e))).collect();
            return commit_done(id, results, None, fx);
        }
        // A commit is a sign of life (Kafka refreshes the session too).
        let g = self.group_mut(&group);
        if let Some(m) = g.members.get_mut(&member_id) {
            m.touch(ctx.now_ms);
        }
        let max = self.config.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (tp, offset, leader_epoch, metadata) in offsets {
            let metadata = metadata.unwrap_or_default();
            if metadata.len() > max {
                results.push((tp, Some(GroupError::OffsetMetadataTooLarge)));
                continue;
            }
            let value = Some(OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms: ctx.wall_ms,
            });
            let group = group.clone();
            records.push(GroupRecord::Offset {
                group,
                tp: tp.clone(),
                value,
            });
            results.push((tp, None));
        }
        if records.is_empty() {
            return commit_done(id, results, None, fx);
        }
        if mutation::active(Mutation::AckCommitBeforeCommitted) {
            // Planted bug: the commit is acknowledged as soon as it is proposed.
            commit_done(id, results, None, fx);
            self.propose(Proposal::Metadata { group }, &records, ctx, fx);
            return;
        }
        self.propose(
            Proposal::Commit {
                group: group.clone(),
                request: id,
                results,
            },
            &records,
            ctx,
            fx,
        );
    }

    /// Whether this commit may be written (Kafka 4.x `ClassicGroup.validateOffsetCommit`).
    fn check_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance: Option<String>,
    ) -> Result<(), GroupError> {
        let managed = generation >= 0 || !member_id.is_empty() || instance.is_some();
        let lead = self.lead.as_ref().expect("handlers run while leading");
        let Some(g) = lead.groups.get(group) else {
            // Only a commit with generation -1 creates a group (Kafka's simple consumer); a
            // generation of a group we do not know is from an older coordinator.
            if generation >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            return (!managed).then_some(()).ok_or(GroupError::UnknownMemberId);
        };
        if managed {
            validate_member(g, member_id, instance.as_deref(), generation)?;
        } else if g.state != GroupState::Empty {
            // A group with members is managed: only they commit.
            return Err(GroupError::UnknownMemberId);
        }
        // Commits in PreparingRebalance are allowed (consumers commit while revoking); after
        // the JoinGroup reply the member must sync first.
        if g.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    pub(super) fn offset_fetch(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Vec<FetchedOffset> {
        let committed = self.committed.offsets.get(group);
        let fetched = |tp: TopicPartition, v: Option<&OffsetValue>| FetchedOffset {
            offset: v.map_or(-1, |v| v.offset),
            leader_epoch: v.map_or(-1, |v| v.leader_epoch),
            metadata: Some(v.map(|v| v.metadata.clone()).unwrap_or_default()),
            error: None,
            tp,
        };
        match partitions {
            Some(tps) => tps
                .into_iter()
                .map(|tp| {
                    let v = committed.and_then(|c| c.get(&tp));
                    fetched(tp, v)
                })
                .collect(),
            None => committed
                .into_iter()
                .flatten()
                .map(|(tp, v)| fetched(tp.clone(), Some(v)))
                .collect(),
        }
    }

    pub(super) fn list(&self, states_filter: &[String]) -> GroupResponse {
        let lead = self.lead.as_ref().expect("handlers run while leading");
        let wanted: Vec<Option<GroupState>> =
            states_filter.iter().map(|s| GroupState::parse(s)).collect();
        let groups = lead
            .groups
            .iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .filter(|(_, g)| wanted.is_empty() || wanted.contains(&Some(g.state)))
            .map(|(name, g)| ListedGroup {
                group: name.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        GroupResponse::List(Ok(groups))
    }

    pub(super) fn describe(&self, groups: &[String]) -> Vec<DescribedGroup> {
        let lead = self.lead.as_ref().expect("handlers run while leading");
        groups
            .iter()
            .map(|name| match lead.groups.get(name) {
                Some(g) if g.state != GroupState::Dead => describe_one(name, g),
                _ => DescribedGroup {
                    group: name.clone(),
                    error: None,
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                },
            })
            .collect()
    }

    /// DeleteGroups: Empty groups only; their offsets and metadata get tombstones, and the
    /// group is Dead until they commit.
    pub(super) fn delete_groups(
        &mut self,
        id: RequestId,
        groups: Vec<String>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let mut results = Vec::with_capacity(groups.len());
        let mut records = Vec::new();
        for name in groups {
            let state = self.lead_mut().groups.get(&name).map(|g| g.state);
            let error = match state {
                None | Some(GroupState::Dead) => Some(GroupError::GroupIdNotFound),
                Some(GroupState::Empty) => None,
                Some(_) => Some(GroupError::NonEmptyGroup),
            };
            if error.is_none() && !results.iter().any(|(g, _)| g == &name) {
                records.extend(self.tombstones(&name));
                self.group_mut(&name).transition(GroupState::Dead);
            }
            results.push((name, error));
        }
        if records.is_empty() {
            return fx.reply(id, Response::Group(GroupResponse::Delete(results)));
        }
        self.propose(
            Proposal::Delete {
                request: id,
                results,
            },
            &records,
            ctx,
            fx,
        );
    }

    pub(super) fn delete_done(
        &mut self,
        request: RequestId,
        mut results: Vec<(String, Option<GroupError>)>,
        err: Option<GroupError>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let deleted: Vec<String> = results
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|(g, _)| g.clone())
            .collect();
        self.forget_dead(deleted, err, ctx);
        for (_, e) in results.iter_mut().filter(|(_, e)| e.is_none()) {
            *e = err;
        }
        fx.reply(request, Response::Group(GroupResponse::Delete(results)));
    }

    /// Groups marked Dead for a deletion whose records committed (`err` None) are gone; if it
    /// failed they are what the committed state says.
    fn forget_dead(&mut self, groups: Vec<String>, err: Option<GroupError>, ctx: &Ctx) {
        if !self.coordinating(ctx) {
            return;
        }
        for name in groups {
            let lead = self.lead.as_mut().expect("coordinating");
            if lead
                .groups
                .get(&name)
                .is_none_or(|g| g.state != GroupState::Dead)
            {
                continue;
            }
            if err.is_none() {
                lead.groups.remove(&name);
            } else {
                let live = LiveGroup::load(self.committed.groups.get(&name), ctx.now_ms);
                lead.groups.insert(name, live);
            }
        }
    }

    /// Tombstones for every offset of `group` (committed or in flight) and its metadata.
    fn tombstones(&self, group: &str) -> Vec<GroupRecord> {
        let mut tps = self.partitions_in_flight(group);
        let committed = self.committed.offsets.get(group).into_iter().flatten();
        tps.extend(committed.map(|(tp, _)| tp.clone()));
        let offsets = tps.into_iter().map(|tp| GroupRecord::Offset {
            group: group.to_string(),
            tp,
            value: None,
        });
        let metadata = GroupRecord::Group {
            group: group.to_string(),
            value: None,
        };
        offsets.chain([metadata]).collect()
    }

    pub(super) fn offset_delete(
        &mut self,
        id: RequestId,
        group: String,
        partitions: Vec<TopicPartition>,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let result = self.check_offset_delete(&group, &partitions);
        let records: Vec<GroupRecord> = result
            .partitions
            .iter()
            .filter(|(tp, e)| e.is_none() && self.committed.offset(&group, tp).is_some())
            .map(|(tp, _)| GroupRecord::Offset {
                group: group.clone(),
                tp: tp.clone(),
                value: None,
            })
            .collect();
        if result.error.is_some() || records.is_empty() {
            let r = GroupResponse::OffsetDelete(result);
            return fx.reply(id, Response::Group(r));
        }
        self.propose(
            Proposal::OffsetDelete {
                request: id,
                result,
            },
            &records,
            ctx,
            fx,
        );
    }

    /// OffsetDelete's checks: the group must exist; a topic an active member subscribes to
    /// keeps its offsets.
    fn check_offset_delete(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> OffsetDeleteResult {
        let lead = self.lead.as_ref().expect("handlers run while leading");
        let error = match lead.groups.get(group) {
            None => Some(GroupError::GroupIdNotFound),
            Some(g) if g.state == GroupState::Dead => Some(GroupError::GroupIdNotFound),
            Some(_) => None,
        };
        if let Some(e) = error {
            let partitions = partitions.iter().map(|tp| (tp.clone(), Some(e))).collect();
            return OffsetDeleteResult { error, partitions };
        }
        let subscribed = subscribed(&lead.groups[group]);
        let partitions = partitions
            .iter()
            .map(|tp| {
                let busy = subscribed.contains(&tp.topic);
                (
                    tp.clone(),
                    busy.then_some(GroupError::GroupSubscribedToTopic),
                )
            })
            .collect();
        OffsetDeleteResult {
            error: None,
            partitions,
        }
    }

    pub(super) fn offset_delete_done(
        &mut self,
        request: RequestId,
        mut result: OffsetDeleteResult,
        err: Option<GroupError>,
        fx: &mut Effects,
    ) {
        result.error = err;
        for (_, e) in result.partitions.iter_mut().filter(|(_, e)| e.is_none()) {
            *e = err;
        }
        fx.reply(
            request,
            Response::Group(GroupResponse::OffsetDelete(result)),
        );
    }

    /// Proposes tombstones for the offsets of Empty groups committed longer than
    /// `offsets_retention_ms` ago (wall time: commit timestamps are data), at most once per
    /// [`EXPIRY_INTERVAL_MS`] and [`EXPIRY_RECORDS_MAX`] at a time, one proposal in flight.
    pub(super) fn expire_offsets(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let lead = self.lead_mut();
        let due = lead
            .last_expiry_ms
            .is_none_or(|t| ctx.now_ms - t >= EXPIRY_INTERVAL_MS);
        if lead.expiring || !due {
            return;
        }
        lead.last_expiry_ms = Some(ctx.now_ms);
        let (records, emptied) = self.expired_records(ctx);
        for g in &emptied {
            self.group_mut(g).transition(GroupState::Dead);
        }
        if records.is_empty() {
            return self.forget_dead(emptied, None, ctx);
        }
        self.lead_mut().expiring = true;
        self.propose(Proposal::Expiry { groups: emptied }, &records, ctx, fx);
    }

    /// The tombstones of expired offsets, and the Empty groups they leave with nothing.
    fn expired_records(&self, ctx: &Ctx) -> (Vec<GroupRecord>, Vec<String>) {
        let lead = self.lead.as_ref().expect("leading");
        let cutoff = ctx.wall_ms.saturating_sub(self.config.offsets_retention_ms);
        let busy = self.busy_groups();
        let mut records = Vec::new();
        let mut emptied = Vec::new();
        let idle = lead
            .groups
            .iter()
            .filter(|(name, g)| g.state == GroupState::Empty && !busy.contains(name.as_str()));
        for (name, g) in idle {
            let offsets = self.committed.offsets.get(name);
            let expired: Vec<&TopicPartition> = offsets
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.commit_timestamp_ms <= cutoff)
                .map(|(tp, _)| tp)
                .take(EXPIRY_RECORDS_MAX - records.len())
                .collect();
            let left = offsets.map_or(0, |o| o.len()) - expired.len();
            if left == 0 && g.pending.is_empty() {
                if self.committed.groups.contains_key(name) {
                    let group = name.clone();
                    records.push(GroupRecord::Group { group, value: None });
                }
                emptied.push(name.clone());
            }
            records.extend(expired.into_iter().map(|tp| GroupRecord::Offset {
                group: name.clone(),
                tp: tp.clone(),
                value: None,
            }));
            if records.len() >= EXPIRY_RECORDS_MAX {
                break;
            }
        }
        (records, emptied)
    }

    pub(super) fn expiry_done(&mut self, groups: Vec<String>, err: Option<GroupError>, ctx: &Ctx) {
        if let Some(l) = self.lead.as_mut() {
            l.expiring = false;
        }
        self.forget_dead(groups, err, ctx);
    }
}

fn describe_one(name: &str, g: &LiveGroup) -> DescribedGroup {
    let chosen = matches!(
        g.state,
        GroupState::Stable | GroupState::CompletingRebalance
    );
    DescribedGroup {
        group: name.to_string(),
        error: None,
        state: g.state,
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if chosen {
            g.protocol.clone().unwrap_or_default()
        } else {
            String::new()
        },
        members: g.described_members(),
    }
}

/// Every topic some member's consumer-protocol subscription names (unparsable: none).
fn subscribed(g: &LiveGroup) -> BTreeSet<String> {
    g.members
        .values()
        .flat_map(|m| m.protocols.iter())
        .filter_map(|(_, meta)| subscribed_topics(meta))
        .flatten()
        .collect()
}
