//! Running `shardline bench` as a user does (the built binary) and checking its report.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub fn bench(args: &[&str], out: &Path) -> (Output, Value) {
    bench_exit(args, out, 0)
}

/// Runs the bench expecting exit `code` (3: the run measured failures); the report is
/// written either way.
pub fn bench_exit(args: &[&str], out: &Path, code: i32) -> (Output, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run shardline bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit {:?}: {stderr}",
        output.status
    );
    let text = std::fs::read_to_string(out).unwrap_or_else(|e| panic!("no report ({e}): {stderr}"));
    let report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (output, report)
}

pub fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: {report}"))
}

/// `sent == answered + errors + sheds + timeouts`, recomputed from the report itself.
pub fn assert_counts_add_up(report: &Value) {
    let parts = ["answered", "errors_total", "sheds_total", "timeouts_total"];
    let sum: u64 = parts.iter().map(|k| count(report, k)).sum();
    assert_eq!(count(report, "sent"), sum, "{report}");
    assert_eq!(report["counts_ok"], true);
    let by_code: u64 = report["errors_by_code"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_code, count(report, "errors_total"));
}

/// The spectrum runs from p0 through p99.99 to the max `latency_us` reports, monotone.
pub fn assert_spectrum(report: &Value) {
    let points = report["latency_spectrum"]
        .as_array()
        .expect("latency_spectrum");
    assert!(points.len() >= 51, "{} points", points.len());
    let at = |i: usize| {
        (
            points[i]["quantile"].as_f64().unwrap(),
            count(&points[i], "us"),
        )
    };
    assert_eq!(at(0).0, 0.0);
    assert_eq!(
        at(points.len() - 1),
        (1.0, count(&report["latency_us"], "max"))
    );
    assert!(points.iter().any(|p| p["quantile"] == 0.9999), "no p99.99");
    assert!((1..points.len()).all(|i| at(i - 1).0 < at(i).0 && at(i - 1).1 <= at(i).1));
}

/// One entry per second of a `seconds` s window (and at most one more for answers still
/// in flight when it closed), which together hold every answer and failure of the run.
pub fn assert_timeline(report: &Value, seconds: u64) {
    let timeline = report["timeline"].as_array().expect("timeline");
    let len = timeline.len() as u64;
    assert!(
        (seconds..=seconds + 1).contains(&len),
        "{len} seconds: {report}"
    );
    let mut answers = 0.0;
    let mut errors = 0;
    for (i, s) in timeline.iter().enumerate() {
        assert_eq!(count(s, "t_s"), i as u64);
        answers += s["rps"].as_f64().unwrap();
        errors += count(s, "errors");
        if let (Some(p50), Some(p99), Some(max)) = (
            s["p50_us"].as_u64(),
            s["p99_us"].as_u64(),
            s["max_us"].as_u64(),
        ) {
            assert!(p50 <= p99 && p99 <= max, "{s}");
        }
    }
    // Whole seconds: each second's rate is its count of answers.
    assert_eq!(answers as u64, count(report, "answered"), "{report}");
    let failed = ["errors_total", "sheds_total", "timeouts_total"].map(|k| count(report, k));
    assert_eq!(errors, failed.iter().sum::<u64>());
    assert_eq!(count(report, "timeline_late"), 0);
    assert!(
        timeline[0]["p99_us"].as_u64().is_some(),
        "answers in the first second"
    );
}
