//! The router over HTTP, black-box: a real server on 127.0.0.1:0, a raw HTTP client.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A policy whose single provider admits one request per second.
const LIMITED_POLICY: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],
"rate_limit":{"enabled":true,"requests_per_second":1,"burst":1}}"#;
/// A policy with a required pre-processor, which no NATS transport can reach here.
const GUARDED_POLICY: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],
"pre":[{"id":"normalize_text","mode":"required"}]}"#;
/// A Unix time in milliseconds long past (September 2001).
const LONG_AGO_UNIX_MS: u64 = 1_000_000_000_000;

/// A decide body for `tenant` with `request_id`, plus the top-level fields of `extra`.
fn decide(tenant: &str, request_id: &str, extra: Value) -> Vec<u8> {
    let mut req = json!({
        "request_id": request_id,
        "tenant_id": tenant,
        "task": {"type": "chat", "payload_ref": "p"},
    });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            req[k] = v;
        }
    }
    serde_json::to_vec(&req).unwrap()
}

/// Results carry the all-scopes test token: they need one by default (`[auth] results`).
fn post(client: &mut Client, path: &str, body: &[u8]) -> Response {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers: &[(&str, &str)] = match path {
        "/v1/results" => &[("Authorization", &auth)],
        _ => &[],
    };
    client.request("POST", path, headers, body)
}

fn text(resp: &Response) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// Asserts `resp` is the contract's ErrorResponse with `status` and `code`, exactly
/// `{"ok":false,"error":{"code","message","details"},"context":{…}}`; returns its JSON.
fn expect_error(resp: &Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status, status, "{}", text(resp));
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let json = resp.json();
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    assert_eq!(keys(&json), set(&["ok", "error", "context"]), "{json}");
    assert_eq!(
        keys(&json["error"]),
        set(&["code", "message", "details"]),
        "{json}"
    );
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["code"], code, "{json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{json}");
    assert!(json["error"]["details"].is_object(), "{json}");
    assert!(json["context"].is_object(), "{json}");
    json
}

/// A decision for `tenant` answering `request_id`; returns its `decision` object.
fn expect_decision(resp: &Response, tenant: &str, request_id: &str) -> Value {
    assert_eq!(resp.status, 200, "{}", text(resp));
    let json = resp.json();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["context"]["request_id"], request_id, "{json}");
    assert_eq!(json["decision"]["metadata"]["tenant_id"], tenant, "{json}");
    json["decision"].clone()
}

/// `Retry-After` in whole seconds; panics if absent or not a number.
fn retry_after(resp: &Response) -> u64 {
    let value = resp.header("retry-after").expect("a Retry-After header");
    value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {value:?}"))
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

/// The sum of every series whose line starts with `prefix`.
fn sum_samples(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

const HANDOFFS_OUT: &str = r#"shardline_handoffs_total{shard="all",direction="out"}"#;
const HANDOFFS_IN: &str = r#"shardline_handoffs_total{shard="all",direction="in"}"#;
const DECISIONS_ALL: &str = r#"shardline_decisions_total{shard="all","#;

/// A config dir whose tenants land on every shard, each with `SIMPLE_POLICY` as default.
fn covering_dir(name: &str, extra_toml: &str) -> (TempDir, Vec<String>) {
    let dir = config_dir(name, extra_toml);
    let tenants = tenants_covering(usable_cores());
    for t in &tenants {
        write_policy(&dir, t, "default", SIMPLE_POLICY);
    }
    (dir, tenants)
}

/// The owner shard of `tenant` on a server with `shards` shards.
fn owner_of(tenant: &str, shards: usize) -> usize {
    ::shards::Partitioner::new(shards).shard_of(tenant).index()
}

/// An ExecResult body for acme's `provider` with assignment number `n`.
fn exec_result(n: u32, status: &str, provider: &str) -> Vec<u8> {
    let body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "request_id": format!("r-{n}"),
        "status": status,
        "provider_id": provider,
        "tenant_id": "acme",
        "latency_ms": 120,
        "cost": 0.002,
    });
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn decide_happy_path() {
    let _serial = serial();
    let dir = config_dir("happy", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for tenant in ["acme", "globex", "initech"] {
        let resp = client.request("POST", "/v1/decide", &[], &decide_body(tenant, "r-1"));
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let json = resp.json();
        assert_eq!(json["ok"], true);
        assert_eq!(json["decision"]["metadata"]["tenant_id"], tenant);
    }
    server.stop().unwrap();
}

/// A request that breaks the contract is 400 `invalid_request` naming the field and rule,
/// with the request id echoed when it could be read; the connection stays usable.
#[test]
fn invalid_requests_are_400_and_name_the_field() {
    let _serial = serial();
    let dir = config_dir("invalid", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());

    let resp = post(
        &mut client,
        "/v1/decide",
        &decide("bad tenant!", "r-bad", json!({})),
    );
    let json = expect_error(&resp, 400, "invalid_request");
    assert_eq!(json["error"]["details"]["field"], "tenant_id", "{json}");
    assert_eq!(json["error"]["details"]["rule"], "pattern", "{json}");
    assert_eq!(json["context"]["request_id"], "r-bad", "{json}");

    let resp = post(
        &mut client,
        "/v1/decide",
        br#"{"request_id":"r-2","tenant_id":"#,
    );
    let json = expect_error(&resp, 400, "invalid_request");
    assert_eq!(json["error"]["details"]["rule"], "json", "{json}");
    assert!(json["error"]["details"]["field"].is_string(), "{json}");

    let no_task = br#"{"request_id":"r-3","tenant_id":"acme"}"#;
    let json = expect_error(
        &post(&mut client, "/v1/decide", no_task),
        400,
        "invalid_request",
    );
    assert_eq!(json["error"]["details"]["field"], "task", "{json}");
    assert_eq!(json["error"]["details"]["rule"], "required", "{json}");

    let v2 = decide("acme", "r-4", json!({"version": "2"}));
    let json = expect_error(
        &post(&mut client, "/v1/decide", &v2),
        400,
        "invalid_request",
    );
    assert_eq!(
        json["error"]["details"]["reason"], "VERSION_UNSUPPORTED",
        "{json}"
    );

    let resp = post(&mut client, "/v1/decide", &decide("acme", "r-5", json!({})));
    expect_decision(&resp, "acme", "r-5");
    server.stop().unwrap();
}

/// Each decision-engine failure has its status and code, whether the tenant's owner is
/// the shard that read the request or another one (the answer then crosses the ring).
#[test]
fn engine_errors_have_their_status_on_every_shard() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("engine-errors", "");
    for t in &tenants {
        write_policy(&dir, t, "guarded", GUARDED_POLICY);
    }
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for t in &tenants {
        let resp = post(
            &mut client,
            "/v1/decide",
            &decide(t, "r-nf", json!({"policy_id": "gold"})),
        );
        let json = expect_error(&resp, 404, "policy_not_found");
        assert_eq!(json["context"]["request_id"], "r-nf", "{json}");
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains(t.as_str()));

        let exclude = json!({"constraints": {"exclude": ["openai", "anthropic"]}});
        let resp = post(&mut client, "/v1/decide", &decide(t, "r-df", exclude));
        expect_error(&resp, 500, "decision_failed");

        let guarded = json!({"policy_id": "guarded"});
        let resp = post(&mut client, "/v1/decide", &decide(t, "r-ext", guarded));
        let json = expect_error(&resp, 502, "extension_unavailable");
        assert_eq!(
            json["error"]["details"]["extension_id"], "normalize_text",
            "{json}"
        );

        let late = json!({"deadline": LONG_AGO_UNIX_MS});
        let resp = post(&mut client, "/v1/decide", &decide(t, "r-dl", late));
        expect_error(&resp, 504, "deadline_exceeded");

        let resp = post(&mut client, "/v1/decide", &decide(t, "r-ok", json!({})));
        expect_decision(&resp, t, "r-ok");
    }
    let resp = post(
        &mut client,
        "/v1/decide",
        &decide("nobody", "r-x", json!({})),
    );
    expect_error(&resp, 404, "policy_not_found");
    server.stop().unwrap();
}

