//! The shard-native NATS client (`transport::nats`) against a real nats-server: request-
//! reply, no responders, headers, reconnect after a server restart, TLS with a client
//! certificate, and bounds (max_payload, in-flight requests).

mod support;

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use shardline::config::{NatsConfig, NatsUrls};
use shardline::transport::nats::{
    Client, ClientOptions, ClientStats, EncodeError, Msg, PublishError, RequestError,
};
use support::nats::{NatsOptions, NatsServer, TlsFiles};
use support::TempDir;

const WAIT: Duration = Duration::from_secs(2);

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

async fn until_connected(c: &Client) {
    for _ in 0..1000 {
        if c.is_connected() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    panic!("the client did not connect within 10 s");
}

/// Subscribes an echo responder (its own connection: the router's client does not
/// receive its own messages) that copies the payload and adds a header.
async fn echo(c: &Client, subject: &str) {
    let handler = Rc::new(|c: &Client, m: Msg<'_>| {
        c.publish(m.reply.unwrap(), None, &[("echoed", "yes")], m.payload)
            .unwrap();
    });
    let responder = Client::start(c.options().clone(), Arc::new(ClientStats::default()), 99);
    until_connected(&responder).await;
    responder
        .subscribe(subject, Some("echoers"), handler)
        .unwrap();
    // A request through the server proves the SUB reached it.
    for _ in 0..300 {
        if c.request(subject, &[], b"", WAIT).await.is_ok() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    panic!("echo responder never answered");
}

fn start(url: String) -> Client {
    let opts = ClientOptions::plain(&url).unwrap();
    Client::start(opts, Arc::new(ClientStats::default()), 7)
}

/// A request gets its reply with headers; a subject nobody serves fails fast with
/// NoResponders, not a timeout.
#[test]
fn request_reply_and_no_responders() {
    let server = NatsServer::start();
    let url = server.url();
    run(move || async move {
        let c = start(url);
        until_connected(&c).await;
        echo(&c, "echo").await;
        let r = c
            .request("echo", &[("k", "v")], b"hello", WAIT)
            .await
            .unwrap();
        assert_eq!(r.payload, b"hello");
        assert_eq!(r.header("echoed"), Some("yes"));
        let started = std::time::Instant::now();
        let e = c.request("nobody.home", &[], b"x", WAIT).await.unwrap_err();
        assert_eq!(e, RequestError::NoResponders("nobody.home".into()));
        assert!(
            started.elapsed() < WAIT,
            "no-responders must not wait for the timeout"
        );
        let stats = c.stats();
        assert!(stats.msgs_in.load(Relaxed) >= 2 && stats.msgs_out.load(Relaxed) >= 2);
        c.close().await;
    });
    drop(server);
}

/// Killing the server drops the connection (requests fail fast meanwhile); once it is
/// back on the same port the client reconnects, resubscribes and serves again.
#[test]
fn reconnects_and_resubscribes_after_a_server_restart() {
    let mut server = NatsServer::start();
    let url = server.url();
    let (down_tx, down_rx) = std::sync::mpsc::channel::<()>();
    let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        down_rx.recv().unwrap();
        server.stop();
        std::thread::sleep(Duration::from_millis(300));
        server.restart();
        up_tx.send(()).unwrap();
        server
    });
    run(move || async move {
        let c = start(url);
        until_connected(&c).await;
        echo(&c, "echo").await;
        down_tx.send(()).unwrap();
        for _ in 0..500 {
            if !c.is_connected() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !c.is_connected(),
            "the client must notice the server is gone"
        );
        let e = c.request("echo", &[], b"x", WAIT).await.unwrap_err();
        assert_eq!(e, RequestError::NotConnected);
        while up_rx.try_recv().is_err() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        until_connected(&c).await;
        let r = c.request("echo", &[], b"again", WAIT).await.unwrap();
        assert_eq!(r.payload, b"again");
        assert!(c.stats().reconnects.load(Relaxed) >= 1);
        c.close().await;
    });
    drop(t.join().unwrap());
}

