//! Environment overrides: `SHARDLINE_<SECTION>_<KEY>` sets `section.key`, for every
//! scalar key (and the string lists, comma-separated), e.g. `SHARDLINE_SERVER_LISTEN`,
//! `SHARDLINE_SERVER_CORES=0-3`, `SHARDLINE_LOGGING_LEVEL=debug`, `SHARDLINE_NATS_URL`.
//!
//! The variables are passed in (`apply_env(std::env::vars())` in production), so tests
//! never touch the process environment. A variable under `SHARDLINE_` that names no
//! section (`SHARDLINE_CLUSTR_ENABLED`) or a section but no key of it is an error, since it
//! is almost surely a typo that would otherwise be ignored: the operator believes a setting
//! is in force that is not. The few `SHARDLINE_` variables that are not configuration
//! (`NON_CONFIG_VARIABLES`) are left to their owners.
//! The variable named by `admin.token_env` (default `SHARDLINE_ADMIN_TOKEN`) is the
//! exception: it is read as the all-tenant admin token.

use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

use super::{
    AdminConfig, AuthConfig, ClusterConfig, Config, ConfigError, LimitsConfig, LoggingConfig,
    NatsConfig, NatsUrls, Problem, Secret, ServerConfig, TlsConfig,
};
use crate::logging::is_sensitive_key;

/// Prefix of every override.
pub const ENV_PREFIX: &str = "SHARDLINE_";
/// Default of `admin.token_env`.
pub const TOKEN_ENV_VARIABLE: &str = "SHARDLINE_ADMIN_TOKEN";
/// The override of `admin.token_env` itself, applied before any other variable.
const TOKEN_ENV_OVERRIDE: &str = "SHARDLINE_ADMIN_TOKEN_ENV";
const SECTIONS: [&str; 8] = [
    "server", "limits", "tls", "admin", "auth", "logging", "nats", "cluster",
];
/// `SHARDLINE_` variables that belong to the tools around the router, not to its config:
/// the Beamline fixtures' directory (tests, CI) and the binary `scripts/apply_tuning.sh`
/// runs. A new one must be listed here, or every `serve` with it set fails.
pub const NON_CONFIG_VARIABLES: [&str; 2] = ["SHARDLINE_COMPAT_DIR", "SHARDLINE_BIN"];
/// Characters of a bad value quoted back.
const VALUE_SHOWN_CHARS_MAX: usize = 32;

/// Why one variable could not be applied.
enum SetError {
    UnknownKey,
    NotSettable(&'static str),
    BadValue(String),
}

type SetResult = Result<(), SetError>;

fn parse<T: FromStr>(raw: &str) -> Result<T, SetError>
where
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|e: T::Err| SetError::BadValue(e.to_string()))
}

fn optional_path(raw: &str) -> Option<PathBuf> {
    (!raw.is_empty()).then(|| PathBuf::from(raw))
}

/// `a, b,c` → `["a", "b", "c"]`; empty → `[]`.
fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Config {
    /// Applies the `SHARDLINE_*` overrides in `vars` and reads the admin token variable.
    /// Every bad variable is reported, each naming the variable.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        ConfigError::check(self.apply_env_collect(vars))
    }

    pub(super) fn apply_env_collect(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Vec<Problem> {
        // Only the variables that can matter: the token variable may have any name, but
        // it is known once `SHARDLINE_ADMIN_TOKEN_ENV` (if any) is applied.
        let vars: Vec<(String, String)> = vars.collect();
        if let Some((_, value)) = vars.iter().find(|(name, _)| name == TOKEN_ENV_OVERRIDE) {
            self.admin.token_env = value.trim().to_owned();
        }
        let mut problems = Vec::new();
        for (name, value) in &vars {
            if name == TOKEN_ENV_OVERRIDE {
                continue;
            }
            if !self.admin.token_env.is_empty() && *name == self.admin.token_env {
                let token = value.trim();
                self.admin.env_token = (!token.is_empty()).then(|| Secret::new(token));
                continue;
            }
            if let Err(problem) = self.apply_variable(name, value) {
                problems.push(problem);
            }
        }
        problems
    }

    /// Applies one variable if it is an override; variables without the prefix and the
    /// `NON_CONFIG_VARIABLES` are ignored.
    fn apply_variable(&mut self, name: &str, value: &str) -> Result<(), Problem> {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        if NON_CONFIG_VARIABLES.contains(&name) {
            return Ok(());
        }
        let found = SECTIONS.iter().find_map(|section| {
            let key = rest.strip_prefix(&section.to_ascii_uppercase())?;
            Some((*section, key.strip_prefix('_')?.to_ascii_lowercase()))
        });
        let Some((section, key)) = found else {
            let message = format!(
                "names no config section (overrides are {ENV_PREFIX}<SECTION>_<KEY>, \
                 SECTION one of {}; other {ENV_PREFIX} variables allowed: {})",
                SECTIONS.join(", ").to_ascii_uppercase(),
                NON_CONFIG_VARIABLES.join(", ")
            );
            return Err(Problem::new(name, message));
        };
        let result = match section {
            "server" => self.server.set(&key, value),
            "limits" => self.limits.set(&key, value),
            "tls" => self.tls.set(&key, value),
            "admin" => self.admin.set(&key, value),
            "auth" => self.auth.set(&key, value),
            "logging" => self.logging.set(&key, value),
            "cluster" => self.cluster.set(&key, value),
            _ => self.nats.set(&key, value),
        };
        result.map_err(|error| {
            let path = format!("{section}.{key}");
            let message = match error {
                SetError::UnknownKey => {
                    format!("no setting {path} (overrides are {ENV_PREFIX}<SECTION>_<KEY>)")
                }
                SetError::NotSettable(why) => format!("{path} cannot be set here: {why}"),
                SetError::BadValue(why) if is_sensitive_key(&key) => {
                    format!("invalid value for {path}: {why}")
                }
                SetError::BadValue(why) => {
                    let shown: String = value.chars().take(VALUE_SHOWN_CHARS_MAX).collect();
                    format!("invalid value {shown:?} for {path}: {why}")
                }
            };
            Problem::new(name, message)
        })
    }
}