/// Past its policy's rate limit a tenant gets 429 `rate_limited` with a `Retry-After`
/// header and `details.retry_after_ms`, on every shard.
#[test]
fn rate_limited_is_429_with_retry_after() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("rate-limited", "");
    for t in &tenants {
        write_policy(&dir, t, "limited", LIMITED_POLICY);
    }
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for t in &tenants {
        let mut limited = None;
        // One token per second: back-to-back requests run dry within a few tries.
        for i in 0..20 {
            let body = decide(t, &format!("r-{i}"), json!({"policy_id": "limited"}));
            let resp = post(&mut client, "/v1/decide", &body);
            assert!(matches!(resp.status, 200 | 429), "{}", text(&resp));
            if resp.status == 429 {
                limited = Some(resp);
                break;
            }
        }
        let resp = limited.unwrap_or_else(|| panic!("{t} was never rate limited"));
        let json = expect_error(&resp, 429, "rate_limited");
        let ms = json["error"]["details"]["retry_after_ms"]
            .as_u64()
            .expect("retry_after_ms");
        assert!((1..=1_000).contains(&ms), "{json}");
        assert_eq!(retry_after(&resp), ms.div_ceil(1_000), "{json}");
    }
    server.stop().unwrap();
}

/// A body over `limits.body_bytes_max` is 413 `payload_too_large` and the connection is
/// closed; one under it is decided.
#[test]
fn oversized_body_is_413() {
    let _serial = serial();
    let dir = config_dir("too-large", "[limits]\nbody_bytes_max = 2048");
    let server = start(settings(&dir));
    let notes = json!({"a": "x".repeat(750), "b": "x".repeat(750)});
    let small = decide("acme", "r-small", json!({ "metadata": notes }));
    let resp = post(
        &mut Client::connect(server.local_addr()),
        "/v1/decide",
        &small,
    );
    expect_decision(&resp, "acme", "r-small");

    let mut client = Client::connect(server.local_addr());
    let notes = json!({"a": "x".repeat(750), "b": "x".repeat(750), "c": "x".repeat(750)});
    let big = decide("acme", "r-big", json!({ "metadata": notes }));
    let resp = post(&mut client, "/v1/decide", &big);
    expect_error(&resp, 413, "payload_too_large");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(client.read_response().is_none(), "closed after a 413");
    server.stop().unwrap();
}

/// A client that writes its whole request before reading (Python's `http.client` does)
/// still reads the 413 when the body is far over the limit: the server keeps discarding
/// what the client sends after the answer instead of closing on unread input, which
/// would reset the connection and destroy the answer (the client would see EPIPE/RST).
#[test]
fn oversized_body_written_in_full_first_still_reads_the_413() {
    let _serial = serial();
    let dir = config_dir("too-large-whole", "");
    let server = start(settings(&dir));
    for body_len in [2 << 20, 8 << 20] {
        let mut client = Client::connect(server.local_addr());
        client
            .stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = vec![b'x'; body_len];
        let request = request_bytes("POST", "/v1/decide", &[], &body);
        if let Err(e) = std::io::Write::write_all(&mut client.stream, &request) {
            panic!("writing a {body_len}-byte request: {e} (the 413 was reset away)");
        }
        let resp = client
            .read_response()
            .unwrap_or_else(|| panic!("no answer to a {body_len}-byte body"));
        expect_error(&resp, 413, "payload_too_large");
    }
    server.stop().unwrap();
}

/// A connection over `connections_per_shard_max` is answered 503 `overloaded` with
/// `Retry-After` and closed, while the admitted ones are served.
#[test]
fn connection_over_the_cap_is_503_with_retry_after() {
    let _serial = serial();
    let dir = config_dir("conn-cap", "[limits]\nconnections_per_shard_max = 1");
    let server = start(settings(&dir));
    // One more connection than shards: some shard gets two while the first is still open.
    let mut clients: Vec<Client> = (0..=server.shard_count())
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let (mut served, mut refused) = (0, 0);
    for client in &mut clients {
        let resp = client.request("GET", "/healthz", &[], b"");
        if resp.status == 200 {
            served += 1;
            continue;
        }
        refused += 1;
        let json = expect_error(&resp, 503, "overloaded");
        assert!(retry_after(&resp) >= 1);
        assert!(
            json["error"]["details"]["retry_after_ms"].as_u64() >= Some(1),
            "{json}"
        );
        assert!(
            client.read_response().is_none(),
            "a refused connection is closed"
        );
    }
    assert!(refused >= 1, "no connection was refused");
    assert!(served >= 1, "none served");
    server.stop().unwrap();
}

/// A known path with the wrong method is 405 with `Allow`; an unknown path is 404; both
/// carry the contract's error body.
#[test]
fn wrong_method_is_405_and_unknown_path_404() {
    let _serial = serial();
    let dir = config_dir("routes", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for (method, path, allow) in [
        ("GET", "/v1/decide", "POST"),
        ("GET", "/v1/results", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/metrics", "GET"),
    ] {
        let resp = client.request(method, path, &[], b"");
        expect_error(&resp, 405, "invalid_request");
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
    for path in ["/nope", "/v2/decide", "/v1/decide/extra"] {
        let resp = client.request("POST", path, &[], &decide_body("acme", "r-1"));
        let json = expect_error(&resp, 404, "invalid_request");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(path),
            "{json}"
        );
    }
    server.stop().unwrap();
}

/// `X-Tenant-ID` alone names the tenant, and wins over the body's `tenant_id` — also when
/// the header's tenant lives on another shard than the body's.
#[test]
fn tenant_header_suffices_and_wins_over_the_body() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("tenant-header", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let bare = br#"{"request_id":"r-h","task":{"type":"chat","payload_ref":"p"}}"#;
    for t in &tenants {
        let resp = client.request("POST", "/v1/decide", &[("X-Tenant-ID", t)], bare);
        expect_decision(&resp, t, "r-h");
    }
    let resp = post(&mut client, "/v1/decide", bare);
    let json = expect_error(&resp, 400, "invalid_request");
    assert_eq!(json["error"]["details"]["field"], "tenant_id", "{json}");

    for (i, t) in tenants.iter().enumerate() {
        let other = &tenants[(i + 1) % tenants.len()];
        let body = decide(other, "r-w", json!({}));
        let resp = client.request("POST", "/v1/decide", &[("X-Tenant-ID", t)], &body);
        expect_decision(&resp, t, "r-w");
        let body = decide(t, "r-nf", json!({}));
        let resp = client.request("POST", "/v1/decide", &[("X-Tenant-ID", "nobody")], &body);
        expect_error(&resp, 404, "policy_not_found");
    }
    server.stop().unwrap();
}

/// One connection serves many requests in turn, for tenants on every shard, and never
/// asks to close.
#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("keep-alive", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for i in 0..200 {
        let tenant = &tenants[i % tenants.len()];
        let id = format!("ka-{i}");
        let resp = post(&mut client, "/v1/decide", &decide(tenant, &id, json!({})));
        expect_decision(&resp, tenant, &id);
        assert_eq!(resp.header("connection"), None, "request {i}");
    }
    server.stop().unwrap();
}

