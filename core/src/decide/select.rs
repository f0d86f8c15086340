//! Steps 5–9 of SPEC §5: candidates, attempt-driven retry/fallback, sticky, weighted draw,
//! and the no-candidate fallbacks. Allocation-free unless `explain` is on.
//!
//! A request with a sticky session gets the session's rendezvous choice among the
//! candidates (`rendezvous`), the same on every shard; one without gets a random weighted
//! draw from the shard's generator, or the policy's `balance` strategy's choice. The
//! strategy sees only what steps 5–7 left: constraints, breakers, fallbacks and sessions
//! come first, whatever it would prefer.
//!
//! Per-request overrides: `constraints.only` is a constraint like `exclude` (a provider
//! not listed is no candidate, so neither a session, a retry nor a fallback can return
//! it); `constraints.order` picks, among the candidates left for a request without a
//! session, the first one listed, before the balancing strategy. Why a session wins over
//! `order`: its provider must be the same on every shard and for every request of the
//! session, and a gateway that wants its order to decide leaves the session key out.

use super::balance::{self, Why};
use super::breaker::{Availability, Transition};
use super::budget::Room;
use super::condition::{session_bytes, status_matches, RuleCtx};
use super::error::{DecideError, Exclusions};
use super::rendezvous::{self, Epoch};
use super::state::{PolicyState, ShardState};
use super::sticky::SessionKey;
use super::usage::Held;
use crate::contract::{Constraints, Reason};
use crate::policy::{BalanceStrategy, Policy, PolicySlot, Provider, ProviderIdx};

const NS_PER_MS: u64 = 1_000_000;

/// Appends one explanation step, formatting only when `explain` was asked for.
macro_rules! explain {
    ($ex:expr, $($arg:tt)*) => {
        if let Some(steps) = $ex.as_mut() {
            steps.push(format!($($arg)*));
        }
    };
}
pub(super) use explain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub provider: ProviderIdx,
    pub reason: Reason,
}

/// The provider's expected (latency ms, cost): observed averages first, declared figures
/// second, unknown (`None`) otherwise — never a made-up 0.
pub fn expected(policy: &Policy, ps: &PolicyState, idx: ProviderIdx) -> (Option<f64>, Option<f64>) {
    let p = policy.provider(idx);
    let s = &ps.providers[idx.get()];
    (
        s.latency_ms.get().or(p.expected_latency_ms),
        s.cost.get().or(p.cost),
    )
}

/// Why a provider is not usable, for explanations and the failure message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusable {
    Excluded,
    /// Not listed in the request's `constraints.only`.
    NotInOnly,
    MissingCapability,
    TooSlow,
    TooCostly,
    /// The provider's own limits (`usage`): cooling down after a `rate_limited` result,
    /// or at its `rpm` or `tpm`.
    CoolingDown,
    AtRpmLimit,
    AtTpmLimit,
    /// Its expected cost or tokens would pass what a budget has left (`budget`).
    OverBudget,
    CircuitOpen,
}

impl From<Held> for Unusable {
    fn from(held: Held) -> Self {
        match held {
            Held::CoolingDown => Unusable::CoolingDown,
            Held::AtRpm => Unusable::AtRpmLimit,
            Held::AtTpm => Unusable::AtTpmLimit,
        }
    }
}

/// Constraints: `exclude`, `only` (when given), `require` (all tags), and the latency/cost
/// ceilings. A provider whose figure is unknown does not meet a ceiling on it: the gateway
/// asked for a bound we cannot vouch for.
fn constraint_check(
    p: &Provider,
    figures: (Option<f64>, Option<f64>),
    c: &Constraints<'_>,
) -> Option<Unusable> {
    if c.exclude.iter().any(|e| **e == *p.name) {
        return Some(Unusable::Excluded);
    }
    if !c.only.is_empty() && !c.only.iter().any(|o| **o == *p.name) {
        return Some(Unusable::NotInOnly);
    }
    if !c
        .require
        .iter()
        .all(|r| p.capabilities.iter().any(|cap| **cap == **r))
    {
        return Some(Unusable::MissingCapability);
    }
    if let Some(max) = c.max_latency_ms {
        if !matches!(figures.0, Some(l) if l <= max) {
            return Some(Unusable::TooSlow);
        }
    }
    if let Some(max) = c.max_cost {
        if !matches!(figures.1, Some(x) if x <= max) {
            return Some(Unusable::TooCostly);
        }
    }
    None
}

