//! A bounded, expiring map keyed by 128-bit fingerprints: the idempotency cache (first
//! answer to a repeated `idempotency_key`) and the ExecResult de-duplication set (by
//! `assignment_id`). One per shard, owned by it.
//!
//! Bounded by bytes and by entries, both at construction. An entry is charged its key (a
//! 16-byte fingerprint), the value's own heap bytes (an echoed answer can be 70 KiB) with
//! the allocator's size-class rounding, and `entry_overhead()`: the map slot and the queue
//! slot at their worst load (tables double, so up to half of a table is slack), plus an
//! allocation header. The counted bytes are
//! therefore an upper estimate of what the cache really holds, not a guess below it.
//!
//! Fair across tenants. Every entry is charged to a tenant; with `n` tenants holding
//! entries (the inserting one included), each tenant's share is `bytes_max / n` bytes and
//! `entries_max / n` entries. When an insert does not fit:
//! - a tenant over its share (counting the new entry) evicts its own oldest entry;
//! - a tenant within its share evicts the oldest entry of a tenant over its share;
//! - nobody else is ever touched. When the cache is full, a tenant within its share
//!   implies another is over it (the shares add up to the bound), so the rule always finds
//!   room, except for one value larger than its tenant's whole share: that value is not
//!   remembered (`Inserted::TooLarge`) rather than flushing other tenants.
//!
//! So a client flooding unique keys only recycles its own share, and a tenant under its
//! share keeps its entries until they expire. Expired entries are dropped whenever their
//! tenant is touched, and a round-robin sweep visits one other tenant per insert.
//!
//! Why per-tenant FIFO queues instead of one global LRU: eviction must pick the oldest
//! entry of a given tenant in O(1); the TTL is the same for every entry of a cache, so a
//! tenant's queue is in expiry order too, and expired entries are always at its front.
//!
//! Keys are seeded fingerprints rather than strings, so a key costs 16 bytes whatever its
//! length; two keys would have to collide on 128 seeded bits to be confused. Tenants are
//! 64-bit seeded fingerprints: two tenants colliding would only share one share.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::mem::size_of;

use foldhash::fast::FixedState;

/// Upper bound on entries in one cache.
pub const CACHE_ENTRIES_MAX: usize = 1 << 22;
/// Entries a cache's map is sized for at start; beyond, it grows as entries arrive.
pub const CACHE_ENTRIES_PREALLOCATED_MAX: usize = 1 << 16;
/// Bytes charged per entry for the allocator's bookkeeping of the value's heap block.
const ALLOCATION_HEADER_BYTES: usize = 16;
/// A heap block is rounded up to its allocator size class: mimalloc's classes are at most
/// 1/8 apart, so a value is charged an eighth more than its length.
const SIZE_CLASS_SLACK_DIVISOR: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64, u64);

/// The tenant an entry is charged to, as a seeded fingerprint of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantKey(u64);

/// What `insert_new` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (possibly after evicting entries as the fairness rule allows).
    New,
    /// A live entry already holds the key; nothing changed.
    Present,
    /// The value is larger than its tenant's share could ever hold; not stored.
    TooLarge,
}

/// A cache's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub entries_max: usize,
    pub bytes_max: usize,
    pub ttl_ns: u64,
}

#[derive(Debug)]
struct Entry<V> {
    expires_ns: u64,
    /// The tenant slot whose queue holds this entry.
    slot: u32,
    /// What the entry is charged: key, value's heap bytes, overhead.
    bytes: u32,
    value: V,
}

/// One tenant's entries, oldest first, and what they are charged.
#[derive(Debug, Default)]
struct TenantSlot {
    key: Option<TenantKey>,
    order: VecDeque<(Fingerprint, u64)>,
    bytes: usize,
}

#[derive(Debug)]
pub struct TtlCache<V> {
    map: HashMap<Fingerprint, Entry<V>, FixedState>,
    /// Tenant slots; an index stays valid while the slot is in use. Free slots have no key.
    slots: Vec<TenantSlot>,
    free: Vec<u32>,
    index: HashMap<TenantKey, u32, FixedState>,
    bytes: usize,
    limits: CacheLimits,
    /// Where the next sweep and the next search for an over-share tenant start.
    cursor: usize,
    hi: FixedState,
    lo: FixedState,
}

