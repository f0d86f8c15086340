//! The ring mesh: one bounded SPSC ring per ordered pair of shards, and each shard's end.
//!
//! A mesh of `n` shards holds `n * (n - 1)` rings. Shard `a` owns the producer of ring
//! `a → b` and the consumer of ring `b → a` for every other shard `b`, so every ring has
//! exactly one writer thread and one reader thread and needs no lock. Why not one MPSC
//! inbox per shard: every producer would contend on one tail with compare-exchanges; with
//! per-pair rings a shard's senders never touch each other's cache lines.
//!
//! A shard's loop awaits [`ShardEnd::next_batch`], which drains its inbound rings
//! (round-robin start, bounded batch) and parks the shard only when all are empty (see
//! `wake`). [`ShardEnd::try_send`] never blocks: a full ring hands the message back.
//!
//! # Stopping
//! `MeshControl::request_stop` makes `next_batch` return [`Inbound::Stopping`] once. The
//! shard stops originating work (closes listeners), keeps calling `next_batch` to serve
//! its peers, and calls [`ShardEnd::quiesce`] when it has nothing of its own in flight
//! (no request awaiting a peer's reply). When every shard has quiesced, `next_batch` drains
//! what is left and returns [`Inbound::Stopped`]. Requests a shard sent before quiescing
//! have been answered by then, because it waited for the replies. Limit: a message sent
//! *while handling* a drained fire-and-forget message during shutdown may find its
//! destination gone (`TrySendError::Closed`, or dropped with the mesh if it raced the
//! destination's exit).
//! A dropped `ShardEnd` (a shard that panicked) counts as quiesced and exited, so peers
//! are not held up by it.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::task::Poll;

use crate::id::{ShardId, SHARDS_MAX};
use crate::ring::{ring, Consumer, Producer, RING_SLOTS_MAX, RING_SLOTS_MIN};
use crate::wake::{Control, MeshControl, YieldNow, SPIN_ITERATIONS_DEFAULT, SPIN_ITERATIONS_MAX};

/// Most messages one `next_batch` call returns; bounds the time between two yields.
pub const BATCH_ITEMS_MAX: usize = 1024;
/// Default batch limit: enough to amortise the loop, small enough to stay cache-resident.
pub const BATCH_ITEMS_DEFAULT: usize = 256;

const _: () = assert!(BATCH_ITEMS_DEFAULT <= BATCH_ITEMS_MAX);
const _: () = assert!(BATCH_ITEMS_MAX <= RING_SLOTS_MAX);

/// A message and the shard that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<T> {
    /// The sending shard.
    pub from: ShardId,
    /// The message.
    pub msg: T,
}

/// What `next_batch` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Inbound {
    /// The batch holds at least one message.
    Messages,
    /// A stop was requested (returned once): stop originating work, keep serving peers,
    /// call `quiesce` when nothing of yours is in flight, and keep calling `next_batch`.
    Stopping,
    /// Every shard has quiesced and the rings are drained: leave the loop.
    Stopped,
}

