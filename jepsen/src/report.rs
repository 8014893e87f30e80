//! The `report.html` of a Jepsen run: a verdict header, an SVG timeline of every process's
//! operations with the nemesis's faults shaded and the checker's anomalies marked, and
//! throughput and latency over time, so that a person sees at a glance what happened.
//!
//! The module is pure like the rest of the crate: it reads a [`History`], the nemesis windows
//! and the [`CheckReport`], and returns one self-contained HTML string (inline CSS and SVG, no
//! JavaScript). Every collection it iterates is ordered and every number is printed with a
//! fixed precision, so the same inputs give the same bytes. The size of the page is bounded: a
//! five-minute run has ~200k events, so the timeline draws at most [`TIMELINE_OPS_MAX`]
//! operations (a deterministic sample that keeps every operation an anomaly example refers to,
//! and says so on the page), and the charts aggregate into at most [`BUCKETS_MAX`] buckets.
//! Everything taken from the inputs is escaped before it enters HTML or SVG: window details and
//! test names come from the harness's command line and must not break the page.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checker::{Anomaly, CheckReport, ConsumerMode};
use crate::history::{self, Function, History, Op};

/// Above this many operations the timeline draws a deterministic sample of them.
pub const TIMELINE_OPS_MAX: usize = 10_000;

/// The throughput and latency charts have at most this many time buckets.
pub const BUCKETS_MAX: u64 = 300;

/// One fault the nemesis held: shaded on the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisWindow {
    /// Kind: "kill", "pause", "partition", "clock", "rolling".
    pub kind: String,
    /// Human-readable detail, e.g. "kill -9 node 2 (leader of jepsen-1)" or
    /// "partition halves {1} | {2,3}".
    pub detail: String,
    /// Start, in the history's time unit (nanoseconds since the run started).
    pub start_ns: u64,
    /// End, in the same unit; a window with `end_ns < start_ns` is drawn as empty.
    pub end_ns: u64,
}

/// What the header of the report says about the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// The test's name, also the page's `<title>`.
    pub test: String,
    /// The seed that chose the run's faults and workload.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Topic-partitions the workload wrote.
    pub keys: usize,
    /// The producer's `acks` setting, as configured (`"all"`, `"1"`, ...).
    pub acks: String,
    /// Whether the producer was idempotent.
    pub idempotent: bool,
    /// How long the workload ran, in seconds.
    pub time_limit_s: u64,
    /// RFC 3339 wall time the run started, for display only.
    pub started_at: String,
}

/// Renders the report page of one run: the verdict, the run's parameters, the anomaly table
/// and stats; the timeline (a lane per process, a bar per operation coloured by outcome and
/// function, `windows` shaded, anomaly examples marked); throughput and send latency per time
/// bucket; the windows; and every kept anomaly example as JSON. `windows` are the faults the
/// nemesis held, in the history's time unit (nanoseconds since the run started).
pub fn render_html(
    history: &History,
    windows: &[NemesisWindow],
    report: &CheckReport,
    info: &RunInfo,
) -> String {
    render_bounded(history, windows, report, info, TIMELINE_OPS_MAX)
}

/// Writes into a `String`, which cannot fail: `fmt::Write for String` always returns `Ok`.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Charts shorter than a second still get one bucket of a second: rates are per second.
const BUCKET_NS_MIN: u64 = 1_000_000_000;
/// Up to this many processes get a lane each; beyond it, processes whose lifetimes do not
/// overlap share a lane (a crashed client's replacement usually takes over its lane).
const LANE_PROCESSES_MAX: usize = 60;
/// Even after sharing, at most this many lanes; further processes overlap in the last ones.
const LANES_MAX: usize = 400;
/// Windows listed in the table (all are shaded on the charts).
const WINDOWS_LISTED_MAX: usize = 200;
/// Keys described in one operation's tooltip.
const TOOLTIP_KEYS_MAX: usize = 4;
/// Characters of an anomaly example quoted in a marker's tooltip.
const EXAMPLE_TOOLTIP_CHARS_MAX: usize = 400;
/// Keys listed with their highest offset in the stats table.
const STATS_KEYS_MAX: usize = 64;
/// Processes named in a shared lane's tooltip.
const LANE_TITLE_PROCESSES_MAX: usize = 24;
/// Roughly this many ticks on a time axis.
const TICKS_TARGET: u64 = 10;
const NS_PER_S: u64 = 1_000_000_000;
const NS_PER_MS: f64 = 1_000_000.0;

const SVG_WIDTH_PX: f64 = 1200.0;
const PLOT_LEFT_PX: f64 = 110.0;
const PLOT_RIGHT_PX: f64 = 20.0;
const LANE_PX_MAX: f64 = 16.0;
const LANE_PX_MIN: f64 = 3.0;
/// Many lanes share this height before they reach `LANE_PX_MIN`.
const LANES_HEIGHT_PX: f64 = 960.0;
const NEMESIS_ROW_PX: f64 = 12.0;
/// Horizontal step between markers that share a place.
const MARKER_STEP_PX: f64 = 7.0;
const AXIS_TOP_PX: f64 = 22.0;
const CHART_HEIGHT_PX: f64 = 230.0;
const CHART_TOP_PX: f64 = 12.0;
const CHART_BOTTOM_PX: f64 = 30.0;
/// Latencies below this are drawn at it: a log axis has no zero.
const LATENCY_MS_MIN: f64 = 0.001;

/// Styles for the page and, repeated inside each SVG, for the drawings so that a saved SVG
/// looks the same on its own.
const PAGE_CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
margin:24px;color:#222;background:#fff}h1{margin:0 0 10px;font-size:24px}\
h2{margin:30px 0 8px;font-size:18px}h3{margin:18px 0 6px;font-size:15px}\
.verdict{display:inline-block;padding:6px 16px;border-radius:6px;font-weight:700;\
font-size:22px;color:#fff;margin-right:12px}.valid{background:#2ca02c}\
.invalid{background:#d62728}.cols{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;\
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;\
font-variant-numeric:tabular-nums}tr.error td{background:#fde0e0}\
tr.allowed td{background:#fff4d6}tr.none td{color:#aaa}\
.note{background:#fff8e1;border-left:4px solid #f0a020;padding:6px 10px;font-size:13px;\
max-width:1160px}.legend{font-size:12px;margin:6px 0}\
.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle;\
border:1px solid rgba(0,0,0,.25)}pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;\
font-size:12px;overflow:auto;max-width:1160px}small{color:#666;font-weight:400}";

const SVG_CSS: &str = "text{font-family:sans-serif;font-size:11px;fill:#333}\
.os{fill:#2ca02c}.op{fill:#74c476}.oa{fill:#00602a}\
.fs{fill:#e0457b}.fp{fill:#f59ab9}.fa{fill:#a3214f}\
.is{fill:#f39c12}.ip{fill:#f8cc66}.ia{fill:#b86e00}\
.pend{fill-opacity:.55}.ref{stroke:#d00;stroke-width:1.2}\
.mark{fill:#e00;stroke:#600;stroke-width:.6}.band{fill-opacity:.16}\
.axis{stroke:#555;stroke-width:1}.grid{stroke:#e6e6e6;stroke-width:1}\
.alt{fill:#f5f5f5}.plot{fill:#fff;stroke:#ccc}";

/// How an operation ended, as drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Info,
    /// Invoked and never completed: as uncertain as `Info`, drawn to the end of the run.
    Pending,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Pending => "info (never completed)",
        }
    }
}

/// One operation: an invoke paired with the next completion of its process.
#[derive(Clone, Copy, Debug)]
struct Bar<'a> {
    process: u64,
    outcome: Outcome,
    start_ns: u64,
    /// `None` if the history ended before the operation completed.
    complete_ns: Option<u64>,
    invoke: &'a Op,
    /// The completion's op; the invoke's op while there is none.
    completion: &'a Op,
}

impl Bar<'_> {
    fn function(&self) -> Function {
        self.invoke.function()
    }

    /// Where the bar ends: its completion, or the end of the run for a pending operation.
    fn end_ns(&self, run_end_ns: u64) -> u64 {
        self.complete_ns.unwrap_or(run_end_ns).max(self.start_ns)
    }

    /// The CSS class giving the bar its colour: outcome letter, then function letter.
    fn class(&self) -> &'static str {
        match (self.outcome, self.function()) {
            (Outcome::Ok, Function::Send) => "os",
            (Outcome::Ok, Function::Poll) => "op",
            (Outcome::Ok, _) => "oa",
            (Outcome::Fail, Function::Send) => "fs",
            (Outcome::Fail, Function::Poll) => "fp",
            (Outcome::Fail, _) => "fa",
            (_, Function::Send) => "is",
            (_, Function::Poll) => "ip",
            (_, _) => "ia",
        }
    }
}

/// Maps time onto the x axis shared by the timeline and the charts.
#[derive(Clone, Copy, Debug)]
struct Axis {
    end_ns: u64,
    left_px: f64,
    width_px: f64,
}

impl Axis {
    fn new(end_ns: u64) -> Axis {
        Axis {
            end_ns: end_ns.max(1),
            left_px: PLOT_LEFT_PX,
            width_px: SVG_WIDTH_PX - PLOT_LEFT_PX - PLOT_RIGHT_PX,
        }
    }

    fn x(&self, t_ns: u64) -> f64 {
        self.left_px + self.width_px * (t_ns.min(self.end_ns) as f64 / self.end_ns as f64)
    }

    fn right_px(&self) -> f64 {
        self.left_px + self.width_px
    }
}

/// Which lane each process is drawn in.
#[derive(Debug)]
struct Lanes {
    of_process: BTreeMap<u64, usize>,
    /// Per lane, its processes in the order they took it.
    members: Vec<Vec<u64>>,
    lane_px: f64,
}

