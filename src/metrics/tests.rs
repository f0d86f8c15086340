use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

/// A sample: metric name and its labels, sorted.
type Key = (String, Vec<(String, String)>);

/// A strict reader of the exposition format, enough to check what `render` writes.
#[derive(Default)]
struct Parsed {
    types: HashMap<String, String>,
    samples: BTreeMap<Key, f64>,
    /// Families in the order their TYPE lines appear.
    order: Vec<String>,
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label =\"");
        assert!(is_label_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("closing quote");
            match c {
                '\\' => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    labels.sort();
    labels
}

fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut helped = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_metric_name(name), "{name}");
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
            let first = p.types.insert(name.to_owned(), kind.to_owned());
            assert!(first.is_none(), "TYPE twice for {name}");
            p.order.push(name.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("}"))),
                None => (series, Vec::new()),
            };
            assert!(is_metric_name(name), "{name}");
            let family = family_of(name, &p.types);
            assert_eq!(p.order.last().map(String::as_str), Some(family), "{line}");
            let value: f64 = value.replace("+Inf", "inf").parse().expect(line);
            let dup = p.samples.insert((name.to_owned(), labels), value);
            assert!(dup.is_none(), "duplicate series {line}");
        }
    }
    p
}

impl Parsed {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }
}

fn two_shards() -> (ShardMetrics, ShardMetrics) {
    let (a, b) = (ShardMetrics::new(), ShardMetrics::new());
    a.decision(Reason::Sticky).add(3);
    a.decision(Reason::Weighted).inc();
    b.decision(Reason::Weighted).add(10);
    b.error(ErrorCode::RateLimited).add(2);
    a.shed(ShedCause::RingFull).inc();
    a.handoffs_out.add(5);
    b.handoffs_in.add(5);
    b.table_generation.set(7);
    a.table_generation.set(6);
    a.extension_call(ExtensionStatus::Timeout).inc();
    a.result(ExecStatus::Cancelled).inc();
    for ns in [100, 250, 251, 3_000, 2_000_000_000] {
        a.decision_latency.observe(ns);
    }
    b.decision_latency.observe(1_500);
    (a, b)
}

fn rendered(shards: &[&ShardMetrics], extra: &[ExtraMetric]) -> String {
    let snapshots: Vec<ShardSnapshot> = shards.iter().map(|m| m.snapshot()).collect();
    let mut out = String::new();
    render(&mut out, &snapshots, extra);
    out
}

#[test]
fn counter_and_gauge_basics() {
    let c = Counter::new();
    c.inc();
    c.add(41);
    assert_eq!(c.get(), 42);
    let g = Gauge::new();
    g.inc();
    g.inc();
    g.dec();
    assert_eq!(g.get(), 1);
    g.dec();
    g.dec();
    assert_eq!(g.get(), 0, "a gauge stops at zero");
    g.set(9);
    assert_eq!(g.get(), 9);
}

/// A value lands in the first bucket whose bound is at least the value (`le` semantics).
#[test]
fn histogram_buckets() {
    let h = Histogram::new();
    for ns in [0, 250, 251, 1_000_000_000, 1_000_000_001] {
        h.observe(ns);
    }
    let s = h.snapshot();
    assert_eq!(s.buckets[0], 2, "0 and 250 are ≤ 250");
    assert_eq!(s.buckets[1], 1, "251 is ≤ 500");
    assert_eq!(s.buckets[LATENCY_BUCKETS - 2], 1, "1 s is ≤ 1 s");
    assert_eq!(s.buckets[LATENCY_BUCKETS - 1], 1, "above 1 s is +Inf");
    assert_eq!(s.count(), 5);
    assert_eq!(s.sum_ns, 2_000_000_502);
}

/// Indexing by `as usize` is valid only while declaration order matches `ALL`.
#[test]
fn enum_casts_match_all_order() {
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
    for (i, c) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
    }
    for (i, s) in ExecStatus::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
    for (i, s) in EXTENSION_STATUSES.iter().enumerate() {
        assert_eq!(extension_index(*s), i);
    }
}

#[test]
fn seconds_are_exact_decimals() {
    let cases = [
        (0, "0"),
        (250, "0.00000025"),
        (1_000, "0.000001"),
        (500_000_000, "0.5"),
        (1_000_000_000, "1"),
        (12_345_678_901, "12.345678901"),
    ];
    for (ns, text) in cases {
        let mut out = String::new();
        push_seconds(&mut out, ns);
        assert_eq!(out, text);
    }
}