impl<V> TtlCache<V> {
    pub fn new(limits: CacheLimits, seed: u64) -> Self {
        let entries_max = limits.entries_max.clamp(1, CACHE_ENTRIES_MAX);
        let limits = CacheLimits {
            entries_max,
            ..limits
        };
        let fits = limits.bytes_max / Self::entry_overhead();
        let preallocated = entries_max.min(fits).min(CACHE_ENTRIES_PREALLOCATED_MAX);
        TtlCache {
            map: HashMap::with_capacity_and_hasher(preallocated, FixedState::with_seed(seed)),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::with_hasher(FixedState::with_seed(seed.rotate_left(29))),
            bytes: 0,
            limits,
            cursor: 0,
            hi: FixedState::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            lo: FixedState::with_seed(seed.rotate_left(17) ^ 0xc2b2_ae3d_27d4_eb4f),
        }
    }

    /// Bytes charged to every entry besides its key and its value's heap bytes: the map
    /// slot (key, entry, control byte) and the tenant queue slot, each doubled for the
    /// slack of a table that grows by doubling, and one allocation header.
    pub const fn entry_overhead() -> usize {
        let map_slot = size_of::<(Fingerprint, Entry<V>)>() + 1;
        let queue_slot = size_of::<(Fingerprint, u64)>();
        2 * (map_slot + queue_slot) + ALLOCATION_HEADER_BYTES
    }

    /// What an entry whose value holds `value_bytes` on the heap is charged.
    pub const fn charge(value_bytes: usize) -> usize {
        let slack = value_bytes.div_ceil(SIZE_CLASS_SLACK_DIVISOR);
        size_of::<Fingerprint>() + value_bytes + slack + Self::entry_overhead()
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

    /// The tenant key of a tenant id (distinct from any key's fingerprint).
    pub fn tenant_key(&self, tenant: &[u8]) -> TenantKey {
        let mut h = self.lo.build_hasher();
        h.write_u8(0xff);
        h.write(tenant);
        TenantKey(h.finish())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes charged to the entries held (expired ones included until dropped).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes charged to one tenant's entries.
    pub fn tenant_bytes(&self, tenant: TenantKey) -> usize {
        self.index
            .get(&tenant)
            .map_or(0, |&i| self.slots[i as usize].bytes)
    }

    pub fn get(&self, key: Fingerprint, now_ns: u64) -> Option<&V> {
        self.map
            .get(&key)
            .filter(|e| e.expires_ns > now_ns)
            .map(|e| &e.value)
    }

    /// Inserts unless a live entry exists, charged to `tenant`; `value_bytes` is what the
    /// value holds on the heap. Makes room by the fairness rule (module doc).
    pub fn insert_new(
        &mut self,
        tenant: TenantKey,
        key: Fingerprint,
        value: V,
        value_bytes: usize,
        now_ns: u64,
    ) -> Inserted {
        if let Some(entry) = self.map.get(&key) {
            if entry.expires_ns > now_ns {
                return Inserted::Present;
            }
            // Expired entries sit at the front of their queue: dropping the front drops it.
            let slot = entry.slot as usize;
            self.expire_front(slot, now_ns, None);
            // Only a clock that went backwards leaves it: keep the entry there is.
            if self.map.contains_key(&key) {
                return Inserted::Present;
            }
        }
        let cost = Self::charge(value_bytes);
        let t = self.slot_of(tenant);
        self.expire_front(t, now_ns, Some(t));
        self.sweep(t, now_ns);
        let inserted = match u32::try_from(cost) {
            Ok(cost32) if self.make_room(t, cost) => {
                let expires_ns = now_ns.saturating_add(self.limits.ttl_ns);
                let entry = Entry {
                    expires_ns,
                    slot: t as u32,
                    bytes: cost32,
                    value,
                };
                self.map.insert(key, entry);
                let slot = &mut self.slots[t];
                slot.order.push_back((key, expires_ns));
                slot.bytes += cost;
                self.bytes += cost;
                Inserted::New
            }
            _ => Inserted::TooLarge,
        };
        if self.slots[t].order.is_empty() {
            self.release(t);
        }
        inserted
    }

    /// The slot of `tenant`, taking a free one (or a new one) if it holds nothing yet.
    fn slot_of(&mut self, tenant: TenantKey) -> usize {
        if let Some(&i) = self.index.get(&tenant) {
            return i as usize;
        }
        let i = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(TenantSlot::default());
                self.slots.len() - 1
            }
        };
        self.slots[i].key = Some(tenant);
        let i32 = u32::try_from(i).expect("tenant slots are bounded by entries");
        self.index.insert(tenant, i32);
        i
    }