/// TLS with a client certificate connects and round-trips; without a certificate the
/// server refuses the client, which never reports itself connected.
#[test]
fn mutual_tls_with_and_without_a_client_certificate() {
    let dir = TempDir::new("nats-client-tls");
    let files = TlsFiles::generate(&dir.0);
    let server = NatsServer::start_with(NatsOptions {
        tls: Some(files.clone()),
        verify_clients: true,
        ..NatsOptions::default()
    });
    let url = server.url();
    let config = |cert: bool| NatsConfig {
        url: NatsUrls::new(url.clone()),
        tls_ca: Some(files.ca.clone()),
        tls_cert: cert.then(|| files.client_cert.clone()),
        tls_key: cert.then(|| files.client_key.clone()),
        ..NatsConfig::default()
    };
    let with = ClientOptions::from_config(&config(true)).unwrap().unwrap();
    let without = ClientOptions::from_config(&config(false)).unwrap().unwrap();
    run(move || async move {
        let c = Client::start(with, Arc::new(ClientStats::default()), 1);
        until_connected(&c).await;
        echo(&c, "secure.echo").await;
        let r = c.request("secure.echo", &[], b"tls", WAIT).await.unwrap();
        assert_eq!(r.payload, b"tls");
        let refused = Client::start(without, Arc::new(ClientStats::default()), 2);
        glommio::timer::sleep(Duration::from_millis(500)).await;
        assert!(!refused.is_connected());
        assert!(refused.stats().connect_failures.load(Relaxed) >= 1);
        refused.close().await;
        c.close().await;
    });
    drop(server);
}

/// The server's max_payload is enforced before sending, and a publish that does not fit
/// the outbound buffer is refused at once.
#[test]
fn payload_and_buffer_bounds_are_enforced() {
    let server = NatsServer::start_with(NatsOptions {
        max_payload: Some(1024),
        ..NatsOptions::default()
    });
    let url = server.url();
    run(move || async move {
        let mut opts = ClientOptions::plain(&url).unwrap();
        opts.outbound_bytes_max = 4096;
        let c = Client::start(opts, Arc::new(ClientStats::default()), 3);
        until_connected(&c).await;
        assert_eq!(c.max_payload(), 1024);
        let big = vec![b'x'; 1025];
        let e = c.publish("s", None, &[], &big).unwrap_err();
        assert_eq!(
            e,
            PublishError::Encode(EncodeError::TooLarge {
                size: 1025,
                max: 1024
            })
        );
        // Without yielding, nothing is written: the buffer fills and refuses.
        let msg = vec![b'y'; 1000];
        let sent = (0..10)
            .take_while(|_| c.publish("s", None, &[], &msg).is_ok())
            .count();
        assert!((2..=4).contains(&sent), "sent {sent} before the bound");
        assert!(c.stats().outbound_full.load(Relaxed) >= 1);
        c.close().await;
    });
    drop(server);
}

/// A server of a large cluster sends an INFO of 40 KiB (its `connect_urls`): the client
/// reads it and connects, where a 4 KiB control-line bound made it reconnect forever.
/// The server is a tiny fake over a real socket: the thing under test is our client.
#[test]
fn connects_to_a_server_whose_info_is_40_kib() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let urls: Vec<String> = (0..2_500).map(|i| format!("\"10.0.{i}.1:4222\"")).collect();
    let info = format!(
        "INFO {{\"server_id\":\"fake\",\"max_payload\":1048576,\"headers\":true,\
         \"connect_urls\":[{}]}}\r\n",
        urls.join(",")
    );
    assert!(info.len() > 40 << 10, "{}", info.len());
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if conn.write_all(info.as_bytes()).is_err() {
                continue;
            }
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(6).any(|w| w == b"PING\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"PONG\r\n");
            open.push(conn);
        }
    });
    run(move || async move {
        let c = start(url);
        until_connected(&c).await;
        assert_eq!(c.stats().connect_failures.load(Relaxed), 0);
        c.close().await;
    });
}
