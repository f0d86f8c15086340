//! Results reach every node of a cluster: a node that accepts an ExecResult (from a
//! worker, over NATS or HTTP) forwards it to the others, which feed their breakers,
//! averages, provider usage and budget reservations with it as if they had received it.
//!
//! Why every node rather than the tenant's owner node alone: every node decides the
//! tenant's requests from its own replicas, so every node's breakers must see the results
//! that open and close circuits; and a budget reservation is settled by its result on the
//! node that made the decision, which may be any of them. Forwarding the result itself,
//! rather than the owner's breaker and average snapshots, needs no clock shared between
//! nodes (a snapshot's instants are on its node's monotonic clock) and settles
//! reservations wherever they were made; its cost is that every node does the work of
//! every result (a few microseconds each) and counts half-open probes on its own (each
//! node admits up to `half_open_max_calls` probes per round).
//!
//! A forwarded result carries `Shardline-Origin: <node_id>` and goes to
//! `shardline.cluster.v1.results`, which each node takes in a queue group of its own
//! (`shardline.results.<node_id>`), so one shard per node handles it and hands it to the
//! tenant's owner shard there. It is never forwarded again, and its UsageEvent was
//! published by the node that accepted it. Each node de-duplicates as on its own
//! (`assignment_id`, else `request_id` with the provider), so a result a worker sent twice
//! to two nodes is counted once everywhere.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::ClusterNode;
use crate::contract::ExecResult;
use crate::server::shard::ShardCtx;
use crate::transport::nats::{Client, Msg};

/// Where accepted results are forwarded to the other nodes.
pub const RESULTS_SUBJECT: &str = "shardline.cluster.v1.results";
/// The node that accepted a forwarded result.
pub const ORIGIN_HEADER: &str = "Shardline-Origin";

/// Forwards a result this node accepted (not one forwarded to it).
pub fn forward(cluster: &ClusterNode, client: &Client, result: &ExecResult) {
    let me = cluster.members().me().to_owned();
    let headers = [(ORIGIN_HEADER, me.as_str())];
    match client.publish(RESULTS_SUBJECT, None, &headers, &result.encode()) {
        Ok(()) => cluster.result_stats.forwarded.fetch_add(1, Relaxed),
        // A full buffer: the other nodes miss this one (counted), as if it were lost.
        Err(_) => cluster.result_stats.unsent.fetch_add(1, Relaxed),
    };
}

/// Takes the results the other nodes forward, on this shard, in the node's queue group.
pub fn subscribe(ctx: &Rc<ShardCtx>, client: &Client, cluster: &Arc<ClusterNode>) {
    let me = cluster.members().me().to_owned();
    let group = format!("shardline.results.{me}");
    let handler = {
        let (ctx, cluster) = (Rc::clone(ctx), Arc::clone(cluster));
        Rc::new(move |client: &Client, msg: Msg<'_>| {
            let origin = msg.headers.and_then(|h| h.get(ORIGIN_HEADER));
            // Our own forwards come back to our group; anything without an origin is not
            // a forward.
            if origin.is_none_or(|o| o == me) {
                return;
            }
            cluster.result_stats.received.fetch_add(1, Relaxed);
            crate::server::nats::take_result(&ctx, client, msg, true);
        })
    };
    if let Err(e) = client.subscribe(RESULTS_SUBJECT, Some(&group), handler) {
        log::error!("cluster: cannot take the other nodes' results: {e}");
    }
}
