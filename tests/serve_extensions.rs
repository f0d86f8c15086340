//! The extensions pipeline (SPEC §7) end to end: a router with a registry of extensions,
//! policies whose stages name them, and real responders (official `nats` client
//! subscribers) on the extensions' subjects. Tenants cover every shard and requests go to
//! the shared subject, so each scenario runs its stages on whichever shard a message
//! lands, owner or not, in a task of its own.
//!
//! Every request has a timeout: a pipeline that hangs fails the test instead of stalling it.

#![allow(deprecated)] // the sync `nats` crate is deprecated upstream; it is the reference here

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::nats::{start_connected, NatsServer};
use support::*;

/// How long a test waits for any one answer.
const WAIT: Duration = Duration::from_secs(5);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Slack allowed over a stage's worst-case time (scheduling on a busy machine).
const TIMEOUT_MARGIN: Duration = Duration::from_millis(1_500);

/// A router whose registry and policies were written before it started, and an official
/// client on the same nats-server.
struct Rig {
    server: Option<shardline::server::Server>,
    nc: ::nats::Connection,
    tenants: Vec<String>,
    _dir: TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().unwrap();
        }
    }
}

impl Rig {
    /// `extensions`: registry files `(id, JSON)`; `policies`: `(policy id, JSON)`, written
    /// for every tenant of `tenants_covering(usable_cores())`.
    fn start(nats: &NatsServer, extensions: &[(&str, String)], policies: &[(&str, &str)]) -> Rig {
        let toml = format!("[nats]\nurl = \"{}\"\n", nats.url());
        let dir = config_dir("serve-ext", &toml);
        let registry = dir.0.join("extensions");
        std::fs::create_dir_all(&registry).unwrap();
        for (id, doc) in extensions {
            std::fs::write(registry.join(format!("{id}.json")), doc).unwrap();
        }
        let tenants = tenants_covering(usable_cores());
        for tenant in &tenants {
            for (id, doc) in policies {
                write_policy(&dir, tenant, id, doc);
            }
        }
        let server = start_connected(settings(&dir));
        Rig {
            server: Some(server),
            nc: ::nats::connect(nats.url()).unwrap(),
            tenants,
            _dir: dir,
        }
    }

    fn server(&self) -> &shardline::server::Server {
        self.server.as_ref().unwrap()
    }

    /// A decide request over NATS; panics when no answer comes within `WAIT`.
    fn decide(&self, tenant: &str, body: &str) -> ::nats::Message {
        let mut h = ::nats::HeaderMap::new();
        h.insert("tenant_id", tenant.to_owned());
        self.nc
            .request_with_headers_or_timeout(
                "beamline.router.v1.decide",
                Some(&h),
                Some(WAIT),
                body,
            )
            .unwrap_or_else(|e| panic!("no answer for {tenant}: {e}"))
    }

    /// A decide request on the subject of `tenant`'s owner shard only.
    fn decide_on_owner(&self, tenant: &str, body: &str) -> ::nats::Message {
        let shards = self.server().shard_count();
        let owner = ::shards::Partitioner::new(shards).shard_of(tenant).index();
        let subject = format!("beamline.router.v1.decide.shard.{owner}");
        self.nc
            .request_timeout(&subject, body, WAIT)
            .unwrap_or_else(|e| panic!("no answer for {tenant}: {e}"))
    }

    /// An admin operation over NATS with the all-tenants token in the body.
    fn admin(&self, op: &str, mut args: Value) -> Value {
        args["token"] = Value::from(ADMIN_TOKEN);
        let subject = format!("beamline.router.v1.admin.{op}");
        let m = self
            .nc
            .request_timeout(&subject, args.to_string(), WAIT)
            .unwrap_or_else(|e| panic!("no answer to {op}: {e}"));
        json_of(&m.data)
    }
}

/// A registry entry.
fn extension(id: &str, kind: &str, timeout_ms: u32, retry: u32, config: Value) -> String {
    json!({
        "id": id, "type": kind, "subject": subject(id), "timeout_ms": timeout_ms,
        "retry": retry, "enabled": true, "config": config,
        "metadata": {"description": "test extension"}
    })
    .to_string()
}

