//! The router's configuration: `config/shardline.toml`, overridden by `SHARDLINE_*`
//! environment variables, checked as a whole before anything starts.
//!
//! `Config::load` is what `shardline serve --config FILE` and `shardline config check
//! [FILE]` call: read the file (at most `CONFIG_FILE_BYTES_MAX`), parse it, apply the
//! environment, resolve relative paths against the file's directory (so a config works
//! from any working directory), validate. Every step that can find problems reports all of
//! them with their key path (`limits.ring_slots: must be a power of two (got 1000)`), so a
//! broken config is fixed in one pass.
//!
//! Invariants: every key has a default (an empty file is a valid config); unknown keys are
//! errors, not ignored (a misspelt limit must not silently fall back to its default);
//! secrets (`Secret`) never appear in `Debug`, serialized output or error messages.
//!
//! Why TOML read through `toml::Table` first instead of straight into the types: serde
//! stops at the first error and toml's errors point at a line, not a key; checking key by
//! key (see `parse`) yields every problem with its path.

mod bounds;
mod env;
mod error;
mod parse;
mod summary;
mod validate;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::contract::{ACK_SUBJECT, ASSIGNMENT_SUBJECT_DEFAULT, RESULT_SUBJECT, USAGE_SUBJECT};
use crate::logging::{LogFormat, LogLevel};

pub use bounds::*;
pub use env::{ENV_PREFIX, TOKEN_ENV_VARIABLE};
pub use error::{ConfigError, Problem, Problems};
pub use parse::{redacted_url, Cores, NatsUrls, Secret};

/// Default port of `server.ops_listen` (on 127.0.0.1).
pub const OPS_PORT_DEFAULT: u16 = 9090;

/// Where `shardline config check` looks when no file is given.
pub const CONFIG_PATH_DEFAULT: &str = "config/shardline.toml";

/// The whole configuration. See `config/shardline.toml` for every key, explained.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub logging: LoggingConfig,
    pub nats: NatsConfig,
    pub cluster: ClusterConfig,
}

/// `[server]`: listeners, cores, directories, shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP address every shard accepts on (SO_REUSEPORT). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// 0 = off; else shard `i` also listens on `shard_port_base + i` (shard-aware clients).
    pub shard_port_base: u16,
    pub cores: Cores,
    #[serde(serialize_with = "parse::ser_path")]
    pub policies_dir: PathBuf,
    #[serde(serialize_with = "parse::ser_path")]
    pub extensions_dir: PathBuf,
    /// How long a stopping shard waits for in-flight requests.
    pub drain_timeout_ms: u64,
    /// A shard whose heartbeat has not run for this long is reported stalled.
    pub stall_ms: u64,
    /// How long a request handed to another shard waits before `overloaded`.
    pub handoff_timeout_ms: u64,
    /// After SIGTERM/SIGINT, how long `/readyz` is 503 before the listeners close.
    pub drain_grace_ms: u64,
    /// The operations listener (health, readiness, metrics, admin API), outside the
    /// data-plane connection cap; written `""` in the file when off.
    #[serde(
        deserialize_with = "parse::de_opt_addr",
        serialize_with = "parse::ser_opt_addr"
    )]
    pub ops_listen: Option<SocketAddr>,
    /// true = one invalid policy document stops the start (all-or-nothing); false = it is
    /// reported and left out, every other document serves.
    pub strict_policies: bool,
    /// What a shard with nothing to run does.
    pub poll: Poll,
    /// How long an `adaptive` shard keeps polling after its last work.
    pub poll_spin_us: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ops_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, OPS_PORT_DEFAULT))),
            strict_policies: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            shard_port_base: 0,
            cores: Cores::All,
            policies_dir: PathBuf::from("policies"),
            extensions_dir: PathBuf::from("extensions"),
            drain_timeout_ms: DRAIN_TIMEOUT_MS_DEFAULT,
            stall_ms: STALL_MS_DEFAULT,
            handoff_timeout_ms: HANDOFF_TIMEOUT_MS_DEFAULT,
            drain_grace_ms: DRAIN_GRACE_MS_DEFAULT,
            poll: Poll::default(),
            poll_spin_us: shards::POLL_SPIN_US_DEFAULT,
        }
    }
}

