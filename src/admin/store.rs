//! The policy store: the config directory `DIR/<tenant>/<policy>.json` that
//! `RoutingTable::load_dir` reads, written by the admin API (SPEC §8).
//!
//! A write never leaves a half-written policy behind, even on a crash: the document goes to
//! a temp file in the same directory (`.<id>.json.tmp-<pid>-<n>`), is fsynced, renamed over
//! the target, and the directory is fsynced so the rename itself is durable. A new tenant
//! directory is fsynced into its parent the same way. Temp and backup files start with a
//! dot, so the table loader and the watcher ignore them.
//!
//! If the directory fsync after the rename fails, the rename may not survive a crash while
//! the served table would already show it: the write is undone at once (the previous
//! document renamed back, or the new one removed) and answered with an error, so the
//! store, the table and the disk after a crash all hold the old document. A full disk
//! fails the temp-file write, before anything is renamed; the error says so
//! (`StoreError::public_message`).
//!
//! A write can be undone: `StoreWriter::put` and `delete` return a `Change` holding a hard
//! link to the previous document (`.<id>.json.bak-<pid>-<n>`), which `rollback` renames
//! back over the target and `commit` unlinks. Why links and not a copy in memory: the
//! previous file is restored byte for byte whatever its size, with one rename, and the
//! target exists at every instant. A crash between a write and its commit leaves at most a
//! backup dot-file behind, which nothing reads.
//!
//! Every write holds the store's mutex (`writer()`), so a put, a delete and a reload never
//! interleave. Reads (`get`, `list`) take no lock: a rename is atomic, so a reader sees the
//! old or the new document. This is the admin path only; shards never touch the store.
//!
//! Ids are checked before any path is built: `is_tenant_id` / `is_policy_id` and no leading
//! dot, so no id can be `.`, `..`, a hidden file or contain a `/`: no path traversal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::auth::{shown, Scope};
use crate::policy::{
    is_policy_id, is_tenant_id, parse_policy, ParsedFiles, PolicyError, DIR_ENTRIES_MAX,
    POLICY_FILE_BYTES_MAX,
};

/// Names tried for one temp or backup file before giving up (a stale file from a crashed
/// process with the same pid takes a name).
pub const TEMP_NAMES_MAX: u64 = 16;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The tenant id breaks `^[A-Za-z0-9_.-]{1,64}$` or starts with a dot.
    #[error("tenant id {0:?} must match ^[A-Za-z0-9_.-]{{1,64}}$ and not start with '.'")]
    TenantId(Box<str>),
    /// The policy id breaks `^[A-Za-z0-9_.-]{1,128}$` or starts with a dot.
    #[error("policy id {0:?} must match ^[A-Za-z0-9_.-]{{1,128}}$ and not start with '.'")]
    PolicyId(Box<str>),
    /// The document (or a stored file) is over `POLICY_FILE_BYTES_MAX`.
    #[error("the policy document is {bytes} bytes; at most {POLICY_FILE_BYTES_MAX} allowed")]
    TooLarge { bytes: u64 },
    /// The document does not parse; every problem, nothing written.
    #[error("the policy document is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<PolicyError>),
    /// The filesystem refused; `path` is where.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What `PolicyStore::put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// No document existed for (tenant, id) before.
    pub created: bool,
}

/// See the module doc.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    /// The write lock; it also holds the policies parsed by the last scans, so that a
    /// write reparses only the documents that changed.
    writes: Mutex<ParsedFiles>,
    names: AtomicU64,
}

