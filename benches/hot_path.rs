//! The hot path, one primitive per bench: decide on the weighted, sticky-hit and fallback
//! paths, and with `least_latency` over 8 measured providers (issue target ≤ 250 ns median); decode+validate a typical request; encode the response; and the whole
//! decode → decide → encode. Targets (2-core VM): decide ≤ 200 ns median for a
//! 4-provider weighted policy; decode → decide → encode ≤ 2 µs. See perf/README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardline::answer;
use shardline::contract::{decode_decide, DecideRequest, Headers};
use shardline::decide::{decide, Now, Observed, Outcome, ShardState, StateConfig};
use shardline::policy::{parse_policy, RoutingTable};

#[path = "fixtures/policies.rs"]
mod fixtures;
use fixtures::{BUDGETED, LEAST_LATENCY_8, STICKY, TYPICAL, WEIGHTED};

const FALLBACK: &str = r#"{"version":"1.0","providers":[
  {"name":"openai","weight":70},{"name":"anthropic","weight":30}],
  "fallbacks":[{"when":{"status":["timeout","5xx"]},"retry":2,"to":"anthropic"},
               {"when":{"status":["rate_limited"]},"retry":1,"to":"local_llm"}],
  "circuit_breaker":{"enabled":true}}"#;

fn table() -> RoutingTable {
    let p = |id, doc: &str| parse_policy("acme", id, id, doc.as_bytes()).expect("policy");
    RoutingTable::from_policies(vec![
        p("weighted", WEIGHTED),
        p("sticky", STICKY),
        p("fallback", FALLBACK),
        p("least_latency", LEAST_LATENCY_8),
        p("budgeted", BUDGETED),
    ])
    .expect("table")
}

fn with_policy(body: &[u8], policy: &str) -> Vec<u8> {
    String::from_utf8_lossy(body)
        .replace("\"weighted\"", &format!("\"{policy}\""))
        .into_bytes()
}

fn decide_paths(c: &mut Criterion) {
    let table = table();
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let bodies = [
        ("decide/weighted", with_policy(TYPICAL, "weighted")),
        ("decide/sticky_hit", with_policy(TYPICAL, "sticky")),
    ];
    for (name, body) in &bodies {
        let req = decode_decide(body, &Headers::default()).expect("request");
        let mut t = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                let now = Now {
                    mono_ns: t,
                    unix_ms: 1,
                };
                black_box(decide(&table, &mut state, black_box(&req), now).is_ok())
            })
        });
    }
    least_latency(c, &table, &mut state);
    budgeted(c, &table, &mut state);
    let body = with_policy(TYPICAL, "fallback");
    let mut req: DecideRequest = decode_decide(&body, &Headers::default()).expect("request");
    req.attempt = Some(shardline::contract::Attempt {
        previous_provider: "openai".into(),
        status: "503".into(),
        count: 3,
    });
    c.bench_function("decide/fallback", |b| {
        b.iter(|| {
            black_box(
                decide(
                    &table,
                    &mut state,
                    black_box(&req),
                    Now {
                        mono_ns: 1,
                        unix_ms: 1,
                    },
                )
                .is_ok(),
            )
        })
    });
}

/// `least_latency` with every provider measured (one result each, latencies spread), so
/// both sampled candidates score from their estimates and in-flight counts.
fn least_latency(c: &mut Criterion, table: &RoutingTable, state: &mut ShardState) {
    let slot = table.lookup("acme", "least_latency").expect("policy");
    for (i, p) in table.policy(slot).providers.iter().enumerate() {
        let observed = Observed {
            outcome: Some(Outcome::Success),
            latency_ms: Some(200.0 + 50.0 * i as f64),
            cost: None,
        };
        state.record_result(table, "acme", &p.name, observed, 1);
    }
    let body = with_policy(TYPICAL, "least_latency");
    let req = decode_decide(&body, &Headers::default()).expect("request");
    let mut t = 1u64;
    c.bench_function("decide/least_latency_8", |b| {
        b.iter(|| {
            t += 1_000;
            let now = Now {
                mono_ns: t,
                unix_ms: 1,
            };
            black_box(decide(table, state, black_box(&req), now).is_ok())
        })
    });
}

/// A decision under two budgets (admission in both ledgers, the candidate filter, the
/// reservation) and its result's settlement: the whole per-call cost of budgets.
fn budgeted(c: &mut Criterion, table: &RoutingTable, state: &mut ShardState) {
    let body = with_policy(TYPICAL, "budgeted");
    let req = decode_decide(&body, &Headers::default()).expect("request");
    let mut t = 1u64;
    c.bench_function("decide/budgeted_and_settled", |b| {
        b.iter(|| {
            t += 1_000;
            let now = Now {
                mono_ns: t,
                unix_ms: 1_800_000_000_000,
            };
            let d = decide(table, state, black_box(&req), now).expect("decision");
            let name = &table.policy(d.slot).provider(d.provider).name;
            let call = ("acme", Some(&*req.request_id), &**name);
            black_box(state.settle_budget(table, call, (Some(0.002), Some(300))))
        })
    });
}

fn codec(c: &mut Criterion) {
    let table = table();
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    c.bench_function("decode/typical", |b| {
        b.iter(|| black_box(decode_decide(black_box(TYPICAL), &Headers::default()).is_ok()))
    });
    let req = decode_decide(TYPICAL, &Headers::default()).expect("request");
    let outcome = decide(
        &table,
        &mut state,
        &req,
        Now {
            mono_ns: 1,
            unix_ms: 1,
        },
    );
    let mut out = Vec::with_capacity(1024);
    c.bench_function("encode/decision", |b| {
        b.iter(|| {
            out.clear();
            answer::encode_outcome(&mut out, &table, black_box(&req), &outcome);
            black_box(out.len())
        })
    });
    let mut t = 0u64;
    c.bench_function("round_trip/decode_decide_encode", |b| {
        b.iter(|| {
            t += 1;
            let req = decode_decide(black_box(TYPICAL), &Headers::default()).expect("request");
            let outcome = decide(
                &table,
                &mut state,
                &req,
                Now {
                    mono_ns: t,
                    unix_ms: 1,
                },
            );
            out.clear();
            answer::encode_outcome(&mut out, &table, &req, &outcome);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, decide_paths, codec);
criterion_main!(benches);
