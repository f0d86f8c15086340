//! `shardline bench`: the latency-budget load generator, measured from the client's side.
//!
//! It drives a router over HTTP/1.1 keep-alive connections — a running one
//! (`--target http://HOST:PORT`) or one started in this process (`--embedded`) — and
//! reports what a gateway would see: rate achieved, latency percentiles, and every
//! request accounted for. With `--compare-bare` it then drives the bare responder (the
//! same HTTP stack answering a canned body, `transport::http::bare`) with the identical
//! load, so the router's *added* latency comes from one run on one machine.
//!
//! Over NATS (`--target nats://HOST:PORT`, or `tls://` with `--nats-ca` and optionally
//! `--nats-cert`/`--nats-key`) it sends the same mix as request-reply on `--subject`
//! (the router's `beamline.router.v1.decide` by default) with `tenant_id` and `trace_id`
//! headers, through the router's own shard-native client, one glommio executor per client
//! thread (`nats_worker.rs`). There is no status over NATS: a reply counts by its body
//! (`"ok":true`, or an ErrorResponse by its `error.code`, sheds apart). `--compare-bare`
//! drives an in-process echo on the same client and server (`nats_bare.rs`);
//! `--bare-only` drives the echo alone, the floor of the generator, client and server.
//!
//! # Honest numbers
//! - **Open loop** (`--rate R`): request `g` is due at `g / R` seconds; latency counts from
//!   that intended time, not from the actual send, so a stalled router or a client that
//!   fell behind shows up as latency instead of vanishing (coordinated-omission
//!   correction). A late thread sends at once and keeps the schedule. Pacing sleeps
//!   (epoll with a nanosecond timeout, 1 ns timer slack) until `--spin-us` before the
//!   send, then busy-polls, so sends are not bunched by sleep granularity. With
//!   keep-alive and no `--pipeline`, a connection carries one request at a time, so the
//!   run needs about rate × latency connections; a request that finds every connection
//!   busy waits for one (its latency still counts from its intended time) and is counted
//!   in `schedule.behind_no_connection`.
//! - **Closed loop** (`--concurrency C`): each connection sends its next request when the
//!   answer arrives; the maximum throughput, latency counted from the send.
//! - **Accounting**: every measured request ends in exactly one of answered (200),
//!   error (by `error.code`), shed (`rate_limited`, `overloaded`) or timeout, and
//!   `sent == answered + errors + sheds + timeouts` is checked (`counts_ok`). Requests
//!   due during `--warmup` are sent but recorded nowhere.
//! - The client threads (`--threads`, optionally pinned with `--client-cores`) share the
//!   machine with the router; on a small machine that is part of the measurement, and the
//!   report records the machine and the command.
//!
//! Why threads with epoll rather than an async runtime: see `worker.rs`; why templates
//! for the bodies: see `mix.rs`.
//!
//! # Report (`--out FILE.json`)
//! A JSON object. The perf gate reads `latency_us.{p50,p90,p99,p999,max}`,
//! `achieved_rps`, `errors_total`, `sheds_total`, `timeouts_total` and `rss_mb`: these
//! names are stable.
//!
//! Fields, in order:
//! - `target`: the URL driven (`http://127.0.0.1:PORT` for an embedded router,
//!   `nats://…` / `tls://…` for the NATS server);
//! - `transport`: `http` or `nats`;
//! - `subject` (NATS only): the subject driven (`bench.bare.<random>` for the echo);
//! - `mode`: `open-loop` or `closed-loop`;
//! - `target_rps`: `--rate`; `null` in closed loop;
//! - `achieved_rps`: measured requests sent ÷ `duration_s`;
//! - `duration_s`, `warmup_s`: the measured window and the warmup before it, seconds;
//! - `connections`, `threads`, `pipeline`: the client's shape (`pipeline`: requests in
//!   flight per connection at most; closed-loop NATS: `in_flight_max` ÷ connections);
//! - `in_flight_max`: requests in flight over all threads at most (open loop
//!   `connections × pipeline`, closed loop `--concurrency`);
//! - `shards`: shards of the embedded router or bare responder (absent when remote);
//! - `latency_us`: `{p50, p90, p99, p999, max, mean}` in µs, of answered-200 requests
//!   only; open loop counts from the intended send time, closed loop from the send; every
//!   value `null` when nothing was answered 200 (a 0 would read as "fast");
//! - `latency_samples`: how many answers the percentiles are computed over;
//! - `latency_spectrum`: `[{quantile, us}]`, the same answers at the 53 quantiles of
//!   `spectrum::SPECTRUM_QUANTILES` (0 to 0.9999, evenly spaced in nines), then the max
//!   at quantile 1; `[]` when nothing was answered 200;
//! - `timeline`: `[{t_s, rps, errors, p50_us, p99_us, max_us}]`, one entry per second of
//!   the window, then the seconds after it in which an outcome still arrived (requests in
//!   flight when it closed); a request counts in the second its outcome arrived; `rps`:
//!   that second's answers (200) per second of it inside the window; `errors`: its errors,
//!   sheds and timeouts; latencies `null` in a second without answers (`timeline.rs`);
//! - `timeline_late`: outcomes after the timeline's last second (it keeps an hour);
//! - `sent`: measured requests sent; `answered`: of those, answered 200;
//! - `errors_total`, `errors_by_code`: other answers by the body's `error.code`
//!   (`http_<status>` when there is none), plus the client-side `connection_closed`
//!   (connection lost with the request in flight) and `bad_response` (unframeable);
//!   over NATS also `no_responders` (nobody subscribed to the subject), `not_connected`,
//!   `outbound_full`, `in_flight_full`, `too_large` (over the server's max_payload) and
//!   `no_code` (an ErrorResponse without a code);
//! - `sheds_total`, `sheds_by_code`: `rate_limited` (429) and `overloaded` (503) answers
//!   (over NATS: ErrorResponses with those codes);
//! - `timeouts_total`: no answer within `--timeout-ms` of the send;
//! - `error_ratio`: `(errors_total + sheds_total + timeouts_total) / sent`, `null` when
//!   nothing was sent;
//! - `counts_ok`: `sent == answered + errors_total + sheds_total + timeouts_total`;
//! - `connect_errors`: failed connection attempts (not requests);
//! - `schedule` (open loop only): `{behind_no_connection, unsent, send_lag_us {p50, p90,
//!   p99, p999, max, mean}}`: requests that found every connection busy at their intended
//!   time, requests due in the window but never sent, actual − intended send time;
//! - `rss_mb` (embedded only): `VmRSS` of the process at the window's end, MiB (it
//!   includes the client's few MiB);
//! - `cpu_s` (embedded, or with `--server-pid`): CPU seconds of the server during the
//!   window: the router's threads (client threads and the main thread excluded; see
//!   `sys.rs` on what sharing the process means), or the threads of process `--server-pid`
//!   (with `--server-pid-tree`, of it and its descendants: nginx's master and workers);
//!   the in-process bare responders (`--compare-bare` over HTTP, the NATS echo of
//!   `--compare-bare` and `--bare-only`) are measured likewise;
//! - `server_cpu_us_per_request`: `cpu_s` ÷ `sent`, µs, the server's CPU per request;
//!   `null` when unknown (a remote server without `--server-pid`);
//! - `server_cpu_cores`: `cpu_s` ÷ `duration_s`, cores busy on average; `null` likewise;
//! - `server_cpu_of` (when measured): whose CPU that is (`server threads in this process`,
//!   `process 42`, `process 42 and its descendants`);
//! - `conditions`: what the figures depend on besides the code, compared by the gate
//!   (it refuses a candidate whose conditions differ from the baseline's):
//!   `{target (embedded, http, nats, nats-bare), transport, mode, rate_rps, concurrency,
//!   connections, pipeline, duration_s, shards, compare_bare}`;
//! - `tenants`, `tenants_from`: the generated mix's tenants and where they came from
//!   (`--tenants`, `GET /v1/tenants` of the target, `config` of the embedded router,
//!   `default`); `tenants_from` is `--requests` (and `tenants` absent) for a file mix;
//! - `max_error_ratio`: the error budget the run was held to;
//! - `embedded`, `config`: whether the router ran in-process, and its config file;
//! - `bare_only` (only when true): the top-level figures are the bare responder's;
//! - `env`: `{cpu_model, cores, kernel, git_commit (null outside git), command_line}`;
//! - `bare` (with `--compare-bare`): the bare responder's figures, the fields above from
//!   `target` to `schedule`;
//! - `added_us` (with `--compare-bare`, when both sides have a latency): router − bare in
//!   µs, `{p50, p90, p99, p999, max}`;
//! - `ratio` (likewise): router ÷ bare, same keys (`null` where bare is 0).
//!
//! # Exit codes
//! 0: a measurement. 1: the counts do not add up (a load-generator bug). 2: it could not
//! run (bad flags, unreachable target, tenants it could not learn, a `--server-pid` that
//! is no process). 3: it ran but measured
//! failures (`Report::failures`: over `--max-error-ratio` of the requests failed, or, open
//! loop, were due but never sent; nothing was sent; nothing succeeded); the report is
//! still written, and stderr says why.
//!
//! # Tenants
//! A generated mix names tenants; guessed ones that the target lacks would make every
//! request `policy_not_found` and the run a measurement of the error path. So without
//! `--tenants`: the embedded router's config gives them, a running HTTP router is asked
//! (`GET /v1/tenants`, `tenants.rs`), and a NATS router, which has no such request, is
//! refused until `--tenants` is given.
//!
//! Beside `FILE.json` go `FILE.md`, the summary in Markdown (`markdown.rs`), and
//! `FILE.svg`, latency by percentile with bare as a second line when compared, and the
//! timeline under it (`plot.rs`).