/// The whole scrape parses; every family has HELP and TYPE once, before its samples.
#[test]
fn render_is_well_formed() {
    let (a, b) = two_shards();
    let text = rendered(&[&a, &b], &[]);
    assert!(text.ends_with('\n'));
    let p = parse(&text);
    let expected: HashSet<&str> = family_names().collect();
    let seen: HashSet<&str> = p.order.iter().map(String::as_str).collect();
    assert_eq!(seen, expected);
    assert_eq!(p.order.len(), expected.len());
    for name in &p.order {
        assert!(name.starts_with("shardline_"), "{name}");
        if p.types[name] == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
}

/// `shard="all"` is the sum of the shards, for every summed series.
#[test]
fn totals_are_sums() {
    let (a, b) = two_shards();
    let p = parse(&rendered(&[&a, &b], &[]));
    let mut checked = 0;
    for ((name, labels), value) in &p.samples {
        if !labels.contains(&("shard".into(), ALL_SHARDS.into())) {
            continue;
        }
        let per_shard: f64 = ["0", "1"]
            .iter()
            .map(|shard| {
                let mut l = labels.clone();
                l.retain(|(k, _)| k != "shard");
                l.push(("shard".into(), shard.to_string()));
                l.sort();
                p.samples[&(name.clone(), l)]
            })
            .sum();
        assert_eq!(*value, per_shard, "{name} {labels:?}");
        checked += 1;
    }
    assert!(checked > 50);
    let weighted = [("shard", "all"), ("reason", "weighted")];
    assert_eq!(p.get("shardline_decisions_total", &weighted), Some(11.0));
    let limited = [("shard", "all"), ("code", "rate_limited")];
    assert_eq!(p.get("shardline_errors_total", &limited), Some(2.0));
    let generation = "shardline_routing_table_generation";
    assert_eq!(p.get(generation, &[("shard", "1")]), Some(7.0));
    assert_eq!(p.get(generation, &[("shard", "all")]), None, "no total");
}

/// Buckets are cumulative and monotone, end in `+Inf` equal to `_count`, and `_sum` is
/// in seconds.
#[test]
fn histogram_rendering() {
    let (a, b) = two_shards();
    let p = parse(&rendered(&[&a, &b], &[]));
    let name = "shardline_decision_latency_seconds";
    for shard in ["0", "1", "all"] {
        // (le, cumulative count), ordered by the numeric bound.
        let mut buckets: Vec<(f64, f64)> = p
            .samples
            .iter()
            .filter(|((metric, labels), _)| {
                *metric == format!("{name}_bucket")
                    && labels.iter().any(|(k, v)| k == "shard" && v == shard)
            })
            .map(|((_, labels), value)| {
                let le = &labels.iter().find(|(k, _)| k == "le").unwrap().1;
                (le.replace("+Inf", "inf").parse().unwrap(), *value)
            })
            .collect();
        buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
        assert_eq!(buckets.len(), LATENCY_BUCKETS);
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "shard {shard}"
        );
        assert_eq!(buckets.last().unwrap().0, f64::INFINITY);
        let total = p.get(&format!("{name}_count"), &[("shard", shard)]);
        assert_eq!(Some(buckets.last().unwrap().1), total);
    }
    let le = |s: &str| p.get(&format!("{name}_bucket"), &[("shard", "0"), ("le", s)]);
    assert_eq!(le("0.00000025"), Some(2.0));
    assert_eq!(le("0.0000005"), Some(3.0));
    assert_eq!(le("1"), Some(4.0));
    assert_eq!(le("+Inf"), Some(5.0));
    let sum = p.get(&format!("{name}_sum"), &[("shard", "all")]).unwrap();
    assert!((sum - 2.000_005_101).abs() < 1e-12, "{sum}");
}

/// Bucket bounds ascend in the order rendered (a parser would otherwise reorder them).
#[test]
fn bucket_bounds_ascend_in_output() {
    let text = rendered(&[&ShardMetrics::new()], &[]);
    let bounds: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("shardline_decision_latency_seconds_bucket{shard=\"0\""))
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            le.replace("+Inf", "inf").parse().unwrap()
        })
        .collect();
    assert_eq!(bounds.len(), LATENCY_BUCKETS);
    assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    for (bound, ns) in bounds.iter().zip(LATENCY_BOUNDS_NS) {
        assert_eq!(*bound, ns as f64 / 1e9);
    }
}

