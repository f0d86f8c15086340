//! How long a policy written on one node of a cluster takes to decide on every node.
//!
//! Each round puts a policy through one node's admin API with a provider named after the
//! round, then asks every node to decide for it, again and again, until each answers with
//! that provider. The time from sending the put to the last node's first such answer is
//! the round's propagation time; per node, the time to its own first answer is recorded
//! too. The writer's own node answers at once (it applies its write before answering);
//! the others wait for their watch of the bucket. Quantiles are printed at the end.
//!
//! ```text
//! scripts/cluster_start.sh
//! cargo run --release --example cluster_propagation -- \
//!   --admin 127.0.0.1:9091 --nodes 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
//!   --token "$SHARDLINE_ADMIN_TOKEN" --rounds 200
//! ```
//!
//! A node is polled over one keep-alive connection; a round that has not reached every node
//! within `--timeout-ms` is reported and counted, not waited for.
//!
//! With `--kill-pid PID --watch OPS,…` it then measures failover: it kills the router PID
//! with SIGKILL and times how long until every watched node (their operations listeners)
//! no longer lists `--kill-node` among its members (`GET /admin/v1/cluster`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time from a policy put on one node to deciding with it on every node")]
struct Args {
    /// The node whose admin API takes the puts (its operations listener).
    #[arg(long, default_value = "127.0.0.1:9091")]
    admin: SocketAddr,
    /// Every node's data port, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8081")]
    nodes: Vec<SocketAddr>,
    /// An admin token.
    #[arg(long)]
    token: String,
    /// Tenant and policy written (the policy is created, then rewritten each round).
    #[arg(long, default_value = "acme")]
    tenant: String,
    #[arg(long, default_value = "propagation")]
    policy: String,
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// A round not seen on every node within this is counted as timed out.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Pause between rounds.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// After the rounds: SIGKILL this router and time its departure.
    #[arg(long)]
    kill_pid: Option<i32>,
    /// The killed router's node id.
    #[arg(long, default_value = "node-3")]
    kill_node: String,
    /// Operations listeners of the nodes that must see it leave, comma-separated.
    #[arg(long, value_delimiter = ',')]
    watch: Vec<SocketAddr>,
}

/// Rounds allowed to time out before the run stops.
const TIMEOUTS_MAX: u32 = 3;

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut admin = Conn::open(args.admin)?;
    let mut nodes: Vec<Conn> = args
        .nodes
        .iter()
        .map(|a| Conn::open(*a))
        .collect::<Result<_>>()?;
    let path = format!("/admin/v1/policies/{}/{}", args.tenant, args.policy);
    let request = format!(
        r#"{{"version":"1","tenant_id":"{}","policy_id":"{}","request_id":"propagation","task":{{"type":"chat","payload":{{}}}}}}"#,
        args.tenant, args.policy
    );
    let mut all = Vec::new();
    let mut per_node: Vec<Vec<Duration>> = vec![Vec::new(); nodes.len()];
    let mut timed_out = 0u32;
    let timeout = Duration::from_millis(args.timeout_ms);
    for round in 0..args.rounds {
        let provider = format!("p{round}");
        let doc =
            format!(r#"{{"version":"1.0","providers":[{{"name":"{provider}","weight":1}}]}}"#);
        let needle = format!(r#""provider_id":"{provider}""#);
        let sent = Instant::now();
        let (status, body) = admin.call("PUT", &path, Some(&args.token), doc.as_bytes())?;
        if status >= 300 {
            bail!("put answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let mut seen: Vec<Option<Duration>> = vec![None; nodes.len()];
        let mut last_answer = Vec::new();
        while seen.iter().any(Option::is_none) && sent.elapsed() < timeout {
            for (i, node) in nodes.iter_mut().enumerate() {
                if seen[i].is_some() {
                    continue;
                }
                let (_, body) = node.call("POST", "/v1/decide", None, request.as_bytes())?;
                if body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    seen[i] = Some(sent.elapsed());
                } else {
                    last_answer = body;
                }
            }
        }
        if seen.iter().any(Option::is_none) {
            timed_out += 1;
            eprintln!(
                "round {round}: not on every node within {} ms; a node last answered {}",
                args.timeout_ms,
                String::from_utf8_lossy(&last_answer)
            );
            if timed_out >= TIMEOUTS_MAX {
                bail!("{TIMEOUTS_MAX} rounds timed out: is every node in the same cluster?");
            }
            continue;
        }
        let seen: Vec<Duration> = seen.into_iter().flatten().collect();
        for (i, d) in seen.iter().enumerate() {
            per_node[i].push(*d);
        }
        all.push(seen.into_iter().max().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    }
    all.sort();
    let show = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "rounds {} (timed out {timed_out}); put → deciding on every node: p50 {}, p90 {}, p99 {}, max {}",
        all.len(),
        show(quantile(&all, 0.5)),
        show(quantile(&all, 0.9)),
        show(quantile(&all, 0.99)),
        show(all.last().copied().unwrap_or_default()),
    );
    for (i, mut times) in per_node.into_iter().enumerate() {
        times.sort();
        println!(
            "  node {}: p50 {}, p99 {}, max {}",
            args.nodes[i],
            show(quantile(&times, 0.5)),
            show(quantile(&times, 0.99)),
            show(times.last().copied().unwrap_or_default()),
        );
    }
    let (status, _) = admin.call("DELETE", &path, Some(&args.token), b"")?;
    if status >= 300 {
        eprintln!("could not delete the policy written (status {status})");
    }
    if let Some(pid) = args.kill_pid {
        failover(&args, pid)?;
    }
    Ok(())
}

/// Kills `pid` and times until no watched node lists `--kill-node` any more.
fn failover(args: &Args, pid: i32) -> Result<()> {
    let mut watched: Vec<Conn> = args
        .watch
        .iter()
        .map(|a| Conn::open(*a))
        .collect::<Result<_>>()?;
    let needle = format!(r#""node_id":"{}""#, args.kill_node);
    let listed = |conn: &mut Conn| -> Result<bool> {
        let (status, body) = conn.call("GET", "/admin/v1/cluster", Some(&args.token), b"")?;
        if status != 200 {
            bail!("GET /admin/v1/cluster answered {status}");
        }
        Ok(body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    // Nodes learn of each other by heartbeats: a cluster just started may not yet list it.
    let started = Instant::now();
    for conn in &mut watched {
        while !listed(conn)? {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("{} is not a member before the kill", args.kill_node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let killed = Instant::now();
    // SAFETY: kill(2) with a PID and a signal number; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        bail!("kill {pid}: {}", std::io::Error::last_os_error());
    }
    let mut gone: Vec<Option<Duration>> = vec![None; watched.len()];
    while gone.iter().any(Option::is_none) && killed.elapsed() < Duration::from_secs(70) {
        for (i, conn) in watched.iter_mut().enumerate() {
            if gone[i].is_none() && !listed(conn)? {
                gone[i] = Some(killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (addr, took) in args.watch.iter().zip(gone) {
        match took {
            Some(d) => println!(
                "failover: {addr} dropped {} after {:.0} ms",
                args.kill_node,
                d.as_secs_f64() * 1e3
            ),
            None => println!("failover: {addr} still lists {}", args.kill_node),
        }
    }
    Ok(())
}
