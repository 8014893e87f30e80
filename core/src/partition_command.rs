//! Commands to a data partition itself, carried in the partition's own raft log.
//!
//! A command entry is raft's `EntryNormal` whose context is [`COMMAND_CONTEXT`] (stored as
//! [`EntryKind::Command`](crate::log::EntryKind::Command)); its data is a prost-encoded
//! [`PartitionCommand`]. It takes a raft index but no Kafka offset, so clients never see it,
//! and it applies when it commits, in log order with the records around it, on every replica.
//!
//! The one command today is DeleteRecords: move the log start offset (Kafka's
//! logStartOffset) forward. Going through the log makes it replicated state like the records:
//! any later leader has the entry, and a replica that restarts applies the committed commands
//! still in its log again (`Replica::open`). A command whose segment retention deleted needs
//! no replay: deleting a segment moves the physical start at least as far (the command comes
//! after every record it deletes, since it may only name offsets up to the high watermark).

use bytes::Bytes;
use prost::Message as _;
use raft::eraftpb::{Entry, EntryType};

use crate::types::Offset;

/// The raft entry context that marks a command entry.
pub const COMMAND_CONTEXT: &[u8] = b"railyard.partition-command.v1";

/// Whether a raft entry is a command entry.
pub fn is_command(e: &Entry) -> bool {
    e.get_entry_type() == EntryType::EntryNormal && e.context.as_ref() == COMMAND_CONTEXT
}

/// A decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Records before this offset are deleted: it becomes the log start offset, if that is
    /// lower.
    DeleteRecords { before_offset: Offset },
}

/// Why command data did not decode (a newer node's command, or a bug: the entry passed its
/// CRC, so it is what was proposed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command does not decode: {0}")]
    Decode(String),
    #[error("command of an unknown kind")]
    UnknownKind,
    #[error("DeleteRecords before offset {0}, which is negative")]
    NegativeOffset(Offset),
}

/// The wire form (prost, so that later commands add fields and tags without a format break).
#[derive(Clone, PartialEq, prost::Message)]
struct Wire {
    #[prost(oneof = "WireKind", tags = "1")]
    kind: Option<WireKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireKind {
    #[prost(message, tag = "1")]
    DeleteRecords(WireDeleteRecords),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireDeleteRecords {
    #[prost(int64, tag = "1")]
    before_offset: i64,
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let wire = match *self {
            Command::DeleteRecords { before_offset } => Wire {
                kind: Some(WireKind::DeleteRecords(WireDeleteRecords { before_offset })),
            },
        };
        Bytes::from(wire.encode_to_vec())
    }

    pub fn decode(data: &[u8]) -> Result<Command, CommandError> {
        let wire = Wire::decode(data).map_err(|e| CommandError::Decode(e.to_string()))?;
        match wire.kind {
            Some(WireKind::DeleteRecords(d)) if d.before_offset < 0 => {
                Err(CommandError::NegativeOffset(d.before_offset))
            }
            Some(WireKind::DeleteRecords(d)) => Ok(Command::DeleteRecords {
                before_offset: d.before_offset,
            }),
            None => Err(CommandError::UnknownKind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_delete_records_round_trips() {
        for before_offset in [0, 1, 4096, i64::MAX] {
            let c = Command::DeleteRecords { before_offset };
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn test_bad_command_data_is_a_typed_error() {
        assert_eq!(Command::decode(&[]), Err(CommandError::UnknownKind));
        assert!(matches!(
            Command::decode(&[0xff, 0xff, 0xff]),
            Err(CommandError::Decode(_))
        ));
        let negative = Wire {
            kind: Some(WireKind::DeleteRecords(WireDeleteRecords {
                before_offset: -1,
            })),
        };
        assert_eq!(
            Command::decode(&negative.encode_to_vec()),
            Err(CommandError::NegativeOffset(-1))
        );
    }

    #[test]
    fn test_only_marked_normal_entries_are_commands() {
        let mut e = Entry {
            context: COMMAND_CONTEXT.into(),
            ..Default::default()
        };
        assert!(is_command(&e));
        e.set_entry_type(EntryType::EntryConfChangeV2);
        assert!(!is_command(&e));
        let plain = Entry::default();
        assert!(!is_command(&plain));
    }
}
