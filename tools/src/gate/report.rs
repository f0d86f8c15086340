//! Perf reports as the gate reads them: a flat map of metric name → number, from either
//! format, and the candidate as the median of several runs.
//!
//! Formats (both may be in one document; where they name the same metric they must agree):
//! - Beamline's and the plain one: a `metrics` object of numbers (`env`, `git`,
//!   `timestamp` and other top-level keys are ignored).
//! - Shardline's bench report, flattened by `BENCH_FIELDS` and `latency_us`: each
//!   `latency_us.<q>` becomes `latency_<q>_us` (`p50`, `p90`, `p99`, `p999`, `max`, and any
//!   other quantile the load generator adds).
//!
//! A metric whose value is `null` is "not measured" (RSS of a remote server, say) and is
//! treated as absent; any other non-number is unusable input. A bench latency that is
//! `null` is different: the run had no successful answer, so there is no latency to judge,
//! and a rule on it makes the input unusable (`mod.rs`), never a pass or a skip.
//!
//! `conditions` (an object) says what the run was measured under; `conditions` compares
//! two of them.
//!
//! Why the median of runs and not the mean or the best: on a shared machine one run in a
//! few is hit by a neighbour; the median ignores that run instead of averaging it in, and
//! unlike the best run it does not reward luck.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::json::{child, number, object, parse, ROOT};
use super::{GateError, METRICS_MAX};

/// Metric name → value, sorted by name.
pub type Metrics = BTreeMap<String, f64>;

/// Top-level fields of a Shardline bench report and the metric each becomes.
pub const BENCH_FIELDS: [(&str, &str); 5] = [
    ("achieved_rps", "rps"),
    ("errors_total", "errors_total"),
    ("sheds_total", "sheds_total"),
    ("timeouts_total", "timeouts_total"),
    ("rss_mb", "rss_mb"),
];

/// The bench report's object of latency quantiles, in microseconds.
pub const BENCH_LATENCY_KEY: &str = "latency_us";

/// Beamline's (and the plain format's) object of metrics.
pub const METRICS_KEY: &str = "metrics";

/// The metric name of a bench report's `latency_us.<quantile>`.
pub fn latency_metric(quantile: &str) -> String {
    format!("latency_{quantile}_us")
}

/// The object of a report that records what it was measured under (`shardline bench`
/// writes it; a plain `metrics` report may carry one too).
pub const CONDITIONS_KEY: &str = "conditions";

/// One report as the gate reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportDoc {
    pub metrics: Metrics,
    /// Latency metrics the report has as `null` (the run had no successful answer), each
    /// with its JSON path: unusable for a rule, unlike a metric that is simply absent.
    pub null_latency: BTreeMap<String, String>,
    /// `conditions`; `None` when the report does not record them.
    pub conditions: Option<Map<String, Value>>,
}

/// Reads one report (either format) into its metrics.
pub fn parse_report(file: &Path, bytes: &[u8]) -> Result<Metrics, GateError> {
    parse_document(file, bytes).map(|doc| doc.metrics)
}

/// Reads one report: its metrics, the latencies it has as `null`, its conditions.
pub fn parse_document(file: &Path, bytes: &[u8]) -> Result<ReportDoc, GateError> {
    let doc = parse(file, bytes)?;
    let top = object(file, ROOT, &doc)?;
    let is_bench = top.contains_key(BENCH_LATENCY_KEY)
        || BENCH_FIELDS
            .iter()
            .any(|(field, _)| top.contains_key(*field));
    if !is_bench && !top.contains_key(METRICS_KEY) {
        return Err(GateError::NotAReport {
            file: file.to_path_buf(),
        });
    }
    let mut out = ReportDoc::default();
    if is_bench {
        bench_metrics(file, top, &mut out)?;
    }
    if let Some(value) = top.get(METRICS_KEY) {
        let path = child(ROOT, METRICS_KEY);
        for (name, value) in object(file, &path, value)? {
            insert(file, &child(&path, name), name, value, &mut out.metrics)?;
        }
    }
    if let Some(value) = top.get(CONDITIONS_KEY) {
        let path = child(ROOT, CONDITIONS_KEY);
        out.conditions = Some(object(file, &path, value)?.clone());
    }
    Ok(out)
}

