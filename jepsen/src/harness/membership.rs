//! One turn of the membership nemesis: a broker joins, key partitions move onto it, and
//! another broker leaves, as an operator grows and shrinks a cluster under load.
//!
//! 1. A new node (the next id, a namespace of its own) starts with `join = true` and the
//!    controller voters' addresses, and registers through the controller.
//! 2. The chosen keys' partitions are reassigned onto it (AlterPartitionReassignments), in
//!    place of the leaving node where it holds them, and the moves complete.
//! 3. If the leaving node is a controller voter, the new node is promoted (AddRaftVoter) and
//!    the leaving one demoted (RemoveRaftVoter), so the quorum keeps its size.
//! 4. The leaving node is decommissioned (UnregisterBroker), drained of every replica,
//!    stopped with SIGTERM, and unregistered once its session expires.
//!
//! The balancer runs meanwhile and moves more onto the new node. Each step must finish
//! within [`STEP_WITHIN`]: one that does not fails the run, since a move or a drain that
//! never completes on a healthy cluster is a liveness bug.

use std::future::Future;
use std::time::{Duration, Instant};

use railyard_client::{Admin, Error, ResponseError, TopicPartition};

use super::lab::{Lab, LabError};
use super::workload::key_of;
use super::TOPIC;

/// Each step of a turn must finish within this.
const STEP_WITHIN: Duration = Duration::from_secs(90);
/// Pause between two looks at the cluster while a step runs.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Runs one turn: a node joins, `keys` move onto it, node `leaving` (an index) leaves.
/// Returns what happened, for the log.
pub async fn turn(lab: &mut Lab, leaving: usize, keys: &[i32]) -> Result<String, LabError> {
    let admin = super::workload::admin(&lab.bootstrap()).await?;
    let joiner = lab.add_joiner().await?;
    let (new, old) = (node_id(lab, joiner), node_id(lab, leaving));
    until(&format!("node {new} registered"), || async {
        match admin.describe_brokers().await {
            Ok(b) if b.iter().any(|b| b.node_id == new && !b.fenced) => Step::Done(()),
            Ok(_) => Step::NotYet(format!("node {new} not listed unfenced")),
            Err(e) => step_error(e),
        }
    })
    .await?;
    let moved = move_keys(&admin, keys, new, old).await?;
    let mut quorum = String::new();
    if lab.is_voter(leaving) {
        change_voters(&admin, new, old).await?;
        lab.set_voter(joiner, true);
        lab.set_voter(leaving, false);
        quorum = format!("; voter {new} in, voter {old} out");
    }
    drain(&admin, old).await?;
    lab.retire(leaving).await?;
    until(&format!("node {old} unregistered"), || async {
        match admin.describe_brokers().await {
            Ok(b) if !b.iter().any(|b| b.node_id == old) => Step::Done(()),
            Ok(_) => Step::NotYet(format!("node {old} still listed")),
            Err(e) => step_error(e),
        }
    })
    .await?;
    Ok(format!(
        "node {new} joined, {moved} moved onto it{quorum}, node {old} drained, stopped and \
         unregistered"
    ))
}

fn node_id(lab: &Lab, i: usize) -> i32 {
    i32::try_from(lab.id(i)).expect("node ids are at most 253")
}

