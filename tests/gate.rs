//! `shardline gate` run as a build would: the built binary, real files, exit codes 0 (pass),
//! 1 (fail) and 2 (unusable input). Beamline's own baseline and policy are read from
//! `SHARDLINE_COMPAT_DIR` or `../shared/compat/beamline` beside the checkout, never copied
//! into the project; those tests print a note and pass when the folder is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("gate")
        .args(args)
        .output()
        .expect("run shardline gate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it is not the one expected.
fn expect_exit(out: &Output, code: i32) {
    let shown = format!("{}{}", stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(code), "{shown}");
}

/// A fresh directory per test (tests run in parallel in one process).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardline-gate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn compat_perf_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHARDLINE_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/beamline")
        });
    let perf = dir.join("perf");
    if perf.join("baseline_cp1.json").is_file() && perf.join("policy_cp1.json").is_file() {
        Some(perf)
    } else {
        println!(
            "note: {} absent, Beamline gate test skipped",
            perf.display()
        );
        None
    }
}

/// A Beamline-format candidate, `baseline_cp1.json`'s metrics with p99 and rps given.
fn beamline_candidate(p99_ms: u32, rps: u32) -> String {
    format!(
        r#"{{"timestamp": "2026-11-27T00:00:00Z", "git": {{"commit": "c"}}, "env": {{}},
            "metrics": {{"rps": {rps}, "latency_p95_ms": 100, "latency_p99_ms": {p99_ms},
                         "errors_total": 0, "backpressure_active_total": 0,
                         "mem_mb_total_erlang": 100}}}}"#
    )
}

/// Beamline's own policy and baseline: a candidate within every budget passes (exit 0),
/// one whose p99 is past +20 % fails (exit 1) on exactly that rule.
#[test]
fn beamline_policy_passes_and_fails() {
    let Some(perf) = compat_perf_dir() else {
        return;
    };
    let dir = temp_dir("beamline");
    let base = perf.join("baseline_cp1.json");
    let policy = perf.join("policy_cp1.json");
    let (base, policy) = (base.to_str().unwrap(), policy.to_str().unwrap());
    let good = write(&dir, "good.json", &beamline_candidate(240, 56));
    // Beamline's format records no conditions: judged only when told to.
    let args = [
        "--baseline",
        base,
        "--policy",
        policy,
        "--candidate-exit-code",
        "0",
        "--allow-different-conditions",
    ];
    let out = gate(&[&args[..], &["--candidate", &good]].concat());
    expect_exit(&out, 0);
    assert!(stdout(&out).contains(
        "PASS latency_p99_ms relative max_pct_increase 20: base 200 candidate 240 limit 240\n"
    ));
    assert!(stdout(&out).starts_with("conditions: "), "{}", stdout(&out));
    assert!(stdout(&out)
        .ends_with("PASS candidate_exit_code equals 0: candidate 0\ngate: PASS (7 rules)\n"));

    let bad = write(&dir, "bad.json", &beamline_candidate(241, 56));
    let out = gate(&[&args[..], &["--candidate", &bad]].concat());
    expect_exit(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains(
            "FAIL latency_p99_ms relative max_pct_increase 20: base 200 candidate 241 limit 240\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("gate: FAIL (1 of 7 rules failed)\n"),
        "{text}"
    );
}

/// Beamline's policy requires the candidate's exit code to be 0: non-zero or unknown fails.
#[test]
fn beamline_policy_requires_exit_code_zero() {
    let Some(perf) = compat_perf_dir() else {
        return;
    };
    let dir = temp_dir("exit-code");
    let base = perf.join("baseline_cp1.json");
    let policy = perf.join("policy_cp1.json");
    let good = write(&dir, "good.json", &beamline_candidate(200, 62));
    let args = [
        "--baseline",
        base.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--candidate",
        &good,
        "--allow-different-conditions",
    ];
    let out = gate(&[&args[..], &["--candidate-exit-code", "1"]].concat());
    expect_exit(&out, 1);
    assert!(stdout(&out).contains("FAIL candidate_exit_code equals 0: candidate 1\n"));
    let out = gate(&args);
    expect_exit(&out, 1);
    assert!(stdout(&out).contains("FAIL candidate_exit_code equals 0: required by the policy"));
}

/// The conditions of an open-loop embedded run at `rate` req/s, as the bench writes them.
fn conditions(rate: u32) -> String {
    format!(
        r#"{{"target": "embedded", "transport": "http", "mode": "open-loop",
            "rate_rps": {rate}.0, "concurrency": null, "connections": 32, "pipeline": 1,
            "duration_s": 10.0, "shards": 2, "compare_bare": true}}"#
    )
}

