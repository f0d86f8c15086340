//! Decision-order tests (SPEC §5), on policies built by hand so that the engine is tested
//! apart from the parser. Time is injected; the RNG is seeded.

use std::borrow::Cow;

use super::*;
use crate::contract::{Attempt, Constraints, ErrorCode, Metadata, Reason, Scalar, Task};
use crate::policy::*;

const MS: u64 = 1_000_000;

/// One shard's table and state, for tests that decide and feed results over time.
pub(super) struct Shard {
    pub(super) table: RoutingTable,
    pub(super) state: ShardState,
}

impl Shard {
    pub(super) fn new(policy: Policy) -> Self {
        policy.check();
        let table = RoutingTable::from_policies(vec![policy]).expect("table");
        let state = ShardState::new(&table, StateConfig::default(), 0);
        Shard { table, state }
    }
}

pub(super) fn provider(name: &str, weight: u32) -> Provider {
    Provider {
        name: name.into(),
        weight: weight * 10_000,
        expected_latency_ms: None,
        cost: None,
        capabilities: Box::new([]),
        limits: ProviderLimits::default(),
    }
}

pub(super) fn policy(tenant: &str, id: &str, providers: Vec<Provider>) -> Policy {
    let providers: Box<[Provider]> = providers.into();
    Policy {
        tenant: tenant.into(),
        id: id.into(),
        version: "1.0".into(),
        weights: WeightTable::new(&providers),
        providers,
        fallbacks: Box::new([]),
        legacy_fallback: None,
        sticky: None,
        circuit_breaker: None,
        rate_limit: None,
        balance: Balance::default(),
        pre: Box::new([]),
        validators: Box::new([]),
        post: Box::new([]),
        timeout_ms: None,
        cooldown_ms: COOLDOWN_MS_DEFAULT,
        shadow: Box::new([]),
        budgets: Box::new([]),
    }
}

fn rule(when: Vec<Clause>, retry: u32, to: u8) -> FallbackRule {
    FallbackRule {
        when: Condition {
            clauses: when.into(),
        },
        retry,
        to: ProviderIdx(to),
        backoff: None,
    }
}

fn status_in(values: &[&str]) -> Clause {
    Clause {
        op: Op::In,
        lhs: Operand::Var(ContextVar::Status),
        rhs: Operand::List(values.iter().map(|s| Literal::Str((*s).into())).collect()),
    }
}

pub(super) fn request<'a>(tenant: &'a str, policy: &'a str) -> DecideRequest<'a> {
    DecideRequest {
        request_id: Cow::Borrowed("r-1"),
        tenant_id: Cow::Borrowed(tenant),
        trace_id: None,
        traceparent: None,
        task: Task {
            kind: Cow::Borrowed("chat"),
            payload_ref: Some(Cow::Borrowed("s3://x")),
            payload: None,
        },
        policy_id: Cow::Borrowed(policy),
        constraints: Constraints::default(),
        metadata: Metadata::default(),
        attempt: None,
        push_assignment: false,
        assignment_subject: None,
        options: None,
        deadline_unix_ms: None,
        correlation: None,
        idempotency_key: None,
        explain: false,
    }
}

fn with_user<'a>(mut req: DecideRequest<'a>, key: &'a str, user: &'a str) -> DecideRequest<'a> {
    req.metadata
        .entries
        .push((Cow::Borrowed(key), Scalar::Str(Cow::Borrowed(user))));
    req
}

fn attempt<'a>(
    mut req: DecideRequest<'a>,
    prev: &'a str,
    status: &'a str,
    count: u32,
) -> DecideRequest<'a> {
    req.attempt = Some(Attempt {
        previous_provider: prev.into(),
        status: status.into(),
        count,
    });
    req
}

struct World {
    table: RoutingTable,
    state: ShardState,
}

/// The wall clock at `t_ns` = 0 in `World`'s decisions; it moves with `t_ns`.
const UNIX_MS_AT_0: u64 = 1_000_000;

impl World {
    fn new(policies: Vec<Policy>) -> Self {
        World::with_seed(policies, 1)
    }

    /// A shard whose seed (weighted draws, sticky-table fingerprints) is `seed`.
    fn with_seed(policies: Vec<Policy>, seed: u64) -> Self {
        policies.iter().for_each(Policy::check);
        let table = RoutingTable::from_policies(policies).expect("table");
        let state = ShardState::new(
            &table,
            StateConfig {
                sticky_entries: 1024,
                seed,
            },
            0,
        );
        World { table, state }
    }

    fn decide(&mut self, req: &DecideRequest<'_>, t_ns: u64) -> Result<Decision, DecideError> {
        let now = Now {
            mono_ns: t_ns,
            unix_ms: UNIX_MS_AT_0 + t_ns / MS,
        };
        decide(&self.table, &mut self.state, req, now)
    }

    fn pick(&mut self, req: &DecideRequest<'_>, t_ns: u64) -> (String, Reason) {
        let now = Now {
            mono_ns: t_ns,
            unix_ms: UNIX_MS_AT_0 + t_ns / MS,
        };
        self.pick_at(req, now)
    }

