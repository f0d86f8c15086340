//! The offline CLI, run as a user would: the built binary, real files, exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardline"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("wait")
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardline-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The README's run command: one request file against the bundled config.
#[test]
fn decide_readme_request() {
    let out = run(
        &[
            "decide",
            "--config",
            "config",
            "--request",
            "config/requests/chat.json",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = lines(&out);
    assert_eq!(answers.len(), 1);
    let d = &answers[0]["decision"];
    assert_eq!(answers[0]["ok"], true);
    assert!(["openai", "anthropic", "mistral", "local_llm"]
        .contains(&d["provider_id"].as_str().unwrap()));
    assert!(
        d["expected_latency_ms"].as_f64().unwrap() > 0.0,
        "declared figures, not 0"
    );
    assert!(d["explanation"].as_array().unwrap().len() >= 3);
    assert_eq!(answers[0]["context"]["request_id"], "req-0001");
}

/// JSON Lines on stdin: one answer per line, in order; the sticky session holds across
/// lines; any error answer makes the exit status 1.
#[test]
fn decide_json_lines_from_stdin() {
    let input = std::fs::read("config/requests/mix.jsonl").unwrap();
    let out = run(&["decide", "--config", "config"], &input);
    assert_eq!(out.status.code(), Some(1));
    let answers = lines(&out);
    assert_eq!(answers.len(), 7);
    assert_eq!(
        answers[0]["decision"]["provider_id"],
        answers[1]["decision"]["provider_id"]
    );
    assert_eq!(answers[1]["decision"]["reason"], "sticky");
    assert_eq!(answers[2]["decision"]["reason"], "fallback");
    assert_eq!(answers[5]["error"]["code"], "policy_not_found");
    assert_eq!(answers[6]["error"]["code"], "invalid_request");
    assert_eq!(answers[6]["context"]["request_id"], "mix-7");
}

/// Garbage input is an `invalid_request` answer, not a crash.
#[test]
fn decide_garbage_input() {
    let out = run(&["decide", "--config", "config"], b"\xff\xfe not json {{{");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out)[0]["error"]["code"], "invalid_request");
}

/// A missing config directory is a usage error (exit 2) with the path in the message.
#[test]
fn decide_missing_config() {
    let out = run(&["decide", "--config", "/nonexistent/shardline"], b"{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shardline"));
}

/// `policy check` passes the bundled config and fails a broken file, printing the file
/// and the JSON path of each problem.
#[test]
fn policy_check_reports_every_problem() {
    let ok = run(&["policy", "check", "config/policies"], b"");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let dir = temp_dir("check");
    let tenant = dir.join("acme");
    std::fs::create_dir_all(&tenant).unwrap();
    let bad = r#"{"version":"1.0","providers":[{"name":"openai","weight":170}],
                 "sticky":{"enabled":true,"ttl":"ten minutes"}}"#;
    std::fs::write(tenant.join("broken.json"), bad).unwrap();
    let out = run(&["policy", "check", dir.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("broken.json"), "{text}");
    assert!(text.contains("$.providers[0].weight"), "{text}");
    assert!(text.contains("$.sticky.ttl"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `SHARDLINE_` variable naming no config section (a misspelt `CLUSTER`) is refused by
/// `config check` and by `serve`, which exit non-zero naming the variable rather than run
/// without the setting the operator meant.
#[test]
fn unknown_env_section_is_refused() {
    let check = bin()
        .args(["config", "check", "config/shardline.toml"])
        .env("SHARDLINE_CLUSTR_ENABLED", "1")
        .output()
        .expect("run config check");
    assert_eq!(check.status.code(), Some(1));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("SHARDLINE_CLUSTR_ENABLED"), "{text}");
    assert!(text.contains("names no config section"), "{text}");

    // `serve` fails while loading the config, before it binds or starts a shard; the
    // listen override keeps it off any port in use should it get further.
    let serve = bin()
        .args(["serve", "--config", "config/shardline.toml"])
        .env("SHARDLINE_CLUSTR_ENABLED", "1")
        .env("SHARDLINE_SERVER_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let out = wait_bounded(serve, std::time::Duration::from_secs(30));
    assert!(
        !out.status.success(),
        "serve started with an unknown section"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("SHARDLINE_CLUSTR_ENABLED"), "{text}");

    // The tools' own variables stay allowed.
    let ok = bin()
        .args(["config", "check", "config/shardline.toml"])
        .env("SHARDLINE_COMPAT_DIR", "/nonexistent")
        .env("SHARDLINE_BIN", "/nonexistent")
        .output()
        .expect("run config check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

/// Waits for `child` at most `limit`, killing it (by its own handle) when it overruns.
fn wait_bounded(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}
