use proptest::prelude::*;

use super::*;

const VALUE: usize = 1_000;

fn limits(entries_max: usize, bytes_max: usize, ttl_ns: u64) -> CacheLimits {
    CacheLimits {
        entries_max,
        bytes_max,
        ttl_ns,
    }
}

/// A cache holding `per_share` entries of `VALUE` bytes per tenant when `tenants` share it.
fn cache_for(tenants: usize, per_share: usize, ttl_ns: u64) -> TtlCache<u32> {
    let bytes_max = tenants * per_share * TtlCache::<u32>::charge(VALUE);
    TtlCache::new(limits(1 << 20, bytes_max, ttl_ns), 7)
}

fn key(c: &TtlCache<u32>, tenant: &str, i: u32) -> Fingerprint {
    c.fingerprint(&[tenant.as_bytes(), &i.to_le_bytes()])
}

/// The counted bytes are the sum of the tenants' bytes, and within the bound.
fn check_accounting<V>(c: &TtlCache<V>) {
    let sum: usize = c.slots.iter().map(|s| s.bytes).sum();
    let queued: usize = c.slots.iter().map(|s| s.order.len()).sum();
    assert_eq!(sum, c.bytes());
    assert_eq!(queued, c.len());
    assert!(c.bytes() <= c.limits.bytes_max);
    assert!(c.len() <= c.limits.entries_max);
    assert_eq!(c.index.len() + c.free.len(), c.slots.len());
}

/// A live key is found and not replaced; after its TTL it is gone and can be reused.
#[test]
fn ttl_and_first_wins() {
    let mut c = TtlCache::new(limits(8, 1 << 20, 100), 1);
    let t = c.tenant_key(b"acme");
    let k = c.fingerprint(&[b"acme", b"key-1"]);
    assert_eq!(c.insert_new(t, k, "first", 0, 0), Inserted::New);
    assert_eq!(c.insert_new(t, k, "second", 0, 50), Inserted::Present);
    assert_eq!(c.get(k, 99), Some(&"first"));
    assert_eq!(c.get(k, 100), None);
    assert_eq!(c.insert_new(t, k, "third", 0, 100), Inserted::New);
    assert_eq!(c.get(k, 150), Some(&"third"));
    assert_eq!(c.len(), 1);
    check_accounting(&c);
}

/// At the entry bound the tenant's oldest entry goes; the cache never grows past it.
#[test]
fn bounded_fifo_eviction() {
    let mut c = TtlCache::new(limits(3, 1 << 20, 1_000), 1);
    let t = c.tenant_key(b"acme");
    let keys: Vec<_> = (0..5u8).map(|i| c.fingerprint(&[&[i]])).collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.insert_new(t, *k, i, 0, 0), Inserted::New);
        assert!(c.len() <= 3);
    }
    assert_eq!(c.get(keys[0], 1), None);
    assert_eq!(c.get(keys[1], 1), None);
    assert_eq!(c.get(keys[4], 1), Some(&4));
}

/// Large values are bounded by bytes, not count: the charged bytes never pass the bound
/// and each entry is charged at least its value.
#[test]
fn bounded_by_bytes() {
    let charge = TtlCache::<u32>::charge(70 << 10);
    assert!(charge > 70 << 10);
    let mut c = TtlCache::new(limits(1 << 16, 10 * charge, 1_000), 3);
    let t = c.tenant_key(b"acme");
    for i in 0..100u32 {
        let k = key(&c, "acme", i);
        assert_eq!(c.insert_new(t, k, i, 70 << 10, 0), Inserted::New);
        check_accounting(&c);
    }
    assert_eq!(c.len(), 10);
    assert_eq!(c.bytes(), 10 * charge);
    assert_eq!(c.get(key(&c, "acme", 89), 1), None);
    assert_eq!(c.get(key(&c, "acme", 90), 1), Some(&90));
}

/// A tenant flooding unique keys recycles its own share: another tenant's entry, under
/// its share, survives any number of the flood's inserts.
#[test]
fn flood_does_not_evict_a_tenant_under_its_share() {
    let mut c = cache_for(2, 50, u64::MAX);
    let (a, b) = (c.tenant_key(b"a"), c.tenant_key(b"b"));
    let kb = key(&c, "b", 0);
    assert_eq!(c.insert_new(b, kb, 0, VALUE, 0), Inserted::New);
    for i in 0..10_000 {
        let k = key(&c, "a", i);
        assert_eq!(c.insert_new(a, k, i, VALUE, 1), Inserted::New);
    }
    check_accounting(&c);
    assert_eq!(c.get(kb, 2), Some(&0));
    // The flood kept its newest entries, up to the bound.
    assert_eq!(c.get(key(&c, "a", 9_999), 2), Some(&9_999));
    assert_eq!(c.bytes() / TtlCache::<u32>::charge(VALUE), 100);
}

