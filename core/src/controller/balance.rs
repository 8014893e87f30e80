//! Decommission and automatic balancing: the controller plans partition moves (see
//! [`super::reassign`] for how a move runs) that drain decommissioned brokers and keep every
//! broker's replica count and preferred-leader count within 1 of the mean.
//!
//! **Decommission** (`UnregisterBroker`, with Kafka's KIP-1073 view of the result). Kafka's
//! UnregisterBroker drops a registration at once, leaving the broker's replicas offline;
//! Railyard drains first. A request for a live broker that holds replicas records
//! `DecommissionBroker`: nothing new is placed on it, and the planner moves every replica off
//! it (leadership leaves with the replica, by the move's hand-over). Once it holds nothing and
//! its session has expired (it was stopped), the controller records `UnregisterBroker`: it
//! leaves the image, DescribeCluster stops listing it even with fenced brokers included, and
//! the metadata leader drops it from the metadata group. A request that would leave some
//! partition without a broker to move to (too few brokers for its replication factor) is
//! refused and changes nothing.
//!
//! **Balancing** (on unless the cluster-wide config [`AUTOBALANCE_CONFIG`] is `false`). Among
//! the balancing brokers (registered, unfenced, not decommissioning), counted where every
//! move in flight ends: while some broker's replica count is more than 1 from the mean, move
//! one replica from the fullest broker to the emptiest that the partition lacks, never
//! narrowing the partition's spread over racks; once replicas are balanced (and no move is in
//! flight), do the same for preferred leaders (the first replica) by reordering a partition's
//! replicas, after which preferred-leader restoration moves the leadership. A broker that is
//! fenced but not decommissioned is left alone: it may be back soon, and moving its replicas
//! would only have to be undone.
//!
//! **Bounds.** At most [`MOVES_IN_FLIGHT_MAX`] moves in the cluster and
//! [`MOVES_PER_BROKER_MAX`] moves adding or removing a replica on any one broker, so catch-up
//! traffic stays a fraction of each broker's bandwidth; the planner runs every
//! [`BALANCE_EVERY_MS`], or as soon as a move finishes.

use std::collections::{BTreeMap, BTreeSet};

use super::image::{MetadataImage, RecordKind, METADATA_TOPIC};
use super::reassign::{PartitionMove, ReassignPartitions};
use super::{Controller, Proposal};
use crate::api::{ClientError, RequestId, Response};
use crate::machine::{Ctx, Effects};
use crate::types::{Millis, NodeId, TopicPartition};

/// The cluster-wide dynamic config (of the default broker resource) that turns balancing off
/// when `false`. Decommissions drain whatever it says.
pub const AUTOBALANCE_CONFIG: &str = "partition.autobalancing.enable";
/// Moves in flight in the whole cluster, manual ones included.
pub const MOVES_IN_FLIGHT_MAX: usize = 50;
/// Moves in flight that add or remove a replica on one broker.
pub const MOVES_PER_BROKER_MAX: usize = 8;
/// How often the planner runs when no move finished in between.
pub const BALANCE_EVERY_MS: Millis = 1_000;

/// A broker to drain: nothing new goes on it, and every replica moves off.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DecommissionBroker {
    #[prost(uint64, tag = "1")]
    pub id: NodeId,
}

/// A drained, stopped broker leaves the cluster.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UnregisterBroker {
    #[prost(uint64, tag = "1")]
    pub id: NodeId,
}

impl MetadataImage {
    pub(super) fn apply_decommission(&mut self, d: &DecommissionBroker) {
        if self.brokers.contains_key(&d.id) {
            self.decommissioning.insert(d.id);
        }
    }

    pub(super) fn apply_unregister(&mut self, u: &UnregisterBroker) {
        if self.brokers.remove(&u.id).is_none() {
            return;
        }
        self.decommissioning.remove(&u.id);
        self.unregistered.insert(u.id);
        for l in self.leaders.values_mut() {
            if l.leader == Some(u.id) {
                l.leader = None;
            }
        }
    }

