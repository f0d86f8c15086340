//! Budget allowances between nodes, over NATS (`decide::allowance` has the protocol and
//! why it keeps budgets exact). This is its transport: on every shard of a cluster node,
//! for the budgeted policies the shard owns within its node, every `REPORT_MS`:
//! - the tenant owned by another node: the shard's budgets admit only within their
//!   allowances; it drops the caps about to end and reports every window the owner has
//!   not acknowledged, or where a decision wanted room, to the owner node's owner shard
//!   (`shardline.cluster.v1.allowance.<node_id>.<shard>`, one request per destination
//!   shard), and takes the caps of the answer;
//! - owned by this node: once the policy's book is ready, its budgets admit against the
//!   limit less what the other nodes may have committed (`WindowSpend::outside`), which
//!   the book also answers the other nodes' reports from.
//!
//! Nothing here is on a decision's path: decisions read their shard's ledger.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::exchange::{self, Asks, Grants};
use super::{ClusterNode, View};
use crate::decide::allowance::{AllowAsk, AllowBook, AllowGrant, WindowKey, ALLOWANCE_TTL_MS};
use crate::decide::budget::{budget_id, window_bounds, Figures};
use crate::decide::share::REPORT_MS;
use crate::policy::PolicySlot;
use crate::server::shard::ShardCtx;
use crate::transport::nats::Client;
use shardline_core::decide::rng::Rng;

/// Where a node's shard takes allowance reports: `<ALLOWANCE_SUBJECT>.<node_id>.<shard>`.
pub const ALLOWANCE_SUBJECT: &str = "shardline.cluster.v1.allowance";

/// Figures on the wire: JSON has no infinity, so an unlimited cost travels as `f64::MAX`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Wire {
    requests: u64,
    cost: f64,
    tokens: u64,
}

impl From<Figures> for Wire {
    fn from(f: Figures) -> Wire {
        Wire {
            requests: f.requests,
            cost: if f.cost.is_finite() { f.cost } else { f64::MAX },
            tokens: f.tokens,
        }
    }
}

impl From<Wire> for Figures {
    fn from(w: Wire) -> Figures {
        Figures {
            requests: w.requests,
            cost: if w.cost.is_finite() {
                w.cost.max(0.0)
            } else {
                0.0
            },
            tokens: w.tokens,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AskEntry {
    /// `sync::policy_key`.
    key: u64,
    window: WindowKey,
    value: Box<str>,
    committed: Wire,
    want: bool,
    held: u32,
    held_book: u64,
    /// What a previous owner node said it had committed itself in the window (its last
    /// answer's `owner`), passed on to the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<(String, Wire)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantEntry {
    key: u64,
    window: WindowKey,
    /// The committed figures the owner took from the report.
    acked: Wire,
    cap: Wire,
    seq: u32,
    book: u64,
    /// The answering owner node and its own committed figures in the window.
    owner: String,
    owner_committed: Wire,
}

/// The previous owners' figures one shard passes on; beyond this many windows it keeps
/// no more (a next owner then counts those owners' spend as lost).
const SEEN_MAX: usize = 65_536;

/// One shard's books: the budgeted policies its node owns.
struct Books {
    books: HashMap<u64, AllowBook>,
    /// Names new books (`AllowBook::new`).
    ids: Rng,
    /// The holder side: the owner node each policy was last reported to, and what each
    /// owner said it had committed itself, by (policy, window).
    owners: HashMap<u64, String>,
    seen: HashMap<(u64, WindowKey), (String, Figures)>,
}

impl Books {
    fn book(&mut self, key: u64, now_ms: u64, failover_ms: u64) -> &mut AllowBook {
        let ids = &mut self.ids;
        self.books
            .entry(key)
            .or_insert_with(|| AllowBook::new(ids.next_u64(), now_ms, failover_ms))
    }
}

/// Starts this shard's part: its subject answers reports, and a task reports and keeps
/// the books until the client closes. The shard's budgets start capped with no room
/// (`ShardState::share_limits`).
pub fn start(ctx: &Rc<ShardCtx>, client: &Client, cluster: &Arc<ClusterNode>) {
    let seed = ctx.shared.settings.shard.state.seed ^ u64::from(ctx.id.0) ^ 0x616c_6c6f;
    let books = Rc::new(RefCell::new(Books {
        books: HashMap::new(),
        ids: Rng::new(seed ^ crate::server::random_seed()),
        owners: HashMap::new(),
        seen: HashMap::new(),
    }));
    let me = cluster.members().me().to_owned();
    let answer = {
        let (ctx, cluster, books) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&books));
        move |asked: &Asks<AskEntry>| answer(&ctx, &cluster, &books, asked)
    };
    let subject = exchange::subject(ALLOWANCE_SUBJECT, &me, ctx.id.0);
    exchange::serve(client, &subject, "budget allowance reports", answer);
    let report = {
        let (ctx, cluster, books) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&books));
        move || report(&ctx, &cluster, &books)
    };
    let apply = {
        let (ctx, books) = (Rc::clone(ctx), Rc::clone(&books));
        move |granted: &Grants<GrantEntry>, asked_ms: u64| {
            apply(&ctx, &books, granted, asked_ms + ALLOWANCE_TTL_MS);
        }
    };
    let (client, cluster) = (client.clone(), Arc::clone(cluster));
    let task = exchange::report_every(client, cluster, ALLOWANCE_SUBJECT, counters, report, apply);
    glommio::spawn_local(task).detach();
}

fn counters(cluster: &ClusterNode) -> [&AtomicU64; 2] {
    let stats = &cluster.allowance_stats;
    [&stats.reports, &stats.unanswered]
}