/// Where an anomaly example is drawn: at an operation's bar, or at a bare (process, time)
/// when no operation matches (a malformed event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Marker {
    anomaly: Anomaly,
    example: usize,
    bar: Option<usize>,
    process: u64,
    time_ns: u64,
}

/// What a checker example points at (see the JSON the checker builds per anomaly).
#[derive(Clone, Copy, Debug)]
enum Ref {
    /// A send object: the operation `process` invoked at `time`.
    Invoked { process: u64, time: u64 },
    /// A poll or malformed event: the operation of `process` completing (or invoked) at `time`.
    At { process: u64, time: u64 },
    /// The send that wrote `value` (duplicate and inconsistent-offsets name only values).
    Value(u64),
}

/// The operations the timeline draws, and the note that says how they were chosen.
#[derive(Debug)]
struct Sample {
    /// Indices into the bars, ascending.
    kept: Vec<usize>,
    note: Option<String>,
}

/// Per time bucket: what completed in it.
#[derive(Clone, Debug, Default)]
struct Bucket {
    sends_ok: u64,
    records_ok: u64,
    fails: u64,
    infos: u64,
    /// Latencies of the ok sends, sorted.
    send_latency_ns: Vec<u64>,
}

#[derive(Debug)]
struct Buckets {
    width_ns: u64,
    rows: Vec<Bucket>,
}

/// Everything derived once from the inputs; each `push_*` method writes one part of the page.
struct Page<'a> {
    history: &'a History,
    windows: &'a [NemesisWindow],
    report: &'a CheckReport,
    info: &'a RunInfo,
    bars: Vec<Bar<'a>>,
    end_ns: u64,
    axis: Axis,
    lanes: Lanes,
    markers: Vec<Marker>,
    sample: Sample,
    buckets: Buckets,
}

/// [`render_html`] with the timeline's bound as a parameter, so tests can exceed it cheaply.
fn render_bounded(
    history: &History,
    windows: &[NemesisWindow],
    report: &CheckReport,
    info: &RunInfo,
    ops_max: usize,
) -> String {
    let bars = pair_bars(history);
    let end_ns = run_end_ns(history, windows);
    let markers = locate_markers(report, &bars);
    let referenced: BTreeSet<usize> = markers.iter().filter_map(|m| m.bar).collect();
    let page = Page {
        history,
        windows,
        report,
        info,
        lanes: Lanes::build(history, &bars, end_ns),
        sample: sample_bars(&bars, &referenced, ops_max),
        buckets: Buckets::build(&bars, end_ns),
        axis: Axis::new(end_ns),
        end_ns,
        markers,
        bars,
    };
    page.render()
}

