//! Rate limits across the nodes of a cluster, with no network hop on a decision's path.
//!
//! Inside a node a tenant's owner shard keeps the bucket and leases tokens to the other
//! shards (`sync`). Across nodes the owner *node* (the tenant's owner among the live
//! members) grants every node, its own included, a **share** of the policy's limit: a
//! rate and a burst that the node's owner shard runs its bucket at
//! (`TokenBucket::set_share`), so the node's shards keep deciding locally and leasing from
//! their own owner shard as on one node. A share is granted for `GRANT_TTL_MS` and renewed
//! every `REPORT_MS` with the node's demand (`ShardState::take_demand`: what its bucket
//! was asked for), so shares follow where the traffic is.
//!
//! Why a share of the rate rather than leases of tokens between nodes: the simulation of
//! a 256-shard cluster (docs/CLUSTER.md) shows leases asked per shard overwhelming a hot
//! tenant's owner; a share is asked once per node and report period, whatever the
//! traffic, and a node's own shards lease from their node's bucket over the rings.
//!
//! **Exact.** The owner hands out shares whose rates and bursts, summed over every node,
//! never exceed the limit's, counting for each node every share it may still be running
//! at: a grant stays counted until it expires, or until the node says that a later one
//! has been in force for `APPLIED_AFTER_MS` (long enough for the leases its shards drew
//! under the old share to run out). So over any window the nodes together admit at most
//! `burst + rate × window`.
//! - **No clock is compared.** A grant carries its lifetime, and the holder counts it from
//!   when it *sent* its ask, which is before the owner granted: a share never lives longer
//!   at its holder than the owner counts it.
//! - **Authority moves conservatively.** An owner that has just become one (at its start,
//!   or when membership moved the tenant to it) grants nothing for `GRANT_TTL_MS` plus the
//!   failover time: by then every node has learnt of the change and every share granted
//!   by the previous owner has run out. The cost is that long a refusal of the tenant's
//!   requests on every node after a start or a failover.
//! - **A share that runs out stops its bucket** (rate and burst zero) until the next
//!   grant: a node cut off from the owner refuses rather than guesses.

use std::collections::{BTreeMap, VecDeque};

use crate::policy::{PolicySlot, RateLimit};

use super::state::ShardState;
use super::sync::LEASE_NS;

/// How long a granted share may be used, from the holder's ask.
pub const GRANT_TTL_MS: u64 = 1_000;
/// How often a node reports its demand and renews its shares.
pub const REPORT_MS: u64 = 200;
/// A node not heard from for this long no longer counts in the demand shares follow.
const DEMAND_HEARD_MS: u64 = 3 * REPORT_MS;
/// A share is in force at its holder for this long before the holder confirms it (so the
/// owner stops counting the shares it replaced): the leases of the holder's shards.
pub const APPLIED_AFTER_MS: u64 = LEASE_NS / 1_000_000;
/// Nodes one book keeps; the asks of more are granted nothing.
pub const BOOK_NODES_MAX: usize = 1_024;
/// Grants one node may have counted at once: one per report over a grant's life, and one.
const GRANTS_PER_NODE_MAX: usize = (GRANT_TTL_MS / REPORT_MS) as usize + 2;

/// What a node asks for one policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareAsk {
    /// `sync::policy_key`: the same on every node for the same policy.
    pub key: u64,
    /// Tokens asked of the node's bucket per second, over its last report period.
    pub demand_per_s: f64,
    /// The newest grant in force at the node for at least `APPLIED_AFTER_MS` (0: none),
    /// and the book that granted it: a confirmation counts only in its own book.
    pub applied: u32,
    pub applied_book: u64,
}

/// What the owner grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareGrant {
    pub key: u64,
    pub rps: u32,
    pub burst: u32,
    /// Counted by the holder from when it sent its ask.
    pub ttl_ms: u64,
    /// Increases with every grant of this book to this node.
    pub seq: u32,
    /// The granting book: a new owner's book numbers its grants afresh.
    pub book: u64,
}

#[derive(Debug, Clone, Copy)]
struct Granted {
    seq: u32,
    rps: u32,
    burst: u32,
    expires_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct NodeShare {
    demand_per_s: f64,
    heard_ms: u64,
    seq: u32,
    /// Every grant the node may still be running at.
    grants: VecDeque<Granted>,
}

impl NodeShare {
    fn forget(&mut self, applied: u32, now_ms: u64) {
        self.grants.retain(|g| now_ms < g.expires_ms);
        // Grants older than the one confirmed in force are no longer run.
        if applied > 0 {
            self.grants.retain(|g| g.seq >= applied);
        }
    }

