//! Decisions only the tenant's owner node can make exactly: those of a policy with a
//! provider `rpm` or with budgets and extension stages, requests with an
//! `idempotency_key`, and budgeted decisions this node's allowance could not take
//! (`Step::NeedsOwnerNode`, `decide::allowance`). Inside a node they cross to the
//! tenant's owner shard, whose one ledger (a provider's requests per minute, the key's
//! first answer) makes them exact (docs/ARCHITECTURE.md, "Budgets: decided on the owner,
//! not leased"); in a cluster they cross to the owner *node*'s owner shard in the same
//! way, over NATS. Every other decision is made where it lands — a budgeted one within
//! the node's allowance.
//!
//! The cost is a NATS round trip on those requests when they land on another node (about
//! a loopback round trip twice over, plus the owner's decision).
//!
//! A forwarded request carries `Shardline-Origin: <node_id>` and is never forwarded
//! again, whatever the receiving node thinks of ownership (during a membership change two
//! nodes may disagree for up to `failover_ms`): at most one hop. A node that has owned a
//! tenant for less than `failover_ms` decides none of these requests yet (`Where::NotYet`,
//! answered `overloaded`): another node may still believe it owns the tenant and decide
//! with its own ledger until it hears of the change, as a new owner of a rate limit grants
//! no share for as long (`decide::share`). The owner node's answer is
//! relayed as it is, status and body; one that does not come within the handoff timeout
//! is answered `overloaded` (503) rather than decided here, which would split the ledger.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::results::ORIGIN_HEADER;
use super::ClusterNode;
use crate::contract::{DecideRequest, Headers};
use crate::server::shard::ShardCtx;
use crate::transport::nats::{Client, Msg};

/// Where a node's shard takes the decisions other nodes forward:
/// `<DECIDE_SUBJECT>.<node_id>.<shard>`.
pub const DECIDE_SUBJECT: &str = "shardline.cluster.v1.decide";

pub fn decide_subject(node: &str, shard: u16) -> String {
    format!("{DECIDE_SUBJECT}.{node}.{shard}")
}

/// Where a request must be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// On this node, as any decision.
    Here,
    /// On another node's shard: the tenant's owner.
    There(String, u16),
    /// Nowhere yet: this node has owned the tenant for less than `failover_ms`, so
    /// another node may still be deciding as its owner with its own ledger. Answered
    /// `overloaded` (retry) rather than split the ledger.
    NotYet,
}

/// Where `req` must be decided (module doc).
pub fn destination(ctx: &ShardCtx, req: &DecideRequest<'_>) -> Where {
    let Some(cluster) = ctx.shared.cluster.as_ref() else {
        return Where::Here;
    };
    let crosses = req.idempotency_key.is_some() || {
        let table = ctx.table.borrow();
        let table = table.table();
        table.owner_decides(&req.tenant_id, &req.policy_id)
            && !table
                .lookup(&req.tenant_id, &req.policy_id)
                .is_some_and(|slot| by_allowance(table.policy(slot)))
    };
    if !crosses {
        return Where::Here;
    }
    let members = cluster.members();
    let now = cluster.now_ms();
    let owner = members.owner_of(&req.tenant_id, now);
    if owner == members.me() {
        return if members.settled_owner_of(&req.tenant_id, now) {
            Where::Here
        } else {
            Where::NotYet
        };
    }
    match owner_shard(&members, &owner, &req.tenant_id) {
        Some(shard) => Where::There(owner, shard),
        None => Where::NotYet,
    }
}

/// Whether a policy's decisions are taken where they land, within the allowances of its
/// budgets (`decide::allowance`): it is budgeted, and has neither a provider `rpm` (a
/// count of the owner's own decisions) nor extension stages (whose calls come between
/// admission and the decision, so a refusal could not be sent on unspent).
pub fn by_allowance(policy: &crate::policy::Policy) -> bool {
    !policy.budgets.is_empty()
        && !policy.providers.iter().any(|p| p.limits.rpm.is_some())
        && !policy.has_stages()
}

fn owner_shard(members: &super::members::Members, owner: &str, tenant: &str) -> Option<u16> {
    let shards = (members.shards_of(owner)? as usize).clamp(1, shards::SHARDS_MAX);
    Some(shards::Partitioner::new(shards).shard_of(tenant).0)
}

/// Where a decision this node's allowance could not take goes (`Step::NeedsOwnerNode`):
/// the owner node's owner shard; `None` while this node takes itself for the owner (its
/// book is not open yet) or knows no shard count of the owner.
pub fn owner_node(ctx: &ShardCtx, tenant: &str) -> Option<(String, u16)> {
    let cluster = ctx.shared.cluster.as_ref()?;
    let members = cluster.members();
    let owner = members.owner_of(tenant, cluster.now_ms());
    if owner == members.me() {
        return None;
    }
    let shard = owner_shard(&members, &owner, tenant)?;
    Some((owner, shard))
}

