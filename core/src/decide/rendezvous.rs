//! Which provider a sticky session goes to: weighted rendezvous hashing (highest random
//! weight) over the candidates, re-drawn once per session TTL epoch (SPEC §5 steps 7–8).
//!
//! Why a hash and not a remembered draw: every shard (and every node) decides every
//! tenant's requests itself, so the choice must come out the same wherever the session's
//! request lands, with no message between shards. The choice is a pure function of
//! (tenant, policy id, session value, epoch, the candidates and their weights); the
//! per-shard sticky table only remembers whether this shard already answered the session
//! in this epoch, for the `sticky`/`weighted` label.
//!
//! Why rendezvous and not a hash ring: with weights it needs no ring to build or store,
//! it is exact for any weights (each provider's share of sessions is its weight over the
//! candidates' total), and removing a candidate (open circuit, constraint) moves only the
//! sessions that were on it, each to its next-ranked provider — which is where they come
//! back from when it returns. A changed weight moves only the sessions it must.
//!
//! Why a fixed, unseeded hash of our own and not `foldhash`/`std`: the value has to be the
//! same on every node and every build, forever — a library's hash may change between
//! versions, and a seeded one differs per shard by design. For the same reason the score's
//! logarithm is computed here from IEEE-exact operations (`+ - * /`), not by the
//! platform's `ln`, whose last bit may differ between C libraries. Unseeded means a client
//! can choose session values that land where it likes; it could as well send one session.
//!
//! Staggered epochs: epoch = ⌊(unix_ms + stagger) / ttl⌋ with stagger = session hash mod
//! ttl, so each session is re-drawn at its own moment, not every session of a policy at
//! once. Wall-clock time is used (not monotonic) because nodes share it; nodes agree up
//! to their clock skew around a session's boundary.

use crate::policy::{Policy, ProviderIdx};

const K_INIT: u64 = 0x2d35_8dcc_aa6c_78a5;
const K_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// A fixed 64-bit hash, the same on every node and build. Not for hash tables keyed by
/// untrusted input (it is unseeded); for agreeing on a value without talking.
#[derive(Debug, Clone, Copy)]
pub struct StableHash {
    h: u64,
}

impl Default for StableHash {
    fn default() -> Self {
        StableHash::new()
    }
}

impl StableHash {
    pub const fn new() -> Self {
        StableHash { h: K_INIT }
    }

    /// Absorbs one word: xor, multiply by an odd constant, fold the high half down. Each
    /// step is a bijection of the state for a given word.
    pub fn u64(mut self, w: u64) -> Self {
        let x = (self.h ^ w).wrapping_mul(K_MUL);
        self.h = x ^ (x >> 29);
        self
    }

    /// Absorbs a byte string, length first (so ("ab","c") and ("a","bc") differ), then
    /// little-endian 8-byte words, the last one zero-padded.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self = self.u64(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self = self.u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self = self.u64(u64::from_le_bytes(word));
        }
        self
    }

    /// The state through a full-avalanche finaliser (every input bit flips each output
    /// bit with probability ~1/2).
    pub fn finish(self) -> u64 {
        let mut x = self.h;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// The namespace of a policy's sessions: (tenant, policy id).
pub fn policy_key(tenant: &str, policy_id: &str) -> u64 {
    StableHash::new()
        .bytes(tenant.as_bytes())
        .bytes(policy_id.as_bytes())
        .finish()
}

/// A provider's name, as the rendezvous ranking hashes it.
pub fn provider_key(name: &str) -> u64 {
    StableHash::new().bytes(name.as_bytes()).finish()
}

/// One session of a policy: its stagger and the base of its draws.
pub fn session_hash(policy_key: u64, session: &[u8]) -> u64 {
    StableHash::new().u64(policy_key).bytes(session).finish()
}

/// A session's current TTL epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub number: u64,
    /// Milliseconds from `unix_ms` to the epoch's end, in `1..=ttl_ms`.
    pub remaining_ms: u64,
}

impl Epoch {
    pub fn of(session_hash: u64, ttl_ms: u64, unix_ms: u64) -> Epoch {
        let ttl = ttl_ms.max(1);
        let shifted = unix_ms.saturating_add(session_hash % ttl);
        Epoch {
            number: shifted / ttl,
            remaining_ms: ttl - shifted % ttl,
        }
    }
}

/// The seed of one epoch's ranking of a session.
pub fn draw_key(session_hash: u64, epoch: u64) -> u64 {
    StableHash::new().u64(session_hash).u64(epoch).finish()
}