/// A Shardline bench report with the given p50, p99 and achieved rps, measured at 10,000
/// req/s.
fn bench_report(p50: u32, p99: u32, rps: u32) -> String {
    bench_report_at(p50, p99, rps, &conditions(10_000))
}

fn bench_report_at(p50: u32, p99: u32, rps: u32, conditions: &str) -> String {
    format!(
        r#"{{"env": {{"cores": 2}}, "achieved_rps": {rps}, "errors_total": 0,
            "sheds_total": 0, "timeouts_total": 0, "rss_mb": 40.5,
            "latency_us": {{"p50": {p50}, "p90": 90, "p99": {p99}, "p999": 300, "max": 900}},
            "conditions": {conditions}}}"#
    )
}

/// A candidate measured under other conditions (5,000 req/s, closed loop) than the
/// baseline (10,000 req/s) is refused with exit 2 naming each differing field, nothing
/// judged; with `--allow-different-conditions` it is judged and the differences are
/// printed above the verdict. A report without conditions is refused the same way.
#[test]
fn different_conditions_are_refused_unless_allowed() {
    let dir = temp_dir("conditions");
    let policy = write(&dir, "policy.json", BUDGET_POLICY);
    let base = write(&dir, "base.json", &bench_report(50, 130, 10_000));
    let slower = write(
        &dir,
        "slower.json",
        &bench_report_at(50, 130, 5_000, &conditions(5_000)),
    );
    let args = [
        "--baseline",
        &base,
        "--policy",
        &policy,
        "--candidate",
        &slower,
    ];
    let out = gate(&args);
    expect_exit(&out, 2);
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("slower.json: measured under other conditions than the baseline")
            && stderr(&out).contains("rate_rps (baseline 10000.0, candidate 5000.0)"),
        "{}",
        stderr(&out)
    );
    let out = gate(&[&args[..], &["--allow-different-conditions"]].concat());
    expect_exit(&out, 1);
    let text = stdout(&out);
    assert!(
        text.starts_with("conditions: ") && text.contains("rate_rps (baseline 10000.0"),
        "{text}"
    );
    assert!(
        text.contains("FAIL rps relative max_pct_decrease 10"),
        "{text}"
    );

    let closed = conditions(10_000)
        .replace("\"open-loop\"", "\"closed-loop\"")
        .replace("\"connections\": 32", "\"connections\": 16");
    let closed = write(
        &dir,
        "closed.json",
        &bench_report_at(50, 130, 10_000, &closed),
    );
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        &policy,
        "--candidate",
        &closed,
    ]);
    expect_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("connections (baseline 32, candidate 16)")
            && err.contains("mode (baseline \"open-loop\", candidate \"closed-loop\")"),
        "{err}"
    );

    let old = write(
        &dir,
        "old.json",
        r#"{"achieved_rps": 10000, "errors_total": 0,
            "latency_us": {"p50": 50, "p99": 130}}"#,
    );
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        &policy,
        "--candidate",
        &old,
    ]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("old.json: $.conditions: absent"),
        "{}",
        stderr(&out)
    );
}

/// A report whose run had no successful answer has `null` latencies: a latency rule on it
/// (the policy's, or the default p99 rule) is unusable input, exit 2, not a pass.
#[test]
fn null_latency_is_unusable_for_latency_rules() {
    let dir = temp_dir("null-latency");
    let policy = write(&dir, "policy.json", BUDGET_POLICY);
    let base = write(&dir, "base.json", &bench_report(50, 130, 10_000));
    let failed = format!(
        r#"{{"achieved_rps": 10000, "errors_total": 100000, "sheds_total": 0,
            "timeouts_total": 0, "latency_samples": 0, "rss_mb": 40.5,
            "latency_us": {{"p50": null, "p90": null, "p99": null, "p999": null,
                           "max": null, "mean": null}},
            "conditions": {}}}"#,
        conditions(10_000)
    );
    let failed = write(&dir, "failed.json", &failed);
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        &policy,
        "--candidate",
        &failed,
    ]);
    expect_exit(&out, 2);
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out)
            .contains("failed.json: $.latency_us.p50: null: the run had no successful answer"),
        "{}",
        stderr(&out)
    );
    // The default p99 rule counts too.
    let rps_only = write(
        &dir,
        "rps.json",
        r#"{"rules": {"rps": {"relative": {"max_pct_decrease": 10}}}}"#,
    );
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        &rps_only,
        "--candidate",
        &failed,
    ]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("$.latency_us.p99: null"),
        "{}",
        stderr(&out)
    );
}

