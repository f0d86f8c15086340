//! When to call a stage again (SPEC §7: "only timeouts are retried"), without I/O: the
//! transport makes the call, arms its own timer with `timeout_ms`, and on a timeout asks
//! `next_attempt`. A reply of any kind, even an error, ends the plan: an extension that
//! answered "failed" would answer the same again, while a timeout may have been a lost
//! message or a busy responder.
//!
//! Bounded by construction: at most `1 + EXTENSION_RETRIES_MAX` calls per stage.

use super::registry::{Resolved, EXTENSION_RETRIES_MAX};

const NS_PER_MS: u64 = 1_000_000;

/// The attempts of one stage call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    timeout_ms: u32,
    retries: u32,
    /// 1-based number of the attempt in flight.
    attempt: u32,
}

impl RetryPlan {
    pub fn new(resolved: &Resolved<'_>) -> Self {
        Self::with(resolved.timeout_ms, resolved.retry)
    }

    /// A plan of `1 + retries` attempts of `timeout_ms` each; `retries` is capped at
    /// `EXTENSION_RETRIES_MAX`.
    pub fn with(timeout_ms: u32, retries: u32) -> Self {
        assert!(timeout_ms > 0, "a stage timeout of 0 ms");
        RetryPlan {
            timeout_ms,
            retries: retries.min(EXTENSION_RETRIES_MAX),
            attempt: 1,
        }
    }

    /// Each attempt's timeout.
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    /// When the attempt started at `now_ns` times out.
    pub fn deadline_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_add(u64::from(self.timeout_ms) * NS_PER_MS)
    }

    /// The attempt in flight, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Retries made so far (for `ExtensionBreakers::count_retries`).
    pub fn retries_used(&self) -> u32 {
        self.attempt - 1
    }

    /// After a timeout: the number of the next attempt to make, or `None` when the plan
    /// is spent and the stage's outcome is `Timeout`.
    pub fn next_attempt(&mut self) -> Option<u32> {
        if self.attempt > self.retries {
            return None;
        }
        self.attempt += 1;
        Some(self.attempt)
    }

    /// The worst case: every attempt timing out.
    pub fn budget_ms(&self) -> u64 {
        u64::from(self.timeout_ms) * (1 + u64::from(self.retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `retry: 2` makes three attempts in all, then reports the plan spent.
    #[test]
    fn retries_after_timeouts_then_stops() {
        let mut plan = RetryPlan::with(100, 2);
        assert_eq!((plan.attempt(), plan.retries_used()), (1, 0));
        assert_eq!(plan.deadline_ns(5), 5 + 100 * NS_PER_MS);
        assert_eq!(plan.next_attempt(), Some(2));
        assert_eq!(plan.next_attempt(), Some(3));
        assert_eq!(plan.next_attempt(), None);
        assert_eq!(plan.next_attempt(), None);
        assert_eq!(plan.retries_used(), 2);
        assert_eq!(plan.budget_ms(), 300);
    }

    /// `retry: 0` is a single attempt; a large retry is capped.
    #[test]
    fn no_retry_and_cap() {
        let mut plan = RetryPlan::with(50, 0);
        assert_eq!(plan.next_attempt(), None);
        let mut plan = RetryPlan::with(50, 10);
        let made = std::iter::from_fn(|| plan.next_attempt()).count() as u32;
        assert_eq!(made, EXTENSION_RETRIES_MAX);
        assert_eq!(
            plan.budget_ms(),
            50 * (1 + u64::from(EXTENSION_RETRIES_MAX))
        );
    }
}