/// `/metrics` shows what the shards' executors paid per request (parks, io_uring
/// entries, completions, timers), and the runtime keeps its timers armed across turns of
/// its loop: upstream glommio cancelled its preemption timer before every sleep and the
/// sleep's deadline after every wake, about 1.7 cancellations per request here.
#[test]
fn runtime_counters_show_what_a_request_costs() {
    const REQUESTS: usize = 400;
    let _serial = serial();
    let (dir, tenants) = covering_dir("runtime-counters", "");
    let server = start(settings(&dir));
    // The counters are copied on each shard's keep-alive beat (stall_ms / 4).
    let beat = std::time::Duration::from_millis(600);
    let event = |metrics: &str, name: &str| {
        let series = format!(r#"shardline_runtime_events_total{{shard="all",event="{name}"}}"#);
        sample(metrics, &series)
    };
    std::thread::sleep(beat);
    let before = scrape(server.local_addr());
    let mut client = Client::connect(server.local_addr());
    for i in 0..REQUESTS {
        let tenant = &tenants[i % tenants.len()];
        let id = format!("rc-{i}");
        let resp = post(&mut client, "/v1/decide", &decide(tenant, &id, json!({})));
        expect_decision(&resp, tenant, &id);
    }
    std::thread::sleep(beat);
    let after = scrape(server.local_addr());
    let per_request = |name: &str| (event(&after, name) - event(&before, name)) / REQUESTS as f64;
    for name in ["park", "uring_enter", "submission", "completion"] {
        assert!(per_request(name) > 0.0, "{name}: {after}");
    }
    let cancels = per_request("cancel");
    assert!(
        cancels < 0.5,
        "io_uring cancellations per request {cancels:.2} (timers armed {:.2})",
        per_request("timer_armed")
    );
    server.stop().unwrap();
}

/// An idle router sleeps: after traffic, a shard parks for its own timers (the keep-alive
/// beat, a few times a second, and the scrapes here), not once per preemption period
/// (1 ms), as it did when an idle wake by the preemption timer armed the next one.
#[test]
fn an_idle_router_sleeps_between_its_beats() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("idle-parks", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for (i, tenant) in tenants.iter().cycle().take(40).enumerate() {
        let id = format!("idle-{i}");
        let resp = post(&mut client, "/v1/decide", &decide(tenant, &id, json!({})));
        expect_decision(&resp, tenant, &id);
    }
    drop(client);
    let parks = || {
        let series = r#"shardline_runtime_events_total{shard="all",event="park"}"#;
        sample(&scrape(server.local_addr()), series)
    };
    // Counters are copied on the keep-alive beat (stall_ms / 4).
    std::thread::sleep(Duration::from_millis(600));
    let before = parks();
    let idle = Duration::from_secs(3);
    std::thread::sleep(idle);
    let per_shard_per_s = (parks() - before) / server.shard_count() as f64 / idle.as_secs_f64();
    assert!(
        per_shard_per_s < 50.0,
        "an idle shard parked {per_shard_per_s:.0} times a second"
    );
    server.stop().unwrap();
}

/// Every `server.poll` mode serves every shard's tenants and stops cleanly; `busy` never
/// parks (its executors poll without sleeping), `park` and `adaptive` do.
#[test]
fn every_poll_mode_serves_and_stops() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("poll-modes", "");
    for poll in [
        shards::PollMode::Park,
        shards::PollMode::Adaptive(Duration::ZERO),
        shards::PollMode::default(),
        shards::PollMode::Busy,
    ] {
        let mut settings = settings(&dir);
        settings.poll = poll;
        let server = start(settings);
        let mut client = Client::connect(server.local_addr());
        for (i, tenant) in tenants.iter().cycle().take(40).enumerate() {
            let id = format!("poll-{i}");
            let resp = post(&mut client, "/v1/decide", &decide(tenant, &id, json!({})));
            expect_decision(&resp, tenant, &id);
        }
        // Counters are copied on the keep-alive beat (stall_ms / 4).
        std::thread::sleep(Duration::from_millis(600));
        let parks = sample(
            &scrape(server.local_addr()),
            r#"shardline_runtime_events_total{shard="all",event="park"}"#,
        );
        match poll {
            shards::PollMode::Busy => assert_eq!(parks, 0.0, "{poll:?}"),
            _ => assert!(parks > 0.0, "{poll:?}"),
        }
        server.stop().unwrap_or_else(|e| panic!("{poll:?}: {e}"));
    }
}

