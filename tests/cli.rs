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

/// `[cluster]` is in `config check`'s summary, with the host name standing in for an
/// empty node id; turning the cluster on from the environment without NATS is refused
/// naming the key, and a node id from the environment is checked like the file's.
#[test]
fn config_check_shows_and_checks_the_cluster_section() {
    let out = run(&["config", "check", "config/shardline.toml"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\n[cluster]\nenabled = false\nnode_id = \"\"\n"),
        "{text}"
    );
    assert!(
        text.contains("# cluster.node_id is empty: this node is "),
        "{text}"
    );

    let check = bin()
        .args(["config", "check", "config/shardline.toml"])
        .env("SHARDLINE_CLUSTER_ENABLED", "true")
        .env("SHARDLINE_CLUSTER_NODE_ID", "edge/1")
        .output()
        .expect("run config check");
    assert_eq!(check.status.code(), Some(1));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("cluster.enabled: true while nats.url is empty"),
        "{text}"
    );
    assert!(
        text.contains("cluster.node_id: must match ^[A-Za-z0-9_.-]{1,64}$ (got \"edge/1\")"),
        "{text}"
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

/// Runs `cmd` to its end, or kills it after `limit` (a command that should have failed
/// at once but serves instead must not hang the test).
fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

fn repo_path(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `config check` refuses what `serve` refuses, with `serve`'s own message: a policies
/// directory that is not there, more cores than the machine has, an HTTPS certificate
/// or a NATS CA that does not parse. Neither listens.
#[test]
fn config_check_refuses_what_serve_refuses() {
    let dir = temp_dir("config-check");
    let policies = repo_path("config/policies");
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").unwrap();
    let too_many = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let cases = [
        ("policies", "policies_dir = \"nope\"\n".to_owned()),
        (
            "cores",
            format!("cores = {too_many}\npolicies_dir = \"{policies}\"\n"),
        ),
        (
            "cert",
            format!(
                "policies_dir = \"{policies}\"\n[tls]\nenabled = true\n\
                 listen = \"127.0.0.1:0\"\ncert = \"garbage.pem\"\nkey = \"garbage.pem\"\n"
            ),
        ),
        (
            "nats-ca",
            format!(
                "policies_dir = \"{policies}\"\n[nats]\nurl = \"tls://127.0.0.1:4222\"\n\
                 tls_ca = \"garbage.pem\"\n"
            ),
        ),
    ];
    for (name, body) in cases {
        let file = dir.join(format!("{name}.toml"));
        let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n{body}");
        std::fs::write(&file, toml).unwrap();
        let limit = std::time::Duration::from_secs(30);
        let mut serve = bin();
        serve.args(["serve", "--config"]).arg(&file);
        let served = output_within(serve, limit);
        let said = String::from_utf8_lossy(&served.stderr);
        assert!(!served.status.success(), "{name}: serve started: {said}");
        let message = said
            .lines()
            .find(|l| l.starts_with("shardline: "))
            .unwrap_or_else(|| panic!("{name}: serve said {said}"));
        let mut check = bin();
        check.args(["config", "check"]).arg(&file);
        let checked = output_within(check, limit);
        let err = String::from_utf8_lossy(&checked.stderr);
        let out = String::from_utf8_lossy(&checked.stdout);
        assert_eq!(checked.status.code(), Some(1), "{name}: {out}{err}");
        assert!(
            err.contains(message),
            "{name}: serve said {message:?}, check {err}"
        );
        assert!(!out.contains(": ok\n"), "{name}: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The bundled config passes every check `serve` makes, and says what it found.
#[test]
fn config_check_accepts_the_bundled_config() {
    let out = run(&["config", "check", "config/shardline.toml"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("io_uring available"), "{text}");
    assert!(text.contains("config/shardline.toml: ok\n"), "{text}");
}

/// `decide --config` takes the config file `serve` takes (its `server.policies_dir`),
/// and a config directory as before.
#[test]
fn decide_takes_the_serve_config_file() {
    for config in ["config/shardline.toml", "config"] {
        let out = run(
            &[
                "decide",
                "--config",
                config,
                "--request",
                "config/requests/chat.json",
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines(&out)[0]["ok"], true, "{config}");
    }
    // A file elsewhere: its policies_dir resolves against the file's directory.
    let dir = temp_dir("decide-file");
    let file = dir.join("router.toml");
    let policies = repo_path("config/policies");
    std::fs::write(&file, format!("[server]\npolicies_dir = \"{policies}\"\n")).unwrap();
    let request = repo_path("config/requests/chat.json");
    let out = run(
        &[
            "decide",
            "--config",
            file.to_str().unwrap(),
            "--request",
            &request,
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `policy check config` (a config directory, as docs/API.md says) checks its policies
/// and its extension registry; `extensions/` and `requests/` are not tenants.
#[test]
fn policy_check_takes_a_config_directory() {
    let out = run(&["policy", "check", "config"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(", 0 problem(s)"), "{text}");

    let dir = temp_dir("policy-check-config");
    let copy = |from: &str, to: &str| {
        std::fs::create_dir_all(dir.join(to)).unwrap();
        for entry in std::fs::read_dir(repo_path(from)).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), dir.join(to).join(entry.file_name())).unwrap();
            }
        }
    };
    copy("config/policies/acme", "policies/acme");
    copy("config/extensions", "extensions");
    std::fs::write(dir.join("extensions/broken.json"), "{\"id\": 7}").unwrap();
    let out = run(&["policy", "check", dir.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("invalid extension registry"), "{text}");
    assert!(text.contains("broken.json"), "{text}");
    assert!(!text.contains("tenant directory"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary works from any directory: the tuning profiles and the embedded bench's
/// config and policies are built in.
#[test]
fn works_from_any_directory() {
    let dir = temp_dir("anywhere");
    let in_dir = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardline"));
        cmd.args(args)
            .current_dir(&dir)
            .env_remove("SHARDLINE_SERVER_CORES");
        output_within(cmd, std::time::Duration::from_secs(60))
    };
    for args in [
        &["tune", "check", "--profile", "dev"][..],
        &["tune", "plan", "--profile", "low-latency", "--cores", "4"][..],
        &[
            "bench",
            "--embedded",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "0.2s",
        ][..],
    ] {
        let out = in_dir(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // No config here is nothing to compare, not a difference.
        if args[1] == "check" {
            let router = text.lines().find(|l| l.starts_with("router server.cores"));
            assert!(router.is_some_and(|l| l.contains(" N/A ")), "{text}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
