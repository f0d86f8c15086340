//! A shard's mutable routing state: rate-limit buckets, circuit breakers, observed
//! latency/cost (and what `balance` strategies read), providers' own usage (`usage`:
//! requests and tokens per minute, cooldowns), sticky sessions and the random
//! source. Owned by one shard, never shared,
//! so nothing here locks.
//!
//! State is indexed like the routing table (policy slot, provider index) so the hot path
//! does no lookups by name. When a new table is swapped in, `adopt` carries every piece of
//! state over by (tenant, policy id, provider name): a reload that does not touch a policy
//! does not reset its breakers, buckets or sessions.

use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::fast::FixedState;

use super::balance::{InFlight, PeakEwma};
use super::breaker::{Breaker, Outcome, Transition};
use super::bucket::TokenBucket;
use super::budget::{self, BudgetBook, Reservations};
use super::rendezvous;
use super::rng::Rng;
use super::sticky::{SessionKey, StickyTable};
use super::sync::{policy_key, Lease, Peer, PeerLease, Placement, Probe, Sent, SyncMsg};
use super::usage::{LimitSignal, ProviderUsage};
use crate::policy::{Policy, PolicySlot, ProviderIdx, RoutingTable};

/// Weight of a new observation in the latency/cost moving averages.
pub const EWMA_ALPHA: f64 = 0.2;

/// An exponentially weighted moving average; the first sample sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    value: f64,
    samples: u64,
}

impl Ewma {
    pub fn observe(&mut self, x: f64) {
        if !x.is_finite() || x < 0.0 {
            return;
        }
        self.value = if self.samples == 0 {
            x
        } else {
            self.value + EWMA_ALPHA * (x - self.value)
        };
        self.samples += 1;
    }

    pub fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderState {
    pub breaker: Breaker,
    pub latency_ms: Ewma,
    pub cost: Ewma,
    /// Tokens per call (results' `usage`): what a budget reserves for the next call.
    pub tokens: Ewma,
    /// What `least_latency` reads (`balance`): the owner's, replicated with the averages.
    pub peak_latency: PeakEwma,
    /// Calls in flight as this shard counts them (`balance`); not replicated.
    pub in_flight: InFlight,
    /// The provider's own limits: this shard's requests, the owner's tokens (replicated)
    /// and cooldown (replicated) (`usage`).
    pub usage: ProviderUsage,
    /// Non-owner shards: the half-open probe the owner granted (`sync`).
    pub(super) probe: Probe,
    /// The owner: what it sent about this provider (`sync`).
    pub(super) sent: Sent,
}

#[derive(Debug, Clone)]
pub struct PolicyState {
    /// Seeded hash of (tenant, policy id): the sticky key's namespace.
    pub identity: u64,
    /// Seeded hash of the provider names in order; sticky entries are tied to it.
    pub providers_fp: u64,
    /// Fixed (unseeded) hash of (tenant, policy id): the rendezvous namespace of the
    /// policy's sessions, the same on every shard and node.
    pub rendezvous_key: u64,
    /// Fixed hash of each provider's name, in provider order, for the rendezvous ranking.
    pub provider_keys: Box<[u64]>,
    pub bucket: Option<TokenBucket>,
    pub providers: Box<[ProviderState]>,
    /// The policy's name among peers (`sync::policy_key`).
    pub key: u64,
    /// The shard that is the authority for this policy's state.
    pub owner: Peer,
    /// Non-owner shards: the tokens leased from the owner.
    pub(super) lease: Lease,
    /// The owner: what each peer holds on lease (empty without a rate limit or peers).
    pub(super) leases: Box<[PeerLease]>,
    /// The owner: a peer had the last token, so the next is the owner's own.
    pub(super) owner_turn: bool,
    /// The owner: one book per `budgets` entry (`budget`).
    pub budgets: Box<[BudgetBook]>,
    /// The owner: tokens asked of the bucket since the cluster last read it (`share`):
    /// this shard's own attempts and its peers' lease asks, the node's demand.
    pub(super) demand: u64,
}

/// Settings fixed at shard start.
#[derive(Debug, Clone, Copy)]
pub struct StateConfig {
    pub sticky_entries: usize,
    /// Seeds the weighted draw and the fingerprint hashers; take it from the OS in
    /// production, fix it in tests.
    pub seed: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            sticky_entries: 1 << 16,
            seed: 0x5eed,
        }
    }
}

