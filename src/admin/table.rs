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
//! never interleave. Each rescans the directory but parses only the files whose stamps
//! changed since the last scan (`RoutingTable::load_dir_reusing`); `reload_all` (SIGHUP,
//! `POST /admin/v1/reload`) parses everything. A put or delete changes the directory, rebuilds the table from it and
//! publishes; if the directory no longer loads, the file change is rolled back and the old
//! table stays (SPEC §8). A rebuild that yields the very same policies publishes nothing:
//! the generation stays, and shards have nothing to adopt. That makes a reload idempotent,
//! which is what lets the watcher reload after the admin API's own writes for free.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::store::{PolicyStore, StoreError, StoreWriter};
use crate::decide::ShardState;
use crate::policy::{PolicyError, RoutingTable};

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
            }),
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation published now (unchanged when `changed` is false).
    pub generation: u64,
    /// Policies in the table.
    pub policies: usize,
    /// The directory held something other than the published table.
    pub changed: bool,
}

/// Rebuilds the table from the store's directory and publishes it; on any problem the
/// published table stays and every problem is returned, sources relative to the directory.
/// Only files whose stamp changed since the last scan are parsed again.
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
/// changed document: the directory is what a restart loads, so a change is published only
/// if the directory, as it is now, loads. The scan lists and stats every file but parses
/// only those that changed (`load_dir_reusing`): on a write, the written document.
fn reload_locked(
    handle: &TableHandle,
    writer: &mut StoreWriter<'_>,
) -> Result<ReloadReport, Vec<PolicyError>> {
    let dir = writer.dir().to_owned();
    let table = RoutingTable::load_dir_reusing(&dir, writer.parsed_files())
        .map_err(|p| relative_sources(p, &dir))?;
    let policies = table.len();
    let (generation, changed) = handle.publish_if_changed(table);
    Ok(ReloadReport {
        generation,
        policies,
        changed,
    })
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The directory would not load with the change; it was undone on disk and the
    /// published table did not change. Problems may concern other files.
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
    match reload_locked(handle, &mut writer) {
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
