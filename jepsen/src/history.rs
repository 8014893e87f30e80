//! The queue-history format shared by the simulator and the Jepsen harness (CHECKER.md).
//!
//! A history is a sequence of [`Event`]s, serialised one JSON object per line (JSONL):
//!
//! ```text
//! {"process":0,"type":"invoke","f":"send","value":["orders-0",17],"time":10}
//! {"process":0,"type":"ok","f":"send","value":["orders-0",[3,17]],"time":12}
//! {"process":1,"type":"invoke","f":"poll","value":null,"time":13}
//! {"process":1,"type":"ok","f":"poll","value":{"orders-0":[[3,17]]},"time":15}
//! {"process":1,"type":"invoke","f":"assign","value":["orders-0"],"time":16,"seek_to_beginning":true}
//! ```
//!
//! The JSON shapes are exactly those of CHECKER.md. The one addition is how an assign records
//! seek-to-beginning: CHECKER.md fixes the assign `value` to the list of keys, so the flag travels
//! in a separate top-level field, [`SEEK_TO_BEGINNING_FIELD`], written only when true (as Jepsen's
//! Kafka workload carries `:seek-to-beginning?` beside the op's value). Parsing never panics:
//! bytes in a history file come from another process, so every malformed line becomes a
//! [`ParseError`] naming its line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

/// Top-level JSON field carrying an assign's seek-to-beginning flag (absent means `false`).
pub const SEEK_TO_BEGINNING_FIELD: &str = "seek_to_beginning";

/// Whether an event starts an operation or reports how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// The client is about to perform the operation.
    Invoke,
    /// The operation certainly happened.
    Ok,
    /// The operation certainly did not happen.
    Fail,
    /// The operation may or may not have happened; the process is crashed afterwards.
    Info,
}

impl EventType {
    /// The JSON spelling: `invoke`, `ok`, `fail` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }

    fn parse(s: &str) -> Option<EventType> {
        match s {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }
}

/// The function an operation performs (the JSON `f` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    /// Produce one value to one key.
    Send,
    /// Fetch whatever the consumer's position yields.
    Poll,
    /// Manually assign keys to the consumer.
    Assign,
    /// Subscribe through a consumer group (the broker picks the keys).
    Subscribe,
}

impl Function {
    /// The JSON spelling: `send`, `poll`, `assign` or `subscribe`.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Send => "send",
            Function::Poll => "poll",
            Function::Assign => "assign",
            Function::Subscribe => "subscribe",
        }
    }

    fn parse(s: &str) -> Option<Function> {
        match s {
            "send" => Some(Function::Send),
            "poll" => Some(Function::Poll),
            "assign" => Some(Function::Assign),
            "subscribe" => Some(Function::Subscribe),
            _ => None,
        }
    }
}

/// What an operation asks for (on invoke) or what it observed (on completion).
///
/// Keys are topic-partition strings such as `"orders-0"`; values written in a run are unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send `value` to `key`. `offset` is known only on an `ok` completion.
    Send {
        /// The topic-partition written to.
        key: String,
        /// The unique value written.
        value: u64,
        /// Where the broker says the value landed; `None` before or without an acknowledgement.
        offset: Option<i64>,
    },
    /// Poll. On completion, `reads` holds per key the `(offset, value)` pairs in the order the
    /// consumer received them; on invoke it is empty.
    Poll {
        /// Per key, the records received, in delivery order.
        reads: BTreeMap<String, Vec<(i64, u64)>>,
    },
    /// Assign `keys` to the consumer, replacing its previous assignment.
    Assign {
        /// The full new assignment.
        keys: Vec<String>,
        /// Whether the consumer rewinds every assigned key to its earliest offset.
        seek_to_beginning: bool,
    },
    /// Subscribe the consumer (through its group) to `keys`.
    Subscribe {
        /// The keys subscribed to.
        keys: Vec<String>,
    },
}

impl Op {
    /// A send before its outcome is known (invoke, `fail` or `info`).
    pub fn send(key: impl Into<String>, value: u64) -> Op {
        Op::Send {
            key: key.into(),
            value,
            offset: None,
        }
    }

