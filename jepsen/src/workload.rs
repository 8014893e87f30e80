//! The workload: producer and consumer processes of the Rust client, and the final reads.
//! The Jepsen harness runs it against real processes; the madsim tests (`tests/madsim/`) run
//! the same code against simulated nodes (tokio is `madsim-tokio`, which is plain tokio
//! unless built with `--cfg madsim`).
//!
//! Each process runs one operation at a time and records it twice in the history: an
//! `invoke` before, and `ok`, `fail` or `info` after (CHECKER.md). `fail` is written only
//! when the operation certainly did not happen: a send whose record never reached the
//! producer's queue. Anything else that does not end `ok` (a timeout, an error from a broker
//! after the record was queued, a lost connection) is `info`, and the process is crashed: its
//! client is dropped, which aborts whatever it still had in flight, and a new process with a
//! new id and a new client takes its place.
//!
//! Values are unique across the run (one counter) and travel as their decimal text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use railyard_client::{
    Acks, Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Event, EventType, History, Op};

/// The topic every key lives in; key `jepsen-3` is its partition 3.
pub const TOPIC: &str = "jepsen";

/// How long an operation may take before the client calls its outcome unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Acknowledgement level of the producers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "harness", derive(clap::ValueEnum))]
pub enum AcksArg {
    /// Every in-sync replica (the default).
    All,
    /// The leader only (no idempotence).
    #[cfg_attr(feature = "harness", value(name = "1"))]
    Leader,
}

/// Which producers are idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "harness", derive(clap::ValueEnum))]
pub enum Idempotence {
    /// Every producer.
    On,
    /// None: plain producers, which never retry (retries = 0) so that a retry cannot write
    /// a value twice.
    Off,
    /// Half and half (the default).
    Both,
}

/// How consumers get their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "harness", derive(clap::ValueEnum))]
pub enum ConsumerModeArg {
    /// Manual assignment of random subsets of the keys, with seek-to-beginning now and then.
    Assign,
    /// One consumer group subscribed to the topic.
    Subscribe,
    /// Half of each (the default).
    Mixed,
}

/// What the workload runs: its processes, its pace and its keys.
#[derive(Clone, Debug)]
pub struct WorkloadOpts {
    /// Keys (partitions of [`TOPIC`]).
    pub keys: u32,
    /// Concurrent producer processes.
    pub producers: usize,
    /// Concurrent consumer processes.
    pub consumers: usize,
    /// Operations per second, summed over every process.
    pub rate: f64,
    /// Producer acknowledgements.
    pub acks: AcksArg,
    /// Which producers are idempotent (only with acks=all).
    pub idempotent: Idempotence,
    /// How consumers get their keys.
    pub consumer_mode: ConsumerModeArg,
}

impl Default for WorkloadOpts {
    /// The harness's defaults (its flags read them from here): 4 keys, 4 producers (half
    /// idempotent), 2 consumers (one assigning, one in the group), 200 operations per second,
    /// acks=all.
    fn default() -> WorkloadOpts {
        WorkloadOpts {
            keys: 4,
            producers: 4,
            consumers: 2,
            rate: 200.0,
            acks: AcksArg::All,
            idempotent: Idempotence::Both,
            consumer_mode: ConsumerModeArg::Mixed,
        }
    }
}

/// Why the workload could not finish its part.
#[derive(Debug)]
pub enum WorkloadError {
    /// The cluster did not answer, or the final reads did not reach the end offsets in time.
    NotReady(String),
}

impl std::fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkloadError::NotReady(e) => write!(f, "cluster not ready: {e}"),
        }
    }
}

impl std::error::Error for WorkloadError {}

/// The clients' bootstrap list, shared with whoever changes the cluster's membership: a
/// process made after a broker left bootstraps from the brokers there are now, as a client
/// behind a DNS name that operators keep current would.
#[derive(Clone, Debug)]
pub struct Bootstrap(Arc<RwLock<String>>);

impl Bootstrap {
    /// The list now (comma-separated `host:port`).
    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the list; processes made from now on use it.
    pub fn set(&self, list: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = list;
    }
}

impl From<String> for Bootstrap {
    fn from(list: String) -> Bootstrap {
        Bootstrap(Arc::new(RwLock::new(list)))
    }
}

/// An admin client with short timeouts, for the questions of the harness and the tests.
pub async fn admin(bootstrap: &str) -> Result<Admin, WorkloadError> {
    let mut config = ClientConfig::new(bootstrap);
    config.connect_timeout_ms = 1_000;
    config.request_timeout_ms = 3_000;
    config.default_api_timeout_ms = 5_000;
    Admin::new(config)
        .await
        .map_err(|e| WorkloadError::NotReady(format!("no node answers the harness: {e}")))
}

