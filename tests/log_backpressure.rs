//! Logging never stalls the router. `shardline serve` runs as its own process with its
//! stderr a pipe, and a real nats-server feeds it invalid ExecResults, each of which logs
//! a warning. When nobody reads the pipe, the lines are dropped and counted
//! (`shardline_log_dropped_total`) while decide requests keep being answered; when the
//! pipe is read, a flood from one call site is summarised and the summary is written at
//! exit.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use support::nats::NatsServer;
use support::*;

/// Invalid ExecResults published per flood: ~150-byte log lines, megabytes in all, far
/// more than a pipe (64 KiB) and the log buffer hold.
const FLOOD_MESSAGES: usize = 30_000;
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(30);

/// The child router, killed (by pid) and reaped when dropped.
struct Router {
    child: Child,
    addr: SocketAddr,
    /// The rest of stderr, unread until a test chooses to.
    stderr: BufReader<ChildStderr>,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `shardline serve` on `dir` and reads stderr only up to the line with its
/// address, then waits until `/readyz` says NATS is connected.
fn spawn(dir: &TempDir) -> Router {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("stderr");
        assert!(n > 0, "shardline serve exited before logging its address");
        if let Some(rest) = line.split("serving on http://").nth(1) {
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break addr.parse().expect("logged address");
        }
    };
    let router = Router {
        child,
        addr,
        stderr,
    };
    let deadline = Instant::now() + WAIT;
    while get(addr, "/readyz").map(|r| r.status) != Some(200) {
        assert!(Instant::now() < deadline, "the router never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    router
}

fn config(nats: &NatsServer, logging: &str) -> TempDir {
    let toml = format!(
        "drain_timeout_ms = 1000\n[logging]\nlevel = \"info\"\n{logging}\n[nats]\nurl = \"{}\"\n",
        nats.url()
    );
    config_dir("log-backpressure", &toml)
}

/// One request on a fresh connection (so accepts spread over shards); `None` when no
/// answer came within the client's read timeout.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<Response> {
    let mut client = Client::connect(addr);
    client.send(method, path, &[], body);
    client.read_response()
}

fn get(addr: SocketAddr, path: &str) -> Option<Response> {
    request(addr, "GET", path, b"")
}

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let resp = get(addr, "/metrics")?;
    let text = String::from_utf8(resp.body).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Publishes `FLOOD_MESSAGES` invalid ExecResults on the results subject, from a raw
/// NATS connection (fire and forget).
fn flood_invalid_results(nats: &NatsServer) {
    let mut conn = TcpStream::connect(("127.0.0.1", nats.port)).expect("connect nats");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut info = [0u8; 4096];
    let _ = conn.read(&mut info).expect("nats INFO");
    conn.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .unwrap();
    let mut batch = Vec::new();
    for i in 0..FLOOD_MESSAGES {
        let payload = format!("not json {i}");
        let head = format!("PUB caf.exec.result.v1 {}\r\n", payload.len());
        batch.extend_from_slice(head.as_bytes());
        batch.extend_from_slice(payload.as_bytes());
        batch.extend_from_slice(b"\r\n");
        if batch.len() > 64 * 1024 {
            conn.write_all(&batch).expect("publish");
            batch.clear();
        }
    }
    batch.extend_from_slice(b"PING\r\n");
    conn.write_all(&batch).expect("publish");
    // The PONG says nats-server has taken every message.
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !line.starts_with("PONG") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("PONG") > 0,
            "nats closed"
        );
    }
}

/// Every shard answers decide requests, each within the client's read timeout.
fn assert_decides(addr: SocketAddr, round: usize) {
    let mut tenants = tenants_covering(usable_cores());
    tenants.push("acme".into());
    for (i, tenant) in tenants.iter().enumerate() {
        let body = decide_body(tenant, &format!("r{round}-{i}"));
        let resp = request(addr, "POST", "/v1/decide", &body);
        let resp = resp.unwrap_or_else(|| panic!("no answer for {tenant} in round {round}"));
        assert!(resp.status < 500, "status {} for {tenant}", resp.status);
    }
}

/// With stderr a pipe nobody reads and every warning written (no summarising), a flood of
/// logged warnings fills the pipe; the router still answers every decide request, and the
/// lines it could not write are counted in `shardline_log_dropped_total`.
#[test]
fn unread_stderr_does_not_stall_decisions() {
    let _serial = serial();
    let nats = NatsServer::start();
    let dir = config(&nats, "repeats_per_window = 0");
    let router = spawn(&dir);
    let addr = router.addr;
    assert_decides(addr, 0);
    for round in 1..=3 {
        flood_invalid_results(&nats);
        assert_decides(addr, round);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let dropped = metric(addr, "shardline_log_dropped_total");
        if dropped.is_some_and(|d| d > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shardline_log_dropped_total stayed at {dropped:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_decides(addr, 4);
    drop(router);
}

/// With stderr read, a flood from one call site gives the first few lines and, when the
/// router stops (before the 10 s window ends), a summary line naming the count and the
/// message: the summary is flushed at exit, not lost.
#[test]
fn repeated_warnings_are_summarised_and_flushed_at_exit() {
    let _serial = serial();
    let nats = NatsServer::start();
    let dir = config(&nats, "");
    let mut router = spawn(&dir);
    flood_invalid_results(&nats);
    let deadline = Instant::now() + WAIT;
    while metric(router.addr, "shardline_log_summarised_total").unwrap_or(0.0) < 1000.0 {
        assert!(Instant::now() < deadline, "the flood was never summarised");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(router.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut rest = String::new();
    router.stderr.read_to_string(&mut rest).expect("stderr");
    let status = router.child.wait().expect("wait");
    assert!(status.success(), "exit status {status}\n{rest}");
    let invalid: Vec<&str> = rest
        .lines()
        .filter(|l| l.contains("invalid ExecResult"))
        .collect();
    let summaries: Vec<&str> = invalid
        .iter()
        .copied()
        .filter(|l| l.contains("more like this in the last 10 s"))
        .collect();
    // One window, unless the flood outlasted 10 s on a slow machine.
    assert!(!summaries.is_empty(), "{rest}");
    assert!(
        summaries[0].contains("\"like\":\"nats: invalid ExecResult on caf.exec.result.v1"),
        "{}",
        summaries[0]
    );
    // Each window writes at most `repeats_per_window` (5) lines.
    let written = invalid.len() - summaries.len();
    assert!(
        written <= 5 * (summaries.len() + 1),
        "{written} lines written: {rest}"
    );
    let line: serde_json::Value = serde_json::from_str(summaries[0]).expect("a JSON line");
    assert_eq!(line["level"], "WARN");
}