/// A policy of our shape with a 150 µs p99 budget (the product target), so that these
/// tests pin the gate's behaviour rather than the repo's current budget.
const BUDGET_POLICY: &str = r#"{
    "version": "shardline-1",
    "rules": {
        "latency_p99_us": {"absolute": {"max": 150}, "relative": {"max_pct_increase": 20}},
        "latency_p50_us": {"relative": {"max_pct_increase": 20}},
        "rps": {"relative": {"max_pct_decrease": 10}},
        "errors_total": {"absolute": {"equals": 0}}
    },
    "gate": {"require_candidate_exit_code_zero": false, "require_all_metrics_present": true}
}"#;

/// A p99-budget policy on bench reports: within the budget passes; past the absolute
/// 150 µs fails on that rule alone.
#[test]
fn budget_policy_on_bench_reports() {
    let dir = temp_dir("ours");
    let policy = write(&dir, "policy.json", BUDGET_POLICY);
    let base = write(&dir, "base.json", &bench_report(50, 130, 10_000));
    let good = write(&dir, "good.json", &bench_report(60, 144, 9_000));
    let args = ["--baseline", &base, "--policy", &policy];
    let out = gate(&[&args[..], &["--candidate", &good]].concat());
    expect_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "PASS errors_total absolute equals 0: base 0 candidate 0 limit 0\n\
         PASS latency_p50_us relative max_pct_increase 20: base 50 candidate 60 limit 60\n\
         PASS latency_p99_us relative max_pct_increase 20: base 130 candidate 144 limit 156\n\
         PASS latency_p99_us absolute max 150: base 130 candidate 144 limit 150\n\
         PASS rps relative max_pct_decrease 10: base 10000 candidate 9000 limit 9000\n\
         SKIP candidate_exit_code equals 0: not required by the policy\n\
         gate: PASS (5 rules, 1 skipped)\n"
    );
    let bad = write(&dir, "bad.json", &bench_report(50, 151, 10_000));
    let out = gate(&[&args[..], &["--candidate", &bad]].concat());
    expect_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("FAIL latency_p99_us absolute max 150: base 130 candidate 151"));
    assert!(text.contains("PASS latency_p99_us relative max_pct_increase 20"));
    assert!(
        text.ends_with("gate: FAIL (1 of 5 rules failed, 1 skipped)\n"),
        "{text}"
    );
}

/// Several runs, as `--candidate` repeated or a `--runs-dir`: each metric is the median,
/// so one noisy run of three does not fail the gate.
#[test]
fn median_of_runs_from_flags_and_directory() {
    let dir = temp_dir("runs");
    let base = write(&dir, "base.json", &bench_report(50, 120, 10_000));
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let r1 = write(&runs, "1.json", &bench_report(50, 130, 10_000));
    let r2 = write(&runs, "2.json", &bench_report(400, 4000, 2_000));
    let r3 = write(&runs, "3.json", &bench_report(52, 125, 9_800));
    write(&runs, "notes.txt", "not a report");
    let policy = write(&dir, "policy.json", BUDGET_POLICY);
    let args = ["--baseline", &base, "--policy", &policy];
    let out = gate(
        &[
            &args[..],
            &["--candidate", &r1, "--candidate", &r2, "--candidate", &r3],
        ]
        .concat(),
    );
    expect_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("candidate: median of 3 runs\n"), "{text}");
    assert!(text.contains("base 120 candidate 130 limit 150"), "{text}");
    let out = gate(&[&args[..], &["--runs-dir", runs.to_str().unwrap()]].concat());
    expect_exit(&out, 0);
    assert_eq!(stdout(&out), text);
}

/// A policy without a p99 rule still gates p99: the default +20 % is added and named.
#[test]
fn default_p99_rule_is_applied_and_named() {
    let dir = temp_dir("default-p99");
    let policy = write(
        &dir,
        "policy.json",
        r#"{"rules": {"rps": {"relative": {"max_pct_decrease": 10}}}}"#,
    );
    let base = write(&dir, "base.json", &bench_report(50, 100, 10_000));
    let cand = write(&dir, "cand.json", &bench_report(50, 121, 10_000));
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        &policy,
        "--candidate",
        &cand,
    ]);
    expect_exit(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains(
            "FAIL latency_p99_us relative max_pct_increase 20: \
             base 100 candidate 121 limit 120 (default rule"
        ),
        "{text}"
    );
}

