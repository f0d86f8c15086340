//! The router's NATS side in operation, driven by the official `nats` client: the admin
//! API over NATS with the same tokens and answers as HTTP, circuits opened and closed by
//! ExecResults, mutual TLS to nats-server, a nats-server restart under traffic, and the
//! service API (`$SRV.PING|INFO|STATS`) by which tools and other nodes find the router.

#![allow(deprecated)] // the sync `nats` crate is deprecated upstream; it is the reference here

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardline::server::{Server, ServerSettings};
use support::nats::{NatsOptions, NatsServer, TlsFiles};
use support::*;

/// Longest wait for a reply or a state change; a test fails, never hangs, past it.
const WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);
const ADMIN: &str = "beamline.router.v1.admin";
const DECIDE: &str = "beamline.router.v1.decide";
const RESULTS: &str = "caf.exec.result.v1";

/// A running router on its own config dir; stopped (and the stop checked) when dropped.
struct Router {
    server: Option<Server>,
    dir: TempDir,
}

impl Router {
    /// A router whose config has `toml` (its `[nats]` section) and the given policies,
    /// with the watcher held off (only the admin API changes the table) when `watch` is
    /// false.
    fn start(toml: &str, policies: &[(&str, &str, &str)], watch: bool) -> Router {
        let dir = config_dir("serve-nats-ops", toml);
        for (tenant, id, doc) in policies {
            write_policy(&dir, tenant, id, doc);
        }
        let mut s: ServerSettings = settings(&dir);
        if !watch {
            s.watch_interval = Duration::from_secs(3600);
        }
        Router {
            server: Some(start(s)),
            dir,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    fn wait_ready(&self) {
        wait_until("the router is ready", WAIT, || {
            self.server().shared().is_ready()
        });
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        self.server().shared().render_metrics(&mut text);
        text
    }

    /// Stops the router from another thread, failing when that takes longer than `WAIT`.
    fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(server.stop().map_err(|e| format!("{e:#}"))));
        let stopped = rx.recv_timeout(WAIT * 2).expect("the router stops in time");
        stopped.expect("the router stops cleanly");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(POLL);
    }
}

fn nats_toml(url: &str, extra: &str) -> String {
    format!("[nats]\nurl = \"{url}\"\n{extra}\n")
}

/// An official client that fails at once instead of retrying in the background.
fn official(url: &str) -> ::nats::Connection {
    ::nats::Options::new()
        .max_reconnects(1)
        .reconnect_delay_callback(|_| Duration::ZERO)
        .connect(url)
        .expect("the official client connects")
}

fn header(m: &::nats::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).cloned()
}

fn body(m: &::nats::Message) -> Value {
    serde_json::from_slice(&m.data)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&m.data)))
}

/// One admin call: `(status header, JSON body)`. The token goes in an `authorization`
/// header when `header_token`, else in the body's `token` member.
fn admin_with(
    nc: &::nats::Connection,
    op: &str,
    token: Option<&str>,
    header_token: bool,
    mut args: Value,
) -> (String, Value) {
    let mut headers = ::nats::HeaderMap::new();
    match token {
        Some(t) if header_token => {
            headers.insert("authorization", format!("Bearer {t}"));
        }
        Some(t) => {
            args["token"] = Value::from(t);
        }
        None => {}
    }
    let subject = format!("{ADMIN}.{op}");
    let payload = args.to_string();
    let m = nc
        .request_with_headers_or_timeout(&subject, Some(&headers), Some(WAIT), payload)
        .unwrap_or_else(|e| panic!("{op}: no reply: {e}"));
    let status = header(&m, "status").unwrap_or_else(|| panic!("{op}: no status header"));
    let v: Value = serde_json::from_slice(&m.data).unwrap_or(Value::Null);
    let v = if v.is_null() {
        Value::String(String::from_utf8_lossy(&m.data).into_owned())
    } else {
        v
    };
    (status, v)
}

fn admin(nc: &::nats::Connection, op: &str, token: Option<&str>, args: Value) -> (String, Value) {
    admin_with(nc, op, token, true, args)
}

/// Decides over NATS for `tenant`/`policy`: `(status header, JSON body)`.
fn decide(nc: &::nats::Connection, tenant: &str, policy: &str, rid: &str) -> (String, Value) {
    let req = json!({"request_id": rid, "tenant_id": tenant, "policy_id": policy,
        "task": {"type": "chat", "payload_ref": "p"}, "metadata": {"user_id": rid}});
    let m = nc
        .request_timeout(DECIDE, req.to_string(), WAIT)
        .unwrap_or_else(|e| panic!("decide {rid}: no reply: {e}"));
    (header(&m, "status").expect("status header"), body(&m))
}

fn provider_of(reply: &(String, Value)) -> String {
    assert_eq!(reply.0, "200", "{}", reply.1);
    reply.1["decision"]["provider_id"]
        .as_str()
        .expect("provider_id")
        .to_owned()
}

