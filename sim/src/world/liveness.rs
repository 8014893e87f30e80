//! The liveness phase and the end of the run. When the fault phase ends everything heals: the
//! network, the disks' faults and capacity, paused and crashed nodes. Halfway through the
//! liveness window the producers stop, and every partition must have committed a new acks=all
//! write since the heal; a second later fresh readers start, and must read every partition up
//! to its high watermark before the end. Every node's metadata must by then register every
//! broker unfenced, hold every workload topic with a leader, and assign it exactly the replicas
//! it hosts. `finish` runs the last white-box checks, requires every acknowledged offset to
//! still hold its value, runs the Jepsen checker and assembles the report.

use std::collections::{BTreeMap, BTreeSet};

use railyard_core::metadata::metadata_tp;
use railyard_core::types::{Offset, TopicPartition};
use railyard_jepsen::{check, CheckOptions, ConsumerMode};

use super::{Event, SimReport, World};
use crate::workload::Role;

impl World {
    pub(super) fn start_liveness(&mut self) {
        self.in_liveness = true;
        self.heal_us = Some(self.now);
        self.net.heal();
        self.net.set_faults_enabled(false);
        self.partition_active = false;
        for id in self.node_ids.clone() {
            let slot = &self.slots[&id];
            slot.disk.set_faults_enabled(false);
            if self.retired.contains(&id) {
                continue; // Decommissioned and stopped for good.
            }
            slot.disk.set_capacity(None);
            if slot.restart_after.is_some() {
                self.crash_now(id, 0);
                self.start_node(id);
            }
            let slot = &self.slots[&id];
            if slot.paused_until.is_some() {
                self.resume(id);
            }
            if self.slots[&id].node.is_none() {
                self.start_node(id);
            }
        }
        let stop = self.now + self.opts.liveness_us / 2;
        self.schedule(stop, Event::StopProducers);
    }

    /// Halfway through the liveness window: the producers stop, and every partition must
    /// have committed a new write since the heal.
    pub(super) fn stop_producers(&mut self) {
        for c in self.workload.clients.iter_mut() {
            if matches!(c.role, Role::Producer { .. } | Role::IdempotentProducer) {
                c.stopped = true;
            }
        }
        self.check_liveness_writes();
        self.schedule(self.now + 1_000_000, Event::FinalReads);
    }

    /// Liveness, part 1: after the heal every partition committed new acks=all writes.
    fn check_liveness_writes(&mut self) {
        let heal = self.heal_us.expect("liveness started");
        for spec in self.specs.clone() {
            let last = self.workload.last_ok_send_us.get(&spec.tp).copied();
            if last.is_none_or(|t| t <= heal) {
                self.violation(format!(
                    "liveness: no acks=all write to {} committed within {} ms after the heal",
                    spec.tp,
                    (self.now - heal) / 1000
                ));
            }
        }
    }

    /// Liveness, part 2: fresh readers read every partition up to its high watermark.
    pub(super) fn start_final_reads(&mut self) {
        self.final_started = true;
        let mut targets = BTreeMap::new();
        for spec in &self.specs {
            let hw = self
                .up_nodes()
                .iter()
                .filter_map(|id| self.slots[id].node.as_ref()?.replica(&spec.tp))
                .map(|r| r.high_watermark())
                .max()
                .unwrap_or(0);
            targets.insert(spec.tp.clone(), hw);
        }
        for c in self.workload.clients.iter_mut() {
            if matches!(c.role, Role::Consumer | Role::GroupConsumer) {
                c.stopped = true;
            }
        }
        let keys: Vec<TopicPartition> = self.specs.iter().map(|s| s.tp.clone()).collect();
        let id = self.workload.add_client(Role::Consumer, keys);
        self.workload.clients[id].final_targets = Some(targets);
        self.client_next(id);
    }

