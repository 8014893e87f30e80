//! Behaviour tests of the coordinator, driven directly: a [`Harness`] plays the replica (it
//! takes proposals, "commits" them by `apply` then `on_proposal(Ok)`, or fails them) and
//! checks the machine's invariants after every step.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::*;
use crate::api::{ClientError, Request, RequestId, Response};
use crate::machine::{Command, CommittedEntry, Ctx, Effect, Effects, PartitionMachine};
use crate::types::TopicPartition;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const DELAY_MS: i32 = 100;
const WALL0: i64 = 1_700_000_000_000;

fn config() -> GroupConfig {
    GroupConfig {
        group_initial_rebalance_delay_ms: DELAY_MS,
        offsets_retention_ms: 60_000,
        offset_metadata_max_bytes: 16,
        ..GroupConfig::default()
    }
}

struct Harness {
    m: GroupCoordinator,
    ctx: Ctx,
    proposed: VecDeque<(u64, Bytes)>,
    /// Every batch committed, in order (what a restarted replica replays).
    log: Vec<Bytes>,
    replies: BTreeMap<RequestId, GroupResponse>,
    next_id: RequestId,
}

impl Harness {
    /// A loaded leader in term 1.
    fn new() -> Harness {
        let mut h = Harness::follower();
        h.elect(1);
        h.commit_all();
        assert!(h.m.is_loaded());
        h
    }

