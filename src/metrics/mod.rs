//! Per-shard counters, summed at scrape time into Prometheus text (SPEC §9).
//!
//! Each shard owns one `ShardMetrics` (behind an `Arc`, so any shard's `/metrics` handler
//! can read them all) and is the only thread that ever writes it. That single-writer rule
//! is what lets the hot path count with a plain `load` + `store` instead of a locked
//! read-modify-write (`lock xadd` costs ~20 cycles uncontended and far more once a
//! scraping core has pulled the cache line away); see `Counter`.
//!
//! Why not one global set of atomics with `fetch_add`: every shard would write the same
//! cache lines, which is exactly the sharing a thread-per-core design exists to avoid.
//! Why not a metrics crate: the exposition format is a page of text, and the crates'
//! registries allocate and lock on registration and lookup.
//!
//! Scrape consistency: a scrape reads each counter once into a `ShardSnapshot`, so the
//! per-shard lines and the `shard="all"` total of one scrape agree with each other. Reads
//! of different counters are not one atomic snapshot (a decision may be counted in
//! `decisions_total` and not yet in the latency histogram); Prometheus tolerates that.
//! Within a histogram the count is derived from the buckets, so `+Inf` always equals
//! `_count`; `_sum` may lag by the observation in flight.

mod family;
mod render;

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::contract::{ErrorCode, ExecStatus, ExtensionStatus, Reason};

pub use family::{family_names, ShardSnapshot};
pub use render::{
    is_label_name, is_metric_name, push_seconds, render, ExtraKind, ExtraMetric, ALL_SHARDS,
    CONTENT_TYPE, EXTRA_SERIES_MAX,
};

/// A monotonically increasing count with exactly one writer thread.
///
/// `inc`/`add` are `load` then `store`, both `Relaxed`. Sound because only the owning
/// shard writes: no other store can land between the load and the store, so no increment
/// is lost, and the atomic store can never be torn. Readers on other threads see some
/// value the writer stored, and by read-read coherence successive reads of one counter
/// never go backwards. Calling `inc` from two threads at once is a bug that loses counts
/// (it is still memory-safe).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Single writer only (see the type's docs).
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Single writer only (see the type's docs).
    #[inline]
    pub fn add(&self, n: u64) {
        let value = self.0.load(Relaxed);
        self.0.store(value.wrapping_add(n), Relaxed);
    }

    /// Replaces the value with a total counted elsewhere (monotonic there). Single writer.
    #[inline]
    pub fn set(&self, total: u64) {
        self.0.store(total, Relaxed);
    }

    /// Any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (entries in a table, open connections), one writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }

    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    /// Single writer only, as for `Counter`.
    #[inline]
    pub fn inc(&self) {
        self.set(self.get().saturating_add(1));
    }

    /// Single writer only; stops at zero.
    #[inline]
    pub fn dec(&self) {
        self.set(self.get().saturating_sub(1));
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds (inclusive, `le`) of the decision latency buckets, in nanoseconds: 1-2-5
/// steps from 250 ns (an in-shard decision takes ~100–200 ns, a decode-decide-encode round
/// trip ~1.5 µs) to 1 s (a request stuck behind extensions). Above 1 s lands in `+Inf`.
pub const LATENCY_BOUNDS_NS: [u64; 21] = [
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
];
/// Buckets including `+Inf`.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

const _: () = {
    let mut i = 1;
    while i < LATENCY_BOUNDS_NS.len() {
        assert!(LATENCY_BOUNDS_NS[i - 1] < LATENCY_BOUNDS_NS[i]);
        i += 1;
    }
};

/// A fixed-bucket latency histogram with one writer. Buckets hold per-bucket (not
/// cumulative) counts; the total count is their sum, so it can never disagree with them.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS],
    /// Written with `Release` after the bucket, read with `Acquire` before the buckets.
    sum_ns: AtomicU64,
}

/// What a scrape read from a `Histogram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, the last one `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { Counter::new() }; LATENCY_BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one latency. Single writer only. The bucket is counted before the sum is
    /// released, so a reader that acquires the sum first never sees a sum that includes an
    /// observation missing from the buckets (x86: both orderings are plain moves).
    #[inline]
    pub fn observe(&self, ns: u64) {
        let index = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[index].inc();
        let sum = self.sum_ns.load(Relaxed);
        self.sum_ns.store(sum.wrapping_add(ns), Release);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let sum_ns = self.sum_ns.load(Acquire);
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            sum_ns,
        }
    }
}

