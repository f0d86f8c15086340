//! Providers' own limits in the decision order (`usage`): a provider at its `rpm` or
//! `tpm`, or cooling down after a `rate_limited` result, is no candidate, says so in
//! `explain`, and comes back when the minute or the cooldown has passed; a refusal for a
//! rate limit does not count against the circuit; the owner's tokens and cooldowns reach
//! the other shards as replicas.

use std::borrow::Cow;

use super::breaker::BreakerState;
use super::tests::{policy, provider, request, Shard};
use super::usage::MINUTE_NS;
use super::*;
use crate::contract::{ErrorCode, Reason};
use crate::policy::{BreakerConfig, Policy, ProviderLimits, RoutingTable};

const MS: u64 = 1_000_000;
const T0: u64 = 1_000 * MINUTE_NS;

fn now(t_ns: u64) -> Now {
    Now {
        mono_ns: t_ns,
        unix_ms: t_ns / MS,
    }
}

/// openai (with `limits`) and anthropic (none); a breaker that opens on one failure.
fn limited(limits: ProviderLimits, cooldown_ms: u64) -> Policy {
    let mut openai = provider("openai", 50);
    openai.limits = limits;
    let mut p = policy("acme", "default", vec![openai, provider("anthropic", 50)]);
    p.cooldown_ms = cooldown_ms;
    p.circuit_breaker = Some(BreakerConfig {
        failure_threshold: 1,
        timeout_ms: 60_000,
        ..BreakerConfig::default()
    });
    p
}

impl Shard {
    /// The provider a request preferring openai (`order`) gets at `t_ns`, and the steps.
    fn pick_preferring_openai(&mut self, t_ns: u64) -> Result<(String, Vec<String>), DecideError> {
        let mut req = request("acme", "default");
        req.constraints.order = vec![Cow::Borrowed("openai")];
        req.explain = true;
        let d = decide(&self.table, &mut self.state, &req, now(t_ns))?;
        let name = self
            .table
            .policy(d.slot)
            .provider(d.provider)
            .name
            .to_string();
        Ok((name, d.explanation.unwrap_or_default()))
    }

    fn result(&mut self, outcome: Option<Outcome>, signal: LimitSignal, t_ns: u64) {
        let observed = Observed {
            outcome,
            latency_ms: None,
            cost: None,
        };
        let fed = (observed, signal);
        self.state
            .record_result_with(&self.table, "acme", "openai", fed, t_ns);
    }

    fn breaker(&self) -> BreakerState {
        self.state.policies[0].providers[0].breaker.state()
    }
}

fn has(steps: &[String], step: &str) -> bool {
    steps.iter().any(|s| s == step)
}

/// This shard's decisions count against `rpm`: at the limit the provider is skipped (and
/// `explain` says why), and it is back once the sliding minute has room.
#[test]
fn a_provider_at_its_rpm_is_skipped_until_the_minute_has_room() {
    let limits = ProviderLimits {
        rpm: Some(3),
        tpm: None,
    };
    let mut shard = Shard::new(limited(limits, 10_000));
    for i in 0..3 {
        assert_eq!(
            shard.pick_preferring_openai(T0 + i * MS).unwrap().0,
            "openai"
        );
    }
    let (name, steps) = shard.pick_preferring_openai(T0 + 3 * MS).unwrap();
    assert_eq!(name, "anthropic");
    assert!(
        has(&steps, "candidate openai: not usable (AtRpmLimit)"),
        "{steps:?}"
    );
    assert!(
        has(&steps, "order: openai skipped (not a candidate)"),
        "{steps:?}"
    );
    assert_eq!(
        shard.pick_preferring_openai(T0 + MINUTE_NS - MS).unwrap().0,
        "anthropic"
    );
    // Two minutes on, the three decisions are out of the sliding minute.
    assert_eq!(
        shard.pick_preferring_openai(T0 + 2 * MINUTE_NS).unwrap().0,
        "openai"
    );
}

/// Results' tokens count against `tpm`; a result without `usage` counts none.
#[test]
fn results_tokens_fill_the_tpm() {
    let limits = ProviderLimits {
        rpm: None,
        tpm: Some(1_000),
    };
    let mut shard = Shard::new(limited(limits, 10_000));
    let tokens = |n| LimitSignal {
        tokens: Some(n),
        rate_limited: false,
    };
    shard.result(Some(Outcome::Success), LimitSignal::default(), T0);
    shard.result(Some(Outcome::Success), tokens(999), T0);
    assert_eq!(shard.pick_preferring_openai(T0 + MS).unwrap().0, "openai");
    shard.result(Some(Outcome::Success), tokens(1), T0 + MS);
    let (name, steps) = shard.pick_preferring_openai(T0 + 2 * MS).unwrap();
    assert_eq!(name, "anthropic");
    assert!(
        has(&steps, "candidate openai: not usable (AtTpmLimit)"),
        "{steps:?}"
    );
    assert_eq!(
        shard.pick_preferring_openai(T0 + 2 * MINUTE_NS).unwrap().0,
        "openai"
    );
}

