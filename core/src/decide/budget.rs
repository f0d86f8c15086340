//! Budgets (a policy's `budgets`): limits on what a tenant, or each value of a metadata
//! key, may spend in requests, tokens and cost over a window.
//!
//! **Spend is reserved by the decision and settled by its result.** A decision reserves
//! what the chosen provider is expected to cost (its observed average cost per call, else
//! its declared `cost`; its observed tokens per call) in the window the decision was made
//! in, and counts one request there. The call's ExecResult (matched by tenant,
//! `request_id` and provider) replaces the reservation with what the call really cost,
//! in that same window however late it comes: a result never lands in the window it
//! arrives in, so nothing is counted twice or lost at a boundary. A result that names no
//! `cost` (or no `usage`) settles at the reserved figure. A reservation whose result never
//! comes is settled at its reserved figure after `RESERVATION_TTL_MS`: a lost result
//! counts what the call was expected to cost, not nothing.
//!
//! **Admission** (step 2, after the rate limit): a request is refused with
//! `budget_exceeded` when a budget's window already holds its limit (settled plus
//! reserved). **Candidates** (step 5): a provider whose expected cost or tokens would
//! pass what is left is not a candidate, so a nearly spent budget still admits a cheaper
//! provider; when only budgets emptied the candidates, the answer is `budget_exceeded`.
//! A decision is thus admitted only while its reservation fits; a call that then costs
//! more than expected can take a window past its limit by that difference, never more.
//!
//! **Where:** a budgeted policy's decisions are taken on the tenant's owner shard, which
//! also receives its results (`shard`): one ledger, so the limits hold over all shards.
//! In a cluster each node's owner shard keeps its own ledger within an allowance the
//! owner node grants (`allowance`), and the owner node counts the others' beside its own
//! (`WindowSpend::outside`).
//!
//! **Windows** are fixed periods: `1m`, `1h`, `1d`, `30d` from the Unix epoch (so `1d`
//! is the UTC day), `calendar_day` and `calendar_month` in UTC. A ledger keeps its last
//! `WINDOWS_KEPT` windows, enough for every reservation still open to find its window.
//!
//! Bounded: `RESERVATIONS_MAX` open reservations per shard (when full, the oldest is
//! settled early at its reserved figure), `SCOPE_VALUES_MAX` values per `metadata.<key>`
//! budget (a new value beyond it is refused with `budget_exceeded` until ledgers of
//! finished windows can go). Checking a budget allocates nothing; a new scope value's
//! ledger and a reservation's slot may.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use super::condition::session_bytes;
use super::rendezvous::StableHash;
use crate::civil::{civil_from_days, days_from_civil};
use crate::contract::Scalar;
use crate::policy::{Budget, BudgetScope, BudgetWindow, Policy, BUDGETS_PER_POLICY_MAX};

/// How long a decision's reservation waits for its result.
pub const RESERVATION_TTL_MS: u64 = 15 * 60_000;
/// Open reservations one shard holds.
pub const RESERVATIONS_MAX: usize = 65_536;
/// Values one `metadata.<key>` budget counts at once on its owner.
pub const SCOPE_VALUES_MAX: usize = 4_096;
/// The most one call may count (reserved or settled): `max_cost`'s own bound.
pub const SPEND_MAX: f64 = crate::policy::BUDGET_COST_MAX;
/// Windows a ledger keeps: more `1m` windows than a reservation lives.
pub const WINDOWS_KEPT: usize = 17;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
const _: () = assert!(RESERVATION_TTL_MS < (WINDOWS_KEPT as u64 - 1) * MINUTE_MS);

/// The window of `kind` holding `unix_ms`: `[start, end)` in Unix milliseconds.
pub fn window_bounds(kind: BudgetWindow, unix_ms: u64) -> (u64, u64) {
    match kind {
        BudgetWindow::Fixed(len) => {
            let start = unix_ms - unix_ms % len;
            (start, start + len)
        }
        BudgetWindow::CalendarDay => window_bounds(BudgetWindow::DAY, unix_ms),
        BudgetWindow::CalendarMonth => {
            let (y, m, _) = civil_from_days(unix_ms / DAY_MS);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                days_from_civil(y, m, 1) * DAY_MS,
                days_from_civil(ny, nm, 1) * DAY_MS,
            )
        }
    }
}

/// One window's spend in one ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSpend {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Decisions made in the window.
    pub requests: u64,
    /// Settled: results' cost and tokens (and reservations that expired).
    pub cost: f64,
    pub tokens: u64,
    /// Decisions still waiting for their result, and what they reserved.
    pub open: u64,
    pub reserved_cost: f64,
    pub reserved_tokens: u64,
    /// A cluster's owner node: what the other nodes may have committed in this window
    /// (`allowance`). Never saved: the other nodes report it again.
    #[serde(skip)]
    pub outside: Figures,
    /// Of `outside`, what the other nodes reported having committed: the rest is room
    /// they hold and may not use.
    #[serde(skip)]
    pub outside_reported: Figures,
    /// A node of a cluster that does not own the tenant: what this node may commit in
    /// this window, granted by the owner node (`allowance`); none is no room at all.
    #[serde(skip)]
    pub cap: Option<Figures>,
    /// Until when `cap` may be used, on the holder's monotonic clock (ms).
    #[serde(skip)]
    pub cap_until_ms: u64,
    /// The grant `cap` came from, and its book (`allowance::AllowGrant`).
    #[serde(skip)]
    pub cap_seq: u32,
    #[serde(skip)]
    pub cap_book: u64,
    /// What the owner node last acknowledged of this window, and whether a decision
    /// wanted room in it since: what the next report carries.
    #[serde(skip)]
    pub reported: Figures,
    #[serde(skip)]
    pub wanted: bool,
}

