//! The state protocol between a tenant's owner and the other shards: how every shard
//! decides every tenant's request on its own and the tenant's limits still hold exactly.
//!
//! A request is decided where it lands. The tenant's owner (its shard under the
//! partition) is the authority for the tenant's state, not a server every request must
//! visit; the other shards hold what they need to decide locally, and messages carry
//! state, never requests:
//!
//! - **Rate limits: leases.** The owner keeps the token bucket. Another shard spends tokens
//!   from a lease the owner granted it, sized to the shard's recent rate and asked for
//!   again when half of the last grant is spent, so it rarely runs dry while the owner
//!   has tokens. The owner refills its bucket only up to the burst less the tokens out on
//!   leases, so the bucket and every lease together never hold more than the burst: over
//!   any window, admissions on all shards stay within `burst + rate × window`. A lease
//!   dies at a fixed instant (`LEASE_NS` after its last grant), after which neither side
//!   counts it. A shard with an empty lease does not wait: it answers `rate_limited` (with
//!   the owner's "next token at" when the owner had none) and its ask is already out.
//! - **Breakers and averages: replicas.** Results go to the owner, which feeds its
//!   breakers and latency/cost averages and sends the outcome to every shard: a circuit
//!   that opens, half-opens or closes at once, averages at most every
//!   `REPLICA_COALESCE_NS`, and every circuit not closed again every `REPLICA_REFRESH_NS`
//!   (so a lost message is repaired). Decisions read the local replica. The peak-latency
//!   estimate `least_latency` reads (`balance`) travels with the averages; in-flight
//!   counts do not: each shard counts its own decisions (decayed), and results subtract
//!   where they land, on the owner.
//! - **Half-open probes: granted by the owner.** A shard that finds a circuit due for a
//!   probe asks the owner, which spends one of the breaker's `half_open_max_calls` on it
//!   exactly as for its own decisions, so at most that many probes are out over all
//!   shards. The granted probe lives `PROBE_LEASE_NS`; until it arrives the provider is
//!   not a candidate there.
//!
//! Peers are abstract (`Peer`): the same messages run between the shards of a node over
//! the rings, and can run between nodes. Messages may be lost, duplicated or late; every
//! ask has a sequence number and a timeout, and nothing a late message says is trusted
//! beyond what the owner still counts. Inside one node the shards share one monotonic
//! clock, so a lease's expiry instant means the same to both sides; between nodes the
//! grant must carry a duration the receiver shortens by the clock uncertainty.

use std::fmt;
use std::sync::Arc;

use super::balance::PeakEwma;
use super::breaker::{Availability, BreakerState, Transition};
use super::state::{Ewma, PolicyState, ProviderState, ShardState};
use super::usage::MinuteWindow;
use crate::policy::{Policy, PolicySlot, ProviderIdx, RoutingTable};

const NS_PER_MS: u64 = 1_000_000;
/// How long a lease's tokens may be spent after its last grant.
pub const LEASE_NS: u64 = 100 * NS_PER_MS;
/// A shard asks for this long of its recent admission rate.
pub const LEASE_HORIZON_NS: u64 = 20 * NS_PER_MS;
/// An ask (lease or probe) not answered in this time is taken as lost and asked again; a
/// refused probe is not asked for again sooner either.
pub const ASK_TIMEOUT_NS: u64 = 50 * NS_PER_MS;
/// How long a granted half-open probe may be used.
pub const PROBE_LEASE_NS: u64 = 100 * NS_PER_MS;
/// Average-only changes of a provider are sent at most this often.
pub const REPLICA_COALESCE_NS: u64 = 10 * NS_PER_MS;
/// Circuits not closed are sent again this often, repairing lost messages.
pub const REPLICA_REFRESH_NS: u64 = 250 * NS_PER_MS;
/// Protocol messages a shard holds for sending; beyond it they are dropped (and counted):
/// the protocol repairs a lost message, an unbounded queue would not be repaired.
pub const SYNC_OUTBOX_MAX: usize = 4_096;

