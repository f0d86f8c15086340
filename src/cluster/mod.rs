//! A router as one node of a cluster on NATS (docs/CLUSTER.md).
//!
//! What exists:
//! - one source of policy truth: the policies live in a JetStream key-value bucket
//!   (`kv`); every node mirrors it into its own policy directory (`policies`) and serves
//!   from there as one node does; an admin put or delete on any node goes to the bucket
//!   first, with compare-and-set on the key's revision, so two writers cannot both win;
//! - membership and ownership (`members`): heartbeats on a subject, and the published
//!   function from a tenant to its owner node over the live members.
//!
//! Where it runs: the watch, the bucket's creation and the heartbeats on shard 0's NATS
//! client (one per process, as the service API), the mirror's file writes on glommio's
//! blocking pool, and an admin write's bucket request on the shard that took the request.

pub mod allowances;
pub mod exchange;
pub mod forward;
pub mod kv;
pub mod members;
pub mod policies;
pub mod push;
pub mod results;
pub mod shares;

use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::admin::{ClusterWrite, PolicyStore, TableHandle};
use crate::metrics::ExtraMetric;
use crate::transport::nats::{Client, Msg};
use kv::{Bucket, Event, KvError, Watch};
use members::{Beat, Members};
use policies::{policy_key, PolicyMirror};

/// How long a bucket request (a put, a delete, the bucket's creation) may take.
pub const KV_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle heartbeats of the policy watch: a watch that hears nothing for
/// `kv::HEARTBEATS_MISSED_MAX` of them is recreated.
pub const WATCH_HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the mirror looks for its client's first connection.
const CONNECTED_POLL: Duration = Duration::from_millis(20);
/// Delay between attempts to create the bucket while JetStream does not answer.
const ENSURE_RETRY: Duration = Duration::from_secs(1);

/// Where heartbeats go: one subject per node under it (node ids may hold dots, so the
/// subscription is `>` and the node is read from the payload).
pub const HEARTBEAT_SUBJECT: &str = "shardline.cluster.v1.heartbeat";

/// A node's cluster side: its policy bucket and the mirror of it, and its view of the
/// other nodes.
#[derive(Debug)]
pub struct ClusterNode {
    pub bucket: Bucket,
    pub replicas: u32,
    pub mirror: Arc<PolicyMirror>,
    members: Mutex<Members>,
    /// This node's heartbeat.
    beat: Beat,
    /// The members' clock: this node's monotonic milliseconds.
    epoch: Instant,
    /// Rate-limit shares (`shares`), counted over all shards.
    pub share_stats: ShareStats,
    /// Budget allowances (`allowances`), counted over all shards.
    pub allowance_stats: AllowanceStats,
    /// Results forwarded between nodes (`results`).
    pub result_stats: ResultStats,
    /// Decisions forwarded to their owner node (`forward`).
    pub forward_stats: ForwardStats,
}

/// What forwarding decisions did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Decisions sent to the tenant's owner node.
    pub forwarded: std::sync::atomic::AtomicU64,
    /// Of those, the ones it did not answer in time (answered `overloaded` here).
    pub failed: std::sync::atomic::AtomicU64,
}

/// What forwarding results did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ResultStats {
    /// Results this node accepted and forwarded to the others.
    pub forwarded: std::sync::atomic::AtomicU64,
    /// Forwards refused by a full NATS outbound buffer: the other nodes miss them.
    pub unsent: std::sync::atomic::AtomicU64,
    /// Results the other nodes forwarded here.
    pub received: std::sync::atomic::AtomicU64,
}

/// What the rate-limit shares did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ShareStats {
    /// Share asks sent to other nodes (one per destination shard and report).
    pub asks: std::sync::atomic::AtomicU64,
    /// Asks that got no answer in time (the share they would renew lives on until it
    /// runs out).
    pub unanswered: std::sync::atomic::AtomicU64,
    /// Shares that ran out before they were renewed: the bucket stopped.
    pub expired: std::sync::atomic::AtomicU64,
}

