//! Per-request overrides (`constraints.only`, `constraints.order`) against the rest of the
//! decision order: what they prove is that `only` binds every way a provider can be
//! returned (draw, session, retry, fallback), that `order` decides before the balancing
//! strategy but after sessions and attempt rules, and that `explain` says so.

use std::borrow::Cow;

use super::tests::{policy, provider, request, Shard};
use super::*;
use crate::contract::{Attempt, ErrorCode, Reason, Scalar};
use crate::policy::{
    Balance, BalanceStrategy, BreakerConfig, Clause, Condition, ContextVar, FallbackRule, Literal,
    Op, Operand, Policy, ProviderIdx, Sticky,
};

const MS: u64 = 1_000_000;

impl Shard {
    fn decide(&mut self, req: &DecideRequest<'_>, t_ns: u64) -> Result<Decision, DecideError> {
        let now = Now {
            mono_ns: t_ns,
            unix_ms: 1_000_000 + t_ns / MS,
        };
        decide(&self.table, &mut self.state, req, now)
    }

    /// The provider's name, the reason and the explanation (empty without `explain`).
    fn pick(&mut self, req: &DecideRequest<'_>, t_ns: u64) -> (String, Reason, Vec<String>) {
        let d = self.decide(req, t_ns).expect("decision");
        let name = self
            .table
            .policy(d.slot)
            .provider(d.provider)
            .name
            .to_string();
        (name, d.reason, d.explanation.unwrap_or_default())
    }

    fn fail(&mut self, provider: &str) {
        let observed = Observed {
            outcome: Some(Outcome::Failure),
            latency_ms: Some(10.0),
            cost: None,
        };
        self.state
            .record_result(&self.table, "acme", provider, observed, 0);
    }
}

fn three() -> Policy {
    let names = ["openai", "anthropic", "mistral"];
    policy(
        "acme",
        "default",
        names.iter().map(|n| provider(n, 30)).collect(),
    )
}

fn names(list: &[&'static str]) -> Vec<Cow<'static, str>> {
    list.iter().map(|&n| Cow::Borrowed(n)).collect()
}

fn breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 1,
        timeout_ms: 60_000,
        ..BreakerConfig::default()
    }
}

/// A rule matching `status` that retries the previous provider `retry` times, then goes
/// to provider `to`.
fn rule(status: &str, retry: u32, to: u8) -> FallbackRule {
    let clause = Clause {
        op: Op::In,
        lhs: Operand::Var(ContextVar::Status),
        rhs: Operand::List(vec![Literal::Str(status.into())].into()),
    };
    FallbackRule {
        when: Condition {
            clauses: vec![clause].into(),
        },
        retry,
        to: ProviderIdx(to),
        backoff: None,
    }
}

fn with_session<'a>(mut req: DecideRequest<'a>, user: &'a str) -> DecideRequest<'a> {
    let value = Scalar::Str(Cow::Borrowed(user));
    req.metadata.entries.push((Cow::Borrowed("user_id"), value));
    req
}

/// `only` keeps the draw among the providers it lists, and `explain` names each provider
/// left out because of it; an `only` naming no provider of the policy leaves nothing, and
/// the failure counts them as excluded by constraints.
#[test]
fn only_limits_the_draw_and_explains_who_it_left_out() {
    let mut shard = Shard::new(three());
    let mut req = request("acme", "default");
    req.constraints.only = names(&["anthropic", "mistral"]);
    let mut seen = [0u32; 2];
    for t in 0..300 {
        let (name, reason, _) = shard.pick(&req, t);
        assert_eq!(reason, Reason::Weighted);
        match name.as_str() {
            "anthropic" => seen[0] += 1,
            "mistral" => seen[1] += 1,
            other => panic!("{other} is not in only"),
        }
    }
    assert!(seen.iter().all(|&n| n > 100), "both drawn: {seen:?}");
    req.explain = true;
    let (_, _, steps) = shard.pick(&req, 300);
    assert!(
        steps.contains(&"candidate openai: not usable (NotInOnly)".to_owned()),
        "{steps:?}"
    );
    assert!(
        steps.contains(&"candidates: 2 of 3".to_owned()),
        "{steps:?}"
    );

    req.constraints.only = names(&["cohere"]);
    let err = shard.decide(&req, 301).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DecisionFailed);
    assert!(
        err.to_string().contains("3 of 3 excluded by constraints"),
        "{err}"
    );
}

