//! `shardline bench` run as a user runs it: the built binary, a real router (embedded, or
//! started here on 127.0.0.1:0), the JSON report read back. Every run is a second or two;
//! they take turns (`serial`), since each one loads both cores.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::bench::{
    assert_counts_add_up, assert_spectrum, assert_timeline, bench, bench_exit, count,
};
use support::process::{RouterProcess, EXIT_WITHIN};
use support::{config_dir, serial, settings, start, without_acme_rate_limits, TempDir};

/// Every field `src/bench/mod.rs` documents for an embedded open-loop run is in the report
/// (the perf gate and the Markdown summary read them by name).
fn assert_documented_fields(report: &Value) {
    let fields = [
        "target",
        "mode",
        "target_rps",
        "achieved_rps",
        "duration_s",
        "warmup_s",
        "connections",
        "threads",
        "pipeline",
        "shards",
        "latency_us",
        "latency_spectrum",
        "timeline",
        "timeline_late",
        "sent",
        "answered",
        "errors_total",
        "errors_by_code",
        "sheds_total",
        "sheds_by_code",
        "timeouts_total",
        "counts_ok",
        "connect_errors",
        "schedule",
        "rss_mb",
        "cpu_s",
        "embedded",
        "config",
        "env",
    ];
    for field in fields {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    for field in ["behind_no_connection", "unsent", "send_lag_us"] {
        assert!(
            report["schedule"].get(field).is_some(),
            "schedule.{field}: {report}"
        );
    }
    for field in ["cpu_model", "cores", "kernel", "git_commit", "command_line"] {
        assert!(report["env"].get(field).is_some(), "env.{field}: {report}");
    }
}

/// The README's one-command demo: an embedded router at 2,000 req/s for 2 s. The report
/// parses, every request is accounted for, the schedule was kept (within 5 %), and the
/// router answered everything.
#[test]
fn embedded_open_loop() {
    let _serial = serial();
    let dir = TempDir::new("bench-open");
    let out = dir.0.join("report.json");
    let args = [
        "--embedded",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--warmup",
        "0.5s",
    ];
    let (output, report) = bench(&args, &out);
    assert_counts_add_up(&report);
    assert_documented_fields(&report);
    assert_eq!(report["mode"], "open-loop");
    assert_eq!(report["embedded"], true);
    let achieved = report["achieved_rps"].as_f64().unwrap();
    assert!(
        (achieved - 2000.0).abs() <= 100.0,
        "achieved {achieved} req/s"
    );
    assert_eq!(count(&report, "errors_total"), 0, "{report}");
    assert_eq!(count(&report, "answered"), count(&report, "sent"));
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(count(&report["latency_us"], key) > 0, "latency_us.{key}");
    }
    assert_spectrum(&report);
    assert_timeline(&report, 2);
    assert!(report["rss_mb"].as_f64().unwrap() > 0.0);
    assert!(report["cpu_s"].as_f64().is_some());
    assert!(report["env"]["command_line"]
        .as_str()
        .unwrap()
        .contains("--rate 2000"));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("answered"), "{summary}");
}

/// Closed loop with 4 connections against a router this test started: a report with the
/// remote target's fields (no process figures, no schedule).
#[test]
fn closed_loop_against_a_running_router() {
    let _serial = serial();
    let dir = config_dir("bench-closed", "");
    let server = start(settings(&dir));
    let target = format!("http://{}", server.local_addr());
    let out = dir.0.join("report.json");
    let args = [
        "--target",
        &target,
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        // Not acme: its 500 req/s rate limit would shed part of a closed loop (exit 3).
        "--tenants",
        "globex,initech",
    ];
    let (_, report) = bench(&args, &out);
    server.stop().unwrap();
    assert_counts_add_up(&report);
    assert_eq!(report["mode"], "closed-loop");
    assert_eq!(report["target"], target.as_str());
    assert_eq!(report["connections"], 4);
    assert_eq!(report["target_rps"], Value::Null);
    assert!(count(&report, "answered") > 0);
    assert_eq!(count(&report, "errors_total"), 0, "{report}");
    assert_spectrum(&report);
    assert_timeline(&report, 1);
    for key in ["rss_mb", "cpu_s", "schedule", "bare"] {
        assert!(report.get(key).is_none(), "{key} in a remote report");
    }
}

