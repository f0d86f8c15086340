//! `shardline serve` as an operator runs it: the built binary in its own process, a config
//! file, SIGTERM to stop. Proves the README's run command serves, and that a stop during
//! traffic answers what it accepted and exits promptly instead of lingering.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::{RouterProcess, EXIT_WITHIN};
use support::*;

/// Starts the binary on `dir/shardline.toml` and reads the address it logs (its log is
/// drained meanwhile, so it never blocks on a full pipe).
fn spawn(dir: &TempDir) -> (Child, SocketAddr) {
    let router = RouterProcess::spawn(&dir.0.join("shardline.toml"));
    let addr = router.addr;
    (router.into_child(), addr)
}

fn sigterm(child: &Child) {
    support::process::signal(child.id(), libc::SIGTERM);
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardline serve still running {EXIT_WITHIN:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary serves decisions, and SIGTERM while four clients are mid-stream ends it
/// with status 0 within the bound; every response a client read was complete. The tenants
/// have no rate limit, so every answer before the stop is a decision.
#[test]
fn sigterm_during_traffic_exits_promptly() {
    let _serial = serial();
    let dir = config_dir(
        "process",
        "drain_timeout_ms = 1000\n[logging]\nlevel = \"info\"",
    );
    let (mut child, addr) = spawn(&dir);
    let mut client = Client::connect(addr);
    let resp = client.request("POST", "/v1/decide", &[], &decide_body("acme", "first"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut answered = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body =
                        decide_body(["globex", "initech"][t % 2], &format!("t{t}-{answered}"));
                    c.send("POST", "/v1/decide", &[], &body);
                    match c.read_response() {
                        Some(r) => {
                            assert!(r.status == 200 || r.status == 503, "status {}", r.status);
                            answered += 1;
                        }
                        None => break, // closed by the stop: fine
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let status = wait_exit(&mut child);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u32 = load
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .sum();
    assert!(status.success(), "exit status {status}");
    assert!(answered > 0, "the clients were served before the stop");
}

/// SIGTERM to an idle router (one request, then quiet) exits with status 0.
#[test]
fn sigterm_when_idle_exits_promptly() {
    let _serial = serial();
    let dir = config_dir("process-idle", "drain_timeout_ms = 1000");
    let (mut child, addr) = spawn(&dir);
    let mut client = Client::connect(addr);
    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}

/// A policy in the original's unversioned store form (`policy_id`, `tenant_id`, fraction
/// `weights`, `sticky.ttl_sec`), dropped unchanged into the policies directory: `policy
/// check` accepts it, and a router started on it decides with it (the only provider with
/// weight, reported with the store form's version).
#[test]
fn legacy_store_policy_loads_and_decides() {
    let _serial = serial();
    let dir = config_dir("process-store", "drain_timeout_ms = 1000");
    let doc = r#"{"policy_id":"default","tenant_id":"oldco",
        "weights":{"mistral":1.0,"openai":0.0},
        "sticky":{"enabled":true,"session_key":"user_id","ttl_sec":300}}"#;
    write_policy(&dir, "oldco", "default", doc);

    let check = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["policy", "check"])
        .arg(dir.0.join("policies"))
        .output()
        .expect("run policy check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "policy check refused it:\n{text}");

    let (mut child, addr) = spawn(&dir);
    let mut client = Client::connect(addr);
    for n in 0..3 {
        let resp = client.request(
            "POST",
            "/v1/decide",
            &[],
            &decide_body("oldco", &format!("store-{n}")),
        );
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let decision = &resp.json()["decision"];
        assert_eq!(decision["provider_id"], "mistral", "{decision}");
        assert_eq!(decision["policy_id"], "default", "{decision}");
        assert_eq!(decision["policy_version"], "0.0", "{decision}");
    }
    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
}
/// Runs `shardline serve` on `dir` expecting it to refuse to start: its exit status and
/// everything it wrote to stderr, within `EXIT_WITHIN` (killed and failed past that).
fn run_expecting_exit(dir: &TempDir, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardline"));
    command
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_expecting_exit_from(command)
}

/// `run_expecting_exit` for a prepared command (stderr piped).
fn run_expecting_exit_from(mut command: Command) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = command.spawn().expect("spawn shardline serve");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the router is still running {EXIT_WITHIN:?} after its start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader"))
}

/// A config dir whose `shardline.toml` listens on `listen` with `extra` server keys.
fn config_on(name: &str, listen: SocketAddr, extra: &str) -> TempDir {
    let dir = config_dir(name, "");
    let toml = format!("[server]\nlisten = \"{listen}\"\nops_listen = \"127.0.0.1:0\"\ndrain_timeout_ms = 1000\n{extra}\n");
    std::fs::write(dir.0.join("shardline.toml"), toml).unwrap();
    dir
}

/// `n` fresh connections to `addr`, one request each: every one must be answered 200.
fn all_fresh_connections_answered(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let mut client = Client::connect(addr);
        let resp = client.request("GET", "/healthz", &[], b"");
        assert_eq!(resp.status, 200, "fresh connection {i} of {n} to {addr}");
    }
}

/// A second router on a port the first one serves (the shared `listen`, or a shard port)
/// does not join it: it exits non-zero naming the address, and the first keeps answering
/// every new connection (none lands on a socket of the second).
#[test]
fn a_second_router_on_the_same_port_refuses_to_start() {
    let _serial = serial();
    let shards = usable_cores();
    let base = free_port_base(shards + 1);
    let listen = loopback(base);
    let first_dir = config_on(
        "port-first",
        listen,
        &format!("shard_port_base = {}", base + 1),
    );
    let (first, addr) = spawn(&first_dir);
    let mut first = KillOnDrop(first);
    assert_eq!(addr, listen);

    let same_listen = config_on("port-same", listen, "");
    let (status, stderr) = run_expecting_exit(&same_listen, &[]);
    assert!(!status.success(), "second router exited {status}: {stderr}");
    let expected = format!("{listen} is already in use by another process");
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    let shard_port = loopback(base + 1);
    let same_shard_ports = config_on(
        "port-shards",
        loopback(0),
        &format!("shard_port_base = {}", base + 1),
    );
    let (status, stderr) = run_expecting_exit(&same_shard_ports, &[]);
    assert!(!status.success(), "second router exited {status}: {stderr}");
    let expected = format!("{shard_port} is already in use by another process");
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    all_fresh_connections_answered(listen, 64);
    all_fresh_connections_answered(shard_port, 8);
    sigterm(&first.0);
    let status = wait_exit(&mut first.0);
    assert!(status.success(), "first router exit status {status}");
}

/// A child router that a failing test must not leave running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `GET /readyz` on a fresh connection: its status, or `None` when nothing answered.
fn readyz(addr: SocketAddr) -> Option<u16> {
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut client = Client {
        reader: BufReader::new(stream.try_clone().ok()?),
        stream,
    };
    std::io::Write::write_all(
        &mut client.stream,
        &request_bytes("GET", "/readyz", &[], b""),
    )
    .ok()?;
    client.read_response().map(|r| r.status)
}

/// Polls `/readyz` until it answers 503 (within `EXIT_WITHIN`); panics on any other end.
fn wait_not_ready(addr: SocketAddr) {
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        match readyz(addr) {
            Some(503) => return,
            Some(200) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            other => panic!("/readyz after SIGTERM: {other:?} instead of 503"),
        }
    }
}

/// After SIGTERM the router says "not ready" while it still accepts and answers for
/// `server.drain_grace_ms`, so a load balancer can take it out of rotation before its
/// listeners close; then it exits 0.
#[test]
fn sigterm_turns_readyz_503_while_still_serving_for_the_grace() {
    let _serial = serial();
    let dir = config_dir("grace", "drain_timeout_ms = 1000\ndrain_grace_ms = 3000");
    let (child, addr) = spawn(&dir);
    let mut child = KillOnDrop(child);
    assert_eq!(readyz(addr), Some(200));
    sigterm(&child.0);
    wait_not_ready(addr);
    for i in 0..5 {
        let mut client = Client::connect(addr);
        let resp = client.request("POST", "/v1/decide", &[], &decide_body("acme", "grace"));
        assert_eq!(resp.status, 200, "decide {i} during the grace: {resp:?}");
    }
    assert_eq!(readyz(addr), Some(503), "still not ready");
    let status = wait_exit(&mut child.0);
    assert!(status.success(), "exit status {status}");
}

/// A second SIGTERM during a long grace ends the process at once, with a non-zero status.
#[test]
fn a_second_sigterm_during_the_grace_exits_at_once() {
    let _serial = serial();
    let dir = config_dir("grace-twice", "drain_grace_ms = 60000");
    let (child, addr) = spawn(&dir);
    let mut child = KillOnDrop(child);
    sigterm(&child.0);
    wait_not_ready(addr);
    sigterm(&child.0);
    // `wait_exit` fails past EXIT_WITHIN, far below the 60 s grace.
    let status = wait_exit(&mut child.0);
    assert!(!status.success(), "exit status {status}");
}

/// A `shardline serve` command whose process has `RLIMIT_NOFILE` = `nofile` (soft and
/// hard) and inherits `hog` extra open descriptors (as if something else used them).
fn limited_command(dir: &TempDir, nofile: u64, hog: usize) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardline"));
    command
        .args(["serve", "--config"])
        .arg(dir.0.join("shardline.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let pre_exec = move || {
        let limit = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: setrlimit(2) and open(2) are async-signal-safe; the path is a C string.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for _ in 0..hog {
                // Without O_CLOEXEC: the router inherits them.
                if libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above).
    unsafe { command.pre_exec(pre_exec) };
    command
}

/// Out of file descriptors, every client is either served or answered `503 overloaded`
/// within a bounded time; none waits unanswered in the backlog. At start, a hard limit
/// below what the configured connection cap needs lowers the cap with a warning that
/// names the fix, and one too low for any connection refuses to start.
#[test]
fn out_of_file_descriptors_every_client_is_served_or_refused() {
    let _serial = serial();
    let dir = config_dir(
        "fds",
        "cores = 1\ndrain_timeout_ms = 1000\ndrain_grace_ms = 0",
    );

    // Too low for one connection per shard: exits non-zero, naming `ulimit -n`.
    let (status, stderr) = run_expecting_exit_from(limited_command(&dir, 80, 0));
    assert!(!status.success(), "started with 80 descriptors: {stderr}");
    assert!(stderr.contains("ulimit -n"), "stderr: {stderr}");

    // 160 descriptors: the cap is lowered to 160 − 64 − 32 = 64, and 90 of them are
    // already taken, so the served (idle, kept-alive) connections use up every descriptor
    // before the cap: the clients beyond wait in the backlog until the spare descriptor
    // answers them (without it, until a served connection's idle timeout, 60 s).
    const CLIENTS: usize = 90;
    let mut command = limited_command(&dir, 160, 90);
    let mut child = KillOnDrop(command.spawn().expect("spawn"));
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut early = Vec::new();
    let addr: SocketAddr = loop {
        let line = lines
            .next()
            .expect("a log line before exit")
            .expect("stderr");
        if let Some(rest) = line.split("serving on http://").nth(1) {
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break addr.parse().expect("logged address");
        }
        early.push(line);
    };
    let started = Instant::now();
    let log = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .filter(|l| l.contains("http accept failed"))
            .count()
    });
    let early = early.join("\n");
    assert!(
        early.contains("holds 64 connections per shard") && early.contains("LimitNOFILE="),
        "start-up log: {early}"
    );

    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut client = Client::connect(addr);
            client
                .stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let request = request_bytes("GET", "/healthz", &[], b"");
            std::io::Write::write_all(&mut client.stream, &request).expect("send");
            client
        })
        .collect();
    let (mut served, mut over_cap, mut out_of_fds) = (0, 0, 0);
    for (i, client) in clients.iter_mut().enumerate() {
        let Some(resp) = client.read_response() else {
            panic!("client {i} of {CLIENTS}: no answer within 10 s (served {served}, refused {over_cap} + {out_of_fds})");
        };
        match resp.status {
            200 => served += 1,
            503 => {
                let json = resp.json();
                assert_eq!(json["error"]["code"], "overloaded", "{json}");
                match json["error"]["message"].as_str() {
                    Some(shardline::transport::http::FD_LIMIT_MESSAGE) => out_of_fds += 1,
                    _ => over_cap += 1,
                }
            }
            other => panic!("client {i}: status {other}"),
        }
    }
    assert!((1..=64).contains(&served), "served {served}");
    assert!(
        out_of_fds >= 1,
        "none answered at EMFILE (served {served}, over the cap {over_cap})"
    );
    eprintln!("served {served}, over the cap {over_cap}, out of descriptors {out_of_fds}");
    drop(clients);
    // Serving again once the clients are gone and their descriptors are free.
    let deadline = Instant::now() + EXIT_WITHIN;
    while Client::connect(addr)
        .request("GET", "/healthz", &[], b"")
        .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "still refusing after the clients left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child.0);
    let status = wait_exit(&mut child.0);
    assert!(status.success(), "exit status {status}");
    // At most one accept-error line a second (the shard retries every 10 ms).
    let lines = log.join().expect("log reader");
    let seconds = started.elapsed().as_secs() as usize;
    assert!(
        lines <= seconds + 2,
        "{lines} accept-error lines in {seconds} s"
    );
}

