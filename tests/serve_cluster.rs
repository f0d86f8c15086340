//! A cluster for real on one machine: a three-server nats-server cluster with JetStream and
//! three `shardline serve` processes, each on its own config and policy directory, sharing
//! their policies through the bucket (docs/CLUSTER.md).
//!
//! What is asserted is what a user of the cluster relies on: a policy written on one node
//! decides on the others, concurrent writers cannot both win, the bucket is the authority
//! over what a node's directory held, and losing a NATS server costs neither serving nor
//! writing. Times are waited for with bounds, never asserted: propagation is measured by
//! `examples/cluster_propagation.rs` (docs/CLUSTER.md has the figures).

#![allow(deprecated)] // the sync `nats` crate is deprecated upstream; it is the reference here

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::nats::cluster::NatsCluster;
use support::process::RouterProcess;
use support::{config_dir, Client, TempDir, ADMIN_TOKEN};

/// How long a change may take to show on a node before the test fails: generous for a
/// loaded 2-core machine (measured: milliseconds).
const PROPAGATION_WAIT: Duration = Duration::from_secs(15);
const BUCKET: &str = "shardline_policies";
/// The nodes' failover time: short, so that a test sees a node leave quickly.
const FAILOVER_MS: u64 = 1_000;

/// One router of the cluster.
struct Node {
    router: RouterProcess,
    dir: TempDir,
}

impl Node {
    fn client(&self) -> Client {
        Client::connect(self.router.addr)
    }

    fn policies(&self) -> std::path::PathBuf {
        self.dir.0.join("policies")
    }
}

/// The config of node `i`: its own NATS server first, then the others; one shard, so
/// three routers and three NATS servers fit on two cores.
fn node_config(name: &str, nats: &NatsCluster, i: usize, servers: usize) -> TempDir {
    let mut urls: Vec<String> = (0..servers).map(|s| nats.url(s)).collect();
    urls.rotate_left(i);
    let toml = format!(
        "cores = \"0-0\"\n\
         [admin]\ntokens = [{{ token = \"{ADMIN_TOKEN}\", scopes = [\"admin\", \"results\"] }}]\n\
         [nats]\nurl = \"{}\"\n\
         [cluster]\nenabled = true\nnode_id = \"{name}\"\npolicy_replicas = {servers}\n\
         failover_ms = {FAILOVER_MS}\n",
        urls.join(",")
    );
    let dir = config_dir(name, &toml);
    // Every request must be decided: a cold rate-limit lease on a loaded machine answers
    // a few `rate_limited` well under the limit.
    support::without_acme_rate_limits(&dir);
    dir
}

fn push(config: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(["policy", "push"])
        .arg(dir)
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run shardline policy push")
}

/// Waits until `check` holds, or fails with `what`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < PROPAGATION_WAIT,
            "{what}: not within {PROPAGATION_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ready(node: &Node) -> bool {
    let resp = node.client().request("GET", "/readyz", &[], b"");
    resp.status == 200
}

