//! What `shardline top` shows, computed from two scrapes: pure functions over the
//! Prometheus text format, with no socket, clock or terminal, so that every number on the
//! screen is unit-tested.
//!
//! Why deltas and not the router's totals: a counter since start hides what happens now
//! (a burst of `overloaded` an hour ago and one this second look the same), and a
//! latency histogram since start barely moves after a day. The view subtracts the
//! previous scrape from the current one: rates are the counter deltas over the elapsed
//! time, p50/p99 are read from the bucket deltas (as Prometheus' `histogram_quantile`
//! over `rate()` does). A counter that went down means the router restarted; its current
//! value is then the delta.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Lines of one scrape parsed at most: the router exports a few hundred per shard, so
/// more means the target is not a router (or a runaway exporter); parsing stops.
pub const SCRAPE_LINES_MAX: usize = 200_000;

/// The latency histogram the percentiles are read from.
const LATENCY_BUCKET: &str = "shardline_decision_latency_seconds_bucket";
/// Its count: one per decide answer (decision or error), on the shard that answered.
/// Why not `shardline_requests_total`: it also counts every other route the router
/// serves (probes, scrapes, this view's own), so an idle router would show traffic.
const LATENCY_COUNT: &str = "shardline_decision_latency_seconds_count";

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format (comments and blank lines skipped, an
/// optional timestamp ignored). A malformed line is an error naming it: the target is
/// then not a metrics endpoint, and saying so beats a screen of zeros.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i >= SCRAPE_LINES_MAX {
            return Err(format!("more than {SCRAPE_LINES_MAX} lines"));
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|e| {
            let shown: String = line.chars().take(80).collect();
            format!("line {}: {e}: {shown:?}", i + 1)
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = parse_labels(inner, &mut labels)?;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| "the value is not a number")?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",…}` (after the `{`) into `out`; returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    out: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let (key, rest) = s.split_once('=').ok_or("a label without `=`")?;
        let mut chars = rest.strip_prefix('"').ok_or("an unquoted label value")?;
        let mut value = String::new();
        loop {
            let mut it = chars.char_indices();
            match it.next() {
                None => return Err("an unterminated label value"),
                Some((_, '"')) => {
                    chars = &chars[1..];
                    break;
                }
                Some((_, '\\')) => {
                    let (_, escaped) = it.next().ok_or("an unterminated label value")?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                    chars = &chars[1 + escaped.len_utf8()..];
                }
                Some((_, c)) => {
                    value.push(c);
                    chars = &chars[c.len_utf8()..];
                }
            }
        }
        out.push((key.trim().to_owned(), value));
        s = chars;
    }
}

/// One shard's counters in one scrape (or the sums, `shard="all"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardCounters {
    /// Decide requests answered (decisions and errors), all transports.
    pub answers: f64,
    /// `shardline_errors_total` by code.
    pub errors: BTreeMap<String, f64>,
    /// `shardline_shed_total` by cause.
    pub sheds: BTreeMap<String, f64>,
    /// Requests this shard handed to the tenant's owner shard.
    pub crossings: f64,
    /// Breakers that entered the open state.
    pub circuits_opened: f64,
    /// `(le, cumulative count)` of the latency histogram, in rendered order.
    pub buckets: Vec<(f64, f64)>,
    /// `shardline_nats_connected`: absent when NATS is not configured.
    pub nats_connected: Option<bool>,
    /// `shardline_shard_stalled`.
    pub stalled: bool,
}

/// A scrape grouped by shard; `"all"` holds the router's sums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub shards: BTreeMap<String, ShardCounters>,
}