/// The owner side: takes each report of a policy this node owns into its book, and
/// answers with the node's caps.
fn answer(
    ctx: &ShardCtx,
    cluster: &ClusterNode,
    books: &RefCell<Books>,
    asked: &Asks<AskEntry>,
) -> Grants<GrantEntry> {
    let now_ms = cluster.now_ms();
    let unix_ms = ctx.shared.now().unix_ms;
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut books = books.borrow_mut();
    let mut out = Grants::default();
    for e in &asked.asks {
        let Some(slot) = state.slot_of_key(e.key) else {
            continue;
        };
        let policy = table.policy(slot);
        if policy.budgets.is_empty()
            || !state.owns(slot)
            || view.owner_of(&policy.tenant) != view.me
        {
            continue;
        }
        let book = books.book(e.key, now_ms, view.failover_ms);
        let window = e.window;
        let ask = AllowAsk {
            window,
            value: e.value.clone(),
            committed: e.committed.into(),
            want: e.want,
            held: e.held,
            held_book: e.held_book,
        };
        if let Some((node, figures)) = &e.seen {
            if *node != view.me && *node != asked.node {
                book.count_seen(node, &window, (*figures).into());
            }
        }
        let live = view.live.len();
        let grant = match state.owner_window(slot, policy, &window, &e.value, unix_ms) {
            Some((w, limits)) => {
                let own = (Some(limits), w.committed());
                let grant = book.grant(&asked.node, own, &ask, live, now_ms);
                w.outside = book.outside(&window, now_ms);
                w.outside_reported = book.outside_reported(&window);
                grant
            }
            None => book.grant(&asked.node, (None, Figures::default()), &ask, live, now_ms),
        };
        out.grants.push(GrantEntry {
            key: e.key,
            window,
            acked: e.committed,
            cap: grant.cap.into(),
            seq: grant.seq,
            book: grant.book,
            owner: view.me.clone(),
            owner_committed: grant.owner.into(),
        });
    }
    out
}

/// Takes the caps of an answer, usable until `until_ms`.
fn apply(ctx: &ShardCtx, books: &RefCell<Books>, granted: &Grants<GrantEntry>, until_ms: u64) {
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut books = books.borrow_mut();
    for g in &granted.grants {
        let seen = (g.owner.clone(), g.owner_committed.into());
        if books.seen.len() < SEEN_MAX || books.seen.contains_key(&(g.key, g.window)) {
            books.seen.insert((g.key, g.window), seen);
        }
        let Some(slot) = state.slot_of_key(g.key) else {
            continue;
        };
        let window = g.window;
        let grant = AllowGrant {
            cap: g.cap.into(),
            seq: g.seq,
            book: g.book,
            owner: g.owner_committed.into(),
        };
        let figures = (g.acked.into(), grant);
        state.allowance_granted(slot, table.policy(slot), &window, figures, until_ms);
    }
}

type Batches = exchange::Batches<AskEntry>;

/// One report: the books of this node's policies kept and their outside figures set, the
/// other nodes' reports batched by destination, caps about to end dropped.
fn report(ctx: &ShardCtx, cluster: &ClusterNode, books: &RefCell<Books>) -> Batches {
    let now_ms = cluster.now_ms();
    let unix_ms = ctx.shared.now().unix_ms;
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut books = books.borrow_mut();
    let mut batches = Batches::new();
    let mut current = HashSet::new();
    for (i, policy) in table.policies().iter().enumerate() {
        let slot = PolicySlot(i as u32);
        if policy.budgets.is_empty() || !state.owns(slot) {
            continue;
        }
        let key = state.key_of(slot);
        current.insert(key);
        let owner = view.owner_of(&policy.tenant);
        if books.owners.get(&key) != Some(&owner) {
            state.allowance_owner_changed(slot);
            books.owners.insert(key, owner.clone());
        }
        if owner == view.me {
            let book = books.book(key, now_ms, view.failover_ms);
            // Windows that ended are forgotten; the current ones' outside figures follow
            // the caps that run out.
            let starts: HashMap<u64, u64> = policy
                .budgets
                .iter()
                .map(|b| (budget_id(b), window_bounds(b.window, unix_ms).0))
                .collect();
            book.retain(|w| starts.get(&w.budget).is_some_and(|&s| w.start_ms >= s));
            for w in book.windows() {
                let outside = (book.outside(&w, now_ms), book.outside_reported(&w));
                state.set_outside(slot, policy, &w, outside);
            }
            state.set_capped(slot, !book.ready(now_ms));
            continue;
        }
        // Not ours (any more): a later return starts a new book, and waits.
        books.books.remove(&key);
        state.set_capped(slot, true);
        state.drop_allowances(slot, now_ms + REPORT_MS);
        let Some(shard) = view.shard_on(&owner, &policy.tenant) else {
            continue;
        };
        let asks = state.allowance_asks(slot, policy);
        let seen = &books.seen;
        let entries: Vec<AskEntry> = asks
            .into_iter()
            .map(|a| AskEntry {
                key,
                window: a.window,
                value: a.value,
                committed: a.committed.into(),
                want: a.want,
                held: a.held,
                held_book: a.held_book,
                seen: seen
                    .get(&(key, a.window))
                    .filter(|(node, _)| *node != owner)
                    .map(|(node, f)| (node.clone(), (*f).into())),
            })
            .collect();
        batches.entry((owner, shard)).or_default().extend(entries);
    }
    books.books.retain(|key, _| current.contains(key));
    books.owners.retain(|key, _| current.contains(key));
    // A window ends within a month and a day (`calendar_month`); what was seen of it then
    // is no longer needed.
    let ended = unix_ms.saturating_sub(32 * 86_400_000);
    books
        .seen
        .retain(|(key, w), _| current.contains(key) && w.start_ms >= ended);
    batches.retain(|_, asks| !asks.is_empty());
    batches
}
