//! One source of policy truth for a cluster: the bucket, mirrored into each node's policy
//! directory.
//!
//! Why a mirror rather than a table built from the bucket: the directory is what a node
//! already loads, reloads, validates document by document and serves from at a restart,
//! so everything one node promises about its policies (atomic fsynced writes, a broken
//! document keeping its last good version, `/readyz` listing it) holds unchanged in a
//! cluster, and a node that restarts while NATS is away serves the policies it last saw.
//! The bucket is the authority: a write goes to the bucket first, with compare-and-set on
//! the revision, and reaches every directory (the writer's own at once, the others through
//! their watch), in revision order per key.
//!
//! Keys: `<tenant>.<policy>`. Both ids may hold a dot, which is the KV's token separator,
//! so a dot inside an id is written `=2E` (`=` is a KV key character that no id holds):
//! `acme.default`, `eu=2Eacme.gold=2Ev2`. Keys that name no valid ids are ignored (and
//! counted), so a stray `nats kv put` cannot break a node.
//!
//! `apply` runs on a thread that may block (it fsyncs): glommio's blocking pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::kv::Event;
use crate::admin::{log_invalid, reload_with, PolicyStore, Scope, TableHandle};
use crate::policy::{is_policy_id, is_tenant_id};

/// The bucket key of a policy.
pub fn policy_key(tenant: &str, id: &str) -> String {
    format!("{}.{}", escape(tenant), escape(id))
}

/// The (tenant, policy id) a bucket key names, when it names valid ids.
pub fn policy_of_key(key: &str) -> Option<(String, String)> {
    let (tenant, id) = key.split_once('.')?;
    if id.contains('.') {
        // Dots inside ids are escaped: a third token makes the split ambiguous.
        return None;
    }
    let (tenant, id) = (unescape(tenant), unescape(id));
    (is_tenant_id(&tenant) && is_policy_id(&id)).then_some((tenant, id))
}

fn escape(id: &str) -> String {
    id.replace('.', "=2E")
}

fn unescape(token: &str) -> String {
    token.replace("=2E", ".")
}

/// A key's last revision as this node has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revision {
    pub revision: u64,
    /// The last revision is a value, not a delete marker.
    pub live: bool,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Revisions written to (or removed from) the directory.
    pub applied: AtomicU64,
    /// Revisions not applied: an invalid document, a key naming no policy, a failed write.
    pub refused: AtomicU64,
    /// Local documents removed at the first sync because the bucket does not hold them.
    pub pruned: AtomicU64,
    /// The highest revision seen.
    pub last_revision: AtomicU64,
}

/// Answer to "which revision should a write expect?" before the first sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSynced;

/// The node's mirror of the bucket; see the module doc.
#[derive(Debug)]
pub struct PolicyMirror {
    store: Arc<PolicyStore>,
    handle: TableHandle,
    revisions: Mutex<HashMap<(String, String), Revision>>,
    synced: AtomicBool,
    pub stats: MirrorStats,
}

impl PolicyMirror {
    pub fn new(store: Arc<PolicyStore>, handle: TableHandle) -> Self {
        PolicyMirror {
            store,
            handle,
            revisions: Mutex::default(),
            synced: AtomicBool::new(false),
            stats: MirrorStats::default(),
        }
    }

