//! The open-loop schedule: when each request is *meant* to be sent.
//!
//! Request `g` of the whole run is due `g / rate` seconds after the start; client thread
//! `t` of `T` owns the requests `g ≡ t (mod T)`, so the threads interleave evenly and
//! together keep the global rate. Times are computed from the index, never by adding a
//! period to the previous time, so they do not drift, and a late send does not move the
//! next one: when a thread falls behind it sends at once and keeps the schedule
//! (latency is measured from these intended times — coordinated-omission correction).
//!
//! Why rates in milli-requests per second: intended times then come out of integer
//! arithmetic (`g * 10^12 / rate_mrps` nanoseconds), exact for any run length.
//!
//! `wait_step` is the pacing decision, kept pure so it can be tested: sleep until
//! `spin` before the deadline (precise sleeps; the worker lowers its timer slack), then
//! busy-poll the rest, so sends are not quantised to the sleep granularity.

use std::time::Duration;

/// The highest open-loop rate accepted, requests per second over all threads.
pub const RATE_RPS_MAX: f64 = 10_000_000.0;
/// The lowest: one request every 1,000 seconds.
pub const RATE_RPS_MIN: f64 = 0.001;

const NS_PER_S_TIMES_1000: u128 = 1_000_000_000_000;

/// One client thread's share of a fixed-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The global rate in milli-requests per second (≥ 1).
    rate_mrps: u64,
    thread: u64,
    threads: u64,
}

impl Schedule {
    /// Thread `thread` of `threads` at `rate_rps` over all threads.
    pub fn new(rate_rps: f64, thread: usize, threads: usize) -> Schedule {
        assert!(
            (RATE_RPS_MIN..=RATE_RPS_MAX).contains(&rate_rps),
            "{rate_rps}"
        );
        assert!(thread < threads, "thread {thread} of {threads}");
        Schedule {
            rate_mrps: (rate_rps * 1000.0).round().max(1.0) as u64,
            thread: thread as u64,
            threads: threads as u64,
        }
    }

    /// The intended send time of this thread's `j`-th request, in ns after the start.
    pub fn intended_ns(&self, j: u64) -> u64 {
        let global = u128::from(j) * u128::from(self.threads) + u128::from(self.thread);
        let ns = global * NS_PER_S_TIMES_1000 / u128::from(self.rate_mrps);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The first of this thread's requests whose intended time is at or after `ns`.
    pub fn first_at_or_after(&self, ns: u64) -> u64 {
        // A first guess from the inverse formula, then corrected against `intended_ns`
        // itself, so that rounding can never make the two disagree.
        let rate = u128::from(self.rate_mrps);
        let g = (u128::from(ns) * rate).div_ceil(NS_PER_S_TIMES_1000);
        let g = u64::try_from(g).unwrap_or(u64::MAX);
        let mut j = g.saturating_sub(self.thread).div_ceil(self.threads);
        while j > 0 && self.intended_ns(j - 1) >= ns {
            j -= 1;
        }
        while self.intended_ns(j) < ns {
            j += 1;
        }
        j
    }

    /// This thread's requests intended in `[from_ns, to_ns)`.
    pub fn planned(&self, from_ns: u64, to_ns: u64) -> u64 {
        self.first_at_or_after(to_ns) - self.first_at_or_after(from_ns)
    }
}

/// What a pacing thread does next, `now_ns` against the next send's `deadline_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStep {
    /// The deadline has come: send.
    Due,
    /// Sleep (waiting for I/O) this long, then decide again.
    Sleep(Duration),
    /// Inside the spin window: poll without sleeping, then decide again.
    Spin,
}

/// Sleep until `spin_ns` before the deadline, then busy-poll; `spin_ns = 0` sleeps all the
/// way (lower CPU use, sends as late as the kernel's wake-up).
pub fn wait_step(now_ns: u64, deadline_ns: u64, spin_ns: u64) -> WaitStep {
    if now_ns >= deadline_ns {
        return WaitStep::Due;
    }
    let remaining = deadline_ns - now_ns;
    if remaining > spin_ns {
        WaitStep::Sleep(Duration::from_nanos(remaining - spin_ns))
    } else {
        WaitStep::Spin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread at 2,000/s: a request every 500 µs, from 0, with no drift at a billion.
    #[test]
    fn intended_times_follow_the_rate() {
        let s = Schedule::new(2000.0, 0, 1);
        assert_eq!(s.intended_ns(0), 0);
        assert_eq!(s.intended_ns(1), 500_000);
        assert_eq!(s.intended_ns(7), 3_500_000);
        assert_eq!(s.intended_ns(1_000_000_000), 500_000_000_000_000);
    }

    /// Threads interleave: together they are the global schedule, each time exactly once.
    #[test]
    fn threads_interleave_into_the_global_schedule() {
        let threads = 3;
        let global = Schedule::new(3000.0, 0, 1);
        let mut merged: Vec<u64> = (0..threads)
            .flat_map(|t| {
                let s = Schedule::new(3000.0, t, threads);
                (0..100).map(move |j| s.intended_ns(j))
            })
            .collect();
        merged.sort_unstable();
        let expected: Vec<u64> = (0..300).map(|g| global.intended_ns(g)).collect();
        assert_eq!(merged, expected);
    }

    /// A fractional rate keeps sub-nanosecond periods exact over the long run.
    #[test]
    fn fractional_rates_do_not_drift() {
        let s = Schedule::new(3.0, 0, 1);
        assert_eq!(s.intended_ns(1), 333_333_333);
        assert_eq!(s.intended_ns(3), 1_000_000_000);
        assert_eq!(s.intended_ns(3_000), 1_000_000_000_000);
    }

    /// `first_at_or_after` agrees with a linear search, for several threads and rates.
    #[test]
    fn first_at_or_after_matches_brute_force() {
        for (rate, threads) in [(2000.0, 1), (7.0, 3), (20_000.0, 4), (999.9, 2)] {
            for t in 0..threads {
                let s = Schedule::new(rate, t, threads);
                for ns in [
                    0,
                    1,
                    499_999,
                    500_000,
                    1_234_567,
                    999_999_999,
                    2_000_000_000,
                ] {
                    let brute = (0..).find(|&j| s.intended_ns(j) >= ns).unwrap();
                    assert_eq!(s.first_at_or_after(ns), brute, "{rate} {t}/{threads} {ns}");
                }
            }
        }
    }

    /// A 2 s window at 2,000/s over 4 threads plans 4,000 requests in all.
    #[test]
    fn planned_counts_the_window() {
        let (warmup, end) = (500_000_000, 2_500_000_000);
        let total: u64 = (0..4)
            .map(|t| Schedule::new(2000.0, t, 4).planned(warmup, end))
            .sum();
        assert_eq!(total, 4000);
    }

    /// Far from the deadline: sleep to the spin window; inside it: spin; past it: send.
    #[test]
    fn waits_sleep_then_spin() {
        assert_eq!(
            wait_step(0, 1_000_000, 50_000),
            WaitStep::Sleep(Duration::from_nanos(950_000))
        );
        assert_eq!(wait_step(960_000, 1_000_000, 50_000), WaitStep::Spin);
        assert_eq!(wait_step(1_000_000, 1_000_000, 50_000), WaitStep::Due);
        assert_eq!(wait_step(2_000_000, 1_000_000, 50_000), WaitStep::Due);
        assert_eq!(
            wait_step(999_000, 1_000_000, 0),
            WaitStep::Sleep(Duration::from_nanos(1_000))
        );
    }
}