/// A message handed back by `try_send`.
#[derive(thiserror::Error)]
pub enum TrySendError<T> {
    /// The ring to the destination is full: shed the work and count it.
    #[error("the ring to the destination shard is full")]
    Full(T),
    /// The destination shard has left its loop.
    #[error("the destination shard has stopped")]
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(msg) | TrySendError::Closed(msg) => msg,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// A reusable, bounded buffer of received messages; allocated once, at shard start.
#[derive(Debug)]
pub struct Batch<T> {
    items: Vec<Envelope<T>>,
    limit: usize,
}

impl<T> Batch<T> {
    /// A batch holding at most `limit` messages.
    ///
    /// # Panics
    /// If `limit` is 0 or above `BATCH_ITEMS_MAX`.
    pub fn with_limit(limit: usize) -> Batch<T> {
        assert!(
            (1..=BATCH_ITEMS_MAX).contains(&limit),
            "batch limit {limit} out of range"
        );
        Batch {
            items: Vec::with_capacity(limit),
            limit,
        }
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes and yields the messages in arrival order (per sender). Keeps the allocation.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Envelope<T>> {
        self.items.drain(..)
    }

    fn has_room(&self) -> bool {
        self.items.len() < self.limit
    }
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch::with_limit(BATCH_ITEMS_DEFAULT)
    }
}

/// A mesh under construction: the control handle and every shard's end.
#[derive(Debug)]
pub struct Mesh<T> {
    ends: Vec<ShardEnd<T>>,
    control: MeshControl,
}

impl<T: Send> Mesh<T> {
    /// Builds the `shard_count * (shard_count - 1)` rings of `ring_slots` slots each.
    ///
    /// # Panics
    /// If `shard_count` is outside `1..=SHARDS_MAX` or `ring_slots` is not a power of two
    /// within `RING_SLOTS_MIN..=RING_SLOTS_MAX` (configuration is validated before this).
    pub fn new(shard_count: usize, ring_slots: usize) -> Mesh<T> {
        assert!(
            (1..=SHARDS_MAX).contains(&shard_count),
            "shard count {shard_count}"
        );
        assert!((RING_SLOTS_MIN..=RING_SLOTS_MAX).contains(&ring_slots));
        let control = Arc::new(Control::new(shard_count));
        let mut outbound: Vec<Vec<Option<Producer<T>>>> = (0..shard_count)
            .map(|_| (0..shard_count).map(|_| None).collect())
            .collect();
        let mut inbound: Vec<Vec<InboundRing<T>>> = (0..shard_count)
            .map(|_| Vec::with_capacity(shard_count - 1))
            .collect();
        for (from, row) in outbound.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate().filter(|(to, _)| *to != from) {
                let (producer, consumer) = ring(ring_slots);
                *slot = Some(producer);
                let from = ShardId::from_index(from);
                inbound[to].push(InboundRing { from, consumer });
            }
        }
        let ends = outbound.into_iter().zip(inbound).enumerate();
        let ends = ends.map(|(index, (outbound, inbound))| ShardEnd {
            id: ShardId::from_index(index),
            shard_count,
            outbound: outbound.into_boxed_slice(),
            inbound: inbound.into_boxed_slice(),
            next_inbound: 0,
            control: Arc::clone(&control),
            spin_iterations: SPIN_ITERATIONS_DEFAULT,
            stopping_delivered: false,
            quiesced: false,
        });
        Mesh {
            ends: ends.collect(),
            control: MeshControl(control),
        }
    }

    /// A handle to request a stop of every shard.
    pub fn control(&self) -> MeshControl {
        self.control.clone()
    }

    /// Each shard's end, indexed by `ShardId`.
    pub fn into_ends(self) -> Vec<ShardEnd<T>> {
        self.ends
    }
}

/// The sending side of a shard's end, taken with [`ShardEnd::outbox`]: owned by the same
/// thread, used by the shard's tasks while its loop awaits `next_batch`.
#[derive(Debug)]
pub struct Outbox<T> {
    id: ShardId,
    outbound: Box<[Option<Producer<T>>]>,
    control: Arc<Control>,
}

impl<T> Outbox<T> {
    /// The sending shard.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Sends `msg` to shard `to`, waking it if it is parked. Never blocks.
    ///
    /// # Panics
    /// If `to` is this shard or not in the mesh: both are routing bugs.
    #[inline]
    pub fn try_send(&mut self, to: ShardId, msg: T) -> Result<(), TrySendError<T>> {
        send(self.id, &mut self.outbound, &self.control, to, msg)
    }

    /// Messages waiting in the ring to `to` (for metrics).
    pub fn depth_to(&self, to: ShardId) -> usize {
        depth(&self.outbound, to)
    }
}

#[inline]
fn send<T>(
    id: ShardId,
    outbound: &mut [Option<Producer<T>>],
    control: &Control,
    to: ShardId,
    msg: T,
) -> Result<(), TrySendError<T>> {
    assert_ne!(
        to, id,
        "shard {to} sent a message to itself through the mesh"
    );
    let bell = &control.bells[to.index()];
    if bell.has_exited() {
        return Err(TrySendError::Closed(msg));
    }
    let producer = outbound[to.index()].as_mut().expect("ring to every peer");
    producer.try_push(msg).map_err(TrySendError::Full)?;
    // Pairs with the consumer's fence in `park`: see the lost-wakeup argument in `wake`.
    fence(Ordering::SeqCst);
    bell.ring_if_parked();
    Ok(())
}

fn depth<T>(outbound: &[Option<Producer<T>>], to: ShardId) -> usize {
    outbound
        .get(to.index())
        .and_then(Option::as_ref)
        .map_or(0, Producer::len)
}

#[derive(Debug)]
struct InboundRing<T> {
    from: ShardId,
    consumer: Consumer<T>,
}

