//! The simulated network: per-message latency and faults between nodes `1..=n`.
//!
//! The caller owns the event queue. [`SimNetwork::send`] decides, at send time, what becomes of
//! one message and returns its deliveries as `(deliver_at, msg)` pairs to push onto that queue;
//! at delivery time the caller asks [`SimNetwork::deliverable`] (or [`SimNetwork::on_deliver`])
//! again, so a message that was in flight when a partition started is lost, as with TCP
//! connections that reset when a link dies.
//!
//! ## Fault model
//! - **Latency**: every copy of every message takes a latency drawn from `net_latency_us`. This
//!   is not a fault and stays on when faults are disabled.
//! - **Drop** (`drop_p`), **duplicate** (`dup_p`: two copies, each with its own latency, so the
//!   duplicate may arrive first) and **reorder** (`reorder_p`: an extra `reorder_delay_us`, so
//!   later messages overtake it) are decided per message.
//! - **Clog**: a directed link held back until a time `until`; messages sent on it arrive no
//!   earlier than `until` plus a latency. Models a congested or flapping link that delivers
//!   everything late and in a burst, without losing it.
//! - **Partitions**: sets of blocked directed links, in the shapes of [`PartitionKind`]. Several
//!   partitions may be in force at once (their union is blocked) until [`SimNetwork::heal`].
//!   A message on a blocked link is lost, whether it was blocked at send or at delivery.
//! - [`SimNetwork::set_faults_enabled`]`(false)` turns off drops, duplicates, reordering and clogs
//!   for the liveness phase; partitions are the caller's to heal.
//!
//! All randomness comes from a `ChaCha8Rng` seeded by the caller, so one seed gives one schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::faults::{FaultConfig, PartitionKinds};

/// The shape of a network partition. Each kind carries its concrete nodes, so that a drawn
/// partition can be printed in a trace and replayed exactly. [`blocked_links`] computes the set
/// of directed links it blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PartitionKind {
    /// Two sides that cannot reach each other in either direction: `side` versus every other
    /// node. [`PartitionKind::halves`] puts the first `n / 2` nodes in `side` (the minority when
    /// `n` is odd).
    Halves { side: Vec<u64> },
    /// One node cut off from every other node, both directions.
    IsolateOne(u64),
    /// A ring over `ring` (all nodes, in ring order) in which every node reaches a majority, but
    /// no two nodes see the same majority, so any leader's quorum overlaps a rival's.
    /// Node `ring[i]` keeps links to the nodes within ring distance `d`, where `d` is the
    /// smallest distance whose neighbourhood (itself plus `2d` neighbours) is a majority; every
    /// other link is blocked both ways. For 5 nodes `d = 1`: `i` links to `i-1` and `i+1` only.
    /// With 3 nodes no symmetric ring exists (every majority ring is the full mesh), so the ring
    /// is made one-way: `ring[i]` sends only to `ring[i+1]` and receives only from `ring[i-1]`.
    /// With fewer than 3 nodes nothing is blocked.
    MajorityRing { ring: Vec<u64> },
    /// Two sides that cannot reach each other, plus the `bridge` node that reaches both: `side`
    /// versus every node other than `side` and `bridge`. [`PartitionKind::bridge`] puts the
    /// middle node on the bridge and half of the rest in `side`.
    Bridge { bridge: u64, side: Vec<u64> },
    /// Messages from `from` to `to` are lost; the reverse direction still works.
    OneWay { from: u64, to: u64 },
}

impl PartitionKind {
    /// Halves over `nodes` in the given order: the first `n / 2` nodes against the rest.
    pub fn halves(nodes: &[u64]) -> Self {
        Self::Halves {
            side: nodes[..nodes.len() / 2].to_vec(),
        }
    }

    /// A majority ring over `nodes` in the given order.
    pub fn majority_ring(nodes: &[u64]) -> Self {
        Self::MajorityRing {
            ring: nodes.to_vec(),
        }
    }

    /// A bridge over `nodes` in the given order: the middle node bridges the nodes before it and
    /// the nodes after it.
    pub fn bridge(nodes: &[u64]) -> Self {
        assert!(!nodes.is_empty());
        let mid = nodes.len() / 2;
        Self::Bridge {
            bridge: nodes[mid],
            side: nodes[..mid].to_vec(),
        }
    }
}

