use std::path::PathBuf;

use super::super::AdminToken;
use super::*;

/// The problems of `Config::default()` after `change`, as `key: message` lines.
fn problems_after(change: impl FnOnce(&mut Config)) -> Vec<String> {
    let mut config = Config::default();
    change(&mut config);
    config.problems().iter().map(ToString::to_string).collect()
}

fn token(value: &str, tenant: Option<&str>) -> AdminToken {
    AdminToken {
        token: Secret::new(value),
        tenant: tenant.map(str::to_owned),
        scopes: None,
    }
}

#[test]
fn defaults_are_valid() {
    assert_eq!(Config::default().problems(), []);
}

#[test]
fn ring_slots() {
    let p = problems_after(|c| c.limits.ring_slots = 1000);
    assert_eq!(p, ["limits.ring_slots: must be a power of two (got 1000)"]);
    let p = problems_after(|c| c.limits.ring_slots = 1 << 17);
    assert_eq!(
        p,
        ["limits.ring_slots: must be between 2 and 65536 (got 131072)"]
    );
    let p = problems_after(|c| c.limits.ring_slots = 0);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(problems_after(|c| c.limits.ring_slots = 2).is_empty());
}

#[test]
fn limit_ranges() {
    let p = problems_after(|c| {
        c.limits.body_bytes_max = 10;
        c.limits.headers_max = 100_000;
        c.limits.header_bytes_max = 0;
        c.limits.connections_per_shard_max = 0;
        c.limits.read_timeout_ms = 0;
        c.limits.idle_timeout_ms = TIMEOUT_MS_MAX + 1;
        c.limits.write_timeout_ms = 0;
        c.limits.sticky_entries_per_shard = 1;
        c.limits.idempotency_entries_per_shard = 0;
        c.limits.idempotency_ttl_ms = 10;
        c.server.drain_timeout_ms = DRAIN_TIMEOUT_MS_MAX + 1;
        c.server.drain_grace_ms = DRAIN_GRACE_MS_MAX + 1;
    });
    let keys: Vec<&str> = p.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "server.drain_timeout_ms",
            "server.drain_grace_ms",
            "limits.body_bytes_max",
            "limits.headers_max",
            "limits.header_bytes_max",
            "limits.connections_per_shard_max",
            "limits.read_timeout_ms",
            "limits.idle_timeout_ms",
            "limits.write_timeout_ms",
            "limits.sticky_entries_per_shard",
            "limits.idempotency_entries_per_shard",
            "limits.idempotency_ttl_ms",
        ]
    );
    assert_eq!(
        p[1],
        "server.drain_grace_ms: must be between 0 and 60000 (got 60001)"
    );
    assert_eq!(
        p[2],
        "limits.body_bytes_max: must be between 1024 and 67108864 (got 10)"
    );
}

#[test]
fn cores() {
    let p = |cores: Cores| problems_after(|c| c.server.cores = cores);
    assert_eq!(
        p(Cores::Count(0)),
        ["server.cores: must be between 1 and 256 (got 0)"]
    );
    assert_eq!(p(Cores::Count(257)).len(), 1);
    assert_eq!(
        p(Cores::List(vec![])),
        ["server.cores: the core list is empty"]
    );
    assert_eq!(
        p(Cores::List(vec![1, 0, 1])),
        ["server.cores: core 1 is listed twice"]
    );
    assert_eq!(
        p(Cores::List(vec![1024])),
        ["server.cores: CPU numbers go up to 1023 (got 1024)"]
    );
    assert_eq!(
        p(Cores::List((0..300).collect())),
        ["server.cores: at most 256 cores (got 300)"]
    );
    assert!(p(Cores::List(vec![3, 1])).is_empty());
}

