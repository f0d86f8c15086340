//! Distribution of the routing table to the shards (SPEC §1: immutable, swapped
//! atomically), and the operations that change it: reload, put and delete.
//!
//! `TableHandle` holds the published `Versioned { generation, table }` in an `ArcSwap`,
//! plus a copy of the generation in an `AtomicU64`. Why both: a shard checks for a new
//! table on every loop iteration, and one atomic load (`generation()`) is the cheapest
//! check there is; when it differs, the shard loads the `Versioned` pair, whose generation
//! and table always belong together. The atomic is stored after the swap (release), so a
//! shard that sees generation `g` loads a table of generation `g` or later.
//!
//! A shard owns a `ShardTable`: its current `Arc<Versioned>` and the handle. `refresh`
//! adopts a newer table with `ShardState::adopt`, which carries breakers, buckets and
//! sessions over, between requests; the request path itself never waits for a reload.
//!
//! `reload`, `put_policy` and `delete_policy` run under the store's write lock, so they
//! never interleave. A put or delete changes the directory, rebuilds the table from it
//! document by document (`RoutingTable::load_dir_per_document_reusing`, which parses only
//! the files whose stamps changed since the last scan; `reload_all` — SIGHUP,
//! `POST /admin/v1/reload` — parses everything) and publishes: a broken document of
//! another tenant is reported, keeps its last good version, and does not stop the write.
//! The write is rolled back, and the old table stays (SPEC §8), only if its own document
//! did not load or the table as a whole could not be built.
//!
//! The handle also holds the documents the last load left out (`invalid()`), for
//! `/readyz`, `shardline_policy_invalid` and the admin reload answer. A rebuild that
//! yields the very same policies publishes nothing:
//! the generation stays, and shards have nothing to adopt. That makes a reload idempotent,
//! which is what lets the watcher reload after the admin API's own writes for free.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::store::{PolicyStore, StoreError, StoreWriter};
use crate::decide::ShardState;
use crate::policy::{InvalidPolicy, PolicyError, RoutingTable};

/// A published table and its generation (1 for the first, +1 per publish).
#[derive(Debug)]
pub struct Versioned {
    pub generation: u64,
    pub table: Arc<RoutingTable>,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<Versioned>,
    generation: AtomicU64,
    /// Orders publishers, so that generations are handed out in swap order.
    publish: Mutex<()>,
    /// The documents the last load of the directory left out.
    invalid: ArcSwap<Vec<InvalidPolicy>>,
}

/// The published routing table, shared by the shards and the admin side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TableHandle {
    inner: Arc<Shared>,
}

impl TableHandle {
    /// Publishes `table` as generation 1.
    pub fn new(table: RoutingTable) -> Self {
        let first = Versioned {
            generation: 1,
            table: Arc::new(table),
        };
        TableHandle {
            inner: Arc::new(Shared {
                current: ArcSwap::from_pointee(first),
                generation: AtomicU64::new(1),
                publish: Mutex::new(()),
                invalid: ArcSwap::from_pointee(Vec::new()),
            }),
        }
    }

    /// Documents the last load left out (empty when every document loaded).
    pub fn invalid(&self) -> Arc<Vec<InvalidPolicy>> {
        self.inner.invalid.load_full()
    }

    /// Records what the last load of the directory left out.
    pub fn set_invalid(&self, invalid: Vec<InvalidPolicy>) {
        self.inner.invalid.store(Arc::new(invalid));
    }

    /// The generation last published: one atomic load.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The published generation and table, consistent with each other.
    pub fn current(&self) -> (u64, Arc<RoutingTable>) {
        let v = self.inner.current.load();
        (v.generation, Arc::clone(&v.table))
    }

    /// The published pair itself.
    pub fn versioned(&self) -> Arc<Versioned> {
        self.inner.current.load_full()
    }

    /// Publishes `table` unconditionally; returns its generation.
    pub fn publish(&self, table: RoutingTable) -> u64 {
        self.swap(table, true).0
    }

    /// Publishes `table` unless it holds the same policies, in the same order, as the
    /// published one. Returns the generation now published and whether it is new.
    pub fn publish_if_changed(&self, table: RoutingTable) -> (u64, bool) {
        self.swap(table, false)
    }