    /// An acknowledged send: `value` landed at `offset` of `key`.
    pub fn send_ok(key: impl Into<String>, offset: i64, value: u64) -> Op {
        Op::Send {
            key: key.into(),
            value,
            offset: Some(offset),
        }
    }

    /// A poll that read nothing (also the shape of a poll invoke).
    pub fn poll() -> Op {
        Op::Poll {
            reads: BTreeMap::new(),
        }
    }

    /// A poll that read `records` of a single key.
    pub fn poll_key(key: impl Into<String>, records: Vec<(i64, u64)>) -> Op {
        let mut reads = BTreeMap::new();
        reads.insert(key.into(), records);
        Op::Poll { reads }
    }

    /// An assignment of `keys`, optionally rewinding them to the beginning.
    pub fn assign<K: Into<String>>(keys: impl IntoIterator<Item = K>, seek: bool) -> Op {
        Op::Assign {
            keys: keys.into_iter().map(Into::into).collect(),
            seek_to_beginning: seek,
        }
    }

    /// A group subscription to `keys`.
    pub fn subscribe<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> Op {
        Op::Subscribe {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Which function this operation performs.
    pub fn function(&self) -> Function {
        match self {
            Op::Send { .. } => Function::Send,
            Op::Poll { .. } => Function::Poll,
            Op::Assign { .. } => Function::Assign,
            Op::Subscribe { .. } => Function::Subscribe,
        }
    }

    /// The JSON `value` field for this operation.
    pub fn to_value(&self) -> Value {
        match self {
            Op::Send {
                key,
                value,
                offset: Some(offset),
            } => json!([key, [offset, value]]),
            Op::Send {
                key,
                value,
                offset: None,
            } => json!([key, value]),
            Op::Poll { reads } => {
                let map: Map<String, Value> = reads
                    .iter()
                    .map(|(key, records)| {
                        let records = records.iter().map(|(o, v)| json!([o, v])).collect();
                        (key.clone(), Value::Array(records))
                    })
                    .collect();
                Value::Object(map)
            }
            Op::Assign { keys, .. } | Op::Subscribe { keys } => json!(keys),
        }
    }
}

/// One line of a history: a process invoking or completing an operation at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The logical client; a crashed client is replaced by a new process id.
    pub process: u64,
    /// Invoke or one of the completions.
    pub kind: EventType,
    /// The operation and its value.
    pub op: Op,
    /// Monotonic time in the recorder's unit (the simulator uses simulated nanoseconds).
    pub time: u64,
}

impl Event {
    /// An event of any type.
    pub fn new(process: u64, kind: EventType, op: Op, time: u64) -> Event {
        Event {
            process,
            kind,
            op,
            time,
        }
    }

    /// `process` starts `op` at `time`.
    pub fn invoke(process: u64, op: Op, time: u64) -> Event {
        Event::new(process, EventType::Invoke, op, time)
    }

    /// `process`'s operation certainly happened, observing `op`.
    pub fn ok(process: u64, op: Op, time: u64) -> Event {
        Event::new(process, EventType::Ok, op, time)
    }

    /// `process`'s operation certainly did not happen.
    pub fn fail(process: u64, op: Op, time: u64) -> Event {
        Event::new(process, EventType::Fail, op, time)
    }

    /// `process`'s operation may or may not have happened; `process` must not appear again.
    pub fn info(process: u64, op: Op, time: u64) -> Event {
        Event::new(process, EventType::Info, op, time)
    }