    fn pick_at(&mut self, req: &DecideRequest<'_>, now: Now) -> (String, Reason) {
        let d = decide(&self.table, &mut self.state, req, now).expect("decision");
        let name = self
            .table
            .policy(d.slot)
            .provider(d.provider)
            .name
            .to_string();
        (name, d.reason)
    }

    fn result(&mut self, provider: &str, outcome: Outcome, latency_ms: f64, t_ns: u64) {
        let observed = Observed {
            outcome: Some(outcome),
            latency_ms: Some(latency_ms),
            cost: None,
        };
        self.state
            .record_result(&self.table, "acme", provider, observed, t_ns);
    }
}

fn breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 2,
        timeout_ms: 1_000,
        ..BreakerConfig::default()
    }
}

/// Step 1: an unknown tenant or policy id is `policy_not_found`, naming both.
#[test]
fn unknown_policy_is_not_found() {
    let mut w = World::new(vec![policy(
        "acme",
        "default",
        vec![provider("openai", 100)],
    )]);
    let err = w.decide(&request("acme", "gold"), 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyNotFound);
    assert_eq!(err.to_string(), "tenant acme has no policy 'gold'");
    let err = w.decide(&request("globex", "default"), 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyNotFound);
}

/// Step 2: the token bucket refuses past its burst with `retry_after_ms`, and refills.
#[test]
fn rate_limit_refuses_then_refills() {
    let mut p = policy("acme", "default", vec![provider("openai", 100)]);
    p.rate_limit = Some(RateLimit {
        requests_per_second: 4,
        burst: 2,
    });
    let mut w = World::new(vec![p]);
    let req = request("acme", "default");
    assert!(w.decide(&req, 0).is_ok());
    assert!(w.decide(&req, 0).is_ok());
    let err = w.decide(&req, 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert_eq!(err.retry_after_ms(), Some(250));
    assert_eq!(
        w.decide(&req, 100 * MS).unwrap_err().retry_after_ms(),
        Some(150)
    );
    assert!(w.decide(&req, 250 * MS).is_ok());
}

/// Step 3: a deadline already past is `deadline_exceeded`; a future one is fine.
#[test]
fn past_deadline_is_refused() {
    let mut w = World::new(vec![policy(
        "acme",
        "default",
        vec![provider("openai", 100)],
    )]);
    let mut req = request("acme", "default");
    req.deadline_unix_ms = Some(999_000);
    let err = w.decide(&req, 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
    assert!(err.to_string().contains("1000 ms ago"), "{err}");
    req.deadline_unix_ms = Some(1_000_001);
    assert!(w.decide(&req, 0).is_ok());
}

/// Step 8: over 100k draws with a fixed seed, each provider's share is within 1 point
/// (absolute) of its weight; a weight-0 provider is never drawn.
#[test]
fn weighted_draw_distribution() {
    let providers = vec![
        provider("openai", 50),
        provider("anthropic", 30),
        provider("local_llm", 0),
        provider("mistral", 15),
        provider("cohere", 5),
    ];
    let mut w = World::new(vec![policy("acme", "default", providers)]);
    let req = request("acme", "default");
    let mut counts = std::collections::HashMap::<String, u32>::new();
    for i in 0..100_000 {
        let (name, reason) = w.pick(&req, i);
        assert_eq!(reason, Reason::Weighted);
        *counts.entry(name).or_default() += 1;
    }
    for (name, pct) in [
        ("openai", 50.0),
        ("anthropic", 30.0),
        ("mistral", 15.0),
        ("cohere", 5.0),
    ] {
        let share = f64::from(counts[name]) / 1_000.0;
        assert!((share - pct).abs() < 1.0, "{name}: {share}% vs {pct}%");
    }
    assert!(!counts.contains_key("local_llm"));
}

/// Step 5 + 8: a filtered candidate set renormalises the remaining weights.
#[test]
fn weighted_draw_renormalises_over_candidates() {
    let providers = vec![
        provider("openai", 50),
        provider("anthropic", 30),
        provider("mistral", 20),
    ];
    let mut w = World::new(vec![policy("acme", "default", providers)]);
    let mut req = request("acme", "default");
    req.constraints.exclude.push("openai".into());
    let mut anthropic = 0;
    for i in 0..100_000 {
        let (name, _) = w.pick(&req, i);
        assert_ne!(name, "openai");
        anthropic += u32::from(name == "anthropic");
    }
    let share = f64::from(anthropic) / 1_000.0;
    assert!(
        (share - 60.0).abs() < 1.0,
        "anthropic {share}% of the renormalised 30/50"
    );
}

/// Step 5: `exclude`, `require`, `max_latency_ms` and `max_cost` filter candidates; an
/// unknown figure does not meet a ceiling.
#[test]
fn constraints_filter_candidates() {
    let mut fast = provider("fast", 50);
    fast.expected_latency_ms = Some(100.0);
    fast.cost = Some(0.01);
    fast.capabilities = vec!["tools".into()].into();
    let mut cheap = provider("cheap", 50);
    cheap.expected_latency_ms = Some(900.0);
    cheap.cost = Some(0.001);
    cheap.capabilities = vec!["tools".into(), "vision".into()].into();
    let unknown = provider("unknown", 50);
    let mut w = World::new(vec![policy("acme", "default", vec![fast, cheap, unknown])]);
    type Set = fn(&mut Constraints<'static>);
    let cases: [(Set, &str); 3] = [
        (|c| c.max_latency_ms = Some(200.0), "fast"),
        (|c| c.max_cost = Some(0.005), "cheap"),
        (|c| c.require.push("vision".into()), "cheap"),
    ];
    for (set, want) in cases {
        let mut req = request("acme", "default");
        set(&mut req.constraints);
        for i in 0..50 {
            assert_eq!(w.pick(&req, i).0, want);
        }
    }
    let mut req = request("acme", "default");
    req.constraints.exclude = vec!["fast".into(), "cheap".into(), "unknown".into()];
    let err = w.decide(&req, 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DecisionFailed);
    assert!(
        err.to_string().contains("3 of 3 excluded by constraints"),
        "{err}"
    );
}

/// Step 5: an open circuit removes its provider from the weighted draw.
#[test]
fn open_circuit_is_not_drawn() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 90), provider("anthropic", 10)],
    );
    p.circuit_breaker = Some(breaker());
    let mut w = World::new(vec![p]);
    w.result("openai", Outcome::Failure, 10.0, 0);
    w.result("openai", Outcome::Failure, 10.0, 0);
    let req = request("acme", "default");
    for i in 0..200 {
        assert_eq!(w.pick(&req, i).0, "anthropic");
    }
}