/// A session whose provider is not in `only` is answered by its next-ranked provider
/// that is (`weighted`), never by its own; the session is back on its provider for a
/// request without `only`.
#[test]
fn a_session_never_returns_a_provider_outside_only() {
    let mut p = three();
    p.sticky = Some(Sticky {
        session_key: "user_id".into(),
        ttl_ms: 600_000,
    });
    let mut shard = Shard::new(p);
    for u in 0..30 {
        let user = format!("u-{u}");
        let plain = with_session(request("acme", "default"), &user);
        let (own, ..) = shard.pick(&plain, 0);
        let mut limited = with_session(request("acme", "default"), &user);
        limited.constraints.only = ["openai", "anthropic", "mistral"]
            .into_iter()
            .filter(|n| *n != own)
            .map(Cow::Borrowed)
            .collect();
        let (moved, reason, _) = shard.pick(&limited, MS);
        assert_ne!(moved, own, "{user}: the session's provider is not in only");
        assert_eq!(reason, Reason::Weighted, "{user}");
        assert_eq!(
            shard.pick(&limited, 2 * MS).0,
            moved,
            "{user}: where it moved, it stays"
        );
        assert_eq!(
            shard.pick(&plain, 3 * MS).0,
            own,
            "{user}: back without only"
        );
    }
}

/// Retries and fallbacks obey `only` as they obey `exclude`: the previous provider is not
/// retried and a rule's target is skipped when `only` leaves them out; with no candidate
/// left and every fallback target outside `only`, the decision fails.
#[test]
fn retries_and_fallbacks_stay_within_only() {
    // mistral (2) is a fallback-only provider: never a candidate, only a rule's target.
    let providers = vec![
        provider("openai", 50),
        provider("anthropic", 50),
        provider("mistral", 0),
    ];
    let mut p = policy("acme", "default", providers);
    p.fallbacks = vec![rule("5xx", 2, 2), rule("all_providers_failed", 0, 2)].into();
    let mut shard = Shard::new(p);
    let mut req = request("acme", "default");
    req.attempt = Some(Attempt {
        previous_provider: "openai".into(),
        status: "503".into(),
        count: 1,
    });
    assert_eq!(shard.pick(&req, 0).0, "openai", "retried without only");
    req.constraints.only = names(&["anthropic", "mistral"]);
    let (name, reason, _) = shard.pick(&req, 1);
    assert_eq!(
        (name.as_str(), reason),
        ("mistral", Reason::Fallback),
        "not retried: the rule's target instead"
    );
    req.constraints.only = names(&["anthropic"]);
    let (name, reason, _) = shard.pick(&req, 2);
    assert_eq!((name.as_str(), reason), ("anthropic", Reason::Weighted));

    let mut req = request("acme", "default");
    req.constraints.only = names(&["openai", "anthropic"]);
    req.constraints.exclude = names(&["openai", "anthropic"]);
    let err = shard.decide(&req, 3).unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::DecisionFailed,
        "mistral is not in only"
    );
    req.constraints.only = names(&["openai", "anthropic", "mistral"]);
    let (name, reason, _) = shard.pick(&req, 4);
    assert_eq!((name.as_str(), reason), ("mistral", Reason::Fallback));
}

