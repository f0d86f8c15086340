use std::path::{Path, PathBuf};

use super::*;

const BUNDLED: &str = include_str!("../../config/shardline.toml");

fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

fn parse_err(text: &str) -> ConfigError {
    Config::from_toml_str(text, Path::new("/base")).unwrap_err()
}

/// A fresh directory under the system temp dir, unique to this test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardline-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn empty_file_is_the_defaults() {
    let config = Config::from_toml_str("", Path::new("/etc/shardline")).unwrap();
    let mut expected = Config::default();
    expected.resolve_paths(Path::new("/etc/shardline"));
    assert_eq!(config, expected);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.server.policies_dir,
        Path::new("/etc/shardline/policies")
    );
    assert_eq!(config.limits.ring_slots, 1024);
    assert_eq!(config.nats.decide_subject, "beamline.router.v1.decide");
    assert_eq!(config.nats.decide_queue_group, "router-decide-group");
    assert_eq!(config.nats.ack_subject, "caf.exec.assign.v1.ack");
    assert!(!config.nats.enabled() && !config.tls.enabled && config.admin.enabled);
    assert_eq!(config.admin.token_env, "SHARDLINE_ADMIN_TOKEN");
}

/// The bundled file states every default, lists every key, and its policies directory is
/// the bundled `config/policies`.
#[test]
fn bundled_config_is_the_defaults_and_complete() {
    let dir = bundled_dir();
    let config = Config::from_toml_str(BUNDLED, &dir).unwrap();
    let mut expected = Config::default();
    expected.resolve_paths(&dir);
    assert_eq!(config, expected);
    assert!(config.server.policies_dir.join("acme").is_dir());

    let bundled: toml::Table = BUNDLED.parse().unwrap();
    let defaults: toml::Table = toml::to_string(&Config::default())
        .unwrap()
        .parse()
        .unwrap();
    for (section, values) in &defaults {
        let ours = values.as_table().unwrap().keys();
        let theirs = bundled[section].as_table().unwrap().keys();
        assert!(ours.eq(theirs), "[{section}] keys differ from the defaults");
    }
    assert!(defaults.keys().eq(bundled.keys()));
}

#[test]
fn load_reads_the_bundled_file() {
    let path = bundled_dir().join("shardline.toml");
    // The real environment applies; only unrelated SHARDLINE_ variables are expected here.
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.policies_dir, bundled_dir().join("policies"));
}

/// A value for every key, none of them the default.
const FULL_FILE: &str = r#"
[server]
listen = "0.0.0.0:9000"
shard_port_base = 9100
cores = [0, 2]
policies_dir = "/srv/policies"
extensions_dir = "ext"
drain_timeout_ms = 0
[limits]
body_bytes_max = 2048
headers_max = 32
header_bytes_max = 8192
connections_per_shard_max = 5
read_timeout_ms = 1
idle_timeout_ms = 2
write_timeout_ms = 3
ring_slots = 65536
sticky_entries_per_shard = 4
idempotency_entries_per_shard = 1
idempotency_ttl_ms = 1000
[tls]
enabled = true
listen = "0.0.0.0:9443"
cert = "s.crt"
key = "s.key"
client_ca = "ca.pem"
[admin]
enabled = false
tokens = [{ token = "0123456789abcdef", tenant = "acme" }, { token = "fedcba9876543210" }]
token_env = "ROUTER_ADMIN"
[logging]
level = "debug"
format = "text"
[nats]
url = "tls://a:4222, tls://b:4222"
name = "router-1"
user = "router"
password = "pw"
tls_ca = "n-ca.pem"
tls_cert = "n.crt"
tls_key = "n.key"
tls_server_name = "nats.internal"
request_timeout_ms = 100
reconnect_backoff_max_ms = 1000
outbound_bytes_max = 65536
decide_subject = "x.decide"
decide_queue_group = "g"
assignment_subject = "x.assign"
result_subject = "x.result.>"
usage_subject = "x.usage"
ack_subject = "x.*.ack"
admin_subject = "x.admin"
assignment_tenants_allowlist = ["acme", "globex"]
assignment_retries_max = 0
[cluster]
enabled = true
node_id = "router-a.eu-1"
"#;