/// Half-open admits exactly its probe quota, then success closes the circuit.
#[test]
fn half_open_admits_probe_quota() {
    let mut p = policy("acme", "default", vec![provider("openai", 100)]);
    p.circuit_breaker = Some(BreakerConfig {
        half_open_max_calls: 2,
        ..breaker()
    });
    let mut w = World::new(vec![p]);
    w.result("openai", Outcome::Failure, 1.0, 0);
    w.result("openai", Outcome::Failure, 1.0, 0);
    let req = request("acme", "default");
    assert_eq!(
        w.decide(&req, 500 * MS).unwrap_err().code(),
        ErrorCode::DecisionFailed
    );
    assert_eq!(w.pick(&req, 1_000 * MS).0, "openai");
    assert_eq!(w.pick(&req, 1_000 * MS).0, "openai");
    assert_eq!(
        w.decide(&req, 1_001 * MS).unwrap_err().code(),
        ErrorCode::DecisionFailed
    );
    w.result("openai", Outcome::Success, 1.0, 1_002 * MS);
    w.result("openai", Outcome::Success, 1.0, 1_002 * MS);
    for _ in 0..5 {
        assert_eq!(w.pick(&req, 1_003 * MS).0, "openai");
    }
}

/// Step 6: `retry: n` retries the previous provider while count ≤ n, then goes to `to`.
#[test]
fn retry_then_fallback_as_count_grows() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 70), provider("anthropic", 30)],
    );
    p.fallbacks = vec![rule(vec![status_in(&["timeout", "5xx"])], 2, 1)].into();
    let mut w = World::new(vec![p]);
    for (count, want) in [
        (1, ("openai", Reason::Retry)),
        (2, ("openai", Reason::Retry)),
    ] {
        let req = attempt(request("acme", "default"), "openai", "timeout", count);
        let (name, reason) = w.pick(&req, 0);
        assert_eq!((name.as_str(), reason), want, "count {count}");
    }
    let req = attempt(request("acme", "default"), "openai", "503", 3);
    assert_eq!(
        w.pick(&req, 0),
        ("anthropic".to_string(), Reason::Fallback),
        "5xx matches 503"
    );
}

/// Step 6: a previous provider whose circuit is open is not retried; `to` is chosen.
#[test]
fn no_retry_into_open_circuit() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 70), provider("anthropic", 30)],
    );
    p.fallbacks = vec![rule(vec![status_in(&["timeout"])], 3, 1)].into();
    p.circuit_breaker = Some(breaker());
    let mut w = World::new(vec![p]);
    w.result("openai", Outcome::Failure, 1.0, 0);
    w.result("openai", Outcome::Failure, 1.0, 0);
    let req = attempt(request("acme", "default"), "openai", "timeout", 1);
    assert_eq!(w.pick(&req, 0), ("anthropic".to_string(), Reason::Fallback));
}

/// Step 6: an attempt that matches no rule goes on to the ordinary draw.
#[test]
fn unmatched_attempt_draws() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 100), provider("local_llm", 0)],
    );
    p.fallbacks = vec![rule(vec![status_in(&["rate_limited"])], 0, 1)].into();
    let mut w = World::new(vec![p]);
    let req = attempt(request("acme", "default"), "openai", "timeout", 1);
    assert_eq!(w.pick(&req, 0), ("openai".to_string(), Reason::Weighted));
    let req = attempt(request("acme", "default"), "openai", "rate_limited", 1);
    assert_eq!(w.pick(&req, 0), ("local_llm".to_string(), Reason::Fallback));
}

