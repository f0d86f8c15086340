//! Defaults and accepted ranges of every numeric setting, as named constants.
//!
//! For a setting `x`, `X_DEFAULT` is used when the file omits it and `X_MIN..=X_MAX` is
//! what `validate` accepts. The ranges are wide enough for any real deployment and tight
//! enough that a typo (an extra zero, seconds written as milliseconds) is caught at start
//! instead of becoming a 10 GiB allocation or a timer that never fires.

/// Largest config file read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Shards in one process. Mirrors the runtime's bound (`shards::SHARDS_MAX`): a `ShardId`
/// is a `u16` and the ring mesh holds `n × (n − 1)` rings.
pub const SHARDS_MAX: usize = 256;
/// CPU numbers accepted in `server.cores`: below the kernel's `CPU_SETSIZE` (1024).
pub const CORE_ID_MAX: usize = 1023;

/// `server.drain_timeout_ms`: 0 stops without waiting for in-flight requests.
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const DRAIN_TIMEOUT_MS_MAX: u64 = 300_000;

/// `server.stall_ms`: a shard whose heartbeat has not run for this long is stalled (not
/// ready). Below the minimum a busy but healthy shard would flap; above the maximum a
/// frozen shard would take traffic for minutes.
pub const STALL_MS_DEFAULT: u64 = 1_000;
pub const STALL_MS_MIN: u64 = 50;
pub const STALL_MS_MAX: u64 = 60_000;

/// `server.handoff_timeout_ms`: how long a request handed to another shard waits for its
/// answer before it is answered `overloaded`. The default is well under clients' own
/// timeouts, and above a decision with extension stages on a healthy shard.
pub const HANDOFF_TIMEOUT_MS_DEFAULT: u64 = 2_000;
pub const HANDOFF_TIMEOUT_MS_MIN: u64 = 10;
pub const HANDOFF_TIMEOUT_MS_MAX: u64 = 120_000;
/// `server.drain_grace_ms`: after SIGTERM, how long `/readyz` answers 503 while the
/// listeners still serve, so a load balancer stops sending before they close. 0 = none.
pub const DRAIN_GRACE_MS_DEFAULT: u64 = 2_000;
pub const DRAIN_GRACE_MS_MAX: u64 = 60_000;

/// `limits.body_bytes_max` (SPEC §3: 1 MiB, configurable).
pub const BODY_BYTES_DEFAULT: usize = 1 << 20;
pub const BODY_BYTES_MIN: usize = 1 << 10;
pub const BODY_BYTES_MAX: usize = 64 << 20;

/// `limits.headers_max`: header lines per request.
pub const HEADERS_DEFAULT: usize = 64;
pub const HEADERS_MIN: usize = 8;
/// The HTTP parser's header array: the server refuses more. Equal to the transport's
/// `HEADERS_CEILING_MAX`, which asserts it: the transport depends on the config, never
/// the reverse.
pub const HEADERS_MAX: usize = 128;

/// `limits.header_bytes_max`: the request line and headers together.
pub const HEADER_BYTES_DEFAULT: usize = 16 << 10;
/// A request head must fit the connection's first read buffer (the server refuses less):
/// the transport's `READ_BUFFER_BYTES_INITIAL`, which asserts it is equal.
pub const HEADER_BYTES_MIN: usize = 4 << 10;
pub const HEADER_BYTES_MAX: usize = 1 << 20;

/// `limits.connections_per_shard_max`.
pub const CONNECTIONS_PER_SHARD_DEFAULT: usize = 10_000;
pub const CONNECTIONS_PER_SHARD_MIN: usize = 1;
pub const CONNECTIONS_PER_SHARD_MAX: usize = 1_000_000;

/// `limits.read_timeout_ms`, `limits.write_timeout_ms`, `limits.idle_timeout_ms`.
pub const READ_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
pub const TIMEOUT_MS_MIN: u64 = 1;
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

/// `limits.ring_slots`: slots per ordered pair of shards, a power of two. Mirrors the
/// runtime's `RING_SLOTS_MIN..=RING_SLOTS_MAX`.
pub const RING_SLOTS_DEFAULT: usize = 1_024;
pub const RING_SLOTS_MIN: usize = 2;
pub const RING_SLOTS_MAX: usize = 1 << 16;

/// `limits.sticky_entries_per_shard`, within the sticky table's own bounds.
pub const STICKY_ENTRIES_PER_SHARD_DEFAULT: usize = 1 << 16;
pub const STICKY_ENTRIES_PER_SHARD_MIN: usize = crate::decide::sticky::STICKY_ENTRIES_MIN;
pub const STICKY_ENTRIES_PER_SHARD_MAX: usize = crate::decide::sticky::STICKY_ENTRIES_MAX;

/// `limits.idempotency_entries_per_shard`.
pub const IDEMPOTENCY_ENTRIES_PER_SHARD_DEFAULT: usize = 1 << 16;
pub const IDEMPOTENCY_ENTRIES_PER_SHARD_MIN: usize = 1;
pub const IDEMPOTENCY_ENTRIES_PER_SHARD_MAX: usize = 1 << 24;

