//! Standing mutation canaries: planted bugs that the simulator must catch, compiled only with
//! the `mutations` feature (release builds of `railyard` never contain them).
//!
//! A mutation is planted per thread ([`plant`]), so parallel tests do not see each other's.
//! `cargo run -p railyard-sim --release --features mutations -- --mutation NAME --seeds N`
//! runs a campaign with one planted; `cargo test` runs each on seeds known to catch it, so a
//! weakened checker fails CI.

/// A planted bug. Each names where it lives and what it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    /// `Node::step` acknowledges and sends persisted messages before the group fsync.
    AckBeforeSync,
    /// `Replica::fetch` serves up to the log end instead of the high watermark.
    ServePastHw,
    /// `Replica::handle_raft_message` takes appends from a stale leader as current.
    SkipTermCheck,
    /// `Replica::append_entries` keeps a conflicting suffix instead of truncating it.
    LoseTruncation,
    /// `Replica::ack_leader_persisted` answers acks=all once the leader's own write is durable,
    /// before the entry commits.
    ApplyBeforeCommit,
    /// `PartitionStorage::set_hard_state` does not persist the vote.
    ForgetHardState,
    /// `ProducerTable::admit` lets a producer's retry of a batch it already has through.
    AcceptDuplicateSequence,
    /// `ProducerTable::on_truncate` and `on_append` keep the producer batches of a dropped log
    /// suffix.
    KeepProducerStateOnTruncation,
    /// `GroupCoordinator::offset_commit` answers an OffsetCommit when it proposes the record,
    /// before the record commits.
    AckCommitBeforeCommitted,
    /// `Replica::open` does not apply the committed DeleteRecords commands in its log again,
    /// so a restarted replica's log start offset goes back.
    ForgetDeletedRecordsAtOpen,
    /// `Node::apply_node_event` ignores `BrokerConfigsChanged`: replicas keep the settings of
    /// the old dynamic broker configs.
    IgnoreBrokerConfigsChanged,
    /// `view::brokers` leaves out a fenced broker that the view names a partition's leader.
    HideFencedLeaders,
    /// A node that applies `ClusterCreated` does not store the cluster's id in its directory.
    ForgetClusterId,
    /// The controller admits a joining node with the metadata group's voters at index 0 but
    /// without its learners.
    AdmitWithoutLearners,
    /// A partition leader promotes a move's learners without waiting for them to catch up.
    RemoveBeforeCaughtUp,
    /// A replica a move removes deletes its data when the move starts, not once the new
    /// configuration has committed.
    DropDataBeforeCommit,
}

impl Mutation {
    /// Every mutation, for campaigns and the standing test.
    pub const ALL: [Mutation; 16] = [
        Mutation::AckBeforeSync,
        Mutation::ServePastHw,
        Mutation::SkipTermCheck,
        Mutation::LoseTruncation,
        Mutation::ApplyBeforeCommit,
        Mutation::ForgetHardState,
        Mutation::AcceptDuplicateSequence,
        Mutation::KeepProducerStateOnTruncation,
        Mutation::AckCommitBeforeCommitted,
        Mutation::ForgetDeletedRecordsAtOpen,
        Mutation::IgnoreBrokerConfigsChanged,
        Mutation::HideFencedLeaders,
        Mutation::ForgetClusterId,
        Mutation::AdmitWithoutLearners,
        Mutation::RemoveBeforeCaughtUp,
        Mutation::DropDataBeforeCommit,
    ];

    /// The kebab-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::AckBeforeSync => "ack-before-sync",
            Mutation::ServePastHw => "serve-past-hw",
            Mutation::SkipTermCheck => "skip-term-check",
            Mutation::LoseTruncation => "lose-truncation",
            Mutation::ApplyBeforeCommit => "apply-before-commit",
            Mutation::ForgetHardState => "forget-hard-state",
            Mutation::AcceptDuplicateSequence => "accept-duplicate-sequence",
            Mutation::KeepProducerStateOnTruncation => "keep-producer-state-on-truncation",
            Mutation::AckCommitBeforeCommitted => "ack-commit-before-committed",
            Mutation::ForgetDeletedRecordsAtOpen => "forget-deleted-records-at-open",
            Mutation::IgnoreBrokerConfigsChanged => "ignore-broker-configs-changed",
            Mutation::HideFencedLeaders => "hide-fenced-leaders",
            Mutation::ForgetClusterId => "forget-cluster-id",
            Mutation::AdmitWithoutLearners => "admit-without-learners",
            Mutation::RemoveBeforeCaughtUp => "remove-before-caught-up",
            Mutation::DropDataBeforeCommit => "drop-data-before-commit",
        }
    }

    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Whether this build carries the planted bugs.
pub fn enabled() -> bool {
    cfg!(feature = "mutations")
}

#[cfg(feature = "mutations")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

/// Plants `m` (or none) for the code running on this thread. Panics when asked to plant one
/// in a build without the `mutations` feature.
pub fn plant(m: Option<Mutation>) {
    #[cfg(feature = "mutations")]
    PLANTED.with(|p| p.set(m));
    #[cfg(not(feature = "mutations"))]
    assert!(m.is_none(), "built without the mutations feature");
}

/// Whether `m` is planted. Always false without the `mutations` feature.
#[inline]
pub fn active(m: Mutation) -> bool {
    #[cfg(feature = "mutations")]
    {
        PLANTED.with(|p| p.get() == Some(m))
    }
    #[cfg(not(feature = "mutations"))]
    {
        let _ = m;
        false
    }
}