impl WindowSpend {
    fn new((start_ms, end_ms): (u64, u64)) -> Self {
        WindowSpend {
            start_ms,
            end_ms,
            ..WindowSpend::default()
        }
    }

    /// Cost counted against the limit: settled plus reserved.
    pub fn committed_cost(&self) -> f64 {
        self.cost + self.reserved_cost
    }

    pub fn committed_tokens(&self) -> u64 {
        self.tokens.saturating_add(self.reserved_tokens)
    }

    /// The window as the state file keeps it: its spend, without what a cluster's nodes
    /// said of it (they say it again).
    fn saved(&self) -> WindowSpend {
        WindowSpend {
            outside: Figures::default(),
            outside_reported: Figures::default(),
            cap: None,
            cap_until_ms: 0,
            cap_seq: 0,
            cap_book: 0,
            reported: Figures::default(),
            wanted: false,
            ..*self
        }
    }

    /// This node's committed figures: what it reports to a cluster's owner node.
    pub fn committed(&self) -> Figures {
        Figures {
            requests: self.requests,
            cost: self.committed_cost(),
            tokens: self.committed_tokens(),
        }
    }

    /// Requests, cost and tokens the limits are checked against: this node's committed
    /// figures and, on a cluster's owner node, what the other nodes may have committed.
    pub fn spent(&self) -> Figures {
        let o = self.outside;
        Figures {
            requests: self.requests.saturating_add(o.requests),
            cost: self.committed_cost() + o.cost,
            tokens: self.committed_tokens().saturating_add(o.tokens),
        }
    }

    /// `budget`'s limits as this node may use them: the budget's own, or on a capped
    /// node (`BudgetBook::capped`) no more than its allowance.
    fn limits(&self, budget: &Budget, capped: bool) -> (Option<u64>, Option<f64>, Option<u64>) {
        if !capped {
            return (budget.max_requests, budget.max_cost, budget.max_tokens);
        }
        let cap = self.cap.unwrap_or_default();
        (
            budget.max_requests.map(|m| m.min(cap.requests)),
            budget.max_cost.map(|m| m.min(cap.cost)),
            budget.max_tokens.map(|m| m.min(cap.tokens)),
        )
    }

    /// One reservation leaves: its reserved part goes, `cost`/`tokens` are settled. A cost
    /// that is not a finite number up to `SPEND_MAX` (a result's `1e308`) counts as
    /// `SPEND_MAX`: sums stay finite, so the state file stays readable.
    fn settle(&mut self, reserved: (f64, u64), cost: f64, tokens: u64) {
        let cost = if cost.is_finite() {
            cost.clamp(0.0, SPEND_MAX)
        } else {
            SPEND_MAX
        };
        self.open = self.open.saturating_sub(1);
        if self.open == 0 {
            // Exactly zero, not the float residue of adding and taking away.
            self.reserved_cost = 0.0;
            self.reserved_tokens = 0;
        } else {
            self.reserved_cost = (self.reserved_cost - reserved.0).max(0.0);
            self.reserved_tokens = self.reserved_tokens.saturating_sub(reserved.1);
        }
        self.cost += cost;
        self.tokens = self.tokens.saturating_add(tokens);
    }
}

/// The spend of one scope value (the tenant, or one metadata value) under one budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// The metadata value as text (empty for scope `tenant`), for the admin view.
    pub value: Box<str>,
    /// Oldest first; at most `WINDOWS_KEPT`.
    pub windows: VecDeque<WindowSpend>,
}

impl Ledger {
    /// The window holding `now_ms`, opened when it is new. A wall clock stepped back
    /// into an earlier window keeps counting in the newest one: a window is never
    /// reopened, so a step back can delay a reset, never grant one.
    pub(super) fn current(&mut self, kind: BudgetWindow, now_ms: u64) -> &mut WindowSpend {
        let bounds = window_bounds(kind, now_ms);
        if self.windows.back().is_none_or(|w| w.start_ms < bounds.0) {
            if self.windows.len() == WINDOWS_KEPT {
                self.windows.pop_front();
            }
            self.windows.push_back(WindowSpend::new(bounds));
        }
        self.windows.back_mut().expect("just pushed")
    }

    /// The current window's spend without opening it.
    pub fn peek(&self, kind: BudgetWindow, now_ms: u64) -> WindowSpend {
        let bounds = window_bounds(kind, now_ms);
        match self.windows.back() {
            // At or after: a clock stepped back reads the newest window (`current`).
            Some(w) if w.start_ms >= bounds.0 => *w,
            _ => WindowSpend::new(bounds),
        }
    }

    fn at(&mut self, start_ms: u64) -> Option<&mut WindowSpend> {
        self.windows
            .iter_mut()
            .rev()
            .find(|w| w.start_ms == start_ms)
    }