impl Page<'_> {
    fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024 + self.sample.kept.len() * 200);
        self.push_head(&mut out);
        self.push_summary(&mut out);
        self.push_timeline(&mut out);
        self.push_throughput(&mut out);
        self.push_latency(&mut out);
        self.push_windows_table(&mut out);
        self.push_examples(&mut out);
        out.push_str("</body>\n</html>\n");
        out
    }

    fn push_head(&self, out: &mut String) {
        let verdict = verdict_word(self.report);
        put!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{} \u{2014} {verdict} \u{2014} Railyard Jepsen</title>\n\
             <style>{PAGE_CSS}</style>\n</head>\n<body>\n",
            esc(&self.info.test)
        );
        let class = if self.report.valid() {
            "valid"
        } else {
            "invalid"
        };
        put!(
            out,
            "<h1>{}</h1>\n<p><span class=\"verdict {class}\">{verdict}</span>",
            esc(&self.info.test)
        );
        let errors = self.report.errors();
        if errors.is_empty() {
            out.push_str("no anomaly that is an error was found");
        } else {
            put!(out, "errors: <b>{}</b>", esc(&errors.join(", ")));
        }
        out.push_str("</p>\n");
    }

    fn push_summary(&self, out: &mut String) {
        out.push_str("<div class=\"cols\">\n<div><h2>Run</h2>\n<table>\n");
        for (name, value) in self.run_rows() {
            put!(out, "<tr><th>{}</th><td>{}</td></tr>\n", name, esc(&value));
        }
        out.push_str("</table></div>\n");
        self.push_anomaly_table(out);
        self.push_stats(out);
        out.push_str("</div>\n");
    }

    fn run_rows(&self) -> Vec<(&'static str, String)> {
        let info = self.info;
        let mode = match self.report.mode {
            ConsumerMode::Subscribe => "subscribe",
            _ => "assign",
        };
        let processes = self.lanes.of_process.len();
        vec![
            ("test", info.test.clone()),
            ("seed", info.seed.to_string()),
            ("nodes", info.nodes.to_string()),
            ("keys", info.keys.to_string()),
            ("acks", info.acks.clone()),
            ("idempotent", info.idempotent.to_string()),
            ("time limit", format!("{} s", info.time_limit_s)),
            ("started at", info.started_at.clone()),
            ("history span", format!("{:.3} s", secs(self.end_ns))),
            ("events", self.history.len().to_string()),
            ("operations", self.bars.len().to_string()),
            ("processes", processes.to_string()),
            ("nemesis windows", self.windows.len().to_string()),
            ("consumer mode", mode.to_string()),
            (
                "final reads",
                if self.report.final_reads_done {
                    "done (unseen is an error)"
                } else {
                    "not done (unseen is informational)"
                }
                .to_string(),
            ),
        ]
    }

    fn push_anomaly_table(&self, out: &mut String) {
        out.push_str(
            "<div><h2>Anomalies</h2>\n<table>\n\
             <tr><th>anomaly</th><th>count</th><th>judged</th><th>examples</th></tr>\n",
        );
        for anomaly in Anomaly::ALL {
            let name = anomaly.name();
            let Some(summary) = self.report.anomalies.get(&anomaly) else {
                put!(
                    out,
                    "<tr class=\"none\"><td>{name}</td><td class=\"n\">0</td>\
                     <td>\u{2014}</td><td></td></tr>\n"
                );
                continue;
            };
            let judged = if summary.error { "error" } else { "allowed" };
            let link = if summary.examples.is_empty() {
                String::new()
            } else {
                format!("<a href=\"#ex-{name}\">{}</a>", summary.examples.len())
            };
            put!(
                out,
                "<tr class=\"{judged}\"><td>{name}</td><td class=\"n\">{}</td>\
                 <td>{judged}</td><td>{link}</td></tr>\n",
                summary.count
            );
        }
        out.push_str("</table></div>\n");
    }

    fn push_stats(&self, out: &mut String) {
        let s = &self.report.stats;
        let rows: [(&str, u64); 11] = [
            ("events", s.events),
            ("operations", s.operations),
            ("sends ok", s.sends_ok),
            ("sends fail", s.sends_fail),
            ("sends info", s.sends_info),
            ("sends info, committed", s.sends_info_committed),
            ("polls ok", s.polls_ok),
            ("polls fail", s.polls_fail),
            ("polls info", s.polls_info),
            ("values read", s.values_read),
            ("distinct values read", s.distinct_values_read),
        ];
        out.push_str("<div><h2>Stats</h2>\n<table>\n");
        for (name, value) in rows {
            put!(
                out,
                "<tr><th>{name}</th><td class=\"n\">{value}</td></tr>\n"
            );
        }
        put!(
            out,
            "<tr><th>max offset per key</th><td>{}</td></tr>\n</table></div>\n",
            max_offsets_text(&s.max_offset)
        );
    }

    fn push_timeline(&self, out: &mut String) {
        out.push_str("<h2>Timeline</h2>\n");
        self.push_timeline_notes(out);
        let kinds = window_kinds(self.windows);
        let lanes_top = AXIS_TOP_PX + kinds.len() as f64 * NEMESIS_ROW_PX + 6.0;
        let lanes_bottom = lanes_top + self.lanes.members.len() as f64 * self.lanes.lane_px;
        let height = lanes_bottom + 24.0;
        svg_open(out, "timeline", height);
        put!(
            out,
            "<rect class=\"plot\" x=\"{:.1}\" y=\"{AXIS_TOP_PX:.1}\" width=\"{:.1}\" \
             height=\"{:.1}\"/>\n",
            self.axis.left_px,
            self.axis.width_px,
            lanes_bottom - AXIS_TOP_PX
        );
        self.push_lane_backgrounds(out, lanes_top);
        push_bands(out, &self.axis, self.windows, AXIS_TOP_PX, lanes_bottom);
        push_time_grid(out, &self.axis, AXIS_TOP_PX, lanes_bottom, true);
        self.push_nemesis_track(out, &kinds);
        self.push_bars(out, lanes_top);
        self.push_markers(out, lanes_top);
        out.push_str("</svg>\n");
        self.push_timeline_legend(out, &kinds);
    }

    fn push_timeline_notes(&self, out: &mut String) {
        out.push_str(
            "<p class=\"legend\">One lane per process; each bar runs from an operation's \
             invoke to its completion. Hover a bar, band or marker for details.</p>\n",
        );
        if let Some(note) = &self.sample.note {
            put!(out, "<p class=\"note\">{}</p>\n", esc(note));
        }
        let lanes = self.lanes.members.len();
        let processes = self.lanes.of_process.len();
        if lanes < processes {
            put!(
                out,
                "<p class=\"note\">{processes} processes are drawn in {lanes} lanes: a crashed \
                 client is replaced by a new process id, and processes whose lifetimes do not \
                 overlap share a lane (hover a lane's label for its processes).</p>\n"
            );
        }
    }

    fn push_lane_backgrounds(&self, out: &mut String, lanes_top: f64) {
        let lane_px = self.lanes.lane_px;
        let label_px = (lane_px - 3.0).min(11.0);
        for (lane, members) in self.lanes.members.iter().enumerate() {
            let y = lanes_top + lane as f64 * lane_px;
            if lane % 2 == 1 {
                put!(
                    out,
                    "<rect class=\"alt\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" \
                     height=\"{lane_px:.1}\"/>\n",
                    self.axis.left_px,
                    self.axis.width_px
                );
            }
            // A label needs about 8 px; thinner lanes are identified by their tooltip only.
            if label_px < 7.0 {
                continue;
            }
            put!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"{label_px:.0}\">\
                 {}<title>{}</title></text>\n",
                self.axis.left_px - 6.0,
                y + lane_px * 0.5 + label_px * 0.35,
                esc(&lane_label(members)),
                esc(&lane_title(members))
            );
        }
    }

    fn push_nemesis_track(&self, out: &mut String, kinds: &[&str]) {
        for (row, kind) in kinds.iter().enumerate() {
            let y = AXIS_TOP_PX + 3.0 + row as f64 * NEMESIS_ROW_PX;
            put!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                self.axis.left_px - 6.0,
                y + 8.0,
                esc(kind)
            );
            for window in self.windows.iter().filter(|w| w.kind == *kind) {
                let (x0, x1) = window_span_px(&self.axis, window);
                put!(
                    out,
                    "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                     fill=\"{}\"><title>{}</title></rect>\n",
                    (x1 - x0).max(1.0),
                    NEMESIS_ROW_PX - 3.0,
                    kind_colour(kind),
                    esc(&window_title(window))
                );
            }
        }
    }

    fn push_bars(&self, out: &mut String, lanes_top: f64) {
        let lane_px = self.lanes.lane_px;
        let bar_px = (lane_px * 0.7).max(1.5);
        let referenced: BTreeSet<usize> = self.markers.iter().filter_map(|m| m.bar).collect();
        for &i in &self.sample.kept {
            let bar = &self.bars[i];
            let lane = self
                .lanes
                .of_process
                .get(&bar.process)
                .copied()
                .unwrap_or(0);
            let y = lanes_top + lane as f64 * lane_px + (lane_px - bar_px) / 2.0;
            let x0 = self.axis.x(bar.start_ns);
            let x1 = self.axis.x(bar.end_ns(self.end_ns));
            let pending = if bar.outcome == Outcome::Pending {
                " pend"
            } else {
                ""
            };
            let outline = if referenced.contains(&i) { " ref" } else { "" };
            put!(
                out,
                "<rect class=\"b {}{pending}{outline}\" x=\"{x0:.1}\" y=\"{y:.1}\" \
                 width=\"{:.1}\" height=\"{bar_px:.1}\"><title>{}</title></rect>\n",
                bar.class(),
                (x1 - x0).max(1.0),
                esc(&bar_title(bar, self.end_ns))
            );
        }
    }

    fn push_markers(&self, out: &mut String, lanes_top: f64) {
        let lane_px = self.lanes.lane_px;
        // Several examples often name one operation (a lost write is also unseen): later
        // markers at the same place step right so that each keeps its own tooltip.
        let mut at_place: BTreeMap<(Option<usize>, u64, u64), usize> = BTreeMap::new();
        for marker in &self.markers {
            let Some(&lane) = self.lanes.of_process.get(&marker.process) else {
                continue;
            };
            let place = (marker.bar, marker.process, marker.time_ns);
            let stacked = at_place.entry(place).or_insert(0);
            let x = self.marker_x(marker) + *stacked as f64 * MARKER_STEP_PX;
            *stacked += 1;
            let y = lanes_top + lane as f64 * lane_px;
            let name = marker.anomaly.name();
            put!(
                out,
                "<a href=\"#ex-{name}-{}\"><path class=\"mark\" \
                 d=\"M{:.1} {:.1}L{:.1} {:.1}L{x:.1} {:.1}Z\"><title>{}</title></path></a>\n",
                marker.example,
                x - 4.5,
                y - 3.0,
                x + 4.5,
                y - 3.0,
                y + 5.0,
                esc(&self.marker_title(marker))
            );
        }
    }

    /// The middle of the marked operation's bar, or the marked time without one.
    fn marker_x(&self, marker: &Marker) -> f64 {
        match marker.bar {
            Some(i) => {
                let bar = &self.bars[i];
                (self.axis.x(bar.start_ns) + self.axis.x(bar.end_ns(self.end_ns))) / 2.0
            }
            None => self.axis.x(marker.time_ns),
        }
    }

    fn marker_title(&self, marker: &Marker) -> String {
        let example = self
            .report
            .examples(marker.anomaly)
            .get(marker.example)
            .map(|v| truncate_chars(&v.to_string(), EXAMPLE_TOOLTIP_CHARS_MAX))
            .unwrap_or_default();
        format!(
            "{} (example {})\n{example}",
            marker.anomaly.name(),
            marker.example + 1
        )
    }

    /// Where the timeline marks example `i` of `anomaly`, for the examples list.
    fn marked_places(&self, anomaly: Anomaly, i: usize) -> String {
        let places: Vec<String> = self
            .markers
            .iter()
            .filter(|m| m.anomaly == anomaly && m.example == i)
            .map(|m| match m.bar {
                Some(b) => format!("p{} {:.3} s", m.process, secs(self.bars[b].start_ns)),
                None => format!("p{} {:.3} s (no operation)", m.process, secs(m.time_ns)),
            })
            .collect();
        if places.is_empty() {
            "names no operation of the history, so it is not marked on the timeline".to_string()
        } else {
            format!("marked on the timeline at {}", places.join(", "))
        }
    }

    fn push_timeline_legend(&self, out: &mut String, kinds: &[&str]) {
        out.push_str("<div class=\"legend\">");
        let swatches = [
            ("#2ca02c", "send ok"),
            ("#74c476", "poll ok"),
            ("#00602a", "assign/subscribe ok"),
            ("#e0457b", "send fail"),
            ("#f59ab9", "poll fail"),
            ("#a3214f", "assign/subscribe fail"),
            ("#f39c12", "send info"),
            ("#f8cc66", "poll info"),
            ("#b86e00", "assign/subscribe info"),
        ];
        for (colour, label) in swatches {
            push_swatch(out, colour, label);
        }
        out.push_str("</div>\n<div class=\"legend\">");
        for kind in kinds {
            push_swatch(out, kind_colour(kind), &format!("nemesis: {kind}"));
        }
        out.push_str(
            "<span class=\"sw\" style=\"background:#e00;border-color:#600\"></span>\
             anomaly example (red outline: the operation it names; click for the example)\
             </div>\n",
        );
    }

    fn push_throughput(&self, out: &mut String) {
        out.push_str("<h2>Throughput</h2>\n");
        let width_s = secs(self.buckets.width_ns);
        let rate = |count: u64| count as f64 / width_s;
        let rows = &self.buckets.rows;
        let series: [(&str, &str, Vec<f64>); 4] = [
            (
                "#2ca02c",
                "ok sends/s",
                rows.iter().map(|b| rate(b.sends_ok)).collect(),
            ),
            (
                "#1f77b4",
                "ok polled records/s",
                rows.iter().map(|b| rate(b.records_ok)).collect(),
            ),
            (
                "#e0457b",
                "fails/s",
                rows.iter().map(|b| rate(b.fails)).collect(),
            ),
            (
                "#f39c12",
                "infos/s",
                rows.iter().map(|b| rate(b.infos)).collect(),
            ),
        ];
        let peak = series
            .iter()
            .flat_map(|(_, _, values)| values.iter().copied())
            .fold(0.0, f64::max);
        let step = nice_step_f64(peak / 5.0);
        let top = (peak / step).ceil().max(1.0) * step;
        let chart = Chart::new(self.axis);
        svg_open(out, "throughput", CHART_HEIGHT_PX);
        self.push_chart_frame(out, &chart);
        let mut ticks = Vec::new();
        let mut v = 0.0;
        while v <= top * 1.0001 {
            ticks.push((chart.y_linear(v, top), format!("{}/s", fmt_count(v))));
            v += step;
        }
        push_y_ticks(out, &chart, &ticks);
        for (colour, _, values) in &series {
            let points: Vec<Option<(f64, f64)>> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| Some((self.bucket_x(i), chart.y_linear(v, top))))
                .collect();
            push_polyline(out, &points, colour, "");
        }
        out.push_str("</svg>\n<div class=\"legend\">");
        for (colour, label, _) in &series {
            push_swatch(out, colour, label);
        }
        put!(
            out,
            " &#160; per {} bucket, by completion time</div>\n",
            fmt_duration_s(self.buckets.width_ns)
        );
    }

    fn push_latency(&self, out: &mut String) {
        out.push_str("<h2>Send latency</h2>\n");
        let stats: Vec<Option<[f64; 3]>> = self
            .buckets
            .rows
            .iter()
            .map(|b| latency_stats_ms(&b.send_latency_ns))
            .collect();
        let present: Vec<f64> = stats.iter().flatten().flat_map(|s| s.to_vec()).collect();
        let chart = Chart::new(self.axis);
        svg_open(out, "latency", CHART_HEIGHT_PX);
        self.push_chart_frame(out, &chart);
        if present.is_empty() {
            put!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">no ok sends</text>\n",
                chart.axis.left_px + 10.0,
                CHART_TOP_PX + 20.0
            );
        } else {
            let low = present.iter().copied().fold(f64::INFINITY, f64::min);
            let high = present.iter().copied().fold(0.0, f64::max);
            let decades = LogDecades::spanning(low, high);
            let ticks: Vec<(f64, String)> = (decades.low..=decades.high)
                .map(|d| (chart.y_log(10f64.powi(d), &decades), fmt_decade_ms(d)))
                .collect();
            push_y_ticks(out, &chart, &ticks);
            let series = [("#1f77b4", ""), ("#ff7f0e", ""), ("#d62728", "4 3")];
            for (which, (colour, dash)) in series.iter().enumerate() {
                let points: Vec<Option<(f64, f64)>> = stats
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.map(|s| (self.bucket_x(i), chart.y_log(s[which], &decades))))
                    .collect();
                push_polyline(out, &points, colour, dash);
            }
        }
        out.push_str("</svg>\n<div class=\"legend\">");
        for (colour, label) in [("#1f77b4", "p50"), ("#ff7f0e", "p99"), ("#d62728", "max")] {
            push_swatch(out, colour, label);
        }
        put!(
            out,
            " &#160; of ok sends, invoke to completion, per {} bucket by completion time; \
             log scale</div>\n",
            fmt_duration_s(self.buckets.width_ns)
        );
    }

    /// Background, nemesis bands and the time grid shared by both charts.
    fn push_chart_frame(&self, out: &mut String, chart: &Chart) {
        put!(
            out,
            "<rect class=\"plot\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>\n",
            chart.axis.left_px,
            chart.top_px,
            chart.axis.width_px,
            chart.bottom_px - chart.top_px
        );
        push_bands(
            out,
            &chart.axis,
            self.windows,
            chart.top_px,
            chart.bottom_px,
        );
        push_time_grid(out, &chart.axis, chart.top_px, chart.bottom_px, false);
    }

    /// The x of bucket `i`'s middle.
    fn bucket_x(&self, i: usize) -> f64 {
        let width = self.buckets.width_ns;
        let mid = (i as u64).saturating_mul(width).saturating_add(width / 2);
        self.axis.x(mid)
    }

    fn push_windows_table(&self, out: &mut String) {
        out.push_str("<h2>Nemesis windows</h2>\n");
        if self.windows.is_empty() {
            out.push_str("<p>The nemesis held no fault.</p>\n");
            return;
        }
        out.push_str(
            "<table>\n<tr><th>kind</th><th>start</th><th>end</th><th>held</th>\
             <th>detail</th></tr>\n",
        );
        for window in self.windows.iter().take(WINDOWS_LISTED_MAX) {
            put!(
                out,
                "<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td>\
                 <td class=\"n\">{:.3} s</td><td class=\"n\">{:.3} s</td>\
                 <td class=\"n\">{:.3} s</td><td>{}</td></tr>\n",
                kind_colour(&window.kind),
                esc(&window.kind),
                secs(window.start_ns),
                secs(window.end_ns),
                secs(window.end_ns.saturating_sub(window.start_ns)),
                esc(&window.detail)
            );
        }
        out.push_str("</table>\n");
        if self.windows.len() > WINDOWS_LISTED_MAX {
            put!(
                out,
                "<p class=\"note\">The first {WINDOWS_LISTED_MAX} of {} windows are listed; \
                 all are shaded on the charts.</p>\n",
                self.windows.len()
            );
        }
    }

    fn push_examples(&self, out: &mut String) {
        out.push_str("<h2>Anomaly examples</h2>\n");
        let mut any = false;
        for (anomaly, summary) in &self.report.anomalies {
            if summary.examples.is_empty() {
                continue;
            }
            any = true;
            let name = anomaly.name();
            let judged = if summary.error { "error" } else { "allowed" };
            put!(
                out,
                "<h3 id=\"ex-{name}\">{name} <small>{} found, {judged}; {} example(s) kept\
                 </small></h3>\n",
                summary.count,
                summary.examples.len()
            );
            for (i, example) in summary.examples.iter().enumerate() {
                let pretty = serde_json::to_string_pretty(example).unwrap_or_default();
                put!(
                    out,
                    "<div id=\"ex-{name}-{i}\"><p class=\"legend\">example {}: {}</p>\n\
                     <pre>{}</pre></div>\n",
                    i + 1,
                    esc(&self.marked_places(*anomaly, i)),
                    esc(&pretty)
                );
            }
        }
        if !any {
            out.push_str("<p>The checker kept no example: nothing to show.</p>\n");
        }
    }
}