fn code_of(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

// ---------------------------------------------------------------------------------------
// 1: the admin API over NATS

const ONLY_MISTRAL: &str = r#"{"version":"2.0","providers":[{"name":"mistral","weight":100}]}"#;

/// Put, get, list, a refused invalid put, delete and reload over NATS: each answer has the
/// HTTP status in its `status` header and the HTTP admin API's body, and every change is
/// what the next decision over NATS sees.
#[test]
fn admin_policies_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let router = Router::start(&nats_toml(&nats.url(), ""), &[], false);
    router.wait_ready();
    let nc = official(&nats.url());
    let tok = Some(ADMIN_TOKEN);

    let (status, list) = admin(&nc, "list_policies", tok, json!({}));
    assert_eq!(status, "200", "{list}");
    let rows: Vec<(String, String)> = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|r| (r["tenant"].to_string(), r["policy_id"].to_string()))
        .collect();
    assert_eq!(rows.len(), 4, "acme ×2, globex, initech: {list}");
    let (status, acme) = admin(&nc, "list_policies", tok, json!({"tenant_id": "acme"}));
    assert_eq!(status, "200", "{acme}");
    assert_eq!(acme["policies"].as_array().unwrap().len(), 2, "{acme}");

    let gold = json!({"tenant_id": "acme", "policy_id": "gold"});
    let (status, missing) = admin(&nc, "get_policy", tok, gold.clone());
    assert_eq!(
        (status.as_str(), code_of(&missing)),
        ("404", "policy_not_found")
    );
    let (status, missing) = decide(&nc, "acme", "gold", "g-0");
    assert_eq!(
        (status.as_str(), code_of(&missing)),
        ("404", "policy_not_found")
    );

    let mut put = gold.clone();
    put["policy"] = serde_json::from_str(ONLY_MISTRAL).unwrap();
    let (status, written) = admin(&nc, "put_policy", tok, put.clone());
    assert_eq!(status, "201", "{written}");
    assert_eq!(
        (&written["ok"], &written["tenant"], &written["policy_id"]),
        (&json!(true), &json!("acme"), &json!("gold"))
    );
    // The same document sent as a string holding it (a forwarded file) is a replacement.
    let mut as_text = gold.clone();
    as_text["policy"] = json!(ONLY_MISTRAL);
    let (status, again) = admin(&nc, "put_policy", tok, as_text);
    assert_eq!(status, "200", "a replacement is 200: {again}");
    for i in 0..10 {
        assert_eq!(
            provider_of(&decide(&nc, "acme", "gold", &format!("g-{i}"))),
            "mistral"
        );
    }
    let (status, got) = admin(&nc, "get_policy", tok, gold.clone());
    assert_eq!(status, "200", "{got}");
    assert_eq!(got["providers"][0]["name"], "mistral", "{got}");

    let mut invalid = gold.clone();
    invalid["policy"] = json!({"version": "1.0", "providers": [{"name": "cohere", "wieght": 1}]});
    let (status, refused) = admin(&nc, "put_policy", tok, invalid);
    assert_eq!(
        (status.as_str(), code_of(&refused)),
        ("400", "invalid_request")
    );
    let problems = refused["error"]["details"]["problems"].to_string();
    assert!(problems.contains("$.providers[0].wieght"), "{refused}");
    assert_eq!(
        provider_of(&decide(&nc, "acme", "gold", "g-after-invalid")),
        "mistral",
        "the old policy stays"
    );

    let (status, deleted) = admin(&nc, "delete_policy", tok, gold.clone());
    assert_eq!(status, "200", "{deleted}");
    let (status, gone) = decide(&nc, "acme", "gold", "g-deleted");
    assert_eq!(
        (status.as_str(), code_of(&gone)),
        ("404", "policy_not_found")
    );
    let (status, twice) = admin(&nc, "delete_policy", tok, gold);
    assert_eq!(
        (status.as_str(), code_of(&twice)),
        ("404", "policy_not_found")
    );

    // A file written behind the router's back is served after a reload, not before.
    write_policy(&router.dir, "acme", "silver", ONLY_MISTRAL);
    let (status, _) = decide(&nc, "acme", "silver", "s-0");
    assert_eq!(status, "404", "not reloaded yet");
    let (status, reloaded) = admin(&nc, "reload", tok, json!({}));
    assert_eq!(status, "200", "{reloaded}");
    assert_eq!(
        (&reloaded["changed"], &reloaded["policies"]),
        (&json!(true), &json!(5))
    );
    assert_eq!(
        provider_of(&decide(&nc, "acme", "silver", "s-1")),
        "mistral"
    );
    let (status, same) = admin(&nc, "reload", tok, json!({}));
    assert_eq!((status.as_str(), &same["changed"]), ("200", &json!(false)));
}

/// A rate-limited (burst 1), sticky policy.
const LIMITED: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":50},{"name":"anthropic","weight":50}],
    "sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"},
    "rate_limit":{"enabled":true,"requests_per_second":1,"burst":1}}"#;

/// A dry run over NATS explains a decision and touches no state (no rate-limit token, no
/// sticky session); circuit states list every (policy, provider) of the tenant.
#[test]
fn admin_dry_run_and_circuits_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let policies = [("acme", "limited", LIMITED)];
    let router = Router::start(&nats_toml(&nats.url(), ""), &policies, false);
    router.wait_ready();
    let nc = official(&nats.url());
    let tok = Some(ADMIN_TOKEN);

    let request = json!({"request_id": "d-1", "tenant_id": "acme", "policy_id": "limited",
        "task": {"type": "chat", "payload_ref": "p"}, "metadata": {"user_id": "u-1"}});
    for round in 0..3 {
        let (status, dry) = admin(&nc, "dry_run", tok, json!({"request": request}));
        assert_eq!(status, "200", "round {round}: {dry}");
        assert_eq!(dry["ok"], true);
        assert_eq!(dry["decision"]["reason"], "weighted", "no session written");
        assert_eq!(dry["decision"]["policy_id"], "limited");
        let steps = dry["decision"]["explanation"]
            .as_array()
            .expect("explanation");
        assert!(!steps.is_empty(), "{dry}");
    }
    let real = nc
        .request_timeout(DECIDE, request.to_string(), WAIT)
        .expect("a reply");
    assert_eq!(
        header(&real, "status").as_deref(),
        Some("200"),
        "dry runs took no token"
    );
    assert_eq!(
        body(&real)["decision"]["reason"],
        "weighted",
        "dry runs wrote no session"
    );
    let (status, limited) = admin(&nc, "dry_run", tok, json!({"request": request}));
    assert_eq!(
        (status.as_str(), code_of(&limited)),
        ("429", "rate_limited"),
        "a dry run sees the real bucket"
    );
    let (status, bad) = admin(&nc, "dry_run", tok, json!({"request": {}}));
    assert_eq!((status.as_str(), code_of(&bad)), ("400", "invalid_request"));

    let (status, circuits) = admin(
        &nc,
        "get_circuit_breaker_states",
        tok,
        json!({"tenant_id": "acme"}),
    );
    assert_eq!(status, "200", "{circuits}");
    assert_eq!(circuits["tenant"], "acme");
    let rows = circuits["circuits"].as_array().expect("circuits");
    assert_eq!(
        rows.len(),
        4 + 3 + 2,
        "default 4, premium 3, limited 2: {circuits}"
    );
    assert!(rows.iter().all(|r| r["state"] == "closed"), "{circuits}");
}