    fn follower() -> Harness {
        Harness {
            m: GroupCoordinator::new(config()),
            ctx: Ctx {
                node: 1,
                now_ms: 0,
                wall_ms: WALL0,
                is_leader: false,
                term: 1,
                leader: Some(2),
                applied: 0,
                replaying: false,
            },
            proposed: VecDeque::new(),
            log: Vec::new(),
            replies: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn elect(&mut self, term: u64) {
        self.ctx.term = term;
        self.ctx.is_leader = true;
        self.ctx.leader = Some(self.ctx.node);
        let mut fx = Effects::default();
        self.m.on_role(&self.ctx.clone(), &mut fx);
        self.absorb(fx);
    }

    fn absorb(&mut self, mut fx: Effects) {
        for e in fx.take() {
            match e {
                Effect::Reply(id, Response::Group(r)) => {
                    assert!(self.replies.insert(id, r).is_none(), "two replies to {id}");
                }
                Effect::Propose { tag, batch } => self.proposed.push_back((tag, batch)),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        self.m.check_invariants();
    }

    fn send(&mut self, request: GroupRequest) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        let mut fx = Effects::default();
        let command = Command::Client {
            id,
            request: Request::Group(request),
        };
        self.m.handle(command, &self.ctx.clone(), &mut fx);
        self.absorb(fx);
        id
    }

    fn reply(&mut self, id: RequestId) -> Option<GroupResponse> {
        self.replies.remove(&id)
    }

    /// Sends and expects an immediate reply.
    fn call(&mut self, request: GroupRequest) -> GroupResponse {
        let id = self.send(request);
        self.reply(id).expect("an immediate reply")
    }

    /// Commits every proposal (and those they cause), in order.
    fn commit_all(&mut self) {
        while let Some((tag, batch)) = self.proposed.pop_front() {
            self.ctx.applied += 1;
            let entry = CommittedEntry {
                index: self.ctx.applied,
                term: self.ctx.term,
                data: &batch,
                base_offset: 0,
            };
            let mut fx = Effects::default();
            let ctx = self.ctx.clone();
            self.m.apply(&entry, &ctx, &mut fx);
            self.m
                .on_proposal(tag, Ok(self.ctx.applied as i64), &ctx, &mut fx);
            self.log.push(batch);
            self.absorb(fx);
        }
    }

    fn fail_all(&mut self, e: ClientError) {
        while let Some((tag, _)) = self.proposed.pop_front() {
            let mut fx = Effects::default();
            self.m
                .on_proposal(tag, Err(e.clone()), &self.ctx.clone(), &mut fx);
            self.absorb(fx);
        }
    }

    fn advance(&mut self, ms: i64) {
        self.ctx.now_ms += ms;
        self.ctx.wall_ms += ms;
        let mut fx = Effects::default();
        self.m.tick(&self.ctx.clone(), &mut fx);
        self.absorb(fx);
    }

    fn join(&mut self, member: &str, instance: Option<&str>, topics: &[&str]) -> RequestId {
        self.send(join_request(member, instance, topics))
    }

    /// A dynamic member's first join: MEMBER_ID_REQUIRED, then the join with its id.
    fn join_new(&mut self, client: &str) -> (String, RequestId) {
        let mut req = join_request("", None, &["t"]);
        if let GroupRequest::Join { client_id, .. } = &mut req {
            *client_id = client.to_string();
        }
        let GroupResponse::Join(r) = self.call(req) else {
            panic!("join reply expected");
        };
        assert_eq!(r.error, Some(GroupError::MemberIdRequired));
        assert!(r.member_id.starts_with(&format!("{client}-")));
        let id = self.join(&r.member_id, None, &["t"]);
        (r.member_id, id)
    }

    fn join_reply(&mut self, id: RequestId) -> JoinResult {
        match self.reply(id) {
            Some(GroupResponse::Join(r)) => r,
            other => panic!("join reply expected, got {other:?}"),
        }
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: &[(&str, &str)]) -> RequestId {
        self.send(GroupRequest::Sync {
            group: "g".into(),
            generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        })
    }

    fn sync_reply(&mut self, id: RequestId) -> SyncResult {
        match self.reply(id) {
            Some(GroupResponse::Sync(r)) => r,
            other => panic!("sync reply expected, got {other:?}"),
        }
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), GroupError> {
        let r = self.call(GroupRequest::Heartbeat {
            group: "g".into(),
            generation,
            member_id: member.into(),
            group_instance_id: None,
        });
        let GroupResponse::Heartbeat(r) = r else {
            panic!("heartbeat reply expected");
        };
        r
    }

    fn describe(&mut self) -> DescribedGroup {
        let GroupResponse::Describe(mut d) = self.call(GroupRequest::Describe {
            groups: vec!["g".into()],
        }) else {
            panic!("describe reply expected");
        };
        d.pop().expect("one group")
    }

    fn commit(&mut self, member: &str, generation: i32, offset: i64, meta: &str) -> RequestId {
        self.send(GroupRequest::OffsetCommit {
            group: "g".into(),
            generation,
            member_id: member.into(),
            group_instance_id: None,
            offsets: vec![(tp(0), offset, 4, Some(meta.into()))],
        })
    }

    fn commit_reply(&mut self, id: RequestId) -> Vec<(TopicPartition, Option<GroupError>)> {
        match self.reply(id) {
            Some(GroupResponse::OffsetCommit(r)) => r,
            other => panic!("commit reply expected, got {other:?}"),
        }
    }

    fn fetch(&mut self, partitions: Option<Vec<TopicPartition>>) -> Vec<FetchedOffset> {
        let r = self.call(GroupRequest::OffsetFetch {
            group: "g".into(),
            partitions,
            require_stable: false,
        });
        let GroupResponse::OffsetFetch(Ok(f)) = r else {
            panic!("offset fetch reply expected, got {r:?}");
        };
        f
    }

    /// Two dynamic members a (leader) and b form a Stable group at generation 1.
    fn form_group(&mut self) -> (String, String) {
        let (a, ja) = self.join_new("a");
        let (b, jb) = self.join_new("b");
        assert!(self.replies.is_empty(), "joins wait for the initial delay");
        self.advance(DELAY_MS as i64); // b joined during the delay: it extends once
        assert!(self.replies.is_empty());
        self.advance(DELAY_MS as i64);
        let (ra, rb) = (self.join_reply(ja), self.join_reply(jb));
        assert_eq!((ra.error, ra.generation, rb.generation), (None, 1, 1));
        assert_eq!(ra.leader, a);
        assert_eq!(rb.leader, a);
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        let listed: Vec<&str> = ra.members.iter().map(|m| m.member_id.as_str()).collect();
        let mut want = vec![a.as_str(), b.as_str()];
        want.sort();
        assert_eq!(listed, want);
        assert_eq!(ra.members[0].metadata, subscription(&["t"]));
        assert!(rb.members.is_empty(), "only the leader gets the members");
        self.sync_pair(&a, &b, 1);
        (a, b)
    }

    /// The follower syncs first, then the leader; both get their assignment on commit.
    fn sync_pair(&mut self, leader: &str, follower: &str, generation: i32) {
        let sb = self.sync(follower, generation, &[]);
        assert!(self.reply(sb).is_none(), "a follower waits for the leader");
        let sa = self.sync(leader, generation, &[(leader, "A"), (follower, "B")]);
        assert!(self.reply(sa).is_none() && self.reply(sb).is_none());
        assert_eq!(self.describe().state, GroupState::CompletingRebalance);
        self.commit_all();
        assert_eq!(self.sync_reply(sa).assignment, Bytes::from("A"));
        assert_eq!(self.sync_reply(sb).assignment, Bytes::from("B"));
        assert_eq!(self.describe().state, GroupState::Stable);
    }
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

/// A consumer-protocol subscription (v0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

fn join_request(member: &str, instance: Option<&str>, topics: &[&str]) -> GroupRequest {
    GroupRequest::Join {
        group: "g".into(),
        member_id: member.into(),
        group_instance_id: instance.map(String::from),
        client_id: "client".into(),
        client_host: "/10.0.0.1".into(),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(topics))],
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        require_known_member_id: true,
        reason: None,
    }
}

#[test]
fn test_two_members_join_sync_and_heartbeat() {
    // Proves MEMBER_ID_REQUIRED, the initial delay, leader election, sync after commit, and
    // that heartbeats keep a Stable group's members.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    assert_eq!(h.heartbeat(&a, 1), Ok(()));
    assert_eq!(h.heartbeat(&b, 1), Ok(()));
    let d = h.describe();
    assert_eq!(
        (d.protocol_type.as_str(), d.protocol.as_str()),
        ("consumer", "range")
    );
    assert_eq!(d.members.len(), 2);
    assert_eq!(
        d.members
            .iter()
            .find(|m| m.member_id == b)
            .unwrap()
            .assignment,
        "B"
    );
    assert_eq!(d.members[0].metadata, subscription(&["t"]));
    assert_eq!(d.members[0].client_host, "/10.0.0.1");
    let list = |h: &mut Harness, states: &[&str]| match h.call(GroupRequest::List {
        states_filter: states.iter().map(|s| s.to_string()).collect(),
    }) {
        GroupResponse::List(Ok(l)) => l,
        other => panic!("list reply expected, got {other:?}"),
    };
    let want = vec![ListedGroup {
        group: "g".into(),
        protocol_type: "consumer".into(),
        state: GroupState::Stable,
    }];
    assert_eq!(list(&mut h, &["Stable"]), want);
    assert_eq!(list(&mut h, &[]), want);
    assert!(list(&mut h, &["Empty", "Dead"]).is_empty());
    let persisted = &h.m.committed().groups["g"];
    assert_eq!(
        (persisted.generation, persisted.leader.as_deref()),
        (1, Some(a.as_str()))
    );
    assert_eq!(persisted.members.len(), 2);
    // A member that keeps heartbeating outlives several session timeouts.
    for _ in 0..4 {
        h.advance(SESSION_MS as i64 / 2);
        assert_eq!(h.heartbeat(&a, 1), Ok(()));
        assert_eq!(h.heartbeat(&b, 1), Ok(()));
    }
    assert_eq!(h.describe().state, GroupState::Stable);
}

#[test]
fn test_third_member_triggers_rebalance() {
    // Proves a new member starts a rebalance, everyone must rejoin, and the generation bumps.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    let (c, jc) = h.join_new("c");
    assert!(h.reply(jc).is_none());
    assert_eq!(h.heartbeat(&a, 1), Err(GroupError::RebalanceInProgress));
    let r = h.sync(&b, 1, &[]);
    assert_eq!(h.sync_reply(r).error, Some(GroupError::RebalanceInProgress));
    let ja = h.join(&a, None, &["t"]);
    assert!(h.reply(ja).is_none(), "b has not rejoined yet");
    let jb = h.join(&b, None, &["t"]);
    let (ra, rb, rc) = (h.join_reply(ja), h.join_reply(jb), h.join_reply(jc));
    assert_eq!((ra.generation, rb.generation, rc.generation), (2, 2, 2));
    assert_eq!(ra.leader, a, "the leader stays the leader");
    assert_eq!(ra.members.len(), 3);
    assert!(rc.members.is_empty());
    assert_eq!(h.heartbeat(&c, 1), Err(GroupError::IllegalGeneration));
    assert_eq!(h.heartbeat(&c, 2), Ok(()));
}

#[test]
fn test_session_expiry_removes_member_and_rebalances() {
    // Proves a silent member is removed after its session timeout and the group rebalances
    // without it; a member that did not rejoin in time is dropped at the rebalance timeout.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    h.advance(SESSION_MS as i64 - 1);
    assert_eq!(h.heartbeat(&a, 1), Ok(()));
    h.advance(1);
    assert_eq!(h.heartbeat(&a, 1), Err(GroupError::RebalanceInProgress));
    assert_eq!(h.heartbeat(&b, 1), Err(GroupError::UnknownMemberId));
    let ja = h.join(&a, None, &["t"]);
    let ra = h.join_reply(ja);
    assert_eq!((ra.generation, ra.members.len()), (2, 1));
    let sa = h.sync(&a, 2, &[(&a, "all")]);
    h.commit_all();
    assert_eq!(h.sync_reply(sa).assignment, Bytes::from("all"));
    // A new member joins; a never rejoins and is removed when the rebalance times out.
    let (_, jc) = h.join_new("c");
    for _ in 0..4 {
        // Heartbeats keep a's session, but only a JoinGroup keeps it in the group.
        h.advance(REBALANCE_MS as i64 / 4 - 1);
        assert_eq!(h.heartbeat(&a, 2), Err(GroupError::RebalanceInProgress));
    }
    assert!(h.reply(jc).is_none());
    h.advance(4);
    let rc = h.join_reply(jc);
    assert_eq!((rc.generation, rc.members.len()), (3, 1));
    assert_eq!(h.heartbeat(&a, 3), Err(GroupError::UnknownMemberId));
}

#[test]
fn test_static_member_restart_keeps_assignment() {
    // Proves KIP-345: a static member rejoining with "" gets a new id and its assignment
    // back, no rebalance, and its old id is FENCED_INSTANCE_ID.
    let mut h = Harness::new();
    let ja = h.join("", Some("ia"), &["t"]);
    let jb = h.join("", Some("ib"), &["t"]);
    h.advance(DELAY_MS as i64);
    h.advance(DELAY_MS as i64);
    let (ra, rb) = (h.join_reply(ja), h.join_reply(jb));
    let (a, b) = (ra.member_id.clone(), rb.member_id.clone());
    assert_eq!(ra.error, None);
    assert!(ra
        .members
        .iter()
        .any(|m| m.group_instance_id.as_deref() == Some("ib")));
    h.sync_pair(&a, &b, 1);
    // b restarts: it knows only its instance id.
    let jb2 = h.join("", Some("ib"), &["t"]);
    assert!(
        h.reply(jb2).is_none(),
        "the reply waits for the metadata record"
    );
    h.commit_all();
    let rb2 = h.join_reply(jb2);
    assert_eq!((rb2.error, rb2.generation), (None, 1));
    assert_ne!(rb2.member_id, b);
    assert_eq!(h.describe().state, GroupState::Stable);
    let old = h.call(GroupRequest::Heartbeat {
        group: "g".into(),
        generation: 1,
        member_id: b.clone(),
        group_instance_id: Some("ib".into()),
    });
    assert_eq!(
        old,
        GroupResponse::Heartbeat(Err(GroupError::FencedInstanceId))
    );
    assert_eq!(h.heartbeat(&rb2.member_id, 1), Ok(()));
    let s = h.sync(&rb2.member_id, 1, &[]);
    assert_eq!(h.sync_reply(s).assignment, Bytes::from("B"));
    let persisted = &h.m.committed().groups["g"];
    assert!(persisted
        .members
        .iter()
        .any(|m| m.member_id == rb2.member_id));
    assert!(!persisted.members.iter().any(|m| m.member_id == b));
}

#[test]
fn test_offset_commit_membership_checks() {
    // Proves commits from non-members, stale generations and simple commits into a managed
    // group are refused with Kafka's codes, nothing is proposed for them, and members may
    // commit during PreparingRebalance but not CompletingRebalance.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    let r = h.commit("stranger", 1, 5, "");
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::UnknownMemberId))]
    );
    let r = h.commit(&a, 0, 5, "");
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::IllegalGeneration))]
    );
    let r = h.commit("", -1, 5, "");
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::UnknownMemberId))]
    );
    let mut unknown = GroupRequest::OffsetCommit {
        group: "other".into(),
        generation: 3,
        member_id: "m".into(),
        group_instance_id: None,
        offsets: vec![(tp(0), 1, -1, None)],
    };
    let want = vec![(tp(0), Some(GroupError::IllegalGeneration))];
    assert_eq!(h.call(unknown.clone()), GroupResponse::OffsetCommit(want));
    if let GroupRequest::OffsetCommit { generation, .. } = &mut unknown {
        *generation = -1;
    }
    let want = vec![(tp(0), Some(GroupError::UnknownMemberId))];
    assert_eq!(h.call(unknown), GroupResponse::OffsetCommit(want));
    assert!(h.proposed.is_empty());
    let (_, jc) = h.join_new("c");
    let r = h.commit(&a, 1, 6, "");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    let ja = h.join(&a, None, &["t"]);
    let jb = h.join(&b, None, &["t"]);
    assert_eq!(h.join_reply(ja).generation, 2);
    assert_eq!(h.join_reply(jb).generation, 2);
    assert_eq!(h.join_reply(jc).generation, 2);
    let r = h.commit(&a, 2, 7, "");
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::RebalanceInProgress))]
    );
    assert_eq!(h.fetch(None)[0].offset, 6);
}