fn subject(id: &str) -> String {
    format!("test.ext.{id}.v1")
}

/// A policy with two providers and the given stage members (`"pre":[…]` etc.).
fn policy(stages: &str) -> String {
    format!(
        r#"{{"version":"1.0","providers":[{{"name":"openai","weight":60}},
            {{"name":"anthropic","weight":40}}]{stages}}}"#
    )
}

/// A decide body with a task payload, request metadata and `extra` members.
fn body(tenant: &str, request_id: &str, policy_id: &str, extra: &str) -> String {
    format!(
        r#"{{"request_id":"{request_id}","tenant_id":"{tenant}","trace_id":"{TRACE}",
            "policy_id":"{policy_id}","task":{{"type":"chat","payload":{{"text":"Hello"}}}},
            "metadata":{{"user_id":"u-7"}}{extra}}}"#
    )
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)))
}

fn header(m: &::nats::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).cloned()
}

/// `decision.metadata.executed_extensions` as `(id, type, status)`.
fn executed(v: &Value) -> Vec<(String, String, String)> {
    let list = v["decision"]["metadata"]["executed_extensions"]
        .as_array()
        .unwrap_or_else(|| panic!("no executed_extensions: {v}"));
    list.iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("id"), s("type"), s("status"))
        })
        .collect()
}

fn row(id: &str, kind: &str, status: &str) -> (String, String, String) {
    (id.into(), kind.into(), status.into())
}

/// Asserts an ErrorResponse with `code`, and the `status` header when `m` is a message.
fn assert_error(m: &::nats::Message, code: &str, status: &str) -> Value {
    let v = json_of(&m.data);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(header(m, "status").as_deref(), Some(status), "{v}");
    v
}

fn assert_decided(m: &::nats::Message) -> Value {
    let v = json_of(&m.data);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(header(m, "status").as_deref(), Some("200"), "{v}");
    v
}

/// What a responder saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    body: Value,
    tenant_id: Option<String>,
    trace_id: Option<String>,
}

type Behaviour = dyn Fn(&Value) -> (Duration, Value) + Send + Sync;

/// An extension service: answers every request on its subject with `behaviour(body)`
/// after the returned delay (from a thread of its own, so a slow answer never holds up
/// the next call), and records what it received.
struct Responder {
    nc: ::nats::Connection,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Responder {
    fn start(nats: &NatsServer, id: &str, behaviour: Arc<Behaviour>) -> Responder {
        let nc = ::nats::connect(nats.url()).unwrap();
        let sub = nc.subscribe(&subject(id)).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for m in sub.iter() {
                let body = serde_json::from_slice(&m.data).unwrap_or(Value::Null);
                log.lock().unwrap().push(Seen {
                    body: body.clone(),
                    tenant_id: header(&m, "tenant_id"),
                    trace_id: header(&m, "trace_id"),
                });
                let (delay, reply) = behaviour(&body);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = m.respond(reply.to_string());
                });
            }
        });
        nc.flush().unwrap();
        Responder { nc, seen }
    }

    /// Answers `reply` at once.
    fn fixed(nats: &NatsServer, id: &str, reply: Value) -> Responder {
        Responder::start(nats, id, Arc::new(move |_| (Duration::ZERO, reply.clone())))
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.nc.clone().close();
    }
}