/// The same tokens as HTTP: none or a wrong one is 401 `unauthorized`, the acme-scoped
/// token on another tenant is 403 `forbidden` (also in the body's `token` member), and an
/// unknown operation or a body that is not a JSON object is a clear error.
#[test]
fn admin_over_nats_checks_tokens_and_operations() {
    let _serial = serial();
    let nats = NatsServer::start();
    let router = Router::start(&nats_toml(&nats.url(), ""), &[], false);
    router.wait_ready();
    let nc = official(&nats.url());
    let globex = json!({"tenant_id": "globex", "policy_id": "default"});
    let acme = json!({"tenant_id": "acme", "policy_id": "default"});
    let dry = json!({"request": {"request_id": "x", "tenant_id": "globex",
        "task": {"type": "chat", "payload_ref": "p"}}});

    for token in [None, Some("not-a-token-0123456789")] {
        for (op, args) in [
            ("list_policies", json!({})),
            ("get_policy", acme.clone()),
            ("reload", json!({})),
            ("get_circuit_breaker_states", acme.clone()),
        ] {
            let (status, v) = admin(&nc, op, token, args);
            assert_eq!(
                (status.as_str(), code_of(&v)),
                ("401", "unauthorized"),
                "{op}: {v}"
            );
        }
    }
    for header_token in [true, false] {
        let ok = admin_with(
            &nc,
            "get_policy",
            Some(ACME_TOKEN),
            header_token,
            acme.clone(),
        );
        assert_eq!(ok.0, "200", "own tenant: {}", ok.1);
        for (op, args) in [
            ("get_policy", globex.clone()),
            ("list_policies", json!({"tenant_id": "globex"})),
            ("delete_policy", globex.clone()),
            ("get_circuit_breaker_states", globex.clone()),
            ("dry_run", dry.clone()),
            ("reload", json!({})),
        ] {
            let (status, v) = admin_with(&nc, op, Some(ACME_TOKEN), header_token, args);
            assert_eq!(
                (status.as_str(), code_of(&v)),
                ("403", "forbidden"),
                "{op}: {v}"
            );
        }
    }
    let (status, listed) = admin(&nc, "list_policies", Some(ACME_TOKEN), json!({}));
    assert_eq!(status, "200");
    let tenants: Vec<&Value> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["tenant"])
        .collect();
    assert_eq!(tenants, [&json!("acme"), &json!("acme")], "only its tenant");
    assert!(
        router.dir.0.join("policies/globex/default.json").exists(),
        "a forbidden delete deleted nothing"
    );

    let (status, unknown) = admin(&nc, "drop_everything", Some(ADMIN_TOKEN), json!({}));
    assert_eq!(
        (status.as_str(), code_of(&unknown)),
        ("404", "invalid_request")
    );
    let message = unknown["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("drop_everything"),
        "names the operation: {unknown}"
    );
    for (op, args, member) in [
        ("get_policy", json!({}), "tenant_id"),
        ("get_policy", json!({"tenant_id": "acme"}), "policy_id"),
        (
            "delete_policy",
            json!({"tenant_id": 5, "policy_id": "default"}),
            "tenant_id",
        ),
        ("get_circuit_breaker_states", json!({}), "tenant_id"),
        // An id is one path segment: this must not become a get_policy.
        (
            "list_policies",
            json!({"tenant_id": "acme/default"}),
            "tenant_id",
        ),
        (
            "put_policy",
            json!({"tenant_id": "acme", "policy_id": "../x"}),
            "policy_id",
        ),
    ] {
        let (status, v) = admin(&nc, op, Some(ADMIN_TOKEN), args.clone());
        assert_eq!(
            (status.as_str(), code_of(&v)),
            ("400", "invalid_request"),
            "{op} {args}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(member), "{op} {args}: names {member}: {v}");
    }
    let m = nc
        .request_timeout(&format!("{ADMIN}.list_policies"), "[1,2]", WAIT)
        .expect("a reply");
    assert_eq!(header(&m, "status").as_deref(), Some("400"));
    assert_eq!(code_of(&body(&m)), "invalid_request");
}

// ---------------------------------------------------------------------------------------
// 2: circuits fed by ExecResults over NATS

/// Opens after 3 consecutive failures, half-opens 1 s later with 2 probes, closes after 2
/// successes; the error rate never opens it by itself.
const BREAKER: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":50},{"name":"anthropic","weight":50}],
    "circuit_breaker":{"enabled":true,"failure_threshold":3,"success_threshold":2,
      "timeout_ms":1000,"half_open_max_calls":2,"error_rate_threshold":1.0,
      "error_rate_window_seconds":60,"error_rate_min_calls":1000}}"#;
const BREAKER_TIMEOUT: Duration = Duration::from_millis(1000);

fn result(nc: &::nats::Connection, rid: &str, status: &str) -> (String, Value) {
    let r = json!({"assignment_id": format!("as-{rid}"), "request_id": rid,
        "status": status, "provider_id": "openai", "latency_ms": 300, "cost": 0.01,
        "tenant_id": "cb", "timestamp": 1_700_000_000_000u64});
    let m = nc
        .request_timeout(RESULTS, r.to_string(), WAIT)
        .unwrap_or_else(|e| panic!("result {rid}: no reply: {e}"));
    (header(&m, "status").expect("status header"), body(&m))
}

