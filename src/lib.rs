//! Shardline: a routing-decision service for AI/LLM traffic.
//!
//! The library holds everything but the CLI: the wire contract (`contract`), policy
//! parsing (`policy`), the sans-IO decision engine (`decide`), the transports
//! (`transport`), the server that runs them on the shards (`server`), and its operations
//! side (`admin`, `config`, `logging`, `metrics`); `bench` is the part of the load
//! generator that needs the router (its in-process router and NATS client). The tools that
//! need nothing of the router (gate, top, tune, the rest of the load generator) are the
//! `shardline-tools` crate. `cluster` is what runs between the nodes of a cluster on NATS
//! (shared policies, membership, rate-limit shares, results). Transports drive the engine; the engine
//! never does I/O or reads a clock, so it can be tested, fuzzed and benchmarked alone.

pub mod admin;
// The sans-IO core lives in its own crate (Cargo enforces its layering); re-exported so
// `shardline::decide` and friends keep their paths.
pub use shardline_core::{answer, contract, decide, extensions, policy, shard};
pub mod bench;
pub mod bundled;
pub mod cluster;
pub mod config;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod logging;
pub mod metrics;
pub mod preflight;
pub mod server;
pub mod transport;
