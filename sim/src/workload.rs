//! Simulated Kafka clients: producers (acks=all, acks=1 and idempotent) and assign-mode
//! consumers writing
//! and reading unique integer values, recording every operation in the Jepsen queue history
//! (`railyard_jepsen::History`, the JSONL format of CHECKER.md).
//!
//! Clients talk to nodes through the core's [`Request`]/[`Response`] API with simulated latency.
//! They behave like real Kafka clients: they cache the leader per partition, follow
//! NOT_LEADER hints, time out, and record outcomes honestly — `fail` only when the write surely
//! did not happen, `info` when it may have (after which the process is replaced by a new one, as
//! Jepsen requires). An acks=1 acknowledgement is recorded as `info`: acks=1 promises nothing
//! about surviving a leader failover, so the checker must not count it as committed.
//!
//! Idempotent producers behave like the Java client with `enable.idempotence=true`: they get a
//! producer id first (InitProducerId), number their batches per partition, and retry a batch
//! with the same sequence number across timeouts and leader changes until it is acknowledged;
//! only a fatal answer (a sequence or epoch error) or too many attempts end the operation
//! without an ok (`info` if any attempt may have written it), after which the client starts
//! over with a new producer id. Their retries must never be written twice: a `duplicate` in
//! the history is an error.

use std::collections::BTreeMap;

use railyard_core::api::{Acks, ClientError, Request, Response};
use railyard_core::batch::{decode_records, BatchBuilder, DecodedRecord};
use railyard_core::types::{NodeId, Offset, TopicPartition};
use railyard_jepsen::{Event, History, Op};

use crate::group_client::{GroupLedger, GroupOp, Member};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What a client does.
#[derive(Clone, Debug)]
pub enum Role {
    Producer {
        acks: Acks,
    },
    /// acks=all with idempotence (see the module docs).
    IdempotentProducer,
    Consumer,
    /// A member of a consumer group ([`crate::group_client`]).
    GroupConsumer,
}

/// Most attempts of one idempotent send before the client gives up on it.
const IDEMPOTENT_ATTEMPTS_MAX: u32 = 40;

/// An idempotent producer's state.
#[derive(Clone, Debug, Default)]
pub struct Idempotence {
    /// (producer id, epoch), once InitProducerId answered.
    pub producer: Option<(i64, i16)>,
    pub next_seq: BTreeMap<TopicPartition, i32>,
    /// The batch being sent, resent as it is until it is acknowledged.
    pub retry: Option<Retry>,
}

#[derive(Clone, Debug)]
pub struct Retry {
    pub tp: TopicPartition,
    pub value: u64,
    pub batch: bytes::Bytes,
    pub attempts: u32,
    /// Some attempt may have been written (it timed out, or its outcome was unknown).
    pub maybe_written: bool,
}

/// An operation in flight.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub request_id: u64,
    pub node: NodeId,
    pub deadline_us: u64,
    pub op: PendingOp,
}

#[derive(Clone, Debug)]
pub enum PendingOp {
    Send { tp: TopicPartition, value: u64 },
    Poll { tp: TopicPartition, from: Offset },
    InitProducerId,
    Group(GroupOp),
}

pub struct Client {
    pub id: usize,
    pub role: Role,
    /// Jepsen process id; replaced after an `info`.
    pub process: u64,
    pub keys: Vec<TopicPartition>,
    pub leader_hint: BTreeMap<TopicPartition, NodeId>,
    /// Consumer positions (next offset to read).
    pub positions: BTreeMap<TopicPartition, Offset>,
    pub in_flight: Option<InFlight>,
    pub next_key: usize,
    /// Whether an assign must be recorded before the next poll (new process).
    pub needs_assign: bool,
    /// Stop issuing new operations (end of run).
    pub stopped: bool,
    /// Final catch-up reader: polls its keys until each reaches `final_targets`.
    pub final_targets: Option<BTreeMap<TopicPartition, Offset>>,
    pub idempotence: Idempotence,
    /// Set for [`Role::GroupConsumer`].
    pub member: Option<Member>,
}

impl Client {
    /// Follows a NOT_LEADER answer for `tp`: to the leader it names, or forgets the hint.
    fn follow_hint(&mut self, tp: &TopicPartition, e: &ClientError) {
        match e {
            ClientError::NotLeader { leader: Some(l) } => {
                self.leader_hint.insert(tp.clone(), *l);
            }
            ClientError::NotLeader { leader: None } => {
                self.leader_hint.remove(tp);
            }
            _ => {}
        }
    }
}

