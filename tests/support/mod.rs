//! Shared by the black-box server tests: a router started in-process on 127.0.0.1:0 with
//! a private copy of the example policies, and a raw HTTP/1.1 client over std sockets.
//!
//! Servers in one test binary run one at a time (`serial`): each pins a shard per core
//! and locks io_uring memory, and two at once would only measure contention.
//!
//! `nats` starts a real nats-server (plain, TLS with client verification, token or
//! user/password) for tests that speak NATS, or a cluster of them with JetStream.

#![allow(dead_code)]

pub mod bench;
pub mod nats;
pub mod process;
pub mod systemd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use shardline::admin::{Permissions, TokenSpec};
use shardline::config::Config;
use shardline::server::{Server, ServerSettings};

/// An all-tenants admin token and an `acme`-only one.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const ACME_TOKEN: &str = "test-acme-token-0123456789";

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock that runs server tests one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("shardline-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A config directory holding a copy of `config/policies` and a `shardline.toml` made
/// of `extra_toml` (on top of test defaults: port 0, two tokens, the operations listener
/// on port 0 so that routers started in parallel never collide on its default port).
pub fn config_dir(name: &str, extra_toml: &str) -> TempDir {
    let dir = TempDir::new(name);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&repo.join("config/policies"), &dir.0.join("policies"));
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n{extra_toml}\n",
    );
    std::fs::write(dir.0.join("shardline.toml"), toml).unwrap();
    dir
}

/// Loads `DIR/shardline.toml` and adds the two test tokens, each holding every scope.
pub fn settings(dir: &TempDir) -> ServerSettings {
    let config = Config::load(&dir.0.join("shardline.toml")).expect("test config");
    let mut settings = ServerSettings::from_config(&config);
    let token = |token: &str, tenant: Option<&str>| TokenSpec {
        token: token.to_owned(),
        tenant: tenant.map(str::to_owned),
        permissions: Permissions::ALL,
    };
    settings.tokens = vec![token(ADMIN_TOKEN, None), token(ACME_TOKEN, Some("acme"))];
    settings.watch_interval = Duration::from_millis(50);
    settings
}

pub fn start(settings: ServerSettings) -> Server {
    Server::start(settings).expect("server starts")
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A keep-alive HTTP/1.1 connection with a read timeout.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// Writes raw bytes (one or several pipelined requests).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send_raw(&request_bytes(method, path, headers, body));
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send(method, path, headers, body);
        self.read_response().expect("a response")
    }

    /// Reads one response; `None` when the server closed the connection first.
    pub fn read_response(&mut self) -> Option<Response> {
        read_response_from(&mut self.reader)
    }
}

/// Reads one HTTP/1.1 response from any byte stream (plain TCP or TLS); `None` on an error
/// or a close before a whole response.
pub fn read_response_from(reader: &mut impl BufRead) -> Option<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Response {
        status,
        headers,
        body,
    })
}

pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A decide body for `tenant` with `request_id`.
pub fn decide_body(tenant: &str, request_id: &str) -> Vec<u8> {
    format!(
        r#"{{"request_id":"{request_id}","tenant_id":"{tenant}","task":{{"type":"chat","payload_ref":"p"}}}}"#
    )
    .into_bytes()
}

/// Tenant names that land on every shard of `shards` (by the documented partition).
pub fn tenants_covering(shards: usize) -> Vec<String> {
    let partition = shards::Partitioner::new(shards);
    let mut found: Vec<Option<String>> = vec![None; shards];
    for i in 0.. {
        let t = format!("tenant{i}");
        let s = partition.shard_of(&t).index();
        if found[s].is_none() {
            found[s] = Some(t);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

/// Posts an ExecResult with the admin token (it holds the `results` scope), expects 202
/// and returns the answer.
pub fn post_result(client: &mut Client, body: &serde_json::Value) -> serde_json::Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let resp = client.request(
        "POST",
        "/v1/results",
        &[("Authorization", &auth)],
        &serde_json::to_vec(body).unwrap(),
    );
    assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()
}

/// Decides request `r-N` for acme's `policy`, preferring provider `first`
/// (`constraints.order`), with `explain`: (status, body).
pub fn decide_preferring(
    client: &mut Client,
    n: u32,
    policy: &str,
    first: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "request_id": format!("r-{n}"),
        "tenant_id": "acme",
        "policy_id": policy,
        "task": {"type": "chat", "payload_ref": "p"},
        "constraints": {"order": [first]},
        "explain": true,
    });
    let resp = client.request(
        "POST",
        "/v1/decide",
        &[],
        &serde_json::to_vec(&body).unwrap(),
    );
    (resp.status, resp.json())
}