#[test]
fn test_offset_commit_answered_after_commit() {
    // Proves an OffsetCommit is answered only once its record commits, fetches read the
    // committed value, and a lost proposal is REQUEST_TIMED_OUT.
    let mut h = Harness::new();
    let r = h.commit("", -1, 42, "m");
    assert!(h.reply(r).is_none());
    assert_eq!(h.fetch(None), vec![], "not committed yet");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    let f = h.fetch(Some(vec![tp(0), tp(1)]));
    assert_eq!((f[0].offset, f[0].leader_epoch), (42, 4));
    assert_eq!(f[0].metadata.as_deref(), Some("m"));
    assert_eq!((f[1].offset, f[1].leader_epoch), (-1, -1));
    assert_eq!(
        h.m.committed_offset("g", &tp(0))
            .map(|v| v.commit_timestamp_ms),
        Some(WALL0)
    );
    let r = h.commit("", -1, 43, "");
    h.fail_all(ClientError::Indeterminate { reason: "test" });
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::RequestTimedOut))]
    );
    let r = h.commit("", -1, 44, "");
    h.fail_all(ClientError::NotLeader { leader: None });
    assert_eq!(
        h.commit_reply(r),
        vec![(tp(0), Some(GroupError::NotCoordinator))]
    );
    assert_eq!(h.fetch(None)[0].offset, 42);
}