/// Fallback `when` operators: every key must hold; lists match any value; `== != > < >=
/// <= in` with `{"var"}` operands, against metadata, task type and attempt count.
#[test]
fn when_operators() {
    let var = |v: ContextVar| Operand::Var(v);
    let num = |n: f64| Operand::Lit(Literal::Num(n));
    let s = |x: &str| Operand::Lit(Literal::Str(x.into()));
    let tier = || ContextVar::Metadata("tier".into());
    let cases: Vec<(Clause, bool)> = vec![
        (
            Clause {
                op: Op::Eq,
                lhs: var(ContextVar::MessageType),
                rhs: s("chat"),
            },
            true,
        ),
        (
            Clause {
                op: Op::Ne,
                lhs: var(ContextVar::MessageType),
                rhs: s("chat"),
            },
            false,
        ),
        (
            Clause {
                op: Op::Gt,
                lhs: var(ContextVar::AttemptCount),
                rhs: num(1.0),
            },
            true,
        ),
        (
            Clause {
                op: Op::Lt,
                lhs: var(ContextVar::AttemptCount),
                rhs: num(2.0),
            },
            false,
        ),
        (
            Clause {
                op: Op::Ge,
                lhs: var(ContextVar::AttemptCount),
                rhs: num(2.0),
            },
            true,
        ),
        (
            Clause {
                op: Op::Le,
                lhs: var(ContextVar::AttemptCount),
                rhs: num(1.0),
            },
            false,
        ),
        (
            Clause {
                op: Op::Ge,
                lhs: var(tier()),
                rhs: num(2.0),
            },
            true,
        ),
        (
            Clause {
                op: Op::Eq,
                lhs: num(3.0),
                rhs: var(tier()),
            },
            true,
        ),
        (
            Clause {
                op: Op::In,
                lhs: var(ContextVar::TenantId),
                rhs: Operand::List(
                    vec![Literal::Str("x".into()), Literal::Str("acme".into())].into(),
                ),
            },
            true,
        ),
        (
            Clause {
                op: Op::Eq,
                lhs: var(ContextVar::Metadata("absent".into())),
                rhs: s("x"),
            },
            false,
        ),
        (
            Clause {
                op: Op::Ne,
                lhs: var(ContextVar::Metadata("absent".into())),
                rhs: s("x"),
            },
            true,
        ),
        (
            Clause {
                op: Op::Eq,
                lhs: var(ContextVar::PreviousProvider),
                rhs: s("openai"),
            },
            true,
        ),
    ];
    for (n, (clause, want)) in cases.into_iter().enumerate() {
        let mut p = policy(
            "acme",
            "default",
            vec![provider("openai", 100), provider("spare", 0)],
        );
        p.fallbacks = vec![rule(vec![clause], 0, 1)].into();
        let mut w = World::new(vec![p]);
        let req = with_user(request("acme", "default"), "tier", "3");
        let req = attempt(req, "openai", "timeout", 2);
        let (name, _) = w.pick(&req, 0);
        assert_eq!(name == "spare", want, "case {n}");
    }
}

fn sticky_policy(tenant: &str, providers: Vec<Provider>, ttl_ms: u64) -> Policy {
    let mut p = policy(tenant, "default", providers);
    p.sticky = Some(Sticky {
        session_key: "user_id".into(),
        ttl_ms,
    });
    p
}

/// Milliseconds from `UNIX_MS_AT_0 + at_ms` to the end of the session's TTL epoch.
fn epoch_left_ms(tenant: &str, user: &str, ttl_ms: u64, at_ms: u64) -> u64 {
    let session =
        rendezvous::session_hash(rendezvous::policy_key(tenant, "default"), user.as_bytes());
    rendezvous::Epoch::of(session, ttl_ms, UNIX_MS_AT_0 + at_ms).remaining_ms
}

/// Steps 7–8: the first answer of a session in its TTL epoch is `weighted` and writes the
/// entry; the next ones are `sticky` (priority 100), to the epoch's last millisecond. At the
/// session's own boundary it is re-drawn: `weighted` again, then `sticky`. A hit does not
/// extend the entry (no sliding TTL: the epoch is what every shard agrees on).
#[test]
fn sticky_holds_until_the_session_epoch_ends() {
    let providers = (0..8).map(|i| provider(&format!("p{i}"), 10)).collect();
    let mut w = World::new(vec![sticky_policy("acme", providers, 60_000)]);
    let req = with_user(request("acme", "default"), "user_id", "u-42");
    let left = epoch_left_ms("acme", "u-42", 60_000, 0);
    let (first, reason) = w.pick(&req, 0);
    assert_eq!(reason, Reason::Weighted);
    for t in [1, left / 2, left - 1] {
        assert_eq!(
            w.pick(&req, t * MS),
            (first.clone(), Reason::Sticky),
            "at {t} ms of {left}"
        );
    }
    assert_eq!(w.pick(&req, left * MS).1, Reason::Weighted, "new epoch");
    assert_eq!(w.pick(&req, (left + 1) * MS).1, Reason::Sticky);
    assert_eq!(
        w.pick(&req, (left + 60_000) * MS).1,
        Reason::Weighted,
        "hits did not extend the entry"
    );
    assert_eq!(Reason::Sticky.priority(), 100);
}