/// A three-server NATS cluster, the bucket seeded from the example policies, and
/// `nodes` routers, each ready (its mirror in sync with the bucket).
fn cluster(nodes: usize) -> (NatsCluster, Vec<Node>) {
    let nats = NatsCluster::start(3);
    let started: Vec<Node> = (0..nodes)
        .map(|i| {
            let dir = node_config(&format!("node-{}", i + 1), &nats, i, 3);
            if i == 0 {
                let out = push(&dir.0.join("shardline.toml"), &dir.0.join("policies"), &[]);
                assert!(
                    out.status.success(),
                    "push: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let router = RouterProcess::spawn(&dir.0.join("shardline.toml"));
            Node { router, dir }
        })
        .collect();
    for node in &started {
        eventually("a node ready", || ready(node));
    }
    // Nodes that do not yet know each other disagree on owners: wait until they agree.
    let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i}")).collect();
    members_become(&started, &names);
    (nats, started)
}

fn auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

fn put(node: &Node, path: &str, doc: &str) -> support::Response {
    node.client()
        .request("PUT", path, &[("Authorization", &auth())], doc.as_bytes())
}

fn policy_doc(provider: &str) -> String {
    format!(r#"{{"version":"1.0","providers":[{{"name":"{provider}","weight":1}}]}}"#)
}

fn decide(node: &Node, policy: &str) -> serde_json::Value {
    let body = format!(
        r#"{{"request_id":"r-1","tenant_id":"acme","policy_id":"{policy}","task":{{"type":"chat","payload_ref":"p"}}}}"#
    );
    node.client()
        .request("POST", "/v1/decide", &[], body.as_bytes())
        .json()
}

fn decides_with(node: &Node, policy: &str, provider: &str) -> bool {
    decide(node, policy)["decision"]["provider_id"] == provider
}

/// A put on node A decides on B and C; the listing shows the revision on every node; a
/// delete on B removes the policy from C; each change reaches every node's directory.
#[test]
fn a_policy_written_on_one_node_decides_on_the_others() {
    let _serial = support::serial();
    let (_nats, nodes) = cluster(3);
    let path = "/admin/v1/policies/acme/shared";
    let created = put(&nodes[0], path, &policy_doc("alpha"));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let revision = created.json()["revision"].as_u64().expect("a revision");
    // The writer reads its own write at once.
    assert!(decides_with(&nodes[0], "shared", "alpha"));
    for node in &nodes[1..] {
        eventually("the put on the other nodes", || {
            decides_with(node, "shared", "alpha")
        });
        assert!(node.policies().join("acme/shared.json").is_file());
        let listing = node
            .client()
            .request(
                "GET",
                "/admin/v1/policies/acme",
                &[("Authorization", &auth())],
                b"",
            )
            .json();
        let row = listing["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy_id"] == "shared")
            .cloned()
            .expect("listed");
        assert_eq!(row["revision"].as_u64(), Some(revision), "{listing}");
    }

    let updated = put(&nodes[2], path, &policy_doc("beta"));
    assert_eq!(
        updated.status,
        200,
        "{}",
        String::from_utf8_lossy(&updated.body)
    );
    assert!(updated.json()["revision"].as_u64() > Some(revision));
    eventually("the update on node A", || {
        decides_with(&nodes[0], "shared", "beta")
    });

    let deleted = nodes[1]
        .client()
        .request("DELETE", path, &[("Authorization", &auth())], b"");
    assert_eq!(
        deleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    eventually("the delete on node C", || {
        decide(&nodes[2], "shared")["error"]["code"] == "policy_not_found"
    });
    assert!(!nodes[2].policies().join("acme/shared.json").exists());
    let again = nodes[0]
        .client()
        .request("DELETE", path, &[("Authorization", &auth())], b"");
    assert_eq!(again.status, 404);
}

/// Two writers that read the same revision: one wins, the other gets 409 `conflict`
/// naming the revision it must read again; nothing of the loser reaches any node. An
/// invalid document is refused before it reaches the bucket.
#[test]
fn concurrent_writers_cannot_both_win() {
    let _serial = support::serial();
    let (_nats, nodes) = cluster(2);
    let path = "/admin/v1/policies/acme/contended";
    let first = put(&nodes[0], path, &policy_doc("one"));
    assert_eq!(first.status, 201);
    let revision = first.json()["revision"].as_u64().unwrap();
    eventually("the first put on node B", || {
        decides_with(&nodes[1], "contended", "one")
    });

    let at = format!("{path}?revision={revision}");
    let a = put(&nodes[0], &at, &policy_doc("from_a"));
    let b = put(&nodes[1], &at, &policy_doc("from_b"));
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(b.status, 409, "{}", String::from_utf8_lossy(&b.body));
    let refused = b.json();
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["error"]["code"], "conflict");
    let winner = a.json()["revision"].as_u64().unwrap();
    assert_eq!(
        refused["error"]["details"]["expected_revision"].as_u64(),
        Some(revision)
    );
    assert_eq!(
        refused["error"]["details"]["current_revision"].as_u64(),
        Some(winner)
    );
    for node in &nodes {
        eventually("the winner everywhere", || {
            decides_with(node, "contended", "from_a")
        });
    }
    // A create of a policy that exists (revision 0: "must not exist") conflicts too.
    let create = put(&nodes[1], &format!("{path}?revision=0"), &policy_doc("x"));
    assert_eq!(
        create.status,
        409,
        "{}",
        String::from_utf8_lossy(&create.body)
    );

    let invalid = put(&nodes[1], path, r#"{"version":"1.0","providers":[]}"#);
    assert_eq!(
        invalid.status,
        400,
        "{}",
        String::from_utf8_lossy(&invalid.body)
    );
    let bad_query = put(&nodes[1], &format!("{path}?revision=x"), &policy_doc("x"));
    assert_eq!(bad_query.status, 400);
    assert!(decides_with(&nodes[0], "contended", "from_a"));
}

/// The bucket is the authority: a node whose directory holds a policy the bucket does not
/// drops it at its first sync, and a document written to the bucket behind the router's
/// back that does not load changes nothing on any node (counted, logged).
#[test]
fn the_bucket_is_the_authority_over_a_node_directory() {
    let _serial = support::serial();
    let (nats, nodes) = cluster(1);
    let late = node_config("node-late", &nats, 1, 3);
    support::write_policy(&late, "acme", "local_only", &policy_doc("local"));
    let router = RouterProcess::spawn(&late.0.join("shardline.toml"));
    let late = Node { router, dir: late };
    eventually("the late node ready", || ready(&late));
    assert!(!late.policies().join("acme/local_only.json").exists());
    assert_eq!(
        decide(&late, "local_only")["error"]["code"],
        "policy_not_found"
    );
    assert_eq!(decide(&late, "default")["ok"], true);

    let nc = nats::connect(nats.url(2)).expect("connect to NATS");
    let reply = nc
        .request(&format!("$KV.{BUCKET}.acme.broken"), "{ not json")
        .expect("a JetStream ack");
    assert!(String::from_utf8_lossy(&reply.data).contains("\"seq\""));
    let good = put(
        &nodes[0],
        "/admin/v1/policies/acme/after_broken",
        &policy_doc("fine"),
    );
    assert_eq!(good.status, 201);
    for node in [&nodes[0], &late] {
        eventually("the change after the broken one", || {
            decides_with(node, "after_broken", "fine")
        });
        assert!(!node.policies().join("acme/broken.json").exists());
        let metrics = node.client().request("GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        assert!(
            text.contains("shardline_cluster_policy_changes_refused_total 1"),
            "{text}"
        );
        assert!(ready(node));
    }
}

/// Losing the NATS server a node talks to costs neither its answers nor the cluster's
/// writes (the bucket has three replicas): the node reconnects to another server, a put
/// made meanwhile reaches every node, and the server comes back.
#[test]
fn a_nats_server_lost_under_traffic_costs_no_answer_and_no_write() {
    let _serial = support::serial();
    let (mut nats, nodes) = cluster(3);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            let mut client = nodes[0].client();
            let body = support::decide_body("acme", "r-traffic");
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.request("POST", "/v1/decide", &[], &body);
                if resp.status == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        });
        nats.kill(0);
        let path = "/admin/v1/policies/acme/during_outage";
        // Node A's server is gone: its write waits for its reconnection to another.
        // A put whose acknowledgement was lost with the server is retried; the retry
        // finds the policy written and updates it (200) rather than creating it (201).
        eventually("a put through node A after its server died", || {
            matches!(
                put(&nodes[0], path, &policy_doc("steady")).status,
                200 | 201
            )
        });
        for node in &nodes {
            eventually("the put on every node", || {
                decides_with(node, "during_outage", "steady")
            });
        }
        nats.restart(0);
        let path = "/admin/v1/policies/acme/after_restart";
        assert_eq!(put(&nodes[1], path, &policy_doc("back")).status, 201);
        for node in &nodes {
            eventually("the put after the restart", || {
                decides_with(node, "after_restart", "back")
            });
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        traffic.join().unwrap()
    });
    let (ok, failed) = answered;
    assert!(ok > 0);
    // HTTP decisions never wait on NATS: none failed while a server was away.
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
}