/// One shard's view of the mesh: producers to every other shard, consumers from them.
/// Owned by the shard's thread; `Send` so the runtime can move it there.
#[derive(Debug)]
pub struct ShardEnd<T> {
    id: ShardId,
    shard_count: usize,
    /// Indexed by destination; `None` at our own index. Empty once `outbox` took them.
    outbound: Box<[Option<Producer<T>>]>,
    inbound: Box<[InboundRing<T>]>,
    /// Where the next drain starts, so no sender is always served last.
    next_inbound: usize,
    control: Arc<Control>,
    spin_iterations: u32,
    stopping_delivered: bool,
    quiesced: bool,
}

impl<T> ShardEnd<T> {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The number of shards in the mesh.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Moves the sending side out, for a shard whose other tasks send while its loop awaits
    /// `next_batch` (which holds `&mut self`). Afterwards `try_send` on the end panics.
    ///
    /// # Panics
    /// If the outbox was already taken.
    pub fn outbox(&mut self) -> Outbox<T> {
        assert!(
            !self.outbound.is_empty() || self.shard_count == 0,
            "outbox taken twice"
        );
        Outbox {
            id: self.id,
            outbound: std::mem::take(&mut self.outbound),
            control: Arc::clone(&self.control),
        }
    }

    /// Sets how many executor yields an idle shard spends re-checking before it parks.
    ///
    /// # Panics
    /// If above `SPIN_ITERATIONS_MAX`.
    pub fn set_spin_iterations(&mut self, spins: u32) {
        assert!(
            spins <= SPIN_ITERATIONS_MAX,
            "spin iterations {spins} above max"
        );
        self.spin_iterations = spins;
    }

    /// Sends `msg` to shard `to`, waking it if it is parked. Never blocks.
    ///
    /// # Panics
    /// If `to` is this shard or not in the mesh (routing bugs), or the outbox was taken.
    #[inline]
    pub fn try_send(&mut self, to: ShardId, msg: T) -> Result<(), TrySendError<T>> {
        assert!(
            !self.outbound.is_empty(),
            "try_send on an end whose outbox was taken"
        );
        send(self.id, &mut self.outbound, &self.control, to, msg)
    }

    /// Moves waiting messages into `batch` without waiting; returns how many.
    pub fn drain_into(&mut self, batch: &mut Batch<T>) -> usize {
        let rings = self.inbound.len();
        if rings == 0 {
            return 0;
        }
        let before = batch.len();
        for k in 0..rings {
            let inbound = &mut self.inbound[(self.next_inbound + k) % rings];
            while batch.has_room() {
                let Some(msg) = inbound.consumer.try_pop() else {
                    break;
                };
                batch.items.push(Envelope {
                    from: inbound.from,
                    msg,
                });
            }
        }
        self.next_inbound = (self.next_inbound + 1) % rings;
        batch.len() - before
    }

    /// Waits for the next messages, a stop request, or the end of the stop protocol.
    ///
    /// Fairness: on entry it yields to the shard's other tasks if glommio's preemption
    /// timer has expired (`RuntimeConfig::preempt_timer`), so a shard flooded by its peers
    /// still serves its sockets. Outside a glommio executor that check is a no-op.
    ///
    /// Cancel-safe: messages move into `batch` only in a synchronous drain, so dropping the
    /// future (in a `select`) loses nothing; at worst the task gets one spurious wake.
    ///
    /// # Panics
    /// If `batch` is not empty: drain it before asking for more.
    pub async fn next_batch(&mut self, batch: &mut Batch<T>) -> Inbound {
        assert!(
            batch.is_empty(),
            "next_batch called with an undrained batch"
        );
        glommio::yield_if_needed().await;
        let mut spins = 0;
        loop {
            // Before draining: under sustained traffic a drain is never empty, and the stop
            // must still get through.
            if !self.stopping_delivered && self.control.stop_requested() {
                self.stopping_delivered = true;
                return Inbound::Stopping;
            }
            // Read quiescence before draining: peers quiesce after their last push, so
            // seeing them all quiet and then an empty drain means nothing more is coming.
            let all_quiet = self.quiesced && self.control.all_quiesced();
            if self.drain_into(batch) > 0 {
                return Inbound::Messages;
            }
            if all_quiet {
                self.control.bells[self.id.index()].mark_exited();
                return Inbound::Stopped;
            }
            if spins < self.spin_iterations {
                spins += 1;
                YieldNow::default().await;
                continue;
            }
            self.park().await;
        }
    }