impl fmt::Display for PartitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Halves { side } => write!(f, "halves({side:?}|rest)"),
            Self::IsolateOne(n) => write!(f, "isolate({n})"),
            Self::MajorityRing { ring } => write!(f, "ring({ring:?})"),
            Self::Bridge { bridge, side } => write!(f, "bridge({side:?}|{bridge}|rest)"),
            Self::OneWay { from, to } => write!(f, "oneway({from}->{to})"),
        }
    }
}

/// Counters for the end-of-run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Deliveries scheduled (a duplicated message counts twice).
    pub scheduled: u64,
    /// Messages dropped at random.
    pub dropped: u64,
    /// Messages sent twice.
    pub duplicated: u64,
    /// Messages given the extra reorder delay (per copy).
    pub reordered: u64,
    /// Copies held back by a clogged link.
    pub clogged: u64,
    /// Messages lost because their link was blocked by a partition at send time.
    pub blocked: u64,
    /// Deliveries lost because a partition started while they were in flight (counted by
    /// [`SimNetwork::on_deliver`]).
    pub lost_in_flight: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Clogs started.
    pub clogs: u64,
}

impl fmt::Display for NetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} scheduled={} dropped={} dup={} reordered={} clogged={} blocked={} \
             lost_in_flight={} partitions={} clogs={}",
            self.sent,
            self.scheduled,
            self.dropped,
            self.duplicated,
            self.reordered,
            self.clogged,
            self.blocked,
            self.lost_in_flight,
            self.partitions,
            self.clogs
        )
    }
}

/// A simulated network of nodes with per-message fault injection. See the module docs.
pub struct SimNetwork<M: Clone> {
    /// Node ids, sorted; ids are arbitrary but usually `1..=n`.
    nodes: Vec<u64>,
    config: FaultConfig,
    rng: ChaCha8Rng,
    faults_enabled: bool,
    /// Directed links `(from, to)` on which messages are lost (union of active partitions).
    blocked: BTreeSet<(u64, u64)>,
    /// Directed links held back until the given time.
    clogs: BTreeMap<(u64, u64), u64>,
    stats: NetStats,
    _msg: std::marker::PhantomData<fn(M) -> M>,
}

