//! Queue histories and their checker, shared by Railyard's deterministic simulator
//! (`railyard-sim`) and its Jepsen harness.
//!
//! Both record the same kind of history: clients invoke `send`, `poll`, `assign` and
//! `subscribe` operations against topic-partitions ("keys") and record how each ended
//! ([`history`]). The [`checker`] then looks for the anomalies Jepsen's Kafka workload reports
//! (lost writes, aborted reads, poll skips, ...), as specified in `CHECKER.md`.
//! [`report`] renders a run's history, its nemesis windows and the checker's report as one
//! self-contained HTML page (`report.html`).
//!
//! The checker does no IO and keeps no hidden state: text goes in and out as `String`s, time is
//! whatever the recorder writes into each event, and every collection is ordered, so the
//! simulator gets the same report for the same seed.
//!
//! With the `workload` feature, [`workload`] is the client side of a test: producer and
//! consumer processes of the Rust client recording such a history, and the final reads. The
//! harness binary (feature `harness`) runs it against real processes, the madsim tests
//! against simulated ones.
//!
//! Recording a history:
//!
//! ```
//! use railyard_jepsen::{check, CheckOptions, Event, History, Op};
//!
//! let mut h = History::new();
//! h.push(Event::invoke(0, Op::send("orders-0", 17), 10));
//! h.push(Event::ok(0, Op::send_ok("orders-0", 0, 17), 12));
//! h.push(Event::invoke(1, Op::assign(["orders-0"], true), 13));
//! h.push(Event::ok(1, Op::assign(["orders-0"], true), 14));
//! h.push(Event::invoke(1, Op::poll(), 15));
//! h.push(Event::ok(1, Op::poll_key("orders-0", vec![(0, 17)]), 16));
//!
//! let report = check(&h, &CheckOptions { final_reads_done: true, ..CheckOptions::default() });
//! assert!(report.valid(), "{report}");
//! assert_eq!(History::from_jsonl(&h.to_jsonl()).unwrap(), h);
//! ```

pub mod checker;
pub mod history;
pub mod report;
#[cfg(feature = "workload")]
pub mod workload;

pub use checker::{
    check, Anomaly, AnomalySummary, CheckOptions, CheckReport, ConsumerMode, Stats, EXAMPLES_MAX,
};
pub use history::{
    Event, EventType, Function, History, Op, Operation, Outcome, Pairing, PairingFault, ParseError,
    ParseErrorKind, SEEK_TO_BEGINNING_FIELD,
};
pub use report::{render_html, NemesisWindow, RunInfo};
