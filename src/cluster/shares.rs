//! Rate-limit shares between nodes, over NATS (`decide::share` has the protocol and why
//! it keeps limits exact). This is its transport: on every shard of a cluster node, for
//! the rate-limited policies the shard owns within its node, every `REPORT_MS`:
//! - the policy's tenant owned by another node: the shard asks that node's owner shard
//!   for its node's share, one request per destination shard carrying every policy
//!   (`shardline.cluster.v1.share.<node_id>.<shard>`), and runs its bucket at the answer;
//! - owned by this node: it grants itself its share from the policy's book, which also
//!   answers the other nodes' asks.
//!
//! A share not renewed in time runs out and stops its bucket. Nothing here is on a
//! decision's path: decisions read their shard's bucket, as on one node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::exchange::{self, Asks, Grants};
use super::{ClusterNode, View};
use crate::decide::share::{HeldShare, ShareAsk, ShareBook, ShareGrant};
use crate::policy::PolicySlot;
use crate::server::shard::ShardCtx;
use crate::transport::nats::Client;
use shardline_core::decide::rng::Rng;

/// Where a node's shard takes share asks: `<SHARE_SUBJECT>.<node_id>.<shard>`.
pub const SHARE_SUBJECT: &str = "shardline.cluster.v1.share";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AskEntry {
    key: u64,
    demand: f64,
    applied: u32,
    applied_book: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantEntry {
    key: u64,
    rps: u32,
    burst: u32,
    ttl_ms: u64,
    seq: u32,
    book: u64,
}

/// One shard's books (policies its node owns) and held shares (every policy it owns
/// within its node).
struct Shares {
    books: HashMap<u64, ShareBook>,
    held: HashMap<u64, HeldShare>,
    reported_ms: u64,
    /// Names new books (`ShareBook::new`).
    ids: Rng,
}

impl Shares {
    fn book(&mut self, key: u64, now_ms: u64, failover_ms: u64) -> &mut ShareBook {
        let ids = &mut self.ids;
        self.books
            .entry(key)
            .or_insert_with(|| ShareBook::new(ids.next_u64(), now_ms, failover_ms))
    }
}

/// Starts this shard's part: its buckets run at no share until granted, its subject
/// answers asks, and a task reports and renews until the client closes.
pub fn start(ctx: &Rc<ShardCtx>, client: &Client, cluster: &Arc<ClusterNode>) {
    let now_ns = ctx.shared.now().mono_ns;
    ctx.core.borrow_mut().state_mut().share_limits(now_ns);
    let seed = ctx.shared.settings.shard.state.seed ^ u64::from(ctx.id.0) ^ 0x7368_6172;
    let shares = Rc::new(RefCell::new(Shares {
        books: HashMap::new(),
        held: HashMap::new(),
        reported_ms: 0,
        ids: Rng::new(seed ^ crate::server::random_seed()),
    }));
    let me = cluster.members().me().to_owned();
    let answer = {
        let (ctx, cluster, shares) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&shares));
        move |asked: &Asks<AskEntry>| answer(&ctx, &cluster, &shares, asked)
    };
    let subject = exchange::subject(SHARE_SUBJECT, &me, ctx.id.0);
    exchange::serve(client, &subject, "rate-limit share asks", answer);
    let report = {
        let (ctx, cluster, shares) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&shares));
        move || report(&ctx, &cluster, &shares)
    };
    let apply = {
        let (ctx, cluster) = (Rc::clone(ctx), Arc::clone(cluster));
        move |granted: &Grants<GrantEntry>, asked_ms: u64| {
            apply(&ctx, &cluster, &shares, granted, asked_ms);
        }
    };
    let (client, cluster) = (client.clone(), Arc::clone(cluster));
    let task = exchange::report_every(client, cluster, SHARE_SUBJECT, counters, report, apply);
    glommio::spawn_local(task).detach();
}

fn counters(cluster: &ClusterNode) -> [&AtomicU64; 2] {
    let stats = &cluster.share_stats;
    [&stats.asks, &stats.unanswered]
}