/// Step 7: when the session's provider is not a candidate (here excluded by the request),
/// the session goes to its next-ranked provider (`weighted`); once it is a candidate again
/// the session is back on it (`weighted`: this shard's entry held the other one), then
/// `sticky`.
#[test]
fn session_moves_to_next_ranked_and_back() {
    let providers = vec![provider("openai", 50), provider("anthropic", 50)];
    let mut w = World::new(vec![sticky_policy("acme", providers, 600_000)]);
    let req = with_user(request("acme", "default"), "user_id", "u-1");
    let (first, _) = w.pick(&req, 0);
    let mut req2 = with_user(request("acme", "default"), "user_id", "u-1");
    req2.constraints.exclude.push(first.clone().into());
    let (second, reason) = w.pick(&req2, MS);
    assert_ne!(second, first);
    assert_eq!(reason, Reason::Weighted);
    assert_eq!(w.pick(&req2, 2 * MS), (second, Reason::Sticky));
    assert_eq!(w.pick(&req, 3 * MS), (first.clone(), Reason::Weighted));
    assert_eq!(w.pick(&req, 4 * MS), (first, Reason::Sticky));
}

/// Sessions of different policies or different users do not share entries.
#[test]
fn sticky_sessions_are_separate() {
    let providers = || {
        (0..16)
            .map(|i| provider(&format!("p{i}"), 5))
            .collect::<Vec<_>>()
    };
    let mut a = policy("acme", "default", providers());
    a.sticky = Some(Sticky {
        session_key: "user_id".into(),
        ttl_ms: 60_000,
    });
    let mut w = World::new(vec![a]);
    let mut firsts = std::collections::HashSet::new();
    for u in 0..64 {
        let user = format!("u-{u}");
        let req = with_user(request("acme", "default"), "user_id", &user);
        firsts.insert(w.pick(&req, 0).0);
    }
    assert!(
        firsts.len() > 8,
        "users spread over providers: {}",
        firsts.len()
    );
}

/// Providers named and weighted as `acme/default`'s four in the bundled config.
fn four_providers() -> Vec<Provider> {
    vec![
        provider("openai", 50),
        provider("anthropic", 30),
        provider("mistral", 15),
        provider("local_llm", 5),
    ]
}

fn user(n: usize) -> String {
    format!("user-{n}")
}

/// Local-first: two shards built with different seeds (their weighted draws and sticky
/// fingerprints differ) give each of 10,000 sessions the same provider, first answer
/// included; and the sessions' shares follow the weights within 1.5 points (the
/// binomial standard deviation at 10,000 is at most 0.5 point).
#[test]
fn shards_agree_on_every_session_and_shares_follow_weights() {
    const SESSIONS: usize = 10_000;
    let mut a = World::with_seed(vec![sticky_policy("acme", four_providers(), 600_000)], 1);
    let mut b = World::with_seed(vec![sticky_policy("acme", four_providers(), 600_000)], 2);
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for n in 0..SESSIONS {
        let name = user(n);
        let req = with_user(request("acme", "default"), "user_id", &name);
        let (on_a, reason) = a.pick(&req, MS);
        assert_eq!(reason, Reason::Weighted);
        assert_eq!(
            b.pick(&req, 2 * MS),
            (on_a.clone(), Reason::Weighted),
            "{name}"
        );
        assert_eq!(
            a.pick(&req, 3 * MS),
            (on_a.clone(), Reason::Sticky),
            "{name}"
        );
        *counts.entry(on_a).or_default() += 1;
    }
    for (name, weight) in [
        ("openai", 50.0),
        ("anthropic", 30.0),
        ("mistral", 15.0),
        ("local_llm", 5.0),
    ] {
        let share = 100.0 * counts[name] as f64 / SESSIONS as f64;
        assert!(
            (share - weight).abs() < 1.5,
            "{name}: {share:.2} % for weight {weight}"
        );
    }
}

/// A provider whose circuit opens is skipped: exactly its sessions move, each to its
/// next-ranked provider (what the session gets with that provider excluded), the others
/// stay put; once the circuit closes every session is back where it was. The wall clock
/// stands still here so that no session's epoch ends during the test.
#[test]
fn open_circuit_moves_only_its_sessions_and_they_return() {
    let mut p = sticky_policy("acme", four_providers(), 600_000);
    p.circuit_breaker = Some(breaker());
    let mut w = World::new(vec![p]);
    let at = |ms: u64| Now {
        mono_ns: ms * MS,
        unix_ms: UNIX_MS_AT_0,
    };
    let names: Vec<String> = (0..2_000).map(user).collect();
    let reqs: Vec<_> = names
        .iter()
        .map(|u| with_user(request("acme", "default"), "user_id", u))
        .collect();
    let before: Vec<String> = reqs.iter().map(|r| w.pick_at(r, at(0)).0).collect();
    let on_openai = before.iter().filter(|p| *p == "openai").count();
    assert!(on_openai > 800, "{on_openai} sessions on openai");
    w.result("openai", Outcome::Failure, 1.0, MS);
    w.result("openai", Outcome::Failure, 1.0, MS);
    for (req, was) in reqs.iter().zip(&before) {
        let (now, _) = w.pick_at(req, at(2));
        let mut without = req.clone();
        without.constraints.exclude.push("openai".into());
        let mut fresh = World::new(vec![sticky_policy("acme", four_providers(), 600_000)]);
        let (next_ranked, _) = fresh.pick_at(&without, at(2));
        if was == "openai" {
            assert_eq!(now, next_ranked, "moved to its next-ranked provider");
        } else {
            assert_eq!(&now, was, "a session not on openai stayed");
        }
    }
    // After `timeout_ms` the circuit is half-open; two successes close it.
    w.result("openai", Outcome::Success, 1.0, 1_100 * MS);
    w.result("openai", Outcome::Success, 1.0, 1_100 * MS);
    for (req, was) in reqs.iter().zip(&before) {
        assert_eq!(&w.pick_at(req, at(1_200)).0, was, "back once closed");
    }
}