impl PolicyStore {
    /// A store over an existing directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let meta = fs::metadata(&dir).map_err(io_err("open", &dir))?;
        if !meta.is_dir() {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a directory");
            return Err(io_err("open", &dir)(source));
        }
        Ok(PolicyStore {
            dir,
            writes: Mutex::new(ParsedFiles::default()),
            names: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Holds the write lock until dropped. A poisoned lock is taken over: it orders
    /// filesystem operations, each of which is atomic, and guards only a cache of parsed
    /// files, which checks every file's stamp before reusing it.
    pub fn writer(&self) -> StoreWriter<'_> {
        let guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        StoreWriter {
            store: self,
            parsed: guard,
        }
    }

    /// Policy documents parsed by reloads and writes so far (reused ones not counted).
    pub fn documents_parsed(&self) -> u64 {
        self.writer().parsed.parsed()
    }

    /// The stored document of (tenant, id), byte for byte; `None` if there is none.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.policy_path(tenant, id)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let limit = POLICY_FILE_BYTES_MAX as u64 + 1;
        let mut bytes = Vec::new();
        let read = Read::by_ref(&mut file).take(limit).read_to_end(&mut bytes);
        read.map_err(io_err("read", &path))?;
        if bytes.len() > POLICY_FILE_BYTES_MAX {
            let bytes = file.metadata().map_or(limit, |m| m.len());
            return Err(StoreError::TooLarge { bytes });
        }
        Ok(Some(bytes))
    }

    /// Validates and writes a document; see `StoreWriter::put`.
    pub fn put(&self, tenant: &str, id: &str, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        let mut writer = self.writer();
        let change = writer.put(tenant, id, bytes)?;
        let created = change.created();
        writer.commit(change);
        Ok(PutOutcome { created })
    }

