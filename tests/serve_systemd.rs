//! `shardline serve` under a `Type=notify` unit, as systemd runs it: the built binary in
//! its own process with `NOTIFY_SOCKET` naming a socket this test binds (standing in for
//! systemd), and `WATCHDOG_USEC` set as `WatchdogSec=` does.

mod support;

use std::time::Duration;

use support::process::RouterProcess;
use support::systemd::NotifySocket;
use support::*;

/// Bound of every wait: generous for a loaded machine, never a speed assertion.
const WAIT: Duration = Duration::from_secs(20);

/// READY=1 comes once the router answers decisions, WATCHDOG=1 keeps coming while it
/// serves (at WATCHDOG_USEC/2 = 100 ms here), and SIGTERM brings STOPPING=1 before the
/// process exits 0.
#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let _serial = serial();
    let notify = NotifySocket::bind("systemd-notify");
    let dir = config_dir("systemd", "drain_grace_ms = 200\ndrain_timeout_ms = 1000");
    let mut router = RouterProcess::spawn_env(&dir.0.join("shardline.toml"), notify.env(200_000));
    let addr = router.addr;

    let before_ready = notify.until("READY=1", WAIT);
    let ready = before_ready.last().unwrap();
    assert!(ready.contains("STATUS=serving on "), "{ready}");
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], &decide_body("acme", "r1"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    for _ in 0..3 {
        notify.until("WATCHDOG=1", WAIT);
    }

    router.sigterm();
    let stopping = notify.until("STOPPING=1", WAIT);
    assert!(
        stopping.iter().all(|m| !m.contains("READY=1")),
        "{stopping:?}"
    );

    let status = router.wait_exit(WAIT).expect("an exit after SIGTERM");
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
    let mut router = RouterProcess::spawn_env(&dir.0.join("shardline.toml"), env);
    let addr = router.addr;
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], &decide_body("acme", "r2"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    router.sigterm();
    let status = router.wait_exit(WAIT).expect("an exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}
