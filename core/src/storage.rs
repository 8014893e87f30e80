//! raft-rs `Storage` over the partition log: the raft log *is* the Kafka partition log.
//!
//! [`PartitionStorage`] pairs a [`PartitionLog`] (segments of raft entries whose payloads are
//! Kafka batches) with a small crash-safe state file holding raft's `HardState` and `ConfState`.
//! raft-rs reads through `&self` (`entries`, `term`, ...) and the replica writes through
//! `RawNode::mut_store()` while handling a `Ready`.
//!
//! ## Repair after corruption
//! A replica whose recovery found *corruption* (a bad frame followed by valid data, i.e. not a
//! torn tail) may have lost entries it had acknowledged to a leader. Such a replica must not help
//! elect a leader that lacks those entries, so it enters **repair mode**, persisted in the state
//! file: it refuses votes until it has caught up with the commit index of the first leader that
//! replicates to it. Its commit index is clamped to its last index so raft-rs accepts the log.

use std::rc::Rc;

use bytes::Bytes;
use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use crate::disk::{join_path, Disk, DiskError};
use crate::log::slot::SlotFile;
use crate::log::{EntryKind, LogConfig, LogError, NewEntry, PartitionLog, SnapshotMeta};
use crate::partition_command::{self, COMMAND_CONTEXT};
use crate::snapshot::{self, JointConf, SnapshotError, SnapshotFile, SnapshotPayload};
use crate::types::{NodeId, RaftIndex, Term};

/// File name of the raft state (hard state + conf state) inside a partition directory.
pub const STATE_FILE: &str = "raft.state";

/// How often a transient read error is retried before the read is reported as failed. Read
/// errors in the simulator are transient; a persistent one is a failed disk.
const READ_RETRIES_MAX: usize = 8;

/// raft's durable state, encoded with prost into the state [`SlotFile`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct PersistedState {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    #[prost(uint64, tag = "3")]
    pub commit: u64,
    #[prost(uint64, repeated, tag = "4")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, tag = "5")]
    pub learners: Vec<u64>,
    /// Set when recovery found corruption; cleared once caught up (see module docs).
    #[prost(bool, tag = "6")]
    pub repairing: bool,
    /// The joint part of the configuration, while one is in force.
    #[prost(message, optional, tag = "7")]
    pub joint: Option<JointConf>,
}

/// Why opening or writing a partition's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    /// The state file exists but no slot decodes: the partition cannot be trusted.
    #[error("raft state file {path} is unreadable: {reason}")]
    BadState { path: String, reason: String },
    /// A snapshot from the leader failed its checks; it was not installed.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// What recovery found when a partition was opened.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// First raft index dropped by log recovery (torn tail or corruption), if any.
    pub truncated_from_index: Option<RaftIndex>,
    /// Recovery found corruption (not a torn tail): the replica is in repair mode.
    pub corruption: bool,
    /// The persisted commit index was above the recovered log and was clamped.
    pub commit_clamped_from: Option<RaftIndex>,
    /// State machine snapshot files that failed their checksum (never applied).
    pub corrupt_snapshots: usize,
    /// No raft state file existed: a new replica, with no term, vote or log.
    pub fresh: bool,
}

/// raft-rs storage for one partition. See the module docs.
pub struct PartitionStorage {
    log: PartitionLog,
    state_file: SlotFile,
    state: PersistedState,
    state_dirty: bool,
    /// The commit index as of the last successful `sync` of the state file. The high watermark is
    /// derived from it so that it never goes backwards across a crash.
    durable_commit: RaftIndex,
    /// The newest state machine snapshot that verified (see [`crate::snapshot`]).
    machine_snapshot: Option<SnapshotFile>,
    /// Whether the partition's state machine needs its whole history (its log is compacted
    /// behind its snapshots, as the metadata log): then a raft snapshot must carry its state,
    /// and a metadata-only one is never offered. A data partition's producer table does not:
    /// a follower behind the leader's retention gets a metadata-only snapshot at the leader's
    /// log start (its log must start where the leader's does, or consumers would lose data
    /// that retention still keeps) and keeps the table it had.
    has_machine: bool,
    /// The leader needed a snapshot for a peer that the stored one cannot serve: older than
    /// the peer needs, or from a configuration that lacks the peer (a learner added since,
    /// which raft-rs refuses to restore it on). The replica takes a fresh one at its next
    /// tick. A `Cell` because raft-rs asks for snapshots through `&self`.
    snapshot_wanted: std::cell::Cell<bool>,
    disk: Rc<dyn Disk>,
    dir: String,
    /// What recovery found at open.
    report: OpenReport,
}