/// A pre-processor's payload replaces the task's (the pushed ExecAssignment carries the
/// rewritten one) and its metadata joins the decision's; the call body carries the
/// contract members, the stage's config over the entry's, and the contract headers.
#[test]
fn pre_processor_rewrites_payload_and_adds_metadata() {
    let _serial = serial();
    let nats = NatsServer::start();
    let pre = Responder::start(
        &nats,
        "rewrite",
        Arc::new(|call: &Value| {
            let text = call["payload"]["text"]
                .as_str()
                .unwrap_or("?")
                .to_uppercase();
            let reply = json!({"payload": {"text": text, "rewritten": true},
                               "metadata": {"lang": "fr", "pre_seen": 1}});
            (Duration::ZERO, reply)
        }),
    );
    let registry = [(
        "rewrite",
        extension(
            "rewrite",
            "pre",
            1_000,
            0,
            json!({"lowercase": false, "keep": 1}),
        ),
    )];
    let stages = r#","pre":[{"id":"rewrite","mode":"required","config":{"lowercase":true}}]"#;
    let rig = Rig::start(&nats, &registry, &[("rw", &policy(stages))]);
    let assignments = rig.nc.subscribe("caf.exec.assign.v1").unwrap();
    rig.nc.flush().unwrap();
    for (i, tenant) in rig.tenants.iter().enumerate() {
        let m = rig.decide(
            tenant,
            &body(tenant, "p1", "rw", r#","push_assignment":true"#),
        );
        let v = assert_decided(&m);
        let meta = &v["decision"]["metadata"];
        assert_eq!(meta["lang"], "fr", "{v}");
        assert_eq!(meta["pre_seen"], 1, "{v}");
        assert_eq!(meta["user_id"], "u-7", "{v}");
        assert_eq!(executed(&v), [row("rewrite", "pre", "ok")]);
        let a = json_of(&assignments.next_timeout(WAIT).expect("an assignment").data);
        assert_eq!(a["tenant_id"], tenant.as_str(), "{a}");
        assert_eq!(
            a["job"]["payload"],
            json!({"text": "HELLO", "rewritten": true})
        );
        assert_eq!(a["executor"]["provider_id"], v["decision"]["provider_id"]);

        let seen = &pre.seen()[i];
        assert_eq!(seen.tenant_id.as_deref(), Some(tenant.as_str()));
        assert_eq!(seen.trace_id.as_deref(), Some(TRACE));
        let call = &seen.body;
        assert_eq!(call["tenant_id"], tenant.as_str(), "{call}");
        assert_eq!(call["trace_id"], TRACE, "{call}");
        assert_eq!(call["payload"], json!({"text": "Hello"}), "{call}");
        assert_eq!(call["metadata"], json!({"user_id": "u-7"}), "{call}");
        assert_eq!(
            call["config"],
            json!({"lowercase": true, "keep": 1}),
            "{call}"
        );
    }
    assert_eq!(pre.count(), rig.tenants.len());
}

/// Blocking validators, in both reply forms, fail the request with `validator_blocked`
/// (status 502) and their reason; `warn` and `ignore` let it through, listed as failed.
#[test]
fn validators_block_warn_and_ignore() {
    let _serial = serial();
    let nats = NatsServer::start();
    let by_valid = Responder::fixed(&nats, "by_valid", json!({"valid": false, "reason": "pii"}));
    let by_status = Responder::fixed(
        &nats,
        "by_status",
        json!({"status": "reject", "message": "too long"}),
    );
    let passes = Responder::fixed(&nats, "passes", json!({"valid": true}));
    let registry = ["by_valid", "by_status", "passes"]
        .map(|id| (id, extension(id, "validator", 1_000, 0, json!({}))));
    let v = |id: &str, on_fail: &str| {
        policy(&format!(
            r#","validators":[{{"id":"{id}","on_fail":"{on_fail}"}}]"#
        ))
    };
    let both_warn = policy(
        r#","validators":[{"id":"passes"},{"id":"by_valid","on_fail":"warn"},
            {"id":"by_status","on_fail":"ignore"}]"#,
    );
    let policies = [
        ("block_valid", v("by_valid", "block")),
        ("block_status", v("by_status", "block")),
        ("warn", v("by_valid", "warn")),
        ("ignore", v("by_status", "ignore")),
        ("mixed", both_warn),
    ];
    let policies: Vec<(&str, &str)> = policies.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let rig = Rig::start(&nats, &registry, &policies);
    for tenant in &rig.tenants {
        let m = rig.decide(tenant, &body(tenant, "b1", "block_valid", ""));
        let e = assert_error(&m, "validator_blocked", "502");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("by_valid") && message.contains("pii"),
            "{e}"
        );
        let m = rig.decide(tenant, &body(tenant, "b2", "block_status", ""));
        let e = assert_error(&m, "validator_blocked", "502");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("too long"),
            "{e}"
        );

        let m = rig.decide(tenant, &body(tenant, "w", "warn", ""));
        let v = assert_decided(&m);
        assert_eq!(executed(&v), [row("by_valid", "validator", "failed")]);
        let m = rig.decide(tenant, &body(tenant, "i", "ignore", ""));
        let v = assert_decided(&m);
        assert_eq!(executed(&v), [row("by_status", "validator", "failed")]);
        let m = rig.decide(tenant, &body(tenant, "m", "mixed", ""));
        let v = assert_decided(&m);
        assert_eq!(
            executed(&v),
            [
                row("passes", "validator", "ok"),
                row("by_valid", "validator", "failed"),
                row("by_status", "validator", "failed"),
            ]
        );
    }
    let n = rig.tenants.len();
    assert_eq!(by_valid.count(), 3 * n);
    assert_eq!(by_status.count(), 3 * n);
    assert_eq!(passes.count(), n);
}