#[test]
fn test_offset_metadata_too_large_fails_that_partition_only() {
    // Proves a partition with oversized metadata is refused while the others are written.
    let mut h = Harness::new();
    let r = h.send(GroupRequest::OffsetCommit {
        group: "g".into(),
        generation: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: vec![(tp(0), 1, -1, Some("x".repeat(17))), (tp(1), 2, -1, None)],
    });
    h.commit_all();
    let want = vec![
        (tp(0), Some(GroupError::OffsetMetadataTooLarge)),
        (tp(1), None),
    ];
    assert_eq!(h.commit_reply(r), want);
    let f = h.fetch(None);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].tp.clone(), f[0].offset), (tp(1), 2));
}

#[test]
fn test_restart_rebuilds_from_log_and_snapshot() {
    // Proves a fresh coordinator that applies the same batches, or restores the snapshot,
    // has the same state, and a new leader serves the group from it.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    let r = h.commit(&a, 1, 7, "meta");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    let mut replayed = Harness::follower();
    for (i, batch) in h.log.iter().enumerate() {
        let entry = CommittedEntry {
            index: i as u64 + 1,
            term: 1,
            data: batch,
            base_offset: 0,
        };
        replayed
            .m
            .apply(&entry, &replayed.ctx.clone(), &mut Effects::default());
    }
    assert_eq!(replayed.m.committed(), h.m.committed());
    assert_eq!(replayed.m.records_applied(), h.m.records_applied());
    let mut restored = Harness::follower();
    let snap = h.m.snapshot();
    restored
        .m
        .restore(&snap, &restored.ctx.clone(), &mut Effects::default())
        .expect("own snapshot restores");
    assert_eq!(restored.m.committed(), h.m.committed());
    assert!(restored
        .m
        .restore(&snap[1..], &restored.ctx.clone(), &mut Effects::default())
        .is_err());
    // The restored replica becomes leader: the group is Stable with its assignments.
    restored.elect(2);
    restored.commit_all();
    let d = restored.describe();
    assert_eq!((d.state, d.members.len()), (GroupState::Stable, 2));
    assert_eq!(restored.heartbeat(&b, 1), Ok(()));
    let s = restored.sync(&b, 1, &[]);
    assert_eq!(restored.sync_reply(s).assignment, Bytes::from("B"));
    assert_eq!(restored.fetch(None)[0].offset, 7);
}

