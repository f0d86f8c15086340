//! A provider's own limits (`providers[].rpm`, `providers[].tpm`) and its cooldown after
//! it refused a call for its rate limit (`cooldown_ms`): when a provider is no candidate
//! because the provider itself would refuse the call.
//!
//! - **Requests per minute** are the decisions for the provider, counted where they are
//!   made: a policy with an `rpm` is decided on the tenant's owner (`shard`), so the
//!   count is the node's and the limit holds exactly (one ring hop for a request landing
//!   elsewhere). Why not leases: the owner's lease protocol (`sync`) is per policy's
//!   bucket, not per provider, and a lease of requests per provider would be a bucket
//!   and an ask per (policy, provider).
//! - **Tokens per minute** are counted from results' `usage` where results land (the
//!   tenant's owner) and replicated to the other shards with the averages, so every shard
//!   sees every result's tokens within `REPLICA_COALESCE_NS` of the owner. Tokens are known
//!   only once a call is over: calls in flight when the limit is reached still land.
//! - **Cooldown**: a result with status `rate_limited` (or an `error` with code `429`)
//!   keeps the provider out for the policy's `cooldown_ms`, on the owner at once and on
//!   the other shards with the next replica (sent at once, like a circuit transition).
//!   It does not count against the circuit: a provider that says "slow down" is not broken.
//!
//! A minute is a sliding estimate over two fixed minutes: this minute's count plus the
//! previous minute's, weighted by the part of it the sliding minute still covers. Two
//! words per counter instead of a sample per call; the estimate is exact for a steady
//! rate and errs by at most the previous minute's unevenness. Nothing here reads a clock
//! or allocates.

use crate::policy::ProviderLimits;

const NS_PER_MS: u64 = 1_000_000;
/// The span `rpm` and `tpm` count over.
pub const MINUTE_NS: u64 = 60_000 * NS_PER_MS;

/// A count over a sliding minute (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MinuteWindow {
    /// Start of the current fixed minute (a multiple of `MINUTE_NS`).
    start_ns: u64,
    current: u64,
    previous: u64,
}

impl MinuteWindow {
    /// The window moved on to the fixed minute holding `now_ns`.
    fn rolled(self, now_ns: u64) -> MinuteWindow {
        let start_ns = now_ns - now_ns % MINUTE_NS;
        if start_ns <= self.start_ns {
            return self;
        }
        let previous = if start_ns - self.start_ns == MINUTE_NS {
            self.current
        } else {
            0
        };
        MinuteWindow {
            start_ns,
            current: 0,
            previous,
        }
    }

    pub fn add(&mut self, n: u64, now_ns: u64) {
        *self = self.rolled(now_ns);
        self.current = self.current.saturating_add(n);
    }

    /// The estimated count of the minute ending at `now_ns`.
    pub fn get(&self, now_ns: u64) -> f64 {
        let w = self.rolled(now_ns);
        let into = now_ns.saturating_sub(w.start_ns) as f64 / MINUTE_NS as f64;
        w.previous as f64 * (1.0 - into.min(1.0)) + w.current as f64
    }
}

/// A provider's usage as this shard knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProviderUsage {
    /// This shard's decisions for the provider (counted only when it has an `rpm`).
    pub requests: MinuteWindow,
    /// Results' tokens (the owner's, replicated).
    pub tokens: MinuteWindow,
    /// No candidate before this instant (a `rate_limited` result); 0 = none.
    pub cooldown_until_ns: u64,
}

/// Why the provider would refuse a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    CoolingDown,
    AtRpm,
    AtTpm,
}

impl ProviderUsage {
    /// Whether (and why) the provider is out at `now_ns` under `limits`.
    pub fn held(&self, limits: ProviderLimits, now_ns: u64) -> Option<Held> {
        if now_ns < self.cooldown_until_ns {
            return Some(Held::CoolingDown);
        }
        if limits
            .rpm
            .is_some_and(|rpm| self.requests.get(now_ns) >= f64::from(rpm))
        {
            return Some(Held::AtRpm);
        }
        if limits
            .tpm
            .is_some_and(|tpm| self.tokens.get(now_ns) >= f64::from(tpm))
        {
            return Some(Held::AtTpm);
        }
        None
    }

