//! One focused test per anomaly: a small hand-built history that contains it, and the checker
//! must find it (each test fails if that detection is removed), plus negative controls that
//! keep the rules from over-firing.

use railyard_jepsen::{
    check, Anomaly, CheckOptions, CheckReport, ConsumerMode, Event, History, Op,
};

/// Builds histories with a clock that ticks once per event.
#[derive(Default)]
struct Recorder {
    history: History,
    time: u64,
}

impl Recorder {
    fn tick(&mut self) -> u64 {
        self.time += 1;
        self.time
    }

    fn push(&mut self, make: fn(u64, Op, u64) -> Event, process: u64, op: Op) {
        let time = self.tick();
        self.history.push(make(process, op, time));
    }

    fn send_ok(&mut self, process: u64, key: &str, offset: i64, value: u64) {
        self.push(Event::invoke, process, Op::send(key, value));
        self.push(Event::ok, process, Op::send_ok(key, offset, value));
    }

    fn send_fail(&mut self, process: u64, key: &str, value: u64) {
        self.push(Event::invoke, process, Op::send(key, value));
        self.push(Event::fail, process, Op::send(key, value));
    }

    fn send_info(&mut self, process: u64, key: &str, value: u64) {
        self.push(Event::invoke, process, Op::send(key, value));
        self.push(Event::info, process, Op::send(key, value));
    }

    fn poll(&mut self, process: u64, key: &str, records: &[(i64, u64)]) {
        self.push(Event::invoke, process, Op::poll());
        self.push(Event::ok, process, Op::poll_key(key, records.to_vec()));
    }

    fn assign(&mut self, process: u64, keys: &[&str], seek: bool) {
        self.push(
            Event::invoke,
            process,
            Op::assign(keys.iter().copied(), seek),
        );
        self.push(Event::ok, process, Op::assign(keys.iter().copied(), seek));
    }

    fn subscribe(&mut self, process: u64, keys: &[&str]) {
        self.push(Event::invoke, process, Op::subscribe(keys.iter().copied()));
        self.push(Event::ok, process, Op::subscribe(keys.iter().copied()));
    }

    fn check(&self, final_reads_done: bool) -> CheckReport {
        let opts = CheckOptions {
            final_reads_done,
            mode: ConsumerMode::Auto,
        };
        check(&self.history, &opts)
    }
}

/// Three ok sends to "a" at offsets 0..3 with values 1..=3.
fn three_sends() -> Recorder {
    let mut r = Recorder::default();
    for i in 0..3 {
        r.send_ok(0, "a", i, i as u64 + 1);
    }
    r
}

#[test]
fn test_clean_history_has_no_anomalies() {
    // Proves a correct history over two keys, with a failed send, reads nothing suspicious.
    let mut r = three_sends();
    r.send_ok(0, "b", 0, 10);
    r.send_fail(0, "b", 11);
    r.assign(1, &["a", "b"], true);
    r.poll(1, "a", &[(0, 1), (1, 2)]);
    r.poll(1, "a", &[(2, 3)]);
    r.poll(1, "b", &[(0, 10)]);
    let report = r.check(true);
    assert!(report.anomalies.is_empty(), "{report}");
    assert!(report.valid());
    assert!(report.errors().is_empty());
    assert_eq!(report.stats.sends_ok, 4);
    assert_eq!(report.stats.sends_fail, 1);
    assert_eq!(report.stats.polls_ok, 3);
    assert_eq!(report.stats.values_read, 4);
    assert_eq!(report.stats.max_offset.get("a"), Some(&2));
    assert!(report.to_string().starts_with("valid"), "{report}");
}

#[test]
fn test_inconsistent_offsets_found() {
    // Proves two values acknowledged at one offset are reported with both values.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 0, 1);
    r.send_ok(1, "a", 0, 2);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::InconsistentOffsets), 1, "{report}");
    let example = &report.examples(Anomaly::InconsistentOffsets)[0];
    assert_eq!(example["offset"], 0);
    assert_eq!(example["values"], serde_json::json!([1, 2]));
    assert!(report.errors().contains(&"inconsistent-offsets"));
}