/// `policy push` refuses a directory with an invalid document and writes nothing; with
/// `--prune` it deletes what the directory does not hold, and the nodes follow.
#[test]
fn policy_push_checks_first_and_prunes_on_request() {
    let _serial = support::serial();
    let (_nats, nodes) = cluster(1);
    let config = nodes[0].dir.0.join("shardline.toml");
    let source = TempDir::new("push-source");
    std::fs::create_dir_all(source.0.join("acme")).unwrap();
    std::fs::write(source.0.join("acme/only.json"), policy_doc("pushed")).unwrap();
    std::fs::write(source.0.join("acme/bad.json"), "{").unwrap();
    let refused = push(&config, &source.0, &["--prune"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("nothing was pushed"), "{said}");
    assert!(
        decide(&nodes[0], "default")["ok"] == true,
        "nothing was pruned"
    );

    std::fs::remove_file(source.0.join("acme/bad.json")).unwrap();
    let pushed = push(&config, &source.0, &["--prune"]);
    let out = String::from_utf8_lossy(&pushed.stdout);
    assert!(
        pushed.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(out.contains("put acme/only revision"), "{out}");
    assert!(out.contains("deleted acme/default revision"), "{out}");
    eventually("the pushed set on the node", || {
        decides_with(&nodes[0], "only", "pushed")
            && decide(&nodes[0], "default")["error"]["code"] == "policy_not_found"
    });
    let listed: Vec<_> = std::fs::read_dir(nodes[0].policies().join("acme"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(listed, ["only.json"]);
}

/// Node `node`'s view of the cluster: (node id, partitions owned) per member, sorted.
fn ownership(node: &Node) -> Vec<(String, u64)> {
    let view = node
        .client()
        .request(
            "GET",
            "/admin/v1/cluster",
            &[("Authorization", &auth())],
            b"",
        )
        .json();
    let members = view["members"].as_array().cloned().unwrap_or_default();
    members
        .iter()
        .map(|m| {
            let id = m["node_id"].as_str().unwrap_or_default().to_owned();
            (id, m["partitions_owned"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// A counter's value summed over `nodes` (0 where a node does not show it).
fn metric_sum(nodes: &[Node], name: &str) -> f64 {
    let prefix = format!("{name} ");
    nodes
        .iter()
        .map(|node| {
            let metrics = node.client().request("GET", "/metrics", &[], b"");
            let text = String::from_utf8_lossy(&metrics.body).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum()
}

/// Waits until every node of `nodes` lists exactly `expected` as the members.
fn members_become(nodes: &[Node], expected: &[String]) {
    for node in nodes {
        eventually("the members every node lists", || {
            let ids: Vec<String> = ownership(node).into_iter().map(|(id, _)| id).collect();
            ids == expected
        });
    }
}

fn owner_of(node: &Node, tenant: &str) -> String {
    let path = format!("/admin/v1/cluster?tenant={tenant}");
    let view = node
        .client()
        .request("GET", &path, &[("Authorization", &auth())], b"")
        .json();
    view["tenant"]["owner"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Three nodes find each other by their heartbeats and agree on who owns which tenants.
/// One killed with SIGKILL: every decide sent over NATS afterwards is answered by the
/// others (the queue group loses the dead member with its connection), and within the
/// failover time the survivors drop it and share its partitions, keeping their own.
#[test]
fn a_node_killed_leaves_and_its_tenants_move_to_the_others() {
    let _serial = support::serial();
    let (nats, mut nodes) = cluster(3);
    let all: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
    members_become(&nodes, &all);
    let before = ownership(&nodes[0]);
    assert_eq!(before.iter().map(|(_, n)| n).sum::<u64>(), 1_024);
    for node in &nodes[1..] {
        assert_eq!(
            ownership(node),
            before,
            "every node computes the same ownership"
        );
    }
    let owner = owner_of(&nodes[0], "acme");
    assert!(all.contains(&owner), "{owner}");
    assert_eq!(owner_of(&nodes[2], "acme"), owner);

    let nc = nats::connect(nats.url(0)).expect("connect to NATS");
    // The service API says what one node owns, as `nats micro info` shows it.
    let info = nc
        .request_timeout("$SRV.INFO.shardline", "", Duration::from_secs(2))
        .expect("a service INFO answer");
    let info: serde_json::Value = serde_json::from_slice(&info.data).unwrap();
    let node = info["metadata"]["node_id"].as_str().unwrap().to_owned();
    let owned = before.iter().find(|(id, _)| *id == node).unwrap().1;
    assert_eq!(
        info["metadata"]["partitions_owned"],
        owned.to_string(),
        "{info}"
    );
    assert_eq!(info["metadata"]["members"], "3", "{info}");
    let view = nodes[0]
        .client()
        .request(
            "GET",
            "/admin/v1/cluster",
            &[("Authorization", &auth())],
            b"",
        )
        .json();
    let own = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "node-1");
    let own = own.expect("a node lists itself");
    assert_eq!(own["shards"], 1, "{view}");
    assert!(own["instance"].is_string(), "{view}");
    assert!(own["last_heard_ms_ago"].is_null(), "{view}");
    let body = support::decide_body("acme", "r-nats");
    let ask = |n: usize| {
        let mut answered = 0;
        let mut lost = Vec::new();
        for i in 0..n {
            let reply =
                nc.request_timeout("beamline.router.v1.decide", &body, Duration::from_secs(2));
            if let Ok(msg) = reply {
                let answer: serde_json::Value = serde_json::from_slice(&msg.data).unwrap();
                assert_eq!(answer["ok"], true, "{answer}");
                answered += 1;
            } else {
                lost.push(i);
            }
        }
        assert!(lost.is_empty(), "requests lost: {lost:?} of {n}");
        answered
    };
    assert_eq!(ask(30), 30);

    let dead = nodes.remove(2);
    let mut child = dead.router.into_child();
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel has closed the dead router's connection; its NATS server drops its
    // subscriptions at once, and tells the other servers over the routes a moment later.
    // A request sent in that moment is routed to the dead member and lost, as a request
    // in flight to it is (measured here: the first one sent within a millisecond of the
    // kill, in some runs). docs/CLUSTER.md, "Failure modes".
    std::thread::sleep(Duration::from_millis(250));
    // Sent after the death: all answered by the two others.
    assert_eq!(ask(100), 100, "a decide sent after the kill was lost");

    let survivors = &all[..2];
    members_become(&nodes, survivors);
    let after = ownership(&nodes[0]);
    assert_eq!(after.iter().map(|(_, n)| n).sum::<u64>(), 1_024);
    for (id, owned) in &after {
        let had = before.iter().find(|(b, _)| b == id).unwrap().1;
        assert!(*owned > had, "{id} took part of the dead node's partitions");
    }
    assert_eq!(ownership(&nodes[1]), after);
    assert!(survivors.contains(&owner_of(&nodes[1], "acme")));
    drop(dead.dir);
}

/// Hammers acme's policy `limited` on every node of `nodes` at once, one client per node,
/// for `run`: (admitted, refused) per node, and the seconds it took.
fn hammer_limited(nodes: &[&Node], run: Duration) -> (Vec<(u64, u64)>, f64) {
    let body = br#"{"request_id":"r","tenant_id":"acme","policy_id":"limited","task":{"type":"chat","payload_ref":"p"}}"#;
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut client = node.client();
                    let (mut ok, mut limited) = (0u64, 0u64);
                    while started.elapsed() < run {
                        let resp = client.request("POST", "/v1/decide", &[], body);
                        match resp.status {
                            200 => ok += 1,
                            429 => limited += 1,
                            other => panic!("{other}: {}", String::from_utf8_lossy(&resp.body)),
                        }
                    }
                    (ok, limited)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (counts, started.elapsed().as_secs_f64())
}

/// One tenant limited to 200 requests a second with a burst of 20, hammered on all three
/// nodes at once: the nodes together admit at most `200 × t + 20` over the run (the
/// owner node hands out shares of the limit, `decide::share`), and at least 90 % of it.
/// Then its owner node is killed under the same load: the two others go on within the
/// limit (the new owner grants nothing until the old owner's shares have run out), and
/// admit again once they have taken the tenant over.
#[test]
fn a_rate_limit_holds_over_all_nodes_together() {
    let _serial = support::serial();
    let (_nats, mut nodes) = cluster(3);
    let doc = r#"{"version":"1.0","providers":[{"name":"a","weight":1}],
        "rate_limit":{"enabled":true,"requests_per_second":200,"burst":20}}"#;
    assert_eq!(
        put(&nodes[0], "/admin/v1/policies/acme/limited", doc).status,
        201
    );
    // Each node learns the policy, then its share: after a start an owner grants nothing
    // for a grant's life plus the failover time.
    for node in &nodes {
        eventually("a share on every node", || {
            decides_with(node, "limited", "a")
        });
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (counts, elapsed) = hammer_limited(&all, Duration::from_secs(6));
    let admitted: u64 = counts.iter().map(|(ok, _)| ok).sum();
    let refused: u64 = counts.iter().map(|(_, l)| l).sum();
    let allowed = 200.0 * elapsed + 20.0;
    eprintln!("admitted {admitted} ({counts:?}) of {allowed:.0} allowed in {elapsed:.2} s; {refused} refused");
    assert!(refused > 0, "the nodes were not hammered past the limit");
    assert!(
        admitted as f64 <= allowed,
        "admitted {admitted}, allowed {allowed:.0}"
    );
    assert!(
        admitted as f64 >= 0.9 * 200.0 * elapsed,
        "admitted {admitted} of {allowed:.0}"
    );
    for (ok, _) in &counts {
        assert!(*ok > 0, "every node admits its share: {counts:?}");
    }
    // Two of the three nodes do not own acme: they asked for their shares.
    let asks: f64 = metric_sum(&nodes, "shardline_cluster_share_asks_total");
    assert!(
        asks >= 2.0 * 5.0 * 4.0,
        "share asks over 6 s from two nodes: {asks}"
    );

    let owner = kill_the_owner_of(&mut nodes, "acme");
    let survivors: Vec<&Node> = nodes.iter().collect();
    let (counts, elapsed) = hammer_limited(&survivors, Duration::from_secs(8));
    let admitted: u64 = counts.iter().map(|(ok, _)| ok).sum();
    let allowed = 200.0 * elapsed + 20.0;
    eprintln!("after the owner's death: admitted {admitted} ({counts:?}) of {allowed:.0} allowed in {elapsed:.2} s");
    assert!(
        admitted as f64 <= allowed,
        "admitted {admitted}, allowed {allowed:.0}"
    );
    assert_ne!(owner_of(&nodes[0], "acme"), owner, "acme moved");
    // Refused from about a grant's life after the death until the death is noticed
    // (failover_ms), plus a grant's life and failover_ms more: about 3 s here.
    let admitting = elapsed - (1.0 + 2.0 * FAILOVER_MS as f64 / 1e3 + 0.5);
    assert!(
        admitted as f64 >= 0.5 * 200.0 * admitting,
        "the survivors admit again once they own acme: {admitted}"
    );
}

/// Results reach every node: five failures of openai posted to node A open its circuit
/// on node B and node C (their decisions stop choosing it), each result is published as
/// one UsageEvent (by the node that accepted it, not once per node), and a result sent
/// again to another node is a duplicate there too.
#[test]
fn results_accepted_by_one_node_reach_the_others() {
    let _serial = support::serial();
    let (nats, nodes) = cluster(3);
    // On the server node-1 publishes through: the events it publishes right away need no
    // route to have learnt of the subscription first.
    let nc = nats::connect(nats.url(0)).expect("connect to NATS");
    let usage = nc
        .subscribe("beamline.usage.v1.metered")
        .expect("subscribe to usage events");
    nc.flush().unwrap();
    let result = |n: u32| {
        serde_json::json!({
            "assignment_id": format!("a-{n}"), "request_id": format!("r-{n}"),
            "status": "error", "provider_id": "openai", "tenant_id": "acme",
            "latency_ms": 100.0
        })
    };
    let post = |node: &Node, n: u32| {
        node.client().request(
            "POST",
            "/v1/results",
            &[("Authorization", &auth())],
            &serde_json::to_vec(&result(n)).unwrap(),
        )
    };
    for n in 1..=5 {
        let resp = post(&nodes[0], n);
        assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    }
    for node in &nodes {
        eventually("openai's circuit open on every node", || {
            let view = node
                .client()
                .request(
                    "GET",
                    "/admin/v1/circuits/acme",
                    &[("Authorization", &auth())],
                    b"",
                )
                .json();
            view.to_string().contains("\"open\"")
        });
    }
    for node in &nodes[1..] {
        for i in 0..20 {
            let body = support::decide_body("acme", &format!("after-{i}"));
            let resp = node.client().request("POST", "/v1/decide", &[], &body);
            let decision = resp.json();
            assert_ne!(decision["decision"]["provider_id"], "openai", "{decision}");
        }
    }
    // Sent again, to another node: a duplicate there as well.
    let again = post(&nodes[2], 3).json();
    assert_eq!(again["duplicate"], true, "{again}");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut events = 0;
    while Instant::now() < deadline {
        if usage.next_timeout(Duration::from_millis(200)).is_ok() {
            events += 1;
        }
    }
    assert_eq!(events, 5, "one UsageEvent per result");
    let metrics = nodes[1].client().request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("shardline_cluster_results_received_total 5"),
        "{text}"
    );
}

/// Kills (SIGKILL) the node that owns `tenant` and takes it out of `nodes`; returns its
/// name. Nodes are node-1, node-2, node-3 in order.
fn kill_the_owner_of(nodes: &mut Vec<Node>, tenant: &str) -> String {
    let owner = owner_of(&nodes[0], tenant);
    let index: usize = owner
        .trim_start_matches("node-")
        .parse()
        .expect("a node name");
    let dead = nodes.remove(index - 1);
    let mut child = dead.router.into_child();
    child.kill().unwrap();
    child.wait().unwrap();
    owner
}

/// Sends a decide request that must be admitted or refused `budget_exceeded`: whether it
/// was admitted.
fn within_budget(client: &mut Client, body: &[u8]) -> bool {
    let resp = client.request("POST", "/v1/decide", &[], body);
    match resp.status {
        200 => true,
        429 => {
            assert_eq!(resp.json()["error"]["code"], "budget_exceeded");
            false
        }
        other => panic!("{other}: {}", String::from_utf8_lossy(&resp.body)),
    }
}

/// Puts acme's `policy` through the first node, then waits until every node admits a
/// request with it; returns how many were admitted meanwhile (a budget's spend).
fn put_and_decide_everywhere(nodes: &[Node], policy: &str, doc: &str) -> u32 {
    let path = format!("/admin/v1/policies/acme/{policy}");
    assert_eq!(put(&nodes[0], &path, doc).status, 201);
    let mut spent = 0;
    for node in nodes {
        eventually("the budgeted policy on every node", || {
            let ok = decide(node, policy)["ok"] == true;
            spent += u32::from(ok);
            ok
        });
    }
    spent
}

/// A budget holds for the cluster: a tenant allowed 60 requests an hour, asked from all
/// three nodes at once (HTTP and NATS) and again a little later, is admitted exactly 60
/// times, whichever node each request lands on; the others are refused `budget_exceeded`. And an idempotency key
/// gets its first answer back from any node.
#[test]
fn budgets_and_idempotency_keys_have_one_ledger_for_the_cluster() {
    let _serial = support::serial();
    let (nats, nodes) = cluster(3);
    let doc = r#"{"version":"1.0","providers":[{"name":"a","weight":1},{"name":"b","weight":1}],
        "budgets":[{"scope":"tenant","window":"1h","max_requests":60}]}"#;
    // Each node's first admitted request spends one of the 60.
    let spent = put_and_decide_everywhere(&nodes, "budgeted", doc);
    let body = br#"{"request_id":"r","tenant_id":"acme","policy_id":"budgeted","task":{"type":"chat","payload_ref":"p"}}"#;
    let nc = nats::connect(nats.url(2)).expect("connect to NATS");
    let (http, over_nats): (Vec<(u32, u32)>, (u32, u32)) = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut client = node.client();
                    let (mut ok, mut refused) = (0, 0);
                    for _ in 0..40 {
                        match within_budget(&mut client, body) {
                            true => ok += 1,
                            false => refused += 1,
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..40 {
            let msg = nc
                .request_timeout("beamline.router.v1.decide", body, Duration::from_secs(2))
                .expect("an answer over NATS");
            let answer: serde_json::Value = serde_json::from_slice(&msg.data).unwrap();
            if answer["ok"] == true {
                ok += 1;
            } else {
                assert_eq!(answer["error"]["code"], "budget_exceeded", "{answer}");
                refused += 1;
            }
        }
        let http = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (http, (ok, refused))
    });
    let admitted: u32 = http.iter().map(|(ok, _)| ok).sum::<u32>() + over_nats.0;
    // A rush this short can end while a node still holds room it did not use: refused
    // elsewhere meanwhile (with a Retry-After of a couple of seconds, not the window's
    // reset), and admitted once its allowance has run out.
    std::thread::sleep(Duration::from_millis(2_500));
    let mut late = 0;
    for node in &nodes {
        let mut client = node.client();
        for _ in 0..30 {
            late += u32::from(within_budget(&mut client, body));
        }
    }
    eprintln!(
        "admitted {admitted} (+{spent} before, +{late} after): HTTP per node {http:?}, \
         NATS {over_nats:?}"
    );
    assert_eq!(
        admitted + spent + late,
        60,
        "a budget of 60, {spent} spent before the rush"
    );

    // An idempotency key: the first answer, from whichever node is asked again.
    let keyed = |n: usize| {
        let body = format!(
            r#"{{"request_id":"k-{n}","tenant_id":"globex","idempotency_key":"key-1","task":{{"type":"chat","payload_ref":"p"}}}}"#
        );
        nodes[n]
            .client()
            .request("POST", "/v1/decide", &[], body.as_bytes())
            .json()
    };
    // A node that has just become an owner answers 503 for a moment (its ledger opens
    // a failover time after): retried like any 503.
    let mut first = serde_json::Value::Null;
    eventually("the key's first answer", || {
        first = keyed(0);
        first["ok"] == true
    });
    for n in 1..3 {
        let mut again = serde_json::Value::Null;
        eventually("the key's answer again", || {
            again = keyed(n);
            again["error"]["code"] != "overloaded"
        });
        assert_eq!(
            again["decision"]["provider_id"], first["decision"]["provider_id"],
            "{again}"
        );
        assert_eq!(
            again["context"]["request_id"], first["context"]["request_id"],
            "{again}"
        );
    }
}

/// Budgets are spent where requests land: each node decides within the allowance the
/// tenant's owner node grants it, and only what an allowance cannot take crosses to the
/// owner. Three nodes asked steadily for a tenant allowed 900 requests an hour admit
/// exactly 900 together, and most of them without a hop.
#[test]
fn budgets_are_spent_where_requests_land() {
    let _serial = support::serial();
    let (_nats, nodes) = cluster(3);
    let doc = r#"{"version":"1.0","providers":[{"name":"a","weight":1},{"name":"b","weight":1}],
        "budgets":[{"scope":"tenant","window":"1h","max_requests":900}]}"#;
    let spent = put_and_decide_everywhere(&nodes, "allowed", doc);
    // The first requests asked for room: the allowances come with the next reports.
    std::thread::sleep(Duration::from_millis(600));
    let forwarded_before = metric_sum(&nodes, "shardline_cluster_decisions_forwarded_total");
    let body = br#"{"request_id":"r","tenant_id":"acme","policy_id":"allowed","task":{"type":"chat","payload_ref":"p"}}"#;
    let counts: Vec<(u32, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut client = node.client();
                    let (mut ok, mut refused) = (0, 0);
                    while refused < 5 && ok < 2_000 {
                        match within_budget(&mut client, body) {
                            true => ok += 1,
                            false => refused += 1,
                        }
                        // About 300 requests a second from each node: the run spans
                        // several reports.
                        std::thread::sleep(Duration::from_millis(3));
                    }
                    (ok, refused)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut admitted: u32 = counts.iter().map(|(ok, _)| ok).sum();
    let forwarded =
        metric_sum(&nodes, "shardline_cluster_decisions_forwarded_total") - forwarded_before;
    // Near the limit a node may still hold room it has left unused, counted by the owner
    // until the node's cap runs out (decide::allowance): asked again after that, the
    // cluster admits what is left, and not one more.
    std::thread::sleep(Duration::from_millis(2_500));
    let mut late = 0;
    for node in &nodes {
        let mut client = node.client();
        for _ in 0..10 {
            let resp = client.request("POST", "/v1/decide", &[], body);
            late += u32::from(resp.status == 200);
        }
    }
    eprintln!(
        "admitted {admitted} (+{spent} before, +{late} after), per node {counts:?}, \
         forwarded {forwarded}"
    );
    admitted += late;
    assert_eq!(admitted + spent, 900, "a budget of 900 over three nodes");
    // Two of the three nodes are not the owner: two thirds of the requests landed there.
    // Crossing is for what their allowances could not take, near the end.
    assert!(
        forwarded < f64::from(admitted) / 4.0,
        "most decisions were made where they landed: {forwarded} of {admitted} crossed"
    );
}

/// A budget's owner node killed: what it had spent itself stays counted. Each answer of
/// an owner tells the other nodes its own spend, and they tell the next owner, so the
/// survivors together admit what is left of 600 requests an hour — not the dead owner's
/// spend once more.
#[test]
fn a_budget_owner_killed_leaves_its_spend_counted() {
    let _serial = support::serial();
    let (_nats, mut nodes) = cluster(3);
    let doc = r#"{"version":"1.0","providers":[{"name":"a","weight":1}],
        "budgets":[{"scope":"tenant","window":"1h","max_requests":600}]}"#;
    let spent = put_and_decide_everywhere(&nodes, "spend", doc);
    std::thread::sleep(Duration::from_millis(600));
    let body = br#"{"request_id":"r","tenant_id":"acme","policy_id":"spend","task":{"type":"chat","payload_ref":"p"}}"#;
    // Every node, the owner too, spends for a second and a half at about 100 a second.
    let before: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut client = node.client();
                    let started = Instant::now();
                    let mut ok = 0;
                    while started.elapsed() < Duration::from_millis(1_500) {
                        ok += u32::from(within_budget(&mut client, body));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let owner = kill_the_owner_of(&mut nodes, "acme");
    // The survivors: answered 503 while acme moves, then admitted until the budget is
    // spent.
    let after: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    let mut client = node.client();
                    let started = Instant::now();
                    let (mut ok, mut refused) = (0, 0);
                    while refused < 5 && started.elapsed() < Duration::from_secs(30) {
                        let resp = client.request("POST", "/v1/decide", &[], body);
                        match (resp.status, resp.json()["error"]["code"].as_str()) {
                            (200, _) => ok += 1,
                            (429, Some("budget_exceeded")) => refused += 1,
                            (503, Some("overloaded")) => {}
                            (status, _) => {
                                panic!("{status}: {}", String::from_utf8_lossy(&resp.body))
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    assert_eq!(refused, 5, "the budget was spent");
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::thread::sleep(Duration::from_millis(2_500));
    let mut late = 0;
    for node in &nodes {
        let mut client = node.client();
        for _ in 0..10 {
            late += u32::from(within_budget(&mut client, body));
        }
    }
    let total = spent + before.iter().sum::<u32>() + after.iter().sum::<u32>() + late;
    eprintln!(
        "owner {owner} killed: {spent} + before {before:?} + after {after:?} + {late} late = {total}"
    );
    // At most what the owner admitted after its last answer to another node was lost: a
    // report period or two at its pace (20 a period; 5–15 over here in three runs).
    // Without the hand-on, its whole spend: 744 admitted in the run that checked it.
    assert!(total <= 600 + 45, "admitted {total} of 600");
    assert!(total >= 600, "the survivors spend what is left: {total}");
}
