//! The policy parser. Properties: a document either loads or is refused with problems
//! (never a panic; `Policy::check` asserts the compiled model's invariants on every load),
//! and a policy that loads builds a routing table and decides without panicking, choosing
//! one of its own providers.

use std::borrow::Cow;

use shardline::contract::{Attempt, Constraints, DecideRequest, Metadata, Scalar, Task};
use shardline::decide::{decide, Now, ShardState, StateConfig};
use shardline::policy::{parse_policy, RoutingTable};

use super::{ensure, Checked, Target};
use crate::corpus::Corpus;
use crate::json::mutate_document;
use crate::rng::Rng;

const KEYS: &[&str] = &[
    "version",
    "policy_id",
    "tenant_id",
    "providers",
    "name",
    "weight",
    "weights",
    "priority",
    "expected_latency_ms",
    "cost",
    "capabilities",
    "fallbacks",
    "fallback",
    "provider",
    "conditions",
    "when",
    "to",
    "retry",
    "backoff",
    "base_ms",
    "max_ms",
    "sticky",
    "enabled",
    "session_key",
    "ttl",
    "ttl_seconds",
    "ttl_sec",
    "pre",
    "validators",
    "post",
    "id",
    "mode",
    "on_fail",
    "config",
    "timeout_ms",
    "circuit_breaker",
    "failure_threshold",
    "error_rate_threshold",
    "half_open_max_calls",
    "rate_limit",
    "requests_per_second",
    "burst",
    "status",
    "var",
    "==",
    "in",
    ">=",
    "openai",
    "anthropic",
];

pub const TARGET: Target = Target {
    name: "policy",
    what: "policy document parser (core/src/policy/parse.rs)",
    generate,
    check,
    dictionary: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b"\"",
        b"\"version\":\"1.0\",",
        b"\"weights\":{\"a\":0.5},",
        b"\"providers\":[{\"name\":\"a\",\"weight\":100}],",
        b"\"10m\"",
        b"\"0s\"",
        b"\"99999h\"",
        b"{\"var\":\"status\"}",
        b"null",
        b"1e400",
    ],
};

fn generate(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let seed = rng.pick(&corpus.policies).clone();
    if rng.one_in(4) {
        return seed;
    }
    mutate_document(rng, &seed, KEYS)
}

fn check(input: &[u8]) -> Checked {
    let policy = match parse_policy("acme", "default", "fuzz.json", input) {
        Ok(policy) => policy,
        Err(problems) => {
            ensure(!problems.is_empty(), || {
                "refused without a problem".to_owned()
            })?;
            let first = problems[0].message.split([' ', ':']).next().unwrap_or("");
            return Ok(format!("Err({})", first));
        }
    };
    let mut rng = Rng::from_bytes(input);
    let providers = policy.providers.len();
    let table = RoutingTable::from_policies_fixed_hash(vec![policy])
        .map_err(|e| format!("a loaded policy does not build a table: {e:?}"))?;
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    for n in 0..4u64 {
        let attempt = rng.one_in(2).then(|| Attempt {
            previous_provider: Cow::Borrowed(*rng.pick(&["openai", "anthropic", "local_llm"])),
            status: Cow::Borrowed(*rng.pick(&["timeout", "error", "rate_limited"])),
            count: rng.range(1, 5) as u32,
        });
        let request = request(attempt, rng.below(3));
        let now = Now {
            mono_ns: n * 1_000_000_000,
            unix_ms: 1_767_225_600_000 + n,
        };
        if let Ok(decision) = decide(&table, &mut state, &request, now) {
            ensure((decision.provider.0 as usize) < providers, || {
                format!("decided provider {:?} of {providers}", decision.provider)
            })?;
        }
    }
    Ok("Ok".to_owned())
}

fn request(attempt: Option<Attempt<'static>>, user: usize) -> DecideRequest<'static> {
    DecideRequest {
        request_id: Cow::Borrowed("fuzz-1"),
        tenant_id: Cow::Borrowed("acme"),
        trace_id: None,
        traceparent: None,
        task: Task {
            kind: "chat".into(),
            payload_ref: None,
            payload: None,
        },
        policy_id: Cow::Borrowed("default"),
        constraints: Constraints::default(),
        metadata: Metadata {
            entries: vec![
                ("user_id".into(), Scalar::Str(format!("u-{user}").into())),
                ("session_id".into(), Scalar::Str("s-1".into())),
            ],
        },
        attempt,
        push_assignment: false,
        assignment_subject: None,
        options: None,
        deadline_unix_ms: None,
        correlation: None,
        idempotency_key: None,
        explain: true,
    }
}
