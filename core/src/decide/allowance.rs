//! Budgets across the nodes of a cluster, with no network hop on a decision's path.
//!
//! Inside a node a budgeted policy is decided on the tenant's owner shard, whose one
//! ledger keeps it exact (`budget`). Across nodes each node keeps its own ledger — the
//! decisions it made and their settlements, which it matches because every accepted
//! result reaches every node — and the tenant's owner *node* grants each other node an
//! **allowance** per budget window: the most that node may have committed in it (a
//! cap on its own ledger's requests, cost and tokens). A node decides within its
//! allowance where the request lands; a decision its allowance cannot take is not
//! refused there but sent to the owner node (`Exceeded::short`), which decides against
//! the budget itself. So steady traffic crosses nothing, and a nearly spent budget is
//! still spent to its limit.
//!
//! Why a cap on a node's own ledger rather than reservations shipped to the owner: a
//! reservation is settled by its result, and results already reach every node, so the
//! node that reserved settles it and only its totals travel — once per report, whatever
//! the traffic. Why not a share of the limit, as for a rate (`share`): spend accumulates
//! over a window (a month, for some budgets), so a share moved to another node would
//! have to move the spend with it; a cap over what a node has already committed moves
//! nothing.
//!
//! **Exact.** The owner counts for every other node the most it may have committed: the
//! highest cap it granted that may still be in force (a grant is counted for
//! `ALLOWANCE_TTL_MS + COUNTED_AFTER_MS` from its granting; the holder stops using it
//! `ALLOWANCE_TTL_MS` after it *asked*, which was earlier), or what the node last
//! reported, whichever is more. A node names in each report the grant it holds, and a
//! holder takes a grant only when it answers a later ask than the one it holds, so the
//! grants before the named one are no longer counted. It admits its own decisions, and
//! grants caps, only within the budget less all of that (`WindowSpend::outside`). So the nodes together
//! commit at most the limit, as one node does — a call that costs more than its
//! reservation can pass it by that difference, as on one node.
//! - **Authority moves conservatively.** A new owner grants no room, and admits nothing
//!   itself, until the caps the previous owner granted have run out and every node has
//!   reported to it (`AllowBook::ready`): that long the tenant's budgeted decisions are
//!   answered `overloaded` on every node, as a new owner of a rate limit grants no share.
//!   Every node reports all its windows afresh to a new owner
//!   (`ShardState::allowance_owner_changed`).
//! - **A vanished owner's own spend** reaches the next owner through the others: each
//!   answer tells the holder what the owner had committed itself (`AllowGrant::owner`),
//!   and a holder reports that to the next owner, which counts it for the vanished node
//!   (`AllowBook::count_seen`). Only what it admitted in its last report period is lost
//!   (docs/CLUSTER.md).
//! - **A report carries totals, not increments**, and a node resends a window's until the
//!   owner acknowledged it: a lost report is repeated, never counted twice.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::budget::{budget_id, window_bounds, Figures, Ledger, WindowSpend, SCOPE_VALUES_MAX};
use super::state::ShardState;
use crate::policy::{Policy, PolicySlot};

/// How long a granted cap may be used, from the holder's ask.
pub const ALLOWANCE_TTL_MS: u64 = 1_000;
/// How much longer than that the owner counts a grant: the holder drops a cap at its
/// report tick before the cap's end, and its report saying what it committed under it
/// must reach the owner before the owner stops counting the cap.
pub const COUNTED_AFTER_MS: u64 = 1_000;
/// Nodes one window of a book counts; the asks of more are granted no room.
pub const ALLOWANCE_NODES_MAX: usize = 1_024;
/// Windows one book keeps (every scope value of every budget of a policy, twice: a
/// window and the one after it); asks for more are granted no room.
pub const ALLOWANCE_WINDOWS_MAX: usize = 32_768;
const _: () =
    assert!(2 * crate::policy::BUDGETS_PER_POLICY_MAX * SCOPE_VALUES_MAX == ALLOWANCE_WINDOWS_MAX);
