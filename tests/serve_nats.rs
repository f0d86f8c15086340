//! The router over NATS, driven by the official `nats` client (an independent
//! implementation): decisions on every shard, the error codes, replies' headers, results,
//! usage events, assignments and acknowledgements.

#![allow(deprecated)] // the sync `nats` crate is deprecated upstream; it is the reference here

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::nats::{start_connected, NatsServer};
use support::*;

const WAIT: Duration = Duration::from_secs(5);
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// A router on a fresh config dir whose `[nats]` points at `nats`, with `extra` TOML and
/// policies for `tenants`, and an official client connected to the same server.
pub struct Rig {
    pub server: Option<shardline::server::Server>,
    pub nc: ::nats::Connection,
    pub dir: TempDir,
}

pub fn rig(nats: &NatsServer, tenants: &[String], extra: &str) -> Rig {
    let toml = format!("[nats]\nurl = \"{}\"\n{extra}", nats.url());
    let dir = config_dir("serve-nats", &toml);
    for t in tenants {
        write_policy(&dir, t, "default", SIMPLE_POLICY);
    }
    let server = start_connected(settings(&dir));
    let nc = ::nats::Options::new()
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO)
        .connect(nats.url())
        .unwrap();
    Rig {
        server: Some(server),
        nc,
        dir,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().unwrap();
        }
    }
}

pub fn decide(nc: &::nats::Connection, tenant: Option<&str>, body: &[u8]) -> ::nats::Message {
    let headers = tenant.map(|t| {
        let mut h = ::nats::HeaderMap::new();
        h.insert("tenant_id", t.to_owned());
        h.insert("trace_id", TRACE.to_owned());
        h
    });
    nc.request_with_headers_or_timeout(
        "beamline.router.v1.decide",
        headers.as_ref(),
        Some(WAIT),
        body,
    )
    .expect("a reply")
}

pub fn header(m: &::nats::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).cloned()
}

pub fn json(m: &::nats::Message) -> Value {
    serde_json::from_slice(&m.data)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&m.data)))
}

/// Every shard answers over NATS (the queue group spreads messages, handoffs reach the
/// owners); replies carry the contract headers and the HTTP-equivalent status.
#[test]
fn decides_for_tenants_on_every_shard() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenants = tenants_covering(usable_cores());
    let rig = rig(&nats, &tenants, "");
    for tenant in &tenants {
        for i in 0..40 {
            let body = decide_body(tenant, &format!("r{i}"));
            let m = decide(&rig.nc, Some(tenant), &body);
            let v = json(&m);
            assert_eq!(
                v["decision"]["metadata"]["tenant_id"],
                tenant.as_str(),
                "{v}"
            );
            let provider = v["decision"]["provider_id"].as_str().unwrap();
            assert!(["openai", "anthropic"].contains(&provider), "{v}");
            assert_eq!(header(&m, "status").as_deref(), Some("200"));
            assert_eq!(header(&m, "tenant_id").as_deref(), Some(tenant.as_str()));
            assert_eq!(header(&m, "trace_id").as_deref(), Some(TRACE));
        }
    }
    let shared = rig.server.as_ref().unwrap().shared();
    let mut text = String::new();
    shared.render_metrics(&mut text);
    assert!(
        text.contains(&format!(
            "shardline_requests_total{{shard=\"all\",transport=\"nats\"}} {}",
            40 * tenants.len()
        )),
        "{}",
        text.lines()
            .filter(|l| l.contains("requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(text.contains("shardline_nats_connected{shard=\"0\"} 1"));
}

/// The same codes and bodies as HTTP: invalid JSON, a missing field, an unknown tenant,
/// and a rate limit, each with its status header.
#[test]
fn error_codes_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenants = ["limited".to_owned()];
    let rig = rig(&nats, &[], "");
    let limited = r#"{"version":"1.0","providers":[{"name":"a","weight":1}],
        "rate_limit":{"enabled":true,"requests_per_second":1,"burst":1}}"#;
    write_policy(&rig.dir, &tenants[0], "default", limited);
    std::thread::sleep(Duration::from_millis(300)); // the watcher reloads
    let cases: [(&[u8], Option<&str>, &str, &str); 3] = [
        (b"{not json", Some("x"), "invalid_request", "400"),
        (
            br#"{"request_id":"r","task":{"type":"chat"}}"#,
            None,
            "invalid_request",
            "400",
        ),
        (
            &decide_body("nobody", "r1"),
            Some("nobody"),
            "policy_not_found",
            "404",
        ),
    ];
    for (body, tenant, code, status) in cases {
        let m = decide(&rig.nc, tenant, body);
        let v = json(&m);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(header(&m, "status").as_deref(), Some(status));
    }
    let codes: Vec<String> = (0..5)
        .map(|i| {
            let m = decide(
                &rig.nc,
                Some("limited"),
                &decide_body("limited", &format!("q{i}")),
            );
            json(&m)["error"]["code"]
                .as_str()
                .unwrap_or("ok")
                .to_owned()
        })
        .collect();
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
}