/// The same holds for the HTTPS listener: a second router whose `tls.listen` is the
/// first one's exits non-zero naming it, and the first keeps serving HTTP.
#[test]
fn a_second_router_on_the_same_https_port_refuses_to_start() {
    let _serial = serial();
    let tls_port = free_port_base(1);
    let tls_listen = loopback(tls_port);
    let with_tls = |name: &str| {
        let dir = config_on(name, loopback(0), "");
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.0.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.0.join("server.key"), key.serialize_pem()).unwrap();
        let path = dir.0.join("shardline.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(&format!(
            "[tls]\nenabled = true\nlisten = \"{tls_listen}\"\ncert = \"server.crt\"\nkey = \"server.key\"\n"
        ));
        std::fs::write(path, toml).unwrap();
        dir
    };
    let first_dir = with_tls("tls-first");
    let (first, addr) = spawn(&first_dir);
    let mut first = KillOnDrop(first);

    let (status, stderr) = run_expecting_exit(&with_tls("tls-second"), &[]);
    assert!(!status.success(), "second router exited {status}: {stderr}");
    let expected = format!("{tls_listen} is already in use by another process");
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    all_fresh_connections_answered(addr, 16);
    let accepts = std::net::TcpStream::connect_timeout(&tls_listen, Duration::from_secs(2));
    assert!(
        accepts.is_ok(),
        "the first router's HTTPS listener: {accepts:?}"
    );
    sigterm(&first.0);
    let status = wait_exit(&mut first.0);
    assert!(status.success(), "first router exit status {status}");
}