#[test]
fn test_not_coordinator_and_loading() {
    // Proves a follower answers NOT_COORDINATOR, a leader COORDINATOR_LOAD_IN_PROGRESS until
    // its barrier (or any entry of its term) is applied, and a deposed leader fails waiters.
    let mut h = Harness::follower();
    let fetch = GroupRequest::OffsetFetch {
        group: "g".into(),
        partitions: None,
        require_stable: false,
    };
    let r = h.call(fetch.clone());
    assert_eq!(
        r,
        GroupResponse::OffsetFetch(Err(GroupError::NotCoordinator))
    );
    h.elect(3);
    assert_eq!(h.proposed.len(), 1, "the barrier");
    let r = h.call(fetch.clone());
    assert_eq!(
        r,
        GroupResponse::OffsetFetch(Err(GroupError::CoordinatorLoadInProgress))
    );
    assert_eq!(h.proposed.len(), 1, "one barrier in flight");
    h.fail_all(ClientError::NotLeader { leader: None });
    h.advance(1);
    assert_eq!(h.proposed.len(), 1, "a failed barrier is proposed again");
    h.commit_all();
    assert_eq!(
        h.call(fetch.clone()),
        GroupResponse::OffsetFetch(Ok(vec![]))
    );
    // A pending JoinGroup hears NOT_COORDINATOR when leadership ends.
    let (_, j) = h.join_new("a");
    h.ctx.is_leader = false;
    h.ctx.term = 4;
    let mut fx = Effects::default();
    h.m.on_role(&h.ctx.clone(), &mut fx);
    h.absorb(fx);
    assert_eq!(h.join_reply(j).error, Some(GroupError::NotCoordinator));
    assert_eq!(
        h.call(fetch),
        GroupResponse::OffsetFetch(Err(GroupError::NotCoordinator))
    );
    assert!(!h.m.is_loaded());
}

#[test]
fn test_leave_and_delete_groups() {
    // Proves LeaveGroup's per-member errors, that a group left by all goes Empty with its
    // generation bumped, and that DeleteGroups deletes only Empty groups with their offsets.
    let mut h = Harness::new();
    let (a, b) = h.form_group();
    let r = h.commit(&a, 1, 9, "");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    let del = GroupRequest::Delete {
        groups: vec!["g".into(), "nope".into()],
    };
    let want = vec![
        ("g".to_string(), Some(GroupError::NonEmptyGroup)),
        ("nope".to_string(), Some(GroupError::GroupIdNotFound)),
    ];
    assert_eq!(h.call(del.clone()), GroupResponse::Delete(want));
    let leave = h.call(GroupRequest::Leave {
        group: "g".into(),
        members: vec![(a.clone(), None), ("ghost".into(), None)],
    });
    let GroupResponse::Leave(l) = leave else {
        panic!("leave reply expected");
    };
    assert_eq!(l.members[0].2, None);
    assert_eq!(l.members[1].2, Some(GroupError::UnknownMemberId));
    assert_eq!(h.heartbeat(&b, 1), Err(GroupError::RebalanceInProgress));
    let l = h.call(GroupRequest::Leave {
        group: "g".into(),
        members: vec![(b.clone(), None)],
    });
    assert!(matches!(
        l,
        GroupResponse::Leave(LeaveResult { error: None, .. })
    ));
    assert_eq!(h.describe().state, GroupState::Empty);
    h.commit_all();
    let persisted = &h.m.committed().groups["g"];
    assert_eq!((persisted.generation, persisted.members.len()), (2, 0));
    let id = h.send(del);
    assert!(h.reply(id).is_none());
    h.commit_all();
    let want = vec![
        ("g".to_string(), None),
        ("nope".to_string(), Some(GroupError::GroupIdNotFound)),
    ];
    assert_eq!(h.reply(id), Some(GroupResponse::Delete(want)));
    assert!(h.m.committed().groups.is_empty() && h.m.committed().offsets.is_empty());
    assert_eq!(h.describe().state, GroupState::Dead);
    let GroupResponse::List(Ok(l)) = h.call(GroupRequest::List {
        states_filter: vec![],
    }) else {
        panic!("list reply expected");
    };
    assert!(l.is_empty());
}

#[test]
fn test_offset_expiry_for_empty_groups() {
    // Proves offsets of an Empty group expire after the retention (wall time), checked at
    // most once a second, and the group goes with them; a Stable group's offsets stay.
    let mut h = Harness::new();
    let r = h.commit("", -1, 1, "");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    h.advance(59_999);
    assert!(h.proposed.is_empty(), "not expired yet");
    h.advance(1);
    assert!(h.proposed.is_empty(), "checked at most once a second");
    h.advance(1_000);
    assert_eq!(h.proposed.len(), 1);
    h.commit_all();
    assert!(h.m.committed().offsets.is_empty());
    let GroupResponse::List(Ok(l)) = h.call(GroupRequest::List {
        states_filter: vec![],
    }) else {
        panic!("list reply expected");
    };
    assert!(l.is_empty(), "the group expired with its offsets");
    let (a, b) = h.form_group();
    let r = h.commit(&a, 1, 3, "");
    h.commit_all();
    assert_eq!(h.commit_reply(r), vec![(tp(0), None)]);
    for _ in 0..30 {
        h.advance(5_000);
        assert_eq!(h.heartbeat(&a, 1), Ok(()));
        assert_eq!(h.heartbeat(&b, 1), Ok(()));
    }
    assert_eq!(h.fetch(None)[0].offset, 3, "a live group keeps its offsets");
}

