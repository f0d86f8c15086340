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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::members::{owner_among, partition_of};
use super::ClusterNode;
use crate::decide::share::{HeldShare, ShareAsk, ShareBook, ShareGrant, REPORT_MS};
use crate::policy::PolicySlot;
use crate::server::shard::ShardCtx;
use crate::transport::nats::{Client, Msg};
use shardline_core::decide::rng::Rng;

/// Where a node's shard takes share asks: `<SHARE_SUBJECT>.<node_id>.<shard>`.
pub const SHARE_SUBJECT: &str = "shardline.cluster.v1.share";
/// How long an ask waits for its answer; the share it would renew lives on meanwhile.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// Policies one ask carries; a shard owning more sends several.
pub const ASKS_PER_MESSAGE_MAX: usize = 1_024;

#[derive(Debug, Serialize, Deserialize)]
struct AskMsg {
    node: String,
    asks: Vec<AskEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AskEntry {
    key: u64,
    demand: f64,
    applied: u32,
    applied_book: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct GrantMsg {
    grants: Vec<GrantEntry>,
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

/// The subject a node's shard takes asks on.
pub fn share_subject(node: &str, shard: u16) -> String {
    format!("{SHARE_SUBJECT}.{node}.{shard}")
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
    let handler = {
        let (ctx, cluster, shares) = (Rc::clone(ctx), Arc::clone(cluster), Rc::clone(&shares));
        Rc::new(move |client: &Client, msg: Msg<'_>| answer(&ctx, &cluster, &shares, client, msg))
    };
    if let Err(e) = client.subscribe(&share_subject(&me, ctx.id.0), None, handler) {
        log::error!("cluster: cannot take rate-limit share asks: {e}");
    }
    let task = report_loop(Rc::clone(ctx), client.clone(), Arc::clone(cluster), shares);
    glommio::spawn_local(task).detach();
}

/// The owner side: grants each asked policy this node owns, from its book.
fn answer(
    ctx: &Rc<ShardCtx>,
    cluster: &Arc<ClusterNode>,
    shares: &Rc<RefCell<Shares>>,
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
    let view = View::of(cluster, now_ms);
    let table = Arc::clone(ctx.table.borrow().table());
    let core = ctx.core.borrow();
    let state = core.state();
    let mut shares = shares.borrow_mut();
    let mut out = GrantMsg::default();
    for entry in asked.asks.iter().take(ASKS_PER_MESSAGE_MAX) {
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
    drop(shares);
    drop(core);
    if let Ok(body) = serde_json::to_vec(&out) {
        let _ = client.publish(reply, None, &[], &body);
    }
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

/// The membership as one report or answer reads it: taken once, not per policy.
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

/// Every `REPORT_MS`: reports demand and renews shares (module doc).
async fn report_loop(
    ctx: Rc<ShardCtx>,
    client: Client,
    cluster: Arc<ClusterNode>,
    shares: Rc<RefCell<Shares>>,
) {
    while !client.is_closed() {
        glommio::timer::sleep(Duration::from_millis(REPORT_MS)).await;
        let batches = report(&ctx, &cluster, &shares);
        let messages = batches.into_iter().flat_map(|(to, asks)| {
            let chunks: Vec<Vec<AskEntry>> = asks
                .chunks(ASKS_PER_MESSAGE_MAX)
                .map(<[AskEntry]>::to_vec)
                .collect();
            chunks.into_iter().map(move |chunk| (to.clone(), chunk))
        });
        for ((node, shard), asks) in messages {
            let (ctx, client, cluster) = (Rc::clone(&ctx), client.clone(), Arc::clone(&cluster));
            let shares = Rc::clone(&shares);
            let me = cluster.members().me().to_owned();
            glommio::spawn_local(async move {
                let asked_ms = cluster.now_ms();
                let body = AskMsg { node: me, asks };
                let Ok(body) = serde_json::to_vec(&body) else {
                    return;
                };
                let subject = share_subject(&node, shard);
                let stats = &cluster.share_stats;
                stats.asks.fetch_add(1, Relaxed);
                let Ok(reply) = client.request(&subject, &[], &body, ASK_TIMEOUT).await else {
                    stats.unanswered.fetch_add(1, Relaxed);
                    return;
                };
                let Ok(granted) = serde_json::from_slice::<GrantMsg>(&reply.payload) else {
                    return;
                };
                apply(&ctx, &cluster, &shares, &granted, asked_ms);
            })
            .detach();
        }
    }
}

/// Runs the buckets at the shares granted by an answer to an ask sent at `asked_ms`.
fn apply(
    ctx: &ShardCtx,
    cluster: &ClusterNode,
    shares: &RefCell<Shares>,
    granted: &GrantMsg,
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

type Batches = HashMap<(String, u16), Vec<AskEntry>>;

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
        let Some(&owner_shards) = view.shards.get(&owner) else {
            continue;
        };
        let shard =
            shards::Partitioner::new(owner_shards.clamp(1, shards::SHARDS_MAX as u32) as usize)
                .shard_of(&policy.tenant);
        batches.entry((owner, shard.0)).or_default().push(AskEntry {
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
