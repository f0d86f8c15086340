use std::path::Path;

use super::super::Cores;
use super::*;
use crate::logging::{LogFormat, LogLevel};

fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
        .into_iter()
}

fn applied(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    config.apply_env(vars(pairs)).map(|()| config)
}

#[test]
fn scalar_overrides() {
    let c = applied(&[
        ("SHARDLINE_SERVER_LISTEN", "0.0.0.0:9090"),
        ("SHARDLINE_SERVER_SHARD_PORT_BASE", "7000"),
        ("SHARDLINE_LIMITS_RING_SLOTS", " 4096 "),
        ("SHARDLINE_TLS_ENABLED", "true"),
        ("SHARDLINE_TLS_CLIENT_CA", "ca.pem"),
        ("SHARDLINE_LOGGING_LEVEL", "DEBUG"),
        ("SHARDLINE_LOGGING_FORMAT", "text"),
        ("SHARDLINE_NATS_URL", "nats://127.0.0.1:4222"),
        ("SHARDLINE_NATS_PASSWORD", "pw"),
        (
            "SHARDLINE_NATS_ASSIGNMENT_TENANTS_ALLOWLIST",
            "acme, globex,",
        ),
        ("SHARDLINE_ADMIN_ENABLED", "false"),
    ])
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(c.server.shard_port_base, 7000);
    assert_eq!(c.limits.ring_slots, 4096);
    assert!(c.tls.enabled);
    assert_eq!(c.tls.client_ca.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(
        (c.logging.level, c.logging.format),
        (LogLevel::Debug, LogFormat::Text)
    );
    assert_eq!(c.nats.url.as_str(), "nats://127.0.0.1:4222");
    assert_eq!(c.nats.password.expose(), "pw");
    assert_eq!(c.nats.assignment_tenants_allowlist, ["acme", "globex"]);
    assert!(!c.admin.enabled);
}

#[test]
fn cores_override() {
    let cores = |v: &str| applied(&[("SHARDLINE_SERVER_CORES", v)]).map(|c| c.server.cores);
    assert_eq!(cores("all").unwrap(), Cores::All);
    assert_eq!(cores("2").unwrap(), Cores::Count(2));
    assert_eq!(cores("0,1").unwrap(), Cores::List(vec![0, 1]));
    assert_eq!(cores("4-6").unwrap(), Cores::List(vec![4, 5, 6]));
    assert!(cores("two").is_err());
}

/// A bad value is an error naming the variable, the key and the value; every bad variable
/// is reported, not just the first.
#[test]
fn bad_values_name_the_variable() {
    let err = applied(&[
        ("SHARDLINE_LIMITS_RING_SLOTS", "lots"),
        ("SHARDLINE_SERVER_LISTEN", "nowhere"),
        ("SHARDLINE_TLS_ENABLED", "yes"),
    ])
    .unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[0].key, "SHARDLINE_LIMITS_RING_SLOTS");
    assert_eq!(
        problems[0].message,
        "invalid value \"lots\" for limits.ring_slots: invalid digit found in string"
    );
    assert_eq!(problems[1].key, "SHARDLINE_SERVER_LISTEN");
    assert!(problems[2].message.contains("tls.enabled"));
}

#[test]
fn unknown_keys_and_foreign_variables() {
    let err = applied(&[
        ("SHARDLINE_SERVER_LISTN", "x"),
        ("SHARDLINE_ADMIN_TOKENS", "x"),
        ("SHARDLINE_COMPAT_DIR", "/x"),
        ("SHARDLINE_SERVER", "x"),
        ("PATH", "/bin"),
        ("HOME", "/root"),
    ])
    .unwrap_err();
    assert_eq!(
        err.problems()
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        [
            "SHARDLINE_SERVER_LISTN",
            "SHARDLINE_ADMIN_TOKENS",
            "SHARDLINE_SERVER"
        ]
    );
    assert!(err.problems()[0]
        .message
        .starts_with("no setting server.listn"));
    assert!(err.problems()[1].message.contains("admin.token_env"));
    assert!(err.problems()[2]
        .message
        .contains("names no config section"));
}

/// A misspelt section is as much a typo as a misspelt key: refused, naming the variable,
/// while the tools' own `SHARDLINE_` variables stay allowed.
#[test]
fn unknown_sections_are_errors() {
    let err = applied(&[
        ("SHARDLINE_CLUSTR_ENABLED", "1"),
        ("SHARDLINE_LOG", "debug"),
        ("SHARDLINE_COMPAT_DIR", "/x"),
        ("SHARDLINE_BIN", "/usr/bin/shardline"),
    ])
    .unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["SHARDLINE_CLUSTR_ENABLED", "SHARDLINE_LOG"]);
    let message = &err.problems()[0].message;
    assert!(message.contains("names no config section"), "{message}");
    assert!(message.contains("SERVER, LIMITS"), "{message}");
    assert!(applied(&[("SHARDLINE_COMPAT_DIR", "/x"), ("SHARDLINE_BIN", "b")]).is_ok());
}

#[test]
fn admin_token_from_the_environment() {
    let c = applied(&[("SHARDLINE_ADMIN_TOKEN", " tok-0123456789abcdef ")]).unwrap();
    assert_eq!(
        c.admin.env_token.as_ref().map(Secret::expose),
        Some("tok-0123456789abcdef")
    );
    assert_eq!(c.admin.all_tokens().count(), 1);
    // Empty means unset.
    let c = applied(&[("SHARDLINE_ADMIN_TOKEN", "")]).unwrap();
    assert_eq!(c.admin.env_token, None);
}