/// What feeding one result did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultEffect {
    /// Policies of the tenant that name the provider and saw the result.
    pub policies: usize,
    pub opened: usize,
    pub half_opened: usize,
    pub closed: usize,
}

/// An admin dry-run decides against `dry_run_copy`, not a clone of all of this.
#[derive(Debug, Clone)]
pub struct ShardState {
    pub(super) policies: Vec<PolicyState>,
    pub(super) sticky: StickyTable,
    pub(super) rng: Rng,
    /// Circuits a decision moved from open to half-open, not yet taken for the metrics.
    pub(super) half_opened: u64,
    hash_hi: FixedState,
    hash_lo: FixedState,
    /// Who this shard is among its peers (`sync`); alone by default.
    pub(super) placement: Placement,
    /// Policy keys to slots, for messages from peers.
    pub(super) by_key: std::collections::HashMap<u64, u32, FixedState>,
    /// (tenant, policy id) keys (`rendezvous_key`) to slots, for budget reservations,
    /// which outlive a reload that changes a policy's providers.
    pub(super) by_name: std::collections::HashMap<u64, u32, FixedState>,
    /// Protocol messages to send (`sync_outbox`), bounded by `SYNC_OUTBOX_MAX`.
    pub(super) outbox: Vec<(Peer, SyncMsg)>,
    /// Providers whose averages changed and are not sent yet.
    pub(super) dirty: Vec<(PolicySlot, ProviderIdx)>,
    pub(super) refreshed_ns: u64,
    pub(super) sync_dropped: u64,
    /// Decisions' budget reservations waiting for their results (`budget`).
    pub(super) reservations: Reservations,
    budget_seed: u64,
    /// Counts changes to budgets' ledgers: the state file is written when it moved.
    pub(super) budget_changes: u64,
    /// A cluster node: buckets run at the share the tenant's owner node grants, and a new
    /// bucket starts with none (`share`).
    pub(super) shared_limits: bool,
}

impl ShardState {
    pub fn new(table: &RoutingTable, config: StateConfig, now_ns: u64) -> Self {
        let mut seeds = Rng::new(config.seed);
        let mut state = ShardState {
            policies: Vec::new(),
            sticky: StickyTable::new(config.sticky_entries),
            hash_hi: FixedState::with_seed(seeds.next_u64()),
            hash_lo: FixedState::with_seed(seeds.next_u64()),
            rng: Rng::new(seeds.next_u64()),
            half_opened: 0,
            placement: Placement::single(),
            by_key: Default::default(),
            by_name: Default::default(),
            // Room for the usual traffic of a busy shard between two flushes: the request
            // path's pushes do not allocate.
            outbox: Vec::with_capacity(64),
            dirty: Vec::new(),
            refreshed_ns: 0,
            sync_dropped: 0,
            reservations: Reservations::new(seeds.next_u64()),
            budget_seed: seeds.next_u64(),
            budget_changes: 0,
            shared_limits: false,
        };
        state.policies = table
            .policies()
            .iter()
            .map(|p| state.fresh(p, now_ns))
            .collect();
        state.reown(table);
        state
    }

    fn fresh(&self, policy: &Policy, now_ns: u64) -> PolicyState {
        PolicyState {
            identity: self.hash_pair(&policy.tenant, &policy.id),
            providers_fp: self.providers_fp(policy),
            rendezvous_key: rendezvous::policy_key(&policy.tenant, &policy.id),
            provider_keys: policy
                .providers
                .iter()
                .map(|p| rendezvous::provider_key(&p.name))
                .collect(),
            bucket: policy.rate_limit.map(|l| {
                let mut bucket = TokenBucket::new(l, now_ns);
                if self.shared_limits {
                    // Nothing until the owner node grants this node its share.
                    bucket.set_share(now_ns, 0, 0);
                }
                bucket
            }),
            providers: vec![ProviderState::default(); policy.providers.len()].into(),
            key: policy_key(policy),
            owner: self.placement.owner_of(&policy.tenant),
            lease: Lease::default(),
            leases: Box::new([]),
            owner_turn: false,
            budgets: policy
                .budgets
                .iter()
                .map(|_| BudgetBook {
                    // A cluster node: no room until the owner node grants some.
                    capped: self.shared_limits,
                    ..BudgetBook::new(self.budget_seed)
                })
                .collect(),
            demand: 0,
        }
    }

