//! librdkafka consumer groups against an in-process 3-node cluster: three members share a
//! 6-partition topic disjointly and read everything once; a member that vanishes without
//! leaving loses its partitions within the session timeout and its successor resumes at the
//! committed offsets (none goes backwards, nothing is skipped); with cooperative-sticky a
//! joining member takes partitions without the others losing theirs; a static member that
//! restarts within its session gets its assignment back with no rebalance. Every figure the
//! tests print is a median of the runs they make.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use railyard_tests::profiles;
use railyard_tests::{topic, Disks, InProcessCluster, Spec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "grouped";
const PARTITIONS: i32 = 6;
const WAIT: Duration = Duration::from_secs(60);

/// One rebalance callback: (assigned, revoked) partitions.
type RebalanceEvent = (Vec<i32>, Vec<i32>);

/// What a member's rebalance callbacks saw, in order.
#[derive(Clone, Default)]
struct Rebalances(Arc<Mutex<Vec<RebalanceEvent>>>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let parts = |l: &TopicPartitionList| l.elements().iter().map(|e| e.partition()).collect();
        let event = match r {
            Rebalance::Assign(l) => (parts(l), Vec::new()),
            Rebalance::Revoke(l) => (Vec::new(), parts(l)),
            Rebalance::Error(_) => (Vec::new(), Vec::new()),
        };
        self.0.lock().unwrap().push(event);
    }
}

type Member = BaseConsumer<Rebalances>;

/// A group member with librdkafka's defaults but a short session (the tests wait for it) and
/// manual commits, so that what is committed is what was read.
fn member_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = profiles::client(bootstrap);
    c.set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    c
}

fn member(config: &ClientConfig) -> (Member, Rebalances) {
    let ctx = Rebalances::default();
    let m: Member = config
        .create_with_context(ctx.clone())
        .expect("creating a member");
    m.subscribe(&[TOPIC]).expect("subscribe");
    (m, ctx)
}

fn assigned(m: &Member) -> BTreeSet<i32> {
    m.assignment()
        .map(|l| l.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every member until `done` holds for their assignments; returns how long it took.
fn poll_until(
    members: &[&Member],
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        for m in members {
            // Records polled here are dropped (and never committed).
            if let Some(Err(e)) = m.poll(Duration::from_millis(50)) {
                eprintln!("member: {e}");
            }
        }
        let now: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(m)).collect();
        if done(&now) {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "{what}: assignments {now:?}");
    }
}

/// Every partition assigned to exactly one of `sets`, each non-empty.
fn disjoint_cover(sets: &[BTreeSet<i32>]) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty()) && total == PARTITIONS as usize && union.len() == total
}

async fn produce(bootstrap: &str, n: usize, tag: &str) {
    let producer: FutureProducer = profiles::producer(bootstrap).create().expect("producer");
    let records: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k{i}"), format!("{tag}{i}")))
        .collect();
    profiles::produce_all(&producer, TOPIC, &records).await;
}

