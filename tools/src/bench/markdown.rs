//! The report as Markdown, for a pull request or a perf note: what was driven and how, the
//! percentile table (with bare, added and ratio columns when compared), the counts, errors
//! by code, process figures, the server's CPU per request and the machine; then the
//! latency spectrum (how the tail bends past p99) and the timeline (in which second a
//! stall happened), each side's spectrum packed `SPECTRUM_PAIRS_PER_ROW` to a row so that
//! 54 points stay one screen, and the timeline one row per second.
//!
//! It reads the JSON report (`serde_json::Value`) rather than the `Report` struct so that
//! a report written by an earlier build, or read back from disk, renders the same way;
//! a missing field shows as `-`, never a panic.

use std::fmt::Write as _;

use serde_json::Value;

/// Table rows: `(label, key in latency_us / added_us / ratio)`.
const ROWS: [(&str, &str); 5] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p99.9", "p999"),
    ("max", "max"),
];

/// `(quantile, µs)` pairs per row of the spectrum table.
const SPECTRUM_PAIRS_PER_ROW: usize = 4;

/// `value` as text; `-` for null or missing.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => cell(s),
        other => other.to_string(),
    }
}

/// `text` safe inside a Markdown table cell or line.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The Markdown summary of a bench report.
pub fn summary(report: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# shardline bench\n");
    let _ = writeln!(out, "- target: `{}`", show(&report["target"]));
    let _ = writeln!(out, "- mode: {}", show(&report["mode"]));
    let _ = writeln!(
        out,
        "- rate: target {} req/s, achieved {} req/s",
        show(&report["target_rps"]),
        show(&report["achieved_rps"])
    );
    let _ = writeln!(
        out,
        "- window: {} s (+{} s warmup); {} connection(s), {} thread(s), pipeline {}",
        show(&report["duration_s"]),
        show(&report["warmup_s"]),
        show(&report["connections"]),
        show(&report["threads"]),
        show(&report["pipeline"])
    );
    if let Some(tenants) = report["tenants"].as_array() {
        let ids: Vec<String> = tenants.iter().map(show).collect();
        let _ = writeln!(
            out,
            "- tenants ({}): {}",
            show(&report["tenants_from"]),
            ids.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "- latency over {} successful answer(s); error ratio {} (budget {})",
        show(&report["latency_samples"]),
        show(&report["error_ratio"]),
        show(&report["max_error_ratio"])
    );
    out.push('\n');
    latency_table(&mut out, report);
    out.push('\n');
    counts(&mut out, "router", report);
    if report.get("bare").is_some_and(Value::is_object) {
        counts(&mut out, "bare", &report["bare"]);
    }
    if report.get("rss_mb").is_some() || report.get("cpu_s").is_some() {
        let _ = writeln!(
            out,
            "\nRouter process: RSS {} MiB, CPU {} s in the window.",
            show(&report["rss_mb"]),
            show(&report["cpu_s"])
        );
    }
    server_cpu(&mut out, report);
    env(&mut out, &report["env"]);
    spectrum(&mut out, "router", report);
    if report.get("bare").is_some_and(Value::is_object) {
        spectrum(&mut out, "bare", &report["bare"]);
    }
    timeline(&mut out, report);
    out
}

/// A quantile as a percentile label: `p99.95`, `max` for 1.
fn percentile_label(quantile: &Value) -> String {
    match quantile.as_f64() {
        Some(q) if q >= 1.0 => "max".to_owned(),
        // Rounded so that 0.955 reads 95.5, not 95.49999999999999.
        Some(q) => format!("p{}", (q * 1e6).round() / 1e4),
        None => "-".to_owned(),
    }
}

/// The side's `latency_spectrum`, `SPECTRUM_PAIRS_PER_ROW` points to a row; nothing when
/// it has none (an earlier report, or no answer).
fn spectrum(out: &mut String, name: &str, side: &Value) {
    let Some(points) = side["latency_spectrum"]
        .as_array()
        .filter(|p| !p.is_empty())
    else {
        return;
    };
    let _ = writeln!(out, "\n## Latency spectrum ({name}, µs)\n");
    out.push('|');
    out.push_str(&" percentile | µs |".repeat(SPECTRUM_PAIRS_PER_ROW));
    out.push_str("\n|");
    out.push_str(&"---|---:|".repeat(SPECTRUM_PAIRS_PER_ROW));
    out.push('\n');
    for row in points.chunks(SPECTRUM_PAIRS_PER_ROW) {
        out.push('|');
        for p in row {
            let _ = write!(
                out,
                " {} | {} |",
                percentile_label(&p["quantile"]),
                show(&p["us"])
            );
        }
        out.push_str(&"  |  |".repeat(SPECTRUM_PAIRS_PER_ROW - row.len()));
        out.push('\n');
    }
}

/// The router's `timeline`, one row per second; nothing when it has none.
fn timeline(out: &mut String, report: &Value) {
    let Some(seconds) = report["timeline"].as_array().filter(|t| !t.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "\n## Timeline (second of the window)\n");
    out.push_str("| s | answers/s | errors | p50 µs | p99 µs | max µs |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for s in seconds {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            show(&s["t_s"]),
            show(&s["rps"]),
            show(&s["errors"]),
            show(&s["p50_us"]),
            show(&s["p99_us"]),
            show(&s["max_us"])
        );
    }
}

