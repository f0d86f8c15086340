//! `shardline bench --target nats://…` run as a user runs it: the built binary, a real
//! nats-server, the in-process bare echo, the JSON report read back. A router answering
//! on the decide subject is the same code path with another subject; here the echo is the
//! responder. Runs take turns (`serial`): each one loads both cores.

mod support;

use support::bench::{
    assert_counts_add_up, assert_spectrum, assert_timeline, bench, bench_exit, count,
};
use support::nats::NatsServer;
use support::{serial, TempDir};

/// The bare echo alone, open loop at 5,000 req/s for 2 s: every request answered, the
/// achieved rate within 1 % of the target, the report saying nats and bare.
#[test]
fn bare_only_keeps_the_rate() {
    let _serial = serial();
    let server = NatsServer::start();
    let dir = TempDir::new("bench-nats-bare");
    let out = dir.0.join("report.json");
    let url = server.url();
    let args = [
        "--target",
        &url,
        "--bare-only",
        "--rate",
        "5000",
        "--duration",
        "2s",
        "--warmup",
        "0.5s",
        "--spin-us",
        "0",
    ];
    let (output, report) = bench(&args, &out);
    assert_counts_add_up(&report);
    assert_eq!(report["transport"], "nats");
    assert_eq!(report["target"], url.as_str());
    assert_eq!(report["bare_only"], true);
    assert!(report["subject"]
        .as_str()
        .unwrap()
        .starts_with("bench.bare."));
    assert_eq!(report["mode"], "open-loop");
    let achieved = report["achieved_rps"].as_f64().unwrap();
    assert!(
        (achieved - 5000.0).abs() <= 50.0,
        "achieved {achieved} req/s"
    );
    assert_eq!(
        count(&report, "answered"),
        count(&report, "sent"),
        "{report}"
    );
    for key in ["p50", "p99", "max"] {
        assert!(count(&report["latency_us"], key) > 0, "latency_us.{key}");
    }
    // The echo's CPU per request is measured, as the router's would be with --server-pid.
    let echo_cpu = report["server_cpu_us_per_request"].as_f64();
    assert!(echo_cpu.is_some_and(|us| us > 0.0), "{report}");
    assert_spectrum(&report);
    assert_timeline(&report, 2);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("bare: sent"), "{summary}");
    assert!(dir.0.join("report.md").is_file() && dir.0.join("report.svg").is_file());
}

/// A subject nobody serves: every request is an error counted as `no_responders`, and
/// the run ends on time instead of hanging.
#[test]
fn no_responder_is_counted_not_waited_for() {
    let _serial = serial();
    let server = NatsServer::start();
    let dir = TempDir::new("bench-nats-none");
    let out = dir.0.join("report.json");
    let url = server.url();
    let started = std::time::Instant::now();
    let args = [
        "--target",
        &url,
        "--subject",
        "nobody.home",
        "--tenants",
        "acme",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--spin-us",
        "0",
    ];
    let (output, report) = bench_exit(&args, &out, 3);
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert_counts_add_up(&report);
    assert_eq!(report["subject"], "nobody.home");
    assert!(count(&report, "sent") > 0);
    assert_eq!(
        report["errors_by_code"]["no_responders"].as_u64(),
        Some(count(&report, "sent")),
        "{report}"
    );
    assert_eq!(count(&report, "timeouts_total"), 0);
    assert!(report["latency_us"]["p99"].is_null(), "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error ratio 1 over --max-error-ratio") && stderr.contains("no_responders"),
        "{stderr}"
    );
}

/// A NATS router cannot be asked for its tenants: without `--tenants` the run is refused
/// before it starts (exit 2, the flag named) instead of sending guessed tenants.
#[test]
fn nats_router_needs_tenants() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["bench", "--target", "nats://127.0.0.1:1", "--rate", "10"])
        .output()
        .expect("run shardline bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--tenants: required with a NATS target"),
        "{stderr}"
    );
}

/// Closed loop with --compare-bare against a subject served by nobody and the echo: the
/// two sides are reported with the comparison, and each side's counts add up.
#[test]
fn closed_loop_compare_bare() {
    let _serial = serial();
    let server = NatsServer::start();
    let dir = TempDir::new("bench-nats-closed");
    let out = dir.0.join("report.json");
    let url = server.url();
    let args = [
        "--target",
        &url,
        "--subject",
        "bench.test.router",
        "--tenants",
        "acme",
        "--compare-bare",
        "--concurrency",
        "8",
        "--connections",
        "2",
        "--threads",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
    ];
    // Nobody serves the router's subject: the run fails (exit 3), and the router side has
    // no latency, so nothing is "added" (before: p99 0 and a negative added latency).
    let (_, report) = bench_exit(&args, &out, 3);
    assert_counts_add_up(&report);
    assert_counts_add_up(&report["bare"]);
    assert!(report["latency_us"]["p99"].is_null(), "{report}");
    assert!(report.get("added_us").is_none(), "{report}");
    assert!(report.get("ratio").is_none(), "{report}");
    assert!(report["bare"]["latency_us"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(report["conditions"]["target"], "nats");
    assert_eq!(report["conditions"]["compare_bare"], true);
    assert_eq!(report["mode"], "closed-loop");
    assert_eq!(report["in_flight_max"], 8);
    assert_eq!(report["connections"], 2);
    assert_eq!(report["bare"]["transport"], "nats");
    assert!(count(&report["bare"], "answered") > 0);
    assert_eq!(count(&report["bare"], "errors_total"), 0, "{report}");
    assert!(report.get("bare_only").is_none());
}