/// A post-processor's metadata joins the decision's; it is called with the payload and
/// metadata the pre-processors left (after the provider is chosen).
#[test]
fn post_processor_adds_decision_metadata() {
    let _serial = serial();
    let nats = NatsServer::start();
    let _pre = Responder::fixed(
        &nats,
        "tagger",
        json!({"payload": {"text": "tagged"}, "metadata": {"tag": "t1"}}),
    );
    let post = Responder::fixed(
        &nats,
        "scorer",
        json!({"metadata": {"score": {"toxicity": 0.1}, "post_done": true}}),
    );
    let registry = [
        ("tagger", extension("tagger", "pre", 1_000, 0, json!({}))),
        (
            "scorer",
            extension("scorer", "post", 1_000, 0, json!({"mask": true})),
        ),
    ];
    let stages = r#","pre":[{"id":"tagger","mode":"required"}],
        "post":[{"id":"scorer","mode":"required"}]"#;
    let rig = Rig::start(&nats, &registry, &[("scored", &policy(stages))]);
    for (i, tenant) in rig.tenants.iter().enumerate() {
        let m = rig.decide(tenant, &body(tenant, "s", "scored", ""));
        let v = assert_decided(&m);
        let meta = &v["decision"]["metadata"];
        assert_eq!(meta["score"], json!({"toxicity": 0.1}), "{v}");
        assert_eq!(meta["post_done"], true, "{v}");
        assert_eq!(meta["tag"], "t1", "{v}");
        assert_eq!(
            executed(&v),
            [row("tagger", "pre", "ok"), row("scorer", "post", "ok")]
        );
        let call = &post.seen()[i].body;
        assert_eq!(call["payload"], json!({"text": "tagged"}), "{call}");
        assert_eq!(
            call["metadata"],
            json!({"user_id": "u-7", "tag": "t1"}),
            "{call}"
        );
        assert_eq!(call["config"], json!({"mask": true}), "{call}");
    }
}

