//! The simulator's admin client. It sends its requests to the up, unpaused node that believes it
//! is the controller: the workload's topics with the fixed layout's assignments (retried every
//! `ADMIN_EVERY_US` until they all exist), and in the swarm, every `CHURN_EVERY_US`, the
//! creation or deletion of a topic no workload uses, so that replica creation and deletion run
//! under the same faults as everything else; and in the swarm, every
//! `DELETE_RECORDS_EVERY_US`, a DeleteRecords of a workload partition up to where the
//! consumers have read (see [`World::delete_records`]).

use std::collections::BTreeMap;

use railyard_core::api::{Request, Response};
use railyard_core::types::{NodeId, Offset, TopicPartition};
use rand::Rng;

use super::{Event, World};

/// Request ids of the simulator's admin client (creating the workload's topics in the metadata
/// log); the workload's own ids count up from 1.
const ADMIN_REQUEST_BASE: u64 = 1 << 62;

/// How often the admin client retries creating the topics until they exist.
pub(super) const ADMIN_EVERY_US: u64 = 300_000;

/// How often the admin client creates or deletes a churn topic during the fault phase.
pub(super) const CHURN_EVERY_US: u64 = 700_000;

/// Most churn topics alive at once.
const CHURN_TOPICS_MAX: usize = 3;

/// The membership nemesis's first move comes between this and twice this into the run.
pub(super) const MOVES_FROM_US: u64 = 1_000_000;
/// The mean time between two of its moves during the fault phase.
pub(super) const MOVE_EVERY_US: u64 = 1_500_000;
/// Decommissions the membership nemesis asks for in one run (some are refused: controller
/// voters, or too few brokers left), so that the cluster keeps enough brokers to move to.
pub(super) const DECOMMISSIONS_PER_RUN_MAX: u64 = 2;
/// The chance that a membership-nemesis event is a decommission rather than a move.
const DECOMMISSION_CHANCE: f64 = 0.15;

/// How often the admin client deletes records during the fault phase.
pub(super) const DELETE_RECORDS_EVERY_US: u64 = 900_000;

impl World {
    /// The admin client: asks the node that believes it is the controller to record each
    /// workload topic not yet in its image, with the fixed layout's assignment; retried until
    /// every topic exists.
    pub(super) fn create_topics(&mut self) {
        let mut topics: BTreeMap<String, Vec<Vec<NodeId>>> = BTreeMap::new();
        for s in self.specs.iter().filter(|s| !self.fixed.contains(s)) {
            let a = topics.entry(s.tp.topic.clone()).or_default();
            assert_eq!(
                a.len(),
                s.tp.partition as usize,
                "specs are in partition order"
            );
            a.push(s.voters.clone());
        }
        let Some(id) = self.controller_node() else {
            self.schedule(self.now + ADMIN_EVERY_US, Event::CreateTopics);
            return;
        };
        let node = self
            .slots
            .get_mut(&id)
            .and_then(|s| s.node.as_mut())
            .unwrap();
        let missing: Vec<(String, Vec<Vec<NodeId>>)> = topics
            .into_iter()
            .filter(|(t, _)| !node.metadata().topics.contains_key(t))
            .collect();
        if missing.is_empty() {
            return;
        }
        let now_ms = (self.now / 1000) as i64;
        for (name, assignments) in missing {
            self.admin_sent += 1;
            let request = Request::CreateTopic {
                name,
                partitions: assignments.len() as i64,
                replication_factor: assignments[0].len() as i64,
                configs: BTreeMap::new(),
                assignments,
                validate_only: false,
            };
            node.handle_request(now_ms, ADMIN_REQUEST_BASE + self.admin_sent, request);
        }
        self.trace(12, id, self.admin_sent);
        self.pump(id);
        self.schedule(self.now + ADMIN_EVERY_US, Event::CreateTopics);
    }