impl<M: Clone> SimNetwork<M> {
    /// A network over `nodes` (distinct ids) with faults from `config` and randomness from `seed`.
    pub fn new(nodes: &[u64], config: &FaultConfig, seed: u64) -> Self {
        config.assert_valid();
        let mut sorted = nodes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), nodes.len(), "duplicate node ids: {nodes:?}");
        assert!(!sorted.is_empty(), "a network needs nodes");
        Self {
            nodes: sorted,
            config: config.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            faults_enabled: true,
            blocked: BTreeSet::new(),
            clogs: BTreeMap::new(),
            stats: NetStats::default(),
            _msg: std::marker::PhantomData,
        }
    }

    /// Decides the fate of one message sent at `now` and returns its deliveries: none (dropped,
    /// or the link is partitioned), one, or two (duplicated), each with its own `deliver_at`.
    #[must_use = "the deliveries must be put on the event queue"]
    pub fn send(&mut self, now: u64, from: u64, to: u64, msg: M) -> Vec<(u64, M)> {
        self.assert_node(from);
        self.assert_node(to);
        assert_ne!(from, to, "a node does not send to itself over the network");
        self.stats.sent += 1;
        if !self.deliverable(from, to) {
            self.stats.blocked += 1;
            return Vec::new();
        }
        if self.faults_enabled && self.config.drop_p > 0.0 && self.rng.gen_bool(self.config.drop_p)
        {
            self.stats.dropped += 1;
            return Vec::new();
        }
        let duplicate =
            self.faults_enabled && self.config.dup_p > 0.0 && self.rng.gen_bool(self.config.dup_p);
        let mut out = Vec::with_capacity(2);
        if duplicate {
            self.stats.duplicated += 1;
            let at = self.deliver_at(now, from, to);
            out.push((at, msg.clone()));
        }
        let at = self.deliver_at(now, from, to);
        out.push((at, msg));
        self.stats.scheduled += out.len() as u64;
        assert!(!out.is_empty() && out.len() <= 2);
        assert!(
            out.iter().all(|(at, _)| *at > now),
            "delivery must be after send"
        );
        out
    }

    /// Whether a message on `from -> to` gets through now. Check at send time (done by `send`)
    /// and again at delivery time.
    pub fn deliverable(&self, from: u64, to: u64) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// [`Self::deliverable`] at delivery time, counting deliveries lost in flight.
    pub fn on_deliver(&mut self, from: u64, to: u64) -> bool {
        let ok = self.deliverable(from, to);
        if !ok {
            self.stats.lost_in_flight += 1;
        }
        ok
    }

    /// Starts a partition of the given shape, in addition to any in force.
    pub fn partition(&mut self, kind: &PartitionKind) {
        for &n in kind_nodes(kind).iter() {
            self.assert_node(n);
        }
        let links = blocked_links(kind, &self.nodes);
        self.blocked.extend(links);
        self.stats.partitions += 1;
    }

    /// Draws a partition shape among the kinds enabled in the config (all kinds if none is) and
    /// its nodes at random, starts it and returns it for the trace.
    pub fn random_partition(&mut self) -> PartitionKind {
        let mut enabled = self.config.partition_kinds;
        if enabled.is_empty() {
            enabled = PartitionKinds::all();
        }
        let names = enabled.names();
        let name = names[self.rng.gen_range(0..names.len())];
        let mut order = self.nodes.clone();
        order.shuffle(&mut self.rng);
        let kind = match name {
            "halves" => PartitionKind::halves(&order),
            "isolate" => PartitionKind::IsolateOne(order[0]),
            "ring" => PartitionKind::majority_ring(&order),
            "bridge" => PartitionKind::bridge(&order),
            "oneway" if order.len() >= 2 => PartitionKind::OneWay {
                from: order[0],
                to: order[1],
            },
            // A one-node network has no link to cut one way; isolating it is a no-op too.
            "oneway" => PartitionKind::IsolateOne(order[0]),
            other => unreachable!("unknown partition kind {other}"),
        };
        self.partition(&kind);
        kind
    }

    /// Removes every partition and clog.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.clogs.clear();
    }

    /// Holds back messages on `from -> to` sent before `until`: they arrive after `until`.
    /// A later clog on the same link extends, never shortens, the current one.
    pub fn clog(&mut self, from: u64, to: u64, until: u64) {
        self.assert_node(from);
        self.assert_node(to);
        assert_ne!(from, to);
        let entry = self.clogs.entry((from, to)).or_insert(until);
        *entry = (*entry).max(until);
        self.stats.clogs += 1;
    }

    /// Clogs a random directed link from `now` for a duration drawn from `clog_us`, and returns
    /// `(from, to, until)` for the trace. `None` with fewer than two nodes.
    pub fn random_clog(&mut self, now: u64) -> Option<(u64, u64, u64)> {
        if self.nodes.len() < 2 {
            return None;
        }
        let from = self.nodes[self.rng.gen_range(0..self.nodes.len())];
        let others: Vec<u64> = self.nodes.iter().copied().filter(|&n| n != from).collect();
        let to = others[self.rng.gen_range(0..others.len())];
        let until = now + self.config.clog_us.draw(&mut self.rng);
        self.clog(from, to, until);
        Some((from, to, until))
    }

    /// Turns drops, duplicates, reordering and clogs on or off. Latency and partitions stay.
    pub fn set_faults_enabled(&mut self, enabled: bool) {
        self.faults_enabled = enabled;
    }

    /// Whether drops, duplicates, reordering and clogs are on.
    pub fn faults_enabled(&self) -> bool {
        self.faults_enabled
    }

    /// The directed links currently blocked by partitions.
    pub fn blocked(&self) -> &BTreeSet<(u64, u64)> {
        &self.blocked
    }

    /// Whether any partition is in force.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// The node ids, sorted.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    /// Counters for the summary.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Draws when one copy sent at `now` arrives: latency, plus the reorder delay, and no
    /// earlier than a latency after the end of a clog on the link.
    fn deliver_at(&mut self, now: u64, from: u64, to: u64) -> u64 {
        // Latency is at least 1 µs so a delivery never happens at its send instant, which keeps
        // the caller's event order well defined.
        let mut at = now + self.config.net_latency_us.draw(&mut self.rng).max(1);
        if self.faults_enabled
            && self.config.reorder_p > 0.0
            && self.rng.gen_bool(self.config.reorder_p)
        {
            self.stats.reordered += 1;
            at += self.config.reorder_delay_us.draw(&mut self.rng);
        }
        if self.faults_enabled {
            if let Some(&until) = self.clogs.get(&(from, to)) {
                if until > now {
                    self.stats.clogged += 1;
                    let after = until + self.config.net_latency_us.draw(&mut self.rng).max(1);
                    at = at.max(after);
                }
            }
        }
        assert!(at > now);
        at
    }

    fn assert_node(&self, n: u64) {
        assert!(
            self.nodes.binary_search(&n).is_ok(),
            "unknown node {n}, nodes are {:?}",
            self.nodes
        );
    }
}