fn openai_state(nc: &::nats::Connection) -> String {
    let args = json!({"tenant_id": "cb"});
    let (status, v) = admin(nc, "get_circuit_breaker_states", Some(ADMIN_TOKEN), args);
    assert_eq!(status, "200", "{v}");
    let rows = v["circuits"].as_array().expect("circuits");
    let row = rows
        .iter()
        .find(|r| r["provider"] == "openai")
        .unwrap_or_else(|| panic!("no openai row: {v}"));
    assert_eq!(row["enabled"], true, "{v}");
    row["state"].as_str().unwrap().to_owned()
}

/// Error results over `caf.exec.result.v1` open openai's circuit at the threshold, and
/// decisions avoid it; after `timeout_ms` it is half-open and admits a probe; success
/// results close it and openai is chosen again.
#[test]
fn results_open_half_open_and_close_a_circuit() {
    let _serial = serial();
    let nats = NatsServer::start();
    let router = Router::start(
        &nats_toml(&nats.url(), ""),
        &[("cb", "default", BREAKER)],
        true,
    );
    router.wait_ready();
    let nc = official(&nats.url());
    assert_eq!(openai_state(&nc), "closed");

    for i in 0..2 {
        let (status, v) = result(&nc, &format!("f{i}"), "error");
        assert_eq!(
            (status.as_str(), &v["duplicate"]),
            ("202", &json!(false)),
            "{v}"
        );
    }
    let (status, dup) = result(&nc, "f1", "error");
    assert_eq!(
        (status.as_str(), &dup["duplicate"]),
        ("200", &json!(true)),
        "{dup}"
    );
    assert_eq!(
        openai_state(&nc),
        "closed",
        "2 of 3 failures (a duplicate is not one)"
    );
    let (status, v) = result(&nc, "f2", "error");
    assert_eq!(status, "202", "{v}");
    let opened = Instant::now();
    assert_eq!(openai_state(&nc), "open");
    for i in 0..30 {
        let p = provider_of(&decide(&nc, "cb", "default", &format!("o{i}")));
        assert_eq!(p, "anthropic", "decision {i} chose an open circuit");
    }

    std::thread::sleep(BREAKER_TIMEOUT.saturating_sub(opened.elapsed()));
    wait_until("the circuit half-opens", WAIT, || {
        openai_state(&nc) == "half_open"
    });
    let probe =
        (0..100).find(|i| provider_of(&decide(&nc, "cb", "default", &format!("h{i}"))) == "openai");
    assert!(probe.is_some(), "a half-open circuit admits a probe");
    assert_eq!(openai_state(&nc), "half_open");

    let (status, v) = result(&nc, "s0", "success");
    assert_eq!(status, "202", "{v}");
    assert_eq!(openai_state(&nc), "half_open", "1 of 2 successes");
    let (status, v) = result(&nc, "s1", "success");
    assert_eq!(status, "202", "{v}");
    assert_eq!(openai_state(&nc), "closed");
    let chosen: Vec<String> = (0..40)
        .map(|i| provider_of(&decide(&nc, "cb", "default", &format!("c{i}"))))
        .collect();
    assert!(
        chosen.iter().any(|p| p == "openai"),
        "closed again: {chosen:?}"
    );
    let text = router.metrics();
    for to in ["open", "half_open", "closed"] {
        let series = format!("shardline_breaker_transitions_total{{shard=\"all\",to=\"{to}\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series}");
    }
}

// ---------------------------------------------------------------------------------------
// 3: mutual TLS to nats-server

