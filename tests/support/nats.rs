//! A real `nats-server` child process for black-box tests, on free loopback ports, with
//! optional TLS (and client-certificate verification), token or user/password
//! authentication and a payload limit.
//!
//! Each server gets its own temporary directory holding its config file (absolute paths:
//! nats-server resolves TLS file paths against its working directory, not the config's)
//! and its log, which every panic message quotes. A missing `nats-server` is a test
//! failure naming the package to install, never a silent skip: a test that cannot run must
//! not pass.
//!
//! Readiness is "the client port sends its INFO line", not the monitor's `/healthz`: the
//! monitor starts listening before the client port does.
//!
//! `cluster` runs several of these servers as one JetStream cluster; both kinds share the
//! process handling and the free-port retry below.

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{loopback, TempDir};

/// Starts tried on fresh ports when nats-server could not bind the ones it was given.
const START_ATTEMPTS_MAX: usize = 5;
/// Time a started server has to send its INFO line on the client port.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for readiness.
const READY_POLL: Duration = Duration::from_millis(20);
/// Time a restart waits for its (same) ports to be free again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// How nats-server's log says that a port it was given is taken.
const BIND_FAILURE: &str = "address already in use";
/// Seconds nats-server allows for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT_S: u32 = 2;

/// PEM files of a test PKI: a CA, a server certificate for `localhost` and `127.0.0.1`,
/// and a client certificate (clientAuth) signed by the same CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates the PKI with rcgen into `dir` (created if missing): `ca.crt`,
    /// `server.crt`/`server.key`, `client.crt`/`client.key`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "shardline nats test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key).unwrap();
        let issue = |name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            let (cert_path, key_path) = (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            );
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        };
        let (cert, key) = issue(
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = issue("client", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        TlsFiles {
            ca: ca_path,
            cert,
            key,
            client_cert,
            client_key,
        }
    }
}

/// How to run the server. `Default` is plain TCP, no authentication, default limits.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// TLS on the client port (URL scheme `tls://`).
    pub tls: Option<TlsFiles>,
    /// With `tls`: every client must present a certificate signed by `tls.ca`.
    pub verify_clients: bool,
    /// Token authentication.
    pub token: Option<String>,
    /// User and password authentication (not together with `token`).
    pub user: Option<(String, String)>,
    /// Largest message payload in bytes (nats-server's default is 1 MiB).
    pub max_payload: Option<u32>,
    /// JetStream on (stand-alone), with its store in the server's temporary directory.
    pub jetstream: bool,
}

/// A running nats-server; killed when dropped.
pub struct NatsServer {
    pub port: u16,
    pub monitor_port: u16,
    process: Process,
    options: NatsOptions,
}

impl NatsServer {
    /// A plain server on free ports, started and accepting clients.
    pub fn start() -> NatsServer {
        NatsServer::start_with(NatsOptions::default())
    }

    /// A server with `options` on free ports, started and accepting clients. Retries with
    /// other ports when the chosen ones were taken between choosing and binding.
    pub fn start_with(options: NatsOptions) -> NatsServer {
        assert!(
            !(options.token.is_some() && options.user.is_some()),
            "nats test server: token and user are exclusive"
        );
        assert!(
            !options.verify_clients || options.tls.is_some(),
            "nats test server: verify_clients needs tls"
        );
        let mut server = NatsServer {
            port: 0,
            monitor_port: 0,
            process: Process::new("nats"),
            options,
        };
        on_free_ports(2, |ports| {
            (server.port, server.monitor_port) = (ports[0], ports[1]);
            server.spawn_and_wait()
        });
        server
    }

    /// `nats://127.0.0.1:PORT`, or `tls://…` when the server runs TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The options the server runs with (its TLS files, credentials).
    pub fn options(&self) -> &NatsOptions {
        &self.options
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether the log shows `needle` within `timeout` (the server may log an event a
    /// moment after the client has seen its effect).
    pub fn log_shows(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// Kills the server and waits for it to exit. Stopping a stopped server does nothing.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Stops the server and starts it again on the same ports with the same options;
    /// returns once it accepts clients. Waits for the ports to be free again.
    pub fn restart(&mut self) {
        self.stop();
        let what = format!("nats-server on port {}", self.port);
        until_ports_free(&what, || self.spawn_and_wait());
    }

    /// Writes the config, starts the process and waits until the client port sends INFO.
    /// `Err` carries the log when the process exited or never became ready (and is killed).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let config = self.config_text();
        self.process.spawn(&config);
        self.process.wait_info(self.port)
    }

    /// The nats-server config for the current ports and options.
    fn config_text(&self) -> String {
        let o = &self.options;
        let mut text = format!(
            "listen: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\n",
            self.port, self.monitor_port
        );
        if let Some(max) = o.max_payload {
            text.push_str(&format!("max_payload: {max}\n"));
        }
        if o.jetstream {
            let store = self.process.dir().join("jetstream");
            text.push_str(&format!(
                "jetstream {{\n  store_dir: {}\n  max_memory_store: 64MB\n  \
                 max_file_store: 256MB\n}}\n",
                quoted_path(&store)
            ));
        }
        if let Some(token) = &o.token {
            text.push_str(&format!(
                "authorization {{\n  token: {}\n}}\n",
                quoted(token)
            ));
        }
        if let Some((user, password)) = &o.user {
            text.push_str(&format!(
                "authorization {{\n  user: {}\n  password: {}\n}}\n",
                quoted(user),
                quoted(password)
            ));
        }
        if let Some(tls) = &o.tls {
            text.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  \
                 timeout: {TLS_HANDSHAKE_TIMEOUT_S}\n}}\n",
                quoted_path(&tls.cert),
                quoted_path(&tls.key),
                quoted_path(&tls.ca),
                o.verify_clients
            ));
        }
        text
    }
}