/// A `rate_limited` result keeps the provider out for `cooldown_ms` without touching its
/// circuit (a failure would have opened it: threshold 1); with every provider out the
/// failure message counts them.
#[test]
fn a_rate_limited_result_cools_down_without_opening_the_circuit() {
    let mut shard = Shard::new(limited(ProviderLimits::default(), 2_000));
    let refused = LimitSignal {
        tokens: None,
        rate_limited: true,
    };
    shard.result(None, refused, T0);
    assert_eq!(shard.breaker(), BreakerState::Closed);
    let (name, steps) = shard.pick_preferring_openai(T0 + MS).unwrap();
    assert_eq!(name, "anthropic");
    assert!(
        has(&steps, "candidate openai: not usable (CoolingDown)"),
        "{steps:?}"
    );
    assert_eq!(
        shard.pick_preferring_openai(T0 + 1_999 * MS).unwrap().0,
        "anthropic"
    );
    assert_eq!(
        shard.pick_preferring_openai(T0 + 2_000 * MS).unwrap().0,
        "openai"
    );

    let mut req = request("acme", "default");
    req.constraints.only = vec![Cow::Borrowed("openai")];
    shard.result(None, refused, T0 + 3_000 * MS);
    let err = decide(&shard.table, &mut shard.state, &req, now(T0 + 3_001 * MS)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::DecisionFailed);
    assert!(
        err.to_string()
            .contains("1 by provider rate limits or cooldowns"),
        "{err}"
    );
    shard.result(Some(Outcome::Failure), LimitSignal::default(), T0);
    assert!(matches!(shard.breaker(), BreakerState::Open { .. }));
}

/// The owner's tokens and cooldowns reach another shard in a replica: a cooldown at once
/// (as a circuit transition does), tokens with the averages.
#[test]
fn tokens_and_cooldowns_are_replicated_to_other_shards() {
    let limits = ProviderLimits {
        rpm: None,
        tpm: Some(500),
    };
    let table = RoutingTable::from_policies(vec![limited(limits, 5_000)]).expect("table");
    let mut shards: Vec<ShardState> = (0..2)
        .map(|i| {
            let mut s = ShardState::new(&table, StateConfig::default(), 0);
            s.place(&table, Placement::new(Peer(i), 2, |_| Peer(0)));
            s
        })
        .collect();
    let deliver = |shards: &mut Vec<ShardState>, t_ns: u64| {
        shards[0].poll_sync(&table, t_ns);
        let sent: Vec<_> = shards[0].sync_outbox().drain(..).collect();
        for (to, msg) in sent {
            shards[to.index()].on_sync(&table, Peer(0), msg, t_ns);
        }
    };
    let pick = |shard: &mut ShardState, t_ns: u64| {
        let mut req = request("acme", "default");
        req.constraints.order = vec![Cow::Borrowed("openai")];
        let d = decide(&table, shard, &req, now(t_ns)).expect("decision");
        table.policy(d.slot).provider(d.provider).name.to_string()
    };
    let refused = LimitSignal {
        tokens: None,
        rate_limited: true,
    };
    let ok = Observed {
        outcome: None,
        latency_ms: None,
        cost: None,
    };
    shards[0].record_result_with(&table, "acme", "openai", (ok, refused), T0);
    assert_eq!(pick(&mut shards[1], T0), "openai", "not heard of yet");
    deliver(&mut shards, T0);
    assert_eq!(pick(&mut shards[1], T0 + MS), "anthropic", "cooling down");
    assert_eq!(pick(&mut shards[1], T0 + 5_000 * MS), "openai");

    let used = LimitSignal {
        tokens: Some(500),
        rate_limited: false,
    };
    let t = T0 + 6_000 * MS;
    shards[0].record_result_with(&table, "acme", "openai", (ok, used), t);
    deliver(&mut shards, t + super::sync::REPLICA_COALESCE_NS);
    assert_eq!(pick(&mut shards[1], t + 20 * MS), "anthropic", "at its tpm");
    assert_eq!(
        pick(&mut shards[0], t + 20 * MS),
        "anthropic",
        "on the owner too"
    );
}

/// A policy without limits decides exactly as before: nothing is counted or held.
#[test]
fn without_limits_nothing_is_held() {
    let mut shard = Shard::new(limited(ProviderLimits::default(), 10_000));
    for i in 0..1_000 {
        let (name, steps) = shard.pick_preferring_openai(T0 + i * MS).unwrap();
        assert_eq!(name, "openai", "{steps:?}");
    }
    let reason = decide(
        &shard.table,
        &mut shard.state,
        &request("acme", "default"),
        now(T0 + 2 * MINUTE_NS),
    )
    .unwrap()
    .reason;
    assert_eq!(reason, Reason::Weighted);
}
