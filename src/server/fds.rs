//! File descriptors: fit the connection cap to the open-file limit at start.
//!
//! Why: every connection is a file descriptor, and a process at its `RLIMIT_NOFILE` can no
//! longer accept: the connections wait in the kernel's backlog, unanswered, until their
//! clients give up. The default soft limit (often 1024) is far below
//! `limits.connections_per_shard_max × shards`, while the hard limit usually is not, so
//! the soft limit is raised to the hard one first.
//!
//! When even the hard limit is too low the router still starts, with a warning and a
//! lower effective connection cap, rather than refusing to start: a node whose limit an
//! operator cannot change at once (a container runtime's default) still serves, and a
//! connection over the lowered cap gets the same `503 overloaded` as one over the
//! configured cap. Only a limit too low for even one connection per shard is an error.
//! Both messages name the fix. What the cap leaves over (connections being refused, files
//! opened by admin writes, NATS) may still run into the limit; the accept loop keeps one
//! spare descriptor per shard to answer `503` even then (`transport::http::serve`).

use thiserror::Error;

/// Descriptors the process needs besides the shards: standard streams, the signal pipe,
/// policy and extension files being read, the policy watcher, admin writes, logs.
pub const FDS_PROCESS_RESERVED: u64 = 64;
/// Descriptors each shard needs besides its connections: glommio's three io_uring rings
/// and eventfds, the mesh's wakeups, up to three listeners and their port reservations,
/// NATS connections, the spare descriptor for refusals at the limit, and room for some
/// connections being refused.
pub const FDS_PER_SHARD_RESERVED: u64 = 32;

/// What the open-file limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// The soft limit after raising it.
    pub limit: u64,
    /// The connection cap per shard to serve with (the configured one, or lower).
    pub connections_per_shard: usize,
    /// Descriptors the configured cap needs.
    pub needed: u64,
}

/// The limit cannot hold even one connection per shard.
#[derive(Debug, Error)]
pub enum FdError {
    #[error(
        "the open-file limit ({limit}, hard limit {hard}) is too low for {shards} shard(s): \
         at least {minimum} are needed, {needed} for limits.connections_per_shard_max; \
         raise it (`ulimit -n {needed}` before starting, or `LimitNOFILE={needed}` in the \
         systemd unit), or run fewer shards (server.cores)"
    )]
    TooLow {
        limit: u64,
        hard: u64,
        shards: usize,
        minimum: u64,
        needed: u64,
    },
    #[error("cannot read or raise RLIMIT_NOFILE: {0}")]
    Rlimit(std::io::Error),
}

/// Descriptors `shards` shards with `connections` connections each need.
pub fn needed(shards: usize, connections: usize) -> u64 {
    FDS_PROCESS_RESERVED
        .saturating_add((shards as u64).saturating_mul(FDS_PER_SHARD_RESERVED + connections as u64))
}

/// Raises the soft open-file limit toward what `shards × connections_max` needs (up to
/// the hard limit) and returns the connection cap that fits; logs a warning when that
/// cap is below `connections_max`.
pub fn fit(shards: usize, connections_max: usize) -> Result<FdPlan, FdError> {
    let needed = needed(shards, connections_max);
    let (soft, hard) = nofile().map_err(FdError::Rlimit)?;
    let mut limit = soft;
    if soft < needed {
        let target = if hard == libc::RLIM_INFINITY {
            needed
        } else {
            hard.min(needed)
        };
        if target > soft {
            set_nofile(target, hard).map_err(FdError::Rlimit)?;
            limit = target;
        }
    }
    let plan = plan(limit, shards, connections_max);
    match plan {
        Some(plan) if plan.connections_per_shard < connections_max => {
            log::warn!(
                "the open-file limit ({limit}, hard limit {hard}) holds {cap} connections per \
                 shard, not limits.connections_per_shard_max = {connections_max}: serving with \
                 {cap} (more are answered 503 overloaded). To serve {connections_max}, raise \
                 the hard limit to {needed} (`ulimit -n {needed}` before starting, or \
                 `LimitNOFILE={needed}` in the systemd unit), or lower \
                 limits.connections_per_shard_max",
                cap = plan.connections_per_shard,
            );
            Ok(plan)
        }
        Some(plan) => Ok(plan),
        None => Err(FdError::TooLow {
            limit,
            hard,
            shards,
            minimum: self::needed(shards, 1),
            needed,
        }),
    }
}

/// The cap that fits `limit`, or `None` when not even one connection per shard does.
fn plan(limit: u64, shards: usize, connections_max: usize) -> Option<FdPlan> {
    let needed = needed(shards, connections_max);
    let per_shard = limit.saturating_sub(FDS_PROCESS_RESERVED) / (shards.max(1) as u64);
    let fits = per_shard.saturating_sub(FDS_PER_SHARD_RESERVED);
    let cap = usize::try_from(fits)
        .unwrap_or(usize::MAX)
        .min(connections_max);
    (cap >= 1).then_some(FdPlan {
        limit,
        connections_per_shard: cap,
        needed,
    })
}

fn nofile() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// `process_open_fds` and `process_max_fds`, the standard names Prometheus's own clients
/// use, so the usual "descriptors near the limit" alert works unchanged: the entries of
/// `/proc/self/fd` and the soft `RLIMIT_NOFILE` (the one `accept` runs into). Read at
/// scrape time only; a series is left out when it cannot be read (not Linux, no /proc).
/// Counting the directory costs one entry per open descriptor, which the connection cap
/// bounds.
pub fn process_series() -> Vec<crate::metrics::ExtraMetric> {
    use crate::metrics::ExtraMetric;
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries; it is gone once counted.
        let open = entries.count().saturating_sub(1);
        let help = "Open file descriptors.";
        out.push(ExtraMetric::gauge("process_open_fds", help, open as f64));
    }
    if let Ok((soft, _)) = nofile() {
        let help = "Maximum number of open file descriptors (the soft RLIMIT_NOFILE).";
        out.push(ExtraMetric::gauge("process_max_fds", help, soft as f64));
    }
    out
}

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit(2) reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_what_the_limit_leaves_per_shard() {
        let all = plan(1 << 20, 2, 10_000).unwrap();
        assert_eq!(
            all.connections_per_shard, 10_000,
            "a large limit changes nothing"
        );
        let lowered = plan(64 + 2 * (32 + 100), 2, 10_000).unwrap();
        assert_eq!(lowered.connections_per_shard, 100);
        assert_eq!(lowered.needed, 64 + 2 * (32 + 10_000));
        assert!(plan(64 + 32, 1, 10).is_none(), "no room for one connection");
        assert_eq!(plan(64 + 33, 1, 10).unwrap().connections_per_shard, 1);
    }
}
