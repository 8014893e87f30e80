//! Client-side partition assignors, as pure functions: the group leader runs one over every
//! member's subscription and sends the result through SyncGroup. `range` is Kafka's
//! RangeAssignor (per topic, consecutive partitions, the first members get one more);
//! `cooperative-sticky` keeps each member's owned partitions up to its fair share, hands out
//! the rest to the least loaded, and withholds any partition that is moving from one member
//! to another until its owner has revoked it (KIP-429's incremental protocol: the owner
//! revokes and rejoins, and the next rebalance gives the partition to its new member).

use std::collections::{BTreeMap, BTreeSet};

use crate::producer::accumulator::TopicPartition;

/// The assignment strategies this client implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    /// Kafka's `range` (eager: every member revokes everything at each rebalance).
    Range,
    /// Kafka's `cooperative-sticky` (incremental: a member revokes only what moves).
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name in JoinGroup, as the Java client and librdkafka spell it.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The assignor of this protocol name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "cooperative-sticky" => Some(Assignor::CooperativeSticky),
            _ => None,
        }
    }

    /// Runs this assignor.
    pub fn assign(
        self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::CooperativeSticky => cooperative_sticky(members, partitions),
        }
    }
}

/// One member's subscription as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id.
    pub member_id: String,
    /// The static instance id, if any (range orders static members by it, as Java does).
    pub instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions it owns now (cooperative protocol).
    pub owned: Vec<TopicPartition>,
}

/// Kafka's RangeAssignor. `partitions` is the partition count of each topic.
pub fn range(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    for (topic, &count) in partitions {
        let mut subscribers: Vec<&MemberSubscription> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_by(|a, b| {
            let key = |m: &MemberSubscription| m.instance_id.clone().unwrap_or(m.member_id.clone());
            key(a).cmp(&key(b))
        });
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let list = out.get_mut(&m.member_id).expect("every member has a list");
            list.extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
            next += take;
        }
        assert_eq!(next, count, "range assigned every partition of {topic}");
    }
    out
}

/// The cooperative-sticky assignment; see the module docs.
pub fn cooperative_sticky(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let balanced = sticky_balanced(members, partitions);
    // The previous owner of each partition; a partition whose owner changes is withheld.
    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for m in members {
        for tp in &m.owned {
            owner.entry(tp).or_insert(&m.member_id);
        }
    }
    balanced
        .into_iter()
        .map(|(member, tps)| {
            let kept = tps
                .into_iter()
                .filter(|tp| owner.get(tp).is_none_or(|o| *o == member))
                .collect();
            (member, kept)
        })
        .collect()
}

/// A balanced assignment that keeps owned partitions where the balance allows.
fn sticky_balanced(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let all: BTreeSet<TopicPartition> = partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.topics.contains(t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    let floor = all.len() / members.len();
    let mut ceil_slots = all.len() % members.len();
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    // Members owning most go first, so they use up the ceil slots they already fill.
    let mut by_owned: Vec<&MemberSubscription> = members.iter().collect();
    by_owned.sort_by(|a, b| {
        b.owned
            .len()
            .cmp(&a.owned.len())
            .then(a.member_id.cmp(&b.member_id))
    });
    for m in by_owned {
        let valid: Vec<&TopicPartition> = m
            .owned
            .iter()
            .filter(|tp| all.contains(tp) && m.topics.contains(&tp.topic) && !taken.contains(tp))
            .collect();
        let mut allowed = floor;
        if valid.len() > floor && ceil_slots > 0 {
            allowed += 1;
            ceil_slots -= 1;
        }
        for tp in valid.into_iter().take(allowed) {
            taken.insert(tp.clone());
            out.get_mut(&m.member_id).expect("listed").push(tp.clone());
        }
    }
    for tp in all.iter().filter(|tp| !taken.contains(tp)) {
        let target = members
            .iter()
            .filter(|m| m.topics.contains(&tp.topic))
            .min_by(|a, b| {
                out[&a.member_id]
                    .len()
                    .cmp(&out[&b.member_id].len())
                    .then(a.member_id.cmp(&b.member_id))
            })
            .expect("a partition of a subscribed topic has a subscriber");
        out.get_mut(&target.member_id)
            .expect("listed")
            .push(tp.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
        }
    }

    fn parts(list: &[TopicPartition]) -> Vec<i32> {
        list.iter().map(|tp| tp.partition).collect()
    }

    // Proves range gives consecutive partitions per topic, the first members one extra.
    #[test]
    fn test_range_matches_kafka() {
        let members = [
            member("b", &["t"], &[]),
            member("a", &["t"], &[]),
            member("c", &["t"], &[]),
        ];
        let counts = BTreeMap::from([("t".to_string(), 7)]);
        let out = range(&members, &counts);
        assert_eq!(parts(&out["a"]), vec![0, 1, 2]);
        assert_eq!(parts(&out["b"]), vec![3, 4]);
        assert_eq!(parts(&out["c"]), vec![5, 6]);
    }

    // Proves cooperative-sticky keeps what it can, balances, and withholds a partition that
    // moves between members until its owner gives it up.
    #[test]
    fn test_cooperative_sticky_withholds_moving_partitions() {
        let counts = BTreeMap::from([("t".to_string(), 4)]);
        // a owns everything; b joins.
        let first = [
            member("a", &["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)]),
            member("b", &["t"], &[]),
        ];
        let out = cooperative_sticky(&first, &counts);
        assert_eq!(parts(&out["a"]), vec![0, 1], "a keeps its fair share");
        assert!(out["b"].is_empty(), "b waits until a revokes");
        // a revoked 2 and 3 and rejoined: now b gets them.
        let second = [
            member("a", &["t"], &[("t", 0), ("t", 1)]),
            member("b", &["t"], &[]),
        ];
        let out = cooperative_sticky(&second, &counts);
        assert_eq!(parts(&out["a"]), vec![0, 1]);
        assert_eq!(parts(&out["b"]), vec![2, 3]);
    }

    // Proves every partition is assigned exactly once and loads differ by at most one.
    #[test]
    fn test_sticky_balanced_is_complete_and_fair() {
        let counts = BTreeMap::from([("t".to_string(), 10), ("u".to_string(), 3)]);
        let members = [
            member(
                "a",
                &["t", "u"],
                &[("t", 0), ("t", 1), ("t", 2), ("t", 3), ("t", 4), ("t", 5)],
            ),
            member("b", &["t", "u"], &[("t", 6)]),
            member("c", &["t", "u"], &[]),
        ];
        let out = sticky_balanced(&members, &counts);
        let mut seen = BTreeSet::new();
        for list in out.values() {
            for tp in list {
                assert!(seen.insert(tp.clone()), "{tp} twice");
            }
        }
        assert_eq!(seen.len(), 13);
        let loads: Vec<usize> = out.values().map(Vec::len).collect();
        assert!(
            loads.iter().max().expect("members") - loads.iter().min().expect("members") <= 1,
            "{loads:?}"
        );
        assert!(
            out["b"].contains(&TopicPartition::new("t", 6)),
            "b keeps what it owned"
        );
    }
}
