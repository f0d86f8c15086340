//! Providers' own limits over HTTP, black-box: `rpm` counted from decisions, `tpm` from
//! posted results' `usage`, a cooldown after a `rate_limited` result, and a `429` error
//! that leaves the circuit closed; `explain` names each.

mod support;

use serde_json::{json, Value};
use support::decide_preferring as decide;
use support::*;

const RPM_POLICY: &str = r#"{"version":"1.0",
"providers":[{"name":"a1","weight":90,"rpm":5},{"name":"a2","weight":10}]}"#;
const TPM_POLICY: &str = r#"{"version":"1.0","cooldown_ms":60000,
"providers":[{"name":"b1","weight":50,"tpm":1000},{"name":"b2","weight":50}]}"#;
const BREAKER_POLICY: &str = r#"{"version":"1.0","cooldown_ms":0,
"providers":[{"name":"c1","weight":50},{"name":"c2","weight":50}],
"circuit_breaker":{"enabled":true,"failure_threshold":1,"timeout_ms":60000}}"#;

fn chosen(client: &mut Client, n: u32, policy: &str, first: &str) -> (String, Value) {
    let (status, body) = decide(client, n, policy, first);
    assert_eq!(status, 200, "{body}");
    let d = body["decision"].clone();
    (d["provider_id"].as_str().unwrap().to_owned(), d)
}

/// Posts a result for `provider` with `extra` members (status, usage, error_code).
fn result(client: &mut Client, n: u32, provider: &str, extra: Value) {
    let mut body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "request_id": format!("r-{n}"),
        "status": "success",
        "provider_id": provider,
        "tenant_id": "acme",
        "latency_ms": 100,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post_result(client, &body);
}

/// On the tenant's owner shard (where results land): `rpm` holds a1 after five
/// decisions; 1000 tokens in a result hold b1 at its `tpm`; a `rate_limited` result cools
/// b2 down, leaving no provider (`decision_failed` names the cause); a `429` error leaves
/// c1's circuit closed where a `500` opens it.
#[test]
fn provider_limits_and_cooldowns_over_http() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("limits", "", |dir| {
        write_policy(dir, "acme", "rpm", RPM_POLICY);
        write_policy(dir, "acme", "tpm", TPM_POLICY);
        write_policy(dir, "acme", "breaker", BREAKER_POLICY);
    });
    let owner = ::shards::Partitioner::new(server.shard_count())
        .shard_of("acme")
        .index();
    let mut client = Client::connect(loopback(base + owner as u16));

    for n in 0..5 {
        assert_eq!(chosen(&mut client, n, "rpm", "a1").0, "a1");
    }
    let (name, d) = chosen(&mut client, 5, "rpm", "a1");
    assert_eq!(name, "a2");
    assert!(
        explained(&d, "candidate a1: not usable (AtRpmLimit)"),
        "{d}"
    );

    assert_eq!(chosen(&mut client, 10, "tpm", "b1").0, "b1");
    let usage = json!({"usage": {"input_tokens": 800, "output_tokens": 200}});
    result(&mut client, 10, "b1", usage);
    let (name, d) = chosen(&mut client, 11, "tpm", "b1");
    assert_eq!(name, "b2");
    assert!(
        explained(&d, "candidate b1: not usable (AtTpmLimit)"),
        "{d}"
    );
    result(&mut client, 11, "b2", json!({"status": "rate_limited"}));
    let (status, body) = decide(&mut client, 12, "tpm", "b1");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "decision_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 by provider rate limits or cooldowns"),
        "{message}"
    );

    result(
        &mut client,
        20,
        "c1",
        json!({"status": "error", "error_code": "429"}),
    );
    let (name, d) = chosen(&mut client, 21, "breaker", "c1");
    assert_eq!(
        name, "c1",
        "a 429 is no failure, and cooldown_ms 0 holds nothing: {d}"
    );
    result(
        &mut client,
        22,
        "c1",
        json!({"status": "error", "error_code": "500"}),
    );
    let (name, d) = chosen(&mut client, 23, "breaker", "c1");
    assert_eq!(name, "c2");
    assert!(
        explained(&d, "candidate c1: not usable (CircuitOpen)"),
        "{d}"
    );
    server.stop().unwrap();
}

/// `rpm` holds for the node, not per shard: requests preferring a1 on every shard's
/// port take it five times in all, then go to a2 (with two shards, a count per shard
/// would have let ten through).
#[test]
fn rpm_holds_over_all_shards() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("limits-rpm", "", |dir| {
        write_policy(dir, "acme", "rpm", RPM_POLICY);
    });
    let shards = server.shard_count();
    let mut clients: Vec<Client> = (0..shards)
        .map(|i| Client::connect(loopback(base + i as u16)))
        .collect();
    let mut a1 = 0;
    for n in 0..20u32 {
        let client = &mut clients[n as usize % shards];
        if chosen(client, n, "rpm", "a1").0 == "a1" {
            a1 += 1;
        }
    }
    assert_eq!(a1, 5, "a1's rpm is 5, over {shards} shard(s)");
    server.stop().unwrap();
}