/// Grants one node may have counted at once in one window.
const GRANTS_PER_WINDOW_MAX: usize = 16;

/// One window of one budget's scope value: what an ask and a grant are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WindowKey {
    /// `budget::budget_id`.
    pub budget: u64,
    /// The scope value's hash.
    pub scope: u64,
    pub start_ms: u64,
}

/// What a node reports of one window, and whether it wants room there.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowAsk {
    pub window: WindowKey,
    /// The scope value as text (the owner may not have counted it yet).
    pub value: Box<str>,
    /// The node's own ledger: requests, settled plus reserved cost and tokens.
    pub committed: Figures,
    /// A decision wanted room in the window since the last report.
    pub want: bool,
    /// The grant the node holds in the window (0: none yet), and the book that granted
    /// it: grants before it are no longer used.
    pub held: u32,
    pub held_book: u64,
}

/// The owner's answer to one window of a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllowGrant {
    /// The most the node may have committed in the window.
    pub cap: Figures,
    /// Increases with every grant of a window's room to a node (0: no room granted, the
    /// cap is what the node reported).
    pub seq: u32,
    pub book: u64,
    /// The owner's own committed figures in the window, for the holder to pass on to a
    /// next owner should this one vanish (`AllowBook::count_seen`).
    pub owner: Figures,
}

#[derive(Debug, Clone, Default)]
struct NodeAllow {
    reported: Figures,
    seq: u32,
    /// (seq, cap, counted until) of every grant that may still be in force.
    grants: VecDeque<(u32, Figures, u64)>,
}

impl NodeAllow {
    /// The most the node may have committed: its report, or a cap still in force.
    fn counted(&self, now_ms: u64) -> Figures {
        self.grants
            .iter()
            .filter(|(_, _, until)| now_ms < *until)
            .fold(self.reported, |a, (_, c, _)| max(a, *c))
    }
}

fn max(a: Figures, b: Figures) -> Figures {
    Figures {
        requests: a.requests.max(b.requests),
        cost: a.cost.max(b.cost),
        tokens: a.tokens.max(b.tokens),
    }
}

fn sum(a: Figures, b: Figures) -> Figures {
    Figures {
        requests: a.requests.saturating_add(b.requests),
        cost: a.cost + b.cost,
        tokens: a.tokens.saturating_add(b.tokens),
    }
}

/// The owner node's book of one policy's allowances; time is the owner's monotonic ms.
#[derive(Debug, Clone)]
pub struct AllowBook {
    id: u64,
    ready_ms: u64,
    windows: HashMap<WindowKey, BTreeMap<String, NodeAllow>>,
}

/// A budget's limits: requests, cost, tokens (none: not limited).
pub type Limits = (Option<u64>, Option<f64>, Option<u64>);

impl AllowBook {
    /// A book of a policy this node owns from `now_ms` on (see `ready`); `id` names it
    /// among every book any node opens for the policy (a random number).
    pub fn new(id: u64, now_ms: u64, failover_ms: u64) -> Self {
        AllowBook {
            id,
            ready_ms: now_ms + ALLOWANCE_TTL_MS + COUNTED_AFTER_MS + failover_ms,
            windows: HashMap::new(),
        }
    }

