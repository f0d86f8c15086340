//! Failures the router must survive on its own, driven through the hooks of the
//! `fault-injection` feature (`src/fault.rs`) against the real binary: a DNS lookup that
//! hangs, a shard that stalls, a shard that panics. Run with
//! `cargo test --features fault-injection --test serve_faults`.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::process::RouterProcess;
use support::*;

/// Bound of every wait here: generous for a loaded machine, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

/// A router in its own process (its log collected), and the config directory it runs on.
struct Router {
    process: RouterProcess,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Router {
    fn spawn(dir: TempDir, env: &[(&str, &str)]) -> Router {
        let config = dir.0.join("shardline.toml");
        let process = RouterProcess::spawn_env(&config, env.iter().copied());
        Router {
            addr: process.addr,
            process,
            _dir: dir,
        }
    }

    /// Waits (bounded) for a log line containing `needle`.
    fn log_shows(&self, needle: &str) -> Option<String> {
        self.process.log_shows(needle, WAIT)
    }

    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.process.wait_exit(WAIT)
    }
}

fn shards_with_ports(name: &str, extra_toml: &str) -> (TempDir, u16, usize) {
    let shards = usable_cores();
    let base = free_port_base(shards);
    let dir = config_dir(name, &format!("shard_port_base = {base}\n{extra_toml}"));
    (dir, base, shards)
}

/// Polls `GET /readyz` at `addr` until `accept` takes the answer (bounded).
fn readyz_until(addr: SocketAddr, accept: impl Fn(&Response) -> bool) -> Response {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = Client::connect(addr).request("GET", "/readyz", &[], b"");
        if accept(&resp) {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never turned as expected; last {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the series named exactly `series` (name and labels) in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(series));
    let value = line.and_then(|l| l[series.len()..].trim().parse().ok());
    value.unwrap_or_else(|| panic!("no series {series}"))
}

/// While the NATS server's host name takes 30 s to resolve (a dead DNS server), HTTP
/// decisions on every shard keep being answered, across several connect attempts, and
/// the connect timeout ends each attempt. The lookup used to run on the shard's thread
/// and froze it for the lookup's whole duration.
#[test]
fn a_hanging_dns_lookup_does_not_freeze_the_shards() {
    let _serial = serial();
    let (dir, base, shards) = shards_with_ports(
        "fault-dns",
        "[nats]\nurl = \"nats://slow-resolve.invalid:4222\"\n",
    );
    let router = Router::spawn(dir, &[("FAULT_INJECTION_RESOLVE_DELAY_MS", "30000")]);
    let started = Instant::now();
    // Past the first connect timeout (2 s), into the attempts that find the lookup busy.
    let mut round = 0;
    while round < 3 || started.elapsed() < Duration::from_secs(3) {
        for shard in 0..shards {
            let addr = loopback(base + shard as u16);
            let body = decide_body("acme", &format!("dns-{round}-{shard}"));
            // The client's read timeout (10 s) is the bound: well under the 30 s lookup.
            let resp = Client::connect(addr).request("POST", "/v1/decide", &[], &body);
            assert_eq!(
                resp.status,
                200,
                "shard {shard}: {}",
                String::from_utf8_lossy(&resp.body)
            );
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        router.log_shows("connect timed out").is_some(),
        "the connect timeout covers the lookup"
    );
    let ready = Client::connect(router.addr).request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "not ready without NATS");
}

/// A shard whose thread is blocked for 6 s is found by the watchdog: /readyz answers 503
/// naming it, `shardline_shard_stalled{shard}` is 1 and its stall is counted; a request
/// handed to it from another shard (one with an idempotency key, which only the owner
/// answers) is answered `overloaded` at the handoff deadline
/// instead of waiting; once the shard runs again the router is ready again.
#[test]
fn a_stalled_shard_is_reported_and_handoffs_to_it_time_out() {
    let _serial = serial();
    let (dir, base, shards) =
        shards_with_ports("fault-stall", "stall_ms = 500\nhandoff_timeout_ms = 300\n");
    if shards < 2 {
        eprintln!("skipped: a handoff needs two shards, this machine gives {shards}");
        return;
    }
    let router = Router::spawn(dir, &[]);
    let (healthy, stalled) = (loopback(base), loopback(base + 1));
    readyz_until(healthy, |r| r.status == 200);
    // The stalling request blocks shard 1; its answer comes after the stall.
    let staller = std::thread::spawn(move || {
        let body = decide_body("fault-stall-6000", "stall");
        let mut client = Client::connect(stalled);
        client.send("POST", "/v1/decide", &[], &body);
        client.read_response()
    });
    let names_shard_1 = |r: &Response| {
        let stalled = &r.json()["stalled_shards"];
        r.status == 503 && stalled.as_array().is_some_and(|s| s.contains(&1.into()))
    };
    let resp = readyz_until(healthy, names_shard_1);
    assert_eq!(resp.json()["ok"], false);
    let metrics = Client::connect(healthy).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        sample(&text, "shardline_shard_stalled{shard=\"1\"}"),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "shardline_shard_stalls_total{shard=\"1\"}") >= 1.0,
        "{text}"
    );
    assert!(router.log_shows("shard 1 is stalled").is_some());

    // A keyed request for a tenant of shard 1, sent to shard 0: only the owner can
    // answer it, so it is handed off, and answered at the deadline.
    let tenant = &tenants_covering(shards)[1];
    let body = format!(
        r#"{{"request_id":"to-the-stalled-shard","tenant_id":"{tenant}","idempotency_key":"k","task":{{"type":"chat","payload_ref":"p"}}}}"#
    )
    .into_bytes();
    let resp = Client::connect(healthy).request("POST", "/v1/decide", &[], &body);
    let json = resp.json();
    assert_eq!(resp.status, 503, "{json}");
    assert_eq!(json["error"]["code"], "overloaded", "{json}");
    assert_eq!(
        json["context"]["request_id"], "to-the-stalled-shard",
        "{json}"
    );
    let metrics = Client::connect(healthy).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("cause=\"handoff_timeout\""), "{text}");

    readyz_until(healthy, |r| r.status == 200);
    assert!(router.log_shows("shard 1 runs again").is_some());
    let answer = staller.join().expect("staller thread");
    assert!(
        answer.is_some(),
        "the stalled shard answers once it runs again"
    );
}

