//! Who may steer routing: the token checks of the data-plane routes (`[auth]`), the
//! per-token limit on admin writes, and the counters and log of what was refused.
//!
//! Why at the accepting shard, before any decode of the body or any handoff: a request
//! that will be refused must cost as little as possible, and must not reach the owner's
//! state (a forged `status: error` result opens a circuit as surely as a real one). The
//! token's *tenant* can only be checked once the tenant is known (after decoding), so the
//! order is: token and scope (401 or 403) → decode (400) → tenant (403) → the result's
//! tenant and provider against the routing table (404, and counted as ignored).
//!
//! Results over NATS carry no token: NATS permissions say who may publish on the result
//! subject (docs/OPERATIONS.md). They are still validated against the table here.
//!
//! Refusals are logged at most once per `REFUSAL_LOG_INTERVAL_MS` per kind, with the count
//! of the lines held back, so a flood of bad tokens cannot flood the log. Why a local
//! limiter and not the logger's: it is two atomics, and the counters already hold the
//! exact numbers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::admin::{shown, AuthError, Grant, Permission, Tokens, AUTH_FAILURE_REASONS};
use crate::config::AccessMode;
use crate::metrics::ExtraMetric;
use crate::policy::RoutingTable;

/// At most one refusal line per kind in this many milliseconds.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;
const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// Why a result was ignored: the label of `shardline_results_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// No policy of that tenant is loaded.
    UnknownTenant,
    /// The tenant exists, but none of its policies routes to the provider.
    UnknownProvider,
}

impl Ignored {
    pub const ALL: [Ignored; 2] = [Ignored::UnknownTenant, Ignored::UnknownProvider];

    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::UnknownTenant => "unknown_tenant",
            Ignored::UnknownProvider => "unknown_provider",
        }
    }

    /// Whether a result for (`tenant`, `provider`) can feed any breaker of `table`.
    pub fn check(table: &RoutingTable, tenant: &str, provider: &str) -> Result<(), Ignored> {
        if !table.provider_refs(tenant, provider).is_empty() {
            return Ok(());
        }
        if table.tenants().any(|t| t == tenant) {
            Err(Ignored::UnknownProvider)
        } else {
            Err(Ignored::UnknownTenant)
        }
    }

    pub fn message(self, tenant: &str, provider: &str) -> String {
        let (tenant, provider) = (shown(tenant), shown(provider));
        match self {
            Ignored::UnknownTenant => {
                format!("tenant {tenant} has no policies; the result is ignored")
            }
            Ignored::UnknownProvider => format!(
                "no policy of tenant {tenant} routes to provider {provider}; the result is ignored"
            ),
        }
    }
}

/// Where an admin request was queued: the label of `shardline_admin_queued_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The blocking pool (writes, reads of the store, reloads).
    Blocking,
    /// Another shard's ring (dry-run, circuits of a tenant owned elsewhere).
    Handoff,
}

/// One line per interval; the lines held back in between are counted into the next.
#[derive(Debug, Default)]
struct LogGate {
    next_ns: AtomicU64,
    held: AtomicU64,
}