    fn hash_pair(&self, a: &str, b: &str) -> u64 {
        let mut h = self.hash_hi.build_hasher();
        a.hash(&mut h);
        b.hash(&mut h);
        h.finish()
    }

    fn providers_fp(&self, policy: &Policy) -> u64 {
        let mut h = self.hash_hi.build_hasher();
        policy.providers.iter().for_each(|p| p.name.hash(&mut h));
        h.finish()
    }

    /// The 128-bit fingerprint of a session value within a policy.
    pub(super) fn session_key(&self, identity: u64, session: &[u8]) -> SessionKey {
        let hash = |s: &FixedState| {
            let mut h = s.build_hasher();
            h.write_u64(identity);
            h.write(session);
            h.finish()
        };
        SessionKey {
            hi: hash(&self.hash_hi),
            lo: hash(&self.hash_lo),
        }
    }

    /// Moves to a new routing table, keeping the state of every policy and provider that
    /// is still there (matched by tenant, policy id and provider name). A bucket is kept
    /// only if its limit did not change.
    pub fn adopt(&mut self, old: &RoutingTable, new: &RoutingTable, now_ns: u64) {
        assert_eq!(
            self.policies.len(),
            old.len(),
            "state does not belong to `old`"
        );
        let mut next = Vec::with_capacity(new.len());
        for policy in new.policies() {
            let mut fresh = self.fresh(policy, now_ns);
            if let Some(slot) = old.lookup(&policy.tenant, &policy.id) {
                self.carry(
                    old.policy(slot),
                    &self.policies[slot.get()],
                    policy,
                    &mut fresh,
                );
            }
            next.push(fresh);
        }
        self.policies = next;
        self.dirty.clear();
        self.reown(new);
    }

    fn carry(&self, old_p: &Policy, old_s: &PolicyState, new_p: &Policy, into: &mut PolicyState) {
        if let (Some(b), Some(l)) = (&old_s.bucket, new_p.rate_limit) {
            if b.limit() == l {
                into.bucket = Some(b.clone());
                into.lease = old_s.lease.clone();
                into.leases = old_s.leases.clone();
            }
        }
        for (i, provider) in new_p.providers.iter().enumerate() {
            if let Some(j) = old_p.provider_idx(&provider.name) {
                into.providers[i] = old_s.providers[j.get()].clone();
            }
        }
        // A budget keeps its spend while its scope and window stay, whatever its limits.
        for (i, b) in new_p.budgets.iter().enumerate() {
            let id = budget::budget_id(b);
            if let Some(j) = old_p
                .budgets
                .iter()
                .position(|o| budget::budget_id(o) == id)
            {
                into.budgets[i] = old_s.budgets[j].clone();
            }
        }
    }