/// `order` chooses its first listed candidate, whatever the balancing strategy, with
/// reason `weighted`; a listed provider that is no candidate (open circuit, outside
/// `only`, unknown) is skipped and `explain` says why and which one decided; when none
/// listed is a candidate, the strategy chooses among all of them as without an order.
#[test]
fn order_decides_before_the_strategy() {
    let mut p = three();
    p.circuit_breaker = Some(breaker());
    p.balance = Balance {
        strategy: BalanceStrategy::LeastOutstanding,
        ..Balance::default()
    };
    let mut shard = Shard::new(p);
    let mut req = request("acme", "default");
    req.constraints.order = names(&["mistral", "openai"]);
    for t in 0..50 {
        let (name, reason, _) = shard.pick(&req, t * MS);
        assert_eq!((name.as_str(), reason), ("mistral", Reason::Weighted));
    }
    req.explain = true;
    let (.., steps) = shard.pick(&req, 50 * MS);
    assert!(
        steps.contains(&"order: mistral chosen (listed 1 of 2)".to_owned()),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s.starts_with("balance")), "{steps:?}");

    shard.fail("mistral");
    let (name, _, steps) = shard.pick(&req, 51 * MS);
    assert_eq!(name, "openai");
    assert!(
        steps.contains(&"order: mistral skipped (not a candidate)".to_owned())
            && steps.contains(&"order: openai chosen (listed 2 of 2)".to_owned()),
        "{steps:?}"
    );

    req.constraints.order = names(&["cohere", "openai", "anthropic"]);
    req.constraints.only = names(&["anthropic", "mistral"]);
    let (name, _, steps) = shard.pick(&req, 52 * MS);
    assert_eq!(name, "anthropic");
    assert!(
        steps.contains(&"order: cohere skipped (not in the policy)".to_owned())
            && steps.contains(&"order: openai skipped (not a candidate)".to_owned()),
        "{steps:?}"
    );

    req.constraints.order = names(&["mistral"]);
    req.constraints.only = Vec::new();
    let mut seen = [0u32; 2];
    for t in 0..100 {
        let (name, _, steps) = shard.pick(&req, (60 + t) * MS);
        seen[usize::from(name == "anthropic")] += 1;
        assert!(
            steps.contains(
                &"order: none of the 1 listed is a candidate; chosen as without an order"
                    .to_owned()
            ),
            "{steps:?}"
        );
        assert!(steps.iter().any(|s| s.starts_with("balance")), "{steps:?}");
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "the strategy spreads: {seen:?}"
    );
}

/// A session keeps its provider whatever the order says (the provider must be the same
/// on every shard), and `explain` says the order was not applied; a request with an
/// `attempt` goes through the fallback rules first.
#[test]
fn sessions_and_attempt_rules_come_before_order() {
    let mut p = three();
    p.sticky = Some(Sticky {
        session_key: "user_id".into(),
        ttl_ms: 600_000,
    });
    p.fallbacks = vec![rule("timeout", 1, 1)].into();
    let mut shard = Shard::new(p);
    for u in 0..20 {
        let user = format!("u-{u}");
        let plain = with_session(request("acme", "default"), &user);
        let (own, ..) = shard.pick(&plain, 0);
        let mut ordered = with_session(request("acme", "default"), &user);
        let other = if own == "mistral" {
            "openai"
        } else {
            "mistral"
        };
        ordered.constraints.order = vec![Cow::Borrowed(other)];
        ordered.explain = true;
        let (name, reason, steps) = shard.pick(&ordered, MS);
        assert_eq!((&name, reason), (&own, Reason::Sticky), "{user}");
        assert!(
            steps.contains(&"order: not applied, the session's provider decides".to_owned()),
            "{steps:?}"
        );
    }
    let mut req = request("acme", "default");
    req.constraints.order = names(&["mistral"]);
    req.attempt = Some(Attempt {
        previous_provider: "openai".into(),
        status: "timeout".into(),
        count: 1,
    });
    assert_eq!(shard.pick(&req, 2 * MS).1, Reason::Retry);
    req.attempt.as_mut().unwrap().count = 2;
    let (name, reason, _) = shard.pick(&req, 3 * MS);
    assert_eq!((name.as_str(), reason), ("anthropic", Reason::Fallback));
}
