//! The nemesis: one fault at a time, drawn from the seed, held for the nemesis interval and
//! healed, with a quiet interval before each.
//!
//! The kinds are taken in a seed-shuffled round robin, so a run of `kinds × 2 × interval`
//! seconds holds every kind at least once; the target of each fault (which node, which
//! grouping) is drawn from the seed too. Faults aimed at "the leader of a key" ask the
//! cluster who leads it, so the same seed gives the same schedule of kinds and draws, but the
//! node hit depends on the cluster's answers. Every fault targets the cluster's members at
//! the time: after a membership turn, the new node can be killed and the old one cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::ValueEnum;
use railyard_jepsen::NemesisWindow;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::lab::{Lab, LabError};
use super::membership;
use super::workload::{key_of, Recorder};
use super::{RunOpts, TOPIC};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum NemesisKind {
    /// kill -9 of a random node, of a key's leader, or of a minority; restarted at the heal.
    Kill,
    /// SIGSTOP of the same choice of targets; SIGCONT at the heal.
    Pause,
    /// Silent packet drops: halves, one node isolated, majorities ring, bridge, or a key's
    /// leader isolated.
    Partition,
    /// One node's wall clock stepped by an hour, forward or back; stepped back at the heal.
    Clock,
    /// Every node stopped (SIGTERM) and restarted in turn.
    Rolling,
    /// A new broker joins, key partitions are reassigned onto it, and another broker (a
    /// controller voter hands its vote to the new one first) is decommissioned, drained and
    /// stopped.
    Membership,
}

impl NemesisKind {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Clock => "clock",
            NemesisKind::Rolling => "rolling",
            NemesisKind::Membership => "membership",
        }
    }
}

/// One fault as it was held.
#[derive(Clone, Debug)]
pub struct Fault {
    /// What the report shows.
    pub window: NemesisWindow,
    /// For a kill: the keys the killed nodes led just before (as the cluster said), whose
    /// unavailability the results measure.
    pub led_keys: Vec<String>,
}

/// What a fault does to the lab, decided before it starts.
enum Plan {
    Kill(Vec<usize>),
    Pause(Vec<usize>),
    /// node index → the nodes it drops packets from.
    Partition(BTreeMap<usize, BTreeSet<usize>>),
    Clock(usize, &'static str),
    Rolling,
    /// The member that leaves (an index), and the keys moved onto the one that joins.
    Membership(usize, Vec<i32>),
}

/// Runs faults until `deadline_ns` (on the recorder's clock), and returns them. Every fault
/// is healed before this returns.
pub async fn run(
    opts: &RunOpts,
    seed: u64,
    lab: &mut Lab,
    rec: &Recorder,
    deadline_ns: u64,
) -> Result<Vec<Fault>, LabError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let interval = Duration::from_secs(opts.nemesis_interval.max(1));
    let mut order = opts.nemesis.clone();
    order.sort();
    order.dedup();
    order.shuffle(&mut rng);
    let mut faults = Vec::new();
    let mut turn = 0usize;
    let cycle_ns = 2 * interval.as_nanos() as u64;
    while !order.is_empty() && rec.now_ns() + cycle_ns <= deadline_ns {
        tokio::time::sleep(interval).await;
        lab.check_alive()?;
        let kind = order[turn % order.len()];
        turn += 1;
        let (plan, detail) = draw(kind, &mut rng, lab, opts).await;
        let led_keys = match &plan {
            Plan::Kill(nodes) => led_by(lab, opts.keys, nodes).await,
            _ => Vec::new(),
        };
        let start_ns = rec.now_ns();
        println!("railyard-jepsen: nemesis {}: {detail}", kind.name());
        apply(lab, &plan).await?;
        if !matches!(plan, Plan::Rolling | Plan::Membership(..)) {
            tokio::time::sleep(interval).await;
        }
        heal(lab, &plan).await?;
        faults.push(Fault {
            window: NemesisWindow {
                kind: kind.name().to_string(),
                detail,
                start_ns,
                end_ns: rec.now_ns(),
            },
            led_keys,
        });
    }
    let rest = deadline_ns.saturating_sub(rec.now_ns());
    tokio::time::sleep(Duration::from_nanos(rest)).await;
    Ok(faults)
}

