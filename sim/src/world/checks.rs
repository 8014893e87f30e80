//! White-box checkers: properties of the nodes' internal state that the Jepsen history cannot
//! see. After every step of a node (`check_node`): one leader per (partition, term), and a high
//! watermark within the log that never moves backwards. Every `PREFIX_CHECK_US` and at the end:
//! every replica's committed prefix agrees with the others' and holds only records some client
//! sent, each at one offset (`check_committed_prefixes`); metadata images that applied the same
//! records agree, and every leader they or the published view name really led in that term
//! (`check_metadata`). At the end: the scenarios' own outcomes (clock steps fenced no broker;
//! the reconfiguration finished in the intended configuration).

use std::collections::{BTreeMap, BTreeSet};

use raft::StateRole;
use railyard_core::batch::decode_records;
use railyard_core::metadata::metadata_tp;
use railyard_core::producers::ProducerTable;
use railyard_core::replica::Replica;
use railyard_core::types::{is_internal_topic, NodeId, TopicPartition};

use super::scenarios::RECONFIG_TOPIC;
use super::{NodeSlot, Scenario, World};
use crate::workload::record_value;

/// The producer table's uncommitted tail names only batches this replica's raft log holds, at
/// the term it holds them: a batch of a dropped suffix that still counted would make the
/// leader refuse a retry as a duplicate, or admit one as in sequence.
fn producer_tail_problems(id: NodeId, r: &Replica) -> Vec<String> {
    let Some(table) = r
        .machine()
        .and_then(|m| m.as_any().downcast_ref::<ProducerTable>())
    else {
        return Vec::new();
    };
    table
        .tail()
        .filter(|(index, term)| r.log_term(*index) != Some(*term))
        .map(|(index, term)| {
            format!(
                "node {id} {}: producer table holds entry {index} of term {term}, the log {:?}",
                r.tp(),
                r.log_term(index)
            )
        })
        .collect()
}

