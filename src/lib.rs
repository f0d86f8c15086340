//! Shardline: a routing-decision service for AI/LLM traffic.
//!
//! The library holds everything but the CLI: the wire contract, policy parsing, and the
//! sans-IO decision engine. Transports drive the engine; the engine never does I/O or
//! reads a clock, so it can be tested, fuzzed and benchmarked alone.

pub mod answer;
pub mod contract;
pub mod decide;
pub mod policy;
pub mod transport;