/// Whether a decision (asked with `explain`) lists `step` in its explanation.
pub fn explained(decision: &serde_json::Value, step: &str) -> bool {
    decision["explanation"]
        .as_array()
        .is_some_and(|steps| steps.iter().any(|s| s == step))
}

/// Writes a minimal valid policy for `tenant` into a config dir's policies.
pub fn write_policy(dir: &TempDir, tenant: &str, id: &str, doc: &str) {
    let t = dir.0.join("policies").join(tenant);
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join(format!("{id}.json")), doc).unwrap();
}

/// Takes the bundled rate limit out of acme's policies in a config dir. For tests that
/// must see every request decided: on a loaded machine a shard's lease can stay cold long
/// enough to answer a few `rate_limited` well under the limit (docs/API.md, "State across
/// shards").
pub fn without_acme_rate_limits(dir: &TempDir) {
    for file in ["acme/default.json", "acme/premium.json"] {
        let path = dir.0.join("policies").join(file);
        let mut policy: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        policy.as_object_mut().unwrap().remove("rate_limit");
        std::fs::write(&path, policy.to_string()).unwrap();
    }
}

pub const SIMPLE_POLICY: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":60},{"name":"anthropic","weight":40}]}"#;

/// Shards a server with `cores = "all"` runs: one per usable core.
pub fn usable_cores() -> usize {
    shards::Topology::detect()
        .expect("CPU topology")
        .usable()
        .len()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The first of `count` consecutive TCP ports on 127.0.0.1 that are free right now.
pub fn free_port_base(count: usize) -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind(loopback(0)).expect("bind 127.0.0.1:0");
        let base = first.local_addr().unwrap().port();
        if usize::from(base) + count > usize::from(u16::MAX) {
            continue;
        }
        let rest: Result<Vec<_>, _> = (1..count)
            .map(|i| std::net::TcpListener::bind(loopback(base + i as u16)))
            .collect();
        if rest.is_ok() {
            return base;
        }
    }
    panic!("found no {count} consecutive free ports");
}

/// Starts a router whose shard `i` also listens on `base + i` (`server.shard_port_base`
/// in its config file) and returns it with `base`. `prepare` runs on the fresh config dir
/// before the start (to write policies). Retries with other ports if one was taken since
/// it was found free.
pub fn start_with_shard_ports(
    name: &str,
    extra_toml: &str,
    prepare: impl Fn(&TempDir),
) -> (TempDir, Server, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let base = free_port_base(usable_cores());
        let dir = config_dir(name, &format!("shard_port_base = {base}\n{extra_toml}"));
        prepare(&dir);
        match Server::start(settings(&dir)) {
            Ok(server) => return (dir, server, base),
            Err(e) => last = format!("{e:#}"),
        }
    }
    panic!("no server on shard ports: {last}");
}

/// Reads one response and tells a clean end from a cut one: `Ok(None)` when the
/// connection ended (EOF or reset) before the response's first byte; `Err` when it ended
/// inside a response, the bytes are not a response, or the read timed out.
pub fn read_response_checked(client: &mut Client) -> Result<Option<Response>, String> {
    use std::io::ErrorKind;
    let closed = |e: &std::io::Error| {
        matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        )
    };
    let mut line = String::new();
    match client.reader.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Err(e) if closed(&e) && line.is_empty() => return Ok(None),
        Err(e) => return Err(format!("status line: {e} after {line:?}")),
        Ok(_) if !line.ends_with("\r\n") => return Err(format!("cut status line {line:?}")),
        Ok(_) => {}
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a status line: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        match client.reader.read_line(&mut line) {
            Ok(_) if line == "\r\n" => break,
            Ok(_) if line.ends_with("\r\n") => {
                let (k, v) = line
                    .trim_end()
                    .split_once(':')
                    .ok_or_else(|| format!("not a header: {line:?}"))?;
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            Ok(_) => return Err(format!("cut header {line:?} (status {status})")),
            Err(e) => return Err(format!("headers: {e} (status {status})")),
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length (status {status})"))?;
    let mut body = vec![0; len];
    client
        .reader
        .read_exact(&mut body)
        .map_err(|e| format!("body of {len} bytes: {e} (status {status})"))?;
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}