    /// What an admin dry-run of `req` decides against: a copy of only what that one
    /// decision reads and writes — its policy's state (bucket, breakers, averages), the
    /// random source, and the sticky entry of its session — so a dry-run costs the same
    /// whatever else the shard holds. Why not `clone`: that copied every policy's state and
    /// the whole sticky table (its configured capacity, 65,536 entries by default) per
    /// call. Other slots are empty placeholders: a decision touches only its own slot.
    pub fn dry_run_copy(
        &self,
        table: &RoutingTable,
        req: &crate::contract::DecideRequest<'_>,
        now_ns: u64,
    ) -> ShardState {
        assert_eq!(
            self.policies.len(),
            table.len(),
            "state does not belong to `table`"
        );
        let mut copy = ShardState {
            policies: Vec::with_capacity(self.policies.len()),
            sticky: StickyTable::new(super::sticky::STICKY_ENTRIES_MIN),
            rng: self.rng.clone(),
            half_opened: 0,
            hash_hi: self.hash_hi.clone(),
            hash_lo: self.hash_lo.clone(),
            placement: self.placement.clone(),
            by_key: Default::default(),
            by_name: Default::default(),
            outbox: Vec::new(),
            dirty: Vec::new(),
            refreshed_ns: u64::MAX,
            sync_dropped: 0,
            reservations: Reservations::new(self.budget_seed),
            budget_seed: self.budget_seed,
            budget_changes: 0,
            shared_limits: self.shared_limits,
        };
        let slot = table.lookup(&req.tenant_id, &req.policy_id);
        copy.policies
            .extend(self.policies.iter().enumerate().map(|(i, p)| {
                if slot.is_some_and(|s| s.get() == i) {
                    p.clone()
                } else {
                    PolicyState {
                        identity: 0,
                        providers_fp: 0,
                        rendezvous_key: 0,
                        provider_keys: Box::new([]),
                        bucket: None,
                        providers: Box::new([]),
                        key: 0,
                        owner: p.owner,
                        lease: Lease::default(),
                        leases: Box::new([]),
                        owner_turn: false,
                        budgets: Box::new([]),
                        demand: 0,
                    }
                }
            }));
        if let Some(slot) = slot {
            self.copy_session(
                table.policy(slot),
                self.policy(slot),
                req,
                now_ns,
                &mut copy,
            );
        }
        copy
    }

    /// The live sticky entry `req`'s session would read, into `copy`'s own table.
    fn copy_session(
        &self,
        policy: &Policy,
        ps: &PolicyState,
        req: &crate::contract::DecideRequest<'_>,
        now_ns: u64,
        copy: &mut ShardState,
    ) {
        let Some(sticky) = &policy.sticky else { return };
        let Some(value) = req.metadata.get(&sticky.session_key) else {
            return;
        };
        let mut buf = [0u8; 9];
        let Some(bytes) = super::condition::session_bytes(value, &mut buf) else {
            return;
        };
        let key = self.session_key(ps.identity, bytes);
        if let Some(held) = self.sticky.get(key, ps.providers_fp, now_ns) {
            // The copy lives for one decision: the entry only has to outlive it.
            copy.sticky.put(key, ps.providers_fp, held, u64::MAX);
        }
    }

    /// The sticky entry `req`'s session would get here, for a request another shard
    /// answers (the owner: a cold lease, an idempotency key). Taken before the request
    /// leaves and applied with `note_session` once the answer names the provider, so the
    /// session's next answer here is labelled `sticky` as if this shard had decided it.
    /// `None` when the policy is not sticky or the request has no session.
    pub fn session_note(
        &self,
        table: &RoutingTable,
        req: &crate::contract::DecideRequest<'_>,
        now: super::Now,
    ) -> Option<SessionNote> {
        let slot = table.lookup(&req.tenant_id, &req.policy_id)?;
        let sticky = table.policy(slot).sticky.as_ref()?;
        let value = req.metadata.get(&sticky.session_key)?;
        let mut buf = [0u8; 9];
        let bytes = super::condition::session_bytes(value, &mut buf)?;
        let ps = &self.policies[slot.get()];
        let session = super::rendezvous::session_hash(ps.rendezvous_key, bytes);
        let epoch = super::rendezvous::Epoch::of(session, sticky.ttl_ms, now.unix_ms);
        Some(SessionNote {
            slot,
            key: self.session_key(ps.identity, bytes),
            providers_fp: ps.providers_fp,
            epoch: epoch.number,
            expires_ns: now
                .mono_ns
                .saturating_add(epoch.remaining_ms.saturating_mul(1_000_000))
                .max(1),
        })
    }

    /// Writes the entry of `note` for `provider`, unless the table changed the policy's
    /// providers meanwhile or does not name it.
    pub fn note_session(&mut self, table: &RoutingTable, note: SessionNote, provider: &str) {
        let Some(ps) = self.policies.get(note.slot.get()) else {
            return;
        };
        if ps.providers_fp != note.providers_fp {
            return;
        }
        let Some(idx) = table.policy(note.slot).provider_idx(provider) else {
            return;
        };
        let held = (idx, note.epoch);
        self.sticky
            .put(note.key, note.providers_fp, held, note.expires_ns);
    }