    /// Whether the owner may admit and grant: the previous owner's caps have run out and
    /// every live node has reported (module doc).
    pub fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.ready_ms
    }

    /// What the nodes other than the owner may have committed in `window`.
    pub fn outside(&self, window: &WindowKey, now_ms: u64) -> Figures {
        self.windows
            .get(window)
            .map_or(Figures::default(), |nodes| {
                nodes
                    .values()
                    .fold(Figures::default(), |a, n| sum(a, n.counted(now_ms)))
            })
    }

    /// Of `outside`, what the nodes reported having committed (without room they hold).
    pub fn outside_reported(&self, window: &WindowKey) -> Figures {
        self.windows
            .get(window)
            .map_or(Figures::default(), |nodes| {
                nodes
                    .values()
                    .fold(Figures::default(), |a, n| sum(a, n.reported))
            })
    }

    /// Takes `node`'s report of a window and answers with its cap there. `own` is the
    /// owner's own committed figures in the window; `limits` are the budget's, and none
    /// when the window is not the budget's current one at the owner (room is granted in
    /// that one only); `live`: the live nodes, the owner included, among which what is
    /// left is split.
    pub fn grant(
        &mut self,
        node: &str,
        (limits, own): (Option<Limits>, Figures),
        ask: &AllowAsk,
        live: usize,
        now_ms: u64,
    ) -> AllowGrant {
        let refused = AllowGrant {
            cap: ask.committed,
            seq: 0,
            book: self.id,
            owner: own,
        };
        let ready = self.ready(now_ms);
        if !self.windows.contains_key(&ask.window) && self.windows.len() >= ALLOWANCE_WINDOWS_MAX {
            return refused;
        }
        let nodes = self.windows.entry(ask.window).or_default();
        if !nodes.contains_key(node) && nodes.len() >= ALLOWANCE_NODES_MAX {
            return refused;
        }
        let entry = nodes.entry(node.to_owned()).or_default();
        entry.reported = ask.committed;
        let held = if ask.held_book == self.id {
            ask.held
        } else {
            0
        };
        entry
            .grants
            .retain(|&(seq, _, until)| now_ms < until && seq >= held);
        let Some(limits) = limits.filter(|_| ask.want && ready) else {
            return refused;
        };
        if entry.grants.len() >= GRANTS_PER_WINDOW_MAX {
            return refused;
        }
        let others = nodes
            .iter()
            .filter(|(id, _)| id.as_str() != node)
            .fold(own, |a, (_, n)| sum(a, n.counted(now_ms)));
        let rep = ask.committed;
        let parts = live.max(1) as u64;
        let (max_requests, max_cost, max_tokens) = limits;
        let cap = Figures {
            requests: max_requests.map_or(u64::MAX, |l| {
                let free = l
                    .saturating_sub(others.requests)
                    .saturating_sub(rep.requests);
                rep.requests + free / parts
            }),
            cost: max_cost.map_or(f64::INFINITY, |l| {
                let free = (l - others.cost - rep.cost).max(0.0);
                rep.cost + free / parts as f64
            }),
            tokens: max_tokens.map_or(u64::MAX, |l| {
                let free = l.saturating_sub(others.tokens).saturating_sub(rep.tokens);
                rep.tokens + free / parts
            }),
        };
        let entry = nodes.get_mut(node).expect("inserted above");
        entry.seq += 1;
        let until = now_ms + ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        entry.grants.push_back((entry.seq, cap, until));
        AllowGrant {
            cap,
            seq: entry.seq,
            book: self.id,
            owner: own,
        }
    }

    /// Counts what another node said a previous owner, `node`, had committed itself in
    /// `window` (`AllowGrant::owner`): at least that stays counted for `node`, so a
    /// vanished owner's spend is not granted again (module doc).
    pub fn count_seen(&mut self, node: &str, window: &WindowKey, seen: Figures) {
        if !self.windows.contains_key(window) && self.windows.len() >= ALLOWANCE_WINDOWS_MAX {
            return;
        }
        let nodes = self.windows.entry(*window).or_default();
        if !nodes.contains_key(node) && nodes.len() >= ALLOWANCE_NODES_MAX {
            return;
        }
        let entry = nodes.entry(node.to_owned()).or_default();
        entry.reported = max(entry.reported, seen);
    }

    /// The windows the book counts.
    pub fn windows(&self) -> Vec<WindowKey> {
        self.windows.keys().copied().collect()
    }

    /// Forgets the windows `keep` says are over.
    pub fn retain(&mut self, mut keep: impl FnMut(&WindowKey) -> bool) {
        self.windows.retain(|w, _| keep(w));
    }
}

