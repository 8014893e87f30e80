//! The history checker: finds CHECKER.md's anomalies (after Jepsen's Kafka workload) in a
//! [`History`].
//!
//! The checker first pairs each invoke with its completion per process (an op with no
//! completion counts as `info`), then derives, per key, the version order (offset → values seen
//! there, from every poll read whatever its outcome and every ok send) and the dense index of
//! each offset that carries a value. Every anomaly is a pass over those derived tables; each
//! pass is O(n log n) or better so that a 100k-event history checks in well under a second.
//! All maps are B-trees so the report, including which examples are kept, is a pure function
//! of the history: the simulator replays a seed and must see the same report.
//!
//! Besides the table of CHECKER.md, the checker reports `malformed-history` for events that
//! break the recording contract (a completion without an invoke, an event from a crashed
//! process, an ok send without an offset, a value sent twice, ...): such a history means the
//! recorder is broken, and its other findings may be meaningless.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{json, Value};

use crate::history::{History, Op, Operation, Outcome, Pairing};

/// At most this many examples are kept per anomaly; the count is always exact.
pub const EXAMPLES_MAX: usize = 8;

/// The anomalies the checker looks for, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anomaly {
    /// Some (key, offset) maps to two or more distinct values.
    InconsistentOffsets,
    /// One value appears at two or more offsets of a key.
    Duplicate,
    /// A value that must have committed, below the highest index read, was never read.
    LostWrite,
    /// A value from an ok send was never read by an ok poll (an error once final reads are done).
    Unseen,
    /// An ok poll read a value whose send failed (G1a).
    AbortedRead,
    /// A process's poll started more than one index past where its previous poll ended.
    PollSkip,
    /// A process's poll started at or before where its previous poll ended.
    NonmonotonicPoll,
    /// Two consecutive values inside one poll are more than one index apart.
    IntPollSkip,
    /// Two consecutive values inside one poll go backwards or repeat an index.
    IntNonmonotonicPoll,
    /// A process's send landed at or before its previous send to the same key.
    NonmonotonicSend,
    /// An ok send that completed before another send to the same key began has a higher or
    /// equal offset.
    RealtimeOrder,
    /// The history breaks the recording contract (not in CHECKER.md's table; always an error).
    MalformedHistory,
}

impl Anomaly {
    /// Every anomaly, in report order.
    pub const ALL: [Anomaly; 12] = [
        Anomaly::InconsistentOffsets,
        Anomaly::Duplicate,
        Anomaly::LostWrite,
        Anomaly::Unseen,
        Anomaly::AbortedRead,
        Anomaly::PollSkip,
        Anomaly::NonmonotonicPoll,
        Anomaly::IntPollSkip,
        Anomaly::IntNonmonotonicPoll,
        Anomaly::NonmonotonicSend,
        Anomaly::RealtimeOrder,
        Anomaly::MalformedHistory,
    ];

    /// The kebab-case name used in reports (`lost-write`, `realtime-order`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::InconsistentOffsets => "inconsistent-offsets",
            Anomaly::Duplicate => "duplicate",
            Anomaly::LostWrite => "lost-write",
            Anomaly::Unseen => "unseen",
            Anomaly::AbortedRead => "aborted-read",
            Anomaly::PollSkip => "poll-skip",
            Anomaly::NonmonotonicPoll => "nonmonotonic-poll",
            Anomaly::IntPollSkip => "int-poll-skip",
            Anomaly::IntNonmonotonicPoll => "int-nonmonotonic-poll",
            Anomaly::NonmonotonicSend => "nonmonotonic-send",
            Anomaly::RealtimeOrder => "realtime-order",
            Anomaly::MalformedHistory => "malformed-history",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How consumers obtained their keys, which decides whether poll-skip and nonmonotonic-poll
/// are errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsumerMode {
    /// `Subscribe` if the history contains any subscribe op, else `Assign`.
    #[default]
    Auto,
    /// Manual assignment: every poll-skip and nonmonotonic-poll is an error.
    Assign,
    /// Group subscription: rebalances legitimately move keys between consumers, so poll-skip
    /// and nonmonotonic-poll are reported but allowed.
    Subscribe,
}

/// What the caller knows about the run that produced the history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// The run ended with catch-up polls that read every key to its end, so every ok send
    /// should have been read: `unseen` becomes an error. Without final reads, `unseen` is
    /// informational (a write may simply not have been polled yet).
    pub final_reads_done: bool,
    /// Assign or subscribe semantics for poll-skip and nonmonotonic-poll.
    pub mode: ConsumerMode,
}