/// The answer to a decision this node's allowance could not take: the owner node's, or
/// `overloaded` while there is none to ask (`owner_node`) or the request was already
/// forwarded once.
pub async fn relay(
    ctx: &ShardCtx,
    body: &[u8],
    headers: &[(&'static str, String)],
    who: &Forwarded,
    forwarded: bool,
) -> (u16, Vec<u8>) {
    let dest = owner_node(ctx, &who.tenant).filter(|_| !forwarded);
    match (dest, ctx.shared.cluster.as_ref(), ctx.nats.get()) {
        (Some(dest), Some(cluster), Some(client)) => {
            let timeout = ctx.shared.settings.handoff_timeout;
            decide_there(cluster, client, dest, body, headers, who, timeout).await
        }
        _ => not_yet(who),
    }
}

/// The answer to a request `destination` said is `NotYet`: 503 `overloaded`.
pub fn not_yet(who: &Forwarded) -> (u16, Vec<u8>) {
    let code = crate::contract::ErrorCode::Overloaded;
    let message = format!(
        "tenant {} has just moved to this node; its ledger opens in a moment: retry",
        who.tenant
    );
    let mut body = Vec::with_capacity(256);
    let details = crate::contract::ErrorDetails::default();
    let (rid, tid) = (Some(who.request_id.as_str()), who.trace_id.as_deref());
    crate::contract::encode_error(&mut body, code, &message, &details, rid, tid);
    (code.http_status(), body)
}

/// The request's contract headers, owned, to travel with it.
pub fn header_pairs(headers: &Headers<'_>) -> Vec<(&'static str, String)> {
    [
        ("tenant_id", headers.tenant_id),
        ("trace_id", headers.trace_id),
        ("traceparent", headers.traceparent),
        ("version", headers.version),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?.to_owned())))
    .collect()
}

/// Who a forwarded request is, for the answer when its owner node does not give one.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub tenant: String,
    pub request_id: String,
    pub trace_id: Option<String>,
}

impl Forwarded {
    pub fn of(req: &DecideRequest<'_>) -> Self {
        Forwarded {
            tenant: req.tenant_id.as_ref().to_owned(),
            request_id: req.request_id.as_ref().to_owned(),
            trace_id: req.trace_id.as_deref().map(str::to_owned),
        }
    }
}

/// The owner node's answer to `payload` (a DecideRequest with its contract `headers`):
/// (HTTP status, body). No answer in time: 503 `overloaded`, in the contract's format.
pub async fn decide_there(
    cluster: &ClusterNode,
    client: &Client,
    (node, shard): (String, u16),
    payload: &[u8],
    headers: &[(&'static str, String)],
    who: &Forwarded,
    timeout: std::time::Duration,
) -> (u16, Vec<u8>) {
    let me = cluster.members().me().to_owned();
    let mut sent: Vec<(&str, &str)> = vec![(ORIGIN_HEADER, &me)];
    sent.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
    let subject = decide_subject(&node, shard);
    cluster.forward_stats.forwarded.fetch_add(1, Relaxed);
    match client.request(&subject, &sent, payload, timeout).await {
        Ok(reply) => {
            let status = reply
                .header("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (status, reply.payload)
        }
        Err(err) => {
            cluster.forward_stats.failed.fetch_add(1, Relaxed);
            log::warn!(
                "cluster: a decision for {} forwarded to node {node}: {err}",
                who.tenant
            );
            let code = crate::contract::ErrorCode::Overloaded;
            let message =
                format!("the tenant's owner node {node} did not answer in time ({err}); retry");
            let mut body = Vec::with_capacity(256);
            let details = crate::contract::ErrorDetails::default();
            let (rid, tid) = (Some(who.request_id.as_str()), who.trace_id.as_deref());
            crate::contract::encode_error(&mut body, code, &message, &details, rid, tid);
            (code.http_status(), body)
        }
    }
}

/// `details.retry_after_ms` of a relayed error answer, in whole seconds (HTTP's
/// `Retry-After`).
pub fn retry_after_s(body: &[u8]) -> Option<u64> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ms = answer["error"]["details"]["retry_after_ms"].as_u64()?;
    Some(ms.div_ceil(1_000).max(1))
}

/// Whether a NATS decide message was forwarded by another node (and so is decided here).
pub fn forwarded(msg: &Msg<'_>) -> bool {
    msg.headers.and_then(|h| h.get(ORIGIN_HEADER)).is_some()
}

/// Takes the decisions other nodes forward to this shard.
pub fn subscribe(ctx: &Rc<ShardCtx>, client: &Client, cluster: &Arc<ClusterNode>) {
    let subject = decide_subject(cluster.members().me(), ctx.id.0);
    let handler = {
        let ctx = Rc::clone(ctx);
        Rc::new(move |client: &Client, msg: Msg<'_>| {
            crate::server::nats::on_decide(&ctx, client, msg);
        })
    };
    if let Err(e) = client.subscribe(&subject, None, handler) {
        log::error!("cluster: cannot take decisions forwarded by other nodes: {e}");
    }
}
