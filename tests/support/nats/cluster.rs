//! Several nats-servers routed into one cluster with JetStream, for tests of what needs
//! replicated streams and key-value buckets: losing a server, and a server coming back
//! with the store it had.
//!
//! Each server has its own client, monitor and route ports and its own temporary
//! directory (config, log, JetStream store); every config lists all route URLs (a server
//! ignores the one that is itself). A restart keeps ports and store.
//!
//! Ready is more than every client port sending INFO: until the JetStream meta group has
//! a leader, JetStream API requests fail ("JetStream system temporarily unavailable").
//! Nor is "a leader is named" enough: after a kill, nats-server 2.9.10's survivors keep
//! naming the dead leader for about two seconds. So ready means every running server's
//! monitor (`/jsz`, `meta_cluster.leader`) names the same leader, and that leader runs;
//! a restarted server does not name itself before it is elected again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{loopback, on_free_ports, quoted, quoted_path, until_ports_free, Process};

/// The cluster name every server is configured with.
const CLUSTER_NAME: &str = "shardline-test";
/// JetStream's memory and file store limits per server: room for tests, not for a disk.
const JS_MEMORY_STORE_MB: u32 = 64;
const JS_FILE_STORE_MB: u32 = 256;
/// Ports per server: client, monitor, route.
const PORTS_PER_SERVER: usize = 3;
/// Servers a test cluster may have: enough for any quorum a test needs.
const SERVERS_MAX: usize = 7;
/// Time the servers have to agree on a JetStream meta leader that runs (after a start,
/// or a restart of one of them); an election takes about a second on a quiet machine.
const JS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while waiting for that leader.
const JS_READY_POLL: Duration = Duration::from_millis(100);
/// Time a monitor request may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// The ports of one server.
#[derive(Debug, Clone, Copy, Default)]
struct Ports {
    client: u16,
    monitor: u16,
    route: u16,
}

/// One server of the cluster.
struct Node {
    ports: Ports,
    process: Process,
}

impl Node {
    /// The server's name (`n1`…): how the JetStream meta group names its leader.
    fn name(index: usize) -> String {
        format!("n{}", index + 1)
    }

    fn store_dir(&self) -> PathBuf {
        self.process.dir().join("jetstream")
    }
}

/// Running nats-servers forming one JetStream cluster; all killed when dropped. Servers
/// are numbered from 0 (`url(0)` is server `n1`).
pub struct NatsCluster {
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// `n` servers on free ports, started, routed together and with a JetStream meta
    /// leader. Retries on other ports when a chosen one was taken before it was bound.
    pub fn start(n: usize) -> NatsCluster {
        assert!(
            (1..=SERVERS_MAX).contains(&n),
            "a test cluster has 1 to {SERVERS_MAX} servers, not {n}"
        );
        let nodes = (0..n)
            .map(|i| Node {
                ports: Ports::default(),
                process: Process::new(&format!("nats-cluster-{}", Node::name(i))),
            })
            .collect();
        let mut cluster = NatsCluster { nodes };
        on_free_ports(n * PORTS_PER_SERVER, |ports| cluster.start_on(ports));
        cluster
    }

