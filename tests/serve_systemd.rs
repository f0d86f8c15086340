//! `shardline serve` under a `Type=notify` unit, as systemd runs it: the built binary in
//! its own process with `NOTIFY_SOCKET` naming a socket this test binds (standing in for
//! systemd), and `WATCHDOG_USEC` set as `WatchdogSec=` does.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::systemd::NotifySocket;
use support::*;

/// Bound of every wait: generous for a loaded machine, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

fn spawn(dir: &TempDir, env: Vec<(String, String)>) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shardline serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
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
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// Kills the child by PID if the test fails before it exits.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// READY=1 comes once the router answers decisions, WATCHDOG=1 keeps coming while it
/// serves (at WATCHDOG_USEC/2 = 100 ms here), and SIGTERM brings STOPPING=1 before the
/// process exits 0.
#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let _serial = serial();
    let notify = NotifySocket::bind("systemd-notify");
    let dir = config_dir("systemd", "drain_grace_ms = 200\ndrain_timeout_ms = 1000");
    let (child, addr) = spawn(&dir, notify.env(200_000));
    let mut child = Reap(child);

    let before_ready = notify.until("READY=1", WAIT);
    let ready = before_ready.last().unwrap();
    assert!(ready.contains("STATUS=serving on "), "{ready}");
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], &decide_body("acme", "r1"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    for _ in 0..3 {
        notify.until("WATCHDOG=1", WAIT);
    }

    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    let stopping = notify.until("STOPPING=1", WAIT);
    assert!(
        stopping.iter().all(|m| !m.contains("READY=1")),
        "{stopping:?}"
    );

    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// Without NOTIFY_SOCKET nothing is sent and the router serves as before; a socket that
/// nobody listens on (systemd gone) is logged, never fatal.
#[test]
fn a_dead_notify_socket_does_not_stop_the_router() {
    let _serial = serial();
    let dir = config_dir(
        "systemd-dead",
        "drain_grace_ms = 0\ndrain_timeout_ms = 1000",
    );
    let gone = dir.0.join("nobody-listens.sock");
    let env = vec![
        (
            "NOTIFY_SOCKET".to_owned(),
            gone.to_str().unwrap().to_owned(),
        ),
        ("WATCHDOG_USEC".to_owned(), "200000".to_owned()),
    ];
    let (child, addr) = spawn(&dir, env);
    let mut child = Reap(child);
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], &decide_body("acme", "r2"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    // SAFETY: as above.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {WAIT:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
