//! `shardline bench`'s command line, and its checks: every flag is bounded, and
//! combinations that cannot mean anything are refused before a socket is opened.
//!
//! One command line drives both transports: `--target http://…` (or `--embedded`) speaks
//! HTTP/1.1, `--target nats://…` (or `tls://…`) NATS request-reply. The load flags mean
//! the same on both, except what one connection carries: an HTTP connection holds
//! `--pipeline` requests at most (1 by default), a NATS connection multiplexes many
//! (`NATS_PIPELINE_DEFAULT`), so a NATS run needs few connections (one per thread by
//! default) and bounds its requests in flight instead.
//!
//! The arguments live in the library (not `main.rs`) so that what they mean — defaults,
//! limits, the settings they resolve to — is documented and tested beside the code that
//! uses them; the binary only forwards them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use super::mix::Generated;
use super::report::MAX_ERROR_RATIO_DEFAULT;
use super::schedule::{RATE_RPS_MAX, RATE_RPS_MIN};
use super::sys::{process_exists, ServerCpu};
use super::BenchError;
use crate::config::{NatsConfig, NatsUrls};
use crate::transport::nats::ClientOptions;

/// The embedded router's config when `--embedded` is given without `--config`: four
/// tenants, no rate limit (so the router, not a policy, is measured).
pub const EMBEDDED_CONFIG_DEFAULT: &str = "perf/bench/shardline.toml";
/// Tenants of a generated mix when none are given and none can be read from a config:
/// those of `perf/bench/`.
pub const TENANTS_DEFAULT: [&str; 4] = ["tenant-0", "tenant-1", "tenant-2", "tenant-3"];
/// Open-loop rate when neither `--rate` nor `--concurrency` is given.
pub const RATE_RPS_DEFAULT: f64 = 1000.0;
/// Client threads.
pub const THREADS_MAX: usize = 64;
/// Connections over all threads.
pub const CONNECTIONS_MAX: usize = 10_000;
/// HTTP keep-alive connections when `--connections` is not given.
pub const HTTP_CONNECTIONS_DEFAULT: usize = 16;
/// Open loop over NATS: requests in flight per connection when `--pipeline` is not given.
pub const NATS_PIPELINE_DEFAULT: usize = 256;
/// Requests in flight on one NATS connection (the client's own bound).
pub const NATS_PIPELINE_MAX: usize = crate::transport::nats::options::INFLIGHT_REQUESTS_MAX;
/// Closed loop over NATS: requests in flight over all threads.
pub const NATS_CONCURRENCY_MAX: usize = 100_000;
/// The router's decide subject (SPEC §2), the default `--subject`.
pub const NATS_DECIDE_SUBJECT: &str = "beamline.router.v1.decide";
/// Bytes of `--subject`.
const SUBJECT_BYTES_MAX: usize = 256;
/// Requests in flight per connection (the router answers at most 64 per read).
pub const PIPELINE_MAX: usize = 64;
/// Length of a run, and of its warmup.
pub const RUN_SECONDS_MAX: u64 = 24 * 3600;
/// `--timeout-ms`; within the latency histogram's 60 s ceiling.
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// `--spin-us`.
pub const SPIN_US_MAX: u64 = 10_000;
/// Bytes of a `--target` URL.
const URL_BYTES_MAX: usize = 2048;

const _: () = assert!(TIMEOUT_MS_MAX * 1000 <= super::record::LATENCY_US_MAX);
const _: () = assert!(PIPELINE_MAX <= crate::transport::http::PIPELINE_REQUESTS_MAX);