/// The vertical layout of a chart; x is the shared time axis.
struct Chart {
    axis: Axis,
    top_px: f64,
    bottom_px: f64,
}

/// The decades a log axis spans, as powers of ten.
struct LogDecades {
    low: i32,
    high: i32,
}

impl LogDecades {
    fn spanning(low: f64, high: f64) -> LogDecades {
        let low = low.max(LATENCY_MS_MIN).log10().floor() as i32;
        let high = high.max(LATENCY_MS_MIN).log10().ceil() as i32;
        LogDecades {
            low,
            high: high.max(low + 1),
        }
    }
}

impl Chart {
    fn new(axis: Axis) -> Chart {
        Chart {
            axis,
            top_px: CHART_TOP_PX,
            bottom_px: CHART_HEIGHT_PX - CHART_BOTTOM_PX,
        }
    }

    fn y_linear(&self, value: f64, top: f64) -> f64 {
        let fraction = if top > 0.0 { value / top } else { 0.0 };
        self.bottom_px - (self.bottom_px - self.top_px) * fraction.clamp(0.0, 1.0)
    }

    fn y_log(&self, ms: f64, decades: &LogDecades) -> f64 {
        let span = f64::from(decades.high - decades.low);
        let fraction = (ms.max(LATENCY_MS_MIN).log10() - f64::from(decades.low)) / span;
        self.bottom_px - (self.bottom_px - self.top_px) * fraction.clamp(0.0, 1.0)
    }
}

