//! Latency by percentile as an SVG chart, in the manner of HdrHistogram's plotter, and
//! below it (for one report) the run second by second.
//!
//! The x axis is in "nines": `x = -log10(1 - p/100)`, so 0 %, 90 %, 99 %, 99.9 % and
//! 99.99 % are evenly spaced and the tail gets the room it deserves. The y axis is latency
//! in µs, linear from 0 with a 1-2-5 tick step. One polyline per series, with a legend.
//!
//! Points come from a report's `latency_spectrum` (53 quantiles and the max) when it has
//! one, else from its `latency_us` (`p50, p90, p99, p999`: reports of earlier builds).
//! `max` is drawn at 99.99 % (`MAX_PERCENTILE`), the chart's right edge: it is the worst
//! answer seen, and for runs of fewer than 10,000 answers it is exactly the 99.99th
//! percentile; for longer runs it overstates it, never understates.
//!
//! The timeline panel (`report_svg`) draws the router's p50, p99 and max per second on a
//! log latency axis (a stall is orders of magnitude above the median; a linear axis would
//! flatten the median into the floor) and its answers per second on a linear axis on
//! the right. A second without answers breaks the latency lines rather than bridging
//! them, so a stall reads as a gap with throughput at 0 beneath it. Timeline lines are
//! `<path>`s, spectrum lines `<polyline>`s, so either panel can be picked out.
//!
//! Why hand-written SVG rather than a plotting crate: the chart is a few dozen elements and
//! plain text keeps the binary's dependencies as they are.
//!
//! Bounds: at most `SERIES_MAX` series and `POINTS_PER_SERIES_MAX` points each are drawn
//! (the rest are dropped), and `TIMELINE_SECONDS_MAX` seconds; percentiles are clamped to
//! `0..=MAX_PERCENTILE`, latencies to `0..=LATENCY_US_MAX`, and non-finite values are
//! dropped.

use std::fmt::Write as _;

use serde_json::Value;

use super::record::LATENCY_US_MAX;
use super::timeline::TIMELINE_SECONDS_MAX;

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
/// Height of the timeline panel under the percentile chart.
const TIMELINE_HEIGHT_PX: f64 = 360.0;
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

/// The x-axis ticks: `(nines, label)` for 0 %, 50 %, 90 %, …, 99.99 %.
pub fn x_ticks() -> Vec<(f64, String)> {
    let mut ticks: Vec<(f64, String)> = (0..=NINES_MAX)
        .map(|n| {
            let label = match n {
                0 => "0%".to_owned(),
                _ => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
            };
            (f64::from(n), label)
        })
        .collect();
    // The median, the one point of the body everyone quotes.
    ticks.insert(1, (nines(50.0), "50%".to_owned()));
    ticks
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

/// The points of a report side's `latency_spectrum` (`quantile` 0..=1 as percentiles);
/// `None` when it has none or a point is not numeric.
pub fn spectrum_points(spectrum: &Value) -> Option<Vec<(f64, f64)>> {
    let points = spectrum.as_array().filter(|p| !p.is_empty())?;
    points
        .iter()
        .map(|p| Some((p["quantile"].as_f64()? * 100.0, p["us"].as_f64()?)))
        .collect()
}

/// A report side's latency line: its spectrum, else its five percentiles.
pub fn side_points(side: &Value) -> Option<Vec<(f64, f64)>> {
    spectrum_points(&side["latency_spectrum"]).or_else(|| points_of(&side["latency_us"]))
}

/// The series of a report: the router's, and the bare responder's when it was compared.
pub fn report_series(report: &Value) -> Vec<Series> {
    let mut series = Vec::new();
    if let Some(points) = side_points(report) {
        series.push(("router".to_owned(), points));
    }
    if let Some(points) = report.get("bare").and_then(side_points) {
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
    let mut out = open_document(HEIGHT_PX);
    spectrum_panel(&mut out, series);
    out.push_str("</svg>\n");
    out
}

/// A bench report's chart: its latency lines (`report_series`) and, below them, its
/// timeline when it has one.
pub fn report_svg(report: &Value) -> String {
    let seconds = timeline_of(&report["timeline"]);
    if seconds.is_empty() {
        return svg(&report_series(report));
    }
    let mut out = open_document(HEIGHT_PX + TIMELINE_HEIGHT_PX);
    spectrum_panel(&mut out, &report_series(report));
    let _ = writeln!(out, "<g transform=\"translate(0 {HEIGHT_PX})\">");
    timeline_panel(&mut out, &seconds);
    out.push_str("</g>\n</svg>\n");
    out
}

fn open_document(height: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH_PX}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH_PX} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH_PX}\" height=\"{height}\" fill=\"white\"/>"
    );
    out
}