/// `limits.idempotency_ttl_ms`: how long a repeated key returns the first answer.
pub const IDEMPOTENCY_TTL_MS_DEFAULT: u64 = 600_000;
pub const IDEMPOTENCY_TTL_MS_MIN: u64 = 1_000;
pub const IDEMPOTENCY_TTL_MS_MAX: u64 = 86_400_000;

/// `admin.tokens` and the `token_env` token together, and each token's length: the
/// bounds `serve` enforces (`admin::TOKENS_MAX`, `TOKEN_BYTES_MIN..=TOKEN_BYTES_MAX`),
/// so `config check` accepts exactly what `serve` does.
pub use crate::admin::{TOKENS_MAX, TOKEN_BYTES_MAX, TOKEN_BYTES_MIN};
/// `admin.writes_per_second`: admin writes per token and second.
pub const ADMIN_WRITES_PER_SECOND_DEFAULT: u32 = 50;
pub const ADMIN_WRITES_PER_SECOND_MIN: u32 = 1;
pub const ADMIN_WRITES_PER_SECOND_MAX: u32 = 10_000;
/// `limits.idempotency_bytes_per_shard_max`: bytes charged to remembered answers (key,
/// answer, per-entry overhead) per shard. 16 MiB holds ~16 k answers of 1 KiB.
pub const IDEMPOTENCY_BYTES_PER_SHARD_DEFAULT: usize = 16 << 20;
/// Room for a few of the largest answers (64 metadata values of 1 KiB echoed).
pub const IDEMPOTENCY_BYTES_PER_SHARD_MIN: usize = 1 << 20;
pub const IDEMPOTENCY_BYTES_PER_SHARD_MAX: usize = 1 << 30;

/// `limits.results_dedup_bytes_per_shard_max`: bytes charged to remembered ExecResult ids
/// per shard (~150 bytes each, so 16 MiB remembers ~100 k results).
pub const RESULTS_DEDUP_BYTES_PER_SHARD_DEFAULT: usize = 16 << 20;
pub const RESULTS_DEDUP_BYTES_PER_SHARD_MIN: usize = 64 << 10;
pub const RESULTS_DEDUP_BYTES_PER_SHARD_MAX: usize = 1 << 30;

/// `admin.token_env`: the name of an environment variable.
pub const ENV_NAME_BYTES_MAX: usize = 128;

/// `nats.url`: one or more comma-separated server URLs.
pub const NATS_URL_BYTES_MAX: usize = 4_096;
pub const NATS_SERVERS_MAX: usize = 16;
/// `nats.name` (the client name shown by the server), `nats.decide_queue_group`,
/// `nats.tls_server_name`, `nats.user`.
pub const NATS_NAME_BYTES_MAX: usize = 256;

/// `cluster.node_id`: a tenant id's form (letters, digits, `_`, `.`, `-`), so it is shown
/// as it is in logs, the service API's metadata and configs, never escaped. 64 bytes is
/// Linux's own bound on a host name, the default.
pub const NODE_ID_BYTES_MAX: usize = 64;
pub const NODE_ID_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// `nats.request_timeout_ms`: requests the router makes (extension calls use their own).
pub const NATS_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2_000;
pub const NATS_REQUEST_TIMEOUT_MS_MIN: u64 = 1;
pub const NATS_REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;
/// `nats.reconnect_backoff_max_ms`: the cap of the exponential reconnect backoff.
pub const NATS_RECONNECT_BACKOFF_MS_DEFAULT: u64 = 5_000;
pub const NATS_RECONNECT_BACKOFF_MS_MIN: u64 = 10;
pub const NATS_RECONNECT_BACKOFF_MS_MAX: u64 = 300_000;
/// `nats.outbound_bytes_max`: bytes buffered for publishing while disconnected.
pub const NATS_OUTBOUND_BYTES_DEFAULT: usize = 8 << 20;
pub const NATS_OUTBOUND_BYTES_MIN: usize = 64 << 10;
pub const NATS_OUTBOUND_BYTES_MAX: usize = 1 << 30;
/// `nats.assignment_tenants_allowlist` entries.
pub const ASSIGNMENT_TENANTS_MAX: usize = crate::policy::TENANTS_MAX;
/// `nats.assignment_subjects_allowed`: the default, and how many patterns a list holds.
pub const ASSIGNMENT_SUBJECTS_ALLOWED_DEFAULT: [&str; 2] =
    ["caf.exec.assign.v1", "caf.exec.assign.v1.>"];
pub const ASSIGNMENT_SUBJECTS_ALLOWED_MAX: usize = 256;
/// `nats.assignment_retries_max`: publish attempts after the first for one assignment.
pub const ASSIGNMENT_RETRIES_DEFAULT: u32 = 3;
pub const ASSIGNMENT_RETRIES_MAX: u32 = 10;