/// Errors are counted by the code in the answer: half the requests name a tenant without
/// a policy, and exactly those are `policy_not_found`. The other half go to globex, whose
/// bundled policy has no rate limit (acme's could shed a few as `rate_limited` while a
/// shard's lease is cold on a loaded machine, and they would count as neither).
#[test]
fn errors_are_counted_by_code() {
    let _serial = serial();
    let dir = config_dir("bench-errors", "");
    let server = start(settings(&dir));
    let target = format!("http://{}", server.local_addr());
    let out = dir.0.join("report.json");
    let args = [
        "--target",
        &target,
        "--rate",
        "400",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--tenants",
        "globex,nobody",
        "--max-error-ratio",
        "1",
    ];
    let (_, report) = bench(&args, &out);
    server.stop().unwrap();
    assert_counts_add_up(&report);
    let errors = count(&report, "errors_total");
    assert_eq!(report["errors_by_code"]["policy_not_found"], errors);
    assert!(errors.abs_diff(count(&report, "answered")) <= 1, "{report}");
}

/// A server that accepts and never answers: every request sent ends as a timeout, none is
/// lost, and the run still ends on time.
#[test]
fn silent_server_times_out() {
    let _serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let done_in_thread = Arc::clone(&done);
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !done_in_thread.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
            let mut scratch = [0u8; 4096];
            for s in &mut held {
                s.set_nonblocking(true).unwrap();
                let _ = s.read(&mut scratch);
            }
        }
    });
    let dir = TempDir::new("bench-silent");
    let out = dir.0.join("report.json");
    let target = format!("http://{addr}");
    let args = [
        "--target",
        &target,
        "--rate",
        "50",
        "--connections",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--timeout-ms",
        "200",
    ];
    // Without --tenants the silent target is first asked for its tenants, in bounded time.
    let output = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run shardline bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("GET /v1/tenants: no answer within 2000 ms; give --tenants"),
        "{stderr}"
    );
    let args = [&args[..], &["--tenants", "acme"]].concat();
    let (output, report) = bench_exit(&args, &out, 3);
    done.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    assert_counts_add_up(&report);
    assert_eq!(count(&report, "answered"), 0);
    assert!(count(&report, "sent") > 0);
    assert_eq!(count(&report, "timeouts_total"), count(&report, "sent"));
    assert!(
        count(&report["schedule"], "behind_no_connection") > 0,
        "{report}"
    );
    assert_eq!(count(&report, "latency_samples"), 0);
    assert!(report["latency_us"]["p99"].is_null(), "{report}");
    // No answer, no spectrum; the timeline shows the timeouts, second by second.
    assert_eq!(
        report["latency_spectrum"],
        serde_json::json!([]),
        "{report}"
    );
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!((1..=2).contains(&timeline.len()), "{report}");
    let timeouts: u64 = timeline.iter().map(|s| count(s, "errors")).sum();
    assert_eq!(timeouts, count(&report, "timeouts_total"));
    assert!(timeline
        .iter()
        .all(|s| s["p99_us"].is_null() && s["rps"] == 0.0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no successful answer"), "{stderr}");
}

/// Without `--tenants`, a running router is asked for its tenants (`GET /v1/tenants`) and
/// the generated requests name those: against the bundled policies every request is
/// answered, the run exits 0, and the report and summary say which tenants were used.
/// (Before, the defaults `tenant-0..3` made every request `policy_not_found` and the run
/// still "passed" with latencies of 0.)
#[test]
fn learns_the_tenants_of_the_target() {
    let _serial = serial();
    let dir = config_dir("bench-learn", "");
    // Every request must be answered: acme's bundled rate limit is taken out, since 300
    // req/s stays under it but a loaded machine can leave a shard's lease cold for long
    // enough to shed a few requests as `rate_limited`.
    without_acme_rate_limits(&dir);
    let server = start(settings(&dir));
    let target = format!("http://{}", server.local_addr());
    let out = dir.0.join("report.json");
    let args = [
        "--target",
        &target,
        "--rate",
        "300",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
    ];
    let (output, report) = bench(&args, &out);
    server.stop().unwrap();
    assert_counts_add_up(&report);
    assert_eq!(report["tenants_from"], "GET /v1/tenants", "{report}");
    assert_eq!(
        report["tenants"],
        serde_json::json!(["acme", "globex", "initech"])
    );
    assert!(count(&report, "answered") > 0);
    assert_eq!(
        count(&report, "answered"),
        count(&report, "sent"),
        "{report}"
    );
    assert_eq!(
        count(&report, "latency_samples"),
        count(&report, "answered")
    );
    assert_eq!(report["conditions"]["target"], "http");
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("tenants (GET /v1/tenants): acme, globex, initech"),
        "{summary}"
    );
}

