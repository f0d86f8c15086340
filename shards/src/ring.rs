//! A bounded single-producer single-consumer ring: the only way shards exchange data.
//!
//! Layout: a power-of-two array of slots and two monotonically increasing indices,
//! `tail` (next slot to write, stored only by the producer) and `head` (next slot to read,
//! stored only by the consumer), each on its own cache line so that the two cores do not
//! invalidate each other's line on every operation. Each side also keeps a private copy of
//! the other side's index and refreshes it only when the ring looks full (producer) or empty
//! (consumer), so in steady state a push or pop touches one shared line, not two.
//!
//! Ordering: the producer writes the slot, then stores `tail` with `Release`; the consumer
//! loads `tail` with `Acquire` before reading the slot. Symmetrically, the consumer moves
//! the value out, then stores `head` with `Release`; the producer loads `head` with
//! `Acquire` before overwriting the slot. No read-modify-write, no lock, no allocation.
//!
//! Single producer and single consumer are enforced by the type system: the two handles
//! are not `Clone` and mutate through `&mut self`.
//!
//! Why write it ourselves:
//! - `glommio::channels::shared_channel` is built for executor-to-executor use: both ends
//!   must `connect().await` on a glommio executor (our NATS bridge threads are plain threads),
//!   and every send notifies the peer executor (an atomic compare-exchange on a line shared
//!   with the peer and an `eventfd` write whenever the peer sleeps). We want the cost of a
//!   push to be a store, and to pay for a wake only when the consumer actually parked
//!   (see `mesh`).
//! - `crossbeam::ArrayQueue` is MPMC: a compare-exchange per operation that SPSC does not
//!   need. `rtrb` is close to this design, but it is ~100 lines we want to own on the hot
//!   path, next to the park/wake protocol that depends on its exact orderings, and it would be
//!   a dependency for that alone.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Most slots one ring may have. With `SHARDS_MAX` shards the mesh has ~65 000 rings, so
/// the product is what an operator must watch; this bounds a single ring.
pub const RING_SLOTS_MAX: usize = 1 << 16;
/// Fewest slots: one slot would make every push wait for a pop.
pub const RING_SLOTS_MIN: usize = 2;
/// A default that absorbs a burst of a millisecond at a million handoffs a second.
pub const RING_SLOTS_DEFAULT: usize = 1024;

const _: () = assert!(RING_SLOTS_MAX.is_power_of_two());
const _: () = assert!(RING_SLOTS_MIN.is_power_of_two());
const _: () = assert!(RING_SLOTS_DEFAULT.is_power_of_two());
const _: () = assert!(RING_SLOTS_MIN <= RING_SLOTS_DEFAULT && RING_SLOTS_DEFAULT <= RING_SLOTS_MAX);

/// Pads and aligns a value to its own cache line pair. x86_64's spatial prefetcher pulls
/// lines in aligned pairs and Apple/Neoverse cores have 128-byte lines, hence 128 there (as
/// crossbeam does); 64 elsewhere.
#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    repr(align(64))
)]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared<T> {
    /// Next slot the consumer reads. Stored only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Stored only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Slots `head..tail` (mod len) are initialised; the others are not.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `slots.len() - 1`, for index masking.
    mask: usize,
}

// SAFETY: the slots are accessed from two threads, but a slot is only ever touched by the
// side that currently owns it (producer for `tail..head+len`, consumer for `head..tail`),
// with ownership handed over through the Release/Acquire index stores. Values of `T` move
// between threads, so `T: Send` is required; no `&T` is ever shared, so `T: Sync` is not.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the struct owns `T`s and moves them across threads only if `T: Send`.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn len(&self) -> usize {
        // Head first: it only grows, so a later tail can only make the result larger, never
        // negative; clamp the rare over-count from a concurrent pop.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.slots.len())
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        let mut index = head;
        while index != tail {
            let slot = &mut self.slots[index & self.mask];
            // SAFETY: `&mut self` means both handles are gone; slots `head..tail` hold
            // initialised values that nobody else will read or drop.
            unsafe { slot.get_mut().assume_init_drop() };
            index = index.wrapping_add(1);
        }
    }
}

/// The writing end of a ring. `Send` (if `T: Send`), not `Clone`.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Authoritative tail (the atomic mirrors it).
    tail: usize,
    /// Last head seen; refreshed only when the ring looks full.
    head_seen: usize,
}

/// The reading end of a ring. `Send` (if `T: Send`), not `Clone`.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Authoritative head (the atomic mirrors it).
    head: usize,
    /// Last tail seen; refreshed only when the ring looks empty.
    tail_seen: usize,
}

