//! Latency by percentile as an SVG chart, in the manner of HdrHistogram's plotter.
//!
//! The x axis is in "nines": `x = -log10(1 - p/100)`, so 0 %, 90 %, 99 %, 99.9 % and
//! 99.99 % are evenly spaced and the tail gets the room it deserves. The y axis is latency
//! in µs, linear from 0 with a 1-2-5 tick step. One polyline per series, with a legend.
//!
//! Points come from a report's `latency_us` (`p50, p90, p99, p999`); the report carries no
//! finer percentile data. `max` is drawn at 99.99 % (`MAX_PERCENTILE`), the chart's right
//! edge: it is the worst answer seen, and for runs of fewer than 10,000 answers it is
//! exactly the 99.99th percentile; for longer runs it overstates it, never understates.
//!
//! Why hand-written SVG rather than a plotting crate: the chart is a few dozen elements and
//! plain text keeps the binary's dependencies as they are.
//!
//! Bounds: at most `SERIES_MAX` series and `POINTS_PER_SERIES_MAX` points each are drawn
//! (the rest are dropped); percentiles are clamped to `0..=MAX_PERCENTILE`, latencies to
//! `0..=LATENCY_US_MAX`, and non-finite values are dropped.

use std::fmt::Write as _;

use serde_json::Value;

use super::record::LATENCY_US_MAX;

/// Series drawn on one chart; more are dropped.
pub const SERIES_MAX: usize = 16;
/// Points drawn per series; more are dropped.
pub const POINTS_PER_SERIES_MAX: usize = 1024;
/// Nines at the right edge of the x axis: 99.99 %.
pub const NINES_MAX: u32 = 4;
/// The percentile at the right edge, where `max` is drawn.
pub const MAX_PERCENTILE: f64 = 99.99;
/// Label characters kept per series.
pub const LABEL_CHARS_MAX: usize = 64;