#[test]
fn full_file() {
    let dir = temp_dir("full");
    for file in ["s.crt", "s.key", "ca.pem", "n-ca.pem", "n.crt", "n.key"] {
        std::fs::write(dir.join(file), "pem").unwrap();
    }
    let c = Config::from_toml_str(FULL_FILE, &dir).unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.server.shard_port_base, 9100);
    assert_eq!(c.server.cores, Cores::List(vec![0, 2]));
    assert_eq!(c.server.policies_dir, Path::new("/srv/policies"));
    assert_eq!(c.server.extensions_dir, dir.join("ext"));
    assert_eq!(c.server.drain_timeout_ms, 0);
    assert_eq!(
        (c.limits.body_bytes_max, c.limits.ring_slots),
        (2048, 65536)
    );
    assert_eq!(c.limits.idempotency_ttl_ms, 1000);
    assert_eq!(c.tls.client_ca, Some(dir.join("ca.pem")));
    assert_eq!(c.tls.key, dir.join("s.key"));
    assert_eq!(c.admin.tokens[0].tenant.as_deref(), Some("acme"));
    assert_eq!(c.admin.tokens[1].token.expose(), "fedcba9876543210");
    let scopes: Vec<_> = c.admin.all_tokens().map(|(_, tenant)| tenant).collect();
    assert_eq!(scopes, [Some("acme"), None]);
    assert_eq!(c.logging.level, crate::logging::LogLevel::Debug);
    assert_eq!(c.logging.format, crate::logging::LogFormat::Text);
    assert_eq!(c.nats.password.expose(), "pw");
    assert_eq!(
        c.nats.url.servers().collect::<Vec<_>>(),
        ["tls://a:4222", "tls://b:4222"]
    );
    assert_eq!(c.nats.tls_key, Some(dir.join("n.key")));
    assert_eq!(c.nats.assignment_tenants_allowlist, ["acme", "globex"]);
    assert_eq!(c.nats.assignment_retries_max, 0);
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.node_id, "router-a.eu-1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cores_forms() {
    let cores = |text: &str| {
        let toml = format!("[server]\ncores = {text}");
        Config::from_toml_str(&toml, Path::new("/")).map(|c| c.server.cores)
    };
    assert_eq!(cores("\"all\"").unwrap(), Cores::All);
    assert_eq!(cores("\"ALL\"").unwrap(), Cores::All);
    assert_eq!(cores("2").unwrap(), Cores::Count(2));
    assert_eq!(cores("[3, 1]").unwrap(), Cores::List(vec![3, 1]));
    assert_eq!(cores("\"0-2,5\"").unwrap(), Cores::List(vec![0, 1, 2, 5]));
    for bad in [
        "-1",
        "\"some\"",
        "[1, -2]",
        "\"3-1\"",
        "\"0-5000\"",
        "[2000]",
        "1.5",
    ] {
        let err = cores(bad).unwrap_err();
        let keys = keys(err.problems());
        assert!(
            keys.len() == 1 && keys[0].starts_with("server.cores"),
            "{bad}: {keys:?}"
        );
    }
}

/// `server.poll` takes the three modes and nothing else; the adaptive spin is bounded.
#[test]
fn poll_modes_and_their_spin() {
    let server = |text: &str| {
        let toml = format!("[server]\n{text}");
        Config::from_toml_str(&toml, Path::new("/")).map(|c| c.server)
    };
    assert_eq!(server("").unwrap().poll, Poll::Adaptive);
    for (text, mode) in [
        ("park", Poll::Park),
        ("adaptive", Poll::Adaptive),
        ("busy", Poll::Busy),
    ] {
        let parsed = server(&format!("poll = \"{text}\"")).unwrap();
        assert_eq!(parsed.poll, mode);
        assert_eq!(text.parse::<Poll>(), Ok(mode));
    }
    assert_eq!(server("poll_spin_us = 0").unwrap().poll_spin_us, 0);
    for bad in [
        "poll = \"spin\"",
        "poll = 1",
        "poll_spin_us = 1001",
        "poll_spin_us = -1",
    ] {
        let err = server(bad).unwrap_err();
        let keys = keys(err.problems());
        assert!(
            keys.len() == 1 && keys[0].starts_with("server.poll"),
            "{bad}: {keys:?}"
        );
    }
    assert!("spin".parse::<Poll>().is_err());
}