fn spectrum_panel(out: &mut String, series: &[Series]) {
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
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">Latency by \
         percentile</text>",
        WIDTH_PX / 2.0
    );
    axes(out, &frame, step);
    for (i, (label, points)) in series.iter().enumerate() {
        line(out, &frame, i, label, points);
    }
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

/// One second of a report's timeline as drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tick {
    t_s: f64,
    rps: f64,
    /// p50, p99 and max, µs; `None` in a second without answers.
    latency: [Option<f64>; 3],
}

/// Names and colours of the timeline's latency lines, in `Tick::latency` order.
const TIMELINE_LINES: [(&str, &str); 3] =
    [("p50", "#1f77b4"), ("p99", "#ff7f0e"), ("max", "#d62728")];
const RPS_COLOR: &str = "#2ca02c";

/// The usable seconds of a report's `timeline` (the first `TIMELINE_SECONDS_MAX`).
fn timeline_of(timeline: &Value) -> Vec<Tick> {
    let Some(seconds) = timeline.as_array() else {
        return Vec::new();
    };
    let finite = |v: &Value| v.as_f64().filter(|x| x.is_finite());
    let us = |v: &Value| finite(v).map(|x| x.clamp(1.0, LATENCY_US_MAX as f64));
    seconds
        .iter()
        .take(TIMELINE_SECONDS_MAX)
        .filter_map(|s| {
            Some(Tick {
                t_s: finite(&s["t_s"])?.max(0.0),
                rps: finite(&s["rps"]).unwrap_or(0.0).max(0.0),
                latency: [us(&s["p50_us"]), us(&s["p99_us"]), us(&s["max_us"])],
            })
        })
        .collect()
}

/// Maps a timeline to pixels inside its panel: seconds across, decades of µs up the
/// left, answers per second up the right.
struct TimeFrame {
    seconds: f64,
    decades: (i32, i32),
    rps_top: f64,
}