impl HistogramSnapshot {
    pub const EMPTY: HistogramSnapshot = HistogramSnapshot {
        buckets: [0; LATENCY_BUCKETS],
        sum_ns: 0,
    };

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other` into `self` (the `shard="all"` total).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (total, n) in self.buckets.iter_mut().zip(other.buckets) {
            *total = total.saturating_add(n);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

macro_rules! label_enum {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }
    };
}

label_enum!(
    /// Where a request came in (`shardline_requests_total{transport}`).
    Transport { Http => "http", Https => "https", Nats => "nats" }
);
label_enum!(
    /// Why work was refused before it was done (`shardline_shed_total{cause}`).
    ShedCause {
        /// The ring to the owning shard was full.
        RingFull => "ring_full",
        /// The in-flight budget to the owning shard was spent.
        HandoffBudget => "handoff_budget",
        /// The shard's NATS outbound buffer was full (reply, assignment or usage event),
        /// or too many NATS requests were already being answered asynchronously.
        NatsFull => "nats_full",
        /// The shard is draining for shutdown.
        Draining => "draining",
        /// The owning shard did not answer a handoff within `server.handoff_timeout_ms`.
        HandoffTimeout => "handoff_timeout",
        /// A state protocol message (lease, probe, replica) to a peer shard was dropped:
        /// the ring to the peer had no room beyond what requests and replies may need,
        /// or the shard's protocol outbox was full. The protocol repairs it (an ask is
        /// asked again, a replica resent); no request is lost.
        SyncDropped => "sync_dropped",
    }
);
label_enum!(
    /// What a shard's executor paid the kernel and its peers for
    /// (`shardline_runtime_events_total{event}`), from the runtime's per-thread counters.
    RuntimeEvent {
        /// The executor slept in the kernel: nothing runnable, no I/O ready.
        Park => "park",
        /// An eventfd write this shard made to wake a sleeping peer.
        WakeSent => "wake_sent",
        /// Wakes other threads queued for this shard's tasks.
        WakeReceived => "wake_received",
        /// `io_uring_enter` system calls.
        UringEnter => "uring_enter",
        /// Submission queue entries handed to the kernel.
        Submission => "submission",
        /// Completion queue entries consumed.
        Completion => "completion",
        /// io_uring timeouts armed (preemption timers, a sleep's next timer).
        TimerArmed => "timer_armed",
        /// io_uring cancellations (timers and I/O dropped before they completed).
        Cancel => "cancel",
    }
);
label_enum!(
    /// A circuit breaker's new state (`shardline_breaker_transitions_total{to}`).
    BreakerTransition { Opened => "open", HalfOpened => "half_open", Closed => "closed" }
);

/// The extension outcomes counted, in label order.
pub const EXTENSION_STATUSES: [ExtensionStatus; 4] = [
    ExtensionStatus::Ok,
    ExtensionStatus::Skipped,
    ExtensionStatus::Failed,
    ExtensionStatus::Timeout,
];

fn extension_index(status: ExtensionStatus) -> usize {
    match status {
        ExtensionStatus::Ok => 0,
        ExtensionStatus::Skipped => 1,
        ExtensionStatus::Failed => 2,
        ExtensionStatus::Timeout => 3,
    }
}

const TRANSPORTS: usize = 3;
const SHED_CAUSES: usize = 6;
const BREAKER_TRANSITIONS: usize = 3;
const RUNTIME_EVENTS: usize = 8;
const REASONS: usize = Reason::ALL.len();
const ERROR_CODES: usize = ErrorCode::ALL.len();
const EXEC_STATUSES: usize = ExecStatus::ALL.len();
const EXTENSION_OUTCOMES: usize = EXTENSION_STATUSES.len();

/// One shard's counters. The shard is the only writer; any thread may read.
///
/// Aligned to two cache lines so that two shards' metrics never share one (adjacent-line
/// prefetch pulls pairs of 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    requests: [Counter; TRANSPORTS],
    decisions: [Counter; REASONS],
    errors: [Counter; ERROR_CODES],
    /// Request received → answer encoded, for every answer (decision or error).
    pub decision_latency: Histogram,
    /// Requests this shard handed to their owning shard.
    pub handoffs_out: Counter,
    /// Requests other shards handed to this one.
    pub handoffs_in: Counter,
    sheds: [Counter; SHED_CAUSES],
    results: [Counter; EXEC_STATUSES],
    shadow_results: [Counter; EXEC_STATUSES],
    /// ExecResults ignored because their assignment id was already seen.
    pub results_duplicate: Counter,
    /// ExecResults that failed validation.
    pub results_rejected: Counter,
    /// ExecAssignments handed to the NATS bridge for publishing.
    pub assignments: Counter,
    /// ExecAssignmentAcks received.
    pub assignment_acks: Counter,
    /// UsageEvents published.
    pub usage_events: Counter,
    /// Decide messages over NATS without a reply subject (not answerable).
    pub nats_no_reply: Counter,
    /// Per NATS endpoint (`NatsEndpoint`): messages received (results and admin; decide
    /// messages are `requests{transport="nats"}`), errors (error answers, status ≥ 400, and
    /// results refused without a reply subject to tell), and the nanoseconds from receipt
    /// to answer (results and admin that ask for one; decisions are timed by
    /// `decision_latency`). What the NATS service API's STATS reports.
    pub nats_endpoints: [NatsEndpointCounters; NATS_ENDPOINTS],
    /// Decide requests answered from the idempotency cache.
    pub idempotency_hits: Counter,
    breaker_transitions: [Counter; BREAKER_TRANSITIONS],
    extension_calls: [Counter; EXTENSION_OUTCOMES],
    /// Generation of the routing table this shard currently reads.
    pub table_generation: Gauge,
    /// Live entries in this shard's sticky-session table.
    pub sticky_entries: Gauge,
    /// Budget reservations waiting for their results, and those settled without one
    /// or results that matched none (`decide::budget`).
    pub budget_reservations: Gauge,
    pub budget_expired: Counter,
    pub budget_unmatched: Counter,
    /// Bytes charged to the shard's idempotency cache (bounded by
    /// `limits.idempotency_bytes_per_shard_max`).
    pub idempotency_bytes: Gauge,
    /// Decided answers not remembered: larger than their tenant's share of the cache.
    pub idempotency_unstored: Counter,
    /// Bytes charged to the shard's ExecResult de-duplication set (bounded by
    /// `limits.results_dedup_bytes_per_shard_max`).
    pub results_dedup_bytes: Gauge,
    /// The executor's own counters, copied from its thread on every keep-alive beat.
    runtime: [Counter; RUNTIME_EVENTS],
}

const _: () = assert!(Transport::ALL.len() == TRANSPORTS);
const _: () = assert!(ShedCause::ALL.len() == SHED_CAUSES);
const _: () = assert!(BreakerTransition::ALL.len() == BREAKER_TRANSITIONS);
const _: () = assert!(RuntimeEvent::ALL.len() == RUNTIME_EVENTS);

impl ShardMetrics {
    pub const fn new() -> ShardMetrics {
        ShardMetrics {
            requests: [const { Counter::new() }; TRANSPORTS],
            decisions: [const { Counter::new() }; REASONS],
            errors: [const { Counter::new() }; ERROR_CODES],
            decision_latency: Histogram::new(),
            handoffs_out: Counter::new(),
            handoffs_in: Counter::new(),
            sheds: [const { Counter::new() }; SHED_CAUSES],
            results: [const { Counter::new() }; EXEC_STATUSES],
            shadow_results: [const { Counter::new() }; EXEC_STATUSES],
            results_duplicate: Counter::new(),
            results_rejected: Counter::new(),
            assignments: Counter::new(),
            assignment_acks: Counter::new(),
            usage_events: Counter::new(),
            nats_no_reply: Counter::new(),
            nats_endpoints: [const { NatsEndpointCounters::new() }; NATS_ENDPOINTS],
            idempotency_hits: Counter::new(),
            breaker_transitions: [const { Counter::new() }; BREAKER_TRANSITIONS],
            extension_calls: [const { Counter::new() }; EXTENSION_OUTCOMES],
            table_generation: Gauge::new(),
            sticky_entries: Gauge::new(),
            budget_reservations: Gauge::new(),
            budget_expired: Counter::new(),
            budget_unmatched: Counter::new(),
            idempotency_bytes: Gauge::new(),
            idempotency_unstored: Counter::new(),
            results_dedup_bytes: Gauge::new(),
            runtime: [const { Counter::new() }; RUNTIME_EVENTS],
        }
    }

    pub fn request(&self, transport: Transport) -> &Counter {
        &self.requests[transport as usize]
    }

    /// Decisions answered, by reason. `Reason` is a fieldless enum whose declaration order
    /// is `Reason::ALL`'s (checked by a test), so the cast is the index.
    pub fn decision(&self, reason: Reason) -> &Counter {
        &self.decisions[reason as usize]
    }

    /// Error answers, by code (same indexing rule as `decision`).
    pub fn error(&self, code: ErrorCode) -> &Counter {
        &self.errors[code as usize]
    }

    pub fn shed(&self, cause: ShedCause) -> &Counter {
        &self.sheds[cause as usize]
    }

    /// ExecResults applied, by status.
    pub fn result(&self, status: ExecStatus) -> &Counter {
        &self.results[status as usize]
    }

    /// Shadow calls' ExecResults (applied to nothing), by status.
    pub fn shadow_result(&self, status: ExecStatus) -> &Counter {
        &self.shadow_results[status as usize]
    }

    pub fn breaker_transition(&self, to: BreakerTransition) -> &Counter {
        &self.breaker_transitions[to as usize]
    }

    pub fn runtime(&self, event: RuntimeEvent) -> &Counter {
        &self.runtime[event as usize]
    }

    pub fn extension_call(&self, status: ExtensionStatus) -> &Counter {
        &self.extension_calls[extension_index(status)]
    }
}

#[cfg(test)]
mod tests;

/// The endpoints the router serves over NATS, as the service API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsEndpoint {
    Decide,
    Results,
    Admin,
}

pub const NATS_ENDPOINTS: usize = 3;

impl NatsEndpoint {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One NATS endpoint's counters on one shard.
#[derive(Debug)]
pub struct NatsEndpointCounters {
    pub received: Counter,
    pub errors: Counter,
    pub processing_ns: Counter,
}

impl NatsEndpointCounters {
    pub const fn new() -> Self {
        NatsEndpointCounters {
            received: Counter::new(),
            errors: Counter::new(),
            processing_ns: Counter::new(),
        }
    }
}

impl Default for NatsEndpointCounters {
    fn default() -> Self {
        Self::new()
    }
}