/// Unknown keys are refused with their full path, and every one of them is reported,
/// together with mistyped values.
#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = r#"
        sever = { listen = "x" }
        [server]
        listn = "127.0.0.1:1"
        [limits]
        ring_slots = "many"
        [admin]
        tokens = [{ token = "0123456789abcdef" }, { token = "0123456789abcdeg", tenat = "a" }]
    "#;
    let err = parse_err(text);
    assert_eq!(
        keys(err.problems()),
        [
            "admin.tokens[1]",
            "limits.ring_slots",
            "server.listn",
            "sever"
        ]
    );
    let messages: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert!(
        messages[0].contains("unknown field `tenat`"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("invalid type: string \"many\""),
        "{messages:?}"
    );
    assert!(
        messages[2].contains("unknown field `listn`"),
        "{messages:?}"
    );
    assert!(
        messages[3].starts_with("sever: unknown field `sever`"),
        "{messages:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with("invalid config: 4 problems\n  admin.tokens[1]: "),
        "{shown}"
    );
}

/// Keys that cannot be read do not hide the rule problems of the others.
#[test]
fn parse_and_rule_problems_come_together() {
    let err = parse_err("[server]\nlistn = 1\ncores = 0\n[limits]\nring_slots = 1000\n");
    assert_eq!(
        keys(err.problems()),
        ["server.listn", "server.cores", "limits.ring_slots"]
    );
    let err = parse_err("server = 1\n[limits]\nring_slots = \"x\"\nheaders_max = 1\n");
    assert_eq!(
        keys(err.problems()),
        ["limits.ring_slots", "server", "limits.headers_max"]
    );
}

#[test]
fn wrong_types_name_the_key() {
    let err = parse_err("server = 3\n[logging]\nlevel = \"verbose\"\n");
    assert_eq!(keys(err.problems()), ["logging.level", "server"]);
    assert!(err.problems()[0]
        .message
        .contains("unknown log level `verbose`"));
    let err = parse_err("[server]\nlisten = \"localhost\"\nshard_port_base = 70000\n");
    assert_eq!(
        keys(err.problems()),
        ["server.listen", "server.shard_port_base"]
    );
    let err = parse_err("[admin]\ntokens = [{ tenant = \"acme\" }]\n");
    assert_eq!(keys(err.problems()), ["admin.tokens[0]"]);
    assert!(err.problems()[0].message.contains("missing field `token`"));
}

/// A mistyped secret is reported without its value.
#[test]
fn mistyped_secret_is_not_quoted() {
    let err = parse_err("[nats]\npassword = 987654321\n");
    assert_eq!(keys(err.problems()), ["nats.password"]);
    assert!(!err.to_string().contains("987654321"), "{err}");
    let err = parse_err("[admin]\ntokens = [{ token = 123456789012345678 }]\n");
    assert!(!err.to_string().contains("123456789012345678"), "{err}");
}

/// Syntax errors give line and column, and do not quote the line (it may hold a secret).
#[test]
fn syntax_error_position_without_the_line() {
    let err = parse_err("[nats]\npassword = \"s3cret\nuser = 1\n");
    let ConfigError::Syntax { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*line, *column), (2, 19));
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(matches!(
        parse_err("[server"),
        ConfigError::Syntax { line: 1, .. }
    ));
}

#[test]
fn relative_paths_resolve_against_the_base() {
    let text = r#"
        [server]
        policies_dir = "p"
        extensions_dir = "/abs/ext"
        [tls]
        cert = "certs/a.crt"
        client_ca = ""
        [nats]
        tls_ca = "ca/nats.pem"
    "#;
    let base = Path::new("/etc/shardline");
    let (mut config, problems) = parse::parse_document(text).unwrap();
    assert_eq!(problems, []);
    config.resolve_paths(base);
    assert_eq!(config.server.policies_dir, base.join("p"));
    assert_eq!(config.server.extensions_dir, Path::new("/abs/ext"));
    assert_eq!(config.tls.cert, base.join("certs/a.crt"));
    assert_eq!(config.tls.key, base.join("certs/server.key"));
    assert_eq!(config.tls.client_ca, None);
    assert_eq!(config.nats.tls_ca, Some(base.join("ca/nats.pem")));
    assert_eq!(config.nats.tls_cert, None);
}