/// The same chunked decide request, three times on one connection, then mixed with
/// Content-Length and pipelined: each is decided from its own body alone (a body left
/// from the previous request once answered `invalid_request` "trailing characters").
#[test]
fn chunked_requests_on_one_connection_each_start_from_an_empty_body() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("chunked-keep-alive", "");
    let server = start(settings(&dir));
    let tenant = &tenants[0];
    let chunked = |id: &str| {
        let body = decide(tenant, id, json!({}));
        let (a, b) = body.split_at(body.len() / 2);
        let mut out =
            b"POST /v1/decide HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in [a, b] {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let sized = |id: &str| request_bytes("POST", "/v1/decide", &[], &decide(tenant, id, json!({})));
    let mut client = Client::connect(server.local_addr());
    for (i, framing) in ["c", "c", "c", "l", "c", "l"].iter().enumerate() {
        let id = format!("ck-{i}");
        let request = if *framing == "c" {
            chunked(&id)
        } else {
            sized(&id)
        };
        client.send_raw(&request);
        let resp = client.read_response().expect("a response");
        expect_decision(&resp, tenant, &id);
    }
    let mut batch = Vec::new();
    let ids: Vec<String> = (0..4).map(|i| format!("ckp-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        batch.extend(if i == 2 { sized(id) } else { chunked(id) });
    }
    client.send_raw(&batch);
    for id in &ids {
        let resp = client.read_response().expect("a response");
        expect_decision(&resp, tenant, id);
    }
    server.stop().unwrap();
}

/// Twenty decide requests in one write, for tenants on every shard, get twenty answers
/// in request order even though some are answered by another shard (their idempotency
/// keys take them to the tenant's owner).
#[test]
fn pipelined_requests_are_answered_in_order_across_shards() {
    let _serial = serial();
    let (dir, tenants) = covering_dir("pipeline", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let tenant = &tenants[i % tenants.len()];
        let id = format!("pipe-{i}");
        let keyed = json!({ "idempotency_key": format!("key-{i}") });
        batch.extend(request_bytes(
            "POST",
            "/v1/decide",
            &[],
            &decide(tenant, &id, keyed),
        ));
        expected.push((tenant.clone(), id));
    }
    client.send_raw(&batch);
    for (tenant, id) in &expected {
        let resp = client.read_response().expect("a response");
        expect_decision(&resp, tenant, id);
    }
    let metrics = scrape(server.local_addr());
    if server.shard_count() >= 2 {
        assert!(
            sample(&metrics, HANDOFFS_OUT) > 0.0,
            "nothing was handed off"
        );
    }
    server.stop().unwrap();
}

/// Under load from eight connections, ten thousand requests with distinct ids are each
/// answered exactly once with a decision, and the metrics count them all. Every fourth
/// carries an idempotency key, which takes it to its tenant's owner: only those cross.
#[test]
fn every_request_is_answered_exactly_once_under_load() {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 1_250;
    const BATCH: usize = 25;
    let _serial = serial();
    let (dir, tenants) = covering_dir("load", "");
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let tenants = Arc::new(tenants);
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let tenants = Arc::clone(&tenants);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut seen = Vec::with_capacity(PER_CONNECTION);
                for start in (0..PER_CONNECTION).step_by(BATCH) {
                    let mut bytes = Vec::new();
                    let mut ids = Vec::new();
                    for i in start..start + BATCH {
                        let tenant = &tenants[(c + i) % tenants.len()];
                        let id = format!("load-{c}-{i}");
                        let extra = if i % 4 == 0 {
                            json!({ "idempotency_key": id })
                        } else {
                            json!({})
                        };
                        let body = decide(tenant, &id, extra);
                        bytes.extend(request_bytes("POST", "/v1/decide", &[], &body));
                        ids.push(id);
                    }
                    client.send_raw(&bytes);
                    for id in ids {
                        let resp = client.read_response().expect("a response");
                        assert_eq!(resp.status, 200, "{}", text(&resp));
                        let got = resp.json()["context"]["request_id"].clone();
                        assert_eq!(got, id.as_str(), "answers out of order");
                        seen.push(id);
                    }
                }
                seen
            })
        })
        .collect();
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.join().expect("client thread"));
    }
    let unique: HashSet<&String> = answered.iter().collect();
    let expected: HashSet<String> = (0..CONNECTIONS)
        .flat_map(|c| (0..PER_CONNECTION).map(move |i| format!("load-{c}-{i}")))
        .collect();
    assert_eq!(answered.len(), CONNECTIONS * PER_CONNECTION);
    assert_eq!(unique, expected.iter().collect());

    let metrics = scrape(addr);
    let decisions = sum_samples(&metrics, DECISIONS_ALL);
    assert_eq!(
        decisions as usize,
        CONNECTIONS * PER_CONNECTION,
        "decisions_total"
    );
    if server.shard_count() >= 2 {
        let (out, inn) = (
            sample(&metrics, HANDOFFS_OUT),
            sample(&metrics, HANDOFFS_IN),
        );
        assert!(out > 0.0, "no handoffs");
        assert!(
            out as usize <= CONNECTIONS * PER_CONNECTION / 4,
            "only keyed requests cross: {out}"
        );
        assert_eq!(out, inn, "every handoff out arrived");
    }
    server.stop().unwrap();
}

/// A sticky session (acme/default is sticky on `user_id`) holds whichever shard and
/// connection the next request of the session arrives on: every shard decides it, and
/// every shard computes the same provider.
#[test]
fn sticky_sessions_hold_across_connections_and_shards() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("sticky", "", |_| {});
    let shards = server.shard_count();
    let mut addrs: Vec<SocketAddr> = (0..shards).map(|i| loopback(base + i as u16)).collect();
    // acme/default is rate-limited: a shard's first request goes to the owner while its
    // lease is cold (docs/API.md); warm every shard's lease so that each decides (and
    // labels) the sessions it sees itself.
    for (i, addr) in addrs.iter().enumerate() {
        let id = format!("warm-{i}");
        let resp = post(
            &mut Client::connect(*addr),
            "/v1/decide",
            &decide("acme", &id, json!({})),
        );
        expect_decision(&resp, "acme", &id);
    }
    addrs.push(server.local_addr());
    for user in 0..12 {
        let metadata = json!({"metadata": {"user_id": format!("u-{user}")}});
        let first = post(
            &mut Client::connect(addrs[user % addrs.len()]),
            "/v1/decide",
            &decide("acme", "r-0", metadata.clone()),
        );
        let first = expect_decision(&first, "acme", "r-0");
        assert_eq!(first["reason"], "weighted", "{first}");
        // A shard's own port that answered the session before labels it `sticky`; the
        // provider is the same everywhere.
        let mut seen: HashSet<usize> = HashSet::from([user % addrs.len()]);
        for round in 1..=2 * addrs.len() {
            let id = format!("r-{round}");
            let at = (user + round) % addrs.len();
            let mut client = Client::connect(addrs[at]);
            let resp = post(
                &mut client,
                "/v1/decide",
                &decide("acme", &id, metadata.clone()),
            );
            let next = expect_decision(&resp, "acme", &id);
            if at < shards && !seen.insert(at) {
                assert_eq!(
                    next["reason"], "sticky",
                    "user {user} round {round}: {next}"
                );
            }
            assert_eq!(next["provider_id"], first["provider_id"], "user {user}");
        }
    }
    server.stop().unwrap();
}

/// Sessions of acme/default (sticky on `user_id`, ten-minute TTL) in one test.
const SESSIONS: usize = 200;

/// The provider `client`'s router answers for `user`'s session of acme/default, with the
/// reason.
fn session_provider(client: &mut Client, user: &str, id: &str) -> (Value, Value) {
    let metadata = json!({"metadata": {"user_id": user}});
    let resp = post(client, "/v1/decide", &decide("acme", id, metadata));
    let decision = expect_decision(&resp, "acme", id);
    (decision["provider_id"].clone(), decision["reason"].clone())
}

/// Local-first stickiness: many sessions of one sticky policy, sent alternately to the
/// first two shards' own ports, get the same provider on both ports, and spread over
/// the policy's providers (not one for all). Only the provider is compared: whether the
/// second answer says `sticky` depends on which shard decided it (docs/API.md).
#[test]
fn sticky_sessions_agree_across_shard_ports() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("sticky-ports", "", |_| {});
    let ports = server.shard_count().min(2);
    let mut clients: Vec<Client> = (0..ports)
        .map(|i| Client::connect(loopback(base + i as u16)))
        .collect();
    let mut spread = HashSet::new();
    for n in 0..SESSIONS {
        let user = format!("port-user-{n}");
        let (first, reason) = session_provider(&mut clients[n % ports], &user, "r-a");
        assert_eq!(reason, "weighted", "{user}: the session's first answer");
        let (other, _) = session_provider(&mut clients[(n + 1) % ports], &user, "r-b");
        assert_eq!(other, first, "{user}: the other shard's port agrees");
        spread.insert(first);
    }
    assert!(spread.len() >= 3, "sessions spread: {spread:?}");
    server.stop().unwrap();
}

/// Stickiness needs no shared state: two routers, each with its own random seeds and
/// sticky tables as two nodes (or one router before and after a restart) would have, give
/// every session the same provider.
#[test]
fn sticky_sessions_agree_across_routers() {
    let _serial = serial();
    let (dir_a, dir_b) = (config_dir("sticky-a", ""), config_dir("sticky-b", ""));
    let (a, b) = (start(settings(&dir_a)), start(settings(&dir_b)));
    let mut at_a = Client::connect(a.local_addr());
    let mut at_b = Client::connect(b.local_addr());
    for n in 0..SESSIONS {
        let user = format!("node-user-{n}");
        let (on_a, _) = session_provider(&mut at_a, &user, "r-a");
        let (on_b, reason) = session_provider(&mut at_b, &user, "r-b");
        assert_eq!(reason, "weighted", "{user}: router b had not seen it");
        assert_eq!(on_b, on_a, "{user}: both routers chose the same provider");
    }
    a.stop().unwrap();
    b.stop().unwrap();
}