fn tls_nats(dir: &TempDir) -> NatsServer {
    NatsServer::start_with(NatsOptions {
        tls: Some(TlsFiles::generate(&dir.0.join("pki"))),
        verify_clients: true,
        ..NatsOptions::default()
    })
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// With `[nats] tls_ca/tls_cert/tls_key`, the router connects to a nats-server that
/// verifies client certificates and decides for an official client holding a certificate.
#[test]
fn decides_over_nats_with_client_certificates() {
    let _serial = serial();
    let pki = TempDir::new("nats-ops-pki");
    let nats = tls_nats(&pki);
    let tls = nats.options().tls.clone().unwrap();
    let extra = format!(
        "tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let mut router = Router::start(&nats_toml(&nats.url(), &extra), &[], true);
    router.wait_ready();
    let nc = ::nats::Options::new()
        .max_reconnects(1)
        .add_root_certificate(&tls.ca)
        .client_cert(&tls.client_cert, &tls.client_key)
        .connect(nats.url().as_str())
        .expect("a certified official client connects");
    for i in 0..20 {
        let p = provider_of(&decide(&nc, "acme", "default", &format!("t{i}")));
        assert!(["openai", "anthropic", "mistral", "local_llm"].contains(&p.as_str()));
    }
    let text = router.metrics();
    for shard in 0..router.server().shard_count() {
        let series = format!("shardline_nats_connected{{shard=\"{shard}\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series}");
    }
    router.stop();
}

/// Without a client certificate the router is refused by nats-server: it never becomes
/// ready (`/readyz` 503), counts the refusals, keeps serving HTTP decisions and stops
/// cleanly.
#[test]
fn without_a_client_certificate_the_router_is_never_ready() {
    let _serial = serial();
    let pki = TempDir::new("nats-ops-pki");
    let nats = tls_nats(&pki);
    let tls = nats.options().tls.clone().unwrap();
    let extra = format!(
        "tls_ca = \"{}\"\nreconnect_backoff_max_ms = 100\n",
        tls.ca.display()
    );
    let mut router = Router::start(&nats_toml(&nats.url(), &extra), &[], true);
    let failures = |text: &str| {
        (0..router.server().shard_count())
            .map(|s| {
                let series = format!("shardline_nats_connect_failures_total{{shard=\"{s}\"}}");
                metric(text, &series).unwrap_or(0.0)
            })
            .fold(f64::INFINITY, f64::min)
    };
    wait_until("every shard counts refusals", WAIT, || {
        failures(&router.metrics()) >= 3.0
    });
    assert!(
        nats.log_shows("client didn't provide a certificate", WAIT),
        "{}",
        nats.log()
    );
    assert!(!router.server().shared().is_ready());
    let mut http = Client::connect(router.server().local_addr());
    let ready = http.request("GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        503,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let decided = http.request("POST", "/v1/decide", &[], &decide_body("acme", "h-1"));
    assert_eq!(decided.status, 200, "HTTP decisions do not need NATS");
    let text = router.metrics();
    let series = "shardline_nats_connected{shard=\"0\"}";
    assert_eq!(metric(&text, series), Some(0.0), "{series}");
    drop(http);
    router.stop();
}

// ---------------------------------------------------------------------------------------
// 4: nats-server restarted under traffic

/// Per decide request of the traffic thread: when it started (since the test's start),
/// how long it took, and whether it got a decision.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

/// Timeout of each request of the traffic thread.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// What a request may take past its timeout (scheduling on a loaded 2-core machine).
const TIMEOUT_SLACK: Duration = Duration::from_millis(500);
/// How long nats-server stays down.
const OUTAGE: Duration = Duration::from_secs(1);

fn traffic(url: String, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Sample>>>, t0: Instant) {
    let nc = ::nats::Options::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(20))
        .connect(url.as_str())
        .expect("the traffic client connects");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let req = decide_body("acme", &format!("r{i}"));
        let started = Instant::now();
        let reply = nc.request_timeout(DECIDE, &req, REQUEST_TIMEOUT);
        let took = started.elapsed();
        let ok = reply.is_ok_and(|m| header(&m, "status").as_deref() == Some("200"));
        out.lock().unwrap().push(Sample {
            at: started - t0,
            took,
            ok,
        });
        if !ok {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// nats-server stopped for a second under continuous decide traffic: meanwhile the router
/// is not ready (`/readyz` 503, `shardline_nats_connected` 0) and keeps deciding over
/// HTTP; once the server is back on the same port the router reconnects by itself,
/// decisions over NATS succeed again, no request outlives its timeout, and the router
/// stops cleanly.
#[test]
fn nats_restart_under_traffic() {
    let _serial = serial();
    let mut nats = NatsServer::start();
    let toml = nats_toml(&nats.url(), "reconnect_backoff_max_ms = 100\n");
    let mut router = Router::start(&toml, &[], true);
    router.wait_ready();
    let t0 = Instant::now();
    let (stop, samples) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let thread = {
        let (url, stop, samples) = (nats.url(), Arc::clone(&stop), Arc::clone(&samples));
        std::thread::spawn(move || traffic(url, stop, samples, t0))
    };
    let ok_count = |samples: &Arc<Mutex<Vec<Sample>>>, after: Duration| {
        let s = samples.lock().unwrap();
        s.iter().filter(|s| s.ok && s.at >= after).count()
    };
    wait_until("decisions before the outage", WAIT, || {
        ok_count(&samples, Duration::ZERO) >= 20
    });

    nats.stop();
    let down = Instant::now();
    let down_at = down - t0;
    wait_until("the router sees NATS down", WAIT, || {
        !router.server().shared().is_ready()
    });
    let mut http = Client::connect(router.server().local_addr());
    let ready = http.request("GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        503,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let scrape = http.request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    for shard in 0..router.server().shard_count() {
        let series = format!("shardline_nats_connected{{shard=\"{shard}\"}}");
        assert_eq!(metric(&text, &series), Some(0.0), "{series}");
    }
    let decided = http.request("POST", "/v1/decide", &[], &decide_body("acme", "during"));
    assert_eq!(decided.status, 200, "HTTP decides while NATS is down");
    let push = json!({"request_id": "push", "tenant_id": "acme", "push_assignment": true,
        "task": {"type": "chat", "payload_ref": "p"}})
    .to_string();
    let pushed = http.request("POST", "/v1/decide", &[], push.as_bytes());
    assert_eq!(
        pushed.status, 200,
        "an assignment waits for NATS, the answer does not"
    );
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));

    nats.restart();
    let up_at = t0.elapsed();
    wait_until("the router reconnects", WAIT, || {
        router.server().shared().is_ready()
    });
    let ready = http.request("GET", "/readyz", &[], b"");
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    wait_until("decisions over NATS after the restart", WAIT * 2, || {
        ok_count(&samples, up_at) >= 20
    });
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("the traffic thread");

    let samples = samples.lock().unwrap().clone();
    let slowest = samples.iter().max_by_key(|s| s.took).unwrap();
    assert!(
        slowest.took <= REQUEST_TIMEOUT + TIMEOUT_SLACK,
        "a request hung past its timeout: {slowest:?}"
    );
    // A request in flight when the server died may fail; none that ended before may.
    let failed_before: Vec<_> = samples
        .iter()
        .filter(|s| !s.ok && s.at + s.took < down_at)
        .collect();
    assert!(
        failed_before.is_empty(),
        "failures before the outage at {down_at:?}: {failed_before:?}"
    );
    let failed: Vec<_> = samples.iter().filter(|s| !s.ok).collect();
    eprintln!(
        "{} requests, {} failed: {failed:?}; down {down_at:?}, up {up_at:?}",
        samples.len(),
        failed.len()
    );
    let text = router.metrics();
    let reconnects = metric(&text, "shardline_nats_reconnects_total{shard=\"0\"}");
    assert!(
        reconnects.is_some_and(|n| n >= 1.0),
        "reconnects: {reconnects:?}"
    );
    drop(http);
    router.stop();
}

/// Results over NATS carry no token (NATS permissions govern the subject), but one for a
/// tenant without policies, or for a provider none of the tenant's policies names, is
/// ignored: answered 404 `policy_not_found` when it has a reply subject, dropped when it
/// has none, counted by reason either way, and no circuit moves.
#[test]
fn results_for_unknown_tenants_or_providers_are_ignored_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let router = Router::start(
        &nats_toml(&nats.url(), ""),
        &[("cb", "default", BREAKER)],
        true,
    );
    router.wait_ready();
    let nc = official(&nats.url());
    let ignored = |tenant: &str, provider: &str, n: u32| {
        json!({"assignment_id": format!("ig-{n}"), "request_id": format!("ig-{n}"),
            "status": "error", "provider_id": provider, "latency_ms": 300,
            "tenant_id": tenant, "timestamp": 1_700_000_000_000u64})
        .to_string()
    };
    for (n, (tenant, provider)) in [("nobody", "openai"), ("cb", "made-up-llm")]
        .into_iter()
        .enumerate()
    {
        let m = nc
            .request_timeout(RESULTS, ignored(tenant, provider, n as u32), WAIT)
            .expect("a reply");
        assert_eq!(header(&m, "status").as_deref(), Some("404"));
        let v = body(&m);
        assert_eq!(v["error"]["code"], "policy_not_found", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(provider) || n == 0);
    }
    for n in 10..13 {
        nc.publish(RESULTS, ignored("cb", "made-up-llm", n))
            .unwrap();
    }
    nc.flush().unwrap();
    let series = |r: &str| format!("shardline_results_ignored_total{{reason=\"{r}\"}}");
    wait_until("the ignored results are counted", WAIT, || {
        metric(&router.metrics(), &series("unknown_provider")) == Some(4.0)
    });
    let text = router.metrics();
    assert_eq!(metric(&text, &series("unknown_tenant")), Some(1.0));
    assert_eq!(openai_state(&nc), "closed");
}

/// While nats-server is down, `shardline_nats_reconnects_total` rises with each attempt
/// (the router trying is visible during the outage, not only once it succeeds), and
/// `shardline_nats_connected` stays 0.
#[test]
fn reconnect_attempts_are_counted_while_nats_is_down() {
    let _serial = serial();
    let mut nats = NatsServer::start();
    let toml = nats_toml(&nats.url(), "reconnect_backoff_max_ms = 100\n");
    let mut router = Router::start(&toml, &[], true);
    router.wait_ready();
    let series = "shardline_nats_reconnects_total{shard=\"0\"}";
    let before = metric(&router.metrics(), series).expect("the reconnects series");
    nats.stop();
    wait_until("attempts counted while NATS is down", WAIT, || {
        metric(&router.metrics(), series).is_some_and(|n| n >= before + 3.0)
    });
    let text = router.metrics();
    assert_eq!(
        metric(&text, "shardline_nats_connected{shard=\"0\"}"),
        Some(0.0),
        "still down"
    );
    router.stop();
}

// ---------------------------------------------------------------------------------------
// Budgets over NATS

/// Two requests per user a day; p1 declared at 0.5 a call.
const BUDGETED: &str = r#"{"version":"1.0",
"providers":[{"name":"openai","weight":100,"cost":0.5}],
"budgets":[{"scope":"metadata.user_id","window":"1d","max_requests":2,"max_tokens":1000}]}"#;