impl Lanes {
    fn build(history: &History, bars: &[Bar<'_>], end_ns: u64) -> Lanes {
        let spans = process_spans(history, bars, end_ns);
        let (of_process, members) = if spans.len() <= LANE_PROCESSES_MAX {
            let of_process: BTreeMap<u64, usize> =
                spans.keys().enumerate().map(|(i, &p)| (p, i)).collect();
            let members = spans.keys().map(|&p| vec![p]).collect();
            (of_process, members)
        } else {
            pack_lanes(&spans)
        };
        let lanes = members.len().max(1);
        let lane_px = if lanes <= LANE_PROCESSES_MAX {
            LANE_PX_MAX
        } else {
            (LANES_HEIGHT_PX / lanes as f64).clamp(LANE_PX_MIN, LANE_PX_MAX)
        };
        Lanes {
            of_process,
            members,
            lane_px,
        }
    }
}

/// Per process, the first and last time it was seen; a process with an operation that never
/// completed lives to the end of the run.
fn process_spans(history: &History, bars: &[Bar<'_>], end_ns: u64) -> BTreeMap<u64, (u64, u64)> {
    let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for event in history.events() {
        let span = spans
            .entry(event.process)
            .or_insert((event.time, event.time));
        span.0 = span.0.min(event.time);
        span.1 = span.1.max(event.time);
    }
    for bar in bars.iter().filter(|b| b.complete_ns.is_none()) {
        if let Some(span) = spans.get_mut(&bar.process) {
            span.1 = end_ns;
        }
    }
    spans
}

/// Greedy interval packing: processes in order of first appearance take the lane that freed
/// up earliest, if it freed up before they started, else a new lane.
fn pack_lanes(spans: &BTreeMap<u64, (u64, u64)>) -> (BTreeMap<u64, usize>, Vec<Vec<u64>>) {
    let mut order: Vec<(u64, u64, u64)> = spans.iter().map(|(&p, &(a, b))| (a, p, b)).collect();
    order.sort_unstable();
    let mut of_process = BTreeMap::new();
    let mut members: Vec<Vec<u64>> = Vec::new();
    // (time the lane's last process ended, lane)
    let mut free: BTreeSet<(u64, usize)> = BTreeSet::new();
    for (first, process, last) in order {
        let lane = match free.first().copied() {
            Some((ended, lane)) if ended < first || members.len() >= LANES_MAX => {
                free.remove(&(ended, lane));
                lane
            }
            _ => {
                members.push(Vec::new());
                members.len() - 1
            }
        };
        members[lane].push(process);
        of_process.insert(process, lane);
        free.insert((last, lane));
    }
    (of_process, members)
}

/// The history's operations ([`History::operations`], the checker's pairing) as bars. A
/// malformed completion (the checker reports it) ends no bar.
fn pair_bars(history: &History) -> Vec<Bar<'_>> {
    history
        .operations()
        .ops
        .into_iter()
        .map(|op| Bar {
            process: op.process,
            outcome: match (op.complete_time, op.outcome) {
                (None, _) => Outcome::Pending,
                (Some(_), history::Outcome::Ok) => Outcome::Ok,
                (Some(_), history::Outcome::Fail) => Outcome::Fail,
                (Some(_), history::Outcome::Info) => Outcome::Info,
            },
            start_ns: op.invoke_time,
            complete_ns: op.complete_time,
            invoke: op.invoke,
            completion: op.completion,
        })
        .collect()
}

/// The right edge of every time axis: the last event or window end, at least 1.
fn run_end_ns(history: &History, windows: &[NemesisWindow]) -> u64 {
    let events = history.events().iter().map(|e| e.time);
    let windows = windows.iter().map(|w| w.end_ns.max(w.start_ns));
    events.chain(windows).max().unwrap_or(0).max(1)
}

/// Places every example of every anomaly at the operations it names.
fn locate_markers(report: &CheckReport, bars: &[Bar<'_>]) -> Vec<Marker> {
    let index = BarIndex::build(bars);
    let mut markers = BTreeSet::new();
    for (&anomaly, summary) in &report.anomalies {
        for (example, value) in summary.examples.iter().enumerate() {
            for reference in example_refs(value) {
                for (bar, process, time_ns) in index.resolve(reference, bars) {
                    markers.insert(Marker {
                        anomaly,
                        example,
                        bar,
                        process,
                        time_ns,
                    });
                }
            }
        }
    }
    markers.into_iter().collect()
}

/// Lookups from what checker examples carry to the bars.
struct BarIndex {
    by_start: BTreeMap<(u64, u64), usize>,
    by_end: BTreeMap<(u64, u64), usize>,
    sends_by_value: BTreeMap<u64, Vec<usize>>,
}

impl BarIndex {
    fn build(bars: &[Bar<'_>]) -> BarIndex {
        let mut index = BarIndex {
            by_start: BTreeMap::new(),
            by_end: BTreeMap::new(),
            sends_by_value: BTreeMap::new(),
        };
        for (i, bar) in bars.iter().enumerate() {
            index
                .by_start
                .entry((bar.process, bar.start_ns))
                .or_insert(i);
            if let Some(done) = bar.complete_ns {
                index.by_end.entry((bar.process, done)).or_insert(i);
            }
            if let Op::Send { value, .. } = bar.invoke {
                index.sends_by_value.entry(*value).or_default().push(i);
            }
        }
        index
    }

    /// `(bar, process, time)` for each place `reference` is drawn.
    fn resolve(&self, reference: Ref, bars: &[Bar<'_>]) -> Vec<(Option<usize>, u64, u64)> {
        let bar_at = |i: usize| (Some(i), bars[i].process, bars[i].start_ns);
        match reference {
            Ref::Invoked { process, time } => match self.by_start.get(&(process, time)) {
                Some(&i) => vec![bar_at(i)],
                None => vec![(None, process, time)],
            },
            Ref::At { process, time } => {
                let found = self.by_end.get(&(process, time));
                match found.or_else(|| self.by_start.get(&(process, time))) {
                    Some(&i) => vec![bar_at(i)],
                    None => vec![(None, process, time)],
                }
            }
            Ref::Value(value) => self
                .sends_by_value
                .get(&value)
                .map(|found| found.iter().map(|&i| bar_at(i)).collect())
                .unwrap_or_default(),
        }
    }
}

/// What an example refers to. Sends are JSON objects with `process` and `invoke_time`; polls
/// and malformed events carry `process` and `time`; aborted reads name a `reader` and its
/// `read_time`; pairs nest sends under `writer`, `prev`/`next` or `earlier`/`later`. Only when
/// none of those is present (duplicate, inconsistent-offsets) do the values name the sends.
fn example_refs(example: &Value) -> Vec<Ref> {
    let mut refs = Vec::new();
    collect_refs(example, &mut refs);
    if refs.is_empty() {
        if let Value::Object(obj) = example {
            refs.extend(obj.get("value").and_then(Value::as_u64).map(Ref::Value));
            let values = obj.get("values").and_then(Value::as_array);
            refs.extend(
                values
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .map(Ref::Value),
            );
        }
    }
    refs
}

fn collect_refs(example: &Value, refs: &mut Vec<Ref>) {
    let Value::Object(obj) = example else {
        return;
    };
    let number = |field: &str| obj.get(field).and_then(Value::as_u64);
    if let (Some(process), Some(time)) = (number("process"), number("invoke_time")) {
        refs.push(Ref::Invoked { process, time });
    } else if let (Some(process), Some(time)) = (number("process"), number("time")) {
        refs.push(Ref::At { process, time });
    }
    if let (Some(process), Some(time)) = (number("reader"), number("read_time")) {
        refs.push(Ref::At { process, time });
    }
    for nested in ["writer", "prev", "next", "earlier", "later"] {
        if let Some(value) = obj.get(nested) {
            collect_refs(value, refs);
        }
    }
}

/// Keeps every referenced operation, then as many failed and indeterminate ones as fit, then
/// evenly spaced ok ones into what is left, so the drawing stays within `ops_max` (plus the
/// referenced operations, of which there are at most a few per kept example).
fn sample_bars(bars: &[Bar<'_>], referenced: &BTreeSet<usize>, ops_max: usize) -> Sample {
    if bars.len() <= ops_max {
        return Sample {
            kept: (0..bars.len()).collect(),
            note: None,
        };
    }
    let (ok, not_ok): (Vec<usize>, Vec<usize>) = (0..bars.len())
        .filter(|i| !referenced.contains(i))
        .partition(|&i| bars[i].outcome == Outcome::Ok);
    let room = ops_max.saturating_sub(referenced.len());
    let not_ok_kept = spread(&not_ok, room);
    let ok_kept = spread(&ok, room - not_ok_kept.len());
    let mut kept: Vec<usize> = referenced.iter().copied().collect();
    kept.extend(&not_ok_kept);
    kept.extend(&ok_kept);
    kept.sort_unstable();
    let note = format!(
        "The timeline draws {} of {} operations to keep the page small: all {} that an anomaly \
         example names, {} of {} failed or indeterminate ones, and {} of {} ok ones, evenly \
         spaced in time order. The throughput and latency charts count every operation.",
        kept.len(),
        bars.len(),
        referenced.len(),
        not_ok_kept.len(),
        not_ok.len(),
        ok_kept.len(),
        ok.len(),
    );
    Sample {
        kept,
        note: Some(note),
    }
}

/// All of `items` if they fit in `room`, else exactly `room` of them, evenly spaced: item `i`
/// is kept when `i * room / len` steps up, which a fixed stride would do only for some `room`.
fn spread(items: &[usize], room: usize) -> Vec<usize> {
    let len = items.len();
    if len <= room {
        return items.to_vec();
    }
    let step = |i: usize| (i as u128 * room as u128 / len as u128) as usize;
    let kept: Vec<usize> = (0..len)
        .filter(|&i| step(i + 1) > step(i))
        .map(|i| items[i])
        .collect();
    assert_eq!(kept.len(), room, "spread keeps exactly its room");
    kept
}

impl Buckets {
    fn build(bars: &[Bar<'_>], end_ns: u64) -> Buckets {
        let width_ns = bucket_width_ns(end_ns);
        let count = end_ns.div_ceil(width_ns).clamp(1, BUCKETS_MAX) as usize;
        let mut rows = vec![Bucket::default(); count];
        for bar in bars {
            let Some(done) = bar.complete_ns else {
                continue;
            };
            let row = &mut rows[((done / width_ns) as usize).min(count - 1)];
            match (bar.outcome, bar.completion) {
                (Outcome::Ok, Op::Send { .. }) => {
                    row.sends_ok += 1;
                    row.send_latency_ns.push(done.saturating_sub(bar.start_ns));
                }
                (Outcome::Ok, Op::Poll { reads }) => {
                    row.records_ok += reads.values().map(|r| r.len() as u64).sum::<u64>();
                }
                (Outcome::Ok, _) => {}
                (Outcome::Fail, _) => row.fails += 1,
                (Outcome::Info | Outcome::Pending, _) => row.infos += 1,
            }
        }
        for row in &mut rows {
            row.send_latency_ns.sort_unstable();
        }
        Buckets { width_ns, rows }
    }
}

/// A whole number of seconds (1, 2, 5 times a power of ten) giving at most `BUCKETS_MAX`
/// buckets.
fn bucket_width_ns(end_ns: u64) -> u64 {
    nice_step_ns(end_ns.div_ceil(BUCKETS_MAX)).max(BUCKET_NS_MIN)
}

/// `[p50, p99, max]` in milliseconds of sorted latencies (nearest rank), `None` if empty.
fn latency_stats_ms(sorted_ns: &[u64]) -> Option<[f64; 3]> {
    let last = *sorted_ns.last()?;
    let rank = |permille: usize| {
        let r = (sorted_ns.len() * permille).div_ceil(1000).max(1);
        sorted_ns[r - 1]
    };
    Some([rank(500), rank(990), last].map(|ns| ns as f64 / NS_PER_MS))
}

/// The smallest of 1, 2 and 5 times a power of ten that is at least `raw` (at least 1).
fn nice_step_ns(raw: u64) -> u64 {
    let raw = raw.max(1);
    let mut power: u64 = 1;
    while let Some(next) = power.checked_mul(10) {
        if next > raw {
            break;
        }
        power = next;
    }
    for m in [1, 2, 5, 10] {
        match power.checked_mul(m) {
            Some(step) if step >= raw => return step,
            _ => {}
        }
    }
    raw
}

/// The float counterpart of [`nice_step_ns`], for rate axes; 1 for a non-positive `raw`.
fn nice_step_f64(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powi(raw.log10().floor() as i32);
    let fraction = raw / power;
    let m = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * power
}

/// Vertical grid lines at nice time steps, labelled in seconds below (and above, if `top`).
fn push_time_grid(out: &mut String, axis: &Axis, y0: f64, y1: f64, top: bool) {
    let step = nice_step_ns(axis.end_ns / TICKS_TARGET);
    let mut t: u64 = 0;
    loop {
        let x = axis.x(t);
        put!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\"/>\n"
        );
        let label = fmt_tick_s(t, step);
        put!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            y1 + 16.0
        );
        if top {
            put!(
                out,
                "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
                y0 - 6.0
            );
        }
        match t.checked_add(step) {
            Some(next) if next <= axis.end_ns => t = next,
            _ => break,
        }
    }
    put!(
        out,
        "<line class=\"axis\" x1=\"{:.1}\" y1=\"{y1:.1}\" x2=\"{:.1}\" y2=\"{y1:.1}\"/>\n",
        axis.left_px,
        axis.right_px()
    );
}

fn push_y_ticks(out: &mut String, chart: &Chart, ticks: &[(f64, String)]) {
    let (left, right) = (chart.axis.left_px, chart.axis.right_px());
    for (y, label) in ticks {
        put!(
            out,
            "<line class=\"grid\" x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y + 4.0,
            esc(label)
        );
    }
}

/// Translucent bands for the windows, each with its detail as tooltip.
fn push_bands(out: &mut String, axis: &Axis, windows: &[NemesisWindow], y0: f64, y1: f64) {
    for window in windows {
        let (x0, x1) = window_span_px(axis, window);
        put!(
            out,
            "<rect class=\"band\" x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" \
             height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>\n",
            (x1 - x0).max(1.0),
            y1 - y0,
            kind_colour(&window.kind),
            esc(&window_title(window))
        );
    }
}

/// A polyline per run of present points; a lone point becomes a dot.
fn push_polyline(out: &mut String, points: &[Option<(f64, f64)>], colour: &str, dash: &str) {
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{dash}\"")
    };
    for run in points.split(Option::is_none) {
        let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
        if let [(x, y)] = run[..] {
            put!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.8\" fill=\"{colour}\"/>\n"
            );
            continue;
        }
        if run.is_empty() {
            continue;
        }
        out.push_str("<polyline fill=\"none\" stroke-width=\"1.6\"");
        put!(out, " stroke=\"{colour}\"{dash} points=\"");
        for (x, y) in run {
            put!(out, "{x:.1},{y:.1} ");
        }
        out.push_str("\"/>\n");
    }
}

fn svg_open(out: &mut String, class: &str, height_px: f64) {
    put!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{class}\" width=\"{SVG_WIDTH_PX:.0}\" \
         height=\"{height_px:.0}\" viewBox=\"0 0 {SVG_WIDTH_PX:.0} {height_px:.0}\">\n\
         <style>{SVG_CSS}</style>\n"
    );
}