    /// The event as a JSON object in CHECKER.md's shape.
    pub fn to_json(&self) -> Value {
        // serde_json's Map sorts keys; going through `Serialize` keeps the documented field order
        // for the JSONL text, and this tree form is for callers who want a `Value`.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Decodes one event from a JSON object, without a line number.
    pub fn from_json(value: &Value) -> Result<Event, ParseErrorKind> {
        let obj = value.as_object().ok_or(ParseErrorKind::NotAnObject)?;
        let process = u64_field(obj, "process")?;
        let type_str = str_field(obj, "type")?;
        let kind = EventType::parse(type_str).ok_or_else(|| ParseErrorKind::Invalid {
            field: "type",
            reason: format!("unknown type {type_str:?}"),
        })?;
        let f_str = str_field(obj, "f")?;
        let f = Function::parse(f_str).ok_or_else(|| ParseErrorKind::Invalid {
            field: "f",
            reason: format!("unknown function {f_str:?}"),
        })?;
        let time = u64_field(obj, "time")?;
        let seek = match obj.get(SEEK_TO_BEGINNING_FIELD) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ParseErrorKind::Invalid {
                    field: SEEK_TO_BEGINNING_FIELD,
                    reason: "expected a boolean".to_string(),
                })
            }
        };
        // A missing value is read as null so that a poll invoke may omit it.
        let value = obj.get("value").unwrap_or(&Value::Null);
        let op = parse_op(f, value, seek)?;
        Ok(Event::new(process, kind, op, time))
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let seek = matches!(
            self.op,
            Op::Assign {
                seek_to_beginning: true,
                ..
            }
        );
        let mut s = serializer.serialize_struct("Event", if seek { 6 } else { 5 })?;
        s.serialize_field("process", &self.process)?;
        s.serialize_field("type", self.kind.as_str())?;
        s.serialize_field("f", self.op.function().as_str())?;
        s.serialize_field("value", &self.op.to_value())?;
        s.serialize_field("time", &self.time)?;
        if seek {
            s.serialize_field(SEEK_TO_BEGINNING_FIELD, &true)?;
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Event::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// An append-only sequence of events in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Appends `event`; callers push in real-time order (non-decreasing `time`).
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// The events in order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The history without the events of processes that ever subscribed. Checked in
    /// [`crate::ConsumerMode::Assign`] mode, it holds the assigning readers to rules a
    /// rebalancing subscriber need not meet: every poll-skip and nonmonotonic-poll is an error.
    pub fn without_subscribers(&self) -> History {
        let subscribers: BTreeSet<u64> = self
            .events
            .iter()
            .filter(|e| e.op.function() == Function::Subscribe)
            .map(|e| e.process)
            .collect();
        self.events
            .iter()
            .filter(|e| !subscribers.contains(&e.process))
            .cloned()
            .collect()
    }

    /// The history as JSONL: one event per line, each line ending in `\n`.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::with_capacity(self.events.len() * 80);
        for event in &self.events {
            // Serialising an `Event` cannot fail: every field is a string, integer, bool or a
            // `Value` built from those, and the target is a `String`.
            let line = serde_json::to_string(event).expect("an Event always serialises");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Parses JSONL text. Blank lines are skipped; the first bad line is reported with its
    /// 1-based line number.
    pub fn from_jsonl(text: &str) -> Result<History, ParseError> {
        let mut history = History::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| ParseError {
                line: line_no,
                kind: ParseErrorKind::Json(e.to_string()),
            })?;
            let event = Event::from_json(&value).map_err(|kind| ParseError {
                line: line_no,
                kind,
            })?;
            history.push(event);
        }
        Ok(history)
    }
}

impl FromIterator<Event> for History {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> History {
        History {
            events: iter.into_iter().collect(),
        }
    }
}

impl Extend<Event> for History {
    fn extend<I: IntoIterator<Item = Event>>(&mut self, iter: I) {
        self.events.extend(iter);
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown, including an invoke that never completed.
    Info,
}

/// An invoke paired with its completion.
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    /// The process that ran it.
    pub process: u64,
    /// How it ended (`Info` while it has no completion).
    pub outcome: Outcome,
    /// When it was invoked.
    pub invoke_time: u64,
    /// `None` if the history ended before the op completed.
    pub complete_time: Option<u64>,
    /// The invoke's op.
    pub invoke: &'a Op,
    /// The completion's op; the invoke's op when there was no completion.
    pub completion: &'a Op,
}

/// A break of the recording contract found while pairing (the checker reports each as
/// `malformed-history`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairingFault {
    /// What was wrong.
    pub reason: &'static str,
    /// The process of the offending event.
    pub process: u64,
    /// The offending event's time.
    pub time: u64,
}

/// A history's operations and the faults found pairing them ([`History::operations`]).
#[derive(Clone, Debug)]
pub struct Pairing<'a> {
    /// Operations in invoke order.
    pub ops: Vec<Operation<'a>>,
    /// Faults in event order.
    pub faults: Vec<PairingFault>,
}

