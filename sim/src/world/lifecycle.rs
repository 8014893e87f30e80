//! Node lifecycle: the event handlers that run a node. A node opens from its config on its disk
//! (`start_node`, which also checks that no high watermark went backwards across the restart
//! unless recovery repaired the replica) and is stepped by one bounded `pump` after every input:
//! a tick, a delivery, a client request. It stops in one of three ways: a crash (now, or armed
//! to die mid-step after a few disk operations, so that step's unsynced writes are lost or
//! torn), a fail-stop (a step failed), or a graceful stop (leaderships handed over, nothing
//! lost). A paused node holds its deliveries and requests until it resumes. The clients' side is
//! here too: requests and replies travel with `CLIENT_LATENCY_US` and are never partitioned.

use std::rc::Rc;

use railyard_core::api::{Request, Response};
use railyard_core::disk::Disk;
use railyard_core::groups::GroupConfig;
use railyard_core::network::{Envelope, Network};
use railyard_core::node::{BrokerEndpoint, Node, NodeConfig};
use railyard_core::replica::ReplicaConfig;
use railyard_core::types::NodeId;
use rand::Rng;

use super::checks::tp_key;
use super::{Event, Scenario, World, TICK_US};

/// `__consumer_offsets` partitions in the simulated cluster: few, so each sees traffic.
pub(super) const OFFSETS_PARTITIONS: u32 = 3;
use crate::workload::WALL_EPOCH_MS;

/// Latency between a client and a node (clients are not partitioned from nodes).
const CLIENT_LATENCY_US: (u64, u64) = (100, 1_000);

/// Most consecutive steps one input may trigger (each step is one raft `Ready`).
const STEPS_PER_INPUT_MAX: usize = 8;

/// How many nodes (the first ones) vote in the metadata group; the others are learners.
const METADATA_VOTERS_MAX: usize = 3;

/// How long a gracefully stopping node keeps running to hand its leaderships over (the
/// runtime waits up to 3 s; the handover takes about one round trip).
const HANDOVER_US: u64 = 300_000;

/// How often a leader hands leadership back to its partition's preferred replica.
const PREFERRED_LEADER_CHECK_MS: i64 = 2_000;

/// The nodes' disk reserve (`NodeConfig::min_free_bytes`).
pub(super) const MIN_FREE_BYTES: u64 = 64 * 1024;

/// Collects envelopes during a node step.
#[derive(Default)]
struct Collect(Vec<Envelope>);

impl Network for Collect {
    fn send(&mut self, envelope: Envelope) {
        self.0.push(envelope);
    }
}

/// `ReplicaConfig::snapshot_entries` of simulated nodes (10,000 by default).
const SNAPSHOT_ENTRIES: u64 = 500;

impl World {
    pub(super) fn is_paused(&self, id: NodeId) -> bool {
        self.slots[&id].paused_until.is_some()
    }

    fn node_config(&self, id: NodeId, incarnation: u64) -> NodeConfig {
        let joins = !self.bootstrap.contains(&id);
        NodeConfig {
            id,
            seed: self.opts.seed ^ (id << 32) ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            replica: ReplicaConfig {
                produce_timeout_ms: 1_500,
                isr_lag_ms: 1_000,
                // Machine snapshots (and the log compaction behind them) every few hundred
                // entries, so snapshot, restore and install run often within a run.
                snapshot_entries: SNAPSHOT_ENTRIES,
                ..ReplicaConfig::default()
            },
            log: self.opts.log.clone(),
            // Every partition comes from the metadata log, as on real nodes: the admin client
            // creates the workload's topics (with the specs' assignments) and churns others,
            // so replica creation and deletion run under the same faults as everything else.
            // Fixed partitions: on their voters, and on the reconfiguration's joiner.
            partitions: self
                .fixed
                .iter()
                .filter(|s| s.voters.contains(&id) || Some(&id) == self.node_ids.last())
                .cloned()
                .collect(),
            retention_check_ms: 1_000,
            metadata_voters: self
                .bootstrap
                .iter()
                .copied()
                .take(METADATA_VOTERS_MAX)
                .collect(),
            // A joiner's config names the cluster it joins and itself; nobody else's names it.
            brokers: if joins {
                self.bootstrap.iter().copied().chain([id]).collect()
            } else {
                self.bootstrap.clone()
            },
            endpoint: Some(BrokerEndpoint {
                host: format!("sim-node-{id}"),
                port: 9092,
                rack: Some(format!("rack-{}", id % 2)),
                raft: None,
            }),
            heartbeat_ms: 100,
            session_timeout_ms: 800,
            preferred_leader_check_ms: Some(PREFERRED_LEADER_CHECK_MS),
            min_free_bytes: MIN_FREE_BYTES,
            offsets_partitions: OFFSETS_PARTITIONS,
            producer_expiration_ms: railyard_core::producers::PRODUCER_EXPIRATION_MS_DEFAULT,
            topic_defaults: Default::default(),
            group: GroupConfig {
                group_min_session_timeout_ms: 100,
                group_initial_rebalance_delay_ms: 200,
                ..GroupConfig::default()
            },
            join: joins,
        }
    }

