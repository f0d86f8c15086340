//! A bounded, expiring map keyed by 128-bit fingerprints: the idempotency cache (first
//! answer to a repeated `idempotency_key`) and the ExecResult de-duplication set (by
//! `assignment_id`). One per shard, owned by it.
//!
//! Bounded by construction: at capacity the oldest insertion is evicted (FIFO), expired
//! entries read as absent and are dropped when they reach the front. Keys are seeded
//! fingerprints rather than strings, so a key costs 16 bytes whatever its length; two
//! keys would have to collide on 128 seeded bits to be confused.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

/// Upper bound on entries in one cache.
pub const CACHE_ENTRIES_MAX: usize = 1 << 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64, u64);

#[derive(Debug)]
struct Entry<V> {
    expires_ns: u64,
    value: V,
}

#[derive(Debug)]
pub struct TtlCache<V> {
    map: HashMap<Fingerprint, Entry<V>, FixedState>,
    order: VecDeque<(Fingerprint, u64)>,
    capacity: usize,
    ttl_ns: u64,
    hi: FixedState,
    lo: FixedState,
}

impl<V> TtlCache<V> {
    pub fn new(capacity: usize, ttl_ns: u64, seed: u64) -> Self {
        let capacity = capacity.clamp(1, CACHE_ENTRIES_MAX);
        TtlCache {
            map: HashMap::with_capacity_and_hasher(capacity, FixedState::with_seed(seed)),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl_ns,
            hi: FixedState::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            lo: FixedState::with_seed(seed.rotate_left(17) ^ 0xc2b2_ae3d_27d4_eb4f),
        }
    }

    /// The fingerprint of a key made of several parts (e.g. tenant and idempotency key).
    pub fn fingerprint(&self, parts: &[&[u8]]) -> Fingerprint {
        let hash = |s: &FixedState| {
            let mut h = s.build_hasher();
            for part in parts {
                h.write_usize(part.len());
                h.write(part);
            }
            h.finish()
        };
        Fingerprint(hash(&self.hi), hash(&self.lo))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: Fingerprint, now_ns: u64) -> Option<&V> {
        self.map
            .get(&key)
            .filter(|e| e.expires_ns > now_ns)
            .map(|e| &e.value)
    }

    /// Inserts unless a live entry exists; returns whether it inserted.
    pub fn insert_new(&mut self, key: Fingerprint, value: V, now_ns: u64) -> bool {
        self.expire(now_ns);
        if self.get(key, now_ns).is_some() {
            return false;
        }
        while self.map.len() >= self.capacity {
            let Some((old, _)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
        let expires_ns = now_ns.saturating_add(self.ttl_ns);
        self.map.insert(key, Entry { expires_ns, value });
        self.order.push_back((key, expires_ns));
        true
    }

    /// Drops expired entries from the front of the insertion order.
    fn expire(&mut self, now_ns: u64) {
        while let Some(&(key, expires_ns)) = self.order.front() {
            if expires_ns > now_ns {
                break;
            }
            self.order.pop_front();
            // A key re-inserted after expiring has a later entry; keep that one.
            if self.map.get(&key).is_some_and(|e| e.expires_ns <= now_ns) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live key is found and not replaced; after its TTL it is gone and can be reused.
    #[test]
    fn ttl_and_first_wins() {
        let mut c = TtlCache::new(8, 100, 1);
        let k = c.fingerprint(&[b"acme", b"key-1"]);
        assert!(c.insert_new(k, "first", 0));
        assert!(!c.insert_new(k, "second", 50));
        assert_eq!(c.get(k, 99), Some(&"first"));
        assert_eq!(c.get(k, 100), None);
        assert!(c.insert_new(k, "third", 100));
        assert_eq!(c.get(k, 150), Some(&"third"));
    }

    /// At capacity the oldest entry goes; the cache never grows past its bound.
    #[test]
    fn bounded_fifo_eviction() {
        let mut c = TtlCache::new(3, 1_000, 1);
        let keys: Vec<_> = (0..5u8).map(|i| c.fingerprint(&[&[i]])).collect();
        for (i, k) in keys.iter().enumerate() {
            c.insert_new(*k, i, 0);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(keys[0], 1), None);
        assert_eq!(c.get(keys[1], 1), None);
        assert_eq!(c.get(keys[4], 1), Some(&4));
    }

    /// Key parts are length-prefixed: ("ab","c") and ("a","bc") differ.
    #[test]
    fn parts_do_not_run_together() {
        let c: TtlCache<()> = TtlCache::new(1, 1, 1);
        assert_ne!(c.fingerprint(&[b"ab", b"c"]), c.fingerprint(&[b"a", b"bc"]));
    }
}