/// A reload that raises one provider's weight moves only sessions onto that provider
/// (none between the others), about as many as the new shares require; a reload that
/// removes a provider moves only that provider's sessions.
#[test]
fn reload_moves_only_the_sessions_it_must() {
    let mut w = World::new(vec![sticky_policy("acme", four_providers(), 600_000)]);
    let names: Vec<String> = (0..10_000).map(user).collect();
    let reqs: Vec<_> = names
        .iter()
        .map(|u| with_user(request("acme", "default"), "user_id", u))
        .collect();
    let picks =
        |w: &mut World, t: u64| -> Vec<String> { reqs.iter().map(|r| w.pick(r, t).0).collect() };
    let before = picks(&mut w, 0);
    let reload = |w: &mut World, providers: Vec<Provider>| {
        let new =
            RoutingTable::from_policies(vec![sticky_policy("acme", providers, 600_000)]).unwrap();
        w.state.adopt(&w.table, &new, MS);
        w.table = new;
    };
    let mut heavier = four_providers();
    heavier[2] = provider("mistral", 30); // 15 → 30: its share 15 % → 26 %
    reload(&mut w, heavier.clone());
    let after = picks(&mut w, 2 * MS);
    let mut moved = 0;
    for (was, now) in before.iter().zip(&after) {
        if was != now {
            assert_eq!(now, "mistral", "a session moved from {was} to {now}");
            moved += 1;
        }
    }
    // Expected: 10,000 · (30/115 − 15/100) ≈ 1,109.
    assert!((900..1_300).contains(&moved), "{moved} sessions moved");

    let mut fewer = heavier;
    fewer.remove(1); // anthropic
    reload(&mut w, fewer);
    let last = picks(&mut w, 3 * MS);
    for (was, now) in after.iter().zip(&last) {
        if was != "anthropic" {
            assert_eq!(was, now, "only anthropic's sessions move");
        }
    }
}

/// Epochs are staggered per session: over one TTL every session is re-drawn exactly once
/// (one `weighted` answer among `sticky` ones), at its own moment, spread over the whole
/// TTL rather than all at once.
#[test]
fn epoch_rollover_is_staggered() {
    const TTL_S: u64 = 60;
    let mut w = World::new(vec![sticky_policy("acme", four_providers(), TTL_S * 1_000)]);
    // Room for every session: an evicted entry would relabel a hit `weighted`.
    let config = StateConfig {
        sticky_entries: 1 << 14,
        seed: 1,
    };
    w.state = ShardState::new(&w.table, config, 0);
    let names: Vec<String> = (0..300).map(user).collect();
    let reqs: Vec<_> = names
        .iter()
        .map(|u| with_user(request("acme", "default"), "user_id", u))
        .collect();
    let firsts: Vec<String> = reqs.iter().map(|r| w.pick(r, 0).0).collect();
    let mut per_second = [0usize; TTL_S as usize + 1];
    let mut changed = 0;
    for (req, first) in reqs.iter().zip(&firsts) {
        let mut redraws = Vec::new();
        for s in 1..=TTL_S {
            let (provider, reason) = w.pick(req, s * 1_000 * MS);
            if reason == Reason::Weighted {
                redraws.push(s);
                changed += usize::from(provider != *first);
            }
        }
        assert_eq!(redraws.len(), 1, "re-drawn once per TTL: {redraws:?}");
        per_second[redraws[0] as usize] += 1;
    }
    let busiest = per_second.iter().max().unwrap();
    let seconds_used = per_second.iter().filter(|&&n| n > 0).count();
    assert!(
        *busiest <= 20,
        "at most 20 of 300 in one second: {per_second:?}"
    );
    assert!(seconds_used >= 45, "spread over the TTL: {per_second:?}");
    assert!(
        changed > 100,
        "a re-draw is a new draw: {changed} of 300 changed"
    );
}

/// Step 9: open circuits emptied the candidates → `circuit_breaker_fallback` via a rule
/// on `circuit_breaker_open`; constraints emptied them → `fallback`.
#[test]
fn no_candidates_falls_back() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 100), provider("anthropic", 0)],
    );
    p.circuit_breaker = Some(breaker());
    p.fallbacks = vec![rule(
        vec![status_in(&["circuit_breaker_open", "all_providers_failed"])],
        1,
        1,
    )]
    .into();
    let mut w = World::new(vec![p]);
    let mut req = request("acme", "default");
    req.constraints.exclude.push("openai".into());
    assert_eq!(w.pick(&req, 0), ("anthropic".to_string(), Reason::Fallback));
    w.result("openai", Outcome::Failure, 1.0, 0);
    w.result("openai", Outcome::Failure, 1.0, 0);
    let req = request("acme", "default");
    let (name, reason) = w.pick(&req, 0);
    assert_eq!(
        (name.as_str(), reason),
        ("anthropic", Reason::CircuitBreakerFallback)
    );
    assert_eq!(reason.priority(), 20);
}

