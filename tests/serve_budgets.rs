//! Budgets over HTTP, black-box: a budget's window refuses with `budget_exceeded` and its
//! details once spent, whichever shard the requests land on; results settle what
//! decisions reserved, as `GET /admin/v1/budgets/{tenant}` shows; spend survives a
//! graceful restart exactly and a `kill -9` up to its last second.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::process::{signal, RouterProcess};
use support::*;

/// Per user 3 requests an hour; the tenant 5.0 a month. `p1` is declared at 1.0 a call.
const BUDGETED: &str = r#"{"version":"1.0",
"providers":[{"name":"p1","weight":100,"cost":1.0}],
"budgets":[{"scope":"metadata.user","window":"1h","max_requests":3},
           {"scope":"tenant","window":"calendar_month","max_cost":5.0}]}"#;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Decides for acme's `budgeted` policy as `user`: (status, body, Retry-After).
fn decide(addr: SocketAddr, rid: &str, user: &str) -> (u16, Value, Option<String>) {
    let body = json!({
        "request_id": rid,
        "tenant_id": "acme",
        "policy_id": "budgeted",
        "task": {"type": "chat", "payload_ref": "p"},
        "metadata": {"user": user},
    });
    let resp = Client::connect(addr).request(
        "POST",
        "/v1/decide",
        &[],
        &serde_json::to_vec(&body).unwrap(),
    );
    let retry_after = resp.header("retry-after").map(str::to_owned);
    (resp.status, resp.json(), retry_after)
}

/// Posts a `success` result for `rid`'s call to p1 that cost `cost`: (status, answer).
fn settle_as(addr: SocketAddr, rid: &str, cost: f64) -> (u16, Value) {
    // One assignment id per request id, so that posting it again is a duplicate.
    let id = rid
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
    let body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{:012x}", id & 0xffff_ffff_ffff),
        "request_id": rid,
        "status": "success",
        "provider_id": "p1",
        "tenant_id": "acme",
        "latency_ms": 100,
        "cost": cost,
    });
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let resp = Client::connect(addr).request(
        "POST",
        "/v1/results",
        &[("Authorization", &auth)],
        &serde_json::to_vec(&body).unwrap(),
    );
    (resp.status, resp.json())
}

fn settle(addr: SocketAddr, rid: &str, cost: f64) -> Value {
    let (status, answer) = settle_as(addr, rid, cost);
    assert_eq!(status, 202, "{answer}");
    answer
}

/// The admin view of acme's budgets.
fn budgets(addr: SocketAddr) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let resp = Client::connect(addr).request(
        "GET",
        "/admin/v1/budgets/acme",
        &[("Authorization", &auth)],
        b"",
    );
    let body = resp.json();
    assert_eq!(resp.status, 200, "{body}");
    body
}

