//! Thread-per-core runtime for Shardline: one pinned glommio executor per core, a stable
//! tenant → shard partition, and a mesh of bounded SPSC rings between shards. It knows
//! nothing about routing policies: messages are a type parameter.
//!
//! # Design
//! - **Shared nothing.** Each shard is one OS thread pinned to one core, running one
//!   glommio `LocalExecutor` (io_uring). A shard owns the tenants that [`Partitioner`] maps
//!   to it; no state is shared and no lock is taken on the request path.
//! - **Handoff through SPSC rings.** Work for another shard's tenant crosses a bounded
//!   single-producer single-consumer ring ([`ring`]), one per ordered pair of shards
//!   ([`Mesh`]). A full ring hands the message back: the caller sheds load and counts it.
//! - **Wake only the sleeping.** A busy shard drains its rings in its loop, so a send costs
//!   a store, a fence and a load. An idle shard spins briefly, then parks; only then does a
//!   sender pay for a wake (see [`wake`]). An idle process uses no CPU.
//! - **Fail loudly, early.** [`preflight()`] names the real cause when io_uring or memlock
//!   would stop glommio; [`Runtime::start`] returns the first shard's failure instead of
//!   hanging; a shard panic is reported with its message; a shard that stops running its
//!   tasks is found by a [`Watchdog`] thread from its missing [`Heartbeats`].
//!
//! # Limits
//! - One process, one node: no cross-node partitioning or rebalancing. Changing the shard
//!   count re-homes `1/(n+1)` of tenants per added shard; in-memory state does not move.
//! - `n` shards hold `n * (n - 1)` rings of `ring_slots` slots: memory grows with the square
//!   of the shard count (64 shards × 1024 slots × 64-byte messages ≈ 264 MB).
//! - The mesh connects shards only. A plain thread (the NATS bridge) can exchange work
//!   through rings from [`ring::ring`], but it is not a mesh member: it polls its rings and
//!   its own wake-up is left to its owner.
//! - Stopping is cooperative (see [`mesh`]): a shard that never returns to
//!   [`ShardEnd::next_batch`] is reported after the stop timeout and left detached.
//!
//! # Example
//! ```no_run
//! use shards::{Batch, Inbound, Runtime, RuntimeConfig, ShardContext};
//!
//! let runtime = Runtime::start(RuntimeConfig::default(), |mut ctx: ShardContext<u64>| {
//!     Ok::<_, std::convert::Infallible>(async move {
//!         let mut batch = Batch::default();
//!         loop {
//!             match ctx.end.next_batch(&mut batch).await {
//!                 Inbound::Messages => batch.drain().for_each(|m| println!("{m:?}")),
//!                 Inbound::Stopping => ctx.end.quiesce(),
//!                 Inbound::Stopped => break,
//!             }
//!         }
//!     })
//! })?;
//! runtime.stop()?;
//! # Ok::<(), shards::RuntimeError>(())
//! ```

pub mod id;
pub mod mesh;
pub mod partition;
pub mod preflight;
pub mod ring;
pub mod runtime;
pub mod topology;
pub mod wake;
pub mod watchdog;

pub use id::{CoreId, ShardId, CORES_MAX, SHARDS_MAX};
pub use mesh::{Batch, Envelope, Inbound, Mesh, Outbox, ShardEnd, TrySendError, BATCH_ITEMS_MAX};
pub use partition::Partitioner;
pub use preflight::{preflight, PreflightError, PreflightReport};
pub use ring::{Consumer, Producer, RING_SLOTS_MAX};
pub use runtime::{
    PollMode, Runtime, RuntimeConfig, RuntimeError, ShardContext, ShardExit, POLL_SPIN_US_DEFAULT,
    POLL_SPIN_US_MAX,
};
pub use topology::{CoreSelection, Topology, TopologyError};
pub use wake::{MeshControl, SPIN_ITERATIONS_MAX};
pub use watchdog::{Heartbeats, StallChange, Watchdog};