    /// Declares that this shard has nothing of its own in flight. Idempotent.
    ///
    /// # Panics
    /// If called before `next_batch` returned `Inbound::Stopping`.
    pub fn quiesce(&mut self) {
        assert!(self.stopping_delivered, "quiesce before Inbound::Stopping");
        if !self.quiesced {
            self.quiesced = true;
            self.control.add_quiesced();
        }
    }

    /// Whether a stop has been requested of the mesh.
    pub fn stop_requested(&self) -> bool {
        self.control.stop_requested()
    }

    /// Messages waiting in the ring from `from` (for metrics).
    pub fn depth_from(&self, from: ShardId) -> usize {
        let inbound = self.inbound.iter().find(|r| r.from == from);
        inbound.map_or(0, |r| r.consumer.len())
    }

    /// Messages waiting in the ring to `to` (for metrics).
    pub fn depth_to(&self, to: ShardId) -> usize {
        depth(&self.outbound, to)
    }

    /// Parks until a producer, a stop request or the last quiescing shard wakes us.
    /// Returns at once if, after arming, anything is already waiting.
    async fn park(&mut self) {
        let mut armed = false;
        poll_fn(|cx| {
            let bell = &self.control.bells[self.id.index()];
            if armed {
                bell.disarm();
                return Poll::Ready(());
            }
            bell.arm(cx.waker());
            if self.wake_pending() {
                self.control.bells[self.id.index()].disarm();
                return Poll::Ready(());
            }
            armed = true;
            Poll::Pending
        })
        .await;
    }

    /// The re-check after the fence: fresh loads of every producer index and the flags.
    fn wake_pending(&mut self) -> bool {
        let stop = !self.stopping_delivered && self.control.stop_requested();
        let quiet = self.quiesced && self.control.all_quiesced();
        stop || quiet || self.inbound.iter_mut().any(|r| r.consumer.has_items())
    }
}

