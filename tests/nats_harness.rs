//! The nats-server test harness (`support::nats`), proved with the official `nats` client:
//! if these pass, a failing NATS test of the router points at the router, not at the
//! harness. Each test runs its own server on its own ports.

// The sync `nats` crate marks its API deprecated in favour of async-nats; the blocking
// client is the independent reference wanted here.
#![allow(deprecated)]

mod support;

use std::time::Duration;

use support::nats::{nats_server_path, NatsOptions, NatsServer, TlsFiles};
use support::TempDir;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a client that fails at once instead of retrying in the background.
fn client() -> nats::Options {
    nats::Options::new()
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO)
}

/// A responder on `subject` answering `echo: <body>`, and one request to it.
fn assert_request_reply(connection: &nats::Connection, subject: &str) {
    let sub = connection.subscribe(subject).unwrap();
    let _handler = sub.with_handler(|message| {
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&message.data);
        message.respond(reply)
    });
    connection.flush_timeout(REPLY_TIMEOUT).unwrap();
    let reply = connection
        .request_timeout(subject, "ping", REPLY_TIMEOUT)
        .expect("a reply");
    assert_eq!(reply.data, b"echo: ping");
}

fn tls_options(dir: &TempDir) -> NatsOptions {
    NatsOptions {
        tls: Some(TlsFiles::generate(&dir.0.join("pki"))),
        verify_clients: true,
        ..NatsOptions::default()
    }
}

#[test]
fn nats_server_is_found() {
    let path = nats_server_path();
    assert!(path.ends_with("nats-server"), "{}", path.display());
}

#[test]
fn publish_subscribe_and_request_reply_round_trip() {
    let server = NatsServer::start();
    assert!(
        server.url().starts_with("nats://127.0.0.1:"),
        "{}",
        server.url()
    );
    let connection = client().connect(server.url().as_str()).unwrap();
    let sub = connection.subscribe("harness.pubsub").unwrap();
    connection.publish("harness.pubsub", "hello").unwrap();
    let message = sub
        .next_timeout(REPLY_TIMEOUT)
        .expect("the published message");
    assert_eq!(message.data, b"hello");
    assert_request_reply(&connection, "harness.echo");
}

/// A restart keeps the port, and a client connecting afterwards is served.
#[test]
fn restart_keeps_the_port_and_serves_new_connections() {
    let mut server = NatsServer::start();
    let (port, monitor_port, url) = (server.port, server.monitor_port, server.url());
    assert_request_reply(&client().connect(url.as_str()).unwrap(), "harness.before");
    server.restart();
    assert_eq!((server.port, server.monitor_port), (port, monitor_port));
    assert_eq!(server.url(), url);
    assert_request_reply(&client().connect(url.as_str()).unwrap(), "harness.after");
}

#[test]
fn stop_is_idempotent_and_refuses_clients_afterwards() {
    let mut server = NatsServer::start();
    let url = server.url();
    server.stop();
    server.stop();
    assert!(
        client().connect(url.as_str()).is_err(),
        "connected to a stopped server"
    );
}

/// With client verification, a client holding a certificate from the CA is served over
/// TLS, and one without a certificate is refused during the handshake.
#[test]
fn tls_with_client_verification_serves_certified_clients_only() {
    let dir = TempDir::new("nats-tls");
    let server = NatsServer::start_with(tls_options(&dir));
    let tls = server.options().tls.clone().unwrap();
    assert!(
        server.url().starts_with("tls://127.0.0.1:"),
        "{}",
        server.url()
    );

    let certified = client()
        .add_root_certificate(&tls.ca)
        .client_cert(&tls.client_cert, &tls.client_key)
        .connect(server.url().as_str())
        .expect("a client with a certificate connects");
    assert_request_reply(&certified, "harness.tls");

    let error = client()
        .add_root_certificate(&tls.ca)
        .connect(server.url().as_str())
        .expect_err("a client without a certificate is refused");
    eprintln!("client without a certificate: {error}");
    assert!(
        server.log_shows("client didn't provide a certificate", REPLY_TIMEOUT),
        "server log:\n{}",
        server.log()
    );
}

