//! Token bucket for a policy's rate limit (SPEC §5 step 2).
//!
//! Tokens are counted in nano-tokens (1 token = 10^9), so a refill of `rate` tokens per
//! second is exactly `rate` nano-tokens per nanosecond: integer arithmetic, no drift, and
//! refill resolution of one nanosecond rather than a millisecond tick.
//!
//! In a cluster a node's bucket runs at the node's *share* of the policy's limit, granted
//! by the tenant's owner node (`set_share`): a lower rate and burst, possibly zero. The
//! configured limit stays what `limit()` reports (it names the policy's bucket across
//! reloads); `rate()` and `burst()` are the share in force.

use crate::policy::RateLimit;

const NANO_TOKENS_PER_TOKEN: u64 = 1_000_000_000;
const NS_PER_MS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate_per_s: u64,
    capacity_nano: u64,
    tokens_nano: u64,
    last_ns: u64,
    /// The policy's configured limit (the share in force may be less).
    limit: RateLimit,
}

/// How long a bucket whose share is zero tells a request to wait: about when the node's
/// next grant is due.
pub const UNSHARED_RETRY_MS: u64 = 250;

impl TokenBucket {
    /// A bucket starts full: a freshly loaded policy admits its burst at once.
    pub fn new(limit: RateLimit, now_ns: u64) -> Self {
        assert!(limit.requests_per_second > 0 && limit.burst > 0);
        let capacity_nano = u64::from(limit.burst) * NANO_TOKENS_PER_TOKEN;
        TokenBucket {
            rate_per_s: u64::from(limit.requests_per_second),
            capacity_nano,
            tokens_nano: capacity_nano,
            last_ns: now_ns,
            limit,
        }
    }

    /// The policy's configured limit, whatever share the bucket runs at.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// The refill rate in force (tokens per second).
    pub fn rate(&self) -> u32 {
        self.rate_per_s as u32
    }

    /// Runs the bucket at `rps` and `burst` (each at most the configured limit's) from
    /// `now_ns`: the refill up to now is counted at the old rate; tokens above the new
    /// burst are dropped at once. Zero stops the bucket.
    pub fn set_share(&mut self, now_ns: u64, rps: u32, burst: u32) {
        self.refill(now_ns);
        self.rate_per_s = u64::from(rps.min(self.limit.requests_per_second));
        let burst = burst.min(self.limit.burst);
        self.capacity_nano = u64::from(burst) * NANO_TOKENS_PER_TOKEN;
        self.tokens_nano = self.tokens_nano.min(self.capacity_nano);
    }

    /// The wait until `deficit_nano` more nano-tokens have refilled (`UNSHARED_RETRY_MS`
    /// at a zero rate).
    fn wait_ns(&self, deficit_nano: u64) -> u64 {
        match self.rate_per_s {
            0 => UNSHARED_RETRY_MS * NS_PER_MS,
            rate => deficit_nano.div_ceil(rate),
        }
    }

    /// Takes one token, or returns how many milliseconds until one is available (≥ 1).
    pub fn try_take(&mut self, now_ns: u64) -> Result<(), u64> {
        self.refill(now_ns);
        self.take_or_wait()
    }

    fn refill(&mut self, now_ns: u64) {
        self.refill_below(now_ns, 0);
    }