/// acme's tenant-scoped budget row of policy `budgeted`.
fn tenant_row(view: &Value) -> Value {
    view["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .find(|b| b["policy_id"] == "budgeted" && b["scope"] == "tenant")
        .unwrap_or_else(|| panic!("no tenant row: {view}"))
        .clone()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Requests land on the shard that is *not* acme's owner (when there are two): the
/// budget still counts them in the owner's one ledger. A user's fourth request in the
/// hour is refused with the budget's details; the tenant's cost budget refuses once
/// decisions reserved it all, and admits again after a result settled for less.
#[test]
fn budgets_refuse_with_their_details_and_results_settle_them() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("budgets", "", |dir| {
        write_policy(dir, "acme", "budgeted", BUDGETED);
    });
    let shards = server.shard_count();
    let owner = ::shards::Partitioner::new(shards).shard_of("acme").index();
    let other = loopback(base + ((owner + 1) % shards) as u16);

    for i in 1..=3 {
        let (status, body, _) = decide(other, &format!("u1-{i}"), "u1");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"]["provider_id"], "p1");
    }
    let (status, body, retry_after) = decide(other, "u1-4", "u1");
    assert_eq!((status, code(&body)), (429, "budget_exceeded"), "{body}");
    let d = &body["error"]["details"];
    assert_eq!(d["scope"], "metadata.user", "{body}");
    assert_eq!(d["value"], "u1", "{body}");
    assert_eq!(d["window"], "1h", "{body}");
    assert_eq!(d["measure"], "requests", "{body}");
    assert_eq!(
        (d["limit"].as_f64(), d["spent"].as_f64()),
        (Some(3.0), Some(3.0))
    );
    let reset = d["reset_at_ms"].as_u64().expect("reset_at_ms");
    let now = unix_ms();
    assert!(reset > now && reset - now <= 3_600_000, "{body}");
    assert_eq!(
        reset % 3_600_000,
        0,
        "an hour window ends on the hour: {body}"
    );
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=3_600).contains(&retry_after), "{retry_after}");

    // Five decisions reserve 5.0 of the tenant's 5.0: the sixth is refused at admission.
    for i in 1..=2 {
        let (status, body, _) = decide(other, &format!("u2-{i}"), "u2");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = decide(other, "u3-1", "u3");
    assert_eq!((status, code(&body)), (429, "budget_exceeded"), "{body}");
    let d = &body["error"]["details"];
    assert_eq!(
        (d["scope"].as_str(), d["measure"].as_str()),
        (Some("tenant"), Some("cost"))
    );
    assert_eq!(
        (d["limit"].as_f64(), d["spent"].as_f64()),
        (Some(5.0), Some(5.0))
    );
    assert_eq!(d.get("value"), None, "a tenant budget has no value: {body}");

    let row = tenant_row(&budgets(other));
    assert_eq!(row["window"], "calendar_month", "{row}");
    assert_eq!(
        row["spent"],
        json!({"requests": 5, "cost": 5.0, "tokens": 0}),
        "{row}"
    );
    assert_eq!(
        row["reserved"],
        json!({"requests": 5, "cost": 5.0, "tokens": 0}),
        "{row}"
    );
    assert_eq!(row["remaining"]["max_cost"], 0.0, "{row}");

    // The result says the call cost 0.25: 0.75 is free again, and p1's observed cost
    // (0.25) now fits it.
    let answer = settle(other, "u1-1", 0.25);
    assert_eq!(answer["policies_updated"], 1, "{answer}");
    let row = tenant_row(&budgets(other));
    assert_eq!(row["spent"]["cost"], 4.25, "{row}");
    assert_eq!(
        row["reserved"],
        json!({"requests": 4, "cost": 4.0, "tokens": 0}),
        "{row}"
    );
    let (status, body, _) = decide(other, "u3-2", "u3");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"]["expected_cost"], 0.25, "{body}");
    let row = tenant_row(&budgets(other));
    assert_eq!(row["spent"]["cost"], 4.5, "{row}");
    assert_eq!(row["spent"]["requests"], 6, "{row}");

    // The same result again is a duplicate: nothing is settled twice.
    let (_, again) = settle_as(other, "u1-1", 0.25);
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(tenant_row(&budgets(other))["spent"]["cost"], 4.5);
    server.stop().unwrap();
}