/// One policy's view during a selection.
pub(super) struct Selector<'s, 'r, 'a> {
    pub policy: &'s Policy,
    pub slot: PolicySlot,
    pub ctx: RuleCtx<'r, 'a>,
    pub now_ns: u64,
    /// This shard is the authority for the policy's state (`sync`): it reads its own
    /// breakers; another shard reads replicas and needs the owner's probes.
    pub owner: bool,
    /// Wall-clock time: the sticky sessions' TTL epochs.
    pub now_unix_ms: u64,
    pub explain: &'s mut Option<Vec<String>>,
    /// The sticky entry a `weighted` session answer writes at `commit`.
    pub sticky_write: Option<StickyWrite>,
    /// What the request's budgets leave for its call (`budget::admit`).
    pub room: Option<&'s Room>,
}

/// A sticky entry to write: this shard answered the session with `held` (provider, epoch).
#[derive(Debug, Clone, Copy)]
pub(super) struct StickyWrite {
    key: SessionKey,
    providers_fp: u64,
    held: (ProviderIdx, u64),
    expires_ns: u64,
}

impl Selector<'_, '_, '_> {
    fn usable(&self, ps: &PolicyState, idx: ProviderIdx) -> Result<(), Unusable> {
        let p = self.policy.provider(idx);
        let figures = expected(self.policy, ps, idx);
        if let Some(why) = constraint_check(p, figures, &self.ctx.req.constraints) {
            return Err(why);
        }
        if let Some(held) = ps.providers[idx.get()].usage.held(p.limits, self.now_ns) {
            return Err(held.into());
        }
        if let Some(room) = self.room {
            // Unknown figures reserve nothing: they fit while anything is left.
            let tokens = ps.providers[idx.get()].tokens.get().unwrap_or(0.0);
            if !room.fits(figures.1.unwrap_or(0.0), tokens) {
                return Err(Unusable::OverBudget);
            }
        }
        match &self.policy.circuit_breaker {
            Some(cfg) => match super::sync::availability(
                self.owner,
                &ps.providers[idx.get()],
                cfg,
                self.now_ns,
            ) {
                Availability::Open => Err(Unusable::CircuitOpen),
                Availability::Closed | Availability::Probe => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Step 5: the weighted providers still usable, as a mask, with their total weight.
    fn candidates(&mut self, ps: &PolicyState, ex: &mut Exclusions) -> (u64, u64) {
        let (mut mask, mut total) = (0u64, 0u64);
        for (i, p) in self.policy.providers.iter().enumerate() {
            if p.weight == 0 {
                continue;
            }
            ex.providers += 1;
            let idx = ProviderIdx(i as u8);
            match self.usable(ps, idx) {
                Ok(()) => {
                    mask |= idx.bit();
                    total += u64::from(p.weight);
                }
                Err(why) => {
                    match why {
                        Unusable::CircuitOpen => ex.by_open_circuit += 1,
                        Unusable::OverBudget => ex.by_budget += 1,
                        Unusable::CoolingDown | Unusable::AtRpmLimit | Unusable::AtTpmLimit => {
                            ex.by_limits += 1
                        }
                        _ => ex.by_constraints += 1,
                    }
                    explain!(self.explain, "candidate {}: not usable ({why:?})", p.name);
                }
            }
        }
        explain!(
            self.explain,
            "candidates: {} of {}",
            mask.count_ones(),
            ex.providers
        );
        (mask, total)
    }

    /// Runs steps 5–9 and commits the choice to the shard state.
    pub fn run(mut self, state: &mut ShardState) -> Result<Selection, DecideError> {
        let ps = &state.policies[self.slot.get()];
        let mut ex = Exclusions::default();
        let (mask, total) = self.candidates(ps, &mut ex);
        let chosen = match self.attempt_rules(ps) {
            Some(sel) => Some(sel),
            None => self.sticky_or_weighted(state, mask, total),
        };
        let sel = match chosen {
            Some(sel) => sel,
            None => self.no_candidates(&state.policies[self.slot.get()], &mut ex)?,
        };
        self.commit(state, sel);
        if !self.owner {
            state.ask_probes(self.slot, self.policy, self.now_ns);
        }
        Ok(sel)
    }

    /// Step 6: with an `attempt`, the first matching rule retries the previous provider
    /// while `count <= retry`, then goes to its `to`; then the legacy fallback's statuses.
    fn attempt_rules(&mut self, ps: &PolicyState) -> Option<Selection> {
        let attempt = self.ctx.req.attempt.as_ref()?;
        let prev = self.policy.provider_idx(&attempt.previous_provider);
        for (n, rule) in self.policy.fallbacks.iter().enumerate() {
            if !self.ctx.holds(&rule.when) {
                continue;
            }
            explain!(self.explain, "fallback rule {n} matches");
            if attempt.count <= rule.retry {
                match prev.map(|p| (p, self.usable(ps, p))) {
                    Some((p, Ok(()))) => {
                        return Some(Selection {
                            provider: p,
                            reason: Reason::Retry,
                        })
                    }
                    other => explain!(self.explain, "retry not possible: {other:?}"),
                }
            }
            if Some(rule.to) == prev && attempt.count > rule.retry {
                explain!(
                    self.explain,
                    "rule {n}: target is the provider that just failed"
                );
                continue;
            }
            match self.usable(ps, rule.to) {
                Ok(()) => {
                    return Some(Selection {
                        provider: rule.to,
                        reason: Reason::Fallback,
                    })
                }
                Err(why) => explain!(self.explain, "rule {n}: target not usable ({why:?})"),
            }
        }
        let legacy = self.policy.legacy_fallback.as_ref()?;
        let hit = legacy
            .statuses
            .iter()
            .any(|s| status_matches(s, &attempt.status));
        (hit && self.usable(ps, legacy.to).is_ok()).then_some(Selection {
            provider: legacy.to,
            reason: Reason::Fallback,
        })
    }

    /// Steps 7–8: a request with a session gets the session's provider, `sticky` if this
    /// shard already answered it so in this epoch; any other request the first candidate
    /// of its `constraints.order`, else a weighted draw or the balancing strategy's pick.
    fn sticky_or_weighted(
        &mut self,
        state: &mut ShardState,
        mask: u64,
        total: u64,
    ) -> Option<Selection> {
        if mask == 0 {
            return None;
        }
        if let Some(sel) = self.session_choice(state, mask) {
            if !self.ctx.req.constraints.order.is_empty() {
                explain!(
                    self.explain,
                    "order: not applied, the session's provider decides"
                );
            }
            return Some(sel);
        }
        if let Some(idx) = self.ordered(mask) {
            return Some(Selection {
                provider: idx,
                reason: Reason::Weighted,
            });
        }
        let idx = if self.policy.balance.strategy == BalanceStrategy::Weighted {
            let idx = draw(self.policy, mask, total, state.rng.below(total));
            explain!(
                self.explain,
                "weighted draw: {}",
                self.policy.provider(idx).name
            );
            idx
        } else {
            let ps = &state.policies[self.slot.get()];
            let (idx, why) =
                balance::pick(self.policy, ps, mask, total, &mut state.rng, self.now_ns);
            if self.explain.is_some() {
                self.explain_balance(idx, why);
            }
            idx
        };
        Some(Selection {
            provider: idx,
            reason: Reason::Weighted,
        })
    }

    /// `constraints.order`: the first provider listed that is a candidate (`mask`), or
    /// `None` when none is (the request is then chosen for as without an order).
    fn ordered(&mut self, mask: u64) -> Option<ProviderIdx> {
        let order = &self.ctx.req.constraints.order;
        for (n, name) in order.iter().enumerate() {
            match self.policy.provider_idx(name) {
                Some(idx) if mask & idx.bit() != 0 => {
                    explain!(
                        self.explain,
                        "order: {name} chosen (listed {} of {})",
                        n + 1,
                        order.len()
                    );
                    return Some(idx);
                }
                Some(_) => explain!(self.explain, "order: {name} skipped (not a candidate)"),
                None => explain!(self.explain, "order: {name} skipped (not in the policy)"),
            }
        }
        if !order.is_empty() {
            explain!(
                self.explain,
                "order: none of the {} listed is a candidate; chosen as without an order",
                order.len()
            );
        }
        None
    }

    /// The session's top-ranked candidate for its current TTL epoch (`rendezvous`): the
    /// same on every shard and node, whatever this shard has seen. The shard's table only
    /// labels it: `sticky` when it holds that provider for that epoch, else `weighted`, and
    /// `commit` writes the entry, expiring at the epoch's end. `None` without a session.
    fn session_choice(&mut self, state: &ShardState, mask: u64) -> Option<Selection> {
        let sticky = self.policy.sticky.as_ref()?;
        let value = self.ctx.metadata(&sticky.session_key)?;
        let mut buf = [0u8; 9];
        let bytes = session_bytes(value, &mut buf)?;
        let ps = &state.policies[self.slot.get()];
        let session = rendezvous::session_hash(ps.rendezvous_key, bytes);
        let epoch = Epoch::of(session, sticky.ttl_ms, self.now_unix_ms);
        let draw_key = rendezvous::draw_key(session, epoch.number);
        let idx = rendezvous::rank(self.policy, &ps.provider_keys, mask, draw_key)?;
        let key = state.session_key(ps.identity, bytes);
        let held = (idx, epoch.number);
        let name = &self.policy.provider(idx).name;
        if state.sticky.get(key, ps.providers_fp, self.now_ns) == Some(held) {
            explain!(
                self.explain,
                "session: {name} (held here until its epoch ends in {} ms)",
                epoch.remaining_ms
            );
            return Some(Selection {
                provider: idx,
                reason: Reason::Sticky,
            });
        }
        explain!(
            self.explain,
            "session: {name}, ranked first of {} candidates (epoch ends in {} ms)",
            mask.count_ones(),
            epoch.remaining_ms
        );
        let ttl_ns = epoch.remaining_ms.saturating_mul(NS_PER_MS);
        self.sticky_write = Some(StickyWrite {
            key,
            providers_fp: ps.providers_fp,
            held,
            expires_ns: self.now_ns.saturating_add(ttl_ns).max(1),
        });
        Some(Selection {
            provider: idx,
            reason: Reason::Weighted,
        })
    }

    /// Says which strategy chose `idx` and why: the two sampled candidates and their
    /// scores, the lowest cost, or the explore share.
    fn explain_balance(&mut self, idx: ProviderIdx, why: Why) {
        let strategy = self.policy.balance.strategy.as_str();
        let name = |i: ProviderIdx| &self.policy.provider(i).name;
        let shown = |s: Option<f64>| match s {
            Some(s) => format!("{s:.3}"),
            None => "unmeasured".to_owned(),
        };
        let step = match why {
            Why::Explore => format!("balance {strategy}: explore, weighted draw: {}", name(idx)),
            Why::Only => format!("balance {strategy}: only candidate {}", name(idx)),
            Why::TwoChoices { first, second } => format!(
                "balance {strategy}: sampled {} (score {}) and {} (score {}), chose {}",
                name(first.0),
                shown(first.1),
                name(second.0),
                shown(second.1),
                name(idx)
            ),
            Why::Cheapest { cost, tied } => format!(
                "balance {strategy}: lowest cost {cost} ({tied} tied, drawn by weight): {}",
                name(idx)
            ),
            Why::NoCost => format!(
                "balance {strategy}: no candidate's cost is known, weighted draw: {}",
                name(idx)
            ),
        };
        explain!(self.explain, "{step}");
    }

    /// Step 9: fallback rules in order (with the step-9 statuses), then the legacy fallback.
    fn no_candidates(
        &mut self,
        ps: &PolicyState,
        ex: &mut Exclusions,
    ) -> Result<Selection, DecideError> {
        let circuits = ex.by_open_circuit > 0;
        self.ctx.no_candidates = Some(circuits);
        let reason = if circuits {
            Reason::CircuitBreakerFallback
        } else {
            Reason::Fallback
        };
        for (n, rule) in self.policy.fallbacks.iter().enumerate() {
            if !self.ctx.holds(&rule.when) {
                continue;
            }
            ex.fallbacks_tried += 1;
            match self.usable(ps, rule.to) {
                Ok(()) => {
                    return Ok(Selection {
                        provider: rule.to,
                        reason,
                    })
                }
                Err(why) => explain!(self.explain, "rule {n}: target not usable ({why:?})"),
            }
        }
        if let Some(legacy) = &self.policy.legacy_fallback {
            let status = self.ctx.req.attempt.as_ref().map(|a| &*a.status);
            let hit = legacy.on_all_failed
                || status.is_some_and(|s| legacy.statuses.iter().any(|l| status_matches(l, s)));
            if hit {
                ex.fallbacks_tried += 1;
                if self.usable(ps, legacy.to).is_ok() {
                    return Ok(Selection {
                        provider: legacy.to,
                        reason,
                    });
                }
            }
        }
        Err(DecideError::DecisionFailed(*ex))
    }

    /// Spends a half-open probe and writes the session's sticky entry, if it is new.
    fn commit(&mut self, state: &mut ShardState, sel: Selection) {
        let policy = self.policy;
        let slot = self.slot.get();
        if !self.owner {
            state.spend_probe(self.slot, sel.provider);
        } else if let Some(cfg) = &policy.circuit_breaker {
            let transition = state.policies[slot].providers[sel.provider.get()]
                .breaker
                .on_selected(cfg, self.now_ns);
            if transition == Some(Transition::HalfOpened) {
                state.half_opened += 1;
            }
        }
        let limits = policy.provider(sel.provider).limits;
        state.policies[slot].providers[sel.provider.get()]
            .usage
            .decided(limits, self.now_ns);
        let balance = policy.balance;
        if balance.strategy.counts_in_flight() {
            state.policies[slot].providers[sel.provider.get()]
                .in_flight
                .add(1.0, self.now_ns, balance.half_life_ms);
        }
        if let Some(w) = self.sticky_write.take() {
            if w.held.0 == sel.provider {
                state
                    .sticky
                    .put(w.key, w.providers_fp, w.held, w.expires_ns);
            }
        }
    }
}

/// Step 8: the provider owning point `r` of `[0, total)` among the candidates in `mask`.
/// When every weighted provider is a candidate the prefix sums give it by binary search.
pub fn draw(policy: &Policy, mask: u64, total: u64, r: u64) -> ProviderIdx {
    debug_assert!(r < total);
    if total == policy.weights.total {
        let i = policy.weights.cumulative.partition_point(|&c| c <= r);
        return ProviderIdx(i as u8);
    }
    let mut acc = 0u64;
    let mut bits = mask;
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        acc += u64::from(policy.providers[i].weight);
        if r < acc {
            return ProviderIdx(i as u8);
        }
        bits &= bits - 1;
    }
    unreachable!("r {r} outside the candidates' total weight {total}");
}