/// The repo's baseline passes the repo's policy: a gate that failed its own baseline could
/// never pass a build.
#[test]
fn repo_baseline_passes_repo_policy() {
    let args = [
        "--baseline",
        "perf/baseline.json",
        "--policy",
        "perf/policy.json",
    ];
    let out = gate(&[&args[..], &["--candidate", "perf/baseline.json"]].concat());
    expect_exit(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("PASS latency_p99_us"), "{text}");
    assert!(
        text.ends_with("gate: PASS (5 rules, 1 skipped)\n"),
        "{text}"
    );
}

/// Unusable input exits 2 with a message naming the file and, for content, the JSON path;
/// nothing is judged (no verdict on stdout).
#[test]
fn unusable_input_exits_2_naming_file_and_path() {
    let dir = temp_dir("unusable");
    let base = write(&dir, "base.json", &bench_report(50, 120, 10_000));
    let good_policy = "perf/policy.json";
    let cases = [
        (
            "cand",
            "garbage.json",
            "{\"latency_us\": {\"p99\": 1,}",
            "garbage.json: not valid JSON (line 1, column 26): trailing comma",
        ),
        (
            "cand",
            "binary.json",
            "\u{0}\u{1}PNG",
            "binary.json: not valid JSON",
        ),
        (
            "cand",
            "string.json",
            r#"{"metrics": {"rps": "fast"}}"#,
            "string.json: $.metrics.rps: expected a number, found a string",
        ),
        (
            "cand",
            "env-only.json",
            r#"{"env": {}}"#,
            "env-only.json: $: not a perf report",
        ),
        (
            "policy",
            "kind.json",
            r#"{"rules": {"rps": {"percent": {}}}}"#,
            "kind.json: $.rules.rps: unknown rule kind \"percent\"",
        ),
        (
            "policy",
            "neg.json",
            r#"{"rules": {"rps": {"relative": {"max_pct_decrease": -10}}}}"#,
            "neg.json: $.rules.rps.relative.max_pct_decrease: percentage must be zero or more",
        ),
        (
            "policy",
            "flag.json",
            r#"{"rules": {}, "gate": {"require_everything": true}}"#,
            "flag.json: $.gate: unknown gate flag \"require_everything\"",
        ),
        (
            "policy",
            "dup.json",
            r#"{"rules": {"rps": {"absolute": {"min": 1}}, "rps": {"absolute": {"max": 2}}}}"#,
            "dup.json: $.rules: duplicate key \"rps\"",
        ),
    ];
    for (role, name, text, message) in cases {
        let file = write(&dir, name, text);
        let (policy, cand) = if role == "policy" {
            (file.as_str(), base.as_str())
        } else {
            (good_policy, file.as_str())
        };
        let out = gate(&["--baseline", &base, "--policy", policy, "--candidate", cand]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stdout(&out));
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}: {}", stdout(&out));
    }
    let missing = dir.join("missing.json");
    let out = gate(&[
        "--baseline",
        missing.to_str().unwrap(),
        "--policy",
        good_policy,
        "--candidate",
        &base,
    ]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("missing.json: cannot read"),
        "{}",
        stderr(&out)
    );
    let out = gate(&["--baseline", &base, "--policy", good_policy]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("no candidate report"),
        "{}",
        stderr(&out)
    );
    let empty = temp_dir("empty-runs");
    let out = gate(&[
        "--baseline",
        &base,
        "--policy",
        good_policy,
        "--runs-dir",
        empty.to_str().unwrap(),
    ]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("holds no *.json file"),
        "{}",
        stderr(&out)
    );
}

/// `--runs N -- BENCH_ARGS` runs the bench N times and gates on the median: the verdict
/// names the median, and a rule the runs cannot meet (rps at 1,000/s against a 20,000/s
/// baseline, judged although the conditions differ) fails the gate with exit 1.
#[test]
fn runs_benches_and_gates_on_their_median() {
    let out = gate(&[
        "--baseline",
        "perf/baseline.json",
        "--policy",
        "perf/policy.json",
        "--runs",
        "2",
        "--allow-different-conditions",
        "--",
        "--embedded",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--spin-us",
        "0",
    ]);
    expect_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("candidate: median of 2 runs"), "{text}");
    assert!(text.contains("PASS errors_total"), "{text}");
    assert!(text.contains("FAIL rps"), "{text}");
}
