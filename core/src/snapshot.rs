//! State machine snapshots: on disk, and inside raft snapshots sent to lagging followers.
//!
//! ## On disk
//! A partition with a state machine keeps its last two snapshots as
//! `<dir>/<20-digit index>.snap`. Each file is a prost [`SnapshotFile`] followed by the
//! CRC-32C of those bytes; it is written under a temporary name, synced, then renamed, so a
//! crash leaves either the whole file or none. The log is compacted only up to the *older*
//! snapshot's index: if the newest file is corrupt (the checksum says so), the older one plus
//! the log rebuild the same state, and the corrupt file is never applied. If no file verifies
//! the replica asks the leader for a snapshot instead (see `Replica`).
//!
//! ## In raft
//! A raft snapshot's data is a prost [`SnapshotPayload`]: the Kafka offset the log resumes at,
//! and the machine's state with its CRC-32C. Partitions without a machine (retention moved
//! their log start) send the payload with no state. A payload whose checksum fails is dropped
//! before raft sees it, so the leader sends it again.

use std::rc::Rc;

use bytes::Bytes;
use prost::Message as _;

use crate::disk::{join_path, Disk, DiskError};
use crate::types::{NodeId, RaftIndex, Term};

/// Suffix of snapshot files.
const SNAPSHOT_SUFFIX: &str = ".snap";
/// Suffix of a snapshot being written.
const TEMP_SUFFIX: &str = ".snap.tmp";
/// Snapshot files kept (module docs: the log is compacted to the older one).
const SNAPSHOTS_KEPT_MAX: usize = 2;
/// Largest snapshot file read back: bounds the allocation for a length read from disk.
pub const SNAPSHOT_BYTES_MAX: u64 = 256 << 20;

/// A machine snapshot as stored on disk.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotFile {
    #[prost(uint64, tag = "1")]
    pub index: RaftIndex,
    #[prost(uint64, tag = "2")]
    pub term: Term,
    /// The Kafka offset after the entry at `index`.
    #[prost(int64, tag = "3")]
    pub next_offset: i64,
    #[prost(uint64, repeated, tag = "4")]
    pub voters: Vec<NodeId>,
    #[prost(uint64, repeated, tag = "5")]
    pub learners: Vec<NodeId>,
    #[prost(bytes = "bytes", tag = "6")]
    pub data: Bytes,
    /// Set when the snapshot was taken in a joint configuration.
    #[prost(message, optional, tag = "7")]
    pub joint: Option<JointConf>,
}

/// The part of a raft configuration that only a joint one has (a move's `ConfChangeV2` in
/// flight): kept with the voters and learners, so that a replica restarted in the middle of
/// joint consensus still needs both majorities, and still leaves the joint state by itself.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct JointConf {
    #[prost(uint64, repeated, tag = "1")]
    pub voters_outgoing: Vec<NodeId>,
    #[prost(uint64, repeated, tag = "2")]
    pub learners_next: Vec<NodeId>,
    #[prost(bool, tag = "3")]
    pub auto_leave: bool,
}

impl JointConf {
    /// The joint part of `cs`, if it is joint.
    pub fn of(cs: &raft::eraftpb::ConfState) -> Option<JointConf> {
        let joint = !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty();
        joint.then(|| JointConf {
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        })
    }

    /// The whole configuration, from its voters and learners and this joint part.
    pub fn conf_state(
        voters: &[NodeId],
        learners: &[NodeId],
        joint: Option<&JointConf>,
    ) -> raft::eraftpb::ConfState {
        let mut cs = raft::eraftpb::ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        };
        if let Some(j) = joint {
            cs.voters_outgoing = j.voters_outgoing.clone();
            cs.learners_next = j.learners_next.clone();
            cs.auto_leave = j.auto_leave;
        }
        cs
    }
}

/// The data of a raft snapshot (module docs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotPayload {
    #[prost(int64, tag = "1")]
    pub next_offset: i64,
    /// The machine's state; empty for partitions without one.
    #[prost(bytes = "bytes", tag = "2")]
    pub state: Bytes,
    #[prost(uint32, tag = "3")]
    pub state_crc: u32,
    #[prost(bool, tag = "4")]
    pub has_state: bool,
}

/// Why snapshot bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot payload does not decode: {0}")]
    Decode(String),
    #[error("snapshot checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
}

impl SnapshotPayload {
    pub fn new(next_offset: i64, state: Option<Bytes>) -> SnapshotPayload {
        let has_state = state.is_some();
        let state = state.unwrap_or_default();
        SnapshotPayload {
            next_offset,
            state_crc: crc32c::crc32c(&state),
            state,
            has_state,
        }
    }

    /// Decodes and verifies a raft snapshot's data. Bytes from the network: never panics.
    pub fn decode_checked(data: &[u8]) -> Result<SnapshotPayload, SnapshotError> {
        let p = SnapshotPayload::decode(data).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let computed = crc32c::crc32c(&p.state);
        if computed != p.state_crc {
            return Err(SnapshotError::Checksum {
                stored: p.state_crc,
                computed,
            });
        }
        Ok(p)
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }
}