impl TimeFrame {
    fn of(ticks: &[Tick]) -> TimeFrame {
        let seconds = ticks.iter().map(|t| t.t_s + 1.0).fold(1.0, f64::max);
        let values = ticks
            .iter()
            .flat_map(|t| t.latency.iter().flatten().copied());
        let (lo, hi) = values.fold((f64::INFINITY, 1.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let low = lo.min(hi).log10().floor() as i32;
        let high = (hi.log10().ceil() as i32).max(low + 1);
        let rps = ticks.iter().map(|t| t.rps).fold(0.0, f64::max);
        TimeFrame {
            seconds,
            decades: (low, high),
            rps_top: y_scale(rps).1,
        }
    }
    fn x(&self, t_s: f64) -> f64 {
        LEFT_PX + t_s / self.seconds * (WIDTH_PX - LEFT_PX - RIGHT_PX)
    }
    fn height(share: f64) -> f64 {
        TIMELINE_HEIGHT_PX - BOTTOM_PX - share * (TIMELINE_HEIGHT_PX - TOP_PX - BOTTOM_PX)
    }
    fn y_us(&self, us: f64) -> f64 {
        let (low, high) = self.decades;
        TimeFrame::height((us.log10() - f64::from(low)) / f64::from(high - low))
    }
    fn y_rps(&self, rps: f64) -> f64 {
        TimeFrame::height(rps / self.rps_top)
    }
}

fn timeline_panel(out: &mut String, ticks: &[Tick]) {
    let frame = TimeFrame::of(ticks);
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">Second by second \
         (answers/s dashed, right axis)</text>",
        WIDTH_PX / 2.0
    );
    timeline_axes(out, &frame);
    for (i, (label, color)) in TIMELINE_LINES.iter().enumerate() {
        let mut d = String::new();
        let mut pen_down = false;
        for t in ticks {
            match t.latency[i] {
                Some(us) => {
                    let cmd = if pen_down { 'L' } else { 'M' };
                    let _ = write!(d, "{cmd}{:.1} {:.1} ", frame.x(t.t_s + 0.5), frame.y_us(us));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        timeline_line(out, i, label, color, d.trim_end(), "");
    }
    let mut d = String::new();
    for (i, t) in ticks.iter().enumerate() {
        let cmd = if i == 0 { 'M' } else { 'L' };
        let _ = write!(
            d,
            "{cmd}{:.1} {:.1} ",
            frame.x(t.t_s + 0.5),
            frame.y_rps(t.rps)
        );
    }
    let dash = " stroke-dasharray=\"6 3\"";
    timeline_line(
        out,
        TIMELINE_LINES.len(),
        "answers/s",
        RPS_COLOR,
        d.trim_end(),
        dash,
    );
}

/// One timeline line as a `<path>` (`d` may hold several `M` segments) and its legend.
fn timeline_line(out: &mut String, i: usize, label: &str, color: &str, d: &str, extra: &str) {
    if !d.is_empty() {
        let _ = writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"{extra}/>"
        );
    }
    let x = WIDTH_PX - RIGHT_PX + 60.0;
    let y = TOP_PX + 10.0 + 18.0 * i as f64;
    let _ = writeln!(
        out,
        "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" \
         stroke-width=\"2\"{extra}/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
        x + 20.0,
        x + 26.0,
        y + 4.0
    );
}

fn timeline_axes(out: &mut String, frame: &TimeFrame) {
    let (x0, x1) = (frame.x(0.0), frame.x(frame.seconds));
    let (y0, y1) = (TimeFrame::height(0.0), TimeFrame::height(1.0));
    let _ = writeln!(
        out,
        "<path d=\"M{x0:.1} {y1:.1} V{y0:.1} H{x1:.1} V{y1:.1}\" fill=\"none\" stroke=\"black\"/>"
    );
    let (step, _) = y_scale(frame.seconds);
    let mut t = 0.0;
    while t <= frame.seconds {
        let x = frame.x(t);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>",
            y0 + 16.0
        );
        t += step;
    }
    for decade in frame.decades.0..=frame.decades.1 {
        let us = 10f64.powi(decade);
        let y = frame.y_us(us);
        let _ = writeln!(
            out,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{us}</text>",
            x0 - 6.0,
            y + 4.0
        );
    }
    let (step, top) = y_scale(frame.rps_top);
    let ticks = (top / step).round() as u64;
    for i in 0..=ticks {
        let rps = i as f64 * step;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{RPS_COLOR}\">{rps}</text>",
            x1 + 6.0,
            frame.y_rps(rps) + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">Second of the window</text>",
        (x0 + x1) / 2.0,
        TIMELINE_HEIGHT_PX - 16.0
    );
    let _ = writeln!(
        out,
        "<text x=\"20\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {:.1})\">\
         Latency (µs, log)</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
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
        assert_eq!(labels, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"]);
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

    /// A bench report's chart has both panels: the spectrum line (from `latency_spectrum`,
    /// every point of it) and the timeline's four lines; tags balance; a second without
    /// answers splits the latency lines instead of bridging them.
    #[test]
    fn report_chart_has_spectrum_and_timeline() {
        let spectrum: Vec<Value> = (0..54)
            .map(|i| serde_json::json!({"quantile": f64::from(i) / 54.0, "us": 100 + i}))
            .collect();
        let v: Value = serde_json::json!({
            "latency_us": {"p50": 10, "p90": 20, "p99": 30, "p999": 40, "max": 50},
            "latency_spectrum": spectrum,
            "timeline": [
                {"t_s": 0, "rps": 500.0, "errors": 0, "p50_us": 90, "p99_us": 300, "max_us": 900},
                {"t_s": 1, "rps": 0.0, "errors": 0, "p50_us": null, "p99_us": null,
                 "max_us": null},
                {"t_s": 2, "rps": 480.0, "errors": 1, "p50_us": 95, "p99_us": 2e6,
                 "max_us": 2.5e6},
                {"t_s": 3, "rps": 490.0, "errors": 0, "p50_us": 91, "p99_us": 310, "max_us": 800}
            ]
        });
        assert_eq!(
            side_points(&v).unwrap().len(),
            54,
            "the spectrum, not latency_us"
        );
        let svg = report_svg(&v);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let (open, close) = tag_counts(&svg);
        assert_eq!(open, close, "{svg}");
        assert!(svg.contains(">Latency by percentile</text>"), "{svg}");
        assert!(svg.contains(">Second by second"), "{svg}");
        assert!(svg.contains(">50%</text>") && svg.contains(">99.99%</text>"));
        assert_eq!(svg.matches("<polyline").count(), 1, "{svg}");
        assert_eq!(
            svg.matches("<path d=\"M").count(),
            2 + 4,
            "two axes, four lines"
        );
        let p99 = svg
            .lines()
            .find(|l| l.starts_with("<path") && l.contains(TIMELINE_LINES[1].1))
            .expect("p99 line");
        assert_eq!(p99.matches('M').count(), 2, "the gap splits it: {p99}");
        // Up to 2.5 s: the log axis reaches the seventh decade.
        assert!(svg.contains(">10000000</text>"), "{svg}");
        for label in ["p50", "p99", "max", "answers/s"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        // An earlier report without a timeline: the percentile chart alone, as before.
        let old = serde_json::json!({"latency_us": v["latency_us"]});
        let svg = report_svg(&old);
        assert!(!svg.contains("Second by second"));
        assert_eq!(svg.matches("<polyline").count(), 1);
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