impl History {
    /// Pairs each invoke with the next completion of its process. Operations are returned in
    /// invoke order, which is also each process's own order because a process runs one op at a
    /// time. The checker, the report and the harness's figures all pair through this.
    pub fn operations(&self) -> Pairing<'_> {
        let mut ops: Vec<Operation<'_>> = Vec::with_capacity(self.len() / 2 + 1);
        let mut faults = Vec::new();
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        let mut crashed: BTreeSet<u64> = BTreeSet::new();
        for event in self.events() {
            let (process, time) = (event.process, event.time);
            let mut fault = |reason| {
                faults.push(PairingFault {
                    reason,
                    process,
                    time,
                })
            };
            if crashed.contains(&process) {
                fault("event from a process after its info");
            }
            let outcome = match event.kind {
                EventType::Invoke => {
                    if pending.contains_key(&process) {
                        // The earlier op stays info: we cannot know what became of it.
                        fault("invoke while an op is outstanding");
                    }
                    pending.insert(process, ops.len());
                    ops.push(Operation {
                        process,
                        outcome: Outcome::Info,
                        invoke_time: time,
                        complete_time: None,
                        invoke: &event.op,
                        completion: &event.op,
                    });
                    continue;
                }
                EventType::Ok => Outcome::Ok,
                EventType::Fail => Outcome::Fail,
                EventType::Info => Outcome::Info,
            };
            let Some(&index) = pending.get(&process) else {
                fault("completion without an invoke");
                continue;
            };
            let op = &mut ops[index];
            if op.invoke.function() != event.op.function() {
                fault("completion's f differs from its invoke's");
                continue;
            }
            pending.remove(&process);
            op.outcome = outcome;
            op.complete_time = Some(time);
            op.completion = &event.op;
            if outcome == Outcome::Info {
                crashed.insert(process);
            }
        }
        Pairing { ops, faults }
    }
}

/// A line of a JSONL history that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number in the input text.
    pub line: usize,
    /// What was wrong with it.
    pub kind: ParseErrorKind,
}

/// Why an event could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The line is not valid JSON (serde_json's message).
    Json(String),
    /// The line is JSON but not an object.
    NotAnObject,
    /// A required field is absent.
    MissingField(&'static str),
    /// A field is present but has the wrong shape or an unknown spelling.
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::Json(msg) => write!(f, "invalid JSON: {msg}"),
            ParseErrorKind::NotAnObject => write!(f, "event is not a JSON object"),
            ParseErrorKind::MissingField(field) => write!(f, "missing field `{field}`"),
            ParseErrorKind::Invalid { field, reason } => {
                write!(f, "invalid field `{field}`: {reason}")
            }
        }
    }
}

impl std::error::Error for ParseErrorKind {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

fn field<'v>(obj: &'v Map<String, Value>, name: &'static str) -> Result<&'v Value, ParseErrorKind> {
    obj.get(name).ok_or(ParseErrorKind::MissingField(name))
}

fn u64_field(obj: &Map<String, Value>, name: &'static str) -> Result<u64, ParseErrorKind> {
    field(obj, name)?
        .as_u64()
        .ok_or_else(|| invalid(name, "expected a non-negative integer"))
}

fn str_field<'v>(
    obj: &'v Map<String, Value>,
    name: &'static str,
) -> Result<&'v str, ParseErrorKind> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| invalid(name, "expected a string"))
}

fn invalid(field: &'static str, reason: &str) -> ParseErrorKind {
    ParseErrorKind::Invalid {
        field,
        reason: reason.to_string(),
    }
}

fn parse_op(f: Function, value: &Value, seek: bool) -> Result<Op, ParseErrorKind> {
    match f {
        Function::Send => parse_send(value),
        Function::Poll => parse_poll(value),
        Function::Assign => Ok(Op::Assign {
            keys: parse_keys(value)?,
            seek_to_beginning: seek,
        }),
        Function::Subscribe => Ok(Op::Subscribe {
            keys: parse_keys(value)?,
        }),
    }
}