/// A participant of the protocol: a shard of this node (or, later, a node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Peer(pub u32);

impl Peer {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Who this shard is, how many shards there are, and each tenant's owner.
#[derive(Clone)]
pub struct Placement {
    pub me: Peer,
    pub peers: u32,
    owner_of: Arc<dyn Fn(&str) -> Peer + Send + Sync>,
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Placement {{ me: {:?}, peers: {} }}",
            self.me, self.peers
        )
    }
}

impl Placement {
    /// One shard owning every tenant: no protocol at all.
    pub fn single() -> Self {
        Placement::new(Peer(0), 1, |_| Peer(0))
    }

    pub fn new(
        me: Peer,
        peers: u32,
        owner_of: impl Fn(&str) -> Peer + Send + Sync + 'static,
    ) -> Self {
        assert!(me.0 < peers, "peer {me:?} outside 0..{peers}");
        Placement {
            me,
            peers,
            owner_of: Arc::new(owner_of),
        }
    }

    pub fn owner_of(&self, tenant: &str) -> Peer {
        (self.owner_of)(tenant)
    }
}

/// One protocol message. `key` names a policy the same way on every peer
/// (`policy_key`).
#[derive(Debug, Clone, PartialEq)]
pub enum SyncMsg {
    /// A shard asks the owner for `want` tokens; it holds `held` unexpired ones.
    LeaseAsk {
        key: u64,
        seq: u32,
        held: u32,
        want: u32,
    },
    /// The answer to ask `seq`: `tokens` more (maybe 0), all held tokens valid until
    /// `expires_ns`; with none, the next token is due at `next_ns`.
    LeaseGrant {
        key: u64,
        seq: u32,
        tokens: u32,
        expires_ns: u64,
        next_ns: u64,
    },
    /// A shard found `provider`'s circuit due for a probe.
    ProbeAsk { key: u64, provider: u8 },
    /// One probe, usable until `expires_ns`; 0 = refused (the round's probes are out).
    ProbeGrant {
        key: u64,
        provider: u8,
        expires_ns: u64,
    },
    /// The owner's view of a provider: its circuit and averages. Boxed: replicas are
    /// rare (transitions, coalesced averages) and the rings carry every message at the
    /// size of the largest, so the lease messages of the request path stay small.
    Replica {
        key: u64,
        provider: u8,
        view: Box<ReplicaView>,
    },
}

/// What a replica takes from the owner about one provider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaView {
    pub breaker: BreakerState,
    pub latency_ms: Ewma,
    pub cost: Ewma,
    /// `least_latency`'s estimate; its instant is on the clock the node's shards share.
    pub peak_latency: PeakEwma,
    /// Results' tokens over the sliding minute (`tpm`), on the same shared clock.
    pub tokens: MinuteWindow,
    /// The provider is out until this instant (a `rate_limited` result); 0 = not.
    pub cooldown_until_ns: u64,
}

/// The tokens a non-owner shard may spend for one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    tokens: u32,
    expires_ns: u64,
    seq: u32,
    /// When the outstanding ask left, if one is out.
    asked_ns: Option<u64>,
    /// The owner had no token: none expected before this.
    none_until_ns: u64,
    /// Admissions since the last ask, over the time since then: the recent rate.
    taken: u32,
    window_start_ns: u64,
    last_grant: u32,
    /// When the owner last answered an ask: a lease not answered for `LEASE_NS` is cold.
    answered_ns: Option<u64>,
}

impl Lease {
    fn valid(&self, now_ns: u64) -> u32 {
        if now_ns < self.expires_ns {
            self.tokens
        } else {
            0
        }
    }

    /// Spends one token, or says how many milliseconds to wait (≥ 1).
    fn take(&mut self, now_ns: u64) -> Result<(), u64> {
        if self.valid(now_ns) > 0 {
            self.tokens -= 1;
            self.taken = self.taken.saturating_add(1);
            return Ok(());
        }
        self.tokens = 0;
        self.taken = self.taken.saturating_add(1);
        let wait_ns = self.none_until_ns.saturating_sub(now_ns);
        Err(wait_ns.div_ceil(NS_PER_MS).max(1))
    }