impl PartitionStorage {
    /// Whether the leader asked for a snapshot the stored one cannot give (clears the flag).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Opens (or creates, with `voters` and `learners` as the initial configuration) a
    /// partition's storage. An existing partition keeps the configuration it persisted.
    pub fn open(
        disk: Rc<dyn Disk>,
        dir: &str,
        config: LogConfig,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(PartitionStorage, OpenReport), StorageError> {
        Self::open_with(disk, dir, config, voters, learners, true)
    }

    /// [`PartitionStorage::open`] for a partition whose machine may not need its whole
    /// history (`needs_history` false: a data partition's producer table). A machine snapshot
    /// ahead of the recovered commit then does not replace the log (that would drop records
    /// consumers may still read): it is ignored, and the machine rebuilds from the log.
    pub fn open_with(
        disk: Rc<dyn Disk>,
        dir: &str,
        config: LogConfig,
        voters: &[NodeId],
        learners: &[NodeId],
        needs_history: bool,
    ) -> Result<(PartitionStorage, OpenReport), StorageError> {
        let state_path = join_path(dir, STATE_FILE);
        let (mut state_file, payload) = SlotFile::open(disk.clone(), &state_path)?;
        let (log, recovery) = PartitionLog::open(disk.clone(), dir, config)?;
        let (machine_snapshot, corrupt_snapshots) = snapshot::load_newest(&*disk, dir)?;
        let mut report = OpenReport {
            truncated_from_index: recovery.truncated_from_index,
            corruption: recovery.corruption,
            commit_clamped_from: None,
            corrupt_snapshots,
            fresh: payload.is_none(),
        };
        let mut state_dirty = false;
        let mut state = match payload {
            Some(bytes) => {
                PersistedState::decode(bytes.as_slice()).map_err(|e| StorageError::BadState {
                    path: state_path.clone(),
                    reason: e.to_string(),
                })?
            }
            None => {
                state_dirty = true;
                PersistedState {
                    voters: voters.to_vec(),
                    learners: learners.to_vec(),
                    ..Default::default()
                }
            }
        };
        if report.corruption && !state.repairing {
            state.repairing = true;
            state_dirty = true;
        }
        // raft-rs refuses a commit index above the last index; corruption can cause exactly
        // that, and repair mode (set above) keeps the clamp safe.
        if state.commit > log.last_index() {
            report.commit_clamped_from = Some(state.commit);
            assert!(
                report.corruption || state.repairing || report.truncated_from_index.is_some(),
                "{dir}: commit {} above last index {} with no recovery truncation",
                state.commit,
                log.last_index()
            );
            if !state.repairing {
                state.repairing = true;
            }
            state.commit = log.last_index();
            state_dirty = true;
        }
        let mut log = log;
        let mut machine_snapshot = machine_snapshot;
        if !needs_history
            && machine_snapshot
                .as_ref()
                .is_some_and(|m| m.index > state.commit)
        {
            machine_snapshot = None;
        }
        if let Some(m) = machine_snapshot.as_ref().filter(|m| m.index > state.commit) {
            finish_install(&mut log, &mut state, m)?;
            state_dirty = true;
        }
        if state.commit < log.snapshot_meta().index {
            state.commit = log.snapshot_meta().index;
            state_dirty = true;
        }
        if state_dirty {
            state_file.write(&state.encode_to_vec())?;
            state_file.sync()?;
        }
        let durable_commit = state.commit;
        Ok((
            PartitionStorage {
                log,
                state_file,
                state,
                state_dirty: false,
                durable_commit,
                machine_snapshot,
                has_machine: false,
                snapshot_wanted: std::cell::Cell::new(false),
                disk,
                dir: dir.to_string(),
                report: report.clone(),
            },
            report,
        ))
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    /// What recovery found when this storage was opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    pub fn log_mut(&mut self) -> &mut PartitionLog {
        &mut self.log
    }

    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// Commit index as of the last sync of the state file.
    pub fn durable_commit(&self) -> RaftIndex {
        self.durable_commit
    }

    pub fn is_repairing(&self) -> bool {
        self.state.repairing
    }

    /// Leaves repair mode (durable at the next sync).
    pub fn finish_repair(&mut self) {
        if self.state.repairing {
            self.state.repairing = false;
            self.state_dirty = true;
        }
    }

    /// Appends entries from a `Ready` (not synced).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let new: Vec<NewEntry> = entries
            .iter()
            .map(|e| NewEntry {
                index: e.index,
                term: e.term,
                kind: entry_kind(e),
                data: e.data.clone(),
            })
            .collect();
        self.log.append(&new)?;
        assert_eq!(self.log.last_index(), entries[entries.len() - 1].index);
        Ok(())
    }

