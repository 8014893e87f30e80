//! The core's logs during a replay, for a person reading why a seed failed: with
//! `RAILYARD_SIM_LOG=1`, every node's slog records go to stderr as one line each (level,
//! message, then the key-values, node first). Off, they are discarded, so campaigns stay fast.
//! The lines carry no time: the simulator's clock is not the wall clock, and the order of lines
//! is the order of events.

use std::fmt;

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

/// The logger a node of the simulation gets.
pub fn node_logger() -> slog::Logger {
    if std::env::var_os("RAILYARD_SIM_LOG").is_some() {
        slog::Logger::root(StderrLines.fuse(), slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

/// A synchronous drain: one `eprintln!` per record, so lines interleave in event order.
struct StderrLines;

impl Drain for StderrLines {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut line = Line(String::new());
        // The logger's own values (node, then the replica's partition) before the record's.
        let _ = values.serialize(record, &mut line);
        let _ = record.kv().serialize(record, &mut line);
        eprintln!(
            "{} {}{}",
            record.level().as_short_str(),
            record.msg(),
            line.0
        );
        Ok(())
    }
}

struct Line(String);

impl Serializer for Line {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}