/// How long one poll waits for records.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// An assign-mode consumer reassigns itself about once in this many polls.
const REASSIGN_EVERY_POLLS: u32 = 40;
/// Pause before a crashed process's replacement connects, so that a dead cluster does not
/// spin the clients.
const RESPAWN_BACKOFF: Duration = Duration::from_millis(200);
/// How long the final reads may take per key.
const FINAL_READ_WITHIN: Duration = Duration::from_secs(60);
/// The consumer group of subscribe-mode consumers.
const GROUP: &str = "jepsen";

/// The history being recorded, with the run's monotonic clock and its id counters.
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    processes: AtomicU64,
    values: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            processes: AtomicU64::new(0),
            values: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run started (the history's time unit).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A fresh process id.
    pub fn new_process(&self) -> u64 {
        self.processes.fetch_add(1, Ordering::Relaxed)
    }

    fn next_value(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends an event stamped now. The clock is read under the lock so that the history is
    /// in time order.
    pub fn record(&self, process: u64, kind: EventType, op: Op) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let time = self.now_ns();
        events.push(Event::new(process, kind, op, time));
    }

    /// Everything recorded so far.
    pub fn history(&self) -> History {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = History::new();
        for e in events.iter() {
            h.push(e.clone());
        }
        h
    }
}

/// The running client processes.
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Stops every process after its current operation (each is bounded by [`OP_TIMEOUT`]).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The key of partition `p`.
pub fn key_of(partition: i32) -> String {
    format!("{TOPIC}-{partition}")
}

/// Starts the producers and consumers. Each gets its own RNG stream from the seed.
pub fn start(
    opts: &WorkloadOpts,
    seed: u64,
    bootstrap: impl Into<Bootstrap>,
    rec: Arc<Recorder>,
) -> Workload {
    let bootstrap = bootstrap.into();
    let (stop, stopped) = watch::channel(false);
    let processes = (opts.producers + opts.consumers).max(1) as f64;
    let pace = Duration::from_secs_f64(processes / opts.rate.max(0.01));
    let mut tasks = Vec::new();
    for i in 0..opts.producers {
        let p = ProducerProc {
            bootstrap: bootstrap.clone(),
            keys: opts.keys,
            acks: opts.acks,
            idempotent: match opts.idempotent {
                Idempotence::On => true,
                Idempotence::Off => false,
                Idempotence::Both => i % 2 == 0,
            } && opts.acks == AcksArg::All,
            pace,
            rng: ChaCha8Rng::seed_from_u64(seed ^ (0x5e4d << 16) ^ i as u64),
            rec: rec.clone(),
            stopped: stopped.clone(),
        };
        tasks.push(tokio::spawn(p.run()));
    }
    for i in 0..opts.consumers {
        let subscribe = match opts.consumer_mode {
            ConsumerModeArg::Assign => false,
            ConsumerModeArg::Subscribe => true,
            ConsumerModeArg::Mixed => i % 2 == 1,
        };
        let c = ConsumerProc {
            bootstrap: bootstrap.clone(),
            keys: opts.keys,
            subscribe,
            rng: ChaCha8Rng::seed_from_u64(seed ^ (0xc0 << 24) ^ i as u64),
            rec: rec.clone(),
            stopped: stopped.clone(),
        };
        tasks.push(tokio::spawn(c.run()));
    }
    Workload { stop, tasks }
}

struct ProducerProc {
    bootstrap: Bootstrap,
    keys: u32,
    acks: AcksArg,
    idempotent: bool,
    pace: Duration,
    rng: ChaCha8Rng,
    rec: Arc<Recorder>,
    stopped: watch::Receiver<bool>,
}

/// How one send ended.
enum Outcome {
    Ok(i64),
    Fail,
    Info,
}

