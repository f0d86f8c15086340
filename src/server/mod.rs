//! The router as a server: one shard per core, each owning a partition of the tenants
//! and their state, serving HTTP (and later NATS) and handing requests for other shards'
//! tenants over the SPSC ring mesh.

pub mod cache;
pub mod handoff;
pub mod owner;
