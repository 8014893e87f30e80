//! The learner recovery throttle (Redpanda's `raft_learner_recovery_rate`, Kafka's
//! `leader.replication.throttled.rate`): a token bucket of bytes per second, per node, on the
//! log data (appends and snapshots) this node's leaders send to learners, that is to replicas
//! a move is adding. A partition move then takes at most that share of the leader's disk and
//! network, and the produce traffic of its clients keeps the rest.
//!
//! A message over the budget waits in a queue, in order, until the bucket refills on a tick:
//! raft tolerates a slow link, and the leader's in-flight window (`max_inflight_msgs` per
//! learner, at most [`super::CATCH_UPS_PER_LEADER_MAX`] partitions catching up) bounds what
//! waits. Messages to voters, and every message that carries no data, are never held.
//!
//! The rate is the cluster-wide dynamic config [`LEARNER_RECOVERY_CONFIG`] when set (0 turns
//! the throttle off), else [`LEARNER_RECOVERY_BYTES_PER_S_DEFAULT`].

use std::collections::VecDeque;

pub use crate::controller::LEARNER_RECOVERY_CONFIG;
use crate::network::GroupMessage;
use crate::types::{Millis, NodeId};

/// The default rate: 100 MiB/s, Redpanda's.
pub const LEARNER_RECOVERY_BYTES_PER_S_DEFAULT: u64 = 100 << 20;

/// The most a bucket holds, as time at the rate: a burst after a quiet spell stays short.
const BURST_MS: u64 = 100;

/// The bucket and the messages waiting for it.
#[derive(Debug, Default)]
pub(super) struct RecoveryThrottle {
    /// Bytes per second; 0 sends everything at once.
    rate_bytes_per_s: u64,
    /// May go below 0: a message larger than what is left goes, and the debt is paid first.
    tokens: i64,
    refilled_at_ms: Option<Millis>,
    /// Held messages, in the order they were sent, with their peer.
    queue: VecDeque<(NodeId, GroupMessage)>,
    queued_bytes: u64,
    /// Totals, for the node's stats.
    pub(super) held_total: u64,
    pub(super) sent_bytes_total: u64,
}

impl RecoveryThrottle {
    pub(super) fn new(rate_bytes_per_s: u64) -> RecoveryThrottle {
        RecoveryThrottle {
            rate_bytes_per_s,
            tokens: burst(rate_bytes_per_s),
            ..RecoveryThrottle::default()
        }
    }

    pub(super) fn rate_bytes_per_s(&self) -> u64 {
        self.rate_bytes_per_s
    }

    /// A new rate: the bucket is capped to the new burst; 0 releases everything held.
    pub(super) fn set_rate(&mut self, rate_bytes_per_s: u64) {
        self.rate_bytes_per_s = rate_bytes_per_s;
        self.tokens = self.tokens.min(burst(rate_bytes_per_s));
    }

    /// Adds what the time since the last refill earned, up to the burst.
    pub(super) fn refill(&mut self, now_ms: Millis) {
        let last = self.refilled_at_ms.replace(now_ms).unwrap_or(now_ms);
        let elapsed_ms = u64::try_from(now_ms.saturating_sub(last)).unwrap_or(0);
        let earned = self.rate_bytes_per_s.saturating_mul(elapsed_ms) / 1000;
        let cap = burst(self.rate_bytes_per_s);
        self.tokens = self
            .tokens
            .saturating_add(i64::try_from(earned).unwrap_or(i64::MAX))
            .min(cap);
    }

    /// A data message for a learner: passed on at once (`Some`) if nothing waits and the
    /// bucket has tokens, else held.
    pub(super) fn admit(&mut self, to: NodeId, m: GroupMessage) -> Option<GroupMessage> {
        if self.queue.is_empty() && self.spend(m.raft.len()) {
            return Some(m);
        }
        self.held_total += 1;
        self.queued_bytes += m.raft.len() as u64;
        self.queue.push_back((to, m));
        None
    }

    /// The held messages the bucket now pays for, in order.
    pub(super) fn release(&mut self, mut send: impl FnMut(NodeId, GroupMessage)) {
        while let Some((_, m)) = self.queue.front() {
            if !self.spend(m.raft.len()) {
                return;
            }
            let (to, m) = self.queue.pop_front().expect("front seen above");
            self.queued_bytes -= m.raft.len() as u64;
            send(to, m);
        }
    }

    /// Whether a held message could go now.
    pub(super) fn ready(&self) -> bool {
        !self.queue.is_empty() && (self.rate_bytes_per_s == 0 || self.tokens > 0)
    }

    pub(super) fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Takes `bytes` from the bucket if it is not empty (or there is no limit).
    fn spend(&mut self, bytes: usize) -> bool {
        if self.rate_bytes_per_s == 0 {
            self.sent_bytes_total += bytes as u64;
            return true;
        }
        if self.tokens <= 0 {
            return false;
        }
        self.tokens -= i64::try_from(bytes).unwrap_or(i64::MAX);
        self.sent_bytes_total += bytes as u64;
        true
    }
}

fn burst(rate_bytes_per_s: u64) -> i64 {
    i64::try_from(rate_bytes_per_s.saturating_mul(BURST_MS) / 1000).unwrap_or(i64::MAX)
}

/// The rate a cluster-wide config value asks for, if it is a number of bytes per second.
pub fn parse_rate(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(bytes: usize) -> GroupMessage {
        GroupMessage {
            topic: "t".into(),
            partition: 0,
            raft: Bytes::from(vec![0u8; bytes]),
        }
    }

    fn drain(t: &mut RecoveryThrottle) -> Vec<(NodeId, usize)> {
        let mut out = Vec::new();
        t.release(|to, m| out.push((to, m.raft.len())));
        out
    }

    #[test]
    fn sends_at_the_rate_in_order() {
        // 10 KB/s: a burst of 1 KB, then 1 KB per 100 ms.
        let mut t = RecoveryThrottle::new(10_000);
        t.refill(0);
        assert!(
            t.admit(2, msg(800)).is_some(),
            "the burst pays for the first"
        );
        assert!(t.admit(2, msg(800)).is_some(), "200 left: goes, into debt");
        assert!(t.admit(3, msg(500)).is_none(), "the bucket is empty");
        assert!(
            t.admit(2, msg(10)).is_none(),
            "nothing overtakes what is held"
        );
        assert!(!t.ready());
        assert_eq!(t.queued_bytes(), 510);
        t.refill(50);
        assert!(!t.ready(), "the debt of 600 is not paid by 500");
        t.refill(100);
        assert!(t.ready());
        assert_eq!(drain(&mut t), vec![(3, 500)]);
        t.refill(200);
        assert_eq!(drain(&mut t), vec![(2, 10)]);
        assert_eq!(t.queued_bytes(), 0);
        assert_eq!(t.held_total, 2);
        assert_eq!(t.sent_bytes_total, 2110);
    }

    #[test]
    fn the_bucket_is_capped_and_zero_is_unthrottled() {
        let mut t = RecoveryThrottle::new(10_000);
        t.refill(0);
        t.refill(60_000);
        assert!(t.admit(2, msg(1_001)).is_some());
        assert!(
            t.admit(2, msg(1)).is_none(),
            "a minute idle earns only the burst"
        );
        t.set_rate(0);
        assert!(t.ready());
        assert_eq!(drain(&mut t), vec![(2, 1)]);
        assert!(t.admit(2, msg(1 << 30)).is_some());
        assert_eq!(parse_rate(" 1048576 "), Some(1 << 20));
        assert_eq!(parse_rate("fast"), None);
    }
}