/// ExecResults posted to any shard reach the tenant's owner: five failures open acme's
/// `openai` circuit (failure_threshold 5) and later decisions avoid it; a repeated
/// assignment id is a duplicate; a malformed result is 400.
#[test]
fn results_open_a_circuit_from_any_shard() {
    let _serial = serial();
    // Every decision must be one: no lease may be cold on a loaded machine.
    let (_dir, server, base) = start_with_shard_ports("results", "", without_acme_rate_limits);
    let shards = server.shard_count();
    let owner = owner_of("acme", shards);
    let other = (owner + 1) % shards;
    let port = |i: usize| loopback(base + i as u16);
    let mut at_owner = Client::connect(port(owner));
    let mut at_other = Client::connect(port(other));

    let mut chosen = HashSet::new();
    for i in 0..40 {
        let id = format!("before-{i}");
        let resp = post(&mut at_owner, "/v1/decide", &decide("acme", &id, json!({})));
        chosen.insert(expect_decision(&resp, "acme", &id)["provider_id"].clone());
    }
    assert!(
        chosen.contains(&json!("openai")),
        "openai is drawn while closed"
    );

    // Sent where acme is not owned (when there are two shards), so each is handed off.
    for n in 1..=5 {
        let resp = post(
            &mut at_other,
            "/v1/results",
            &exec_result(n, "error", "openai"),
        );
        assert_eq!(resp.status, 202, "{}", text(&resp));
        let json = resp.json();
        assert_eq!(
            (&json["ok"], &json["duplicate"]),
            (&json!(true), &json!(false))
        );
        assert!(json["policies_updated"].as_u64() >= Some(1), "{json}");
    }
    for client in [&mut at_owner, &mut at_other] {
        for i in 0..40 {
            let id = format!("after-{i}");
            let resp = post(client, "/v1/decide", &decide("acme", &id, json!({})));
            let decision = expect_decision(&resp, "acme", &id);
            assert_ne!(
                decision["provider_id"], "openai",
                "open circuit chosen: {decision}"
            );
        }
    }

    for client in [&mut at_owner, &mut at_other] {
        let resp = post(client, "/v1/results", &exec_result(1, "error", "openai"));
        assert_eq!(resp.status, 200, "{}", text(&resp));
        assert_eq!(resp.json(), json!({"ok": true, "duplicate": true}));
    }
    let no_ids = br#"{"status":"error","provider_id":"openai","tenant_id":"acme"}"#;
    let json = expect_error(
        &post(&mut at_other, "/v1/results", no_ids),
        400,
        "invalid_request",
    );
    assert_eq!(json["error"]["details"]["field"], "assignment_id", "{json}");
    let bad_status =
        br#"{"request_id":"r-9","status":"great","provider_id":"openai","tenant_id":"acme"}"#;
    let json = expect_error(
        &post(&mut at_owner, "/v1/results", bad_status),
        400,
        "invalid_request",
    );
    assert_eq!(json["error"]["details"]["field"], "status", "{json}");
    expect_error(
        &post(&mut at_owner, "/v1/results", b"{not json"),
        400,
        "invalid_request",
    );
    server.stop().unwrap();
}

/// A repeated `idempotency_key` gets the first answer byte for byte, on whichever shard
/// it arrives; another key gets a decision of its own.
#[test]
fn idempotency_key_replays_the_first_answer() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("idempotency", "", |_| {});
    let mut addrs: Vec<SocketAddr> = (0..server.shard_count())
        .map(|i| loopback(base + i as u16))
        .collect();
    addrs.push(server.local_addr());
    let keyed = |id: &str, key: &str| {
        let extra = json!({"idempotency_key": key, "metadata": {"n": id}});
        decide("acme", id, extra)
    };
    let first = post(
        &mut Client::connect(addrs[0]),
        "/v1/decide",
        &keyed("r-1", "k-1"),
    );
    expect_decision(&first, "acme", "r-1");
    for round in 0..3 * addrs.len() {
        let mut client = Client::connect(addrs[round % addrs.len()]);
        // Even a retry whose body differs gets the first answer: the key decides.
        let id = if round % 2 == 0 { "r-1" } else { "r-retry" };
        let again = post(&mut client, "/v1/decide", &keyed(id, "k-1"));
        assert_eq!(again.status, 200);
        assert_eq!(text(&again), text(&first), "round {round}");
    }
    let replays = 3 * addrs.len();
    let other = post(
        &mut Client::connect(addrs[0]),
        "/v1/decide",
        &keyed("r-2", "k-2"),
    );
    expect_decision(&other, "acme", "r-2");
    assert_ne!(text(&other), text(&first));
    let metrics = scrape(server.local_addr());
    let hits = sample(&metrics, r#"shardline_idempotency_hits_total{shard="all"}"#);
    assert_eq!(hits as usize, replays);
    server.stop().unwrap();
}

/// With `shard_port_base`, port `base + i` reaches shard `i`: `/v1/shards` says so, and
/// every shard decides every tenant itself, with no handoff.
#[test]
fn shard_ports_reach_their_shard() {
    let _serial = serial();
    let tenants = tenants_covering(usable_cores());
    let prepare = |dir: &TempDir| {
        for t in &tenants {
            write_policy(dir, t, "default", SIMPLE_POLICY);
        }
    };
    let (_dir, server, base) = start_with_shard_ports("shard-ports", "", prepare);
    let shards = server.shard_count();
    for (i, tenant) in tenants.iter().enumerate() {
        assert_eq!(owner_of(tenant, shards), i);
        let mut client = Client::connect(loopback(base + i as u16));
        let map = client.request("GET", "/v1/shards", &[], b"").json();
        assert_eq!(map["this_shard"], i, "{map}");
        assert_eq!(map["shard_ports"]["base"], base, "{map}");
        let resp = post(
            &mut client,
            "/v1/decide",
            &decide(tenant, "r-own", json!({})),
        );
        expect_decision(&resp, tenant, "r-own");
    }
    let metrics = scrape(loopback(base));
    assert_eq!(
        sample(&metrics, HANDOFFS_OUT),
        0.0,
        "owners were asked directly"
    );
    // Twice round: the first request of a rate-limited tenant on a shard that does not
    // own it goes to the owner (a cold lease, docs/API.md); after it, every shard decides
    // every tenant itself.
    let mut crossed = Vec::new();
    for _ in 0..2 {
        for i in 0..shards {
            let mut client = Client::connect(loopback(base + i as u16));
            for t in tenants
                .iter()
                .chain(&["acme".to_owned(), "globex".to_owned()])
            {
                let resp = post(&mut client, "/v1/decide", &decide(t, "r-any", json!({})));
                expect_decision(&resp, t, "r-any");
            }
        }
        crossed.push(sample(&scrape(loopback(base)), HANDOFFS_OUT));
    }
    assert_eq!(
        crossed[0], crossed[1],
        "every shard decided every tenant once warm"
    );
    server.stop().unwrap();
}