/// One anomaly's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnomalySummary {
    /// Exact number of occurrences.
    pub count: u64,
    /// Whether the occurrences make the history invalid under the options used.
    pub error: bool,
    /// The first [`EXAMPLES_MAX`] occurrences, in a deterministic order.
    pub examples: Vec<Value>,
}

/// Counts describing the history, for context next to the anomalies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events in the history.
    pub events: u64,
    /// Operations after pairing invokes with completions.
    pub operations: u64,
    /// Sends acknowledged.
    pub sends_ok: u64,
    /// Sends that certainly failed.
    pub sends_fail: u64,
    /// Sends with an unknown outcome (including invokes never completed).
    pub sends_info: u64,
    /// Info sends whose value an ok poll read, so that must have committed.
    pub sends_info_committed: u64,
    /// Polls that completed ok.
    pub polls_ok: u64,
    /// Polls that failed.
    pub polls_fail: u64,
    /// Polls with an unknown outcome.
    pub polls_info: u64,
    /// `(offset, value)` records returned by ok polls (with repeats).
    pub values_read: u64,
    /// Distinct values ok polls read.
    pub distinct_values_read: u64,
    /// Per key, the highest offset seen in any read or ok send.
    pub max_offset: BTreeMap<String, i64>,
}

/// The checker's verdict: anomalies found (only those with a non-zero count) and statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// The consumer mode the anomalies were judged under (never `Auto`).
    pub mode: ConsumerMode,
    /// Whether `unseen` was judged as an error.
    pub final_reads_done: bool,
    /// Anomalies with at least one occurrence, in [`Anomaly::ALL`] order.
    pub anomalies: BTreeMap<Anomaly, AnomalySummary>,
    /// Summary counts.
    pub stats: Stats,
}

impl CheckReport {
    /// True when no anomaly that is an error under the options was found.
    pub fn valid(&self) -> bool {
        self.anomalies.values().all(|s| !s.error)
    }

    /// Names of the anomalies found that are errors, in report order.
    pub fn errors(&self) -> Vec<&'static str> {
        self.names(true)
    }

    /// Names of the anomalies found that are allowed or informational, in report order.
    pub fn allowed(&self) -> Vec<&'static str> {
        self.names(false)
    }

    /// How often `anomaly` occurred (0 if never).
    pub fn count(&self, anomaly: Anomaly) -> u64 {
        self.anomalies.get(&anomaly).map_or(0, |s| s.count)
    }

    /// The examples kept for `anomaly` (empty if it never occurred).
    pub fn examples(&self, anomaly: Anomaly) -> &[Value] {
        self.anomalies
            .get(&anomaly)
            .map_or(&[], |s| s.examples.as_slice())
    }

    fn names(&self, error: bool) -> Vec<&'static str> {
        self.anomalies
            .iter()
            .filter(|(_, s)| s.error == error)
            .map(|(a, _)| a.name())
            .collect()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            ConsumerMode::Subscribe => "subscribe",
            _ => "assign",
        };
        writeln!(
            f,
            "{} (mode {mode}, final reads {})",
            if self.valid() { "valid" } else { "INVALID" },
            if self.final_reads_done {
                "done"
            } else {
                "not done"
            },
        )?;
        for error in [true, false] {
            let found: Vec<String> = self
                .anomalies
                .iter()
                .filter(|(_, s)| s.error == error)
                .map(|(a, s)| format!("{a} {}", s.count))
                .collect();
            if !found.is_empty() {
                let label = if error { "errors" } else { "allowed" };
                writeln!(f, "{label}: {}", found.join(", "))?;
            }
        }
        let s = &self.stats;
        writeln!(
            f,
            "sends ok {} fail {} info {} (committed {}); polls ok {} fail {} info {}; \
             values read {} ({} distinct); keys {}",
            s.sends_ok,
            s.sends_fail,
            s.sends_info,
            s.sends_info_committed,
            s.polls_ok,
            s.polls_fail,
            s.polls_info,
            s.values_read,
            s.distinct_values_read,
            s.max_offset.len(),
        )?;
        for (anomaly, summary) in &self.anomalies {
            if let Some(example) = summary.examples.first() {
                writeln!(f, "  {anomaly}: {example}")?;
            }
        }
        Ok(())
    }
}