    fn counted(&self, now_ms: u64) -> (u32, u32) {
        self.grants
            .iter()
            .filter(|g| now_ms < g.expires_ms)
            .fold((0, 0), |(r, b), g| (r.max(g.rps), b.max(g.burst)))
    }
}

/// The owner node's book of one policy's shares; time is the owner's monotonic ms.
#[derive(Debug, Clone)]
pub struct ShareBook {
    id: u64,
    grants_from_ms: u64,
    nodes: BTreeMap<String, NodeShare>,
}

impl ShareBook {
    /// A book of a policy this node owns from `now_ms` on; it grants nothing before
    /// `GRANT_TTL_MS + failover_ms` (see the module doc). `id` names it among every book
    /// any node opens for the policy (a random number).
    pub fn new(id: u64, now_ms: u64, failover_ms: u64) -> Self {
        ShareBook {
            id,
            grants_from_ms: now_ms + GRANT_TTL_MS + failover_ms,
            nodes: BTreeMap::new(),
        }
    }

    /// Answers `node`'s ask under `limit`: its share of the demand every node reported
    /// lately, within what the other nodes may still be running at.
    pub fn grant(
        &mut self,
        node: &str,
        limit: RateLimit,
        ask: ShareAsk,
        now_ms: u64,
    ) -> ShareGrant {
        let refused = ShareGrant {
            key: ask.key,
            rps: 0,
            burst: 0,
            ttl_ms: GRANT_TTL_MS,
            seq: 0,
            book: self.id,
        };
        if !self.nodes.contains_key(node) && self.nodes.len() >= BOOK_NODES_MAX {
            self.nodes
                .retain(|_, n| !n.grants.is_empty() || now_ms < n.heard_ms + DEMAND_HEARD_MS);
            if self.nodes.len() >= BOOK_NODES_MAX {
                return refused;
            }
        }
        let entry = self.nodes.entry(node.to_owned()).or_default();
        entry.demand_per_s = if ask.demand_per_s.is_finite() {
            ask.demand_per_s.max(0.0)
        } else {
            0.0
        };
        entry.heard_ms = now_ms;
        let applied = if ask.applied_book == self.id {
            ask.applied
        } else {
            0
        };
        entry.forget(applied, now_ms);
        if now_ms < self.grants_from_ms {
            return refused;
        }
        let (mut others_rps, mut others_burst, mut total_demand) = (0u64, 0u64, 0.0f64);
        for (id, n) in &self.nodes {
            if now_ms < n.heard_ms + DEMAND_HEARD_MS {
                total_demand += n.demand_per_s;
            }
            if id != node {
                let (r, b) = n.counted(now_ms);
                others_rps += u64::from(r);
                others_burst += u64::from(b);
            }
        }
        let entry = self.nodes.get_mut(node).expect("inserted above");
        let part = if total_demand > 0.0 {
            entry.demand_per_s / total_demand
        } else {
            0.0
        };
        let room_rps = u64::from(limit.requests_per_second).saturating_sub(others_rps);
        let room_burst = u64::from(limit.burst).saturating_sub(others_burst);
        let want_rps = (f64::from(limit.requests_per_second) * part).floor() as u64;
        let want_burst = (f64::from(limit.burst) * part).floor() as u64;
        let rps = want_rps.min(room_rps) as u32;
        // A rate without a burst admits nothing: at least one token when there is room.
        let burst = if rps > 0 {
            want_burst.max(1).min(room_burst) as u32
        } else {
            0
        };
        if entry.grants.len() >= GRANTS_PER_NODE_MAX {
            // Only a node that never confirms gets here: it keeps what it has.
            return refused;
        }
        entry.seq += 1;
        entry.grants.push_back(Granted {
            seq: entry.seq,
            rps,
            burst,
            expires_ms: now_ms + GRANT_TTL_MS,
        });
        ShareGrant {
            key: ask.key,
            rps,
            burst,
            ttl_ms: GRANT_TTL_MS,
            seq: entry.seq,
            book: self.id,
        }
    }
}

/// A node's side of one policy's share: what it runs at, until when, and what it may
/// confirm. Time is the node's monotonic ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldShare {
    /// The book of the grant in force, and when the ask it answered was sent.
    book: u64,
    asked_ms: u64,
    seq: u32,
    expires_ms: u64,
    applied_ms: u64,
    /// The grant before the newest, and when it was applied: confirmed while the newest
    /// is younger than `APPLIED_AFTER_MS`.
    prev_seq: u32,
    /// A grant set the bucket running (its expiry is then counted once).
    running: bool,
}