    /// An ask to send now, if one is due: half the last grant spent (or none held), no
    /// ask out (or it timed out), and the owner not known to be empty.
    fn ask(&mut self, now_ns: u64, burst: u32, rps: u32) -> Option<(u32, u32, u32)> {
        if self
            .asked_ns
            .is_some_and(|t| now_ns < t.saturating_add(ASK_TIMEOUT_NS))
        {
            return None;
        }
        if now_ns < self.none_until_ns {
            return None;
        }
        let held = self.valid(now_ns);
        // Enough held, and not past half its life: nothing to ask. Past half its life a
        // lease is renewed even when full, so a slow but steady stream keeps it warm.
        let renew = now_ns >= self.expires_ns.saturating_sub(LEASE_NS / 2);
        if held > 0 && held.saturating_mul(2) > self.last_grant && !renew {
            return None;
        }
        let elapsed = now_ns.saturating_sub(self.window_start_ns).max(NS_PER_MS);
        // With no recent admissions (a cold lease) the shard asks for the horizon at the
        // full rate: it cannot know its share yet.
        let want = if self.taken == 0 || self.window_start_ns == 0 {
            (u64::from(rps) * LEASE_HORIZON_NS).div_ceil(1_000_000_000)
        } else {
            (u64::from(self.taken) * LEASE_HORIZON_NS).div_ceil(elapsed)
        };
        let want = want.clamp(1, u64::from(burst.max(1))) as u32;
        self.seq = self.seq.wrapping_add(1);
        self.asked_ns = Some(now_ns);
        self.taken = 0;
        self.window_start_ns = now_ns;
        Some((self.seq, held, want))
    }

    fn granted(&mut self, seq: u32, tokens: u32, expires_ns: u64, next_ns: u64, now_ns: u64) {
        if seq != self.seq || self.asked_ns.is_none() {
            // An answer to an ask given up on: the owner stops counting it when it sees
            // the newer ask (or at its expiry), so dropping it is safe.
            return;
        }
        self.asked_ns = None;
        self.answered_ns = Some(now_ns);
        let held = self.valid(now_ns);
        self.tokens = held + tokens;
        if self.tokens > 0 {
            // The owner counts what it granted plus what we held, until `expires_ns`.
            self.expires_ns = expires_ns;
        }
        if tokens > 0 {
            self.last_grant = tokens;
            self.none_until_ns = 0;
        } else if held == 0 {
            self.last_grant = 0;
            self.none_until_ns = next_ns;
        }
    }

    /// Unexpired tokens held (for views and tests).
    pub fn held(&self, now_ns: u64) -> u32 {
        self.valid(now_ns)
    }
}

/// What the owner counts as out on one shard's lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerLease {
    amount: u32,
    expires_ns: u64,
    last_seq: u32,
    seen: bool,
    /// The peer was told "none before `next_ns`": the next token is promised to it
    /// until this instant, unless the owner's own turn comes first.
    promised_until_ns: u64,
}

impl PeerLease {
    fn out(&self, now_ns: u64) -> u64 {
        if now_ns < self.expires_ns {
            u64::from(self.amount)
        } else {
            0
        }
    }
}

/// A non-owner shard's probe for one provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    expires_ns: u64,
    asked_ns: Option<u64>,
}

/// The owner's bookkeeping of what it sent about a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    dirty: bool,
    pushed_ns: u64,
    changed_ns: u64,
}

/// The key of a policy every peer computes alike: FNV-1a 64 of the tenant, the policy
/// id and the provider names in order. Unseeded on purpose: it names, it does not index
/// a table a client could flood.
pub fn policy_key(policy: &Policy) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(policy.tenant.as_bytes());
    eat(policy.id.as_bytes());
    for p in policy.providers.iter() {
        eat(p.name.as_bytes());
    }
    h
}

