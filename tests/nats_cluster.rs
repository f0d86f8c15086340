//! The three-server JetStream cluster harness (`support::nats::cluster`), proved with
//! the official `nats` client over JetStream's own API subjects: if these pass, a failing
//! cluster test of the router points at the router, not at the harness.

// The sync `nats` crate marks its API deprecated in favour of async-nats; the blocking
// client is the independent reference wanted here.
#![allow(deprecated)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::nats::cluster::NatsCluster;

const SERVERS: usize = 3;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the survivors of a kill have to elect a new leader for a stream the killed server
/// led (a few seconds on a quiet machine).
const STREAM_FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
const STREAM_R3: &str = r#"{"name":"T","subjects":["t.>"],"num_replicas":3,"storage":"file"}"#;

/// A client of server `i` only, failing at once instead of retrying in the background.
fn connect(cluster: &NatsCluster, i: usize) -> nats::Connection {
    nats::Options::new()
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO)
        .connect(cluster.url(i))
        .unwrap_or_else(|e| panic!("connect to server {i}: {e}"))
}

/// The JSON answer to a request on `subject`; panics when none comes or it is not JSON.
fn request(connection: &nats::Connection, subject: &str, body: &str) -> Value {
    let reply = connection
        .request_timeout(subject, body, REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.data)
        .unwrap_or_else(|e| panic!("{subject}: not JSON ({e}): {:?}", reply.data))
}

/// The answer to a JetStream API request, which must not be an error.
fn js_ok(connection: &nats::Connection, subject: &str, body: &str) -> Value {
    let answer = request(connection, subject, body);
    assert!(answer.get("error").is_none(), "{subject}: {answer}");
    answer
}

/// Publishes on `subject` and returns the stream's acknowledgement, retrying while the
/// stream has no leader (no responder, a timeout or an error answer) up to
/// `STREAM_FAILOVER_TIMEOUT`.
fn publish_acked(cluster: &NatsCluster, connection: &nats::Connection, subject: &str) -> Value {
    let deadline = Instant::now() + STREAM_FAILOVER_TIMEOUT;
    loop {
        let last = match connection.request_timeout(subject, "m", Duration::from_secs(1)) {
            Ok(reply) => {
                let ack: Value = serde_json::from_slice(&reply.data).unwrap_or_default();
                if ack["seq"].is_u64() {
                    return ack;
                }
                format!("{ack} ({:?})", reply.data)
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no acknowledgement within {STREAM_FAILOVER_TIMEOUT:?}, last: {last}\nn2 log:\n{}",
            cluster.log(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every server answers JetStream's account info: each has JetStream and reaches a meta
/// leader, which is what the harness waits for before it returns.
#[test]
fn every_server_answers_jetstream_requests() {
    let cluster = NatsCluster::start(SERVERS);
    assert_eq!(cluster.urls().split(',').count(), SERVERS);
    for i in 0..SERVERS {
        assert!(cluster.urls().contains(&cluster.url(i)));
        let info = js_ok(&connect(&cluster, i), "$JS.API.INFO", "");
        assert_eq!(
            info["type"],
            "io.nats.jetstream.api.v1.account_info_response"
        );
    }
}

/// The servers form one JetStream cluster: a stream of three replicas can be created, and a
/// message stored through server 1 is read back through server 3.
#[test]
fn a_replicated_stream_serves_a_message_on_another_server() {
    let cluster = NatsCluster::start(SERVERS);
    let first = connect(&cluster, 0);
    let created = js_ok(&first, "$JS.API.STREAM.CREATE.T", STREAM_R3);
    assert_eq!(created["config"]["num_replicas"], 3, "{created}");
    let ack = js_ok(&first, "t.greeting", "hello");
    assert_eq!(
        (&ack["stream"], &ack["seq"]),
        (&"T".into(), &1.into()),
        "{ack}"
    );

    let third = connect(&cluster, 2);
    let got = js_ok(&third, "$JS.API.STREAM.MSG.GET.T", r#"{"seq":1}"#);
    assert_eq!(got["message"]["subject"], "t.greeting", "{got}");
    assert_eq!(got["message"]["data"], "aGVsbG8=", "base64 of hello: {got}");
}

/// A kill loses no quorum: with server 1 gone the stream still takes messages through
/// server 2, and a restarted server 1 (same ports, same store) serves JetStream again.
#[test]
fn the_stream_survives_a_killed_server_which_comes_back() {
    let mut cluster = NatsCluster::start(SERVERS);
    js_ok(&connect(&cluster, 0), "$JS.API.STREAM.CREATE.T", STREAM_R3);

    cluster.kill(0);
    let second = connect(&cluster, 1);
    let ack = publish_acked(&cluster, &second, "t.during");
    assert_eq!(
        (&ack["stream"], &ack["seq"]),
        (&"T".into(), &1.into()),
        "{ack}"
    );

    cluster.restart(0);
    let info = js_ok(&connect(&cluster, 0), "$JS.API.INFO", "");
    assert_eq!(info["streams"], 1, "{info}");
}
