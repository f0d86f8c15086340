//! The per-shard sticky-session table: session → (provider, TTL epoch) (SPEC §5 steps 7–8).
//!
//! It does not choose: the provider of a session is the rendezvous ranking of
//! `decide::rendezvous`, the same on every shard. The table remembers that this shard has
//! already answered the session with that provider in that epoch, so that the next answer
//! says `sticky` rather than `weighted`; an entry expires at the end of its epoch.
//!
//! A fixed-capacity, 4-way set-associative table allocated once at shard start: lookups
//! and inserts are O(1) and never allocate, and the table can never outgrow its capacity.
//! A full set evicts its expired entry, else the one closest to expiry.
//!
//! Keys are 128-bit fingerprints of (policy identity, session value) under a per-shard
//! random seed, not the strings themselves: storing strings would allocate per new
//! session. Two sessions would have to collide on 128 seeded bits to share an entry.
//!
//! An entry remembers the policy's provider-list fingerprint, so after a reload that
//! changed the provider list an old index is not trusted; reloads that keep the list keep
//! the sessions.

use crate::policy::ProviderIdx;

const WAYS: usize = 4;
/// Upper bound on a shard's sticky table, in entries.
pub const STICKY_ENTRIES_MAX: usize = 1 << 24;
/// Lower bound, so that one set always exists.
pub const STICKY_ENTRIES_MIN: usize = WAYS;

const _: () = assert!(STICKY_ENTRIES_MAX.is_power_of_two());
const _: () = assert!(STICKY_ENTRIES_MIN.is_power_of_two());

/// A 128-bit session fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub hi: u64,
    pub lo: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key_hi: u64,
    key_lo: u64,
    /// 0 = empty slot.
    expires_ns: u64,
    providers_fp: u64,
    /// The session's TTL epoch the entry was written in.
    epoch: u64,
    provider: u8,
}

#[derive(Debug, Clone)]
pub struct StickyTable {
    entries: Box<[Entry]>,
    set_mask: usize,
    len: usize,
}

impl StickyTable {
    /// `capacity` is rounded up to a power of two within the bounds above.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity
            .clamp(STICKY_ENTRIES_MIN, STICKY_ENTRIES_MAX)
            .next_power_of_two();
        StickyTable {
            entries: vec![Entry::default(); capacity].into_boxed_slice(),
            set_mask: capacity / WAYS - 1,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Entries held, live or expired-but-not-yet-replaced.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn set_start(&self, key: SessionKey) -> usize {
        (key.lo as usize & self.set_mask) * WAYS
    }

    fn set(&mut self, key: SessionKey) -> &mut [Entry] {
        let start = self.set_start(key);
        &mut self.entries[start..start + WAYS]
    }

    /// The live entry's (provider, epoch), if its provider list is still `providers_fp`.
    pub fn get(
        &self,
        key: SessionKey,
        providers_fp: u64,
        now_ns: u64,
    ) -> Option<(ProviderIdx, u64)> {
        let start = self.set_start(key);
        self.entries[start..start + WAYS]
            .iter()
            .find(|e| e.key_hi == key.hi && e.key_lo == key.lo && e.expires_ns > now_ns)
            .filter(|e| e.providers_fp == providers_fp)
            .map(|e| (ProviderIdx(e.provider), e.epoch))
    }

    /// Writes (or overwrites) an entry expiring at `expires_ns` (must be > 0).
    pub fn put(
        &mut self,
        key: SessionKey,
        providers_fp: u64,
        held: (ProviderIdx, u64),
        expires_ns: u64,
    ) {
        assert!(expires_ns > 0);
        let set = self.set(key);
        let way = set
            .iter()
            .position(|e| e.expires_ns != 0 && e.key_hi == key.hi && e.key_lo == key.lo)
            .or_else(|| set.iter().position(|e| e.expires_ns == 0))
            .unwrap_or_else(|| {
                // Evict the entry expiring first (an expired one expires "first" too).
                let (i, _) = set
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.expires_ns)
                    .unwrap();
                i
            });
        let was_empty = set[way].expires_ns == 0;
        set[way] = Entry {
            key_hi: key.hi,
            key_lo: key.lo,
            expires_ns,
            providers_fp,
            epoch: held.1,
            provider: held.0 .0,
        };
        if was_empty {
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> SessionKey {
        SessionKey {
            hi: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            lo: n,
        }
    }

    fn held(provider: u8) -> (ProviderIdx, u64) {
        (ProviderIdx(provider), 40 + u64::from(provider))
    }

    /// An entry is found, with its epoch, until its expiry and gone from then on
    /// (injected time).
    #[test]
    fn entry_expires_at_ttl() {
        let mut t = StickyTable::new(64);
        t.put(key(1), 7, held(2), 1_000);
        assert_eq!(t.get(key(1), 7, 999), Some((ProviderIdx(2), 42)));
        assert_eq!(t.get(key(1), 7, 1_000), None);
    }

    /// A changed provider list invalidates the entry.
    #[test]
    fn provider_list_change_invalidates() {
        let mut t = StickyTable::new(64);
        t.put(key(1), 7, held(2), 1_000);
        assert_eq!(t.get(key(1), 8, 0), None);
    }

    /// Re-putting a key overwrites in place instead of taking a second way.
    #[test]
    fn refresh_overwrites() {
        let mut t = StickyTable::new(64);
        t.put(key(1), 7, held(2), 1_000);
        t.put(key(1), 7, held(3), 2_000);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(key(1), 7, 1_500), Some(held(3)));
    }

    /// The table never grows: a full set evicts the entry that expires first.
    #[test]
    fn full_set_evicts_soonest_expiry() {
        let mut t = StickyTable::new(4); // one set of four ways
        for n in 0..4 {
            t.put(key(n), 1, held(n as u8), 100 + n);
        }
        t.put(key(9), 1, held(9), 500);
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(key(0), 1, 0), None, "soonest expiry was evicted");
        for n in 1..4 {
            assert_eq!(t.get(key(n), 1, 0), Some(held(n as u8)));
        }
        assert_eq!(t.get(key(9), 1, 0), Some(held(9)));
    }

    /// Capacity is clamped and rounded to a power of two.
    #[test]
    fn capacity_is_bounded() {
        assert_eq!(StickyTable::new(0).capacity(), STICKY_ENTRIES_MIN);
        assert_eq!(StickyTable::new(100).capacity(), 128);
    }
}