/// A user's third decision over NATS is refused `budget_exceeded` (429, with the
/// budget's details); a result over `caf.exec.result.v1` settles its decision's tokens,
/// and `get_budgets` shows the same numbers as `GET /admin/v1/budgets/{tenant}`.
#[test]
fn budgets_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let policies = [("cb", "budgeted", BUDGETED)];
    let router = Router::start(&nats_toml(&nats.url(), ""), &policies, false);
    router.wait_ready();
    let nc = official(&nats.url());
    let decide_as = |rid: &str| {
        let req = json!({"request_id": rid, "tenant_id": "cb", "policy_id": "budgeted",
            "task": {"type": "chat", "payload_ref": "p"}, "metadata": {"user_id": "u-7"}});
        let m = nc
            .request_timeout(DECIDE, req.to_string(), WAIT)
            .unwrap_or_else(|e| panic!("decide {rid}: no reply: {e}"));
        (header(&m, "status").expect("status header"), body(&m))
    };
    assert_eq!(decide_as("b-1").0, "200");
    assert_eq!(decide_as("b-2").0, "200");
    let (status, refused) = decide_as("b-3");
    assert_eq!(
        (status.as_str(), code_of(&refused)),
        ("429", "budget_exceeded"),
        "{refused}"
    );
    let details = &refused["error"]["details"];
    assert_eq!(details["scope"], "metadata.user_id", "{refused}");
    assert_eq!(details["value"], "u-7", "{refused}");
    assert_eq!(details["measure"], "requests", "{refused}");
    assert!(details["retry_after_ms"].as_u64().is_some(), "{refused}");

    let r = json!({"assignment_id": "as-b-1", "request_id": "b-1", "status": "success",
        "provider_id": "openai", "latency_ms": 300, "cost": 0.25, "tenant_id": "cb",
        "usage": {"input_tokens": 300, "output_tokens": 100}});
    let m = nc
        .request_timeout(RESULTS, r.to_string(), WAIT)
        .expect("a reply to the result");
    assert_eq!(header(&m, "status").as_deref(), Some("202"), "{}", body(&m));

    let (status, view) = admin(
        &nc,
        "get_budgets",
        Some(ADMIN_TOKEN),
        json!({"tenant_id": "cb"}),
    );
    assert_eq!(status, "200", "{view}");
    let rows = view["budgets"].as_array().expect("budgets");
    assert_eq!(rows.len(), 1, "one user counted: {view}");
    let row = &rows[0];
    assert_eq!(row["value"], "u-7", "{view}");
    assert_eq!(
        row["spent"],
        json!({"requests": 2, "cost": 0.75, "tokens": 400}),
        "{view}"
    );
    assert_eq!(row["reserved"]["requests"], 1, "{view}");
    assert_eq!(row["remaining"]["max_tokens"], 600, "{view}");
    let (status, _) = admin(
        &nc,
        "get_budgets",
        Some(ACME_TOKEN),
        json!({"tenant_id": "cb"}),
    );
    assert_eq!(status, "403", "the acme token does not see cb's budgets");
}

// ---------------------------------------------------------------------------------------
// 7: the NATS service API ($SRV.PING, $SRV.INFO, $SRV.STATS)