/// The highest-ranked candidate (bit `i` of `mask` = provider `i`) for `draw_key`:
/// provider `i` scores `weight_i / -ln(u_i)` with `u_i` uniform in (0, 1) from
/// (draw_key, provider key). `P(i wins) = weight_i / Σ weights`. `None` if `mask` is empty.
/// Providers of weight 0 must not be in `mask`; every score is then finite and positive.
pub fn rank(
    policy: &Policy,
    provider_keys: &[u64],
    mask: u64,
    draw_key: u64,
) -> Option<ProviderIdx> {
    debug_assert_eq!(provider_keys.len(), policy.providers.len());
    let mut best: Option<(f64, u64, usize)> = None;
    let mut bits = mask;
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let weight = policy.providers[i].weight;
        debug_assert!(weight > 0, "weight-0 provider {i} among the candidates");
        let h = StableHash::new()
            .u64(draw_key)
            .u64(provider_keys[i])
            .finish();
        let score = f64::from(weight) / neg_ln_unit(h);
        debug_assert!(score.is_finite() && score > 0.0);
        // Ties (equal f64 scores) go to the larger hash: independent of provider order.
        let better = match best {
            None => true,
            Some((s, bh, _)) => score > s || (score == s && h > bh),
        };
        if better {
            best = Some((score, h, i));
        }
    }
    best.map(|(_, _, i)| ProviderIdx(i as u8))
}

/// 1/1, 1/3, 1/5, … 1/23: the atanh series' coefficients.
const ODD_RECIPROCALS: [f64; 12] = [
    1.0,
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
    1.0 / 15.0,
    1.0 / 17.0,
    1.0 / 19.0,
    1.0 / 21.0,
    1.0 / 23.0,
];

/// `-ln(u)` for `u = (top 52 bits of h + 1/2) / 2^52`, which lies in [2^-53, 1 - 2^-53]
/// and is exact in an f64: the result is finite and > 0 (≥ ~1.1e-16). Computed with
/// `+ - * /` only (atanh series), so it is bit-identical on every IEEE-754 platform; the
/// relative error against the true value is below 1e-15.
pub fn neg_ln_unit(h: u64) -> f64 {
    const TWO_POW_M52: f64 = 1.0 / 4_503_599_627_370_496.0;
    let u = ((h >> 12) as f64 + 0.5) * TWO_POW_M52;
    // u = m · 2^e with m in [1, 2) (u is normal: ≥ 2^-53), then m into [√½, √2).
    let bits = u.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2·atanh(s) = 2(s + s³/3 + s⁵/5 + …), s = (m-1)/(m+1), |s| < 0.172: the 12
    // terms below leave an error under 1e-18.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = ODD_RECIPROCALS
        .iter()
        .rev()
        .fold(0.0, |acc, c| acc * s2 + c);
    let ln_m = 2.0 * s * series;
    -(e as f64 * std::f64::consts::LN_2 + ln_m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is fixed: these values are part of the contract between nodes (a change
    /// would move every session of every tenant during a rolling upgrade).
    #[test]
    fn stable_hash_is_pinned() {
        assert_eq!(provider_key("openai"), provider_key("openai"));
        assert_ne!(provider_key("openai"), provider_key("anthropic"));
        let pinned = [
            provider_key(""),
            provider_key("openai"),
            policy_key("acme", "default"),
            session_hash(policy_key("acme", "default"), b"u-42"),
        ];
        assert_eq!(pinned, PINNED, "{pinned:#x?}");
    }

    const PINNED: [u64; 4] = [
        0x94c9_8370_bb75_297f,
        0x69f5_4d6d_7fea_68ff,
        0x1a1e_722c_a598_fdb5,
        0x4b5a_ef7e_fb51_faa0,
    ];

    /// Field boundaries count: the pair ("ab","c") is not ("a","bc").
    #[test]
    fn fields_are_length_delimited() {
        assert_ne!(policy_key("ab", "c"), policy_key("a", "bc"));
        assert_ne!(session_hash(1, b"abcdefgh"), session_hash(1, b"abcdefgh\0"));
    }

    /// The own logarithm agrees with the platform's and stays finite and positive at
    /// both ends of the hash range.
    #[test]
    fn neg_ln_matches_ln() {
        let mut h = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let u = ((h >> 12) as f64 + 0.5) / 4_503_599_627_370_496.0;
            let want = -u.ln();
            let got = neg_ln_unit(h);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "h {h:#x}: {got} vs {want}"
            );
        }
        for h in [0, 1, u64::MAX, u64::MAX - 4096, 1 << 63] {
            let x = neg_ln_unit(h);
            assert!(x.is_finite() && x > 0.0, "h {h:#x}: {x}");
        }
        assert!(neg_ln_unit(u64::MAX) < 1e-15);
        assert!((neg_ln_unit(0) - 53.0 * std::f64::consts::LN_2).abs() < 1e-12);
    }

    /// The epoch starts at a session's own offset: `remaining_ms` counts down to 1 and the
    /// number steps by one at the boundary.
    #[test]
    fn epoch_boundary_is_staggered() {
        let ttl = 1_000;
        let hash = 250; // stagger 250 ms
        assert_eq!(
            Epoch::of(hash, ttl, 749),
            Epoch {
                number: 0,
                remaining_ms: 1
            }
        );
        assert_eq!(
            Epoch::of(hash, ttl, 750),
            Epoch {
                number: 1,
                remaining_ms: 1_000
            }
        );
        assert_eq!(Epoch::of(0, 0, 5).number, 5, "a zero TTL is read as 1 ms");
        let far = Epoch::of(7, ttl, u64::MAX);
        assert!(
            (1..=ttl).contains(&far.remaining_ms),
            "no overflow: {far:?}"
        );
    }
}
