//! Cross-thread stress of the SPSC ring: millions of items, two threads, small rings so
//! that the full and empty edges are hit constantly.

use std::thread;

use shards::ring::ring;

/// Spins a little, then gives the core away: the test machine may have fewer free cores
/// than the two threads need, and a descheduled peer cannot be waited for by spinning.
fn backoff(waits: &mut u32) {
    *waits += 1;
    if *waits % 64 == 0 {
        thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Pushes `items` sequence numbers through a ring of `slots` slots from one thread to
/// another and checks that every one arrives, once, in order.
fn transfer(items: u64, slots: usize) {
    let (mut producer, mut consumer) = ring::<u64>(slots);
    let sender = thread::spawn(move || {
        let (mut full_hits, mut waits) = (0u64, 0u32);
        for i in 0..items {
            let mut value = i;
            while let Err(back) = producer.try_push(value) {
                value = back;
                full_hits += 1;
                backoff(&mut waits);
            }
        }
        full_hits
    });
    let (mut expected, mut waits) = (0u64, 0u32);
    while expected < items {
        match consumer.try_pop() {
            Some(value) => {
                assert_eq!(value, expected, "out of order or lost");
                expected += 1;
            }
            None => backoff(&mut waits),
        }
    }
    let full_hits = sender.join().unwrap();
    assert_eq!(consumer.try_pop(), None, "an extra item appeared");
    eprintln!("{items} items through {slots} slots, producer saw full {full_hits} times");
}

/// Four million items through a 64-slot ring: order and no loss.
#[test]
fn millions_of_items_arrive_in_order() {
    transfer(4_000_000, 64);
}

/// The smallest ring makes every other push meet a full ring.
#[test]
fn two_slot_ring_under_contention() {
    transfer(500_000, 2);
}

/// Heap values cross threads intact and none leaks or is dropped twice (checked by the
/// allocator and by value).
#[test]
fn boxed_values_cross_intact() {
    const ITEMS: usize = 200_000;
    let (mut producer, mut consumer) = ring::<Box<[u64; 4]>>(16);
    let sender = thread::spawn(move || {
        for i in 0..ITEMS as u64 {
            let mut value = Box::new([i, i + 1, i + 2, i + 3]);
            while let Err(back) = producer.try_push(value) {
                value = back;
                thread::yield_now();
            }
        }
    });
    let (mut received, mut waits) = (0u64, 0u32);
    while received < ITEMS as u64 {
        match consumer.try_pop() {
            Some(value) => {
                assert_eq!(*value, [received, received + 1, received + 2, received + 3]);
                received += 1;
            }
            None => backoff(&mut waits),
        }
    }
    sender.join().unwrap();
}