#[test]
fn test_join_validation() {
    // Proves the JoinGroup checks: group id, session timeout, protocol type and protocols.
    let mut h = Harness::new();
    let err = |r: GroupResponse| match r {
        GroupResponse::Join(j) => j.error,
        other => panic!("join reply expected, got {other:?}"),
    };
    let mut bad = join_request("", None, &["t"]);
    if let GroupRequest::Join { group, .. } = &mut bad {
        group.clear();
    }
    assert_eq!(err(h.call(bad)), Some(GroupError::InvalidGroupId));
    let mut bad = join_request("", None, &["t"]);
    if let GroupRequest::Join {
        session_timeout_ms, ..
    } = &mut bad
    {
        *session_timeout_ms = 10;
    }
    assert_eq!(err(h.call(bad)), Some(GroupError::InvalidSessionTimeout));
    let mut bad = join_request("", None, &["t"]);
    if let GroupRequest::Join { protocols, .. } = &mut bad {
        protocols.clear();
    }
    assert_eq!(
        err(h.call(bad)),
        Some(GroupError::InconsistentGroupProtocol)
    );
    let (a, _) = h.form_group();
    let mut other = join_request("", Some("x"), &["t"]);
    if let GroupRequest::Join { protocols, .. } = &mut other {
        *protocols = vec![("roundrobin".into(), subscription(&["t"]))];
    }
    assert_eq!(
        err(h.call(other)),
        Some(GroupError::InconsistentGroupProtocol)
    );
    let r = h.join("unknown-member", None, &["t"]);
    assert_eq!(h.join_reply(r).error, Some(GroupError::UnknownMemberId));
    // A follower rejoining a Stable group unchanged gets its generation back at once.
    let d = h.describe();
    let follower = d
        .members
        .iter()
        .find(|m| m.member_id != a)
        .unwrap()
        .member_id
        .clone();
    let r = h.join(&follower, None, &["t"]);
    let r = h.join_reply(r);
    assert_eq!((r.error, r.generation, r.leader), (None, 1, a));
}

#[test]
fn test_protocol_selection_by_votes() {
    // Proves Kafka's selectProtocol: the protocol all support with the most first votes.
    let mut h = Harness::new();
    let mut ids = Vec::new();
    for prefs in [
        ["roundrobin", "range"],
        ["range", "roundrobin"],
        ["range", "roundrobin"],
    ] {
        let mut req = join_request("", None, &["t"]);
        if let GroupRequest::Join {
            protocols,
            require_known_member_id,
            ..
        } = &mut req
        {
            *protocols = prefs
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect();
            *require_known_member_id = false;
        }
        ids.push(h.send(req));
    }
    h.advance(DELAY_MS as i64);
    h.advance(DELAY_MS as i64);
    for id in ids {
        assert_eq!(h.join_reply(id).protocol_name.as_deref(), Some("range"));
    }
}

#[test]
fn test_offset_delete_refuses_subscribed_topics() {
    // Proves OffsetDelete keeps offsets of topics an active member subscribes to.
    let mut h = Harness::new();
    let (a, _) = h.form_group();
    let r = h.send(GroupRequest::OffsetCommit {
        group: "g".into(),
        generation: 1,
        member_id: a,
        group_instance_id: None,
        offsets: vec![
            (tp(0), 1, -1, None),
            (TopicPartition::new("u", 0), 2, -1, None),
        ],
    });
    h.commit_all();
    assert!(h.commit_reply(r).iter().all(|(_, e)| e.is_none()));
    let id = h.send(GroupRequest::OffsetDelete {
        group: "g".into(),
        partitions: vec![tp(0), TopicPartition::new("u", 0)],
    });
    h.commit_all();
    let want = OffsetDeleteResult {
        error: None,
        partitions: vec![
            (tp(0), Some(GroupError::GroupSubscribedToTopic)),
            (TopicPartition::new("u", 0), None),
        ],
    };
    assert_eq!(h.reply(id), Some(GroupResponse::OffsetDelete(want)));
    let left: Vec<TopicPartition> = h.fetch(None).into_iter().map(|f| f.tp).collect();
    assert_eq!(left, vec![tp(0)]);
}

#[test]
fn test_failed_assignment_record_rebalances() {
    // Proves a SyncGroup whose assignment record fails is answered with the error and the
    // group rebalances rather than going Stable on an unwritten assignment.
    let mut h = Harness::new();
    let (a, ja) = h.join_new("a");
    h.advance(DELAY_MS as i64);
    assert_eq!(h.join_reply(ja).generation, 1);
    let s = h.sync(&a, 1, &[(&a, "x")]);
    h.fail_all(ClientError::Indeterminate { reason: "test" });
    assert_eq!(h.sync_reply(s).error, Some(GroupError::RequestTimedOut));
    assert_eq!(h.describe().state, GroupState::PreparingRebalance);
    assert!(!h.m.committed().groups.contains_key("g"));
}

#[test]
fn test_error_codes_are_kafkas() {
    // Proves the code table against Kafka's numbers.
    let codes = [
        (GroupError::UnknownMemberId, 25),
        (GroupError::IllegalGeneration, 22),
        (GroupError::InconsistentGroupProtocol, 23),
        (GroupError::InvalidSessionTimeout, 26),
        (GroupError::InvalidGroupId, 24),
        (GroupError::RebalanceInProgress, 27),
        (GroupError::MemberIdRequired, 79),
        (GroupError::FencedInstanceId, 82),
        (GroupError::GroupIdNotFound, 69),
        (GroupError::NonEmptyGroup, 68),
        (GroupError::OffsetMetadataTooLarge, 12),
        (GroupError::NotCoordinator, 16),
        (GroupError::CoordinatorLoadInProgress, 14),
        (GroupError::CoordinatorNotAvailable, 15),
        (GroupError::GroupSubscribedToTopic, 86),
        (GroupError::UnknownTopicOrPartition, 3),
        (GroupError::RequestTimedOut, 7),
        (GroupError::GroupMaxSizeReached, 81),
        (GroupError::UnstableOffsetCommit, 88),
    ];
    for (e, c) in codes {
        assert_eq!(e.code(), c, "{e:?}");
    }
    assert_eq!(GroupError::code_of(None), 0);
    assert_eq!(GroupState::parse("stable"), Some(GroupState::Stable));
}