/// Checks `history` for every anomaly; see the module docs and CHECKER.md for the rules.
pub fn check(history: &History, opts: &CheckOptions) -> CheckReport {
    let mode = resolve_mode(history, opts.mode);
    let mut rec = Recorder::new(opts.final_reads_done, mode);
    let Pairing { ops, faults } = history.operations();
    for f in &faults {
        rec.malformed(f.reason, f.process, f.time);
    }
    let sends = collect_sends(&ops, &mut rec);
    let derived = Derived::build(&ops, &sends);

    check_version_orders(&derived, &mut rec);
    check_lost_writes(&derived, &sends, &mut rec);
    check_unseen(&derived, &sends, &mut rec);
    check_aborted_reads(&ops, &sends, &mut rec);
    check_polls(&ops, &derived, &mut rec);
    check_nonmonotonic_sends(&sends, &mut rec);
    check_realtime_order(&sends, &mut rec);

    let stats = stats(history, &ops, &sends, &derived);
    CheckReport {
        mode,
        final_reads_done: opts.final_reads_done,
        anomalies: rec.anomalies,
        stats,
    }
}

/// A send operation, flattened.
#[derive(Clone, Copy, Debug)]
struct Send<'a> {
    process: u64,
    key: &'a str,
    value: u64,
    /// Known only for ok sends.
    offset: Option<i64>,
    outcome: Outcome,
    invoke_time: u64,
    complete_time: Option<u64>,
}

impl Send<'_> {
    fn to_json(self) -> Value {
        json!({
            "process": self.process,
            "key": self.key,
            "value": self.value,
            "offset": self.offset,
            "type": outcome_str(self.outcome),
            "invoke_time": self.invoke_time,
            "complete_time": self.complete_time,
        })
    }
}

/// All sends, plus the writer of each value.
struct Sends<'a> {
    /// In invoke order.
    list: Vec<Send<'a>>,
    /// Value → index in `list` of the first send of that value.
    writer_of: BTreeMap<u64, usize>,
}

/// Per-key derived data.
#[derive(Default)]
struct KeyData {
    /// Offset → distinct values seen there (reads of any outcome, ok sends).
    versions: BTreeMap<i64, BTreeSet<u64>>,
    /// Offset → dense index among offsets carrying values.
    index_of_offset: BTreeMap<i64, usize>,
    /// Value → (first, last) index it appears at.
    value_indices: BTreeMap<u64, (usize, usize)>,
    /// Values ok polls read at this key.
    ok_reads: BTreeSet<u64>,
}

impl KeyData {
    fn index(&self, offset: i64) -> usize {
        // Every read offset was inserted into `versions` by `Derived::build`, and
        // `index_of_offset` has an entry for each offset of `versions`.
        *self
            .index_of_offset
            .get(&offset)
            .expect("every read offset is in the version order")
    }
}

/// Version orders of every key plus the set of values any ok poll read.
struct Derived<'a> {
    keys: BTreeMap<&'a str, KeyData>,
    /// Values read by an ok poll at any key (decides whether an info send must have committed).
    ok_read_any: BTreeSet<u64>,
}

impl<'a> Derived<'a> {
    fn build(ops: &[Operation<'a>], sends: &Sends<'a>) -> Derived<'a> {
        let mut keys: BTreeMap<&'a str, KeyData> = BTreeMap::new();
        let mut ok_read_any = BTreeSet::new();
        for op in ops {
            let Op::Poll { reads } = op.completion else {
                continue;
            };
            for (key, records) in reads {
                let data = keys.entry(key.as_str()).or_default();
                for &(offset, value) in records {
                    data.versions.entry(offset).or_default().insert(value);
                    if op.outcome == Outcome::Ok {
                        data.ok_reads.insert(value);
                        ok_read_any.insert(value);
                    }
                }
            }
        }
        for send in &sends.list {
            if let (Outcome::Ok, Some(offset)) = (send.outcome, send.offset) {
                let data = keys.entry(send.key).or_default();
                data.versions.entry(offset).or_default().insert(send.value);
            }
        }
        for data in keys.values_mut() {
            for (index, (&offset, values)) in data.versions.iter().enumerate() {
                data.index_of_offset.insert(offset, index);
                for &value in values {
                    // Offsets ascend, so the first insertion is the first index.
                    data.value_indices
                        .entry(value)
                        .and_modify(|(_, last)| *last = index)
                        .or_insert((index, index));
                }
            }
        }
        Derived { keys, ok_read_any }
    }