#[test]
fn ports() {
    let p = problems_after(|c| {
        c.server.shard_port_base = 65_500;
        c.server.cores = Cores::Count(100);
    });
    assert_eq!(
        p,
        ["server.shard_port_base: shard ports 65500..=65599 pass 65535 (100 shards)"]
    );
    // `all` assumes the largest shard count.
    let p = problems_after(|c| c.server.shard_port_base = 65_400);
    assert_eq!(p.len(), 1, "{p:?}");
    let p = problems_after(|c| {
        c.server.shard_port_base = 8_079;
        c.server.cores = Cores::Count(2);
    });
    assert_eq!(
        p,
        ["server.shard_port_base: shard ports 8079..=8080 include server.listen's port 8080"]
    );
    let p = problems_after(|c| {
        c.server.shard_port_base = 9_000;
        c.server.cores = Cores::List(vec![4, 5]);
        c.server.listen = "127.0.0.1:0".parse().unwrap();
    });
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn directories_must_be_named() {
    let p = problems_after(|c| c.server.policies_dir = PathBuf::new());
    assert_eq!(p, ["server.policies_dir: must not be empty"]);
}

#[test]
fn tls_files_must_exist_when_enabled() {
    let p = problems_after(|c| {
        c.tls.cert = "/nonexistent/s.crt".into();
        c.tls.client_ca = Some("/nonexistent/ca.pem".into());
    });
    assert!(p.is_empty(), "disabled TLS reads no files: {p:?}");
    let p = problems_after(|c| {
        c.tls.enabled = true;
        c.tls.cert = "/nonexistent/s.crt".into();
        c.tls.key = "/nonexistent/s.key".into();
        c.tls.client_ca = Some("/nonexistent/ca.pem".into());
        c.tls.listen = "0.0.0.0:8080".parse().unwrap();
    });
    assert_eq!(
        p,
        [
            "tls.cert: file /nonexistent/s.crt not found (tls.enabled is true)",
            "tls.key: file /nonexistent/s.key not found (tls.enabled is true)",
            "tls.client_ca: file /nonexistent/ca.pem not found \
             (client certificates are checked against it)",
            "tls.listen: 0.0.0.0:8080 is also server.listen's address",
        ]
    );
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let p = problems_after(|c| {
        c.tls.enabled = true;
        c.tls.cert = manifest.clone();
        c.tls.key = manifest.clone();
    });
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn admin_tokens() {
    let p = problems_after(|c| {
        c.admin.tokens = vec![
            token("0123456789abcdef", Some("acme")),
            token("short", None),
            token("", None),
            token("0123456789abcdef", Some("ac me")),
            token("with space 0123456789", Some("")),
        ];
    });
    assert_eq!(
        p,
        [
            "admin.tokens[1].token: must be 16–256 bytes (got 5)",
            "admin.tokens[2].token: must be 16–256 bytes (got 0)",
            "admin.tokens[3].tenant: must match ^[A-Za-z0-9_.-]{1,64}$ (got \"ac me\")",
            "admin.tokens[3].token: same token as admin.tokens[0].token",
            "admin.tokens[4].token: must be visible ASCII (no spaces or control characters)",
            "admin.tokens[4].tenant: must match ^[A-Za-z0-9_.-]{1,64}$ (got \"\")",
        ]
    );
    for line in &p {
        assert!(
            !line.contains("0123456789abcdef") && !line.contains("short"),
            "{line}"
        );
    }
}

#[test]
fn admin_token_counts_and_env() {
    let p = problems_after(|c| {
        c.admin.tokens = (0..=TOKENS_MAX)
            .map(|i| token(&format!("token-{i:016}"), None))
            .collect();
    });
    assert_eq!(
        p,
        ["admin.tokens: at most 1024 with the token_env token (got 1025)"]
    );
    let p = problems_after(|c| {
        c.admin.tokens = vec![token("0123456789abcdef", None)];
        c.admin.env_token = Some(Secret::new("0123456789abcdef"));
    });
    assert_eq!(
        p,
        ["SHARDLINE_ADMIN_TOKEN: same token as admin.tokens[0].token"]
    );
    let p = problems_after(|c| c.admin.env_token = Some(Secret::new("tiny")));
    assert_eq!(p, ["SHARDLINE_ADMIN_TOKEN: must be 16–256 bytes (got 4)"]);
    let p = problems_after(|c| c.admin.token_env = "1BAD-NAME".into());
    assert_eq!(
        p,
        ["admin.token_env: not an environment variable name: \"1BAD-NAME\""]
    );
    assert!(problems_after(|c| c.admin.token_env.clear()).is_empty());
}

#[test]
fn nats_url_and_credentials() {
    let p = problems_after(|c| {
        c.nats.url = NatsUrls::new("nats://u:secretpw@a:4222, http://b, tls://");
        c.nats.token = Secret::new("t");
        c.nats.user = "u".into();
    });
    assert_eq!(
        p,
        [
            "nats.url: expected nats://host:port or tls://host:port (got \"http://b\")",
            "nats.url: expected nats://host:port or tls://host:port (got \"tls://\")",
            "nats.token: set either a token or a user and password, not both",
        ]
    );
    let p = problems_after(|c| c.nats.password = Secret::new("pw"));
    assert_eq!(p, ["nats.password: needs nats.user"]);
    let many = vec!["nats://h:4222"; NATS_SERVERS_MAX + 1].join(",");
    let p = problems_after(|c| c.nats.url = NatsUrls::new(many));
    assert_eq!(p, ["nats.url: at most 16 servers (got 17)"]);
    let p = problems_after(|c| c.nats.name = "my router".into());
    assert_eq!(
        p,
        ["nats.name: must not contain spaces or control characters (got \"my router\")"]
    );
    let p = problems_after(|c| c.nats.decide_queue_group.clear());
    assert_eq!(p, ["nats.decide_queue_group: must not be empty"]);
}

#[test]
fn nats_tls_files() {
    let p = problems_after(|c| c.nats.tls_cert = Some("/nonexistent/c.pem".into()));
    assert_eq!(p, ["nats.tls_key: needs to be set with nats.tls_cert"]);
    let p = problems_after(|c| {
        c.nats.url = NatsUrls::new("tls://nats:4222");
        c.nats.tls_ca = Some("/nonexistent/ca.pem".into());
    });
    assert_eq!(
        p,
        ["nats.tls_ca: file /nonexistent/ca.pem not found (nats.url is set)"]
    );
}

#[test]
fn nats_subjects_and_ranges() {
    let p = problems_after(|c| {
        c.nats.decide_subject = "a.*.>".into();
        c.nats.result_subject = "a.>.b".into();
        c.nats.usage_subject = "usage.*".into();
        c.nats.assignment_subject = "a..b".into();
        c.nats.ack_subject = "a b".into();
        c.nats.admin_subject = "x".repeat(NATS_SUBJECT_BYTES_MAX + 1);
        c.nats.request_timeout_ms = 0;
        c.nats.reconnect_backoff_max_ms = 1;
        c.nats.outbound_bytes_max = 1;
        c.nats.assignment_retries_max = 11;
    });
    let keys: Vec<&str> = p.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "nats.request_timeout_ms",
            "nats.reconnect_backoff_max_ms",
            "nats.outbound_bytes_max",
            "nats.result_subject",
            "nats.ack_subject",
            "nats.admin_subject",
            "nats.assignment_subject",
            "nats.usage_subject",
            "nats.assignment_retries_max",
        ]
    );
    assert_eq!(
        p[3],
        "nats.result_subject: must be dot-separated tokens of visible ASCII, `*` and a \
         final `>` allowed (got \"a.>.b\")"
    );
}