/// `[key, value]` or `[key, [offset, value]]`; a null offset is accepted as unknown.
fn parse_send(value: &Value) -> Result<Op, ParseErrorKind> {
    const SHAPE: &str = "send expects [key, value] or [key, [offset, value]]";
    let pair = match value.as_array() {
        Some(pair) if pair.len() == 2 => pair,
        _ => return Err(invalid("value", SHAPE)),
    };
    let key = pair[0].as_str().ok_or_else(|| invalid("value", SHAPE))?;
    if let Some(v) = pair[1].as_u64() {
        return Ok(Op::send(key, v));
    }
    let (offset, v) = match pair[1].as_array() {
        Some(inner) if inner.len() == 2 => (&inner[0], &inner[1]),
        _ => return Err(invalid("value", SHAPE)),
    };
    let v = v.as_u64().ok_or_else(|| invalid("value", SHAPE))?;
    let offset = match offset {
        Value::Null => None,
        other => Some(other.as_i64().ok_or_else(|| invalid("value", SHAPE))?),
    };
    Ok(Op::Send {
        key: key.to_string(),
        value: v,
        offset,
    })
}

/// `null` or `{key: [[offset, value], ...]}`.
fn parse_poll(value: &Value) -> Result<Op, ParseErrorKind> {
    const SHAPE: &str = "poll expects null or {key: [[offset, value], ...]}";
    let obj = match value {
        Value::Null => return Ok(Op::poll()),
        Value::Object(obj) => obj,
        _ => return Err(invalid("value", SHAPE)),
    };
    let mut reads = BTreeMap::new();
    for (key, records) in obj {
        let records = records.as_array().ok_or_else(|| invalid("value", SHAPE))?;
        let mut parsed = Vec::with_capacity(records.len());
        for record in records {
            let pair = match record.as_array() {
                Some(pair) if pair.len() == 2 => pair,
                _ => return Err(invalid("value", SHAPE)),
            };
            let offset = pair[0].as_i64().ok_or_else(|| invalid("value", SHAPE))?;
            let v = pair[1].as_u64().ok_or_else(|| invalid("value", SHAPE))?;
            parsed.push((offset, v));
        }
        reads.insert(key.clone(), parsed);
    }
    Ok(Op::Poll { reads })
}

