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