    /// The up, unpaused node that believes it is the controller.
    fn controller_node(&self) -> Option<NodeId> {
        self.up_nodes().into_iter().find(|id| {
            !self.is_paused(*id)
                && self.slots[id]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.controller() == Some(*id))
        })
    }

    /// The metadata image of the node that believes it is the controller.
    pub(super) fn controller_image(&self) -> Option<&railyard_core::metadata::MetadataImage> {
        let id = self.controller_node()?;
        Some(self.slots[&id].node.as_ref()?.metadata())
    }

    /// Topic churn: the admin client creates a new topic (placed by the controller) or deletes
    /// one of the churn topics, through the controller, while faults run.
    pub(super) fn churn(&mut self) {
        let Some(id) = self.controller_node() else {
            return;
        };
        let node = self.slots[&id].node.as_ref().expect("up");
        let alive: Vec<String> = node
            .metadata()
            .topics
            .keys()
            .filter(|t| t.starts_with("churn-"))
            .cloned()
            .collect();
        let delete = !alive.is_empty()
            && (alive.len() >= CHURN_TOPICS_MAX || self.rngs.workload.gen_bool(0.4));
        let alter = self.rngs.workload.gen_bool(0.5);
        let request = if alter {
            self.churn_alter(&alive)
        } else if delete {
            let name = alive[self.rngs.workload.gen_range(0..alive.len())].clone();
            Request::DeleteTopic { name }
        } else {
            self.churn_created += 1;
            Request::CreateTopic {
                name: format!("churn-{}", self.churn_created),
                partitions: self.rngs.workload.gen_range(1..=2),
                replication_factor: self.node_ids.len().min(3) as i64,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
                validate_only: false,
            }
        };
        self.admin_sent += 1;
        self.stats.churn_requests += 1;
        let now_ms = (self.now / 1000) as i64;
        let request_id = ADMIN_REQUEST_BASE + self.admin_sent;
        let node = self
            .slots
            .get_mut(&id)
            .and_then(|s| s.node.as_mut())
            .expect("up");
        node.handle_request(now_ms, request_id, request);
        self.trace(14, id, self.admin_sent);
        self.pump(id);
    }

    /// A config or partition-count change through the controller, for churn: a churn topic
    /// grows by a partition or takes a new retention.ms, or a dynamic broker config (the
    /// cluster-wide default or one broker's) changes the segment size every topic without an
    /// override uses, workload topics included (harmless to their data, visible in their
    /// logs' settings, which `check_node` compares with the image).
    fn churn_alter(&mut self, alive: &[String]) -> Request {
        use railyard_core::api::ConfigChange;
        use railyard_core::topic_config::AlterOp;
        let rng = &mut self.rngs.workload;
        let topic = (!alive.is_empty()).then(|| alive[rng.gen_range(0..alive.len())].clone());
        match (rng.gen_range(0..3), topic) {
            (0, Some(topic)) => Request::CreatePartitions {
                count: rng.gen_range(2..=4),
                topic,
                assignments: Vec::new(),
                validate_only: false,
            },
            (1, Some(topic)) => {
                let retention = rng.gen_range(1..=48) * 3_600_000i64;
                let ops = vec![(
                    "retention.ms".to_string(),
                    AlterOp::Set(retention.to_string()),
                )];
                Request::AlterTopicConfigs {
                    topic,
                    change: ConfigChange::Incremental(ops),
                    validate_only: false,
                }
            }
            _ => {
                let broker = rng
                    .gen_bool(0.5)
                    .then(|| self.node_ids[rng.gen_range(0..self.node_ids.len())]);
                let op = match rng.gen_range(0..3) {
                    0 => AlterOp::Delete,
                    1 => AlterOp::Set("16384".into()),
                    _ => AlterOp::Set("1048576".into()),
                };
                let ops = vec![("log.segment.bytes".to_string(), op)];
                Request::AlterBrokerConfigs {
                    broker,
                    change: ConfigChange::Incremental(ops),
                    validate_only: false,
                }
            }
        }
    }

    /// The membership nemesis: moves a random workload partition to three drawn brokers of
    /// the image (any registered one, joiners included; sometimes a fenced one, which the
    /// controller must refuse), retargets a moving one, or cancels its move.
    pub(super) fn reassign(&mut self) {
        let Some(id) = self.controller_node() else {
            return;
        };
        let workload: Vec<TopicPartition> = self
            .specs
            .iter()
            .filter(|s| !self.fixed.contains(s))
            .map(|s| s.tp.clone())
            .collect();
        let rng = &mut self.rngs.moves;
        if self.decommissions_sent < DECOMMISSIONS_PER_RUN_MAX && rng.gen_bool(DECOMMISSION_CHANCE)
        {
            return self.decommission(id);
        }
        let rng = &mut self.rngs.moves;
        let tp = workload[rng.gen_range(0..workload.len())].clone();
        let image = self.slots[&id].node.as_ref().expect("up").metadata();
        let moving = image.moves.contains_key(&tp);
        let target = if moving && rng.gen_bool(0.4) {
            None
        } else {
            let mut brokers: Vec<NodeId> = image.brokers.keys().copied().collect();
            let mut target = Vec::new();
            while target.len() < 3 && !brokers.is_empty() {
                target.push(brokers.swap_remove(rng.gen_range(0..brokers.len())));
            }
            Some(target)
        };
        self.admin_sent += 1;
        self.stats.moves_requested += 1;
        let request = Request::AlterReassignments {
            moves: vec![(tp, target)],
        };
        let now_ms = (self.now / 1000) as i64;
        let request_id = ADMIN_REQUEST_BASE + self.admin_sent;
        let node = self.slots.get_mut(&id).and_then(|s| s.node.as_mut());
        node.expect("up")
            .handle_request(now_ms, request_id, request);
        self.trace(19, id, self.admin_sent);
        self.pump(id);
    }

    /// Asks controller node `id` to decommission a drawn broker (UnregisterBroker): any broker
    /// but one hosting a fixed-layout partition, which the image cannot move. A controller
    /// voter is refused, as is a broker the cluster cannot spare.
    fn decommission(&mut self, id: NodeId) {
        let joiner = self.node_ids.last().copied();
        let candidates: Vec<NodeId> = self
            .node_ids
            .iter()
            .copied()
            .filter(|b| !self.retired.contains(b))
            .filter(|b| self.fixed.is_empty() || Some(*b) != joiner)
            .filter(|b| {
                !self
                    .fixed
                    .iter()
                    .any(|s| s.voters.contains(b) || s.learners.contains(b))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let broker = candidates[self.rngs.moves.gen_range(0..candidates.len())];
        self.decommissions_sent += 1;
        self.stats.decommissions_requested += 1;
        self.admin_sent += 1;
        let now_ms = (self.now / 1000) as i64;
        let request_id = ADMIN_REQUEST_BASE + self.admin_sent;
        let node = self.slots.get_mut(&id).and_then(|s| s.node.as_mut());
        node.expect("up")
            .handle_request(now_ms, request_id, Request::UnregisterBroker { broker });
        self.trace(20, id, broker);
        self.pump(id);
    }

    /// A decommissioned broker that the controller's image shows drained is stopped for good,
    /// as an operator would once `railyard broker decommission --wait` returns.
    fn retire_drained(&mut self, image: &railyard_core::controller::MetadataImage) {
        let drained: Vec<NodeId> = image
            .decommissioning
            .iter()
            .copied()
            .filter(|b| !image.hosts_replicas(*b) && !self.retired.contains(b))
            .filter(|b| self.slots.contains_key(b))
            .collect();
        for b in drained {
            self.retired.insert(b);
            self.stats.brokers_retired += 1;
            // Clients learn from the metadata that it is gone.
            self.workload.forget_node(b);
            let slot = &self.slots[&b];
            if slot.paused_until.is_some() || slot.restart_after.is_some() {
                self.crash_now(b, 0);
            } else {
                self.graceful_stop(b, 0);
            }
        }
    }

    /// Records the moves in flight in the controller's image, and counts those that finished
    /// (left the image with the partition on their target) since; stops drained decommissioned
    /// brokers.
    pub(super) fn note_moves(&mut self) {
        let Some(id) = self.controller_node() else {
            return;
        };
        let image = self.slots[&id]
            .node
            .as_ref()
            .expect("up")
            .metadata()
            .clone();
        self.retire_drained(&image);
        let image = &image;
        for (tp, m) in &image.moves {
            let key = (tp.clone(), m.id);
            if !self.moves_seen.contains_key(&key) {
                self.stats.moves_started += 1;
                self.moves_seen.insert(key, m.target.clone());
            }
        }
        let gone: Vec<(TopicPartition, u64)> = self
            .moves_seen
            .keys()
            .filter(|(tp, move_id)| image.moves.get(tp).is_none_or(|m| m.id != *move_id))
            .cloned()
            .collect();
        for key in gone {
            let target = self.moves_seen.remove(&key).expect("listed above");
            let replicas = image
                .topics
                .get(&key.0.topic)
                .and_then(|t| t.partitions.get(&key.0.partition));
            if !image.moves.contains_key(&key.0) && replicas == Some(&target) {
                self.stats.moves_completed += 1;
            }
        }
    }

    /// DeleteRecords of a random workload partition, sent to its leader, before the offset the
    /// furthest assign-mode consumer has read to. Every value below it was read by an ok poll
    /// of that consumer, or was below an earlier such offset, so the history's lost-write and
    /// unseen checks still hold every value to account; consumers below the new start are
    /// reset to it (as `auto.offset.reset=earliest`).
    pub(super) fn delete_records(&mut self) {
        let readers = self.workload.clients.iter().filter(|c| {
            matches!(c.role, crate::workload::Role::Consumer) && c.final_targets.is_none()
        });
        let mut read_to: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
        for c in readers {
            for (tp, &at) in &c.positions {
                let e = read_to.entry(tp.clone()).or_insert(0);
                *e = (*e).max(at);
            }
        }
        let acked = |tp: &TopicPartition| {
            let by_term = self.acked_starts.get(tp);
            by_term.and_then(|m| m.values().max().copied()).unwrap_or(0)
        };
        read_to.retain(|tp, at| *at > acked(tp));
        if read_to.is_empty() {
            return;
        }
        let k = self.rngs.workload.gen_range(0..read_to.len());
        let (tp, before) = read_to.into_iter().nth(k).expect("k is in range");
        let leader = self.up_nodes().into_iter().find(|id| {
            !self.is_paused(*id)
                && self.slots[id]
                    .node
                    .as_ref()
                    .and_then(|n| n.replica(&tp))
                    .is_some_and(|r| r.is_leader())
        });
        let Some(id) = leader else {
            return;
        };
        self.admin_sent += 1;
        self.stats.delete_records_sent += 1;
        let request_id = ADMIN_REQUEST_BASE + self.admin_sent;
        self.deletes_in_flight
            .insert(request_id, (tp.clone(), before));
        let now_ms = (self.now / 1000) as i64;
        let request = Request::DeleteRecords { tp, offset: before };
        let node = self.slots.get_mut(&id).and_then(|s| s.node.as_mut());
        node.expect("up")
            .handle_request(now_ms, request_id, request);
        self.trace(18, id, self.admin_sent);
        self.pump(id);
    }

    /// A node answered one of the admin client's requests. Only DeleteRecords answers are
    /// looked at: a new log start, at least the offset asked, is what no leader may serve
    /// below from now on.
    pub(super) fn admin_reply(&mut self, id: NodeId, request_id: u64, response: Response) {
        let Some((tp, before)) = self.deletes_in_flight.remove(&request_id) else {
            return;
        };
        let Response::DeleteRecords(Ok(start)) = response else {
            return;
        };
        self.stats.delete_records_acked += 1;
        if start < before {
            self.violation(format!(
                "{tp}: DeleteRecords before {before} answered log start {start}"
            ));
        }
        let node = self.slots[&id].node.as_ref();
        let term = node.and_then(|n| n.replica(&tp)).map_or(0, |r| r.term());
        let acked = self
            .acked_starts
            .entry(tp)
            .or_default()
            .entry(term)
            .or_insert(0);
        *acked = (*acked).max(start);
    }
}