/// The directed links `(from, to)` that a partition of `kind` blocks in a network of `nodes`.
/// Pure, so each shape is tested on its own.
pub fn blocked_links(kind: &PartitionKind, nodes: &[u64]) -> BTreeSet<(u64, u64)> {
    let mut out = BTreeSet::new();
    let mut cut_both = |a: u64, b: u64| {
        assert_ne!(a, b);
        out.insert((a, b));
        out.insert((b, a));
    };
    match kind {
        PartitionKind::Halves { side } => {
            for &a in side {
                for &b in nodes.iter().filter(|b| !side.contains(b)) {
                    cut_both(a, b);
                }
            }
        }
        PartitionKind::IsolateOne(x) => {
            for &b in nodes.iter().filter(|&&b| b != *x) {
                cut_both(*x, b);
            }
        }
        PartitionKind::Bridge { bridge, side } => {
            assert!(!side.contains(bridge), "the bridge is on neither side");
            for &a in side {
                let others = nodes.iter().filter(|b| !side.contains(b) && *b != bridge);
                for &b in others {
                    cut_both(a, b);
                }
            }
        }
        PartitionKind::OneWay { from, to } => {
            assert_ne!(from, to);
            out.insert((*from, *to));
        }
        PartitionKind::MajorityRing { ring } => {
            assert_eq!(ring.len(), nodes.len(), "the ring holds every node");
            out = ring_links(ring);
        }
    }
    for &(a, b) in &out {
        assert!(nodes.contains(&a) && nodes.contains(&b) && a != b);
    }
    out
}

/// Blocked links of a majority ring; see [`PartitionKind::MajorityRing`].
fn ring_links(ring: &[u64]) -> BTreeSet<(u64, u64)> {
    let n = ring.len();
    let mut out = BTreeSet::new();
    if n < 3 {
        return out;
    }
    if n == 3 {
        // One-way ring: ring[i] -> ring[i+1] only, so ring[i+1] -> ring[i] is blocked.
        for i in 0..n {
            out.insert((ring[(i + 1) % n], ring[i]));
        }
        return out;
    }
    let majority = n / 2 + 1;
    // Smallest d with 1 + 2d >= majority.
    let d = (majority - 1).div_ceil(2);
    assert!(1 + 2 * d >= majority && 2 * d + 1 < n, "n={n} d={d}");
    for i in 0..n {
        for j in 0..n {
            let dist = i.abs_diff(j).min(n - i.abs_diff(j));
            if i != j && dist > d {
                out.insert((ring[i], ring[j]));
            }
        }
    }
    out
}