/// Makes a ring of `slots` slots and returns its two ends.
///
/// # Panics
/// If `slots` is not a power of two within `RING_SLOTS_MIN..=RING_SLOTS_MAX`: ring sizes
/// come from validated configuration, so a bad one here is a bug.
pub fn ring<T>(slots: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        slots.is_power_of_two() && (RING_SLOTS_MIN..=RING_SLOTS_MAX).contains(&slots),
        "ring slots {slots} must be a power of two in {RING_SLOTS_MIN}..={RING_SLOTS_MAX}"
    );
    let slots_vec: Box<[_]> = (0..slots)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots: slots_vec,
        mask: slots - 1,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        head_seen: 0,
    };
    (
        producer,
        Consumer {
            shared,
            head: 0,
            tail_seen: 0,
        },
    )
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back when the ring is full.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        let capacity = self.shared.slots.len();
        if self.tail.wrapping_sub(self.head_seen) == capacity {
            self.head_seen = self.shared.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_seen) == capacity {
                return Err(value);
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: `tail - head_seen < capacity`, so this slot is outside `head..tail`: the
        // consumer has moved its previous value out (its Release store of `head`, read by
        // our Acquire load, orders that before this write) and will not read it until we
        // publish `tail` below. Only this producer writes slots.
        unsafe { (*slot.get()).write(value) };
        self.tail = self.tail.wrapping_add(1);
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Items in the ring right now (approximate while the consumer runs). For metrics.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the ring held no item at the instant of the check.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }
}

impl<T> Consumer<T> {
    /// Removes the oldest item, or returns `None` when the ring is empty.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        if self.head == self.tail_seen {
            self.tail_seen = self.shared.tail.load(Ordering::Acquire);
            if self.head == self.tail_seen {
                return None;
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: `head != tail_seen`, so this slot is in `head..tail`: the producer wrote it
        // before its Release store of `tail`, which our Acquire load observed. Only this
        // consumer reads slots, and it reads each initialised slot exactly once.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Whether an item is waiting, reading the producer's index afresh (the park/wake
    /// protocol calls this after its fence; a cached answer would defeat the fence).
    #[inline]
    pub fn has_items(&mut self) -> bool {
        self.tail_seen = self.shared.tail.load(Ordering::Acquire);
        self.tail_seen != self.head
    }

    /// Items in the ring right now (approximate while the producer runs). For metrics.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the ring held no item at the instant of the check.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn empty_ring_pops_nothing() {
        let (p, mut c) = ring::<u32>(4);
        assert_eq!(c.try_pop(), None);
        assert!(c.is_empty() && p.is_empty());
        assert!(!c.has_items());
    }

    #[test]
    fn full_ring_hands_the_value_back() {
        let (mut p, mut c) = ring::<String>(2);
        p.try_push("a".into()).unwrap();
        p.try_push("b".into()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.try_push("c".into()), Err("c".to_string()));
        assert_eq!(c.try_pop().as_deref(), Some("a"));
        p.try_push("c".into()).unwrap();
        assert_eq!(c.try_pop().as_deref(), Some("b"));
        assert_eq!(c.try_pop().as_deref(), Some("c"));
        assert_eq!(c.try_pop(), None);
    }

    /// Indices run far past the slot count; order and count survive every wrap.
    #[test]
    fn wraps_around_many_times_in_order() {
        let (mut p, mut c) = ring::<usize>(4);
        let mut next_out = 0;
        for round in 0..1000 {
            let burst = 1 + round % 4;
            for k in 0..burst {
                p.try_push(round * 10 + k).unwrap();
            }
            assert_eq!(c.len(), burst);
            for k in 0..burst {
                assert_eq!(c.try_pop(), Some(round * 10 + k));
                next_out += 1;
            }
        }
        assert_eq!(next_out, (0..1000).map(|r| 1 + r % 4).sum::<usize>());
    }

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Items still queued when both ends are gone are dropped exactly once.
    #[test]
    fn drop_drops_remaining_items_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = ring::<Counted>(8);
        for _ in 0..5 {
            p.try_push(Counted(Arc::clone(&drops)))
                .map_err(|_| ())
                .unwrap();
        }
        drop(c.try_pop());
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(p);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "ring still owned by the consumer"
        );
        drop(c);
        assert_eq!(drops.load(Ordering::Relaxed), 5);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn non_power_of_two_is_a_bug() {
        let _ = ring::<u8>(3);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn beyond_max_is_a_bug() {
        let _ = ring::<u8>(RING_SLOTS_MAX * 2);
    }

    /// Small enough for `cargo miri test`: two threads, a tiny ring, every item in order.
    #[test]
    fn small_cross_thread_transfer() {
        const ITEMS: usize = 200;
        let (mut p, mut c) = ring::<Box<usize>>(2);
        let producer = std::thread::spawn(move || {
            for i in 0..ITEMS {
                let mut item = Box::new(i);
                while let Err(back) = p.try_push(item) {
                    item = back;
                    std::thread::yield_now();
                }
            }
        });
        let mut expected = 0;
        while expected < ITEMS {
            match c.try_pop() {
                Some(v) => {
                    assert_eq!(*v, expected);
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn cache_padding_separates_indices() {
        assert!(std::mem::align_of::<CachePadded<AtomicUsize>>() >= 64);
        let (p, _c) = ring::<u8>(2);
        let head = &p.shared.head as *const _ as usize;
        let tail = &p.shared.tail as *const _ as usize;
        assert!(head.abs_diff(tail) >= 64);
    }
}