/// A decide message without a reply subject is counted, not answered, and breaks nothing.
#[test]
fn message_without_reply_subject_is_counted() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenants = ["acme".to_owned()];
    let rig = rig(&nats, &tenants, "");
    rig.nc
        .publish("beamline.router.v1.decide", decide_body("acme", "lost"))
        .unwrap();
    rig.nc.flush().unwrap();
    let shared = rig.server.as_ref().unwrap().shared();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut text = String::new();
        shared.render_metrics(&mut text);
        if text.contains("shardline_nats_no_reply_total{shard=\"all\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = decide(&rig.nc, Some("acme"), &decide_body("acme", "after"));
    assert_eq!(json(&m)["ok"], true);
}

/// `push_assignment` publishes an ExecAssignment with its headers after the reply; a
/// result updates the owner and publishes a usage event; a duplicate is ignored; an ack
/// is counted.
#[test]
fn assignments_results_usage_and_acks() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenants = tenants_covering(usable_cores());
    let rig = rig(&nats, &tenants, "");
    let assignments = rig.nc.subscribe("caf.exec.assign.v1").unwrap();
    let usage = rig.nc.subscribe("beamline.usage.v1.metered").unwrap();
    rig.nc.flush().unwrap();
    for tenant in &tenants {
        let body = format!(
            r#"{{"request_id":"a-{tenant}","tenant_id":"{tenant}","trace_id":"{TRACE}","task":{{"type":"chat","payload":{{"q":1}}}},"push_assignment":true}}"#
        );
        let m = decide(&rig.nc, None, body.as_bytes());
        let decision = json(&m);
        let a = assignments.next_timeout(WAIT).expect("an assignment");
        let v = json(&a);
        assert_eq!(v["tenant_id"], tenant.as_str());
        assert_eq!(v["request_id"], format!("a-{tenant}"));
        assert_eq!(
            v["executor"]["provider_id"],
            decision["decision"]["provider_id"]
        );
        assert_eq!(v["job"]["payload"]["q"], 1);
        assert_eq!(header(&a, "tenant_id").as_deref(), Some(tenant.as_str()));
        assert_eq!(header(&a, "trace_id").as_deref(), Some(TRACE));
        assert_eq!(header(&a, "version").as_deref(), Some("1"));
        let result = format!(
            r#"{{"assignment_id":"{}","request_id":"a-{tenant}","status":"success","provider_id":"openai","latency_ms":120,"cost":0.01,"tenant_id":"{tenant}","timestamp":1700000000000}}"#,
            v["assignment_id"].as_str().unwrap()
        );
        let reply = rig
            .nc
            .request_timeout("caf.exec.result.v1", &result, WAIT)
            .unwrap();
        assert_eq!(json(&reply)["duplicate"], false, "{:?}", json(&reply));
        let event = usage.next_timeout(WAIT).expect("a usage event");
        let e = json(&event);
        assert_eq!(
            (e["tenant_id"].as_str(), e["provider_id"].as_str()),
            (Some(tenant.as_str()), Some("openai"))
        );
        let again = rig
            .nc
            .request_timeout("caf.exec.result.v1", &result, WAIT)
            .unwrap();
        assert_eq!(json(&again)["duplicate"], true);
        assert!(
            usage.next_timeout(Duration::from_millis(200)).is_err(),
            "no event for a duplicate"
        );
        let ack = format!(
            r#"{{"assignment_id":"{}","status":"accepted","tenant_id":"{tenant}"}}"#,
            v["assignment_id"].as_str().unwrap()
        );
        rig.nc.publish("caf.exec.assign.v1.ack", ack).unwrap();
    }
    rig.nc.flush().unwrap();
    let shared = rig.server.as_ref().unwrap().shared();
    let deadline = Instant::now() + WAIT;
    let want = format!(
        "shardline_assignment_acks_total{{shard=\"all\"}} {}",
        tenants.len()
    );
    loop {
        let mut text = String::new();
        shared.render_metrics(&mut text);
        if text.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acks not counted: {}",
            text.lines()
                .filter(|l| l.contains("ack"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Shard-aware clients send to `<decide>.shard.<owner>`; a message on another shard's
/// subject is answered too, by that shard, with no handoff.
#[test]
fn shard_subjects_reach_the_owner_and_misrouted_messages_still_answer() {
    let _serial = serial();
    let nats = NatsServer::start();
    let shards = usable_cores();
    let tenants = tenants_covering(shards);
    let rig = rig(&nats, &tenants, "");
    let partition = ::shards::Partitioner::new(shards);
    for tenant in &tenants {
        let owner = partition.shard_of(tenant).index();
        for shard in [owner, (owner + 1) % shards] {
            let subject = format!("beamline.router.v1.decide.shard.{shard}");
            let body = decide_body(tenant, &format!("s{shard}"));
            let m = rig
                .nc
                .request_timeout(&subject, body, WAIT)
                .expect("a reply");
            assert_eq!(header(&m, "status").as_deref(), Some("200"), "{subject}");
            assert_eq!(
                json(&m)["decision"]["metadata"]["tenant_id"],
                tenant.as_str()
            );
        }
    }
    let shared = rig.server.as_ref().unwrap().shared();
    let mut text = String::new();
    shared.render_metrics(&mut text);
    let handoffs = text
        .lines()
        .find(|l| l.starts_with("shardline_handoffs_total{shard=\"all\",direction=\"out\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    // Decisions are made where they land: even the misrouted ones do not cross.
    assert_eq!(handoffs, Some(0), "handoffs out");
}

/// The value of the exact series `series` in the router's metrics.
fn series(rig: &Rig, series: &str) -> u64 {
    let mut text = String::new();
    rig.server
        .as_ref()
        .unwrap()
        .shared()
        .render_metrics(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .unwrap()
}

/// Over NATS as over HTTP: two hundred decisions for a tenant sent to the subject of a
/// shard that does not own it are answered by that shard with no handoff, while a
/// request with an idempotency key crosses to the owner, whose first answer is replayed
/// on the owner's subject and on the other one alike.
#[test]
fn decisions_on_any_shard_subject_are_made_there() {
    const DECISIONS: usize = 200;
    let _serial = serial();
    let nats = NatsServer::start();
    let shards = usable_cores();
    let tenants = tenants_covering(shards);
    if shards < 2 {
        eprintln!("SKIPPED: one shard, nothing could cross");
        return;
    }
    let rig = rig(&nats, &tenants, "");
    let tenant = &tenants[1];
    let on = |shard: usize, body: Vec<u8>| {
        let subject = format!("beamline.router.v1.decide.shard.{shard}");
        rig.nc
            .request_timeout(&subject, body, WAIT)
            .expect("a reply")
    };
    for i in 0..DECISIONS {
        let m = on(0, decide_body(tenant, &format!("landing-{i}")));
        assert_eq!(
            header(&m, "status").as_deref(),
            Some("200"),
            "{:?}",
            json(&m)
        );
        assert_eq!(json(&m)["context"]["request_id"], format!("landing-{i}"));
    }
    let out = r#"shardline_handoffs_total{shard="all",direction="out"}"#;
    assert_eq!(series(&rig, out), 0, "a decision crossed");
    let decided = r#"shardline_decisions_total{shard="0",reason="weighted"}"#;
    assert_eq!(series(&rig, decided) as usize, DECISIONS);

    let keyed = |id: &str| {
        format!(
            r#"{{"request_id":"{id}","tenant_id":"{tenant}","idempotency_key":"nats-key","task":{{"type":"chat","payload_ref":"p"}}}}"#
        )
        .into_bytes()
    };
    let first = on(0, keyed("keyed-1"));
    assert_eq!(header(&first, "status").as_deref(), Some("200"));
    for (round, shard) in [1, 0, 1, 0].into_iter().enumerate() {
        let again = on(shard, keyed(&format!("keyed-retry-{round}")));
        assert_eq!(again.data, first.data, "round {round} on shard {shard}");
    }
    assert_eq!(
        series(&rig, out),
        3,
        "the keyed requests on the other shard's subject, and only they, crossed"
    );
    let hits = r#"shardline_idempotency_hits_total{shard="1"}"#;
    assert_eq!(
        series(&rig, hits),
        4,
        "every retry was replayed by the owner"
    );
}

/// Requests over NATS are decoded by the same code as over HTTP: `only` and `order`
/// steer the decision, and an empty `only` is refused with the same error.
#[test]
fn per_request_overrides_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenants = vec!["acme-nats".to_owned()];
    let rig = rig(&nats, &tenants, "");
    let body = |n: u32, constraints: &str| {
        format!(
            r#"{{"request_id":"o-{n}","task":{{"type":"chat","payload_ref":"p"}},
                "constraints":{constraints}}}"#
        )
    };
    for n in 0..10 {
        let only = body(n, r#"{"only":["anthropic"]}"#);
        let v = json(&decide(&rig.nc, Some("acme-nats"), only.as_bytes()));
        assert_eq!(v["decision"]["provider_id"], "anthropic", "{v}");
        let order = body(n, r#"{"order":["anthropic","openai"]}"#);
        let v = json(&decide(&rig.nc, Some("acme-nats"), order.as_bytes()));
        assert_eq!(v["decision"]["provider_id"], "anthropic", "{v}");
    }
    let empty = body(99, r#"{"only":[]}"#);
    let m = decide(&rig.nc, Some("acme-nats"), empty.as_bytes());
    let v = json(&m);
    assert_eq!(header(&m, "status").as_deref(), Some("400"));
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    assert_eq!(v["error"]["details"]["field"], "constraints.only", "{v}");
}

/// A `rate_limited` ExecResult on `caf.exec.result.v1` (decoded by the same code as
/// `POST /v1/results`) cools the provider down on every shard: decisions over NATS that
/// prefer it get the other provider for the policy's `cooldown_ms` (10 s by default).
#[test]
fn a_rate_limited_result_over_nats_cools_the_provider_down() {
    let _serial = serial();
    let nats = NatsServer::start();
    let tenant = "acme-nats";
    let rig = rig(&nats, &[tenant.to_owned()], "");
    let result = format!(
        r#"{{"assignment_id":"rl-1","status":"rate_limited","provider_id":"openai",
            "tenant_id":"{tenant}","usage":{{"input_tokens":10,"output_tokens":0}}}}"#
    );
    let reply = rig
        .nc
        .request_timeout("caf.exec.result.v1", &result, WAIT)
        .unwrap();
    assert_eq!(json(&reply)["duplicate"], false, "{:?}", json(&reply));
    let prefer_openai = |n: u32| {
        let body = format!(
            r#"{{"request_id":"c-{n}","task":{{"type":"chat","payload_ref":"p"}},
                "constraints":{{"order":["openai"]}},"explain":true}}"#
        );
        json(&decide(&rig.nc, Some(tenant), body.as_bytes()))["decision"].clone()
    };
    // The owner took the result; the other shards hear of it one ring hop later.
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    while prefer_openai(n)["provider_id"] == "openai" {
        assert!(Instant::now() < deadline, "openai never cooled down");
        n += 1;
    }
    for n in 100..130 {
        let d = prefer_openai(n);
        assert_eq!(d["provider_id"], "anthropic", "{d}");
        let steps = d["explanation"].as_array().unwrap();
        assert!(
            steps
                .iter()
                .any(|s| s == "candidate openai: not usable (CoolingDown)"),
            "{d}"
        );
    }
}

/// A decision with a shadow, asked to `push_assignment`, publishes the primary's
/// ExecAssignment and then the shadow's copy, marked `"shadow": true`, for the shadow
/// provider under its own id; the shadow's result over NATS is answered as a shadow's.
#[test]
fn a_shadow_assignment_follows_the_primary_over_nats() {
    const SHADOW_POLICY: &str = r#"{"version":"1.0",
        "providers":[{"name":"openai","weight":100},{"name":"new_model","weight":0}],
        "shadow":[{"provider":"new_model","ratio":1}]}"#;
    let _serial = serial();
    let nats = NatsServer::start();
    let tenant = "acme-shadow";
    let dir = config_dir("serve-nats", &format!("[nats]\nurl = \"{}\"\n", nats.url()));
    write_policy(&dir, tenant, "default", SHADOW_POLICY);
    let server = start_connected(settings(&dir));
    let nc = ::nats::connect(nats.url()).unwrap();
    let assignments = nc.subscribe("caf.exec.assign.v1").unwrap();
    nc.flush().unwrap();
    let body = format!(
        r#"{{"request_id":"s-1","tenant_id":"{tenant}","task":{{"type":"chat","payload_ref":"p"}},"push_assignment":true}}"#
    );
    let v = json(&decide(&nc, Some(tenant), body.as_bytes()));
    assert_eq!(v["decision"]["provider_id"], "openai", "{v}");
    assert_eq!(v["decision"]["shadow"]["provider_id"], "new_model", "{v}");
    let primary = json(
        &assignments
            .next_timeout(WAIT)
            .expect("the primary's assignment"),
    );
    let shadow = json(
        &assignments
            .next_timeout(WAIT)
            .expect("the shadow's assignment"),
    );
    assert_eq!(primary["executor"]["provider_id"], "openai", "{primary}");
    assert!(primary.get("shadow").is_none(), "{primary}");
    assert_eq!(shadow["executor"]["provider_id"], "new_model", "{shadow}");
    assert_eq!(shadow["shadow"], true, "{shadow}");
    assert_eq!(shadow["request_id"], "s-1");
    assert_ne!(shadow["assignment_id"], primary["assignment_id"]);
    assert_eq!(shadow["job"], primary["job"]);

    let result = format!(
        r#"{{"assignment_id":{},"status":"error","provider_id":"new_model",
            "tenant_id":"{tenant}","shadow":true}}"#,
        shadow["assignment_id"]
    );
    let reply = nc
        .request_timeout("caf.exec.result.v1", &result, WAIT)
        .unwrap();
    let reply = json(&reply);
    assert_eq!(reply["shadow"], true, "{reply}");
    assert_eq!(reply["policies_updated"], 0, "{reply}");
    server.stop().unwrap();
}
