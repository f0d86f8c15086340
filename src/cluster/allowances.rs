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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::members::{owner_among, partition_of};
use super::shares::ASKS_PER_MESSAGE_MAX;
use super::ClusterNode;
use crate::decide::allowance::{AllowAsk, AllowBook, AllowGrant, WindowKey, ALLOWANCE_TTL_MS};
use crate::decide::budget::{budget_id, window_bounds, Figures};
use crate::decide::share::REPORT_MS;
use crate::policy::PolicySlot;
use crate::server::shard::ShardCtx;
use crate::transport::nats::{Client, Msg};
use shardline_core::decide::rng::Rng;

/// Where a node's shard takes allowance reports: `<ALLOWANCE_SUBJECT>.<node_id>.<shard>`.
pub const ALLOWANCE_SUBJECT: &str = "shardline.cluster.v1.allowance";
/// How long a report waits for its answer; the caps it would renew live on meanwhile.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct AskMsg {
    node: String,
    asks: Vec<AskEntry>,
}

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
    budget: u64,
    scope: u64,
    start_ms: u64,
    value: Box<str>,
    committed: Wire,
    want: bool,
    held: u32,
    held_book: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct GrantMsg {
    grants: Vec<GrantEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantEntry {
    key: u64,
    budget: u64,
    scope: u64,
    start_ms: u64,
    /// The committed figures the owner took from the report.
    acked: Wire,
    cap: Wire,
    seq: u32,
    book: u64,
}

/// One shard's books: the budgeted policies its node owns.
struct Books {
    books: HashMap<u64, AllowBook>,
    /// Names new books (`AllowBook::new`).
    ids: Rng,
}

impl Books {
    fn book(&mut self, key: u64, now_ms: u64, failover_ms: u64) -> &mut AllowBook {
        let ids = &mut self.ids;
        self.books
            .entry(key)
            .or_insert_with(|| AllowBook::new(ids.next_u64(), now_ms, failover_ms))
    }
}

pub fn allowance_subject(node: &str, shard: u16) -> String {
    format!("{ALLOWANCE_SUBJECT}.{node}.{shard}")
}

/// Starts this shard's part: its subject answers reports, and a task reports and keeps
/// the books until the client closes. The shard's budgets start capped with no room
/// (`ShardState::share_limits`).
pub fn start(ctx: &Rc<ShardCtx>, client: &Client, cluster: &Arc<ClusterNode>) {
    let seed = ctx.shared.settings.shard.state.seed ^ u64::from(ctx.id.0) ^ 0x616c_6c6f;
    let books = Rc::new(RefCell::new(Books {
        books: HashMap::new(),
        ids: Rng::new(seed ^ crate::server::random_seed()),
    }));
    let me = cluster.members().me().to_owned();
    let handler = {
        let (ctx, cluster, books) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&books));
        Rc::new(move |client: &Client, msg: Msg<'_>| answer(&ctx, &cluster, &books, client, msg))
    };
    if let Err(e) = client.subscribe(&allowance_subject(&me, ctx.id.0), None, handler) {
        log::error!("cluster: cannot take budget allowance reports: {e}");
    }
    let task = report_loop(Rc::clone(ctx), client.clone(), Arc::clone(cluster), books);
    glommio::spawn_local(task).detach();
}

/// The membership as one report or answer reads it.
struct View {
    me: String,
    live: Vec<String>,
    shards: HashMap<String, u32>,
    failover_ms: u64,
}

impl View {
    fn of(cluster: &ClusterNode, now_ms: u64) -> View {
        let members = cluster.members();
        let rows = members.rows(now_ms);
        View {
            me: members.me().to_owned(),
            live: rows.iter().map(|r| r.node_id.clone()).collect(),
            shards: rows
                .iter()
                .filter_map(|r| Some((r.node_id.clone(), r.shards?)))
                .collect(),
            failover_ms: members.failover_ms(),
        }
    }

    fn owner_of(&self, tenant: &str) -> String {
        let live: Vec<&str> = self.live.iter().map(String::as_str).collect();
        owner_among(partition_of(tenant), &live)
            .unwrap_or(&self.me)
            .to_owned()
    }
}