    /// Nothing here limits anything any more: every window ended and none waits for a
    /// result.
    fn idle(&self, now_ms: u64) -> bool {
        self.windows
            .iter()
            .all(|w| w.end_ms <= now_ms && w.open == 0)
    }
}

/// Requests, cost and tokens: a window's committed spend, or an allowance of it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub cost: f64,
    pub tokens: u64,
}

/// One budget's ledgers on the tenant's owner, by scope value.
#[derive(Debug, Clone, Default)]
pub struct BudgetBook {
    pub ledgers: HashMap<u64, Ledger, FixedState>,
    /// A node of a cluster whose tenant another node owns: a window admits only within
    /// the allowance the owner node granted it (`WindowSpend::cap`), and a refusal is
    /// `Exceeded::short` (the owner node may still have room).
    pub capped: bool,
}

impl BudgetBook {
    pub fn new(seed: u64) -> Self {
        BudgetBook {
            ledgers: HashMap::with_hasher(FixedState::with_seed(seed)),
            capped: false,
        }
    }
}

/// A budget's name among peers and across restarts: its scope and window.
pub fn budget_id(budget: &Budget) -> u64 {
    let scope: &[u8] = match &budget.scope {
        BudgetScope::Tenant => b"",
        BudgetScope::Metadata(key) => key.as_bytes(),
    };
    let window = match budget.window {
        BudgetWindow::Fixed(ms) => ms,
        BudgetWindow::CalendarDay => 1,
        BudgetWindow::CalendarMonth => 2,
    };
    StableHash::new().bytes(scope).u64(window).finish()
}

/// The scope value a request is counted under by `budget`, as (hash, bytes); `None`
/// when the budget does not count the request (its metadata key is missing, or not a
/// string or number).
fn scope_of<'r>(
    budget: &Budget,
    metadata: &'r crate::contract::Metadata<'_>,
    buf: &'r mut [u8; 9],
) -> Option<(u64, &'r [u8])> {
    let bytes: &[u8] = match &budget.scope {
        BudgetScope::Tenant => b"",
        BudgetScope::Metadata(key) => session_bytes(metadata.get(key)?, buf)?,
    };
    Some((StableHash::new().bytes(bytes).finish(), bytes))
}

fn scope_text(budget: &Budget, metadata: &crate::contract::Metadata<'_>) -> Box<str> {
    match &budget.scope {
        BudgetScope::Tenant => "".into(),
        BudgetScope::Metadata(key) => match metadata.get(key) {
            Some(Scalar::Str(s)) => s.as_ref().into(),
            Some(Scalar::Num(n)) => n.to_string().into(),
            _ => "".into(),
        },
    }
}

/// What a request may still spend under the budgets that count it (`admit`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// Bit i: `budgets[i]` counts this request, under scope value `scopes[i]`.
    pub applied: u8,
    pub scopes: [u64; BUDGETS_PER_POLICY_MAX],
    /// Cost and tokens one call may still reserve (∞ without such a limit).
    pub cost: f64,
    pub tokens: f64,
    /// The budgets that leave the least cost and the fewest tokens: the refusal's
    /// details when only budgets emptied the candidates.
    tightest_cost: Option<u8>,
    tightest_tokens: Option<u8>,
}

impl Room {
    /// Whether a call expected to cost `cost` and use `tokens` fits.
    pub fn fits(&self, cost: f64, tokens: f64) -> bool {
        cost <= self.cost && tokens <= self.tokens
    }
}

/// Why a budget refused: the details of `budget_exceeded`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    /// `tenant` or `metadata.<key>`.
    pub scope: Box<str>,
    /// The scope value (empty for `tenant`).
    pub value: Box<str>,
    pub window: &'static str,
    /// `requests`, `cost`, `tokens`, or `scope_values` (a `metadata.<key>` budget
    /// counting `SCOPE_VALUES_MAX` values already).
    pub measure: &'static str,
    pub limit: f64,
    pub spent: f64,
    pub reset_at_ms: u64,
    /// Refused by a capped node's allowance (`BudgetBook::capped`), not by the budget:
    /// the tenant's owner node decides it instead.
    pub short: bool,
    /// Refused by room other nodes of a cluster hold and may not use, not by spend: it
    /// is worth asking again once their allowances run out (`HELD_RETRY_MS`), not only
    /// when the window resets.
    pub held: bool,
}

/// When to ask again after a refusal by room other nodes hold (`Exceeded::held`): by
/// then the allowances they left unused have run out.
pub const HELD_RETRY_MS: u64 =
    super::allowance::ALLOWANCE_TTL_MS + super::allowance::COUNTED_AFTER_MS;

fn exceeded(
    budget: &Budget,
    value: &str,
    w: &WindowSpend,
    measure: &'static str,
    limit: f64,
    spent: f64,
) -> Exceeded {
    Exceeded {
        scope: budget.scope_name().into(),
        value: value.into(),
        window: budget.window.as_str(),
        measure,
        limit,
        spent,
        reset_at_ms: w.end_ms,
        short: false,
        held: false,
    }
}

