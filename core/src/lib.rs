//! Shardline's sans-IO core: the v1 wire contract (`contract`), policy parsing
//! (`policy`), the decision engine (`decide`), everything about an extension call but
//! sending it (`extensions`), the encoding of answers (`answer`), and one shard's request
//! lifecycle with its state and caches (`shard`).
//!
//! Nothing in this crate reads a clock, touches a socket, spawns a thread or knows the
//! runtime: callers pass `Now` in and carry the bytes out. Cargo enforces it — the crate
//! depends on no runtime, I/O or time crate — so the transports (the `shardline` crate)
//! depend on the core and never the reverse, and the core can be tested, fuzzed and run
//! in a deterministic simulation alone.

pub mod answer;
pub mod civil;
pub mod contract;
pub mod decide;
pub mod extensions;
pub mod policy;
pub mod shard;