    /// Whether the bucket as it was when this node started watching it is applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The key's last revision seen here (revision 0, not live, for a key never written),
    /// once synced: before that this node cannot know what a write should expect.
    pub fn revision(&self, tenant: &str, id: &str) -> Result<Revision, NotSynced> {
        if !self.synced() {
            return Err(NotSynced);
        }
        let revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), id.to_owned());
        Ok(revisions.get(&key).copied().unwrap_or_default())
    }

    /// Applies what the bucket says, in order, to the directory, then publishes the table
    /// once. A revision older than one already applied for its key is skipped, so the
    /// writer's own apply and its watch can deliver the same revision in either order.
    /// Returns the table generation published now.
    pub fn apply(&self, events: &[Event]) -> u64 {
        let mut synced = false;
        let generation = self.apply_events(events, &mut synced);
        // Ready (`/readyz`) only once the table the first sync made is published: a
        // request let in before would still be decided with a pruned policy.
        if synced {
            self.synced.store(true, Ordering::Release);
        }
        generation
    }

    fn apply_events(&self, events: &[Event], synced: &mut bool) -> u64 {
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        let mut writer = self.store.writer();
        let mut changed = false;
        for event in events {
            let (key, revision, value) = match event {
                Event::Put {
                    key,
                    revision,
                    value,
                } => (key, *revision, Some(value.as_slice())),
                Event::Delete { key, revision } => (key, *revision, None),
                Event::Synced => {
                    if !*synced {
                        changed |= self.prune(&revisions, &mut writer);
                    }
                    *synced = true;
                    continue;
                }
            };
            self.stats
                .last_revision
                .fetch_max(revision, Ordering::Relaxed);
            let Some((tenant, id)) = policy_of_key(key) else {
                log::warn!("cluster: bucket key {key:?} names no tenant and policy; ignored");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let seen = revisions.entry((tenant.clone(), id.clone())).or_default();
            if revision <= seen.revision {
                continue;
            }
            *seen = Revision {
                revision,
                live: value.is_some(),
            };
            // A restart reads every key again: a document already on disk as the bucket
            // holds it is not rewritten (no fsync per policy per start).
            if value.is_some() && self.store.get(&tenant, &id).ok().flatten().as_deref() == value {
                continue;
            }
            let written = match value {
                Some(bytes) => writer.put(&tenant, &id, bytes).map(Some),
                None => writer.delete(&tenant, &id),
            };
            match written {
                Ok(Some(change)) => {
                    writer.commit(change);
                    changed = true;
                    self.stats.applied.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!(
                        "cluster: policy {tenant}/{id} at revision {revision} is not applied \
                         (what this node served before stays): {e}"
                    );
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !changed {
            return self.handle.generation();
        }
        match reload_with(&self.handle, &mut writer) {
            Ok(report) => {
                log_invalid("a change from the policy bucket", &report.invalid);
                report.generation
            }
            Err(problems) => {
                log::error!(
                    "cluster: the policies from the bucket do not make a table ({} problem(s), \
                     first: {}); the previous table keeps serving",
                    problems.len(),
                    problems
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
                self.handle.generation()
            }
        }
    }

    /// At the first sync: removes local documents the bucket does not hold, so that every
    /// node serves the same set. An empty bucket removes nothing (it has not been seeded;
    /// the node keeps serving its directory until it is).
    fn prune(
        &self,
        revisions: &HashMap<(String, String), Revision>,
        writer: &mut crate::admin::StoreWriter<'_>,
    ) -> bool {
        if self.synced() {
            return false;
        }
        if revisions.is_empty() {
            log::warn!(
                "cluster: the policy bucket is empty; this node serves its own policies_dir \
                 until policies are written to the bucket (shardline policy push)"
            );
            return false;
        }
        let local = match self.store.list(&Scope::All) {
            Ok(local) => local,
            Err(e) => {
                log::error!("cluster: cannot list the policy directory to mirror it: {e}");
                return false;
            }
        };
        let mut changed = false;
        for (tenant, id) in local {
            let key = (tenant, id);
            if revisions.get(&key).is_some_and(|r| r.live) {
                continue;
            }
            match writer.delete(&key.0, &key.1) {
                Ok(Some(change)) => {
                    writer.commit(change);
                    changed = true;
                    self.stats.pruned.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "cluster: removed policy {}/{}: the bucket does not hold it",
                        key.0,
                        key.1
                    );
                }
                Ok(None) => {}
                Err(e) => log::warn!("cluster: cannot remove policy {}/{}: {e}", key.0, key.1),
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RoutingTable;

    #[test]
    fn keys_round_trip_ids_with_dots() {
        assert_eq!(policy_key("acme", "default"), "acme.default");
        assert_eq!(policy_key("eu.acme", "gold.v2"), "eu=2Eacme.gold=2Ev2");
        for (t, p) in [("acme", "default"), ("eu.acme", "gold.v2"), ("a-b_c", "x")] {
            let key = policy_key(t, p);
            assert!(super::super::kv::is_key(&key), "{key}");
            assert_eq!(policy_of_key(&key), Some((t.into(), p.into())));
        }
        assert_eq!(policy_of_key("acme"), None);
        assert_eq!(policy_of_key("acme.a.b"), None);
        assert_eq!(policy_of_key("acme.a=3Fb"), None);
    }

    fn doc(weight: u32) -> Vec<u8> {
        format!(r#"{{"version":"1.0","providers":[{{"name":"a","weight":{weight}}}]}}"#)
            .into_bytes()
    }

    fn mirror(name: &str) -> (PolicyMirror, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mirror-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("local")).unwrap();
        std::fs::write(dir.join("local/p.json"), doc(1)).unwrap();
        let table = RoutingTable::load_dir(&dir).unwrap();
        let store = Arc::new(PolicyStore::open(&dir).unwrap());
        (PolicyMirror::new(store, TableHandle::new(table)), dir)
    }

    fn put(key: &str, revision: u64, weight: u32) -> Event {
        Event::Put {
            key: key.into(),
            revision,
            value: doc(weight),
        }
    }

    /// Revisions apply in order per key, older ones are skipped, deletes remove, the first
    /// sync prunes what the bucket does not hold, and invalid values change nothing.
    #[test]
    fn applies_revisions_in_order_and_prunes_at_the_first_sync() {
        let (m, dir) = mirror("order");
        assert_eq!(m.revision("acme", "p"), Err(NotSynced));
        m.apply(&[put("acme.p", 3, 7), put("acme.p", 2, 9), Event::Synced]);
        assert!(m.synced());
        let written = std::fs::read(dir.join("acme/p.json")).unwrap();
        assert_eq!(written, doc(7));
        assert!(!dir.join("local/p.json").exists(), "pruned");
        assert_eq!(m.stats.pruned.load(Ordering::Relaxed), 1);
        let rev = m.revision("acme", "p").unwrap();
        assert_eq!((rev.revision, rev.live), (3, true));
        assert_eq!(m.revision("acme", "q").unwrap(), Revision::default());

        let bad = Event::Put {
            key: "acme.p".into(),
            revision: 4,
            value: b"{".to_vec(),
        };
        m.apply(&[bad, put("nope", 5, 1)]);
        assert_eq!(std::fs::read(dir.join("acme/p.json")).unwrap(), doc(7));
        assert_eq!(m.stats.refused.load(Ordering::Relaxed), 2);

        let generation = m.apply(&[Event::Delete {
            key: "acme.p".into(),
            revision: 6,
        }]);
        assert!(!dir.join("acme/p.json").exists());
        assert!(m.handle.current().1.is_empty());
        assert_eq!(generation, m.handle.generation());
        assert!(!m.revision("acme", "p").unwrap().live);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A bucket that was never seeded leaves the node its own directory.
    #[test]
    fn an_empty_bucket_prunes_nothing() {
        let (m, dir) = mirror("empty");
        m.apply(&[Event::Synced]);
        assert!(m.synced());
        assert!(dir.join("local/p.json").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