/// Draws a fault of `kind`: the plan and its description.
async fn draw(
    kind: NemesisKind,
    rng: &mut ChaCha8Rng,
    lab: &Lab,
    opts: &RunOpts,
) -> (Plan, String) {
    let members = lab.members();
    let names = |set: &[usize]| -> String {
        let ids: Vec<String> = set.iter().map(|&i| lab.id(i).to_string()).collect();
        ids.join(",")
    };
    match kind {
        NemesisKind::Kill | NemesisKind::Pause => {
            let (targets, what) = targets(rng, lab, opts).await;
            let verb = if kind == NemesisKind::Kill {
                "kill -9"
            } else {
                "SIGSTOP"
            };
            let detail = format!("{verb} node {} ({what})", names(&targets));
            let plan = if kind == NemesisKind::Kill {
                Plan::Kill(targets)
            } else {
                Plan::Pause(targets)
            };
            (plan, detail)
        }
        NemesisKind::Partition => {
            let (grudge, what) = partition(rng, lab, opts).await;
            (Plan::Partition(grudge), what)
        }
        NemesisKind::Clock => {
            let node = *members.choose(rng).expect("the cluster has members");
            let step = if rng.gen_bool(0.5) { "+1h" } else { "-1h" };
            let detail = format!("wall clock of node {} set to {step}", lab.id(node));
            (Plan::Clock(node, step), detail)
        }
        NemesisKind::Rolling => (
            Plan::Rolling,
            format!("rolling restart of nodes {}", names(&members)),
        ),
        NemesisKind::Membership => {
            let leaving = *members.choose(rng).expect("the cluster has members");
            let mut keys: Vec<i32> = (0..opts.keys as i32).collect();
            keys.shuffle(rng);
            keys.truncate(MEMBERSHIP_KEYS_MAX);
            keys.sort();
            let shown: Vec<String> = keys.iter().map(|&p| key_of(p)).collect();
            let detail = format!(
                "node {} joins, {} move onto it, node {} leaves",
                lab.next_id(),
                shown.join(","),
                lab.id(leaving)
            );
            (Plan::Membership(leaving, keys), detail)
        }
    }
}

/// Keys a membership turn reassigns onto the node that joins (the balancer and the
/// decommission move the rest).
const MEMBERSHIP_KEYS_MAX: usize = 3;

/// A random member, a key's leader, or a minority of the members.
async fn targets(rng: &mut ChaCha8Rng, lab: &Lab, opts: &RunOpts) -> (Vec<usize>, String) {
    let members = lab.members();
    let n = members.len();
    let any = |rng: &mut ChaCha8Rng| *members.choose(rng).expect("the cluster has members");
    match rng.gen_range(0..3) {
        0 => (vec![any(rng)], "a random node".into()),
        1 => {
            let partition = rng.gen_range(0..opts.keys) as i32;
            let key = key_of(partition);
            match leader_of(lab, partition).await {
                Some(i) => (vec![i], format!("leader of {key}")),
                None => (
                    vec![any(rng)],
                    format!("a random node: no leader known for {key}"),
                ),
            }
        }
        _ => {
            let mut all = members.clone();
            all.shuffle(rng);
            all.truncate(((n - 1) / 2).max(1));
            all.sort();
            (all, "a minority".into())
        }
    }
}

/// Every key's leader (as a node index), as the cluster says now; empty when nobody answers
/// in time.
async fn leaders(lab: &Lab, keys: u32) -> BTreeMap<i32, usize> {
    let ask = async {
        let admin = super::workload::admin(&lab.bootstrap()).await.ok()?;
        admin.cluster().refresh_metadata().await.ok()
    };
    let Ok(Some(meta)) = tokio::time::timeout(Duration::from_secs(5), ask).await else {
        return BTreeMap::new();
    };
    (0..keys as i32)
        .filter_map(|p| {
            let leader = meta.leader(TOPIC, p)?;
            Some((p, lab.index_of(u64::try_from(leader).ok()?)?))
        })
        .collect()
}

/// Who leads `partition`, as the cluster says; `None` when nobody answers in time.
async fn leader_of(lab: &Lab, partition: i32) -> Option<usize> {
    let keys = u32::try_from(partition).ok()? + 1;
    leaders(lab, keys).await.get(&partition).copied()
}

/// The keys whose leader, as the cluster says now, is one of `nodes`.
async fn led_by(lab: &Lab, keys: u32, nodes: &[usize]) -> Vec<String> {
    leaders(lab, keys)
        .await
        .into_iter()
        .filter(|(_, i)| nodes.contains(i))
        .map(|(p, _)| key_of(p))
        .collect()
}

/// A grouping of the nodes as a grudge (who drops packets from whom), and its description.
async fn partition(
    rng: &mut ChaCha8Rng,
    lab: &Lab,
    opts: &RunOpts,
) -> (BTreeMap<usize, BTreeSet<usize>>, String) {
    let mut shuffled = lab.members();
    let n = shuffled.len();
    shuffled.shuffle(rng);
    let ids = |set: &[usize]| -> String {
        let mut ids: Vec<u64> = set.iter().map(|&i| lab.id(i)).collect();
        ids.sort();
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        format!("{{{}}}", ids.join(","))
    };
    match rng.gen_range(0..5) {
        0 => {
            let (a, b) = shuffled.split_at(n / 2);
            (cut(a, b), format!("halves {} | {}", ids(a), ids(b)))
        }
        1 => {
            let (a, b) = shuffled.split_at(1);
            (cut(a, b), format!("isolate node {}", ids(a)))
        }
        2 => (
            ring(&shuffled),
            format!("majorities ring {}", ids(&shuffled)),
        ),
        3 if n >= 3 => {
            let (a, rest) = shuffled.split_at((n - 1) / 2);
            let (bridge, b) = rest.split_at(1);
            let what = format!(
                "bridge {} | {} | {} (node {} sees both sides)",
                ids(a),
                ids(bridge),
                ids(b),
                lab.id(bridge[0])
            );
            (cut(a, b), what)
        }
        _ => {
            let partition = rng.gen_range(0..opts.keys) as i32;
            let leader = leader_of(lab, partition).await.unwrap_or(shuffled[0]);
            let rest: Vec<usize> = lab.members().into_iter().filter(|&i| i != leader).collect();
            let what = format!(
                "isolate node {} (leader of {})",
                lab.id(leader),
                key_of(partition)
            );
            (cut(&[leader], &rest), what)
        }
    }
}

