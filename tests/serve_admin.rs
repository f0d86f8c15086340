//! The admin API, reloads and HTTPS of a running router, black-box: a real server on
//! 127.0.0.1:0 with a private copy of the example policies, driven over raw HTTP/1.1 (and
//! rustls for HTTPS). Decisions are asked on every shard's connection, so a change made
//! through one shard is seen by the others and by the tenant's owner.

mod support;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use shardline::server::{ServerSettings, TlsSettings};
use support::*;

/// How long a reload by the watcher (50 ms interval in tests) may take to be served.
const RELOAD_WITHIN: Duration = Duration::from_secs(2);
/// Connections tried to find one accepted by each shard (the kernel picks the shard).
const CONNECT_ATTEMPTS_MAX: usize = 200;

/// One provider only, so every decision names it.
const ONLY_MISTRAL: &str = r#"{"version":"1.0","providers":[{"name":"mistral","weight":100}]}"#;
const ONLY_COHERE: &str = r#"{"version":"2.0","providers":[{"name":"cohere","weight":100}]}"#;
/// Same byte length as `ONLY_COHERE`, another provider.
const ONLY_OPENAI: &str = r#"{"version":"2.0","providers":[{"name":"openai","weight":100}]}"#;

// ---------------------------------------------------------------------------------------
// Helpers

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// One admin call; `token` `None` sends no `Authorization` header.
fn admin(
    client: &mut Client,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    client.request(method, path, &headers, body)
}

/// A decide body for (tenant, policy), with a `user_id` for sticky policies.
fn decide_for(tenant: &str, policy: &str, request_id: &str, user: &str) -> Vec<u8> {
    format!(
        r#"{{"request_id":"{request_id}","tenant_id":"{tenant}","policy_id":"{policy}",
            "task":{{"type":"chat","payload_ref":"p"}},"metadata":{{"user_id":"{user}"}}}}"#
    )
    .into_bytes()
}

fn decide(client: &mut Client, tenant: &str, policy: &str, request_id: &str) -> Response {
    let body = decide_for(tenant, policy, request_id, "u-0");
    client.request("POST", "/v1/decide", &[], &body)
}

fn text(resp: &Response) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

fn error_code(resp: &Response) -> String {
    resp.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn provider(resp: &Response) -> String {
    assert_eq!(resp.status, 200, "{}", text(resp));
    resp.json()["decision"]["provider_id"]
        .as_str()
        .expect("a provider_id")
        .to_owned()
}

/// Keep-alive connections, one accepted by each shard (as `/v1/shards` tells).
fn clients_on_every_shard(addr: SocketAddr, shards: usize) -> Vec<Client> {
    let mut found: Vec<Option<Client>> = (0..shards).map(|_| None).collect();
    for _ in 0..CONNECT_ATTEMPTS_MAX {
        let mut client = Client::connect(addr);
        let resp = client.request("GET", "/v1/shards", &[], b"");
        assert_eq!(resp.status, 200, "{}", text(&resp));
        let shard = resp.json()["this_shard"].as_u64().expect("this_shard") as usize;
        if found[shard].is_none() {
            found[shard] = Some(client);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("no connection reached every one of {shards} shards in {CONNECT_ATTEMPTS_MAX} tries");
}

/// Polls `done` every 20 ms until it holds, for at most `within`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn policy_file(dir: &TempDir, tenant: &str, id: &str) -> PathBuf {
    dir.0
        .join("policies")
        .join(tenant)
        .join(format!("{id}.json"))
}

/// Names starting with a dot (the store's temp and backup files) under `dir`.
fn dot_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            out.push(name);
        } else if entry.file_type().unwrap().is_dir() {
            out.extend(dot_files(&entry.path()));
        }
    }
    out
}

/// (tenant, policy_id) rows of a policy listing, in the order given.
fn listed(resp: &Response) -> Vec<(String, String)> {
    assert_eq!(resp.status, 200, "{}", text(resp));
    resp.json()["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|row| {
            let field = |k: &str| row[k].as_str().unwrap().to_owned();
            (field("tenant"), field("policy_id"))
        })
        .collect()
}

fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

