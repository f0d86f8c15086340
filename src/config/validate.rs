//! The rules a parsed configuration must meet, checked all at once.
//!
//! What the types cannot say is checked here: ranges (named in `bounds`), ports that must
//! not collide, files that must exist when a feature that reads them is on, admin tokens
//! that must be long and unique, and names (tenants, NATS subjects, variables) that must
//! be well-formed. Messages never quote a secret; they quote other values (cut to
//! `VALUE_SHOWN_CHARS_MAX`) so the operator sees what was read.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use super::bounds::*;
use super::{
    redacted_url, AdminConfig, ClusterConfig, Config, ConfigError, Cores, LimitsConfig, NatsConfig,
    NatsUrls, Problem, Secret,
};
use crate::cluster::kv::BUCKET_NAME_BYTES_MAX;
use crate::contract::{NATS_SUBJECT_BYTES_MAX, TENANT_ID_BYTES_MAX, TENANT_ID_PATTERN};

const VALUE_SHOWN_CHARS_MAX: usize = 32;
/// URL schemes the NATS client speaks.
const NATS_SCHEMES: [&str; 2] = ["nats://", "tls://"];

/// The problems found so far.
#[derive(Default)]
struct Report(Vec<Problem>);

impl Report {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }

    fn range<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.push(
                key,
                format!("must be between {min} and {max} (got {value})"),
            );
        }
    }

    fn file(&mut self, key: &str, path: &Path, why: &str) {
        if !path.is_file() {
            self.push(key, format!("file {} not found ({why})", path.display()));
        }
    }
}

fn shown(value: &str) -> String {
    let cut: String = value.chars().take(VALUE_SHOWN_CHARS_MAX).collect();
    format!("{cut:?}")
}