/// A list of key strings; null is read as no keys (a completion may omit them).
fn parse_keys(value: &Value) -> Result<Vec<String>, ParseErrorKind> {
    const SHAPE: &str = "assign/subscribe expects a list of key strings";
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|k| {
                k.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid("value", SHAPE))
            })
            .collect(),
        _ => Err(invalid("value", SHAPE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut reads = BTreeMap::new();
        reads.insert("orders-0".to_string(), vec![(0, 17), (1, 18)]);
        reads.insert("orders-1".to_string(), vec![]);
        [
            Event::invoke(0, Op::send("orders-0", 17), 1),
            Event::ok(0, Op::send_ok("orders-0", 0, 17), 2),
            Event::invoke(0, Op::send("orders-0", 18), 3),
            Event::info(0, Op::send("orders-0", 18), 4),
            Event::invoke(1, Op::assign(["orders-0", "orders-1"], true), 5),
            Event::ok(1, Op::assign(["orders-0", "orders-1"], true), 6),
            Event::invoke(2, Op::subscribe(["orders-0"]), 6),
            Event::fail(2, Op::subscribe(["orders-0"]), 7),
            Event::invoke(1, Op::poll(), 8),
            Event::ok(1, Op::Poll { reads }, 9),
            Event::invoke(3, Op::send("orders-1", 19), 10),
            Event::fail(3, Op::send("orders-1", 19), 11),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn test_jsonl_round_trip() {
        // Proves every op shape survives to_jsonl -> from_jsonl unchanged.
        let history = sample();
        let text = history.to_jsonl();
        assert_eq!(text.lines().count(), history.len());
        let parsed = History::from_jsonl(&text).expect("own output parses");
        assert_eq!(parsed, history);
        assert_eq!(parsed.to_jsonl(), text);
    }

    #[test]
    fn test_jsonl_exact_shapes() {
        // Proves the text matches CHECKER.md's shapes and field order byte for byte.
        let text = sample().to_jsonl();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"process":0,"type":"invoke","f":"send","value":["orders-0",17],"time":1}"#
        );
        assert_eq!(
            lines[1],
            r#"{"process":0,"type":"ok","f":"send","value":["orders-0",[0,17]],"time":2}"#
        );
        assert_eq!(
            lines[4],
            r#"{"process":1,"type":"invoke","f":"assign","value":["orders-0","orders-1"],"time":5,"seek_to_beginning":true}"#
        );
        assert_eq!(
            lines[9],
            r#"{"process":1,"type":"ok","f":"poll","value":{"orders-0":[[0,17],[1,18]],"orders-1":[]},"time":9}"#
        );
    }

    #[test]
    fn test_jsonl_accepts_lenient_inputs() {
        // Proves null poll values, blank lines, a null send offset and any field order parse.
        let text = concat!(
            "{\"type\":\"invoke\",\"process\":4,\"f\":\"poll\",\"value\":null,\"time\":1}\n",
            "\n",
            "{\"process\":4,\"type\":\"ok\",\"f\":\"poll\",\"value\":{},\"time\":2}\n",
            "{\"process\":4,\"type\":\"info\",\"f\":\"send\",\"value\":[\"k\",[null,5]],\"time\":3}\n",
            "{\"process\":5,\"type\":\"invoke\",\"f\":\"poll\",\"time\":4}\n",
        );
        let history = History::from_jsonl(text).expect("lenient input parses");
        assert_eq!(history.len(), 4);
        assert_eq!(history.events()[0].op, Op::poll());
        assert_eq!(history.events()[2].op, Op::send("k", 5));
        assert_eq!(history.events()[3].op, Op::poll());
    }

    #[test]
    fn test_jsonl_malformed_lines_report_line_numbers() {
        // Proves each kind of bad line yields a typed error with its line number, never a panic.
        let good = r#"{"process":0,"type":"invoke","f":"send","value":["k",1],"time":1}"#;
        // Each bad line paired with a predicate on the error it must produce.
        type Expect = fn(&ParseErrorKind) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("{not json", |k| matches!(k, ParseErrorKind::Json(_))),
            ("[1,2]", |k| matches!(k, ParseErrorKind::NotAnObject)),
            (
                r#"{"process":0,"type":"ok","f":"send","value":["k",1]}"#,
                |k| matches!(k, ParseErrorKind::MissingField("time")),
            ),
            (
                r#"{"process":-1,"type":"ok","f":"send","value":["k",1],"time":1}"#,
                |k| {
                    matches!(
                        k,
                        ParseErrorKind::Invalid {
                            field: "process",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"process":0,"type":"done","f":"send","value":["k",1],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "type", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"txn","value":["k",1],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "f", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"send","value":["k"],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "value", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"send","value":["k",[1.5,2]],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "value", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"poll","value":{"k":[[1]]},"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "value", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"poll","value":[1],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "value", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"assign","value":[1],"time":1}"#,
                |k| matches!(k, ParseErrorKind::Invalid { field: "value", .. }),
            ),
            (
                r#"{"process":0,"type":"ok","f":"assign","value":[],"time":1,"seek_to_beginning":1}"#,
                |k| {
                    matches!(
                        k,
                        ParseErrorKind::Invalid {
                            field: "seek_to_beginning",
                            ..
                        }
                    )
                },
            ),
        ];
        for (bad, expected) in cases {
            let text = format!("{good}\n\n{bad}\n{good}\n");
            let err = History::from_jsonl(&text).expect_err(bad);
            assert_eq!(err.line, 3, "{bad}");
            assert!(expected(&err.kind), "{bad}: got {:?}", err.kind);
            assert!(err.to_string().starts_with("history line 3: "), "{err}");
        }
    }

    #[test]
    fn test_event_serde_impls_agree_with_jsonl() {
        // Proves Event's Serialize/Deserialize impls use the same shape as the JSONL functions.
        for event in sample().events() {
            let text = serde_json::to_string(event).expect("serialises");
            let back: Event = serde_json::from_str(&text).expect("deserialises");
            assert_eq!(&back, event);
            assert_eq!(Event::from_json(&event.to_json()).as_ref(), Ok(event));
        }
    }
}