fn latency_table(out: &mut String, report: &Value) {
    let compared = report.get("bare").is_some_and(Value::is_object);
    if compared {
        out.push_str("| latency µs | router | bare | added | ratio |\n");
        out.push_str("|---|---:|---:|---:|---:|\n");
    } else {
        out.push_str("| latency µs | router |\n|---|---:|\n");
    }
    let rows = ROWS.iter().map(|(l, k)| (*l, *k)).chain([("mean", "mean")]);
    for (label, key) in rows {
        let _ = write!(out, "| {label} | {} |", show(&report["latency_us"][key]));
        if compared {
            let _ = write!(
                out,
                " {} | {} | {} |",
                show(&report["bare"]["latency_us"][key]),
                show(&report["added_us"][key]),
                show(&report["ratio"][key])
            );
        }
        out.push('\n');
    }
}

fn counts(out: &mut String, name: &str, side: &Value) {
    let check = if side["counts_ok"] == Value::Bool(true) {
        "ok"
    } else {
        "MISMATCH"
    };
    let _ = writeln!(
        out,
        "- {name}: sent {} = answered {} + errors {} + sheds {} + timeouts {} ({check})",
        show(&side["sent"]),
        show(&side["answered"]),
        show(&side["errors_total"]),
        show(&side["sheds_total"]),
        show(&side["timeouts_total"])
    );
    for (label, key) in [("errors", "errors_by_code"), ("sheds", "sheds_by_code")] {
        let Some(codes) = side[key].as_object().filter(|c| !c.is_empty()) else {
            continue;
        };
        let list: Vec<String> = codes
            .iter()
            .map(|(code, n)| format!("`{}` {}", cell(code), show(n)))
            .collect();
        let _ = writeln!(out, "  - {label} by code: {}", list.join(", "));
    }
}