/// The owner side: grants each asked policy this node owns, from its book.
fn answer(
    ctx: &ShardCtx,
    cluster: &ClusterNode,
    shares: &RefCell<Shares>,
    asked: &Asks<AskEntry>,
) -> Grants<GrantEntry> {
    let now_ms = cluster.now_ms();
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let core = ctx.core.borrow();
    let state = core.state();
    let mut shares = shares.borrow_mut();
    let mut out = Grants::default();
    for entry in &asked.asks {
        let Some(slot) = state.slot_of_key(entry.key) else {
            continue;
        };
        let policy = table.policy(slot);
        let Some(limit) = policy.rate_limit else {
            continue;
        };
        if !state.owns(slot) || view.owner_of(&policy.tenant) != view.me {
            continue;
        }
        let book = shares.book(entry.key, now_ms, view.failover_ms);
        let ask = ShareAsk {
            key: entry.key,
            demand_per_s: entry.demand,
            applied: entry.applied,
            applied_book: entry.applied_book,
        };
        out.grants
            .push(entry_of(&book.grant(&asked.node, limit, ask, now_ms)));
    }
    out
}

fn entry_of(g: &ShareGrant) -> GrantEntry {
    GrantEntry {
        key: g.key,
        rps: g.rps,
        burst: g.burst,
        ttl_ms: g.ttl_ms,
        seq: g.seq,
        book: g.book,
    }
}

/// Runs the buckets at the shares granted by an answer to an ask sent at `asked_ms`.
fn apply(
    ctx: &ShardCtx,
    cluster: &ClusterNode,
    shares: &RefCell<Shares>,
    granted: &Grants<GrantEntry>,
    asked_ms: u64,
) {
    let now_ms = cluster.now_ms();
    let now_ns = ctx.shared.now().mono_ns;
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut shares = shares.borrow_mut();
    for g in &granted.grants {
        let Some(slot) = state.slot_of_key(g.key) else {
            continue;
        };
        let grant = ShareGrant {
            key: g.key,
            rps: g.rps,
            burst: g.burst,
            ttl_ms: g.ttl_ms.min(crate::decide::share::GRANT_TTL_MS),
            seq: g.seq,
            book: g.book,
        };
        if shares
            .held
            .entry(g.key)
            .or_default()
            .granted(&grant, asked_ms, now_ms)
        {
            state.set_share(slot, grant.rps, grant.burst, now_ns);
        }
    }
}

type Batches = exchange::Batches<AskEntry>;

/// One report: this node's own shares granted, the others' asks batched by destination,
/// shares that ran out stopped.
fn report(ctx: &ShardCtx, cluster: &ClusterNode, shares: &RefCell<Shares>) -> Batches {
    let now_ms = cluster.now_ms();
    let now_ns = ctx.shared.now().mono_ns;
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let mut core = ctx.core.borrow_mut();
    let state = core.state_mut();
    let mut shares = shares.borrow_mut();
    let elapsed_ms = now_ms.saturating_sub(shares.reported_ms).max(1);
    shares.reported_ms = now_ms;
    let mut batches = Batches::new();
    // A reload that removed a policy (or changed its providers, hence its key) leaves its
    // book and share behind: kept only for the policies this shard owns now.
    let mut current = std::collections::HashSet::new();
    for (i, policy) in table.policies().iter().enumerate() {
        let slot = PolicySlot(i as u32);
        let Some(limit) = policy.rate_limit else {
            continue;
        };
        if !state.owns(slot) {
            continue;
        }
        let key = state.key_of(slot);
        current.insert(key);
        let demand_per_s = state.take_demand(slot) as f64 * 1_000.0 / elapsed_ms as f64;
        let held = shares.held.entry(key).or_default();
        let (applied, applied_book) = held.applied(now_ms);
        if held.expired(now_ms) && held.running() {
            held.stop();
            state.set_share(slot, 0, 0, now_ns);
            cluster.share_stats.expired.fetch_add(1, Relaxed);
        }
        let owner = view.owner_of(&policy.tenant);
        let ask = ShareAsk {
            key,
            demand_per_s,
            applied,
            applied_book,
        };
        if owner == view.me {
            let book = shares.book(key, now_ms, view.failover_ms);
            let grant = book.grant(&view.me, limit, ask, now_ms);
            let held = shares.held.entry(key).or_default();
            if held.granted(&grant, now_ms, now_ms) {
                state.set_share(slot, grant.rps, grant.burst, now_ns);
            }
            continue;
        }
        // Not ours (any more): a later return starts a new book, and waits.
        shares.books.remove(&key);
        let Some(shard) = view.shard_on(&owner, &policy.tenant) else {
            continue;
        };
        batches.entry((owner, shard)).or_default().push(AskEntry {
            key,
            demand: demand_per_s,
            applied,
            applied_book,
        });
    }
    shares.books.retain(|key, _| current.contains(key));
    shares.held.retain(|key, _| current.contains(key));
    batches
}