impl ProducerProc {
    fn config(&self) -> ProducerConfig {
        let mut c = ProducerConfig::new(&self.bootstrap.get());
        c.client.connect_timeout_ms = 1_000;
        c.client.request_timeout_ms = 5_000;
        c.client.default_api_timeout_ms = 5_000;
        c.linger_ms = 0;
        c.acks = match self.acks {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
        };
        c.idempotence = self.idempotent;
        c.delivery_timeout_ms = OP_TIMEOUT.as_millis() as u64;
        if !self.idempotent {
            // A plain producer that retries after an unknown outcome may write a value twice,
            // which Kafka allows and the checker would call a duplicate.
            c.retries = 0;
        }
        c
    }

    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.pace);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'process: while !*self.stopped.borrow() {
            let process = self.rec.new_process();
            let producer = match Producer::new(self.config()).await {
                Ok(p) => p,
                Err(_) => {
                    tokio::time::sleep(RESPAWN_BACKOFF).await;
                    continue;
                }
            };
            loop {
                ticker.tick().await;
                if *self.stopped.borrow() {
                    break 'process;
                }
                let partition = self.rng.gen_range(0..self.keys) as i32;
                let key = key_of(partition);
                let value = self.rec.next_value();
                self.rec
                    .record(process, EventType::Invoke, Op::send(key.clone(), value));
                match send(&producer, partition, value).await {
                    Outcome::Ok(offset) => {
                        self.rec
                            .record(process, EventType::Ok, Op::send_ok(key, offset, value));
                    }
                    Outcome::Fail => {
                        self.rec
                            .record(process, EventType::Fail, Op::send(key, value));
                    }
                    Outcome::Info => {
                        self.rec
                            .record(process, EventType::Info, Op::send(key, value));
                        break;
                    }
                }
            }
            drop(producer);
            tokio::time::sleep(RESPAWN_BACKOFF).await;
        }
    }
}

async fn send(producer: &Producer, partition: i32, value: u64) -> Outcome {
    let record = ProducerRecord::new(TOPIC, value.to_string()).partition(partition);
    // `send` queues the record as its last step, after every await: a send that fails or
    // times out here never reached the queue, so it certainly did not happen.
    let delivery = match tokio::time::timeout(OP_TIMEOUT, producer.send(record)).await {
        Ok(Ok(d)) => d,
        Ok(Err(_)) | Err(_) => return Outcome::Fail,
    };
    match tokio::time::timeout(OP_TIMEOUT, delivery).await {
        Ok(Ok(meta)) if meta.offset >= 0 => Outcome::Ok(meta.offset),
        _ => Outcome::Info,
    }
}

struct ConsumerProc {
    bootstrap: Bootstrap,
    keys: u32,
    subscribe: bool,
    rng: ChaCha8Rng,
    rec: Arc<Recorder>,
    stopped: watch::Receiver<bool>,
}

impl ConsumerProc {
    fn config(&self) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(&self.bootstrap.get());
        c.client.connect_timeout_ms = 1_000;
        c.client.request_timeout_ms = 5_000;
        c.client.default_api_timeout_ms = 5_000;
        c.auto_offset_reset = OffsetReset::Earliest;
        if self.subscribe {
            c = c.group(GROUP);
        }
        c
    }

    async fn run(mut self) {
        while !*self.stopped.borrow() {
            let process = self.rec.new_process();
            if let Ok(Ok(mut consumer)) =
                tokio::time::timeout(OP_TIMEOUT, Consumer::new(self.config())).await
            {
                self.process(process, &mut consumer).await;
            }
            tokio::time::sleep(RESPAWN_BACKOFF).await;
        }
    }

    /// Runs one process until it crashes or the workload stops.
    async fn process(&mut self, process: u64, consumer: &mut Consumer) {
        if !self.join(process, consumer).await {
            return;
        }
        while !*self.stopped.borrow() {
            if !self.subscribe && self.rng.gen_range(0..REASSIGN_EVERY_POLLS) == 0 {
                if !self.join(process, consumer).await {
                    return;
                }
                continue;
            }
            if !poll(&self.rec, process, consumer).await {
                return;
            }
        }
    }

    /// Assigns a random non-empty subset of the keys (seeking to the beginning half the
    /// time), or subscribes. Returns false if the process crashed.
    async fn join(&mut self, process: u64, consumer: &mut Consumer) -> bool {
        if self.subscribe {
            let keys: Vec<String> = (0..self.keys as i32).map(key_of).collect();
            let op = Op::subscribe(keys);
            self.rec.record(process, EventType::Invoke, op.clone());
            let r = tokio::time::timeout(OP_TIMEOUT, consumer.subscribe(&[TOPIC])).await;
            let kind = if matches!(r, Ok(Ok(()))) {
                EventType::Ok
            } else {
                EventType::Info
            };
            self.rec.record(process, kind, op);
            return kind == EventType::Ok;
        }
        let mut tps: Vec<TopicPartition> = (0..self.keys as i32)
            .filter(|_| self.rng.gen_bool(0.5))
            .map(|p| TopicPartition::new(TOPIC, p))
            .collect();
        if tps.is_empty() {
            tps.push(TopicPartition::new(
                TOPIC,
                self.rng.gen_range(0..self.keys) as i32,
            ));
        }
        let seek = self.rng.gen_bool(0.5);
        assign(&self.rec, process, consumer, tps, seek).await
    }
}