/// Shared state of the workload: the history and the allocators for processes and values.
pub struct Workload {
    pub history: History,
    pub clients: Vec<Client>,
    pub next_process: u64,
    pub next_value: u64,
    pub next_request: u64,
    pub nodes: Vec<NodeId>,
    /// Every value any producer ever tried to send, for the "no record nobody sent" check.
    pub sent_values: BTreeMap<u64, TopicPartition>,
    pub acked_all: u64,
    pub acked_leader: u64,
    pub send_fail: u64,
    /// Sends refused because the leader's disk was (almost) full.
    pub send_refused_disk_full: u64,
    pub send_info: u64,
    /// Idempotent sends resent after a timeout or a retriable error.
    pub idempotent_retries: u64,
    /// Idempotent producers that started over with a new producer id.
    pub idempotent_resets: u64,
    pub polls_ok: u64,
    pub values_read: u64,
    /// Per tp, (time_us) of the last acks=all ok send, for the liveness check.
    pub last_ok_send_us: BTreeMap<TopicPartition, u64>,
    /// What the group checks know, per group.
    pub groups: BTreeMap<String, GroupLedger>,
    /// Broken promises the workload saw (committed offsets lost or skipping), for the world
    /// to report.
    pub violations: Vec<String>,
}

/// The simulated wall clock's epoch (2026-01-01T00:00:00Z): true wall time is this plus the
/// simulated time; a node's wall clock adds its skew and steps.
pub const WALL_EPOCH_MS: i64 = 1_767_225_600_000;

/// How long a client waits for a reply before giving up (simulated µs).
pub const CLIENT_TIMEOUT_US: u64 = 2_000_000;
/// Largest fetch response a consumer asks for.
pub const FETCH_MAX_BYTES: u64 = 16 * 1024;

