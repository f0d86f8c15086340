//! Who may steer routing, black-box over HTTP: token scopes on `/v1/results` and
//! `/v1/decide`, results for tenants or providers the table does not know, admin requests
//! refused before any work is queued, and the per-token rate of admin writes.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use shardline::config::Config;
use shardline::server::{Server, ServerSettings};
use support::*;

/// Tokens of the config file used by the scope tests: (token, tenant, scopes).
const ACME_RESULTS: &str = "acme-results-token-0123456789";
const GLOBEX_RESULTS: &str = "globex-results-token-0123456";
const ACME_ADMIN_ONLY: &str = "acme-admin-only-token-012345";
const ACME_DECIDE: &str = "acme-decide-token-0123456789";

const SCOPED_TOKENS: &str = r#"
[admin]
tokens = [
  { token = "acme-results-token-0123456789", tenant = "acme", scopes = ["results"] },
  { token = "globex-results-token-0123456", tenant = "globex", scopes = ["results"] },
  { token = "acme-admin-only-token-012345", tenant = "acme" },
  { token = "acme-decide-token-0123456789", tenant = "acme", scopes = ["decide", "admin"] },
]
"#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn text(resp: &Response) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// A server on `extra_toml`'s own tokens (the test tokens of `support` are not added).
fn start_own_tokens(name: &str, extra_toml: &str) -> (TempDir, Server) {
    let dir = config_dir(name, extra_toml);
    let config = Config::load(&dir.0.join("shardline.toml")).expect("test config");
    let mut settings = ServerSettings::from_config(&config);
    settings.watch_interval = Duration::from_millis(50);
    let server = start(settings);
    (dir, server)
}

fn post(c: &mut Client, path: &str, token: Option<&str>, body: &[u8]) -> Response {
    match token {
        Some(t) => c.request("POST", path, &[("Authorization", &bearer(t))], body),
        None => c.request("POST", path, &[], body),
    }
}

/// An ExecResult for `tenant`'s `provider` with assignment number `n`.
fn result(n: u32, status: &str, tenant: &str, provider: &str) -> Vec<u8> {
    let body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "request_id": format!("r-{n}"),
        "status": status,
        "provider_id": provider,
        "tenant_id": tenant,
        "latency_ms": 900,
    });
    serde_json::to_vec(&body).unwrap()
}

fn decide(tenant: &str, request_id: &str) -> Vec<u8> {
    let body = json!({
        "request_id": request_id,
        "tenant_id": tenant,
        "task": {"type": "chat", "payload_ref": "p"},
    });
    serde_json::to_vec(&body).unwrap()
}

/// Asserts the contract's ErrorResponse with `status` and `code`; returns its message.
fn expect_error(resp: &Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status, status, "{}", text(resp));
    let json = resp.json();
    assert_eq!(json["ok"], false, "{json}");
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["details"].is_object(), "{json}");
    assert!(json["context"].is_object(), "{json}");
    json["error"]["message"].as_str().unwrap().to_owned()
}

fn scrape(addr: SocketAddr) -> String {
    let resp = Client::connect(addr).request("GET", "/metrics", &[], b"");
    assert_eq!(resp.status, 200);
    text(&resp)
}

/// The value of the exact series `name{labels}` in a scrape.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .unwrap()
}

