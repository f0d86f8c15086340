//! Step 8's strategies driven like a gateway drives them: decisions, then results a few
//! calls later, on injected time and a seeded generator. What they prove: no strategy
//! collapses two equal providers onto one, `least_latency` moves traffic off a slow
//! provider, and a provider whose results stop is still tried.

use std::collections::VecDeque;

use super::rng::Rng;
use super::tests::{policy, provider, request};
use super::*;
use crate::policy::{Balance, BalanceStrategy, Policy, RoutingTable};

const MS: u64 = 1_000_000;
/// Calls a gateway has running at once: a result comes back this many decisions later.
const CONCURRENCY: usize = 8;

const STRATEGIES: [BalanceStrategy; 4] = [
    BalanceStrategy::Weighted,
    BalanceStrategy::LeastLatency,
    BalanceStrategy::LeastOutstanding,
    BalanceStrategy::LowestCost,
];

fn balanced(strategy: BalanceStrategy, explore_ppm: u32, names: &[&str]) -> Policy {
    let mut p = policy(
        "acme",
        "default",
        names.iter().map(|n| provider(n, 50)).collect(),
    );
    p.balance = Balance {
        strategy,
        explore_ppm,
        half_life_ms: 10_000,
    };
    p
}

/// One shard, a gateway with `CONCURRENCY` calls in flight, and each provider's latency
/// (ms, `None`: its results never come back).
struct Gateway {
    table: RoutingTable,
    state: ShardState,
    latency: Vec<Option<f64>>,
    in_flight: VecDeque<usize>,
    noise: Rng,
    t_ns: u64,
    counts: Vec<u32>,
}

impl Gateway {
    fn new(policy: Policy, latency: &[Option<f64>]) -> Self {
        let table = RoutingTable::from_policies(vec![policy]).expect("table");
        let state = ShardState::new(&table, StateConfig::default(), 0);
        Gateway {
            table,
            state,
            latency: latency.to_vec(),
            in_flight: VecDeque::new(),
            noise: Rng::new(99),
            t_ns: 0,
            counts: vec![0; latency.len()],
        }
    }

    /// `n` decisions a millisecond apart; the oldest call's result arrives once
    /// `CONCURRENCY` are running, its latency and cost ±10 % around the provider's figure.
    fn run(&mut self, n: u32) {
        let req = request("acme", "default");
        for _ in 0..n {
            self.t_ns += MS;
            let now = Now {
                mono_ns: self.t_ns,
                unix_ms: 1_000_000 + self.t_ns / MS,
            };
            let d = decide(&self.table, &mut self.state, &req, now).expect("decision");
            self.counts[d.provider.get()] += 1;
            self.in_flight.push_back(d.provider.get());
            if self.in_flight.len() >= CONCURRENCY {
                let i = self.in_flight.pop_front().unwrap();
                self.result(i);
            }
        }
    }

    fn result(&mut self, i: usize) {
        let Some(base) = self.latency[i] else { return };
        let jitter = 0.9 + 0.2 * (self.noise.below(1_000) as f64 / 1_000.0);
        let observed = Observed {
            outcome: Some(Outcome::Success),
            latency_ms: Some(base * jitter),
            cost: Some(0.002 * jitter),
        };
        let name = self.table.policies()[0].providers[i].name.clone();
        self.state
            .record_result(&self.table, "acme", &name, observed, self.t_ns);
    }

    fn take_counts(&mut self) -> Vec<u32> {
        std::mem::replace(&mut self.counts, vec![0; self.latency.len()])
    }
}

/// Two equal providers stay within ±10 % of an even split under every strategy over
/// 10,000 decisions: no strategy herds onto the provider that happens to lead.
#[test]
fn equal_providers_split_evenly_under_every_strategy() {
    for strategy in STRATEGIES {
        let policy = balanced(strategy, 50_000, &["a", "b"]);
        let mut g = Gateway::new(policy, &[Some(100.0), Some(100.0)]);
        g.run(10_000);
        let counts = g.take_counts();
        for c in &counts {
            assert!(
                (4_500..=5_500).contains(c),
                "{}: split {counts:?}",
                strategy.as_str()
            );
        }
    }
}

