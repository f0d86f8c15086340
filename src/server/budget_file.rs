//! The budgets' state file: spend survives a restart.
//!
//! Budgets count money, so a restart must not forget them: a graceful stop writes every
//! shard's ledgers and open reservations after the last request was answered, and a
//! running router rewrites the file at most `SAVE_EVERY` after a change, so a `kill -9`
//! loses at most about a second of spend. The file lives beside the policies
//! (`<policies_dir>.budgets.json`) and is replaced atomically (written to a temporary
//! name, then renamed), so a crash mid-write leaves the previous file whole. A graceful
//! stop also fsyncs it; a periodic write does not (the page cache survives a killed
//! process, and an fsync a second would cost the disk more than a power cut costs here).
//!
//! Shards share nothing, so each hands the writer thread its own snapshot (serialized on
//! the shard, off the request path: from the keep-alive task, and only when its budgets
//! changed); the writer joins the latest snapshot of every shard into one file. At start
//! every shard takes from the file the tenants it owns now, so a change in the shard
//! count moves each tenant's spend to its new owner.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::decide::budget::Saved;

/// A shard hands over a new snapshot at most this often.
pub const SAVE_EVERY: Duration = Duration::from_millis(500);
/// The writer looks for new snapshots this often.
const WRITE_EVERY: Duration = Duration::from_millis(250);
/// The file's format.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FileForm {
    version: u32,
    saved_at_ms: u64,
    shards: Vec<Saved>,
}

/// Where the state file of `policies_dir` lives.
pub fn path_for(policies_dir: &Path) -> PathBuf {
    let mut name = policies_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "policies".into());
    name.push(".budgets.json");
    policies_dir.with_file_name(name)
}

/// The state file, its last snapshots, and the thread that writes them.
pub struct BudgetFile {
    path: PathBuf,
    /// What the file held at start: every shard takes its tenants from it.
    restored: Saved,
    /// Each shard's latest snapshot.
    slots: Mutex<Vec<Option<Saved>>>,
    dirty: AtomicBool,
    stop: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl BudgetFile {
    /// Reads the file if there is one. A file that cannot be read or parsed stops the
    /// start: serving with the budgets forgotten would let a tenant spend them twice.
    pub fn open(policies_dir: &Path, shards: usize) -> anyhow::Result<Arc<BudgetFile>> {
        let path = path_for(policies_dir);
        let restored = match std::fs::read(&path) {
            Ok(bytes) => {
                let form: FileForm = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "budget state file {}: {e}; move it away to start with budgets unspent",
                        path.display()
                    )
                })?;
                if form.version != VERSION {
                    anyhow::bail!(
                        "budget state file {}: version {} (this router reads {VERSION})",
                        path.display(),
                        form.version
                    );
                }
                let mut all = Saved::default();
                for s in form.shards {
                    all.ledgers.extend(s.ledgers);
                    all.reservations.extend(s.reservations);
                }
                log::info!(
                    "budgets: {} ledger(s) and {} open reservation(s) restored from {}",
                    all.ledgers.len(),
                    all.reservations.len(),
                    path.display()
                );
                all
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => anyhow::bail!("budget state file {}: {e}", path.display()),
        };
        let file = Arc::new(BudgetFile {
            path,
            restored,
            slots: Mutex::new(vec![None; shards]),
            dirty: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        // A weak handle: a router whose start failed later, dropped without `finish`,
        // drops its file, whose `Drop` wakes the writer to find it gone and end.
        let writer = Arc::downgrade(&file);
        let handle = std::thread::Builder::new()
            .name("budget-file".into())
            .spawn(move || BudgetFile::run(&writer))?;
        *file.writer.lock().expect("not poisoned") = Some(handle);
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file held at start.
    pub fn restored(&self) -> &Saved {
        &self.restored
    }

    /// Shard `index`'s newest snapshot; wakes the writer.
    pub fn put(&self, index: usize, saved: Saved) {
        self.slots.lock().expect("not poisoned")[index] = Some(saved);
        self.dirty.store(true, Ordering::Release);
        if let Some(writer) = self.writer.lock().expect("not poisoned").as_ref() {
            writer.thread().unpark();
        }
    }

    /// Sleeps until a snapshot comes (an idle router's writer never wakes), then writes
    /// at most every `WRITE_EVERY`.
    fn run(file: &std::sync::Weak<BudgetFile>) {
        loop {
            std::thread::park();
            let Some(file) = file.upgrade() else {
                return;
            };
            if file.stop.load(Ordering::Acquire) {
                return;
            }
            if file.ready() && file.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = file.write(false) {
                    log::warn!("budgets: writing {}: {e}", file.path.display());
                }
                drop(file);
                std::thread::sleep(WRITE_EVERY);
            }
        }
    }

    /// Stops the writer and writes the last snapshots, fsynced: call after every shard
    /// handed its final one.
    /// Always written when any shard handed a snapshot, dirty or not: the writer thread
    /// may have written the last ones already, without an fsync.
    pub fn finish(&self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.writer.lock().expect("not poisoned").take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        let any = self
            .slots
            .lock()
            .expect("not poisoned")
            .iter()
            .any(Option::is_some);
        if any && self.ready() {
            self.write(true)?;
        }
        Ok(())
    }

    /// Whether a file may be written: when the file held budgets at start, only once every
    /// shard has handed its snapshot (each does at restore), so that the tenants of a
    /// shard not started yet are never written out of the file.
    fn ready(&self) -> bool {
        !self.restored_any()
            || self
                .slots
                .lock()
                .expect("not poisoned")
                .iter()
                .all(Option::is_some)
    }

    /// The file held budgets at start: every shard must hand a snapshot at restore.
    pub fn restored_any(&self) -> bool {
        !(self.restored.ledgers.is_empty() && self.restored.reservations.is_empty())
    }

    fn write(&self, sync: bool) -> anyhow::Result<()> {
        let bytes = {
            let slots = self.slots.lock().expect("not poisoned");
            let form = FileForm {
                version: VERSION,
                saved_at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                shards: slots.iter().flatten().cloned().collect(),
            };
            serde_json::to_vec(&form)?
        };
        // This process's own temporary name: two routers on one directory (tests, a
        // mistaken second start) never write into each other's half-written file.
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if sync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &self.path)?;
        if sync {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }
}

impl Drop for BudgetFile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.writer.get_mut().ok().and_then(Option::take) {
            handle.thread().unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sits_beside_the_policies() {
        assert_eq!(
            path_for(Path::new("/srv/x/policies")),
            PathBuf::from("/srv/x/policies.budgets.json")
        );
        assert_eq!(
            path_for(Path::new("config/policies/")),
            PathBuf::from("config/policies.budgets.json")
        );
    }
}