#[test]
fn test_member_that_never_syncs_is_removed() {
    // Proves a member that got its JoinGroup reply but never sends SyncGroup is removed
    // after the rebalance timeout, and the others rebalance without it.
    let mut h = Harness::new();
    let (a, ja) = h.join_new("a");
    let (b, jb) = h.join_new("b");
    h.advance(DELAY_MS as i64);
    h.advance(DELAY_MS as i64);
    assert_eq!(h.join_reply(ja).leader, a);
    assert_eq!(h.join_reply(jb).generation, 1);
    let sb = h.sync(&b, 1, &[]);
    for _ in 0..3 {
        h.advance(REBALANCE_MS as i64 / 4);
        assert_eq!(h.heartbeat(&a, 1), Ok(()), "a heartbeats but never syncs");
    }
    assert!(h.reply(sb).is_none());
    h.advance(REBALANCE_MS as i64 / 4);
    assert_eq!(
        h.sync_reply(sb).error,
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.heartbeat(&a, 1), Err(GroupError::UnknownMemberId));
    let jb = h.join(&b, None, &["t"]);
    let r = h.join_reply(jb);
    assert_eq!(
        (r.generation, r.leader.as_str(), r.members.len()),
        (2, b.as_str(), 1)
    );
}

#[test]
fn test_old_barrier_does_not_load_a_new_leadership() {
    // Proves only the current leadership's barrier (or an entry of its term) ends loading.
    let mut h = Harness::follower();
    h.elect(1);
    let (old_tag, _) = h.proposed.pop_front().expect("term 1 barrier");
    h.elect(2);
    let mut fx = Effects::default();
    h.m.on_proposal(old_tag, Ok(0), &h.ctx.clone(), &mut fx);
    h.absorb(fx);
    assert!(!h.m.is_loaded());
    h.commit_all();
    assert!(h.m.is_loaded());
}

#[test]
fn test_group_max_size_and_initial_delay_bound() {
    // Proves GROUP_MAX_SIZE_REACHED for a member beyond the limit, and that joins extend the
    // initial delay only up to the rebalance timeout.
    let mut h = Harness::follower();
    h.m = GroupCoordinator::new(GroupConfig {
        group_max_size: 2,
        group_initial_rebalance_delay_ms: 8_000,
        ..config()
    });
    h.elect(1);
    h.commit_all();
    let mut joins = Vec::new();
    for c in ["a", "b"] {
        joins.push(h.join_new(c).1);
    }
    let mut third = join_request("", None, &["t"]);
    if let GroupRequest::Join {
        require_known_member_id,
        ..
    } = &mut third
    {
        *require_known_member_id = false;
    }
    let r = h.call(third);
    assert!(
        matches!(r, GroupResponse::Join(j) if j.error == Some(GroupError::GroupMaxSizeReached))
    );
    // Delay 8 s, rebalance timeout 20 s: 8 s, then (b joined) 8 s more, then (c joined)
    // only the 4 s left of the rebalance timeout.
    h.advance(8_000);
    assert!(h.replies.is_empty());
    let b = h
        .describe()
        .members
        .iter()
        .map(|m| m.member_id.clone())
        .max()
        .unwrap();
    let l = h.call(GroupRequest::Leave {
        group: "g".into(),
        members: vec![(b, None)],
    });
    assert!(matches!(
        l,
        GroupResponse::Leave(LeaveResult { error: None, .. })
    ));
    let left = joins.iter().filter(|j| h.replies.contains_key(j)).count();
    assert_eq!(left, 1, "the member that left hears UNKNOWN_MEMBER_ID");
    let (_, jc) = h.join_new("c");
    joins.push(jc);
    h.advance(8_000);
    h.advance(3_999);
    assert!(!h.replies.contains_key(&jc));
    h.advance(1);
    let generations: Vec<i32> = joins
        .iter()
        .filter_map(|j| h.reply(*j))
        .map(|r| match r {
            GroupResponse::Join(j) => j.generation,
            _ => -2,
        })
        .collect();
    assert_eq!(generations, vec![1, -1, 1]);
}