/// `shardline bench`: a latency-budget load generator for the router over HTTP.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Drive a running router at `http://HOST:PORT` (keep-alive connections), or over
    /// NATS request-reply through the server at `nats://HOST:PORT` (`tls://` for TLS).
    #[arg(long, value_name = "URL", conflicts_with = "embedded")]
    pub target: Option<String>,
    /// NATS: the subject decide requests are sent to.
    #[arg(long, default_value = NATS_DECIDE_SUBJECT)]
    pub subject: String,
    /// NATS: CA of the server's certificate (TLS to the server).
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// NATS: client certificate for mutual TLS (with --nats-key).
    #[arg(long, value_name = "FILE", requires_all = ["nats_key", "nats_ca"])]
    pub nats_cert: Option<PathBuf>,
    /// NATS: the client certificate's key.
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// Start a router in this process on 127.0.0.1:0 and drive it.
    #[arg(long)]
    pub embedded: bool,
    /// The embedded router's config [default: perf/bench/shardline.toml, built in].
    #[arg(long, value_name = "FILE", requires = "embedded")]
    pub config: Option<PathBuf>,
    /// Open loop: requests per second over all connections, on a fixed schedule; latency
    /// counts from each request's intended send time [default: 1000 unless
    /// --concurrency].
    #[arg(long, value_name = "R", conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: C requests in flight, each followed by the next when its answer
    /// arrives (HTTP: C connections; NATS: over --connections).
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Connections over all threads [default: HTTP 16 (open loop; needed: rate ×
    /// latency), NATS one per thread].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Open loop: requests in flight per connection [default: HTTP 1 (no pipelining),
    /// NATS 256].
    #[arg(long, value_name = "P")]
    pub pipeline: Option<usize>,
    /// Measured time (`10s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time sent but not recorded before the measurement.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Client threads; each owns a share of the connections.
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub threads: usize,
    /// Pin client thread i to the i-th CPU of this list (`1`, `0-1,3`) [default: the OS
    /// chooses].
    #[arg(long, value_name = "LIST")]
    pub client_cores: Option<String>,
    /// Tenants of generated requests, cycled [default: the embedded config's tenants that
    /// have --policy; for --target http://… the router's own, from GET /v1/tenants;
    /// required for a NATS router].
    #[arg(long, value_name = "A,B,…", value_delimiter = ',')]
    pub tenants: Vec<String>,
    /// `policy_id` of generated requests.
    #[arg(long, default_value = "default")]
    pub policy: String,
    /// Sticky session keys: `metadata.user_id` drawn from a pool of N (0 = none).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub sticky_keys: u32,
    /// Send `task.payload` padded to N bytes instead of a `payload_ref` (0 = ref).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub payload_bytes: usize,
    /// JSON Lines of DecideRequest bodies, cycled (request ids are replaced).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tenants", "payload_bytes"])]
    pub requests: Option<PathBuf>,
    /// A request unanswered this long after its send is a timeout.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Open loop: busy-wait this long before each send instead of sleeping (0 = sleep
    /// only: less CPU, less precise).
    #[arg(long, value_name = "US", default_value_t = 50)]
    pub spin_us: u64,
    /// Also run the same load against the bare responder (HTTP: same stack and shard
    /// count, no routing; NATS: an echo on the same client and server) and report what
    /// the router adds.
    #[arg(long)]
    pub compare_bare: bool,
    /// NATS: drive only the bare echo responder (the floor of client, server and
    /// generator), no router.
    #[arg(long, conflicts_with = "compare_bare")]
    pub bare_only: bool,
    /// NATS, shard-aware: the router's shard count; each request goes straight to its
    /// tenant's owner shard on `SUBJECT.shard.<i>` (the partition of `/v1/shards`),
    /// skipping the handoff between shards. 0 = the shared subject.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub nats_shards: usize,
    /// The run fails (exit 3) when more than this fraction of the requests sent ended as
    /// errors, sheds or timeouts (or, open loop, of those due were never sent), or when
    /// none succeeded: its latencies would describe failures, not the router. 0..=1.
    #[arg(long, value_name = "RATIO", default_value_t = MAX_ERROR_RATIO_DEFAULT)]
    pub max_error_ratio: f64,
    /// The server's process: its CPU time over the measured window (all its threads) is
    /// reported per request (`server_cpu_us_per_request`) and in cores busy. With
    /// --embedded the router's threads are measured without it.
    #[arg(long, value_name = "PID", conflicts_with = "embedded")]
    pub server_pid: Option<u32>,
    /// With --server-pid: also count every process descended from it (a master and its
    /// workers, as nginx runs).
    #[arg(long, requires = "server_pid")]
    pub server_pid_tree: bool,
    /// Write the JSON report here (the summary table is printed either way).
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
}

/// What `--duration` and `--warmup` accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?}: expected a duration such as 10s, 0.5s, 500ms or 2m (at most 24h)")]
pub struct DurationError(String);

/// `10s`, `0.5s`, `500ms`, `250us`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.chars().take(64).collect());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=RUN_SECONDS_MAX as f64).contains(&seconds) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A running router.
    Url {
        url: String,
        addr: SocketAddr,
        /// The `Host` header (`HOST:PORT` as given).
        host: String,
    },
    /// A router started in-process from this config.
    Embedded { config: PathBuf },
    /// A router (or only the bare echo) behind a NATS server.
    Nats(NatsTarget),
}