impl World {
    /// White-box checks after every step of a node: one leader per term, watermarks and commit
    /// indexes never move backwards.
    pub(super) fn check_node(&mut self, id: NodeId) {
        let Some(node) = self.slots[&id].node.as_ref() else {
            return;
        };
        let mut problems = Vec::new();
        // A replica deleted here (a move took it away) starts again from nothing if it comes
        // back: its watermark history goes with it.
        let version = (self.slots[&id].incarnation, node.replica_set_version());
        if self.replica_sets_seen.get(&id).map(|(v, _)| *v) != Some(version) {
            let hosted: BTreeSet<usize> = node
                .replicas()
                .map(|r| tp_key(&mut self.tp_index, r.tp()))
                .collect();
            let stale: Vec<(NodeId, usize)> = self
                .hw_seen
                .range((id, 0)..=(id, usize::MAX))
                .map(|(k, _)| *k)
                .filter(|(_, i)| !hosted.contains(i))
                .collect();
            for k in stale {
                self.hw_seen.remove(&k);
            }
            let opened: BTreeSet<usize> = match self.replica_sets_seen.remove(&id) {
                Some(((incarnation, _), before)) if incarnation == version.0 => {
                    hosted.difference(&before).copied().collect()
                }
                _ => hosted.clone(),
            };
            problems.extend(self.forgotten_voters(id, &opened));
            self.replica_sets_seen.insert(id, (version, hosted));
        }
        for r in node.replicas() {
            let st = r.status();
            let tp = r.tp();
            if r.storage().durable_commit() > 0 {
                let key = (id, tp_key(&mut self.tp_index, tp));
                self.durable_replicas.insert(key);
            }
            if st.role == StateRole::Leader {
                let key = (tp_key(&mut self.tp_index, tp), st.term);
                match self.leaders.get(&key) {
                    Some(other) if *other != id => problems.push(format!(
                        "two leaders for {tp} in term {}: {other} and {id}",
                        st.term
                    )),
                    Some(_) => {}
                    None => {
                        self.stats.leader_changes += 1;
                        self.leaders.insert(key, id);
                    }
                }
            }
            if st.high_watermark > st.log_end_offset {
                problems.push(format!(
                    "node {id} {tp}: high watermark {} beyond log end {}",
                    st.high_watermark, st.log_end_offset
                ));
            }
            problems.extend(producer_tail_problems(id, r));
            let acked = self.acked_starts.get(tp);
            let up_to_term = acked.and_then(|m| m.range(..=st.term).map(|(_, o)| *o).max());
            let deleted_to = up_to_term.unwrap_or(0);
            if st.role == StateRole::Leader && st.log_start_offset < deleted_to {
                problems.push(format!(
                    "node {id} {tp}: leader serves from offset {}, below an acknowledged \
                     DeleteRecords start {deleted_to}",
                    st.log_start_offset
                ));
            }
            let key = (id, tp_key(&mut self.tp_index, tp));
            // A replica deleted and created again between two looks starts from nothing.
            let generation = (self.slots[&id].incarnation, node.replica_generation(tp));
            let seen = self.hw_generations.insert(key, generation);
            if seen.is_some_and(|(inc, g)| inc == generation.0 && g != generation.1) {
                self.hw_seen.remove(&key);
            }
            let prev = self.hw_seen.insert(key, st.high_watermark);
            if prev.is_some_and(|p| st.high_watermark < p) {
                problems.push(format!(
                    "node {id} {tp}: high watermark went backwards {:?} -> {}",
                    prev, st.high_watermark
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Every up node's client replicas run with the settings their node's image gives (see
    /// [`World::settings_problems`]); with the prefix checks, not after every step, as it
    /// resolves every replica's configs.
    pub(super) fn check_settings(&mut self) {
        let problems: Vec<String> = self
            .up_nodes()
            .into_iter()
            .flat_map(|id| self.settings_problems(id))
            .collect();
        for p in problems {
            self.violation(p);
        }
    }

    /// Every client replica on node `id` runs with the log settings its node's image gives:
    /// the topic's overrides over the broker-level defaults (dynamic ones included), so an
    /// alter of either reaches every live replica.
    fn settings_problems(&self, id: NodeId) -> Vec<String> {
        let Some(node) = self.slots[&id].node.as_ref() else {
            return Vec::new();
        };
        let image = node.metadata();
        let defaults = node.topic_defaults();
        let mut out = Vec::new();
        for r in node.replicas() {
            let tp = r.tp();
            let Some(topic) = image.topics.get(&tp.topic) else {
                continue; // fixed (not in the metadata log) or being deleted
            };
            if railyard_core::metadata::is_internal_topic(&tp.topic) {
                continue;
            }
            let want =
                railyard_core::node::log_config_for(&self.opts.log, &defaults, &topic.configs);
            let have = r.storage().log().config();
            if *have != want {
                out.push(format!(
                    "node {id} {tp}: log settings {have:?}, but the image gives {want:?}"
                ));
            }
        }
        out
    }

    /// Every replica's committed prefix agrees: same (term, checksum) at every committed index,
    /// and every record in it was sent by some client, at one offset only.
    pub(super) fn check_committed_prefixes(&mut self) {
        let mut new_violations = Vec::new();
        for id in self.up_nodes() {
            let node = self.slots[&id].node.as_ref().unwrap();
            for r in node.replicas() {
                let tp = r.tp().clone();
                let log = r.storage().log();
                let commit = r.storage().durable_commit().min(log.last_index());
                let key = (id, tp.clone());
                let from = self
                    .prefix_checked
                    .get(&key)
                    .copied()
                    .unwrap_or(0)
                    .max(log.first_index() - 1);
                if from >= commit {
                    continue;
                }
                let Ok(entries) = log.entries(from + 1, commit + 1, None) else {
                    continue; // an injected read error: check next time
                };
                let reference = self.committed.entry(tp.clone()).or_default();
                for e in &entries {
                    let sum = crc32c::crc32c(&e.data);
                    match reference.get(&e.index) {
                        Some(&(term, c)) if (term, c) != (e.term, sum) => {
                            new_violations.push(format!(
                                "{tp}: committed entry {} differs on node {id}: term {} vs {term}",
                                e.index, e.term
                            ))
                        }
                        Some(_) => {}
                        None => {
                            reference.insert(e.index, (e.term, sum));
                        }
                    }
                    // Internal topics' records are the cluster's, not the workload's.
                    if e.record_count == 0 || is_internal_topic(&tp.topic) {
                        continue;
                    }
                    let Ok(records) = decode_records(&e.data) else {
                        new_violations
                            .push(format!("{tp}: committed batch at {} undecodable", e.index));
                        continue;
                    };
                    for rec in records {
                        let Some(v) = record_value(&rec) else {
                            new_violations
                                .push(format!("{tp}: record at {} not a value", rec.offset));
                            continue;
                        };
                        if self.workload.sent_values.get(&v) != Some(&tp) {
                            new_violations.push(format!(
                                "{tp}: record {v} at {} was never sent to this partition",
                                rec.offset
                            ));
                        }
                        match self.committed_values.get(&(tp.clone(), rec.offset)) {
                            Some(old) if *old != v => new_violations.push(format!(
                                "{tp}: offset {} holds {v} on node {id} but {old} elsewhere",
                                rec.offset
                            )),
                            Some(_) => {}
                            None => {
                                self.committed_values.insert((tp.clone(), rec.offset), v);
                            }
                        }
                    }
                }
                self.stats.committed_entries_checked += entries.len() as u64;
                self.prefix_checked.insert(key, commit);
            }
        }
        for v in new_violations {
            self.violation(v);
        }
    }

    /// White-box checks of the metadata image on every up node: two nodes that applied the same
    /// number of records hold the same image; every recorded leadership names the node that
    /// really led the partition in that term (as `check_node` saw it); and every leader the
    /// published view names is in its broker list.
    /// A replica that node `id` opened fresh (no raft state on disk) where it had durable raft
    /// state before, while every other replica of the partition still counts it a voter: it
    /// lost the log and the votes the others count on (a deletion before the configuration
    /// without it committed). Only a removed replica's data may go.
    fn forgotten_voters(&self, id: NodeId, opened: &BTreeSet<usize>) -> Vec<String> {
        let Some(node) = self.slots[&id].node.as_ref() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for (tp, report) in node.open_reports() {
            let Some(i) = self.tp_index.get(tp).filter(|i| opened.contains(i)) else {
                continue;
            };
            if !report.fresh || !self.durable_replicas.contains(&(id, *i)) {
                continue;
            }
            let others: Vec<bool> = self
                .up_nodes()
                .into_iter()
                .filter(|o| *o != id)
                .filter_map(|o| self.slots[&o].node.as_ref()?.replica(tp))
                .map(|r| r.conf_state().voters.contains(&id))
                .collect();
            if !others.is_empty() && others.iter().all(|v| *v) {
                problems.push(format!(
                    "{tp}: node {id} opened a fresh replica after holding durable state, while \
                     every other replica counts it a voter"
                ));
            }
        }
        problems
    }

    /// Every learner a move promoted had caught up: its log (on its own node, read here, not
    /// as the leader believes) reaches the commit index the leader had when it proposed the
    /// promotion. A learner that is down is checked at none of its promotions: its durable
    /// log is what a restart reads, and the leader's count of it was only ever of acks sent
    /// after syncing.
    pub(super) fn check_promotions(&mut self, id: NodeId) {
        let promotions = match self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
            Some(node) => node.take_promotions(),
            None => return,
        };
        for p in promotions {
            let log_end = self.slots[&p.learner]
                .node
                .as_ref()
                .and_then(|n| n.replica(&p.tp))
                .map(|r| r.storage().log().last_index());
            if let Some(end) = log_end.filter(|end| *end < p.commit) {
                self.violation(format!(
                    "{}: node {id} promoted learner {} at commit {} with its log ending at {end}",
                    p.tp, p.learner, p.commit
                ));
            }
        }
    }

    pub(super) fn check_metadata(&mut self) {
        let mut problems = self.identity_problems();
        problems.extend(self.metadata_conf_problems());
        let mut by_count: BTreeMap<u64, (NodeId, railyard_core::metadata::MetadataImage)> =
            BTreeMap::new();
        for id in self.up_nodes() {
            let image = self.slots[&id].node.as_ref().unwrap().metadata();
            for b in image.brokers.values().filter(|b| b.fenced) {
                if self.fenced_seen.insert((b.id, b.incarnation)) {
                    self.stats.brokers_fenced += 1;
                }
            }
            match by_count.get(&image.records_applied) {
                Some((other, seen)) if seen != image => problems.push(format!(
                    "metadata images differ after {} records: node {id} vs node {other}",
                    image.records_applied
                )),
                Some(_) => {}
                None => {
                    by_count.insert(image.records_applied, (id, image.clone()));
                }
            }
            // The published view (core's rules, as the runtime answers Metadata) never names
            // a leader that another node was in that term.
            let node = self.slots[&id].node.as_ref().unwrap();
            let topics = railyard_core::view::topics(node);
            problems.extend(unlisted_leaders(node, &self.slots, &topics));
            for t in topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.clone(), p.partition);
                    let (Some(leader), Some(&idx)) = (p.leader, self.tp_index.get(&tp)) else {
                        continue;
                    };
                    match self.leaders.get(&(idx, p.leader_epoch as u64)) {
                        Some(real) if *real != leader => problems.push(format!(
                            "node {id}'s view names {leader} leader of {tp} in term {}, \
                             but the leader then was {real}",
                            p.leader_epoch
                        )),
                        _ => {}
                    }
                }
            }
            for (tp, l) in &image.leaders {
                let (Some(leader), Some(&idx)) = (l.leader, self.tp_index.get(tp)) else {
                    continue;
                };
                match self.leaders.get(&(idx, l.epoch)) {
                    Some(real) if *real == leader => {}
                    real => problems.push(format!(
                        "node {id}: metadata records {leader} as leader of {tp} in term {}, \
                         but the leader then was {real:?}",
                        l.epoch
                    )),
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Nodes that applied the metadata log to the same index agree on its raft configuration:
    /// a joiner replays it from the configuration at index 0 it was admitted with, and a
    /// wrong one would leave it with members the others do not have, or without some.
    fn metadata_conf_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut by_applied: BTreeMap<u64, (NodeId, [Vec<NodeId>; 4])> = BTreeMap::new();
        for id in self.up_nodes() {
            let node = self.slots[&id].node.as_ref().unwrap();
            let Some(r) = node.replica(&metadata_tp()) else {
                continue;
            };
            let cs = r.conf_state();
            let mut conf = [
                cs.voters.clone(),
                cs.learners.clone(),
                cs.voters_outgoing.clone(),
                cs.learners_next.clone(),
            ];
            conf.iter_mut().for_each(|ids| ids.sort_unstable());
            let applied = r.status().applied;
            match by_applied.get(&applied) {
                Some((other, seen)) if *seen != conf => problems.push(format!(
                    "metadata configuration at applied index {applied}: node {id} has \
                     {conf:?}, node {other} {seen:?}"
                )),
                Some(_) => {}
                None => {
                    by_applied.insert(applied, (id, conf));
                }
            }
        }
        problems
    }

    /// Every node's directory belongs to the one cluster the metadata log names, from the
    /// moment its image names it.
    fn identity_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut first: Option<(NodeId, String)> = None;
        for id in self.up_nodes() {
            let node = self.slots[&id].node.as_ref().unwrap();
            let stored = node.cluster_id();
            if let Some(c) = &node.metadata().cluster {
                if stored != Some(c.cluster_id.as_str()) {
                    problems.push(format!(
                        "node {id}'s image names cluster {} but its directory {stored:?}",
                        c.cluster_id
                    ));
                }
            }
            match (&first, stored) {
                (Some((other, seen)), Some(s)) if seen != s => problems.push(format!(
                    "node {id} belongs to cluster {s}, node {other} to {seen}"
                )),
                (None, Some(s)) => first = Some((id, s.to_string())),
                _ => {}
            }
        }
        problems
    }

    /// The clock scenario: steps and skews of the wall clock fence no broker (every timer runs
    /// on the monotonic clock), and the nodes noticed the steps.
    pub(super) fn check_clock_scenario(&mut self) {
        if self.opts.scenario != Scenario::ClockSteps {
            return;
        }
        if self.stats.brokers_fenced > 0 {
            self.violation(format!(
                "clock steps fenced {} broker incarnations",
                self.stats.brokers_fenced
            ));
        }
        let noticed: u64 = self
            .up_nodes()
            .iter()
            .map(|id| self.slots[id].node.as_ref().expect("up").clock_steps())
            .sum();
        if self.stats.clock_steps == 0 || noticed == 0 {
            self.violation(format!(
                "clock scenario: {} steps injected, {noticed} noticed",
                self.stats.clock_steps
            ));
        }
    }

    /// The scenario's end state: every up member of `r-0`'s final configuration holds it, with
    /// the joiner a voter and the removed voter gone.
    pub(super) fn check_reconfigured(&mut self) {
        if self.opts.scenario != Scenario::Reconfigure {
            return;
        }
        let tp = TopicPartition::new(RECONFIG_TOPIC, 0);
        if !self.reconfig.done {
            self.violation(format!(
                "reconfiguration of {tp} did not finish ({} proposals)",
                self.reconfig.proposals
            ));
            return;
        }
        let joiner = *self.node_ids.last().expect("nodes");
        let removed = self.reconfig.removed.expect("chosen before done");
        let mut want: Vec<NodeId> = [1, 2, 3, joiner]
            .into_iter()
            .filter(|n| *n != removed)
            .collect();
        want.sort_unstable();
        let mut problems = Vec::new();
        for id in want.clone() {
            let Some(r) = self.slots[&id].node.as_ref().and_then(|n| n.replica(&tp)) else {
                continue;
            };
            let cs = r.conf_state();
            let mut voters = cs.voters.clone();
            voters.sort_unstable();
            if voters != want || !cs.voters_outgoing.is_empty() {
                problems.push(format!(
                    "node {id}: {tp} ends with configuration {cs:?}, not {want:?}"
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }
}

/// The white-box key of a partition: its index, assigned on first sight (workload partitions
/// and the metadata partition first, then churn topics as nodes create them).
pub(super) fn tp_key(index: &mut BTreeMap<TopicPartition, usize>, tp: &TopicPartition) -> usize {
    if let Some(i) = index.get(tp) {
        return *i; // The hot path (every replica after every step): no clone.
    }
    let next = index.len();
    index.insert(tp.clone(), next);
    next
}

/// The leaders `node`'s view names that its broker list leaves out (a client told of such a
/// leader cannot reach it): one problem each. The configured brokers are every node of the
/// world, as the runtime is configured with every broker.
fn unlisted_leaders(
    node: &railyard_core::node::Node,
    slots: &BTreeMap<NodeId, NodeSlot>,
    topics: &[railyard_core::view::TopicView],
) -> Vec<String> {
    let configured: Vec<railyard_core::view::BrokerInfo> = slots
        .keys()
        .map(|&id| railyard_core::view::BrokerInfo {
            id,
            host: format!("node-{id}"),
            port: 9092,
            rack: None,
        })
        .collect();
    let listed: Vec<NodeId> = railyard_core::view::brokers(node, &configured, topics)
        .iter()
        .map(|b| b.id)
        .collect();
    let mut problems = Vec::new();
    for t in topics {
        for p in &t.partitions {
            if let Some(leader) = p.leader.filter(|l| !listed.contains(l)) {
                problems.push(format!(
                    "node {}'s view names {leader} leader of {}/{} but lists brokers {listed:?}",
                    node.id(),
                    t.name,
                    p.partition
                ));
            }
        }
    }
    problems
}
