//! Fault injection for the failure tests, compiled only with the `fault-injection` cargo
//! feature (off by default: a release build has none of these hooks, and a request
//! cannot reach them).
//!
//! The faults are the ones the router must survive without an operator's help: a host
//! name lookup that hangs (a dead DNS server), a shard whose thread stops running its
//! tasks (a runaway computation, a blocking call), and a shard that panics (a bug). Each
//! is triggered from outside, the way the tests drive the real binary:
//! - `FAULT_INJECTION_RESOLVE_DELAY_MS=<ms>`: every host name lookup sleeps that long
//!   before asking the system resolver;
//! - a decide request whose tenant is `fault-stall-<ms>` blocks the thread of the shard
//!   that accepted it for `<ms>` milliseconds (at most `FAULT_STALL_MS_MAX`);
//! - a decide request whose tenant is `fault-panic` panics the shard that accepted it;
//! - `FAULT_INJECTION_DIR_FSYNC_POLICY=<prefix>`: the policy store's directory fsync fails
//!   for policies whose id starts with `<prefix>` (`src/admin/store.rs`).
//!
//! The variables are not `SHARDLINE_*`: that prefix belongs to configuration overrides.
//!
//! Why tenant ids and not an admin route: the hooks need no token and no admin API, and
//! the test picks the faulty shard by the port it sends to (`shard_port_base + shard`).

use std::time::Duration;

/// Longest stall a request may ask for: a test's bounded wait, not a way to hang a shard.
pub const FAULT_STALL_MS_MAX: u64 = 60_000;

/// Environment variable that delays every host name lookup.
pub const RESOLVE_DELAY_ENV: &str = "FAULT_INJECTION_RESOLVE_DELAY_MS";

/// Sleeps as long as `FAULT_INJECTION_RESOLVE_DELAY_MS` says, on the calling thread.
pub fn delay_resolve() {
    let delay = std::env::var(RESOLVE_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Runs the fault a decide request's tenant asks for, on the shard that accepted it.
pub fn on_decide(shard: shards::ShardId, tenant: &str) {
    if tenant == "fault-panic" {
        panic!("fault injection: shard {shard} panics as asked by a request");
    }
    let stall = tenant
        .strip_prefix("fault-stall-")
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = stall {
        let ms = ms.min(FAULT_STALL_MS_MAX);
        log::warn!("fault injection: shard {shard} stalls for {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
    }
}
