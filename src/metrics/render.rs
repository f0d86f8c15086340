//! Prometheus text exposition format 0.0.4.
//!
//! Every family is written once, `# HELP` then `# TYPE` then its samples. Each series
//! appears per shard (`shard="0"`, `shard="1"`, …) and as the sum over shards,
//! `shard="all"`. Why a label value and not an unlabelled total: both double-count under
//! a bare `sum()`, but `{shard="all"}` and `{shard!="all"}` are explicit selectors a
//! dashboard can use, where matching on a missing label is easy to get wrong. Gauges
//! without a meaningful sum (the table generation) have no `all` series.
//!
//! Histograms follow the format: cumulative `_bucket{le=…}` ending in `le="+Inf"`, then
//! `_sum` in seconds and `_count`. Bounds and sums are printed as exact decimals from
//! integer nanoseconds, so no float rounding shows up in `le` values.
//!
//! Metrics the shards do not own (ring depths, connection state of the NATS bridge,
//! policies loaded) come in as `ExtraMetric`s built by the caller at scrape time, so this
//! module knows nothing about the runtime.

use std::fmt::Write;

use super::family::{Family, Kind, FAMILIES, LATENCY_HELP, LATENCY_NAME};
use super::{HistogramSnapshot, ShardSnapshot, LATENCY_BOUNDS_NS, LATENCY_BUCKETS};

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Most extra series rendered per scrape; the rest are left out. With `SHARDS_MAX` (256)
/// shards a ring depth per ordered pair is 65 280 series, which fits.
pub const EXTRA_SERIES_MAX: usize = 100_000;
/// Label value of the sum over shards.
pub const ALL_SHARDS: &str = "all";

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Counter or gauge, for an `ExtraMetric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKind {
    Counter,
    Gauge,
}

/// One series supplied by the caller at scrape time: e.g. `shardline_ring_depth` with
/// `from="0", to="1"`. Series sharing a name form one family (help and kind of the first).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraMetric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: ExtraKind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl ExtraMetric {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> ExtraMetric {
        ExtraMetric {
            name,
            help,
            kind: ExtraKind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> ExtraMetric {
        ExtraMetric {
            kind: ExtraKind::Counter,
            ..ExtraMetric::gauge(name, help, value)
        }
    }

    /// Adds a label (builder style).
    pub fn label(mut self, name: &'static str, value: impl std::fmt::Display) -> ExtraMetric {
        self.labels.push((name, value.to_string()));
        self
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first = bytes.next();
    first.is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first = bytes.next();
    first.is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

/// Renders every shard's metrics, the totals, then `extra`, into `out` (appended).
/// `shards[i]` is shard `i`.
pub fn render(out: &mut String, shards: &[ShardSnapshot], extra: &[ExtraMetric]) {
    let total = ShardSnapshot::total(shards);
    let mut offset = 0;
    for family in FAMILIES {
        render_family(out, family, offset, shards, &total);
        offset += family.series;
    }
    render_latency(out, shards, &total);
    render_extra(out, extra);
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `name{shard="…",label="value"} ` (the label only if `label` is non-empty).
fn series_start(
    out: &mut String,
    name: &str,
    suffix: &str,
    shard: Option<usize>,
    (label, value): (&str, &str),
) {
    out.push_str(name);
    out.push_str(suffix);
    let _ = match shard {
        Some(i) => write!(out, "{{shard=\"{i}\""),
        None => write!(out, "{{shard=\"{ALL_SHARDS}\""),
    };
    if !label.is_empty() {
        let _ = write!(out, ",{label}=\"");
        push_label_value(out, value);
        out.push('"');
    }
    out.push_str("} ");
}

fn render_family(
    out: &mut String,
    family: &Family,
    offset: usize,
    shards: &[ShardSnapshot],
    total: &ShardSnapshot,
) {
    header(out, family.name, family.help, family.kind.type_name());
    for i in 0..family.series {
        let value = (family.label_value)(i);
        for (shard, snapshot) in shards.iter().enumerate() {
            series_start(out, family.name, "", Some(shard), (family.label, value));
            let _ = writeln!(out, "{}", snapshot.at(offset + i));
        }
        if family.kind != Kind::Gauge {
            series_start(out, family.name, "", None, (family.label, value));
            let _ = writeln!(out, "{}", total.at(offset + i));
        }
    }
}

/// Appends `ns` as seconds, an exact decimal without trailing zeros: `0.00025`, `1`.
pub fn push_seconds(out: &mut String, ns: u64) {
    let (seconds, fraction) = (ns / NANOS_PER_SECOND, ns % NANOS_PER_SECOND);
    let _ = write!(out, "{seconds}");
    if fraction != 0 {
        let mut digits = [0u8; 9];
        let mut rest = fraction;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
        out.push('.');
        out.push_str(std::str::from_utf8(&digits[..len]).unwrap_or("0"));
    }
}

fn render_latency(out: &mut String, shards: &[ShardSnapshot], total: &ShardSnapshot) {
    header(out, LATENCY_NAME, LATENCY_HELP, "histogram");
    let le: Vec<String> = (0..LATENCY_BUCKETS)
        .map(|i| {
            let mut text = String::new();
            match LATENCY_BOUNDS_NS.get(i) {
                Some(bound) => push_seconds(&mut text, *bound),
                None => text.push_str("+Inf"),
            }
            text
        })
        .collect();
    for (shard, snapshot) in shards.iter().enumerate() {
        histogram_series(out, Some(shard), &snapshot.latency, &le);
    }
    histogram_series(out, None, &total.latency, &le);
}

/// One shard's (or the total's) buckets, sum and count.
fn histogram_series(
    out: &mut String,
    shard: Option<usize>,
    histogram: &HistogramSnapshot,
    le: &[String],
) {
    let mut cumulative = 0u64;
    for (count, le) in histogram.buckets.iter().zip(le) {
        cumulative = cumulative.saturating_add(*count);
        series_start(out, LATENCY_NAME, "_bucket", shard, ("le", le));
        let _ = writeln!(out, "{cumulative}");
    }
    series_start(out, LATENCY_NAME, "_sum", shard, ("", ""));
    push_seconds(out, histogram.sum_ns);
    out.push('\n');
    series_start(out, LATENCY_NAME, "_count", shard, ("", ""));
    let _ = writeln!(out, "{cumulative}");
}

fn push_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Whether an extra series can be rendered: valid and distinct label names, and a valid
/// name that does not clash with (or extend, as `_bucket` would) one of our families.
fn extra_is_valid(metric: &ExtraMetric) -> bool {
    let labels = &metric.labels;
    is_metric_name(metric.name)
        && !super::family_names().any(|ours| metric.name.starts_with(ours))
        && labels.iter().all(|(name, _)| is_label_name(name))
        && labels
            .iter()
            .enumerate()
            .all(|(i, (name, _))| labels[..i].iter().all(|(other, _)| other != name))
}

fn render_extra(out: &mut String, extra: &[ExtraMetric]) {
    let mut order: Vec<&ExtraMetric> = extra
        .iter()
        .filter(|m| extra_is_valid(m))
        .take(EXTRA_SERIES_MAX)
        .collect();
    // Stable: series of one family stay in the caller's order.
    order.sort_by_key(|m| m.name);
    let mut current = "";
    for metric in order {
        if metric.name != current {
            let kind = match metric.kind {
                ExtraKind::Counter => "counter",
                ExtraKind::Gauge => "gauge",
            };
            header(out, metric.name, metric.help, kind);
            current = metric.name;
        }
        out.push_str(metric.name);
        if !metric.labels.is_empty() {
            out.push('{');
            for (i, (name, value)) in metric.labels.iter().enumerate() {
                let _ = write!(out, "{}{name}=\"", if i == 0 { "" } else { "," });
                push_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_float(out, metric.value);
        out.push('\n');
    }
}