/// The owner side: takes each report of a policy this node owns into its book, and
/// answers with the node's caps.
fn answer(
    ctx: &Rc<ShardCtx>,
    cluster: &Arc<ClusterNode>,
    books: &Rc<RefCell<Books>>,
    client: &Client,
    msg: Msg<'_>,
) {
    let Some(reply) = msg.reply else {
        return;
    };
    let Ok(asked) = serde_json::from_slice::<AskMsg>(msg.payload) else {
        return;
    };
    let now_ms = cluster.now_ms();
    let unix_ms = ctx.shared.now().unix_ms;
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut books = books.borrow_mut();
    let mut out = GrantMsg::default();
    for e in asked.asks.iter().take(ASKS_PER_MESSAGE_MAX) {
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
        let window = WindowKey {
            budget: e.budget,
            scope: e.scope,
            start_ms: e.start_ms,
        };
        let ask = AllowAsk {
            window,
            value: e.value.clone(),
            committed: e.committed.into(),
            want: e.want,
            held: e.held,
            held_book: e.held_book,
        };
        let live = view.live.len();
        let grant = match state.owner_window(slot, policy, &window, &e.value, unix_ms) {
            Some((w, limits)) => {
                let own = (Some(limits), w.committed());
                let grant = book.grant(&asked.node, own, &ask, live, now_ms);
                w.outside = book.outside(&window, now_ms);
                grant
            }
            None => book.grant(&asked.node, (None, Figures::default()), &ask, live, now_ms),
        };
        out.grants.push(GrantEntry {
            key: e.key,
            budget: e.budget,
            scope: e.scope,
            start_ms: e.start_ms,
            acked: e.committed,
            cap: grant.cap.into(),
            seq: grant.seq,
            book: grant.book,
        });
    }
    drop(books);
    drop(core);
    if let Ok(body) = serde_json::to_vec(&out) {
        let _ = client.publish(reply, None, &[], &body);
    }
}

/// Every `REPORT_MS`: reports, renews caps and keeps the books (module doc).
async fn report_loop(
    ctx: Rc<ShardCtx>,
    client: Client,
    cluster: Arc<ClusterNode>,
    books: Rc<RefCell<Books>>,
) {
    while !client.is_closed() {
        glommio::timer::sleep(Duration::from_millis(REPORT_MS)).await;
        let batches = report(&ctx, &cluster, &books);
        for ((node, shard), asks) in batches {
            for chunk in asks.chunks(ASKS_PER_MESSAGE_MAX) {
                let (ctx, client, cluster) =
                    (Rc::clone(&ctx), client.clone(), Arc::clone(&cluster));
                let body = AskMsg {
                    node: cluster.members().me().to_owned(),
                    asks: chunk.to_vec(),
                };
                let subject = allowance_subject(&node, shard);
                glommio::spawn_local(async move {
                    let asked_ms = cluster.now_ms();
                    let Ok(body) = serde_json::to_vec(&body) else {
                        return;
                    };
                    let stats = &cluster.allowance_stats;
                    stats.reports.fetch_add(1, Relaxed);
                    let Ok(reply) = client.request(&subject, &[], &body, ASK_TIMEOUT).await else {
                        stats.unanswered.fetch_add(1, Relaxed);
                        return;
                    };
                    let Ok(granted) = serde_json::from_slice::<GrantMsg>(&reply.payload) else {
                        return;
                    };
                    apply(&ctx, &granted, asked_ms + ALLOWANCE_TTL_MS);
                })
                .detach();
            }
        }
    }
}

/// Takes the caps of an answer, usable until `until_ms`.
fn apply(ctx: &ShardCtx, granted: &GrantMsg, until_ms: u64) {
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    for g in &granted.grants {
        let Some(slot) = state.slot_of_key(g.key) else {
            continue;
        };
        let window = WindowKey {
            budget: g.budget,
            scope: g.scope,
            start_ms: g.start_ms,
        };
        let grant = AllowGrant {
            cap: g.cap.into(),
            seq: g.seq,
            book: g.book,
        };
        let figures = (g.acked.into(), grant);
        state.allowance_granted(slot, table.policy(slot), &window, figures, until_ms);
    }
}

type Batches = HashMap<(String, u16), Vec<AskEntry>>;

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
                let outside = book.outside(&w, now_ms);
                let value = "";
                if let Some((spend, _)) = state.owner_window(slot, policy, &w, value, unix_ms) {
                    spend.outside = outside;
                }
            }
            state.set_capped(slot, !book.ready(now_ms));
            continue;
        }
        // Not ours (any more): a later return starts a new book, and waits.
        books.books.remove(&key);
        state.set_capped(slot, true);
        state.drop_allowances(slot, now_ms + REPORT_MS);
        let Some(&owner_shards) = view.shards.get(&owner) else {
            continue;
        };
        let shard =
            shards::Partitioner::new(owner_shards.clamp(1, shards::SHARDS_MAX as u32) as usize)
                .shard_of(&policy.tenant);
        let asks = state.allowance_asks(slot, policy);
        let batch = batches.entry((owner, shard.0)).or_default();
        batch.extend(asks.into_iter().map(|a| AskEntry {
            key,
            budget: a.window.budget,
            scope: a.window.scope,
            start_ms: a.window.start_ms,
            value: a.value,
            committed: a.committed.into(),
            want: a.want,
            held: a.held,
            held_book: a.held_book,
        }));
    }
    books.books.retain(|key, _| current.contains(key));
    batches.retain(|_, asks| !asks.is_empty());
    batches
}