    /// Refills up to the capacity less `leased` tokens held elsewhere (granted to peers
    /// and not yet spent or expired), so the bucket and the leases together never hold
    /// more than the burst: over any window, admissions everywhere stay within
    /// `burst + rate × window`.
    pub fn refill_below(&mut self, now_ns: u64, leased: u64) {
        // A clock that steps back (it should not: it is monotonic) refills nothing.
        let elapsed_ns = now_ns.saturating_sub(self.last_ns);
        let added = elapsed_ns.saturating_mul(self.rate_per_s);
        let cap = self
            .capacity_nano
            .saturating_sub(leased.saturating_mul(NANO_TOKENS_PER_TOKEN));
        let filled = self.tokens_nano.saturating_add(added);
        // Tokens already in the bucket stay (they were counted when granted back); only
        // the refill is held under the cap.
        self.tokens_nano = filled.min(cap.max(self.tokens_nano));
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// When the bucket was last refilled: a lease expiring after it frees its tokens'
    /// room from its expiry on, not before (`sync`).
    pub fn refilled_ns(&self) -> u64 {
        self.last_ns
    }

    /// Moves up to `want` whole tokens out of the bucket into a lease (`leased` tokens are
    /// out already); returns how many, and when the next token is due if none.
    pub fn grant(&mut self, now_ns: u64, want: u32, leased: u64) -> (u32, u64) {
        self.refill_below(now_ns, leased);
        let whole = self.tokens_nano / NANO_TOKENS_PER_TOKEN;
        let granted = whole.min(u64::from(want)) as u32;
        self.tokens_nano -= u64::from(granted) * NANO_TOKENS_PER_TOKEN;
        let deficit_nano = NANO_TOKENS_PER_TOKEN.saturating_sub(self.tokens_nano);
        let next_ns = now_ns.saturating_add(self.wait_ns(deficit_nano));
        (granted, next_ns)
    }

    /// The burst, in whole tokens.
    pub fn burst(&self) -> u32 {
        (self.capacity_nano / NANO_TOKENS_PER_TOKEN) as u32
    }

    /// Takes one token without refilling (the caller refilled), or says how many
    /// milliseconds until one is due (≥ 1).
    pub fn take_or_wait(&mut self) -> Result<(), u64> {
        self.take_leaving(0)
    }

    /// `take_or_wait` that leaves `kept` whole tokens in the bucket (promised to peers).
    pub fn take_leaving(&mut self, kept: u32) -> Result<(), u64> {
        let need = (u64::from(kept) + 1) * NANO_TOKENS_PER_TOKEN;
        if self.tokens_nano >= need {
            self.tokens_nano -= NANO_TOKENS_PER_TOKEN;
            return Ok(());
        }
        let deficit_nano = need - self.tokens_nano;
        Err(self.wait_ns(deficit_nano).div_ceil(NS_PER_MS).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rps: u32, burst: u32) -> TokenBucket {
        let limit = RateLimit {
            requests_per_second: rps,
            burst,
        };
        TokenBucket::new(limit, 0)
    }

    /// The burst is admitted at once, then the next request is refused with a wait.
    #[test]
    fn burst_then_refusal() {
        let mut b = bucket(10, 3);
        for _ in 0..3 {
            assert_eq!(b.try_take(0), Ok(()));
        }
        // 10 rps: one token every 100 ms.
        assert_eq!(b.try_take(0), Err(100));
    }

    /// Refill is continuous below a millisecond: 2000 rps refills one token in 500 µs.
    #[test]
    fn sub_millisecond_refill() {
        let mut b = bucket(2_000, 1);
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(499_999), Err(1));
        assert_eq!(b.try_take(500_000), Ok(()));
    }

    /// `retry_after_ms` shrinks as time passes and is never 0.
    #[test]
    fn retry_after_counts_down() {
        let mut b = bucket(1, 1);
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Err(1_000));
        assert_eq!(b.try_take(400 * NS_PER_MS), Err(600));
        assert_eq!(b.try_take(999_999_999), Err(1));
        assert_eq!(b.try_take(1_000_000_000), Ok(()));
    }

    /// A long idle period refills to the burst, not beyond.
    #[test]
    fn refill_caps_at_burst() {
        let mut b = bucket(1_000_000, 5);
        for _ in 0..5 {
            b.try_take(0).unwrap();
        }
        let later = 3_600 * 1_000_000_000;
        for _ in 0..5 {
            assert_eq!(b.try_take(later), Ok(()));
        }
        assert!(b.try_take(later).is_err());
    }

    /// A share: the refill so far counted at the old rate, tokens over the new burst
    /// dropped, the configured limit still reported; zero stops the bucket without a
    /// division by zero.
    #[test]
    fn a_share_runs_the_bucket_at_part_of_its_limit() {
        let mut b = bucket(100, 10);
        for _ in 0..10 {
            b.try_take(0).unwrap();
        }
        // 50 ms at 100/s: 5 tokens, then the share is 20/s with a burst of 2.
        b.set_share(50 * NS_PER_MS, 20, 2);
        assert_eq!(b.limit().requests_per_second, 100);
        assert_eq!((b.rate(), b.burst()), (20, 2));
        assert_eq!(b.try_take(50 * NS_PER_MS), Ok(()));
        assert_eq!(b.try_take(50 * NS_PER_MS), Ok(()));
        assert_eq!(b.try_take(50 * NS_PER_MS), Err(50));
        b.set_share(60 * NS_PER_MS, 0, 0);
        assert_eq!(b.try_take(10_000 * NS_PER_MS), Err(UNSHARED_RETRY_MS));
        assert_eq!(b.grant(10_000 * NS_PER_MS, 5, 0).0, 0);
        // Never above the configured limit.
        b.set_share(20_000 * NS_PER_MS, 1_000, 1_000);
        assert_eq!((b.rate(), b.burst()), (100, 10));
    }

    /// Time going backwards neither panics nor mints tokens.
    #[test]
    fn backwards_clock_is_harmless() {
        let mut b = bucket(10, 1);
        b.try_take(5_000_000_000).unwrap();
        assert!(b.try_take(1_000).is_err());
    }
}