#[test]
fn test_duplicate_found() {
    // Proves one value read at two offsets of a key is reported.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 0, 1);
    r.poll(1, "a", &[(0, 1), (1, 1)]);
    let report = r.check(true);
    assert_eq!(report.count(Anomaly::Duplicate), 1, "{report}");
    assert_eq!(
        report.examples(Anomaly::Duplicate)[0]["offsets"],
        serde_json::json!([0, 1])
    );
    assert!(!report.valid());
}

#[test]
fn test_lost_write_found() {
    // Proves an acknowledged value below a later value that was read, but never read itself,
    // is lost.
    let mut r = three_sends();
    r.poll(1, "a", &[(1, 2)]);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::LostWrite), 1, "{report}");
    assert_eq!(report.examples(Anomaly::LostWrite)[0]["value"], 1);
    // Value 3 is above the bound, so it is merely unseen, never lost.
    assert_eq!(report.count(Anomaly::Unseen), 2);
    assert_eq!(report.errors(), vec!["lost-write"]);
}

#[test]
fn test_unread_info_send_is_not_lost() {
    // Proves an info send that nobody read is not assumed committed, even when an info poll
    // placed it below the read bound.
    let mut r = Recorder::default();
    r.send_info(0, "a", 1);
    r.send_ok(1, "a", 1, 2);
    r.push(Event::invoke, 2, Op::poll());
    r.push(Event::info, 2, Op::poll_key("a", vec![(0, 1)]));
    r.poll(3, "a", &[(1, 2)]);
    let report = r.check(true);
    assert_eq!(report.count(Anomaly::LostWrite), 0, "{report}");
    assert_eq!(report.stats.sends_info_committed, 0);
    assert!(report.valid(), "{report}");
}

#[test]
fn test_read_info_send_counts_as_committed_for_lost_write() {
    // Proves an info send whose value some ok poll read must have committed: here it was read
    // by an ok poll only under the wrong key "b", while at its own key "a" only an info poll saw
    // it below the read bound, so at "a" it is a lost write. Without the ok read it would not
    // count as committed (see test_unread_info_send_is_not_lost).
    let mut r = Recorder::default();
    r.send_info(0, "a", 1);
    r.send_ok(1, "a", 1, 2);
    r.push(Event::invoke, 2, Op::poll());
    r.push(Event::info, 2, Op::poll_key("a", vec![(0, 1)]));
    r.poll(3, "a", &[(1, 2)]);
    r.poll(4, "b", &[(0, 1)]);
    let report = r.check(true);
    assert_eq!(report.stats.sends_info_committed, 1);
    assert_eq!(report.count(Anomaly::LostWrite), 1, "{report}");
    let example = &report.examples(Anomaly::LostWrite)[0];
    assert_eq!(example["key"], "a");
    assert_eq!(example["value"], 1);
    assert_eq!(example["writer"]["type"], "info");
}

#[test]
fn test_read_info_send_is_not_unseen_or_lost() {
    // Proves an info send that was read at its key is simply committed and read: no anomaly.
    let mut r = Recorder::default();
    r.send_info(0, "a", 1);
    r.send_ok(1, "a", 1, 2);
    r.poll(3, "a", &[(0, 1), (1, 2)]);
    let report = r.check(true);
    assert_eq!(report.stats.sends_info, 1);
    assert_eq!(report.stats.sends_info_committed, 1);
    assert!(report.anomalies.is_empty(), "{report}");
}

#[test]
fn test_unseen_is_error_only_after_final_reads() {
    // Proves unseen is always counted but only invalidates a run whose final reads are done.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 0, 1);
    let before = r.check(false);
    assert_eq!(before.count(Anomaly::Unseen), 1);
    assert!(before.valid(), "{before}");
    assert_eq!(before.allowed(), vec!["unseen"]);
    let after = r.check(true);
    assert_eq!(after.count(Anomaly::Unseen), 1);
    assert!(!after.valid());
    assert_eq!(after.errors(), vec!["unseen"]);
    assert_eq!(after.examples(Anomaly::Unseen)[0]["value"], 1);
}