/// Tenants the router does not have: every request is an error, so the run exits 3 naming
/// the error ratio and the code, its latencies are `null` (not 0), and the gate refuses
/// to judge a latency rule on that report (exit 2) even when told to ignore conditions.
#[test]
fn wrong_tenants_fail_the_run_and_the_gate() {
    let _serial = serial();
    let dir = config_dir("bench-wrong", "");
    let server = start(settings(&dir));
    let target = format!("http://{}", server.local_addr());
    let out = dir.0.join("report.json");
    let args = [
        "--target",
        &target,
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--tenants",
        "tenant-0,tenant-1",
    ];
    let (output, report) = bench_exit(&args, &out, 3);
    server.stop().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error ratio 1 over --max-error-ratio 0.01"),
        "{stderr}"
    );
    assert!(stderr.contains("policy_not_found"), "{stderr}");
    assert_eq!(count(&report, "latency_samples"), 0);
    for key in ["p50", "p99", "max"] {
        assert!(report["latency_us"][key].is_null(), "{report}");
    }
    let gate = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["gate", "--baseline", "perf/baseline.json"])
        .args([
            "--policy",
            "perf/policy.json",
            "--allow-different-conditions",
        ])
        .arg("--candidate")
        .arg(&out)
        .output()
        .expect("run shardline gate");
    let gate_err = String::from_utf8_lossy(&gate.stderr);
    assert_eq!(gate.status.code(), Some(2), "{gate_err}");
    assert!(gate_err.contains("no successful answer"), "{gate_err}");
}

/// `--compare-bare` runs the same load against the bare responder and reports the
/// difference per percentile.
#[test]
fn compare_bare_reports_added_latency() {
    let _serial = serial();
    let dir = TempDir::new("bench-bare");
    let out = dir.0.join("report.json");
    let args = [
        "--embedded",
        "--compare-bare",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        // What is checked here is the report's shape, not the pace a loaded machine keeps.
        "--max-error-ratio",
        "1",
    ];
    let (output, report) = bench(&args, &out);
    assert_counts_add_up(&report);
    let bare = &report["bare"];
    assert_counts_add_up(bare);
    assert_eq!(count(bare, "errors_total"), 0, "{bare}");
    assert_eq!(bare["shards"], report["shards"]);
    assert_ne!(bare["target"], report["target"]);
    for key in ["p50", "p90", "p99", "p999", "max"] {
        let (router, baseline) = (
            count(&report["latency_us"], key),
            count(&bare["latency_us"], key),
        );
        let added = report["added_us"][key].as_i64().unwrap();
        assert_eq!(added, router as i64 - baseline as i64, "added_us.{key}");
        assert!(report["ratio"][key].is_number(), "ratio.{key}");
    }
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("bare") && summary.contains("added"),
        "{summary}"
    );
}