    fn must_have_committed(&self, send: &Send<'_>) -> bool {
        match send.outcome {
            Outcome::Ok => true,
            Outcome::Info => self.ok_read_any.contains(&send.value),
            Outcome::Fail => false,
        }
    }
}

/// Collects anomalies, keeping exact counts and the first examples.
struct Recorder {
    final_reads_done: bool,
    mode: ConsumerMode,
    anomalies: BTreeMap<Anomaly, AnomalySummary>,
}

impl Recorder {
    fn new(final_reads_done: bool, mode: ConsumerMode) -> Recorder {
        assert_ne!(mode, ConsumerMode::Auto, "mode is resolved before checking");
        Recorder {
            final_reads_done,
            mode,
            anomalies: BTreeMap::new(),
        }
    }

    fn is_error(&self, anomaly: Anomaly) -> bool {
        match anomaly {
            Anomaly::Unseen => self.final_reads_done,
            Anomaly::PollSkip | Anomaly::NonmonotonicPoll => self.mode != ConsumerMode::Subscribe,
            _ => true,
        }
    }

    /// Records one occurrence; `example` is only built while examples are still kept.
    fn add(&mut self, anomaly: Anomaly, example: impl FnOnce() -> Value) {
        let error = self.is_error(anomaly);
        let summary = self.anomalies.entry(anomaly).or_insert(AnomalySummary {
            count: 0,
            error,
            examples: Vec::new(),
        });
        summary.count += 1;
        if summary.examples.len() < EXAMPLES_MAX {
            summary.examples.push(example());
        }
    }

    fn malformed(&mut self, reason: &str, process: u64, time: u64) {
        self.add(
            Anomaly::MalformedHistory,
            || json!({"reason": reason, "process": process, "time": time}),
        );
    }
}

fn resolve_mode(history: &History, mode: ConsumerMode) -> ConsumerMode {
    match mode {
        ConsumerMode::Auto => {
            let subscribes = history
                .events()
                .iter()
                .any(|e| matches!(e.op, Op::Subscribe { .. }));
            if subscribes {
                ConsumerMode::Subscribe
            } else {
                ConsumerMode::Assign
            }
        }
        explicit => explicit,
    }
}

fn collect_sends<'a>(ops: &[Operation<'a>], rec: &mut Recorder) -> Sends<'a> {
    let mut list = Vec::new();
    let mut writer_of = BTreeMap::new();
    for op in ops {
        let Op::Send { key, value, offset } = op.completion else {
            continue;
        };
        let time = op.complete_time.unwrap_or(op.invoke_time);
        if let Op::Send {
            key: k, value: v, ..
        } = op.invoke
        {
            if k != key || v != value {
                rec.malformed("send completion differs from its invoke", op.process, time);
            }
        }
        if op.outcome == Outcome::Ok && offset.is_none() {
            rec.malformed("ok send without an offset", op.process, time);
        }
        if writer_of.contains_key(value) {
            rec.malformed("value sent twice", op.process, time);
        } else {
            writer_of.insert(*value, list.len());
        }
        list.push(Send {
            process: op.process,
            key,
            value: *value,
            // Only an acknowledgement's offset is trusted.
            offset: if op.outcome == Outcome::Ok {
                *offset
            } else {
                None
            },
            outcome: op.outcome,
            invoke_time: op.invoke_time,
            complete_time: op.complete_time,
        });
    }
    Sends { list, writer_of }
}

/// inconsistent-offsets and duplicate: both read off the version order alone.
fn check_version_orders(derived: &Derived<'_>, rec: &mut Recorder) {
    for (key, data) in &derived.keys {
        for (offset, values) in &data.versions {
            if values.len() > 1 {
                rec.add(
                    Anomaly::InconsistentOffsets,
                    || json!({"key": key, "offset": offset, "values": values}),
                );
            }
        }
        let mut offsets_of: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for (&offset, values) in &data.versions {
            for &value in values {
                offsets_of.entry(value).or_default().push(offset);
            }
        }
        for (value, offsets) in offsets_of {
            if offsets.len() > 1 {
                rec.add(
                    Anomaly::Duplicate,
                    || json!({"key": key, "value": value, "offsets": offsets}),
                );
            }
        }
    }
}