/// Under systemd's watchdog (`WatchdogSec=`), a stalled shard silences the `WATCHDOG=1`
/// keep-alive for as long as it is marked stalled, so systemd restarts a router whose
/// shard hangs; once the shard runs again the keep-alive resumes.
#[test]
fn a_stalled_shard_silences_the_systemd_watchdog() {
    let _serial = serial();
    let notify = support::systemd::NotifySocket::bind("fault-watchdog");
    let dir = config_dir("fault-watchdog", "stall_ms = 500\n");
    let env = notify.env(200_000);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let router = Router::spawn(dir, &env);
    notify.until("READY=1", WAIT);
    notify.until("WATCHDOG=1", WAIT);
    let addr = router.addr;
    let staller = std::thread::spawn(move || {
        let body = decide_body("fault-stall-6000", "stall");
        let mut client = Client::connect(addr);
        client.send("POST", "/v1/decide", &[], &body);
        client.read_response()
    });
    assert!(router.log_shows("is stalled").is_some());
    // A keep-alive sent before the mark may still be queued; none may follow it.
    notify.drain();
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        if let Some(message) = notify.recv(left) {
            let ran_again = router
                .process
                .log_lines()
                .iter()
                .any(|l| l.contains("runs again"));
            assert!(
                !message.contains("WATCHDOG=1"),
                "keep-alive while a shard is stalled (shard ran again already: {ran_again})"
            );
        }
    }
    assert!(router.log_shows("runs again").is_some());
    notify.until("WATCHDOG=1", WAIT);
    assert!(staller.join().expect("staller thread").is_some());
}

/// A shard that panics ends the process at once with a non-zero status and a log line
/// naming the shard, for the supervisor to restart it; it used to be swallowed while
/// the other shards kept answering (and handing off to a dead shard).
#[test]
fn a_shard_panic_ends_the_process_with_a_clear_line() {
    let _serial = serial();
    let dir = config_dir("fault-panic", "");
    let mut router = Router::spawn(dir, &[]);
    let mut client = Client::connect(router.addr);
    client.send(
        "POST",
        "/v1/decide",
        &[],
        &decide_body("fault-panic", "boom"),
    );
    let _ = client.read_response();
    let status = router
        .wait_exit()
        .expect("the router exits after a shard panic");
    assert_eq!(status.code(), Some(70), "{status}");
    let line = router.log_shows("supervisor restarts").expect("a log line");
    assert!(line.contains("panicked: fault injection"), "{line}");
    assert!(line.contains("exiting with status 70"), "{line}");
}