/// Whether a window refused at `measure` only for room other nodes hold: what was
/// committed, by this node and as the others reported, is still under `limit`.
fn held(w: &WindowSpend, measure: &str, limit: f64) -> bool {
    let r = w.outside_reported;
    let spent = match measure {
        "requests" => w.requests.saturating_add(r.requests) as f64,
        "cost" => w.committed_cost() + r.cost,
        "tokens" => w.committed_tokens().saturating_add(r.tokens) as f64,
        _ => return false,
    };
    w.outside != r && spent < limit
}

/// Step 2 for budgets: refuses a request a budget's window cannot take any more, else
/// says what is left for its call. `None`: no budget counts the request.
pub fn admit(
    policy: &Policy,
    books: &mut [BudgetBook],
    metadata: &crate::contract::Metadata<'_>,
    now_ms: u64,
) -> Result<Option<Room>, Exceeded> {
    let mut room = Room {
        applied: 0,
        scopes: [0; BUDGETS_PER_POLICY_MAX],
        cost: f64::INFINITY,
        tokens: f64::INFINITY,
        tightest_cost: None,
        tightest_tokens: None,
    };
    for (i, (budget, book)) in policy.budgets.iter().zip(books.iter_mut()).enumerate() {
        let mut buf = [0u8; 9];
        let Some((hash, _)) = scope_of(budget, metadata, &mut buf) else {
            continue;
        };
        if !book.ledgers.contains_key(&hash) {
            if book.ledgers.len() >= SCOPE_VALUES_MAX {
                book.ledgers.retain(|_, l| !l.idle(now_ms));
            }
            if book.ledgers.len() >= SCOPE_VALUES_MAX {
                let w = WindowSpend::new(window_bounds(budget.window, now_ms));
                let full = SCOPE_VALUES_MAX as f64;
                let value = scope_text(budget, metadata);
                return Err(exceeded(budget, &value, &w, "scope_values", full, full));
            }
            let ledger = Ledger {
                value: scope_text(budget, metadata),
                windows: VecDeque::new(),
            };
            book.ledgers.insert(hash, ledger);
        }
        let capped = book.capped;
        let short = |mut e: Exceeded, w: &WindowSpend| {
            e.short = capped;
            e.held = !capped && held(w, e.measure, e.limit);
            e
        };
        let ledger = book.ledgers.get_mut(&hash).expect("inserted");
        ledger.current(budget.window, now_ms).wanted = true;
        let ledger = &*ledger;
        let w = ledger.windows.back().expect("`current` opened it");
        let value = &ledger.value;
        let (max_requests, max_cost, max_tokens) = w.limits(budget, capped);
        let spent = w.spent();
        if let Some(max) = max_requests {
            if spent.requests >= max {
                let (limit, spent) = (max as f64, spent.requests as f64);
                return Err(short(
                    exceeded(budget, value, w, "requests", limit, spent),
                    w,
                ));
            }
        }
        if let Some(max) = max_cost {
            let spent = spent.cost;
            if spent >= max {
                return Err(short(exceeded(budget, value, w, "cost", max, spent), w));
            }
            if max - spent < room.cost {
                room.cost = max - spent;
                room.tightest_cost = Some(i as u8);
            }
        }
        if let Some(max) = max_tokens {
            let spent = spent.tokens;
            if spent >= max {
                let (limit, spent) = (max as f64, spent as f64);
                return Err(short(exceeded(budget, value, w, "tokens", limit, spent), w));
            }
            let left = (max - spent) as f64;
            if left < room.tokens {
                room.tokens = left;
                room.tightest_tokens = Some(i as u8);
            }
        }
        room.applied |= 1 << i;
        room.scopes[i] = hash;
    }
    Ok((room.applied != 0).then_some(room))
}

/// The refusal when only budgets left no candidate: the budget with the least room for
/// the measure that excluded them — tokens when some provider (expected `figures`: cost,
/// tokens) fits the cost left but not the tokens, else cost.
pub fn refusal(
    policy: &Policy,
    books: &[BudgetBook],
    room: &Room,
    mut figures: impl Iterator<Item = (f64, f64)>,
    now_ms: u64,
) -> Exceeded {
    let tokens_bind = room.tightest_tokens.is_some()
        && (room.tightest_cost.is_none()
            || figures.any(|(cost, tokens)| cost <= room.cost && tokens > room.tokens));
    let (i, measure) = match (room.tightest_cost, room.tightest_tokens) {
        (_, Some(i)) if tokens_bind => (usize::from(i), "tokens"),
        (Some(i), _) => (usize::from(i), "cost"),
        (None, Some(i)) => (usize::from(i), "tokens"),
        // Nothing limits cost or tokens, so no provider was out for them; say requests.
        (None, None) => (0, "requests"),
    };
    let budget = &policy.budgets[i];
    let empty = Ledger::default();
    let ledger = books[i].ledgers.get(&room.scopes[i]).unwrap_or(&empty);
    let w = ledger.peek(budget.window, now_ms);
    let (max_requests, max_cost, max_tokens) = w.limits(budget, books[i].capped);
    let spent = w.spent();
    let (limit, spent) = match measure {
        "cost" => (max_cost.unwrap_or(0.0), spent.cost),
        "tokens" => (max_tokens.unwrap_or(0) as f64, spent.tokens as f64),
        _ => (max_requests.unwrap_or(0) as f64, spent.requests as f64),
    };
    let mut e = exceeded(budget, &ledger.value, &w, measure, limit, spent);
    e.short = books[i].capped;
    e.held = !e.short && held(&w, measure, limit);
    e
}