/// Per key: every must-have-committed value at or below the highest first-index of any value
/// an ok poll read, that no ok poll read at that key.
fn check_lost_writes(derived: &Derived<'_>, sends: &Sends<'_>, rec: &mut Recorder) {
    for (key, data) in &derived.keys {
        let bound = data
            .ok_reads
            .iter()
            .filter_map(|v| data.value_indices.get(v))
            .map(|&(first, _)| first)
            .max();
        let Some(bound) = bound else {
            continue;
        };
        for (&value, &(_, last)) in &data.value_indices {
            if last > bound || data.ok_reads.contains(&value) {
                continue;
            }
            let Some(&writer) = sends.writer_of.get(&value) else {
                continue;
            };
            let send = &sends.list[writer];
            if derived.must_have_committed(send) {
                rec.add(Anomaly::LostWrite, || {
                    json!({"key": key, "value": value, "index": last, "bound": bound,
                           "writer": send.to_json()})
                });
            }
        }
    }
}

/// Values of ok sends that no ok poll read at the send's key.
fn check_unseen(derived: &Derived<'_>, sends: &Sends<'_>, rec: &mut Recorder) {
    for send in &sends.list {
        if send.outcome != Outcome::Ok {
            continue;
        }
        let read = derived
            .keys
            .get(send.key)
            .is_some_and(|d| d.ok_reads.contains(&send.value));
        if !read {
            rec.add(Anomaly::Unseen, || send.to_json());
        }
    }
}

/// G1a: an ok poll read a value whose send failed. Counted once per (reader op, key, value).
fn check_aborted_reads(ops: &[Operation<'_>], sends: &Sends<'_>, rec: &mut Recorder) {
    for op in ops {
        let (Outcome::Ok, Op::Poll { reads }) = (op.outcome, op.completion) else {
            continue;
        };
        for (key, records) in reads {
            for &(offset, value) in records {
                let Some(&writer) = sends.writer_of.get(&value) else {
                    continue;
                };
                let send = &sends.list[writer];
                if send.outcome == Outcome::Fail {
                    rec.add(Anomaly::AbortedRead, || {
                        json!({"key": key, "offset": offset, "value": value,
                               "reader": op.process, "read_time": op.complete_time,
                               "writer": send.to_json()})
                    });
                }
            }
        }
    }
}

/// Where a process last read a key.
#[derive(Clone, Copy)]
struct Position {
    index: usize,
    offset: i64,
    value: u64,
}

/// poll-skip, nonmonotonic-poll and their intra-poll variants, per process and key.
fn check_polls(ops: &[Operation<'_>], derived: &Derived<'_>, rec: &mut Recorder) {
    let mut last: BTreeMap<u64, BTreeMap<&str, Position>> = BTreeMap::new();
    let mut assignment: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for op in ops {
        if op.outcome != Outcome::Ok {
            continue;
        }
        match (op.invoke, op.completion) {
            (Op::Assign { keys, .. } | Op::Subscribe { keys }, completion) => {
                // The recorder may put the flag on the invoke, the completion or both.
                let seek = seeks_to_beginning(op.invoke) || seeks_to_beginning(completion);
                let new: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
                let old = assignment.remove(&op.process).unwrap_or_default();
                // A key stays tracked only if it was assigned before and after and the consumer
                // did not rewind; a newly assigned key starts wherever the broker says.
                if let Some(tracked) = last.get_mut(&op.process) {
                    tracked.retain(|k, _| !seek && new.contains(k) && old.contains(k));
                }
                assignment.insert(op.process, new);
            }
            (_, Op::Poll { reads }) => {
                let tracked = last.entry(op.process).or_default();
                for (key, records) in reads {
                    let Some(data) = derived.keys.get(key.as_str()) else {
                        // Only a key with no records has no version order.
                        continue;
                    };
                    check_poll_key(op, key, records, data, tracked, rec);
                }
            }
            _ => {}
        }
    }
}

fn check_poll_key<'a>(
    op: &Operation<'_>,
    key: &'a str,
    records: &[(i64, u64)],
    data: &KeyData,
    tracked: &mut BTreeMap<&'a str, Position>,
    rec: &mut Recorder,
) {
    let positions: Vec<Position> = records
        .iter()
        .map(|&(offset, value)| Position {
            index: data.index(offset),
            offset,
            value,
        })
        .collect();
    let (Some(&first), Some(&final_pos)) = (positions.first(), positions.last()) else {
        return;
    };
    let example = |prev: Position, next: Position| {
        json!({"process": op.process, "key": key, "time": op.complete_time,
               "prev": [prev.offset, prev.value], "next": [next.offset, next.value],
               "index_delta": next.index as i64 - prev.index as i64})
    };
    if let Some(&prev) = tracked.get(key) {
        if first.index > prev.index + 1 {
            rec.add(Anomaly::PollSkip, || example(prev, first));
        } else if first.index <= prev.index {
            rec.add(Anomaly::NonmonotonicPoll, || example(prev, first));
        }
    }
    for pair in positions.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        if next.index > prev.index + 1 {
            rec.add(Anomaly::IntPollSkip, || example(prev, next));
        } else if next.index <= prev.index {
            rec.add(Anomaly::IntNonmonotonicPoll, || example(prev, next));
        }
    }
    tracked.insert(key, final_pos);
}