fn push_swatch(out: &mut String, colour: &str, label: &str) {
    put!(
        out,
        "<span class=\"sw\" style=\"background:{}\"></span>{}",
        esc(colour),
        esc(label)
    );
}

/// The distinct window kinds in order, one nemesis row each.
fn window_kinds(windows: &[NemesisWindow]) -> Vec<&str> {
    let kinds: BTreeSet<&str> = windows.iter().map(|w| w.kind.as_str()).collect();
    kinds.into_iter().collect()
}

fn window_span_px(axis: &Axis, window: &NemesisWindow) -> (f64, f64) {
    let x0 = axis.x(window.start_ns);
    (x0, axis.x(window.end_ns).max(x0))
}

fn window_title(window: &NemesisWindow) -> String {
    format!(
        "{}: {}\n{:.3} s \u{2192} {:.3} s",
        window.kind,
        window.detail,
        secs(window.start_ns),
        secs(window.end_ns)
    )
}

/// A colour per nemesis kind, none of them the red, green or orange of the outcomes.
fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "kill" => "#9467bd",
        "pause" => "#17becf",
        "partition" => "#8c564b",
        "clock" => "#bcbd22",
        "rolling" => "#1f77b4",
        "membership" => "#e377c2",
        _ => "#7f7f7f",
    }
}

/// The tooltip of one operation: who, what, how it ended, and how long it took.
fn bar_title(bar: &Bar<'_>, end_ns: u64) -> String {
    let mut title = format!(
        "p{} {} {}\n{}\n",
        bar.process,
        bar.function().as_str(),
        bar.outcome.name(),
        describe_op(bar)
    );
    match bar.complete_ns {
        Some(done) => put!(
            title,
            "{:.3} s \u{2192} {:.3} s ({})",
            secs(bar.start_ns),
            secs(done),
            fmt_latency(done.saturating_sub(bar.start_ns))
        ),
        None => put!(
            title,
            "{:.3} s \u{2192} no completion (drawn to {:.3} s)",
            secs(bar.start_ns),
            secs(end_ns)
        ),
    }
    title
}

fn describe_op(bar: &Bar<'_>) -> String {
    match bar.completion {
        Op::Send { key, value, offset } => {
            let offset = offset.map_or_else(|| "?".to_string(), |o| o.to_string());
            format!("key {key} value {value} offset {offset}")
        }
        Op::Poll { reads } => describe_reads(reads),
        Op::Assign {
            keys,
            seek_to_beginning,
        } => {
            let seek = if *seek_to_beginning {
                ", seek to beginning"
            } else {
                ""
            };
            format!("keys {}{seek}", list_bounded(keys))
        }
        Op::Subscribe { keys } => format!("keys {}", list_bounded(keys)),
    }
}

fn describe_reads(reads: &BTreeMap<String, Vec<(i64, u64)>>) -> String {
    if reads.values().all(Vec::is_empty) {
        return "read nothing".to_string();
    }
    let mut parts: Vec<String> = reads
        .iter()
        .filter(|(_, records)| !records.is_empty())
        .take(TOOLTIP_KEYS_MAX)
        .map(|(key, records)| {
            let first = records.first().map_or(0, |r| r.0);
            let last = records.last().map_or(0, |r| r.0);
            format!("{key}: {} records, offsets {first}..{last}", records.len())
        })
        .collect();
    let nonempty = reads.values().filter(|r| !r.is_empty()).count();
    if nonempty > TOOLTIP_KEYS_MAX {
        parts.push(format!("+{} keys", nonempty - TOOLTIP_KEYS_MAX));
    }
    parts.join("; ")
}

fn list_bounded(keys: &[String]) -> String {
    let shown: Vec<&str> = keys
        .iter()
        .take(TOOLTIP_KEYS_MAX * 2)
        .map(String::as_str)
        .collect();
    let more = keys.len().saturating_sub(shown.len());
    let mut text = format!("[{}]", shown.join(", "));
    if more > 0 {
        put!(text, " +{more}");
    }
    text
}

fn lane_label(members: &[u64]) -> String {
    match members {
        [] => String::new(),
        [only] => format!("p{only}"),
        [first, rest @ ..] => format!("p{first} +{}", rest.len()),
    }
}

fn lane_title(members: &[u64]) -> String {
    let shown: Vec<String> = members
        .iter()
        .take(LANE_TITLE_PROCESSES_MAX)
        .map(|p| format!("p{p}"))
        .collect();
    let more = members.len().saturating_sub(shown.len());
    let mut title = format!("processes {}", shown.join(", "));
    if more > 0 {
        put!(title, " and {more} more");
    }
    title
}

fn max_offsets_text(max_offset: &BTreeMap<String, i64>) -> String {
    let mut parts: Vec<String> = max_offset
        .iter()
        .take(STATS_KEYS_MAX)
        .map(|(key, offset)| format!("{} {offset}", esc(key)))
        .collect();
    if max_offset.len() > STATS_KEYS_MAX {
        parts.push(format!(
            "and {} more keys",
            max_offset.len() - STATS_KEYS_MAX
        ));
    }
    parts.join("<br>")
}

fn verdict_word(report: &CheckReport) -> &'static str {
    if report.valid() {
        "VALID"
    } else {
        "INVALID"
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / NS_PER_S as f64
}

/// A tick label in seconds with as many decimals as the step needs.
fn fmt_tick_s(t_ns: u64, step_ns: u64) -> String {
    let mut decimals = 9;
    let mut step = step_ns.max(1);
    while decimals > 0 && step.is_multiple_of(10) {
        step /= 10;
        decimals -= 1;
    }
    format!("{:.*}s", decimals, secs(t_ns))
}

fn fmt_duration_s(ns: u64) -> String {
    if ns.is_multiple_of(NS_PER_S) {
        format!("{} s", ns / NS_PER_S)
    } else {
        format!("{:.3} s", secs(ns))
    }
}