    pub fn policy(&self, slot: PolicySlot) -> &PolicyState {
        &self.policies[slot.get()]
    }

    pub fn sticky_len(&self) -> usize {
        self.sticky.len()
    }

    /// Circuits that decisions moved from open to half-open since the last call. (Results
    /// report theirs in `ResultEffect`.)
    pub fn take_half_opened(&mut self) -> u64 {
        std::mem::take(&mut self.half_opened)
    }

    /// Feeds an ExecResult (or `POST /v1/results`) for (tenant, provider) to every policy
    /// of the tenant that names the provider: breaker and latency/cost averages.
    /// `outcome` is `None` for a cancelled call, which only updates nothing.
    pub fn record_result(
        &mut self,
        table: &RoutingTable,
        tenant: &str,
        provider: &str,
        observed: Observed,
        now_ns: u64,
    ) -> ResultEffect {
        let signal = LimitSignal::default();
        self.record_result_with(table, tenant, provider, (observed, signal), now_ns)
    }

    /// `record_result`, and what the result says about the provider's own limits: its
    /// tokens (`tpm`) and whether it refused the call for its rate limit (a cooldown).
    pub fn record_result_with(
        &mut self,
        table: &RoutingTable,
        tenant: &str,
        provider: &str,
        (observed, signal): (Observed, LimitSignal),
        now_ns: u64,
    ) -> ResultEffect {
        let mut effect = ResultEffect::default();
        for &(slot, idx) in table.provider_refs(tenant, provider) {
            effect.policies += 1;
            let policy = table.policy(slot);
            let state = &mut self.policies[slot.get()].providers[idx.get()];
            let cooled = state.usage.result(signal, policy.cooldown_ms, now_ns);
            if let Some(tokens) = signal.tokens {
                state.tokens.observe(tokens as f64);
            }
            let transition = record_one(policy, idx, state, observed, now_ns, &mut effect);
            self.result_fed(slot, idx, transition.is_some() || cooled, now_ns);
        }
        effect
    }
}

/// A session's sticky entry, waiting for the provider another shard chose
/// (`ShardState::session_note`).
#[derive(Debug, Clone, Copy)]
pub struct SessionNote {
    slot: PolicySlot,
    key: SessionKey,
    providers_fp: u64,
    epoch: u64,
    expires_ns: u64,
}

/// One observed call outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// `None`: cancelled, counts for nothing.
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    pub cost: Option<f64>,
}

fn record_one(
    policy: &Policy,
    idx: ProviderIdx,
    state: &mut ProviderState,
    observed: Observed,
    now_ns: u64,
    effect: &mut ResultEffect,
) -> Option<Transition> {
    let half_life_ms = policy.balance.half_life_ms;
    if policy.balance.strategy.counts_in_flight() {
        // Any result, a cancelled call's too, ends a call.
        state.in_flight.add(-1.0, now_ns, half_life_ms);
    }
    let outcome = observed.outcome?;
    // Latency of a failed call says little about the provider's speed; cost still counts.
    if outcome == Outcome::Success {
        if let Some(ms) = observed.latency_ms {
            state.latency_ms.observe(ms);
            state.peak_latency.observe(ms, now_ns, half_life_ms);
        }
    }
    if let Some(cost) = observed.cost {
        state.cost.observe(cost);
    }

    debug_assert!(idx.get() < policy.providers.len());
    let cfg = policy.circuit_breaker.as_ref()?;
    let transition = state.breaker.record(cfg, outcome, now_ns);
    match transition {
        Some(Transition::Opened) => effect.opened += 1,
        Some(Transition::HalfOpened) => effect.half_opened += 1,
        Some(Transition::Closed) => effect.closed += 1,
        None => {}
    }
    transition
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first sample sets the average; later ones move it by `EWMA_ALPHA`.
    #[test]
    fn ewma_moves_by_alpha() {
        let mut e = Ewma::default();
        assert_eq!(e.get(), None);
        e.observe(100.0);
        assert_eq!(e.get(), Some(100.0));
        e.observe(200.0);
        assert_eq!(e.get(), Some(120.0));
        e.observe(f64::NAN);
        e.observe(-1.0);
        assert_eq!(e.get(), Some(120.0), "garbage samples are ignored");
    }
}
