//! The lifecycle's one choice — answer here, hand to the owner, call stages — on two
//! simulated shards sharing one routing table; time is injected.

use super::*;
use crate::contract::{decode_decide, Headers};
use crate::policy::parse_policy;

const PLAIN: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":60},{"name":"anthropic","weight":40}]}"#;
const STICKY: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":50},{"name":"anthropic","weight":50}],"sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"}}"#;
const STAGED: &str = r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],"pre":[{"id":"normalize_text","mode":"required"}]}"#;
const NOW: Now = Now {
    mono_ns: 1_000_000_000,
    unix_ms: 1_700_000_000_000,
};

/// Tenant `t0` is owned by shard 0, `t1` by shard 1.
fn owner_of(tenant: &str) -> u16 {
    u16::from(tenant.ends_with('1'))
}

fn table() -> RoutingTable {
    let mut policies = Vec::new();
    for tenant in ["t0", "t1"] {
        for (id, doc) in [("default", PLAIN), ("sticky", STICKY), ("staged", STAGED)] {
            policies.push(parse_policy(tenant, id, id, doc.as_bytes()).expect("valid"));
        }
    }
    RoutingTable::from_policies(policies).expect("a table")
}

fn config() -> ShardConfig {
    ShardConfig {
        state: StateConfig {
            sticky_entries: 64,
            seed: 7,
        },
        idempotency_entries: 64,
        idempotency_bytes: 1 << 20,
        idempotency_ttl_ms: 60_000,
        results_dedup_bytes: 1 << 20,
        results_seen_ttl_ms: 60_000,
    }
}

fn core(shard: u16, table: &RoutingTable) -> ShardCore {
    let placement = Placement::new(Peer(u32::from(shard)), 2, |t| Peer(u32::from(owner_of(t))));
    ShardCore::new(placement, table, config(), NOW.mono_ns)
}

fn body(tenant: &str, policy: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"request_id":"r-1","tenant_id":"{tenant}","policy_id":"{policy}","task":{{"type":"chat","payload_ref":"p"}}{extra}}}"#
    )
    .into_bytes()
}

fn step(core: &mut ShardCore, table: &RoutingTable, body: &[u8], out: &mut Vec<u8>) -> Step {
    let req = decode_decide(body, &Headers::default()).expect("valid request");
    core.decide(table, &req, NOW, out)
}

fn decided(step: Step) -> Decided {
    match step {
        Step::Answered(d) => d,
        other => panic!("not answered: {other:?}"),
    }
}

/// A shard decides a tenant it does not own by itself.
#[test]
fn any_shard_decides_any_tenant() {
    let table = table();
    for shard in [0, 1] {
        let mut core = core(shard, &table);
        for tenant in ["t0", "t1"] {
            let mut out = Vec::new();
            let d = decided(step(
                &mut core,
                &table,
                &body(tenant, "default", ""),
                &mut out,
            ));
            assert_eq!(d.answered.status, 200, "{}", String::from_utf8_lossy(&out));
            assert!(matches!(d.answered.counted, Counted::Decided(_)));
        }
    }
}