mod args;
mod nats_bare;
mod nats_worker;
mod run;
mod tenants;
mod worker;

// The parts that need no router live in `shardline-tools` (below this library, so Cargo
// keeps them router-free); named here so `super::record` and friends read as before.
pub use shardline_tools::bench::{markdown, plot};
use shardline_tools::bench::{mix, poll, record, report, schedule, sys, timeline, wire};

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

pub use args::{
    parse_duration, parse_target, BenchArgs, DurationError, Load, MixSource, NatsTarget, Settings,
    Target, CONNECTIONS_MAX, EMBEDDED_CONFIG_DEFAULT, NATS_DECIDE_SUBJECT, NATS_PIPELINE_DEFAULT,
    PIPELINE_MAX, RATE_RPS_DEFAULT, THREADS_MAX, TIMEOUT_MS_MAX,
};
pub use mix::{Generated, Mix, MixCursor, MixError};
pub use nats_bare::{BareNats, BARE_QUEUE_GROUP};
pub use record::{Counts, Recorder, LATENCY_SIGFIGS, LATENCY_US_MAX};
pub use report::{
    Conditions, Latency, PerPercentile, Report, ScheduleReport, Side, MAX_ERROR_RATIO_DEFAULT,
};
pub use run::run;
pub use schedule::{wait_step, Schedule, WaitStep};
pub use sys::{Env, ServerCpu};
pub use tenants::TENANTS_ANSWER_BYTES_MAX;

