//! The latency-over-time plot of `--svg FILE`: seconds of the measurement window on x,
//! milliseconds on y (linear, from 0), one line each for p50, p99 and max per second. Written
//! by hand: a few polylines and labels need no plotting library.

use std::fmt::Write;

use super::report::SecondRow;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 420.0;
/// Room for the axis labels: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (70.0, 110.0, 40.0, 50.0);
/// Ticks on each axis.
const TICKS: usize = 5;

/// The plot of `rows` under `title`, as an SVG document.
pub fn render(title: &str, rows: &[SecondRow]) -> String {
    let (l, r, t, b) = MARGIN;
    let (pw, ph) = (WIDTH - l - r, HEIGHT - t - b);
    let x_max = rows.iter().map(|s| s.t_s + 1).max().unwrap_or(1) as f64;
    let y_max = nice_max(rows.iter().map(|s| s.max_ms).fold(0.0, f64::max));
    let x = |s: f64| l + s / x_max * pw;
    let y = |ms: f64| t + ph - ms / y_max * ph;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        l + pw / 2.0,
        escape(title)
    );
    axes(&mut out, x_max, y_max, &x, &y);
    for (name, color, pick) in [
        (
            "p50",
            "#1f77b4",
            (|s: &SecondRow| s.p50_ms) as fn(&SecondRow) -> f64,
        ),
        ("p99", "#ff7f0e", |s| s.p99_ms),
        ("max", "#d62728", |s| s.max_ms),
    ] {
        let points: Vec<String> = rows
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t_s as f64 + 0.5), y(pick(s))))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = t + 20.0
            * (1.0
                + ["p50", "p99", "max"]
                    .iter()
                    .position(|n| *n == name)
                    .unwrap_or(0) as f64);
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            l + pw + 10.0,
            l + pw + 30.0,
            l + pw + 35.0,
            ly + 4.0
        );
    }
    out += "</svg>\n";
    out
}

/// The frame, ticks and axis titles.
fn axes(out: &mut String, x_max: f64, y_max: f64, x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) {
    let (x0, x1, y0, y1) = (x(0.0), x(x_max), y(0.0), y(y_max));
    let _ = writeln!(
        out,
        r#"<path d="M{x0:.1},{y1:.1} V{y0:.1} H{x1:.1}" fill="none" stroke="black"/>"#
    );
    for i in 0..=TICKS {
        let f = i as f64 / TICKS as f64;
        let (sx, ms) = (x_max * f, y_max * f);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{sx:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{ms:.2}</text>"#,
            x(sx),
            y0 + 16.0,
            x0 - 6.0,
            y(ms) + 4.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{:.1}" x2="{x1:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            y(ms),
            y(ms)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the warm-up (s)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        (y0 + y1) / 2.0
    );
}

/// A round axis top at or above `v` (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the plot has three lines with one point per second, labeled axes, and a round top.
    #[test]
    fn test_plot_has_lines_and_labels() {
        let rows: Vec<SecondRow> = (0..4)
            .map(|i| SecondRow {
                t_s: i,
                count: 10,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0 + i as f64,
            })
            .collect();
        let svg = render("e2e <test>", &rows);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("latency (ms)") && svg.contains("time since the warm-up (s)"));
        assert!(svg.contains("e2e &lt;test&gt;"));
        assert_eq!(nice_max(6.0), 10.0);
        assert_eq!(nice_max(0.3), 0.5);
        assert_eq!(nice_max(0.0), 1.0);
        let empty = render("none", &[]);
        assert!(empty.ends_with("</svg>\n"));
    }
}