    /// Records a new hard state (not synced).
    pub fn set_hard_state(&mut self, hs: &HardState) {
        assert!(hs.term >= self.state.term, "term went backwards");
        if hs.commit < self.state.commit {
            // raft-rs never lowers commit; a lower value would mean a bug above us.
            panic!(
                "commit went backwards: {} -> {}",
                self.state.commit, hs.commit
            );
        }
        self.state.term = hs.term;
        self.state.vote = if crate::mutation::active(crate::mutation::Mutation::ForgetHardState) {
            0 // Planted bug: the vote is never persisted, so a restart may vote twice.
        } else {
            hs.vote
        };
        self.state.commit = hs.commit;
        self.state_dirty = true;
    }

    /// Records a new commit index from a `LightReady` (not synced).
    pub fn set_commit(&mut self, commit: RaftIndex) {
        assert!(commit >= self.state.commit, "commit went backwards");
        if commit != self.state.commit {
            self.state.commit = commit;
            self.state_dirty = true;
        }
    }

    /// Marks the partition as having a state machine (see the field). If the machine needs
    /// the whole history (`needs_history`: its log is compacted behind its snapshots), the log
    /// no longer starts at the beginning and no snapshot verified, the machine cannot be
    /// rebuilt here: the log is discarded and the replica enters repair mode (it votes for
    /// nobody until it has caught up), so its leader sends it a snapshot. Term and vote are
    /// kept. Returns whether that happened. A data partition's machine (the producer table)
    /// rebuilds from whatever log retention left: its data is never discarded for it.
    pub fn set_has_machine(&mut self, needs_history: bool) -> Result<bool, StorageError> {
        self.has_machine = needs_history;
        if !needs_history || self.machine_snapshot.is_some() || self.log.first_index() <= 1 {
            return Ok(false);
        }
        self.log.discard_all()?;
        self.state.commit = 0;
        self.state.repairing = true;
        self.state_file.write(&self.state.encode_to_vec())?;
        self.state_file.sync()?;
        self.durable_commit = 0;
        self.report.corruption = true;
        Ok(true)
    }

    /// The newest verified state machine snapshot.
    pub fn machine_snapshot(&self) -> Option<&SnapshotFile> {
        self.machine_snapshot.as_ref()
    }

