//! A policy's `balance` strategy over HTTP, black-box: decisions and posted results on a
//! real server, and the split moving with what the results say.

mod support;

use serde_json::{json, Value};
use support::*;

/// Two providers of equal weight, nothing declared: only results tell them apart.
const LEARNING_POLICY: &str = r#"{"version":"1.0",
"providers":[{"name":"fast","weight":50},{"name":"slow","weight":50}],
"balance":{"strategy":"least_latency","explore_ratio":0.05,"half_life_ms":10000}}"#;

fn decide(client: &mut Client, n: u32, explain: bool) -> Value {
    let body = json!({
        "request_id": format!("r-{n}"),
        "tenant_id": "acme",
        "policy_id": "learning",
        "task": {"type": "chat", "payload_ref": "p"},
        "explain": explain,
    });
    let resp = client.request(
        "POST",
        "/v1/decide",
        &[],
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json()["decision"].clone()
}

/// Posts a successful result of `provider` taking `latency_ms`.
fn result(client: &mut Client, n: u32, provider: &str, latency_ms: u32) {
    let body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "request_id": format!("r-{n}"),
        "status": "success",
        "provider_id": provider,
        "tenant_id": "acme",
        "latency_ms": latency_ms,
        "cost": 0.002,
    });
    post_result(client, &body);
}

fn latency_of(provider: &str) -> u32 {
    match provider {
        "fast" => 100,
        "slow" => 400,
        other => panic!("unexpected provider {other}"),
    }
}

/// Before any result both providers are drawn; once results say one is four times
/// slower, it gets less than a fifth of the decisions, and `explain` shows the two
/// sampled candidates with their scores.
#[test]
fn least_latency_moves_the_split_with_posted_results() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("balance", "", |dir| {
        write_policy(dir, "acme", "learning", LEARNING_POLICY)
    });
    // Decided and reported on the tenant's owner shard, where results land.
    let owner = ::shards::Partitioner::new(server.shard_count())
        .shard_of("acme")
        .index();
    let mut client = Client::connect(loopback(base + owner as u16));

    let mut before = [0u32; 2];
    for n in 0..100 {
        let d = decide(&mut client, n, false);
        before[usize::from(d["provider_id"] == "slow")] += 1;
    }
    assert!(before.iter().all(|&c| c >= 20), "unmeasured: {before:?}");

    // Each call's result comes back before the next decision, as a gateway with one call
    // at a time reports them.
    let mut after = [0u32; 2];
    for n in 100..400 {
        let d = decide(&mut client, n, false);
        let provider = d["provider_id"].as_str().unwrap().to_owned();
        if n >= 150 {
            after[usize::from(provider == "slow")] += 1;
        }
        result(&mut client, n, &provider, latency_of(&provider));
    }
    assert!(after[1] * 5 < after[0] + after[1], "measured: {after:?}");

    let explained = (400..440)
        .map(|n| decide(&mut client, n, true))
        .flat_map(|d| d["explanation"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(str::to_owned))
        .find(|s| s.starts_with("balance least_latency: sampled"))
        .expect("a two-choice explanation");
    assert!(explained.contains("fast (score") && explained.contains("slow (score"));
    server.stop().unwrap();
}
