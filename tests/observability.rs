//! The shipped Prometheus rules and Grafana dashboard against a running router: every
//! metric they reference is one the router exports, the exposition passes
//! `promtool check metrics`, and the dashboard's queries are valid PromQL.
//!
//! Why against a running router and not a list: a renamed or removed metric otherwise
//! leaves an alert that can never fire and a panel that stays empty, and nothing says so.
//! The router runs with NATS on (a real nats-server) and one broken policy document, so
//! the series that exist only then are there too.
//!
//! promtool comes from Debian's `prometheus` package (`scripts/test.sh` installs it). The
//! tests that need it fail without it when `CI=true`, and otherwise skip with the reason.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::nats::NatsServer;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// promtool on `PATH`; `None` (after saying why) when it is missing outside CI.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "promtool not found and CI=true: apt-get install -y prometheus"
        );
        eprintln!("skipped: promtool not found (apt-get install -y prometheus)");
    }
    found
}

/// Runs `promtool args…` with `stdin`, returning whether it succeeded and its output.
fn run_promtool(promtool: &Path, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().expect("promtool exits");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A router with NATS on, ready, and the text of one scrape of its operations listener.
fn scrape_with_nats() -> String {
    let nats = NatsServer::start();
    let dir = config_dir(
        "observability",
        &format!("[nats]\nurl = \"{}\"\n", nats.url()),
    );
    // A broken document, so `shardline_policy_invalid` (exported only then) exists too.
    write_policy(&dir, "acme", "broken", "{not json");
    let server = start(settings(&dir));
    let deadline = Instant::now() + WAIT;
    while !server.shared().is_ready() {
        assert!(Instant::now() < deadline, "router never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    // One decision, so the latency histogram and the counters have moved.
    let mut client = Client::connect(server.local_addr());
    let decided = client.request("POST", "/v1/decide", &[], &decide_body("acme", "obs-1"));
    assert_eq!(
        decided.status,
        200,
        "{}",
        String::from_utf8_lossy(&decided.body)
    );
    let ops = server.ops_addr().expect("operations listener");
    let scraped = Client::connect(ops).request("GET", "/metrics", &[], b"");
    assert_eq!(scraped.status, 200);
    server.stop().unwrap();
    drop(nats);
    String::from_utf8(scraped.body).expect("UTF-8 exposition")
}

/// Every sample name the exposition can have: each `# TYPE` family, and for a histogram
/// its `_bucket`, `_sum` and `_count` series.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// The `shardline_*` and `process_*` metric names in a PromQL expression. Recorded
/// series (`shardline:…`, names with a colon) are the rules' own, not the router's.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| is_name(c)) {
        let word_len = rest[start..]
            .find(|c: char| !is_name(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        let preceded_by_quote = rest[..start].ends_with('"');
        if (word.starts_with("shardline_") || word.starts_with("process_"))
            && !word.contains(':')
            && !preceded_by_quote
        {
            into.insert(word.to_owned());
        }
        rest = &rest[start + word_len..];
    }
}

/// The expressions of a rules file, without a YAML parser: each `expr:` value, either on
/// its line or (after `>-` or `|`) on the more-indented lines that follow.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if !matches!(value, ">-" | ">" | "|" | "|-") {
            exprs.push(value.to_owned());
            continue;
        }
        let indent = line.len() - trimmed.len();
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        exprs.push(body.join(" "));
    }
    exprs
}

/// Every `expr` in the dashboard (panel targets) and the variables' queries.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_file("config/grafana/shardline.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn alerts_yaml() -> String {
    std::fs::read_to_string(repo_file("config/prometheus/alerts.yml")).unwrap()
}

/// What the rules and the dashboard reference, the router exports: each name is a family
/// of a live scrape (NATS on), a histogram's series counting as its family's.
#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let _serial = serial();
    let mut referenced = BTreeSet::new();
    let alerts = rule_exprs(&alerts_yaml());
    assert!(alerts.len() >= 18, "expressions of alerts.yml: {alerts:?}");
    for expr in &alerts {
        metric_names(expr, &mut referenced);
    }
    let panels = dashboard_exprs(&dashboard());
    assert!(
        panels.len() >= 30,
        "expressions of the dashboard: {panels:?}"
    );
    for expr in &panels {
        metric_names(expr, &mut referenced);
    }
    // The families the alerts are about are among them (the extraction works).
    for name in [
        "shardline_ready",
        "shardline_decision_latency_seconds_bucket",
        "shardline_nats_connected",
        "shardline_shard_stalled",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert!(
            referenced.contains(name),
            "{name} not found in {referenced:?}"
        );
    }

    let exposition = scrape_with_nats();
    let exported = exported_names(&exposition);
    let missing: Vec<_> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "referenced but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// The exposition passes promtool's lint, with NATS on so its series are linted too.