impl HeldShare {
    /// A grant answering an ask sent at `asked_ms` arrived at `now_ms`; false for an
    /// answer to an ask older than the share in force's (a late answer), which is dropped.
    pub fn granted(&mut self, grant: &ShareGrant, asked_ms: u64, now_ms: u64) -> bool {
        if asked_ms < self.asked_ms {
            return false;
        }
        if grant.book != self.book {
            // A new owner's book: its numbering starts afresh, and nothing of the old
            // book's can be confirmed to it.
            self.book = grant.book;
            self.seq = 0;
            self.prev_seq = 0;
            self.applied_ms = 0;
        } else if grant.seq != 0 && grant.seq <= self.seq {
            return false;
        }
        self.asked_ms = asked_ms;
        if grant.seq != 0 {
            self.prev_seq = if now_ms >= self.applied_ms + APPLIED_AFTER_MS {
                self.seq
            } else {
                self.prev_seq
            };
            self.seq = grant.seq;
        }
        self.applied_ms = now_ms;
        self.expires_ms = asked_ms + grant.ttl_ms;
        self.running = grant.rps > 0;
        true
    }

    /// Whether the share has run out (its bucket must stop).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    /// Whether a grant set the bucket running that has not been stopped since.
    pub fn running(&self) -> bool {
        self.running
    }

    /// The bucket was stopped: the share ran out.
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// The newest grant in force for `APPLIED_AFTER_MS`, and its book: what an ask
    /// confirms.
    pub fn applied(&self, now_ms: u64) -> (u32, u64) {
        let seq = if now_ms >= self.applied_ms + APPLIED_AFTER_MS {
            self.seq
        } else {
            self.prev_seq
        };
        (seq, self.book)
    }
}

impl ShardState {
    /// A cluster node: every bucket this shard owns runs at the share its tenant's owner
    /// node grants, starting with none (module doc), and every budget within the
    /// allowance it grants (`allowance`), starting with none.
    pub fn share_limits(&mut self, now_ns: u64) {
        self.shared_limits = true;
        for ps in &mut self.policies {
            if let Some(bucket) = &mut ps.bucket {
                bucket.set_share(now_ns, 0, 0);
            }
            // And no budget's room until the owner node grants an allowance
            // (`allowance`).
            for book in ps.budgets.iter_mut() {
                book.capped = true;
            }
        }
    }

    /// Runs the policy's bucket at a share of its limit; false when this shard has no
    /// bucket for it (no limit, or not its owner shard).
    pub fn set_share(&mut self, slot: PolicySlot, rps: u32, burst: u32, now_ns: u64) -> bool {
        if !self.owns_slot(slot) {
            return false;
        }
        match &mut self.policies[slot.get()].bucket {
            Some(bucket) => {
                bucket.set_share(now_ns, rps, burst);
                true
            }
            None => false,
        }
    }

    /// Tokens the policy's bucket was asked for since the last call.
    pub fn take_demand(&mut self, slot: PolicySlot) -> u64 {
        std::mem::take(&mut self.policies[slot.get()].demand)
    }

    /// The slot of a policy named by `sync::policy_key`.
    pub fn slot_of_key(&self, key: u64) -> Option<PolicySlot> {
        self.by_key.get(&key).map(|&i| PolicySlot(i))
    }

    /// The policy's key among nodes (`sync::policy_key`).
    pub fn key_of(&self, slot: PolicySlot) -> u64 {
        self.policies[slot.get()].key
    }