impl ShardState {
    /// Whether the policy's budgets admit only within allowances (`BudgetBook::capped`).
    pub fn set_capped(&mut self, slot: PolicySlot, capped: bool) {
        for book in self.policies[slot.get()].budgets.iter_mut() {
            book.capped = capped;
        }
    }

    /// A holder's report: every window of `policy` whose committed figures the owner has
    /// not acknowledged, or where a decision wanted room since the last report.
    pub fn allowance_asks(&mut self, slot: PolicySlot, policy: &Policy) -> Vec<AllowAsk> {
        let mut asks = Vec::new();
        let books = self.policies[slot.get()].budgets.iter_mut();
        for (budget, book) in policy.budgets.iter().zip(books) {
            let id = budget_id(budget);
            for (&scope, ledger) in book.ledgers.iter_mut() {
                for w in ledger.windows.iter_mut() {
                    let committed = w.committed();
                    if !w.wanted && committed == w.reported {
                        continue;
                    }
                    asks.push(AllowAsk {
                        window: WindowKey {
                            budget: id,
                            scope,
                            start_ms: w.start_ms,
                        },
                        value: ledger.value.clone(),
                        committed,
                        want: std::mem::take(&mut w.wanted),
                        held: w.cap_seq,
                        held_book: w.cap_book,
                    });
                }
            }
        }
        asks
    }

    /// The owner node answered a report: `acked` is what it now knows of the window and
    /// `grant` what this node may commit there until `until_ms` (its monotonic clock,
    /// counted from the ask). An answer to an earlier ask than the held grant's is
    /// dropped: the owner may have stopped counting it (`AllowAsk::held`).
    pub fn allowance_granted(
        &mut self,
        slot: PolicySlot,
        policy: &Policy,
        window: &WindowKey,
        (acked, grant): (Figures, AllowGrant),
        until_ms: u64,
    ) {
        if let Some(w) = self.window_at(slot, policy, window) {
            w.reported = acked;
            if until_ms < w.cap_until_ms {
                return;
            }
            w.cap = Some(grant.cap);
            w.cap_until_ms = until_ms;
            if grant.seq != 0 || grant.book != w.cap_book {
                w.cap_seq = grant.seq;
                w.cap_book = grant.book;
            }
        }
    }

    /// The owner's side, every report period: what the other nodes may have committed in
    /// `window` and, of that, what they reported (`WindowSpend::outside`), where this
    /// shard's ledger has the window.
    pub fn set_outside(
        &mut self,
        slot: PolicySlot,
        policy: &Policy,
        window: &WindowKey,
        (outside, reported): (Figures, Figures),
    ) {
        if let Some(w) = self.window_at(slot, policy, window) {
            w.outside = outside;
            w.outside_reported = reported;
        }
    }

    /// The policy's tenant has a new owner node: every window is reported to it afresh.
    pub fn allowance_owner_changed(&mut self, slot: PolicySlot) {
        for book in self.policies[slot.get()].budgets.iter_mut() {
            for ledger in book.ledgers.values_mut() {
                for w in ledger.windows.iter_mut() {
                    w.reported = Figures::default();
                }
            }
        }
    }

    /// Drops the caps that end before `before_ms` (the holder's monotonic clock).
    pub fn drop_allowances(&mut self, slot: PolicySlot, before_ms: u64) {
        for book in self.policies[slot.get()].budgets.iter_mut() {
            for ledger in book.ledgers.values_mut() {
                for w in ledger.windows.iter_mut() {
                    if w.cap.is_some() && w.cap_until_ms < before_ms {
                        w.cap = None;
                    }
                }
            }
        }
    }

    fn window_at(
        &mut self,
        slot: PolicySlot,
        policy: &Policy,
        window: &WindowKey,
    ) -> Option<&mut WindowSpend> {
        let j = policy
            .budgets
            .iter()
            .position(|b| budget_id(b) == window.budget)?;
        let ledger = self.policies[slot.get()].budgets[j]
            .ledgers
            .get_mut(&window.scope)?;
        ledger
            .windows
            .iter_mut()
            .find(|w| w.start_ms == window.start_ms)
    }

