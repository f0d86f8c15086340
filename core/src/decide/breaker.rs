//! The circuit breaker of SPEC §5, one per (policy, provider) on each shard.
//!
//! closed → open on `failure_threshold` consecutive failures, or on an error rate
//! ≥ `error_rate_threshold` over the window once `error_rate_min_calls` results are in it;
//! open → half-open after `timeout_ms` (lazily: checked when the breaker is next read);
//! half-open admits `half_open_max_calls` probes; `success_threshold` successes close it,
//! any failure re-opens it.
//!
//! A half-open breaker whose probes were all handed out but never reported on would stay
//! shut forever (a gateway that does not post results); after another `timeout_ms` it
//! admits a fresh round of probes instead.
//!
//! Why per policy and not per tenant: each policy carries its own thresholds. A result for
//! (tenant, provider) is fed to every policy of the tenant that names the provider, so they
//! all see the same history and differ only in their thresholds.

use crate::policy::BreakerConfig;

const NS_PER_MS: u64 = 1_000_000;
/// The error-rate window is kept as this many buckets, sliding one bucket at a time.
pub const WINDOW_BUCKETS_MAX: usize = 10;

/// How a provider stands for the candidate step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Closed,
    /// Half-open with probe quota left: admitted, and choosing it spends a probe.
    Probe,
    /// Open, or half-open with its probes spent.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until_ns: u64,
    },
    HalfOpen {
        admitted: u32,
        successes: u32,
        since_ns: u64,
    },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// A state change caused by a result, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WindowBucket {
    epoch: u64,
    ok: u32,
    err: u32,
}

/// Success/failure counts over the last `error_rate_window_ms`, in fixed buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ErrorWindow {
    buckets: [WindowBucket; WINDOW_BUCKETS_MAX],
}

impl ErrorWindow {
    fn bucket_ns(cfg: &BreakerConfig) -> u64 {
        (cfg.error_rate_window_ms * NS_PER_MS / WINDOW_BUCKETS_MAX as u64).max(1)
    }

    fn add(&mut self, cfg: &BreakerConfig, now_ns: u64, outcome: Outcome) {
        // Epochs start at 1 so that a zeroed bucket never counts as current.
        let epoch = now_ns / Self::bucket_ns(cfg) + 1;
        let b = &mut self.buckets[(epoch % WINDOW_BUCKETS_MAX as u64) as usize];
        if b.epoch != epoch {
            *b = WindowBucket {
                epoch,
                ok: 0,
                err: 0,
            };
        }
        match outcome {
            Outcome::Success => b.ok = b.ok.saturating_add(1),
            Outcome::Failure => b.err = b.err.saturating_add(1),
        }
    }