/// The membership as one report or answer of the node-level protocols (`shares`,
/// `allowances`) reads it: taken once under the members lock, not per policy.
pub(crate) struct View {
    pub me: String,
    pub live: Vec<String>,
    shards: std::collections::HashMap<String, u32>,
    pub failover_ms: u64,
}

impl View {
    pub fn of(cluster: &ClusterNode, now_ms: u64) -> View {
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

    pub fn owner_of(&self, tenant: &str) -> String {
        let live: Vec<&str> = self.live.iter().map(String::as_str).collect();
        members::owner_among(members::partition_of(tenant), &live)
            .unwrap_or(&self.me)
            .to_owned()
    }

    /// The tenant's owner shard on `node`, by the shard count it announced.
    pub fn shard_on(&self, node: &str, tenant: &str) -> Option<u16> {
        let shards = self.shards.get(node)?;
        let shards = (*shards).clamp(1, shards::SHARDS_MAX as u32) as usize;
        Some(shards::Partitioner::new(shards).shard_of(tenant).0)
    }
}

/// What budget allowance reports did, for `/metrics`.
#[derive(Debug, Default)]
pub struct AllowanceStats {
    /// Reports sent to other nodes (one per destination shard and report period).
    pub reports: std::sync::atomic::AtomicU64,
    /// Reports that got no answer in time (the caps they would renew run out).
    pub unanswered: std::sync::atomic::AtomicU64,
}

/// What a policy write through the bucket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    /// The policy did not exist before (a put only).
    pub created: bool,
}

/// Why a policy write through the bucket did not happen.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    #[error("this node has not yet read the policy bucket; retry in a moment")]
    NotSynced,
    #[error("no such policy")]
    NotFound,
    #[error("the policy is at revision {current}, not {expected}")]
    Conflict { expected: u64, current: u64 },
    #[error("the policy bucket cannot be written: {0}")]
    Bucket(KvError),
}

impl ClusterNode {
    pub fn new(
        config: &crate::config::ClusterConfig,
        identity: (&str, &str, u32),
        store: Arc<PolicyStore>,
        handle: TableHandle,
    ) -> Result<Self, KvError> {
        let (node_id, instance, shards) = identity;
        let failover = Duration::from_millis(config.failover_ms);
        let beat = Beat {
            instance: instance.to_owned(),
            shards,
        };
        let mut members = Members::new(node_id, failover);
        members.set_own(beat.clone());
        // Alone at the start: every partition is ours from now, settled a failover later.
        members.track_ownership(0);
        Ok(ClusterNode {
            bucket: Bucket::new(&config.policy_bucket)?,
            replicas: config.policy_replicas,
            mirror: Arc::new(PolicyMirror::new(store, handle)),
            members: Mutex::new(members),
            beat,
            epoch: Instant::now(),
            share_stats: ShareStats::default(),
            allowance_stats: AllowanceStats::default(),
            result_stats: ResultStats::default(),
            forward_stats: ForwardStats::default(),
        })
    }