impl ShardState {
    /// Places this state among its peers: which policies it is the authority for.
    pub fn place(&mut self, table: &RoutingTable, placement: Placement) {
        self.placement = placement;
        self.reown(table);
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Recomputes each policy's owner and the owner-side lease slots (after `place` or
    /// `adopt`).
    pub(super) fn reown(&mut self, table: &RoutingTable) {
        let peers = self.placement.peers as usize;
        for (i, policy) in table.policies().iter().enumerate() {
            let owner = self.placement.owner_of(&policy.tenant);
            let ps = &mut self.policies[i];
            ps.owner = owner;
            let wants = owner == self.placement.me && ps.bucket.is_some() && peers > 1;
            if !wants {
                ps.leases = Box::new([]);
            } else if ps.leases.len() != peers {
                ps.leases = vec![PeerLease::default(); peers].into();
            }
        }
        self.by_key.clear();
        self.by_name.clear();
        for (i, ps) in self.policies.iter().enumerate() {
            self.by_key.entry(ps.key).or_insert(i as u32);
            self.by_name.entry(ps.rendezvous_key).or_insert(i as u32);
        }
    }

    fn is_owner(&self, ps: &PolicyState) -> bool {
        ps.owner == self.placement.me
    }

    /// Step 2 on this shard: a token from the bucket (owner) or the lease (others).
    pub(super) fn take_token(&mut self, slot: PolicySlot, now_ns: u64) -> Result<(), u64> {
        let me = self.placement.me;
        let ps = &mut self.policies[slot.get()];
        let Some(bucket) = &mut ps.bucket else {
            return Ok(());
        };
        if ps.owner == me {
            ps.demand = ps.demand.saturating_add(1);
            settle(bucket, &ps.leases, now_ns);
            // Turns alternate between the owner's own decisions and peers told to come
            // back for the next token, so a hammered owner does not starve the others.
            let promised = if ps.owner_turn {
                0
            } else {
                ps.leases
                    .iter()
                    .filter(|l| now_ns < l.promised_until_ns)
                    .count() as u32
            };
            // Never promise the whole burst away: the owner's own turn must stay possible.
            let promised = promised.min(bucket.burst().saturating_sub(1));
            let taken = bucket.take_leaving(promised);
            if taken.is_ok() {
                ps.owner_turn = false;
            }
            return taken;
        }
        let taken = ps.lease.take(now_ns);
        self.ask_lease(slot, now_ns);
        taken
    }

    /// Sends the policy's lease ask to its owner when one is due (`Lease::ask`).
    fn ask_lease(&mut self, slot: PolicySlot, now_ns: u64) {
        let ps = &mut self.policies[slot.get()];
        let Some(bucket) = &ps.bucket else {
            return;
        };
        let (burst, rps) = (bucket.burst(), bucket.rate());
        if let Some((seq, held, want)) = ps.lease.ask(now_ns, burst, rps) {
            let (key, owner) = (ps.key, ps.owner);
            let ask = SyncMsg::LeaseAsk {
                key,
                seq,
                held,
                want,
            };
            self.send(owner, ask);
        }
    }

    /// Whether a request for `tenant`'s `policy` should go to the owner instead: this
    /// shard is not the owner, the policy is rate-limited, and the lease is cold — no
    /// token, no ask out, and no word from the owner that it has none (a shard's first
    /// request, or one after an idle spell longer than a lease). Answering
    /// `rate_limited` then would refuse a request the bucket may well admit; the owner
    /// decides it from its bucket instead, and the ask for a lease leaves with it, so
    /// the next requests are decided here. While that ask is out, an empty lease answers
    /// `rate_limited` (retry in 1 ms).
    pub fn lease_cold(
        &mut self,
        table: &RoutingTable,
        tenant: &str,
        policy: &str,
        now_ns: u64,
    ) -> bool {
        let Some(slot) = table.lookup(tenant, policy) else {
            return false;
        };
        let me = self.placement.me;
        let ps = &self.policies[slot.get()];
        if ps.bucket.is_none() {
            return false;
        }
        let lease = &ps.lease;
        let waiting = lease
            .asked_ns
            .is_some_and(|t| now_ns < t.saturating_add(ASK_TIMEOUT_NS));
        let answered = lease
            .answered_ns
            .is_some_and(|t| now_ns < t.saturating_add(LEASE_NS));
        if ps.owner == me || lease.valid(now_ns) > 0 || answered || waiting {
            return false;
        }
        self.ask_lease(slot, now_ns);
        true
    }

    /// After a selection on a non-owner shard: asks the owner for a probe of every
    /// circuit of the policy that is due for one and has none on its way.
    pub(super) fn ask_probes(&mut self, slot: PolicySlot, policy: &Policy, now_ns: u64) {
        let me = self.placement.me;
        let ps = &mut self.policies[slot.get()];
        if ps.owner == me || policy.circuit_breaker.is_none() {
            return;
        }
        let (key, owner) = (ps.key, ps.owner);
        for (i, s) in ps.providers.iter_mut().enumerate() {
            let due = match s.breaker.state() {
                BreakerState::Closed => false,
                BreakerState::Open { until_ns } => now_ns >= until_ns,
                BreakerState::HalfOpen { .. } => true,
            };
            let waiting = s
                .probe
                .asked_ns
                .is_some_and(|t| now_ns < t.saturating_add(ASK_TIMEOUT_NS));
            if due && !waiting && now_ns >= s.probe.expires_ns {
                s.probe.asked_ns = Some(now_ns);
                let msg = SyncMsg::ProbeAsk {
                    key,
                    provider: i as u8,
                };
                push(&mut self.outbox, &mut self.sync_dropped, owner, msg);
            }
        }
    }

    /// A non-owner shard chose a provider whose circuit is not closed: it spends its probe.
    pub(super) fn spend_probe(&mut self, slot: PolicySlot, idx: ProviderIdx) {
        let ps = &mut self.policies[slot.get()];
        let s = &mut ps.providers[idx.get()];
        if s.breaker.state() != BreakerState::Closed {
            s.probe.expires_ns = 0;
        }
    }

    pub(super) fn owns_slot(&self, slot: PolicySlot) -> bool {
        self.is_owner(&self.policies[slot.get()])
    }

    /// The owner fed a result to `(slot, idx)`: a circuit transition or a cooldown
    /// (`urgent`) goes to every peer now, a change of the averages or tokens within
    /// `REPLICA_COALESCE_NS`.
    pub(super) fn result_fed(
        &mut self,
        slot: PolicySlot,
        idx: ProviderIdx,
        urgent: bool,
        now_ns: u64,
    ) {
        if self.placement.peers <= 1 || !self.owns_slot(slot) {
            return;
        }
        let s = &mut self.policies[slot.get()].providers[idx.get()];
        if urgent {
            s.sent.changed_ns = now_ns;
            self.replicate(slot, idx, now_ns);
        } else if !s.sent.dirty {
            s.sent.dirty = true;
            self.dirty.push((slot, idx));
        }
    }

    /// Sends the owner's view of a provider to every other peer.
    pub(super) fn replicate(&mut self, slot: PolicySlot, idx: ProviderIdx, now_ns: u64) {
        let ps = &mut self.policies[slot.get()];
        let key = ps.key;
        let s = &mut ps.providers[idx.get()];
        s.sent.dirty = false;
        s.sent.pushed_ns = now_ns;
        let msg = SyncMsg::Replica {
            key,
            provider: idx.0,
            view: Box::new(ReplicaView {
                breaker: s.breaker.state(),
                latency_ms: s.latency_ms,
                cost: s.cost,
                peak_latency: s.peak_latency,
                tokens: s.usage.tokens,
                cooldown_until_ns: s.usage.cooldown_until_ns,
            }),
        };
        let me = self.placement.me;
        for p in (0..self.placement.peers).map(Peer).filter(|&p| p != me) {
            push(&mut self.outbox, &mut self.sync_dropped, p, msg.clone());
        }
    }

    /// Time-driven work: averages due to be sent, and the periodic resend of every
    /// circuit not closed. Call after each batch of work and from an idle timer.
    pub fn poll_sync(&mut self, table: &RoutingTable, now_ns: u64) {
        if self.placement.peers <= 1 {
            return;
        }
        // `adopt` empties the list with the table it indexes, so every entry is valid.
        let mut i = 0;
        while i < self.dirty.len() {
            let (slot, idx) = self.dirty[i];
            let sent = self.policies[slot.get()].providers[idx.get()].sent;
            if sent.dirty && now_ns < sent.pushed_ns.saturating_add(REPLICA_COALESCE_NS) {
                i += 1;
                continue;
            }
            self.dirty.swap_remove(i);
            // Not dirty any more: a transition sent it meanwhile.
            if sent.dirty {
                self.replicate(slot, idx, now_ns);
            }
        }
        if now_ns < self.refreshed_ns.saturating_add(REPLICA_REFRESH_NS) {
            return;
        }
        self.refreshed_ns = now_ns;
        for (i, policy) in table.policies().iter().enumerate() {
            let slot = PolicySlot(i as u32);
            if policy.circuit_breaker.is_none() || !self.owns_slot(slot) {
                continue;
            }
            for j in 0..policy.providers.len() {
                let s = &self.policies[i].providers[j];
                let recent = now_ns < s.sent.changed_ns.saturating_add(2 * REPLICA_REFRESH_NS);
                let cooling = now_ns < s.usage.cooldown_until_ns;
                if s.breaker.state() != BreakerState::Closed || recent || cooling {
                    self.replicate(slot, ProviderIdx(j as u8), now_ns);
                }
            }
        }
    }

    /// Handles a message from `from`; answers go to the outbox.
    pub fn on_sync(&mut self, table: &RoutingTable, from: Peer, msg: SyncMsg, now_ns: u64) {
        let key = match &msg {
            SyncMsg::LeaseAsk { key, .. }
            | SyncMsg::LeaseGrant { key, .. }
            | SyncMsg::ProbeAsk { key, .. }
            | SyncMsg::ProbeGrant { key, .. }
            | SyncMsg::Replica { key, .. } => *key,
        };
        // A policy this table does not have (a reload in between): nothing to do; the
        // asker times out and asks about its own table's policy.
        let Some(&i) = self.by_key.get(&key) else {
            return;
        };
        let slot = PolicySlot(i);
        let me = self.placement.me;
        match msg {
            SyncMsg::LeaseAsk {
                seq, held, want, ..
            } => self.lease_ask(slot, from, seq, held, want, now_ns),
            SyncMsg::LeaseGrant {
                seq,
                tokens,
                expires_ns,
                next_ns,
                ..
            } => {
                let ps = &mut self.policies[i as usize];
                if ps.owner == from && from != me {
                    ps.lease.granted(seq, tokens, expires_ns, next_ns, now_ns);
                }
            }
            SyncMsg::ProbeAsk { provider, .. } => {
                self.probe_ask(table, slot, from, provider, now_ns)
            }
            SyncMsg::ProbeGrant {
                provider,
                expires_ns,
                ..
            } => {
                let ps = &mut self.policies[i as usize];
                if ps.owner != from || from == me {
                    return;
                }
                if let Some(s) = ps.providers.get_mut(usize::from(provider)) {
                    s.probe.asked_ns = if expires_ns > now_ns {
                        s.probe.expires_ns = expires_ns;
                        None
                    } else {
                        // Refused: not asked for again before the ask timeout.
                        Some(now_ns)
                    };
                }
            }
            SyncMsg::Replica { provider, view, .. } => {
                let ReplicaView {
                    breaker,
                    latency_ms,
                    cost,
                    peak_latency,
                    tokens,
                    cooldown_until_ns,
                } = *view;
                let ps = &mut self.policies[i as usize];
                if ps.owner != from || from == me {
                    return;
                }
                if let Some(s) = ps.providers.get_mut(usize::from(provider)) {
                    s.breaker.replicate(breaker);
                    s.latency_ms = latency_ms;
                    s.cost = cost;
                    s.peak_latency = peak_latency;
                    s.usage.tokens = tokens;
                    s.usage.cooldown_until_ns = cooldown_until_ns;
                    if breaker == BreakerState::Closed {
                        s.probe = Probe::default();
                    }
                }
            }
        }
    }

    fn lease_ask(
        &mut self,
        slot: PolicySlot,
        from: Peer,
        seq: u32,
        held: u32,
        want: u32,
        now_ns: u64,
    ) {
        let peers = self.placement.peers;
        let ps = &mut self.policies[slot.get()];
        let key = ps.key;
        let (Some(bucket), Some(_)) = (&mut ps.bucket, ps.leases.get(from.index())) else {
            return;
        };
        settle(bucket, &ps.leases, now_ns);
        ps.demand = ps.demand.saturating_add(u64::from(want));
        let pl = &mut ps.leases[from.index()];
        // Older than an ask already answered (late or repeated): its answer would be
        // dropped by the asker anyway.
        if pl.seen && seq.wrapping_sub(pl.last_seq) as i32 <= 0 {
            return;
        }
        pl.seen = true;
        pl.last_seq = seq;
        // The asker holds at most `held` now and drops any answer to an older ask.
        pl.amount = if now_ns < pl.expires_ns {
            pl.amount.min(held)
        } else {
            0
        };
        let fair = (bucket.burst() / peers).max(1);
        let want = want.min(fair.saturating_sub(pl.amount));
        let leased: u64 = ps.leases.iter().map(|l| l.out(now_ns)).sum();
        let bucket = ps.bucket.as_mut().expect("checked above");
        let (tokens, next_ns) = bucket.grant(now_ns, want, leased);
        let pl = &mut ps.leases[from.index()];
        pl.amount += tokens;
        if pl.amount > 0 {
            // A grant, or the renewal of what the asker holds: both sides count it until
            // the same instant.
            pl.expires_ns = now_ns + LEASE_NS;
        }
        if tokens > 0 {
            pl.promised_until_ns = 0;
            ps.owner_turn = true;
        } else if held == 0 {
            pl.promised_until_ns = next_ns.saturating_add(ASK_TIMEOUT_NS);
        }
        let expires_ns = if pl.amount > 0 { pl.expires_ns } else { 0 };
        let msg = SyncMsg::LeaseGrant {
            key,
            seq,
            tokens,
            expires_ns,
            next_ns,
        };
        self.send(from, msg);
    }

    fn probe_ask(
        &mut self,
        table: &RoutingTable,
        slot: PolicySlot,
        from: Peer,
        provider: u8,
        now_ns: u64,
    ) {
        let policy = table.policy(slot);
        let ps = &mut self.policies[slot.get()];
        if ps.owner != self.placement.me {
            return;
        }
        let (Some(cfg), Some(s)) = (
            &policy.circuit_breaker,
            ps.providers.get_mut(usize::from(provider)),
        ) else {
            return;
        };
        let key = ps.key;
        let expires_ns = if s.breaker.availability(cfg, now_ns) == Availability::Probe {
            let transition = s.breaker.on_selected(cfg, now_ns);
            // The probe dies with its round: a round goes stale `timeout_ms` after it
            // began, and the next round's quota must not meet this round's leftovers.
            let round_end = match s.breaker.state() {
                BreakerState::HalfOpen { since_ns, .. } => {
                    since_ns.saturating_add(cfg.timeout_ms * NS_PER_MS)
                }
                _ => now_ns,
            };
            if transition == Some(Transition::HalfOpened) {
                self.half_opened += 1;
                let idx = ProviderIdx(provider);
                self.policies[slot.get()].providers[idx.get()]
                    .sent
                    .changed_ns = now_ns;
                self.replicate(slot, idx, now_ns);
            }
            round_end.min(now_ns + PROBE_LEASE_NS)
        } else {
            0
        };
        let msg = SyncMsg::ProbeGrant {
            key,
            provider,
            expires_ns,
        };
        self.send(from, msg);
    }

    fn send(&mut self, to: Peer, msg: SyncMsg) {
        push(&mut self.outbox, &mut self.sync_dropped, to, msg);
    }

    /// Messages to send, oldest first; the driver empties it after each batch of work.
    pub fn sync_outbox(&mut self) -> &mut Vec<(Peer, SyncMsg)> {
        &mut self.outbox
    }

    /// Messages dropped because the outbox was full, since the last call.
    pub fn take_sync_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.sync_dropped)
    }

    /// This shard's lease of a policy (non-owner shards).
    pub fn lease(&self, slot: PolicySlot) -> &Lease {
        &self.policies[slot.get()].lease
    }

    /// Tokens the owner counts as out on leases of a policy.
    pub fn leased(&self, slot: PolicySlot, now_ns: u64) -> u64 {
        self.policies[slot.get()]
            .leases
            .iter()
            .map(|l| l.out(now_ns))
            .sum()
    }

    /// A provider's state as this shard sees it.
    pub fn provider_state(&self, slot: PolicySlot, idx: ProviderIdx) -> &ProviderState {
        &self.policies[slot.get()].providers[idx.get()]
    }
}