const WIDTH_PX: f64 = 800.0;
const HEIGHT_PX: f64 = 480.0;
const LEFT_PX: f64 = 80.0;
const RIGHT_PX: f64 = 180.0;
const TOP_PX: f64 = 40.0;
const BOTTOM_PX: f64 = 60.0;
const Y_TICKS_TARGET: f64 = 5.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One labelled line: `(percentile 0..100, latency µs)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// The x coordinate of percentile `p` in nines: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3.
pub fn nines(p: f64) -> f64 {
    let p = p.clamp(0.0, MAX_PERCENTILE);
    -(1.0 - p / 100.0).log10()
}

/// The x-axis ticks: `(nines, label)` for 0 %, 90 %, …, 99.99 %.
pub fn x_ticks() -> Vec<(f64, String)> {
    (0..=NINES_MAX)
        .map(|n| {
            let label = match n {
                0 => "0%".to_owned(),
                _ => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
            };
            (f64::from(n), label)
        })
        .collect()
}

/// A 1-2-5 step giving about `Y_TICKS_TARGET` ticks up to `max`, and the axis top (a
/// multiple of the step, at least `max`). Never zero.
pub fn y_scale(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / Y_TICKS_TARGET;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(1.0);
    (step, (max / step).ceil() * step)
}

/// `text` safe inside SVG text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().take(LABEL_CHARS_MAX) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The points of a report side's `latency_us` object; `max` drawn at `MAX_PERCENTILE`.
/// `None` when it is not an object with numeric percentiles.
pub fn points_of(latency: &Value) -> Option<Vec<(f64, f64)>> {
    let keys = [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p999", 99.9),
        ("max", MAX_PERCENTILE),
    ];
    keys.iter()
        .map(|(key, p)| latency.get(key)?.as_f64().map(|v| (*p, v)))
        .collect()
}

/// The series of a report: the router's, and the bare responder's when it was compared.
pub fn report_series(report: &Value) -> Vec<Series> {
    let mut series = Vec::new();
    if let Some(points) = points_of(&report["latency_us"]) {
        series.push(("router".to_owned(), points));
    }
    if let Some(points) = report.get("bare").and_then(|b| points_of(&b["latency_us"])) {
        series.push(("bare".to_owned(), points));
    }
    series
}

/// Kept points of one series, clamped and in percentile order.
fn clean(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = points
        .iter()
        .filter(|(p, v)| p.is_finite() && v.is_finite())
        .take(POINTS_PER_SERIES_MAX)
        .map(|&(p, v)| {
            (
                p.clamp(0.0, MAX_PERCENTILE),
                v.clamp(0.0, LATENCY_US_MAX as f64),
            )
        })
        .collect();
    kept.sort_by(|a, b| a.0.total_cmp(&b.0));
    kept
}

/// Maps data to pixels.
struct Frame {
    y_top: f64,
}

impl Frame {
    fn x(&self, nines: f64) -> f64 {
        LEFT_PX + nines / f64::from(NINES_MAX) * (WIDTH_PX - LEFT_PX - RIGHT_PX)
    }
    fn y(&self, us: f64) -> f64 {
        HEIGHT_PX - BOTTOM_PX - us / self.y_top * (HEIGHT_PX - TOP_PX - BOTTOM_PX)
    }
}

/// The chart of `series` (the first `SERIES_MAX`), titled "Latency by percentile".
pub fn svg(series: &[Series]) -> String {
    let series: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .take(SERIES_MAX)
        .map(|(label, points)| (escape(label), clean(points)))
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max);
    let (step, y_top) = y_scale(max);
    let frame = Frame { y_top };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH_PX}\" height=\"{HEIGHT_PX}\" \
         viewBox=\"0 0 {WIDTH_PX} {HEIGHT_PX}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH_PX}\" height=\"{HEIGHT_PX}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">Latency by \
         percentile</text>",
        WIDTH_PX / 2.0
    );
    axes(&mut out, &frame, step);
    for (i, (label, points)) in series.iter().enumerate() {
        line(&mut out, &frame, i, label, points);
    }
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, frame: &Frame, step: f64) {
    let (x0, x1) = (frame.x(0.0), frame.x(f64::from(NINES_MAX)));
    let (y0, y1) = (frame.y(0.0), frame.y(frame.y_top));
    let _ = writeln!(
        out,
        "<path d=\"M{x0:.1} {y1:.1} V{y0:.1} H{x1:.1}\" fill=\"none\" stroke=\"black\"/>"
    );
    for (nines, label) in x_ticks() {
        let x = frame.x(nines);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            y0 + 16.0
        );
    }
    let ticks = (frame.y_top / step).round() as u64;
    for i in 0..=ticks {
        let us = i as f64 * step;
        let y = frame.y(us);
        let _ = writeln!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{us}</text>",
            x0 - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">Percentile</text>",
        (x0 + x1) / 2.0,
        HEIGHT_PX - 16.0
    );
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {:.1})\">\
         Latency (µs)</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

fn line(out: &mut String, frame: &Frame, i: usize, label: &str, points: &[(f64, f64)]) {
    let color = COLORS[i % COLORS.len()];
    let mut coords = String::new();
    for &(p, us) in points {
        let _ = write!(coords, "{:.1},{:.1} ", frame.x(nines(p)), frame.y(us));
    }
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
        coords.trim_end()
    );
    let x = WIDTH_PX - RIGHT_PX + 16.0;
    let y = TOP_PX + 10.0 + 18.0 * i as f64;
    let _ = writeln!(
        out,
        "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" \
         stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
        x + 20.0,
        x + 26.0,
        y + 4.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts of opening (not self-closing) and closing tags, and self-closing ones.
    fn tag_counts(svg: &str) -> (usize, usize) {
        let (mut open, mut close) = (0, 0);
        for tag in svg.split('<').skip(1) {
            let tag = &tag[..tag.find('>').expect("tag closed")];
            if tag.starts_with('/') {
                close += 1;
            } else if !tag.ends_with('/') {
                open += 1;
            }
        }
        (open, close)
    }

    /// Each nine is one unit of x; the right edge is clamped.
    #[test]
    fn nines_transform() {
        for (p, x) in [
            (0.0, 0.0),
            (90.0, 1.0),
            (99.0, 2.0),
            (99.9, 3.0),
            (99.99, 4.0),
        ] {
            assert!((nines(p) - x).abs() < 1e-9, "{p}: {}", nines(p));
        }
        assert!((nines(100.0) - 4.0).abs() < 1e-9);
        assert_eq!(nines(-5.0), 0.0);
        assert!((nines(50.0) - 2f64.log10()).abs() < 1e-9);
    }

    #[test]
    fn tick_placement() {
        let labels: Vec<String> = x_ticks().into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(y_scale(1000.0), (200.0, 1000.0));
        assert_eq!(y_scale(1234.0), (500.0, 1500.0));
        assert_eq!(y_scale(0.0), (1.0, 1.0));
        assert_eq!(y_scale(f64::NAN), (1.0, 1.0));
        let (step, top) = y_scale(73.0);
        assert_eq!((step, top), (20.0, 80.0));
    }

    #[test]
    fn escapes_labels() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\ny"), "x y");
        assert_eq!(escape(&"z".repeat(500)).len(), LABEL_CHARS_MAX);
        let svg = svg(&[("<script>".into(), vec![(50.0, 1.0)])]);
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }

    /// The chart is one `<svg>` element with balanced tags and one polyline per series,
    /// series past `SERIES_MAX` dropped.
    #[test]
    fn well_formed() {
        let series: Vec<Series> = (0..20)
            .map(|i| {
                (
                    format!("run {i}"),
                    vec![(50.0, 10.0 + i as f64), (99.99, 400.0)],
                )
            })
            .collect();
        for n in [0, 1, 2, 20] {
            let svg = svg(&series[..n]);
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.trim_end().ends_with("</svg>"));
            let (open, close) = tag_counts(&svg);
            assert_eq!(open, close, "{svg}");
            assert_eq!(svg.matches("<polyline").count(), n.min(SERIES_MAX));
        }
        let wild = svg(&[(
            "w".into(),
            vec![(f64::NAN, 1.0), (200.0, f64::INFINITY), (50.0, 5.0)],
        )]);
        assert!(!wild.contains("NaN") && !wild.contains("inf"), "{wild}");
    }

    #[test]
    fn series_from_a_report() {
        let v: Value = serde_json::json!({
            "latency_us": {"p50": 10, "p90": 20, "p99": 30, "p999": 40, "max": 50, "mean": 12.0},
            "bare": {"latency_us": {"p50": 5, "p90": 6, "p99": 7, "p999": 8, "max": 9}}
        });
        let s = report_series(&v);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1[4], (MAX_PERCENTILE, 50.0));
        assert_eq!(s[1].0, "bare");
        assert!(report_series(&serde_json::json!({"latency_us": {"p50": 1}})).is_empty());
    }
}