    pub(super) fn start_node(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).unwrap();
        slot.incarnation += 1;
        let inc = slot.incarnation;
        let disk: Rc<dyn Disk> = slot.disk.clone();
        let config = self.node_config(id, inc);
        let logger = crate::log::node_logger();
        match Node::open(config, disk, &logger) {
            Ok(node) => {
                for (tp, report) in node.open_reports() {
                    if report.corruption {
                        self.stats.corruption_recoveries += 1;
                    } else if report.truncated_from_index.is_some() {
                        self.stats.torn_recoveries += 1;
                    }
                    let key = (id, tp_key(&mut self.tp_index, tp));
                    let hw = node.replica(tp).unwrap().high_watermark();
                    let repairing = node.replica(tp).unwrap().is_repairing();
                    if report.corruption || report.commit_clamped_from.is_some() || repairing {
                        // Repair legitimately lowers this replica's own watermark (also when an
                        // earlier, failed start already truncated and persisted the repair).
                        self.hw_seen.insert(key, hw);
                        let checked = node.replica(tp).unwrap().storage().durable_commit();
                        if let Some(c) = self.prefix_checked.get_mut(&(id, tp.clone())) {
                            *c = (*c).min(checked);
                        }
                    } else if let Some(prev) = self.hw_seen.get(&key) {
                        if hw < *prev {
                            self.violation(format!(
                                "node {id} {tp}: high watermark went backwards across restart {prev} -> {hw}"
                            ));
                        }
                    }
                }
                self.slots.get_mut(&id).unwrap().node = Some(node);
                self.stats.restarts += 1;
                self.pump(id);
            }
            Err(_) => {
                // E.g. a read error during recovery: try again later, as a supervisor would.
                self.stats.failed_restarts += 1;
                self.schedule(self.now + 500_000, Event::Restart(id));
            }
        }
    }

    /// A raft tick of `id`. The next tick is scheduled whether the node is up, down or paused,
    /// so each node keeps the tick phase drawn at boot.
    pub(super) fn tick(&mut self, id: NodeId) {
        self.trace(1, id, 0);
        self.schedule(self.now + TICK_US, Event::Tick(id));
        if self.is_paused(id) {
            return;
        }
        let now_ms = (self.now / 1000) as i64;
        let res = match self.slots.get_mut(&id).and_then(|s| s.node.as_mut()) {
            Some(node) => node.tick(now_ms, WALL_EPOCH_MS + now_ms + self.wall_offset_ms[&id]),
            None => return,
        };
        if let Err(e) = res {
            self.fail_stop(id, &e.to_string());
            return;
        }
        self.check_promotions(id);
        self.pump(id);
    }

    /// A message reaches `to`, unless the network loses it in flight: held while `to` is
    /// paused, lost while it is down.
    pub(super) fn deliver(&mut self, env: Envelope) {
        let (from, to) = (env.from, env.to);
        self.trace(2, from, to);
        if !self.net.on_deliver(from, to) {
            return;
        }
        if self.is_paused(to) {
            self.slots
                .get_mut(&to)
                .unwrap()
                .held
                .push(Event::Deliver(env));
            return;
        }
        let Some(node) = self.slots.get_mut(&to).and_then(|s| s.node.as_mut()) else {
            return;
        };
        let refused = node.stats().appends_refused_disk_low;
        node.handle_envelope(env);
        self.stats.appends_refused_disk_low += node.stats().appends_refused_disk_low - refused;
        self.pump(to);
    }

    /// A client request reaches `node`: held while it is paused, refused while it is down.
    pub(super) fn arrive(
        &mut self,
        node: NodeId,
        client: usize,
        request_id: u64,
        request: Request,
    ) {
        self.trace(3, node, request_id);
        if self.is_paused(node) {
            let ev = Event::Arrive {
                node,
                client,
                request_id,
                request,
            };
            self.slots.get_mut(&node).unwrap().held.push(ev);
            return;
        }
        let now_ms = (self.now / 1000) as i64;
        let Some(n) = self.slots.get_mut(&node).and_then(|s| s.node.as_mut()) else {
            return; // connection refused: the client times out
        };
        // Request ids are unique per run; the client is recovered from the reply map.
        n.handle_request(now_ms, request_id, request);
        self.route.insert(request_id, client);
        self.pump(node);
    }

    /// Crash: the process dies. A quarter of the time it dies right now, between two steps;
    /// otherwise in the middle of one of its next steps, after a few disk operations, so that
    /// the step's writes are unsynced and may be lost or torn (the interesting case, and rare
    /// enough per crash that the swarm needs it often to see torn writes).
    pub(super) fn crash(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() || slot.restart_after.is_some() {
            return;
        }
        if self.rngs.process.gen_bool(0.25) {
            self.crash_now(id, restart_after);
            return;
        }
        let ops = self.rngs.process.gen_range(1..16);
        self.arm_mid_step_crash(id, ops, restart_after);
    }

    /// Makes `id` die after `ops` more mutating disk operations (inside a step, so that step's
    /// writes are unsynced), or in 500 ms if it does not write that much by then.
    pub(super) fn arm_mid_step_crash(&mut self, id: NodeId, ops: u64, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        slot.disk.kill_after_ops(Some(ops));
        slot.restart_after = Some(restart_after);
        let inc = slot.incarnation;
        self.schedule(self.now + 500_000, Event::ForceCrash(id, inc));
    }

    /// The window of the mid-step crash armed for `incarnation` ended without it firing
    /// (the node did not write enough): it dies now.
    pub(super) fn force_crash(&mut self, id: NodeId, incarnation: u64) {
        let slot = &self.slots[&id];
        if slot.node.is_some() && slot.incarnation == incarnation {
            let after = slot.restart_after.unwrap_or(300_000);
            self.crash_now(id, after);
        }
    }

    /// A graceful stop (SIGTERM), as the runtime does it: hand every leadership to a caught-up
    /// follower, keep running for the handover window, then answer what is pending and exit.
    /// Unlike a crash, nothing written is lost (the page cache survives the process).
    pub(super) fn graceful_stop(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if slot.restart_after.is_some() || slot.paused_until.is_some() {
            return;
        }
        node.transfer_all_leaderships();
        let inc = slot.incarnation;
        self.trace(15, id, inc);
        self.pump(id);
        let at = self.now + HANDOVER_US;
        self.schedule(at, Event::StopNow(id, inc, restart_after));
    }

    /// The end of a graceful stop's handover window.
    pub(super) fn stop_now(&mut self, id: NodeId, incarnation: u64, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.incarnation != incarnation || slot.paused_until.is_some() {
            return;
        }
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        node.abandon_pending();
        self.pump(id);
        let slot = self.slots.get_mut(&id).unwrap();
        slot.node = None;
        slot.restart_after = None;
        slot.held.clear();
        self.stats.graceful_stops += 1;
        self.trace(16, id, 0);
        self.schedule(self.now + restart_after, Event::Restart(id));
    }

    /// The process dies now; unsynced writes are lost or torn.
    pub(super) fn crash_now(&mut self, id: NodeId, restart_after: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() {
            return;
        }
        slot.node = None;
        slot.paused_until = None;
        slot.restart_after = None;
        slot.held.clear();
        slot.disk.crash();
        self.stats.crashes += 1;
        self.trace(9, id, 0);
        self.schedule(self.now + restart_after, Event::Restart(id));
    }

    /// A node's step failed (disk full, or the armed mid-step crash): the process dies.
    fn fail_stop(&mut self, id: NodeId, _why: &str) {
        match self.slots[&id].restart_after {
            Some(after) => {
                self.stats.mid_step_crashes += 1;
                self.crash_now(id, after);
                if self.opts.scenario == Scenario::Swarm && self.rngs.process.gen_bool(0.5) {
                    let at = self.now + self.rngs.process.gen_range(50_000..700_000);
                    self.schedule(at, Event::CorrelatedCrash);
                }
            }
            None => {
                self.stats.fail_stops += 1;
                self.crash_now(id, 300_000);
            }
        }
    }

    pub(super) fn pause(&mut self, id: NodeId, until: u64) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.node.is_none() || slot.paused_until.is_some() {
            return;
        }
        slot.paused_until = Some(until);
        self.stats.pauses += 1;
        self.schedule(until, Event::Resume(id));
    }

    pub(super) fn resume(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).unwrap();
        if slot.paused_until.take().is_none() {
            return;
        }
        let held = std::mem::take(&mut slot.held);
        for ev in held {
            self.handle(ev);
        }
    }

    /// Steps a node until it has nothing ready, then routes what it produced.
    pub(super) fn pump(&mut self, id: NodeId) {
        let mut out = Collect::default();
        let mut replies = Vec::new();
        let mut failed = None;
        {
            let slot = self.slots.get_mut(&id).unwrap();
            let Some(node) = slot.node.as_mut() else {
                return;
            };
            // One bounded pump per input; work left over waits for the next input or tick,
            // as a busy real node's would.
            if let Err(e) = node.pump(&mut out, STEPS_PER_INPUT_MAX) {
                failed = Some(e.to_string());
            }
            while let Some(r) = node.poll_reply() {
                replies.push(r);
            }
        }
        let busy = self.slots[&id].disk.take_busy_us();
        let at = self.now + busy;
        for env in out.0 {
            let (from, to) = (env.from, env.to);
            self.stats.messages_sent += 1;
            let deliveries = self.net.send(at, from, to, env);
            if deliveries.is_empty() {
                self.stats.messages_dropped += 1;
            }
            for (t, env) in deliveries {
                self.schedule(t, Event::Deliver(env));
            }
        }
        for (request_id, response) in replies {
            let Some(client) = self.route.remove(&request_id) else {
                self.admin_reply(id, request_id, response);
                continue;
            };
            let lat = self
                .rngs
                .workload
                .gen_range(CLIENT_LATENCY_US.0..CLIENT_LATENCY_US.1);
            self.schedule(
                at + lat,
                Event::Reply {
                    client,
                    request_id,
                    response,
                },
            );
        }
        self.check_node(id);
        if let Some(why) = failed {
            self.fail_stop(id, &why);
        }
    }

    /// A reply reaches `client`, which goes on with its next request.
    pub(super) fn client_reply(&mut self, client: usize, request_id: u64, response: Response) {
        self.trace(4, client as u64, request_id);
        self.workload
            .handle_reply(client, request_id, response, self.now);
        self.workload_violations();
        self.client_next(client);
    }

    /// A client's timer: its in-flight request's deadline, or the end of its think time.
    pub(super) fn client_wake(&mut self, c: usize) {
        self.trace(5, c as u64, 0);
        // Either the in-flight request timed out or the client was idle: go on.
        if self.workload.handle_timeout(c, self.now) || self.workload.clients[c].in_flight.is_none()
        {
            self.client_next(c);
        }
    }

    pub(super) fn client_next(&mut self, c: usize) {
        if let Some((node, request_id, request)) =
            self.workload
                .next_request(c, self.now, &mut self.rngs.workload)
        {
            let lat = self
                .rngs
                .workload
                .gen_range(CLIENT_LATENCY_US.0..CLIENT_LATENCY_US.1);
            self.schedule(
                self.now + lat,
                Event::Arrive {
                    node,
                    client: c,
                    request_id,
                    request,
                },
            );
            let deadline = self.workload.clients[c]
                .in_flight
                .as_ref()
                .expect("just issued")
                .deadline_us;
            self.schedule(deadline, Event::ClientWake(c));
        } else if !self.workload.clients[c].stopped && self.workload.clients[c].in_flight.is_none()
        {
            let think = self.rngs.workload.gen_range(1_000..30_000);
            self.schedule(self.now + think, Event::ClientWake(c));
        }
    }

    pub(super) fn up_nodes(&self) -> Vec<NodeId> {
        self.node_ids
            .iter()
            .copied()
            .filter(|id| self.slots[id].node.is_some())
            .collect()
    }
}