/// `[limits]`: the bound on everything a client or peer can make the router hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub body_bytes_max: usize,
    pub headers_max: usize,
    pub header_bytes_max: usize,
    pub connections_per_shard_max: usize,
    pub read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// Slots per ordered pair of shards; a power of two.
    pub ring_slots: usize,
    pub sticky_entries_per_shard: usize,
    pub idempotency_entries_per_shard: usize,
    /// Bytes of remembered answers (keys, answers, overhead), shared fairly by tenants.
    pub idempotency_bytes_per_shard_max: usize,
    pub idempotency_ttl_ms: u64,
    /// Bytes of remembered ExecResult ids, shared fairly by tenants.
    pub results_dedup_bytes_per_shard_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: BODY_BYTES_DEFAULT,
            headers_max: HEADERS_DEFAULT,
            header_bytes_max: HEADER_BYTES_DEFAULT,
            connections_per_shard_max: CONNECTIONS_PER_SHARD_DEFAULT,
            read_timeout_ms: READ_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
            ring_slots: RING_SLOTS_DEFAULT,
            sticky_entries_per_shard: STICKY_ENTRIES_PER_SHARD_DEFAULT,
            idempotency_entries_per_shard: IDEMPOTENCY_ENTRIES_PER_SHARD_DEFAULT,
            idempotency_bytes_per_shard_max: IDEMPOTENCY_BYTES_PER_SHARD_DEFAULT,
            idempotency_ttl_ms: IDEMPOTENCY_TTL_MS_DEFAULT,
            results_dedup_bytes_per_shard_max: RESULTS_DEDUP_BYTES_PER_SHARD_DEFAULT,
        }
    }
}

/// `[tls]`: the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    #[serde(serialize_with = "parse::ser_path")]
    pub cert: PathBuf,
    #[serde(serialize_with = "parse::ser_path")]
    pub key: PathBuf,
    /// CA that signs client certificates; set = client certificates required (mTLS).
    /// Written `""` in the file when unset.
    #[serde(
        deserialize_with = "parse::de_opt_path",
        serialize_with = "parse::ser_opt_path"
    )]
    pub client_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            cert: PathBuf::from("certs/server.crt"),
            key: PathBuf::from("certs/server.key"),
            client_ca: None,
        }
    }
}

/// `[admin]`: the admin API and who may use it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    pub tokens: Vec<AdminToken>,
    /// Name of an environment variable holding one more, all-tenant, token; empty = none.
    pub token_env: String,
    /// The value of `token_env`, read by `apply_env` (never from the file).
    #[serde(skip)]
    pub env_token: Option<Secret>,
    /// Admin writes (put, delete, reload) per second and token; the burst is one second's
    /// worth.
    pub writes_per_second: u32,
    /// The admin API is served on the data port too, not only on `server.ops_listen`.
    pub on_data_port: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            on_data_port: true,
            enabled: true,
            tokens: Vec::new(),
            token_env: TOKEN_ENV_VARIABLE.to_owned(),
            env_token: None,
            writes_per_second: ADMIN_WRITES_PER_SECOND_DEFAULT,
        }
    }
}

/// One bearer token, the tenant it is limited to and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub token: Secret,
    /// Omitted = all tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `admin`, `results`, `decide`; omitted = `["admin"]` (what a token meant before
    /// scopes existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl AdminConfig {
    /// Every accepted token with its tenant scope (`None` = all tenants): the file's, then
    /// the one from `token_env`.
    pub fn all_tokens(&self) -> impl Iterator<Item = (&Secret, Option<&str>)> {
        let file = self.tokens.iter().map(|t| (&t.token, t.tenant.as_deref()));
        file.chain(self.env_token.iter().map(|t| (t, None)))
    }

    /// Every accepted token with its tenant and permissions: the file's (unknown scope
    /// names are `validate`'s to report; here they grant nothing), then the environment
    /// token, which holds every permission.
    pub fn token_specs(&self) -> Vec<crate::admin::TokenSpec> {
        use crate::admin::{Permission, Permissions, TokenSpec};
        let file = self.tokens.iter().map(|t| {
            let permissions = match &t.scopes {
                None => Permissions::ADMIN,
                Some(names) => {
                    let list: Vec<Permission> =
                        names.iter().filter_map(|n| Permission::parse(n)).collect();
                    Permissions::of(&list)
                }
            };
            TokenSpec {
                token: t.token.expose().to_owned(),
                tenant: t.tenant.clone(),
                permissions,
            }
        });
        let env = self.env_token.iter().map(|t| TokenSpec {
            token: t.expose().to_owned(),
            tenant: None,
            permissions: Permissions::ALL,
        });
        file.chain(env).collect()
    }
}