    /// Frees an empty slot.
    fn release(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        assert!(
            slot.order.is_empty() && slot.bytes == 0,
            "released a tenant with entries"
        );
        if let Some(key) = slot.key.take() {
            self.index.remove(&key);
            // A tenant that flooded and left gives its queue's memory back.
            slot.order = VecDeque::new();
            self.free.push(i as u32);
        }
    }

    /// Tenants holding entries, counting the inserting one.
    fn tenants(&self) -> usize {
        self.index.len()
    }

    /// Evicts by the fairness rule until an entry of `cost` bytes fits; false when it
    /// cannot (the value alone exceeds its tenant's share).
    fn make_room(&mut self, t: usize, cost: usize) -> bool {
        loop {
            let over_bytes = self.bytes + cost > self.limits.bytes_max;
            let over_entries = self.map.len() >= self.limits.entries_max;
            if !over_bytes && !over_entries {
                return true;
            }
            let n = self.tenants().max(1);
            let share = (self.limits.bytes_max / n, self.limits.entries_max / n);
            let mine = &self.slots[t];
            let over_share = mine.bytes + cost > share.0 || mine.order.len() >= share.1;
            let victim = if over_share {
                t
            } else {
                self.over_share(t, share).unwrap_or(t)
            };
            if self.slots[victim].order.is_empty() {
                return false;
            }
            self.evict_front(victim);
            if victim != t && self.slots[victim].order.is_empty() {
                self.release(victim);
            }
        }
    }

    /// A tenant other than `t` holding more than `share` (bytes, entries), searched from
    /// the cursor; the cursor stays on it, as it is likely to be the next victim too.
    fn over_share(&mut self, t: usize, share: (usize, usize)) -> Option<usize> {
        let n = self.slots.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let slot = &self.slots[i];
            if i != t && (slot.bytes > share.0 || slot.order.len() > share.1) {
                self.cursor = i;
                return Some(i);
            }
        }
        None
    }

    /// Drops expired entries of one other tenant, round-robin, so that a tenant gone
    /// quiet gives its bytes back within one pass over the tenants.
    fn sweep(&mut self, t: usize, now_ns: u64) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        self.cursor = (self.cursor + 1) % n;
        let i = self.cursor;
        if i != t && self.slots[i].key.is_some() {
            self.expire_front(i, now_ns, Some(t));
        }
    }

    /// Drops slot `i`'s expired entries (they are at its front); frees the slot if that
    /// empties it, unless it is `keep` (the slot being inserted into).
    fn expire_front(&mut self, i: usize, now_ns: u64, keep: Option<usize>) {
        while let Some(&(_, expires_ns)) = self.slots[i].order.front() {
            if expires_ns > now_ns {
                break;
            }
            self.evict_front(i);
        }
        if self.slots[i].order.is_empty() && keep != Some(i) {
            self.release(i);
        }
    }

    /// Removes slot `i`'s oldest entry.
    fn evict_front(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let (key, expires_ns) = slot.order.pop_front().expect("evict from an empty tenant");
        let entry = self
            .map
            .remove(&key)
            .expect("every queued key is in the map");
        assert_eq!(entry.expires_ns, expires_ns, "queue and map disagree");
        assert_eq!(entry.slot as usize, i, "entry queued under another tenant");
        let cost = entry.bytes as usize;
        slot.bytes -= cost;
        self.bytes -= cost;
    }
}

#[cfg(test)]
mod tests;
