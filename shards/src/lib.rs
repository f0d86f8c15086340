//! Thread-per-core runtime for Shardline: one pinned executor per core, a stable
//! tenant → shard partition, and a mesh of bounded SPSC rings between shards.
//! It knows nothing about routing policies.

pub mod id;
pub mod mesh;
pub mod partition;
pub mod preflight;
pub mod ring;
pub mod runtime;
pub mod topology;
pub mod wake;
