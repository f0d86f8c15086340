//! Stall detection: every shard beats a heartbeat from a task on its own executor, and a
//! plain thread (never a shard: a stalled shard cannot report itself) marks a shard whose
//! last beat is older than the stall threshold as stalled, and clears the mark when it
//! beats again.
//!
//! A beat is one relaxed store of a millisecond clock into the shard's own cache line, a
//! few times per threshold, so a healthy shard pays nothing measurable. The beat runs as
//! an ordinary task of the shard: it only runs when the executor gets round to it, which
//! is exactly what a request needs too. A shard blocked in a system call, spinning in a
//! task that never yields, or dead stops beating.
//!
//! Why a thread and not a timer on another shard: a shard may be the one stalled, and
//! shards must not depend on each other to stay observable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::id::ShardId;
use crate::ring::CachePadded;

/// How many times per stall threshold a shard beats, and the watchdog looks.
pub const BEATS_PER_STALL: u32 = 4;

/// Per shard: its last beat, whether it is stalled, and how often it stalled.
#[derive(Debug)]
pub struct Heartbeats {
    epoch: Instant,
    shards: Box<[CachePadded<Beat>]>,
}

#[derive(Debug, Default)]
struct Beat {
    /// Milliseconds since `epoch` of the last beat.
    at_ms: AtomicU64,
    stalled: AtomicBool,
    stalls: AtomicU64,
}

/// A shard's stall mark changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallChange {
    pub shard: ShardId,
    /// `true`: it stalled; `false`: it runs again.
    pub stalled: bool,
    /// How long since its last beat.
    pub silent: Duration,
}

impl Heartbeats {
    /// Every shard starts as having just beaten.
    pub fn new(shard_count: usize) -> Arc<Heartbeats> {
        let shards = (0..shard_count).map(|_| CachePadded::default()).collect();
        Arc::new(Heartbeats {
            epoch: Instant::now(),
            shards,
        })
    }

    /// Records that `shard` ran just now (called from the shard itself).
    pub fn beat(&self, shard: ShardId) {
        let now = self.millis(Instant::now());
        self.shards[shard.index()]
            .at_ms
            .store(now, Ordering::Relaxed);
    }

    pub fn is_stalled(&self, shard: ShardId) -> bool {
        self.shards[shard.index()].stalled.load(Ordering::Relaxed)
    }

    /// The shards marked stalled now.
    pub fn stalled(&self) -> impl Iterator<Item = ShardId> + '_ {
        (0..self.shards.len())
            .map(ShardId::from_index)
            .filter(|&s| self.is_stalled(s))
    }

    /// How many times `shard` was found stalled since start.
    pub fn stalls(&self, shard: ShardId) -> u64 {
        self.shards[shard.index()].stalls.load(Ordering::Relaxed)
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// One look at every shard at `now`: marks those silent for longer than `threshold`,
    /// clears those that beat again, and returns what changed.
    pub fn check(&self, now: Instant, threshold: Duration) -> Vec<StallChange> {
        let now_ms = self.millis(now);
        let mut changes = Vec::new();
        for (i, beat) in self.shards.iter().enumerate() {
            let silent_ms = now_ms.saturating_sub(beat.at_ms.load(Ordering::Relaxed));
            let stalled = silent_ms > threshold.as_millis() as u64;
            if beat.stalled.swap(stalled, Ordering::Relaxed) != stalled {
                if stalled {
                    beat.stalls.fetch_add(1, Ordering::Relaxed);
                }
                changes.push(StallChange {
                    shard: ShardId::from_index(i),
                    stalled,
                    silent: Duration::from_millis(silent_ms),
                });
            }
        }
        changes
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

/// The watchdog thread; `stop` (or drop) ends it.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Looks at `beats` `BEATS_PER_STALL` times per `threshold` and hands every change to
    /// `on_change` (to log it), on its own thread.
    pub fn spawn(
        beats: Arc<Heartbeats>,
        threshold: Duration,
        on_change: impl Fn(StallChange) + Send + 'static,
    ) -> std::io::Result<Watchdog> {
        Watchdog::spawn_observed(beats, threshold, None, on_change, |_| {})
    }

    /// As `spawn`, and after every look calls `on_look(healthy)` — `healthy` when no shard
    /// is marked stalled — looking at least every `look_every` too. This is how a
    /// supervisor's keep-alive follows the shards: it is sent from this thread only while
    /// every shard beats, so a stalled shard (or a stuck watchdog) silences it.
    pub fn spawn_observed(
        beats: Arc<Heartbeats>,
        threshold: Duration,
        look_every: Option<Duration>,
        on_change: impl Fn(StallChange) + Send + 'static,
        on_look: impl Fn(bool) + Send + 'static,
    ) -> std::io::Result<Watchdog> {
        let (stop, stopped) = sync_channel::<()>(1);
        let stall_period = threshold / BEATS_PER_STALL;
        let period = look_every.map_or(stall_period, |every| every.min(stall_period));
        let period = period.max(Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name("shard-watchdog".into())
            // A stop message or a dropped sender ends the loop; a timeout is a look.
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let changes = beats.check(Instant::now(), threshold);
                    changes.into_iter().for_each(&on_change);
                    on_look(beats.stalled().next().is_none());
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard silent past the threshold is marked once and counted once; it is cleared
    /// when it beats again, and a second stall counts again. Time is injected.
    #[test]
    fn marks_and_clears_stalls() {
        let beats = Heartbeats::new(2);
        let threshold = Duration::from_millis(100);
        let start = beats.epoch;
        beats.shards[1].at_ms.store(0, Ordering::Relaxed);
        let later = start + Duration::from_millis(150);
        beats.shards[0].at_ms.store(140, Ordering::Relaxed);
        let changes = beats.check(later, threshold);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].shard, ShardId(1));
        assert!(changes[0].stalled);
        assert_eq!(beats.stalled().collect::<Vec<_>>(), vec![ShardId(1)]);
        assert!(beats.check(later, threshold).is_empty(), "marked once");
        assert_eq!(beats.stalls(ShardId(1)), 1);
        beats.shards[1].at_ms.store(150, Ordering::Relaxed);
        let changes = beats.check(later, threshold);
        assert_eq!((changes[0].shard, changes[0].stalled), (ShardId(1), false));
        assert!(!beats.is_stalled(ShardId(1)));
        let much_later = start + Duration::from_millis(400);
        beats.shards[0].at_ms.store(390, Ordering::Relaxed);
        beats.check(much_later, threshold);
        assert_eq!(beats.stalls(ShardId(1)), 2);
        assert_eq!(beats.stalls(ShardId(0)), 0);
    }

    /// The thread reports a shard that stops beating and ends on `stop`.
    #[test]
    fn the_thread_reports_a_silent_shard() {
        let beats = Heartbeats::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let dog = Watchdog::spawn(Arc::clone(&beats), Duration::from_millis(20), move |c| {
            let _ = tx.send(c);
        })
        .unwrap();
        let change = rx.recv_timeout(Duration::from_secs(10)).expect("a stall");
        assert!(change.stalled && beats.is_stalled(ShardId(0)));
        dog.stop();
    }
}