    /// Saves the machine's state at `index` (applied, so committed and in the log) durably,
    /// then, with `compact`, deletes the log up to the older kept snapshot (see
    /// [`crate::snapshot`]).
    pub fn save_machine_snapshot(
        &mut self,
        index: RaftIndex,
        term: Term,
        data: Bytes,
        compact: bool,
    ) -> Result<(), StorageError> {
        assert!(
            index <= self.durable_commit,
            "snapshot above the durable commit"
        );
        assert!(
            index >= self.log.first_index(),
            "snapshot below the log start"
        );
        let snap = SnapshotFile {
            index,
            term,
            next_offset: self.log.end_offset_at(index)?,
            voters: self.state.voters.clone(),
            learners: self.state.learners.clone(),
            data,
            joint: self.state.joint.clone(),
        };
        let compact_to = snapshot::save(&self.disk, &self.dir, &snap)?;
        self.machine_snapshot = Some(snap);
        if compact {
            self.log.compact(compact_to)?;
        }
        assert!(
            self.log.first_index() <= index + 1,
            "compacted past the newest snapshot"
        );
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log restarts after it. Returns the
    /// machine state it carries, if any. The payload is verified before anything changes.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<Option<Bytes>, StorageError> {
        let meta = snap.get_metadata();
        let payload = decode_snapshot_data(&snap.data)?;
        if self.has_machine && !payload.has_state {
            return Err(
                SnapshotError::Decode("snapshot without the machine's state".into()).into(),
            );
        }
        let next_offset = payload.next_offset;
        if payload.has_state {
            let cs = meta.get_conf_state();
            let file = SnapshotFile {
                index: meta.index,
                term: meta.term,
                next_offset,
                voters: cs.voters.clone(),
                learners: cs.learners.clone(),
                data: payload.state.clone(),
                joint: JointConf::of(cs),
            };
            // Durable before the log start moves: a crash in between keeps the old log and
            // a newer snapshot, which open reconciles (the log is replayed from the snapshot).
            snapshot::save(&self.disk, &self.dir, &file)?;
            self.machine_snapshot = Some(file);
        }
        self.log.install_snapshot(SnapshotMeta {
            index: meta.index,
            term: meta.term,
            next_offset,
        })?;
        let cs = meta.get_conf_state();
        self.state.voters = cs.voters.clone();
        self.state.learners = cs.learners.clone();
        self.state.joint = JointConf::of(cs);
        if self.state.commit < meta.index {
            self.state.commit = meta.index;
        }
        if self.state.term < meta.term {
            self.state.term = meta.term;
        }
        self.state_dirty = true;
        Ok(payload.has_state.then_some(payload.state))
    }

    /// Records the configuration a committed conf change produced, and makes it durable at
    /// once: a replica restarts with `applied` = its commit index and never re-applies it.
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), StorageError> {
        assert!(!cs.voters.is_empty(), "a configuration without voters");
        self.state.voters = cs.voters.clone();
        self.state.learners = cs.learners.clone();
        self.state.joint = JointConf::of(cs);
        self.state_dirty = true;
        self.sync()
    }

    /// Whether anything awaits a sync.
    pub fn is_dirty(&self) -> bool {
        self.state_dirty || self.log.is_dirty()
    }

    /// Makes every append and the hard state durable: one sync per dirty file. The log is synced
    /// first so the state file never names a commit index whose entries are not durable here.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.log.sync()?;
        if self.state_dirty {
            self.state_file.write(&self.state.encode_to_vec())?;
            self.state_file.sync()?;
            self.state_dirty = false;
            self.durable_commit = self.state.commit;
        }
        Ok(())
    }

    fn conf_state(&self) -> ConfState {
        let st = &self.state;
        JointConf::conf_state(&st.voters, &st.learners, st.joint.as_ref())
    }
}

/// A snapshot from the leader was saved but the crash came before the log was replaced by
/// it: finish the install (the log's entries up to it are superseded).
fn finish_install(
    log: &mut PartitionLog,
    state: &mut PersistedState,
    m: &SnapshotFile,
) -> Result<(), StorageError> {
    assert!(
        m.index > state.commit,
        "only a snapshot ahead of the commit is unfinished"
    );
    log.install_snapshot(SnapshotMeta {
        index: m.index,
        term: m.term,
        next_offset: m.next_offset,
    })?;
    state.voters = m.voters.clone();
    state.learners = m.learners.clone();
    state.joint = m.joint.clone();
    state.commit = m.index;
    Ok(())
}