impl LogGate {
    /// `Some(held back since the last line)` when a line may be written now.
    fn pass(&self, now_ns: u64) -> Option<u64> {
        let next = self.next_ns.load(Relaxed);
        let interval = REFUSAL_LOG_INTERVAL_MS * NS_PER_MS;
        let open = now_ns >= next
            && self
                .next_ns
                .compare_exchange(next, now_ns + interval, Relaxed, Relaxed)
                .is_ok();
        if open {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}

/// The data-plane token checks and their counters; one per process, in `Shared`.
#[derive(Debug)]
pub struct Access {
    tokens: Arc<Tokens>,
    results: AccessMode,
    decide: AccessMode,
    /// Per token: the GCRA "theoretical arrival time" of its next admin write, in ns.
    writes: Mutex<Vec<u64>>,
    write_interval_ns: u64,
    write_burst_ns: u64,
    failures: [AtomicU64; AUTH_FAILURE_REASONS.len()],
    ignored: [AtomicU64; Ignored::ALL.len()],
    queued: [AtomicU64; 2],
    rate_limited: AtomicU64,
    auth_log: LogGate,
    ignored_log: LogGate,
}

impl Access {
    pub fn new(
        tokens: Arc<Tokens>,
        results: AccessMode,
        decide: AccessMode,
        writes_per_second: u32,
    ) -> Access {
        let per_second = u64::from(writes_per_second.max(1));
        let write_interval_ns = NS_PER_S / per_second;
        Access {
            writes: Mutex::new(vec![0; tokens.len()]),
            tokens,
            results,
            decide,
            write_interval_ns,
            // A burst of one second's worth: `per_second` writes back to back.
            write_burst_ns: write_interval_ns * (per_second - 1),
            failures: Default::default(),
            ignored: Default::default(),
            queued: Default::default(),
            rate_limited: AtomicU64::new(0),
            auth_log: LogGate::default(),
            ignored_log: LogGate::default(),
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The token check of `POST /v1/results`, before the body is read: `Some(grant)` when
    /// a token is needed and was valid, `None` when results are open.
    pub fn results_token(
        &self,
        header: Option<&str>,
        now_ns: u64,
    ) -> Result<Option<Grant>, AuthError> {
        self.route_token(self.results, Permission::Results, header, now_ns)
    }

    /// The token check of `POST /v1/decide`; see `results_token`.
    pub fn decide_token(
        &self,
        header: Option<&str>,
        now_ns: u64,
    ) -> Result<Option<Grant>, AuthError> {
        self.route_token(self.decide, Permission::Decide, header, now_ns)
    }

    fn route_token(
        &self,
        mode: AccessMode,
        need: Permission,
        header: Option<&str>,
        now_ns: u64,
    ) -> Result<Option<Grant>, AuthError> {
        if mode == AccessMode::Open {
            return Ok(None);
        }
        let grant = self.tokens.grant(header, need);
        grant
            .map(Some)
            .map_err(|err| self.refused(err, need, now_ns))
    }

    /// The tenant check, once the body named the tenant.
    pub fn tenant(
        &self,
        grant: Option<&Grant>,
        need: Permission,
        tenant: &str,
        now_ns: u64,
    ) -> Result<(), AuthError> {
        match grant {
            Some(g) => (g.scope)
                .require(tenant)
                .map_err(|err| self.refused(err, need, now_ns)),
            None => Ok(()),
        }
    }

    /// The admin token, checked before anything else is done for the request.
    pub fn admin_token(&self, header: Option<&str>, now_ns: u64) -> Result<Grant, AuthError> {
        let grant = self.tokens.grant(header, Permission::Admin);
        grant.map_err(|err| self.refused(err, Permission::Admin, now_ns))
    }

    /// Counts and (rate-limited) logs a refusal; returns it for the answer.
    pub fn refused(&self, err: AuthError, need: Permission, now_ns: u64) -> AuthError {
        self.failures[err.reason_index()].fetch_add(1, Relaxed);
        if let Some(held) = self.auth_log.pass(now_ns) {
            log::warn!(
                "auth: refused a {} request ({}): {err}; {held} more refusals since the last line",
                need.as_str(),
                err.reason()
            );
        }
        err
    }

    /// A 403 from the admin API itself: a valid tenant token on another tenant, or on an
    /// all-tenant operation (the API decides that where the request runs).
    pub fn admin_forbidden(&self, now_ns: u64) {
        let err = AuthError::Forbidden {
            tenant: "outside its scope".into(),
        };
        self.failures[err.reason_index()].fetch_add(1, Relaxed);
        if let Some(held) = self.auth_log.pass(now_ns) {
            log::warn!(
                "auth: refused an admin request (wrong_tenant): a tenant token outside its \
                 tenant; {held} more refusals since the last line"
            );
        }
    }

    /// A result that no breaker can take: counted, and logged at most once per interval.
    pub fn ignored(&self, why: Ignored, tenant: &str, provider: &str, now_ns: u64) {
        self.ignored[why as usize].fetch_add(1, Relaxed);
        if let Some(held) = self.ignored_log.pass(now_ns) {
            log::warn!(
                "results: {}; {held} more ignored since the last line",
                why.message(tenant, provider)
            );
        }
    }

    /// Takes one admin write for token `index`; `Err(retry after, in whole seconds)` when
    /// its rate is spent (GCRA: one write per interval, a second's worth in a burst).
    pub fn admin_write(&self, index: usize, now_ns: u64) -> Result<(), u64> {
        let mut tats = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let tat = tats[index].max(now_ns);
        let earliest = tat - self.write_burst_ns.min(tat);
        if earliest > now_ns {
            self.rate_limited.fetch_add(1, Relaxed);
            return Err((earliest - now_ns).div_ceil(NS_PER_S).max(1));
        }
        tats[index] = tat + self.write_interval_ns;
        Ok(())
    }

    pub fn queued(&self, to: Queued) {
        self.queued[to as usize].fetch_add(1, Relaxed);
    }

    pub fn metric_series(&self) -> Vec<ExtraMetric> {
        let mut out = Vec::new();
        let help = "Requests refused by a token check, by reason.";
        for (reason, n) in AUTH_FAILURE_REASONS.iter().zip(&self.failures) {
            let m = ExtraMetric::counter("shardline_auth_failures_total", help, load(n));
            out.push(m.label("reason", reason));
        }
        let help = "ExecResults (HTTP and NATS) that no breaker could take, by reason.";
        for (why, n) in Ignored::ALL.iter().zip(&self.ignored) {
            let m = ExtraMetric::counter("shardline_results_ignored_total", help, load(n));
            out.push(m.label("reason", why.as_str()));
        }
        let help = "Admin requests queued off the accepting shard's own loop, by where.";
        for (to, n) in ["blocking", "handoff"].iter().zip(&self.queued) {
            let m = ExtraMetric::counter("shardline_admin_queued_total", help, load(n));
            out.push(m.label("to", to));
        }
        out.push(ExtraMetric::counter(
            "shardline_admin_writes_rate_limited_total",
            "Admin writes refused with 429: the token's admin.writes_per_second was spent.",
            load(&self.rate_limited),
        ));
        out
    }
}

fn load(n: &AtomicU64) -> f64 {
    n.load(Relaxed) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{Permissions, TokenSpec};

    fn access(per_second: u32) -> Access {
        let spec = TokenSpec {
            token: "writer-token-0123456789".into(),
            tenant: None,
            permissions: Permissions::ALL,
        };
        let tokens = Arc::new(Tokens::with_permissions(&[spec]).unwrap());
        Access::new(tokens, AccessMode::Token, AccessMode::Open, per_second)
    }

    /// A second's worth of writes passes back to back; the next waits about one interval.
    #[test]
    fn admin_writes_burst_then_wait() {
        let a = access(5);
        let t0 = 10 * NS_PER_S;
        for _ in 0..5 {
            assert_eq!(a.admin_write(0, t0), Ok(()));
        }
        assert_eq!(a.admin_write(0, t0), Err(1));
        assert_eq!(a.admin_write(0, t0 + NS_PER_S / 5), Ok(()));
    }

    /// The log gate opens once per interval and reports what it held back.
    #[test]
    fn log_gate_counts_what_it_holds_back() {
        let g = LogGate::default();
        assert_eq!(g.pass(0), Some(0));
        assert_eq!(g.pass(1), None);
        assert_eq!(g.pass(2), None);
        assert_eq!(g.pass(REFUSAL_LOG_INTERVAL_MS * NS_PER_MS), Some(2));
    }

    #[test]
    fn open_routes_need_no_token() {
        let a = access(1);
        assert_eq!(a.decide_token(None, 0), Ok(None));
        assert!(a.results_token(None, 0).is_err());
    }
}
