//! Black-box tests of the HTTP/1.1 layer over real sockets: a glommio executor in a
//! background thread serves a small echo `Service` on 127.0.0.1:0, and a std `TcpStream`
//! client speaks raw HTTP to it (rustls for HTTPS). Every client read has a timeout, so
//! a hung server fails a test instead of hanging it.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardline::transport::http::{
    bind, serve, HttpLimits, HttpStats, Request, Response, Service, Stop, TlsAcceptor,
};

/// No client read waits longer than this.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// `/slow` takes this long to answer.
const SLOW_SERVICE: Duration = Duration::from_millis(600);
/// glommio's io_uring buffers per test executor (the default 10 MiB exceeds memlock).
const TEST_IO_MEMORY_BYTES: usize = 1 << 20;

/// Echoes what it saw: `{"method":"Post","path":"/x","query":"a=1","body_len":5}`.
struct Echo;

impl Service for Echo {
    async fn call<'a>(&'a self, req: &'a Request<'a>, resp: &'a mut Response) {
        if req.path == "/slow" {
            glommio::timer::sleep(SLOW_SERVICE).await;
        }
        let mut body = String::new();
        write!(
            body,
            r#"{{"method":"{:?}","path":"{}","query":"{}","body_len":{}}}"#,
            req.method,
            req.path,
            req.query.unwrap_or(""),
            req.body.len()
        )
        .unwrap();
        resp.body.extend_from_slice(body.as_bytes());
    }
}

/// A server on its own executor thread; dropping it stops it.
struct TestServer {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl TestServer {
    fn start(limits: HttpLimits) -> TestServer {
        TestServer::start_with(limits, None)
    }