/// Decodes a raft snapshot's data: a [`SnapshotPayload`], or (from nodes before state machine
/// snapshots) the 8-byte big-endian next offset of a metadata-only snapshot.
pub fn decode_snapshot_data(data: &[u8]) -> Result<SnapshotPayload, SnapshotError> {
    if let Ok(arr) = <[u8; 8]>::try_from(data) {
        return Ok(SnapshotPayload::new(i64::from_be_bytes(arr), None));
    }
    SnapshotPayload::decode_checked(data)
}

fn entry_kind(e: &Entry) -> EntryKind {
    match e.get_entry_type() {
        EntryType::EntryNormal if partition_command::is_command(e) => EntryKind::Command,
        EntryType::EntryNormal => EntryKind::Normal,
        EntryType::EntryConfChange => EntryKind::ConfChange,
        EntryType::EntryConfChangeV2 => EntryKind::ConfChangeV2,
    }
}

fn entry_type(k: EntryKind) -> EntryType {
    match k {
        EntryKind::Normal | EntryKind::Command => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
        EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    }
}

fn to_raft_error(e: LogError) -> raft::Error {
    match e {
        LogError::Compacted { .. } => raft::Error::Store(RaftStorageError::Compacted),
        LogError::Unavailable { .. } => raft::Error::Store(RaftStorageError::Unavailable),
        other => raft::Error::Store(RaftStorageError::Other(Box::new(other))),
    }
}

/// Retries transient disk read errors; everything else is returned at once.
pub(crate) fn with_retries<T>(mut f: impl FnMut() -> Result<T, LogError>) -> Result<T, LogError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(LogError::Disk(DiskError::Io(_))) if tries + 1 < READ_RETRIES_MAX => tries += 1,
            other => return other,
        }
    }
}

impl raft::Storage for PartitionStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = HardState {
            term: self.state.term,
            vote: self.state.vote,
            commit: self.state.commit,
            ..Default::default()
        };
        Ok(RaftState {
            hard_state: hs,
            conf_state: self.conf_state(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let stored =
            with_retries(|| self.log.entries(low, high, max_size)).map_err(to_raft_error)?;
        assert!(!stored.is_empty() || low == high);
        let mut out = Vec::with_capacity(stored.len());
        for (i, s) in stored.into_iter().enumerate() {
            assert_eq!(
                s.index,
                low + i as u64,
                "log returned a non-contiguous range"
            );
            let mut e = Entry {
                index: s.index,
                term: s.term,
                data: s.data,
                ..Default::default()
            };
            e.set_entry_type(entry_type(s.kind));
            if s.kind == EntryKind::Command {
                e.context = COMMAND_CONTEXT.into();
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        with_retries(|| self.log.term(idx)).map_err(to_raft_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.log.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.log.last_index())
    }

    /// Retention deletes whole segments; the entries below the log's first index are gone, so
    /// the only snapshot we can offer is metadata: where the log starts and the Kafka offset it
    /// starts at. A follower that installs it resumes from there.
    ///
    /// A partition with a state machine offers its newest machine snapshot instead (never a
    /// metadata-only one: the follower would lack the state the log before it built). Its
    /// index is at or above the log start, since the log is compacted only below it.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || {
            Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ))
        };
        let (index, term, payload, cs) = match (&self.machine_snapshot, self.has_machine) {
            (Some(m), true) => {
                let cs = JointConf::conf_state(&m.voters, &m.learners, m.joint.as_ref());
                let payload = SnapshotPayload::new(m.next_offset, Some(m.data.clone()));
                (m.index, m.term, payload, cs)
            }
            (None, true) => return unavailable(),
            (_, false) => {
                let meta = self.log.snapshot_meta();
                let payload = SnapshotPayload::new(meta.next_offset, None);
                (meta.index, meta.term, payload, self.conf_state())
            }
        };
        let members = [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ];
        let serves_peer = members.iter().any(|ids| ids.contains(&to));
        if index == 0 || index < request_index || !serves_peer {
            if self.has_machine {
                self.snapshot_wanted.set(true);
            }
            return unavailable();
        }
        let mut snap = Snapshot::default();
        let mut sm = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        sm.set_conf_state(cs);
        snap.set_metadata(sm);
        snap.data = payload.encode();
        Ok(snap)
    }
}