    /// Whether the cluster balances replicas and leaders by itself ([`AUTOBALANCE_CONFIG`]).
    pub fn balancing_enabled(&self) -> bool {
        self.broker_configs
            .get("")
            .and_then(|c| c.get(AUTOBALANCE_CONFIG))
            .is_none_or(|v| !v.eq_ignore_ascii_case("false"))
    }

    /// Whether any partition (moving ones included, until done) has a replica on `id`.
    pub fn hosts_replicas(&self, id: NodeId) -> bool {
        self.topics
            .values()
            .any(|t| t.partitions.values().any(|r| r.contains(&id)))
    }

    /// The brokers replicas may move to: registered, unfenced, not decommissioning.
    pub fn balancing_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !self.decommissioning.contains(&b.id))
            .map(|b| b.id)
            .collect()
    }

    /// Every data partition's replicas as they will be once the moves in flight finish.
    fn final_replicas(&self) -> BTreeMap<TopicPartition, Vec<NodeId>> {
        let mut out = self.assignments();
        out.retain(|tp, _| tp.topic != METADATA_TOPIC);
        for (tp, m) in &self.moves {
            out.insert(tp.clone(), m.target.clone());
        }
        out
    }

    /// A partition that cannot lose `id` without going below its replication factor: its
    /// replicas already cover every balancing broker but `id`. For a decommission's check.
    pub fn stranded_by(&self, id: NodeId) -> Option<(TopicPartition, usize)> {
        let live: BTreeSet<NodeId> = self.balancing_brokers().into_iter().collect();
        self.final_replicas()
            .into_iter()
            .filter(|(_, r)| r.contains(&id))
            .find(|(_, r)| live.iter().all(|b| *b == id || r.contains(b)))
            .map(|(tp, r)| (tp, r.len()))
    }
}

/// The planner's view of the cluster: loads counted where every move ends.
struct Loads<'a> {
    image: &'a MetadataImage,
    replicas: BTreeMap<TopicPartition, Vec<NodeId>>,
    /// Replica count of each balancing broker.
    count: BTreeMap<NodeId, usize>,
    /// Moves in flight (or planned) adding or removing a replica, by broker.
    busy: BTreeMap<NodeId, usize>,
    /// Partitions moving, or planned to move this round: not touched again.
    taken: BTreeSet<TopicPartition>,
    budget: usize,
    out: Vec<PartitionMove>,
}