/// `--out x.json` also writes `x.md` and `x.svg` (router and bare lines), and
/// `shardline plot` overlays reports into one SVG, one line per report.
#[test]
fn writes_markdown_and_svg_and_plots_reports() {
    let _serial = serial();
    let dir = TempDir::new("bench-plot");
    let out = dir.0.join("x.json");
    let args = [
        "--embedded",
        "--compare-bare",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        // What is checked here is the report's shape, not the pace a loaded machine keeps.
        "--max-error-ratio",
        "1",
    ];
    let (_, report) = bench(&args, &out);
    let md = std::fs::read_to_string(dir.0.join("x.md")).expect("x.md written");
    let p99 = count(&report["latency_us"], "p99");
    assert!(
        md.contains("| latency µs | router | bare | added | ratio |"),
        "{md}"
    );
    assert!(md.contains(&format!("| p99 | {p99} |")), "{md}");
    assert!(
        md.contains("- tenants (config): tenant-0, tenant-1, tenant-2, tenant-3"),
        "{md}"
    );
    assert!(md.contains("- latency over "), "{md}");
    assert!(md.contains("## Latency spectrum (router, µs)"), "{md}");
    assert!(md.contains("## Latency spectrum (bare, µs)"), "{md}");
    assert!(md.contains("| p99.99 | "), "{md}");
    assert!(md.contains("## Timeline (second of the window)\n"), "{md}");
    assert!(md.contains("\n| 0 | "), "{md}");
    let svg = std::fs::read_to_string(dir.0.join("x.svg")).expect("x.svg written");
    assert!(svg.starts_with("<svg"), "{svg}");
    // The spectrum panel: router and bare; the timeline panel under it.
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    assert!(svg.contains(">Second by second"), "{svg}");

    let plot = dir.0.join("p.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .arg("plot")
        .arg("--out")
        .arg(&plot)
        .args([&out, &out])
        .output()
        .expect("run shardline plot");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let svg = std::fs::read_to_string(&plot).expect("p.svg written");
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    assert_eq!(svg.matches(">x</text>").count(), 2, "{svg}");
}

/// `--server-pid` of a router in its own process (`shardline serve`): the report carries
/// that process's CPU per request and cores busy over the window, positive and finite,
/// in the JSON, the summary and the Markdown.
#[test]
fn server_pid_reports_the_routers_cpu_per_request() {
    let _serial = serial();
    let dir = config_dir("bench-pid", "");
    let router = RouterProcess::spawn(&dir.0.join("shardline.toml"));
    let (target, pid) = (format!("http://{}", router.addr), router.id().to_string());
    let out = dir.0.join("report.json");
    let args = [
        "--target",
        &target,
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--tenants",
        "globex,initech",
        "--server-pid",
        &pid,
    ];
    let (output, report) = bench(&args, &out);
    let (status, log) = router.stop();
    assert!(status.success(), "{log:?}");
    assert_counts_add_up(&report);
    let per_request = report["server_cpu_us_per_request"].as_f64();
    assert!(
        per_request.is_some_and(|us| us.is_finite() && us > 0.0),
        "{report}"
    );
    let cores = report["server_cpu_cores"].as_f64();
    assert!(cores.is_some_and(|c| c.is_finite() && c > 0.0), "{report}");
    assert!(
        report["cpu_s"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert_eq!(report["server_cpu_of"], format!("process {pid}"));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("router server cpu: "), "{summary}");
    let md = std::fs::read_to_string(dir.0.join("report.md")).expect("report.md written");
    assert!(md.contains("- router server CPU: "), "{md}");
}

/// `--server-pid-tree` counts the descendants: a shell that only waits for its router
/// child spends next to nothing itself, and the tree's CPU is the router's. Without the
/// tree flag the same pid reports less than with it.
#[test]
fn server_pid_tree_counts_the_descendants() {
    let _serial = serial();
    let dir = config_dir("bench-pid-tree", "");
    let mut command = Command::new("sh");
    // `; exit $?` keeps the shell as the parent rather than exec'ing the router.
    command
        .args(["-c", "\"$0\" serve --config \"$1\"; exit $?"])
        .arg(env!("CARGO_BIN_EXE_shardline"))
        .arg(dir.0.join("shardline.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut shell = RouterProcess::spawn_command(command);
    let child = ChildOf::find(shell.id());
    let (target, pid) = (format!("http://{}", shell.addr), shell.id().to_string());
    let out = dir.0.join("report.json");
    let run = |tree: bool| {
        let mut args = vec![
            "--target",
            &target,
            "--rate",
            "1000",
            "--duration",
            "1s",
            "--warmup",
            "0.2s",
            "--tenants",
            "globex,initech",
            "--server-pid",
            &pid,
        ];
        if tree {
            args.push("--server-pid-tree");
        }
        bench(&args, &out).1
    };
    let (alone, tree) = (run(false), run(true));
    child.terminate();
    assert!(
        shell.wait_exit(EXIT_WITHIN).is_some(),
        "the shell did not exit"
    );
    let cpu = |r: &Value| r["server_cpu_us_per_request"].as_f64().expect("measured");
    assert!(cpu(&tree) > 0.0, "{tree}");
    assert!(cpu(&alone) < cpu(&tree), "shell {alone}\ntree {tree}");
    assert_eq!(
        tree["server_cpu_of"],
        format!("process {pid} and its descendants")
    );
}

/// The router a test's shell started, found by its parent; killed by pid when dropped so
/// that a failing test leaves nothing running.
struct ChildOf(u32);

impl ChildOf {
    /// The one child of `parent`, waited for up to 10 s.
    fn find(parent: u32) -> ChildOf {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
                let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(parent) {
                    return ChildOf(pid);
                }
            }
            assert!(std::time::Instant::now() < deadline, "no child of {parent}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&self) {
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGTERM) };
    }
}

impl Drop for ChildOf {
    fn drop(&mut self) {
        if std::path::Path::new(&format!("/proc/{}", self.0)).exists() {
            // SAFETY: as above; the router is gone or is ours to end.
            unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// `--server-pid` naming no process is refused before anything runs: exit 2, the flag
/// and the pid named, no report written. (4194304 is above the kernel's pid ceiling.)
#[test]
fn server_pid_of_no_process_is_refused_before_the_run() {
    let dir = TempDir::new("bench-no-pid");
    let out = dir.0.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args([
            "bench",
            "--target",
            "http://127.0.0.1:9",
            "--tenants",
            "acme",
        ])
        .args(["--duration", "1s", "--server-pid", "4194304", "--out"])
        .arg(&out)
        .output()
        .expect("run shardline bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--server-pid: no process 4194304"),
        "{stderr}"
    );
    assert!(!out.exists(), "a report was written");
}