/// `NODE_ID_PATTERN`.
fn is_node_id(s: &str) -> bool {
    (1..=NODE_ID_BYTES_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_tenant_id(s: &str) -> bool {
    (1..=TENANT_ID_BYTES_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Config {
    /// `Ok` if every rule holds, else every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(self.problems())
    }

    /// Every rule the configuration breaks (empty when valid).
    pub fn problems(&self) -> Vec<Problem> {
        let mut report = Report::default();
        self.check_server(&mut report);
        check_limits(&self.limits, &mut report);
        self.check_tls(&mut report);
        check_admin(&self.admin, &mut report);
        check_nats(&self.nats, &mut report);
        check_cluster(&self.cluster, &self.nats, &mut report);
        let repeats = self.logging.repeats_per_window;
        let max = crate::logging::LOG_REPEATS_PER_WINDOW_MAX;
        report.range("logging.repeats_per_window", repeats, 0, max);
        report.0
    }

    fn check_server(&self, report: &mut Report) {
        let server = &self.server;
        check_cores(&server.cores, report);
        for (key, dir) in [
            ("server.policies_dir", &server.policies_dir),
            ("server.extensions_dir", &server.extensions_dir),
        ] {
            if dir.as_os_str().is_empty() {
                report.push(key, "must not be empty");
            }
        }
        let drain = server.drain_timeout_ms;
        report.range("server.drain_timeout_ms", drain, 0, DRAIN_TIMEOUT_MS_MAX);
        let stall = server.stall_ms;
        report.range("server.stall_ms", stall, STALL_MS_MIN, STALL_MS_MAX);
        let handoff = server.handoff_timeout_ms;
        let (min, max) = (HANDOFF_TIMEOUT_MS_MIN, HANDOFF_TIMEOUT_MS_MAX);
        report.range("server.handoff_timeout_ms", handoff, min, max);
        let grace = server.drain_grace_ms;
        report.range("server.drain_grace_ms", grace, 0, DRAIN_GRACE_MS_MAX);
        let spin = server.poll_spin_us;
        report.range("server.poll_spin_us", spin, 0, shards::POLL_SPIN_US_MAX);
        if server.shard_port_base != 0 {
            self.check_shard_ports(report);
        }
        self.check_ops_listen(report);
    }

    /// The operations listener must not share a port with a data listener, and turning
    /// the admin API off the data port needs somewhere else to serve it.
    fn check_ops_listen(&self, report: &mut Report) {
        let Some(ops) = self.server.ops_listen else {
            if self.admin.enabled && !self.admin.on_data_port {
                let message = "false while server.ops_listen is off: the admin API would be \
                               served on no HTTP port";
                report.push("admin.on_data_port", message);
            }
            return;
        };
        let mut listeners = vec![("server.listen", self.server.listen)];
        if self.tls.enabled {
            listeners.push(("tls.listen", self.tls.listen));
        }
        for (name, addr) in listeners {
            if same_port(ops, addr) {
                report.push(
                    "server.ops_listen",
                    format!("{ops} is also {name}'s address"),
                );
            }
        }
    }

    /// Shard `i` listens on `base + i`: the range must fit below 65536 and miss the main
    /// listeners. With `cores = "all"` the count is unknown here, so `SHARDS_MAX` is used.
    fn check_shard_ports(&self, report: &mut Report) {
        let shards = match &self.server.cores {
            Cores::All => SHARDS_MAX,
            Cores::Count(n) => *n,
            Cores::List(cores) => cores.len(),
        };
        let base = usize::from(self.server.shard_port_base);
        let last = base + shards.max(1) - 1;
        let key = "server.shard_port_base";
        if last > usize::from(u16::MAX) {
            let message = format!("shard ports {base}..={last} pass 65535 ({shards} shards)");
            report.push(key, message);
        }
        let mut listeners = vec![("server.listen", self.server.listen)];
        if self.tls.enabled {
            listeners.push(("tls.listen", self.tls.listen));
        }
        if let Some(ops) = self.server.ops_listen {
            listeners.push(("server.ops_listen", ops));
        }
        for (name, addr) in listeners {
            let port = usize::from(addr.port());
            if port != 0 && (base..=last).contains(&port) {
                let message = format!("shard ports {base}..={last} include {name}'s port {port}");
                report.push(key, message);
            }
        }
    }

    fn check_tls(&self, report: &mut Report) {
        let tls = &self.tls;
        if !tls.enabled {
            return;
        }
        report.file("tls.cert", &tls.cert, "tls.enabled is true");
        report.file("tls.key", &tls.key, "tls.enabled is true");
        if let Some(ca) = &tls.client_ca {
            report.file(
                "tls.client_ca",
                ca,
                "client certificates are checked against it",
            );
        }
        if same_port(tls.listen, self.server.listen) {
            let message = format!("{} is also server.listen's address", tls.listen);
            report.push("tls.listen", message);
        }
    }
}

/// Two listeners collide if they share a non-zero port and an address (or either is the
/// unspecified address, which binds every interface).
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    a.port() != 0 && a.port() == b.port() && overlap
}

fn check_cores(cores: &Cores, report: &mut Report) {
    let key = "server.cores";
    match cores {
        Cores::All => {}
        Cores::Count(n) => report.range(key, *n, 1, SHARDS_MAX),
        Cores::List(list) if list.is_empty() => report.push(key, "the core list is empty"),
        Cores::List(list) => {
            if list.len() > SHARDS_MAX {
                let message = format!("at most {SHARDS_MAX} cores (got {})", list.len());
                report.push(key, message);
            }
            if let Some(core) = list.iter().find(|&&c| c > CORE_ID_MAX) {
                let message = format!("CPU numbers go up to {CORE_ID_MAX} (got {core})");
                report.push(key, message);
            }
            let mut seen = list.clone();
            seen.sort_unstable();
            if let Some(pair) = seen.windows(2).find(|pair| pair[0] == pair[1]) {
                report.push(key, format!("core {} is listed twice", pair[0]));
            }
        }
    }
}

fn check_limits(limits: &LimitsConfig, report: &mut Report) {
    let l = limits;
    report.range(
        "limits.body_bytes_max",
        l.body_bytes_max,
        BODY_BYTES_MIN,
        BODY_BYTES_MAX,
    );
    report.range(
        "limits.headers_max",
        l.headers_max,
        HEADERS_MIN,
        HEADERS_MAX,
    );
    let header_bytes = l.header_bytes_max;
    report.range(
        "limits.header_bytes_max",
        header_bytes,
        HEADER_BYTES_MIN,
        HEADER_BYTES_MAX,
    );
    let connections = l.connections_per_shard_max;
    let (min, max) = (CONNECTIONS_PER_SHARD_MIN, CONNECTIONS_PER_SHARD_MAX);
    report.range("limits.connections_per_shard_max", connections, min, max);
    for (key, ms) in [
        ("limits.read_timeout_ms", l.read_timeout_ms),
        ("limits.idle_timeout_ms", l.idle_timeout_ms),
        ("limits.write_timeout_ms", l.write_timeout_ms),
    ] {
        report.range(key, ms, TIMEOUT_MS_MIN, TIMEOUT_MS_MAX);
    }
    if !l.ring_slots.is_power_of_two() {
        let message = format!("must be a power of two (got {})", l.ring_slots);
        report.push("limits.ring_slots", message);
    }
    report.range(
        "limits.ring_slots",
        l.ring_slots,
        RING_SLOTS_MIN,
        RING_SLOTS_MAX,
    );
    let sticky = l.sticky_entries_per_shard;
    let (min, max) = (STICKY_ENTRIES_PER_SHARD_MIN, STICKY_ENTRIES_PER_SHARD_MAX);
    report.range("limits.sticky_entries_per_shard", sticky, min, max);
    let idempotency = l.idempotency_entries_per_shard;
    let (min, max) = (
        IDEMPOTENCY_ENTRIES_PER_SHARD_MIN,
        IDEMPOTENCY_ENTRIES_PER_SHARD_MAX,
    );
    report.range(
        "limits.idempotency_entries_per_shard",
        idempotency,
        min,
        max,
    );
    let ttl = l.idempotency_ttl_ms;
    let (min, max) = (IDEMPOTENCY_TTL_MS_MIN, IDEMPOTENCY_TTL_MS_MAX);
    report.range("limits.idempotency_ttl_ms", ttl, min, max);
    let bytes = l.idempotency_bytes_per_shard_max;
    let (min, max) = (
        IDEMPOTENCY_BYTES_PER_SHARD_MIN,
        IDEMPOTENCY_BYTES_PER_SHARD_MAX,
    );
    report.range("limits.idempotency_bytes_per_shard_max", bytes, min, max);
    let bytes = l.results_dedup_bytes_per_shard_max;
    let (min, max) = (
        RESULTS_DEDUP_BYTES_PER_SHARD_MIN,
        RESULTS_DEDUP_BYTES_PER_SHARD_MAX,
    );
    report.range("limits.results_dedup_bytes_per_shard_max", bytes, min, max);
}

/// A bearer token: long enough to resist guessing, and sendable in a header. The length
/// rule and its wording are `serve`'s own (`admin::token_length_problem`).
fn check_token(key: &str, token: &Secret, report: &mut Report) {
    let token = token.expose();
    if let Some(problem) = crate::admin::token_length_problem(token.len()) {
        report.push(key, problem);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        report.push(
            key,
            "must be visible ASCII (no spaces or control characters)",
        );
    }
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= ENV_NAME_BYTES_MAX
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_admin(admin: &AdminConfig, report: &mut Report) {
    let (min, max) = (ADMIN_WRITES_PER_SECOND_MIN, ADMIN_WRITES_PER_SECOND_MAX);
    report.range("admin.writes_per_second", admin.writes_per_second, min, max);
    let count = admin.tokens.len() + usize::from(admin.env_token.is_some());
    if count > TOKENS_MAX {
        let message = format!("at most {TOKENS_MAX} with the token_env token (got {count})");
        report.push("admin.tokens", message);
        return;
    }
    let mut first_use: HashMap<&str, String> = HashMap::new();
    for (i, entry) in admin.tokens.iter().enumerate() {
        let key = format!("admin.tokens[{i}].token");
        check_token(&key, &entry.token, report);
        if let Some(tenant) = entry.tenant.as_deref().filter(|t| !is_tenant_id(t)) {
            let message = format!("must match {TENANT_ID_PATTERN} (got {})", shown(tenant));
            report.push(format!("admin.tokens[{i}].tenant"), message);
        }
        if let Some(scopes) = &entry.scopes {
            check_scopes(&format!("admin.tokens[{i}].scopes"), scopes, report);
        }
        if let Some(first) = first_use.get(entry.token.expose()) {
            report.push(&key, format!("same token as {first}"));
        } else if !entry.token.is_empty() {
            first_use.insert(entry.token.expose(), key);
        }
    }
    if !admin.token_env.is_empty() && !is_env_name(&admin.token_env) {
        let message = format!(
            "not an environment variable name: {}",
            shown(&admin.token_env)
        );
        report.push("admin.token_env", message);
    }
    if let Some(token) = &admin.env_token {
        check_token(&admin.token_env, token, report);
        if let Some(first) = first_use.get(token.expose()) {
            report.push(&admin.token_env, format!("same token as {first}"));
        }
    }
}

/// `scopes = [...]`: at least one, each a known name.
fn check_scopes(key: &str, scopes: &[String], report: &mut Report) {
    use crate::admin::Permission;
    let known = || Permission::ALL.map(Permission::as_str).join(", ");
    if scopes.is_empty() {
        report.push(key, format!("must name at least one of {}", known()));
    }
    for name in scopes.iter().filter(|n| Permission::parse(n).is_none()) {
        let message = format!("unknown scope {}; known: {}", shown(name), known());
        report.push(key, message);
    }
}

fn check_nats(nats: &NatsConfig, report: &mut Report) {
    check_nats_url(&nats.url, report);
    check_name("nats.name", &nats.name, false, report);
    check_name("nats.user", &nats.user, true, report);
    check_name("nats.tls_server_name", &nats.tls_server_name, true, report);
    check_name(
        "nats.decide_queue_group",
        &nats.decide_queue_group,
        false,
        report,
    );
    if !nats.token.is_empty() && !nats.user.is_empty() {
        report.push(
            "nats.token",
            "set either a token or a user and password, not both",
        );
    }
    if !nats.password.is_empty() && nats.user.is_empty() {
        report.push("nats.password", "needs nats.user");
    }
    check_nats_tls(nats, report);
    let timeout = nats.request_timeout_ms;
    let (min, max) = (NATS_REQUEST_TIMEOUT_MS_MIN, NATS_REQUEST_TIMEOUT_MS_MAX);
    report.range("nats.request_timeout_ms", timeout, min, max);
    let backoff = nats.reconnect_backoff_max_ms;
    let (min, max) = (NATS_RECONNECT_BACKOFF_MS_MIN, NATS_RECONNECT_BACKOFF_MS_MAX);
    report.range("nats.reconnect_backoff_max_ms", backoff, min, max);
    let outbound = nats.outbound_bytes_max;
    let (min, max) = (NATS_OUTBOUND_BYTES_MIN, NATS_OUTBOUND_BYTES_MAX);
    report.range("nats.outbound_bytes_max", outbound, min, max);
    // Subjects the router subscribes to may use wildcards; those it publishes to may not.
    check_subject("nats.decide_subject", &nats.decide_subject, true, report);
    check_subject("nats.result_subject", &nats.result_subject, true, report);
    check_subject("nats.ack_subject", &nats.ack_subject, true, report);
    check_subject("nats.admin_subject", &nats.admin_subject, false, report);
    check_subject(
        "nats.assignment_subject",
        &nats.assignment_subject,
        false,
        report,
    );
    check_subject("nats.usage_subject", &nats.usage_subject, false, report);
    check_subjects_allowed(&nats.assignment_subjects_allowed, report);
    check_allowlist(&nats.assignment_tenants_allowlist, report);
    let retries = nats.assignment_retries_max;
    report.range(
        "nats.assignment_retries_max",
        retries,
        0,
        ASSIGNMENT_RETRIES_MAX,
    );
}

fn check_nats_url(urls: &NatsUrls, report: &mut Report) {
    let key = "nats.url";
    let url = urls.as_str();
    if url.trim().is_empty() {
        return;
    }
    if url.len() > NATS_URL_BYTES_MAX {
        report.push(key, format!("must be at most {NATS_URL_BYTES_MAX} bytes"));
        return;
    }
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    if servers.len() > NATS_SERVERS_MAX {
        let message = format!("at most {NATS_SERVERS_MAX} servers (got {})", servers.len());
        report.push(key, message);
    }
    for server in servers {
        let host = NATS_SCHEMES.iter().find_map(|s| server.strip_prefix(s));
        let host = host.map(|rest| rest.rsplit('@').next().unwrap_or(rest));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            let shown = shown(&redacted_url(server));
            report.push(
                key,
                format!("expected nats://host:port or tls://host:port (got {shown})"),
            );
        }
    }
}

/// A name sent to the server: not too long, no whitespace or control characters.
fn check_name(key: &str, value: &str, may_be_empty: bool, report: &mut Report) {
    if value.is_empty() {
        if !may_be_empty {
            report.push(key, "must not be empty");
        }
        return;
    }
    if value.len() > NATS_NAME_BYTES_MAX {
        report.push(key, format!("must be at most {NATS_NAME_BYTES_MAX} bytes"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let message = format!(
            "must not contain spaces or control characters (got {})",
            shown(value)
        );
        report.push(key, message);
    }
}

fn check_nats_tls(nats: &NatsConfig, report: &mut Report) {
    match (&nats.tls_cert, &nats.tls_key) {
        (Some(_), None) => report.push("nats.tls_key", "needs to be set with nats.tls_cert"),
        (None, Some(_)) => report.push("nats.tls_cert", "needs to be set with nats.tls_key"),
        _ => {}
    }
    if !nats.enabled() {
        return;
    }
    let files = [
        ("nats.tls_ca", &nats.tls_ca),
        ("nats.tls_cert", &nats.tls_cert),
        ("nats.tls_key", &nats.tls_key),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            report.file(key, path, "nats.url is set");
        }
    }
}

/// Dot-separated non-empty tokens of visible ASCII. With `wildcards`, a token may be `*`
/// and the last one `>`; without, neither character may appear.
fn check_subject(key: &str, subject: &str, wildcards: bool, report: &mut Report) {
    if subject.len() > NATS_SUBJECT_BYTES_MAX {
        report.push(
            key,
            format!("must be at most {NATS_SUBJECT_BYTES_MAX} bytes"),
        );
        return;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    let valid = tokens.iter().enumerate().all(|(i, token)| {
        let wildcard = wildcards && (*token == "*" || (*token == ">" && i == last));
        !token.is_empty()
            && (wildcard
                || token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>'))
    });
    if !valid {
        let rule = if wildcards {
            "dot-separated tokens of visible ASCII, `*` and a final `>` allowed"
        } else {
            "dot-separated tokens of visible ASCII, no wildcards"
        };
        report.push(key, format!("must be {rule} (got {})", shown(subject)));
    }
}

/// Patterns a request's `assignment_subject` must match: subjects with NATS wildcards.
fn check_subjects_allowed(patterns: &[String], report: &mut Report) {
    let key = "nats.assignment_subjects_allowed";
    if patterns.len() > ASSIGNMENT_SUBJECTS_ALLOWED_MAX {
        let message = format!(
            "at most {ASSIGNMENT_SUBJECTS_ALLOWED_MAX} patterns (got {})",
            patterns.len()
        );
        report.push(key, message);
        return;
    }
    for (i, pattern) in patterns.iter().enumerate() {
        check_subject(&format!("{key}[{i}]"), pattern, true, report);
    }
}

fn check_allowlist(tenants: &[String], report: &mut Report) {
    let key = "nats.assignment_tenants_allowlist";
    if tenants.len() > ASSIGNMENT_TENANTS_MAX {
        let message = format!(
            "at most {ASSIGNMENT_TENANTS_MAX} tenants (got {})",
            tenants.len()
        );
        report.push(key, message);
        return;
    }
    for (i, tenant) in tenants.iter().enumerate() {
        if !is_tenant_id(tenant) {
            let message = format!("must match {TENANT_ID_PATTERN} (got {})", shown(tenant));
            report.push(format!("{key}[{i}]"), message);
        }
    }
}

/// A cluster meets on NATS, so it needs a URL. The node id is checked as written; when it
/// is empty the host name stands in, and is checked only where it is used (NATS on or
/// the cluster enabled): a host whose name does not fit must not fail a config that never
/// shows it.
fn check_cluster(cluster: &ClusterConfig, nats: &NatsConfig, report: &mut Report) {
    if cluster.enabled && !nats.enabled() {
        let message = "true while nats.url is empty: the nodes of a cluster meet on NATS";
        report.push("cluster.enabled", message);
    }
    if !crate::cluster::kv::is_bucket_name(&cluster.policy_bucket) {
        let message = format!(
            "must be 1 to {BUCKET_NAME_BYTES_MAX} letters, digits, '_' or '-' (got {})",
            shown(&cluster.policy_bucket)
        );
        report.push("cluster.policy_bucket", message);
    }
    if !(1..=POLICY_REPLICAS_MAX).contains(&cluster.policy_replicas) {
        let message = format!(
            "must be 1 to {POLICY_REPLICAS_MAX} (JetStream's most), got {}",
            cluster.policy_replicas
        );
        report.push("cluster.policy_replicas", message);
    }
    if !(FAILOVER_MS_MIN..=FAILOVER_MS_MAX).contains(&cluster.failover_ms) {
        let message = format!(
            "must be {FAILOVER_MS_MIN} to {FAILOVER_MS_MAX}, got {}",
            cluster.failover_ms
        );
        report.push("cluster.failover_ms", message);
    }
    let key = "cluster.node_id";
    if !cluster.node_id.is_empty() {
        if !is_node_id(&cluster.node_id) {
            let shown = shown(&cluster.node_id);
            report.push(key, format!("must match {NODE_ID_PATTERN} (got {shown})"));
        }
        return;
    }
    if !cluster.enabled && !nats.enabled() {
        return;
    }
    match super::host_name() {
        None => report.push(
            key,
            "empty, and the host name cannot be read to stand in for it; set a node id",
        ),
        Some(host) if !is_node_id(&host) => {
            let message = format!(
                "empty, and the host name {} that stands in for it does not match \
                 {NODE_ID_PATTERN}; set a node id",
                shown(&host)
            );
            report.push(key, message);
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests;