    /// The members' clock now.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// This node's view of the cluster (locked briefly: heartbeats, the admin API and the
    /// metrics scrape share it).
    pub fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Beats every `beat_interval` and listens to the others' beats, until the client
    /// closes. Runs on shard 0.
    pub async fn run_membership(self: Arc<Self>, client: Client) {
        let node = Arc::clone(&self);
        let handler = Rc::new(move |_: &Client, msg: Msg<'_>| node.on_beat(msg.payload));
        let subject = format!("{HEARTBEAT_SUBJECT}.>");
        if let Err(e) = client.subscribe(&subject, None, handler) {
            log::error!("cluster: cannot subscribe to heartbeats: {e}");
            return;
        }
        let (me, interval) = {
            let members = self.members();
            (members.me().to_owned(), members.beat_interval())
        };
        let beat = serde_json::json!({
            "node_id": me,
            "instance": self.beat.instance,
            "shards": self.beat.shards,
        })
        .to_string();
        let own_subject = format!("{HEARTBEAT_SUBJECT}.{me}");
        while !client.is_closed() {
            if client.is_connected() {
                // A full outbound buffer drops this beat; the next one follows.
                let _ = client.publish(&own_subject, None, &[], beat.as_bytes());
            }
            let now = self.now_ms();
            let gone = {
                let mut members = self.members();
                let gone = members.expire(now);
                members.track_ownership(now);
                gone
            };
            for node in gone {
                log::warn!(
                    "cluster: node {node} left: no heartbeat for {} ms; its partitions move \
                     to the others",
                    interval.as_millis() * u128::from(members::HEARTBEATS_PER_FAILOVER)
                );
            }
            glommio::timer::sleep(interval).await;
        }
    }

    fn on_beat(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Heartbeat<'a> {
            #[serde(borrow)]
            node_id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            instance: std::borrow::Cow<'a, str>,
            shards: u32,
        }
        let Ok(beat) = serde_json::from_slice::<Heartbeat<'_>>(payload) else {
            return;
        };
        if !crate::policy::is_tenant_id(&beat.node_id) {
            return;
        }
        let now = self.now_ms();
        let joined = {
            let mut members = self.members();
            let heard = Beat {
                instance: beat.instance.into_owned(),
                shards: beat.shards,
            };
            let joined = members.heard(&beat.node_id, heard, now);
            if joined {
                // A node joining takes partitions: those it took stop being ours now.
                members.track_ownership(now);
            }
            joined
        };
        if joined {
            log::info!("cluster: node {} joined", beat.node_id);
        }
    }

    /// Writes a checked put or delete to the bucket with compare-and-set: against the
    /// revision the request named, else the one this node last saw. Returns the new
    /// revision; the caller applies it to this node's mirror (`applied_event`).
    pub async fn write(
        &self,
        client: &Client,
        write: &ClusterWrite,
    ) -> Result<Written, WriteError> {
        let seen = self
            .mirror
            .revision(&write.tenant, &write.policy_id)
            .map_err(|_| WriteError::NotSynced)?;
        let expected = write.expected.unwrap_or(seen.revision);
        if write.body.is_none() && write.expected.is_none() && !seen.live {
            return Err(WriteError::NotFound);
        }
        let key = policy_key(&write.tenant, &write.policy_id);
        let timeout = KV_REQUEST_TIMEOUT;
        let result = match &write.body {
            Some(body) => {
                let put = self.bucket.put(client, &key, body, Some(expected), timeout);
                put.await
            }
            None => {
                self.bucket
                    .delete(client, &key, Some(expected), timeout)
                    .await
            }
        };
        match result {
            Ok(revision) => Ok(Written {
                revision,
                created: write.body.is_some()
                    && (expected == 0 || (expected == seen.revision && !seen.live)),
            }),
            Err(KvError::Conflict { expected, current }) => {
                Err(WriteError::Conflict { expected, current })
            }
            Err(other) => Err(WriteError::Bucket(other)),
        }
    }

    /// `write` as the event the watch will deliver, so the writer's node applies it at
    /// once (and reads its own write) whichever of the two comes first.
    pub fn applied_event(write: &ClusterWrite, revision: u64) -> Event {
        let key = policy_key(&write.tenant, &write.policy_id);
        match &write.body {
            Some(body) => Event::Put {
                key,
                revision,
                value: body.clone(),
            },
            None => Event::Delete { key, revision },
        }
    }

    /// Creates the bucket when missing (retrying while JetStream does not answer), then
    /// applies the watch's events to the mirror until the client closes. Runs on shard 0.
    pub async fn run_mirror(self: Arc<Self>, client: Client, seed: u64) {
        let mut attempts = 0u32;
        loop {
            if client.is_closed() {
                return;
            }
            if !client.is_connected() {
                glommio::timer::sleep(CONNECTED_POLL).await;
                continue;
            }
            let ensured = self
                .bucket
                .ensure(&client, self.replicas, KV_REQUEST_TIMEOUT);
            match ensured.await {
                Ok(created) => {
                    if created {
                        log::info!(
                            "cluster: created the policy bucket {} ({} replica(s))",
                            self.bucket.name(),
                            self.replicas
                        );
                    }
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_power_of_two() {
                        log::warn!(
                            "cluster: the policy bucket {} is not reachable ({attempts} \
                             attempt(s)); policies are served from policies_dir meanwhile: {e}",
                            self.bucket.name()
                        );
                    }
                    glommio::timer::sleep(ENSURE_RETRY).await;
                }
            }
        }
        let watch = Watch::start(client.clone(), self.bucket.clone(), WATCH_HEARTBEAT, seed);
        while !client.is_closed() {
            let events = watch.next().await;
            let node = Arc::clone(&self);
            let synced = events.contains(&Event::Synced);
            let generation = glommio::executor()
                .spawn_blocking(move || node.mirror.apply(&events))
                .await;
            if synced {
                log::info!(
                    "cluster: policies in sync with bucket {} (revision {}), table generation \
                     {generation}",
                    self.bucket.name(),
                    self.mirror
                        .stats
                        .last_revision
                        .load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    }

    /// `/metrics` series of the policy mirror and the membership.
    pub fn metric_series(&self) -> Vec<ExtraMetric> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.mirror.stats;
        let (live, owned) = {
            let members = self.members();
            let now = self.now_ms();
            let me = members.me().to_owned();
            let owned = members.ownership(now);
            let mine = owned
                .iter()
                .find(|(id, _)| *id == me)
                .map_or(0, |(_, n)| *n);
            (owned.len(), mine)
        };
        vec![
            ExtraMetric::gauge(
                "shardline_cluster_members",
                "Nodes this node counts as live (itself included): heard within \
                 cluster.failover_ms.",
                live as f64,
            ),
            ExtraMetric::gauge(
                "shardline_cluster_partitions_owned",
                "Tenant partitions (of 1,024) this node owns over the live members.",
                f64::from(owned),
            ),
            ExtraMetric::counter(
                "shardline_cluster_share_asks_total",
                "Rate-limit share asks sent to other nodes (one per destination shard and \
                 200 ms report).",
                self.share_stats.asks.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_share_asks_unanswered_total",
                "Rate-limit share asks that got no answer in time.",
                self.share_stats.unanswered.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_shares_expired_total",
                "Rate-limit shares that ran out before they were renewed: the node's bucket \
                 for that policy stopped (rate_limited) until the next grant.",
                self.share_stats.expired.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_allowance_reports_total",
                "Budget allowance reports sent to tenants' owner nodes (one per destination \
                 shard and 200 ms report).",
                self.allowance_stats.reports.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_allowance_reports_unanswered_total",
                "Budget allowance reports that got no answer in time.",
                self.allowance_stats.unanswered.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_decisions_forwarded_total",
                "Decisions only the tenant's owner node can make exactly (a provider rpm, an \
                 idempotency key, a budget this node's allowance could not take) sent there \
                 from this node.",
                self.forward_stats.forwarded.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_decisions_forward_failed_total",
                "Forwarded decisions the owner node did not answer in time (answered \
                 overloaded).",
                self.forward_stats.failed.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_results_forwarded_total",
                "ExecResults this node accepted and forwarded to the other nodes.",
                self.result_stats.forwarded.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_results_unsent_total",
                "ExecResults this node could not forward (NATS outbound buffer full).",
                self.result_stats.unsent.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_results_received_total",
                "ExecResults the other nodes forwarded to this node.",
                self.result_stats.received.load(Relaxed) as f64,
            ),
            ExtraMetric::gauge(
                "shardline_cluster_policies_synced",
                "1 once this node has applied the policy bucket as it was when the node \
                 started watching it, else 0.",
                f64::from(u8::from(self.mirror.synced())),
            ),
            ExtraMetric::gauge(
                "shardline_cluster_policy_revision",
                "The highest policy bucket revision this node has seen.",
                stats.last_revision.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_policy_changes_applied_total",
                "Policy revisions from the bucket written to (or removed from) this node's \
                 policies_dir.",
                stats.applied.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_policy_changes_refused_total",
                "Policy revisions from the bucket not applied: an invalid document, a key \
                 naming no policy, a failed write (the log says which).",
                stats.refused.load(Relaxed) as f64,
            ),
            ExtraMetric::counter(
                "shardline_cluster_policies_pruned_total",
                "Local policy documents removed at the first sync because the bucket does \
                 not hold them.",
                stats.pruned.load(Relaxed) as f64,
            ),
        ]
    }
}