/// With one provider four times slower in its results, `least_latency` sends it less
/// than a fifth of the decisions once the first results are in.
#[test]
fn least_latency_moves_off_a_slow_provider() {
    let policy = balanced(BalanceStrategy::LeastLatency, 50_000, &["fast", "slow"]);
    let mut g = Gateway::new(policy, &[Some(100.0), Some(400.0)]);
    g.run(200);
    g.take_counts();
    g.run(10_000);
    let counts = g.take_counts();
    assert!(counts[1] < 2_000, "slow provider got {counts:?}");
    assert!(counts[1] > 0, "and is still measured: {counts:?}");
}

/// A provider whose results stop coming (a crashed worker) keeps getting a share in every
/// stretch of decisions: exploration, and the decay of its in-flight count and latency.
#[test]
fn a_provider_whose_results_stop_is_not_starved() {
    for strategy in [
        BalanceStrategy::LeastLatency,
        BalanceStrategy::LeastOutstanding,
    ] {
        let policy = balanced(strategy, 50_000, &["alive", "silent"]);
        let mut g = Gateway::new(policy, &[Some(100.0), Some(100.0)]);
        g.run(1_000);
        g.latency[1] = None;
        for stretch in 0..20 {
            g.run(2_000);
            let counts = g.take_counts();
            assert!(
                counts[1] >= 20,
                "{}: stretch {stretch}: {counts:?}",
                strategy.as_str()
            );
        }
    }
}

/// Without exploration, decay alone brings a silent provider back: its in-flight count
/// halves every half-life until it ties with an idle one.
#[test]
fn decay_alone_revives_a_silent_provider() {
    let policy = balanced(BalanceStrategy::LeastOutstanding, 0, &["alive", "silent"]);
    let mut g = Gateway::new(policy, &[Some(100.0), Some(100.0)]);
    g.latency[1] = None;
    g.run(20_000);
    g.take_counts();
    g.run(20_000);
    let counts = g.take_counts();
    assert!(counts[1] > 0, "silent provider starved: {counts:?}");
    assert!(counts[1] < 2_000, "but it is not favoured: {counts:?}");
}

/// `lowest_cost` sends all but the explore share to the cheapest provider; a provider
/// with no known cost is not preferred.
#[test]
fn lowest_cost_prefers_the_cheapest() {
    let mut policy = balanced(
        BalanceStrategy::LowestCost,
        50_000,
        &["dear", "cheap", "unknown"],
    );
    let costs = [Some(0.01), Some(0.001), None];
    for (p, cost) in policy.providers.iter_mut().zip(costs) {
        p.cost = cost;
    }
    let mut g = Gateway::new(policy, &[None, None, None]);
    g.run(10_000);
    let counts = g.take_counts();
    assert!(counts[1] > 9_400, "{counts:?}");
    assert!(counts[0] > 0 && counts[2] > 0, "explored: {counts:?}");
}

/// A weighted policy (no `balance`) decides exactly as before: the same draws for the
/// same seed, whatever results arrive.
#[test]
fn weighted_draws_are_unchanged_by_results() {
    let plain = policy(
        "acme",
        "default",
        vec![provider("a", 50), provider("b", 50)],
    );
    let mut quiet = Gateway::new(plain.clone(), &[None, None]);
    let mut fed = Gateway::new(plain, &[Some(100.0), Some(900.0)]);
    quiet.run(2_000);
    fed.run(2_000);
    assert_eq!(quiet.take_counts(), fed.take_counts());
}

/// `explain` names the strategy and, for a two-choice pick, both samples and scores.
#[test]
fn explain_says_which_strategy_chose_and_why() {
    let mut policy = balanced(BalanceStrategy::LeastLatency, 0, &["a", "b"]);
    policy.providers[0].expected_latency_ms = Some(100.0);
    policy.providers[1].expected_latency_ms = Some(300.0);
    let mut g = Gateway::new(policy, &[None, None]);
    let mut req = request("acme", "default");
    req.explain = true;
    let now = Now {
        mono_ns: MS,
        unix_ms: 1_000_000,
    };
    let d = decide(&g.table, &mut g.state, &req, now).expect("decision");
    let steps = d.explanation.expect("explained");
    let step = steps
        .iter()
        .find(|s| s.starts_with("balance least_latency: sampled"))
        .unwrap_or_else(|| panic!("no balance step in {steps:?}"));
    assert!(step.contains("(score 100.000)"), "{step}");
    assert!(step.contains("(score 300.000)"), "{step}");
    assert!(step.ends_with("chose a"), "{step}");
}