impl<'a> Loads<'a> {
    fn new(image: &'a MetadataImage, frozen: impl Fn(&TopicPartition) -> bool) -> Loads<'a> {
        let replicas = image.final_replicas();
        let mut count: BTreeMap<NodeId, usize> = image
            .balancing_brokers()
            .into_iter()
            .map(|b| (b, 0))
            .collect();
        for r in replicas.values() {
            for b in r {
                if let Some(c) = count.get_mut(b) {
                    *c += 1;
                }
            }
        }
        let mut busy = BTreeMap::new();
        for m in image.moves.values() {
            for b in m.adding().into_iter().chain(m.removing()) {
                *busy.entry(b).or_insert(0) += 1;
            }
        }
        let mut taken: BTreeSet<TopicPartition> = image.moves.keys().cloned().collect();
        taken.extend(replicas.keys().filter(|tp| frozen(tp)).cloned());
        Loads {
            image,
            replicas,
            count,
            busy,
            taken,
            budget: MOVES_IN_FLIGHT_MAX.saturating_sub(image.moves.len()),
            out: Vec::new(),
        }
    }

    fn free(&self, b: NodeId) -> bool {
        self.busy.get(&b).copied().unwrap_or(0) < MOVES_PER_BROKER_MAX
    }

    fn rack(&self, b: NodeId) -> Option<&str> {
        self.image.brokers.get(&b).and_then(|m| m.rack.as_deref())
    }

    /// How many of `others` share `b`'s rack (0 for a broker without a rack).
    fn rack_share(&self, b: NodeId, others: &[NodeId]) -> usize {
        let Some(rack) = self.rack(b) else { return 0 };
        others
            .iter()
            .filter(|o| self.rack(**o) == Some(rack))
            .count()
    }

    /// Records a move of `tp` from `from` to `to` (same position in the replica list).
    fn replace(&mut self, tp: &TopicPartition, from: NodeId, to: NodeId) {
        let target: Vec<NodeId> = self.replicas[tp]
            .iter()
            .map(|b| if *b == from { to } else { *b })
            .collect();
        for (b, delta) in [(from, -1i64), (to, 1)] {
            if let Some(c) = self.count.get_mut(&b) {
                *c = (*c as i64 + delta) as usize;
            }
            *self.busy.entry(b).or_insert(0) += 1;
        }
        self.plan(tp, target);
    }

    fn plan(&mut self, tp: &TopicPartition, target: Vec<NodeId>) {
        self.replicas.insert(tp.clone(), target.clone());
        self.taken.insert(tp.clone());
        self.budget -= 1;
        self.out.push(PartitionMove {
            topic: tp.topic.clone(),
            partition: tp.partition,
            target,
        });
    }

    /// The best broker to take `tp`'s replica on `leaving`: one the partition lacks, with a
    /// free move slot, on the least-shared rack, then the least loaded.
    fn replacement(&self, tp: &TopicPartition, leaving: NodeId) -> Option<NodeId> {
        let replicas = &self.replicas[tp];
        let others: Vec<NodeId> = replicas.iter().copied().filter(|b| *b != leaving).collect();
        self.count
            .iter()
            .filter(|(b, _)| !replicas.contains(b) && self.free(**b))
            .min_by_key(|(b, c)| (self.rack_share(**b, &others), **c, **b))
            .map(|(b, _)| *b)
    }

    /// Moves replicas off every decommissioning broker.
    fn drain(&mut self) {
        let draining: Vec<NodeId> = self.image.decommissioning.iter().copied().collect();
        let partitions: Vec<TopicPartition> = self.replicas.keys().cloned().collect();
        for d in draining {
            for tp in &partitions {
                if self.budget == 0 || !self.free(d) {
                    return;
                }
                if self.taken.contains(tp) || !self.replicas[tp].contains(&d) {
                    continue;
                }
                if let Some(to) = self.replacement(tp, d) {
                    self.replace(tp, d, to);
                }
            }
        }
    }

    /// The mean of `counts` and whether some count is more than 1 from it.
    fn skewed(counts: &BTreeMap<NodeId, usize>) -> bool {
        if counts.len() < 2 {
            return false;
        }
        let total: usize = counts.values().sum();
        let n = counts.len();
        // |c - total/n| > 1, in integers: |c*n - total| > n.
        counts
            .values()
            .any(|c| (*c as i64 * n as i64 - total as i64).abs() > n as i64)
    }

    /// Moves replicas from the fullest brokers to the emptiest while counts are skewed.
    fn balance_replicas(&mut self) {
        while self.budget > 0 && Self::skewed(&self.count) {
            if !self.one_replica_move() {
                return;
            }
        }
    }

    /// One move from the fullest broker that can give to the emptiest that can take.
    fn one_replica_move(&mut self) -> bool {
        let mut by_load: Vec<(usize, NodeId)> = self.count.iter().map(|(b, c)| (*c, *b)).collect();
        by_load.sort_unstable();
        for &(hi_count, hi) in by_load.iter().rev() {
            for &(lo_count, lo) in &by_load {
                if hi_count < lo_count + 2 {
                    break;
                }
                if !self.free(hi) || !self.free(lo) {
                    continue;
                }
                if let Some(tp) = self.movable(hi, lo) {
                    self.replace(&tp, hi, lo);
                    return true;
                }
            }
        }
        false
    }

    /// A partition with a replica on `from` and none on `to`, whose rack spread does not
    /// narrow if `to` takes `from`'s place.
    fn movable(&self, from: NodeId, to: NodeId) -> Option<TopicPartition> {
        self.replicas
            .iter()
            .filter(|(tp, r)| !self.taken.contains(*tp) && r.contains(&from) && !r.contains(&to))
            .find(|(_, r)| {
                let others: Vec<NodeId> = r.iter().copied().filter(|b| *b != from).collect();
                self.rack_share(to, &others) <= self.rack_share(from, &others)
            })
            .map(|(tp, _)| tp.clone())
    }

    /// Reorders replicas so that preferred leaders spread like replicas do.
    fn balance_leaders(&mut self) {
        loop {
            let mut leads: BTreeMap<NodeId, usize> = self.count.keys().map(|b| (*b, 0)).collect();
            for r in self.replicas.values() {
                if let Some(c) = r.first().and_then(|b| leads.get_mut(b)) {
                    *c += 1;
                }
            }
            if self.budget == 0 || !Self::skewed(&leads) || !self.one_leader_move(&leads) {
                return;
            }
        }
    }

    fn one_leader_move(&mut self, leads: &BTreeMap<NodeId, usize>) -> bool {
        let mut by_load: Vec<(usize, NodeId)> = leads.iter().map(|(b, c)| (*c, *b)).collect();
        by_load.sort_unstable();
        for &(hi_count, hi) in by_load.iter().rev() {
            for &(lo_count, lo) in &by_load {
                if hi_count < lo_count + 2 {
                    break;
                }
                let found = self.replicas.iter().find(|(tp, r)| {
                    !self.taken.contains(*tp) && r.first() == Some(&hi) && r.contains(&lo)
                });
                if let Some((tp, r)) = found {
                    let (tp, mut target) = (tp.clone(), r.clone());
                    target.retain(|b| *b != lo);
                    target.insert(0, lo);
                    self.plan(&tp, target);
                    return true;
                }
            }
        }
        false
    }
}

/// The moves to start now: drains of decommissioning brokers first, then (if balancing is
/// on) replica moves, then (once replicas are settled) preferred-leader reorders. `frozen`
/// partitions (say, of a topic with a change in flight) are not moved.
pub fn plan_moves(
    image: &MetadataImage,
    frozen: impl Fn(&TopicPartition) -> bool,
) -> Vec<PartitionMove> {
    let mut loads = Loads::new(image, frozen);
    if loads.budget == 0 {
        return Vec::new();
    }
    loads.drain();
    if !image.balancing_enabled() {
        return loads.out;
    }
    loads.balance_replicas();
    if image.moves.is_empty() && loads.out.is_empty() {
        loads.balance_leaders();
    }
    loads.out
}

impl Controller {
    /// An UnregisterBroker (module docs): refused for an unknown broker, a controller voter,
    /// or one whose partitions would have nowhere to go; else recorded.
    pub(super) fn decommission(
        &mut self,
        id: RequestId,
        broker: NodeId,
        ctx: &Ctx,
        fx: &mut Effects,
    ) {
        let reply = |fx: &mut Effects, r| fx.reply(id, Response::UnregisterBroker(r));
        let Some(meta) = self.image.brokers.get(&broker) else {
            return reply(fx, Err(ClientError::BrokerNotRegistered(broker)));
        };
        // A controller voter is refused by the metadata leader's node (`node::quorum`): the
        // voters are the raft configuration, not the image.
        if self.image.decommissioning.contains(&broker) {
            return reply(fx, Ok(()));
        }
        let empty = !self.image.hosts_replicas(broker);
        let kind = if empty && meta.fenced {
            RecordKind::UnregisterBroker(UnregisterBroker { id: broker })
        } else if let Some((tp, rf)) = self.image.stranded_by(broker) {
            let left = self.image.balancing_brokers().len().saturating_sub(1);
            let why = format!(
                "decommissioning broker {broker} would leave {tp} (replication factor {rf}) \
                 with {left} other brokers to live on"
            );
            return reply(fx, Err(ClientError::BelowReplicationFactor(why)));
        } else {
            RecordKind::DecommissionBroker(DecommissionBroker { id: broker })
        };
        self.propose(Proposal::Decommission { request: id }, kind, ctx, fx);
    }

