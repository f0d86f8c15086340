//! Park and wake: how an idle shard sleeps without a busy shard paying for it.
//!
//! Under load a shard never sleeps: it drains its inbound rings in its loop and producers
//! pay one fence and one load of the consumer's `parked` flag per message, no syscall. When
//! a shard finds every ring empty it spins briefly (yielding to its executor, so its other
//! tasks run), then parks: it stores its task `Waker`, sets `parked`, and returns `Pending`.
//! The glommio executor then sleeps in `io_uring_enter` when nothing else is runnable,
//! so an idle process uses no CPU.
//!
//! # The lost-wakeup argument
//! ```text
//! consumer (parking)                 producer (sending)
//!   waker slot := my waker             ring.tail := t + 1      (Release)
//!   parked := true        (SeqCst)     fence(SeqCst)
//!   fence(SeqCst)                      if parked: wake
//!   if any ring has items: unpark
//! ```
//! The two fences are totally ordered. If the producer's fence comes first, the consumer's
//! re-check sees the item; if the consumer's comes first, the producer sees `parked` and
//! wakes it. Either way the item is not stranded. `parked.swap(false)` decides who clears
//! the flag, so a waker is woken at most once per park. The same pattern carries the stop
//! request and quiescence, so they cannot be missed either.
//!
//! # Why wake through the task `Waker`
//! glommio 0.9 supports waking a task from a foreign thread: it queues the waker for the
//! task's executor and writes that executor's `eventfd` only if it is asleep (glommio's own
//! `should_notify` flag, ordered by a fence on each side: vendor/PATCHES.md). So a wake of
//! a shard that is busy with other tasks costs no syscall, and the eventfd glommio already
//! owns is the one slept on. Why not our own `eventfd` per shard: glommio 0.9 has no eventfd type (we would
//! wrap it in a file or socket type, e.g. `BufferedFile::from_raw_fd`, meant for something
//! else), and every wake would then cost our `write` plus an io_uring read to re-arm it, on
//! top of glommio's own wake of a sleeping executor.
//! Why not `shared_channel`: it notifies the peer on every send (see `ring`).
//!
//! The waker slot is a `Mutex`, taken once per park and once per wake, never per message.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::ring::CachePadded;

/// Most times an idle shard yields and re-checks its rings before it parks.
pub const SPIN_ITERATIONS_MAX: u32 = 1024;
/// Default spin: a few tens of microseconds of executor round trips on current hardware,
/// which covers the gap between two requests of a busy client without a wake.
pub const SPIN_ITERATIONS_DEFAULT: u32 = 64;

const _: () = assert!(SPIN_ITERATIONS_DEFAULT <= SPIN_ITERATIONS_MAX);

/// Per-shard wake state, on its own cache line.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// The shard's task is parked (or about to be) and wants a wake.
    parked: AtomicBool,
    /// The shard has left its loop; sends to it are refused.
    exited: AtomicBool,
    /// The waker of the parked task.
    waker: Mutex<Option<Waker>>,
}

impl Doorbell {
    /// Wakes the shard if it is parked. Callers fence(SeqCst) after publishing first.
    #[inline]
    pub(crate) fn ring_if_parked(&self) {
        if self.parked.load(Ordering::Relaxed) {
            self.ring();
        }
    }

    #[cold]
    fn ring(&self) {
        if !self.parked.swap(false, Ordering::AcqRel) {
            return;
        }
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Stores the waker and sets `parked`; the caller fences and re-checks next.
    pub(crate) fn arm(&self, waker: &Waker) {
        {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_mut() {
                Some(old) => old.clone_from(waker),
                None => *slot = Some(waker.clone()),
            }
        }
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Clears `parked` (the consumer is awake again).
    pub(crate) fn disarm(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Marks the shard gone and drops its stored waker on the owning thread, so no stale
    /// waker of a finished executor outlives it in the shared state.
    pub(crate) fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
        self.parked.store(false, Ordering::Relaxed);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(waker);
    }

    #[inline]
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Relaxed)
    }
}

/// State shared by all shards of one mesh: doorbells, the stop request, quiescence.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) bells: Box<[CachePadded<Doorbell>]>,
    stop: AtomicBool,
    quiesced: AtomicUsize,
}

impl Control {
    pub(crate) fn new(shard_count: usize) -> Control {
        Control {
            bells: (0..shard_count)
                .map(|_| CachePadded(Doorbell::default()))
                .collect(),
            stop: AtomicBool::new(false),
            quiesced: AtomicUsize::new(0),
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ring_all();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Counts one more quiet shard; the last one wakes everybody.
    pub(crate) fn add_quiesced(&self) {
        let now = self.quiesced.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(now <= self.bells.len(), "more shards quiesced than exist");
        if now == self.bells.len() {
            self.ring_all();
        }
    }

    /// All shards have quiesced (Acquire: their earlier pushes are visible after this).
    pub(crate) fn all_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Acquire) == self.bells.len()
    }

    #[cfg(test)]
    pub(crate) fn quiesced_for_test(&self) -> usize {
        self.quiesced.load(Ordering::Relaxed)
    }

    fn ring_all(&self) {
        fence(Ordering::SeqCst);
        for bell in self.bells.iter() {
            bell.ring_if_parked();
        }
    }
}

/// A cloneable handle to ask every shard of a mesh to stop. Holds no message type.
#[derive(Clone, Debug)]
pub struct MeshControl(pub(crate) Arc<Control>);

impl MeshControl {
    /// Asks every shard to stop: each one's `next_batch` returns `Inbound::Stopping` next.
    pub fn request_stop(&self) {
        self.0.request_stop();
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.0.stop_requested()
    }

    /// How many shards have left their loop (returned `Stopped` or dropped their end).
    pub fn exited_count(&self) -> usize {
        self.0.bells.iter().filter(|b| b.has_exited()).count()
    }
}

/// Yields to the executor once: wakes itself and returns `Pending`, then `Ready`.
#[derive(Debug, Default)]
pub(crate) struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_parked_bell_wakes_once() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let bell = Doorbell::default();
        bell.ring_if_parked();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "not parked, no wake");
        bell.arm(&waker);
        bell.ring_if_parked();
        bell.ring_if_parked();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn disarmed_bell_does_not_wake() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let bell = Doorbell::default();
        bell.arm(&Waker::from(Arc::clone(&counter)));
        bell.disarm();
        bell.ring_if_parked();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn last_quiesced_shard_wakes_all() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let control = Control::new(2);
        control.bells[0].arm(&Waker::from(Arc::clone(&counter)));
        control.add_quiesced();
        assert!(!control.all_quiesced());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        control.add_quiesced();
        assert!(control.all_quiesced());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
