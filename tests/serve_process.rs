//! `shardline serve` as an operator runs it: the built binary in its own process, a config
//! file, SIGTERM to stop. Proves the README's run command serves, and that a stop during
//! traffic answers what it accepted and exits promptly instead of lingering.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// How long a stopped router may take to exit: the drain timeout of the test config
/// (1 s) plus the shards' stop margin, with room for a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// Starts the binary on `dir/shardline.toml` and reads the address it logs.
fn spawn(dir: &TempDir) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("a log line before exit")
            .expect("stderr");
        if let Some(rest) = line.split("serving on http://").nth(1) {
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break addr.parse().expect("logged address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardline serve still running {EXIT_WITHIN:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary serves decisions, and SIGTERM while four clients are mid-stream ends it
/// with status 0 within the bound; every response a client read was complete. The tenants
/// have no rate limit, so every answer before the stop is a decision.
#[test]
fn sigterm_during_traffic_exits_promptly() {
    let _serial = serial();
    let dir = config_dir(
        "process",
        "drain_timeout_ms = 1000\n[logging]\nlevel = \"info\"",
    );
    let (mut child, addr) = spawn(&dir);
    let mut client = Client::connect(addr);
    let resp = client.request("POST", "/v1/decide", &[], &decide_body("acme", "first"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body =
                        decide_body(["globex", "initech"][t % 2], &format!("t{t}-{answered}"));
                    c.send("POST", "/v1/decide", &[], &body);
                    match c.read_response() {
                        Some(r) => {
                            assert!(r.status == 200 || r.status == 503, "status {}", r.status);
                            answered += 1;
                        }
                        None => break, // closed by the stop: fine
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let status = wait_exit(&mut child);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u32 = load
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .sum();
    assert!(status.success(), "exit status {status}");
    assert!(answered > 0, "the clients were served before the stop");
}

/// SIGTERM to an idle router (one request, then quiet) exits with status 0.
#[test]
fn sigterm_when_idle_exits_promptly() {
    let _serial = serial();
    let dir = config_dir("process-idle", "drain_timeout_ms = 1000");
    let (mut child, addr) = spawn(&dir);
    let mut client = Client::connect(addr);
    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}

/// A policy document with a misspelt key.
const BROKEN: &str = r#"{"version":"1.0","providers":[{"name":"cohere","wieght":100}]}"#;

/// Runs `shardline serve` on `dir` with `args` and waits for it to exit (it must, within
/// `EXIT_WITHIN`); returns its status and stderr.
fn serve_until_exit(dir: &TempDir, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline serve");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).ok();
        text
    });
    let status = wait_exit(&mut child);
    (status, reader.join().unwrap())
}

/// A broken document does not stop a restart: the router starts, logs the document, and
/// serves the other tenants. `--strict-policies` (or `server.strict_policies = true`)
/// keeps the all-or-nothing start: exit 2, naming the file.
#[test]
fn a_broken_document_stops_the_start_only_when_strict() {
    let _serial = serial();
    let dir = config_dir("process-broken", "drain_timeout_ms = 1000");
    write_policy(&dir, "globex", "silver", BROKEN);
    let (mut child, addr) = spawn(&dir);
    let body = br#"{"request_id":"r-1","tenant_id":"globex","policy_id":"default",
        "task":{"type":"chat","payload_ref":"p"}}"#;
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], body);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    sigterm(&child);
    assert!(wait_exit(&mut child).success());

    let (status, stderr) = serve_until_exit(&dir, &["--strict-policies"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid policies") && stderr.contains("globex/silver.json"),
        "{stderr}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["policy", "check"])
        .arg(dir.0.join("policies"))
        .output()
        .expect("run shardline policy check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("globex/silver.json"), "{report}");
    let strict = config_dir("process-strict", "strict_policies = true");
    write_policy(&strict, "globex", "silver", BROKEN);
    let (status, stderr) = serve_until_exit(&strict, &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}