    /// Unregisters every drained decommissioned broker whose session expired.
    pub(super) fn unregister_drained(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let window = self.config.session_timeout_ms;
        let done: Vec<NodeId> = self
            .image
            .decommissioning
            .iter()
            .copied()
            .filter(|b| self.image.brokers.get(b).is_some_and(|m| m.fenced))
            .filter(|b| !self.image.hosts_replicas(*b))
            .filter(|b| {
                self.lead
                    .unregistering
                    .get(b)
                    .is_none_or(|at| ctx.now_ms - at >= window)
            })
            .collect();
        for id in done {
            self.lead.unregistering.insert(id, ctx.now_ms);
            let kind = RecordKind::UnregisterBroker(UnregisterBroker { id });
            self.propose(Proposal::Internal, kind, ctx, fx);
        }
    }

    /// Plans and records the next moves, when due (module docs).
    pub(super) fn balance(&mut self, ctx: &Ctx, fx: &mut Effects) {
        let window = self.config.session_timeout_ms;
        let pending = self
            .lead
            .balancing
            .is_some_and(|at| ctx.now_ms - at < window);
        let due = std::mem::take(&mut self.lead.move_finished)
            || ctx.now_ms - self.lead.balanced_at >= BALANCE_EVERY_MS;
        if pending || !due || self.image.cluster.is_none() {
            return;
        }
        self.lead.balanced_at = ctx.now_ms;
        let moves = plan_moves(&self.image, |tp| self.in_flight(&tp.topic));
        if moves.is_empty() {
            return;
        }
        self.lead.balancing = Some(ctx.now_ms);
        let kind = RecordKind::ReassignPartitions(ReassignPartitions { moves });
        self.propose(Proposal::Balance, kind, ctx, fx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::*;
    use crate::controller::placement::*;
    use crate::controller::reassign::*;

    fn broker(id: NodeId, rack: Option<&str>) -> MetadataRecord {
        MetadataRecord {
            kind: Some(RecordKind::RegisterBroker(RegisterBroker {
                id,
                host: "h".into(),
                port: 9092,
                rack: rack.map(str::to_string),
                incarnation: 1,
                ..Default::default()
            })),
        }
    }

    fn image_with(
        brokers: &[(NodeId, Option<&str>)],
        topics: &[(&str, i64, i64)],
    ) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, rack) in brokers {
            image.apply(&broker(*id, *rack));
        }
        let ids: Vec<NodeId> = brokers.iter().map(|(b, _)| *b).collect();
        for (name, p, rf) in topics {
            let partitions = place_replicas(&image, &ids, name, *p, *rf).unwrap();
            image.apply(&MetadataRecord {
                kind: Some(RecordKind::CreateTopic(CreateTopic {
                    name: name.to_string(),
                    topic_id: vec![1; 16],
                    partitions,
                    configs: Default::default(),
                })),
            });
        }
        image
    }