impl Snapshot {
    /// Groups the samples by their `shard` label; series without one are not per shard
    /// and are left out. A text with no Shardline series is refused: the target is some
    /// other exporter.
    pub fn from_samples(samples: &[Sample]) -> Result<Snapshot, String> {
        let mut shards: BTreeMap<String, ShardCounters> = BTreeMap::new();
        let mut seen = false;
        for s in samples {
            if s.name == LATENCY_COUNT {
                seen = true;
            }
            let Some(shard) = s.label("shard") else {
                continue;
            };
            let entry = || shard.to_owned();
            let v = s.value;
            match s.name.as_str() {
                LATENCY_COUNT => shards.entry(entry()).or_default().answers += v,
                "shardline_errors_total" => {
                    let code = s.label("code").unwrap_or("unknown").to_owned();
                    *shards
                        .entry(entry())
                        .or_default()
                        .errors
                        .entry(code)
                        .or_default() += v;
                }
                "shardline_shed_total" => {
                    let cause = s.label("cause").unwrap_or("unknown").to_owned();
                    *shards
                        .entry(entry())
                        .or_default()
                        .sheds
                        .entry(cause)
                        .or_default() += v;
                }
                "shardline_handoffs_total" if s.label("direction") == Some("out") => {
                    shards.entry(entry()).or_default().crossings += v;
                }
                "shardline_breaker_transitions_total" if s.label("to") == Some("open") => {
                    shards.entry(entry()).or_default().circuits_opened += v;
                }
                LATENCY_BUCKET => {
                    let le = match s.label("le") {
                        Some("+Inf" | "Inf") => f64::INFINITY,
                        Some(le) => le.parse().map_err(|_| format!("bucket le={le:?}"))?,
                        None => continue,
                    };
                    shards.entry(entry()).or_default().buckets.push((le, v));
                }
                "shardline_nats_connected" => {
                    shards.entry(entry()).or_default().nats_connected = Some(v >= 1.0);
                }
                "shardline_shard_stalled" => {
                    shards.entry(entry()).or_default().stalled = v >= 1.0;
                }
                _ => {}
            }
        }
        if !seen {
            return Err(format!("no {LATENCY_COUNT} series: not a Shardline router"));
        }
        for c in shards.values_mut() {
            c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(Snapshot { shards })
    }
}

/// What one row of the view shows for the interval between two scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub shard: String,
    /// Decide answers per second.
    pub requests_per_s: f64,
    /// Seconds; `None` when no decision finished in the interval.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Counts in the interval, by code / cause (zero entries left out).
    pub errors: BTreeMap<String, f64>,
    pub sheds: BTreeMap<String, f64>,
    pub errors_per_s: f64,
    pub sheds_per_s: f64,
    pub crossings_per_s: f64,
    /// Breakers opened in the interval.
    pub circuits_opened: f64,
    /// NATS connections up, of those configured (`None`: no `[nats]`); for a shard
    /// `(1, 1)` or `(0, 1)`, for `all` the router's count, which it does not export.
    pub nats: Option<(u32, u32)>,
    /// Shards stalled: 0 or 1 for a shard, the count for `all`.
    pub stalled: u32,
}

impl Row {
    /// Something an operator must look at now: a stalled shard or NATS down.
    pub fn alarm(&self) -> bool {
        self.stalled > 0 || self.nats.is_some_and(|(up, of)| up < of)
    }
}