/// A policy document with a misspelt key.
const BROKEN: &str = r#"{"version":"1.0","providers":[{"name":"cohere","wieght":100}]}"#;

/// A broken document does not stop a restart: the router starts, logs the document, and
/// serves the other tenants. `--strict-policies` (or `server.strict_policies = true`)
/// keeps the all-or-nothing start: exit 2, naming the file.
#[test]
fn a_broken_document_stops_the_start_only_when_strict() {
    let _serial = serial();
    let dir = config_dir("process-broken", "drain_timeout_ms = 1000");
    write_policy(&dir, "globex", "silver", BROKEN);
    let (mut child, addr) = spawn(&dir);
    let body = br#"{"request_id":"r-1","tenant_id":"globex","policy_id":"default",
        "task":{"type":"chat","payload_ref":"p"}}"#;
    let resp = Client::connect(addr).request("POST", "/v1/decide", &[], body);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    sigterm(&child);
    assert!(wait_exit(&mut child).success());

    let (status, stderr) = run_expecting_exit(&dir, &["--strict-policies"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid policies") && stderr.contains("globex/silver.json"),
        "{stderr}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["policy", "check"])
        .arg(dir.0.join("policies"))
        .output()
        .expect("run shardline policy check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("globex/silver.json"), "{report}");
    let strict = config_dir("process-strict", "strict_policies = true");
    write_policy(&strict, "globex", "silver", BROKEN);
    let (status, stderr) = run_expecting_exit(&strict, &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
}

/// A router restarted at once on its own port starts, even after it closed connections
/// itself (`Connection: close`): their TIME_WAIT leftovers are not "another process". The
/// port probe once took them for one and refused every restart for a minute.
#[test]
fn a_restart_right_after_server_closed_connections_starts() {
    let _serial = serial();
    let listen = loopback(free_port_base(1));
    let dir = config_on("restart-tw", listen, "");
    for round in 0..2 {
        let (child, addr) = spawn(&dir);
        let mut child = KillOnDrop(child);
        assert_eq!(addr, listen, "round {round}");
        for i in 0..8 {
            let mut client = Client::connect(addr);
            let resp = client.request("GET", "/healthz", &[("Connection", "close")], b"");
            assert_eq!(resp.status, 200, "round {round}, request {i}");
            // The server closes first: its side of the connection goes to TIME_WAIT.
            assert!(client.read_response().is_none(), "closed after the answer");
        }
        sigterm(&child.0);
        let status = wait_exit(&mut child.0);
        assert!(status.success(), "round {round}: exit status {status}");
    }
}
