//! The cluster's id, and the file that ties a data directory to it.
//!
//! The first controller of a new cluster draws the id (16 bytes from its seeded RNG, written
//! in unpadded base64url like Kafka's cluster ids) and writes it in the metadata log
//! (`ClusterCreated`). Every node that applies that record, or that is admitted by the
//! controller as a joining node, stores the id in `cluster.id` at the root of its data
//! directory (a [`SlotFile`]: checksummed, torn writes leave the previous value). From then
//! on the directory belongs to that cluster: every envelope the node sends names it, envelopes
//! naming another cluster are refused before they touch any replica, and a node whose
//! controller quorum all refuse it stops with [`crate::node::NodeError::ForeignCluster`]
//! without changing its data.

use std::rc::Rc;

use prost::Message as _;
use rand::RngCore;

use crate::disk::Disk;
use crate::log::slot::SlotFile;
use crate::log::LogError;

/// The file at the root of a data directory.
pub const CLUSTER_ID_FILE: &str = "cluster.id";
/// Longest cluster id accepted (Kafka's are 22 characters).
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Draws a new cluster id: 16 random bytes, unpadded base64url (22 characters).
pub fn new_cluster_id(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    base64url(&bytes)
}

/// Whether `id` may name a cluster: 1 to [`CLUSTER_ID_BYTES_MAX`] characters of the base64url
/// alphabet.
pub fn valid_cluster_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CLUSTER_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        // 3 bytes give 4 characters; a short final chunk of k bytes gives k + 1 (no padding).
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredClusterId {
    #[prost(string, tag = "1")]
    cluster_id: String,
}

/// `cluster.id` of one data directory.
pub struct ClusterIdFile {
    file: SlotFile,
    id: Option<String>,
}

/// Why `cluster.id` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClusterIdError {
    #[error("{CLUSTER_ID_FILE}: {0}")]
    Io(#[from] LogError),
    #[error("{CLUSTER_ID_FILE} holds no valid cluster id ({0})")]
    Invalid(String),
}

impl ClusterIdFile {
    /// Opens the file (creating it empty when absent) and reads the id it holds.
    pub fn open(disk: Rc<dyn Disk>) -> Result<ClusterIdFile, ClusterIdError> {
        let (file, payload) = SlotFile::open(disk, CLUSTER_ID_FILE)?;
        let id = match payload {
            None => None,
            Some(bytes) => {
                let stored = StoredClusterId::decode(bytes.as_slice())
                    .map_err(|e| ClusterIdError::Invalid(e.to_string()))?;
                if !valid_cluster_id(&stored.cluster_id) {
                    return Err(ClusterIdError::Invalid(format!("{:?}", stored.cluster_id)));
                }
                Some(stored.cluster_id)
            }
        };
        Ok(ClusterIdFile { file, id })
    }

    /// The id this directory belongs to, if any yet.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Writes and syncs `id`. Called once per directory: an id, once stored, never changes.
    pub fn store(&mut self, id: &str) -> Result<(), ClusterIdError> {
        assert!(valid_cluster_id(id), "storing an invalid cluster id {id:?}");
        assert!(
            self.id.as_deref().is_none_or(|cur| cur == id),
            "{CLUSTER_ID_FILE} holds {:?}; refusing to overwrite it with {id:?}",
            self.id
        );
        let stored = StoredClusterId {
            cluster_id: id.to_string(),
        };
        self.file.write(&stored.encode_to_vec())?;
        self.file.sync()?;
        self.id = Some(id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use rand::SeedableRng;

    #[test]
    fn test_cluster_id_is_22_characters_of_base64url_and_differs_per_seed() {
        let a = new_cluster_id(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let b = new_cluster_id(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
        assert_eq!(a.len(), 22);
        assert!(valid_cluster_id(&a) && valid_cluster_id(&b));
        assert_ne!(a, b);
        // RFC 4648 test vectors, without padding.
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn test_invalid_cluster_ids() {
        for bad in ["", "a b", "a/b", "é", &"x".repeat(CLUSTER_ID_BYTES_MAX + 1)] {
            assert!(!valid_cluster_id(bad), "{bad:?}");
        }
        assert!(valid_cluster_id("MkU3OEVBNTcwNTJENDM2Qk"));
    }

    #[test]
    fn test_cluster_id_file_survives_reopen_and_refuses_garbage() {
        let disk: Rc<dyn Disk> = Rc::new(MemDisk::new());
        let mut f = ClusterIdFile::open(disk.clone()).unwrap();
        assert_eq!(f.id(), None);
        f.store("abc-DEF_1").unwrap();
        let f = ClusterIdFile::open(disk.clone()).unwrap();
        assert_eq!(f.id(), Some("abc-DEF_1"));
        // A valid slot whose payload is not an id: an error, not a panic or a silent reset.
        let (mut slot, _) = SlotFile::open(disk.clone(), CLUSTER_ID_FILE).unwrap();
        slot.write(&[0xff, 0xff, 0xff]).unwrap();
        assert!(ClusterIdFile::open(disk).is_err());
    }
}