/// The group's committed offsets. librdkafka fails the call at NOT_COORDINATOR (a
/// coordinator moved: the preferred-leader check moves leaderships back) rather than retry,
/// so this retries.
fn committed(m: &Member) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let start = Instant::now();
    let list = loop {
        match m.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(l) => break l,
            Err(e) if start.elapsed() < WAIT => {
                eprintln!("OffsetFetch: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("OffsetFetch: {e}"),
        }
    };
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

async fn cluster() -> InProcessCluster {
    // 5 `__consumer_offsets` partitions, no initial rebalance delay.
    let spec = Spec::new(3, vec![topic(TOPIC, PARTITIONS as u32, 3)]).with_groups();
    let c = InProcessCluster::start_spec(&spec, Disks::Files).await;
    c.wait_for_leaders(WAIT).await;
    c
}

/// Three members share the topic disjointly: two librdkafka consumers and a `kcat -G`
/// balanced consumer (a separate process, committing as it reads). kcat is then killed -9:
/// no LeaveGroup, no more heartbeats. The survivors take its partitions within the session
/// timeout and resume exactly at its committed offsets: no committed offset goes backwards and
/// nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_three_members_share_disjointly_and_a_killed_members_partitions_move() {
    let c = cluster().await;
    let bootstrap = c.bootstrap();
    produce(&bootstrap, 600, "a").await;
    tokio::task::spawn_blocking(move || {
        let config = member_config(&bootstrap, "three");
        let (a, _) = member(&config);
        let (b, _) = member(&config);
        let mut kcat = std::process::Command::new("kcat")
            .args([
                "-b",
                &bootstrap,
                "-G",
                "three",
                TOPIC,
                "-q",
                "-o",
                "beginning",
            ])
            .args([
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=500",
            ])
            .args([
                "-X",
                "auto.commit.interval.ms=200",
                "-X",
                "auto.offset.reset=earliest",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kcat (apt-get install kcat)");
        let took = poll_until(&[&a, &b], "a third of the partitions with kcat", |s| {
            let union: BTreeSet<i32> = s.iter().flatten().copied().collect();
            s.iter().all(|x| x.len() == 2) && union.len() == 4
        });
        eprintln!("three members (one kcat -G) assigned in {took:?}");
        let kcats: BTreeSet<i32> = (0..PARTITIONS)
            .filter(|p| !assigned(&a).contains(p) && !assigned(&b).contains(p))
            .collect();
        // kcat reads its share to the end and auto-commits within 200 ms.
        let want: BTreeMap<i32, i64> = high_watermarks(&a, &kcats);
        let start = Instant::now();
        while committed(&a)
            .iter()
            .filter(|(p, _)| kcats.contains(p))
            .map(|(p, o)| (*p, *o))
            .collect::<BTreeMap<_, _>>()
            != want
        {
            assert!(start.elapsed() < WAIT, "kcat did not commit {want:?}");
            poll_until(&[&a, &b], "keep heartbeating", |_| true);
            std::thread::sleep(Duration::from_millis(100));
        }
        kcat.kill().expect("kill -9 kcat");
        kcat.wait().ok();
        let before = committed(&a);
        let took = poll_until(&[&a, &b], "kcat's partitions moved", |s| {
            s.iter().flatten().collect::<BTreeSet<_>>().len() == PARTITIONS as usize
        });
        eprintln!("partitions {kcats:?} moved in {took:?} after kill -9 (session timeout 6 s)");
        assert!(took < Duration::from_secs(20), "moved after {took:?}");
        // 60 more records: on kcat's partitions the survivors read from exactly where kcat
        // committed (the first record they get there is at the committed offset).
        tokio::runtime::Handle::current().block_on(produce(&bootstrap_of(&config), 60, "b"));
        let grown: BTreeSet<i32> = high_watermarks(&a, &kcats)
            .into_iter()
            .filter(|(p, hw)| before.get(p).is_some_and(|c| hw > c))
            .map(|(p, _)| p)
            .collect();
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while !grown.iter().all(|p| first.contains_key(p)) {
            for m in [&a, &b] {
                if let Some(Ok(r)) = m.poll(Duration::from_millis(50)) {
                    first.entry(r.partition()).or_insert(r.offset());
                }
            }
            assert!(
                Instant::now() < deadline,
                "read {first:?} of {grown:?} after the move"
            );
        }
        assert!(
            !grown.is_empty(),
            "no new record landed on kcat's partitions"
        );
        for p in &grown {
            assert_eq!(
                first.get(p),
                before.get(p),
                "partition {p} resumed off the commit"
            );
        }
        for m in [&a, &b] {
            m.commit_consumer_state(CommitMode::Sync).expect("commit");
        }
        let after = committed(&a);
        for (p, o) in &before {
            assert!(
                after.get(p).is_some_and(|x| x >= o),
                "partition {p} went back: {o} -> {after:?}"
            );
        }
    })
    .await
    .expect("the group thread");
}

fn bootstrap_of(config: &ClientConfig) -> String {
    config.get("bootstrap.servers").expect("set").to_string()
}

/// Each of `partitions`' high watermark, as `m` fetches it.
fn high_watermarks(m: &Member, partitions: &BTreeSet<i32>) -> BTreeMap<i32, i64> {
    partitions
        .iter()
        .map(|p| {
            let (_, high) = m
                .fetch_watermarks(TOPIC, *p, Duration::from_secs(10))
                .expect("watermarks");
            (*p, high)
        })
        .collect()
}

/// A cooperative-sticky member joining a 2-member group takes partitions without the others
/// losing any they keep (no revocation of kept partitions, KIP-429); the figure is the time to
/// the new stable assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_cooperative_sticky_join_moves_only_what_it_takes() {
    let c = cluster().await;
    let bootstrap = c.bootstrap();
    tokio::task::spawn_blocking(move || {
        let mut config = member_config(&bootstrap, "sticky");
        config.set("partition.assignment.strategy", "cooperative-sticky");
        let (a, ra) = member(&config);
        let (b, rb) = member(&config);
        poll_until(&[&a, &b], "two members", disjoint_cover);
        let (sa, sb) = (assigned(&a), assigned(&b));
        ra.0.lock().unwrap().clear();
        rb.0.lock().unwrap().clear();
        let (x, _) = member(&config);
        let took = poll_until(&[&a, &b, &x], "three members", disjoint_cover);
        eprintln!("cooperative join settled in {took:?}");
        for (before, now, events) in [(&sa, assigned(&a), &ra), (&sb, assigned(&b), &rb)] {
            assert!(
                now.is_subset(before),
                "a member gained partitions: {before:?} -> {now:?}"
            );
            let revoked: BTreeSet<i32> = events
                .0
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(_, r)| r.clone())
                .collect();
            let given_up: BTreeSet<i32> = before.difference(&now).copied().collect();
            assert_eq!(
                revoked, given_up,
                "only the partitions that moved were revoked"
            );
        }
    })
    .await
    .expect("the group thread");
}

/// A static member (group.instance.id) that closes and comes back within its session timeout
/// gets its partitions back, and the other member sees no rebalance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_static_member_restart_causes_no_rebalance() {
    let c = cluster().await;
    let bootstrap = c.bootstrap();
    tokio::task::spawn_blocking(move || {
        let config = |instance: &str| {
            let mut c = member_config(&bootstrap, "static");
            c.set("group.instance.id", instance);
            c
        };
        let (a, ra) = member(&config("a"));
        let (b, _) = member(&config("b"));
        poll_until(&[&a, &b], "two static members", disjoint_cover);
        let sb = assigned(&b);
        ra.0.lock().unwrap().clear();
        drop(b); // a static member's close does not leave the group (KIP-345)
        let (b, _) = member(&config("b"));
        poll_until(&[&a, &b], "b back", |s| s[1] == sb && disjoint_cover(s));
        let events = ra.0.lock().unwrap().clone();
        assert!(
            events.is_empty(),
            "the other member saw a rebalance: {events:?}"
        );
    })
    .await
    .expect("the group thread");
}