/// Replies to `subject` arrive within this of each other; a second answer from the same
/// router (one per shard) would come within microseconds.
const QUIET: Duration = Duration::from_millis(300);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every reply to one request: the first within `first` (none is fine), then each next one
/// within `QUIET` of the last. The server's "no responders" notice is not a reply.
fn replies_within(nc: &::nats::Connection, subject: &str, first: Duration) -> Vec<::nats::Message> {
    let sub = nc.request_multi(subject, "").expect("request sent");
    let mut out = Vec::new();
    let mut wait = first;
    while let Ok(m) = sub.next_timeout(wait) {
        if !m.is_no_responders() {
            out.push(m);
        }
        wait = QUIET;
    }
    out
}

/// The JSON bodies of every reply to `subject`.
fn service_answers(nc: &::nats::Connection, subject: &str) -> Vec<Value> {
    replies_within(nc, subject, WAIT).iter().map(body).collect()
}

/// The one answer of a single router to `subject`.
fn service_answer(nc: &::nats::Connection, subject: &str) -> Value {
    let answers = service_answers(nc, subject);
    assert_eq!(
        answers.len(),
        1,
        "{subject}: one router, one answer: {answers:?}"
    );
    answers.into_iter().next().unwrap()
}

/// The fields every answer has: type, name, version, metadata naming the node.
fn check_identity(answer: &Value, verb: &str, node_id: &str, shards: usize, cluster: bool) {
    let kind = format!("io.nats.micro.v1.{}_response", verb.to_ascii_lowercase());
    assert_eq!(answer["type"], kind.as_str(), "{answer}");
    assert_eq!(answer["name"], "shardline", "{answer}");
    assert_eq!(answer["version"], VERSION, "{answer}");
    let metadata = &answer["metadata"];
    assert_eq!(metadata["node_id"], node_id, "{answer}");
    assert_eq!(metadata["shards"], shards.to_string().as_str(), "{answer}");
    assert_eq!(
        metadata["cluster"],
        cluster.to_string().as_str(),
        "{answer}"
    );
    let id = answer["id"].as_str().expect("id");
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
}

/// `decide`'s entry in a STATS answer.
fn decide_stats(stats: &Value) -> Value {
    endpoint_stats(stats, "decide")
}

fn endpoint_stats(stats: &Value, name: &str) -> Value {
    stats["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} endpoint: {stats}"))
        .clone()
}

/// PING, INFO and STATS each answer once per router on all three subject forms, with the
/// same instance id; INFO lists what the router serves over NATS and STATS counts it.
#[test]
fn service_api_answers_once_on_every_subject_form() {
    let _serial = serial();
    let nats = NatsServer::start();
    let extra = "[cluster]\nnode_id = \"node-a.eu-1\"";
    let router = Router::start(&nats_toml(&nats.url(), extra), &[], false);
    router.wait_ready();
    let shards = router.server().shard_count();
    let nc = official(&nats.url());

    let ping = service_answer(&nc, "$SRV.PING");
    check_identity(&ping, "PING", "node-a.eu-1", shards, false);
    let id = ping["id"].as_str().unwrap().to_owned();
    for verb in ["PING", "INFO", "STATS"] {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.shardline"),
            format!("$SRV.{verb}.shardline.{id}"),
        ] {
            let answer = service_answer(&nc, &subject);
            check_identity(&answer, verb, "node-a.eu-1", shards, false);
            assert_eq!(answer["id"], id.as_str(), "{subject}: the id is stable");
        }
    }
    // Another service's or another instance's subject reaches no router.
    for subject in ["$SRV.PING.other", "$SRV.INFO.shardline.not-this-one"] {
        let none = replies_within(&nc, subject, QUIET);
        assert!(none.is_empty(), "{subject}: {} answers", none.len());
    }

    let info = service_answer(&nc, "$SRV.INFO.shardline");
    assert!(
        info["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{info}"
    );
    let listed: Vec<(String, String, String)> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("subject"), field("queue_group"))
        })
        .collect();
    let expected = [
        ("decide", DECIDE, "router-decide-group"),
        ("results", RESULTS, "router-result-group"),
        ("admin", "beamline.router.v1.admin.*", "router-admin-group"),
    ]
    .map(|(n, s, q)| (n.to_owned(), s.to_owned(), q.to_owned()));
    assert_eq!(listed, expected, "{info}");

    let stats = service_answer(&nc, "$SRV.STATS");
    let started = stats["started"].as_str().expect("started");
    // RFC 3339 in UTC, as the log writes it: 2026-01-02T03:04:05.678Z.
    assert_eq!(started.len(), 24, "{started}");
    assert!(
        started.ends_with('Z') && started.as_bytes()[10] == b'T',
        "{started}"
    );
    let names: Vec<&str> = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["decide", "results", "admin"], "{stats}");
    for endpoint in stats["endpoints"].as_array().unwrap() {
        for field in [
            "num_requests",
            "num_errors",
            "processing_time",
            "average_processing_time",
        ] {
            assert!(endpoint[field].is_u64(), "{field}: {endpoint}");
        }
        assert_eq!(endpoint["last_error"], "", "{endpoint}");
    }
}