/// How a provider stands for a decision on this shard. The owner reads its breaker;
/// another shard reads its replica and may use a circuit due for a probe only with a probe
/// the owner granted.
pub(super) fn availability(
    owner: bool,
    s: &ProviderState,
    cfg: &crate::policy::BreakerConfig,
    now_ns: u64,
) -> Availability {
    if owner {
        return s.breaker.availability(cfg, now_ns);
    }
    match s.breaker.state() {
        BreakerState::Closed => Availability::Closed,
        BreakerState::Open { until_ns } if now_ns < until_ns => Availability::Open,
        _ if now_ns < s.probe.expires_ns => Availability::Probe,
        _ => Availability::Open,
    }
}

/// Refills the owner's bucket up to `now_ns`, segment by segment: the room a lease holds
/// frees at its expiry, not before, so refill that accrued while the room was taken is
/// not credited when it frees (that would mint tokens).
fn settle(bucket: &mut super::bucket::TokenBucket, leases: &[PeerLease], now_ns: u64) {
    loop {
        let from = bucket.refilled_ns();
        let next = leases
            .iter()
            .filter(|l| l.amount > 0 && l.expires_ns > from && l.expires_ns <= now_ns)
            .map(|l| l.expires_ns)
            .min();
        let Some(at) = next else { break };
        let leased = leases.iter().map(|l| l.out(at - 1)).sum();
        bucket.refill_below(at, leased);
    }
    let leased = leases.iter().map(|l| l.out(now_ns)).sum();
    bucket.refill_below(now_ns, leased);
}

fn push(outbox: &mut Vec<(Peer, SyncMsg)>, dropped: &mut u64, to: Peer, msg: SyncMsg) {
    if outbox.len() >= SYNC_OUTBOX_MAX {
        *dropped += 1;
        return;
    }
    outbox.push((to, msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outbox holds `SYNC_OUTBOX_MAX` messages; the next is dropped and counted,
    /// never queued.
    #[test]
    fn a_full_outbox_drops_and_counts() {
        let (mut outbox, mut dropped) = (Vec::new(), 0);
        let msg = SyncMsg::ProbeAsk {
            key: 1,
            provider: 0,
        };
        for _ in 0..SYNC_OUTBOX_MAX + 3 {
            push(&mut outbox, &mut dropped, Peer(1), msg.clone());
        }
        assert_eq!(outbox.len(), SYNC_OUTBOX_MAX);
        assert_eq!(dropped, 3);
    }
}