/// CPU per request and cores busy of each side that carries the figures (`-` unknown).
fn server_cpu(out: &mut String, report: &Value) {
    let bare = report.get("bare").filter(|b| b.is_object());
    let sides = std::iter::once(("router", report)).chain(bare.map(|b| ("bare", b)));
    let mut first = true;
    for (name, side) in sides {
        if side.get("server_cpu_us_per_request").is_none() {
            continue;
        }
        if first {
            out.push('\n');
            first = false;
        }
        let of = side
            .get("server_cpu_of")
            .map(|of| format!(" ({})", show(of)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {name} server CPU: {} µs per request, {} cores busy{of}",
            show(&side["server_cpu_us_per_request"]),
            show(&side["server_cpu_cores"])
        );
    }
}

fn env(out: &mut String, env: &Value) {
    if !env.is_object() {
        return;
    }
    let _ = writeln!(
        out,
        "\nMachine: {}, {} core(s), kernel {}, commit {}.",
        show(&env["cpu_model"]),
        show(&env["cores"]),
        show(&env["kernel"]),
        show(&env["git_commit"])
    );
    let _ = writeln!(out, "\nCommand: `{}`", show(&env["command_line"]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "target": "http://127.0.0.1:1", "mode": "open-loop", "target_rps": 500.0,
            "achieved_rps": 499.5, "duration_s": 1.0, "warmup_s": 0.2, "connections": 4,
            "threads": 1, "pipeline": 1,
            "latency_us": {"p50": 100, "p90": 200, "p99": 300, "p999": 400, "max": 500,
                           "mean": 120.5},
            "sent": 10, "answered": 7, "errors_total": 1, "errors_by_code": {"a|b": 1},
            "sheds_total": 1, "sheds_by_code": {"rate_limited": 1}, "timeouts_total": 1,
            "counts_ok": true, "rss_mb": 12.5, "cpu_s": 0.4,
            "server_cpu_us_per_request": 40.0, "server_cpu_cores": 0.4,
            "server_cpu_of": "server threads in this process",
            "env": {"cpu_model": "X", "cores": 2, "kernel": "6.1", "git_commit": null,
                    "command_line": "shardline bench"}
        })
    }

    /// Without bare, a router-only table; counts, codes, process and machine lines.
    #[test]
    fn router_only() {
        let md = summary(&report());
        assert!(md.contains("| latency µs | router |\n"), "{md}");
        assert!(md.contains("| p99.9 | 400 |\n"), "{md}");
        assert!(md.contains("| mean | 120.5 |\n"), "{md}");
        assert!(md.contains("sent 10 = answered 7 + errors 1 + sheds 1 + timeouts 1 (ok)"));
        assert!(md.contains("`a\\|b` 1"), "{md}");
        assert!(md.contains("RSS 12.5 MiB, CPU 0.4 s"));
        assert!(
            md.contains("- router server CPU: 40.0 µs per request, 0.4 cores busy (server threads in this process)"),
            "{md}"
        );
        assert!(md.contains("commit -."), "{md}");
        assert!(!md.contains("bare"));
    }

    /// With bare, every row carries bare, added and ratio; a null ratio shows as `-`.
    #[test]
    fn compared() {
        let mut v = report();
        v["bare"] = json!({"latency_us": {"p50": 50, "p90": 100, "p99": 0, "p999": 200,
                           "max": 250, "mean": 60.0}, "sent": 3, "answered": 3,
                           "errors_total": 0, "sheds_total": 0, "timeouts_total": 0,
                           "counts_ok": false, "server_cpu_us_per_request": null,
                           "server_cpu_cores": null});
        v["added_us"] = json!({"p50": 50, "p90": 100, "p99": 300, "p999": 200, "max": 250});
        v["ratio"] = json!({"p50": 2.0, "p90": 2.0, "p99": null, "p999": 2.0, "max": 2.0});
        let md = summary(&v);
        assert!(md.contains("| p50 | 100 | 50 | 50 | 2.0 |\n"), "{md}");
        assert!(md.contains("| p99 | 300 | 0 | 300 | - |\n"), "{md}");
        assert!(md.contains("- bare: sent 3 = answered 3"), "{md}");
        assert!(md.contains("(MISMATCH)"));
        assert!(
            md.contains("- bare server CPU: - µs per request, - cores busy\n"),
            "{md}"
        );
    }

    /// The spectrum packs four points to a row with percentile labels, max last; the
    /// timeline is one row per second, `-` where a second had no answer.
    #[test]
    fn spectrum_and_timeline() {
        let mut v = report();
        let quantiles = [0.0, 0.5, 0.955, 0.9995, 0.9999, 1.0];
        let points: Vec<Value> = (quantiles.iter().enumerate())
            .map(|(i, q)| json!({"quantile": q, "us": 100 + i}))
            .collect();
        v["latency_spectrum"] = Value::Array(points);
        v["timeline"] = json!([
            {"t_s": 0, "rps": 500.0, "errors": 0, "p50_us": 90, "p99_us": 300, "max_us": 900},
            {"t_s": 1, "rps": 0.0, "errors": 2, "p50_us": null, "p99_us": null,
             "max_us": null}
        ]);
        let md = summary(&v);
        assert!(md.contains("## Latency spectrum (router, µs)"), "{md}");
        assert!(
            md.contains("| p0 | 100 | p50 | 101 | p95.5 | 102 | p99.95 | 103 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| p99.99 | 104 | max | 105 |  |  |  |  |\n"),
            "{md}"
        );
        assert!(md.contains("| 0 | 500.0 | 0 | 90 | 300 | 900 |\n"), "{md}");
        assert!(md.contains("| 1 | 0.0 | 2 | - | - | - |\n"), "{md}");
        assert!(!summary(&report()).contains("## Timeline"));
    }

    /// An empty document renders with placeholders instead of panicking.
    #[test]
    fn missing_fields() {
        let md = summary(&json!({}));
        assert!(md.contains("| p50 | - |"), "{md}");
    }
}