/// A tenant within its share gets room from the tenant over its share, oldest first,
/// and from no one else.
#[test]
fn tenant_within_share_evicts_the_one_over_it() {
    let mut c = cache_for(3, 10, u64::MAX);
    let [a, b, d] = [b"a", b"b", b"d"].map(|t| c.tenant_key(t));
    // `a` fills the cache alone (its share is everything while it is alone).
    for i in 0..30 {
        assert_eq!(c.insert_new(a, key(&c, "a", i), i, VALUE, 0), Inserted::New);
    }
    assert_eq!(c.insert_new(b, key(&c, "b", 0), 0, VALUE, 0), Inserted::New);
    assert_eq!(c.get(key(&c, "a", 0), 1), None, "a's oldest made room");
    assert_eq!(c.get(key(&c, "a", 1), 1), Some(&1));
    for i in 1..10 {
        assert_eq!(c.insert_new(b, key(&c, "b", i), i, VALUE, 0), Inserted::New);
    }
    assert_eq!(c.insert_new(d, key(&c, "d", 0), 0, VALUE, 0), Inserted::New);
    // Each of three holds its share of ten at most; b (at its share) lost nothing.
    for i in 0..10 {
        assert_eq!(c.get(key(&c, "b", i), 1), Some(&i));
    }
    assert_eq!(c.tenant_bytes(a), 19 * TtlCache::<u32>::charge(VALUE));
    // b, at its share, now pays for its next entry itself.
    assert_eq!(
        c.insert_new(b, key(&c, "b", 10), 10, VALUE, 0),
        Inserted::New
    );
    assert_eq!(c.get(key(&c, "b", 0), 1), None);
    assert_eq!(c.tenant_bytes(a), 19 * TtlCache::<u32>::charge(VALUE));
    check_accounting(&c);
}

/// A value larger than its tenant's share is not remembered, and evicts nobody.
#[test]
fn value_over_the_share_is_refused_without_evicting_others() {
    let mut c = cache_for(2, 10, u64::MAX);
    let (a, b) = (c.tenant_key(b"a"), c.tenant_key(b"b"));
    for i in 0..10 {
        assert_eq!(c.insert_new(b, key(&c, "b", i), i, VALUE, 0), Inserted::New);
    }
    let huge = 11 * VALUE * 2;
    assert_eq!(
        c.insert_new(a, key(&c, "a", 0), 0, huge, 0),
        Inserted::TooLarge
    );
    for i in 0..10 {
        assert_eq!(c.get(key(&c, "b", i), 1), Some(&i));
    }
    assert_eq!(c.tenant_bytes(a), 0);
    check_accounting(&c);
}

/// A tenant gone quiet gives its expired bytes back as others insert (the sweep), and
/// its slot is freed for reuse.
#[test]
fn expired_entries_of_a_quiet_tenant_are_swept() {
    let mut c = cache_for(4, 10, 100);
    let (a, b) = (c.tenant_key(b"a"), c.tenant_key(b"b"));
    for i in 0..5 {
        assert_eq!(c.insert_new(a, key(&c, "a", i), i, VALUE, 0), Inserted::New);
    }
    for i in 0..4 {
        assert_eq!(
            c.insert_new(b, key(&c, "b", i), i, VALUE, 200),
            Inserted::New
        );
    }
    assert_eq!(c.tenant_bytes(a), 0);
    assert_eq!(c.len(), 4);
    assert_eq!(c.index.len(), 1);
    check_accounting(&c);
}

/// Key parts are length-prefixed: ("ab","c") and ("a","bc") differ.
#[test]
fn parts_do_not_run_together() {
    let c: TtlCache<()> = TtlCache::new(limits(1, 1 << 20, 1), 1);
    assert_ne!(c.fingerprint(&[b"ab", b"c"]), c.fingerprint(&[b"a", b"bc"]));
}

#[derive(Debug, Clone)]
enum Op {
    Insert { tenant: u8, key: u16, bytes: u16 },
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..5, 0u16..400, 0u16..4_000)
            .prop_map(|(tenant, key, bytes)| Op::Insert { tenant, key, bytes }),
        1 => (0u16..300).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever the mix of tenants, keys, sizes and time: the bounds hold, the books
    /// balance, and a live entry of a tenant within its share is only ever evicted by its
    /// own inserts.
    #[test]
    fn fairness_and_bounds_hold(ops in prop::collection::vec(op(), 1..400),
                                entries_max in 4usize..64, kib in 4usize..64) {
        let mut c: TtlCache<()> = TtlCache::new(limits(entries_max, kib << 10, 1_000), 9);
        let mut now = 0u64;
        let mut live: Vec<(u8, Fingerprint)> = Vec::new();
        for op in ops {
            let (tenant, k, bytes) = match op {
                Op::Tick(dt) => {
                    now += u64::from(dt);
                    continue;
                }
                Op::Insert { tenant, key, bytes } => (tenant, key, usize::from(bytes)),
            };
            let t = c.tenant_key(&[tenant]);
            let fp = c.fingerprint(&[&[tenant], &k.to_le_bytes()]);
            // Who is within its share before this insert (shares counting the inserter).
            let mut tenants: Vec<u8> = live.iter().map(|(t, _)| *t).collect();
            tenants.push(tenant);
            tenants.sort_unstable();
            tenants.dedup();
            let n = tenants.len();
            let within = |u: u8| {
                let key = c.tenant_key(&[u]);
                let entries = live.iter().filter(|(t, _)| *t == u).count();
                c.tenant_bytes(key) <= (kib << 10) / n && entries <= entries_max / n
            };
            let protected: Vec<(u8, Fingerprint)> = live
                .iter()
                .filter(|(u, f)| *u != tenant && within(*u) && c.get(*f, now).is_some())
                .copied()
                .collect();
            let inserted = c.insert_new(t, fp, (), bytes, now);
            check_accounting(&c);
            for (u, f) in &protected {
                prop_assert!(c.get(*f, now).is_some(), "tenant {u} within its share lost a key");
            }
            if inserted == Inserted::New {
                live.push((tenant, fp));
            }
            live.retain(|(_, f)| c.map.contains_key(f));
        }
    }
}