/// Records an assign (with seek-to-beginning when `seek`); false if the process crashed.
async fn assign(
    rec: &Recorder,
    process: u64,
    consumer: &mut Consumer,
    tps: Vec<TopicPartition>,
    seek: bool,
) -> bool {
    let keys: Vec<String> = tps.iter().map(|tp| key_of(tp.partition)).collect();
    let op = Op::assign(keys, seek);
    rec.record(process, EventType::Invoke, op.clone());
    let done = tokio::time::timeout(OP_TIMEOUT, async {
        consumer.assign(&tps).await?;
        if seek {
            consumer.seek_to_beginning(&tps).await?;
        }
        Ok::<(), railyard_client::Error>(())
    })
    .await;
    let kind = if matches!(done, Ok(Ok(()))) {
        EventType::Ok
    } else {
        EventType::Info
    };
    rec.record(process, kind, op);
    kind == EventType::Ok
}

/// Records one poll; false if the process crashed.
async fn poll(rec: &Recorder, process: u64, consumer: &mut Consumer) -> bool {
    rec.record(process, EventType::Invoke, Op::poll());
    match tokio::time::timeout(OP_TIMEOUT, consumer.poll(POLL_WAIT)).await {
        Ok(Ok(records)) => {
            rec.record(process, EventType::Ok, reads_of(&records));
            true
        }
        _ => {
            rec.record(process, EventType::Info, Op::poll());
            false
        }
    }
}

/// A poll's completion: per key, `(offset, value)` in delivery order. A record that is not
/// one of the workload's values is kept out (nothing else writes the topic).
fn reads_of(records: &[ConsumerRecord]) -> Op {
    let mut reads: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for r in records {
        let value = r
            .value
            .as_ref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(v) = value {
            reads
                .entry(key_of(r.partition))
                .or_default()
                .push((r.offset, v));
        }
    }
    Op::Poll { reads }
}

/// The final phase: for every key, a fresh process assigns it from the beginning and polls
/// until it has read up to the key's end offset (taken after the heal, so it covers every
/// acknowledged send and every send that committed without an answer).
pub async fn final_reads(
    opts: &WorkloadOpts,
    bootstrap: String,
    rec: &Recorder,
) -> Result<(), WorkloadError> {
    let admin = admin(&bootstrap).await?;
    let ends = end_offsets(&admin).await?;
    for partition in 0..opts.keys as i32 {
        let tp = TopicPartition::new(TOPIC, partition);
        let end = ends.get(&tp).copied().unwrap_or(0);
        read_to(&bootstrap, rec, tp, end).await?;
    }
    Ok(())
}

async fn end_offsets(admin: &Admin) -> Result<BTreeMap<TopicPartition, i64>, WorkloadError> {
    let deadline = Instant::now() + FINAL_READ_WITHIN;
    loop {
        match admin.end_offsets(TOPIC).await {
            Ok(ends) => return Ok(ends),
            Err(e) if Instant::now() >= deadline => {
                return Err(WorkloadError::NotReady(format!("end offsets: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Reads `tp` from the beginning until the consumer's position reaches `end`, replacing the
/// process (as any crashed process) when an operation does not end ok.
async fn read_to(
    bootstrap: &str,
    rec: &Recorder,
    tp: TopicPartition,
    end: i64,
) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + FINAL_READ_WITHIN;
    let mut config = ConsumerConfig::new(bootstrap);
    config.auto_offset_reset = OffsetReset::Earliest;
    while Instant::now() < deadline {
        let process = rec.new_process();
        let Ok(mut consumer) = Consumer::new(config.clone()).await else {
            tokio::time::sleep(RESPAWN_BACKOFF).await;
            continue;
        };
        if !assign(rec, process, &mut consumer, vec![tp.clone()], true).await {
            continue;
        }
        loop {
            if consumer.position(&tp).await.is_ok_and(|p| p >= end) {
                return Ok(());
            }
            if Instant::now() >= deadline || !poll(rec, process, &mut consumer).await {
                break;
            }
        }
    }
    Err(WorkloadError::NotReady(format!(
        "the final reads of {} did not reach offset {end} within {FINAL_READ_WITHIN:?}",
        key_of(tp.partition)
    )))
}