/// A decision's reservation, waiting for its result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// The policy among peers, restarts and reloads: a fixed hash of (tenant, policy id)
    /// (`rendezvous::policy_key`), which a change of its providers leaves alone.
    pub policy: u64,
    pub decided_ms: u64,
    pub expires_ms: u64,
    /// What each decision reserved.
    pub cost: f64,
    pub tokens: u64,
    /// Decisions of the same (tenant, request id, provider) not yet settled.
    pub count: u32,
    /// Per counting budget: (`budget_id`, scope value hash).
    pub budgets: [(u64, u64); BUDGETS_PER_POLICY_MAX],
    /// Per counting budget: the start of the window the decision was counted in (not
    /// recomputed from `decided_ms`: a clock stepped back counts in the newest window).
    pub starts: [u64; BUDGETS_PER_POLICY_MAX],
    pub applied: u8,
}

/// A shard's open reservations, with their expiry order.
#[derive(Debug, Clone)]
pub struct Reservations {
    by_key: HashMap<u64, Reservation, FixedState>,
    /// (expires, key), oldest first; entries already settled are skipped when reached.
    order: VecDeque<(u64, u64)>,
    /// Counters for `/metrics`.
    pub expired: u64,
    pub unmatched: u64,
    /// A result's window had been dropped (a policy changed its budgets meanwhile).
    pub lost: u64,
    /// Reservations taken apart by a decision of another policy under the same key, to
    /// settle at their reserved figure with the table (`ShardState::expire_reservations`).
    pub deferred: Vec<Reservation>,
}

impl Reservations {
    pub fn new(seed: u64) -> Self {
        Reservations {
            by_key: HashMap::with_hasher(FixedState::with_seed(seed)),
            order: VecDeque::new(),
            expired: 0,
            unmatched: 0,
            lost: 0,
            deferred: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every open reservation, for the state file.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Reservation)> {
        self.by_key.iter().map(|(k, r)| (*k, r))
    }

    /// Adds one decision's reservation under `key`; the same key again (a retry with
    /// the same request id and provider) adds to it.
    pub fn insert(&mut self, key: u64, r: Reservation) {
        match self.by_key.get_mut(&key) {
            Some(old) => {
                old.count = old.count.saturating_add(1);
            }
            None => {
                self.by_key.insert(key, r);
                // Settled entries stay in the order until reached; before the queue would
                // grow, drop them if they are half of it. So it holds at most about twice
                // the open reservations, and a steady flow of decisions and results
                // reuses its room instead of allocating.
                let full = self.order.len() == self.order.capacity();
                if full && self.order.len() >= 2 * self.by_key.len() {
                    let by_key = &self.by_key;
                    self.order
                        .retain(|(at, k)| by_key.get(k).is_some_and(|r| r.expires_ms == *at));
                }
                self.order.push_back((r.expires_ms, key));
            }
        }
    }

    /// Takes the whole reservation of `key` when the next decision `r` of that key cannot
    /// join it: it was counted in other windows or ledgers, or is another policy's (the
    /// same request id and provider there). A result settles every decision of a key where
    /// the first one was counted, so they must agree.
    pub fn take_apart(&mut self, key: u64, r: &Reservation) -> Option<Reservation> {
        let old = self.by_key.get(&key)?;
        let joins = old.policy == r.policy
            && (old.applied, old.budgets, old.starts) == (r.applied, r.budgets, r.starts);
        if joins {
            return None;
        }
        self.by_key.remove(&key)
    }

    /// Takes one decision of `key`'s reservation, if there is one.
    pub fn take(&mut self, key: u64) -> Option<Reservation> {
        let r = self.by_key.get_mut(&key)?;
        let mut one = *r;
        one.count = 1;
        if r.count > 1 {
            r.count -= 1;
        } else {
            self.by_key.remove(&key);
        }
        Some(one)
    }

    /// The oldest reservation if it expired by `now_ms` or the shard holds more than
    /// `RESERVATIONS_MAX`, with all its decisions.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Reservation> {
        while let Some(&(at, key)) = self.order.front() {
            let live = self.by_key.get(&key).is_some_and(|r| r.expires_ms == at);
            if !live {
                self.order.pop_front();
                continue;
            }
            if at > now_ms && self.by_key.len() <= RESERVATIONS_MAX {
                return None;
            }
            self.order.pop_front();
            self.expired += 1;
            return self.by_key.remove(&key);
        }
        None
    }
}

/// The key of a decision's reservation, which its result names alike.
pub fn reservation_key(tenant: &str, request_id: &str, provider: &str) -> u64 {
    StableHash::new()
        .bytes(tenant.as_bytes())
        .bytes(request_id.as_bytes())
        .bytes(provider.as_bytes())
        .finish()
}

