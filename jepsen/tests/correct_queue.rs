//! Property tests: serial histories of a correct single-partition queue never produce an
//! anomaly, and every generated history survives a JSONL round trip.
//!
//! The model is a log that appends each landed send at the next offset; consumers read
//! contiguous ranges from their position, which only an assign with seek-to-beginning (or a
//! crash that replaces the process) moves back to the start. Sends may fail (never land) or end
//! in `info` (land or not, and the client is replaced). The run ends with a catch-up read of the
//! whole log, so `unseen` is judged as an error.

use proptest::prelude::*;
use railyard_jepsen::{check, CheckOptions, ConsumerMode, Event, History, Op};

const KEY: &str = "orders-0";
const CLIENTS: usize = 3;

#[derive(Clone, Debug)]
enum Action {
    /// 0 = ok, 1 = fail, 2 = info and landed, 3 = info and lost.
    Send {
        client: usize,
        outcome: u8,
    },
    Assign {
        client: usize,
        seek: bool,
    },
    /// `outcome` 0 = ok, 1 = fail, 2 = info (client replaced).
    Poll {
        client: usize,
        max: usize,
        outcome: u8,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..CLIENTS, 0u8..4).prop_map(|(client, outcome)| Action::Send { client, outcome }),
        1 => (0..CLIENTS, any::<bool>()).prop_map(|(client, seek)| Action::Assign { client, seek }),
        3 => (0..CLIENTS, 0usize..5, 0u8..3)
            .prop_map(|(client, max, outcome)| Action::Poll { client, max, outcome }),
    ]
}

/// Runs `actions` against a correct queue, recording the history.
struct Model {
    history: History,
    time: u64,
    log: Vec<u64>,
    next_value: u64,
    next_process: u64,
    process: [u64; CLIENTS],
    position: [usize; CLIENTS],
}

impl Model {
    fn new() -> Model {
        Model {
            history: History::new(),
            time: 0,
            log: Vec::new(),
            next_value: 1,
            next_process: CLIENTS as u64,
            process: std::array::from_fn(|i| i as u64),
            position: [0; CLIENTS],
        }
    }

    fn record(&mut self, make: fn(u64, Op, u64) -> Event, client: usize, op: Op) {
        self.time += 1;
        self.history.push(make(self.process[client], op, self.time));
    }

    /// An info completion crashes the client; a fresh process (at position 0) replaces it.
    fn crash(&mut self, client: usize) {
        self.process[client] = self.next_process;
        self.next_process += 1;
        self.position[client] = 0;
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Send { client, outcome } => {
                let value = self.next_value;
                self.next_value += 1;
                self.record(Event::invoke, client, Op::send(KEY, value));
                match outcome {
                    0 => {
                        self.log.push(value);
                        let offset = self.log.len() as i64 - 1;
                        self.record(Event::ok, client, Op::send_ok(KEY, offset, value));
                    }
                    1 => self.record(Event::fail, client, Op::send(KEY, value)),
                    _ => {
                        if outcome == 2 {
                            self.log.push(value);
                        }
                        self.record(Event::info, client, Op::send(KEY, value));
                        self.crash(client);
                    }
                }
            }
            Action::Assign { client, seek } => {
                self.record(Event::invoke, client, Op::assign([KEY], seek));
                self.record(Event::ok, client, Op::assign([KEY], seek));
                if seek {
                    self.position[client] = 0;
                }
            }
            Action::Poll {
                client,
                max,
                outcome,
            } => {
                self.record(Event::invoke, client, Op::poll());
                match outcome {
                    0 => {
                        let records = self.read(client, max);
                        let op = if records.is_empty() && max % 2 == 0 {
                            Op::poll()
                        } else {
                            Op::poll_key(KEY, records)
                        };
                        self.record(Event::ok, client, op);
                    }
                    1 => self.record(Event::fail, client, Op::poll()),
                    _ => {
                        self.record(Event::info, client, Op::poll());
                        self.crash(client);
                    }
                }
            }
        }
    }

    /// Up to `max` records from the client's position, advancing it.
    fn read(&mut self, client: usize, max: usize) -> Vec<(i64, u64)> {
        let start = self.position[client];
        let end = (start + max).min(self.log.len());
        self.position[client] = end;
        (start..end).map(|i| (i as i64, self.log[i])).collect()
    }

    /// A fresh consumer reads the whole log from the beginning.
    fn final_reads(&mut self) {
        self.crash(0);
        self.record(Event::invoke, 0, Op::assign([KEY], true));
        self.record(Event::ok, 0, Op::assign([KEY], true));
        while self.position[0] < self.log.len() {
            self.record(Event::invoke, 0, Op::poll());
            let records = self.read(0, 7);
            self.record(Event::ok, 0, Op::poll_key(KEY, records));
        }
    }
}

proptest! {
    #[test]
    fn test_correct_queue_has_no_anomalies(actions in prop::collection::vec(action(), 0..120)) {
        // Proves the checker raises nothing on any serial history of a correct queue.
        let mut model = Model::new();
        for action in &actions {
            model.apply(action);
        }
        model.final_reads();
        let opts = CheckOptions { final_reads_done: true, mode: ConsumerMode::Assign };
        let report = check(&model.history, &opts);
        prop_assert!(report.anomalies.is_empty(), "{}\n{}", report, model.history.to_jsonl());
        prop_assert_eq!(report.stats.distinct_values_read, model.log.len() as u64);
    }

    #[test]
    fn test_generated_histories_round_trip(actions in prop::collection::vec(action(), 0..60)) {
        // Proves every history the model can record survives JSONL unchanged.
        let mut model = Model::new();
        for action in &actions {
            model.apply(action);
        }
        let text = model.history.to_jsonl();
        let parsed = History::from_jsonl(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&model.history));
    }
}