    /// A decision went to the provider.
    pub fn decided(&mut self, limits: ProviderLimits, now_ns: u64) {
        if limits.rpm.is_some() {
            self.requests.add(1, now_ns);
        }
    }

    /// A result said what the call used and whether the provider refused it for its rate
    /// limit; true when a cooldown started or grew (peers must hear of it at once).
    pub fn result(&mut self, signal: LimitSignal, cooldown_ms: u64, now_ns: u64) -> bool {
        if let Some(tokens) = signal.tokens {
            self.tokens.add(tokens, now_ns);
        }
        if !signal.rate_limited || cooldown_ms == 0 {
            return false;
        }
        let until = now_ns.saturating_add(cooldown_ms.saturating_mul(NS_PER_MS));
        let longer = until > self.cooldown_until_ns;
        self.cooldown_until_ns = self.cooldown_until_ns.max(until);
        longer
    }
}

/// What a result tells a provider's limits, beside the breaker and the averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSignal {
    /// `usage.input_tokens + usage.output_tokens`, when the result had `usage`.
    pub tokens: Option<u64>,
    /// Status `rate_limited`, or an error with code `429`.
    pub rate_limited: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000 * NS_PER_MS;

    /// A steady count is exact; the previous minute fades out linearly as the sliding
    /// minute leaves it, and a minute with nothing forgets everything.
    #[test]
    fn the_sliding_minute_weighs_the_previous_one_by_overlap() {
        let mut w = MinuteWindow::default();
        let t0 = 100 * MINUTE_NS;
        w.add(60, t0 + 30 * S);
        assert_eq!(w.get(t0 + 59 * S), 60.0);
        assert_eq!(
            w.get(t0 + MINUTE_NS),
            60.0,
            "all of it is in the sliding minute"
        );
        assert_eq!(w.get(t0 + MINUTE_NS + 15 * S), 45.0);
        w.add(10, t0 + MINUTE_NS + 30 * S);
        assert_eq!(w.get(t0 + MINUTE_NS + 30 * S), 40.0);
        assert_eq!(w.get(t0 + 2 * MINUTE_NS + 30 * S), 5.0);
        assert_eq!(w.get(t0 + 3 * MINUTE_NS), 0.0);
        w.add(1, t0 + 5 * MINUTE_NS);
        assert_eq!(
            w.get(t0 + 5 * MINUTE_NS),
            1.0,
            "an idle spell left nothing behind"
        );
    }

    /// Each limit holds its provider, a cooldown first; a `rate_limited` result starts a
    /// cooldown (and says so), a shorter one does not cut a longer one short.
    #[test]
    fn limits_and_cooldowns_hold_a_provider() {
        let limits = ProviderLimits {
            rpm: Some(2),
            tpm: Some(1_000),
        };
        let mut u = ProviderUsage::default();
        let t = 7 * MINUTE_NS;
        assert_eq!(u.held(limits, t), None);
        u.decided(limits, t);
        u.decided(limits, t);
        assert_eq!(u.held(limits, t), Some(Held::AtRpm));
        assert_eq!(
            u.held(ProviderLimits::default(), t),
            None,
            "no limit, no hold"
        );
        let tokens = LimitSignal {
            tokens: Some(1_000),
            rate_limited: false,
        };
        assert!(!u.result(tokens, 10_000, t));
        let tpm_only = ProviderLimits {
            rpm: None,
            ..limits
        };
        assert_eq!(u.held(tpm_only, t), Some(Held::AtTpm));
        let refused = LimitSignal {
            tokens: None,
            rate_limited: true,
        };
        assert!(u.result(refused, 10_000, t));
        assert_eq!(
            u.held(limits, t + 9_999 * NS_PER_MS),
            Some(Held::CoolingDown)
        );
        assert!(
            !u.result(refused, 1_000, t),
            "a shorter cooldown changes nothing"
        );
        assert_eq!(u.cooldown_until_ns, t + 10 * S);
        assert!(!u.result(refused, 0, t), "cooldown_ms 0: no cooldown");
    }
}