/// Decisions are made where they land: two hundred decisions for a tenant sent to the
/// port of a shard that does not own it are answered with no handoff. Requests with an
/// idempotency key still cross to the owner, so the key's first answer is replayed byte
/// for byte on the owner's port and on the other one, and only they are handed off.
#[test]
fn decisions_are_made_on_the_shard_they_land_on() {
    const DECISIONS: usize = 200;
    let _serial = serial();
    let tenants = tenants_covering(usable_cores());
    if tenants.len() < 2 {
        eprintln!("SKIPPED: one shard, nothing could cross");
        return;
    }
    let prepare = |dir: &TempDir| {
        for t in &tenants {
            write_policy(dir, t, "default", SIMPLE_POLICY);
        }
    };
    let (_dir, server, base) = start_with_shard_ports("landing", "", prepare);
    let tenant = &tenants[1];
    assert_eq!(owner_of(tenant, server.shard_count()), 1);
    let (owner_port, other_port) = (loopback(base + 1), loopback(base));
    let mut other = Client::connect(other_port);
    for i in 0..DECISIONS {
        let id = format!("landing-{i}");
        let resp = post(&mut other, "/v1/decide", &decide(tenant, &id, json!({})));
        expect_decision(&resp, tenant, &id);
    }
    let metrics = scrape(other_port);
    assert_eq!(sample(&metrics, HANDOFFS_OUT), 0.0, "a decision crossed");
    assert_eq!(sample(&metrics, HANDOFFS_IN), 0.0, "a decision crossed");
    let decided_here = r#"shardline_decisions_total{shard="0",reason="weighted"}"#;
    assert_eq!(sample(&metrics, decided_here) as usize, DECISIONS);

    let keyed = |id: &str| decide(tenant, id, json!({ "idempotency_key": "landing-key" }));
    let first = post(&mut other, "/v1/decide", &keyed("keyed-1"));
    expect_decision(&first, tenant, "keyed-1");
    let mut owner = Client::connect(owner_port);
    for round in 0..4 {
        let client = if round % 2 == 0 {
            &mut owner
        } else {
            &mut other
        };
        let again = post(
            client,
            "/v1/decide",
            &keyed(&format!("keyed-retry-{round}")),
        );
        assert_eq!(again.status, 200, "{}", text(&again));
        assert_eq!(text(&again), text(&first), "round {round}");
    }
    let metrics = scrape(other_port);
    assert_eq!(
        sample(&metrics, HANDOFFS_OUT),
        3.0,
        "the keyed requests sent to the other port, and only they, crossed"
    );
    assert_eq!(sample(&metrics, HANDOFFS_IN), 3.0);
    let hits = sample(&metrics, r#"shardline_idempotency_hits_total{shard="1"}"#);
    assert_eq!(hits, 4.0, "every retry was replayed by the owner");
    server.stop().unwrap();
}

/// A policy limited to 400 decisions a second with a burst of 10.
const LEASED_POLICY: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],
"rate_limit":{"enabled":true,"requests_per_second":400,"burst":10}}"#;

/// A tenant's rate limit holds over the whole node while every shard decides its
/// requests: both shards hammered through their own ports for two seconds admit no more
/// than one bucket would (`burst + rate × t`), and at least 95 % of it — the owner keeps
/// the bucket, the other shard spends leased tokens.
#[test]
fn rate_limit_is_exact_over_every_shard() {
    const CLIENTS_PER_PORT: usize = 2;
    const RUN: Duration = Duration::from_secs(2);
    let _serial = serial();
    let tenants = tenants_covering(usable_cores());
    if tenants.len() < 2 {
        eprintln!("SKIPPED: one shard, nothing to share");
        return;
    }
    let tenant = tenants[1].clone();
    let prepare = |dir: &TempDir| write_policy(dir, &tenant, "default", LEASED_POLICY);
    let (_dir, server, base) = start_with_shard_ports("leases", "", prepare);
    assert_eq!(owner_of(&tenant, server.shard_count()), 1);
    // Spend the bucket's start-up burst first: the window measured starts empty.
    let mut warm = Client::connect(loopback(base + 1));
    while post(&mut warm, "/v1/decide", &decide(&tenant, "warm", json!({}))).status == 200 {}
    let admitted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..2 * CLIENTS_PER_PORT)
        .map(|i| {
            let (admitted, refused, tenant) = (admitted.clone(), refused.clone(), tenant.clone());
            let port = loopback(base + (i % 2) as u16);
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let mut per_shard = [0usize; 2];
                let mut n = 0;
                while started.elapsed() < RUN {
                    n += 1;
                    let resp = post(
                        &mut client,
                        "/v1/decide",
                        &decide(&tenant, &format!("l-{i}-{n}"), json!({})),
                    );
                    match resp.status {
                        200 => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            per_shard[i % 2] += 1;
                        }
                        429 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("status {other}: {}", text(&resp)),
                    }
                }
                per_shard
            })
        })
        .collect();
    let mut per_shard = [0usize; 2];
    for w in workers {
        let got = w.join().unwrap();
        per_shard[0] += got[0];
        per_shard[1] += got[1];
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    // The bucket may have refilled a little between the warm-up's last refusal and the
    // start: counted as burst.
    let allowed = 10.0 + 400.0 * elapsed;
    eprintln!(
        "admitted {admitted} of {allowed:.0} allowed in {elapsed:.2} s ({:.1} %), per shard {per_shard:?}, refused {}",
        100.0 * admitted / allowed,
        refused.load(Ordering::Relaxed)
    );
    assert!(admitted <= allowed, "admitted {admitted} > {allowed:.0}");
    assert!(
        admitted >= 0.95 * allowed,
        "admitted {admitted} < 95 % of {allowed:.0}"
    );
    assert!(
        per_shard[0] > 0 && per_shard[1] > 0,
        "both shards admitted: {per_shard:?}"
    );
    let metrics = scrape(loopback(base));
    let crossed = sample(&metrics, HANDOFFS_OUT);
    assert!(
        crossed <= 1.0,
        "{crossed} decisions crossed: only a cold lease's first may"
    );
    server.stop().unwrap();
}