fn bench_metrics(
    file: &Path,
    top: &Map<String, Value>,
    out: &mut ReportDoc,
) -> Result<(), GateError> {
    for (field, metric) in BENCH_FIELDS {
        if let Some(value) = top.get(field) {
            insert(file, &child(ROOT, field), metric, value, &mut out.metrics)?;
        }
    }
    if let Some(value) = top.get(BENCH_LATENCY_KEY) {
        let path = child(ROOT, BENCH_LATENCY_KEY);
        for (quantile, value) in object(file, &path, value)? {
            let metric = latency_metric(quantile);
            let at = child(&path, quantile);
            if value.is_null() {
                out.null_latency.insert(metric, at);
            } else {
                insert(file, &at, &metric, value, &mut out.metrics)?;
            }
        }
    }
    Ok(())
}

/// Adds one metric: `null` is absent; a second value for the same name must agree.
fn insert(
    file: &Path,
    path: &str,
    name: &str,
    value: &Value,
    out: &mut Metrics,
) -> Result<(), GateError> {
    if value.is_null() {
        return Ok(());
    }
    let value = number(file, path, value)?;
    match out.get(name) {
        Some(&first) if first != value => Err(GateError::ConflictingMetric {
            file: file.to_path_buf(),
            path: path.to_string(),
            metric: name.to_string(),
            first,
            second: value,
        }),
        Some(_) => Ok(()),
        None if out.len() == METRICS_MAX => Err(GateError::TooMany {
            file: file.to_path_buf(),
            path: path.to_string(),
            what: "metrics",
            max: METRICS_MAX,
        }),
        None => {
            out.insert(name.to_string(), value);
            Ok(())
        }
    }
}

/// What the candidate says about one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Every run reports it: the median of the runs.
    Median(f64),
    /// No run reports it.
    Missing,
    /// Some runs do not report it (`missing` of `runs`): not comparable.
    Partial { missing: usize, runs: usize },
}

/// The candidate: one or more runs of the same benchmark.
#[derive(Debug, Clone)]
pub struct Candidate {
    runs: usize,
    values: BTreeMap<String, Vec<f64>>,
}

impl Candidate {
    /// Gathers the runs; there is at least one (the caller checked).
    pub fn from_runs(runs: &[Metrics]) -> Candidate {
        assert!(!runs.is_empty(), "a candidate has at least one run");
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in runs {
            for (name, &value) in run {
                values.entry(name.clone()).or_default().push(value);
            }
        }
        Candidate {
            runs: runs.len(),
            values,
        }
    }

