//! A router as one node of a cluster on NATS (docs/CLUSTER.md).
//!
//! What exists: one source of policy truth. The policies live in a JetStream key-value
//! bucket (`kv`); every node mirrors it into its own policy directory (`policies`) and
//! serves from there as one node does; an admin put or delete on any node goes to the
//! bucket first, with compare-and-set on the key's revision, so two writers cannot both
//! win.
//!
//! Where it runs: the watch and the bucket's creation on shard 0's NATS client (one per
//! process, as the service API), the mirror's file writes on glommio's blocking pool, and
//! an admin write's bucket request on the shard that took the request.

pub mod kv;
pub mod policies;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::admin::{ClusterWrite, PolicyStore, TableHandle};
use crate::metrics::ExtraMetric;
use crate::transport::nats::Client;
use kv::{Bucket, Event, KvError, Watch};
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

/// A node's cluster side: its policy bucket and the mirror of it.
#[derive(Debug)]
pub struct ClusterNode {
    pub bucket: Bucket,
    pub replicas: u32,
    pub mirror: Arc<PolicyMirror>,
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
        bucket: &str,
        replicas: u32,
        store: Arc<PolicyStore>,
        handle: TableHandle,
    ) -> Result<Self, KvError> {
        Ok(ClusterNode {
            bucket: Bucket::new(bucket)?,
            replicas,
            mirror: Arc::new(PolicyMirror::new(store, handle)),
        })
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

    /// `/metrics` series of the policy mirror.
    pub fn metric_series(&self) -> Vec<ExtraMetric> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.mirror.stats;
        vec![
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