#[test]
fn test_aborted_read_found() {
    // Proves an ok poll reading a value whose send failed is G1a.
    let mut r = Recorder::default();
    r.send_fail(0, "a", 1);
    r.poll(1, "a", &[(0, 1)]);
    let report = r.check(true);
    assert_eq!(report.count(Anomaly::AbortedRead), 1, "{report}");
    assert_eq!(report.examples(Anomaly::AbortedRead)[0]["reader"], 1);
    assert_eq!(report.errors(), vec!["aborted-read"]);
}

#[test]
fn test_poll_skip_found() {
    // Proves a process's next poll starting two indices past its last read is a skip.
    let mut r = three_sends();
    r.assign(1, &["a"], true);
    r.poll(1, "a", &[(0, 1)]);
    r.poll(1, "a", &[(2, 3)]);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::PollSkip), 1, "{report}");
    assert_eq!(report.examples(Anomaly::PollSkip)[0]["index_delta"], 2);
    assert!(report.errors().contains(&"poll-skip"));
}

#[test]
fn test_nonmonotonic_poll_found() {
    // Proves a process's next poll starting at an index it already read is nonmonotonic.
    let mut r = three_sends();
    r.assign(1, &["a"], true);
    r.poll(1, "a", &[(0, 1), (1, 2)]);
    r.poll(1, "a", &[(1, 2), (2, 3)]);
    let report = r.check(true);
    assert_eq!(report.count(Anomaly::NonmonotonicPoll), 1, "{report}");
    assert_eq!(report.errors(), vec!["nonmonotonic-poll"]);
}

#[test]
fn test_subscribe_mode_allows_poll_skip_and_nonmonotonic_poll() {
    // Proves that under subscribe both cross-poll anomalies are reported but do not invalidate.
    let mut r = three_sends();
    r.subscribe(1, &["a"]);
    r.poll(1, "a", &[(0, 1)]);
    r.poll(1, "a", &[(2, 3)]);
    r.poll(1, "a", &[(1, 2)]);
    let report = r.check(true);
    assert_eq!(report.mode, ConsumerMode::Subscribe);
    assert_eq!(report.count(Anomaly::PollSkip), 1, "{report}");
    assert_eq!(report.count(Anomaly::NonmonotonicPoll), 1, "{report}");
    assert!(report.valid(), "{report}");
    assert_eq!(report.allowed(), vec!["poll-skip", "nonmonotonic-poll"]);
    // The same history judged as assign is invalid.
    let strict = check(
        &r.history,
        &CheckOptions {
            final_reads_done: true,
            mode: ConsumerMode::Assign,
        },
    );
    assert_eq!(strict.errors(), vec!["poll-skip", "nonmonotonic-poll"]);
}

#[test]
fn test_int_poll_skip_found() {
    // Proves a gap between consecutive values inside one poll is an internal skip.
    let mut r = three_sends();
    r.poll(1, "a", &[(0, 1), (2, 3)]);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::IntPollSkip), 1, "{report}");
    assert_eq!(report.count(Anomaly::IntNonmonotonicPoll), 0);
}

#[test]
fn test_int_poll_skip_is_an_error_even_under_subscribe() {
    // Proves the subscribe allowance does not extend to anomalies inside a single poll.
    let mut r = three_sends();
    r.subscribe(1, &["a"]);
    r.poll(1, "a", &[(0, 1), (2, 3)]);
    let report = r.check(false);
    assert!(report.errors().contains(&"int-poll-skip"), "{report}");
}

#[test]
fn test_int_nonmonotonic_poll_found() {
    // Proves a poll that delivers a lower index after a higher one is internally nonmonotonic.
    let mut r = three_sends();
    r.poll(1, "a", &[(1, 2), (0, 1), (0, 1)]);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::IntNonmonotonicPoll), 2, "{report}");
    assert_eq!(report.count(Anomaly::IntPollSkip), 0);
}