    /// How many runs the candidate has.
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Whether at least one run reports the metric.
    pub fn reports(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn sample(&self, name: &str) -> Sample {
        match self.values.get(name) {
            None => Sample::Missing,
            Some(values) if values.len() < self.runs => Sample::Partial {
                missing: self.runs - values.len(),
                runs: self.runs,
            },
            Some(values) => Sample::Median(median(values)),
        }
    }
}

/// The median; of an even count, the mean of the two middle values.
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "the median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> Result<Metrics, GateError> {
        parse_report(Path::new("r.json"), text.as_bytes())
    }

    const BENCH: &str = r#"{
        "latency_us": {"p50": 560, "p90": 1200, "p99": 5280, "p999": 9000, "max": 12000},
        "achieved_rps": 35000, "errors_total": 0, "sheds_total": 1, "timeouts_total": 2,
        "rss_mb": 41.5, "target_rps": null, "mode": "closed", "env": {"cores": 2}
    }"#;

    /// The bench report contract flattens into the documented metric names.
    #[test]
    fn bench_report_flattens_into_metric_names() {
        let m = report(BENCH).unwrap();
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "errors_total",
                "latency_max_us",
                "latency_p50_us",
                "latency_p90_us",
                "latency_p999_us",
                "latency_p99_us",
                "rps",
                "rss_mb",
                "sheds_total",
                "timeouts_total"
            ]
        );
        assert_eq!(m["rps"], 35000.0);
        assert_eq!(m["latency_p99_us"], 5280.0);
        assert_eq!(m["rss_mb"], 41.5);
    }

    #[test]
    fn beamline_and_plain_reports_read_their_metrics_object() {
        let m = report(r#"{"timestamp": "t", "git": {}, "metrics": {"rps": 62, "x": 1.5}}"#);
        assert_eq!(
            m.unwrap(),
            Metrics::from([("rps".into(), 62.0), ("x".into(), 1.5)])
        );
        assert!(report(r#"{"metrics": {}}"#).unwrap().is_empty());
    }

    /// `null` means "not measured": absent, not an error.
    #[test]
    fn null_metrics_are_absent() {
        let m = report(r#"{"latency_us": {"p99": 10}, "rss_mb": null, "metrics": {"a": null}}"#);
        assert_eq!(m.unwrap(), Metrics::from([("latency_p99_us".into(), 10.0)]));
    }

    #[test]
    fn both_shapes_merge_when_they_agree() {
        let m = report(r#"{"achieved_rps": 10, "metrics": {"rps": 10, "cpu": 3}}"#).unwrap();
        assert_eq!(m.len(), 2);
        let err = report(r#"{"achieved_rps": 10, "metrics": {"rps": 11}}"#).unwrap_err();
        assert!(
            matches!(&err, GateError::ConflictingMetric { path, .. } if path == "$.metrics.rps"),
            "{err:?}"
        );
    }

    /// Every unusable report is a typed error naming the file and, for content, the path.
    #[test]
    fn unusable_reports_name_file_and_path() {
        let cases = [
            (
                r#"{"metrics": {"rps": "62"}}"#,
                "r.json: $.metrics.rps: expected a number",
            ),
            (
                r#"{"latency_us": {"p99": [1]}}"#,
                "r.json: $.latency_us.p99: expected a number",
            ),
            (
                r#"{"latency_us": 5}"#,
                "r.json: $.latency_us: expected an object",
            ),
            (
                r#"{"achieved_rps": true}"#,
                "r.json: $.achieved_rps: expected a number",
            ),
            (
                r#"{"metrics": [1]}"#,
                "r.json: $.metrics: expected an object, found an array",
            ),
            (r#"[1, 2]"#, "r.json: $: expected an object, found an array"),
            (r#"{"env": {}}"#, "r.json: $: not a perf report"),
            (
                r#"{"metrics": {"a": 1, "a": 2}}"#,
                "r.json: $.metrics: duplicate key \"a\"",
            ),
            (
                r#"{"metrics": {"a": 1e999}}"#,
                "r.json: not valid JSON (line 1",
            ),
            ("", "r.json: not valid JSON"),
        ];
        for (text, message) in cases {
            let err = report(text).unwrap_err();
            assert!(err.to_string().starts_with(message), "{text}: {err}");
        }
    }

    #[test]
    fn metrics_are_bounded() {
        let many: Vec<String> = (0..=METRICS_MAX).map(|i| format!("\"m{i}\": 1")).collect();
        let err = report(&format!("{{\"metrics\": {{{}}}}}", many.join(","))).unwrap_err();
        assert!(
            matches!(
                err,
                GateError::TooMany {
                    max: METRICS_MAX,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0]), 5.0);
        assert_eq!(median(&[300.0, 100.0, 200.0]), 200.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    /// One noisy run out of three does not move the candidate; a metric some runs lack is
    /// reported as partial, not silently taken from the others.
    #[test]
    fn candidate_is_the_median_of_its_runs() {
        let run = |p99: f64| Metrics::from([("latency_p99_us".into(), p99)]);
        let mut runs = vec![run(180.0), run(9000.0), run(190.0)];
        let c = Candidate::from_runs(&runs);
        assert_eq!(c.runs(), 3);
        assert_eq!(c.sample("latency_p99_us"), Sample::Median(190.0));
        assert_eq!(c.sample("rps"), Sample::Missing);
        runs[1].insert("rps".into(), 1.0);
        let c = Candidate::from_runs(&runs);
        assert_eq!(
            c.sample("rps"),
            Sample::Partial {
                missing: 2,
                runs: 3
            }
        );
        assert!(c.reports("rps"));
    }
}