/// A responder slower than `timeout_ms`: a required stage answers `extension_timeout`
/// (504) after its attempts (`retry: 1` → two calls), an optional one is listed as
/// `timeout` and the decision goes through; neither waits much past its budget.
#[test]
fn slow_extension_times_out() {
    let _serial = serial();
    let nats = NatsServer::start();
    let slow = |id| {
        Responder::start(
            &nats,
            id,
            Arc::new(|_: &Value| (Duration::from_millis(1_500), json!({"metadata": {}}))),
        )
    };
    let (slow_req, slow_opt) = (slow("slow_req"), slow("slow_opt"));
    let registry = [
        ("slow_req", extension("slow_req", "pre", 200, 1, json!({}))),
        (
            "slow_opt",
            extension("slow_opt", "pre", 5_000, 3, json!({})),
        ),
    ];
    let required = policy(r#","pre":[{"id":"slow_req","mode":"required"}]"#);
    let optional =
        policy(r#","pre":[{"id":"slow_opt","mode":"optional","timeout_ms":150,"retry":0}]"#);
    let rig = Rig::start(&nats, &registry, &[("req", &required), ("opt", &optional)]);
    for (i, tenant) in rig.tenants.iter().enumerate() {
        let started = Instant::now();
        let m = rig.decide(tenant, &body(tenant, "t1", "req", ""));
        let took = started.elapsed();
        let e = assert_error(&m, "extension_timeout", "504");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("slow_req"),
            "{e}"
        );
        let budget = Duration::from_millis(200 * 2);
        assert!(took >= budget, "answered after {took:?}, before the budget");
        assert!(took < budget + TIMEOUT_MARGIN, "answered after {took:?}");
        assert_eq!(slow_req.count(), 2 * (i + 1), "one call and one retry");

        let started = Instant::now();
        let m = rig.decide(tenant, &body(tenant, "t2", "opt", ""));
        let took = started.elapsed();
        let v = assert_decided(&m);
        assert_eq!(executed(&v), [row("slow_opt", "pre", "timeout")]);
        let budget = Duration::from_millis(150);
        assert!(took >= budget && took < budget + TIMEOUT_MARGIN, "{took:?}");
        assert_eq!(slow_opt.count(), i + 1, "the stage's retry: 0 wins");
    }
}

/// No responder on the subject: required → `extension_unavailable` (502), optional →
/// `skipped`. A stage naming an id the registry lacks: required → `extension_not_found`
/// (502), optional → `skipped`.
#[test]
fn missing_responder_and_unknown_extension() {
    let _serial = serial();
    let nats = NatsServer::start();
    let registry = [("absent", extension("absent", "pre", 1_000, 0, json!({})))];
    let policies = [
        (
            "absent_req",
            policy(r#","pre":[{"id":"absent","mode":"required"}]"#),
        ),
        (
            "absent_opt",
            policy(r#","pre":[{"id":"absent","mode":"optional"}]"#),
        ),
        (
            "ghost_req",
            policy(r#","post":[{"id":"ghost","mode":"required"}]"#),
        ),
        (
            "ghost_opt",
            policy(r#","validators":[{"id":"ghost","on_fail":"warn"}]"#),
        ),
    ];
    let policies: Vec<(&str, &str)> = policies.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let rig = Rig::start(&nats, &registry, &policies);
    for tenant in &rig.tenants {
        let started = Instant::now();
        let m = rig.decide(tenant, &body(tenant, "a1", "absent_req", ""));
        let e = assert_error(&m, "extension_unavailable", "502");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("absent"),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "no responders is known at once, not after the timeout: {:?}",
            started.elapsed()
        );
        let m = rig.decide(tenant, &body(tenant, "a2", "absent_opt", ""));
        let v = assert_decided(&m);
        assert_eq!(executed(&v), [row("absent", "pre", "skipped")]);

        let m = rig.decide(tenant, &body(tenant, "g1", "ghost_req", ""));
        let e = assert_error(&m, "extension_not_found", "502");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("ghost"),
            "{e}"
        );
        let m = rig.decide(tenant, &body(tenant, "g2", "ghost_opt", ""));
        let v = assert_decided(&m);
        assert_eq!(executed(&v), [row("ghost", "validator", "skipped")]);
    }
}

/// Five failed calls open an extension's breaker on the shard that made them (each
/// tenant's requests go to its owner's subject here): later requests fail with
/// `extension_unavailable` without reaching the responder, and every shard's
/// `get_extension_health` (over NATS admin) reports the breaker open with its counters.
#[test]
fn breaker_opens_after_failures() {
    let _serial = serial();
    let nats = NatsServer::start();
    let broken = Responder::fixed(&nats, "broken", json!({"error": "backend down"}));
    let registry = [("broken", extension("broken", "pre", 1_000, 0, json!({})))];
    let stages = r#","pre":[{"id":"broken","mode":"required"}]"#;
    let rig = Rig::start(&nats, &registry, &[("b", &policy(stages))]);
    const FAILURES: usize = 5; // EXTENSION_BREAKER.failure_threshold
    const REFUSED: usize = 3;
    for tenant in &rig.tenants {
        let codes: Vec<String> = (0..FAILURES + REFUSED)
            .map(|i| {
                let m = rig.decide_on_owner(tenant, &body(tenant, &format!("f{i}"), "b", ""));
                let v = json_of(&m.data);
                v["error"]["code"].as_str().unwrap_or("ok").to_owned()
            })
            .collect();
        let mut want = vec!["pre_processor_failed"; FAILURES];
        want.extend(["extension_unavailable"; REFUSED]);
        assert_eq!(codes, want, "{tenant}");
    }
    assert_eq!(
        broken.count(),
        FAILURES * rig.tenants.len(),
        "open: no call"
    );

    // Each shard owns one tenant here, so every shard's breaker is open.
    let shards = rig.server().shard_count();
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let h = rig.admin("get_extension_health", json!({}));
        assert_eq!(h["ok"], true, "{h}");
        let e = &h["extensions"][0];
        assert_eq!(e["id"], "broken", "{h}");
        assert_eq!(e["breaker"], "open", "{h}");
        assert_eq!(e["subject"], subject("broken"), "{h}");
        let c = &e["counters"];
        let counts = [&c["ok"], &c["failed"], &c["circuit_open"]];
        let counts = counts.map(|n| n.as_u64().unwrap() as usize);
        assert_eq!(counts, [0, FAILURES, REFUSED], "{h}");
        answered.insert(h["shard"].as_u64().unwrap());
        if answered.len() == shards {
            break;
        }
    }
    assert_eq!(answered.len(), shards, "shards that answered: {answered:?}");
}

/// `get_pipeline_complexity` lists a policy's stages with their resolved subject, timeout,
/// retry and budget, and warns about a stage the registry lacks; `dry_run_pipeline`
/// decides without calling any extension.
#[test]
fn admin_complexity_and_dry_run() {
    let _serial = serial();
    let nats = NatsServer::start();
    let pre = Responder::fixed(&nats, "norm", json!({"metadata": {"n": 1}}));
    let post = Responder::fixed(&nats, "mask", json!({"metadata": {"m": 1}}));
    let registry = [
        ("norm", extension("norm", "pre", 100, 1, json!({}))),
        ("mask", extension("mask", "post", 150, 0, json!({}))),
    ];
    let full = policy(
        r#","pre":[{"id":"norm","mode":"required"}],
            "validators":[{"id":"ghost","on_fail":"warn"}],
            "post":[{"id":"mask","mode":"optional","timeout_ms":300,"retry":2}]"#,
    );
    let optional = policy(
        r#","pre":[{"id":"norm","mode":"optional"}],"post":[{"id":"mask","mode":"optional"}]"#,
    );
    let rig = Rig::start(&nats, &registry, &[("full", &full), ("opt", &optional)]);
    for tenant in &rig.tenants {
        let args = json!({"tenant_id": tenant, "policy_id": "full"});
        let c = rig.admin("get_pipeline_complexity", args);
        assert_eq!(c["ok"], true, "{c}");
        assert_eq!(c["tenant"], tenant.as_str(), "{c}");
        assert_eq!(
            c["stages"],
            json!({"pre": 1, "validators": 1, "post": 1, "total": 3})
        );
        assert_eq!(c["latency_budget_ms"], 100 * 2 + 300 * 3, "{c}");
        let rows = c["extensions"].as_array().unwrap();
        let norm = &rows[0];
        assert_eq!(
            (
                &norm["id"],
                &norm["subject"],
                &norm["retry"],
                &norm["budget_ms"]
            ),
            (
                &json!("norm"),
                &json!(subject("norm")),
                &json!(1),
                &json!(200)
            ),
            "{c}"
        );
        assert_eq!(rows[1]["subject"], Value::Null, "{c}");
        assert_eq!(rows[2]["timeout_ms"], 300, "{c}");
        let warnings = c["warnings"].to_string();
        assert!(warnings.contains("ghost"), "{c}");

        let request = json!({"request_id": "dry", "tenant_id": tenant, "policy_id": "opt",
                             "task": {"type": "chat", "payload": {"text": "x"}}});
        let d = rig.admin("dry_run_pipeline", json!({"request": request}));
        assert_eq!(d["ok"], true, "{d}");
        assert_eq!(d["decision"]["ok"], true, "{d}");
        assert_eq!(
            executed(&d["decision"]),
            [
                row("norm", "pre", "skipped"),
                row("mask", "post", "skipped")
            ]
        );
        assert_eq!(d["pipeline"]["stages"]["total"], 2, "{d}");

        let mut request = request;
        request["policy_id"] = json!("full");
        let d = rig.admin("dry_run_pipeline", json!({"request": request}));
        // A required stage cannot run in a dry run: the error, with the pipeline beside it.
        assert_eq!(d["ok"], false, "{d}");
        assert_eq!(
            d["decision"]["error"]["code"], "extension_unavailable",
            "{d}"
        );
        assert!(d["pipeline"]["stages"]["total"].as_u64() > Some(0), "{d}");
    }
    // Give a stray call time to arrive before checking that none was made.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        (pre.count(), post.count()),
        (0, 0),
        "a dry run calls nothing"
    );
    // The same pipeline, decided for real, does call them.
    let tenant = &rig.tenants[0];
    let v = assert_decided(&rig.decide(tenant, &body(tenant, "real", "opt", "")));
    assert_eq!(
        executed(&v),
        [row("norm", "pre", "ok"), row("mask", "post", "ok")]
    );
    assert_eq!((pre.count(), post.count()), (1, 1));
}

/// Over HTTP the owner shard still calls the extensions over NATS: the pipeline's results
/// and errors are those of the NATS transport, with the same HTTP statuses.
#[test]
fn pipeline_over_http() {
    let _serial = serial();
    let nats = NatsServer::start();
    let pre = Responder::fixed(
        &nats,
        "rewrite",
        json!({"payload": {"text": "new"}, "metadata": {"lang": "de"}}),
    );
    let check = Responder::start(
        &nats,
        "check",
        Arc::new(|call: &Value| {
            let bad = call["metadata"]["user_id"] == "bad";
            (Duration::ZERO, json!({"valid": !bad, "reason": "bad user"}))
        }),
    );
    let post = Responder::fixed(&nats, "annotate", json!({"metadata": {"annotated": true}}));
    let registry = [
        ("rewrite", extension("rewrite", "pre", 1_000, 0, json!({}))),
        (
            "check",
            extension("check", "validator", 1_000, 0, json!({})),
        ),
        (
            "annotate",
            extension("annotate", "post", 1_000, 0, json!({})),
        ),
    ];
    let stages = r#","pre":[{"id":"rewrite","mode":"required"}],
        "validators":[{"id":"check","on_fail":"block"}],
        "post":[{"id":"annotate","mode":"required"}]"#;
    let rig = Rig::start(&nats, &registry, &[("full", &policy(stages))]);
    let addr = rig.server().local_addr();
    for tenant in &rig.tenants {
        let mut client = Client::connect(addr);
        let r = client.request(
            "POST",
            "/v1/decide",
            &[],
            body(tenant, "h1", "full", "").as_bytes(),
        );
        let v = r.json();
        assert_eq!(r.status, 200, "{v}");
        let meta = &v["decision"]["metadata"];
        assert_eq!(
            (&meta["lang"], &meta["annotated"]),
            (&json!("de"), &json!(true)),
            "{v}"
        );
        assert_eq!(
            executed(&v),
            [
                row("rewrite", "pre", "ok"),
                row("check", "validator", "ok"),
                row("annotate", "post", "ok"),
            ]
        );
        let bad = body(tenant, "h2", "full", "").replace("u-7", "bad");
        let r = client.request("POST", "/v1/decide", &[], bad.as_bytes());
        let v = r.json();
        assert_eq!(
            (r.status, &v["error"]["code"]),
            (502, &json!("validator_blocked")),
            "{v}"
        );
    }
    let n = rig.tenants.len();
    assert_eq!(
        (pre.count(), check.count(), post.count()),
        (2 * n, 2 * n, n)
    );
    // Per extension and outcome, beside the shards' own `shardline_extension_calls_total`.
    let metrics = Client::connect(addr).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body);
    let series = r#"shardline_extension_outcomes_total{extension="rewrite",outcome="ok"} "#;
    let line = text.lines().find(|l| l.starts_with(series));
    assert_eq!(line, Some(format!("{series}{}", 2 * n).as_str()), "{text}");
}
