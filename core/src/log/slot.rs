//! `SlotFile`: a tiny crash-safe record (a few KiB) stored in two alternating fixed-size slots.
//!
//! Used for the partition log's start point ([`super::SnapshotMeta`]) and for raft's hard state.
//! Each write goes to the slot *not* holding the current value, tagged with a sequence number one
//! higher, and is covered by a CRC-32C. A crash that tears the slot being written leaves the other
//! slot intact, so [`SlotFile::open`] recovers either the new value (if its write completed) or
//! the previous one, never a mix. Under the `Disk` contract a crash keeps a prefix of the unsynced
//! writes, so even several unsynced writes in a row leave at least one intact slot.
//!
//! Slot layout (little-endian): `crc u32 | seq u64 | len u32 | payload`; the CRC covers
//! `seq..payload end`. A slot of zeros is invalid because its `seq` is 0 and real slots start
//! at 1.

use std::rc::Rc;

use super::LogError;
use crate::disk::{Disk, DiskError};

/// Bytes per slot on disk.
pub const SLOT_BYTES: usize = 4096;
/// Header bytes in each slot: crc, sequence number and payload length.
const SLOT_HEADER_BYTES: usize = 16;
/// Largest payload a slot can carry.
pub const SLOT_PAYLOAD_MAX: usize = SLOT_BYTES - SLOT_HEADER_BYTES;

/// A two-slot crash-safe file holding one small payload.
pub struct SlotFile {
    disk: Rc<dyn Disk>,
    path: String,
    /// Sequence number of the newest valid slot (0 = none written yet).
    seq: u64,
    /// The slot the next write goes to.
    next_slot: u64,
}

impl SlotFile {
    /// Opens (creating if absent) the slot file at `path` and returns its newest valid payload, or
    /// `None` if no slot holds a valid value (a new file, or a first write that never completed).
    pub fn open(disk: Rc<dyn Disk>, path: &str) -> Result<(SlotFile, Option<Vec<u8>>), LogError> {
        match disk.create(path) {
            Ok(()) | Err(DiskError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut best: Option<(u64, u64, Vec<u8>)> = None; // (seq, slot, payload)
        for slot in 0..2u64 {
            let mut buf = vec![0u8; SLOT_BYTES];
            let n = disk.read_at(path, slot * SLOT_BYTES as u64, &mut buf)?;
            if let Some((seq, payload)) = decode_slot(&buf[..n]) {
                if best.as_ref().is_none_or(|b| seq > b.0) {
                    best = Some((seq, slot, payload));
                }
            }
        }
        let (seq, next_slot, payload) = match best {
            Some((seq, slot, payload)) => (seq, 1 - slot, Some(payload)),
            None => (0, 0, None),
        };
        let file = SlotFile {
            disk,
            path: path.to_string(),
            seq,
            next_slot,
        };
        Ok((file, payload))
    }

    /// Writes `payload` as the new value, into the slot not holding the current one. Not durable
    /// until [`SlotFile::sync`]. Panics if `payload` exceeds [`SLOT_PAYLOAD_MAX`] (a caller bug:
    /// slot payloads are small fixed-shape records).
    pub fn write(&mut self, payload: &[u8]) -> Result<(), LogError> {
        assert!(
            payload.len() <= SLOT_PAYLOAD_MAX,
            "slot payload too large: {}",
            payload.len()
        );
        let seq = self.seq + 1;
        let mut buf = Vec::with_capacity(SLOT_HEADER_BYTES + payload.len());
        buf.extend_from_slice(&[0u8; 4]);
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32c::crc32c(&buf[4..]);
        buf[0..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_slot(&buf).as_ref().map(|s| s.0), Some(seq));
        self.disk
            .write_at(&self.path, self.next_slot * SLOT_BYTES as u64, &buf)?;
        // Only advance once the write succeeded: a failed write leaves the current value current.
        self.seq = seq;
        self.next_slot = 1 - self.next_slot;
        Ok(())
    }

    /// Makes the last write durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.disk.sync(&self.path)?;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Decodes one slot; `None` if it is torn, zeroed or otherwise invalid.
fn decode_slot(buf: &[u8]) -> Option<(u64, Vec<u8>)> {
    if buf.len() < SLOT_HEADER_BYTES {
        return None;
    }
    let crc = u32::from_le_bytes(buf[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(buf[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(buf[12..16].try_into().ok()?) as usize;
    if seq == 0 || len > SLOT_PAYLOAD_MAX || SLOT_HEADER_BYTES + len > buf.len() {
        return None;
    }
    let end = SLOT_HEADER_BYTES + len;
    if crc32c::crc32c(&buf[4..end]) != crc {
        return None;
    }
    Some((seq, buf[SLOT_HEADER_BYTES..end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use proptest::prelude::*;

    #[test]
    fn test_slot_file_returns_latest_write_after_reopen() {
        // The newest completed write wins, across both slots.
        let disk = Rc::new(MemDisk::new());
        let (mut f, v) = SlotFile::open(disk.clone(), "p/meta").unwrap();
        assert_eq!(v, None);
        for i in 0..5u8 {
            f.write(&[i; 10]).unwrap();
            f.sync().unwrap();
            let (_, v) = SlotFile::open(disk.clone(), "p/meta").unwrap();
            assert_eq!(v, Some(vec![i; 10]));
        }
        // An empty payload is a value too.
        f.write(&[]).unwrap();
        assert_eq!(SlotFile::open(disk, "p/meta").unwrap().1, Some(vec![]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Tearing or corrupting the slot being written yields the previous value, never garbage.
        #[test]
        fn prop_torn_write_keeps_previous_value(
            writes in 2usize..6,
            cut in 0usize..SLOT_BYTES,
            flip in any::<Option<(prop::sample::Index, u8)>>(),
        ) {
            let disk = Rc::new(MemDisk::new());
            let (mut f, _) = SlotFile::open(disk.clone(), "m").unwrap();
            for i in 0..writes {
                f.write(&vec![i as u8; 20 + i]).unwrap();
            }
            // The last write went to slot (writes - 1) % 2; damage it.
            let slot = ((writes - 1) % 2) * SLOT_BYTES;
            disk.with_file("m", |b| {
                match flip {
                    Some((idx, x)) if x != 0 => {
                        let at = slot + idx.index(SLOT_HEADER_BYTES + 20 + writes - 1);
                        b[at] ^= x;
                    }
                    _ => {
                        let end = (slot + cut).min(b.len());
                        for byte in &mut b[slot.min(end)..end.max(slot)] { *byte = 0; }
                        if slot + cut < b.len() && slot == SLOT_BYTES { b.truncate(slot + cut); }
                    }
                }
            });
            let (_, v) = SlotFile::open(disk, "m").unwrap();
            let last = writes - 1;
            let prev = writes - 2;
            prop_assert!(
                v == Some(vec![last as u8; 20 + last]) || v == Some(vec![prev as u8; 20 + prev]),
                "got {:?}", v
            );
        }
    }
}