#[test]
fn test_gaps_in_offsets_are_not_skips() {
    // Proves indices are dense: offsets 0, 5, 9 (e.g. after compaction) read in order are fine.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 0, 1);
    r.send_ok(0, "a", 5, 2);
    r.send_ok(0, "a", 9, 3);
    r.assign(1, &["a"], true);
    r.poll(1, "a", &[(0, 1), (5, 2)]);
    r.poll(1, "a", &[(9, 3)]);
    let report = r.check(true);
    assert!(report.anomalies.is_empty(), "{report}");
}

#[test]
fn test_fresh_assign_resets_poll_tracking() {
    // Proves seek-to-beginning and re-assigning a dropped key reset tracking, while an assign
    // that keeps the key without seeking does not.
    let mut r = three_sends();
    r.assign(1, &["a"], true);
    r.poll(1, "a", &[(0, 1), (1, 2)]);
    r.assign(1, &["a"], true);
    r.poll(1, "a", &[(0, 1)]);
    r.assign(1, &["b"], false);
    r.assign(1, &["a"], false);
    r.poll(1, "a", &[(0, 1)]);
    let report = r.check(false);
    assert!(report.valid(), "{report}");
    assert_eq!(report.count(Anomaly::NonmonotonicPoll), 0);

    r.assign(1, &["a"], false);
    r.poll(1, "a", &[(0, 1)]);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::NonmonotonicPoll), 1, "{report}");
}

#[test]
fn test_nonmonotonic_send_found() {
    // Proves a process's second send to a key landing below its first is nonmonotonic.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 1, 1);
    r.send_ok(0, "a", 0, 2);
    r.send_ok(0, "b", 0, 3);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::NonmonotonicSend), 1, "{report}");
    assert_eq!(
        report.examples(Anomaly::NonmonotonicSend)[0]["next"]["value"],
        2
    );
}

#[test]
fn test_realtime_order_found() {
    // Proves a send that began after another completed must land above it, across processes.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 1, 1);
    r.send_ok(1, "a", 0, 2);
    let report = r.check(false);
    assert_eq!(report.count(Anomaly::RealtimeOrder), 1, "{report}");
    assert_eq!(report.count(Anomaly::NonmonotonicSend), 0);
    let example = &report.examples(Anomaly::RealtimeOrder)[0];
    assert_eq!(example["earlier"]["value"], 1);
    assert_eq!(example["later"]["value"], 2);
}

#[test]
fn test_concurrent_sends_may_land_in_any_order() {
    // Proves overlapping sends (and sends completing at the instant another begins) impose no
    // realtime order.
    let mut h = History::new();
    h.push(Event::invoke(0, Op::send("a", 1), 1));
    h.push(Event::invoke(1, Op::send("a", 2), 2));
    h.push(Event::ok(0, Op::send_ok("a", 1, 1), 3));
    h.push(Event::ok(1, Op::send_ok("a", 0, 2), 4));
    h.push(Event::invoke(2, Op::send("a", 3), 4));
    h.push(Event::ok(2, Op::send_ok("a", 2, 3), 5));
    let report = check(&h, &CheckOptions::default());
    assert_eq!(report.count(Anomaly::RealtimeOrder), 0, "{report}");
}

#[test]
fn test_unfinished_invoke_counts_as_info() {
    // Proves an invoke left open at the end of the history is treated as an info op, not as
    // malformed, and its value counts as committed once read.
    let mut r = Recorder::default();
    r.send_ok(0, "a", 0, 1);
    r.poll(1, "a", &[(0, 1), (1, 2)]);
    r.push(Event::invoke, 2, Op::send("a", 2));
    let report = r.check(true);
    assert!(report.anomalies.is_empty(), "{report}");
    assert_eq!(report.stats.sends_info, 1);
    assert_eq!(report.stats.sends_info_committed, 1);
}

