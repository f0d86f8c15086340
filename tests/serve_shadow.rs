//! Shadow traffic over HTTP, black-box: about `ratio` of the decisions carry
//! `decision.shadow`, never naming the primary; a shadow call's result posted to
//! `/v1/results` moves no breaker and is counted apart, where the same result without
//! the mark opens the circuit.

mod support;

use serde_json::{json, Value};
use support::*;

const SHADOW_POLICY: &str = r#"{"version":"1.0",
"providers":[{"name":"s1","weight":50},{"name":"s2","weight":50},
{"name":"new_model","weight":0}],
"circuit_breaker":{"enabled":true,"failure_threshold":1,"timeout_ms":60000},
"shadow":[{"provider":"new_model","ratio":0.1}]}"#;

/// Decides for acme's `shadow` policy, preferring `first` (`order`), with `explain`.
fn decide(client: &mut Client, n: u32, first: &str) -> Value {
    let (status, body) = decide_preferring(client, n, "shadow", first);
    assert_eq!(status, 200, "{body}");
    body["decision"].clone()
}

/// Posts an `error` result for s1, marked `shadow` or not; returns the answer.
fn fail_s1(client: &mut Client, n: u32, shadow: bool) -> Value {
    let mut body = json!({
        "assignment_id": format!("00000000-0000-4000-8000-{n:012x}"),
        "status": "error",
        "error_code": "500",
        "provider_id": "s1",
        "tenant_id": "acme",
        "latency_ms": 30000,
        "cost": 9.0,
    });
    if shadow {
        body["shadow"] = json!(true);
    }
    post_result(client, &body)
}

fn circuit_open(d: &Value) -> bool {
    explained(d, "candidate s1: not usable (CircuitOpen)")
}

/// `name{…status="error"…,shard="all"…}` from the metrics page, 0 when absent.
fn counted(addr: std::net::SocketAddr, name: &str) -> u64 {
    let resp = Client::connect(addr).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8(resp.body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(r#"shard="all""#) && l.contains(r#"status="error""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// 2 000 decisions on the tenant's owner shard carry `decision.shadow` 10 % ± 3 points of
/// the time, always `new_model`, never the primary; shadow failures of s1 leave its
/// circuit closed (and are counted apart), one unmarked failure opens it.
#[test]
fn shadow_traffic_over_http() {
    let _serial = serial();
    let (_dir, server, base) = start_with_shard_ports("shadow", "", |dir| {
        write_policy(dir, "acme", "shadow", SHADOW_POLICY);
    });
    let owner = ::shards::Partitioner::new(server.shard_count())
        .shard_of("acme")
        .index();
    let addr = loopback(base + owner as u16);
    let mut client = Client::connect(addr);

    let n = 2_000;
    let mut shadows = 0;
    for i in 0..n {
        let d = decide(&mut client, i, "s1");
        let Some(shadow) = d.get("shadow") else {
            continue;
        };
        shadows += 1;
        assert_eq!(shadow, &json!({"provider_id": "new_model"}), "{d}");
        assert_ne!(d["provider_id"], "new_model");
        let steps = d["explanation"].to_string();
        assert!(steps.contains("shadow new_model added (ratio 0.1)"), "{d}");
    }
    let share = f64::from(shadows) / f64::from(n);
    assert!((0.07..=0.13).contains(&share), "shadow share {share}");

    for i in 0..3 {
        let answer = fail_s1(&mut client, 100 + i, true);
        assert_eq!(answer["shadow"], true, "{answer}");
        assert_eq!(answer["policies_updated"], 0, "{answer}");
    }
    let d = decide(&mut client, 5_000, "s1");
    assert_eq!(
        d["provider_id"], "s1",
        "shadow failures opened the circuit: {d}"
    );
    assert!(!circuit_open(&d), "{d}");
    let ops = server.ops_addr().unwrap_or(addr);
    assert_eq!(counted(ops, "shardline_results_shadow_total"), 3);
    assert_eq!(counted(ops, "shardline_results_total"), 0);

    fail_s1(&mut client, 200, false);
    let d = decide(&mut client, 5_001, "s1");
    assert_eq!(d["provider_id"], "s2", "{d}");
    assert!(circuit_open(&d), "{d}");
    assert_eq!(counted(ops, "shardline_results_total"), 1);
    server.stop().unwrap();
}
