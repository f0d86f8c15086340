//! Step 8's strategies (`balance`): which candidate a request without a session gets when
//! the policy learns from results instead of drawing by weight alone.
//!
//! - `least_latency`: power of two choices. Two distinct candidates are drawn by weight
//!   (the weights are the prior), and the one with the lower `latency × (in flight + 1)`
//!   wins. The latency is a peak-EWMA: a sample above the estimate replaces it, one below
//!   moves it by `EWMA_ALPHA`, and with no news it halves every `half_life_ms`, so a
//!   provider once slow is tried again instead of being written off for good. The
//!   in-flight factor makes a provider that is given more work look slower before its
//!   results say so; that is what keeps two equal providers from collapsing onto one.
//! - `least_outstanding`: power of two choices on the in-flight count alone (rounded, so
//!   a count decayed below one half ties with an idle provider).
//! - `lowest_cost`: the lowest observed (else declared) cost among all candidates; costs
//!   within `COST_TIE_RELATIVE` of the lowest tie and are drawn by weight. A provider of
//!   unknown cost is not preferred: only exploration measures it.
//!
//! `explore_ratio` of the decisions skip the strategy and draw by weight, so every
//! provider keeps being measured whatever its score.
//!
//! Why power of two choices and not the best of all: the best of all sends every decision
//! made between two results to the same provider (the herd LiteLLM's least-busy meets);
//! two random choices spread them while still avoiding the worst. Why decay and not a
//! timeout: a result that never comes (a crashed worker) must not pin a provider's count,
//! and a decayed count needs no bookkeeping per call.
//!
//! Nothing here reads a clock (`now_ns` comes in) or allocates.

use super::rng::Rng;
use super::select::draw;
use super::state::{PolicyState, EWMA_ALPHA};
use crate::policy::{BalanceStrategy, Policy, ProviderIdx, EXPLORE_PPM_FULL};

const NS_PER_MS: u64 = 1_000_000;
/// Costs at most this much above the lowest (relatively) tie with it: a cost EWMA wobbles
/// with each call's tokens, and a hair's difference must not take all the traffic.
pub const COST_TIE_RELATIVE: f64 = 0.01;

/// `2^(-elapsed / half_life)`: what is left of a value after `elapsed_ns`.
fn decay(elapsed_ns: u64, half_life_ms: u64) -> f64 {
    let half_life_ns = half_life_ms.saturating_mul(NS_PER_MS).max(1);
    (-(elapsed_ns as f64) / half_life_ns as f64).exp2()
}

/// A latency estimate that jumps to a peak and decays back (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeakEwma {
    value: f64,
    /// When `value` was set (the owner's monotonic clock, which every shard shares).
    at_ns: u64,
    measured: bool,
}

impl PeakEwma {
    pub fn observe(&mut self, ms: f64, now_ns: u64, half_life_ms: u64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let current = self.get(now_ns, half_life_ms).unwrap_or(ms);
        self.value = if ms >= current {
            ms
        } else {
            current + EWMA_ALPHA * (ms - current)
        };
        self.at_ns = now_ns.max(self.at_ns);
        self.measured = true;
    }

    /// The estimate at `now_ns`; `None` before the first sample.
    pub fn get(&self, now_ns: u64, half_life_ms: u64) -> Option<f64> {
        let elapsed = now_ns.saturating_sub(self.at_ns);
        self.measured
            .then(|| self.value * decay(elapsed, half_life_ms))
    }
}

/// Calls in flight on one provider as this shard counts them: its decisions less the
/// results it recorded, halving every `half_life_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InFlight {
    value: f64,
    at_ns: u64,
}

impl InFlight {
    pub fn get(&self, now_ns: u64, half_life_ms: u64) -> f64 {
        self.value * decay(now_ns.saturating_sub(self.at_ns), half_life_ms)
    }

    /// One more call (`+1.0`) or one fewer (`-1.0`); never below zero, so results of
    /// decisions another shard made cannot bank credit here.
    pub fn add(&mut self, delta: f64, now_ns: u64, half_life_ms: u64) {
        self.value = (self.get(now_ns, half_life_ms) + delta).max(0.0);
        self.at_ns = now_ns.max(self.at_ns);
    }
}

/// How the strategy came to its provider, for the explanation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Why {
    /// The explore share: a draw by weight.
    Explore,
    /// One candidate only.
    Only,
    /// Two candidates drawn by weight and their scores (`None`: never measured and
    /// nothing declared, a tie that the first draw wins).
    TwoChoices {
        first: (ProviderIdx, Option<f64>),
        second: (ProviderIdx, Option<f64>),
    },
    /// The lowest cost and how many candidates tied with it.
    Cheapest { cost: f64, tied: u32 },
    /// No candidate has a known cost: a draw by weight.
    NoCost,
}

