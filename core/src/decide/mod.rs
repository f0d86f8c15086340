//! The sans-IO decision engine (SPEC §5).
//!
//! Given the routing table, the shard's mutable state, a validated request and `now`, it
//! returns a decision or a typed error. It performs no I/O and reads no clock: transports
//! pass `Now` in and run extension calls between the phases (`pipeline`). That keeps it
//! deterministic under test (injected time, seeded randomness), fuzzable, and cheap enough
//! to bench alone: the weighted and sticky-hit paths do not allocate.
//!
//! Module map: `pipeline` (phases, admission, extension outcomes), `select` (steps 5–9),
//! `condition` (fallback `when`), `state` (per-shard state and results), `breaker`,
//! `bucket` (rate limit), `rendezvous` (a session's provider, the same on every shard),
//! `sticky` (which sessions this shard already answered), `rng` (weighted draw), `balance`
//! (step 8's learning strategies), `usage` (providers' own rate limits and cooldowns),
//! `shadow` (the copy of a share of calls sent to a provider under evaluation).

pub mod allowance;
pub mod balance;
#[cfg(test)]
mod balance_tests;
pub mod breaker;
pub mod bucket;
pub mod budget;
#[cfg(test)]
mod budget_tests;
pub mod condition;
mod error;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod override_tests;
pub mod pipeline;
pub mod rendezvous;
pub mod rng;
pub mod select;
mod shadow;
#[cfg(test)]
mod shadow_tests;
pub mod share;
#[cfg(test)]
mod sim;
pub mod state;
pub mod sticky;
pub mod sync;
pub mod usage;

#[cfg(test)]
mod tests;

pub use breaker::Outcome;
pub use error::{DecideError, Exclusions};
pub use pipeline::{admit, Decision, Pending, StageOutcome};
pub use state::{Observed, ResultEffect, SessionNote, ShardState, StateConfig};
pub use sync::{Peer, Placement, SyncMsg};
pub use usage::LimitSignal;

use crate::contract::DecideRequest;
use crate::policy::{RoutingTable, StageKind};

/// The time a decision is made at, read by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds (any fixed origin): buckets, breakers, sticky-table expiry.
    pub mono_ns: u64,
    /// Wall-clock Unix milliseconds: request deadlines, sticky sessions' TTL epochs (the
    /// clock every shard and node shares).
    pub unix_ms: u64,
}

/// Decides with no extension transport: every stage is `Unavailable`, so a policy with a
/// required stage answers `extension_unavailable` and optional stages are `skipped`.
pub fn decide(
    table: &RoutingTable,
    state: &mut ShardState,
    req: &DecideRequest<'_>,
    now: Now,
) -> Result<Decision, DecideError> {
    let mut pending = admit(table, state, req, now)?;
    for kind in [StageKind::Pre, StageKind::Validator] {
        for stage in pending.stages(kind) {
            pending.apply(stage, StageOutcome::Unavailable)?;
        }
    }
    pending.select(state, req, now)?;
    for stage in pending.stages(StageKind::Post) {
        pending.apply(stage, StageOutcome::Unavailable)?;
    }
    Ok(pending.finish())
}