    fn swap(&self, table: RoutingTable, always: bool) -> (u64, bool) {
        let _order = self.inner.publish.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.inner.current.load();
        if !always && old.table.policies() == table.policies() {
            return (old.generation, false);
        }
        let generation = old.generation + 1;
        let table = Arc::new(table);
        self.inner
            .current
            .store(Arc::new(Versioned { generation, table }));
        self.inner.generation.store(generation, Ordering::Release);
        (generation, true)
    }
}

/// A shard's view of the published table; see the module doc.
#[derive(Debug)]
pub struct ShardTable {
    handle: TableHandle,
    current: Arc<Versioned>,
}

impl ShardTable {
    /// Starts at the table published now; build the shard's `ShardState` from `table()`.
    pub fn new(handle: TableHandle) -> Self {
        let current = handle.versioned();
        ShardTable { handle, current }
    }

    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.current.table
    }

    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// Adopts a newer published table into `state` (which must belong to `table()`);
    /// returns whether it did. One atomic load when nothing changed.
    pub fn refresh(&mut self, state: &mut ShardState, now_ns: u64) -> bool {
        if self.handle.generation() == self.current.generation {
            return false;
        }
        let next = self.handle.versioned();
        if next.generation == self.current.generation {
            return false;
        }
        state.adopt(&self.current.table, &next.table, now_ns);
        self.current = next;
        true
    }
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation published now (unchanged when `changed` is false).
    pub generation: u64,
    /// Policies in the table.
    pub policies: usize,
    /// The directory held something other than the published table.
    pub changed: bool,
    /// Documents left out (each keeps its previous version, if it had one), sources
    /// relative to the directory.
    pub invalid: Vec<InvalidPolicy>,
    /// `invalid` differs from what the previous load left out.
    pub invalid_changed: bool,
}

/// Rebuilds the table from the store's directory, document by document, and publishes it.
/// `Err` (the published table stays) only when no table could be built at all; sources
/// are relative to the directory. Only files whose stamp changed since the last scan are
/// parsed again.
pub fn reload(handle: &TableHandle, store: &PolicyStore) -> Result<ReloadReport, Vec<PolicyError>> {
    let mut writer = store.writer();
    reload_locked(handle, &mut writer)
}

/// `reload`, parsing every file again: what an operator's explicit reload (SIGHUP,
/// `POST /admin/v1/reload`) asks for, whatever the files' stamps say.
pub fn reload_all(
    handle: &TableHandle,
    store: &PolicyStore,
) -> Result<ReloadReport, Vec<PolicyError>> {
    let mut writer = store.writer();
    writer.parsed_files().clear();
    reload_locked(handle, &mut writer)
}

/// Why the directory is scanned rather than the published table patched with the one
/// changed document: the directory is what a restart loads, so what is published is what
/// a restart would serve (each broken document keeping its last good version). The scan
/// lists and stats every file but parses only those that changed
/// (`load_dir_per_document_reusing`): on a write, the written document.
/// `reload` under a lock the caller holds: for a caller that changed the directory with
/// `writer` itself (a cluster's mirror of its policy bucket).
pub fn reload_with(
    handle: &TableHandle,
    writer: &mut StoreWriter<'_>,
) -> Result<ReloadReport, Vec<PolicyError>> {
    reload_locked(handle, writer)
}

fn reload_locked(
    handle: &TableHandle,
    writer: &mut StoreWriter<'_>,
) -> Result<ReloadReport, Vec<PolicyError>> {
    let dir = writer.dir().to_owned();
    let (_, previous) = handle.current();
    let load = RoutingTable::load_dir_per_document_reusing(&dir, &previous, writer.parsed_files())
        .map_err(|p| relative_sources(p, &dir))?;
    let policies = load.table.len();
    let (generation, changed) = handle.publish_if_changed(load.table);
    let invalid: Vec<InvalidPolicy> = load
        .invalid
        .into_iter()
        .map(|mut bad| {
            bad.problems = relative_sources(bad.problems, &dir);
            bad
        })
        .collect();
    let invalid_changed = *handle.invalid() != invalid;
    handle.set_invalid(invalid.clone());
    Ok(ReloadReport {
        generation,
        policies,
        changed,
        invalid,
        invalid_changed,
    })
}

/// The problems of `tenant/id` if that document is among those left out.
fn own_problems(report: &ReloadReport, tenant: &str, id: &str) -> Option<Vec<PolicyError>> {
    let own = |b: &&InvalidPolicy| b.tenant == tenant && b.policy == id;
    report.invalid.iter().find(own).map(|b| b.problems.clone())
}