/// acme's breaker states by (policy, provider), read with `token` through the admin API.
fn circuits(c: &mut Client, token: &str) -> HashMap<(String, String), String> {
    let auth = bearer(token);
    let resp = c.request(
        "GET",
        "/admin/v1/circuits/acme",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", text(&resp));
    let json = resp.json();
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

/// The attack of the issue: twelve `status: error` results for acme's openai without a
/// token. Each is refused 401 in the contract's format, counted as an auth failure, and
/// every circuit stays closed; the same twelve with a results token do open it, so the
/// test can tell.
#[test]
fn unauthenticated_results_cannot_open_a_circuit() {
    let _serial = serial();
    let dir = config_dir("auth-attack", "");
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    for n in 1..=12 {
        let resp = post(
            &mut c,
            "/v1/results",
            None,
            &result(n, "error", "acme", "openai"),
        );
        let message = expect_error(&resp, 401, "unauthorized");
        assert!(message.contains("results"), "{message}");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }
    let bad = post(
        &mut c,
        "/v1/results",
        Some("not-a-token-0123456789"),
        &result(13, "error", "acme", "openai"),
    );
    expect_error(&bad, 401, "unauthorized");
    let states = circuits(&mut c, ADMIN_TOKEN);
    assert!(states.values().all(|s| s == "closed"), "{states:?}");
    let metrics = scrape(addr);
    assert_eq!(
        sample(
            &metrics,
            r#"shardline_auth_failures_total{reason="missing"}"#
        ),
        12.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"shardline_auth_failures_total{reason="invalid_token"}"#
        ),
        1.0
    );

    for n in 1..=12 {
        let resp = post(
            &mut c,
            "/v1/results",
            Some(ACME_TOKEN),
            &result(n, "error", "acme", "openai"),
        );
        assert_eq!(resp.status, 202, "{}", text(&resp));
    }
    let states = circuits(&mut c, ADMIN_TOKEN);
    let premium = &states[&("premium".to_owned(), "openai".to_owned())];
    assert_eq!(premium, "open", "{states:?}");
    server.stop().unwrap();
}

/// Scopes on `/v1/results`: no token 401; a token of another tenant, or of this tenant
/// without the `results` scope, 403; the tenant's results token 202. A results token
/// opens nothing else: on the admin API it is 403.
#[test]
fn result_tokens_are_scoped_by_tenant_and_permission() {
    let _serial = serial();
    let (_dir, server) = start_own_tokens("auth-scopes", SCOPED_TOKENS);
    let mut c = Client::connect(server.local_addr());
    let body = result(1, "success", "acme", "openai");
    expect_error(
        &post(&mut c, "/v1/results", None, &body),
        401,
        "unauthorized",
    );
    let wrong_tenant = post(&mut c, "/v1/results", Some(GLOBEX_RESULTS), &body);
    let message = expect_error(&wrong_tenant, 403, "forbidden");
    assert!(message.contains("acme"), "{message}");
    let no_scope = post(&mut c, "/v1/results", Some(ACME_ADMIN_ONLY), &body);
    let message = expect_error(&no_scope, 403, "forbidden");
    assert!(message.contains("results scope"), "{message}");
    let ok = post(&mut c, "/v1/results", Some(ACME_RESULTS), &body);
    assert_eq!(ok.status, 202, "{}", text(&ok));

    let auth = bearer(ACME_RESULTS);
    let admin = c.request(
        "GET",
        "/admin/v1/policies/acme",
        &[("Authorization", &auth)],
        b"",
    );
    let message = expect_error(&admin, 403, "forbidden");
    assert!(message.contains("admin scope"), "{message}");
    let auth = bearer(ACME_ADMIN_ONLY);
    let admin = c.request(
        "GET",
        "/admin/v1/policies/acme",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(admin.status, 200, "{}", text(&admin));
    let metrics = scrape(server.local_addr());
    assert_eq!(
        sample(
            &metrics,
            r#"shardline_auth_failures_total{reason="wrong_tenant"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"shardline_auth_failures_total{reason="missing_scope"}"#
        ),
        2.0
    );
    server.stop().unwrap();
}

/// `[auth] results = "open"` is the explicit way back to results without a token.
#[test]
fn open_results_need_no_token() {
    let _serial = serial();
    let (_dir, server) = start_own_tokens("auth-open", "[auth]\nresults = \"open\"\n");
    let mut c = Client::connect(server.local_addr());
    let resp = post(
        &mut c,
        "/v1/results",
        None,
        &result(1, "error", "acme", "openai"),
    );
    assert_eq!(resp.status, 202, "{}", text(&resp));
    server.stop().unwrap();
}

/// `[auth] decide = "token"`: decide needs a `decide` token of the request's tenant; by
/// default decide stays open.
#[test]
fn decide_tokens_when_asked_for() {
    let _serial = serial();
    let toml = format!("{SCOPED_TOKENS}\n[auth]\ndecide = \"token\"\n");
    let (_dir, server) = start_own_tokens("auth-decide", &toml);
    let mut c = Client::connect(server.local_addr());
    let acme = decide("acme", "d-1");
    expect_error(
        &post(&mut c, "/v1/decide", None, &acme),
        401,
        "unauthorized",
    );
    let results_only = post(&mut c, "/v1/decide", Some(ACME_RESULTS), &acme);
    expect_error(&results_only, 403, "forbidden");
    let globex = post(
        &mut c,
        "/v1/decide",
        Some(ACME_DECIDE),
        &decide("globex", "d-2"),
    );
    expect_error(&globex, 403, "forbidden");
    let ok = post(&mut c, "/v1/decide", Some(ACME_DECIDE), &acme);
    assert_eq!(ok.status, 200, "{}", text(&ok));
    server.stop().unwrap();

    let (_dir, server) = start_own_tokens("auth-decide-open", SCOPED_TOKENS);
    let mut c = Client::connect(server.local_addr());
    let ok = post(&mut c, "/v1/decide", None, &decide("acme", "d-3"));
    assert_eq!(ok.status, 200, "{}", text(&ok));
    server.stop().unwrap();
}

/// A result for a tenant without policies, or for a provider none of the tenant's
/// policies names, is answered 404 `policy_not_found`, changes nothing and is counted.
#[test]
fn results_for_unknown_tenants_or_providers_are_ignored() {
    let _serial = serial();
    let dir = config_dir("auth-ignored", "");
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    let nobody = post(
        &mut c,
        "/v1/results",
        Some(ADMIN_TOKEN),
        &result(1, "error", "nobody", "openai"),
    );
    let message = expect_error(&nobody, 404, "policy_not_found");
    assert!(
        message.contains("nobody") && message.contains("ignored"),
        "{message}"
    );
    for n in 2..=3 {
        let body = result(n, "error", "acme", "made-up-llm");
        let resp = post(&mut c, "/v1/results", Some(ADMIN_TOKEN), &body);
        let message = expect_error(&resp, 404, "policy_not_found");
        assert!(message.contains("made-up-llm"), "{message}");
    }
    let metrics = scrape(server.local_addr());
    let ignored = |r: &str| {
        sample(
            &metrics,
            &format!("shardline_results_ignored_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (ignored("unknown_tenant"), ignored("unknown_provider")),
        (1.0, 2.0)
    );
    server.stop().unwrap();
}

/// The admin token is checked before anything else: an unauthenticated PUT of a large,
/// invalid body, and unauthenticated dry-runs sent to every shard, are answered 401 —
/// not 400 or 413 about the body — and nothing is queued to the blocking pool or handed
/// to another shard (`shardline_admin_queued_total` stays 0). An authorized read then
/// does queue, so the counter is live.
#[test]
fn admin_requests_are_refused_before_any_work() {
    let _serial = serial();
    let (dir, server, base) = start_with_shard_ports("auth-admin-first", "", |_| {});
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let junk = vec![b'{'; 900 << 10];
    let put = c.request("PUT", "/admin/v1/policies/acme/junk", &[], &junk);
    expect_error(&put, 401, "unauthorized");
    let put = c.request(
        "PUT",
        "/admin/v1/policies/acme/junk",
        &[("Authorization", "Bearer wrong-token-0123456789")],
        &junk,
    );
    expect_error(&put, 401, "unauthorized");
    let dry = serde_json::to_vec(&json!({
        "request_id": "dry-1", "tenant_id": "acme", "task": {"type": "chat", "payload_ref": "p"},
    }))
    .unwrap();
    for shard in 0..server.shard_count() {
        let mut at = Client::connect(SocketAddr::from(([127, 0, 0, 1], base + shard as u16)));
        let resp = at.request("POST", "/admin/v1/dry-run", &[], &dry);
        expect_error(&resp, 401, "unauthorized");
        let circuits = at.request("GET", "/admin/v1/circuits/acme", &[], b"");
        expect_error(&circuits, 401, "unauthorized");
    }
    let metrics = scrape(addr);
    for to in ["blocking", "handoff"] {
        let series = format!("shardline_admin_queued_total{{to=\"{to}\"}}");
        assert_eq!(sample(&metrics, &series), 0.0, "{to}");
    }
    assert!(!dir.0.join("policies/acme/junk.json").exists());

    let auth = bearer(ADMIN_TOKEN);
    let get = c.request(
        "GET",
        "/admin/v1/policies/acme/default",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(get.status, 200, "{}", text(&get));
    let metrics = scrape(addr);
    assert_eq!(
        sample(&metrics, r#"shardline_admin_queued_total{to="blocking"}"#),
        1.0
    );
    server.stop().unwrap();
}

/// `admin.writes_per_second = 1`: back-to-back writes with one token get 429
/// `rate_limited` with `Retry-After`; another token's writes are not affected, and reads
/// are not writes.
#[test]
fn admin_writes_are_rate_limited_per_token() {
    let _serial = serial();
    let dir = config_dir("auth-writes", "[admin]\nwrites_per_second = 1\n");
    let server = start(settings(&dir));
    let mut c = Client::connect(server.local_addr());
    let path = "/admin/v1/policies/acme/default";
    let auth = bearer(ADMIN_TOKEN);
    let document = c
        .request("GET", path, &[("Authorization", &auth)], b"")
        .body;
    let mut limited = None;
    for _ in 0..6 {
        let resp = c.request("PUT", path, &[("Authorization", &auth)], &document);
        if resp.status == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status, 200, "{}", text(&resp));
    }
    let limited = limited.expect("a 429 among six back-to-back writes at 1/s");
    expect_error(&limited, 429, "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    for _ in 0..3 {
        let read = c.request("GET", path, &[("Authorization", &auth)], b"");
        assert_eq!(read.status, 200, "{}", text(&read));
    }
    let acme = bearer(ACME_TOKEN);
    let other = c.request("PUT", path, &[("Authorization", &acme)], &document);
    assert_eq!(other.status, 200, "{}", text(&other));
    let metrics = scrape(server.local_addr());
    assert!(sample(&metrics, "shardline_admin_writes_rate_limited_total") >= 1.0);
    server.stop().unwrap();
}

/// Refused requests are logged, but not one line each: sixty refusals in a burst give at
/// most one line per elapsed second (plus the first), the lines say how many were held
/// back, never show the presented token, and the counter has all sixty.
#[test]
fn auth_failures_are_logged_at_most_once_a_second() {
    let _serial = serial();
    let dir = config_dir("auth-log", "[logging]\nformat = \"text\"\n");
    let process = support::process::RouterProcess::spawn(&dir.0.join("shardline.toml"));
    let started = std::time::Instant::now();
    let mut c = Client::connect(process.addr);
    let presented = "presented-but-wrong-0123456789";
    for n in 0..60 {
        let body = result(n, "error", "acme", "openai");
        let resp = post(&mut c, "/v1/results", Some(presented), &body);
        assert_eq!(resp.status, 401, "{}", text(&resp));
    }
    let elapsed = started.elapsed();
    let metrics = scrape(process.addr);
    let failures = r#"shardline_auth_failures_total{reason="invalid_token"}"#;
    assert_eq!(sample(&metrics, failures), 60.0);
    let (_, log) = process.stop();
    let refused: Vec<&String> = log.iter().filter(|l| l.contains("auth: refused")).collect();
    assert!(!refused.is_empty(), "no refusal logged: {log:?}");
    let allowed = elapsed.as_secs() as usize + 2;
    assert!(
        refused.len() <= allowed,
        "{} lines in {elapsed:?}: {refused:?}",
        refused.len()
    );
    assert!(refused
        .iter()
        .all(|l| l.contains("more refusals since the last line")));
    assert!(log.iter().all(|l| !l.contains(presented)), "{log:?}");
}

/// `config check` and `serve` agree on token lengths: a 257-byte token is refused by both
/// binaries' commands with the same message; a 256-byte one passes `config check` and
/// then starts a server on which it authenticates.
#[test]
fn token_length_bounds_agree_between_config_check_and_serve() {
    let _serial = serial();
    let toml = |len: usize| {
        format!(
            "[admin]\ntokens = [{{ token = \"{}\" }}]\n",
            "k".repeat(len)
        )
    };
    let run = |args: &[&str], dir: &TempDir| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardline"))
            .args(args)
            .arg(dir.0.join("shardline.toml"))
            .output()
            .expect("run shardline")
    };
    let long = config_dir("auth-token-long", &toml(257));
    let expected = "admin.tokens[0].token: must be 16–256 bytes (got 257)";
    for args in [&["config", "check"][..], &["serve", "--config"][..]] {
        let out = run(args, &long);
        let said = output(&out);
        assert!(!out.status.success(), "{args:?} accepted a 257-byte token");
        assert!(said.contains(expected), "{args:?}: {said}");
    }
    let short = config_dir("auth-token-short", &toml(15));
    let out = run(&["config", "check"], &short);
    assert!(!out.status.success());
    assert!(output(&out).contains("must be 16–256 bytes (got 15)"));

    let ok = config_dir("auth-token-ok", &toml(256));
    let out = run(&["config", "check"], &ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = Config::load(&ok.0.join("shardline.toml")).expect("loads");
    let server = start(ServerSettings::from_config(&config));
    let mut c = Client::connect(server.local_addr());
    let auth = bearer(&"k".repeat(256));
    let resp = c.request(
        "GET",
        "/admin/v1/policies",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", text(&resp));
    server.stop().unwrap();
}

/// What a command printed, stdout then stderr.
fn output(out: &std::process::Output) -> String {
    let (o, e) = (&out.stdout, &out.stderr);
    format!(
        "{}{}",
        String::from_utf8_lossy(o),
        String::from_utf8_lossy(e)
    )
}