    /// Liveness of the metadata: after the heal every up node's image registers every broker,
    /// unfenced, holds every workload topic, and records a leader for each partition.
    fn check_metadata_liveness(&mut self) {
        let mut problems = Vec::new();
        for id in self.up_nodes() {
            let image = self.slots[&id].node.as_ref().unwrap().metadata();
            for b in &self.node_ids {
                match image.brokers.get(b) {
                    None if self.retired.contains(b) => {}
                    Some(_) if self.retired.contains(b) => problems.push(format!(
                        "liveness: node {id}'s metadata still registers decommissioned broker {b}"
                    )),
                    Some(m) if !m.fenced => {}
                    other => problems.push(format!(
                        "liveness: node {id}'s metadata has broker {b} as {other:?} after the heal"
                    )),
                }
            }
            for s in self.specs.iter().filter(|s| !self.fixed.contains(s)) {
                if !image.topics.contains_key(&s.tp.topic) {
                    problems.push(format!(
                        "liveness: node {id}'s metadata lacks topic {}",
                        s.tp.topic
                    ));
                } else if image.leaders.get(&s.tp).and_then(|l| l.leader).is_none() {
                    problems.push(format!(
                        "liveness: node {id}'s metadata records no leader for {}",
                        s.tp
                    ));
                }
            }
            for b in image
                .decommissioning
                .iter()
                .filter(|b| image.hosts_replicas(**b))
            {
                problems.push(format!(
                    "liveness: node {id}'s metadata still has replicas on decommissioned broker {b}"
                ));
            }
            for (tp, m) in &image.moves {
                let confs: Vec<String> = self
                    .up_nodes()
                    .into_iter()
                    .filter_map(|n| {
                        let r = self.slots[&n].node.as_ref()?.replica(tp)?;
                        let cs = r.conf_state();
                        Some(format!(
                            "{n}{}: voters {:?} learners {:?} commit {}",
                            if r.is_leader() { " (leader)" } else { "" },
                            cs.voters,
                            cs.learners,
                            r.commit_index()
                        ))
                    })
                    .collect();
                problems.push(format!(
                    "liveness: node {id}'s metadata still moves {tp} ({:?} to {:?}; {})",
                    m.original,
                    m.target,
                    confs.join(", ")
                ));
            }
            // The replicas a node hosts are exactly those its image assigns to it: creation
            // and deletion followed the metadata log through every fault.
            let node = self.slots[&id].node.as_ref().unwrap();
            let wanted: BTreeSet<TopicPartition> = image
                .assignments()
                .into_iter()
                .filter(|(_, r)| r.contains(&id))
                .map(|(tp, _)| tp)
                .chain(std::iter::once(metadata_tp()))
                .chain(
                    self.fixed
                        .iter()
                        .filter(|s| s.voters.contains(&id) || Some(&id) == self.node_ids.last())
                        .map(|s| s.tp.clone()),
                )
                .collect();
            let hosted: BTreeSet<TopicPartition> =
                node.replicas().map(|r| r.tp().clone()).collect();
            if hosted != wanted {
                problems.push(format!(
                    "liveness: node {id} hosts {:?} but its image assigns {:?}",
                    hosted.difference(&wanted).collect::<Vec<_>>(),
                    wanted.difference(&hosted).collect::<Vec<_>>()
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    pub(super) fn finish(mut self) -> SimReport {
        self.check_committed_prefixes();
        self.check_metadata();
        self.check_metadata_liveness();
        self.check_clock_scenario();
        self.check_reconfigured();
        self.stats.brokers_unregistered = self
            .up_nodes()
            .first()
            .map(|n| {
                let image = self.slots[n].node.as_ref().expect("up").metadata();
                self.retired
                    .iter()
                    .filter(|b| image.unregistered.contains(b))
                    .count()
            })
            .unwrap_or(0) as u64;
        self.stats.joins_admitted = self
            .node_ids
            .iter()
            .filter(|id| !self.bootstrap.contains(id))
            .filter(|id| {
                self.slots[id]
                    .node
                    .as_ref()
                    .is_some_and(|n| !n.is_joining())
            })
            .count() as u64;
        let preferred = |w: &World, s: &railyard_core::node::PartitionSpec| {
            let image = w.controller_image();
            let assigned = image.and_then(|i| {
                i.topics
                    .get(&s.tp.topic)?
                    .partitions
                    .get(&s.tp.partition)?
                    .first()
                    .copied()
            });
            assigned.or(s.voters.first().copied())
        };
        self.stats.preferred_leaders = self
            .specs
            .iter()
            .filter(|s| self.leader_of(&s.tp) == preferred(&self, s))
            .count() as u64;
        self.stats.replicas_created_late = self
            .up_nodes()
            .iter()
            .map(|id| {
                self.slots[id]
                    .node
                    .as_ref()
                    .unwrap()
                    .stats()
                    .replicas_created_late
            })
            .sum();
        self.stats.leaders_recorded = self
            .up_nodes()
            .iter()
            .map(|id| {
                self.slots[id]
                    .node
                    .as_ref()
                    .unwrap()
                    .metadata()
                    .leaders
                    .len() as u64
            })
            .sum();
        let final_done = self
            .workload
            .clients
            .iter()
            .filter(|c| c.final_targets.is_some())
            .all(|c| c.stopped && c.in_flight.is_none());
        if !self.final_started || !final_done {
            self.violation("liveness: final reads did not reach the high watermark in time".into());
        }
        // Every acknowledged (acks=all) offset still holds its value in the committed log.
        let acked: Vec<(TopicPartition, Offset, u64)> = self
            .workload
            .history
            .events()
            .iter()
            .filter_map(|e| match (&e.kind, &e.op) {
                (
                    railyard_jepsen::EventType::Ok,
                    railyard_jepsen::Op::Send {
                        key,
                        value,
                        offset: Some(o),
                    },
                ) => {
                    let tp = self
                        .specs
                        .iter()
                        .find(|s| s.tp.to_string() == *key)?
                        .tp
                        .clone();
                    Some((tp, *o, *value))
                }
                _ => None,
            })
            .collect();
        for (tp, off, v) in acked {
            if let Some(c) = self.committed_values.get(&(tp.clone(), off)) {
                if *c != v {
                    self.violation(format!("{tp}: acked {v} at {off} but the log holds {c}"));
                }
            }
        }
        let check = check(
            &self.workload.history,
            &CheckOptions {
                final_reads_done: final_done,
                mode: ConsumerMode::Assign,
            },
        );
        for name in check.errors() {
            self.violation(format!("checker: {name}"));
        }
        let w = &self.workload;
        self.stats.acked_all = w.acked_all;
        self.stats.acked_leader = w.acked_leader;
        self.stats.send_fail = w.send_fail;
        self.stats.send_refused_disk_full = w.send_refused_disk_full;
        self.stats.send_info = w.send_info;
        self.stats.polls_ok = w.polls_ok;
        self.stats.idempotent_retries = w.idempotent_retries;
        self.stats.idempotent_resets = w.idempotent_resets;
        for g in w.groups.values() {
            self.stats.group_commits_acked += g.commits_acked;
            self.stats.group_joins += g.rebalances;
            self.stats.group_crashes += g.crashes;
            self.stats.group_resumes_checked += g.resumes_checked;
        }
        self.stats.values_read = w.values_read;
        self.stats.net = self.net.stats();
        for slot in self.slots.values() {
            let d = slot.disk.stats();
            let t = &mut self.stats.disk;
            t.writes += d.writes;
            t.bytes_written += d.bytes_written;
            t.syncs += d.syncs;
            t.reads += d.reads;
            t.read_errors += d.read_errors;
            t.no_space += d.no_space;
            t.crashes += d.crashes;
            t.ops_lost += d.ops_lost;
            t.torn_writes += d.torn_writes;
            t.flips += d.flips;
        }
        SimReport {
            seed: self.opts.seed,
            faults: self.opts.faults.to_string(),
            trace_hash: self.trace,
            sim_us: self.now,
            violations: self.violations,
            check,
            stats: self.stats,
            history: self
                .opts
                .keep_history
                .then(|| self.workload.history.clone()),
            options: self.opts,
        }
    }
}