    /// Whether this shard is the policy's owner shard (within its node).
    pub fn owns(&self, slot: PolicySlot) -> bool {
        self.owns_slot(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        requests_per_second: 200,
        burst: 30,
    };

    fn ask(demand: f64, applied: u32) -> ShareAsk {
        ShareAsk {
            key: 1,
            demand_per_s: demand,
            applied,
            applied_book: 9,
        }
    }

    /// A new owner grants nothing for a grant's life plus the failover time; then equal
    /// demand gets equal shares, and the shares never sum over the limit.
    #[test]
    fn shares_follow_demand_within_the_limit() {
        let mut book = ShareBook::new(9, 0, 1_000);
        assert_eq!(book.grant("a", LIMIT, ask(500.0, 0), 100).rps, 0);
        let t = 2_000;
        let a = book.grant("a", LIMIT, ask(500.0, 0), t);
        let b = book.grant("b", LIMIT, ask(500.0, 0), t);
        let c = book.grant("c", LIMIT, ask(500.0, 0), t);
        // a asked first, alone in the demand it knew of: everything; b and c share the
        // rest until a's first grant is replaced and confirmed.
        assert_eq!(a.rps, 200);
        assert_eq!((b.rps, c.rps), (0, 0));
        // a's next grants follow the demand; a confirms once the newest is in force.
        let a2 = book.grant("a", LIMIT, ask(500.0, 0), t + 200);
        assert_eq!(a2.rps, 66);
        let a3 = book.grant("a", LIMIT, ask(500.0, a2.seq), t + 400);
        assert_eq!(a3.rps, 66);
        let b2 = book.grant("b", LIMIT, ask(500.0, 0), t + 400);
        let c2 = book.grant("c", LIMIT, ask(500.0, 0), t + 400);
        assert_eq!((b2.rps, c2.rps), (66, 66));
        assert!(a3.burst + b2.burst + c2.burst <= LIMIT.burst);
        assert!(a3.burst >= 1 && b2.burst >= 1);
    }

    /// Whatever the demands and confirmations, the rates and bursts a book counts never
    /// sum over the limit.
    #[test]
    fn the_book_never_hands_out_more_than_the_limit() {
        let mut rng = super::super::rng::Rng::new(3);
        let mut book = ShareBook::new(9, 0, 0);
        let nodes = ["a", "b", "c", "d"];
        let mut held = [HeldShare::default(); 4];
        let mut t = GRANT_TTL_MS;
        for _ in 0..5_000 {
            t += rng.below(60);
            let i = rng.below(4) as usize;
            let demand = [0.0, 10.0, 1_000.0][rng.below(3) as usize];
            let (applied, applied_book) = held[i].applied(t);
            let asked = ShareAsk {
                applied_book,
                ..ask(demand, applied)
            };
            let g = book.grant(nodes[i], LIMIT, asked, t);
            held[i].granted(&g, t.saturating_sub(rng.below(5)), t);
            let (r, b) = book
                .nodes
                .values()
                .map(|n| n.counted(t))
                .fold((0, 0), |(r, b), (x, y)| (r + x, b + y));
            assert!(
                r <= LIMIT.requests_per_second && b <= LIMIT.burst,
                "{r} {b}"
            );
        }
    }

    /// The holder counts a grant from its ask, drops a late one, and confirms a grant
    /// only once it has been in force for `APPLIED_AFTER_MS`.
    #[test]
    fn a_held_share_runs_out_from_its_ask() {
        let mut h = HeldShare::default();
        assert!(h.expired(0));
        let g = |seq, book| ShareGrant {
            key: 1,
            rps: 10,
            burst: 1,
            ttl_ms: GRANT_TTL_MS,
            seq,
            book,
        };
        assert!(h.granted(&g(1, 9), 100, 105));
        assert!(!h.expired(100 + GRANT_TTL_MS - 1));
        assert!(h.expired(100 + GRANT_TTL_MS));
        assert_eq!(h.applied(150), (0, 9));
        assert_eq!(h.applied(105 + APPLIED_AFTER_MS), (1, 9));
        assert!(h.granted(&g(2, 9), 300, 310));
        assert_eq!(h.applied(320), (1, 9));
        assert_eq!(h.applied(310 + APPLIED_AFTER_MS), (2, 9));
        assert!(!h.granted(&g(1, 9), 400, 405), "late");
        assert!(!h.granted(&g(3, 9), 250, 410), "an answer to an older ask");
        // A new owner's book numbers afresh: its first grant is taken, and nothing of
        // the old book is confirmed to it.
        assert!(h.granted(&g(1, 77), 500, 505));
        assert_eq!(h.applied(510), (0, 77));
        assert_eq!(h.applied(505 + APPLIED_AFTER_MS), (1, 77));
    }

    /// A confirmation from another book forgets nothing: the new owner counts what it
    /// granted until it is confirmed in its own numbering.
    #[test]
    fn a_confirmation_counts_only_in_its_own_book() {
        let mut book = ShareBook::new(9, 0, 0);
        let t = GRANT_TTL_MS;
        let first = book.grant("a", LIMIT, ask(100.0, 0), t);
        assert_eq!(first.rps, 200);
        let foreign = ShareAsk {
            applied_book: 5,
            ..ask(100.0, 50)
        };
        book.grant("a", LIMIT, foreign, t + 200);
        let b = book.grant("b", LIMIT, ask(100.0, 0), t + 200);
        assert_eq!(b.rps, 0, "a's first grant is still counted");
    }
}