/// Many clients on every shard's port at once: exactly `max_requests` are admitted.
#[test]
fn a_budget_admits_exactly_its_limit_across_shards() {
    const LIMIT: usize = 40;
    let policy = format!(
        r#"{{"version":"1.0","providers":[{{"name":"p1","weight":100}}],
        "budgets":[{{"scope":"tenant","window":"1d","max_requests":{LIMIT}}}]}}"#
    );
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("budgets-exact", "", |dir| {
        write_policy(dir, "acme", "budgeted", &policy);
    });
    let shards = server.shard_count();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = loopback(base + (t % shards) as u16);
            std::thread::spawn(move || {
                let mut admitted = 0;
                for i in 0..30 {
                    let (status, body, _) = decide(addr, &format!("t{t}-{i}"), "u");
                    match status {
                        200 => admitted += 1,
                        429 => assert_eq!(code(&body), "budget_exceeded", "{body}"),
                        _ => panic!("{status}: {body}"),
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, LIMIT, "120 asked over {shards} shard(s)");
    server.stop().unwrap();
}

/// A graceful stop writes the budgets beside the policies; the next start has every
/// window's spend and open reservation back, and a result for a decision made before
/// the restart settles it.
#[test]
fn budget_spend_survives_a_graceful_restart_exactly() {
    let _serial = serial();
    let dir = config_dir("budgets-restart", "");
    write_policy(&dir, "acme", "budgeted", BUDGETED);
    let server = start(settings(&dir));
    let addr = server.local_addr();
    for (rid, user) in [("a", "u1"), ("b", "u1"), ("c", "u2")] {
        let (status, body, _) = decide(addr, rid, user);
        assert_eq!(status, 200, "{body}");
    }
    settle(addr, "a", 0.5);
    let before = budgets(addr);
    server.stop().unwrap();
    let file = dir.0.join("policies.budgets.json");
    assert!(file.is_file(), "no state file at {}", file.display());

    let server = start(settings(&dir));
    let addr = server.local_addr();
    let after = budgets(addr);
    assert_eq!(after["budgets"], before["budgets"], "{before}\n{after}");
    let row = tenant_row(&after);
    assert_eq!(row["spent"]["cost"], 2.5, "{row}");
    settle(addr, "b", 0.5);
    let row = tenant_row(&budgets(addr));
    assert_eq!(row["spent"]["cost"], 2.0, "{row}");
    assert_eq!(row["reserved"]["requests"], 1, "{row}");
    // u1 spent two of three requests before the restart: one more, then refused.
    assert_eq!(decide(addr, "d", "u1").0, 200);
    let (status, body, _) = decide(addr, "e", "u1");
    assert_eq!((status, code(&body)), (429, "budget_exceeded"), "{body}");
    server.stop().unwrap();
}

/// `kill -9` loses at most the last second: spend a second old is back after a restart.
#[test]
fn budget_spend_survives_kill_9_but_its_last_second() {
    let _serial = serial();
    let admin = format!(
        "[admin]\ntokens = [{{ token = \"{ADMIN_TOKEN}\", scopes = [\"admin\", \"results\"] }}]\n"
    );
    let dir = config_dir("budgets-kill", &admin);
    write_policy(&dir, "acme", "budgeted", BUDGETED);
    let config = dir.0.join("shardline.toml");
    let router = RouterProcess::spawn(&config);
    for (rid, user) in [("a", "u1"), ("b", "u2")] {
        let (status, body, _) = decide(router.addr, rid, user);
        assert_eq!(status, 200, "{body}");
    }
    settle(router.addr, "a", 0.125);
    std::thread::sleep(Duration::from_millis(1_500));
    signal(router.id(), libc::SIGKILL);
    let mut child = router.into_child();
    child.wait().unwrap();

    let router = RouterProcess::spawn(&config);
    let row = tenant_row(&budgets(router.addr));
    assert_eq!(row["spent"]["requests"], 2, "{row}");
    assert_eq!(row["spent"]["cost"], 1.125, "{row}");
    assert_eq!(row["reserved"]["requests"], 1, "{row}");
    let (status, logs) = router.stop();
    assert!(status.success(), "{}", logs.join("\n"));
}

/// A state file that does not parse stops the start with a message saying which file and
/// what to do, rather than serving with every budget forgotten.
#[test]
fn an_unreadable_state_file_stops_the_start() {
    let _serial = serial();
    let dir = config_dir("budgets-bad-file", "");
    write_policy(&dir, "acme", "budgeted", BUDGETED);
    let file = dir.0.join("policies.budgets.json");
    std::fs::write(&file, b"{\"version\":1,\"shards\":[{\"ledgers\":7").unwrap();
    let err = match shardline::server::Server::start(settings(&dir)) {
        Ok(server) => {
            server.stop().unwrap();
            panic!("started over a broken state file");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("policies.budgets.json"), "{err}");
    assert!(err.contains("move it away"), "{err}");
}

/// A gateway's retry of one request on another provider, with results that carry no
/// assignment id: each result settles its own call; neither is taken for a duplicate.
#[test]
fn a_retry_on_another_provider_settles_apart() {
    const TWO: &str = r#"{"version":"1.0",
    "providers":[{"name":"p1","weight":50,"cost":1.0},{"name":"p2","weight":50,"cost":1.0}],
    "budgets":[{"scope":"tenant","window":"1d","max_cost":100.0}]}"#;
    let _serial = serial();
    let dir = config_dir("budgets-retry", "");
    write_policy(&dir, "acme", "budgeted", TWO);
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for provider in ["p1", "p2"] {
        let body = json!({"request_id": "g-1", "tenant_id": "acme", "policy_id": "budgeted",
            "task": {"type": "chat", "payload_ref": "p"}, "constraints": {"only": [provider]}});
        let resp = Client::connect(addr).request(
            "POST",
            "/v1/decide",
            &[],
            &serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(resp.status, 200, "{}", resp.json());
    }
    for provider in ["p1", "p2"] {
        let result = json!({"request_id": "g-1", "status": "success", "provider_id": provider,
            "tenant_id": "acme", "latency_ms": 10, "cost": 0.5});
        let resp = Client::connect(addr).request(
            "POST",
            "/v1/results",
            &[("Authorization", &auth)],
            &serde_json::to_vec(&result).unwrap(),
        );
        assert_eq!(resp.status, 202, "{provider}: {}", resp.json());
        assert_eq!(resp.json()["duplicate"], false);
    }
    let row = tenant_row(&budgets(addr));
    assert_eq!(
        row["spent"],
        json!({"requests": 2, "cost": 1.0, "tokens": 0}),
        "{row}"
    );
    assert_eq!(row["reserved"]["requests"], 0, "{row}");
    server.stop().unwrap();
}