/// `source` of each problem as `tenant/file.json` rather than a server path.
fn relative_sources(mut problems: Vec<PolicyError>, dir: &Path) -> Vec<PolicyError> {
    let prefix = dir.display().to_string();
    for p in &mut problems {
        if let Some(rest) = p.source.strip_prefix(&prefix) {
            p.source = rest.trim_start_matches('/').to_owned();
        }
    }
    problems
}

/// A put or delete that reached the published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// A put created a policy that did not exist.
    pub created: bool,
    pub report: ReloadReport,
}

/// Why a put or delete did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The document or the ids were refused, or the filesystem failed (see `StoreError`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The changed document, or the table as a whole, would not load with the change; it
    /// was undone on disk and the published table did not change.
    #[error("the policy directory does not load with this change ({} problem(s))", .0.len())]
    Rejected(Vec<PolicyError>),
}

/// Validates, persists and publishes a policy document; see the module doc.
pub fn put_policy(
    handle: &TableHandle,
    store: &PolicyStore,
    tenant: &str,
    id: &str,
    bytes: &[u8],
) -> Result<Published, PublishError> {
    let mut writer = store.writer();
    let change = writer.put(tenant, id, bytes)?;
    let created = change.created();
    let reloaded = reload_locked(handle, &mut writer).and_then(|report| {
        // Validated by the store already; only a change under our feet gets here.
        match own_problems(&report, tenant, id) {
            Some(problems) => Err(problems),
            None => Ok(report),
        }
    });
    match reloaded {
        Ok(report) => {
            writer.commit(change);
            Ok(Published { created, report })
        }
        Err(problems) => {
            writer.rollback(change).inspect_err(diverged)?;
            Err(PublishError::Rejected(problems))
        }
    }
}

/// Removes and unpublishes a policy; `None` if there was no such document.
pub fn delete_policy(
    handle: &TableHandle,
    store: &PolicyStore,
    tenant: &str,
    id: &str,
) -> Result<Option<Published>, PublishError> {
    let mut writer = store.writer();
    let Some(change) = writer.delete(tenant, id)? else {
        return Ok(None);
    };
    match reload_locked(handle, &mut writer) {
        Ok(report) => {
            writer.commit(change);
            Ok(Some(Published {
                created: false,
                report,
            }))
        }
        Err(problems) => {
            writer.rollback(change).inspect_err(diverged)?;
            Err(PublishError::Rejected(problems))
        }
    }
}

/// Problems of one invalid document written to the log; the rest are counted.
const PROBLEMS_LOGGED_PER_DOCUMENT_MAX: usize = 5;
/// Invalid documents written to the log per load; the rest are counted.
const INVALID_LOGGED_MAX: usize = 20;

/// Logs each document a load (after `cause`) left out, bounded.
pub fn log_invalid(cause: &str, invalid: &[InvalidPolicy]) {
    for bad in invalid.iter().take(INVALID_LOGGED_MAX) {
        let serving = if bad.kept {
            "its last good version keeps serving"
        } else {
            "it is not served"
        };
        log::warn!(
            "policy {}/{} invalid after {cause}; {serving}",
            bad.tenant,
            bad.policy
        );
        for problem in bad.problems.iter().take(PROBLEMS_LOGGED_PER_DOCUMENT_MAX) {
            log::warn!("policy problem: {problem}");
        }
    }
    if invalid.len() > INVALID_LOGGED_MAX {
        let rest = invalid.len() - INVALID_LOGGED_MAX;
        log::warn!("{rest} more invalid policy document(s) after {cause}");
    }
}

fn diverged(e: &StoreError) {
    log::error!("policy change could not be undone; the directory differs from the table: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishing the same policies again is not a new generation; other policies are.
    #[test]
    fn identical_tables_keep_their_generation() {
        let handle = TableHandle::new(RoutingTable::default());
        assert_eq!(handle.generation(), 1);
        assert_eq!(
            handle.publish_if_changed(RoutingTable::default()),
            (1, false)
        );
        assert_eq!(handle.publish(RoutingTable::default()), 2);
        assert_eq!(handle.current().0, 2);
        assert_eq!(handle.versioned().generation, 2);
    }

    #[test]
    fn sources_become_relative() {
        let problem = PolicyError {
            source: "/etc/policies/acme/a.json".into(),
            path: "$".into(),
            message: "m".into(),
        };
        let out = relative_sources(vec![problem], Path::new("/etc/policies"));
        assert_eq!(out[0].source, "acme/a.json");
    }
}