/// Counts one decision and its reservation in every budget that counts it.
/// Returns, per budget that counted it, (`budget_id`, scope) and the window's start, and
/// the budgets that did (a ledger gone since `admit` counts nothing: `admit` and `reserve`
/// run in one call, so only a caller that let other requests in between loses it).
pub fn reserve(
    policy: &Policy,
    books: &mut [BudgetBook],
    room: &Room,
    (cost, tokens): (f64, u64),
    now_ms: u64,
) -> Counted {
    let mut counted = Counted::default();
    for (i, (budget, book)) in policy.budgets.iter().zip(books.iter_mut()).enumerate() {
        if room.applied & (1 << i) == 0 {
            continue;
        }
        let Some(ledger) = book.ledgers.get_mut(&room.scopes[i]) else {
            continue;
        };
        let w = ledger.current(budget.window, now_ms);
        w.requests += 1;
        w.open += 1;
        w.reserved_cost += cost;
        w.reserved_tokens = w.reserved_tokens.saturating_add(tokens);
        counted.budgets[i] = (budget_id(budget), room.scopes[i]);
        counted.starts[i] = w.start_ms;
        counted.applied |= 1 << i;
    }
    counted
}

/// Where `reserve` counted a decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub budgets: [(u64, u64); BUDGETS_PER_POLICY_MAX],
    pub starts: [u64; BUDGETS_PER_POLICY_MAX],
    pub applied: u8,
}