    /// The owner's side of a report: its own ledger's current window for `window`
    /// (opened, and its scope value counted, when new; `None` when the window is not the
    /// budget's current one at `now_unix_ms`, or the budget counts `SCOPE_VALUES_MAX`
    /// values already), and the budget's limits.
    pub fn owner_window(
        &mut self,
        slot: PolicySlot,
        policy: &Policy,
        window: &WindowKey,
        value: &str,
        now_unix_ms: u64,
    ) -> Option<(&mut WindowSpend, Limits)> {
        let j = policy
            .budgets
            .iter()
            .position(|b| budget_id(b) == window.budget)?;
        let budget = &policy.budgets[j];
        if window_bounds(budget.window, now_unix_ms).0 != window.start_ms {
            return None;
        }
        let book = &mut self.policies[slot.get()].budgets[j];
        if !book.ledgers.contains_key(&window.scope) {
            if book.ledgers.len() >= SCOPE_VALUES_MAX {
                return None;
            }
            let ledger = Ledger {
                value: value.into(),
                windows: VecDeque::new(),
            };
            book.ledgers.insert(window.scope, ledger);
        }
        let ledger = book.ledgers.get_mut(&window.scope)?;
        let w = ledger.current(budget.window, now_unix_ms);
        (w.start_ms == window.start_ms)
            .then_some((w, (budget.max_requests, budget.max_cost, budget.max_tokens)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::share::REPORT_MS;

    const LIMITS: Limits = (Some(100), Some(10.0), None);
    const W: WindowKey = WindowKey {
        budget: 1,
        scope: 2,
        start_ms: 0,
    };

    fn ask(requests: u64, cost: f64, want: bool) -> AllowAsk {
        AllowAsk {
            window: W,
            value: "".into(),
            committed: Figures {
                requests,
                cost,
                tokens: 0,
            },
            want,
            held: 0,
            held_book: 9,
        }
    }

    /// A new owner grants no room until the old caps ran out; then each node gets its
    /// part of what is left, and a node that wants none keeps what it committed.
    #[test]
    fn caps_split_what_is_left() {
        let mut book = AllowBook::new(9, 0, 1_000);
        let own = Figures::default();
        let early = book
            .grant("a", (Some(LIMITS), own), &ask(4, 1.0, true), 3, 10)
            .cap;
        assert_eq!((early.requests, early.cost), (4, 1.0), "not ready: no room");
        let t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS + 1_000;
        let a = book
            .grant("a", (Some(LIMITS), own), &ask(4, 1.0, true), 3, t)
            .cap;
        // 100 - 4 = 96 left, a third of it: 32 more.
        assert_eq!((a.requests, a.cost), (4 + 32, 1.0 + 3.0));
        let b = book
            .grant("b", (Some(LIMITS), own), &ask(0, 0.0, true), 3, t)
            .cap;
        // a counts at its cap: 100 - 36 = 64 left, a third: 21.
        assert_eq!(b.requests, 21);
        let idle = book
            .grant("c", (Some(LIMITS), own), &ask(5, 0.5, false), 3, t)
            .cap;
        assert_eq!(idle.requests, 5);
        let outside = book.outside(&W, t);
        assert_eq!(outside.requests, 36 + 21 + 5);
        assert_eq!(
            book.outside(&W, t + ALLOWANCE_TTL_MS + COUNTED_AFTER_MS)
                .requests,
            4 + 5
        );
    }

    /// Whatever the asks, the owner's own spend plus what it counts for the others never
    /// passes the limit, and no node's cap lets it pass it either.
    #[test]
    fn the_book_never_allows_more_than_the_limit() {
        let mut rng = super::super::rng::Rng::new(5);
        let mut book = AllowBook::new(9, 0, 0);
        let nodes = ["a", "b", "c", "d"];
        let mut committed = [0u64; 4];
        // What each holder runs at: (cap, until, seq of the grant, its last ask).
        let mut held = [(0u64, 0u64, 0u32, 0u64); 4];
        let mut own = 0u64;
        let mut t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        for _ in 0..20_000 {
            t += rng.below(50);
            let i = rng.below(5) as usize;
            if i == 4 {
                // The owner admits one if the book leaves room.
                let outside = book.outside(&W, t).requests;
                if own + outside < 100 {
                    own += 1;
                }
            } else {
                // The holder spends within a cap still in force, then reports (its asks
                // leave in order; an answer is taken as `allowance_granted` takes it).
                let (cap, until, seq, asked) = held[i];
                if t < until && committed[i] < cap {
                    committed[i] += 1;
                }
                let own_f = Figures {
                    requests: own,
                    ..Figures::default()
                };
                let report = AllowAsk {
                    held: seq,
                    ..ask(committed[i], 0.0, rng.below(2) == 0)
                };
                let g = book.grant(nodes[i], (Some(LIMITS), own_f), &report, 5, t);
                let asked = t.saturating_sub(rng.below(5)).max(asked);
                let until_new = asked + ALLOWANCE_TTL_MS;
                if until_new >= until {
                    let seq = if g.seq != 0 { g.seq } else { seq };
                    held[i] = (g.cap.requests, until_new, seq, asked);
                }
            }
            let total = own + committed.iter().sum::<u64>();
            assert!(total <= 100, "{total}");
            assert!(own + book.outside(&W, t).requests <= 100);
        }
        assert!(
            own + committed.iter().sum::<u64>() >= 90,
            "the limit is used"
        );
    }

    /// A node naming the grant it holds frees the room of the grants before it: the
    /// owner counts that node at its newest cap, not its highest.
    #[test]
    fn a_held_grant_frees_the_ones_before_it() {
        let mut book = AllowBook::new(9, 0, 0);
        let own = Figures::default();
        let t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        let first = book.grant("a", (Some(LIMITS), own), &ask(0, 0.0, true), 2, t);
        assert_eq!((first.cap.requests, first.seq), (50, 1));
        // a spent 10; b spent 40 meanwhile, so a's next share is smaller.
        book.grant("b", (Some(LIMITS), own), &ask(40, 0.0, false), 2, t);
        let second = book.grant("a", (Some(LIMITS), own), &ask(10, 0.0, true), 2, t + 200);
        // What b committed and a reported are out; half of the rest is a's.
        assert_eq!(second.cap.requests, 10 + (100 - 40 - 10) / 2);
        assert_eq!(
            book.outside(&W, t + 200).requests,
            50 + 40,
            "the first still counts"
        );
        let from_another_book = AllowAsk {
            held: second.seq,
            held_book: 5,
            ..ask(10, 0.0, false)
        };
        book.grant("a", (Some(LIMITS), own), &from_another_book, 2, t + 400);
        assert_eq!(
            book.outside(&W, t + 400).requests,
            50 + 40,
            "not its numbering"
        );
        let holding = AllowAsk {
            held: second.seq,
            ..ask(10, 0.0, false)
        };
        book.grant("a", (Some(LIMITS), own), &holding, 2, t + 400);
        assert_eq!(book.outside(&W, t + 400).requests, 35 + 40);
    }

    /// What another node saw a vanished owner commit counts for that owner, at the most
    /// seen: the next owner does not grant it again.
    #[test]
    fn a_vanished_owners_spend_is_counted_as_seen() {
        let mut book = AllowBook::new(9, 0, 0);
        let seen = |requests| Figures {
            requests,
            ..Figures::default()
        };
        book.count_seen("old", &W, seen(40));
        book.count_seen("old", &W, seen(30));
        assert_eq!(book.outside(&W, 0).requests, 40);
        let t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        let own = Figures::default();
        let g = book.grant("a", (Some(LIMITS), own), &ask(0, 0.0, true), 2, t);
        assert_eq!(g.cap.requests, (100 - 40) / 2);
    }

    /// A holder node in `a_16_node_cluster_spends_a_budget_exactly`: its own ledger's
    /// requests, its cap, and what it last had acknowledged.
    #[derive(Default, Clone, Copy)]
    struct Holder {
        committed: u64,
        cap: Option<(u64, u64)>,
        held: (u32, u64),
        wanted: bool,
    }

    /// A budget of `LIMIT` requests spent on 16 nodes at once for 3 s, deterministically:
    /// reports every 200 ms, up to 2 ms each way between nodes, 1 % of reports lost,
    /// 40,000 requests a second offered over all nodes. Never over the budget at any
    /// instant; returns (admitted, when it was all spent (ms), the share of decisions
    /// that crossed to the owner until then, and after the first second, reports a
    /// second).
    fn spend_on_16_nodes(limit: u64) -> (u64, Option<u64>, (f64, f64), f64) {
        const NODES: usize = 16;
        let limits: Limits = (Some(limit), None, None);
        let mut rng = super::super::rng::Rng::new(16);
        let mut book = AllowBook::new(9, 0, 0);
        let mut holders = [Holder::default(); NODES];
        let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
        // (arrives at, holder, report, asked at): reports in flight to the owner, and
        // answers in flight back.
        let mut to_owner: Vec<(u64, usize, AllowAsk, u64)> = Vec::new();
        let mut to_holder: Vec<(u64, usize, AllowGrant, u64)> = Vec::new();
        let (mut own, mut decisions, mut crossed, mut reports) = (0u64, 0u64, 0u64, 0u64);
        // Decisions and crossings while the budget still had room.
        let mut spent_at = None;
        // The same after the first second (every node has had its first caps).
        let (mut steady, mut steady_crossed) = (0u64, 0u64);
        let mut t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        let (start, end) = (t, t + 3_000);
        while t < end {
            // Answers, then reports, that arrive now.
            for (_, i, g, asked) in to_holder.extract_if(.., |m| m.0 <= t) {
                let h = &mut holders[i];
                let until = asked + ALLOWANCE_TTL_MS;
                if h.cap.is_none_or(|(_, u)| u <= until) {
                    h.cap = Some((g.cap.requests, until));
                    if g.seq != 0 {
                        h.held = (g.seq, g.book);
                    }
                }
            }
            for (_, i, report, asked) in to_owner.extract_if(.., |m| m.0 <= t) {
                let own_f = Figures {
                    requests: own,
                    ..Figures::default()
                };
                let g = book.grant(&names[i], (Some(limits), own_f), &report, NODES, t);
                to_holder.push((t + rng.below(3), i, g, asked));
            }
            // 40 requests a millisecond, anywhere; node 0 is the owner.
            for _ in 0..40 {
                let i = rng.below(NODES as u64) as usize;
                decisions += u64::from(spent_at.is_none());
                let settled = spent_at.is_none() && t >= start + 1_000;
                steady += u64::from(settled);
                let h = &mut holders[i];
                let local = i != 0
                    && h.cap
                        .is_some_and(|(cap, until)| t < until && h.committed < cap);
                // Every decision on a holder wants room there (`admit`).
                h.wanted = i != 0;
                if local {
                    h.committed += 1;
                } else {
                    // The owner decides: a request landing there, or one crossing.
                    crossed += u64::from(i != 0 && spent_at.is_none());
                    steady_crossed += u64::from(i != 0 && settled);
                    if own + book.outside(&W, t).requests < limit {
                        own += 1;
                    }
                }
            }
            // Each holder reports every 200 ms, at its own phase.
            for (i, h) in holders.iter_mut().enumerate().skip(1) {
                if (t + i as u64 * 13) % REPORT_MS != 0 {
                    continue;
                }
                if h.cap.is_some_and(|(_, until)| until < t + REPORT_MS) {
                    h.cap = None;
                }
                reports += 1;
                if rng.below(100) != 0 {
                    let want = std::mem::take(&mut h.wanted);
                    let report = AllowAsk {
                        held: h.held.0,
                        held_book: h.held.1,
                        ..ask(h.committed, 0.0, want)
                    };
                    to_owner.push((t + rng.below(3), i, report, t));
                }
            }
            let total = own + holders.iter().map(|h| h.committed).sum::<u64>();
            assert!(total <= limit, "{total} admitted at {t} ms");
            if total == limit && spent_at.is_none() {
                spent_at = Some(t - start);
            }
            t += 1;
        }
        let total = own + holders.iter().map(|h| h.committed).sum::<u64>();
        let crossed = crossed as f64 / decisions as f64;
        let steady = steady_crossed as f64 / steady.max(1) as f64;
        (total, spent_at, (crossed, steady), reports as f64 / 3.0)
    }

    /// The budget protocol at the scale of a 16-node cluster (docs/CLUSTER.md, "A
    /// simulated 16-node cluster"): a budget spent in about a second and a half, and one
    /// ten times larger that lasts; what is printed (`--nocapture`) is what the docs quote.
    #[test]
    fn a_16_node_cluster_spends_a_budget_exactly_and_says_what_it_costs() {
        for limit in [60_000, 600_000] {
            let (total, spent_at, (crossed, steady), reports) = spend_on_16_nodes(limit);
            eprintln!(
                "16 nodes, a budget of {limit}: admitted {total} (all of it after {spent_at:?} \
                 ms); {:.2} % of the decisions until then crossed to the owner, {:.2} % \
                 after the first second; {reports:.0} reports a second, as many answers",
                100.0 * crossed,
                100.0 * steady
            );
            if spent_at.is_some() {
                assert!(total >= limit * 99 / 100, "admitted {total} of {limit}");
            }
        }
    }

    /// A book's bounds: a node beyond `ALLOWANCE_NODES_MAX` in a window, a window beyond
    /// `ALLOWANCE_WINDOWS_MAX`, and a node that never names the grant it holds beyond
    /// `GRANTS_PER_WINDOW_MAX` grants are granted no room (their cap is what they
    /// reported; their decisions cross to the owner).
    #[test]
    fn a_book_grants_no_room_past_its_bounds() {
        let t = ALLOWANCE_TTL_MS + COUNTED_AFTER_MS;
        let own = (Some((Some(u64::MAX), None, None)), Figures::default());
        let mut book = AllowBook::new(9, 0, 0);
        for n in 0..ALLOWANCE_NODES_MAX {
            let g = book.grant(&format!("n{n}"), own, &ask(0, 0.0, true), 2, t);
            assert_ne!(g.seq, 0, "node {n} is within the bound");
        }
        let past = book.grant("one-more", own, &ask(3, 0.0, true), 2, t);
        assert_eq!((past.seq, past.cap.requests), (0, 3));

        let mut book = AllowBook::new(9, 0, 0);
        let at = |start_ms| AllowAsk {
            window: WindowKey { start_ms, ..W },
            ..ask(0, 0.0, true)
        };
        for w in 0..ALLOWANCE_WINDOWS_MAX as u64 {
            assert_ne!(book.grant("a", own, &at(w), 2, t).seq, 0);
        }
        let past = book.grant("a", own, &at(u64::MAX), 2, t);
        assert_eq!(past.seq, 0, "one window too many");

        let mut book = AllowBook::new(9, 0, 0);
        for k in 0..GRANTS_PER_WINDOW_MAX as u64 {
            assert_ne!(book.grant("a", own, &ask(0, 0.0, true), 2, t + k).seq, 0);
        }
        let past = book.grant("a", own, &ask(0, 0.0, true), 2, t + 20);
        assert_eq!(past.seq, 0, "no grant named as held: no more room");
    }
}