/// Reassigns each key's partition onto `new` (in place of `old` where it holds one, else of
/// its last replica) and waits until every move completed. Returns the moves made.
async fn move_keys(admin: &Admin, keys: &[i32], new: i32, old: i32) -> Result<String, LabError> {
    let meta = admin
        .cluster()
        .refresh_metadata()
        .await
        .map_err(|e| LabError::NotReady(format!("membership: metadata: {e}")))?;
    let Some(topic) = meta.topics.get(TOPIC) else {
        return Err(LabError::NotReady(format!("membership: no topic {TOPIC}")));
    };
    // As AlterPartitionReassignments takes them: `Some(target)`, never a cancel.
    let mut moves: Vec<(TopicPartition, Option<Vec<i32>>)> = Vec::new();
    for &p in keys {
        let Some(part) = topic.partitions.get(p as usize) else {
            continue;
        };
        if part.replicas.contains(&new) {
            continue; // The balancer moved it already.
        }
        let mut target = part.replicas.clone();
        match target.iter().position(|&b| b == old) {
            Some(at) => target[at] = new,
            None => *target.last_mut().expect("a partition has replicas") = new,
        }
        let tp = TopicPartition {
            topic: TOPIC.to_string(),
            partition: p,
        };
        moves.push((tp, Some(target)));
    }
    if moves.is_empty() {
        return Ok("no key (the balancer had moved them)".to_string());
    }
    until("the reassignments recorded", || async {
        match admin.alter_partition_reassignments(&moves).await {
            Ok(()) => Step::Done(()),
            Err(e) => step_error(e),
        }
    })
    .await?;
    until("the moves onto the new node completed", || async {
        let moving = match admin.list_partition_reassignments().await {
            Ok(m) => m,
            Err(e) => return step_error(e),
        };
        let meta = match admin.cluster().refresh_metadata().await {
            Ok(m) => m,
            Err(e) => return step_error(e),
        };
        let done = moves.iter().all(|(tp, _)| {
            let landed = meta
                .topics
                .get(TOPIC)
                .and_then(|t| t.partitions.get(tp.partition as usize))
                .is_some_and(|p| p.replicas.contains(&new));
            landed && !moving.iter().any(|m| m.tp == *tp)
        });
        if done {
            Step::Done(())
        } else {
            Step::NotYet(format!("{} moves in flight", moving.len()))
        }
    })
    .await?;
    let shown: Vec<String> = moves
        .iter()
        .map(|(tp, target)| {
            format!(
                "{} to {:?}",
                key_of(tp.partition),
                target.as_deref().unwrap_or_default()
            )
        })
        .collect();
    Ok(shown.join(", "))
}

/// Promotes `new` to controller voter and demotes `old`. A retry after an answer that was
/// lost finds the change made (DUPLICATE_VOTER, VOTER_NOT_FOUND): that is success.
async fn change_voters(admin: &Admin, new: i32, old: i32) -> Result<(), LabError> {
    until(&format!("node {new} a controller voter"), || async {
        match admin.add_controller_voter(new).await {
            Ok(()) => Step::Done(()),
            Err(e) if e.kafka_code() == Some(ResponseError::DuplicateVoter) => Step::Done(()),
            Err(e) => step_error(e),
        }
    })
    .await?;
    until(
        &format!("node {old} no longer a controller voter"),
        || async {
            match admin.remove_controller_voter(old).await {
                Ok(()) => Step::Done(()),
                Err(e) if e.kafka_code() == Some(ResponseError::VoterNotFound) => Step::Done(()),
                Err(e) => step_error(e),
            }
        },
    )
    .await
}

/// Decommissions `old` and waits until it holds no replica of any topic.
async fn drain(admin: &Admin, old: i32) -> Result<(), LabError> {
    until(&format!("node {old}'s decommission recorded"), || async {
        match admin.unregister_broker(old).await {
            Ok(()) => Step::Done(()),
            Err(e) => step_error(e),
        }
    })
    .await?;
    until(&format!("node {old} drained"), || async {
        let meta = match admin.cluster().refresh_metadata().await {
            Ok(m) => m,
            Err(e) => return step_error(e),
        };
        let held = meta
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&old))
            .count();
        if held == 0 {
            Step::Done(())
        } else {
            Step::NotYet(format!("{held} replicas left"))
        }
    })
    .await
}

/// What one look at a step found.
enum Step<T> {
    Done(T),
    /// Not yet, and why (the last reason is reported on a timeout).
    NotYet(String),
    /// Failed: no retry can cure it.
    Fatal(String),
}

/// A client error as a step's outcome: retriable ones are tried again.
fn step_error<T>(e: Error) -> Step<T> {
    if e.is_retriable() {
        Step::NotYet(e.to_string())
    } else {
        Step::Fatal(e.to_string())
    }
}

/// Polls `step` until it is done, within [`STEP_WITHIN`].
async fn until<T, F, Fut>(what: &str, mut step: F) -> Result<T, LabError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Step<T>>,
{
    let deadline = Instant::now() + STEP_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(left, step()).await {
            Ok(Step::Done(v)) => return Ok(v),
            Ok(Step::NotYet(why)) => why,
            Ok(Step::Fatal(e)) => {
                return Err(LabError::NotReady(format!("membership: {what}: {e}")))
            }
            Err(_) => "the step itself timed out".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LabError::NotReady(format!(
                "membership: {what}: not within {STEP_WITHIN:?} ({last})"
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