/// Every node of `a` and every node of `b` drop each other's packets.
fn cut(a: &[usize], b: &[usize]) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut grudge: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for &x in a {
        for &y in b {
            grudge.entry(x).or_default().insert(y);
            grudge.entry(y).or_default().insert(x);
        }
    }
    grudge
}

/// Jepsen's majorities ring: in a ring of the nodes, each node hears only from the nodes
/// nearest it that, with itself, make a majority. No two nodes see the same majority, so
/// every node believes it can form a quorum.
fn ring(order: &[usize]) -> BTreeMap<usize, BTreeSet<usize>> {
    let n = order.len();
    let majority = n / 2 + 1;
    let mut grudge = BTreeMap::new();
    for (pos, &node) in order.iter().enumerate() {
        // Heard from: itself and the next `majority - 1` nodes clockwise, split across both
        // sides where it can be.
        let right = majority / 2;
        let left = majority - 1 - right;
        let mut heard = BTreeSet::new();
        for d in 1..=right {
            heard.insert(order[(pos + d) % n]);
        }
        for d in 1..=left {
            heard.insert(order[(pos + n - d) % n]);
        }
        let drops: BTreeSet<usize> = order
            .iter()
            .copied()
            .filter(|&x| x != node && !heard.contains(&x))
            .collect();
        grudge.insert(node, drops);
    }
    grudge
}

async fn apply(lab: &mut Lab, plan: &Plan) -> Result<(), LabError> {
    match plan {
        Plan::Kill(nodes) => nodes.iter().for_each(|&i| lab.kill(i)),
        Plan::Pause(nodes) => nodes.iter().for_each(|&i| lab.pause(i)),
        Plan::Partition(grudge) => {
            for (&i, from) in grudge {
                lab.set_grudge(i, from)?;
            }
        }
        Plan::Clock(i, step) => lab.set_clock(*i, step)?,
        Plan::Rolling => {
            for i in lab.members() {
                lab.restart(i).await?;
                // Let it catch up before the next one goes down, as an operator would.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Plan::Membership(leaving, keys) => {
            let done = membership::turn(lab, *leaving, keys).await?;
            println!("railyard-jepsen: membership: {done}");
        }
    }
    Ok(())
}

async fn heal(lab: &mut Lab, plan: &Plan) -> Result<(), LabError> {
    match plan {
        Plan::Kill(nodes) => {
            for &i in nodes {
                lab.start(i)?;
            }
        }
        Plan::Pause(nodes) => nodes.iter().for_each(|&i| lab.resume(i)),
        Plan::Partition(grudge) => {
            let none = BTreeSet::new();
            for &i in grudge.keys() {
                lab.set_grudge(i, &none)?;
            }
        }
        Plan::Clock(i, _) => lab.set_clock(*i, "+0")?,
        Plan::Rolling | Plan::Membership(..) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities_ring_of_five_hears_a_distinct_majority_at_each_node() {
        let order = [0, 1, 2, 3, 4];
        let grudge = ring(&order);
        let mut majorities = BTreeSet::new();
        for (&node, drops) in &grudge {
            let heard: BTreeSet<usize> = (0..5).filter(|x| !drops.contains(x)).collect();
            assert!(heard.contains(&node));
            assert_eq!(heard.len(), 3, "node {node} hears {heard:?}");
            majorities.insert(heard);
        }
        assert_eq!(majorities.len(), 5);
    }

    #[test]
    fn majorities_ring_of_three_cuts_one_direction_of_each_link() {
        let grudge = ring(&[0, 1, 2]);
        for (&node, drops) in &grudge {
            assert_eq!(drops.len(), 1, "node {node} drops {drops:?}");
        }
    }

    #[test]
    fn cut_is_symmetric_and_leaves_each_side_whole() {
        let grudge = cut(&[0], &[1, 2]);
        assert_eq!(grudge[&0], BTreeSet::from([1, 2]));
        assert_eq!(grudge[&1], BTreeSet::from([0]));
        assert_eq!(grudge[&2], BTreeSet::from([0]));
    }
}