/// One random step of [`test_random_operations_keep_invariants`].
fn random_step(
    h: &mut Harness,
    rng: &mut rand_chacha::ChaCha8Rng,
    known: &mut Vec<String>,
    generation_seen: &mut i32,
) {
    use rand::Rng;
    let member = |rng: &mut rand_chacha::ChaCha8Rng, known: &[String]| -> String {
        match known.len() {
            0 => "nobody".to_string(),
            n => known[rng.gen_range(0..n)].clone(),
        }
    };
    let generation = if rng.gen_bool(0.8) {
        *generation_seen
    } else {
        rng.gen_range(-1..4)
    };
    let instance = ["i0", "i1"].get(rng.gen_range(0..6)).map(|i| i.to_string());
    match rng.gen_range(0..12) {
        0 | 1 => {
            let id = if rng.gen_bool(0.3) {
                String::new()
            } else {
                member(rng, known)
            };
            let mut req = join_request(&id, instance.as_deref(), &["t"]);
            if let GroupRequest::Join {
                require_known_member_id,
                protocols,
                ..
            } = &mut req
            {
                *require_known_member_id = rng.gen_bool(0.8);
                if rng.gen_bool(0.1) {
                    protocols.push(("roundrobin".into(), Bytes::from_static(b"\xff")));
                }
            }
            h.send(req);
        }
        2 => {
            let m = member(rng, known);
            let assignments = known
                .iter()
                .map(|k| (k.clone(), Bytes::from(k.clone())))
                .collect();
            h.send(GroupRequest::Sync {
                group: "g".into(),
                generation,
                member_id: m,
                group_instance_id: instance,
                protocol_type: None,
                protocol_name: None,
                assignments,
            });
        }
        3 => {
            let m = member(rng, known);
            h.send(GroupRequest::Heartbeat {
                group: "g".into(),
                generation,
                member_id: m,
                group_instance_id: instance,
            });
        }
        4 => {
            let m = member(rng, known);
            h.send(GroupRequest::Leave {
                group: "g".into(),
                members: vec![(m, instance)],
            });
        }
        5 => {
            let m = if rng.gen_bool(0.3) {
                String::new()
            } else {
                member(rng, known)
            };
            let meta = "x".repeat(rng.gen_range(0..20));
            h.send(GroupRequest::OffsetCommit {
                group: "g".into(),
                generation,
                member_id: m,
                group_instance_id: None,
                offsets: vec![(tp(rng.gen_range(0..3)), 5, 1, Some(meta))],
            });
        }
        6 => {
            let req = match rng.gen_range(0..4) {
                0 => GroupRequest::Delete {
                    groups: vec!["g".into()],
                },
                1 => GroupRequest::OffsetDelete {
                    group: "g".into(),
                    partitions: vec![tp(0)],
                },
                2 => GroupRequest::List {
                    states_filter: vec![],
                },
                _ => GroupRequest::Describe {
                    groups: vec!["g".into(), "x".into()],
                },
            };
            h.send(req);
        }
        7 | 8 => h.advance(rng.gen_range(0..4_000)),
        9 if rng.gen_bool(0.05) => {
            // A leadership change: in-flight records commit or are lost, then a new term.
            h.ctx.is_leader = false;
            let mut fx = Effects::default();
            h.m.on_role(&h.ctx.clone(), &mut fx);
            h.absorb(fx);
            if rng.gen_bool(0.5) {
                h.commit_all();
            } else {
                h.fail_all(ClientError::Indeterminate { reason: "lost" });
            }
            let term = h.ctx.term + 1;
            h.elect(term);
            h.commit_all();
        }
        9 | 10 => h.commit_all(),
        _ => {
            let e = if rng.gen_bool(0.5) {
                ClientError::Indeterminate { reason: "random" }
            } else {
                ClientError::NotLeader { leader: None }
            };
            h.fail_all(e);
        }
    }
    for r in h.replies.values() {
        if let GroupResponse::Join(j) = r {
            if !j.member_id.is_empty() && !known.contains(&j.member_id) {
                known.push(j.member_id.clone());
            }
            *generation_seen = (*generation_seen).max(j.generation);
        }
    }
}

#[test]
fn test_random_operations_keep_invariants() {
    // Proves that random client traffic, time and proposal failures never break the
    // invariants (checked after every step) and that every request gets exactly one reply
    // once proposals resolve and leadership ends.
    use rand::SeedableRng;
    let (mut synced, mut committed) = (0, 0);
    for seed in 0..200 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut h = Harness::new();
        let (mut known, mut generation) = (Vec::new(), 0);
        for _ in 0..300 {
            random_step(&mut h, &mut rng, &mut known, &mut generation);
        }
        h.commit_all();
        for r in h.replies.values() {
            match r {
                GroupResponse::Sync(SyncResult { error: None, .. }) => synced += 1,
                GroupResponse::OffsetCommit(c) if c.iter().all(|(_, e)| e.is_none()) => {
                    committed += 1
                }
                _ => {}
            }
        }
        let mut answered: Vec<RequestId> = h.replies.keys().copied().collect();
        h.ctx.is_leader = false;
        h.ctx.term += 1;
        let mut fx = Effects::default();
        h.m.on_role(&h.ctx.clone(), &mut fx);
        h.absorb(fx);
        h.commit_all();
        answered.extend(h.replies.keys().copied());
        answered.sort();
        answered.dedup();
        let sent: Vec<RequestId> = (1..=h.next_id).collect();
        assert_eq!(answered, sent, "seed {seed}: a request went unanswered");
        let mut replayed = GroupCoordinator::new(config());
        for (i, batch) in h.log.iter().enumerate() {
            let entry = CommittedEntry {
                index: i as u64 + 1,
                term: 1,
                data: batch,
                base_offset: 0,
            };
            replayed.apply(&entry, &h.ctx.clone(), &mut Effects::default());
        }
        assert_eq!(replayed.committed(), h.m.committed(), "seed {seed}");
        let snap = h.m.snapshot();
        let mut restored = GroupCoordinator::new(config());
        let mut fx = Effects::default();
        restored
            .restore(&snap, &h.ctx.clone(), &mut fx)
            .expect("restores");
        assert_eq!(restored.committed(), h.m.committed(), "seed {seed}");
    }
    // The traffic reaches the interesting states, not only errors.
    assert!(
        synced > 50 && committed > 50,
        "synced {synced}, committed {committed}"
    );
}