impl<T> Drop for ShardEnd<T> {
    fn drop(&mut self) {
        self.control.bells[self.id.index()].mark_exited();
        if !self.quiesced {
            self.quiesced = true;
            self.control.add_quiesced();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake, Waker};

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `next_batch` once with `waker`: `Pending` means the shard parked.
    fn poll_next<T>(end: &mut ShardEnd<T>, batch: &mut Batch<T>, waker: &Waker) -> Poll<Inbound> {
        let future = pin!(end.next_batch(batch));
        future.poll(&mut Context::from_waker(waker))
    }

    /// A taken outbox sends like the end did, and the receiving end drains it.
    #[test]
    fn outbox_sends_while_end_receives() {
        let mut ends = Mesh::<u32>::new(2, 4).into_ends();
        let mut out0 = ends[0].outbox();
        out0.try_send(ShardId(1), 7).unwrap();
        assert_eq!(out0.depth_to(ShardId(1)), 1);
        let mut batch = Batch::default();
        assert_eq!(ends[1].drain_into(&mut batch), 1);
        assert_eq!(
            batch.drain().next().map(|e| (e.from, e.msg)),
            Some((ShardId(0), 7))
        );
    }

    #[test]
    fn mesh_wires_every_ordered_pair() {
        let mut ends = Mesh::<(usize, usize)>::new(3, 4).into_ends();
        for (from, end) in ends.iter_mut().enumerate() {
            for to in (0..3).filter(|&to| to != from) {
                end.try_send(ShardId::from_index(to), (from, to)).unwrap();
            }
        }
        for (to, end) in ends.iter_mut().enumerate() {
            let mut batch = Batch::with_limit(8);
            assert_eq!(end.drain_into(&mut batch), 2);
            for env in batch.drain() {
                assert_eq!(env.msg, (env.from.index(), to));
            }
        }
    }

    #[test]
    fn full_ring_hands_the_message_back() {
        let mut ends = Mesh::<u32>::new(2, 2).into_ends();
        ends[0].try_send(ShardId(1), 1).unwrap();
        ends[0].try_send(ShardId(1), 2).unwrap();
        assert_eq!(ends[0].depth_to(ShardId(1)), 2);
        assert_eq!(ends[1].depth_from(ShardId(0)), 2);
        let err = ends[0].try_send(ShardId(1), 3).unwrap_err();
        assert!(matches!(err, TrySendError::Full(3)));
        assert_eq!(err.to_string(), "the ring to the destination shard is full");
    }

    #[test]
    fn batch_limit_is_respected_and_rotates() {
        let mut ends = Mesh::<u32>::new(3, 8).into_ends();
        for i in 0..4 {
            ends[1].try_send(ShardId(0), 100 + i).unwrap();
            ends[2].try_send(ShardId(0), 200 + i).unwrap();
        }
        let mut batch = Batch::with_limit(3);
        assert_eq!(ends[0].drain_into(&mut batch), 3);
        let first: Vec<u32> = batch.drain().map(|e| e.msg).collect();
        assert_eq!(first, [100, 101, 102]);
        assert_eq!(ends[0].drain_into(&mut batch), 3);
        let second: Vec<u32> = batch.drain().map(|e| e.msg).collect();
        assert_eq!(
            second,
            [200, 201, 202],
            "second drain starts at the next sender"
        );
    }

    #[test]
    fn dropped_end_refuses_messages_and_counts_as_quiesced() {
        let mesh = Mesh::<u32>::new(2, 2);
        let control = mesh.control();
        let mut ends = mesh.into_ends();
        let second = ends.pop().unwrap();
        drop(second);
        assert_eq!(control.exited_count(), 1);
        assert!(matches!(
            ends[0].try_send(ShardId(1), 7),
            Err(TrySendError::Closed(7))
        ));
        assert!(!ends[0].control.all_quiesced());
        assert_eq!(ends[0].control.quiesced_for_test(), 1);
    }

    #[test]
    #[should_panic(expected = "to itself")]
    fn sending_to_self_is_a_bug() {
        let mut ends = Mesh::<u32>::new(2, 2).into_ends();
        let _ = ends[0].try_send(ShardId(0), 1);
    }

    #[test]
    fn single_shard_mesh_has_no_rings() {
        let mut ends = Mesh::<u32>::new(1, 2).into_ends();
        assert_eq!(ends[0].shard_count(), 1);
        assert_eq!(ends[0].drain_into(&mut Batch::default()), 0);
    }

    /// An idle shard parks; a send wakes its task exactly once; the next poll has the message.
    #[test]
    fn send_wakes_a_parked_shard_once() {
        let mut ends = Mesh::<u32>::new(2, 4).into_ends();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut batch = Batch::default();
        ends[1].set_spin_iterations(0);
        assert_eq!(poll_next(&mut ends[1], &mut batch, &waker), Poll::Pending);
        ends[0].try_send(ShardId(1), 5).unwrap();
        ends[0].try_send(ShardId(1), 6).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake per park");
        let polled = poll_next(&mut ends[1], &mut batch, &waker);
        assert_eq!(polled, Poll::Ready(Inbound::Messages));
        assert_eq!(batch.drain().map(|e| e.msg).collect::<Vec<_>>(), [5, 6]);
    }

    /// Stop gets through ahead of queued messages; the queued ones are still delivered;
    /// `Stopped` waits for every shard to quiesce.
    #[test]
    fn stop_protocol_orders_stopping_messages_stopped() {
        let mesh = Mesh::<u32>::new(2, 4);
        let control = mesh.control();
        let mut ends = mesh.into_ends();
        let waker = Waker::noop();
        let mut batch = Batch::default();
        ends[0].try_send(ShardId(1), 9).unwrap();
        control.request_stop();
        let polled = poll_next(&mut ends[1], &mut batch, waker);
        assert_eq!(polled, Poll::Ready(Inbound::Stopping));
        let polled = poll_next(&mut ends[1], &mut batch, waker);
        assert_eq!(polled, Poll::Ready(Inbound::Messages));
        batch.drain().for_each(drop);
        ends[1].quiesce();
        ends[1].set_spin_iterations(0);
        assert_eq!(poll_next(&mut ends[1], &mut batch, waker), Poll::Pending);
        let polled = poll_next(&mut ends[0], &mut batch, waker);
        assert_eq!(polled, Poll::Ready(Inbound::Stopping));
        ends[0].quiesce();
        for end in ends.iter_mut() {
            let polled = poll_next(end, &mut batch, waker);
            assert_eq!(polled, Poll::Ready(Inbound::Stopped));
        }
        assert_eq!(control.exited_count(), 2);
    }

    #[test]
    #[should_panic(expected = "quiesce before")]
    fn quiesce_before_stopping_is_a_bug() {
        let mut ends = Mesh::<u32>::new(2, 4).into_ends();
        ends[0].quiesce();
    }
}