/// Step 9: the legacy fallback is the last resort and skips an open circuit; with
/// nothing left the answer is `decision_failed`.
#[test]
fn legacy_fallback_then_decision_failed() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 100), provider("local_llm", 0)],
    );
    p.circuit_breaker = Some(breaker());
    p.legacy_fallback = Some(LegacyFallback {
        to: ProviderIdx(1),
        statuses: Box::new([]),
        on_all_failed: true,
    });
    let mut w = World::new(vec![p]);
    w.result("openai", Outcome::Failure, 1.0, 0);
    w.result("openai", Outcome::Failure, 1.0, 0);
    let req = request("acme", "default");
    assert_eq!(
        w.pick(&req, 0),
        ("local_llm".to_string(), Reason::CircuitBreakerFallback)
    );
    w.result("local_llm", Outcome::Failure, 1.0, 0);
    w.result("local_llm", Outcome::Failure, 1.0, 0);
    let err = w.decide(&req, 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DecisionFailed);
    assert!(err.to_string().contains("1 by open circuits"), "{err}");
}

/// Expected figures come from the declared numbers, then the observed EWMA; unknown
/// stays `None` (never a constant 0).
#[test]
fn expected_figures_declared_then_observed() {
    let mut openai = provider("openai", 100);
    openai.expected_latency_ms = Some(400.0);
    openai.cost = Some(0.002);
    let mut w = World::new(vec![
        policy("acme", "default", vec![openai]),
        policy("acme", "bare", vec![provider("openai", 100)]),
    ]);
    let d = w.decide(&request("acme", "default"), 0).unwrap();
    assert_eq!(
        (d.expected_latency_ms, d.expected_cost),
        (Some(400.0), Some(0.002))
    );
    let d = w.decide(&request("acme", "bare"), 0).unwrap();
    assert_eq!((d.expected_latency_ms, d.expected_cost), (None, None));
    w.result("openai", Outcome::Success, 100.0, 0);
    let d = w.decide(&request("acme", "default"), 0).unwrap();
    assert_eq!(d.expected_latency_ms, Some(100.0));
    w.result("openai", Outcome::Success, 200.0, 0);
    let d = w.decide(&request("acme", "bare"), 0).unwrap();
    assert_eq!(
        d.expected_latency_ms,
        Some(120.0),
        "every policy naming openai saw both"
    );
}

fn stage(id: &str, kind: StageKind, required: bool, on_fail: OnFail) -> Stage {
    Stage {
        id: id.into(),
        kind,
        required,
        on_fail,
        config: None,
        timeout_ms: None,
        retry: None,
    }
}

/// Without an extension transport, a required stage is `extension_unavailable` and an
/// optional one is reported as skipped.
#[test]
fn extensions_without_transport() {
    let mut req_pol = policy("acme", "strict", vec![provider("openai", 100)]);
    req_pol.pre = vec![stage("normalize_text", StageKind::Pre, true, OnFail::Block)].into();
    let mut opt_pol = policy("acme", "lenient", vec![provider("openai", 100)]);
    opt_pol.pre = vec![stage("add_context", StageKind::Pre, false, OnFail::Block)].into();
    opt_pol.validators = vec![stage(
        "content_filter",
        StageKind::Validator,
        false,
        OnFail::Warn,
    )]
    .into();
    opt_pol.post = vec![stage("format", StageKind::Post, false, OnFail::Block)].into();
    let mut w = World::new(vec![req_pol, opt_pol]);
    let err = w.decide(&request("acme", "strict"), 0).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ExtensionUnavailable);
    assert_eq!(err.extension_id(), Some("normalize_text"));
    let d = w.decide(&request("acme", "lenient"), 0).unwrap();
    let got: Vec<_> = d
        .executed_extensions
        .iter()
        .map(|e| (&*e.id, e.kind, e.status))
        .collect();
    use crate::contract::ExtensionStatus::Skipped;
    assert_eq!(
        got,
        [
            ("add_context", "pre", Skipped),
            ("content_filter", "validator", Skipped),
            ("format", "post", Skipped)
        ]
    );
}