    /// Removes a document; `false` if there was none.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut writer = self.writer();
        match writer.delete(tenant, id)? {
            Some(change) => {
                writer.commit(change);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every stored (tenant, policy id) the scope covers, sorted. Entries whose names the
    /// loader would not read are skipped; at most `DIR_ENTRIES_MAX` per directory are read.
    pub fn list(&self, scope: &Scope) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for tenant in read_names(&self.dir)? {
            if !is_store_id(&tenant, is_tenant_id) || !scope.allows(&tenant) {
                continue;
            }
            let tenant_dir = self.dir.join(&tenant);
            if !tenant_dir.is_dir() {
                continue;
            }
            for name in read_names(&tenant_dir)? {
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                if is_store_id(id, is_policy_id) && tenant_dir.join(&name).is_file() {
                    out.push((tenant.clone(), id.to_owned()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// What a put checks before it writes: the ids, the size, and that the document
    /// parses as a policy of `tenant`. Returns the document's path. A cluster checks a
    /// write with it before the write goes to the shared bucket.
    pub fn check(&self, tenant: &str, id: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let target = self.policy_path(tenant, id)?;
        if bytes.len() > POLICY_FILE_BYTES_MAX {
            let bytes = bytes.len() as u64;
            return Err(StoreError::TooLarge { bytes });
        }
        let source = format!("{tenant}/{id}");
        parse_policy(tenant, id, &source, bytes).map_err(StoreError::Invalid)?;
        Ok(target)
    }

    /// Whether a delete of (`tenant`, `id`) could name a document: the ids' checks.
    pub fn check_ids(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.policy_path(tenant, id).map(drop)
    }

    fn tenant_dir(&self, tenant: &str) -> Result<PathBuf, StoreError> {
        if !is_store_id(tenant, is_tenant_id) {
            return Err(StoreError::TenantId(shown(tenant).into()));
        }
        Ok(self.dir.join(tenant))
    }

    fn policy_path(&self, tenant: &str, id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.tenant_dir(tenant)?;
        if !is_store_id(id, is_policy_id) {
            return Err(StoreError::PolicyId(shown(id).into()));
        }
        Ok(dir.join(format!("{id}.json")))
    }

    /// A fresh dot-file name beside `target`: `.<file>.<kind>-<pid>-<n>`.
    fn sibling(&self, target: &Path, kind: &str) -> PathBuf {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let file = target
            .file_name()
            .expect("a policy path ends in a file name");
        let name = format!(
            ".{}.{kind}-{}-{n}",
            file.to_string_lossy(),
            std::process::id()
        );
        target.with_file_name(name)
    }
}

/// An id the store accepts: the loader's pattern, and no leading dot (`.`, `..`, hidden).
fn is_store_id(id: &str, pattern: fn(&str) -> bool) -> bool {
    pattern(id) && !id.starts_with('.')
}

/// Names in a directory, at most `DIR_ENTRIES_MAX`, dot-files left out.
fn read_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
    for entry in entries.take(DIR_ENTRIES_MAX) {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// The store's write lock, and the operations that need it.
pub struct StoreWriter<'s> {
    store: &'s PolicyStore,
    parsed: MutexGuard<'s, ParsedFiles>,
}

/// A write that can still be undone; pass it to `commit` or `rollback`. Dropped without
/// either, it stays done and leaves its backup dot-file behind.
#[must_use = "commit or roll back the change"]
#[derive(Debug)]
pub struct Change {
    target: PathBuf,
    /// A link to the previous document; `None` when there was none.
    backup: Option<PathBuf>,
    deleted: bool,
}

impl Change {
    /// The write created a document that did not exist.
    pub fn created(&self) -> bool {
        self.backup.is_none() && !self.deleted
    }
}

impl StoreWriter<'_> {
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// The policies parsed by earlier scans of the directory (`load_dir_per_document_reusing`).
    pub fn parsed_files(&mut self) -> &mut ParsedFiles {
        &mut self.parsed
    }

    /// Validates `bytes` with `parse_policy` (nothing is written if it fails), then writes
    /// them atomically as `DIR/<tenant>/<id>.json`, creating the tenant directory.
    pub fn put(&mut self, tenant: &str, id: &str, bytes: &[u8]) -> Result<Change, StoreError> {
        let target = self.store.check(tenant, id, bytes)?;
        let tenant_dir = self.store.tenant_dir(tenant)?;
        self.ensure_tenant_dir(&tenant_dir)?;
        let temp = self.write_temp(&target, bytes)?;
        let backup = match self.link_backup(&target) {
            Ok(backup) => backup,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&temp, &target) {
            let _ = fs::remove_file(&temp);
            if let Some(backup) = &backup {
                let _ = fs::remove_file(backup);
            }
            return Err(io_err("rename", &target)(e));
        }
        let change = Change {
            target,
            backup,
            deleted: false,
        };
        self.sync_or_undo(change, &tenant_dir)
    }

    /// Makes `change` durable with a directory fsync; if that fails, undoes it (module
    /// docs) and returns the fsync's error.
    fn sync_or_undo(&mut self, change: Change, dir: &Path) -> Result<Change, StoreError> {
        let synced = match fault::dir_sync(&change.target) {
            Some(e) => Err(io_err("sync", dir)(e)),
            None => sync_dir(dir),
        };
        let Err(err) = synced else {
            return Ok(change);
        };
        if let Err(undo) = self.rollback(change) {
            log::error!("policy store: cannot undo a write whose directory fsync failed: {undo}");
        }
        Err(err)
    }

    /// Removes `DIR/<tenant>/<id>.json` (renamed to its backup until committed); `None`
    /// if there was no such document.
    pub fn delete(&mut self, tenant: &str, id: &str) -> Result<Option<Change>, StoreError> {
        let target = self.store.policy_path(tenant, id)?;
        if !exists(&target)? {
            return Ok(None);
        }
        let backup = self.store.sibling(&target, "json.bak");
        fs::rename(&target, &backup).map_err(io_err("rename", &target))?;
        let dir = target
            .parent()
            .expect("a policy path has a tenant directory")
            .to_owned();
        let change = Change {
            target,
            backup: Some(backup),
            deleted: true,
        };
        self.sync_or_undo(change, &dir).map(Some)
    }

    /// Keeps the change: drops the backup. A backup that cannot be removed is only logged;
    /// it is a dot-file nothing reads.
    pub fn commit(&mut self, change: Change) {
        if let Some(backup) = change.backup {
            if let Err(e) = fs::remove_file(&backup) {
                log::warn!("cannot remove policy backup {}: {e}", backup.display());
            }
        }
    }

    /// Undoes the change: the previous document (or none) is back at the target.
    pub fn rollback(&mut self, change: Change) -> Result<(), StoreError> {
        let target = &change.target;
        match &change.backup {
            Some(backup) => fs::rename(backup, target).map_err(io_err("restore", target))?,
            None => fs::remove_file(target).map_err(io_err("remove", target))?,
        }
        sync_dir(
            target
                .parent()
                .expect("a policy path has a tenant directory"),
        )
    }

    fn ensure_tenant_dir(&self, tenant_dir: &Path) -> Result<(), StoreError> {
        match fs::create_dir(tenant_dir) {
            Ok(()) => sync_dir(&self.store.dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tenant_dir.is_dir() => Ok(()),
            Err(e) => Err(io_err("create", tenant_dir)(e)),
        }
    }

    /// A new temp file beside `target` holding `bytes`, fsynced.
    fn write_temp(&self, target: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let (temp, mut file) = self.create_new(target)?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_err("write", &temp)(e));
        }
        Ok(temp)
    }

    fn create_new(&self, target: &Path) -> Result<(PathBuf, File), StoreError> {
        let mut last = None;
        for _ in 0..TEMP_NAMES_MAX {
            let temp = self.store.sibling(target, "json.tmp");
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err("create", &temp)(e)),
            }
        }
        Err(io_err("create", target)(
            last.expect("at least one name was tried"),
        ))
    }

    /// A hard link to the current target, if it exists.
    fn link_backup(&self, target: &Path) -> Result<Option<PathBuf>, StoreError> {
        if !exists(target)? {
            return Ok(None);
        }
        let mut last = None;
        for _ in 0..TEMP_NAMES_MAX {
            let backup = self.store.sibling(target, "json.bak");
            match fs::hard_link(target, &backup) {
                Ok(()) => return Ok(Some(backup)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err("link", target)(e)),
            }
        }
        Err(io_err("link", target)(
            last.expect("at least one name was tried"),
        ))
    }
}

impl StoreError {
    /// What an admin client is told: the cause class, never a path of the server. Full
    /// disks and quotas are named, since the operator's fix is obvious.
    pub fn public_message(&self) -> String {
        let StoreError::Io { op, source, .. } = self else {
            return self.to_string();
        };
        let what = match source.raw_os_error() {
            Some(libc::ENOSPC) => "the policy directory's disk is full",
            Some(libc::EDQUOT) => "the policy directory's disk quota is spent",
            Some(libc::EROFS) => "the policy directory is read-only",
            Some(libc::EACCES) | Some(libc::EPERM) => {
                "the router may not write the policy directory"
            }
            _ => "the policy store failed",
        };
        format!("{what} ({op}); nothing was changed; the router's log has the cause")
    }
}

/// Faults injected by tests (`--features fault-injection`); without the feature every
/// hook is a constant `None` the compiler removes.
mod fault {
    use std::io;
    use std::path::Path;

    /// Names the policy ids (by prefix) whose directory fsync after a write fails.
    #[cfg(feature = "fault-injection")]
    pub const DIR_FSYNC_ENV: &str = "FAULT_INJECTION_DIR_FSYNC_POLICY";

    /// An injected failure of the directory fsync after writing `target`.
    #[cfg(feature = "fault-injection")]
    pub fn dir_sync(target: &Path) -> Option<io::Error> {
        let prefix = std::env::var(DIR_FSYNC_ENV).ok()?;
        let name = target.file_name()?.to_str()?;
        (!prefix.is_empty() && name.starts_with(&prefix))
            .then(|| io::Error::other("injected fault: directory fsync failed"))
    }

    #[cfg(not(feature = "fault-injection"))]
    pub fn dir_sync(_: &Path) -> Option<io::Error> {
        None
    }
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Makes renames and new entries in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids the loader would accept but that name no policy file of their own are refused.
    #[test]
    fn store_ids_exclude_dot_names() {
        for bad in [".", "..", ".hidden", "", "a/b", "a\\b", "a b", "%2e%2e"] {
            assert!(!is_store_id(bad, is_tenant_id), "{bad:?}");
            assert!(!is_store_id(bad, is_policy_id), "{bad:?}");
        }
        for good in ["acme", "a.b", "a-b_c", "A9", "x.."] {
            assert!(is_store_id(good, is_tenant_id), "{good:?}");
        }
    }
}
