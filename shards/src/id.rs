//! Typed identifiers that cross module boundaries: a shard is not a core is not an index.
//!
//! Why not bare integers: a `usize` that is sometimes a CPU number and sometimes a shard
//! index is how a shard ends up pinned to the wrong core. The types make the mapping
//! (`ShardId` → `CoreId`, decided once by the runtime) explicit.

use std::fmt;

/// Upper bound on shards in one process. `ShardId` is a `u16`, and the mesh holds
/// `n * (n - 1)` rings, so this also bounds the ring count (65 280 at the maximum).
pub const SHARDS_MAX: usize = 256;

/// Upper bound on CPU numbers we accept: the kernel's `CPU_SETSIZE` as exposed by glibc.
pub const CORES_MAX: usize = 1024;

const _: () = assert!(SHARDS_MAX <= u16::MAX as usize + 1);
const _: () = assert!(SHARDS_MAX <= CORES_MAX);
const _: () = assert!(CORES_MAX == libc::CPU_SETSIZE as usize);

/// Index of a shard, `0..shard_count`. Dense, so it indexes arrays directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard's position as an array index.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Builds a shard id from an array index.
    ///
    /// # Panics
    /// If `index >= SHARDS_MAX`: shard counts are validated long before ids are made.
    #[inline]
    pub fn from_index(index: usize) -> ShardId {
        assert!(index < SHARDS_MAX, "shard index {index} out of range");
        ShardId(index as u16)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A logical CPU number as the kernel counts them (`/proc/cpuinfo` "processor").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_id_round_trips_through_index() {
        assert_eq!(ShardId::from_index(7).index(), 7);
        assert_eq!(ShardId::from_index(SHARDS_MAX - 1), ShardId(255));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn shard_id_beyond_max_is_a_bug() {
        let _ = ShardId::from_index(SHARDS_MAX);
    }
}