/// Every node a partition kind names, for validation.
fn kind_nodes(kind: &PartitionKind) -> Vec<u64> {
    match kind {
        PartitionKind::Halves { side } => side.clone(),
        PartitionKind::IsolateOne(x) => vec![*x],
        PartitionKind::MajorityRing { ring } => ring.clone(),
        PartitionKind::Bridge { bridge, side } => {
            let mut v = side.clone();
            v.push(*bridge);
            v
        }
        PartitionKind::OneWay { from, to } => vec![*from, *to],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(u64, u64)]) -> BTreeSet<(u64, u64)> {
        pairs.iter().copied().collect()
    }

    fn both(pairs: &[(u64, u64)]) -> BTreeSet<(u64, u64)> {
        pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
    }

    /// Who `a` can send to (itself included) under `blocked`.
    fn reach(nodes: &[u64], blocked: &BTreeSet<(u64, u64)>, a: u64) -> BTreeSet<u64> {
        nodes
            .iter()
            .copied()
            .filter(|&b| b == a || !blocked.contains(&(a, b)))
            .collect()
    }

    #[test]
    fn test_partition_kinds_block_intended_links_3_nodes() {
        // Proves each shape blocks exactly the intended directed links in a 3-node cluster.
        let n = [1, 2, 3];
        let cases = [
            (PartitionKind::halves(&n), both(&[(1, 2), (1, 3)])),
            (PartitionKind::IsolateOne(2), both(&[(2, 1), (2, 3)])),
            (PartitionKind::bridge(&n), both(&[(1, 3)])),
            (PartitionKind::OneWay { from: 3, to: 1 }, links(&[(3, 1)])),
            // One-way ring 1 -> 2 -> 3 -> 1.
            (
                PartitionKind::majority_ring(&n),
                links(&[(2, 1), (3, 2), (1, 3)]),
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(blocked_links(&kind, &n), want, "{kind}");
        }
    }

    #[test]
    fn test_partition_kinds_block_intended_links_5_nodes() {
        // Proves each shape blocks exactly the intended directed links in a 5-node cluster.
        let n = [1, 2, 3, 4, 5];
        let cross = |a: &[u64], b: &[u64]| -> Vec<(u64, u64)> {
            a.iter()
                .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                .collect()
        };
        let cases = [
            (PartitionKind::halves(&n), both(&cross(&[1, 2], &[3, 4, 5]))),
            (
                PartitionKind::IsolateOne(4),
                both(&cross(&[4], &[1, 2, 3, 5])),
            ),
            (PartitionKind::bridge(&n), both(&cross(&[1, 2], &[4, 5]))),
            (PartitionKind::OneWay { from: 1, to: 5 }, links(&[(1, 5)])),
            // Ring 1-2-3-4-5-1: each node links to its two neighbours only.
            (
                PartitionKind::majority_ring(&n),
                both(&[(1, 3), (1, 4), (2, 4), (2, 5), (3, 5)]),
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(blocked_links(&kind, &n), want, "{kind}");
        }
    }

    #[test]
    fn test_majority_ring_every_node_sees_a_distinct_majority() {
        // Proves the ring's defining property for 4 to 9 nodes in a shuffled order.
        for size in 4..=9u64 {
            let mut nodes: Vec<u64> = (1..=size).collect();
            nodes.shuffle(&mut ChaCha8Rng::seed_from_u64(size));
            let blocked = blocked_links(&PartitionKind::majority_ring(&nodes), &nodes);
            let views: BTreeSet<BTreeSet<u64>> =
                nodes.iter().map(|&a| reach(&nodes, &blocked, a)).collect();
            assert_eq!(views.len(), nodes.len(), "views must be distinct");
            for v in &views {
                assert!(v.len() > nodes.len() / 2, "{v:?} is not a majority");
                assert!(v.len() < nodes.len(), "{v:?} is everyone");
            }
            // Links are symmetric for 4+ nodes.
            assert!(blocked.iter().all(|&(a, b)| blocked.contains(&(b, a))));
        }
    }

    #[test]
    fn test_messages_in_flight_are_lost_when_partition_starts() {
        // Proves send-time and delivery-time checks, and that heal restores delivery.
        let mut net: SimNetwork<u32> = SimNetwork::new(&[1, 2, 3], &FaultConfig::none(), 1);
        let d = net.send(0, 1, 2, 7);
        assert_eq!(d.len(), 1);
        net.partition(&PartitionKind::IsolateOne(2));
        assert!(!net.on_deliver(1, 2));
        assert!(net.send(10, 1, 2, 8).is_empty());
        assert!(net.deliverable(1, 3) && net.deliverable(3, 1));
        net.heal();
        assert!(net.on_deliver(1, 2));
        let s = net.stats();
        assert_eq!((s.sent, s.blocked, s.lost_in_flight), (2, 1, 1));
    }

    #[test]
    fn test_drop_and_dup_rates() {
        // Proves drops and duplicates happen at about the configured rates.
        let mut config = FaultConfig::none();
        config.drop_p = 0.1;
        config.dup_p = 0.05;
        let mut net: SimNetwork<u64> = SimNetwork::new(&[1, 2], &config, 42);
        let total = 100_000u64;
        let mut copies = 0u64;
        for i in 0..total {
            copies += net.send(i, 1, 2, i).len() as u64;
        }
        let s = net.stats();
        assert!((9_000..=11_000).contains(&s.dropped), "{s}");
        // Duplicates are drawn only for messages that were not dropped.
        assert!((4_000..=5_000).contains(&s.duplicated), "{s}");
        assert_eq!(copies, total - s.dropped + s.duplicated);
        assert_eq!(s.scheduled, copies);
        // With faults off nothing is dropped or duplicated.
        net.set_faults_enabled(false);
        for i in 0..1_000 {
            assert_eq!(net.send(total + i, 1, 2, i).len(), 1);
        }
    }

    #[test]
    fn test_clog_delays_until_after_the_clog() {
        // Proves a clogged link delivers late but delivers, and faults-off ignores clogs.
        let mut net: SimNetwork<u8> = SimNetwork::new(&[1, 2], &FaultConfig::none(), 3);
        net.clog(1, 2, 1_000_000);
        let d = net.send(0, 1, 2, 1);
        assert_eq!(d.len(), 1);
        assert!(d[0].0 > 1_000_000);
        assert!(
            net.send(0, 2, 1, 1)[0].0 <= 500,
            "reverse link is not clogged"
        );
        net.set_faults_enabled(false);
        assert!(net.send(0, 1, 2, 1)[0].0 <= 500);
        net.set_faults_enabled(true);
        assert!(net.send(1_000_000, 1, 2, 1)[0].0 <= 1_000_500, "clog ended");
    }

    #[test]
    fn test_reorder_lets_later_messages_overtake() {
        // Proves reordering: with the extra delay some later message arrives before an earlier one.
        let mut config = FaultConfig::none();
        config.reorder_p = 0.2;
        config.reorder_delay_us = crate::faults::RangeUs::new(0, 50_000);
        let mut net: SimNetwork<u64> = SimNetwork::new(&[1, 2], &config, 9);
        let mut arrivals: Vec<(u64, u64)> = (0..1_000u64)
            .flat_map(|i| net.send(i * 100, 1, 2, i))
            .collect();
        arrivals.sort();
        let order: Vec<u64> = arrivals.iter().map(|&(_, m)| m).collect();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "no reordering");
        assert!((150..=250).contains(&net.stats().reordered));
    }

    #[test]
    fn test_same_seed_same_schedule() {
        // Proves determinism: the same seed and sends give the same deliveries and partitions.
        let run = |seed: u64| {
            let config = FaultConfig::draw(&mut ChaCha8Rng::seed_from_u64(seed));
            let mut net: SimNetwork<u64> = SimNetwork::new(&[1, 2, 3, 4, 5], &config, seed);
            let mut trace = Vec::new();
            for i in 0..2_000u64 {
                if i % 300 == 0 {
                    trace.push(format!("{}", net.random_partition()));
                }
                if i % 500 == 0 {
                    trace.push(format!("{:?}", net.random_clog(i * 10)));
                    net.heal();
                }
                let from = 1 + i % 5;
                let to = 1 + (i + 1 + i % 3) % 5;
                for (at, m) in net.send(i * 10, from, to, i) {
                    trace.push(format!("{at}:{m}"));
                }
            }
            trace.push(net.stats().to_string());
            trace
        };
        for seed in 0..5 {
            assert_eq!(run(seed), run(seed));
        }
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn test_random_partition_uses_enabled_kinds() {
        // Proves random partitions draw only the shapes the config enables.
        let mut config = FaultConfig::none();
        config.partition_per_s = 0.1;
        config.partition_kinds.one_way = true;
        let mut net: SimNetwork<u8> = SimNetwork::new(&[1, 2, 3], &config, 5);
        for _ in 0..20 {
            let kind = net.random_partition();
            assert!(matches!(kind, PartitionKind::OneWay { .. }), "{kind}");
            assert_eq!(net.blocked().len(), 1);
            net.heal();
            assert!(!net.is_partitioned());
        }
    }
}