#[test]
fn test_malformed_history_found() {
    // Proves broken recording contracts are reported instead of silently mis-paired.
    let mut h = History::new();
    h.push(Event::ok(0, Op::send_ok("a", 0, 1), 1)); // completion without invoke
    h.push(Event::invoke(1, Op::send("a", 2), 2));
    h.push(Event::info(1, Op::send("a", 2), 3));
    h.push(Event::invoke(1, Op::poll(), 4)); // process 1 crashed
    h.push(Event::invoke(2, Op::send("a", 3), 5));
    h.push(Event::ok(2, Op::send("a", 3), 6)); // ok without offset
    h.push(Event::invoke(3, Op::send("a", 3), 7));
    h.push(Event::fail(3, Op::send("a", 3), 8)); // value sent twice
    h.push(Event::invoke(4, Op::poll(), 9));
    h.push(Event::ok(4, Op::send_ok("a", 0, 9), 10)); // f mismatch
    let report = check(&h, &CheckOptions::default());
    assert_eq!(report.count(Anomaly::MalformedHistory), 5, "{report}");
    assert!(report.errors().contains(&"malformed-history"));
}

#[test]
fn test_examples_are_bounded_and_counts_exact() {
    // Proves a report keeps at most EXAMPLES_MAX examples but counts every occurrence.
    let mut r = Recorder::default();
    for v in 0..20 {
        r.send_fail(0, "a", v);
    }
    let records: Vec<(i64, u64)> = (0..20).map(|v| (v as i64, v)).collect();
    r.poll(1, "a", &records);
    let report = r.check(true);
    assert_eq!(report.count(Anomaly::AbortedRead), 20);
    assert_eq!(
        report.examples(Anomaly::AbortedRead).len(),
        railyard_jepsen::EXAMPLES_MAX
    );
}

#[test]
fn test_report_is_deterministic_and_serialises() {
    // Proves checking the same history twice gives identical reports and JSON with names.
    let mut r = three_sends();
    r.send_fail(0, "a", 9);
    r.poll(1, "a", &[(0, 1), (2, 3), (3, 9)]);
    let a = r.check(true);
    let b = r.check(true);
    assert_eq!(a, b);
    let json = serde_json::to_value(&a).expect("report serialises");
    assert_eq!(json["anomalies"]["lost-write"]["count"], 1);
    assert_eq!(json["anomalies"]["aborted-read"]["count"], 1);
    assert_eq!(json["mode"], "assign");
    assert_eq!(a.to_string(), b.to_string());
    assert!(a.to_string().contains("errors: lost-write 1"), "{a}");
}

#[test]
fn test_large_history_checks() {
    // Proves a 100k-event history with many keys and processes checks without anomalies
    // (run with --release to see the time; the sweep is O(n log n)).
    let keys = ["a", "b", "c", "d"];
    let mut h = History::new();
    let mut next = [0i64; 4];
    let mut time = 0;
    let mut value = 0;
    while h.len() < 90_000 {
        for (k, key) in keys.iter().enumerate() {
            time += 1;
            value += 1;
            h.push(Event::invoke(k as u64, Op::send(*key, value), time));
            time += 1;
            h.push(Event::ok(k as u64, Op::send_ok(*key, next[k], value), time));
            next[k] += 1;
        }
    }
    // Consumers read each key back in polls of 10 records.
    let mut reads: Vec<Vec<(i64, u64)>> = vec![Vec::new(); keys.len()];
    for event in h.events() {
        if let (railyard_jepsen::EventType::Ok, Op::Send { key, value, offset }) =
            (event.kind, &event.op)
        {
            let k = keys.iter().position(|x| x == key).expect("known key");
            reads[k].push((offset.expect("ok"), *value));
        }
    }
    for (k, key) in keys.iter().enumerate() {
        let process = 100 + k as u64;
        for chunk in reads[k].chunks(10) {
            time += 1;
            h.push(Event::invoke(process, Op::poll(), time));
            time += 1;
            h.push(Event::ok(process, Op::poll_key(*key, chunk.to_vec()), time));
        }
    }
    assert!(h.len() > 95_000);
    let start = std::time::Instant::now();
    let report = check(&h, &CheckOptions::default());
    eprintln!("checked {} events in {:?}", h.len(), start.elapsed());
    assert!(report.anomalies.is_empty(), "{report}");
}
