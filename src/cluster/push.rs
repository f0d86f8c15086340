//! `shardline policy push DIR`: seeds a cluster's policy bucket from a directory.
//!
//! Every document is checked first, the whole directory at once, as a router would load
//! it: one invalid document and nothing is written, so a push never leaves the cluster
//! half-updated by a typo. Then each document is put without compare-and-set (a push
//! states what the bucket must hold, whatever it held), and with `prune` the keys the
//! directory does not hold are deleted, so the bucket ends equal to the directory.
//! The running nodes pick every change up through their watch.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};

use super::kv::{Bucket, Event, Watch};
use super::policies::{policy_key, policy_of_key};
use super::{KV_REQUEST_TIMEOUT, WATCH_HEARTBEAT};
use crate::admin::{PolicyStore, Scope};
use crate::config::Config;
use crate::policy::RoutingTable;
use crate::transport::nats::{Client, ClientOptions};

/// How long a push waits for its NATS connection.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long a prune waits to read the bucket's keys.
const KEYS_WAIT: Duration = Duration::from_secs(30);
/// How long, from the start, a push waits for JetStream to take the bucket.
const JETSTREAM_WAIT: Duration = Duration::from_secs(15);

/// One line of what a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub tenant: String,
    pub policy_id: String,
    /// The revision written; for a prune, the delete marker's.
    pub revision: u64,
    pub deleted: bool,
}

/// Checks every document of `dir`, then writes them to the bucket `config` names (created
/// when missing), over the NATS `config` names; with `prune`, deletes the others.
pub fn push(dir: &Path, config: &Config, prune: bool) -> Result<Vec<Pushed>> {
    if let Err(problems) = RoutingTable::load_dir(dir) {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!(
            "{} does not load, nothing was pushed:\n{}",
            dir.display(),
            lines.join("\n")
        );
    }
    let store = PolicyStore::open(dir).with_context(|| format!("{}", dir.display()))?;
    let mut documents = Vec::new();
    for (tenant, id) in store.list(&Scope::All)? {
        let bytes = store.get(&tenant, &id)?.unwrap_or_default();
        documents.push((tenant, id, bytes));
    }
    let options = ClientOptions::from_config(&config.nats)?
        .context("nats.url is empty: a push needs the cluster's NATS")?;
    let bucket = Bucket::new(&config.cluster.policy_bucket)?;
    let replicas = config.cluster.policy_replicas;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("policy-push")
        .make()
        .map_err(|e| anyhow::anyhow!("cannot start an io_uring executor: {e}"))?;
    executor.run(async move {
        let client = Client::start(options, Default::default(), std::process::id().into());
        let pushed = write_all(&client, &bucket, replicas, &documents, prune).await;
        client.close().await;
        pushed
    })
}

async fn write_all(
    client: &Client,
    bucket: &Bucket,
    replicas: u32,
    documents: &[(String, String, Vec<u8>)],
    prune: bool,
) -> Result<Vec<Pushed>> {
    let started = Instant::now();
    while !client.is_connected() {
        if started.elapsed() > CONNECT_WAIT {
            bail!("no NATS connection within {} s", CONNECT_WAIT.as_secs());
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // A push right after the NATS cluster started (scripts/cluster_start.sh does that) may
    // find JetStream still forming: retried, within a bound.
    loop {
        match bucket.ensure(client, replicas, KV_REQUEST_TIMEOUT).await {
            Ok(_) => break,
            Err(e) if e.transient() && started.elapsed() < JETSTREAM_WAIT => {
                log::info!("bucket {}: {e}; retrying", bucket.name());
                glommio::timer::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("bucket {}", bucket.name())),
        }
    }
    let mut pushed = Vec::with_capacity(documents.len());
    for (tenant, id, bytes) in documents {
        let key = policy_key(tenant, id);
        let revision = bucket
            .put(client, &key, bytes, None, KV_REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("put {tenant}/{id}"))?;
        pushed.push(Pushed {
            tenant: tenant.clone(),
            policy_id: id.clone(),
            revision,
            deleted: false,
        });
    }
    if prune {
        let keep: BTreeSet<String> = documents.iter().map(|(t, p, _)| policy_key(t, p)).collect();
        for key in live_keys(client, bucket).await? {
            if keep.contains(&key) {
                continue;
            }
            let revision = bucket
                .delete(client, &key, None, KV_REQUEST_TIMEOUT)
                .await
                .with_context(|| format!("delete {key}"))?;
            let (tenant, policy_id) = policy_of_key(&key).unwrap_or((key.clone(), String::new()));
            pushed.push(Pushed {
                tenant,
                policy_id,
                revision,
                deleted: true,
            });
        }
    }
    Ok(pushed)
}

/// The keys whose last revision is a value, read with a watch up to its first sync.
async fn live_keys(client: &Client, bucket: &Bucket) -> Result<BTreeSet<String>> {
    let watch = Watch::start(client.clone(), bucket.clone(), WATCH_HEARTBEAT, 7);
    let read = async {
        let mut live = BTreeSet::new();
        loop {
            for event in watch.next().await {
                match event {
                    Event::Put { key, .. } => {
                        live.insert(key);
                    }
                    Event::Delete { key, .. } => {
                        live.remove(&key);
                    }
                    Event::Synced => return Some(live),
                }
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(KEYS_WAIT).await;
        None
    };
    let live = futures_lite::future::or(read, timeout).await;
    watch.close();
    live.with_context(|| {
        format!(
            "the bucket's keys were not read within {} s",
            KEYS_WAIT.as_secs()
        )
    })
}