    fn start_with(limits: HttpLimits, tls: Option<TlsAcceptor>) -> TestServer {
        let stats = Arc::new(HttpStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (addr_tx, addr_rx) = mpsc::channel();
        let (server_stats, stop_flag) = (stats.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let executor = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(TEST_IO_MEMORY_BYTES)
                .make()
                .map_err(|e| e.to_string())?;
            executor.run(async move {
                let listener = bind("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let stop = Stop::new();
                glommio::spawn_local(watch(stop_flag, stop.clone())).detach();
                let served = serve(listener, Rc::new(Echo), limits, server_stats, tls, stop);
                served.await.map_err(|e| e.to_string())
            })
        });
        let addr = addr_rx
            .recv_timeout(CLIENT_READ_TIMEOUT)
            .expect("server started");
        TestServer {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client<TcpStream> {
        Client::new(connect(self.addr))
    }

    fn trigger_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the server and returns what `serve` returned.
    fn join(mut self) -> Result<(), String> {
        self.trigger_stop();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Triggers the shard's `Stop` once the test thread raises the flag.
async fn watch(flag: Arc<AtomicBool>, stop: Stop) {
    while !flag.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    stop.trigger();
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A raw HTTP client that keeps bytes read past one response for the next.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.reply()
    }

    /// Reads one response (with a `Content-Length` body, or none for 1xx).
    fn reply(&mut self) -> Reply {
        loop {
            if let Some(reply) = self.parse_buffered() {
                return reply;
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("response within the timeout");
            assert!(
                n > 0,
                "connection closed before a whole response: {:?}",
                self.buf
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse_buffered(&mut self) -> Option<Reply> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&self.buf).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return None,
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
        if self.buf.len() < head_len + length {
            return None;
        }
        let status = parsed.code.unwrap();
        let body = self.buf[head_len..head_len + length].to_vec();
        self.buf.drain(..head_len + length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Asserts the server closed the connection with nothing more to say.
    fn assert_closed(&mut self) {
        let mut chunk = [0u8; 64];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!("expected end of stream, got {:?}", &chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected end of stream, got {e}"),
        }
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
    }
}

fn short_limits() -> HttpLimits {
    HttpLimits {
        read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(3),
        ..HttpLimits::default()
    }
}

#[test]
fn keep_alive_serves_three_requests_on_one_connection() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    for i in 0..3 {
        let reply = client.get(&format!("/k{i}?n={i}"));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("connection"), None);
        assert!(reply.header("date").is_some_and(|d| d.ends_with(" GMT")));
        let json = reply.json();
        assert_eq!(json["path"], format!("/k{i}"));
        assert_eq!(json["query"], format!("n={i}"));
    }
    drop(client);
    assert_eq!(server.join(), Ok(()));
}

/// Five requests written at once are answered in order, each exactly once.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    let mut batch = String::new();
    for i in 0..5 {
        if i % 2 == 0 {
            write!(batch, "GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        } else {
            write!(
                batch,
                "POST /p{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {i}\r\n\r\n"
            )
            .unwrap();
            batch.push_str(&"x".repeat(i));
        }
    }
    client.send(batch.as_bytes());
    for i in 0..5 {
        let reply = client.reply();
        assert_eq!(reply.status, 200);
        let json = reply.json();
        assert_eq!(json["path"], format!("/p{i}"));
        assert_eq!(json["body_len"], if i % 2 == 0 { 0 } else { i });
    }
    assert_eq!(server.stats.snapshot().requests, 5);
}

/// More pipelined requests than `pipeline_max` are answered in several batches, still in
/// order, without the client sending anything more.
#[test]
fn pipelines_longer_than_pipeline_max_are_answered_in_batches() {
    let limits = HttpLimits {
        pipeline_max: 2,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    let batch: String = (0..7)
        .map(|i| format!("GET /b{i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    client.send(batch.as_bytes());
    for i in 0..7 {
        assert_eq!(client.reply().json()["path"], format!("/b{i}"));
    }
}

/// A body larger than the initial read buffer arrives over several reads; the buffer
/// grows for it and the connection keeps serving afterwards.
#[test]
fn large_body_over_several_reads() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    let body = vec![b'z'; 300 * 1024];
    let head = format!(
        "POST /large HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    for part in body.chunks(64 * 1024) {
        client.send(part);
    }
    assert_eq!(client.reply().json()["body_len"], 300 * 1024);
    assert_eq!(client.get("/small").status, 200);
}

#[test]
fn head_is_answered_without_a_body() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = client.stream.read(&mut chunk).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8(raw).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: "), "{head}");
    // The next response follows the head directly: no body bytes in between.
    assert_eq!(client.get("/next").json()["path"], "/next");
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client.send(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    client.assert_closed();
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.header("connection"), Some("keep-alive"));
    client.send(b"GET /b HTTP/1.0\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.json()["path"], "/b");
    assert_eq!(reply.header("connection"), Some("close"));
    client.assert_closed();
}

#[test]
fn chunked_body_is_decoded() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(20));
    client.send(b"7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_len"], 12);
    // The connection is still usable after a chunked request.
    assert_eq!(client.get("/after").json()["path"], "/after");
}

/// A chunked request's decoded body never carries over into the next request on the same
/// connection (behind a pooling proxy, the next request is another client's).
#[test]
fn every_request_starts_from_an_empty_body() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    let chunked =
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let sized = b"POST /l HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    // One at a time: chunked three times, then mixed with Content-Length.
    for (request, len) in [
        (&chunked[..], 5),
        (&chunked[..], 5),
        (&chunked[..], 5),
        (&sized[..], 3),
        (&chunked[..], 5),
        (&sized[..], 3),
    ] {
        client.send(request);
        let reply = client.reply();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["body_len"], len);
    }
    // Pipelined: four requests in one write, answered in order with their own bodies.
    let mut pipelined = Vec::new();
    for request in [&chunked[..], &chunked[..], &sized[..], &chunked[..]] {
        pipelined.extend_from_slice(request);
    }
    client.send(&pipelined);
    for len in [5, 5, 3, 5] {
        let reply = client.reply();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["body_len"], len);
    }
}

#[test]
fn expect_continue_is_answered_before_the_body() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client
        .send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    let interim = client.reply();
    assert_eq!(interim.status, 100);
    client.send(b"abc");
    let reply = client.reply();
    assert_eq!(
        (reply.status, reply.json()["body_len"].as_u64()),
        (200, Some(3))
    );
}

#[test]
fn oversized_body_gets_413_and_close() {
    let limits = HttpLimits {
        body_bytes_max: 1024,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    client.send(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
    let json = reply.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["code"], "payload_too_large");
    assert_eq!(
        json["error"]["message"],
        "the request body exceeds 1024 bytes"
    );
    client.assert_closed();

    // A chunked body is held to the same limit while it is decoded.
    let mut client = server.connect();
    let mut chunked =
        b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'a'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    client.send(&chunked);
    assert_eq!(client.reply().status, 413);
    client.assert_closed();
    assert_eq!(server.stats.snapshot().bad_requests, 2);
}

#[test]
fn too_many_headers_get_431() {
    let limits = HttpLimits {
        headers_max: 8,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    let mut head = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..8 {
        write!(head, "X-H{i}: v\r\n").unwrap();
    }
    head.push_str("\r\n");
    client.send(head.as_bytes());
    let reply = client.reply();
    assert_eq!(reply.status, 431);
    let json = reply.json();
    assert_eq!(json["error"]["code"], "invalid_request");
    assert_eq!(
        json["error"]["message"],
        "the request has more than 8 headers (headers_max)"
    );
    client.assert_closed();
}

#[test]
fn oversized_head_gets_431() {
    let limits = HttpLimits {
        header_bytes_max: 4096,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "v".repeat(5000)
    );
    client.send(head.as_bytes());
    let reply = client.reply();
    assert_eq!(reply.status, 431);
    assert!(
        reply.body_text().contains("header_bytes_max"),
        "{}",
        reply.body_text()
    );
}

/// A head over `header_bytes_max` is 431 whatever follows the limit: a malformed header
/// past it, sent in the same write, used to turn the answer into 400 (and the answer
/// depended on how the bytes were split across reads). Found by `shardline-fuzz`.
#[test]
fn head_over_the_limit_gets_431_whatever_follows() {
    let limits = HttpLimits {
        header_bytes_max: 4096,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nBad\x01Header: v\r\n\r\n",
        "v".repeat(5000)
    );
    client.send(head.as_bytes());
    let reply = client.reply();
    assert_eq!(reply.status, 431, "{}", reply.body_text());
    assert!(
        reply.body_text().contains("header_bytes_max"),
        "{}",
        reply.body_text()
    );
    client.assert_closed();
}

#[test]
fn garbage_gets_400_and_close() {
    let server = TestServer::start(HttpLimits::default());
    let mut client = server.connect();
    client.send(b"\x00\x01garbage\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "invalid_request");
    client.assert_closed();
    assert_eq!(server.stats.snapshot().responses_by_class, [0, 0, 1, 0]);
}

/// A client that sends half a head and stalls is answered 408 and closed once
/// `read_timeout` (300 ms here) has passed since its first byte.
#[test]
fn slow_client_is_closed_after_the_read_timeout() {
    let server = TestServer::start(short_limits());
    let mut client = server.connect();
    let started = Instant::now();
    client.send(b"GET /slowloris HTTP/1.1\r\nHost: t\r\nX-Partial: ");
    // Trickling more bytes does not move the deadline.
    std::thread::sleep(Duration::from_millis(150));
    client.send(b"a");
    let reply = client.reply();
    let waited = started.elapsed();
    assert_eq!(reply.status, 408);
    assert_eq!(reply.json()["error"]["code"], "invalid_request");
    client.assert_closed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "closed late: {waited:?}");
    assert_eq!(server.stats.snapshot().timeouts_closed, 1);
}

#[test]
fn idle_connection_is_closed_silently() {
    let server = TestServer::start(short_limits());
    let mut client = server.connect();
    assert_eq!(client.get("/once").status, 200);
    let started = Instant::now();
    client.assert_closed();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.stats.snapshot().timeouts_closed, 1);
}

/// With a cap of 2, a third connection is answered 503 `overloaded` and closed, and
/// the first two keep working.
#[test]
fn connections_over_the_cap_get_503() {
    let limits = HttpLimits {
        connections_max: 2,
        ..HttpLimits::default()
    };
    let server = TestServer::start(limits);
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.get("/1").status, 200);
    assert_eq!(second.get("/2").status, 200);
    let mut third = server.connect();
    third.send(b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = third.reply();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("connection"), Some("close"));
    let json = reply.json();
    assert_eq!(json["error"]["code"], "overloaded");
    assert_eq!(
        json["error"]["message"],
        "connection limit reached on this shard"
    );
    third.assert_closed();
    assert_eq!(first.get("/1b").status, 200);
    let stats = server.stats.snapshot();
    assert_eq!((stats.connections_refused, stats.connections_open), (1, 2));
}

/// A request in flight when the stop is triggered is still answered (with
/// `Connection: close`), and `serve` returns once it is.
#[test]
fn stop_lets_requests_in_flight_finish() {
    let server = TestServer::start(short_limits());
    let mut busy = server.connect();
    let mut idle = server.connect();
    assert_eq!(idle.get("/warm").status, 200);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(150));
    server.trigger_stop();
    let reply = busy.reply();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/slow");
    assert_eq!(reply.header("connection"), Some("close"));
    busy.assert_closed();
    idle.assert_closed();
    let addr = server.addr;
    assert_eq!(server.join(), Ok(()));
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

/// Two executors on two threads bind the same port (SO_REUSEPORT).
#[test]
fn two_shards_bind_the_same_port() {
    let (port_tx, port_rx) = mpsc::channel();
    let first = std::thread::spawn(move || {
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(TEST_IO_MEMORY_BYTES)
            .make()
            .unwrap();
        executor.run(async move {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            port_tx.send(listener.local_addr().unwrap()).unwrap();
            glommio::timer::sleep(Duration::from_millis(500)).await;
        });
    });
    let addr = port_rx.recv_timeout(CLIENT_READ_TIMEOUT).unwrap();
    let second = std::thread::spawn(move || {
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(TEST_IO_MEMORY_BYTES)
            .make()
            .unwrap();
        executor.run(async move { bind(addr).map(|l| l.local_addr().unwrap()) })
    });
    let bound = second
        .join()
        .unwrap()
        .expect("second bind on the same port");
    assert_eq!(bound, addr);
    first.join().unwrap();
}

/// Test PKI: a CA, a server certificate for `localhost`, a client certificate.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir =
            std::env::temp_dir().join(format!("shardline-http-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "shardline test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Writes `<name>.pem` and `<name>.key` signed by the CA.
    fn issue(&self, name: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (cert_path, key_path) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn server(&self, require_client_cert: bool) -> TlsAcceptor {
        let (cert, key) = self.issue("server", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let ca = self.path("ca.pem");
        let client_ca = require_client_cert.then_some(ca.as_path());
        TlsAcceptor::from_pem_files(&cert, &key, client_ca).unwrap()
    }

    fn client_config(&self, client_cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = vec![CertificateDer::from_pem_file(cert).unwrap()];
                let key = PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type TlsClient = Client<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    Client::new(rustls::StreamOwned::new(connection, connect(addr)))
}

/// Sends one request over a fresh TLS connection; `Err` if the server refused it.
fn tls_get(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Reply> {
    let mut client = tls_client(addr, config);
    client
        .stream
        .write_all(b"GET /tls HTTP/1.1\r\nHost: t\r\n\r\n")?;
    client.stream.flush()?;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(reply) = client.parse_buffered() {
            return Ok(reply);
        }
        let n = client.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        client.buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn https_serves_requests() {
    let pki = Pki::new("https");
    let server = TestServer::start_with(HttpLimits::default(), Some(pki.server(false)));
    let mut client = tls_client(server.addr, pki.client_config(None));
    for _ in 0..2 {
        let reply = client.get("/tls");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], "/tls");
    }
    assert_eq!(client.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A plain-text client on the TLS port gets no HTTP answer.
    let mut plain = server.connect();
    plain.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut chunk = [0u8; 16];
    let answer = plain.stream.read(&mut chunk);
    assert!(!matches!(answer, Ok(n) if n > 4 && chunk.starts_with(b"HTTP")));
}

/// With a client CA configured, a client without a certificate is refused and a client
/// with a certificate signed by that CA is served.
#[test]
fn mtls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new("mtls");
    let server = TestServer::start_with(HttpLimits::default(), Some(pki.server(true)));
    let anonymous = tls_get(server.addr, pki.client_config(None));
    assert!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );

    let (cert, key) = pki.issue("client", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let reply = tls_get(server.addr, pki.client_config(Some((&cert, &key)))).unwrap();
    assert_eq!(reply.status, 200);

    let other = Pki::new("mtls-other");
    let (cert, key) = other.issue("stranger", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = tls_get(server.addr, pki.client_config(Some((&cert, &key))));
    assert!(stranger.is_err(), "served a certificate from another CA");
    // The client can see the alert just before the server counts the failure.
    let counted = || server.stats.snapshot().tls_handshake_failures == 2;
    assert!(eventually(counted), "{:?}", server.stats.snapshot());
}

/// Polls `condition` for up to `CLIENT_READ_TIMEOUT`.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > CLIENT_READ_TIMEOUT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}