/// Per process and key, ok sends must land at strictly increasing offsets.
fn check_nonmonotonic_sends(sends: &Sends<'_>, rec: &mut Recorder) {
    let mut last: BTreeMap<(u64, &str), &Send<'_>> = BTreeMap::new();
    for send in &sends.list {
        let Some(offset) = send.offset else {
            continue;
        };
        if let Some(prev) = last.get(&(send.process, send.key)) {
            // `last` only holds sends with an offset.
            if prev.offset.is_some_and(|p| offset <= p) {
                let prev = prev.to_json();
                rec.add(
                    Anomaly::NonmonotonicSend,
                    || json!({"prev": prev, "next": send.to_json()}),
                );
            }
        }
        last.insert((send.process, send.key), send);
    }
}

/// For each ok send B of a key, the highest offset among ok sends of that key that completed
/// strictly before B was invoked must be below B's offset. Sorting the sends once by completion
/// and once by invocation and sweeping with a running maximum makes this O(n log n).
fn check_realtime_order(sends: &Sends<'_>, rec: &mut Recorder) {
    let mut by_key: BTreeMap<&str, Vec<(usize, u64, i64)>> = BTreeMap::new();
    for (i, send) in sends.list.iter().enumerate() {
        if let (Some(offset), Some(done)) = (send.offset, send.complete_time) {
            by_key.entry(send.key).or_default().push((i, done, offset));
        }
    }
    for mut completed in by_key.into_values() {
        let mut invoked: Vec<usize> = completed.iter().map(|&(i, _, _)| i).collect();
        invoked.sort_by_key(|&i| (sends.list[i].invoke_time, i));
        completed.sort_by_key(|&(i, done, _)| (done, i));
        let mut next = 0;
        // (offset, send index) of the highest-offset send completed so far.
        let mut max: Option<(i64, usize)> = None;
        for b in invoked {
            let later = &sends.list[b];
            while next < completed.len() && completed[next].1 < later.invoke_time {
                let (i, _, offset) = completed[next];
                if max.is_none_or(|(m, _)| offset > m) {
                    max = Some((offset, i));
                }
                next += 1;
            }
            let Some((max_offset, a)) = max else {
                continue;
            };
            let later_offset = later.offset.expect("only sends with offsets are swept");
            if a != b && max_offset >= later_offset {
                let earlier = &sends.list[a];
                rec.add(
                    Anomaly::RealtimeOrder,
                    || json!({"earlier": earlier.to_json(), "later": later.to_json()}),
                );
            }
        }
    }
}

fn stats(
    history: &History,
    ops: &[Operation<'_>],
    sends: &Sends<'_>,
    derived: &Derived<'_>,
) -> Stats {
    let mut stats = Stats {
        events: history.len() as u64,
        operations: ops.len() as u64,
        distinct_values_read: derived.ok_read_any.len() as u64,
        ..Stats::default()
    };
    for send in &sends.list {
        match send.outcome {
            Outcome::Ok => stats.sends_ok += 1,
            Outcome::Fail => stats.sends_fail += 1,
            Outcome::Info => {
                stats.sends_info += 1;
                if derived.must_have_committed(send) {
                    stats.sends_info_committed += 1;
                }
            }
        }
    }
    for op in ops {
        let Op::Poll { reads } = op.completion else {
            continue;
        };
        match op.outcome {
            Outcome::Ok => {
                stats.polls_ok += 1;
                stats.values_read += reads.values().map(|r| r.len() as u64).sum::<u64>();
            }
            Outcome::Fail => stats.polls_fail += 1,
            Outcome::Info => stats.polls_info += 1,
        }
    }
    for (key, data) in &derived.keys {
        if let Some((&offset, _)) = data.versions.last_key_value() {
            stats.max_offset.insert((*key).to_string(), offset);
        }
    }
    stats
}

fn seeks_to_beginning(op: &Op) -> bool {
    matches!(
        op,
        Op::Assign {
            seek_to_beginning: true,
            ..
        }
    )
}

fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}