#[test]
fn nats_allowlist() {
    let p = problems_after(|c| {
        c.nats.assignment_tenants_allowlist = vec!["acme".into(), "bad tenant".into()];
    });
    assert_eq!(
        p,
        [
            "nats.assignment_tenants_allowlist[1]: must match ^[A-Za-z0-9_.-]{1,64}$ \
          (got \"bad tenant\")"
        ]
    );
}

/// One pass reports the problems of every section.
#[test]
fn every_problem_is_collected() {
    let p = problems_after(|c| {
        c.server.cores = Cores::Count(0);
        c.limits.ring_slots = 3;
        c.tls.enabled = true;
        c.admin.tokens = vec![token("x", None)];
        c.nats.password = Secret::new("p");
    });
    assert_eq!(p.len(), 6, "{p:?}");
    let error = Config {
        limits: LimitsConfig {
            ring_slots: 3,
            ..LimitsConfig::default()
        },
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid config: 1 problem\n  limits.ring_slots: must be a power of two (got 3)"
    );
}

/// The stall threshold and the handoff deadline are bounded both ways: zero would mark
/// every shard stalled or shed every handoff, and a typo'd huge value would hide a
/// frozen shard or hold requests for hours.
#[test]
fn stall_and_handoff_timeout_ranges() {
    let p = problems_after(|c| {
        c.server.stall_ms = STALL_MS_MIN - 1;
        c.server.handoff_timeout_ms = HANDOFF_TIMEOUT_MS_MAX + 1;
    });
    assert_eq!(
        p,
        [
            "server.stall_ms: must be between 50 and 60000 (got 49)",
            "server.handoff_timeout_ms: must be between 10 and 120000 (got 120001)",
        ]
    );
    let mut c = Config::default();
    let vars = [
        ("SHARDLINE_SERVER_STALL_MS".to_owned(), "250".to_owned()),
        (
            "SHARDLINE_SERVER_HANDOFF_TIMEOUT_MS".to_owned(),
            "400".to_owned(),
        ),
    ];
    assert!(c.apply_env_collect(vars.into_iter()).is_empty());
    assert_eq!((c.server.stall_ms, c.server.handoff_timeout_ms), (250, 400));
}