/// Replaces one decision's reservation with what it spent, in the window it was made in.
/// `spent` is `None` where the result did not say (the reserved figure is kept).
/// False when a window it counted in is gone.
pub fn settle(
    policy: &Policy,
    books: &mut [BudgetBook],
    r: &Reservation,
    spent: (Option<f64>, Option<u64>),
) -> bool {
    let mut found = true;
    for i in 0..BUDGETS_PER_POLICY_MAX {
        if r.applied & (1 << i) == 0 {
            continue;
        }
        let (id, scope) = r.budgets[i];
        let Some(j) = policy.budgets.iter().position(|b| budget_id(b) == id) else {
            found = false;
            continue;
        };
        let window = books[j]
            .ledgers
            .get_mut(&scope)
            .and_then(|l| l.at(r.starts[i]));
        let Some(w) = window else {
            found = false;
            continue;
        };
        for _ in 0..r.count {
            w.settle(
                (r.cost, r.tokens),
                spent.0.unwrap_or(r.cost),
                spent.1.unwrap_or(r.tokens),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31_2026: u64 = 1_769_817_600_000;

    #[test]
    fn calendar_months_have_their_lengths() {
        let (start, end) = window_bounds(BudgetWindow::CalendarMonth, JAN_31_2026 + 5);
        assert_eq!(start, JAN_31_2026 - 30 * DAY_MS, "1 January 2026");
        assert_eq!(end, JAN_31_2026 + DAY_MS, "1 February 2026");
        let (feb, mar) = window_bounds(BudgetWindow::CalendarMonth, end);
        assert_eq!((feb, mar - feb), (end, 28 * DAY_MS));
        // 2028 is a leap year: February has 29 days.
        let feb_2028 = days_from_civil(2028, 2, 10) * DAY_MS;
        let (s, e) = window_bounds(BudgetWindow::CalendarMonth, feb_2028);
        assert_eq!(e - s, 29 * DAY_MS);
        assert_eq!(window_bounds(BudgetWindow::CalendarMonth, e - 1), (s, e));
    }

    #[test]
    fn fixed_windows_start_at_the_epoch() {
        let t = JAN_31_2026 + 3_723_456;
        assert_eq!(
            window_bounds(BudgetWindow::MINUTE, t).0,
            JAN_31_2026 + 3_720_000
        );
        assert_eq!(
            window_bounds(BudgetWindow::HOUR, t).0,
            JAN_31_2026 + 3_600_000
        );
        assert_eq!(
            window_bounds(BudgetWindow::DAY, t),
            window_bounds(BudgetWindow::CalendarDay, t)
        );
        let (s, e) = window_bounds(BudgetWindow::DAYS_30, t);
        assert!(s <= t && t < e && e - s == 30 * DAY_MS && s % (30 * DAY_MS) == 0);
    }

    #[test]
    fn a_clock_stepped_back_counts_in_the_newest_window() {
        let mut ledger = Ledger::default();
        let t = JAN_31_2026 + 2 * MINUTE_MS;
        ledger.current(BudgetWindow::MINUTE, t).requests += 1;
        ledger.current(BudgetWindow::MINUTE, t - MINUTE_MS).requests += 1;
        assert_eq!(ledger.windows.len(), 1, "no earlier window was reopened");
        assert_eq!(ledger.peek(BudgetWindow::MINUTE, t - MINUTE_MS).requests, 2);
        assert_eq!(ledger.peek(BudgetWindow::MINUTE, t).requests, 2);
        assert_eq!(ledger.peek(BudgetWindow::MINUTE, t + MINUTE_MS).requests, 0);
    }

    /// A window that is full only with room other nodes hold is `held`: worth asking
    /// again soon; one full with what was committed is not.
    #[test]
    fn room_other_nodes_hold_is_told_from_spend() {
        let mut w = WindowSpend::new((0, 10));
        w.requests = 4;
        w.outside = Figures {
            requests: 6,
            ..Figures::default()
        };
        w.outside_reported = Figures {
            requests: 2,
            ..Figures::default()
        };
        assert!(held(&w, "requests", 10.0), "4 + 2 committed of 10");
        w.outside_reported.requests = 6;
        assert!(!held(&w, "requests", 10.0), "all 10 committed");
    }

    #[test]
    fn the_last_settlement_leaves_no_float_residue() {
        let mut w = WindowSpend::new((0, 10));
        for _ in 0..3 {
            w.open += 1;
            w.reserved_cost += 0.1;
        }
        w.settle((0.1, 0), 0.2, 0);
        w.settle((0.1, 0), 0.2, 0);
        assert!(w.reserved_cost > 0.0);
        w.settle((0.1, 0), 0.2, 0);
        assert_eq!((w.open, w.reserved_cost), (0, 0.0));
        assert!((w.cost - 0.6).abs() < 1e-12);
    }

    #[test]
    fn reservations_expire_oldest_first_and_stay_bounded() {
        let r = |expires_ms| Reservation {
            policy: 1,
            decided_ms: 0,
            expires_ms,
            cost: 1.0,
            tokens: 0,
            count: 1,
            budgets: [(0, 0); BUDGETS_PER_POLICY_MAX],
            starts: [0; BUDGETS_PER_POLICY_MAX],
            applied: 1,
        };
        let mut rs = Reservations::new(7);
        rs.insert(1, r(10));
        rs.insert(2, r(20));
        rs.insert(2, r(20));
        assert_eq!(rs.pop_due(9), None);
        assert_eq!(rs.take(2).map(|r| r.count), Some(1));
        assert_eq!(rs.pop_due(10).map(|r| r.expires_ms), Some(10));
        assert_eq!(rs.pop_due(19), None);
        assert_eq!(rs.pop_due(25).map(|r| r.count), Some(1), "one of two left");
        assert!(rs.is_empty());
        for k in 0..=RESERVATIONS_MAX as u64 {
            rs.insert(k + 100, r(1_000 + k));
        }
        assert_eq!(
            rs.pop_due(0).map(|r| r.expires_ms),
            Some(1_000),
            "over the bound"
        );
        assert_eq!(rs.pop_due(0), None);
        assert_eq!(rs.len(), RESERVATIONS_MAX);
    }
}

/// One ledger in the state file: whose it is, and its windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedLedger {
    pub tenant: Box<str>,
    pub policy: Box<str>,
    /// `budget_id` of the budget it belongs to.
    pub budget: u64,
    /// The scope value's hash.
    pub key: u64,
    pub ledger: Ledger,
}

/// A shard's budget state as the state file keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub ledgers: Vec<SavedLedger>,
    pub reservations: Vec<(u64, Reservation)>,
}

/// One budget's current window for one scope value, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    pub policy_id: Box<str>,
    pub scope: String,
    /// The metadata value (absent for scope `tenant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<str>>,
    pub window: &'static str,
    pub window_start_ms: u64,
    pub reset_at_ms: u64,
    pub limits: Limits,
    /// Settled spend plus open reservations: what the limits are checked against.
    pub spent: Spent,
    pub reserved: Spent,
    pub remaining: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub max_cost: Option<f64>,
    pub max_tokens: Option<u64>,
    pub max_requests: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spent {
    pub requests: u64,
    pub cost: f64,
    pub tokens: u64,
}

fn report(policy: &Policy, budget: &Budget, ledger: Option<&Ledger>, now_ms: u64) -> BudgetReport {
    let w = match ledger {
        Some(l) => l.peek(budget.window, now_ms),
        None => WindowSpend::new(window_bounds(budget.window, now_ms)),
    };
    // On a cluster's owner node, with what the other nodes may have committed.
    let all = w.spent();
    let spent = Spent {
        requests: all.requests,
        cost: all.cost,
        tokens: all.tokens,
    };
    BudgetReport {
        policy_id: policy.id.clone(),
        scope: budget.scope_name(),
        value: match budget.scope {
            BudgetScope::Tenant => None,
            BudgetScope::Metadata(_) => ledger.map(|l| l.value.clone()),
        },
        window: budget.window.as_str(),
        window_start_ms: w.start_ms,
        reset_at_ms: w.end_ms,
        limits: Limits {
            max_cost: budget.max_cost,
            max_tokens: budget.max_tokens,
            max_requests: budget.max_requests,
        },
        spent,
        reserved: Spent {
            requests: w.open,
            cost: w.reserved_cost,
            tokens: w.reserved_tokens,
        },
        remaining: Limits {
            max_cost: budget.max_cost.map(|m| (m - spent.cost).max(0.0)),
            max_tokens: budget.max_tokens.map(|m| m.saturating_sub(spent.tokens)),
            max_requests: budget
                .max_requests
                .map(|m| m.saturating_sub(spent.requests)),
        },
    }
}

impl super::ShardState {
    /// An ExecResult's spend replaces its decision's reservation (module doc). Returns
    /// whether a reservation was found.
    pub fn settle_budget(
        &mut self,
        table: &crate::policy::RoutingTable,
        (tenant, request_id, provider): (&str, Option<&str>, &str),
        spent: (Option<f64>, Option<u64>),
    ) -> bool {
        let Some(request_id) = request_id else {
            self.reservations.unmatched += 1;
            return false;
        };
        let key = reservation_key(tenant, request_id, provider);
        let Some(r) = self.reservations.take(key) else {
            self.reservations.unmatched += 1;
            return false;
        };
        self.settle_reservation(table, &r, spent);
        self.budget_changes += 1;
        true
    }

    /// Moves whenever a ledger or reservation changed: the state file's cue.
    pub fn budget_changes(&self) -> u64 {
        self.budget_changes
    }

    fn settle_reservation(
        &mut self,
        table: &crate::policy::RoutingTable,
        r: &Reservation,
        spent: (Option<f64>, Option<u64>),
    ) {
        let Some(&slot) = self.by_name.get(&r.policy) else {
            self.reservations.lost += 1;
            return;
        };
        let policy = &table.policies()[slot as usize];
        let books = &mut self.policies[slot as usize].budgets;
        if !settle(policy, books, r, spent) {
            self.reservations.lost += 1;
        }
    }

    /// Settles, at their reserved figures, the reservations whose results did not come
    /// in `RESERVATION_TTL_MS`, and the oldest beyond `RESERVATIONS_MAX`.
    pub fn expire_reservations(&mut self, table: &crate::policy::RoutingTable, now_ms: u64) {
        for r in std::mem::take(&mut self.reservations.deferred) {
            self.settle_reservation(table, &r, (None, None));
            self.budget_changes += 1;
        }
        while let Some(r) = self.reservations.pop_due(now_ms) {
            self.settle_reservation(table, &r, (None, None));
            self.budget_changes += 1;
        }
    }

    /// (open, expired, unmatched results, lost) for `/metrics`.
    pub fn reservation_counts(&self) -> (usize, u64, u64, u64) {
        let r = &self.reservations;
        (r.len(), r.expired, r.unmatched, r.lost)
    }

    /// Every budget of `tenant`'s policies this shard owns: the current window of each
    /// scope value it counts (a budget no request counted yet shows as unspent).
    pub fn budget_reports(
        &self,
        table: &crate::policy::RoutingTable,
        tenant: &str,
        now_ms: u64,
    ) -> Vec<BudgetReport> {
        let mut out = Vec::new();
        for (slot, policy) in table.policies().iter().enumerate() {
            if *policy.tenant != *tenant {
                continue;
            }
            let books = &self.policies[slot].budgets;
            for (budget, book) in policy.budgets.iter().zip(books.iter()) {
                let mut ledgers: Vec<&Ledger> = book
                    .ledgers
                    .values()
                    .filter(|l| l.peek(budget.window, now_ms).requests > 0)
                    .collect();
                ledgers.sort_by(|a, b| a.value.cmp(&b.value));
                out.extend(
                    ledgers
                        .iter()
                        .map(|l| report(policy, budget, Some(l), now_ms)),
                );
                if ledgers.is_empty() {
                    out.push(report(policy, budget, None, now_ms));
                }
            }
        }
        out
    }

    /// This shard's ledgers (of the tenants it owns) and open reservations; of a ledger,
    /// only the windows that still matter at `now_ms` (not ended, or waiting for results).
    pub fn save_budgets(&self, table: &crate::policy::RoutingTable, now_ms: u64) -> Saved {
        let mut saved = Saved::default();
        for (slot, policy) in table.policies().iter().enumerate() {
            let ps = &self.policies[slot];
            if ps.owner != self.placement.me {
                continue;
            }
            for (budget, book) in policy.budgets.iter().zip(ps.budgets.iter()) {
                let id = budget_id(budget);
                for (k, l) in book.ledgers.iter().filter(|(_, l)| !l.idle(now_ms)) {
                    let live = |w: &&WindowSpend| w.end_ms > now_ms || w.open > 0;
                    saved.ledgers.push(SavedLedger {
                        tenant: policy.tenant.clone(),
                        policy: policy.id.clone(),
                        budget: id,
                        key: *k,
                        ledger: Ledger {
                            value: l.value.clone(),
                            windows: l
                                .windows
                                .iter()
                                .filter(live)
                                .map(WindowSpend::saved)
                                .collect(),
                        },
                    });
                }
            }
        }
        saved.reservations = self.reservations.iter().map(|(k, r)| (k, *r)).collect();
        saved
    }

    /// Takes from a state file what belongs to the tenants this shard owns; returns how
    /// many ledgers and reservations it took.
    pub fn restore_budgets(
        &mut self,
        table: &crate::policy::RoutingTable,
        saved: &Saved,
    ) -> (usize, usize) {
        let (mut ledgers, mut reservations) = (0, 0);
        for s in &saved.ledgers {
            let Some(slot) = table.lookup(&s.tenant, &s.policy) else {
                continue;
            };
            let policy = table.policy(slot);
            let ps = &mut self.policies[slot.get()];
            if ps.owner != self.placement.me {
                continue;
            }
            let Some(j) = policy.budgets.iter().position(|b| budget_id(b) == s.budget) else {
                continue;
            };
            ps.budgets[j].ledgers.insert(s.key, s.ledger.clone());
            ledgers += 1;
            self.budget_changes += 1;
        }
        for (key, r) in &saved.reservations {
            let owned = self
                .by_name
                .get(&r.policy)
                .is_some_and(|&slot| self.policies[slot as usize].owner == self.placement.me);
            if owned {
                self.reservations.insert(*key, *r);
                reservations += 1;
            }
        }
        (ledgers, reservations)
    }
}