/// `(policy_id, provider) → state` of `GET /admin/v1/circuits/{tenant}`.
fn circuits(client: &mut Client, tenant: &str) -> HashMap<(String, String), String> {
    let path = format!("/admin/v1/circuits/{tenant}");
    let resp = admin(client, Some(ADMIN_TOKEN), "GET", &path, b"");
    assert_eq!(resp.status, 200, "{}", text(&resp));
    let json = resp.json();
    assert_eq!(json["tenant"], tenant);
    json["circuits"]
        .as_array()
        .expect("circuits")
        .iter()
        .map(|row| {
            let field = |k: &str| row[k].as_str().unwrap().to_owned();
            ((field("policy_id"), field("provider")), field("state"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1-4: policies over the admin API

/// Put, get, replace and delete a policy over HTTP: each change is decided on by the
/// very next request on every shard, for tenants owned by every shard.
#[test]
fn admin_crud_is_served_at_once_on_every_shard() {
    let _serial = serial();
    let dir = config_dir("crud", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let c = &mut clients[0];

    let all = listed(&admin(
        c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies",
        b"",
    ));
    let bundled = rows(&[
        ("acme", "default"),
        ("acme", "premium"),
        ("globex", "default"),
        ("initech", "default"),
    ]);
    assert_eq!(all, bundled, "the all-tenants token lists every tenant");
    let acme = listed(&admin(
        c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies/acme",
        b"",
    ));
    assert_eq!(acme, bundled[..2]);
    let got = admin(
        c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies/acme/default",
        b"",
    );
    assert_eq!(got.status, 200, "{}", text(&got));
    let on_disk = std::fs::read(policy_file(&dir, "acme", "default")).unwrap();
    assert!(
        got.body == on_disk,
        "GET returns the stored file byte for byte"
    );
    let missing = admin(
        c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies/acme/gold",
        b"",
    );
    assert_eq!(
        (missing.status, error_code(&missing)),
        (404, "policy_not_found".into())
    );
    let post = admin(
        c,
        Some(ADMIN_TOKEN),
        "POST",
        "/admin/v1/policies/acme/gold",
        b"{}",
    );
    assert_eq!(post.status, 405, "{}", text(&post));
    assert_eq!(post.header("allow"), Some("GET, PUT, DELETE"));
    let unknown = admin(c, Some(ADMIN_TOKEN), "GET", "/admin/v1/tenants", b"");
    assert_eq!(unknown.status, 404, "{}", text(&unknown));

    let mut tenants = vec!["acme".to_owned()];
    tenants.extend(tenants_covering(server.shard_count()));
    let mut last_generation = 0;
    let other = 1 % clients.len();
    for tenant in &tenants {
        let path = format!("/admin/v1/policies/{tenant}/gold");
        let put = admin(
            &mut clients[0],
            Some(ADMIN_TOKEN),
            "PUT",
            &path,
            ONLY_MISTRAL.as_bytes(),
        );
        assert_eq!(put.status, 201, "{}", text(&put));
        let generation = put.json()["generation"].as_u64().unwrap();
        assert!(
            generation > last_generation,
            "every put publishes a new table"
        );
        last_generation = generation;
        for (i, client) in clients.iter_mut().enumerate() {
            let resp = decide(client, tenant, "gold", &format!("put-{i}"));
            assert_eq!(provider(&resp), "mistral", "{tenant} on shard {i}");
            assert_eq!(resp.json()["decision"]["policy_id"], "gold");
        }

        let put = admin(
            &mut clients[other],
            Some(ADMIN_TOKEN),
            "PUT",
            &path,
            ONLY_COHERE.as_bytes(),
        );
        assert_eq!(
            put.status,
            200,
            "a replaced policy is 200, not 201: {}",
            text(&put)
        );
        for (i, client) in clients.iter_mut().enumerate() {
            let resp = decide(client, tenant, "gold", &format!("replace-{i}"));
            assert_eq!(provider(&resp), "cohere", "{tenant} on shard {i}");
            assert_eq!(resp.json()["decision"]["policy_version"], "2.0");
        }

        let del = admin(&mut clients[0], Some(ADMIN_TOKEN), "DELETE", &path, b"");
        assert_eq!(del.status, 200, "{}", text(&del));
        for (i, client) in clients.iter_mut().enumerate() {
            let resp = decide(client, tenant, "gold", &format!("delete-{i}"));
            assert_eq!(resp.status, 404, "{tenant} on shard {i}: {}", text(&resp));
            assert_eq!(error_code(&resp), "policy_not_found");
        }
        let again = admin(&mut clients[0], Some(ADMIN_TOKEN), "DELETE", &path, b"");
        assert_eq!(
            (again.status, error_code(&again)),
            (404, "policy_not_found".into())
        );
        assert!(!policy_file(&dir, tenant, "gold").exists());
    }
    let c = &mut clients[0];
    let all = listed(&admin(
        c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies",
        b"",
    ));
    assert_eq!(all, bundled, "everything put was deleted again");
    assert_eq!(dot_files(&dir.0.join("policies")), Vec::<String>::new());
    drop(clients);
    server.stop().unwrap();
}

/// What the admin API writes is what the next process serves: a put and a delete
/// survive a restart on the same config directory. The watcher sees those writes too,
/// and its reload of the same policies publishes no new table.
#[test]
fn admin_changes_survive_a_restart() {
    let _serial = serial();
    let dir = config_dir("restart", "");
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    let put = admin(
        &mut c,
        Some(ADMIN_TOKEN),
        "PUT",
        "/admin/v1/policies/acme/gold",
        ONLY_MISTRAL.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    let del = admin(
        &mut c,
        Some(ADMIN_TOKEN),
        "DELETE",
        "/admin/v1/policies/acme/premium",
        b"",
    );
    assert_eq!(del.status, 200, "{}", text(&del));
    let generation = del.json()["generation"].clone();
    wait_until(
        "the watcher reloads after the admin's writes",
        RELOAD_WITHIN,
        || {
            let scrape = c.request("GET", "/metrics", &[], b"");
            sum_where(
                &scrape,
                "shardline_watch_reloads_total",
                &[("outcome", "ok")],
            ) >= 1.0
        },
    );
    let list = admin(&mut c, Some(ADMIN_TOKEN), "GET", "/admin/v1/policies", b"");
    assert_eq!(
        list.json()["generation"],
        generation,
        "that reload published nothing new"
    );
    drop(c);
    server.stop().unwrap();

    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-1")), "mistral");
    let got = admin(
        &mut c,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies/acme/gold",
        b"",
    );
    assert_eq!(got.status, 200, "{}", text(&got));
    assert_eq!(got.body, ONLY_MISTRAL.as_bytes());
    let gone = decide(&mut c, "acme", "premium", "r-2");
    assert_eq!(
        (gone.status, error_code(&gone)),
        (404, "policy_not_found".into())
    );
    drop(c);
    server.stop().unwrap();
}

/// A tenant-scoped token acts on its own tenant only: 403 for another tenant's
/// policies, circuits and dry-runs, and for a reload; no or a wrong token is 401 with a
/// `WWW-Authenticate: Bearer` challenge, on every route including the owner-shard ones.
#[test]
fn tenant_token_sees_only_its_tenant() {
    let _serial = serial();
    let dir = config_dir("scope", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let tok = Some(ACME_TOKEN);
    for c in clients.iter_mut() {
        let list = listed(&admin(c, tok, "GET", "/admin/v1/policies", b""));
        assert_eq!(list, rows(&[("acme", "default"), ("acme", "premium")]));
        let own = admin(c, tok, "GET", "/admin/v1/policies/acme/default", b"");
        assert_eq!(own.status, 200, "{}", text(&own));
        let circuits = admin(c, tok, "GET", "/admin/v1/circuits/acme", b"");
        assert_eq!(circuits.status, 200, "{}", text(&circuits));
        let dry = admin(
            c,
            tok,
            "POST",
            "/admin/v1/dry-run",
            &decide_body("acme", "d-1"),
        );
        assert_eq!(dry.status, 200, "{}", text(&dry));

        let foreign: [(&str, &str, &[u8]); 7] = [
            ("GET", "/admin/v1/policies/globex", b""),
            ("GET", "/admin/v1/policies/globex/default", b""),
            (
                "PUT",
                "/admin/v1/policies/globex/gold",
                ONLY_MISTRAL.as_bytes(),
            ),
            ("DELETE", "/admin/v1/policies/globex/default", b""),
            ("GET", "/admin/v1/circuits/globex", b""),
            ("GET", "/admin/v1/policies/nosuch/default", b""),
            ("POST", "/admin/v1/reload", b""),
        ];
        for (method, path, body) in foreign {
            let resp = admin(c, tok, method, path, body);
            assert_eq!(resp.status, 403, "{method} {path}: {}", text(&resp));
            assert_eq!(error_code(&resp), "forbidden", "{method} {path}");
        }
        let dry = admin(
            c,
            tok,
            "POST",
            "/admin/v1/dry-run",
            &decide_body("globex", "d-2"),
        );
        assert_eq!((dry.status, error_code(&dry)), (403, "forbidden".into()));

        for path in [
            "/admin/v1/policies",
            "/admin/v1/circuits/acme",
            "/admin/v1/reload",
        ] {
            let method = if path.ends_with("reload") {
                "POST"
            } else {
                "GET"
            };
            for token in [None, Some("wrong-token-0123456789")] {
                let resp = admin(c, token, method, path, b"");
                assert_eq!(resp.status, 401, "{path} {token:?}: {}", text(&resp));
                assert_eq!(error_code(&resp), "unauthorized");
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{path}");
            }
            let basic = [("Authorization", "Basic YWRtaW46YWRtaW4=")];
            assert_eq!(c.request(method, path, &basic, b"").status, 401, "{path}");
        }
    }
    let c = &mut clients[0];
    let put = admin(
        c,
        tok,
        "PUT",
        "/admin/v1/policies/acme/gold",
        ONLY_MISTRAL.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    assert_eq!(provider(&decide(c, "acme", "gold", "r-1")), "mistral");
    let del = admin(c, tok, "DELETE", "/admin/v1/policies/acme/gold", b"");
    assert_eq!(del.status, 200, "{}", text(&del));
    assert!(
        !policy_file(&dir, "globex", "gold").exists(),
        "the refused put wrote nothing"
    );
    assert!(
        policy_file(&dir, "globex", "default").exists(),
        "the refused delete kept it"
    );
    let globex = decide(c, "globex", "default", "r-2");
    assert_eq!(
        globex.status,
        200,
        "globex/default still served: {}",
        text(&globex)
    );
    drop(clients);
    server.stop().unwrap();
}

/// An invalid document (or a path-traversing id) is refused with its problems and their
/// JSON paths, and nothing changes: the file on disk and the policy served stay the old
/// ones.
#[test]
fn invalid_put_keeps_the_old_policy() {
    let _serial = serial();
    let dir = config_dir("invalid-put", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let before = std::fs::read(policy_file(&dir, "acme", "default")).unwrap();
    let invalid = br#"{"version":"1.0","providers":[{"name":"cohere","wieght":100}]}"#;
    let path = "/admin/v1/policies/acme/default";
    let resp = admin(&mut clients[0], Some(ADMIN_TOKEN), "PUT", path, invalid);
    assert_eq!(resp.status, 400, "{}", text(&resp));
    let json = resp.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["code"], "invalid_request");
    let problems: Vec<&str> = json["error"]["details"]["problems"]
        .as_array()
        .expect("details.problems")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("$.providers[0].wieght")),
        "the problem names the JSON path: {problems:?}"
    );
    let not_json = admin(
        &mut clients[0],
        Some(ADMIN_TOKEN),
        "PUT",
        path,
        b"{\"version\":",
    );
    assert_eq!(
        (not_json.status, error_code(&not_json)),
        (400, "invalid_request".into())
    );

    for bad in [
        "/admin/v1/policies/../gold",
        "/admin/v1/policies/acme/..",
        "/admin/v1/policies/acme/.gold",
    ] {
        let resp = admin(
            &mut clients[0],
            Some(ADMIN_TOKEN),
            "PUT",
            bad,
            ONLY_MISTRAL.as_bytes(),
        );
        assert_eq!(
            (resp.status, error_code(&resp)),
            (400, "invalid_request".into()),
            "{bad}"
        );
    }
    assert!(!dir.0.join("gold.json").exists() && !dir.0.join("policies/acme.json").exists());
    assert!(std::fs::read(policy_file(&dir, "acme", "default")).unwrap() == before);
    assert_eq!(dot_files(&dir.0.join("policies")), Vec::<String>::new());
    let old = ["openai", "anthropic", "mistral", "local_llm"];
    for (i, client) in clients.iter_mut().enumerate() {
        for n in 0..10 {
            let body = decide_for(
                "acme",
                "default",
                &format!("r-{i}-{n}"),
                &format!("u-{i}-{n}"),
            );
            let resp = client.request("POST", "/v1/decide", &[], &body);
            let p = provider(&resp);
            assert!(old.contains(&p.as_str()), "shard {i} chose {p}");
        }
    }
    drop(clients);
    server.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// 5-6: owner-shard state seen through the admin API

/// A rate-limited (burst 1), sticky policy.
const LIMITED: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":50},{"name":"anthropic","weight":50}],
    "sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"},
    "rate_limit":{"enabled":true,"requests_per_second":1,"burst":1}}"#;

/// A dry-run answers a DecideResponse with its explanation and changes no state: it
/// takes no rate-limit token and writes no sticky session, from any shard.
#[test]
fn dry_run_explains_and_changes_nothing() {
    let _serial = serial();
    let dir = config_dir("dry-run", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let path = "/admin/v1/policies/acme/limited";
    let put = admin(
        &mut clients[0],
        Some(ADMIN_TOKEN),
        "PUT",
        path,
        LIMITED.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));

    let body = decide_for("acme", "limited", "d-1", "u-new");
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let dry = admin(
                client,
                Some(ADMIN_TOKEN),
                "POST",
                "/admin/v1/dry-run",
                &body,
            );
            assert_eq!(dry.status, 200, "round {round} shard {i}: {}", text(&dry));
            let json = dry.json();
            assert_eq!(json["ok"], true);
            assert_eq!(
                json["decision"]["reason"], "weighted",
                "no session was written"
            );
            assert_eq!(json["decision"]["policy_id"], "limited");
            let steps = json["decision"]["explanation"]
                .as_array()
                .expect("explanation");
            assert!(!steps.is_empty(), "a dry-run explains its steps");
        }
    }
    let c = &mut clients[0];
    let real = c.request("POST", "/v1/decide", &[], &body);
    assert_eq!(real.status, 200, "dry-runs took no token: {}", text(&real));
    assert_eq!(
        real.json()["decision"]["reason"],
        "weighted",
        "dry-runs wrote no session"
    );
    assert!(
        real.json()["decision"].get("explanation").is_none(),
        "not asked for"
    );
    let limited = c.request("POST", "/v1/decide", &[], &body);
    assert_eq!(limited.status, 429, "burst 1: {}", text(&limited));
    assert_eq!(error_code(&limited), "rate_limited");
    let dry = admin(c, Some(ADMIN_TOKEN), "POST", "/admin/v1/dry-run", &body);
    assert_eq!(
        dry.status,
        429,
        "a dry-run sees the real bucket: {}",
        text(&dry)
    );
    let bad = admin(c, Some(ADMIN_TOKEN), "POST", "/admin/v1/dry-run", b"{}");
    assert_eq!(
        (bad.status, error_code(&bad)),
        (400, "invalid_request".into())
    );
    drop(clients);
    server.stop().unwrap();
}

fn failed_result(request_id: &str) -> Vec<u8> {
    format!(
        r#"{{"request_id":"{request_id}","tenant_id":"acme","provider_id":"openai",
            "status":"error","latency_ms":900,"error_code":"upstream_5xx"}}"#
    )
    .into_bytes()
}

/// Failing results posted to `/v1/results` open a policy's breaker exactly at its
/// `failure_threshold` (acme/premium: 3, acme/default: 5), duplicates do not count, the
/// admin API shows it from every shard, and decisions then avoid the open provider.
#[test]
fn circuits_show_breakers_opened_by_results() {
    let _serial = serial();
    let dir = config_dir("circuits", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let key = |policy: &str, provider: &str| (policy.to_owned(), provider.to_owned());
    let initial = circuits(&mut clients[0], "acme");
    assert_eq!(
        initial.len(),
        4 + 3,
        "acme/default has 4 providers, acme/premium 3"
    );
    assert!(initial.values().all(|s| s == "closed"), "{initial:?}");

    let n = clients.len();
    for i in 1..=4 {
        let resp = clients[i % n].request(
            "POST",
            "/v1/results",
            &[("Authorization", &bearer(ADMIN_TOKEN))],
            &failed_result(&format!("r-{i}")),
        );
        assert_eq!(resp.status, 202, "{}", text(&resp));
    }
    for i in 1..=4 {
        let resp = clients[(i + 1) % n].request(
            "POST",
            "/v1/results",
            &[("Authorization", &bearer(ADMIN_TOKEN))],
            &failed_result(&format!("r-{i}")),
        );
        assert_eq!(
            resp.status,
            200,
            "a repeated result is a duplicate: {}",
            text(&resp)
        );
        assert_eq!(resp.json()["duplicate"], true);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let states = circuits(client, "acme");
        assert_eq!(
            states[&key("premium", "openai")],
            "open",
            "shard {i}: threshold 3"
        );
        assert_eq!(
            states[&key("default", "openai")],
            "closed",
            "shard {i}: 4 of 5"
        );
    }
    let resp = clients[0].request(
        "POST",
        "/v1/results",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
        &failed_result("r-5"),
    );
    assert_eq!(resp.status, 202, "{}", text(&resp));
    for (i, client) in clients.iter_mut().enumerate() {
        let states = circuits(client, "acme");
        assert_eq!(
            states[&key("default", "openai")],
            "open",
            "shard {i}: threshold 5"
        );
        let open: Vec<_> = states.iter().filter(|(_, s)| *s != "closed").collect();
        assert_eq!(open.len(), 2, "only openai's breakers opened: {states:?}");
        let globex = circuits(client, "globex");
        assert!(
            globex.values().all(|s| s == "closed"),
            "another tenant's breakers"
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        for r in 0..10 {
            let body = decide_for(
                "acme",
                "default",
                &format!("d-{i}-{r}"),
                &format!("u-{i}-{r}"),
            );
            let chosen = provider(&client.request("POST", "/v1/decide", &[], &body));
            assert_ne!(chosen, "openai", "an open circuit is not chosen");
        }
    }
    drop(clients);
    server.stop().unwrap();
}

/// A table swap carries every shard's state over: after a put that shifts every acme
/// policy's slot (`acme/aaa` sorts first), an open breaker stays open, an empty bucket
/// stays empty and a sticky session still holds. The bucket (one token for the whole
/// node: its owner leases to the others) is spent, and the session answered twice on every
/// shard first (the first request of a shard with a cold lease is decided by the owner):
/// each shard decides with its own state.
#[test]
fn a_new_table_keeps_breakers_buckets_and_sessions() {
    let _serial = serial();
    let dir = config_dir("carry", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let tok = Some(ADMIN_TOKEN);
    let c = &mut clients[0];
    let put = admin(
        c,
        tok,
        "PUT",
        "/admin/v1/policies/acme/limited",
        LIMITED.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    for i in 1..=3 {
        let resp = c.request(
            "POST",
            "/v1/results",
            &[("Authorization", &bearer(ADMIN_TOKEN))],
            &failed_result(&format!("r-{i}")),
        );
        assert_eq!(resp.status, 202, "{}", text(&resp));
    }
    let limited = decide_for("acme", "limited", "l-1", "u-1");
    let sticky = decide_for("acme", "default", "s-1", "u-sticky");
    let first = provider(&c.request("POST", "/v1/decide", &[], &sticky));
    let mut admitted = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let resp = client.request("POST", "/v1/decide", &[], &limited);
        assert!(
            matches!(resp.status, 200 | 429),
            "shard {i}: {}",
            text(&resp)
        );
        admitted += usize::from(resp.status == 200);
        for _ in 0..2 {
            let resp = client.request("POST", "/v1/decide", &[], &sticky);
            assert_eq!(provider(&resp), first, "shard {i}");
        }
    }
    assert_eq!(admitted, 1, "one token in the whole node");
    let c = &mut clients[0];

    let put = admin(
        c,
        tok,
        "PUT",
        "/admin/v1/policies/acme/aaa",
        ONLY_MISTRAL.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    let list = listed(&admin(c, tok, "GET", "/admin/v1/policies/acme", b""));
    assert_eq!(
        list[0],
        ("acme".to_owned(), "aaa".to_owned()),
        "the test's premise"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let states = circuits(client, "acme");
        let premium = &states[&("premium".to_owned(), "openai".to_owned())];
        assert_eq!(
            premium, "open",
            "shard {i}: the breaker moved with its policy"
        );
        assert_eq!(states[&("aaa".to_owned(), "mistral".to_owned())], "closed");
        let resp = client.request("POST", "/v1/decide", &[], &limited);
        assert_eq!(
            resp.status,
            429,
            "shard {i}: the bucket moved too: {}",
            text(&resp)
        );
        let resp = client.request("POST", "/v1/decide", &[], &sticky);
        assert_eq!(provider(&resp), first, "shard {i}");
        assert_eq!(resp.json()["decision"]["reason"], "sticky", "shard {i}");
    }
    drop(clients);
    server.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// 7: reloads

/// Settings whose watcher never looks within a test, so only the call under test reloads.
fn settings_without_watcher(dir: &TempDir) -> ServerSettings {
    let mut s = settings(dir);
    s.watch_interval = Duration::from_secs(3600);
    s
}

/// A file written straight into the policies directory is served after
/// `POST /admin/v1/reload`, and not before (the watcher is held off).
#[test]
fn reload_endpoint_publishes_new_files() {
    let _serial = serial();
    let dir = config_dir("reload", "");
    let server = start(settings_without_watcher(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    write_policy(&dir, "acme", "gold", ONLY_MISTRAL);
    let before = decide(&mut clients[0], "acme", "gold", "r-0");
    assert_eq!(before.status, 404, "not reloaded yet: {}", text(&before));

    let tok = Some(ADMIN_TOKEN);
    let reload = admin(&mut clients[0], tok, "POST", "/admin/v1/reload", b"");
    assert_eq!(reload.status, 200, "{}", text(&reload));
    let json = reload.json();
    assert_eq!(
        (json["changed"].as_bool(), json["policies"].as_u64()),
        (Some(true), Some(5))
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let resp = decide(client, "acme", "gold", &format!("r-{i}"));
        assert_eq!(provider(&resp), "mistral", "shard {i}");
    }
    let again = admin(&mut clients[0], tok, "POST", "/admin/v1/reload", b"");
    assert_eq!(
        again.json()["changed"],
        false,
        "nothing new: {}",
        text(&again)
    );
    assert_eq!(again.json()["generation"], json["generation"]);
    drop(clients);
    server.stop().unwrap();
}

/// An invalid file dropped into the directory affects only its own (tenant, policy): a
/// reload publishes everything else and names the broken document, which keeps serving
/// its last good version; a put to another tenant proceeds while the broken file is on
/// disk. Removing the broken file removes the policy.
#[test]
fn reload_of_an_invalid_file_keeps_only_that_policy_old() {
    let _serial = serial();
    let dir = config_dir("reload-invalid", "");
    let server = start(settings_without_watcher(&dir));
    let mut c = Client::connect(server.local_addr());
    write_policy(&dir, "acme", "gold", ONLY_MISTRAL);
    write_policy(
        &dir,
        "initech",
        "default",
        r#"{"version":"1.0","providers":"none"}"#,
    );

    let reload = admin(&mut c, Some(ADMIN_TOKEN), "POST", "/admin/v1/reload", b"");
    assert_eq!(reload.status, 200, "{}", text(&reload));
    let json = reload.json();
    let invalid = json["invalid"]
        .as_array()
        .expect("invalid documents listed");
    assert_eq!(invalid.len(), 1, "{json}");
    assert_eq!(
        (
            &invalid[0]["tenant"],
            &invalid[0]["policy_id"],
            &invalid[0]["kept"]
        ),
        (&"initech".into(), &"default".into(), &true.into()),
        "{json}"
    );
    let problems = invalid[0]["problems"].to_string();
    assert!(
        problems.contains("initech/default.json"),
        "names the file: {problems}"
    );
    assert!(
        !problems.contains(&dir.0.display().to_string()),
        "no server paths: {problems}"
    );

    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-1")), "mistral");
    let initech = provider(&decide(&mut c, "initech", "default", "r-2"));
    assert!(
        ["mistral", "local_llm"].contains(&initech.as_str()),
        "initech's last good version keeps serving: {initech}"
    );

    let path = "/admin/v1/policies/acme/silver";
    let mine = admin(
        &mut c,
        Some(ACME_TOKEN),
        "PUT",
        path,
        ONLY_COHERE.as_bytes(),
    );
    assert_eq!(
        mine.status,
        201,
        "another tenant's broken file: {}",
        text(&mine)
    );
    assert_eq!(provider(&decide(&mut c, "acme", "silver", "r-3")), "cohere");

    std::fs::remove_file(policy_file(&dir, "initech", "default")).unwrap();
    let reload = admin(&mut c, Some(ADMIN_TOKEN), "POST", "/admin/v1/reload", b"");
    assert_eq!(reload.status, 200, "{}", text(&reload));
    assert_eq!(reload.json()["invalid"], serde_json::json!([]));
    let gone = decide(&mut c, "initech", "default", "r-4");
    assert_eq!(gone.status, 404, "{}", text(&gone));
    drop(c);
    server.stop().unwrap();
}

/// The `shardline_policy_invalid` series of one scrape, as (tenant, policy) → value.
fn invalid_series(client: &mut Client) -> HashMap<(String, String), f64> {
    let scrape = client.request("GET", "/metrics", &[], b"");
    assert_eq!(scrape.status, 200);
    samples(&scrape, "shardline_policy_invalid")
        .into_iter()
        .map(|(labels, v)| ((labels["tenant"].clone(), labels["policy"].clone()), v))
        .collect()
}

const BROKEN: &str = r#"{"version":"1.0","providers":[{"name":"cohere","wieght":100}]}"#;

/// A router that starts with one broken document serves every other tenant, reports the
/// broken one in `/readyz` (still ready) and in `shardline_policy_invalid`, and accepts
/// admin writes for other tenants while the broken file stays on disk.
#[test]
fn a_broken_document_at_start_affects_only_itself() {
    let _serial = serial();
    let dir = config_dir("start-broken", "");
    write_policy(&dir, "globex", "silver", BROKEN);
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());

    for (tenant, n) in [("acme", 1), ("globex", 2), ("initech", 3)] {
        let resp = decide(&mut c, tenant, "default", &format!("r-{n}"));
        assert_eq!(resp.status, 200, "{tenant}: {}", text(&resp));
    }
    let silver = decide(&mut c, "globex", "silver", "r-4");
    assert_eq!(
        silver.status,
        404,
        "never loaded, so absent: {}",
        text(&silver)
    );

    let ready = c.request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", text(&ready));
    let policies = &ready.json()["policies"];
    assert_eq!(policies["invalid_count"], 1, "{policies}");
    assert_eq!(policies["invalid"][0]["tenant"], "globex", "{policies}");
    assert_eq!(policies["invalid"][0]["policy_id"], "silver", "{policies}");
    assert_eq!(policies["invalid"][0]["kept"], false, "{policies}");
    let series = invalid_series(&mut c);
    assert_eq!(
        series,
        HashMap::from([(("globex".to_owned(), "silver".to_owned()), 1.0)])
    );

    let path = "/admin/v1/policies/acme/gold";
    let put = admin(
        &mut c,
        Some(ACME_TOKEN),
        "PUT",
        path,
        ONLY_MISTRAL.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-5")), "mistral");
    let refused = admin(&mut c, Some(ADMIN_TOKEN), "PUT", path, BROKEN.as_bytes());
    assert_eq!(refused.status, 400, "an invalid write is still refused");
    assert!(text(&refused).contains("wieght"), "{}", text(&refused));
    drop(c);
    server.stop().unwrap();
}

/// A good document replaced on disk by a broken one keeps serving the good version (the
/// watcher's reload is per document), and is reported until it is fixed.
#[test]
fn a_broken_replacement_keeps_the_good_version() {
    let _serial = serial();
    let dir = config_dir("broken-replace", "");
    write_policy(&dir, "acme", "gold", ONLY_COHERE);
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-0")), "cohere");

    write_policy(&dir, "acme", "gold", BROKEN);
    write_policy(&dir, "globex", "gold", ONLY_MISTRAL);
    wait_until("the broken file reported", RELOAD_WITHIN, || {
        !invalid_series(&mut c).is_empty()
    });
    let key = ("acme".to_owned(), "gold".to_owned());
    assert_eq!(invalid_series(&mut c), HashMap::from([(key, 1.0)]));
    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-1")), "cohere");
    assert_eq!(
        provider(&decide(&mut c, "globex", "gold", "r-2")),
        "mistral"
    );
    let ready = c.request("GET", "/readyz", &[], b"").json();
    assert_eq!(ready["policies"]["invalid"][0]["kept"], true, "{ready}");

    write_policy(&dir, "acme", "gold", ONLY_OPENAI);
    wait_until("the fixed file served", RELOAD_WITHIN, || {
        provider(&decide(&mut c, "acme", "gold", "r-3")) == "openai"
    });
    assert!(invalid_series(&mut c).is_empty());
    drop(c);
    server.stop().unwrap();
}

/// The watcher reloads a changed directory by itself: a new file, a replaced one, a
/// removed one and a new tenant directory are each served within `RELOAD_WITHIN` with no
/// call.
#[test]
fn watcher_serves_file_changes() {
    let _serial = serial();
    let dir = config_dir("watch", "");
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    let mut n = 0;
    let mut ask = |c: &mut Client| {
        n += 1;
        decide(c, "acme", "gold", &format!("r-{n}"))
    };
    write_policy(&dir, "acme", "gold", ONLY_MISTRAL);
    wait_until("a new file served", RELOAD_WITHIN, || {
        ask(&mut c).status == 200
    });
    assert_eq!(provider(&ask(&mut c)), "mistral");
    write_policy(&dir, "acme", "gold", ONLY_COHERE);
    wait_until("a rewritten file served", RELOAD_WITHIN, || {
        let resp = ask(&mut c);
        resp.status == 200 && provider(&resp) == "cohere"
    });
    std::fs::remove_file(policy_file(&dir, "acme", "gold")).unwrap();
    wait_until("a removed file unserved", RELOAD_WITHIN, || {
        ask(&mut c).status == 404
    });
    write_policy(&dir, "newco", "default", ONLY_MISTRAL);
    wait_until("a new tenant directory served", RELOAD_WITHIN, || {
        decide(&mut c, "newco", "default", "r-newco").status == 200
    });
    drop(c);
    server.stop().unwrap();
}

/// SIGHUP reloads. The file is rewritten in place with the same size and its mtime put
/// back, a change the watcher's fingerprint cannot see; so only the signal can make the
/// new content served, and the process must survive the signal.
#[test]
fn sighup_reloads_what_the_watcher_cannot_see() {
    let _serial = serial();
    let dir = config_dir("sighup", "");
    write_policy(&dir, "acme", "gold", ONLY_COHERE);
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(provider(&decide(&mut c, "acme", "gold", "r-0")), "cohere");

    let file = policy_file(&dir, "acme", "gold");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(ONLY_COHERE.len(), ONLY_OPENAI.len());
    std::fs::write(&file, ONLY_OPENAI).unwrap();
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(300));
    let unseen = provider(&decide(&mut c, "acme", "gold", "r-1"));
    assert_eq!(
        unseen, "cohere",
        "the watcher did not see the change (test premise)"
    );

    // SAFETY: kill(2) on our own pid; the server's watcher has a SIGHUP handler installed.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    assert_eq!(rc, 0);
    let mut n = 1;
    wait_until("SIGHUP reload served", RELOAD_WITHIN, || {
        n += 1;
        provider(&decide(&mut c, "acme", "gold", &format!("r-{n}"))) == "openai"
    });
    let health = c.request("GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200, "still serving after the signal");
    drop(c);
    server.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// 8: HTTPS and mTLS

/// A test CA with a server certificate (localhost, 127.0.0.1) and client certificates,
/// as PEM files in a temp dir.
struct Pki {
    dir: TempDir,
    ca: Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.0.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "shardline test");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert, key)
    }

    /// Writes the server's certificate and key; `mtls` also makes the CA the client CA.
    fn tls_settings(&self, mtls: bool) -> TlsSettings {
        let (cert, key) = self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (cert_path, key_path) = (self.dir.0.join("server.pem"), self.dir.0.join("server.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TlsSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: cert_path,
            key: key_path,
            client_ca: mtls.then(|| self.dir.0.join("ca.pem")),
        }
    }

    /// A client trusting this CA, presenting `identity` if given.
    fn client(&self, identity: Option<(Certificate, KeyPair)>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
                builder
                    .with_client_auth_cert(vec![cert.der().clone()], key)
                    .unwrap()
            }
        };
        Arc::new(config)
    }
}

/// A keep-alive HTTPS connection (rustls over a std socket).
struct TlsClient {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, name: &str, config: &Arc<ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
        TlsClient {
            reader: BufReader::new(StreamOwned::new(conn, tcp)),
        }
    }

    /// `None` when the server refused the handshake or closed without answering.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Option<Response> {
        let stream = self.reader.get_mut();
        stream
            .write_all(&request_bytes(method, path, &[], body))
            .ok()?;
        stream.flush().ok()?;
        read_response_from(&mut self.reader)
    }
}

/// One HTTPS request on a fresh connection; see `TlsClient::request`.
fn https(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
    path: &str,
    body: &[u8],
) -> Option<Response> {
    let method = if body.is_empty() { "GET" } else { "POST" };
    TlsClient::connect(addr, name, config).request(method, path, body)
}

fn https_settings(dir: &TempDir, tls: TlsSettings) -> ServerSettings {
    let mut s = settings(dir);
    s.tls = Some(tls);
    s
}

/// HTTPS serves the same routes as HTTP, for a client that checks the server's name
/// (DNS or IP) against a CA it trusts; plain HTTP on the TLS port gets no answer.
#[test]
fn https_serves_decisions() {
    let _serial = serial();
    let dir = config_dir("https", "");
    let pki = Pki::new("https");
    let server = start(https_settings(&dir, pki.tls_settings(false)));
    let addr = server.tls_addr().expect("TLS on");
    assert_ne!(addr.port(), 0);
    assert_ne!(addr, server.local_addr());
    let client = pki.client(None);
    for (i, name) in ["localhost", "127.0.0.1"].into_iter().enumerate() {
        for tenant in ["acme", "globex", "initech"] {
            let body = decide_body(tenant, &format!("r-{i}"));
            let resp = https(addr, name, &client, "/v1/decide", &body).expect("an answer");
            assert_eq!(resp.status, 200, "{}", text(&resp));
            assert_eq!(resp.json()["decision"]["metadata"]["tenant_id"], tenant);
        }
    }
    let health = https(addr, "localhost", &client, "/healthz", b"").expect("an answer");
    assert_eq!(health.status, 200);

    let stranger = Pki::new("stranger").client(None);
    let refused = https(addr, "localhost", &stranger, "/healthz", b"");
    assert!(
        refused.is_none(),
        "a client not trusting the server's CA gets nothing"
    );
    let mut plain = Client::connect(addr);
    plain
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.send("GET", "/healthz", &[], b"");
    assert!(
        plain.read_response().is_none(),
        "no plain HTTP on the TLS port"
    );
    let mut http = Client::connect(server.local_addr());
    assert_eq!(
        http.request("GET", "/healthz", &[], b"").status,
        200,
        "HTTP still on"
    );
    drop((plain, http));
    server.stop().unwrap();
}

/// With a client CA, only clients presenting a certificate that CA signed are served:
/// none and one from another CA are refused, and refusals are counted.
#[test]
fn mtls_requires_a_client_certificate_from_the_ca() {
    let _serial = serial();
    let dir = config_dir("mtls", "");
    let pki = Pki::new("mtls");
    let server = start(https_settings(&dir, pki.tls_settings(true)));
    let addr = server.tls_addr().expect("TLS on");
    let body = decide_body("acme", "r-1");

    let anonymous = pki.client(None);
    let refused = https(addr, "localhost", &anonymous, "/v1/decide", &body);
    assert!(refused.is_none(), "no client certificate: {refused:?}");
    let other = Pki::new("mtls-other");
    let foreign = other.leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = pki.client(Some(foreign));
    let refused = https(addr, "localhost", &foreign, "/v1/decide", &body);
    assert!(
        refused.is_none(),
        "a certificate from another CA: {refused:?}"
    );

    let identity = pki.leaf(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let trusted = pki.client(Some(identity));
    let mut session = TlsClient::connect(addr, "localhost", &trusted);
    for i in 0..4 {
        let body = decide_body(["acme", "globex"][i % 2], &format!("r-{i}"));
        let resp = session
            .request("POST", "/v1/decide", &body)
            .expect("served");
        assert_eq!(resp.status, 200, "keep-alive request {i}: {}", text(&resp));
    }
    let path = "/admin/v1/policies/acme/default";
    let auth = bearer(ADMIN_TOKEN);
    let raw = request_bytes("GET", path, &[("Authorization", &auth)], b"");
    session.reader.get_mut().write_all(&raw).unwrap();
    let got = read_response_from(&mut session.reader).expect("admin over mTLS");
    assert_eq!(got.status, 200, "{}", text(&got));
    drop(session);
    let mut http = Client::connect(server.local_addr());
    let metrics = http.request("GET", "/metrics", &[], b"");
    let failures = sum_over_shards(&metrics, "shardline_http_tls_handshake_failures_total", &[]);
    assert!(failures >= 2.0, "both refusals counted: {failures}");
    drop(http);
    server.stop().unwrap();
}

/// A graceful stop does not wait for TLS handshakes: a client that connected to the HTTPS
/// port and stalled (a TCP health check, a half-sent ClientHello) has no request in flight,
/// so like an idle plain connection it is closed at once, not after the drain timeout.
#[test]
fn stop_does_not_wait_for_stalled_tls_handshakes() {
    let _serial = serial();
    let dir = config_dir("tls-stop", "");
    let pki = Pki::new("tls-stop");
    let mut settings = https_settings(&dir, pki.tls_settings(false));
    let long = Duration::from_secs(60);
    (settings.http.read_timeout, settings.http.drain_timeout) = (long, long);
    settings.stop_timeout = long + Duration::from_secs(5);
    let server = start(settings);
    let addr = server.tls_addr().expect("TLS on");
    let trusted = pki.client(None);
    let mut served = TlsClient::connect(addr, "localhost", &trusted);
    assert_eq!(
        served.request("GET", "/healthz", b"").map(|r| r.status),
        Some(200)
    );
    let silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00").unwrap();
    let idle_plain = TcpStream::connect(server.local_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(server.stop().map_err(|e| e.to_string())));
    let bound = Duration::from_secs(10);
    let result = stopped.recv_timeout(bound);
    assert!(
        matches!(result, Ok(Ok(()))),
        "stopped within {bound:?} of a 60 s drain: {result:?}"
    );
    drop((served, silent, half, idle_plain));
}

// ---------------------------------------------------------------------------------------
// 9: metrics

/// `(labels, value)` of every sample of `name` in a Prometheus text scrape.
fn samples(scrape: &Response, name: &str) -> Vec<(HashMap<String, String>, f64)> {
    let text = std::str::from_utf8(&scrape.body).expect("UTF-8 scrape");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (metric, labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}').expect("closed labels")),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((labels, value.parse().expect("a number")));
    }
    out
}

/// The sum of `name` over samples carrying every label of `want`.
fn sum_where(scrape: &Response, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(scrape, name)
        .iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The sum over the per-shard samples (`shard` not `all`) of `name` matching `want`.
fn sum_over_shards(scrape: &Response, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(scrape, name)
        .iter()
        .filter(|(labels, _)| labels.get("shard").is_some_and(|s| s != "all"))
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// After known traffic on every shard, `/metrics` counts each decision once (on its
/// owner, not again on the shard that handed it over), the `shard="all"` series equal
/// the sum of the shards, and the table and connection gauges are there.
#[test]
fn metrics_add_up_after_traffic() {
    let _serial = serial();
    let dir = config_dir("metrics", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let (mut decided, mut not_found, mut invalid) = (0.0, 0.0, 0.0);
    for (i, client) in clients.iter_mut().enumerate() {
        for tenant in ["acme", "globex", "initech"] {
            for n in 0..3 {
                let resp = decide(client, tenant, "default", &format!("r-{i}-{n}"));
                assert_eq!(resp.status, 200, "{}", text(&resp));
                decided += 1.0;
            }
            let resp = decide(client, tenant, "nope", &format!("nf-{i}"));
            assert_eq!(resp.status, 404, "{}", text(&resp));
            not_found += 1.0;
        }
        let resp = client.request("POST", "/v1/decide", &[], b"{not json");
        assert_eq!(resp.status, 400, "{}", text(&resp));
        invalid += 1.0;
        let dry = admin(
            client,
            Some(ADMIN_TOKEN),
            "POST",
            "/admin/v1/dry-run",
            &decide_body("acme", "d"),
        );
        assert_eq!(
            dry.status,
            200,
            "a dry-run is not a decision: {}",
            text(&dry)
        );
    }
    let scrape = clients[0].request("GET", "/metrics", &[], b"");
    assert_eq!(scrape.status, 200);
    assert!(scrape
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));

    let name = "shardline_decisions_total";
    let all = sum_where(&scrape, name, &[("shard", "all")]);
    assert_eq!(all, decided, "decisions by reason, all shards");
    assert_eq!(
        sum_over_shards(&scrape, name, &[]),
        decided,
        "the shards add up to all"
    );
    for (labels, value) in samples(&scrape, name)
        .iter()
        .filter(|(l, _)| l["shard"] == "all")
    {
        let reason = labels["reason"].as_str();
        let shards = sum_over_shards(&scrape, name, &[("reason", reason)]);
        assert_eq!(*value, shards, "reason {reason}");
    }
    let errors = "shardline_errors_total";
    let code = |c| sum_where(&scrape, errors, &[("shard", "all"), ("code", c)]);
    assert_eq!(code("policy_not_found"), not_found);
    assert_eq!(code("invalid_request"), invalid);
    assert_eq!(
        sum_over_shards(&scrape, errors, &[("code", "policy_not_found")]),
        not_found
    );

    let policies = samples(&scrape, "shardline_policies_loaded");
    assert_eq!(policies.len(), 1, "one gauge: {policies:?}");
    assert_eq!(policies[0].1, 4.0, "acme×2, globex, initech");
    let generation = samples(&scrape, "shardline_routing_table_published_generation");
    assert_eq!(
        generation.len(),
        1,
        "one gauge, no per-shard sum: {generation:?}"
    );
    let list = admin(
        &mut clients[0],
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/policies",
        b"",
    );
    assert_eq!(list.json()["generation"].as_f64(), Some(generation[0].1));
    let accepted = sum_over_shards(&scrape, "shardline_http_connections_accepted_total", &[]);
    assert!(
        accepted >= clients.len() as f64,
        "connections accepted: {accepted}"
    );
    let per_shard = samples(&scrape, "shardline_http_connections_accepted_total");
    assert!(
        per_shard.iter().all(|(_, v)| *v >= 1.0),
        "each shard accepted one: {per_shard:?}"
    );
    drop(clients);
    server.stop().unwrap();
}

// ---------------------------------------------------------------------------------------
// What the docs promise an operator sees

/// What the runbook's "circuit stuck open" says an operator sees, checked: a failing
/// result for `openai` updates its breaker in every acme policy routing to it
/// (`policies_updated: 2`, default and premium); once open, decisions keep answering
/// `reason: weighted` from the providers left (not a fallback reason), `explain` names
/// the open circuit, the admin circuits call shows it open from every shard, and the
/// breaker metrics count the openings.
#[test]
fn an_open_circuit_shows_as_the_runbook_says() {
    let _serial = serial();
    let dir = config_dir("runbook-circuit", "");
    let server = start(settings(&dir));
    let mut clients = clients_on_every_shard(server.local_addr(), server.shard_count());
    let n = clients.len();
    for i in 1..=5 {
        let resp = clients[i % n].request(
            "POST",
            "/v1/results",
            &[("Authorization", &bearer(ACME_TOKEN))],
            &failed_result(&format!("rb-{i}")),
        );
        assert_eq!(resp.status, 202, "{}", text(&resp));
        assert_eq!(
            resp.json()["policies_updated"],
            2,
            "every acme policy routing to openai: {}",
            text(&resp)
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let states = circuits(client, "acme");
        for policy in ["default", "premium"] {
            let state = &states[&(policy.to_owned(), "openai".to_owned())];
            assert_eq!(state, "open", "shard {i}: acme/{policy}");
        }
        for r in 0..10 {
            let body = format!(
                r#"{{"request_id":"rb-d-{i}-{r}","tenant_id":"acme","policy_id":"default",
                    "task":{{"type":"chat","payload_ref":"p"}},"explain":true,
                    "metadata":{{"user_id":"rb-u-{i}-{r}"}}}}"#
            );
            let resp = client.request("POST", "/v1/decide", &[], body.as_bytes());
            let chosen = provider(&resp);
            let json = resp.json();
            assert_ne!(chosen, "openai", "an open circuit is not chosen");
            assert_eq!(json["decision"]["reason"], "weighted", "{json}");
            let steps = json["decision"]["explanation"].to_string();
            assert!(
                steps.contains("candidate openai: not usable (CircuitOpen)"),
                "explain names the open circuit: {steps}"
            );
        }
    }
    let scrape = clients[0].request("GET", "/metrics", &[], b"");
    let opened = sum_where(
        &scrape,
        "shardline_breaker_transitions_total",
        &[("shard", "all"), ("to", "open")],
    );
    assert_eq!(opened, 2.0, "one opening per policy");
    drop(clients);
    server.stop().unwrap();
}

/// Every metric docs/OPERATIONS.md lists as "summed over the shards" has a
/// `shard="all"` series in a scrape (a histogram: its `_count`).
#[test]
fn every_metric_documented_as_summed_has_a_shard_all_series() {
    let _serial = serial();
    let ops =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
            .expect("docs/OPERATIONS.md");
    let marker = "summed over the shards (`shard=\"all\"`):";
    let at = ops.find(marker).expect("the summed-metrics paragraph") + marker.len();
    let paragraph = ops[at..].split("\n\n").next().unwrap();
    let mut names = Vec::new();
    for quoted in paragraph.split('`').skip(1).step_by(2) {
        if !quoted.starts_with("shardline_") {
            continue;
        }
        match quoted.split_once("_{") {
            // `shardline_http_connections_{accepted_total,open}`: one name per member.
            Some((stem, rest)) if rest.contains(',') && !rest.contains('=') => {
                let members = rest.trim_end_matches('}');
                names.extend(members.split(',').map(|m| format!("{stem}_{m}")));
            }
            _ => names.push(quoted.split('{').next().unwrap().to_owned()),
        }
    }
    assert!(names.len() >= 20, "parsed the documented list: {names:?}");
    let dir = config_dir("summed-metrics", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    assert_eq!(decide(&mut client, "acme", "default", "m-1").status, 200);
    let scrape = client.request("GET", "/metrics", &[], b"");
    let missing: Vec<_> = names
        .iter()
        .filter(|name| {
            let with_all = |n: &str| {
                samples(&scrape, n)
                    .iter()
                    .any(|(labels, _)| labels.get("shard").map(String::as_str) == Some("all"))
            };
            !with_all(name) && !with_all(&format!("{name}_count"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "documented as summed, no shard=\"all\": {missing:?}"
    );
    drop(client);
    server.stop().unwrap();
}

/// After an admin PUT, with no further traffic, every shard serves the published table:
/// each shard's `shardline_routing_table_generation` reaches the published generation
/// within a bounded wait (read in-process, so no request wakes a shard).
#[test]
fn idle_shards_adopt_a_published_table() {
    let _serial = serial();
    let dir = config_dir("idle-adopt", "");
    let server = start(settings(&dir));
    assert!(server.shard_count() >= 2, "needs an idle peer shard");
    let mut client = Client::connect(server.local_addr());
    let path = "/admin/v1/policies/acme/idle";
    let put = admin(
        &mut client,
        Some(ADMIN_TOKEN),
        "PUT",
        path,
        ONLY_MISTRAL.as_bytes(),
    );
    assert_eq!(put.status, 201, "{}", text(&put));
    drop(client);
    let lagging = || {
        let mut text = String::new();
        server.shared().render_metrics(&mut text);
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map(|v| v.parse::<f64>().unwrap())
        };
        let published = value("shardline_routing_table_published_generation");
        (0..server.shard_count())
            .filter(|i| {
                value(&format!(
                    "shardline_routing_table_generation{{shard=\"{i}\"}}"
                )) != published
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + RELOAD_WITHIN;
    while !lagging().is_empty() {
        assert!(
            Instant::now() < deadline,
            "shards {:?} still serve an older table",
            lagging()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop().unwrap();
}

/// A request to the admin API while it is off says so, and why, instead of a bare
/// `no route`.
#[test]
fn admin_api_off_says_so() {
    let _serial = serial();
    let dir = config_dir("admin-off", "[admin]\nenabled = false\n");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let resp = admin(
        &mut client,
        Some(ADMIN_TOKEN),
        "GET",
        "/admin/v1/circuits/acme",
        b"",
    );
    assert_eq!(resp.status, 404, "{}", text(&resp));
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("the admin API is off") && message.contains("admin.enabled = false"),
        "{message}"
    );
    drop(client);
    server.stop().unwrap();

    let dir = config_dir("admin-no-token", "");
    let mut s = settings(&dir);
    s.tokens.clear();
    let server = start(s);
    let mut client = Client::connect(server.local_addr());
    let resp = admin(&mut client, None, "GET", "/admin/v1/policies", b"");
    assert_eq!(resp.status, 404, "{}", text(&resp));
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("the admin API is off")
            && message.contains("no token with the admin scope"),
        "{message}"
    );
    drop(client);
    server.stop().unwrap();
}