/// The server's certificate is for 127.0.0.1 and localhost, and only the test CA trusts it.
#[test]
fn tls_server_certificate_needs_the_test_ca() {
    let dir = TempDir::new("nats-tls-ca");
    let server = NatsServer::start_with(tls_options(&dir));
    let tls = server.options().tls.clone().unwrap();
    let localhost = format!("tls://localhost:{}", server.port);
    let by_name = client()
        .add_root_certificate(&tls.ca)
        .client_cert(&tls.client_cert, &tls.client_key)
        .connect(localhost.as_str())
        .expect("localhost is in the server certificate");
    assert_request_reply(&by_name, "harness.localhost");

    let untrusting = client()
        .client_cert(&tls.client_cert, &tls.client_key)
        .connect(server.url().as_str());
    assert!(
        untrusting.is_err(),
        "trusted a certificate from an unknown CA"
    );
}

#[test]
fn token_authentication_refuses_a_wrong_or_missing_token() {
    let server = NatsServer::start_with(NatsOptions {
        token: Some("harness-token-0123".to_owned()),
        ..NatsOptions::default()
    });
    let url = server.url();
    let wrong = nats::Options::with_token("not-the-token")
        .max_reconnects(1)
        .connect(url.as_str());
    assert!(wrong.is_err(), "a wrong token connected");
    assert!(
        client().connect(url.as_str()).is_err(),
        "no token connected"
    );
    let right = nats::Options::with_token("harness-token-0123")
        .connect(url.as_str())
        .expect("the right token connects");
    assert_request_reply(&right, "harness.token");
}

#[test]
fn user_password_authentication_refuses_a_wrong_password() {
    let server = NatsServer::start_with(NatsOptions {
        user: Some(("router".to_owned(), "pa\"ss\\word".to_owned())),
        ..NatsOptions::default()
    });
    let url = server.url();
    let wrong = nats::Options::with_user_pass("router", "password")
        .max_reconnects(1)
        .connect(url.as_str());
    assert!(wrong.is_err(), "a wrong password connected");
    let right = nats::Options::with_user_pass("router", "pa\"ss\\word")
        .connect(url.as_str())
        .expect("the right password connects");
    assert_request_reply(&right, "harness.user");
}

/// The payload limit reaches clients in INFO, and the server refuses a larger message
/// (nats-server logs "maximum payload exceeded", answers `-ERR` and closes that connection; the
/// sync client does not check the limit itself).
#[test]
fn max_payload_is_announced_and_enforced() {
    let server = NatsServer::start_with(NatsOptions {
        max_payload: Some(1024),
        ..NatsOptions::default()
    });
    let subscriber = client().connect(server.url().as_str()).unwrap();
    let sub = subscriber.subscribe("harness.payload").unwrap();
    subscriber.flush_timeout(REPLY_TIMEOUT).unwrap();
    assert_eq!(subscriber.max_payload(), 1024);

    let oversize = client().connect(server.url().as_str()).unwrap();
    let _ = oversize.publish("harness.payload", vec![1u8; 1025]);
    let _ = oversize.flush_timeout(Duration::from_secs(1));
    let fitting = client().connect(server.url().as_str()).unwrap();
    fitting.publish("harness.payload", vec![2u8; 1024]).unwrap();
    fitting.flush_timeout(REPLY_TIMEOUT).unwrap();

    let message = sub
        .next_timeout(REPLY_TIMEOUT)
        .expect("the fitting message");
    assert_eq!(
        message.data,
        vec![2u8; 1024],
        "the oversize message was delivered"
    );
    assert!(
        server.log_shows("maximum payload exceeded", REPLY_TIMEOUT),
        "server log:\n{}",
        server.log()
    );
}