#[test]
fn load_resolves_against_the_file_directory() {
    let dir = temp_dir("load");
    let path = dir.join("router.toml");
    std::fs::write(&path, "[server]\npolicies_dir = \"pol\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.policies_dir, dir.join("pol"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_errors() {
    let dir = temp_dir("errors");
    let missing = Config::load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    let big = dir.join("big.toml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = line.repeat(CONFIG_FILE_BYTES_MAX as usize / line.len() + 1);
    std::fs::write(&big, text).unwrap();
    assert!(matches!(
        Config::load(&big),
        Err(ConfigError::TooLarge { .. })
    ));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nring_slots = 1000\n").unwrap();
    let err = Config::load(&bad).unwrap_err();
    assert_eq!(
        err.problems()[0].to_string(),
        "limits.ring_slots: must be a power of two (got 1000)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `logging.repeats_per_window`: 5 by default, 0 accepted (every line written), bounded.
#[test]
fn log_repeats_per_window_is_bounded() {
    let config = Config::from_toml_str("", Path::new("/base")).unwrap();
    assert_eq!(config.logging.repeats_per_window, 5);
    let config =
        Config::from_toml_str("[logging]\nrepeats_per_window = 0\n", Path::new("/base")).unwrap();
    assert_eq!(config.logging.repeats_per_window, 0);
    let err = parse_err("[logging]\nrepeats_per_window = 1000001\n");
    assert_eq!(keys(err.problems()), ["logging.repeats_per_window"]);
}

/// `server.ops_listen`: an address or `""` (off); it may not share a data listener's
/// port; the admin API cannot leave the data port when there is no operations listener.
#[test]
fn ops_listen_and_admin_on_data_port() {
    let config = Config::from_toml_str("", Path::new("/b")).unwrap();
    assert_eq!(
        config.server.ops_listen,
        Some("127.0.0.1:9090".parse().unwrap())
    );
    assert!(config.admin.on_data_port && !config.server.strict_policies);
    let off = Config::from_toml_str("[server]\nops_listen = \"\"", Path::new("/b")).unwrap();
    assert_eq!(off.server.ops_listen, None);
    assert!(off.redacted_summary().contains("ops_listen = \"\""));
    let ConfigError::Invalid(problems) = parse_err("[server]\nops_listen = \"nope\"") else {
        panic!("not a key problem");
    };
    assert_eq!(keys(&problems.0), ["server.ops_listen"]);
    let clash = "[server]\nlisten = \"127.0.0.1:7000\"\nops_listen = \"0.0.0.0:7000\"";
    let ConfigError::Invalid(problems) = parse_err(clash) else {
        panic!("not a key problem");
    };
    assert_eq!(keys(&problems.0), ["server.ops_listen"]);
    let in_shard_ports = "[server]\nshard_port_base = 9000\ncores = 200";
    let ConfigError::Invalid(problems) = parse_err(in_shard_ports) else {
        panic!("not a key problem");
    };
    assert_eq!(keys(&problems.0), ["server.shard_port_base"]);
    let nowhere = "[server]\nops_listen = \"\"\n[admin]\non_data_port = false";
    let ConfigError::Invalid(problems) = parse_err(nowhere) else {
        panic!("not a key problem");
    };
    assert_eq!(keys(&problems.0), ["admin.on_data_port"]);
}

/// `[cluster]`: off, and named after the host, by default; a node id is the tenant id's
/// form; turning the cluster on needs NATS, which it meets on.
#[test]
fn cluster_section() {
    let config = Config::from_toml_str("", Path::new("/b")).unwrap();
    assert!(!config.cluster.enabled);
    assert_eq!(config.cluster.node_id, "");
    assert_eq!(config.cluster.effective_node_id(), host_name());
    assert!(
        host_name().is_some_and(|h| !h.is_empty()),
        "this host has a name"
    );

    let named = Config::from_toml_str("[cluster]\nnode_id = \"edge_1.eu-west\"", Path::new("/b"));
    let named = named.unwrap().cluster;
    assert_eq!(named.effective_node_id().as_deref(), Some("edge_1.eu-west"));

    let pattern = format!("^[A-Za-z0-9_.-]{{1,{NODE_ID_BYTES_MAX}}}$");
    assert_eq!(NODE_ID_PATTERN, pattern);
    let long = "n".repeat(NODE_ID_BYTES_MAX + 1);
    for bad in ["bad id", "a/b", "nöde", "a*", &long] {
        let text = format!("[cluster]\nnode_id = {bad:?}");
        let ConfigError::Invalid(problems) = parse_err(&text) else {
            panic!("{bad:?}: not a key problem");
        };
        assert_eq!(keys(&problems.0), ["cluster.node_id"], "{bad:?}");
        let message = &problems.0[0].message;
        assert!(
            message.starts_with("must match ^[A-Za-z0-9_.-]{1,64}$ (got "),
            "{message}"
        );
    }
    let exactly_max = format!("[cluster]\nnode_id = \"{}\"", "n".repeat(NODE_ID_BYTES_MAX));
    assert!(Config::from_toml_str(&exactly_max, Path::new("/b")).is_ok());

    let ConfigError::Invalid(problems) = parse_err("[cluster]\nenabled = true") else {
        panic!("not a key problem");
    };
    assert_eq!(
        problems.0[0].to_string(),
        "cluster.enabled: true while nats.url is empty: the nodes of a cluster meet on NATS"
    );
    let with_nats = "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[cluster]\nenabled = true";
    assert!(
        Config::from_toml_str(with_nats, Path::new("/b"))
            .unwrap()
            .cluster
            .enabled
    );
    let err = parse_err("[cluster]\nenabled = \"yes\"\nnode = \"x\"");
    assert_eq!(keys(err.problems()), ["cluster.enabled", "cluster.node"]);
}

/// The summary shows `[cluster]` as written and, when the node id is empty, the host name
/// standing in for it.
#[test]
fn summary_names_the_node() {
    let summary = Config::default().redacted_summary();
    assert!(
        summary.contains("[cluster]\nenabled = false\nnode_id = \"\"\n"),
        "{summary}"
    );
    let host = host_name().unwrap();
    let comment = format!("# cluster.node_id is empty: this node is {host:?}, its host name.");
    assert!(summary.contains(&comment), "{summary}");
    let mut named = Config::default();
    named.cluster.node_id = "edge-1".into();
    let summary = named.redacted_summary();
    assert!(summary.contains("node_id = \"edge-1\""), "{summary}");
    assert!(!summary.contains("# cluster.node_id"), "{summary}");
}

/// The policy bucket, its replicas and the failover time: defaults, bounds at their
/// edges, and each refusal naming its key.
#[test]
fn cluster_bucket_replicas_and_failover_bounds() {
    let defaults = Config::from_toml_str("", Path::new("/b")).unwrap().cluster;
    assert_eq!(defaults.policy_bucket, POLICY_BUCKET_DEFAULT);
    assert_eq!((defaults.policy_replicas, defaults.failover_ms), (1, 3_000));
    let at_edges = format!(
        "[cluster]\npolicy_bucket = \"b_-9\"\npolicy_replicas = {POLICY_REPLICAS_MAX}\n\
         failover_ms = {FAILOVER_MS_MIN}"
    );
    let ok = Config::from_toml_str(&at_edges, Path::new("/b"))
        .unwrap()
        .cluster;
    assert_eq!(ok.policy_replicas, POLICY_REPLICAS_MAX);
    let max = format!("[cluster]\nfailover_ms = {FAILOVER_MS_MAX}");
    assert!(Config::from_toml_str(&max, Path::new("/b")).is_ok());
    for (text, key) in [
        (
            "policy_bucket = \"a.b\"".to_owned(),
            "cluster.policy_bucket",
        ),
        ("policy_bucket = \"\"".to_owned(), "cluster.policy_bucket"),
        ("policy_replicas = 0".to_owned(), "cluster.policy_replicas"),
        (
            format!("policy_replicas = {}", POLICY_REPLICAS_MAX + 1),
            "cluster.policy_replicas",
        ),
        (
            format!("failover_ms = {}", FAILOVER_MS_MIN - 1),
            "cluster.failover_ms",
        ),
        (
            format!("failover_ms = {}", FAILOVER_MS_MAX + 1),
            "cluster.failover_ms",
        ),
        ("failover = 10".to_owned(), "cluster.failover"),
    ] {
        let ConfigError::Invalid(problems) = parse_err(&format!("[cluster]\n{text}")) else {
            panic!("{text}: not refused as invalid");
        };
        assert_eq!(keys(&problems.0), [key], "{text}");
    }
}
