//! The effective configuration as TOML, for the startup log and `shardline config check`.
//!
//! It is the config's own serialization, and the config's types serialize secrets as
//! `[REDACTED]` (`Secret`) and URLs without credentials, so there is no separate list of
//! what to hide that a new field could be missing from. The output parses as TOML again.

use super::Config;

impl Config {
    /// Every setting as TOML, secrets shown as `[REDACTED]`; the admin token read from
    /// the environment is reported as set or not, never shown. An empty `cluster.node_id`
    /// is shown as written, with the host name that stands in for it in a comment.
    pub fn redacted_summary(&self) -> String {
        let mut out = String::from("# Effective configuration; secrets are shown as [REDACTED].\n");
        if !self.admin.token_env.is_empty() {
            let state = if self.admin.env_token.is_some() {
                "set"
            } else {
                "not set"
            };
            out.push_str(&format!(
                "# Admin token from ${}: {state}.\n",
                self.admin.token_env
            ));
        }
        if self.cluster.node_id.is_empty() {
            match super::host_name() {
                Some(host) => out.push_str(&format!(
                    "# cluster.node_id is empty: this node is {host:?}, its host name.\n"
                )),
                None => {
                    out.push_str("# cluster.node_id is empty and the host name cannot be read.\n")
                }
            }
        }
        match toml::to_string(self) {
            Ok(text) => out.push_str(&text),
            // Only an out-of-range integer (from the environment) can get here; a config
            // that passed `validate` never does.
            Err(error) => out.push_str(&format!("# (cannot be shown: {error})\n")),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{AdminToken, NatsUrls, Secret};
    use super::*;

    fn secret_config() -> Config {
        let mut config = Config::default();
        config.admin.tokens = vec![
            AdminToken {
                token: Secret::new("file-token-0123456789"),
                tenant: Some("acme".into()),
                scopes: Some(vec!["admin".into(), "results".into()]),
            },
            AdminToken {
                token: Secret::new("file-token-all-tenants"),
                tenant: None,
                scopes: None,
            },
        ];
        config.admin.env_token = Some(Secret::new("env-token-0123456789"));
        config.nats.url =
            NatsUrls::new("nats://bob:hunter2@10.0.0.1:4222,tls://n2:4222?token=qwerty");
        config.nats.token = Secret::new("nats-token-xyz");
        config.nats.password = Secret::new("nats-password-xyz");
        config
    }

    /// No secret appears in the summary, in `Debug`, or in the serialized form.
    #[test]
    fn secrets_never_shown() {
        let config = secret_config();
        let summary = config.redacted_summary();
        let debug = format!("{config:?}");
        for secret in [
            "file-token-0123456789",
            "file-token-all-tenants",
            "env-token-0123456789",
            "hunter2",
            "qwerty",
            "nats-token-xyz",
            "nats-password-xyz",
        ] {
            assert!(!summary.contains(secret), "{secret} in\n{summary}");
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(summary.contains("# Admin token from $SHARDLINE_ADMIN_TOKEN: set."));
        assert!(summary.contains("nats://[REDACTED]@10.0.0.1:4222"));
        assert!(summary.contains("tenant = \"acme\""));
    }

    /// The summary is TOML with every non-secret value as configured.
    #[test]
    fn summary_round_trips() {
        let mut config = Config::default();
        config.server.cores = super::super::Cores::List(vec![0, 2]);
        config.limits.ring_slots = 4096;
        config.resolve_paths(Path::new("/etc/shardline"));
        let summary = config.redacted_summary();
        let back = Config::from_toml_str(&summary, Path::new("/elsewhere")).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn unset_secrets_are_empty_not_redacted() {
        let summary = Config::default().redacted_summary();
        assert_eq!(
            summary.matches("[REDACTED]").count(),
            1,
            "only the header: {summary}"
        );
        assert!(summary.contains("# Admin token from $SHARDLINE_ADMIN_TOKEN: not set."));
    }
}