/// One nats-server process on a config file in its own directory, which also holds its
/// log; killed when dropped (before the directory is removed: fields drop after `drop`).
struct Process {
    child: Option<Child>,
    dir: TempDir,
}

impl Process {
    fn new(name: &str) -> Process {
        Process {
            child: None,
            dir: TempDir::new(name),
        }
    }

    fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("nats-server.log")
    }

    fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Writes `config` and starts nats-server on it, its output going to a fresh log.
    fn spawn(&mut self, config: &str) {
        assert!(self.child.is_none(), "nats-server started twice");
        let config_path = self.dir.0.join("nats-server.conf");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(nats_server_path())
            .arg("-c")
            .arg(&config_path)
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", nats_server_path().display()));
        self.child = Some(child);
    }

    /// Waits until the client port sends INFO. `Err` carries the log when the process
    /// exited or never became ready (and is then killed).
    fn wait_info(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive()?;
            if sends_info(port) {
                return Ok(());
            }
            std::thread::sleep(READY_POLL);
        }
        self.stop();
        Err(format!(
            "no INFO on port {port} within {READY_TIMEOUT:?}; log:\n{}",
            self.log()
        ))
    }

    /// `Err` with the log when the process, started and not stopped, has exited: a
    /// server can send INFO and still fail on a port it binds later (its route port).
    fn check_alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        match child.try_wait().unwrap() {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(format!("exited with {status}; log:\n{}", self.log()))
            }
        }
    }

    /// Kills the process (SIGKILL) and waits for it. Stopping a stopped one does nothing.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `start` on `count` distinct ports that were free a moment ago, and again on fresh
/// ones while it fails because nats-server found one taken (by another test between the
/// choice and the bind). Panics with `start`'s error otherwise.
fn on_free_ports(count: usize, mut start: impl FnMut(&[u16]) -> Result<(), String>) {
    for attempt in 1..=START_ATTEMPTS_MAX {
        match start(&free_ports(count)) {
            Ok(()) => return,
            Err(log) if attempt < START_ATTEMPTS_MAX && log.contains(BIND_FAILURE) => continue,
            Err(log) => panic!("nats-server did not start:\n{log}"),
        }
    }
    panic!("nats-server found no free ports in {START_ATTEMPTS_MAX} attempts");
}

/// Runs `start` until it succeeds, again while it fails because the ports of a server
/// just stopped are not free yet, up to `RESTART_TIMEOUT`; panics naming `what`.
fn until_ports_free(what: &str, mut start: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        match start() {
            Ok(()) => return,
            Err(log) if Instant::now() < deadline && log.contains(BIND_FAILURE) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(log) => panic!("{what} did not restart:\n{log}"),
        }
    }
}

/// The nats-server binary: the first on `PATH`, else Debian's `/usr/sbin/nats-server`.
/// Panics, naming the package, when there is none.
pub fn nats_server_path() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| is_executable(candidate))
    });
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    match on_path {
        Some(found) => found,
        None if is_executable(&sbin) => sbin,
        None => panic!("nats-server not found: apt-get install -y nats-server"),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `count` distinct TCP ports on 127.0.0.1 that were free a moment ago (all bound at once,
/// so none is chosen twice).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind(loopback(0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Whether `127.0.0.1:port` accepts a connection and sends a NATS INFO line (TLS servers
/// of nats-server 2.9 send it in clear before the handshake too).
fn sends_info(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// A nats-server config string literal.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quoted_path(path: &Path) -> String {
    quoted(path.to_str().expect("UTF-8 path"))
}

/// Starts a router with NATS configured and returns once it is ready (connected and
/// subscribed); fails the test past 5 s.
pub fn start_connected(settings: shardline::server::ServerSettings) -> shardline::server::Server {
    let server = super::start(settings);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.shared().is_ready() {
        assert!(Instant::now() < deadline, "router never connected to NATS");
        std::thread::sleep(Duration::from_millis(10));
    }
    server
}
