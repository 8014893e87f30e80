//! The producer's sender task: drains ready batches from the accumulator, groups them by
//! leader into Produce requests (at most `max_in_flight` per broker), and applies each
//! partition's answer: acknowledge the records, requeue the batch for a retry (after a
//! leadership change, a timeout, a lost connection), or fail it (an error the broker will
//! give again, such as MESSAGE_TOO_LARGE). It also expires batches past
//! `delivery_timeout_ms` and performs the epoch bump the accumulator calls for.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::accumulator::{Batch, TopicPartition};
use super::{Acks, Completion, RecordMetadata, Shared};
use crate::cluster::{Backoff, Cluster};
use crate::codec::{encode_batch, OutRecord, ProducerIdentity};
use crate::conn::lock;
use crate::error::{check_code, BrokerRef, Error, Result};
use crate::tasks::TaskSet;

/// How often the loop looks again at partitions without a known leader.
const NO_LEADER_RECHECK_MS: u64 = 100;

/// The longest the loop sleeps with nothing to do (expiry is checked at least this often).
const IDLE_WAKE_MS: u64 = 1_000;

/// The producer id and epoch batches are written under (`-1`s without idempotence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub producer_id: i64,
    pub epoch: i16,
}

impl Identity {
    pub(crate) fn none() -> Identity {
        Identity {
            producer_id: -1,
            epoch: -1,
        }
    }
}

/// InitProducerId: a new id (`current` `None`), or the next epoch of `current` (KIP-360).
pub(crate) async fn init_producer_id(
    cluster: &Cluster,
    current: Option<Identity>,
) -> Result<Identity> {
    cluster
        .retry(|| async {
            let conn = cluster.any_connection().await?;
            let cur = current.unwrap_or(Identity::none());
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(kafka_protocol::messages::ProducerId(cur.producer_id))
                .with_producer_epoch(cur.epoch);
            let resp = conn.call(&req).await?;
            check_code(
                resp.error_code,
                conn.broker().clone(),
                "InitProducerId",
                || None,
            )?;
            Ok(Identity {
                producer_id: resp.producer_id.0,
                epoch: resp.producer_epoch,
            })
        })
        .await
}

/// One Produce request's batches and what came back.
struct Outcome {
    leader: i32,
    batches: Vec<Batch<Completion>>,
    result: Result<(BrokerRef, Option<ProduceResponse>)>,
}