/// A NATS target: the server, its TLS material, and the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// `nats://HOST:PORT` or `tls://HOST:PORT`, as given.
    pub url: String,
    pub subject: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Drive only the bare echo, not `subject`.
    pub bare_only: bool,
    /// Shard-aware: the router's shard count (0 = send everything to `subject`).
    pub owner_shards: usize,
}

impl NatsTarget {
    /// The client options every connection of the run uses.
    pub fn client_options(&self) -> Result<ClientOptions, BenchError> {
        let config = NatsConfig {
            url: NatsUrls::new(self.url.clone()),
            name: "shardline-bench".into(),
            tls_ca: self.ca.clone(),
            tls_cert: self.cert.clone(),
            tls_key: self.key.clone(),
            ..NatsConfig::default()
        };
        let opts = ClientOptions::from_config(&config).map_err(|error| BenchError::Nats {
            url: crate::config::redacted_url(&self.url),
            error,
        })?;
        Ok(opts.expect("a URL was given"))
    }
}

/// The requests sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixSource {
    /// Generated; `tenants` empty = decided by the target (see `--tenants`).
    Generated(Generated),
    File(PathBuf),
}

/// How the load is applied, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// `Some` = open loop at this rate; `None` = closed loop.
    pub rate_rps: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    /// Requests in flight per connection at most (closed-loop NATS: the average).
    pub pipeline: usize,
    /// Requests in flight over all threads at most (closed loop: always).
    pub in_flight: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub spin: Duration,
    pub client_cores: Vec<usize>,
}

/// Everything a run needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub target: Target,
    pub load: Load,
    pub mix: MixSource,
    pub compare_bare: bool,
    /// `--max-error-ratio`.
    pub max_error_ratio: f64,
    /// `--server-pid` (and `--server-pid-tree`): the remote server whose CPU is measured.
    pub server_cpu: Option<ServerCpu>,
    /// Recorded in the report's `env`.
    pub command_line: String,
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> BenchError {
    BenchError::Invalid {
        flag,
        reason: reason.into(),
    }
}

impl BenchArgs {
    /// Checks the flags and resolves them into settings.
    pub fn settings(&self, command_line: String) -> Result<Settings, BenchError> {
        let target = match (&self.target, self.embedded) {
            (Some(url), false) if is_nats_url(url) => Target::Nats(self.nats_target(url)?),
            (Some(url), false) => parse_target(url)?,
            (None, true) => Target::Embedded {
                config: match &self.config {
                    Some(path) => path.clone(),
                    None => crate::bundled::bench_config().map_err(|e| {
                        BenchError::Router(format!("{EMBEDDED_CONFIG_DEFAULT} (built in): {e}"))
                    })?,
                },
            },
            _ => {
                return Err(invalid(
                    "--target",
                    "give --target http://HOST:PORT or --embedded",
                ))
            }
        };
        let mix = match &self.requests {
            Some(path) => MixSource::File(path.clone()),
            None => MixSource::Generated(Generated {
                tenants: self.tenants.clone(),
                policy: self.policy.clone(),
                sticky_keys: self.sticky_keys,
                payload_bytes: self.payload_bytes,
            }),
        };
        let nats = matches!(target, Target::Nats(_));
        if !nats {
            for (flag, given) in [
                ("--bare-only", self.bare_only),
                ("--nats-ca", self.nats_ca.is_some()),
                ("--nats-shards", self.nats_shards != 0),
                ("--subject", self.subject != NATS_DECIDE_SUBJECT),
            ] {
                if given {
                    return Err(invalid(flag, "applies to nats:// and tls:// targets only"));
                }
            }
        }
        // A NATS router has no request that lists its tenants (the listing is HTTP's
        // `GET /v1/tenants`), and guessed tenants would all be `policy_not_found`.
        let guessing = matches!(&mix, MixSource::Generated(g) if g.tenants.is_empty());
        if nats && guessing && !self.bare_only {
            return Err(invalid(
                "--tenants",
                "required with a NATS target: the router's tenant ids cannot be asked \
                 for over NATS (list them with GET /v1/tenants on its HTTP port)",
            ));
        }
        if !(0.0..=1.0).contains(&self.max_error_ratio) {
            return Err(invalid("--max-error-ratio", "must be 0..=1"));
        }
        // Checked now, so that a mistyped pid fails before the run rather than as a
        // report without the figure it was asked for.
        let server_cpu = match self.server_pid {
            Some(pid) if !process_exists(pid) => {
                return Err(invalid("--server-pid", format!("no process {pid}")));
            }
            Some(pid) => Some(ServerCpu::Pid {
                pid,
                tree: self.server_pid_tree,
            }),
            None => None,
        };
        Ok(Settings {
            target,
            load: self.load(nats)?,
            mix,
            compare_bare: self.compare_bare,
            max_error_ratio: self.max_error_ratio,
            server_cpu,
            command_line,
        })
    }

