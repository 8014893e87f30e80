//! The consumer: [`Consumer::assign`] partitions directly, or [`Consumer::subscribe`] to topics
//! through a consumer group; then [`Consumer::poll`] returns records, in offset order within
//! each partition.
//!
//! The consumer is driven by its caller, like the Java client's: a rebalance, an auto-commit
//! and the first position of a new partition all happen inside `poll`. Only heartbeats run in
//! a background task, so a caller that polls less often than the group's rebalance timeout
//! (`max_poll_interval_ms`) is removed from the group. Rebalances are reported on a channel
//! ([`Consumer::rebalance_events`]); with auto-commit on, positions are committed before
//! partitions are revoked and on close.
//!
//! Fetching sends one Fetch per leader with all of that leader's assigned partitions (no fetch
//! sessions), decodes every codec, and drops records before the position (a compressed batch
//! starts before it). OFFSET_OUT_OF_RANGE resets the position by `auto_offset_reset`.

pub mod assignor;
pub mod group;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::tasks::TaskSet;

use crate::cluster::{ClientConfig, Cluster};
use crate::codec::decode_batches;
use crate::error::{check_code, Error, Result};
use crate::producer::accumulator::TopicPartition;
use assignor::Assignor;
use group::{Coordinator, GroupSettings};

/// Where a partition without a committed offset starts (and where an out-of-range position
/// goes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The log end: only records written from now on (the default, as in Java).
    Latest,
    /// Fail with OFFSET_OUT_OF_RANGE / no committed offset.
    None,
}

/// Consumer settings. [`ConsumerConfig::new`] gives the Java client's defaults.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Connection, retry and metadata settings.
    pub client: ClientConfig,
    /// The group (needed for `subscribe` and for commits).
    pub group_id: Option<String>,
    /// Static membership (KIP-345): a restart within the session timeout keeps the assignment.
    pub group_instance_id: Option<String>,
    /// Where to start without a committed offset (default latest).
    pub auto_offset_reset: OffsetReset,
    /// Commit positions every `auto_commit_interval_ms` from `poll`, before a revoke, and on
    /// close (default on).
    pub enable_auto_commit: bool,
    /// The auto-commit period (default 5 s).
    pub auto_commit_interval_ms: u64,
    /// The group session timeout (default 45 s).
    pub session_timeout_ms: u64,
    /// The heartbeat period (default 3 s).
    pub heartbeat_interval_ms: u64,
    /// The rebalance timeout: the longest the caller may go between polls (default 300 s).
    pub max_poll_interval_ms: u64,
    /// Assignors, in preference order (default range, then cooperative-sticky). The member
    /// follows the cooperative protocol only if every one listed is cooperative.
    pub assignors: Vec<Assignor>,
    /// How long a fetch waits at the broker for `fetch_min_bytes` (default 500 ms).
    pub fetch_max_wait_ms: u64,
    /// The bytes a fetch waits for (default 1).
    pub fetch_min_bytes: i32,
    /// The most a fetch response carries (default 50 MiB).
    pub fetch_max_bytes: i32,
    /// The most one partition contributes to a fetch (default 1 MiB).
    pub max_partition_fetch_bytes: i32,
    /// The most records one `poll` returns (default 500).
    pub max_poll_records: usize,
}

impl ConsumerConfig {
    /// Defaults for the comma-separated bootstrap list.
    pub fn new(bootstrap: &str) -> ConsumerConfig {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            group_id: None,
            group_instance_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
        }
    }

    /// With this group id.
    pub fn group(mut self, group_id: impl Into<String>) -> ConsumerConfig {
        self.group_id = Some(group_id.into());
        self
    }
}

/// A record as `poll` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// A change of the consumer's group assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were added (the full list with the eager protocol).
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away (committed first when auto-commit is on).
    Revoked(Vec<TopicPartition>),
}

#[derive(Clone, Debug, Default)]
struct PartitionState {
    /// The next offset to return; `None` until looked up.
    position: Option<i64>,
    paused: bool,
}

/// A group subscription's moving parts.
struct Subscription {
    topics: Vec<String>,
    coordinator: Arc<Coordinator>,
    stop_heartbeat: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    cooperative: bool,
}