    /// `nats://127.0.0.1:PORT` of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].ports.client)
    }

    /// Every server's URL, comma-separated: what a client (the router's `nats.url`) is
    /// given to fail over between them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        urls.join(",")
    }

    /// What server `i` logged since it was last started.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].process.log()
    }

    /// Kills server `i` (SIGKILL: no goodbye to the cluster) and waits for it to exit.
    /// Killing a killed server does nothing.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.stop();
    }

    /// Kills server `i` if it runs and starts it again on the same ports with the same
    /// store; returns once it accepts clients and the running servers agree on a
    /// JetStream meta leader again.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let config = self.config_text(i);
        let port = self.nodes[i].ports.client;
        let process = &mut self.nodes[i].process;
        until_ports_free(&Node::name(i), || {
            process.spawn(&config);
            process.wait_info(port)
        });
        if let Err(why) = self.wait_js_leader() {
            panic!(
                "nats-server {} rejoined no JetStream cluster: {why}",
                Node::name(i)
            );
        }
    }

    /// Starts every server on `ports` (client, monitor, route for each in turn) with an
    /// empty store and waits until the cluster is ready. On `Err` (carrying the logs)
    /// every server is stopped again.
    fn start_on(&mut self, ports: &[u16]) -> Result<(), String> {
        for (node, p) in self.nodes.iter_mut().zip(ports.chunks(PORTS_PER_SERVER)) {
            node.ports = Ports {
                client: p[0],
                monitor: p[1],
                route: p[2],
            };
            // A failed attempt may have left a meta group of other ports behind.
            let _ = std::fs::remove_dir_all(node.store_dir());
        }
        for i in 0..self.nodes.len() {
            let config = self.config_text(i);
            self.nodes[i].process.spawn(&config);
        }
        let ready = self.wait_clients().and_then(|()| self.wait_js_leader());
        if ready.is_err() {
            self.nodes.iter_mut().for_each(|n| n.process.stop());
        }
        ready
    }

    /// Waits until every running server's client port sends INFO.
    fn wait_clients(&mut self) -> Result<(), String> {
        for node in self.nodes.iter_mut().filter(|n| n.process.is_running()) {
            node.process.wait_info(node.ports.client)?;
        }
        Ok(())
    }

    /// Waits until every running server names the same JetStream meta leader and that
    /// leader runs. `Err` with every log when a server exits or the time is up.
    fn wait_js_leader(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + JS_READY_TIMEOUT;
        loop {
            for node in &mut self.nodes {
                node.process.check_alive()?;
            }
            if self.agreed_leader().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let named: Vec<String> = self.running().map(|(_, n)| meta_leader(n)).collect();
                return Err(format!(
                    "no JetStream meta leader that every running server names and that runs \
                     within {JS_READY_TIMEOUT:?} (they name {named:?});\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(JS_READY_POLL);
        }
    }

    /// The meta leader every running server names, when they agree and it is one of them.
    fn agreed_leader(&self) -> Option<String> {
        let mut named = self.running().map(|(_, node)| meta_leader(node));
        let leader = named.next()?;
        let runs = self.running().any(|(i, _)| Node::name(i) == leader);
        (runs && named.all(|other| other == leader)).then_some(leader)
    }

    /// The running servers with their index.
    fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.process.is_running())
    }

    /// Every server's log, each under its name.
    fn logs(&self) -> String {
        let mut text = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            text.push_str(&format!(
                "--- {} log:\n{}",
                Node::name(i),
                node.process.log()
            ));
        }
        text
    }

    /// The nats-server config of server `i` for the current ports.
    fn config_text(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| quoted(&format!("nats-route://127.0.0.1:{}", n.ports.route)))
            .collect();
        format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             cluster {{\n  name: {cluster}\n  listen: \"127.0.0.1:{route}\"\n  \
             routes: [{routes}]\n}}\n\
             jetstream {{\n  store_dir: {store}\n  max_memory_store: {JS_MEMORY_STORE_MB}MB\n  \
             max_file_store: {JS_FILE_STORE_MB}MB\n}}\n",
            name = quoted(&Node::name(i)),
            client = node.ports.client,
            monitor = node.ports.monitor,
            cluster = quoted(CLUSTER_NAME),
            route = node.ports.route,
            routes = routes.join(", "),
            store = quoted_path(&node.store_dir()),
        )
    }
}

/// `meta_cluster.leader` from a server's `/jsz`; empty when it names none or does not
/// answer.
fn meta_leader(node: &Node) -> String {
    let Some(body) = monitor_get(node.ports.monitor, "/jsz") else {
        return String::new();
    };
    let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    jsz["meta_cluster"]["leader"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The body of a 200 answer to `GET path` on a monitor port. HTTP/1.0, so that the
/// answer ends with the connection whatever its size (no chunked encoding to decode).
fn monitor_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&loopback(port), MONITOR_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(MONITOR_TIMEOUT)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}