/// An idempotency key goes to its tenant's owner, which replays its first answer.
#[test]
fn idempotent_requests_cross_to_the_owner_and_replay_there() {
    let table = table();
    let (mut owner, mut other) = (core(1, &table), core(0, &table));
    let keyed = body("t1", "default", r#","idempotency_key":"k-1""#);
    let mut out = Vec::new();
    assert_eq!(
        step(&mut other, &table, &keyed, &mut out),
        Step::NeedsOwner { owner: 1 }
    );
    assert!(out.is_empty(), "nothing written for the owner's request");
    let first = decided(step(&mut owner, &table, &keyed, &mut out));
    assert_eq!(first.answered.status, 200);
    let mut again = Vec::new();
    let replayed = decided(step(&mut owner, &table, &keyed, &mut again));
    assert_eq!(replayed.answered.counted, Counted::Replayed);
    assert_eq!(again, out, "the first answer, byte for byte");
}

/// A sticky policy's session is decided on any shard, and every shard gives it the same
/// provider.
#[test]
fn sessions_are_decided_anywhere_and_agree() {
    let table = table();
    let (mut owner, mut other) = (core(1, &table), core(0, &table));
    for user in 0..50 {
        let named = body(
            "t1",
            "sticky",
            &format!(r#","metadata":{{"user_id":"u-{user}"}}"#),
        );
        let (mut a, mut b) = (Vec::new(), Vec::new());
        decided(step(&mut other, &table, &named, &mut a));
        decided(step(&mut owner, &table, &named, &mut b));
        let provider = |out: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(out).expect("JSON");
            v["decision"]["provider_id"].clone()
        };
        assert_eq!(provider(&a), provider(&b), "user {user}");
    }
}

/// With an extension transport, a staged policy asks for its stages on any shard;
/// without, the stages are unavailable and the answer is made at once.
#[test]
fn staged_policies_call_stages_on_the_landing_shard() {
    let table = table();
    let mut other = core(0, &table);
    let staged = body("t1", "staged", "");
    let mut out = Vec::new();
    let d = decided(step(&mut other, &table, &staged, &mut out));
    assert_eq!(
        d.answered.counted,
        Counted::Failed(ErrorCode::ExtensionUnavailable)
    );
    other.set_extensions(true);
    let mut out = Vec::new();
    assert_eq!(
        step(&mut other, &table, &staged, &mut out),
        Step::CallStages
    );
    assert!(out.is_empty());
}

/// Results go to the owner, which counts an id once.
#[test]
fn results_cross_to_the_owner_and_count_once() {
    let table = table();
    let (mut owner, mut other) = (core(1, &table), core(0, &table));
    let body = br#"{"assignment_id":"00000000-0000-4000-8000-000000000001","request_id":"r-1","status":"error","provider_id":"openai","tenant_id":"t1","latency_ms":120}"#;
    let result = ExecResult::decode(body, &Headers::default()).expect("valid result");
    let mut out = Vec::new();
    assert_eq!(
        other.result(&table, &result, NOW, &mut out),
        Step::NeedsOwner { owner: 1 }
    );
    let first = decided(owner.result(&table, &result, NOW, &mut out));
    assert!(matches!(
        first.answered.counted,
        Counted::ResultAccepted { .. }
    ));
    assert_eq!(first.answered.status, 202);
    let mut again = Vec::new();
    let dup = decided(owner.result(&table, &result, NOW, &mut again));
    assert_eq!(dup.answered.counted, Counted::ResultDuplicate);
    assert_eq!(again, br#"{"ok":true,"duplicate":true}"#);
}

/// A shadow call's results (`"shadow": true`) are counted apart and leave the provider's
/// breaker, averages, usage and cooldown as they were, however bad they are; the same
/// result without the mark does move them.
#[test]
fn shadow_results_leave_the_provider_state_unchanged() {
    let table = table();
    let mut owner = core(1, &table);
    let slot = table.lookup("t1", "default").expect("policy");
    let before = format!("{:?}", owner.state.policy(slot).providers);
    for (i, status) in ["error", "timeout", "rate_limited", "success"]
        .iter()
        .enumerate()
    {
        let body = format!(
            r#"{{"assignment_id":"00000000-0000-4000-8000-00000000000{i}","status":"{status}","provider_id":"openai","tenant_id":"t1","latency_ms":9000,"cost":5,"usage":{{"input_tokens":100000}},"error_code":"429","shadow":true}}"#
        );
        let result = ExecResult::decode(body.as_bytes(), &Headers::default()).expect("valid");
        assert!(result.shadow);
        let mut out = Vec::new();
        let d = decided(owner.result(&table, &result, NOW, &mut out));
        assert_eq!(d.answered.counted, Counted::ResultShadow(result.status));
        assert_eq!(d.answered.status, 202);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains(r#""shadow":true"#));
    }
    assert_eq!(format!("{:?}", owner.state.policy(slot).providers), before);
    let body = br#"{"assignment_id":"00000000-0000-4000-8000-000000000009","status":"error","provider_id":"openai","tenant_id":"t1","latency_ms":9000}"#;
    let result = ExecResult::decode(body, &Headers::default()).expect("valid");
    assert!(!result.shadow);
    decided(owner.result(&table, &result, NOW, &mut Vec::new()));
    assert_ne!(format!("{:?}", owner.state.policy(slot).providers), before);
}