fn fmt_latency(ns: u64) -> String {
    let ms = ns as f64 / NS_PER_MS;
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A rate axis label: whole numbers, or one decimal below 10.
fn fmt_count(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_decade_ms(decade: i32) -> String {
    if decade < 0 {
        let decimals = decade.unsigned_abs() as usize;
        format!("{:.*} ms", decimals, 10f64.powi(decade))
    } else if decade < 3 {
        format!("{} ms", 10u64.pow(decade.unsigned_abs()))
    } else {
        format!("{} s", 10u64.pow(decade.unsigned_abs() - 3))
    }
}

fn truncate_chars(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(chars_max).collect();
    cut.push('\u{2026}');
    cut
}

/// Escapes text for HTML and SVG, in element content and in quoted attributes alike.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{check, CheckOptions};
    use crate::history::Event;
    use crate::history::EventType;

    const MS: u64 = 1_000_000;

    fn info() -> RunInfo {
        RunInfo {
            test: "railyard kill <3 nodes>".to_string(),
            seed: 42,
            nodes: 3,
            keys: 2,
            acks: "all".to_string(),
            idempotent: true,
            time_limit_s: 60,
            started_at: "2025-01-01T00:00:00Z".to_string(),
        }
    }

    fn window(kind: &str, detail: &str, start_ms: u64, end_ms: u64) -> NemesisWindow {
        NemesisWindow {
            kind: kind.to_string(),
            detail: detail.to_string(),
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
        }
    }

    /// Seven operations by three processes: sends that end ok, fail and info, an assign, an
    /// ok and a failed poll, and a send that never completes.
    fn small_history() -> History {
        [
            Event::invoke(0, Op::send("k-0", 1), 10 * MS),
            Event::ok(0, Op::send_ok("k-0", 0, 1), 15 * MS),
            Event::invoke(1, Op::assign(["k-0", "k-1"], true), 16 * MS),
            Event::ok(1, Op::assign(["k-0", "k-1"], true), 18 * MS),
            Event::invoke(0, Op::send("k-1", 2), 20 * MS),
            Event::fail(0, Op::send("k-1", 2), 30 * MS),
            Event::invoke(1, Op::poll(), 31 * MS),
            Event::ok(1, Op::poll_key("k-0", vec![(0, 1)]), 35 * MS),
            Event::invoke(0, Op::send("k-1", 3), 40 * MS),
            Event::info(0, Op::send("k-1", 3), 90 * MS),
            Event::invoke(1, Op::poll(), 91 * MS),
            Event::fail(1, Op::poll(), 95 * MS),
            Event::invoke(3, Op::send("k-0", 4), 96 * MS),
        ]
        .into_iter()
        .collect()
    }

    fn windows() -> Vec<NemesisWindow> {
        vec![
            window("kill", "kill -9 node 2 <leader of k-1> & co", 35, 60),
            window("partition", "partition halves {1} | {2,3}", 70, 100),
        ]
    }

    /// A history with a lost write: value 1 at offset 0 is acknowledged but a poll reads only
    /// offset 1, so the checker reports lost-write and unseen, one example each.
    fn lost_write_history() -> History {
        [
            Event::invoke(0, Op::send("k-0", 1), 10 * MS),
            Event::ok(0, Op::send_ok("k-0", 0, 1), 12 * MS),
            Event::invoke(0, Op::send("k-0", 2), 13 * MS),
            Event::ok(0, Op::send_ok("k-0", 1, 2), 15 * MS),
            Event::invoke(1, Op::assign(["k-0"], false), 16 * MS),
            Event::ok(1, Op::assign(["k-0"], false), 17 * MS),
            Event::invoke(1, Op::poll(), 18 * MS),
            Event::ok(1, Op::poll_key("k-0", vec![(1, 2)]), 20 * MS),
        ]
        .into_iter()
        .collect()
    }

    fn check_with(history: &History, final_reads_done: bool) -> CheckReport {
        let opts = CheckOptions {
            final_reads_done,
            ..CheckOptions::default()
        };
        check(history, &opts)
    }

    /// The text of the `n`th `<svg>` element (0: timeline, 1: throughput, 2: latency).
    fn svg(html: &str, n: usize) -> &str {
        let start = html.match_indices("<svg").nth(n).expect("svg present").0;
        let end = html[start..].find("</svg>").expect("svg closed") + start;
        &html[start..end]
    }

    fn example_count(report: &CheckReport) -> usize {
        report.anomalies.values().map(|s| s.examples.len()).sum()
    }

    #[test]
    fn test_valid_history_shows_verdict_bars_and_bands() {
        // Proves a valid run reads VALID, draws one bar per operation and one band per window
        // on every chart, and that the page's SVGs are balanced.
        let history = small_history();
        let report = check_with(&history, false);
        assert!(report.valid(), "{report}");
        let html = render_html(&history, &windows(), &report, &info());
        assert!(html.contains("<span class=\"verdict valid\">VALID</span>"));
        assert!(!html.contains("INVALID"));
        assert!(html.contains("<title>railyard kill &lt;3 nodes&gt; \u{2014} VALID"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(html.matches("</svg>").count(), 3);
        assert_eq!(svg(&html, 0).matches("<rect class=\"b ").count(), 7);
        assert_eq!(svg(&html, 0).matches("class=\"b is pend\"").count(), 1);
        for chart in 0..3 {
            assert_eq!(svg(&html, chart).matches("class=\"band\"").count(), 2);
        }
        assert!(!html.contains("class=\"mark\""));
        assert!(
            !html.contains("class=\"note\""),
            "no sampling below the bound"
        );
        // Every lane is labelled with its process.
        for p in ["p0", "p1", "p3"] {
            assert!(svg(&html, 0).contains(&format!(">{p}<title>")), "{p}");
        }
    }

    #[test]
    fn test_window_details_and_names_are_escaped() {
        // Proves text from the inputs cannot inject markup into the page.
        let history = small_history();
        let report = check_with(&history, false);
        let html = render_html(&history, &windows(), &report, &info());
        assert!(html.contains("kill -9 node 2 &lt;leader of k-1&gt; &amp; co"));
        assert!(!html.contains("<leader"));
        assert!(!html.contains("<3 nodes"));
        let mut hostile = windows();
        hostile[0].kind = "<script>".to_string();
        let html = render_html(&history, &hostile, &report, &info());
        assert!(!html.contains("<script"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn test_anomalies_are_marked_and_listed() {
        // Proves an invalid run reads INVALID, marks each anomaly example at the operation it
        // names (with a red outline) and lists every example as pretty JSON.
        let history = lost_write_history();
        let report = check_with(&history, true);
        assert!(!report.valid(), "{report}");
        assert_eq!(report.count(Anomaly::LostWrite), 1, "{report}");
        assert_eq!(report.count(Anomaly::Unseen), 1, "{report}");
        let html = render_html(&history, &[], &report, &info());
        assert!(html.contains("<span class=\"verdict invalid\">INVALID</span>"));
        assert!(html.contains("errors: <b>lost-write, unseen</b>"));
        let timeline = svg(&html, 0);
        assert_eq!(
            timeline.matches("class=\"mark\"").count(),
            example_count(&report)
        );
        assert!(timeline.contains("<title>lost-write (example 1)"));
        // Both examples name the send of value 1, the first operation.
        assert_eq!(timeline.matches(" ref\"").count(), 1);
        assert!(timeline.contains("class=\"b os ref\""));
        assert!(html.contains("<div id=\"ex-lost-write-0\">"));
        assert!(html.contains("<div id=\"ex-unseen-0\">"));
        assert!(
            html.contains("&quot;value&quot;: 1"),
            "pretty JSON of the example"
        );
        assert!(html.contains("<tr class=\"error\"><td>lost-write</td><td class=\"n\">1</td>"));
        assert!(html.contains("<tr class=\"none\"><td>duplicate</td>"));
    }

    #[test]
    fn test_every_example_shape_is_located() {
        // Proves each shape of checker example (a send, a value, a poll at a time, a pair of
        // sends, a malformed event) is placed somewhere on the timeline.
        let mut history = lost_write_history();
        // A duplicate of value 2 at offset 2, read by a poll: duplicate (by value) and an
        // intra-poll nonmonotonic read (by process and time).
        history.push(Event::invoke(1, Op::poll(), 21 * MS));
        history.push(Event::ok(
            1,
            Op::poll_key("k-0", vec![(2, 2), (1, 2)]),
            22 * MS,
        ));
        // A completion without an invoke: malformed, with no operation to point at.
        history.push(Event::ok(5, Op::poll(), 23 * MS));
        let report = check_with(&history, true);
        for anomaly in [
            Anomaly::Duplicate,
            Anomaly::LostWrite,
            Anomaly::IntNonmonotonicPoll,
            Anomaly::MalformedHistory,
        ] {
            assert!(report.count(anomaly) > 0, "{anomaly}: {report}");
        }
        let bars = pair_bars(&history);
        let markers = locate_markers(&report, &bars);
        for (&anomaly, summary) in &report.anomalies {
            for i in 0..summary.examples.len() {
                let found = markers
                    .iter()
                    .any(|m| m.anomaly == anomaly && m.example == i);
                assert!(found, "{anomaly} example {i} is not located");
            }
        }
        let malformed = markers
            .iter()
            .find(|m| m.anomaly == Anomaly::MalformedHistory)
            .expect("malformed located");
        assert_eq!((malformed.bar, malformed.process), (None, 5));
        let html = render_html(&history, &[], &report, &info());
        let marks = svg(&html, 0).matches("class=\"mark\"").count();
        assert_eq!(marks, markers.len());
    }

    #[test]
    fn test_sampling_note_when_bound_exceeded() {
        // Proves a history over the bound draws a sample that keeps the anomaly's operation and
        // every failed one, and says so; under the bound nothing is sampled.
        let mut history = lost_write_history();
        let mut time = 30 * MS;
        for value in 100..160u64 {
            history.push(Event::invoke(2, Op::send("k-1", value), time));
            let done = if value % 10 == 0 {
                Event::fail(2, Op::send("k-1", value), time + MS)
            } else {
                Event::ok(
                    2,
                    Op::send_ok("k-1", (value - 100) as i64, value),
                    time + MS,
                )
            };
            history.push(done);
            time += 2 * MS;
        }
        let report = check_with(&history, false);
        assert_eq!(report.count(Anomaly::LostWrite), 1, "{report}");
        let html = render_bounded(&history, &[], &report, &info(), 20);
        let bars = svg(&html, 0).matches("<rect class=\"b ").count();
        assert_eq!(bars, 20, "the room is filled exactly");
        assert_eq!(spread(&(0..10).collect::<Vec<_>>(), 3), [3, 6, 9]);
        assert_eq!(spread(&[4, 5], 3), [4, 5]);
        assert!(spread(&[4, 5], 0).is_empty());
        assert!(html.contains("The timeline draws"), "sampling note");
        // Unseen (informational here) keeps examples too: every one names an operation.
        let markers = locate_markers(&report, &pair_bars(&history));
        let referenced: BTreeSet<usize> = markers.iter().filter_map(|m| m.bar).collect();
        assert!(html.contains(&format!(
            "all {} that an anomaly example names",
            referenced.len()
        )));
        assert!(html.contains("6 of 6 failed or indeterminate ones"));
        assert_eq!(svg(&html, 0).matches("class=\"b fs\"").count(), 6);
        assert_eq!(svg(&html, 0).matches(" ref\"").count(), referenced.len());
        assert_eq!(
            svg(&html, 0).matches("class=\"mark\"").count(),
            markers.len()
        );
        let full = render_bounded(&history, &[], &report, &info(), 1000);
        assert!(!full.contains("The timeline draws"));
        assert_eq!(svg(&full, 0).matches("<rect class=\"b ").count(), 64);
    }

    #[test]
    fn test_output_is_deterministic() {
        // Proves the same inputs give the same bytes, also across clones of the inputs.
        let (history, windows) = synthetic(600);
        let report = check_with(&history, true);
        let first = render_bounded(&history, &windows, &report, &info(), 200);
        let again = render_bounded(&history.clone(), &windows.clone(), &report, &info(), 200);
        assert_eq!(first, again);
        assert_eq!(
            render_html(&history, &windows, &report, &info()),
            render_html(&history, &windows, &report, &info())
        );
    }

    #[test]
    fn test_empty_history_renders() {
        // Proves an empty run (a harness that could not start) still yields a whole page.
        let history = History::new();
        let report = check_with(&history, false);
        let html = render_html(&history, &[], &report, &RunInfo::default());
        assert!(html.contains("VALID"));
        assert!(html.contains("no ok sends"));
        assert!(html.ends_with("</html>\n"));
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    }

    #[test]
    fn test_many_processes_share_lanes() {
        // Proves that beyond LANE_PROCESSES_MAX processes, a crashed client's replacement
        // reuses its lane, so lanes track concurrency rather than process count.
        let mut history = History::new();
        for generation in 0..40u64 {
            for slot in 0..3u64 {
                let process = generation * 3 + slot;
                let value = process + 1;
                let t = generation * 10 * MS + slot * MS;
                history.push(Event::invoke(process, Op::send("k-0", value), t));
                history.push(Event::info(process, Op::send("k-0", value), t + 5 * MS));
            }
        }
        let bars = pair_bars(&history);
        let lanes = Lanes::build(&history, &bars, run_end_ns(&history, &[]));
        assert_eq!(lanes.of_process.len(), 120);
        assert_eq!(lanes.members.len(), 3);
        assert_eq!(lanes.members[0][..3], [0, 3, 6]);
        let report = check_with(&history, false);
        let html = render_html(&history, &[], &report, &info());
        assert!(html.contains("120 processes are drawn in 3 lanes"));
        assert!(svg(&html, 0).contains(">p0 +39<title>processes p0, p3, p6"));
    }

    #[test]
    fn test_axes_use_nice_steps_and_bounded_buckets() {
        // Proves tick and bucket steps are 1-2-5 numbers and a long run has at most
        // BUCKETS_MAX buckets of whole seconds.
        assert_eq!(nice_step_ns(1), 1);
        assert_eq!(nice_step_ns(3), 5);
        assert_eq!(nice_step_ns(6_000_000_000), 10_000_000_000);
        assert_eq!(nice_step_ns(u64::MAX), u64::MAX);
        assert_eq!(bucket_width_ns(5 * MS), NS_PER_S);
        assert_eq!(bucket_width_ns(300 * NS_PER_S), NS_PER_S);
        assert_eq!(bucket_width_ns(301 * NS_PER_S), 2 * NS_PER_S);
        let hour = 3600 * NS_PER_S;
        assert!(hour.div_ceil(bucket_width_ns(hour)) <= BUCKETS_MAX);
        assert_eq!(fmt_tick_s(1_500_000_000, 500_000_000), "1.5s");
        assert_eq!(fmt_tick_s(20 * NS_PER_S, 10 * NS_PER_S), "20s");
        assert_eq!(fmt_decade_ms(-2), "0.01 ms");
        assert_eq!(fmt_decade_ms(4), "10 s");
        assert_eq!(
            latency_stats_ms(&[MS, 2 * MS, 3 * MS, 100 * MS]),
            Some([2.0, 100.0, 100.0])
        );
    }

    #[test]
    fn test_realistic_sample_size_is_bounded() {
        // Proves a 2000-op run with a kill renders to a modest page, with the lost write the
        // generator injects marked, and that a run past TIMELINE_OPS_MAX stays bounded.
        let (history, windows) = synthetic(2000);
        let report = check_with(&history, true);
        assert_eq!(report.count(Anomaly::LostWrite), 1, "{report}");
        let html = render_html(&history, &windows, &report, &info());
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        assert!(svg(&html, 0).contains("<title>lost-write"));
        assert!(!html.contains("The timeline draws"));

        let (history, windows) = synthetic(TIMELINE_OPS_MAX * 2);
        let report = check_with(&history, true);
        let html = render_html(&history, &windows, &report, &info());
        assert!(html.contains("The timeline draws"));
        let bars = svg(&html, 0).matches("<rect class=\"b ").count();
        assert!(bars <= TIMELINE_OPS_MAX + example_count(&report), "{bars}");
        assert!(html.len() < 4_000_000, "{} bytes", html.len());
    }

    /// Writes the 2000-op sample to /tmp/report-sample.html (and a 20k-op one whose timeline is
    /// sampled to /tmp/report-sample-sampled.html) for a person to look at:
    /// `cargo test -p railyard-jepsen --lib report::tests::write_sample -- --ignored`.
    #[test]
    #[ignore = "writes a file for manual inspection"]
    fn write_sample() {
        let (history, windows) = synthetic(2000);
        let report = check_with(&history, true);
        let html = render_html(&history, &windows, &report, &info());
        std::fs::write("/tmp/report-sample.html", &html).expect("write the sample");
        println!("{} bytes, {report}", html.len());
        let (history, windows) = synthetic(TIMELINE_OPS_MAX * 2);
        let report = check_with(&history, true);
        let html = render_html(&history, &windows, &report, &info());
        std::fs::write("/tmp/report-sample-sampled.html", &html).expect("write the sample");
        println!("sampled: {} bytes", html.len());
    }

    /// A deterministic pseudo-random sequence (an LCG; the crate has no `rand`).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// One planned operation of the synthetic run, before offsets and reads are known.
    struct Planned {
        process: u64,
        send: Option<(String, u64)>,
        assign: bool,
        invoke_ns: u64,
        complete_ns: u64,
        kind: EventType,
    }

    const KILL_MS: (u64, u64) = (20_000, 28_000);

    /// A stand-in for a real run: two senders and one poller over ~60 s doing `ops`
    /// operations; during a kill window sends slow down, fail or crash their process (which
    /// is replaced by process + 3), and one acknowledged send is never read (a lost write).
    fn synthetic(ops: usize) -> (History, Vec<NemesisWindow>) {
        let mut rng = Lcg(7);
        let mut plan = plan_ops(ops, &mut rng);
        let end = plan.iter().map(|p| p.complete_ns).max().unwrap_or(0);
        plan.push(Planned {
            process: 2,
            send: None,
            assign: false,
            invoke_ns: end + MS,
            complete_ns: end + 5 * MS,
            kind: EventType::Ok,
        });
        let windows = vec![window(
            "kill",
            "kill -9 node 2 (leader of jepsen-1)",
            KILL_MS.0,
            KILL_MS.1,
        )];
        (record(&plan), windows)
    }

    fn plan_ops(ops: usize, rng: &mut Lcg) -> Vec<Planned> {
        let mut next_ns = [0u64, 7 * MS, 13 * MS];
        let mut process = [0u64, 1, 2];
        let mut plan = Vec::with_capacity(ops + 1);
        let mut value = 0;
        // The poller's first operation assigns it every key, rewound to the beginning.
        let mut assigned = false;
        while plan.len() < ops {
            let slot = (0..3).min_by_key(|&s| (next_ns[s], s)).unwrap_or(0);
            let t = next_ns[slot];
            let in_kill = (KILL_MS.0 * MS..KILL_MS.1 * MS).contains(&t);
            let roll = rng.below(10);
            let (latency, kind) = match (slot, in_kill) {
                (2, true) if roll < 3 => (rng.below(300) * MS, EventType::Fail),
                (2, _) => (1 + rng.below(4) * MS, EventType::Ok),
                (_, true) if roll < 3 => (rng.below(500) * MS, EventType::Fail),
                (_, true) if roll == 3 => (1000 * MS, EventType::Info),
                (_, true) => ((100 + rng.below(800)) * MS, EventType::Ok),
                _ => ((2 + rng.below(8)) * MS, EventType::Ok),
            };
            value += 1;
            let send = (slot < 2).then(|| (format!("jepsen-{}", value % 2), value));
            plan.push(Planned {
                process: process[slot],
                send,
                assign: slot == 2 && !assigned,
                invoke_ns: t,
                complete_ns: t + latency,
                kind,
            });
            assigned |= slot == 2;
            if kind == EventType::Info {
                process[slot] += 3;
            }
            next_ns[slot] = t + latency + (50 + rng.below(40)) * MS;
        }
        plan
    }

    /// Turns the plan into a history in time order, giving ok sends the next offset of their
    /// key and letting the poller read what has landed, except the first send acknowledged
    /// during the kill, which no poll ever returns.
    fn record(plan: &[Planned]) -> History {
        let mut points: Vec<(u64, bool, usize)> = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            points.push((p.invoke_ns, false, i));
            points.push((p.complete_ns, true, i));
        }
        points.sort_unstable();
        let mut logs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut read_to: BTreeMap<String, usize> = BTreeMap::new();
        let mut lost = None;
        let mut history = History::new();
        for (time, complete, i) in points {
            let p = &plan[i];
            let op = match (&p.send, p.assign) {
                (Some((key, value)), _) => Op::send(key.as_str(), *value),
                (None, true) => Op::assign(["jepsen-0", "jepsen-1"], true),
                (None, false) => Op::poll(),
            };
            if !complete {
                history.push(Event::invoke(p.process, op, time));
                continue;
            }
            let op = match (&p.send, p.kind) {
                (Some((key, value)), EventType::Ok) => {
                    let log = logs.entry(key.clone()).or_default();
                    log.push(*value);
                    if lost.is_none() && (KILL_MS.0 * MS..).contains(&time) {
                        lost = Some(*value);
                    }
                    Op::send_ok(key.as_str(), log.len() as i64 - 1, *value)
                }
                (None, EventType::Ok) if !p.assign => poll_reads(&logs, &mut read_to, lost),
                _ => op,
            };
            history.push(Event::new(p.process, p.kind, op, time));
        }
        history
    }

    fn poll_reads(
        logs: &BTreeMap<String, Vec<u64>>,
        read_to: &mut BTreeMap<String, usize>,
        lost: Option<u64>,
    ) -> Op {
        let mut reads = BTreeMap::new();
        for (key, log) in logs {
            let from = read_to.get(key).copied().unwrap_or(0);
            let to = log.len();
            let records: Vec<(i64, u64)> = (from..to)
                .map(|o| (o as i64, log[o]))
                .filter(|&(_, v)| Some(v) != lost)
                .collect();
            read_to.insert(key.clone(), to);
            reads.insert(key.clone(), records);
        }
        Op::Poll { reads }
    }
}