#[test]
fn metrics_pass_promtool_check_metrics() {
    let _serial = serial();
    let Some(promtool) = promtool() else { return };
    let exposition = scrape_with_nats();
    assert!(exposition.contains("shardline_nats_connected{shard=\"0\"} 1"));
    assert!(exposition.contains("\nshardline_ready 1\n"), "ready gauge");
    let (ok, out) = run_promtool(&promtool, &["check", "metrics"], exposition.as_bytes());
    assert!(ok, "promtool check metrics:\n{out}");
}

/// The dashboard is one Grafana understands (a Prometheus data source variable every
/// panel reads through, unique panel ids) and each of its queries parses as PromQL:
/// promtool checks them as recording rules, Grafana's variables replaced by values.
#[test]
fn dashboard_is_well_formed_and_its_queries_parse() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "shardline");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(variables.iter().any(|v| v["type"] == "datasource"
        && v["query"] == "prometheus"
        && v["name"] == "datasource"));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            assert!(!panel["targets"].as_array().expect("targets").is_empty());
        }
    }
    assert!(
        panels.iter().any(|p| p["type"] == "heatmap"),
        "a latency heatmap"
    );

    let Some(promtool) = promtool() else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(&dashboard).iter().enumerate() {
        if expr.starts_with("label_values(") {
            continue; // Grafana's own query function, not PromQL
        }
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".+");
        let quoted = serde_json::to_string(&expr).unwrap(); // a valid YAML scalar
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = TempDir::new("dashboard-rules");
    let file = dir.0.join("dashboard.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = run_promtool(&promtool, &["check", "rules", file.to_str().unwrap()], b"");
    assert!(ok, "dashboard queries:\n{out}\n{rules}");
}

/// The value of the unlabelled series `name` in a scrape.
fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
        .parse()
        .expect("a number")
}

fn scrape(server: &shardline::server::Server) -> String {
    let ops = server.ops_addr().expect("operations listener");
    let scraped = Client::connect(ops).request("GET", "/metrics", &[], b"");
    assert_eq!(scraped.status, 200);
    String::from_utf8(scraped.body).expect("UTF-8 exposition")
}

/// `shardline_ready` follows `/readyz`: 1 while NATS is connected, 0 once nats-server is
/// gone (the router stays up and keeps answering scrapes), 1 again after it returns.
#[test]
fn ready_gauge_follows_readiness() {
    let _serial = serial();
    let mut nats = NatsServer::start();
    // A short reconnect backoff, so the router is back well within the test's wait.
    let toml = format!(
        "[nats]\nurl = \"{}\"\nreconnect_backoff_max_ms = 100\n",
        nats.url()
    );
    let dir = config_dir("observability-ready", &toml);
    let server = start(settings(&dir));
    let ops = server.ops_addr().expect("operations listener");
    let wait_for = |ready: bool| {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = Client::connect(ops)
                .request("GET", "/readyz", &[], b"")
                .status;
            if status == if ready { 200 } else { 503 } {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz stayed {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(true);
    assert_eq!(sample(&scrape(&server), "shardline_ready"), 1.0);
    nats.stop();
    wait_for(false);
    assert_eq!(sample(&scrape(&server), "shardline_ready"), 0.0);
    nats.restart();
    wait_for(true);
    assert_eq!(sample(&scrape(&server), "shardline_ready"), 1.0);
    server.stop().unwrap();
}

/// `process_open_fds` counts the process's descriptors: it rises by at least the
/// connections a client holds open, and stays under `process_max_fds`.
#[test]
fn open_fds_counts_connections() {
    let _serial = serial();
    const HELD: usize = 40;
    let dir = config_dir("observability-fds", "");
    let server = start(settings(&dir));
    let before = scrape(&server);
    let (open_before, max) = (
        sample(&before, "process_open_fds"),
        sample(&before, "process_max_fds"),
    );
    assert!(
        open_before > 0.0 && open_before < max,
        "{open_before} of {max}"
    );
    // Each held connection answered once, so the router has accepted it.
    let held: Vec<Client> = (0..HELD)
        .map(|_| {
            let mut c = Client::connect(server.local_addr());
            assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
            c
        })
        .collect();
    let during = sample(&scrape(&server), "process_open_fds");
    // The router runs in this process: each held connection is the router's socket plus
    // the client's two (`Client` clones its stream for reading), three descriptors.
    assert!(
        during >= open_before + 3.0 * HELD as f64,
        "{HELD} connections held: {open_before} -> {during}"
    );
    drop(held);
    server.stop().unwrap();
}