/// A counter's increase between two scrapes; a decrease (restart) counts from zero.
pub fn increase(before: f64, now: f64) -> f64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// The `q` quantile (0..=1) of the observations between two cumulative bucket lists,
/// linearly interpolated inside the bucket that holds it, as `histogram_quantile` does.
/// A quantile in the `+Inf` bucket is the highest finite bound. `None` when nothing was
/// observed in between.
pub fn quantile(q: f64, before: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let restarted =
        before.len() != now.len() || before.iter().zip(now).any(|(b, n)| b.0 != n.0 || n.1 < b.1);
    let delta: Vec<(f64, f64)> = now
        .iter()
        .enumerate()
        .map(|(i, &(le, n))| (le, if restarted { n } else { n - before[i].1 }))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank && count > lower.1 {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = (rank - lower.1) / (count - lower.1);
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

/// The rows between two snapshots `seconds` apart: one per shard present in `now`, in
/// shard order, then `all`.
pub fn rows(before: &Snapshot, now: &Snapshot, seconds: f64) -> Vec<Row> {
    let seconds = seconds.max(1e-3);
    let empty = ShardCounters::default();
    let mut keys: Vec<&String> = now.shards.keys().collect();
    keys.sort_by_key(|k| (k.as_str() == "all", k.parse::<u64>().unwrap_or(u64::MAX)));
    let mut out = keys
        .into_iter()
        .map(|shard| {
            let n = &now.shards[shard];
            let b = before.shards.get(shard).unwrap_or(&empty);
            let by_key = |now: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>| {
                now.iter()
                    .map(|(k, v)| (k.clone(), increase(*before.get(k).unwrap_or(&0.0), *v)))
                    .filter(|(_, d)| *d > 0.0)
                    .collect::<BTreeMap<_, _>>()
            };
            let errors = by_key(&n.errors, &b.errors);
            let sheds = by_key(&n.sheds, &b.sheds);
            Row {
                shard: shard.clone(),
                requests_per_s: increase(b.answers, n.answers) / seconds,
                p50: quantile(0.5, &b.buckets, &n.buckets),
                p99: quantile(0.99, &b.buckets, &n.buckets),
                errors_per_s: errors.values().fold(0.0, |a, b| a + b) / seconds,
                sheds_per_s: sheds.values().fold(0.0, |a, b| a + b) / seconds,
                errors,
                sheds,
                crossings_per_s: increase(b.crossings, n.crossings) / seconds,
                circuits_opened: increase(b.circuits_opened, n.circuits_opened),
                nats: n.nats_connected.map(|up| (u32::from(up), 1)),
                stalled: u32::from(n.stalled),
            }
        })
        .collect::<Vec<Row>>();
    let (shards, all): (Vec<&mut Row>, Vec<&mut Row>) =
        out.iter_mut().partition(|r| r.shard != "all");
    let stalled = shards.iter().map(|r| r.stalled).sum();
    let nats = shards
        .iter()
        .filter_map(|r| r.nats)
        .reduce(|a, b| (a.0 + b.0, a.1 + b.1));
    for row in all {
        row.stalled = stalled;
        row.nats = nats;
    }
    out
}

/// The table's column titles, for the plain frame and the terminal view alike.
pub const COLUMNS: [&str; 10] = [
    "shard", "req/s", "p50", "p99", "err/s", "shed/s", "cross/s", "opened", "nats", "stalled",
];

/// A latency in the unit that keeps it short, in ASCII (`us`) so that `--once` output
/// stays plain for scripts.
pub fn format_seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1e-3 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.2}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

fn format_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// One row's cells, in `COLUMNS` order.
pub fn cells(row: &Row) -> [String; 10] {
    [
        row.shard.clone(),
        format_rate(row.requests_per_s),
        format_seconds(row.p50),
        format_seconds(row.p99),
        format_rate(row.errors_per_s),
        format_rate(row.sheds_per_s),
        format_rate(row.crossings_per_s),
        format!("{:.0}", row.circuits_opened),
        match row.nats {
            None => "-".into(),
            Some((up, of)) if row.shard == "all" => format!("{up}/{of}"),
            Some((1, _)) => "up".into(),
            Some(_) => "DOWN".into(),
        },
        match row.stalled {
            _ if row.shard == "all" => row.stalled.to_string(),
            0 => "no".into(),
            _ => "STALLED".into(),
        },
    ]
}

/// The lines under the table: errors by code and sheds by cause in the interval, per
/// shard, and the stalled shards; "none" when there is nothing to say.
pub fn details(rows: &[Row]) -> Vec<String> {
    let list = |pick: fn(&Row) -> &BTreeMap<String, f64>| {
        let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for row in rows.iter().filter(|r| r.shard != "all") {
            for (k, v) in pick(row) {
                by_key
                    .entry(k)
                    .or_default()
                    .push(format!("shard {} {v:.0}", row.shard));
            }
        }
        if by_key.is_empty() {
            return "none".to_owned();
        }
        let mut out = String::new();
        for (k, shards) in by_key {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(out, "{k} ({})", shards.join(", "));
        }
        out
    };
    let stalled: Vec<&str> = rows
        .iter()
        .filter(|r| r.stalled > 0 && r.shard != "all")
        .map(|r| r.shard.as_str())
        .collect();
    vec![
        format!("errors by code: {}", list(|r| &r.errors)),
        format!("sheds by cause: {}", list(|r| &r.sheds)),
        format!(
            "stalled shards: {}",
            if stalled.is_empty() {
                "none".to_owned()
            } else {
                stalled.join(", ")
            }
        ),
    ]
}

/// The whole frame as plain text (no escape codes): a title, the aligned table, the
/// details.
pub fn plain_frame(title: &str, rows: &[Row]) -> String {
    let table: Vec<[String; 10]> = rows.iter().map(cells).collect();
    let mut widths = COLUMNS.map(str::len);
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("{title}\n");
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, "  {c:>w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&COLUMNS.map(str::to_owned));
    for r in &table {
        line(r);
    }
    for d in details(rows) {
        out.push_str(&d);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP shardline_requests_total Decide requests received, by transport.
# TYPE shardline_requests_total counter
shardline_requests_total{shard="0",transport="http"} 99
shardline_decision_latency_seconds_count{shard="0"} 10
shardline_decision_latency_seconds_count{shard="1"} 5
shardline_decision_latency_seconds_count{shard="all"} 15
shardline_errors_total{shard="0",code="rate_limited"} 1
shardline_errors_total{shard="all",code="rate_limited"} 1
shardline_shed_total{shard="1",cause="ring_full"} 0
shardline_handoffs_total{shard="1",direction="out"} 2
shardline_handoffs_total{shard="0",direction="in"} 2
shardline_breaker_transitions_total{shard="0",to="open"} 0
shardline_decision_latency_seconds_bucket{shard="0",le="0.001"} 4
shardline_decision_latency_seconds_bucket{shard="0",le="0.01"} 8
shardline_decision_latency_seconds_bucket{shard="0",le="+Inf"} 10
shardline_shard_stalled{shard="0"} 0
shardline_shard_stalled{shard="1"} 1
shardline_nats_connected{shard="0"} 1
shardline_policies_loaded 4
"#;

    fn snapshot(text: &str) -> Snapshot {
        Snapshot::from_samples(&parse(text).unwrap()).unwrap()
    }

    #[test]
    fn parses_names_labels_values_and_escapes() {
        let s =
            parse("a_b{x=\"1\",y=\"q\\\"z\\\\\"} 2.5 1700000000\nc +Inf\n\n# c\nd{} -3e2").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "a_b");
        assert_eq!(
            s[0].labels,
            [("x".into(), "1".into()), ("y".into(), "q\"z\\".into())]
        );
        assert_eq!(s[0].value, 2.5);
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, -300.0);
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        for bad in [
            "x{a=\"1\" 3",
            "x{a=1} 3",
            "x 1\n<html>",
            "x nope",
            "x",
            "{a=\"b\"} 1",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("line "), "{bad:?}: {err}");
        }
        assert!(parse("x 1\n<html>").unwrap_err().starts_with("line 2"));
    }

    #[test]
    fn another_exporter_is_not_a_router() {
        let err = Snapshot::from_samples(&parse("node_load1 0.5\n").unwrap()).unwrap_err();
        assert!(err.contains("not a Shardline router"), "{err}");
    }

    #[test]
    fn groups_by_shard() {
        let s = snapshot(BEFORE);
        assert_eq!(s.shards["0"].answers, 10.0);
        assert_eq!(s.shards["1"].crossings, 2.0);
        assert_eq!(s.shards["0"].crossings, 0.0);
        assert_eq!(s.shards["0"].errors["rate_limited"], 1.0);
        assert_eq!(s.shards["0"].buckets.len(), 3);
        assert_eq!(s.shards["0"].nats_connected, Some(true));
        assert_eq!(s.shards["1"].nats_connected, None);
        assert!(s.shards["1"].stalled);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_deltas() {
        let before = [(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        // 10 new observations: 4 ≤ 1 ms, 4 in (1, 10] ms, 2 above.
        let now = [(0.001, 104.0), (0.01, 108.0), (f64::INFINITY, 110.0)];
        let p50 = quantile(0.5, &before, &now).unwrap();
        assert!((p50 - (0.001 + 0.009 * 0.25)).abs() < 1e-12, "{p50}");
        let p25 = quantile(0.25, &before, &now).unwrap();
        assert!((p25 - 0.001 * 2.5 / 4.0).abs() < 1e-12, "{p25}");
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(quantile(0.99, &before, &now), Some(0.01));
        // Nothing new: no percentile, not a stale one.
        assert_eq!(quantile(0.5, &now, &now), None);
        assert_eq!(quantile(0.5, &[], &[]), None);
    }

    #[test]
    fn a_restart_counts_from_zero() {
        assert_eq!(increase(10.0, 14.0), 4.0);
        assert_eq!(increase(10.0, 3.0), 3.0);
        let before = [(0.001, 50.0), (f64::INFINITY, 60.0)];
        let now = [(0.001, 2.0), (f64::INFINITY, 2.0)];
        let p = quantile(0.5, &before, &now).unwrap();
        assert!((p - 0.0005).abs() < 1e-12, "{p}");
    }

    #[test]
    fn rows_are_rates_over_the_interval() {
        let before = snapshot(BEFORE);
        let now = snapshot(
            &BEFORE
                .replace("_count{shard=\"0\"} 10", "_count{shard=\"0\"} 30")
                .replace("code=\"rate_limited\"} 1", "code=\"rate_limited\"} 5")
                .replace("direction=\"out\"} 2", "direction=\"out\"} 6")
                .replace("to=\"open\"} 0", "to=\"open\"} 1")
                .replace("le=\"0.001\"} 4", "le=\"0.001\"} 14")
                .replace("le=\"0.01\"} 8", "le=\"0.01\"} 18")
                .replace("le=\"+Inf\"} 10", "le=\"+Inf\"} 20"),
        );
        let rows = rows(&before, &now, 2.0);
        let shards: Vec<&str> = rows.iter().map(|r| r.shard.as_str()).collect();
        assert_eq!(shards, ["0", "1", "all"]);
        let r0 = &rows[0];
        assert_eq!(r0.requests_per_s, 10.0);
        assert_eq!(r0.errors_per_s, 2.0);
        assert_eq!(r0.errors["rate_limited"], 4.0);
        assert_eq!(r0.circuits_opened, 1.0);
        assert_eq!(r0.p50, Some(0.0005));
        assert!((r0.p99.unwrap() - 0.00099).abs() < 1e-12, "{:?}", r0.p99);
        assert_eq!(rows[1].crossings_per_s, 2.0);
        assert_eq!(rows[1].p50, None);
        let frame = plain_frame("title", &rows);
        assert!(
            frame.contains("errors by code: rate_limited (shard 0 4)"),
            "{frame}"
        );
        assert!(frame.contains("stalled shards: 1"), "{frame}");
        assert_eq!(rows[0].nats, Some((1, 1)));
        assert_eq!(rows[1].nats, None);
        assert_eq!((rows[2].nats, rows[2].stalled), (Some((1, 1)), 1));
        assert!(rows[1].alarm() && rows[2].alarm() && !rows[0].alarm());
        let all: Vec<&str> = frame.lines().nth(4).unwrap().split_whitespace().collect();
        assert_eq!(all[0], "all");
        assert_eq!(all[8..], ["1/1", "1"]);
        assert!(!frame.contains('\x1b'));
        let header = frame.lines().nth(1).unwrap();
        assert_eq!(header.split_whitespace().collect::<Vec<_>>(), COLUMNS);
        let row0: Vec<&str> = frame.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(
            row0,
            ["0", "10.0", "500us", "990us", "2.0", "0.0", "0.0", "1", "up", "no"]
        );
    }

    #[test]
    fn shards_sort_numerically_with_all_last() {
        let text = (0..12)
            .map(|i| format!("{LATENCY_COUNT}{{shard=\"{i}\"}} 0\n"))
            .collect::<String>()
            + "shardline_decision_latency_seconds_count{shard=\"all\"} 0\n";
        let s = snapshot(&text);
        let order: Vec<String> = rows(&s, &s, 1.0).into_iter().map(|r| r.shard).collect();
        assert_eq!(order[..3], ["0", "1", "2"]);
        assert_eq!(order[11], "11");
        assert_eq!(order[12], "all");
    }

    #[test]
    fn latencies_are_short() {
        assert_eq!(format_seconds(None), "-");
        assert_eq!(format_seconds(Some(0.000_045)), "45us");
        assert_eq!(format_seconds(Some(0.0123)), "12.30ms");
        assert_eq!(format_seconds(Some(1.5)), "1.50s");
    }
}