/// Why a benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A flag's value is out of range or meaningless with the others.
    #[error("{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    /// `--target` is not a usable `http://HOST:PORT`.
    #[error("--target {url}: {reason}")]
    Target { url: String, reason: &'static str },
    /// `--tenants` was not given and the target's could not be listed.
    #[error("--target {url}: cannot learn the router's tenants with GET /v1/tenants: {reason}; give --tenants")]
    Tenants { url: String, reason: String },
    /// `--target nats://…` or its TLS files are unusable.
    #[error("--target {url}: {error}")]
    Nats {
        url: String,
        error: crate::transport::nats::OptionsError,
    },
    /// A NATS connection was not up within its connect timeout at the start.
    #[error("NATS {url}: not connected within {timeout_ms} ms")]
    NatsConnect { url: String, timeout_ms: u64 },
    /// The bare NATS echo did not start or did not stop cleanly.
    #[error("bare NATS echo: {0}")]
    NatsBare(String),
    /// A glommio executor for a client thread could not be built.
    #[error("client thread executor: {0}")]
    Executor(String),
    #[error(transparent)]
    Mix(#[from] MixError),
    /// The embedded router's config did not load.
    #[error("{}: {error}", path.display())]
    Config {
        path: PathBuf,
        error: crate::config::ConfigError,
    },
    #[error(transparent)]
    Topology(#[from] shards::TopologyError),
    /// The embedded router did not start or stop cleanly.
    #[error("embedded router: {0}")]
    Router(String),
    #[error(transparent)]
    Bare(#[from] crate::transport::http::bare::BareError),
    /// A client connection could not be opened at the start.
    #[error("connecting to {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// `--client-cores` named a CPU this process may not run on.
    #[error("pinning a client thread to CPU {core}: {error}")]
    Pin { core: usize, error: std::io::Error },
    /// epoll failed (not a connection's error: the thread cannot go on).
    #[error("epoll: {0}")]
    Poll(std::io::Error),
    #[error("starting a client thread: {0}")]
    Spawn(std::io::Error),
    /// Another client thread failed to start, so this one did not run.
    #[error("aborted: another client thread failed to start")]
    Aborted,
    /// A client thread panicked (a bug).
    #[error("client thread {0} panicked")]
    ThreadPanicked(usize),
}