/// An async consumer; see the module docs. Methods take `&mut self`: one task drives it.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    assignment: BTreeMap<TopicPartition, PartitionState>,
    buffered: VecDeque<ConsumerRecord>,
    subscription: Option<Subscription>,
    /// The group's commits when the consumer only assigns (no subscription).
    simple_coordinator: Option<Arc<Coordinator>>,
    last_commit: Instant,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    events_rx: Option<mpsc::UnboundedReceiver<RebalanceEvent>>,
}

impl Consumer {
    /// Connects to the cluster; no partitions are assigned yet.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        if config.assignors.is_empty() {
            return Err(Error::Config("at least one assignor is needed".into()));
        }
        let cluster = Cluster::connect(config.client.clone()).await?;
        let (events, events_rx) = mpsc::unbounded_channel();
        Ok(Consumer {
            cluster,
            config,
            assignment: BTreeMap::new(),
            buffered: VecDeque::new(),
            subscription: None,
            simple_coordinator: None,
            last_commit: Instant::now(),
            events,
            events_rx: Some(events_rx),
        })
    }

    /// The channel of rebalance events (once: later calls return `None`).
    pub fn rebalance_events(&mut self) -> Option<mpsc::UnboundedReceiver<RebalanceEvent>> {
        self.events_rx.take()
    }

    /// Reads exactly these partitions, outside any group membership (commits still go to
    /// `group_id` if one is set). Replaces an earlier assignment or subscription; a partition
    /// assigned before and after keeps its position.
    pub async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.unsubscribe().await?;
        for tp in partitions {
            let topic = self.cluster.topic(&tp.topic).await?;
            if tp.partition < 0 || tp.partition as usize >= topic.partitions.len() {
                return Err(Error::UnknownPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                });
            }
        }
        // As the Java client: a partition that stays assigned keeps its position (and its
        // pause), so re-assigning does not rewind it; only new partitions look theirs up.
        let mut before = std::mem::take(&mut self.assignment);
        self.assignment = partitions
            .iter()
            .map(|tp| (tp.clone(), before.remove(tp).unwrap_or_default()))
            .collect();
        let assignment = &self.assignment;
        self.buffered.retain(|r| {
            assignment.contains_key(&TopicPartition::new(r.topic.clone(), r.partition))
        });
        Ok(())
    }

    /// Joins `group_id` subscribed to `topics`; the assignment arrives in the next `poll`.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        let Some(group_id) = self.config.group_id.clone() else {
            return Err(Error::Config("subscribe needs a group_id".into()));
        };
        if topics.is_empty() {
            return Err(Error::InvalidArgument("an empty subscription".into()));
        }
        self.unsubscribe().await?;
        self.assignment.clear();
        let settings = GroupSettings {
            group_id,
            instance_id: self.config.group_instance_id.clone(),
            session_timeout_ms: clamp_i32(self.config.session_timeout_ms),
            rebalance_timeout_ms: clamp_i32(self.config.max_poll_interval_ms),
            assignors: self.config.assignors.clone(),
        };
        let coordinator = Arc::new(Coordinator::new(self.cluster.clone(), settings));
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms.max(10));
        let heartbeat = tokio::spawn(group::heartbeat_loop(
            coordinator.clone(),
            interval,
            stop.clone(),
        ));
        let cooperative = self
            .config
            .assignors
            .iter()
            .all(|a| *a == Assignor::CooperativeSticky);
        self.subscription = Some(Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            coordinator,
            stop_heartbeat: stop,
            heartbeat: Some(heartbeat),
            cooperative,
        });
        Ok(())
    }

    /// Leaves the group (committing first with auto-commit) and drops the assignment.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        let Some(mut sub) = self.subscription.take() else {
            return Ok(());
        };
        if self.config.enable_auto_commit {
            self.commit_positions_with(&sub.coordinator).await?;
        }
        let revoked: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
        if !revoked.is_empty() {
            let _ = self.events.send(RebalanceEvent::Revoked(revoked));
        }
        sub.stop_heartbeat.store(true, Ordering::Release);
        if let Some(h) = sub.heartbeat.take() {
            h.abort();
        }
        // Leaving is a courtesy: the session timeout removes the member anyway.
        let _ = sub.coordinator.leave().await;
        self.assignment.clear();
        self.buffered.clear();
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.keys().cloned().collect()
    }

    /// Records from the assigned partitions: returns as soon as there are some, or empty after
    /// `timeout`. Rebalances, auto-commits and position lookups happen here.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.maybe_rejoin().await?;
            self.maybe_auto_commit().await?;
            if !self.buffered.is_empty() {
                return Ok(self.take_buffered());
            }
            self.init_positions().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(Duration::from_millis(self.config.fetch_max_wait_ms));
            self.fetch_once(wait).await?;
            if !self.buffered.is_empty() {
                return Ok(self.take_buffered());
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Sets the next offset to read from `tp`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        let state = self.state_mut(tp)?;
        state.position = Some(offset);
        self.buffered
            .retain(|r| r.topic != tp.topic || r.partition != tp.partition);
        Ok(())
    }

    /// Moves `tps` to their log start.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_timestamp(tps, EARLIEST).await
    }

    /// Moves `tps` to their log end.
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to_timestamp(tps, LATEST).await
    }

    /// For each partition, the first offset whose timestamp is at or after the given time
    /// (ms), with that record's timestamp; `None` where no record is that recent.
    pub async fn offsets_for_times(
        &self,
        times: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, Option<(i64, i64)>>> {
        list_offsets(&self.cluster, times).await
    }

    /// The next offset `poll` returns from `tp`, looked up if not known yet.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        self.state_mut(tp)?;
        self.init_positions().await?;
        let buffered_first = self
            .buffered
            .iter()
            .find(|r| r.topic == tp.topic && r.partition == tp.partition)
            .map(|r| r.offset);
        let pos = self.assignment[tp].position.expect("initialized above");
        Ok(buffered_first.unwrap_or(pos))
    }

    /// The group's committed offsets of `tps`.
    pub async fn committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let c = self.coordinator()?;
        c.committed(tps).await
    }

    /// Commits the current positions and waits for the coordinator's answer.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let c = self.coordinator()?;
        self.commit_positions_with(&c).await
    }

    /// Commits these offsets (the next offset to read per partition) and waits.
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let c = self.coordinator()?;
        c.commit(offsets).await
    }

    /// Commits the current positions in the background; the handle yields the outcome.
    pub fn commit_async(&mut self) -> Result<JoinHandle<Result<()>>> {
        let c = self.coordinator()?;
        let offsets = self.consumed_positions();
        self.last_commit = Instant::now();
        Ok(tokio::spawn(async move { c.commit(&offsets).await }))
    }

    /// Stops fetching from `tps` (their positions stay).
    pub fn pause(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state_mut(tp)?.paused = true;
        }
        self.buffered.retain(|r| {
            !tps.iter()
                .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
        });
        Ok(())
    }

    /// Resumes fetching from `tps`.
    pub fn resume(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.state_mut(tp)?.paused = false;
        }
        Ok(())
    }

    /// Commits (with auto-commit), leaves the group and stops the heartbeat task.
    pub async fn close(mut self) -> Result<()> {
        if self.subscription.is_none() && self.config.enable_auto_commit {
            if let Ok(c) = self.coordinator() {
                c.commit(&self.consumed_positions()).await?;
            }
        }
        self.unsubscribe().await
    }

    /// The cluster this consumer talks to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffered.len().min(self.config.max_poll_records.max(1));
        self.buffered.drain(..n).collect()
    }

    fn state_mut(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.assignment
            .get_mut(tp)
            .ok_or_else(|| Error::InvalidArgument(format!("{tp} is not assigned")))
    }

    fn coordinator(&mut self) -> Result<Arc<Coordinator>> {
        if let Some(s) = &self.subscription {
            return Ok(s.coordinator.clone());
        }
        let Some(group_id) = self.config.group_id.clone() else {
            return Err(Error::Config("commits need a group_id".into()));
        };
        let cluster = self.cluster.clone();
        let c = self.simple_coordinator.get_or_insert_with(|| {
            Arc::new(Coordinator::new(
                cluster,
                GroupSettings::for_admin(&group_id),
            ))
        });
        Ok(c.clone())
    }

    /// The positions of what `poll` has returned (buffered records not yet returned count as
    /// not consumed).
    fn consumed_positions(&self) -> BTreeMap<TopicPartition, i64> {
        let mut out: BTreeMap<TopicPartition, i64> = self
            .assignment
            .iter()
            .filter_map(|(tp, s)| Some((tp.clone(), s.position?)))
            .collect();
        for r in &self.buffered {
            let tp = TopicPartition::new(r.topic.clone(), r.partition);
            if let Some(o) = out.get_mut(&tp) {
                *o = (*o).min(r.offset);
            }
        }
        out
    }

    async fn commit_positions_with(&mut self, c: &Coordinator) -> Result<()> {
        self.last_commit = Instant::now();
        c.commit(&self.consumed_positions()).await
    }

    async fn maybe_auto_commit(&mut self) -> Result<()> {
        let due = self.last_commit.elapsed()
            >= Duration::from_millis(self.config.auto_commit_interval_ms);
        if !self.config.enable_auto_commit || !due {
            return Ok(());
        }
        match self.coordinator() {
            Ok(c) => match self.commit_positions_with(&c).await {
                // A rebalance under way fails the commit; the revoke commits again.
                Err(e) if e.is_retriable() || is_membership_error(&e) => Ok(()),
                other => other,
            },
            // Without a group there is nothing to commit to.
            Err(_) => Ok(()),
        }
    }

    /// Rejoins when the member has no generation yet or the coordinator asked for a
    /// rebalance: revoke (all with the eager protocol, what moved with the cooperative one),
    /// join, sync, and take the new assignment.
    async fn maybe_rejoin(&mut self) -> Result<()> {
        loop {
            let Some(sub) = &self.subscription else {
                return Ok(());
            };
            if !sub.coordinator.member.rejoin.load(Ordering::Acquire) {
                return Ok(());
            }
            let (coordinator, topics, cooperative) =
                (sub.coordinator.clone(), sub.topics.clone(), sub.cooperative);
            let owned: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
            if !cooperative && !owned.is_empty() {
                self.revoke(&coordinator, &owned).await;
            }
            let owned_now: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
            let joined = coordinator.join_and_sync(&topics, &owned_now).await?;
            let new: BTreeSet<TopicPartition> = joined.assignment.into_iter().collect();
            let lost: Vec<TopicPartition> = owned_now
                .iter()
                .filter(|tp| !new.contains(tp))
                .cloned()
                .collect();
            if !lost.is_empty() {
                self.revoke(&coordinator, &lost).await;
                // KIP-429: after giving partitions up, rejoin so they can go to their new owner.
                coordinator.member.rejoin.store(true, Ordering::Release);
            }
            let added: Vec<TopicPartition> = new
                .iter()
                .filter(|tp| !self.assignment.contains_key(tp))
                .cloned()
                .collect();
            for tp in &added {
                self.assignment
                    .insert(tp.clone(), PartitionState::default());
            }
            if !added.is_empty() || (!cooperative && new.is_empty()) {
                let _ = self.events.send(RebalanceEvent::Assigned(added));
            }
        }
    }

    /// Commits (with auto-commit) and drops `tps` from the assignment, reporting them revoked.
    async fn revoke(&mut self, coordinator: &Coordinator, tps: &[TopicPartition]) {
        if self.config.enable_auto_commit {
            let all = self.consumed_positions();
            let offsets: BTreeMap<TopicPartition, i64> =
                all.into_iter().filter(|(tp, _)| tps.contains(tp)).collect();
            // A commit refused because the generation moved on is lost, as in Java; the next
            // owner starts from the last commit that succeeded.
            let _ = coordinator.commit(&offsets).await;
        }
        for tp in tps {
            self.assignment.remove(tp);
        }
        self.buffered.retain(|r| {
            !tps.iter()
                .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
        });
        let _ = self.events.send(RebalanceEvent::Revoked(tps.to_vec()));
    }

    /// Gives every partition without a position one: the committed offset, else the reset
    /// policy.
    async fn init_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = match self.coordinator() {
            Ok(c) => c.committed(&missing).await?,
            Err(_) => BTreeMap::new(),
        };
        let mut reset = Vec::new();
        for tp in &missing {
            match committed.get(tp).copied().flatten() {
                Some(o) => self.assignment.get_mut(tp).expect("assigned").position = Some(o),
                None => reset.push(tp.clone()),
            }
        }
        self.reset_positions(&reset).await
    }

    async fn reset_positions(&mut self, tps: &[TopicPartition]) -> Result<()> {
        if tps.is_empty() {
            return Ok(());
        }
        let at = match self.config.auto_offset_reset {
            OffsetReset::Earliest => EARLIEST,
            OffsetReset::Latest => LATEST,
            OffsetReset::None => {
                return Err(Error::InvalidArgument(format!(
                    "no committed offset for {} and auto_offset_reset is none",
                    tps[0]
                )))
            }
        };
        self.seek_to_timestamp(tps, at).await
    }

    async fn seek_to_timestamp(&mut self, tps: &[TopicPartition], at: i64) -> Result<()> {
        let times = tps.iter().map(|tp| (tp.clone(), at)).collect();
        let found = list_offsets(&self.cluster, &times).await?;
        for (tp, o) in found {
            let offset = o
                .map(|(offset, _)| offset)
                .ok_or_else(|| Error::InvalidArgument(format!("no offset for {tp}")))?;
            self.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// One round of fetches, one per leader, in parallel; fills `buffered`.
    async fn fetch_once(&mut self, wait: Duration) -> Result<()> {
        let meta = self.cluster.metadata();
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let mut leaderless = false;
        for (tp, s) in &self.assignment {
            let (Some(pos), false) = (s.position, s.paused) else {
                continue;
            };
            match meta.leader(&tp.topic, tp.partition) {
                Some(l) => by_leader.entry(l).or_default().push((tp.clone(), pos)),
                None => leaderless = true,
            }
        }
        if leaderless {
            self.cluster.refresh_metadata().await?;
        }
        if by_leader.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            return Ok(());
        }
        let mut fetches = TaskSet::new();
        for (leader, parts) in by_leader {
            let req = self.fetch_request(&parts, wait);
            let cluster = self.cluster.clone();
            let timeout = wait + Duration::from_millis(self.config.client.request_timeout_ms);
            fetches.spawn(async move {
                let r = async {
                    let conn = cluster.connection(leader).await?;
                    let version = conn.version::<FetchRequest>()?;
                    let resp = conn.call_within(&req, version, timeout).await?;
                    Ok::<_, Error>((conn.broker().clone(), resp))
                }
                .await;
                (parts, r)
            });
        }
        let mut stale = false;
        let mut out_of_range = Vec::new();
        while let Some(done) = fetches.join_next().await {
            let (parts, result) = done.expect("a fetch task does not panic");
            match result {
                Ok((broker, resp)) => {
                    check_code(resp.error_code, broker.clone(), "Fetch", || None)?;
                    for t in resp.responses {
                        for p in t.partitions {
                            let tp = TopicPartition::new(t.topic.0.to_string(), p.partition_index);
                            let asked = parts.iter().find(|(x, _)| *x == tp).map(|(_, o)| *o);
                            match ResponseError::try_from_code(p.error_code) {
                                None => self.take_records(&tp, asked, p.records, &broker)?,
                                Some(ResponseError::OffsetOutOfRange) => out_of_range.push(tp),
                                Some(code) if crate::error::is_retriable_code(code) => stale = true,
                                Some(code) => {
                                    return Err(Error::Kafka {
                                        broker: broker.clone(),
                                        api: "Fetch",
                                        code,
                                        context: Some(tp.to_string()),
                                    })
                                }
                            }
                        }
                    }
                }
                Err(e) if e.is_retriable() => stale = true,
                Err(e) => return Err(e),
            }
        }
        if stale {
            // A leader moved or a broker is unreachable: new metadata, then a pause so a dead
            // broker is not hammered.
            let _ = self.cluster.refresh_metadata().await;
            tokio::time::sleep(Duration::from_millis(self.config.client.retry_backoff_ms)).await;
        }
        self.reset_positions(&out_of_range).await
    }

    fn fetch_request(&self, parts: &[(TopicPartition, i64)], wait: Duration) -> FetchRequest {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, offset) in parts {
            topics.entry(&tp.topic).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(self.config.max_partition_fetch_bytes),
            );
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(wait.as_millis() as i32)
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, p)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(p)
                    })
                    .collect(),
            )
    }

    /// Decodes one partition's records and keeps those at or after the position the fetch
    /// asked from (if the position has not moved meanwhile, by a seek).
    fn take_records(
        &mut self,
        tp: &TopicPartition,
        asked: Option<i64>,
        records: Option<Bytes>,
        broker: &crate::error::BrokerRef,
    ) -> Result<()> {
        let Some(state) = self.assignment.get_mut(tp) else {
            return Ok(());
        };
        let (Some(pos), Some(asked)) = (state.position, asked) else {
            return Ok(());
        };
        if pos != asked || state.paused {
            return Ok(());
        }
        let Some(data) = records.filter(|d| !d.is_empty()) else {
            return Ok(());
        };
        let decoded = decode_batches(data).map_err(|reason| Error::Protocol {
            broker: broker.clone(),
            reason: format!("records of {tp}: {reason}"),
        })?;
        let mut next = pos;
        for r in decoded.into_iter().filter(|r| r.offset >= pos) {
            // Offsets within a partition only grow; a record behind the last is corrupt data.
            if r.offset < next {
                continue;
            }
            next = r.offset + 1;
            self.buffered.push_back(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        state.position = Some(next);
        Ok(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(sub) = &mut self.subscription {
            sub.stop_heartbeat.store(true, Ordering::Release);
            if let Some(h) = sub.heartbeat.take() {
                h.abort();
            }
        }
    }
}

/// ListOffsets' special timestamps.
pub(crate) const LATEST: i64 = -1;
pub(crate) const EARLIEST: i64 = -2;

/// ListOffsets per leader: for each partition, (offset, timestamp) at `time` (ms, or
/// [`LATEST`]/[`EARLIEST`]); `None` where nothing matches.
pub(crate) async fn list_offsets(
    cluster: &Arc<Cluster>,
    times: &BTreeMap<TopicPartition, i64>,
) -> Result<BTreeMap<TopicPartition, Option<(i64, i64)>>> {
    cluster
        .retry(|| async {
            let meta = cluster.metadata();
            let mut by_leader: BTreeMap<i32, Vec<(&TopicPartition, i64)>> = BTreeMap::new();
            for (tp, &t) in times {
                let leader = meta
                    .leader(&tp.topic, tp.partition)
                    .ok_or_else(|| Error::Kafka {
                        broker: crate::error::BrokerRef {
                            addr: "?".into(),
                            node_id: None,
                        },
                        api: "ListOffsets",
                        code: ResponseError::LeaderNotAvailable,
                        context: Some(tp.to_string()),
                    })?;
                by_leader.entry(leader).or_default().push((tp, t));
            }
            let mut out = BTreeMap::new();
            for (leader, parts) in by_leader {
                let conn = cluster.connection(leader).await?;
                let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
                for (tp, t) in &parts {
                    topics.entry(&tp.topic).or_default().push(
                        ListOffsetsPartition::default()
                            .with_partition_index(tp.partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(*t),
                    );
                }
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, p)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                    .with_partitions(p)
                            })
                            .collect(),
                    );
                let resp = conn.call(&req).await?;
                for t in resp.topics {
                    for p in t.partitions {
                        let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                        check_code(p.error_code, conn.broker().clone(), "ListOffsets", || {
                            Some(tp.to_string())
                        })?;
                        out.insert(tp, (p.offset >= 0).then_some((p.offset, p.timestamp)));
                    }
                }
            }
            Ok(out)
        })
        .await
}

fn is_membership_error(e: &Error) -> bool {
    matches!(
        e.kafka_code(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

fn clamp_i32(ms: u64) -> i32 {
    ms.min(i32::MAX as u64) as i32
}