/// The sender loop; returns once the producer is closing and nothing is left.
pub(crate) async fn run(shared: Arc<Shared>, mut identity: Identity) {
    let mut per_broker: HashMap<i32, usize> = HashMap::new();
    let mut requests: TaskSet<Outcome> = TaskSet::new();
    let mut turns = Turns::new();
    let mut last_refresh: Option<Instant> = None;
    loop {
        expire(&shared);
        let bump_due = {
            let acc = lock(&shared.acc);
            acc.needs_bump() && acc.in_flight() == 0
        };
        if bump_due {
            bump(&shared, &mut identity).await;
        }
        // Dispatch until every leader's window is full or nothing is ready: one request per
        // leader per pass, and nothing else wakes this loop while `send` waits on a full
        // buffer, so a single pass would leave the window at one request between completions.
        let mut leaderless = false;
        loop {
            let pass = dispatch(
                &shared,
                identity,
                &mut per_broker,
                &mut turns,
                &mut requests,
            );
            leaderless |= pass.leaderless;
            if pass.requests == 0 {
                break;
            }
        }
        if leaderless && last_refresh.is_none_or(|t| t.elapsed() >= backoff_of(&shared)) {
            last_refresh = Some(Instant::now());
            let cluster = shared.cluster.clone();
            tokio::spawn(async move { cluster.refresh_metadata().await });
        }
        if shared.closing.load(Ordering::Acquire)
            && shared.outstanding.load(Ordering::Acquire) == 0
            && requests.is_empty()
        {
            return;
        }
        let sleep = sleep_for(&shared, leaderless);
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(done) = requests.join_next(), if !requests.is_empty() => {
                // A request task cannot panic short of a bug; its batches would be lost, so
                // that is worth a panic here too.
                let outcome = done.expect("a produce request task panicked");
                handle(&shared, &mut per_broker, outcome);
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn backoff_of(shared: &Shared) -> Duration {
    Duration::from_millis(shared.config.client.retry_backoff_ms)
}

fn sleep_for(shared: &Shared, leaderless: bool) -> Duration {
    let now = Instant::now();
    let mut wake = now + Duration::from_millis(IDLE_WAKE_MS);
    if let Some(t) = lock(&shared.acc).next_wakeup() {
        if t > now {
            wake = wake.min(t);
        }
    }
    if leaderless {
        wake = wake.min(now + Duration::from_millis(NO_LEADER_RECHECK_MS));
    }
    wake.saturating_duration_since(now)
}

/// Fails the queued batches older than the delivery timeout.
fn expire(shared: &Shared) {
    let timeout = Duration::from_millis(shared.config.delivery_timeout_ms);
    let expired = lock(&shared.acc).expire(Instant::now(), timeout);
    for b in expired {
        fail_records(shared, b, &Error::DeliveryTimeout(timeout));
    }
}

/// What one dispatch pass did.
struct Pass {
    /// Requests started (at most one per leader).
    requests: usize,
    /// Whether some ready partition has no known leader.
    leaderless: bool,
}

/// Starts a Produce request per leader for the ready batches, within each leader's window.
fn dispatch(
    shared: &Arc<Shared>,
    identity: Identity,
    per_broker: &mut HashMap<i32, usize>,
    turns: &mut Turns,
    requests: &mut TaskSet<Outcome>,
) -> Pass {
    let now = Instant::now();
    let flushing =
        shared.flushing.load(Ordering::Acquire) > 0 || shared.closing.load(Ordering::Acquire);
    let meta = shared.cluster.metadata();
    let mut acc = lock(&shared.acc);
    let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
    let mut leaderless = false;
    for tp in acc.ready(now, flushing) {
        match meta.leader(&tp.topic, tp.partition) {
            Some(l) => by_leader.entry(l).or_default().push(tp),
            None => leaderless = true,
        }
    }
    let mut started = 0;
    for (leader, tps) in by_leader {
        let busy = per_broker.entry(leader).or_default();
        if *busy >= shared.config.max_in_flight {
            continue;
        }
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        for tp in tps {
            if !batches.is_empty() && bytes >= shared.config.max_request_size_bytes {
                break;
            }
            if let Some(b) = acc.drain(&tp) {
                bytes += b.size_bytes;
                batches.push(b);
            }
        }
        if batches.is_empty() {
            continue;
        }
        *busy += 1;
        started += 1;
        let (queued, next_turn) = oneshot::channel();
        let turn = turns.insert(leader, next_turn);
        requests.spawn(produce(
            shared.clone(),
            identity,
            leader,
            batches,
            (turn, queued),
        ));
    }
    Pass {
        requests: started,
        leaderless,
    }
}

/// Per leader, the signal that the last request dispatched to it is queued on its socket.
/// Each request task encodes its batches on its own, but waits for its predecessor's signal
/// before queuing: tasks spawned in order may run in any order on a multi-threaded runtime,
/// and a batch whose sequence reaches the broker before the batch it follows is refused
/// (UNKNOWN_PRODUCER_ID for a new producer, OUT_OF_ORDER_SEQUENCE_NUMBER after).
type Turns = HashMap<i32, oneshot::Receiver<()>>;

/// Sends one Produce request to `leader`.
async fn produce(
    shared: Arc<Shared>,
    identity: Identity,
    leader: i32,
    mut batches: Vec<Batch<Completion>>,
    (turn, queued): (Option<oneshot::Receiver<()>>, oneshot::Sender<()>),
) -> Outcome {
    let request = match build_request(&shared, identity, &batches) {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                leader,
                batches,
                result: Err(e),
            }
        }
    };
    let result = async {
        let conn = shared.cluster.connection(leader).await?;
        let broker = conn.broker().clone();
        if shared.config.acks == Acks::None {
            conn.send_only(&request).await?;
            return Ok((broker, None));
        }
        // Requests to one leader reach its socket in dispatch order (see `Turns`).
        let turn = async {
            if let Some(t) = turn {
                let _ = t.await;
            }
        };
        Ok((
            broker,
            Some(conn.call_in_turn(&request, turn, queued).await?),
        ))
    }
    .await;
    batches.shrink_to_fit();
    Outcome {
        leader,
        batches,
        result,
    }
}

fn build_request(
    shared: &Shared,
    identity: Identity,
    batches: &[Batch<Completion>],
) -> Result<ProduceRequest> {
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for b in batches {
        let records: Vec<OutRecord> = b
            .records
            .iter()
            .map(|r| OutRecord {
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
                timestamp_ms: r.timestamp_ms,
            })
            .collect();
        let id = ProducerIdentity {
            producer_id: identity.producer_id,
            producer_epoch: identity.epoch,
            base_sequence: b.base_sequence.unwrap_or(-1),
        };
        let data = encode_batch(&records, id, shared.config.compression).map_err(|reason| {
            Error::Encode {
                api: "Produce",
                reason,
            }
        })?;
        shared.batches_sent.fetch_add(1, Ordering::Relaxed);
        shared
            .batch_bytes_sent
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        shared
            .batch_records_sent
            .fetch_add(b.records.len() as u64, Ordering::Relaxed);
        topics.entry(&b.tp.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(b.tp.partition)
                .with_records(Some(data)),
        );
    }
    let topic_data = topics
        .into_iter()
        .map(|(name, parts)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_partition_data(parts)
        })
        .collect();
    Ok(ProduceRequest::default()
        .with_acks(shared.config.acks.wire())
        .with_timeout_ms(shared.config.client.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topic_data(topic_data))
}

/// Applies one request's outcome to each of its batches.
fn handle(shared: &Shared, per_broker: &mut HashMap<i32, usize>, outcome: Outcome) {
    let busy = per_broker.entry(outcome.leader).or_default();
    *busy = busy.saturating_sub(1);
    match outcome.result {
        Err(e) => {
            for b in outcome.batches {
                retry_or_fail(shared, b, &e, e.is_unknown_outcome());
            }
        }
        Ok((_, None)) => {
            for b in outcome.batches {
                succeed(shared, b, -1, -1);
            }
        }
        Ok((broker, Some(resp))) => {
            let mut answers: HashMap<(String, i32), PartitionProduceResponse> = HashMap::new();
            for t in resp.responses {
                for p in t.partition_responses {
                    answers.insert((t.name.0.to_string(), p.index), p);
                }
            }
            for b in outcome.batches {
                let key = (b.tp.topic.clone(), b.tp.partition);
                match answers.remove(&key) {
                    Some(p) => apply_answer(shared, b, &broker, p),
                    None => {
                        let e = Error::Protocol {
                            broker: broker.clone(),
                            reason: format!("Produce response does not answer {}", b.tp),
                        };
                        retry_or_fail(shared, b, &e, true);
                    }
                }
            }
        }
    }
    shared.wake.notify_one();
}

fn apply_answer(
    shared: &Shared,
    b: Batch<Completion>,
    broker: &BrokerRef,
    p: PartitionProduceResponse,
) {
    let code = ResponseError::try_from_code(p.error_code);
    match code {
        None | Some(ResponseError::DuplicateSequenceNumber) => {
            succeed(shared, b, p.base_offset, p.log_append_time_ms);
        }
        Some(code) => {
            let context = Some(format!(
                "{}{}",
                b.tp,
                p.error_message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
            let e = Error::Kafka {
                broker: broker.clone(),
                api: "Produce",
                code,
                context,
            };
            // Too large for the topic's max.message.bytes as one batch: send it as two (the
            // Java client splits too); a single record too large fails below.
            let b = if code == ResponseError::MessageTooLarge {
                match lock(&shared.acc).split_requeue(b, Instant::now()) {
                    Ok(()) => return,
                    Err(single) => single,
                }
            } else {
                b
            };
            // The broker has no state for this producer (retention deleted every batch it
            // had written, or its producer id expired): the batch was refused, not written.
            // As the Java client does (KIP-360), bump the epoch, which restarts every
            // sequence at 0, and send it again.
            let unknown_producer = code == ResponseError::UnknownProducerId
                && b.base_sequence.is_some()
                && b.created.elapsed() < Duration::from_millis(shared.config.delivery_timeout_ms);
            if unknown_producer {
                let mut acc = lock(&shared.acc);
                acc.request_bump();
                drop(acc);
                requeue(shared, b, false);
                return;
            }
            // A gap behind a batch that is itself being retried is that retry's doing.
            let behind_retry = code == ResponseError::OutOfOrderSequenceNumber
                && b.base_sequence
                    .is_some_and(|s| lock(&shared.acc).has_earlier_unacknowledged(&b.tp, s));
            let maybe_written = matches!(
                code,
                ResponseError::RequestTimedOut | ResponseError::NotEnoughReplicasAfterAppend
            );
            if behind_retry {
                requeue(shared, b, maybe_written);
            } else {
                retry_or_fail(shared, b, &e, maybe_written);
            }
        }
    }
}

fn retry_or_fail(shared: &Shared, b: Batch<Completion>, e: &Error, maybe_written: bool) {
    let timeout = Duration::from_millis(shared.config.delivery_timeout_ms);
    let expired = b.created.elapsed() >= timeout;
    // `attempts` counts sends, so the first send plus `retries` more.
    let retries_left = b.attempts <= shared.config.retries;
    if e.is_retriable() && !expired && retries_left {
        if e.needs_metadata_refresh() {
            let cluster = shared.cluster.clone();
            tokio::spawn(async move { cluster.refresh_metadata().await });
        }
        requeue(shared, b, maybe_written);
        return;
    }
    lock(&shared.acc).complete(&b, true);
    let err = if expired && e.is_retriable() {
        Error::DeliveryTimeout(timeout)
    } else {
        e.clone()
    };
    fail_records(shared, b, &err);
}

fn requeue(shared: &Shared, b: Batch<Completion>, maybe_written: bool) {
    let mut backoff = Backoff::new(&shared.config.client);
    let mut wait = backoff.next();
    for _ in 1..b.attempts.min(8) {
        wait = backoff.next();
    }
    lock(&shared.acc).requeue(b, Instant::now() + wait, maybe_written);
}

fn succeed(shared: &Shared, b: Batch<Completion>, base_offset: i64, log_append_time_ms: i64) {
    lock(&shared.acc).complete(&b, false);
    let n = b.records.len();
    for (i, r) in b.records.into_iter().enumerate() {
        let offset = if base_offset >= 0 {
            base_offset + i as i64
        } else {
            -1
        };
        let timestamp_ms = if log_append_time_ms >= 0 {
            log_append_time_ms
        } else {
            r.timestamp_ms
        };
        r.completion.finish(Ok(RecordMetadata {
            partition: b.tp.partition,
            offset,
            timestamp_ms,
        }));
    }
    shared.record_done(n);
}

fn fail_records(shared: &Shared, b: Batch<Completion>, e: &Error) {
    let n = b.records.len();
    for r in b.records {
        r.completion.finish(Err(e.clone()));
    }
    shared.record_done(n);
}

/// KIP-360: the next epoch of the current id (a new id if the broker cannot bump), then every
/// partition's sequence restarts at 0; batches that may have been written fail.
async fn bump(shared: &Shared, identity: &mut Identity) {
    let bumped = match init_producer_id(&shared.cluster, Some(*identity)).await {
        Ok(id) => Ok(id),
        Err(_) => init_producer_id(&shared.cluster, None).await,
    };
    match bumped {
        Ok(id) => {
            *identity = id;
            let unsafe_batches = lock(&shared.acc).reset_sequences();
            for b in unsafe_batches {
                let e = Error::UnknownOutcome(format!(
                    "a batch for {} may or may not have been written before the producer's epoch was bumped",
                    b.tp
                ));
                fail_records(shared, b, &e);
            }
        }
        // The next turn of the loop tries again; queued records expire meanwhile if it never
        // succeeds.
        Err(_) => tokio::time::sleep(backoff_of(shared)).await,
    }
}