impl ServerConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "listen" => self.listen = parse(raw)?,
            "shard_port_base" => self.shard_port_base = parse(raw)?,
            "cores" => self.cores = parse(raw)?,
            "policies_dir" => self.policies_dir = raw.into(),
            "extensions_dir" => self.extensions_dir = raw.into(),
            "drain_timeout_ms" => self.drain_timeout_ms = parse(raw)?,
            "stall_ms" => self.stall_ms = parse(raw)?,
            "handoff_timeout_ms" => self.handoff_timeout_ms = parse(raw)?,
            "drain_grace_ms" => self.drain_grace_ms = parse(raw)?,
            "ops_listen" => {
                self.ops_listen = super::parse::optional_addr(raw).map_err(SetError::BadValue)?
            }
            "strict_policies" => self.strict_policies = parse(raw)?,
            "poll" => self.poll = parse(raw)?,
            "poll_spin_us" => self.poll_spin_us = parse(raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl LimitsConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "body_bytes_max" => self.body_bytes_max = parse(raw)?,
            "headers_max" => self.headers_max = parse(raw)?,
            "header_bytes_max" => self.header_bytes_max = parse(raw)?,
            "connections_per_shard_max" => self.connections_per_shard_max = parse(raw)?,
            "read_timeout_ms" => self.read_timeout_ms = parse(raw)?,
            "idle_timeout_ms" => self.idle_timeout_ms = parse(raw)?,
            "write_timeout_ms" => self.write_timeout_ms = parse(raw)?,
            "ring_slots" => self.ring_slots = parse(raw)?,
            "sticky_entries_per_shard" => self.sticky_entries_per_shard = parse(raw)?,
            "idempotency_entries_per_shard" => self.idempotency_entries_per_shard = parse(raw)?,
            "idempotency_ttl_ms" => self.idempotency_ttl_ms = parse(raw)?,
            "idempotency_bytes_per_shard_max" => self.idempotency_bytes_per_shard_max = parse(raw)?,
            "results_dedup_bytes_per_shard_max" => {
                self.results_dedup_bytes_per_shard_max = parse(raw)?
            }
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl TlsConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "enabled" => self.enabled = parse(raw)?,
            "listen" => self.listen = parse(raw)?,
            "cert" => self.cert = raw.into(),
            "key" => self.key = raw.into(),
            "client_ca" => self.client_ca = optional_path(raw),
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl AdminConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "enabled" => self.enabled = parse(raw)?,
            "on_data_port" => self.on_data_port = parse(raw)?,
            "tokens" => {
                return Err(SetError::NotSettable(
                    "put one all-tenant token in the variable named by admin.token_env",
                ))
            }
            "writes_per_second" => self.writes_per_second = parse(raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl AuthConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "results" => self.results = parse(raw)?,
            "decide" => self.decide = parse(raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl LoggingConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "level" => self.level = parse(raw)?,
            "format" => self.format = parse(raw)?,
            "repeats_per_window" => self.repeats_per_window = parse(raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl NatsConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "url" => self.url = NatsUrls::new(raw.trim()),
            "name" => self.name = raw.to_owned(),
            "token" => self.token = Secret::new(raw),
            "user" => self.user = raw.to_owned(),
            "password" => self.password = Secret::new(raw),
            "tls_ca" => self.tls_ca = optional_path(raw),
            "tls_cert" => self.tls_cert = optional_path(raw),
            "tls_key" => self.tls_key = optional_path(raw),
            "tls_server_name" => self.tls_server_name = raw.to_owned(),
            "request_timeout_ms" => self.request_timeout_ms = parse(raw)?,
            "reconnect_backoff_max_ms" => self.reconnect_backoff_max_ms = parse(raw)?,
            "outbound_bytes_max" => self.outbound_bytes_max = parse(raw)?,
            _ => return self.set_subject(key, raw),
        }
        Ok(())
    }

    fn set_subject(&mut self, key: &str, raw: &str) -> SetResult {
        let raw = raw.trim().to_owned();
        match key {
            "decide_subject" => self.decide_subject = raw,
            "decide_queue_group" => self.decide_queue_group = raw,
            "assignment_subject" => self.assignment_subject = raw,
            "assignment_subjects_allowed" => self.assignment_subjects_allowed = list(&raw),
            "result_subject" => self.result_subject = raw,
            "usage_subject" => self.usage_subject = raw,
            "ack_subject" => self.ack_subject = raw,
            "admin_subject" => self.admin_subject = raw,
            "assignment_tenants_allowlist" => self.assignment_tenants_allowlist = list(&raw),
            "assignment_retries_max" => self.assignment_retries_max = parse(&raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

impl ClusterConfig {
    fn set(&mut self, key: &str, raw: &str) -> SetResult {
        match key {
            "enabled" => self.enabled = parse(raw)?,
            "node_id" => self.node_id = raw.trim().to_owned(),
            "policy_bucket" => self.policy_bucket = raw.trim().to_owned(),
            "policy_replicas" => self.policy_replicas = parse(raw)?,
            "failover_ms" => self.failover_ms = parse(raw)?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