const _: () = assert!(SHARDS_MAX <= CORE_ID_MAX + 1);
const _: () = assert!(DRAIN_TIMEOUT_MS_DEFAULT <= DRAIN_TIMEOUT_MS_MAX);
const _: () = assert!(STALL_MS_MIN <= STALL_MS_DEFAULT && STALL_MS_DEFAULT <= STALL_MS_MAX);
const _: () = assert!(HANDOFF_TIMEOUT_MS_MIN <= HANDOFF_TIMEOUT_MS_DEFAULT);
const _: () = assert!(HANDOFF_TIMEOUT_MS_DEFAULT <= HANDOFF_TIMEOUT_MS_MAX);
const _: () = assert!(DRAIN_GRACE_MS_DEFAULT <= DRAIN_GRACE_MS_MAX);
const _: () = assert!(BODY_BYTES_MIN <= BODY_BYTES_DEFAULT && BODY_BYTES_DEFAULT <= BODY_BYTES_MAX);
const _: () = assert!(HEADERS_MIN <= HEADERS_DEFAULT && HEADERS_DEFAULT <= HEADERS_MAX);
const _: () =
    assert!(HEADER_BYTES_MIN <= HEADER_BYTES_DEFAULT && HEADER_BYTES_DEFAULT <= HEADER_BYTES_MAX);
const _: () = assert!(CONNECTIONS_PER_SHARD_DEFAULT <= CONNECTIONS_PER_SHARD_MAX);
const _: () = assert!(TIMEOUT_MS_MIN <= READ_TIMEOUT_MS_DEFAULT);
const _: () = assert!(IDLE_TIMEOUT_MS_DEFAULT <= TIMEOUT_MS_MAX);
const _: () = assert!(RING_SLOTS_DEFAULT.is_power_of_two() && RING_SLOTS_MAX.is_power_of_two());
const _: () = assert!(RING_SLOTS_MIN <= RING_SLOTS_DEFAULT && RING_SLOTS_DEFAULT <= RING_SLOTS_MAX);
const _: () = assert!(STICKY_ENTRIES_PER_SHARD_DEFAULT <= STICKY_ENTRIES_PER_SHARD_MAX);
const _: () = assert!(IDEMPOTENCY_ENTRIES_PER_SHARD_DEFAULT <= IDEMPOTENCY_ENTRIES_PER_SHARD_MAX);
const _: () = assert!(
    IDEMPOTENCY_TTL_MS_MIN <= IDEMPOTENCY_TTL_MS_DEFAULT
        && IDEMPOTENCY_TTL_MS_DEFAULT <= IDEMPOTENCY_TTL_MS_MAX
);
const _: () = assert!(
    ADMIN_WRITES_PER_SECOND_MIN <= ADMIN_WRITES_PER_SECOND_DEFAULT
        && ADMIN_WRITES_PER_SECOND_DEFAULT <= ADMIN_WRITES_PER_SECOND_MAX
);
const _: () = assert!(
    IDEMPOTENCY_BYTES_PER_SHARD_MIN <= IDEMPOTENCY_BYTES_PER_SHARD_DEFAULT
        && IDEMPOTENCY_BYTES_PER_SHARD_DEFAULT <= IDEMPOTENCY_BYTES_PER_SHARD_MAX
);
const _: () = assert!(
    RESULTS_DEDUP_BYTES_PER_SHARD_MIN <= RESULTS_DEDUP_BYTES_PER_SHARD_DEFAULT
        && RESULTS_DEDUP_BYTES_PER_SHARD_DEFAULT <= RESULTS_DEDUP_BYTES_PER_SHARD_MAX
);
// Every charge fits the cache's `u32` per entry.
const _: () = assert!(IDEMPOTENCY_BYTES_PER_SHARD_MAX <= u32::MAX as usize);
const _: () = assert!(NATS_REQUEST_TIMEOUT_MS_DEFAULT <= NATS_REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(NATS_RECONNECT_BACKOFF_MS_DEFAULT <= NATS_RECONNECT_BACKOFF_MS_MAX);
const _: () = assert!(
    NATS_OUTBOUND_BYTES_MIN <= NATS_OUTBOUND_BYTES_DEFAULT
        && NATS_OUTBOUND_BYTES_DEFAULT <= NATS_OUTBOUND_BYTES_MAX
);
const _: () = assert!(ASSIGNMENT_RETRIES_DEFAULT <= ASSIGNMENT_RETRIES_MAX);

/// `cluster.policy_replicas`: JetStream keeps at most five replicas of a stream.
pub const POLICY_REPLICAS_MAX: u32 = 5;

/// `cluster.failover_ms`: beats go out every quarter of it, so below 200 ms a node would
/// beat more than 20 times a second per node for little gain; above a minute a dead
/// node's tenants wait too long for a new owner.
pub const FAILOVER_MS_MIN: u64 = 200;
pub const FAILOVER_MS_MAX: u64 = 60_000;