    /// Applies planned moves and finishes them, as the partitions' leaders would.
    fn run_to_end(image: &mut MetadataImage) -> usize {
        let mut moved = 0;
        for _ in 0..10_000 {
            let moves = plan_moves(image, |_| false);
            if moves.is_empty() {
                return moved;
            }
            moved += moves.len();
            for m in &moves {
                assert!(valid_replica_list(&m.target), "{m:?}");
            }
            image.apply(&MetadataRecord {
                kind: Some(RecordKind::ReassignPartitions(ReassignPartitions { moves })),
            });
            image.check_invariants();
            let done: Vec<(TopicPartition, u64)> = image
                .moves
                .iter()
                .map(|(tp, m)| (tp.clone(), m.id))
                .collect();
            for (tp, move_id) in done {
                image.apply(&MetadataRecord {
                    kind: Some(RecordKind::ReassignmentDone(ReassignmentDone {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        move_id,
                    })),
                });
            }
        }
        panic!("balancing did not converge");
    }

    fn counts(image: &MetadataImage, leaders: bool) -> BTreeMap<NodeId, usize> {
        let mut out: BTreeMap<NodeId, usize> = image
            .balancing_brokers()
            .into_iter()
            .map(|b| (b, 0))
            .collect();
        for r in image.assignments().values() {
            let counted = if leaders { &r[..1] } else { &r[..] };
            for b in counted {
                *out.entry(*b).or_insert(0) += 1;
            }
        }
        out
    }

    fn within_one_of_mean(c: &BTreeMap<NodeId, usize>) -> bool {
        !Loads::skewed(c)
    }