    fn nats_target(&self, url: &str) -> Result<NatsTarget, BenchError> {
        if url.len() > URL_BYTES_MAX {
            return Err(BenchError::Target {
                url: url.chars().take(URL_BYTES_MAX).collect(),
                reason: "too long",
            });
        }
        let subject_ok = (1..=SUBJECT_BYTES_MAX).contains(&self.subject.len())
            && !self
                .subject
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b'*')
            && !self
                .subject
                .split('.')
                .any(|token| token.is_empty() || token == ">");
        if !subject_ok {
            return Err(invalid(
                "--subject",
                format!("1..={SUBJECT_BYTES_MAX} bytes of dot-separated tokens, no wildcard"),
            ));
        }
        let target = NatsTarget {
            url: url.to_owned(),
            subject: self.subject.clone(),
            ca: self.nats_ca.clone(),
            cert: self.nats_cert.clone(),
            key: self.nats_key.clone(),
            bare_only: self.bare_only,
            owner_shards: self.nats_shards,
        };
        target.client_options()?; // checks the URL and reads the TLS files now
        Ok(target)
    }

    fn load(&self, nats: bool) -> Result<Load, BenchError> {
        let default_connections = if nats {
            self.threads
        } else {
            HTTP_CONNECTIONS_DEFAULT
        };
        let connections = self.connections.unwrap_or(default_connections);
        let (rate_rps, connections) = match (self.rate, self.concurrency) {
            (_, Some(c)) if nats => (None, connections.min(c.max(1))),
            (_, Some(c)) => (None, c),
            (rate, None) => (Some(rate.unwrap_or(RATE_RPS_DEFAULT)), connections),
        };
        if let Some(rate) = rate_rps {
            if !(RATE_RPS_MIN..=RATE_RPS_MAX).contains(&rate) {
                return Err(invalid(
                    "--rate",
                    format!("must be {RATE_RPS_MIN}..={RATE_RPS_MAX}"),
                ));
            }
        }
        if !(1..=CONNECTIONS_MAX).contains(&connections) {
            let flag = if rate_rps.is_some() {
                "--connections"
            } else {
                "--concurrency"
            };
            return Err(invalid(flag, format!("must be 1..={CONNECTIONS_MAX}")));
        }
        if !(1..=THREADS_MAX).contains(&self.threads) || self.threads > connections {
            return Err(invalid(
                "--threads",
                format!("must be 1..={THREADS_MAX} and at most the connections"),
            ));
        }
        let (pipeline, in_flight) = self.in_flight(nats, connections)?;
        if self.duration.is_zero() {
            return Err(invalid("--duration", "must be more than zero"));
        }
        if !(1..=TIMEOUT_MS_MAX).contains(&self.timeout_ms) {
            return Err(invalid(
                "--timeout-ms",
                format!("must be 1..={TIMEOUT_MS_MAX}"),
            ));
        }
        if self.spin_us > SPIN_US_MAX {
            return Err(invalid(
                "--spin-us",
                format!("must be at most {SPIN_US_MAX}"),
            ));
        }
        let client_cores = match &self.client_cores {
            None => Vec::new(),
            Some(list) => shards::topology::parse_cpu_list(list)
                .map_err(|e| invalid("--client-cores", e.to_string()))?
                .into_iter()
                .map(|c| c.0)
                .collect(),
        };
        Ok(Load {
            rate_rps,
            connections,
            threads: self.threads,
            pipeline,
            in_flight,
            duration: self.duration,
            warmup: self.warmup,
            timeout: Duration::from_millis(self.timeout_ms),
            spin: Duration::from_micros(self.spin_us),
            client_cores,
        })
    }
}