    /// (results, failures) in the buckets still inside the window.
    fn totals(&self, cfg: &BreakerConfig, now_ns: u64) -> (u64, u64) {
        let epoch = now_ns / Self::bucket_ns(cfg) + 1;
        let oldest = epoch.saturating_sub(WINDOW_BUCKETS_MAX as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
            .fold((0, 0), |(n, e), b| {
                (n + u64::from(b.ok) + u64::from(b.err), e + u64::from(b.err))
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    window: ErrorWindow,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            window: ErrorWindow::default(),
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Takes the owner's state of this circuit (a replica on another shard). The
    /// failure counts stay the owner's: replicas never record results.
    pub fn replicate(&mut self, state: BreakerState) {
        *self = Breaker {
            state,
            ..Breaker::default()
        };
    }

    /// Read-only: how the breaker stands at `now_ns`, applying the open → half-open timeout
    /// without recording it.
    pub fn availability(&self, cfg: &BreakerConfig, now_ns: u64) -> Availability {
        match self.state {
            BreakerState::Closed => Availability::Closed,
            BreakerState::Open { until_ns } if now_ns >= until_ns => Availability::Probe,
            BreakerState::Open { .. } => Availability::Open,
            BreakerState::HalfOpen {
                admitted, since_ns, ..
            } => {
                let stale = now_ns >= since_ns.saturating_add(cfg.timeout_ms * NS_PER_MS);
                if admitted < cfg.half_open_max_calls || stale {
                    Availability::Probe
                } else {
                    Availability::Open
                }
            }
        }
    }

    /// The provider was chosen: a half-open breaker spends one probe. Returns the
    /// transition applied on the way (an elapsed open circuit becoming half-open).
    pub fn on_selected(&mut self, cfg: &BreakerConfig, now_ns: u64) -> Option<Transition> {
        let lazily = self.advance(cfg, now_ns);
        if let BreakerState::HalfOpen { admitted, .. } = &mut self.state {
            *admitted = admitted.saturating_add(1);
        }
        lazily
    }

    /// Feeds one result; returns the transition it caused, if any.
    pub fn record(
        &mut self,
        cfg: &BreakerConfig,
        outcome: Outcome,
        now_ns: u64,
    ) -> Option<Transition> {
        let lazily = self.advance(cfg, now_ns);
        let caused = match self.state {
            BreakerState::Closed => self.record_closed(cfg, outcome, now_ns),
            // A late result from before the circuit opened changes nothing.
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => self.record_half_open(cfg, outcome, now_ns),
        };
        caused.or(lazily)
    }

    fn record_closed(
        &mut self,
        cfg: &BreakerConfig,
        outcome: Outcome,
        now_ns: u64,
    ) -> Option<Transition> {
        self.window.add(cfg, now_ns, outcome);
        match outcome {
            Outcome::Success => self.consecutive_failures = 0,
            Outcome::Failure => self.consecutive_failures += 1,
        }
        let (calls, failures) = self.window.totals(cfg, now_ns);
        let by_count = self.consecutive_failures >= cfg.failure_threshold;
        let by_rate = calls >= u64::from(cfg.error_rate_min_calls)
            && failures as f64 >= cfg.error_rate_threshold * calls as f64;
        (by_count || by_rate).then(|| self.open(cfg, now_ns))
    }

    fn record_half_open(
        &mut self,
        cfg: &BreakerConfig,
        outcome: Outcome,
        now_ns: u64,
    ) -> Option<Transition> {
        let BreakerState::HalfOpen { successes, .. } = &mut self.state else {
            unreachable!("record_half_open called in state {:?}", self.state);
        };
        match outcome {
            Outcome::Failure => Some(self.open(cfg, now_ns)),
            Outcome::Success => {
                *successes += 1;
                if *successes >= cfg.success_threshold {
                    *self = Breaker::default();
                    Some(Transition::Closed)
                } else {
                    None
                }
            }
        }
    }

    fn open(&mut self, cfg: &BreakerConfig, now_ns: u64) -> Transition {
        self.state = BreakerState::Open {
            until_ns: now_ns + cfg.timeout_ms * NS_PER_MS,
        };
        self.consecutive_failures = 0;
        self.window = ErrorWindow::default();
        Transition::Opened
    }

    /// Applies the timeouts: open → half-open, and a stale half-open round → a fresh one.
    fn advance(&mut self, cfg: &BreakerConfig, now_ns: u64) -> Option<Transition> {
        let timeout_ns = cfg.timeout_ms * NS_PER_MS;
        match self.state {
            BreakerState::Open { until_ns } if now_ns >= until_ns => {
                self.state = BreakerState::HalfOpen {
                    admitted: 0,
                    successes: 0,
                    since_ns: now_ns,
                };
                Some(Transition::HalfOpened)
            }
            BreakerState::HalfOpen {
                admitted,
                successes,
                since_ns,
            } if admitted >= cfg.half_open_max_calls
                && now_ns >= since_ns.saturating_add(timeout_ns) =>
            {
                self.state = BreakerState::HalfOpen {
                    admitted: 0,
                    successes,
                    since_ns: now_ns,
                };
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            success_threshold: 2,
            timeout_ms: 1_000,
            half_open_max_calls: 2,
            error_rate_threshold: 0.5,
            error_rate_window_ms: 10_000,
            error_rate_min_calls: 10,
        }
    }

    fn fail_n(b: &mut Breaker, c: &BreakerConfig, n: u32, t: u64) -> Option<Transition> {
        (0..n)
            .map(|_| b.record(c, Outcome::Failure, t))
            .last()
            .flatten()
    }

    /// closed → open after `failure_threshold` consecutive failures, not before.
    #[test]
    fn consecutive_failures_open() {
        let c = cfg();
        let mut b = Breaker::default();
        assert_eq!(fail_n(&mut b, &c, 2, 0), None);
        assert_eq!(b.availability(&c, 0), Availability::Closed);
        assert_eq!(b.record(&c, Outcome::Failure, 0), Some(Transition::Opened));
        assert_eq!(b.availability(&c, 0), Availability::Open);
    }

    /// A success between failures resets the consecutive count.
    #[test]
    fn success_resets_consecutive_count() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 2, 0);
        b.record(&c, Outcome::Success, 0);
        assert_eq!(fail_n(&mut b, &c, 2, 0), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// closed → open on the error rate once the minimum volume is reached.
    #[test]
    fn error_rate_opens_after_min_volume() {
        let c = BreakerConfig {
            failure_threshold: 100,
            ..cfg()
        };
        let mut b = Breaker::default();
        // Alternate: 50% errors, never two failures in a row.
        for i in 0..9 {
            let o = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            assert_eq!(b.record(&c, o, i * MS), None, "opened early at result {i}");
        }
        // The 10th result makes 5 failures out of 10.
        assert_eq!(
            b.record(&c, Outcome::Failure, 9 * MS),
            Some(Transition::Opened)
        );
    }

    /// Results that slid out of the window no longer count towards the error rate.
    #[test]
    fn old_results_leave_the_window() {
        let c = BreakerConfig {
            failure_threshold: 100,
            ..cfg()
        };
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 4, 0);
        b.record(&c, Outcome::Success, 0);
        // 11 s later the first five are gone; 9 successes + 1 failure is 10% errors.
        let later = 11_000 * MS;
        for _ in 0..9 {
            b.record(&c, Outcome::Success, later);
        }
        assert_eq!(b.record(&c, Outcome::Failure, later), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// open → half-open after `timeout_ms`; the probe quota is spent by selections.
    #[test]
    fn open_becomes_half_open_and_admits_quota() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 3, 0);
        assert_eq!(b.availability(&c, 999 * MS), Availability::Open);
        assert_eq!(b.availability(&c, 1_000 * MS), Availability::Probe);
        let first = b.on_selected(&c, 1_000 * MS);
        assert_eq!(
            first,
            Some(Transition::HalfOpened),
            "reported once, for metrics"
        );
        assert!(matches!(
            b.state(),
            BreakerState::HalfOpen { admitted: 1, .. }
        ));
        assert_eq!(b.on_selected(&c, 1_001 * MS), None);
        assert_eq!(b.availability(&c, 1_002 * MS), Availability::Open);
    }

    /// half-open → closed after `success_threshold` successes.
    #[test]
    fn half_open_closes_on_successes() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 3, 0);
        let t = 1_000 * MS;
        assert_eq!(
            b.record(&c, Outcome::Success, t),
            Some(Transition::HalfOpened)
        );
        assert_eq!(b.record(&c, Outcome::Success, t), Some(Transition::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// half-open → open on any failure, with a fresh timeout.
    #[test]
    fn half_open_reopens_on_failure() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 3, 0);
        let t = 1_500 * MS;
        b.on_selected(&c, t);
        assert_eq!(b.record(&c, Outcome::Failure, t), Some(Transition::Opened));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until_ns: t + 1_000 * MS
            }
        );
    }

    /// A late result while open changes nothing.
    #[test]
    fn results_while_open_are_ignored() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 3, 0);
        let before = b.state();
        assert_eq!(b.record(&c, Outcome::Success, 10 * MS), None);
        assert_eq!(b.state(), before);
    }

    /// Probes handed out but never reported on are replaced after another timeout.
    #[test]
    fn stale_half_open_round_readmits() {
        let c = cfg();
        let mut b = Breaker::default();
        fail_n(&mut b, &c, 3, 0);
        b.on_selected(&c, 1_000 * MS);
        b.on_selected(&c, 1_000 * MS);
        assert_eq!(b.availability(&c, 1_999 * MS), Availability::Open);
        assert_eq!(b.availability(&c, 2_000 * MS), Availability::Probe);
        b.on_selected(&c, 2_000 * MS);
        assert!(matches!(
            b.state(),
            BreakerState::HalfOpen { admitted: 1, .. }
        ));
    }
}