    #[test]
    fn a_new_broker_gets_its_share_of_replicas_and_leaders() {
        let mut image = image_with(&[(1, None), (2, None), (3, None)], &[("t", 300, 3)]);
        image.apply(&broker(4, None));
        assert!(!within_one_of_mean(&counts(&image, false)));
        let moved = run_to_end(&mut image);
        let replicas = counts(&image, false);
        let leaders = counts(&image, true);
        assert!(within_one_of_mean(&replicas), "{replicas:?}");
        assert!(within_one_of_mean(&leaders), "{leaders:?}");
        assert!(
            (224..=226).contains(&replicas[&4]),
            "about a quarter of 900: {replicas:?}"
        );
        // Replica moves are the 225 that must move, plus leader reorders.
        assert!((225..=300).contains(&moved), "{moved} moves");
        for r in image.assignments().values() {
            assert!(valid_replica_list(r) && r.len() == 3);
        }
    }

    #[test]
    fn a_balanced_cluster_plans_nothing_and_the_switch_stops_balancing() {
        let image = image_with(&[(1, None), (2, None), (3, None)], &[("t", 30, 2)]);
        assert!(plan_moves(&image, |_| false).is_empty());
        let mut image = image;
        image.apply(&broker(4, None));
        image.apply(&MetadataRecord {
            kind: Some(RecordKind::AlterBrokerConfigs(AlterBrokerConfigs {
                resource: String::new(),
                configs: [(AUTOBALANCE_CONFIG.to_string(), "false".to_string())].into(),
            })),
        });
        assert!(!image.balancing_enabled());
        assert!(plan_moves(&image, |_| false).is_empty());
    }

    #[test]
    fn moves_respect_the_bounds() {
        let mut image = image_with(&[(1, None), (2, None), (3, None)], &[("t", 300, 3)]);
        image.apply(&broker(4, None));
        let moves = plan_moves(&image, |_| false);
        let onto_4 = moves.iter().filter(|m| m.target.contains(&4)).count();
        assert_eq!(onto_4, MOVES_PER_BROKER_MAX, "{moves:?}");
        assert!(moves.len() <= MOVES_IN_FLIGHT_MAX);
    }

    #[test]
    fn a_decommission_drains_the_broker_and_keeps_the_replication_factor() {
        let mut image = image_with(
            &[(1, None), (2, None), (3, None), (4, None)],
            &[("t", 40, 3), ("u", 7, 1)],
        );
        assert_eq!(image.stranded_by(1), None);
        image.apply(&MetadataRecord {
            kind: Some(RecordKind::DecommissionBroker(DecommissionBroker { id: 1 })),
        });
        run_to_end(&mut image);
        assert!(!image.hosts_replicas(1));
        for (tp, r) in image.assignments() {
            let rf = if tp.topic == "t" { 3 } else { 1 };
            assert_eq!(r.len(), rf, "{tp}: {r:?}");
        }
        assert!(within_one_of_mean(&counts(&image, false)));
        // With three brokers left, RF 3 partitions cannot lose another.
        let (tp, rf) = image.stranded_by(2).expect("refused");
        assert_eq!((tp.topic.as_str(), rf), ("t", 3));
    }

    #[test]
    fn moves_keep_replicas_spread_over_racks() {
        let racks = [(1, Some("a")), (2, Some("b")), (3, Some("c"))];
        let mut image = image_with(&racks, &[("t", 60, 3)]);
        image.apply(&broker(4, Some("a")));
        image.apply(&broker(5, Some("b")));
        image.apply(&broker(6, Some("c")));
        run_to_end(&mut image);
        assert!(within_one_of_mean(&counts(&image, false)));
        for (tp, r) in image.assignments() {
            let racks: BTreeSet<_> = r.iter().map(|b| (b - 1) % 3).collect();
            assert_eq!(racks.len(), 3, "{tp}: {r:?} shares a rack");
        }
    }

    #[test]
    fn a_fenced_broker_is_left_alone() {
        let mut image = image_with(&[(1, None), (2, None), (3, None)], &[("t", 30, 2)]);
        image.apply(&MetadataRecord {
            kind: Some(RecordKind::FenceBroker(FenceBroker { id: 3 })),
        });
        let moves = plan_moves(&image, |_| false);
        assert!(
            moves.iter().all(
                |m| image.assignments()[&TopicPartition::new("t", m.partition)].contains(&3)
                    == m.target.contains(&3)
            ),
            "nothing moves on or off the fenced broker: {moves:?}"
        );
    }
}
