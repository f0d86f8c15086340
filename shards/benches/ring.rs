//! Ring micro-benchmarks: push+pop on one thread (the raw cost of the two index stores),
//! a mesh send+drain on one thread (adds the wake fence and `parked` check), and a
//! cross-thread round trip through two rings (what a handoff and its answer cost, with
//! both cores spinning, i.e. without any park or wake).

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shards::ring::ring;
use shards::{Batch, CoreId, Mesh, ShardId, Topology};

const SLOTS: usize = 1024;
/// Sent by the benchmark thread to end the echo thread.
const STOP: u64 = u64::MAX;

fn push_pop_one_thread(c: &mut Criterion) {
    let (mut producer, mut consumer) = ring::<u64>(SLOTS);
    let mut i = 0u64;
    c.bench_function("ring/push+pop same thread", |b| {
        b.iter(|| {
            producer.try_push(black_box(i)).unwrap();
            i = i.wrapping_add(1);
            black_box(consumer.try_pop())
        })
    });
}

fn mesh_send_drain_one_thread(c: &mut Criterion) {
    let mut ends = Mesh::<u64>::new(2, SLOTS).into_ends();
    let mut receiver = ends.pop().unwrap();
    let mut sender = ends.pop().unwrap();
    let mut batch = Batch::with_limit(1);
    c.bench_function("mesh/try_send+drain same thread", |b| {
        b.iter(|| {
            sender.try_send(ShardId(1), black_box(7)).unwrap();
            receiver.drain_into(&mut batch);
            black_box(batch.drain().next())
        })
    });
}

/// Pins the calling thread to `core` when the process may use it; benches stay runnable
/// on a machine with one core.
fn pin(core: Option<CoreId>) {
    let Some(CoreId(cpu)) = core else { return };
    // SAFETY: an all-zero cpu_set_t is empty; CPU_SET writes in bounds (cpu < CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn round_trip_cross_thread(c: &mut Criterion) {
    let usable = Topology::detect().unwrap().usable().to_vec();
    let (here, there) = match usable.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    let (mut to_echo, mut from_bench) = ring::<u64>(SLOTS);
    let (mut to_bench, mut from_echo) = ring::<u64>(SLOTS);
    let echo = thread::spawn(move || {
        pin(there);
        loop {
            match from_bench.try_pop() {
                Some(STOP) => return,
                Some(v) => to_bench.try_push(v).unwrap(),
                None => std::hint::spin_loop(),
            }
        }
    });
    pin(here);
    c.bench_function("ring/round trip cross thread", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                to_echo.try_push(i).unwrap();
                while from_echo.try_pop().is_none() {
                    std::hint::spin_loop();
                }
            }
            start.elapsed()
        })
    });
    to_echo.try_push(STOP).unwrap();
    echo.join().unwrap();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = push_pop_one_thread, mesh_send_drain_one_thread, round_trip_cross_thread
}
criterion_main!(benches);