/// `server.poll`: what a shard with nothing to run does (`shards::PollMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Poll {
    /// Sleep at once.
    Park,
    /// Keep polling `server.poll_spin_us` after the last work, then sleep.
    #[default]
    Adaptive,
    /// Never sleep (dedicated, isolated cores only).
    Busy,
}

impl std::str::FromStr for Poll {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "park" => Ok(Poll::Park),
            "adaptive" => Ok(Poll::Adaptive),
            "busy" => Ok(Poll::Busy),
            _ => Err("expected \"park\", \"adaptive\" or \"busy\""),
        }
    }
}

/// Whether a route needs a token (`[auth]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// A bearer token holding the route's scope, for the request's tenant.
    Token,
    /// Anyone who can reach the listener.
    Open,
}

impl std::str::FromStr for AccessMode {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "token" => Ok(AccessMode::Token),
            "open" => Ok(AccessMode::Open),
            _ => Err("expected \"token\" or \"open\""),
        }
    }
}

/// `[auth]`: which data-plane routes need a token. Tokens themselves stay in `[admin]`
/// (`tokens`, `token_env`), where existing configs have them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `POST /v1/results`: results open and close circuits, so a token by default.
    pub results: AccessMode,
    /// `POST /v1/decide`: open by default (gateways call it on every request).
    pub decide: AccessMode,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            results: AccessMode::Token,
            decide: AccessMode::Open,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Lines one call site writes per summary window before the rest are only counted
    /// and reported in one summary line; 0 writes every line.
    pub repeats_per_window: u64,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::default(),
            format: LogFormat::default(),
            repeats_per_window: crate::logging::LOG_REPEATS_PER_WINDOW_DEFAULT,
        }
    }
}

/// `[nats]`: the platform bus. Everything NATS is off while `url` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Comma-separated `nats://` or `tls://` URLs; empty = NATS off.
    pub url: NatsUrls,
    /// Client name shown by the server (`connz`).
    pub name: String,
    pub token: Secret,
    pub user: String,
    pub password: Secret,
    /// CA for the server's certificate; set (or a `tls://` URL) = TLS required.
    #[serde(
        deserialize_with = "parse::de_opt_path",
        serialize_with = "parse::ser_opt_path"
    )]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS; both or neither.
    #[serde(
        deserialize_with = "parse::de_opt_path",
        serialize_with = "parse::ser_opt_path"
    )]
    pub tls_cert: Option<PathBuf>,
    #[serde(
        deserialize_with = "parse::de_opt_path",
        serialize_with = "parse::ser_opt_path"
    )]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against; empty = the URL's host.
    pub tls_server_name: String,
    pub request_timeout_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    pub outbound_bytes_max: usize,
    pub decide_subject: String,
    pub decide_queue_group: String,
    /// Default subject of ExecAssignments (a request's `assignment_subject` wins).
    pub assignment_subject: String,
    /// Patterns (NATS wildcards) a request's own `assignment_subject` must match.
    pub assignment_subjects_allowed: Vec<String>,
    pub result_subject: String,
    pub usage_subject: String,
    pub ack_subject: String,
    /// Prefix of the admin subjects (`<prefix>.*`).
    pub admin_subject: String,
    /// Tenants whose requests may push assignments; empty = every tenant.
    pub assignment_tenants_allowlist: Vec<String>,
    pub assignment_retries_max: u32,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: NatsUrls::default(),
            name: "shardline".to_owned(),
            token: Secret::default(),
            user: String::new(),
            password: Secret::default(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_server_name: String::new(),
            request_timeout_ms: NATS_REQUEST_TIMEOUT_MS_DEFAULT,
            reconnect_backoff_max_ms: NATS_RECONNECT_BACKOFF_MS_DEFAULT,
            outbound_bytes_max: NATS_OUTBOUND_BYTES_DEFAULT,
            decide_subject: "beamline.router.v1.decide".to_owned(),
            decide_queue_group: "router-decide-group".to_owned(),
            assignment_subject: ASSIGNMENT_SUBJECT_DEFAULT.to_owned(),
            assignment_subjects_allowed: ASSIGNMENT_SUBJECTS_ALLOWED_DEFAULT
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            result_subject: RESULT_SUBJECT.to_owned(),
            usage_subject: USAGE_SUBJECT.to_owned(),
            ack_subject: ACK_SUBJECT.to_owned(),
            admin_subject: "beamline.router.v1.admin".to_owned(),
            assignment_tenants_allowlist: Vec::new(),
            assignment_retries_max: ASSIGNMENT_RETRIES_DEFAULT,
        }
    }
}