/// STATS' `decide.num_requests` grows by exactly the decide messages sent over NATS (not
/// by HTTP decisions); one without a reply subject is also an error; the processing time
/// is the average times the count.
#[test]
fn service_stats_count_decisions_over_nats() {
    let _serial = serial();
    let nats = NatsServer::start();
    let router = Router::start(&nats_toml(&nats.url(), ""), &[], false);
    router.wait_ready();
    let nc = official(&nats.url());
    let id = service_answer(&nc, "$SRV.PING")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stats_subject = format!("$SRV.STATS.shardline.{id}");
    let before = decide_stats(&service_answer(&nc, &stats_subject));
    let count = |e: &Value, k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k}: {e}"));

    const SENT: u64 = 7;
    for i in 0..SENT {
        let reply = decide(&nc, "acme", "default", &format!("srv-{i}"));
        assert_eq!(reply.0, "200", "{}", reply.1);
    }
    let mut http = Client::connect(router.server().local_addr());
    let answer = http.request("POST", "/v1/decide", &[], &decide_body("acme", "srv-http"));
    assert_eq!(answer.status, 200);

    let after = decide_stats(&service_answer(&nc, &stats_subject));
    assert_eq!(
        count(&after, "num_requests"),
        count(&before, "num_requests") + SENT,
        "{before} → {after}"
    );
    assert_eq!(count(&after, "num_errors"), count(&before, "num_errors"));
    let (total, average) = (
        count(&after, "processing_time"),
        count(&after, "average_processing_time"),
    );
    assert!(average > 0, "{after}");
    assert_eq!(average, total / count(&after, "num_requests"), "{after}");

    // A decide message nobody can answer is a request and an error.
    nc.publish(DECIDE, decide_body("acme", "srv-no-reply"))
        .expect("published");
    let mut last = after.clone();
    wait_until("the unanswerable request is counted", WAIT, || {
        last = decide_stats(&service_answer(&nc, &stats_subject));
        count(&last, "num_errors") == count(&after, "num_errors") + 1
    });
    assert_eq!(
        count(&last, "num_requests"),
        count(&after, "num_requests") + 1,
        "{last}"
    );

    // An error answer is an error: a request for a policy acme does not have.
    let reply = decide(&nc, "acme", "gold", "srv-404");
    assert_eq!(reply.0, "404", "{}", reply.1);
    let stats = service_answer(&nc, &stats_subject);
    let now = decide_stats(&stats);
    assert_eq!(
        count(&now, "num_errors"),
        count(&last, "num_errors") + 1,
        "{now}"
    );

    // Results and admin calls over NATS are counted apart: two results (one asking for an
    // answer, one refused without a reply subject) and one admin call refused for its
    // token.
    let (results0, admin0) = (
        endpoint_stats(&stats, "results"),
        endpoint_stats(&stats, "admin"),
    );
    let r = json!({"assignment_id": "as-srv-1", "request_id": "srv-1", "status": "success",
        "provider_id": "openai", "latency_ms": 300, "cost": 0.01, "tenant_id": "acme"});
    let m = nc
        .request_timeout(RESULTS, r.to_string(), WAIT)
        .expect("a reply to the result");
    assert_eq!(header(&m, "status").as_deref(), Some("202"), "{}", body(&m));
    nc.publish(RESULTS, "not json").expect("published");
    let (status, _) = admin(&nc, "list_policies", Some("wrong-token"), json!({}));
    assert_eq!(status, "401");
    let mut stats = Value::Null;
    wait_until("the results and the admin call are counted", WAIT, || {
        stats = service_answer(&nc, &stats_subject);
        count(&endpoint_stats(&stats, "results"), "num_requests")
            == count(&results0, "num_requests") + 2
    });
    let (results, admin_stats) = (
        endpoint_stats(&stats, "results"),
        endpoint_stats(&stats, "admin"),
    );
    assert_eq!(
        count(&results, "num_errors"),
        count(&results0, "num_errors") + 1,
        "{results}"
    );
    assert!(count(&results, "processing_time") > count(&results0, "processing_time"));
    assert_eq!(
        count(&admin_stats, "num_requests"),
        count(&admin0, "num_requests") + 1
    );
    assert_eq!(
        count(&admin_stats, "num_errors"),
        count(&admin0, "num_errors") + 1
    );
}

/// Two routers on one NATS: `$SRV.PING` gets one answer from each, told apart by id and
/// node; each answers its own instance subject alone. The clustered one needs JetStream
/// (its policy bucket).
#[test]
fn two_routers_answer_discovery_apart() {
    let _serial = serial();
    let nats = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..NatsOptions::default()
    });
    let url = nats.url();
    let a = Router::start(
        &nats_toml(&url, "[cluster]\nnode_id = \"node-a\""),
        &[],
        false,
    );
    let b = Router::start(
        &nats_toml(&url, "[cluster]\nenabled = true\nnode_id = \"node-b\""),
        &[],
        false,
    );
    a.wait_ready();
    b.wait_ready();
    let nc = official(&url);

    let mut answers = service_answers(&nc, "$SRV.PING");
    answers.sort_by_key(|p| p["metadata"]["node_id"].as_str().unwrap_or("").to_owned());
    assert_eq!(answers.len(), 2, "one answer per router: {answers:?}");
    check_identity(
        &answers[0],
        "PING",
        "node-a",
        a.server().shard_count(),
        false,
    );
    check_identity(
        &answers[1],
        "PING",
        "node-b",
        b.server().shard_count(),
        true,
    );
    assert_ne!(answers[0]["id"], answers[1]["id"], "{answers:?}");

    for (answer, node) in answers.iter().zip(["node-a", "node-b"]) {
        let id = answer["id"].as_str().unwrap();
        let only = service_answer(&nc, &format!("$SRV.STATS.shardline.{id}"));
        assert_eq!(only["metadata"]["node_id"], node, "{only}");
    }
    assert_eq!(service_answers(&nc, "$SRV.INFO.shardline").len(), 2);
}

/// An answer the server's max_payload cannot carry is replaced by the service API's error
/// headers, not dropped: the requester learns why at once instead of timing out.
#[test]
fn service_answer_over_max_payload_is_an_error_in_the_protocol_style() {
    let _serial = serial();
    let nats = NatsServer::start_with(NatsOptions {
        max_payload: Some(512),
        ..NatsOptions::default()
    });
    let router = Router::start(&nats_toml(&nats.url(), ""), &[], false);
    router.wait_ready();
    let nc = official(&nats.url());
    let ping = service_answer(&nc, "$SRV.PING");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{ping}");

    let replies = replies_within(&nc, "$SRV.STATS", WAIT);
    assert_eq!(replies.len(), 1);
    let m = &replies[0];
    assert!(m.data.is_empty(), "{:?}", String::from_utf8_lossy(&m.data));
    assert_eq!(header(m, "Nats-Service-Error-Code").as_deref(), Some("500"));
    let error = header(m, "Nats-Service-Error").expect("an error text");
    assert!(error.contains("max_payload of 512"), "{error}");
}