#[test]
fn extra_metrics() {
    let extra = [
        ExtraMetric::gauge("shardline_ring_depth", "Items waiting in a ring.", 3.0)
            .label("from", 0)
            .label("to", 1),
        ExtraMetric::gauge("shardline_nats_connected", "1 if NATS is connected.", 1.0),
        ExtraMetric::gauge("shardline_ring_depth", "ignored", 0.0)
            .label("from", 1)
            .label("to", 0),
        ExtraMetric::counter("shardline_nats_reconnects_total", "Reconnects.", 2.0),
        ExtraMetric::gauge("bad name", "skipped", 1.0),
        ExtraMetric::gauge("shardline_decisions_total", "clash: skipped", 1.0),
        ExtraMetric::gauge("shardline_decision_latency_seconds_bucket", "skipped", 1.0),
        ExtraMetric::gauge("shardline_x", "bad label", 1.0).label("__x", 1),
        ExtraMetric::gauge("shardline_y", "dup label", 1.0)
            .label("a", 1)
            .label("a", 2),
        ExtraMetric::gauge("shardline_policies_loaded", "q\"uote\\", f64::NAN)
            .label("tenant", "a\"b\\c\nd"),
        ExtraMetric::gauge("shardline_inf", "inf", f64::INFINITY),
    ];
    let text = rendered(&[&ShardMetrics::new()], &extra);
    let p = parse(&text);
    let depth = "shardline_ring_depth";
    assert_eq!(p.types[depth], "gauge");
    assert_eq!(p.get(depth, &[("from", "0"), ("to", "1")]), Some(3.0));
    assert_eq!(p.get(depth, &[("from", "1"), ("to", "0")]), Some(0.0));
    assert_eq!(p.types["shardline_nats_reconnects_total"], "counter");
    assert_eq!(p.get("shardline_nats_connected", &[]), Some(1.0));
    assert!(p
        .get("shardline_policies_loaded", &[("tenant", "a\"b\\c\nd")])
        .unwrap()
        .is_nan());
    assert_eq!(p.get("shardline_inf", &[]), Some(f64::INFINITY));
    for skipped in ["bad name", "shardline_x", "shardline_y"] {
        assert!(!p.types.contains_key(skipped), "{skipped}");
    }
    assert_eq!(text.matches("# TYPE shardline_decisions_total").count(), 1);
}

#[test]
fn no_shards_renders_zero_totals() {
    let p = parse(&rendered(&[], &[]));
    let all = [("shard", "all"), ("reason", "sticky")];
    assert_eq!(p.get("shardline_decisions_total", &all), Some(0.0));
    let count = "shardline_decision_latency_seconds_count";
    assert_eq!(p.get(count, &[("shard", "all")]), Some(0.0));
}

#[test]
fn snapshot_value_lookup() {
    let (a, _) = two_shards();
    let s = a.snapshot();
    assert_eq!(s.value("shardline_decisions_total", "sticky"), Some(3));
    assert_eq!(s.value("shardline_decisions_total", "nope"), None);
    assert_eq!(s.value("nope", ""), None);
}

/// One writer thread counting while another reads: the reader never sees a counter, a
/// histogram bucket or a histogram count go down, the count never trails what the sum
/// implies, and once the writer stops the reader sees every increment.
#[test]
fn single_writer_reader_never_sees_a_decrease() {
    const INCREMENTS: u64 = 200_000;
    let metrics = Arc::new(ShardMetrics::new());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (metrics, done) = (Arc::clone(&metrics), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 0..INCREMENTS {
                metrics.decision(Reason::Weighted).inc();
                metrics.decision_latency.observe(1_000 + i % 5);
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut last = (0, HistogramSnapshot::EMPTY);
    loop {
        let finished = done.load(Ordering::Acquire);
        let count = metrics.decision(Reason::Weighted).get();
        let histogram = metrics.decision_latency.snapshot();
        assert!(count >= last.0, "counter went from {} to {count}", last.0);
        for (now, before) in histogram.buckets.iter().zip(last.1.buckets) {
            assert!(*now >= before);
        }
        // Every observation in the sum is in the buckets: sum ≤ count × largest value.
        assert!(histogram.sum_ns <= histogram.count() * 1_004);
        last = (count, histogram);
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(metrics.decision(Reason::Weighted).get(), INCREMENTS);
    assert_eq!(metrics.decision_latency.snapshot().count(), INCREMENTS);
}

/// Two shards' metrics never share a cache line.
#[test]
fn shard_metrics_are_line_aligned() {
    assert_eq!(std::mem::align_of::<ShardMetrics>(), 128);
}