/// Encodes a snapshot file: the prost bytes, then their CRC-32C (little-endian).
pub fn encode_file(snap: &SnapshotFile) -> Vec<u8> {
    let mut out = snap.encode_to_vec();
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot file, verifying its checksum. Bytes from disk: never panics.
pub fn decode_file(bytes: &[u8]) -> Result<SnapshotFile, SnapshotError> {
    if bytes.len() < 4 {
        return Err(SnapshotError::Decode("shorter than its checksum".into()));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("split at len - 4"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    SnapshotFile::decode(body).map_err(|e| SnapshotError::Decode(e.to_string()))
}

fn file_name(index: RaftIndex) -> String {
    format!("{index:020}{SNAPSHOT_SUFFIX}")
}

/// The snapshot files of a partition directory, by index, oldest first.
pub fn list(disk: &dyn Disk, dir: &str) -> Result<Vec<(RaftIndex, String)>, DiskError> {
    let mut out: Vec<(RaftIndex, String)> = disk
        .list(dir)?
        .into_iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(SNAPSHOT_SUFFIX)?;
            let index = stem.parse::<u64>().ok()?;
            (stem.len() == 20).then_some((index, n))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads and verifies one snapshot file.
pub fn read(disk: &dyn Disk, path: &str) -> Result<SnapshotFile, SnapshotError> {
    let len = disk
        .len(path)
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if len > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotError::Decode(format!(
            "{len} bytes is over the limit"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = disk
            .read_at(path, done as u64, &mut buf[done..])
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if n == 0 {
            return Err(SnapshotError::Decode("file shorter than its length".into()));
        }
        done += n;
    }
    decode_file(&buf)
}

/// The newest snapshot that verifies, and how many newer ones did not (each is reported).
pub fn load_newest(disk: &dyn Disk, dir: &str) -> Result<(Option<SnapshotFile>, usize), DiskError> {
    let mut bad = 0;
    for (_, name) in list(disk, dir)?.into_iter().rev() {
        match read(disk, &join_path(dir, &name)) {
            Ok(s) => return Ok((Some(s), bad)),
            Err(_) => bad += 1,
        }
    }
    Ok((None, bad))
}

/// Writes `snap` durably (temporary file, sync, rename), then deletes all but the newest
/// [`SNAPSHOTS_KEPT_MAX`] files and leftovers of interrupted writes. Returns the index of the
/// oldest snapshot kept: the log may be compacted up to it.
pub fn save(disk: &Rc<dyn Disk>, dir: &str, snap: &SnapshotFile) -> Result<RaftIndex, DiskError> {
    let name = file_name(snap.index);
    let tmp = join_path(dir, &format!("{:020}{TEMP_SUFFIX}", snap.index));
    match disk.create(&tmp) {
        Ok(()) => {}
        Err(DiskError::AlreadyExists(_)) => disk.truncate(&tmp, 0)?,
        Err(e) => return Err(e),
    }
    disk.append(&tmp, &encode_file(snap))?;
    disk.sync(&tmp)?;
    let path = join_path(dir, &name);
    if disk.len(&path).is_ok() {
        disk.remove(&path)?;
    }
    disk.rename(&tmp, &path)?;
    let files = list(&**disk, dir)?;
    let keep_from = files.len().saturating_sub(SNAPSHOTS_KEPT_MAX);
    for (_, old) in &files[..keep_from] {
        let _ = disk.remove(&join_path(dir, old));
    }
    for n in disk.list(dir)? {
        if n.ends_with(TEMP_SUFFIX) {
            let _ = disk.remove(&join_path(dir, &n));
        }
    }
    Ok(files[keep_from].0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    fn snap(index: u64) -> SnapshotFile {
        SnapshotFile {
            index,
            term: 3,
            next_offset: 10,
            voters: vec![1, 2, 3],
            learners: vec![4],
            data: Bytes::from(vec![index as u8; 100]),
            joint: None,
        }
    }

    #[test]
    fn test_save_keeps_two_and_a_corrupt_newest_falls_back() {
        // Two generations are kept; a flipped bit in the newest makes load use the older one.
        let disk: Rc<dyn Disk> = Rc::new(MemDisk::new());
        assert_eq!(save(&disk, "p", &snap(5)).unwrap(), 5);
        assert_eq!(save(&disk, "p", &snap(9)).unwrap(), 5);
        assert_eq!(save(&disk, "p", &snap(12)).unwrap(), 9);
        let names: Vec<u64> = list(&*disk, "p").unwrap().iter().map(|f| f.0).collect();
        assert_eq!(names, vec![9, 12]);
        assert_eq!(load_newest(&*disk, "p").unwrap().0.unwrap(), snap(12));
        let path = join_path("p", &file_name(12));
        let mut b = [0u8; 1];
        disk.read_at(&path, 20, &mut b).unwrap();
        disk.write_at(&path, 20, &[b[0] ^ 0x10]).unwrap();
        assert!(matches!(
            read(&*disk, &path),
            Err(SnapshotError::Checksum { .. })
        ));
        let (loaded, bad) = load_newest(&*disk, "p").unwrap();
        assert_eq!((loaded.unwrap().index, bad), (9, 1));
    }

    #[test]
    fn test_payload_checksum_refuses_tampering() {
        // A raft snapshot whose state was altered in transit is refused, never applied.
        let p = SnapshotPayload::new(7, Some(Bytes::from_static(b"state")));
        let ok = SnapshotPayload::decode_checked(&p.encode()).unwrap();
        assert_eq!(ok, p);
        let mut bad = p.clone();
        bad.state = Bytes::from_static(b"statf");
        assert!(SnapshotPayload::decode_checked(&bad.encode()).is_err());
        assert!(SnapshotPayload::decode_checked(&[0xff, 0xff]).is_err());
        assert!(decode_file(&[1, 2]).is_err());
    }
}