impl Workload {
    pub fn new(nodes: Vec<NodeId>) -> Self {
        Workload {
            history: History::new(),
            clients: Vec::new(),
            next_process: 0,
            next_value: 1,
            next_request: 1,
            nodes,
            sent_values: BTreeMap::new(),
            acked_all: 0,
            acked_leader: 0,
            send_fail: 0,
            send_refused_disk_full: 0,
            send_info: 0,
            idempotent_retries: 0,
            idempotent_resets: 0,
            polls_ok: 0,
            values_read: 0,
            last_ok_send_us: BTreeMap::new(),
            groups: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    /// Adds a member of consumer group `group`, subscribed to `keys`.
    pub fn add_group_member(&mut self, group: &str, keys: Vec<TopicPartition>) -> usize {
        let id = self.add_client(Role::GroupConsumer, keys.clone());
        self.clients[id].member = Some(Member::new(group, keys));
        self.groups.entry(group.to_string()).or_default();
        id
    }

    fn next_group_request(
        &mut self,
        client: usize,
        now_us: u64,
        rng: &mut ChaCha8Rng,
    ) -> Option<(NodeId, u64, Request)> {
        let request_id = self.next_request;
        let c = &mut self.clients[client];
        let member = c.member.as_mut().expect("a group consumer has a member");
        let ledger = self
            .groups
            .get_mut(&member.group)
            .expect("added with its group");
        let (node, request, op) = member.next(&self.nodes, now_us, ledger, rng)?;
        self.next_request += 1;
        c.in_flight = Some(InFlight {
            request_id,
            node,
            deadline_us: now_us + CLIENT_TIMEOUT_US,
            op: PendingOp::Group(op),
        });
        Some((node, request_id, request))
    }

    /// A broker left the cluster for good: no client picks it, or keeps it as a leader hint.
    pub fn forget_node(&mut self, id: NodeId) {
        self.nodes.retain(|n| *n != id);
        for c in &mut self.clients {
            c.leader_hint.retain(|_, n| *n != id);
        }
    }

    pub fn add_client(&mut self, role: Role, keys: Vec<TopicPartition>) -> usize {
        let id = self.clients.len();
        let process = self.new_process();
        let positions = keys.iter().map(|k| (k.clone(), 0)).collect();
        self.clients.push(Client {
            id,
            role,
            process,
            keys,
            leader_hint: BTreeMap::new(),
            positions,
            in_flight: None,
            next_key: 0,
            needs_assign: true,
            stopped: false,
            final_targets: None,
            idempotence: Idempotence::default(),
            member: None,
        });
        id
    }

    fn new_process(&mut self) -> u64 {
        let p = self.next_process;
        self.next_process += 1;
        p
    }

    /// Starts the client's next operation, returning the request to send to a node.
    pub fn next_request(
        &mut self,
        client: usize,
        now_us: u64,
        rng: &mut ChaCha8Rng,
    ) -> Option<(NodeId, u64, Request)> {
        let nodes = self.nodes.clone();
        let request_id = self.next_request;
        let c = &mut self.clients[client];
        if c.in_flight.is_some() {
            return None;
        }
        if c.stopped {
            // A send still being retried ends unacknowledged.
            if let Some(r) = c.idempotence.retry.take() {
                self.end_idempotent_send(client, r, now_us);
            }
            return None;
        }
        if matches!(c.role, Role::IdempotentProducer) {
            return self.next_idempotent(client, now_us, rng);
        }
        if matches!(c.role, Role::GroupConsumer) {
            return self.next_group_request(client, now_us, rng);
        }
        let tp = match (&c.role, &c.final_targets) {
            // Producers spread writes over their keys at random.
            (Role::Producer { .. }, _) => c.keys[rng.gen_range(0..c.keys.len())].clone(),
            (Role::IdempotentProducer | Role::GroupConsumer, _) => unreachable!("handled above"),
            (Role::Consumer, Some(targets)) => {
                let pending: Vec<&TopicPartition> = targets
                    .iter()
                    .filter(|(tp, end)| c.positions[*tp] < **end)
                    .map(|(tp, _)| tp)
                    .collect();
                if pending.is_empty() {
                    c.stopped = true;
                    return None;
                }
                pending[c.next_key % pending.len()].clone()
            }
            (Role::Consumer, None) => c.keys[c.next_key % c.keys.len()].clone(),
        };
        c.next_key = c.next_key.wrapping_add(1);
        let node = match c.leader_hint.get(&tp) {
            Some(n) if rng.gen_bool(0.95) => *n,
            _ => nodes[rng.gen_range(0..nodes.len())],
        };
        let t = now_us;
        let (request, op) = match c.role {
            Role::Producer { acks } => {
                let value = self.next_value;
                self.next_value += 1;
                self.sent_values.insert(value, tp.clone());
                // Clients stamp records with true wall time; the nodes' clocks may be skewed.
                let ts = WALL_EPOCH_MS + (t / 1000) as i64;
                let batch = BatchBuilder::new(ts)
                    .record(None, Some(value.to_string().as_bytes()), &[], ts)
                    .build();
                self.history
                    .push(Event::invoke(c.process, Op::send(tp.to_string(), value), t));
                (
                    Request::Produce {
                        tp: tp.clone(),
                        acks,
                        batch,
                    },
                    PendingOp::Send { tp, value },
                )
            }
            Role::IdempotentProducer | Role::GroupConsumer => unreachable!("handled above"),
            Role::Consumer => {
                if c.needs_assign {
                    c.needs_assign = false;
                    let keys: Vec<String> = c.keys.iter().map(|k| k.to_string()).collect();
                    self.history
                        .push(Event::invoke(c.process, Op::assign(keys.clone(), true), t));
                    self.history
                        .push(Event::ok(c.process, Op::assign(keys, true), t));
                }
                let from = c.positions[&tp];
                self.history.push(Event::invoke(c.process, Op::poll(), t));
                (
                    Request::Fetch {
                        tp: tp.clone(),
                        offset: from,
                        max_bytes: FETCH_MAX_BYTES,
                    },
                    PendingOp::Poll { tp, from },
                )
            }
        };
        self.next_request += 1;
        c.in_flight = Some(InFlight {
            request_id,
            node,
            deadline_us: now_us + CLIENT_TIMEOUT_US,
            op,
        });
        Some((node, request_id, request))
    }

    /// An idempotent producer's next request: InitProducerId, the batch being retried, or a
    /// new batch with the partition's next sequence number.
    fn next_idempotent(
        &mut self,
        client: usize,
        now_us: u64,
        rng: &mut ChaCha8Rng,
    ) -> Option<(NodeId, u64, Request)> {
        let request_id = self.next_request;
        self.next_request += 1;
        let node_any = self.nodes[rng.gen_range(0..self.nodes.len())];
        let c = &mut self.clients[client];
        let Some((pid, epoch)) = c.idempotence.producer else {
            c.in_flight = Some(InFlight {
                request_id,
                node: node_any,
                deadline_us: now_us + CLIENT_TIMEOUT_US,
                op: PendingOp::InitProducerId,
            });
            return Some((
                node_any,
                request_id,
                Request::InitProducerId { current: None },
            ));
        };
        if c.idempotence.retry.is_none() {
            let tp = c.keys[rng.gen_range(0..c.keys.len())].clone();
            let value = self.next_value;
            self.next_value += 1;
            self.sent_values.insert(value, tp.clone());
            let seq = c.idempotence.next_seq.entry(tp.clone()).or_insert(0);
            let ts = WALL_EPOCH_MS + (now_us / 1000) as i64;
            let batch = BatchBuilder::new(ts)
                .producer(pid, epoch, *seq)
                .record(None, Some(value.to_string().as_bytes()), &[], ts)
                .build();
            *seq += 1;
            self.history.push(Event::invoke(
                c.process,
                Op::send(tp.to_string(), value),
                now_us,
            ));
            c.idempotence.retry = Some(Retry {
                tp,
                value,
                batch,
                attempts: 0,
                maybe_written: false,
            });
        }
        let r = c.idempotence.retry.as_mut().expect("set above");
        r.attempts += 1;
        let node = match c.leader_hint.get(&r.tp) {
            Some(n) if rng.gen_bool(0.95) => *n,
            _ => node_any,
        };
        let (tp, value) = (r.tp.clone(), r.value);
        let request = Request::Produce {
            tp: tp.clone(),
            acks: Acks::All,
            batch: r.batch.clone(),
        };
        c.in_flight = Some(InFlight {
            request_id,
            node,
            deadline_us: now_us + CLIENT_TIMEOUT_US,
            op: PendingOp::Send { tp, value },
        });
        Some((node, request_id, request))
    }

    /// An idempotent send's answer.
    fn idempotent_reply(
        &mut self,
        client: usize,
        result: Result<Offset, ClientError>,
        now_us: u64,
    ) {
        let c = &mut self.clients[client];
        let mut r = c
            .idempotence
            .retry
            .take()
            .expect("an idempotent send is in progress");
        let e = match result {
            Ok(offset) => {
                self.acked_all += 1;
                self.last_ok_send_us.insert(r.tp.clone(), now_us);
                let op = Op::send_ok(r.tp.to_string(), offset, r.value);
                self.history.push(Event::ok(c.process, op, now_us));
                return;
            }
            Err(e) => e,
        };
        c.follow_hint(&r.tp, &e);
        r.maybe_written |= !e.definitely_not_written();
        let fatal = matches!(
            e,
            ClientError::OutOfOrderSequence { .. }
                | ClientError::UnknownProducerId(_)
                | ClientError::InvalidProducerEpoch { .. }
                | ClientError::CorruptBatch(_)
                | ClientError::MessageTooLarge { .. }
        );
        if fatal || r.attempts >= IDEMPOTENT_ATTEMPTS_MAX {
            self.end_idempotent_send(client, r, now_us);
        } else {
            self.idempotent_retries += 1;
            self.clients[client].idempotence.retry = Some(r);
        }
    }

    /// Gives up on an idempotent send: `info` if an attempt may have written it, else `fail`;
    /// the client starts over with a new producer id (its sequence numbers are spent).
    fn end_idempotent_send(&mut self, client: usize, r: Retry, now_us: u64) {
        let c = &mut self.clients[client];
        c.idempotence = Idempotence::default();
        self.idempotent_resets += 1;
        if r.maybe_written {
            self.record_info_send(client, &r.tp, r.value, now_us);
        } else {
            self.send_fail += 1;
            let op = Op::send(r.tp.to_string(), r.value);
            self.history.push(Event::fail(c.process, op, now_us));
        }
    }

    /// Handles a reply. Returns false if it was stale (the client gave up on it).
    pub fn handle_reply(
        &mut self,
        client: usize,
        request_id: u64,
        response: Response,
        now_us: u64,
    ) -> bool {
        let c = &mut self.clients[client];
        let Some(inf) = c.in_flight.take_if(|f| f.request_id == request_id) else {
            return false;
        };
        let process = c.process;
        match (inf.op, response) {
            (PendingOp::Group(op), response) => {
                let member = c.member.as_mut().expect("a group consumer has a member");
                let ledger = self
                    .groups
                    .get_mut(&member.group)
                    .expect("added with its group");
                if let Some(v) = member.reply(inf.node, op, response, now_us, ledger) {
                    self.violations.push(v);
                }
            }
            (PendingOp::InitProducerId, Response::InitProducerId(result)) => {
                if let Ok(p) = result {
                    c.idempotence.producer = Some(p);
                }
            }
            (PendingOp::Send { .. }, Response::Produce(result))
                if matches!(c.role, Role::IdempotentProducer) =>
            {
                self.idempotent_reply(client, result.map(|p| p.base_offset), now_us)
            }
            (PendingOp::Send { tp, value }, Response::Produce(result)) => {
                let acks = match c.role {
                    Role::Producer { acks } => acks,
                    _ => unreachable!("handled above"),
                };
                match result.map(|p| p.base_offset) {
                    Ok(offset) if acks == Acks::All => {
                        self.acked_all += 1;
                        self.last_ok_send_us.insert(tp.clone(), now_us);
                        self.history.push(Event::ok(
                            process,
                            Op::send_ok(tp.to_string(), offset, value),
                            now_us,
                        ));
                    }
                    Ok(_) => {
                        // acks=1 does not promise durability: indeterminate for the checker.
                        self.acked_leader += 1;
                        self.record_info_send(client, &tp, value, now_us);
                    }
                    Err(e) => {
                        self.clients[client].follow_hint(&tp, &e);
                        if matches!(e, ClientError::Storage(_)) {
                            self.send_refused_disk_full += 1;
                        }
                        if e.definitely_not_written() {
                            self.send_fail += 1;
                            self.history.push(Event::fail(
                                process,
                                Op::send(tp.to_string(), value),
                                now_us,
                            ));
                        } else {
                            self.record_info_send(client, &tp, value, now_us);
                        }
                    }
                }
            }
            (PendingOp::Poll { tp, from }, Response::Fetch(result)) => match result {
                Ok(reply) => {
                    let mut reads = Vec::new();
                    let mut decode_failed = false;
                    for b in &reply.batches {
                        match decode_records(b) {
                            Ok(records) => {
                                for r in records {
                                    if r.offset < from {
                                        continue;
                                    }
                                    match record_value(&r) {
                                        Some(v) => reads.push((r.offset, v)),
                                        None => decode_failed = true,
                                    }
                                }
                            }
                            Err(_) => decode_failed = true,
                        }
                    }
                    if decode_failed {
                        // A record we cannot decode is served garbage: record it as a value
                        // nobody sent so the checker flags it, never silently skip it.
                        reads.push((from, u64::MAX));
                    }
                    let c = &mut self.clients[client];
                    if let Some((last, _)) = reads.last() {
                        c.positions.insert(tp.clone(), last + 1);
                    }
                    self.polls_ok += 1;
                    self.values_read += reads.len() as u64;
                    self.history.push(Event::ok(
                        process,
                        Op::poll_key(tp.to_string(), reads),
                        now_us,
                    ));
                }
                Err(e) => {
                    let c = &mut self.clients[client];
                    c.follow_hint(&tp, &e);
                    if let ClientError::OffsetOutOfRange { start, .. } = e {
                        if from < start {
                            // Deleted records (DeleteRecords): go on from the log start, as
                            // `auto.offset.reset=earliest` does, under a fresh assign so the
                            // checker does not count the jump as a skip.
                            c.positions.insert(tp.clone(), start);
                            c.needs_assign = true;
                        }
                    }
                    // A failed poll read nothing and changed nothing.
                    self.history.push(Event::fail(process, Op::poll(), now_us));
                }
            },
            (op, resp) => panic!("reply {resp:?} does not match operation {op:?}"),
        }
        true
    }

    /// The client's deadline passed with no reply: record the honest outcome.
    pub fn handle_timeout(&mut self, client: usize, now_us: u64) -> bool {
        let c = &mut self.clients[client];
        let Some(inf) = c.in_flight.take_if(|f| f.deadline_us <= now_us) else {
            return false;
        };
        c.leader_hint.clear();
        if let Some(r) = c.idempotence.retry.as_mut() {
            // Resent as it is: the partition answers a duplicate with the original offset.
            r.maybe_written = true;
            if r.attempts < IDEMPOTENT_ATTEMPTS_MAX {
                self.idempotent_retries += 1;
                return true;
            }
            let r = c.idempotence.retry.take().expect("checked above");
            self.end_idempotent_send(client, r, now_us);
            return true;
        }
        match inf.op {
            PendingOp::InitProducerId => {}
            PendingOp::Group(_) => {
                if let Some(m) = self.clients[client].member.as_mut() {
                    m.timed_out();
                }
            }
            PendingOp::Send { tp, value } => self.record_info_send(client, &tp, value, now_us),
            PendingOp::Poll { .. } => {
                let p = self.clients[client].process;
                self.history.push(Event::fail(p, Op::poll(), now_us));
            }
        }
        true
    }

    fn record_info_send(&mut self, client: usize, tp: &TopicPartition, value: u64, now_us: u64) {
        self.send_info += 1;
        let p = self.clients[client].process;
        self.history
            .push(Event::info(p, Op::send(tp.to_string(), value), now_us));
        // An `info` crashes the Jepsen process: continue as a fresh one.
        let np = self.new_process();
        self.clients[client].process = np;
    }
}

/// The workload value a record carries (producers write it as a decimal string), if any.
pub fn record_value(r: &DecodedRecord) -> Option<u64> {
    r.value
        .as_ref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
}