impl NatsConfig {
    /// Whether NATS is configured at all.
    pub fn enabled(&self) -> bool {
        self.url.servers().next().is_some()
    }
}

/// `[cluster]`: this router as one node of several on the same NATS.
///
/// The node's identity is announced in the NATS service API (`$SRV.PING|INFO|STATS`),
/// which every router with NATS answers, clustered or not. With `enabled`, the nodes share
/// one source of policies, a JetStream key-value bucket that each node mirrors into its
/// `policies_dir` (docs/CLUSTER.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Needs `nats.url`: the nodes of a cluster meet on NATS.
    pub enabled: bool,
    /// This node's name among the others, `NODE_ID_PATTERN`; empty = the host name.
    pub node_id: String,
    /// The JetStream key-value bucket holding the cluster's policies.
    pub policy_bucket: String,
    /// Replicas of the bucket when a node creates it (1 to `POLICY_REPLICAS_MAX`; at most
    /// the JetStream servers of the NATS cluster). An existing bucket is used as it is.
    pub policy_replicas: u32,
    /// A node not heard from for this long is taken for gone and its tenants move
    /// (`FAILOVER_MS_MIN` to `FAILOVER_MS_MAX`); it beats four times in this time.
    pub failover_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: String::new(),
            policy_bucket: POLICY_BUCKET_DEFAULT.to_owned(),
            policy_replicas: 1,
            failover_ms: 3_000,
        }
    }
}

/// The bucket SPEC §12 names.
pub const POLICY_BUCKET_DEFAULT: &str = "shardline_policies";

impl ClusterConfig {
    /// The node id in force: `node_id`, or the host name when it is empty; `None` when
    /// it is empty and the host name cannot be read. Not checked against the pattern
    /// (`validate` does that).
    pub fn effective_node_id(&self) -> Option<String> {
        if self.node_id.is_empty() {
            host_name()
        } else {
            Some(self.node_id.clone())
        }
    }
}

/// The host name, from `/proc/sys/kernel/hostname` or else `gethostname(2)`; `None` when
/// neither gives a non-empty UTF-8 name. At most `HOST_NAME_BYTES_READ` bytes are read
/// (Linux's own limit is 64).
pub fn host_name() -> Option<String> {
    let mut text = String::new();
    let read = std::fs::File::open("/proc/sys/kernel/hostname").and_then(|f| {
        f.take(HOST_NAME_BYTES_READ as u64)
            .read_to_string(&mut text)
    });
    if read.is_ok() && !text.trim().is_empty() {
        return Some(text.trim().to_owned());
    }
    let mut buf = [0u8; HOST_NAME_BYTES_READ];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Bytes of the host name read: POSIX's `HOST_NAME_MAX` can be 255, Linux's is 64.
const HOST_NAME_BYTES_READ: usize = 256;

impl Config {
    /// Reads `path`, applies the process environment, resolves relative paths against the
    /// file's directory and validates. Problems with the file's keys, the environment and
    /// the rules are reported together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_capped(path)?;
        let (mut config, mut problems) = parse::parse_document(&text)?;
        let vars = std::env::vars_os().map(|(name, value)| {
            let name = name.to_string_lossy().into_owned();
            (name, value.to_string_lossy().into_owned())
        });
        problems.extend(config.apply_env_collect(vars));
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        problems.extend(config.problems());
        ConfigError::check(problems)?;
        Ok(config)
    }

    /// Parses `text`, resolves relative paths against `base_dir` and validates; the
    /// environment is not read.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let (mut config, mut problems) = parse::parse_document(text)?;
        config.resolve_paths(base_dir);
        problems.extend(config.problems());
        ConfigError::check(problems)?;
        Ok(config)
    }

    /// Makes every relative path absolute against `base_dir` (or relative to it, if
    /// `base_dir` is relative). Empty paths stay empty, for `validate` to report.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base_dir.join(&*path);
            }
        };
        resolve(&mut self.server.policies_dir);
        resolve(&mut self.server.extensions_dir);
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        let nats = &mut self.nats;
        let optional = [
            &mut self.tls.client_ca,
            &mut nats.tls_ca,
            &mut nats.tls_cert,
            &mut nats.tls_key,
        ];
        for path in optional.into_iter().flatten() {
            resolve(path);
        }
    }
}

/// The file's text, refusing files over `CONFIG_FILE_BYTES_MAX`.
fn read_capped(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            max: CONFIG_FILE_BYTES_MAX,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
