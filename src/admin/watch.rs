//! Reloads the routing table on SIGHUP and when the policy directory changes (SPEC §8).
//!
//! One background thread, not a shard: it sleeps `interval`, then checks a SIGHUP flag and
//! the directory's fingerprint, and calls `reload` (which takes the store's write lock and
//! publishes through the `TableHandle`; shards pick the table up between requests).
//!
//! Why polling and not inotify: no extra crate, no per-platform code, and it works on
//! network and container filesystems where inotify misses changes. The fingerprint is a
//! hash of (name, inode, size, mtime) of every entry the loader reads: tenant directories
//! and their files, dot-files excluded (so the store's temp and backup files do not count),
//! at most `DIR_ENTRIES_MAX` entries per directory. A rename over a file changes its inode,
//! so even a same-size, same-second replacement is seen.
//!
//! A change is reloaded once the fingerprint has been stable for one interval, so a file
//! still being written by an editor is not loaded half-done. A reload is per document
//! (see `table`): a broken file is logged and keeps its last good version, the rest load. A fingerprint whose reload
//! failed is not retried: the next change (or SIGHUP) triggers the next attempt, so a
//! broken file costs one failed reload, not one per interval.
//!
//! The admin API's own writes change the directory too, so the watcher reloads after them
//! once; that reload finds the same policies and publishes nothing (`publish_if_changed`),
//! so no generation is added and shards adopt nothing.
//!
//! SIGHUP goes through `signal_hook::flag` (an atomic flag set by signal-hook's handler;
//! no code of ours runs in the handler). It is seen within one interval. `stop` unregisters
//! the flag; signal-hook keeps its handler installed, so a later SIGHUP is ignored rather
//! than terminating the process.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use signal_hook::consts::SIGHUP;
use signal_hook::SigId;

use super::store::PolicyStore;
use super::table::{reload, reload_all, TableHandle};
use crate::policy::DIR_ENTRIES_MAX;

/// How often the watcher looks at the directory and the SIGHUP flag, by default.
pub const WATCH_INTERVAL_MS: u64 = 1000;
/// Problems of a failed reload written to the log; the rest are counted.
const PROBLEMS_LOGGED_MAX: usize = 20;

/// Reload counters, for metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Reloads that built a table (published or found unchanged).
    pub reloads_ok: AtomicU64,
    /// Reloads refused because no table could be built (the directory unreadable, or a
    /// whole-table limit); the old table stayed. A broken document alone is not one.
    pub reloads_failed: AtomicU64,
}

/// The watcher thread; stops (and joins) on `stop` or drop.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    stats: Arc<WatchStats>,
    sighup: SigId,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `store`'s directory; the published table is taken to match the
    /// directory as it is now. Fails only if the SIGHUP flag or the thread cannot be set up.
    pub fn spawn(
        handle: TableHandle,
        store: Arc<PolicyStore>,
        interval: Duration,
    ) -> io::Result<Watcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WatchStats::default());
        let sighup = signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
        let state = Loop {
            handle,
            seen: fingerprint(store.dir()),
            store,
            hup,
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
            interval,
        };
        let thread = thread::Builder::new()
            .name("policy-watch".into())
            .spawn(move || state.run());
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                signal_hook::low_level::unregister(sighup);
                return Err(e);
            }
        };
        Ok(Watcher {
            stop,
            stats,
            sighup,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }

    /// Stops the thread and waits for it (at most one reload in progress).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        thread.thread().unpark();
        if thread.join().is_err() {
            log::error!("policy watcher thread panicked");
        }
        signal_hook::low_level::unregister(self.sighup);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Loop {
    handle: TableHandle,
    store: Arc<PolicyStore>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<WatchStats>,
    interval: Duration,
    /// The fingerprint at the previous look.
    seen: Option<u64>,
}

impl Loop {
    fn run(mut self) {
        // The fingerprint the published table was last loaded (or tried) from.
        let mut loaded = self.seen;
        loop {
            thread::park_timeout(self.interval);
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let hup = self.hup.swap(false, Ordering::AcqRel);
            let now = fingerprint(self.store.dir());
            let settled = now == self.seen;
            self.seen = now;
            if hup || (settled && now != loaded) {
                loaded = now;
                self.reload(hup);
            }
        }
    }

    /// SIGHUP parses every file again (an operator asked); a file change parses only
    /// the files whose stamps changed.
    fn reload(&self, hup: bool) {
        let (cause, result) = if hup {
            ("SIGHUP", reload_all(&self.handle, &self.store))
        } else {
            ("a file change", reload(&self.handle, &self.store))
        };
        match result {
            Ok(report) => {
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                if report.changed {
                    log::info!(
                        "policies reloaded after {cause}: generation {}, {} policies",
                        report.generation,
                        report.policies
                    );
                }
                if report.invalid_changed {
                    super::table::log_invalid(cause, &report.invalid);
                }
            }
            Err(problems) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "policies not reloaded after {cause}: {} problem(s); the current table stays",
                    problems.len()
                );
                for problem in problems.iter().take(PROBLEMS_LOGGED_MAX) {
                    log::warn!("policy problem: {problem}");
                }
            }
        }
    }
}

/// A hash of what the loader would read; `None` if the directory cannot be listed.
fn fingerprint(dir: &Path) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    let top = entries(dir)?;
    top.hash(&mut hasher);
    for (name, stat) in &top {
        if stat.as_ref().is_some_and(|s| s.is_dir) {
            // A tenant directory that vanished mid-walk hashes as empty.
            entries(&dir.join(name))
                .unwrap_or_default()
                .hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

#[derive(Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Stat {
    is_dir: bool,
    ino: u64,
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

/// A directory counts by identity only: its size and mtime change with dot-files too,
/// and its policy files are hashed one by one.
fn stat(m: &fs::Metadata) -> Stat {
    if m.is_dir() {
        return Stat {
            is_dir: true,
            ino: m.ino(),
            size: 0,
            mtime_s: 0,
            mtime_ns: 0,
        };
    }
    Stat {
        is_dir: false,
        ino: m.ino(),
        size: m.len(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec(),
    }
}

/// Non-dot entries of `dir`, sorted by name, at most `DIR_ENTRIES_MAX`; symlinks followed
/// as the loader follows them.
fn entries(dir: &Path) -> Option<Vec<(String, Option<Stat>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).ok()?.take(DIR_ENTRIES_MAX) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let stat = fs::metadata(entry.path()).ok().map(|m| stat(&m));
        out.push((name, stat));
    }
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint moves with a new file, a rewrite and a removal, and ignores
    /// dot-files (the store's temp and backup files).
    #[test]
    fn fingerprint_tracks_what_the_loader_reads() {
        let dir = std::env::temp_dir().join(format!("shardline-fp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("acme")).unwrap();
        let empty = fingerprint(&dir).expect("listable");
        fs::write(dir.join("acme/.x.json.tmp-1-1"), b"{}").unwrap();
        assert_eq!(fingerprint(&dir), Some(empty), "dot-files do not count");
        fs::write(dir.join("acme/a.json"), b"{}").unwrap();
        let one = fingerprint(&dir).unwrap();
        assert_ne!(one, empty);
        fs::write(dir.join("acme/b.json"), b"{}").unwrap();
        fs::rename(dir.join("acme/b.json"), dir.join("acme/a.json")).unwrap();
        assert_ne!(
            fingerprint(&dir),
            Some(one),
            "a rename over the file is a change"
        );
        fs::remove_file(dir.join("acme/a.json")).unwrap();
        assert_eq!(fingerprint(&dir), Some(empty));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(fingerprint(&dir), None);
    }
}