/// Chooses among the candidates `mask` (total weight `total`, at least one) by the
/// policy's strategy, which is not `Weighted`.
pub fn pick(
    policy: &Policy,
    ps: &PolicyState,
    mask: u64,
    total: u64,
    rng: &mut Rng,
    now_ns: u64,
) -> (ProviderIdx, Why) {
    debug_assert!(mask != 0 && total > 0);
    let balance = policy.balance;
    if rng.below(u64::from(EXPLORE_PPM_FULL)) < u64::from(balance.explore_ppm) {
        return (draw(policy, mask, total, rng.below(total)), Why::Explore);
    }
    match balance.strategy {
        BalanceStrategy::Weighted => unreachable!("a weighted policy draws without a strategy"),
        BalanceStrategy::LeastLatency | BalanceStrategy::LeastOutstanding => {
            two_choices(policy, ps, mask, total, rng, now_ns)
        }
        BalanceStrategy::LowestCost => cheapest(policy, ps, mask, total, rng),
    }
}

fn two_choices(
    policy: &Policy,
    ps: &PolicyState,
    mask: u64,
    total: u64,
    rng: &mut Rng,
    now_ns: u64,
) -> (ProviderIdx, Why) {
    let first = draw(policy, mask, total, rng.below(total));
    let rest = mask & !first.bit();
    if rest == 0 {
        return (first, Why::Only);
    }
    let rest_total = total - u64::from(policy.provider(first).weight);
    let second = draw(policy, rest, rest_total, rng.below(rest_total));
    let (a, b) = (
        score(policy, ps, first, now_ns),
        score(policy, ps, second, now_ns),
    );
    let chosen = match (a, b) {
        (Some(a), Some(b)) if b < a => second,
        _ => first,
    };
    let why = Why::TwoChoices {
        first: (first, a),
        second: (second, b),
    };
    (chosen, why)
}

/// A provider's score under a two-choice strategy: lower is better.
pub fn score(policy: &Policy, ps: &PolicyState, idx: ProviderIdx, now_ns: u64) -> Option<f64> {
    let half_life_ms = policy.balance.half_life_ms;
    let s = &ps.providers[idx.get()];
    let in_flight = s.in_flight.get(now_ns, half_life_ms);
    match policy.balance.strategy {
        BalanceStrategy::LeastOutstanding => Some(in_flight.round()),
        _ => {
            let latency = s
                .peak_latency
                .get(now_ns, half_life_ms)
                .or(policy.provider(idx).expected_latency_ms)?;
            Some(latency * (in_flight + 1.0))
        }
    }
}

fn cheapest(
    policy: &Policy,
    ps: &PolicyState,
    mask: u64,
    total: u64,
    rng: &mut Rng,
) -> (ProviderIdx, Why) {
    let cost = |i: usize| ps.providers[i].cost.get().or(policy.providers[i].cost);
    let lowest = bits(mask).filter_map(cost).fold(f64::INFINITY, f64::min);
    if !lowest.is_finite() {
        return (draw(policy, mask, total, rng.below(total)), Why::NoCost);
    }
    let limit = lowest + lowest.abs() * COST_TIE_RELATIVE;
    let (mut tied, mut tied_total) = (0u64, 0u64);
    for i in bits(mask) {
        if cost(i).is_some_and(|c| c <= limit) {
            tied |= 1 << i;
            tied_total += u64::from(policy.providers[i].weight);
        }
    }
    let idx = draw(policy, tied, tied_total, rng.below(tied_total));
    let why = Why::Cheapest {
        cost: lowest,
        tied: tied.count_ones(),
    };
    (idx, why)
}

/// The indices of the set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peak replaces the estimate at once, a lower sample pulls it down by
    /// `EWMA_ALPHA`, and with no news it halves every half-life.
    #[test]
    fn peak_ewma_jumps_up_eases_down_and_decays() {
        let mut p = PeakEwma::default();
        assert_eq!(p.get(0, 1_000), None);
        p.observe(100.0, 0, 1_000);
        p.observe(300.0, 0, 1_000);
        assert_eq!(p.get(0, 1_000), Some(300.0));
        p.observe(100.0, 0, 1_000);
        assert_eq!(p.get(0, 1_000), Some(260.0));
        assert_eq!(p.get(1_000 * NS_PER_MS, 1_000), Some(130.0));
        p.observe(f64::NAN, 0, 1_000);
        p.observe(-5.0, 0, 1_000);
        assert_eq!(p.get(0, 1_000), Some(260.0), "garbage samples are ignored");
    }

    /// The count halves every half-life and never goes below zero.
    #[test]
    fn in_flight_decays_and_floors_at_zero() {
        let mut f = InFlight::default();
        f.add(1.0, 0, 1_000);
        f.add(1.0, 0, 1_000);
        assert_eq!(f.get(1_000 * NS_PER_MS, 1_000), 1.0);
        f.add(-5.0, 1_000 * NS_PER_MS, 1_000);
        assert_eq!(f.get(1_000 * NS_PER_MS, 1_000), 0.0);
    }
}