/// `config check` and `serve` agree on token lengths: at each edge of the bound, a token
/// the config accepts builds into `serve`'s token list and one it refuses does not, with
/// the same words.
#[test]
fn token_length_bounds_agree_with_serve() {
    use crate::admin::{Permissions, TokenSpec, Tokens};
    for len in [
        TOKEN_BYTES_MIN - 1,
        TOKEN_BYTES_MIN,
        TOKEN_BYTES_MAX,
        TOKEN_BYTES_MAX + 1,
    ] {
        let value = "t".repeat(len);
        let checked = problems_after(|c| c.admin.tokens = vec![token(&value, None)]);
        let spec = TokenSpec {
            token: value.clone(),
            tenant: None,
            permissions: Permissions::ADMIN,
        };
        let served = Tokens::with_permissions(&[spec]);
        assert_eq!(
            checked.is_empty(),
            served.is_ok(),
            "{len} bytes: {checked:?}"
        );
        if let Err(err) = served {
            let message = format!("must be 16–256 bytes (got {len})");
            assert_eq!(checked, [format!("admin.tokens[0].token: {message}")]);
            assert_eq!(err.to_string(), format!("admin token #0 {message}"));
        }
    }
}

/// Scopes are known names, at least one.
#[test]
fn token_scopes() {
    let p = problems_after(|c| {
        let mut none = token("0123456789abcdef", None);
        none.scopes = Some(vec![]);
        let mut odd = token("0123456789abcdeg", Some("acme"));
        odd.scopes = Some(vec!["results".into(), "root".into()]);
        c.admin.tokens = vec![none, odd];
    });
    assert_eq!(
        p,
        [
            "admin.tokens[0].scopes: must name at least one of admin, results, decide",
            "admin.tokens[1].scopes: unknown scope \"root\"; known: admin, results, decide",
        ]
    );
}

/// Allowed assignment subjects are NATS patterns (`*` a token, `>` only last); a bad one
/// is reported with its index.
#[test]
fn assignment_subjects_allowed() {
    let p = problems_after(|c| {
        c.nats.assignment_subjects_allowed = vec![
            "caf.exec.assign.v1.>".into(),
            "a.>.b".into(),
            "team.*.assign".into(),
            "".into(),
            "a b".into(),
        ];
    });
    let keys: Vec<&str> = p.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "nats.assignment_subjects_allowed[1]",
            "nats.assignment_subjects_allowed[3]",
            "nats.assignment_subjects_allowed[4]",
        ]
    );
    let p = problems_after(|c| {
        c.nats.assignment_subjects_allowed = vec!["a".into(); ASSIGNMENT_SUBJECTS_ALLOWED_MAX + 1];
    });
    assert_eq!(
        p,
        ["nats.assignment_subjects_allowed: at most 256 patterns (got 257)"]
    );
    assert!(problems_after(|c| c.nats.assignment_subjects_allowed.clear()).is_empty());
}

/// The caches' byte bounds have ranges like every other limit.
#[test]
fn cache_byte_bounds() {
    let p = problems_after(|c| {
        c.limits.idempotency_bytes_per_shard_max = 1;
        c.limits.results_dedup_bytes_per_shard_max = IDEMPOTENCY_BYTES_PER_SHARD_MAX * 2;
    });
    assert_eq!(
        p,
        [
            "limits.idempotency_bytes_per_shard_max: must be between 1048576 and 1073741824 \
             (got 1)",
            "limits.results_dedup_bytes_per_shard_max: must be between 65536 and 1073741824 \
             (got 2147483648)",
        ]
    );
}

/// An empty node id stands for the host name, which is checked only where it is used (NATS
/// on, or the cluster enabled); one written in the config is always checked.
#[test]
fn cluster_node_id_and_nats() {
    assert!(problems_after(|c| c.cluster.node_id = "edge-1".into()).is_empty());
    let p = problems_after(|c| c.cluster.node_id = "edge 1".into());
    assert_eq!(
        p,
        ["cluster.node_id: must match ^[A-Za-z0-9_.-]{1,64}$ (got \"edge 1\")"]
    );
    let p = problems_after(|c| c.cluster.enabled = true);
    assert_eq!(
        p,
        ["cluster.enabled: true while nats.url is empty: the nodes of a cluster meet on NATS"]
    );
    let with_nats = |c: &mut Config| {
        c.nats.url = NatsUrls::new("nats://127.0.0.1:4222");
        c.cluster.enabled = true;
    };
    // This host's name is a valid node id (the default stands).
    assert!(is_node_id(&super::super::host_name().unwrap()));
    assert!(problems_after(with_nats).is_empty());
    assert!(is_node_id("a") && is_node_id("A-z_0.9") && !is_node_id(""));
    assert!(!is_node_id("a:b") && !is_node_id(&"x".repeat(65)));
}
