//! Shardline patch: per-thread runtime counters.
//!
//! What an executor thread paid the kernel and its peers for: parks, wakes, io_uring
//! entries and their submissions and completions, and the io_uring timeouts armed and
//! cancelled. Plain thread-local cells, so counting costs an add and no atomic; a reader
//! on the executor's own thread takes a [`snapshot`]. Wakes are counted on the thread that
//! pays for them: `wakes_sent` on the waker's thread (an `eventfd` write), the
//! `foreign_wakes_received` on the woken executor's thread.

use std::cell::Cell;

/// A copy of the calling thread's counters, each monotonic since the thread started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Times the executor went to sleep in the kernel (nothing runnable, no I/O ready).
    pub parks: u64,
    /// `eventfd` writes this thread made to wake a sleeping executor.
    pub wakes_sent: u64,
    /// Wakers queued for this thread's executor by other threads, and run here.
    pub foreign_wakes_received: u64,
    /// `io_uring_enter` system calls.
    pub uring_enters: u64,
    /// Submission queue entries handed to the kernel.
    pub sqes_submitted: u64,
    /// Completion queue entries consumed.
    pub cqes_completed: u64,
    /// io_uring timeouts armed (preemption timers, and the sleep's user-timer deadline).
    pub timers_armed: u64,
    /// io_uring cancellations queued (timers and I/O dropped before completion).
    pub cancels: u64,
}

#[derive(Default)]
struct Cells {
    parks: Cell<u64>,
    wakes_sent: Cell<u64>,
    foreign_wakes_received: Cell<u64>,
    uring_enters: Cell<u64>,
    sqes_submitted: Cell<u64>,
    cqes_completed: Cell<u64>,
    timers_armed: Cell<u64>,
    cancels: Cell<u64>,
}

thread_local! {
    static CELLS: Cells = Cells::default();
}

macro_rules! counter {
    ($name:ident) => {
        #[inline]
        pub(crate) fn $name(n: u64) {
            CELLS.with(|c| c.$name.set(c.$name.get().wrapping_add(n)));
        }
    };
}

counter!(parks);
counter!(wakes_sent);
counter!(foreign_wakes_received);
counter!(uring_enters);
counter!(sqes_submitted);
counter!(cqes_completed);
counter!(timers_armed);
counter!(cancels);

/// The calling thread's counters.
pub fn snapshot() -> RuntimeCounters {
    CELLS.with(|c| RuntimeCounters {
        parks: c.parks.get(),
        wakes_sent: c.wakes_sent.get(),
        foreign_wakes_received: c.foreign_wakes_received.get(),
        uring_enters: c.uring_enters.get(),
        sqes_submitted: c.sqes_submitted.get(),
        cqes_completed: c.cqes_completed.get(),
        timers_armed: c.timers_armed.get(),
        cancels: c.cancels.get(),
    })
}