/// The phases let a transport run stages: pre metadata feeds sticky/rules, a blocking
/// validator's rejection stops the request, post metadata lands in the decision.
#[test]
fn phases_apply_extension_outcomes() {
    let mut p = policy(
        "acme",
        "default",
        vec![provider("openai", 100), provider("vip", 0)],
    );
    p.pre = vec![stage("enrich", StageKind::Pre, true, OnFail::Block)].into();
    p.validators = vec![stage("guard", StageKind::Validator, true, OnFail::Block)].into();
    p.post = vec![stage("mask", StageKind::Post, true, OnFail::Block)].into();
    let tier = Clause {
        op: Op::Eq,
        lhs: Operand::Var(ContextVar::Metadata("tier".into())),
        rhs: Operand::Lit(Literal::Str("gold".into())),
    };
    p.fallbacks = vec![rule(vec![tier], 0, 1)].into();
    let mut w = World::new(vec![p]);
    let req = attempt(request("acme", "default"), "openai", "timeout", 1);
    let now = Now {
        mono_ns: 0,
        unix_ms: 1,
    };
    let mut pending = admit(&w.table, &mut w.state, &req, now).unwrap();
    let pre = &pending.stages(StageKind::Pre)[0];
    pending
        .apply(
            pre,
            StageOutcome::Ok {
                metadata: vec![("tier".into(), "gold".into())],
            },
        )
        .unwrap();
    let guard = &pending.stages(StageKind::Validator)[0];
    pending
        .apply(guard, StageOutcome::Ok { metadata: vec![] })
        .unwrap();
    pending.select(&mut w.state, &req, now).unwrap();
    let post = &pending.stages(StageKind::Post)[0];
    pending
        .apply(
            post,
            StageOutcome::Ok {
                metadata: vec![("masked".into(), true.into())],
            },
        )
        .unwrap();
    let d = pending.finish();
    assert_eq!(
        (d.provider, d.reason),
        (ProviderIdx(1), Reason::Fallback),
        "pre metadata fed the rule"
    );
    assert_eq!(
        d.decision_metadata,
        vec![("masked".into(), serde_json::Value::Bool(true))]
    );

    let mut pending = admit(&w.table, &mut w.state, &req, now).unwrap();
    pending
        .apply(pre, StageOutcome::Ok { metadata: vec![] })
        .unwrap();
    let err = pending
        .apply(
            guard,
            StageOutcome::Rejected {
                message: "PII".into(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidatorBlocked);
    let err = pending.apply(pre, StageOutcome::Timeout).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ExtensionTimeout);
}

/// `explain: true` returns the steps taken; without it, nothing is recorded.
#[test]
fn explain_lists_steps() {
    let mut w = World::new(vec![policy(
        "acme",
        "default",
        vec![provider("openai", 100)],
    )]);
    let mut req = request("acme", "default");
    assert!(w.decide(&req, 0).unwrap().explanation.is_none());
    req.explain = true;
    let steps = w.decide(&req, 0).unwrap().explanation.unwrap();
    assert!(steps[0].starts_with("policy acme/default"), "{steps:?}");
    assert!(
        steps.iter().any(|s| s.contains("weighted draw: openai")),
        "{steps:?}"
    );
}

/// A reload keeps breakers and sessions of policies whose providers did not change.
#[test]
fn adopt_carries_state_over() {
    let make = || {
        let mut p = policy(
            "acme",
            "default",
            vec![provider("openai", 50), provider("anthropic", 50)],
        );
        p.circuit_breaker = Some(breaker());
        p.sticky = Some(Sticky {
            session_key: "user_id".into(),
            ttl_ms: 60_000,
        });
        p
    };
    let mut w = World::new(vec![make()]);
    let req = with_user(request("acme", "default"), "user_id", "u-9");
    let (first, _) = w.pick(&req, 0);
    w.result("openai", Outcome::Failure, 1.0, 0);
    let new = RoutingTable::from_policies(vec![
        policy("acme", "other", vec![provider("x", 1)]),
        make(),
    ])
    .unwrap();
    w.state.adopt(&w.table, &new, MS);
    w.table = new;
    assert_eq!(w.pick(&req, 2 * MS), (first, Reason::Sticky));
    w.result("openai", Outcome::Failure, 1.0, 3 * MS);
    let slot = w.table.lookup("acme", "default").unwrap();
    let state = w.state.policy(slot).providers[0].breaker.state();
    assert_eq!(
        state.name(),
        "open",
        "the failure before the reload still counted"
    );
}

/// A dry-run's copy (`ShardState::dry_run_copy`) decides exactly as a clone of the whole
/// state would, sticky hits and open circuits included, for the policy it was made for.
#[test]
fn dry_run_copy_decides_like_a_full_clone() {
    let sticky = || Sticky {
        session_key: "user_id".into(),
        ttl_ms: 60_000,
    };
    let providers = || (0..6).map(|i| provider(&format!("p{i}"), 10)).collect();
    let mut policies = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let mut p = policy(tenant, "default", providers());
        p.sticky = Some(sticky());
        policies.push(p);
    }
    let mut w = World::new(policies);
    for user in ["u-1", "u-2", "u-3"] {
        w.pick(&with_user(request("acme", "default"), "user_id", user), MS);
        w.pick(
            &with_user(request("globex", "default"), "user_id", user),
            MS,
        );
    }
    let now = Now {
        mono_ns: 2 * MS,
        unix_ms: 1_000_000,
    };
    for (tenant, user) in [
        ("acme", "u-1"),
        ("acme", "u-9"),
        ("globex", "u-3"),
        ("initech", "u-1"),
    ] {
        let req = with_user(request(tenant, "default"), "user_id", user);
        let mut full = w.state.clone();
        let mut copy = w.state.dry_run_copy(&w.table, &req, now.mono_ns);
        let a = decide(&w.table, &mut full, &req, now).expect("decision");
        let b = decide(&w.table, &mut copy, &req, now).expect("decision");
        assert_eq!(
            (a.provider, a.reason),
            (b.provider, b.reason),
            "{tenant}/{user}"
        );
    }
    let missing = request("acme", "nope");
    let mut copy = w.state.dry_run_copy(&w.table, &missing, now.mono_ns);
    assert!(decide(&w.table, &mut copy, &missing, now).is_err());
}