/// More headers than `limits.headers_max` is 431 with the contract's error body.
#[test]
fn too_many_headers_is_431() {
    let _serial = serial();
    let dir = config_dir("headers", "[limits]\nheaders_max = 16");
    let server = start(settings(&dir));
    let names: Vec<String> = (0..40).map(|i| format!("X-Extra-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let mut client = Client::connect(server.local_addr());
    let resp = client.request("POST", "/v1/decide", &headers, &decide_body("acme", "r-1"));
    expect_error(&resp, 431, "invalid_request");
    assert!(client.read_response().is_none(), "closed after a 431");
    let few = &headers[..8];
    let resp = Client::connect(server.local_addr()).request(
        "POST",
        "/v1/decide",
        few,
        &decide_body("acme", "r-2"),
    );
    expect_decision(&resp, "acme", "r-2");
    server.stop().unwrap();
}

/// A client that sends half a request head and stalls is answered 408 and closed once
/// `limits.read_timeout_ms` has passed, not left holding the connection.
#[test]
fn stalled_request_head_is_closed_after_the_read_timeout() {
    let _serial = serial();
    let dir = config_dir("stall", "[limits]\nread_timeout_ms = 300");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let sent = Instant::now();
    client.send_raw(b"POST /v1/decide HTTP/1.1\r\nHost: test\r\nContent-Le");
    let resp = read_response_checked(&mut client)
        .expect("an answer within the client's read timeout")
        .expect("a 408 before the close");
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "closed before the timeout"
    );
    expect_error(&resp, 408, "invalid_request");
    let after = read_response_checked(&mut client);
    assert!(matches!(after, Ok(None)), "then closed: {after:?}");
    server.stop().unwrap();
}

/// Bytes that are not HTTP are 400 with the contract's error body, and the router keeps
/// serving other connections.
#[test]
fn garbage_bytes_are_400() {
    let _serial = serial();
    let dir = config_dir("garbage", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    client.send_raw(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n");
    let resp = client.read_response().expect("an answer");
    expect_error(&resp, 400, "invalid_request");
    assert!(client.read_response().is_none(), "closed after a 400");
    let resp = post(
        &mut Client::connect(server.local_addr()),
        "/v1/decide",
        &decide_body("acme", "r-1"),
    );
    expect_decision(&resp, "acme", "r-1");
    server.stop().unwrap();
}

/// What one client connection saw while the server stopped under it.
#[derive(Debug, Default)]
struct Stream {
    written: usize,
    answered: usize,
    /// The last answer said `Connection: close`.
    closed_by_answer: bool,
    /// A batch was fully written but none of it answered (the connection was idle
    /// when the server closed it, so the server never read the batch).
    unread_batch: bool,
    failure: Option<String>,
}

/// Writes pipelined batches of decide requests and reads their answers until the server
/// closes the connection; `progress` counts answered batches.
fn stream_until_closed(
    addr: SocketAddr,
    c: usize,
    tenants: &[String],
    progress: &AtomicUsize,
) -> Stream {
    const BATCH: usize = 8;
    let mut client = Client::connect(addr);
    let mut s = Stream::default();
    for b in 0usize.. {
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..BATCH {
            let id = format!("stop-{c}-{b}-{i}");
            let body = decide(&tenants[(c + i) % tenants.len()], &id, json!({}));
            bytes.extend(request_bytes("POST", "/v1/decide", &[], &body));
            ids.push(id);
        }
        if std::io::Write::write_all(&mut client.stream, &bytes).is_err() {
            return s;
        }
        s.written += BATCH;
        for (i, id) in ids.iter().enumerate() {
            let resp = match read_response_checked(&mut client) {
                Ok(Some(resp)) => resp,
                Ok(None) if i == 0 => {
                    s.unread_batch = true;
                    return s;
                }
                Ok(None) => {
                    s.failure = Some(format!("closed after {i} of a batch, no close said"));
                    return s;
                }
                Err(e) => {
                    s.failure = Some(format!("truncated answer: {e}"));
                    return s;
                }
            };
            s.answered += 1;
            let json = resp.json();
            if resp.status != 200 || json["context"]["request_id"] != id.as_str() {
                s.failure = Some(format!("{id}: {} {json}", resp.status));
                return s;
            }
            if resp.header("connection") == Some("close") {
                s.closed_by_answer = true;
                match read_response_checked(&mut client) {
                    Ok(None) => {}
                    other => s.failure = Some(format!("after the close: {other:?}")),
                }
                return s;
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    unreachable!()
}

/// A graceful stop under pipelined load answers every request the server read: each
/// connection ends either on an answer that says `Connection: close` or while idle,
/// never inside an answer or with a read request unanswered.
#[test]
fn graceful_stop_answers_every_request_in_flight() {
    const CONNECTIONS: usize = 4;
    let _serial = serial();
    let (dir, tenants) = covering_dir("graceful", "");
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let tenants = Arc::new(tenants);
    let progress: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CONNECTIONS).map(|_| AtomicUsize::new(0)).collect());
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (tenants, progress) = (Arc::clone(&tenants), Arc::clone(&progress));
            std::thread::spawn(move || stream_until_closed(addr, c, &tenants, &progress[c]))
        })
        .collect();
    let waited = Instant::now();
    while progress.iter().any(|p| p.load(Ordering::Relaxed) < 5) {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "clients made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.stop().expect("a clean stop");
    for (c, client) in clients.into_iter().enumerate() {
        let s = client.join().expect("client thread");
        assert_eq!(s.failure, None, "connection {c}: {s:?}");
        assert!(s.answered >= 5 * 8, "connection {c}: {s:?}");
        assert!(
            s.closed_by_answer || s.unread_batch,
            "connection {c}: {s:?}"
        );
        if !s.closed_by_answer {
            assert_eq!(s.answered + 8, s.written, "connection {c}: {s:?}");
        }
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still accepting after stop"
    );
}

/// The operational routes: `/healthz`, `/readyz` with the shard count, `/v1/shards`
/// describing the partition, `/v1/tenants` listing tenant ids, `/metrics` in the
/// Prometheus text format.
#[test]
fn health_readiness_shard_map_and_metrics() {
    let _serial = serial();
    let dir = config_dir("ops-routes", "");
    let server = start(settings(&dir));
    let shards = server.shard_count();
    assert_eq!(shards, usable_cores());
    let mut client = Client::connect(server.local_addr());

    let resp = client.request("GET", "/healthz", &[], b"");
    assert_eq!((resp.status, resp.json()), (200, json!({"ok": true})));

    let resp = client.request("GET", "/readyz", &[], b"");
    assert_eq!(resp.status, 200, "{}", text(&resp));
    let ready = resp.json();
    assert_eq!(
        (&ready["ok"], &ready["shards"]),
        (&json!(true), &json!(shards)),
        "{ready}"
    );

    let map = client.request("GET", "/v1/shards", &[], b"").json();
    assert_eq!(map["shards"], shards, "{map}");
    assert!(map["this_shard"].as_u64() < Some(shards as u64), "{map}");
    let function = map["partition"]["function"].as_str().unwrap_or_default();
    assert!(
        function.contains("jump_consistent_hash") && function.contains("fnv1a_64"),
        "{map}"
    );
    assert_eq!(
        map["partition"]["fnv1a_64"]["offset_basis"],
        "0xcbf29ce484222325"
    );
    assert_eq!(map["shard_ports"], Value::Null, "{map}");

    // The tenant list: ids only, sorted, no token; other methods 405.
    let resp = client.request("GET", "/v1/tenants", &[], b"");
    assert_eq!(resp.status, 200, "{}", text(&resp));
    assert_eq!(
        resp.json(),
        json!({"ok": true, "tenants": ["acme", "globex", "initech"]})
    );
    let resp = client.request("POST", "/v1/tenants", &[], b"{}");
    assert_eq!(resp.status, 405, "{}", text(&resp));
    assert_eq!(resp.header("allow"), Some("GET"));

    let resp = client.request("GET", "/metrics", &[], b"");
    assert_eq!(resp.status, 200);
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let metrics = text(&resp);
    assert!(
        metrics.contains("# TYPE shardline_decisions_total counter"),
        "{metrics}"
    );
    for i in 0..shards {
        let series = format!(r#"shardline_handoffs_total{{shard="{i}",direction="out"}}"#);
        sample(&metrics, &series);
    }
    server.stop().unwrap();
}

/// Trace ids sent as headers (`X-Trace-ID` or `trace_id`) reach the answer's context and
/// win over the body's, for decisions and errors, on every shard; a `version` header
/// other than "1" is refused even when the body says "1".
#[test]
fn trace_and_version_headers_win_over_the_body_on_every_shard() {
    const HEADER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const BODY_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let _serial = serial();
    let (dir, tenants) = covering_dir("trace-headers", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for t in &tenants {
        let body = decide(t, "r-b", json!({ "trace_id": BODY_TRACE }));
        let resp = post(&mut client, "/v1/decide", &body);
        expect_decision(&resp, t, "r-b");
        assert_eq!(resp.json()["context"]["trace_id"], BODY_TRACE);
        for name in ["X-Trace-ID", "trace_id"] {
            let resp = client.request("POST", "/v1/decide", &[(name, HEADER_TRACE)], &body);
            expect_decision(&resp, t, "r-b");
            assert_eq!(resp.json()["context"]["trace_id"], HEADER_TRACE, "{name}");
        }
        let missing = decide(t, "r-nf", json!({ "policy_id": "gold" }));
        let resp = client.request(
            "POST",
            "/v1/decide",
            &[("X-Trace-ID", HEADER_TRACE)],
            &missing,
        );
        let json = expect_error(&resp, 404, "policy_not_found");
        assert_eq!(json["context"]["trace_id"], HEADER_TRACE, "{json}");

        let v1 = decide(t, "r-v", json!({ "version": "1" }));
        let resp = client.request("POST", "/v1/decide", &[("version", "2")], &v1);
        let json = expect_error(&resp, 400, "invalid_request");
        assert_eq!(
            json["error"]["details"]["reason"], "VERSION_UNSUPPORTED",
            "{json}"
        );
    }
    server.stop().unwrap();
}

/// An idempotency key is scoped to its tenant: the same key sent for several tenants, some
/// sharing an owner shard, gets each tenant a decision of its own, and repeats replay it.
#[test]
fn idempotency_keys_do_not_cross_tenants() {
    let _serial = serial();
    let (dir, mut tenants) = covering_dir("idempotency-tenants", "");
    tenants.extend(["acme", "globex", "initech"].map(String::from));
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for _round in 0..2 {
        for t in &tenants {
            let id = format!("r-{t}");
            let body = decide(t, &id, json!({ "idempotency_key": "shared-key" }));
            expect_decision(&post(&mut client, "/v1/decide", &body), t, &id);
        }
    }
    let metrics = scrape(server.local_addr());
    let hits = sample(&metrics, r#"shardline_idempotency_hits_total{shard="all"}"#);
    assert_eq!(
        hits as usize,
        tenants.len(),
        "only the second round replays"
    );
    server.stop().unwrap();
}

/// When more requests wait on one peer shard than the handoff budget allows (a 2-slot
/// ring admits one in flight; idempotency keys send them to the owner), the surplus is answered 503 `overloaded` with
/// `Retry-After` and its request id, in order with the decided ones, and counted.
#[test]
fn handoff_over_budget_is_503_overloaded() {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 25;
    let _serial = serial();
    let tenants = tenants_covering(usable_cores());
    if tenants.len() < 2 {
        eprintln!("SKIPPED: one shard, nothing is handed off");
        return;
    }
    let prepare = |dir: &TempDir| {
        for t in &tenants {
            write_policy(dir, t, "default", SIMPLE_POLICY);
        }
    };
    let (_dir, server, base) = start_with_shard_ports("shed", "[limits]\nring_slots = 2", prepare);
    // Every connection on shard 0, every request for a tenant of shard 1.
    let mut clients: Vec<Client> = (0..CONNECTIONS)
        .map(|_| Client::connect(loopback(base)))
        .collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..PER_CONNECTION {
            // Keyed, so each must be answered by the tenant's owner.
            let id = format!("shed-{c}-{i}");
            let extra = json!({
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "idempotency_key": id,
            });
            let body = decide(&tenants[1], &id, extra);
            bytes.extend(request_bytes("POST", "/v1/decide", &[], &body));
        }
        client.send_raw(&bytes);
    }
    let mut shed = 0;
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..PER_CONNECTION {
            let id = format!("shed-{c}-{i}");
            let resp = client.read_response().expect("an answer");
            if resp.status == 200 {
                expect_decision(&resp, &tenants[1], &id);
                continue;
            }
            shed += 1;
            let json = expect_error(&resp, 503, "overloaded");
            assert_eq!(retry_after(&resp), 1);
            assert_eq!(json["error"]["details"]["retry_after_ms"], 1_000, "{json}");
            assert_eq!(json["context"]["request_id"], id.as_str(), "{json}");
            let trace = &json["context"]["trace_id"];
            assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{json}");
        }
    }
    assert!(shed > 0, "nothing was shed");
    let metrics = scrape(loopback(base));
    let counted = sample(
        &metrics,
        r#"shardline_shed_total{shard="all",cause="handoff_budget"}"#,
    );
    assert_eq!(counted as usize, shed);
    server.stop().unwrap();
}

/// Connections tried to fill every shard's data-plane cap (the kernel picks the shard).
const FILL_ATTEMPTS_MAX: usize = 200;

/// Opens data-port connections, keeping each one a shard admitted (it answered `/healthz`
/// 200), until every shard holds `cap`: the data plane is full.
fn fill_data_plane(addr: SocketAddr, cap: usize, shards: usize) -> Vec<Client> {
    let mut held = Vec::new();
    for _ in 0..FILL_ATTEMPTS_MAX {
        if held.len() == cap * shards {
            return held;
        }
        let mut client = Client::connect(addr);
        if client.request("GET", "/healthz", &[], b"").status == 200 {
            held.push(client);
        }
    }
    panic!(
        "only {} of {} connections admitted",
        held.len(),
        cap * shards
    );
}

/// With every shard's data-plane connection cap reached, the data port sheds new
/// connections with 503 (even `/healthz`), while the operations listener still answers
/// `/healthz`, `/readyz` and `/metrics` 200: a supervisor does not restart a busy router
/// and Prometheus keeps seeing it. The operations listener serves no decisions.
#[test]
fn ops_listener_answers_while_the_data_port_sheds() {
    let _serial = serial();
    let cap = 2;
    let extra = format!("[limits]\nconnections_per_shard_max = {cap}");
    let dir = config_dir("ops-overload", &extra);
    let server = start(settings(&dir));
    let ops = server.ops_addr().expect("the operations listener is on");
    let held = fill_data_plane(server.local_addr(), cap, server.shard_count());

    let shed = Client::connect(server.local_addr()).request("GET", "/healthz", &[], b"");
    expect_error(&shed, 503, "overloaded");
    let mut client = Client::connect(ops);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = client.request("GET", path, &[], b"");
        assert_eq!(resp.status, 200, "{path} on the ops port: {}", text(&resp));
    }
    let metrics = scrape(ops);
    assert!(
        sum_samples(
            &metrics,
            "shardline_http_connections_refused_total{shard=\""
        ) >= 1.0,
        "the shed connection is counted"
    );
    let decide = client.request("POST", "/v1/decide", &[], b"{}");
    let json = expect_error(&decide, 404, "invalid_request");
    assert!(text(&decide).contains("data port"), "{json}");
    drop(held);
    server.stop().unwrap();
}

/// `admin.on_data_port = false`: an admin call on the data port is told where the admin
/// API is served (not `no route`); the same call on the operations listener is served.
#[test]
fn admin_off_the_data_port_says_where_it_is() {
    let _serial = serial();
    let dir = config_dir("admin-ops-only", "[admin]\non_data_port = false");
    let server = start(settings(&dir));
    let ops = server.ops_addr().expect("the operations listener is on");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("Authorization", auth.as_str())];
    let path = "/admin/v1/policies";
    let data = Client::connect(server.local_addr()).request("GET", path, &headers, b"");
    let json = expect_error(&data, 421, "invalid_request");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("operations listener") && message.contains(&ops.to_string()),
        "{json}"
    );
    let served = Client::connect(ops).request("GET", path, &headers, b"");
    assert_eq!(served.status, 200, "{}", text(&served));
    server.stop().unwrap();
}