impl BenchArgs {
    /// `(pipeline, in_flight)`: requests in flight per connection and over the run.
    fn in_flight(&self, nats: bool, connections: usize) -> Result<(usize, usize), BenchError> {
        let (default, max) = if nats {
            (NATS_PIPELINE_DEFAULT, NATS_PIPELINE_MAX)
        } else {
            (1, PIPELINE_MAX)
        };
        let pipeline = self.pipeline.unwrap_or(default);
        if !(1..=max).contains(&pipeline) {
            return Err(invalid("--pipeline", format!("must be 1..={max}")));
        }
        match self.concurrency {
            Some(c) if nats => {
                if !(1..=NATS_CONCURRENCY_MAX).contains(&c) {
                    let reason = format!("must be 1..={NATS_CONCURRENCY_MAX}");
                    return Err(invalid("--concurrency", reason));
                }
                if c.div_ceil(connections) > NATS_PIPELINE_MAX {
                    let reason = format!("more than {NATS_PIPELINE_MAX} per connection");
                    return Err(invalid("--concurrency", reason));
                }
                Ok((c.div_ceil(connections), c))
            }
            _ => Ok((pipeline, connections * pipeline)),
        }
    }
}

fn is_nats_url(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

/// `http://HOST[:PORT][/]`, resolved now (the first address).
pub fn parse_target(url: &str) -> Result<Target, BenchError> {
    let bad = |reason: &'static str| BenchError::Target {
        url: url.chars().take(URL_BYTES_MAX).collect(),
        reason,
    };
    if url.len() > URL_BYTES_MAX {
        return Err(bad("too long"));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("only http:// targets are supported"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "give http://HOST:PORT (requests always go to /v1/decide)",
        ));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|_| bad("cannot resolve the host"))?
        .next()
        .ok_or_else(|| bad("the host has no address"))?;
    Ok(Target::Url {
        url: url.to_owned(),
        addr,
        host: authority.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn settings(args: &[&str]) -> Result<Settings, BenchError> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("parses")
            .bench
            .settings("bench".into())
    }

    /// Durations in the units people type; garbage and absurd lengths refused.
    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("25h").is_err());
    }

    /// `--embedded` alone: perf config, open loop at the default rate.
    #[test]
    fn embedded_defaults() {
        let s = settings(&["--embedded"]).unwrap();
        assert_eq!(
            s.target,
            Target::Embedded {
                config: crate::bundled::bench_config().unwrap()
            }
        );
        assert_eq!(s.load.rate_rps, Some(RATE_RPS_DEFAULT));
        assert_eq!(s.load.connections, 16);
    }

    /// Closed loop takes its connection count from `--concurrency`.
    #[test]
    fn closed_loop_uses_concurrency() {
        let s = settings(&["--target", "http://127.0.0.1:9", "--concurrency", "4"]).unwrap();
        assert_eq!(s.load.rate_rps, None);
        assert_eq!(s.load.connections, 4);
        let Target::Url { addr, host, .. } = s.target else {
            panic!("url target")
        };
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(host, "127.0.0.1:9");
    }

    /// Meaningless combinations and out-of-range values are refused with the flag named.
    #[test]
    fn refuses_bad_flags() {
        assert!(settings(&[]).is_err());
        let flag = |args: &[&str]| match settings(args) {
            Err(BenchError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(&["--embedded", "--rate", "0"]), "--rate");
        assert_eq!(
            flag(&["--embedded", "--connections", "2", "--threads", "3"]),
            "--threads"
        );
        assert_eq!(flag(&["--embedded", "--pipeline", "65"]), "--pipeline");
        assert_eq!(
            flag(&["--embedded", "--client-cores", "x"]),
            "--client-cores"
        );
        assert!(matches!(
            settings(&["--target", "https://x:1"]),
            Err(BenchError::Target { .. })
        ));
        assert_eq!(
            flag(&["--embedded", "--max-error-ratio", "1.5"]),
            "--max-error-ratio"
        );
        assert_eq!(flag(&["--target", "nats://127.0.0.1:1"]), "--tenants");
        assert!(settings(&["--target", "nats://127.0.0.1:1", "--bare-only"]).is_ok());
        assert!(settings(&["--target", "nats://127.0.0.1:1", "--tenants", "a"]).is_ok());
        let nobody = &["--target", "http://127.0.0.1:9", "--server-pid", "0"];
        assert_eq!(flag(nobody), "--server-pid");
        let me = std::process::id().to_string();
        let tree = ["--target", "http://127.0.0.1:9", "--server-pid", &me];
        let tree = [&tree[..], &["--server-pid-tree"]].concat();
        assert_eq!(
            settings(&tree).unwrap().server_cpu,
            Some(ServerCpu::Pid {
                pid: std::process::id(),
                tree: true
            })
        );
        assert!(matches!(
            settings(&["--target", "http://127.0.0.1:1/v1/decide"]),
            Err(BenchError::Target { .. })
        ));
    }
}