/// `SHARDLINE_ADMIN_TOKEN_ENV` renames the token variable, whichever order they come in;
/// the default name then is an unknown key like any other.
#[test]
fn token_variable_can_be_renamed() {
    for order in [[0, 1], [1, 0]] {
        let pairs = [
            ("SHARDLINE_ADMIN_TOKEN_ENV", "ROUTER_TOKEN"),
            ("ROUTER_TOKEN", "router-token-0123456789"),
        ];
        let c = applied(&[pairs[order[0]], pairs[order[1]]]).unwrap();
        assert_eq!(c.admin.token_env, "ROUTER_TOKEN");
        assert_eq!(
            c.admin.env_token.unwrap().expose(),
            "router-token-0123456789"
        );
    }
    let err = applied(&[
        ("SHARDLINE_ADMIN_TOKEN_ENV", ""),
        ("SHARDLINE_ADMIN_TOKEN", "x"),
    ])
    .unwrap_err();
    assert_eq!(err.problems()[0].key, "SHARDLINE_ADMIN_TOKEN");
}

/// Every key of every section except `admin.tokens` can be set from the environment: the
/// bundled defaults, fed back as variables, are accepted and change nothing.
#[test]
fn every_key_has_an_override() {
    let defaults: toml::Table = toml::to_string(&Config::default())
        .unwrap()
        .parse()
        .unwrap();
    let mut pairs = Vec::new();
    for (section, table) in &defaults {
        for (key, value) in table.as_table().unwrap() {
            if (section.as_str(), key.as_str()) == ("admin", "tokens") {
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) if a.iter().all(toml::Value::is_str) => a
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            let name = format!("SHARDLINE_{section}_{key}").to_ascii_uppercase();
            pairs.push((name, text));
        }
    }
    assert!(pairs.len() > 40);
    let mut config = Config::default();
    config.apply_env(pairs.into_iter()).unwrap();
    assert_eq!(config, Config::default());
}

/// The new byte bounds and the allowed assignment subjects are set like their neighbours.
#[test]
fn cache_bytes_and_subjects_allowed_overrides() {
    let c = applied(&[
        (
            "SHARDLINE_LIMITS_IDEMPOTENCY_BYTES_PER_SHARD_MAX",
            "2097152",
        ),
        (
            "SHARDLINE_LIMITS_RESULTS_DEDUP_BYTES_PER_SHARD_MAX",
            "1048576",
        ),
        (
            "SHARDLINE_NATS_ASSIGNMENT_SUBJECTS_ALLOWED",
            "team.*.assign, caf.exec.assign.v1.>",
        ),
    ])
    .unwrap();
    assert_eq!(c.limits.idempotency_bytes_per_shard_max, 2 << 20);
    assert_eq!(c.limits.results_dedup_bytes_per_shard_max, 1 << 20);
    assert_eq!(
        c.nats.assignment_subjects_allowed,
        ["team.*.assign", "caf.exec.assign.v1.>"]
    );
    let err = applied(&[("SHARDLINE_LIMITS_IDEMPOTENCY_BYTES_PER_SHARD_MAX", "16MiB")]);
    let err = err.unwrap_err();
    assert_eq!(
        err.problems()[0].key,
        "SHARDLINE_LIMITS_IDEMPOTENCY_BYTES_PER_SHARD_MAX"
    );
}

/// The operations listener, strictness and the admin API's data-port switch are settable
/// from the environment; an empty `ops_listen` turns the listener off.
#[test]
fn ops_overrides() {
    let c = applied(&[
        ("SHARDLINE_SERVER_OPS_LISTEN", ""),
        ("SHARDLINE_SERVER_STRICT_POLICIES", "true"),
        ("SHARDLINE_ADMIN_ON_DATA_PORT", "false"),
    ])
    .unwrap();
    assert_eq!(c.server.ops_listen, None);
    assert!(c.server.strict_policies && !c.admin.on_data_port);
    let c = applied(&[("SHARDLINE_SERVER_OPS_LISTEN", "10.0.0.1:9191")]).unwrap();
    assert_eq!(c.server.ops_listen, Some("10.0.0.1:9191".parse().unwrap()));
    assert!(applied(&[("SHARDLINE_SERVER_OPS_LISTEN", "x")]).is_err());
}

/// `[cluster]` is set like every other section; a bad boolean names its variable.
#[test]
fn cluster_overrides() {
    let c = applied(&[
        ("SHARDLINE_CLUSTER_ENABLED", "true"),
        ("SHARDLINE_CLUSTER_NODE_ID", " edge-2 "),
    ])
    .unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.node_id, "edge-2");
    let c = applied(&[("SHARDLINE_CLUSTER_NODE_ID", "")]).unwrap();
    assert_eq!(c.cluster.node_id, "", "empty = the host name");
    let err = applied(&[
        ("SHARDLINE_CLUSTER_ENABLED", "on"),
        ("SHARDLINE_CLUSTER_NODEID", "x"),
    ])
    .unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["SHARDLINE_CLUSTER_ENABLED", "SHARDLINE_CLUSTER_NODEID"]
    );
    assert!(err.problems()[0].message.contains("cluster.enabled"));
    assert!(err.problems()[1]
        .message
        .starts_with("no setting cluster.nodeid"));
}

/// A node id from the environment is checked like one from the file.
#[test]
fn cluster_node_id_from_the_environment_is_validated() {
    let dir = std::env::temp_dir().join(format!("shardline-env-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::default();
    config
        .apply_env(vars(&[("SHARDLINE_CLUSTER_NODE_ID", "two words")]))
        .unwrap();
    config.resolve_paths(&dir);
    let problems = config.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "cluster.node_id");
    let _ = std::fs::remove_dir_all(&dir);
}
